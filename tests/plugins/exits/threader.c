/* threader.c -- a plugin that imports pthread_create: refused at load unless
 * permitted (kernel_config.may_thread).  Its `spawn` starts a thread that
 * keeps running the plugin's own code; `crash` then faults, the version is
 * quarantined and its generation retired -- and must stay mapped, or the
 * thread dies of SIGSEGV at its next instruction, and the process with it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "tp_common.h"

static _Atomic unsigned long spins;
static atomic_bool started;

static void *spinner(void *arg)
{
    (void)arg;
    for (;;) {
        atomic_fetch_add(&spins, 1);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int m_spawn(a4ps_ctx *ctx, const void *msg, size_t len)
{
    bool no = false;
    if (!atomic_compare_exchange_strong(&started, &no, true))
        return tp_reply(ctx, "already");
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, spinner, NULL);
    pthread_attr_destroy(&at);
    return rc ? A4PS_ERROR : tp_reply(ctx, "spawned");
}

static int m_spins(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[32];
    unsigned long n = atomic_load(&spins);
    int i = (int)sizeof buf - 1;
    buf[i] = 0;
    do
        buf[--i] = (char)('0' + n % 10);
    while ((n /= 10) && i > 0);
    return tp_reply(ctx, buf + i);
}

static int m_crash(a4ps_ctx *ctx, const void *msg, size_t len)
{
    volatile int *volatile p = NULL;
    *p = 1;
    return A4PS_OK;
}

static const a4ps_method methods[] = {
    {"spawn", m_spawn, "start a thread that runs this plugin's code for ever"},
    {"spins", m_spins, "how many times the thread went round"},
    {"crash", m_crash, "write through NULL (SIGSEGV)"},
    {"ping", tp_ping, "pong"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "threader",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
