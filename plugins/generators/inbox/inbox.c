/* inbox.c -- the "inbox" code generator: candidates are C files that a person
 * or an outside agent drops into the forge task's directory.
 *
 * generate (message: the forge's task JSON, with "task" and "dir") replies
 * with the source of the next candidate of that directory not taken yet:
 * regular files named "*.c" (no dot-files, no symlinks), in byte order of
 * their names, each taken once.  It replies A4PS_ENOENT while none waits.
 * Drop a file by rename (write ".x.c.tmp", then mv it to "x.c"), as with the
 * plugin directory: a file is read as soon as it is seen.
 *
 * feedback writes the forge's verdict next to the candidate it concerns, so
 * the person can iterate:  <name>.verdict (one line), <name>.diagnostics
 * (compiler output) and <name>.report.json (the probe's report).
 *
 * Proto state (per task id T, [A-Za-z0-9_-]{1,32}):
 *     "inbox.T"      the name of the last candidate taken
 *     "inbox.T.dir"  the directory it was taken from
 *
 * Global state: one mutex, so that two generate calls of one task never take
 * the same file.  Uses abi/a4ps.h, jansson and libc. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "a4ps.h"
#include "generator.h"

#define INBOX_MAX_SOURCE (1024u * 1024u)  /* bytes of one candidate */
#define CANDIDATE_NAME_MAX 200            /* leaves room for ".report.json" etc. */
#define STATE_VALUE_MAX 4096u             /* a directory path or a file name */
#define VERDICT_MAX 32

static pthread_mutex_t take_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- names ---- */

/* A name the inbox takes as a candidate: a plain file name (no '/', no
 * control bytes), not a dot-file, ending in ".c" after at least one byte. */
static bool candidate_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > CANDIDATE_NAME_MAX || s[0] == '.' || strcmp(s + n - 2, ".c") != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '/' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* ---- files ---- */

/* Write data to name in dfd whole or not at all: a temporary dot-file,
 * renamed over name.  0 or an errno value. */
static int write_file_at(int dfd, const char *name, const char *data, size_t len)
{
    char tmp[CANDIDATE_NAME_MAX + 32];
    snprintf(tmp, sizeof tmp, ".%s.tmp", name);
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return errno;
    int err = 0;
    for (size_t off = 0; off < len && !err;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno != EINTR)
            err = errno;
        else if (w > 0)
            off += (size_t)w;
    }
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && renameat(dfd, tmp, dfd, name) != 0)
        err = errno;
    if (err)
        unlinkat(dfd, tmp, 0);
    return err;
}

/* The smallest candidate name of directory dfd that sorts after last (or
 * any, when last is NULL), copied into out; false when there is none. */
static bool next_candidate(int dfd, const char *last, char out[CANDIDATE_NAME_MAX + 1],
                           int *err)
{
    *err = 0;
    int lfd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = lfd < 0 ? NULL : fdopendir(lfd);
    if (!d) {
        *err = errno;
        if (lfd >= 0)
            close(lfd);
        return false;
    }
    bool found = false;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (!candidate_name(name) || (last && strcmp(name, last) <= 0) ||
            (found && strcmp(name, out) >= 0))
            continue;
        if (e->d_type != DT_REG) {
            struct stat st;
            if (e->d_type != DT_UNKNOWN ||
                fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
                continue;
        }
        memcpy(out, name, strlen(name) + 1);   /* candidate_name() bounds it */
        found = true;
    }
    if (errno)
        *err = errno;
    closedir(d);
    return found;
}

/* Read regular file name of dfd whole into a malloc'd buffer (*len bytes,
 * NUL-terminated).  0, EFBIG when over INBOX_MAX_SOURCE (*len is then a
 * lower bound of its size), EINVAL when not a regular file, or an errno. */
