/* outside.c -- the http and run host entries (ABI rule R12) carried out
 * by helper processes: the policy (origins, credentials, programs), the work
 * (libcurl; posix_spawn), the framed protocol between a4psd and the helpers,
 * and the helpers' lives (forked at start, each with only what it needs, and
 * dying with a4psd).
 *
 * Protocol.  Each helper has one control socket (SOCK_SEQPACKET).  For every
 * call a4psd makes a fresh socket pair and passes one end to the helper
 * (SCM_RIGHTS); request and answer then travel on that pair, so calls from
 * several worker threads never share a stream.  A message is a u32 length
 * then fields "u8 tag, u32 length, bytes" (little endian); the helper
 * refuses unknown tags, missing or repeated fields, sizes past its caps and
 * strings holding NUL. */
#define _GNU_SOURCE
#include "daemon/outside.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

extern char **environ;

#define URL_MAX 8192u
#define HEADER_MAX 8192u
#define HEADERS_MAX 64
#define ARGS_MAX 256
#define ARG_MAX_BYTES (64u * 1024u)
#define INPUT_MAX (16u * 1024u * 1024u)
#define FRAME_MAX (64u * 1024u * 1024u)
#define CONCURRENT_MAX 16
#define CONNECT_TIMEOUT_MS 30000u
#define GRACE_MS 10000u              /* a4psd waits this long past a call's limit */
#define CLEAN_PATH "PATH=/usr/local/bin:/usr/bin:/bin"

static void errf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *buf, size_t cap, const char *fmt, ...)
{
    if (!buf || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ======================================================================
 * The policy
 * ====================================================================== */

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void outside_policy_free(outside_policy *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nhttp; i++) {
        free(p->http[i].plugin);
        free_list(p->http[i].origins, p->http[i].norigins);
        free_list(p->http[i].credentials, p->http[i].ncredentials);
    }
    for (int i = 0; i < p->nrun; i++) {
        free(p->run[i].plugin);
        free_list(p->run[i].programs, p->run[i].nprograms);
        free_list(p->run[i].env, p->run[i].nenv);
    }
    free(p->http);
    free(p->run);
    free(p->user);
    memset(p, 0, sizeof *p);
}

static bool same_list(char **a, int na, char **b, int nb)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i]))
            return false;
    return true;
}

static bool same_s(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

int outside_policy_equal(const outside_policy *a, const outside_policy *b)
{
    if (a->nhttp != b->nhttp || a->nrun != b->nrun || !same_s(a->user, b->user))
        return 0;
    for (int i = 0; i < a->nhttp; i++) {
        const outside_http_rule *x = &a->http[i], *y = &b->http[i];
        if (strcmp(x->plugin, y->plugin) || x->timeout_ms != y->timeout_ms ||
            x->max_response != y->max_response || x->max_request != y->max_request ||
            !same_list(x->origins, x->norigins, y->origins, y->norigins) ||
            !same_list(x->credentials, x->ncredentials, y->credentials, y->ncredentials))
            return 0;
    }
    for (int i = 0; i < a->nrun; i++) {
        const outside_run_rule *x = &a->run[i], *y = &b->run[i];
        if (strcmp(x->plugin, y->plugin) || x->timeout_ms != y->timeout_ms ||
            x->max_output != y->max_output ||
            !same_list(x->programs, x->nprograms, y->programs, y->nprograms) ||
            !same_list(x->env, x->nenv, y->env, y->nenv))
            return 0;
    }
    return 1;
}

int outside_env_name_valid(const char *s)
{
    if (!s || !(isalpha((unsigned char)*s) || *s == '_') || strlen(s) > 128)
        return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return 0;
    return 1;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || *s == 0x7f)
            return true;
    return false;
}

/* Parse url with libcurl's own parser -- the one the transfer then uses
 * (CURLOPT_CURLU), so what is checked is what is connected to. */
static CURLU *parse_url(const char *url, char *why, size_t whylen)
{
    if (strlen(url) > URL_MAX) {
        errf(why, whylen, "the URL is longer than %u bytes", URL_MAX);
        return NULL;
    }
    if (has_ctl(url)) {
        errf(why, whylen, "the URL holds a space or a control byte");
        return NULL;
    }
    CURLU *u = curl_url();
    if (!u) {
        errf(why, whylen, "out of memory");
        return NULL;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        errf(why, whylen, "'%.200s' is not a URL (%s)", url, curl_url_strerror(uc));
        curl_url_cleanup(u);
        return NULL;
    }
    return u;
}

