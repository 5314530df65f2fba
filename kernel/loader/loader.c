/* loader.c -- from a file on disk to a validated, initialised generation.
 *
 * The order matters and is the loader's whole contract:
 *   1. open the file once and read it into memory: every later check is made
 *      on these bytes and these bytes are what gets loaded (no TOCTOU);
 *   2. refuse what is not a regular file, is writable by group or others, is
 *      too large, or is not an ELF shared object for this machine exporting
 *      the entry symbol (elfcheck.c) -- no plugin code has run yet;
 *   3. the verification hook (the sandbox probe) sees path and SHA-256;
 *   4. the bytes are stored once by hash (for reload and rollback) and
 *      written to a unique generation path, so glibc never hands back a
 *      cached older library, and dlopen'ed RTLD_NOW | RTLD_LOCAL -- unless
 *      it imports thread or process creation (elfcheck.c) and the config's
 *      may_thread does not permit it; a generation that imports it is
 *      pinned once dlopened: never dlclosed, since a thread it started may
 *      still run its code;
 *   5. the entry is called and the descriptor validated under a recovery
 *      point (rules R1-R8 of a4ps.h); init and self_test run bounded.
 * A refusal at any step leaves every loaded generation and proto untouched. */
#include "kernel_int.h"
#include "loader/elfcheck.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_METHODS 1024
#define MAX_DEPS 64
#define MAX_DESCRIPTOR 65536

/* ---- Versions ---- */

kver *loader_find(kernel *k, const char *name, const char *version)
{
    for (kver *v = k->versions; v; v = v->next)
        if (!strcmp(v->name, name) && (!version || !strcmp(v->version, version)))
            return v;
    return NULL;
}

static int vnum_cmp(const uint32_t a[3], const uint32_t b[3])
{
    for (int i = 0; i < 3; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return 0;
}

int loader_version_cmp(const kver *a, const kver *b)
{
    return vnum_cmp(a->vnum, b->vnum);
}

kver *loader_newest(kernel *k, const char *name)
{
    kver *best = NULL;
    for (kver *v = k->versions; v; v = v->next)
        if (!strcmp(v->name, name) && v->status != KVER_QUARANTINED &&
            (!best || loader_version_cmp(v, best) > 0))
            best = v;
    return best;
}

static int parse_version(const char *s, uint32_t out[3])
{
    for (int i = 0; i < 3; i++) {
        if (*s < '0' || *s > '9')
            return -1;
        uint64_t n = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            n = n * 10 + (uint64_t)(*s++ - '0');
            if (++digits > 9)
                return -1;
        }
        out[i] = (uint32_t)n;
        if (i < 2 && *s++ != '.')
            return -1;
    }
    return *s ? -1 : 0;
}

