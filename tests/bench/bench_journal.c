/* bench_journal.c -- `scripts/bench journal`: acknowledged state writes per
 * second and their latency, a4psd under each durability policy against
 * redis-server's append-only file, same client code, same run.
 *
 * Servers, all started at once in one temp dir on one filesystem (under
 * A4PS_BENCH_DIR, default /var/tmp: /tmp is a tmpfs on many systems, where
 * fsync costs nothing and "always" would measure nothing):
 *
 *   a4psd   durability = "always", "everysec", "snapshot"; snapshot_interval_s
 *           = 0 (no periodic snapshot in the way), an image in its own dir,
 *           sandbox.mode "none" (verification happens at load only), the
 *           default number of workers (A4PS_BENCH_WORKERS overrides); proto K
 *           runs the kv test plugin, whose `put` stores the message as one
 *           key and replies OK -- the plainest state write there is (BABS
 *           `remember` writes two keys and takes a lock of its own)
 *   redis   appendonly yes with appendfsync always and everysec, and
 *           appendonly no as the counterpart of "snapshot" (no log at all);
 *           no RDB saves, no automatic AOF rewrite (a4psd's journal is never
 *           cut here either: snapshot_interval_s = 0)
 *
 * The write: a value of VALUE_BYTES bytes, to a4psd as
 * {"cmd":"send","proto":"K","selector":"put","payload":VALUE}, to redis as
 * SET v VALUE.  1 and 16 clients, each a thread with its own connection and
 * one request in flight: write it, read its reply to the newline, check it
 * says OK (a write is counted only once acknowledged), next.  Our own client
 * rather than redis-benchmark, so both servers are timed by the same code
 * from the same clock points (redis-benchmark has its own event loop and
 * latency histogram, which a4psd's figures could not share).
 *
 * ROUNDS rounds, each giving every (server, clients) case one SLICE_MS slice
 * in turn, so a noisy moment (another fsync, the host) hits them all alike.
 * Writes per second is the case's acknowledged writes over its slices' time;
 * latency is over every write of the case.
 *
 * stdout: one JSON line per case ("bench":"journal"), then one with the
 * ratios a4psd / redis per policy and client count ("bench":"journal_ratio":
 * writes per second, > 1 is a4psd faster; p50 and p99, < 1 is a4psd
 * faster).  Each case's line carries the bytes its server's log holds at
 * the end (journal_bytes: IMAGE.journal*; aof_bytes: appendonlydir), which
 * shows the log was written (0 for "snapshot" and appendonly no).  Without
 * redis-server on PATH the a4psd lines come alone. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench_daemon.h"

#define VALUE_BYTES 100
#define MAX_CLIENTS 16
#define ROUNDS 6
#define SLICE_MS 350
#define WARM_MS 100              /* untimed, once per case before the rounds */

static const int client_counts[] = {1, MAX_CLIENTS};
#define NCOUNTS 2

enum { A4PSD, REDIS };
typedef struct server {
    int kind;
    const char *policy;          /* a4psd: durability; redis: appendfsync, or "snapshot" */
    char dir[200];
    char sock[256];
    pid_t pid;
    int fd[MAX_CLIENTS];
    const char *req;             /* the write, whole */
    size_t req_len;
    const char *ok;              /* what an acknowledged write's reply contains */
} server;

/* One (server, clients) case: its latencies, one growing array per client. */
typedef struct bcase {
    server *s;
    int clients;
    uint64_t *lat[MAX_CLIENTS];
    size_t n[MAX_CLIENTS], cap[MAX_CLIENTS];
    uint64_t busy_ns;            /* sum of its slices' lengths */
} bcase;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench journal: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

/* One request, its reply read to the newline into buf (NUL-terminated);
 * false if the reply does not contain ok. */
