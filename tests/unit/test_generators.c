/* test_generators.c -- the forge's three code generators (plugins/generators:
 * inbox, command, openai), each loaded from the build's plugins directory
 * into a real kernel and driven with kernel_send, its settings set with
 * kernel_state_set as the daemon's config would.  The openai generator talks
 * HTTP to tests/llm/llm_double.py, a test double of an LLM endpoint that
 * replays a script and logs each request; the command generator runs small
 * /bin/sh scripts the tests write.  Nothing of ours is mocked: the host's
 * http and run entries (ABI rule R12) are carried out in this process by the
 * outside helpers' own code (kernel/daemon/outside.c, outside_*_serve), under
 * a policy each test grants -- the origin of its double, the scripts it
 * wrote -- so what a grant leaves out is refused here as in a4psd. */
#include "plugin_fixture.h"

#include "daemon/outside.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define GENERATOR(file) A4PS_TEST_PLUGIN_DIR "/../plugins/" file
#define LLM_DOUBLE A4PS_SOURCE_DIR "/tests/llm/llm_double.py"
#define ABI_HEADER A4PS_SOURCE_DIR "/abi/a4ps.h"
#define KEY_ENV "A4PS_TEST_LLM_KEY"
#define KEY_VALUE "sk-double-5f0c1e77"

/* What the tests grant: openai may reach the origins and use KEY_ENV,
 * command may run the programs (both lists grow as tests grant). */
static outside_policy policy;

static void grant(char ***list, int *n, const char *v)
{
    char **l = realloc(*list, ((size_t)*n + 1) * sizeof *l);
    assert_non_null(l);
    *list = l;
    l[(*n)++] = strdup(v);
}

static void policy_reset(void)
{
    outside_policy_free(&policy);
    policy.http = calloc(1, sizeof *policy.http);
    policy.run = calloc(1, sizeof *policy.run);
    assert_non_null(policy.http);
    assert_non_null(policy.run);
    policy.nhttp = policy.nrun = 1;
    outside_http_rule *h = &policy.http[0];
    h->plugin = strdup("openai");
    h->timeout_ms = 120000;
    h->max_response = 4u << 20;
    h->max_request = 8u << 20;
    grant(&h->credentials, &h->ncredentials, KEY_ENV);
    outside_run_rule *r = &policy.run[0];
    r->plugin = strdup("command");
    r->timeout_ms = 60000;
    r->max_output = 1u << 20;
}

static void grant_origin(const char *url)
{
    char o[256], why[300];
    if (outside_origin_of(url, 0, o, sizeof o, why, sizeof why) != 0)
        fail_msg("%s", why);
    grant(&policy.http[0].origins, &policy.http[0].norigins, o);
}

static void grant_program(const char *path)
{
    grant(&policy.run[0].programs, &policy.run[0].nprograms, path);
}

static void tune_outside(kernel_config *cfg)
{
    cfg->http = outside_http_local;
    cfg->http_arg = &policy;
    cfg->run = outside_run_local;
    cfg->run_arg = &policy;
}

/* One test's world: the kernel fixture and, for openai, the double. */
typedef struct gx {
    fx *f;
    pid_t dbl;
    int port;
    char log[PATH_MAX];
} gx;

static int teardown(void **state)
{
    gx *g = *state;
    if (!g)
        return 0;
    if (g->dbl > 0) {
        kill(g->dbl, SIGTERM);
        int st;
        for (int i = 0; i < 200 && waitpid(g->dbl, &st, WNOHANG) == 0; i++)
            usleep(10000);
        if (kill(g->dbl, 0) == 0) {
            kill(g->dbl, SIGKILL);
            waitpid(g->dbl, &st, 0);
        }
    }
    unsetenv(KEY_ENV);
    fx_close(g->f);
    policy_reset();
    free(g);
    *state = NULL;
    return 0;
}

/* A kernel with generator `plugin` loaded (self_test run) and proto "gen"
 * on it. */
static gx *open_gen(void **state, const char *plugin)
{
    gx *g = calloc(1, sizeof *g);
    assert_non_null(g);
    *state = g;
    policy_reset();
    g->f = fx_open(tune_outside);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s.so", GENERATOR(""), plugin);
    kernel_version_info info;
    fx_load_ok(g->f, path, &info);
    assert_string_equal(info.name, plugin);
    assert_string_equal(info.version, strcmp(plugin, "inbox") ? "1.1.0" : "1.0.0");
    fx_proto_ok(g->f, "gen", plugin, NULL);
    return g;
}

static void set(gx *g, const char *key, const char *value)
{
    assert_int_equal(kernel_state_set(g->f->k, "gen", key, value, strlen(value)), 0);
}

/* Send and return the reply text (malloc'd); the status in *rc. */
static char *send_msg(gx *g, const char *sel, const char *msg, size_t len, int *rc)
{
    kernel_reply r = {0};
    *rc = kernel_send(g->f->k, "gen", sel, msg, len, &r);
    char *t = malloc(r.len + 1);
    assert_non_null(t);
    memcpy(t, r.len ? r.data : "", r.len);
    t[r.len] = '\0';
    kernel_reply_free(&r);
    return t;
}

