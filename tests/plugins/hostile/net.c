/* net.c -- a plugin that opens a network connection: socket(2) is denied by
 * the probe's seccomp filter (and there is no network in the sandbox). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hostile.h"

static int net_connect(a4ps_ctx *ctx, const void *msg, size_t len)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return h_errno_reply(ctx, errno);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "192.0.2.1", &sa.sin_addr);
    int rc = connect(s, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(s);
    return rc ? h_errno_reply(ctx, e) : h_reply(ctx, "connected");
}

static const a4ps_method methods[] = {
    {"connect", net_connect, "open a TCP connection to 192.0.2.1:80"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-net", methods)
