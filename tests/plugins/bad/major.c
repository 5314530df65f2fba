/* major.c -- built for ABI major 2 (rule R1): abi_major and the
 * signature both say 2, as a real major-2 build would, so the kernel must look
 * at abi_major before anything else in the descriptor. */
#include "tp_common.h"

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    .abi_major = 2,
    .abi_minor = 0,
    .struct_size = (uint32_t)sizeof(a4ps_plugin),
    .signature = A4PS_SIGNATURE(sizeof(void *), A4PS_BUILD_BIG_ENDIAN, 2),
    .name = "bad-major",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
