/* a4ps-probe.c -- loads one candidate plugin inside the sandbox and reports on it.
 *
 *   a4ps-probe [--state FILE] [--cases FILE] [--call-ms N] [--hook-ms N] PLUGIN.so
 *
 * Runs inside gVisor (sandbox/probe.c starts it) and drives the candidate
 * through the kernel library's public API only, so the candidate is judged by
 * exactly the checks the kernel would apply: ELF checks, descriptor rules,
 * init and self_test under fault recovery and time limits.  Then it calls
 * every method with hostile inputs, runs the caller's test cases and prints
 * ONE JSON report on the stdout it had at start:
 *
 *   {"probe":1, "file", "sha256", "verdict":"pass"|"fail", "reason",
 *    "plugin":{"name","version","kind","state_version","description",
 *              "self_test","methods":[...]},
 *    "steps":[{"step","ok","ms","error"}], "tests":[{"name","selector","ok",
 *    "status","ms","reply","reply_len","expect","match","error"}],
 *    "denied_syscalls":[{"syscall","count"}], "log":[...],
 *    "passed", "failed", "ms"}
 *
 * Exit status: 0 pass, 1 fail, 2 usage or internal error (message on stderr).
 *
 * The candidate shares this process, so before it runs: our stdout and
 * stderr move to private descriptors and fd 1/2 point at /dev/null (a
 * candidate printing gigabytes or fake JSON cannot touch the report), and a
 * seccomp filter traps what a plugin has no business calling (gVisor is the
 * outer wall; this is the inner one).  A method that hangs is caught by a
 * watchdog thread, exit() by an atexit handler; both still print a report.
 * Anything that kills the process (a crashing constructor) leaves the report
 * to the host, which reads the `stage NAME` lines we write to stderr.
 *
 * The state below is process-wide on purpose: signal handlers, the watchdog
 * and the atexit handler must reach it, and there is one probe per process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <link.h>
#include <linux/audit.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "kernel.h"

#define PROTO "PROBE"

/* libseccomp's SCMP_A0..5 leave datum_b to the compiler's zeroing, which
 * clang's -Wmissing-field-initializers rejects; the same, spelled out. */
static struct scmp_arg_cmp arg_cmp(unsigned arg, enum scmp_compare op, scmp_datum_t a,
                                   scmp_datum_t b)
{
    return (struct scmp_arg_cmp){.arg = arg, .op = op, .datum_a = a, .datum_b = b};
}
#define UNKNOWN_SELECTOR "a4ps_probe_unknown"
#define REPLY_CUT 512
#define RANDOM_LEN 4096
#define MAX_LOG_LINES 32
#define MAX_SYSCALL 1024
#define MAX_FILE_BYTES (64u << 20)
#define RESERVE_BYTES (4u << 20)

/* The seccomp action for what plugins may not call.  SCMP_ACT_TRAP works
 * under gVisor (checked with runsc 20221219: SIGSYS arrives with si_syscall
 * set, and rewriting RAX in the handler makes the call return -EPERM), so
 * every denied call is recorded and reported.  Elsewhere than x86-64 we have
 * no register to rewrite: the call then fails with EPERM, unrecorded. */
#if defined(__x86_64__)
#define DENY SCMP_ACT_TRAP
#else
#define DENY SCMP_ACT_ERRNO(EPERM)
#endif

typedef struct probe_opts {
    const char *state_file;
    const char *cases_file;
    unsigned call_ms;
    unsigned hook_ms;
    const char *plugin;
} probe_opts;

typedef struct probe_case {
    char *selector;
    char *input;
    size_t input_len;
    char *expect;                /* NULL: only the status is checked */
    size_t expect_len;
    int status;
} probe_case;

static struct {
    int out_fd, err_fd;          /* the stdout and stderr we were given */
    unsigned call_ms;
    uint64_t t0_ns;
    const char *file;            /* the candidate's basename */
    char sha256[65];
    char rtdir[256];             /* the kernel's runtime directory */

    /* The report, guarded by lock: the main thread adds to it, the
     * watchdog or the atexit handler may finish it from another thread. */
    pthread_mutex_t lock;
    json_t *plugin, *steps, *tests, *log;
    char *first_failure;
    int passed, failed;
    _Atomic(const char *) stage;
    atomic_int emitting;         /* the report is being written: once */
    void *reserve;               /* freed for the report if the candidate took all memory */
    unsigned seen[MAX_SYSCALL];  /* denials already attributed */
    unsigned seen_foreign;

    /* The watchdog: the call in flight, if any. */
    pthread_mutex_t wd_lock;
    pthread_cond_t wd_cv;
    int wd_armed;
    uint64_t wd_seq;
    struct timespec wd_deadline;
    unsigned wd_limit_ms;
    char wd_test[160], wd_selector[80];
} P = {
    .out_fd = -1,
    .err_fd = -1,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wd_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* Written by the SIGSYS handler: plain counters, nothing else is safe there. */
static atomic_uint denied[MAX_SYSCALL];
static atomic_uint denied_foreign;   /* another ABI's syscalls (int 0x80, x32) */

/* ---- Small helpers ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

static json_t *ms_json(double ms)
{
    return json_real((double)(int64_t)(ms * 1000.0 + 0.5) / 1000.0);
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Tell the host where we are: if we die, its report names the stage. */
static void stage(const char *name)
{
    atomic_store(&P.stage, name);
    char line[96];
    int n = snprintf(line, sizeof line, "stage %s\n", name);
    write_all(P.err_fd >= 0 ? P.err_fd : 2, line, (size_t)n);
}

static void die_usage(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof msg - 2)
        n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    write_all(P.err_fd >= 0 ? P.err_fd : 2, "a4ps-probe: ", 12);
    write_all(P.err_fd >= 0 ? P.err_fd : 2, msg, (size_t)n);
    _exit(2);
}

