/* confine.c -- a4psd confines itself once it is up: PR_SET_NO_NEW_PRIVS,
 * Landlock (raw syscalls; whatever ABI the running kernel has, downgraded
 * rule by rule), a libseccomp filter, rlimits.
 *
 * Landlock restricts the calling thread and the threads it creates later, so
 * confine_apply runs before a4psd creates any thread (after the drop of its
 * user, before the kernel); the seccomp filter is loaded with TSYNC, so it
 * covers every thread whenever it is loaded.  A plugin that turns hostile
 * once live runs inside all of it: it cannot open what a4psd may not open,
 * start a program, trace or mount anything, or open a network socket.
 *
 * Every refusal is an error the caller gets (EPERM from the filter, EACCES
 * from Landlock), never a kill: a plugin's misdeed must not end the daemon.
 * The filter answers silently -- a SIGSYS trap would tell us who tried, but
 * the kernel library traps exit_group with a handler of its own, and two
 * SIGSYS handlers in one process would have to know of each other. */
#define _GNU_SOURCE
#include "daemon/confine.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>


/* ---- Landlock, spelled out: the system's header may be older than the
 * running kernel (this one knows ABI 7). ---- */
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2

#define LL_EXECUTE (1ULL << 0)
#define LL_WRITE_FILE (1ULL << 1)
#define LL_READ_FILE (1ULL << 2)
#define LL_READ_DIR (1ULL << 3)
#define LL_REMOVE_DIR (1ULL << 4)
#define LL_REMOVE_FILE (1ULL << 5)
#define LL_MAKE_CHAR (1ULL << 6)
#define LL_MAKE_DIR (1ULL << 7)
#define LL_MAKE_REG (1ULL << 8)
#define LL_MAKE_SOCK (1ULL << 9)
#define LL_MAKE_FIFO (1ULL << 10)
#define LL_MAKE_BLOCK (1ULL << 11)
#define LL_MAKE_SYM (1ULL << 12)
#define LL_REFER (1ULL << 13)       /* ABI 2 */
#define LL_TRUNCATE (1ULL << 14)    /* ABI 3 */
#define LL_IOCTL_DEV (1ULL << 15)   /* ABI 5 */
#define LL_NET_BIND_TCP (1ULL << 0) /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ULL << 1)

struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

/* Rights that make sense on a file (the rest are about directories). */
#define LL_FILE_RIGHTS (LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV)
#define LL_RO (LL_READ_FILE | LL_READ_DIR)
#define LL_RW (LL_RO | LL_WRITE_FILE | LL_REMOVE_DIR | LL_REMOVE_FILE | LL_MAKE_DIR |          \
               LL_MAKE_REG | LL_MAKE_SOCK | LL_MAKE_SYM | LL_REFER | LL_TRUNCATE)

static int ll_abi(void)
{
    long v = syscall(__NR_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    return v < 0 ? -errno : (int)v;
}

/* What a kernel of this ABI handles: rights it does not know are left out of
 * the ruleset (and so of every rule), the best-effort downgrade. */
static uint64_t ll_handled_fs(int abi)
{
    uint64_t fs = (LL_MAKE_SYM << 1) - 1;    /* ABI 1: bits 0..12 */
    if (abi >= 2)
        fs |= LL_REFER;
    if (abi >= 3)
        fs |= LL_TRUNCATE;
    if (abi >= 5)
        fs |= LL_IOCTL_DEV;
    return fs;
}

/* One path, with rights masked to what the ruleset handles and to what its
 * kind allows.  A path that does not exist is skipped (said at debug: the
 * optional ones, /lib64 and the like); one that exists but cannot be added
 * is an error. */
static int ll_allow(a4psd *d, int rfd, const char *path, uint64_t rights, uint64_t handled,
                    bool required)
{
    if (!path)
        return 0;
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        if (required) {
            dlog(d, LOG_ERR, "confine: landlock: %s: %s", path, strerror(errno));
            return -1;
        }
        dlog(d, LOG_DEBUG, "confine: landlock: %s: %s (not granted)", path, strerror(errno));
        return 0;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
        rights &= LL_FILE_RIGHTS;
    struct ll_path_beneath pb = {.allowed_access = rights & handled, .parent_fd = fd};
    long rc = pb.allowed_access
                  ? syscall(__NR_landlock_add_rule, rfd, LL_RULE_PATH_BENEATH, &pb, 0)
                  : 0;
    int e = errno;
    close(fd);
    if (rc != 0) {
        dlog(d, LOG_ERR, "confine: landlock: cannot add %s: %s", path, strerror(e));
        return -1;
    }
    return 0;
}

static void parent_dir(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == out)
        out[1] = 0;
    else if (slash)
        *slash = 0;
}

