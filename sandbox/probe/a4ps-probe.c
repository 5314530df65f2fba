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
 *    "status","ms","reply","reply_len","expect","match","error","case"?}],
 *    "cases":[{"case","selector","input_sha256","expect_sha256","status",
 *              "ran","passed"}],
 *    "child":{"pid","answered","end":{"status"}|{"signal","name"}|
 *             {"killed","after"}, "stage"},
 *    "denied_syscalls":[{"syscall","count"}], "log":[...],
 *    "passed", "failed", "ms"}
 *
 * Exit status: 0 pass, 1 fail, 2 usage or internal error (message on stderr).
 *
 * Two processes.  The reporter (this process as started) reads and checks
 * its inputs, forks, and never maps a byte of the candidate: it keeps the
 * report's descriptor, asks the child for one step at a time over a pipe,
 * judges each answer itself (a case passes when the reply the child relayed
 * matches the expectation the child never saw) and writes the report from
 * what it saw, including how the child ended.  The child holds nothing but
 * its two pipe ends and /dev/null: it applies the seccomp filter to itself,
 * loads the candidate through the kernel library and answers.  A child that
 * lies can fake the replies of its own methods -- no more than a plugin that
 * returns them -- but it cannot reach the report, answer a step it was not
 * asked, or end early without the report saying so.  The reporter is made
 * undumpable before the fork, so the child cannot reach its descriptors or
 * memory through /proc; after the fork the reporter filters itself too. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <link.h>
#include <linux/audit.h>
#include <poll.h>
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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
#define MAX_LOG_LINE 400
#define MAX_SYSCALL 1024
#define MAX_FILE_BYTES (64u << 20)

/* The pipe protocol.  A frame is u32 header length | u32 blob length (host
 * order: both ends are this program) | a JSON object | raw bytes.  Requests
 * carry {"seq","op",...}; each answer repeats seq and op.  Bounds keep a
 * hostile child from making the reporter allocate without limit. */
#define CHILD_IN_FD 3            /* requests, in the child */
#define CHILD_OUT_FD 4           /* answers, in the child */
#define MAX_HEADER (1u << 20)
#define MAX_REQ_BLOB (MAX_FILE_BYTES)
#define MAX_REPLY_BLOB (1u << 20)   /* a reply longer than this is relayed cut */
#define MAX_METHODS 4096
#define MAX_ERROR 1024
#define LOAD_SLACK_MS 5000     /* beyond the hooks' limits, for a load to answer */
#define EXIT_CALLED_STATUS 86    /* the child's atexit handler: exit() from the candidate */
#define CHILD_SETUP_STATUS 87    /* the child could not shed the reporter's descriptors */

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

/* ---- Small helpers, both processes ---- */

static int err_fd = 2;           /* where die_usage and stage lines go */

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

/* 0 all written, -1 not (the other end is gone). */
static int write_all(int fd, const void *buf, size_t n)
{
    const char *s = buf;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
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
    write_all(err_fd, "a4ps-probe: ", 12);
    write_all(err_fd, msg, (size_t)n);
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

static const char *signame(int sig)
{
    const char *n = sigabbrev_np(sig);
    return n ? n : "unknown";
}

/* One frame: header JSON and blob. */
static int frame_send(int fd, json_t *hdr, const void *blob, size_t blen)
{
    char *h = json_dumps(hdr, JSON_COMPACT);
    if (!h)
        return -1;
    uint32_t len[2] = {(uint32_t)strlen(h), (uint32_t)blen};
    int rc = write_all(fd, len, sizeof len) || write_all(fd, h, len[0]) ||
             (blen && write_all(fd, blob, blen)) ? -1 : 0;
    free(h);
    return rc;
}

/* ---- The inner wall: seccomp ---- */

/* Written by the child's SIGSYS handler: plain counters, nothing else is
 * safe there. */
static atomic_uint denied[MAX_SYSCALL];
static atomic_uint denied_foreign;   /* another ABI's syscalls (int 0x80, x32) */

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

/* The filter, on the calling process.  trap: the child's (denials are
 * trapped and counted by on_sigsys); otherwise the reporter's, which has
 * no use for any of it once it has forked: EPERM.  keep: descriptors that
 * may not be closed or replaced. */
static int seccomp_apply(int trap, const int *keep, size_t nkeep, char *err, size_t errlen)
{
    scmp_filter_ctx c = NULL;
    int rc = 0;
    const char *what = "sigaction";
    uint32_t deny = trap ? DENY : SCMP_ACT_ERRNO(EPERM);
    if (trap) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSYS, &sa, NULL) != 0) {
            snprintf(err, errlen, "seccomp: sigaction(SIGSYS): %s", strerror(errno));
            return -1;
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(err, errlen, "seccomp: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -1;
    }
    c = seccomp_init(SCMP_ACT_ALLOW);
    if (!c) {
        snprintf(err, errlen, "seccomp: seccomp_init failed");
        return -1;
    }
    what = "attributes";
    /* TSYNC: threads that already exist get the filter too. */
    if ((rc = seccomp_attr_set(c, SCMP_FLTATR_CTL_TSYNC, 1)) ||
        (rc = seccomp_attr_set(c, SCMP_FLTATR_ACT_BADARCH, deny)))
        goto fail;
    for (size_t i = 0; i < sizeof denied_names / sizeof denied_names[0]; i++) {
        what = denied_names[i];
        int nr = seccomp_syscall_resolve_name(what);
        if (nr == __NR_SCMP_ERROR)
            continue;            /* not on this architecture */
        if ((rc = seccomp_rule_add(c, deny, nr, 0)))
            goto fail;
    }
    /* Threads must work (the kernel library starts them); processes not. */
    what = "clone";
    if ((rc = seccomp_rule_add(c, deny, SCMP_SYS(clone), 1,
                               arg_cmp(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0))))
        goto fail;
    /* clone3 passes its flags in memory, out of a filter's sight: ENOSYS
     * makes glibc fall back to clone, whose flags we can see. */
    what = "clone3";
    if ((rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)))
        goto fail;
    /* Keep the handler that records denials in place. */
    what = "rt_sigaction";
    if (trap && (rc = seccomp_rule_add(c, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(rt_sigaction), 1,
                                       arg_cmp(0, SCMP_CMP_EQ, SIGSYS, 0))))
        goto fail;
    for (size_t i = 0; i < nkeep; i++) {
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

/* ---- The child: the candidate's process ---- */

static struct {
    pthread_mutex_t lock;        /* the log, written by any kernel thread */
    char *log[MAX_LOG_LINES];
    size_t nlog;
    unsigned seen[MAX_SYSCALL];  /* denials already told */
    unsigned seen_foreign;
    char rtdir[256];
} C = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void child_log(void *arg, int level, const char *line)
{
    (void)arg;
    char buf[MAX_LOG_LINE];
    snprintf(buf, sizeof buf, "<%d>%s", level, line);
    pthread_mutex_lock(&C.lock);
    if (C.nlog == MAX_LOG_LINES) {
        free(C.log[0]);
        memmove(C.log, C.log + 1, (MAX_LOG_LINES - 1) * sizeof C.log[0]);
        C.nlog--;
    }
    C.log[C.nlog] = strdup(buf);
    if (C.log[C.nlog])
        C.nlog++;
    pthread_mutex_unlock(&C.lock);
}

/* exit() from the candidate: a status the reporter knows. */
static void child_exit_called(void)
{
    _exit(EXIT_CALLED_STATUS);
}

/* The denials and log lines since the last answer go with each answer. */
static void child_news(json_t *hdr)
{
    json_t *den = json_array();
    for (unsigned nr = 0; nr < MAX_SYSCALL; nr++) {
        unsigned n = atomic_load(&denied[nr]);
        if (n != C.seen[nr]) {
            json_array_append_new(den, json_pack("[i, i]", (int)nr, (int)(n - C.seen[nr])));
            C.seen[nr] = n;
        }
    }
    unsigned f = atomic_load(&denied_foreign);
    json_object_set_new(hdr, "denied", den);
    json_object_set_new(hdr, "foreign", json_integer((json_int_t)(f - C.seen_foreign)));
    C.seen_foreign = f;
    json_t *log = json_array();
    pthread_mutex_lock(&C.lock);
    for (size_t i = 0; i < C.nlog; i++) {
        json_array_append_new(log, text_json(C.log[i], strlen(C.log[i]), MAX_LOG_LINE - 1));
        free(C.log[i]);
    }
    C.nlog = 0;
    pthread_mutex_unlock(&C.lock);
    json_object_set_new(hdr, "log", log);
}

static void child_answer(json_t *req, json_t *hdr, const void *blob, size_t blen)
{
    json_object_set(hdr, "seq", json_object_get(req, "seq"));
    json_object_set(hdr, "op", json_object_get(req, "op"));
    child_news(hdr);
    if (frame_send(CHILD_OUT_FD, hdr, blob, blen) != 0)
        _exit(0);                /* the reporter is gone */
    json_decref(hdr);
}

static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next request, or NULL at the end (the reporter closed its end). */
static json_t *child_request(char **blob, size_t *blen)
{
    uint32_t len[2];
    *blob = NULL;
    if (read_full(CHILD_IN_FD, len, sizeof len) != 0 || len[0] > MAX_HEADER ||
        len[1] > MAX_REQ_BLOB)
        return NULL;
    char *h = malloc((size_t)len[0] + 1), *b = malloc((size_t)len[1] + 1);
    if (!h || !b || read_full(CHILD_IN_FD, h, len[0]) != 0 ||
        read_full(CHILD_IN_FD, b, len[1]) != 0) {
        free(h);
        free(b);
        return NULL;
    }
    json_t *j = json_loadb(h, len[0], 0, NULL);
    free(h);
    *blob = b;
    *blen = len[1];
    return j;
}

/* The descriptors open now, from /proc/self/fd: -1 if it cannot be read. */
static int fd_list(int *fds, size_t cap, size_t *n)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    *n = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (e->d_name[0] == '.' || *end || fd == dirfd(d))
            continue;
        if (*n == cap) {
            rc = -1;
            break;
        }
        fds[(*n)++] = (int)fd;
    }
    closedir(d);
    return rc;
}

