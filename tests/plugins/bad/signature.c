/* signature.c -- a build signature with the other pointer size (rule R2),
 * as if the plugin were built for a 32-bit target (or 64-bit on a 32-bit
 * host); everything else is well-formed. */
#include "tp_common.h"

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    .abi_major = A4PS_ABI_MAJOR,
    .abi_minor = A4PS_ABI_MINOR,
    .struct_size = (uint32_t)sizeof(a4ps_plugin),
    .signature = A4PS_SIGNATURE(sizeof(void *) == 8 ? 4 : 8,
                                A4PS_BUILD_BIG_ENDIAN, A4PS_ABI_MAJOR),
    .name = "bad-sig",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
