/* connect.c (live) -- behaves in the probe; once live, connects to the TCP
 * port it is sent on 127.0.0.1 and sends "stolen", as issue 10's attacker
 * did.  a4psd's seccomp filter (no AF_INET socket) and Landlock's TCP rule
 * (no connect) must refuse it; the reply says where it failed ("socket
 * errno N", "connect errno N") or "sent". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "live.h"

static int attack(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (live_in_probe())
        return h_reply(ctx, "probe");
    char text[32], out[64];
    h_text(text, sizeof text, msg, len);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(text)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(out, sizeof out, "socket errno %d", errno);
        return h_reply(ctx, out);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(out, sizeof out, "connect errno %d", errno);
        close(fd);
        return h_reply(ctx, out);
    }
    ssize_t n = send(fd, "stolen\n", 7, MSG_NOSIGNAL);
    close(fd);
    if (n == 7)
        return h_reply(ctx, "sent");
    return h_errno_reply(ctx, errno);
}

static const a4ps_method methods[] = {
    {"ping", h_ping, "pong"},
    {"connect", attack, "connect to 127.0.0.1:PORT and send"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("live-connect", methods)
