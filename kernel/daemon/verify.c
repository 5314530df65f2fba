/* verify.c -- nothing unverified runs in a4psd: the kernel's verification
 * hook, backed by a4ps-probe in the gVisor sandbox.
 *
 * Every binary the kernel is about to dlopen -- dropped into the plugin
 * directory, restored from the image, built by the forge -- reaches
 * verify_hook with its SHA-256.  A hash that passed before (this run, or in
 * an earlier one: the image keeps each version's report) is allowed at
 * once; any other binary is probed in the sandbox first, and loaded only if
 * the probe passed.  The report goes with the version into the kernel and
 * the image.  Without runsc every new binary is refused (fail closed);
 * `sandbox.mode = "none"` is the only way to load unverified code, and it
 * says so loudly at start and at every load. */
#define _GNU_SOURCE
#include "daemon/daemon.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "probe.h"
#include "image/image.h"
#include "sandbox.h"

typedef struct passed {
    char sha[65];
    char *report;
    struct passed *next;
} passed;

/* A dropped file on its way through the verifier thread. */
typedef struct vjob {
    char *name;                  /* in the plugin directory */
    char *path;
    struct vjob *next;
} vjob;

/* A probe's refusal, kept for the load that follows it (used once). */
typedef struct failed {
    char sha[65];
    char *why;
    char *report;
    struct failed *next;
} failed;

struct dverify {
    pthread_mutex_t lock;        /* passed, counters */
    passed *passed;
    unsigned long probed, refused;
    pthread_mutex_t sblock;      /* a sandbox object runs one thing at a time */
    sandbox *sb;                 /* NULL: none (mode none, or runsc missing) */
    pthread_mutex_t fsblock;
    sandbox *fsb;                /* the forge's own, so a drop never waits behind it */
    char *sb_error;              /* why there is no sandbox */
    bool none;                   /* sandbox.mode = "none" */
    sandbox_limits lim;
    unsigned call_ms, hook_ms;
    char *abi_dir;               /* copied: d->cfg is replaced by a reload */
    size_t max_bytes;

    /* The verifier thread: dropped files are probed off the loop thread,
     * then loaded by it (their hash found passed, or their refusal found
     * here).  Under lock. */
    pthread_t thread;
    bool thread_started, stop;
    pthread_cond_t cv;
    vjob *todo, *todo_tail, *done, *done_tail;
    failed *failed;
    int efd;                     /* eventfd: jobs done */
};

static void *verifier_main(void *arg);

static const char *probe_path(a4psd *d)
{
    return d->cfg->probe ? d->cfg->probe : A4PS_PROBE_PATH;
}

const char *verify_abi_dir(a4psd *d)
{
    return d->ver->abi_dir;
}