int plugin_name_valid(const char *s)
{
    if (!(*s >= 'a' && *s <= 'z'))
        return 0;
    size_t n = 0;
    for (; *s; s++, n++)
        if (n >= 64 || !((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
                         *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int selector_valid(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return 0;
    size_t n = 0;
    for (; *s; s++, n++)
        if (n >= 64 || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                         (*s >= '0' && *s <= '9') || *s == '_' || *s == ':' ||
                         *s == '.' || *s == '-'))
            return 0;
    return 1;
}

/* ---- Hooks, bounded in time, on their own thread ---- */

typedef struct hookrun {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int refs;                    /* waiter + thread */
    bool done;
    int rc, sig;
    int which;
    uint32_t arg;
    kbeh *b;
    kctx c;
    kstate *orphan;              /* migrate copy abandoned by a timed-out waiter */
} hookrun;

static void hookrun_put(hookrun *h)
{
    pthread_mutex_lock(&h->lock);
    int left = --h->refs;
    pthread_mutex_unlock(&h->lock);
    if (left)
        return;
    kstate_free(h->orphan);
    if (h->c.proto)
        proto_put(h->c.proto);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cv);
    free(h);
}

static void hook_thunk(void *arg)
{
    hookrun *h = arg;
    const a4ps_plugin *d = &h->b->d;
    switch (h->which) {
    case HOOK_INIT: h->rc = d->init(&h->c.pub); break;
    case HOOK_FINI: d->fini(&h->c.pub); h->rc = 0; break;
    case HOOK_MIGRATE: h->rc = d->migrate(&h->c.pub, h->arg); break;
    case HOOK_SELF_TEST: h->rc = d->self_test(&h->c.pub); break;
    }
}

static void *hook_main(void *arg)
{
    hookrun *h = arg;
    kthread *t = kernel_thread_self();
    fault_thread_init(t);
    kfault f;
    h->sig = fault_guard(t, &f, hook_thunk, h);
    fault_thread_fini(t);
    pthread_mutex_lock(&h->lock);
    h->done = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->lock);
    hookrun_put(h);
    return NULL;
}

static const char *hook_name(int which)
{
    static const char *names[] = {"init", "fini", "migrate", "self_test"};
    return names[which];
}

/* Runs hook `which` of b with context c (copied) on a thread of its own.
 * Returns 0, the hook's failure as A4PS_ERROR, A4PS_EFAULT or A4PS_ETIMEDOUT.
 * On timeout the hook's thread keeps running and keeps a reference on b (it
 * can never be unmapped) and on c->proto; c->state then belongs to it and
 * c->state is set to NULL. */
int loader_run_hook(kernel *k, kbeh *b, int which, kctx *c, uint32_t arg,
                    unsigned timeout_ms, char *err, size_t errlen)
{
    hookrun *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "%s: out of memory", hook_name(which));
        return A4PS_ENOMEM;
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    h->refs = 2;
    h->which = which;
    h->arg = arg;
    h->b = b;
    h->c = *c;
    if (h->c.proto)
        atomic_fetch_add(&h->c.proto->refs, 1);   /* outlives a destroy while the hook runs */
    h->c.pub.api = k->api;
    h->c.flags |= KCTX_NO_SEND | KCTX_NO_REPLY;
    h->c.reply = NULL;

    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int prc = pthread_create(&th, &at, hook_main, h);
    pthread_attr_destroy(&at);
    if (prc) {
        if (h->c.proto)
            proto_put(h->c.proto);
        free(h);
        snprintf(err, errlen, "%s: cannot start a thread: %s", hook_name(which), strerror(prc));
        return A4PS_ENOMEM;
    }
    struct timespec dl = kernel_deadline(timeout_ms);
    pthread_mutex_lock(&h->lock);
    while (!h->done)
        if (pthread_cond_timedwait(&h->cv, &h->lock, &dl) == ETIMEDOUT)
            break;
    bool done = h->done;
    int rc = h->rc, sig = h->sig;
    if (!done) {
        /* The thread still runs plugin code: the generation stays mapped. */
        b->refs++;
        b->state = which == HOOK_FINI ? KBEH_FINI_HUNG : KBEH_HOOK_HUNG;
        /* Whatever state it works on is its own now (migrate's copy,
         * self_test's scratch): freed when -- if ever -- it returns. */
        h->orphan = c->state;
        c->state = NULL;
    }
    pthread_mutex_unlock(&h->lock);
    hookrun_put(h);

    if (!done) {
        snprintf(err, errlen, "%s: did not return within %u ms", hook_name(which), timeout_ms);
        return A4PS_ETIMEDOUT;
    }
    if (sig) {
        snprintf(err, errlen, "%s: crashed with %s", hook_name(which), fault_signame(sig));
        return A4PS_EFAULT;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s: failed (returned %d)", hook_name(which), rc);
        return A4PS_ERROR;
    }
    return A4PS_OK;
}

/* ---- Descriptor validation, under a recovery point ---- */

typedef struct entry_call {
    kernel *k;
    void *dl;
    const a4ps_plugin *(*entry)(const a4ps_host_api *);
    kbeh *b;
    char why[KERNEL_ERRLEN];
} entry_call;

static int fn_inside(void *dl, const void *fn)
{
    Dl_info di;
    void *base = NULL;
    Dl_info self;
    if (!dladdr(fn, &di))
        return 0;
    /* The plugin's own base: that of its entry symbol. */
    void *entry = dlsym(dl, A4PS_ENTRY_SYMBOL);
    if (!entry || !dladdr(entry, &self))
        return 0;
    base = self.dli_fbase;
    return di.dli_fbase == base;
}

#define FAIL(...)                                          \
    do {                                                   \
        snprintf(ec->why, sizeof ec->why, __VA_ARGS__);    \
        return;                                            \
    } while (0)

