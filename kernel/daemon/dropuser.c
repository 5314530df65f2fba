/* dropuser.c -- a4psd gives up root for its own user (daemon.user).
 *
 * Started as root, a4psd forks the privileged helper first, then hands the
 * user what it must own -- the runtime directory and what is in it (never
 * the helper's sandbox directories), the image's own files, the forge's
 * directory -- and, after the control socket is bound, drops: no
 * supplementary groups, then gid, then uid, all three of each, and checks
 * that root cannot be had back.  Directories that are not a4psd's (the
 * image's directory, the socket's, the plugin directory) are never chowned:
 * the image's must already be writable by the user, or a4psd says how to
 * make it so and stops. */
#define _GNU_SOURCE
#include "daemon/confine.h"
#include "daemon/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

int drop_lookup(a4psd *d, uid_t *uid, gid_t *gid, bool *drop)
{
    const dconfig *c = d->cfg;
    *drop = false;
    *uid = geteuid();
    *gid = getegid();
    if (geteuid() != 0) {
        struct passwd *pw = getpwuid(geteuid());
        snprintf(d->conf.user, sizeof d->conf.user, "%s (uid %u): started as non-root, no drop",
                 pw ? pw->pw_name : "?", (unsigned)geteuid());
        dlog(d, LOG_NOTICE, "started as uid %u (not root): running as it, nothing to drop "
             "(daemon.user = \"%s\" applies when started as root)", (unsigned)geteuid(),
             c->daemon_user);
        return 0;
    }
    if (!strcmp(c->daemon_user, "root")) {
        snprintf(d->conf.user, sizeof d->conf.user, "ROOT (daemon.user = \"root\"): plugins run "
                 "with root's rights, inside the confinement only");
        dlog(d, LOG_WARNING, "%s: daemon.user = \"root\": a4psd KEEPS ROOT -- every plugin runs "
             "as root (confined by Landlock and seccomp only); set daemon.user to an "
             "unprivileged user", c->path);
        return 0;
    }
    struct passwd *pw = getpwnam(c->daemon_user);
    if (!pw) {
        dlog(d, LOG_ERR, "%s: daemon.user: no user named '%s' on this machine (scripts/setup "
             "creates a4ps: useradd --system --no-create-home --shell /usr/sbin/nologin a4ps)",
             c->path, c->daemon_user);
        return -1;
    }
    if (pw->pw_uid == 0) {
        dlog(d, LOG_ERR, "%s: daemon.user '%s' is uid 0: say \"root\" if that is meant", c->path,
             c->daemon_user);
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    if (c->daemon_group) {
        struct group *g = getgrnam(c->daemon_group);
        if (!g) {
            dlog(d, LOG_ERR, "%s: daemon.group: no group named '%s'", c->path, c->daemon_group);
            return -1;
        }
        *gid = g->gr_gid;
    }
    *drop = true;
    return 0;
}

static uid_t t_uid;
static gid_t t_gid;
static size_t skip_len;          /* the runtime dir's path length */

/* The helper's directories stay root's (see privsep.c). */
static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    if (ftw->level == 1 && (!strcmp(path + skip_len, "/sandbox") ||
                            !strcmp(path + skip_len, "/forge-sandbox")))
        return FTW_SKIP_SUBTREE;
    if (st->st_uid != t_uid || st->st_gid != t_gid)
        if (lchown(path, t_uid, t_gid) != 0)
            return FTW_STOP;
    return FTW_CONTINUE;
}

static int chown_tree(a4psd *d, const char *dir, uid_t uid, gid_t gid)
{
    t_uid = uid;
    t_gid = gid;
    skip_len = strlen(dir);
    if (nftw(dir, chown_one, 16, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL) != 0) {
        dlog(d, LOG_ERR, "cannot give %s to uid %u: %s", dir, (unsigned)uid, strerror(errno));
        return -1;
    }
    return 0;
}

