/* kv.c -- the plainest state write, for the journal benchmark.
 *
 * `put VALUE` stores the message as key "v" and replies "OK": one state
 * change per send, nothing read first, no lock of its own -- the a4psd
 * counterpart of redis's SET, so what the benchmark measures is the kernel's
 * write path (and its journal), not a plugin's work.  `get` replies "v". */
#include "a4ps.h"

static int put(a4ps_ctx *ctx, const void *msg, size_t len)
{
    int rc = a4ps_set(ctx, "v", msg, len);
    return rc ? rc : a4ps_reply(ctx, "OK", 2);
}

static int get(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[4096];
    int64_t n = a4ps_get(ctx, "v", buf, sizeof buf);
    if (n < 0)
        return (int)n;
    return a4ps_reply(ctx, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf);
}

static const a4ps_method methods[] = {
    {"put", put, "store the message as key \"v\" and reply OK"},
    {"get", get, "reply the value of \"v\" (its first 4096 bytes)"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "kv",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .description = "one key written per send (the journal benchmark)",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
