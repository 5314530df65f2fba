/* a4psd.c -- the A4PS daemon: main, the event loop, signals, the config.
 *
 *   a4psd -c FILE                  run in the foreground, logs on stderr
 *   a4psd --check-config -c FILE   validate FILE and exit
 *
 * One epoll loop serves signalfd (HUP: reload; USR1: snapshot; TERM/INT:
 * stop), inotify on the plugin directory, the control socket and its
 * clients, the workers' completions, the event stream and a one-second tick.
 * Signals are blocked in every thread before the first is created, so they
 * arrive only through the signalfd. */
#define _GNU_SOURCE
#include "daemon/daemon.h"
#include "daemon/journal.h"
#include "daemon/privsep.h"
#include "image/image.h"
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <syslog.h>
#include <unistd.h>

#ifdef A4PS_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

/* Journal bytes since the last snapshot that bring the next one forward. */
#define JOURNAL_SNAPSHOT_BYTES (64ull << 20)
/* How often those, and a failed journal's healing snapshot, are tried. */
#define JOURNAL_RETRY_S 10

/* One line per event with a syslog priority prefix, which journald reads. */
void dlog(a4psd *d, int level, const char *fmt, ...)
{
    if (level > __atomic_load_n(&d->level, __ATOMIC_RELAXED))
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++)
        if (*c == '\n')
            *c = ' ';
    fprintf(stderr, "<%d>a4psd: %s\n", level, line);
}

static void kernel_log_sink(void *arg, int level, const char *line)
{
    a4psd *d = arg;
    if (level <= __atomic_load_n(&d->level, __ATOMIC_RELAXED))
        fprintf(stderr, "<%d>a4ps: %s\n", level, line);
}

#ifdef A4PS_JEMALLOC
/* The kernel's accounting per call (kernel_config.alloc_counters): where
 * jemalloc keeps this thread's running totals of bytes allocated and freed.
 * Asked once per thread; each call then costs the kernel four loads. */
static int jemalloc_counters(const uint64_t **allocated, const uint64_t **freed)
{
    uint64_t *a = NULL, *f = NULL;
    size_t sz = sizeof a;
    if (mallctl("thread.allocatedp", &a, &sz, NULL, 0) != 0)
        return -1;
    sz = sizeof f;
    if (mallctl("thread.deallocatedp", &f, &sz, NULL, 0) != 0)
        return -1;
    *allocated = a;
    *freed = f;
    return 0;
}
#endif

static const dproto *config_proto(const dconfig *c, const char *name)
{
    for (int i = 0; i < c->nprotos; i++)
        if (!strcmp(c->protos[i].name, name))
            return &c->protos[i];
    return NULL;
}

/* The config's subscriptions, for every observer proto that exists; one
 * already in place is left as it is. */
static void subscribe_all(a4psd *d)
{
    char err[KERNEL_ERRLEN];
    for (int j = 0; j < d->cfg->nsubs; j++) {
        const dsub *s = &d->cfg->subs[j];
        int rc = kernel_proto_exists(d->k, s->proto)
                     ? kernel_subscribe(d->k, s->event, s->proto, s->selector, err, sizeof err)
                     : A4PS_OK;
        if (rc != A4PS_OK && rc != A4PS_EEXIST)
            dlog(d, LOG_ERR, "%s: %s", d->cfg->path, err);
    }
}

void daemon_create_protos(a4psd *d, const char *only_plugin)
{
    char err[KERNEL_ERRLEN];
    for (int i = 0; i < d->cfg->nprotos; i++) {
        const dproto *p = &d->cfg->protos[i];
        if ((only_plugin && strcmp(p->plugin, only_plugin)) || kernel_proto_exists(d->k, p->name))
            continue;
        if (damage_is_unrestorable(d, p->name))
            continue;            /* never recreated empty over its rows (damage.c) */
        int rc = kernel_proto_create(d->k, p->name, p->plugin, p->version, p->persona_json,
                                     err, sizeof err);
        if (rc == A4PS_ENOENT) {
            dlog(d, LOG_WARNING, "%s:%d: proto %s waits for plugin %s%s%s to be loaded",
                 d->cfg->path, p->line, p->name, p->plugin, p->version ? " " : "",
                 p->version ? p->version : "");
            continue;
        }
        if (rc) {
            dlog(d, LOG_ERR, "%s:%d: %s", d->cfg->path, p->line, err);
            continue;
        }
        for (int j = 0; j < p->nstate; j++)
            if (kernel_state_set(d->k, p->name, p->state[j].key, p->state[j].value,
                                 strlen(p->state[j].value)) != 0)
                dlog(d, LOG_ERR, "%s:%d: proto %s: cannot set state key '%s'", d->cfg->path,
                     p->line, p->name, p->state[j].key);
    }
    subscribe_all(d);            /* the new protos' subscriptions */
}

/* Apply the parts of a new config that can change while running; report the
 * ones that need a restart.  nc becomes d->cfg. */
