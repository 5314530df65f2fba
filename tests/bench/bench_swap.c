/* bench_swap.c -- `scripts/bench swap`: what a swap costs its callers.
 *
 *  - code swap: the wall time of kernel_swap between two loaded versions of
 *    sw (state layout unchanged) while two threads keep calling the proto,
 *    p50/p99 over 2,000 swaps, and the publish step alone as the kernel
 *    measures it;
 *  - migrating swap: the pause (gate closed to gate open, as the kernel
 *    measures it) of swaps between layouts 1 and 2 of a proto with 1 KiB of
 *    state while the callers run, p50/p99 over 400 swaps;
 *  - churn: RSS and the number of mapped plugin generations before and after
 *    10,000 swaps in which every old generation is unloaded and the next one
 *    dlopen'ed again from the store.
 * Callers run on every core but one, which is left to the swapping thread.
 * Baseline, same run: a bare dlopen + dlclose of the same plugin file (the
 * floor under a swap to a version that is not loaded). */
#include "bench_common.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct callers {
    kernel *k;
    _Atomic bool stop;
    long calls, errors;
} callers;

static void *caller_main(void *arg)
{
    callers *c = arg;
    kernel_handle *h;
    if (kernel_resolve(c->k, "s", "get", &h))
        bench_die("resolve", "s.get");
    kernel_thread_attach(c->k);
    kernel_reply r = {0};
    long n = 0, e = 0;
    while (!atomic_load(&c->stop)) {
        if (kernel_send_handle(h, NULL, 0, &r) != A4PS_OK)
            e++;
        n++;
        kernel_quiescent(c->k);
    }
    kernel_reply_free(&r);
    kernel_handle_release(h);
    kernel_thread_detach(c->k);
    __atomic_fetch_add(&c->calls, n, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->errors, e, __ATOMIC_RELAXED);
    return NULL;
}

