/* image.c -- the image file: SQLite in WAL mode, schema format 1.
 *
 *   meta(key, value)             format, kernel version, created, snapshots
 *   binaries(sha256, bytes)      every plugin binary, once by hash
 *   behaviours(...)              every version ever live: identity, parent,
 *                                origin, status, source (forge builds)
 *                                and test report (the sandbox probe's)
 *   protos(...)                  identity, persona, current version, lineage
 *   state(proto, key, value, sum) the protos' state, each row checksummed
 *   audit(seq, time, event, data) what changed the system, bounded
 *   codex, amendments            reserved for the codex issue
 *
 * Every write is one transaction, so a crash at any moment leaves the last
 * committed snapshot; WAL keeps readers (sqlite3 CLI) out of the writer's way.
 * SQLite's quick_check sees a damaged page structure but not a flipped bit
 * inside a value, so every protos and state row carries a checksum, all
 * verified when the image is opened; binaries are verified by their SHA-256
 * then too (a mismatch alone is IMAGE_EBINARY: a4psd mends that binary from a
 * verified copy rather than lose state to an older image) and again before
 * they are loaded.  image_check is the full check on demand. */
#define _GNU_SOURCE
#include "image/image.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct image {
    sqlite3 *db;
    char *path;
    char id[33];                 /* meta image_id */
    uint64_t journal_seq;        /* meta journal_seq: the journal it covers */
    char *notice;                /* modes tightened at open, for the caller's log */
    /* -- damage (issue 11): binaries that failed their hash at open, protos
     * image_restore could not bring back, names image_write must not touch */
    image_bad_binary *bad;
    size_t nbad;
    image_unrestorable *left;
    size_t nleft;
    char **held;
    size_t nheld;
};

/* The image holds every proto's state and every plugin binary: it, its WAL
 * and SHM (SQLite gives them the image's own mode) and its backups are
 * 0600.  What an older a4psd or an operator left wider is tightened. */
#define IMAGE_MODE 0600
#define IMAGE_BACKUPS_MAX 100    /* the generations image_recover looks for */

static void note(image *img, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(image *img, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t old = img->notice ? strlen(img->notice) : 0;
    char *n = realloc(img->notice, old + strlen(line) + 3);
    if (!n)
        return;
    snprintf(n + old, strlen(line) + 3, "%s%s", old ? "; " : "", line);
    img->notice = n;
}

/* Take group and other bits off an existing file (follow: the image itself
 * may be a link an operator made; its side files are ours and never are). */
static void tighten(image *img, const char *path, bool follow)
{
    struct stat st;
    char why[256];
    int fd = kernel_open_regular(path, !follow, &st, why, sizeof why);
    if (fd < 0) {
        if (errno != ENOENT)
            note(img, "%s: %s: its mode was not checked", path, why);
        return;
    }
    if (st.st_mode & 077) {
        mode_t to = st.st_mode & 0700;
        if (fchmod(fd, to) == 0)
            note(img, "%s was mode %04o: tightened to %04o", path, (unsigned)(st.st_mode & 07777),
                 (unsigned)to);
        else
            note(img, "%s is mode %04o and cannot be tightened: %s", path,
                 (unsigned)(st.st_mode & 07777), strerror(errno));
    }
    close(fd);
}

static void tighten_all(image *img)
{
    char p[4200];
    tighten(img, img->path, true);
    for (const char *sfx = "-wal"; sfx; sfx = strcmp(sfx, "-wal") ? NULL : "-shm") {
        snprintf(p, sizeof p, "%s%s", img->path, sfx);
        tighten(img, p, false);
    }
    for (int i = 1; i <= IMAGE_BACKUPS_MAX; i++) {
        snprintf(p, sizeof p, "%s.%d", img->path, i);
        tighten(img, p, false);
    }
}

/* Create path empty with IMAGE_MODE, never through a link: SQLite would
 * create it 0644 (less the umask), and the umask is the whole process's. */
static int create_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, IMAGE_MODE);
    if (fd < 0)
        return -1;
    /* A umask wider than 0177 could only narrow it; make it exact. */
    int rc = fchmod(fd, IMAGE_MODE);
    close(fd);
    return rc;
}

const char *image_notice(const image *img)
{
    return img->notice;
}

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS binaries(sha256 TEXT PRIMARY KEY, bytes BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS behaviours("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL REFERENCES binaries(sha256), state_version INTEGER NOT NULL,"
    "  parent TEXT, origin TEXT, status TEXT NOT NULL, reason TEXT, loaded_at INTEGER,"
    "  source TEXT, test_report TEXT, UNIQUE(name, version));"
    "CREATE TABLE IF NOT EXISTS protos("
    "  name TEXT PRIMARY KEY, plugin TEXT NOT NULL, version TEXT NOT NULL,"
    "  state_version INTEGER NOT NULL, persona TEXT, deps TEXT, history TEXT,"
    "  cloned_from TEXT, saved_at INTEGER NOT NULL, sum INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS state("
    "  proto TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, sum INTEGER NOT NULL,"
    "  PRIMARY KEY(proto, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS audit("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, event TEXT NOT NULL,"
    "  data TEXT);"
    "CREATE TABLE IF NOT EXISTS codex(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS amendments("
    "  id INTEGER PRIMARY KEY, proposed_at INTEGER, proposer TEXT, text TEXT NOT NULL,"
    "  status TEXT NOT NULL, decided_at INTEGER, decided_by TEXT);";

/* FNV-1a over the parts of a row, each terminated so "ab"+"c" != "a"+"bc". */
static uint64_t sum_add(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    h ^= 0xff;
    return h * 1099511628211ull;
}

static uint64_t sum_str(uint64_t h, const char *s)
{
    return s ? sum_add(h, s, strlen(s)) : sum_add(h, "\x01null", 5);
}

static int64_t state_sum(const char *proto, const char *key, const void *val, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    h = sum_str(h, proto);
    h = sum_str(h, key);
    return (int64_t)sum_add(h, val, len);
}

static int64_t proto_sum(const char *name, const char *plugin, const char *version,
                         int state_version, const char *persona, const char *deps,
                         const char *history, const char *cloned_from)
{
    char sv[16];
    snprintf(sv, sizeof sv, "%d", state_version);
    uint64_t h = 1469598103934665603ull;
    const char *parts[] = {name, plugin, version, sv, persona, deps, history, cloned_from};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        h = sum_str(h, parts[i]);
    return (int64_t)h;
}

static int fail(image *img, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "image %s: %s: %s", img->path, what, sqlite3_errmsg(img->db));
    return A4PS_ERROR;
}

static int exec(image *img, const char *sql, char *err, size_t errlen, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(img->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "image %s: %s: %s", img->path, what, msg ? msg : "?");
        sqlite3_free(msg);
        return A4PS_ERROR;
    }
    return A4PS_OK;
}

