/* ctl.c -- the control socket: JSON lines over a Unix socket.
 *
 * The loop thread accepts, checks each peer's uid with SO_PEERCRED, reads
 * request lines and writes replies, never blocking on a client.  Requests
 * that run kernel code (send above all, whose method may take its time) go
 * to the worker threads, so one slow call never holds up the others; a
 * client's requests are answered in order, one at a time.  A line that is not
 * JSON, too long, or not complete within request_timeout_ms of its first byte
 * gets an error reply; the daemon never waits for a client.  The protocol is
 * documented in README.md.
 *
 * Connections are a bounded resource (limits.max_clients), so no client may
 * keep one for nothing: a connection without a request for idle_timeout_ms
 * is closed, and when every slot is taken the one idle the longest gives way
 * to the newcomer (nginx reuses its keep-alive connections so).  Only idle
 * ones: a request being sent or run, and an event stream (`events
 * --follow`, never idle, as redis exempts its subscribers), keep theirs; if
 * none is idle the newcomer is refused with a line saying why.  Refusals and
 * closings are counted for status and logged rate-limited, so a flood of
 * connections cannot flood the log. */
#define _GNU_SOURCE
#include "daemon/daemon.h"
#include "daemon/journal.h"

#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#ifdef A4PS_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define FOLLOW_MAX_BUFFER (4u << 20)   /* a follower this far behind is dropped */
#define STREAM_MAX 4096                /* events waiting for the loop */
#define AUDIT_PENDING_MAX 10000        /* audit events waiting for a snapshot */
#define WBUF_PAUSE (1u << 20)          /* stop reading a client this far behind */
#define SHUTDOWN_WAIT_S 20             /* for calls in flight at SIGTERM */
#define RATELOG_MS 10000               /* one line per kind of refusal per this */

struct client {
    client *next;
    uint64_t id;
    int fd;
    uid_t uid;
    char *rbuf;
    size_t rlen, rcap;
    char *wbuf;
    size_t wlen, woff, wcap;
    bool busy;                   /* a job of ours is with the workers */
    bool follow;
    bool closing;                /* close once wbuf is written */
    bool draining;               /* written and shut down: discarding input until EOF */
    bool hup;                    /* hung up while busy: out of epoll until the job ends */
    uint64_t last_ms;            /* last sign of life: accepted, a request, a reply
                                    written (draining: since it began) */
    uint64_t req_ms;             /* the first byte of the partial request in rbuf */
};

struct job {
    job *next;
    uint64_t client_id;
    json_t *req;
    char *line;                  /* the reply, '\n'-terminated */
    a4psd *d;                    /* for a reply the journal hands back */
};


static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Text from a plugin as a JSON string: invalid UTF-8 becomes U+FFFD rather
 * than a reply jansson refuses to encode. */
static json_t *json_text(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (j)
        return j;
    char *out = malloc(n * 3 + 1);
    if (!out)
        return json_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        size_t len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
        json_t *probe = len && i + len <= n && ch ? json_stringn(s + i, len) : NULL;
        if (probe) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
            json_decref(probe);
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(out, o);
    free(out);
    return j ? j : json_string("");
}

static char *line_of(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s)
        return strdup("{\"ok\":false,\"code\":\"failed\",\"error\":\"out of memory\"}\n");
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = 0;
    return line;
}

static char *ok_line(json_t *result)
{
    return line_of(json_pack("{s:b, s:o}", "ok", 1, "result", result ? result : json_null()));
}