static bool roundtrip(int fd, const char *req, size_t n, const char *ok, char *buf, size_t cap)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, req + off, n - off);
        if (w <= 0)
            die("write");
        off += (size_t)w;
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r <= 0)
            die("read");
        bool end = memchr(buf + got, '\n', (size_t)r) != NULL;
        got += (size_t)r;
        if (end || got == cap - 1)
            break;
    }
    buf[got] = '\0';
    return strstr(buf, ok) != NULL;
}

/* Every server started, so a benchmark that dies half-way leaves none
 * running behind it (its dir stays, with the servers' logs). */
static pid_t started[8];
static int nstarted;
static char top[256];

static void stop_all(void)
{
    for (int i = 0; i < nstarted; i++)
        if (started[i] > 0) {
            kill(started[i], SIGTERM);
            waitpid(started[i], NULL, 0);
            started[i] = 0;
        }
}

static void on_exit_cleanup(int status, void *arg)
{
    (void)arg;
    stop_all();
    if (status != 0 && top[0])
        fprintf(stderr, "bench journal: the servers' dirs and logs are kept in %s\n", top);
}

static int connect_unix(const char *path, pid_t child)
{
    int fd = bench_connect_unix(path, child);
    if (fd < 0 && errno == 0) {
        for (int k = 0; k < nstarted; k++)
            if (started[k] == child)
                started[k] = 0;
        fprintf(stderr, "bench journal: the server for %s exited (its log is beside it)\n", path);
        exit(1);
    }
    if (fd < 0)
        die(path);
    return fd;
}

static pid_t spawn(char *const argv[], const char *log)
{
    if (nstarted == (int)(sizeof started / sizeof started[0])) {
        errno = 0;
        die("too many servers");
    }
    pid_t pid = bench_spawn(argv, log);
    if (pid < 0)
        die("fork");
    started[nstarted++] = pid;
    return pid;
}

static void run(const char *cmd, const char *what)
{
    if (system(cmd) != 0) {
        errno = 0;
        die(what);
    }
}

static char a4psd_req[256 + VALUE_BYTES], redis_req[64 + VALUE_BYTES], value[VALUE_BYTES + 1];

static void a4psd_start(server *s, const char *top, const char *policy, const char *exe,
                        int workers)
{
    s->kind = A4PSD;
    s->policy = policy;
    snprintf(s->dir, sizeof s->dir, "%s/a4psd-%s", top, policy);
    if (mkdir(s->dir, 0755) != 0)
        die(s->dir);
    bench_daemon_dir(s->dir);
    char path[300], cmd[1024];
    snprintf(path, sizeof path, "%s/plugins", s->dir);
    if (mkdir(path, 0755) != 0)
        die(path);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/kv.so' && chmod 644 '%s/kv.so'", A4PS_KV_SO, path,
             path);
    run(cmd, "copy the kv plugin");
    snprintf(path, sizeof path, "%s/a.cfg", s->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        die(path);
    fprintf(f, "plugin_dir = \"plugins\";\nruntime_dir = \"run\";\nimage = \"a.img\";\n"
               "snapshot_interval_s = 0;\nimage_backups = 0;\ndurability = \"%s\";\n"
               "log_level = \"warning\";\ncontrol = { socket = \"a.sock\"; };\n"
               "limits = { idle_timeout_ms = 0; };\nsandbox = { mode = \"none\"; };\n"
               "protos = ( { name = \"K\"; plugin = \"kv\"; } );\n",
            policy);
    if (workers > 0)
        fprintf(f, "workers = %d;\n", workers);
    fclose(f);
    char log[300];
    snprintf(log, sizeof log, "%s/log", s->dir);
    /* From top, not s->dir: gcc under the sanitizers cannot tell two
     * members of *s apart (-Werror=restrict). */
    snprintf(s->sock, sizeof s->sock, "%s/a4psd-%s/a.sock", top, policy);
    char *argv[] = {(char *)exe, "-c", path, NULL};
    s->pid = spawn(argv, log);
    s->req = a4psd_req;
    s->req_len = strlen(a4psd_req);
    s->ok = "\"ok\":true";
}

