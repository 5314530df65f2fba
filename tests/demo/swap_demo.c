/* swap_demo.c -- a4ps-swap-demo: a live, state-migrating swap under load.
 *
 * Loads version 1 of the example plugin `counter`, creates a proto on it and
 * starts two threads that send "incr" to it as fast as they can.  While they
 * run, version 2 is loaded and the proto is swapped to it; version 2 keeps its
 * counter under another state key, so the swap migrates the state.  Then it
 * says in plain English what happened and checks the promises of the design:
 * no call failed, every increment survived the swap (the final count equals
 * the number of incr calls served), and no caller saw version 1 again after
 * it had seen version 2.
 *
 *   a4ps-swap-demo [OLD.so NEW.so]      (default: the counter-1/2 build outputs)
 *
 * Exit status 0 when every check holds, 1 otherwise, 2 on bad usage. */
#define _GNU_SOURCE

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "kernel.h"

#ifndef A4PS_DEMO_V1
#define A4PS_DEMO_V1 "counter-1.so"
#endif
#ifndef A4PS_DEMO_V2
#define A4PS_DEMO_V2 "counter-2.so"
#endif

#define PROTO "counter"
#define CALLERS 2
#define RUN_BEFORE_MS 300
#define RUN_AFTER_MS 300

/* One caller thread and what it saw.  Written by the thread alone; read by
 * main only after pthread_join. */
typedef struct caller {
    kernel *k;
    atomic_bool *stop;
    pthread_t tid;
    int index;

    uint64_t served;       /* incr calls that returned A4PS_OK */
    uint64_t by_v1;
    uint64_t by_v2;
    uint64_t failed;       /* any other status, or a reply we cannot read */
    uint64_t busy;         /* A4PS_EBUSY: the proto was mid-change; retried */
    uint64_t v1_after_v2;  /* version went backwards for this caller */
    char first_error[256];
} caller;

typedef struct demo_events {
    atomic_ulong count;
} demo_events;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void note_error(caller *c, int rc, const kernel_reply *r)
{
    c->failed++;
    if (c->first_error[0] == '\0')
        snprintf(c->first_error, sizeof c->first_error, "status %d: %s", rc,
                 r->len > 0 ? r->data : "(no reply text)");
}

static void *caller_main(void *arg)
{
    caller *c = arg;
    kernel_handle *h = NULL;
    kernel_reply r = { 0 };
    bool seen_v2 = false;

    if (kernel_thread_attach(c->k) != 0) {
        snprintf(c->first_error, sizeof c->first_error, "kernel_thread_attach failed");
        c->failed++;
        return NULL;
    }
    int rc = kernel_resolve(c->k, PROTO, "incr", &h);
    if (rc != A4PS_OK) {
        snprintf(c->first_error, sizeof c->first_error,
                 "kernel_resolve(%s, incr) failed with status %d", PROTO, rc);
        c->failed++;
        goto out;
    }

    while (!atomic_load_explicit(c->stop, memory_order_relaxed)) {
        rc = kernel_send_handle(h, NULL, 0, &r);
        if (rc == A4PS_EBUSY) {
            /* Documented as "try again": the call did not run, so it is
             * neither served nor failed. */
            c->busy++;
        } else if (rc != A4PS_OK) {
            note_error(c, rc, &r);
        } else if (r.len > 9 && strncmp(r.data, "v1 count=", 9) == 0) {
            c->served++;
            c->by_v1++;
            if (seen_v2)
                c->v1_after_v2++;
        } else if (r.len > 9 && strncmp(r.data, "v2 count=", 9) == 0) {
            c->served++;
            c->by_v2++;
            seen_v2 = true;
        } else {
            /* The call ran, so it may have counted; keep it in served so the
             * final comparison stays exact, and flag the reply. */
            c->served++;
            note_error(c, rc, &r);
        }
        /* Between calls this thread holds no kernel pointers, which lets a
         * swap's grace period end without waiting for the loop to stop. */
        kernel_quiescent(c->k);
    }

out:
    kernel_reply_free(&r);
    if (h != NULL)
        kernel_handle_release(h);
    kernel_thread_detach(c->k);
    return NULL;
}

/* Events arrive on the kernel's bus thread; printing them live shows where
 * in the run each one happened. */
