/* test_proto.c -- the ProtoManager and the event bus: doesNotUnderstand,
 * explain, clone isolation, handles, nested sends, event delivery in order
 * and counted drops. */
#include "plugin_fixture.h"

#include <jansson.h>
#include <unistd.h>

#define SW(v) FX_PLUGIN("sw-" v ".so")

static int teardown(void **state)
{
    fx_close(*state);
    return 0;
}

static char *send_text(fx *f, const char *proto, const char *sel, const char *msg, int *rc)
{
    kernel_reply r = {0};
    *rc = kernel_send(f->k, proto, sel, msg, strlen(msg), &r);
    char *t = strdup(r.len ? r.data : "");
    kernel_reply_free(&r);
    return t;
}

/* Without a hook: a clear error naming proto, plugin and selector, and a
 * message_not_understood event that an observer receives. */
static void not_understood_without_hook(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, SW("1"), NULL);
    fx_load_ok(f, FX_PLUGIN("observer.so"), NULL);
    fx_proto_ok(f, "s", "sw", NULL);
    fx_proto_ok(f, "obs", "observer", NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_subscribe(f->k, "message_not_understood", "obs", "on_event",
                                      err, sizeof err), 0);
    int rc;
    char *t = send_text(f, "s", "fly", "", &rc);
    assert_int_equal(rc, A4PS_ENOSYS);
    fx_assert_contains("reply", t, "proto 's' (plugin sw 1.0.0) does not understand 'fly'");
    free(t);
    kernel_events_flush(f->k);
    t = send_text(f, "obs", "log", "", &rc);
    fx_assert_contains("observer log", t, "\"event\":\"message_not_understood\"");
    fx_assert_contains("observer log", t, "\"selector\":\"fly\"");
    free(t);
    /* The same through a pre-resolved handle to a selector no one has. */
    kernel_handle *h;
    assert_int_equal(kernel_resolve(f->k, "s", "swim", &h), 0);
    kernel_reply r = {0};
    assert_int_equal(kernel_send_handle(h, "", 0, &r), A4PS_ENOSYS);
    fx_assert_contains("reply", r.data, "does not understand 'swim'");
    kernel_reply_free(&r);
    kernel_handle_release(h);
}

/* With a hook: the behaviour's own does_not_understand answers what it
 * wants and declines the rest. */
static void not_understood_with_hook(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, FX_PLUGIN("observer.so"), NULL);
    fx_proto_ok(f, "obs", "observer", NULL);
    fx_expect(f, "obs", "dyn_weather", "", A4PS_OK, "handled dyn_weather");
    int rc;
    char *t = send_text(f, "obs", "other", "", &rc);
    assert_int_equal(rc, A4PS_ENOSYS);
    fx_assert_contains("reply", t, "does not understand 'other'");
    free(t);
    assert_int_equal(fx_events(f, "message_not_understood"), 1);
}

static void explain_describes_proto(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    kernel_version_info v1, v2;
    fx_load_ok(f, SW("1"), &v1);
    fx_load_ok(f, SW("2"), &v2);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_proto_create(f->k, "s", "sw", "1.0.0",
                                         "{\"role\":\"subject\"}", err, sizeof err), 0);
    fx_proto_ok(f, "other", "sw", NULL);
    assert_int_equal(kernel_proto_depend(f->k, "s", "other", err, sizeof err), 0);
    fx_expect(f, "s", "add", "", A4PS_OK, "v1 1");
    fx_swap_ok(f, "s", "2.0.0");

    char *e = kernel_explain(f->k, "s");
    assert_non_null(e);
    json_error_t je;
    json_t *j = json_loads(e, 0, &je);
    if (!j)
        fail_msg("explain is not JSON: %s: %s", je.text, e);
    assert_string_equal(json_string_value(json_object_get(j, "proto")), "s");
    json_t *pl = json_object_get(j, "plugin");
    assert_string_equal(json_string_value(json_object_get(pl, "name")), "sw");
    assert_string_equal(json_string_value(json_object_get(pl, "version")), "2.0.0");
    assert_string_equal(json_string_value(json_object_get(pl, "sha256")), v2.sha256);
    assert_string_equal(json_string_value(json_object_get(pl, "description")),
                        "the swap tests' subject");
    /* The lineage: 2.0.0 was loaded while 1.0.0 was the newest. */
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "parent"),
                                                          "version")), "1.0.0");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "previous"),
                                                          "sha256")), v1.sha256);
    json_t *m = json_object_get(j, "methods");
    assert_int_equal(json_array_size(m), 5);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "selector")),
                        "id");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "doc")),
                        "reply TAG::TAG, written in two halves");
    json_t *st = json_object_get(j, "state");
    assert_int_equal(json_array_size(st), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(st, 0), "key")), "n");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(st, 0), "bytes")), 1);
    json_t *deps = json_object_get(j, "dependencies");
    assert_string_equal(json_string_value(json_array_get(json_object_get(deps, "protos"), 0)),
                        "other");
    assert_string_equal(json_string_value(json_array_get(json_object_get(deps, "plugins"), 0)),
                        "good");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "persona"),
                                                          "role")), "subject");
    json_decref(j);
    free(e);
    assert_null(kernel_explain(f->k, "nobody"));
}

