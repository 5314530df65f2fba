/* init_hang.c -- init sleeps for ever (rule R10: a hook that overruns the
 * kernel's hook timeout is a failure and refuses the load). */
#define _POSIX_C_SOURCE 200809L

#include <time.h>

#include "tp_common.h"

static int init_hang(a4ps_ctx *ctx)
{
    for (;;) {
        struct timespec ts = {.tv_sec = 60, .tv_nsec = 0};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-start-hang",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .init = init_hang,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