static char *meta_get(image *img, const char *key)
{
    sqlite3_stmt *st;
    char *out = NULL;
    if (sqlite3_prepare_v2(img->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

static int meta_set(image *img, const char *key, const char *value)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(img->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

/* Every protos and state row against its checksum. */
static int verify_rows(image *img, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = A4PS_OK;
    if (sqlite3_prepare_v2(img->db, "SELECT proto, key, value, sum FROM state", -1, &st, NULL))
        return fail(img, err, errlen, "reading state");
    while (rc == A4PS_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *proto = (const char *)sqlite3_column_text(st, 0);
        const char *key = (const char *)sqlite3_column_text(st, 1);
        const void *val = sqlite3_column_blob(st, 2);
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        if (state_sum(proto, key, val, len) != sqlite3_column_int64(st, 3)) {
            snprintf(err, errlen, "image %s is damaged or not an image: the state of proto '%s', "
                     "key '%s', fails its checksum", img->path, proto, key);
            rc = A4PS_ERROR;
        }
    }
    sqlite3_finalize(st);
    if (rc != A4PS_OK)
        return rc;
    if (sqlite3_prepare_v2(img->db, "SELECT name, plugin, version, state_version, persona, deps,"
                           " history, cloned_from, sum FROM protos", -1, &st, NULL))
        return fail(img, err, errlen, "reading protos");
    while (rc == A4PS_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *c[8];
        for (int i = 0; i < 8; i++)
            c[i] = (const char *)sqlite3_column_text(st, i);
        if (proto_sum(c[0], c[1], c[2], sqlite3_column_int(st, 3), c[4], c[5], c[6], c[7]) !=
            sqlite3_column_int64(st, 8)) {
            snprintf(err, errlen, "image %s is damaged or not an image: the record of proto '%s' "
                     "fails its checksum", img->path, c[0] ? c[0] : "?");
            rc = A4PS_ERROR;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Every stored binary against its SHA-256 (quick_check and the row sums do
 * not look inside a blob): the ones that fail go to img->bad, with the
 * versions that use them. */
static int verify_binaries(image *img, char *err, size_t errlen)
{
    sqlite3_stmt *st, *who;
    if (sqlite3_prepare_v2(img->db, "SELECT sha256, bytes FROM binaries", -1, &st, NULL))
        return fail(img, err, errlen, "reading binaries");
    if (sqlite3_prepare_v2(img->db, "SELECT name || ' ' || version FROM behaviours"
                           " WHERE sha256 = ? ORDER BY id", -1, &who, NULL)) {
        sqlite3_finalize(st);
        return fail(img, err, errlen, "reading versions");
    }
    int rc = A4PS_OK;
    while (rc == A4PS_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *sha = (const char *)sqlite3_column_text(st, 0);
        const void *bytes = sqlite3_column_blob(st, 1);
        char hex[65];
        kernel_sha256(bytes, (size_t)sqlite3_column_bytes(st, 1), NULL, hex);
        if (sha && !strcmp(hex, sha))
            continue;
        image_bad_binary *nb = realloc(img->bad, (img->nbad + 1) * sizeof *nb);
        if (!nb) {
            snprintf(err, errlen, "image %s: out of memory", img->path);
            rc = A4PS_ENOMEM;
            break;
        }
        img->bad = nb;
        image_bad_binary *b = &img->bad[img->nbad++];
        memset(b, 0, sizeof *b);
        snprintf(b->sha256, sizeof b->sha256, "%s", sha ? sha : "");
        snprintf(b->actual, sizeof b->actual, "%s", hex);
        sqlite3_reset(who);
        sqlite3_bind_text(who, 1, b->sha256, -1, SQLITE_STATIC);
        while (sqlite3_step(who) == SQLITE_ROW) {
            size_t used = strlen(b->versions);
            snprintf(b->versions + used, sizeof b->versions - used, "%s%s", used ? ", " : "",
                     (const char *)sqlite3_column_text(who, 0));
        }
        if (!b->versions[0])
            snprintf(b->versions, sizeof b->versions, "no version");
    }
    sqlite3_finalize(st);
    sqlite3_finalize(who);
    return rc;
}

int image_open(const char *path, image **out, char *err, size_t errlen)
{
    return image_open_ex(path, 0, out, err, errlen);
}

int image_open_ex(const char *path, unsigned flags, image **out, char *err, size_t errlen)
{
    image *img = calloc(1, sizeof *img);
    if (!img || !(img->path = strdup(path))) {
        free(img);
        snprintf(err, errlen, "image %s: out of memory", path);
        return A4PS_ENOMEM;
    }
    struct stat st;
    bool existed = stat(path, &st) == 0 && st.st_size > 0;
    if (lstat(path, &st) != 0 && errno == ENOENT && create_private(path) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "image %s: cannot create: %s", path, strerror(errno));
        image_close(img);
        return A4PS_ERROR;
    }
    tighten_all(img);
    if (sqlite3_open_v2(path, &img->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        int rc = fail(img, err, errlen, "cannot open");
        image_close(img);
        return rc;
    }
    sqlite3_busy_timeout(img->db, 2000);
    char *msg = NULL;
    /* quick_check reads every page: a truncated or bit-flipped file stops
     * here, before anything of it is believed. */
    if (existed) {
        sqlite3_stmt *q;
        const char *verdict = NULL;
        int rc = sqlite3_prepare_v2(img->db, "PRAGMA quick_check", -1, &q, NULL);
        if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            verdict = (const char *)sqlite3_column_text(q, 0);
        if (!verdict || strcmp(verdict, "ok") != 0) {
            snprintf(err, errlen, "image %s is damaged or not an image: %s", path,
                     verdict ? verdict : sqlite3_errmsg(img->db));
            if (rc == SQLITE_OK)
                sqlite3_finalize(q);
            image_close(img);
            return A4PS_ERROR;
        }
        sqlite3_finalize(q);
    }
    /* 64 KiB pages: a 1 KiB state value fits its page instead of spilling
     * into an overflow page of its own (a 4x smaller, faster image); only a
     * new file takes it.  The checkpoint threshold is in pages: 256 of them
     * keep the WAL near 16 MiB.  A larger page cache keeps a big snapshot's
     * transaction from spilling into the WAL before its commit. */
    if (!existed && sqlite3_exec(img->db, "PRAGMA page_size=65536;", NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "image %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        image_close(img);
        return A4PS_ERROR;
    }
    if (sqlite3_exec(img->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              "PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=256;"
                              "PRAGMA cache_size=-32768;", NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "image %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        image_close(img);
        return A4PS_ERROR;
    }
    if (exec(img, schema, err, errlen, "creating the schema") != A4PS_OK) {
        image_close(img);
        return A4PS_ERROR;
    }
    char *fmt = meta_get(img, "format_version");
    if (fmt && atoi(fmt) > IMAGE_FORMAT) {
        snprintf(err, errlen, "image %s was written by a newer a4psd (format %s; this one reads "
                 "format %d and older): refusing to touch it", path, fmt, IMAGE_FORMAT);
        free(fmt);
        image_close(img);
        return A4PS_ERROR;
    }
    if (!fmt) {
        char now[32], f[16];
        snprintf(now, sizeof now, "%lld", (long long)time(NULL));
        snprintf(f, sizeof f, "%d", IMAGE_FORMAT);
        if (meta_set(img, "format_version", f) || meta_set(img, "created_at", now) ||
            meta_set(img, "kernel_version", A4PS_ABI_VERSION_STRING) ||
            meta_set(img, "snapshots", "0")) {
            int rc = fail(img, err, errlen, "initialising meta");
            image_close(img);
            return rc;
        }
    }
    free(fmt);
    /* The identity a journal beside the image names (journal.c): a journal
     * written for another image is never replayed into this one. */
    char *id = meta_get(img, "image_id");
    if (!id) {
        unsigned char raw[16];
        char hex[33];
        if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
            snprintf(err, errlen, "image %s: no random bytes for its identity: %s", path,
                     strerror(errno));
            image_close(img);
            return A4PS_ERROR;
        }
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        if (meta_set(img, "image_id", hex)) {
            int rc = fail(img, err, errlen, "writing its identity");
            image_close(img);
            return rc;
        }
        id = strdup(hex);
    }
    snprintf(img->id, sizeof img->id, "%s", id ? id : "");
    free(id);
    char *js = meta_get(img, "journal_seq");
    img->journal_seq = js ? strtoull(js, NULL, 10) : 0;
    free(js);
    if (existed && verify_rows(img, err, errlen) != A4PS_OK) {
        image_close(img);
        return A4PS_ERROR;
    }
    if (existed && verify_binaries(img, err, errlen) != A4PS_OK) {
        image_close(img);
        return A4PS_ERROR;
    }
    if (img->nbad && !(flags & IMAGE_OPEN_BAD_BINARIES)) {
        size_t used = (size_t)snprintf(err, errlen, "image %s is damaged: ", path);
        for (size_t i = 0; i < img->nbad && used < errlen; i++)
            used += (size_t)snprintf(err + used, errlen - used, "%sthe stored binary of %s "
                                     "(sha256 %s) fails its SHA-256 (its bytes hash to %.16s...)",
                                     i ? "; " : "", img->bad[i].versions, img->bad[i].sha256,
                                     img->bad[i].actual);
        image_close(img);
        return IMAGE_EBINARY;
    }
    *out = img;
    return A4PS_OK;
}

void image_close(image *img)
{
    if (!img)
        return;
    sqlite3_close(img->db);
    free(img->path);
    free(img->notice);
    free(img->bad);
    free(img->left);
    for (size_t i = 0; i < img->nheld; i++)
        free(img->held[i]);
    free(img->held);
    free(img);
}

/* Damaged binaries (img->bad) whose version the kernel has loaded again
 * from a good file: its verified copy replaces the stored bytes, in the
 * snapshot's transaction; mended[i] says which.  A copy that does not hash
 * right is left alone. */
static int mend_binaries(image *img, const kernel_snapshot *s, bool *mended, char *err,
                         size_t errlen)
{
    for (size_t b = 0; b < img->nbad; b++)
        for (size_t i = 0; i < s->nversions && !mended[b]; i++) {
            if (strcmp(s->versions[i].sha256, img->bad[b].sha256) || !s->versions[i].stored_path)
                continue;
            void *bytes = NULL;
            size_t len = 0;
            char hex[65];
            if (kernel_read_file(s->versions[i].stored_path, SIZE_MAX, &bytes, &len) != 0)
                continue;
            kernel_sha256(bytes, len, NULL, hex);
            sqlite3_stmt *st = NULL;
            if (strcmp(hex, img->bad[b].sha256) ||
                sqlite3_prepare_v2(img->db, "UPDATE binaries SET bytes = ? WHERE sha256 = ?", -1,
                                   &st, NULL) != SQLITE_OK) {
                free(bytes);
                continue;
            }
            sqlite3_bind_blob(st, 1, bytes, (int)len, free);
            sqlite3_bind_text(st, 2, img->bad[b].sha256, -1, SQLITE_STATIC);
            int rc = sqlite3_step(st);
            sqlite3_finalize(st);
            if (rc != SQLITE_DONE)
                return fail(img, err, errlen, "repairing a binary");
            mended[b] = true;
        }
    return A4PS_OK;
}

static bool is_held(const image *img, const char *name)
{
    for (size_t i = 0; i < img->nheld; i++)
        if (!strcmp(img->held[i], name))
            return true;
    return false;
}

int image_write(image *img, const kernel_snapshot *s, char *err, size_t errlen)
{
    sqlite3_stmt *has = NULL, *bin = NULL, *beh = NULL, *pro = NULL, *del = NULL, *ins = NULL,
                 *delp = NULL;
    int rc = A4PS_ERROR;
    bool *mended = NULL;         /* of img->bad, repaired by this snapshot */
    if (exec(img, "BEGIN IMMEDIATE", err, errlen, "begin") != A4PS_OK)
        return A4PS_ERROR;
    if (sqlite3_prepare_v2(img->db, "SELECT 1 FROM binaries WHERE sha256 = ?", -1, &has, NULL) ||
        sqlite3_prepare_v2(img->db, "INSERT INTO binaries(sha256, bytes) VALUES(?, ?)", -1, &bin, NULL) ||
        sqlite3_prepare_v2(img->db,
                           "INSERT INTO behaviours(name, version, sha256, state_version, parent,"
                           " origin, status, reason, loaded_at, source, test_report)"
                           " VALUES(?,?,?,?,?,?,?,?,?,?,?)"
                           " ON CONFLICT(name, version) DO UPDATE SET status = excluded.status,"
                           " reason = excluded.reason, origin = excluded.origin,"
                           " source = coalesce(excluded.source, source),"
                           " test_report = coalesce(excluded.test_report, test_report)",
                           -1, &beh, NULL) ||
        sqlite3_prepare_v2(img->db,
                           "INSERT OR REPLACE INTO protos(name, plugin, version, state_version,"
                           " persona, deps, history, cloned_from, saved_at, sum)"
                           " VALUES(?,?,?,?,?,?,?,?,?,?)", -1, &pro, NULL) ||
        sqlite3_prepare_v2(img->db, "DELETE FROM state WHERE proto = ?", -1, &del, NULL) ||
        sqlite3_prepare_v2(img->db, "INSERT INTO state(proto, key, value, sum) VALUES(?,?,?,?)",
                           -1, &ins, NULL) ||
        sqlite3_prepare_v2(img->db, "DELETE FROM protos WHERE name = ?", -1, &delp, NULL)) {
        fail(img, err, errlen, "preparing the snapshot");
        goto out;
    }
    if (img->nbad && !(mended = calloc(img->nbad, sizeof *mended))) {
        snprintf(err, errlen, "image %s: out of memory", img->path);
        goto out;
    }
    if (img->nbad && mend_binaries(img, s, mended, err, errlen) != A4PS_OK)
        goto out;
    for (size_t i = 0; i < s->nversions; i++) {
        const kernel_snap_version *v = &s->versions[i];
        sqlite3_reset(has);
        sqlite3_bind_text(has, 1, v->sha256, -1, SQLITE_STATIC);
        if (sqlite3_step(has) != SQLITE_ROW) {
            void *bytes = NULL;
            size_t len = 0;
            int e = kernel_read_file(v->stored_path, SIZE_MAX, &bytes, &len);
            if (e) {
                snprintf(err, errlen, "image %s: cannot read the stored binary of %s %s (%s): %s",
                         img->path, v->name, v->version, v->stored_path, strerror(-e));
                goto out;
            }
            sqlite3_reset(bin);
            sqlite3_bind_text(bin, 1, v->sha256, -1, SQLITE_STATIC);
            sqlite3_bind_blob(bin, 2, bytes, (int)len, free);
            if (sqlite3_step(bin) != SQLITE_DONE) {
                fail(img, err, errlen, "writing a binary");
                goto out;
            }
        }
        sqlite3_reset(beh);
        sqlite3_bind_text(beh, 1, v->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(beh, 2, v->version, -1, SQLITE_STATIC);
        sqlite3_bind_text(beh, 3, v->sha256, -1, SQLITE_STATIC);
        sqlite3_bind_int(beh, 4, (int)v->state_version);
        sqlite3_bind_text(beh, 5, v->parent[0] ? v->parent : NULL, -1, SQLITE_STATIC);
        sqlite3_bind_text(beh, 6, v->origin, -1, SQLITE_STATIC);
        sqlite3_bind_text(beh, 7, v->status, -1, SQLITE_STATIC);
        sqlite3_bind_text(beh, 8, v->reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(beh, 9, v->loaded_at);
        sqlite3_bind_text(beh, 10, v->source, -1, SQLITE_STATIC);
        sqlite3_bind_text(beh, 11, v->report, -1, SQLITE_STATIC);
        if (sqlite3_step(beh) != SQLITE_DONE) {
            fail(img, err, errlen, "writing a version");
            goto out;
        }
    }
    sqlite3_int64 now = (sqlite3_int64)time(NULL);
    for (size_t i = 0; i < s->nprotos; i++) {
        const kernel_snap_proto *p = &s->protos[i];
        if (is_held(img, p->name))
            continue;            /* unrestorable: its rows wait for the operator */
        sqlite3_reset(pro);
        sqlite3_bind_text(pro, 1, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(pro, 2, p->plugin, -1, SQLITE_STATIC);
        sqlite3_bind_text(pro, 3, p->version, -1, SQLITE_STATIC);
        sqlite3_bind_int(pro, 4, (int)p->state_version);
        sqlite3_bind_text(pro, 5, p->persona, -1, SQLITE_STATIC);
        sqlite3_bind_text(pro, 6, p->deps_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(pro, 7, p->history_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(pro, 8, p->cloned_from, -1, SQLITE_STATIC);
        sqlite3_bind_int64(pro, 9, now);
        sqlite3_bind_int64(pro, 10, proto_sum(p->name, p->plugin, p->version,
                                              (int)p->state_version, p->persona, p->deps_json,
                                              p->history_json, p->cloned_from));
        sqlite3_reset(del);
        sqlite3_bind_text(del, 1, p->name, -1, SQLITE_STATIC);
        if (sqlite3_step(pro) != SQLITE_DONE || sqlite3_step(del) != SQLITE_DONE) {
            fail(img, err, errlen, "writing a proto");
            goto out;
        }
        for (size_t j = 0; j < p->nkeys; j++) {
            sqlite3_reset(ins);
            sqlite3_bind_text(ins, 1, p->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 2, p->keys[j], -1, SQLITE_STATIC);
            sqlite3_bind_blob(ins, 3, p->vals[j], (int)p->lens[j], SQLITE_STATIC);
            sqlite3_bind_int64(ins, 4, state_sum(p->name, p->keys[j], p->vals[j], p->lens[j]));
            if (sqlite3_step(ins) != SQLITE_DONE) {
                fail(img, err, errlen, "writing state");
                goto out;
            }
        }
    }
    for (size_t i = 0; i < s->ndeleted; i++) {
        if (is_held(img, s->deleted[i]))
            continue;
        sqlite3_reset(del);
        sqlite3_bind_text(del, 1, s->deleted[i], -1, SQLITE_STATIC);
        sqlite3_reset(delp);
        sqlite3_bind_text(delp, 1, s->deleted[i], -1, SQLITE_STATIC);
        if (sqlite3_step(del) != SQLITE_DONE || sqlite3_step(delp) != SQLITE_DONE) {
            fail(img, err, errlen, "deleting a proto");
            goto out;
        }
    }
    char *n = meta_get(img, "snapshots");
    char buf[32], at[32];
    snprintf(buf, sizeof buf, "%lld", (n ? atoll(n) : 0) + 1);
    snprintf(at, sizeof at, "%lld", (long long)now);
    free(n);
    char js[32];
    snprintf(js, sizeof js, "%llu", (unsigned long long)s->log_position);
    if (meta_set(img, "snapshots", buf) || meta_set(img, "last_snapshot_at", at) ||
        (s->log_position && meta_set(img, "journal_seq", js))) {
        fail(img, err, errlen, "writing meta");
        goto out;
    }
    if (exec(img, "COMMIT", err, errlen, "commit") != A4PS_OK)
        goto out;
    if (s->log_position)
        img->journal_seq = s->log_position;
    rc = A4PS_OK;
    for (size_t b = img->nbad; mended && b-- > 0;)
        if (mended[b])
            img->bad[b] = img->bad[--img->nbad];
out:
    free(mended);
    if (rc != A4PS_OK)
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(has);
    sqlite3_finalize(bin);
    sqlite3_finalize(beh);
    sqlite3_finalize(pro);
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    sqlite3_finalize(delp);
    return rc;
}

int image_audit(image *img, char *const *json, size_t n, long keep, char *err, size_t errlen)
{
    if (!n)
        return A4PS_OK;
    sqlite3_stmt *st = NULL;
    if (exec(img, "BEGIN IMMEDIATE", err, errlen, "begin") != A4PS_OK)
        return A4PS_ERROR;
    if (sqlite3_prepare_v2(img->db, "INSERT INTO audit(time, event, data) VALUES("
                           "json_extract(?1, '$.time'), json_extract(?1, '$.event'), ?1)", -1,
                           &st, NULL) != SQLITE_OK) {
        fail(img, err, errlen, "preparing the audit log");
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
        return A4PS_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, json[i], -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            fail(img, err, errlen, "writing the audit log");
            sqlite3_finalize(st);
            sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
            return A4PS_ERROR;
        }
    }
    sqlite3_finalize(st);
    char trim[160];
    snprintf(trim, sizeof trim, "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - %ld",
             keep);
    if (exec(img, trim, err, errlen, "trimming the audit log") != A4PS_OK ||
        exec(img, "COMMIT", err, errlen, "commit") != A4PS_OK) {
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
        return A4PS_ERROR;
    }
    return A4PS_OK;
}

int image_backup(image *img, int keep, char *err, size_t errlen)
{
    if (keep <= 0)
        return A4PS_OK;
    char tmp[4096], from[4096], to[4096];
    snprintf(tmp, sizeof tmp, "%s.backup-tmp", img->path);
    unlink(tmp);
    /* VACUUM INTO takes an empty file, and keeps its mode. */
    if (create_private(tmp) != 0) {
        snprintf(err, errlen, "image %s: backup: cannot create %s: %s", img->path, tmp,
                 strerror(errno));
        return A4PS_ERROR;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(img->db, "VACUUM INTO ?", -1, &st, NULL) != SQLITE_OK)
        return fail(img, err, errlen, "backup");
    sqlite3_bind_text(st, 1, tmp, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        unlink(tmp);
        return fail(img, err, errlen, "backup (VACUUM INTO)");
    }
    snprintf(from, sizeof from, "%s.%d", img->path, keep);
    unlink(from);
    for (int i = keep - 1; i >= 1; i--) {
        snprintf(from, sizeof from, "%s.%d", img->path, i);
        snprintf(to, sizeof to, "%s.%d", img->path, i + 1);
        rename(from, to);        /* a missing generation is fine */
    }
    snprintf(to, sizeof to, "%s.1", img->path);
    if (rename(tmp, to) != 0) {
        snprintf(err, errlen, "image %s: backup: rename to %s: %s", img->path, to, strerror(errno));
        unlink(tmp);
        return A4PS_ERROR;
    }
    return A4PS_OK;
}

int image_has_proto(image *img, const char *name)
{
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(img->db, "SELECT 1 FROM protos WHERE name = ?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* A version image_restore left out, and why: its protos inherit the reason. */
typedef struct left_version {
    char name[64], version[32], reason[256];
} left_version;

static void version_left_out(left_version **lv, size_t *n, const char *name, const char *version,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void version_left_out(left_version **lv, size_t *n, const char *name, const char *version,
                             const char *fmt, ...)
{
    left_version *nl = realloc(*lv, (*n + 1) * sizeof *nl);
    if (!nl)
        return;
    *lv = nl;
    left_version *v = &nl[(*n)++];
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->version, sizeof v->version, "%s", version);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->reason, sizeof v->reason, fmt, ap);
    va_end(ap);
}

static int restore_versions(image *img, kernel *k, const char *tmpdir, image_restored *r,
                            void (*report)(void *, const char *), void *arg,
                            left_version **lv, size_t *nlv)
{
    sqlite3_stmt *st;
    char msg[KERNEL_ERRLEN + 256];
    if (sqlite3_prepare_v2(img->db,
                           "SELECT b.name, b.version, b.sha256, b.status, bin.bytes, b.source,"
                           " b.test_report, b.origin FROM behaviours b"
                           " JOIN binaries bin ON bin.sha256 = b.sha256 ORDER BY b.id", -1, &st,
                           NULL) != SQLITE_OK)
        return A4PS_ERROR;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *version = (const char *)sqlite3_column_text(st, 1);
        const char *sha = (const char *)sqlite3_column_text(st, 2);
        const char *status = (const char *)sqlite3_column_text(st, 3);
        const void *bytes = sqlite3_column_blob(st, 4);
        int len = sqlite3_column_bytes(st, 4);
        if (!strcmp(status, "quarantined")) {
            snprintf(msg, sizeof msg, "image: %s %s stays out: it was quarantined", name, version);
            report(arg, msg);
            version_left_out(lv, nlv, name, version, "version %s was quarantined", version);
            continue;
        }
        /* The hash is checked before anything is loaded: a binary the image
         * does not vouch for never runs. */
        char hex[65];
        kernel_sha256(bytes, (size_t)len, NULL, hex);
        if (strcmp(hex, sha) != 0) {
            snprintf(msg, sizeof msg, "image: %s %s left out: its stored binary has sha256 "
                     "%.16s..., the image records %.16s...", name, version, hex, sha);
            report(arg, msg);
            version_left_out(lv, nlv, name, version, "the stored binary of %s %s (sha256 %s) "
                             "fails its SHA-256 and no verified copy was found", name, version,
                             sha);
            r->failed++;
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%.64s.so", tmpdir, sha);
        unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
        bool ok = fd >= 0 && write(fd, bytes, (size_t)len) == len;
        if (fd >= 0)
            close(fd);
        char err[KERNEL_ERRLEN];
        kernel_version_info info;
        int rc = ok ? kernel_load(k, path, &info, err, sizeof err) : A4PS_ERROR;
        if (!ok)
            snprintf(err, sizeof err, "cannot write %s: %s", path, strerror(errno));
        if (rc == A4PS_OK || rc == A4PS_EEXIST) {
            if (strcmp(info.sha256, sha) != 0) {
                snprintf(msg, sizeof msg, "image: %s %s: stored binary has sha256 %.16s..., the "
                         "image says %.16s...: left out", name, version, info.sha256, sha);
                report(arg, msg);
                version_left_out(lv, nlv, name, version, "%s %s loaded with another sha256",
                                 name, version);
                r->failed++;
            } else {
                r->versions++;
                /* Lineage comes back with the binary: its source, report
                 * and where it came from (not the temporary file). */
                kernel_version_annotate(k, info.name, info.version,
                                        (const char *)sqlite3_column_text(st, 5),
                                        (const char *)sqlite3_column_text(st, 6),
                                        (const char *)sqlite3_column_text(st, 7));
            }
        } else {
            snprintf(msg, sizeof msg, "image: %s %s: left out: %s", name, version, err);
            report(arg, msg);
            version_left_out(lv, nlv, name, version, "%s %s was refused at load: %s", name,
                             version, err);
            r->failed++;
        }
        unlink(path);
    }
    sqlite3_finalize(st);
    return A4PS_OK;
}

void image_proto_free(kernel_snap_proto *p)
{
    for (size_t i = 0; i < p->nkeys; i++) {
        free(p->keys[i]);
        free(p->vals[i]);
    }
    free(p->keys);
    free(p->vals);
    free(p->lens);
    free(p->persona);
    free(p->deps_json);
    free(p->history_json);
    free(p->cloned_from);
    memset(p, 0, sizeof *p);
}

static char *col_dup(sqlite3_stmt *st, int i, bool *nomem)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    char *c = t ? strdup(t) : NULL;
    if (t && !c)
        *nomem = true;
    return c;
}

/* One protos row (at ps's cursor) and its state rows, copied into p. */
static int read_proto(sqlite3_stmt *ps, sqlite3_stmt *ss, kernel_snap_proto *p)
{
    bool nomem = false;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", (const char *)sqlite3_column_text(ps, 0));
    snprintf(p->plugin, sizeof p->plugin, "%s", (const char *)sqlite3_column_text(ps, 1));
    snprintf(p->version, sizeof p->version, "%s", (const char *)sqlite3_column_text(ps, 2));
    p->state_version = (uint32_t)sqlite3_column_int(ps, 3);
    p->persona = col_dup(ps, 4, &nomem);
    p->deps_json = col_dup(ps, 5, &nomem);
    p->history_json = col_dup(ps, 6, &nomem);
    p->cloned_from = col_dup(ps, 7, &nomem);
    size_t cap = 0;
    sqlite3_reset(ss);
    sqlite3_bind_text(ss, 1, p->name, -1, SQLITE_STATIC);
    while (!nomem && sqlite3_step(ss) == SQLITE_ROW) {
        if (p->nkeys == cap) {
            cap = cap ? cap * 2 : 16;
            char **nk = realloc(p->keys, cap * sizeof *nk);
            void **nv = nk ? realloc(p->vals, cap * sizeof *nv) : NULL;
            size_t *nl = nv ? realloc(p->lens, cap * sizeof *nl) : NULL;
            if (nk)
                p->keys = nk;
            if (nv)
                p->vals = nv;
            if (nl)
                p->lens = nl;
            if (!nl) {
                nomem = true;
                break;
            }
        }
        size_t len = (size_t)sqlite3_column_bytes(ss, 1);
        p->keys[p->nkeys] = strdup((const char *)sqlite3_column_text(ss, 0));
        p->vals[p->nkeys] = malloc(len ? len : 1);
        if (!p->keys[p->nkeys] || !p->vals[p->nkeys]) {
            free(p->keys[p->nkeys]);
            free(p->vals[p->nkeys]);
            nomem = true;
            break;
        }
        if (len)
            memcpy(p->vals[p->nkeys], sqlite3_column_blob(ss, 1), len);
        p->lens[p->nkeys++] = len;
    }
    return nomem ? A4PS_ENOMEM : A4PS_OK;
}

#define PROTO_COLUMNS "SELECT name, plugin, version, state_version, persona, deps, history," \
                      " cloned_from FROM protos"

int image_restore(image *img, kernel *k, const char *tmpdir, image_restored *out,
                  void (*report)(void *arg, const char *message), void *arg,
                  char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    mkdir(tmpdir, 0700);
    left_version *lv = NULL;
    size_t nlv = 0;
    if (restore_versions(img, k, tmpdir, out, report, arg, &lv, &nlv) != A4PS_OK) {
        free(lv);
        return fail(img, err, errlen, "reading versions");
    }
    sqlite3_stmt *ps, *ss;
    if (sqlite3_prepare_v2(img->db, PROTO_COLUMNS " ORDER BY name", -1, &ps, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(img->db, "SELECT key, value FROM state WHERE proto = ?", -1, &ss,
                           NULL) != SQLITE_OK) {
        free(lv);
        return fail(img, err, errlen, "reading protos");
    }
    while (sqlite3_step(ps) == SQLITE_ROW) {
        kernel_snap_proto p;
        int rc = read_proto(ps, ss, &p);
        char perr[KERNEL_ERRLEN], msg[KERNEL_ERRLEN + 64];
        if (rc == A4PS_OK)
            rc = kernel_restore_proto(k, &p, perr, sizeof perr);
        if (rc == A4PS_OK) {
            out->protos++;
        } else {
            snprintf(msg, sizeof msg, "image: proto %s left out: %s", p.name,
                     rc == A4PS_ENOMEM ? "out of memory" : perr);
            report(arg, msg);
            out->failed++;
            /* Its rows stay as they are: unrestorable until the operator
             * destroys it or rolls it onto a version that is loaded. */
            image_unrestorable *nl = realloc(img->left, (img->nleft + 1) * sizeof *nl);
            if (nl) {
                img->left = nl;
                image_unrestorable *u = &nl[img->nleft++];
                memset(u, 0, sizeof *u);
                snprintf(u->name, sizeof u->name, "%s", p.name);
                snprintf(u->plugin, sizeof u->plugin, "%s", p.plugin);
                snprintf(u->version, sizeof u->version, "%s", p.version);
                u->state_version = p.state_version;
                snprintf(u->reason, sizeof u->reason, "%s",
                         rc == A4PS_ENOMEM ? "out of memory restoring it" : perr);
                for (size_t i = 0; i < nlv; i++)
                    if (!strcmp(lv[i].name, p.plugin) && !strcmp(lv[i].version, p.version))
                        snprintf(u->reason, sizeof u->reason, "%s", lv[i].reason);
            }
        }
        image_proto_free(&p);
    }
    sqlite3_finalize(ps);
    sqlite3_finalize(ss);
    free(lv);
    return A4PS_OK;
}

const image_unrestorable *image_unrestorables(const image *img, size_t *n)
{
    *n = img->nleft;
    return img->left;
}

const image_bad_binary *image_bad_binaries(const image *img, size_t *n)
{
    *n = img->nbad;
    return img->bad;
}

int image_hold(image *img, const char *name, bool hold)
{
    for (size_t i = 0; i < img->nheld; i++)
        if (!strcmp(img->held[i], name)) {
            if (!hold) {
                free(img->held[i]);
                img->held[i] = img->held[--img->nheld];
            }
            return A4PS_OK;
        }
    if (!hold)
        return A4PS_OK;
    char **nh = realloc(img->held, (img->nheld + 1) * sizeof *nh);
    if (!nh || !(nh[img->nheld] = strdup(name))) {
        if (nh)
            img->held = nh;
        return A4PS_ENOMEM;
    }
    img->held = nh;
    img->nheld++;
    return A4PS_OK;
}

int image_proto_load(image *img, const char *name, kernel_snap_proto *out, char *err,
                     size_t errlen)
{
    sqlite3_stmt *ps, *ss;
    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(img->db, PROTO_COLUMNS " WHERE name = ?", -1, &ps, NULL) != SQLITE_OK)
        return fail(img, err, errlen, "reading a proto");
    if (sqlite3_prepare_v2(img->db, "SELECT key, value FROM state WHERE proto = ?", -1, &ss,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(ps);
        return fail(img, err, errlen, "reading a proto's state");
    }
    sqlite3_bind_text(ps, 1, name, -1, SQLITE_STATIC);
    int rc = A4PS_ENOENT;
    if (sqlite3_step(ps) == SQLITE_ROW) {
        rc = read_proto(ps, ss, out);
        if (rc != A4PS_OK) {
            image_proto_free(out);
            snprintf(err, errlen, "image %s: proto '%s': out of memory", img->path, name);
        }
    } else {
        snprintf(err, errlen, "image %s has no proto named '%s'", img->path, name);
    }
    sqlite3_finalize(ps);
    sqlite3_finalize(ss);
    return rc;
}

int image_proto_delete(image *img, const char *name, int *nrows, char *err, size_t errlen)
{
    sqlite3_stmt *ds = NULL, *dp = NULL;
    int rc = A4PS_ERROR;
    *nrows = 0;
    if (exec(img, "BEGIN IMMEDIATE", err, errlen, "begin") != A4PS_OK)
        return A4PS_ERROR;
    if (sqlite3_prepare_v2(img->db, "DELETE FROM state WHERE proto = ?", -1, &ds, NULL) ||
        sqlite3_prepare_v2(img->db, "DELETE FROM protos WHERE name = ?", -1, &dp, NULL)) {
        fail(img, err, errlen, "preparing a delete");
        goto out;
    }
    sqlite3_bind_text(ds, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(dp, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(ds) != SQLITE_DONE) {
        fail(img, err, errlen, "deleting a proto's state");
        goto out;
    }
    *nrows = sqlite3_changes(img->db);
    if (sqlite3_step(dp) != SQLITE_DONE) {
        fail(img, err, errlen, "deleting a proto");
        goto out;
    }
    if (sqlite3_changes(img->db) == 0) {
        snprintf(err, errlen, "image %s has no proto named '%s'", img->path, name);
        rc = A4PS_ENOENT;
        goto out;
    }
    if (exec(img, "COMMIT", err, errlen, "commit") != A4PS_OK)
        goto out;
    rc = A4PS_OK;
out:
    if (rc != A4PS_OK)
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(ds);
    sqlite3_finalize(dp);
    return rc;
}

int image_binary_repair(image *img, const char *sha256, const void *bytes, size_t len,
                        char *err, size_t errlen)
{
    char hex[65];
    kernel_sha256(bytes, len, NULL, hex);
    if (strcmp(hex, sha256) != 0) {
        snprintf(err, errlen, "image %s: the copy offered for %.16s... hashes to %.16s...",
                 img->path, sha256, hex);
        return A4PS_EINVAL;
    }
    sqlite3_stmt *st;
    if (exec(img, "BEGIN IMMEDIATE", err, errlen, "begin") != A4PS_OK)
        return A4PS_ERROR;
    if (sqlite3_prepare_v2(img->db, "UPDATE binaries SET bytes = ? WHERE sha256 = ?", -1, &st,
                           NULL) != SQLITE_OK) {
        fail(img, err, errlen, "preparing a repair");
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
        return A4PS_ERROR;
    }
    sqlite3_bind_blob(st, 1, bytes, (int)len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sha256, -1, SQLITE_STATIC);
    int ok = sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(img->db) == 1;
    sqlite3_finalize(st);
    if (!ok) {
        fail(img, err, errlen, "repairing a binary");
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
        return A4PS_ERROR;
    }
    if (exec(img, "COMMIT", err, errlen, "commit") != A4PS_OK) {
        sqlite3_exec(img->db, "ROLLBACK", NULL, NULL, NULL);
        return A4PS_ERROR;
    }
    for (size_t i = 0; i < img->nbad; i++)
        if (!strcmp(img->bad[i].sha256, sha256)) {
            img->bad[i] = img->bad[--img->nbad];
            break;
        }
    return A4PS_OK;
}

/* A read-only connection of its own: safe on any thread, beside the
 * image's writer (WAL), and on a backup generation a4psd does not own. */
static sqlite3 *open_ro(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 2000);
    return db;
}

int image_find_binary(const char *path, const char *sha256, void **bytes, size_t *len)
{
    sqlite3 *db = open_ro(path);
    if (!db)
        return A4PS_ENOENT;
    sqlite3_stmt *st;
    int rc = A4PS_ENOENT;
    if (sqlite3_prepare_v2(db, "SELECT bytes FROM binaries WHERE sha256 = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, sha256, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            const void *b = sqlite3_column_blob(st, 0);
            char hex[65];
            kernel_sha256(b, n, NULL, hex);
            void *copy = !strcmp(hex, sha256) ? malloc(n ? n : 1) : NULL;
            if (copy) {
                if (n)
                    memcpy(copy, b, n);
                *bytes = copy;
                *len = n;
                rc = A4PS_OK;
            }
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return rc;
}

static void problem(image_check_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void problem(image_check_result *r, const char *fmt, ...)
{
    char *line;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    char **np = n >= 0 ? realloc(r->problems, (r->nproblems + 1) * sizeof *np) : NULL;
    if (!np) {
        if (n >= 0)
            free(line);
        return;
    }
    r->problems = np;
    np[r->nproblems++] = line;
}

int image_check(const char *path, image_check_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    sqlite3 *db = open_ro(path);
    if (!db) {
        snprintf(err, errlen, "image %s: cannot open it read-only", path);
        return A4PS_ERROR;
    }
    sqlite3_stmt *st;
    /* integrity_check (not quick_check): indexes against their tables too;
     * up to 100 messages. */
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check(100)", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(st, 0);
            if (m && strcmp(m, "ok"))
                problem(r, "integrity_check: %s", m);
        }
        sqlite3_finalize(st);
    } else {
        problem(r, "integrity_check cannot run: %s", sqlite3_errmsg(db));
    }
    if (sqlite3_prepare_v2(db, "SELECT b.sha256, b.bytes, (SELECT group_concat(name || ' ' ||"
                           " version, ', ') FROM behaviours WHERE sha256 = b.sha256)"
                           " FROM binaries b", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *sha = (const char *)sqlite3_column_text(st, 0);
            const char *who = (const char *)sqlite3_column_text(st, 2);
            char hex[65];
            kernel_sha256(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), NULL,
                          hex);
            r->binaries++;
            if (!sha || strcmp(hex, sha))
                problem(r, "binary %s (%s): its bytes hash to %s", sha ? sha : "?",
                        who ? who : "no version", hex);
        }
        sqlite3_finalize(st);
    } else {
        problem(r, "binaries cannot be read: %s", sqlite3_errmsg(db));
    }
    if (sqlite3_prepare_v2(db, "SELECT name, plugin, version, state_version, persona, deps,"
                           " history, cloned_from, sum FROM protos", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *c[8];
            for (int i = 0; i < 8; i++)
                c[i] = (const char *)sqlite3_column_text(st, i);
            r->protos++;
            if (proto_sum(c[0], c[1], c[2], sqlite3_column_int(st, 3), c[4], c[5], c[6], c[7]) !=
                sqlite3_column_int64(st, 8))
                problem(r, "proto '%s': its record fails its checksum", c[0] ? c[0] : "?");
        }
        sqlite3_finalize(st);
    } else {
        problem(r, "protos cannot be read: %s", sqlite3_errmsg(db));
    }
    if (sqlite3_prepare_v2(db, "SELECT proto, key, value, sum FROM state", -1, &st, NULL) ==
        SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *proto = (const char *)sqlite3_column_text(st, 0);
            const char *key = (const char *)sqlite3_column_text(st, 1);
            const void *val = sqlite3_column_blob(st, 2);
            size_t len = (size_t)sqlite3_column_bytes(st, 2);
            r->state_rows++;
            if (state_sum(proto, key, val, len) != sqlite3_column_int64(st, 3))
                problem(r, "state of proto '%s', key '%s': fails its checksum",
                        proto ? proto : "?", key ? key : "?");
        }
        sqlite3_finalize(st);
    } else {
        problem(r, "state cannot be read: %s", sqlite3_errmsg(db));
    }
    sqlite3_close(db);
    return A4PS_OK;
}

void image_check_free(image_check_result *r)
{
    for (size_t i = 0; i < r->nproblems; i++)
        free(r->problems[i]);
    free(r->problems);
    memset(r, 0, sizeof *r);
}

int image_each_report(image *img, void (*each)(void *arg, const char *sha256, const char *report),
                      void *arg)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(img->db, "SELECT sha256, test_report FROM behaviours"
                           " WHERE test_report IS NOT NULL", -1, &st, NULL) != SQLITE_OK)
        return A4PS_ERROR;
    while (sqlite3_step(st) == SQLITE_ROW)
        each(arg, (const char *)sqlite3_column_text(st, 0),
             (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    return A4PS_OK;
}

const char *image_id(const image *img)
{
    return img->id;
}

uint64_t image_journal_seq(const image *img)
{
    return img->journal_seq;
}

int image_state_apply(image *img, const char *proto, int del, const char *key, const void *val,
                      size_t len, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    const char *sql = del ? "DELETE FROM state WHERE proto = ? AND key = ?"
                          : "INSERT OR REPLACE INTO state(proto, key, value, sum) VALUES(?,?,?,?)";
    if (sqlite3_prepare_v2(img->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail(img, err, errlen, "preparing a state change");
    sqlite3_bind_text(st, 1, proto, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if (!del) {
        sqlite3_bind_blob(st, 3, len ? val : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, state_sum(proto, key, len ? val : "", len));
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? A4PS_OK : fail(img, err, errlen, "writing a state change");
    sqlite3_finalize(st);
    return rc;
}