static void entry_thunk(void *arg)
{
    entry_call *ec = arg;
    kbeh *b = ec->b;
    const a4ps_plugin *p = ec->entry(ec->k->api);
    if (!p)
        FAIL("entry: entry returned NULL (%s refused to load the plugin)", A4PS_ENTRY_SYMBOL);
    if (p->abi_major != A4PS_ABI_MAJOR)
        FAIL("abi_major: built for ABI major %u, this kernel speaks %u",
                   p->abi_major, A4PS_ABI_MAJOR);
    if (p->signature != A4PS_BUILD_SIGNATURE)
        FAIL("signature: built for %u-byte pointers, %s-endian, ABI major %u; "
                   "this kernel is %u-byte, %s-endian, ABI major %u",
                   p->signature >> 24, (p->signature >> 16) & 0xff ? "big" : "little",
                   p->signature & 0xffff, (unsigned)sizeof(void *),
                   A4PS_BUILD_BIG_ENDIAN ? "big" : "little", A4PS_ABI_MAJOR);
    uint32_t need = p->abi_minor == 0 ? A4PS_PLUGIN_SIZE_1_0 : A4PS_PLUGIN_SIZE_1_1;
    if (p->struct_size < need || p->struct_size > MAX_DESCRIPTOR)
        FAIL("struct_size: %u bytes, but an ABI %u.%u descriptor is at least %u",
                   p->struct_size, p->abi_major, p->abi_minor, need);
    /* Rules R3/R4: read what the plugin declared, up to what we know. */
    memset(&b->d, 0, sizeof b->d);
    memcpy(&b->d, p, p->struct_size < sizeof b->d ? p->struct_size : sizeof b->d);
    const a4ps_plugin *d = &b->d;
    if (!d->name || !*d->name)
        FAIL("name: empty");
    if (!plugin_name_valid(d->name))
        FAIL("name: '%.64s' must match [a-z][a-z0-9_-]{0,63}", d->name);
    uint32_t vnum[3];
    if (!d->version || parse_version(d->version, vnum) != 0)
        FAIL("version: '%.32s' is not X.Y.Z", d->version ? d->version : "(null)");
    if (d->kind < A4PS_KIND_PERSONA || d->kind > A4PS_KIND_MONITOR)
        FAIL("kind: %u is not a known kind (1-4)", d->kind);
    if (!d->methods)
        FAIL("methods: NULL");
    uint32_t n = 0;
    while (n <= MAX_METHODS && d->methods[n].selector)
        n++;
    if (n == 0)
        FAIL("methods: the table is empty");
    if (n > MAX_METHODS)
        FAIL("methods: more than %d methods", MAX_METHODS);
    for (uint32_t i = 0; i < n; i++) {
        const a4ps_method *m = &d->methods[i];
        if (!selector_valid(m->selector))
            FAIL("methods[%u].selector: '%.64s' must match [A-Za-z_][A-Za-z0-9_:.-]{0,63}",
                       i, m->selector);
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(d->methods[j].selector, m->selector))
                FAIL("methods[%u].selector: '%s' is defined twice (also methods[%u])",
                           i, m->selector, j);
        if (!m->fn)
            FAIL("methods[%u].fn: NULL for selector '%s'", i, m->selector);
        if (!fn_inside(ec->dl, (const void *)m->fn))
            FAIL("methods[%u].fn: '%s' points outside the plugin", i, m->selector);
    }
    if (d->dependencies) {
        int nd = 0;
        for (; d->dependencies[nd]; nd++)
            if (nd >= MAX_DEPS || !plugin_name_valid(d->dependencies[nd]))
                FAIL("dependencies[%d]: '%.64s' is not a plugin name", nd,
                           d->dependencies[nd]);
    }
    struct { const char *name; const void *fn; } hooks[] = {
        {"init", (const void *)d->init}, {"fini", (const void *)d->fini},
        {"migrate", (const void *)d->migrate},
        {"does_not_understand", (const void *)d->does_not_understand},
        {"self_test", (const void *)d->self_test},
    };
    for (size_t i = 0; i < sizeof hooks / sizeof hooks[0]; i++)
        if (hooks[i].fn && !fn_inside(ec->dl, hooks[i].fn))
            FAIL("%s: hook points outside the plugin", hooks[i].name);
    if (d->description && strnlen(d->description, 513) > 512)
        FAIL("description: longer than 512 bytes");
    b->nmethods = n;
}

