/* persona.h -- the few lines every persona plugin of this tree shares.
 *
 * Header-only and built on abi/a4ps.h alone, so each persona still builds
 * like a third-party plugin. */
#ifndef A4PS_PERSONA_H
#define A4PS_PERSONA_H

#include <stdio.h>
#include <string.h>

#include "a4ps.h"

/* Set the reply to text and return status, so error paths read as one
 * statement. */
static inline int reply_text(a4ps_ctx *ctx, int status, const char *text)
{
    a4ps_reply(ctx, text, strlen(text));
    return status;
}

/* The `help` of a persona: name, version, description, then one line per
 * selector with its doc. */
static inline int persona_help(a4ps_ctx *ctx, const a4ps_plugin *p)
{
    char line[512];
    snprintf(line, sizeof line, "%s %s: %s\nselectors:", p->name, p->version, p->description);
    a4ps_reply(ctx, line, strlen(line));
    for (const a4ps_method *m = p->methods; m->selector; m++) {
        snprintf(line, sizeof line, "\n  %s: %s", m->selector, m->doc);
        a4ps_reply_append(ctx, line, strlen(line));
    }
    return A4PS_OK;
}

#endif