static int read_candidate(int dfd, const char *name, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return EINVAL;
    }
    if ((uint64_t)st.st_size > INBOX_MAX_SOURCE) {
        *len = (size_t)st.st_size;
        close(fd);
        return EFBIG;
    }
    /* Room for one byte past the limit, to tell a file that grew while
     * being read, and for the terminating NUL. */
    size_t cap = INBOX_MAX_SOURCE + 1, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return ENOMEM;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > INBOX_MAX_SOURCE) {
            free(buf);
            close(fd);
            *len = n;
            return EFBIG;
        }
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* ---- generate ---- */

static int task_key(char *key, size_t cap, const char *id, const char *suffix)
{
    return snprintf(key, cap, "inbox.%s%s", id, suffix);
}

/* Take the next candidate of the task's directory; the caller holds
 * take_lock. */
static int take_next(a4ps_ctx *ctx, const char *id, const char *dir)
{
    char key[64], dkey[64];
    task_key(key, sizeof key, id, "");
    task_key(dkey, sizeof dkey, id, ".dir");

    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT) {
        /* The forge names the directory; the person needs it to exist to
         * drop a file there.  Only the last component is created. */
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            return reply_fmt(ctx, A4PS_ERROR, "inbox: cannot create the task directory %s: %s",
                             dir, strerror(errno));
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd < 0)
        return reply_fmt(ctx, A4PS_ERROR, "inbox: cannot open the task directory %s: %s", dir,
                         strerror(errno));

    /* The last name taken counts only in the directory it was taken from. */
    char *last = NULL, *last_dir = NULL;
    int rc = state_str(ctx, key, STATE_VALUE_MAX, &last);
    if (rc == A4PS_OK && (state_str(ctx, dkey, STATE_VALUE_MAX, &last_dir) != A4PS_OK ||
                          strcmp(last_dir, dir) != 0)) {
        free(last);
        last = NULL;
    }
    free(last_dir);
    if (rc != A4PS_OK && rc != A4PS_ENOENT) {
        close(dfd);
        return reply_fmt(ctx, rc, "inbox: cannot read state key %s (%d)", key, rc);
    }

    char name[CANDIDATE_NAME_MAX + 1];
    int err;
    bool found = next_candidate(dfd, last, name, &err);
    if (!found) {
        close(dfd);
        if (err)
            rc = reply_fmt(ctx, A4PS_ERROR, "inbox: cannot list the task directory %s: %s", dir,
                           strerror(err));
        else
            rc = reply_fmt(ctx, A4PS_ENOENT,
                           "inbox: task %s waits for a candidate: drop a .c file into %s%s%s%s",
                           id, dir, last ? " (its name must sort after " : "",
                           last ? last : "", last ? ")" : "");
        free(last);
        return rc;
    }
    free(last);

    char *src;
    size_t len;
    err = read_candidate(dfd, name, &src, &len);
    if (err == ENOMEM || err == EMFILE || err == ENFILE || err == EINTR) {
        close(dfd);
        return reply_fmt(ctx, A4PS_ERROR, "inbox: cannot read candidate %s/%s now: %s", dir,
                         name, strerror(err));
    }
    if (err) {
        /* Refused for good: take it, so that the next file can follow, and
         * tell the person next to it. */
        char why[96];
        if (err == EFBIG)
            snprintf(why, sizeof why, "is over the limit of 1 MiB (at least %zu bytes)", len);
        else if (err == EINVAL || err == ELOOP)
            snprintf(why, sizeof why, "is not a regular file");
        else
            snprintf(why, sizeof why, "cannot be read: %s", strerror(err));
        char line[128], vname[CANDIDATE_NAME_MAX + 16];
        snprintf(line, sizeof line, "refused: the file %s\n", why);
        snprintf(vname, sizeof vname, "%s.verdict", name);
        write_file_at(dfd, vname, line, strlen(line));
        a4ps_set(ctx, key, name, strlen(name));
        a4ps_set(ctx, dkey, dir, strlen(dir));
        close(dfd);
        return reply_fmt(ctx, A4PS_ERROR, "inbox: candidate %s/%s %s", dir, name, why);
    }
    close(dfd);

    rc = a4ps_set(ctx, key, name, strlen(name));
    if (rc == A4PS_OK)
        rc = a4ps_set(ctx, dkey, dir, strlen(dir));
    if (rc != A4PS_OK) {
        free(src);
        return reply_fmt(ctx, rc, "inbox: cannot record candidate %s in state key %s (%d)",
                         name, key, rc);
    }
    ctx->api->log(ctx, A4PS_LOG_INFO, "inbox: task %s took candidate %s/%s (%zu bytes)", id,
                  dir, name, len);
    rc = a4ps_reply(ctx, src, len);
    free(src);
    if (rc != A4PS_OK)
        return reply_fmt(ctx, rc, "inbox: cannot reply with candidate %s (%d)", name, rc);
    return A4PS_OK;
}

