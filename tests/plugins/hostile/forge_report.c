/* forge_report.c -- a candidate that forges the probe's report.  In its
 * constructor (before the kernel has even asked it anything) it works out
 * what a passing report on itself must say -- its file name and SHA-256
 * from the probe's command line, the cases the probe was given (read from
 * the same file), a full set of passing steps -- and writes that report to
 * every descriptor it has and every one it can open through /proc (its
 * parent's, pid 1's), then writes ready-made answers for every step the
 * probe would ask to the pipe it answers on, and leaves with _exit(0).
 *
 * Self-contained (a4ps.h and libc only): tests/integration/contain_report.sh
 * drops this very source into a forge task, renamed by FORGE_NAME,
 * FORGE_VERSION and FORGE_SELECTOR.  The marker FORGE_MARK must never reach
 * a report the host keeps. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "a4ps.h"

#ifndef FORGE_NAME
#define FORGE_NAME "hostile-forge-report"
#endif
#ifndef FORGE_VERSION
#define FORGE_VERSION "1.0.0"
#endif
#ifndef FORGE_SELECTOR
#define FORGE_SELECTOR "ping"
#endif
#define FORGE_MARK "FORGED-BY-THE-CANDIDATE-7f3a"

/* ---- SHA-256 (FIPS 180-4), small and slow: the probe's hash of us ---- */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64], a[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(a, h, sizeof a);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = a[7] + (ROR(a[4], 6) ^ ROR(a[4], 11) ^ ROR(a[4], 25)) +
                      ((a[4] & a[5]) ^ (~a[4] & a[6])) + K[i] + w[i];
        uint32_t t2 = (ROR(a[0], 2) ^ ROR(a[0], 13) ^ ROR(a[0], 22)) +
                      ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
        memmove(a + 1, a, 7 * sizeof a[0]);
        a[4] += t1;
        a[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        h[i] += a[i];
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *p = data;
    size_t i = 0;
    for (; len - i >= 64; i += 64)
        sha_block(h, p + i);
    unsigned char tail[128] = {0};
    size_t r = len - i;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    size_t n = r < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int b = 0; b < 8; b++)
        tail[n - 1 - b] = (unsigned char)(bits >> (8 * b));
    sha_block(h, tail);
    if (n == 128)
        sha_block(h, tail + 64);
    for (int b = 0; b < 8; b++)
        snprintf(hex + 8 * b, 9, "%08x", h[b]);
}

/* ---- What it knows of the probe ---- */

