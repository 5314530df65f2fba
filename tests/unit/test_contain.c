/* test_contain.c -- what one live plugin can do to the others (issue 10):
 * the host table is read-only, a context the kernel reuses is put back after
 * a nested send, and every method call's allocations are charged to the
 * version that made them (kernel_config.alloc_counters).
 *
 * The attacker is tests/plugins/hostile/live/hijack.c, the very binary the
 * integration test drops into a4psd; outside the probe it attacks at once.
 * The accounting tests hand the kernel counters only the test moves: the
 * plugin acct asks for each charge in a log line, which the test's log sink
 * (on the calling thread, inside the call) adds to them. */
#include "plugin_fixture.h"

#include <inttypes.h>

/* ---- the host table ---- */

/* A plugin writes into the table from a method: its call faults
 * (A4PS_EFAULT), its version is quarantined, and the plugin next to it gets
 * the kernel's reply entry as before -- not the hijacker's. */
static void table_write_faults_the_writer(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("live_hijack.so"), NULL);
    fx_proto_ok(f, "h", "hostile-hijack", NULL);
    fx_assert_g_serves(f);

    kernel_reply r = {0};
    int rc = kernel_send(f->k, "h", "ping", "", 0, &r);
    const char *text = r.len ? r.data : "";
    if (rc != A4PS_EFAULT)
        fail_msg("h.ping (the table write) returned %d, expected A4PS_EFAULT; reply: %s", rc,
                 text);
    fx_assert_contains("the fault reply", text, "SIGSEGV");
    fx_assert_contains("the fault reply", text, "quarantined");
    kernel_reply_free(&r);

    int quarantined = 0;
    uint64_t failed = 0;
    char reason[256] = "";
    assert_int_equal(kernel_version_health(f->k, "hostile-hijack", "1.0.0", &quarantined,
                                           &failed, reason, sizeof reason), A4PS_OK);
    if (!quarantined)
        fail_msg("hostile-hijack 1.0.0 is not quarantined after writing the host table");
    fx_assert_contains("the quarantine reason", reason, "SIGSEGV");
    fx_expect(f, "h", "ping", "", A4PS_EQUARANTINED, NULL);

    /* The others: replies exactly as before, and still after the
     * hijacker's generation is gone. */
    fx_assert_g_serves(f);
    kernel_reclaim_wait(f->k, 2000);
    fx_assert_g_serves(f);
    fx_expect(f, "g", "ping", "", A4PS_OK, "pong");
}

/* The context of a call is the thread's slot for its depth, reused by the
 * next call there.  The hijacker keeps the pointer to its own (stash, depth
 * 0); relay, later at depth 0 in that same slot, sends it echo, and the
 * hijacker points relay's context at a table of its own.  The kernel puts
 * the context back when the send returns: relay's reply goes through the
 * kernel's entry, unprefixed. */
static void reused_context_is_put_back(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("live_hijack.so"), NULL);
    fx_load_ok(f, FX_PLUGIN("relay.so"), NULL);
    fx_proto_ok(f, "h", "hostile-hijack", NULL);
    fx_proto_ok(f, "r", "relay", NULL);
    fx_expect(f, "h", "stash", "", A4PS_OK, "stashed");
    fx_expect(f, "r", "relay", "h", A4PS_OK, "relayed");
    fx_expect(f, "r", "relay", "h", A4PS_OK, "relayed");
    fx_assert_g_serves(f);
}

/* An observer that writes over the event it was delivered changes nothing
 * for the observers after it: each gets its own copy. */
static void event_payload_is_not_shared(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("live_hijack.so"), NULL);
    fx_load_ok(f, FX_PLUGIN("observer.so"), NULL);
    fx_proto_ok(f, "h", "hostile-hijack", NULL);
    fx_proto_ok(f, "obs", "observer", NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_subscribe(f->k, "custom", "h", "observe", err, sizeof err), 0);
    assert_int_equal(kernel_subscribe(f->k, "custom", "obs", "on_event", err, sizeof err), 0);
    assert_int_equal(kernel_emit(f->k, "custom", "{\"said\":\"as published\"}"), 0);
    kernel_events_flush(f->k);
    kernel_reply r = {0};
    assert_int_equal(kernel_send(f->k, "obs", "log", "", 0, &r), A4PS_OK);
    const char *text = r.len ? r.data : "";
    fx_assert_contains("the second observer's log", text, "as published");
    fx_assert_lacks("the second observer's log", text, "HIJACKED");
    kernel_reply_free(&r);
}

/* ---- accounting per call ---- */

static __thread uint64_t fake_alloc, fake_freed;
static int counters_asked;

static int fake_counters(const uint64_t **allocated, const uint64_t **freed)
{
    __atomic_add_fetch(&counters_asked, 1, __ATOMIC_RELAXED);
    *allocated = &fake_alloc;
    *freed = &fake_freed;
    return 0;
}

/* The log sink: "charge A F" from acct moves this thread's counters. */
static void charge_log(void *arg, int level, const char *line)
{
    const char *c = strstr(line, ": charge ");
    uint64_t a, fr;
    if (c && sscanf(c + 9, "%" SCNu64 " %" SCNu64, &a, &fr) == 2) {
        fake_alloc += a;
        fake_freed += fr;
    }
    fx_on_log(arg, level, line);
}

