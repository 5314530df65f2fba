/* probe.c -- compiling a candidate and probing it, in the sandbox (probe.h).
 *
 * Each call gets a fresh work directory under the sandbox's own, holding
 * only what the run needs (the source, or the candidate and its inputs),
 * and removes it afterwards.  The probe's verdict is believed only when its
 * run ended the way a4ps-probe ends (exit 0 or 1, agreeing with the verdict)
 * and its report names the very file and SHA-256 we gave it; anything else
 * -- a signal, the wall limit, silence, broken JSON -- gets a failing report
 * composed here from what the run left: its exit and the last `stage NAME`
 * line the probe wrote to stderr. */
#define _GNU_SOURCE
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The compiler and the flags the kernel fixes for every candidate, the
 * sandboxed build and the bare baseline alike. */
#define CC_ARGS "/usr/bin/cc", "-std=gnu17", "-O2", "-g0", "-Wall", "-Wextra", "-shared", \
                "-fPIC", "-fvisibility=hidden"

#define CANDIDATE_SRC "candidate.c"
#define CANDIDATE_SO "candidate.so"
#define STATE_FILE "probe-state.bin"
#define CASES_FILE "probe-cases.json"
#define DEFAULT_MS 2000u
#define BARE_OUTPUT_BYTES (16u << 20)
#define STDERR_TAIL 1024
/* Only the probe writes to its stdout and stderr (the candidate's go to
 * /dev/null), and a report on a plugin with many methods runs to megabytes:
 * a caller's smaller output limit would cut it into a false failure. */
#define PROBE_OUTPUT_MIN (16u << 20)

/* How a run of the probe (or the compiler) ended, sandboxed or bare. */
typedef struct run_outcome {
    int exited, status;          /* exited: status is the exit status */
    int signal;                  /* killed by this signal (0: none) */
    int timed_out;               /* killed at the wall limit */
    int truncated;
    uint64_t wall_ms;
    const char *out, *errout;
    size_t outlen, errlen;
} run_outcome;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Files ---- */

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            errno = e ? e : EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || close(fd) != 0)
        return -1;
    return 0;
}

static int read_file(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        errno = buf ? EIO : ENOMEM;
        return -1;
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    return 0;
}

/* Write data to path by rename, so a watcher of path's directory never sees
 * half a file. */
static int install_file(const char *path, const char *data, size_t len, char *err,
                        size_t errlen)
{
    char *tmp;
    if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    close(fd);
    if (write_file(tmp, data, len, 0644) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

static int sha256_hex(const char *buf, size_t len, char hex[65])
{
    unsigned char md[32];
    unsigned int n = 32;
    if (!EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL))
        return -1;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* ---- Judging a run ---- */

/* The stage named by the last `stage NAME` line of the probe's stderr, or
 * NULL if it never wrote one (it did not start). */
static char *last_stage(const char *errout, size_t len)
{
    char *found = NULL;
    const char *p = errout, *end = errout ? errout + len : NULL;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 6 && n < 70 && !memcmp(p, "stage ", 6)) {
            free(found);
            found = strndup(p + 6, n - 6);
        }
        p = nl ? nl + 1 : end;
    }
    return found;
}

/* The end of stderr without the stage lines: what the probe (or runsc)
 * said when it could not run. */
static char *stderr_tail(const char *errout, size_t len)
{
    char *buf = malloc(len + 1);
    size_t o = 0;
    const char *p = errout, *end = errout ? errout + len : NULL;
    while (buf && p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (!(n > 6 && !memcmp(p, "stage ", 6))) {
            memcpy(buf + o, p, n);
            o += n;
        }
        p += n;
    }
    if (!buf)
        return strdup("");
    while (o && (buf[o - 1] == '\n' || buf[o - 1] == ' '))
        o--;
    buf[o] = 0;
    if (o > STDERR_TAIL) {
        memmove(buf, buf + o - STDERR_TAIL, STDERR_TAIL + 1);
        o = STDERR_TAIL;
    }
    /* Valid UTF-8 for JSON: bytes outside ASCII become '?'. */
    for (size_t i = 0; i < o; i++)
        if ((unsigned char)buf[i] >= 0x80 || (buf[i] < 0x20 && buf[i] != '\n' && buf[i] != '\t'))
            buf[i] = '?';
    return buf;
}

