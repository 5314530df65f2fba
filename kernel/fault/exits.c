/* exits.c -- a plugin that tries to end the process faults instead.
 *
 * kernel_contain_exits() makes exit(), quick_exit(), _exit(), _Exit() and
 * syscall(SYS_exit_group) reached from plugin code (a thread whose kthread
 * depth is > 0) a fault of that plugin: the call it made returns with
 * KFAULTED, exactly as after a SIGSEGV (fault.c), and the version is
 * quarantined by whoever made the call.  Two layers:
 *
 *   1. exit() and quick_exit() run glibc's __run_exit_handlers (glibc 2.36,
 *      stdlib/exit.c): TLS destructors of the calling thread, then the
 *      handlers of the list, last registered first, with the list's lock
 *      released around each call, then (exit only) _IO_cleanup and _exit.
 *      Our on_exit / __cxa_at_quick_exit handler, registered when
 *      containment is turned on, sees the status; on a thread inside a plugin
 *      call it registers itself again (the entry just run is used up) and
 *      jumps back to the call's landing (a4ps_fault_resume, below), leaving
 *      glibc's frames behind with no lock held.  Handlers registered after
 *      ours run first: the plugin's own (and its libraries'), which is its
 *      business.  Assumption: the program registers none of its own after
 *      turning containment on (a4psd turns it on before it creates the
 *      kernel), so no daemon clean-up runs on a plugin's exit().  Libraries
 *      that register lazily, at first use, are used first (libcrypto, the
 *      kernel's SHA-256); one the program starts using later would break
 *      the assumption -- its handler would run on a plugin's exit().
 *
 *   2. Everything else ends in the exit_group system call.  A seccomp filter
 *      (installed once, on every thread: TSYNC) traps exit_group made from
 *      the C library's code -- _exit, _Exit, syscall(), and the end of exit()
 *      and quick_exit() -- with SIGSYS.  Trapping by instruction pointer in
 *      libc's text, rather than everything but our own instruction, keeps
 *      the filter harmless to programs the daemon execs (they inherit it; their
 *      libc lies elsewhere) and to the sanitizers' runtime, whose exits are
 *      their own syscall instructions.  The handler: inside a plugin call, it
 *      records the fault and rewrites the context to resume the call's
 *      landing, as fault.c does; otherwise (the process's own exit, or a
 *      forked child's) it performs the exit with the status the caller gave,
 *      through a4ps_exit_group's own syscall instruction, which lies outside
 *      libc's text and so passes the filter.
 *
 * Not caught: a plugin issuing the syscall instruction itself (its own
 * text), exit in a constructor (dlopen runs it outside any plugin call), and
 * SYS_exit, which ends one thread: trapping it would put a signal handler
 * into every thread's last moments (glibc's start_thread exits after freeing
 * what a handler could touch).  pthread_exit is refused at load instead
 * (elfcheck.c).  x86-64 only; elsewhere kernel_contain_exits says so. */
#include "kernel_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1            /* si_code of a seccomp trap (asm-generic/siginfo.h) */
#endif
#endif

/* glibc's: register a handler called as fn(arg, status) by quick_exit. */
extern int __cxa_at_quick_exit(void (*fn)(void *), void *arg);

static pthread_mutex_t exits_mx = PTHREAD_MUTEX_INITIALIZER;
static bool handlers_on;
static pid_t exits_pid;               /* the process that installed it */
#if defined(__x86_64__)
static bool filter_on;
static struct sigaction previous_sigsys;
static uintptr_t trap_lo, trap_hi;    /* libc's text: where exit_group traps */
#endif

#if defined(__x86_64__)
#define A4PS_STR_(x) #x
#define A4PS_STR(x) A4PS_STR_(x)
/* a4ps_fault_resume(jb): continue at the landing recorded in jb (see
 * a4ps_guarded_call in fault.c) with KFAULTED as the call's result, from an
 * ordinary function deeper on the same stack. */
__attribute__((noreturn)) void a4ps_fault_resume(void **jb);
__asm__(".text\n"
        ".globl a4ps_fault_resume\n"
        ".hidden a4ps_fault_resume\n"
        ".type a4ps_fault_resume, @function\n"
        "a4ps_fault_resume:\n"
        "  movq 0(%rdi), %rbx\n"
        "  movq 8(%rdi), %rbp\n"
        "  movq 16(%rdi), %r12\n"
        "  movq 24(%rdi), %r13\n"
        "  movq 32(%rdi), %r14\n"
        "  movq 40(%rdi), %r15\n"
        "  movq 48(%rdi), %rsp\n"
        "  movabsq $" A4PS_STR(0x10000dead) ", %rax\n"
        "  jmpq *56(%rdi)\n"
        ".size a4ps_fault_resume, .-a4ps_fault_resume\n");
_Static_assert(KFAULTED == 0x10000dead, "asm: KFAULTED");

/* a4ps_exit_group(status): the kernel's own exit, through its own syscall
 * instruction, which the filter lets through. */