/* Valid UTF-8 for JSON, cut at `cut` bytes on a character boundary:
 * invalid bytes and NULs become U+FFFD, so a binary reply still fits in the
 * report and the report parses without JSON_ALLOW_NUL. */
static json_t *text_json(const char *s, size_t len, size_t cut)
{
    char *out = malloc(cut * 3 + 4);
    if (!out)
        return json_null();
    size_t o = 0, i = 0;
    while (i < len && i < cut) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = c != 0 && n > 0 && i + n <= len && i + n <= cut;
        for (size_t j = 1; ok && j < n; j++)
            ok = ((unsigned char)s[i + j] >> 6) == 2;
        if (ok && n == 2 && c < 0xc2)
            ok = 0;              /* overlong */
        if (ok && n == 3) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0))
                ok = 0;          /* overlong, or a surrogate */
        }
        if (ok && n == 4) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xf0 && c1 < 0x90) || c > 0xf4 || (c == 0xf4 && c1 >= 0x90))
                ok = 0;
        }
        if (!ok) {
            if (n > 1 && i + n > cut && i + n <= len)
                break;           /* a whole character cut by the limit */
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, s + i, n);
        o += n;
        i += n;
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j ? j : json_null();
}

/* One line, for the report's reason. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
}

/* ---- The report ---- */

/* Record a failure; the first one becomes the report's reason.  Caller
 * holds P.lock. */
static void failure_locked(const char *fmt, ...)
{
    if (P.first_failure)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&P.first_failure, fmt, ap) < 0)
        P.first_failure = NULL;
    va_end(ap);
    if (P.first_failure)
        one_line(P.first_failure);
}

static const char *syscall_name(unsigned nr, char *buf, size_t len)
{
    char *name = seccomp_syscall_resolve_num_arch(seccomp_arch_native(), (int)nr);
    if (name)
        snprintf(buf, len, "%s", name);
    else
        snprintf(buf, len, "syscall %u", nr);
    free(name);
    return buf;
}

/* Denials since the last look become a failure attributed to `during`,
 * their names appended to names (if not NULL).  Caller holds P.lock. */
static void attribute_denials_locked(const char *during, json_t *names)
{
    for (unsigned nr = 0; nr < MAX_SYSCALL; nr++) {
        unsigned n = atomic_load(&denied[nr]);
        if (n == P.seen[nr])
            continue;
        P.seen[nr] = n;
        char name[64];
        syscall_name(nr, name, sizeof name);
        failure_locked("tried %s(2), which plugins may not use (during %s)", name, during);
        if (names)
            json_array_append_new(names, json_string(name));
    }
    unsigned f = atomic_load(&denied_foreign);
    if (f != P.seen_foreign) {
        P.seen_foreign = f;
        if (names)
            json_array_append_new(names, json_string("(another ABI)"));
        failure_locked("made a system call of another ABI (int 0x80 or x32), which plugins "
                       "may not use (during %s)", during);
    }
}

static void add_step(const char *name, int ok, double ms, const char *error, const char *detail)
{
    pthread_mutex_lock(&P.lock);
    json_t *s = json_pack("{s:s, s:b, s:o, s:s?}", "step", name, "ok", ok,
                          "ms", ms >= 0 ? ms_json(ms) : json_null(), "error", error);
    if (s && detail)
        json_object_set_new(s, "detail", json_string(detail));
    json_array_append_new(P.steps, s);
    if (!ok)
        failure_locked("%s: %s", name, error ? error : "failed");
    char during[64];
    snprintf(during, sizeof during, "stage %s", name);
    attribute_denials_locked(during, NULL);
    pthread_mutex_unlock(&P.lock);
}

/* The report as it stands; `forced` (a timeout, exit()) fails it.  *pass
 * is its verdict. */
static char *report_compose(const char *forced, int *pass_out)
{
    pthread_mutex_lock(&P.lock);
    attribute_denials_locked(atomic_load(&P.stage), NULL);
    if (forced)
        failure_locked("%s", forced);
    json_t *den = json_array();
    for (unsigned nr = 0; nr < MAX_SYSCALL; nr++) {
        unsigned n = atomic_load(&denied[nr]);
        if (!n)
            continue;
        char name[64];
        json_array_append_new(den, json_pack("{s:s, s:i}", "syscall",
                                             syscall_name(nr, name, sizeof name), "count", (int)n));
    }
    if (atomic_load(&denied_foreign))
        json_array_append_new(den, json_pack("{s:s, s:i}", "syscall", "(another ABI)", "count",
                                             (int)atomic_load(&denied_foreign)));
    int pass = P.first_failure == NULL;
    *pass_out = pass;
    json_t *j = json_pack("{s:i, s:s, s:s, s:s, s:s?, s:O, s:O, s:O, s:o, s:O, s:i, s:i, s:o}",
                          "probe", 1, "file", P.file ? P.file : "", "sha256", P.sha256,
                          "verdict", pass ? "pass" : "fail", "reason", P.first_failure,
                          "plugin", P.plugin ? P.plugin : json_null(), "steps", P.steps,
                          "tests", P.tests, "denied_syscalls", den, "log", P.log,
                          "passed", P.passed, "failed", P.failed, "ms",
                          ms_json(ms_since(P.t0_ns)));
    pthread_mutex_unlock(&P.lock);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    return s;
}

