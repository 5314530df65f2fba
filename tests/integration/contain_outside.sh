#!/usr/bin/env bash
# contain_outside.sh -- reaching outside is a capability the host grants
# (issue 10, ABI rule R12), with the real a4psd, runsc and the LLM test
# double (tests/llm/llm_double.py):
#   - the openai generator reaches the double at its granted origin through
#     the forge, with the key the http helper reads at each call -- and the
#     key is gone from a4psd's own environment;
#   - live_exfil, a plugin that behaves in the probe and attacks once live,
#     delivered by drop and again through the forge, asks the http entry to
#     post to a listener this test starts (and to the double, granted to
#     openai alone), from a method and from its init hook, and the run entry
#     for /bin/sh: each refused naming the plugin and the rule, the listener
#     receives nothing, the other protos keep serving;
#   - the helpers die with a4psd, even by SIGKILL.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... contain_outside.sh [TEST...]
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
failures=0
# shellcheck source=tests/integration/lib.sh
. "$HERE/lib.sh"
T=""
PID=""
DOUBLE=""
LISTENER=""

cleanup() {
    [ -n "$DOUBLE" ] && kill "$DOUBLE" 2> /dev/null
    [ -n "$LISTENER" ] && kill "$LISTENER" 2> /dev/null
    DOUBLE=""
    LISTENER=""
    stop
}

