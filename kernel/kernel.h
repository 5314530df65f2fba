/* kernel.h -- the interface of the A4PS kernel library (liba4pskernel).
 *
 * The daemon, the tests and the benchmarks drive the kernel through this
 * header only.  The kernel loads plugin generations (loader/), keeps protos and
 * dispatches messages to them (proto/), swaps their behaviour while callers
 * run (swap/), contains plugin faults (fault/) and delivers events (events/).
 *
 * Conventions: functions that can fail return 0 or a negative A4PS_E* status
 * and, when given an error buffer, write one line saying what was wrong and
 * where (file, field, plugin, proto).  Strings returned as char * are
 * malloc'd and freed by the caller with free().
 *
 * Threads: any thread may call any function.  A thread that sends often
 * should call kernel_thread_attach() once and kernel_quiescent() between
 * units of work (QSBR: attached threads are read-side critical sections until
 * they say otherwise); a thread that never attaches pays for entering and
 * leaving the read side on every outermost send. */
#ifndef A4PS_KERNEL_H
#define A4PS_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "a4ps.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kernel kernel;
typedef struct kernel_handle kernel_handle;

#define KERNEL_ERRLEN 512

/* Decide whether a binary may be loaded: called after the file's ELF checks
 * and before dlopen, with the SHA-256 (hex) of the bytes it will load.  Return 0 to allow; otherwise
 * write the reason to why.  Either way it may set *report to a malloc'd JSON
 * text (the test report); the kernel keeps it with the version it loads (and
 * frees it otherwise).  The sandbox probe plugs in here. */
typedef int (*kernel_verify_fn)(void *arg, const char *path, const char *sha256,
                                char **report, char *why, size_t whylen);

/* Opens a forge task for a plugin (the host API's forge entry): proto and
 * plugin name the caller, request is its JSON.  Returns 0 with *reply the
 * task as JSON, or a negative status with *reply the reason (malloc'd; the
 * kernel hands it to the plugin, which frees it with api->free). */
typedef int (*kernel_forge_fn)(void *arg, const char *proto, const char *plugin,
                               const char *request, char **reply);

/* Carry out a plugin's http / run host entry (rule R12) outside the kernel:
 * plugin names the calling plugin, whose grant decides.  rq has been checked
 * for readable pointers; rs is the kernel's own, zeroed (size set, error
 * empty).  Returns an A4PS_* status as the entry documents; on failure
 * rs->error says why.  Buffers set in rs are malloc'd. */
typedef int (*kernel_http_fn)(void *arg, const char *plugin, const a4ps_http_request *rq,
                              a4ps_http_response *rs);
typedef int (*kernel_run_fn)(void *arg, const char *plugin, const a4ps_run_request *rq,
                             a4ps_run_result *rs);

/* Receives every log line the kernel writes (level is a syslog priority). */
typedef void (*kernel_log_fn)(void *arg, int level, const char *line);

/* Receives every event after it was delivered to observers (for the daemon's
 * event stream and for logging); runs on the bus thread. */
typedef void (*kernel_event_fn)(void *arg, const char *event,
                                const char *json, size_t len);

/* Where the calling thread's allocator keeps its running totals of bytes
 * allocated and freed (jemalloc: mallctl "thread.allocatedp" and
 * "thread.deallocatedp").  The kernel asks once per thread, keeps the two
 * pointers, and reads them before and after every method call to charge the
 * call's allocations to the plugin version that ran it: two loads a call, no
 * system call.  Return 0 with both set, or non-zero: that thread's calls go
 * unaccounted.  Process-wide by nature (the counters are the thread's), so it
 * takes no argument. */
typedef int (*kernel_alloc_counters_fn)(const uint64_t **allocated, const uint64_t **freed);

/* Where every change of a proto's state is told, in order: a4psd's journal
 * (daemon/journal.c), which makes acknowledged changes survive a crash.
 *   change(arg, proto, op, key, val, len)
 *       op KERNEL_STATE_SET (val, len) or KERNEL_STATE_DEL: called with that
 *       proto's state lock held, before the change is made, so the order
 *       of the calls for one proto is the order of its changes.  It must be
 *       quick and never call into the kernel.  Non-zero refuses the change:
 *       the plugin's state_set / state_delete return A4PS_EIO.
 *       op KERNEL_STATE_RESET (no key): the proto's state was replaced
 *       whole or the proto came or went (a migration, a rollback across
 *       layouts, create, clone, destroy) -- what follows belongs to a
 *       structure only a snapshot records.  Called under k->lock with no
 *       call of the proto in flight; its result is ignored.
 *   cut(arg)
 *       called by kernel_snapshot_take at its cut, when no send runs: the
 *       position the snapshot covers (kernel_snapshot.log_position).
 * Only the state of live protos is told; a migration's working copy, a
 * self-test's scratch state and kernel_restore_proto are not. */
