/* damage.c -- what a4psd does about a damaged image without erasing state
 * (issue 11).
 *
 * A stored binary that fails its SHA-256 is repaired from a verified copy
 * (a backup generation or a plugin_dir file) when image_recover allows it,
 * never by falling back to an older image, which would lose what came
 * after.  A proto whose version cannot come back is "unrestorable": its rows
 * stay in the image exactly as they are, the config never recreates it
 * empty, snapshots never touch it (image_hold), until the operator destroys
 * it or rolls it onto a version that is loaded.  Also `a4psctl image check`. */
#define _GNU_SOURCE
#include "daemon/daemon.h"
#include "image/image.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define BACKUPS_MAX 100          /* as image.c looks for them */

/* Where a verified copy of binary sha is: a backup generation's blob or a
 * plugin_dir file, each hashed here; the first found is *bytes (malloc'd). */
static bool find_copy(a4psd *d, const char *sha, char *where, size_t wlen, void **bytes,
                      size_t *len)
{
    char path[4200];
    for (int i = 1; i <= BACKUPS_MAX; i++) {
        snprintf(path, sizeof path, "%s.%d", d->cfg->image, i);
        if (access(path, R_OK) != 0)
            continue;
        if (image_find_binary(path, sha, bytes, len) == A4PS_OK) {
            snprintf(where, wlen, "backup generation %s", path);
            return true;
        }
    }
    DIR *dir = opendir(d->cfg->plugin_dir);
    struct dirent *e;
    bool found = false;
    while (dir && !found && (e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", d->cfg->plugin_dir, e->d_name);
        void *b = NULL;
        size_t n = 0;
        if (kernel_read_file(path, d->cfg->max_plugin_bytes, &b, &n) != 0)
            continue;            /* not a regular file, unreadable or too large */
        char hex[65];
        kernel_sha256(b, n, NULL, hex);
        if (!strcmp(hex, sha)) {
            snprintf(where, wlen, "plugin file %s", path);
            *bytes = b;
            *len = n;
            found = true;
        } else {
            free(b);
        }
    }
    if (dir)
        closedir(dir);
    return found;
}

int damage_recover(a4psd *d, int rc, const char *why)
{
    const dconfig *c = d->cfg;
    char err[KERNEL_ERRLEN];
    image *img;
    (void)rc;
    dlog(d, LOG_ERR, "%s", why);
    /* Everything else in it checked out (image_open reports binaries last):
     * open it as it is to see which binaries, and mend only those. */
    if (image_open_ex(c->image, IMAGE_OPEN_BAD_BINARIES, &img, err, sizeof err) != 0) {
        dlog(d, LOG_ERR, "%s", err);
        return -1;
    }
    size_t nbad;
    const image_bad_binary *bad = image_bad_binaries(img, &nbad);
    image_bad_binary *list = nbad ? malloc(nbad * sizeof *list) : NULL;
    if (nbad && !list) {
        image_close(img);
        dlog(d, LOG_ERR, "out of memory");
        return -1;
    }
    if (nbad)
        memcpy(list, bad, nbad * sizeof *list);
    int missing = 0;
    for (size_t i = 0; i < nbad; i++) {
        char where[4300];
        void *bytes = NULL;
        size_t len = 0;
        bool have = find_copy(d, list[i].sha256, where, sizeof where, &bytes, &len);
        if (!have) {
            missing++;
            dlog(d, LOG_ERR, "image %s: the stored binary of %s (sha256 %s) is damaged and no "
                 "verified copy exists: not in any backup generation %s.N, not in %s",
                 c->image, list[i].versions, list[i].sha256, c->image, c->plugin_dir);
            if (!c->image_recover)
                dlog(d, LOG_ERR, "image_recover = true in %s starts without %s; the protos on it "
                     "are kept UNRESTORABLE with their state untouched (a4psctl destroy or "
                     "a4psctl rollback decides); putting the file with that sha256 in %s "
                     "repairs it instead", c->path, list[i].versions, c->plugin_dir);
            continue;
        }
        if (!c->image_recover) {
            dlog(d, LOG_ERR, "image %s: the stored binary of %s (sha256 %s) is damaged; a "
                 "verified good copy is in %s; image_recover = true in %s repairs it from "
                 "there (nothing else changes)", c->image, list[i].versions, list[i].sha256,
                 where, c->path);
            free(bytes);
            continue;
        }
        int r = image_binary_repair(img, list[i].sha256, bytes, len, err, sizeof err);
        free(bytes);
        if (r != A4PS_OK) {
            dlog(d, LOG_ERR, "image %s: repairing %s failed: %s", c->image, list[i].versions,
                 err);
            free(list);
            image_close(img);
            return -1;
        }
        dlog(d, LOG_ERR, "REPAIRED: image %s: the stored binary of %s (sha256 %s) from %s; "
             "nothing else changed", c->image, list[i].versions, list[i].sha256, where);
    }
    free(list);
    if (!c->image_recover) {
        image_close(img);
        return -1;
    }
    if (missing)
        dlog(d, LOG_ERR, "image_recover: starting without %d damaged binar%s (no older backup "
             "replaces the image: that would lose what came after it); the protos on %s stay "
             "in the image, unrestorable", missing, missing == 1 ? "y" : "ies",
             missing == 1 ? "it" : "them");
    d->img = img;
    return 0;
}

void damage_take_unrestorable(a4psd *d)
{
    size_t n;
    const image_unrestorable *u = image_unrestorables(d->img, &n);
    if (!n)
        return;
    struct dunrestorable *list = calloc(n, sizeof *list);
    if (!list) {
        dlog(d, LOG_ERR, "out of memory listing the unrestorable protos");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(list[i].name, sizeof list[i].name, "%s", u[i].name);
        snprintf(list[i].plugin, sizeof list[i].plugin, "%s", u[i].plugin);
        snprintf(list[i].version, sizeof list[i].version, "%s", u[i].version);
        list[i].state_version = u[i].state_version;
        snprintf(list[i].reason, sizeof list[i].reason, "%s", u[i].reason);
        if (image_hold(d->img, u[i].name, true) != A4PS_OK)
            dlog(d, LOG_ERR, "out of memory holding proto %s", u[i].name);
        dlog(d, LOG_ERR, "proto %s (%s %s) is UNRESTORABLE: %s; its rows stay in the image "
             "untouched, the config does not recreate it; decide with: a4psctl destroy %s, or "
             "a4psctl rollback %s [VERSION]", u[i].name, u[i].plugin, u[i].version, u[i].reason,
             u[i].name, u[i].name);
    }
    pthread_mutex_lock(&d->mx);
    free(d->unrestorable);
    d->unrestorable = list;
    d->nunrestorable = n;
    pthread_mutex_unlock(&d->mx);
}

bool damage_is_unrestorable(a4psd *d, const char *name)
{
    bool found = false;
    pthread_mutex_lock(&d->mx);
    for (size_t i = 0; i < d->nunrestorable && !found; i++)
        found = !strcmp(d->unrestorable[i].name, name);
    pthread_mutex_unlock(&d->mx);
    return found;
}

/* Take name off the list (it was destroyed or came back). */
static void forget(a4psd *d, const char *name)
{
    pthread_mutex_lock(&d->mx);
    for (size_t i = 0; i < d->nunrestorable; i++)
        if (!strcmp(d->unrestorable[i].name, name)) {
            d->unrestorable[i] = d->unrestorable[--d->nunrestorable];
            break;
        }
    pthread_mutex_unlock(&d->mx);
    if (d->img) {
        pthread_mutex_lock(&d->snaplock);   /* image_write reads the held names */
        image_hold(d->img, name, false);
        pthread_mutex_unlock(&d->snaplock);
    }
}

json_t *damage_status(a4psd *d)
{
    json_t *a = json_array();
    pthread_mutex_lock(&d->mx);
    for (size_t i = 0; i < d->nunrestorable; i++) {
        const struct dunrestorable *u = &d->unrestorable[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:i, s:s}", "name", u->name,
                                           "plugin", u->plugin, "version", u->version,
                                           "state_version", (int)u->state_version, "reason",
                                           u->reason));
    }
    pthread_mutex_unlock(&d->mx);
    return a;
}

