/* kernel_int.h -- the kernel's internal structures, shared by its modules.
 *
 * kernel.h is the interface; this header is the implementation's.  The
 * objects and who owns them:
 *
 *   kver    one plugin version ever loaded (lineage); lives as long as the
 *           kernel.  Holds the path of the kernel's stored copy of the binary,
 *           so a version can be loaded again without the original file.
 *   kbeh    one loaded generation of a kver: dlopen handle, the kernel's copy
 *           of the descriptor, the dispatch table indexed by selector id.
 *           Reference-counted under k->lock by the protos running it, by the
 *           registry (the newest version of each name stays loaded) and by
 *           hook runners; at zero it is retired, and reclaimed (fini, dlclose)
 *           by the reclaimer thread after an RCU grace period.
 *   kproto  a live object: name, persona, state, current behaviour, history.
 *
 * Dispatch reads p->dispatch (RCU-published) and its table with no lock.
 * Everything else changes under k->lock.  State has its own lock per proto. */
#ifndef A4PS_KERNEL_INT_H
#define A4PS_KERNEL_INT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define _LGPL_SOURCE
#include <urcu-qsbr.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "a4ps.h"
#include "kernel.h"
#include "util/state.h"
#include "util/strmap.h"

#define KERNEL_MAX_DEPTH 32      /* nested sends per thread */
#define KERNEL_HISTORY 16        /* versions remembered per proto */
#define KERNEL_LAST_ERRORS 16    /* refusals kept for status */
#define KERNEL_NAME_MAX 64

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

typedef struct kver kver;
typedef struct kbeh kbeh;
typedef struct kproto kproto;
typedef struct bus bus;

enum kver_status { KVER_LIVE, KVER_RETIRED, KVER_QUARANTINED };

struct kver {
    char name[KERNEL_NAME_MAX];
    char version[32];
    uint32_t vnum[3];
    unsigned char sha[32];
    char sha_hex[65];
    uint32_t state_version;
    uint32_t kind;
    char *stored_path;           /* kernel's copy, mode 0400 */
    char *origin;                /* the file it was loaded from */
    char *source;                /* C source, when the forge built it */
    char *report;                /* test report (JSON) of its verification */
    uint64_t lineage_gen;        /* bumps when source, report or origin change */
    uint64_t saved_lineage_gen;  /* what the last committed snapshot holds */
    kver *parent;                /* newest version of the name when loaded */
    enum kver_status status;
    char reason[256];            /* why quarantined */
    kbeh *loaded;                /* current generation, or NULL */
    time_t loaded_at;
    /* Calls that returned A4PS_ERROR ("the method failed"), counted on the
     * by-name paths (kernel_send, api->send), not on kernel_send_handle:
     * what the forge's probation watches. */
    _Atomic uint64_t failed_calls;
    kver *next;                  /* k->versions */
    /* What its method calls allocated and freed, when the kernel keeps
     * accounts (k->acct; NULL otherwise): KUSAGE_SLOTS lines, one per
     * thread slot (kthread.acct_slot), summed when read. */
    struct kusage_slot *usage;
};

/* One thread's share of a version's accounting, on a line of its own.
 * Slots 1..KUSAGE_SLOTS-1 each belong to one registered thread at a time,
 * which adds with a plain load and store (no locked instruction on the
 * send path); slot 0 is shared by the threads that found none free, and
 * takes atomic adds. */
#define KUSAGE_SLOTS 64
typedef struct kusage_slot {
    _Atomic uint64_t calls, allocated, freed;
} __attribute__((aligned(64))) kusage_slot;
kusage_slot *kusage_new(void);   /* zeroed; NULL on ENOMEM */

/* What a proto's dispatch pointer points at: one generation's method
 * table indexed by selector id, or the gate/tomb stand-ins (nsel 0).  Kept
 * apart from the kbeh so a send is two dependent loads away from its method:
 * p->dispatch, then fn[sel]. */
