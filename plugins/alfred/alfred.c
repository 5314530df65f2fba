/* alfred.c -- ALFRED, the supervisor persona: a monitor of the kernel's events.
 *
 * Subscribed to events (kernel_subscribe(k, "*", proto, "observe")), ALFRED
 * receives each one as a send of `observe` with the bus's JSON,
 *     {"event":"NAME","seq":N,"time":T,"data":{... "proto":"X" ...}},
 * and keeps in its proto's state:
 *     "total"            events observed (decimal)
 *     "count:<event>"    events observed with that name (decimal)
 *     "recent:<proto>"   the last 10 events about that proto, oldest first,
 *                        one "#<seq> <event> at <time>" per line
 *     "recent:*"         the last 10 events of all, the same lines with
 *                        " (proto X)" appended when the event names one
 * (proto names cannot contain '*', so "recent:*" is never a proto's list).
 *
 * The JSON is parsed by hand, strictly (RFC 8259 syntax, nesting up to 64):
 * a message that is not one well-formed object with an "event" string that
 * is a valid event name is refused and nothing is stored.  A data.proto that
 * is not a valid proto name is ignored (the event still counts).
 *
 * Global state: one mutex, serialising observe, report and reset, whose
 * read-modify-writes span several keys.  Uses abi/a4ps.h and libc only. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a4ps.h"
#include "persona.h"

#define OBSERVE_MAX 65536u       /* bytes of one event */
#define JSON_MAX_DEPTH 64
#define NAME_MAX_LEN 63          /* event and proto names, as the kernel's */
#define NUM_MAX_LEN 31
#define RECENT_KEEP 10
#define REPORT_RECENT 5
#define TOTAL_KEY "total"
#define COUNT_PREFIX "count:"
#define RECENT_PREFIX "recent:"
#define RECENT_ALL "recent:*"

static const a4ps_plugin alfred_plugin;

/* observe updates total, a count and two lists; reset deletes them all;
 * report reads them together.  One lock keeps each of those whole. */
static pthread_mutex_t books_lock = PTHREAD_MUTEX_INITIALIZER;

/* ======================================================================
 * A strict, minimal JSON reader: validates everything, keeps only what
 * observe needs.
 * ====================================================================== */

typedef struct jreader {
    const char *s;
    size_t n, i;
    int depth;
    const char *err;             /* static text */
    size_t err_at;
} jreader;

/* A decoded string: the first cap-1 bytes are kept; too_long says more
 * followed.  ascii is false when it held a control or non-ASCII character. */
typedef struct jstr {
    char buf[NAME_MAX_LEN + 2];
    size_t len;
    bool too_long;
    bool ascii;
} jstr;

typedef struct event_info {
    jstr event;
    bool has_event, event_not_string;
    char seq[NUM_MAX_LEN + 1], time[NUM_MAX_LEN + 1];
    bool seq_bad, time_bad;
    jstr proto;
    bool has_proto;
} event_info;

static bool j_fail(jreader *r, const char *why)
{
    if (!r->err) {
        r->err = why;
        r->err_at = r->i;
    }
    return false;
}

static void j_ws(jreader *r)
{
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
                           r->s[r->i] == '\r'))
        r->i++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool j_hex4(jreader *r, unsigned *out)
{
    if (r->n - r->i < 4)
        return j_fail(r, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(r->s[r->i + (size_t)k]);
        if (h < 0)
            return j_fail(r, "bad \\u escape");
        v = v * 16 + (unsigned)h;
    }
    r->i += 4;
    *out = v;
    return true;
}

static void jstr_put(jstr *out, unsigned char c)
{
    if (!out)
        return;
    if (c < 0x20 || c >= 0x7f)
        out->ascii = false;
    if (out->len < sizeof out->buf - 1)
        out->buf[out->len++] = (char)c;
    else
        out->too_long = true;
    out->buf[out->len] = '\0';
}

