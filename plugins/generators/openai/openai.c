/* openai.c -- the "openai" code generator: asks an OpenAI-compatible
 * /v1/chat/completions endpoint (llama.cpp's server, Ollama's /v1, vLLM, or
 * a hosted API) to write the candidate.
 *
 * generate turns the forge's task JSON into a chat request -- a system
 * message with the plugin rules and the text of abi/a4ps.h, a user message
 * with the goal, the tests and, from the second iteration on, the previous
 * source with its diagnostics and failures -- posts it through the host's
 * http entry (ABI rule R12: a helper outside a4psd makes the request, only
 * to the origins the config grants this plugin), and
 * replies with the C code of the answer: the first ```c (```C, ```c99, or
 * bare ```) block holding a4ps_plugin_entry, else the first such block, else
 * the whole answer when it holds a4ps_plugin_entry.
 *
 * Proto state (the settings, strings):
 *     base_url     "http://127.0.0.1:8080" (required); /v1/chat/completions is
 *                  appended, or /chat/completions when it ends with /v1
 *     model        the model name (required)
 *     api_key_env  the NAME of an environment variable holding the API key,
 *                  sent as "Authorization: Bearer KEY" (optional); the
 *                  host's helper reads it at each call, so the key is never
 *                  seen here, kept in state nor logged (the config must grant
 *                  the variable: outside.http credentials)
 *     timeout_ms   limit of one generate, retries included (default 120000)
 *     retries      further attempts after 429, 5xx or a connection error
 *                  (default 3); waits 200 ms, doubling, or the Retry-After
 *                  seconds, at most 5 s
 *     temperature  a number from 0 to 2 (optional)
 *     max_tokens   a positive integer (optional)
 *
 * Global state: none.  Uses abi/a4ps.h (minor 3: the http entry), jansson,
 * libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "a4ps.h"
#include "generator.h"

#define SETTING_MAX 4096u
#define RESPONSE_MAX (4u * 1024u * 1024u)
#define ABI_TEXT_MAX (48u * 1024u)
#define PREVIOUS_MAX (256u * 1024u)       /* previous source sent back */
#define NOTES_MAX (32u * 1024u)           /* diagnostics, failures */
#define ERROR_BODY_SHOWN 200
#define DEFAULT_TIMEOUT_MS 120000ul
#define MAX_TIMEOUT_MS 86400000ul
#define DEFAULT_RETRIES 3ul
#define MAX_RETRIES 20ul
#define BACKOFF_FIRST_MS 200ul
#define BACKOFF_CAP_MS 5000ul

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A growing text buffer.  Appends past max are refused (overflow set). */
typedef struct tbuf {
    char *data;
    size_t len, cap, max;
    bool overflow;
} tbuf;