static bool in_config(a4psd *d, const char *name)
{
    for (int i = 0; i < d->cfg->nprotos; i++)
        if (!strcmp(d->cfg->protos[i].name, name))
            return true;
    return false;
}

json_t *damage_destroy(a4psd *d, const char *proto, const char **code, char *msg, size_t len)
{
    char err[KERNEL_ERRLEN];
    const char *again = in_config(d, proto) ? " (it is in the config: a reload or a restart "
                                              "creates it again, empty)" : "";
    if (damage_is_unrestorable(d, proto)) {
        int rows = 0;
        /* snaplock: a worker may be writing a snapshot (the journal's
         * reply barrier) on the same connection. */
        pthread_mutex_lock(&d->snaplock);
        int rc = d->img ? image_proto_delete(d->img, proto, &rows, err, sizeof err) : A4PS_ENOENT;
        pthread_mutex_unlock(&d->snaplock);
        if (rc != A4PS_OK && rc != A4PS_ENOENT) {
            *code = "failed";
            snprintf(msg, len, "destroy %s: %s (it stays unrestorable)", proto, err);
            return NULL;
        }
        forget(d, proto);
        char text[KERNEL_ERRLEN];
        snprintf(text, sizeof text, "unrestorable proto %s destroyed: its record and %d state "
                 "row%s removed from the image%s", proto, rows, rows == 1 ? "" : "s", again);
        dlog(d, LOG_WARNING, "%s", text);
        return json_pack("{s:s, s:s, s:i, s:s}", "proto", proto, "was", "unrestorable",
                         "state_rows", rows, "message", text);
    }
    int rc = kernel_proto_destroy(d->k, proto, err, sizeof err);
    if (rc != A4PS_OK) {
        *code = rc == A4PS_ENOENT ? "not_found" : "failed";
        snprintf(msg, len, "%s", err);
        return NULL;
    }
    /* Acknowledged only once the image no longer holds it: a crash before
     * the next interval's snapshot must not bring it back. */
    char text[KERNEL_ERRLEN], snap[KERNEL_ERRLEN];
    if (!d->img)
        snprintf(text, sizeof text, "proto %s destroyed; no image is kept%s", proto, again);
    else if (daemon_snapshot(d, false, snap, sizeof snap) == 0)
        snprintf(text, sizeof text, "proto %s destroyed and removed from the image%s", proto,
                 again);
    else
        snprintf(text, sizeof text, "proto %s destroyed, but the snapshot that removes it from "
                 "the image failed (a crash before the next one brings it back): %s%s", proto,
                 snap, again);
    dlog(d, LOG_WARNING, "%s", text);
    return json_pack("{s:s, s:s, s:s}", "proto", proto, "was", "live", "message", text);
}

