/* dispatch.c -- send(proto, selector, payload): the hot path.
 *
 * A send on a pre-resolved handle costs: announce the proto in this thread's
 * in-flight slot, load the proto's behaviour (RCU), index its table by the
 * interned selector id, set a recovery point, call.  No lock, no atomic
 * read-modify-write, no allocation.
 *
 * Everything unusual is folded into one test: a behaviour whose nsel is 0 (or
 * whose table lacks the selector) sends the call to dispatch_slow(), which
 * tells apart the migration gate (park and retry), a destroyed proto, a
 * quarantined version and a plain doesNotUnderstand.
 *
 * The in-flight slot is how a state-migrating swap knows when the calls to
 * one proto have drained: the swapper publishes the gate, runs membarrier()
 * (which orders our slot store before our behaviour load, with no fence on
 * this side) and waits until no thread's slot names the proto. */
#include "kernel_int.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KRETRY 1

__thread kthread kt_self;

int reply_set(kernel_reply *r, const void *data, size_t len, bool append)
{
    if (!r)
        return A4PS_OK;
    size_t base = append ? r->len : 0;
    if (len > ((size_t)1 << 30) || base + len + 1 < base)
        return A4PS_ERANGE;
    if (base + len + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 64;
        while (cap < base + len + 1)
            cap *= 2;
        /* The reply is the caller's (or the kernel's): not the bill of the
         * plugin call that fills it. */
        acct_mark m = acct_hide_begin(&kt_self);
        char *nd = realloc(r->data, cap);
        acct_hide_end(&kt_self, m);
        if (!nd)
            return A4PS_ENOMEM;
        r->data = nd;
        r->cap = cap;
    }
    if (len)
        memcpy(r->data + base, data, len);
    r->len = base + len;
    r->data[r->len] = 0;
    return A4PS_OK;
}

int reply_printf(kernel_reply *r, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return A4PS_EINVAL;
    return reply_set(r, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, false);
}

void kernel_reply_free(kernel_reply *r)
{
    if (!r)
        return;
    free(r->data);
    r->data = NULL;
    r->len = r->cap = 0;
}

static __attribute__((noinline, cold)) int too_deep(kproto *p, kernel_reply *reply)
{
    reply_printf(reply, "sends nested deeper than %d (calling proto '%s')",
                 KERNEL_MAX_DEPTH, p->name);
    return A4PS_ELOOP;
}

static const char *sel_name_of(kbeh *b, uint32_t sel, const char *given)
{
    if (given)
        return given;
    for (uint32_t i = 0; i < b->nmethods; i++)
        if (b->method_sel[i] == sel)
            return b->d.methods[i].selector;
    return "?";
}

/* A plugin faulted in a call on p: reply with what happened and fence the
 * version off (quarantine rolls back every proto that runs it). */
static __attribute__((noinline, cold)) void
fault_report(kernel *k, kproto *p, kbeh *b, const char *what, const kfault *f,
             kernel_reply *reply)
{
    char reason[320];
    snprintf(reason, sizeof reason,
             "%s (code %d, address %p) in %s of plugin %s %s, called on proto '%s'",
             fault_signame(f->sig), f->code, f->addr, what, b->ver->name,
             b->ver->version, p->name);
    atomic_fetch_add(&k->stats.faults, 1);
    reply_printf(reply, "%s; version quarantined", reason);
    swap_quarantine(k, b, reason);
}

typedef struct dnu_call {
    kctx *c;
    kbeh *b;
    const char *selector;
    const void *msg;
    size_t len;
    int rc;
} dnu_call;

static void dnu_thunk(void *arg)
{
    dnu_call *dc = arg;
    dc->rc = dc->b->d.does_not_understand(&dc->c->pub, dc->selector, dc->msg, dc->len);
}

