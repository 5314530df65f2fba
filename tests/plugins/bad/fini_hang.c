/* fini_hang.c -- fini sleeps for ever (rule R10); the plugin otherwise works.
 *
 * Plugin `stuck-exit` (a name without "fini" in it, so a status report that
 * mentions "fini" is about the hook, not the name).  Built as 1.0.0 with the
 * hanging fini and, with STUCK_EXIT_V2, as 2.0.0 without one: swapping a
 * proto from 1.0.0 to 2.0.0 retires 1.0.0 and makes the kernel run its fini. */
#define _POSIX_C_SOURCE 200809L

#include <time.h>

#include "tp_common.h"

#ifdef STUCK_EXIT_V2
#define STUCK_VERSION "2.0.0"
#else
#define STUCK_VERSION "1.0.0"

static void fini_hang(a4ps_ctx *ctx)
{
    for (;;) {
        struct timespec ts = {.tv_sec = 60, .tv_nsec = 0};
        nanosleep(&ts, NULL);
    }
}
#endif

static int stuck_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    tp_reply(ctx, "pong " STUCK_VERSION);
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"ping", stuck_ping, "reply pong and the version"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "stuck-exit",
    .version = STUCK_VERSION,
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
#ifndef STUCK_EXIT_V2
    .fini = fini_hang,
#endif
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