int verify_open(a4psd *d)
{
    dverify *v = calloc(1, sizeof *v);
    if (!v)
        return -1;
    pthread_mutex_init(&v->lock, NULL);
    pthread_mutex_init(&v->sblock, NULL);
    pthread_mutex_init(&v->fsblock, NULL);
    const dconfig *c = d->cfg;
    v->none = c->sandbox_none;
    v->lim = (sandbox_limits){.wall_ms = c->sbx_wall_ms, .cpu_s = c->sbx_cpu_s,
                              .mem_bytes = c->sbx_mem_bytes, .nproc = c->sbx_nproc,
                              .file_bytes = c->sbx_file_bytes,
                              .output_bytes = c->sbx_output_bytes};
    v->call_ms = c->sbx_call_ms;
    v->hook_ms = c->hook_timeout_ms;
    v->abi_dir = strdup(c->abi_dir ? c->abi_dir : A4PS_ABI_DIR);
    v->max_bytes = c->max_plugin_bytes;
    v->efd = -1;
    pthread_cond_init(&v->cv, NULL);
    d->ver = v;
    if (v->none) {
        dlog(d, LOG_WARNING, "%s: sandbox.mode = \"none\": plugins are loaded WITHOUT being "
             "verified in the sandbox -- any .so dropped into %s runs in a4psd unchecked; "
             "use this only where runsc cannot run", c->path, c->plugin_dir);
        return 0;
    }
    char err[1024], probe_dir[4096];
    snprintf(probe_dir, sizeof probe_dir, "%s", probe_path(d));
    char *slash = strrchr(probe_dir, '/');
    if (slash)
        *slash = 0;
    if (!slash || strcmp(slash + 1, SANDBOX_PROBE_NAME) ||
        sandbox_probe_check(probe_dir, err, sizeof err) != 0) {
        if (!slash || strcmp(slash + 1, SANDBOX_PROBE_NAME))
            snprintf(err, sizeof err, "sandbox.probe %s: must be a path ending in /%s",
                     probe_path(d), SANDBOX_PROBE_NAME);
        v->sb_error = strdup(err);
    } else {
        const char *ro[] = {verify_abi_dir(d), SANDBOX_ABI_MOUNT, probe_dir, SANDBOX_PROBE_MOUNT,
                            NULL};
        char forge_rt[4200];
        snprintf(forge_rt, sizeof forge_rt, "%s/forge-sandbox", c->runtime_dir);
        if (mkdir(forge_rt, 0700) != 0 && errno != EEXIST)
            snprintf(err, sizeof err, "%s: %s", forge_rt, strerror(errno));
        if (d->helper_error)     /* runsc is the privileged helper's, and it cannot */
            snprintf(err, sizeof err, "%s", d->helper_error);
        if (d->helper_error ||
            sandbox_open(c->runtime_dir, c->runsc, ro, &v->sb, err, sizeof err) != 0 ||
            sandbox_open(forge_rt, c->runsc, ro, &v->fsb, err, sizeof err) != 0) {
            v->sb_error = strdup(err);
            if (v->sb)
                sandbox_close(v->sb);
            v->sb = NULL;
        }
    }
    if (v->sb_error) {
        dlog(d, LOG_ERR, "sandbox: %s -- every new plugin binary will be refused and the "
             "forge will not run until this is fixed", v->sb_error);
        return 0;
    }
    v->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = v->efd < 0 ? errno : pthread_create(&v->thread, NULL, verifier_main, d);
    if (rc) {
        dlog(d, LOG_WARNING, "sandbox: no verifier thread (%s): dropped files are probed on "
             "the loop thread", strerror(rc));
        if (v->efd >= 0)
            close(v->efd);
        v->efd = -1;
    } else {
        v->thread_started = true;
    }
    dlog(d, LOG_INFO, "sandbox: runsc ready; new plugin binaries are probed before they load");
    return 0;
}

static void jobs_free(vjob *j)
{
    for (vjob *n; j; j = n) {
        n = j->next;
        free(j->name);
        free(j->path);
        free(j);
    }
}

void verify_stop(a4psd *d)
{
    dverify *v = d->ver;
    if (!v || !v->thread_started)
        return;
    pthread_mutex_lock(&v->lock);
    v->stop = true;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->lock);
    pthread_join(v->thread, NULL);   /* a probe in progress ends by its wall limit */
    v->thread_started = false;
}

void verify_close(a4psd *d)
{
    dverify *v = d->ver;
    if (!v)
        return;
    verify_stop(d);
    jobs_free(v->todo);
    jobs_free(v->done);
    for (failed *f = v->failed, *n; f; f = n) {
        n = f->next;
        free(f->why);
        free(f->report);
        free(f);
    }
    if (v->efd >= 0)
        close(v->efd);
    pthread_cond_destroy(&v->cv);
    if (v->sb)
        sandbox_close(v->sb);
    if (v->fsb)
        sandbox_close(v->fsb);
    for (passed *p = v->passed, *n; p; p = n) {
        n = p->next;
        free(p->report);
        free(p);
    }
    free(v->sb_error);
    free(v->abi_dir);
    pthread_mutex_destroy(&v->lock);
    pthread_mutex_destroy(&v->sblock);
    pthread_mutex_destroy(&v->fsblock);
    free(v);
    d->ver = NULL;
}

