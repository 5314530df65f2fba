/* state.c -- chained hash map of key -> bytes behind one mutex per proto. */
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct sent {
    struct sent *next;
    void *val;
    size_t len;
    char key[];
} sent;

struct kstate {
    pthread_mutex_t lock;
    sent **b;
    size_t nb, n;
    uint64_t gen;
    kstate_observer_fn obs;
    void *obs_arg;
};

static size_t hkey(const char *s)
{
    size_t h = 5381;
    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h;
}

int kstate_key_valid(const char *key)
{
    if (!key || !*key)
        return 0;
    return strnlen(key, KSTATE_KEY_MAX + 1) <= KSTATE_KEY_MAX;
}

kstate *kstate_new(void)
{
    kstate *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->nb = 16;
    s->b = calloc(s->nb, sizeof *s->b);
    if (!s->b) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void kstate_free(kstate *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nb; i++) {
        for (sent *e = s->b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e->val);
            free(e);
        }
    }
    free(s->b);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static sent **find(kstate *s, const char *key)
{
    sent **pp = &s->b[hkey(key) & (s->nb - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void grow(kstate *s)
{
    size_t nb = s->nb * 2;
    sent **b = calloc(nb, sizeof *b);
    if (!b)
        return;                  /* keep the longer chains; still correct */
    for (size_t i = 0; i < s->nb; i++) {
        for (sent *e = s->b[i], *nx; e; e = nx) {
            nx = e->next;
            size_t j = hkey(e->key) & (nb - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(s->b);
    s->b = b;
    s->nb = nb;
}

int64_t kstate_get(kstate *s, const char *key, void *buf, size_t cap)
{
    int64_t rc = -ENOENT;
    pthread_mutex_lock(&s->lock);
    sent *e = *find(s, key);
    if (e) {
        if (buf && cap)
            memcpy(buf, e->val, e->len < cap ? e->len : cap);
        rc = (int64_t)e->len;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int kstate_get_dup(kstate *s, const char *key, void **out, size_t *len)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&s->lock);
    sent *e = *find(s, key);
    if (e) {
        char *c = malloc(e->len + 1);
        if (!c) {
            rc = -ENOMEM;
        } else {
            memcpy(c, e->val, e->len);
            c[e->len] = 0;
            *out = c;
            *len = e->len;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int kstate_set_owned(kstate *s, const char *key, void *val, size_t len)
{
    size_t kl = strlen(key);
    sent *ne = malloc(sizeof *ne + kl + 1);
    if (!ne)
        return -ENOMEM;
    memcpy(ne->key, key, kl + 1);
    ne->val = val;
    ne->len = len;
    pthread_mutex_lock(&s->lock);
    int refused = s->obs ? s->obs(s->obs_arg, KSTATE_SET, key, val, len) : 0;
    if (refused) {
        pthread_mutex_unlock(&s->lock);
        free(ne);
        return refused;
    }
    sent **pp = find(s, key);
    if (*pp) {
        sent *old = *pp;
        ne->next = old->next;
        *pp = ne;
        free(old->val);
        free(old);
    } else {
        ne->next = NULL;
        *pp = ne;
        if (++s->n > s->nb * 2)
            grow(s);
    }
    s->gen++;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int kstate_set(kstate *s, const char *key, const void *val, size_t len)
{
    void *c = malloc(len ? len : 1);
    if (!c)
        return -ENOMEM;
    if (len)
        memcpy(c, val, len);
    int rc = kstate_set_owned(s, key, c, len);
    if (rc)
        free(c);
    return rc;
}

void kstate_observe(kstate *s, kstate_observer_fn fn, void *arg)
{
    pthread_mutex_lock(&s->lock);
    s->obs = fn;
    s->obs_arg = arg;
    pthread_mutex_unlock(&s->lock);
}

int kstate_del(kstate *s, const char *key)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&s->lock);
    sent **pp = find(s, key);
    if (*pp && s->obs && (rc = s->obs(s->obs_arg, KSTATE_DEL, key, NULL, 0)) != 0) {
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    if (*pp) {
        sent *e = *pp;
        *pp = e->next;
        free(e->val);
        free(e);
        s->n--;
        s->gen++;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

kstate *kstate_copy(kstate *s)
{
    kstate *c = kstate_new();
    if (!c)
        return NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nb; i++) {
        for (sent *e = s->b[i]; e; e = e->next) {
            if (kstate_set(c, e->key, e->val, e->len)) {
                pthread_mutex_unlock(&s->lock);
                kstate_free(c);
                return NULL;
            }
        }
    }
    c->gen = s->gen;
    pthread_mutex_unlock(&s->lock);
    return c;
}

int kstate_each(kstate *s, kstate_each_fn fn, void *arg)
{
    /* Snapshot first so fn may call back into the state (or into plugin
     * code that faults) without the lock held. */
    kstate *snap = kstate_copy(s);
    if (!snap)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < snap->nb && !rc; i++)
        for (sent *e = snap->b[i]; e && !rc; e = e->next)
            rc = fn(arg, e->key, e->val, e->len);
    kstate_free(snap);
    return rc > 0 ? 0 : rc;
}

size_t kstate_count(kstate *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

uint64_t kstate_gen_quiet(kstate *s)
{
    return __atomic_load_n(&s->gen, __ATOMIC_RELAXED);
}

int kstate_export(kstate *s, char ***keys, void ***vals, size_t **lens, size_t *n)
{
    pthread_mutex_lock(&s->lock);
    size_t cnt = s->n, i = 0;
    char **k = calloc(cnt ? cnt : 1, sizeof *k);
    void **v = calloc(cnt ? cnt : 1, sizeof *v);
    size_t *l = calloc(cnt ? cnt : 1, sizeof *l);
    bool ok = k && v && l;
    for (size_t b = 0; ok && b < s->nb; b++)
        for (sent *e = s->b[b]; ok && e; e = e->next, i++) {
            k[i] = strdup(e->key);
            v[i] = malloc(e->len ? e->len : 1);
            l[i] = e->len;
            if (!k[i] || !v[i]) {
                ok = false;
                i++;
                break;
            }
            memcpy(v[i], e->val, e->len);
        }
    pthread_mutex_unlock(&s->lock);
    if (!ok) {
        for (size_t j = 0; k && v && j < i; j++) {
            free(k[j]);
            free(v[j]);
        }
        free(k);
        free(v);
        free(l);
        return -ENOMEM;
    }
    *keys = k;
    *vals = v;
    *lens = l;
    *n = cnt;
    return 0;
}

uint64_t kstate_gen(kstate *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t g = s->gen;
    pthread_mutex_unlock(&s->lock);
    return g;
}
