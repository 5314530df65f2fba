/* test_outside.c -- the outside helpers (kernel/daemon/outside.c, ABI rule
 * R12) playing against an attacker: origins matched exactly (scheme, host,
 * port; userinfo tricks; redirects not followed; reserved and injected
 * headers; credentials not granted), programs matched exactly (relative
 * paths, "..", symlinks, a shell not listed), a clean environment, limits;
 * then the same through the real forked helpers: their environment, their
 * user, calls from several threads at once, and their end.
 *
 * The listeners are plain TCP servers of this test on 127.0.0.1 that count
 * every byte they receive, so "refused" also means "nothing arrived". */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/outside.h"

/* ---- listeners ---- */

typedef struct listener {
    int fd;
    int port;
    const char *answer;          /* NULL: never answer (hold the connection) */
    atomic_size_t received;
    atomic_int connections;
    pthread_mutex_t mx;
    char last[8192];             /* the head of the last request */
    pthread_t t;
} listener;

static void *listen_loop(void *arg)
{
    listener *l = arg;
    for (;;) {
        int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            return NULL;         /* closed at the end */
        }
        atomic_fetch_add(&l->connections, 1);
        char buf[65536];
        size_t got = 0;
        bool headers_done = false;
        for (;;) {
            /* Without an answer, hold the connection until the client
             * gives up. */
            struct pollfd p = {c, POLLIN, 0};
            if (poll(&p, 1, headers_done && l->answer ? 200 : 10000) <= 0)
                break;
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            if (got == 0) {
                pthread_mutex_lock(&l->mx);
                size_t k = (size_t)n < sizeof l->last - 1 ? (size_t)n : sizeof l->last - 1;
                memcpy(l->last, buf, k);
                l->last[k] = '\0';
                pthread_mutex_unlock(&l->mx);
            }
            got += (size_t)n;
            atomic_fetch_add(&l->received, (size_t)n);
            if (memmem(buf, (size_t)n, "\r\n\r\n", 4))
                headers_done = true;
        }
        if (l->answer)
            (void)!send(c, l->answer, strlen(l->answer), MSG_NOSIGNAL);
        close(c);
    }
}

static void listener_bind(listener *l, const char *answer)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mx, NULL);
    l->answer = answer;
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(l->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l->fd, 16), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(l->fd, (struct sockaddr *)&a, &len), 0);
    l->port = ntohs(a.sin_port);
}

static void listener_run(listener *l)
{
    assert_int_equal(pthread_create(&l->t, NULL, listen_loop, l), 0);
}

static void listener_stop(listener *l)
{
    shutdown(l->fd, SHUT_RDWR);
    close(l->fd);
    pthread_join(l->t, NULL);
}

/* ---- the world ---- */

static listener A, B, SLOW;      /* A granted; B never; SLOW granted, never answers */
static char dir[256];
static char prog_env[PATH_MAX], prog_sleep[PATH_MAX], prog_flood[PATH_MAX];
static outside_policy pol;
static outside *helpers;

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static void add(char ***l, int *n, const char *v)
{
    *l = realloc(*l, ((size_t)*n + 1) * sizeof **l);
    assert_non_null(*l);
    (*l)[(*n)++] = xstrdup(v);
}

static void add_origin(outside_http_rule *r, int port)
{
    char url[64], o[128], why[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    assert_int_equal(outside_origin_of(url, 1, o, sizeof o, why, sizeof why), 0);
    add(&r->origins, &r->norigins, o);
}

static void write_script(char *out, const char *name, const char *body)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s", body);
    fclose(f);
    assert_int_equal(chmod(out, 0755), 0);
}

