/* fault.c -- catching a plugin's fault on the thread that hit it.
 *
 * Every plugin call goes through a4ps_guarded_call(), which saves the
 * caller's callee-saved registers, stack pointer and return address in the
 * thread's kthread (indexed by call depth) and tail-jumps into the plugin.
 * The handler below runs on the thread's alternate stack, so even a stack
 * overflow in plugin code is caught; if the thread is inside a plugin call it
 * records the signal and rewrites the interrupted context so that returning
 * from the handler resumes the caller just after its call, with A4PS_EFAULT as
 * the result.  The kernel's sigreturn then restores the signal mask and
 * leaves the alternate stack as for any handled signal -- no longjmp out of a
 * signal handler.  (On machines other than x86-64 the portable fallback is
 * __builtin_setjmp/__builtin_longjmp.)  A fault
 * outside any plugin call is the kernel's own: it goes to the handler that was
 * installed before ours, or to the default action (a core dump), unchanged.
 */
#include "kernel_int.h"

#define A4PS_JB_OFFSET 264   /* offsetof(kthread, jb), checked below */
#define A4PS_KFAULTED_ASM 0x10000dead   /* KFAULTED, checked below */
_Static_assert(KFAULTED == A4PS_KFAULTED_ASM, "asm: KFAULTED");
_Static_assert(offsetof(kthread, jb) == A4PS_JB_OFFSET, "asm: jb offset");

#include <assert.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#define ALTSTACK_SIZE (64 * 1024)

static const int fault_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define NFAULT (sizeof fault_signals / sizeof fault_signals[0])
static struct sigaction previous[NFAULT];
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_rc;

#if defined(__SANITIZE_ADDRESS__)
#define A4PS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define A4PS_ASAN 1
#endif
#endif

const char *fault_signame(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case KFAULT_EXIT: return "exit() from plugin code";
    case KFAULT_QUICK_EXIT: return "quick_exit() from plugin code";
    case KFAULT_EXIT_GROUP: return "exit_group (_exit, _Exit or the raw syscall) from plugin code";
    default: return "signal";
    }
}

void fault_land(kthread *t, void *uc, int sig, int code, void *addr)
{
    int d = t->depth;
    assert(d > 0);
    void **jb = t->jb[d - 1];
    t->fault.sig = sig;
    t->fault.code = code;
    t->fault.addr = addr;
#if defined(__x86_64__)
    greg_t *g = ((ucontext_t *)uc)->uc_mcontext.gregs;
    g[REG_RBX] = (greg_t)jb[0];
    g[REG_RBP] = (greg_t)jb[1];
    g[REG_R12] = (greg_t)jb[2];
    g[REG_R13] = (greg_t)jb[3];
    g[REG_R14] = (greg_t)jb[4];
    g[REG_R15] = (greg_t)jb[5];
    g[REG_RSP] = (greg_t)jb[6];
    g[REG_RIP] = (greg_t)jb[7];
    g[REG_RAX] = (greg_t)KFAULTED;
#else
    (void)uc;
    __builtin_longjmp(jb, 1);
#endif
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    kthread *t = &kt_self;
    if (t->depth > 0) {
        fault_land(t, uc, sig, si ? si->si_code : 0, si ? si->si_addr : NULL);
        return;
    }
    for (size_t i = 0; i < NFAULT; i++) {
        if (fault_signals[i] != sig)
            continue;
        struct sigaction *o = &previous[i];
        if ((o->sa_flags & SA_SIGINFO) && o->sa_sigaction) {
            o->sa_sigaction(sig, si, uc);
            return;
        }
        if (o->sa_handler != SIG_DFL && o->sa_handler != SIG_IGN) {
            o->sa_handler(sig);
            return;
        }
    }
    /* Default action: a synchronous fault re-executes and now kills the
     * process; a raised signal (abort) must be raised again. */
    signal(sig, SIG_DFL);
    if (!si || si->si_code <= 0)
        raise(sig);
}

static void install(void)
{
    for (size_t i = 0; i < NFAULT; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
#if !defined(__x86_64__)
        sa.sa_flags |= SA_NODEFER;   /* we leave by longjmp: keep it unblocked */
#endif
        sigemptyset(&sa.sa_mask);
        if (sigaction(fault_signals[i], &sa, &previous[i]) != 0) {
            install_rc = -1;
            return;
        }
    }
}

int fault_install(void)
{
    pthread_once(&install_once, install);
    return install_rc;
}

int fault_thread_init(kthread *t)
{
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return 0;                /* the thread has one already */
    void *mem = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED)
        return -1;
    stack_t ss = {.ss_sp = mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(mem, ALTSTACK_SIZE);
        return -1;
    }
    t->altstack = mem;
    return 0;
}

void fault_thread_fini(kthread *t)
{
    if (!t->altstack)
        return;
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    munmap(t->altstack, ALTSTACK_SIZE);
    t->altstack = NULL;
}

/* After a jump out of the handler: the frames between the recovery point and
 * the fault are gone; tell ASan so their stack poisoning does not linger. */
void fault_landed(void)
{
#ifdef A4PS_ASAN
    extern void __asan_handle_no_return(void);
    __asan_handle_no_return();
#endif
}

/* a4ps_guarded_call: see kernel_int.h.  On x86-64, in assembly so that the
 * hot path costs two pushes and eight stores: it records rbx, rbp, r12-r15,
 * the stack pointer and the landing address in t->jb[d], calls fn, and at the
 * landing (reached by return or by the fault handler) restores depth and the
 * slot.  The C caller keeps nothing in registers across it. */
#if defined(__x86_64__)
#define A4PS_STR_(x) #x
#define A4PS_STR(x) A4PS_STR_(x)
/* The body of both entry points; ON_FAULT is what the landing does with a
 * faulted call (return KFAULTED, or tail-call a4ps_method_faulted(t, d)). */