static char *passed_report(dverify *v, const char *sha)
{
    char *r = NULL;
    pthread_mutex_lock(&v->lock);
    for (passed *p = v->passed; p; p = p->next)
        if (!strcmp(p->sha, sha)) {
            r = strdup(p->report ? p->report : "{}");
            break;
        }
    pthread_mutex_unlock(&v->lock);
    return r;
}

void verify_passed(a4psd *d, const char *sha, const char *report)
{
    dverify *v = d->ver;
    char *old = passed_report(v, sha);
    if (old) {
        free(old);
        return;
    }
    passed *p = calloc(1, sizeof *p);
    if (!p)
        return;
    snprintf(p->sha, sizeof p->sha, "%s", sha);
    p->report = report ? strdup(report) : NULL;
    pthread_mutex_lock(&v->lock);
    p->next = v->passed;
    v->passed = p;
    pthread_mutex_unlock(&v->lock);
}

/* The image's reports: a version whose probe passed in an earlier run is
 * trusted by its hash, so a start does not probe everything again. */
static void seed_one(void *arg, const char *sha, const char *report)
{
    json_t *j = json_loads(report, 0, NULL);
    const char *verdict = json_string_value(json_object_get(j, "verdict"));
    if (verdict && !strcmp(verdict, "pass"))
        verify_passed(arg, sha, report);
    json_decref(j);
}

void verify_seed(a4psd *d, struct image *img)
{
    image_each_report(img, seed_one, d);
}

static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

/* The host's own look at a pass: a4ps-probe said pass; did it test what we
 * asked (probe_report_accept)?  If not, the report carries the host's
 * verdict, so the image and the forge's record say why. */
static int host_accepts(char **report, const char *cases_json, const char *selector, char *err,
                        size_t errlen)
{
    char why[600];
    int ok = probe_report_accept(*report, cases_json, selector, why, sizeof why);
    if (ok == 1)
        return 1;
    snprintf(err, errlen, "the host refused the probe's pass: %s", why);
    one_line(err);
    json_t *j = json_loads(*report, 0, NULL);
    if (json_is_object(j)) {
        json_object_set_new(j, "verdict", json_string("fail"));
        json_object_set_new(j, "reason", json_string(err));
        json_object_set_new(j, "host_refused", json_string(why));
        char *s = json_dumps(j, JSON_COMPACT);
        if (s) {
            free(*report);
            *report = s;
        }
    }
    json_decref(j);
    return ok;
}

int verify_probe(a4psd *d, bool forge, const char *path, const char *sha256,
                 const void *state, size_t state_len, const char *cases_json,
                 const char *selector, char **report, char *err, size_t errlen)
{
    dverify *v = d->ver;
    *report = NULL;
    if (v->none) {
        snprintf(err, errlen, "sandbox.mode is \"none\": there is no sandbox to probe in");
        return -1;
    }
    if (!v->sb) {
        snprintf(err, errlen, "no sandbox: %s", v->sb_error);
        return -1;
    }
    probe_request rq = {.so_path = path, .state = state, .state_len = state_len,
                        .cases_json = cases_json, .call_ms = v->call_ms, .hook_ms = v->hook_ms};
    pthread_mutex_t *lock = forge ? &v->fsblock : &v->sblock;
    pthread_mutex_lock(lock);
    int rc = sandbox_probe(forge ? v->fsb : v->sb, &rq, &v->lim, report, err, errlen);
    pthread_mutex_unlock(lock);
    if (rc >= 0) {
        /* The probe read the file by its path, after the caller hashed it:
         * only if it tested those very bytes does its verdict count. */
        json_t *j = *report ? json_loads(*report, 0, NULL) : NULL;
        const char *tested = json_string_value(json_object_get(j, "sha256"));
        const char *reason = json_string_value(json_object_get(j, "reason"));
        if (!tested || strcmp(tested, sha256)) {
            snprintf(err, errlen, "the file changed while it was verified (the probe tested "
                     "sha256 %.16s..., not %.16s...); drop it again", tested ? tested : "?",
                     sha256);
            rc = -1;
        } else if (rc == 0) {
            snprintf(err, errlen, "the sandbox probe failed it: %s",
                     reason ? reason : "no reason given");
            one_line(err);
        }
        json_decref(j);
        if (rc == 1)
            rc = host_accepts(report, cases_json, selector, err, errlen);
    }
    pthread_mutex_lock(&v->lock);
    v->probed++;
    if (rc != 1)
        v->refused++;
    pthread_mutex_unlock(&v->lock);
    return rc;
}

