#!/usr/bin/env bash
# contain_fifo.sh -- non-regular files in the plugin directory: a FIFO named
# like a plugin once blocked the verifier thread for ever (it was opened
# without O_NONBLOCK), silently, and no later drop was ever loaded.  Now it
# is refused, by name, without blocking anything.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... contain_fifo.sh [TEST...]
#
# Needs runsc (the default sandbox.mode: dropped files go through the
# verifier thread, the one that used to block).
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}" "${PLUGINS:?dir of the built plugins}"

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T=""
PID=""

start() {
    T=$(mktemp -d /tmp/a4ps-it-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins" "$T/stage"
    install -m 644 "$PLUGINS/counter-1.so" "$T/plugins/counter-1.so"
    cat > "$T/a4ps.cfg" <<CFG
plugin_dir = "plugins";
runtime_dir = "run";
log_level = "debug";
control = { socket = "a.sock"; };
protos = (
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "ROBIN"; plugin = "robin"; }
);
CFG
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

# Drop a file the way an operator does: staged outside, renamed in.
drop() {   # source name
    install -m 644 "$1" "$T/stage/$2"
    mv "$T/stage/$2" "$T/plugins/$2"
}

wait_reply() {   # proto selector payload needle what
    for _ in $(seq 600); do
        ctl send "$1" "$2" "$3" 2> /dev/null | grep -qF -- "$4" && return 0
        sleep 0.05
    done
    fail "$5: $1 $2 never answered '$4' (log: $(tail -3 "$T/log"))"
}

wait_log() {   # needle count what
    for _ in $(seq 600); do
        [ "$(grep -cF -- "$1" "$T/log")" -ge "$2" ] && return 0
        sleep 0.05
    done
    fail "$3: the log never said '$1' ($2 times): $(tail -3 "$T/log")"
}

# A FIFO renamed in as x.so, then a good plugin: the good one loads, the
# FIFO is refused with its name, status still answers.  Again after SIGHUP
# (the rescan meets the FIFO still there) with another good plugin.
test_fifo_refused() {
    start || return
    mkfifo "$T/stage/x.so"
    mv "$T/stage/x.so" "$T/plugins/x.so"
    drop "$PLUGINS/counter-2.so" counter-2.so
    wait_reply C get "" "v2 count=100" "the drop after the FIFO" || return
    wait_log "$T/plugins/x.so: file: a FIFO (named pipe), not a regular file" 1 "the FIFO's refusal"
    ctl status > /dev/null 2>&1 || fail "status does not answer"
    kill -HUP "$PID"
    drop "$PLUGINS/robin.so" robin.so
    wait_reply ROBIN feel "a happy day" "sentiment" "the drop after the rescan" || return
    wait_log "$T/plugins/x.so: file: a FIFO (named pipe), not a regular file" 2 "the FIFO's second refusal"
    # A directory fares the same, and so does a link to a FIFO elsewhere
    # (links are followed, to regular files only).
    mkdir "$T/stage/d.so" && mv "$T/stage/d.so" "$T/plugins/d.so"
    mkfifo "$T/stage/pipe" && ln -s "$T/stage/pipe" "$T/stage/l.so" && mv "$T/stage/l.so" "$T/plugins/l.so"
    kill -HUP "$PID"
    wait_log "$T/plugins/d.so: file: a directory, not a regular file" 1 "the directory's refusal"
    wait_log "$T/plugins/l.so: file: a FIFO (named pipe), not a regular file" 1 "the link's refusal"
    ctl status > /dev/null 2>&1 || fail "status does not answer after the rescan"
    kill -0 "$PID" || fail "a4psd died"
}

# a4psd reads the plugin directory as a4ps.  A file written 0600 by root and
# chmodded only after its close (what install(1) does) is not readable at
# IN_CLOSE_WRITE: it must wait for its mode to change, not be missed.  Written
# here in those two steps, with the chmod held back until the wait is seen.
test_unreadable_until_chmod() {
    start || return
    [ "$(id -u)" = 0 ] || { echo "SKIP $CURRENT: needs root (a4psd's own user must differ)"; return; }
    (umask 077 && cat "$PLUGINS/counter-2.so" > "$T/plugins/counter-2.so")
    wait_log "counter-2.so: not readable by a4psd's user yet" 1 "the wait for the mode" || return
    expect_reply C get "" "v1 count=100"
    chmod 644 "$T/plugins/counter-2.so"
    wait_reply C get "" "v2 count=100" "the file once readable"
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(fifo_refused unreadable_until_chmod)
for t in "${tests[@]}"; do
    CURRENT=$t
    before=$failures
    "test_$t"
    stop
    [ "$failures" = "$before" ] && echo "PASS $t"
done
echo "$failures failure(s)"
exit $((failures > 0))
