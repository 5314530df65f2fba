/* self_test_late.c -- self_test overruns the hook timeout, then still writes
 * to its scratch state: the load is refused (rule R10) and the scratch state
 * must outlive the kernel's wait, since the hook keeps using it. */
#define _POSIX_C_SOURCE 200809L

#include <time.h>

#include "tp_common.h"

static int late(a4ps_ctx *ctx)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 600 * 1000000L};
    nanosleep(&ts, NULL);
    a4ps_set(ctx, "written", "after the timeout", 17);
    char buf[32];
    a4ps_get(ctx, "written", buf, sizeof buf);
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"ping", tp_ping, "reply pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "bad-late-check",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
    .self_test = late,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