/* A string at r->i (which is '"'); decoded into out when not NULL. */
static bool j_string(jreader *r, jstr *out)
{
    if (out) {
        memset(out, 0, sizeof *out);
        out->ascii = true;
    }
    r->i++;                      /* the opening quote */
    while (r->i < r->n) {
        unsigned char c = (unsigned char)r->s[r->i];
        if (c == '"') {
            r->i++;
            return true;
        }
        if (c < 0x20)
            return j_fail(r, "control character in a string");
        if (c != '\\') {
            jstr_put(out, c);
            r->i++;
            continue;
        }
        if (++r->i >= r->n)
            break;
        char e = r->s[r->i++];
        switch (e) {
        case '"': jstr_put(out, '"'); break;
        case '\\': jstr_put(out, '\\'); break;
        case '/': jstr_put(out, '/'); break;
        case 'b': jstr_put(out, '\b'); break;
        case 'f': jstr_put(out, '\f'); break;
        case 'n': jstr_put(out, '\n'); break;
        case 'r': jstr_put(out, '\r'); break;
        case 't': jstr_put(out, '\t'); break;
        case 'u': {
            unsigned u;
            if (!j_hex4(r, &u))
                return false;
            /* Names are ASCII: anything else only needs to mark the
             * string as not a name, not to be decoded exactly. */
            jstr_put(out, u < 0x80 ? (unsigned char)u : 0x80);
            break;
        }
        default:
            r->i--;
            return j_fail(r, "bad escape in a string");
        }
    }
    return j_fail(r, "unterminated string");
}

/* A number at r->i, RFC 8259 grammar; its text copied to out (cap bytes)
 * when it fits, else out is made empty. */
static bool j_number(jreader *r, char *out, size_t cap)
{
    size_t start = r->i;
    const char *s = r->s;
    if (r->i < r->n && s[r->i] == '-')
        r->i++;
    if (r->i >= r->n || s[r->i] < '0' || s[r->i] > '9')
        return j_fail(r, "bad number");
    if (s[r->i] == '0')
        r->i++;
    else
        while (r->i < r->n && s[r->i] >= '0' && s[r->i] <= '9')
            r->i++;
    if (r->i < r->n && s[r->i] == '.') {
        r->i++;
        if (r->i >= r->n || s[r->i] < '0' || s[r->i] > '9')
            return j_fail(r, "bad number");
        while (r->i < r->n && s[r->i] >= '0' && s[r->i] <= '9')
            r->i++;
    }
    if (r->i < r->n && (s[r->i] == 'e' || s[r->i] == 'E')) {
        r->i++;
        if (r->i < r->n && (s[r->i] == '+' || s[r->i] == '-'))
            r->i++;
        if (r->i >= r->n || s[r->i] < '0' || s[r->i] > '9')
            return j_fail(r, "bad number");
        while (r->i < r->n && s[r->i] >= '0' && s[r->i] <= '9')
            r->i++;
    }
    if (out) {
        size_t len = r->i - start;
        if (len < cap) {
            memcpy(out, s + start, len);
            out[len] = '\0';
        } else {
            out[0] = '\0';
        }
    }
    return true;
}

static bool j_literal(jreader *r, const char *word)
{
    size_t n = strlen(word);
    if (r->n - r->i < n || memcmp(r->s + r->i, word, n) != 0)
        return j_fail(r, "unexpected token");
    r->i += n;
    return true;
}

/* Which members of an object to look at. */
enum obj_role { OBJ_SKIP, OBJ_TOP, OBJ_DATA };

static bool j_value(jreader *r, enum obj_role role, event_info *ev);

