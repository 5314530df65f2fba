/* bench_forge.c -- `scripts/bench forge`: what a candidate costs, from C
 * source to its first call served live.
 *
 *   bare_ms        cc + a4ps-probe run directly, no sandbox (the baseline,
 *                  same run: probe_compile_bare, probe_run_bare)
 *   sandboxed_ms   the same two steps, each in a fresh runsc container
 *   end_to_end_ms  the real a4psd: a forge task whose candidate is already in
 *                  its inbox, from the request to the first reply of the new
 *                  version (generate, compile, probe, verify, swap; no
 *                  probation window), median and p90
 *
 * Target: end-to-end median <= 1,000 ms on the 2-core reference machine. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

#include "probe.h"
#include "sandbox.h"
#include "bench_daemon.h"

#define RUNS 7
#define TASKS 10

static const char source_fmt[] =
    "#include <string.h>\n"
    "#include \"a4ps.h\"\n"
    "static int hello(a4ps_ctx *ctx, const void *msg, size_t len)\n"
    "{\n"
    "    a4ps_reply(ctx, \"hello %d \", %zu);\n"
    "    return a4ps_reply_append(ctx, msg, len);\n"
    "}\n"
    "static const a4ps_method methods[] = {{\"hello\", hello, \"greet\"}, {0, 0, 0}};\n"
    "static const a4ps_plugin plugin = {A4PS_PLUGIN_HEADER, .name = \"greet\",\n"
    "    .version = \"1.0.%d\", .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = methods};\n"
    "A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *h)\n"
    "{\n"
    "    return &plugin;\n"
    "}\n";

static char *source(int n)
{
    char tag[32];
    int taglen = snprintf(tag, sizeof tag, "hello %d ", n);
    char *s;
    if (asprintf(&s, source_fmt, n, (size_t)taglen, n) < 0)
        exit(1);
    return s;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench forge: %s: %s\n", what, why ? why : strerror(errno));
    exit(1);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

/* ---- bare and sandboxed: the two steps alone ---- */

static void steps(const char *dir, double *bare, double *boxed)
{
    char so[600], err[1024], probe_dir[600];
    snprintf(so, sizeof so, "%s/cand.so", dir);
    snprintf(probe_dir, sizeof probe_dir, "%s", A4PS_PROBE_PATH);
    *strrchr(probe_dir, '/') = 0;
    sandbox_limits lim = {.wall_ms = 30000, .cpu_s = 30, .mem_bytes = 1024u << 20, .nproc = 64,
                          .file_bytes = 64u << 20, .output_bytes = 1 << 20};
    const char *ro[] = {A4PS_ABI_DIR, SANDBOX_ABI_MOUNT, probe_dir, SANDBOX_PROBE_MOUNT, NULL};
    sandbox *sb;
    if (sandbox_open(dir, NULL, ro, &sb, err, sizeof err) != 0)
        die("sandbox_open", err);
    double b[RUNS], s[RUNS];
    for (int i = 0; i < RUNS; i++) {
        char *src = source(i), *diag = NULL, *rep = NULL;
        probe_request rq = {.so_path = so};
        uint64_t t0 = now_ns();
        if (probe_compile_bare(A4PS_ABI_DIR, src, strlen(src), so, 30000, &diag, err,
                               sizeof err) != 0)
            die("bare compile", diag && *diag ? diag : err);
        free(diag);
        if (probe_run_bare(A4PS_PROBE_PATH, &rq, 30000, &rep, err, sizeof err) != 1)
            die("bare probe", rep ? rep : err);
        free(rep);
        b[i] = (now_ns() - t0) / 1e6;
        unlink(so);
        t0 = now_ns();
        if (sandbox_compile(sb, src, strlen(src), so, &lim, &diag, err, sizeof err) != 0)
            die("sandboxed compile", diag && *diag ? diag : err);
        free(diag);
        if (sandbox_probe(sb, &rq, &lim, &rep, err, sizeof err) != 1)
            die("sandboxed probe", rep ? rep : err);
        free(rep);
        s[i] = (now_ns() - t0) / 1e6;
        unlink(so);
        free(src);
    }
    sandbox_close(sb);
    *bare = median(b, RUNS);
    *boxed = median(s, RUNS);
}

/* ---- end to end: the real daemon ---- */

static int sock = -1;
static char rbuf[1 << 16];

static void roundtrip(const char *req)
{
    size_t n = strlen(req), off = 0;
    while (off < n) {
        ssize_t w = write(sock, req + off, n - off);
        if (w <= 0)
            die("write to a4psd", NULL);
        off += (size_t)w;
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(sock, rbuf + got, sizeof rbuf - 1 - got);
        if (r <= 0)
            die("read from a4psd", NULL);
        got += (size_t)r;
        if (memchr(rbuf, '\n', got))
            break;
    }
    rbuf[got] = 0;
}