static char *err_line(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *err_line(const char *code, const char *fmt, ...)
{
    char msg[KERNEL_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return line_of(json_pack("{s:b, s:s, s:o}", "ok", 0, "code", code, "error",
                             json_text(msg, strlen(msg))));
}

/* ---- Writing ---- */

static void client_close(a4psd *d, client *c)
{
    if (c->fd < 0)
        return;
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    for (client **pp = &d->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_mutex_lock(&d->mx);
    d->nclients--;
    pthread_mutex_unlock(&d->mx);
    c->next = d->graveyard;
    d->graveyard = c;
}

static void client_want(a4psd *d, client *c)
{
    if (c->hup)
        return;
    uint32_t ev = 0;
    /* No reading while replies pile up unread: a client that pipelines
     * requests and never reads cannot grow our memory. */
    if ((!c->closing && !c->busy && !d->stopping && c->wlen - c->woff < WBUF_PAUSE) ||
        c->draining)
        ev |= EPOLLIN;
    if (c->wlen > c->woff)
        ev |= EPOLLOUT;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void client_flush(a4psd *d, client *c)
{
    while (c->woff < c->wlen) {
        ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0) {
            client_close(d, c);
            return;
        }
        c->woff += (size_t)w;
        c->last_ms = now_ms();   /* a reply being read is no idleness */
    }
    if (c->woff == c->wlen) {
        c->woff = c->wlen = 0;
        if (c->closing && !c->draining) {
            /* Closing a Unix socket with unread input resets the peer, which
             * may then never read our last reply: shut down our side and
             * discard what it still sends until it closes (or the tick gives
             * up on it). */
            if (c->rlen == 0 && !c->busy) {
                client_close(d, c);
                return;
            }
            shutdown(c->fd, SHUT_WR);
            c->draining = true;
            c->rlen = 0;
            c->last_ms = now_ms();
        }
    }
    client_want(d, c);
}

static void client_write(a4psd *d, client *c, char *line)
{
    if (!line || c->fd < 0) {
        free(line);
        return;
    }
    size_t n = strlen(line);
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 4096;
        while (cap < c->wlen + n)
            cap *= 2;
        char *nb = realloc(c->wbuf, cap);
        if (!nb) {
            free(line);
            client_close(d, c);
            return;
        }
        c->wbuf = nb;
        c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, line, n);
    c->wlen += n;
    free(line);
    client_flush(d, c);
}

/* ---- Requests ---- */

static const char *const commands =
    "status, list, explain, history, rollback, send, reload, snapshot, events, stats, "
    "forge, tasks, task, cancel, destroy, image";

static json_t *status_json(a4psd *d)
{
    char *s = kernel_status(d->k);
    json_t *j = s ? json_loads(s, 0, NULL) : NULL;
    free(s);
    if (!j)
        return NULL;
    pthread_mutex_lock(&d->mx);
    json_t *info = json_pack("{s:I, s:s, s:s?, s:s, s:I, s:i, s:i, s:s, s:s?, s:I, s:s?}", "pid",
                             (json_int_t)getpid(), "config", d->cfg->path, "config_error",
                             d->config_error, "plugin_dir", d->cfg->plugin_dir, "uptime_s",
                             (json_int_t)(time(NULL) - d->started), "workers", d->nworkers,
                             "clients", d->nclients, "log_level",
                             dconfig_level_name(__atomic_load_n(&d->level, __ATOMIC_RELAXED)),
                             "image", d->cfg->image, "last_snapshot",
                             (json_int_t)d->last_snapshot, "snapshot_error", d->snapshot_error);
    pthread_mutex_unlock(&d->mx);
#define CTLCOUNT(f) (json_int_t) __atomic_load_n(&d->ctlcount.f, __ATOMIC_RELAXED)
    json_object_set_new(info, "control",
                        json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "max_clients",
                                  d->cfg->max_clients, "idle_timeout_ms",
                                  (json_int_t)d->cfg->idle_timeout_ms, "accepted",
                                  CTLCOUNT(accepted), "refused_full", CTLCOUNT(refused_full),
                                  "refused_uid", CTLCOUNT(refused_uid), "evicted",
                                  CTLCOUNT(evicted), "idle_closed", CTLCOUNT(idle_closed),
                                  "timed_out", CTLCOUNT(timed_out)));
#undef CTLCOUNT
    json_object_set_new(info, "journal", journal_status(d->journal));
    json_object_set_new(info, "unrestorable", damage_status(d));   /* damage.c */
    json_object_set_new(j, "daemon", info);
    json_object_set_new(j, "sandbox", verify_status(d));
    json_object_set_new(j, "confinement", confine_status(&d->conf));
    return j;
}

static json_t *stats_json(a4psd *d)
{
    json_t *alloc;
#ifdef A4PS_JEMALLOC
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    alloc = json_object();
    json_object_set_new(alloc, "allocator", json_string("jemalloc " JEMALLOC_VERSION));
    static const char *keys[] = {"stats.allocated", "stats.active", "stats.metadata",
                                 "stats.resident", "stats.mapped", "stats.retained"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        size_t v = 0, vs = sizeof v;
        if (mallctl(keys[i], &v, &vs, NULL, 0) == 0)
            json_object_set_new(alloc, keys[i] + 6, json_integer((json_int_t)v));
    }
    unsigned narenas = 0;
    sz = sizeof narenas;
    if (mallctl("arenas.narenas", &narenas, &sz, NULL, 0) == 0)
        json_object_set_new(alloc, "arenas", json_integer(narenas));
#else
    alloc = json_pack("{s:s}", "allocator", "the C library's (sanitizer builds do not link jemalloc)");
#endif
    json_t *st = status_json(d);
    json_t *out = json_pack("{s:o, s:O?, s:O?}", "memory", alloc, "kernel",
                            st ? json_object_get(st, "stats") : NULL, "events",
                            st ? json_object_get(st, "events") : NULL);
    json_decref(st);
    return out;
}

static const char *req_str(json_t *req, const char *key)
{
    json_t *v = json_object_get(req, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Runs on a worker thread. */
static char *exec_request(a4psd *d, json_t *req)
{
    const char *cmd = req_str(req, "cmd");
    if (!strcmp(cmd, "status")) {
        json_t *j = status_json(d);
        return j ? ok_line(j) : err_line("failed", "status: out of memory");
    }
    if (!strcmp(cmd, "list")) {
        json_t *st = status_json(d);
        json_t *out = json_array();
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(st, "protos"), i, p)
            json_array_append_new(out, json_pack("{s:O, s:O, s:O}", "name",
                                                 json_object_get(p, "name"), "plugin",
                                                 json_object_get(p, "plugin"), "version",
                                                 json_object_get(p, "version")));
        json_decref(st);
        return ok_line(out);
    }
    if (!strcmp(cmd, "stats"))
        return ok_line(stats_json(d));
    if (!strcmp(cmd, "explain")) {
        const char *proto = req_str(req, "proto");
        if (!proto)
            return err_line("bad_request", "explain: \"proto\" (a string) is required");
        char *e = kernel_explain(d->k, proto);
        json_t *j = e ? json_loads(e, 0, NULL) : NULL;
        free(e);
        if (!j)
            return err_line("not_found", "explain: no proto named '%s'", proto);
        return ok_line(j);
    }
    if (!strcmp(cmd, "history")) {
        const char *proto = req_str(req, "proto");
        if (!proto)
            return err_line("bad_request", "history: \"proto\" (a string) is required");
        char *h = kernel_history(d->k, proto);
        json_t *j = h ? json_loads(h, 0, NULL) : NULL;
        free(h);
        return j ? ok_line(j) : err_line("not_found", "history: no proto named '%s'", proto);
    }
    if (!strcmp(cmd, "rollback")) {
        const char *proto = req_str(req, "proto"), *version = req_str(req, "version");
        if (!proto)
            return err_line("bad_request", "rollback: \"proto\" (a string) is required, "
                            "\"version\" optional (default: the previous one)");
        char err[KERNEL_ERRLEN];
        int rc = version ? kernel_rollback_to(d->k, proto, version, err, sizeof err)
                         : kernel_rollback(d->k, proto, err, sizeof err);
        if (rc)
            return err_line(rc == A4PS_ENOENT ? "not_found" : "failed", "%s", err);
        char *h = kernel_history(d->k, proto);
        json_t *j = h ? json_loads(h, 0, NULL) : NULL;
        free(h);
        json_t *res = json_pack("{s:s, s:O?}", "proto", proto, "version",
                                j ? json_object_get(j, "version") : NULL);
        json_decref(j);
        return ok_line(res);
    }
    if (!strcmp(cmd, "send")) {
        const char *proto = req_str(req, "proto"), *sel = req_str(req, "selector");
        json_t *pl = json_object_get(req, "payload");
        if (!proto || !sel)
            return err_line("bad_request", "send: \"proto\" and \"selector\" (strings) are required");
        if (pl && !json_is_string(pl))
            return err_line("bad_request", "send: \"payload\" must be a string");
        const char *msg = pl ? json_string_value(pl) : "";
        size_t len = pl ? json_string_length(pl) : 0;
        kernel_reply r = {0};
        int rc = kernel_send(d->k, proto, sel, msg, len, &r);
        char *line;
        if (rc == A4PS_OK) {
            line = ok_line(json_pack("{s:i, s:o}", "status", rc, "reply", json_text(r.data, r.len)));
        } else {
            const char *code = rc == A4PS_ENOENT && r.len && !strncmp(r.data, "no proto named", 14)
                                   ? "not_found" : "failed";
            json_t *e = json_text(r.data, r.len);
            /* A plugin's own words rarely say its state write was refused
             * because the journal cannot be written: the daemon does. */
            char *je = journal_error(d->journal);
            if (je) {
                char *both = NULL;
                if (asprintf(&both, "%s (the journal cannot be written, so no change is "
                             "accepted: %s)", json_string_value(e) ? json_string_value(e) : "",
                             je) >= 0) {
                    json_decref(e);
                    e = json_string(both);
                    free(both);
                }
                free(je);
                code = "not_durable";
            }
            line = line_of(json_pack("{s:b, s:s, s:i, s:o}", "ok", 0, "code", code, "status", rc,
                                     "error", e));
        }
        kernel_reply_free(&r);
        return line;
    }
    if (!strcmp(cmd, "forge")) {
        char err[KERNEL_ERRLEN];
        json_t *t = forge_task_open(d, req, "the operator (a4psctl)", err, sizeof err);
        return t ? ok_line(t) : err_line(strstr(err, "refused") ? "unavailable" :
                                         strstr(err, "no proto") ? "not_found" : "bad_request",
                                         "%s", err);
    }
    if (!strcmp(cmd, "tasks"))
        return ok_line(forge_tasks(d));
    if (!strcmp(cmd, "task") || !strcmp(cmd, "cancel")) {
        json_t *id = json_object_get(req, "id");
        if (!json_is_integer(id) || json_integer_value(id) <= 0)
            return err_line("bad_request", "%s: \"id\" (a task number) is required", cmd);
        unsigned n = (unsigned)json_integer_value(id);
        if (!strcmp(cmd, "cancel") && forge_cancel(d, n) != 0)
            return err_line("not_found", "cancel: no queued or running task %u", n);
        json_t *t = forge_task(d, n);
        return t ? ok_line(t) : err_line("not_found", "task: no task %u", n);
    }
    if (!strcmp(cmd, "image")) {
        const char *action = req_str(req, "action");
        if (!action || strcmp(action, "check"))
            return err_line("bad_request", "image: \"action\": \"check\" is required");
        const char *code = "failed";
        char msg[KERNEL_ERRLEN];
        json_t *r = damage_image_check(d, &code, msg, sizeof msg);
        return r ? ok_line(r) : err_line(code, "%s", msg);
    }
    return err_line("bad_request", "unknown command '%s' (known: %s)", cmd, commands);
}

/* A finished job goes to the loop, which writes its reply. */
static void job_finish(a4psd *d, job *j)
{
    pthread_mutex_lock(&d->qlock);
    j->next = NULL;
    if (d->done_tail)
        d->done_tail->next = j;
    else
        d->done = j;
    d->done_tail = j;
    d->running--;
    pthread_cond_broadcast(&d->qcv);
    uint64_t one = 1;
    if (write(d->jobfd, &one, sizeof one) < 0) {
        /* the counter is at its maximum: the loop is awake anyway */
    }
    pthread_mutex_unlock(&d->qlock);
}

static void refuse_undurable(char **line, const char *why)
{
    free(*line);
    *line = err_line("not_durable", "the request changed state that the journal could not "
                     "record, so it is not acknowledged (the change may or may not survive a "
                     "crash): %s", why);
}

/* The journal's thread wrote (or could not write) a parked reply's records. */
static void job_durable(void *arg, int rc, const char *err)
{
    job *j = arg;
    if (rc)
        refuse_undurable(&j->line, err);
    job_finish(j->d, j);
}

/* Nothing is acknowledged that the journal has not written: before a reply
 * leaves, what this request changed is written, grouped with the other
 * replies waiting -- by this worker, or by the journal's thread while this
 * worker goes on (then the job is the journal's until job_durable: returns
 * true).  When the change follows a migration or a creation that no
 * snapshot recorded yet, that snapshot is taken first (journal_sync).  If
 * any of it fails, the reply becomes an error saying so. */
static bool durable_or_refuse(a4psd *d, job *j)
{
    char err[KERNEL_ERRLEN], msg[KERNEL_ERRLEN];
    int rc = journal_sync_async(d->journal, job_durable, j, err, sizeof err);
    if (rc == 2)
        return true;
    if (rc == 1) {
        if (daemon_snapshot(d, false, msg, sizeof msg) == 0)
            rc = journal_sync(d->journal, err, sizeof err);
        else
            snprintf(err, sizeof err, "it follows a migration or a creation the image does not "
                     "hold yet, and the snapshot that records it failed: %s", msg);
        if (rc == 1)
            rc = -1;
        if (rc != 0)
            journal_sync_forget();   /* refused: the next reply owes nothing of this one */
    }
    if (rc != 0)
        refuse_undurable(&j->line, err);
    return false;
}

static void *worker_main(void *arg)
{
    a4psd *d = arg;
    kernel_thread_attach(d->k);
    pthread_mutex_lock(&d->qlock);
    for (;;) {
        while (!d->todo && !d->qstop) {
            kernel_thread_offline(d->k);
            pthread_cond_wait(&d->qcv, &d->qlock);
            kernel_thread_online(d->k);
        }
        if (!d->todo)
            break;
        job *j = d->todo;
        d->todo = j->next;
        if (!d->todo)
            d->todo_tail = NULL;
        d->running++;
        pthread_mutex_unlock(&d->qlock);

        j->line = exec_request(d, j->req);
        j->d = d;
        bool parked = durable_or_refuse(d, j);
        kernel_quiescent(d->k);
        if (!parked)
            job_finish(d, j);
        pthread_mutex_lock(&d->qlock);
    }
    pthread_mutex_unlock(&d->qlock);
    kernel_thread_detach(d->k);
    return NULL;
}

int ctl_workers_start(a4psd *d, char *err, size_t errlen)
{
    d->nworkers = d->cfg->workers;
    d->workers = calloc((size_t)d->nworkers, sizeof *d->workers);
    if (!d->workers) {
        snprintf(err, errlen, "workers: out of memory");
        return -1;
    }
    for (int i = 0; i < d->nworkers; i++) {
        int rc = pthread_create(&d->workers[i], NULL, worker_main, d);
        if (rc) {
            snprintf(err, errlen, "workers: cannot start thread %d: %s", i, strerror(rc));
            d->nworkers = i;
            return -1;
        }
    }
    return 0;
}

static void enqueue(a4psd *d, client *c, json_t *req)
{
    job *j = calloc(1, sizeof *j);
    if (!j) {
        json_decref(req);
        client_write(d, c, err_line("failed", "out of memory"));
        return;
    }
    j->client_id = c->id;
    j->req = req;
    c->busy = true;
    pthread_mutex_lock(&d->qlock);
    if (d->todo_tail)
        d->todo_tail->next = j;
    else
        d->todo = j;
    d->todo_tail = j;
    pthread_cond_signal(&d->qcv);
    pthread_mutex_unlock(&d->qlock);
    client_want(d, c);
}

static json_t *recent_events(a4psd *d)
{
    json_t *a = json_array();
    pthread_mutex_lock(&d->evlock);
    for (unsigned i = 0; i < EVENT_RING; i++) {
        char *e = d->ring[(d->ring_next + i) % EVENT_RING];
        json_t *j = e ? json_loads(e, 0, NULL) : NULL;
        if (j)
            json_array_append_new(a, j);
    }
    pthread_mutex_unlock(&d->evlock);
    return a;
}

static void handle_line(a4psd *d, client *c, char *line, size_t len)
{
    json_error_t je;
    json_t *req = json_loadb(line, len, 0, &je);
    if (!req || !json_is_object(req)) {
        json_decref(req);
        client_write(d, c, err_line("bad_request", "request is not a JSON object%s%s",
                                    req ? "" : ": ", req ? "" : je.text));
        return;
    }
    const char *cmd = req_str(req, "cmd");
    if (!cmd) {
        json_decref(req);
        client_write(d, c, err_line("bad_request", "\"cmd\" (a string) is required; commands: %s",
                                    commands));
        return;
    }
    if (d->stopping) {
        json_decref(req);
        client_write(d, c, err_line("shutting_down", "a4psd is shutting down"));
        return;
    }
    if (!strcmp(cmd, "reload")) {
        char *errors = NULL;
        int rc = daemon_reload(d, &errors);
        json_t *list = json_array();
        for (char *p = errors, *nl; p && *p; p = nl + 1) {
            nl = strchr(p, '\n');
            if (!nl)
                nl = p + strlen(p) - 1;
            json_array_append_new(list, json_text(p, (size_t)(nl - p) + (nl[0] != '\n')));
        }
        free(errors);
        json_decref(req);
        client_write(d, c, ok_line(json_pack("{s:b, s:o}", "applied", rc == 0, "errors", list)));
        return;
    }
    if (!strcmp(cmd, "snapshot")) {
        bool all = json_is_true(json_object_get(req, "full"));
        json_decref(req);
        char msg[KERNEL_ERRLEN];
        dlog(d, LOG_INFO, "snapshot requested by uid %u", (unsigned)c->uid);
        if (daemon_snapshot(d, all, msg, sizeof msg) == 0)
            client_write(d, c, ok_line(json_pack("{s:s}", "message", msg)));
        else
            client_write(d, c, err_line("failed", "%s", msg));
        return;
    }
    /* The image's unrestorable protos (damage.c), on this thread; their
     * image writes take d->snaplock like every snapshot (a worker takes one
     * when the journal's reply barrier asks). */
    const char *dproto = req_str(req, "proto");
    if (!strcmp(cmd, "destroy") ||
        (!strcmp(cmd, "rollback") && dproto && damage_is_unrestorable(d, dproto))) {
        const char *code = "failed";
        char msg[KERNEL_ERRLEN];
        json_t *r = NULL;
        if (!dproto) {
            code = "bad_request";
            snprintf(msg, sizeof msg, "%s: \"proto\" (a string) is required", cmd);
        } else if (!strcmp(cmd, "destroy")) {
            r = damage_destroy(d, dproto, &code, msg, sizeof msg);
        } else {
            r = damage_rollback(d, dproto, req_str(req, "version"), &code, msg, sizeof msg);
        }
        json_decref(req);
        client_write(d, c, r ? ok_line(r) : err_line(code, "%s", msg));
        return;
    }
    if (!strcmp(cmd, "events")) {
        json_t *f = json_object_get(req, "follow");
        bool follow = json_is_true(f);
        json_decref(req);
        if (follow) {
            c->follow = true;
            client_write(d, c, ok_line(json_pack("{s:b}", "following", 1)));
        } else {
            client_write(d, c, ok_line(recent_events(d)));
        }
        return;
    }
    enqueue(d, c, req);
}

/* Answer the complete lines in c's buffer, one at a time. */
static void process_lines(a4psd *d, client *c)
{
    while (c->fd >= 0 && !c->busy && !c->closing && c->wlen - c->woff < WBUF_PAUSE) {
        char *nl = memchr(c->rbuf, '\n', c->rlen);
        if (!nl)
            break;
        size_t len = (size_t)(nl - c->rbuf);
        if (len && c->rbuf[len - 1] == '\r')
            len--;
        char *line = c->rbuf;
        size_t consumed = (size_t)(nl - c->rbuf) + 1;
        /* Empty lines are no request: they do not keep a connection alive. */
        if (len) {
            c->last_ms = now_ms();
            handle_line(d, c, line, len);
        }
        if (c->fd < 0)
            return;
        memmove(c->rbuf, c->rbuf + consumed, c->rlen - consumed);
        c->rlen -= consumed;
        /* What follows is the next request: its clock starts now, not when
         * its bytes arrived behind the one just taken. */
        c->req_ms = now_ms();
    }
    if (c->fd >= 0)
        client_want(d, c);
}

static void client_drain(a4psd *d, client *c)
{
    char buf[16384];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            client_close(d, c);
            return;
        }
    }
}

