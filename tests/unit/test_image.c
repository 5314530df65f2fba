/* test_image.c -- the image: snapshots written to SQLite and read back into
 * a fresh kernel, incremental snapshots, consistency under load, and images
 * that must be refused. */
#include "plugin_fixture.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <unistd.h>

#include "image/image.h"

#define SW(v) FX_PLUGIN("sw-" v ".so")

static int teardown(void **state)
{
    fx_close(*state);
    return 0;
}

static void snapshot_to(fx *f, const char *path, int all, kernel_snapshot **keep)
{
    char err[KERNEL_ERRLEN];
    kernel_snapshot *s;
    int rc = kernel_snapshot_take(f->k, all, 2000, &s, err, sizeof err);
    if (rc)
        fail_msg("snapshot: %s", err);
    image *img;
    if (image_open(path, &img, err, sizeof err))
        fail_msg("image_open: %s", err);
    rc = image_write(img, s, err, sizeof err);
    image_close(img);
    if (rc)
        fail_msg("image_write: %s", err);
    kernel_snapshot_done(f->k, s, 1);
    if (keep)
        *keep = s;
    else
        kernel_snapshot_free(s);
}

static void report_fail(void *arg, const char *msg)
{
    fail_msg("restore reported: %s", msg);
}

static void restore_from(fx *f, const char *path, image_restored *r)
{
    char err[KERNEL_ERRLEN], tmp[600];
    image *img;
    if (image_open(path, &img, err, sizeof err))
        fail_msg("image_open: %s", err);
    snprintf(tmp, sizeof tmp, "%s/restore", f->dir);
    int rc = image_restore(img, f->k, tmp, r, report_fail, NULL, err, sizeof err);
    image_close(img);
    if (rc)
        fail_msg("image_restore: %s", err);
}

/* Everything comes back in a fresh kernel from the image alone: versions
 * (their original files are gone), protos on their versions, state, persona,
 * dependencies, history. */
static void round_trip(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    char copy1[600], copy2[600], img[600];
    snprintf(copy1, sizeof copy1, "%s/sw-1.so", f->dir);
    snprintf(copy2, sizeof copy2, "%s/sw-2.so", f->dir);
    snprintf(img, sizeof img, "%s/a4ps.img", f->dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s %s && cp %s %s", SW("1"), copy1, SW("2"), copy2);
    assert_int_equal(system(cmd), 0);
    fx_load_ok(f, copy1, NULL);
    fx_load_ok(f, copy2, NULL);
    char err[KERNEL_ERRLEN];
    assert_int_equal(kernel_proto_create(f->k, "s1", "sw", "1.0.0", "{\"role\":\"first\"}", err,
                                         sizeof err), 0);
    fx_proto_ok(f, "s2", "sw", "1.0.0");
    for (int i = 0; i < 3; i++)
        fx_expect(f, "s1", "add", "", A4PS_OK, NULL);
    fx_swap_ok(f, "s2", "2.0.0");
    fx_expect(f, "s2", "add", "", A4PS_OK, "v2 1");
    assert_int_equal(kernel_proto_depend(f->k, "s2", "s1", err, sizeof err), 0);
    snapshot_to(f, img, 1, NULL);
    unlink(copy1);
    unlink(copy2);

    fx *g = fx_open(NULL);
    image_restored r;
    restore_from(g, img, &r);
    assert_int_equal(r.versions, 2);
    assert_int_equal(r.protos, 2);
    assert_int_equal(r.failed, 0);
    fx_expect(g, "s1", "get", "", A4PS_OK, "v1 3");
    fx_expect(g, "s2", "get", "", A4PS_OK, "v2 1");
    char *e = kernel_explain(g->k, "s1");
    fx_assert_contains("explain s1", e, "\"role\":\"first\"");
    free(e);
    e = kernel_explain(g->k, "s2");
    fx_assert_contains("explain s2", e, "\"protos\":[\"s1\"]");
    fx_assert_contains("explain s2", e, "\"history\":[\"1.0.0\"]");
    free(e);
    /* And the lineage works: s2 rolls back to 1.0.0, loaded from the image. */
    assert_int_equal(kernel_rollback(g->k, "s2", err, sizeof err), 0);
    fx_expect(g, "s2", "id", "", A4PS_OK, "v1::v1");
    fx_close(g);
}

/* Only what changed goes into an incremental snapshot; deletions too. */
static void incremental(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    char img[600], err[KERNEL_ERRLEN];
    snprintf(img, sizeof img, "%s/a4ps.img", f->dir);
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "a", "sw", NULL);
    fx_proto_ok(f, "b", "sw", NULL);
    fx_proto_ok(f, "c", "sw", NULL);
    kernel_snapshot *s;
    snapshot_to(f, img, 0, &s);
    assert_int_equal(s->nprotos, 3);
    kernel_snapshot_free(s);
    snapshot_to(f, img, 0, &s);
    assert_int_equal(s->nprotos, 0);
    kernel_snapshot_free(s);
    fx_expect(f, "b", "add", "", A4PS_OK, "v1 1");
    assert_int_equal(kernel_proto_destroy(f->k, "c", err, sizeof err), 0);
    snapshot_to(f, img, 0, &s);
    assert_int_equal(s->nprotos, 1);
    assert_string_equal(s->protos[0].name, "b");
    assert_int_equal(s->ndeleted, 1);
    assert_string_equal(s->deleted[0], "c");
    kernel_snapshot_free(s);
    image *im;
    assert_int_equal(image_open(img, &im, err, sizeof err), 0);
    assert_true(image_has_proto(im, "a"));
    assert_false(image_has_proto(im, "c"));
    image_close(im);
    /* A snapshot that was not committed is taken again next time. */
    fx_expect(f, "a", "add", "", A4PS_OK, "v1 1");
    assert_int_equal(kernel_snapshot_take(f->k, 0, 2000, &s, err, sizeof err), 0);
    assert_int_equal(s->nprotos, 1);
    kernel_snapshot_done(f->k, s, 0);
    kernel_snapshot_free(s);
    assert_int_equal(kernel_snapshot_take(f->k, 0, 2000, &s, err, sizeof err), 0);
    assert_int_equal(s->nprotos, 1);
    kernel_snapshot_free(s);
}

