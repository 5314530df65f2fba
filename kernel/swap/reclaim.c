/* reclaim.c -- unloading retired generations after their grace period.
 *
 * A generation is retired when its last reference (protos, registry, hook
 * runners) goes.  Threads may still be executing its code or holding its
 * dispatch table, so the reclaimer thread waits for an RCU grace period
 * (every attached thread passed a quiescent state, every casual thread left
 * its send), then runs fini -- bounded, on its own thread -- and dlcloses.
 * A swap only queues work here; it never waits for it. */
#include "kernel_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void unlink_beh(kernel *k, kbeh *b)
{
    for (kbeh **pp = &k->behs; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    if (b->ver && b->ver->loaded == b)
        b->ver->loaded = NULL;
}

static void reclaim_one(kernel *k, kbeh *b)
{
    char why[KERNEL_ERRLEN];
    int rc = 0;
    if (b->d.fini) {
        kctx c = {.k = k, .beh = b};
        rc = loader_run_hook(k, b, HOOK_FINI, &c, 0, k->cfg.hook_timeout_ms, why, sizeof why);
    }
    pthread_mutex_lock(&k->lock);
    if (rc == A4PS_ETIMEDOUT) {
        /* Its thread is still inside the plugin: the mapping stays for ever,
         * listed in status; the generation is never called again. */
        char msg[KERNEL_ERRLEN];
        snprintf(msg, sizeof msg, "%s %s generation %llu: %s; its mapping is kept",
                 b->ver->name, b->ver->version, (unsigned long long)b->gen, why);
        kernel_log(k, A4PS_LOG_ERR, "%s", msg);
        kernel_record_error(k, msg);
        pthread_mutex_unlock(&k->lock);
        return;
    }
    if (rc)
        kernel_log(k, A4PS_LOG_WARNING, "%s %s: %s", b->ver->name, b->ver->version, why);
    unlink_beh(k, b);
    pthread_mutex_unlock(&k->lock);
    kernel_log(k, A4PS_LOG_DEBUG, "unloaded %s %s generation %llu", b->ver->name,
               b->ver->version, (unsigned long long)b->gen);
    if (rc == A4PS_EFAULT)
        b->dl = NULL;            /* its fini faulted: run none of its destructors */
    loader_beh_free(b);
    atomic_fetch_add(&k->stats.reclaimed, 1);
}

static void *reclaim_main(void *arg)
{
    kernel *k = arg;
    pthread_mutex_lock(&k->rlock);
    for (;;) {
        while (!k->retired && !k->ndeferred && !k->rstop)
            pthread_cond_wait(&k->rcv, &k->rlock);
        if (!k->retired && !k->ndeferred && k->rstop)
            break;
        kbeh *list = k->retired;
        kdefer *defs = k->deferred;
        size_t ndefs = k->ndeferred;
        k->retired = NULL;
        k->deferred = NULL;
        k->ndeferred = k->capdeferred = 0;
        pthread_mutex_unlock(&k->rlock);

        urcu_qsbr_synchronize_rcu();
        for (size_t i = 0; i < ndefs; i++)
            defs[i].fn(defs[i].ptr);
        free(defs);
        int n = 0;
        while (list) {
            kbeh *b = list;
            list = b->next_retired;
            reclaim_one(k, b);
            n++;
        }
        pthread_mutex_lock(&k->rlock);
        k->draining -= n;
        pthread_cond_broadcast(&k->rdone);
    }
    pthread_mutex_unlock(&k->rlock);
    return NULL;
}

int reclaim_start(kernel *k)
{
    pthread_mutex_init(&k->rlock, NULL);
    pthread_cond_init(&k->rcv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->rdone, &ca);
    pthread_condattr_destroy(&ca);
    return pthread_create(&k->reclaimer, NULL, reclaim_main, k);
}

void reclaim_stop(kernel *k)
{
    pthread_mutex_lock(&k->rlock);
    k->rstop = true;
    pthread_cond_signal(&k->rcv);
    pthread_mutex_unlock(&k->rlock);
    pthread_join(k->reclaimer, NULL);
    pthread_mutex_destroy(&k->rlock);
    pthread_cond_destroy(&k->rcv);
    pthread_cond_destroy(&k->rdone);
}

void reclaim_defer(kernel *k, void (*fn)(void *), void *ptr)
{
    pthread_mutex_lock(&k->rlock);
    if (k->ndeferred == k->capdeferred) {
        size_t cap = k->capdeferred ? k->capdeferred * 2 : 16;
        kdefer *nd = realloc(k->deferred, cap * sizeof *nd);
        if (!nd) {
            /* Cannot queue it: leaking is safe, freeing now is not. */
            pthread_mutex_unlock(&k->rlock);
            return;
        }
        k->deferred = nd;
        k->capdeferred = cap;
    }
    k->deferred[k->ndeferred++] = (kdefer){fn, ptr};
    pthread_cond_signal(&k->rcv);
    pthread_mutex_unlock(&k->rlock);
}

int kernel_reclaim_wait(kernel *k, unsigned timeout_ms)
{
    bool worker = kernel_thread_self()->mode == KT_WORKER;
    if (worker)
        kernel_thread_offline(k);    /* our own read side would block the grace period */
    struct timespec dl = kernel_deadline(timeout_ms);
    pthread_mutex_lock(&k->rlock);
    while (k->draining > 0)
        if (pthread_cond_timedwait(&k->rdone, &k->rlock, &dl) == ETIMEDOUT)
            break;
    int left = k->draining;
    pthread_mutex_unlock(&k->rlock);
    if (worker)
        kernel_thread_online(k);
    return left;
}