/* Send and require status want; returns the reply (malloc'd). */
static char *expect_rc(gx *g, const char *sel, const char *msg, int want)
{
    int rc;
    char *t = send_msg(g, sel, msg, strlen(msg), &rc);
    if (getenv("A4PS_TEST_VERBOSE"))      /* to read the replies themselves */
        print_message("    %s -> %d: %.300s\n", sel, rc, t);
    if (rc != want)
        fail_msg("%s returned %d, expected %d; reply: %.600s", sel, rc, want, t);
    return t;
}

static char *state_of(gx *g, const char *key)
{
    void *v = NULL;
    size_t n = 0;
    if (kernel_state_get(g->f->k, "gen", key, &v, &n) != 0)
        return NULL;
    char *s = malloc(n + 1);
    memcpy(s, v, n);
    s[n] = '\0';
    free(v);
    return s;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        fail_msg("cannot create %s: %s", path, strerror(errno));
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t r = fread(buf + n, 1, 4096, fp);
        n += r;
        if (r == 0)
            break;
    }
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

/* The forge's task message. */
static char *task_json(const char *id, const char *dir, int iteration, const char *prev,
                       const char *diag, const char *failures)
{
    json_t *t = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:[{s:s, s:s, s:s}], s:s?, s:s?, "
                          "s:s?, s:s, s:s}",
                          "task", id, "iteration", iteration, "target", "COUNTER", "plugin",
                          "counter", "goal", "add the selector double", "selector", "double",
                          "tests", "selector", "double", "input", "2", "expect", "4",
                          "previous_source", prev, "diagnostics", diag, "failures", failures,
                          "dir", dir ? dir : "/nonexistent-a4ps", "abi_header", ABI_HEADER);
    assert_non_null(t);
    char *s = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    assert_non_null(s);
    return s;
}

static double since_ms(const struct timespec *t0)
{
    return fx_ms_since(t0);
}

/* Empty, short text and 4 KiB of random bytes to every selector: each
 * refused with A4PS_EINVAL, quickly. */
static void garbage_is_refused(gx *g)
{
    char rnd[4096];
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof rnd; i++) {
        s = s * 1103515245u + 12345u;
        rnd[i] = (char)(s >> 16);
    }
    const struct {
        const char *m;
        size_t n;
    } msgs[] = {{"", 0}, {"hello", 5}, {"{", 1}, {"[1,2]", 5}, {"{\"task\":\"../x\"}", 15},
                {rnd, sizeof rnd}};
    static const char *const sels[] = {"generate", "feedback"};
    for (size_t i = 0; i < sizeof sels / sizeof *sels; i++) {
        for (size_t j = 0; j < sizeof msgs / sizeof *msgs; j++) {
            struct timespec t0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int rc;
            char *t = send_msg(g, sels[i], msgs[j].m, msgs[j].n, &rc);
            if (rc != A4PS_EINVAL)
                fail_msg("%s with garbage #%zu returned %d (%s), expected EINVAL", sels[i], j,
                         rc, t);
            if (since_ms(&t0) > 500)
                fail_msg("%s with garbage #%zu took %.0f ms", sels[i], j, since_ms(&t0));
            free(t);
        }
    }
}

/* ======================================================================
 * inbox
 * ====================================================================== */

static void inbox_takes_files_in_name_order(void **state)
{
    gx *g = open_gen(state, "inbox");
    char dir[PATH_MAX], p[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/task7", g->f->dir);
    char *task = task_json("7", dir, 1, NULL, NULL, NULL);

    /* The directory does not exist yet: it is made, and nothing waits. */
    char *t = expect_rc(g, "generate", task, A4PS_ENOENT);
    fx_assert_contains("the waiting reply", t, dir);
    free(t);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    snprintf(p, sizeof p, "%s/b.c", dir);
    write_file(p, "/* b */\n", 0644);
    snprintf(p, sizeof p, "%s/a.c", dir);
    write_file(p, "/* a */\n", 0644);
    /* Not candidates: a dot-file, other suffixes, a directory, a symlink. */
    snprintf(p, sizeof p, "%s/.0.c", dir);
    write_file(p, "/* hidden */\n", 0644);
    snprintf(p, sizeof p, "%s/0.txt", dir);
    write_file(p, "notes\n", 0644);
    snprintf(p, sizeof p, "%s/0.c.verdict", dir);
    write_file(p, "passed\n", 0644);
    snprintf(p, sizeof p, "%s/0dir.c", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/0link.c", dir);
    assert_int_equal(symlink(ABI_HEADER, p), 0);

    t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "/* a */\n");
    free(t);
    t = state_of(g, "inbox.7");
    assert_non_null(t);
    assert_string_equal(t, "a.c");
    free(t);
    t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "/* b */\n");
    free(t);
    t = expect_rc(g, "generate", task, A4PS_ENOENT);
    fx_assert_contains("the waiting reply", t, "after b.c");
    free(t);

    /* A file that arrives later is taken; one sorting before the last
     * taken never is. */
    snprintf(p, sizeof p, "%s/c.c", dir);
    write_file(p, "/* c */\n", 0644);
    snprintf(p, sizeof p, "%s/a0.c", dir);
    write_file(p, "/* too late */\n", 0644);
    t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "/* c */\n");
    free(t);
    t = expect_rc(g, "generate", task, A4PS_ENOENT);
    free(t);

    /* Another task keeps its own place in its own directory. */
    char dir8[PATH_MAX];
    snprintf(dir8, sizeof dir8, "%s/task8", g->f->dir);
    assert_int_equal(mkdir(dir8, 0755), 0);
    snprintf(p, sizeof p, "%s/a.c", dir8);
    write_file(p, "/* 8a */\n", 0644);
    char *task8 = task_json("8", dir8, 1, NULL, NULL, NULL);
    t = expect_rc(g, "generate", task8, A4PS_OK);
    assert_string_equal(t, "/* 8a */\n");
    free(t);
    free(task8);
    free(task);
}