/* JSON string contents without allocating: for report_bare. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x80) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c < 0x80 ? c : 0xfffd);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
    return o;
}

/* The report when there is no memory left to compose it (the candidate
 * took it all): fixed fields from static buffers, verdict fail. */
static __attribute__((noreturn)) void report_bare(const char *forced)
{
    static char file[600], reason[1100], out[2048];
    json_escape(file, sizeof file, P.file);
    json_escape(reason, sizeof reason,
                forced ? forced : P.first_failure ? P.first_failure
                                                  : "the probe ran out of memory composing its "
                                                    "report (the plugin took it all)");
    int n = snprintf(out, sizeof out,
                     "{\"probe\":1,\"file\":\"%s\",\"sha256\":\"%s\",\"verdict\":\"fail\","
                     "\"reason\":\"%s\",\"plugin\":null,\"steps\":[],\"tests\":[],"
                     "\"denied_syscalls\":[],\"passed\":0,\"failed\":0,\"ms\":%.3f,"
                     "\"out_of_memory\":true}\n",
                     file, P.sha256, reason, ms_since(P.t0_ns));
    write_all(P.out_fd, out, n > 0 && (size_t)n < sizeof out ? (size_t)n : 0);
    _exit(1);
}

/* Print the report on our stdout and leave at once: nothing of the
 * candidate (its destructors, its atexit handlers) runs after this. */
static __attribute__((noreturn)) void report_emit(const char *forced)
{
    if (atomic_exchange(&P.emitting, 1)) {
        for (;;)                 /* another thread is writing it and will _exit */
            pause();
    }
    stage("report");
    free(P.reserve);
    P.reserve = NULL;
    int pass = 0;
    char *s = report_compose(forced, &pass);
    if (!s)
        report_bare(forced);
    write_all(P.out_fd, s, strlen(s));
    write_all(P.out_fd, "\n", 1);
    _exit(pass ? 0 : 1);
}

/* exit() from the candidate (init, a method, a constructor): still report. */
static void on_exit_called(void)
{
    char why[160];
    snprintf(why, sizeof why, "the plugin called exit() during stage %s",
             atomic_load(&P.stage));
    report_emit(why);
}

static void on_kernel_log(void *arg, int level, const char *line)
{
    (void)arg;
    char buf[320];
    snprintf(buf, sizeof buf, "<%d>%s", level, line);
    pthread_mutex_lock(&P.lock);
    if (json_array_size(P.log) >= MAX_LOG_LINES)
        json_array_remove(P.log, 0);
    json_array_append_new(P.log, text_json(buf, strlen(buf), sizeof buf));
    pthread_mutex_unlock(&P.lock);
}

/* ---- The watchdog ---- */

static void wd_arm(const char *test, const char *selector, unsigned limit_ms)
{
    pthread_mutex_lock(&P.wd_lock);
    snprintf(P.wd_test, sizeof P.wd_test, "%s", test);
    snprintf(P.wd_selector, sizeof P.wd_selector, "%s", selector ? selector : "");
    P.wd_limit_ms = limit_ms;
    clock_gettime(CLOCK_MONOTONIC, &P.wd_deadline);
    P.wd_deadline.tv_sec += limit_ms / 1000;
    P.wd_deadline.tv_nsec += (long)(limit_ms % 1000) * 1000000L;
    if (P.wd_deadline.tv_nsec >= 1000000000L) {
        P.wd_deadline.tv_sec++;
        P.wd_deadline.tv_nsec -= 1000000000L;
    }
    P.wd_armed = 1;
    P.wd_seq++;
    pthread_cond_signal(&P.wd_cv);
    pthread_mutex_unlock(&P.wd_lock);
}

static void wd_disarm(void)
{
    pthread_mutex_lock(&P.wd_lock);
    P.wd_armed = 0;
    pthread_cond_signal(&P.wd_cv);
    pthread_mutex_unlock(&P.wd_lock);
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&P.wd_lock);
    for (;;) {
        while (!P.wd_armed)
            pthread_cond_wait(&P.wd_cv, &P.wd_lock);
        uint64_t seq = P.wd_seq;
        int rc = 0;
        while (P.wd_armed && P.wd_seq == seq && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&P.wd_cv, &P.wd_lock, &P.wd_deadline);
        if (P.wd_armed && P.wd_seq == seq && rc == ETIMEDOUT)
            break;
    }
    /* The call in flight overran: record it and report from here; the
     * thread running it is still inside the candidate and never returns. */
    char test[160], selector[80], why[320];
    snprintf(test, sizeof test, "%s", P.wd_test);
    snprintf(selector, sizeof selector, "%s", P.wd_selector);
    unsigned limit = P.wd_limit_ms;
    pthread_mutex_unlock(&P.wd_lock);
    if (!selector[0]) {
        snprintf(why, sizeof why, "%s did not finish within %u ms", test, limit);
        report_emit(why);
    }
    snprintf(why, sizeof why, "%s timed out after %u ms", test, limit);
    pthread_mutex_lock(&P.lock);
    json_array_append_new(P.tests, json_pack("{s:s, s:s, s:b, s:n, s:i, s:n, s:s}", "name",
                                             test, "selector", selector, "ok", 0, "status",
                                             "ms", (int)limit, "reply", "error", why));
    P.failed++;
    pthread_mutex_unlock(&P.lock);
    report_emit(why);
}

