/* hostile.h -- what every hostile test plugin shares: a reply helper and a
 * descriptor macro, so each file holds only its one misdeed.  Built like any
 * third-party plugin, against abi/ alone. */
#ifndef HOSTILE_H
#define HOSTILE_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "a4ps.h"

static inline int h_reply(a4ps_ctx *ctx, const char *text)
{
    return a4ps_reply(ctx, text, strlen(text));
}

/* "errno N" for a failed call: what the probe's report shows of it. */
static inline int h_errno_reply(a4ps_ctx *ctx, int e)
{
    char buf[32];
    snprintf(buf, sizeof buf, "errno %d", e);
    return h_reply(ctx, buf);
}

/* The message as a NUL-terminated string (cut at cap - 1 bytes). */
static inline void h_text(char *out, size_t cap, const void *msg, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(out, msg, n);
    out[n] = 0;
}

static inline int h_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    return h_reply(ctx, "pong");
}

#define HOSTILE_PLUGIN(NAME, METHODS, ...)                                     \
    static const a4ps_plugin hostile_plugin = {                               \
        A4PS_PLUGIN_HEADER, .name = NAME, .version = "1.0.0",                 \
        .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = METHODS,       \
        __VA_ARGS__};                                                         \
    const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)           \
    {                                                                         \
        (void)host;                                                           \
        return &hostile_plugin;                                               \
    }

#endif
