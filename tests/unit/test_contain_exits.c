/* test_contain_exits.c -- plugins that try to end the process, or start
 * threads (issue 10, fault/exits.c and the loader's thread-import check).
 *
 * Containment is turned on once, in main(), as a4psd does.  Each exit test
 * runs a plugin (exiter 2.0.0) whose method calls exit(3), quick_exit(3),
 * _exit(3), _Exit(3) or syscall(SYS_exit_group, 3): the call must return
 * A4PS_EFAULT naming the exit, the version must be quarantined with the proto
 * rolled back to 1.0.0, and proto "g" must still answer -- in a process that
 * is still running.  That the process's own exit still works is proved by
 * this program exiting 0 at the end (ctest checks it), and for forked and
 * exec'd children by the children test. */
#include "plugin_fixture.h"

#include <sys/syscall.h>
#include <sys/wait.h>

static struct sigaction contained_sigsys;

/* cmocka installs its own SIGSYS handler around each test: put ours back. */
static fx *get(void **state)
{
    sigaction(SIGSYS, &contained_sigsys, NULL);
    return fx_get(state);
}

static void assert_exit_contained(const char *method, const char *says)
{
    fx *f = fx_open(NULL);
    fx_load_ok(f, FX_PLUGIN("good.so"), NULL);
    fx_proto_ok(f, "g", "good", NULL);
    f->has_g = true;
    fx_load_ok(f, FX_PLUGIN("exiter-1.so"), NULL);
    fx_load_ok(f, FX_PLUGIN("exiter.so"), NULL);
    fx_proto_ok(f, "x", "exiter", "1.0.0");
    fx_swap_ok(f, "x", "2.0.0");

    kernel_reply r = {0};
    int rc = kernel_send(f->k, "x", method, "", 0, &r);
    const char *text = r.len ? r.data : "";
    if (rc != A4PS_EFAULT)
        fail_msg("x.%s returned %d (%s), expected A4PS_EFAULT", method, rc, text);
    fx_assert_contains("the reply", text, says);
    fx_assert_contains("the reply", text, "(code 3,");
    fx_assert_contains("the reply", text, "quarantined");
    kernel_reply_free(&r);

    int q = 0;
    uint64_t failed = 0;
    char reason[512] = "";
    assert_int_equal(kernel_version_health(f->k, "exiter", "2.0.0", &q, &failed, reason,
                                           sizeof reason), 0);
    assert_true(q);
    fx_assert_contains("the quarantine reason", reason, says);
    fx_expect(f, "x", "ok", "", A4PS_OK, "ok 1.0.0");    /* rolled back */
    fx_assert_g_serves(f);
    fx_close(f);
}

static void exit_is_a_fault(void **state)
{
    get(state);
    /* Twice: the handler used up by the first exit must be there again. */
    assert_exit_contained("exit", "exit() from plugin code");
    assert_exit_contained("exit", "exit() from plugin code");
}

static void quick_exit_is_a_fault(void **state)
{
    get(state);
    assert_exit_contained("quick_exit", "quick_exit() from plugin code");
    assert_exit_contained("quick_exit", "quick_exit() from plugin code");
}

static void underscore_exit_is_a_fault(void **state)
{
    get(state);
    assert_exit_contained("_exit", "exit_group (_exit, _Exit or the raw syscall)");
    assert_exit_contained("_Exit", "exit_group (_exit, _Exit or the raw syscall)");
}

static void raw_exit_group_is_a_fault(void **state)
{
    get(state);
    assert_exit_contained("exit_group", "exit_group (_exit, _Exit or the raw syscall)");
}

/* A plugin's forked child inherits the caller's call depth; its exit() must
 * still end it, not send it back into a copy of the caller. */
static void plugin_child_exits_as_it_says(void **state)
{
    fx *f = get(state);
    fx_load_ok(f, FX_PLUGIN("exiter.so"), NULL);
    fx_proto_ok(f, "x", "exiter", NULL);
    fx_expect(f, "x", "fork_exit", "", A4PS_OK, "child exited 9");
    fx_expect(f, "x", "ok", "", A4PS_OK, "ok 2.0.0");
}

/* An init hook (on its own thread) that calls exit(3): the load is refused,
 * nothing else is disturbed. */
static void exit_in_init_refuses_the_load(void **state)
{
    fx *f = get(state);
    char err[KERNEL_ERRLEN] = "";
    kernel_version_info info;
    int rc = kernel_load(f->k, FX_PLUGIN("hostile_exit_init.so"), &info, err, sizeof err);
    assert_int_equal(rc, A4PS_EFAULT);
    fx_assert_contains("the refusal", err, "init: crashed with exit() from plugin code");
    fx_assert_g_serves(f);
}

