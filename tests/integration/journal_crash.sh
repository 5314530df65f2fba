#!/usr/bin/env bash
# journal_crash.sh -- no acknowledged write is lost (issue 11): a4psd killed
# with kill -9 under 8 writing clients, ended by a plugin's exit() with exit
# containment off, and stopped on a full disk that fails its final snapshot.
# The real a4psd, real signals, a real tmpfs, the real SQLite image read with
# the sqlite3 CLI.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... JOURNAL_WRITER=... \
#       journal_crash.sh [TEST...]
#
# The clients are a4ps-journal-writer (journal_writer.c): one connection
# each, BABS `remember` of a note unique per client and write, one at a time,
# every acknowledgement recorded as it arrives.  After each crash a4psd
# restarts on the same image; BABS's state is then read from the image after
# a clean stop (SIGTERM: the final snapshot) and judged by journal_check.py:
# every acknowledged write there exactly once, under the number its reply
# gave, each client's in the order it wrote them; an unacknowledged write in
# flight may or may not be there.
#
# JOURNAL_KILLS (default 50) sets the number of kill -9 trials, SEED the
# random seed (printed, so a failing run can be repeated).
# JOURNAL_HARNESS_CHECK=1 checks the harness itself: each kill comes after the
# writers are frozen and a snapshot is taken, so nothing acknowledged can be
# lost and kill_9_writers must pass even without a journal.  Each test prints
# PASS or FAIL with the reason, and the daemon's logs on failure; the exit
# status is 1 when any test failed.  ctest runs it with the build's paths
# (test `journal_crash`).
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"
: "${JOURNAL_WRITER:?path of a4ps-journal-writer}"
command -v sqlite3 > /dev/null || { echo "FAIL: the sqlite3 CLI is missing (scripts/setup installs it)"; exit 1; }
command -v python3 > /dev/null || { echo "FAIL: python3 is missing"; exit 1; }

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CHECK="$(dirname "${BASH_SOURCE[0]}")/journal_check.py"
T=""                              # the current test's temp dir
PID=""                            # the current daemon
LOG=""                            # its log
LOGN=0
MNT=""                            # a tmpfs mounted by the current test
IMAGE=""                          # the image, relative to $T (default a4ps.img)
CLIENTS=8

sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# The config: BABS (and $1's protos), no interval snapshots, the journal on
# "everysec"; $2 extra lines.  IMAGE (default a4ps.img) is where the image goes.
babs_config() {   # [protos [extra]]
    write_config "    { name = \"BABS\"; plugin = \"babs\"; }${1:+,
$1}" "durability = \"everysec\";${2:+
$2}"
}

# Wait (generously) for the daemon to end by itself, reap it; its exit status
# in RC.  A daemon that never ends is killed and fails the test (status 1).
wait_end() {   # what
    local hung=0
    RC=""
    # stderr: bash's "Killed" notice of the job, which it may print at any
    # command once the job has ended.
    {
        for _ in $(seq 2400); do
            ended "$PID" && break
            sleep 0.05
        done
        if ! ended "$PID"; then
            hung=1
            kill -KILL "$PID"
        fi
        wait "$PID"
        RC=$?
    } 2> /dev/null
    PID=""
    [ "$hung" = 0 ] || { fail "a4psd did not end $1 (killed)"; return 1; }
}

# A clean stop (in place of lib.sh's halt): SIGTERM, exit status 0, and the
# log says the final snapshot was written -- the image then holds everything
# the daemon held.
halt() {
    kill -TERM "$PID"
    wait_end "after SIGTERM" || return
    [ "$RC" = 0 ] || { fail "a4psd exited $RC at SIGTERM"; return 1; }
    sed -n '/SIGTERM/,$p' "$LOG" | grep -q "snapshot written to" ||
        { fail "no final snapshot at SIGTERM"; return 1; }
}

# Judge BABS's state in the image (a4psd stopped) against the records of
# the rounds $1...: 0 when it holds them all, as it should; the judge's
# totals and findings are printed either way.
judge() {   # dir...
    sqlite3 -batch -readonly -separator $'\t' "$T/${IMAGE:-a4ps.img}" \
        "SELECT key, value FROM state WHERE proto = 'BABS'" > "$T/state.tsv" 2> "$T/state.err" ||
        { echo "  sqlite3 cannot read the image: $(cat "$T/state.err")"; return 2; }
    python3 "$CHECK" "$T/state.tsv" "$@"
}

check() {   # what dir...
    local what=$1
    shift
    judge "$@" || fail "$what: the acknowledged writes are not all there, once and in order (above)"
}