/* The origin of parsed u into out. */
static int origin_of(CURLU *u, const char *url, int origin_only, char *out, size_t cap,
                     char *why, size_t whylen)
{
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *pass = NULL, *opts = NULL,
         *path = NULL, *query = NULL, *frag = NULL;
    int rc = -1;
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
    curl_url_get(u, CURLUPART_OPTIONS, &opts, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
    if (!scheme || (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")))
        errf(why, whylen, "'%.200s': only http:// and https:// are allowed", url);
    else if (user || pass || opts)
        errf(why, whylen, "'%.200s' holds userinfo (user@ or user:password@), which is refused",
             url);
    else if (!host || !*host || !port)
        errf(why, whylen, "'%.200s' has no host", url);
    else if (origin_only && ((path && strcmp(path, "/") && *path) || query || frag))
        errf(why, whylen, "'%.200s' is not an origin (scheme://host:port, no path)", url);
    else {
        for (char *p = scheme; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        for (char *p = host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        int n = snprintf(out, cap, "%s://%s:%s", scheme, host, port);
        if (n < 0 || (size_t)n >= cap)
            errf(why, whylen, "'%.200s': the origin is too long", url);
        else
            rc = 0;
    }
    curl_free(scheme), curl_free(host), curl_free(port), curl_free(user), curl_free(pass);
    curl_free(opts), curl_free(path), curl_free(query), curl_free(frag);
    return rc;
}

int outside_origin_of(const char *url, int origin_only, char *out, size_t cap, char *why,
                      size_t whylen)
{
    if (!url) {
        errf(why, whylen, "no URL");
        return -1;
    }
    CURLU *u = parse_url(url, why, whylen);
    if (!u)
        return -1;
    int rc = origin_of(u, url, origin_only, out, cap, why, whylen);
    curl_url_cleanup(u);
    return rc;
}

int outside_program_valid(const char *path, char *why, size_t whylen)
{
    if (!path || path[0] != '/') {
        errf(why, whylen, "'%.200s' is not an absolute path", path ? path : "(none)");
        return 0;
    }
    if (strlen(path) > 4096 || has_ctl(path)) {
        errf(why, whylen, "'%.200s' is too long or holds a space or control byte", path);
        return 0;
    }
    size_t n = strlen(path);
    if (strstr(path, "//") || strstr(path, "/./") || strstr(path, "/../") || path[n - 1] == '/' ||
        (n >= 2 && !strcmp(path + n - 2, "/.")) || (n >= 3 && !strcmp(path + n - 3, "/.."))) {
        errf(why, whylen, "'%.200s' is not a canonical path (no //, /./, /../, trailing /)",
             path);
        return 0;
    }
    return 1;
}

static const outside_http_rule *http_rule(const outside_policy *p, const char *plugin)
{
    for (int i = 0; p && plugin && i < p->nhttp; i++)
        if (!strcmp(p->http[i].plugin, plugin))
            return &p->http[i];
    return NULL;
}

static const outside_run_rule *run_rule(const outside_policy *p, const char *plugin)
{
    for (int i = 0; p && plugin && i < p->nrun; i++)
        if (!strcmp(p->run[i].plugin, plugin))
            return &p->run[i];
    return NULL;
}

/* "a, b, c" of a list, cut to fit. */
static void join(char *out, size_t cap, char **l, int n)
{
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", i ? ", " : "", l[i]);
    }
}

/* ======================================================================
 * HTTP (the http helper's work)
 * ====================================================================== */

/* Headers a plugin may not set: the host's, or the credential's. */
static const char *const reserved_headers[] = {
    "host", "authorization", "proxy-authorization", "cookie", "content-length",
    "transfer-encoding", "connection", "expect", NULL,
};

/* "Name: value" with a token name, no CR, LF or NUL; name's length in *nlen. */
static bool header_line_ok(const char *h, size_t *nlen)
{
    size_t n = strlen(h);
    if (n == 0 || n > HEADER_MAX || strchr(h, '\r') || strchr(h, '\n'))
        return false;
    size_t i = 0;
    while (i < n && (isalnum((unsigned char)h[i]) || strchr("!#$%&'*+-.^_`|~", h[i])))
        i++;
    if (i == 0 || h[i] != ':')
        return false;
    *nlen = i;
    return true;
}

static bool reserved(const char *h, size_t nlen)
{
    for (const char *const *r = reserved_headers; *r; r++)
        if (strlen(*r) == nlen && !strncasecmp(h, *r, nlen))
            return true;
    return false;
}

static bool method_ok(const char *m)
{
    static const char *const ok[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", NULL};
    for (const char *const *p = ok; *p; p++)
        if (m && !strcmp(m, *p))
            return true;
    return false;
}

typedef struct hbody {
    char *data;
    size_t len, cap, max;
    bool overflow;
    long retry_after_s;
} hbody;

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    hbody *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > b->max) {
        b->overflow = true;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->overflow = true;
            return 0;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    hbody *b = arg;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        b->retry_after_s = -1;   /* a new response (after a 100 Continue) */
    } else if (n > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        size_t i = 12;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        long v = 0;
        size_t digits = 0;
        for (; i < n && p[i] >= '0' && p[i] <= '9' && digits < 9; i++, digits++)
            v = v * 10 + (p[i] - '0');
        if (digits > 0 && (i == n || p[i] == '\r' || p[i] == '\n' || p[i] == ' '))
            b->retry_after_s = v;
    }
    return n;
}

static bool transient_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int outside_http_serve(const outside_policy *p, const char *plugin,
                       const a4ps_http_request *rq, a4ps_http_response *rs)
{
    char *e = rs->error;
    size_t el = sizeof rs->error;
    rs->status = 0;
    rs->body = NULL;
    rs->body_len = 0;
    rs->retry_after_s = -1;
    rs->transient = 0;
    e[0] = '\0';
    const char *who = plugin ? plugin : "(none)";
    const outside_http_rule *r = http_rule(p, plugin);
    if (!r) {
        errf(e, el, "http: plugin %s is granted no origin (rule R12: config outside.http has "
                    "no entry for it)", who);
        return A4PS_EPERM;
    }
    if (!method_ok(rq->method)) {
        errf(e, el, "http: plugin %s: method '%.16s' is not one of GET, POST, PUT, DELETE, "
                    "PATCH, HEAD", who, rq->method ? rq->method : "(none)");
        return A4PS_EINVAL;
    }
    if (!rq->url) {
        errf(e, el, "http: plugin %s: no URL", who);
        return A4PS_EINVAL;
    }
    char why[300], origin[URL_MAX + 32];
    CURLU *u = parse_url(rq->url, why, sizeof why);
    if (!u) {
        errf(e, el, "http: plugin %s: %s", who, why);
        return A4PS_EINVAL;
    }
    if (origin_of(u, rq->url, 0, origin, sizeof origin, why, sizeof why) != 0) {
        curl_url_cleanup(u);
        errf(e, el, "http: plugin %s may not reach it: %s (rule R12, config outside.http)", who,
             why);
        return A4PS_EPERM;
    }
    bool allowed = false;
    for (int i = 0; i < r->norigins && !allowed; i++)
        allowed = !strcmp(r->origins[i], origin);
    if (!allowed) {
        char list[512];
        join(list, sizeof list, r->origins, r->norigins);
        curl_url_cleanup(u);
        errf(e, el, "http: plugin %s may not reach %.200s (rule R12: config outside.http "
                    "allows it only %.200s)", who, origin, list);
        return A4PS_EPERM;
    }
    int rc = A4PS_OK;
    struct curl_slist *hdr = NULL, *more;
    char *cred = NULL;
    size_t nh = 0;
    for (const char *const *h = rq->headers; h && *h; h++, nh++) {
        size_t nlen;
        if (nh == HEADERS_MAX) {
            errf(e, el, "http: plugin %s: more than %d headers", who, HEADERS_MAX);
            rc = A4PS_EINVAL;
            goto out;
        }
        if (!header_line_ok(*h, &nlen)) {
            errf(e, el, "http: plugin %s: header #%zu is not one 'Name: value' line", who, nh);
            rc = A4PS_EINVAL;
            goto out;
        }
        if (reserved(*h, nlen)) {
            errf(e, el, "http: plugin %s: header %.*s is the host's to set (rule R12)", who,
                 (int)nlen, *h);
            rc = A4PS_EPERM;
            goto out;
        }
        if (!(more = curl_slist_append(hdr, *h))) {
            rc = A4PS_ENOMEM;
            goto out;
        }
        hdr = more;
    }
    if (rq->credential_env) {
        bool granted = false;
        for (int i = 0; i < r->ncredentials && !granted; i++)
            granted = !strcmp(r->credentials[i], rq->credential_env);
        size_t nlen;
        if (!outside_env_name_valid(rq->credential_env) || !granted) {
            errf(e, el, "http: plugin %s may not use the credential %.64s (rule R12: config "
                        "outside.http grants it %s)", who, rq->credential_env,
                 r->ncredentials ? "other ones" : "none");
            rc = A4PS_EPERM;
            goto out;
        }
        if (!rq->credential_header || !header_line_ok(rq->credential_header, &nlen)) {
            errf(e, el, "http: plugin %s: credential_header must be like 'Authorization: "
                        "Bearer '", who);
            rc = A4PS_EINVAL;
            goto out;
        }
        /* Read now, at this call, from the helper's own environment. */
        const char *value = getenv(rq->credential_env);
        if (!value || !*value) {
            errf(e, el, "http: plugin %s: the credential %s is not set in the helper's "
                        "environment (a4psd's at start)", who, rq->credential_env);
            rc = A4PS_ERROR;
            goto out;
        }
        if (strchr(value, '\n') || strchr(value, '\r')) {
            errf(e, el, "http: plugin %s: the credential %s holds a line break", who,
                 rq->credential_env);
            rc = A4PS_ERROR;
            goto out;
        }
        if (asprintf(&cred, "%s%s", rq->credential_header, value) < 0) {
            cred = NULL;
            rc = A4PS_ENOMEM;
            goto out;
        }
        more = curl_slist_append(hdr, cred);
        explicit_bzero(cred, strlen(cred));
        free(cred);
        if (!more) {
            rc = A4PS_ENOMEM;
            goto out;
        }
        hdr = more;
    }
    if ((more = curl_slist_append(hdr, "Expect:")))   /* no 100-continue wait */
        hdr = more;
    if (rq->body_len && !rq->body) {
        errf(e, el, "http: plugin %s: body_len %zu with no body", who, rq->body_len);
        rc = A4PS_EINVAL;
        goto out;
    }
    if (rq->body_len > r->max_request) {
        errf(e, el, "http: plugin %s: the body of %zu bytes passes the limit of %zu (config "
                    "outside.http max_request_kb)", who, rq->body_len, r->max_request);
        rc = A4PS_ERANGE;
        goto out;
    }
    unsigned long timeout = rq->timeout_ms && rq->timeout_ms < r->timeout_ms ? rq->timeout_ms
                                                                               : r->timeout_ms;
    size_t cap = rq->max_response && rq->max_response < r->max_response ? rq->max_response
                                                                          : r->max_response;
    pthread_once(&curl_once, curl_init_once);
    CURL *h = curl_init_rc == CURLE_OK ? curl_easy_init() : NULL;
    if (!h) {
        errf(e, el, "http: plugin %s: cannot set up libcurl", who);
        rc = A4PS_ENOMEM;
        goto out;
    }
    hbody b = {.max = cap, .retry_after_s = -1};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_CURLU, u);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);   /* a redirect is the plugin's answer */
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 0L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");             /* no proxy from the environment */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "a4ps-outside/1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cap);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(timeout < CONNECT_TIMEOUT_MS ? timeout : CONNECT_TIMEOUT_MS));
    if (!strcmp(rq->method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(rq->method, "GET") && !rq->body_len) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body_len ? (const char *)rq->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        if (strcmp(rq->method, "POST"))
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    rs->retry_after_s = b.retry_after_s;
    rs->status = status;
    if (cc == CURLE_OK) {
        if (!b.data)
            b.data = calloc(1, 1);
        if (!b.data) {
            rc = A4PS_ENOMEM;
            goto out;
        }
        rs->body = b.data;
        rs->body_len = b.len;
        goto out;
    }
    free(b.data);
    if ((cc == CURLE_WRITE_ERROR && b.overflow) || cc == CURLE_FILESIZE_EXCEEDED) {
        errf(e, el, "%.300s answered more than %zu bytes", rq->url, cap);
        rc = A4PS_ERANGE;
    } else {
        errf(e, el, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rs->transient = transient_curl(cc);
        rc = cc == CURLE_OPERATION_TIMEDOUT ? A4PS_ETIMEDOUT : A4PS_ERROR;
    }
out:
    for (struct curl_slist *l = hdr; l; l = l->next)   /* it may hold the credential */
        if (l->data)
            explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(hdr);
    curl_url_cleanup(u);
    return rc;
}

int outside_http_local(void *arg, const char *plugin, const a4ps_http_request *rq,
                       a4ps_http_response *rs)
{
    return outside_http_serve(arg, plugin, rq, rs);
}

/* ======================================================================
 * Programs (the run helper's work)
 * ====================================================================== */

static int fd_above_stdio(int fd)
{
    if (fd > 2)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return n;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int pipe_cloexec(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    p[0] = fd_above_stdio(p[0]);
    p[1] = fd_above_stdio(p[1]);
    if (p[0] < 0 || p[1] < 0) {
        close_fd(&p[0]);
        close_fd(&p[1]);
        return -1;
    }
    return 0;
}

/* Spawn path with argv and envp, the pipe ends as its stdio, in a process
 * group of its own, signals at their defaults.  0 or an errno. */
static int spawn(const char *path, char *const argv[], char *const envp[], int in, int out,
                 int err, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return rc;
    rc = posix_spawnattr_init(&at);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, in, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, out, 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, err, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    if (!rc)
        rc = posix_spawnattr_setsigmask(&at, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&at, &all);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&at, 0);
    if (!rc)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                               POSIX_SPAWN_SETPGROUP);
    if (!rc)
        rc = posix_spawn(pid, path, &fa, &at, argv, envp);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

static bool grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 65536;
    while (nc < need)
        nc *= 2;
    char *p = realloc(*buf, nc);
    if (!p)
        return false;
    *buf = p;
    *cap = nc;
    return true;
}

