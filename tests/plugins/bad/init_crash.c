/* init_crash.c -- init writes through a NULL pointer (rule R9: a fault
 * in init refuses the load).  The store is volatile through a volatile
 * pointer so the compiler can neither prove it faults nor delete it. */
#include "tp_common.h"

static int init_crash(a4ps_ctx *ctx)
{
    volatile int *volatile p = NULL;
    *p = 42;
    return 0;
}

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-start-crash",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .init = init_crash,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