static bool tbuf_add(tbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->max) {
        b->overflow = true;
        return false;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->overflow = true;
            return false;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

static bool tbuf_str(tbuf *b, const char *s)
{
    return tbuf_add(b, s, strlen(s));
}

/* Append at most max bytes of s, and a note when it was cut. */
static bool tbuf_cut(tbuf *b, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return tbuf_add(b, s, n);
    return tbuf_add(b, s, max) && tbuf_str(b, "\n[... cut ...]\n");
}

/* ---- the endpoint ---- */

/* The completions URL of base (malloc'd), or NULL when base is not an
 * http(s) URL. */
static char *completions_url(const char *base)
{
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
        return NULL;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (n <= 8 || memchr(base, ' ', n) || memchr(base, '\n', n))
        return NULL;
    bool has_v1 = n >= 3 && memcmp(base + n - 3, "/v1", 3) == 0;
    const char *tail = has_v1 ? "/chat/completions" : "/v1/chat/completions";
    char *url = malloc(n + strlen(tail) + 1);
    if (url) {
        memcpy(url, base, n);
        strcpy(url + n, tail);
    }
    return url;
}

static bool valid_env_name(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return strlen(s) <= 128;
}

typedef struct settings {
    char *url;
    char *model;
    char *key_env;
    unsigned long timeout_ms;
    unsigned long retries;
    bool has_temperature;
    double temperature;
    bool has_max_tokens;
    unsigned long max_tokens;
} settings;

static void settings_free(settings *s)
{
    free(s->url);
    free(s->model);
    free(s->key_env);
}

/* Read and check the proto's settings; on failure the reply names the key
 * and A4PS_ERROR is returned. */
static int settings_read(a4ps_ctx *ctx, settings *s)
{
    memset(s, 0, sizeof *s);
    s->timeout_ms = DEFAULT_TIMEOUT_MS;
    s->retries = DEFAULT_RETRIES;
    char *v = NULL;

    /* A key in the state would be written into the image and its backups. */
    if (a4ps_get(ctx, "api_key", NULL, 0) >= 0)
        return reply_fmt(ctx, A4PS_ERROR, "openai: refusing state key \"api_key\": put the key "
                                          "in an environment variable of the daemon and name "
                                          "that variable in \"api_key_env\"");

    int rc = state_str(ctx, "base_url", SETTING_MAX, &v);
    if (rc != A4PS_OK)
        return reply_fmt(ctx, A4PS_ERROR, "openai: state key \"base_url\" is not set (like "
                                          "\"http://127.0.0.1:8080\")");
    s->url = completions_url(v);
    if (!s->url) {
        rc = reply_fmt(ctx, A4PS_ERROR, "openai: state key \"base_url\" must be an http:// or "
                                        "https:// URL, not \"%.200s\"", v);
        free(v);
        return rc;
    }
    free(v);

    rc = state_str(ctx, "model", SETTING_MAX, &s->model);
    if (rc != A4PS_OK || s->model[0] == '\0')
        return reply_fmt(ctx, A4PS_ERROR, "openai: state key \"model\" is not set");

    rc = state_str(ctx, "api_key_env", SETTING_MAX, &s->key_env);
    if (rc == A4PS_OK && !valid_env_name(s->key_env))
        return reply_fmt(ctx, A4PS_ERROR, "openai: state key \"api_key_env\" must be the name "
                                          "of an environment variable, not \"%.64s\"",
                         s->key_env);

    static const struct {
        const char *key;
        unsigned long lo, hi;
        size_t off;
    } nums[] = {
        {"timeout_ms", 1, MAX_TIMEOUT_MS, offsetof(settings, timeout_ms)},
        {"retries", 0, MAX_RETRIES, offsetof(settings, retries)},
        {"max_tokens", 1, 10000000, offsetof(settings, max_tokens)},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (state_str(ctx, nums[i].key, SETTING_MAX, &v) != A4PS_OK)
            continue;
        unsigned long *dst = (unsigned long *)((char *)s + nums[i].off);
        if (!parse_ulong(v, nums[i].lo, nums[i].hi, dst)) {
            rc = reply_fmt(ctx, A4PS_ERROR, "openai: state key \"%s\" must be a whole number "
                                            "from %lu to %lu, not \"%.40s\"",
                           nums[i].key, nums[i].lo, nums[i].hi, v);
            free(v);
            return rc;
        }
        if (dst == &s->max_tokens)
            s->has_max_tokens = true;
        free(v);
    }

    if (state_str(ctx, "temperature", SETTING_MAX, &v) == A4PS_OK) {
        char *end;
        errno = 0;
        double t = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(t) || t < 0 || t > 2) {
            rc = reply_fmt(ctx, A4PS_ERROR, "openai: state key \"temperature\" must be a number "
                                            "from 0 to 2, not \"%.40s\"", v);
            free(v);
            return rc;
        }
        s->has_temperature = true;
        s->temperature = t;
        free(v);
    }
    return A4PS_OK;
}

/* ---- the prompt ---- */