static void write_file(const char *path, const char *text)
{
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        die(path, NULL);
}

static void end_to_end(const char *dir, double *p50, double *p90)
{
    char path[600], err[1024];
    snprintf(path, sizeof path, "%s/plugins", dir);
    mkdir(path, 0755);
    /* greet 1.0.0, built bare: the proto the tasks upgrade. */
    char *src = source(0), *diag = NULL;
    snprintf(path, sizeof path, "%s/plugins/greet.so", dir);
    if (probe_compile_bare(A4PS_ABI_DIR, src, strlen(src), path, 30000, &diag, err,
                           sizeof err) != 0)
        die("compile greet 1.0.0", diag && *diag ? diag : err);
    free(diag);
    free(src);
    chmod(path, 0644);
    snprintf(path, sizeof path, "%s/plugins/inbox.so", dir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "install -m 644 %s %s", A4PS_INBOX_SO, path);
    if (system(cmd) != 0)
        die("install inbox.so", "failed");
    snprintf(path, sizeof path, "%s/a.cfg", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        die(path, NULL);
    fprintf(f, "plugin_dir = \"plugins\";\nruntime_dir = \"run\";\nlog_level = \"warning\";\n"
               "control = { socket = \"a.sock\"; };\n"
               "forge = { dir = \"forge\"; generator = \"INBOX\"; probation_s = 0; };\n"
               "protos = ( { name = \"G\"; plugin = \"greet\"; },\n"
               "           { name = \"INBOX\"; plugin = \"inbox\"; } );\n");
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        execl(A4PSD_PATH, "a4psd", "-c", path, (char *)NULL);
        _exit(127);
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/a.sock", dir);
    for (int i = 0;; i++) {
        sock = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(sock, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
        close(sock);
        if (i > 1500)
            die("a4psd did not come up", "no socket");
        usleep(20000);
    }
    const char *hello = "{\"cmd\":\"send\",\"proto\":\"G\",\"selector\":\"hello\",\"payload\":\"x\"}\n";
    do {
        usleep(20000);
        roundtrip(hello);
    } while (!strstr(rbuf, "hello 0 x"));
    double lat[TASKS];
    for (int i = 1; i <= TASKS; i++) {
        /* Task ids count from 1 in a fresh forge directory. */
        char inbox[700], want[32];
        snprintf(inbox, sizeof inbox, "%s/forge/%d", dir, i);
        mkdir(inbox, 0755);      /* made early so the source is there at t0 */
        snprintf(inbox, sizeof inbox, "%s/forge/%d/cand.c", dir, i);
        src = source(i);
        write_file(inbox, src);
        free(src);
        snprintf(want, sizeof want, "hello %d x", i);
        char req[512];
        snprintf(req, sizeof req, "{\"cmd\":\"forge\",\"proto\":\"G\",\"selector\":\"hello\","
                 "\"tests\":[{\"input\":\"x\",\"expect\":\"hello %d x\"}]}\n", i);
        uint64_t t0 = now_ns();
        roundtrip(req);
        if (!strstr(rbuf, "\"ok\":true"))
            die("forge request", rbuf);
        for (;;) {
            roundtrip(hello);
            if (strstr(rbuf, want))
                break;
            if (now_ns() - t0 > 60ull * 1000000000ull)
                die("a candidate never went live", rbuf);
            usleep(2000);
        }
        lat[i - 1] = (now_ns() - t0) / 1e6;
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    close(sock);
    qsort(lat, TASKS, sizeof lat[0], cmp);
    *p50 = lat[TASKS / 2];
    *p90 = lat[TASKS * 9 / 10];
}

int main(void)
{
    char dir[] = "/tmp/a4ps-bench-forge-XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp", NULL);
    chmod(dir, 0755);
    bench_daemon_dir(dir);
    double bare, boxed, p50, p90;
    steps(dir, &bare, &boxed);
    end_to_end(dir, &p50, &p90);
    printf("{\"bench\":\"forge\",\"runs\":%d,\"bare_ms\":%.0f,\"sandboxed_ms\":%.0f,"
           "\"tasks\":%d,\"end_to_end_ms_p50\":%.0f,\"end_to_end_ms_p90\":%.0f,"
           "\"target_p50_ms\":1000,\"pass\":%s}\n",
           RUNS, bare, boxed, TASKS, p50, p90, p50 <= 1000 ? "true" : "false");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench forge: could not remove %s\n", dir);
    return 0;
}
