/* forge.c -- the forge: a task goes in, a tested, verified plugin version
 * comes out live, or a precise record of why not.
 *
 * A task names a target proto (or a new plugin and the proto to create on
 * it), a goal, test cases and a budget.  One forge thread runs the tasks in
 * the order they were opened, each through its stages:
 *
 *   generate   ask the generator proto (a plugin of kind generator) for C
 *              source, giving it the previous source, the compiler's
 *              diagnostics and the failing tests
 *   compile    cc in the sandbox, with flags fixed by the kernel, against abi/
 *   probe      a4ps-probe in the sandbox: self-test, contract tests and the
 *              task's cases, against a clone of the target's state
 *   verify     the hook the codex monitors of a later issue plug into
 *   swap       the kernel's atomic swap of the target proto
 *   probation  a window in which a fault rolls the target back (the kernel's
 *              quarantine) and the forge records it
 *
 * It stops at success, at the budget (iterations, wall time) or when the same
 * failure comes twice in a row.  Every attempt (source, diagnostics, report,
 * verdict) is kept with the task and written to its directory as task.json;
 * the adopted version carries its source and report into the image's
 * lineage.  A task never stops the kernel: everything before the swap runs in
 * the sandbox, and the swap itself leaves the old version on any failure. */
#define _GNU_SOURCE
#include "daemon/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define FORGE_STOP_WAIT_S 20
#define FORGE_KEEP 64            /* finished tasks kept in memory (all on disk) */
#define FORGE_MAX_PENDING 32     /* tasks queued or running, at most */

typedef struct ftask {
    unsigned id;
    char *target;                /* proto to change, or to create */
    char *plugin;                /* its plugin (the candidate must be this one) */
    bool create;                 /* a new plugin: the target is created on it */
    char *goal;
    char *selector;              /* may be NULL */
    json_t *tests;               /* [{selector, input, expect}] */
    char *generator;
    char *proposer;              /* who opened it: the operator, or a plugin */
    unsigned max_iter, wall_s, probation_s;
    const char *state;           /* queued, running, adopted, failed, cancelled */
    const char *stage;
    char *progress;              /* what the stage is doing, one line */
    char *result;                /* how it ended, one line */
    int iteration;
    json_t *attempts;
    char *adopted;               /* the version that went live */
    time_t created, started, finished;
    char *dir;                   /* the task's directory (the inbox generator's too) */
    bool cancel;
    struct ftask *next;
} ftask;

struct dforge {
    pthread_mutex_t lock;        /* everything here and in the tasks */
    pthread_cond_t cv;
    ftask *tasks, *tail;
    unsigned next_id;
    pthread_t thread;
    bool started, stop;
    bool hung;                   /* its thread did not stop: never freed */
    char *dir;
    char *work;                  /* runtime_dir/forge-work, 0700: candidates' binaries */
    /* The forge { } settings, copied at start: d->cfg belongs to the loop
     * thread and a reload replaces it (they need a restart anyway). */
    char *generator, *cfg_path;
    unsigned iterations, wall_s, probation_s;
};

static void task_free(ftask *t);

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void set_str(char **field, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_str(char **field, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(*field);
    *field = s;
}

/* ---- Task JSON ---- */

static json_t *task_json(const ftask *t, bool full)
{
    json_t *atts = json_array();
    size_t i;
    json_t *a;
    json_array_foreach(t->attempts, i, a) {
        if (full) {
            json_array_append(atts, a);
        } else {
            json_array_append_new(atts, json_pack("{s:O, s:O, s:O?}", "iteration",
                                                  json_object_get(a, "iteration"), "verdict",
                                                  json_object_get(a, "verdict"), "summary",
                                                  json_object_get(a, "summary")));
        }
    }
    return json_pack("{s:I, s:s, s:s, s:b, s:s?, s:s?, s:O, s:s, s:s, s:s, s:s?, s:s?, s:i,"
                     " s:{s:i, s:i, s:i}, s:s?, s:I, s:I, s:I, s:s, s:s?, s:o}",
                     "id", (json_int_t)t->id, "target", t->target, "plugin", t->plugin,
                     "new_plugin", t->create, "goal", t->goal, "selector", t->selector,
                     "tests", t->tests, "generator", t->generator, "state", t->state,
                     "stage", t->stage, "progress", t->progress, "result", t->result,
                     "iteration", t->iteration, "budget", "iterations", (int)t->max_iter,
                     "wall_s", (int)t->wall_s, "probation_s", (int)t->probation_s,
                     "adopted", t->adopted, "created", (json_int_t)t->created, "started",
                     (json_int_t)t->started, "finished", (json_int_t)t->finished, "dir",
                     t->dir, "proposer", t->proposer, "attempts", atts);
}

/* The durable record: task.json in the task's directory, rewritten after
 * every attempt (write to a temporary, then rename). */
static void record_write(a4psd *d, unsigned id, const char *dir, json_t *j)
{
    /* A fresh temporary (O_EXCL: never through a link someone left in the
     * directory), then rename, which replaces a link rather than follows it. */
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s/.task.json.XXXXXX", dir);
    snprintf(path, sizeof path, "%s/task.json", dir);
    int fd = j ? mkstemp(tmp) : -1;
    int ok = fd >= 0 && fchmod(fd, 0644) == 0 && json_dumpfd(j, fd, JSON_INDENT(1)) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        dlog(d, LOG_WARNING, "forge task %u: cannot write %s: %s", id, path,
             j ? strerror(errno) : "the record is not valid JSON");
        if (fd >= 0)
            unlink(tmp);
    }
}

/* For a task that is queued or running (so never trimmed meanwhile). */
static void task_save(a4psd *d, ftask *t)
{
    pthread_mutex_lock(&d->forge->lock);
    json_t *j = task_json(t, true);
    pthread_mutex_unlock(&d->forge->lock);
    record_write(d, t->id, t->dir, j);
    json_decref(j);
}