static void inbox_feedback_writes_next_to_the_candidate(void **state)
{
    gx *g = open_gen(state, "inbox");
    char dir[PATH_MAX], p[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/t", g->f->dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/a.c", dir);
    write_file(p, "int a;\n", 0644);
    snprintf(p, sizeof p, "%s/b.c", dir);
    write_file(p, "int b;\n", 0644);

    /* Feedback before anything was taken: nothing to do. */
    static const char early[] = "{\"task\":\"7\",\"iteration\":1,\"candidate\":null,"
                                "\"verdict\":\"compile_failed\"}";
    char *t = expect_rc(g, "feedback", early, A4PS_OK);
    assert_string_equal(t, "ok");
    free(t);

    char *task = task_json("7", dir, 1, NULL, NULL, NULL);
    t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "int a;\n");
    free(t);

    static const char fb[] =
        "{\"task\":\"7\",\"iteration\":1,\"candidate\":null,\"verdict\":\"test_failed\","
        "\"diagnostics\":\"a.c:1:5: warning: unused variable 'a'\\n\","
        "\"failures\":\"double: input 2: expected 4, got 3\\nsecond failure\","
        "\"report\":{\"passed\":1,\"failed\":1,\"cases\":[\"double\"]}}";
    t = expect_rc(g, "feedback", fb, A4PS_OK);
    free(t);
    snprintf(p, sizeof p, "%s/a.c.verdict", dir);
    t = read_file(p);
    assert_non_null(t);
    assert_string_equal(t, "test_failed: double: input 2: expected 4, got 3\n");
    free(t);
    snprintf(p, sizeof p, "%s/a.c.diagnostics", dir);
    t = read_file(p);
    assert_non_null(t);
    assert_string_equal(t, "a.c:1:5: warning: unused variable 'a'\n");
    free(t);
    snprintf(p, sizeof p, "%s/a.c.report.json", dir);
    json_error_t jerr;
    json_t *rep = json_load_file(p, 0, &jerr);
    if (!rep)
        fail_msg("%s is not JSON: %s", p, jerr.text);
    assert_int_equal(json_integer_value(json_object_get(rep, "failed")), 1);
    json_decref(rep);

    /* A candidate named explicitly; no diagnostics, no report. */
    t = expect_rc(g, "generate", task, A4PS_OK);
    free(t);
    static const char fb2[] = "{\"task\":\"7\",\"iteration\":2,\"candidate\":\"b.c\","
                              "\"verdict\":\"adopted\",\"diagnostics\":null,\"failures\":null,"
                              "\"report\":null}";
    t = expect_rc(g, "feedback", fb2, A4PS_OK);
    free(t);
    snprintf(p, sizeof p, "%s/b.c.verdict", dir);
    t = read_file(p);
    assert_non_null(t);
    assert_string_equal(t, "adopted\n");
    free(t);
    snprintf(p, sizeof p, "%s/b.c.report.json", dir);
    assert_int_equal(access(p, F_OK), -1);

    /* The verdict files are never taken as candidates. */
    t = expect_rc(g, "generate", task, A4PS_ENOENT);
    free(t);

    /* A candidate name that would leave the directory is refused. */
    static const char bad[] = "{\"task\":\"7\",\"candidate\":\"../x.c\",\"verdict\":\"passed\"}";
    t = expect_rc(g, "feedback", bad, A4PS_EINVAL);
    free(t);
    free(task);
}