/* ---- Files ---- */

static int write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    const char *p = buf;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            unlink(path);
            return e;
        }
        p += w;
        left -= (size_t)w;
    }
    if (close(fd) != 0) {
        int e = -errno;
        unlink(path);
        return e;
    }
    return 0;
}

static int read_fd(int fd, size_t size, unsigned char **out)
{
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return r < 0 ? -errno : -EIO;   /* shrank while we read */
        }
        got += (size_t)r;
    }
    *out = buf;
    return 0;
}

/* Load bytes as a new generation.  Caller holds k->lock.  On success *out
 * has refs 0 and ver NULL: the caller attaches it to its kver. */
static int generation_load(kernel *k, const unsigned char *bytes, size_t len,
                           const char *sha_hex, const char *label, kbeh **out,
                           char *err, size_t errlen)
{
    int rc;
    kbeh *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "%s: out of memory", label);
        return A4PS_ENOMEM;
    }
    b->k = k;
    /* Thread and process creation, read from the bytes before any of their
     * code runs. */
    char imp[sizeof b->pin_why];
    int ti = elf_thread_import(bytes, len, imp, sizeof imp);
    if (ti < 0) {
        snprintf(err, errlen, "%s: .dynsym: malformed or truncated", label);
        free(b);
        return A4PS_EINVAL;
    }
    if (ti > 0 && k->cfg.check_threads && !k->cfg.may_thread) {
        snprintf(err, errlen, "%s: imports %s, which starts threads or processes or reaches "
                 "what does; no plugin is permitted to (limits.allow_threads)", label, imp);
        free(b);
        return A4PS_EPERM;
    }
    b->gen = ++k->next_gen;
    if (asprintf(&b->path, "%s/%llu-%.16s.so", k->gen_dir, (unsigned long long)b->gen, sha_hex) < 0) {
        b->path = NULL;
        rc = A4PS_ENOMEM;
        snprintf(err, errlen, "%s: out of memory", label);
        goto fail;
    }
    rc = write_file(b->path, bytes, len, 0500);
    if (rc) {
        snprintf(err, errlen, "%s: cannot write generation %s: %s", label, b->path, strerror(-rc));
        rc = A4PS_ERROR;
        goto fail_nofile;
    }
    b->dl = dlopen(b->path, RTLD_NOW | RTLD_LOCAL);
    if (!b->dl) {
        const char *e = dlerror();
        snprintf(err, errlen, "%s: dlopen: %s", label, e ? e : "unknown error");
        rc = A4PS_ERROR;
        goto fail;
    }
    if (ti > 0) {
        /* Its constructors may have started a thread already: from now on
         * this mapping is never taken away. */
        b->pinned = true;
        snprintf(b->pin_why, sizeof b->pin_why, "%s", imp);
    }
    entry_call ec = {.k = k, .dl = b->dl, .b = b};
    *(void **)&ec.entry = dlsym(b->dl, A4PS_ENTRY_SYMBOL);
    if (!ec.entry) {
        snprintf(err, errlen, "%s: %s: not found by dlsym", label, A4PS_ENTRY_SYMBOL);
        rc = A4PS_ERROR;
        goto fail_close;
    }
    kfault f;
    int sig = fault_guard(kernel_thread_self(), &f, entry_thunk, &ec);
    if (sig) {
        snprintf(err, errlen, "%s: entry: crashed with %s while producing its descriptor",
                 label, fault_signame(sig));
        /* Its code faulted once: do not run its destructors in the kernel. */
        b->dl = NULL;
        rc = A4PS_EFAULT;
        goto fail;
    }
    if (ec.why[0]) {
        snprintf(err, errlen, "%s: %s", label, ec.why);
        rc = A4PS_EINVAL;
        goto fail_close;
    }
    if (ti > 0 && k->cfg.check_threads && !k->cfg.may_thread(k->cfg.may_thread_arg, b->d.name)) {
        snprintf(err, errlen, "%s: plugin %s imports %s, which starts threads or processes or "
                 "reaches what does, and is not permitted to (limits.allow_threads); its code "
                 "stays mapped", label, b->d.name, imp);
        rc = A4PS_EPERM;
        goto fail_close;
    }
    *out = b;
    return A4PS_OK;

