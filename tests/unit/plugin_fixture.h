/* plugin_fixture.h -- a private kernel for the ABI and loader tests.
 *
 * Every test gets its own kernel whose runtime_dir lives under a fresh
 * mkdtemp() directory (removed at teardown), with every event and log line it
 * produces recorded, so a test can check the return code, the error text, the
 * plugin_refused event, the log and kernel_status() of one refusal together.
 * The usual fixture also loads test plugin `good` and creates proto "g" on it:
 * after anything bad, "g" must still answer ping -> pong.
 *
 * Shared by test_abi.c and test_loader.c; everything is static inline so a
 * file that leaves a helper unused still compiles under -Werror.  Include it
 * first: it needs _GNU_SOURCE before any system header. */
#ifndef PLUGIN_FIXTURE_H
#define PLUGIN_FIXTURE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernel.h"

#define FX_PLUGIN(file) A4PS_TEST_PLUGIN_DIR "/" file

/* Short, so the hanging-hook cases finish quickly; long enough that a
 * loaded CI machine does not time out a well-behaved hook. */
#define FX_HOOK_TIMEOUT_MS 300u

#define FX_MAX_EVENT_NAMES 64

typedef struct fx_buf {
    char *data;
    size_t len, cap;
} fx_buf;

typedef struct fx {
    /* Kept short so that paths built from it always fit a PATH_MAX buffer. */
    char dir[256];                /* the mkdtemp() root; files made by tests */
    char runtime[512];
    kernel_config cfg;
    kernel *k;
    bool has_g;                   /* proto "g" on good 1.0.0 exists */

    /* Written by the bus thread (events) and any kernel thread (log). */
    pthread_mutex_t lock;
    struct {
        char name[64];
        unsigned count;
    } events[FX_MAX_EVENT_NAMES];
    unsigned nevents;
    fx_buf refused;               /* data of every plugin_refused event */
    fx_buf log;                   /* every log line */
} fx;

