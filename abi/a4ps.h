/* a4ps.h -- the stable plugin ABI of A4PS.
 *
 * This is the only header a plugin needs.  A plugin is a shared object that
 * exports exactly one symbol, a4ps_plugin_entry(), which receives the host's
 * API table and returns a descriptor: who the plugin is (name, version,
 * state-layout version, kind), its methods, its dependencies and its optional
 * lifecycle hooks.  Everything else in the plugin stays hidden
 * (-fvisibility=hidden); everything the plugin does to the world goes through
 * the host table, so a plugin never holds a pointer into another plugin and any
 * version of any plugin can be swapped while callers are running.
 *
 * Build one:   cc -shared -fPIC -fvisibility=hidden -I<abi> my.c -o my.so
 *
 * ------------------------------------------------------------------------
 * THE RULES (each is enforced by the kernel and has a test)
 *
 * R1  Major.  A descriptor whose abi_major differs from A4PS_ABI_MAJOR of the
 *     kernel is refused: "built for ABI major M, kernel speaks N".  A major
 *     change may change anything; it is the only kind of change that may.
 * R2  Signature.  The descriptor's signature must equal A4PS_BUILD_SIGNATURE as
 *     the kernel computes it (pointer size, byte order, ABI major); a plugin
 *     built for another architecture or word size is refused with both values
 *     decoded in the message.
 * R3  Older minor.  A plugin built against an older minor of the same major is
 *     served.  The kernel reads only the first struct_size bytes of its
 *     descriptor and treats every field past them as absent (NULL/0); fields
 *     are only ever appended, so the prefix means what it meant then.
 * R4  Newer minor.  A plugin built against a newer minor is served too: the
 *     kernel ignores descriptor fields it does not know.  Such a plugin must
 *     test every host entry newer than the host's minor with A4PS_HOST_HAS()
 *     before calling it (the host table's first field is its own size), and may
 *     refuse to load by returning NULL from a4ps_plugin_entry().
 * R5  Struct size.  struct_size must be at least the size of the descriptor as
 *     it was at minor 0 (A4PS_PLUGIN_SIZE_1_0) and, for the minor it declares,
 *     at least that minor's size; anything smaller is refused ("wrong struct
 *     size").  Set it to sizeof(a4ps_plugin) -- A4PS_PLUGIN_HEADER does.
 * R6  Host table.  Entries of a4ps_host_api are only ever appended; its first
 *     field is its size in bytes.  A4PS_HOST_HAS(api, entry) is true when the
 *     running host provides the entry.  Every plugin shares the one table, so
 *     it is read-only: a write to it is a fault of the writer (R9).
 * R7  Hooks are optional.  A missing (NULL) hook means:
 *       init                  nothing to set up; the load proceeds.
 *       fini                  nothing to tear down; the generation is unloaded
 *                             after its grace period.
 *       migrate               the plugin cannot convert state: a swap that
 *                             changes state_version is refused unless the
 *                             proto's state is empty.
 *       does_not_understand   an unknown selector gets the kernel's error
 *                             reply (A4PS_ENOSYS) and a message_not_understood
 *                             event.
 *       self_test             nothing is run; the load proceeds.
 * R8  Identity.  name matches [a-z][a-z0-9_-]{0,63}; version is "X.Y.Z" with
 *     decimal numbers; methods is terminated by an entry whose selector is
 *     NULL, holds at least one method, every selector matches
 *     [A-Za-z_][A-Za-z0-9_:.-]{0,63} and is unique, every fn is non-NULL;
 *     dependencies, when not NULL, is a NULL-terminated list of plugin names.
 *     Any violation is refused naming the field.
 * R9  Faults.  A fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL, abort) inside any
 *     plugin code is caught on its thread: the call returns A4PS_EFAULT, the
 *     version is quarantined and the protos using it roll back to their
 *     previous version.  A fault in init or self_test refuses the load.
 * R10 Timeouts.  init, fini, migrate and self_test run under a time limit set
 *     by the kernel's configuration; a hook that overruns is treated as a
 *     failure (fini: the generation stays mapped, is reported, and is never
 *     called again).
 * R11 Memory.  Buffers the host hands out (send's reply) are freed with
 *     api->free.  Pointers the host passes in (msg, key, ctx) are valid only
 *     until the call returns.  Nothing the plugin returns is freed by the host.
 * R12 Outside.  A plugin reaches outside a4psd only through the host: http
 *     (one HTTP request) and run (one program), both from methods only (a
 *     hook gets A4PS_EPERM).  The host carries them out in helper processes,
 *     allowed per calling plugin by its configuration: http only to the
 *     listed origins (scheme://host:port, matched exactly; no userinfo, no
 *     redirects followed), run only the listed programs (absolute paths,
 *     matched exactly; no shell, a clean environment).  Anything else is
 *     A4PS_EPERM with the reason naming the plugin and the rule; a host that
 *     grants nothing (a bare kernel, the probe) answers A4PS_ENOSYS.  A
 *     credential is passed by the NAME of an environment variable of the
 *     helper, read at each call: the plugin never sees its value.
 *
 * ------------------------------------------------------------------------
 * Messages and replies are byte strings; by convention text or JSON.  A method
 * returns A4PS_OK with its reply set through a4ps_reply(), or a negative status
 * with a human-readable reason set the same way.
 */
