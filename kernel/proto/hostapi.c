/* hostapi.c -- the table of host functions every plugin receives.
 *
 * Each entry reaches the kernel through the call's context (kctx).  Buffers
 * from the plugin are checked and copied before any kernel lock is taken, so a
 * bad pointer faults inside the plugin's recovery point with nothing locked.
 *
 * The table itself is shared by every plugin, so no plugin may change it:
 * it lives in pages of its own, read-only once filled.  A plugin that casts
 * away const and writes an entry takes a SIGSEGV inside its own call, which
 * quarantines it alone; the others keep calling the kernel's functions. */
#include "kernel_int.h"

#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KC(ctx) ((kctx *)(ctx))

static kstate *ctx_state(kctx *c)
{
    if (c->state)
        return c->state;
    return c->proto ? c->proto->state : NULL;
}

static int h_reply(a4ps_ctx *ctx, const void *data, size_t len)
{
    kctx *c = KC(ctx);
    if (c->flags & KCTX_NO_REPLY)
        return A4PS_EPERM;
    if (!data && len)
        return A4PS_EINVAL;
    return reply_set(c->reply, data, len, false);
}

static int h_reply_append(a4ps_ctx *ctx, const void *data, size_t len)
{
    kctx *c = KC(ctx);
    if (c->flags & KCTX_NO_REPLY)
        return A4PS_EPERM;
    if (!data && len)
        return A4PS_EINVAL;
    return reply_set(c->reply, data, len, true);
}

static int64_t h_state_get(a4ps_ctx *ctx, const char *key, void *buf, size_t cap)
{
    kstate *s = ctx_state(KC(ctx));
    if (!s)
        return A4PS_EPERM;
    if (!kstate_key_valid(key))
        return A4PS_EINVAL;
    /* Read into a kernel buffer first: the plugin's buf is touched only
     * after the state lock is released. */
    void *val;
    size_t len;
    int rc = kstate_get_dup(s, key, &val, &len);
    if (rc)
        return rc == -ENOENT ? A4PS_ENOENT : A4PS_ENOMEM;
    if (buf && cap)
        memcpy(buf, val, len < cap ? len : cap);
    free(val);
    return (int64_t)len;
}

static int h_state_set(a4ps_ctx *ctx, const char *key, const void *data, size_t len)
{
    kstate *s = ctx_state(KC(ctx));
    if (!s)
        return A4PS_EPERM;
    if (!kstate_key_valid(key) || (!data && len))
        return A4PS_EINVAL;
    return kernel_state_status(kstate_set(s, key, data, len));
}

static int h_state_delete(a4ps_ctx *ctx, const char *key)
{
    kstate *s = ctx_state(KC(ctx));
    if (!s)
        return A4PS_EPERM;
    if (!kstate_key_valid(key))
        return A4PS_EINVAL;
    return kernel_state_status(kstate_del(s, key));
}

typedef struct list_arg {
    a4ps_key_fn each;
    void *arg;
} list_arg;

static int list_one(void *arg, const char *key, const void *val, size_t len)
{
    (void)val;
    list_arg *la = arg;
    return la->each(la->arg, key, len) ? 1 : 0;
}

static int h_state_list(a4ps_ctx *ctx, a4ps_key_fn each, void *arg)
{
    kstate *s = ctx_state(KC(ctx));
    if (!s)
        return A4PS_EPERM;
    if (!each)
        return A4PS_EINVAL;
    list_arg la = {each, arg};
    return kstate_each(s, list_one, &la) ? A4PS_ENOMEM : A4PS_OK;
}

static int h_send(a4ps_ctx *ctx, const char *proto, const char *selector,
                  const void *msg, size_t len, void **reply, size_t *reply_len)
{
    kctx *c = KC(ctx);
    if (reply)
        *reply = NULL;
    if (reply_len)
        *reply_len = 0;
    if (c->flags & KCTX_NO_SEND)
        return A4PS_EPERM;
    if (!proto || !selector || (!msg && len))
        return A4PS_EINVAL;
    kernel *k = c->k;
    kernel_reply r = {0};
    int rc;
    /* This context is the thread's slot for this depth: the callee (or one
     * it calls) can reach it -- a pointer kept from an earlier call at this
     * depth -- and point pub.api at a table of its own, which would hijack
     * our caller's later calls and dangle once the callee is unloaded.  Put
     * back what the kernel set, whatever happened inside. */
    const kctx saved = *c;
    /* A plugin call runs inside the read side already (worker, or a casual
     * thread that went online for the outermost send). */
    kproto *p = proto_lookup(k, proto);
    if (!p) {
        reply_printf(&r, "no proto named '%s'", proto);
        rc = A4PS_ENOENT;
    } else {
        atomic_fetch_add_explicit(&k->stats.sends, 1, memory_order_relaxed);
        rc = dispatch_send(k, p, selector_find(k, selector), selector, msg, len, &r);
        dispatch_count_failure(p, rc);
    }
    *c = saved;
    kthread *t = &kt_self;
    if (reply) {
        /* The buffer grew off the bill (reply_set); now it is the plugin's,
         * to free with api->free -- or to keep, and be charged for. */
        if (r.data)
            acct_charge(t, malloc_usable_size(r.data));
        *reply = r.data;
        if (reply_len)
            *reply_len = r.len;
    } else {
        acct_mark m = acct_hide_begin(t);
        free(r.data);
        acct_hide_end(t, m);
    }
    return rc;
}

