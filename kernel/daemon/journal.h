/* journal.h -- the journal beside the image: every change of a proto's
 * state, appended in order and written before the reply of the send that
 * made it leaves a4psd (DESIGN.md §5, Redis's AOF).
 *
 * Files: IMAGE.journal.<first sequence, 16 hex digits>, "segments".  Each
 * opens with a header naming the image (its image_id) and the sequence of
 * its first record; each record carries its sequence and a CRC-32C.  A
 * snapshot records the sequence it covers (meta journal_seq in the image);
 * after it commits a new segment begins and the segments it covers go.
 *
 * Threads: journal_change runs on whatever thread changes a state, under
 * that state's lock; journal_sync on the workers before a reply; one thread
 * of the journal's own writes what no reply waited for and, with
 * "everysec", calls fdatasync once a second. */
#ifndef A4PS_JOURNAL_H
#define A4PS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct journal journal;

/* A record as replay hands it over: op is KERNEL_STATE_SET, _DEL or
 * _RESET (key and val NULL).  Non-zero from apply stops the replay. */
typedef int (*journal_apply_fn)(void *arg, uint64_t seq, int op, const char *proto,
                                const char *key, const void *val, size_t len);

typedef struct journal_replayed {
    int segments;                /* files read */
    uint64_t records;            /* records past the image's position */
    uint64_t first, last;        /* their sequences (0: none) */
    uint64_t covered;            /* records the image already held */
    char note[1024];             /* a torn tail cut off, a gap: for the log */
} journal_replayed;

/* The journal of the image at image_path, recording with durability mode
 * (DURABLE_*).  Nothing is read before journal_replay nor written before
 * journal_start: the kernel's state log can point at it from the start. */
int journal_open(const char *image_path, int mode, journal **out, char *err, size_t errlen);

/* Find the segments of the image (identity image_id: a segment naming
 * another is refused) and replay every record past `from` (the image's
 * journal_seq) in order.  A
 * torn last record (a crash in the middle of a write) ends the replay
 * cleanly and is cut off.  A segment of another image, a record that fails
 * its checksum or breaks the sequence anywhere else stops it: an error that
 * says which file, offset and sequence -- unless recover is set, when the
 * damaged segment and those after it are moved aside (FILE.damaged-TIME)
 * and what came before stands (said in r->note). */
int journal_replay(journal *j, const char *image_id, uint64_t from, int recover,
                   journal_apply_fn apply, void *arg, journal_replayed *r, char *err, size_t errlen);

/* Begin recording: a new segment after everything replayed.  From here the
 * kernel's state log (journal_change, journal_cut) records. */
int journal_start(journal *j, char *err, size_t errlen);

/* kernel_state_log.change and .cut (arg: the journal). */
int journal_change(void *arg, const char *proto, int op, const char *key, const void *val,
                   size_t len);
uint64_t journal_cut(void *arg);

/* Before a reply: make every record this thread appended durable as the
 * mode says (written to the OS; with "always" also fsync'd), grouped with
 * the other threads waiting (one write for all of them).  Returns 0; 1 when
 * a record of this thread is or follows a RESET (a migration, a rollback, a
 * creation: replay cannot redo one) that no snapshot covers yet -- the caller takes one, then asks again; or -1
 * with err: the journal cannot be written (the reply must not claim the
 * change was kept). */
int journal_sync(journal *j, char *err, size_t errlen);

/* The same without blocking the caller when the records must wait for a
 * write of the journal's thread (always with "always"; with "everysec"
 * when another write is under way): returns 2, and done(arg, rc, err) is
 * called later on the journal's thread -- rc 0 written, -1 not (err says
 * why).  0, 1 and -1 as journal_sync, done not called. */
typedef void (*journal_done_fn)(void *arg, int rc, const char *err);

/* After a 1 whose snapshot failed (the reply refused): this thread's next
 * reply does not wait for that snapshot again. */
void journal_sync_forget(void);
int journal_sync_async(journal *j, journal_done_fn done, void *arg, char *err, size_t errlen);

/* The image now holds everything up to position `seq` (a snapshot's
 * log_position): start a new segment and remove those it covers. */
void journal_covered(journal *j, uint64_t seq);

/* The journal failed (a write or an fsync): a snapshot that holds every
 * change made so far heals it (journal_covered), so a4psd takes one. */
bool journal_wants_snapshot(journal *j);

/* Bytes recorded since the last snapshot (a4psd takes one past a limit). */
uint64_t journal_uncovered_bytes(journal *j);

/* The last write error, or NULL (a malloc'd copy). */
char *journal_error(journal *j);

/* {mode, seq, written, synced, covered, segments, bytes, error, ...}. */
json_t *journal_status(journal *j);

/* Write and fsync what is left, stop the thread, close the file; from
 * here changes go unrecorded.  Returns 0, or -1 with err when something
 * could not be written.  covered: the image holds everything (the last
 * segment, empty, goes). */
int journal_close(journal *j, int covered, char *err, size_t errlen);
/* After the kernel is gone (its state log points here). */
void journal_free(journal *j);

/* The first and last sequence the journal files hold (for the log). */
uint64_t journal_last_seq(journal *j);

#endif
