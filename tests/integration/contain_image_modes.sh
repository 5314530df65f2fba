#!/usr/bin/env bash
# contain_image_modes.sh -- the image holds every proto's state and every
# plugin binary: it, its WAL and SHM and its backups are created 0600, and
# an image left wider (by an older a4psd, or an operator) is tightened at
# open, with a line in the log.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... contain_image_modes.sh [TEST...]
#
# Needs no privileges; the plugins are probed in runsc at the first start.
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}" "${PLUGINS:?dir of the built plugins}"

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T=""
PID=""

start() {   # [keep the dir]
    if [ -z "${1:-}" ]; then
        T=$(mktemp -d /tmp/a4ps-it-XXXXXX)
        daemon_dir "$T"
        mkdir -p "$T/plugins"
        install -m 644 "$PLUGINS/counter-1.so" "$T/plugins/counter-1.so"
        cat > "$T/a4ps.cfg" <<CFG
plugin_dir = "plugins";
runtime_dir = "run";
image = "a4ps.img";
image_backups = 3;
log_level = "debug";
control = { socket = "a.sock"; };
protos = ( { name = "C"; plugin = "counter"; state = { count = "100"; }; } );
CFG
    fi
    "$A4PSD" -c "$T/a4ps.cfg" >> "$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        [ -S "$T/a.sock" ] && ctl send C get > /dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "a4psd did not come up: $(tail -5 "$T/log")"
}

# Stop the daemon but keep its directory.
halt() {
    kill -TERM "$PID"
    wait "$PID" 2> /dev/null
    PID=""
}

expect_mode() {   # file mode
    [ -e "$1" ] || { fail "$1 does not exist"; return 1; }
    local m
    m=$(stat -c %a "$1")
    [ "$m" = "$2" ] || fail "$1 is mode $m, expected $2"
}

# Under a permissive umask, so nothing owes its mode to the test's.
test_created_private() {
    umask 022
    start || return
    ctl send C incr > /dev/null || fail "send failed"
    ctl snapshot > /dev/null || fail "snapshot failed"
    # The WAL and SHM exist while the daemon has the image open.
    expect_mode "$T/a4ps.img" 600
    expect_mode "$T/a4ps.img-wal" 600
    expect_mode "$T/a4ps.img-shm" 600
    expect_mode "$T/a4ps.img.1" 600          # the backup taken at start
    halt                                      # a final snapshot and a backup
    expect_mode "$T/a4ps.img" 600
    expect_mode "$T/a4ps.img.1" 600
    expect_mode "$T/a4ps.img.2" 600
    for f in "$T"/a4ps.img*; do
        expect_mode "$f" 600
    done
}

# An image and backups left 0644 (as an older a4psd made them) are
# tightened at the next start, and the log says so, naming the file.
test_tightened_at_open() {
    umask 022
    start || return
    halt
    chmod 644 "$T"/a4ps.img*
    start keep || return
    for f in "$T"/a4ps.img*; do
        expect_mode "$f" 600
    done
    expect_contains "$(cat "$T/log")" "$T/a4ps.img was mode 0644: tightened to 0600" "the log"
    expect_contains "$(cat "$T/log")" "$T/a4ps.img.1 was mode 0644: tightened to 0600" "the log"
    ctl send C get > /dev/null || fail "the restarted daemon does not serve"
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(created_private tightened_at_open)
for t in "${tests[@]}"; do
    CURRENT=$t
    before=$failures
    "test_$t"
    stop
    [ "$failures" = "$before" ] && echo "PASS $t"
done
echo "$failures failure(s)"
exit $((failures > 0))
