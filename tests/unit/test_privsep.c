/* test_privsep.c -- a4psd's privileged helper (kernel/daemon/privsep.c),
 * played against by a hostile a4psd: malformed, oversized, truncated and
 * random requests, wrong descriptors, work directories and ids that are not
 * the sandbox's, limits above the config's.  Each is refused with a reason
 * and the helper keeps running; a well-formed run still goes through, and
 * runsc gets only the helper's fixed arguments and bundle.  runsc is a
 * script here that prints what it was given, so no gVisor is needed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/privsep.h"

typedef struct env {
    char dir[256], runsc[300];
    const char *dirs[2];
    privsep_config pc;
    privsep *ps;
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

/* The stand-in runsc runs nothing, so the helper's allow-list is the
 * harmless program the valid requests name; the real one's list is
 * PRIVSEP_PROGRAMS. */
static const char *const test_programs[] = {"/usr/bin/true", NULL};

static int setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/a4ps-privsep-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    /* The fake runsc: prints its arguments and, for a run, the bundle the
     * helper wrote. */
    snprintf(e->runsc, sizeof e->runsc, "%s/runsc", e->dir);
    FILE *f = fopen(e->runsc, "w");
    fputs("#!/bin/sh\necho \"ARGS $*\"\n[ \"$4\" = run ] && cat \"$6/config.json\"\nexit 0\n", f);
    fclose(f);
    chmod(e->runsc, 0755);
    e->dirs[0] = e->dir;
    e->pc = (privsep_config){.runsc = e->runsc, .sandbox_dirs = e->dirs, .ro_dirs = NULL,
                             .daemon_uid = geteuid(), .daemon_gid = getegid(),
                             .max = {.cpu_s = 10, .mem_bytes = 1 << 30, .nproc = 16,
                                     .file_bytes = 1 << 20},
                             .programs = test_programs};
    char err[512], *why = NULL;
    if (privsep_start(&e->pc, &e->ps, &why, err, sizeof err) != 0)
        fail_msg("privsep_start: %s", err);
    if (why)
        fail_msg("the helper is not ready: %s", why);
    sandbox_set_runner(privsep_runner(e->ps));
    if (sandbox_open(e->dir, e->runsc, NULL, &e->sb, err, sizeof err) != 0)
        fail_msg("sandbox_open: %s", err);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    sandbox_close(e->sb);
    sandbox_set_runner(NULL);
    privsep_stop(e->ps);
    nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static void assert_helper_alive(env *e)
{
    int st;
    assert_int_equal(waitpid(privsep_pid(e->ps), &st, WNOHANG), 0);
}

/* A run through the runner, as the verifier does it. */
static void run_ok(env *e)
{
    char err[512], work[512];
    assert_int_equal(sandbox_work_create(e->sb, work, sizeof work, err, sizeof err), 0);
    const char *argv[] = {"/usr/bin/true", "x", NULL};
    sandbox_limits lim = {.wall_ms = 60000, .cpu_s = 10, .mem_bytes = 1 << 30, .nproc = 16,
                          .file_bytes = 1 << 20, .output_bytes = 1 << 16};
    sandbox_result r;
    if (sandbox_run(e->sb, work, argv, &lim, &r, err, sizeof err) != 0)
        fail_msg("sandbox_run: %s", err);
    assert_int_equal(r.exited, 1);
    assert_int_equal(r.status, 0);
    assert_non_null(r.out);
    /* Only the helper's fixed arguments reach runsc. */
    assert_non_null(strstr(r.out, "--network=none run --bundle"));
    assert_non_null(strstr(r.out, "/sandbox/runsc --network"));
    assert_non_null(strstr(r.out, "\"network\""));
    assert_non_null(strstr(r.out, "\"readonly\":true"));
    sandbox_result_free(&r);
    sandbox_work_remove(work);
}

static void valid_run(void **state)
{
    run_ok(*state);
}

/* Send one raw record with nfds descriptors; the reply (if a reply socket
 * went along) must be a refusal. */
static void send_raw(env *e, const void *buf, size_t len, int nfds, int kinds, bool expect_reply)
{
    int po[2], pe[2], sv[2], fds[8], n = 0;
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int devnull = open("/dev/null", O_RDONLY);
    for (int i = 0; i < nfds; i++) {
        /* kinds 0: the right ones; 1: /dev/null for everything */
        int fd = kinds ? devnull : i == 0 ? po[1] : i == 1 ? pe[1] : i == 2 ? sv[1] : devnull;
        if (kinds == 2 && i == 2)
            fd = devnull;        /* the reply "socket" is not one */
        fds[n++] = fd;
    }
    char cbuf[CMSG_SPACE(sizeof fds)];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {(void *)buf, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n) {
        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    }
    ssize_t w = sendmsg(privsep_fd(e->ps), &m, MSG_NOSIGNAL);
    assert_true(w == (ssize_t)len || (w < 0 && errno == EMSGSIZE));
    close(po[1]);
    close(pe[1]);
    close(sv[1]);
    if (w >= 0 && expect_reply) {
        privsep_reply r;
        ssize_t got = recv(sv[0], &r, sizeof r, 0);
        assert_int_equal(got, (ssize_t)sizeof r);
        assert_int_equal(r.ok, 0);
        r.message[sizeof r.message - 1] = 0;
        assert_non_null(strstr(r.message, "refused"));
        /* And nothing ran: the pipes are closed, empty. */
        char c;
        assert_int_equal(read(po[0], &c, 1), 0);
    }
    close(po[0]);
    close(pe[0]);
    close(sv[0]);
    close(devnull);
    assert_helper_alive(e);
}