/* Drop everything the reporter holds: only the two pipe ends (at 3 and 4)
 * and /dev/null on 0-2 stay, and that is checked.  /proc/self/fd names
 * what is open (closing every number up to RLIMIT_NOFILE costs seconds
 * under gVisor); without it, close_range, and without that, every number. */
static void child_shed(int in, int out)
{
    int a = fcntl(in, F_DUPFD, 10), b = fcntl(out, F_DUPFD, 10);
    int null = open("/dev/null", O_RDWR);
    if (a < 0 || b < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
        dup2(null, 2) < 0 || dup2(a, CHILD_IN_FD) < 0 || dup2(b, CHILD_OUT_FD) < 0)
        _exit(CHILD_SETUP_STATUS);
    int fds[4096];
    size_t n = 0;
    if (fd_list(fds, 4096, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            if (fds[i] > CHILD_OUT_FD)
                close(fds[i]);
    } else if (syscall(SYS_close_range, CHILD_OUT_FD + 1, ~0u, 0) != 0) {
        struct rlimit rl;
        int max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (1u << 20)
                      ? (int)rl.rlim_cur : 1 << 20;
        for (int fd = CHILD_OUT_FD + 1; fd < max; fd++)
            close(fd);
    }
    /* The check: by /proc when it can be read, else the first 1024. */
    if (fd_list(fds, 4096, &n) == 0) {
        if (n != CHILD_OUT_FD + 1)
            _exit(CHILD_SETUP_STATUS);
        for (size_t i = 0; i < n; i++)
            if (fds[i] > CHILD_OUT_FD)
                _exit(CHILD_SETUP_STATUS);
    } else {
        for (int fd = 0; fd < 1024; fd++)
            if ((fcntl(fd, F_GETFD) >= 0) != (fd <= CHILD_OUT_FD))
                _exit(CHILD_SETUP_STATUS);
    }
    struct stat st;
    for (int fd = 0; fd <= 2; fd++)
        if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode))
            _exit(CHILD_SETUP_STATUS);
    if (fcntl(CHILD_IN_FD, F_SETFD, FD_CLOEXEC) < 0 || fcntl(CHILD_OUT_FD, F_SETFD, FD_CLOEXEC) < 0)
        _exit(CHILD_SETUP_STATUS);
}

static json_t *child_describe(kernel *k, char *err, size_t errlen)
{
    char *ex = kernel_explain(k, PROTO);
    json_t *j = ex ? json_loads(ex, 0, NULL) : NULL;
    free(ex);
    json_t *pl = json_object_get(j, "plugin"), *ms = json_object_get(j, "methods");
    if (!json_is_object(pl) || !json_is_array(ms)) {
        snprintf(err, errlen, "kernel_explain(%s) gave no plugin and methods", PROTO);
        json_decref(j);
        return NULL;
    }
    json_t *sels = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m)
        if (json_is_string(json_object_get(m, "selector")))
            json_array_append(sels, json_object_get(m, "selector"));
    json_t *d = json_object_get(pl, "description");
    json_t *info = json_pack("{s:b, s:n, s:O, s:O, s:O, s:o}", "ok", 1, "error", "kind",
                             json_object_get(pl, "kind"), "state_version",
                             json_object_get(pl, "state_version"), "description",
                             json_is_string(d) ? d : json_null(), "methods", sels);
    json_decref(j);
    if (!info)
        snprintf(err, errlen, "kernel_explain(%s): incomplete plugin information", PROTO);
    return info;
}

