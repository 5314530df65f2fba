/* privsep.c -- the privileged helper and a4psd's side of its channel.
 *
 * The channel is a SOCK_SEQPACKET pair, so one request is one message: a
 * fixed-size privsep_req and, as SCM_RIGHTS, the write ends of the run's
 * stdout and stderr pipes and one end of a fresh socket pair of its own.
 * The helper checks the request; refused, it answers on that private socket
 * and logs why; accepted, it forks a worker for the run, which starts runsc,
 * kills the container when a4psd writes "K" on the private socket (or closes
 * it: a4psd died), and answers runsc's wait status when the run is over.
 * One private socket per run lets a4psd's verifier and forge threads run at
 * once without sharing a reply stream.
 *
 * What the helper decides and a4psd cannot: runsc's path and --root, the
 * bundle (written by the helper, in a directory a4psd cannot change), the
 * mounts, the user inside the sandbox, --network=none.  What a4psd says is
 * checked: the run's id has sandbox_run's shape, the work directory is one
 * sandbox_work_create made (a real directory of a4psd's user), the limits
 * are at most the config's, the arguments are well-formed strings.  A
 * remaining window: a4psd could swap its own work directory for a link
 * between the check and runsc's mount of it; the sandbox would then see
 * another directory -- with a4psd's user's rights, no network, no root. */
#define _GNU_SOURCE
#include "daemon/privsep.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#define NOBODY 65534
#define MAX_SANDBOXES 4

struct privsep {
    pid_t pid;
    int fd;
    pthread_mutex_t lock;        /* one sendmsg at a time on the channel */
    sandbox_runner runner;
};

/* ---- The helper ---- */

static void hlog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hlog(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++)
        if (*c == '\n' || (unsigned char)*c < 0x20)
            *c = '?';
    fprintf(stderr, "<%d>a4psd-helper: %s\n", level, line);
}

typedef struct helper {
    const privsep_config *pc;
    sandbox *sb[MAX_SANDBOXES];
    const char *dirs[MAX_SANDBOXES];
    size_t nsb;
    uid_t run_uid;               /* the user inside the sandbox */
    gid_t run_gid;
} helper;

static void reply(int fd, int ok, int wstatus, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply(int fd, int ok, int wstatus, const char *fmt, ...)
{
    privsep_reply r = {.ok = ok, .wstatus = wstatus};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.message, sizeof r.message, fmt, ap);
    va_end(ap);
    if (fd >= 0 && send(fd, &r, sizeof r, MSG_NOSIGNAL) != (ssize_t)sizeof r && ok)
        hlog(LOG_WARNING, "cannot answer a4psd: %s", strerror(errno));
}

static bool limit_ok(uint64_t v, uint64_t max)
{
    return max == 0 || (v > 0 && v <= max);
}

/* The run of one accepted request, in a process of its own. */
static void __attribute__((noreturn))
worker(helper *h, sandbox *sb, const privsep_req *rq, const char *const *argv, int out,
       int errfd, int ctl)
{
    signal(SIGCHLD, SIG_DFL);    /* the helper ignores it; we wait for runsc */
    sandbox_limits lim = {.cpu_s = (unsigned)rq->cpu_s, .mem_bytes = (size_t)rq->mem_bytes,
                          .nproc = (unsigned)rq->nproc, .file_bytes = (size_t)rq->file_bytes};
    char err[512];
    pid_t pid;
    if (h->pc->daemon_uid == 0 && (chown(rq->workdir, NOBODY, NOBODY) != 0 ||
                                   chmod(rq->workdir, 0700) != 0)) {
        reply(ctl, 0, 0, "cannot hand %s to the sandbox's user: %s", rq->workdir,
              strerror(errno));
        _exit(1);
    }
    int rc = sandbox_exec_start(sb, rq->id, rq->workdir, argv, &lim, out, errfd, h->run_uid,
                                h->run_gid, &pid, err, sizeof err);
    close(out);
    close(errfd);
    if (rc != 0) {
        reply(ctl, 0, 0, "%s", err);
        _exit(1);
    }
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    bool killed = false;
    struct pollfd fds[2] = {{ctl, POLLIN, 0}, {pfd, POLLIN, 0}};
    for (;;) {
        int n = poll(fds, pfd >= 0 ? 2 : 1, killed ? 1000 : pfd >= 0 ? -1 : 100);
        if (n < 0 && errno != EINTR)
            break;
        siginfo_t si = {0};
        if (pfd < 0 && waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == pid)
            break;               /* no pidfd (an old kernel): polled */
        if (n == 0 && killed) {
            kill(pid, SIGKILL);  /* runsc itself did not end with its container */
            continue;
        }
        if (pfd >= 0 && (fds[1].revents & POLLIN))
            break;
        if (fds[0].fd >= 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            char c;
            ssize_t r = recv(ctl, &c, 1, MSG_DONTWAIT);
            if (r <= 0 && !(r < 0 && errno == EAGAIN))
                fds[0].fd = -1;  /* a4psd is gone: end the run */
            if ((r != 1 || c == 'K') && !killed && !(r < 0 && errno == EAGAIN)) {
                sandbox_exec_kill(sb, rq->id);
                killed = true;
            }
        }
    }
    int st = 0;
    waitpid(pid, &st, 0);
    sandbox_exec_end(sb, rq->id);
    reply(ctl, 1, st, "ran");
    _exit(0);
}