/* Run path with argv, feeding input, collecting stdout (more than out_max
 * ends the run) and stderr (cut at err_max); the group is killed at
 * timeout_ms.  SIGPIPE from a program that stops reading is kept from this
 * process: blocked on this thread, a pending one taken away. */
static int run_program(const char *path, char *const argv[], char *const envp[],
                       const a4ps_run_request *rq, unsigned long timeout_ms, size_t out_max,
                       size_t err_max, a4ps_run_result *rs)
{
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    if (pipe_cloexec(pin) || pipe_cloexec(pout) || pipe_cloexec(perr)) {
        errf(rs->error, sizeof rs->error, "run: pipes: %s", strerror(errno));
        close_fd(&pin[0]), close_fd(&pin[1]), close_fd(&pout[0]), close_fd(&pout[1]);
        close_fd(&perr[0]), close_fd(&perr[1]);
        return A4PS_ERROR;
    }
    pid_t pid;
    int src = spawn(path, argv, envp, pin[0], pout[1], perr[1], &pid);
    close_fd(&pin[0]);
    close_fd(&pout[1]);
    close_fd(&perr[1]);
    if (src) {
        errf(rs->error, sizeof rs->error, "%s cannot be run: %s", path, strerror(src));
        close_fd(&pin[1]), close_fd(&pout[0]), close_fd(&perr[0]);
        return A4PS_ERROR;
    }
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    fcntl(perr[0], F_SETFL, O_NONBLOCK);

    sigset_t pipeset, oldmask, pending;
    sigemptyset(&pipeset);
    sigaddset(&pipeset, SIGPIPE);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipeset, &oldmask);

    char *out = NULL, *err = NULL;
    size_t outlen = 0, outcap = 0, errlen = 0, errcap = 0, inoff = 0;
    const char *input = rq->input;
    size_t inlen = rq->input_len;
    if (inlen == 0)
        close_fd(&pin[1]);
    uint64_t deadline = mono_ms() + timeout_ms;
    bool exited = false, overflow = false, timed_out = false;
    char buf[65536];
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        struct pollfd fds[3];
        int nfds = 0;
        if (pin[1] >= 0)
            fds[nfds++] = (struct pollfd){pin[1], POLLOUT, 0};
        if (pout[0] >= 0)
            fds[nfds++] = (struct pollfd){pout[0], POLLIN, 0};
        if (perr[0] >= 0)
            fds[nfds++] = (struct pollfd){perr[0], POLLIN, 0};
        int wait = (int)(deadline - now);
        int capms = nfds ? 50 : 5;
        if (wait > capms)
            wait = capms;
        int n = poll(fds, (nfds_t)nfds, wait);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; n > 0 && i < nfds; i++) {
            if (!fds[i].revents)
                continue;
            int fd = fds[i].fd;
            if (fd == pin[1]) {
                ssize_t w = write(fd, input + inoff, inlen - inoff);
                if (w > 0)
                    inoff += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) || inoff == inlen ||
                    (fds[i].revents & (POLLERR | POLLHUP)))
                    close_fd(&pin[1]);
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (got <= 0) {
                close_fd(fd == pout[0] ? &pout[0] : &perr[0]);
                continue;
            }
            if (fd == perr[0]) {
                size_t keep = err_max - errlen;
                if ((size_t)got < keep)
                    keep = (size_t)got;
                if (keep && grow(&err, &errcap, errlen + keep + 1)) {
                    memcpy(err + errlen, buf, keep);
                    errlen += keep;
                }
                continue;
            }
            if (outlen + (size_t)got > out_max || !grow(&out, &outcap, outlen + (size_t)got + 1)) {
                overflow = true;
                break;
            }
            memcpy(out + outlen, buf, (size_t)got);
            outlen += (size_t)got;
        }
        if (overflow)
            break;
        if (!exited) {
            /* WNOWAIT keeps the zombie: pid and its group cannot be reused
             * before the kill below. */
            siginfo_t si = {0};
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid)
                exited = true;
        }
        if (exited && pout[0] < 0 && perr[0] < 0)
            break;
        if (exited && n == 0)
            break;
    }
    if (timed_out || overflow || !exited) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    close_fd(&pin[1]);
    close_fd(&pout[0]);
    close_fd(&perr[0]);
    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipeset, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);

    if (!grow(&out, &outcap, outlen + 1) || !grow(&err, &errcap, errlen + 1)) {
        free(out);
        free(err);
        errf(rs->error, sizeof rs->error, "run: out of memory");
        return A4PS_ENOMEM;
    }
    out[outlen] = '\0';
    err[errlen] = '\0';
    rs->out = out;
    rs->out_len = outlen;
    rs->err = err;
    rs->err_len = errlen;
    rs->timed_out = timed_out;
    rs->stdout_overflow = overflow;
    rs->exited = WIFEXITED(status);
    rs->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    rs->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return A4PS_OK;
}