#define A4PS_GUARD_ASM(NAME, ON_FAULT)                                           \
    ".text\n"                                                                  \
    ".globl " NAME "\n"                                                        \
    ".hidden " NAME "\n"                                                       \
    ".type " NAME ", @function\n"                                              \
    NAME ":\n"                                                                 \
    "  .cfi_startproc\n"                                                       \
    "  pushq %rdi\n"                                                           \
    "  .cfi_adjust_cfa_offset 8\n"                                             \
    "  pushq %rsi\n"                                                           \
    "  .cfi_adjust_cfa_offset 8\n"                                             \
    "  subq $8, %rsp\n"                                                        \
    "  .cfi_adjust_cfa_offset 8\n"                                             \
    "  movq %rsi, %rax\n"                                                      \
    "  shlq $6, %rax\n"                                                        \
    "  leaq " A4PS_STR(A4PS_JB_OFFSET) "(%rdi,%rax), %rax\n"                   \
    "  movq %rbx, 0(%rax)\n"                                                   \
    "  movq %rbp, 8(%rax)\n"                                                   \
    "  movq %r12, 16(%rax)\n"                                                  \
    "  movq %r13, 24(%rax)\n"                                                  \
    "  movq %r14, 32(%rax)\n"                                                  \
    "  movq %r15, 40(%rax)\n"                                                  \
    "  movq %rsp, 48(%rax)\n"                                                  \
    "  leaq 1f(%rip), %r10\n"                                                  \
    "  movq %r10, 56(%rax)\n"                                                  \
    "  leal 1(%rsi), %r10d\n"                                                  \
    "  movl %r10d, 0(%rdi)\n"                                                  \
    "  movq %rdx, %rax\n"                                                      \
    "  movq %rcx, %rdi\n"                                                      \
    "  movq %r8, %rsi\n"                                                       \
    "  movq %r9, %rdx\n"                                                       \
    "  call *%rax\n"                                                           \
    "  movslq %eax, %rax\n"                                                    \
    "1:\n"                                                                     \
    "  addq $8, %rsp\n"                                                        \
    "  .cfi_adjust_cfa_offset -8\n"                                            \
    "  popq %rsi\n"                                                            \
    "  .cfi_adjust_cfa_offset -8\n"                                            \
    "  popq %rdi\n"                                                            \
    "  .cfi_adjust_cfa_offset -8\n"                                            \
    "  movl %esi, 0(%rdi)\n"                                                   \
    "  movq $0, 8(%rdi,%rsi,8)\n"                                              \
    ON_FAULT                                                                   \
    "  ret\n"                                                                  \
    "  .cfi_endproc\n"                                                         \
    ".size " NAME ", .-" NAME "\n"

/* a4ps_guarded_call: see kernel_int.h.  In assembly so that the hot path
 * costs two pushes and eight stores: it records rbx, rbp, r12-r15, the stack
 * pointer and the landing address in t->jb[d], calls fn, and at the landing
 * (reached by return or by the fault handler) restores depth and slot.  The
 * C caller keeps nothing in registers across it. */
__asm__(A4PS_GUARD_ASM("a4ps_guarded_call", ""));
/* a4ps_method_call: the same; a faulted call tail-calls a4ps_method_faulted,
 * so the dispatcher can tail-call this and keep no frame of its own. */
__asm__(A4PS_GUARD_ASM("a4ps_method_call",
                       "  movabsq $" A4PS_STR(A4PS_KFAULTED_ASM) ", %rcx\n"
                       "  cmpq %rcx, %rax\n"
                       "  je a4ps_method_faulted\n"));
#else
__attribute__((noinline)) long a4ps_guarded_call(kthread *t, long d, const void *fn, void *a0,
                                                 const void *a1, size_t a2)
{
    long r;
    t->depth = (int)d + 1;
    if (__builtin_setjmp(t->jb[d])) {
        r = KFAULTED;
    } else {
        int (*f)(void *, const void *, size_t) = (int (*)(void *, const void *, size_t))fn;
        r = f(a0, a1, a2);
    }
    t->depth = (int)d;
    atomic_store_explicit(&t->slot[d], NULL, memory_order_release);
    return r;
}

int a4ps_method_call(kthread *t, long d, const void *fn, void *a0, const void *a1, size_t a2)
{
    long r = a4ps_guarded_call(t, d, fn, a0, a1, a2);
    return r == KFAULTED ? a4ps_method_faulted(t, d) : (int)r;
}
#endif

typedef struct thunk_call {
    void (*thunk)(void *);
    void *arg;
} thunk_call;

static int run_thunk(void *arg, const void *unused, size_t unused2)
{
    thunk_call *tc = arg;
    tc->thunk(tc->arg);
    return 0;
}

/* The recovery point for hooks, the entry and slow paths. */
int fault_guard(kthread *t, kfault *f, void (*thunk)(void *), void *arg)
{
    int d = t->depth;
    if (d >= KERNEL_MAX_DEPTH) {
        f->sig = SIGSEGV;        /* treat runaway nesting as the fault it would be */
        f->code = 0;
        f->addr = NULL;
        return f->sig;
    }
    thunk_call tc = {thunk, arg};
    kproto *held = atomic_load_explicit(&t->slot[d], memory_order_relaxed);
    long r = a4ps_guarded_call(t, d, (const void *)run_thunk, &tc, NULL, 0);
    atomic_store_explicit(&t->slot[d], held, memory_order_relaxed);
    if (r == KFAULTED) {
        fault_landed();
        *f = t->fault;
        t->fault.sig = 0;
        return f->sig;
    }
    return 0;
}