/* Built before any thread exists: the helpers are forked here. */
static int world_up(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/a4ps-outside-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0);   /* the run helper may be nobody */
    listener_bind(&A, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\nA!");
    listener_bind(&B, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nB!");
    listener_bind(&SLOW, NULL);
    /* A redirects to B: patch its Location with B's port. */
    static char redirect[256];
    snprintf(redirect, sizeof redirect,
             "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/stolen\r\n"
             "Content-Length: 2\r\nConnection: close\r\n\r\nA!", B.port);
    A.answer = redirect;
    write_script(prog_env, "env.sh", "echo \"$0 $*\"\nenv | sort\n");
    write_script(prog_sleep, "sleep.sh", "sleep 0.2\necho \"got $1\"\n");
    write_script(prog_flood, "flood.sh", "head -c 100000 /dev/zero\n");

    pol.http = calloc(1, sizeof *pol.http);
    pol.run = calloc(1, sizeof *pol.run);
    pol.nhttp = pol.nrun = 1;
    outside_http_rule *h = &pol.http[0];
    h->plugin = xstrdup("gen");
    add_origin(h, A.port);
    add_origin(h, SLOW.port);
    add(&h->credentials, &h->ncredentials, "A4PS_TEST_GRANTED_KEY");
    h->timeout_ms = 60000;
    h->max_response = 1 << 20;
    h->max_request = 1 << 20;
    outside_run_rule *r = &pol.run[0];
    r->plugin = xstrdup("gen");
    add(&r->programs, &r->nprograms, prog_env);
    add(&r->programs, &r->nprograms, prog_sleep);
    add(&r->programs, &r->nprograms, prog_flood);
    add(&r->env, &r->nenv, "A4PS_TEST_PASSED");
    r->timeout_ms = 60000;
    r->max_output = 1 << 20;

    setenv("A4PS_TEST_GRANTED_KEY", "sk-granted", 1);
    setenv("A4PS_TEST_UNRELATED", "sk-unrelated", 1);
    setenv("A4PS_TEST_PASSED", "passed-value", 1);
    char err[256];
    if (outside_start(&pol, &helpers, err, sizeof err) != 0)
        fail_msg("outside_start: %s", err);
    listener_run(&A);
    listener_run(&B);
    listener_run(&SLOW);
    return 0;
}

static int world_down(void **state)
{
    (void)state;
    outside_stop(helpers);
    listener_stop(&A);
    listener_stop(&B);
    listener_stop(&SLOW);
    outside_policy_free(&pol);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
    return 0;
}

/* One request from plugin through fn (in-process serve or the helper). */
typedef int (*http_fn)(void *arg, const char *plugin, const a4ps_http_request *rq,
                       a4ps_http_response *rs);

static int http(http_fn fn, void *arg, const char *plugin, const char *url,
                const char *const *headers, const char *cred, unsigned timeout_ms,
                size_t max_response, a4ps_http_response *rs)
{
    a4ps_http_request rq = {
        .size = sizeof rq, .method = "POST", .url = url, .headers = headers,
        .credential_header = cred ? "Authorization: Bearer " : NULL, .credential_env = cred,
        .body = "secret", .body_len = 6, .timeout_ms = timeout_ms,
        .max_response = max_response,
    };
    memset(rs, 0, sizeof *rs);
    rs->size = sizeof *rs;
    return fn(arg, plugin, &rq, rs);
}

static void expect_refused(http_fn fn, void *arg, const char *url, const char *const *headers,
                           const char *cred, int want, const char *says)
{
    a4ps_http_response rs;
    size_t before = atomic_load(&B.received) + atomic_load(&A.received);
    int rc = http(fn, arg, "gen", url, headers, cred, 2000, 0, &rs);
    if (rc != want)
        fail_msg("%s: returned %d (%s), expected %d", url, rc, rs.error, want);
    if (!strstr(rs.error, says))
        fail_msg("%s: the error '%s' lacks '%s'", url, rs.error, says);
    assert_null(rs.body);
    assert_int_equal(atomic_load(&B.received) + atomic_load(&A.received), before);
}

/* ---- origins ---- */

static void origins_normalized_and_tricks_refused(void **state)
{
    (void)state;
    char o[256], why[256];
    static const struct {
        const char *url;
        int origin_only;
        const char *want;        /* NULL: refused */
    } cases[] = {
        {"http://127.0.0.1:8080", 1, "http://127.0.0.1:8080"},
        {"HTTP://LocalHost:8080/", 1, "http://localhost:8080"},
        {"http://h", 1, "http://h:80"},
        {"https://h", 1, "https://h:443"},
        {"http://[::1]:8080", 1, "http://[::1]:8080"},
        {"http://h:8080/v1/chat?x=1", 0, "http://h:8080"},
        {"http://h:8080/v1", 1, NULL},
        {"http://127.0.0.1:8080@evil/", 0, NULL},
        {"http://user:pw@127.0.0.1:8080/", 0, NULL},
        {"http://@127.0.0.1:8080/", 0, NULL},
        {"ftp://127.0.0.1/", 0, NULL},
        {"file:///etc/passwd", 0, NULL},
        {"gopher://127.0.0.1:8080/", 0, NULL},
        {"http://127.0.0.1:8080 /", 0, NULL},
        {"http://127.0.0.1:8080\r\nHost: evil/", 0, NULL},
        {"127.0.0.1:8080", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = outside_origin_of(cases[i].url, cases[i].origin_only, o, sizeof o, why,
                                   sizeof why);
        if (cases[i].want) {
            if (rc != 0)
                fail_msg("%s refused: %s", cases[i].url, why);
            assert_string_equal(o, cases[i].want);
        } else if (rc == 0) {
            fail_msg("%s accepted as %s", cases[i].url, o);
        }
    }
}

static void http_only_to_granted_origins(void **state)
{
    (void)state;
    http_fn fn = outside_http_local;
    void *arg = &pol;
    char url[128];
    /* Another port, another scheme, another name for the same host, userinfo. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", B.port);
    expect_refused(fn, arg, url, NULL, NULL, A4PS_EPERM, "plugin gen may not reach");
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", A.port);
    expect_refused(fn, arg, url, NULL, NULL, A4PS_EPERM, "rule R12");
    snprintf(url, sizeof url, "http://localhost:%d/", A.port);
    expect_refused(fn, arg, url, NULL, NULL, A4PS_EPERM, "rule R12");
    snprintf(url, sizeof url, "http://127.0.0.1:%d@127.0.0.1:%d/", A.port, B.port);
    expect_refused(fn, arg, url, NULL, NULL, A4PS_EPERM, "userinfo");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", A.port);
    /* A plugin with no grant at all, however good its URL. */
    a4ps_http_response rs;
    assert_int_equal(http(fn, arg, "other", url, NULL, NULL, 2000, 0, &rs), A4PS_EPERM);
    assert_non_null(strstr(rs.error, "plugin other is granted no origin"));
    /* Headers that are the host's, or smuggle a second line. */
    const char *host[] = {"Host: evil", NULL};
    expect_refused(fn, arg, url, host, NULL, A4PS_EPERM, "Host is the host's");
    const char *auth[] = {"authorization: Bearer x", NULL};
    expect_refused(fn, arg, url, auth, NULL, A4PS_EPERM, "the host's");
    const char *smuggle[] = {"X-A: 1\r\nHost: evil", NULL};
    expect_refused(fn, arg, url, smuggle, NULL, A4PS_EINVAL, "not one 'Name: value' line");
    /* Credentials: only the granted one, never another variable. */
    expect_refused(fn, arg, url, NULL, "A4PS_TEST_UNRELATED", A4PS_EPERM,
                   "may not use the credential A4PS_TEST_UNRELATED");
    expect_refused(fn, arg, url, NULL, "PATH", A4PS_EPERM, "may not use the credential");
}

static void http_redirect_is_an_answer_not_a_hop(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", A.port);
    size_t b_before = atomic_load(&B.received);
    a4ps_http_response rs;
    int rc = http(outside_http_local, &pol, "gen", url, NULL, "A4PS_TEST_GRANTED_KEY", 5000, 0,
                  &rs);
    if (rc != A4PS_OK)
        fail_msg("the granted origin: %d %s", rc, rs.error);
    assert_int_equal(rs.status, 302);
    assert_string_equal(rs.body, "A!");
    free(rs.body);
    assert_int_equal(atomic_load(&B.received), b_before);
}

static void http_limits(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", SLOW.port);
    a4ps_http_response rs;
    int rc = http(outside_http_local, &pol, "gen", url, NULL, NULL, 300, 0, &rs);
    assert_int_equal(rc, A4PS_ETIMEDOUT);
    assert_true(rs.transient);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", A.port);
    rc = http(outside_http_local, &pol, "gen", url, NULL, NULL, 5000, 1, &rs);
    assert_int_equal(rc, A4PS_ERANGE);
    assert_non_null(strstr(rs.error, "answered more than 1 bytes"));
}

/* ---- programs ---- */

typedef int (*run_fn)(void *arg, const char *plugin, const a4ps_run_request *rq,
                      a4ps_run_result *rs);

static int run(run_fn fn, void *arg, const char *const *argv, unsigned timeout_ms,
               size_t out_max, a4ps_run_result *rs)
{
    a4ps_run_request rq = {.size = sizeof rq, .argv = argv, .input = "in", .input_len = 2,
                           .timeout_ms = timeout_ms, .stdout_max = out_max};
    memset(rs, 0, sizeof *rs);
    rs->size = sizeof *rs;
    return fn(arg, "gen", &rq, rs);
}

static void programs_only_as_listed(void **state)
{
    (void)state;
    char link[PATH_MAX + 16], dotted[PATH_MAX + 64], doubled[PATH_MAX + 16];
    snprintf(link, sizeof link, "%s/link.sh", dir);
    unlink(link);
    assert_int_equal(symlink(prog_env, link), 0);
    snprintf(dotted, sizeof dotted, "%s/../%s/env.sh", dir, strrchr(dir, '/') + 1);
    snprintf(doubled, sizeof doubled, "%s//env.sh", dir);
    const char *refused[] = {"/bin/sh", "sh", "env.sh", link, dotted, doubled, ""};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        const char *argv[] = {refused[i], "-c", "id", NULL};
        a4ps_run_result rs;
        int rc = run(outside_run_local, &pol, argv, 2000, 0, &rs);
        if (rc != A4PS_EPERM)
            fail_msg("%s: returned %d (%s), expected EPERM", refused[i], rc, rs.error);
        assert_non_null(strstr(rs.error, "plugin gen may not run"));
        assert_non_null(strstr(rs.error, "rule R12"));
        assert_null(rs.out);
    }
    /* The granted path runs: $0 is that path, the environment is PATH and
     * what the rule passes, nothing of ours. */
    const char *argv[] = {prog_env, "a b", NULL};
    a4ps_run_result rs;
    assert_int_equal(run(outside_run_local, &pol, argv, 5000, 0, &rs), A4PS_OK);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s a b\n", prog_env);
    assert_true(rs.exited);
    assert_int_equal(rs.exit_code, 0);
    assert_non_null(strstr(rs.out, want));
    assert_non_null(strstr(rs.out, "A4PS_TEST_PASSED=passed-value"));
    assert_null(strstr(rs.out, "A4PS_TEST_UNRELATED"));
    assert_null(strstr(rs.out, "A4PS_TEST_GRANTED_KEY"));
    free(rs.out);
    free(rs.err);
}

static void program_limits(void **state)
{
    (void)state;
    const char *slow[] = {prog_sleep, "x", NULL};
    a4ps_run_result rs;
    assert_int_equal(run(outside_run_local, &pol, slow, 50, 0, &rs), A4PS_OK);
    assert_true(rs.timed_out);
    free(rs.out);
    free(rs.err);
    const char *flood[] = {prog_flood, NULL};
    assert_int_equal(run(outside_run_local, &pol, flood, 5000, 1000, &rs), A4PS_OK);
    assert_true(rs.stdout_overflow);
    assert_true(rs.out_len <= 1000);
    free(rs.out);
    free(rs.err);
}

/* ---- the helper's decoding: what a4psd (or anything in it) sends ---- */

typedef struct msg {
    unsigned char b[65536];
    size_t n;
} msg;

static void field(msg *m, unsigned tag, const void *p, size_t len, uint32_t claimed)
{
    assert_true(m->n + 5 + len <= sizeof m->b);
    m->b[m->n] = (unsigned char)tag;
    for (int i = 0; i < 4; i++)
        m->b[m->n + 1 + i] = (unsigned char)(claimed >> (8 * i));
    memcpy(m->b + m->n + 5, p, len);
    m->n += 5 + len;
}

static void sfield(msg *m, unsigned tag, const char *s)
{
    field(m, tag, s, strlen(s), (uint32_t)strlen(s));
}

/* -1: no answer (closed unanswered); otherwise the answer's status. */
static int serve(int http, const msg *m, char *error, size_t cap)
{
    void *ans;
    size_t len;
    error[0] = '\0';
    if (outside_serve_message(&pol, http, m->b, m->n, &ans, &len) != 0)
        return -1;
    int rc = outside_answer_status(http, ans, len, error, cap);
    free(ans);
    return rc;
}

static void helper_checks_every_field(void **state)
{
    (void)state;
    char err[256], url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", B.port);
    size_t b_before = atomic_load(&B.received);
    /* Tags: 1 plugin, 2 method, 3 url, 4 header, 5/6 credential, 7 body,
     * 8 timeout, 9 max_response (kernel/daemon/outside.c). */
    msg m = {0};
    assert_int_equal(serve(1, &m, err, sizeof err), A4PS_EINVAL);   /* nothing at all */
    m = (msg){0};
    field(&m, 1, "gen", 3, 100);                                     /* overlong length */
    assert_int_equal(serve(1, &m, err, sizeof err), -1);
    m = (msg){0};
    sfield(&m, 99, "x");                                             /* unknown tag */
    assert_int_equal(serve(1, &m, err, sizeof err), -1);
    m = (msg){0};
    sfield(&m, 0, "x");
    assert_int_equal(serve(1, &m, err, sizeof err), -1);
    m = (msg){0};
    sfield(&m, 1, "gen"), sfield(&m, 2, "GET"), sfield(&m, 3, url), sfield(&m, 3, url);
    assert_int_equal(serve(1, &m, err, sizeof err), A4PS_EINVAL);   /* a repeated field */
    assert_non_null(strstr(err, "malformed"));
    m = (msg){0};
    field(&m, 1, "gen\0x", 5, 5), sfield(&m, 2, "GET"), sfield(&m, 3, url);
    assert_int_equal(serve(1, &m, err, sizeof err), A4PS_EINVAL);   /* NUL in a string */
    m = (msg){0};
    sfield(&m, 1, "gen"), sfield(&m, 2, "GET"), sfield(&m, 3, url), sfield(&m, 8, "abc");
    assert_int_equal(serve(1, &m, err, sizeof err), A4PS_EINVAL);   /* a 3-byte integer */
    /* Well formed, straight to the helper: the policy still decides. */
    m = (msg){0};
    sfield(&m, 1, "gen"), sfield(&m, 2, "GET"), sfield(&m, 3, url);
    assert_int_equal(serve(1, &m, err, sizeof err), A4PS_EPERM);
    assert_non_null(strstr(err, "plugin gen may not reach"));
    /* run: tags 1 plugin, 2 argument (repeated), 3 input, 4-6 limits. */
    m = (msg){0};
    sfield(&m, 1, "gen");
    assert_int_equal(serve(0, &m, err, sizeof err), A4PS_EINVAL);   /* no argv */
    m = (msg){0};
    sfield(&m, 1, "gen"), sfield(&m, 2, "/bin/sh"), sfield(&m, 2, "-c"), sfield(&m, 2, "id");
    assert_int_equal(serve(0, &m, err, sizeof err), A4PS_EPERM);
    assert_non_null(strstr(err, "plugin gen may not run /bin/sh"));
    m = (msg){0};
    sfield(&m, 1, "gen");
    for (int i = 0; i < 300; i++)
        sfield(&m, 2, prog_env);
    assert_int_equal(serve(0, &m, err, sizeof err), A4PS_EINVAL);   /* too many arguments */
    /* Random bytes: refused one way or the other, never served. */
    unsigned seed = 77;
    for (int round = 0; round < 2000; round++) {
        m = (msg){0};
        m.n = (size_t)(rand_r(&seed) % 256);
        for (size_t i = 0; i < m.n; i++)
            m.b[i] = (unsigned char)rand_r(&seed);
        if (round % 2)
            m.b[0] = (unsigned char)(1 + rand_r(&seed) % 9);          /* a plausible tag */
        int rc = serve(round % 3 != 0, &m, err, sizeof err);
        if (rc >= 0)
            fail_msg("random message %d was served (%d)", round, rc);
    }
    assert_int_equal(atomic_load(&B.received), b_before);
}

/* ---- the forked helpers ---- */

static char *proc_file(pid_t pid, const char *what, size_t *len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    *len = fread(buf, 1, 65535, f);
    fclose(f);
    return buf;
}

static bool holds(const char *buf, size_t len, const char *needle)
{
    return memmem(buf, len, needle, strlen(needle)) != NULL;
}

static void helpers_keep_only_what_they_need(void **state)
{
    (void)state;
    pid_t hp = outside_http_pid(helpers), rp = outside_run_pid(helpers);
    assert_true(hp > 0);
    assert_true(rp > 0);
    /* The environment they started with (what /proc shows) is wiped; the
     * http helper keeps the granted credential in its own memory alone. */
    size_t n;
    char *env = proc_file(hp, "environ", &n);
    assert_non_null(env);
    assert_false(holds(env, n, "sk-granted"));
    assert_false(holds(env, n, "sk-unrelated"));
    assert_false(holds(env, n, "passed-value"));
    free(env);
    env = proc_file(rp, "environ", &n);
    assert_non_null(env);
    assert_false(holds(env, n, "sk-granted"));
    assert_false(holds(env, n, "sk-unrelated"));
    free(env);
    /* Started as root, they run as nobody. */
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        assert_non_null(pw);
        char want[64];
        snprintf(want, sizeof want, "Uid:\t%u\t%u\t%u", (unsigned)pw->pw_uid,
                 (unsigned)pw->pw_uid, (unsigned)pw->pw_uid);
        char *st = proc_file(hp, "status", &n);
        assert_true(holds(st, n, want));
        free(st);
        st = proc_file(rp, "status", &n);
        assert_true(holds(st, n, want));
        free(st);
    }
    /* The only descriptors: stdio and the control socket. */
    char fd4[64];
    snprintf(fd4, sizeof fd4, "/proc/%d/fd/4", (int)hp);
    if (geteuid() == 0)
        assert_int_equal(access(fd4, F_OK), -1);
}

