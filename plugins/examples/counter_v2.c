/* counter_v2.c -- version 2.0.0 of the example plugin `counter`.
 *
 * State layout 2 keeps the counter under the key "total" (layout 1, version
 * 1.0.0, called it "count"); the migrate hook converts a layout-1 state when
 * a proto is swapped from version 1 while callers are running.  Adds the
 * selector `reset`.  Uses nothing but abi/a4ps.h. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a4ps.h"

#define TOTAL_KEY "total"
#define V1_COUNT_KEY "count"
#define SLOW_MAX_MS 60000ul

/* incr is a read-modify-write over calls that are each atomic on their own;
 * concurrent callers of one proto must not interleave inside it. */
static pthread_mutex_t total_lock = PTHREAD_MUTEX_INITIALIZER;

static int reply_line(a4ps_ctx *ctx, int status, const char *fmt,
                      unsigned long long n)
{
    char line[96];
    int len = snprintf(line, sizeof line, fmt, n);
    if (len < 0)
        return A4PS_ERROR;
    a4ps_reply(ctx, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    return status;
}

static int reply_text(a4ps_ctx *ctx, int status, const char *text)
{
    a4ps_reply(ctx, text, strlen(text));
    return status;
}

/* Read a decimal counter from key; an absent key reads as 0. */
static int load_number(a4ps_ctx *ctx, const char *key, unsigned long long *out)
{
    char buf[32];
    int64_t n = a4ps_get(ctx, key, buf, sizeof buf - 1);
    if (n == A4PS_ENOENT) {
        *out = 0;
        return A4PS_OK;
    }
    if (n < 0)
        return (int)n;
    if ((size_t)n >= sizeof buf)
        return A4PS_ERANGE;
    buf[n] = '\0';

    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0')
        return A4PS_EINVAL;
    *out = v;
    return A4PS_OK;
}

static int store_total(a4ps_ctx *ctx, unsigned long long v)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%llu", v);
    return a4ps_set(ctx, TOTAL_KEY, buf, (size_t)len);
}

static int counter_incr(a4ps_ctx *ctx, const void *msg, size_t len)
{
    unsigned long long n = 0;
    pthread_mutex_lock(&total_lock);
    int rc = load_number(ctx, TOTAL_KEY, &n);
    if (rc == A4PS_OK) {
        n++;
        rc = store_total(ctx, n);
    }
    pthread_mutex_unlock(&total_lock);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "v2 incr: cannot read or write state key \"total\"");
    return reply_line(ctx, A4PS_OK, "v2 count=%llu", n);
}

static int counter_get(a4ps_ctx *ctx, const void *msg, size_t len)
{
    unsigned long long n = 0;
    int rc = load_number(ctx, TOTAL_KEY, &n);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "v2 get: cannot read state key \"total\"");
    return reply_line(ctx, A4PS_OK, "v2 count=%llu", n);
}

static int counter_reset(a4ps_ctx *ctx, const void *msg, size_t len)
{
    pthread_mutex_lock(&total_lock);
    int rc = store_total(ctx, 0);
    pthread_mutex_unlock(&total_lock);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "v2 reset: cannot write state key \"total\"");
    return reply_line(ctx, A4PS_OK, "v2 count=%llu", 0);
}

/* Lets a test hold a call open across a swap for a known time. */
static int counter_slow(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[16];
    if (len == 0 || len >= sizeof buf)
        return reply_text(ctx, A4PS_EINVAL, "v2 slow: the message must be a number of milliseconds");
    memcpy(buf, msg, len);
    buf[len] = '\0';

    char *end;
    errno = 0;
    unsigned long ms = strtoul(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0' || ms > SLOW_MAX_MS)
        return reply_text(ctx, A4PS_EINVAL, "v2 slow: the message must be a number of milliseconds up to 60000");

    struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
                           .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return reply_text(ctx, A4PS_OK, "v2 slow done");
}

/* Layout 1 kept the counter as "count"; move it to "total".  A layout newer
 * than ours (a rollback from some future version) is unknown here, so it is
 * refused and the proto stays where it was. */
static int counter_migrate(a4ps_ctx *ctx, uint32_t from_state_version)
{
    if (from_state_version != 1) {
        ctx->api->log(ctx, A4PS_LOG_ERR,
                      "counter 2.0.0 cannot migrate state layout %u (only layout 1)",
                      (unsigned)from_state_version);
        return A4PS_EINVAL;
    }

    unsigned long long n = 0;
    int rc = load_number(ctx, V1_COUNT_KEY, &n);
    if (rc != A4PS_OK) {
        ctx->api->log(ctx, A4PS_LOG_ERR,
                      "counter 2.0.0: state key \"count\" is not a decimal number");
        return rc;
    }
    rc = store_total(ctx, n);
    if (rc != A4PS_OK)
        return rc;
    rc = a4ps_del(ctx, V1_COUNT_KEY);
    /* A proto that never counted has no "count" to delete. */
    return rc == A4PS_ENOENT ? A4PS_OK : rc;
}

static const a4ps_method counter_methods[] = {
    { "incr", counter_incr, "add 1 to the counter and reply \"v2 count=N\"" },
    { "get", counter_get, "reply \"v2 count=N\" with the current counter" },
    { "reset", counter_reset, "set the counter to 0 and reply \"v2 count=0\"" },
    { "slow", counter_slow, "sleep the number of milliseconds in the message, then reply \"v2 slow done\"" },
    { NULL, NULL, NULL },
};

static const a4ps_plugin counter_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "counter",
    .version = "2.0.0",
    .state_version = 2,
    .kind = A4PS_KIND_TOOL,
    .methods = counter_methods,
    .migrate = counter_migrate,
    .description = "example counter kept as decimal text in state key \"total\"; migrates layout 1's \"count\"",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &counter_plugin;
}
