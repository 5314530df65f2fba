/* strmap.h -- string -> pointer map with lock-free lookup under RCU.
 *
 * Lookups run on the dispatch path with no lock (inside an RCU read-side
 * section); inserts and deletes are made by one writer at a time (the caller
 * holds the kernel lock).  Tables and removed entries are handed to a
 * deferred-free function so they outlive every reader that might see them. */
#ifndef A4PS_STRMAP_H
#define A4PS_STRMAP_H

#include <stddef.h>

typedef struct strmap strmap;
typedef void (*strmap_defer_fn)(void *arg, void *ptr);
typedef void (*strmap_each_fn)(void *arg, const char *key, void *val);

strmap *strmap_create(strmap_defer_fn defer, void *arg);
/* Frees tables and entries at once: no reader may remain. */
void strmap_destroy(strmap *m);
void *strmap_get(strmap *m, const char *key);          /* RCU read side */
int strmap_put(strmap *m, const char *key, void *val); /* -EEXIST, -ENOMEM */
void *strmap_del(strmap *m, const char *key);          /* returns old value */
size_t strmap_count(strmap *m);
void strmap_each(strmap *m, strmap_each_fn fn, void *arg); /* writer side */

#endif
