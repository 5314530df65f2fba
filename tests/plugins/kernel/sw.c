/* sw.c -- the plugin the swap tests and benchmarks swap, in several versions.
 *
 * Built once per version with TAG, VERSION and STATE_VERSION defined by
 * CMake.  State layout 1 keeps the counter as decimal text under "n"; layout
 * 2 keeps it as a binary uint64 under "count", and its migrate hook converts
 * from layout 1 (and layout 1's converts back, for rollbacks).  MIGRATE_FAIL
 * and MIGRATE_HANG build the versions whose migration goes wrong; NO_MIGRATE
 * one that changes layout with no hook at all. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a4ps.h"

static void reply_str(a4ps_ctx *ctx, const char *s)
{
    a4ps_reply(ctx, s, strlen(s));
}

static int64_t load_count(a4ps_ctx *ctx)
{
#if STATE_VERSION == 1
    char buf[32];
    int64_t n = a4ps_get(ctx, "n", buf, sizeof buf - 1);
    if (n < 0)
        return 0;
    buf[n < (int64_t)sizeof buf - 1 ? n : (int64_t)sizeof buf - 1] = 0;
    return strtoll(buf, NULL, 10);
#else
    uint64_t v = 0;
    if (a4ps_get(ctx, "count", &v, sizeof v) != (int64_t)sizeof v)
        return 0;
    return (int64_t)v;
#endif
}

static int store_count(a4ps_ctx *ctx, int64_t v)
{
#if STATE_VERSION == 1
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    return a4ps_set(ctx, "n", buf, (size_t)n);
#else
    uint64_t u = (uint64_t)v;
    return a4ps_set(ctx, "count", &u, sizeof u);
#endif
}

/* Reply in two halves with work between them: a reply mixing two versions
 * would show that one call ran code of both. */
static int sw_id(a4ps_ctx *ctx, const void *msg, size_t len)
{
    a4ps_reply(ctx, TAG ":", sizeof TAG);
    for (volatile int i = 0; i < 200; i++)
        ;
    a4ps_reply_append(ctx, ":" TAG, sizeof TAG);
    return A4PS_OK;
}

static int sw_noop(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return A4PS_OK;
}

static int sw_slow(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[16] = {0};
    memcpy(buf, msg, len < sizeof buf - 1 ? len : sizeof buf - 1);
    long ms = atol(buf);
    a4ps_set(ctx, "in_slow", "1", 1);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    reply_str(ctx, TAG " slow done");
    return A4PS_OK;
}

/* The state lock is per key operation, so add is read-modify-write under a
 * method-level guarantee only when callers of one proto do not overlap; the
 * tests give each writer its own key prefix (the message) for that reason. */
static int sw_add(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (len) {
        /* Per-writer counters: key "w:<msg>" (layout-independent). */
        char key[64], buf[32];
        int kl = snprintf(key, sizeof key, "w:%.*s", (int)(len < 40 ? len : 40), (const char *)msg);
        (void)kl;
        int64_t n = a4ps_get(ctx, key, buf, sizeof buf - 1);
        long long v = 0;
        if (n > 0) {
            buf[n] = 0;
            v = atoll(buf);
        }
        int m = snprintf(buf, sizeof buf, "%lld", v + 1);
        a4ps_set(ctx, key, buf, (size_t)m);
        reply_str(ctx, TAG);
        return A4PS_OK;
    }
    int64_t v = load_count(ctx) + 1;
    store_count(ctx, v);
    char out[48];
    snprintf(out, sizeof out, "%s %lld", TAG, (long long)v);
    reply_str(ctx, out);
    return A4PS_OK;
}

static int sw_get(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char out[48];
    snprintf(out, sizeof out, "%s %lld", TAG, (long long)load_count(ctx));
    reply_str(ctx, out);
    return A4PS_OK;
}

static __attribute__((unused)) int sw_migrate(a4ps_ctx *ctx, uint32_t from)
{
#if defined(MIGRATE_FAIL)
    return A4PS_ERROR;
#elif defined(MIGRATE_HANG)
    for (;;) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    return A4PS_ERROR;
#else
    char buf[32];
#if STATE_VERSION == 2
    if (from != 1)
        return A4PS_EINVAL;
    int64_t n = a4ps_get(ctx, "n", buf, sizeof buf - 1);
    uint64_t v = 0;
    if (n >= 0) {
        buf[n] = 0;
        v = strtoull(buf, NULL, 10);
        a4ps_del(ctx, "n");
    }
    return a4ps_set(ctx, "count", &v, sizeof v);
#else
    if (from != 2)
        return A4PS_EINVAL;
    uint64_t v = 0;
    if (a4ps_get(ctx, "count", &v, sizeof v) == (int64_t)sizeof v)
        a4ps_del(ctx, "count");
    int m = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return a4ps_set(ctx, "n", buf, (size_t)m);
#endif
#endif
}

static const a4ps_method methods[] = {
    {"id", sw_id, "reply TAG::TAG, written in two halves"},
    {"noop", sw_noop, "do nothing (the dispatch benchmark)"},
    {"slow", sw_slow, "sleep the given number of milliseconds"},
    {"add", sw_add, "add one to the counter (or to the writer's own counter)"},
    {"get", sw_get, "reply the counter"},
    {NULL, NULL, NULL},
};

static const char *const deps[] = {"good", NULL};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "sw",
    .version = VERSION,
    .state_version = STATE_VERSION,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .dependencies = deps,
#ifndef NO_MIGRATE
    .migrate = sw_migrate,
#endif
    .description = "the swap tests' subject",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
