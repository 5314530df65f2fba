/* spin.c -- a method that never returns: the probe's watchdog stops the
 * probe after --call-ms and reports the call as timed out. */
#include "hostile.h"

static int spin(a4ps_ctx *ctx, const void *msg, size_t len)
{
    volatile unsigned long n = 0;
    for (;;)
        n++;
    return 0;
}

static const a4ps_method methods[] = {
    {"spin", spin, "loop forever"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-spin", methods)