/* The probe's own report, if it may be believed: exit 0 or 1 agreeing with
 * its verdict, and naming our file and hash.  Returns the verdict (1 pass,
 * 0 fail) or -1 with why. */
static int believe(const run_outcome *o, const char *file, const char *sha, char *why,
                   size_t whylen)
{
    if (!o->exited || (o->status != 0 && o->status != 1)) {
        snprintf(why, whylen, "not a probe's exit");
        return -1;
    }
    if (!o->outlen) {
        snprintf(why, whylen, "the probe exited with status %d without a report", o->status);
        return -1;
    }
    json_error_t je;
    json_t *j = json_loadb(o->out, o->outlen, 0, &je);
    if (!j) {
        snprintf(why, whylen, "the probe's report is not valid JSON (%s at byte %d)%s", je.text,
                 je.position, o->truncated ? "; its output was cut at the sandbox's limit" : "");
        return -1;
    }
    const char *verdict = json_string_value(json_object_get(j, "verdict"));
    const char *jf = json_string_value(json_object_get(j, "file"));
    const char *js = json_string_value(json_object_get(j, "sha256"));
    int rc = -1;
    if (!json_is_object(j) || json_integer_value(json_object_get(j, "probe")) != 1 || !verdict ||
        (strcmp(verdict, "pass") && strcmp(verdict, "fail")))
        snprintf(why, whylen, "the probe's output is not a probe report");
    else if (!jf || strcmp(jf, file) || !js || strcmp(js, sha))
        snprintf(why, whylen, "the report names %s (sha256 %.16s), not the candidate %s "
                 "(sha256 %.16s)", jf ? jf : "no file", js ? js : "none", file, sha);
    else if ((o->status == 0) != !strcmp(verdict, "pass"))
        snprintf(why, whylen, "the report's verdict (%s) contradicts the probe's exit status %d",
                 verdict, o->status);
    else
        rc = !strcmp(verdict, "pass");
    json_decref(j);
    return rc;
}

static const char *signame(int sig)
{
    const char *n = sigabbrev_np(sig);
    return n ? n : "unknown";
}

/* Decide what a run of the probe means; see probe.h.  Fills *report. */
static int judge(const run_outcome *o, const char *file, const char *sha, unsigned wall_ms,
                 char **report, char *err, size_t errlen)
{
    char *stage = last_stage(o->errout, o->errlen);
    char *tail = stderr_tail(o->errout, o->errlen);
    int rc;
    if (!stage && !o->timed_out) {
        snprintf(err, errlen, "a4ps-probe did not start%s%s", tail[0] ? ": " : "", tail);
        rc = -1;
        goto out;
    }
    if (o->exited && o->status == 2) {
        snprintf(err, errlen, "a4ps-probe refused to run: %s", tail[0] ? tail : "(no message)");
        rc = -1;
        goto out;
    }
    char why[600];
    rc = believe(o, file, sha, why, sizeof why);
    if (rc >= 0) {
        *report = strndup(o->out, o->outlen);
        if (!*report) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
        goto out;
    }
    /* Compose: how the probe ended, and where. */
    const char *where = stage ? stage : "start";
    json_t *ex;
    if (o->timed_out) {
        snprintf(why, sizeof why, "the probe did not finish within %u ms (the sandbox's wall "
                 "limit) and was killed during stage %s", wall_ms, where);
        ex = json_pack("{s:b}", "timed_out", 1);
    } else if (o->signal) {
        snprintf(why, sizeof why, "the probe died with signal %d (SIG%s) during stage %s",
                 o->signal, signame(o->signal), where);
        char nm[32];
        snprintf(nm, sizeof nm, "SIG%s", signame(o->signal));
        ex = json_pack("{s:i, s:s}", "signal", o->signal, "name", nm);
    } else if (o->exited && o->status != 0 && o->status != 1) {
        snprintf(why, sizeof why, "the probe exited with status %d during stage %s", o->status,
                 where);
        ex = json_pack("{s:i}", "status", o->status);
    } else {
        size_t n = strlen(why);
        snprintf(why + n, sizeof why - n, " (stage %s)", where);
        ex = json_pack("{s:i}", "status", o->status);
    }
    json_t *j = json_pack(
        "{s:i, s:s, s:s, s:s, s:s, s:n, s:[{s:s, s:b, s:I, s:s}], s:[], s:[], s:i, s:i, s:I,"
        " s:b, s:s, s:o, s:s}",
        "probe", 1, "file", file, "sha256", sha, "verdict", "fail", "reason", why, "plugin",
        "steps", "step", where, "ok", 0, "ms", (json_int_t)o->wall_ms, "error", why,
        "tests", "denied_syscalls", "passed", 0, "failed", 0, "ms", (json_int_t)o->wall_ms,
        "composed", 1, "stage", where, "exit", ex ? ex : json_null(), "stderr", tail);
    *report = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!*report) {
        snprintf(err, errlen, "cannot compose the report: out of memory");
        rc = -1;
        goto out;
    }
    rc = 0;