void ctl_client_event(a4psd *d, client *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (events & EPOLLOUT) {
        client_flush(d, c);
        /* Replies drained below the pause: answer what is already buffered. */
        if (c->fd >= 0 && c->rlen && !c->busy && !c->closing && !c->draining)
            process_lines(d, c);
    }
    if (c->fd >= 0 && c->draining) {
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            client_drain(d, c);
        return;
    }
    if (c->fd < 0 || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    if (c->busy && (events & (EPOLLHUP | EPOLLERR))) {
        /* Gone while its job runs: epoll would report the hang-up again and
         * again (it ignores the interest set for it), so leave epoll; the
         * job's end closes the client. */
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->hup = true;
        return;
    }
    size_t max = d->cfg->max_request_bytes;
    for (;;) {
        if (c->busy || c->closing)
            break;
        if (c->rcap - c->rlen < 4096) {
            size_t cap = c->rcap ? c->rcap * 2 : 8192;
            if (cap > max + 8192)
                cap = max + 8192;
            if (cap <= c->rlen) {
                client_write(d, c, err_line("bad_request",
                                            "request longer than max_request_bytes (%zu)", max));
                c->closing = true;
                client_flush(d, c);
                return;
            }
            char *nb = realloc(c->rbuf, cap);
            if (!nb) {
                client_close(d, c);
                return;
            }
            c->rbuf = nb;
            c->rcap = cap;
        }
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0) {
            /* EOF: answer what was complete; a half line is dropped. */
            process_lines(d, c);
            if (c->fd >= 0 && !c->busy && c->wlen == c->woff)
                client_close(d, c);
            else if (c->fd >= 0)
                c->closing = true;
            return;
        }
        /* The request's clock starts at its first byte and is not reset by
         * the next ones: one byte a second does not keep a request open. */
        if (!c->rlen)
            c->req_ms = now_ms();
        c->rlen += (size_t)r;
        char *nl = memchr(c->rbuf + c->rlen - (size_t)r, '\n', (size_t)r);
        if (!nl && c->rlen > max) {
            client_write(d, c, err_line("bad_request",
                                        "request longer than max_request_bytes (%zu)", max));
            c->closing = true;
            client_flush(d, c);
            return;
        }
        process_lines(d, c);
        if (c->fd < 0)
            return;
    }
}

