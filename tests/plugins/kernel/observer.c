/* observer.c -- an event observer and emitter for the event-bus tests.
 *
 * on_event appends each delivered event to the "log" state key, one per
 * line, and counts them in "count"; on_event_slow does the same after 20 ms,
 * to fill the bus queue; emit publishes its message as event "custom";
 * does_not_understand answers selectors starting with "dyn_" itself.  Its init
 * and self_test hooks log, which must work before the kernel has attached
 * the generation to its version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a4ps.h"

static int record(a4ps_ctx *ctx, const void *msg, size_t len)
{
    int64_t n = a4ps_get(ctx, "log", NULL, 0);
    size_t old = n > 0 ? (size_t)n : 0;
    char *buf = malloc(old + len + 1);
    if (!buf)
        return A4PS_ENOMEM;
    if (old)
        a4ps_get(ctx, "log", buf, old);
    memcpy(buf + old, msg, len);
    buf[old + len] = '\n';
    a4ps_set(ctx, "log", buf, old + len + 1);
    free(buf);
    char c[24] = {0};
    int64_t cl = a4ps_get(ctx, "count", c, sizeof c - 1);
    long v = cl > 0 ? atol(c) : 0;
    int m = snprintf(c, sizeof c, "%ld", v + 1);
    a4ps_set(ctx, "count", c, (size_t)m);
    return A4PS_OK;
}

static int on_event_slow(a4ps_ctx *ctx, const void *msg, size_t len)
{
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    return record(ctx, msg, len);
}

static int emit(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return ctx->api->emit(ctx, "custom", msg, len);
}

static int get_key(a4ps_ctx *ctx, const char *key)
{
    int64_t n = a4ps_get(ctx, key, NULL, 0);
    if (n < 0)
        return a4ps_reply(ctx, "", 0);
    char *buf = malloc((size_t)n + 1);
    if (!buf)
        return A4PS_ENOMEM;
    a4ps_get(ctx, key, buf, (size_t)n);
    a4ps_reply(ctx, buf, (size_t)n);
    free(buf);
    return A4PS_OK;
}

static int count(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return get_key(ctx, "count");
}

static int log_(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return get_key(ctx, "log");
}

static int dnu(a4ps_ctx *ctx, const char *selector, const void *msg, size_t len)
{
    if (strncmp(selector, "dyn_", 4) != 0)
        return A4PS_ENOSYS;
    char out[96];
    int n = snprintf(out, sizeof out, "handled %s", selector);
    a4ps_reply(ctx, out, (size_t)n);
    return A4PS_OK;
}

static int init(a4ps_ctx *ctx)
{
    ctx->api->log(ctx, A4PS_LOG_DEBUG, "observer ready");
    return A4PS_OK;
}

static int self_test(a4ps_ctx *ctx)
{
    ctx->api->log(ctx, A4PS_LOG_DEBUG, "observer self-test");
    return a4ps_set(ctx, "probe", "1", 1);
}

static const a4ps_method methods[] = {
    {"on_event", record, "record a delivered event"},
    {"on_event_slow", on_event_slow, "record a delivered event, slowly"},
    {"emit", emit, "publish the message as event 'custom'"},
    {"count", count, "how many events were recorded"},
    {"log", log_, "the recorded events, one per line"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "observer",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_MONITOR,
    .methods = methods,
    .does_not_understand = dnu,
    .init = init,
    .self_test = self_test,
    .description = "records the events it is sent",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