typedef struct kdisp {
    _Atomic uint32_t nsel;       /* table length; 0 fences every selector */
    uint32_t flags;
    kbeh *beh;                   /* NULL for the gate and the tomb */
    struct kusage_slot *usage;   /* beh->ver->usage, one load from the send */
    a4ps_method_fn fn[];         /* NULL = not understood */
} kdisp;

enum kbeh_state { KBEH_ACTIVE, KBEH_DRAINING, KBEH_FINI_HUNG, KBEH_HOOK_HUNG };

struct kbeh {
    kdisp *disp;                 /* the published method table */
    kver *ver;

    a4ps_plugin d;               /* descriptor prefix the kernel understands */
    uint32_t nmethods;
    const char **docs;           /* by method index, pointers into the plugin */
    uint32_t *method_sel;        /* selector id of each method */
    void *dl;
    char *path;                  /* the generation's unique path */
    uint64_t gen;
    int refs;                    /* under k->lock */
    enum kbeh_state state;
    bool quarantined;
    bool registry;               /* holds the registry's reference */
    bool pinned;                 /* imports thread creation: never dlclosed */
    char pin_why[48];            /* the import that pinned it */
    kernel *k;
    kbeh *next;                  /* k->behs (all generations not reclaimed) */
    kbeh *next_retired;
};

#define KDISP_GATE 1u            /* the kernel's stand-in during a migration */
#define KDISP_TOMB 2u            /* ... and once a proto is destroyed */

struct kproto {
    kdisp *dispatch;             /* RCU: cur->disp, or k->gate while migrating */
    kernel *k;
    char name[KERNEL_NAME_MAX];
    uint64_t id;
    kbeh *cur;                   /* under k->lock */
    kstate *state;               /* swapped only while gated and drained */
    char *persona;               /* JSON text or NULL */
    kver *hist[KERNEL_HISTORY];  /* versions run before, newest last */
    kstate *hist_state[KERNEL_HISTORY]; /* state before a migration, or NULL */
    int nhist;
    char **deps;
    int ndeps;
    char *cloned_from;
    uint64_t meta_gen;           /* bumps when anything but state changes (k->lock) */
    uint64_t saved_meta_gen;     /* what the last committed snapshot holds */
    uint64_t saved_state_gen;
    bool saved;                  /* in the image at all */
    _Atomic int refs;            /* the table's + one per handle */
    _Atomic bool dead;
    pthread_mutex_t gate_lock;   /* callers park here while gated */
    pthread_cond_t gate_cv;
};

struct kernel_handle {
    kernel *k;
    kproto *p;
    uint32_t sel;
    char selector[KERNEL_NAME_MAX];
};

/* The context of one call (a4ps_ctx is its public first member). */
#define KCTX_NO_SEND 1u          /* hooks may not send */
#define KCTX_NO_REPLY 2u
typedef struct kctx {
    a4ps_ctx pub;
    kernel *k;
    kproto *proto;               /* NULL in init/fini */
    kstate *state;               /* the state this call reads and writes */
    kbeh *beh;
    kernel_reply *reply;
    uint32_t flags;
    uint32_t sel;                /* the selector id of a method call */
} kctx;

/* What the fault handler saw (fault/): a signal, or one of the KFAULT_*
 * pseudo-signals below with the exit status in code (fault/exits.c). */
typedef struct kfault {
    int sig;
    int code;
    void *addr;
} kfault;
#define KFAULT_EXIT 0x101        /* exit() from plugin code */
#define KFAULT_QUICK_EXIT 0x102  /* quick_exit() */
#define KFAULT_EXIT_GROUP 0x103  /* _exit(), _Exit(), syscall(SYS_exit_group) */

/* Per-thread dispatch record, registered process-wide so a migration can see
 * which protos every thread is inside of.  Process-wide by nature, like
 * liburcu's own reader registry. */
