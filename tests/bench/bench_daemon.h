/* bench_daemon.h -- what the benchmarks that start the real a4psd share
 * (kernel-free, like bench_control.c): the temp directory given to the user
 * a4psd drops to, as tests/integration/lib.sh's daemon_dir does. */
#ifndef A4PS_BENCH_DAEMON_H
#define A4PS_BENCH_DAEMON_H

#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
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

#endif