static void inbox_refuses_bad_tasks_and_big_files(void **state)
{
    gx *g = open_gen(state, "inbox");
    garbage_is_refused(g);
    char dir[PATH_MAX], p[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/t", g->f->dir);
    assert_int_equal(mkdir(dir, 0755), 0);

    static const char *const bad_ids[] = {"../etc", "a/b", "", "a.b", "x y",
                                          "123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        char *task = task_json(bad_ids[i], dir, 1, NULL, NULL, NULL);
        char *t = expect_rc(g, "generate", task, A4PS_EINVAL);
        fx_assert_contains("the refusal", t, "\"task\"");
        free(t);
        free(task);
    }
    char *t = expect_rc(g, "generate", "{\"task\":\"7\",\"dir\":\"relative/dir\"}",
                        A4PS_EINVAL);
    fx_assert_contains("the refusal", t, "absolute");
    free(t);

    /* Over 1 MiB: refused naming the file, and passed over. */
    snprintf(p, sizeof p, "%s/a.c", dir);
    char *big = malloc(1024 * 1024 + 2);
    memset(big, 'x', 1024 * 1024 + 1);
    big[1024 * 1024 + 1] = '\0';
    write_file(p, big, 0644);
    free(big);
    snprintf(p, sizeof p, "%s/b.c", dir);
    write_file(p, "int b;\n", 0644);
    char *task = task_json("7", dir, 1, NULL, NULL, NULL);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    snprintf(p, sizeof p, "%s/a.c", dir);
    fx_assert_contains("the refusal", t, p);
    fx_assert_contains("the refusal", t, "1 MiB");
    free(t);
    t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "int b;\n");
    free(t);
    free(task);

    /* A task directory that cannot be made is an error, not a wait. */
    task = task_json("7", "/nonexistent-a4ps/deeper", 1, NULL, NULL, NULL);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "/nonexistent-a4ps/deeper");
    free(t);
    free(task);
}

/* ======================================================================
 * command
 * ====================================================================== */

/* Write an executable /bin/sh script into the test dir, granted to the
 * command plugin; its path in out. */
static void script(gx *g, const char *name, const char *body, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", g->f->dir, name);
    char *text;
    assert_true(asprintf(&text, "#!/bin/sh\n%s", body) > 0);
    write_file(out, text, 0755);
    free(text);
    grant_program(out);
}

static void command_returns_the_programs_stdout(void **state)
{
    gx *g = open_gen(state, "command");
    garbage_is_refused(g);
    char path[PATH_MAX];
    script(g, "gen.sh",
           "goal=$(sed -n 's/.*\"goal\": *\"\\([^\"]*\\)\".*/\\1/p')\n"
           "printf '/* goal: %s */\\n' \"$goal\"\n"
           "printf '/* args: %s */\\n' \"$*\"\n"
           "if [ -e /proc/$$/fd/77 ]; then echo '/* fd 77 leaked */'; fi\n",
           path, sizeof path);
    set(g, "command", path);
    set(g, "args", " --model  small ");

    /* An unrelated descriptor of the daemon, not close-on-exec. */
    int leak = open("/dev/null", O_RDONLY);
    assert_true(leak >= 0);
    assert_int_equal(dup2(leak, 77), 77);
    close(leak);

    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    char *t = expect_rc(g, "generate", task, A4PS_OK);
    close(77);
    assert_string_equal(t, "/* goal: add the selector double */\n/* args: --model small */\n");
    free(t);

    /* No candidate yet (exit 75): the forge asks again. */
    script(g, "later.sh", "echo 'waiting for the model to load' >&2\nexit 75\n", path,
           sizeof path);
    set(g, "command", path);
    t = expect_rc(g, "generate", task, A4PS_ENOENT);
    fx_assert_contains("the reply", t, "waiting for the model to load");
    free(t);

    /* Exit 0 with nothing written is not a candidate. */
    script(g, "empty.sh", "exit 0\n", path, sizeof path);
    set(g, "command", path);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "nothing on stdout");
    free(t);
    free(task);
}

static void command_failure_names_exit_and_stderr(void **state)
{
    gx *g = open_gen(state, "command");
    char path[PATH_MAX], want[PATH_MAX + 64];
    script(g, "fail.sh",
           "cat >/dev/null\necho 'model not found: tiny' >&2\necho 'more' >&2\nexit 3\n", path,
           sizeof path);
    set(g, "command", path);
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    snprintf(want, sizeof want, "command %s exited 3: model not found: tiny", path);
    assert_string_equal(t, want);
    free(t);

    /* More than 1 MiB on stdout. */
    script(g, "flood.sh", "head -c 1100000 /dev/zero | tr '\\000' x\n", path, sizeof path);
    set(g, "command", path);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "more than 1 MiB");
    free(t);

    /* Settings that cannot work. */
    assert_int_equal(kernel_state_set(g->f->k, "gen", "command", "", 0), 0);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "\"command\" is not set");
    free(t);
    set(g, "command", "gen.sh");
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "absolute");
    free(t);
    grant_program("/nonexistent-a4ps/gen");
    set(g, "command", "/nonexistent-a4ps/gen");
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "/nonexistent-a4ps/gen cannot be run");
    free(t);
    set(g, "command", path);
    set(g, "timeout_ms", "soon");
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "timeout_ms");
    free(t);

    /* A garbage message never runs the program. */
    char marker[PATH_MAX + 16];
    snprintf(marker, sizeof marker, "%s/ran", g->f->dir);
    char body[PATH_MAX + 64];
    snprintf(body, sizeof body, "touch '%s'\necho x\n", marker);
    script(g, "touch.sh", body, path, sizeof path);
    set(g, "command", path);
    set(g, "timeout_ms", "5000");
    t = expect_rc(g, "generate", "not json", A4PS_EINVAL);
    free(t);
    assert_int_equal(access(marker, F_OK), -1);
    free(task);
}

