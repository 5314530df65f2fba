/* tamper.c -- a plugin that goes for the probe itself: it closes or dup2s
 * over every descriptor the report could leave by, ignores SIGSYS so denied
 * calls would go unrecorded, and then opens a socket.  The probe's filter
 * refuses the first two quietly; the socket is still trapped, counted and
 * reported, in a report that still arrives. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hostile.h"

static int tamper(a4ps_ctx *ctx, const void *msg, size_t len)
{
    /* Descriptors from 100 up: where a careful host keeps its own. */
    int taken = 0;
    for (int fd = 100; fd < 1024; fd++) {
        if (fcntl(fd, F_GETFD) < 0)
            continue;
        if (dup2(1, fd) == fd || close(fd) == 0)
            taken++;
    }
    signal(SIGSYS, SIG_IGN);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    char buf[64];
    snprintf(buf, sizeof buf, "took %d, socket %d errno %d", taken, s, s < 0 ? errno : 0);
    return h_reply(ctx, buf);
}

static const a4ps_method methods[] = {
    {"tamper", tamper, "attack the probe's descriptors and its SIGSYS handler"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-tamper", methods)
