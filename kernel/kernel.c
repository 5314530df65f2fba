/* kernel.c -- creating and destroying the kernel; its small public entries.
 *
 * The kernel object owns everything: versions and generations, protos, the
 * event bus and the reclaimer thread.  The only process-wide state is what is
 * process-wide by nature: the fault signal handlers and the registry of
 * threads that dispatch (dispatch.c, fault.c). */
#include "kernel_int.h"

#include <dirent.h>
#include <errno.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic unsigned instance_seq;

struct timespec kernel_deadline(unsigned ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

uint64_t kernel_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int membarrier_cmd = -1;

static int membarrier_setup(void)
{
    long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);
    if (cmds < 0)
        return -1;
    if ((cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0) {
        membarrier_cmd = MEMBARRIER_CMD_PRIVATE_EXPEDITED;
        return 0;
    }
    if (cmds & MEMBARRIER_CMD_GLOBAL) {
        membarrier_cmd = MEMBARRIER_CMD_GLOBAL;
        return 0;
    }
    return -1;
}

int kernel_membarrier(void)
{
    return (int)syscall(__NR_membarrier, membarrier_cmd, 0);
}

static int mkdir_private(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "runtime_dir: cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "runtime_dir: %s is not a directory", path);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "runtime_dir: %s belongs to uid %u, not to us (%u)", path,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if ((st.st_mode & 077) && chmod(path, 0700) != 0) {
        snprintf(err, errlen, "runtime_dir: %s is mode %04o and cannot be made 0700: %s",
                 path, (unsigned)(st.st_mode & 07777), strerror(errno));
        return -1;
    }
    return 0;
}

static void rmtree_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Generation dirs of kernels whose process is gone. */
static void remove_stale_generations(const char *rt)
{
    DIR *d = opendir(rt);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long pid;
        unsigned seq;
        if (sscanf(e->d_name, "gen.%lu.%u", &pid, &seq) != 2)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno == EPERM)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", rt, e->d_name);
        rmtree_files(p);
    }
    closedir(d);
}

static void defer_free(void *arg, void *ptr)
{
    reclaim_defer(arg, free, ptr);
}

kernel *kernel_create(const kernel_config *cfg, char *err, size_t errlen)
{
    if (!cfg || !cfg->runtime_dir || !*cfg->runtime_dir) {
        snprintf(err, errlen, "runtime_dir: required");
        return NULL;
    }
    if (fault_install() != 0) {
        snprintf(err, errlen, "fault handlers: sigaction failed: %s", strerror(errno));
        return NULL;
    }
    if (membarrier_cmd < 0 && membarrier_setup() != 0) {
        snprintf(err, errlen, "membarrier: not available (Linux >= 4.14 is required)");
        return NULL;
    }
    kernel *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->cfg = *cfg;
    if (!k->cfg.max_plugin_bytes)
        k->cfg.max_plugin_bytes = 64u << 20;
    if (!k->cfg.hook_timeout_ms)
        k->cfg.hook_timeout_ms = 2000;
    if (!k->cfg.migrate_timeout_ms)
        k->cfg.migrate_timeout_ms = 1000;
    if (!k->cfg.event_queue_len)
        k->cfg.event_queue_len = 4096;
    if (!k->cfg.log_level)
        k->cfg.log_level = A4PS_LOG_INFO;
    k->started = time(NULL);
    pthread_mutex_init(&k->lock, NULL);
    pthread_mutex_init(&k->err_lock, NULL);
    k->acct = cfg->alloc_counters;
    k->api = hostapi_create();
    if (!k->api) {
        snprintf(err, errlen, "host table: cannot map a read-only page: %s", strerror(errno));
        free(k);
        return NULL;
    }
    k->gate = calloc(1, sizeof *k->gate);
    k->tomb = calloc(1, sizeof *k->tomb);
    if (!k->gate || !k->tomb) {
        snprintf(err, errlen, "out of memory");
        free(k->gate);
        free(k->tomb);
        hostapi_destroy(k->api);
        free(k);
        return NULL;
    }
    k->gate->flags = KDISP_GATE;
    k->tomb->flags = KDISP_TOMB;

    k->runtime_dir = strdup(cfg->runtime_dir);
    unsigned seq = atomic_fetch_add(&instance_seq, 1);
    if (!k->runtime_dir ||
        asprintf(&k->gen_dir, "%s/gen.%lu.%u", cfg->runtime_dir, (unsigned long)getpid(), seq) < 0 ||
        asprintf(&k->store_dir, "%s/store", cfg->runtime_dir) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail_early;
    }
    if (mkdir_private(k->runtime_dir, err, errlen) || mkdir_private(k->store_dir, err, errlen))
        goto fail_early;
    remove_stale_generations(k->runtime_dir);
    rmtree_files(k->gen_dir);
    if (mkdir_private(k->gen_dir, err, errlen))
        goto fail_early;
    if (reclaim_start(k) != 0) {
        snprintf(err, errlen, "reclaimer: cannot start its thread");
        goto fail_early;
    }
    k->protos = strmap_create(defer_free, k);
    k->selectors = strmap_create(defer_free, k);
    if (!k->protos || !k->selectors) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    k->bus = bus_create(k, k->cfg.event_queue_len, err, errlen);
    if (!k->bus)
        goto fail;
    kernel_log(k, A4PS_LOG_INFO, "kernel up: ABI %s, runtime %s, accounting per call %s",
               A4PS_ABI_VERSION_STRING, k->gen_dir, k->acct ? "on" : "off");
    return k;

fail:
    reclaim_stop(k);
    strmap_destroy(k->protos);
    strmap_destroy(k->selectors);
fail_early:
    free(k->gate);
    free(k->tomb);
    hostapi_destroy(k->api);
    free(k->runtime_dir);
    free(k->gen_dir);
    free(k->store_dir);
    free(k);
    return NULL;
}

