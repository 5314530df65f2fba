/* tp_common.h -- helpers shared by the test plugins.
 *
 * Test plugins are built exactly like third-party ones (abi/ headers only);
 * this header only saves each of them from repeating the reply boilerplate.
 * Everything here is static inline so a plugin that does not use a helper
 * does not trip -Wunused-function. */
#ifndef TP_COMMON_H
#define TP_COMMON_H

#include <string.h>

#include "a4ps.h"

static inline int tp_reply(a4ps_ctx *ctx, const char *text)
{
    return a4ps_reply(ctx, text, strlen(text));
}

/* The one well-formed method most bad plugins carry, so that the only thing
 * wrong with them is the thing their file is about. */
static inline int tp_ping(a4ps_ctx *ctx, const void *msg, size_t len)
{
    tp_reply(ctx, "pong");
    return A4PS_OK;
}

#endif