static client *find_client(a4psd *d, uint64_t id)
{
    for (client *c = d->clients; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

void ctl_jobs_done(a4psd *d)
{
    uint64_t v;
    if (read(d->jobfd, &v, sizeof v) < 0 && errno != EAGAIN)
        dlog(d, LOG_WARNING, "jobs eventfd: %s", strerror(errno));
    pthread_mutex_lock(&d->qlock);
    job *list = d->done;
    d->done = d->done_tail = NULL;
    pthread_mutex_unlock(&d->qlock);
    while (list) {
        job *j = list;
        list = j->next;
        client *c = find_client(d, j->client_id);
        if (c && c->hup) {
            client_close(d, c);
            c = NULL;
        }
        if (c) {
            c->busy = false;
            c->last_ms = now_ms();
            client_write(d, c, j->line);
            j->line = NULL;
            if (c->fd >= 0)
                process_lines(d, c);
            if (c->fd >= 0 && c->closing && c->wlen == c->woff)
                client_close(d, c);
        }
        free(j->line);
        json_decref(j->req);
        free(j);
    }
}

/* ---- Accepting ---- */

static bool permitted(a4psd *d, uid_t uid)
{
    if (uid == geteuid() || uid == d->start_uid)
        return true;
    for (int i = 0; i < d->cfg->nuids; i++)
        if (d->cfg->uids[i] == uid)
            return true;
    return false;
}

/* ---- Refusals, closings, and their log ---- */

/* Write a held-back summary of r once RATELOG_MS has passed since its last
 * line. */
static void rl_flush(a4psd *d, struct ratelog *r, int level, const char *what, uint64_t now)
{
    if (!r->held || now - r->last_ms < RATELOG_MS)
        return;
    dlog(d, level, "control socket: %lu more %s in the last %llu s (logged at most once per "
         "%d s; `a4psctl status` counts them all)", r->held, what,
         (unsigned long long)((now - r->last_ms + 500) / 1000), RATELOG_MS / 1000);
    r->held = 0;
    r->last_ms = now;
}

/* The first of a kind is logged in full; the next ones within RATELOG_MS
 * are only counted, and summed up in one line by the tick: 5,000 refused
 * connections write a few lines, not 5,000. */
static void rl_log(a4psd *d, struct ratelog *r, int level, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void rl_log(a4psd *d, struct ratelog *r, int level, const char *what, const char *fmt, ...)
{
    uint64_t now = now_ms();
    rl_flush(d, r, level, what, now);
    if (r->last_ms && now - r->last_ms < RATELOG_MS) {
        r->held++;
        return;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    dlog(d, level, "%s", line);
    r->last_ms = now;
}

static void count(uint64_t *counter)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

/* Each kind: what its summary line counts, at which level. */
#define RL_FULL_WHAT "connections refused (every connection busy)"
#define RL_FULL_LEVEL LOG_WARNING
#define RL_UID_WHAT "connections refused (uid not permitted)"
#define RL_UID_LEVEL LOG_WARNING
#define RL_EVICTED_WHAT "idle connections closed for newcomers"
#define RL_EVICTED_LEVEL LOG_NOTICE
#define RL_IDLE_WHAT "idle connections closed"
#define RL_IDLE_LEVEL LOG_INFO
#define RL_TIMEOUT_WHAT "incomplete requests cut off"
#define RL_TIMEOUT_LEVEL LOG_NOTICE

/* No request being sent or run, not following events: a connection that
 * may be closed after idle_timeout_ms or for a newcomer.  One that stopped
 * reading its replies (and so is not read from) counts too. */
static bool client_idle(const client *c)
{
    return c->fd >= 0 && !c->busy && !c->hup && !c->follow && !c->draining &&
           (c->rlen == 0 || c->wlen > c->woff);
}

/* Tell c why (best effort: never waiting, never between the bytes of a
 * reply) and close it. */
static void close_saying(a4psd *d, client *c, char *line)
{
    if (line && c->wlen == c->woff && !c->draining) {
        ssize_t w = send(c->fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    free(line);
    client_close(d, c);
}

/* Every slot is taken: close the connection idle the longest, if any. */
static bool evict_idlest(a4psd *d, uid_t newcomer)
{
    client *v = NULL;
    for (client *c = d->clients; c; c = c->next)
        if ((client_idle(c) || (c->fd >= 0 && c->draining)) && (!v || c->last_ms < v->last_ms))
            v = c;
    if (!v)
        return false;
    unsigned long long idle = now_ms() - v->last_ms;
    count(&d->ctlcount.evicted);
    rl_log(d, &d->rl_evicted, RL_EVICTED_LEVEL, RL_EVICTED_WHAT,
           "control socket: every connection (limits.max_clients = %d) taken: closed the one "
           "idle the longest (uid %u, idle %llu ms) for a new one of uid %u", d->cfg->max_clients,
           (unsigned)v->uid, idle, (unsigned)newcomer);
    close_saying(d, v, err_line("closed", "connection closed after %llu ms without a request: "
                                "every connection (limits.max_clients = %d) was taken and a "
                                "new client needed one", idle, d->cfg->max_clients));
    return true;
}

static void refuse_now(int fd, char *line)
{
    if (line) {
        ssize_t w = send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;                 /* best effort: the client may be gone */
        free(line);
    }
    close(fd);
}

void ctl_accept(a4psd *d)
{
    for (;;) {
        int fd = accept4(d->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                dlog(d, LOG_WARNING, "control socket: accept: %s", strerror(errno));
            return;
        }
        struct ucred cr;
        socklen_t crlen = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) != 0) {
            refuse_now(fd, err_line("refused", "cannot identify the peer (SO_PEERCRED failed)"));
            continue;
        }
        if (cr.pid == getpid()) {
            /* Only plugin code connects from inside a4psd: a plugin is not
             * an operator, whatever uid a4psd runs as. */
            count(&d->ctlcount.refused_uid);
            rl_log(d, &d->rl_uid, RL_UID_LEVEL, RL_UID_WHAT,
                   "control socket: refused a connection from a4psd's own process "
                   "(plugin code)");
            refuse_now(fd, err_line("refused", "a plugin may not control a4psd"));
            continue;
        }
        if (!permitted(d, cr.uid)) {
            count(&d->ctlcount.refused_uid);
            rl_log(d, &d->rl_uid, RL_UID_LEVEL, RL_UID_WHAT,
                   "control socket: refused uid %u (pid %d): not in control.uids",
                   (unsigned)cr.uid, (int)cr.pid);
            refuse_now(fd, err_line("refused", "uid %u is not permitted to control this a4psd "
                                    "(control.uids in %s)", (unsigned)cr.uid, d->cfg->path));
            continue;
        }
        if (d->nclients >= d->cfg->max_clients && !evict_idlest(d, cr.uid)) {
            count(&d->ctlcount.refused_full);
            rl_log(d, &d->rl_full, RL_FULL_LEVEL, RL_FULL_WHAT,
                   "control socket: refused uid %u (pid %d): all %d connections "
                   "(limits.max_clients) have a request running or being sent, or follow "
                   "events; none is idle", (unsigned)cr.uid, (int)cr.pid, d->cfg->max_clients);
            refuse_now(fd, err_line("busy", "too many clients: all %d connections "
                                    "(limits.max_clients) are busy with requests or follow "
                                    "events; try again later", d->cfg->max_clients));
            continue;
        }
        client *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->uid = cr.uid;
        c->id = ++d->next_client_id;
        c->last_ms = now_ms();
        count(&d->ctlcount.accepted);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = d->clients;
        d->clients = c;
        pthread_mutex_lock(&d->mx);
        d->nclients++;
        pthread_mutex_unlock(&d->mx);
    }
}

int ctl_open(a4psd *d, char *err, size_t errlen)
{
    const char *path = d->cfg->socket;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "control.socket: path longer than %zu bytes: %s",
                 sizeof sa.sun_path - 1, path);
        return -1;
    }
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "control.socket: cannot create %s: %s", dir, strerror(errno));
            return -1;
        }
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
        close(probe);
        snprintf(err, errlen, "control.socket: %s answers: another a4psd is running", path);
        return -1;
    }
    if (probe >= 0)
        close(probe);
    unlink(path);                /* a stale socket of a daemon that died */
    d->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->lfd < 0) {
        snprintf(err, errlen, "control.socket: socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0177);    /* born 0600: never a moment of wider access */
    int rc = bind(d->lfd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc != 0) {
        snprintf(err, errlen, "control.socket: bind %s: %s", path, strerror(errno));
        return -1;
    }
    if (d->cfg->group) {
        struct group *g = getgrnam(d->cfg->group);
        if (!g || chown(path, (uid_t)-1, g->gr_gid) != 0 || chmod(path, 0660) != 0) {
            snprintf(err, errlen, "control.group: cannot give %s to group %s: %s", path,
                     d->cfg->group, g ? strerror(errno) : "no such group");
            return -1;
        }
    }
    if (listen(d->lfd, 128) != 0) {
        snprintf(err, errlen, "control.socket: listen: %s", strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &d->lfd};
    epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->lfd, &ev);
    return 0;
}

static void ctl_close_listener(a4psd *d)
{
    if (d->lfd < 0)
        return;
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, d->lfd, NULL);
    close(d->lfd);
    d->lfd = -1;
    unlink(d->cfg->socket);
}