__attribute__((noreturn)) void a4ps_exit_group(int status);
__asm__(".text\n"
        ".globl a4ps_exit_group\n"
        ".hidden a4ps_exit_group\n"
        ".type a4ps_exit_group, @function\n"
        "a4ps_exit_group:\n"
        "  movl $" A4PS_STR(__NR_exit_group) ", %eax\n"
        "  syscall\n"
        "  hlt\n"
        ".size a4ps_exit_group, .-a4ps_exit_group\n");

/* The landing tells ASan of the frames left behind (fault_landed). */
static void resume(kthread *t, int d)
{
    a4ps_fault_resume(t->jb[d - 1]);
}
#else
static void resume(kthread *t, int d)
{
    __builtin_longjmp(t->jb[d - 1], 1);
}
#endif

static void on_exit_handler(int status, void *arg);
static void on_quick_exit_handler(void *arg, int status);

static int arm_exit(void)
{
    return on_exit(on_exit_handler, NULL);
}

static int arm_quick_exit(void)
{
    /* glibc calls a quick_exit handler as fn(arg, status) (ef_cxa). */
    return __cxa_at_quick_exit((void (*)(void *))(void (*)(void))on_quick_exit_handler, NULL);
}

/* Record what the plugin did on its thread and go back to its call. */
static void plugin_exited(kthread *t, int d, int kind, int status, void *where)
{
    t->fault.sig = kind;
    t->fault.code = status;
    t->fault.addr = where;
    resume(t, d);
}

/* A forked child (a plugin that forks) has a copy of its parent's kthread,
 * but no caller to go back to: its exit is its own. */
static bool forked_child(void)
{
    return (pid_t)syscall(SYS_getpid) != exits_pid;
}

static void on_exit_handler(int status, void *arg)
{
    (void)arg;
    kthread *t = &kt_self;
    int d = t->depth;
    if (d <= 0 || forked_child())
        return;                  /* the program's own exit: let it go on */
    /* Our entry is used up; without it the next exit() would end us.  If
     * this fails, the seccomp trap still catches that exit's end. */
    arm_exit();
    plugin_exited(t, d, KFAULT_EXIT, status, __builtin_return_address(0));
}

static void on_quick_exit_handler(void *arg, int status)
{
    (void)arg;
    kthread *t = &kt_self;
    int d = t->depth;
    if (d <= 0 || forked_child())
        return;
    arm_quick_exit();
    plugin_exited(t, d, KFAULT_QUICK_EXIT, status, __builtin_return_address(0));
}

#if defined(__x86_64__)
static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    int nr = si ? si->si_syscall & ~(int)__X32_SYSCALL_BIT : -1;
    if (!si || si->si_code != SYS_SECCOMP || nr != __NR_exit_group) {
        /* Not our trap (another filter's): whoever was there before. */
        if ((previous_sigsys.sa_flags & SA_SIGINFO) && previous_sigsys.sa_sigaction) {
            previous_sigsys.sa_sigaction(sig, si, ucv);
            return;
        }
        if (previous_sigsys.sa_handler != SIG_DFL && previous_sigsys.sa_handler != SIG_IGN) {
            previous_sigsys.sa_handler(sig);
            return;
        }
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    int status = (int)g[REG_RDI];
    /* posix_spawn's child before its exec, a plugin's fork: not our calls. */
    if (forked_child())
        a4ps_exit_group(status);
    kthread *t = &kt_self;
    int d = t->depth;
    if (d <= 0)
        a4ps_exit_group(status);
    fault_land(t, ucv, KFAULT_EXIT_GROUP, status, si->si_call_addr);
}

typedef struct text_span {
    uintptr_t addr;              /* an address inside the object */
    uintptr_t lo, hi;            /* its executable segments, [lo, hi) */
} text_span;

static int find_span(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    text_span *s = arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    bool inside = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        if (a < lo)
            lo = a;
        if (b > hi)
            hi = b;
        if (s->addr >= a && s->addr < b)
            inside = true;
    }
    if (!inside)
        return 0;
    s->lo = lo;
    s->hi = hi;
    return 1;
}

/* The executable span of the C library, found by its own _exit (not a
 * sanitizer's interceptor of that name: looked up in libc itself). */
static int libc_text(uintptr_t *lo, uintptr_t *hi, char *err, size_t errlen)
{
    void *h = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    void *ex = h ? dlsym(h, "_exit") : NULL, *sc = h ? dlsym(h, "syscall") : NULL;
    if (h)
        dlclose(h);
    if (!ex || !sc) {
        snprintf(err, errlen, "exit containment: libc.so.6 or its _exit/syscall not found "
                 "(not glibc?)");
        return -1;
    }
    text_span s = {.addr = (uintptr_t)ex};
    if (!dl_iterate_phdr(find_span, &s)) {
        snprintf(err, errlen, "exit containment: no executable segment holds libc's _exit");
        return -1;
    }
    if ((uintptr_t)sc < s.lo || (uintptr_t)sc >= s.hi) {
        snprintf(err, errlen, "exit containment: libc's syscall() lies outside its text");
        return -1;
    }
    uintptr_t own = (uintptr_t)a4ps_exit_group;
    if (own >= s.lo && own < s.hi) {
        snprintf(err, errlen, "exit containment: the kernel is linked into libc's text?");
        return -1;
    }
    *lo = s.lo;
    *hi = s.hi;
    return 0;
}