void kernel_destroy(kernel *k)
{
    if (!k)
        return;
    bool worker = kernel_thread_self()->mode == KT_WORKER;
    if (worker)
        kernel_thread_offline(k);   /* the reclaimer's grace periods need us quiet */
    bus_destroy(k->bus);
    k->bus = NULL;
    proto_destroy_all(k);
    pthread_mutex_lock(&k->lock);
    for (kbeh *b = k->behs; b; b = b->next) {
        if (b->registry) {
            b->registry = false;
            beh_release(k, b);
        }
    }
    pthread_mutex_unlock(&k->lock);
    reclaim_stop(k);
    /* Left: generations whose hook hung (their thread may still run their
     * code, so they stay mapped); free only our bookkeeping. */
    bool mapped_left = k->behs || k->hung;
    for (kbeh *b = k->behs, *nx; b; b = nx) {
        nx = b->next;
        loader_beh_forget(b);
    }
    for (kbeh *b = k->hung, *nx; b; b = nx) {
        nx = b->next;
        loader_beh_forget(b);
    }
    for (kbeh *b = atomic_load(&k->pinned), *nx; b; b = nx) {
        nx = b->next;
        loader_beh_forget(b);
    }
    for (kver *v = k->versions, *nx; v; v = nx) {
        nx = v->next;
        free(v->stored_path);
        free(v->origin);
        free(v->source);
        free(v->report);
        free(v->usage);
        free(v);
    }
    free(k->deferred);
    for (size_t i = 0; i < k->ndeleted; i++)
        free(k->deleted[i]);
    free(k->deleted);
    free(k->gate);
    free(k->tomb);
    strmap_destroy(k->protos);
    strmap_destroy(k->selectors);
    rmtree_files(k->gen_dir);
    pthread_mutex_destroy(&k->lock);
    pthread_mutex_destroy(&k->err_lock);
    /* Generations whose hook hung stay mapped and may still run: they keep
     * the table, as the ABI promises it lives as long as the kernel -- and
     * longer, for them. */
    if (!mapped_left)
        hostapi_destroy(k->api);
    free(k->runtime_dir);
    free(k->gen_dir);
    free(k->store_dir);
    free(k);
    if (worker)
        kernel_thread_online(NULL);
}

int kernel_load(kernel *k, const char *path, kernel_version_info *info, char *err, size_t errlen)
{
    if (!path) {
        snprintf(err, errlen, "load: path required");
        return A4PS_EINVAL;
    }
    return loader_load_file(k, path, 0, info, err, errlen);
}

int kernel_load_ex(kernel *k, const char *path, unsigned flags, kernel_version_info *info,
                   char *err, size_t errlen)
{
    if (!path) {
        snprintf(err, errlen, "load: path required");
        return A4PS_EINVAL;
    }
    return loader_load_file(k, path, flags, info, err, errlen);
}

void kernel_set_log_level(kernel *k, int level)
{
    if (level < A4PS_LOG_ERR)
        level = A4PS_LOG_ERR;
    if (level > A4PS_LOG_DEBUG)
        level = A4PS_LOG_DEBUG;
    __atomic_store_n(&k->cfg.log_level, level, __ATOMIC_RELAXED);
}

int kernel_subscribe(kernel *k, const char *event, const char *proto, const char *selector,
                     char *err, size_t errlen)
{
    int rc = bus_subscribe(k->bus, event, proto, selector);
    if (rc == A4PS_EINVAL)
        snprintf(err, errlen, "subscribe: event '%s', proto '%s', selector '%s': names must be "
                 "non-empty, under %d bytes, events [a-z0-9_.-] or '*'",
                 event ? event : "(null)", proto ? proto : "(null)",
                 selector ? selector : "(null)", KERNEL_NAME_MAX);
    else if (rc == A4PS_EEXIST)
        snprintf(err, errlen, "subscribe: %s.%s already observes '%s'", proto, selector, event);
    return rc;
}

int kernel_unsubscribe(kernel *k, const char *event, const char *proto, const char *selector)
{
    return bus_unsubscribe(k->bus, event, proto, selector);
}

int kernel_emit(kernel *k, const char *event, const char *json)
{
    if (json) {
        json_t *j = json_loads(json, JSON_DECODE_ANY, NULL);
        if (!j)
            return A4PS_EINVAL;
        json_decref(j);
    }
    return bus_publish(k->bus, event, json);
}

void kernel_events_flush(kernel *k)
{
    bool worker = kernel_thread_self()->mode == KT_WORKER;
    if (worker)
        kernel_thread_offline(k);
    bus_flush(k->bus);
    if (worker)
        kernel_thread_online(k);
}
