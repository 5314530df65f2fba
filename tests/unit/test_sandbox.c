/* test_sandbox.c -- the gVisor driver: a real runsc compiles a plugin in the
 * sandbox, and the host stays out of its reach: files, limits, time. */
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

#include "sandbox.h"

typedef struct env {
    char dir[256], work[300], secret[300];
    sandbox *sb;
} env;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static int setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/a4ps-sbx-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->work, sizeof e->work, "%s/work", e->dir);
    assert_int_equal(mkdir(e->work, 0700), 0);
    /* A host file the sandbox must not see (as the image would be). */
    snprintf(e->secret, sizeof e->secret, "%s/secret.img", e->dir);
    FILE *f = fopen(e->secret, "w");
    fputs("the image's secrets\n", f);
    fclose(f);
    char err[512];
    const char *ro[] = {A4PS_SOURCE_DIR "/abi", "/abi", NULL};
    if (sandbox_open(e->dir, NULL, ro, &e->sb, err, sizeof err) != 0)
        fail_msg("sandbox_open: %s", err);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    sandbox_close(e->sb);
    nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static const sandbox_limits lim = {.wall_ms = 30000, .cpu_s = 20, .mem_bytes = 1ull << 30,
                                   .nproc = 64, .file_bytes = 8u << 20, .output_bytes = 65536};

static void run(env *e, const char *const *argv, const sandbox_limits *l, sandbox_result *r)
{
    char err[512];
    if (sandbox_run(e->sb, e->work, argv, l, r, err, sizeof err) != 0)
        fail_msg("sandbox_run: %s", err);
}

/* The toolchain works inside: cc builds a plugin against the abi/ headers. */
static void compiles_a_plugin(void **state)
{
    env *e = *state;
    char src[400];
    snprintf(src, sizeof src, "%s/p.c", e->work);
    FILE *f = fopen(src, "w");
    fputs("#include \"a4ps.h\"\nstatic int m(a4ps_ctx *c, const void *p, size_t n)"
          "{ return A4PS_OK; }\nstatic const a4ps_method ms[] = {{\"m\", m, \"m\"}, {0,0,0}};\n"
          "static const a4ps_plugin d = {A4PS_PLUGIN_HEADER, .name = \"p\", .version = "
          "\"1.0.0\", .kind = A4PS_KIND_TOOL, .methods = ms};\nA4PS_EXPORT const a4ps_plugin "
          "*a4ps_plugin_entry(const a4ps_host_api *h) { return &d; }\n", f);
    fclose(f);
    const char *argv[] = {"/usr/bin/cc", "-shared", "-fPIC", "-fvisibility=hidden", "-I/abi",
                          "p.c", "-o", "p.so", NULL};
    sandbox_result r;
    run(e, argv, &lim, &r);
    if (!r.exited || r.status != 0)
        fail_msg("cc failed (%d): %s", r.status, r.errout ? r.errout : "");
    char so[400];
    snprintf(so, sizeof so, "%s/p.so", e->work);
    struct stat st;
    assert_int_equal(stat(so, &st), 0);
    assert_true(st.st_size > 1000);
    sandbox_result_free(&r);
}

/* Nothing of the host but the toolchain: not /etc/shadow, not /root, not a
 * file next to the work directory. */
static void host_is_out_of_reach(void **state)
{
    env *e = *state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cat /etc/shadow; cat %s; cat /root/.bashrc; "
             "echo written > /usr/evil; echo done", e->secret);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    sandbox_result r;
    run(e, argv, &lim, &r);
    assert_non_null(r.out);
    assert_string_equal(r.out, "done\n");
    assert_null(strstr(r.errout ? r.errout : "", "secrets"));
    assert_non_null(strstr(r.errout, "/etc/shadow"));
    assert_int_equal(access("/usr/evil", F_OK), -1);
    sandbox_result_free(&r);
}

/* A run past its wall-clock limit is killed (and its container deleted). */
static void wall_limit_kills(void **state)
{
    env *e = *state;
    sandbox_limits l = lim;
    l.wall_ms = 1500;
    const char *argv[] = {"/bin/sleep", "100", NULL};
    sandbox_result r;
    run(e, argv, &l, &r);
    assert_true(r.timed_out);
    sandbox_result_free(&r);
}

/* Output beyond output_bytes is dropped; files stop at file_bytes. */
static void output_and_file_limits(void **state)
{
    env *e = *state;
    sandbox_limits l = lim;
    l.output_bytes = 1000;
    l.file_bytes = 1 << 20;
    const char *argv[] = {"/bin/sh", "-c", "head -c 5000000 /dev/zero > big; "
                          "head -c 100000 /dev/zero | tr '\\0' x", NULL};
    sandbox_result r;
    run(e, argv, &l, &r);
    assert_true(r.truncated);
    assert_int_equal(r.outlen, 1000);
    char big[400];
    snprintf(big, sizeof big, "%s/big", e->work);
    struct stat st;
    assert_int_equal(stat(big, &st), 0);
    assert_int_equal(st.st_size, 1 << 20);
    sandbox_result_free(&r);
}

/* Without runsc the sandbox refuses, saying how to install it. */
static void missing_runsc_fails_closed(void **state)
{
    env *e = *state;
    sandbox *sb;
    char err[512];
    assert_int_equal(sandbox_open(e->dir, "/nonexistent/runsc", NULL, &sb, err, sizeof err), -1);
    assert_non_null(strstr(err, "apt-get install runsc"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(compiles_a_plugin, setup, teardown),
        cmocka_unit_test_setup_teardown(host_is_out_of_reach, setup, teardown),
        cmocka_unit_test_setup_teardown(wall_limit_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(output_and_file_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_runsc_fails_closed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
