/* ctor_crash.c -- a constructor that dereferences NULL: it runs inside
 * dlopen, outside any recovery point, so the probe dies of SIGSEGV and the
 * host composes the report from the stage it was in. */
#include "hostile.h"

#include <stdint.h>

/* The address comes through a volatile so the compiler cannot see the NULL
 * store and drop the constructor as unreachable (GCC does). */
static volatile uintptr_t nowhere = 0;

__attribute__((constructor)) static void ctor_crash(void)
{
    *(volatile int *)nowhere = 1;
}

static const a4ps_method methods[] = {
    {"ping", h_ping, "reply pong (never reached)"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-ctor-crash", methods)
