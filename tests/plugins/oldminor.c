/* oldminor.c -- a plugin as built against ABI 1.0 (rule R3).
 *
 * It declares abi_minor 0 and the 1.0 descriptor size, yet the bytes past that
 * size hold a self_test that always fails and a description no kernel should
 * show.  A kernel that honours struct_size never sees either: the load
 * succeeds even with self-tests enabled, and the description stays unread. */
#include "tp_common.h"

#define OLDMINOR_DESCRIPTION "OLDMINOR-DESCRIPTION-PAST-STRUCT-SIZE"

static int oldminor_self_test(a4ps_ctx *ctx)
{
    return -1;
}

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    .abi_major = A4PS_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = A4PS_PLUGIN_SIZE_1_0,
    .signature = A4PS_BUILD_SIGNATURE,
    .name = "oldminor",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .self_test = oldminor_self_test,
    .description = OLDMINOR_DESCRIPTION,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