static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static void apply(a4psd *d, dconfig *nc)
{
    dconfig *oc = d->cfg;
    char err[KERNEL_ERRLEN];
    struct {
        const char *key;
        bool changed;
    } fixed[] = {
        {"runtime_dir", strcmp(oc->runtime_dir, nc->runtime_dir) != 0},
        {"control.socket", strcmp(oc->socket, nc->socket) != 0},
        {"control.group", (oc->group == NULL) != (nc->group == NULL) ||
                              (oc->group && strcmp(oc->group, nc->group))},
        {"workers", oc->workers != nc->workers},
        {"sandbox", oc->sandbox_none != nc->sandbox_none || oc->sbx_wall_ms != nc->sbx_wall_ms ||
                        oc->sbx_cpu_s != nc->sbx_cpu_s || oc->sbx_mem_bytes != nc->sbx_mem_bytes ||
                        oc->sbx_nproc != nc->sbx_nproc || oc->sbx_call_ms != nc->sbx_call_ms ||
                        oc->sbx_file_bytes != nc->sbx_file_bytes ||
                        oc->sbx_output_bytes != nc->sbx_output_bytes ||
                        !same_str(oc->runsc, nc->runsc) || !same_str(oc->probe, nc->probe) ||
                        !same_str(oc->abi_dir, nc->abi_dir)},
        {"forge", !same_str(oc->forge_generator, nc->forge_generator) ||
                      !same_str(oc->forge_dir, nc->forge_dir) ||
                      oc->forge_iterations != nc->forge_iterations ||
                      oc->forge_wall_s != nc->forge_wall_s ||
                      oc->forge_probation_s != nc->forge_probation_s},
        {"daemon", !same_str(oc->daemon_user, nc->daemon_user) ||
                       !same_str(oc->daemon_group, nc->daemon_group) ||
                       oc->daemon_confine != nc->daemon_confine ||
                       oc->daemon_as_mb != nc->daemon_as_mb ||
                       oc->daemon_open_files != nc->daemon_open_files ||
                       oc->daemon_threads != nc->daemon_threads},
        {"outside", !outside_policy_equal(&oc->outside, &nc->outside)},
        {"limits.contain_exits", oc->contain_exits != nc->contain_exits},
        {"limits (kernel)", oc->max_plugin_bytes != nc->max_plugin_bytes ||
                                oc->hook_timeout_ms != nc->hook_timeout_ms ||
                                oc->migrate_timeout_ms != nc->migrate_timeout_ms ||
                                oc->event_queue != nc->event_queue},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (fixed[i].changed)
            dlog(d, LOG_WARNING, "%s: %s changed: it takes effect at the next restart",
                 nc->path, fixed[i].key);
    /* Keep what only a restart can change, take the rest. */
    char *keep_rt = nc->runtime_dir, *keep_sock = nc->socket, *keep_grp = nc->group;
    nc->runtime_dir = oc->runtime_dir;
    nc->socket = oc->socket;
    nc->group = oc->group;
    oc->runtime_dir = keep_rt;
    oc->socket = keep_sock;
    oc->group = keep_grp;
    nc->workers = oc->workers;
    nc->max_plugin_bytes = oc->max_plugin_bytes;
    nc->hook_timeout_ms = oc->hook_timeout_ms;
    nc->migrate_timeout_ms = oc->migrate_timeout_ms;
    nc->event_queue = oc->event_queue;

    bool new_dir = strcmp(oc->plugin_dir, nc->plugin_dir) != 0;
    for (int i = 0; i < oc->nsubs; i++) {
        bool kept = false;
        for (int j = 0; j < nc->nsubs && !kept; j++)
            kept = !strcmp(oc->subs[i].event, nc->subs[j].event) &&
                   !strcmp(oc->subs[i].proto, nc->subs[j].proto) &&
                   !strcmp(oc->subs[i].selector, nc->subs[j].selector);
        if (!kept)
            kernel_unsubscribe(d->k, oc->subs[i].event, oc->subs[i].proto, oc->subs[i].selector);
    }
    for (int i = 0; i < oc->nprotos; i++)
        if (!config_proto(nc, oc->protos[i].name))
            dlog(d, LOG_NOTICE, "proto %s is no longer in %s: it keeps running with its state",
                 oc->protos[i].name, nc->path);
    pthread_mutex_lock(&d->mx);  /* workers read d->cfg for status under mx */
    d->cfg = nc;
    pthread_mutex_unlock(&d->mx);
    __atomic_store_n(&d->level, nc->log_level, __ATOMIC_RELAXED);
    kernel_set_log_level(d->k, nc->log_level);
    dconfig_free(oc);

    if ((new_dir || d->wd < 0) && watch_open(d, err, sizeof err) != 0)
        dlog(d, LOG_ERR, "%s", err);
    watch_scan(d, false);
    daemon_create_protos(d, NULL);
    /* Pinned versions: a proto whose version in the config changed moves. */
    for (int i = 0; i < nc->nprotos; i++) {
        const dproto *p = &nc->protos[i];
        if (!p->version || !kernel_proto_exists(d->k, p->name))
            continue;
        int rc = kernel_swap(d->k, p->name, p->version, err, sizeof err);
        if (rc)
            dlog(d, LOG_ERR, "%s:%d: %s", nc->path, p->line, err);
    }
}

/* Reloads change the system too: they go on the bus (and so into the
 * image's audit log). */
static void reload_event(a4psd *d, const char *event, const char *errors)
{
    json_t *j = json_pack("{s:s, s:s?}", "config", d->cfg_arg, "errors", errors);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s)
        kernel_emit(d->k, event, s);
    free(s);
}