/* ---- Events ---- */

/* The kernel's event tap, on the bus thread: keep it for `events`, queue it
 * for followers, wake the loop. */
void ctl_on_event(void *arg, const char *event, const char *json, size_t len)
{
    a4psd *d = arg;
    char *copy = strndup(json, len);
    if (!copy)
        return;
    pthread_mutex_lock(&d->evlock);
    free(d->ring[d->ring_next]);
    d->ring[d->ring_next] = copy;
    d->ring_next = (d->ring_next + 1) % EVENT_RING;
    static const char *const changes[] = {"plugin_loaded", "plugin_refused", "swap_committed",
                                          "swap_rolled_back", "plugin_faulted", "config_reloaded",
                                          "config_refused"};
    for (size_t i = 0; d->audit_on && i < sizeof changes / sizeof changes[0]; i++) {
        if (strcmp(event, changes[i]) || d->naudit >= AUDIT_PENDING_MAX)
            continue;
        if (d->naudit == d->capaudit) {
            size_t cap = d->capaudit ? d->capaudit * 2 : 64;
            char **na = realloc(d->audit, cap * sizeof *na);
            if (!na)
                break;
            d->audit = na;
            d->capaudit = cap;
        }
        if ((d->audit[d->naudit] = strdup(copy)))
            d->naudit++;
    }
    if (d->nstream >= STREAM_MAX) {
        d->stream_dropped++;
    } else {
        if (d->nstream == d->capstream) {
            size_t cap = d->capstream ? d->capstream * 2 : 64;
            char **ns = realloc(d->stream, cap * sizeof *ns);
            if (ns) {
                d->stream = ns;
                d->capstream = cap;
            }
        }
        if (d->nstream < d->capstream)
            d->stream[d->nstream++] = strdup(copy);
    }
    pthread_mutex_unlock(&d->evlock);
    uint64_t one = 1;
    if (write(d->evfd, &one, sizeof one) < 0) {
        /* counter saturated: the loop is awake anyway */
    }
}