typedef struct bumper {
    fx *f;
    const char *from, *to;
    _Atomic bool *stop;
    long n;
} bumper;

static void *bumper_main(void *arg)
{
    bumper *b = arg;
    kernel_thread_attach(b->f->k);
    kernel_reply r = {0};
    while (!atomic_load(b->stop)) {
        if (kernel_send(b->f->k, b->from, "bump", b->to, strlen(b->to), &r) != A4PS_OK)
            break;
        b->n++;
        kernel_quiescent(b->f->k);
    }
    kernel_reply_free(&r);
    kernel_thread_detach(b->f->k);
    return NULL;
}

static long counter(kernel_snapshot *s, const char *proto)
{
    for (size_t i = 0; i < s->nprotos; i++) {
        if (strcmp(s->protos[i].name, proto))
            continue;
        for (size_t j = 0; j < s->protos[i].nkeys; j++)
            if (!strcmp(s->protos[i].keys[j], "n")) {
                char buf[32] = {0};
                memcpy(buf, s->protos[i].vals[j], s->protos[i].lens[j] < 31 ? s->protos[i].lens[j] : 31);
                return atol(buf);
            }
        return 0;
    }
    return -1;
}

/* A message that changes two protos is never cut in half by a snapshot. */
static void consistent_under_load(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, FX_PLUGIN("pair.so"), NULL);
    const char *names[] = {"A", "B", "C", "D"};
    for (int i = 0; i < 4; i++)
        fx_proto_ok(f, names[i], "pair", NULL);
    _Atomic bool stop = false;
    bumper bs[2] = {{f, "A", "B", &stop, 0}, {f, "C", "D", &stop, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, bumper_main, &bs[i]), 0);
    char err[KERNEL_ERRLEN];
    int moving = 0;
    long last = -1;
    for (int i = 0; i < 200; i++) {
        kernel_snapshot *s;
        assert_int_equal(kernel_snapshot_take(f->k, 1, 2000, &s, err, sizeof err), 0);
        long a = counter(s, "A"), b = counter(s, "B"), c = counter(s, "C"), d = counter(s, "D");
        if (a != b || c != d)
            fail_msg("snapshot %d cut a message: A=%ld B=%ld C=%ld D=%ld", i, a, b, c, d);
        if (a != last)
            moving++;
        last = a;
        kernel_snapshot_free(s);
        usleep(500);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    print_message("bumps: %ld and %ld; the counters moved between %d of 200 snapshots\n",
                  bs[0].n, bs[1].n, moving);
    assert_true(moving > 10);
}