enum { KT_NONE, KT_WORKER, KT_CASUAL };
/* depth counts the plugin calls this thread is inside; jb[d] is the
 * recovery point of call d and slot[d] the proto it was made on (NULL for
 * hooks).  The fault handler resumes at jb[depth - 1]: depth > 0 means plugin
 * code may be running.  The first three fields are at fixed offsets because
 * the x86-64 a4ps_guarded_call (fault/fault.c) addresses them. */
typedef struct kthread {
    int depth;                                /* offset 0 */
    int16_t mode;
    int16_t frozen;              /* a snapshot is cutting: outermost sends wait.  Written
                                    with __atomic stores under threads_lock; the hot path
                                    reads it after cmm_barrier, ordered against the
                                    writer by its membarrier */
    kproto *_Atomic slot[KERNEL_MAX_DEPTH];   /* offset 8 */
    void *jb[KERNEL_MAX_DEPTH][8];            /* offset 8 + 8 * KERNEL_MAX_DEPTH */
    kfault fault;
    void *altstack;
    /* Accounting per call (dispatch.c): the allocator's counters of this
     * thread, as acct_fn gave them, and the bytes already charged to calls
     * nested inside the ones still running (so each is charged once). */
    kernel_alloc_counters_fn acct_fn;
    const uint64_t *acct_alloc, *acct_freed;
    uint64_t acct_inner_alloc, acct_inner_freed;
    int acct_slot;               /* its kusage_slot; 0: the shared one */
    struct kthread *next;
    kctx ctx[KERNEL_MAX_DEPTH];               /* the context of method call d */
} kthread;

_Static_assert(offsetof(kthread, depth) == 0, "asm: depth");
_Static_assert(offsetof(kthread, slot) == 8, "asm: slot");
_Static_assert(offsetof(kthread, jb) == 8 + 8 * KERNEL_MAX_DEPTH, "asm: jb");

extern __thread kthread kt_self;

/* Accounting per call: kernel bookkeeping done inside a plugin's call (the
 * growth of a reply buffer the caller frees later, an event queued for the
 * bus thread) is hidden from the call's bill by adding it to the bytes
 * "already charged to nested calls"; acct_charge bills the call for a host
 * buffer it now owns (send's reply, freed with api->free).  No-ops on a
 * thread without counters. */
typedef struct acct_mark {
    uint64_t alloc, freed;
} acct_mark;

static inline acct_mark acct_hide_begin(const kthread *t)
{
    acct_mark m = {0, 0};
    if (t->acct_alloc) {
        m.alloc = *t->acct_alloc;
        m.freed = *t->acct_freed;
    }
    return m;
}

static inline void acct_hide_end(kthread *t, acct_mark m)
{
    if (t->acct_alloc) {
        t->acct_inner_alloc += *t->acct_alloc - m.alloc;
        t->acct_inner_freed += *t->acct_freed - m.freed;
    }
}

static inline void acct_charge(kthread *t, uint64_t bytes)
{
    if (t->acct_alloc)
        t->acct_inner_alloc -= bytes;
}

typedef struct kdefer {
    void (*fn)(void *);
    void *ptr;
} kdefer;

/* sends counts sends by name only: the handle path stays free of shared
 * writes. */
typedef struct kernel_stats {
    _Atomic uint64_t sends, faults, not_understood, swaps, migrations,
        rollbacks, refusals, reclaimed;
    _Atomic uint64_t last_swap_ns, last_pause_ns, max_pause_ns;
} kernel_stats;

struct kernel {
    /* First, on the line every send reads: the host table (its own
     * read-only page, hostapi.c) and accounting's switch (cfg.alloc_counters). */
    const a4ps_host_api *api;
    kernel_alloc_counters_fn acct;
    kernel_config cfg;
    char *runtime_dir;
    char *gen_dir;
    char *store_dir;
    pthread_mutex_t lock;        /* every change to protos, versions, behs */
    kver *versions;
    kbeh *behs;
    strmap *protos;              /* name -> kproto* (RCU lookup) */
    strmap *selectors;           /* selector -> id+1 (RCU lookup) */
    uint32_t nselectors;         /* under lock */
    uint64_t next_gen;
    uint64_t next_proto_id;
    char **deleted;              /* protos destroyed since the last snapshot */
    size_t ndeleted;
    kdisp *gate;                 /* dispatch stand-in while migrating */
    kdisp *tomb;                 /* dispatch stand-in once destroyed */
    char *instance;              /* unique per kernel: names its gen dir */
    bus *bus;
    kernel_stats stats;
    time_t started;

