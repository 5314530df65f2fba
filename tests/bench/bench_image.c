/* bench_image.c -- `scripts/bench image`: what the image costs.
 *
 * 10,000 protos on sw 1.0.0, each with 1 KiB of state under "blob".
 *
 *  - raw (the floor, same run): the same bytes -- every proto's name, key and
 *    value -- written to a file with write, fsync and rename; and for
 *    reference a plain SQLite transaction of the same rows (sqlite_plain_ms);
 *  - full: kernel_snapshot_take(all) + image_write to a fresh image +
 *    kernel_snapshot_done; ratio = full / raw.  Raw and full are the best of
 *    a few runs (noise only ever adds time);
 *  - incremental: the median over 30 rounds of dirtying 100 protos (one
 *    state-changing send each) and then take(changed) + write + done;
 *  - restore: image_restore of the 10,000 protos into a fresh kernel (fresh
 *    runtime dir), best of a few;
 *  - dispatch stall: while one thread dirties 100 protos and takes and
 *    writes an incremental snapshot over and over, another sends through a
 *    handle and times every send.  Reported: the p99 and max of all those
 *    sends, the p99 over snapshot rounds of the longest send of the round
 *    (dispatch_stall_ms_p99: "the longest a send waits while a snapshot is
 *    written"), the kernel's own held time (stall_ns) p99, and the same send
 *    figures with no snapshots running (the noise floor of this machine). */
#include "bench_common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "image/image.h"

#define NPROTOS 10000
#define VALLEN 1024
#define DIRTY 100
#define INC_ROUNDS 30
#define STALL_ROUNDS 300
#define RUNS 3
#define KEY "blob"

