/* struct_size.c -- struct_size 8, smaller than any descriptor ever was
 * (rule R5). */
#include "tp_common.h"

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    .abi_major = A4PS_ABI_MAJOR,
    .abi_minor = A4PS_ABI_MINOR,
    .struct_size = 8,
    .signature = A4PS_BUILD_SIGNATURE,
    .name = "bad-size",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
