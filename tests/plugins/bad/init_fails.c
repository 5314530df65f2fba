/* init_fails.c -- init returns -1; a non-zero init refuses the load (the
 * init hook's contract in a4ps.h). */
#include "tp_common.h"

static int init_fails(a4ps_ctx *ctx)
{
    return -1;
}

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-start-fails",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .init = init_fails,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
