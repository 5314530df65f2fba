/* snoop.c (live) -- behaves in the probe; once live, reads and writes the
 * path it is sent.  Issue 10's attacker returned /etc/shadow and wrote into
 * /root this way; a4psd's Landlock rules must refuse both, and any file
 * outside a4psd's own directories.  Replies: "read N: <bytes>", "wrote", or
 * "errno N"; in the probe it answers "probe" and touches nothing. */
#include <fcntl.h>
#include <unistd.h>

#include "live.h"

static int snoop_read(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (live_in_probe())
        return h_reply(ctx, "probe");
    char path[4096], buf[256], out[300];
    h_text(path, sizeof path, msg, len);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return h_errno_reply(ctx, errno);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return h_errno_reply(ctx, e);
    buf[n] = 0;
    snprintf(out, sizeof out, "read %zd: %s", n, buf);
    return h_reply(ctx, out);
}

static int snoop_write(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (live_in_probe())
        return h_reply(ctx, "probe");
    char path[4096];
    h_text(path, sizeof path, msg, len);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return h_errno_reply(ctx, errno);
    ssize_t n = write(fd, "owned\n", 6);
    int e = errno;
    close(fd);
    return n == 6 ? h_reply(ctx, "wrote") : h_errno_reply(ctx, e);
}

static const a4ps_method methods[] = {
    {"ping", h_ping, "pong"},
    {"read", snoop_read, "read the file named by the message"},
    {"write", snoop_write, "create the file named by the message"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("live-snoop", methods)
