/* counter_v1.c -- version 1.0.0 of the example plugin `counter`.
 *
 * Keeps one decimal counter in the proto's state under the key "count"
 * (state layout 1).  Version 2 (counter_v2.c) renames the key and migrates the
 * state; the pair is what the swap demonstration upgrades between while
 * callers are running.  Uses nothing but abi/a4ps.h. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a4ps.h"

#define COUNT_KEY "count"
#define SLOW_MAX_MS 60000ul

/* Each state call is atomic for its key, but incr is a read-modify-write, and
 * several threads may run it on one proto at once: without this lock two
 * callers could read the same value and one increment would be lost. */
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

/* Set the reply to a formatted line and return status, so error paths read
 * as one statement. */
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

/* Read the counter; a proto that never counted reads as 0. */
static int load_count(a4ps_ctx *ctx, unsigned long long *out)
{
    char buf[32];
    int64_t n = a4ps_get(ctx, COUNT_KEY, buf, sizeof buf - 1);
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

static int store_count(a4ps_ctx *ctx, unsigned long long v)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%llu", v);
    return a4ps_set(ctx, COUNT_KEY, buf, (size_t)len);
}

static int counter_incr(a4ps_ctx *ctx, const void *msg, size_t len)
{
    unsigned long long n = 0;
    pthread_mutex_lock(&count_lock);
    int rc = load_count(ctx, &n);
    if (rc == A4PS_OK) {
        n++;
        rc = store_count(ctx, n);
    }
    pthread_mutex_unlock(&count_lock);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "v1 incr: cannot read or write state key \"count\"");
    return reply_line(ctx, A4PS_OK, "v1 count=%llu", n);
}

static int counter_get(a4ps_ctx *ctx, const void *msg, size_t len)
{
    unsigned long long n = 0;
    int rc = load_count(ctx, &n);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "v1 get: cannot read state key \"count\"");
    return reply_line(ctx, A4PS_OK, "v1 count=%llu", n);
}

/* Lets a test hold a call open across a swap for a known time. */
static int counter_slow(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[16];
    if (len == 0 || len >= sizeof buf)
        return reply_text(ctx, A4PS_EINVAL, "v1 slow: the message must be a number of milliseconds");
    memcpy(buf, msg, len);
    buf[len] = '\0';

    char *end;
    errno = 0;
    unsigned long ms = strtoul(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0' || ms > SLOW_MAX_MS)
        return reply_text(ctx, A4PS_EINVAL, "v1 slow: the message must be a number of milliseconds up to 60000");

    struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
                           .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return reply_text(ctx, A4PS_OK, "v1 slow done");
}

static const a4ps_method counter_methods[] = {
    { "incr", counter_incr, "add 1 to the counter and reply \"v1 count=N\"" },
    { "get", counter_get, "reply \"v1 count=N\" with the current counter" },
    { "slow", counter_slow, "sleep the number of milliseconds in the message, then reply \"v1 slow done\"" },
    { NULL, NULL, NULL },
};

static const a4ps_plugin counter_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "counter",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = counter_methods,
    .description = "example counter kept as decimal text in state key \"count\"",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &counter_plugin;
}