int outside_run_serve(const outside_policy *p, const char *plugin, const a4ps_run_request *rq,
                      a4ps_run_result *rs)
{
    char *e = rs->error;
    size_t el = sizeof rs->error;
    e[0] = '\0';
    rs->out = rs->err = NULL;
    rs->out_len = rs->err_len = 0;
    rs->exited = rs->exit_code = rs->signal = rs->timed_out = rs->stdout_overflow = 0;
    const char *who = plugin ? plugin : "(none)";
    const outside_run_rule *r = run_rule(p, plugin);
    if (!r) {
        errf(e, el, "run: plugin %s is granted no program (rule R12: config outside.run has "
                    "no entry for it)", who);
        return A4PS_EPERM;
    }
    if (!rq->argv || !rq->argv[0]) {
        errf(e, el, "run: plugin %s: argv is empty", who);
        return A4PS_EINVAL;
    }
    const char *prog = rq->argv[0];
    const char *granted = NULL;
    for (int i = 0; i < r->nprograms && !granted; i++)
        if (!strcmp(r->programs[i], prog))
            granted = r->programs[i];
    if (!granted) {
        char list[512];
        join(list, sizeof list, r->programs, r->nprograms);
        errf(e, el, "run: plugin %s may not run %.200s (rule R12: config outside.run allows it "
                    "only %.200s)", who, prog, list);
        return A4PS_EPERM;
    }
    size_t n = 0, total = 0;
    for (; rq->argv[n]; n++) {
        size_t l = strlen(rq->argv[n]);
        total += l;
        if (n == ARGS_MAX || l > ARG_MAX_BYTES || total > 4 * ARG_MAX_BYTES) {
            errf(e, el, "run: plugin %s: more than %d arguments or %u bytes", who, ARGS_MAX,
                 4 * ARG_MAX_BYTES);
            return A4PS_EINVAL;
        }
    }
    if ((rq->input_len && !rq->input) || rq->input_len > INPUT_MAX) {
        errf(e, el, "run: plugin %s: input of %zu bytes (at most %u, and not NULL)", who,
             rq->input_len, INPUT_MAX);
        return A4PS_EINVAL;
    }
    /* argv[0] is the granted string itself: the program sees the path the
     * operator wrote, whatever the plugin passed. */
    char **argv = calloc(n + 1, sizeof *argv);
    char **envp = calloc((size_t)r->nenv + 2, sizeof *envp);
    if (!argv || !envp) {
        free(argv);
        free(envp);
        errf(e, el, "run: out of memory");
        return A4PS_ENOMEM;
    }
    argv[0] = (char *)granted;
    for (size_t i = 1; i < n; i++)
        argv[i] = (char *)rq->argv[i];
    size_t ne = 0;
    envp[ne++] = CLEAN_PATH;
    char **owned = calloc((size_t)r->nenv + 1, sizeof *owned);
    for (int i = 0; owned && i < r->nenv; i++) {
        const char *v = getenv(r->env[i]);
        if (v && asprintf(&owned[i], "%s=%s", r->env[i], v) >= 0)
            envp[ne++] = owned[i];
    }
    unsigned long timeout = rq->timeout_ms && rq->timeout_ms < r->timeout_ms ? rq->timeout_ms
                                                                               : r->timeout_ms;
    size_t out_max = rq->stdout_max && rq->stdout_max < r->max_output ? rq->stdout_max
                                                                      : r->max_output;
    size_t err_max = rq->stderr_max && rq->stderr_max < r->max_output ? rq->stderr_max
                                                                      : r->max_output;
    int rc = run_program(granted, argv, envp, rq, timeout, out_max, err_max, rs);
    for (int i = 0; owned && i < r->nenv; i++)
        free(owned[i]);
    free(owned);
    free(argv);
    free(envp);
    return rc;
}

int outside_run_local(void *arg, const char *plugin, const a4ps_run_request *rq,
                      a4ps_run_result *rs)
{
    return outside_run_serve(arg, plugin, rq, rs);
}

/* ======================================================================
 * Frames
 * ====================================================================== */

typedef struct fbuf {
    unsigned char *data;
    size_t len, cap;
    bool bad;
} fbuf;