static const char system_rules[] =
    "You write plugins for A4PS, a long-running C daemon whose behaviour lives in "
    "hot-swappable shared objects. Reply with exactly ONE complete C source file (C17, "
    "gcc -shared -fPIC -fvisibility=hidden) in a single ```c fenced block.\n"
    "Rules:\n"
    "- Include only \"a4ps.h\" and standard C / POSIX headers.\n"
    "- Export exactly one function, a4ps_plugin_entry, marked A4PS_EXPORT, returning a "
    "pointer to a static const a4ps_plugin that starts with A4PS_PLUGIN_HEADER; every other "
    "function and variable is static.\n"
    "- The descriptor's name is the plugin name given in the task; its version is \"X.Y.Z\", "
    "higher than the previous version's; its kind that of the previous source "
    "(A4PS_KIND_PERSONA for a new plugin); the methods table ends with {NULL, NULL, NULL}.\n"
    "- Keep every selector of the previous source working exactly as before, and add what "
    "the task asks for.\n"
    "- A method is int fn(a4ps_ctx *ctx, const void *msg, size_t len). The message is len "
    "bytes, NOT NUL-terminated, and may be garbage (empty, text, random bytes): never read "
    "past len, never crash, never block, never loop forever.\n"
    "- Reply with a4ps_reply(ctx, data, n) and return A4PS_OK, or set a one-line reason and "
    "return a negative A4PS_E* status (A4PS_EINVAL for a bad message).\n"
    "- Keep data in the proto's state (a4ps_get / a4ps_set), never in mutable globals. Keep "
    "the state layout (state_version) of the previous source unless a migrate hook converts "
    "it.\n"
    "- No threads, no network, no files, no processes, no environment, no signals.\n"
    "- Tests send the given input as the message to the given selector and compare the reply "
    "byte for byte with the expected text.\n";

/* Append the text of the ABI header at path, cut at ABI_TEXT_MAX. */
static void add_abi_text(tbuf *b, const char *path)
{
    FILE *f = path ? fopen(path, "re") : NULL;
    if (!f) {
        tbuf_str(b, "\n(The header abi/a4ps.h could not be read; follow the rules above.)\n");
        return;
    }
    char *text = malloc(ABI_TEXT_MAX + 1);
    size_t n = text ? fread(text, 1, ABI_TEXT_MAX, f) : 0;
    bool more = n == ABI_TEXT_MAX && fgetc(f) != EOF;
    fclose(f);
    if (!text)
        return;
    tbuf_str(b, "\nThe plugin ABI, abi/a4ps.h:\n```c\n");
    tbuf_add(b, text, n);
    tbuf_str(b, more ? "\n[... cut ...]\n```\n" : "\n```\n");
    free(text);
}