# Run the writers in the background into round directory $T/w/$1 ($2:
# writes per client, $3: padding; none: until the daemon dies); wait until
# every client has connected.  Their pid in WPID.
writers() {   # tag [writes [pad]]
    local w="$T/w/$1"
    mkdir -p "$w"
    "$JOURNAL_WRITER" "$T/a.sock" "$w" "$1" "$CLIENTS" ${2:+"$2"} ${3:+"$3"} > "$w/out" 2> "$w/err" &
    WPID=$!
    for _ in $(seq 4000); do
        [ -e "$w/up" ] && return 0
        ended "$WPID" && break
        sleep 0.005
    done
    [ -e "$w/up" ] || { fail "the writers did not start: $(cat "$w/err")"; return 1; }
}

# Wait for the writers of round $1; with $2, all $2 * CLIENTS writes must
# have been acknowledged.
writers_done() {   # tag [writes]
    local w="$T/w/$1" rc
    wait "$WPID"
    rc=$?
    [ -s "$w/err" ] && { fail "the writers of $1: $(cat "$w/err")"; return 1; }
    if [ -n "${2:-}" ]; then
        [ "$rc" = 0 ] && [ "$(cat "$w/out")" = "acked $(($2 * CLIENTS)) nak 0 lost 0" ] ||
            { fail "the writers of $1 exited $rc: $(cat "$w/out")"; return 1; }
    fi
    return 0
}

# ---- kill -9 under 8 writing clients ----

# JOURNAL_KILLS trials on one image: writers start, a4psd is killed 0-300 ms
# later (in a third of the trials after a SIGUSR1 snapshot at a random moment
# in between, so the journal is cut too), restarts on the image; after half
# the trials (at random, and the last) it is stopped cleanly and the image
# judged over all trials so far, the others go on on the restarted daemon
# (a journal replayed is killed again).  Only the first failing judgement
# fails the test; the trials go on so the totals cover them all.
test_kill_9_writers() {
    local trials=${JOURNAL_KILLS:-50}
    new_dir jc "$PLUGINS/babs.so"
    babs_config
    launch || return
    local i tag delay at snaps=0 checks=0 judged_bad=0 t0 ms rounds=() acks=0 out judged
    t0=$(now_ms)
    for i in $(seq "$trials"); do
        tag=$(printf 't%03d' "$i")
        writers "$tag" || return
        delay=$((RANDOM % 301))
        if [ $((RANDOM % 3)) = 0 ]; then
            at=$((RANDOM % (delay + 1)))
            sleep_ms "$at"
            kill -USR1 "$PID"
            snaps=$((snaps + 1))
            sleep_ms $((delay - at))
        else
            sleep_ms "$delay"
        fi
        if [ -n "${JOURNAL_HARNESS_CHECK:-}" ]; then
            # The harness's own check: the writers frozen, a snapshot holds all
            # they were told, so the kill loses nothing and every judgement
            # must pass, with or without a journal.
            kill -STOP "$WPID"
            out=$(ctl snapshot 2>&1) || { fail "trial $i: the harness check's snapshot: $out"; return; }
        fi
        if ended "$PID"; then
            wait_end "" > /dev/null
            fail "trial $i: a4psd ended on its own before the kill (exit status $RC)"
            return
        fi
        kill -KILL "$PID"
        wait_end "after kill -9" || return
        [ -z "${JOURNAL_HARNESS_CHECK:-}" ] || kill -CONT "$WPID"
        writers_done "$tag" || return
        rounds+=("$T/w/$tag")
        out=$(cat "$T/w/$tag/out")
        [[ $out =~ ^acked\ ([0-9]+) ]] && acks=$((acks + BASH_REMATCH[1]))
        launch || { fail "trial $i: the restart after kill -9 failed"; return; }
        if [ $((RANDOM % 2)) = 0 ] || [ "$i" = "$trials" ]; then
            halt || return
            checks=$((checks + 1))
            echo "  after trial $i (killed at $delay ms; $out):"
            # After the first failure, the totals line alone.
            if judged=$(judge "${rounds[@]}"); then
                echo "$judged"
            else
                judged_bad=$((judged_bad + 1))
                if [ "$judged_bad" = 1 ]; then
                    echo "$judged"
                    fail "trial $i: the acknowledged writes are not all there, once and in order (above)"
                else
                    head -1 <<< "$judged"
                fi
            fi
            [ "$i" = "$trials" ] || launch || { fail "trial $i: the start after the check failed"; return; }
        fi
    done
    ms=$(($(now_ms) - t0))
    echo "  $trials kill -9 trials in $ms ms ($((ms / trials)) ms each), $snaps SIGUSR1 snapshots," \
         "$acks acknowledged writes, $checks judgements ($judged_bad failed); the last one's totals above"
}

# ---- exit() from a plugin, containment off ----

