/* membomb.c -- a method that takes memory until malloc fails (RLIMIT_AS in
 * the sandbox) and then, as careless code does, writes through the NULL:
 * the kernel catches the fault and the probe reports it. */
#include <stdlib.h>

#include "hostile.h"

#define CHUNK (1u << 20)

static int eat(a4ps_ctx *ctx, const void *msg, size_t len)
{
    void **list = NULL;
    for (;;) {
        void **p = malloc(CHUNK);
        if (!p)
            break;
        memset(p, 0xa5, CHUNK);  /* really take it */
        *p = list;
        list = p;
    }
    volatile char *oops = malloc(CHUNK);
    oops[0] = 1;                 /* NULL: SIGSEGV */
    return h_reply(ctx, "survived");
}

static const a4ps_method methods[] = {
    {"eat", eat, "malloc until NULL, then write"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-membomb", methods)