/* The length of at most max bytes of s that ends on a UTF-8 character
 * boundary: text cut for a record must stay valid JSON text. */
static int utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return (int)len;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return (int)max;
}

static void task_stage(a4psd *d, ftask *t, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void task_stage(a4psd *d, ftask *t, const char *stage, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&d->forge->lock);
    t->stage = stage;
    set_str(&t->progress, "%s", line);
    pthread_mutex_unlock(&d->forge->lock);
    dlog(d, LOG_INFO, "forge task %u, iteration %d: %s: %s", t->id, t->iteration, stage, line);
}

/* ---- Stages ---- */

static bool task_stopping(a4psd *d, ftask *t, double deadline, const char **why)
{
    pthread_mutex_lock(&d->forge->lock);
    bool cancel = t->cancel, stop = d->forge->stop;
    pthread_mutex_unlock(&d->forge->lock);
    if (cancel || stop)
        *why = cancel ? "cancelled" : "the daemon is stopping";
    else if (now_ms() > deadline)
        *why = "budget: wall time used up";
    else
        return false;
    return true;
}

static json_t *generator_request(a4psd *d, ftask *t, const char *source, const char *diag,
                                 const char *failures)
{
    char abi[4200];
    snprintf(abi, sizeof abi, "%s/a4ps.h", verify_abi_dir(d));
    pthread_mutex_lock(&d->forge->lock);
    json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:b, s:s, s:s?, s:O, s:s?, s:s?, s:s?, s:s, s:s}",
                          "task", "", "iteration", t->iteration, "target", t->target, "plugin",
                          t->plugin, "new_plugin", t->create, "goal", t->goal, "selector",
                          t->selector, "tests", t->tests, "previous_source", source,
                          "diagnostics", diag, "failures", failures, "dir", t->dir,
                          "abi_header", abi);
    pthread_mutex_unlock(&d->forge->lock);
    char id[16];
    snprintf(id, sizeof id, "%u", t->id);
    json_object_set_new(j, "task", json_string(id));
    return j;
}

/* Ask the generator until it has a candidate (an inbox may wait for a
 * person).  0 with *source, or -1 with *why. */
static int stage_generate(a4psd *d, ftask *t, const char *prev, const char *diag,
                          const char *failures, double deadline, char **source, char **why)
{
    json_t *req = generator_request(d, t, prev, diag, failures);
    char *msg = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!msg) {
        *why = strdup("the task could not be put as JSON for the generator (out of memory?)");
        return -1;
    }
    kernel_reply r = {0};
    int rc;
    task_stage(d, t, "generate", "asking %s", t->generator);
    for (;;) {
        rc = kernel_send(d->k, t->generator, "generate", msg, strlen(msg), &r);
        if (rc != A4PS_ENOENT || !r.len || !strncmp(r.data, "no proto named", 14))
            break;
        task_stage(d, t, "generate", "waiting: %.*s", utf8_cut(r.data, r.len, 400), r.data);
        const char *stop;
        if (task_stopping(d, t, deadline, &stop)) {
            *why = strdup(stop);
            rc = -2;
            break;
        }
        usleep(250 * 1000);
    }
    free(msg);
    json_t *valid = rc == A4PS_OK && r.len && !memchr(r.data, 0, r.len)
                        ? json_stringn(r.data, r.len) : NULL;
    if (valid) {
        /* Only text that is valid UTF-8 can go into the record and back to
         * the generator, so only such source is compiled. */
        *source = strndup(r.data, r.len);
        rc = 0;
    } else if (rc == A4PS_OK && r.len) {
        *why = strdup("the generator's source is not valid UTF-8 text (or holds a NUL byte)");
        rc = -1;
    } else if (rc != -2) {
        if (asprintf(why, "generator %s: status %d: %.*s", t->generator, rc,
                     r.len ? utf8_cut(r.data, r.len, 2000) : 15,
                     r.len ? r.data : "(empty reply)") < 0)
            *why = NULL;
        rc = -1;
    }
    json_decref(valid);
    kernel_reply_free(&r);
    return rc;
}

/* The failing tests of a report, one line each, for the generator. */
static char *report_failures(json_t *rep)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    const char *reason = json_string_value(json_object_get(rep, "reason"));
    if (reason)
        fprintf(f, "%s\n", reason);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(rep, "tests"), i, c) {
        if (json_is_true(json_object_get(c, "ok")))
            continue;
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *err = json_string_value(json_object_get(c, "error"));
        const char *reply = json_string_value(json_object_get(c, "reply"));
        const char *expect = json_string_value(json_object_get(c, "expect"));
        fprintf(f, "%s: %s", name ? name : "?", err ? err : "failed");
        if (expect)
            fprintf(f, " (expected \"%s\", got \"%s\")", expect, reply ? reply : "");
        fputc('\n', f);
    }
    fclose(f);
    return out;
}