int daemon_reload(a4psd *d, char **errors)
{
    dconfig *nc;
    *errors = NULL;
    dlog(d, LOG_NOTICE, "reloading %s", d->cfg_arg);
    if (dconfig_load(d->cfg_arg, &nc, errors) != 0) {
        dlog(d, LOG_ERR, "config refused; still running on the previous one:");
        for (char *p = *errors, *nl; p && *p; p = nl + 1) {
            nl = strchrnul(p, '\n');
            dlog(d, LOG_ERR, "  %.*s", (int)(nl - p), p);
            if (!*nl)
                break;
        }
        pthread_mutex_lock(&d->mx);
        free(d->config_error);
        d->config_error = strdup(*errors);
        size_t n = d->config_error ? strlen(d->config_error) : 0;
        if (n && d->config_error[n - 1] == '\n')
            d->config_error[n - 1] = 0;          /* status shows it as one field */
        pthread_mutex_unlock(&d->mx);
        reload_event(d, "config_refused", *errors);
        return -1;
    }
    /* What only the running system can check, before anything applies. */
    struct stat st;
    int serr = stat(nc->plugin_dir, &st) != 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
    if (serr) {
        char *e;
        if (asprintf(&e, "%s: plugin_dir: %s: %s", nc->path, nc->plugin_dir, strerror(serr)) < 0)
            e = NULL;
        dconfig_free(nc);
        dlog(d, LOG_ERR, "config refused; still running on the previous one: %s", e ? e : "");
        pthread_mutex_lock(&d->mx);
        free(d->config_error);
        d->config_error = e ? strdup(e) : NULL;
        pthread_mutex_unlock(&d->mx);
        *errors = e;
        reload_event(d, "config_refused", e);
        return -1;
    }
    pthread_mutex_lock(&d->mx);
    free(d->config_error);
    d->config_error = NULL;
    pthread_mutex_unlock(&d->mx);
    apply(d, nc);
    dlog(d, LOG_NOTICE, "config applied");
    reload_event(d, "config_reloaded", NULL);
    return 0;
}

int daemon_snapshot(a4psd *d, bool all, char *msg, size_t msglen)
{
    if (!d->img) {
        snprintf(msg, msglen, "no image is configured (the image key of %s)", d->cfg->path);
        return -1;
    }
    char err[KERNEL_ERRLEN];
    pthread_mutex_lock(&d->snaplock);
    uint64_t t0 = (uint64_t)time(NULL);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    kernel_snapshot *s = NULL;
    int rc = kernel_snapshot_take(d->k, all, d->cfg->migrate_timeout_ms, &s, err, sizeof err);
    if (rc == 0) {
        pthread_mutex_lock(&d->evlock);
        char **audit = d->audit;
        size_t naudit = d->naudit;
        d->audit = NULL;
        d->naudit = d->capaudit = 0;
        pthread_mutex_unlock(&d->evlock);
        rc = image_audit(d->img, audit, naudit, d->cfg->audit_keep, err, sizeof err);
        if (rc != 0) {
            /* Not written: back in front of what came since, for the next
             * snapshot (as many as fit). */
            pthread_mutex_lock(&d->evlock);
            size_t keep = naudit + d->naudit > 10000 ? (10000 > d->naudit ? 10000 - d->naudit : 0)
                                                     : naudit;
            char **merged = malloc((keep + d->naudit + 1) * sizeof *merged);
            if (merged) {
                memcpy(merged, audit, keep * sizeof *merged);
                if (d->naudit)
                    memcpy(merged + keep, d->audit, d->naudit * sizeof *merged);
                free(d->audit);
                d->audit = merged;
                d->naudit += keep;
                d->capaudit = d->naudit + 1;
                for (size_t i = keep; i < naudit; i++)
                    free(audit[i]);
            } else {
                for (size_t i = 0; i < naudit; i++)
                    free(audit[i]);
            }
            pthread_mutex_unlock(&d->evlock);
        } else {
            for (size_t i = 0; i < naudit; i++)
                free(audit[i]);
        }
        free(audit);
        if (rc == 0)
            rc = image_write(d->img, s, err, sizeof err);
        kernel_snapshot_done(d->k, s, rc == 0);
        if (rc == 0)             /* the journal behind the cut can go */
            journal_covered(d->journal, s->log_position);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    pthread_mutex_lock(&d->mx);
    free(d->snapshot_error);
    d->snapshot_error = rc ? strdup(err) : NULL;
    if (rc == 0)
        d->last_snapshot = (time_t)t0;
    pthread_mutex_unlock(&d->mx);
    pthread_mutex_unlock(&d->snaplock);
    if (rc) {
        snprintf(msg, msglen, "snapshot failed, the image keeps the last one%s: %s",
                 d->journal && d->cfg->durability != DURABLE_SNAPSHOT
                     ? " and the journal everything since" : "", err);
        dlog(d, LOG_ERR, "%s", msg);
        kernel_snapshot_free(s);     /* taken but not written; NULL if the take failed */
        return -1;
    }
    snprintf(msg, msglen, "snapshot written to %s: %zu proto%s changed, %zu deleted, sends held "
             "%.3f ms, %.1f ms in all", d->cfg->image, s->nprotos, s->nprotos == 1 ? "" : "s",
             s->ndeleted, (double)s->stall_ns / 1e6, ms);
    dlog(d, LOG_INFO, "%s", msg);
    kernel_snapshot_free(s);
    return 0;
}

/* The copy is an image: born 0600 like the one it replaces. */
static int copy_file(const char *from, const char *to)
{
    int ofd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *in = fopen(from, "rb"), *out = in && ofd >= 0 ? fdopen(ofd, "wb") : NULL;
    if (!out && ofd >= 0)
        close(ofd);
    char buf[65536];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (in)
        fclose(in);
    if (out && (fflush(out) != 0 || fsync(fileno(out)) != 0))
        rc = -1;
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}

/* The image would not open: say which backups exist and how to start from
 * one -- or, when the config says so, do it (never for an image of a newer
 * format, which is not damaged and must not be replaced). */
static int image_recover(a4psd *d, const char *why)
{
    const dconfig *c = d->cfg;
    char path[4096], when[64], list[2048] = "";
    int newest = 0;
    for (int i = 1; i <= 100; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s.%d", c->image, i);
        if (stat(path, &st) != 0)
            continue;
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&st.st_mtime));
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s (%s)", used ? ", " : "", path, when);
        if (!newest)
            newest = i;
    }
    dlog(d, LOG_ERR, "%s", why);
    bool newer = strstr(why, "newer a4psd") != NULL;
    if (!newest) {
        dlog(d, LOG_ERR, "no backup generations of %s exist; move it aside to start empty", c->image);
        return -1;
    }
    if (!c->image_recover || newer) {
        dlog(d, LOG_ERR, "good generations: %s", list);
        dlog(d, LOG_ERR, "to start from the newest: mv %s %s.damaged && cp %s.%d %s  (or set "
             "image_recover = true in %s)", c->image, c->image, c->image, newest, c->image, c->path);
        return -1;
    }
    for (int i = newest; i <= 100; i++) {
        char err[KERNEL_ERRLEN];
        image *probe;
        snprintf(path, sizeof path, "%s.%d", c->image, i);
        if (access(path, R_OK) != 0 || image_open(path, &probe, err, sizeof err) != 0)
            continue;
        image_close(probe);
        char aside[4096];
        snprintf(aside, sizeof aside, "%s.damaged-%lld", c->image, (long long)time(NULL));
        if (rename(c->image, aside) != 0) {
            dlog(d, LOG_ERR, "cannot move %s aside: %s", c->image, strerror(errno));
            return -1;
        }
        for (const char *sfx = "-wal"; sfx; sfx = strcmp(sfx, "-wal") ? NULL : "-shm") {
            char a[4200], b[4200];
            snprintf(a, sizeof a, "%s%s", c->image, sfx);
            snprintf(b, sizeof b, "%s%s", aside, sfx);
            rename(a, b);        /* the damaged file's journal goes with it */
        }
        if (copy_file(path, c->image) != 0) {
            dlog(d, LOG_ERR, "cannot copy %s to %s: %s", path, c->image, strerror(errno));
            return -1;
        }
        dlog(d, LOG_ERR, "RECOVERED: starting from backup %s; what changed after it was taken is "
             "lost; the damaged image is kept as %s", path, aside);
        return 0;
    }
    dlog(d, LOG_ERR, "no backup of %s opens either (%s)", c->image, list);
    return -1;
}

