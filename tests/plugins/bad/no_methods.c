/* no_methods.c -- the method table is empty: its first entry is the
 * terminator (rule R8 wants at least one method). */
#include "tp_common.h"

static const a4ps_method methods[] = {
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-empty-table",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
