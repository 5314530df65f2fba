/* strmap.c -- open-addressing string map: lock-free readers, one writer.
 *
 * Readers probe linearly from the key's hash until an empty slot.  A writer
 * fills empty slots in place with one atomic store (readers see the entry or
 * not, never half of it), marks removed slots with a tombstone, and rebuilds
 * into a fresh table -- published with one store -- when slots run short.
 * Old tables and removed entries go to the deferred-free function. */
#include "strmap.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct smentry {
    void *val;
    char key[];
} smentry;

typedef struct smtab {
    size_t cap;                  /* power of two */
    smentry *_Atomic slot[];
} smtab;

struct strmap {
    smtab *_Atomic tab;
    size_t used;                 /* live entries */
    size_t tombs;
    strmap_defer_fn defer;
    void *defer_arg;
};

static smentry tombstone;
#define TOMB (&tombstone)

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;     /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static smtab *tab_new(size_t cap)
{
    smtab *t = calloc(1, sizeof *t + cap * sizeof(t->slot[0]));
    if (t)
        t->cap = cap;
    return t;
}

strmap *strmap_create(strmap_defer_fn defer, void *arg)
{
    strmap *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    smtab *t = tab_new(16);
    if (!t) {
        free(m);
        return NULL;
    }
    atomic_init(&m->tab, t);
    m->defer = defer;
    m->defer_arg = arg;
    return m;
}

void strmap_destroy(strmap *m)
{
    if (!m)
        return;
    smtab *t = atomic_load(&m->tab);
    for (size_t i = 0; i < t->cap; i++) {
        smentry *e = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
        if (e && e != TOMB)
            free(e);
    }
    free(t);
    free(m);
}

void *strmap_get(strmap *m, const char *key)
{
    smtab *t = atomic_load_explicit(&m->tab, memory_order_consume);
    size_t mask = t->cap - 1;
    for (size_t i = hash_str(key) & mask, n = 0; n < t->cap; i = (i + 1) & mask, n++) {
        smentry *e = atomic_load_explicit(&t->slot[i], memory_order_consume);
        if (!e)
            return NULL;
        if (e != TOMB && strcmp(e->key, key) == 0)
            return e->val;
    }
    return NULL;
}

/* Writer side: rebuild into a table sized for the live entries. */
static int rebuild(strmap *m, size_t need)
{
    smtab *old = atomic_load_explicit(&m->tab, memory_order_relaxed);
    size_t cap = 16;
    while (cap < need * 2 + 2)
        cap <<= 1;
    smtab *t = tab_new(cap);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < old->cap; i++) {
        smentry *e = atomic_load_explicit(&old->slot[i], memory_order_relaxed);
        if (!e || e == TOMB)
            continue;
        size_t j = hash_str(e->key) & (cap - 1);
        while (atomic_load_explicit(&t->slot[j], memory_order_relaxed))
            j = (j + 1) & (cap - 1);
        atomic_store_explicit(&t->slot[j], e, memory_order_relaxed);
    }
    atomic_store_explicit(&m->tab, t, memory_order_release);
    m->tombs = 0;
    m->defer(m->defer_arg, old);
    return 0;
}

int strmap_put(strmap *m, const char *key, void *val)
{
    if (strmap_get(m, key))
        return -EEXIST;
    smtab *t = atomic_load_explicit(&m->tab, memory_order_relaxed);
    if ((m->used + m->tombs + 1) * 2 > t->cap) {
        int rc = rebuild(m, m->used + 1);
        if (rc)
            return rc;
        t = atomic_load_explicit(&m->tab, memory_order_relaxed);
    }
    size_t len = strlen(key);
    smentry *e = malloc(sizeof *e + len + 1);
    if (!e)
        return -ENOMEM;
    e->val = val;
    memcpy(e->key, key, len + 1);
    size_t mask = t->cap - 1, i = hash_str(key) & mask;
    /* Only empty slots are filled: reusing a tombstone could let a reader
     * that is mid-probe skip past an entry it should have found. */
    while (atomic_load_explicit(&t->slot[i], memory_order_relaxed))
        i = (i + 1) & mask;
    atomic_store_explicit(&t->slot[i], e, memory_order_release);
    m->used++;
    return 0;
}

void *strmap_del(strmap *m, const char *key)
{
    smtab *t = atomic_load_explicit(&m->tab, memory_order_relaxed);
    size_t mask = t->cap - 1;
    for (size_t i = hash_str(key) & mask, n = 0; n < t->cap; i = (i + 1) & mask, n++) {
        smentry *e = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
        if (!e)
            return NULL;
        if (e != TOMB && strcmp(e->key, key) == 0) {
            void *val = e->val;
            atomic_store_explicit(&t->slot[i], TOMB, memory_order_release);
            m->used--;
            m->tombs++;
            m->defer(m->defer_arg, e);
            return val;
        }
    }
    return NULL;
}

size_t strmap_count(strmap *m)
{
    return m->used;
}

void strmap_each(strmap *m, strmap_each_fn fn, void *arg)
{
    smtab *t = atomic_load_explicit(&m->tab, memory_order_relaxed);
    for (size_t i = 0; i < t->cap; i++) {
        smentry *e = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
        if (e && e != TOMB)
            fn(arg, e->key, e->val);
    }
}
