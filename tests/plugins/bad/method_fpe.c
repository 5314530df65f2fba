/* method_fpe.c -- method `crash` divides by zero (SIGFPE), rule R9;
 * `ok` works.
 *
 * Built twice: as 2.0.0 (the faulting version) and, with FAULT_SAFE, as a
 * well-behaved 1.0.0 of the same name whose `crash` replies "safe", so a test
 * can check that the fault rolls a proto back to 1.0.0.  `ok` names the
 * version that served it. */
#include <stdio.h>

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
    /* Both operands volatile: with a constant numerator GCC rewrites 1 / x
     * as a comparison (x is -1, 0 or 1 when defined) and never divides. */
    volatile int one = 1, zero = 0;
    int q = one / zero;
    char line[64];
    snprintf(line, sizeof line, "survived 1/0 = %d", q);
    tp_reply(ctx, line);
    return A4PS_OK;
#endif
}

static int fault_ok(a4ps_ctx *ctx, const void *msg, size_t len)
{
    tp_reply(ctx, "ok " FAULT_VERSION);
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"crash", fault_crash, "divides by zero (SIGFPE)"},
    {"ok", fault_ok, "reply ok and the version"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "method-fpe",
    .version = FAULT_VERSION,
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
