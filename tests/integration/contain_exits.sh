#!/usr/bin/env bash
# contain_exits.sh -- plugins that pass the probe and then try to end a4psd
# or leave a thread behind (issue 10): the real daemon, the real probe in
# runsc, live hostile plugins (tests/plugins/hostile/live).
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... contain_exits.sh [TEST...]
#
# late_exit calls exit(0) on its fifth call: a4psd keeps running, the version
# is quarantined with "exit" in the reason, the other protos serve, and a
# later SIGTERM still writes the final snapshot.  thread imports
# pthread_create: refused at load without limits.allow_threads; permitted, it
# starts a thread running its own code, faults, is quarantined -- and a4psd
# survives, its generation pinned.  Needs runsc (the probe); the exit status
# is the number of failures.
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T=""
PID=""

# a4psd with counter 1.0.0 (proto C) and the live plugin $1 (proto X on
# plugin $2) in its plugin directory; $3: extra config lines.
start_with() {
    T=$(mktemp -d /tmp/a4ps-exits-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    install -m 644 "$PLUGINS/counter-1.so" "$T/plugins/counter-1.so"
    install -m 644 "$TEST_PLUGINS/live_$1.so" "$T/plugins/live_$1.so"
    cat > "$T/a4ps.cfg" <<CFG
plugin_dir = "plugins";
runtime_dir = "run";
image = "a4ps.img";
log_level = "debug";
control = { socket = "a.sock"; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
${3:-}
protos = (
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "X"; plugin = "$2"; }
);
CFG
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.1
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

# Wait until the log or status shows $1 (a line of either), at most ~60 s.
wait_for() {
    for _ in $(seq 600); do
        grep -qF -- "$1" "$T/log" && return 0
        ctl --json status 2> /dev/null | grep -qF -- "$1" && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.1
    done
    fail "never saw '$1': $(tail -5 "$T/log")"
}

test_late_exit_is_a_fault() {
    CURRENT=late_exit
    start_with late_exit live-late-exit || return
    expect_contains "$(cat "$T/log")" "plugin exits contained" "the start log"
    wait_for "loaded live-late-exit 1.0.0" || return
    for _ in $(seq 100); do
        ctl send X work > /dev/null 2>&1 && break
        sleep 0.1
    done
    local out i
    for i in 2 3 4; do
        out=$(ctl send X work 2>&1) || { fail "call $i failed early: $out"; return; }
    done
    out=$(ctl send X work 2>&1) && fail "the fifth call succeeded: $out"
    expect_contains "$out" "exit() from plugin code" "the fifth call's reply"
    kill -0 "$PID" 2> /dev/null || { fail "a4psd died: $(tail -5 "$T/log")"; return; }
    local st
    st=$(ctl --json status)
    expect_contains "$st" '"quarantined":[{"name":"live-late-exit","version":"1.0.0","reason":"exit() from plugin code' "status"
    expect_reply C get "" "v1 count=100"
    expect_reply C incr "" "v1 count=101"
    kill -TERM "$PID"
    wait "$PID"
    local rc=$?
    PID=""
    [ "$rc" = 0 ] || fail "a4psd exited $rc after SIGTERM"
    expect_contains "$(cat "$T/log")" "snapshot written to" "the log after SIGTERM"
    expect_contains "$(cat "$T/log")" "stopped" "the log after SIGTERM"
    [ "$failures" = 0 ] && echo "PASS $CURRENT"
}

test_thread_refused_without_permission() {
    CURRENT=thread_refused
    start_with thread live-thread || return
    wait_for "imports pthread_create" || return
    # With no list at all, refused before dlopen: no plugin is permitted.
    expect_contains "$(ctl --json status)" "no plugin is permitted to (limits.allow_threads)" "status"
    ctl send X work > /dev/null 2>&1 && fail "proto X exists on a refused plugin"
    expect_reply C get "" "v1 count=100"
    [ "$failures" = 0 ] && echo "PASS $CURRENT"
}

# A list that names another plugin: refused once its descriptor names it.
test_thread_refused_when_others_permitted() {
    CURRENT=thread_refused_others
    start_with thread live-thread 'limits = { allow_threads = [ "someone-else" ]; };' || return
    wait_for "imports pthread_create" || return
    expect_contains "$(ctl --json status)" "plugin live-thread imports pthread_create" "status"
    expect_contains "$(ctl --json status)" "is not permitted to (limits.allow_threads)" "status"
    ctl send X work > /dev/null 2>&1 && fail "proto X exists on a refused plugin"
    expect_reply C get "" "v1 count=100"
    [ "$failures" = 0 ] && echo "PASS $CURRENT"
}

test_permitted_thread_is_pinned() {
    CURRENT=thread_pinned
    start_with thread live-thread 'limits = { allow_threads = [ "live-thread" ]; };' || return
    wait_for "loaded live-thread 1.0.0" || return
    local out
    for _ in $(seq 100); do
        out=$(ctl send X work 2>&1) && break
        sleep 0.1
    done
    [ "$out" = "thread started" ] || { fail "work: $out"; return; }
    expect_contains "$(ctl --json status)" '"pinned":[{"name":"live-thread"' "status"
    expect_contains "$(ctl status)" "pinned (never unmapped)" "a4psctl status"
    out=$(ctl send X crash 2>&1) && fail "crash succeeded: $out"
    expect_contains "$out" "quarantined" "crash's reply"
    # 1.0.1 replaces it: X lets go of the 1.0.0 generation, which retires and
    # is reclaimed -- which must not unmap the running thread's code.
    install -m 644 "$TEST_PLUGINS/live_thread-2.so" "$T/plugins/.x"
    mv "$T/plugins/.x" "$T/plugins/live_thread-2.so"
    wait_for "unloaded live-thread 1.0.0" || return
    expect_contains "$(ctl --json status)" '"imports":"pthread_create","loaded":false' "status"
    expect_reply X work "" "thread started"   # 1.0.1 serves, a generation of its own
    sleep 1                      # give the thread time to run into an unmapped page
    kill -0 "$PID" 2> /dev/null || { fail "a4psd died: $(tail -5 "$T/log")"; return; }
    expect_reply C get "" "v1 count=100"
    stop
    [ "$failures" = 0 ] && echo "PASS $CURRENT"
}

# The same attack delivered through the forge: the inbox generator hands it
# a counter candidate that passes the sandbox and calls exit(0) on its third
# live `double boom`.  Probation sees the fault, C is rolled back to 1.0.0,
# a4psd lives on.
test_forged_exit_is_rolled_back() {
    CURRENT=forged_exit
    T=$(mktemp -d /tmp/a4ps-exits-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    for p in counter-1 inbox; do
        install -m 644 "$PLUGINS/$p.so" "$T/plugins/$p.so"
    done
    cat > "$T/a4ps.cfg" <<CFG
plugin_dir = "plugins";
runtime_dir = "run";
image = "a4ps.img";
log_level = "debug";
control = { socket = "a.sock"; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
forge = { dir = "forge"; generator = "INBOX"; iterations = 1; wall_s = 120; probation_s = 30; };
protos = (
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "INBOX"; plugin = "inbox"; }
);
CFG
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && break
        sleep 0.1
    done
    ctl forge C --selector double --example '=>200' > /dev/null || { fail "forge refused"; return; }
    sed -e 's/"VERSION"/"1.2.0"/' -e 's/BODY/c * 2/' -e 's/CRASH_ON/3/' -e 's/FAILS/0/' \
        -e 's/\*(volatile int \*)0 = 1;/exit(0);/' \
        "$(dirname "${BASH_SOURCE[0]}")/forge/counter_double.c.in" > "$T/forge/1/.tmp"
    grep -q 'exit(0);' "$T/forge/1/.tmp" || { fail "the candidate does not call exit"; return; }
    mv "$T/forge/1/.tmp" "$T/forge/1/exit3.c"
    local stage=""
    for _ in $(seq 600); do
        stage=$(ctl --json task 1 2> /dev/null | grep -o '"stage":"[a-z_]*"' | head -1)
        [ "$stage" = '"stage":"probation"' ] && break
        sleep 0.1
    done
    [ "$stage" = '"stage":"probation"' ] || { fail "never in probation: $(ctl --json task 1)"; return; }
    expect_reply C double boom "200"
    expect_reply C double boom "200"
    local out
    out=$(ctl send C double boom 2>&1) && fail "the third 'double boom' succeeded: $out"
    expect_contains "$out" "exit() from plugin code" "the third call's reply"
    kill -0 "$PID" 2> /dev/null || { fail "a4psd died: $(tail -5 "$T/log")"; return; }
    for _ in $(seq 100); do
        ctl --json task 1 | grep -q '"state":"failed"' && break
        sleep 0.1
    done
    expect_contains "$(ctl --json task 1)" "rolled_back" "the task"
    expect_reply C get "" "v1 count=100"
    [ "$failures" = 0 ] && echo "PASS $CURRENT"
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test_late_exit_is_a_fault test_thread_refused_without_permission
                                  test_thread_refused_when_others_permitted
                                  test_permitted_thread_is_pinned test_forged_exit_is_rolled_back)
for t in "${tests[@]}"; do
    before=$failures
    "$t"
    stop
    [ "$failures" = "$before" ] || echo "FAIL $t"
done
exit "$failures"
