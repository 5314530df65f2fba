/* test_probe.c -- a4ps-probe in a real runsc, and the forge's compile step:
 * good plugins pass with their test cases and state, and each hostile
 * candidate (tests/plugins/hostile) is contained and reported for exactly
 * what it did, while this process goes on unharmed. */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "probe.h"

#define PLUGIN(name) A4PS_TEST_PLUGIN_DIR "/" name ".so"

typedef struct env {
    char dir[256], secret[300], image[300], abi[300];
    sandbox *sb;
} env;

static const sandbox_limits lim = {.wall_ms = 20000, .cpu_s = 20, .mem_bytes = 1ull << 30,
                                   .nproc = 64, .file_bytes = 16u << 20,
                                   .output_bytes = 1u << 20};

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int copy_file(const char *src, const char *dir)
{
    const char *base = strrchr(src, '/') + 1;
    char dst[400], buf[65536];
    snprintf(dst, sizeof dst, "%s/%s", dir, base);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    size_t n;
    int rc = in && out ? 0 : -1;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc ? rc : chmod(dst, 0644);
}

static int group_setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/a4ps-probe-test-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    /* Host files a candidate must never read: a secret, an image. */
    snprintf(e->secret, sizeof e->secret, "%s/secret.txt", e->dir);
    put(e->secret, "the host's secret\n");
    snprintf(e->image, sizeof e->image, "%s/a4ps.img", e->dir);
    put(e->image, "SQLite format 3 -- the image's secrets\n");
    /* The headers the sandbox compiles against: a copy readable by the
     * sandbox's unprivileged user whatever the modes in the checkout. */
    snprintf(e->abi, sizeof e->abi, "%s/abi", e->dir);
    if (mkdir(e->abi, 0755) != 0 || copy_file(A4PS_SOURCE_DIR "/abi/a4ps.h", e->abi) != 0 ||
        copy_file(A4PS_SOURCE_DIR "/abi/a4ps_version.h", e->abi) != 0)
        return -1;
    char err[512];
    if (sandbox_probe_check(A4PS_PROBE_DIR, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    const char *ro[] = {e->abi, SANDBOX_ABI_MOUNT, A4PS_PROBE_DIR,
                        SANDBOX_PROBE_MOUNT, NULL};
    if (sandbox_open(e->dir, NULL, ro, &e->sb, err, sizeof err) != 0) {
        fprintf(stderr, "sandbox_open: %s\n", err);
        return -1;
    }
    *state = e;
    return 0;
}

static int group_teardown(void **state)
{
    env *e = *state;
    sandbox_close(e->sb);
    nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

/* Probe so with cases/state; returns the parsed report and checks that the
 * return value agrees with its verdict. */
static json_t *probe(env *e, const char *so, const char *cases, const void *st, size_t stlen,
                     unsigned call_ms, const sandbox_limits *l, int want_rc)
{
    probe_request rq = {.so_path = so, .cases_json = cases, .state = st, .state_len = stlen,
                        .call_ms = call_ms, .hook_ms = 1000};
    char *rep = NULL, err[1024];
    int rc = sandbox_probe(e->sb, &rq, l ? l : &lim, &rep, err, sizeof err);
    if (rc < 0)
        fail_msg("sandbox_probe(%s): %s", so, err);
    assert_non_null(rep);
    json_error_t je;
    json_t *j = json_loads(rep, 0, &je);
    if (!j)
        fail_msg("report of %s is not JSON (%s): %.400s", so, je.text, rep);
    if (rc != want_rc)
        fail_msg("sandbox_probe(%s) returned %d, expected %d: %.2000s", so, rc, want_rc, rep);
    free(rep);
    const char *verdict = json_string_value(json_object_get(j, "verdict"));
    assert_non_null(verdict);
    assert_string_equal(verdict, rc == 1 ? "pass" : "fail");
    return j;
}

static const char *reason(json_t *r)
{
    const char *s = json_string_value(json_object_get(r, "reason"));
    return s ? s : "";
}

static void assert_reason(json_t *r, const char *part)
{
    if (!strstr(reason(r), part))
        fail_msg("reason \"%s\" does not contain \"%s\"", reason(r), part);
}

static json_t *test_named(json_t *r, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(r, "tests"), i, t)
        if (!strcmp(json_string_value(json_object_get(t, "name")), name))
            return t;
    fail_msg("no test \"%s\" in the report", name);
    return NULL;
}

static const char *reply_of(json_t *r, const char *name)
{
    return json_string_value(json_object_get(test_named(r, name), "reply"));
}

static int denied_count(json_t *r, const char *sys)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(r, "denied_syscalls"), i, d)
        if (!strcmp(json_string_value(json_object_get(d, "syscall")), sys))
            return (int)json_integer_value(json_object_get(d, "count"));
    return 0;
}

