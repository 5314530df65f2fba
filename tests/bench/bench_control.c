/* bench_control.c -- `scripts/bench control`: the control socket's request
 * round trip against redis's, both over a Unix socket, same client code,
 * same run.
 *
 * Starts the real a4psd (sandbox.mode "none": verification happens at load
 * only and is not what is measured here) with the counter example as proto
 * C, and redis-server on a Unix socket.  One client connection each, one
 * request in flight (write the line, read to its newline), ROUNDS rounds
 * that interleave the kinds so a noisy moment hits them all alike:
 *
 *   send    {"cmd":"send","proto":"C","selector":"get"}: a plugin call
 *   noop    the smallest request a4psd answers (an unknown command: parsed,
 *           queued to a worker, answered) -- the socket path alone
 *   status  {"cmd":"status"}: the kernel's whole status as JSON
 *   redis   PING -> +PONG, the baseline
 *
 * With A4PS_BENCH_BASE_A4PSD=PATH, a second a4psd (e.g. an older build) is
 * measured in the same rounds: its figures come as base_*, an A/B in one
 * run.  Without redis-server on PATH the figures come without the ratio,
 * and stderr says so.  One JSON line on stdout. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench_daemon.h"

#define ROUNDS 20
#define PER_ROUND 1000           /* requests of each kind per round */
#define WARMUP 2000

enum { SEND, NOOP, STATUS, NKINDS };
static const char *const kind_name[NKINDS] = {"send", "noop", "status"};
static const char *const kind_req[NKINDS] = {
    "{\"cmd\":\"send\",\"proto\":\"C\",\"selector\":\"get\"}\n",
    "{\"cmd\":\"noop\"}\n",
    "{\"cmd\":\"status\"}\n",
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench control: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static char rbuf[1 << 20];

/* One request, one reply line: the same code for a4psd and redis. */
static void roundtrip(int fd, const char *req, size_t n)
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
        ssize_t r = read(fd, rbuf + got, sizeof rbuf - 1 - got);
        if (r <= 0)
            die("read");
        if (memchr(rbuf + got, '\n', (size_t)r))
            break;
        got += (size_t)r;
    }
}

static int connect_unix(const char *path, pid_t child)
{
    int fd = bench_connect_unix(path, child);
    if (fd < 0 && errno == 0) {
        fprintf(stderr, "bench control: the server for %s exited\n", path);
        exit(1);
    }
    if (fd < 0)
        die(path);
    return fd;
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = bench_spawn(argv, log);
    if (pid < 0)
        die("fork");
    return pid;
}

typedef struct daemon_run {
    const char *exe;
    char dir[64];
    pid_t pid;
    int fd;
    uint64_t *lat[NKINDS];
} daemon_run;

static void daemon_start(daemon_run *r, const char *exe)
{
    r->exe = exe;
    snprintf(r->dir, sizeof r->dir, "/tmp/a4ps-bench-control-XXXXXX");
    if (!mkdtemp(r->dir))
        die("mkdtemp");
    bench_daemon_dir(r->dir);
    char path[256], cfg[256], sock[256], log[256];
    snprintf(path, sizeof path, "%s/plugins", r->dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/plugins/counter-1.so", r->dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && chmod 644 '%s'", A4PS_COUNTER_SO, path, path);
    if (system(cmd) != 0)
        die("copy the counter plugin");
    snprintf(cfg, sizeof cfg, "%s/a.cfg", r->dir);
    FILE *f = fopen(cfg, "w");
    if (!f)
        die(cfg);
    fprintf(f, "plugin_dir = \"plugins\";\nruntime_dir = \"run\";\nlog_level = \"warning\";\n"
               "control = { socket = \"a.sock\"; };\nsandbox = { mode = \"none\"; };\n"
               "protos = ( { name = \"C\"; plugin = \"counter\"; } );\n");
    fclose(f);
    snprintf(sock, sizeof sock, "%s/a.sock", r->dir);
    snprintf(log, sizeof log, "%s/log", r->dir);
    char *argv[] = {(char *)exe, "-c", cfg, NULL};
    r->pid = spawn(argv, log);
    r->fd = connect_unix(sock, r->pid);
    /* Until C answers: the proto exists once its plugin is loaded. */
    const char *ask = kind_req[SEND];
    for (int i = 0;; i++) {
        roundtrip(r->fd, ask, strlen(ask));
        if (strstr(rbuf, "\"ok\":true"))
            break;
        if (i > 500) {
            errno = 0;
            die("proto C never answered");
        }
        usleep(10000);
    }
    for (int k = 0; k < NKINDS; k++)
        if (!(r->lat[k] = calloc(ROUNDS * PER_ROUND, sizeof *r->lat[k])))
            die("calloc");
}