static json_t *status_answer(int rc, const char *err, double ms)
{
    json_t *h = json_pack("{s:b, s:o}", "ok", rc == 0, "ms", ms_json(ms));
    json_object_set_new(h, "error", rc ? json_string(err) : json_null());
    return h;
}

static int child_state(kernel *k, const kernel_version_info *info, const char *blob,
                       size_t blen, int reset, char *err, size_t errlen)
{
    state_rec *st = NULL;
    size_t n = 0;
    int rc = 0;
    if (reset) {
        rc = kernel_proto_destroy(k, PROTO, err, errlen);
        if (rc == 0)
            rc = kernel_proto_create(k, PROTO, info->name, info->version, NULL, err, errlen);
    }
    if (rc == 0 && blen)
        rc = state_parse("(from the reporter)", blob, blen, &st, &n, err, errlen);
    if (rc == 0)
        rc = state_apply(k, st, n, err, errlen);
    free(st);
    return rc;
}

static __attribute__((noreturn)) void child_main(const probe_opts *o, int in, int out)
{
    /* Undumpable was for the reporter's sake; the child's own /proc is as
     * a plugin's always was (and lists its descriptors to shed). */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    child_shed(in, out);
    err_fd = -1;
    char err[KERNEL_ERRLEN];
    int keep[] = {CHILD_IN_FD, CHILD_OUT_FD};
    /* The inner wall goes up before any thread exists (TSYNC covers the
     * rest), the exit() catcher before any candidate code can register its own. */
    if (seccomp_apply(1, keep, 2, err, sizeof err) != 0 || atexit(child_exit_called) != 0)
        _exit(CHILD_SETUP_STATUS);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/' || strlen(tmp) > sizeof C.rtdir - 24)
        tmp = "/tmp";
    snprintf(C.rtdir, sizeof C.rtdir, "%s/a4ps-probe-XXXXXX", tmp);
    if (!mkdtemp(C.rtdir))
        _exit(CHILD_SETUP_STATUS);
    kernel_config cfg = {
        .runtime_dir = C.rtdir,
        .hook_timeout_ms = o->hook_ms,
        .run_self_test = 1,
        .log_level = A4PS_LOG_INFO,
        .log = child_log,
    };
    kernel *k = kernel_create(&cfg, err, sizeof err);
    if (!k)
        _exit(CHILD_SETUP_STATUS);
    kernel_version_info info = {0};
    for (;;) {
        char *blob;
        size_t blen = 0;
        json_t *req = child_request(&blob, &blen);
        if (!req)
            _exit(0);
        const char *op = json_string_value(json_object_get(req, "op"));
        op = op ? op : "";
        uint64_t t = now_ns();
        json_t *h = NULL;
        const void *rblob = NULL;
        size_t rlen = 0;
        kernel_reply r = {0};
        err[0] = 0;
        if (!strcmp(op, "load")) {
            const char *path = json_string_value(json_object_get(req, "path"));
            int rc = kernel_load(k, path ? path : "", &info, err, sizeof err);
            h = status_answer(rc, err, ms_since(t));
            if (rc == 0) {
                char prefix[300];
                snprintf(prefix, sizeof prefix, "%s/", C.rtdir);
                desc_find df = {.prefix = prefix, .name = info.name, .version = info.version};
                dl_iterate_phdr(desc_cb, &df);
                json_object_set_new(h, "name", json_string(info.name));
                json_object_set_new(h, "version", json_string(info.version));
                json_object_set_new(h, "self_test", df.found ? json_boolean(df.has_self_test)
                                                             : json_null());
            }
        } else if (!strcmp(op, "describe")) {
            int rc = kernel_proto_create(k, PROTO, info.name, info.version, NULL, err,
                                         sizeof err);
            h = rc == 0 ? child_describe(k, err, sizeof err) : NULL;
            if (!h)
                h = status_answer(-1, err, 0);
            json_object_set_new(h, "ms", ms_json(ms_since(t)));
        } else if (!strcmp(op, "state") || !strcmp(op, "reset")) {
            int rc = child_state(k, &info, blob, blen, !strcmp(op, "reset"), err, sizeof err);
            h = status_answer(rc, err, ms_since(t));
        } else if (!strcmp(op, "call")) {
            const char *sel = json_string_value(json_object_get(req, "selector"));
            int st = kernel_send(k, PROTO, sel ? sel : "", blob, blen, &r);
            h = json_pack("{s:i, s:o, s:I}", "status", st, "ms", ms_json(ms_since(t)),
                          "reply_len", (json_int_t)r.len);
            rblob = r.data;
            rlen = r.len < MAX_REPLY_BLOB ? r.len : MAX_REPLY_BLOB;
        } else if (!strcmp(op, "unload")) {
            kernel_proto_destroy(k, PROTO, err, sizeof err);
            kernel_destroy(k);
            k = NULL;
            h = status_answer(0, NULL, ms_since(t));
        } else {
            _exit(CHILD_SETUP_STATUS);
        }
        child_answer(req, h, rblob, rlen);
        kernel_reply_free(&r);
        json_decref(req);
        free(blob);
        if (!k)
            _exit(0);            /* nothing more to do: the end is the answer's EOF */
    }
}

/* ---- The reporter ---- */

static struct {
    int out_fd;                  /* the report's descriptor: ours alone */
    int req, resp;               /* to and from the child; -1 once closed */
    pid_t child;
    int reaped;
    unsigned call_ms, hook_ms;
    uint64_t t0_ns;
    const char *file;            /* the candidate's basename */
    char sha256[65];
    const char *stage;
    json_t *plugin, *steps, *tests, *log, *cases, *child_end;
    char *first_failure;
    int passed, failed;
    unsigned denied[MAX_SYSCALL];
    unsigned foreign;
    json_int_t seq;
    unsigned answered;
} R = {.out_fd = -1, .req = -1, .resp = -1};

typedef struct answer {
    json_t *h;
    char *blob;
    size_t blen;
    json_t *denied;              /* names of the calls denied meanwhile */
} answer;

static void answer_free(answer *a)
{
    json_decref(a->h);
    json_decref(a->denied);
    free(a->blob);
    memset(a, 0, sizeof *a);
}

/* Tell the host where we are: if we die, its report names the stage. */
static void stage(const char *name)
{
    R.stage = name;
    char line[96];
    int n = snprintf(line, sizeof line, "stage %s\n", name);
    write_all(err_fd, line, (size_t)n);
}