/* A filter that traps exit_group (native and x32 numbers) made from an
 * instruction in [lo, hi) and allows everything else.  seccomp_data's
 * instruction pointer is 64 bits, compared here as (high, low) words. */
static int install_filter(uintptr_t lo, uintptr_t hi, char *err, size_t errlen)
{
    const uint32_t LH = (uint32_t)((uint64_t)lo >> 32), LL = (uint32_t)lo;
    const uint32_t HH = (uint32_t)((uint64_t)hi >> 32), HL = (uint32_t)hi;
    enum { IP_LO = offsetof(struct seccomp_data, instruction_pointer),
           IP_HI = offsetof(struct seccomp_data, instruction_pointer) + 4 };
    /* Jump offsets are relative to the next instruction; TRAP is 15 and
     * ALLOW 16. */
#define TO(from, to) ((to) - (from) - 1)
    struct sock_filter f[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, TO(1, 16)),
        /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, TO(3, 5), 0),
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group | __X32_SYSCALL_BIT,
                         0, TO(4, 16)),
        /* ip >= lo? */
        /* 5 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, IP_HI),
        /* 6 */ BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, LH, TO(6, 10), 0),
        /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, LH, 0, TO(7, 16)),
        /* 8 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, IP_LO),
        /* 9 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, LL, 0, TO(9, 16)),
        /* ip < hi? */
        /* 10 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, IP_HI),
        /* 11 */ BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, HH, TO(11, 16), 0),
        /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, HH, 0, TO(12, 15)),
        /* 13 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, IP_LO),
        /* 14 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, HL, TO(14, 16), 0),
        /* 15 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        /* 16 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
#undef TO
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(err, errlen, "exit containment: prctl(PR_SET_NO_NEW_PRIVS): %s",
                 strerror(errno));
        return -1;
    }
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (rc != 0) {
        if (rc > 0)
            snprintf(err, errlen, "exit containment: seccomp TSYNC: thread %ld cannot take "
                     "the filter", rc);
        else
            snprintf(err, errlen, "exit containment: seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): "
                     "%s (this kernel lacks seccomp filters or TSYNC)", strerror(errno));
        return -1;
    }
    return 0;
}
#endif

int kernel_contain_exits(char *what, size_t whatlen)
{
    char err[KERNEL_ERRLEN];
    int rc = A4PS_OK;
    pthread_mutex_lock(&exits_mx);
    if (!handlers_on) {
        exits_pid = getpid();
        /* libcrypto registers its clean-up (OPENSSL_cleanup) with atexit at
         * its first use: make that use now, so its handler runs after ours,
         * not before -- a plugin's exit() must not tear down the kernel's
         * SHA-256 under it. */
        kernel_sha256("", 0, NULL, NULL);
        if (arm_exit() != 0 || arm_quick_exit() != 0) {
            snprintf(what, whatlen, "exit containment: cannot register exit handlers");
            pthread_mutex_unlock(&exits_mx);
            return A4PS_ENOMEM;
        }
        handlers_on = true;
    }
#if defined(__x86_64__)
    if (!filter_on) {
        uintptr_t lo = 0, hi = 0;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (libc_text(&lo, &hi, err, sizeof err) != 0) {
            rc = A4PS_ENOSYS;
        } else if (sigaction(SIGSYS, &sa, &previous_sigsys) != 0) {
            snprintf(err, sizeof err, "exit containment: sigaction(SIGSYS): %s", strerror(errno));
            rc = A4PS_ERROR;
        } else if (install_filter(lo, hi, err, sizeof err) != 0) {
            sigaction(SIGSYS, &previous_sigsys, NULL);
            rc = A4PS_ENOSYS;
        } else {
            filter_on = true;
            trap_lo = lo;
            trap_hi = hi;
        }
    }
    if (rc == A4PS_OK)
        snprintf(what, whatlen, "exit() and quick_exit() caught by exit handlers; exit_group "
                 "from libc's text (%#lx-%#lx) trapped by a seccomp filter on every thread",
                 (unsigned long)trap_lo, (unsigned long)trap_hi);
    else
        snprintf(what, whatlen, "%s; only exit() and quick_exit() are contained: _exit, _Exit "
                 "and exit_group from plugin code still end the process", err);
#else
    rc = A4PS_ENOSYS;
    snprintf(what, whatlen, "exit containment: no seccomp trap on this architecture (x86-64 "
             "only); only exit() and quick_exit() are contained: _exit, _Exit and exit_group "
             "from plugin code still end the process");
    (void)err;
#endif
    pthread_mutex_unlock(&exits_mx);
    return rc;
}