/* The user message of task t (malloc'd), or NULL when out of memory. */
static char *user_prompt(json_t *t, const char *task_id)
{
    tbuf b = {.max = (size_t)8 * 1024 * 1024};
    char line[256];
    const char *goal = member_str(t, "goal");
    const char *plugin = member_str(t, "plugin");
    const char *target = member_str(t, "target");
    const char *selector = member_str(t, "selector");
    json_t *it = json_object_get(t, "iteration");

    snprintf(line, sizeof line, "Task %s, iteration %" JSON_INTEGER_FORMAT ".\n", task_id,
             json_is_integer(it) ? json_integer_value(it) : (json_int_t)1);
    tbuf_str(&b, line);
    tbuf_str(&b, "Goal: ");
    tbuf_cut(&b, goal, NOTES_MAX);
    tbuf_str(&b, "\nPlugin name: ");
    tbuf_cut(&b, plugin, 256);
    if (json_is_true(json_object_get(t, "new_plugin")))
        tbuf_str(&b, " (a new plugin: there is no earlier version)");
    if (target) {
        tbuf_str(&b, "\nIt runs the proto: ");
        tbuf_cut(&b, target, 256);
    }
    if (selector) {
        tbuf_str(&b, "\nThe selector to add or fix: ");
        tbuf_cut(&b, selector, 256);
    }
    json_t *tests = json_object_get(t, "tests");
    if (json_is_array(tests) && json_array_size(tests) > 0) {
        tbuf_str(&b, "\n\nTests (each sends \"input\" as the message to \"selector\"; the reply "
                     "must equal \"expect\"):\n");
        size_t i;
        json_t *one;
        json_array_foreach(tests, i, one) {
            char *s = json_dumps(one, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s) {
                tbuf_str(&b, "- ");
                tbuf_cut(&b, s, 4096);
                tbuf_str(&b, "\n");
                free(s);
            }
            if (i == 63) {
                tbuf_str(&b, "- [... more tests cut ...]\n");
                break;
            }
        }
    }
    const char *prev = member_str(t, "previous_source");
    const char *diag = member_str(t, "diagnostics");
    const char *fail = member_str(t, "failures");
    if (prev && *prev) {
        tbuf_str(&b, "\nThe previous source:\n```c\n");
        tbuf_cut(&b, prev, PREVIOUS_MAX);
        tbuf_str(&b, "\n```\n");
    }
    if (diag && *diag) {
        tbuf_str(&b, "\nThe compiler's diagnostics of the previous candidate:\n```\n");
        tbuf_cut(&b, diag, NOTES_MAX);
        tbuf_str(&b, "\n```\n");
    }
    if (fail && *fail) {
        tbuf_str(&b, "\nThe test failures of the previous candidate:\n```\n");
        tbuf_cut(&b, fail, NOTES_MAX);
        tbuf_str(&b, "\n```\n");
    }
    tbuf_str(&b, "\nWrite the complete C file now, in one ```c block.\n");
    if (b.overflow) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* The request body (malloc'd JSON text), or NULL when out of memory. */
static char *request_body(const settings *s, json_t *t, const char *task_id)
{
    tbuf sys = {.max = (size_t)1024 * 1024};
    tbuf_str(&sys, system_rules);
    add_abi_text(&sys, member_str(t, "abi_header"));
    char *user = user_prompt(t, task_id);
    if (!user || sys.overflow) {
        free(user);
        free(sys.data);
        return NULL;
    }
    json_t *req = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}], s:b}", "model", s->model,
                            "messages", "role", "system", "content", sys.data, "role", "user",
                            "content", user, "stream", 0);
    free(user);
    free(sys.data);
    if (!req)
        return NULL;
    if (s->has_temperature)
        json_object_set_new(req, "temperature", json_real(s->temperature));
    if (s->has_max_tokens)
        json_object_set_new(req, "max_tokens", json_integer((json_int_t)s->max_tokens));
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* ---- the code in an answer ---- */

/* Is the fence's info string one of a C block's (c, C, c99 ... or none)? */
static bool c_info(const char *p, const char *eol)
{
    while (p < eol && (*p == ' ' || *p == '\t'))
        p++;
    const char *w = p;
    while (p < eol && *p != ' ' && *p != '\t' && *p != '\r' && *p != '{')
        p++;
    size_t n = (size_t)(p - w);
    static const char *const ok[] = {"c", "c89", "c99", "c11", "c17", "c23"};
    if (n == 0)
        return true;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (n == strlen(ok[i]) && strncasecmp(w, ok[i], n) == 0)
            return true;
    return false;
}

/* Where a line that opens or closes a fence starts at or after p: "```"
 * after at most three spaces at the start of a line.  NULL when none. */
static const char *find_fence(const char *start, const char *p, const char *end)
{
    for (; p + 3 <= end; p++) {
        const char *f = memmem(p, (size_t)(end - p), "```", 3);
        if (!f)
            return NULL;
        const char *l = f;
        while (l > start && l[-1] == ' ' && f - l < 4)
            l--;
        if (l == start || l[-1] == '\n')
            return f;
        p = f;
    }
    return NULL;
}