static void on_event(void *arg, const char *event, const char *json, size_t len)
{
    demo_events *ev = arg;
    atomic_fetch_add(&ev->count, 1);
    printf("    [event] %s %.*s\n", event, (int)len, json != NULL ? json : "");
    fflush(stdout);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "a4ps-swap-demo: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void print_status(kernel *k)
{
    char *status = kernel_status(k);
    if (status == NULL) {
        printf("  (kernel_status returned nothing)\n");
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loads(status, 0, &jerr);
    char *pretty = doc != NULL ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    printf("%s\n", pretty != NULL ? pretty : status);
    free(pretty);
    json_decref(doc);
    free(status);
}

/* Parse the N of "vX count=N"; false when the reply is not of that form. */
static bool parse_count(const kernel_reply *r, uint64_t *out)
{
    if (r->len <= 9 || r->data[0] != 'v' || strncmp(r->data + 2, " count=", 7) != 0)
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(r->data + 9, &end, 10);
    if (errno != 0 || end == r->data + 9 || *end != '\0')
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    const char *v1_path = A4PS_DEMO_V1;
    const char *v2_path = A4PS_DEMO_V2;
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: %s [OLD.so NEW.so]\n"
               "Swaps a proto from OLD to NEW while two threads call \"incr\" on it.\n"
               "Default plugins: %s %s\n", argv[0], v1_path, v2_path);
        return 0;
    }
    if (argc == 3) {
        v1_path = argv[1];
        v2_path = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [OLD.so NEW.so]\n", argv[0]);
        return 2;
    }

    /* Unbuffered enough that kernel log lines (stderr) and ours interleave
     * in the order they happened. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    const char *tmpbase = getenv("TMPDIR");
    char tmpdir[4096];
    snprintf(tmpdir, sizeof tmpdir, "%s/a4ps-swap-demo.XXXXXX",
             tmpbase != NULL && tmpbase[0] != '\0' ? tmpbase : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        fprintf(stderr, "a4ps-swap-demo: cannot create a temporary directory: %s\n",
                strerror(errno));
        return 1;
    }
    char runtime_dir[4200];
    snprintf(runtime_dir, sizeof runtime_dir, "%s/run", tmpdir);

    int exit_code = 1;
    bool ok = true;      /* every check held so far */
    bool fatal = false;  /* the demonstration itself could not run */
    char err[KERNEL_ERRLEN] = "";
    kernel *k = NULL;
    kernel_reply r = { 0 };
    caller callers[CALLERS];
    int started = 0;
    atomic_bool stop = false;
    demo_events events = { 0 };

    printf("A4PS swap demonstration\n"
           "  old version: %s\n"
           "  new version: %s\n"
           "  runtime dir: %s\n\n", v1_path, v2_path, runtime_dir);

    kernel_config cfg = {
        .runtime_dir = runtime_dir,
        .on_event = on_event,
        .on_event_arg = &events,
    };
    k = kernel_create(&cfg, err, sizeof err);
    if (k == NULL) {
        fprintf(stderr, "a4ps-swap-demo: cannot create the kernel: %s\n", err);
        goto out;
    }

    kernel_version_info v1 = { 0 }, v2 = { 0 };
    if (kernel_load(k, v1_path, &v1, err, sizeof err) != 0) {
        fprintf(stderr, "a4ps-swap-demo: cannot load %s: %s\n", v1_path, err);
        goto out;
    }
    printf("Loaded %s %s (state layout %" PRIu32 ", generation %" PRIu64 ", sha256 %.16s...).\n",
           v1.name, v1.version, v1.state_version, v1.generation, v1.sha256);

    if (kernel_proto_create(k, PROTO, v1.name, v1.version, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "a4ps-swap-demo: cannot create proto %s: %s\n", PROTO, err);
        goto out;
    }
    printf("Created proto \"%s\" on %s %s.\n", PROTO, v1.name, v1.version);

    for (int i = 0; i < CALLERS; i++) {
        callers[i] = (caller){ .k = k, .stop = &stop, .index = i };
        if (pthread_create(&callers[i].tid, NULL, caller_main, &callers[i]) != 0) {
            fprintf(stderr, "a4ps-swap-demo: cannot start caller thread %d\n", i);
            fatal = true;
            break;
        }
        started++;
    }
    if (fatal)
        goto stop_callers;
    printf("%d caller threads are sending \"incr\" to \"%s\" in a loop.\n", CALLERS, PROTO);

    sleep_ms(RUN_BEFORE_MS);

    if (kernel_load(k, v2_path, &v2, err, sizeof err) != 0) {
        fprintf(stderr, "a4ps-swap-demo: cannot load %s: %s\n", v2_path, err);
        fatal = true;
        goto stop_callers;
    }
    printf("After %d ms: loaded %s %s (state layout %" PRIu32 ", generation %" PRIu64
           ", sha256 %.16s...).\n", RUN_BEFORE_MS, v2.name, v2.version, v2.state_version,
           v2.generation, v2.sha256);

    if (v1.state_version != v2.state_version)
        printf("Swapping \"%s\" from %s to %s while the callers keep running (a state-migrating\n"
               "swap: the state layout changes from %" PRIu32 " to %" PRIu32 ")...\n",
               PROTO, v1.version, v2.version, v1.state_version, v2.state_version);
    else
        printf("Swapping \"%s\" from %s to %s while the callers keep running (a code swap:\n"
               "the state layout stays %" PRIu32 ")...\n",
               PROTO, v1.version, v2.version, v1.state_version);
    double t0 = now_ms();
    int swap_rc = kernel_swap(k, PROTO, v2.version, err, sizeof err);
    double swap_ms = now_ms() - t0;
    if (swap_rc == A4PS_OK) {
        printf("The swap committed in %.3f ms.\n", swap_ms);
    } else {
        printf("The swap FAILED after %.3f ms with status %d: %s\n", swap_ms, swap_rc, err);
        ok = false;
    }

    sleep_ms(RUN_AFTER_MS);

stop_callers:
    atomic_store(&stop, true);
    for (int i = 0; i < started; i++)
        pthread_join(callers[i].tid, NULL);
    if (fatal)
        goto out;
    printf("The callers ran %d ms more and were stopped.\n", RUN_AFTER_MS);

    kernel_events_flush(k);

    uint64_t served = 0, by_v1 = 0, by_v2 = 0, failed = 0, busy = 0, backwards = 0;
    for (int i = 0; i < started; i++) {
        served += callers[i].served;
        by_v1 += callers[i].by_v1;
        by_v2 += callers[i].by_v2;
        failed += callers[i].failed;
        busy += callers[i].busy;
        backwards += callers[i].v1_after_v2;
    }

    printf("\nWhat happened:\n");
    printf("  incr calls served: %" PRIu64 " (by version 1: %" PRIu64 ", by version 2: %" PRIu64 ")\n",
           served, by_v1, by_v2);
    for (int i = 0; i < started; i++)
        printf("    caller %d: %" PRIu64 " calls (v1 %" PRIu64 ", v2 %" PRIu64 ")\n",
               i, callers[i].served, callers[i].by_v1, callers[i].by_v2);
    printf("  failed calls: %" PRIu64 "%s\n", failed, failed == 0 ? " -- none, as promised" : "");
    for (int i = 0; i < started; i++)
        if (callers[i].first_error[0] != '\0')
            printf("    caller %d's first failure: %s\n", i, callers[i].first_error);
    if (busy > 0)
        printf("  calls refused with \"busy, try again\" and retried: %" PRIu64 "\n", busy);
    if (failed > 0)
        ok = false;
    if (by_v1 == 0 || by_v2 == 0) {
        printf("  PROBLEM: both versions should have served calls\n");
        ok = false;
    }
    if (backwards > 0) {
        printf("  PROBLEM: %" PRIu64 " calls were served by version 1 after the same caller "
               "had already been served by version 2\n", backwards);
        ok = false;
    } else {
        printf("  no caller was served by version 1 after it had been served by version 2\n");
    }

    int rc = kernel_send(k, PROTO, "get", NULL, 0, &r);
    uint64_t final_count = 0;
    if (rc != A4PS_OK || !parse_count(&r, &final_count)) {
        printf("  PROBLEM: \"get\" returned status %d, reply \"%s\"\n", rc,
               r.len > 0 ? r.data : "");
        ok = false;
    } else if (final_count != served) {
        printf("  PROBLEM: the final count is %" PRIu64 " (\"%s\") but %" PRIu64
               " incr calls were served: %" PRId64 " increments were lost\n",
               final_count, r.data, served, (int64_t)(served - final_count));
        ok = false;
    } else {
        printf("  final count: \"%s\" -- equals the %" PRIu64 " incr calls, "
               "no increment was lost in the swap\n", r.data, served);
    }

    void *val = NULL;
    size_t val_len = 0;
    if (kernel_state_get(k, PROTO, "total", &val, &val_len) == A4PS_OK) {
        printf("  state after the swap: \"total\" = %.*s", (int)val_len, (const char *)val);
        free(val);
        val = NULL;
        if (kernel_state_get(k, PROTO, "count", &val, &val_len) == A4PS_OK) {
            printf(", but the old key \"count\" is still there\n");
            free(val);
            ok = false;
        } else {
            printf(", the old key \"count\" is gone (migrated)\n");
        }
    } else {
        printf("  PROBLEM: the migrated state key \"total\" is missing\n");
        ok = false;
    }
    printf("  events published by the kernel: %lu\n", atomic_load(&events.count));

    printf("\nKernel status:\n");
    print_status(k);

    exit_code = ok ? 0 : 1;
    printf("\nRESULT: %s\n", ok ? "PASS -- the swap was invisible to the callers"
                                : "FAIL -- see the problems above");

out:
    kernel_reply_free(&r);
    if (k != NULL)
        kernel_destroy(k);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return exit_code;
}
