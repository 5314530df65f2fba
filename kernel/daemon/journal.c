/* journal.c -- the journal beside the image (see journal.h).
 *
 * Layout of a segment, little endian:
 *   header, 64 bytes: "A4PSJNL1", the image_id (32 ASCII hex digits), the
 *     sequence of its first record (u64), CRC-32C of the 48 bytes before
 *     (u32), zeros.
 *   records: body length (u32), CRC-32C of the body (u32), body: sequence
 *     (u64), op (u8), length of the proto name (u8), of the key (u16), of
 *     the value (u32), then name, key and value.
 * Sequences run on from segment to segment without a gap.
 *
 * Group commit: journal_change copies a record into `buf` under `mu`
 * (taken inside a proto's state lock, so the journal's order is every
 * proto's order of changes).  A thread that must see its records written
 * becomes the leader if nobody writes: it takes the whole buffer, writes it
 * with one write() outside the lock (and fdatasync with "always"), and
 * wakes the others; those whose records it carried are done.
 *
 * A failed write (a full disk) is undone (ftruncate to the last whole
 * record), its bytes go back in front of the buffer, and the journal stays
 * failed -- every later change is refused with A4PS_EIO, nothing is
 * acknowledged -- until the journal's thread manages to write them, which it
 * tries once a second. */
#define _GNU_SOURCE
#include "daemon/journal.h"
#include "daemon/config.h"
#include "kernel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HDR_SIZE 64
#define REC_HEAD 8               /* length and checksum */
#define BODY_FIXED 16            /* sequence, op, three lengths */
#define MAGIC "A4PSJNL1"
#define SEGMENTS_MAX 4096

typedef struct segment {
    char *path;
    uint64_t first, last;        /* last = first - 1 when it holds none */
} segment;

/* A reply parked until its records are written (journal_sync_async). */
typedef struct waiter {
    struct waiter *next;
    uint64_t seq;
    journal_done_fn done;
    void *arg;
} waiter;

typedef struct buffer {
    unsigned char *p;
    size_t len, cap;
} buffer;

struct journal {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* a write or an fsync finished; stop */
    int mode;
    char *image_path, *dir, *base;
    char image_id[33];
    segment *segs;               /* closed ones, oldest first */
    int nsegs;
    segment cur;                 /* being written (path NULL before start) */
    int fd;
    int lockfd;                  /* IMAGE.lock, flock'd for our life */
    uint64_t off;                /* bytes of cur written */
    bool recording;
    buffer buf, wbuf;            /* appended, being written by the leader */
    uint64_t appended, written, synced, covered;
    uint64_t first_uncovered_reset;   /* 0: every RESET is in the image */
    uint64_t last_reset;
    uint64_t uncovered_bytes;
    bool writing, syncing, stop;
    /* An fsync failed: the kernel may have dropped pages already written, so
     * no retry heals it -- only a snapshot holding everything does. */
    bool fsync_failed;
    waiter *waiters, **waiters_tail;  /* parked replies, in arrival order */
    char *error;
    uint64_t writes, write_records, fsyncs, refused;
    pthread_t thread;
    bool thread_started;
};

static __thread uint64_t my_seq; /* the last record this thread appended */

