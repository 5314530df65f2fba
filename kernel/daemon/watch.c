/* watch.c -- the plugin directory: a scan at start and on SIGHUP, inotify
 * in between.  Files that arrive while a4psd runs are verified in the
 * sandbox on the verifier thread (verify.c) before they are loaded here.
 *
 * A `.so` that arrives by rename (IN_MOVED_TO) or whose writer closed it
 * (IN_CLOSE_WRITE) is loaded: a half-written file never is, because the load
 * waits for the close.  Names are collected per read of the inotify fd, so a
 * burst of events for one file loads it once, and the kernel refuses a binary
 * it already has by hash.  Dot-files and anything not ending in ".so" are
 * ignored (editors' and copy tools' temporaries).  A queue overflow means
 * events were lost: the whole directory is scanned again.  A deleted file
 * unloads nothing -- the kernel has its own copy.  a4psd runs as its own
 * user, so a file can arrive closed but not yet readable to it (install(1)
 * writes it 0600 as root, then chmods): such a file waits for its mode to
 * change (IN_ATTRIB) instead of being refused. */
#define _GNU_SOURCE
#include "daemon/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <syslog.h>
#include <unistd.h>

static bool wanted(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 3 && !strcmp(name + n - 3, ".so") && !strchr(name, '~');
}

/* Load one file; on success swap the protos of its plugin and create the
 * protos of the config that were waiting for it. */
static void load_now(a4psd *d, const char *name, bool initial);

/* A file that arrived while running is probed on the verifier thread first
 * (the loop goes on serving), then loaded by watch_verified.  The start's
 * scan loads in order, at once. */
static void load_one(a4psd *d, const char *name, bool initial)
{
    if (!initial && verify_submit(d, d->cfg->plugin_dir, name))
        return;
    load_now(d, name, initial);
}

void watch_verified(a4psd *d)
{
    size_t n;
    char **names = verify_done(d, &n);
    for (size_t i = 0; i < n; i++) {
        load_now(d, names[i], false);
        free(names[i]);
    }
    free(names);
}

static void load_now(a4psd *d, const char *name, bool initial)
{
    char path[PATH_MAX], err[KERNEL_ERRLEN];
    snprintf(path, sizeof path, "%s/%s", d->cfg->plugin_dir, name);
    kernel_version_info info;
    int rc = kernel_load_ex(d->k, path, initial ? 0 : KERNEL_LOAD_NO_DOWNGRADE, &info, err,
                            sizeof err);
    if (rc == A4PS_EEXIST) {
        dlog(d, LOG_DEBUG, "%s: already loaded as %s %s", path, info.name, info.version);
        return;
    }
    if (rc != A4PS_OK)
        return;                  /* the kernel logged and recorded the refusal */
    daemon_plugin_loaded(d, info.name);
}