int verify_compile(a4psd *d, const char *source, size_t len, const char *out_so,
                   char **diagnostics, char *err, size_t errlen)
{
    dverify *v = d->ver;
    *diagnostics = NULL;
    if (v->none || !v->sb) {
        snprintf(err, errlen, "%s", v->none ? "sandbox.mode is \"none\": the forge compiles "
                 "only in the sandbox" : v->sb_error);
        return -1;
    }
    pthread_mutex_lock(&v->fsblock);
    int rc = sandbox_compile(v->fsb, source, len, out_so, &v->lim, diagnostics, err, errlen);
    pthread_mutex_unlock(&v->fsblock);
    return rc;
}

const char *verify_unavailable(a4psd *d)
{
    dverify *v = d->ver;
    if (v->none)
        return "sandbox.mode is \"none\" (no sandbox)";
    return v->sb ? NULL : v->sb_error;
}

int verify_hook(void *arg, const char *path, const char *hex, char **report, char *why,
                size_t whylen)
{
    a4psd *d = arg;
    dverify *v = d->ver;
    if ((*report = passed_report(v, hex)))
        return 0;
    pthread_mutex_lock(&v->lock);
    for (failed **fp = &v->failed; *fp; fp = &(*fp)->next)
        if (!strcmp((*fp)->sha, hex)) {
            failed *f = *fp;
            *fp = f->next;
            pthread_mutex_unlock(&v->lock);
            snprintf(why, whylen, "%s", f->why);
            *report = f->report;
            free(f->why);
            free(f);
            return -1;
        }
    pthread_mutex_unlock(&v->lock);
    if (v->none) {
        dlog(d, LOG_WARNING, "%s: loaded WITHOUT verification (sandbox.mode = \"none\")", path);
        *report = strdup("{\"verdict\":\"unverified\",\"reason\":\"sandbox.mode = none\"}");
        return 0;
    }
    char err[KERNEL_ERRLEN];
    int rc = verify_probe(d, false, path, hex, NULL, 0, NULL, NULL, report, err, sizeof err);
    if (rc == 1) {
        verify_passed(d, hex, *report);
        return 0;
    }
    /* A refusal keeps no version; the kernel frees the report. */
    snprintf(why, whylen, "%s%s", rc < 0 ? "not verified, so not loaded: " : "", err);
    return -1;
}

json_t *verify_status(a4psd *d)
{
    dverify *v = d->ver;
    if (!v)
        return json_null();
    pthread_mutex_lock(&v->lock);
    size_t n = 0;
    for (passed *p = v->passed; p; p = p->next)
        n++;
    json_t *j = json_pack("{s:s, s:s?, s:I, s:I, s:I}", "mode",
                          v->none ? "none" : v->sb ? "runsc" : "unavailable", "error",
                          v->sb_error, "passed_binaries", (json_int_t)n, "probed",
                          (json_int_t)v->probed, "refused", (json_int_t)v->refused);
    pthread_mutex_unlock(&v->lock);
    return j;
}

