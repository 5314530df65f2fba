/* test_journal.c -- the journal (kernel/daemon/journal.c) on its own, on a
 * real file system: many threads appending and waiting for their replies at
 * once, replayed in their order; the parked replies of "always"; torn, damaged
 * and foreign segments; a write that fails and heals. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include "daemon/config.h"
#include "daemon/journal.h"
#include "kernel.h"

#define ID_A "0123456789abcdef0123456789abcdef"
#define ID_B "fedcba9876543210fedcba9876543210"
#define THREADS 8
#define PER_THREAD 2000

typedef struct fixture {
    char dir[64];
    char image[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/a4ps-tj-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->image, sizeof f->image, "%s/a4ps.img", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    return 0;
}

/* What a replay saw: the records in order. */
typedef struct seen {
    uint64_t n, last_seq;
    int order_broken;
    int per_thread[THREADS];     /* the next value expected from each thread */
    int wrong;
    char last_key[64];
} seen;

static int check_one(void *arg, uint64_t seq, int op, const char *proto, const char *key,
                     const void *val, size_t len)
{
    seen *s = arg;
    if (s->last_seq && seq != s->last_seq + 1)
        s->order_broken++;
    s->last_seq = seq;
    s->n++;
    if (op != KERNEL_STATE_SET)
        return 0;
    int t, i;
    char v[64];
    snprintf(v, sizeof v, "%.*s", (int)len, (const char *)val);
    /* Every thread writes its own proto "T<t>", values 0, 1, 2 ... in order. */
    if (sscanf(proto, "T%d", &t) != 1 || t < 0 || t >= THREADS || sscanf(v, "%d", &i) != 1 ||
        i != s->per_thread[t])
        s->wrong++;
    else
        s->per_thread[t]++;
    snprintf(s->last_key, sizeof s->last_key, "%s", key);
    return 0;
}

static journal *fresh(fixture *f, int mode, const char *id, uint64_t from, seen *s)
{
    journal *j;
    char err[1024];
    journal_replayed r;
    assert_int_equal(journal_open(f->image, mode, &j, err, sizeof err), 0);
    memset(s, 0, sizeof *s);
    if (journal_replay(j, id, from, 0, check_one, s, &r, err, sizeof err) != 0) {
        journal_free(j);
        return NULL;
    }
    assert_int_equal(journal_start(j, err, sizeof err), 0);
    return j;
}

typedef struct worker {
    journal *j;
    int t;
    int acked;
} worker;

static void parked_done(void *arg, int rc, const char *err)
{
    (void)err;
    int *flag = arg;
    __atomic_store_n(flag, rc == 0 ? 1 : -1, __ATOMIC_RELEASE);
}

/* One client: change, then wait for the reply's durability (half of the
 * threads through the parked path), as a worker does. */
static void *writer(void *arg)
{
    worker *w = arg;
    char proto[16], val[16], err[1024];
    snprintf(proto, sizeof proto, "T%d", w->t);
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(val, sizeof val, "%d", i);
        if (journal_change(w->j, proto, KERNEL_STATE_SET, "k", val, strlen(val)) != 0)
            break;
        int rc;
        if (w->t % 2) {
            int flag = 0;
            rc = journal_sync_async(w->j, parked_done, &flag, err, sizeof err);
            if (rc == 2) {
                while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE))
                    sched_yield();
                rc = flag == 1 ? 0 : -1;
            }
        } else {
            rc = journal_sync(w->j, err, sizeof err);
        }
        if (rc != 0)
            break;
        w->acked++;
    }
    return NULL;
}

static void run_writers(journal *j, worker *w)
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (worker){.j = j, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, writer, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
}

/* Eight threads at once: every acknowledged change is replayed, in each
 * thread's order, every sequence once; "always" and "everysec". */
