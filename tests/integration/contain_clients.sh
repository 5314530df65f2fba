#!/usr/bin/env bash
# contain_clients.sh -- control-socket clients that try to keep a4psd's
# connections for nothing: a request sent one byte at a time, connections
# opened and left idle until every slot (limits.max_clients) is taken, and
# thousands of connections refused at once.  Each plays the attacker and
# loses: the slow one is cut off request_timeout_ms after its first byte,
# idle ones give way to a new client, refusals are counted in status and
# logged a few times, not thousands.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... contain_clients.sh [TEST...]
#
# Needs python3 (the clients); runsc for the first probe of the plugin.
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}" "${PLUGINS:?dir of the built plugins}"

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T=""
PID=""
HELD=()                           # the test's own background clients
# The system's python3 first: a version manager's shim can take a second
# or more to start, and the clients are started one by one.
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "FAIL: no python3"; exit 1; }

start() {   # limits
    T=$(mktemp -d /tmp/a4ps-it-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    install -m 644 "$PLUGINS/counter-1.so" "$T/plugins/counter-1.so"
    cat > "$T/a4ps.cfg" <<CFG
plugin_dir = "plugins";
runtime_dir = "run";
log_level = "debug";
control = { socket = "a.sock"; };
limits = { $1 };
protos = ( { name = "C"; plugin = "counter"; state = { count = "100"; }; } );
CFG
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

release() {
    [ ${#HELD[@]} -gt 0 ] && kill "${HELD[@]}" 2> /dev/null
    [ ${#HELD[@]} -gt 0 ] && wait "${HELD[@]}" 2> /dev/null
    HELD=()
}

# One number out of `a4psctl --json status`: daemon.control.KEY.
control_count() {
    ctl --json status 2> /dev/null |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["control"][sys.argv[1]])' "$1"
}

wait_count() {   # key minimum what
    local n=""
    for _ in $(seq 600); do
        n=$(control_count "$1") && [ -n "$n" ] && [ "$n" -ge "$2" ] && return 0
        sleep 0.05
    done
    fail "$3: status never counted $1 >= $2 (last: ${n:-none})"
}

# A client that holds a connection: sends $2 (may be empty or a partial
# line) and then writes to $3 every line it receives and "EOF" when a4psd
# closes the connection; once the file $3.go exists it sends $4 (the rest).
hold() {   # name text out [rest]
    "$PY" - "$T/a.sock" "$2" "$3" "${4:-}" <<'PY' &
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
if sys.argv[2]:
    s.sendall(sys.argv[2].encode())
out = open(sys.argv[3], "a", buffering=1)
out.write("CONNECTED\n")
rest = sys.argv[4]
buf = b""
while True:
    if rest and os.path.exists(sys.argv[3] + ".go"):
        s.sendall(rest.encode())
        rest = ""
    if not select.select([s], [], [], 0.1)[0]:
        continue
    try:
        b = s.recv(65536)
    except OSError:
        b = b""
    if not b:
        out.write("EOF\n")
        break
    buf += b
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        out.write(line.decode(errors="replace") + "\n")
PY
    HELD+=($!)
    for _ in $(seq 600); do
        grep -q CONNECTED "$3" 2> /dev/null && return 0
        sleep 0.05
    done
    fail "$1 never connected"
}

wait_file() {   # file needle what
    for _ in $(seq 1200); do
        grep -qF -- "$2" "$1" 2> /dev/null && return 0
        sleep 0.05
    done
    fail "$3: never saw '$2' (got: $(tail -2 "$1" 2> /dev/null))"
}

# One byte every 0.2 s of a valid status request of 60 bytes: each byte
# arrives well within request_timeout_ms (1 s) of the one before, so a
# timer reset by every byte would let it finish (and answer it) after 12 s.
# Cut off from its first byte, it gets "incomplete request" and the
# connection is closed before it has sent everything.
test_slow_client_cut_off() {
    start "request_timeout_ms = 1000;" || return
    "$PY" - "$T/a.sock" > "$T/slow.out" 2>&1 <<'PY'
import socket, sys, time
req = b'{"cmd":"status","padding":"' + b"x" * 30 + b'"}\n'
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.setblocking(False)
got, sent = b"", 0
for ch in req:
    try:
        s.send(bytes([ch]))
        sent += 1
    except OSError:
        break                       # closed on us
    time.sleep(0.2)
    try:
        b = s.recv(65536)
        if not b:
            break
        got += b
    except BlockingIOError:
        pass
    except OSError:
        break
    if b"\n" in got:
        break
print("sent %d of %d" % (sent, len(req)))
print("reply", got.decode(errors="replace").strip())
PY
    local r
    r=$(cat "$T/slow.out")
    expect_contains "$r" "incomplete request" "the slow client's reply"
    expect_contains "$r" "within 1000 ms of its first byte" "the slow client's reply"
    case "$r" in *"sent 60 of 60"*) fail "the slow client sent its whole request: $r" ;; esac
    wait_count timed_out 1 "the cut-off"
    expect_reply C get "" "v1 count=100"
}

# max_clients = 4, filled by three idle connections and one sending a
# request (its first half, and it has all the time it needs): a new client
# is served, the idle connection that waited longest gave way (told why),
# the one mid-request did not and still gets its answer.
test_idle_give_way() {
    start "max_clients = 4; request_timeout_ms = 600000; idle_timeout_ms = 600000;" || return
    hold idle1 "" "$T/idle1" || return
    hold idle2 "" "$T/idle2" || return
    hold idle3 "" "$T/idle3" || return
    hold partial '{"cmd":"send","proto":"C",' "$T/partial" '"selector":"get"}
' || return
    # No status query here: it would take a slot itself.  The new client
    # is accepted after the four (a listening socket's queue is in order).
    local r
    r=$(ctl send C get 2>&1) || fail "the new client was not served: $r"
    [ "$r" = "v1 count=100" ] || fail "the new client got '$r'"
    wait_file "$T/idle1" EOF "the oldest idle connection"
    expect_contains "$(cat "$T/idle1")" "every connection (limits.max_clients = 4) was taken" "its last line"
    [ "$(control_count evicted)" = 1 ] || fail "evictions counted: $(control_count evicted), expected 1"
    grep -q EOF "$T/partial" && fail "the connection mid-request was evicted"
    # The request completes on the connection that was never cut off.
    touch "$T/partial.go"
    wait_file "$T/partial" "v1 count=100" "the request on the connection mid-request"
    grep -q EOF "$T/idle2" "$T/idle3" && fail "more idle connections closed than needed"
    kill -0 "$PID" || fail "a4psd died"
    release
}

# idle_timeout_ms = 1000: an idle connection is closed (told why); an event
# stream, quiet as it is, is not.
test_idle_timeout() {
    start "idle_timeout_ms = 1000;" || return
    hold follower '{"cmd":"events","follow":true}
' "$T/follower" || return
    wait_file "$T/follower" '"following":true' "the follower"
    hold idle "" "$T/idle" || return
    wait_file "$T/idle" EOF "the idle connection"
    expect_contains "$(cat "$T/idle")" "without a request (limits.idle_timeout_ms)" "its last line"
    wait_count idle_closed 1 "the idle closing"
    # Well past the timeout for the follower too (it connected first).
    hold idle2 "" "$T/idle2" || return
    wait_file "$T/idle2" EOF "the second idle connection"
    grep -q EOF "$T/follower" && fail "the event stream was closed as idle"
    # It still streams: a snapshot-free event, a send, is not one; a
    # config reload is.
    ctl reload > /dev/null 2>&1 || fail "reload failed"
    wait_file "$T/follower" config_reloaded "the follower's event"
    release
}

# Every slot held by event streams (never idle): a flood of 2,000 new
# connections is refused, each told why, the refusals are counted, and the
# log says so a few times, not 2,000.
test_refusal_flood() {
    start "max_clients = 4;" || return
    local i
    for i in 1 2 3 4; do
        hold "follower$i" '{"cmd":"events","follow":true}
' "$T/f$i" || return
        wait_file "$T/f$i" '"following":true' "follower $i"
    done
    "$PY" - "$T/a.sock" > "$T/flood.out" 2>&1 <<'PY'
import socket, sys
busy = other = 0
for i in range(2000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    got = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
    s.close()
    if b'"code":"busy"' in got:
        busy += 1
    else:
        other += 1
        last = got
print("busy", busy, "other", other)
if other:
    print("an other reply:", last)
PY
    expect_contains "$(cat "$T/flood.out")" "busy 2000 other 0" "the flood's replies"
    # Free a slot to ask.
    kill "${HELD[0]}"
    wait_count refused_full 2000 "the refusals"
    local lines
    lines=$(grep -c "refused uid\|connections refused" "$T/log")
    [ "$lines" -ge 1 ] || fail "the refusals were not logged at all"
    [ "$lines" -le 10 ] || fail "2000 refusals wrote $lines log lines: $(grep -m3 refused "$T/log")"
    expect_contains "$(grep -m1 'control socket: refused' "$T/log")" \
        "none is idle" "the first refusal's log line"
    kill -0 "$PID" || fail "a4psd died"
    expect_reply C get "" "v1 count=100"
    release
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(slow_client_cut_off idle_give_way idle_timeout refusal_flood)
for t in "${tests[@]}"; do
    CURRENT=$t
    before=$failures
    "test_$t"
    release
    stop
    [ "$failures" = "$before" ] && echo "PASS $t"
done
echo "$failures failure(s)"
exit $((failures > 0))