static inline void fx_buf_add(fx_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return;               /* tests then fail on the missing text */
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static inline void fx_on_event(void *arg, const char *event, const char *json,
                               size_t len)
{
    fx *f = arg;
    pthread_mutex_lock(&f->lock);
    unsigned i;
    for (i = 0; i < f->nevents; i++)
        if (strcmp(f->events[i].name, event) == 0)
            break;
    if (i == f->nevents && i < FX_MAX_EVENT_NAMES) {
        snprintf(f->events[i].name, sizeof f->events[i].name, "%s", event);
        f->nevents++;
    }
    if (i < FX_MAX_EVENT_NAMES)
        f->events[i].count++;
    if (strcmp(event, "plugin_refused") == 0 && json) {
        fx_buf_add(&f->refused, json, len);
        fx_buf_add(&f->refused, "\n", 1);
    }
    pthread_mutex_unlock(&f->lock);
}

static inline void fx_on_log(void *arg, int level, const char *line)
{
    fx *f = arg;
    pthread_mutex_lock(&f->lock);
    fx_buf_add(&f->log, line, strlen(line));
    fx_buf_add(&f->log, "\n", 1);
    pthread_mutex_unlock(&f->lock);
}

/* How many events named `name` were delivered; flushes the bus first. */
static inline unsigned fx_events(fx *f, const char *name)
{
    kernel_events_flush(f->k);
    unsigned n = 0;
    pthread_mutex_lock(&f->lock);
    for (unsigned i = 0; i < f->nevents; i++)
        if (strcmp(f->events[i].name, name) == 0)
            n = f->events[i].count;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* A copy of what the log or the refusal events hold now (caller frees). */
static inline char *fx_snapshot(fx *f, const fx_buf *b)
{
    pthread_mutex_lock(&f->lock);
    char *s = strdup(b->data ? b->data : "");
    pthread_mutex_unlock(&f->lock);
    return s;
}

/* ---- assertions with messages that show the text they looked at ---- */

static inline void fx_assert_contains(const char *what, const char *text,
                                      const char *needle)
{
    if (!text || !strstr(text, needle))
        fail_msg("%s does not contain \"%s\"; it is: %s", what, needle,
                 text ? text : "(null)");
}

static inline void fx_assert_lacks(const char *what, const char *text,
                                   const char *needle)
{
    if (text && strstr(text, needle))
        fail_msg("%s contains \"%s\" and must not; it is: %s", what, needle,
                 text);
}

static inline unsigned fx_occurrences(const char *text, const char *needle)
{
    unsigned n = 0;
    size_t nl = strlen(needle);
    for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p += nl)
        n++;
    return n;
}

/* text with every occurrence of cut overwritten by '#', in place: a field
 * name that also occurs in a file name must be found outside the file name. */
static inline void fx_cut(char *text, const char *cut)
{
    size_t n = strlen(cut);
    if (n == 0)
        return;
    for (char *p = text; (p = strstr(p, cut)) != NULL; p += n)
        memset(p, '#', n);
}

static inline const char *fx_base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static inline double fx_ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- the kernel's fault handlers under cmocka ---- */

/* cmocka installs its own SIGSEGV/SIGFPE/SIGBUS/SIGILL handlers around every
 * test and fixture (to report a crash as a failure), replacing the kernel's
 * and restoring them with signal(), which drops SA_SIGINFO.  The kernel
 * installs its handlers once per process, so each test puts back the ones
 * the kernel installed, captured once in main() by fx_capture_handlers(). */
static const int fx_fault_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define FX_NFAULT (sizeof fx_fault_signals / sizeof fx_fault_signals[0])
static struct sigaction fx_kernel_handlers[FX_NFAULT];

static inline void fx_arm_handlers(void)
{
    for (size_t i = 0; i < FX_NFAULT; i++)
        sigaction(fx_fault_signals[i], &fx_kernel_handlers[i], NULL);
}

/* ---- kernel setup ---- */

static inline void fx_load_ok(fx *f, const char *path, kernel_version_info *info)
{
    kernel_version_info local;
    char err[KERNEL_ERRLEN] = "";
    int rc = kernel_load(f->k, path, info ? info : &local, err, sizeof err);
    if (rc != 0)
        fail_msg("kernel_load(%s) = %d: %s", path, rc, err);
}

static inline void fx_proto_ok(fx *f, const char *name, const char *plugin,
                               const char *version)
{
    char err[KERNEL_ERRLEN] = "";
    int rc = kernel_proto_create(f->k, name, plugin, version, NULL, err, sizeof err);
    if (rc != 0)
        fail_msg("kernel_proto_create(%s, %s, %s) = %d: %s", name, plugin,
                 version ? version : "newest", rc, err);
}

static inline void fx_swap_ok(fx *f, const char *proto, const char *version)
{
    char err[KERNEL_ERRLEN] = "";
    int rc = kernel_swap(f->k, proto, version, err, sizeof err);
    if (rc != 0)
        fail_msg("kernel_swap(%s, %s) = %d: %s", proto, version, rc, err);
}

/* Send msg (a string) and require status `rc` and, when `reply` is not
 * NULL, exactly that reply text. */
static inline void fx_expect(fx *f, const char *proto, const char *selector,
                             const char *msg, int rc, const char *reply)
{
    kernel_reply r = {0};
    int got = kernel_send(f->k, proto, selector, msg, strlen(msg), &r);
    const char *text = r.len ? r.data : "";
    if (got != rc)
        fail_msg("send %s.%s returned %d, expected %d; reply: %s", proto,
                 selector, got, rc, text);
    if (reply && strcmp(text, reply) != 0)
        fail_msg("send %s.%s replied \"%s\", expected \"%s\"", proto, selector,
                 text, reply);
    kernel_reply_free(&r);
}

/* Nothing loaded before is disturbed: "g" (good 1.0.0) still answers. */
static inline void fx_assert_g_serves(fx *f)
{
    if (f->has_g)
        fx_expect(f, "g", "ping", "", A4PS_OK, "pong");
}

static inline int fx_rm_entry(const char *path, const struct stat *st, int flag,
                              struct FTW *ftw)
{
    /* The kernel may leave its stored copies read-only.  Never through a
     * symlink: chmod follows it, and a test's link may point into the
     * source tree. */
    if (flag != FTW_SL)
        chmod(path, 0700);
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static inline void fx_rm_rf(const char *dir)
{
    nftw(dir, fx_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A kernel in a fresh temp dir; tune (may be NULL) adjusts the config. */
static inline fx *fx_open(void (*tune)(kernel_config *cfg))
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->lock, NULL);
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(f->dir, sizeof f->dir, "%s/a4ps-test-XXXXXX",
                     tmp && *tmp ? tmp : "/tmp");
    if (n < 0 || (size_t)n >= sizeof f->dir)
        fail_msg("TMPDIR is too long for the test's temp dir: %s", tmp);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->runtime, sizeof f->runtime, "%s/run", f->dir);

    f->cfg.runtime_dir = f->runtime;
    f->cfg.hook_timeout_ms = FX_HOOK_TIMEOUT_MS;
    f->cfg.run_self_test = 1;
    f->cfg.log_level = A4PS_LOG_DEBUG;
    f->cfg.log = fx_on_log;
    f->cfg.log_arg = f;
    f->cfg.on_event = fx_on_event;
    f->cfg.on_event_arg = f;
    if (tune)
        tune(&f->cfg);

    char err[KERNEL_ERRLEN] = "";
    f->k = kernel_create(&f->cfg, err, sizeof err);
    if (!f->k)
        fail_msg("kernel_create: %s", err);
    return f;
}

static inline void fx_close(fx *f)
{
    if (!f)
        return;
    if (f->k)
        kernel_destroy(f->k);
    fx_rm_rf(f->dir);
    free(f->refused.data);
    free(f->log.data);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* The usual fixture: a kernel with good 1.0.0 loaded and proto "g" on it. */
static inline int fx_setup(void **state)
{
    fx *f = fx_open(NULL);
    fx_load_ok(f, FX_PLUGIN("good.so"), NULL);
    fx_proto_ok(f, "g", "good", NULL);
    f->has_g = true;
    *state = f;
    return 0;
}

static inline int fx_teardown(void **state)
{
    fx_close(*state);
    *state = NULL;
    return 0;
}

/* The fixture of the current test, with the kernel's fault handlers armed. */
static inline fx *fx_get(void **state)
{
    fx_arm_handlers();
    return *state;
}

/* Called once from main(), before cmocka runs anything: have a kernel
 * install its handlers (create, load, send) and remember them. */
static inline void fx_capture_handlers(void)
{
    fx *f = fx_open(NULL);
    fx_load_ok(f, FX_PLUGIN("good.so"), NULL);
    fx_proto_ok(f, "g", "good", NULL);
    fx_expect(f, "g", "ping", "", A4PS_OK, "pong");
    for (size_t i = 0; i < FX_NFAULT; i++)
        sigaction(fx_fault_signals[i], NULL, &fx_kernel_handlers[i]);
    fx_close(f);
}

/* ---- refusals ---- */

/* Require kernel_load(path) to be refused, with an error that names the file
 * and, outside the file's name, each of `needles` (NULL-terminated); one more
 * plugin_refused event naming the file; the file in kernel_status() and in
 * the log; and "g" still serving.  Returns the status kernel_load gave. */
static inline int fx_expect_refusal(fx *f, const char *path,
                                    const char *const *needles)
{
    const char *base = fx_base(path);
    unsigned before = fx_events(f, "plugin_refused");
    kernel_version_info info;
    char err[KERNEL_ERRLEN] = "";
    int rc = kernel_load(f->k, path, &info, err, sizeof err);
    if (rc >= 0)
        fail_msg("kernel_load(%s) = %d; expected a refusal", path, rc);

    fx_assert_contains("the refusal's error text", err, base);
    char rest[KERNEL_ERRLEN];
    snprintf(rest, sizeof rest, "%s", err);
    fx_cut(rest, path);
    fx_cut(rest, base);
    for (const char *const *n = needles; n && *n; n++)
        fx_assert_contains("the refusal's error text (file name cut out)", rest, *n);

    unsigned after = fx_events(f, "plugin_refused");
    if (after != before + 1)
        fail_msg("plugin_refused events went from %u to %u for %s; expected one more",
                 before, after, base);
    char *refused = fx_snapshot(f, &f->refused);
    fx_assert_contains("the plugin_refused events", refused, base);
    free(refused);

    char *status = kernel_status(f->k);
    fx_assert_contains("kernel_status()", status, base);
    free(status);

    char *log = fx_snapshot(f, &f->log);
    fx_assert_contains("the kernel's log", log, base);
    free(log);

    fx_assert_g_serves(f);
    return rc;
}

#define FX_NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

#endif /* PLUGIN_FIXTURE_H */