static int mkdir_owned(a4psd *d, const char *dir, mode_t mode, bool drop, uid_t uid, gid_t gid)
{
    if (mkdir(dir, mode) == 0) {
        if (drop && chown(dir, uid, gid) != 0) {
            dlog(d, LOG_ERR, "cannot give %s to uid %u: %s", dir, (unsigned)uid, strerror(errno));
            return -1;
        }
    } else if (errno != EEXIST) {
        dlog(d, LOG_ERR, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

int drop_prepare(a4psd *d, bool drop, uid_t uid, gid_t gid)
{
    const dconfig *c = d->cfg;
    /* Landlock's rules are on directories that exist: make them now. */
    if (mkdir_owned(d, c->runtime_dir, 0700, drop, uid, gid) != 0)
        return -1;
    if (drop && chown_tree(d, c->runtime_dir, uid, gid) != 0)
        return -1;
    if (c->forge_dir && (mkdir_owned(d, c->forge_dir, 0755, drop, uid, gid) != 0 ||
                         (drop && chown_tree(d, c->forge_dir, uid, gid) != 0)))
        return -1;
    if (c->image) {
        char dir[PATH_MAX], base[NAME_MAX + 1];
        snprintf(dir, sizeof dir, "%s", c->image);
        char *slash = strrchr(dir, '/');
        snprintf(base, sizeof base, "%s", slash ? slash + 1 : dir);
        if (slash)
            *slash = 0;
        if (mkdir_owned(d, dir, 0700, drop, uid, gid) != 0)
            return -1;
        struct stat st;
        if (drop && (stat(dir, &st) != 0 || st.st_uid != uid)) {
            dlog(d, LOG_ERR, "%s: image %s: its directory %s must belong to daemon.user %s "
                 "(SQLite writes the WAL and a4psd the backups beside the image), and a4psd "
                 "does not take over a directory it did not make: chown %s %s, or keep the "
                 "image in a directory of its own", c->path, c->image, dir, c->daemon_user,
                 c->daemon_user, dir);
            return -1;
        }
        /* The image's files: IMAGE, its -wal and -shm, IMAGE.N backups,
         * IMAGE.damaged-*; regular files only, never through a link. */
        DIR *dd = drop ? opendir(dir) : NULL;
        size_t bl = strlen(base);
        for (struct dirent *e; dd && (e = readdir(dd));) {
            if (strncmp(e->d_name, base, bl) || (e->d_name[bl] && e->d_name[bl] != '-' &&
                                                 e->d_name[bl] != '.'))
                continue;
            char p[PATH_MAX + NAME_MAX + 2];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid != uid &&
                lchown(p, uid, gid) != 0) {
                dlog(d, LOG_ERR, "cannot give %s to %s: %s", p, c->daemon_user, strerror(errno));
                closedir(dd);
                return -1;
            }
        }
        if (dd)
            closedir(dd);
    }
    return 0;
}

int drop_now(a4psd *d, uid_t uid, gid_t gid)
{
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
        dlog(d, LOG_ERR, "cannot drop to %s (uid %u, gid %u): %s", d->cfg->daemon_user,
             (unsigned)uid, (unsigned)gid, strerror(errno));
        return -1;
    }
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) != 0 || getresgid(&rg, &eg, &sg) != 0 || r != uid || e != uid ||
        s != uid || rg != gid || eg != gid || sg != gid || getgroups(0, NULL) != 0 ||
        setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0) {
        dlog(d, LOG_ERR, "dropped to uid %u but root can still be had back: stopping",
             (unsigned)uid);
        return -1;
    }
#if A4PS_SANITIZED
    /* LeakSanitizer's tracer must ptrace us; a changed uid made us
     * undumpable.  Release builds stay undumpable (no core, no ptrace by
     * other processes of the user). */
    prctl(PR_SET_DUMPABLE, 1);
#endif
    snprintf(d->conf.user, sizeof d->conf.user, "%s (uid %u, gid %u): dropped from root",
             d->cfg->daemon_user, (unsigned)uid, (unsigned)gid);
    dlog(d, LOG_NOTICE, "running as %s (uid %u, gid %u); root is kept by the privileged helper "
         "only", d->cfg->daemon_user, (unsigned)uid, (unsigned)gid);
    return 0;
}