fail_close:
    if (!b->pinned)
        dlclose(b->dl);          /* pinned: left mapped, handle and all */
fail:
    unlink(b->path);
fail_nofile:
    free(b->path);
    free(b);
    return rc;
}

/* Build the dispatch table of b (interning its selectors) and run its init
 * and self_test hooks.  Caller holds k->lock. */
static int generation_start(kernel *k, kbeh *b, const char *label, char *err, size_t errlen)
{
    char why[KERNEL_ERRLEN];
    b->method_sel = calloc(b->nmethods, sizeof *b->method_sel);
    b->docs = calloc(b->nmethods, sizeof *b->docs);
    if (!b->method_sel || !b->docs)
        goto nomem;
    for (uint32_t i = 0; i < b->nmethods; i++) {
        b->method_sel[i] = selector_intern(k, b->d.methods[i].selector);
        if (b->method_sel[i] == UINT32_MAX)
            goto nomem;
        b->docs[i] = b->d.methods[i].doc ? b->d.methods[i].doc : "";
    }
    uint32_t nsel = k->nselectors;
    b->disp = calloc(1, sizeof *b->disp + (size_t)nsel * sizeof b->disp->fn[0]);
    if (!b->disp)
        goto nomem;
    b->disp->beh = b;
    for (uint32_t i = 0; i < b->nmethods; i++)
        b->disp->fn[b->method_sel[i]] = b->d.methods[i].fn;
    atomic_store(&b->disp->nsel, nsel);

    if (b->d.init) {
        kctx c = {.k = k, .beh = b};
        int rc = loader_run_hook(k, b, HOOK_INIT, &c, 0, k->cfg.hook_timeout_ms, why, sizeof why);
        if (rc) {
            snprintf(err, errlen, "%s: %s", label, why);
            if (rc == A4PS_EFAULT)
                b->dl = NULL;    /* its code faulted: run none of its destructors */
            return rc;
        }
    }
    if (b->d.self_test && k->cfg.run_self_test) {
        kstate *scratch = kstate_new();
        if (!scratch)
            goto nomem;
        kctx c = {.k = k, .beh = b, .state = scratch};
        int rc = loader_run_hook(k, b, HOOK_SELF_TEST, &c, 0, k->cfg.hook_timeout_ms, why, sizeof why);
        kstate_free(c.state);    /* NULL if a hung self_test still owns it */
        if (rc) {
            snprintf(err, errlen, "%s: %s", label, why);
            if (rc == A4PS_EFAULT)
                b->dl = NULL;
            if (b->d.fini && rc != A4PS_ETIMEDOUT && rc != A4PS_EFAULT) {
                kctx fc = {.k = k, .beh = b};
                loader_run_hook(k, b, HOOK_FINI, &fc, 0, k->cfg.hook_timeout_ms, why, sizeof why);
            }
            return rc;
        }
    }
    return A4PS_OK;
nomem:
    snprintf(err, errlen, "%s: out of memory building the dispatch table", label);
    return A4PS_ENOMEM;
}

/* Free a generation that never ran code beyond its hooks' failure, or whose
 * grace period has passed.  The mapping is kept when a hook hung or faulted. */
void loader_beh_free(kbeh *b)
{
    if (!b)
        return;
    if (b->state == KBEH_HOOK_HUNG || b->state == KBEH_FINI_HUNG) {
        /* Its thread may still run its code: keep the mapping, and keep the
         * record where kernel_destroy finds it.  Caller holds k->lock. */
        b->next = b->k->hung;
        b->k->hung = b;
        return;
    }
    if (b->pinned) {
        /* A thread it started may run its code at any time: keep the
         * mapping and a record for status (kernel_destroy frees it). */
        if (b->path)
            unlink(b->path);
        kbeh *top = atomic_load(&b->k->pinned);
        do
            b->next = top;
        while (!atomic_compare_exchange_weak(&b->k->pinned, &top, b));
        return;
    }
    if (b->dl)
        dlclose(b->dl);
    if (b->path)
        unlink(b->path);
    loader_beh_forget(b);
}