/* Record a failure; the first one becomes the report's reason. */
static void failure(const char *fmt, ...)
{
    if (R.first_failure)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&R.first_failure, fmt, ap) < 0)
        R.first_failure = NULL;
    va_end(ap);
    if (R.first_failure)
        one_line(R.first_failure);
}

static void add_step(const char *name, int ok, double ms, const char *error, const char *detail)
{
    json_t *s = json_pack("{s:s, s:b, s:o, s:s?}", "step", name, "ok", ok,
                          "ms", ms >= 0 ? ms_json(ms) : json_null(), "error", error);
    if (s && detail)
        json_object_set_new(s, "detail", json_string(detail));
    json_array_append_new(R.steps, s);
    if (!ok)
        failure("%s: %s", name, error ? error : "failed");
}

/* ---- How the child ended ---- */

static void end_json(int st, int killed, const char *why)
{
    json_t *e;
    if (WIFSIGNALED(st) && !killed) {
        char nm[32];
        snprintf(nm, sizeof nm, "SIG%s", signame(WTERMSIG(st)));
        e = json_pack("{s:i, s:s}", "signal", WTERMSIG(st), "name", nm);
    } else if (killed) {
        e = json_pack("{s:b, s:s}", "killed", 1, "why", why);
    } else {
        e = json_pack("{s:i}", "status", WEXITSTATUS(st));
    }
    json_decref(R.child_end);
    R.child_end = json_pack("{s:i, s:I, s:o, s:s}", "pid", (int)R.child, "answered",
                            (json_int_t)R.answered, "end", e ? e : json_null(), "stage",
                            R.stage ? R.stage : "start");
}

/* Wait for the child until deadline_ns, then kill it.  *st: its status;
 * returns 1 if we had to kill it. */
static int reap(uint64_t deadline_ns, int *st)
{
    *st = 0;
    if (R.reaped)
        return 0;
    for (;;) {
        pid_t p = waitpid(R.child, st, WNOHANG);
        if (p == R.child || (p < 0 && errno != EINTR))
            break;
        if (now_ns() >= deadline_ns) {
            kill(R.child, SIGKILL);
            while (waitpid(R.child, st, 0) < 0 && errno == EINTR)
                ;
            R.reaped = 1;
            return 1;
        }
        usleep(2000);
    }
    R.reaped = 1;
    return 0;
}

static void close_req(void)
{
    if (R.req >= 0)
        close(R.req);
    R.req = -1;
}

/* The child stopped answering mid-step: say how it ended. */
static void child_gone(const char *during)
{
    close_req();
    int st;
    int killed = reap(now_ns() + 2000000000ull, &st);
    end_json(st, killed, "it closed its pipe but did not exit");
    if (killed)
        failure("the plugin's process stopped answering during %s and was killed", during);
    else if (WIFSIGNALED(st))
        failure("the plugin's process died with signal %d (SIG%s) during %s", WTERMSIG(st),
                signame(WTERMSIG(st)), during);
    else if (WEXITSTATUS(st) == EXIT_CALLED_STATUS)
        failure("the plugin called exit() during %s", during);
    else if (WEXITSTATUS(st) == CHILD_SETUP_STATUS && !R.answered)
        failure("the probe's child could not set itself up (status %d)", WEXITSTATUS(st));
    else
        failure("the plugin's process exited with status %d during %s (without answering)",
                WEXITSTATUS(st), during);
}

/* Kill the child: it did something the protocol does not allow, or went
 * silent.  why is the report's reason. */
static void child_kill(const char *why, const char *end_why)
{
    close_req();
    failure("%s", why);
    int st = 0;
    if (!R.reaped) {
        kill(R.child, SIGKILL);
        while (waitpid(R.child, &st, 0) < 0 && errno == EINTR)
            ;
        R.reaped = 1;
    }
    end_json(st, 1, end_why);
}

