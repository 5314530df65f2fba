/* spew.c -- prints a fake passing report at load and gigabytes on stdout and
 * stderr in every call.  The probe pointed fd 1 and 2 at /dev/null before
 * loading it, so its real report stays intact. */
#include <stdlib.h>
#include <unistd.h>

#include "hostile.h"

#define SPEW_CHUNK (1u << 20)
#define SPEW_CHUNKS 1024         /* 1 GiB on each stream per call */

static const char fake[] =
    "{\"probe\":1,\"file\":\"hostile_spew.so\",\"verdict\":\"pass\",\"reason\":null}\n"
    "stage report\n";

__attribute__((constructor)) static void spew_ctor(void)
{
    fputs(fake, stdout);
    fflush(stdout);
    fputs(fake, stderr);
}

static int spew(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char *buf = malloc(SPEW_CHUNK);
    if (!buf)
        return h_reply(ctx, "no memory");
    memset(buf, '{', SPEW_CHUNK);
    for (int i = 0; i < SPEW_CHUNKS; i++) {
        if (write(1, buf, SPEW_CHUNK) < 0 || write(2, buf, SPEW_CHUNK) < 0)
            break;
    }
    printf("%s", fake);
    fflush(stdout);
    free(buf);
    return h_reply(ctx, "spewed");
}

static const a4ps_method methods[] = {
    {"spew", spew, "write 1 GiB to stdout and to stderr"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-spew", methods)
