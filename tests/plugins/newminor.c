/* newminor.c -- a plugin as built against the next minor of the ABI (R4, R6).
 *
 * It declares abi_minor A4PS_ABI_MINOR + 1 and carries that minor's (imagined)
 * headers in its own source: a host table and a descriptor each with one
 * field appended.  They embed the current structs rather than copying their
 * fields so they stay "current + 1" when the real ABI grows.  Its methods
 * report whether the running host provides the appended entry (`probe`) and
 * an entry the host does have (`probe_known`). */
#include "tp_common.h"

typedef struct host_api_next {
    a4ps_host_api base;
    /* The entry minor+1 appends; its meaning does not matter to the test. */
    int (*future_entry)(a4ps_ctx *ctx, const char *what);
} host_api_next;

typedef struct plugin_next {
    a4ps_plugin base;
    const char *future_field;     /* the kernel must ignore this */
} plugin_next;

static int newminor_probe(a4ps_ctx *ctx, const void *msg, size_t len)
{
    const host_api_next *api = (const host_api_next *)ctx->api;
    /* The A4PS_HOST_HAS test, written against this plugin's own table: the
     * entry may only be read once the host's size says it exists. */
    int has = api->base.size >= offsetof(host_api_next, future_entry) +
                                    sizeof(api->future_entry) &&
              api->future_entry != NULL;
    tp_reply(ctx, has ? "present" : "missing");
    return A4PS_OK;
}

static int newminor_probe_known(a4ps_ctx *ctx, const void *msg, size_t len)
{
    tp_reply(ctx, A4PS_HOST_HAS(ctx->api, proto_name) ? "present" : "missing");
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"probe", newminor_probe, "is the minor+1 host entry there?"},
    {"probe_known", newminor_probe_known, "is proto_name (minor 1) there?"},
    {NULL, NULL, NULL},
};

static const plugin_next plugin = {
    .base = {
        .abi_major = A4PS_ABI_MAJOR,
        .abi_minor = A4PS_ABI_MINOR + 1,
        .struct_size = (uint32_t)sizeof(plugin_next),
        .signature = A4PS_BUILD_SIGNATURE,
        .name = "newminor",
        .version = "1.0.0",
        .state_version = 1,
        .kind = A4PS_KIND_TOOL,
        .methods = methods,
        .description = "built against the next ABI minor",
    },
    .future_field = "ignored by older kernels",
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin.base;
}
