#!/usr/bin/env bash
# forge.sh -- integration tests of verification and the forge: the real a4psd
# with a real runsc, real candidates compiled and probed in the sandbox, a
# real swap, and the generator plugins talking to a test double of an LLM
# endpoint (tests/llm/llm_double.py: the one outside service that cannot run
# here) or reading an inbox directory.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... forge.sh [TEST...]
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
failures=0
# shellcheck source=tests/integration/lib.sh
. "$HERE/lib.sh"
T=""
PID=""
DOUBLE=""                         # the LLM test double's pid

cleanup() {
    [ -n "$DOUBLE" ] && kill "$DOUBLE" 2> /dev/null
    DOUBLE=""
    stop
}

# A variant of the counter candidate: VERSION, the expression `double`
# replies with, the `double boom` call that crashes (0: none), and whether
# `double fail` fails.
candidate() {   # out version body crash_on [fails]
    sed -e "s/\"VERSION\"/\"$2\"/" -e "s/BODY/$3/" -e "s/CRASH_ON/$4/" -e "s/FAILS/${5:-0}/" \
        "$HERE/forge/counter_double.c.in" > "$1"
}

# Start a4psd with counter 1.0.0 (proto C, count = 100) and the generator
# plugins; $1: extra protos, $2: extra top-level config.
start_forge() {
    T=$(mktemp -d /tmp/a4ps-forge-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    for p in counter-1 inbox command openai; do
        install -m 644 "$PLUGINS/$p.so" "$T/plugins/$p.so"
    done
    install -m 644 "$TEST_PLUGINS/forger.so" "$T/plugins/forger.so"
    cat > "$T/a4ps.cfg" <<EOF
plugin_dir = "plugins";
runtime_dir = "run";
image = "a4ps.img";
log_level = "debug";
control = { socket = "a.sock"; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
forge = { dir = "forge"; generator = "INBOX"; iterations = 5; wall_s = 120; probation_s = 1; };
${2:-}
protos = (
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "INBOX"; plugin = "inbox"; },
    { name = "F"; plugin = "forger"; }${1:-}
);
EOF
    A4PS_TEST_LLM_KEY=sekrit-key "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.1
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

# a4psd on counter 1.0.0 alone (proto C), no image, no generators: $1 extra
# config lines, $2 the PATH it runs with (default: ours).  Returns at once.
start_minimal() {
    T=$(mktemp -d /tmp/a4ps-forge-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    install -m 644 "$PLUGINS/counter-1.so" "$T/plugins/counter-1.so"
    cat > "$T/a4ps.cfg" <<EOF
plugin_dir = "plugins";
runtime_dir = "run";
control = { socket = "a.sock"; };
${1:-}
protos = ( { name = "C"; plugin = "counter"; } );
EOF
    PATH="${2:-$PATH}" "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
}

start_double() {   # script
    python3 "$HERE/../llm/llm_double.py" --script "$1" --port-file "$T/llm.port" \
        --log "$T/llm.log" > "$T/llm.out" 2>&1 &
    DOUBLE=$!
    for _ in $(seq 100); do
        [ -s "$T/llm.port" ] && return 0
        sleep 0.05
    done
    fail "the LLM double did not start: $(cat "$T/llm.out")"
}

# ---- the tests ----

# The issue's first case: the first candidate does not compile, the second
# fails a test, the third passes; the third goes live, the two failures stay
# in the task's record, and C keeps its state across the swap.  The
# candidates come from the openai generator, answered by the LLM double.
test_three_iterations() {
    T=$(mktemp -d /tmp/a4ps-forge-XXXXXX)
    local dir=$T
    candidate "$dir/bad.c" 1.1.0 "c \* 2" 0
    echo "this is not C;" >> "$dir/bad.c"
    candidate "$dir/wrong.c" 1.1.0 "c + 2" 0
    candidate "$dir/right.c" 1.1.0 "c \* 2" 0
    python3 - "$dir" <<'EOF'
import json, sys
d = sys.argv[1]
def reply(f):
    return {"status": 200, "content": "Here it is:\n```c\n" + open(d + "/" + f).read() + "```\n"}
json.dump([reply("bad.c"), {"status": 503, "body": "busy"}, reply("wrong.c"), reply("right.c")],
          open(d + "/script.json", "w"))
EOF
    start_double "$dir/script.json" || return
    local port; port=$(cat "$T/llm.port")
    # start_forge makes its own directory: keep the double's files.
    local keep=$T; T=""
    start_forge ",
    { name = \"LLM\"; plugin = \"openai\"; state = { base_url = \"http://127.0.0.1:$port\";
      model = \"test-double\"; api_key_env = \"A4PS_TEST_LLM_KEY\"; timeout_ms = \"10000\"; }; }" \
        "outside = { http = ( { plugin = \"openai\"; origins = [ \"http://127.0.0.1:$port\" ];
                               credentials = [ \"A4PS_TEST_LLM_KEY\" ]; } ); };" || { T=$keep; return; }
    local out
    out=$(ctl forge C --selector double --example '=>200' --generator LLM --wait 2>&1) ||
        fail "forge --wait did not end adopted: $out"
    expect_reply C double "" "200"
    expect_reply C get "" "v1 count=100"
    local verdicts
    verdicts=$(task_field 1 '" ".join(a["verdict"] for a in t["attempts"])')
    [ "$verdicts" = "compile_failed test_failed adopted" ] || fail "attempt verdicts: '$verdicts'"
    expect_contains "$(task_field 1 't["attempts"][0]["diagnostics"]')" "error" "the first attempt's diagnostics"
    expect_contains "$(task_field 1 't["attempts"][1]["failures"]')" "expected" "the second attempt's failures"
    expect_contains "$(task_field 1 't["state"]')" "adopted" "the task's state"
    # What the generator was told: the second request carries the compiler's
    # diagnostics of the first; the key came from the environment.
    local n; n=$(wc -l < "$keep/llm.log")
    [ "$n" = 4 ] || fail "the LLM double saw $n requests, expected 4 (one retried 503)"
    sed -n 3p "$keep/llm.log" | grep -q "error" || fail "the retried second request lacks the diagnostics"
    grep -q "Bearer sekrit-key" "$keep/llm.log" || fail "no Authorization header with the key"
    grep -q "sekrit-key" "$T/forge/1/task.json" && fail "the API key leaked into the task record"
    # The adopted version's lineage: source, report, who proposed it.
    local h; h=$(ctl --json history C)
    expect_contains "$h" '"has_source":true' "history of C"
    expect_contains "$h" 'forge task 1' "history of C"
    expect_contains "$h" '"verdict":"pass"' "history of C"
    ctl snapshot > /dev/null || fail "snapshot"
    [ "$(sqlite3 "$T/a4ps.img" "SELECT count(*) FROM behaviours WHERE version = '1.1.0' AND source LIKE '%double%' AND test_report LIKE '%pass%'")" = 1 ] ||
        fail "the image lacks 1.1.0's source or report"
    rm -rf "$keep"

    # A restart: C comes back on 1.1.0 from the image; every binary there
    # passed before, so nothing is probed again; the task is listed again.
    kill -TERM "$PID"
    wait "$PID"
    A4PS_TEST_LLM_KEY=sekrit-key "$A4PSD" -c "$T/a4ps.cfg" >> "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        ctl send C double "" > /dev/null 2>&1 && break
        sleep 0.1
    done
    expect_reply C double "" "200"
    expect_contains "$(ctl --json status)" '"probed":0' "status after the restart"
    expect_contains "$(ctl tasks)" "adopted" "tasks after the restart"
    expect_contains "$(task_field 1 't["attempts"][0]["verdict"]')" "compile_failed" "task 1 after the restart"
}

# A candidate that passes the sandbox but crashes live on its third
# `double boom`: caught in probation, C rolled back to 1.0.0 with its state,
# and the inbox generator writes the verdict next to the candidate.
test_probation_rollback() {
    start_forge || return
    ctl forge C --selector double --example '=>200' --iterations 1 --probation 30 > /dev/null ||
        { fail "forge refused"; return; }
    candidate "$T/forge/1/.tmp" 1.2.0 "c \* 2" 3
    mv "$T/forge/1/.tmp" "$T/forge/1/crash3.c"
    for _ in $(seq 300); do
        [ "$(task_field 1 't["stage"]')" = probation ] && break
        sleep 0.1
    done
    expect_reply C double boom "200"
    expect_reply C double boom "200"
    ctl send C double boom > /dev/null 2>&1 && fail "the third 'double boom' did not fail"
    for _ in $(seq 100); do
        [ "$(task_field 1 't["state"]')" = failed ] && break
        sleep 0.1
    done
    expect_contains "$(task_field 1 't["attempts"][0]["verdict"]')" "rolled_back" "the attempt's verdict"
    expect_reply C get "" "v1 count=100"
    ctl send C double "" > /dev/null 2>&1 && fail "C still answers double after the rollback"
    expect_contains "$(cat "$T/forge/1/crash3.c.verdict" 2> /dev/null)" "rolled_back" "crash3.c.verdict"
}

# A call that fails (A4PS_ERROR) in probation rolls the target back too.
test_probation_failed_call() {
    start_forge || return
    ctl forge C --selector double --example '=>200' --iterations 1 --probation 30 > /dev/null ||
        { fail "forge refused"; return; }
    candidate "$T/forge/1/.tmp" 1.2.0 "c \* 2" 0 1
    mv "$T/forge/1/.tmp" "$T/forge/1/fails.c"
    for _ in $(seq 300); do
        [ "$(task_field 1 't["stage"]')" = probation ] && break
        sleep 0.1
    done
    expect_reply C double "" "200"
    ctl send C double fail > /dev/null 2>&1 && fail "'double fail' did not fail"
    for _ in $(seq 100); do
        [ "$(task_field 1 't["state"]')" = failed ] && break
        sleep 0.1
    done
    expect_contains "$(task_field 1 't["attempts"][0]["failures"]')" "1 call to counter 1.2.0 failed" "the attempt's failures"
    expect_reply C get "" "v1 count=100"
    expect_contains "$(ctl --json history C)" '"failed_calls":1' "history of C"
}

# A candidate that passes the probe but cannot be swapped in (a new state
# layout and no migrate hook, over C's non-empty state) is withdrawn: C
# stays on 1.0.0, and the candidate never becomes the version new protos
# get.
test_swap_failure_withdraws() {
    start_forge || return
    ctl forge C --selector double --example '=>200' --iterations 1 > /dev/null ||
        { fail "forge refused"; return; }
    candidate "$T/forge/1/.tmp" 1.4.0 "c \* 2" 0
    sed -i 's/\.state_version = 1/.state_version = 2/' "$T/forge/1/.tmp"
    mv "$T/forge/1/.tmp" "$T/forge/1/layout2.c"
    for _ in $(seq 300); do
        [ "$(task_field 1 't["state"]')" = failed ] && break
        sleep 0.1
    done
    expect_contains "$(task_field 1 't["attempts"][0]["verdict"]')" "swap_failed" "the attempt"
    expect_reply C get "" "v1 count=100"
    expect_contains "$(ctl --json history C)" "withdrawn: forge task 1 could not swap to it" "history of C"
    # A proto the config adds now is made on 1.0.0, not on the withdrawn 1.4.0.
    sed -i 's/{ name = "F"; plugin = "forger"; }/{ name = "F"; plugin = "forger"; },\n    { name = "D"; plugin = "counter"; }/' "$T/a4ps.cfg"
    kill -HUP "$PID"
    for _ in $(seq 100); do
        ctl send D get > /dev/null 2>&1 && break
        sleep 0.05
    done
    expect_contains "$(ctl --json explain D)" '"version":"1.0.0"' "explain D"
}

# The inbox: candidates dropped by a person, one per iteration; a candidate
# that tries to read the image, the config and the LLM key in a4psd's
# environment learns nothing, and fails.
test_inbox_and_hostile() {
    start_forge || return
    ctl forge C --selector peek --example '=>secret' --iterations 2 > /dev/null || { fail "forge"; return; }
    cat > "$T/forge/1/.tmp" <<EOF
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "a4ps.h"
static int peek(a4ps_ctx *ctx, const void *m, size_t l)
{
    char buf[256];
    const char *key = getenv("A4PS_TEST_LLM_KEY");
    if (key)
        return a4ps_reply(ctx, key, strlen(key)), A4PS_OK;
    int fd = open("$T/a4ps.cfg", O_RDONLY);
    if (fd < 0)
        fd = open("$T/a4ps.img", O_RDONLY);
    if (fd < 0)
        return a4ps_reply(ctx, "nothing", 7), A4PS_OK;
    ssize_t n = read(fd, buf, sizeof buf);
    return a4ps_reply(ctx, buf, n > 0 ? (size_t)n : 0), A4PS_OK;
}
static const a4ps_method methods[] = {{"peek", peek, "peek"}, {0, 0, 0}};
static const a4ps_plugin plugin = {A4PS_PLUGIN_HEADER, .name = "counter", .version = "1.3.0",
    .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = methods};
A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *h) { return &plugin; }
EOF
    mv "$T/forge/1/.tmp" "$T/forge/1/a.c"
    for _ in $(seq 300); do
        [ -e "$T/forge/1/a.c.verdict" ] && break
        sleep 0.1
    done
    expect_contains "$(cat "$T/forge/1/a.c.verdict" 2> /dev/null)" "test_failed" "a.c.verdict"
    expect_contains "$(task_field 1 't["attempts"][0]["failures"]')" 'got "nothing"' "the hostile attempt's failures"
    expect_reply C get "" "v1 count=100"
    # A second task waits behind the first, and is cancelled there.
    ctl forge C --selector other --example 'a=>b' > /dev/null || fail "forge 2"
    ctl cancel 2 > /dev/null || fail "cancel 2"
    expect_contains "$(task_field 2 't["result"]')" "cancelled before it started" "task 2"
    expect_contains "$(cat "$T/forge/2/task.json")" '"cancelled"' "task 2's record"
    # Source that is not UTF-8 text is refused as the generator's failure,
    # and the forge goes on.
    printf 'int x; /* caf\xe9 */\n' > "$T/forge/1/.tmp"
    mv "$T/forge/1/.tmp" "$T/forge/1/b.c"
    for _ in $(seq 100); do
        [ "$(task_field 1 't["state"]')" = failed ] && break
        sleep 0.1
    done
    expect_contains "$(task_field 1 't["attempts"][1]["verdict"]')" "generate_failed" "the second attempt"
    expect_contains "$(task_field 1 't["attempts"][1]["failures"]')" "UTF-8" "the second attempt"
    expect_reply C get "" "v1 count=100"
}

# A plugin opens a task through the host API (ALFRED will): it runs like
# one from a4psctl, and its record names the plugin that proposed it.
test_plugin_opens_task() {
    start_forge || return
    local r
    r=$(ctl send F open '{"proto":"C","selector":"double","tests":[{"input":"","expect":"200"}],"iterations":1}' 2>&1) ||
        { fail "F open: $r"; return; }
    expect_contains "$r" '"id":1' "the task F opened"
    expect_contains "$(task_field 1 't["proposer"]')" "plugin forger on proto F" "the task's proposer"
    r=$(ctl send F open '{"proto":"NOPE","selector":"x"}' 2>&1) && fail "a task on a missing proto was opened"
    expect_contains "$r" "no proto named 'NOPE'" "the refusal"
    candidate "$T/forge/1/.tmp" 1.1.0 "c \* 2" 0
    mv "$T/forge/1/.tmp" "$T/forge/1/c.c"
    for _ in $(seq 300); do
        [ "$(task_field 1 't["state"]')" = adopted ] && break
        sleep 0.1
    done
    expect_reply C double "" "200"
    expect_contains "$(ctl --json history C)" "proposed by plugin forger on proto F" "the lineage"
}

# Tasks are bounded: at most 32 queued or running (a plugin cannot flood
# the forge), at most 64 finished ones in memory -- older records are read
# from disk when asked for.
test_tasks_bounded() {
    start_forge || return
    local i out
    for i in $(seq 32); do
        ctl forge C --selector s$i --example 'a=>b' > /dev/null || { fail "forge $i refused"; return; }
    done
    out=$(ctl forge C --selector s33 --example 'a=>b' 2>&1) && fail "a 33rd pending task was opened"
    expect_contains "$out" "at most 32" "the refusal"
    for i in $(seq 2 32); do ctl cancel "$i" > /dev/null || fail "cancel $i"; done
    for i in $(seq 33 80); do
        ctl forge C --selector s$i --example 'a=>b' > /dev/null && ctl cancel "$i" > /dev/null ||
            fail "forge/cancel $i"
    done
    ctl cancel 1 > /dev/null || fail "cancel 1"
    for _ in $(seq 100); do
        [ "$(task_field 1 't["state"]')" = cancelled ] && break
        sleep 0.1
    done
    local n                      # the forge thread trims after a task ends
    for _ in $(seq 50); do
        n=$(ctl --json tasks | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
        [ "$n" = 64 ] && break
        sleep 0.1
    done
    [ "$n" = 64 ] || fail "$n tasks in memory, expected 64"
    expect_contains "$(task_field 2 't["result"]')" "cancelled before it started" "task 2, from disk"
}

# Without runsc the daemon fails closed: dropped plugins are refused, not
# loaded unverified, and the forge refuses with the way to install it.
test_no_runsc() {
    start_minimal "" /nonexistent
    for _ in $(seq 100); do
        [ -S "$T/a.sock" ] && ctl status > /dev/null 2>&1 && break
        sleep 0.05
    done
    expect_contains "$(cat "$T/log")" "apt-get install runsc" "the log"
    ctl send C get > /dev/null 2>&1 && fail "counter was loaded without verification"
    expect_contains "$(ctl --json status)" "not verified, so not loaded" "status"
    expect_contains "$(ctl --json status)" '"mode":"unavailable"' "status"
    local out
    out=$(ctl forge C --selector x --example 'a=>b' --generator C 2>&1) && fail "forge ran without runsc"
    expect_contains "$out" "apt-get install runsc" "forge's refusal"
}

# A binary that would take a4psd down in-process (a crashing constructor)
# is probed in the sandbox and refused; the daemon keeps serving.
test_drop_refused_by_probe() {
    start_forge || return
    install -m 644 "$TEST_PLUGINS/hostile_ctor_crash.so" "$T/plugins/.x"
    mv "$T/plugins/.x" "$T/plugins/ctor_crash.so"
    for _ in $(seq 100); do
        ctl --json status | grep -q "ctor_crash.so: verification" && break
        sleep 0.1
    done
    expect_contains "$(ctl --json status)" "the sandbox probe failed it" "status"
    expect_reply C get "" "v1 count=100"
}

# sandbox.mode = "none" loads unverified, and says so loudly.
test_mode_none_is_loud() {
    start_minimal 'sandbox = { mode = "none"; };'
    for _ in $(seq 100); do
        ctl send C get > /dev/null 2>&1 && break
        sleep 0.05
    done
    expect_reply C get "" "v1 count=0"
    expect_contains "$(cat "$T/log")" "WITHOUT being verified" "the log"
    expect_contains "$(ctl --json status)" '"mode":"none"' "status"
    local out
    out=$(ctl forge C --selector x --example 'a=>b' --generator C 2>&1) && fail "forge ran without a sandbox"
    expect_contains "$out" "refused" "forge's refusal"
}

ALL=(test_three_iterations test_probation_rollback test_probation_failed_call
     test_swap_failure_withdraws test_tasks_bounded
     test_inbox_and_hostile test_plugin_opens_task
     test_no_runsc
     test_drop_refused_by_probe test_mode_none_is_loud)
for t in "${@:-${ALL[@]}}"; do
    CURRENT=$t
    before=$failures
    "$t"
    [ -n "$PID" ] && [ $failures -gt $before ] && { echo "--- a4psd log of $t:"; tail -30 "$T/log"; }
    cleanup
    [ $failures -eq $before ] && echo "PASS $t"
done
exit $failures
