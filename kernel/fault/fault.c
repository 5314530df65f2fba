/* fault.c -- catching a plugin's fault on the thread that hit it.
 *
 * Every plugin call runs under a recovery point (a kframe, set with
 * __builtin_setjmp by the dispatcher or the hook runner) pushed on the
 * calling thread's kthread.  The handler below runs on the thread's
 * alternate stack, so even a stack overflow in plugin code is caught; if the
 * thread is inside a plugin call it records the signal and jumps back to the
 * innermost recovery point, where the call returns A4PS_EFAULT.  A fault
 * outside any plugin call is the kernel's own: it goes to the handler that was
 * installed before ours, or to the default action (a core dump), unchanged.
 *
 * SA_NODEFER keeps the signal unblocked after we jump out of the handler, so
 * the next fault on this thread is caught too. */
#include "kernel_int.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
    default: return "signal";
    }
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    kthread *t = &kt_self;
    kframe *f = t->frame;
    if (f) {
        f->sig = sig;
        f->code = si ? si->si_code : 0;
        f->addr = si ? si->si_addr : NULL;
        t->frame = f->prev;
        __builtin_longjmp(f->jb, 1);
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
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
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

/* The general recovery point, for hooks and slow paths; the dispatcher
 * inlines its own for methods. */
__attribute__((noinline)) int fault_guard(kthread *t, kframe *f,
                                          void (*thunk)(void *), void *arg)
{
    f->prev = t->frame;
    f->sig = 0;
    if (__builtin_setjmp(f->jb)) {
        t->frame = f->prev;
        fault_landed();
        return f->sig;
    }
    t->frame = f;
    thunk(arg);
    t->frame = f->prev;
    return 0;
}
