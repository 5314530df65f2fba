/* method_crash.c -- method `crash` writes through a NULL pointer (SIGSEGV),
 * rule R9; `ok` works.
 *
 * Built twice: as 2.0.0 (the faulting version) and, with FAULT_SAFE, as a
 * well-behaved 1.0.0 of the same name whose `crash` replies "safe", so a test
 * can check that the fault rolls a proto back to 1.0.0.  `ok` names the
 * version that served it. */
#include "tp_common.h"

#ifdef FAULT_SAFE
#define FAULT_VERSION "1.0.0"
#else
#define FAULT_VERSION "2.0.0"
#endif

static int fault_crash(a4ps_ctx *ctx, const void *msg, size_t len)
{
#ifdef FAULT_SAFE
    tp_reply(ctx, "safe");
    return A4PS_OK;
#else
    /* Both volatiles matter: GCC's points-to analysis sees through a volatile
     * pointer variable and deletes a plain store it knows targets NULL; a
     * volatile store is never deleted. */
    volatile int *volatile p = NULL;
    *p = 42;
    tp_reply(ctx, "survived a NULL write");
    return A4PS_OK;
#endif
}

static int fault_ok(a4ps_ctx *ctx, const void *msg, size_t len)
{
    tp_reply(ctx, "ok " FAULT_VERSION);
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"crash", fault_crash, "writes through a NULL pointer (SIGSEGV)"},
    {"ok", fault_ok, "reply ok and the version"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "method-crash",
    .version = FAULT_VERSION,
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
