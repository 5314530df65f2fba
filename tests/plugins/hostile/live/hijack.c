/* hijack.c -- behaves in the probe; live, it goes for what every plugin
 * shares with the others (issue 10: ROBIN's replies came back "HIJACKED:").
 *
 *   ping   live, on its first call: mprotects the host table's page
 *          writable, casts away const and points its `reply` at its own
 *          function.  The table is read-only and sealed, so
 *          the write faults inside this call: this plugin alone is
 *          quarantined, every other plugin's replies are unchanged.
 *   stash  live: keeps the pointer to its call's context (the thread's slot
 *          for that depth, which the next call at that depth reuses).
 *   echo   replies with the message; live, after a stash: points the stashed
 *          context's api at a table of its own.  Called through a relay that
 *          sits where stash sat, that context is the relay's, mid-call: the
 *          kernel must put it back before the relay replies.
 *
 *   observe  (an event observer) live: writes over the payload it was
 *          delivered; the observers after it must still get the event as
 *          it was published.
 *
 * In the probe each method just answers. */
#include <stdint.h>
#include <sys/mman.h>

#include "live.h"

static const a4ps_host_api *host_table;   /* the kernel's, from the entry */
static int (*kernel_reply)(a4ps_ctx *, const void *, size_t);
static a4ps_host_api evil_table;          /* a copy with `reply` replaced */
static a4ps_ctx *stashed;

static int evil_reply(a4ps_ctx *ctx, const void *data, size_t len)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "HIJACKED:%.*s", (int)(len < 400 ? len : 400),
                     (const char *)data);
    return kernel_reply(ctx, buf, (size_t)n);
}

static int hijack_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    static int done;
    (void)msg;
    (void)len;
    if (!live_in_probe() && !done) {
        done = 1;
        /* What the attacker did: the table is const only in the header.
         * And what the red team did next: make its page writable again
         * first (the kernel seals it, so this fails and the write faults). */
        a4ps_host_api *volatile table = (a4ps_host_api *)(uintptr_t)ctx->api;
        uintptr_t page = (uintptr_t)table & ~(uintptr_t)4095;
        mprotect((void *)page, 4096, PROT_READ | PROT_WRITE);
        table->reply = evil_reply;
    }
    return h_reply(ctx, "pong");
}

static int hijack_stash(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    if (!live_in_probe())
        stashed = ctx;
    return h_reply(ctx, "stashed");
}

static int hijack_echo(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!live_in_probe() && stashed && stashed != ctx) {
        evil_table = *host_table;
        evil_table.reply = evil_reply;
        *(const a4ps_host_api *volatile *)&stashed->api = &evil_table;
    }
    return a4ps_reply(ctx, msg, len);
}

static int hijack_observe(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!live_in_probe() && len >= 8)
        memcpy((void *)(uintptr_t)msg, "HIJACKED", 8);
    return h_reply(ctx, "seen");
}

static const a4ps_method methods[] = {
    {"ping", hijack_ping, "reply pong (live: first rewrite the host table's reply)"},
    {"stash", hijack_stash, "reply stashed (live: keep this call's context)"},
    {"echo", hijack_echo, "reply the message (live: redirect the stashed context's api)"},
    {"observe", hijack_observe, "reply seen (live: overwrite the delivered payload)"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin hijack_plugin = {
    A4PS_PLUGIN_HEADER, .name = "hostile-hijack", .version = "1.0.0",
    .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    host_table = host;
    kernel_reply = host ? host->reply : NULL;
    return &hijack_plugin;
}