#ifndef A4PS_H
#define A4PS_H

#include <stddef.h>
#include <stdint.h>

#include "a4ps_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Status codes: 0 or a negative errno value, as in libuv. ---- */
#define A4PS_OK           0
#define A4PS_ERROR      (-1)   /* the method failed; its reply says why */
#define A4PS_ENOENT     (-2)   /* no such proto, key or version */
#define A4PS_EIO        (-5)   /* the host could not record a state change
                                  (its journal cannot be written); nothing
                                  was changed */
#define A4PS_ENOMEM    (-12)
#define A4PS_EFAULT    (-14)   /* the plugin faulted; the call was abandoned */
#define A4PS_EBUSY     (-16)   /* the proto is being changed; try again */
#define A4PS_EEXIST    (-17)
#define A4PS_EINVAL    (-22)
#define A4PS_ERANGE    (-34)   /* a buffer was too small or a value too big */
#define A4PS_ENOSYS    (-38)   /* selector not understood */
#define A4PS_ELOOP     (-40)   /* sends nested deeper than the kernel allows */
#define A4PS_ETIMEDOUT (-110)
#define A4PS_EPERM      (-1000) /* not allowed from this hook (e.g. send in fini) */
#define A4PS_EQUARANTINED (-1001) /* the version faulted earlier and is fenced off */

/* ---- Build signature (rule R2). ---- */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define A4PS_BUILD_BIG_ENDIAN 1u
#else
#define A4PS_BUILD_BIG_ENDIAN 0u
#endif
/* bits 24-31: sizeof(void *); bits 16-23: 1 if big-endian; bits 0-15: major. */
#define A4PS_SIGNATURE(ptr_size, big_endian, major)                         \
    ((uint32_t)(((uint32_t)(ptr_size) << 24) | ((uint32_t)(big_endian) << 16) | \
                ((uint32_t)(major) & 0xffffu)))
#define A4PS_BUILD_SIGNATURE \
    A4PS_SIGNATURE(sizeof(void *), A4PS_BUILD_BIG_ENDIAN, A4PS_ABI_MAJOR)

/* ---- Plugin kinds. ---- */
#define A4PS_KIND_PERSONA   1u
#define A4PS_KIND_TOOL      2u
#define A4PS_KIND_GENERATOR 3u
#define A4PS_KIND_MONITOR   4u

/* ---- Log levels: syslog priorities, so journald classifies them. ---- */
#define A4PS_LOG_ERR     3
#define A4PS_LOG_WARNING 4
#define A4PS_LOG_NOTICE  5
#define A4PS_LOG_INFO    6
#define A4PS_LOG_DEBUG   7

struct a4ps_host_api;