enum { KERNEL_STATE_SET = 1, KERNEL_STATE_DEL = 2, KERNEL_STATE_RESET = 3 };
typedef struct kernel_state_log {
    int (*change)(void *arg, const char *proto, int op, const char *key, const void *val,
                  size_t len);
    uint64_t (*cut)(void *arg);
    void *arg;
} kernel_state_log;

typedef struct kernel_config {
    const char *runtime_dir;      /* private dir for generations; created 0700 */
    size_t max_plugin_bytes;      /* refuse larger files; 0 = 64 MiB */
    unsigned hook_timeout_ms;     /* init/fini/self_test limit; 0 = 2000 */
    unsigned migrate_timeout_ms;  /* drain + migrate limit; 0 = 1000 */
    size_t event_queue_len;       /* bounded bus queue; 0 = 4096 */
    int run_self_test;            /* run a plugin's self_test at load */
    int log_level;                /* lines above this level are dropped; 0 = INFO */
    kernel_log_fn log;            /* NULL = stderr with <N> prefixes */
    void *log_arg;
    kernel_verify_fn verify;      /* NULL = allow every binary that passes checks */
    void *verify_arg;
    kernel_event_fn on_event;
    void *on_event_arg;
    kernel_forge_fn forge;        /* NULL: the forge entry answers A4PS_ENOSYS */
    void *forge_arg;
    kernel_alloc_counters_fn alloc_counters; /* NULL: no accounting per call */
    /* Plugins that import what starts a thread or a process (pthread_create,
     * clone, fork, posix_spawn*, system, timer_create, ...) or looks symbols
     * up (dlopen, dlsym): with check_threads set, such a file is refused at
     * load, naming the symbol, unless may_thread(arg, plugin) returns nonzero
     * for its name.  With no may_thread the refusal comes before dlopen; with
     * one, the name is the descriptor's, so its constructors have run.  Every
     * generation of such a file that was dlopened -- permitted or not -- is
     * pinned: never dlclosed while the process lives (status: pinned), since
     * a thread it started may still run its code.  0: not checked (the probe,
     * whose sandbox holds what it starts). */
    int check_threads;
    int (*may_thread)(void *arg, const char *plugin);
    void *may_thread_arg;
    kernel_http_fn http;          /* NULL: the http entry answers A4PS_ENOSYS */
    void *http_arg;
    kernel_run_fn run;            /* NULL: the run entry answers A4PS_ENOSYS */
    void *run_arg;
    kernel_state_log state_log;   /* change NULL: state changes go untold */
} kernel_config;

/* The reply of a send.  Reused across calls to avoid allocation; free with
 * kernel_reply_free.  data is always NUL-terminated when len > 0. */
typedef struct kernel_reply {
    char *data;
    size_t len;
    size_t cap;
} kernel_reply;

void kernel_reply_free(kernel_reply *r);

/* Make exit(), quick_exit(), _exit(), _Exit() and the exit_group system
 * call, made from plugin code (a thread inside a plugin call), a fault of
 * that plugin -- its call returns A4PS_EFAULT and its version is quarantined,
 * as after a SIGSEGV -- instead of the end of the process (fault/exits.c).
 * Process-wide and for good; idempotent.  Installs exit handlers, a SIGSYS
 * handler and a seccomp filter on every thread (with PR_SET_NO_NEW_PRIVS)
 * that traps exit_group made from the C library's code; the process's own
 * exit goes on as before.  Call it before creating a kernel and after
 * forking helper processes (children inherit the filter; it is harmless to
 * them, but no reason to give it).  Returns 0 and says what was installed
 * in what, or a negative status saying what is missing (A4PS_ENOSYS: this
 * machine cannot trap exit_group; exit() and quick_exit() are contained
 * still). */
int kernel_contain_exits(char *what, size_t whatlen);

/* Create a kernel with cfg (copied).  On failure returns NULL and fills err. */
kernel *kernel_create(const kernel_config *cfg, char *err, size_t errlen);

/* Stop the bus and reclaimer, unload everything (running fini hooks) and
 * free the kernel.  No thread may be inside a send. */