/* ---- Dropped files, verified off the loop thread ---- */

/* Probe one dropped file.  Whatever comes of it, the loop then loads the
 * file: the kernel's own checks and the hook decide (a pass is found by
 * hash, a refusal is found here; a file that changed meanwhile is probed
 * again by the hook itself). */
static void verify_one(a4psd *d, vjob *j)
{
    dverify *v = d->ver;
    char hex[65], err[KERNEL_ERRLEN];
    if (kernel_sha256_file(j->path, v->max_bytes, hex, err, sizeof err) != 0)
        return;                  /* the kernel's load will say what is wrong */
    char *known = passed_report(v, hex);
    if (known) {
        free(known);
        return;
    }
    /* Errors (-1) are left for the hook, which tries again and says why. */
    char *rep = NULL;
    int rc = verify_probe(d, false, j->path, hex, NULL, 0, NULL, NULL, &rep, err, sizeof err);
    failed *f = rc == 0 ? calloc(1, sizeof *f) : NULL;
    if (rc == 1) {
        verify_passed(d, hex, rep);
    } else if (f && (f->why = strdup(err))) {
        snprintf(f->sha, sizeof f->sha, "%s", hex);
        f->report = rep;
        rep = NULL;
        pthread_mutex_lock(&v->lock);
        f->next = v->failed;
        v->failed = f;
        pthread_mutex_unlock(&v->lock);
    } else {
        free(f);
    }
    free(rep);
}

static void *verifier_main(void *arg)
{
    a4psd *d = arg;
    dverify *v = d->ver;
    pthread_mutex_lock(&v->lock);
    for (;;) {
        while (!v->todo && !v->stop)
            pthread_cond_wait(&v->cv, &v->lock);
        if (v->stop)
            break;
        vjob *j = v->todo;
        v->todo = j->next;
        if (!v->todo)
            v->todo_tail = NULL;
        pthread_mutex_unlock(&v->lock);
        verify_one(d, j);
        pthread_mutex_lock(&v->lock);
        j->next = NULL;
        if (v->done_tail)
            v->done_tail->next = j;
        else
            v->done = j;
        v->done_tail = j;
        uint64_t one = 1;
        if (write(v->efd, &one, sizeof one) < 0) {
            /* at its maximum: the loop is awake anyway */
        }
    }
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

int verify_fd(a4psd *d)
{
    return d->ver ? d->ver->efd : -1;
}

bool verify_submit(a4psd *d, const char *dir, const char *name)
{
    dverify *v = d->ver;
    if (!v || !v->thread_started)
        return false;
    vjob *j = calloc(1, sizeof *j);
    if (!j || !(j->name = strdup(name)) || asprintf(&j->path, "%s/%s", dir, name) < 0) {
        if (j)
            free(j->name);
        free(j);
        return false;
    }
    pthread_mutex_lock(&v->lock);
    if (v->todo_tail)
        v->todo_tail->next = j;
    else
        v->todo = j;
    v->todo_tail = j;
    pthread_cond_signal(&v->cv);
    pthread_mutex_unlock(&v->lock);
    return true;
}

char **verify_done(a4psd *d, size_t *n)
{
    dverify *v = d->ver;
    uint64_t cnt;
    *n = 0;
    if (!v || v->efd < 0)
        return NULL;
    if (read(v->efd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
        return NULL;
    pthread_mutex_lock(&v->lock);
    vjob *list = v->done;
    v->done = v->done_tail = NULL;
    pthread_mutex_unlock(&v->lock);
    size_t count = 0;
    for (vjob *j = list; j; j = j->next)
        count++;
    char **names = calloc(count ? count : 1, sizeof *names);
    for (vjob *j = list; names && j; j = j->next) {
        names[(*n)++] = j->name;
        j->name = NULL;
    }
    jobs_free(list);
    return names;
}