void loader_beh_forget(kbeh *b)
{
    free(b->path);
    free(b->disp);
    free(b->method_sel);
    free(b->docs);
    free(b);
}

static void refuse(kernel *k, const char *path, const char *msg)
{
    atomic_fetch_add(&k->stats.refusals, 1);
    kernel_log(k, A4PS_LOG_ERR, "refused %s", msg);
    kernel_record_error(k, msg);
    kernel_emitf(k, "plugin_refused", "{s:s, s:s}", "file", path, "reason", msg);
}

/* Write the bytes under the kernel's store, named by hash. */
static int store_bytes(kernel *k, const unsigned char *bytes, size_t len,
                       const char *sha_hex, char **out)
{
    char *path;
    if (asprintf(&path, "%s/%s.so", k->store_dir, sha_hex) < 0)
        return -ENOMEM;
    int rc = write_file(path, bytes, len, 0400);
    if (rc == -EEXIST)
        rc = 0;
    if (rc) {
        free(path);
        return rc;
    }
    *out = path;
    return 0;
}

static void fill_info(kernel_version_info *info, kver *v, kbeh *b)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", v->name);
    snprintf(info->version, sizeof info->version, "%s", v->version);
    memcpy(info->sha256, v->sha_hex, 65);
    info->state_version = v->state_version;
    info->generation = b ? b->gen : 0;
}