/* The sandbox whose work directory this is (a real directory of a4psd's
 * user, or of nobody's when a4psd is root and a run handed it over). */
static sandbox *workdir_sandbox(helper *h, const char *workdir)
{
    for (size_t i = 0; i < h->nsb; i++)
        if (sandbox_valid_workdir(h->sb[i], workdir, h->pc->daemon_uid) ||
            (h->pc->daemon_uid == 0 && sandbox_valid_workdir(h->sb[i], workdir, NOBODY)))
            return h->sb[i];
    return NULL;
}

/* One message from a4psd: checked field by field; every descriptor it
 * carried is closed here or handed to the worker. */
static void handle(helper *h, int fd)
{
    privsep_req rq;
    char cbuf[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = {&rq, sizeof rq};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    if (n == 0) {
        /* An empty record reads as 0 too: only a hung-up channel ends us. */
        struct pollfd p = {fd, POLLRDHUP, 0};
        if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)))
            _exit(0);            /* a4psd closed the channel: it stops, so do we */
    }
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        hlog(LOG_ERR, "channel: %s; stopping", strerror(errno));
        _exit(1);
    }
    int fds[8], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && nfds < 8; i++)
            memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    int ctl = -1;
    sandbox *sb = NULL;
    const char *why = NULL;
    char whybuf[256];
    struct stat st;
    if (nfds == 3 && fstat(fds[2], &st) == 0 && S_ISSOCK(st.st_mode))
        ctl = fds[2];            /* where the answer goes, accepted or not */
    if (n != (ssize_t)sizeof rq || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        why = "not one whole request";
    else if (rq.magic != PRIVSEP_MAGIC || rq.op != PRIVSEP_OP_RUN)
        why = "unknown request";
    else if (nfds != 3 || ctl < 0)
        why = "expected three descriptors (stdout, stderr, reply socket)";
    else if (fstat(fds[0], &st) != 0 || !S_ISFIFO(st.st_mode) || fstat(fds[1], &st) != 0 ||
             !S_ISFIFO(st.st_mode))
        why = "stdout and stderr must be pipes";
    else if (rq.reserved != 0)
        why = "reserved field set";
    else if (!memchr(rq.id, 0, sizeof rq.id) || !sandbox_valid_id(rq.id))
        why = "the run's id is not a4ps-PID-N-N";
    else if (!memchr(rq.workdir, 0, sizeof rq.workdir) || !(sb = workdir_sandbox(h, rq.workdir)))
        why = "the work directory is not one of a sandbox's own";
    else if (!limit_ok(rq.cpu_s, h->pc->max.cpu_s) || !limit_ok(rq.mem_bytes, h->pc->max.mem_bytes) ||
             !limit_ok(rq.nproc, h->pc->max.nproc) ||
             !limit_ok(rq.file_bytes, h->pc->max.file_bytes))
        why = "a limit exceeds the config's";
    else if (rq.nargs < 1 || rq.nargs > PRIVSEP_MAX_ARGS)
        why = "argument count out of range";
    const char *argv[PRIVSEP_MAX_ARGS + 1];
    if (!why) {
        size_t off = 0;
        for (uint32_t i = 0; i < rq.nargs && !why; i++) {
            size_t len = off < sizeof rq.args ? strnlen(rq.args + off, sizeof rq.args - off)
                                              : sizeof rq.args;
            if (off + len >= sizeof rq.args) {
                why = "arguments not NUL-terminated within the request";
                break;
            }
            argv[i] = rq.args + off;
            off += len + 1;
        }
        argv[rq.nargs] = NULL;
        if (!why && argv[0][0] != '/')
            why = "the program must be an absolute path inside the sandbox";
        static const char *const programs[] = PRIVSEP_PROGRAMS;
        const char *const *allowed = h->pc->programs ? h->pc->programs : programs;
        bool known = false;
        for (int i = 0; !why && allowed[i] && !known; i++)
            known = !strcmp(argv[0], allowed[i]);
        if (!why && !known)
            why = "the program is not one a4psd runs in the sandbox (the compiler, the probe)";
    }
    if (why) {
        snprintf(whybuf, sizeof whybuf, "%s", why);
        hlog(LOG_WARNING, "refused a request from a4psd: %s", whybuf);
        reply(ctl, 0, 0, "the helper refused the request: %s", whybuf);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    pid_t w = fork();
    if (w == 0) {
        close(fd);
        worker(h, sb, &rq, argv, fds[0], fds[1], ctl);
    }
    if (w < 0)
        reply(ctl, 0, 0, "the helper cannot fork: %s", strerror(errno));
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static void __attribute__((noreturn)) helper_main(int fd, pid_t parent, const privsep_config *pc)
{
    /* Ends with a4psd: the death signal, and the channel's EOF below. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    prctl(PR_SET_NAME, "a4psd-helper");
    /* Nothing of a4psd's but stdio and our channel: the other helpers'
     * channels must see EOF when a4psd ends, not stay open here. */
    if (fd > 3)
        close_range(3, (unsigned)fd - 1, 0);
    close_range((unsigned)fd + 1, ~0U, 0);
    static const int ignored[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        signal(ignored[i], SIG_IGN);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);

    helper h = {.pc = pc};
    h.run_uid = pc->daemon_uid ? pc->daemon_uid : NOBODY;
    h.run_gid = pc->daemon_uid ? pc->daemon_gid : NOBODY;
    char err[1024] = "";
    bool dropping = pc->daemon_uid != geteuid();
    for (size_t i = 0; pc->sandbox_dirs && pc->sandbox_dirs[i] && i < MAX_SANDBOXES; i++) {
        const char *dir = pc->sandbox_dirs[i];
        /* The runtime directory may not exist yet; a4psd takes it over
         * after we answer.  The sandbox directory in it stays ours: root's,
         * sticky and writable, so a4psd's user can make work directories
         * there but can neither list it nor touch our bundles and runsc's
         * state. */
        if (mkdir(dir, 0711) != 0 && errno != EEXIST) {
            snprintf(err, sizeof err, "%s: %s", dir, strerror(errno));
            break;
        }
        if (sandbox_open(dir, pc->runsc, pc->ro_dirs, &h.sb[i], err, sizeof err) != 0)
            break;
        h.dirs[i] = dir;
        h.nsb++;
        if (dropping) {
            char sbdir[4200];
            snprintf(sbdir, sizeof sbdir, "%s/sandbox", dir);
            if (chown(sbdir, geteuid(), getegid()) != 0 || chmod(sbdir, 01733) != 0) {
                snprintf(err, sizeof err, "%s: %s", sbdir, strerror(errno));
                break;
            }
        }
    }
    if (err[0]) {
        for (size_t i = 0; i < h.nsb; i++)
            sandbox_close(h.sb[i]);
        h.nsb = 0;
    }
    reply(fd, err[0] == 0, 0, "%s", err);
    signal(SIGCHLD, SIG_IGN);    /* workers are reaped by the kernel */
    for (;;)
        handle(&h, fd);
}

/* ---- a4psd's side ---- */

static int client_start(void *arg, sandbox *sb, const char *id, const char *workdir,
                        const char *const *argv, const sandbox_limits *lim, int out, int errfd,
                        char *err, size_t errlen)
{
    privsep *ps = arg;
    privsep_req *rq = calloc(1, sizeof *rq);
    if (!rq) {
        snprintf(err, errlen, "sandbox: out of memory");
        return -1;
    }
    (void)sb;                    /* the helper knows it by the work directory */
    *rq = (privsep_req){.magic = PRIVSEP_MAGIC, .op = PRIVSEP_OP_RUN, .cpu_s = lim->cpu_s,
                        .mem_bytes = lim->mem_bytes, .nproc = lim->nproc,
                        .file_bytes = lim->file_bytes};
    size_t off = 0;
    bool fits = (size_t)snprintf(rq->id, sizeof rq->id, "%s", id) < sizeof rq->id &&
                (size_t)snprintf(rq->workdir, sizeof rq->workdir, "%s", workdir) <
                    sizeof rq->workdir;
    for (; fits && argv[rq->nargs]; rq->nargs++) {
        size_t len = strlen(argv[rq->nargs]) + 1;
        if (rq->nargs == PRIVSEP_MAX_ARGS || off + len > sizeof rq->args) {
            fits = false;
            break;
        }
        memcpy(rq->args + off, argv[rq->nargs], len);
        off += len;
    }
    if (!fits) {
        free(rq);
        snprintf(err, errlen, "sandbox: the run's id, work directory or arguments are too long "
                 "for the helper's request");
        return -1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        free(rq);
        snprintf(err, errlen, "sandbox: socketpair: %s", strerror(errno));
        return -1;
    }
    int fds[3] = {out, errfd, sv[1]};
    char cbuf[CMSG_SPACE(sizeof fds)];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {rq, sizeof *rq};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    pthread_mutex_lock(&ps->lock);
    ssize_t n = sendmsg(ps->fd, &m, MSG_NOSIGNAL);
    pthread_mutex_unlock(&ps->lock);
    int e = errno;
    free(rq);
    close(sv[1]);
    if (n != (ssize_t)sizeof *rq) {
        close(sv[0]);
        snprintf(err, errlen, "sandbox: the privileged helper (pid %d) is gone: %s",
                 (int)ps->pid, n < 0 ? strerror(e) : "short write");
        return -1;
    }
    return sv[0];
}

static void client_kill(void *arg, int handle)
{
    (void)arg;
    ssize_t n = send(handle, "K", 1, MSG_NOSIGNAL);
    (void)n;                     /* gone already: the wait says so */
}

static int client_wait(void *arg, int handle, int *wstatus, char *err, size_t errlen)
{
    privsep *ps = arg;
    privsep_reply r;
    ssize_t n;
    do
        n = recv(handle, &r, sizeof r, 0);
    while (n < 0 && errno == EINTR);
    close(handle);
    if (n != (ssize_t)sizeof r) {
        snprintf(err, errlen, "sandbox: the privileged helper (pid %d) did not answer",
                 (int)ps->pid);
        return -1;
    }
    r.message[sizeof r.message - 1] = 0;
    if (!r.ok) {
        snprintf(err, errlen, "sandbox: %s", r.message);
        return -1;
    }
    *wstatus = r.wstatus;
    return 0;
}

int privsep_start(const privsep_config *pc, privsep **out, char **why, char *err,
                  size_t errlen)
{
    *why = NULL;
    privsep *ps = calloc(1, sizeof *ps);
    int sv[2];
    if (!ps || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, errlen, "privileged helper: %s", ps ? strerror(errno) : "out of memory");
        free(ps);
        return -1;
    }
    pid_t parent = getpid();
    fflush(stderr);
    ps->pid = fork();
    if (ps->pid == 0) {
        close(sv[0]);
        helper_main(sv[1], parent, pc);
    }
    close(sv[1]);
    if (ps->pid < 0) {
        snprintf(err, errlen, "privileged helper: fork: %s", strerror(errno));
        close(sv[0]);
        free(ps);
        return -1;
    }
    ps->fd = sv[0];
    pthread_mutex_init(&ps->lock, NULL);
    ps->runner = (sandbox_runner){client_start, client_kill, client_wait, ps};
    privsep_reply r;
    ssize_t n;
    do
        n = recv(ps->fd, &r, sizeof r, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof r) {
        snprintf(err, errlen, "privileged helper (pid %d) ended at its start", (int)ps->pid);
        privsep_stop(ps);
        return -1;
    }
    r.message[sizeof r.message - 1] = 0;
    if (!r.ok)
        *why = strdup(r.message);
    *out = ps;
    return 0;
}

pid_t privsep_pid(const privsep *ps)
{
    return ps->pid;
}

int privsep_fd(const privsep *ps)
{
    return ps->fd;
}

const sandbox_runner *privsep_runner(privsep *ps)
{
    return &ps->runner;
}

void privsep_stop(privsep *ps)
{
    if (!ps)
        return;
    shutdown(ps->fd, SHUT_RDWR);  /* the helper's EOF even when close is sealed off */
    close(ps->fd);
    waitpid(ps->pid, NULL, 0);
    pthread_mutex_destroy(&ps->lock);
    free(ps);
}