static long status_field(kernel *k, const char *field)
{
    char *s = kernel_status(k);
    json_t *j = json_loads(s, 0, NULL);
    long v = (long)json_integer_value(json_object_get(json_object_get(j, "stats"), field));
    json_decref(j);
    free(s);
    return v;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Distinct plugin generations mapped now (files under the runtime dir). */
static int mapped_generations(const char *runtime)
{
    FILE *m = fopen("/proc/self/maps", "r");
    char line[1024], seen[256][160];
    int n = 0;
    while (m && fgets(line, sizeof line, m)) {
        char *p = strstr(line, runtime);
        if (!p)
            continue;
        p[strcspn(p, "\n")] = 0;
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = !strcmp(seen[i], p);
        if (!dup && n < 256)
            snprintf(seen[n++], sizeof seen[0], "%s", p);
    }
    if (m)
        fclose(m);
    if (getenv("BENCH_DEBUG"))
        for (int i = 0; i < n; i++)
            fprintf(stderr, "mapped: %s\n", seen[i]);
    return n;
}

static void swap_or_die(kernel *k, const char *proto, const char *version)
{
    char err[KERNEL_ERRLEN];
    if (kernel_swap(k, proto, version, err, sizeof err))
        bench_die("swap", err);
}

#define CODE_SWAPS 2000
#define MIGRATIONS 400
#define CHURN 10000

int main(void)
{
    /* Baseline: a bare dlopen + dlclose of a plugin file. */
    uint64_t t0 = bench_ns();
    for (int i = 0; i < 200; i++) {
        void *dl = dlopen(BENCH_PLUGIN("sw-1.so"), RTLD_NOW | RTLD_LOCAL);
        if (!dl)
            bench_die("dlopen", dlerror());
        dlclose(dl);
    }
    double dlopen_us = (double)(bench_ns() - t0) / 200 / 1000.0;

    bench_env e;
    bench_open(&e, 65536);
    bench_load(&e, "sw-1.so");
    bench_load(&e, "sw-2.so");
    bench_load(&e, "sw-3.so");
    bench_proto(&e, "s", "sw", "1.0.0");
    bench_proto(&e, "pin1", "sw", "1.0.0");     /* keep every version loaded */
    bench_proto(&e, "pin2", "sw", "2.0.0");
    bench_proto(&e, "pin3", "sw", "3.0.0");
    char blob[1024];
    memset(blob, 'x', sizeof blob);
    kernel_state_set(e.k, "s", "blob", blob, sizeof blob);

    /* Callers on every core but one: the swapper needs a core of its own,
     * or what is measured is the scheduler's time slice. */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int ncallers = ncpu > 2 ? (int)ncpu - 1 : 1;
    if (ncallers > 8)
        ncallers = 8;
    callers c = {.k = e.k};
    pthread_t th[8];
    for (int i = 0; i < ncallers; i++)
        pthread_create(&th[i], NULL, caller_main, &c);

    static uint64_t swap_ns[CODE_SWAPS], publish_ns[CODE_SWAPS], pause_ns[MIGRATIONS];
    for (int i = 0; i < CODE_SWAPS; i++) {
        uint64_t a = bench_ns();
        swap_or_die(e.k, "s", i % 2 ? "1.0.0" : "2.0.0");
        swap_ns[i] = bench_ns() - a;
        publish_ns[i] = (uint64_t)status_field(e.k, "last_swap_ns");
        usleep(100);
    }
    /* s is on 1.0.0 now: alternate layouts 1 -> 2 -> 1 ... */
    for (int i = 0; i < MIGRATIONS; i++) {
        swap_or_die(e.k, "s", i % 2 ? "1.0.0" : "3.0.0");
        pause_ns[i] = (uint64_t)status_field(e.k, "last_pause_ns");
        usleep(200);
    }
    atomic_store(&c.stop, true);
    for (int i = 0; i < ncallers; i++)
        pthread_join(th[i], NULL);
    if (c.errors)
        bench_die("callers", "a call failed during the swaps");

    /* Churn: no pins, so each swap loads the target from the store and the
     * old generation is unloaded after its grace period. */
    char err[KERNEL_ERRLEN];
    kernel_proto_destroy(e.k, "pin1", err, sizeof err);
    kernel_proto_destroy(e.k, "pin3", err, sizeof err);
    bench_proto(&e, "churn", "sw", "1.0.0");
    kernel_proto_destroy(e.k, "pin2", err, sizeof err);
    for (int i = 0; i < 20; i++)          /* warm up allocator and loader */
        swap_or_die(e.k, "churn", i % 2 ? "1.0.0" : "2.0.0");
    kernel_reclaim_wait(e.k, 10000);
    long rss0 = rss_kib();
    int maps0 = mapped_generations(e.runtime);
    uint64_t c0 = bench_ns();
    for (int i = 0; i < CHURN; i++) {
        swap_or_die(e.k, "churn", i % 2 ? "1.0.0" : "2.0.0");   /* ends on 1.0.0 */
        if (i % 64 == 63)
            kernel_reclaim_wait(e.k, 10000);   /* keep the backlog bounded */
    }
    double churn_us = (double)(bench_ns() - c0) / CHURN / 1000.0;
    kernel_reclaim_wait(e.k, 10000);
    long rss1 = rss_kib();
    int maps1 = mapped_generations(e.runtime);

    double sw50 = bench_pct(swap_ns, CODE_SWAPS, 50) / 1000.0;
    double sw99 = bench_pct(swap_ns, CODE_SWAPS, 99) / 1000.0;
    double pub99 = (double)bench_pct(publish_ns, CODE_SWAPS, 99);
    double pa50 = bench_pct(pause_ns, MIGRATIONS, 50) / 1000.0;
    double pa99 = bench_pct(pause_ns, MIGRATIONS, 99) / 1000.0;
    long growth = rss1 - rss0;
    bool pass = sw99 <= 50.0 && pa99 <= 1000.0 && growth <= 2048 && maps1 <= maps0;
    printf("{\"bench\":\"swap\",\"code_swap_us_p50\":%.1f,\"code_swap_us_p99\":%.1f,"
           "\"publish_ns_p99\":%.0f,\"callers\":%d,\"migrating_pause_us_p50\":%.1f,"
           "\"migrating_pause_us_p99\":%.1f,\"calls_during_swaps\":%ld,"
           "\"churn_swaps\":%d,\"churn_swap_us\":%.1f,\"baseline_dlopen_dlclose_us\":%.1f,"
           "\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,\"rss_growth_kib\":%ld,"
           "\"mapped_generations_before\":%d,\"mapped_generations_after\":%d,"
           "\"target_code_swap_us_p99\":50,\"target_pause_us_p99\":1000,"
           "\"target_rss_growth_kib\":2048,\"pass\":%s}\n",
           sw50, sw99, pub99, ncallers, pa50, pa99, c.calls, CHURN, churn_us, dlopen_us, rss0, rss1,
           growth, maps0, maps1, pass ? "true" : "false");
    bench_close(&e);
    return 0;
}
