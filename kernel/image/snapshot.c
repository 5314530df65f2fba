/* snapshot.c -- consistent copies of the kernel's state, and restoring it.
 *
 * A snapshot must never hold one proto's state from before a message and
 * another's from after it when that message changed both.  A message is the
 * whole tree of sends below one outermost send, so the cut is taken when no
 * outermost send is in flight: the freeze flag makes new outermost sends
 * wait (every thread's frozen flag, which dispatch.c checks after announcing
 * itself in slot 0 -- it shares a cache line with the depth it reads anyway), a
 * membarrier orders that check against the flag, and we wait until no
 * thread's slot 0 names a proto.  Then the changed protos are copied --
 * memory copies only -- and sends resume.  The SQLite writing happens later,
 * outside every kernel lock (image.c).
 *
 * k->lock is held throughout, so no swap, migration or creation runs in the
 * middle of the cut. */
#include "kernel_int.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool outermost_in_flight(void)
{
    bool busy = false;
    kernel_threads_lock();
    for (kthread *t = kernel_threads_first(); t && !busy; t = t->next)
        busy = atomic_load_explicit(&t->slot[0], memory_order_acquire) != NULL;
    kernel_threads_unlock();
    return busy;
}

static void thaw(kernel *k)
{
    (void)k;
    kernel_threads_thaw();
}

static char *names_json(char **names, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_string(names[i]));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* Everything but the state; after the freeze, under k->lock (which is what
 * all of it changes under). */
static int copy_meta(kproto *p, kernel_snap_proto *sp)
{
    snprintf(sp->name, sizeof sp->name, "%s", p->name);
    snprintf(sp->plugin, sizeof sp->plugin, "%s", p->cur->ver->name);
    snprintf(sp->version, sizeof sp->version, "%s", p->cur->ver->version);
    sp->state_version = p->cur->ver->state_version;
    sp->persona = p->persona ? strdup(p->persona) : NULL;
    sp->cloned_from = p->cloned_from ? strdup(p->cloned_from) : NULL;
    sp->deps_json = names_json(p->deps, p->ndeps);
    char *hist[KERNEL_HISTORY];
    for (int i = 0; i < p->nhist; i++)
        hist[i] = p->hist[i]->version;
    sp->history_json = names_json(hist, p->nhist);
    return sp->deps_json && sp->history_json ? 0 : -ENOMEM;
}

static void free_proto(kernel_snap_proto *sp)
{
    for (size_t i = 0; i < sp->nkeys; i++) {
        free(sp->keys[i]);
        free(sp->vals[i]);
    }
    free(sp->keys);
    free(sp->vals);
    free(sp->lens);
    free(sp->persona);
    free(sp->cloned_from);
    free(sp->deps_json);
    free(sp->history_json);
}

void kernel_snapshot_free(kernel_snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nprotos; i++)
        free_proto(&s->protos[i]);
    free(s->protos);
    for (size_t i = 0; i < s->ndeleted; i++)
        free(s->deleted[i]);
    free(s->deleted);
    for (size_t i = 0; i < s->nversions; i++) {
        free(s->versions[i].reason);
        free(s->versions[i].origin);
        free(s->versions[i].source);
        free(s->versions[i].report);
        free(s->versions[i].stored_path);
    }
    free(s->versions);
    free(s->gens);
    free(s);
}