static __attribute__((noinline)) int dispatch_slow(kernel *k, kthread *t, int d, kproto *p, kdisp *disp,
                         uint32_t sel, const char *selector, const void *msg,
                         size_t len, kernel_reply *reply)
{
    if (disp->flags & KDISP_GATE) {
        /* Step out of the proto so the migration can drain, then wait. */
        atomic_store_explicit(&t->slot[d], NULL, memory_order_release);
        pthread_mutex_lock(&p->gate_lock);
        while (rcu_dereference(p->dispatch) == k->gate)
            pthread_cond_wait(&p->gate_cv, &p->gate_lock);
        pthread_mutex_unlock(&p->gate_lock);
        return KRETRY;
    }
    if ((disp->flags & KDISP_TOMB) || atomic_load(&p->dead)) {
        reply_printf(reply, "proto '%s' was destroyed", p->name);
        return A4PS_ENOENT;
    }
    kbeh *b = disp->beh;
    const char *name = sel_name_of(b, sel, selector);
    if (b->quarantined) {
        reply_printf(reply,
                     "proto '%s': plugin %s %s is quarantined (%s) and the proto "
                     "has no earlier version to roll back to",
                     p->name, b->ver->name, b->ver->version, b->ver->reason);
        return A4PS_EQUARANTINED;
    }
    if (b->d.does_not_understand) {
        kctx c = {.pub = {.api = k->api}, .k = k, .proto = p, .beh = b, .reply = reply};
        dnu_call dc = {.c = &c, .b = b, .selector = name, .msg = msg, .len = len};
        kfault f;
        if (reply)
            reply->len = 0;
        int sig = fault_guard(t, &f, dnu_thunk, &dc);
        if (sig) {
            atomic_store_explicit(&t->slot[d], NULL, memory_order_release);
            fault_report(k, p, b, "does_not_understand", &f, reply);
            return A4PS_EFAULT;
        }
        if (dc.rc != A4PS_ENOSYS)
            return dc.rc;
    }
    atomic_fetch_add(&k->stats.not_understood, 1);
    reply_printf(reply, "proto '%s' (plugin %s %s) does not understand '%s'",
                 p->name, b->ver->name, b->ver->version, name);
    kernel_emitf(k, "message_not_understood",
                 "{s:s, s:s, s:s, s:s}", "proto", p->name, "selector", name,
                 "plugin", b->ver->name, "version", b->ver->version);
    return A4PS_ENOSYS;
}

/* A method faulted: the handler resumed its call's landing, which comes
 * here with the call's depth; its context is still t->ctx[d]. */
__attribute__((cold)) int a4ps_method_faulted(kthread *t, long d)
{
    kctx *c = &t->ctx[d];
    char what[96];
    snprintf(what, sizeof what, "method '%s'", sel_name_of(c->beh, c->sel, NULL));
    fault_landed();
    kfault f = t->fault;
    t->fault.sig = 0;
    fault_report(c->k, c->proto, c->beh, what, &f, c->reply);
    return A4PS_EFAULT;
}

static int dispatch_retry(kernel *k, kproto *p, kdisp *disp, uint32_t sel,
                          const char *selector, const void *msg, size_t len,
                          kernel_reply *reply);

/* A snapshot is collecting state: an outermost send steps out and waits
 * until it is done (image/snapshot.c), then starts again. */
static pthread_mutex_t freeze_mx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t freeze_cv = PTHREAD_COND_INITIALIZER;

static __attribute__((noinline, cold)) int dispatch_frozen(kernel *k, kproto *p, uint32_t sel,
                                                           const char *selector,
                                                           const void *msg, size_t len,
                                                           kernel_reply *reply)
{
    kthread *t = &kt_self;
    atomic_store_explicit(&t->slot[0], NULL, memory_order_release);
    pthread_mutex_lock(&freeze_mx);
    while (__atomic_load_n(&t->frozen, __ATOMIC_ACQUIRE))
        pthread_cond_wait(&freeze_cv, &freeze_mx);
    pthread_mutex_unlock(&freeze_mx);
    return dispatch_send(k, p, sel, selector, msg, len, reply);
}

/* GCC would clone the counted path with t fixed to &kt_self, and reload it
 * through __tls_get_addr there; clang does not clone that way. */
#if defined(__GNUC__) && !defined(__clang__)
#define A4PS_NOCLONE __attribute__((noclone))
#else
#define A4PS_NOCLONE
#endif

/* This thread's allocator counters, asked once (per callback: a test may
 * run kernels with different ones on one thread).  0, or -1: unaccounted. */
static __attribute__((noinline, cold)) int acct_attach(kernel *k, kthread *t)
{
    const uint64_t *a = NULL, *f = NULL;
    if (k->acct(&a, &f) != 0 || !a || !f)
        return -1;
    t->acct_fn = k->acct;
    t->acct_alloc = a;
    t->acct_freed = f;
    return 0;
}

/* A method call with its allocations charged to the version that runs it:
 * the allocator's counters of this thread read before and after (two loads
 * each), less what calls nested inside it were charged already, added to
 * this thread's slot of the version's usage.  The slot's address is worked
 * out before the call, so its loads overlap the call instead of following it.
 * Faulted calls come back here too (a4ps_method_faulted returns through the
 * landing), with what the quarantine itself allocated in their bill. */