/* Replaying the journal: a record for a live proto goes into its state; for
 * a proto the image holds but the kernel could not restore, into the image
 * itself (its state must not be lost while it waits for an operator); for a
 * proto neither knows, nowhere.  After a RESET of a proto (a migration, a
 * creation that no snapshot recorded), none of its later records apply:
 * they belong to a structure the image does not have, and no reply
 * acknowledged them (journal_sync waits for that snapshot). */
typedef struct replay_ctx {
    a4psd *d;
    char **reset;
    size_t nreset;
    uint64_t applied, to_image, dropped, after_reset;
} replay_ctx;

static int replay_one(void *arg, uint64_t seq, int op, const char *proto, const char *key,
                      const void *val, size_t len)
{
    replay_ctx *r = arg;
    (void)seq;
    for (size_t i = 0; i < r->nreset; i++)
        if (!strcmp(r->reset[i], proto)) {
            r->after_reset++;
            return 0;
        }
    if (op == KERNEL_STATE_RESET) {
        char **n = realloc(r->reset, (r->nreset + 1) * sizeof *n);
        if (!n || !(n[r->nreset] = strdup(proto)))
            return -1;
        r->reset = n;
        r->nreset++;
        return 0;
    }
    char err[KERNEL_ERRLEN];
    if (kernel_proto_exists(r->d->k, proto)) {
        int rc = op == KERNEL_STATE_SET ? kernel_state_set(r->d->k, proto, key, val, len)
                                        : kernel_state_delete(r->d->k, proto, key);
        if (rc != A4PS_OK && !(op == KERNEL_STATE_DEL && rc == A4PS_ENOENT))
            return -1;
        r->applied++;
    } else if (image_has_proto(r->d->img, proto)) {
        if (image_state_apply(r->d->img, proto, op == KERNEL_STATE_DEL, key, val, len, err,
                              sizeof err) != A4PS_OK) {
            dlog(r->d, LOG_ERR, "%s", err);
            return -1;
        }
        r->to_image++;
    } else {
        r->dropped++;
    }
    return 0;
}

/* Bring the journal's changes past the image's snapshot back, then begin
 * recording.  Any error stops the start: the journal holds acknowledged
 * changes that must not be cut behind a new snapshot. */
static int journal_begin(a4psd *d)
{
    char err[KERNEL_ERRLEN];
    journal_replayed jr;
    replay_ctx rc = {.d = d};
    uint64_t from = image_journal_seq(d->img);
    int r = journal_replay(d->journal, image_id(d->img), from, d->cfg->image_recover, replay_one,
                           &rc, &jr, err, sizeof err);
    for (size_t i = 0; i < rc.nreset; i++)
        free(rc.reset[i]);
    free(rc.reset);
    if (r != 0) {
        dlog(d, LOG_ERR, "%s", err);
        return -1;
    }
    if (jr.note[0])
        dlog(d, strstr(jr.note, "RECOVERED") || strstr(jr.note, "not in it") ? LOG_ERR
                                                                              : LOG_WARNING,
             "journal: %s", jr.note);
    if (jr.records)
        dlog(d, LOG_NOTICE, "journal: %llu change%s replayed (sequence %llu to %llu, %d "
             "segment%s; the image covered %llu): %llu into live protos, %llu into the image for "
             "protos not restored, %llu after a structural change no snapshot recorded (never "
             "acknowledged), %llu for protos that no longer exist",
             (unsigned long long)jr.records, jr.records == 1 ? "" : "s",
             (unsigned long long)jr.first, (unsigned long long)jr.last, jr.segments,
             jr.segments == 1 ? "" : "s", (unsigned long long)from,
             (unsigned long long)rc.applied, (unsigned long long)rc.to_image,
             (unsigned long long)rc.after_reset, (unsigned long long)rc.dropped);
    if (journal_start(d->journal, err, sizeof err) != 0) {
        dlog(d, LOG_ERR, "%s", err);
        return -1;
    }
    if (d->cfg->durability != DURABLE_SNAPSHOT)
        dlog(d, LOG_NOTICE, "journal: durability %s, beside %s from sequence %llu",
             dconfig_durability_name(d->cfg->durability), d->cfg->image,
             (unsigned long long)journal_last_seq(d->journal) + 1);
    return 0;
}

