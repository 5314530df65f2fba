/* bench_common.h -- what the benchmark programs share: a kernel in a temp
 * dir, a monotonic clock, percentiles and the plain-call baseline. */
#ifndef A4PS_BENCH_COMMON_H
#define A4PS_BENCH_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernel.h"

#define BENCH_PLUGIN(f) A4PS_TEST_PLUGIN_DIR "/" f

static inline uint64_t bench_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void bench_die(const char *what, const char *err)
{
    fprintf(stderr, "bench: %s: %s\n", what, err);
    exit(1);
}

static inline void bench_quiet_log(void *arg, int level, const char *line)
{
    if (level <= A4PS_LOG_WARNING)
        fprintf(stderr, "<%d>%s\n", level, line);
}

typedef struct bench_env {
    char dir[256];
    char runtime[300];
    kernel *k;
} bench_env;

static inline void bench_open(bench_env *e, unsigned queue)
{
    snprintf(e->dir, sizeof e->dir, "/tmp/a4ps-bench-XXXXXX");
    if (!mkdtemp(e->dir))
        bench_die("mkdtemp", "failed");
    snprintf(e->runtime, sizeof e->runtime, "%s/run", e->dir);
    kernel_config cfg = {.runtime_dir = e->runtime, .log = bench_quiet_log,
                         .event_queue_len = queue, .migrate_timeout_ms = 1000};
    char err[KERNEL_ERRLEN];
    e->k = kernel_create(&cfg, err, sizeof err);
    if (!e->k)
        bench_die("kernel_create", err);
}

static inline int bench_rm(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p) == 0 ? 0 : 0;
}

static inline void bench_close(bench_env *e)
{
    kernel_destroy(e->k);
    nftw(e->dir, bench_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void bench_load(bench_env *e, const char *file)
{
    char err[KERNEL_ERRLEN], path[512];
    kernel_version_info info;
    snprintf(path, sizeof path, "%s/%s", A4PS_TEST_PLUGIN_DIR, file);
    int rc = kernel_load(e->k, path, &info, err, sizeof err);
    if (rc && rc != A4PS_EEXIST)
        bench_die(file, err);
}

static inline void bench_proto(bench_env *e, const char *name, const char *plugin,
                               const char *version)
{
    char err[KERNEL_ERRLEN];
    if (kernel_proto_create(e->k, name, plugin, version, NULL, err, sizeof err))
        bench_die(name, err);
}

static int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of v[0..n), sorting v. */
static inline uint64_t bench_pct(uint64_t *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, bench_cmp_u64);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

#endif
