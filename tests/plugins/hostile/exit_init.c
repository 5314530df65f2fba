/* exit_init.c -- an init hook that calls exit(): the probe's atexit handler
 * still prints a failing report naming the stage. */
#include <stdlib.h>

#include "hostile.h"

static int exit_init(a4ps_ctx *ctx)
{
    exit(3);
}

static const a4ps_method methods[] = {
    {"ping", h_ping, "reply pong (never reached)"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-exit-init", methods, .init = exit_init)