/* ---- The inner wall: seccomp ---- */

static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    if (!si || si->si_code != 1 /* SYS_SECCOMP */)
        return;                  /* a SIGSYS someone sent: nothing to rewrite */
    unsigned nr = (unsigned)si->si_syscall;
    if (si->si_arch != AUDIT_ARCH_X86_64 || nr >= MAX_SYSCALL)
        atomic_fetch_add(&denied_foreign, 1);
    else
        atomic_fetch_add(&denied[nr], 1);
#if defined(__x86_64__)
    ((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RAX] = -EPERM;
#else
    (void)ucv;
#endif
}

/* What a plugin has no reason to call: networking, other processes,
 * programs, mounts, namespaces, the host kernel's modules and keys. */
static const char *const denied_names[] = {
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "execve", "execveat", "fork", "vfork",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "reboot", "swapon", "swapoff", "personality",
};

static int seccomp_apply(char *err, size_t errlen)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0) {
        snprintf(err, errlen, "seccomp: sigaction(SIGSYS): %s", strerror(errno));
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(err, errlen, "seccomp: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -1;
    }
    scmp_filter_ctx c = seccomp_init(SCMP_ACT_ALLOW);
    if (!c) {
        snprintf(err, errlen, "seccomp: seccomp_init failed");
        return -1;
    }
    int rc = 0;
    const char *what = "attributes";
    /* TSYNC: threads that already exist get the filter too. */
    if ((rc = seccomp_attr_set(c, SCMP_FLTATR_CTL_TSYNC, 1)) ||
        (rc = seccomp_attr_set(c, SCMP_FLTATR_ACT_BADARCH, DENY)))
        goto fail;
    for (size_t i = 0; i < sizeof denied_names / sizeof denied_names[0]; i++) {
        what = denied_names[i];
        int nr = seccomp_syscall_resolve_name(what);
        if (nr == __NR_SCMP_ERROR)
            continue;            /* not on this architecture */
        if ((rc = seccomp_rule_add(c, DENY, nr, 0)))
            goto fail;
    }
    /* Threads must work (the kernel library starts them); processes not. */
    what = "clone";
    if ((rc = seccomp_rule_add(c, DENY, SCMP_SYS(clone), 1,
                               arg_cmp(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0))))
        goto fail;
    /* clone3 passes its flags in memory, out of a filter's sight: ENOSYS
     * makes glibc fall back to clone, whose flags we can see. */
    what = "clone3";
    if ((rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)))
        goto fail;
    /* Keep the handler that records denials in place. */
    what = "rt_sigaction";
    if ((rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(rt_sigaction), 1,
                               arg_cmp(0, SCMP_CMP_EQ, SIGSYS, 0))))
        goto fail;
    /* Keep the report's descriptors: no closing them, no dup2 over them. */
    int keep[] = {P.out_fd, P.err_fd};
    for (size_t i = 0; i < 2; i++) {
        scmp_datum_t fd = (scmp_datum_t)keep[i];
        what = "close";
        if ((rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(EBADF), SCMP_SYS(close), 1,
                                   arg_cmp(0, SCMP_CMP_EQ, fd, 0))) ||
            (rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(EBADF), SCMP_SYS(dup2), 1,
                                   arg_cmp(1, SCMP_CMP_EQ, fd, 0))) ||
            (rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(EBADF), SCMP_SYS(dup3), 1,
                                   arg_cmp(1, SCMP_CMP_EQ, fd, 0))) ||
            (rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(close_range), 2,
                                   arg_cmp(0, SCMP_CMP_LE, fd, 0), arg_cmp(1, SCMP_CMP_GE, fd, 0))))
            goto fail;
    }
    what = "load";
    if ((rc = seccomp_load(c)))
        goto fail;
    seccomp_release(c);
    return 0;
fail:
    snprintf(err, errlen, "seccomp: %s: %s", what, strerror(-rc));
    seccomp_release(c);
    return -1;
}

/* ---- Inputs ---- */

static int read_file(const char *path, size_t max, char **out, size_t *len, char *err,
                     size_t errlen)
{
    void *buf;
    int rc = kernel_read_file(path, max, &buf, len);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, rc == -EFBIG ? "not a regular file of at most "
                 "the size the probe reads" : strerror(-rc));
        return -1;
    }
    *out = buf;
    return 0;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The state file: records of u32 key_len | key | u32 value_len | value,
 * little endian.  Checked whole before anything runs. */
typedef struct state_rec {
    char key[256];
    const char *val;
    size_t len;
} state_rec;

/* The clone of the target's state, into the scratch proto. */
static int state_apply(kernel *k, const state_rec *state, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = kernel_state_set(k, PROTO, state[i].key, state[i].val, state[i].len);
        if (rc) {
            snprintf(err, errlen, "kernel_state_set(%s, \"%s\"): status %d", PROTO,
                     state[i].key, rc);
            return rc;
        }
    }
    return 0;
}

