/* jthread.c -- a plugin (allowed threads) whose send writes its state from a
 * thread of its own and replies once that thread is done: the journal's
 * attacker.  The reply acknowledges the write, but the worker that sends it
 * appended nothing itself -- journal.sh thread_write_then_kill kills a4psd
 * right after the reply and asks whether the write came back. */
#include <pthread.h>
#include <string.h>

#include "../tp_common.h"

typedef struct job {
    a4ps_ctx *ctx;
    const char *msg;
    size_t len;
    int rc;
} job;

static void *writer(void *arg)
{
    job *j = arg;
    j->rc = a4ps_set(j->ctx, "k", j->msg, j->len);
    return NULL;
}

/* set VALUE: key "k" = VALUE, written by another thread. */
static int m_set(a4ps_ctx *ctx, const void *msg, size_t len)
{
    job j = {ctx, msg, len, -1};
    pthread_t t;
    if (pthread_create(&t, NULL, writer, &j) != 0)
        return A4PS_ERROR;
    pthread_join(t, NULL);
    return j.rc == A4PS_OK ? tp_reply(ctx, "stored") : j.rc;
}

static int m_get(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char buf[256];
    int64_t n = a4ps_get(ctx, "k", buf, sizeof buf);
    if (n < 0)
        return tp_reply(ctx, "(none)");
    return a4ps_reply(ctx, buf, n < (int64_t)sizeof buf ? (size_t)n : sizeof buf);
}

static const a4ps_method methods[] = {
    {"set", m_set, "store the message as k, from a thread of the plugin's"},
    {"get", m_get, "k"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "hostile_jthread",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