static int composed(json_t *r)
{
    return json_is_true(json_object_get(r, "composed"));
}

/* ---- Good candidates ---- */

/* good.so passes; matching cases pass, exactly or after trimming. */
static void good_plugin_passes(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("good"),
                      "[{\"selector\":\"ping\",\"input\":\"\",\"expect\":\"pong\"},"
                      " {\"selector\":\"echo\",\"input\":\"hi\\n\",\"expect\":\"hi\"},"
                      " {\"selector\":\"nope\",\"input\":\"x\",\"status\":-38}]",
                      NULL, 0, 2000, NULL, 1);
    assert_true(json_is_null(json_object_get(r, "reason")));
    assert_false(composed(r));
    assert_string_equal(json_string_value(json_object_get(r, "file")), "good.so");
    json_t *pl = json_object_get(r, "plugin");
    assert_string_equal(json_string_value(json_object_get(pl, "name")), "good");
    assert_string_equal(json_string_value(json_object_get(pl, "kind")), "tool");
    assert_int_equal(json_array_size(json_object_get(pl, "methods")), 2);
    assert_string_equal(json_string_value(json_object_get(test_named(r, "case 0 (ping)"), "match")),
                        "exact");
    assert_string_equal(json_string_value(json_object_get(test_named(r, "case 1 (echo)"), "match")),
                        "trimmed");
    assert_true(json_is_true(json_object_get(test_named(r, "case 2 (nope)"), "ok")));
    assert_true(json_is_true(json_object_get(test_named(r, "contract echo/random-4k"), "ok")));
    assert_true(json_is_true(json_object_get(test_named(r, "contract unknown-selector"), "ok")));
    assert_int_equal(json_array_size(json_object_get(r, "denied_syscalls")), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "failed")), 0);
    json_decref(r);
}