static void fb_raw(fbuf *b, const void *p, size_t n)
{
    if (b->bad)
        return;
    if (b->len + n > FRAME_MAX) {
        b->bad = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) {
            b->bad = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fb_start(fbuf *b)
{
    unsigned char z[4] = {0};
    fb_raw(b, z, 4);
}

static void fb_field(fbuf *b, unsigned tag, const void *p, size_t n)
{
    if (n > FRAME_MAX) {
        b->bad = true;
        return;
    }
    unsigned char h[5];
    h[0] = (unsigned char)tag;
    put_u32(h + 1, (uint32_t)n);
    fb_raw(b, h, 5);
    fb_raw(b, p, n);
}

static void fb_str(fbuf *b, unsigned tag, const char *s)
{
    if (s)
        fb_field(b, tag, s, strlen(s));
}

static void fb_int(fbuf *b, unsigned tag, int64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)((uint64_t)v >> (8 * i));
    fb_field(b, tag, x, 8);
}

static void fb_end(fbuf *b)
{
    if (!b->bad)
        put_u32(b->data, (uint32_t)(b->len - 4));
}

/* A received message: its fields, in order. */
#define FIELDS_MAX (ARGS_MAX + HEADERS_MAX + 16)
typedef struct fmsg {
    unsigned char *data;
    size_t len;
    int n;
    struct {
        unsigned tag;
        const unsigned char *p;
        size_t len;
    } f[FIELDS_MAX];
} fmsg;

/* Split m->data into fields; tags above max_tag are refused. */
static int fm_parse(fmsg *m, unsigned max_tag, char *why, size_t whylen)
{
    size_t off = 0;
    m->n = 0;
    while (off < m->len) {
        if (m->len - off < 5 || m->n == FIELDS_MAX) {
            errf(why, whylen, "a truncated field or more than %d fields", FIELDS_MAX);
            return -1;
        }
        unsigned tag = m->data[off];
        uint32_t n = get_u32(m->data + off + 1);
        off += 5;
        if (tag == 0 || tag > max_tag || n > m->len - off) {
            errf(why, whylen, "field tag %u of %u bytes does not fit", tag, n);
            return -1;
        }
        m->f[m->n].tag = tag;
        m->f[m->n].p = m->data + off;
        m->f[m->n].len = n;
        m->n++;
        off += n;
    }
    return 0;
}

/* The one field tag (NULL if absent); a second is an error (*dup set). */
static const unsigned char *fm_one(const fmsg *m, unsigned tag, size_t *len, bool *dup)
{
    const unsigned char *p = NULL;
    for (int i = 0; i < m->n; i++)
        if (m->f[i].tag == tag) {
            if (p)
                *dup = true;
            p = m->f[i].p;
            *len = m->f[i].len;
        }
    return p;
}

/* A copy of field tag as a string (NULL when absent); refuses a NUL inside. */
static char *fm_str(const fmsg *m, unsigned tag, bool *bad)
{
    size_t n = 0;
    const unsigned char *p = fm_one(m, tag, &n, bad);
    if (!p)
        return NULL;
    if (memchr(p, 0, n)) {
        *bad = true;
        return NULL;
    }
    char *s = strndup((const char *)p, n);
    if (!s)
        *bad = true;
    return s;
}

/* Every field tagged tag, in order, as NUL-terminated copies in out (at
 * most max, then a NULL): how many.  More than max, a NUL inside one, or no
 * memory sets *bad; the copies made are still in out for the caller to free. */
static int fm_strs(const fmsg *m, unsigned tag, char **out, int max, bool *bad)
{
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        if (m->f[i].tag != tag)
            continue;
        if (n == max || memchr(m->f[i].p, 0, m->f[i].len)) {
            *bad = true;
            break;
        }
        out[n] = strndup((const char *)m->f[i].p, m->f[i].len);
        if (!out[n]) {
            *bad = true;
            break;
        }
        n++;
    }
    out[n] = NULL;
    return n;
}

static int64_t fm_int(const fmsg *m, unsigned tag, int64_t dflt, bool *bad)
{
    size_t n = 0;
    const unsigned char *p = fm_one(m, tag, &n, bad);
    if (!p)
        return dflt;
    if (n != 8) {
        *bad = true;
        return dflt;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return (int64_t)v;
}

/* ---- moving messages over a stream with a deadline ---- */

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        uint64_t left = deadline - now;
        struct pollfd p = {fd, ev, 0};
        int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int send_all(int fd, const void *p, size_t n, uint64_t deadline)
{
    const unsigned char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc)
            return rc;
    }
    return 0;
}

static int recv_all(int fd, void *p, size_t n, uint64_t deadline)
{
    unsigned char *c = p;
    while (n) {
        ssize_t r = recv(fd, c, n, MSG_DONTWAIT);
        if (r > 0) {
            c += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0)
            return -EPIPE;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = wait_fd(fd, POLLIN, deadline);
        if (rc)
            return rc;
    }
    return 0;
}

/* One whole message of at most max bytes into m->data (malloc'd). */
static int recv_msg(int fd, fmsg *m, size_t max, uint64_t deadline)
{
    unsigned char h[4];
    int rc = recv_all(fd, h, 4, deadline);
    if (rc)
        return rc;
    uint32_t n = get_u32(h);
    if (n > max)
        return -EMSGSIZE;
    m->data = malloc(n ? n : 1);
    if (!m->data)
        return -ENOMEM;
    m->len = n;
    rc = recv_all(fd, m->data, n, deadline);
    if (rc) {
        free(m->data);
        m->data = NULL;
    }
    return rc;
}

/* ======================================================================
 * The helpers
 * ====================================================================== */

enum { T_PLUGIN = 1 };
/* http request */
enum { HQ_METHOD = 2, HQ_URL, HQ_HEADER, HQ_CRED_HEADER, HQ_CRED_ENV, HQ_BODY, HQ_TIMEOUT,
       HQ_MAX_RESPONSE, HQ_LAST = HQ_MAX_RESPONSE };
/* http answer */
enum { HA_RC = 1, HA_STATUS, HA_BODY, HA_RETRY_AFTER, HA_TRANSIENT, HA_ERROR,
       HA_LAST = HA_ERROR };
/* run request */
enum { RQ_ARG = 2, RQ_INPUT, RQ_TIMEOUT, RQ_STDOUT_MAX, RQ_STDERR_MAX, RQ_LAST = RQ_STDERR_MAX };
/* run answer */
enum { RA_RC = 1, RA_EXITED, RA_EXIT_CODE, RA_SIGNAL, RA_TIMED_OUT, RA_OVERFLOW, RA_OUT, RA_ERR,
       RA_ERROR, RA_LAST = RA_ERROR };

enum { KIND_HTTP, KIND_RUN };

typedef struct conn {
    const outside_policy *p;
    int kind;
    int fd;
} conn;

static pthread_mutex_t active_mx = PTHREAD_MUTEX_INITIALIZER;
static int active;

/* Decode an http request, checking every field, and serve it. */
static void serve_http(const outside_policy *p, const fmsg *m, fbuf *ans)
{
    a4ps_http_response rs = {.size = sizeof rs, .retry_after_s = -1};
    bool bad = false;
    char *plugin = fm_str(m, T_PLUGIN, &bad), *method = fm_str(m, HQ_METHOD, &bad),
         *url = fm_str(m, HQ_URL, &bad), *ch = fm_str(m, HQ_CRED_HEADER, &bad),
         *ce = fm_str(m, HQ_CRED_ENV, &bad);
    size_t blen = 0;
    const unsigned char *body = fm_one(m, HQ_BODY, &blen, &bad);
    int64_t timeout = fm_int(m, HQ_TIMEOUT, 0, &bad);
    int64_t maxr = fm_int(m, HQ_MAX_RESPONSE, 0, &bad);
    char *headers[HEADERS_MAX + 1];
    int nh = fm_strs(m, HQ_HEADER, headers, HEADERS_MAX, &bad);
    int rc;
    if (bad || !plugin || !method || !url || timeout < 0 || timeout > UINT32_MAX || maxr < 0) {
        errf(rs.error, sizeof rs.error, "http: a malformed request reached the helper");
        rc = A4PS_EINVAL;
    } else {
        a4ps_http_request rq = {
            .size = sizeof rq, .method = method, .url = url,
            .headers = (const char *const *)headers, .credential_header = ch,
            .credential_env = ce, .body = body, .body_len = body ? blen : 0,
            .timeout_ms = (unsigned)timeout, .max_response = (size_t)maxr,
        };
        rc = outside_http_serve(p, plugin, &rq, &rs);
    }
    fb_start(ans);
    fb_int(ans, HA_RC, rc);
    fb_int(ans, HA_STATUS, rs.status);
    if (rs.body)
        fb_field(ans, HA_BODY, rs.body, rs.body_len);
    fb_int(ans, HA_RETRY_AFTER, rs.retry_after_s);
    fb_int(ans, HA_TRANSIENT, rs.transient);
    fb_str(ans, HA_ERROR, rs.error);
    fb_end(ans);
    free(rs.body);
    for (int i = 0; i < nh; i++)
        free(headers[i]);
    free(plugin), free(method), free(url), free(ch), free(ce);
}

