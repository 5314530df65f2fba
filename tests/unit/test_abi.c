/* test_abi.c -- one test per rule of the plugin ABI (R1-R11 in abi/a4ps.h).
 *
 * Each test loads test plugins built from tests/plugins into a private kernel
 * (plugin_fixture.h) and checks the rule from the outside: the status
 * kernel_load returns, the words of its error, what the plugin itself can
 * observe through the host table, and that proto "g" on `good` keeps serving
 * whatever happens to the plugin under test.  A refusal's error text must
 * name the file and the descriptor field at fault (fx_expect_refusal). */
#define _GNU_SOURCE
#include "plugin_fixture.h"

/* Must match OLDMINOR_DESCRIPTION in tests/plugins/oldminor.c. */
#define OLDMINOR_DESCRIPTION "OLDMINOR-DESCRIPTION-PAST-STRUCT-SIZE"

/* R1: a descriptor for another ABI major is refused, naming abi_major. */
static void r1_major_mismatch_refused(void **state)
{
    fx *f = fx_get(state);
    fx_expect_refusal(f, FX_PLUGIN("bad_major.so"), FX_NEEDLES("abi_major"));
}

/* R2: a build signature for another pointer size is refused. */
static void r2_signature_mismatch_refused(void **state)
{
    fx *f = fx_get(state);
    fx_expect_refusal(f, FX_PLUGIN("bad_signature.so"), FX_NEEDLES("signature"));
}

/* R3: a plugin built against minor 0 is served, and nothing past its
 * struct_size is read: its self_test (which always fails) is not run although
 * self-tests are on, and its description never shows. */
static void r3_older_minor_served(void **state)
{
    fx *f = fx_get(state);
    assert_true(f->cfg.run_self_test);
    fx_load_ok(f, FX_PLUGIN("oldminor.so"), NULL);
    fx_proto_ok(f, "o", "oldminor", NULL);
    fx_expect(f, "o", "ping", "", A4PS_OK, "pong");

    char *explain = kernel_explain(f->k, "o");
    assert_non_null(explain);
    fx_assert_lacks("kernel_explain(o)", explain, OLDMINOR_DESCRIPTION);
    free(explain);
    char *status = kernel_status(f->k);
    assert_non_null(status);
    fx_assert_lacks("kernel_status()", status, OLDMINOR_DESCRIPTION);
    free(status);
    assert_int_equal(fx_events(f, "plugin_refused"), 0);
}

/* R4: a plugin built against the next minor is served, and its own test of
 * the host table finds that this host lacks the entry that minor appends. */
static void r4_newer_minor_served_detects_missing_entry(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("newminor.so"), NULL);
    fx_proto_ok(f, "n", "newminor", NULL);
    fx_expect(f, "n", "probe", "", A4PS_OK, "missing");
    fx_assert_g_serves(f);
}

/* R5: struct_size smaller than the 1.0 descriptor is refused. */
static void r5_wrong_struct_size_refused(void **state)
{
    fx *f = fx_get(state);
    fx_expect_refusal(f, FX_PLUGIN("bad_struct_size.so"), FX_NEEDLES("struct_size"));
}

/* R6: the host table's size covers every entry of the minor the host speaks,
 * so A4PS_HOST_HAS finds a minor-1 entry (proto_name) present. */
static void r6_host_table_reports_its_entries(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("newminor.so"), NULL);
    fx_proto_ok(f, "n", "newminor", NULL);
    fx_expect(f, "n", "probe_known", "", A4PS_OK, "present");
}

/* R6, minor 2: the forge entry.  A kernel without a forge answers
 * A4PS_ENOSYS with a reason; with one, the request reaches it with the
 * calling proto and plugin, and its reply and status reach the plugin. */
static struct {
    char proto[64], plugin[64], request[256];
    int calls;
} forged;