static void command_is_killed_at_its_timeout(void **state)
{
    gx *g = open_gen(state, "command");
    char path[PATH_MAX], pidfile[PATH_MAX + 16], body[PATH_MAX + 64];
    snprintf(pidfile, sizeof pidfile, "%s/child.pid", g->f->dir);
    /* The program leaves a child of its own behind, holding stdout. */
    snprintf(body, sizeof body, "sleep 30 &\necho $! > '%s'\nsleep 30\n", pidfile);
    script(g, "slow.sh", body, path, sizeof path);
    set(g, "command", path);
    set(g, "timeout_ms", "300");
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    double ms = since_ms(&t0);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "command %s timed out after 300 ms", path);
    fx_assert_contains("the error", t, want);
    if (ms < 250 || ms > 2500)
        fail_msg("the timeout of 300 ms took %.0f ms", ms);
    free(t);
    free(task);

    /* Its child went with it (gone, or a zombie waiting for init). */
    char *pid = read_file(pidfile);
    assert_non_null(pid);
    int cpid = atoi(pid);
    free(pid);
    assert_true(cpid > 0);
    char stat_path[64];
    snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", cpid);
    bool dead = false;
    for (int i = 0; i < 100 && !dead; i++) {
        char *st = read_file(stat_path);
        const char *rp = st ? strrchr(st, ')') : NULL;
        dead = !st || (rp && (rp[2] == 'Z' || rp[2] == 'X'));
        free(st);
        if (!dead)
            usleep(10000);
    }
    if (!dead)
        fail_msg("the program's child %d survived the timeout", cpid);
}

static void command_feedback_only_when_asked(void **state)
{
    gx *g = open_gen(state, "command");
    char path[PATH_MAX], out[PATH_MAX + 16], body[2 * PATH_MAX];
    snprintf(out, sizeof out, "%s/fb.json", g->f->dir);
    snprintf(body, sizeof body,
             "if [ \"$1\" = --feedback ]; then shift; cat > '%s'; echo \"$*\" >> '%s'; exit 0; "
             "fi\necho 'int x;'\n",
             out, out);
    script(g, "fb.sh", body, path, sizeof path);
    set(g, "command", path);
    set(g, "args", "--model m");
    static const char fb[] = "{\"task\":\"7\",\"iteration\":1,\"candidate\":null,"
                             "\"verdict\":\"passed\",\"report\":{}}";
    char *t = expect_rc(g, "feedback", fb, A4PS_OK);
    assert_string_equal(t, "ok");
    free(t);
    assert_int_equal(access(out, F_OK), -1);

    set(g, "feedback", "true");
    t = expect_rc(g, "feedback", fb, A4PS_OK);
    free(t);
    t = read_file(out);
    assert_non_null(t);
    char want[sizeof fb + 32];
    snprintf(want, sizeof want, "%s--model m\n", fb);
    assert_string_equal(t, want);
    free(t);
}

/* A program the grant leaves out never runs: not one outside the list,
 * not a listed one named by another path (a symlink, "..", relative). */
static void command_runs_only_granted_programs(void **state)
{
    gx *g = open_gen(state, "command");
    char path[PATH_MAX], marker[PATH_MAX + 16], body[PATH_MAX + 64];
    snprintf(marker, sizeof marker, "%s/ran", g->f->dir);
    snprintf(body, sizeof body, "touch '%s'\necho 'int x;'\n", marker);
    script(g, "granted.sh", body, path, sizeof path);
    char link[PATH_MAX + 16], dotted[PATH_MAX + 64];
    snprintf(link, sizeof link, "%s/link.sh", g->f->dir);
    assert_int_equal(symlink(path, link), 0);
    snprintf(dotted, sizeof dotted, "%s/../%s/granted.sh", g->f->dir, strrchr(g->f->dir, '/') + 1);
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    const char *refused[] = {"/bin/sh", link, dotted};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        set(g, "command", refused[i]);
        char *t = expect_rc(g, "generate", task, A4PS_ERROR);
        fx_assert_contains("the refusal", t, "plugin command may not run");
        fx_assert_contains("the refusal", t, "rule R12");
        fx_assert_contains("the refusal", t, refused[i]);
        free(t);
        assert_int_equal(access(marker, F_OK), -1);
    }
    /* The granted path itself runs, with a clean environment. */
    setenv("A4PS_TEST_SECRET", "do-not-pass", 1);
    snprintf(body, sizeof body, "touch '%s'\nenv | sort | tr '\\n' ' '\necho\n", marker);
    script(g, "granted.sh", body, path, sizeof path);
    set(g, "command", path);
    char *t = expect_rc(g, "generate", task, A4PS_OK);
    unsetenv("A4PS_TEST_SECRET");
    fx_assert_lacks("the program's environment", t, "A4PS_TEST_SECRET");
    fx_assert_contains("the program's environment", t, "PATH=/usr/local/bin:/usr/bin:/bin");
    free(t);
    assert_int_equal(access(marker, F_OK), 0);
    free(task);
}

