/* image.h -- the live image: the whole system in one SQLite file.
 *
 * The image holds every plugin version that was ever live (with its binary,
 * so it can be loaded again without the original file), the protos with
 * their state, and an audit log of what changed the system.  It is written by
 * snapshots (kernel_snapshot_take, then image_write in one transaction) and
 * read back at start (image_restore).  Format: see image.c. */
#ifndef A4PS_IMAGE_H
#define A4PS_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel.h"

#define IMAGE_FORMAT 1

typedef struct image image;

/* Open (or create) the image at path.  Refuses, with a message saying so, a
 * file that is not an image, a damaged one, and one written by a newer
 * format.  Damaged: quick_check fails, a protos or state row fails its
 * checksum, or a stored binary fails its SHA-256 -- the last (and only the
 * last: the rest of the image checked out) returns IMAGE_EBINARY, its
 * message naming each such binary's versions and sha256. */
int image_open(const char *path, image **out, char *err, size_t errlen);

/* ---- Damage (issue 11: damage never erases state) ---- */

#define IMAGE_EBINARY (-2000)          /* image_open: only stored binaries are damaged */
#define IMAGE_OPEN_BAD_BINARIES 1u     /* open anyway; image_bad_binaries lists them */

typedef struct image_bad_binary {
    char sha256[65];             /* what the image records */
    char actual[65];             /* what the stored bytes hash to */
    char versions[512];          /* "babs 1.0.0, babs 1.0.1" (or "no version") */
} image_bad_binary;

/* image_open with flags (IMAGE_OPEN_BAD_BINARIES). */
int image_open_ex(const char *path, unsigned flags, image **out, char *err, size_t errlen);
/* The binaries that failed their hash when img was opened (with
 * IMAGE_OPEN_BAD_BINARIES), less the ones repaired since; *n of them. */
const image_bad_binary *image_bad_binaries(const image *img, size_t *n);
/* Replace the stored binary sha256 with bytes, which must hash to it (else
 * A4PS_EINVAL), in a transaction of its own; nothing else changes. */
int image_binary_repair(image *img, const char *sha256, const void *bytes, size_t len,
                        char *err, size_t errlen);
/* A verified copy of binary sha256 in the image file at path (a backup
 * generation), opened read-only with a connection of its own: A4PS_OK and
 * *bytes (malloc'd) of *len bytes that hash to sha256; A4PS_ENOENT when the
 * file does not open, lacks it or holds other bytes under that name. */
int image_find_binary(const char *path, const char *sha256, void **bytes, size_t *len);

/* A proto image_restore could not bring back (its version was left out, or
 * the kernel refused it): its rows stay in the image as they are. */
typedef struct image_unrestorable {
    char name[64], plugin[64], version[32];
    uint32_t state_version;
    char reason[512];
} image_unrestorable;
/* The protos the last image_restore on img left out; *n of them. */
const image_unrestorable *image_unrestorables(const image *img, size_t *n);
/* While held, image_write neither writes nor deletes proto name's rows, whatever the
 * snapshot says (an unrestorable proto waits for the operator). */
int image_hold(image *img, const char *name, bool hold);
/* Read proto name's record and state rows into *out (free with
 * image_proto_free): A4PS_ENOENT when the image has none. */
int image_proto_load(image *img, const char *name, kernel_snap_proto *out, char *err,
                     size_t errlen);
void image_proto_free(kernel_snap_proto *p);
/* Delete proto name's record and state rows in a transaction of its own
 * (*nrows: the state rows deleted); A4PS_ENOENT when the image has none. */
int image_proto_delete(image *img, const char *name, int *nrows, char *err, size_t errlen);

/* The full check of the image file at path, on a read-only connection of its
 * own (any thread, beside the writer): PRAGMA integrity_check, every stored
 * binary against its SHA-256, every protos and state row against its
 * checksum.  Each problem is one line in problems; none: the image is good.
 * A4PS_ERROR (err) only when the file cannot be opened at all. */
typedef struct image_check_result {
    char **problems;
    size_t nproblems;
    long binaries, protos, state_rows;   /* what was checked */
} image_check_result;
int image_check(const char *path, image_check_result *r, char *err, size_t errlen);
void image_check_free(image_check_result *r);
void image_close(image *img);
/* What image_open did or could not do to the modes of the image, its WAL,
 * SHM and backups (it makes them 0600), as one line for the log; NULL if
 * they were all right. */
const char *image_notice(const image *img);

/* Write snapshot s in one transaction: binaries not yet in the image,
 * every version's record, the changed protos with their whole state, the
 * deleted protos.  On failure nothing of it is in the image.  A damaged
 * binary (image_bad_binaries) whose version s has loaded again is repaired
 * from the kernel's verified copy; held protos (image_hold) are skipped. */
int image_write(image *img, const kernel_snapshot *s, char *err, size_t errlen);

/* Append events to the audit log in one transaction; it keeps the newest
 * `keep` entries.  json[i] is the event as the bus delivered it. */
int image_audit(image *img, char *const *json, size_t n, long keep, char *err, size_t errlen);

typedef struct image_restored {
    int versions;                /* versions loaded from the image */
    int protos;                  /* protos restored */
    int failed;                  /* versions or protos left out (reported) */
} image_restored;

/* Bring the image's versions and protos back into k: binaries are written
 * under tmpdir, verified against their SHA-256 and loaded; protos are
 * created on their exact versions with their state.  A version whose binary
 * fails its hash or its load, and the protos on it, are reported through
 * report(arg, message) and left out (the protos listed by
 * image_unrestorables, their rows untouched); the rest come back. */
int image_restore(image *img, kernel *k, const char *tmpdir, image_restored *out,
                  void (*report)(void *arg, const char *message), void *arg,
                  char *err, size_t errlen);

/* Keep the image as it is now as backup generation 1 (PATH.1; older ones
 * move to PATH.2 ... PATH.keep, the oldest beyond keep is removed).  The copy
 * is made with VACUUM INTO, so it is a consistent, compact image itself. */
int image_backup(image *img, int keep, char *err, size_t errlen);

/* Call each(arg, sha256 hex, report JSON) for every version whose test
 * report the image keeps (a4psd trusts a binary the sandbox passed before
 * without probing it again at every start). */
int image_each_report(image *img, void (*each)(void *arg, const char *sha256, const char *report),
                      void *arg);

/* The image's identity (32 hex digits, made when it was created) and the
 * journal position its last snapshot covers (0: none). */
const char *image_id(const image *img);
uint64_t image_journal_seq(const image *img);

/* Set (del 0) or delete one key of a proto's state in the image itself, in
 * its own transaction: the journal's replay for a proto the kernel could not
 * restore, whose state must not be lost while it waits for an operator. */
int image_state_apply(image *img, const char *proto, int del, const char *key, const void *val,
                      size_t len, char *err, size_t errlen);

/* Does the image know proto name?  (For the config's precedence rules.) */
int image_has_proto(image *img, const char *name);

#endif