static void redis_start(server *s, const char *top, const char *policy)
{
    s->kind = REDIS;
    s->policy = policy;
    snprintf(s->dir, sizeof s->dir, "%s/redis-%s", top, policy);
    if (mkdir(s->dir, 0755) != 0)
        die(s->dir);
    char log[300];
    snprintf(log, sizeof log, "%s/log", s->dir);
    snprintf(s->sock, sizeof s->sock, "%s/redis-%s/r.sock", top, policy);
    bool aof = strcmp(policy, "snapshot") != 0;
    char *argv[] = {"redis-server", "--port", "0", "--unixsocket", s->sock, "--save", "",
                    "--dir", s->dir, "--appendonly", aof ? "yes" : "no",
                    "--appendfsync", aof ? (char *)policy : "everysec",
                    "--auto-aof-rewrite-percentage", "0", NULL};
    s->pid = spawn(argv, log);
    s->req = redis_req;
    s->req_len = strlen(redis_req);
    s->ok = "+OK";
}

/* Connect every client and wait until the server acknowledges a write (an
 * a4psd's proto K exists once its plugin is loaded). */
static void server_ready(server *s)
{
    for (int c = 0; c < MAX_CLIENTS; c++)
        s->fd[c] = connect_unix(s->sock, s->pid);
    char buf[4096];
    for (int i = 0; !roundtrip(s->fd[0], s->req, s->req_len, s->ok, buf, sizeof buf); i++) {
        if (i > 500) {
            fprintf(stderr, "bench journal: %s never acknowledged a write: %s\n", s->dir, buf);
            exit(1);
        }
        usleep(10000);
    }
}

/* Bytes in the files of dir whose names start with prefix, and in every file
 * below a directory whose name does: the journal or the AOF written, which
 * shows the log was there. */
static long long bytes_under(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    long long sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0)
            continue;
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            sum += bytes_under(p, "");
        else if (S_ISREG(st.st_mode))
            sum += st.st_size;
    }
    closedir(d);
    return sum;
}

/* ---- one slice: clients threads writing until the deadline ---- */

typedef struct client {
    bcase *bc;
    int i;
    bool record;
    pthread_barrier_t *go;
    const _Atomic uint64_t *deadline;
    uint64_t end;                /* when its last write was acknowledged */
} client;

static void *client_main(void *arg)
{
    client *cl = arg;
    bcase *bc = cl->bc;
    server *s = bc->s;
    int fd = s->fd[cl->i];
    char buf[4096];
    pthread_barrier_wait(cl->go);
    uint64_t deadline = atomic_load(cl->deadline);
    uint64_t t = now_ns();
    while (t < deadline) {
        uint64_t t0 = t;
        if (!roundtrip(fd, s->req, s->req_len, s->ok, buf, sizeof buf)) {
            fprintf(stderr, "bench journal: %s did not acknowledge a write: %s\n", s->dir, buf);
            exit(1);
        }
        t = now_ns();
        if (!cl->record)
            continue;
        if (bc->n[cl->i] == bc->cap[cl->i]) {
            size_t cap = bc->cap[cl->i] ? bc->cap[cl->i] * 2 : 4096;
            uint64_t *v = realloc(bc->lat[cl->i], cap * sizeof *v);
            if (!v)
                die("realloc");
            bc->lat[cl->i] = v;
            bc->cap[cl->i] = cap;
        }
        bc->lat[cl->i][bc->n[cl->i]++] = t - t0;
    }
    cl->end = t;
    return NULL;
}