static void concurrent_writers_replay_in_order(void **state)
{
    fixture *f = *state;
    int modes[] = {DURABLE_EVERYSEC, DURABLE_ALWAYS};
    for (size_t m = 0; m < 2; m++) {
        seen s;
        journal *j = fresh(f, modes[m], ID_A, 0, &s);
        assert_non_null(j);
        worker w[THREADS];
        run_writers(j, w);
        json_t *st = journal_status(j);
        json_int_t writes = json_integer_value(json_object_get(st, "writes"));
        json_decref(st);
        char err[1024];
        assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
        journal_free(j);
        for (int t = 0; t < THREADS; t++)
            assert_int_equal(w[t].acked, PER_THREAD);
        j = fresh(f, modes[m], ID_A, 0, &s);
        assert_non_null(j);
        assert_int_equal(s.n, (uint64_t)THREADS * PER_THREAD);
        assert_int_equal(s.order_broken, 0);
        assert_int_equal(s.wrong, 0);
        for (int t = 0; t < THREADS; t++)
            assert_int_equal(s.per_thread[t], PER_THREAD);
        print_message("%s: %d changes in %lld writes\n", m ? "always" : "everysec",
                      THREADS * PER_THREAD, (long long)writes);
        assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
        journal_free(j);
        /* The next mode starts a fresh journal from the first value. */
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -f %s.journal.*", f->image);
        assert_int_equal(system(cmd), 0);
    }
}

static char *only_segment(fixture *f)
{
    char cmd[256], *line = NULL;
    size_t cap = 0;
    snprintf(cmd, sizeof cmd, "ls %s.journal.* | tail -1", f->image);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    ssize_t n = getline(&line, &cap, p);
    pclose(p);
    assert_true(n > 1);
    line[n - 1] = 0;
    return line;
}

static void write_some(fixture *f, int n)
{
    seen s;
    journal *j = fresh(f, DURABLE_EVERYSEC, ID_A, 0, &s);
    assert_non_null(j);
    char err[1024], v[16];
    for (int i = 0; i < n; i++) {
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", v, strlen(v)), 0);
    }
    assert_int_equal(journal_sync(j, err, sizeof err), 0);
    assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
    journal_free(j);
}

/* n records, then a byte of the fourth one's value changed: the segment's
 * path (malloc'd). */
static char *damage_fourth_record(fixture *f, int n)
{
    write_some(f, n);
    char *seg = only_segment(f);
    /* Records of "T0" "k" "N" are 8 + 16 + 2 + 1 + 1 = 28 bytes: the fourth
     * starts at 64 + 3 * 28. */
    int fd = open(seg, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 64 + 3 * 28 + 26), 1);
    close(fd);
    return seg;
}

/* A torn last record is cut off; the file then ends clean. */
static void torn_tail_is_cut(void **state)
{
    fixture *f = *state;
    write_some(f, 10);
    char *seg = only_segment(f);
    struct stat st;
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal(truncate(seg, st.st_size - 2), 0);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err), 0);
    assert_int_equal(r.records, 9);
    assert_non_null(strstr(r.note, "torn last record"));
    journal_free(j);
    assert_int_equal(stat(seg, &st), 0);
    memset(&s, 0, sizeof s);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err), 0);
    assert_int_equal(r.records, 9);
    assert_string_equal(r.note, "");
    journal_free(j);
    free(seg);
}

/* A bad checksum with records after it stops the replay, naming the file,
 * offset and sequence; recover moves it aside and keeps what came before. */
static void bad_checksum_stops_and_says_where(void **state)
{
    fixture *f = *state;
    char *seg = damage_fourth_record(f, 10);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, seg));
    assert_non_null(strstr(err, "offset 148 (sequence 4) fails its checksum"));
    assert_non_null(strstr(err, "3 records applied"));
    assert_int_equal(s.n, 3);
    journal_free(j);
    memset(&s, 0, sizeof s);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 1, check_one, &s, &r, err, sizeof err), 0);
    assert_non_null(strstr(r.note, "RECOVERED"));
    assert_non_null(strstr(r.note, "kept aside"));
    assert_int_equal(s.n, 3);
    assert_int_equal(journal_start(j, err, sizeof err), 0);
    assert_int_equal(journal_last_seq(j), 3);
    journal_free(j);
    assert_int_equal(access(seg, F_OK), -1);
    free(seg);
}

