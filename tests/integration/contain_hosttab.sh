#!/usr/bin/env bash
# contain_hosttab.sh -- what one live plugin can do to the others, in the real
# a4psd (issue 10): write the host table every plugin shares, or leak on
# every call.  The hostile plugins (tests/plugins/hostile/live) behave in the
# probe, so they pass verification in runsc, and attack once a4psd runs
# them; each is delivered by a drop into the plugin directory and through a
# forge task (its source as a candidate counter, via the INBOX generator).
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... contain_hosttab.sh [TEST...]
#
# Needs runsc (the probe); no root.  The leak test needs a4psd linked with
# jemalloc (not a sanitizer build: there it is skipped, saying so).
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIVE="$HERE/../plugins/hostile/live"
failures=0
# shellcheck source=tests/integration/lib.sh
. "$HERE/lib.sh"
T=""
PID=""

# a4psd with the personas, the counter (C) and the inbox generator (the
# forge's), and protos H and L waiting for the hostile plugins.
start() {
    T=$(mktemp -d /tmp/a4ps-hosttab-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    for p in brick robin babs alfred counter-1 inbox; do
        install -m 644 "$PLUGINS/$p.so" "$T/plugins/$p.so"
    done
    cat > "$T/a4ps.cfg" <<CFG
plugin_dir = "plugins";
runtime_dir = "run";
log_level = "debug";
control = { socket = "a.sock"; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
forge = { dir = "forge"; generator = "INBOX"; iterations = 1; wall_s = 120; probation_s = 30; };
protos = (
    { name = "BRICK"; plugin = "brick"; },
    { name = "ROBIN"; plugin = "robin"; },
    { name = "BABS"; plugin = "babs"; },
    { name = "ALFRED"; plugin = "alfred"; },
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "INBOX"; plugin = "inbox"; },
    { name = "H"; plugin = "hostile-hijack"; },
    { name = "L"; plugin = "hostile-leak"; }
);
subscriptions = ( { event = "*"; proto = "ALFRED"; selector = "observe"; } );
CFG
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    # Each plugin is probed in runsc at the first start: up to a minute on a
    # busy machine.
    for _ in $(seq 1200); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.05
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

# Drop a built test plugin the way an operator would: copy, then rename.
drop() {   # file.so
    install -m 644 "$TEST_PLUGINS/$1" "$T/plugins/.incoming"
    mv "$T/plugins/.incoming" "$T/plugins/$1"
}

# Wait until proto $1 exists (its plugin passed the probe and was loaded).
wait_proto() {
    for _ in $(seq 1200); do
        ctl --json explain "$1" > /dev/null 2>&1 && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.05
    done
    fail "proto $1 never appeared: $(grep -i "$2" "$T/log" | tail -3)"
}

alive() {
    kill -0 "$PID" 2> /dev/null || fail "a4psd is gone: $(tail -5 "$T/log")"
}

# What the other protos answer; must be the same before and after.
others() {
    ctl send ROBIN feel "what a wonderful, happy day" 2>&1
    ctl send BRICK eval "1 + 2 * 3" 2>&1
    ctl send C get 2>&1
}

json_get() {   # json python-expression-on-j
    python3 -c "import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))" "$2" <<< "$1"
}

# ---- the tests ----

# The hijacker, dropped: its live ping writes the host table's reply entry.
# The write faults in its own call; it alone is quarantined; ROBIN, BRICK and
# C answer exactly as before -- also after its generation is unloaded.
test_hijack_dropped() {
    start || return
    local before after out
    before=$(others)
    expect_contains "$before" "sentiment" "ROBIN's reply before"
    drop live_hijack.so
    wait_proto H hijack || return
    out=$(ctl send H ping 2>&1) && fail "the hijacker's table write did not fail its call: $out"
    expect_contains "$out" "SIGSEGV" "the hijacker's reply"
    expect_contains "$(ctl --json history H)" '"status":"quarantined"' "history of H"
    after=$(others)
    [ "$after" = "$before" ] || fail "the others' replies changed: before '$before', after '$after'"
    case "$after" in *HIJACKED*) fail "a reply went through the hijacker: $after" ;; esac
    ctl send H ping > /dev/null 2>&1 && fail "the quarantined hijacker still answers"
    # Its generation is reclaimed; the others keep calling the kernel's table.
    sleep 0.5
    after=$(others)
    [ "$after" = "$before" ] || fail "after the hijacker was unloaded: '$after'"
    expect_contains "$(ctl status)" "hostile-hijack" "status"
    alive
}

# The hijacker's source as a candidate counter through the forge: it passes
# the task's example in the probe, is adopted for C, and in probation its
# first live ping faults at the table: C rolls back to 1.0.0, the others are
# unchanged.
test_hijack_forged() {
    start || return
    local before after out
    before=$(others)
    ctl forge C --selector ping --example '=>pong' --iterations 1 --probation 30 > /dev/null ||
        { fail "forge refused"; return; }
    {
        sed '/#include "live.h"/d; /#include "hostile.h"/d' "$LIVE/../hostile.h"
        sed '/#include "live.h"/d; /#include "hostile.h"/d' "$LIVE/live.h"
        sed -e '/#include "live.h"/d' -e 's/"hostile-hijack", .version = "1.0.0"/"counter", .version = "1.3.0"/' \
            "$LIVE/hijack.c"
    } > "$T/forge/1/.tmp"
    grep -q '"counter", .version = "1.3.0"' "$T/forge/1/.tmp" || { fail "could not make the candidate"; return; }
    mv "$T/forge/1/.tmp" "$T/forge/1/hijack.c"
    local stage=""
    for _ in $(seq 1200); do
        stage=$(ctl --json task 1 2> /dev/null | python3 -c "import json,sys; print(json.load(sys.stdin).get('stage'))" 2> /dev/null)
        [ "$stage" = probation ] && break
        sleep 0.05
    done
    [ "$stage" = probation ] || { fail "the forged hijacker never reached probation: $(ctl task 1 2>&1 | tail -5)"; return; }
    out=$(ctl send C ping 2>&1) && fail "the forged hijacker's table write did not fail: $out"
    expect_contains "$out" "SIGSEGV" "the forged hijacker's reply"
    expect_reply C get "" "v1 count=100"
    expect_contains "$(ctl --json history C)" '"status":"quarantined"' "history of C"
    after=$(others)
    [ "$after" = "$before" ] || fail "the others' replies changed: before '$before', after '$after'"
    alive
}

# The leaker, dropped: five live calls of 1 MiB each show in status and
# history as its version's net allocation; a well-behaved proto's stays
# small.
test_leak_accounted() {
    start || return
    drop live_hijack.so
    drop live_leak.so
    wait_proto L leak || return
    local st
    st=$(ctl --json status)
    if [ "$(json_get "$st" '[p for p in j["protos"] if p["name"]=="L"][0]["usage"]')" = None ]; then
        echo "SKIP $CURRENT: this a4psd keeps no accounting (not linked with jemalloc)"
        return
    fi
    for i in 1 2 3 4 5; do
        expect_reply L leak "" "leaked $i MiB"
        expect_reply BRICK eval "1 + 2 * 3" "7"
    done
    st=$(ctl --json status)
    local net calls bnet
    net=$(json_get "$st" '[p for p in j["protos"] if p["name"]=="L"][0]["usage"]["net"]')
    calls=$(json_get "$st" '[p for p in j["protos"] if p["name"]=="L"][0]["usage"]["calls"]')
    bnet=$(json_get "$st" '[p for p in j["protos"] if p["name"]=="BRICK"][0]["usage"]["net"]')
    [ "$net" -ge $((5 << 20)) ] || fail "status: L's net allocation is $net bytes after 5 leaks of 1 MiB"
    [ "$calls" -ge 5 ] || fail "status: L's calls are $calls"
    [ "$bnet" -lt 4096 ] || fail "status: BRICK's net allocation is $bnet bytes after 5 evals"
    echo "  status: L $calls calls, net $net bytes; BRICK net $bnet bytes"
    local h
    h=$(ctl --json history L)
    net=$(json_get "$h" '[v for v in j["versions"] if v["current"]][0]["usage"]["net"]')
    [ "$net" -ge $((5 << 20)) ] || fail "history: L's net allocation is $net bytes"
    expect_contains "$(ctl history L)" "NET BYTES" "history L (text)"
    expect_contains "$(ctl status)" "NET BYTES" "status (text)"
    alive
}

# The leaker's source as a candidate counter through the forge: adopted for
# C (it behaves in the probe), its five live leaks are charged to the forged
# version in history.  (Rolling a growing version back is the codex's
# monitors' job, a later issue: here the numbers they will read.)
test_leak_forged() {
    start || return
    if [ "$(json_get "$(ctl --json status)" '[p for p in j["protos"] if p["name"]=="C"][0]["usage"]')" = None ]; then
        echo "SKIP $CURRENT: this a4psd keeps no accounting (not linked with jemalloc)"
        return
    fi
    ctl forge C --selector leak --example '=>leaked 0 MiB' --iterations 1 --probation 30 > /dev/null ||
        { fail "forge refused"; return; }
    {
        sed '/#include "live.h"/d; /#include "hostile.h"/d' "$LIVE/../hostile.h"
        sed '/#include "live.h"/d; /#include "hostile.h"/d' "$LIVE/live.h"
        sed -e '/#include "live.h"/d' \
            -e 's/HOSTILE_PLUGIN("hostile-leak", methods)/HOSTILE_PLUGIN("counter", methods)/' "$LIVE/leak.c"
    } > "$T/forge/1/.tmp"
    # HOSTILE_PLUGIN's version, as a counter newer than C's 1.0.0.
    sed -i 's/\.name = NAME, \.version = "1\.0\.0"/.name = NAME, .version = "1.4.0"/' "$T/forge/1/.tmp"
    grep -q '"1.4.0"' "$T/forge/1/.tmp" || { fail "could not make the candidate"; return; }
    mv "$T/forge/1/.tmp" "$T/forge/1/leak.c"
    local v=""
    for _ in $(seq 1200); do
        v=$(json_get "$(ctl --json history C 2> /dev/null)" 'j["version"]' 2> /dev/null)
        [ "$v" = 1.4.0 ] && break
        sleep 0.05
    done
    [ "$v" = 1.4.0 ] || { fail "the forged leaker was never adopted: $(ctl task 1 2>&1 | tail -5)"; return; }
    for i in 1 2 3 4 5; do
        expect_reply C leak "" "leaked $i MiB"
    done
    local net
    net=$(json_get "$(ctl --json history C)" '[v for v in j["versions"] if v["version"]=="1.4.0"][0]["usage"]["net"]')
    [ "$net" -ge $((5 << 20)) ] || fail "history: the forged leaker's net allocation is $net bytes"
    echo "  history: counter 1.4.0 (forged leaker) net $net bytes"
    alive
}

ALL=(test_hijack_dropped test_hijack_forged test_leak_accounted test_leak_forged)
for t in "${@:-${ALL[@]}}"; do
    CURRENT=$t
    before=$failures
    "$t"
    [ -n "$PID" ] && [ $failures -gt $before ] && { echo "--- a4psd log of $t:"; tail -30 "$T/log"; }
    stop
    [ $failures -eq $before ] && echo "PASS $t"
done
echo "$failures failure(s)"
exit $((failures > 0))
