#!/usr/bin/env bash
# journal.sh -- the journal beside the image, file by file: what kill -9
# leaves is replayed; a torn last record is cut off cleanly; a bad checksum
# in the middle stops the replay and says where (and image_recover starts
# with what came before it); a journal of another image is refused; a
# journal that cannot be written fails the sends that need it, status says
# so, and it heals when space returns; a migration that no snapshot
# recorded before the kill comes back whole; "always" and "snapshot".
# The red team's: an acknowledged rollback, a second a4psd on the same
# image, a plugin writing on its own thread, status while the journal is
# failed, a proto created while it is failed -- each then kill -9.
# The real a4psd and a4psctl, real signals, the real files (dd, truncate,
# sqlite3).
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... journal.sh [TEST...]
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"
command -v sqlite3 > /dev/null || { echo "FAIL: the sqlite3 CLI is missing (scripts/setup installs it)"; exit 1; }
command -v prlimit > /dev/null || { echo "FAIL: prlimit (util-linux) is missing"; exit 1; }

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T=""
PID=""
LOG=""
LOGN=0
# shellcheck disable=SC2034  # lib.sh's write_config reads it
IMAGE=""                          # the image, relative to $T (a4ps.img)

# A fresh temp dir: BABS on babs 1.0.0 (babs-2.so waits in $T/spare), the
# image with one backup, no interval snapshots; $1 more config lines.
babs_dir() {   # [extra]
    new_dir jn "$PLUGINS/babs.so"
    mkdir -p "$T/spare"
    install -m 644 "$TEST_PLUGINS/babs-2.so" "$T/spare/babs-2.so"
    write_config '    { name = "BABS"; plugin = "babs"; }' "image_backups = 1;${1:+
$1}"
}

# Start and expect a4psd to refuse (exit non-zero); its log is $LOG.
launch_refused() {
    LOGN=$((LOGN + 1))
    LOG="$T/log.$LOGN"
    run_refused "$LOG"
    local rc=$?
    if [ "$rc" = 124 ]; then
        kill -9 "$PID"
        wait "$PID"
        PID=""
        fail "a4psd started: $(tail -3 "$LOG")"
        return 1
    fi
    [ "$rc" != 0 ] || { fail "a4psd exited 0, expected a refusal: $(tail -3 "$LOG")"; return 1; }
}

crash() {
    kill -KILL "$PID"
    wait "$PID" 2> /dev/null
    PID=""
}

notes() {   # first last: remember "note N" for each, all acknowledged
    local n
    for n in $(seq "$1" "$2"); do
        ctl send BABS remember "note $n" > /dev/null || { fail "remember note $n was not acknowledged"; return 1; }
    done
}

count_is() {   # n what
    local want="$1 notes"
    [ "$1" = 1 ] && want="1 note"
    expect_reply BABS count "" "$want" || echo "  ($2)"
}

# Set the running daemon's file-size limit: as root (CAP_SYS_RESOURCE), or
# as its user where root lacks it -- a4psd is not dumpable after its drop, so
# that may be refused too.
limit_fsize() {   # soft limit
    prlimit --pid "$PID" --fsize="$1:unlimited" 2> /dev/null ||
        as_daemon prlimit --pid "$PID" --fsize="$1:unlimited"
}

segments() { find "$T" -maxdepth 1 -name 'a4ps.img.journal.*' | sort; }
status_journal() {   # python expression over j (status.daemon.journal)
    ctl --json status | python3 -c "import json,sys; j=json.load(sys.stdin)['daemon']['journal']; print(eval(sys.argv[1]))" "$1"
}

# Drop babs 2.0.0 into the plugin directory and wait until BABS runs it
# (its state migrated to layout 2).
upgrade_to_babs_2() {
    install -m 644 "$T/spare/babs-2.so" "$T/plugins/babs-2.so"
    for _ in $(seq 600); do
        ctl list 2> /dev/null | grep -q 'BABS.*2\.0\.0' && break
        sleep 0.05
    done
    ctl list | grep -q 'BABS.*2\.0\.0' || { fail "BABS did not move to 2.0.0: $(ctl list)"; return 1; }
}

# Cap the daemon's file size just past the journal's segment (a full disk
# for it) and send until a remember is refused.
journal_full() {
    local seg size n
    seg=$(segments | tail -1)
    size=$(stat -c %s "$seg")
    limit_fsize "$((size + 100))" || { fail "prlimit --pid failed"; return 1; }
    for n in $(seq 4 20); do
        ctl send BABS remember "refused $n" > /dev/null 2>&1 || break
    done
}

# ---- tests ----