static void image_report(void *arg, const char *message)
{
    a4psd *d = arg;
    dlog(d, LOG_ERR, "%s", message);
    kernel_report_error(d->k, message);
}

static void on_signal(a4psd *d)
{
    struct signalfd_siginfo si;
    while (read(d->sigfd, &si, sizeof si) == sizeof si) {
        switch (si.ssi_signo) {
        case SIGHUP: {
            char *errors;
            daemon_reload(d, &errors);
            free(errors);
            break;
        }
        case SIGUSR1: {
            char msg[KERNEL_ERRLEN];
            dlog(d, LOG_NOTICE, "SIGUSR1: snapshot requested");
            daemon_snapshot(d, false, msg, sizeof msg);
            break;
        }
        case SIGTERM:
        case SIGINT:
            dlog(d, LOG_NOTICE, "%s: stopping: no new requests, finishing the calls in flight",
                 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            d->stopping = true;
            break;
        }
    }
}

static int add_fd(a4psd *d, int fd, int *slot)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = slot};
    return epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Fork the privileged helper, the first thing a4psd does after reading its
 * config: it keeps the rights a4psd started with and starts runsc for the
 * sandbox, since a4psd may not exec once confined.  None when the sandbox is
 * off (mode "none").  A helper whose runsc cannot run is kept: the sandbox
 * then reports why, as it did when a4psd ran runsc itself. */
static int helper_start(a4psd *d, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    const dconfig *c = d->cfg;
    if (c->sandbox_none) {
        snprintf(d->conf.helper, sizeof d->conf.helper, "none (sandbox.mode = \"none\")");
        return 0;
    }
    static char probe_dir[4096], forge_rt[4200];
    snprintf(probe_dir, sizeof probe_dir, "%s", c->probe ? c->probe : A4PS_PROBE_PATH);
    char *slash = strrchr(probe_dir, '/');
    if (slash)
        *slash = 0;
    snprintf(forge_rt, sizeof forge_rt, "%s/forge-sandbox", c->runtime_dir);
    /* The runtime dirs of verify_open's two sandboxes (dropped files, forge). */
    static const char *dirs[3];
    static const char *ro[5];
    dirs[0] = c->runtime_dir;
    dirs[1] = forge_rt;
    ro[0] = c->abi_dir ? c->abi_dir : A4PS_ABI_DIR;
    ro[1] = SANDBOX_ABI_MOUNT;
    ro[2] = probe_dir;
    ro[3] = SANDBOX_PROBE_MOUNT;
    static privsep_config pc;
    pc = (privsep_config){.runsc = c->runsc, .sandbox_dirs = dirs, .ro_dirs = ro,
                          .daemon_uid = uid, .daemon_gid = gid,
                          .max = {.cpu_s = c->sbx_cpu_s, .mem_bytes = c->sbx_mem_bytes,
                                  .nproc = c->sbx_nproc, .file_bytes = c->sbx_file_bytes}};
    char *why = NULL;
    if (privsep_start(&pc, &d->ps, &why, err, errlen) != 0)
        return -1;
    sandbox_set_runner(privsep_runner(d->ps));
    snprintf(d->conf.helper, sizeof d->conf.helper, "pid %d (uid %u): starts runsc%s%s",
             (int)privsep_pid(d->ps), (unsigned)geteuid(), why ? "; NOT READY: " : "",
             why ? why : "");
    if (why)
        dlog(d, LOG_ERR, "privileged helper: %s", why);
    else
        dlog(d, LOG_INFO, "privileged helper: pid %d, starts runsc for the sandbox",
             (int)privsep_pid(d->ps));
    d->helper_error = why;       /* the sandbox is unavailable for this reason */
    return 0;
}

/* limits.allow_threads as the daemon started with it (a reload does not
 * change it: a pinned generation cannot be unpinned anyway). */
static char **allow_threads;
static int nallow_threads;

