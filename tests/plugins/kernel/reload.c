/* reload.c -- the subject of the drop-to-live benchmark.
 *
 * Its version string is a fixed-width pattern that the benchmark rewrites in
 * a copy of the file, so each drop is a new, higher version with its own
 * hash without compiling 200 plugins; `ver` replies the version, so the
 * first reply served by the new generation is recognisable. */
#include <string.h>

#include "a4ps.h"

static const char version[] = "7.7.000000000";

static int ver(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return a4ps_reply(ctx, version, strlen(version));
}

static const a4ps_method methods[] = {
    {"ver", ver, "reply this generation's version"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "rl",
    .version = version,
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .description = "the reload benchmark's subject",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