static bool j_object(jreader *r, enum obj_role role, event_info *ev)
{
    r->i++;                      /* '{' */
    j_ws(r);
    if (r->i < r->n && r->s[r->i] == '}') {
        r->i++;
        return true;
    }
    for (;;) {
        j_ws(r);
        if (r->i >= r->n || r->s[r->i] != '"')
            return j_fail(r, "expected a member name");
        jstr key;
        if (!j_string(r, &key))
            return false;
        j_ws(r);
        if (r->i >= r->n || r->s[r->i] != ':')
            return j_fail(r, "expected ':'");
        r->i++;
        j_ws(r);
        bool top = role == OBJ_TOP && !key.too_long;
        if (top && strcmp(key.buf, "event") == 0 && !ev->has_event) {
            ev->has_event = true;
            if (r->i < r->n && r->s[r->i] == '"') {
                if (!j_string(r, &ev->event))
                    return false;
            } else {
                ev->event_not_string = true;
                if (!j_value(r, OBJ_SKIP, ev))
                    return false;
            }
        } else if (top && (strcmp(key.buf, "seq") == 0 || strcmp(key.buf, "time") == 0)) {
            bool is_seq = key.buf[0] == 's';
            char *dst = is_seq ? ev->seq : ev->time;
            if (r->i < r->n && (r->s[r->i] == '-' || (r->s[r->i] >= '0' && r->s[r->i] <= '9'))) {
                if (!j_number(r, dst, NUM_MAX_LEN + 1))
                    return false;
                if (!dst[0])
                    *(is_seq ? &ev->seq_bad : &ev->time_bad) = true;
            } else {
                *(is_seq ? &ev->seq_bad : &ev->time_bad) = true;
                if (!j_value(r, OBJ_SKIP, ev))
                    return false;
            }
        } else if (top && strcmp(key.buf, "data") == 0) {
            if (!j_value(r, OBJ_DATA, ev))
                return false;
        } else if (role == OBJ_DATA && !key.too_long && strcmp(key.buf, "proto") == 0 &&
                   !ev->has_proto && r->i < r->n && r->s[r->i] == '"') {
            if (!j_string(r, &ev->proto))
                return false;
            ev->has_proto = true;
        } else if (!j_value(r, OBJ_SKIP, ev)) {
            return false;
        }
        j_ws(r);
        if (r->i < r->n && r->s[r->i] == ',') {
            r->i++;
            continue;
        }
        if (r->i < r->n && r->s[r->i] == '}') {
            r->i++;
            return true;
        }
        return j_fail(r, "expected ',' or '}'");
    }
}

static bool j_array(jreader *r, event_info *ev)
{
    r->i++;                      /* '[' */
    j_ws(r);
    if (r->i < r->n && r->s[r->i] == ']') {
        r->i++;
        return true;
    }
    for (;;) {
        j_ws(r);
        if (!j_value(r, OBJ_SKIP, ev))
            return false;
        j_ws(r);
        if (r->i < r->n && r->s[r->i] == ',') {
            r->i++;
            continue;
        }
        if (r->i < r->n && r->s[r->i] == ']') {
            r->i++;
            return true;
        }
        return j_fail(r, "expected ',' or ']'");
    }
}