/* The context of one call.  Every method and hook receives one; it names the
 * calling proto (if any) and carries the reply under construction.  Only the
 * first member is public: the kernel's context continues past it, so never
 * copy, allocate or keep one past the call. */
typedef struct a4ps_ctx {
    const struct a4ps_host_api *api;
} a4ps_ctx;

/* The one callback type of a method: msg/len is the message. */
typedef int (*a4ps_method_fn)(a4ps_ctx *ctx, const void *msg, size_t len);

/* Called by state_list once per key; returning non-zero stops the walk. */
typedef int (*a4ps_key_fn)(void *arg, const char *key, size_t value_len);

/* One HTTP request (rule R12).  size is sizeof(a4ps_http_request) as the
 * plugin built it (fields are only ever appended). */
typedef struct a4ps_http_request {
    size_t size;
    const char *method;          /* "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD" */
    const char *url;             /* http:// or https://, on an allowed origin */
    /* "Name: value" lines, NULL-terminated (may be NULL).  Host, Authorization,
     * Proxy-Authorization, Cookie, Content-Length, Transfer-Encoding and
     * Connection are the host's to set and are refused. */
    const char *const *headers;
    /* Optional credential: when credential_env is not NULL, the helper sends
     * the header line credential_header (e.g. "Authorization: Bearer ")
     * followed by the value of the environment variable credential_env,
     * read at this call.  The variable must be granted to the plugin. */
    const char *credential_header;
    const char *credential_env;
    const void *body;
    size_t body_len;
    unsigned timeout_ms;         /* whole request; 0: the host's limit */
    size_t max_response;         /* body cap in bytes; 0: the host's limit */
} a4ps_http_request;

/* Its outcome.  size is sizeof(a4ps_http_response) as the plugin built it;
 * the host writes no byte past it. */
typedef struct a4ps_http_response {
    size_t size;
    long status;                 /* the HTTP status; 0 when none came */
    void *body;                  /* NUL-terminated, free with api->free */
    size_t body_len;
    long retry_after_s;          /* Retry-After in seconds, or -1 */
    int transient;               /* no answer, but trying again may get one */
    char error[256];             /* why the call failed (status < 0) */
} a4ps_http_response;

/* One program run (rule R12).  argv[0] is the program, an absolute path as
 * the configuration lists it; it gets input on stdin, and a clean
 * environment. */
typedef struct a4ps_run_request {
    size_t size;
    const char *const *argv;     /* NULL-terminated, at most 256 entries */
    const void *input;
    size_t input_len;
    unsigned timeout_ms;         /* wall limit; 0: the host's limit */
    size_t stdout_max;           /* more ends the run; 0: the host's limit */
    size_t stderr_max;           /* more is dropped; 0: the host's limit */
} a4ps_run_request;

typedef struct a4ps_run_result {
    size_t size;
    int exited;                  /* 1: exit_code holds its exit status */
    int exit_code;
    int signal;                  /* the signal that ended it, or 0 */
    int timed_out;               /* killed (with its process group) at the limit */
    int stdout_overflow;         /* killed for writing more than stdout_max */
    void *out;                   /* stdout, NUL-terminated; free with api->free */
    size_t out_len;
    void *err;                   /* stderr (cut at stderr_max); free with api->free */
    size_t err_len;
    char error[256];             /* why it could not run (status < 0) */
} a4ps_run_result;

