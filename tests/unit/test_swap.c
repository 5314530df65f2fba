/* test_swap.c -- hot swap under load: code swaps, state-migrating swaps,
 * rollback, quiescence and reclamation of old generations.
 *
 * The subject is the sw plugin (tests/plugins/kernel/sw.c): 1.0.0 and 2.0.0
 * share state layout 1 (code swap); 3.0.0 keeps layout 2 (migrating swap);
 * 3.1.0's migrate hook fails and 3.2.0's hangs. */
#include "plugin_fixture.h"

#include <jansson.h>
#include <stdatomic.h>
#include <unistd.h>

#define SW(v) FX_PLUGIN("sw-" v ".so")

typedef struct caller {
    fx *f;
    const char *proto;
    const char *selector;
    char msg[32];
    _Atomic bool *stop;
    long calls, ok, v1, v2, v3, torn, errors;
    long limit;                  /* stop after this many calls when > 0 */
    char first_bad[128];
} caller;

static void *caller_main(void *arg)
{
    caller *c = arg;
    kernel_handle *h = NULL;
    if (kernel_resolve(c->f->k, c->proto, c->selector, &h) != 0) {
        c->errors = -1;
        return NULL;
    }
    kernel_thread_attach(c->f->k);
    kernel_reply r = {0};
    while (!atomic_load(c->stop) && (c->limit == 0 || c->calls < c->limit)) {
        int rc = kernel_send_handle(h, c->msg, strlen(c->msg), &r);
        c->calls++;
        const char *t = r.len ? r.data : "";
        if (rc != A4PS_OK) {
            if (!c->errors++)
                snprintf(c->first_bad, sizeof c->first_bad, "rc %d: %s", rc, t);
        } else {
            c->ok++;
            if (!strcmp(c->selector, "id")) {
                if (!strcmp(t, "v1::v1"))
                    c->v1++;
                else if (!strcmp(t, "v2::v2"))
                    c->v2++;
                else if (!c->torn++)
                    snprintf(c->first_bad, sizeof c->first_bad, "torn reply '%s'", t);
            } else if (!strncmp(t, "v1", 2)) {
                c->v1++;
            } else if (!strncmp(t, "v3", 2)) {
                c->v3++;
            }
        }
        kernel_quiescent(c->f->k);
    }
    kernel_reply_free(&r);
    kernel_handle_release(h);
    kernel_thread_detach(c->f->k);
    return NULL;
}

static int ncallers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2 : n > 8 ? 8 : (int)n;
}

static int setup_sw(void **state)
{
    fx *f = fx_open(NULL);
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "s", "sw", NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_close(*state);
    return 0;
}

/* Callers on every core keep calling while the proto is swapped back and
 * forth hundreds of times: every call returns, each reply comes whole from
 * one version, and both versions served. */
static void code_swap_under_load(void **state)
{
    fx *f = *state;
    fx_load_ok(f, SW("2"), NULL);
    int n = ncallers();
    caller cs[8];
    pthread_t th[8];
    _Atomic bool stop = false;
    for (int i = 0; i < n; i++) {
        cs[i] = (caller){.f = f, .proto = "s", .selector = "id", .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &cs[i]), 0);
    }
    char err[KERNEL_ERRLEN];
    for (int i = 0; i < 400; i++) {
        int rc = kernel_swap(f->k, "s", i % 2 ? "1.0.0" : "2.0.0", err, sizeof err);
        if (rc)
            fail_msg("swap %d: %s", i, err);
        usleep(200);
    }
    atomic_store(&stop, true);
    long calls = 0, ok = 0, v1 = 0, v2 = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (cs[i].errors || cs[i].torn)
            fail_msg("caller %d: %ld errors, %ld torn replies; first: %s", i, cs[i].errors,
                     cs[i].torn, cs[i].first_bad);
        calls += cs[i].calls;
        ok += cs[i].ok;
        v1 += cs[i].v1;
        v2 += cs[i].v2;
    }
    print_message("%d callers, %ld calls: %ld served by v1, %ld by v2\n", n, calls, v1, v2);
    assert_int_equal(calls, ok);
    assert_int_equal(ok, v1 + v2);
    assert_true(v1 > 0);
    assert_true(v2 > 0);
    /* Every retired generation is reclaimed once the callers are gone. */
    assert_int_equal(kernel_reclaim_wait(f->k, 10000), 0);
}