static void helpers_serve_and_refuse(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", A.port);
    size_t a_before = atomic_load(&A.received);
    a4ps_http_response rs;
    int rc = http(outside_http_call, helpers, "gen", url, NULL, "A4PS_TEST_GRANTED_KEY", 5000,
                  0, &rs);
    if (rc != A4PS_OK)
        fail_msg("through the helper: %d %s", rc, rs.error);
    assert_int_equal(rs.status, 302);
    assert_string_equal(rs.body, "A!");
    free(rs.body);
    assert_true(atomic_load(&A.received) > a_before);
    /* The credential, read by the helper from its own environment. */
    pthread_mutex_lock(&A.mx);
    bool sent = strstr(A.last, "Authorization: Bearer sk-granted\r\n") != NULL;
    pthread_mutex_unlock(&A.mx);
    assert_true(sent);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", B.port);
    expect_refused(outside_http_call, helpers, url, NULL, NULL, A4PS_EPERM,
                   "plugin gen may not reach");
    const char *sh[] = {"/bin/sh", "-c", "id", NULL};
    a4ps_run_result rr;
    assert_int_equal(run(outside_run_call, helpers, sh, 2000, 0, &rr), A4PS_EPERM);
    assert_non_null(strstr(rr.error, "plugin gen may not run /bin/sh"));
    const char *envp[] = {prog_env, NULL};
    assert_int_equal(run(outside_run_call, helpers, envp, 5000, 0, &rr), A4PS_OK);
    assert_non_null(strstr(rr.out, "PATH=/usr/local/bin:/usr/bin:/bin"));
    assert_null(strstr(rr.out, "A4PS_TEST_UNRELATED"));
    free(rr.out);
    free(rr.err);
}