/* ======================================================================
 * openai, against the LLM test double
 * ====================================================================== */

/* Start llm_double.py with script (JSON text); wait for its port. */
static void start_double(gx *g, const char *script_json)
{
    char spath[PATH_MAX], portfile[PATH_MAX];
    snprintf(spath, sizeof spath, "%s/script.json", g->f->dir);
    snprintf(portfile, sizeof portfile, "%s/port", g->f->dir);
    snprintf(g->log, sizeof g->log, "%s/requests.jsonl", g->f->dir);
    write_file(spath, script_json, 0644);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/usr/bin/env", "env", "python3", LLM_DOUBLE, "--script", spath, "--port-file",
              portfile, "--log", g->log, (char *)NULL);
        _exit(127);
    }
    g->dbl = pid;
    for (int i = 0; i < 1000; i++) {
        char *p = read_file(portfile);
        if (p) {
            g->port = atoi(p);
            free(p);
            if (g->port > 0)
                return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            g->dbl = 0;
            fail_msg("llm_double.py exited (status %d) before listening", st);
        }
        usleep(10000);
    }
    fail_msg("llm_double.py did not write its port file %s within 10 s", portfile);
}

/* A gen proto on openai pointed at the double. */
static gx *open_openai(void **state, const char *script_json)
{
    gx *g = open_gen(state, "openai");
    start_double(g, script_json);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g->port);
    grant_origin(url);
    set(g, "base_url", url);
    set(g, "model", "test-model");
    set(g, "timeout_ms", "5000");
    return g;
}

/* The requests the double logged, as a JSON array. */
static json_t *requests(gx *g)
{
    json_t *all = json_array();
    char *text = read_file(g->log);
    if (!text)
        return all;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        if (!j)
            fail_msg("a line of the double's log is not JSON: %s", jerr.text);
        json_array_append_new(all, j);
    }
    free(text);
    return all;
}

static const char *header(json_t *req, const char *name)
{
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(req, "headers"), k, v)
        if (strcasecmp(k, name) == 0)
            return json_string_value(v);
    return NULL;
}

static const char *message_content(json_t *req, size_t i)
{
    json_t *m = json_array_get(json_object_get(json_object_get(req, "body"), "messages"), i);
    return json_string_value(json_object_get(m, "content"));
}

static void openai_extracts_the_fenced_code(void **state)
{
    gx *g = open_openai(state, "[{\"content\": \"Here is the plugin:\\n```c\\n#include "
                               "\\\"a4ps.h\\\"\\nint x;\\n```\\nIt adds double.\"}]");
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    char *t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "#include \"a4ps.h\"\nint x;\n");
    free(t);
    free(task);

    json_t *reqs = requests(g);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    assert_string_equal(json_string_value(json_object_get(r, "path")), "/v1/chat/completions");
    json_t *body = json_object_get(r, "body");
    assert_string_equal(json_string_value(json_object_get(body, "model")), "test-model");
    assert_string_equal(header(r, "Content-Type"), "application/json");
    assert_null(header(r, "Authorization"));
    const char *sys = message_content(r, 0), *user = message_content(r, 1);
    assert_non_null(sys);
    assert_non_null(user);
    /* The text of abi/a4ps.h rides along with the rules. */
    fx_assert_contains("the system message", sys, "THE RULES (each is enforced");
    fx_assert_contains("the system message", sys, "a4ps_plugin_entry");
    fx_assert_contains("the user message", user, "add the selector double");
    fx_assert_contains("the user message", user, "counter");
    fx_assert_contains("the user message", user, "COUNTER");
    fx_assert_contains("the user message", user, "\"expect\":\"4\"");
    fx_assert_lacks("the user message", user, "previous source");
    json_decref(reqs);

    /* feedback has nothing to do here. */
    t = expect_rc(g, "feedback", "{\"task\":\"7\",\"verdict\":\"passed\"}", A4PS_OK);
    assert_string_equal(t, "ok");
    free(t);
}

