/* plugin.c -- the smallest useful A4PS plugin, built by tests/abi/out_of_tree.sh
 * outside the source tree against the installed headers only.
 *
 * helper_not_exported() is deliberately non-static: the build flags the
 * installed files supply (-fvisibility=hidden) must keep it out of the
 * dynamic symbol table all the same. */
#include <string.h>

#include <a4ps.h>

int helper_not_exported(a4ps_ctx *ctx, const char *text);

int helper_not_exported(a4ps_ctx *ctx, const char *text)
{
    return a4ps_reply(ctx, text, strlen(text));
}

static int oot_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    return helper_not_exported(ctx, "pong");
}

static const a4ps_method oot_methods[] = {
    { "ping", oot_ping, "reply \"pong\"" },
    { NULL, NULL, NULL },
};

static const a4ps_plugin oot_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "oot",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = oot_methods,
    .description = "out-of-tree build check",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    (void)host;
    return &oot_plugin;
}