/* A verifier that passes every binary and says so in a report. */
static int verify_with_report(void *arg, const char *path, const char *sha, char **report,
                              char *why, size_t whylen)
{
    (void)arg;
    if (asprintf(report, "{\"verdict\":\"pass\",\"file\":\"%s\",\"sha256\":\"%s\"}",
                 strrchr(path, '/') + 1, sha) < 0)
        *report = NULL;
    return 0;
}

static void tune_verify(kernel_config *cfg)
{
    cfg->verify = verify_with_report;
}

static json_t *history_version(kernel *k, const char *proto, const char *version)
{
    char *h = kernel_history(k, proto);
    assert_non_null(h);
    json_t *j = json_loads(h, 0, NULL);
    free(h);
    json_t *vs = json_object_get(j, "versions"), *v, *found = NULL;
    size_t i;
    json_array_foreach(vs, i, v)
        if (!strcmp(json_string_value(json_object_get(v, "version")), version))
            found = json_incref(v);
    json_decref(j);
    assert_non_null(found);
    return found;
}

/* The lineage of a version -- the verifier's report, the source the forge
 * built it from, who proposed it -- is kept with the version and comes back
 * from the image with it. */
static void lineage_round_trip(void **state)
{
    fx *f = fx_open(tune_verify);
    *state = f;
    /* The image outlives the first kernel's directory. */
    char copy[600], keep[] = "/tmp/a4ps-lineage-XXXXXX", img[600], cmd[1400];
    assert_non_null(mkdtemp(keep));
    snprintf(copy, sizeof copy, "%s/sw-1.so", f->dir);
    snprintf(img, sizeof img, "%s/a4ps.img", keep);
    snprintf(cmd, sizeof cmd, "cp %s %s", SW("1"), copy);
    assert_int_equal(system(cmd), 0);
    fx_load_ok(f, copy, NULL);
    fx_proto_ok(f, "s1", "sw", "1.0.0");
    json_t *v = history_version(f->k, "s1", "1.0.0");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "report"), "verdict")),
                        "pass");
    /* The verifier saw the hash of the very bytes that were loaded. */
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "report"), "sha256")),
                        json_string_value(json_object_get(v, "sha256")));
    assert_false(json_is_true(json_object_get(v, "has_source")));
    json_decref(v);
    assert_int_equal(kernel_version_annotate(f->k, "sw", "1.0.0", "/* the source */", NULL,
                                             "forge task 7"), 0);
    assert_int_equal(kernel_version_annotate(f->k, "sw", "9.9.9", "x", NULL, NULL), A4PS_ENOENT);
    snapshot_to(f, img, 1, NULL);
    /* The next snapshot does not copy the unchanged source and report
     * again; writing it leaves the image's as they are. */
    kernel_snapshot *s2;
    snapshot_to(f, img, 0, &s2);
    for (size_t i = 0; i < s2->nversions; i++) {
        assert_null(s2->versions[i].source);
        assert_null(s2->versions[i].report);
    }
    kernel_snapshot_free(s2);
    fx_close(f);

    /* A fresh kernel without a verifier: the report comes from the image. */
    f = fx_open(NULL);
    *state = f;
    image_restored r;
    restore_from(f, img, &r);
    assert_int_equal(r.protos, 1);
    v = history_version(f->k, "s1", "1.0.0");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "report"), "file")),
                        "sw-1.so");
    assert_true(json_is_true(json_object_get(v, "has_source")));
    assert_string_equal(json_string_value(json_object_get(v, "origin")), "forge task 7");
    json_decref(v);
    snprintf(cmd, sizeof cmd, "rm -rf %s", keep);
    assert_int_equal(system(cmd), 0);
}