/* A case whose expect is wrong fails the probe, naming its selector. */
static void wrong_expect_fails(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("good"),
                      "[{\"selector\":\"echo\",\"input\":\"x\",\"expect\":\"x\"},"
                      " {\"selector\":\"ping\",\"input\":\"\",\"expect\":\"pang\"}]",
                      NULL, 0, 2000, NULL, 0);
    assert_reason(r, "case 1 (ping)");
    assert_reason(r, "expected \"pang\", got \"pong\"");
    assert_false(json_is_true(json_object_get(test_named(r, "case 1 (ping)"), "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "failed")), 1);
    json_decref(r);
}

static size_t rec(unsigned char *p, const char *k, const char *v)
{
    uint32_t kl = (uint32_t)strlen(k), vl = (uint32_t)strlen(v);
    size_t o = 0;
    for (int i = 0; i < 4; i++)
        p[o++] = (unsigned char)(kl >> (8 * i));
    memcpy(p + o, k, kl);
    o += kl;
    for (int i = 0; i < 4; i++)
        p[o++] = (unsigned char)(vl >> (8 * i));
    memcpy(p + o, v, vl);
    return o + vl;
}

/* --state is what the methods see in their proto's state. */
static void state_is_visible(void **state)
{
    env *e = *state;
    unsigned char st[256];
    size_t n = rec(st, "greeting", "hello");
    n += rec(st + n, "empty", "");
    json_t *r = probe(e, PLUGIN("hostile_snoop"),
                      "[{\"selector\":\"statecheck\",\"input\":\"greeting\",\"expect\":\"hello\"},"
                      " {\"selector\":\"statecheck\",\"input\":\"absent\",\"expect\":\"missing\"}]",
                      st, n, 2000, NULL, 1);
    assert_string_equal(reply_of(r, "case 0 (statecheck)"), "hello");
    json_decref(r);
    /* A malformed state file is the caller's error, not the candidate's. */
    probe_request rq = {.so_path = PLUGIN("good"), .state = "\xff\xff\xff\xff", .state_len = 4};
    char *rep = NULL, err[1024];
    assert_int_equal(sandbox_probe(e->sb, &rq, &lim, &rep, err, sizeof err), -1);
    assert_non_null(strstr(err, "key length"));
    free(rep);
}

/* ---- Compiling ---- */

static const char good_src[] =
    "#include \"a4ps.h\"\n"
    "static int hi(a4ps_ctx *c, const void *m, size_t n)\n"
    "{ (void)m; (void)n; return a4ps_reply(c, \"hello\", 5); }\n"
    "static const a4ps_method ms[] = {{\"hi\", hi, \"greet\"}, {0, 0, 0}};\n"
    "static const a4ps_plugin d = {A4PS_PLUGIN_HEADER, .name = \"forged\", .version = "
    "\"1.0.0\", .kind = A4PS_KIND_TOOL, .methods = ms};\n"
    "A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *h)\n"
    "{ (void)h; return &d; }\n";

/* A source that compiles becomes a .so that then passes the probe. */
static void compile_then_probe(void **state)
{
    env *e = *state;
    char so[400], *diag = NULL, err[1024];
    snprintf(so, sizeof so, "%s/forged.so", e->dir);
    int rc = sandbox_compile(e->sb, good_src, strlen(good_src), so, &lim, &diag, err, sizeof err);
    if (rc != 0)
        fail_msg("sandbox_compile: %d %s %s", rc, err, diag ? diag : "");
    assert_non_null(diag);
    for (const char *c = diag; *c; c++)
        if (*c != '\n' && *c != ' ')
            fail_msg("diagnostics for a clean source: %s", diag);
    free(diag);
    struct stat st;
    assert_int_equal(stat(so, &st), 0);
    assert_true(st.st_size > 1000);
    assert_int_equal(st.st_mode & 022, 0);
    json_t *r = probe(e, so, "[{\"selector\":\"hi\",\"input\":\"\",\"expect\":\"hello\"}]", NULL,
                      0, 2000, NULL, 1);
    assert_string_equal(json_string_value(json_object_get(r, "file")), "forged.so");
    json_decref(r);
}

/* A source that does not compile: 1, and the compiler's error with its line. */
static void compile_error_is_reported(void **state)
{
    env *e = *state;
    static const char bad[] =
        "#include \"a4ps.h\"\n\nint oops(void) { return undeclared_thing; }\n";
    char so[400], *diag = NULL, err[1024];
    snprintf(so, sizeof so, "%s/never.so", e->dir);
    assert_int_equal(sandbox_compile(e->sb, bad, strlen(bad), so, &lim, &diag, err, sizeof err), 1);
    assert_non_null(diag);
    if (!strstr(diag, "candidate.c:3:") || !strstr(diag, "undeclared_thing") ||
        !strstr(diag, "error"))
        fail_msg("diagnostics: %s", diag);
    free(diag);
    assert_int_equal(access(so, F_OK), -1);
}

/* ---- Hostile candidates ---- */

/* The network: socket(2) is denied and the report says so. */
static void network_is_denied(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("hostile_net"), NULL, NULL, 0, 2000, NULL, 0);
    assert_false(composed(r));
    assert_true(denied_count(r, "socket") >= 1);
    assert_reason(r, "tried socket(2), which plugins may not use");
    assert_string_equal(reply_of(r, "contract connect/empty"), "errno 1");
    json_decref(r);
}

/* A fork bomb: every way to a new process is denied. */
static void fork_bomb_is_denied(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("hostile_forkbomb"), NULL, NULL, 0, 2000, NULL, 0);
    assert_false(composed(r));
    assert_true(denied_count(r, "clone") >= 1);   /* glibc's fork() */
    assert_true(denied_count(r, "fork") >= 1);
    assert_true(denied_count(r, "execve") >= 1);
    assert_reason(r, "tried clone(2), which plugins may not use");
    json_decref(r);
}