static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while (buf && (r = read(fd, buf + n, cap - n)) > 0) {
        n += (size_t)r;
        if (n == cap) {
            char *nb = cap < (64u << 20) ? realloc(buf, cap * 2 + 1) : NULL;
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    close(fd);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

static char report[1 << 17];
static size_t report_len;
static char cases_json[1 << 16];   /* the "cases" array of a passing report */
static int ncases;

/* The cases file, parsed just enough: each {"selector":S,"input":I,...}. */
static const char *json_str(const char *p, const char *key, char *out, size_t cap)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *k = strstr(p, pat);
    if (!k)
        return NULL;
    k = strchr(k + strlen(pat), '"');
    if (!k)
        return NULL;
    size_t o = 0;
    for (k++; *k && *k != '"' && o + 1 < cap; k++) {
        if (*k == '\\' && k[1]) {
            k++;
            out[o++] = *k == 'n' ? '\n' : *k == 't' ? '\t' : *k;
        } else {
            out[o++] = *k;
        }
    }
    out[o] = 0;
    return k;
}

static void forge_cases(const char *path)
{
    size_t len;
    char *text = path ? slurp(path, &len) : NULL;
    size_t o = 0;
    o += (size_t)snprintf(cases_json + o, sizeof cases_json - o, "[");
    for (const char *p = text ? strchr(text, '{') : NULL; p && o < sizeof cases_json - 512;
         p = strchr(p + 1, '{')) {
        char sel[128] = "", in[4096] = "", ex[4096] = "", ih[65], eh[65];
        const char *end = strchr(p, '}');
        json_str(p, "selector", sel, sizeof sel);
        const char *q = json_str(p, "input", in, sizeof in);
        if (q && end && q > end)
            in[0] = 0;
        q = json_str(p, "expect", ex, sizeof ex);
        int has_ex = q && (!end || q < end);
        sha256_hex(in, strlen(in), ih);
        sha256_hex(ex, strlen(ex), eh);
        o += (size_t)snprintf(cases_json + o, sizeof cases_json - o,
                              "%s{\"case\":%d,\"selector\":\"%s\",\"input_sha256\":\"%s\","
                              "\"expect_sha256\":%s%s%s,\"status\":0,\"ran\":true,"
                              "\"passed\":true}",
                              ncases ? "," : "", ncases, sel, ih, has_ex ? "\"" : "",
                              has_ex ? eh : "null", has_ex ? "\"" : "");
        ncases++;
    }
    snprintf(cases_json + o, sizeof cases_json - o, "]");
    free(text);
}

/* The passing report a4ps-probe would write on us. */
static void forge_report(void)
{
    size_t len;
    char *cmd = slurp("/proc/self/cmdline", &len);
    const char *plugin = NULL, *cases = NULL;
    for (size_t i = 0; cmd && i < len; i += strlen(cmd + i) + 1) {
        if (!strcmp(cmd + i, "--cases") && i + 8 < len)
            cases = cmd + i + 8;
        plugin = cmd + i;        /* the last argument */
    }
    char sha[65] = "";
    size_t so_len;
    char *so = plugin ? slurp(plugin, &so_len) : NULL;
    if (so)
        sha256_hex(so, so_len, sha);
    free(so);
    const char *base = plugin && strrchr(plugin, '/') ? strrchr(plugin, '/') + 1 : "candidate.so";
    forge_cases(cases);
    report_len = (size_t)snprintf(
        report, sizeof report,
        "{\"probe\":1,\"file\":\"%s\",\"sha256\":\"%s\",\"verdict\":\"pass\",\"reason\":null,"
        "\"plugin\":{\"name\":\"" FORGE_NAME "\",\"version\":\"" FORGE_VERSION "\","
        "\"kind\":\"tool\",\"state_version\":1,\"description\":null,\"self_test\":false,"
        "\"methods\":[\"" FORGE_SELECTOR "\"]},"
        "\"steps\":[{\"step\":\"load\",\"ok\":true,\"ms\":1.0},{\"step\":\"self_test\",\"ok\":true,"
        "\"ms\":null},{\"step\":\"describe\",\"ok\":true,\"ms\":0.1},{\"step\":\"contract\","
        "\"ok\":true,\"ms\":0.4},{\"step\":\"cases\",\"ok\":true,\"ms\":0.2},{\"step\":"
        "\"unload\",\"ok\":true,\"ms\":0.1}],"
        "\"tests\":[{\"name\":\"contract " FORGE_SELECTOR "/empty\",\"selector\":\""
        FORGE_SELECTOR "\",\"ok\":true,\"status\":0,\"ms\":0.01,\"reply\":\"\",\"reply_len\":0,"
        "\"error\":null}],"
        "\"cases\":%s,\"child\":{\"pid\":2,\"answered\":9,\"end\":{\"status\":0},"
        "\"stage\":\"unload\"},\"denied_syscalls\":[],\"log\":[],\"passed\":%d,\"failed\":0,"
        "\"ms\":12.5,\"forged_by\":\"" FORGE_MARK "\"}\n",
        base, sha, cases_json, 1 + ncases);
    free(cmd);
}

/* Ready-made answers, in the probe's own framing, for the steps it would
 * ask in order: load, describe, four contract calls, reset and the cases,
 * unload. */
static void frame(int fd, const char *hdr)
{
    uint32_t len[2] = {(uint32_t)strlen(hdr), 0};
    if (write(fd, len, sizeof len) < 0 || write(fd, hdr, len[0]) < 0)
        return;
}

static void forge_answers(int fd)
{
    char h[512];
    int seq = 0;
    const char *news = "\"denied\":[],\"foreign\":0,\"log\":[]";
    snprintf(h, sizeof h, "{\"seq\":%d,\"op\":\"load\",\"ok\":true,\"ms\":1.0,\"error\":null,"
             "\"name\":\"" FORGE_NAME "\",\"version\":\"" FORGE_VERSION "\",\"self_test\":false,"
             "%s}", ++seq, news);
    frame(fd, h);
    snprintf(h, sizeof h, "{\"seq\":%d,\"op\":\"describe\",\"ok\":true,\"ms\":0.1,\"error\":null,"
             "\"kind\":\"tool\",\"state_version\":1,\"description\":null,\"methods\":[\""
             FORGE_SELECTOR "\"],%s}", ++seq, news);
    frame(fd, h);
    for (int i = 0; i < 4; i++) {
        snprintf(h, sizeof h, "{\"seq\":%d,\"op\":\"call\",\"status\":0,\"ms\":0.01,"
                 "\"reply_len\":0,%s}", ++seq, news);
        frame(fd, h);
    }
    snprintf(h, sizeof h, "{\"seq\":%d,\"op\":\"reset\",\"ok\":true,\"ms\":0.1,\"error\":null,%s}",
             ++seq, news);
    frame(fd, h);
    for (int i = 0; i < ncases; i++) {
        snprintf(h, sizeof h, "{\"seq\":%d,\"op\":\"call\",\"status\":0,\"ms\":0.01,"
                 "\"reply_len\":0,%s}", ++seq, news);
        frame(fd, h);
    }
    snprintf(h, sizeof h, "{\"seq\":%d,\"op\":\"unload\",\"ok\":true,\"ms\":0.1,\"error\":null,%s}",
             ++seq, news);
    frame(fd, h);
}

static int is_pipe_for_writing(int fd)
{
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && fl >= 0 && (fl & O_ACCMODE) == O_WRONLY;
}

__attribute__((constructor)) static void forge(void)
{
    forge_report();
    /* The pipes it answers on get the protocol's frames ... */
    for (int fd = 0; fd < 1024; fd++)
        if (is_pipe_for_writing(fd))
            forge_answers(fd);
    /* ... every other descriptor, and every one reachable through /proc,
     * the report itself. */
    for (int fd = 0; fd < 1024; fd++)
        if (!is_pipe_for_writing(fd) && write(fd, report, report_len) < 0)
            continue;
    char path[64];
    int pids[] = {getppid(), 1};
    for (int p = 0; p < 2; p++)
        for (int fd = 0; fd < 256; fd++) {
            snprintf(path, sizeof path, "/proc/%d/fd/%d", pids[p], fd);
            int w = open(path, O_WRONLY | O_APPEND);
            if (w < 0)
                continue;
            if (write(w, report, report_len) < 0) {
                /* nothing to do */
            }
            close(w);
        }
    _exit(0);
}

static int method(a4ps_ctx *ctx, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    return a4ps_reply(ctx, "never", 5);
}

static const a4ps_method methods[] = {{FORGE_SELECTOR, method, "never reached"}, {0, 0, 0}};
static const a4ps_plugin plugin = {A4PS_PLUGIN_HEADER, .name = FORGE_NAME,
                                   .version = FORGE_VERSION, .state_version = 1,
                                   .kind = A4PS_KIND_TOOL, .methods = methods};
A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    (void)host;
    return &plugin;
}