static char names[NPROTOS][16];
static unsigned char vals[NPROTOS][VALLEN];

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void rm_image(const char *path)
{
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

/* ---- The floor: the same bytes, write + fsync + rename ---- */

static void write_all(int fd, const void *buf, size_t len)
{
    const char *b = buf;
    while (len) {
        ssize_t w = write(fd, b, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            bench_die("raw write", strerror(errno));
        b += w;
        len -= (size_t)w;
    }
}

static uint64_t raw_write(const char *dir, size_t *bytes)
{
    char tmp[600], dst[600];
    snprintf(tmp, sizeof tmp, "%s/raw.tmp", dir);
    snprintf(dst, sizeof dst, "%s/raw.img", dir);
    unlink(dst);
    static char buf[1 << 16];
    size_t used = 0, total = 0;
    uint64_t t0 = bench_ns();
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        bench_die("raw open", strerror(errno));
    for (int i = 0; i < NPROTOS; i++) {
        size_t nl = strlen(names[i]) + 1, kl = sizeof KEY;
        if (used + nl + kl + VALLEN > sizeof buf) {
            write_all(fd, buf, used);
            used = 0;
        }
        memcpy(buf + used, names[i], nl);
        used += nl;
        memcpy(buf + used, KEY, kl);
        used += kl;
        memcpy(buf + used, vals[i], VALLEN);
        used += VALLEN;
        total += nl + kl + VALLEN;
    }
    write_all(fd, buf, used);
    if (fsync(fd) != 0)
        bench_die("raw fsync", strerror(errno));
    close(fd);
    if (rename(tmp, dst) != 0)
        bench_die("raw rename", strerror(errno));
    uint64_t t = bench_ns() - t0;
    unlink(dst);
    *bytes = total;
    return t;
}

/* A second reference: a plain SQLite transaction of the same rows (WAL,
 * synchronous=FULL as the image has them, one rowid table, no index). */
static uint64_t sqlite_plain(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/plain.db", dir);
    rm_image(path);
    sqlite3 *db;
    sqlite3_stmt *st;
    uint64_t t0 = bench_ns();
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                         "CREATE TABLE state(proto TEXT NOT NULL, key TEXT NOT NULL,"
                         " value BLOB NOT NULL); BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO state VALUES(?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
        bench_die("sqlite plain", sqlite3_errmsg(db));
    uint64_t t1 = bench_ns();
    for (int i = 0; i < NPROTOS; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, names[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, KEY, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, vals[i], VALLEN, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            bench_die("sqlite plain", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        bench_die("sqlite plain", sqlite3_errmsg(db));
    uint64_t t = bench_ns() - t1;       /* the transaction, not creating the file */
    (void)t0;
    sqlite3_close(db);
    rm_image(path);
    return t;
}

/* ---- Snapshots ---- */

typedef struct snap_times {
    uint64_t take, write, total, stall;
    size_t nprotos;
} snap_times;

static snap_times snapshot(kernel *k, image *img, int all)
{
    char err[KERNEL_ERRLEN];
    kernel_snapshot *s;
    snap_times t = {0};
    uint64_t t0 = bench_ns();
    if (kernel_snapshot_take(k, all, 2000, &s, err, sizeof err))
        bench_die("snapshot_take", err);
    uint64_t t1 = bench_ns();
    int rc = image_write(img, s, err, sizeof err);
    uint64_t t2 = bench_ns();
    kernel_snapshot_done(k, s, rc == 0);
    uint64_t t3 = bench_ns();
    if (rc)
        bench_die("image_write", err);
    t.take = t1 - t0;
    t.write = t2 - t1;
    t.total = t3 - t0;
    t.stall = s->stall_ns;
    t.nprotos = s->nprotos;
    kernel_snapshot_free(s);
    return t;
}

static image *open_image(const char *path, uint64_t *open_ns)
{
    char err[KERNEL_ERRLEN];
    image *img;
    uint64_t t0 = bench_ns();
    if (image_open(path, &img, err, sizeof err))
        bench_die("image_open", err);
    if (open_ns)
        *open_ns = bench_ns() - t0;
    return img;
}

/* One state-changing send to each of DIRTY protos, a different set each round. */
static void dirty(kernel *k, int round, kernel_reply *r)
{
    for (int j = 0; j < DIRTY; j++) {
        int i = (round * DIRTY + j) % NPROTOS;
        if (kernel_send(k, names[i], "add", "x", 1, r) != A4PS_OK)
            bench_die("dirty", names[i]);
    }
}

static void restore_report(void *arg, const char *msg)
{
    (*(int *)arg)++;
    fprintf(stderr, "bench: restore: %s\n", msg);
}

/* ---- Send latency under snapshots ---- */

/* Latency histogram: 10 ns buckets below 10 us, 1 us buckets up to 100 ms. */
#define FINE 1000
#define COARSE 100000
#define NBUCKETS (FINE + COARSE + 1)

typedef struct hist {
    uint64_t n, max;
    uint64_t b[NBUCKETS];
} hist;

static void hist_add(hist *h, uint64_t ns)
{
    size_t i = ns < 10000 ? ns / 10 : FINE + ns / 1000 - 10;
    if (i >= NBUCKETS)
        i = NBUCKETS - 1;
    h->b[i]++;
    h->n++;
    if (ns > h->max)
        h->max = ns;
}

/* The upper bound of the bucket holding the p-th percentile, in ns. */
static uint64_t hist_pct(const hist *h, double p)
{
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->n + 0.5), seen = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want && h->b[i])
            return i < FINE ? (i + 1) * 10 : (i - FINE + 11) * 1000;
    }
    return h->max;
}

#define SLOW_NS 2000              /* sends slower than this are logged */
#define MAXLOG (1 << 20)

typedef struct sender {
    kernel *k;
    kernel_handle *h;
    _Atomic int phase;            /* 0 warm-up, 1 baseline, 2 snapshots, 3 stop */
    _Atomic bool ready;
    hist hb, hs;                  /* baseline, under snapshots */
    uint64_t *log_end, *log_lat;  /* slow sends under snapshots */
    size_t nlog;
} sender;

static void *sender_main(void *arg)
{
    sender *s = arg;
    kernel_thread_attach(s->k);
    kernel_reply r = {0};
    atomic_store(&s->ready, true);
    unsigned i = 0;
    int ph;
    while ((ph = atomic_load_explicit(&s->phase, memory_order_relaxed)) != 3) {
        uint64_t a = bench_ns();
        if (kernel_send_handle(s->h, NULL, 0, &r) != A4PS_OK)
            bench_die("sender", "a send failed");
        uint64_t b = bench_ns(), d = b - a;
        if (ph == 1) {
            hist_add(&s->hb, d);
        } else if (ph == 2) {
            hist_add(&s->hs, d);
            if (d > SLOW_NS && s->nlog < MAXLOG) {
                s->log_end[s->nlog] = b;
                s->log_lat[s->nlog++] = d;
            }
        }
        if ((++i & 255) == 0)
            kernel_quiescent(s->k);
    }
    kernel_reply_free(&r);
    kernel_thread_detach(s->k);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void)
{
    char err[KERNEL_ERRLEN];
    srand(42);
    for (int i = 0; i < NPROTOS; i++) {
        snprintf(names[i], sizeof names[i], "p%05d", i);
        for (int j = 0; j < VALLEN; j++)
            vals[i][j] = (unsigned char)rand();
    }

    bench_env e;
    bench_open(&e, 4096);
    bench_load(&e, "sw-1.so");
    for (int i = 0; i < NPROTOS; i++) {
        bench_proto(&e, names[i], "sw", "1.0.0");
        if (kernel_state_set(e.k, names[i], KEY, vals[i], VALLEN))
            bench_die("state_set", names[i]);
    }

    /* Raw floor and full snapshots, interleaved, best of RUNS each. */
    uint64_t raw_best = UINT64_MAX, plain_best = UINT64_MAX, open_fresh = 0;
    snap_times full_best = {.total = UINT64_MAX};
    size_t raw_bytes = 0;
    char imgpath[600];
    long long image_bytes = 0;
    for (int run = 0; run < RUNS; run++) {
        uint64_t r = raw_write(e.dir, &raw_bytes);
        if (r < raw_best)
            raw_best = r;
        uint64_t q = sqlite_plain(e.dir);
        if (q < plain_best)
            plain_best = q;
        snprintf(imgpath, sizeof imgpath, "%s/full%d.a4ps", e.dir, run);
        rm_image(imgpath);
        uint64_t on;
        image *img = open_image(imgpath, &on);
        snap_times t = snapshot(e.k, img, 1);
        image_close(img);
        if (t.nprotos != NPROTOS)
            bench_die("full snapshot", "wrong number of protos");
        if (t.total < full_best.total) {
            full_best = t;
            open_fresh = on;
        }
        struct stat st;
        if (stat(imgpath, &st) == 0)
            image_bytes = (long long)st.st_size;
        if (run < RUNS - 1)
            rm_image(imgpath);
    }

    /* Incremental: the last full image, 100 dirty protos a round. */
    image *img = open_image(imgpath, NULL);
    kernel_reply reply = {0};
    double inc[INC_ROUNDS], inc_stall[INC_ROUNDS];
    for (int round = -3; round < INC_ROUNDS; round++) {       /* 3 warm-up rounds */
        dirty(e.k, round + 3, &reply);
        snap_times t = snapshot(e.k, img, 0);
        if (t.nprotos != DIRTY)
            bench_die("incremental snapshot", "wrong number of changed protos");
        if (round >= 0) {
            inc[round] = ms(t.total);
            inc_stall[round] = ms(t.stall);
        }
    }
    image_close(img);
    qsort(inc, INC_ROUNDS, sizeof *inc, cmp_double);
    qsort(inc_stall, INC_ROUNDS, sizeof *inc_stall, cmp_double);
    double inc_med = inc[INC_ROUNDS / 2], inc_max = inc[INC_ROUNDS - 1];
    double inc_stall_med = inc_stall[INC_ROUNDS / 2];

    /* Restore into fresh kernels, best of RUNS. */
    uint64_t restore_best = UINT64_MAX, restore_worst = 0, open_full = UINT64_MAX;
    for (int run = 0; run < RUNS; run++) {
        bench_env f;
        bench_open(&f, 4096);
        uint64_t on;
        image *ri = open_image(imgpath, &on);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/restore", f.dir);
        image_restored res;
        int reported = 0;
        uint64_t t0 = bench_ns();
        if (image_restore(ri, f.k, tmp, &res, restore_report, &reported, err, sizeof err))
            bench_die("image_restore", err);
        uint64_t t = bench_ns() - t0;
        image_close(ri);
        if (res.protos != NPROTOS || res.failed || reported)
            bench_die("image_restore", "not every proto came back");
        for (int i = 0; i < NPROTOS; i += 997) {
            void *v;
            size_t len;
            if (kernel_state_get(f.k, names[i], KEY, &v, &len) || len != VALLEN ||
                memcmp(v, vals[i], VALLEN) != 0)
                bench_die("image_restore", "state differs");
            free(v);
        }
        if (t < restore_best)
            restore_best = t;
        if (t > restore_worst)
            restore_worst = t;
        if (on < open_full)
            open_full = on;
        bench_close(&f);
    }

    /* Sends while snapshots are taken and written over and over. */
    bench_proto(&e, "s", "sw", "1.0.0");
    static sender sd;
    sd.k = e.k;
    sd.log_end = malloc(MAXLOG * sizeof *sd.log_end);
    sd.log_lat = malloc(MAXLOG * sizeof *sd.log_lat);
    if (!sd.log_end || !sd.log_lat)
        bench_die("malloc", "send log");
    if (kernel_resolve(e.k, "s", "noop", &sd.h))
        bench_die("resolve", "s.noop");
    img = open_image(imgpath, NULL);
    dirty(e.k, 0, &reply);
    snapshot(e.k, img, 0);                                   /* picks up "s" */
    pthread_t th;
    pthread_create(&th, NULL, sender_main, &sd);
    while (!atomic_load(&sd.ready))
        usleep(100);
    usleep(50000);
    atomic_store(&sd.phase, 1);
    usleep(500000);
    static uint64_t round_start[STALL_ROUNDS + 1], kstall[STALL_ROUNDS];
    atomic_store(&sd.phase, 2);
    uint64_t s0 = bench_ns();
    for (int round = 0; round < STALL_ROUNDS; round++) {
        round_start[round] = bench_ns();
        dirty(e.k, round + 1, &reply);
        snap_times t = snapshot(e.k, img, 0);
        kstall[round] = t.stall;
    }
    round_start[STALL_ROUNDS] = bench_ns();
    double stall_secs = (double)(round_start[STALL_ROUNDS] - s0) / 1e9;
    usleep(1000);
    atomic_store(&sd.phase, 3);
    pthread_join(th, NULL);
    kernel_handle_release(sd.h);
    image_close(img);

    /* The longest send of each round (sends attributed by when they ended;
     * a round with no logged send had none slower than SLOW_NS). */
    static uint64_t worst[STALL_ROUNDS];
    for (int r = 0; r < STALL_ROUNDS; r++)
        worst[r] = SLOW_NS;
    int r = 0;
    for (size_t i = 0; i < sd.nlog; i++) {
        while (r < STALL_ROUNDS - 1 && sd.log_end[i] >= round_start[r + 1])
            r++;
        if (sd.log_lat[i] > worst[r])
            worst[r] = sd.log_lat[i];
    }
    double stall_p99 = ms(bench_pct(worst, STALL_ROUNDS, 99));
    double stall_p50 = ms(bench_pct(worst, STALL_ROUNDS, 50));
    double stall_max = ms(worst[STALL_ROUNDS - 1]);
    double kst_p99 = ms(bench_pct(kstall, STALL_ROUNDS, 99));
    double kst_p50 = ms(bench_pct(kstall, STALL_ROUNDS, 50));
    double kst_max = ms(kstall[STALL_ROUNDS - 1]);

    double raw_ms = ms(raw_best), full_ms = ms(full_best.total), ratio = full_ms / raw_ms;
    double restore_ms = ms(restore_best);
    bool pass = ratio <= 2.0 && inc_med <= 3.0 && restore_ms <= 200.0 && stall_p99 <= 1.0;
    printf("{\"bench\":\"image\",\"protos\":%d,\"state_bytes_per_proto\":%d,\"raw_bytes\":%zu,"
           "\"image_bytes\":%lld,\"raw_ms\":%.2f,\"sqlite_plain_ms\":%.2f,\"full_ms\":%.2f,\"ratio\":%.2f,"
           "\"full_take_ms\":%.2f,\"full_write_ms\":%.2f,\"full_stall_ms\":%.2f,"
           "\"image_open_fresh_ms\":%.2f,"
           "\"incremental_ms\":%.3f,\"incremental_ms_max\":%.3f,\"incremental_stall_ms\":%.3f,"
           "\"restore_ms\":%.1f,\"restore_ms_worst\":%.1f,\"image_open_ms\":%.1f,"
           "\"snapshot_rounds\":%d,\"snapshots_per_s\":%.0f,"
           "\"dispatch_stall_ms_p99\":%.3f,\"dispatch_stall_ms_p50\":%.3f,"
           "\"dispatch_stall_ms_max\":%.3f,\"sends\":%llu,\"send_ms_p99\":%.5f,"
           "\"send_ms_max\":%.3f,\"kernel_stall_ms_p50\":%.3f,\"kernel_stall_ms_p99\":%.3f,"
           "\"kernel_stall_ms_max\":%.3f,\"baseline_sends\":%llu,\"baseline_send_ms_p99\":%.5f,"
           "\"baseline_send_ms_max\":%.3f,"
           "\"target_ratio\":2.0,\"target_incremental_ms\":3,\"target_restore_ms\":200,"
           "\"target_dispatch_stall_ms_p99\":1,\"pass\":%s}\n",
           NPROTOS, VALLEN, raw_bytes, image_bytes, raw_ms, ms(plain_best), full_ms, ratio, ms(full_best.take),
           ms(full_best.write), ms(full_best.stall), ms(open_fresh), inc_med, inc_max,
           inc_stall_med, restore_ms, ms(restore_worst), ms(open_full), STALL_ROUNDS,
           STALL_ROUNDS / stall_secs, stall_p99, stall_p50, stall_max,
           (unsigned long long)sd.hs.n, ms(hist_pct(&sd.hs, 99)), ms(sd.hs.max), kst_p50, kst_p99,
           kst_max, (unsigned long long)sd.hb.n, ms(hist_pct(&sd.hb, 99)), ms(sd.hb.max),
           pass ? "true" : "false");
    kernel_reply_free(&reply);
    free(sd.log_end);
    free(sd.log_lat);
    bench_close(&e);
    return 0;
}