static int inbox_generate(a4ps_ctx *ctx, const void *msg, size_t len)
{
    json_t *root;
    char id[TASK_ID_MAX + 1];
    int rc = parse_task(ctx, "inbox", "generate", msg, len, &root, id);
    if (rc != A4PS_OK)
        return rc;
    const char *dir = member_str(root, "dir");
    if (!dir || dir[0] != '/' || strlen(dir) >= STATE_VALUE_MAX) {
        json_decref(root);
        return reply_fmt(ctx, A4PS_EINVAL,
                         "inbox generate: \"dir\" must be the absolute path of the task's "
                         "directory");
    }
    pthread_mutex_lock(&take_lock);
    rc = take_next(ctx, id, dir);
    pthread_mutex_unlock(&take_lock);
    json_decref(root);
    return rc;
}

/* ---- feedback ---- */

static bool valid_verdict(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > VERDICT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= 'a' && v[i] <= 'z') || v[i] == '_'))
            return false;
    return true;
}

/* Write the three files of one verdict next to candidate name in dir. */
static int record_feedback(a4ps_ctx *ctx, json_t *root, const char *dir, const char *name,
                           const char *verdict)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return reply_fmt(ctx, A4PS_ERROR, "inbox feedback: cannot open the task directory %s: %s",
                         dir, strerror(errno));
    const char *failures = member_str(root, "failures");
    const char *diagnostics = member_str(root, "diagnostics");
    json_t *report = json_object_get(root, "report");

    char fail[512] = "";
    if (failures)
        first_line(failures, strlen(failures), fail, sizeof fail);
    char line[sizeof fail + VERDICT_MAX + 8];
    snprintf(line, sizeof line, "%s%s%s\n", verdict, fail[0] ? ": " : "", fail);

    char fname[CANDIDATE_NAME_MAX + 16];
    const char *failed = NULL;
    int err;
    snprintf(fname, sizeof fname, "%s.verdict", name);
    if ((err = write_file_at(dfd, fname, line, strlen(line))) != 0)
        failed = ".verdict";
    if (!failed && diagnostics) {
        snprintf(fname, sizeof fname, "%s.diagnostics", name);
        if ((err = write_file_at(dfd, fname, diagnostics, strlen(diagnostics))) != 0)
            failed = ".diagnostics";
    }
    if (!failed && report && !json_is_null(report)) {
        char *text = json_dumps(report, JSON_INDENT(2) | JSON_ENCODE_ANY);
        if (!text) {
            err = ENOMEM;
            failed = ".report.json";
        } else {
            size_t tl = strlen(text);
            char *withnl = realloc(text, tl + 2);
            if (withnl) {
                text = withnl;
                text[tl++] = '\n';
                text[tl] = '\0';
            }
            snprintf(fname, sizeof fname, "%s.report.json", name);
            if ((err = write_file_at(dfd, fname, text, tl)) != 0)
                failed = ".report.json";
            free(text);
        }
    }
    close(dfd);
    if (failed)
        return reply_fmt(ctx, A4PS_ERROR, "inbox feedback: cannot write %s/%s%s: %s", dir, name,
                         failed, strerror(err));
    return reply_fmt(ctx, A4PS_OK, "ok: %s recorded next to %s/%s", verdict, dir, name);
}