static int state_parse(const char *path, const char *buf, size_t len, state_rec **out,
                       size_t *n, char *err, size_t errlen)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t off = 0, cnt = 0, cap = 0;
    state_rec *recs = NULL;
    while (off < len) {
        if (len - off < 4)
            goto bad_len;
        uint32_t kl = le32(p + off);
        if (kl == 0 || kl > 255 || kl > len - off - 4) {
            snprintf(err, errlen, "state %s: record %zu at offset %zu: key length %u (must be "
                     "1-255 and inside the file)", path, cnt, off, kl);
            free(recs);
            return -1;
        }
        if (memchr(p + off + 4, 0, kl)) {
            snprintf(err, errlen, "state %s: record %zu at offset %zu: the key holds a NUL byte",
                     path, cnt, off);
            free(recs);
            return -1;
        }
        size_t voff = off + 4 + kl;
        if (len - voff < 4)
            goto bad_len;
        uint32_t vl = le32(p + voff);
        if (vl > len - voff - 4) {
            snprintf(err, errlen, "state %s: record %zu at offset %zu: value length %u runs past "
                     "the end of the file", path, cnt, off, vl);
            free(recs);
            return -1;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            state_rec *nr = realloc(recs, cap * sizeof *recs);
            if (!nr) {
                snprintf(err, errlen, "state %s: out of memory", path);
                free(recs);
                return -1;
            }
            recs = nr;
        }
        memcpy(recs[cnt].key, p + off + 4, kl);
        recs[cnt].key[kl] = 0;
        recs[cnt].val = buf + voff + 4;
        recs[cnt].len = vl;
        cnt++;
        off = voff + 4 + vl;
    }
    *out = recs;
    *n = cnt;
    return 0;
bad_len:
    snprintf(err, errlen, "state %s: record %zu at offset %zu: truncated length field", path,
             cnt, off);
    free(recs);
    return -1;
}

/* The cases file: [{"selector": S, "input": TEXT, "expect": TEXT, "status": N}]. */
static int cases_parse(const char *path, probe_case **out, size_t *n, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!j) {
        snprintf(err, errlen, "cases %s:%d:%d: %s", path, je.line, je.column, je.text);
        return -1;
    }
    if (!json_is_array(j)) {
        snprintf(err, errlen, "cases %s: not a JSON array", path);
        json_decref(j);
        return -1;
    }
    size_t cnt = json_array_size(j);
    probe_case *cs = calloc(cnt ? cnt : 1, sizeof *cs);
    for (size_t i = 0; cs && i < cnt; i++) {
        json_t *c = json_array_get(j, i);
        json_t *sel = json_object_get(c, "selector"), *in = json_object_get(c, "input");
        json_t *ex = json_object_get(c, "expect"), *st = json_object_get(c, "status");
        const char *bad = !json_is_object(c) ? "not an object"
                          : !json_is_string(sel) || !json_string_length(sel)
                              ? "\"selector\" must be a non-empty string"
                          : in && !json_is_string(in) ? "\"input\" must be a string"
                          : ex && !json_is_string(ex) ? "\"expect\" must be a string"
                          : st && !json_is_integer(st) ? "\"status\" must be an integer"
                          : NULL;
        if (bad) {
            snprintf(err, errlen, "cases %s: entry %zu: %s", path, i, bad);
            for (size_t k = 0; k < i; k++) {
                free(cs[k].selector);
                free(cs[k].input);
                free(cs[k].expect);
            }
            free(cs);
            json_decref(j);
            return -1;
        }
        cs[i].selector = strdup(json_string_value(sel));
        cs[i].input_len = in ? json_string_length(in) : 0;
        cs[i].input = malloc(cs[i].input_len + 1);
        if (cs[i].input)
            memcpy(cs[i].input, in ? json_string_value(in) : "", cs[i].input_len + 1);
        if (ex) {
            cs[i].expect_len = json_string_length(ex);
            cs[i].expect = malloc(cs[i].expect_len + 1);
            if (cs[i].expect)
                memcpy(cs[i].expect, json_string_value(ex), cs[i].expect_len + 1);
        }
        cs[i].status = st ? (int)json_integer_value(st) : 0;
    }
    json_decref(j);
    if (!cs) {
        snprintf(err, errlen, "cases %s: out of memory", path);
        return -1;
    }
    *out = cs;
    *n = cnt;
    return 0;
}

/* ---- Finding the descriptor, to tell whether the plugin has a self_test ----
 *
 * kernel_load ran self_test if there is one, but the public API does not
 * say whether there was.  The descriptor is nearly always a static object
 * in the plugin's image, so we look for it there: in the generation the
 * kernel mapped from its runtime directory, an aligned a4ps_plugin whose
 * header is ours and whose name and version are the loaded ones.  This
 * only reads memory; no plugin code runs for it. */

typedef struct desc_find {
    const char *prefix;
    const char *name, *version;
    int found;                   /* 1 found, 0 not (yet) */
    int has_self_test;
} desc_find;

static int inside(const struct dl_phdr_info *info, uintptr_t p, size_t n)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_R))
            continue;
        uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (p >= s && p <= e && n <= e - p)
            return 1;
    }
    return 0;
}

static int str_at(const struct dl_phdr_info *info, const char *p, const char *want)
{
    size_t n = strlen(want) + 1;
    return p && inside(info, (uintptr_t)p, n) && memcmp(p, want, n) == 0;
}

static int desc_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    desc_find *f = arg;
    if (!info->dlpi_name || strncmp(info->dlpi_name, f->prefix, strlen(f->prefix)))
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_R))
            continue;
        uintptr_t s = (info->dlpi_addr + ph->p_vaddr + 7) & ~(uintptr_t)7;
        uintptr_t e = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        for (uintptr_t a = s; a + A4PS_PLUGIN_SIZE_1_0 <= e; a += 8) {
            const a4ps_plugin *d = (const a4ps_plugin *)a;
            if (d->abi_major != A4PS_ABI_MAJOR || d->signature != A4PS_BUILD_SIGNATURE ||
                d->struct_size < A4PS_PLUGIN_SIZE_1_0 || d->struct_size > 65536)
                continue;
            if (!str_at(info, d->name, f->name) || !str_at(info, d->version, f->version))
                continue;
            f->found = 1;
            f->has_self_test = d->struct_size >= A4PS_PLUGIN_SIZE_1_1 &&
                               a + A4PS_PLUGIN_SIZE_1_1 <= e && d->self_test != NULL;
            return 1;
        }
    }
    return 0;
}

