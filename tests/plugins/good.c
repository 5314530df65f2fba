/* good.c -- the well-formed reference plugin `good`, with no hooks at all.
 *
 * Built twice: good.so (1.0.0, ping -> "pong") and good-2.so (2.0.0, same
 * state layout, ping -> "pong2"), so tests can tell which version served a
 * call.  GOOD_VERSION and GOOD_PONG select the build. */
#include "tp_common.h"

#ifndef GOOD_VERSION
#define GOOD_VERSION "1.0.0"
#endif
#ifndef GOOD_PONG
#define GOOD_PONG "pong"
#endif

static int good_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    tp_reply(ctx, GOOD_PONG);
    return A4PS_OK;
}

static int good_echo(a4ps_ctx *ctx, const void *msg, size_t len)
{
    a4ps_reply(ctx, msg, len);
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"ping", good_ping, "reply " GOOD_PONG},
    {"echo", good_echo, "reply with the message"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "good",
    .version = GOOD_VERSION,
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .description = "the reference test plugin",
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