/* A method that never returns: the watchdog ends the probe at call_ms. */
static void hanging_method_times_out(void **state)
{
    env *e = *state;
    sandbox_limits l = lim;
    l.wall_ms = 5000;
    json_t *r = probe(e, PLUGIN("hostile_spin"), NULL, NULL, 0, 500, &l, 0);
    assert_false(composed(r));
    assert_reason(r, "contract spin/empty timed out after 500 ms");
    json_t *t = test_named(r, "contract spin/empty");
    assert_false(json_is_true(json_object_get(t, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(t, "error")), "timed out"));
    json_decref(r);
}

/* A constructor that never returns: the reporter stops waiting for the
 * load's answer at its limit (2 * hook_ms + call_ms + 5 s), kills the child and
 * still writes the report, naming the stage and how the child ended. */
static void hanging_constructor_is_killed(void **state)
{
    env *e = *state;
    sandbox_limits l = lim;
    l.wall_ms = 15000;
    json_t *r = probe(e, PLUGIN("hostile_ctor_spin"), NULL, NULL, 0, 500, &l, 0);
    assert_false(composed(r));
    assert_reason(r, "load did not finish within 7500 ms");
    json_t *child = json_object_get(r, "child");
    assert_string_equal(json_string_value(json_object_get(child, "stage")), "load");
    assert_true(json_is_true(json_object_get(json_object_get(child, "end"), "killed")));
    json_decref(r);
}

/* A memory bomb: malloc fails at RLIMIT_AS, the write through NULL is a
 * fault the kernel catches, and the report says so. */
static void memory_bomb_is_contained(void **state)
{
    env *e = *state;
    sandbox_limits l = lim;
    l.mem_bytes = 384u << 20;
    json_t *r = probe(e, PLUGIN("hostile_membomb"), NULL, NULL, 0, 5000, &l, 0);
    assert_false(composed(r));
    assert_reason(r, "contract eat/empty: faulted");
    assert_reason(r, "SIGSEGV");
    json_decref(r);
}

/* The host's files: not there to read (the image, the config, a secret,
 * /etc/shadow) and not there to write (/usr, /etc, /root). */
static void host_files_are_out_of_reach(void **state)
{
    env *e = *state;
    char cases[4096];
    snprintf(cases, sizeof cases,
             "[{\"selector\":\"read\",\"input\":\"/etc/shadow\"},"
             " {\"selector\":\"read\",\"input\":\"%s\"},"
             " {\"selector\":\"read\",\"input\":\"%s\"},"
             " {\"selector\":\"read\",\"input\":\"%s/config/a4ps.cfg\"},"
             " {\"selector\":\"read\",\"input\":\"/root/.bashrc\"},"
             " {\"selector\":\"write\",\"input\":\"/usr/a4ps-probe-evil\"},"
             " {\"selector\":\"write\",\"input\":\"/etc/a4ps-probe-evil\"},"
             " {\"selector\":\"write\",\"input\":\"/root/a4ps-probe-evil\"},"
             " {\"selector\":\"write\",\"input\":\"/work/mine\"},"
             " {\"selector\":\"read\",\"input\":\"/work/mine\"}]",
             e->secret, e->image, A4PS_SOURCE_DIR);
    json_t *r = probe(e, PLUGIN("hostile_snoop"), cases, NULL, 0, 2000, NULL, 1);
    for (int i = 0; i < 8; i++) {
        char name[64];
        snprintf(name, sizeof name, "case %d (%s)", i, i < 5 ? "read" : "write");
        const char *rep = reply_of(r, name);
        if (strncmp(rep, "errno ", 6))
            fail_msg("%s: the candidate got \"%s\"", name, rep);
    }
    /* Its own work directory is its to use. */
    assert_string_equal(reply_of(r, "case 8 (write)"), "wrote");
    assert_string_equal(reply_of(r, "case 9 (read)"), "read 6: owned\n");
    char *dump = json_dumps(r, 0);
    assert_null(strstr(dump, "the host's secret"));
    assert_null(strstr(dump, "the image's secrets"));
    free(dump);
    assert_int_equal(access("/usr/a4ps-probe-evil", F_OK), -1);
    assert_int_equal(access("/etc/a4ps-probe-evil", F_OK), -1);
    assert_int_equal(access("/root/a4ps-probe-evil", F_OK), -1);
    json_decref(r);
}