static void tune_accounting(kernel_config *cfg)
{
    cfg->alloc_counters = fake_counters;
    cfg->log = charge_log;
}

static int setup_accounting(void **state)
{
    fx *f = fx_open(tune_accounting);
    fx_load_ok(f, FX_PLUGIN("good.so"), NULL);
    fx_proto_ok(f, "g", "good", NULL);
    f->has_g = true;
    *state = f;
    return 0;
}

static void usage_of(fx *f, const char *plugin, kernel_version_usage *u)
{
    memset(u, 0xff, sizeof *u);
    int rc = kernel_version_usage_get(f->k, plugin, "1.0.0", u);
    if (rc != A4PS_OK)
        fail_msg("kernel_version_usage_get(%s 1.0.0) = %d", plugin, rc);
}

/* Each call is charged what it allocated and freed; a nested call is
 * charged to the version that served it, not to its caller; net is the
 * difference; status and history show the same numbers. */
static void calls_are_charged_to_their_version(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("acct.so"), NULL);
    fx_load_ok(f, FX_PLUGIN("relay.so"), NULL);
    fx_proto_ok(f, "a", "acct", NULL);
    fx_proto_ok(f, "r", "relay", NULL);
    kernel_version_usage u;
    usage_of(f, "acct", &u);
    assert_int_equal(u.accounted, 1);
    assert_int_equal(u.calls, 0);
    assert_int_equal(u.allocated, 0);

    for (int i = 0; i < 3; i++)
        fx_expect(f, "a", "charge", "1000 200", A4PS_OK, "ok");
    usage_of(f, "acct", &u);
    assert_int_equal(u.calls, 3);
    assert_int_equal(u.allocated, 3000);
    assert_int_equal(u.freed, 600);
    assert_int_equal(u.net, 2400);

    /* relay -> a.echo: 100000 bytes, a's alone.  relay is billed only for
     * the reply buffer the kernel hands it (its malloc_usable_size; freeing
     * it with api->free is real malloc, which these counters do not see). */
    fx_expect(f, "r", "relay", "a", A4PS_OK, "relayed");
    usage_of(f, "acct", &u);
    assert_int_equal(u.calls, 4);
    assert_int_equal(u.allocated, 103000);
    kernel_version_usage ur;
    usage_of(f, "relay", &ur);
    assert_int_equal(ur.calls, 1);
    if (ur.allocated == 0 || ur.allocated > 4096)
        fail_msg("relay was billed %" PRIu64 " bytes; expected the reply buffer alone",
                 ur.allocated);
    assert_int_equal(ur.freed, 0);

    /* Freeing more than it allocated (memory from elsewhere): net < 0. */
    fx_expect(f, "a", "charge", "0 200000", A4PS_OK, "ok");
    usage_of(f, "acct", &u);
    assert_int_equal(u.net, 103000 - 200600);

    char *status = kernel_status(f->k);
    fx_assert_contains("kernel_status()", status,
                       "\"usage\":{\"calls\":5,\"allocated\":103000,\"freed\":200600,\"net\":-97600}");
    free(status);
    char *hist = kernel_history(f->k, "a");
    fx_assert_contains("kernel_history(a)", hist,
                       "\"usage\":{\"calls\":5,\"allocated\":103000,\"freed\":200600,\"net\":-97600}");
    free(hist);
    assert_int_equal(kernel_version_usage_get(f->k, "acct", "9.9.9", &u), A4PS_ENOENT);
    /* Asked once for this thread, not once a call. */
    if (__atomic_load_n(&counters_asked, __ATOMIC_RELAXED) > 2)
        fail_msg("the counter callback was asked %d times", counters_asked);
}

/* A fault is a call too, charged like any other. */
static void faulted_calls_are_counted(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("live_hijack.so"), NULL);
    fx_proto_ok(f, "h", "hostile-hijack", NULL);
    fx_expect(f, "h", "stash", "", A4PS_OK, "stashed");
    fx_expect(f, "h", "ping", "", A4PS_EFAULT, NULL);
    kernel_version_usage u;
    usage_of(f, "hostile-hijack", &u);
    assert_int_equal(u.calls, 2);
}

/* Without a callback nothing is counted and status says so (null). */
static void no_callback_no_accounting(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("acct.so"), NULL);
    fx_proto_ok(f, "a", "acct", NULL);
    fx_expect(f, "a", "charge", "1000 0", A4PS_OK, "ok");
    kernel_version_usage u;
    usage_of(f, "acct", &u);
    assert_int_equal(u.accounted, 0);
    assert_int_equal(u.calls, 0);
    assert_int_equal(u.allocated, 0);
    char *status = kernel_status(f->k);
    fx_assert_contains("kernel_status()", status, "\"usage\":null");
    free(status);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
#define TA(fn) cmocka_unit_test_setup_teardown(fn, setup_accounting, fx_teardown)

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        T(table_write_faults_the_writer),
        T(reused_context_is_put_back),
        T(event_payload_is_not_shared),
        TA(calls_are_charged_to_their_version),
        TA(faulted_calls_are_counted),
        T(no_callback_no_accounting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