/* ---- CRC-32C (Castagnoli), the checksum iSCSI, ext4 and SQLite's WAL
 * family use; a table, since a few MB a second is all we need. */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32c(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    uint32_t c = 0xffffffffu;
    while (len--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int buf_reserve(buffer *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *n = realloc(b->p, cap);
    if (!n)
        return -1;
    b->p = n;
    b->cap = cap;
    return 0;
}

/* Spelled as the config spells them (config.c parses them); not called
 * from there, so the journal links without the config's parser. */
static const char *mode_name(int mode)
{
    return mode == DURABLE_ALWAYS ? "always" : mode == DURABLE_EVERYSEC ? "everysec" : "snapshot";
}

static void set_error(journal *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(journal *j, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    free(j->error);
    j->error = strdup(line);
}

/* ---- Segments on disk ---- */

static char *seg_path(journal *j, uint64_t first)
{
    char *p;
    if (asprintf(&p, "%s.journal.%016llx", j->image_path, (unsigned long long)first) < 0)
        return NULL;
    return p;
}

static int by_first(const void *a, const void *b)
{
    const segment *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* IMAGE.journal.<16 hex digits> in the image's directory, oldest first;
 * anything else (a .damaged copy, a temporary) is not a segment. */
static int list_segments(journal *j, char *err, size_t errlen)
{
    DIR *d = opendir(j->dir);
    if (!d) {
        snprintf(err, errlen, "journal: cannot read the directory %s: %s", j->dir, strerror(errno));
        return -1;
    }
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s.journal.", j->base);
    size_t pl = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl) != 0 || strlen(e->d_name) != pl + 16)
            continue;
        const char *hex = e->d_name + pl;
        if (strspn(hex, "0123456789abcdef") != 16)
            continue;
        if (j->nsegs >= SEGMENTS_MAX) {
            closedir(d);
            snprintf(err, errlen, "journal: more than %d segments beside %s", SEGMENTS_MAX,
                     j->image_path);
            return -1;
        }
        segment *ns = realloc(j->segs, (size_t)(j->nsegs + 1) * sizeof *ns);
        if (!ns) {
            closedir(d);
            snprintf(err, errlen, "journal: out of memory");
            return -1;
        }
        j->segs = ns;
        segment *s = &j->segs[j->nsegs++];
        s->first = strtoull(hex, NULL, 16);
        s->last = s->first ? s->first - 1 : 0;
        if (asprintf(&s->path, "%s/%s", j->dir, e->d_name) < 0) {
            j->nsegs--;
            closedir(d);
            snprintf(err, errlen, "journal: out of memory");
            return -1;
        }
    }
    closedir(d);
    if (j->nsegs > 1)            /* segs is NULL with none: qsort's is nonnull */
        qsort(j->segs, (size_t)j->nsegs, sizeof *j->segs, by_first);
    return 0;
}

int journal_open(const char *image_path, int mode, journal **out, char *err, size_t errlen)
{
    journal *j = calloc(1, sizeof *j);
    char *a = strdup(image_path), *b = strdup(image_path);
    if (!j || !a || !b || !(j->image_path = strdup(image_path)) ||
        !(j->dir = strdup(dirname(a))) || !(j->base = strdup(basename(b)))) {
        free(a);
        free(b);
        if (j) {
            free(j->image_path);
            free(j->dir);
            free(j);
        }
        snprintf(err, errlen, "journal: out of memory");
        return -1;
    }
    free(a);
    free(b);
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    j->mode = mode;
    j->fd = -1;
    /* One a4psd per image: a second one (another config naming the same
     * image, or two started at once past the socket's probe) would replay
     * the first's live segment, cut it behind its own snapshot and write
     * the same sequences -- acknowledged changes of the first lost. */
    char *lp = NULL;
    if (asprintf(&lp, "%s.lock", image_path) < 0)
        lp = NULL;
    j->lockfd = lp ? open(lp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    /* Like the image's other files: 0600, whatever an operator left. */
    if (j->lockfd >= 0 && fchmod(j->lockfd, 0600) != 0) {
        /* not ours to change (another user's file): the flock still works */
    }
    if (j->lockfd < 0 || flock(j->lockfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK)
            snprintf(err, errlen, "journal: %s is in use by another a4psd (it holds %s); "
                     "one a4psd per image", image_path, lp);
        else
            snprintf(err, errlen, "journal: cannot lock %s: %s", lp ? lp : image_path,
                     strerror(e));
        free(lp);
        j->fd = -1;
        journal_free(j);
        return -1;
    }
    free(lp);
    *out = j;
    return 0;
}

/* ---- Replay ---- */

static int read_whole(const char *path, unsigned char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    /* A segment holds state: private like the image (a copy an operator
     * made wider is tightened). */
    if ((st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) != 0) {
        /* read it anyway: refusing would lose what it holds */
    }
    unsigned char *p = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (p && got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (!p)
        return -1;
    *out = p;
    *len = got;
    return 0;
}

/* Move segments i.. aside for the operator: they are never read again. */
static void move_aside(journal *j, int i, char *note, size_t notelen)
{
    for (int k = i; k < j->nsegs; k++) {
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.damaged-%lld", j->segs[k].path, (long long)time(NULL));
        size_t used = strlen(note);
        if (rename(j->segs[k].path, aside) == 0)
            snprintf(note + used, notelen - used, "; kept aside as %s", aside);
        else
            snprintf(note + used, notelen - used, "; cannot move %s aside: %s", j->segs[k].path,
                     strerror(errno));
        free(j->segs[k].path);
    }
    j->nsegs = i;
}

int journal_replay(journal *j, const char *image_id, uint64_t from, int recover,
                   journal_apply_fn apply, void *arg, journal_replayed *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    snprintf(j->image_id, sizeof j->image_id, "%s", image_id);
    if (list_segments(j, err, errlen) != 0)
        return -1;
    uint64_t expect = 0;         /* the next sequence; 0 before the first */
    uint64_t end = 0;            /* the last good record's */
    for (int i = 0; i < j->nsegs; i++) {
        segment *s = &j->segs[i];
        bool last_seg = i == j->nsegs - 1;
        unsigned char *data;
        size_t len;
        if (read_whole(s->path, &data, &len) != 0) {
            snprintf(err, errlen, "journal %s: cannot read: %s", s->path, strerror(errno));
            return -1;
        }
        r->segments++;
        char bad[512] = "";
        uint64_t bad_seq = 0;
        size_t off = HDR_SIZE;
        if (len < HDR_SIZE) {
            if (last_seg && len < HDR_SIZE) {
                /* Cut off while its header was being written: nothing in it
                 * was ever acknowledged. */
                free(data);
                size_t used = strlen(r->note);
                snprintf(r->note + used, sizeof r->note - used, "%s%s: a segment with a torn "
                         "header (%zu bytes) removed", used ? "; " : "", s->path, len);
                unlink(s->path);
                free(s->path);
                j->nsegs--;
                break;
            }
            snprintf(bad, sizeof bad, "its header is %zu bytes, not %d", len, HDR_SIZE);
            off = len;
        } else if (memcmp(data, MAGIC, 8) != 0 || get32(data + 48) != crc32c(data, 48)) {
            snprintf(bad, sizeof bad, "it is not an A4PS journal segment (bad magic or header "
                     "checksum)");
        } else if (memcmp(data + 8, j->image_id, 32) != 0) {
            /* Never replayed, even with recover: it holds another image's
             * changes. */
            snprintf(err, errlen, "journal %s belongs to another image (image_id %.32s; %s is "
                     "%s): refusing to replay it into this one; move it aside if it is not "
                     "this image's", s->path, (const char *)data + 8, j->image_path, j->image_id);
            free(data);
            return -1;
        } else if (s->first == 0 || s->first > UINT64_C(1) << 62) {
            /* Sequences begin at 1 and never come near the top: "first - 1"
             * of a crafted 0 wrapped the journal's position to the end. */
            snprintf(bad, sizeof bad, "it claims to begin at sequence %llu",
                     (unsigned long long)s->first);
        } else if (get64(data + 40) != s->first) {
            snprintf(bad, sizeof bad, "its header says it begins at sequence %llu, its name %llu",
                     (unsigned long long)get64(data + 40), (unsigned long long)s->first);
        } else if (expect && s->first != expect) {
            snprintf(bad, sizeof bad, "it begins at sequence %llu, but the segment before ends "
                     "at %llu (%s)", (unsigned long long)s->first,
                     (unsigned long long)(expect - 1),
                     s->first > expect ? "records are missing" : "records overlap");
        }
        /* A snapshot's cover keeps the segment that holds the record after
         * it: the first segment never begins past the image's position + 1.
         * When it does, the image is older than the journal (a backup put in
         * its place): replaying would apply later changes without those in
         * between -- out of order.  Like damage: only with recover. */
        if (!expect && !bad[0] && s->first > from + 1) {
            snprintf(bad, sizeof bad, "it begins at sequence %llu but the image holds the journal "
                     "only up to %llu: the changes in between are in neither (is the image a "
                     "backup older than the journal?)", (unsigned long long)s->first,
                     (unsigned long long)from);
        }
        uint64_t seq = s->first;
        while (!bad[0] && off < len) {
            size_t left = len - off;
            uint32_t blen = left >= REC_HEAD ? get32(data + off) : 0;
            bool torn = left < REC_HEAD || blen > left - REC_HEAD;
            bool sum_bad = !torn && (blen < BODY_FIXED ||
                                     get32(data + off + 4) != crc32c(data + off + REC_HEAD, blen));
            if (torn || (sum_bad && off + REC_HEAD + blen == len)) {
                if (!last_seg) {
                    snprintf(bad, sizeof bad, "its last record (offset %zu) is incomplete, and "
                             "later segments follow", off);
                    bad_seq = seq;
                    break;
                }
                /* A crash in the middle of a write: that record was never
                 * acknowledged.  Cut it off so the file ends clean. */
                size_t used = strlen(r->note);
                snprintf(r->note + used, sizeof r->note - used, "%s%s: a torn last record at "
                         "offset %zu (sequence %llu, %zu bytes) cut off", used ? "; " : "",
                         s->path, off, (unsigned long long)seq, left);
                if (truncate(s->path, (off_t)off) != 0) {
                    used = strlen(r->note);
                    snprintf(r->note + used, sizeof r->note - used, " (truncate failed: %s)",
                             strerror(errno));
                }
                break;
            }
            if (sum_bad && seq <= from && blen >= BODY_FIXED) {
                /* The image already holds this record's change (the
                 * segment spans the snapshot): skip it by its length.  If
                 * the length itself was hit, the next record fails too and
                 * stops the replay below. */
                size_t used = strlen(r->note);
                snprintf(r->note + used, sizeof r->note - used, "%s%s: the record at offset %zu "
                         "(sequence %llu) fails its checksum but the image already holds it: "
                         "skipped", used ? "; " : "", s->path, off, (unsigned long long)seq);
                r->covered++;
                off += REC_HEAD + blen;
                seq++;
                continue;
            }
            if (sum_bad) {
                snprintf(bad, sizeof bad, "the record at offset %zu (sequence %llu) fails its "
                         "checksum", off, (unsigned long long)seq);
                bad_seq = seq;
                break;
            }
            /* Only now: a body shorter than its fixed fields is sum_bad. */
            const unsigned char *b = data + off + REC_HEAD;
            uint64_t rseq = get64(b);
            int op = b[8];
            size_t pl = b[9], kl = (size_t)b[10] | (size_t)b[11] << 8, vl = get32(b + 12);
            if (rseq != seq || BODY_FIXED + pl + kl + vl != blen || !pl || pl > 63 ||
                (op != KERNEL_STATE_SET && op != KERNEL_STATE_DEL && op != KERNEL_STATE_RESET) ||
                kl > 255 || (op == KERNEL_STATE_RESET ? kl || vl : !kl) ||
                (op == KERNEL_STATE_DEL && vl)) {
                /* kl bounds the copy into key[256] below, whatever the op:
                 * a crafted RESET with a long key must not reach it. */
                snprintf(bad, sizeof bad, "the record at offset %zu is malformed (sequence %llu, "
                         "expected %llu)", off, (unsigned long long)rseq, (unsigned long long)seq);
                bad_seq = seq;
                break;
            }
            if (seq > from) {
                char proto[64], key[256];
                memcpy(proto, b + BODY_FIXED, pl);
                proto[pl] = 0;
                memcpy(key, b + BODY_FIXED + pl, kl);
                key[kl] = 0;
                if (apply(arg, seq, op, proto, op == KERNEL_STATE_RESET ? NULL : key,
                          op == KERNEL_STATE_SET ? b + BODY_FIXED + pl + kl : NULL, vl) != 0) {
                    snprintf(err, errlen, "journal %s: applying sequence %llu failed", s->path,
                             (unsigned long long)seq);
                    free(data);
                    return -1;
                }
                if (!r->first)
                    r->first = seq;
                r->last = seq;
                r->records++;
            } else {
                r->covered++;
            }
            off += REC_HEAD + blen;
            seq++;
        }
        free(data);
        s->last = seq ? seq - 1 : 0;
        expect = seq;
        if (seq && seq - 1 > end)
            end = seq - 1;
        if (bad[0]) {
            snprintf(err, errlen, "journal %s is damaged: %s; replay stopped there with %llu "
                     "record%s applied (through sequence %llu)", s->path, bad,
                     (unsigned long long)r->records, r->records == 1 ? "" : "s",
                     (unsigned long long)(bad_seq ? bad_seq - 1 : s->first - 1));
            if (!recover) {
                size_t used = strlen(err);
                snprintf(err + used, errlen - used, ". Nothing after it is trusted: set "
                         "image_recover = true to start with what was replayed (the damaged "
                         "segments are kept aside), or move %s aside", s->path);
                return -1;
            }
            size_t used = strlen(r->note);
            snprintf(r->note + used, sizeof r->note - used, "%sRECOVERED: %s", used ? "; " : "",
                     err);
            move_aside(j, i, r->note, sizeof r->note);
            break;
        }
    }
    pthread_mutex_lock(&j->mu);
    j->appended = j->written = j->synced = end > from ? end : from;
    j->covered = from;
    pthread_mutex_unlock(&j->mu);
    return 0;
}

/* ---- Writing ---- */

static int fsync_dir(journal *j)
{
    int fd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *p, size_t len)
{
    const unsigned char *c = p;
    while (len) {
        ssize_t n = write(fd, c, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A new segment whose first record will be `first`; under mu. */
static int open_segment(journal *j, uint64_t first, char *err, size_t errlen)
{
    char *path = seg_path(j, first);
    if (!path) {
        snprintf(err, errlen, "journal: out of memory");
        return -1;
    }
    /* A leftover of a start that failed before its first record. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    unsigned char h[HDR_SIZE] = {0};
    memcpy(h, MAGIC, 8);
    memcpy(h + 8, j->image_id, 32);
    put64(h + 40, first);
    put32(h + 48, crc32c(h, 48));
    if (fd < 0 || write_all(fd, h, sizeof h) != 0 || fdatasync(fd) != 0 || fsync_dir(j) != 0) {
        snprintf(err, errlen, "journal %s: cannot create: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        free(path);
        return -1;
    }
    if (j->cur.path) {
        segment *ns = realloc(j->segs, (size_t)(j->nsegs + 1) * sizeof *ns);
        if (!ns) {
            close(fd);
            unlink(path);
            free(path);
            snprintf(err, errlen, "journal: out of memory");
            return -1;
        }
        j->segs = ns;
        j->cur.last = j->appended;
        j->segs[j->nsegs++] = j->cur;
        /* With "everysec" its last second is written but not yet fsync'd,
         * and the thread fsyncs only the new fd from here: a power loss
         * would take more than the second the mode promises. */
        if (j->mode == DURABLE_EVERYSEC && j->synced < j->written && fdatasync(j->fd) != 0)
            fprintf(stderr, "<4>a4psd: journal %s: fsync failed: %s\n", j->cur.path,
                    strerror(errno));
        close(j->fd);
    }
    j->cur.path = path;
    j->cur.first = first;
    j->cur.last = first - 1;
    j->fd = fd;
    j->off = HDR_SIZE;
    /* A header-only leftover of the same name was just truncated: it is
     * this segment now, not a closed one. */
    for (int i = 0; i < j->nsegs; i++)
        if (j->segs[i].first == first) {
            free(j->segs[i].path);
            memmove(&j->segs[i], &j->segs[i + 1], (size_t)(j->nsegs - i - 1) * sizeof *j->segs);
            j->nsegs--;
            break;
        }
    return 0;
}

/* Write what was appended through `upto` (one leader at a time); under mu.
 * 0, or -1 when the journal is failed. */
static int flush_locked(journal *j, uint64_t upto)
{
    while (j->written < upto) {
        if (j->error)
            return -1;
        if (j->writing) {
            pthread_cond_wait(&j->cv, &j->mu);
            continue;
        }
        j->writing = true;
        buffer w = j->buf;
        j->buf = j->wbuf;
        j->buf.len = 0;
        uint64_t last = j->appended, off = j->off;
        int fd = j->fd;
        pthread_mutex_unlock(&j->mu);
        int rc = write_all(fd, w.p, w.len);
        int e = errno;
        if (rc == 0 && j->mode == DURABLE_ALWAYS) {
            rc = fdatasync(fd);
            e = errno;
        }
        pthread_mutex_lock(&j->mu);
        if (rc == 0) {
            j->off += w.len;
            j->uncovered_bytes += w.len;
            j->written = last;
            if (j->mode == DURABLE_ALWAYS) {
                j->synced = last;
                j->fsyncs++;
            }
            j->writes++;
            w.len = 0;
            j->wbuf = w;
        } else {
            /* Undo the part that reached the file, and keep the bytes in
             * front of what came since: nothing is lost or written twice. */
            if (ftruncate(fd, (off_t)off) != 0) {
                /* the next write would follow garbage: the replay stops
                 * at it and says where */
            }
            if (buf_reserve(&w, j->buf.len) == 0) {
                memcpy(w.p + w.len, j->buf.p, j->buf.len);
                w.len += j->buf.len;
                j->buf.len = 0;
                buffer t = j->buf;
                j->buf = w;
                j->wbuf = t;
            }
            set_error(j, "journal %s: %s failed: %s (from sequence %llu; the sends that needed "
                      "it were refused; retried every second)", j->cur.path,
                      j->mode == DURABLE_ALWAYS && e != ENOSPC ? "write or fsync" : "write",
                      strerror(e), (unsigned long long)(j->written + 1));
        }
        j->writing = false;
        pthread_cond_broadcast(&j->cv);
    }
    return 0;
}

int journal_change(void *arg, const char *proto, int op, const char *key, const void *val,
                   size_t len)
{
    journal *j = arg;
    size_t pl = strlen(proto), kl = key ? strlen(key) : 0;
    if (pl > 63 || kl > 255 || len > UINT32_MAX - 4096)
        return -1;
    pthread_mutex_lock(&j->mu);
    if (!j->recording) {
        pthread_mutex_unlock(&j->mu);
        return 0;                /* replaying, or durability "snapshot" */
    }
    size_t blen = BODY_FIXED + pl + kl + len;
    /* A RESET is held even by a failed journal (its bytes wait with the
     * others until the disk heals): its result is ignored, and without it
     * the writes after the heal would be acknowledged with no snapshot of
     * the new structure -- and dropped or misapplied by a replay. */
    if ((j->error && op != KERNEL_STATE_RESET) || buf_reserve(&j->buf, REC_HEAD + blen) != 0) {
        j->refused++;
        pthread_mutex_unlock(&j->mu);
        return -1;
    }
    uint64_t seq = ++j->appended;
    unsigned char *h = j->buf.p + j->buf.len, *b = h + REC_HEAD;
    put32(h, (uint32_t)blen);
    put64(b, seq);
    b[8] = (unsigned char)op;
    b[9] = (unsigned char)pl;
    b[10] = (unsigned char)(kl & 0xff);
    b[11] = (unsigned char)(kl >> 8);
    put32(b + 12, (uint32_t)len);
    memcpy(b + BODY_FIXED, proto, pl);
    if (kl)
        memcpy(b + BODY_FIXED + pl, key, kl);
    if (len)
        memcpy(b + BODY_FIXED + pl + kl, val, len);
    put32(h + 4, crc32c(b, blen));
    j->buf.len += REC_HEAD + blen;
    j->write_records++;
    if (op == KERNEL_STATE_RESET) {
        if (!j->first_uncovered_reset)
            j->first_uncovered_reset = seq;
        j->last_reset = seq;
    }
    my_seq = seq;
    pthread_mutex_unlock(&j->mu);
    return 0;
}

uint64_t journal_cut(void *arg)
{
    journal *j = arg;
    pthread_mutex_lock(&j->mu);
    uint64_t s = j->appended;
    pthread_mutex_unlock(&j->mu);
    return s;
}

/* What a reply waits for: this thread's records and -- unless the journal
 * is failed, when only its own count -- every record appended before it.
 * A plugin may write on a thread of its own for this send, or this reply
 * may carry what another send wrote a moment ago: either way the reply
 * acknowledges a change this worker never appended. */
static uint64_t reply_upto(journal *j, uint64_t mine)
{
    return !j->error && j->appended > mine ? j->appended : mine;
}

int journal_sync(journal *j, char *err, size_t errlen)
{
    uint64_t mine = my_seq;
    if (!j)
        return 0;
    pthread_mutex_lock(&j->mu);
    uint64_t upto = reply_upto(j, mine);
    int rc = 0;
    if (upto > j->written && flush_locked(j, upto) != 0 && mine > j->written) {
        snprintf(err, errlen, "%s", j->error ? j->error : "journal: write failed");
        rc = -1;
    } else if (j->first_uncovered_reset && j->first_uncovered_reset <= mine &&
               j->covered < j->first_uncovered_reset) {
        rc = 1;
    }
    pthread_mutex_unlock(&j->mu);
    /* Done, or refused with the reason: either way the next reply of this
     * thread waits for nothing of this one's (kept, a status on this
     * worker was refused for as long as the journal stayed failed). */
    if (rc != 1)
        my_seq = 0;
    return rc;
}

void journal_sync_forget(void)
{
    my_seq = 0;
}

/* Hand every parked reply whose records are written (all of them, with the
 * error, when the journal failed) back to its owner; under mu, which is
 * released around the callbacks. */
static void complete_waiters(journal *j, bool all)
{
    waiter *ready = NULL, **rt = &ready, **pp = &j->waiters;
    while (*pp) {
        waiter *w = *pp;
        if (w->seq <= j->written || all || j->error) {
            *pp = w->next;
            w->next = NULL;
            *rt = w;
            rt = &w->next;
        } else {
            pp = &w->next;
        }
    }
    j->waiters_tail = pp;
    if (!ready)
        return;
    char *err = j->error ? strdup(j->error) : NULL;
    uint64_t written = j->written;
    pthread_mutex_unlock(&j->mu);
    while (ready) {
        waiter *w = ready;
        ready = w->next;
        bool ok = w->seq <= written;
        w->done(w->arg, ok ? 0 : -1, ok ? NULL : err ? err : "journal: not written");
        free(w);
    }
    free(err);
    pthread_mutex_lock(&j->mu);
}

static uint64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* The journal's thread.  Parked replies first: one write (and with
 * "always" one fdatasync) for all of them, then they go; what arrived
 * meanwhile is the next group.  Once a second: write what no reply waited
 * for, retry a failed write, and with "everysec" fsync. */
static void *journal_main(void *arg)
{
    journal *j = arg;
    pthread_mutex_lock(&j->mu);
    uint64_t next_tick = mono_ms() + 1000;
    while (!j->stop) {
        if (!j->waiters) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            uint64_t now = mono_ms();
            uint64_t wait_ms = next_tick > now ? next_tick - now : 0;
            t.tv_sec += (time_t)(wait_ms / 1000);
            t.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
            if (t.tv_nsec >= 1000000000L) {
                t.tv_sec++;
                t.tv_nsec -= 1000000000L;
            }
            if (wait_ms)
                pthread_cond_timedwait(&j->cv, &j->mu, &t);
        }
        if (j->stop)
            break;
        if (j->waiters) {
            if (!j->error)
                flush_locked(j, j->appended);
            complete_waiters(j, false);
            if (mono_ms() < next_tick)
                continue;
        }
        if (mono_ms() < next_tick)
            continue;
        next_tick = mono_ms() + 1000;
        if (j->error && !j->writing && !j->syncing && !j->fsync_failed) {
            char *old = j->error;
            j->error = NULL;     /* one more try */
            if (flush_locked(j, j->appended) == 0)
                fprintf(stderr, "<5>a4psd: journal: written again after: %s\n", old);
            free(old);
            continue;
        }
        if (j->written < j->appended)
            flush_locked(j, j->appended);
        if (j->mode == DURABLE_EVERYSEC && j->synced < j->written && !j->error && !j->writing &&
            !j->syncing) {
            j->syncing = true;
            uint64_t target = j->written;
            int fd = j->fd;
            pthread_mutex_unlock(&j->mu);
            int rc = fdatasync(fd);
            int e = errno;
            pthread_mutex_lock(&j->mu);
            j->syncing = false;
            if (rc == 0) {
                j->synced = target;
                j->fsyncs++;
            } else {
                /* After a failed fsync the kernel may have dropped the
                 * dirty pages: the journal is not to be trusted with more
                 * until a snapshot holds everything (a4psd takes one). */
                set_error(j, "journal %s: fsync failed: %s (changes are refused until a "
                          "snapshot holds everything)", j->cur.path, strerror(e));
                j->fsync_failed = true;
            }
            pthread_cond_broadcast(&j->cv);
        }
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int journal_sync_async(journal *j, journal_done_fn done, void *arg, char *err, size_t errlen)
{
    uint64_t mine = my_seq;
    if (!j)
        return 0;
    pthread_mutex_lock(&j->mu);
    uint64_t upto = reply_upto(j, mine);
    if (j->first_uncovered_reset && j->first_uncovered_reset <= mine &&
        j->covered < j->first_uncovered_reset) {
        pthread_mutex_unlock(&j->mu);
        return journal_sync(j, err, errlen);   /* rare: the snapshot first */
    }
    if (upto <= j->written) {
        pthread_mutex_unlock(&j->mu);
        my_seq = 0;
        return 0;
    }
    /* "everysec" with nobody writing: this thread's one write() is quicker
     * than a hand-over.  Otherwise the reply waits in the journal's queue and
     * this thread goes on to the next request. */
    if (j->error || (j->mode == DURABLE_EVERYSEC && !j->writing) || !j->thread_started) {
        pthread_mutex_unlock(&j->mu);
        return journal_sync(j, err, errlen);
    }
    waiter *w = malloc(sizeof *w);
    if (!w) {
        pthread_mutex_unlock(&j->mu);
        return journal_sync(j, err, errlen);
    }
    *w = (waiter){.seq = upto, .done = done, .arg = arg};
    if (!j->waiters_tail)
        j->waiters_tail = &j->waiters;
    *j->waiters_tail = w;
    j->waiters_tail = &w->next;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    my_seq = 0;
    return 2;
}

int journal_start(journal *j, char *err, size_t errlen)
{
    if (j->mode == DURABLE_SNAPSHOT)
        return 0;
    pthread_mutex_lock(&j->mu);
    int rc = open_segment(j, j->appended + 1, err, errlen);
    if (rc == 0)
        j->recording = true;
    pthread_mutex_unlock(&j->mu);
    if (rc)
        return -1;
    int e = pthread_create(&j->thread, NULL, journal_main, j);
    if (e) {
        snprintf(err, errlen, "journal: cannot start its thread: %s", strerror(e));
        pthread_mutex_lock(&j->mu);
        j->recording = false;
        pthread_mutex_unlock(&j->mu);
        return -1;
    }
    j->thread_started = true;
    return 0;
}

void journal_covered(journal *j, uint64_t seq)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    while (j->writing || j->syncing)
        pthread_cond_wait(&j->cv, &j->mu);
    if (seq > j->covered)
        j->covered = seq;
    /* A failed journal that the image now holds whole heals here: what it
     * could not write is in the snapshot, and the next segment starts
     * clean. */
    if (j->error && seq >= j->appended) {
        fprintf(stderr, "<5>a4psd: journal: a snapshot holds everything it could not write: "
                "it records again (after: %s)\n", j->error);
        free(j->error);
        j->error = NULL;
        j->fsync_failed = false;
        j->buf.len = 0;
        j->written = j->synced = j->appended;
        if (j->fd >= 0 && j->off > 0 && ftruncate(j->fd, (off_t)j->off) != 0) {
            /* the next segment begins anyway: this one is covered */
        }
    }
    /* Exactly when no RESET is past the cover: else the earliest one could
     * be right after it. */
    if (j->last_reset <= j->covered)
        j->first_uncovered_reset = 0;
    else if (j->first_uncovered_reset <= j->covered)
        j->first_uncovered_reset = j->covered + 1;
    /* A new segment when the current one holds anything, so the covered
     * part can go; its records past seq stay until a later cover.  Its fd
     * is closed: neither a write nor an fsync may be using it. */
    if (j->recording && !j->error && j->appended >= j->cur.first) {
        for (;;) {
            if (flush_locked(j, j->appended) != 0)
                break;
            if (!j->writing && !j->syncing)
                break;
            pthread_cond_wait(&j->cv, &j->mu);
        }
        char err[512];
        if (!j->error && open_segment(j, j->appended + 1, err, sizeof err) != 0)
            fprintf(stderr, "<4>a4psd: %s (the journal goes on in the old one)\n", err);
    }
    int keep = 0;
    for (int i = 0; i < j->nsegs; i++) {
        if (j->segs[i].last <= j->covered) {
            if (unlink(j->segs[i].path) != 0 && errno != ENOENT)
                fprintf(stderr, "<4>a4psd: journal %s: cannot remove: %s\n", j->segs[i].path,
                        strerror(errno));
            free(j->segs[i].path);
        } else {
            j->segs[keep++] = j->segs[i];
        }
    }
    j->nsegs = keep;
    j->uncovered_bytes = 0;
    pthread_mutex_unlock(&j->mu);
}

bool journal_wants_snapshot(journal *j)
{
    if (!j)
        return false;
    pthread_mutex_lock(&j->mu);
    bool w = j->error != NULL;
    pthread_mutex_unlock(&j->mu);
    return w;
}

uint64_t journal_uncovered_bytes(journal *j)
{
    if (!j)
        return 0;
    pthread_mutex_lock(&j->mu);
    uint64_t b = j->uncovered_bytes;
    pthread_mutex_unlock(&j->mu);
    return b;
}

char *journal_error(journal *j)
{
    if (!j)
        return NULL;
    pthread_mutex_lock(&j->mu);
    char *e = j->error ? strdup(j->error) : NULL;
    pthread_mutex_unlock(&j->mu);
    return e;
}

uint64_t journal_last_seq(journal *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t s = j->appended;
    pthread_mutex_unlock(&j->mu);
    return s;
}

json_t *journal_status(journal *j)
{
    if (!j)
        return json_null();
    pthread_mutex_lock(&j->mu);
    json_t *o = json_pack("{s:s, s:b, s:s?, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                          "s:b, s:s?}",
                          "durability", mode_name(j->mode), "recording", j->recording,
                          "segment", j->cur.path, "segments", j->nsegs + (j->cur.path ? 1 : 0),
                          "seq", (json_int_t)j->appended, "written", (json_int_t)j->written,
                          "synced", (json_int_t)j->synced, "covered", (json_int_t)j->covered,
                          "bytes_since_snapshot", (json_int_t)j->uncovered_bytes,
                          "writes", (json_int_t)j->writes, "records", (json_int_t)j->write_records,
                          "fsyncs", (json_int_t)j->fsyncs, "refused", (json_int_t)j->refused,
                          "migration_awaits_snapshot", j->first_uncovered_reset != 0,
                          "error", j->error);
    pthread_mutex_unlock(&j->mu);
    return o;
}

int journal_close(journal *j, int covered, char *err, size_t errlen)
{
    if (!j)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    if (j->recording) {
        if (j->error) {
            char *old = j->error;  /* one last try: space may be back */
            j->error = NULL;
            if (flush_locked(j, j->appended) != 0)
                rc = -1;
            free(old);
        } else if (flush_locked(j, j->appended) != 0) {
            rc = -1;
        }
        while (j->writing || j->syncing)
            pthread_cond_wait(&j->cv, &j->mu);
        if (rc == 0 && j->fd >= 0 && fdatasync(j->fd) != 0) {
            set_error(j, "journal %s: fsync failed: %s", j->cur.path, strerror(errno));
            rc = -1;
        }
        if (rc && err)
            snprintf(err, errlen, "%s", j->error ? j->error : "journal: write failed");
    }
    complete_waiters(j, true);
    j->recording = false;
    j->stop = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (j->thread_started)
        pthread_join(j->thread, NULL);
    j->thread_started = false;
    if (j->fd >= 0)
        close(j->fd);
    j->fd = -1;
    /* Everything is in the image: the segment begun at the last cover holds
     * nothing it lacks. */
    if (covered && rc == 0 && j->cur.path && j->appended < j->cur.first)
        unlink(j->cur.path);
    return rc;
}

void journal_free(journal *j)
{
    if (!j)
        return;
    if (j->thread_started || j->fd >= 0)
        journal_close(j, 0, NULL, 0);
    for (int i = 0; i < j->nsegs; i++)
        free(j->segs[i].path);
    free(j->segs);
    free(j->cur.path);
    free(j->buf.p);
    free(j->wbuf.p);
    free(j->error);
    free(j->image_path);
    free(j->dir);
    free(j->base);
    if (j->lockfd >= 0)
        close(j->lockfd);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}
