/* no_entry.c -- exports a4ps_plugin_main instead of a4ps_plugin_entry, so the
 * entry symbol is missing; the descriptor itself is well-formed. */
#include "tp_common.h"

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-no-entry",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_main(const a4ps_host_api *host);

const a4ps_plugin *a4ps_plugin_main(const a4ps_host_api *host)
{
    return &plugin;
}