static int landlock_apply(a4psd *d, dconfine *out)
{
    const dconfig *c = d->cfg;
    int abi = ll_abi();
    if (abi < 0) {
        const char *why = abi == -ENOSYS     ? "this kernel has no Landlock"
                          : abi == -EOPNOTSUPP ? "Landlock is disabled at boot (lsm=)"
                                               : strerror(-abi);
        snprintf(out->landlock, sizeof out->landlock, "UNAVAILABLE: %s", why);
        dlog(d, LOG_WARNING, "confine: LANDLOCK NOT APPLIED: %s -- a4psd can read and write "
             "whatever its user can", why);
        return 0;
    }
    if (abi < 2) {
        /* ABI 1 cannot allow a rename or link across directories (REFER
         * came with ABI 2): a4psd's own file moves would fail, so the
         * layer is left out, said as loudly as a missing one. */
        snprintf(out->landlock, sizeof out->landlock, "NOT APPLIED: ABI 1 forbids renames "
                 "across directories, which a4psd needs");
        dlog(d, LOG_WARNING, "confine: LANDLOCK NOT APPLIED: this kernel's ABI 1 refuses every "
             "rename across directories -- a4psd can read and write whatever its user can");
        return 0;
    }
    struct ll_ruleset_attr ra = {.handled_access_fs = ll_handled_fs(abi)};
    size_t rasize = sizeof ra;
    if (abi >= 4)
        ra.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;   /* no rule: none */
    if (abi >= 6)
        ra.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
    else if (abi < 4)
        rasize = sizeof ra.handled_access_fs;
    else
        rasize = offsetof(struct ll_ruleset_attr, scoped);
    int rfd = (int)syscall(__NR_landlock_create_ruleset, &ra, rasize, 0);
    if (rfd < 0) {
        snprintf(out->landlock, sizeof out->landlock, "FAILED: create_ruleset: %s",
                 strerror(errno));
        dlog(d, LOG_ERR, "confine: landlock (ABI %d): create_ruleset: %s", abi, strerror(errno));
        return -1;
    }
    uint64_t h = ra.handled_access_fs;
    char cfgdir[PATH_MAX], imgdir[PATH_MAX], sockdir[PATH_MAX], probedir[PATH_MAX];
    parent_dir(c->path, cfgdir, sizeof cfgdir);
    parent_dir(c->socket, sockdir, sizeof sockdir);
    if (c->image)
        parent_dir(c->image, imgdir, sizeof imgdir);
    parent_dir(c->probe ? c->probe : A4PS_PROBE_PATH, probedir, sizeof probedir);
    int rc = 0;
    /* a4psd's own directories. */
    rc |= ll_allow(d, rfd, c->runtime_dir, LL_RW, h, true);
    rc |= ll_allow(d, rfd, c->image ? imgdir : NULL, LL_RW, h, true);
    rc |= ll_allow(d, rfd, c->forge_dir, LL_RW, h, true);
    rc |= ll_allow(d, rfd, c->plugin_dir, LL_RO, h, true);
    rc |= ll_allow(d, rfd, cfgdir, LL_RO, h, true);          /* SIGHUP re-reads it */
    rc |= ll_allow(d, rfd, sockdir, LL_REMOVE_FILE, h, true); /* the socket, at the end */
    /* What the sandbox is handed (checked at open, named in bundles). */
    rc |= ll_allow(d, rfd, c->abi_dir ? c->abi_dir : A4PS_ABI_DIR, LL_RO, h, false);
    rc |= ll_allow(d, rfd, probedir, LL_RO, h, false);
    /* What the C library, the dynamic loader (plugins' own libraries) and
     * the name service read while running: no write, no execute. */
    static const char *const ro[] = {
        "/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
        "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ssl",
        "/sys/devices/system/cpu", "/dev/urandom", NULL};
    for (int i = 0; ro[i]; i++)
        rc |= ll_allow(d, rfd, ro[i], LL_RO, h, false);
    rc |= ll_allow(d, rfd, "/dev/null", LL_READ_FILE | LL_WRITE_FILE | LL_TRUNCATE, h, false);
    if (A4PS_SANITIZED) {
        /* ASan and LeakSanitizer read /proc/self/maps and /proc/self/task;
         * a release build gets no /proc at all (its cmdline and environ
         * would tell a plugin where the config and the keys are). */
        rc |= ll_allow(d, rfd, "/proc", LL_RO, h, false);
    }
    if (rc) {
        close(rfd);
        snprintf(out->landlock, sizeof out->landlock, "FAILED: a rule could not be added");
        return -1;
    }
    if (syscall(__NR_landlock_restrict_self, rfd, 0) != 0) {
        int e = errno;
        close(rfd);
        snprintf(out->landlock, sizeof out->landlock, "FAILED: restrict_self: %s", strerror(e));
        dlog(d, LOG_ERR, "confine: landlock: restrict_self: %s", strerror(e));
        return -1;
    }
    close(rfd);
    snprintf(out->landlock, sizeof out->landlock,
             "on (ABI %d): files limited to a4psd's directories%s%s", abi,
             abi >= 4 ? "; TCP bind/connect denied" : "; TCP NOT covered (ABI < 4)",
             abi >= 6 ? "; signals and abstract sockets scoped" : "");
    if (abi < 4)
        dlog(d, LOG_WARNING, "confine: landlock ABI %d has no network rules: TCP is left to the "
             "seccomp filter's socket rule alone", abi);
    dlog(d, LOG_INFO, "confine: landlock ABI %d: %s", abi, out->landlock);
    return 0;
}