/* Another image's segment is refused, recover or not. */
static void other_image_refused(void **state)
{
    fixture *f = *state;
    write_some(f, 3);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    for (int recover = 0; recover < 2; recover++) {
        assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
        assert_int_equal(journal_replay(j, ID_B, 0, recover, check_one, &s, &r, err, sizeof err), -1);
        assert_non_null(strstr(err, "belongs to another image"));
        assert_int_equal(s.n, 0);
        journal_free(j);
    }
}

/* Only records past the image's position are replayed; a cover removes
 * the segments it covers and keeps those it does not. */
static void cover_cuts_behind(void **state)
{
    fixture *f = *state;
    seen s;
    journal *j = fresh(f, DURABLE_EVERYSEC, ID_A, 0, &s);
    char err[1024], v[16];
    for (int i = 0; i < 20; i++) {
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", v, strlen(v)), 0);
        if (i == 9)
            journal_covered(j, journal_cut(j));  /* a snapshot of the first ten */
    }
    assert_int_equal(journal_sync(j, err, sizeof err), 0);
    assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
    journal_free(j);
    journal_replayed r;
    memset(&s, 0, sizeof s);
    s.per_thread[0] = 10;
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 10, 0, check_one, &s, &r, err, sizeof err), 0);
    assert_int_equal(r.records, 10);
    assert_int_equal(r.first, 11);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(r.segments, 1);      /* the covered one is gone */
    journal_free(j);
}

/* Lower RLIMIT_FSIZE to limit bytes (a full disk, for the journal's
 * files) and write 4 KiB values, numbered from 0, each waited for, until the
 * journal refuses: how many were acknowledged; err holds the refusal.
 * *old is the limit to put back. */
static int write_until_refused(journal *j, rlim_t limit, struct rlimit *old, char *err,
                               size_t errlen)
{
    signal(SIGXFSZ, SIG_IGN);
    char v[4096];
    memset(v, 'x', sizeof v);
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, old);
    lim = *old;
    lim.rlim_cur = limit;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int acked = 0, rc = 0;
    for (int i = 0; i < 64 && rc == 0; i++) {
        snprintf(v, 8, "%06d", i);
        v[6] = 'x';
        assert_int_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", v, sizeof v), 0);
        rc = journal_sync(j, err, errlen);
        if (rc == 0)
            acked++;
    }
    assert_int_equal(rc, -1);
    return acked;
}

/* A write that fails (RLIMIT_FSIZE plays a full disk): the waiting reply
 * gets the reason, later changes are refused, and once the limit is gone
 * the journal's thread writes the held bytes, nothing lost or doubled. */
static void failed_write_refuses_then_heals(void **state)
{
    fixture *f = *state;
    seen s;
    journal *j = fresh(f, DURABLE_EVERYSEC, ID_A, 0, &s);
    char err[1024];
    struct rlimit old;
    int acked = write_until_refused(j, 64 * 1024, &old, err, sizeof err);
    assert_non_null(strstr(err, "File too large"));
    assert_int_not_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", "y", 1), 0);
    char *e = journal_error(j);
    assert_non_null(e);
    free(e);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    for (int i = 0; i < 50 && (e = journal_error(j)); i++) {
        free(e);
        usleep(100000);
    }
    e = journal_error(j);
    assert_null(e);
    assert_int_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", "z", 1), 0);
    assert_int_equal(journal_sync(j, err, sizeof err), 0);
    assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
    journal_free(j);
    journal_replayed r;
    memset(&s, 0, sizeof s);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err), 0);
    /* The refused send's record was written once the limit went: acked,
     * plus that one, plus "z" (not a number: counted as wrong). */
    assert_int_equal(r.records, (uint64_t)acked + 2);
    assert_int_equal(s.order_broken, 0);
    journal_free(j);
}

/* The replay parser on a crafted file (a segment is read by a4psd itself):
 * a RESET record whose key length is far past any key.  The checksum is
 * right, so only the length checks stand between it and the stack. */