static int version_cmp(const char *a, const char *b)
{
    unsigned x[3] = {0}, y[3] = {0};
    sscanf(a, "%u.%u.%u", &x[0], &x[1], &x[2]);
    sscanf(b, "%u.%u.%u", &y[0], &y[1], &y[2]);
    for (int i = 0; i < 3; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

/* Probation: watch the target for probation_s.  0 if the version stayed
 * live; -1 with *why when the kernel rolled it back (a fault quarantined
 * it), or when a call to it failed (A4PS_ERROR) and the forge rolled the
 * target back itself. */
static int stage_probation(a4psd *d, ftask *t, const char *version, char **why)
{
    task_stage(d, t, "probation", "%s %s live on %s; watching for %u s", t->plugin, version,
               t->target, t->probation_s);
    double end = now_ms() + t->probation_s * 1000.0;
    while (now_ms() < end) {
        kernel_version_info cur;
        int quarantined = 0;
        uint64_t failed = 0;
        char reason[256] = "";
        bool live = kernel_proto_version(d->k, t->target, &cur, NULL) == A4PS_OK &&
                    !strcmp(cur.version, version);
        kernel_version_health(d->k, t->plugin, version, &quarantined, &failed, reason,
                              sizeof reason);
        if (live && !quarantined && failed > 0) {
            char err[KERNEL_ERRLEN];
            int rc = kernel_rollback(d->k, t->target, err, sizeof err);
            if (asprintf(why, "rolled back in probation: %llu call%s to %s %s failed "
                         "(A4PS_ERROR)%s%s", (unsigned long long)failed, failed == 1 ? "" : "s",
                         t->plugin, version, rc ? "; the rollback failed too: " : "",
                         rc ? err : "") < 0)
                *why = NULL;
            return -1;
        }
        if (!live || quarantined) {
            if (asprintf(why, "rolled back in probation: %s %s %s%s%s", t->plugin, version,
                         quarantined ? "was quarantined" : "is no longer live",
                         reason[0] ? ": " : "", reason) < 0)
                *why = NULL;
            return -1;
        }
        pthread_mutex_lock(&d->forge->lock);
        bool stop = t->cancel || d->forge->stop;
        pthread_mutex_unlock(&d->forge->lock);
        if (stop)
            break;               /* the version stays live; probation is cut short */
        usleep(100 * 1000);
    }
    return 0;
}

static void feedback(a4psd *d, ftask *t, json_t *attempt)
{
    char id[16];
    snprintf(id, sizeof id, "%u", t->id);
    json_t *fb = json_pack("{s:s, s:O, s:O, s:O?, s:O?, s:O?}", "task", id, "iteration",
                           json_object_get(attempt, "iteration"), "verdict",
                           json_object_get(attempt, "verdict"), "diagnostics",
                           json_object_get(attempt, "diagnostics"), "failures",
                           json_object_get(attempt, "failures"), "report",
                           json_object_get(attempt, "report"));
    char *msg = json_dumps(fb, JSON_COMPACT);
    json_decref(fb);
    kernel_reply r = {0};
    int rc = kernel_send(d->k, t->generator, "feedback", msg, strlen(msg), &r);
    if (rc != A4PS_OK && rc != A4PS_ENOSYS)
        dlog(d, LOG_WARNING, "forge task %u: %s feedback: status %d: %.*s", t->id,
             t->generator, rc, (int)(r.len > 300 ? 300 : r.len), r.len ? r.data : "");
    kernel_reply_free(&r);
    free(msg);
}

/* One attempt, from source to a live version.  Returns its verdict. */
static const char *attempt_run(a4psd *d, ftask *t, const char *source, json_t *a)
{
    char so[4200], err[KERNEL_ERRLEN];
    /* In the daemon's private directory, not the task's (which a person or
     * an agent writes into): nobody can swap the file between its probe
     * and its load. */
    snprintf(so, sizeof so, "%s/task-%u-attempt-%d.so", d->forge->work, t->id, t->iteration);
    double t0 = now_ms();
    task_stage(d, t, "compile", "cc in the sandbox (%zu bytes of source)", strlen(source));
    char *diag = NULL;
    int rc = verify_compile(d, source, strlen(source), so, &diag, err, sizeof err);
    json_object_set_new(a, "compile_ms", json_real(now_ms() - t0));
    json_object_set_new(a, "diagnostics", diag && *diag ? json_string(diag) : json_null());
    free(diag);
    if (rc < 0) {
        json_object_set_new(a, "summary", json_string(err));
        return "error";
    }
    if (rc == 1) {
        json_object_set_new(a, "summary", json_string("did not compile"));
        return "compile_failed";
    }

    /* The probe runs against a clone of the target's state. */
    void *state = NULL;
    size_t slen = 0;
    if (!t->create)
        kernel_state_export(d->k, t->target, &state, &slen);
    pthread_mutex_lock(&d->forge->lock);
    char *cases = json_dumps(t->tests, JSON_COMPACT);
    pthread_mutex_unlock(&d->forge->lock);
    task_stage(d, t, "probe", "a4ps-probe in the sandbox: %zu test case%s, state of %s (%zu bytes)",
               json_array_size(t->tests), json_array_size(t->tests) == 1 ? "" : "s", t->target,
               slen);
    t0 = now_ms();
    char *rep = NULL, sha[65];
    rc = kernel_sha256_file(so, SIZE_MAX, sha, err, sizeof err) != 0
             ? -1
             : verify_probe(d, true, so, sha, state, slen, cases, t->selector, &rep, err,
                            sizeof err);
    free(state);
    free(cases);
    json_object_set_new(a, "probe_ms", json_real(now_ms() - t0));
    json_t *report = rep ? json_loads(rep, 0, NULL) : NULL;
    json_object_set_new(a, "report", report ? json_incref(report) : json_null());
    if (rc != 1)
        unlink(so);
    if (rc < 0) {
        free(rep);
        json_decref(report);
        json_object_set_new(a, "summary", json_string(err));
        return "error";
    }
    json_t *pl = json_object_get(report, "plugin");
    const char *name = json_string_value(json_object_get(pl, "name"));
    const char *version = json_string_value(json_object_get(pl, "version"));
    char failures[1024] = "";
    kernel_version_info cur = {0};
    const char *cur_version = cur.version;
    if (rc == 1) {
        /* The probe passed it; is it what the task asked for? */
        if (!t->create)
            kernel_proto_version(d->k, t->target, &cur, NULL);
        if (!name || strcmp(name, t->plugin))
            snprintf(failures, sizeof failures, "the candidate is plugin '%s'; the task needs "
                     "plugin '%s'", name ? name : "?", t->plugin);
        else if (!version || (cur_version[0] && version_cmp(version, cur_version) <= 0))
            snprintf(failures, sizeof failures, "the candidate is %s %s; it must have a version "
                     "above the live %s", t->plugin, version ? version : "?", cur_version);
    }
    if (rc == 0 || failures[0]) {
        char *f = rc == 0 ? report_failures(report) : strdup(failures);
        json_object_set_new(a, "failures", json_string(f ? f : "failed"));
        if (f)
            f[strcspn(f, "\n")] = 0;    /* the summary is the first line */
        json_object_set_new(a, "summary", json_string(f && *f ? f : "failed"));
        free(f);
        free(rep);
        json_decref(report);
        unlink(so);
        return "test_failed";
    }
    json_object_set_new(a, "version", json_string(version));

    /* verify: where the codex monitors plug in (a later issue); today the
     * probe's verdict is the whole of it, for the bytes it tested (the
     * binary sits in our private directory, hashed before the probe). */
    task_stage(d, t, "verify", "probe passed %s %s; no monitors configured", name, version);
    const char *stop;
    if (task_stopping(d, t, 1e300, &stop)) {
        json_object_set_new(a, "summary", json_string(stop));
        free(rep);
        json_decref(report);
        unlink(so);
        return "error";
    }
    verify_passed(d, sha, rep);

    task_stage(d, t, "swap", "loading %s %s and swapping %s", name, version, t->target);
    kernel_version_info info = {0};
    bool loaded = false;
    char origin[256];
    snprintf(origin, sizeof origin, "forge task %u, iteration %d, generator %s, proposed by %s",
             t->id, t->iteration, t->generator, t->proposer ? t->proposer : "?");
    rc = kernel_load(d->k, so, &info, err, sizeof err);
    if (rc == A4PS_OK) {
        loaded = true;
        /* Name and version are what the kernel read from the binary; the
         * report's (the candidate's process said them) must agree. */
        if (strcmp(info.name, name) || strcmp(info.version, version)) {
            snprintf(err, sizeof err, "the kernel read %s %s from the binary, but the probe's "
                     "report names %s %s: not adopted", info.name, info.version, name, version);
            rc = A4PS_EINVAL;
        } else if (t->selector &&
                   kernel_version_has_method(d->k, info.name, info.version, t->selector) != 1) {
            snprintf(err, sizeof err, "the kernel finds no method '%s' in %s %s as loaded, "
                     "though the probe's report lists one: not adopted", t->selector, info.name,
                     info.version);
            rc = A4PS_EINVAL;
        }
    }
    if (rc == A4PS_OK && t->create && damage_is_unrestorable(d, t->target)) {
        /* Its rows in the image wait for the operator (damage.c). */
        snprintf(err, sizeof err, "proto %s is unrestorable: its state in the image waits for "
                 "a4psctl destroy or rollback: not created", t->target);
        rc = A4PS_EEXIST;
    }
    if (rc == A4PS_OK) {
        kernel_version_annotate(d->k, info.name, info.version, source, rep, origin);
        rc = t->create ? kernel_proto_create(d->k, t->target, info.name, info.version, NULL, err,
                                             sizeof err)
                       : kernel_swap(d->k, t->target, info.version, err, sizeof err);
    }
    free(rep);
    json_decref(report);
    unlink(so);                  /* the kernel keeps its own copy */
    if (rc != A4PS_OK) {
        json_object_set_new(a, "failures", json_string(err));
        json_object_set_new(a, "summary", json_string(err));
        if (loaded) {
            /* Loaded but not adopted: it must not become the version new
             * protos and upgrades take. */
            char why[KERNEL_ERRLEN + 64], werr[KERNEL_ERRLEN];
            snprintf(why, sizeof why, "forge task %u could not swap to it: %s", t->id, err);
            if (kernel_version_withdraw(d->k, info.name, info.version, why, werr,
                                        sizeof werr) != 0)
                dlog(d, LOG_ERR, "forge task %u: %s", t->id, werr);
        }
        return "swap_failed";
    }
    char *why = NULL;
    if (stage_probation(d, t, info.version, &why) != 0) {
        json_object_set_new(a, "failures", json_string(why ? why : "rolled back"));
        json_object_set_new(a, "summary", json_string(why ? why : "rolled back"));
        free(why);
        return "rolled_back";
    }
    pthread_mutex_lock(&d->forge->lock);
    set_str(&t->adopted, "%s", info.version);
    pthread_mutex_unlock(&d->forge->lock);
    json_object_set_new(a, "summary", json_pack("s", "adopted"));
    return "adopted";
}

/* The end of a task, in two halves: ending sets its final state under the
 * lock and takes everything the announcement needs (a finished task may be
 * trimmed from memory as soon as the lock is released); announcing writes
 * the record, logs and emits forge_task_finished. */
typedef struct ending {
    unsigned id;
    char *dir;
    json_t *record;
    json_t *event;
    int level;
    char line[1024];
} ending;

static void task_end_locked(ftask *t, const char *state, const char *line, ending *e)
{
    t->state = state;
    t->stage = "done";
    set_str(&t->result, "%s", line);
    free(t->progress);
    t->progress = NULL;
    t->finished = time(NULL);
    char id[16];
    snprintf(id, sizeof id, "%u", t->id);
    e->id = t->id;
    e->dir = strdup(t->dir);
    e->record = task_json(t, true);
    e->event = json_pack("{s:s, s:s, s:s, s:s, s:s?}", "task", id, "target", t->target,
                         "state", state, "result", line, "version", t->adopted);
    e->level = !strcmp(state, "adopted") ? LOG_NOTICE : LOG_WARNING;
    snprintf(e->line, sizeof e->line, "forge task %u: %s: %s", t->id, state, line);
}

static void task_announce(a4psd *d, ending *e)
{
    if (e->dir)
        record_write(d, e->id, e->dir, e->record);
    dlog(d, e->level, "%s", e->line);
    char *js = e->event ? json_dumps(e->event, JSON_COMPACT) : NULL;
    if (js)
        kernel_emit(d->k, "forge_task_finished", js);
    free(js);
    free(e->dir);
    json_decref(e->record);
    json_decref(e->event);
}

static void task_finish(a4psd *d, ftask *t, const char *state, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void task_finish(a4psd *d, ftask *t, const char *state, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ending e = {0};
    pthread_mutex_lock(&d->forge->lock);
    task_end_locked(t, state, line, &e);
    pthread_mutex_unlock(&d->forge->lock);
    task_announce(d, &e);
}

/* Keep at most FORGE_KEEP finished tasks in memory, dropping the oldest;
 * their records stay on disk (forge_task reads them from there).  Under
 * the lock. */
static void tasks_trim(dforge *f)
{
    size_t finished = 0;
    for (ftask *t = f->tasks; t; t = t->next)
        finished += strcmp(t->state, "queued") && strcmp(t->state, "running");
    ftask **pp = &f->tasks, *prev = NULL;
    while (*pp && finished > FORGE_KEEP) {
        ftask *t = *pp;
        if (!strcmp(t->state, "queued") || !strcmp(t->state, "running")) {
            prev = t;
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        if (f->tail == t)
            f->tail = prev;
        task_free(t);
        finished--;
    }
}

static void task_run(a4psd *d, ftask *t)
{
    pthread_mutex_lock(&d->forge->lock);
    t->state = "running";
    t->started = time(NULL);
    pthread_mutex_unlock(&d->forge->lock);
    double deadline = now_ms() + t->wall_s * 1000.0;
    char *prev = NULL, *diag = NULL, *fail = NULL, *last_sig = NULL;
    const char *stop = NULL;
    const char *verdict = NULL;
    for (unsigned it = 1; it <= t->max_iter; it++) {
        pthread_mutex_lock(&d->forge->lock);
        t->iteration = (int)it;
        pthread_mutex_unlock(&d->forge->lock);
        if (task_stopping(d, t, deadline, &stop))
            break;
        char *source = NULL, *why = NULL;
        double t0 = now_ms();
        int rc = stage_generate(d, t, prev, diag, fail, deadline, &source, &why);
        json_t *a = json_pack("{s:i, s:f}", "iteration", (int)it, "generate_ms", now_ms() - t0);
        if (rc == -2) {
            stop = "budget: wall time used up";
            if (why && strcmp(why, stop))
                stop = !strcmp(why, "cancelled") ? "cancelled" : "the daemon is stopping";
            free(why);
            json_decref(a);
            break;
        }
        if (rc < 0) {
            verdict = "generate_failed";
            json_object_set_new(a, "failures", json_string(why ? why : "generator failed"));
            json_object_set_new(a, "summary", json_string(why ? why : "generator failed"));
        } else {
            json_object_set_new(a, "source", json_string(source));
            verdict = attempt_run(d, t, source, a);
        }
        free(why);
        json_object_set_new(a, "verdict", json_string(verdict));
        pthread_mutex_lock(&d->forge->lock);
        json_array_append(t->attempts, a);
        pthread_mutex_unlock(&d->forge->lock);
        task_save(d, t);
        feedback(d, t, a);
        if (!strcmp(verdict, "adopted") || !strcmp(verdict, "error")) {
            json_decref(a);
            free(source);
            break;
        }
        /* The next iteration gets this one's source, diagnostics and failures. */
        free(prev);
        prev = source;
        free(diag);
        const char *dg = json_string_value(json_object_get(a, "diagnostics"));
        diag = dg ? strdup(dg) : NULL;
        free(fail);
        const char *fl = json_string_value(json_object_get(a, "failures"));
        fail = fl ? strdup(fl) : NULL;
        char *sig = NULL;
        if (asprintf(&sig, "%s\n%s\n%s", verdict, diag ? diag : "", fail ? fail : "") < 0)
            sig = NULL;
        bool same = sig && last_sig && !strcmp(sig, last_sig);
        free(last_sig);
        last_sig = sig;
        json_decref(a);
        if (same) {
            stop = "the same failure twice in a row";
            break;
        }
    }
    pthread_mutex_lock(&d->forge->lock);
    size_t n = json_array_size(t->attempts);
    json_t *last = n ? json_array_get(t->attempts, n - 1) : NULL;
    const char *lv = json_string_value(json_object_get(last, "verdict"));
    const char *ls = json_string_value(json_object_get(last, "summary"));
    char *summary = ls ? strdup(ls) : NULL;
    pthread_mutex_unlock(&d->forge->lock);
    if (lv && !strcmp(lv, "adopted"))
        task_finish(d, t, "adopted", "%s %s live on %s after %zu attempt%s", t->plugin,
                    t->adopted, t->target, n, n == 1 ? "" : "s");
    else if (stop && !strcmp(stop, "cancelled"))
        task_finish(d, t, "cancelled", "cancelled after %zu attempt%s", n, n == 1 ? "" : "s");
    else
        task_finish(d, t, "failed", "%s after %zu attempt%s; last: %s: %s",
                    stop ? stop : lv && !strcmp(lv, "error") ? "stopped" : "budget: iterations used up",
                    n, n == 1 ? "" : "s", lv ? lv : "none", summary ? summary : "");
    free(summary);
    free(prev);
    free(diag);
    free(fail);
    free(last_sig);
}

static void *forge_main(void *arg)
{
    a4psd *d = arg;
    dforge *f = d->forge;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        ftask *t = NULL;
        while (!f->stop) {
            for (t = f->tasks; t && strcmp(t->state, "queued"); t = t->next)
                ;
            if (t)
                break;
            pthread_cond_wait(&f->cv, &f->lock);
        }
        if (f->stop)
            break;
        pthread_mutex_unlock(&f->lock);
        task_run(d, t);
        pthread_mutex_lock(&f->lock);
        tasks_trim(f);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* ---- The daemon's side ---- */

static char *jdup(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? strdup(s) : NULL;
}

/* A task of an earlier run, from its task.json: listed and shown as it
 * ended.  One that was still queued or running when a4psd stopped is marked
 * interrupted (it is not resumed: its generator may have moved on). */
static ftask *task_load(const char *dir, unsigned id)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%u/task.json", dir, id);
    json_t *j = json_load_file(path, 0, NULL);
    if (!json_is_object(j) || json_integer_value(json_object_get(j, "id")) != id) {
        json_decref(j);
        return NULL;
    }
    static const char *const states[] = {"adopted", "failed", "cancelled", "interrupted"};
    const char *st = json_string_value(json_object_get(j, "state"));
    const char *state = "interrupted";
    for (size_t i = 0; st && i < sizeof states / sizeof states[0]; i++)
        if (!strcmp(st, states[i]))
            state = states[i];
    ftask *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(j);
        return NULL;
    }
    t->id = id;
    t->target = jdup(j, "target");
    t->plugin = jdup(j, "plugin");
    t->create = json_is_true(json_object_get(j, "new_plugin"));
    t->goal = jdup(j, "goal");
    t->selector = jdup(j, "selector");
    t->tests = json_incref(json_object_get(j, "tests"));
    t->generator = jdup(j, "generator");
    t->proposer = jdup(j, "proposer");
    t->state = state;
    t->stage = "done";
    t->result = jdup(j, "result");
    if (!strcmp(state, "interrupted") && !t->result)
        t->result = strdup("a4psd stopped while the task ran; it was not resumed");
    t->iteration = (int)json_integer_value(json_object_get(j, "iteration"));
    json_t *b = json_object_get(j, "budget");
    t->max_iter = (unsigned)json_integer_value(json_object_get(b, "iterations"));
    t->wall_s = (unsigned)json_integer_value(json_object_get(b, "wall_s"));
    t->probation_s = (unsigned)json_integer_value(json_object_get(b, "probation_s"));
    t->attempts = json_incref(json_object_get(j, "attempts"));
    if (!json_is_array(t->attempts)) {
        json_decref(t->attempts);
        t->attempts = json_array();
    }
    t->adopted = jdup(j, "adopted");
    t->created = (time_t)json_integer_value(json_object_get(j, "created"));
    t->started = (time_t)json_integer_value(json_object_get(j, "started"));
    t->finished = (time_t)json_integer_value(json_object_get(j, "finished"));
    /* Where the record was found, never where it says it was. */
    if (asprintf(&t->dir, "%s/%u", dir, id) < 0)
        t->dir = NULL;
    json_decref(j);
    if (!t->target || !t->plugin || !t->generator || !t->dir) {
        task_free(t);
        return NULL;
    }
    return t;
}

static int cmp_uint(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

static char *forge_dir(a4psd *d)
{
    char *dir = NULL;
    if (d->cfg->forge_dir)
        dir = strdup(d->cfg->forge_dir);
    else if (asprintf(&dir, "%s/forge", d->cfg->runtime_dir) < 0)
        dir = NULL;
    return dir;
}

int forge_open(a4psd *d, char *err, size_t errlen)
{
    dforge *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = forge_dir(d))) {
        free(f);
        snprintf(err, errlen, "forge: out of memory");
        return -1;
    }
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->generator = d->cfg->forge_generator ? strdup(d->cfg->forge_generator) : NULL;
    f->cfg_path = strdup(d->cfg->path);
    f->iterations = d->cfg->forge_iterations;
    f->wall_s = d->cfg->forge_wall_s;
    f->probation_s = d->cfg->forge_probation_s;
    if (asprintf(&f->work, "%s/forge-work", d->cfg->runtime_dir) < 0)
        f->work = NULL;
    if (!f->work || (mkdir(f->work, 0700) != 0 && errno != EEXIST) ||
        (mkdir(f->dir, 0755) != 0 && errno != EEXIST)) {
        snprintf(err, errlen, "forge.dir %s or %s: %s", f->dir, f->work ? f->work : "?",
                 strerror(errno));
        free(f->work);
        free(f->generator);
        free(f->cfg_path);
        free(f->dir);
        free(f);
        return -1;
    }
    /* Task ids go on from the highest directory left by earlier runs, so a
     * new task never writes into an old one's record; those records are
     * listed again, in id order. */
    f->next_id = 1;
    DIR *dir = opendir(f->dir);
    struct dirent *e;
    unsigned *ids = NULL;
    size_t nids = 0, cap = 0;
    while (dir && (e = readdir(dir))) {
        char *end;
        unsigned long n = strtoul(e->d_name, &end, 10);
        if (*end || end == e->d_name || n == 0 || n >= 1000000000)
            continue;
        if (n >= f->next_id)
            f->next_id = (unsigned)n + 1;
        if (nids == cap) {
            cap = cap ? cap * 2 : 16;
            unsigned *ni = realloc(ids, cap * sizeof *ni);
            if (!ni)
                break;
            ids = ni;
        }
        ids[nids++] = (unsigned)n;
    }
    if (dir)
        closedir(dir);
    if (nids)
        qsort(ids, nids, sizeof *ids, cmp_uint);
    d->forge = f;
    /* The newest FORGE_KEEP come back into memory, newest read first (every
     * one has ended: no task survives a restart); the older stay on disk. */
    size_t kept = 0;
    for (size_t i = nids; i-- > 0 && kept < FORGE_KEEP;) {
        ftask *t = task_load(f->dir, ids[i]);
        if (!t)
            continue;
        t->next = f->tasks;
        f->tasks = t;
        if (!f->tail)
            f->tail = t;
        kept++;
        if (!strcmp(t->state, "interrupted"))
            task_save(d, t);     /* the record says so too from now on */
    }
    free(ids);
    int rc = pthread_create(&f->thread, NULL, forge_main, d);
    if (rc) {
        snprintf(err, errlen, "forge: cannot start its thread: %s", strerror(rc));
        d->forge = NULL;
        free(f->work);
        free(f->generator);
        free(f->cfg_path);
        free(f->dir);
        free(f);
        return -1;
    }
    f->started = true;
    return 0;
}

static void task_free(ftask *t)
{
    free(t->target);
    free(t->plugin);
    free(t->goal);
    free(t->selector);
    json_decref(t->tests);
    free(t->generator);
    free(t->proposer);
    free(t->progress);
    free(t->result);
    json_decref(t->attempts);
    free(t->adopted);
    free(t->dir);
    free(t);
}

/* Stop the forge thread: a task stops at its next check (a generator's call
 * or a sandbox run in progress finishes first).  Bounded: a thread that does
 * not stop in time is left, and the daemon exits without tearing down. */
void forge_stop(a4psd *d)
{
    dforge *f = d->forge;
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    f->stop = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
    if (!f->started)
        return;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += FORGE_STOP_WAIT_S;
    if (pthread_timedjoin_np(f->thread, NULL, &dl) != 0) {
        dlog(d, LOG_ERR, "forge: its thread did not stop within %d s (a generator or a "
             "sandbox run still going)", FORGE_STOP_WAIT_S);
        d->stuck = true;
        f->hung = true;
        return;
    }
    f->started = false;
}

/* After the kernel is gone: nothing calls forge_* any more. */
void forge_free(a4psd *d)
{
    dforge *f = d->forge;
    if (!f || f->hung)
        return;
    for (ftask *t = f->tasks, *n; t; t = n) {
        n = t->next;
        task_free(t);
    }
    free(f->dir);
    free(f->work);
    free(f->generator);
    free(f->cfg_path);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cv);
    free(f);
    d->forge = NULL;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Open a task from a control request:
 *   {"proto": P, "selector"?: S, "goal"?: G, "tests": [{"selector"?, "input", "expect"}],
 *    "plugin"?: NEW (a new plugin; P is created on it), "generator"?: PROTO,
 *    "iterations"?: N, "wall_s"?: N, "probation_s"?: N}
 * Returns the task as JSON, or NULL with err. */
json_t *forge_task_open(a4psd *d, json_t *req, const char *proposer, char *err, size_t errlen)
{
    dforge *f = d->forge;
    pthread_mutex_lock(&f->lock);
    bool stopping = f->stop;
    size_t pending = 0;
    for (ftask *t = f->tasks; t; t = t->next)
        pending += !strcmp(t->state, "queued") || !strcmp(t->state, "running");
    pthread_mutex_unlock(&f->lock);
    if (stopping) {
        snprintf(err, errlen, "forge: refused: a4psd is stopping");
        return NULL;
    }
    if (pending >= FORGE_MAX_PENDING) {
        snprintf(err, errlen, "forge: refused: %zu tasks are queued or running already (at "
                 "most %d); cancel some or wait", pending, FORGE_MAX_PENDING);
        return NULL;
    }
    const char *why = verify_unavailable(d);
    if (why) {
        snprintf(err, errlen, "forge: refused: the forge builds and tests only in the sandbox, "
                 "and there is none: %s", why);
        return NULL;
    }
    const char *proto = jstr(req, "proto"), *selector = jstr(req, "selector"),
               *goal = jstr(req, "goal"), *newplugin = jstr(req, "plugin"),
               *gen = jstr(req, "generator");
    if (!gen)
        gen = f->generator;
    if (!proto || !kernel_valid_proto_name(proto)) {
        snprintf(err, errlen, "forge: \"proto\": '%s' is not a proto name", proto ? proto : "");
        return NULL;
    }
    if (!gen) {
        snprintf(err, errlen, "forge: no generator: name one (--generator PROTO) or set "
                 "forge.generator in %s", f->cfg_path);
        return NULL;
    }
    if (!kernel_proto_exists(d->k, gen)) {
        snprintf(err, errlen, "forge: generator: no proto named '%s'", gen);
        return NULL;
    }
    kernel_version_info ginfo;
    uint32_t kind = 0;
    if (kernel_proto_version(d->k, gen, &ginfo, &kind) != A4PS_OK ||
        kind != A4PS_KIND_GENERATOR) {
        snprintf(err, errlen, "forge: generator: proto '%s' runs %s %s, which is not a plugin of "
                 "kind generator", gen, ginfo.name, ginfo.version);
        return NULL;
    }
    /* The ranges of the config's forge { } keys of the same names. */
    static const struct {
        const char *key;
        long min, max;
    } budget[] = {{"iterations", 1, 1000}, {"wall_s", 1, 604800}, {"probation_s", 0, 86400}};
    for (size_t b = 0; b < sizeof budget / sizeof budget[0]; b++) {
        json_t *v = json_object_get(req, budget[b].key);
        if (v && (!json_is_integer(v) || json_integer_value(v) < budget[b].min ||
                  json_integer_value(v) > budget[b].max)) {
            snprintf(err, errlen, "forge: \"%s\" must be an integer from %ld to %ld",
                     budget[b].key, budget[b].min, budget[b].max);
            return NULL;
        }
    }
    char plugin[64] = "", version[32] = "";
    bool create = false;
    kernel_version_info tinfo;
    if (kernel_proto_version(d->k, proto, &tinfo, NULL) == A4PS_OK) {
        if (newplugin) {
            snprintf(err, errlen, "forge: proto '%s' exists; \"plugin\" is only for a new one",
                     proto);
            return NULL;
        }
        snprintf(plugin, sizeof plugin, "%s", tinfo.name);
        snprintf(version, sizeof version, "%s", tinfo.version);
    } else {
        if (!newplugin || !kernel_valid_plugin_name(newplugin)) {
            snprintf(err, errlen, "forge: no proto named '%s'; to make a new plugin for it, "
                     "name the plugin (--plugin NAME, [a-z][a-z0-9_-]{0,63})", proto);
            return NULL;
        }
        snprintf(plugin, sizeof plugin, "%s", newplugin);
        create = true;
    }
    if (selector && !*selector)
        selector = NULL;
    json_t *tests = json_array();
    json_t *in = json_object_get(req, "tests"), *c;
    size_t i;
    if (in && !json_is_array(in)) {
        snprintf(err, errlen, "forge: \"tests\" must be an array");
        json_decref(tests);
        return NULL;
    }
    json_array_foreach(in, i, c) {
        const char *sel = jstr(c, "selector") ? jstr(c, "selector") : selector;
        const char *input = jstr(c, "input"), *expect = jstr(c, "expect");
        if (!sel || !input || !expect) {
            snprintf(err, errlen, "forge: tests[%zu]: needs \"input\" and \"expect\" (strings) "
                     "and a selector (its own or the task's)", i);
            json_decref(tests);
            return NULL;
        }
        json_array_append_new(tests, json_pack("{s:s, s:s, s:s}", "selector", sel, "input",
                                               input, "expect", expect));
    }
    if (!json_array_size(tests) && !selector && !goal) {
        snprintf(err, errlen, "forge: a task needs a goal, a selector or test cases");
        json_decref(tests);
        return NULL;
    }
    json_int_t iters = json_integer_value(json_object_get(req, "iterations"));
    json_int_t wall = json_integer_value(json_object_get(req, "wall_s"));
    json_t *prob = json_object_get(req, "probation_s");
    ftask *t = calloc(1, sizeof *t);
    t->target = strdup(proto);
    t->plugin = strdup(plugin);
    t->create = create;
    if (goal)
        t->goal = strdup(goal);
    else if (asprintf(&t->goal, "%s the selector %s of %s", create ? "write a plugin with" :
                      "add or fix", selector ? selector : "(see the tests)", proto) < 0)
        t->goal = NULL;
    t->selector = selector ? strdup(selector) : NULL;
    t->tests = tests;
    t->generator = strdup(gen);
    t->proposer = proposer ? strdup(proposer) : NULL;
    t->max_iter = iters ? (unsigned)iters : f->iterations;   /* checked above */
    t->wall_s = wall ? (unsigned)wall : f->wall_s;
    t->probation_s = prob ? (unsigned)json_integer_value(prob) : f->probation_s;
    t->state = "queued";
    t->stage = "queued";
    t->attempts = json_array();
    t->created = time(NULL);
    pthread_mutex_lock(&f->lock);
    t->id = f->next_id++;
    pthread_mutex_unlock(&f->lock);
    /* The directory may be there already (a candidate can be put in the
     * inbox before the task is opened), but it must be a real directory of
     * ours: never a link that would send the task's record elsewhere. */
    struct stat st;
    const char *bad = NULL;
    if (asprintf(&t->dir, "%s/%u", f->dir, t->id) < 0)
        bad = "out of memory";
    else if ((mkdir(t->dir, 0755) != 0 && errno != EEXIST) || lstat(t->dir, &st) != 0)
        bad = strerror(errno);
    else if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        bad = "exists and is not a directory of a4psd's user";
    if (bad) {
        snprintf(err, errlen, "forge: the task's directory %s/%u: %s", f->dir, t->id, bad);
        task_free(t);
        return NULL;
    }
    task_save(d, t);             /* before the forge thread can write it too */
    pthread_mutex_lock(&f->lock);
    if (f->tail)
        f->tail->next = t;
    else
        f->tasks = t;
    f->tail = t;
    json_t *j = task_json(t, false);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
    dlog(d, LOG_NOTICE, "forge task %u opened by %s: %s (%s %s), generator %s, %zu test%s",
         t->id, proposer ? proposer : "?", proto, plugin, create ? "new" : version, gen,
         json_array_size(tests), json_array_size(tests) == 1 ? "" : "s");
    return j;
}

/* The kernel's forge hook: a plugin opened a task through the host API. */
int forge_hook(void *arg, const char *proto, const char *plugin, const char *request,
               char **reply)
{
    a4psd *d = arg;
    json_error_t je;
    json_t *req = json_loads(request, 0, &je);
    char err[KERNEL_ERRLEN], who[160];
    if (!json_is_object(req)) {
        json_decref(req);
        if (asprintf(reply, "forge: the request is not a JSON object: %s", je.text) < 0)
            *reply = NULL;
        return A4PS_EINVAL;
    }
    snprintf(who, sizeof who, "plugin %s on proto %s", plugin ? plugin : "?",
             proto ? proto : "(none)");
    json_t *t = d->forge ? forge_task_open(d, req, who, err, sizeof err) : NULL;
    if (!d->forge)
        snprintf(err, sizeof err, "forge: not running yet");
    json_decref(req);
    if (!t) {
        *reply = strdup(err);
        return strstr(err, "no proto") ? A4PS_ENOENT : A4PS_EINVAL;
    }
    *reply = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    return *reply ? A4PS_OK : A4PS_ENOMEM;
}

json_t *forge_tasks(a4psd *d)
{
    dforge *f = d->forge;
    json_t *a = json_array();
    pthread_mutex_lock(&f->lock);
    for (ftask *t = f->tasks; t; t = t->next)
        json_array_append_new(a, task_json(t, false));
    pthread_mutex_unlock(&f->lock);
    return a;
}

json_t *forge_task(a4psd *d, unsigned id)
{
    dforge *f = d->forge;
    json_t *j = NULL;
    pthread_mutex_lock(&f->lock);
    for (ftask *t = f->tasks; t; t = t->next)
        if (t->id == id)
            j = task_json(t, true);
    pthread_mutex_unlock(&f->lock);
    if (!j && id < f->next_id) {
        /* Trimmed from memory: its record is on disk. */
        ftask *t = task_load(f->dir, id);
        if (t) {
            j = task_json(t, true);
            task_free(t);
        }
    }
    return j;
}

int forge_cancel(a4psd *d, unsigned id)
{
    dforge *f = d->forge;
    int rc = -1;
    ending e = {0};
    pthread_mutex_lock(&f->lock);
    for (ftask *t = f->tasks; t; t = t->next)
        if (t->id == id && (!strcmp(t->state, "queued") || !strcmp(t->state, "running"))) {
            t->cancel = true;
            /* A queued one ends here, recorded and announced like any other
             * end; the forge thread never takes it. */
            if (!strcmp(t->state, "queued"))
                task_end_locked(t, "cancelled", "cancelled before it started", &e);
            rc = 0;
        }
    pthread_mutex_unlock(&f->lock);
    if (e.line[0])
        task_announce(d, &e);
    return rc;
}