static void serve_run(const outside_policy *p, const fmsg *m, fbuf *ans)
{
    a4ps_run_result rs = {.size = sizeof rs};
    bool bad = false;
    char *plugin = fm_str(m, T_PLUGIN, &bad);
    size_t ilen = 0;
    const unsigned char *input = fm_one(m, RQ_INPUT, &ilen, &bad);
    int64_t timeout = fm_int(m, RQ_TIMEOUT, 0, &bad);
    int64_t omax = fm_int(m, RQ_STDOUT_MAX, 0, &bad), emax = fm_int(m, RQ_STDERR_MAX, 0, &bad);
    char *argv[ARGS_MAX + 1];
    int na = fm_strs(m, RQ_ARG, argv, ARGS_MAX, &bad);
    int rc;
    if (bad || !plugin || na == 0 || timeout < 0 || timeout > UINT32_MAX || omax < 0 ||
        emax < 0) {
        errf(rs.error, sizeof rs.error, "run: a malformed request reached the helper");
        rc = A4PS_EINVAL;
    } else {
        a4ps_run_request rq = {
            .size = sizeof rq, .argv = (const char *const *)argv, .input = input,
            .input_len = input ? ilen : 0, .timeout_ms = (unsigned)timeout,
            .stdout_max = (size_t)omax, .stderr_max = (size_t)emax,
        };
        rc = outside_run_serve(p, plugin, &rq, &rs);
    }
    fb_start(ans);
    fb_int(ans, RA_RC, rc);
    fb_int(ans, RA_EXITED, rs.exited);
    fb_int(ans, RA_EXIT_CODE, rs.exit_code);
    fb_int(ans, RA_SIGNAL, rs.signal);
    fb_int(ans, RA_TIMED_OUT, rs.timed_out);
    fb_int(ans, RA_OVERFLOW, rs.stdout_overflow);
    if (rs.out)
        fb_field(ans, RA_OUT, rs.out, rs.out_len);
    if (rs.err)
        fb_field(ans, RA_ERR, rs.err, rs.err_len);
    fb_str(ans, RA_ERROR, rs.error);
    fb_end(ans);
    free(rs.out);
    free(rs.err);
    for (int i = 0; i < na; i++)
        free(argv[i]);
    free(plugin);
}

/* One call on its own channel (a helper thread). */
int outside_serve_message(const outside_policy *p, int http, const void *msg, size_t len,
                          void **answer, size_t *anslen)
{
    *answer = NULL;
    *anslen = 0;
    fmsg *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    m->data = (unsigned char *)msg;
    m->len = len;
    fbuf ans = {0};
    char why[128];
    int rc = -1;
    if (fm_parse(m, http ? HQ_LAST : RQ_LAST, why, sizeof why) == 0) {
        if (http)
            serve_http(p, m, &ans);
        else
            serve_run(p, m, &ans);
        if (!ans.bad) {
            *answer = ans.data;
            *anslen = ans.len;
            ans.data = NULL;
            rc = 0;
        }
    }
    free(ans.data);
    free(m);
    return rc;
}

static void copy_error(const fmsg *m, unsigned tag, char *out, size_t cap);

int outside_answer_status(int http, const void *answer, size_t len, char *error, size_t cap)
{
    fmsg *m = calloc(1, sizeof *m);
    if (!m || len < 4 || get_u32(answer) != len - 4) {
        free(m);
        return A4PS_EINVAL;
    }
    m->data = (unsigned char *)answer + 4;
    m->len = len - 4;
    bool bad = false;
    int rc = fm_parse(m, http ? HA_LAST : RA_LAST, NULL, 0) == 0
                 ? (int)fm_int(m, http ? HA_RC : RA_RC, A4PS_EINVAL, &bad)
                 : A4PS_EINVAL;
    if (error && cap) {
        error[0] = '\0';
        copy_error(m, http ? HA_ERROR : RA_ERROR, error, cap);
    }
    free(m);
    return bad ? A4PS_EINVAL : rc;
}

static void *serve_conn(void *arg)
{
    conn *c = arg;
    fmsg m = {0};
    void *ans = NULL;
    size_t alen = 0;
    /* The request is complete long before this; a4psd sends it at once. */
    uint64_t deadline = mono_ms() + 60000u;
    if (recv_msg(c->fd, &m, FRAME_MAX, deadline) == 0 &&
        outside_serve_message(c->p, c->kind == KIND_HTTP, m.data, m.len, &ans, &alen) == 0)
        send_all(c->fd, ans, alen, mono_ms() + 60000u);
    free(ans);
    free(m.data);
    close(c->fd);
    free(c);
    pthread_mutex_lock(&active_mx);
    active--;
    pthread_mutex_unlock(&active_mx);
    return NULL;
}

/* Receive one descriptor over the control socket: fd, 0 on EOF, -1 on a
 * message without one (ignored), -2 on an error. */
static int recv_fd(int ctl)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    ssize_t n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC);
    if (n == 0)
        return 0;
    if (n < 0)
        return errno == EINTR ? -1 : -2;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
        cm->cmsg_len != CMSG_LEN(sizeof(int)) || (mh.msg_flags & MSG_CTRUNC))
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

/* The helper's life after fork: alone with its control socket (at fd 3),
 * its copy of the policy and the environment it needs; ends when a4psd
 * closes the socket or dies. */
