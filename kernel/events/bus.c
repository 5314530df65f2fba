/* bus.c -- the kernel's event bus: subjects, observers, one delivery thread.
 *
 * Observers are (proto, selector) names, never function pointers, so an
 * observer can be swapped or destroyed at any time: delivery is an ordinary
 * send by name.  Publishing appends to one bounded FIFO (order per publisher
 * is publish order); when the FIFO is full the new event is dropped and
 * counted, never blocking the publisher -- a plugin fault handler or a
 * dispatch slow path may be the one publishing. */
#include "kernel_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bevent {
    char *name;
    char *msg;                   /* the JSON delivered to observers */
    size_t len;
} bevent;

typedef struct bsub {
    char event[KERNEL_NAME_MAX];
    char proto[KERNEL_NAME_MAX];
    char selector[KERNEL_NAME_MAX];
} bsub;

struct bus {
    kernel *k;
    pthread_mutex_t lock;
    pthread_cond_t more;         /* events queued or stop */
    pthread_cond_t idle;         /* an event finished delivery */
    bevent *q;
    size_t cap, head, n;
    bsub *subs;
    size_t nsubs, capsubs;
    uint64_t seq, done;          /* published, delivered-or-failed */
    bus_stats st;
    bool stop;
    pthread_t thread;
};

static int name_ok(const char *s)
{
    if (!s || !*s || strlen(s) >= KERNEL_NAME_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '.' || *s == '-' || *s == '*'))
            return 0;
    return 1;
}

static void deliver(bus *b, bevent *e)
{
    bsub *subs = NULL;
    size_t n = 0;
    pthread_mutex_lock(&b->lock);
    if (b->nsubs) {
        subs = malloc(b->nsubs * sizeof *subs);
        if (subs) {
            for (size_t i = 0; i < b->nsubs; i++)
                if (strcmp(b->subs[i].event, "*") == 0 || strcmp(b->subs[i].event, e->name) == 0)
                    subs[n++] = b->subs[i];
        }
    }
    pthread_mutex_unlock(&b->lock);

    uint64_t ok = 0, failed = 0;
    kernel_reply r = {0};
    /* Each observer gets a copy of its own: the payload is shared by every
     * observer after it and by on_event, and an observer that casts away
     * const must not change what they receive. */
    char *copy = n ? malloc(e->len + 1) : NULL;
    if (n && !copy) {
        kernel_log(b->k, A4PS_LOG_WARNING, "event %s: out of memory: %zu observer%s skipped",
                   e->name, n, n == 1 ? "" : "s");
        failed = n;
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, e->msg, e->len);
        copy[e->len] = 0;
        int rc = kernel_send(b->k, subs[i].proto, subs[i].selector, copy, e->len, &r);
        if (rc == A4PS_OK) {
            ok++;
        } else {
            failed++;
            /* Not through kernel_emitf: a failing observer must not feed
             * the bus an event per event. */
            kernel_log(b->k, A4PS_LOG_WARNING, "event %s: observer %s.%s failed (%d): %s",
                       e->name, subs[i].proto, subs[i].selector, rc,
                       r.len ? r.data : "");
        }
        kernel_quiescent(b->k);
    }
    kernel_reply_free(&r);
    free(copy);
    free(subs);
    if (b->k->cfg.on_event)
        b->k->cfg.on_event(b->k->cfg.on_event_arg, e->name, e->msg, e->len);

    pthread_mutex_lock(&b->lock);
    b->st.delivered += ok;
    b->st.failed += failed;
    b->done++;
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->lock);
}

static void *bus_main(void *arg)
{
    bus *b = arg;
    kernel_thread_attach(b->k);
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->n && !b->stop) {
            kernel_thread_offline(b->k);
            pthread_cond_wait(&b->more, &b->lock);
            pthread_mutex_unlock(&b->lock);
            kernel_thread_online(b->k);
            pthread_mutex_lock(&b->lock);
        }
        if (!b->n && b->stop)
            break;
        bevent e = b->q[b->head];
        b->head = (b->head + 1) % b->cap;
        b->n--;
        pthread_mutex_unlock(&b->lock);
        deliver(b, &e);
        free(e.name);
        free(e.msg);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    kernel_thread_detach(b->k);
    return NULL;
}

