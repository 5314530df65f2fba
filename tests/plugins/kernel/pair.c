/* pair.c -- one message that changes two protos, for the snapshot tests.
 *
 * `bump PEER` adds one to this proto's counter "n" and then sends `inc` to
 * PEER, which adds one to its own: after every whole message the two
 * counters are equal, so a snapshot that shows them unequal has cut a
 * message in half. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a4ps.h"

static long get_n(a4ps_ctx *ctx)
{
    char buf[32] = {0};
    int64_t n = a4ps_get(ctx, "n", buf, sizeof buf - 1);
    return n > 0 ? atol(buf) : 0;
}

static int inc(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld", get_n(ctx) + 1);
    return a4ps_set(ctx, "n", buf, (size_t)n);
}

static int bump(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char peer[64];
    if (!len || len >= sizeof peer)
        return A4PS_EINVAL;
    memcpy(peer, msg, len);
    peer[len] = 0;
    int rc = inc(ctx, NULL, 0);
    if (rc)
        return rc;
    /* Some work between the two halves, so a cut in the middle is likely
     * if the kernel allowed one. */
    for (volatile int i = 0; i < 2000; i++)
        ;
    void *reply = NULL;
    size_t rlen = 0;
    rc = ctx->api->send(ctx, peer, "inc", NULL, 0, &reply, &rlen);
    ctx->api->free(reply);
    return rc;
}

static const a4ps_method methods[] = {
    {"bump", bump, "add one here and one at the proto named in the message"},
    {"inc", inc, "add one here"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "pair",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