/* A clone has its own identity and state; nothing done to it reaches the
 * original (state, swaps, destruction). */
static void clone_is_isolated(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, SW("1"), NULL);
    fx_load_ok(f, SW("2"), NULL);
    fx_proto_ok(f, "orig", "sw", "1.0.0");
    fx_expect(f, "orig", "add", "", A4PS_OK, "v1 1");
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_proto_clone(f->k, "orig", "copy", err, sizeof err), 0);
    assert_int_equal(kernel_proto_clone(f->k, "orig", "copy", err, sizeof err), A4PS_EEXIST);
    fx_expect(f, "copy", "get", "", A4PS_OK, "v1 1");
    fx_expect(f, "copy", "add", "", A4PS_OK, "v1 2");
    fx_expect(f, "copy", "add", "", A4PS_OK, "v1 3");
    fx_expect(f, "orig", "get", "", A4PS_OK, "v1 1");
    fx_swap_ok(f, "copy", "2.0.0");
    fx_expect(f, "copy", "id", "", A4PS_OK, "v2::v2");
    fx_expect(f, "orig", "id", "", A4PS_OK, "v1::v1");
    fx_expect(f, "orig", "add", "", A4PS_OK, "v1 2");
    fx_expect(f, "copy", "get", "", A4PS_OK, "v2 3");
    char *e = kernel_explain(f->k, "copy");
    fx_assert_contains("explain", e, "\"cloned_from\":\"orig\"");
    free(e);
    assert_int_equal(kernel_proto_destroy(f->k, "copy", err, sizeof err), 0);
    fx_expect(f, "orig", "get", "", A4PS_OK, "v1 2");
}

/* A handle outlives its proto: calls get a clear error, never a crash. */
static void handle_survives_destroy(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, SW("1"), NULL);
    fx_proto_ok(f, "s", "sw", NULL);
    kernel_handle *h;
    assert_int_equal(kernel_resolve(f->k, "s", "id", &h), 0);
    kernel_reply r = {0};
    assert_int_equal(kernel_send_handle(h, "", 0, &r), A4PS_OK);
    assert_string_equal(r.data, "v1::v1");
    char err[KERNEL_ERRLEN];
    assert_int_equal(kernel_proto_destroy(f->k, "s", err, sizeof err), 0);
    assert_int_equal(kernel_reclaim_wait(f->k, 5000), 0);
    assert_int_equal(kernel_send_handle(h, "", 0, &r), A4PS_ENOENT);
    fx_assert_contains("reply", r.data, "proto 's' was destroyed");
    kernel_reply_free(&r);
    kernel_handle_release(h);
    assert_int_equal(kernel_resolve(f->k, "s", "id", &h), A4PS_ENOENT);
}

/* A plugin sends to another proto through the host; a send to a missing
 * proto comes back as an error, not a crash. */
static void nested_send(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, FX_PLUGIN("good.so"), NULL);
    fx_load_ok(f, FX_PLUGIN("relay.so"), NULL);
    fx_proto_ok(f, "g", "good", NULL);
    fx_proto_ok(f, "r", "relay", NULL);
    fx_expect(f, "r", "relay", "g", A4PS_OK, "relayed");
    fx_expect(f, "r", "relay", "ghost", A4PS_ENOENT, NULL);
}