static void openai_retries_503_and_429(void **state)
{
    gx *g = open_openai(state,
                        "[{\"status\": 503, \"body\": \"overloaded\"},"
                        " {\"status\": 429, \"body\": \"slow down\","
                        "  \"headers\": {\"Retry-After\": \"0\"}},"
                        " {\"content\": \"```c\\nint ok;\\n```\"}]");
    /* base_url may already end with /v1. */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/", g->port);
    set(g, "base_url", url);
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *t = expect_rc(g, "generate", task, A4PS_OK);
    double ms = since_ms(&t0);
    assert_string_equal(t, "int ok;\n");
    free(t);
    free(task);
    /* 200 ms of backoff after the 503, none after "Retry-After: 0". */
    if (ms < 190 || ms > 3000)
        fail_msg("three attempts took %.0f ms; expected about 200", ms);
    json_t *reqs = requests(g);
    assert_int_equal(json_array_size(reqs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 2), "path")),
                        "/v1/chat/completions");
    json_decref(reqs);
}

/* Does any value or key of any proto's state contain needle? */
static bool state_holds(gx *g, const char *needle)
{
    kernel_snapshot *snap = NULL;
    char err[KERNEL_ERRLEN];
    if (kernel_snapshot_take(g->f->k, 1, 2000, &snap, err, sizeof err) != 0)
        fail_msg("kernel_snapshot_take: %s", err);
    bool found = false;
    for (size_t i = 0; i < snap->nprotos; i++) {
        kernel_snap_proto *p = &snap->protos[i];
        for (size_t j = 0; j < p->nkeys; j++)
            if (strstr(p->keys[j], needle) ||
                memmem(p->vals[j], p->lens[j], needle, strlen(needle)))
                found = true;
    }
    kernel_snapshot_done(g->f->k, snap, 0);
    kernel_snapshot_free(snap);
    return found;
}

static void openai_sends_the_key_from_the_environment(void **state)
{
    gx *g = open_openai(state, "[{\"content\": \"```c\\nint k;\\n```\"},"
                               " {\"status\": 401, \"body\": \"{\\\"error\\\": \\\"invalid "
                               "key\\\"}\"}]");
    set(g, "api_key_env", KEY_ENV);
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);

    /* The variable is not set yet: refused before any request. */
    unsetenv(KEY_ENV);
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, KEY_ENV);
    free(t);

    setenv(KEY_ENV, KEY_VALUE, 1);
    t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "int k;\n");
    free(t);

    /* 401 is not retried and the error names URL, status and body. */
    set(g, "retries", "3");
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    char want[160];
    snprintf(want, sizeof want,
             "openai: http://127.0.0.1:%d/v1/chat/completions answered 401: {\"error\": "
             "\"invalid key\"}", g->port);
    assert_string_equal(t, want);
    fx_assert_lacks("the error", t, KEY_VALUE);
    free(t);
    free(task);

    json_t *reqs = requests(g);
    assert_int_equal(json_array_size(reqs), 2);
    assert_string_equal(header(json_array_get(reqs, 0), "Authorization"), "Bearer " KEY_VALUE);
    json_decref(reqs);

    assert_false(state_holds(g, KEY_VALUE));
    char *log = fx_snapshot(g->f, &g->f->log);
    fx_assert_lacks("the kernel's log", log, KEY_VALUE);
    free(log);

    /* A key put in the state itself is refused: it would go into the image. */
    set(g, "api_key", KEY_VALUE);
    task = task_json("7", NULL, 1, NULL, NULL, NULL);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "api_key_env");
    fx_assert_lacks("the error", t, KEY_VALUE);
    free(t);
    free(task);
}

/* An origin or a credential the grant leaves out: refused before any byte
 * leaves, the double hears nothing. */