static void __attribute__((noreturn))
helper_main(int kind, const outside_policy *p, int ctl, pid_t parent, uid_t uid, gid_t gid,
            bool drop)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    prctl(PR_SET_NAME, kind == KIND_HTTP ? "a4ps-http" : "a4ps-run");
    if (ctl != 3) {
        if (dup2(ctl, 3) < 0)
            _exit(1);
        close(ctl);
    }
    closefrom(4);
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);     /* a terminal's ^C is a4psd's to handle */
    signal(SIGHUP, SIG_IGN);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* The environment it needs and nothing else: the http helper the
     * credentials granted to some plugin, the run helper the variables
     * passed to programs. */
    char **keep = NULL;
    int nkeep = 0;
    for (int i = 0; kind == KIND_HTTP && i < p->nhttp; i++)
        for (int j = 0; j < p->http[i].ncredentials; j++)
            nkeep++;
    for (int i = 0; kind == KIND_RUN && i < p->nrun; i++)
        nkeep += p->run[i].nenv;
    keep = calloc((size_t)nkeep + 1, sizeof *keep);
    int k = 0;
    for (int i = 0; keep && kind == KIND_HTTP && i < p->nhttp; i++)
        for (int j = 0; j < p->http[i].ncredentials; j++) {
            const char *v = getenv(p->http[i].credentials[j]);
            if (v && asprintf(&keep[k], "%s=%s", p->http[i].credentials[j], v) >= 0)
                k++;
        }
    for (int i = 0; keep && kind == KIND_RUN && i < p->nrun; i++)
        for (int j = 0; j < p->run[i].nenv; j++) {
            const char *v = getenv(p->run[i].env[j]);
            if (v && asprintf(&keep[k], "%s=%s", p->run[i].env[j], v) >= 0)
                k++;
        }
    /* The strings a4psd started with stay in memory (and in /proc/PID/
     * environ) after clearenv: wipe them; what is kept lives in copies. */
    for (char **e = environ; e && *e; e++)
        explicit_bzero(*e, strlen(*e));
    clearenv();
    for (int i = 0; i < k; i++) {
        putenv(keep[i]);         /* the environment owns them now */
    }
    free(keep);
    if (chdir("/") != 0)
        _exit(1);

    if (drop && (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
                 setresuid(uid, uid, uid) != 0)) {
        fprintf(stderr, "a4ps-%s helper: cannot drop to uid %u: %s\n",
                kind == KIND_HTTP ? "http" : "run", (unsigned)uid, strerror(errno));
        _exit(1);
    }
    /* A change of credentials clears the parent-death signal: set it again,
     * and make sure a4psd did not die in between. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    /* Nothing it starts gains privileges (setuid programs). */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (kind == KIND_HTTP) {
        pthread_once(&curl_once, curl_init_once);
        if (curl_init_rc != CURLE_OK)
            _exit(1);
    }

    for (;;) {
        int fd = recv_fd(3);
        if (fd == 0)
            _exit(0);            /* a4psd closed its end */
        if (fd == -2)
            _exit(1);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&active_mx);
        bool room = active < CONCURRENT_MAX;
        if (room)
            active++;
        pthread_mutex_unlock(&active_mx);
        conn *c = room ? malloc(sizeof *c) : NULL;
        pthread_t t;
        pthread_attr_t at;
        if (c) {
            *c = (conn){p, kind, fd};
            pthread_attr_init(&at);
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&t, &at, serve_conn, c) != 0) {
                free(c);
                c = NULL;
            }
            pthread_attr_destroy(&at);
        }
        if (!c) {
            /* Busy or out of resources: closing the channel tells a4psd. */
            if (room) {
                pthread_mutex_lock(&active_mx);
                active--;
                pthread_mutex_unlock(&active_mx);
            }
            close(fd);
        }
    }
}

typedef struct chan {
    int fd;                      /* control socket; -1: no helper */
    pid_t pid;
    pthread_mutex_t mx;          /* one descriptor passed at a time */
    const char *name;
} chan;

struct outside {
    chan http, run;
};

int outside_fds(const outside *o, int *fds)
{
    int n = 0;
    if (o && o->http.fd >= 0)
        fds[n++] = o->http.fd;
    if (o && o->run.fd >= 0)
        fds[n++] = o->run.fd;
    return n;
}

static int fork_helper(int kind, const outside_policy *p, chan *c, uid_t uid, gid_t gid,
                       bool drop, char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        errf(err, errlen, "outside: socketpair: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        errf(err, errlen, "outside: fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        helper_main(kind, p, sv[1], parent, uid, gid, drop);
    }
    close(sv[1]);
    c->fd = sv[0];
    c->pid = pid;
    return 0;
}