typedef struct slow_call {
    fx *f;
    int rc;
    char reply[64];
} slow_call;

static void *slow_main(void *arg)
{
    slow_call *s = arg;
    kernel_reply r = {0};
    s->rc = kernel_send(s->f->k, "s", "slow", "400", 3, &r);
    snprintf(s->reply, sizeof s->reply, "%s", r.len ? r.data : "");
    kernel_reply_free(&r);
    return NULL;
}

static bool mapped(const char *needle)
{
    FILE *m = fopen("/proc/self/maps", "r");
    char line[1024];
    bool found = false;
    while (m && fgets(line, sizeof line, m))
        if (strstr(line, needle))
            found = true;
    if (m)
        fclose(m);
    return found;
}

/* A long call of v1 finishes correctly on v1 while v2 is live, and v1's
 * mapping goes away only after that call returned. */
static void long_call_survives_swap(void **state)
{
    fx *f = *state;
    kernel_version_info v1;
    char err[KERNEL_ERRLEN];
    assert_int_equal(kernel_load(f->k, SW("1"), &v1, err, sizeof err), A4PS_EEXIST);
    char needle[96];
    snprintf(needle, sizeof needle, "/%llu-%.16s.so", (unsigned long long)v1.generation,
             v1.sha256);
    assert_true(mapped(needle));
    fx_load_ok(f, SW("2"), NULL);

    slow_call s = {.f = f};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_main, &s), 0);
    void *flag = NULL;
    size_t len;
    while (kernel_state_get(f->k, "s", "in_slow", &flag, &len) != 0)
        usleep(1000);
    free(flag);

    fx_swap_ok(f, "s", "2.0.0");
    fx_expect(f, "s", "id", "", A4PS_OK, "v2::v2");
    /* v1 is retired but its call is still running: it must stay mapped. */
    usleep(50000);
    assert_true(mapped(needle));
    char *st = kernel_status(f->k);
    fx_assert_contains("status", st, "\"draining\":[{");
    free(st);

    pthread_join(th, NULL);
    assert_int_equal(s.rc, A4PS_OK);
    assert_string_equal(s.reply, "v1 slow done");
    assert_int_equal(kernel_reclaim_wait(f->k, 10000), 0);
    assert_false(mapped(needle));
}

/* Writers keep adding to their own counters while the proto migrates from
 * layout 1 to 2: no write is lost, and the state converted by the hook is
 * what v3 serves. */
static void migrating_swap_loses_no_write(void **state)
{
    fx *f = *state;
    for (int i = 0; i < 7; i++)
        fx_expect(f, "s", "add", "", A4PS_OK, NULL);
    fx_load_ok(f, SW("3"), NULL);
    int n = ncallers();
    caller cs[8];
    pthread_t th[8];
    _Atomic bool stop = false;
    for (int i = 0; i < n; i++) {
        cs[i] = (caller){.f = f, .proto = "s", .selector = "add", .stop = &stop};
        snprintf(cs[i].msg, sizeof cs[i].msg, "%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &cs[i]), 0);
    }
    usleep(20000);
    fx_swap_ok(f, "s", "3.0.0");
    usleep(20000);
    atomic_store(&stop, true);
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (cs[i].errors)
            fail_msg("writer %d: %s", i, cs[i].first_bad);
        print_message("writer %d: %ld adds, %ld on v1, %ld on v3\n", i, cs[i].calls,
                      cs[i].v1, cs[i].v3);
        /* The swap happened while this writer was writing. */
        assert_true(cs[i].v1 > 0 && cs[i].v3 > 0);
        char key[16];
        snprintf(key, sizeof key, "w:%d", i);
        void *v = NULL;
        size_t len;
        assert_int_equal(kernel_state_get(f->k, "s", key, &v, &len), 0);
        assert_int_equal(atol(v), cs[i].calls);
        free(v);
    }
    fx_expect(f, "s", "get", "", A4PS_OK, "v3 7");
    char *e = kernel_explain(f->k, "s");
    fx_assert_contains("explain", e, "\"key\":\"count\"");
    fx_assert_lacks("explain", e, "\"key\":\"n\"");
    free(e);
}

static void assert_still_v1(fx *f, const char *err, const char *expect)
{
    fx_assert_contains("swap error", err, expect);
    fx_assert_contains("swap error", err, "still on sw 1.0.0");
    fx_expect(f, "s", "get", "", A4PS_OK, "v1 5");
    char *e = kernel_explain(f->k, "s");
    fx_assert_contains("explain", e, "\"version\":\"1.0.0\"");
    fx_assert_contains("explain", e, "\"key\":\"n\"");
    free(e);
}