static int child_status(pid_t pid)
{
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st))
        fail_msg("child %d did not exit (signal %d)", (int)pid,
                 WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

/* Children inherit the filter and the handlers: their exits stay theirs. */
static void children_exit_as_they_say(void **state)
{
    get(state);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0)
        _exit(5);
    assert_int_equal(child_status(p), 5);
    p = fork();
    assert_true(p >= 0);
    if (p == 0)
        syscall(SYS_exit_group, 6);
    assert_int_equal(child_status(p), 6);
    p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        execl("/bin/sh", "sh", "-c", "exit 4", (char *)NULL);
        _exit(127);
    }
    assert_int_equal(child_status(p), 4);
}

/* ---- Threads ---- */

static int allow_threader(void *arg, const char *plugin)
{
    (void)arg;
    return strcmp(plugin, "threader") == 0;
}

static int allow_nobody_else(void *arg, const char *plugin)
{
    (void)arg;
    return strcmp(plugin, "someone-else") == 0;
}

static void tune_no_list(kernel_config *c)
{
    c->check_threads = 1;
}

static void tune_other(kernel_config *c)
{
    c->check_threads = 1;
    c->may_thread = allow_nobody_else;
}

static void tune_threader(kernel_config *c)
{
    c->check_threads = 1;
    c->may_thread = allow_threader;
}

static void assert_refused(void (*tune)(kernel_config *), const char *says)
{
    fx *f = fx_open(tune);
    char err[KERNEL_ERRLEN] = "";
    kernel_version_info info;
    int rc = kernel_load(f->k, FX_PLUGIN("threader.so"), &info, err, sizeof err);
    assert_int_equal(rc, A4PS_EPERM);
    fx_assert_contains("the refusal", err, "imports pthread_create");
    fx_assert_contains("the refusal", err, "limits.allow_threads");
    fx_assert_contains("the refusal", err, says);
    assert_int_equal(fx_events(f, "plugin_refused"), 1);
    assert_false(kernel_proto_exists(f->k, "t"));
    fx_close(f);
}

static void thread_import_refused_unless_permitted(void **state)
{
    get(state);
    assert_refused(tune_no_list, "no plugin is permitted");
    assert_refused(tune_other, "plugin threader imports");
}

static bool mapped(const char *needle)
{
    FILE *m = fopen("/proc/self/maps", "r");
    char line[1024];
    bool found = false;
    while (m && !found && fgets(line, sizeof line, m))
        found = strstr(line, needle) && strstr(line, "(deleted)");
    if (m)
        fclose(m);
    return found;
}

/* Permitted: it loads, starts its thread, faults, is quarantined and
 * reclaimed -- and stays mapped, so its thread keeps running. */
static void permitted_thread_plugin_is_pinned(void **state)
{
    get(state);
    fx *f = fx_open(tune_threader);
    fx_load_ok(f, FX_PLUGIN("good.so"), NULL);
    fx_proto_ok(f, "g", "good", NULL);
    f->has_g = true;
    kernel_version_info info;
    fx_load_ok(f, FX_PLUGIN("threader.so"), &info);
    fx_proto_ok(f, "t", "threader", NULL);
    fx_expect(f, "t", "spawn", "", A4PS_OK, "spawned");
    char *st = kernel_status(f->k);
    fx_assert_contains("status", st, "\"pinned\":[{\"name\":\"threader\"");
    fx_assert_contains("status", st, "\"imports\":\"pthread_create\",\"loaded\":true");
    free(st);

    kernel_reply r = {0};
    assert_int_equal(kernel_send(f->k, "t", "crash", "", 0, &r), A4PS_EFAULT);
    kernel_reply_free(&r);
    assert_int_equal(kernel_proto_destroy(f->k, "t", NULL, 0), 0);
    assert_int_equal(kernel_reclaim_wait(f->k, 10000), 0);
    st = kernel_status(f->k);
    fx_assert_contains("status", st, "\"imports\":\"pthread_create\",\"loaded\":false");
    free(st);

    /* Its generation file is gone, its mapping is not. */
    char gen[64];
    snprintf(gen, sizeof gen, "/%llu-%.16s.so", (unsigned long long)info.generation,
             info.sha256);
    assert_true(mapped(gen));
    fx_assert_g_serves(f);
    fx_close(f);
    assert_true(mapped(gen));    /* not even the kernel's end unmaps it */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    char what[512];
    int rc = kernel_contain_exits(what, sizeof what);
    if (rc != 0) {
        fprintf(stderr, "kernel_contain_exits: %s\n", what);
        return 1;
    }
    sigaction(SIGSYS, NULL, &contained_sigsys);
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        T(exit_is_a_fault),
        T(quick_exit_is_a_fault),
        T(underscore_exit_is_a_fault),
        T(raw_exit_group_is_a_fault),
        T(exit_in_init_refuses_the_load),
        T(children_exit_as_they_say),
        T(plugin_child_exits_as_it_says),
        T(thread_import_refused_unless_permitted),
        T(permitted_thread_plugin_is_pinned),
    };
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* cmocka puts back handlers with signal(), which loses SA_SIGINFO: ours
     * again, so that this exit goes through it (exit 0 is part of the test). */
    sigaction(SIGSYS, &contained_sigsys, NULL);
    return rc;
}