out:
    free(stage);
    free(tail);
    return rc;
}

/* ---- Accepting a pass ---- */

static int step_ok(json_t *rep, const char *name)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(rep, "steps"), i, s) {
        const char *n = json_string_value(json_object_get(s, "step"));
        if (n && !strcmp(n, name))
            return json_is_true(json_object_get(s, "ok"));
    }
    return 0;
}

static int test_ok(json_t *rep, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(rep, "tests"), i, t) {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (n && !strcmp(n, name))
            return json_is_true(json_object_get(t, "ok"));
    }
    return 0;
}

/* The checks of probe_report_accept on a parsed report. */
static int accept_report(json_t *rep, json_t *asked, const char *selector, char *why,
                         size_t whylen)
{
    const char *verdict = json_string_value(json_object_get(rep, "verdict"));
    if (!json_is_object(rep) || json_integer_value(json_object_get(rep, "probe")) != 1 ||
        !verdict || strcmp(verdict, "pass")) {
        snprintf(why, whylen, "the report is not a probe's pass");
        return 0;
    }
    if (json_object_get(rep, "composed")) {
        snprintf(why, whylen, "a composed report is never a pass");
        return 0;
    }
    static const char *const steps[] = {"load", "self_test", "describe", "contract", "unload"};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (!step_ok(rep, steps[i])) {
            snprintf(why, whylen, "the report does not show step %s run and ok", steps[i]);
            return 0;
        }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(rep, "steps"), i, e)
        if (!json_is_true(json_object_get(e, "ok"))) {
            snprintf(why, whylen, "the report passes with a failed step");
            return 0;
        }
    json_array_foreach(json_object_get(rep, "tests"), i, e)
        if (!json_is_true(json_object_get(e, "ok"))) {
            snprintf(why, whylen, "the report passes with a failed test");
            return 0;
        }
    json_t *end = json_object_get(json_object_get(rep, "child"), "end");
    if (!json_is_object(end) || json_object_size(end) != 1 ||
        !json_is_integer(json_object_get(end, "status")) ||
        json_integer_value(json_object_get(end, "status")) != 0) {
        snprintf(why, whylen, "the report does not show the candidate's process ending with "
                 "status 0 after its last answer");
        return 0;
    }
    json_t *pl = json_object_get(rep, "plugin");
    const char *name = json_string_value(json_object_get(pl, "name"));
    if (!name || !json_is_string(json_object_get(pl, "version"))) {
        snprintf(why, whylen, "the report names no plugin and version");
        return 0;
    }
    json_t *got = json_object_get(rep, "cases");
    size_t n = json_array_size(asked);
    if (!json_is_array(got) || json_array_size(got) != n) {
        snprintf(why, whylen, "the report lists %zu case%s; %zu were asked",
                 json_array_size(got), json_array_size(got) == 1 ? "" : "s", n);
        return 0;
    }
    json_array_foreach(asked, i, e) {
        json_t *c = json_array_get(got, i);
        json_t *sel = json_object_get(e, "selector"), *in = json_object_get(e, "input");
        json_t *ex = json_object_get(e, "expect"), *st = json_object_get(e, "status");
        char in_sha[65], ex_sha[65];
        sha256_hex(in ? json_string_value(in) : "", in ? json_string_length(in) : 0, in_sha);
        if (ex)
            sha256_hex(json_string_value(ex), json_string_length(ex), ex_sha);
        const char *gs = json_string_value(json_object_get(c, "selector"));
        const char *gi = json_string_value(json_object_get(c, "input_sha256"));
        json_t *ge = json_object_get(c, "expect_sha256");
        if (!json_is_integer(json_object_get(c, "case")) ||
            json_integer_value(json_object_get(c, "case")) != (json_int_t)i || !gs ||
            strcmp(gs, json_string_value(sel)) || !gi || strcmp(gi, in_sha) ||
            (ex ? !json_is_string(ge) || strcmp(json_string_value(ge), ex_sha)
                : !json_is_null(ge)) ||
            !json_is_integer(json_object_get(c, "status")) ||
            json_integer_value(json_object_get(c, "status")) !=
                (st ? json_integer_value(st) : 0)) {
            snprintf(why, whylen, "the report's case %zu is not the case %zu asked (selector "
                     "%s)", i, i, json_string_value(sel));
            return 0;
        }
        if (!json_is_true(json_object_get(c, "ran")) || !json_is_true(json_object_get(c, "passed"))) {
            snprintf(why, whylen, "case %zu (%s) %s", i, json_string_value(sel),
                     json_is_true(json_object_get(c, "ran")) ? "did not pass" : "did not run");
            return 0;
        }
    }
    if (selector) {
        int has = 0;
        json_array_foreach(json_object_get(pl, "methods"), i, e)
            has |= json_is_string(e) && !strcmp(json_string_value(e), selector);
        char contract[300];
        snprintf(contract, sizeof contract, "contract %s/empty", selector);
        if (!has) {
            snprintf(why, whylen, "plugin %s has no method '%s', the selector the task is about",
                     name, selector);
            return 0;
        }
        if (!test_ok(rep, contract)) {
            snprintf(why, whylen, "the report does not show '%s' called and passing", selector);
            return 0;
        }
    }
    return 1;
}

