/* bench_daemon.h -- what the benchmarks that start the real a4psd (and
 * redis-server) share, kernel-free: the temp directory given to the user
 * a4psd drops to (as tests/integration/lib.sh's daemon_dir does), starting
 * a server with its output in a log, connecting to its Unix socket, and
 * finding a program on PATH. */
#ifndef A4PS_BENCH_DAEMON_H
#define A4PS_BENCH_DAEMON_H

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Started as root, a4psd drops to daemon.user (default a4ps), which must
 * reach and write the benchmark's directory (mkdtemp makes it 0700 root's).
 * Nothing to do when not root (a4psd then runs as us) or without the user
 * (a4psd then refuses to start, saying so). */
static inline void bench_daemon_dir(const char *dir)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("a4ps") : NULL;
    if (!pw)
        return;
    if (chmod(dir, 0755) != 0 || chown(dir, pw->pw_uid, pw->pw_gid) != 0)
        perror(dir);
}

/* fork and exec argv[0] (on PATH) with stdout and stderr in log; the pid,
 * or -1 when fork failed. */
static inline pid_t bench_spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Connect to the server child listening (soon) at path, trying for 30 s:
 * the socket, or -1 with errno 0 when child exited first (reaped), or -1
 * with errno set when the time ran out. */
static inline int bench_connect_unix(const char *path, pid_t child)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    for (int i = 0; i < 1500; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        if (fd >= 0)
            close(fd);
        if (waitpid(child, NULL, WNOHANG) == child) {
            errno = 0;
            return -1;
        }
        usleep(20000);
    }
    return -1;
}

static inline bool bench_on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin:/bin"), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", d, prog);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

#endif