# A TCP listener on 127.0.0.1 that appends every byte it receives to
# $T/listener.bytes and counts connections in $T/listener.conns.
start_listener() {
    python3 - "$T" > "$T/listener.out" 2>&1 <<'EOF' &
import os, socket, sys, threading
d = sys.argv[1]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
open(d + "/listener.bytes", "wb").close()
with open(d + "/listener.port.tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(d + "/listener.port.tmp", d + "/listener.port")
def serve(c):
    with open(d + "/listener.conns", "a") as f:
        f.write("1\n")
    while True:
        b = c.recv(65536)
        if not b:
            break
        with open(d + "/listener.bytes", "ab") as f:
            f.write(b)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
    LISTENER=$!
    for _ in $(seq 100); do
        [ -s "$T/listener.port" ] && return 0
        sleep 0.05
    done
    fail "the listener did not start: $(cat "$T/listener.out")"
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

# a4psd with counter 1.0.0 (C), the openai generator (LLM, granted the
# double's origin and key), the inbox (INBOX) and live_exfil (X), dropped.
start_daemon() {
    local port lport
    port=$(cat "$T/llm.port")
    mkdir -p "$T/plugins"
    for p in counter-1 inbox openai; do
        install -m 644 "$PLUGINS/$p.so" "$T/plugins/$p.so"
    done
    install -m 644 "$TEST_PLUGINS/live_exfil.so" "$T/plugins/live_exfil.so"
    cat > "$T/a4ps.cfg" <<EOF
plugin_dir = "plugins";
runtime_dir = "run";
log_level = "debug";
control = { socket = "a.sock"; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
forge = { dir = "forge"; generator = "INBOX"; iterations = 3; wall_s = 120; probation_s = 1; };
outside = {
    http = ( { plugin = "openai"; origins = [ "http://127.0.0.1:$port" ];
               credentials = [ "A4PS_TEST_LLM_KEY" ]; } );
    run = ( { plugin = "command"; programs = [ "/usr/bin/true" ]; } );
};
protos = (
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "INBOX"; plugin = "inbox"; },
    { name = "X"; plugin = "exfil"; },
    { name = "LLM"; plugin = "openai"; state = { base_url = "http://127.0.0.1:$port";
      model = "test-double"; api_key_env = "A4PS_TEST_LLM_KEY"; timeout_ms = "10000"; }; }
);
EOF
    A4PS_TEST_LLM_KEY=sekrit-key "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        [ -S "$T/a.sock" ] && ctl send X ping > /dev/null 2>&1 && return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.1
    done
    fail "a4psd did not come up with X: $(tail -5 "$T/log")"
}

# X's attacks, each refused naming the plugin and the rule; nothing reaches
# the listener (nor the double, granted to openai alone).
expect_contained() {   # what
    local lport dport out before
    lport=$(cat "$T/listener.port")
    dport=$(cat "$T/llm.port")
    before=$(wc -l < "$T/llm.log" 2> /dev/null || echo 0)
    out=$(ctl send X http "http://127.0.0.1:$lport/steal" 2>&1)
    expect_contains "$out" "refused -1000: http: plugin exfil is granted no origin (rule R12" "$1: X http to the listener"
    out=$(ctl send X http "http://127.0.0.1:$dport@127.0.0.1:$lport/" 2>&1)
    expect_contains "$out" "refused -1000: http: plugin exfil" "$1: X http with userinfo"
    out=$(ctl send X http "http://127.0.0.1:$dport/v1/chat/completions" 2>&1)
    expect_contains "$out" "refused -1000: http: plugin exfil is granted no origin" "$1: X http to openai's origin"
    out=$(ctl send X hook 2>&1)
    expect_contains "$out" "-1000: http: not from a hook" "$1: X's init hook"
    out=$(ctl send X run /bin/sh 2>&1)
    expect_contains "$out" "refused -1000: run: plugin exfil is granted no program (rule R12" "$1: X run /bin/sh"
    [ -s "$T/listener.bytes" ] && fail "$1: the listener received: $(head -c 200 "$T/listener.bytes")"
    [ -e "$T/listener.conns" ] && fail "$1: the listener was connected to"
    [ "$(wc -l < "$T/llm.log" 2> /dev/null || echo 0)" = "$before" ] || fail "$1: the double heard X"
    expect_reply C get "" "v1 count=100"
    kill -0 "$PID" 2> /dev/null || fail "$1: a4psd died"
}

test_exfil_refused_llm_served() {
    T=$(mktemp -d /tmp/a4ps-outside-XXXXXX)
    daemon_dir "$T"
    sed -e 's/"VERSION"/"1.1.0"/' -e 's/BODY/c \* 2/' -e 's/CRASH_ON/0/' -e 's/FAILS/0/' \
        "$HERE/forge/counter_double.c.in" > "$T/right.c"
    python3 - "$T" <<'EOF'
import json, sys
d = sys.argv[1]
json.dump([{"status": 200, "content": "```c\n" + open(d + "/right.c").read() + "```\n"}],
          open(d + "/script.json", "w"))
EOF
    start_double "$T/script.json" || return
    start_listener || return
    start_daemon || return
    expect_contains "$(cat "$T/log")" "outside: http helper pid" "the log"

    # The key left a4psd's environment (what a plugin in a4psd could read).
    grep -qa "sekrit-key" "/proc/$PID/environ" && fail "the key is still in /proc/$PID/environ"
    local hp
    hp=$(sed -n 's/.*outside: http helper pid \([0-9]*\).*/\1/p' "$T/log" | head -1)
    [ -n "$hp" ] && kill -0 "$hp" 2> /dev/null || fail "no http helper running ($hp)"

    # Dropped: behaves in the probe, attacks live, is refused.
    expect_contained "by drop"

    # The openai generator, through the forge, reaches the double.
    local out
    out=$(ctl forge C --selector double --example '=>200' --generator LLM --wait 2>&1) ||
        fail "forge with the LLM did not end adopted: $out"
    expect_reply C double "" "200"
    grep -q "Bearer sekrit-key" "$T/llm.log" || fail "the double never saw the key"

    # Through the forge: the same plugin as version 1.1.0, from the inbox.
    ctl forge X --selector http --example 'http://x=>ok' > /dev/null || { fail "forge X"; return; }
    for _ in $(seq 300); do
        [ -d "$T/forge/2" ] && break
        sleep 0.1
    done
    {
        grep -v '#include "hostile.h"' "$HERE/../plugins/hostile/hostile.h"
        grep -v '#include "hostile.h"' "$HERE/../plugins/hostile/live/live.h"
        grep -v '#include "live.h"' "$HERE/../plugins/hostile/live/exfil.c"
    } | sed -e 's/\.version = "1.0.0"/.version = "1.1.0"/' \
            -e 's/^    const a4ps_plugin \*a4ps_plugin_entry/    A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry/' \
        > "$T/forge/2/.tmp"
    mv "$T/forge/2/.tmp" "$T/forge/2/a.c"
    local state=""
    wait_task_end 2
    state=$TASK_STATE
    [ "$state" = adopted ] || { fail "forge X: task 2 ended '$state': $(ctl task 2 2>&1 | tail -5)"; return; }
    expect_contains "$(ctl --json explain X)" '"version":"1.1.0"' "explain X"
    expect_contained "through the forge"

    # The helpers die with a4psd, even by SIGKILL.
    local rp
    rp=$(sed -n 's/.*run helper pid \([0-9]*\).*/\1/p' "$T/log" | head -1)
    kill -KILL "$PID"
    wait "$PID" 2> /dev/null
    PID=""
    for _ in $(seq 100); do
        kill -0 "$hp" 2> /dev/null || kill -0 "$rp" 2> /dev/null || break
        sleep 0.1
    done
    kill -0 "$hp" 2> /dev/null && fail "the http helper $hp outlived a4psd"
    kill -0 "$rp" 2> /dev/null && fail "the run helper $rp outlived a4psd"
}

ALL=(test_exfil_refused_llm_served)
for t in "${@:-${ALL[@]}}"; do
    CURRENT=$t
    before=$failures
    "$t"
    [ -n "$PID" ] && [ $failures -gt $before ] && { echo "--- a4psd log of $t:"; tail -30 "$T/log"; }
    cleanup
    [ $failures -eq $before ] && echo "PASS $t"
done
exit $failures