void kernel_destroy(kernel *k);

/* ---- Threads (QSBR) ---- */
int kernel_thread_attach(kernel *k);      /* online, until detach */
void kernel_quiescent(kernel *k);         /* no kernel pointers held now */
void kernel_thread_offline(kernel *k);    /* about to block for a while */
void kernel_thread_online(kernel *k);
void kernel_thread_detach(kernel *k);

/* ---- Loading ---- */

/* Information about one behaviour (a loaded or stored plugin version). */
typedef struct kernel_version_info {
    char name[64];
    char version[32];
    char sha256[65];              /* hex */
    uint32_t state_version;
    uint64_t generation;          /* unique per load */
} kernel_version_info;

/* Check, verify, copy and load the plugin file at path; on success it becomes
 * the newest version of its name.  Refusals emit plugin_refused; nothing
 * loaded before is disturbed.  A file whose hash is already loaded is not
 * loaded again (A4PS_EEXIST, info filled). */
int kernel_load(kernel *k, const char *path, kernel_version_info *info,
                char *err, size_t errlen);

/* kernel_load with flags: KERNEL_LOAD_NO_DOWNGRADE refuses (before init
 * runs) a version lower than the newest loaded version of its name -- what a
 * dropped file may not do; going back is kernel_rollback's job. */
#define KERNEL_LOAD_NO_DOWNGRADE 1u
int kernel_load_ex(kernel *k, const char *path, unsigned flags,
                   kernel_version_info *info, char *err, size_t errlen);

/* Attach provenance to a loaded version: its source text, its test report
 * (JSON), what proposed it (replaces origin).  NULL leaves a field as it is.
 * The image keeps them in the version's lineage. */
int kernel_version_annotate(kernel *k, const char *name, const char *version,
                            const char *source, const char *report, const char *origin);

/* Open path for reading only if it is a regular file (nofollow: and not a
 * symbolic link), never blocking on a FIFO nor taking a terminal: the file is
 * looked at through an O_PATH descriptor before it is opened for reading,
 * then opened O_NONBLOCK | O_NOCTTY | O_CLOEXEC and checked to be the same
 * file.  The descriptor (*st filled), or -1 with errno set (EINVAL: not a
 * regular file, or it changed meanwhile) and why in err, without the path:
 * e.g. "a FIFO (named pipe), not a regular file". */
struct stat;
int kernel_open_regular(const char *path, bool nofollow, struct stat *st, char *err,
                        size_t errlen);

/* SHA-256, a binary's identity: of buf (out and hex may each be NULL), or
 * of the file at path, refused past max bytes or if not a regular file (-1
 * with err). */
void kernel_sha256(const void *buf, size_t len, unsigned char out[32], char hex[65]);
int kernel_sha256_file(const char *path, size_t max, char hex[65], char *err, size_t errlen);
/* The whole regular file at path, at most max bytes, NUL-terminated, in a
 * malloc'd *out of *len bytes: 0, or a negative errno (-EFBIG: too large or
 * not a regular file).  Opened as kernel_open_regular does: a FIFO never
 * blocks it. */
int kernel_read_file(const char *path, size_t max, void **out, size_t *len);

/* Change the log level (a syslog priority) of a running kernel. */
void kernel_set_log_level(kernel *k, int level);

/* ---- Protos ---- */

/* Create proto `name` on the newest version of `plugin` (or exactly
 * `version` when not NULL).  persona_json is stored as the persona metadata
 * (may be NULL). */
int kernel_proto_create(kernel *k, const char *name, const char *plugin,
                        const char *version, const char *persona_json,
                        char *err, size_t errlen);
int kernel_proto_destroy(kernel *k, const char *name, char *err, size_t errlen);

/* Deep copy: same behaviour, same state, same persona, new identity. */
int kernel_proto_clone(kernel *k, const char *src, const char *dst,
                       char *err, size_t errlen);

/* Declare that proto `name` depends on proto `dep` (shown by explain). */
int kernel_proto_depend(kernel *k, const char *name, const char *dep,
                        char *err, size_t errlen);

/* Does proto `name` exist? */
int kernel_proto_exists(kernel *k, const char *name);

/* The version proto runs now (and its plugin's kind, A4PS_KIND_*, when kind
 * is not NULL), without building explain's JSON. */
int kernel_proto_version(kernel *k, const char *proto, kernel_version_info *info,
                         uint32_t *kind);

/* How a loaded version fares: quarantined (or withdrawn; reason says which
 * and why) and how many calls to it failed (A4PS_ERROR, by-name sends). */