/* ---- seccomp ---- */

static int sc_deny(scmp_filter_ctx ctx, int err, const char *name, unsigned n,
                   const struct scmp_arg_cmp *cmp)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0;                 /* not on this architecture */
    return seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO((unsigned)err), nr, n, cmp);
}

static int seccomp_apply(a4psd *d, dconfine *out)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        snprintf(out->seccomp, sizeof out->seccomp, "FAILED: seccomp_init");
        return -1;
    }
    static const char *const denied[] = {
        "execve", "execveat", "fork", "vfork", "process_vm_readv", "process_vm_writev",
        "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
        "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
        "init_module", "finit_module", "delete_module", "bpf", "perf_event_open",
        "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "keyctl", "add_key",
        "request_key", "personality", "userfaultfd",
        /* io_uring runs socket() and friends without passing this filter */
        "io_uring_setup", "io_uring_enter", "io_uring_register", NULL};
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    for (int i = 0; !rc && denied[i]; i++)
        rc = sc_deny(ctx, EPERM, denied[i], 0, NULL);
    if (!rc && !A4PS_SANITIZED)
        rc = sc_deny(ctx, EPERM, "ptrace", 0, NULL);
    /* clone3 passes its flags in memory the filter cannot read: ENOSYS makes
     * glibc fall back to clone, whose flags it can. */
    if (!rc)
        rc = sc_deny(ctx, ENOSYS, "clone3", 0, NULL);
    if (!rc && !A4PS_SANITIZED) {
        struct scmp_arg_cmp nothread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0);
        rc = sc_deny(ctx, EPERM, "clone", 1, &nothread);
    } else if (!rc) {
        /* LeakSanitizer's exit check stops the world from a tracer made by
         * clone(CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_UNTRACED) that ptraces
         * our threads: in sanitizer builds only, that shape of clone and
         * ptrace stay open (said loudly at start).  Still no new program. */
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | CLONE_VM, 0);
        struct scmp_arg_cmp b = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | CLONE_UNTRACED, 0);
        rc = sc_deny(ctx, EPERM, "clone", 1, &a);
        if (!rc)
            rc = sc_deny(ctx, EPERM, "clone", 1, &b);
    }
    struct scmp_arg_cmp notunix = SCMP_A0(SCMP_CMP_NE, AF_UNIX, 0);
    if (!rc)
        rc = sc_deny(ctx, EAFNOSUPPORT, "socket", 1, &notunix);
    if (!rc)
        rc = sc_deny(ctx, EAFNOSUPPORT, "socketpair", 1, &notunix);
    if (!rc)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc) {
        snprintf(out->seccomp, sizeof out->seccomp, "FAILED: %s", strerror(-rc));
        dlog(d, LOG_ERR, "confine: seccomp filter: %s", strerror(-rc));
        return -1;
    }
    snprintf(out->seccomp, sizeof out->seccomp, "on: no exec, fork, ptrace%s, mount, modules, "
             "bpf, io_uring; sockets AF_UNIX only%s", A4PS_SANITIZED ? " (allowed: sanitizer)" : "",
             A4PS_SANITIZED ? "; SANITIZER BUILD: LeakSanitizer's clone and ptrace allowed" : "");
    if (A4PS_SANITIZED)
        dlog(d, LOG_WARNING, "confine: SANITIZER BUILD: the seccomp filter lets LeakSanitizer's "
             "tracer (clone with CLONE_VM|CLONE_UNTRACED, ptrace) through and Landlock grants "
             "/proc; a release build does not");
    dlog(d, LOG_INFO, "confine: seccomp: %s", out->seccomp);
    return 0;
}