# kill -9 loses nothing acknowledged, and the replay is cut behind the
# snapshot the start takes.
test_replay_after_kill() {
    babs_dir
    launch || return
    notes 1 20 || return
    [ "$(status_journal 'j["seq"] > j["covered"]')" = True ] || fail "status: nothing recorded past the image"
    crash
    [ -n "$(segments)" ] || { fail "kill -9 left no journal segment"; return; }
    launch || return
    count_is 20 "after kill -9"
    expect_contains "$(cat "$LOG")" "journal: 40 changes replayed" "the start's log"
    expect_contains "$(ctl send BABS recall 'note 20')" "note 20" "recall of the last note"
    # The start's snapshot holds them: the segments replayed are gone.
    local st
    st=$(status_journal '(j["covered"] >= 41, j["segments"])')
    [ "$st" = "(True, 1)" ] || fail "after the start's snapshot: covered >= 41 and one segment expected, got $st ($(segments))"
    halt
    [ "$(db "SELECT count(*) FROM state WHERE proto='BABS' AND key LIKE 'note:%'")" = 20 ] || fail "the image lacks the notes after a clean stop"
    [ -z "$(segments)" ] || fail "a clean stop left segments: $(segments)"
}

# A torn last record (a crash in the middle of a write) ends the replay
# cleanly; the file is cut back to its last whole record.
test_torn_last_record() {
    babs_dir
    launch || return
    notes 1 5 || return
    crash
    local seg
    seg=$(segments | tail -1)
    truncate -s -3 "$seg"
    launch || return
    expect_line "$(cat "$LOG")" "torn last record at offset [0-9]+ \(sequence [0-9]+" "the start's log"
    expect_contains "$(cat "$LOG")" "journal: 9 changes replayed" "the start's log"
    count_is 5 "note 5 was written before the torn 'next'"
    halt
    launch || return
    expect_lacks "$(cat "$LOG")" "torn" "the next start's log"
    halt
}

# A record that fails its checksum with more after it: the replay stops
# there and says where; a4psd does not start.  With image_recover it starts
# with what came before, and keeps the damaged segment aside.
test_bad_checksum_in_middle() {
    babs_dir
    launch || return
    notes 1 5 || return
    crash
    local seg
    seg=$(segments | tail -1)
    # The third record: header 64 bytes, then records of 8 + 16 + 4 + 6 +
    # 6 bytes (note:N = "note N") and 8 + 16 + 4 + 4 + 1 ("next" = "2").
    local third=$((64 + 40 + 33))
    printf '\xff' | dd of="$seg" bs=1 seek=$((third + 20)) conv=notrunc status=none
    launch_refused || return
    local log
    log=$(cat "$LOG")
    expect_contains "$log" "$seg is damaged" "the refusal"
    expect_contains "$log" "the record at offset $third (sequence" "the refusal"
    expect_contains "$log" "fails its checksum" "the refusal"
    expect_contains "$log" "2 records applied" "the refusal"
    expect_contains "$log" "image_recover = true" "the refusal's advice"
    [ -f "$seg" ] || fail "the refused start removed the damaged segment"
    sed -i 's/image_backups = 1;/image_backups = 1; image_recover = true;/' "$T/a4ps.cfg"
    launch || return
    expect_contains "$(cat "$LOG")" "RECOVERED" "the recovering start's log"
    count_is 1 "what came before the damaged record"
    ls "$seg".damaged-* > /dev/null 2>&1 || fail "the damaged segment was not kept aside"
    halt
}

# A segment of another image is never replayed into this one.
test_other_image_refused() {
    babs_dir
    local mine=$T
    launch || return
    notes 1 3 || return
    crash
    babs_dir
    local other=$T
    launch || return
    notes 1 2 || return
    crash
    local theirs
    theirs=$(segments | tail -1)
    T=$mine
    local name
    name=$(basename "$(segments | tail -1)")
    cp "$theirs" "$T/$name"
    chown a4ps "$T/$name"
    launch_refused || return
    expect_contains "$(cat "$LOG")" "belongs to another image" "the refusal"
    rm -rf "$other"
}