/* The loaded versions of plugin (not quarantined), from the kernel's status. */
static json_t *loaded_versions(a4psd *d, const char *plugin)
{
    char *s = kernel_status(d->k);
    json_t *st = s ? json_loads(s, 0, NULL) : NULL;
    free(s);
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(st, "versions"), i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *status = json_string_value(json_object_get(v, "status"));
        if (name && !strcmp(name, plugin) && !(status && !strcmp(status, "quarantined")))
            json_array_append(out, v);
    }
    json_decref(st);
    return out;
}

json_t *damage_rollback(a4psd *d, const char *proto, const char *version, const char **code,
                        char *msg, size_t len)
{
    struct dunrestorable u;
    bool found = false;
    pthread_mutex_lock(&d->mx);
    for (size_t i = 0; i < d->nunrestorable && !found; i++)
        if (!strcmp(d->unrestorable[i].name, proto)) {
            u = d->unrestorable[i];
            found = true;
        }
    pthread_mutex_unlock(&d->mx);
    *code = "failed";
    if (!found || !d->img) {
        *code = "not_found";
        snprintf(msg, len, "rollback: %s is not an unrestorable proto", proto);
        return NULL;
    }
    json_t *vs = loaded_versions(d, u.plugin);
    const char *pick = NULL;
    char seen[1024] = "";
    size_t i;
    json_t *v;
    json_array_foreach(vs, i, v) {
        const char *ver = json_string_value(json_object_get(v, "version"));
        int sv = (int)json_integer_value(json_object_get(v, "state_version"));
        size_t used = strlen(seen);
        snprintf(seen + used, sizeof seen - used, "%s%s (state layout %d)", used ? ", " : "",
                 ver ? ver : "?", sv);
        if (!ver)
            continue;
        if (version) {
            if (!strcmp(ver, version)) {
                if ((uint32_t)sv != u.state_version) {
                    snprintf(msg, len, "rollback %s: %s %s keeps state layout %d, the proto's "
                             "rows are layout %u: refused (no migration runs on rows that "
                             "never were live)", proto, u.plugin, ver, sv, u.state_version);
                    json_decref(vs);
                    return NULL;
                }
                pick = ver;
            }
        } else if ((uint32_t)sv == u.state_version && (!pick || strverscmp(ver, pick) > 0)) {
            pick = ver;
        }
    }
    if (!pick) {
        if (version)
            snprintf(msg, len, "rollback %s: no loaded version %s of plugin %s (loaded: %s)",
                     proto, version, u.plugin, seen[0] ? seen : "none");
        else
            snprintf(msg, len, "rollback %s: no loaded version of plugin %s keeps state layout "
                     "%u (loaded: %s); drop one in %s first, or a4psctl destroy %s", proto,
                     u.plugin, u.state_version, seen[0] ? seen : "none", d->cfg->plugin_dir,
                     proto);
        json_decref(vs);
        return NULL;
    }
    char target[32];
    snprintf(target, sizeof target, "%s", pick);
    json_decref(vs);
    kernel_snap_proto p;
    char err[KERNEL_ERRLEN];
    pthread_mutex_lock(&d->snaplock);
    int rc = image_proto_load(d->img, proto, &p, err, sizeof err);
    pthread_mutex_unlock(&d->snaplock);
    if (rc != A4PS_OK) {
        snprintf(msg, len, "rollback %s: %s", proto, err);
        return NULL;
    }
    snprintf(p.version, sizeof p.version, "%s", target);
    size_t nkeys = p.nkeys;
    rc = kernel_restore_proto(d->k, &p, err, sizeof err);
    image_proto_free(&p);
    if (rc != A4PS_OK) {
        snprintf(msg, len, "rollback %s onto %s %s: %s (it stays unrestorable)", proto, u.plugin,
                 target, err);
        return NULL;
    }
    forget(d, proto);
    /* Restored protos count as saved; the image must learn the new version
     * now, or the next start finds the old one unrestorable again. */
    char smsg[KERNEL_ERRLEN];
    bool saved = daemon_snapshot(d, true, smsg, sizeof smsg) == 0;
    daemon_create_protos(d, u.plugin);  /* its config subscriptions */
    char text[KERNEL_ERRLEN];
    snprintf(text, sizeof text, "unrestorable proto %s is back on %s %s (was %s) with its %zu "
             "state key%s from the image%s%s", proto, u.plugin, target, u.version, nkeys,
             nkeys == 1 ? "" : "s", saved ? "; image updated" : "; NOT YET SAVED: ",
             saved ? "" : smsg);
    dlog(d, LOG_WARNING, "%s", text);
    return json_pack("{s:s, s:s, s:s, s:s}", "proto", proto, "version", target, "was",
                     u.version, "message", text);
}

