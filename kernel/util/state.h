/* state.h -- a proto's state: key -> bytes, safe under concurrent callers.
 *
 * Every operation takes the state's own mutex for its duration only; values
 * are copied in and out, so no caller ever holds a pointer into the map.
 * Callers copy plugin-supplied buffers before calling in, so a fault in
 * plugin memory can never happen while the mutex is held. */
#ifndef A4PS_STATE_H
#define A4PS_STATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kstate kstate;
typedef int (*kstate_each_fn)(void *arg, const char *key, const void *val,
                              size_t len);
/* Told of every change with the state's mutex held, before the change is
 * made, so what it records is in the order the changes were made; a
 * negative errno refuses the change (the caller gets it back). */
enum { KSTATE_SET = 1, KSTATE_DEL = 2 };
typedef int (*kstate_observer_fn)(void *arg, int op, const char *key, const void *val,
                                  size_t len);

#define KSTATE_KEY_MAX 255

kstate *kstate_new(void);
void kstate_free(kstate *s);
kstate *kstate_copy(kstate *s);                 /* deep; NULL on ENOMEM; not observed */
void kstate_observe(kstate *s, kstate_observer_fn fn, void *arg);
/* Copies min(len, cap) bytes into buf; returns the full length or -ENOENT. */
int64_t kstate_get(kstate *s, const char *key, void *buf, size_t cap);
int kstate_get_dup(kstate *s, const char *key, void **out, size_t *len);
/* Takes ownership of val (malloc'd) on success.  Set and del return 0,
 * -ENOMEM, -ENOENT (del) or what the observer refused with. */
int kstate_set_owned(kstate *s, const char *key, void *val, size_t len);
int kstate_set(kstate *s, const char *key, const void *val, size_t len);
int kstate_del(kstate *s, const char *key);
/* Walks a snapshot of the keys taken under the lock; fn runs unlocked. */
int kstate_each(kstate *s, kstate_each_fn fn, void *arg);
size_t kstate_count(kstate *s);
uint64_t kstate_gen(kstate *s);                 /* bumps on every change */
/* The same without the lock, for a caller that knows no writer runs (a
 * snapshot under its freeze). */
uint64_t kstate_gen_quiet(kstate *s);
/* Copy every key and value out in one pass under the lock: *keys, *vals and
 * *lens are arrays of *n (one allocation each); each key and value is its
 * own malloc.  Returns 0 or -ENOMEM (nothing allocated). */
int kstate_export(kstate *s, char ***keys, void ***vals, size_t **lens, size_t *n);
int kstate_key_valid(const char *key);

#endif