static void openai_reaches_only_granted_origins(void **state)
{
    gx *g = open_openai(state, "[{\"content\": \"```c\\nint k;\\n```\"}]");
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    char url[96];
    const char *forms[] = {"http://localhost:%d", "https://127.0.0.1:%d",
                           "http://127.0.0.1:%d@127.0.0.1:%d", "http://u:p@127.0.0.1:%d"};
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        snprintf(url, sizeof url, forms[i], g->port, g->port);
        set(g, "base_url", url);
        char *t = expect_rc(g, "generate", task, A4PS_ERROR);
        fx_assert_contains("the refusal", t, "plugin openai may not reach");
        fx_assert_contains("the refusal", t, "rule R12");
        free(t);
    }
    /* A credential not granted to the plugin is not read. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g->port);
    set(g, "base_url", url);
    setenv("A4PS_TEST_OTHER_KEY", "sk-other", 1);
    set(g, "api_key_env", "A4PS_TEST_OTHER_KEY");
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    unsetenv("A4PS_TEST_OTHER_KEY");
    fx_assert_contains("the refusal", t, "may not use the credential A4PS_TEST_OTHER_KEY");
    fx_assert_lacks("the refusal", t, "sk-other");
    free(t);
    json_t *reqs = requests(g);
    assert_int_equal(json_array_size(reqs), 0);
    json_decref(reqs);
    free(task);
}

static void openai_reply_without_code_is_an_error(void **state)
{
    gx *g = open_openai(state, "[{\"content\": \"I am sorry, I cannot write that.\"},"
                               " {\"status\": 200, \"body\": {\"choices\": []}}]");
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    assert_string_equal(t, "openai: the reply held no C code block");
    free(t);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "choices[0].message.content");
    free(t);
    free(task);
}

static void openai_second_iteration_carries_what_went_wrong(void **state)
{
    gx *g = open_openai(state, "[{\"content\": \"```c\\nint v2;\\n```\"}]");
    set(g, "temperature", "0.2");
    set(g, "max_tokens", "2048");
    char *task = task_json("7", NULL, 2, "int previous_marker_source;",
                           "counter.c:3:1: error: marker_diagnostic",
                           "double: input 2: expected 4, got marker_failure");
    char *t = expect_rc(g, "generate", task, A4PS_OK);
    assert_string_equal(t, "int v2;\n");
    free(t);
    free(task);
    json_t *reqs = requests(g);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    const char *user = message_content(r, 1);
    fx_assert_contains("the user message", user, "iteration 2");
    fx_assert_contains("the user message", user, "int previous_marker_source;");
    fx_assert_contains("the user message", user, "counter.c:3:1: error: marker_diagnostic");
    fx_assert_contains("the user message", user, "expected 4, got marker_failure");
    json_t *body = json_object_get(r, "body");
    assert_true(json_real_value(json_object_get(body, "temperature")) > 0.19);
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 2048);
    json_decref(reqs);
}

/* A port nothing listens on. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    close(s);
    return ntohs(a.sin_port);
}

static void openai_unreachable_endpoint(void **state)
{
    gx *g = open_gen(state, "openai");
    garbage_is_refused(g);
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);

    /* Settings first. */
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    fx_assert_contains("the error", t, "base_url");
    free(t);
    t = expect_rc(g, "generate", "{\"task\":\"7\"}", A4PS_EINVAL);
    fx_assert_contains("the error", t, "goal");
    free(t);

    char url[64], full[96];
    int port = closed_port();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(full, sizeof full, "%s/v1/chat/completions", url);
    grant_origin(url);
    set(g, "base_url", url);
    set(g, "model", "m");
    set(g, "retries", "2");
    set(g, "timeout_ms", "4000");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    t = expect_rc(g, "generate", task, A4PS_ERROR);
    double ms = since_ms(&t0);
    fx_assert_contains("the error", t, full);
    fx_assert_contains("the error", t, "after 3 attempts");
    /* 200 + 400 ms of backoff, well inside the 4 s limit. */
    if (ms < 550 || ms > 4000)
        fail_msg("three attempts on a closed port took %.0f ms", ms);
    free(t);
    free(task);
}

static void openai_slow_endpoint_times_out(void **state)
{
    gx *g = open_openai(state, "[{\"content\": \"```c\\nint late;\\n```\", \"delay_ms\": 3000}]");
    set(g, "timeout_ms", "400");
    char *task = task_json("7", NULL, 1, NULL, NULL, NULL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *t = expect_rc(g, "generate", task, A4PS_ERROR);
    double ms = since_ms(&t0);
    fx_assert_contains("the error", t, "/v1/chat/completions");
    fx_assert_contains("the error", t, "timed out");
    if (ms > 2000)
        fail_msg("a 400 ms limit took %.0f ms", ms);
    free(t);
    free(task);
}

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(inbox_takes_files_in_name_order, teardown),
        cmocka_unit_test_teardown(inbox_feedback_writes_next_to_the_candidate, teardown),
        cmocka_unit_test_teardown(inbox_refuses_bad_tasks_and_big_files, teardown),
        cmocka_unit_test_teardown(command_returns_the_programs_stdout, teardown),
        cmocka_unit_test_teardown(command_failure_names_exit_and_stderr, teardown),
        cmocka_unit_test_teardown(command_is_killed_at_its_timeout, teardown),
        cmocka_unit_test_teardown(command_feedback_only_when_asked, teardown),
        cmocka_unit_test_teardown(command_runs_only_granted_programs, teardown),
        cmocka_unit_test_teardown(openai_extracts_the_fenced_code, teardown),
        cmocka_unit_test_teardown(openai_retries_503_and_429, teardown),
        cmocka_unit_test_teardown(openai_sends_the_key_from_the_environment, teardown),
        cmocka_unit_test_teardown(openai_reply_without_code_is_an_error, teardown),
        cmocka_unit_test_teardown(openai_reaches_only_granted_origins, teardown),
        cmocka_unit_test_teardown(openai_second_iteration_carries_what_went_wrong, teardown),
        cmocka_unit_test_teardown(openai_unreachable_endpoint, teardown),
        cmocka_unit_test_teardown(openai_slow_endpoint_times_out, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    outside_policy_free(&policy);
    return rc;
}