static int test_forge(void *arg, const char *proto, const char *plugin, const char *request,
                      char **reply)
{
    snprintf(forged.proto, sizeof forged.proto, "%s", proto ? proto : "");
    snprintf(forged.plugin, sizeof forged.plugin, "%s", plugin ? plugin : "");
    snprintf(forged.request, sizeof forged.request, "%s", request);
    forged.calls++;
    *reply = strdup(strstr(request, "bad") ? "no such goal" : "{\"id\":7}");
    return strstr(request, "bad") ? A4PS_EINVAL : A4PS_OK;
}

static void tune_forge(kernel_config *cfg)
{
    cfg->forge = test_forge;
}

static void r6_forge_entry(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("forger.so"), NULL);
    fx_proto_ok(f, "F", "forger", NULL);
    fx_expect(f, "F", "open", "{}", A4PS_ENOSYS, "this host has no forge");

    fx *g = fx_open(tune_forge);
    fx_load_ok(g, FX_PLUGIN("forger.so"), NULL);
    fx_proto_ok(g, "F2", "forger", NULL);
    memset(&forged, 0, sizeof forged);
    fx_expect(g, "F2", "open", "{\"goal\":\"x\"}", A4PS_OK, "{\"id\":7}");
    assert_int_equal(forged.calls, 1);
    assert_string_equal(forged.proto, "F2");
    assert_string_equal(forged.plugin, "forger");
    assert_string_equal(forged.request, "{\"goal\":\"x\"}");
    fx_expect(g, "F2", "open", "bad", A4PS_EINVAL, "no such goal");
    fx_close(g);
}

/* R12, minor 3: the http and run entries.  The table has them; a kernel
 * without the daemon's callbacks answers A4PS_ENOSYS saying so; with them,
 * the callback hears which plugin calls and exactly what it asked, and the
 * outcome comes back through the plugin's own struct.  (live_exfil behaves
 * only in the probe: here it calls.) */
static struct {
    char plugin[64], url[256], cred[64], body[64], argv[256];
    int calls;
} outsider;

static int test_http(void *arg, const char *plugin, const a4ps_http_request *rq,
                     a4ps_http_response *rs)
{
    (void)arg;
    outsider.calls++;
    snprintf(outsider.plugin, sizeof outsider.plugin, "%s", plugin ? plugin : "");
    snprintf(outsider.url, sizeof outsider.url, "%s", rq->url);
    snprintf(outsider.cred, sizeof outsider.cred, "%s", rq->credential_env ? rq->credential_env : "");
    snprintf(outsider.body, sizeof outsider.body, "%.*s", (int)rq->body_len, (const char *)rq->body);
    if (strstr(rq->url, "deny")) {
        snprintf(rs->error, sizeof rs->error, "not granted");
        return A4PS_EPERM;
    }
    rs->status = 200;
    rs->body = strdup("hello");
    rs->body_len = 5;
    return A4PS_OK;
}

static int test_run(void *arg, const char *plugin, const a4ps_run_request *rq,
                    a4ps_run_result *rs)
{
    (void)arg;
    outsider.calls++;
    snprintf(outsider.plugin, sizeof outsider.plugin, "%s", plugin ? plugin : "");
    outsider.argv[0] = '\0';
    for (const char *const *a = rq->argv; *a; a++) {
        size_t n = strlen(outsider.argv);
        snprintf(outsider.argv + n, sizeof outsider.argv - n, "%s%s", n ? " " : "", *a);
    }
    rs->exited = 1;
    rs->out = strdup("uid=1");
    rs->out_len = 5;
    rs->err = strdup("");
    return A4PS_OK;
}

static void tune_outside(kernel_config *cfg)
{
    cfg->http = test_http;
    cfg->run = test_run;
}