/* Events reach observers in publish order. */
static void events_delivered_in_order(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, FX_PLUGIN("observer.so"), NULL);
    fx_proto_ok(f, "obs", "observer", NULL);
    fx_proto_ok(f, "src", "observer", NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_subscribe(f->k, "custom", "obs", "on_event", err, sizeof err), 0);
    assert_int_equal(kernel_subscribe(f->k, "custom", "obs", "on_event", err, sizeof err),
                     A4PS_EEXIST);
    for (int i = 0; i < 100; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "%d", i);
        fx_expect(f, "src", "emit", msg, A4PS_OK, NULL);
    }
    kernel_events_flush(f->k);
    fx_expect(f, "obs", "count", "", A4PS_OK, "100");
    int rc;
    char *log = send_text(f, "obs", "log", "", &rc);
    char *p = log;
    for (int i = 0; i < 100; i++) {
        char want[48];
        snprintf(want, sizeof want, "\"proto\":\"src\",\"plugin\":\"observer\"");
        char *line = strchr(p, '\n');
        assert_non_null(line);
        *line = 0;
        fx_assert_contains("event", p, want);
        char data[32];
        snprintf(data, sizeof data, "\"data\":%d}", i);
        fx_assert_contains("event order", p, data);
        p = line + 1;
    }
    free(log);
    assert_int_equal(kernel_unsubscribe(f->k, "custom", "obs", "on_event"), 0);
    fx_expect(f, "src", "emit", "1", A4PS_OK, NULL);
    kernel_events_flush(f->k);
    fx_expect(f, "obs", "count", "", A4PS_OK, "100");
}

static void tune_small_queue(kernel_config *cfg)
{
    cfg->event_queue_len = 4;
}

/* A slow observer and a bounded queue: publishers never block, what does not
 * fit is dropped and counted, and what was accepted is delivered. */
static void event_drops_are_counted(void **state)
{
    fx *f = fx_open(tune_small_queue);
    *state = f;
    fx_load_ok(f, FX_PLUGIN("observer.so"), NULL);
    fx_proto_ok(f, "obs", "observer", NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_subscribe(f->k, "burst", "obs", "on_event_slow", err, sizeof err), 0);
    kernel_events_flush(f->k);
    char *st0 = kernel_status(f->k);
    json_t *j0 = json_loads(st0, 0, NULL);
    long pub0 = (long)json_integer_value(json_object_get(json_object_get(j0, "events"), "published"));
    json_decref(j0);
    free(st0);
    int accepted = 0, dropped = 0;
    for (int i = 0; i < 40; i++) {
        int rc = kernel_emit(f->k, "burst", "{}");
        if (rc == A4PS_OK)
            accepted++;
        else if (rc == A4PS_EBUSY)
            dropped++;
        else
            fail_msg("kernel_emit returned %d", rc);
    }
    assert_true(dropped > 0);
    kernel_events_flush(f->k);
    char want[16];
    snprintf(want, sizeof want, "%d", accepted);
    fx_expect(f, "obs", "count", "", A4PS_OK, want);
    char *st = kernel_status(f->k);
    json_t *j = json_loads(st, 0, NULL);
    json_t *ev = json_object_get(j, "events");
    assert_int_equal(json_integer_value(json_object_get(ev, "dropped")), dropped);
    assert_int_equal(json_integer_value(json_object_get(ev, "published")) - pub0, accepted);
    json_decref(j);
    free(st);
}

static void bad_names_refused(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    fx_load_ok(f, SW("1"), NULL);
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_proto_create(f->k, "bad name", "sw", NULL, NULL, err, sizeof err),
                     A4PS_EINVAL);
    fx_assert_contains("error", err, "proto 'bad name': name must match");
    assert_int_equal(kernel_proto_create(f->k, "p", "nosuch", NULL, NULL, err, sizeof err),
                     A4PS_ENOENT);
    fx_assert_contains("error", err, "plugin 'nosuch' is not loaded");
    assert_int_equal(kernel_proto_create(f->k, "p", "sw", NULL, "{not json", err, sizeof err),
                     A4PS_EINVAL);
    fx_assert_contains("error", err, "persona: not JSON (line 1");
    assert_int_equal(kernel_subscribe(f->k, "Bad Event", "p", "x", err, sizeof err), A4PS_EINVAL);
    fx_assert_contains("error", err, "subscribe: event 'Bad Event'");
    assert_int_equal(kernel_emit(f->k, "ok", "{broken"), A4PS_EINVAL);
}

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(not_understood_without_hook, teardown),
        cmocka_unit_test_teardown(not_understood_with_hook, teardown),
        cmocka_unit_test_teardown(explain_describes_proto, teardown),
        cmocka_unit_test_teardown(clone_is_isolated, teardown),
        cmocka_unit_test_teardown(handle_survives_destroy, teardown),
        cmocka_unit_test_teardown(nested_send, teardown),
        cmocka_unit_test_teardown(events_delivered_in_order, teardown),
        cmocka_unit_test_teardown(event_drops_are_counted, teardown),
        cmocka_unit_test_teardown(bad_names_refused, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