json_t *damage_image_check(a4psd *d, const char **code, char *msg, size_t len)
{
    pthread_mutex_lock(&d->mx);
    char *path = d->cfg->image ? strdup(d->cfg->image) : NULL;
    pthread_mutex_unlock(&d->mx);
    if (!path) {
        *code = "not_found";
        snprintf(msg, len, "image check: no image is configured");
        return NULL;
    }
    image_check_result r;
    char err[KERNEL_ERRLEN];
    if (image_check(path, &r, err, sizeof err) != A4PS_OK) {
        *code = "failed";
        snprintf(msg, len, "image check: %s", err);
        free(path);
        return NULL;
    }
    json_t *problems = json_array();
    for (size_t i = 0; i < r.nproblems; i++)
        json_array_append_new(problems, json_string(r.problems[i]));
    json_t *out = json_pack("{s:s, s:b, s:o, s:I, s:I, s:I}", "image", path, "damaged",
                            r.nproblems > 0, "problems", problems, "binaries",
                            (json_int_t)r.binaries, "protos", (json_int_t)r.protos,
                            "state_rows", (json_int_t)r.state_rows);
    if (r.nproblems)
        dlog(d, LOG_ERR, "image check: %s is DAMAGED: %zu problem%s, the first: %s", path,
             r.nproblems, r.nproblems == 1 ? "" : "s", r.problems[0]);
    image_check_free(&r);
    free(path);
    return out;
}
