/* ctor_spin.c -- a constructor that never returns: it runs inside dlopen,
 * before the kernel sees a descriptor, so only the sandbox's wall limit
 * stops it and the host composes the report. */
#include "hostile.h"

__attribute__((constructor)) static void ctor_spin(void)
{
    volatile unsigned long n = 0;
    for (;;)
        n++;
}

static const a4ps_method methods[] = {
    {"ping", h_ping, "reply pong (never reached)"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-ctor-spin", methods)
