/* swap.c -- changing a proto's behaviour while its callers run.
 *
 * Code swap (state layout unchanged): one rcu_assign_pointer of the proto's
 * dispatch pointer.  New calls see the new version at once, calls already
 * running finish on the old code, nobody waits; the old generation is
 * reclaimed after a grace period by the reclaimer thread.
 *
 * State-migrating swap (layout changed), OTP's suspend/code_change/resume:
 *   1. publish the gate as the proto's dispatch pointer: new calls park;
 *   2. membarrier(), then wait until no thread's in-flight slot names the
 *      proto (calls in flight drain) -- bounded by migrate_timeout_ms;
 *   3. run the new version's migrate hook on a copy of the state, bounded;
 *   4. install state and behaviour together, reopen, wake the parked calls.
 * Any failure or timeout reopens on the old version with its state as it was.
 *
 * Everything here runs under k->lock. */
#include "kernel_int.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void beh_hold(kbeh *b)
{
    b->refs++;
}

void beh_release(kernel *k, kbeh *b)
{
    if (--b->refs > 0 || b->state != KBEH_ACTIVE)
        return;
    b->state = KBEH_DRAINING;
    if (b->ver && b->ver->loaded == b)
        b->ver->loaded = NULL;
    if (b->ver && b->ver->status == KVER_LIVE && !b->ver->loaded)
        b->ver->status = KVER_RETIRED;
    pthread_mutex_lock(&k->rlock);
    b->next_retired = k->retired;
    k->retired = b;
    k->draining++;
    pthread_cond_signal(&k->rcv);
    pthread_mutex_unlock(&k->rlock);
}

static void hist_push(kproto *p, kver *v, kstate *saved)
{
    if (p->nhist == KERNEL_HISTORY) {
        kstate_free(p->hist_state[0]);
        memmove(p->hist, p->hist + 1, (KERNEL_HISTORY - 1) * sizeof p->hist[0]);
        memmove(p->hist_state, p->hist_state + 1, (KERNEL_HISTORY - 1) * sizeof p->hist_state[0]);
        p->nhist--;
    }
    p->hist[p->nhist] = v;
    p->hist_state[p->nhist] = saved;
    p->nhist++;
}

static void hist_pop(kproto *p)
{
    if (!p->nhist)
        return;
    p->nhist--;
    kstate_free(p->hist_state[p->nhist]);
    p->hist_state[p->nhist] = NULL;
}

/* A version quarantined since the proto left it is no way back: forget it. */
static void drop_quarantined(kproto *p)
{
    while (p->nhist && p->hist[p->nhist - 1]->status == KVER_QUARANTINED)
        hist_pop(p);
}

static bool proto_busy(kproto *p)
{
    bool busy = false;
    kernel_threads_lock();
    for (kthread *t = kernel_threads_first(); t && !busy; t = t->next)
        for (int i = 0; i < KERNEL_MAX_DEPTH; i++)
            if (atomic_load_explicit(&t->slot[i], memory_order_acquire) == p) {
                busy = true;
                break;
            }
    kernel_threads_unlock();
    return busy;
}

static void publish(kproto *p, kdisp *d)
{
    pthread_mutex_lock(&p->gate_lock);
    rcu_assign_pointer(p->dispatch, d);
    pthread_cond_broadcast(&p->gate_cv);
    pthread_mutex_unlock(&p->gate_lock);
}

/* Close the gate and wait for the calls in flight; on timeout reopen on the
 * current behaviour.  Returns 0 or A4PS_ETIMEDOUT. */