    /* last refusals and faults, for status */
    pthread_mutex_t err_lock;
    char last_errors[KERNEL_LAST_ERRORS][KERNEL_ERRLEN];
    time_t last_error_at[KERNEL_LAST_ERRORS];
    unsigned nerrors;

    /* reclaimer */
    pthread_t reclaimer;
    pthread_mutex_t rlock;
    pthread_cond_t rcv;
    pthread_cond_t rdone;
    kbeh *retired;               /* waiting for a grace period */
    kdefer *deferred;            /* destructors to run after a grace period */
    size_t ndeferred, capdeferred;
    kbeh *hung;                  /* refused while a hook hung: mapped for ever (k->lock) */
    kbeh *_Atomic pinned;        /* pinned generations unloaded: mapped for ever
                                    (pushed lock-free, freed by kernel_destroy) */
    int draining;                /* retired + being reclaimed */
    bool rstop;
};

/* ---- kernel.c ---- */
void kernel_log(kernel *k, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void kernel_record_error(kernel *k, const char *msg);
/* Publish an event whose payload is built by json_pack(fmt, ...). */
void kernel_emitf(kernel *k, const char *event, const char *fmt, ...);
static inline bus *k_bus(kernel *k) { return k->bus; }
uint64_t kernel_now_ns(void);
/* CLOCK_MONOTONIC now + ms, for pthread_cond_timedwait on a condvar whose
 * clock is CLOCK_MONOTONIC. */
struct timespec kernel_deadline(unsigned ms);
kthread *kernel_thread_self(void);
void kernel_threads_lock(void);
void kernel_threads_unlock(void);
kthread *kernel_threads_first(void);
int kernel_membarrier(void);
/* Hold (freeze) or release every thread's outermost sends, for a snapshot's
 * cut.  Process-wide, like the thread registry: nests across kernels. */
void kernel_threads_freeze(void);
void kernel_threads_thaw(void);

/* ---- loader/ ---- */
int loader_load_file(kernel *k, const char *path, unsigned flags,
                     kernel_version_info *info, char *err, size_t errlen);
/* Load a stored version again (rollback, quarantine).  Caller holds k->lock. */
int loader_materialize(kernel *k, kver *v, kbeh **out, char *err, size_t errlen);
kver *loader_find(kernel *k, const char *name, const char *version);
kver *loader_newest(kernel *k, const char *name);
int loader_version_cmp(const kver *a, const kver *b);
void loader_beh_free(kbeh *b);
/* Free the kernel's bookkeeping of b but leave its mapping (a hung hook). */
void loader_beh_forget(kbeh *b);
int loader_run_hook(kernel *k, kbeh *b, int which, kctx *c, uint32_t arg,
                    unsigned timeout_ms, char *err, size_t errlen);
enum { HOOK_INIT, HOOK_FINI, HOOK_MIGRATE, HOOK_SELF_TEST };

/* ---- proto/ ---- */
kproto *proto_lookup(kernel *k, const char *name);   /* RCU read side */
void proto_put(kproto *p);
void proto_destroy_all(kernel *k);
/* Every proto, as a malloc'd array of *n (NULL on ENOMEM).  Caller holds
 * k->lock, which keeps the list valid while it is used. */
kproto **proto_all(kernel *k, size_t *n);
/* Make s (may be NULL) the observed state of p and, with reset, tell the
 * state log that p's state was replaced or p came or went.  Under k->lock. */
void proto_state_install(kernel *k, kproto *p, kstate *s, bool reset);
/* A kstate_* result as an A4PS_* status (a refusal of the log: A4PS_EIO). */
int kernel_state_status(int kstate_rc);
const char *kver_status_name(enum kver_status s);
int proto_name_valid(const char *s);
int plugin_name_valid(const char *s);
/* After a by-name send returned rc: count a method's failure against the
 * version now serving p (the one that served it, but for a swap in
 * between).  Inside the read side. */
void dispatch_count_failure_slow(kproto *p);
static inline void dispatch_count_failure(kproto *p, int rc)
{
    if (unlikely(rc == A4PS_ERROR))
        dispatch_count_failure_slow(p);
}
int dispatch_send(kernel *k, kproto *p, uint32_t sel, const char *selector,
                  const void *msg, size_t len, kernel_reply *reply);
uint32_t selector_intern(kernel *k, const char *sel);   /* under k->lock */
uint32_t selector_find(kernel *k, const char *sel);     /* RCU; UINT32_MAX if none */
/* The host table in a page of its own, filled and then made read-only: a
 * plugin that writes to it faults (and only it is quarantined).  NULL with
 * errno set on failure.  hostapi_destroy unmaps it. */
const a4ps_host_api *hostapi_create(void);
void hostapi_destroy(const a4ps_host_api *api);
int reply_set(kernel_reply *r, const void *data, size_t len, bool append);
int reply_printf(kernel_reply *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- swap/ ---- */
void beh_hold(kbeh *b);                 /* under k->lock */
void beh_release(kernel *k, kbeh *b);   /* under k->lock; retires at zero */
int swap_to(kernel *k, kproto *p, kver *target, bool rollback,
            char *err, size_t errlen);   /* under k->lock */
void swap_quarantine(kernel *k, kbeh *b, const char *reason);
int reclaim_start(kernel *k);
void reclaim_stop(kernel *k);
void reclaim_defer(kernel *k, void (*fn)(void *), void *ptr);

/* ---- fault/ ---- */
int fault_install(void);
int fault_thread_init(kthread *t);
void fault_thread_fini(kthread *t);
const char *fault_signame(int sig);
/* From a signal handler on a thread inside a plugin call (depth > 0):
 * record the fault and rewrite the interrupted context uc so that returning
 * from the handler resumes the call's landing with KFAULTED. */
void fault_land(kthread *t, void *uc, int sig, int code, void *addr);
void fault_landed(void);
/* Call fn(a0, a1, a2) as plugin call d of thread t: sets t->depth to d + 1
 * and the recovery point jb[d], and on return (normal or after a fault) sets
 * t->depth back to d and clears slot[d].  Returns fn's int result, or a value
 * outside int's range (KFAULTED) if fn faulted; t->fault says how. */
long a4ps_guarded_call(kthread *t, long d, const void *fn, void *a0, const void *a1, size_t a2);
#define KFAULTED (((long)1 << 32) | 0xdeadu)
/* The same for a method call whose context is t->ctx[d]: returns fn's
 * result, or, if fn faulted, what a4ps_method_faulted(t, d) returns. */
int a4ps_method_call(kthread *t, long d, const void *fn, void *a0, const void *a1, size_t a2);
int a4ps_method_faulted(kthread *t, long d);
/* Run thunk(arg) under a recovery point; returns 0, or the signal number
 * with what the handler saw in *f. */
int fault_guard(kthread *t, kfault *f, void (*thunk)(void *), void *arg);

/* ---- events/ ---- */
typedef struct bus_stats {
    uint64_t published, delivered, dropped, failed, queued;
} bus_stats;
bus *bus_create(kernel *k, size_t qlen, char *err, size_t errlen);
void bus_destroy(bus *b);
int bus_publish(bus *b, const char *event, const char *json);
int bus_subscribe(bus *b, const char *event, const char *proto,
                  const char *selector);
int bus_unsubscribe(bus *b, const char *event, const char *proto,
                    const char *selector);
void bus_flush(bus *b);
void bus_get_stats(bus *b, bus_stats *s);

#endif