/* Exactly n bytes before deadline: 0, -1 the other end closed, -2 late. */
static int read_until(int fd, void *buf, size_t n, uint64_t deadline_ns)
{
    char *p = buf;
    while (n) {
        uint64_t now = now_ns();
        if (now >= deadline_ns)
            return -2;
        struct pollfd pfd = {fd, POLLIN, 0};
        uint64_t left = (deadline_ns - now + 999999) / 1000000;
        int r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        ssize_t got = read(fd, p, n);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* Is a field of the expected type?  t: b bool, i integer, r number, s
 * string, S string or null, B bool or null, a array. */
static int typed(json_t *v, char t)
{
    switch (t) {
    case 'b': return json_is_boolean(v);
    case 'i': return json_is_integer(v);
    case 'r': return json_is_number(v) && json_number_value(v) >= 0;
    case 's': return json_is_string(v);
    case 'S': return json_is_string(v) || json_is_null(v);
    case 'B': return json_is_boolean(v) || json_is_null(v);
    case 'a': return json_is_array(v);
    }
    return 0;
}

static int str_max(json_t *v, size_t max)
{
    return !json_is_string(v) || (json_string_length(v) <= max &&
                                  !memchr(json_string_value(v), 0, json_string_length(v)));
}

/* Every field of an answer, by op: "key:T" required, "key:T?" optional;
 * nothing else may be there. */
static int answer_check(answer *a, const char *op, json_int_t seq, char *why, size_t whylen)
{
    static const char *const common[] = {"seq:i", "op:s", "denied:a", "foreign:i", "log:a", NULL};
    static const char *const status_keys[] = {"ok:b", "ms:r", "error:S", NULL};
    static const char *const load_keys[] = {"ok:b", "ms:r", "error:S", "name:s?", "version:s?",
                                            "self_test:B?", NULL};
    static const char *const describe_keys[] = {"ok:b", "ms:r", "error:S", "kind:s?",
                                                "state_version:i?", "description:S?",
                                                "methods:a?", NULL};
    static const char *const call_keys[] = {"status:i", "ms:r", "reply_len:i", NULL};
    const char *const *own = !strcmp(op, "load")       ? load_keys
                             : !strcmp(op, "describe") ? describe_keys
                             : !strcmp(op, "call")     ? call_keys
                                                       : status_keys;
    json_t *h = a->h;
    if (!json_is_object(h)) {
        snprintf(why, whylen, "its answer is not a JSON object");
        return -1;
    }
    size_t known = 0;
    const char *const *lists[] = {common, own};
    for (int l = 0; l < 2; l++)
        for (const char *const *k = lists[l]; *k; k++) {
            const char *colon = strchr(*k, ':');
            char key[32];
            snprintf(key, sizeof key, "%.*s", (int)(colon - *k), *k);
            json_t *v = json_object_get(h, key);
            if (!v) {
                if (colon[2] == '?')
                    continue;
                snprintf(why, whylen, "its answer lacks \"%s\"", key);
                return -1;
            }
            known++;
            if (!typed(v, colon[1])) {
                snprintf(why, whylen, "its answer's \"%s\" has the wrong type", key);
                return -1;
            }
        }
    if (json_object_size(h) != known) {
        snprintf(why, whylen, "its answer holds fields nobody asked for");
        return -1;
    }
    if (json_integer_value(json_object_get(h, "seq")) != seq ||
        strcmp(json_string_value(json_object_get(h, "op")), op)) {
        snprintf(why, whylen, "it answered step %" JSON_INTEGER_FORMAT " (%s), not the step "
                 "asked, %" JSON_INTEGER_FORMAT " (%s)",
                 json_integer_value(json_object_get(h, "seq")),
                 json_string_value(json_object_get(h, "op")), seq, op);
        return -1;
    }
    /* Bounds and consistency. */
    json_t *ok = json_object_get(h, "ok");
    int good = !ok || json_is_true(ok);
    if (!str_max(json_object_get(h, "error"), MAX_ERROR * 4) ||
        (ok && good != json_is_null(json_object_get(h, "error")))) {
        snprintf(why, whylen, "its answer's \"error\" does not fit its \"ok\" (or is too long)");
        return -1;
    }
    if (!strcmp(op, "load") && good &&
        (!json_object_get(h, "name") || !json_object_get(h, "version") ||
         !json_object_get(h, "self_test") || !str_max(json_object_get(h, "name"), 63) ||
         !str_max(json_object_get(h, "version"), 31))) {
        snprintf(why, whylen, "its answer to load lacks a plausible name, version and self_test");
        return -1;
    }
    if (!strcmp(op, "describe") && good) {
        json_t *m = json_object_get(h, "methods");
        size_t i;
        json_t *s;
        int bad = !m || !json_object_get(h, "kind") || !json_object_get(h, "state_version") ||
                  !json_object_get(h, "description") ||
                  !str_max(json_object_get(h, "kind"), 32) ||
                  !str_max(json_object_get(h, "description"), 4096) ||
                  json_array_size(m) > MAX_METHODS;
        json_array_foreach(m, i, s)
            bad |= !json_is_string(s) || !json_string_length(s) || !str_max(s, 255);
        if (bad) {
            snprintf(why, whylen, "its answer to describe lacks plausible methods and kind");
            return -1;
        }
    }
    if (!strcmp(op, "call")) {
        json_int_t rl = json_integer_value(json_object_get(h, "reply_len"));
        int st = (int)json_integer_value(json_object_get(h, "status"));
        if (rl < 0 || (size_t)(rl < MAX_REPLY_BLOB ? rl : MAX_REPLY_BLOB) != a->blen ||
            st != json_integer_value(json_object_get(h, "status"))) {
            snprintf(why, whylen, "its answer's reply_len does not match the reply it sent");
            return -1;
        }
    } else if (a->blen) {
        snprintf(why, whylen, "it sent %zu bytes with an answer to %s that has none", a->blen,
                 op);
        return -1;
    }
    json_t *den = json_object_get(h, "denied"), *log = json_object_get(h, "log"), *e;
    size_t i;
    json_int_t foreign = json_integer_value(json_object_get(h, "foreign"));
    int bad = foreign < 0 || foreign > (1 << 30) || json_array_size(den) > MAX_SYSCALL ||
              json_array_size(log) > MAX_LOG_LINES;
    json_array_foreach(den, i, e) {
        json_int_t nr = json_integer_value(json_array_get(e, 0));
        json_int_t n = json_integer_value(json_array_get(e, 1));
        bad |= !json_is_array(e) || json_array_size(e) != 2 ||
               !json_is_integer(json_array_get(e, 0)) || !json_is_integer(json_array_get(e, 1)) ||
               nr < 0 || nr >= MAX_SYSCALL || n < 1 || n > (1 << 30);
    }
    json_array_foreach(log, i, e)
        bad |= !json_is_string(e) || !str_max(e, MAX_LOG_LINE * 3);
    if (bad) {
        snprintf(why, whylen, "its answer's denied calls or log lines are malformed");
        return -1;
    }
    return 0;
}

/* What the child said besides the answer: denied calls (attributed to
 * `during`, their names in a->denied) and log lines. */
static void answer_news(answer *a, const char *during)
{
    json_t *den = json_object_get(a->h, "denied"), *e;
    size_t i;
    a->denied = json_array();
    json_array_foreach(den, i, e) {
        unsigned nr = (unsigned)json_integer_value(json_array_get(e, 0));
        R.denied[nr] += (unsigned)json_integer_value(json_array_get(e, 1));
        char name[64];
        syscall_name(nr, name, sizeof name);
        failure("tried %s(2), which plugins may not use (during %s)", name, during);
        json_array_append_new(a->denied, json_string(name));
    }
    json_int_t f = json_integer_value(json_object_get(a->h, "foreign"));
    if (f) {
        R.foreign += (unsigned)f;
        json_array_append_new(a->denied, json_string("(another ABI)"));
        failure("made a system call of another ABI (int 0x80 or x32), which plugins may not "
                "use (during %s)", during);
    }
    json_array_foreach(json_object_get(a->h, "log"), i, e) {
        if (json_array_size(R.log) >= MAX_LOG_LINES)
            json_array_remove(R.log, 0);
        json_array_append(R.log, e);
    }
}

/* One step: send the request, read its answer within limit_ms and check
 * it.  0 answered; -1 the child failed the step (recorded: the report is
 * due), -2 it did not answer in time (killed; late_why recorded). */
static int ask(const char *op, json_t *args, const void *blob, size_t blen, unsigned limit_ms,
               const char *during, const char *late_why, answer *a)
{
    memset(a, 0, sizeof *a);
    char why[512];
    /* Nothing may be waiting: every byte the child sends answers a step. */
    struct pollfd pfd = {R.resp, POLLIN, 0};
    if (poll(&pfd, 1, 0) > 0) {
        char c;
        ssize_t n = read(R.resp, &c, 1);
        json_decref(args);
        if (n > 0) {
            snprintf(why, sizeof why, "the plugin's process sent data nobody asked for before "
                     "%s (a step must be asked before it is answered)", during);
            child_kill(why, "it broke the probe's protocol");
        } else {
            child_gone(during);
        }
        return -1;
    }
    json_t *req = args ? args : json_object();
    json_object_set_new(req, "seq", json_integer(++R.seq));
    json_object_set_new(req, "op", json_string(op));
    int rc = frame_send(R.req, req, blob, blen);
    json_decref(req);
    if (rc != 0) {
        child_gone(during);
        return -1;
    }
    uint64_t deadline = now_ns() + (uint64_t)limit_ms * 1000000ull;
    uint32_t len[2];
    rc = read_until(R.resp, len, sizeof len, deadline);
    if (rc == 0 && (len[0] == 0 || len[0] > MAX_HEADER || len[1] > MAX_REPLY_BLOB)) {
        snprintf(why, sizeof why, "the plugin's process broke the probe's protocol during %s: "
                 "a frame of %u + %u bytes (at most %u + %u)", during, len[0], len[1],
                 MAX_HEADER, MAX_REPLY_BLOB);
        child_kill(why, "it broke the probe's protocol");
        return -1;
    }
    char *h = NULL;
    if (rc == 0) {
        h = malloc((size_t)len[0] + 1);
        a->blob = malloc((size_t)len[1] + 1);
        if (!h || !a->blob)
            die_usage("out of memory reading an answer");
        rc = read_until(R.resp, h, len[0], deadline);
        if (rc == 0)
            rc = read_until(R.resp, a->blob, len[1], deadline);
        a->blen = len[1];
    }
    if (rc == -2) {
        free(h);
        answer_free(a);
        child_kill(late_why, "no answer in time");
        return -2;
    }
    if (rc == -1) {
        free(h);
        answer_free(a);
        child_gone(during);
        return -1;
    }
    json_error_t je;
    a->h = json_loadb(h, len[0], 0, &je);
    free(h);
    if (!a->h)
        snprintf(why, sizeof why, "not JSON (%s)", je.text);
    if (!a->h || answer_check(a, op, R.seq, why, sizeof why) != 0) {
        char msg[700];
        snprintf(msg, sizeof msg, "the plugin's process broke the probe's protocol during %s: %s",
                 during, why);
        answer_free(a);
        child_kill(msg, "it broke the probe's protocol");
        return -1;
    }
    R.answered++;
    answer_news(a, during);
    return 0;
}

/* The last answer is in: the child must end, cleanly, and say nothing more. */
static void child_finish(int judge)
{
    if (R.reaped)
        return;
    close_req();
    uint64_t deadline = now_ns() + ((uint64_t)R.hook_ms + R.call_ms + 1000) * 1000000ull;
    char c;
    size_t extra = 0;
    while (read_until(R.resp, &c, 1, deadline) == 0 && ++extra < 4096)
        ;
    int st;
    int killed = reap(deadline, &st);
    end_json(st, killed, extra ? "it sent data after its last answer" : "it did not exit");
    if (!judge)
        return;
    if (extra)
        failure("the plugin's process sent data nobody asked for after its last answer");
    else if (killed)
        failure("the plugin's process did not exit after its last answer (stage %s) and was "
                "killed", R.stage);
    else if (WIFSIGNALED(st))
        failure("the plugin's process died with signal %d (SIG%s) after its last answer (stage "
                "%s)", WTERMSIG(st), signame(WTERMSIG(st)), R.stage);
    else if (WEXITSTATUS(st) != 0)
        failure("the plugin's process exited with status %d after its last answer (stage %s)",
                WEXITSTATUS(st), R.stage);
}

/* The report as it stands; *pass is its verdict. */
static char *report_compose(int *pass_out)
{
    json_t *den = json_array();
    for (unsigned nr = 0; nr < MAX_SYSCALL; nr++) {
        if (!R.denied[nr])
            continue;
        char name[64];
        json_array_append_new(den, json_pack("{s:s, s:i}", "syscall",
                                             syscall_name(nr, name, sizeof name), "count",
                                             (int)R.denied[nr]));
    }
    if (R.foreign)
        json_array_append_new(den, json_pack("{s:s, s:i}", "syscall", "(another ABI)", "count",
                                             (int)R.foreign));
    int pass = R.first_failure == NULL;
    *pass_out = pass;
    json_t *j = json_pack("{s:i, s:s, s:s, s:s, s:s?, s:O, s:O, s:O, s:O, s:O, s:o, s:O, s:i,"
                          " s:i, s:o}",
                          "probe", 1, "file", R.file ? R.file : "", "sha256", R.sha256,
                          "verdict", pass ? "pass" : "fail", "reason", R.first_failure,
                          "plugin", R.plugin ? R.plugin : json_null(), "steps", R.steps,
                          "tests", R.tests, "cases", R.cases, "child",
                          R.child_end ? R.child_end : json_null(), "denied_syscalls", den,
                          "log", R.log, "passed", R.passed, "failed", R.failed, "ms",
                          ms_json(ms_since(R.t0_ns)));
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    return s;
}

/* Print the report on our stdout and leave: the child is ended first, and
 * an unfinished child fails the report. */
static __attribute__((noreturn)) void report_emit(void)
{
    child_finish(R.first_failure == NULL);
    stage("report");
    int pass = 0;
    char *s = report_compose(&pass);
    if (!s)
        die_usage("out of memory composing the report");
    write_all(R.out_fd, s, strlen(s));
    write_all(R.out_fd, "\n", 1);
    _exit(pass ? 0 : 1);
}

/* ---- The steps ---- */

typedef struct call_result {
    int status;
    double ms;
    json_int_t reply_len;
    const char *reply;           /* relayed, cut at MAX_REPLY_BLOB */
    size_t cut_len;
    json_t *denied;
} call_result;

static int faulted(int status)
{
    return status == A4PS_EFAULT || status == A4PS_EQUARANTINED;
}

/* Add one test to the report.  ok and error say whether it passed. */
static json_t *add_test(const char *name, const char *selector, int ok, const call_result *r,
                        const probe_case *c, const char *match, const char *error)
{
    json_t *t = json_pack("{s:s, s:s, s:b}", "name", name, "selector", selector, "ok", ok);
    if (t && r) {
        json_object_set_new(t, "status", json_integer(r->status));
        json_object_set_new(t, "ms", ms_json(r->ms));
        json_object_set_new(t, "reply", text_json(r->reply ? r->reply : "", r->cut_len,
                                                  REPLY_CUT));
        json_object_set_new(t, "reply_len", json_integer(r->reply_len));
    }
    if (t && c)
        json_object_set_new(t, "expect", c->expect ? text_json(c->expect, c->expect_len,
                                                               REPLY_CUT) : json_null());
    if (t && match)
        json_object_set_new(t, "match", json_string(match));
    if (t)
        json_object_set_new(t, "error", error ? json_string(error) : json_null());
    if (t && r && json_array_size(r->denied))
        json_object_set(t, "denied", r->denied);
    json_array_append(R.tests, t);
    json_decref(t);
    if (ok) {
        R.passed++;
    } else {
        R.failed++;
        failure("%s: %s", name, error ? error : "failed");
    }
    return t;
}

/* One call through the child.  0 answered (*r filled, a holds its
 * memory), or the report is due (timed out: the test is recorded). */
static int call(const char *test, const char *selector, const void *msg, size_t len,
                call_result *r, answer *a)
{
    char during[240], late[320];
    snprintf(during, sizeof during, "stage %s, test %s", R.stage, test);
    snprintf(late, sizeof late, "%s timed out after %u ms", test, R.call_ms);
    memset(r, 0, sizeof *r);
    int rc = ask("call", json_pack("{s:s}", "selector", selector), msg, len, R.call_ms, during,
                 late, a);
    if (rc == -2) {
        json_array_append_new(R.tests, json_pack("{s:s, s:s, s:b, s:n, s:i, s:n, s:s}", "name",
                                                 test, "selector", selector, "ok", 0, "status",
                                                 "ms", (int)R.call_ms, "reply", "error", late));
        R.failed++;
    }
    if (rc)
        return rc;
    r->status = (int)json_integer_value(json_object_get(a->h, "status"));
    r->ms = json_number_value(json_object_get(a->h, "ms"));
    r->reply_len = json_integer_value(json_object_get(a->h, "reply_len"));
    r->reply = a->blob;
    r->cut_len = a->blen;
    r->denied = a->denied;
    return 0;
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
static int contract_test(const char *name, const char *selector, const void *msg, size_t len)
{
    call_result r;
    answer a;
    if (call(name, selector, msg, len, &r, &a) != 0)
        report_emit();
    char error[400] = "";
    if (faulted(r.status)) {
        char q[240];
        quote(q, sizeof q, r.reply ? r.reply : "", r.cut_len);
        snprintf(error, sizeof error, "faulted (status %d): %s", r.status, q);
    }
    add_test(name, selector, !error[0], &r, NULL, NULL, error[0] ? error : NULL);
    answer_free(&a);
    return faulted(r.status);
}

static size_t trimmed_len(const char *s, size_t n)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
        n--;
    return n;
}

/* The reporter judges the case: the child relayed the reply and never saw
 * what was expected. */
static int case_test(size_t idx, const probe_case *c)
{
    char name[120];
    snprintf(name, sizeof name, "case %zu (%s)", idx, c->selector);
    call_result r;
    answer a;
    if (call(name, c->selector, c->input, c->input_len, &r, &a) != 0)
        report_emit();
    const char *got = r.reply ? r.reply : "";
    size_t got_len = r.cut_len;
    char error[700] = "", q[240], qe[240];
    const char *match = NULL;
    quote(q, sizeof q, got, got_len);
    if (r.status != c->status) {
        snprintf(error, sizeof error, "status %d, expected %d; reply %s", r.status, c->status, q);
    } else if (c->expect) {
        if ((size_t)r.reply_len != got_len) {
            snprintf(error, sizeof error, "a reply of %" JSON_INTEGER_FORMAT " bytes, too long "
                     "to compare with the expectation", r.reply_len);
        } else if (got_len == c->expect_len && !memcmp(got, c->expect, c->expect_len)) {
            match = "exact";
        } else {
            size_t x = trimmed_len(got, got_len), y = trimmed_len(c->expect, c->expect_len);
            if (x == y && !memcmp(got, c->expect, x)) {
                match = "trimmed";
            } else {
                quote(qe, sizeof qe, c->expect, c->expect_len);
                snprintf(error, sizeof error, "expected %s, got %s", qe, q);
            }
        }
    }
    json_t *t = add_test(name, c->selector, !error[0], &r, c, match, error[0] ? error : NULL);
    json_object_set_new(t, "case", json_integer((json_int_t)idx));
    json_t *rec = json_array_get(R.cases, idx);
    json_object_set_new(rec, "ran", json_true());
    json_object_set_new(rec, "passed", json_boolean(!error[0]));
    answer_free(&a);
    return faulted(r.status);
}

/* Every case as asked, not yet run: the report lists each whatever happens. */
static void cases_list(const probe_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char in[65], ex[65];
        kernel_sha256(cases[i].input, cases[i].input_len, NULL, in);
        if (cases[i].expect)
            kernel_sha256(cases[i].expect, cases[i].expect_len, NULL, ex);
        json_array_append_new(R.cases,
                              json_pack("{s:I, s:s, s:s, s:s?, s:i, s:b, s:b}", "case",
                                        (json_int_t)i, "selector", cases[i].selector,
                                        "input_sha256", in, "expect_sha256",
                                        cases[i].expect ? ex : NULL, "status", cases[i].status,
                                        "ran", 0, "passed", 0));
    }
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

/* Our stdout and stderr move out of fd 1 and 2 (which become /dev/null),
 * where nothing that writes to "stdout" by habit reaches them. */
static void hide_stdio(void)
{
    R.out_fd = fcntl(1, F_DUPFD_CLOEXEC, 200);
    int e = fcntl(2, F_DUPFD_CLOEXEC, 200);
    if (R.out_fd < 0 || e < 0)
        die_usage("cannot save stdout/stderr: %s", strerror(errno));
    err_fd = e;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
        die_usage("cannot point stdout/stderr at /dev/null: %s", strerror(errno));
    close(null);
    signal(SIGXFSZ, SIG_IGN);    /* a full disk is EFBIG, not our death */
    signal(SIGPIPE, SIG_IGN);    /* a child gone is EPIPE, not our death */
}

/* load, then describe: the plugin as the kernel in the child saw it. */
static json_t *load_and_describe(const probe_opts *o)
{
    char during[64], late[160];
    answer a;
    stage("load");
    /* init and self_test each within hook_ms, plus the ELF checks, the
     * copy and dlopen, and the child's own start on a busy machine. */
    unsigned limit = 2 * o->hook_ms + o->call_ms + LOAD_SLACK_MS;
    snprintf(during, sizeof during, "stage load");
    snprintf(late, sizeof late, "load did not finish within %u ms", limit);
    if (ask("load", json_pack("{s:s}", "path", o->plugin), NULL, 0, limit, during, late, &a))
        report_emit();
    double ms = json_number_value(json_object_get(a.h, "ms"));
    if (!json_is_true(json_object_get(a.h, "ok"))) {
        char *err = strdup(json_string_value(json_object_get(a.h, "error")));
        if (err) {
            one_line(err);
            add_step("load", 0, ms, err, NULL);
            if (strstr(err, ": self_test: "))
                add_step("self_test", 0, -1, strstr(err, "self_test: ") + 11, NULL);
        }
        free(err);
        answer_free(&a);
        report_emit();
    }
    add_step("load", 1, ms, NULL, NULL);
    json_t *self = json_object_get(a.h, "self_test");
    add_step("self_test", 1, -1, NULL,
             json_is_null(self) ? "the descriptor is not in the plugin's image: kernel_load ran "
                                  "self_test if the plugin has one"
             : json_is_true(self) ? "passed, run by the kernel as part of load"
                                  : "the plugin has no self_test");
    json_t *pl = json_pack("{s:O, s:O, s:O}", "name", json_object_get(a.h, "name"), "version",
                           json_object_get(a.h, "version"), "self_test", self);
    answer_free(&a);

    stage("describe");
    limit = o->hook_ms + o->call_ms;
    snprintf(during, sizeof during, "stage describe");
    snprintf(late, sizeof late, "describe did not finish within %u ms", limit);
    if (ask("describe", NULL, NULL, 0, limit, during, late, &a)) {
        json_decref(pl);
        report_emit();
    }
    ms = json_number_value(json_object_get(a.h, "ms"));
    if (!json_is_true(json_object_get(a.h, "ok"))) {
        add_step("describe", 0, ms, json_string_value(json_object_get(a.h, "error")), NULL);
        json_decref(pl);
        answer_free(&a);
        report_emit();
    }
    add_step("describe", 1, ms, NULL, NULL);
    static const char *const keys[] = {"kind", "state_version", "description", "methods"};
    for (size_t i = 0; i < 4; i++)
        json_object_set(pl, keys[i], json_object_get(a.h, keys[i]));
    answer_free(&a);
    R.plugin = pl;
    return pl;
}

/* state, reset, unload: a step whose answer is ok or an error. */
static void simple_step(const char *op, const char *name, const void *blob, size_t blen,
                        unsigned limit)
{
    char during[64], late[160];
    answer a;
    snprintf(during, sizeof during, "stage %s", name);
    snprintf(late, sizeof late, "%s did not finish within %u ms", name, limit);
    if (ask(op, NULL, blob, blen, limit, during, late, &a))
        report_emit();
    int ok = json_is_true(json_object_get(a.h, "ok"));
    if (!ok || strcmp(op, "reset"))
        add_step(name, ok, json_number_value(json_object_get(a.h, "ms")),
                 json_string_value(json_object_get(a.h, "error")), NULL);
    answer_free(&a);
    if (!ok)
        report_emit();
}

int main(int argc, char **argv)
{
    probe_opts o;
    R.t0_ns = now_ns();
    parse_args(argc, argv, &o);
    hide_stdio();
    stage("start");
    R.call_ms = o.call_ms;
    R.hook_ms = o.hook_ms;
    R.steps = json_array();
    R.tests = json_array();
    R.log = json_array();
    R.cases = json_array();
    const char *slash = strrchr(o.plugin, '/');
    R.file = slash ? slash + 1 : o.plugin;

    /* Everything we read is read and checked before the child exists. */
    char err[KERNEL_ERRLEN];
    char *state_buf = NULL;
    size_t state_len = 0, nstate = 0, ncases = 0;
    state_rec *state = NULL;
    probe_case *cases = NULL;
    if (kernel_sha256_file(o.plugin, MAX_FILE_BYTES, R.sha256, err, sizeof err) != 0)
        die_usage("plugin %s", err);
    if (o.state_file &&
        (read_file(o.state_file, MAX_FILE_BYTES, &state_buf, &state_len, err, sizeof err) != 0 ||
         state_parse(o.state_file, state_buf, state_len, &state, &nstate, err, sizeof err) != 0))
        die_usage("%s", err);
    if (o.cases_file && cases_parse(o.cases_file, &cases, &ncases, err, sizeof err) != 0)
        die_usage("%s", err);
    cases_list(cases, ncases);

    /* Undumpable before the fork: the child, same user, may not open
     * /proc/<reporter>/fd/N or /proc/<reporter>/mem. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        die_usage("PR_SET_DUMPABLE: %s", strerror(errno));
    int req[2], resp[2];
    if (pipe2(req, O_CLOEXEC) != 0 || pipe2(resp, O_CLOEXEC) != 0)
        die_usage("pipe: %s", strerror(errno));
    R.child = fork();
    if (R.child < 0)
        die_usage("fork: %s", strerror(errno));
    if (R.child == 0)
        child_main(&o, req[0], resp[1]);
    close(req[0]);
    close(resp[1]);
    R.req = req[1];
    R.resp = resp[0];
    /* The reporter needs no new process from here on: it takes the filter
     * too (without the trap: nothing of the candidate runs here). */
    int keep[] = {R.out_fd, err_fd, R.req, R.resp};
    if (seccomp_apply(0, keep, 4, err, sizeof err) != 0) {
        kill(R.child, SIGKILL);
        die_usage("%s", err);
    }

    json_t *pl = load_and_describe(&o);
    if (nstate) {
        stage("state");
        simple_step("state", "state", state_buf, state_len, o.hook_ms + o.call_ms);
    }

    /* contract: every method with nothing, with text, with noise; an
     * unknown selector.  Only a fault or an overrun fails. */
    stage("contract");
    json_t *sels = json_object_get(pl, "methods");
    const char *kind = json_string_value(json_object_get(pl, "kind"));
    int generator = kind && !strcmp(kind, "generator");
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
    char name[300];
    uint64_t t = now_ns();
    json_array_foreach(sels, i, sj) {
        const char *sel = json_string_value(sj);
        has_generate |= !strcmp(sel, "generate");
        struct { const char *label; const void *msg; size_t len; } in[] = {
            {"empty", "", 0}, {"text", "probe", 5}, {"random-4k", noise, sizeof noise}};
        for (size_t n = 0; n < 3 && !fenced; n++) {
            snprintf(name, sizeof name, "contract %s/%s", sel, in[n].label);
            fenced = contract_test(name, sel, in[n].msg, in[n].len);
        }
    }
    if (!fenced)
        fenced = contract_test("contract unknown-selector", UNKNOWN_SELECTOR, "probe", 5);
    if (generator)
        add_test("kind generator", "generate", has_generate, NULL, NULL, NULL,
                 has_generate ? NULL : "a plugin of kind generator must have a method 'generate'");
    add_step("contract", !fenced, ms_since(t),
             fenced ? "stopped: the plugin faulted and the kernel quarantined it" : NULL, NULL);

    if (ncases && !fenced) {
        stage("cases");
        t = now_ns();
        /* The cases see the state they were written against, not what the
         * contract calls left (an incr called with noise still counts). */
        simple_step("reset", "cases", state_buf, state_len, o.hook_ms + o.call_ms);
        for (size_t c = 0; c < ncases && !fenced; c++)
            fenced = case_test(c, &cases[c]);
        add_step("cases", !fenced, ms_since(t),
                 fenced ? "stopped: the plugin faulted and the kernel quarantined it" : NULL, NULL);
    }

    /* unload: fini and the library's destructors, bounded like a call. */
    stage("unload");
    simple_step("unload", "unload", NULL, 0, o.hook_ms + o.call_ms);
    report_emit();
}