int loader_load_file(kernel *k, const char *path, unsigned flags,
                     kernel_version_info *info, char *err, size_t errlen)
{
    char why[KERNEL_ERRLEN], msg[KERNEL_ERRLEN];
    unsigned char *bytes = NULL;
    unsigned char sha[32];
    char hex[65];
    char *report = NULL;         /* the verifier's, kept with the version */
    struct stat st;
    int rc;
    size_t max = k->cfg.max_plugin_bytes;

    /* A symlink is followed (an operator may link a plugin in), but only to
     * a regular file: a FIFO or a device is refused without being opened. */
    int fd = kernel_open_regular(path, false, &st, why, sizeof why);
    if (fd < 0) {
        snprintf(msg, sizeof msg, "%s: file: %s", path, why);
        rc = errno == ENOENT ? A4PS_ENOENT : errno == EINVAL ? A4PS_EINVAL : A4PS_ERROR;
        goto refused;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(msg, sizeof msg, "%s: file: writable by %s (mode %04o); chmod go-w it",
                 path, (st.st_mode & S_IWOTH) ? "others" : "group",
                 (unsigned)(st.st_mode & 07777));
        rc = A4PS_EINVAL;
        goto refused;
    }
    if ((size_t)st.st_size > max) {
        snprintf(msg, sizeof msg, "%s: file: %lld bytes, larger than max_plugin_bytes (%zu)",
                 path, (long long)st.st_size, max);
        rc = A4PS_ERANGE;
        goto refused;
    }
    rc = read_fd(fd, (size_t)st.st_size, &bytes);
    if (rc) {
        snprintf(msg, sizeof msg, "%s: file: cannot read: %s", path, strerror(-rc));
        rc = A4PS_ERROR;
        goto refused;
    }
    close(fd);
    fd = -1;
    if (elf_check(bytes, (size_t)st.st_size, A4PS_ENTRY_SYMBOL, why, sizeof why) != 0) {
        snprintf(msg, sizeof msg, "%s: %s", path, why);
        rc = A4PS_EINVAL;
        goto refused;
    }
    kernel_sha256(bytes, (size_t)st.st_size, sha, hex);
    if (k->cfg.verify) {
        why[0] = 0;
        if (k->cfg.verify(k->cfg.verify_arg, path, hex, &report, why, sizeof why) != 0) {
            snprintf(msg, sizeof msg, "%s: verification: %s", path, why[0] ? why : "refused");
            rc = A4PS_EPERM;
            goto refused;
        }
    }

    pthread_mutex_lock(&k->lock);
    for (kver *v = k->versions; v; v = v->next) {
        if (memcmp(v->sha, sha, 32) != 0)
            continue;
        if (v->status == KVER_QUARANTINED) {
            snprintf(msg, sizeof msg, "%s: sha256: this binary (%s %s) was quarantined: %s",
                     path, v->name, v->version, v->reason);
            rc = A4PS_EQUARANTINED;
            goto refused_locked;
        }
        fill_info(info, v, v->loaded);
        pthread_mutex_unlock(&k->lock);
        free(bytes);
        free(report);
        snprintf(err, errlen, "%s: already loaded as %s %s", path, v->name, v->version);
        return A4PS_EEXIST;
    }
    char *stored = NULL;
    rc = store_bytes(k, bytes, (size_t)st.st_size, hex, &stored);
    if (rc) {
        snprintf(msg, sizeof msg, "%s: store: cannot write under %s: %s", path,
                 k->store_dir, strerror(-rc));
        rc = A4PS_ERROR;
        goto refused_locked;
    }
    kbeh *b = NULL;
    rc = generation_load(k, bytes, (size_t)st.st_size, hex, path, &b, msg, sizeof msg);
    if (rc)
        goto refused_stored;
    kver *same = loader_find(k, b->d.name, b->d.version);
    if (same) {
        snprintf(msg, sizeof msg, "%s: version: %s %s is already loaded with another "
                 "binary (sha256 %.16s...); give the new one a new version",
                 path, b->d.name, b->d.version, same->sha_hex);
        rc = A4PS_EEXIST;
        loader_beh_free(b);
        goto refused_stored;
    }
    if (flags & KERNEL_LOAD_NO_DOWNGRADE) {
        kver *top = loader_newest(k, b->d.name);
        uint32_t vn[3];
        parse_version(b->d.version, vn);
        if (top && vnum_cmp(vn, top->vnum) < 0) {
            snprintf(msg, sizeof msg, "%s: version: %s %s is lower than the live %s; "
                     "going back is a rollback (a4psctl rollback), not a drop",
                     path, b->d.name, b->d.version, top->version);
            rc = A4PS_EPERM;
            loader_beh_free(b);
            goto refused_stored;
        }
    }
    rc = generation_start(k, b, path, msg, sizeof msg);
    if (rc) {
        loader_beh_free(b);
        goto refused_stored;
    }
    kver *v = calloc(1, sizeof *v);
    if (v && k->acct && !(v->usage = kusage_new())) {
        free(v);
        v = NULL;
    }
    if (!v) {
        snprintf(msg, sizeof msg, "%s: out of memory", path);
        rc = A4PS_ENOMEM;
        loader_beh_free(b);
        goto refused_stored;
    }
    snprintf(v->name, sizeof v->name, "%s", b->d.name);
    snprintf(v->version, sizeof v->version, "%s", b->d.version);
    parse_version(v->version, v->vnum);
    memcpy(v->sha, sha, 32);
    memcpy(v->sha_hex, hex, 65);
    v->state_version = b->d.state_version;
    v->kind = b->d.kind;
    v->stored_path = stored;
    v->origin = strdup(path);
    v->report = report;
    report = NULL;
    v->lineage_gen = 1;          /* not in any image yet */
    v->status = KVER_LIVE;
    v->loaded_at = time(NULL);
    kver *newest = loader_newest(k, v->name);
    v->parent = newest;
    v->loaded = b;
    b->ver = v;
    b->disp->usage = v->usage;   /* before any proto publishes this table */
    v->next = k->versions;
    k->versions = v;
    b->next = k->behs;
    k->behs = b;
    /* The newest version of each name stays loaded, ready for new protos. */
    if (!newest || loader_version_cmp(v, newest) > 0) {
        beh_hold(b);
        b->registry = true;
        if (newest && newest->loaded && newest->loaded->registry) {
            newest->loaded->registry = false;
            beh_release(k, newest->loaded);
        }
    } else {
        beh_hold(b);
        beh_release(k, b);       /* an older version: stored, unloaded when idle */
    }
    fill_info(info, v, b);
    kernel_log(k, A4PS_LOG_INFO, "loaded %s %s (sha256 %.16s, generation %llu) from %s",
               v->name, v->version, v->sha_hex, (unsigned long long)b->gen, path);
    kernel_emitf(k, "plugin_loaded", "{s:s, s:s, s:s, s:s, s:I}", "plugin", v->name,
                 "version", v->version, "sha256", v->sha_hex, "file", path,
                 "generation", (json_int_t)b->gen);
    pthread_mutex_unlock(&k->lock);
    free(bytes);
    return A4PS_OK;

refused_stored:
    /* Keep the stored copy only if some version uses it. */
    {
        bool used = false;
        for (kver *x = k->versions; x; x = x->next)
            if (!memcmp(x->sha, sha, 32))
                used = true;
        if (!used)
            unlink(stored);
        free(stored);
    }
refused_locked:
    pthread_mutex_unlock(&k->lock);
refused:
    if (fd >= 0)
        close(fd);
    free(bytes);
    free(report);
    refuse(k, path, msg);
    snprintf(err, errlen, "%s", msg);
    return rc;
}

