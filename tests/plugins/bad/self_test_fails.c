/* self_test_fails.c -- self_test always fails, so a kernel that runs
 * self-tests refuses the load (descriptor minor 1 field). */
#include "tp_common.h"

static int self_test_fails(a4ps_ctx *ctx)
{
    return -1;
}

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-self-check",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .self_test = self_test_fails,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