bus *bus_create(kernel *k, size_t qlen, char *err, size_t errlen)
{
    bus *b = calloc(1, sizeof *b);
    if (!b || !(b->q = calloc(qlen, sizeof *b->q))) {
        free(b);
        snprintf(err, errlen, "event bus: out of memory for %zu events", qlen);
        return NULL;
    }
    b->k = k;
    b->cap = qlen;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->more, NULL);
    pthread_cond_init(&b->idle, NULL);
    int rc = pthread_create(&b->thread, NULL, bus_main, b);
    if (rc) {
        snprintf(err, errlen, "event bus: cannot start its thread: %s", strerror(rc));
        free(b->q);
        free(b);
        return NULL;
    }
    return b;
}

void bus_destroy(bus *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = true;
    pthread_cond_broadcast(&b->more);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    for (size_t i = 0; i < b->n; i++) {
        bevent *e = &b->q[(b->head + i) % b->cap];
        free(e->name);
        free(e->msg);
    }
    free(b->q);
    free(b->subs);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->more);
    pthread_cond_destroy(&b->idle);
    free(b);
}

int bus_publish(bus *b, const char *event, const char *json)
{
    if (!name_ok(event) || strchr(event, '*'))
        return A4PS_EINVAL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *data = json && *json ? json : "null";
    size_t len = strlen(event) + strlen(data) + 96;
    char *msg = malloc(len);
    char *name = strdup(event);
    if (!msg || !name) {
        free(msg);
        free(name);
        pthread_mutex_lock(&b->lock);
        b->st.dropped++;
        pthread_mutex_unlock(&b->lock);
        return A4PS_ENOMEM;
    }
    pthread_mutex_lock(&b->lock);
    if (b->n == b->cap || b->stop) {
        b->st.dropped++;
        pthread_mutex_unlock(&b->lock);
        free(msg);
        free(name);
        return A4PS_EBUSY;
    }
    /* seq is taken and the event queued under one lock, so seq order is
     * queue order is delivery order. */
    uint64_t seq = ++b->seq;
    int n = snprintf(msg, len, "{\"event\":\"%s\",\"seq\":%llu,\"time\":%lld.%03ld,\"data\":%s}",
                     event, (unsigned long long)seq, (long long)ts.tv_sec,
                     ts.tv_nsec / 1000000, data);
    size_t tail = (b->head + b->n) % b->cap;
    b->q[tail] = (bevent){.name = name, .msg = msg, .len = (size_t)n};
    b->n++;
    b->st.published++;
    pthread_cond_signal(&b->more);
    pthread_mutex_unlock(&b->lock);
    return A4PS_OK;
}

int bus_subscribe(bus *b, const char *event, const char *proto, const char *selector)
{
    if (!name_ok(event) || !proto || !*proto || strlen(proto) >= KERNEL_NAME_MAX ||
        !selector || !*selector || strlen(selector) >= KERNEL_NAME_MAX)
        return A4PS_EINVAL;
    int rc = A4PS_OK;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->nsubs; i++) {
        bsub *s = &b->subs[i];
        if (!strcmp(s->event, event) && !strcmp(s->proto, proto) && !strcmp(s->selector, selector)) {
            rc = A4PS_EEXIST;
            goto out;
        }
    }
    if (b->nsubs == b->capsubs) {
        size_t cap = b->capsubs ? b->capsubs * 2 : 8;
        bsub *ns = realloc(b->subs, cap * sizeof *ns);
        if (!ns) {
            rc = A4PS_ENOMEM;
            goto out;
        }
        b->subs = ns;
        b->capsubs = cap;
    }
    bsub *s = &b->subs[b->nsubs++];
    snprintf(s->event, sizeof s->event, "%s", event);
    snprintf(s->proto, sizeof s->proto, "%s", proto);
    snprintf(s->selector, sizeof s->selector, "%s", selector);
out:
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int bus_unsubscribe(bus *b, const char *event, const char *proto, const char *selector)
{
    int rc = A4PS_ENOENT;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->nsubs; i++) {
        bsub *s = &b->subs[i];
        if ((!event || !strcmp(s->event, event)) && !strcmp(s->proto, proto) &&
            (!selector || !strcmp(s->selector, selector))) {
            b->subs[i--] = b->subs[--b->nsubs];
            rc = A4PS_OK;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

void bus_flush(bus *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t target = b->seq;
    while (b->done < target && !b->stop)
        pthread_cond_wait(&b->idle, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

void bus_get_stats(bus *b, bus_stats *s)
{
    pthread_mutex_lock(&b->lock);
    *s = b->st;
    s->queued = b->n;
    pthread_mutex_unlock(&b->lock);
}