static void slice(bcase *bc, unsigned ms, bool record)
{
    pthread_t th[MAX_CLIENTS];
    client cl[MAX_CLIENTS];
    pthread_barrier_t go;
    _Atomic uint64_t deadline = 0;
    pthread_barrier_init(&go, NULL, (unsigned)bc->clients + 1);
    for (int i = 0; i < bc->clients; i++) {
        cl[i] = (client){.bc = bc, .i = i, .record = record, .go = &go, .deadline = &deadline};
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0)
            die("pthread_create");
    }
    uint64_t start = now_ns();
    atomic_store(&deadline, start + (uint64_t)ms * 1000000ull);
    pthread_barrier_wait(&go);
    uint64_t end = start;
    for (int i = 0; i < bc->clients; i++) {
        pthread_join(th[i], NULL);
        if (cl[i].end > end)
            end = cl[i].end;
    }
    pthread_barrier_destroy(&go);
    if (record)
        bc->busy_ns += end - start;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    size_t writes;
    double per_s, p50, p99;      /* latency in microseconds */
} result;

static result summarize(bcase *bc)
{
    size_t n = 0;
    for (int i = 0; i < bc->clients; i++)
        n += bc->n[i];
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    if (!all)
        die("malloc");
    size_t at = 0;
    for (int i = 0; i < bc->clients; i++) {
        memcpy(all + at, bc->lat[i], bc->n[i] * sizeof *all);
        at += bc->n[i];
    }
    qsort(all, n, sizeof *all, cmp);
    result r = {.writes = n};
    if (n) {
        r.per_s = (double)n / ((double)bc->busy_ns / 1e9);
        r.p50 = (double)all[(size_t)(0.50 * (double)(n - 1) + 0.5)] / 1e3;
        r.p99 = (double)all[(size_t)(0.99 * (double)(n - 1) + 0.5)] / 1e3;
    }
    free(all);
    return r;
}