static privsep_req good_req(env *e)
{
    char err[512], work[512];
    assert_int_equal(sandbox_work_create(e->sb, work, sizeof work, err, sizeof err), 0);
    privsep_req rq = {.magic = PRIVSEP_MAGIC, .op = PRIVSEP_OP_RUN, .nargs = 1,
                      .cpu_s = 1, .mem_bytes = 1 << 20, .nproc = 1, .file_bytes = 1 << 10};
    snprintf(rq.id, sizeof rq.id, "a4ps-%d-9-9", (int)getpid());
    snprintf(rq.workdir, sizeof rq.workdir, "%s", work);
    snprintf(rq.args, sizeof rq.args, "/usr/bin/true");
    return rq;
}

static void malformed_requests_refused(void **state)
{
    env *e = *state;
    privsep_req rq = good_req(e), bad;
    /* Not a whole request: empty, short, long. */
    send_raw(e, &rq, 0, 3, 0, true);
    send_raw(e, &rq, 10, 3, 0, true);
    char big[sizeof rq + 100];
    memset(big, 'A', sizeof big);
    send_raw(e, big, sizeof big, 3, 0, true);
    /* Wrong magic, wrong op. */
    bad = rq;
    bad.magic ^= 1;
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    bad = rq;
    bad.op = 7;
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    /* Descriptors: none, two, three of the wrong kind, a reply socket that
     * is not one, eight. */
    send_raw(e, &rq, sizeof rq, 0, 0, false);
    send_raw(e, &rq, sizeof rq, 2, 0, false);
    send_raw(e, &rq, sizeof rq, 3, 2, false);
    send_raw(e, &rq, sizeof rq, 8, 0, false);
    /* A reserved field set, ids of another shape. */
    bad = rq;
    bad.reserved = 5;
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    static const char *const ids[] = {"a4ps-1-2", "a4ps-1-2-3; rm -rf /", "../../etc",
                                      "a4ps--1-2", "", "a4ps-1-2-3-4"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        bad = rq;
        snprintf(bad.id, sizeof bad.id, "%s", ids[i]);
        send_raw(e, &bad, sizeof bad, 3, 0, true);
    }
    bad = rq;
    memset(bad.id, 'a', sizeof bad.id);  /* no NUL */
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    /* Work directories that are not one of the sandbox's own. */
    char link[600], other[600];
    snprintf(link, sizeof link, "%s/sandbox/work-LINKED", e->dir);
    assert_int_equal(symlink("/etc", link), 0);
    snprintf(other, sizeof other, "%s/sandbox/work-NOTMINE", e->dir);
    assert_int_equal(mkdir(other, 0700), 0);
    assert_int_equal(chown(other, 12345, 12345), 0);
    const char *dirs[] = {"/etc", "/", link, other, "/tmp/work-AAAAAA"};
    char dotdot[700];
    snprintf(dotdot, sizeof dotdot, "%s/../work-AAAAAA", e->dir);
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0] + 1; i++) {
        bad = rq;
        snprintf(bad.workdir, sizeof bad.workdir, "%s", i < 5 ? dirs[i] : dotdot);
        send_raw(e, &bad, sizeof bad, 3, 0, true);
    }
    /* Limits above the config's, or none. */
    bad = rq;
    bad.cpu_s = 11;
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    bad = rq;
    bad.mem_bytes = 0;
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    bad = rq;
    bad.file_bytes = UINT64_MAX;
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    /* Arguments: none, too many, not terminated, a relative program. */
    uint32_t counts[] = {0, PRIVSEP_MAX_ARGS + 1, 1000000000u, 2};
    for (size_t i = 0; i < 4; i++) {
        bad = rq;
        bad.nargs = counts[i];
        if (i == 3)
            memset(bad.args, 'x', sizeof bad.args);
        send_raw(e, &bad, sizeof bad, 3, 0, true);
    }
    bad = rq;
    snprintf(bad.args, sizeof bad.args, "sh");
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    /* An absolute program that is not one a4psd runs: what a plugin that
     * found the channel asked for (the red team ran /bin/sh as root's run). */
    bad = rq;
    snprintf(bad.args, sizeof bad.args, "/bin/sh");
    send_raw(e, &bad, sizeof bad, 3, 0, true);
    /* After all of it the helper still serves. */
    run_ok(e);
}

/* Random records of every length: refused, never a crash. */
static void fuzz(void **state)
{
    env *e = *state;
    srand(12345);
    unsigned char buf[sizeof(privsep_req) + 64];
    for (int i = 0; i < 300; i++) {
        size_t len = 1 + (size_t)rand() % sizeof buf;
        for (size_t j = 0; j < len; j++)
            buf[j] = (unsigned char)rand();
        if (i % 3 == 0 && len >= 8) {
            uint32_t magic = PRIVSEP_MAGIC, op = PRIVSEP_OP_RUN;
            memcpy(buf, &magic, 4);  /* past the first check, into the others */
            memcpy(buf + 4, &op, 4);
        }
        send_raw(e, buf, len, 3, 0, true);
    }
    run_ok(e);
}

/* The helper ends with its channel (a4psd gone). */
static void ends_with_channel(void **state)
{
    env *e = *state;
    pid_t pid = privsep_pid(e->ps);
    privsep_stop(e->ps);         /* closes and reaps: returns only if it ended */
    assert_int_equal(kill(pid, 0), -1);
    char err[512], *why = NULL;
    assert_int_equal(privsep_start(&e->pc, &e->ps, &why, err, sizeof err), 0);
    assert_null(why);
    sandbox_set_runner(privsep_runner(e->ps));
}

int main(void)
{
    if (geteuid() != 0) {
        printf("test_privsep: skipped, needs root (the helper hands work directories over)\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(valid_run, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_requests_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(fuzz, setup, teardown),
        cmocka_unit_test_setup_teardown(ends_with_channel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