int loader_materialize(kernel *k, kver *v, kbeh **out, char *err, size_t errlen)
{
    char label[KERNEL_NAME_MAX + 48];
    snprintf(label, sizeof label, "%s %s (stored)", v->name, v->version);
    if (v->loaded && v->loaded->state == KBEH_ACTIVE) {
        *out = v->loaded;
        return A4PS_OK;
    }
    if (v->status == KVER_QUARANTINED) {
        snprintf(err, errlen, "%s: quarantined: %s", label, v->reason);
        return A4PS_EQUARANTINED;
    }
    /* The stored copy is a4psd's own: never a link, never a FIFO. */
    char why[256];
    struct stat st;
    unsigned char *bytes = NULL;
    int fd = kernel_open_regular(v->stored_path, true, &st, why, sizeof why);
    int rrc = fd < 0 ? 0 : read_fd(fd, (size_t)st.st_size, &bytes);
    if (fd < 0 || rrc != 0) {
        snprintf(err, errlen, "%s: cannot read %s: %s", label, v->stored_path,
                 fd < 0 ? why : strerror(-rrc));
        if (fd >= 0)
            close(fd);
        return A4PS_ERROR;
    }
    close(fd);
    unsigned char sha[32];
    char hex[65];
    kernel_sha256(bytes, (size_t)st.st_size, sha, hex);
    if (memcmp(sha, v->sha, 32) != 0) {
        snprintf(err, errlen, "%s: sha256: stored copy %s changed (now %.16s...)", label,
                 v->stored_path, hex);
        free(bytes);
        return A4PS_ERROR;
    }
    kbeh *b = NULL;
    int rc = generation_load(k, bytes, (size_t)st.st_size, hex, label, &b, err, errlen);
    free(bytes);
    if (rc)
        return rc;
    if (strcmp(b->d.name, v->name) || strcmp(b->d.version, v->version) ||
        b->d.state_version != v->state_version) {
        snprintf(err, errlen, "%s: descriptor: the stored binary now says %s %s", label,
                 b->d.name, b->d.version);
        loader_beh_free(b);
        return A4PS_ERROR;
    }
    rc = generation_start(k, b, label, err, errlen);
    if (rc) {
        loader_beh_free(b);
        return rc;
    }
    b->ver = v;
    b->disp->usage = v->usage;
    v->loaded = b;
    v->status = KVER_LIVE;
    b->next = k->behs;
    k->behs = b;
    kernel_log(k, A4PS_LOG_INFO, "loaded %s %s again from the store (generation %llu)",
               v->name, v->version, (unsigned long long)b->gen);
    *out = b;
    return A4PS_OK;
}

int kernel_version_annotate(kernel *k, const char *name, const char *version,
                            const char *source, const char *report, const char *origin)
{
    char *s = source ? strdup(source) : NULL, *r = report ? strdup(report) : NULL,
         *o = origin ? strdup(origin) : NULL;
    if ((source && !s) || (report && !r) || (origin && !o)) {
        free(s);
        free(r);
        free(o);
        return A4PS_ENOMEM;
    }
    pthread_mutex_lock(&k->lock);
    kver *v = name && version ? loader_find(k, name, version) : NULL;
    if (!v) {
        pthread_mutex_unlock(&k->lock);
        free(s);
        free(r);
        free(o);
        return A4PS_ENOENT;
    }
    /* Swap the pointers under the lock; readers (history, snapshots) copy
     * them under it too. */
    if (s) {
        free(v->source);
        v->source = s;
    }
    if (r) {
        free(v->report);
        v->report = r;
    }
    if (o) {
        free(v->origin);
        v->origin = o;
    }
    v->lineage_gen++;
    pthread_mutex_unlock(&k->lock);
    return A4PS_OK;
}