void ctl_stream_events(a4psd *d)
{
    uint64_t v;
    if (read(d->evfd, &v, sizeof v) < 0 && errno != EAGAIN)
        dlog(d, LOG_WARNING, "events eventfd: %s", strerror(errno));
    pthread_mutex_lock(&d->evlock);
    char **list = d->stream;
    size_t n = d->nstream;
    uint64_t dropped = d->stream_dropped;
    d->stream = NULL;
    d->nstream = d->capstream = 0;
    d->stream_dropped = 0;
    pthread_mutex_unlock(&d->evlock);
    if (dropped)
        dlog(d, LOG_WARNING, "event stream: %llu events dropped (followers too slow)",
             (unsigned long long)dropped);
    for (client *c = d->clients, *nx; c; c = nx) {
        nx = c->next;
        if (!c->follow || c->fd < 0)
            continue;
        for (size_t i = 0; i < n && c->fd >= 0; i++) {
            if (c->wlen - c->woff > FOLLOW_MAX_BUFFER) {
                dlog(d, LOG_WARNING, "event follower (uid %u) is too slow: disconnected",
                     (unsigned)c->uid);
                client_close(d, c);
                break;
            }
            char *line;
            if (asprintf(&line, "{\"event\":%s}\n", list[i]) >= 0)
                client_write(d, c, line);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* ---- Housekeeping ---- */

void ctl_tick(a4psd *d)
{
    uint64_t now = now_ms();
    for (client *c = d->clients, *nx; c; c = nx) {
        nx = c->next;
        if (c->draining && now - c->last_ms > d->cfg->request_timeout_ms) {
            client_close(d, c);
            continue;
        }
        /* A partial request (a complete one waits only behind unread
         * replies: that is idleness, below). */
        if (c->rlen && !c->busy && !c->closing && !memchr(c->rbuf, '\n', c->rlen) &&
            now - c->req_ms > d->cfg->request_timeout_ms) {
            count(&d->ctlcount.timed_out);
            rl_log(d, &d->rl_timeout, RL_TIMEOUT_LEVEL, RL_TIMEOUT_WHAT,
                   "control socket: uid %u sent %zu bytes of a request and no newline in "
                   "%llu ms (limits.request_timeout_ms = %u, from its first byte): cut off",
                   (unsigned)c->uid, c->rlen, (unsigned long long)(now - c->req_ms),
                   d->cfg->request_timeout_ms);
            client_write(d, c, err_line("bad_request",
                                        "incomplete request: no newline within %u ms of its "
                                        "first byte", d->cfg->request_timeout_ms));
            c->closing = true;
            c->rlen = 0;
            if (c->fd >= 0)
                client_flush(d, c);
            continue;
        }
        unsigned idle = d->cfg->idle_timeout_ms;
        if (idle && client_idle(c) && now - c->last_ms > idle) {
            count(&d->ctlcount.idle_closed);
            rl_log(d, &d->rl_idle, RL_IDLE_LEVEL, RL_IDLE_WHAT,
                   "control socket: closed a connection of uid %u: no request for %llu ms "
                   "(limits.idle_timeout_ms = %u)", (unsigned)c->uid,
                   (unsigned long long)(now - c->last_ms), idle);
            close_saying(d, c, err_line("closed", "connection closed after %u ms without a "
                                        "request (limits.idle_timeout_ms)", idle));
        }
    }
    rl_flush(d, &d->rl_full, RL_FULL_LEVEL, RL_FULL_WHAT, now);
    rl_flush(d, &d->rl_uid, RL_UID_LEVEL, RL_UID_WHAT, now);
    rl_flush(d, &d->rl_evicted, RL_EVICTED_LEVEL, RL_EVICTED_WHAT, now);
    rl_flush(d, &d->rl_idle, RL_IDLE_LEVEL, RL_IDLE_WHAT, now);
    rl_flush(d, &d->rl_timeout, RL_TIMEOUT_LEVEL, RL_TIMEOUT_WHAT, now);
}

void ctl_reap(a4psd *d)
{
    while (d->graveyard) {
        client *c = d->graveyard;
        d->graveyard = c->next;
        free(c->rbuf);
        free(c->wbuf);
        free(c);
    }
}


/* SIGTERM: no new requests; queued ones are told so; the calls in flight
 * finish and their replies are written; then the workers stop. */
void ctl_shutdown(a4psd *d)
{
    ctl_close_listener(d);
    pthread_mutex_lock(&d->qlock);
    job *cancelled = d->todo;
    d->todo = d->todo_tail = NULL;
    pthread_mutex_unlock(&d->qlock);
    while (cancelled) {
        job *j = cancelled;
        cancelled = j->next;
        client *c = find_client(d, j->client_id);
        if (c) {
            c->busy = false;
            client_write(d, c, err_line("shutting_down", "a4psd is shutting down"));
        }
        json_decref(j->req);
        free(j);
    }
    /* The calls in flight get SHUTDOWN_WAIT_S to finish; a method that never
     * returns must not keep the daemon from stopping. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += SHUTDOWN_WAIT_S;
    pthread_mutex_lock(&d->qlock);
    while (d->running > 0)
        if (pthread_cond_timedwait(&d->qcv, &d->qlock, &dl) == ETIMEDOUT)
            break;
    int stuck = d->running;
    d->qstop = true;
    pthread_cond_broadcast(&d->qcv);
    pthread_mutex_unlock(&d->qlock);
    if (stuck) {
        dlog(d, LOG_ERR, "%d call%s still running after %d s: stopping without them", stuck,
             stuck == 1 ? "" : "s", SHUTDOWN_WAIT_S);
        d->stuck = true;
        for (int i = 0; i < d->nworkers; i++)
            pthread_detach(d->workers[i]);
    } else {
        for (int i = 0; i < d->nworkers; i++)
            pthread_join(d->workers[i], NULL);
    }
    ctl_jobs_done(d);
    for (client *c = d->clients, *nx; c; c = nx) {
        nx = c->next;
        if (c->follow && c->fd >= 0)
            client_write(d, c, err_line("shutting_down", "a4psd is shutting down"));
    }
    /* Give the replies up to five seconds to reach their clients. */
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        bool pending = false;
        for (client *c = d->clients; c; c = c->next)
            if (c->wlen > c->woff)
                pending = true;
        if (!pending || now_ms() > deadline)
            break;
        struct epoll_event evs[16];
        int n = epoll_wait(d->epfd, evs, 16, 100);
        for (int i = 0; i < n; i++)
            /* Only clients wait for EPOLLOUT. */
            if (evs[i].events & EPOLLOUT)
                client_flush(d, evs[i].data.ptr);
    }
    while (d->clients)
        client_close(d, d->clients);
    ctl_reap(d);
    free(d->workers);
    d->workers = NULL;
}