static int may_thread(void *arg, const char *plugin)
{
    (void)arg;
    for (int i = 0; i < nallow_threads; i++)
        if (allow_threads[i] && strcmp(allow_threads[i], plugin) == 0)
            return 1;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: a4psd -c FILE            run the daemon in the foreground\n"
               "       a4psd --check-config -c FILE   validate FILE and exit\n");
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL;
    bool check = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': cfg_path = optarg; break;
        case 'C': check = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!cfg_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    dconfig *cfg;
    char *errors = NULL;
    if (dconfig_load(cfg_path, &cfg, &errors) != 0) {
        fputs(errors, stderr);
        free(errors);
        return 1;
    }
    if (check) {
        printf("%s: ok (%d proto%s, %d subscription%s)\n", cfg->path, cfg->nprotos,
               cfg->nprotos == 1 ? "" : "s", cfg->nsubs, cfg->nsubs == 1 ? "" : "s");
        dconfig_free(cfg);
        return 0;
    }

    a4psd dd = {.cfg = cfg, .cfg_arg = cfg_path, .level = cfg->log_level,
                 .sigfd = -1, .inofd = -1, .wd = -1, .lfd = -1, .tickfd = -1,
                 .jobfd = -1, .evfd = -1, .vfd = -1};
    a4psd *d = &dd;
    /* The helpers that reach outside first: forked while a4psd is one thread
     * and still holds the credentials in its environment, before it drops
     * its user and confines itself (which forbids exec and network sockets
     * here); then the credentials leave a4psd's environment. */
    char err[KERNEL_ERRLEN];
    if (outside_start(&cfg->outside, &d->outside, err, sizeof err) != 0) {
        dlog(d, LOG_ERR, "%s: %s", cfg->path, err);
        return 1;
    }
    outside_scrub_environment(&cfg->outside);
    if (cfg->outside.nhttp || cfg->outside.nrun)
        dlog(d, LOG_NOTICE, "outside: http helper pid %d (%d plugin%s), run helper pid %d (%d "
             "plugin%s)", (int)outside_http_pid(d->outside), cfg->outside.nhttp,
             cfg->outside.nhttp == 1 ? "" : "s", (int)outside_run_pid(d->outside),
             cfg->outside.nrun, cfg->outside.nrun == 1 ? "" : "s");
    d->started = time(NULL);
    d->start_uid = getuid();
    d->last_snapshot = d->started;   /* the interval counts from the start */
    pthread_mutex_init(&d->mx, NULL);
    pthread_mutex_init(&d->qlock, NULL);
    pthread_cond_init(&d->qcv, NULL);
    pthread_mutex_init(&d->evlock, NULL);
    setvbuf(stderr, NULL, _IOLBF, 0);

    /* Privilege separation (DESIGN.md §9): the helper first, while we have
     * every right; then what the user needs; the socket; the drop. */
    uid_t uid;
    gid_t gid;
    bool drop;
    if (drop_lookup(d, &uid, &gid, &drop) != 0)
        return 1;
    if (helper_start(d, uid, gid, err, sizeof err) != 0) {
        dlog(d, LOG_ERR, "%s", err);
        return 1;
    }
    /* A file-size limit (RLIMIT_FSIZE) must fail a snapshot's write with
     * EFBIG, which SQLite reports and we survive, not kill the daemon. */
    signal(SIGXFSZ, SIG_IGN);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sigdelset(&set, SIGPIPE);
    d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->jobfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    d->tickfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (d->sigfd < 0 || d->epfd < 0 || d->jobfd < 0 || d->evfd < 0 || d->tickfd < 0) {
        dlog(d, LOG_ERR, "cannot set up the event loop: %s", strerror(errno));
        return 1;
    }
    struct itimerspec tick = {{1, 0}, {1, 0}};
    timerfd_settime(d->tickfd, 0, &tick, NULL);
    add_fd(d, d->sigfd, &d->sigfd);
    add_fd(d, d->jobfd, &d->jobfd);
    add_fd(d, d->evfd, &d->evfd);
    add_fd(d, d->tickfd, &d->tickfd);

    struct stat st;
    if (stat(cfg->plugin_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (mkdir(cfg->plugin_dir, 0755) != 0) {
            dlog(d, LOG_ERR, "%s: plugin_dir %s: %s", cfg->path, cfg->plugin_dir, strerror(errno));
            return 1;
        }
    }
    if (drop_prepare(d, drop, uid, gid) != 0)
        return 1;
    /* The socket is bound before the drop (its directory need not be the
     * user's) and then given to the user. */
    if (ctl_open(d, err, sizeof err) != 0) {
        dlog(d, LOG_ERR, "%s: %s", cfg->path, err);
        return 1;
    }
    if (drop && lchown(cfg->socket, uid, cfg->group ? (gid_t)-1 : gid) != 0) {
        dlog(d, LOG_ERR, "control.socket %s: cannot give it to %s: %s", cfg->socket,
             cfg->daemon_user, strerror(errno));
        return 1;
    }
    if (drop && drop_now(d, uid, gid) != 0)
        return 1;
    /* SQLite's temporary files (VACUUM INTO's, for the backups) go to the
     * runtime directory: /tmp and /var/tmp are outside what Landlock lets
     * a4psd write. */
    setenv("SQLITE_TMPDIR", cfg->runtime_dir, 1);
    /* Confined before the first thread, so every thread is (Landlock holds
     * for the threads a thread creates after it). */
    if (confine_rlimits(d, &d->conf) != 0 || confine_apply(d, &d->conf) != 0) {
        dlog(d, LOG_ERR, "not starting half-confined (daemon.confine = false turns "
             "confinement off, loudly)");
        return 1;
    }
    /* Plugin code that calls exit(), _exit() or exit_group faults instead
     * of ending a4psd.  Process-wide and inherited by children: after any
     * helper process is forked, before the kernel and its threads. */
    char what[KERNEL_ERRLEN];
    if (!cfg->contain_exits)
        dlog(d, LOG_WARNING, "limits.contain_exits = false in %s: plugin exits are NOT "
             "CONTAINED -- a plugin's exit() ends a4psd at once, with no final snapshot",
             cfg->path);
    else if (kernel_contain_exits(what, sizeof what) == 0)
        dlog(d, LOG_NOTICE, "plugin exits contained: %s", what);
    else
        dlog(d, LOG_ERR, "plugin exits NOT fully contained: %s", what);
    allow_threads = cfg->allow_threads;
    nallow_threads = cfg->nallow_threads;
    cfg->allow_threads = NULL;   /* ours now: a reload keeps this list */
    cfg->nallow_threads = 0;
    if (nallow_threads > 0) {
        char names[512] = "";
        for (int i = 0; i < nallow_threads; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                     i ? ", " : "", allow_threads[i] ? allow_threads[i] : "?");
        dlog(d, LOG_NOTICE, "limits.allow_threads: %s may import thread and process "
             "creation (their generations are never unmapped)", names);
    }
    kernel_config kc = {
        .runtime_dir = cfg->runtime_dir,
        .max_plugin_bytes = cfg->max_plugin_bytes,
        .hook_timeout_ms = cfg->hook_timeout_ms,
        .migrate_timeout_ms = cfg->migrate_timeout_ms,
        .event_queue_len = cfg->event_queue,
        .run_self_test = 1,
        .log_level = LOG_DEBUG,  /* the sink filters, so the level can change */
        .log = kernel_log_sink,
        .log_arg = d,
        .on_event = ctl_on_event,
        .on_event_arg = d,
        .verify = verify_hook,   /* nothing unverified is dlopened (verify.c) */
        .verify_arg = d,
        .forge = forge_hook,     /* plugins open forge tasks (forge.c) */
        .forge_arg = d,
#ifdef A4PS_JEMALLOC
        .alloc_counters = jemalloc_counters,   /* what each call allocates, per version */
#endif
        .check_threads = 1,      /* thread imports need limits.allow_threads */
        /* No list: such a file is refused before dlopen runs any of it. */
        .may_thread = nallow_threads ? may_thread : NULL,
        .http = outside_http_call, /* plugins reach outside through the helpers */
        .http_arg = d->outside,
        .run = outside_run_call,
        .run_arg = d->outside,
    };
#ifdef A4PS_JEMALLOC
    const uint64_t *ta, *tf;
    if (jemalloc_counters(&ta, &tf) != 0) {
        dlog(d, LOG_WARNING, "accounting per call is off: this jemalloc has no "
             "thread.allocatedp (built without stats)");
        kc.alloc_counters = NULL;
    }
#else
    dlog(d, LOG_NOTICE, "accounting per call is off: this a4psd is not linked with jemalloc "
         "(a sanitizer build)");
#endif
    d->audit_on = cfg->image != NULL;
    pthread_mutex_init(&d->snaplock, NULL);
    if (cfg->image) {
        /* The kernel tells it every state change from its creation; it
         * records from journal_begin, after the image and the replay. */
        if (journal_open(cfg->image, cfg->durability, &d->journal, err, sizeof err) != 0) {
            dlog(d, LOG_ERR, "%s", err);
            return 1;
        }
        kc.state_log = (kernel_state_log){journal_change, journal_cut, d->journal};
    } else if (cfg->durability != DURABLE_SNAPSHOT) {
        dlog(d, LOG_NOTICE, "durability %s: no image is configured, so nothing persists",
             dconfig_durability_name(cfg->durability));
    }
    d->k = kernel_create(&kc, err, sizeof err);
    if (!d->k) {
        dlog(d, LOG_ERR, "%s: %s", cfg->path, err);
        return 1;
    }
    /* After the kernel, which makes (and tidies) the runtime directory the
     * sandbox works in; nothing is loaded before this. */
    if (verify_open(d) != 0) {
        dlog(d, LOG_ERR, "sandbox: out of memory");
        kernel_destroy(d->k);
        return 1;
    }
    if ((d->vfd = verify_fd(d)) >= 0)
        add_fd(d, d->vfd, &d->vfd);
    if (cfg->image) {
        /* The image first: what it holds wins over the config's initial
         * state; then the plugin directory, whose newer versions upgrade;
         * then the config's protos the image does not have. */
        int irc = image_open(cfg->image, &d->img, err, sizeof err);
        if (irc == IMAGE_EBINARY)
            irc = damage_recover(d, irc, err);   /* mend the binary, lose nothing */
        else if (irc != 0)
            irc = image_recover(d, err) != 0 ? -1
                                             : image_open(cfg->image, &d->img, err, sizeof err);
        if (irc != 0) {
            dlog(d, LOG_ERR, "not starting (the image is left as it is)");
            kernel_destroy(d->k);
            return 1;
        }
        if (image_notice(d->img))
            dlog(d, LOG_WARNING, "image modes (it holds every proto's state and every plugin "
                 "binary, so only a4psd's user may read it): %s", image_notice(d->img));
        verify_seed(d, d->img);
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s/restore", cfg->runtime_dir);
        image_restored r;
        if (image_restore(d->img, d->k, tmp, &r, image_report, d, err, sizeof err) != 0) {
            dlog(d, LOG_ERR, "%s", err);
            image_close(d->img);
            kernel_destroy(d->k);
            return 1;
        }
        damage_take_unrestorable(d);
        dlog(d, LOG_NOTICE, "image %s: %d version%s and %d proto%s restored%s", cfg->image,
             r.versions, r.versions == 1 ? "" : "s", r.protos, r.protos == 1 ? "" : "s",
             r.failed ? " (some left out: see above)" : "");
        if (journal_begin(d) != 0) {
            dlog(d, LOG_ERR, "not starting (the image and the journal are left as they are)");
            image_close(d->img);
            kernel_destroy(d->k);
            return 1;
        }
        if (image_backup(d->img, cfg->image_backups, err, sizeof err) != 0)
            dlog(d, LOG_WARNING, "%s", err);
    }
    /* The forge before the workers: a plugin may open a task from any send. */
    if (watch_open(d, err, sizeof err) != 0 ||
        forge_open(d, err, sizeof err) != 0 || ctl_workers_start(d, err, sizeof err) != 0) {
        dlog(d, LOG_ERR, "%s: %s", cfg->path, err);
        forge_stop(d);
        verify_stop(d);
        ctl_shutdown(d);
        kernel_destroy(d->k);
        forge_free(d);
        verify_close(d);
        return 1;
    }
    dlog(d, LOG_NOTICE, "a4psd %s up (pid %d): config %s, plugins %s, socket %s, %d workers; "
         "user %s", A4PS_ABI_VERSION_STRING, (int)getpid(), cfg->path, cfg->plugin_dir,
         cfg->socket, cfg->workers, d->conf.user);
    watch_scan(d, true);
    daemon_create_protos(d, NULL);
    /* What the replay brought back and the start changed goes into the image
     * now, and the journal behind it is cut. */
    if (d->img && journal_last_seq(d->journal) > image_journal_seq(d->img)) {
        char msg[KERNEL_ERRLEN];
        daemon_snapshot(d, false, msg, sizeof msg);
    }
    int guarded[3] = {d->ps ? privsep_fd(d->ps) : -1, -1, -1};
    int nguarded = 1 + outside_fds(d->outside, guarded + 1);
    if (confine_seal(d, &d->conf, guarded, nguarded) != 0)
        dlog(d, LOG_ERR, "confine: NOT SEALED: a plugin could add a seccomp filter, lower a "
             "limit, open a socket or stop a4psd");

    while (!d->stopping) {
        struct epoll_event evs[64];
        int n = epoll_wait(d->epfd, evs, 64, -1);
        if (n < 0 && errno != EINTR) {
            dlog(d, LOG_ERR, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n && !d->stopping; i++) {
            void *p = evs[i].data.ptr;
            if (p == &d->sigfd)
                on_signal(d);
            else if (p == &d->inofd)
                watch_event(d);
            else if (p == &d->lfd)
                ctl_accept(d);
            else if (p == &d->vfd)
                watch_verified(d);
            else if (p == &d->jobfd)
                ctl_jobs_done(d);
            else if (p == &d->evfd)
                ctl_stream_events(d);
            else if (p == &d->tickfd) {
                uint64_t v;
                if (read(d->tickfd, &v, sizeof v) < 0 && errno != EAGAIN)
                    dlog(d, LOG_WARNING, "tick: %s", strerror(errno));
                ctl_tick(d);
                /* A journal that grew past JOURNAL_SNAPSHOT_BYTES since the
                 * last snapshot brings the next one forward (Redis's
                 * auto-aof-rewrite), so a restart never replays much. */
                /* So does a failed journal (a snapshot that holds everything
                 * heals it), at most every JOURNAL_RETRY_S. */
                bool journal_due = time(NULL) - d->last_snapshot_try >= JOURNAL_RETRY_S &&
                    (journal_uncovered_bytes(d->journal) > JOURNAL_SNAPSHOT_BYTES ||
                     journal_wants_snapshot(d->journal));
                if (d->img && ((d->cfg->snapshot_interval_s &&
                    time(NULL) - d->last_snapshot >= (time_t)d->cfg->snapshot_interval_s) ||
                    journal_due)) {
                    d->last_snapshot_try = time(NULL);
                    char msg[KERNEL_ERRLEN];
                    if (daemon_snapshot(d, false, msg, sizeof msg) != 0)
                        d->last_snapshot = time(NULL);   /* retry at the next interval */
                }
            } else
                ctl_client_event(d, p, evs[i].events);
        }
        ctl_reap(d);
    }
    forge_stop(d);               /* a task mid-stage stops at its next check */
    verify_stop(d);              /* files still queued are not loaded */
    ctl_shutdown(d);
    watch_close(d);
    int status = 0;
    if (d->img) {
        char msg[KERNEL_ERRLEN];
        char err[KERNEL_ERRLEN];
        bool saved = daemon_snapshot(d, false, msg, sizeof msg) == 0;
        if (!saved)
            status = 1;          /* the image keeps the last good snapshot */
        else if (image_backup(d->img, d->cfg->image_backups, err, sizeof err) != 0)
            dlog(d, LOG_WARNING, "%s", err);
        int jrc = journal_close(d->journal, saved, err, sizeof err);
        if (!saved && d->cfg->durability != DURABLE_SNAPSHOT)
            dlog(d, jrc ? LOG_ERR : LOG_WARNING, "%s", jrc
                 ? "the final snapshot failed and the journal could not be written either: "
                   "changes after the last good snapshot that were not acknowledged are lost"
                 : "the final snapshot failed: the journal beside the image holds every "
                   "acknowledged change and the next start replays it");
        else if (!saved)
            dlog(d, LOG_ERR, "the final snapshot failed and durability = \"snapshot\" keeps no "
                 "journal: the changes since the last good snapshot are lost");
        if (jrc && saved)
            dlog(d, LOG_WARNING, "%s", err);
        image_close(d->img);
    }
    if (d->stuck) {
        /* Plugin code is still running on a worker: tearing the kernel down
         * under it would crash; exit and let the OS reclaim. */
        dlog(d, LOG_ERR, "stopped with calls still running");
        _exit(1);
    }
    kernel_destroy(d->k);
    journal_free(d->journal);    /* after the kernel, which tells it of every proto's end */
    forge_free(d);               /* workers and plugins may have used it until now */
    outside_stop(d->outside);
    verify_close(d);
    privsep_stop(d->ps);         /* the helper ends with its channel */
    free(d->helper_error);
    dlog(d, LOG_NOTICE, "stopped");
    for (unsigned i = 0; i < EVENT_RING; i++)
        free(d->ring[i]);
    for (size_t i = 0; i < d->nstream; i++)
        free(d->stream[i]);
    free(d->stream);
    free(d->config_error);
    free(d->snapshot_error);
    free(d->unrestorable);
    for (size_t i = 0; i < d->naudit; i++)
        free(d->audit[i]);
    free(d->audit);
    dconfig_free(d->cfg);
    for (int i = 0; i < nallow_threads; i++)
        free(allow_threads[i]);
    free(allow_threads);
    close(d->epfd);
    close(d->sigfd);
    close(d->jobfd);
    close(d->evfd);
    close(d->tickfd);
    return status;
}
