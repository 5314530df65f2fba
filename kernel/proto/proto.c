/* proto.c -- the ProtoManager: protos, selectors, introspection.
 *
 * Protos live in an RCU-read map (name -> kproto) so send-by-name needs no
 * lock; creating, destroying and cloning take k->lock.  A destroyed proto's
 * dispatch pointer becomes the tomb, so a handle that outlives it gets a clear
 * error instead of a dangling behaviour, and its memory goes only when the
 * last handle is released and a grace period has passed. */
#include "kernel_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SELECTORS 65536

uint32_t selector_intern(kernel *k, const char *sel)
{
    void *v = strmap_get(k->selectors, sel);
    if (v)
        return (uint32_t)((uintptr_t)v - 1);
    if (k->nselectors >= MAX_SELECTORS)
        return UINT32_MAX;
    uint32_t id = k->nselectors;
    if (strmap_put(k->selectors, sel, (void *)(uintptr_t)(id + 1)) != 0)
        return UINT32_MAX;
    k->nselectors++;
    return id;
}

uint32_t selector_find(kernel *k, const char *sel)
{
    void *v = strmap_get(k->selectors, sel);
    return v ? (uint32_t)((uintptr_t)v - 1) : UINT32_MAX;
}

/* The kstate observer of a live proto's state: its changes go to the
 * kernel's state log (kernel_config.state_log) under the proto's name. */
static int proto_observe(void *arg, int op, const char *key, const void *val, size_t len)
{
    kproto *p = arg;
    const kernel_state_log *l = &p->k->cfg.state_log;
    int kop = op == KSTATE_SET ? KERNEL_STATE_SET : KERNEL_STATE_DEL;
    return l->change(l->arg, p->name, kop, key, val, len) ? -EIO : 0;
}

void proto_state_install(kernel *k, kproto *p, kstate *s, bool reset)
{
    if (!k->cfg.state_log.change)
        return;
    if (reset)
        k->cfg.state_log.change(k->cfg.state_log.arg, p->name, KERNEL_STATE_RESET, NULL, NULL, 0);
    if (s)
        kstate_observe(s, proto_observe, p);
}

kproto *proto_lookup(kernel *k, const char *name)
{
    return strmap_get(k->protos, name);
}

static void proto_free(void *arg)
{
    kproto *p = arg;
    kstate_free(p->state);
    for (int i = 0; i < p->nhist; i++)
        kstate_free(p->hist_state[i]);
    for (int i = 0; i < p->ndeps; i++)
        free(p->deps[i]);
    free(p->deps);
    free(p->persona);
    free(p->cloned_from);
    pthread_mutex_destroy(&p->gate_lock);
    pthread_cond_destroy(&p->gate_cv);
    free(p);
}

void proto_put(kproto *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1)
        reclaim_defer(p->k, proto_free, p);
}

