/* thread.c -- imports pthread_create.  In the probe it only replies; live,
 * `work` starts a thread that keeps running this plugin's own code, and
 * `crash` then writes through NULL: the version is quarantined and its
 * generation retired under the running thread.  Without
 * limits.allow_threads it is refused at load; with it, it must stay mapped.
 * Built twice: LIVE_THREAD_V2 is 1.0.1, the version that replaces the
 * quarantined one, so that the proto lets go of its generation. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "live.h"

static atomic_bool started;
static _Atomic unsigned long spins;

static void *spin(void *arg)
{
    (void)arg;
    for (;;) {
        atomic_fetch_add(&spins, 1);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int work(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    bool no = false;
    if (!live_in_probe() && atomic_compare_exchange_strong(&started, &no, true)) {
        pthread_t t;
        if (pthread_create(&t, NULL, spin, NULL) == 0)
            pthread_detach(t);
        return h_reply(ctx, "thread started");
    }
    return h_reply(ctx, "worked");
}

static int crash(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    if (!live_in_probe()) {
        volatile int *volatile p = NULL;
        *p = 1;
    }
    return h_reply(ctx, "fine");
}

static const a4ps_method methods[] = {
    {"work", work, "reply worked (live: start a thread first)"},
    {"crash", crash, "reply fine (live: write through NULL)"},
    {NULL, NULL, NULL},
};
#ifdef LIVE_THREAD_V2
#define LIVE_THREAD_VERSION "1.0.1"
#else
#define LIVE_THREAD_VERSION "1.0.0"
#endif
static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER, .name = "live-thread", .version = LIVE_THREAD_VERSION,
    .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    (void)host;
    return &plugin;
}