/* Gigabytes on stdout and stderr, and a fake report: the real report is
 * intact and passes (the plugin did nothing it may not). */
static void output_flood_cannot_corrupt_the_report(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("hostile_spew"), NULL, NULL, 0, 10000, NULL, 1);
    assert_false(composed(r));
    assert_string_equal(json_string_value(json_object_get(r, "file")), "hostile_spew.so");
    assert_string_equal(reply_of(r, "contract spew/empty"), "spewed");
    json_decref(r);
}

/* A constructor that crashes kills the child, not the reporter: the
 * report says so, with the signal and the stage. */
static void crashing_constructor_is_reported(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("hostile_ctor_crash"), NULL, NULL, 0, 2000, NULL, 0);
    assert_false(composed(r));
    assert_reason(r, "died with signal 11 (SIGSEGV) during stage load");
    json_t *end = json_object_get(json_object_get(r, "child"), "end");
    assert_int_equal(json_integer_value(json_object_get(end, "signal")), 11);
    json_decref(r);
}

/* exit() in init: the probe's atexit handler still reports. */
static void exit_in_init_is_reported(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("hostile_exit_init"), NULL, NULL, 0, 2000, NULL, 0);
    assert_false(composed(r));
    assert_reason(r, "the plugin called exit() during stage load");
    json_decref(r);
}

/* An attack on the probe itself (its report's descriptors, its SIGSYS
 * handler) is refused, and the socket after it is still caught. */
static void probe_defences_hold(void **state)
{
    env *e = *state;
    json_t *r = probe(e, PLUGIN("hostile_tamper"), NULL, NULL, 0, 2000, NULL, 0);
    assert_false(composed(r));
    assert_string_equal(reply_of(r, "contract tamper/empty"), "took 0, socket -1 errno 1");
    assert_true(denied_count(r, "socket") >= 1);
    assert_reason(r, "tried socket(2), which plugins may not use");
    json_decref(r);
}

/* A candidate that forges the report (tests/plugins/hostile/forge_report.c):
 * in its constructor it writes a passing report on itself to every
 * descriptor and /proc path it can reach, answers in advance every step
 * the probe would ask, and _exits.  The report fails, says why, names the
 * real file, and holds nothing of the forgery. */
static void forged_report_fails(void **state)
{
    env *e = *state;
    probe_request rq = {.so_path = PLUGIN("hostile_forge_report"), .call_ms = 2000,
                        .hook_ms = 1000,
                        .cases_json = "[{\"selector\":\"ping\",\"input\":\"\",\"expect\":\"x\"}]"};
    char *rep = NULL, err[1024], why[600];
    assert_int_equal(sandbox_probe(e->sb, &rq, &lim, &rep, err, sizeof err), 0);
    assert_null(strstr(rep, "FORGED-BY-THE-CANDIDATE"));
    json_t *r = json_loads(rep, 0, NULL);
    assert_non_null(r);
    assert_false(composed(r));
    assert_string_equal(json_string_value(json_object_get(r, "verdict")), "fail");
    assert_string_equal(json_string_value(json_object_get(r, "file")), "hostile_forge_report.so");
    /* The answers it wrote ahead are data nobody asked for. */
    assert_reason(r, "the plugin's process sent data nobody asked for before stage describe");
    json_t *c0 = json_array_get(json_object_get(r, "cases"), 0);
    assert_false(json_is_true(json_object_get(c0, "ran")));
    assert_int_equal(probe_report_accept(rep, rq.cases_json, "ping", why, sizeof why), 0);
    json_decref(r);
    free(rep);
}

/* The host accepts a pass only for what it asked: every case, matched by
 * index, selector, input, expectation and status, run and passed; the
 * task's selector among the methods and called; the child ended cleanly. */