int probe_report_accept(const char *report, const char *cases_json, const char *selector,
                        char *why, size_t whylen)
{
    json_t *asked = cases_json ? json_loads(cases_json, JSON_ALLOW_NUL, NULL) : json_array();
    size_t i;
    json_t *e;
    int bad = !json_is_array(asked);
    json_array_foreach(asked, i, e)
        bad |= !json_is_string(json_object_get(e, "selector")) ||
               (json_object_get(e, "input") && !json_is_string(json_object_get(e, "input"))) ||
               (json_object_get(e, "expect") && !json_is_string(json_object_get(e, "expect"))) ||
               (json_object_get(e, "status") && !json_is_integer(json_object_get(e, "status")));
    if (bad) {
        snprintf(why, whylen, "the cases asked are not a JSON array of cases");
        json_decref(asked);
        return -1;
    }
    json_t *rep = report ? json_loads(report, 0, NULL) : NULL;
    int rc = accept_report(rep, asked, selector, why, whylen);
    json_decref(rep);
    json_decref(asked);
    return rc;
}

/* ---- Preparing a probe run ---- */

/* The name the candidate keeps in the work directory: its own basename when
 * that is a plain file name, so the report names what the caller knows. */
static const char *work_name(const char *so_path)
{
    const char *base = strrchr(so_path, '/');
    base = base ? base + 1 : so_path;
    if (!base[0] || base[0] == '.' || strlen(base) > 200 || !strcmp(base, STATE_FILE) ||
        !strcmp(base, CASES_FILE))
        return CANDIDATE_SO;
    for (const char *c = base; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-' || *c == '+'))
            return CANDIDATE_SO;
    return base;
}

typedef struct probe_args {
    const char *argv[16];
    char call[16], hook[16], state[4200], cases[4200], plugin[4200];
} probe_args;

/* Put the candidate and its inputs in workdir and build the probe's argv;
 * paths in it are under `seen_as` (/work in the sandbox, workdir bare).
 * Fills file and sha with what the report must name. */
static int prepare(const probe_request *rq, const char *probe, const char *workdir,
                   const char *seen_as, probe_args *a, char *file, size_t filelen,
                   char sha[65], char *err, size_t errlen)
{
    char *so;
    size_t so_len;
    char path[4200];
    if (!rq || !rq->so_path) {
        snprintf(err, errlen, "probe: no candidate given");
        return -1;
    }
    if (read_file(rq->so_path, 256u << 20, &so, &so_len) != 0) {
        snprintf(err, errlen, "probe: cannot read the candidate %s: %s", rq->so_path,
                 strerror(errno));
        return -1;
    }
    snprintf(file, filelen, "%s", work_name(rq->so_path));
    sha256_hex(so, so_len, sha);
    snprintf(path, sizeof path, "%s/%s", workdir, file);
    int rc = write_file(path, so, so_len, 0644);
    free(so);
    if (rc != 0) {
        snprintf(err, errlen, "probe: cannot copy the candidate to %s: %s", path, strerror(errno));
        return -1;
    }
    int n = 0;
    a->argv[n++] = probe;
    snprintf(a->call, sizeof a->call, "%u", rq->call_ms ? rq->call_ms : DEFAULT_MS);
    snprintf(a->hook, sizeof a->hook, "%u", rq->hook_ms ? rq->hook_ms : DEFAULT_MS);
    a->argv[n++] = "--call-ms";
    a->argv[n++] = a->call;
    a->argv[n++] = "--hook-ms";
    a->argv[n++] = a->hook;
    if (rq->state) {
        snprintf(path, sizeof path, "%s/%s", workdir, STATE_FILE);
        if (write_file(path, rq->state, rq->state_len, 0644) != 0) {
            snprintf(err, errlen, "probe: cannot write %s: %s", path, strerror(errno));
            return -1;
        }
        snprintf(a->state, sizeof a->state, "%s/%s", seen_as, STATE_FILE);
        a->argv[n++] = "--state";
        a->argv[n++] = a->state;
    }
    if (rq->cases_json) {
        snprintf(path, sizeof path, "%s/%s", workdir, CASES_FILE);
        if (write_file(path, rq->cases_json, strlen(rq->cases_json), 0644) != 0) {
            snprintf(err, errlen, "probe: cannot write %s: %s", path, strerror(errno));
            return -1;
        }
        snprintf(a->cases, sizeof a->cases, "%s/%s", seen_as, CASES_FILE);
        a->argv[n++] = "--cases";
        a->argv[n++] = a->cases;
    }
    snprintf(a->plugin, sizeof a->plugin, "%s/%s", seen_as, file);
    a->argv[n++] = a->plugin;
    a->argv[n] = NULL;
    return 0;
}

static void outcome_from_sandbox(const sandbox_result *r, run_outcome *o)
{
    memset(o, 0, sizeof *o);
    o->timed_out = r->timed_out;
    /* runsc exits 128+N when the container's process died of signal N. */
    if (r->exited && r->status > 128 && r->status <= 128 + 64) {
        o->signal = r->status - 128;
    } else {
        o->exited = r->exited;
        o->status = r->status;
    }
    o->truncated = r->truncated;
    o->wall_ms = r->wall_ms;
    o->out = r->out;
    o->outlen = r->outlen;
    o->errout = r->errout;
    o->errlen = r->errlen;
}

/* ---- In the sandbox ---- */

int sandbox_probe(sandbox *sb, const probe_request *rq, const sandbox_limits *lim,
                  char **report, char *err, size_t errlen)
{
    *report = NULL;
    char work[4096], file[256], sha[65];
    if (sandbox_work_create(sb, work, sizeof work, err, errlen) != 0)
        return -1;
    probe_args a;
    int rc = prepare(rq, SANDBOX_PROBE_MOUNT "/" SANDBOX_PROBE_NAME, work, "/work", &a, file,
                     sizeof file, sha, err, errlen);
    if (rc == 0) {
        sandbox_limits l = *lim;
        if (l.output_bytes < PROBE_OUTPUT_MIN)
            l.output_bytes = PROBE_OUTPUT_MIN;
        sandbox_result r;
        rc = sandbox_run(sb, work, a.argv, &l, &r, err, errlen);
        if (rc == 0) {
            run_outcome o;
            outcome_from_sandbox(&r, &o);
            rc = judge(&o, file, sha, lim->wall_ms, report, err, errlen);
            sandbox_result_free(&r);
        }
    }
    sandbox_work_remove(work);
    return rc;
}

static char *diagnostics_of(const run_outcome *o, unsigned wall_ms)
{
    char *d = NULL;
    if (asprintf(&d, "%.*s%s%.*s%s%s", (int)o->errlen, o->errout ? o->errout : "",
                 o->errlen && o->outlen ? "\n" : "", (int)o->outlen, o->out ? o->out : "",
                 o->truncated ? "\n[compiler output cut at the sandbox's limit]" : "",
                 o->timed_out ? "\n[the compiler did not finish within the wall limit and "
                                "was killed]" : "") < 0)
        return NULL;
    (void)wall_ms;
    return d;
}

/* 0 compiled (copied to out_so), 1 did not, -1 err. */
static int compile_result(const run_outcome *o, const char *work, const char *out_so,
                          unsigned wall_ms, char **diagnostics, char *err, size_t errlen)
{
    *diagnostics = diagnostics_of(o, wall_ms);
    if (!*diagnostics) {
        snprintf(err, errlen, "compile: out of memory");
        return -1;
    }
    if (o->timed_out || !o->exited || o->status != 0)
        return 1;
    char path[4200], *so;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", work, CANDIDATE_SO);
    if (read_file(path, 256u << 20, &so, &len) != 0)
        return 1;                /* cc said yes, but left nothing usable */
    int rc = install_file(out_so, so, len, err, errlen);
    free(so);
    return rc == 0 ? 0 : -1;
}

int sandbox_compile(sandbox *sb, const char *source, size_t len, const char *out_so,
                    const sandbox_limits *lim, char **diagnostics, char *err, size_t errlen)
{
    *diagnostics = NULL;
    char work[4096], path[4200];
    if (sandbox_work_create(sb, work, sizeof work, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", work, CANDIDATE_SRC);
    int rc = -1;
    if (write_file(path, source, len, 0644) != 0) {
        snprintf(err, errlen, "compile: cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    static const char *const argv[] = {
        CC_ARGS, "-I" SANDBOX_ABI_MOUNT, "-o", "/work/" CANDIDATE_SO, "/work/" CANDIDATE_SRC,
        NULL};
    sandbox_result r;
    if (sandbox_run(sb, work, argv, lim, &r, err, errlen) != 0)
        goto out;
    run_outcome o;
    outcome_from_sandbox(&r, &o);
    rc = compile_result(&o, work, out_so, lim->wall_ms, diagnostics, err, errlen);
    sandbox_result_free(&r);
out:
    sandbox_work_remove(work);
    return rc;
}

int sandbox_probe_check(const char *probe_dir, char *err, size_t errlen)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", probe_dir, SANDBOX_PROBE_NAME);
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "probe: %s: %s (build the a4ps-probe target, or install it)", path,
                 strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXOTH)) {
        snprintf(err, errlen, "probe: %s is not a file every user may execute (the sandbox "
                 "runs it as an unprivileged user)", path);
        return -1;
    }
    return 0;
}

/* ---- Bare runs: the benchmark's baseline, never a verification ---- */

static void keep(char **buf, size_t *len, const char *data, size_t n, int *cut)
{
    if (*len + n > BARE_OUTPUT_BYTES) {
        *cut = 1;
        n = *len < BARE_OUTPUT_BYTES ? BARE_OUTPUT_BYTES - *len : 0;
    }
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return;
    memcpy(nb + *len, data, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
}

/* fork/exec argv in cwd with a minimal environment, collecting its output;
 * killed (its whole process group) after wall_ms. */
static int run_child(const char *const *argv, const char *cwd, const char *tmpdir,
                     unsigned wall_ms, run_outcome *o, char **out, char **errout, char *err,
                     size_t errlen)
{
    memset(o, 0, sizeof *o);
    *out = *errout = NULL;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(pe, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(po[0]);
        close(po[1]);
        return -1;
    }
    char tmpenv[4200];
    snprintf(tmpenv, sizeof tmpenv, "TMPDIR=%s", tmpdir);
    char *const envp[] = {"PATH=/usr/bin:/bin", tmpenv, NULL};
    uint64_t t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        if (chdir(cwd) == 0)
            execve(argv[0], (char *const *)argv, envp);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    size_t outlen = 0, errlen_ = 0;
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds) {
        uint64_t el = now_ms() - t0;
        if (wall_ms && el >= wall_ms && !o->timed_out) {
            o->timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
        int n = poll(fds, 2, o->timed_out ? 1000 : wall_ms ? (int)(wall_ms - el) : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (n == 0 && o->timed_out)
            break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            } else if (i == 0) {
                keep(out, &outlen, buf, (size_t)r, &o->truncated);
            } else {
                keep(errout, &errlen_, buf, (size_t)r, &o->truncated);
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int st = 0;
    waitpid(pid, &st, 0);
    o->wall_ms = now_ms() - t0;
    if (WIFEXITED(st)) {
        o->exited = 1;
        o->status = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st) && !o->timed_out) {
        o->signal = WTERMSIG(st);
    }
    o->out = *out;
    o->outlen = outlen;
    o->errout = *errout;
    o->errlen = errlen_;
    return 0;
}

static int bare_workdir(char *path, size_t len, char *err, size_t errlen)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, len, "%s/a4ps-bare-XXXXXX", tmp && tmp[0] == '/' ? tmp : "/tmp");
    if (!mkdtemp(path)) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int probe_run_bare(const char *probe_path, const probe_request *rq, unsigned wall_ms,
                   char **report, char *err, size_t errlen)
{
    *report = NULL;
    char work[4096], file[256], sha[65];
    if (bare_workdir(work, sizeof work, err, errlen) != 0)
        return -1;
    probe_args a;
    int rc = prepare(rq, probe_path, work, work, &a, file, sizeof file, sha, err, errlen);
    if (rc == 0) {
        run_outcome o;
        char *out, *eo;
        rc = run_child(a.argv, work, work, wall_ms, &o, &out, &eo, err, errlen);
        if (rc == 0)
            rc = judge(&o, file, sha, wall_ms, report, err, errlen);
        free(out);
        free(eo);
    }
    sandbox_work_remove(work);
    return rc;
}

int probe_compile_bare(const char *abi_dir, const char *source, size_t len, const char *out_so,
                       unsigned wall_ms, char **diagnostics, char *err, size_t errlen)
{
    *diagnostics = NULL;
    char work[4096], path[4200], inc[4200], so[4200];
    if (bare_workdir(work, sizeof work, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", work, CANDIDATE_SRC);
    snprintf(inc, sizeof inc, "-I%s", abi_dir);
    snprintf(so, sizeof so, "%s/%s", work, CANDIDATE_SO);
    int rc = -1;
    if (write_file(path, source, len, 0644) != 0) {
        snprintf(err, errlen, "compile: cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    const char *const argv[] = {CC_ARGS, inc, "-o", so, path, NULL};
    run_outcome o;
    char *out, *eo;
    if (run_child(argv, work, work, wall_ms, &o, &out, &eo, err, errlen) == 0) {
        rc = compile_result(&o, work, out_so, wall_ms, diagnostics, err, errlen);
        free(out);
        free(eo);
    }
out:
    sandbox_work_remove(work);
    return rc;
}