static void stop(pid_t pid, const char *dir)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench control: could not remove %s\n", dir);
}

static void measure(int fd, const char *req, uint64_t *lat)
{
    size_t n = strlen(req);
    for (int i = 0; i < PER_ROUND; i++) {
        uint64_t t0 = now_ns();
        roundtrip(fd, req, n);
        lat[i] = now_ns() - t0;
    }
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e3;   /* microseconds */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *base_exe = getenv("A4PS_BENCH_BASE_A4PSD");
    daemon_run runs[2];
    int nruns = base_exe && *base_exe ? 2 : 1;
    daemon_start(&runs[0], getenv("A4PSD") && *getenv("A4PSD") ? getenv("A4PSD") : A4PSD_PATH);
    if (nruns == 2)
        daemon_start(&runs[1], base_exe);

    /* The baseline: redis-server on a Unix socket, no persistence. */
    bool redis = bench_on_path("redis-server");
    char rdir[] = "/tmp/a4ps-bench-redis-XXXXXX";
    pid_t rpid = -1;
    int rfd = -1;
    uint64_t *rlat = calloc(ROUNDS * PER_ROUND, sizeof *rlat);
    if (!rlat)
        die("calloc");
    if (redis) {
        if (!mkdtemp(rdir))
            die("mkdtemp");
        char rsock[128], rlog[128];
        snprintf(rsock, sizeof rsock, "%s/r.sock", rdir);
        snprintf(rlog, sizeof rlog, "%s/log", rdir);
        char *argv[] = {"redis-server", "--port", "0", "--unixsocket", rsock, "--save", "",
                        "--appendonly", "no", "--dir", rdir, NULL};
        rpid = spawn(argv, rlog);
        rfd = connect_unix(rsock, rpid);
    } else {
        fprintf(stderr, "bench control: redis-server is not installed: the figures come "
                        "without the redis baseline and its ratio\n");
    }

    static const char ping[] = "PING\r\n";
    for (int i = 0; i < WARMUP; i++) {
        for (int r = 0; r < nruns; r++)
            for (int k = 0; k < NKINDS; k++)
                if (k != STATUS || i < WARMUP / 10)
                    roundtrip(runs[r].fd, kind_req[k], strlen(kind_req[k]));
        if (redis)
            roundtrip(rfd, ping, sizeof ping - 1);
    }
    for (int round = 0; round < ROUNDS; round++) {
        size_t at = (size_t)round * PER_ROUND;
        for (int r = 0; r < nruns; r++)
            for (int k = 0; k < NKINDS; k++)
                measure(runs[r].fd, kind_req[k], runs[r].lat[k] + at);
        if (redis)
            measure(rfd, ping, rlat + at);
    }
    const size_t n = (size_t)ROUNDS * PER_ROUND;
    double redis_p50 = redis ? pct(rlat, n, 50) : 0, redis_p99 = redis ? pct(rlat, n, 99) : 0;

    printf("{\"bench\":\"control\",\"requests_per_kind\":%zu", n);
    for (int r = 0; r < nruns; r++) {
        const char *pre = r ? "base_" : "";
        for (int k = 0; k < NKINDS; k++) {
            double p50 = pct(runs[r].lat[k], n, 50), p99 = pct(runs[r].lat[k], n, 99);
            printf(",\"%s%s_us_p50\":%.1f,\"%s%s_us_p99\":%.1f", pre, kind_name[k], p50, pre,
                   kind_name[k], p99);
            if (redis && k != STATUS)
                printf(",\"%s%s_vs_redis_p50\":%.2f", pre, kind_name[k], p50 / redis_p50);
        }
    }
    if (redis)
        printf(",\"redis_ping_us_p50\":%.1f,\"redis_ping_us_p99\":%.1f", redis_p50, redis_p99);
    else
        printf(",\"redis_ping_us_p50\":null,\"redis\":\"not installed\"");
    if (nruns == 2)
        printf(",\"base_a4psd\":\"%s\"", base_exe);
    printf("}\n");
    fflush(stdout);

    for (int r = 0; r < nruns; r++) {
        close(runs[r].fd);
        stop(runs[r].pid, runs[r].dir);
        for (int k = 0; k < NKINDS; k++)
            free(runs[r].lat[k]);
    }
    if (redis) {
        close(rfd);
        stop(rpid, rdir);
    }
    free(rlat);
    return 0;
}
