/* daemon.h -- a4psd's internals: the daemon object shared by its modules.
 *
 *   a4psd.c   main, the epoll loop, signals, applying a config
 *   ctl.c     the control socket: clients, requests, workers, event stream
 *   watch.c   the plugin directory: scan and inotify
 *   config.c  parsing the config file
 *   journal.c the journal of state changes beside the image
 *
 * One thread runs the loop and owns every field not marked otherwise; the
 * worker threads touch only the job queues and the kernel. */
#ifndef A4PS_DAEMON_H
#define A4PS_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

#include "daemon/config.h"
#include "daemon/confine.h"
#include "kernel.h"

typedef struct client client;
typedef struct job job;
typedef struct dverify dverify;
typedef struct dforge dforge;
struct image;
struct privsep;

#define EVENT_RING 256

typedef struct a4psd {
    dconfig *cfg;                /* the config in force */
    const char *cfg_arg;         /* as given with -c */
    kernel *k;
    dverify *ver;                /* the sandbox and what passed it (verify.c) */
    dforge *forge;               /* forge tasks and their thread (forge.c) */
    outside *outside;            /* the http and run helpers (outside.c) */
    struct image *img;           /* NULL when the config names none */
    struct journal *journal;     /* beside the image; NULL without one (journal.c) */
    pthread_mutex_t snaplock;    /* one snapshot, or other write of the image, at a time */
    time_t last_snapshot;
    time_t last_snapshot_try;    /* of one the journal asked for (a4psd.c) */
    char *snapshot_error;        /* of the last failed snapshot; under mx */
    int level;                   /* log level, read by every thread */
    time_t started;
    uid_t start_uid;             /* who started a4psd: may always control it */
    struct privsep *ps;          /* the privileged helper; NULL without a sandbox */
    char *helper_error;          /* why the helper cannot run the sandbox; NULL: it can */
    dconfine conf;               /* the user and each confinement layer, for status */
    bool stopping;
    bool stuck;                  /* calls still running when we gave up waiting */

    int epfd, sigfd, inofd, wd, lfd, tickfd;
    /* Plugin files that arrived unreadable to a4psd's user (install(1)
     * writes 0600 and chmods after the close): looked at again when their
     * mode changes (IN_ATTRIB), never before.  watch.c; at most WATCH_UNREADABLE. */
    char *unreadable[16];
    int jobfd;                   /* eventfd: jobs completed */
    int vfd;                     /* eventfd: dropped files verified (verify.c) */
    int evfd;                    /* eventfd: events to stream */

    /* config error of the last reload (NULL when it applied); under mx */
    pthread_mutex_t mx;
    char *config_error;
    int nclients;                /* written by the loop, read by workers */

    client *clients;
    client *graveyard;           /* closed this loop turn; an event for one may
                                    still be in the batch, so ctl_reap frees
                                    them after it */
    uint64_t next_client_id;

    /* The control socket's refusals and closings: counted for status
     * (written by the loop, read by workers: atomics), logged rate-limited. */
    struct {
        uint64_t accepted, refused_full, refused_uid, evicted, idle_closed, timed_out;
    } ctlcount;
    struct ratelog {
        uint64_t last_ms;        /* of the last line written */
        unsigned long held;      /* since then, not written */
    } rl_full, rl_uid, rl_evicted, rl_idle, rl_timeout;

    /* workers and their queues (under qlock) */
    pthread_t *workers;
    int nworkers;
    pthread_mutex_t qlock;
    pthread_cond_t qcv;
    job *todo, *todo_tail, *done, *done_tail;
    int running;                 /* jobs being executed */
    bool qstop;

    /* recent events and the ones not yet streamed (under evlock) */
    pthread_mutex_t evlock;
    char *ring[EVENT_RING];
    unsigned ring_next;
    char **stream;
    size_t nstream, capstream;
    uint64_t stream_dropped;
    bool audit_on;               /* set once, before the kernel starts */
    char **audit;                /* events for the image's audit log, not yet written */
    size_t naudit, capaudit;

    /* Protos the image holds but could not restore (damage.c): never
     * recreated from the config nor touched by a snapshot until the operator
     * destroys or rolls them back.  Changed by the loop; under mx. */
    struct dunrestorable {
        char name[64], plugin[64], version[32];
        uint32_t state_version;
        char reason[512];
    } *unrestorable;
    size_t nunrestorable;
} a4psd;