static uint32_t t_crc32c(const unsigned char *p, size_t len)
{
    uint32_t c = 0xffffffffu;
    while (len--) {
        c ^= *p++;
        for (int b = 0; b < 8; b++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void crafted_reset_key_refused(void **state)
{
    fixture *f = *state;
    write_some(f, 1);
    char *seg = only_segment(f);
    enum { KL = 4000 };
    size_t blen = 16 + 2 + KL;
    unsigned char *rec = calloc(1, 8 + blen);
    assert_non_null(rec);
    unsigned char *b = rec + 8;
    uint64_t seq = 2;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(seq >> (8 * i));
    b[8] = KERNEL_STATE_RESET;
    b[9] = 2;
    b[10] = KL & 0xff;
    b[11] = KL >> 8;
    memcpy(b + 16, "T0", 2);
    memset(b + 18, 'A', KL);
    uint32_t crc = t_crc32c(b, blen);
    for (int i = 0; i < 4; i++) {
        rec[i] = (unsigned char)(blen >> (8 * i));
        rec[4 + i] = (unsigned char)(crc >> (8 * i));
    }
    int fd = open(seg, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, rec, 8 + blen), (ssize_t)(8 + blen));
    close(fd);
    free(rec);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "malformed"));
    assert_int_equal(s.n, 1);
    journal_free(j);
    free(seg);
}

/* A reply that appended nothing itself still carries what others changed a
 * moment before it (a read of it, or a plugin's own thread writing for this
 * send): it must not leave before those records are written. */
static void *other_changes(void *arg)
{
    journal *j = arg;
    assert_int_equal(journal_change(j, "T1", KERNEL_STATE_SET, "k", "dirty", 5), 0);
    return NULL;
}

static void reply_waits_for_records_of_others(void **state)
{
    fixture *f = *state;
    seen s;
    journal *j = fresh(f, DURABLE_EVERYSEC, ID_A, 0, &s);
    char err[1024];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_changes, j), 0);
    pthread_join(t, NULL);
    assert_int_equal(journal_sync(j, err, sizeof err), 0);
    json_t *st = journal_status(j);
    json_int_t seq = json_integer_value(json_object_get(st, "seq"));
    json_int_t written = json_integer_value(json_object_get(st, "written"));
    json_decref(st);
    assert_int_equal(seq, 1);
    assert_int_equal(written, 1);
    assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
    journal_free(j);
}

/* A record too short for its own fields (length 0) with a few bytes after
 * it: refused as damaged, its fields never read past the end of the file
 * (ASan saw the parser read them before it looked at the length). */
static void crafted_short_record_refused(void **state)
{
    fixture *f = *state;
    write_some(f, 1);
    char *seg = only_segment(f);
    unsigned char rec[12] = {0};     /* length 0, checksum 0, 4 stray bytes */
    int fd = open(seg, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, rec, sizeof rec), (ssize_t)sizeof rec);
    close(fd);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "damaged"));
    assert_int_equal(s.n, 1);
    journal_free(j);
    free(seg);
}

/* A crafted segment that claims to begin at sequence 0 (or near the top):
 * the replay must not take its end for the journal's -- "seq 0 - 1" made
 * the next sequence wrap to 0, below the image's position for ever after
 * (every later record skipped by every replay). */
static void crafted_sequence_zero_refused(void **state)
{
    fixture *f = *state;
    char path[256];
    snprintf(path, sizeof path, "%s.journal.0000000000000000", f->image);
    unsigned char h[64] = {0};
    memcpy(h, "A4PSJNL1", 8);
    memcpy(h + 8, ID_A, 32);
    uint32_t crc = t_crc32c(h, 48);
    for (int i = 0; i < 4; i++)
        h[48 + i] = (unsigned char)(crc >> (8 * i));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, h, sizeof h), (ssize_t)sizeof h);
    close(fd);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    int rc = journal_replay(j, ID_A, 0, 0, check_one, &s, &r, err, sizeof err);
    uint64_t last = journal_last_seq(j);
    journal_free(j);
    assert_true(last < 1000);
    assert_int_equal(rc, -1);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    rc = journal_replay(j, ID_A, 0, 1, check_one, &s, &r, err, sizeof err);   /* recover */
    last = journal_last_seq(j);
    journal_free(j);
    assert_int_equal(rc, 0);
    assert_true(last < 1000);
}