static int gate_and_drain(kernel *k, kproto *p, uint64_t deadline)
{
    publish(p, k->gate);
    kernel_membarrier();
    unsigned spins = 0;
    while (proto_busy(p)) {
        if (kernel_now_ns() > deadline) {
            publish(p, p->cur->disp);
            return A4PS_ETIMEDOUT;
        }
        if (++spins < 64) {
            sched_yield();
        } else {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    return A4PS_OK;
}

static void swap_event(kernel *k, kproto *p, kver *from, kver *to, const char *kind,
                       bool rollback, uint64_t ns)
{
    kernel_log(k, A4PS_LOG_NOTICE, "proto %s: %s %s -> %s (%s swap%s, %.1f us)", p->name,
               from->name, from->version, to->version, kind, rollback ? ", rollback" : "",
               (double)ns / 1000.0);
    kernel_emitf(k, rollback ? "swap_rolled_back" : "swap_committed",
                 "{s:s, s:s, s:s, s:s, s:s, s:I}", "proto", p->name, "plugin", to->name,
                 "from", from->version, "to", to->version, "kind", kind,
                 "pause_ns", (json_int_t)ns);
}

int swap_to(kernel *k, kproto *p, kver *target, bool rollback, char *err, size_t errlen)
{
    char why[KERNEL_ERRLEN];
    kbeh *ob = p->cur;
    if (ob->ver == target && !ob->quarantined) {
        snprintf(err, errlen, "proto '%s' already runs %s %s", p->name, target->name,
                 target->version);
        return A4PS_OK;
    }
    if (strcmp(ob->ver->name, target->name) != 0) {
        snprintf(err, errlen, "proto '%s' runs plugin '%s', not '%s'", p->name,
                 ob->ver->name, target->name);
        return A4PS_EINVAL;
    }
    kbeh *nb;
    int rc = loader_materialize(k, target, &nb, err, errlen);
    if (rc)
        return rc;
    beh_hold(nb);
    uint64_t t0 = kernel_now_ns();

    if (nb->d.state_version == ob->d.state_version) {
        p->meta_gen++;
        p->cur = nb;
        publish(p, nb->disp);
        uint64_t ns = kernel_now_ns() - t0;
        if (rollback)
            hist_pop(p);
        else
            hist_push(p, ob->ver, NULL);
        atomic_store(&k->stats.last_swap_ns, ns);
        atomic_fetch_add(&k->stats.swaps, 1);
        if (rollback)
            atomic_fetch_add(&k->stats.rollbacks, 1);
        swap_event(k, p, ob->ver, target, "code", rollback, ns);
        beh_release(k, ob);
        return A4PS_OK;
    }

    /* A rollback across layouts may fall back on the state saved when the
     * proto moved off the target version. */
    kstate *saved = rollback && p->nhist ? p->hist_state[p->nhist - 1] : NULL;
    bool empty = kstate_count(p->state) == 0;
    if (!nb->d.migrate && !empty && !saved) {
        snprintf(err, errlen, "proto '%s': %s %s keeps state layout %u, the proto's is %u, "
                 "and it has no migrate hook", p->name, target->name, target->version,
                 nb->d.state_version, ob->d.state_version);
        beh_release(k, nb);
        return A4PS_EINVAL;
    }
    unsigned timeout = k->cfg.migrate_timeout_ms;
    uint64_t deadline = t0 + (uint64_t)timeout * 1000000ull;
    rc = gate_and_drain(k, p, deadline);
    if (rc) {
        snprintf(err, errlen, "proto '%s': calls in flight did not drain within %u ms; "
                 "still on %s %s", p->name, timeout, ob->ver->name, ob->ver->version);
        beh_release(k, nb);
        return rc;
    }
    kstate *next = NULL;
    const char *how = "migrating";
    if (nb->d.migrate && !empty) {
        kctx c = {.k = k, .proto = p, .beh = nb, .state = kstate_copy(p->state)};
        if (!c.state) {
            publish(p, ob->disp);
            snprintf(err, errlen, "proto '%s': out of memory copying state", p->name);
            beh_release(k, nb);
            return A4PS_ENOMEM;
        }
        uint64_t now = kernel_now_ns();
        unsigned left = now >= deadline ? 1 : (unsigned)((deadline - now) / 1000000ull) + 1;
        rc = loader_run_hook(k, nb, HOOK_MIGRATE, &c, ob->d.state_version, left, why, sizeof why);
        if (rc == A4PS_OK) {
            next = c.state;
        } else {
            kstate_free(c.state);   /* NULL when a timed-out hook still owns it */
            if (!saved) {
                publish(p, ob->disp);
                snprintf(err, errlen, "proto '%s': %s %s %s; still on %s %s with its state "
                         "untouched", p->name, target->name, target->version, why,
                         ob->ver->name, ob->ver->version);
                kernel_record_error(k, err);
                beh_release(k, nb);
                return rc;
            }
        }
    } else if (empty) {
        next = kstate_new();     /* nothing to convert */
    }
    if (!next && saved) {
        next = kstate_copy(saved);
        how = "migrating, state restored from before the upgrade";
        kernel_log(k, A4PS_LOG_WARNING, "proto %s: %s %s could not convert the state back; "
                   "restoring the state saved when it left that version (later changes are lost)",
                   p->name, target->name, target->version);
    }
    if (!next) {
        publish(p, ob->disp);
        snprintf(err, errlen, "proto '%s': out of memory preparing state", p->name);
        beh_release(k, nb);
        return A4PS_ENOMEM;
    }
    kstate *old = p->state;
    proto_state_install(k, p, next, true);
    kstate_observe(old, NULL, NULL);
    p->state = next;
    p->cur = nb;
    p->meta_gen++;
    publish(p, nb->disp);
    uint64_t ns = kernel_now_ns() - t0;
    if (rollback) {
        hist_pop(p);
        kstate_free(old);
    } else {
        hist_push(p, ob->ver, old);
    }
    atomic_store(&k->stats.last_pause_ns, ns);
    atomic_store(&k->stats.last_swap_ns, ns);
    uint64_t mx = atomic_load(&k->stats.max_pause_ns);
    while (ns > mx && !atomic_compare_exchange_weak(&k->stats.max_pause_ns, &mx, ns))
        ;
    atomic_fetch_add(&k->stats.migrations, 1);
    atomic_fetch_add(&k->stats.swaps, 1);
    if (rollback)
        atomic_fetch_add(&k->stats.rollbacks, 1);
    swap_event(k, p, ob->ver, target, how, rollback, ns);
    beh_release(k, ob);
    return A4PS_OK;
}

/* Fence off a version for good: the table of its generation b (may be
 * NULL) answers nothing, it is never the newest again nor loaded again.
 * Returns whether the registry held b (the caller releases that reference when it may).  Under
 * k->lock. */
static bool version_fence(kver *v, kbeh *b, const char *prefix, const char *reason)
{
    v->status = KVER_QUARANTINED;
    snprintf(v->reason, sizeof v->reason, "%s%s", prefix, reason ? reason : "");
    if (!b || b->quarantined)
        return false;
    b->quarantined = true;
    atomic_store(&b->disp->nsel, 0);
    bool registry = b->registry;
    b->registry = false;
    return registry;
}

void swap_quarantine(kernel *k, kbeh *b, const char *reason)
{
    char err[KERNEL_ERRLEN];
    pthread_mutex_lock(&k->lock);
    if (b->quarantined) {
        pthread_mutex_unlock(&k->lock);
        return;
    }
    kver *v = b->ver;
    /* The registry's reference goes once the protos have moved off. */
    bool drop_registry = version_fence(v, b, "", reason);
    kernel_log(k, A4PS_LOG_ERR, "quarantined %s %s: %s", v->name, v->version, reason);
    kernel_record_error(k, reason);
    kernel_emitf(k, "plugin_faulted", "{s:s, s:s, s:s, s:s}", "plugin", v->name,
                 "version", v->version, "sha256", v->sha_hex, "reason", reason);
    size_t n;
    kproto **all = proto_all(k, &n);
    if (!all)
        kernel_log(k, A4PS_LOG_ERR, "quarantine of %s %s: out of memory listing the protos; "
                   "none was rolled back", v->name, v->version);
    for (size_t i = 0; all && i < n; i++) {
        kproto *p = all[i];
        if (p->cur != b)
            continue;
        drop_quarantined(p);
        if (!p->nhist) {
            kernel_log(k, A4PS_LOG_ERR, "proto %s: no earlier version to roll back to; "
                       "its calls fail until a new version is loaded", p->name);
            continue;
        }
        if (swap_to(k, p, p->hist[p->nhist - 1], true, err, sizeof err) != 0) {
            kernel_log(k, A4PS_LOG_ERR, "proto %s: rollback after fault failed: %s", p->name, err);
            kernel_record_error(k, err);
        }
    }
    free(all);
    if (drop_registry)
        beh_release(k, b);
    pthread_mutex_unlock(&k->lock);
}

/* ---- Public ---- */

int kernel_swap(kernel *k, const char *proto, const char *version, char *err, size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    int rc;
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    if (!p) {
        snprintf(err, errlen, "swap: no proto named '%s'", proto ? proto : "(null)");
        rc = A4PS_ENOENT;
        goto out;
    }
    const char *name = p->cur->ver->name;
    kver *target = version ? loader_find(k, name, version) : loader_newest(k, name);
    if (!target) {
        snprintf(err, errlen, "swap: proto '%s': no version %s of plugin '%s' is loaded",
                 proto, version ? version : "(newest)", name);
        rc = A4PS_ENOENT;
        goto out;
    }
    rc = swap_to(k, p, target, false, err, errlen);
out:
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kernel_upgrade(kernel *k, const char *plugin, char *err, size_t errlen)
{
    return kernel_upgrade_except(k, plugin, NULL, 0, err, errlen);
}

int kernel_upgrade_except(kernel *k, const char *plugin, const char *const *skip,
                          size_t nskip, char *err, size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    int rc = 0, n = 0;
    kver *newest = loader_newest(k, plugin);
    if (!newest) {
        snprintf(err, errlen, "upgrade: no plugin named '%s' is loaded", plugin);
        rc = A4PS_ENOENT;
        goto out;
    }
    size_t np;
    kproto **all = proto_all(k, &np);
    if (!all) {
        snprintf(err, errlen, "upgrade: out of memory listing the protos");
        rc = A4PS_ENOMEM;
    }
    for (size_t i = 0; all && i < np && rc == 0; i++) {
        kproto *p = all[i];
        if (strcmp(p->cur->ver->name, plugin) || p->cur->ver == newest ||
            loader_version_cmp(p->cur->ver, newest) > 0)
            continue;
        bool skipped = false;
        for (size_t j = 0; j < nskip && !skipped; j++)
            skipped = !strcmp(skip[j], p->name);
        if (skipped)
            continue;
        rc = swap_to(k, p, newest, false, err, errlen);
        if (rc == 0)
            n++;
    }
    free(all);
out:
    pthread_mutex_unlock(&k->lock);
    return rc < 0 ? rc : n;
}

int kernel_rollback_to(kernel *k, const char *proto, const char *version, char *err,
                       size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    int rc;
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    kver *target = p && version ? loader_find(k, p->cur->ver->name, version) : NULL;
    if (!p) {
        snprintf(err, errlen, "rollback: no proto named '%s'", proto ? proto : "(null)");
        rc = A4PS_ENOENT;
    } else if (!target) {
        snprintf(err, errlen, "rollback: proto '%s': plugin %s has no version %s in its lineage",
                 proto, p->cur->ver->name, version ? version : "(null)");
        rc = A4PS_ENOENT;
    } else {
        bool top = p->nhist && p->hist[p->nhist - 1] == target;
        rc = swap_to(k, p, target, top, err, errlen);
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kernel_rollback(kernel *k, const char *proto, char *err, size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    int rc;
    kproto *p = proto ? strmap_get(k->protos, proto) : NULL;
    if (!p) {
        snprintf(err, errlen, "rollback: no proto named '%s'", proto ? proto : "(null)");
        rc = A4PS_ENOENT;
    } else if ((drop_quarantined(p), !p->nhist)) {
        snprintf(err, errlen, "rollback: proto '%s' has no earlier version that is not "
                 "quarantined", proto);
        rc = A4PS_ENOENT;
    } else {
        rc = swap_to(k, p, p->hist[p->nhist - 1], true, err, errlen);
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kernel_version_withdraw(kernel *k, const char *name, const char *version,
                            const char *reason, char *err, size_t errlen)
{
    pthread_mutex_lock(&k->lock);
    kver *v = name && version ? loader_find(k, name, version) : NULL;
    if (!v) {
        pthread_mutex_unlock(&k->lock);
        snprintf(err, errlen, "withdraw: no version %s %s", name ? name : "?",
                 version ? version : "?");
        return A4PS_ENOENT;
    }
    size_t n;
    kproto **all = proto_all(k, &n);
    if (!all) {
        pthread_mutex_unlock(&k->lock);
        snprintf(err, errlen, "withdraw: out of memory");
        return A4PS_ENOMEM;
    }
    const char *user = NULL;
    for (size_t i = 0; i < n && !user; i++)
        if (all[i]->cur && all[i]->cur->ver == v)
            user = all[i]->name;
    if (user) {
        snprintf(err, errlen, "withdraw: proto %s runs %s %s; roll it back first", user, name,
                 version);
        free(all);
        pthread_mutex_unlock(&k->lock);
        return A4PS_EBUSY;
    }
    free(all);
    /* Fenced off like a quarantined version: never the newest, never loaded
     * again, left out of a restore; no proto runs it, so nobody rolls back. */
    if (version_fence(v, v->loaded, "withdrawn: ", reason))
        beh_release(k, v->loaded);
    kernel_log(k, A4PS_LOG_NOTICE, "withdrew %s %s: %s", name, version, reason ? reason : "");
    kernel_emitf(k, "plugin_withdrawn", "{s:s, s:s, s:s}", "plugin", name, "version", version,
                 "reason", reason ? reason : "");
    pthread_mutex_unlock(&k->lock);
    return A4PS_OK;
}
