/* snoop.c -- reads and writes whatever path it is sent, and reads its
 * proto's state.  Nothing here is denied by seccomp: what keeps the host's
 * files (the image, the config, /etc/shadow) out of its reach, and /usr,
 * /etc and /root out of its writes, is the sandbox's mount table.  Replies
 * say what happened: "read N: <bytes>", "wrote", or "errno N". */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "hostile.h"

static int snoop_read(a4ps_ctx *ctx, const void *msg, size_t len)
{
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

/* The value of the state key named by the message, or "missing". */
static int statecheck(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char key[256], val[1024];
    h_text(key, sizeof key, msg, len);
    if (!key[0])
        return h_reply(ctx, "missing");
    int64_t n = a4ps_get(ctx, key, val, sizeof val);
    if (n < 0)
        return h_reply(ctx, "missing");
    return a4ps_reply(ctx, val, (size_t)n < sizeof val ? (size_t)n : sizeof val);
}

static const a4ps_method methods[] = {
    {"read", snoop_read, "read the file named by the message"},
    {"write", snoop_write, "create the file named by the message"},
    {"statecheck", statecheck, "reply the state value of the key named by the message"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-snoop", methods)