# A journal that cannot be written (a file-size limit on the daemon plays a
# full disk): the send that needed it fails with the reason, later changes
# are refused, status says so; with the limit raised the journal writes
# again by itself, and nothing that was acknowledged is lost.
test_journal_write_fails() {
    babs_dir
    launch || return
    notes 1 3 || return
    local seg size
    seg=$(segments | tail -1)
    size=$(stat -c %s "$seg")
    limit_fsize "$((size + 100))" || { fail "prlimit --pid failed"; return; }
    local r rc acked=3 n
    for n in $(seq 4 20); do
        r=$(ctl send BABS remember "note $n" 2>&1)
        rc=$?
        [ "$rc" = 0 ] && acked=$((acked + 1))
        [ "$rc" != 0 ] && break
    done
    [ "$rc" != 0 ] || { fail "every send was acknowledged past the limit"; return; }
    expect_contains "$r" "journal" "the refused send's error"
    expect_line "$r" "File too large|No space left" "the refused send's error"
    r=$(ctl send BABS remember "refused too" 2>&1) && fail "a send after the failure was acknowledged: $r"
    expect_contains "$(status_journal 'j["error"]')" "write failed" "status.daemon.journal.error"
    kill -0 "$PID" || { fail "a4psd died"; return; }
    limit_fsize unlimited || { fail "prlimit --pid failed"; return; }
    for _ in $(seq 100); do
        [ "$(status_journal 'j["error"]')" = None ] && break
        sleep 0.1
    done
    [ "$(status_journal 'j["error"]')" = None ] || { fail "the journal did not heal: $(status_journal 'j["error"]')"; return; }
    r=$(ctl send BABS remember "after the space came back" 2>&1) || fail "a send after healing: $r"
    acked=$((acked + 1))
    local before
    before=$(ctl send BABS count)
    crash
    launch || return
    expect_reply BABS count "" "$before"
    echo "  $acked acknowledged before the kill; $before after it"
    halt
}

# A migration (babs 1 -> 2 changes the state layout) that no snapshot
# recorded before kill -9: the reply barrier took that snapshot before the
# first acknowledged write after it, so the restart has every note in
# layout 2.
test_migration_then_kill() {
    babs_dir
    launch || return
    notes 1 5 || return
    upgrade_to_babs_2 || return
    notes 6 10 || return
    crash
    launch || return
    ctl list | grep -q 'BABS.*2\.0\.0' || fail "BABS came back on $(ctl list)"
    count_is 10 "after the migration and kill -9"
    [ "$(db "SELECT count(*) FROM state WHERE proto='BABS' AND key LIKE 'note:%'")" = 0 ] ||
        fail "layout-1 keys in the image after the migration"
    halt
}

# "always" recovers the same way; "snapshot" keeps no journal at all.
test_always_and_snapshot() {
    babs_dir 'durability = "always";'
    launch || return
    notes 1 5 || return
    [ "$(status_journal 'j["synced"] == j["seq"]')" = True ] || fail "always: a reply came before its fsync"
    crash
    launch || return
    count_is 5 "always after kill -9"
    halt
    sed -i 's/durability = "always";/durability = "snapshot";/' "$T/a4ps.cfg"
    launch || return
    notes 6 7 || return
    [ -z "$(segments)" ] || fail "durability snapshot wrote a journal: $(segments)"
    crash
    launch || return
    count_is 5 "snapshot: the kill loses what came after the last snapshot, as documented"
    halt
}

# A rollback acknowledged by a4psctl and then kill -9: the rollback replaced
# BABS's state whole (a RESET in the journal, which replay cannot redo), so
# its own reply must wait for a snapshot just like the first write after it.
test_rollback_then_kill() {
    babs_dir
    launch || return
    notes 1 3 || return
    upgrade_to_babs_2 || return
    notes 4 5 || return          # the snapshot after the migration is taken here
    local r
    r=$(ctl rollback BABS 1.0.0 2>&1) || { fail "rollback: $r"; return; }
    ctl list | grep -q 'BABS.*1\.0\.0' || { fail "BABS not on 1.0.0 after the rollback: $(ctl list)"; return; }
    crash
    launch || return
    ctl list | grep -q 'BABS.*1\.0\.0' || fail "the acknowledged rollback was lost by kill -9: BABS came back on $(ctl list | grep BABS)"
    halt
}

# A second a4psd on the same image (another config, another socket): it
# must not start.  Without a lock it replayed the first one's live segment,
# took its start snapshot and cut that segment behind it -- the first went
# on appending to an unlinked file, and kill -9 lost every acknowledged
# change it made after the second came up.
test_second_daemon_refused() {
    babs_dir
    launch || return
    notes 1 3 || return
    sed 's/socket = "a.sock"/socket = "b.sock"/' "$T/a4ps.cfg" > "$T/b.cfg"
    chown a4ps "$T/b.cfg" 2> /dev/null
    "$A4PSD" -c "$T/b.cfg" > "$T/log.b" 2>&1 &
    local p2=$! up=""
    for _ in $(seq 600); do
        kill -0 "$p2" 2> /dev/null || break
        "$A4PSCTL" -s "$T/b.sock" status > /dev/null 2>&1 && { up=1; break; }
        sleep 0.05
    done
    notes 4 10 || return
    if [ -n "$up" ]; then
        fail "a second a4psd started on the same image"
        kill -9 "$p2"
    fi
    wait "$p2" 2> /dev/null
    [ -n "$up" ] || expect_contains "$(cat "$T/log.b")" "in use by another a4psd" "the second one's refusal"
    crash
    launch || return
    count_is 10 "the first a4psd's acknowledged notes after kill -9"
    halt
}