int kernel_version_health(kernel *k, const char *plugin, const char *version,
                          int *quarantined, uint64_t *failed_calls, char *reason,
                          size_t reasonlen);

/* What a loaded version cost, summed over the method calls it served since it
 * was loaded (kernel_config.alloc_counters; all 0 without it).  Bytes a call
 * allocated and freed, its callees' excluded (a nested send is charged to the
 * version that served it); net = allocated - freed, what the version still
 * holds if nothing it allocated was freed elsewhere -- a version whose net
 * keeps growing leaks.  Hooks (init, migrate, ...) and does_not_understand
 * are not counted.  What a monitor reads. */
typedef struct kernel_version_usage {
    int accounted;                /* the kernel has alloc_counters */
    uint64_t calls;               /* method calls, faulted ones included */
    uint64_t allocated;           /* bytes */
    uint64_t freed;
    int64_t net;                  /* allocated - freed */
} kernel_version_usage;

int kernel_version_usage_get(kernel *k, const char *plugin, const char *version,
                             kernel_version_usage *out);
/* Does loaded version plugin/version have a method named selector, as the
 * kernel read it from the binary?  1 yes, 0 no, A4PS_ENOENT no such loaded
 * version.  For the forge, which believes nothing the probe's child said
 * about the candidate's methods. */
int kernel_version_has_method(kernel *k, const char *plugin, const char *version,
                              const char *selector);

/* The kernel's naming rules, for those who check names before they reach
 * it (the daemon's config): proto names [A-Za-z][A-Za-z0-9_.-]{0,62},
 * plugin names [a-z][a-z0-9_-]{0,63}.  1 when valid. */
int kernel_valid_proto_name(const char *name);
int kernel_valid_plugin_name(const char *name);

/* Direct state access from outside (the daemon's initial state, tests).
 * kernel_state_get returns a malloc'd copy in *out, its length in *len. */
int kernel_state_set(kernel *k, const char *proto, const char *key,
                     const void *data, size_t len);
int kernel_state_get(kernel *k, const char *proto, const char *key,
                     void **out, size_t *len);
/* A4PS_OK, A4PS_ENOENT (no such proto or key), A4PS_EIO (the state log
 * refused it). */
int kernel_state_delete(kernel *k, const char *proto, const char *key);

/* The whole state of proto as one buffer (malloc'd, caller frees) of
 * records "u32 key length | key | u32 value length | value", lengths little
 * endian: what the forge hands the sandbox probe as the clone of a proto's
 * state. */
int kernel_state_export(kernel *k, const char *proto, void **out, size_t *len);

/* ---- Dispatch ---- */

/* Send by name.  Returns the method's status; reply holds its reply or the
 * kernel's error text. */
int kernel_send(kernel *k, const char *proto, const char *selector,
                const void *msg, size_t len, kernel_reply *reply);

/* Resolve once, call many times (the hot path).  A handle keeps its proto
 * alive; the selector is interned.  A handle survives every swap. */
int kernel_resolve(kernel *k, const char *proto, const char *selector,
                   kernel_handle **out);
int kernel_send_handle(kernel_handle *h, const void *msg, size_t len,
                       kernel_reply *reply);
void kernel_handle_release(kernel_handle *h);

/* ---- Swap ---- */

/* Swap proto to plugin version `version` (NULL = newest loaded version of its
 * plugin).  A code swap when state_version is unchanged; a state-migrating
 * swap otherwise.  On any failure the proto keeps its old version and state. */
int kernel_swap(kernel *k, const char *proto, const char *version,
                char *err, size_t errlen);

/* Swap every proto running `plugin` to its newest loaded version.  Returns the
 * number of protos swapped or a negative status (the first failure). */
int kernel_upgrade(kernel *k, const char *plugin, char *err, size_t errlen);
/* The same, leaving alone the protos named in skip (pinned to a version). */
int kernel_upgrade_except(kernel *k, const char *plugin, const char *const *skip,
                          size_t nskip, char *err, size_t errlen);

/* Withdraw a loaded version no proto runs (a candidate whose adoption
 * failed): it is fenced off like a quarantined one -- never the newest for
 * new protos or upgrades, never loaded again -- and plugin_withdrawn is
 * emitted.  A4PS_EBUSY, naming the proto, while one runs it. */
int kernel_version_withdraw(kernel *k, const char *name, const char *version,
                            const char *reason, char *err, size_t errlen);