int outside_start(const outside_policy *p, outside **out, char *err, size_t errlen)
{
    *out = NULL;
    outside *o = calloc(1, sizeof *o);
    if (!o) {
        errf(err, errlen, "outside: out of memory");
        return -1;
    }
    o->http = (chan){.fd = -1, .name = "http"};
    o->run = (chan){.fd = -1, .name = "run"};
    pthread_mutex_init(&o->http.mx, NULL);
    pthread_mutex_init(&o->run.mx, NULL);
    bool drop = geteuid() == 0;
    uid_t uid = 0;
    gid_t gid = 0;
    if (drop && (p->nhttp || p->nrun)) {
        const char *user = p->user ? p->user : "nobody";
        struct passwd *pw = getpwnam(user);
        if (!pw || pw->pw_uid == 0) {
            errf(err, errlen, "outside.user: '%s' %s", user,
                 pw ? "is root: the helpers must not run as root"
                    : "is no user on this machine");
            outside_stop(o);
            return -1;
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if ((p->nhttp && fork_helper(KIND_HTTP, p, &o->http, uid, gid, drop, err, errlen)) ||
        (p->nrun && fork_helper(KIND_RUN, p, &o->run, uid, gid, drop, err, errlen))) {
        outside_stop(o);
        return -1;
    }
    *out = o;
    return 0;
}

void outside_scrub_environment(const outside_policy *p)
{
    /* unsetenv alone would leave the value where the process started with
     * it (its stack, shown by /proc/PID/environ, readable by any plugin):
     * wipe the bytes first. */
    for (int i = 0; i < p->nhttp; i++)
        for (int j = 0; j < p->http[i].ncredentials; j++) {
            char *v = getenv(p->http[i].credentials[j]);
            if (v)
                explicit_bzero(v, strlen(v));
            unsetenv(p->http[i].credentials[j]);
        }
}

pid_t outside_http_pid(const outside *o)
{
    return o ? o->http.pid : 0;
}

pid_t outside_run_pid(const outside *o)
{
    return o ? o->run.pid : 0;
}

void outside_stop(outside *o)
{
    if (!o)
        return;
    chan *cs[] = {&o->http, &o->run};
    for (int i = 0; i < 2; i++) {
        if (cs[i]->fd >= 0) {
            /* shutdown, not close alone, tells the helper: once sealed
             * (confine_seal) a4psd may no longer close its channels. */
            shutdown(cs[i]->fd, SHUT_RDWR);
            close(cs[i]->fd);
        }
        if (cs[i]->pid > 0)
            while (waitpid(cs[i]->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        pthread_mutex_destroy(&cs[i]->mx);
    }
    free(o);
}

/* Send req to the helper on a fresh channel and receive its answer. */
static int call(chan *c, fbuf *req, fmsg *ans, unsigned max_tag, unsigned long limit_ms,
                char *error, size_t errlen)
{
    if (c->fd < 0) {
        errf(error, errlen, "%s: no helper is running", c->name);
        return A4PS_ENOSYS;
    }
    if (req->bad) {
        errf(error, errlen, "%s: the request is larger than %u bytes", c->name, FRAME_MAX);
        return A4PS_ERANGE;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        errf(error, errlen, "%s: socketpair: %s", c->name, strerror(errno));
        return A4PS_ERROR;
    }
    char byte = 0;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &sv[1], sizeof(int));
    pthread_mutex_lock(&c->mx);
    ssize_t n;
    do
        n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    int se = errno;
    pthread_mutex_unlock(&c->mx);
    close(sv[1]);
    if (n != 1) {
        close(sv[0]);
        errf(error, errlen, "%s: the helper (pid %d) is gone: %s", c->name, (int)c->pid,
             strerror(se));
        return A4PS_ERROR;
    }
    uint64_t deadline = mono_ms() + limit_ms + GRACE_MS;
    int rc = send_all(sv[0], req->data, req->len, deadline);
    if (!rc)
        rc = recv_msg(sv[0], ans, FRAME_MAX, deadline);
    close(sv[0]);
    char why[128] = "";
    if (!rc && fm_parse(ans, max_tag, why, sizeof why) != 0)
        rc = -EPROTO;
    if (rc) {
        free(ans->data);
        ans->data = NULL;
        errf(error, errlen, "%s: the helper did not answer: %s%s%s", c->name,
             rc == -EPIPE ? "it closed the channel (busy, or the request was malformed)"
                          : strerror(-rc),
             why[0] ? ": " : "", why);
        return rc == -ETIMEDOUT ? A4PS_ETIMEDOUT : A4PS_ERROR;
    }
    return A4PS_OK;
}

/* A copy of an answer's field as a malloc'd NUL-terminated buffer. */
static void *dup_field(const fmsg *m, unsigned tag, size_t *len)
{
    bool dup = false;
    size_t n = 0;
    const unsigned char *p = fm_one(m, tag, &n, &dup);
    *len = 0;
    if (!p || dup)
        return NULL;
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, p, n);
    d[n] = '\0';
    *len = n;
    return d;
}

static void copy_error(const fmsg *m, unsigned tag, char *out, size_t cap)
{
    bool dup = false;
    size_t n = 0;
    const unsigned char *p = fm_one(m, tag, &n, &dup);
    if (!p)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

int outside_http_call(void *arg, const char *plugin, const a4ps_http_request *rq,
                      a4ps_http_response *rs)
{
    outside *o = arg;
    if (!o || o->http.fd < 0) {
        errf(rs->error, sizeof rs->error, "http: plugin %s is granted no origin (rule R12: "
                                          "config outside.http is empty)",
             plugin ? plugin : "(none)");
        return A4PS_EPERM;
    }
    fbuf req = {0};
    fb_start(&req);
    fb_str(&req, T_PLUGIN, plugin ? plugin : "");
    fb_str(&req, HQ_METHOD, rq->method ? rq->method : "");
    fb_str(&req, HQ_URL, rq->url ? rq->url : "");
    size_t nh = 0;
    for (const char *const *h = rq->headers; h && *h && nh <= HEADERS_MAX; h++, nh++)
        fb_str(&req, HQ_HEADER, *h);
    if (nh > HEADERS_MAX)
        req.bad = true;
    fb_str(&req, HQ_CRED_HEADER, rq->credential_header);
    fb_str(&req, HQ_CRED_ENV, rq->credential_env);
    if (rq->body && rq->body_len)
        fb_field(&req, HQ_BODY, rq->body, rq->body_len);
    fb_int(&req, HQ_TIMEOUT, rq->timeout_ms);
    fb_int(&req, HQ_MAX_RESPONSE, (int64_t)rq->max_response);
    fb_end(&req);
    fmsg *m = calloc(1, sizeof *m);
    if (!m) {
        free(req.data);
        return A4PS_ENOMEM;
    }
    /* The helper caps the time; without a request limit, wait a day at most. */
    unsigned long limit = rq->timeout_ms ? rq->timeout_ms : 86400000ul;
    int rc = call(&o->http, &req, m, HA_LAST, limit, rs->error, sizeof rs->error);
    free(req.data);
    if (rc == A4PS_OK) {
        bool bad = false;
        rc = (int)fm_int(m, HA_RC, A4PS_ERROR, &bad);
        rs->status = (long)fm_int(m, HA_STATUS, 0, &bad);
        rs->retry_after_s = (long)fm_int(m, HA_RETRY_AFTER, -1, &bad);
        rs->transient = (int)fm_int(m, HA_TRANSIENT, 0, &bad);
        copy_error(m, HA_ERROR, rs->error, sizeof rs->error);
        if (rc == A4PS_OK) {
            rs->body = dup_field(m, HA_BODY, &rs->body_len);
            if (!rs->body)
                rs->body = calloc(1, 1);
            if (!rs->body)
                rc = A4PS_ENOMEM;
        }
        if (bad || rc > 0) {
            free(rs->body);
            rs->body = NULL;
            errf(rs->error, sizeof rs->error, "http: the helper's answer is malformed");
            rc = A4PS_ERROR;
        }
    }
    free(m->data);
    free(m);
    return rc;
}

int outside_run_call(void *arg, const char *plugin, const a4ps_run_request *rq,
                     a4ps_run_result *rs)
{
    outside *o = arg;
    if (!o || o->run.fd < 0) {
        errf(rs->error, sizeof rs->error, "run: plugin %s is granted no program (rule R12: "
                                          "config outside.run is empty)",
             plugin ? plugin : "(none)");
        return A4PS_EPERM;
    }
    fbuf req = {0};
    fb_start(&req);
    fb_str(&req, T_PLUGIN, plugin ? plugin : "");
    size_t na = 0;
    for (const char *const *a = rq->argv; a && *a && na <= ARGS_MAX; a++, na++)
        fb_str(&req, RQ_ARG, *a);
    if (na > ARGS_MAX)
        req.bad = true;
    if (rq->input && rq->input_len)
        fb_field(&req, RQ_INPUT, rq->input, rq->input_len);
    fb_int(&req, RQ_TIMEOUT, rq->timeout_ms);
    fb_int(&req, RQ_STDOUT_MAX, (int64_t)rq->stdout_max);
    fb_int(&req, RQ_STDERR_MAX, (int64_t)rq->stderr_max);
    fb_end(&req);
    fmsg *m = calloc(1, sizeof *m);
    if (!m) {
        free(req.data);
        return A4PS_ENOMEM;
    }
    unsigned long limit = rq->timeout_ms ? rq->timeout_ms : 86400000ul;
    int rc = call(&o->run, &req, m, RA_LAST, limit, rs->error, sizeof rs->error);
    free(req.data);
    if (rc == A4PS_OK) {
        bool bad = false;
        rc = (int)fm_int(m, RA_RC, A4PS_ERROR, &bad);
        rs->exited = (int)fm_int(m, RA_EXITED, 0, &bad);
        rs->exit_code = (int)fm_int(m, RA_EXIT_CODE, 0, &bad);
        rs->signal = (int)fm_int(m, RA_SIGNAL, 0, &bad);
        rs->timed_out = (int)fm_int(m, RA_TIMED_OUT, 0, &bad);
        rs->stdout_overflow = (int)fm_int(m, RA_OVERFLOW, 0, &bad);
        copy_error(m, RA_ERROR, rs->error, sizeof rs->error);
        if (rc == A4PS_OK) {
            rs->out = dup_field(m, RA_OUT, &rs->out_len);
            rs->err = dup_field(m, RA_ERR, &rs->err_len);
            if (!rs->out)
                rs->out = calloc(1, 1);
            if (!rs->err)
                rs->err = calloc(1, 1);
            if (!rs->out || !rs->err)
                rc = A4PS_ENOMEM;
        }
        if (bad || rc > 0 || rc == A4PS_ENOMEM) {
            free(rs->out);
            free(rs->err);
            rs->out = rs->err = NULL;
            rs->out_len = rs->err_len = 0;
            if (bad || rc > 0) {
                errf(rs->error, sizeof rs->error, "run: the helper's answer is malformed");
                rc = A4PS_ERROR;
            }
        }
    }
    free(m->data);
    free(m);
    return rc;
}