# A plugin (allowed threads) whose send writes its state from a thread of
# its own and replies once it is done: the reply acknowledges the write, so
# it must not leave before the write is in the journal -- though the worker
# that sends it appended nothing itself.  Killed right after each reply.
test_thread_write_then_kill() {
    new_dir jn "$PLUGINS/babs.so" "$TEST_PLUGINS/hostile_jthread.so"
    write_config '    { name = "BABS"; plugin = "babs"; },
    { name = "JT"; plugin = "hostile_jthread"; }' 'limits = { allow_threads = [ "hostile_jthread" ]; };'
    local n r lost=0
    for n in 1 2 3 4 5; do
        launch || return
        r=$(ctl send JT set "v$n" 2>&1) || { fail "set v$n: $r"; return; }
        crash
        launch || return
        r=$(ctl send JT get 2>&1)
        [ "$r" = "v$n" ] || { lost=$((lost + 1)); echo "  acknowledged v$n, after kill -9: $r"; }
        crash
    done
    [ "$lost" = 0 ] || fail "$lost of 5 acknowledged writes made on a plugin's thread lost by kill -9"
}

# While the journal cannot be written, a4psctl status is how the operator
# learns it: every worker must answer it -- including the one whose send was
# refused (it kept that send's sequence and refused its next reply too).
test_status_while_failed() {
    babs_dir 'workers = 1;'
    sed -i '/^workers = 4;$/d' "$T/a4ps.cfg"
    launch || return
    notes 1 3 || return
    local n r
    journal_full || return
    for n in 1 2 3; do
        r=$(ctl --json status 2>&1) || { fail "status $n while the journal is failed: $r"; break; }
    done
    limit_fsize unlimited
    halt
}

# A proto created (a config reload) while the journal cannot be written (a
# full disk): its RESET must still reach the journal once the disk heals,
# or the writes to it are acknowledged with no snapshot holding it, and the
# replay after kill -9 drops them (a proto neither the image nor the kernel
# knows yet) before the config creates it again, empty.
test_creation_while_failed() {
    babs_dir
    launch || return
    notes 1 3 || return
    local r
    journal_full || return
    sed -i 's/^    { name = "BABS"; plugin = "babs"; }$/&, { name = "NEW"; plugin = "babs"; }/' "$T/a4ps.cfg"
    grep -q '"NEW"' "$T/a4ps.cfg" || { fail "the config edit did not take"; return; }
    r=$(ctl reload 2>&1) || { fail "reload: $r"; return; }
    for _ in $(seq 200); do
        ctl list 2> /dev/null | grep -q '^ *NEW ' && break
        sleep 0.05
    done
    ctl list | grep -q '^ *NEW ' || { fail "NEW was not created: $(ctl list)"; return; }
    limit_fsize unlimited || { fail "prlimit --pid failed"; return; }
    for _ in $(seq 100); do
        [ "$(status_journal 'j["error"]' 2> /dev/null)" = None ] && break
        sleep 0.1
    done
    for n in 1 2 3; do
        r=$(ctl send NEW remember "new $n" 2>&1) || { fail "remember new $n: $r"; return; }
    done
    crash
    launch || return
    expect_reply NEW count "" "3 notes" || echo "  (3 acknowledged before the kill)"
    halt
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(replay_after_kill torn_last_record bad_checksum_in_middle
                                 other_image_refused journal_write_fails migration_then_kill
                                 always_and_snapshot rollback_then_kill
                                 second_daemon_refused thread_write_then_kill
                                 status_while_failed creation_while_failed)
for t in "${tests[@]}"; do
    CURRENT=$t
    before=$failures
    t0=$(date +%s%N)
    "test_$t"
    [ -n "$PID" ] && { kill -9 "$PID" 2> /dev/null; wait "$PID" 2> /dev/null; PID=""; }
    ms=$((($(date +%s%N) - t0) / 1000000))
    if [ "$failures" = "$before" ]; then
        echo "PASS $t ($ms ms)"
        [ -n "$T" ] && rm -rf "$T"
    else
        echo "  (kept $T; last log $LOG:)"
        [ -n "$LOG" ] && tail -15 "$LOG" | sed 's/^/    /'
    fi
    T=""
done
[ "$failures" = 0 ] || { echo "$failures failure(s)"; exit 1; }