/* The last filter, once a4psd is up and will never again install a
 * filter, set a limit, open a socket or signal itself: what a plugin
 * running inside it could otherwise use to take the daemon down or to
 * widen what it may do (found by playing the attacker against the first
 * filter).  Stacks on top of the others; EPERM, as they do. */
int confine_seal(a4psd *d, dconfine *out, const int *guarded, int nguarded)
{
    if (!d->cfg->daemon_confine)
        return 0;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        dlog(d, LOG_ERR, "confine: seal: seccomp_init failed");
        return -1;
    }
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    /* No filter of a plugin's own (one returning KILL would end us), no
     * dumpable process, no limit lowered under the daemon (RLIMIT_NOFILE
     * at 8 turned accept into a busy loop); getrlimit stays (new == NULL). */
    static const char *const denied[] = {"seccomp", "setrlimit", "close_range", NULL};
    for (int i = 0; !rc && denied[i]; i++)
        rc = sc_deny(ctx, EPERM, denied[i], 0, NULL);
    struct scmp_arg_cmp setting = SCMP_A2(SCMP_CMP_NE, 0, 0);
    if (!rc)
        rc = sc_deny(ctx, EPERM, "prlimit64", 1, &setting);
    /* LeakSanitizer's tracer may make us dumpable and tkill: sanitizer
     * builds keep those two. */
    static const int prctls[] = {PR_SET_SECCOMP, PR_SET_DUMPABLE};
    size_t nprctls = A4PS_SANITIZED ? 1 : 2;
    for (size_t i = 0; !rc && i < nprctls; i++) {
        struct scmp_arg_cmp op = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)prctls[i], 0);
        rc = sc_deny(ctx, EPERM, "prctl", 1, &op);
    }
    /* No new socket and no connect: every socket a4psd needs exists by now
     * (its listener, the helpers' channels; a call to a helper makes a
     * socketpair).  A pathname Unix socket is beyond Landlock's reach. */
    if (!rc)
        rc = sc_deny(ctx, EPERM, "socket", 0, NULL);
    if (!rc)
        rc = sc_deny(ctx, EPERM, "connect", 0, NULL);
    /* The helpers' channels stay ours: a plugin that closed one and put a
     * socket of its own in its place would answer for the root helper. */
    for (int i = 0; !rc && i < nguarded; i++) {
        if (guarded[i] < 0)
            continue;
        struct scmp_arg_cmp a0 = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)guarded[i], 0);
        struct scmp_arg_cmp a1 = SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)guarded[i], 0);
        rc = sc_deny(ctx, EPERM, "close", 1, &a0);
        if (!rc)
            rc = sc_deny(ctx, EPERM, "dup2", 1, &a1);
        if (!rc)
            rc = sc_deny(ctx, EPERM, "dup3", 1, &a1);
    }
    /* Signals that stop or end the process, sent to itself (or its group):
     * the ones a4psd handles (HUP, USR1, TERM, INT) and the faults it
     * catches stay; these would end or freeze it without a word. */
    static const int fatal[] = {SIGKILL, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGQUIT, SIGUSR2,
                                SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGPWR, SIGSTKFLT, SIGIO,
                                SIGTRAP};
    const scmp_datum_t self[] = {(scmp_datum_t)getpid(), 0};
    for (size_t s = 0; !rc && s < sizeof fatal / sizeof fatal[0]; s++) {
        for (size_t w = 0; !rc && w < sizeof self / sizeof self[0]; w++) {
            struct scmp_arg_cmp kc[2] = {
                SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, self[w]),
                SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)fatal[s], 0)};
            rc = sc_deny(ctx, EPERM, "kill", 2, kc);
        }
        if (!rc) {
            struct scmp_arg_cmp tc[2] = {SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, self[0]),
                                         SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)fatal[s], 0)};
            rc = sc_deny(ctx, EPERM, "tgkill", 2, tc);
        }
        if (!rc && !A4PS_SANITIZED) {
            struct scmp_arg_cmp ac[1] = {SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)fatal[s], 0)};
            rc = sc_deny(ctx, EPERM, "tkill", 1, ac);
        }
    }
    /* kill(-1, ...) reaches every process a4ps may signal. */
    struct scmp_arg_cmp all = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, 0xffffffffu);
    if (!rc)
        rc = sc_deny(ctx, EPERM, "kill", 1, &all);
    if (!rc)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc) {
        dlog(d, LOG_ERR, "confine: seal: seccomp filter: %s", strerror(-rc));
        return -1;
    }
    size_t used = strlen(out->seccomp);
    snprintf(out->seccomp + used, sizeof out->seccomp - used,
             "; sealed: no new filter, socket, connect, rlimit, self-stop");
    dlog(d, LOG_INFO, "confine: sealed once up: no new seccomp filter, dumpable, rlimit, "
         "socket or connect; the helpers' channels cannot be closed or replaced; no "
         "stopping or killing signal to a4psd itself");
    return 0;
}

