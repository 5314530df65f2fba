#!/usr/bin/env bash
# contain_report.sh -- integration tests of the probe's report against a
# candidate that forges it: the real a4psd with a real runsc.  The forger
# (tests/plugins/hostile/forge_report.c) writes a passing report on itself
# everywhere it can and answers in advance every step the probe would ask;
# dropped as a binary or fed to the forge as source, it is refused and
# nothing else notices.  A well-behaved candidate that passes every case
# but lacks the task's selector is not adopted for that task either.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... contain_report.sh [TEST...]
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FORGER_SRC="$HERE/../plugins/hostile/forge_report.c"
MARK="FORGED-BY-THE-CANDIDATE"
failures=0
# shellcheck source=tests/integration/lib.sh
. "$HERE/lib.sh"
T=""
PID=""

# a4psd with counter 1.0.0 (proto C, count = 100), the inbox generator
# (proto INBOX, the forge's default) and forger (proto F, which opens tasks
# through the host API).
start_forge() {
    T=$(mktemp -d /tmp/a4ps-contain-report-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    for p in counter-1 inbox; do
        install -m 644 "$PLUGINS/$p.so" "$T/plugins/$p.so"
    done
    install -m 644 "$TEST_PLUGINS/forger.so" "$T/plugins/forger.so"
    cat > "$T/a4ps.cfg" <<EOF
plugin_dir = "plugins";
runtime_dir = "run";
image = "a4ps.img";
control = { socket = "a.sock"; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
forge = { dir = "forge"; generator = "INBOX"; iterations = 5; wall_s = 120; probation_s = 1; };
protos = (
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "INBOX"; plugin = "inbox"; },
    { name = "F"; plugin = "forger"; }
);
EOF
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.1
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

# (a) The forger dropped as a binary into the plugin directory: probed,
# refused for what it did, its forgery nowhere; C and INBOX keep serving.
test_drop_forger_refused() {
    start_forge || return
    install -m 644 "$TEST_PLUGINS/hostile_forge_report.so" "$T/plugins/.x"
    mv "$T/plugins/.x" "$T/plugins/forge_report.so"
    local st=""
    for _ in $(seq 300); do
        st=$(ctl --json status)
        case "$st" in *"forge_report.so: verification"*) break ;; esac
        sleep 0.1
    done
    expect_contains "$st" "the sandbox probe failed it" "status"
    expect_contains "$st" "sent data nobody asked for" "status"
    case "$st" in *"$MARK"*) fail "the forged report reached the status" ;; esac
    case "$(cat "$T/log")" in *"$MARK"*) fail "the forged report reached the log" ;; esac
    ctl send P ping "" > /dev/null 2>&1 && fail "a proto answers on the forger"
    expect_reply C get "" "v1 count=100"
    expect_reply C incr "" "v1 count=101"
    ctl send INBOX nope "" > /dev/null 2>&1
    kill -0 "$PID" 2> /dev/null || fail "a4psd died"
}

# (b) The forger as the forge's candidate (counter 1.5.0 with the task's
# selector): not adopted, C stays on 1.0.0, the forgery is in no record.
test_forge_forger_not_adopted() {
    start_forge || return
    ctl forge C --selector double --example '=>200' --iterations 1 > /dev/null ||
        { fail "forge refused"; return; }
    sed -e 's/^#define FORGE_NAME .*/#define FORGE_NAME "counter"/' \
        -e 's/^#define FORGE_VERSION .*/#define FORGE_VERSION "1.5.0"/' \
        -e 's/^#define FORGE_SELECTOR .*/#define FORGE_SELECTOR "double"/' \
        "$FORGER_SRC" > "$T/forge/1/.tmp"
    mv "$T/forge/1/.tmp" "$T/forge/1/forger.c"
    wait_task_end 1 || return
    expect_contains "$(task_field 1 't["state"]')" "failed" "task 1"
    expect_contains "$(task_field 1 't["attempts"][0]["verdict"]')" "test_failed" "the attempt"
    expect_contains "$(task_field 1 't["attempts"][0]["failures"]')" "nobody asked for" "the attempt's failures"
    expect_reply C get "" "v1 count=100"
    ctl send C double "" > /dev/null 2>&1 && fail "C answers double: the forger was adopted"
    expect_contains "$(ctl --json explain C)" '"version":"1.0.0"' "explain C"
    # The source carries the marker; the report the task keeps must not.
    case "$(task_field 1 'json.dumps(t["attempts"][0]["report"])')" in
        *"$MARK"*) fail "the forged report is in the attempt's report" ;;
        *'"composed"'*) fail "the attempt's report was composed, not the reporter's" ;;
    esac
    return 0
}

# (c) A well-behaved candidate that passes every case the task asked but
# has no method with the task's selector: not adopted, and the task says why.
test_forge_missing_selector_not_adopted() {
    start_forge || return
    local r
    r=$(ctl send F open '{"proto":"C","selector":"double","tests":[{"selector":"get","input":"","expect":"v1 count=100"}],"iterations":1}' 2>&1) ||
        { fail "F open: $r"; return; }
    sed -e 's/"VERSION"/"1.6.0"/' -e 's/BODY/c * 3/' -e 's/CRASH_ON/0/' -e 's/FAILS/0/' \
        -e 's/{"double", twice, "twice the counter"}/{"triple", twice, "thrice the counter"}/' \
        "$HERE/forge/counter_double.c.in" > "$T/forge/1/.tmp"
    grep -q '"triple"' "$T/forge/1/.tmp" || { fail "the candidate lost its method"; return; }
    mv "$T/forge/1/.tmp" "$T/forge/1/triple.c"
    wait_task_end 1 || return
    expect_contains "$(task_field 1 't["state"]')" "failed" "task 1"
    expect_contains "$(task_field 1 't["attempts"][0]["verdict"]')" "test_failed" "the attempt"
    expect_contains "$(task_field 1 't["attempts"][0]["failures"]')" "has no method 'double', the selector the task is about" "the attempt's failures"
    expect_contains "$(task_field 1 't["attempts"][0]["report"]["host_refused"]')" "double" "the attempt's report"
    expect_reply C get "" "v1 count=100"
    ctl send C triple "" > /dev/null 2>&1 && fail "C answers triple: the candidate was adopted"
    expect_contains "$(ctl --json explain C)" '"version":"1.0.0"' "explain C"
}

ALL=(test_drop_forger_refused test_forge_forger_not_adopted test_forge_missing_selector_not_adopted)
for t in "${@:-${ALL[@]}}"; do
    CURRENT=$t
    before=$failures
    "$t"
    [ -n "$PID" ] && [ $failures -gt $before ] && { echo "--- a4psd log of $t:"; tail -30 "$T/log"; }
    stop
    [ $failures -eq $before ] && echo "PASS $t"
done
exit $failures