static int inbox_feedback(a4ps_ctx *ctx, const void *msg, size_t len)
{
    json_t *root;
    char id[TASK_ID_MAX + 1];
    int rc = parse_task(ctx, "inbox", "feedback", msg, len, &root, id);
    if (rc != A4PS_OK)
        return rc;
    const char *verdict = member_str(root, "verdict");
    json_t *cand = json_object_get(root, "candidate");
    if (!verdict || !valid_verdict(verdict)) {
        json_decref(root);
        return reply_fmt(ctx, A4PS_EINVAL, "inbox feedback: \"verdict\" must be a word like "
                                           "compile_failed, test_failed, passed, adopted or "
                                           "rolled_back");
    }
    if (cand && !json_is_null(cand) &&
        (!json_is_string(cand) || !candidate_name(json_string_value(cand)))) {
        json_decref(root);
        return reply_fmt(ctx, A4PS_EINVAL, "inbox feedback: \"candidate\" must be the file "
                                           "name of a candidate (like a.c) or null");
    }

    char key[64], dkey[64];
    task_key(key, sizeof key, id, "");
    task_key(dkey, sizeof dkey, id, ".dir");
    char *name = NULL, *dir = NULL;
    if (json_is_string(cand))
        name = strdup(json_string_value(cand));
    else
        state_str(ctx, key, STATE_VALUE_MAX, &name);
    /* The directory the candidate came from; the message's only when this
     * task never took one here. */
    if (state_str(ctx, dkey, STATE_VALUE_MAX, &dir) != A4PS_OK) {
        const char *d = member_str(root, "dir");
        if (d && d[0] == '/')
            dir = strdup(d);
    }
    if (!name || !dir)
        rc = reply_fmt(ctx, A4PS_OK, "ok");   /* nothing of this task came from the inbox */
    else
        rc = record_feedback(ctx, root, dir, name, verdict);
    free(name);
    free(dir);
    json_decref(root);
    return rc;
}

/* ---- self-test and descriptor ---- */

static int inbox_self_test(a4ps_ctx *ctx)
{
    static const char *const good_ids[] = {"7", "task_1-b", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"};
    static const char *const bad_ids[] = {"", "../x", "a/b", "a.b", "a b",
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"};
    static const char *const good_names[] = {"a.c", "candidate-2.c", "x y.c"};
    static const char *const bad_names[] = {".a.c", "a.h", ".c", "a.c.verdict", "a.cc",
                                            "a\n.c", "c"};
    for (size_t i = 0; i < sizeof good_ids / sizeof *good_ids; i++)
        if (!task_id_valid(good_ids[i], strlen(good_ids[i])))
            return A4PS_ERROR;
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
        if (task_id_valid(bad_ids[i], strlen(bad_ids[i])))
            return A4PS_ERROR;
    for (size_t i = 0; i < sizeof good_names / sizeof *good_names; i++)
        if (!candidate_name(good_names[i]))
            return A4PS_ERROR;
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++)
        if (candidate_name(bad_names[i]))
            return A4PS_ERROR;
    char line[8];
    first_line("\nabc\ndef", 8, line, sizeof line);
    if (strcmp(line, "abc") != 0 || !valid_verdict("test_failed") || valid_verdict("x y"))
        return A4PS_ERROR;
    return A4PS_OK;
}

static const a4ps_method inbox_methods[] = {
    {"generate", inbox_generate,
     "the next .c file dropped into the task's dir (name order), or ENOENT while none waits"},
    {"feedback", inbox_feedback,
     "write <name>.verdict, .diagnostics and .report.json next to the candidate"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin inbox_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "inbox",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_GENERATOR,
    .methods = inbox_methods,
    .self_test = inbox_self_test,
    .description = "code generator: candidates are C files dropped into the forge task's "
                   "directory; verdicts are written back next to them",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &inbox_plugin;
}
