/* shell.c (live) -- behaves in the probe; once live, runs a shell: `sh -c
 * id` by system(), by popen() and by fork+execve, as issue 10's attacker did
 * (uid=0(root)).  a4psd's seccomp filter must refuse each: the reply says
 * what every way came to ("system -1 errno N; popen ...; execve ...") and
 * "uid=" appears in it only if a shell ran. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "live.h"

static int shell(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    if (live_in_probe())
        return h_reply(ctx, "probe");
    char out[1024];
    size_t used = 0;
    errno = 0;
    int rc = system("id > /dev/null; id");
    used += (size_t)snprintf(out + used, sizeof out - used, "system %d errno %d; ", rc, errno);
    errno = 0;
    FILE *p = popen("id", "r");
    if (p) {
        char line[256] = "";
        if (!fgets(line, sizeof line, p))
            line[0] = 0;
        int st = pclose(p);
        used += (size_t)snprintf(out + used, sizeof out - used, "popen %d: %s; ", st, line);
    } else {
        used += (size_t)snprintf(out + used, sizeof out - used, "popen NULL errno %d; ", errno);
    }
    /* And without fork: exec in place would replace a4psd with the shell
     * if it were allowed -- the filter says no before anything happens. */
    char *const argv[] = {"/bin/sh", "-c", "id", NULL};
    char *const envp[] = {NULL};
    errno = 0;
    execve("/bin/sh", argv, envp);
    snprintf(out + used, sizeof out - used, "execve errno %d", errno);
    return h_reply(ctx, out);
}

static const a4ps_method methods[] = {
    {"ping", h_ping, "pong"},
    {"shell", shell, "run sh -c id three ways"},
    {NULL, NULL, NULL},
};
HOSTILE_PLUGIN("live-shell", methods)