int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *exe = getenv("A4PSD") && *getenv("A4PSD") ? getenv("A4PSD") : A4PSD_PATH;
    const char *base = getenv("A4PS_BENCH_DIR") && *getenv("A4PS_BENCH_DIR")
                           ? getenv("A4PS_BENCH_DIR") : "/var/tmp";
    int workers = getenv("A4PS_BENCH_WORKERS") ? atoi(getenv("A4PS_BENCH_WORKERS")) : 0;

    /* The value: printable, nothing JSON or RESP would escape. */
    for (int i = 0; i < VALUE_BYTES; i++)
        value[i] = (char)('a' + i % 26);
    snprintf(a4psd_req, sizeof a4psd_req,
             "{\"cmd\":\"send\",\"proto\":\"K\",\"selector\":\"put\",\"payload\":\"%s\"}\n", value);
    snprintf(redis_req, sizeof redis_req, "*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$%d\r\n%s\r\n",
             VALUE_BYTES, value);

    on_exit(on_exit_cleanup, NULL);
    snprintf(top, sizeof top, "%s/a4ps-bench-journal-XXXXXX", base);
    if (strlen(top) > 60) {
        errno = 0;
        die("A4PS_BENCH_DIR is too long for the sockets' paths (at most 30 bytes)");
    }
    if (!mkdtemp(top))
        die(top);
    bench_daemon_dir(top);
    struct statfs fs;
    bool tmpfs = statfs(top, &fs) == 0 && fs.f_type == TMPFS_MAGIC;
    if (tmpfs)
        fprintf(stderr, "bench journal: %s is a tmpfs: fsync costs nothing there, so "
                        "\"always\" is not measured; set A4PS_BENCH_DIR to a disk\n", base);

    static const char *const policies[] = {"always", "everysec", "snapshot"};
    enum { NPOL = 3 };
    bool redis = bench_on_path("redis-server");
    if (!redis)
        fprintf(stderr, "bench journal: redis-server is not installed: the a4psd figures come "
                        "without the redis baseline and its ratios\n");
    server servers[2 * NPOL];
    int nservers = 0;
    for (int p = 0; p < NPOL; p++)
        a4psd_start(&servers[nservers++], top, policies[p], exe, workers);
    if (redis)
        for (int p = 0; p < NPOL; p++)
            redis_start(&servers[nservers++], top, policies[p]);
    for (int i = 0; i < nservers; i++)
        server_ready(&servers[i]);

    bcase cases[2 * NPOL * NCOUNTS];
    int ncases = 0;
    for (int i = 0; i < nservers; i++)
        for (int c = 0; c < NCOUNTS; c++)
            cases[ncases++] = (bcase){.s = &servers[i], .clients = client_counts[c]};

    for (int k = 0; k < ncases; k++)
        slice(&cases[k], WARM_MS, false);
    for (int round = 0; round < ROUNDS; round++)
        for (int k = 0; k < ncases; k++)
            slice(&cases[k], SLICE_MS, true);

    /* The last value written is the one stored (a4psd: read back). */
    static const char get[] = "{\"cmd\":\"send\",\"proto\":\"K\",\"selector\":\"get\"}\n";
    char buf[4096];
    for (int i = 0; i < NPOL; i++)
        if (!roundtrip(servers[i].fd[0], get, sizeof get - 1, value, buf, sizeof buf)) {
            fprintf(stderr, "bench journal: %s lost the value: %s\n", servers[i].dir, buf);
            return 1;
        }

    result res[2 * NPOL * NCOUNTS];
    for (int k = 0; k < ncases; k++) {
        bcase *bc = &cases[k];
        server *s = bc->s;
        res[k] = summarize(bc);
        long long logged = s->kind == A4PSD ? bytes_under(s->dir, "a.img.journal")
                                            : bytes_under(s->dir, "appendonlydir");
        printf("{\"bench\":\"journal\",\"server\":\"%s\",", s->kind == A4PSD ? "a4psd" : "redis");
        if (s->kind == A4PSD)
            printf("\"durability\":\"%s\"", s->policy);
        else if (strcmp(s->policy, "snapshot") != 0)
            printf("\"appendonly\":\"yes\",\"appendfsync\":\"%s\"", s->policy);
        else
            printf("\"appendonly\":\"no\"");
        printf(",\"clients\":%d,\"value_bytes\":%d,\"writes\":%zu,\"writes_per_s\":%.0f,"
               "\"us_p50\":%.1f,\"us_p99\":%.1f,\"%s_bytes\":%lld",
               bc->clients, VALUE_BYTES, res[k].writes, res[k].per_s, res[k].p50, res[k].p99,
               s->kind == A4PSD ? "journal" : "aof", logged);
        if (s->kind == A4PSD && workers > 0)
            printf(",\"workers\":%d", workers);
        else if (s->kind == A4PSD)
            printf(",\"workers\":\"default\"");
        printf("}\n");
    }
    if (redis) {
        printf("{\"bench\":\"journal_ratio\",\"of\":\"a4psd/redis\"");
        for (int p = 0; p < NPOL; p++)
            for (int c = 0; c < NCOUNTS; c++) {
                result *a = &res[p * NCOUNTS + c], *r = &res[(NPOL + p) * NCOUNTS + c];
                printf(",\"%s_c%d_writes_per_s\":%.2f,\"%s_c%d_p50\":%.2f,\"%s_c%d_p99\":%.2f",
                       policies[p], client_counts[c], a->per_s / r->per_s, policies[p],
                       client_counts[c], a->p50 / r->p50, policies[p], client_counts[c],
                       a->p99 / r->p99);
            }
        printf(",\"snapshot_vs\":\"redis appendonly no\",\"dir\":\"%s\",\"tmpfs\":%s}\n", base,
               tmpfs ? "true" : "false");
    }
    fflush(stdout);

    for (int i = 0; i < nservers; i++)
        for (int c = 0; c < MAX_CLIENTS; c++)
            close(servers[i].fd[c]);
    stop_all();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
    if (system(cmd) != 0)
        fprintf(stderr, "bench journal: could not remove %s\n", top);
    for (int k = 0; k < ncases; k++)
        for (int i = 0; i < cases[k].clients; i++)
            free(cases[k].lat[i]);
    return 0;
}