/* An image older than the journal (a backup in its place): the journal
 * begins past the image's position + 1, so replaying it would apply later
 * changes without those in between.  Refused; with recover, set aside and
 * nothing replayed. */
static void gap_before_journal_refused(void **state)
{
    fixture *f = *state;
    seen s;
    journal *j = fresh(f, DURABLE_EVERYSEC, ID_A, 0, &s);
    char err[1024], v[16];
    for (int i = 0; i < 20; i++) {
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", v, strlen(v)), 0);
        if (i == 9)
            journal_covered(j, journal_cut(j));  /* segment 1..10 goes */
    }
    assert_int_equal(journal_sync(j, err, sizeof err), 0);
    assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
    journal_free(j);
    journal_replayed r;
    memset(&s, 0, sizeof s);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 5, 0, check_one, &s, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "begins at sequence 11 but the image holds the journal only up to 5"));
    assert_int_equal(s.n, 0);
    journal_free(j);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 5, 1, check_one, &s, &r, err, sizeof err), 0);
    assert_int_equal(s.n, 0);
    assert_non_null(strstr(r.note, "kept aside"));
    journal_free(j);
    /* The image that covers 10 (the right one) needs none of it. */
}

/* A damaged record the image already holds (the segment spans the
 * snapshot) is skipped, not a reason to stop: the records after it, which
 * the image lacks, are replayed. */
static void damaged_covered_record_skipped(void **state)
{
    fixture *f = *state;
    char *seg = damage_fourth_record(f, 20);
    journal *j;
    char err[1024];
    journal_replayed r;
    seen s = {0};
    s.per_thread[0] = 10;
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, 10, 0, check_one, &s, &r, err, sizeof err), 0);
    assert_non_null(strstr(r.note, "(sequence 4) fails its checksum but the image already holds it"));
    assert_int_equal(r.records, 10);
    assert_int_equal(s.wrong, 0);
    journal_free(j);
    free(seg);
}

/* A failed journal (here a write past RLIMIT_FSIZE) heals when a snapshot
 * holds everything it could not write: the snapshot's cover clears the
 * error at once, and the records after it go to a fresh segment. */
static void snapshot_heals_failed_journal(void **state)
{
    fixture *f = *state;
    seen s;
    journal *j = fresh(f, DURABLE_EVERYSEC, ID_A, 0, &s);
    char err[1024];
    struct rlimit old;
    write_until_refused(j, 32 * 1024, &old, err, sizeof err);
    assert_true(journal_wants_snapshot(j));
    uint64_t cut = journal_cut(j);
    journal_covered(j, cut);             /* a snapshot committed at the cut */
    assert_false(journal_wants_snapshot(j));
    assert_int_equal(journal_change(j, "T0", KERNEL_STATE_SET, "k", "0", 1), 0);
    assert_int_equal(journal_sync(j, err, sizeof err), 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    assert_int_equal(journal_close(j, 0, err, sizeof err), 0);
    journal_free(j);
    journal_replayed r;
    memset(&s, 0, sizeof s);
    assert_int_equal(journal_open(f->image, DURABLE_EVERYSEC, &j, err, sizeof err), 0);
    assert_int_equal(journal_replay(j, ID_A, cut, 0, check_one, &s, &r, err, sizeof err), 0);
    assert_int_equal(r.records, 1);
    assert_int_equal(r.first, cut + 1);
    assert_int_equal(s.wrong, 0);
    journal_free(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(concurrent_writers_replay_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_checksum_stops_and_says_where, setup, teardown),
        cmocka_unit_test_setup_teardown(other_image_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(cover_cuts_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_write_refuses_then_heals, setup, teardown),
        cmocka_unit_test_setup_teardown(crafted_reset_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(reply_waits_for_records_of_others, setup, teardown),
        cmocka_unit_test_setup_teardown(crafted_short_record_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(crafted_sequence_zero_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(gap_before_journal_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(damaged_covered_record_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(snapshot_heals_failed_journal, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