int proto_name_valid(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return 0;
    size_t n = 0;
    for (; *s; s++, n++)
        if (n >= KERNEL_NAME_MAX - 1 ||
            !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

static kproto *proto_new(kernel *k, const char *name)
{
    kproto *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->k = k;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->id = ++k->next_proto_id;
    atomic_init(&p->refs, 1);
    atomic_init(&p->dead, false);
    pthread_mutex_init(&p->gate_lock, NULL);
    pthread_cond_init(&p->gate_cv, NULL);
    return p;
}

int kernel_proto_create(kernel *k, const char *name, const char *plugin,
                        const char *version, const char *persona_json,
                        char *err, size_t errlen)
{
    if (!proto_name_valid(name)) {
        snprintf(err, errlen, "proto '%s': name must match [A-Za-z][A-Za-z0-9_.-]{0,62}",
                 name ? name : "(null)");
        return A4PS_EINVAL;
    }
    if (persona_json) {
        json_error_t je;
        json_t *j = json_loads(persona_json, JSON_DECODE_ANY, &je);
        if (!j) {
            snprintf(err, errlen, "proto '%s': persona: not JSON (line %d, column %d: %s)",
                     name, je.line, je.column, je.text);
            return A4PS_EINVAL;
        }
        json_decref(j);
    }
    int rc;
    kproto *p = NULL;
    pthread_mutex_lock(&k->lock);
    if (strmap_get(k->protos, name)) {
        snprintf(err, errlen, "proto '%s': already exists", name);
        rc = A4PS_EEXIST;
        goto out;
    }
    kver *v = version ? loader_find(k, plugin, version) : loader_newest(k, plugin);
    if (!v) {
        snprintf(err, errlen, "proto '%s': plugin '%s'%s%s is not loaded", name, plugin,
                 version ? " version " : "", version ? version : "");
        rc = A4PS_ENOENT;
        goto out;
    }
    kbeh *b;
    rc = loader_materialize(k, v, &b, err, errlen);
    if (rc)
        goto out;
    p = proto_new(k, name);
    if (!p || !(p->state = kstate_new()) ||
        (persona_json && !(p->persona = strdup(persona_json)))) {
        snprintf(err, errlen, "proto '%s': out of memory", name);
        rc = A4PS_ENOMEM;
        beh_hold(b);             /* a generation loaded just for us goes again */
        beh_release(k, b);
        goto out;
    }
    beh_hold(b);
    p->cur = b;
    p->dispatch = b->disp;
    if (strmap_put(k->protos, name, p) != 0) {
        beh_release(k, b);
        snprintf(err, errlen, "proto '%s': out of memory", name);
        rc = A4PS_ENOMEM;
        goto out;
    }
    proto_state_install(k, p, p->state, true);
    kernel_log(k, A4PS_LOG_INFO, "proto %s created on %s %s", name, v->name, v->version);
    p = NULL;
    rc = A4PS_OK;
out:
    pthread_mutex_unlock(&k->lock);
    if (p)
        proto_free(p);
    return rc;
}

/* Caller holds k->lock. */
static void proto_kill(kernel *k, kproto *p)
{
    if (p->saved) {              /* the next snapshot deletes it from the image */
        char **nd = realloc(k->deleted, (k->ndeleted + 1) * sizeof *nd);
        if (nd) {
            k->deleted = nd;
            if ((nd[k->ndeleted] = strdup(p->name)))
                k->ndeleted++;
        }
    }
    strmap_del(k->protos, p->name);
    if (k->cfg.state_log.change) {
        kstate_observe(p->state, NULL, NULL);   /* a call still in flight goes untold */
        proto_state_install(k, p, NULL, true);
    }
    atomic_store(&p->dead, true);
    pthread_mutex_lock(&p->gate_lock);
    rcu_assign_pointer(p->dispatch, k->tomb);
    pthread_cond_broadcast(&p->gate_cv);
    pthread_mutex_unlock(&p->gate_lock);
    beh_release(k, p->cur);
    p->cur = NULL;
    proto_put(p);
}

int kernel_proto_exists(kernel *k, const char *name)
{
    pthread_mutex_lock(&k->lock);
    int found = name && strmap_get(k->protos, name) != NULL;
    pthread_mutex_unlock(&k->lock);
    return found;
}

int kernel_valid_proto_name(const char *name)
{
    return proto_name_valid(name);
}

int kernel_valid_plugin_name(const char *name)
{
    return name && plugin_name_valid(name);
}

int kernel_proto_destroy(kernel *k, const char *name, char *err, size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    kproto *p = name ? strmap_get(k->protos, name) : NULL;
    if (!p) {
        pthread_mutex_unlock(&k->lock);
        snprintf(err, errlen, "destroy: no proto named '%s'", name ? name : "(null)");
        return A4PS_ENOENT;
    }
    proto_kill(k, p);
    pthread_mutex_unlock(&k->lock);
    kernel_log(k, A4PS_LOG_INFO, "proto %s destroyed", name);
    return A4PS_OK;
}

static void proto_collect(void *arg, const char *key, void *val)
{
    (void)key;
    kproto ***cur = arg;
    *(*cur)++ = val;
}

kproto **proto_all(kernel *k, size_t *n)
{
    *n = strmap_count(k->protos);
    kproto **all = calloc(*n ? *n : 1, sizeof *all), **cur = all;
    if (all)
        strmap_each(k->protos, proto_collect, &cur);
    return all;
}

void proto_destroy_all(kernel *k)
{
    pthread_mutex_lock(&k->lock);
    size_t n;
    kproto **all = proto_all(k, &n);
    /* Collected first: strmap_each must not see the deletions. */
    for (size_t i = 0; all && i < n; i++)
        proto_kill(k, all[i]);
    free(all);
    pthread_mutex_unlock(&k->lock);
}

int kernel_proto_clone(kernel *k, const char *src, const char *dst, char *err, size_t errlen)
{
    if (!proto_name_valid(dst)) {
        snprintf(err, errlen, "clone: '%s' is not a valid proto name", dst ? dst : "(null)");
        return A4PS_EINVAL;
    }
    int rc = A4PS_OK;
    kproto *c = NULL;
    pthread_mutex_lock(&k->lock);
    kproto *s = src ? strmap_get(k->protos, src) : NULL;
    if (!s) {
        snprintf(err, errlen, "clone: no proto named '%s'", src ? src : "(null)");
        rc = A4PS_ENOENT;
        goto out;
    }
    if (strmap_get(k->protos, dst)) {
        snprintf(err, errlen, "clone: proto '%s' already exists", dst);
        rc = A4PS_EEXIST;
        goto out;
    }
    c = proto_new(k, dst);
    if (!c || !(c->state = kstate_copy(s->state)) ||
        (s->persona && !(c->persona = strdup(s->persona))) || !(c->cloned_from = strdup(src)))
        goto nomem;
    if (s->ndeps) {
        c->deps = calloc((size_t)s->ndeps, sizeof *c->deps);
        if (!c->deps)
            goto nomem;
        for (int i = 0; i < s->ndeps; i++) {
            if (!(c->deps[i] = strdup(s->deps[i])))
                goto nomem;
            c->ndeps++;
        }
    }
    for (int i = 0; i < s->nhist; i++) {
        c->hist[i] = s->hist[i];
        if (s->hist_state[i] && !(c->hist_state[i] = kstate_copy(s->hist_state[i])))
            goto nomem;
        c->nhist++;
    }
    beh_hold(s->cur);
    c->cur = s->cur;
    c->dispatch = s->cur->disp;
    if (strmap_put(k->protos, dst, c) != 0) {
        beh_release(k, s->cur);
        goto nomem;
    }
    proto_state_install(k, c, c->state, true);
    kernel_log(k, A4PS_LOG_INFO, "proto %s cloned from %s", dst, src);
    c = NULL;
    goto out;
nomem:
    snprintf(err, errlen, "clone: out of memory copying '%s'", src);
    rc = A4PS_ENOMEM;
out:
    pthread_mutex_unlock(&k->lock);
    if (c)
        proto_free(c);
    return rc;
}

int kernel_proto_depend(kernel *k, const char *name, const char *dep, char *err, size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    int rc = A4PS_OK;
    kproto *p = name ? strmap_get(k->protos, name) : NULL;
    if (!p) {
        snprintf(err, errlen, "depend: no proto named '%s'", name ? name : "(null)");
        rc = A4PS_ENOENT;
    } else if (!proto_name_valid(dep)) {
        snprintf(err, errlen, "depend: proto '%s': '%s' is not a proto name", name,
                 dep ? dep : "(null)");
        rc = A4PS_EINVAL;
    } else {
        char **nd = realloc(p->deps, (size_t)(p->ndeps + 1) * sizeof *nd);
        char *d = strdup(dep);
        if (nd)
            p->deps = nd;
        if (!nd || !d) {
            free(d);
            snprintf(err, errlen, "depend: out of memory");
            rc = A4PS_ENOMEM;
        } else {
            p->deps[p->ndeps++] = d;
            p->meta_gen++;
        }
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

/* Outside access to state takes k->lock: migrations run under it, so the
 * state object cannot be replaced underneath. */
int kernel_state_set(kernel *k, const char *proto, const char *key, const void *data, size_t len)
{
    if (!kstate_key_valid(key) || (!data && len))
        return A4PS_EINVAL;
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    int rc = !p ? A4PS_ENOENT : kernel_state_status(kstate_set(p->state, key, data, len));
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kernel_state_delete(kernel *k, const char *proto, const char *key)
{
    if (!kstate_key_valid(key))
        return A4PS_EINVAL;
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    int rc = !p ? A4PS_ENOENT : kernel_state_status(kstate_del(p->state, key));
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kernel_state_status(int kstate_rc)
{
    switch (kstate_rc) {
    case 0: return A4PS_OK;
    case -ENOENT: return A4PS_ENOENT;
    case -ENOMEM: return A4PS_ENOMEM;
    default: return A4PS_EIO;    /* the state log refused it */
    }
}

int kernel_state_get(kernel *k, const char *proto, const char *key, void **out, size_t *len)
{
    if (!kstate_key_valid(key))
        return A4PS_EINVAL;
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    int rc = A4PS_ENOENT;
    if (p) {
        rc = kstate_get_dup(p->state, key, out, len);
        rc = rc == -ENOENT ? A4PS_ENOENT : rc ? A4PS_ENOMEM : A4PS_OK;
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kernel_state_export(kernel *k, const char *proto, void **out, size_t *outlen)
{
    char **keys = NULL;
    void **vals = NULL;
    size_t *lens = NULL, n = 0;
    *out = NULL;
    *outlen = 0;
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    int rc = p ? (kstate_export(p->state, &keys, &vals, &lens, &n) ? A4PS_ENOMEM : A4PS_OK)
               : A4PS_ENOENT;
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 8 + strlen(keys[i]) + lens[i];
    unsigned char *buf = malloc(total ? total : 1), *w = buf;
    for (size_t i = 0; buf && i < n; i++) {
        uint32_t kl = (uint32_t)strlen(keys[i]), vl = (uint32_t)lens[i];
        /* Little endian on the wire whatever the host, as documented. */
        for (int b = 0; b < 4; b++)
            *w++ = (unsigned char)(kl >> (8 * b));
        memcpy(w, keys[i], kl);
        w += kl;
        for (int b = 0; b < 4; b++)
            *w++ = (unsigned char)(vl >> (8 * b));
        memcpy(w, vals[i], vl);
        w += vl;
    }
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    free(keys);
    free(vals);
    free(lens);
    if (!buf)
        return A4PS_ENOMEM;
    *out = buf;
    *outlen = total;
    return A4PS_OK;
}

/* ---- Introspection ---- */

static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case A4PS_KIND_PERSONA: return "persona";
    case A4PS_KIND_TOOL: return "tool";
    case A4PS_KIND_GENERATOR: return "generator";
    case A4PS_KIND_MONITOR: return "monitor";
    default: return "unknown";
    }
}

const char *kver_status_name(enum kver_status s)
{
    return s == KVER_LIVE ? "live" : s == KVER_RETIRED ? "retired" : "quarantined";
}

static void usage_read(kernel *k, kver *v, kernel_version_usage *u)
{
    memset(u, 0, sizeof *u);
    u->accounted = k->acct != NULL && v->usage != NULL;
    for (int i = 0; u->accounted && i < KUSAGE_SLOTS; i++) {
        const kusage_slot *s = &v->usage[i];
        u->calls += atomic_load_explicit(&s->calls, memory_order_relaxed);
        u->allocated += atomic_load_explicit(&s->allocated, memory_order_relaxed);
        u->freed += atomic_load_explicit(&s->freed, memory_order_relaxed);
    }
    u->net = (int64_t)(u->allocated - u->freed);
}

/* A version's accounting as JSON: {calls, allocated, freed, net} in bytes,
 * or null when the kernel keeps none (no alloc_counters). */
static json_t *usage_json(kernel *k, kver *v)
{
    kernel_version_usage u;
    usage_read(k, v, &u);
    if (!u.accounted)
        return json_null();
    return json_pack("{s:I, s:I, s:I, s:I}", "calls", (json_int_t)u.calls, "allocated",
                     (json_int_t)u.allocated, "freed", (json_int_t)u.freed, "net",
                     (json_int_t)u.net);
}

int kernel_version_usage_get(kernel *k, const char *plugin, const char *version,
                             kernel_version_usage *out)
{
    pthread_mutex_lock(&k->lock);
    kver *v = plugin && version ? loader_find(k, plugin, version) : NULL;
    if (v)
        usage_read(k, v, out);
    pthread_mutex_unlock(&k->lock);
    return v ? A4PS_OK : A4PS_ENOENT;
}

static json_t *ver_json(kver *v)
{
    if (!v)
        return json_null();
    return json_pack("{s:s, s:s, s:s}", "name", v->name, "version", v->version,
                     "sha256", v->sha_hex);
}

static int state_key_json(void *arg, const char *key, const void *val, size_t len)
{
    (void)val;
    json_array_append_new(arg, json_pack("{s:s, s:I}", "key", key, "bytes", (json_int_t)len));
    return 0;
}

static int by_key(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "key")),
                  json_string_value(json_object_get(y, "key")));
}

char *kernel_explain(kernel *k, const char *proto)
{
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    if (!p) {
        pthread_mutex_unlock(&k->lock);
        return NULL;
    }
    kbeh *b = p->cur;
    kver *v = b->ver;
    json_t *methods = json_array();
    for (uint32_t i = 0; i < b->nmethods; i++)
        json_array_append_new(methods, json_pack("{s:s, s:s}", "selector",
                                                 b->d.methods[i].selector, "doc", b->docs[i]));
    json_t *keys = json_array();
    kstate_each(p->state, state_key_json, keys);
    size_t nk = json_array_size(keys);
    json_t **sorted = malloc((nk ? nk : 1) * sizeof *sorted);
    if (sorted) {
        for (size_t i = 0; i < nk; i++)
            sorted[i] = json_incref(json_array_get(keys, i));
        qsort(sorted, nk, sizeof *sorted, by_key);
        json_array_clear(keys);
        for (size_t i = 0; i < nk; i++)
            json_array_append_new(keys, sorted[i]);
        free(sorted);
    }
    json_t *pdeps = json_array();
    for (int i = 0; i < p->ndeps; i++)
        json_array_append_new(pdeps, json_string(p->deps[i]));
    json_t *ldeps = json_array();
    for (int i = 0; b->d.dependencies && b->d.dependencies[i]; i++)
        json_array_append_new(ldeps, json_string(b->d.dependencies[i]));
    json_t *hist = json_array();
    for (int i = 0; i < p->nhist; i++)
        json_array_append_new(hist, json_string(p->hist[i]->version));
    json_t *persona = NULL;
    if (p->persona)
        persona = json_loads(p->persona, JSON_DECODE_ANY, NULL);
    json_t *plugin = json_pack(
        "{s:s, s:s, s:s, s:i, s:s, s:s?, s:I, s:s, s:s?}", "name", v->name, "version",
        v->version, "sha256", v->sha_hex, "state_version", (int)v->state_version, "kind",
        kind_name(v->kind), "description", b->d.description, "generation", (json_int_t)b->gen,
        "status", kver_status_name(v->status), "origin", v->origin);
    json_t *j = json_pack(
        "{s:s, s:I, s:o, s:s?, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o}, s:o}", "proto", p->name,
        "id", (json_int_t)p->id, "persona", persona ? persona : json_null(), "cloned_from",
        p->cloned_from, "plugin", plugin, "parent", ver_json(v->parent), "previous",
        ver_json(p->nhist ? p->hist[p->nhist - 1] : NULL), "methods", methods, "state", keys,
        "dependencies", "protos", pdeps, "plugins", ldeps, "history", hist);
    pthread_mutex_unlock(&k->lock);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

char *kernel_history(kernel *k, const char *proto)
{
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    if (!p) {
        pthread_mutex_unlock(&k->lock);
        return NULL;
    }
    kver *cur = p->cur->ver;
    json_t *ran = json_array();
    for (int i = 0; i < p->nhist; i++)
        json_array_append_new(ran, json_string(p->hist[i]->version));
    json_t *all = json_array();
    for (kver *v = k->versions; v; v = v->next)
        if (!strcmp(v->name, cur->name)) {
            json_t *report = v->report ? json_loads(v->report, 0, NULL) : NULL;
            json_array_insert_new(all, 0, json_pack(
                "{s:s, s:s, s:s, s:s?, s:s, s:s?, s:s?, s:I, s:b, s:b, s:o, s:I, s:o}", "version",
                v->version, "sha256", v->sha_hex, "status", kver_status_name(v->status),
                "reason", v->reason[0] ? v->reason : NULL, "kind", kind_name(v->kind),
                "parent", v->parent ? v->parent->version : NULL, "origin", v->origin,
                "loaded_at", (json_int_t)v->loaded_at, "current", v == cur, "has_source",
                v->source != NULL, "report", report ? report : json_null(), "failed_calls",
                (json_int_t)atomic_load_explicit(&v->failed_calls, memory_order_relaxed),
                "usage", usage_json(k, v)));
        }
    json_t *j = json_pack("{s:s, s:s, s:s, s:o, s:o}", "proto", p->name, "plugin", cur->name,
                          "version", cur->version, "ran_before", ran, "versions", all);
    pthread_mutex_unlock(&k->lock);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static const char *beh_state_name(enum kbeh_state s)
{
    switch (s) {
    case KBEH_ACTIVE: return "active";
    case KBEH_DRAINING: return "draining";
    case KBEH_FINI_HUNG: return "fini hung: mapping kept";
    case KBEH_HOOK_HUNG: return "hook hung: mapping kept";
    }
    return "?";
}

static void proto_json(void *arg, const char *key, void *val)
{
    kproto *p = val;
    json_array_append_new(arg, json_pack("{s:s, s:s, s:s, s:I, s:o}", "name", key, "plugin",
                                         p->cur->ver->name, "version", p->cur->ver->version,
                                         "state_keys", (json_int_t)kstate_count(p->state),
                                         "usage", usage_json(p->k, p->cur->ver)));
}

char *kernel_status(kernel *k)
{
    bus_stats bs;
    bus_get_stats(k->bus, &bs);
    pthread_mutex_lock(&k->lock);
    json_t *protos = json_array();
    strmap_each(k->protos, proto_json, protos);
    json_t *versions = json_array(), *quarantined = json_array(), *draining = json_array();
    for (kver *v = k->versions; v; v = v->next) {
        json_array_append_new(versions, json_pack(
            "{s:s, s:s, s:s, s:s, s:i, s:b, s:o, s:o}", "name", v->name, "version", v->version,
            "sha256", v->sha_hex, "status", kver_status_name(v->status), "state_version",
            (int)v->state_version, "loaded", v->loaded != NULL, "generation",
            v->loaded ? json_integer((json_int_t)v->loaded->gen) : json_null(), "usage",
            usage_json(k, v)));
        if (v->status == KVER_QUARANTINED)
            json_array_append_new(quarantined, json_pack("{s:s, s:s, s:s}", "name", v->name,
                                                         "version", v->version, "reason", v->reason));
    }
    for (kbeh *b = k->behs; b; b = b->next)
        if (b->state != KBEH_ACTIVE)
            json_array_append_new(draining, json_pack("{s:s, s:s, s:I, s:s}", "name",
                                                      b->ver->name, "version", b->ver->version,
                                                      "generation", (json_int_t)b->gen,
                                                      "state", beh_state_name(b->state)));
    /* Generations mapped for good because they may have started a thread:
     * loaded ones, then unloaded ones (their descriptor is still mapped). */
    json_t *pinned = json_array();
    for (int pass = 0; pass < 2; pass++)
        for (kbeh *b = pass ? atomic_load(&k->pinned) : k->behs; b; b = b->next)
            if (b->pinned)
                json_array_append_new(pinned, json_pack(
                    "{s:s, s:s, s:I, s:s, s:b}", "name", b->ver ? b->ver->name : b->d.name,
                    "version", b->ver ? b->ver->version : b->d.version, "generation",
                    (json_int_t)b->gen, "imports", b->pin_why, "loaded", !pass));
    pthread_mutex_unlock(&k->lock);

    json_t *errors = json_array();
    pthread_mutex_lock(&k->err_lock);
    unsigned n = k->nerrors < KERNEL_LAST_ERRORS ? k->nerrors : KERNEL_LAST_ERRORS;
    for (unsigned i = 0; i < n; i++) {
        unsigned idx = (k->nerrors - n + i) % KERNEL_LAST_ERRORS;
        json_array_append_new(errors, json_pack("{s:I, s:s}", "time",
                                                (json_int_t)k->last_error_at[idx], "message",
                                                k->last_errors[idx]));
    }
    pthread_mutex_unlock(&k->err_lock);

    kernel_stats *s = &k->stats;
    json_t *j = json_pack(
        "{s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:o,"
        " s:{s:I, s:I, s:I, s:I, s:I},"
        " s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
        "uptime_s", (json_int_t)(time(NULL) - k->started), "abi", A4PS_ABI_VERSION_STRING,
        "protos", protos, "versions", versions, "draining", draining, "quarantined",
        quarantined, "pinned", pinned, "last_errors", errors,
        "events", "published", (json_int_t)bs.published, "delivered", (json_int_t)bs.delivered,
        "dropped", (json_int_t)bs.dropped, "failed", (json_int_t)bs.failed, "queued",
        (json_int_t)bs.queued,
        "stats", "sends_by_name", (json_int_t)atomic_load(&s->sends), "faults",
        (json_int_t)atomic_load(&s->faults), "not_understood",
        (json_int_t)atomic_load(&s->not_understood), "swaps", (json_int_t)atomic_load(&s->swaps),
        "migrations", (json_int_t)atomic_load(&s->migrations), "rollbacks",
        (json_int_t)atomic_load(&s->rollbacks), "refusals", (json_int_t)atomic_load(&s->refusals),
        "reclaimed", (json_int_t)atomic_load(&s->reclaimed), "last_swap_ns",
        (json_int_t)atomic_load(&s->last_swap_ns), "last_pause_ns",
        (json_int_t)atomic_load(&s->last_pause_ns), "max_pause_ns",
        (json_int_t)atomic_load(&s->max_pause_ns));
    char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return out;
}

int kernel_proto_version(kernel *k, const char *proto, kernel_version_info *info,
                         uint32_t *kind)
{
    pthread_mutex_lock(&k->lock);
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    if (!p) {
        pthread_mutex_unlock(&k->lock);
        return A4PS_ENOENT;
    }
    kver *v = p->cur->ver;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", v->name);
    snprintf(info->version, sizeof info->version, "%s", v->version);
    memcpy(info->sha256, v->sha_hex, 65);
    info->state_version = v->state_version;
    info->generation = p->cur->gen;
    if (kind)
        *kind = v->kind;
    pthread_mutex_unlock(&k->lock);
    return A4PS_OK;
}

int kernel_version_health(kernel *k, const char *plugin, const char *version,
                          int *quarantined, uint64_t *failed_calls, char *reason,
                          size_t reasonlen)
{
    pthread_mutex_lock(&k->lock);
    kver *v = plugin && version ? loader_find(k, plugin, version) : NULL;
    if (v) {
        *quarantined = v->status == KVER_QUARANTINED;
        *failed_calls = atomic_load_explicit(&v->failed_calls, memory_order_relaxed);
        snprintf(reason, reasonlen, "%s", v->reason);
    }
    pthread_mutex_unlock(&k->lock);
    return v ? A4PS_OK : A4PS_ENOENT;
}

int kernel_version_has_method(kernel *k, const char *plugin, const char *version,
                              const char *selector)
{
    int found = 0;
    pthread_mutex_lock(&k->lock);
    kver *v = plugin && version ? loader_find(k, plugin, version) : NULL;
    kbeh *b = v ? v->loaded : NULL;
    for (uint32_t i = 0; b && selector && i < b->nmethods; i++)
        found |= !strcmp(b->d.methods[i].selector, selector);
    pthread_mutex_unlock(&k->lock);
    return b ? found : A4PS_ENOENT;
}
