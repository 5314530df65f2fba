/* relay.c -- a plugin that sends to another proto through the host (R11).
 *
 * `relay` takes a proto name as its message, sends that proto `echo` with
 * "relayed", and replies with what came back.  The host's reply buffer is
 * released with api->free, as the rule says; the method also checks that the
 * buffer is NUL-terminated as the send entry promises. */
#include <stdio.h>

#include "tp_common.h"

static int relay_relay(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char proto[128];
    if (len == 0 || len >= sizeof proto) {
        tp_reply(ctx, "relay: message must be a proto name");
        return A4PS_EINVAL;
    }
    memcpy(proto, msg, len);
    proto[len] = '\0';

    void *reply = NULL;
    size_t reply_len = 0;
    int rc = ctx->api->send(ctx, proto, "echo", "relayed", 7, &reply,
                            &reply_len);
    if (rc != A4PS_OK) {
        char line[160];
        snprintf(line, sizeof line, "relay: send failed with %d", rc);
        tp_reply(ctx, line);
        ctx->api->free(reply);
        return rc;
    }
    if (reply && ((const char *)reply)[reply_len] != '\0')
        tp_reply(ctx, "relay: reply not NUL-terminated");
    else
        a4ps_reply(ctx, reply, reply_len);
    ctx->api->free(reply);
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"relay", relay_relay, "send echo to the proto named by the message"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "relay",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