static void migrate_failure_keeps_v1(void **state)
{
    fx *f = *state;
    for (int i = 0; i < 5; i++)
        fx_expect(f, "s", "add", "", A4PS_OK, NULL);
    fx_load_ok(f, SW("3fail"), NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_swap(f->k, "s", "3.1.0", err, sizeof err), A4PS_ERROR);
    assert_still_v1(f, err, "migrate: failed");
}

static void tune_migrate(kernel_config *cfg)
{
    cfg->migrate_timeout_ms = 300;
}

static void migrate_timeout_keeps_v1(void **state)
{
    fx *f = fx_open(tune_migrate);
    *state = f;
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "s", "sw", NULL);
    for (int i = 0; i < 5; i++)
        fx_expect(f, "s", "add", "", A4PS_OK, NULL);
    fx_load_ok(f, SW("3hang"), NULL);
    char err[KERNEL_ERRLEN] = "";
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kernel_swap(f->k, "s", "3.2.0", err, sizeof err), A4PS_ETIMEDOUT);
    assert_still_v1(f, err, "did not return within");
}

/* A version that changes the state layout without a migrate hook is refused
 * for a proto that has state, and accepted for one whose state is empty. */
static void layout_change_needs_migrate_hook(void **state)
{
    fx *f = *state;
    fx_expect(f, "s", "add", "", A4PS_OK, "v1 1");
    fx_proto_ok(f, "empty", "sw", "1.0.0");
    fx_load_ok(f, SW("4"), NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_swap(f->k, "s", "4.0.0", err, sizeof err), A4PS_EINVAL);
    fx_assert_contains("swap error", err, "no migrate hook");
    fx_expect(f, "s", "get", "", A4PS_OK, "v1 1");
    fx_swap_ok(f, "empty", "4.0.0");
    fx_expect(f, "empty", "get", "", A4PS_OK, "v4 0");
}

/* Rollback goes back one version at a time, across a layout change too
 * (v1's migrate hook converts layout 2 back), keeping the counter. */
static void rollback_walks_history(void **state)
{
    fx *f = *state;
    fx_load_ok(f, SW("2"), NULL);
    fx_load_ok(f, SW("3"), NULL);
    fx_expect(f, "s", "add", "", A4PS_OK, "v1 1");
    fx_swap_ok(f, "s", "2.0.0");
    fx_expect(f, "s", "add", "", A4PS_OK, "v2 2");
    fx_swap_ok(f, "s", "3.0.0");
    fx_expect(f, "s", "add", "", A4PS_OK, "v3 3");
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_rollback(f->k, "s", err, sizeof err), 0);
    fx_expect(f, "s", "get", "", A4PS_OK, "v2 3");
    assert_int_equal(kernel_rollback(f->k, "s", err, sizeof err), 0);
    fx_expect(f, "s", "get", "", A4PS_OK, "v1 3");
    assert_int_equal(kernel_rollback(f->k, "s", err, sizeof err), A4PS_ENOENT);
    fx_assert_contains("rollback error", err, "no earlier version");
    assert_true(fx_events(f, "swap_rolled_back") == 2);
    assert_true(fx_events(f, "swap_committed") == 2);
}

/* kernel_upgrade moves every proto of a plugin to its newest version. */
static void upgrade_moves_every_proto(void **state)
{
    fx *f = *state;
    fx_proto_ok(f, "s2", "sw", NULL);
    fx_load_ok(f, SW("2"), NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_upgrade(f->k, "sw", err, sizeof err), 2);
    fx_expect(f, "s", "id", "", A4PS_OK, "v2::v2");
    fx_expect(f, "s2", "id", "", A4PS_OK, "v2::v2");
    assert_int_equal(kernel_upgrade(f->k, "sw", err, sizeof err), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_sw, teardown)
#define TN(fn) cmocka_unit_test_teardown(fn, teardown)

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        T(code_swap_under_load),
        T(long_call_survives_swap),
        T(migrating_swap_loses_no_write),
        T(migrate_failure_keeps_v1),
        TN(migrate_timeout_keeps_v1),
        T(layout_change_needs_migrate_hook),
        T(rollback_walks_history),
        T(upgrade_moves_every_proto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
