/* late_exit.c -- behaves in the probe (which calls each method three times)
 * and calls exit(0) on its fifth call, once live: a4psd must quarantine it
 * and keep running -- and still write its final snapshot at SIGTERM. */
#include <stdatomic.h>
#include <stdlib.h>

#include "live.h"

static _Atomic unsigned calls;

static int work(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    if (atomic_fetch_add(&calls, 1) + 1 >= 5 && !live_in_probe())
        exit(0);
    return h_reply(ctx, "worked");
}

static const a4ps_method methods[] = {
    {"work", work, "reply worked (the fifth time, live: exit(0))"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("live-late-exit", methods)