void daemon_plugin_loaded(a4psd *d, const char *plugin)
{
    char err[KERNEL_ERRLEN];
    /* Protos the config pins to a version stay on it. */
    const char *pinned[256];
    size_t npinned = 0;
    for (int i = 0; i < d->cfg->nprotos && npinned < 256; i++)
        if (d->cfg->protos[i].version && !strcmp(d->cfg->protos[i].plugin, plugin))
            pinned[npinned++] = d->cfg->protos[i].name;
    int n = kernel_upgrade_except(d->k, plugin, pinned, npinned, err, sizeof err);
    if (n < 0)
        dlog(d, LOG_ERR, "upgrading the protos of %s: %s", plugin, err);
    else if (n > 0)
        dlog(d, LOG_NOTICE, "%s: %d proto%s now on its newest version", plugin, n, n == 1 ? "" : "s");
    daemon_create_protos(d, plugin);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void watch_scan(a4psd *d, bool initial)
{
    DIR *dir = opendir(d->cfg->plugin_dir);
    if (!dir) {
        dlog(d, LOG_ERR, "plugin_dir %s: cannot scan: %s", d->cfg->plugin_dir, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!wanted(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(dir);
    if (n)                       /* qsort(NULL, 0) is undefined */
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        load_one(d, names[i], initial);
        free(names[i]);
    }
    free(names);
    dlog(d, LOG_INFO, "scanned %s: %zu plugin file%s", d->cfg->plugin_dir, n, n == 1 ? "" : "s");
}

int watch_open(a4psd *d, char *err, size_t errlen)
{
    if (d->inofd < 0) {
        d->inofd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (d->inofd < 0) {
            snprintf(err, errlen, "inotify: %s", strerror(errno));
            return -1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &d->inofd};
        epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->inofd, &ev);
    }
    /* The new watch first: if it cannot be had, the old one stays. */
    int wd = inotify_add_watch(d->inofd, d->cfg->plugin_dir,
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF |
                                   IN_MOVE_SELF |
                                   IN_ONLYDIR);
    if (wd < 0) {
        snprintf(err, errlen, "plugin_dir %s: cannot watch: %s", d->cfg->plugin_dir,
                 strerror(errno));
        return -1;
    }
    if (d->wd >= 0 && d->wd != wd)
        inotify_rm_watch(d->inofd, d->wd);
    d->wd = wd;
    return 0;
}

void watch_close(a4psd *d)
{
    if (d->inofd >= 0)
        close(d->inofd);
    d->inofd = d->wd = -1;
}

#define NUNREADABLE (sizeof ((a4psd *)0)->unreadable / sizeof ((a4psd *)0)->unreadable[0])

/* Whether an event makes name worth loading now.  A close or a rename: yes,
 * unless a4psd's user cannot read the file yet -- then it is remembered and
 * waits for IN_ATTRIB.  A change of mode: only for a file remembered so
 * (a writer's own fchmod mid-write must not load half a file). */
static bool ready(a4psd *d, const char *name, uint32_t mask)
{
    size_t slot = NUNREADABLE;
    for (size_t i = 0; i < NUNREADABLE; i++)
        if (d->unreadable[i] && !strcmp(d->unreadable[i], name))
            slot = i;
    if (mask & IN_ATTRIB) {
        if (slot == NUNREADABLE)
            return false;
    }
    int dfd = open(d->cfg->plugin_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    bool readable = dfd < 0 || faccessat(dfd, name, R_OK, AT_EACCESS) == 0 || errno != EACCES;
    if (dfd >= 0)
        close(dfd);
    if (readable) {
        if (slot != NUNREADABLE) {
            free(d->unreadable[slot]);
            d->unreadable[slot] = NULL;
        }
        return true;
    }
    if (slot == NUNREADABLE) {
        /* The oldest gives way; it is still loaded by a SIGHUP's rescan. */
        free(d->unreadable[0]);
        memmove(d->unreadable, d->unreadable + 1, (NUNREADABLE - 1) * sizeof d->unreadable[0]);
        d->unreadable[NUNREADABLE - 1] = strdup(name);
        dlog(d, LOG_INFO, "%s/%s: not readable by a4psd's user yet; loaded when its mode "
             "changes", d->cfg->plugin_dir, name);
    }
    return false;
}

void watch_event(a4psd *d)
{
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    char **names = NULL;
    size_t n = 0, cap = 0;
    bool rescan = false;
    for (;;) {
        ssize_t len = read(d->inofd, buf, sizeof buf);
        if (len <= 0)
            break;
        for (char *p = buf; p < buf + len;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                rescan = true;
                continue;
            }
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
                dlog(d, LOG_ERR, "plugin_dir %s was removed or moved: no longer watched "
                     "(recreate it and send SIGHUP)", d->cfg->plugin_dir);
                /* A moved directory would still be watched under its new
                 * name, where our paths no longer lead. */
                if (ev->wd == d->wd) {
                    inotify_rm_watch(d->inofd, d->wd);
                    d->wd = -1;
                }
                continue;
            }
            if (ev->mask & IN_IGNORED) {
                if (ev->wd == d->wd)
                    d->wd = -1;
                continue;
            }
            if (ev->wd != d->wd)
                continue;        /* from a watch we already dropped */
            if (!ev->len || !wanted(ev->name))
                continue;
            if (!ready(d, ev->name, ev->mask))
                continue;
            bool dup = false;
            for (size_t i = 0; i < n && !dup; i++)
                dup = !strcmp(names[i], ev->name);
            if (dup)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                char **nn = realloc(names, cap * sizeof *nn);
                if (!nn)
                    break;
                names = nn;
            }
            if ((names[n] = strdup(ev->name)))
                n++;
        }
    }
    if (rescan) {
        dlog(d, LOG_WARNING, "inotify queue overflowed: rescanning %s", d->cfg->plugin_dir);
        watch_scan(d, false);
    } else {
        for (size_t i = 0; i < n; i++)
            load_one(d, names[i], false);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
