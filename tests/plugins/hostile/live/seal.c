/* seal.c -- behaves in the probe; live, it goes for what the red team used
 * against the first seccomp filter (issue 10): each `try WORD` attempts one
 * thing and replies "ok" or "errno N".
 *
 *   unix PATH  connect to a pathname Unix socket (beyond Landlock's reach)
 *   stop       kill(getpid(), SIGSTOP): freeze a4psd
 *   nofile     setrlimit(RLIMIT_NOFILE, 8): starve accept into a busy loop
 *   filter     install a seccomp filter of its own (one that kills would end
 *              a4psd at its next system call; this one allows everything)
 *   channels   close every SOCK_SEQPACKET descriptor: the helpers' channels,
 *              so a socket of its own could answer for the root helper */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "live.h"

static int result(a4ps_ctx *ctx, int rc)
{
    return rc == 0 ? h_reply(ctx, "ok") : h_errno_reply(ctx, errno);
}

static int try_unix(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int rc = connect(s, (struct sockaddr *)&a, sizeof a);
    if (rc == 0 && write(s, "from-plugin\n", 12) != 12)
        rc = -1;
    int e = errno;
    close(s);
    errno = e;
    return rc;
}

static int try_filter(void)
{
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {.len = 1, .filter = allow};
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int try_channels(void)
{
    int closed = 0, e = 0;
    for (int fd = 3; fd < 1024; fd++) {
        int type;
        socklen_t len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET)
            continue;
        if (close(fd) == 0)
            closed++;
        else
            e = errno;
    }
    if (closed)
        return 0;
    errno = e ? e : ENOENT;
    return -1;
}

static int seal_try(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char what[512];
    h_text(what, sizeof what, msg, len);
    if (live_in_probe())
        return h_reply(ctx, "ok");
    if (!strncmp(what, "unix ", 5))
        return result(ctx, try_unix(what + 5));
    if (!strcmp(what, "stop"))
        return result(ctx, kill(getpid(), SIGSTOP));
    if (!strcmp(what, "nofile")) {
        struct rlimit rl = {8, 8};
        return result(ctx, setrlimit(RLIMIT_NOFILE, &rl));
    }
    if (!strcmp(what, "filter"))
        return result(ctx, try_filter());
    if (!strcmp(what, "channels"))
        return result(ctx, try_channels());
    return h_reply(ctx, "unknown");
}

static const a4ps_method methods[] = {
    {"try", seal_try, "attempt one thing (live only): unix PATH, stop, nofile, filter, channels"},
    {"ping", h_ping, "reply pong"},
    {NULL, NULL, NULL},
};

HOSTILE_PLUGIN("live-seal", methods)