void dlog(a4psd *d, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* a4psd.c */
int daemon_reload(a4psd *d, char **errors);   /* 0 applied, -1 refused (errors) */
/* Write a snapshot now (all: every proto, not just the changed ones); a
 * one-line summary or the error goes to msg. */
int daemon_snapshot(a4psd *d, bool all, char *msg, size_t msglen);

/* ctl.c */
int ctl_open(a4psd *d, char *err, size_t errlen);
void ctl_accept(a4psd *d);
void ctl_client_event(a4psd *d, client *c, uint32_t events);
void ctl_jobs_done(a4psd *d);
void ctl_stream_events(a4psd *d);
void ctl_tick(a4psd *d);
void ctl_reap(a4psd *d);
int ctl_workers_start(a4psd *d, char *err, size_t errlen);
void ctl_shutdown(a4psd *d);
void ctl_on_event(void *arg, const char *event, const char *json, size_t len);

/* watch.c */
int watch_open(a4psd *d, char *err, size_t errlen);
void watch_close(a4psd *d);
void watch_event(a4psd *d);
void watch_scan(a4psd *d, bool initial);
void watch_verified(a4psd *d);  /* load the files the verifier finished */
void daemon_plugin_loaded(a4psd *d, const char *plugin);

/* verify.c: the kernel's verification hook, a4ps-probe in the sandbox */
int verify_open(a4psd *d);
void verify_close(a4psd *d);
void verify_seed(a4psd *d, struct image *img);
int verify_hook(void *arg, const char *path, const char *sha256_hex, char **report,
                char *why, size_t whylen);
/* Dropped files: verify_submit queues name (in dir) for the verifier
 * thread and returns true, or false when there is none (then load at once;
 * the hook probes).  verify_fd becomes readable when some are done;
 * verify_done returns their names (malloc'd, the caller frees), ready for
 * kernel_load.  verify_stop ends the thread (before the kernel goes). */
bool verify_submit(a4psd *d, const char *dir, const char *name);
int verify_fd(a4psd *d);
char **verify_done(a4psd *d, size_t *n);
void verify_stop(a4psd *d);
/* Trust this hash from now on (the forge probed it); report is copied. */
void verify_passed(a4psd *d, const char *sha_hex, const char *report);
/* Probe / compile in the sandbox: as sandbox_probe / sandbox_compile.  A
 * probe's verdict counts only for the bytes whose sha256 (hex) the caller
 * took: a report on other bytes is -1, "the file changed"; on a failure (0)
 * err says why in one line.  A pass counts only if the report shows every
 * case of cases_json run and passed and, when selector is not NULL, that
 * method present and called (probe_report_accept): the one place a report
 * is judged; a refused pass is 0 and its report says why.  The
 * forge (forge true, and every compile) has a sandbox of its own, so a
 * dropped file is never held up behind a task. */
int verify_probe(a4psd *d, bool forge, const char *path, const char *sha256,
                 const void *state, size_t state_len, const char *cases_json,
                 const char *selector, char **report, char *err, size_t errlen);
int verify_compile(a4psd *d, const char *source, size_t len, const char *out_so,
                   char **diagnostics, char *err, size_t errlen);
/* NULL when the sandbox can run; otherwise why not. */
const char *verify_unavailable(a4psd *d);
const char *verify_abi_dir(a4psd *d);
json_t *verify_status(a4psd *d);

/* forge.c: tasks; the forge_* calls are safe from any thread */
int forge_open(a4psd *d, char *err, size_t errlen);
void forge_stop(a4psd *d);     /* before the workers stop */
void forge_free(a4psd *d);     /* after the kernel is destroyed */
json_t *forge_task_open(a4psd *d, json_t *req, const char *proposer, char *err,
                        size_t errlen);
int forge_hook(void *arg, const char *proto, const char *plugin, const char *request,
               char **reply);
json_t *forge_tasks(a4psd *d);
json_t *forge_task(a4psd *d, unsigned id);
int forge_cancel(a4psd *d, unsigned id);

/* a4psd.c: create the config's protos whose plugin is loaded now */
void daemon_create_protos(a4psd *d, const char *only_plugin);

/* damage.c: what a4psd does about a damaged image (issue 11) */
/* image_open failed with rc (why): repair or recover as the config allows
 * and open d->img, or say why not and how (0: d->img is open). */
int damage_recover(a4psd *d, int rc, const char *why);
/* After image_restore: take the image's unrestorable protos into d, held. */
void damage_take_unrestorable(a4psd *d);
/* Is proto name unrestorable?  (Any thread.) */
bool damage_is_unrestorable(a4psd *d, const char *name);
/* Status: the unrestorable protos as a JSON array (caller owns it). */
json_t *damage_status(a4psd *d);
/* The ctl requests: a result, or NULL with an error code and msg.  destroy
 * (an unrestorable proto leaves the image; a live one the kernel, and the
 * image at the next snapshot) and rollback of an unrestorable proto run on
 * the loop thread, which writes the image; image check on a worker. */
json_t *damage_destroy(a4psd *d, const char *proto, const char **code, char *msg, size_t len);
json_t *damage_rollback(a4psd *d, const char *proto, const char *version, const char **code,
                        char *msg, size_t len);
json_t *damage_image_check(a4psd *d, const char **code, char *msg, size_t len);

#endif