/* ---- Calls ---- */

typedef struct call_result {
    int status;
    double ms;
    kernel_reply reply;
} call_result;

static void call(kernel *k, const char *test, const char *selector, const void *msg,
                 size_t len, call_result *r)
{
    wd_arm(test, selector, P.call_ms);
    uint64_t t0 = now_ns();
    r->status = kernel_send(k, PROTO, selector, msg, len, &r->reply);
    r->ms = ms_since(t0);
    wd_disarm();
}

static int faulted(int status)
{
    return status == A4PS_EFAULT || status == A4PS_EQUARANTINED;
}

/* Add one test to the report.  ok and error say whether it passed. */
static void add_test(const char *name, const char *selector, int ok, const call_result *r,
                     const probe_case *c, const char *match, const char *error)
{
    pthread_mutex_lock(&P.lock);
    json_t *t = json_pack("{s:s, s:s, s:b}", "name", name, "selector", selector, "ok", ok);
    if (t && r) {
        json_object_set_new(t, "status", json_integer(r->status));
        json_object_set_new(t, "ms", ms_json(r->ms));
        json_object_set_new(t, "reply", text_json(r->reply.data ? r->reply.data : "",
                                                  r->reply.len, REPLY_CUT));
        json_object_set_new(t, "reply_len", json_integer((json_int_t)r->reply.len));
    }
    if (t && c)
        json_object_set_new(t, "expect", c->expect ? text_json(c->expect, c->expect_len,
                                                               REPLY_CUT) : json_null());
    if (t && match)
        json_object_set_new(t, "match", json_string(match));
    if (t)
        json_object_set_new(t, "error", error ? json_string(error) : json_null());
    json_array_append(P.tests, t);
    json_decref(t);              /* still ours until the denials are added */
    if (ok) {
        P.passed++;
    } else {
        P.failed++;
        failure_locked("%s: %s", name, error ? error : "failed");
    }
    char during[200];
    snprintf(during, sizeof during, "test %s", name);
    json_t *names = json_array();
    attribute_denials_locked(during, names);
    if (t && json_array_size(names))
        json_object_set(t, "denied", names);
    json_decref(names);
    pthread_mutex_unlock(&P.lock);
}

/* A short quote of a reply for an error line. */
static void quote(char *out, size_t outlen, const char *s, size_t len)
{
    size_t o = 0;
    if (outlen < 8)
        return;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 6 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
        if (i + 1 < len && o + 6 >= outlen) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
    }
    out[o++] = '"';
    out[o] = 0;
}

/* Fault or overrun: the only ways a contract test fails.  Returns 1 when
 * the version is fenced off, and testing it further is pointless. */
static int contract_test(kernel *k, const char *name, const char *selector, const void *msg,
                         size_t len)
{
    call_result r = {0};
    call(k, name, selector, msg, len, &r);
    char error[400] = "";
    if (faulted(r.status)) {
        char q[240];
        quote(q, sizeof q, r.reply.data ? r.reply.data : "", r.reply.len);
        snprintf(error, sizeof error, "faulted (status %d): %s", r.status, q);
    }
    add_test(name, selector, !error[0], &r, NULL, NULL, error[0] ? error : NULL);
    kernel_reply_free(&r.reply);
    return faulted(r.status);
}

static size_t trimmed_len(const char *s, size_t n)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
        n--;
    return n;
}

static int case_test(kernel *k, size_t idx, const probe_case *c)
{
    char name[120];
    snprintf(name, sizeof name, "case %zu (%s)", idx, c->selector);
    call_result r = {0};
    call(k, name, c->selector, c->input, c->input_len, &r);
    const char *got = r.reply.data ? r.reply.data : "";
    char error[700] = "", q[240], qe[240];
    const char *match = NULL;
    quote(q, sizeof q, got, r.reply.len);
    if (r.status != c->status) {
        snprintf(error, sizeof error, "status %d, expected %d; reply %s", r.status, c->status, q);
    } else if (c->expect) {
        if (r.reply.len == c->expect_len && !memcmp(got, c->expect, c->expect_len)) {
            match = "exact";
        } else {
            size_t a = trimmed_len(got, r.reply.len), b = trimmed_len(c->expect, c->expect_len);
            if (a == b && !memcmp(got, c->expect, a)) {
                match = "trimmed";
            } else {
                quote(qe, sizeof qe, c->expect, c->expect_len);
                snprintf(error, sizeof error, "expected %s, got %s", qe, q);
            }
        }
    }
    add_test(name, c->selector, !error[0], &r, c, match, error[0] ? error : NULL);
    kernel_reply_free(&r.reply);
    return faulted(r.status);
}

/* ---- Main ---- */

static void usage(void)
{
    die_usage("usage: a4ps-probe [--state FILE] [--cases FILE] [--call-ms N] [--hook-ms N] "
              "PLUGIN.so");
}

static unsigned parse_ms(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    unsigned long n = v ? strtoul(v, &end, 10) : 0;
    if (!v || errno || *end || n == 0 || n > 600000)
        die_usage("%s: '%s' is not a number of milliseconds (1-600000)", opt, v ? v : "");
    return (unsigned)n;
}