static int h_emit(a4ps_ctx *ctx, const char *event, const void *data, size_t len)
{
    kctx *c = KC(ctx);
    if (!event || (!data && len))
        return A4PS_EINVAL;
    if (!k_bus(c->k))
        return A4PS_EBUSY;       /* shutting down: the bus is gone */
    char *copy = strndup(data ? data : "", len);
    if (!copy)
        return A4PS_ENOMEM;
    json_error_t jerr;
    json_t *payload = len ? json_loadb(copy, len, JSON_DECODE_ANY, &jerr) : NULL;
    if (!payload && len)
        payload = json_stringn(copy, len);
    free(copy);
    json_t *ev = json_pack("{s:s?, s:s?, s:s?, s:o?}",
                           "proto", c->proto ? c->proto->name : NULL,
                           "plugin", c->beh ? c->beh->d.name : NULL,
                           "version", c->beh ? c->beh->d.version : NULL,
                           "data", payload);
    if (!ev)
        return A4PS_ENOMEM;
    char *json = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!json)
        return A4PS_ENOMEM;
    /* The queued copy is freed by the bus thread: not this call's bill. */
    kthread *t = &kt_self;
    acct_mark m = acct_hide_begin(t);
    int rc = bus_publish(k_bus(c->k), event, json);
    acct_hide_end(t, m);
    free(json);
    return rc;
}

static void h_log(a4ps_ctx *ctx, int level, const char *fmt, ...)
{
    kctx *c = KC(ctx);
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "", ap);
    va_end(ap);
    if (level < A4PS_LOG_ERR)
        level = A4PS_LOG_ERR;
    if (level > A4PS_LOG_DEBUG)
        level = A4PS_LOG_DEBUG;
    /* The descriptor, not b->ver: init and self_test run before the
     * generation is attached to its version. */
    kernel_log(c->k, level, "plugin %s %s%s%s: %s",
               c->beh ? c->beh->d.name : "?", c->beh ? c->beh->d.version : "?",
               c->proto ? " on proto " : "", c->proto ? c->proto->name : "", msg);
}

static void h_free(void *ptr)
{
    free(ptr);
}

static const char *h_proto_name(a4ps_ctx *ctx)
{
    kctx *c = KC(ctx);
    return c->proto ? c->proto->name : NULL;
}

static int h_forge(a4ps_ctx *ctx, const char *request, void **reply, size_t *reply_len)
{
    kctx *c = KC(ctx);
    if (reply)
        *reply = NULL;
    if (reply_len)
        *reply_len = 0;
    char *out = NULL;
    int rc;
    if (c->flags & KCTX_NO_SEND) {
        /* Hooks run while the kernel holds its own lock; the forge asks
         * the kernel about protos. */
        out = strdup("forge: not from a hook (init, fini, migrate, self_test)");
        rc = A4PS_EPERM;
    } else if (!c->k->cfg.forge) {
        out = strdup("this host has no forge");
        rc = A4PS_ENOSYS;
    } else if (!request) {
        out = strdup("forge: the request is NULL");
        rc = A4PS_EINVAL;
    } else {
        rc = c->k->cfg.forge(c->k->cfg.forge_arg, c->proto ? c->proto->name : NULL,
                             c->beh ? c->beh->d.name : NULL, request, &out);
    }
    if (reply && out) {
        *reply = out;
        if (reply_len)
            *reply_len = strlen(out);
    } else {
        free(out);
    }
    return rc;
}

/* The http and run entries (rule R12).  The plugin's structs are copied
 * by their declared size (appended fields of a newer plugin are ignored;
 * a struct older than minor 3 cannot exist) and the outcome is written back
 * no further than the plugin's own size; the daemon's callback does the
 * rest, outside the kernel and with no kernel lock held. */
#define OUTSIDE_MIN(a, b) ((a) < (b) ? (a) : (b))

static int outside_refuse(char *error, size_t cap, int rc, const char *fmt, const char *what,
                          const char *plugin)
{
    snprintf(error, cap, fmt, what, plugin ? plugin : "?");
    return rc;
}