int kernel_snapshot_take(kernel *k, int all, unsigned timeout_ms, kernel_snapshot **out,
                         char *err, size_t errlen)
{
    kernel_snapshot *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "snapshot: out of memory");
        return A4PS_ENOMEM;
    }
    bool worker = kernel_thread_self()->mode == KT_WORKER;
    if (worker)
        kernel_thread_offline(k);
    pthread_mutex_lock(&k->lock);

    /* Versions: every one ever loaded, for the image's lineage. */
    size_t nv = 0;
    for (kver *v = k->versions; v; v = v->next)
        nv++;
    s->versions = calloc(nv ? nv : 1, sizeof *s->versions);
    if (!s->versions)
        goto nomem;
    for (kver *v = k->versions; v; v = v->next) {
        kernel_snap_version *sv = &s->versions[s->nversions++];
        snprintf(sv->name, sizeof sv->name, "%s", v->name);
        snprintf(sv->version, sizeof sv->version, "%s", v->version);
        memcpy(sv->sha256, v->sha_hex, 65);
        sv->state_version = v->state_version;
        snprintf(sv->parent, sizeof sv->parent, "%s", v->parent ? v->parent->version : "");
        sv->status = kver_status_name(v->status);
        sv->reason = v->reason[0] ? strdup(v->reason) : NULL;
        sv->origin = v->origin ? strdup(v->origin) : NULL;
        /* Source and report are large and rarely change: only when they
         * did since the last committed snapshot (the image keeps what it
         * has for a NULL). */
        if (all || v->lineage_gen != v->saved_lineage_gen) {
            sv->source = v->source ? strdup(v->source) : NULL;
            sv->report = v->report ? strdup(v->report) : NULL;
        }
        sv->lineage_gen = v->lineage_gen;
        sv->stored_path = strdup(v->stored_path);
        sv->loaded_at = (int64_t)v->loaded_at;
    }

    /* Everything that need not wait for the cut is done before it: the
     * list of protos (k->lock keeps it as it is). */
    size_t np;
    kproto **list = proto_all(k, &np);
    s->protos = calloc(np ? np : 1, sizeof *s->protos);
    s->gens = calloc(np ? np * 2 : 1, sizeof *s->gens);
    kproto **taken = calloc(np ? np : 1, sizeof *taken);
    if (!list || !s->protos || !s->gens || !taken) {
        free(list);
        free(taken);
        goto nomem;
    }

    uint64_t t0 = kernel_now_ns();
    kernel_threads_freeze();
    kernel_membarrier();
    uint64_t deadline = t0 + (uint64_t)timeout_ms * 1000000ull;
    while (outermost_in_flight()) {
        if (kernel_now_ns() > deadline) {
            thaw(k);
            pthread_mutex_unlock(&k->lock);
            if (worker)
                kernel_thread_online(k);
            free(list);
            free(taken);
            kernel_snapshot_free(s);
            snprintf(err, errlen, "snapshot: calls in flight did not finish within %u ms; "
                     "nothing was taken, the next snapshot will retry", timeout_ms);
            return A4PS_ETIMEDOUT;
        }
        sched_yield();
    }
    /* The cut: no send runs, so generations are read without their locks,
     * and only state is copied while sends wait.  The state log's position
     * is read here too: every change it told before is in this copy. */
    if (k->cfg.state_log.cut)
        s->log_position = k->cfg.state_log.cut(k->cfg.state_log.arg);
    int rc = 0;
    for (size_t i = 0; i < np && !rc; i++) {
        kproto *p = list[i];
        uint64_t sg = kstate_gen_quiet(p->state);
        if (!all && p->saved && sg == p->saved_state_gen && p->meta_gen == p->saved_meta_gen)
            continue;
        kernel_snap_proto *sp = &s->protos[s->nprotos];
        rc = kstate_export(p->state, &sp->keys, &sp->vals, &sp->lens, &sp->nkeys);
        if (rc)
            break;
        s->gens[2 * s->nprotos] = sg;
        s->gens[2 * s->nprotos + 1] = p->meta_gen;
        taken[s->nprotos++] = p;
    }
    s->stall_ns = kernel_now_ns() - t0;
    thaw(k);
    free(list);
    for (size_t i = 0; i < s->nprotos && !rc; i++)
        rc = copy_meta(taken[i], &s->protos[i]);
    free(taken);
    if (rc)
        goto nomem;
    s->deleted = k->ndeleted ? k->deleted : NULL;
    s->ndeleted = k->ndeleted;
    k->deleted = NULL;
    k->ndeleted = 0;
    pthread_mutex_unlock(&k->lock);
    if (worker)
        kernel_thread_online(k);
    *out = s;
    return A4PS_OK;
nomem:
    pthread_mutex_unlock(&k->lock);
    if (worker)
        kernel_thread_online(k);
    kernel_snapshot_free(s);
    snprintf(err, errlen, "snapshot: out of memory copying the state");
    return A4PS_ENOMEM;
}

void kernel_snapshot_done(kernel *k, kernel_snapshot *s, int committed)
{
    pthread_mutex_lock(&k->lock);
    if (committed) {
        for (size_t i = 0; i < s->nprotos; i++) {
            kproto *p = strmap_get(k->protos, s->protos[i].name);
            if (!p)
                continue;
            p->saved = true;
            p->saved_state_gen = s->gens[2 * i];
            p->saved_meta_gen = s->gens[2 * i + 1];
        }
        for (size_t i = 0; i < s->nversions; i++) {
            kver *v = loader_find(k, s->versions[i].name, s->versions[i].version);
            if (v)
                v->saved_lineage_gen = s->versions[i].lineage_gen;
        }
    } else if (s->ndeleted) {
        /* Not written: the deletions are still owed to the image. */
        char **nd = realloc(k->deleted, (k->ndeleted + s->ndeleted) * sizeof *nd);
        if (nd) {
            k->deleted = nd;
            memcpy(nd + k->ndeleted, s->deleted, s->ndeleted * sizeof *nd);
            k->ndeleted += s->ndeleted;
            free(s->deleted);
            s->deleted = NULL;
            s->ndeleted = 0;
        }
    }
    pthread_mutex_unlock(&k->lock);
}

int kernel_restore_proto(kernel *k, const kernel_snap_proto *sp, char *err, size_t errlen)
{
    int rc = kernel_proto_create(k, sp->name, sp->plugin, sp->version, sp->persona, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&k->lock);
    kproto *p = strmap_get(k->protos, sp->name);
    for (size_t i = 0; p && i < sp->nkeys && !rc; i++)
        if (kstate_set(p->state, sp->keys[i], sp->vals[i], sp->lens[i]) != 0)
            rc = A4PS_ENOMEM;
    json_t *deps = sp->deps_json ? json_loads(sp->deps_json, 0, NULL) : NULL;
    json_t *hist = sp->history_json ? json_loads(sp->history_json, 0, NULL) : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(deps, i, v) {
        char **nd = realloc(p->deps, (size_t)(p->ndeps + 1) * sizeof *nd);
        if (!nd || !json_is_string(v))
            break;
        p->deps = nd;
        if ((nd[p->ndeps] = strdup(json_string_value(v))))
            p->ndeps++;
    }
    json_array_foreach(hist, i, v) {
        kver *hv = json_is_string(v) ? loader_find(k, sp->plugin, json_string_value(v)) : NULL;
        if (hv && p->nhist < KERNEL_HISTORY)
            p->hist[p->nhist++] = hv;
    }
    json_decref(deps);
    json_decref(hist);
    if (p && sp->cloned_from)
        p->cloned_from = strdup(sp->cloned_from);
    if (p) {
        p->saved = true;
        p->saved_state_gen = kstate_gen(p->state);
        p->saved_meta_gen = p->meta_gen;
    }
    pthread_mutex_unlock(&k->lock);
    if (rc)
        snprintf(err, errlen, "restore: proto '%s': out of memory setting its state", sp->name);
    return rc;
}