/* Back to the version the proto ran before its current one. */
int kernel_rollback(kernel *k, const char *proto, char *err, size_t errlen);

/* Back (or over) to any version of the proto's plugin that was ever loaded,
 * from the kernel's stored binary -- no original file needed.  Going to the
 * version on top of the proto's history is a plain rollback. */
int kernel_rollback_to(kernel *k, const char *proto, const char *version, char *err,
                       size_t errlen);

/* ---- Events ---- */

/* Deliver events named `event` (or every event: "*") to proto.selector. */
int kernel_subscribe(kernel *k, const char *event, const char *proto,
                     const char *selector, char *err, size_t errlen);
int kernel_unsubscribe(kernel *k, const char *event, const char *proto,
                       const char *selector);
/* Publish an event from outside plugins; data is JSON (or NULL). */
int kernel_emit(kernel *k, const char *event, const char *json);
/* Wait until every event published so far was delivered (tests, shutdown). */
void kernel_events_flush(kernel *k);

/* ---- Introspection (JSON, malloc'd, caller frees) ---- */
char *kernel_explain(kernel *k, const char *proto);
/* The proto's lineage: its current version, the versions it ran before, and
 * every version of its plugin the kernel has (status, hash, parent, origin). */
char *kernel_history(kernel *k, const char *proto);
char *kernel_status(kernel *k);

/* Add a line to the errors status shows (last_errors), for problems found
 * outside the kernel that concern it (an image that left a version out). */
void kernel_report_error(kernel *k, const char *msg);

/* Wait until every retired generation has been reclaimed or timeout_ms
 * passed; returns the number still draining. */
int kernel_reclaim_wait(kernel *k, unsigned timeout_ms);

/* ---- Snapshots and restore (the image, kernel/image) ---- */

typedef struct kernel_snap_proto {
    char name[64];
    char *persona;               /* JSON text or NULL */
    char plugin[64];
    char version[32];
    uint32_t state_version;
    char *deps_json;             /* ["proto", ...] */
    char *history_json;          /* ["1.0.0", ...], oldest first */
    char *cloned_from;           /* or NULL */
    size_t nkeys;
    char **keys;
    void **vals;
    size_t *lens;
} kernel_snap_proto;

typedef struct kernel_snap_version {
    char name[64];
    char version[32];
    char sha256[65];
    uint32_t state_version;
    char parent[32];             /* the parent's version, "" for none */
    const char *status;          /* "live", "retired", "quarantined" */
    char *reason;                /* why quarantined, or NULL */
    char *origin;                /* the file it came from */
    char *source;                /* its C source, or NULL: unknown, or already in
                                    the image (unchanged since) */
    char *report;                /* its test report (JSON), or NULL: the same */
    uint64_t lineage_gen;        /* internal: what kernel_snapshot_done marks saved */
    char *stored_path;           /* the kernel's copy of the binary */
    int64_t loaded_at;
} kernel_snap_version;

typedef struct kernel_snapshot {
    kernel_snap_proto *protos;   /* changed since the last committed snapshot (or all) */
    size_t nprotos;
    char **deleted;              /* destroyed since then */
    size_t ndeleted;
    kernel_snap_version *versions; /* every version ever loaded */
    size_t nversions;
    uint64_t stall_ns;           /* how long outermost sends were held */
    uint64_t log_position;       /* state_log.cut at the cut (0 without one) */
    uint64_t *gens;              /* internal: what kernel_snapshot_done marks saved */
} kernel_snapshot;

/* Take a consistent copy: outermost sends are held while the calls in flight
 * finish (at most timeout_ms, else A4PS_ETIMEDOUT and nothing is taken) and
 * the state of every changed proto (every proto with all) is copied; no
 * message is ever half in it.  Writing it out is the caller's, with no kernel
 * lock held. */
int kernel_snapshot_take(kernel *k, int all, unsigned timeout_ms, kernel_snapshot **out,
                         char *err, size_t errlen);
/* Tell the kernel whether s was committed: if so its protos count as saved
 * (up to what was copied); if not, the next snapshot takes them again. */
void kernel_snapshot_done(kernel *k, kernel_snapshot *s, int committed);
void kernel_snapshot_free(kernel_snapshot *s);

/* Restore a proto from an image: created on exactly p->plugin p->version
 * (which must be loaded or stored) with its state, persona, history and
 * dependencies; it counts as saved. */
int kernel_restore_proto(kernel *k, const kernel_snap_proto *p, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* A4PS_KERNEL_H */