/* Find the C code in an answer: *code and *n are set to the code (a slice of
 * content) and true returned, or false when there is none. */
static bool extract_code(const char *content, size_t len, const char **code, size_t *n)
{
    const char *s = content, *end = content + len;
    /* Reasoning models may think aloud first, fences included. */
    const char *q = s;
    while (q < end && (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t'))
        q++;
    if ((size_t)(end - q) >= 7 && memcmp(q, "<think>", 7) == 0) {
        const char *close = memmem(q, (size_t)(end - q), "</think>", 8);
        if (close)
            s = close + 8;
    }
    static const char entry[] = "a4ps_plugin_entry";
    const char *first = NULL;
    size_t first_n = 0;
    const char *p = s;
    const char *f;
    while ((f = find_fence(s, p, end)) != NULL) {
        const char *eol = memchr(f, '\n', (size_t)(end - f));
        if (!eol)
            break;
        const char *body = eol + 1;
        const char *close = find_fence(s, body, end);
        const char *body_end = close ? close : end;
        /* The code ends with its last newline, not the closing fence's indent. */
        while (body_end > body && body_end[-1] == ' ')
            body_end--;
        if (c_info(f + 3, eol)) {
            size_t bn = (size_t)(body_end - body);
            if (memmem(body, bn, entry, sizeof entry - 1)) {
                *code = body;
                *n = bn;
                return true;
            }
            if (!first) {
                first = body;
                first_n = bn;
            }
        }
        if (!close)
            break;
        const char *after = memchr(close, '\n', (size_t)(end - close));
        if (!after)
            break;
        p = after + 1;
    }
    if (first) {
        *code = first;
        *n = first_n;
        return true;
    }
    if (memmem(s, (size_t)(end - s), entry, sizeof entry - 1)) {
        *code = s;
        *n = (size_t)(end - s);
        return true;
    }
    return false;
}

/* ---- HTTP, through the host ---- */

typedef struct response {
    tbuf body;
    long retry_after_s;          /* -1: no Retry-After in seconds */
} response;

/* The first ERROR_BODY_SHOWN bytes of body on one line, into out. */
static void body_excerpt(const tbuf *body, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < body->len && i < ERROR_BODY_SHOWN && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)body->data[i];
        out[o++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

/* Post body to the endpoint through the host's http entry, retrying as
 * configured, within the time limit.  On A4PS_OK, resp holds the 2xx
 * answer; otherwise the reply says what went wrong (URL, status or the
 * host's reason, first bytes of the answer). */
static int post(a4ps_ctx *ctx, const settings *s, const char *body, response *resp)
{
    if (!A4PS_HOST_HAS(ctx->api, http))
        return reply_fmt(ctx, A4PS_ERROR, "openai: this host has no http entry (ABI 1.3, rule "
                                          "R12): it cannot reach %s", s->url);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    uint64_t deadline = now_ms() + s->timeout_ms;
    unsigned long backoff = BACKOFF_FIRST_MS;
    int rc = A4PS_OK;
    for (unsigned long attempt = 1;; attempt++) {
        uint64_t now = now_ms();
        unsigned left = now < deadline ? (unsigned)(deadline - now) : 1u;
        a4ps_http_request rq = {
            .size = sizeof rq, .method = "POST", .url = s->url, .headers = headers,
            .credential_header = s->key_env ? "Authorization: Bearer " : NULL,
            .credential_env = s->key_env, .body = body, .body_len = strlen(body),
            .timeout_ms = left, .max_response = RESPONSE_MAX,
        };
        a4ps_http_response rs = {.size = sizeof rs};
        int hrc = ctx->api->http(ctx, &rq, &rs);
        ctx->api->free(resp->body.data);
        resp->body = (tbuf){.max = RESPONSE_MAX};
        resp->retry_after_s = hrc == A4PS_OK ? rs.retry_after_s : -1;
        if (hrc == A4PS_OK) {
            resp->body.data = rs.body;        /* the host's buffer, NUL-terminated */
            resp->body.len = rs.body_len;
            resp->body.cap = rs.body_len + 1;
            if (rs.status >= 200 && rs.status < 300)
                break;
        }

        bool retry = hrc == A4PS_OK ? (rs.status == 429 || rs.status >= 500) : rs.transient != 0;
        unsigned long wait = resp->retry_after_s >= 0
                                 ? (unsigned long)resp->retry_after_s * 1000ul
                                 : backoff;
        if (wait > BACKOFF_CAP_MS)
            wait = BACKOFF_CAP_MS;
        backoff = backoff * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : backoff * 2;
        bool time_left = now_ms() + wait < deadline;
        if (retry && attempt <= s->retries && time_left) {
            sleep_ms(wait);
            continue;
        }

        char after[96] = "";
        if (attempt > 1 || (retry && attempt <= s->retries))
            snprintf(after, sizeof after, " (after %lu attempt%s%s)", attempt,
                     attempt == 1 ? "" : "s",
                     retry && attempt <= s->retries ? ", no time left within timeout_ms" : "");
        if (hrc == A4PS_ERANGE)
            rc = reply_fmt(ctx, A4PS_ERROR, "openai: %s answered more than 4 MiB%s", s->url,
                           after);
        else if (hrc != A4PS_OK)
            rc = reply_fmt(ctx, A4PS_ERROR, "openai: %s: %s%s", s->url, rs.error, after);
        else {
            char excerpt[ERROR_BODY_SHOWN + 1];
            body_excerpt(&resp->body, excerpt, sizeof excerpt);
            rc = reply_fmt(ctx, A4PS_ERROR, "openai: %s answered %ld: %s%s", s->url, rs.status,
                           excerpt[0] ? excerpt : "(no body)", after);
        }
        break;
    }
    return rc;
}

/* ---- methods ---- */

static int openai_generate(a4ps_ctx *ctx, const void *msg, size_t len)
{
    json_t *t;
    char id[TASK_ID_MAX + 1];
    int rc = parse_task(ctx, "openai", "generate", msg, len, &t, id);
    if (rc != A4PS_OK)
        return rc;
    const char *goal = member_str(t, "goal"), *plugin = member_str(t, "plugin");
    if (!goal || !*goal || !plugin || !*plugin) {
        json_decref(t);
        return reply_fmt(ctx, A4PS_EINVAL, "openai generate: the task needs a \"goal\" and a "
                                           "\"plugin\" name");
    }
    settings s;
    rc = settings_read(ctx, &s);
    char *body = NULL;
    response resp = {.retry_after_s = -1};
    json_t *answer = NULL;
    if (rc != A4PS_OK)
        goto out;
    body = request_body(&s, t, id);
    if (!body) {
        rc = reply_fmt(ctx, A4PS_ENOMEM, "openai: cannot build the request for task %s", id);
        goto out;
    }

    rc = post(ctx, &s, body, &resp);
    if (rc != A4PS_OK)
        goto out;

    json_error_t jerr;
    answer = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, &jerr);
    json_t *choice = json_array_get(json_object_get(answer, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "message"), "content");
    if (!json_is_string(content)) {
        char excerpt[ERROR_BODY_SHOWN + 1];
        body_excerpt(&resp.body, excerpt, sizeof excerpt);
        rc = reply_fmt(ctx, A4PS_ERROR, "openai: %s answered without "
                                        "choices[0].message.content: %s",
                       s.url, excerpt[0] ? excerpt : "(no body)");
        goto out;
    }
    const char *code;
    size_t n;
    if (!extract_code(json_string_value(content), json_string_length(content), &code, &n)) {
        const char *finish = member_str(choice, "finish_reason");
        rc = reply_fmt(ctx, A4PS_ERROR, "openai: the reply held no C code block%s",
                       finish && strcmp(finish, "length") == 0
                           ? " (the model stopped at max_tokens)" : "");
        goto out;
    }
    ctx->api->log(ctx, A4PS_LOG_INFO, "openai: task %s: %s (model %s) wrote %zu bytes of code",
                  id, s.url, s.model, n);
    rc = a4ps_reply(ctx, code, n);
    if (rc != A4PS_OK)
        rc = reply_fmt(ctx, rc, "openai: cannot reply with the %zu bytes of code (%d)", n, rc);
out:
    json_decref(answer);
    ctx->api->free(resp.body.data);
    free(body);
    settings_free(&s);
    json_decref(t);
    return rc;
}

/* The next iteration's task carries the diagnostics and failures: nothing
 * to keep here. */
static int openai_feedback(a4ps_ctx *ctx, const void *msg, size_t len)
{
    json_t *t;
    char id[TASK_ID_MAX + 1];
    int rc = parse_task(ctx, "openai", "feedback", msg, len, &t, id);
    if (rc != A4PS_OK)
        return rc;
    json_decref(t);
    return reply_fmt(ctx, A4PS_OK, "ok");
}

/* ---- self-test and descriptor ---- */

static bool extracts(const char *content, const char *want)
{
    const char *code;
    size_t n;
    if (!extract_code(content, strlen(content), &code, &n))
        return want == NULL;
    return want && n == strlen(want) && memcmp(code, want, n) == 0;
}

static bool url_is(const char *base, const char *want)
{
    char *u = completions_url(base);
    bool ok = u ? want && strcmp(u, want) == 0 : want == NULL;
    free(u);
    return ok;
}

static int openai_self_test(a4ps_ctx *ctx)
{
    static const char entry_file[] = "#include \"a4ps.h\"\nA4PS_EXPORT const a4ps_plugin "
                                     "*a4ps_plugin_entry(const a4ps_host_api *h) { return 0; }\n";
    bool ok =
        extracts("Here it is:\n```c\nint x;\n```\nDone.", "int x;\n") &&
        extracts("```C\nint y;\n```", "int y;\n") &&
        extracts("```c99\nint z;\n```", "int z;\n") &&
        extracts("```\nint w;\n```", "int w;\n") &&
        extracts("```bash\nmake\n```\n```c\nint v;\n```", "int v;\n") &&
        extracts("```c\nint h;\n```\n```c\nint a4ps_plugin_entry;\n```",
                 "int a4ps_plugin_entry;\n") &&
        extracts("<think>```c\nint no;\n```</think>\n```c\nint yes;\n```", "int yes;\n") &&
        extracts("```c\nint open;\n", "int open;\n") &&
        extracts(entry_file, entry_file) &&
        extracts("I cannot help with that.", NULL) &&
        extracts("```python\nprint(1)\n```", NULL) &&
        url_is("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/chat/completions") &&
        url_is("http://h:11434/v1/", "http://h:11434/v1/chat/completions") &&
        url_is("https://api.example.com/v1", "https://api.example.com/v1/chat/completions") &&
        url_is("ftp://h", NULL) && url_is("http://", NULL) &&
        valid_env_name("OPENAI_API_KEY") && !valid_env_name("1X") && !valid_env_name("A=B");
    return ok ? A4PS_OK : A4PS_ERROR;
}

static const a4ps_method openai_methods[] = {
    {"generate", openai_generate,
     "ask the OpenAI-compatible endpoint for the candidate C source of the task"},
    {"feedback", openai_feedback, "accepted; the next task carries what the model needs"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin openai_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "openai",
    .version = "1.1.0",
    .state_version = 1,
    .kind = A4PS_KIND_GENERATOR,
    .methods = openai_methods,
    .self_test = openai_self_test,
    .description = "code generator: an OpenAI-compatible /v1/chat/completions client "
                   "(llama.cpp server, Ollama, vLLM) through the host's http entry",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &openai_plugin;
}
