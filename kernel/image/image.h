/* image.h -- the live image: the whole system in one SQLite file.
 *
 * The image holds every plugin version that was ever live (with its binary,
 * so it can be loaded again without the original file), the protos with
 * their state, and an audit log of what changed the system.  It is written by
 * snapshots (kernel_snapshot_take, then image_write in one transaction) and
 * read back at start (image_restore).  Format: see image.c. */
#ifndef A4PS_IMAGE_H
#define A4PS_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "kernel.h"

#define IMAGE_FORMAT 1

typedef struct image image;

/* Open (or create) the image at path.  Refuses, with a message saying so, a
 * file that is not an image, a damaged one, and one written by a newer
 * format. */
int image_open(const char *path, image **out, char *err, size_t errlen);
void image_close(image *img);
/* What image_open did or could not do to the modes of the image, its WAL,
 * SHM and backups (it makes them 0600), as one line for the log; NULL if
 * they were all right. */
const char *image_notice(const image *img);

/* Write snapshot s in one transaction: binaries not yet in the image,
 * every version's record, the changed protos with their whole state, the
 * deleted protos.  On failure nothing of it is in the image. */
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
 * report(arg, message) and left out; the rest come back. */
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