static void refuses_newer_format(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    char img[600], err[KERNEL_ERRLEN];
    snprintf(img, sizeof img, "%s/a4ps.img", f->dir);
    image *im;
    assert_int_equal(image_open(img, &im, err, sizeof err), 0);
    image_close(im);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(img, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'format_version'",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_not_equal(image_open(img, &im, err, sizeof err), 0);
    fx_assert_contains("error", err, "written by a newer a4psd (format 99");
}

static void refuses_damaged(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    char img[600], err[KERNEL_ERRLEN];
    snprintf(img, sizeof img, "%s/a4ps.img", f->dir);
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "a", "sw", NULL);
    snapshot_to(f, img, 1, NULL);
    /* Checkpoint the WAL into the file, then cut the file in half. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(img, &db), SQLITE_OK);
    sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    sqlite3_close(db);
    struct stat st;
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(truncate(img, st.st_size / 2), 0);
    image *im;
    assert_int_not_equal(image_open(img, &im, err, sizeof err), 0);
    fx_assert_contains("error", err, "damaged or not an image");
    /* Not an image at all. */
    FILE *x = fopen(img, "w");
    fputs("this is not a database, just text long enough to be read as a header....", x);
    fclose(x);
    assert_int_not_equal(image_open(img, &im, err, sizeof err), 0);
    fx_assert_contains("error", err, "damaged or not an image");
}

/* A snapshot that cannot be written leaves the image as it was. */
static void failed_write_changes_nothing(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    char img[600], err[KERNEL_ERRLEN];
    snprintf(img, sizeof img, "%s/a4ps.img", f->dir);
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "a", "sw", NULL);
    snapshot_to(f, img, 1, NULL);
    fx_load_ok(f, SW("2"), NULL);
    fx_proto_ok(f, "b", "sw", "2.0.0");
    kernel_snapshot *s;
    assert_int_equal(kernel_snapshot_take(f->k, 1, 2000, &s, err, sizeof err), 0);
    for (size_t i = 0; i < s->nversions; i++)
        if (!strcmp(s->versions[i].version, "2.0.0")) {
            free(s->versions[i].stored_path);
            s->versions[i].stored_path = strdup("/nonexistent/binary.so");
        }
    image *im;
    assert_int_equal(image_open(img, &im, err, sizeof err), 0);
    assert_int_not_equal(image_write(im, s, err, sizeof err), 0);
    fx_assert_contains("error", err, "cannot read the stored binary of sw 2.0.0");
    assert_true(image_has_proto(im, "a"));
    assert_false(image_has_proto(im, "b"));
    image_close(im);
    kernel_snapshot_done(f->k, s, 0);
    kernel_snapshot_free(s);
}

static void report_count(void *arg, const char *msg)
{
    (void)msg;
    (*(int *)arg)++;
}

/* Issue 11: a flipped byte in a stored binary is damage image_open reports
 * (IMAGE_EBINARY, the sha256 named); a verified copy from a backup repairs
 * it alone; without one the proto on it is unrestorable, held out of every
 * write, loadable and deletable on its own; image_check finds it all. */