/* The host's API table (rule R6: append only, size first). */
typedef struct a4ps_host_api {
    size_t size;                 /* sizeof(a4ps_host_api) as the host built it */
    uint32_t abi_major;          /* the host's ABI version */
    uint32_t abi_minor;

    /* ---- minor 0 ---- */

    /* Set the reply of the current call to data/len (replacing any earlier
     * reply), or append to it. */
    int (*reply)(a4ps_ctx *ctx, const void *data, size_t len);
    int (*reply_append)(a4ps_ctx *ctx, const void *data, size_t len);

    /* State of the calling proto, key -> bytes.  state_get copies at most cap
     * bytes into buf and returns the value's full length (call again with a
     * bigger buffer when it exceeds cap), or A4PS_ENOENT.  Keys are non-empty
     * NUL-terminated strings of at most 255 bytes.  Safe under concurrent
     * senders: each call is atomic for its key.  state_set and state_delete
     * may return A4PS_EIO when the host cannot record the change (its
     * journal cannot be written): nothing changed, and the call should fail
     * rather than claim it was kept. */
    int64_t (*state_get)(a4ps_ctx *ctx, const char *key, void *buf, size_t cap);
    int (*state_set)(a4ps_ctx *ctx, const char *key, const void *data, size_t len);
    int (*state_delete)(a4ps_ctx *ctx, const char *key);

    /* Send a message to another proto by name.  On success *reply (may be
     * NULL when there is none) is a NUL-terminated buffer of *reply_len bytes
     * that the caller frees with api->free.  On failure the status is returned
     * and *reply, if set, holds the error text. */
    int (*send)(a4ps_ctx *ctx, const char *proto, const char *selector,
                const void *msg, size_t len, void **reply, size_t *reply_len);

    /* Publish an event on the kernel's bus; delivery is asynchronous. */
    int (*emit)(a4ps_ctx *ctx, const char *event, const void *data, size_t len);

    /* Log one line at a syslog level, attributed to the plugin and proto. */
    void (*log)(a4ps_ctx *ctx, int level, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;

    /* Free a buffer the host handed out. */
    void (*free)(void *ptr);

    /* ---- minor 1 ---- */

    /* Walk the calling proto's keys (in no particular order). */
    int (*state_list)(a4ps_ctx *ctx, a4ps_key_fn each, void *arg);

    /* The calling proto's name, or NULL in hooks that have no proto. */
    const char *(*proto_name)(a4ps_ctx *ctx);

    /* ---- minor 2 ---- */

    /* Open a forge task: ask the host to write, test and adopt a new plugin
     * version.  request is JSON, as `a4psctl forge` sends it: {"proto",
     * "selector", "goal", "tests":[{"selector","input","expect"}],
     * "plugin" (a new plugin), "generator", "iterations", "wall_s",
     * "probation_s"}; the task records the calling plugin and proto as its
     * proposer.  On success *reply (free with api->free) is the task as JSON;
     * on failure the status, with the reason in *reply when set.
     * A4PS_ENOSYS when the host has no forge (a bare kernel, the probe);
     * A4PS_EPERM from a hook (methods only). */
    int (*forge)(a4ps_ctx *ctx, const char *request, void **reply, size_t *reply_len);

    /* ---- minor 3 ---- */

    /* One HTTP request through the host's helper (rule R12).  A4PS_OK when
     * an answer came (any status: see rs->status), with rs->body set;
     * otherwise a negative status and rs->error: A4PS_EPERM not granted to
     * this plugin, A4PS_ENOSYS no helper, A4PS_ETIMEDOUT, A4PS_ERANGE the
     * answer passed max_response, A4PS_EINVAL a malformed request,
     * A4PS_ERROR the transfer failed (rs->transient when a retry may help). */
    int (*http)(a4ps_ctx *ctx, const a4ps_http_request *rq, a4ps_http_response *rs);

    /* Run one program through the host's helper (rule R12).  A4PS_OK when it
     * ran (whatever its exit: see rs), with rs->out and rs->err set;
     * otherwise a negative status and rs->error (A4PS_EPERM, A4PS_ENOSYS,
     * A4PS_EINVAL, A4PS_ERROR: it could not be started). */
    int (*run)(a4ps_ctx *ctx, const a4ps_run_request *rq, a4ps_run_result *rs);
} a4ps_host_api;

/* True when the running host provides `entry` (rule R4/R6). */
#define A4PS_HOST_HAS(api, entry)                                           \
    ((api)->size >= offsetof(a4ps_host_api, entry) + sizeof((api)->entry) && \
     (api)->entry != NULL)

typedef struct a4ps_method {
    const char *selector;     /* NULL ends the table */
    a4ps_method_fn fn;
    const char *doc;          /* one line, shown by explain */
} a4ps_method;

/* The descriptor (rules R1-R8).  Fields are only ever appended. */
typedef struct a4ps_plugin {
    uint32_t abi_major;       /* A4PS_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;       /* A4PS_ABI_MINOR the plugin was built with */
    uint32_t struct_size;     /* sizeof(a4ps_plugin) the plugin was built with */
    uint32_t signature;       /* A4PS_BUILD_SIGNATURE */

    const char *name;         /* [a-z][a-z0-9_-]{0,63} */
    const char *version;      /* "X.Y.Z" */
    uint32_t state_version;   /* layout of the proto state this version keeps */
    uint32_t kind;            /* A4PS_KIND_* */
    const a4ps_method *methods;
    const char *const *dependencies;

    /* Once per loaded generation, before any method; no proto.  Non-zero
     * refuses the load. */
    int (*init)(a4ps_ctx *ctx);
    /* Once when the generation is unloaded, after its last call returned. */
    void (*fini)(a4ps_ctx *ctx);
    /* Convert a copy of the proto's state, written by a version whose
     * state_version was from_state_version (older on upgrade, newer on
     * rollback), into this version's layout, using the state functions.
     * A4PS_OK commits; anything else leaves the old version and its state. */
    int (*migrate)(a4ps_ctx *ctx, uint32_t from_state_version);
    /* A selector not in the table.  Return A4PS_ENOSYS to decline. */
    int (*does_not_understand)(a4ps_ctx *ctx, const char *selector,
                               const void *msg, size_t len);

    /* ---- minor 1 ---- */

    /* Run against a scratch proto with empty state; non-zero refuses. */
    int (*self_test)(a4ps_ctx *ctx);
    /* One line saying what the plugin is for. */
    const char *description;
} a4ps_plugin;

/* Size of the descriptor at each minor (rule R5).  Minors 2 and 3 appended
 * host entries (forge; http and run) and nothing to the descriptor, so their
 * size is minor 1's. */
#define A4PS_PLUGIN_SIZE_1_0 ((uint32_t)offsetof(a4ps_plugin, self_test))
#define A4PS_PLUGIN_SIZE_1_1 ((uint32_t)sizeof(a4ps_plugin))
#define A4PS_PLUGIN_SIZE_1_2 A4PS_PLUGIN_SIZE_1_1
#define A4PS_PLUGIN_SIZE_1_3 A4PS_PLUGIN_SIZE_1_1

/* The first four fields of every descriptor. */
#define A4PS_PLUGIN_HEADER                                           \
    .abi_major = A4PS_ABI_MAJOR, .abi_minor = A4PS_ABI_MINOR,        \
    .struct_size = (uint32_t)sizeof(a4ps_plugin),                    \
    .signature = A4PS_BUILD_SIGNATURE

#define A4PS_ENTRY_SYMBOL "a4ps_plugin_entry"

#if defined(__GNUC__)
#define A4PS_EXPORT __attribute__((visibility("default")))
#else
#define A4PS_EXPORT
#endif

/* The one exported symbol.  Called once per loaded generation with the host
 * table (keep the pointer if you like; it lives as long as the kernel).
 * Return the descriptor, or NULL to refuse loading (say why with nothing:
 * the kernel reports "entry returned NULL"). */
A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host);

/* ---- Convenience wrappers: the plain API in Lua's style, ctx first. ---- */
static inline int a4ps_reply(a4ps_ctx *c, const void *d, size_t n)
{
    return c->api->reply(c, d, n);
}
static inline int a4ps_reply_append(a4ps_ctx *c, const void *d, size_t n)
{
    return c->api->reply_append(c, d, n);
}
static inline int64_t a4ps_get(a4ps_ctx *c, const char *k, void *b, size_t cap)
{
    return c->api->state_get(c, k, b, cap);
}
static inline int a4ps_set(a4ps_ctx *c, const char *k, const void *d, size_t n)
{
    return c->api->state_set(c, k, d, n);
}
static inline int a4ps_del(a4ps_ctx *c, const char *k)
{
    return c->api->state_delete(c, k);
}

#ifdef __cplusplus
}
#endif

#endif /* A4PS_H */