/* Any value at r->i; objects are read in `role` (nested ones are skipped). */
static bool j_value(jreader *r, enum obj_role role, event_info *ev)
{
    j_ws(r);
    if (r->i >= r->n)
        return j_fail(r, "unexpected end of input");
    char c = r->s[r->i];
    bool ok;
    switch (c) {
    case '{':
    case '[':
        if (++r->depth > JSON_MAX_DEPTH)
            return j_fail(r, "nested deeper than 64 levels");
        ok = c == '{' ? j_object(r, role, ev) : j_array(r, ev);
        r->depth--;
        return ok;
    case '"':
        return j_string(r, NULL);
    case 't':
        return j_literal(r, "true");
    case 'f':
        return j_literal(r, "false");
    case 'n':
        return j_literal(r, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return j_number(r, NULL, 0);
        return j_fail(r, "unexpected character");
    }
}

/* ======================================================================
 * The books kept in state
 * ====================================================================== */

static bool valid_event_name(const jstr *s)
{
    if (s->len == 0 || s->too_long || !s->ascii || s->len > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < s->len; i++) {
        char c = s->buf[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

/* The kernel's rule for proto names: [A-Za-z][A-Za-z0-9_.-]*, under 64. */
static bool valid_proto_name(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN || !((s[0] >= 'a' && s[0] <= 'z') ||
                                            (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* A malloc'd, NUL-terminated copy of key's value (empty when absent), or NULL
 * on a failure other than absence. */
static char *get_text(a4ps_ctx *ctx, const char *key, size_t *len)
{
    for (;;) {
        int64_t n = a4ps_get(ctx, key, NULL, 0);
        if (n == A4PS_ENOENT)
            n = 0;
        else if (n < 0)
            return NULL;
        char *buf = malloc((size_t)n + 1);
        if (!buf)
            return NULL;
        int64_t m = n ? a4ps_get(ctx, key, buf, (size_t)n) : 0;
        if (m == n || (m == A4PS_ENOENT && n == 0)) {
            buf[n] = '\0';
            if (len)
                *len = (size_t)n;
            return buf;
        }
        free(buf);
        if (m < 0 && m != A4PS_ENOENT)
            return NULL;
        /* Changed size between the calls (or vanished): read again. */
    }
}

static unsigned long long get_count(a4ps_ctx *ctx, const char *key)
{
    char buf[24];
    int64_t n = a4ps_get(ctx, key, buf, sizeof buf - 1);
    if (n <= 0 || n >= (int64_t)sizeof buf)
        return 0;
    buf[n] = '\0';
    return strtoull(buf, NULL, 10);
}

static int add_count(a4ps_ctx *ctx, const char *key)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%llu", get_count(ctx, key) + 1);
    return a4ps_set(ctx, key, buf, (size_t)n);
}

/* Append line to the list under key, keeping the last RECENT_KEEP lines. */
static int push_recent(a4ps_ctx *ctx, const char *key, const char *line)
{
    size_t len;
    char *old = get_text(ctx, key, &len);
    if (!old)
        return A4PS_ENOMEM;
    unsigned lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += old[i] == '\n';
    lines += len > 0;
    const char *keep = old;
    while (lines >= RECENT_KEEP) {
        keep = strchr(keep, '\n') + 1;
        lines--;
    }
    size_t kl = strlen(keep), ll = strlen(line);
    char *buf = malloc(kl + ll + 2);
    if (!buf) {
        free(old);
        return A4PS_ENOMEM;
    }
    size_t n = 0;
    if (kl) {
        memcpy(buf, keep, kl);
        buf[kl] = '\n';
        n = kl + 1;
    }
    memcpy(buf + n, line, ll);
    n += ll;
    int rc = a4ps_set(ctx, key, buf, n);
    free(buf);
    free(old);
    return rc;
}

/* ======================================================================
 * Methods
 * ====================================================================== */

static int alfred_observe(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char out[256];
    if (len > OBSERVE_MAX) {
        snprintf(out, sizeof out, "observe: the event is %zu bytes; the limit is %u", len,
                 OBSERVE_MAX);
        return reply_text(ctx, A4PS_EINVAL, out);
    }
    jreader r = {.s = msg, .n = len};
    event_info ev;
    memset(&ev, 0, sizeof ev);
    j_ws(&r);
    bool ok;
    if (r.i >= r.n || r.s[r.i] != '{')
        ok = j_fail(&r, "expected '{' (an event is a JSON object)");
    else
        ok = j_value(&r, OBJ_TOP, &ev);
    if (ok) {
        j_ws(&r);
        if (r.i != r.n)
            ok = j_fail(&r, "text after the JSON object");
    }
    if (!ok) {
        snprintf(out, sizeof out, "observe: malformed JSON at byte %zu: %s", r.err_at, r.err);
        return reply_text(ctx, A4PS_EINVAL, out);
    }
    if (!ev.has_event || ev.event_not_string)
        return reply_text(ctx, A4PS_EINVAL, "observe: the event has no \"event\" string");
    if (!valid_event_name(&ev.event))
        return reply_text(ctx, A4PS_EINVAL, "observe: \"event\" is not a valid event name "
                                            "([a-z0-9_.-], at most 63 bytes)");
    if (ev.seq_bad || ev.time_bad)
        return reply_text(ctx, A4PS_EINVAL, ev.seq_bad ? "observe: \"seq\" is not a number"
                                                       : "observe: \"time\" is not a number");
    const char *proto = ev.has_proto && !ev.proto.too_long &&
                        valid_proto_name(ev.proto.buf, ev.proto.len) ? ev.proto.buf : NULL;

    char line[NAME_MAX_LEN * 2 + NUM_MAX_LEN * 2 + 32];
    int base = snprintf(line, sizeof line, "#%s %s at %s", ev.seq[0] ? ev.seq : "?",
                        ev.event.buf, ev.time[0] ? ev.time : "?");
    char key[sizeof COUNT_PREFIX + NAME_MAX_LEN + 1];

    pthread_mutex_lock(&books_lock);
    int rc = add_count(ctx, TOTAL_KEY);
    if (rc == A4PS_OK) {
        snprintf(key, sizeof key, COUNT_PREFIX "%s", ev.event.buf);
        rc = add_count(ctx, key);
    }
    if (rc == A4PS_OK && proto) {
        snprintf(key, sizeof key, RECENT_PREFIX "%s", proto);
        rc = push_recent(ctx, key, line);
    }
    if (rc == A4PS_OK) {
        if (proto)
            snprintf(line + base, sizeof line - (size_t)base, " (proto %s)", proto);
        rc = push_recent(ctx, RECENT_ALL, line);
    }
    pthread_mutex_unlock(&books_lock);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "observe: cannot write to the proto's state");
    snprintf(out, sizeof out, "observed %s", ev.event.buf);
    return reply_text(ctx, A4PS_OK, out);
}

typedef struct counted {
    char name[NAME_MAX_LEN + 1];
    unsigned long long n;
} counted;

typedef struct count_walk {
    counted *items;
    size_t n, cap;
    bool oom;
} count_walk;

static int collect_count(void *arg, const char *key, size_t value_len)
{
    count_walk *w = arg;
    size_t pl = sizeof COUNT_PREFIX - 1;
    if (strncmp(key, COUNT_PREFIX, pl) != 0 || strlen(key + pl) > NAME_MAX_LEN)
        return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        counted *p = realloc(w->items, cap * sizeof *p);
        if (!p) {
            w->oom = true;
            return 1;
        }
        w->items = p;
        w->cap = cap;
    }
    snprintf(w->items[w->n++].name, sizeof w->items[0].name, "%s", key + pl);
    return 0;
}

static int cmp_counted(const void *a, const void *b)
{
    const counted *x = a, *y = b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int alfred_report(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!A4PS_HOST_HAS(ctx->api, state_list))
        return reply_text(ctx, A4PS_ENOSYS, "report needs a host with state_list (ABI 1.1)");
    count_walk w = {0};
    pthread_mutex_lock(&books_lock);
    unsigned long long total = get_count(ctx, TOTAL_KEY);
    int rc = ctx->api->state_list(ctx, collect_count, &w);
    if (rc == A4PS_OK && w.oom)
        rc = A4PS_ENOMEM;
    char key[sizeof COUNT_PREFIX + NAME_MAX_LEN + 1];
    for (size_t i = 0; rc == A4PS_OK && i < w.n; i++) {
        snprintf(key, sizeof key, COUNT_PREFIX "%s", w.items[i].name);
        w.items[i].n = get_count(ctx, key);
    }
    size_t rlen = 0;
    char *recent = rc == A4PS_OK ? get_text(ctx, RECENT_ALL, &rlen) : NULL;
    pthread_mutex_unlock(&books_lock);
    if (rc == A4PS_OK && !recent)
        rc = A4PS_ENOMEM;
    if (rc != A4PS_OK) {
        free(w.items);
        free(recent);
        return reply_text(ctx, rc, "report: cannot read the proto's state");
    }

    if (total == 0) {
        reply_text(ctx, A4PS_OK, "no events observed yet");
    } else {
        qsort(w.items, w.n, sizeof *w.items, cmp_counted);
        char line[NAME_MAX_LEN + 64];
        snprintf(line, sizeof line, "events observed: %llu\nby event:", total);
        a4ps_reply(ctx, line, strlen(line));
        for (size_t i = 0; i < w.n; i++) {
            snprintf(line, sizeof line, "\n  %s: %llu", w.items[i].name, w.items[i].n);
            a4ps_reply_append(ctx, line, strlen(line));
        }
        /* The last REPORT_RECENT lines of the global list. */
        unsigned lines = rlen ? 1 : 0;
        for (size_t i = 0; i < rlen; i++)
            lines += recent[i] == '\n';
        const char *p = recent;
        for (; lines > REPORT_RECENT; lines--)
            p = strchr(p, '\n') + 1;
        snprintf(line, sizeof line, "\nlast %u event%s:", lines, lines == 1 ? "" : "s");
        a4ps_reply_append(ctx, line, strlen(line));
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            a4ps_reply_append(ctx, "\n  ", 3);
            a4ps_reply_append(ctx, p, n);
            p += n + (nl != NULL);
        }
    }
    free(w.items);
    free(recent);
    return A4PS_OK;
}

static int alfred_history(a4ps_ctx *ctx, const void *msg, size_t len)
{
    const char *s = msg;
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n'))
        len--;
    bool all = len == 1 && s[0] == '*';
    if (!all && !valid_proto_name(s, len))
        return reply_text(ctx, A4PS_EINVAL, "history: name a proto (or '*' for every event)");
    char key[sizeof RECENT_PREFIX + NAME_MAX_LEN + 1];
    snprintf(key, sizeof key, RECENT_PREFIX "%.*s", (int)len, s);
    size_t n;
    pthread_mutex_lock(&books_lock);
    char *list = get_text(ctx, key, &n);
    pthread_mutex_unlock(&books_lock);
    if (!list)
        return reply_text(ctx, A4PS_ENOMEM, "history: cannot read the proto's state");
    if (n == 0) {
        char out[128];
        snprintf(out, sizeof out, "no events recorded for proto '%.*s'", (int)len, s);
        if (all)
            snprintf(out, sizeof out, "no events recorded");
        reply_text(ctx, A4PS_OK, out);
    } else {
        a4ps_reply(ctx, list, n);
    }
    free(list);
    return A4PS_OK;
}

typedef struct book_keys {
    char **keys;
    size_t n, cap;
    bool oom;
} book_keys;

static int collect_book_key(void *arg, const char *key, size_t value_len)
{
    book_keys *b = arg;
    if (strcmp(key, TOTAL_KEY) != 0 && strncmp(key, COUNT_PREFIX, sizeof COUNT_PREFIX - 1) != 0 &&
        strncmp(key, RECENT_PREFIX, sizeof RECENT_PREFIX - 1) != 0)
        return 0;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 32;
        char **k = realloc(b->keys, cap * sizeof *k);
        if (!k) {
            b->oom = true;
            return 1;
        }
        b->keys = k;
        b->cap = cap;
    }
    if (!(b->keys[b->n] = strdup(key))) {
        b->oom = true;
        return 1;
    }
    b->n++;
    return 0;
}

static int alfred_reset(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!A4PS_HOST_HAS(ctx->api, state_list))
        return reply_text(ctx, A4PS_ENOSYS, "reset needs a host with state_list (ABI 1.1)");
    book_keys b = {0};
    pthread_mutex_lock(&books_lock);
    unsigned long long total = get_count(ctx, TOTAL_KEY);
    int rc = ctx->api->state_list(ctx, collect_book_key, &b);
    if (rc == A4PS_OK && b.oom)
        rc = A4PS_ENOMEM;
    for (size_t i = 0; rc == A4PS_OK && i < b.n; i++) {
        int d = a4ps_del(ctx, b.keys[i]);
        if (d != A4PS_OK && d != A4PS_ENOENT)
            rc = d;
    }
    pthread_mutex_unlock(&books_lock);
    for (size_t i = 0; i < b.n; i++)
        free(b.keys[i]);
    free(b.keys);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "reset: cannot clear the proto's state");
    char out[64];
    snprintf(out, sizeof out, "reset: forgot %llu event%s", total, total == 1 ? "" : "s");
    return reply_text(ctx, A4PS_OK, out);
}