static void host_matches_every_case(void **state)
{
    env *e = *state;
    const char *cases = "[{\"selector\":\"ping\",\"input\":\"\",\"expect\":\"pong\"},"
                        " {\"selector\":\"echo\",\"input\":\"hi\",\"expect\":\"hi\"}]";
    probe_request rq = {.so_path = PLUGIN("good"), .cases_json = cases, .call_ms = 2000,
                        .hook_ms = 1000};
    char *rep = NULL, err[1024], why[600];
    assert_int_equal(sandbox_probe(e->sb, &rq, &lim, &rep, err, sizeof err), 1);
    assert_int_equal(probe_report_accept(rep, cases, NULL, why, sizeof why), 1);
    assert_int_equal(probe_report_accept(rep, cases, "echo", why, sizeof why), 1);
    assert_int_equal(probe_report_accept(rep, cases, "nope", why, sizeof why), 0);
    assert_non_null(strstr(why, "has no method 'nope'"));
    /* Not by count: the same number of cases, one input changed. */
    assert_int_equal(probe_report_accept(rep, "[{\"selector\":\"ping\",\"input\":\"\",\"expect\":"
                                              "\"pong\"}, {\"selector\":\"echo\",\"input\":\"ho\","
                                              "\"expect\":\"hi\"}]", NULL, why, sizeof why), 0);
    assert_non_null(strstr(why, "case 1 is not the case 1 asked"));
    assert_int_equal(probe_report_accept(rep, "[{\"selector\":\"ping\",\"input\":\"\",\"expect\":"
                                              "\"pong\"}, {\"selector\":\"echo\",\"input\":\"hi\","
                                              "\"expect\":\"hi\",\"status\":-1}]", NULL, why,
                                         sizeof why), 0);
    assert_int_equal(probe_report_accept(rep, NULL, NULL, why, sizeof why), 0);
    assert_non_null(strstr(why, "lists 2 cases; 0 were asked"));
    /* Doctored reports: a case not run, a child that did not end cleanly. */
    json_t *r = json_loads(rep, 0, NULL);
    json_object_set_new(json_array_get(json_object_get(r, "cases"), 1), "ran", json_false());
    char *s = json_dumps(r, 0);
    assert_int_equal(probe_report_accept(s, cases, NULL, why, sizeof why), 0);
    assert_non_null(strstr(why, "case 1 (echo) did not run"));
    free(s);
    json_object_set_new(json_array_get(json_object_get(r, "cases"), 1), "ran", json_true());
    json_object_set_new(json_object_get(r, "child"), "end", json_pack("{s:i}", "status", 3));
    s = json_dumps(r, 0);
    assert_int_equal(probe_report_accept(s, cases, NULL, why, sizeof why), 0);
    assert_non_null(strstr(why, "status 0"));
    free(s);
    json_decref(r);
    free(rep);
}

/* ---- The caller's mistakes ---- */

static void bad_inputs_are_refused(void **state)
{
    env *e = *state;
    char *rep = NULL, err[1024];
    probe_request rq = {.so_path = PLUGIN("good"), .cases_json = "[{\"input\":\"x\"}]"};
    assert_int_equal(sandbox_probe(e->sb, &rq, &lim, &rep, err, sizeof err), -1);
    assert_non_null(strstr(err, "refused to run"));
    assert_non_null(strstr(err, "selector"));
    free(rep);
    rq.cases_json = NULL;
    rq.so_path = "/nonexistent/x.so";
    assert_int_equal(sandbox_probe(e->sb, &rq, &lim, &rep, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.so"));
    assert_int_equal(sandbox_probe_check("/nonexistent", err, sizeof err), -1);
    assert_non_null(strstr(err, "a4ps-probe"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_plugin_passes),
        cmocka_unit_test(wrong_expect_fails),
        cmocka_unit_test(state_is_visible),
        cmocka_unit_test(compile_then_probe),
        cmocka_unit_test(compile_error_is_reported),
        cmocka_unit_test(network_is_denied),
        cmocka_unit_test(fork_bomb_is_denied),
        cmocka_unit_test(hanging_method_times_out),
        cmocka_unit_test(hanging_constructor_is_killed),
        cmocka_unit_test(memory_bomb_is_contained),
        cmocka_unit_test(host_files_are_out_of_reach),
        cmocka_unit_test(output_flood_cannot_corrupt_the_report),
        cmocka_unit_test(crashing_constructor_is_reported),
        cmocka_unit_test(exit_in_init_is_reported),
        cmocka_unit_test(probe_defences_hold),
        cmocka_unit_test(forged_report_fails),
        cmocka_unit_test(host_matches_every_case),
        cmocka_unit_test(bad_inputs_are_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