static void binary_damage(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    char img[600], bak[620], err[KERNEL_ERRLEN];
    snprintf(img, sizeof img, "%s/a4ps.img", f->dir);
    snprintf(bak, sizeof bak, "%s.1", img);
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "a", "sw", NULL);
    fx_expect(f, "a", "add", "", A4PS_OK, "v1 1");
    snapshot_to(f, img, 1, NULL);
    image *im;
    assert_int_equal(image_open(img, &im, err, sizeof err), 0);
    assert_int_equal(image_backup(im, 1, err, sizeof err), 0);
    image_check_result cr;
    assert_int_equal(image_check(img, &cr, err, sizeof err), 0);
    assert_int_equal(cr.nproblems, 0);
    assert_int_equal(cr.binaries, 1);
    image_check_free(&cr);
    image_close(im);
    sqlite3 *db;
    char sha[65] = "";
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(img, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT sha256 FROM binaries", -1, &st, NULL), 0);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(sha, sizeof sha, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "UPDATE binaries SET bytes = CAST(substr(bytes, 1, 999) ||"
                                  " X'5A' || substr(bytes, 1001) AS BLOB)", NULL, NULL, NULL), 0);
    sqlite3_close(db);
    assert_int_equal(image_open(img, &im, err, sizeof err), IMAGE_EBINARY);
    fx_assert_contains("error", err, sha);
    fx_assert_contains("error", err, "sw 1.0.0");
    assert_int_equal(image_check(img, &cr, err, sizeof err), 0);
    assert_int_equal(cr.nproblems, 1);
    fx_assert_contains("problem", cr.problems[0], sha);
    image_check_free(&cr);

    /* No copy: restored without it, "a" unrestorable and held. */
    assert_int_equal(image_open_ex(img, IMAGE_OPEN_BAD_BINARIES, &im, err, sizeof err), 0);
    size_t n;
    assert_non_null(image_bad_binaries(im, &n));
    assert_int_equal(n, 1);
    fx *g = fx_open(NULL);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/restore", g->dir);
    image_restored r;
    int reports = 0;
    assert_int_equal(image_restore(im, g->k, tmp, &r, report_count, &reports, err, sizeof err), 0);
    assert_int_equal(r.protos, 0);
    const image_unrestorable *u = image_unrestorables(im, &n);
    assert_int_equal(n, 1);
    assert_string_equal(u[0].name, "a");
    assert_string_equal(u[0].version, "1.0.0");
    fx_assert_contains("reason", u[0].reason, "fails its SHA-256");
    assert_int_equal(image_hold(im, "a", true), 0);
    /* A proto "a" made anew (what the config would do) is not written over
     * the held rows, nor is its deletion. */
    fx_load_ok(g, SW("2"), NULL);
    fx_proto_ok(g, "a", "sw", NULL);
    kernel_snapshot *s;
    assert_int_equal(kernel_snapshot_take(g->k, 1, 2000, &s, err, sizeof err), 0);
    assert_int_equal(image_write(im, s, err, sizeof err), 0);
    kernel_snapshot_done(g->k, s, 1);
    kernel_snapshot_free(s);
    kernel_snap_proto p;
    assert_int_equal(image_proto_load(im, "a", &p, err, sizeof err), 0);
    assert_string_equal(p.version, "1.0.0");
    assert_int_equal(p.nkeys, 1);
    image_proto_free(&p);
    fx_close(g);

    /* The backup's verified copy repairs it, and only it. */
    void *bytes;
    size_t len;
    assert_int_equal(image_find_binary(bak, sha, &bytes, &len), 0);
    free(bytes);
    assert_int_equal(image_find_binary(img, sha, &bytes, &len), A4PS_ENOENT);  /* damaged */
    assert_int_equal(image_find_binary(bak, sha, &bytes, &len), 0);
    assert_int_equal(image_binary_repair(im, sha, bytes, len, err, sizeof err), 0);
    free(bytes);
    image_bad_binaries(im, &n);
    assert_int_equal(n, 0);
    int rows = -1;
    assert_int_equal(image_proto_delete(im, "a", &rows, err, sizeof err), 0);
    assert_int_equal(rows, 1);
    assert_false(image_has_proto(im, "a"));
    assert_int_equal(image_proto_delete(im, "a", &rows, err, sizeof err), A4PS_ENOENT);
    image_close(im);
    assert_int_equal(image_open(img, &im, err, sizeof err), 0);
    image_close(im);
}

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(round_trip, teardown),
        cmocka_unit_test_teardown(incremental, teardown),
        cmocka_unit_test_teardown(consistent_under_load, teardown),
        cmocka_unit_test_teardown(lineage_round_trip, teardown),
        cmocka_unit_test_teardown(refuses_newer_format, teardown),
        cmocka_unit_test_teardown(refuses_damaged, teardown),
        cmocka_unit_test_teardown(failed_write_changes_nothing, teardown),
        cmocka_unit_test_teardown(binary_damage, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