static __attribute__((noinline)) A4PS_NOCLONE int dispatch_counted(kthread *t, kernel *k,
                                                               kusage_slot *usage,
                                                               a4ps_method_fn fn,
                                                               const void *msg, size_t len)
{
    int d = t->depth;
    kctx *c = &t->ctx[d];
    if (unlikely(t->acct_fn != k->acct) && acct_attach(k, t) != 0)
        return a4ps_method_call(t, d, (const void *)fn, &c->pub, msg, len);
    int slot = t->acct_slot;
    kusage_slot *s = &usage[slot];
    const uint64_t *ap = t->acct_alloc, *fp = t->acct_freed;
    uint64_t a0 = *ap, f0 = *fp;
    uint64_t ia0 = t->acct_inner_alloc, if0 = t->acct_inner_freed;
    int rc = a4ps_method_call(t, d, (const void *)fn, &c->pub, msg, len);
    uint64_t a = *ap - a0, f = *fp - f0;
    uint64_t own_a = a - (t->acct_inner_alloc - ia0), own_f = f - (t->acct_inner_freed - if0);
    t->acct_inner_alloc = ia0 + a;
    t->acct_inner_freed = if0 + f;
    if (likely(slot != 0)) {
        /* This thread's own slot: a plain add, seen whole by readers. */
        atomic_store_explicit(&s->calls,
                              atomic_load_explicit(&s->calls, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        if (own_a | own_f) {
            atomic_store_explicit(&s->allocated,
                                  atomic_load_explicit(&s->allocated, memory_order_relaxed) +
                                      own_a, memory_order_relaxed);
            atomic_store_explicit(&s->freed,
                                  atomic_load_explicit(&s->freed, memory_order_relaxed) + own_f,
                                  memory_order_relaxed);
        }
    } else {
        atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->allocated, own_a, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->freed, own_f, memory_order_relaxed);
    }
    return rc;
}

kusage_slot *kusage_new(void)
{
    kusage_slot *u = aligned_alloc(_Alignof(kusage_slot), KUSAGE_SLOTS * sizeof *u);
    if (u)
        memset(u, 0, KUSAGE_SLOTS * sizeof *u);
    return u;
}

/* The hot path, inlined into its callers.  Precondition: this thread is in
 * an RCU read-side section (a worker, or a casual thread that went online in
 * send_enter).
 *
 * The call's context lives in the thread record and a4ps_method_call
 * restores depth and slot itself, so this ends in a tail call: no frame, no
 * saved registers. */
static inline __attribute__((always_inline)) int
dispatch_core(kernel *k, kproto *p, uint32_t sel, const char *selector, const void *msg,
              size_t len, kernel_reply *reply)
{
    kthread *t = &kt_self;
    int d = t->depth;
    if (unlikely(d >= KERNEL_MAX_DEPTH))
        return too_deep(p, reply);
    atomic_store_explicit(&t->slot[d], p, memory_order_relaxed);
    cmm_barrier();
    /* t->frozen shares the cache line of depth, already loaded.  This check
     * costs about 0.9 ns a send (scripts/bench dispatch, measured with and
     * without it): the price of snapshots that never cut a message. */
    /* One branch, not two: & rather than &&. */
    if (unlikely((t->frozen != 0) & (d == 0)))
        return dispatch_frozen(k, p, sel, selector, msg, len, reply);
    kdisp *disp = rcu_dereference(p->dispatch);
    uint32_t n = atomic_load_explicit(&disp->nsel, memory_order_relaxed);
    a4ps_method_fn fn;
    if (unlikely(sel >= n || !(fn = disp->fn[sel])))
        return dispatch_retry(k, p, disp, sel, selector, msg, len, reply);
    kctx *c = &t->ctx[d];
    c->pub.api = k->api;
    c->k = k;
    c->proto = p;
    c->state = NULL;
    c->beh = disp->beh;
    c->reply = reply;
    c->flags = 0;
    c->sel = sel;
    if (reply)
        reply->len = 0;
    /* k->acct shares the line of k->api, loaded just above: off, this is one
     * predicted branch and the tail call stays a tail call. */
    if (unlikely(k->acct != NULL))
        return dispatch_counted(t, k, disp->usage, fn, msg, len);
    return a4ps_method_call(t, d, (const void *)fn, &c->pub, msg, len);
}

void dispatch_count_failure_slow(kproto *p)
{
    kdisp *disp = rcu_dereference(p->dispatch);
    if (disp->beh && disp->beh->ver)
        atomic_fetch_add_explicit(&disp->beh->ver->failed_calls, 1, memory_order_relaxed);
}

int dispatch_send(kernel *k, kproto *p, uint32_t sel, const char *selector,
                  const void *msg, size_t len, kernel_reply *reply)
{
    return dispatch_core(k, p, sel, selector, msg, len, reply);
}

/* Off the hot path: the gate (park, then dispatch again), a destroyed or
 * quarantined proto, doesNotUnderstand -- decided on the table the hot path
 * saw, not on a fresh load that may already be another.  The slot still
 * names p. */
static __attribute__((noinline)) int dispatch_retry(kernel *k, kproto *p, kdisp *disp,
                                                    uint32_t sel, const char *selector,
                                                    const void *msg, size_t len,
                                                    kernel_reply *reply)
{
    kthread *t = &kt_self;
    int d = t->depth;
    int rc = dispatch_slow(k, t, d, p, disp, sel, selector, msg, len, reply);
    if (rc == KRETRY)
        return dispatch_send(k, p, sel, selector, msg, len, reply);
    atomic_store_explicit(&t->slot[d], NULL, memory_order_release);
    return rc;
}

/* ---- Threads ---- */

static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static kthread *threads;
static int freezes;              /* snapshots cutting now (threads_lock) */
/* Accounting slots held by registered threads (bit i: slot i; slot 0, the
 * shared one, is never handed out).  Under threads_lock, whose hand-over
 * orders a slot's last plain store before its next owner's first load. */
static uint64_t slots_held = 1;
_Static_assert(KUSAGE_SLOTS == 64, "slots_held is one 64-bit mask");

static int slot_take(void)
{
    if (slots_held == UINT64_MAX)
        return 0;
    int i = __builtin_ctzll(~slots_held);
    slots_held |= (uint64_t)1 << i;
    return i;
}

void kernel_threads_freeze(void)
{
    pthread_mutex_lock(&threads_lock);
    freezes++;
    for (kthread *t = threads; t; t = t->next)
        __atomic_store_n(&t->frozen, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&threads_lock);
}

void kernel_threads_thaw(void)
{
    pthread_mutex_lock(&threads_lock);
    if (--freezes == 0)
        for (kthread *t = threads; t; t = t->next)
            __atomic_store_n(&t->frozen, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&threads_lock);
    /* Under freeze_mx, so a waiter between its check and its wait cannot
     * miss it. */
    pthread_mutex_lock(&freeze_mx);
    pthread_cond_broadcast(&freeze_cv);
    pthread_mutex_unlock(&freeze_mx);
}
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;

void kernel_threads_lock(void) { pthread_mutex_lock(&threads_lock); }
void kernel_threads_unlock(void) { pthread_mutex_unlock(&threads_lock); }
kthread *kernel_threads_first(void) { return threads; }
kthread *kernel_thread_self(void) { return &kt_self; }

static void thread_unregister(kthread *t)
{
    if (t->mode == KT_NONE)
        return;
    pthread_mutex_lock(&threads_lock);
    for (kthread **pp = &threads; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    slots_held &= ~((uint64_t)1 << t->acct_slot) | 1u;
    t->acct_slot = 0;
    pthread_mutex_unlock(&threads_lock);
    if (t->mode == KT_CASUAL)
        urcu_qsbr_thread_online();   /* unregister expects an online thread */
    urcu_qsbr_unregister_thread();
    fault_thread_fini(t);
    t->mode = KT_NONE;
}

static void thread_exit(void *arg)
{
    thread_unregister(arg);
}

static void thread_key_make(void)
{
    pthread_key_create(&thread_key, thread_exit);
}

static int thread_register(int mode)
{
    kthread *t = &kt_self;
    if (t->mode != KT_NONE)
        return 0;
    pthread_once(&thread_key_once, thread_key_make);
    if (fault_thread_init(t) != 0)
        return -ENOMEM;
    urcu_qsbr_register_thread();
    if (mode == KT_CASUAL)
        urcu_qsbr_thread_offline();
    t->mode = (int16_t)mode;
    pthread_mutex_lock(&threads_lock);
    __atomic_store_n(&t->frozen, (int16_t)(freezes > 0), __ATOMIC_RELEASE);   /* born during a cut: wait too */
    t->next = threads;
    threads = t;
    t->acct_slot = slot_take();
    pthread_mutex_unlock(&threads_lock);
    pthread_setspecific(thread_key, t);
    return 0;
}

int kernel_thread_attach(kernel *k)
{
    (void)k;
    kthread *t = &kt_self;
    if (t->mode == KT_WORKER)
        return 0;
    if (t->mode == KT_CASUAL) {
        urcu_qsbr_thread_online();
        t->mode = KT_WORKER;
        return 0;
    }
    return thread_register(KT_WORKER);
}

void kernel_thread_detach(kernel *k)
{
    (void)k;
    thread_unregister(&kt_self);
}

void kernel_quiescent(kernel *k)
{
    (void)k;
    if (kt_self.mode == KT_WORKER)
        urcu_qsbr_quiescent_state();
}

void kernel_thread_offline(kernel *k)
{
    (void)k;
    if (kt_self.mode == KT_WORKER)
        urcu_qsbr_thread_offline();
}

void kernel_thread_online(kernel *k)
{
    (void)k;
    if (kt_self.mode == KT_WORKER)
        urcu_qsbr_thread_online();
}

/* Casual threads are offline between sends and online inside the outermost
 * one, so they never hold a grace period back while idle. */
static inline int send_enter(kthread *t)
{
    if (likely(t->mode == KT_WORKER) || t->depth > 0)
        return 0;
    if (t->mode == KT_NONE && thread_register(KT_CASUAL) != 0)
        return A4PS_ENOMEM;
    urcu_qsbr_thread_online();
    return 1;
}

static inline void send_leave(int entered)
{
    if (entered)
        urcu_qsbr_thread_offline();
}

/* ---- Public dispatch ---- */

int kernel_send(kernel *k, const char *proto, const char *selector,
                const void *msg, size_t len, kernel_reply *reply)
{
    kthread *t = &kt_self;
    if (!proto || !selector) {
        reply_printf(reply, "send: proto and selector are required");
        return A4PS_EINVAL;
    }
    int entered = send_enter(t);
    if (entered < 0)
        return entered;
    int rc;
    kproto *p = proto_lookup(k, proto);
    if (!p) {
        reply_printf(reply, "no proto named '%s'", proto);
        rc = A4PS_ENOENT;
    } else {
        atomic_fetch_add_explicit(&k->stats.sends, 1, memory_order_relaxed);
        rc = dispatch_send(k, p, selector_find(k, selector), selector, msg, len, reply);
        dispatch_count_failure(p, rc);
    }
    send_leave(entered);
    return rc;
}

int kernel_resolve(kernel *k, const char *proto, const char *selector,
                   kernel_handle **out)
{
    if (!proto || !selector || strlen(selector) >= KERNEL_NAME_MAX)
        return A4PS_EINVAL;
    kernel_handle *h = calloc(1, sizeof *h);
    if (!h)
        return A4PS_ENOMEM;
    pthread_mutex_lock(&k->lock);
    kproto *p = strmap_get(k->protos, proto);
    if (!p) {
        pthread_mutex_unlock(&k->lock);
        free(h);
        return A4PS_ENOENT;
    }
    atomic_fetch_add(&p->refs, 1);
    h->sel = selector_intern(k, selector);
    pthread_mutex_unlock(&k->lock);
    if (h->sel == UINT32_MAX) {
        proto_put(p);
        free(h);
        return A4PS_ENOMEM;
    }
    h->k = k;
    h->p = p;
    snprintf(h->selector, sizeof h->selector, "%s", selector);
    *out = h;
    return A4PS_OK;
}

static __attribute__((noinline)) int send_handle_casual(kernel_handle *h, const void *msg,
                                                        size_t len, kernel_reply *reply)
{
    int entered = send_enter(&kt_self);
    if (entered < 0)
        return entered;
    int rc = dispatch_send(h->k, h->p, h->sel, h->selector, msg, len, reply);
    send_leave(entered);
    return rc;
}

int kernel_send_handle(kernel_handle *h, const void *msg, size_t len,
                       kernel_reply *reply)
{
    if (likely(kt_self.mode == KT_WORKER))
        return dispatch_core(h->k, h->p, h->sel, h->selector, msg, len, reply);
    return send_handle_casual(h, msg, len, reply);
}

void kernel_handle_release(kernel_handle *h)
{
    if (!h)
        return;
    proto_put(h->p);
    free(h);
}