static int h_http(a4ps_ctx *ctx, const a4ps_http_request *rq, a4ps_http_response *rs)
{
    kctx *c = KC(ctx);
    if (!rs || rs->size < sizeof(a4ps_http_response))
        return A4PS_EINVAL;
    size_t rsize = rs->size;
    a4ps_http_response out = {.size = sizeof out, .retry_after_s = -1};
    const char *plugin = c->beh ? c->beh->d.name : NULL;
    int rc;
    if (!rq || rq->size < sizeof(a4ps_http_request)) {
        rc = outside_refuse(out.error, sizeof out.error, A4PS_EINVAL,
                            "%s: the request is NULL or smaller than at ABI 1.3 (plugin %s)",
                            "http", plugin);
    } else if (c->flags & KCTX_NO_SEND) {
        rc = outside_refuse(out.error, sizeof out.error, A4PS_EPERM,
                            "%s: not from a hook (init, fini, migrate, self_test): plugin %s, "
                            "rule R12", "http", plugin);
    } else if (!c->k->cfg.http) {
        rc = outside_refuse(out.error, sizeof out.error, A4PS_ENOSYS,
                            "%s: this host grants no outside access (plugin %s, rule R12)",
                            "http", plugin);
    } else {
        a4ps_http_request in;
        memcpy(&in, rq, sizeof in);
        in.size = sizeof in;
        rc = c->k->cfg.http(c->k->cfg.http_arg, plugin, &in, &out);
    }
    out.error[sizeof out.error - 1] = '\0';
    if (rc != A4PS_OK && !out.error[0])
        snprintf(out.error, sizeof out.error, "http: failed (%d)", rc);
    memcpy(rs, &out, OUTSIDE_MIN(rsize, sizeof out));
    rs->size = rsize;
    return rc;
}

static int h_run(a4ps_ctx *ctx, const a4ps_run_request *rq, a4ps_run_result *rs)
{
    kctx *c = KC(ctx);
    if (!rs || rs->size < sizeof(a4ps_run_result))
        return A4PS_EINVAL;
    size_t rsize = rs->size;
    a4ps_run_result out = {.size = sizeof out};
    const char *plugin = c->beh ? c->beh->d.name : NULL;
    int rc;
    if (!rq || rq->size < sizeof(a4ps_run_request)) {
        rc = outside_refuse(out.error, sizeof out.error, A4PS_EINVAL,
                            "%s: the request is NULL or smaller than at ABI 1.3 (plugin %s)",
                            "run", plugin);
    } else if (c->flags & KCTX_NO_SEND) {
        rc = outside_refuse(out.error, sizeof out.error, A4PS_EPERM,
                            "%s: not from a hook (init, fini, migrate, self_test): plugin %s, "
                            "rule R12", "run", plugin);
    } else if (!c->k->cfg.run) {
        rc = outside_refuse(out.error, sizeof out.error, A4PS_ENOSYS,
                            "%s: this host grants no outside access (plugin %s, rule R12)",
                            "run", plugin);
    } else {
        a4ps_run_request in;
        memcpy(&in, rq, sizeof in);
        in.size = sizeof in;
        rc = c->k->cfg.run(c->k->cfg.run_arg, plugin, &in, &out);
    }
    out.error[sizeof out.error - 1] = '\0';
    if (rc != A4PS_OK && !out.error[0])
        snprintf(out.error, sizeof out.error, "run: failed (%d)", rc);
    memcpy(rs, &out, OUTSIDE_MIN(rsize, sizeof out));
    rs->size = rsize;
    return rc;
}

#define HOSTAPI_NR_MSEAL 462   /* x86-64; glibc 2.36 has neither wrapper nor number */

static size_t table_bytes(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (sizeof(a4ps_host_api) + page - 1) / page * page;
}

static void fill(a4ps_host_api *api)
{
    memset(api, 0, sizeof *api);
    api->size = sizeof *api;
    api->abi_major = A4PS_ABI_MAJOR;
    api->abi_minor = A4PS_ABI_MINOR;
    api->reply = h_reply;
    api->reply_append = h_reply_append;
    api->state_get = h_state_get;
    api->state_set = h_state_set;
    api->state_delete = h_state_delete;
    api->send = h_send;
    api->emit = h_emit;
    api->log = h_log;
    api->free = h_free;
    api->state_list = h_state_list;
    api->proto_name = h_proto_name;
    api->forge = h_forge;
    api->http = h_http;
    api->run = h_run;
}

const a4ps_host_api *hostapi_create(void)
{
    size_t n = table_bytes();
    void *mem = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return NULL;
    fill(mem);
    if (mprotect(mem, n, PROT_READ) != 0) {
        int e = errno;
        munmap(mem, n);
        errno = e;
        return NULL;
    }
#ifdef __x86_64__
    /* Read-only is not enough: a plugin can mprotect the page writable
     * again.  mseal (Linux 6.10) makes the mapping's protection final; a
     * kernel without it keeps the table read-only only. */
    syscall(HOSTAPI_NR_MSEAL, mem, n, 0UL);
#endif
    return mem;
}

void hostapi_destroy(const a4ps_host_api *api)
{
    /* A sealed table cannot be unmapped (EPERM): its page stays, harmless. */
    if (api)
        munmap((void *)api, table_bytes());
}
