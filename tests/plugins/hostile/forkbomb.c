/* forkbomb.c -- a plugin that forks until it cannot, and runs a shell.
 * fork (glibc's is clone(2) without CLONE_THREAD), fork(2) itself and
 * execve(2) are denied by the probe's seccomp filter; were they not, the
 * sandbox's RLIMIT_NPROC and wall limit would still hold. */
#include <sys/syscall.h>
#include <unistd.h>

#include "hostile.h"

static int bomb(a4ps_ctx *ctx, const void *msg, size_t len)
{
    int e = 0;
    for (;;) {
        pid_t p = fork();
        if (p == 0)
            for (;;)
                fork();
        if (p < 0 && errno != EAGAIN) {
            e = errno;
            break;
        }
    }
    if (syscall(SYS_fork) < 0 && errno != EAGAIN)
        e = errno;
    char *const argv[] = {"/bin/sh", "-c", "true", NULL};
    execv("/bin/sh", argv);
    return h_errno_reply(ctx, e);
}

static const a4ps_method methods[] = {
    {"bomb", bomb, "fork without end, then exec a shell"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("hostile-forkbomb", methods)