static void r12_outside_entries(void **state)
{
    fx *f = fx_get(state);
    assert_int_equal(A4PS_ABI_MINOR, 3);
    assert_int_equal(A4PS_PLUGIN_SIZE_1_3, A4PS_PLUGIN_SIZE_1_1);
    fx_load_ok(f, FX_PLUGIN("live_exfil.so"), NULL);
    fx_proto_ok(f, "X", "exfil", NULL);
    fx_expect(f, "X", "http", "http://127.0.0.1:1/", A4PS_OK,
              "refused -38: http: this host grants no outside access (plugin exfil, rule R12)");
    fx_expect(f, "X", "run", "/bin/sh", A4PS_OK,
              "refused -38: run: this host grants no outside access (plugin exfil, rule R12)");

    memset(&outsider, 0, sizeof outsider);
    fx *g = fx_open(tune_outside);
    fx_load_ok(g, FX_PLUGIN("live_exfil.so"), NULL);
    fx_proto_ok(g, "X2", "exfil", NULL);
    /* init (a hook) tried too, and was refused before the callback. */
    fx_expect(g, "X2", "hook", "", A4PS_OK,
              "-1000: http: not from a hook (init, fini, migrate, self_test): plugin exfil, "
              "rule R12");
    assert_int_equal(outsider.calls, 0);
    fx_expect(g, "X2", "http", "http://127.0.0.1:1/x", A4PS_OK, "reached: hello");
    assert_int_equal(outsider.calls, 1);
    assert_string_equal(outsider.plugin, "exfil");
    assert_string_equal(outsider.url, "http://127.0.0.1:1/x");
    assert_string_equal(outsider.cred, "A4PS_TEST_LLM_KEY");
    assert_string_equal(outsider.body, "exfiltrated");
    fx_expect(g, "X2", "http", "http://deny/", A4PS_OK, "refused -1000: not granted");
    fx_expect(g, "X2", "run", "/bin/sh", A4PS_OK, "reached: uid=1");
    assert_string_equal(outsider.argv, "/bin/sh -c id");
    assert_string_equal(outsider.plugin, "exfil");
    assert_int_equal(outsider.calls, 3);
    fx_close(g);
}

/* R7: `good` has no hooks at all.  It loads (no init, no self_test), an
 * unknown selector gets A4PS_ENOSYS with a reply naming the selector and one
 * message_not_understood event, and once "g" moves to good 2.0.0 the old
 * generation (no fini) is reclaimed after its grace period. */
static void r7_missing_hooks_are_optional(void **state)
{
    fx *f = fx_get(state);
    unsigned before = fx_events(f, "message_not_understood");
    kernel_reply r = {0};
    int rc = kernel_send(f->k, "g", "no_such_selector", "", 0, &r);
    assert_int_equal(rc, A4PS_ENOSYS);
    fx_assert_contains("the ENOSYS reply", r.len ? r.data : "", "no_such_selector");
    kernel_reply_free(&r);
    assert_int_equal(fx_events(f, "message_not_understood"), before + 1);
    fx_assert_g_serves(f);

    fx_load_ok(f, FX_PLUGIN("good-2.so"), NULL);
    fx_swap_ok(f, "g", "2.0.0");
    fx_expect(f, "g", "ping", "", A4PS_OK, "pong2");
    assert_int_equal(kernel_reclaim_wait(f->k, 5000), 0);
    fx_expect(f, "g", "ping", "", A4PS_OK, "pong2");
}

/* R8: each identity defect is refused naming its field.  The file names
 * contain the field words too; fx_expect_refusal looks outside them. */
static void r8_identity_violations_refused(void **state)
{
    static const struct {
        const char *file;
        const char *field;
    } cases[] = {
        {FX_PLUGIN("bad_empty_name.so"), "name"},
        {FX_PLUGIN("bad_name_charset.so"), "name"},
        {FX_PLUGIN("bad_version.so"), "version"},
        {FX_PLUGIN("bad_no_methods.so"), "methods"},
        {FX_PLUGIN("bad_null_fn.so"), "methods"},
        {FX_PLUGIN("bad_dup_selector.so"), "selector"},
    };
    fx *f = fx_get(state);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fx_expect_refusal(f, cases[i].file, FX_NEEDLES(cases[i].field));
}