int confine_rlimits(a4psd *d, dconfine *out)
{
    const dconfig *c = d->cfg;
    struct {
        int res;
        const char *key;
        rlim_t v;
    } lim[] = {
        {RLIMIT_AS, "daemon.address_space_mb", (rlim_t)c->daemon_as_mb << 20},
        {RLIMIT_NOFILE, "daemon.open_files", (rlim_t)c->daemon_open_files},
        {RLIMIT_NPROC, "daemon.threads", (rlim_t)c->daemon_threads},
    };
    size_t used = 0;
    out->rlimits[0] = 0;
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        if (!lim[i].v)
            continue;
        if (lim[i].res == RLIMIT_AS && A4PS_SANITIZED) {
            dlog(d, LOG_WARNING, "confine: %s not applied: a sanitizer build reserves terabytes "
                 "of shadow memory", lim[i].key);
            continue;
        }
        struct rlimit rl = {lim[i].v, lim[i].v};
        if (setrlimit(lim[i].res, &rl) != 0) {
            dlog(d, LOG_ERR, "confine: %s = %llu: setrlimit: %s", lim[i].key,
                 (unsigned long long)lim[i].v, strerror(errno));
            snprintf(out->rlimits, sizeof out->rlimits, "FAILED: %s", lim[i].key);
            return -1;
        }
        used += (size_t)snprintf(out->rlimits + used, sizeof out->rlimits - used, "%s%s=%llu",
                                 used ? ", " : "", lim[i].key + 7,
                                 (unsigned long long)lim[i].v);
        if (used >= sizeof out->rlimits)
            used = sizeof out->rlimits - 1;
    }
    if (!used)
        snprintf(out->rlimits, sizeof out->rlimits, "unchanged (none configured)");
    if (c->daemon_threads && geteuid() == 0)
        dlog(d, LOG_WARNING, "confine: daemon.threads (RLIMIT_NPROC) does not bind root");
    return 0;
}

int confine_apply(a4psd *d, dconfine *out)
{
    if (!d->cfg->daemon_confine) {
        snprintf(out->nnp, sizeof out->nnp, "OFF (daemon.confine = false)");
        snprintf(out->landlock, sizeof out->landlock, "OFF (daemon.confine = false)");
        snprintf(out->seccomp, sizeof out->seccomp, "OFF (daemon.confine = false)");
        dlog(d, LOG_WARNING, "confine: daemon.confine = false in %s: a4psd is NOT CONFINED -- "
             "no Landlock, no seccomp filter: a plugin can do whatever a4psd's user can",
             d->cfg->path);
        return 0;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(out->nnp, sizeof out->nnp, "FAILED: %s", strerror(errno));
        dlog(d, LOG_ERR, "confine: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -1;
    }
    snprintf(out->nnp, sizeof out->nnp, "on");
    if (landlock_apply(d, out) != 0)
        return -1;
    return seccomp_apply(d, out);
}

json_t *confine_status(const dconfine *c)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "user", c->user, "helper", c->helper,
                     "no_new_privs", c->nnp, "landlock", c->landlock, "seccomp", c->seccomp,
                     "rlimits", c->rlimits);
}