static void parse_args(int argc, char **argv, probe_opts *o)
{
    memset(o, 0, sizeof *o);
    o->call_ms = 2000;
    o->hook_ms = 2000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--state") && i + 1 < argc)
            o->state_file = argv[++i];
        else if (!strcmp(a, "--cases") && i + 1 < argc)
            o->cases_file = argv[++i];
        else if (!strcmp(a, "--call-ms"))
            o->call_ms = parse_ms(a, i + 1 < argc ? argv[++i] : NULL);
        else if (!strcmp(a, "--hook-ms"))
            o->hook_ms = parse_ms(a, i + 1 < argc ? argv[++i] : NULL);
        else if (a[0] == '-' || o->plugin)
            usage();
        else
            o->plugin = a;
    }
    if (!o->plugin)
        usage();
}

/* Our stdout and stderr move out of the candidate's way; fd 1 and 2 become
 * /dev/null. */
static void hide_stdio(void)
{
    P.out_fd = fcntl(1, F_DUPFD_CLOEXEC, 200);
    P.err_fd = fcntl(2, F_DUPFD_CLOEXEC, 200);
    if (P.out_fd < 0 || P.err_fd < 0)
        die_usage("cannot save stdout/stderr: %s", strerror(errno));
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
        die_usage("cannot point stdout/stderr at /dev/null: %s", strerror(errno));
    close(null);
    signal(SIGXFSZ, SIG_IGN);    /* a full disk is EFBIG for the candidate, not our death */
    signal(SIGPIPE, SIG_IGN);
}

static int selector_list(kernel *k, char *err, size_t errlen)
{
    char *ex = kernel_explain(k, PROTO);
    json_t *j = ex ? json_loads(ex, 0, NULL) : NULL;
    free(ex);
    json_t *pl = json_object_get(j, "plugin"), *ms = json_object_get(j, "methods");
    if (!json_is_object(pl) || !json_is_array(ms)) {
        snprintf(err, errlen, "kernel_explain(%s) gave no plugin and methods", PROTO);
        json_decref(j);
        return -1;
    }
    json_t *sels = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m)
        json_array_append(sels, json_object_get(m, "selector"));
    json_t *info = json_pack("{s:O, s:O, s:O, s:O, s:O, s:o}", "name",
                             json_object_get(pl, "name"), "version", json_object_get(pl, "version"),
                             "kind", json_object_get(pl, "kind"), "state_version",
                             json_object_get(pl, "state_version"), "description",
                             json_object_get(pl, "description") ? json_object_get(pl, "description")
                                                                 : json_null(),
                             "methods", sels);
    json_decref(j);
    if (!info) {
        snprintf(err, errlen, "kernel_explain(%s): incomplete plugin information", PROTO);
        return -1;
    }
    pthread_mutex_lock(&P.lock);
    if (P.plugin)
        json_object_update(info, P.plugin);   /* keep self_test */
    json_decref(P.plugin);
    P.plugin = info;
    pthread_mutex_unlock(&P.lock);
    return 0;
}

