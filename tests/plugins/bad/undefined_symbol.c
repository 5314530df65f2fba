/* undefined_symbol.c -- calls a4ps_test_no_such_function, which nothing
 * defines; a shared object may link with it undefined, but dlopen with
 * RTLD_NOW must fail to resolve it.  The declaration is exported explicitly:
 * an undefined hidden symbol would fail at link time instead. */
#include "tp_common.h"

A4PS_EXPORT extern int a4ps_test_no_such_function(void);

static int undefined_call(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return a4ps_test_no_such_function();
}

static const a4ps_method methods[] = {
    {"call", undefined_call, "call a function no library defines"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-undefined",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
