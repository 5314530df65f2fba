/* leak.c -- behaves in the probe; live, every `leak` allocates 1 MiB, writes
 * it and never frees it (issue 10: five calls took a4psd from 14 MB to
 * 219 MB, unnoticed).  The kernel's accounting per call must charge it to
 * this version: its net allocation in status and history grows by 1 MiB a
 * call.  `ping` allocates and frees, so a well-behaved call shows no growth. */
#include <stdlib.h>

#include "live.h"

#define LEAK_BYTES (1u << 20)

static void *held[4096];   /* reachable, so no tool calls it garbage */
static unsigned nheld;

static int leak_leak(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    if (live_in_probe())
        return h_reply(ctx, "leaked 0 MiB");
    void *p = malloc(LEAK_BYTES);
    if (!p)
        return h_errno_reply(ctx, ENOMEM);
    memset(p, 0xa5, LEAK_BYTES);
    if (nheld < sizeof held / sizeof held[0])
        held[nheld++] = p;
    char buf[48];
    snprintf(buf, sizeof buf, "leaked %u MiB", nheld);
    return h_reply(ctx, buf);
}

static int leak_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    void *p = malloc(4096);
    if (!p)
        return h_errno_reply(ctx, ENOMEM);
    memset(p, 0, 4096);
    free(p);
    return h_reply(ctx, "pong");
}

static const a4ps_method methods[] = {
    {"leak", leak_leak, "reply how much it holds (live: first leak 1 MiB)"},
    {"ping", leak_ping, "allocate 4 KiB, free it, reply pong"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-leak", methods)