# live-late-exit calls exit(0) on its fifth live call.  With
# limits.contain_exits = false nothing catches it: a4psd ends there, with no
# final snapshot, after the writers' notes were acknowledged.  The restart
# must bring every one of them back.
test_plugin_exit_no_containment() {
    new_dir jc "$PLUGINS/babs.so" "$TEST_PLUGINS/live_late_exit.so"
    babs_config '    { name = "X"; plugin = "live-late-exit"; }' \
        'limits = { contain_exits = false; };
sandbox = { wall_ms = 20000; call_ms = 1000; };'
    launch || return
    expect_contains "$(cat "$LOG")" "plugin exits are NOT CONTAINED" "the start log" || return
    local out="" n snaps
    for _ in $(seq 1200); do          # the probe in runsc first, then the load
        out=$(ctl send X work 2>&1) && break
        sleep 0.05
    done
    [ "$out" = worked ] || { fail "X never answered: $out"; return; }
    # The writes come after a snapshot: the journal is replayed past it.
    out=$(ctl snapshot 2>&1) || { fail "the first snapshot failed: $out"; return; }
    writers x1 100 || return
    writers_done x1 100 || return
    snaps=$(grep -c "snapshot written to" "$LOG")
    for n in 2 3 4; do
        out=$(ctl send X work 2>&1) || { fail "X's call $n failed early: $out"; return; }
    done
    out=$(ctl send X work 2>&1) && { fail "X's fifth call returned: $out"; return; }
    wait_end "after the plugin's exit()" || return
    echo "  a4psd ended by the plugin's exit(): exit status $RC; the fifth call: $out"
    [ "$(grep -c "snapshot written to" "$LOG")" = "$snaps" ] ||
        { fail "a4psd wrote a snapshot before it ended: the journal was not what kept the notes"; return; }
    launch || { fail "the restart after the plugin's exit() failed"; return; }
    halt || return
    check "after the restart" "$T/w/x1"
}

# ---- the disk full at shutdown ----

# The image (and what lies beside it) on a small tmpfs.  Writers store
# notes of ~3 kB, all acknowledged; the disk is then filled to the last
# block, and SIGTERM's final snapshot cannot be written.  The log must say
# so and that the journal holds everything; with the space back, the next
# start replays it.
test_disk_full_at_shutdown() {
    new_dir jc "$PLUGINS/babs.so"
    mkdir "$T/disk"
    mount -t tmpfs -o size=32m,mode=0755 tmpfs "$T/disk" || { fail "cannot mount a tmpfs"; return; }
    MNT="$T/disk"
    daemon_dir "$T/disk"
    IMAGE=disk/a4ps.img
    babs_config
    launch || return
    local out
    out=$(ctl snapshot 2>&1) || { fail "the first snapshot failed: $out"; return; }
    writers d1 50 3000 || return
    writers_done d1 50 || return
    dd if=/dev/zero of="$T/disk/fill" bs=64k status=none 2> /dev/null
    local avail
    avail=$(df --output=avail "$T/disk" | tail -1 | tr -d ' ')
    [ "$avail" = 0 ] || { fail "the tmpfs is not full: $avail kB free"; return; }
    kill -TERM "$PID"
    wait_end "after SIGTERM on a full disk" || return
    local log
    log=$(sed -n '/SIGTERM/,$p' "$LOG")       # what it said at the stop, not before
    echo "  a4psd stopped on the full disk: exit status $RC; it said:"
    sed 's/^/      /' <<< "$log"
    grep -qiE 'snapshot.*fail|fail.*snapshot' <<< "$log" ||
        { fail "the final snapshot did not fail: the disk was not full enough to test anything"; return; }
    grep -qi 'journal' <<< "$log" || fail "the log does not say that the journal holds what the snapshot lost"
    rm -f "$T/disk/fill"
    launch || { fail "the start with the space back failed"; return; }
    halt || return
    check "after the start with the space back" "$T/w/d1"
}

# A failed test's daemon logs (the last three starts'), then the usual
# clean-up (and the tmpfs).
finish() {
    if [ "$failures" != "$1" ] && [ -n "$T" ]; then
        local f n
        for n in $((LOGN - 2)) $((LOGN - 1)) $LOGN; do
            f="$T/log.$n"
            [ -e "$f" ] || continue
            echo "  ---- the log of start $n (last 40 lines) ----"
            tail -40 "$f" | sed 's/^/  | /'
        done
    fi
    if [ -n "$PID" ]; then
        ended "$PID" || kill -TERM "$PID"
        wait "$PID" 2> /dev/null
    fi
    PID=""
    [ -n "$MNT" ] && umount "$MNT"
    MNT=""
    IMAGE=""
    stop
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(kill_9_writers plugin_exit_no_containment disk_full_at_shutdown)
SEED=${SEED:-$(($(date +%s) % 32768))}
RANDOM=$SEED
echo "seed $SEED"
for t in "${tests[@]}"; do
    CURRENT=$t
    before=$failures
    started=$(now_ms)
    LOGN=0
    "test_$t"
    finish "$before"
    [ "$failures" = "$before" ] && echo "PASS $t ($(($(now_ms) - started)) ms)"
done
echo "$failures failure(s)"
exit $((failures > 0))
