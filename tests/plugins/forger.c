/* forger.c -- a plugin that opens forge tasks through the host API (minor 2).
 *
 * `open` passes its message to api->forge as the request and replies with
 * what the host answered (the task as JSON, or the reason it refused), with
 * the host's status.  It checks A4PS_HOST_HAS first, as a plugin must for an
 * entry newer than minor 0 (R4). */
#include "tp_common.h"

static int forger_open(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!A4PS_HOST_HAS(ctx->api, forge)) {
        tp_reply(ctx, "this host has no forge entry");
        return A4PS_ENOSYS;
    }
    char req[4096];
    if (len >= sizeof req) {
        tp_reply(ctx, "forger: request too long");
        return A4PS_ERANGE;
    }
    memcpy(req, msg, len);
    req[len] = 0;
    void *reply = NULL;
    size_t rlen = 0;
    int rc = ctx->api->forge(ctx, req, &reply, &rlen);
    a4ps_reply(ctx, reply ? reply : "", reply ? rlen : 0);
    ctx->api->free(reply);
    return rc;
}

static const a4ps_method methods[] = {
    {"open", forger_open, "open a forge task with the message as its request"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "forger",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .description = "opens forge tasks through the host (tests)",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