static int alfred_help(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return persona_help(ctx, &alfred_plugin);
}

/* The reader must take the bus's own shape and refuse the broken kinds. */
static int alfred_self_test(a4ps_ctx *ctx)
{
    static const struct {
        const char *json;
        bool ok;
    } cases[] = {
        {"{\"event\":\"swap_committed\",\"seq\":3,\"time\":1.5,\"data\":{\"proto\":\"b\"}}", true},
        {"{\"event\":\"x\",\"data\":[1,{\"a\":null}],\"s\":\"\\u00e9\\n\"}", true},
        {"{\"event\":\"x\"", false},
        {"{\"event\":\"x\",}", false},
        {"{\"event\":01}", false},
        {"[1]", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jreader r = {.s = cases[i].json, .n = strlen(cases[i].json)};
        event_info ev;
        memset(&ev, 0, sizeof ev);
        bool ok = r.s[0] == '{' && j_value(&r, OBJ_TOP, &ev);
        if (ok) {
            j_ws(&r);
            ok = r.i == r.n;
        }
        if (ok != cases[i].ok)
            return A4PS_ERROR;
    }
    return A4PS_OK;
}

static const a4ps_method alfred_methods[] = {
    {"observe", alfred_observe, "record one event (the bus's JSON); subscribe this selector "
                                "to \"*\""},
    {"report", alfred_report, "events observed: the total, the count per event and the last 5"},
    {"history", alfred_history, "the last 10 events about the proto named in the message "
                                "('*': about anything)"},
    {"reset", alfred_reset, "forget every count and history"},
    {"help", alfred_help, "list ALFRED's selectors"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin alfred_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "alfred",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_MONITOR,
    .methods = alfred_methods,
    .self_test = alfred_self_test,
    .description = "ALFRED, the supervisor: observes the kernel's events, counts them and "
                   "keeps a recent history per proto",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &alfred_plugin;
}
