/* acct.c -- moves the allocator counters of the accounting tests
 * (tests/unit/test_contain.c) by telling the test, through api->log on the
 * calling thread, what to add to them: the test's counter callback hands the
 * kernel counters that only those log lines move, so every byte a call is
 * charged is one the test chose.
 *
 *   charge "A F"   log "charge A F" (A bytes allocated, F freed), reply ok
 *   echo           log "charge 100000 0", reply with the message (what relay
 *                  sends: a nested call, charged to this version alone) */
#include <stdio.h>

#include <string.h>

#include "a4ps.h"

static int acct_charge(a4ps_ctx *ctx, const void *msg, size_t len)
{
    ctx->api->log(ctx, A4PS_LOG_INFO, "charge %.*s", (int)len, (const char *)msg);
    return a4ps_reply(ctx, "ok", 2);
}

static int acct_echo(a4ps_ctx *ctx, const void *msg, size_t len)
{
    ctx->api->log(ctx, A4PS_LOG_INFO, "charge 100000 0");
    return a4ps_reply(ctx, msg, len);
}

static const a4ps_method methods[] = {
    {"charge", acct_charge, "log 'charge A F' for the test's counters, reply ok"},
    {"echo", acct_echo, "log 'charge 100000 0', reply the message"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER, .name = "acct", .version = "1.0.0", .state_version = 1,
    .kind = A4PS_KIND_TOOL, .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    (void)host;
    return &plugin;
}