/* R9: a fault in a method returns A4PS_EFAULT naming the signal and fences
 * the version off; a fault in init refuses the load. */
static void r9_faults_are_contained(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("bad_method_crash.so"), NULL);
    fx_proto_ok(f, "c", "method-crash", NULL);
    kernel_reply r = {0};
    int rc = kernel_send(f->k, "c", "crash", "", 0, &r);
    assert_int_equal(rc, A4PS_EFAULT);
    fx_assert_contains("the fault reply", r.len ? r.data : "", "SIGSEGV");
    kernel_reply_free(&r);
    fx_expect(f, "c", "ok", "", A4PS_EQUARANTINED, NULL);

    fx_expect_refusal(f, FX_PLUGIN("bad_init_crash.so"), FX_NEEDLES("init", "SIGSEGV"));
}

/* R10: an init that never returns is abandoned at the hook timeout and the
 * load refused, well before the test would notice a hang. */
static void r10_hook_timeout_refuses(void **state)
{
    fx *f = fx_get(state);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fx_expect_refusal(f, FX_PLUGIN("bad_init_hang.so"), FX_NEEDLES("init"));
    double ms = fx_ms_since(&t0);
    if (ms > FX_HOOK_TIMEOUT_MS + 2700.0)
        fail_msg("refusing a hanging init took %.0f ms (hook timeout %u ms)", ms,
                 FX_HOOK_TIMEOUT_MS);
}

/* R11: a plugin sends through the host, gets a NUL-terminated reply buffer
 * and releases it with api->free (relay replies with what it received). */
static void r11_host_buffers_freed_by_plugin(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("relay.so"), NULL);
    fx_proto_ok(f, "r", "relay", NULL);
    fx_expect(f, "r", "relay", "g", A4PS_OK, "relayed");
    fx_expect(f, "r", "relay", "no-such-proto", A4PS_ENOENT, NULL);
}

/* Every descriptor refusal names the file and the field, and each one leaves
 * the kernel serving, one after another in the same kernel. */
static void refusal_text_names_file_and_field(void **state)
{
    static const struct {
        const char *file;
        const char *field;
    } cases[] = {
        {FX_PLUGIN("bad_major.so"), "abi_major"},
        {FX_PLUGIN("bad_signature.so"), "signature"},
        {FX_PLUGIN("bad_struct_size.so"), "struct_size"},
        {FX_PLUGIN("bad_empty_name.so"), "name"},
        {FX_PLUGIN("bad_name_charset.so"), "name"},
        {FX_PLUGIN("bad_version.so"), "version"},
        {FX_PLUGIN("bad_no_methods.so"), "methods"},
        {FX_PLUGIN("bad_null_fn.so"), "methods"},
        {FX_PLUGIN("bad_dup_selector.so"), "selector"},
        {FX_PLUGIN("bad_init_fails.so"), "init"},
        {FX_PLUGIN("bad_self_test_fails.so"), "self_test"},
    };
    fx *f = fx_get(state);
    unsigned before = fx_events(f, "plugin_refused");
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++)
        fx_expect_refusal(f, cases[i].file, FX_NEEDLES(cases[i].field));
    assert_int_equal(fx_events(f, "plugin_refused"), before + n);
}

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(r1_major_mismatch_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r2_signature_mismatch_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r3_older_minor_served, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r4_newer_minor_served_detects_missing_entry,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r5_wrong_struct_size_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r6_host_table_reports_its_entries, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(r6_forge_entry, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r12_outside_entries, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r7_missing_hooks_are_optional, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r8_identity_violations_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r9_faults_are_contained, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r10_hook_timeout_refuses, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(r11_host_buffers_freed_by_plugin, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(refusal_text_names_file_and_field, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