typedef struct par {
    int i;
    int rc;
    char out[64];
} par;

static void *par_run(void *arg)
{
    par *p = arg;
    char a[16];
    snprintf(a, sizeof a, "%d", p->i);
    const char *argv[] = {prog_sleep, a, NULL};
    a4ps_run_result rs;
    p->rc = run(outside_run_call, helpers, argv, 20000, 0, &rs);
    snprintf(p->out, sizeof p->out, "%s", rs.out ? (char *)rs.out : rs.error);
    free(rs.out);
    free(rs.err);
    return NULL;
}

static void helpers_serve_threads_at_once(void **state)
{
    (void)state;
    enum { N = 8 };
    pthread_t t[N];
    par p[N];
    for (int i = 0; i < N; i++) {
        p[i] = (par){.i = i};
        assert_int_equal(pthread_create(&t[i], NULL, par_run, &p[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        char want[32];
        snprintf(want, sizeof want, "got %d\n", i);
        if (p[i].rc != A4PS_OK || strcmp(p[i].out, want))
            fail_msg("call %d: %d '%s'", i, p[i].rc, p[i].out);
    }
}

static void helpers_end_with_their_channel(void **state)
{
    (void)state;
    outside *o;
    char err[256];
    /* A second pair (the test is multithreaded by now: only fork+serve). */
    assert_int_equal(outside_start(&pol, &o, err, sizeof err), 0);
    pid_t hp = outside_http_pid(o), rp = outside_run_pid(o);
    outside_stop(o);             /* closes the channels and reaps them */
    assert_int_equal(kill(hp, 0), -1);
    assert_int_equal(kill(rp, 0), -1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(origins_normalized_and_tricks_refused),
        cmocka_unit_test(http_only_to_granted_origins),
        cmocka_unit_test(http_redirect_is_an_answer_not_a_hop),
        cmocka_unit_test(http_limits),
        cmocka_unit_test(programs_only_as_listed),
        cmocka_unit_test(program_limits),
        cmocka_unit_test(helper_checks_every_field),
        cmocka_unit_test(helpers_keep_only_what_they_need),
        cmocka_unit_test(helpers_serve_and_refuse),
        cmocka_unit_test(helpers_serve_threads_at_once),
        cmocka_unit_test(helpers_end_with_their_channel),
    };
    return cmocka_run_group_tests(tests, world_up, world_down);
}