int main(int argc, char **argv)
{
    probe_opts o;
    P.t0_ns = now_ns();
    parse_args(argc, argv, &o);
    hide_stdio();
    stage("start");
    P.call_ms = o.call_ms;
    P.steps = json_array();
    P.tests = json_array();
    P.log = json_array();
    const char *slash = strrchr(o.plugin, '/');
    P.file = slash ? slash + 1 : o.plugin;

    /* Everything we read is read and checked before the candidate runs. */
    char err[KERNEL_ERRLEN];
    char *state_buf = NULL;
    size_t state_len = 0, nstate = 0, ncases = 0;
    state_rec *state = NULL;
    probe_case *cases = NULL;
    if (kernel_sha256_file(o.plugin, MAX_FILE_BYTES, P.sha256, err, sizeof err) != 0)
        die_usage("plugin %s", err);
    if (o.state_file &&
        (read_file(o.state_file, MAX_FILE_BYTES, &state_buf, &state_len, err, sizeof err) != 0 ||
         state_parse(o.state_file, state_buf, state_len, &state, &nstate, err, sizeof err) != 0))
        die_usage("%s", err);
    if (o.cases_file && cases_parse(o.cases_file, &cases, &ncases, err, sizeof err) != 0)
        die_usage("%s", err);

    /* The inner wall goes up before any thread exists (TSYNC covers the
     * rest), the exit() catcher before any candidate code can register its own. */
    if (seccomp_apply(err, sizeof err) != 0)
        die_usage("%s", err);
    if (atexit(on_exit_called) != 0)
        die_usage("atexit failed");
    P.reserve = malloc(RESERVE_BYTES);
    if (P.reserve)
        memset(P.reserve, 0, RESERVE_BYTES);   /* really ours, not just promised */

    /* /tmp in the sandbox (a tmpfs that dies with it); a bare run outside
     * it points TMPDIR at its own work directory. */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/' || strlen(tmp) > sizeof P.rtdir - 24)
        tmp = "/tmp";
    snprintf(P.rtdir, sizeof P.rtdir, "%s/a4ps-probe-XXXXXX", tmp);
    if (!mkdtemp(P.rtdir))
        die_usage("cannot create a runtime directory under %s: %s", tmp, strerror(errno));
    kernel_config cfg = {
        .runtime_dir = P.rtdir,
        .hook_timeout_ms = o.hook_ms,
        .run_self_test = 1,
        .log_level = A4PS_LOG_INFO,
        .log = on_kernel_log,
    };
    kernel *k = kernel_create(&cfg, err, sizeof err);
    if (!k)
        die_usage("kernel_create: %s", err);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&P.wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog_main, NULL) != 0)
        die_usage("cannot start the watchdog thread");
    pthread_detach(wd);

    /* load: ELF checks, descriptor, init and self_test, as the kernel does. */
    stage("load");
    kernel_version_info info;
    uint64_t t = now_ns();
    int rc = kernel_load(k, o.plugin, &info, err, sizeof err);
    double load_ms = ms_since(t);
    if (rc != 0) {
        one_line(err);
        if (strstr(err, ": self_test: ")) {
            add_step("load", 0, load_ms, err, NULL);
            add_step("self_test", 0, -1, strstr(err, "self_test: ") + 11, NULL);
        } else {
            add_step("load", 0, load_ms, err, NULL);
        }
        report_emit(NULL);
    }
    add_step("load", 1, load_ms, NULL, NULL);
    size_t pre = strlen(P.rtdir);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%.*s/", (int)pre, P.rtdir);
    desc_find df = {.prefix = prefix, .name = info.name, .version = info.version};
    dl_iterate_phdr(desc_cb, &df);
    pthread_mutex_lock(&P.lock);
    P.plugin = json_pack("{s:o}", "self_test", df.found ? json_boolean(df.has_self_test)
                                                        : json_null());
    pthread_mutex_unlock(&P.lock);
    add_step("self_test", 1, -1, NULL,
             !df.found ? "the descriptor is not in the plugin's image: kernel_load ran "
                         "self_test if the plugin has one"
             : df.has_self_test ? "passed, run by the kernel as part of load"
                                : "the plugin has no self_test");

    /* describe: a scratch proto, and the methods as the kernel sees them. */
    stage("describe");
    t = now_ns();
    rc = kernel_proto_create(k, PROTO, info.name, info.version, NULL, err, sizeof err);
    if (rc == 0)
        rc = selector_list(k, err, sizeof err);
    add_step("describe", rc == 0, ms_since(t), rc ? err : NULL, NULL);
    if (rc)
        report_emit(NULL);

    if (nstate) {
        stage("state");
        t = now_ns();
        rc = state_apply(k, state, nstate, err, sizeof err);
        add_step("state", rc == 0, ms_since(t), rc ? err : NULL, NULL);
        if (rc)
            report_emit(NULL);
    }

    /* contract: every method with nothing, with text, with noise; an
     * unknown selector.  Only a fault or an overrun fails. */
    stage("contract");
    pthread_mutex_lock(&P.lock);
    json_t *sels = json_deep_copy(json_object_get(P.plugin, "methods"));
    const char *kind = json_string_value(json_object_get(P.plugin, "kind"));
    int generator = kind && !strcmp(kind, "generator");
    pthread_mutex_unlock(&P.lock);
    unsigned char noise[RANDOM_LEN];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof noise; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise[i] = (unsigned char)x;
    }
    int fenced = 0, has_generate = 0;
    size_t i;
    json_t *sj;
    char name[160];
    t = now_ns();
    json_array_foreach(sels, i, sj) {
        const char *sel = json_string_value(sj);
        if (!sel)
            continue;
        has_generate |= !strcmp(sel, "generate");
        struct { const char *label; const void *msg; size_t len; } in[] = {
            {"empty", "", 0}, {"text", "probe", 5}, {"random-4k", noise, sizeof noise}};
        for (size_t n = 0; n < 3 && !fenced; n++) {
            snprintf(name, sizeof name, "contract %s/%s", sel, in[n].label);
            fenced = contract_test(k, name, sel, in[n].msg, in[n].len);
        }
    }
    if (!fenced)
        fenced = contract_test(k, "contract unknown-selector", UNKNOWN_SELECTOR, "probe", 5);
    if (generator)
        add_test("kind generator", "generate", has_generate, NULL, NULL, NULL,
                 has_generate ? NULL : "a plugin of kind generator must have a method 'generate'");
    add_step("contract", !fenced, ms_since(t),
             fenced ? "stopped: the plugin faulted and the kernel quarantined it" : NULL, NULL);
    json_decref(sels);

    if (ncases && !fenced) {
        stage("cases");
        t = now_ns();
        /* The cases see the state they were written against, not what the
         * contract calls left (an incr called with noise still counts). */
        rc = kernel_proto_destroy(k, PROTO, err, sizeof err);
        if (rc == 0)
            rc = kernel_proto_create(k, PROTO, info.name, info.version, NULL, err, sizeof err);
        if (rc == 0)
            rc = state_apply(k, state, nstate, err, sizeof err);
        if (rc) {
            add_step("cases", 0, ms_since(t), err, NULL);
            report_emit(NULL);
        }
        for (size_t c = 0; c < ncases && !fenced; c++)
            fenced = case_test(k, c, &cases[c]);
        add_step("cases", !fenced, ms_since(t),
                 fenced ? "stopped: the plugin faulted and the kernel quarantined it" : NULL, NULL);
    }

    /* unload: fini and the library's destructors, bounded like a call. */
    stage("unload");
    t = now_ns();
    wd_arm("unload", "", o.hook_ms + o.call_ms);
    kernel_proto_destroy(k, PROTO, err, sizeof err);
    kernel_destroy(k);
    wd_disarm();
    add_step("unload", 1, ms_since(t), NULL, NULL);
    report_emit(NULL);
}
