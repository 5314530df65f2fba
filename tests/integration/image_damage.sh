#!/usr/bin/env bash
# image_damage.sh -- damage never erases state (issue 11): one flipped byte in
# a stored plugin binary, which quick_check does not see.  With the default
# config a4psd refuses to start and says where a verified good copy is; with
# image_recover = true it repairs the binary from the backup generation and
# loses nothing; with no copy anywhere the proto is unrestorable: shown in
# status, never recreated empty from the config, never touched by a
# snapshot, until `a4psctl destroy` (or rollback).  And `a4psctl image check`
# on the live image.  The real a4psd and a4psctl, the real SQLite file,
# damaged and read with the sqlite3 CLI.
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... image_damage.sh [TEST...]
#
# Each test starts its own a4psd in a temp dir (KEEP=1 keeps it, logs and
# all) and prints PASS or FAIL with the reason; the exit status is 1 when any
# test failed.  ctest runs it with
# the paths of the build (test `image_damage`).
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"
command -v sqlite3 > /dev/null || { echo "FAIL: the sqlite3 CLI is missing (scripts/setup installs it)"; exit 1; }

failures=0
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T=""
PID=""
LOG=""
# shellcheck disable=SC2034  # lib.sh's launch and write_config read them
LOGN=0
# shellcheck disable=SC2034
IMAGE=""                          # the image, relative to $T (a4ps.img)

recover_on() {
    sed -i 's/snapshot_interval_s = 0;/snapshot_interval_s = 0; image_recover = true;/' "$T/a4ps.cfg"
}

# What the image holds of BABS, byte for byte: its record and state rows.
babs_rows() {
    db "SELECT name, plugin, version, state_version, persona, deps, history, sum FROM protos
        WHERE name = 'BABS';
        SELECT key, hex(value), sum FROM state WHERE proto = 'BABS' ORDER BY key;"
}

BABS_SHA_Q="SELECT sha256 FROM behaviours WHERE name = 'babs' AND version = '1.0.0'"

# Flip one bit of one byte, in the middle, of the stored babs 1.0.0 binary.
flip_babs_binary() {
    local sha len off old new
    sha=$(db "$BABS_SHA_Q")
    len=$(db "SELECT length(bytes) FROM binaries WHERE sha256 = '$sha'")
    [ -n "$sha" ] && [ "${len:-0}" -gt 1000 ] || { fail "no stored babs binary ($sha, $len)"; return 1; }
    off=$((len / 2))
    old=$(db "SELECT hex(substr(bytes, $((off + 1)), 1)) FROM binaries WHERE sha256 = '$sha'")
    new=$(printf '%02X' $((16#$old ^ 1)))
    db "UPDATE binaries SET bytes = CAST(substr(bytes, 1, $off) || X'$new' ||
        substr(bytes, $((off + 2))) AS BLOB) WHERE sha256 = '$sha'" || { fail "sqlite3 update"; return 1; }
    [ "$(db "SELECT length(bytes) FROM binaries WHERE sha256 = '$sha'")" = "$len" ] ||
        { fail "the flip changed the binary's length"; return 1; }
}

# The sha256 of the stored babs binary's bytes as they are now.
stored_babs_hash() {
    local sha
    sha=$(db "$BABS_SHA_Q")
    db "SELECT writefile('$T/stored.bin', bytes) FROM binaries WHERE sha256 = '$sha'" > /dev/null
    sha256sum "$T/stored.bin" | cut -d' ' -f1
}

# BABS with 5 notes, stopped cleanly (the image and its backup generation
# IMAGE.1 hold them), then one byte of its stored binary flipped and the
# plugin directory emptied.
babs_damaged() {
    new_dir id "$PLUGINS/babs.so"
    write_config '    { name = "BABS"; plugin = "babs"; }'
    launch || return 1
    local i
    for i in 1 2 3 4 5; do
        ctl send BABS remember "note $i about the quarterly budget" > /dev/null || fail "remember $i"
    done
    expect_reply BABS count "" "5 notes" || return 1
    halt
    [ -f "$T/a4ps.img.1" ] || { fail "no backup generation a4ps.img.1 after a clean stop"; return 1; }
    flip_babs_binary || return 1
    [ "$(stored_babs_hash)" != "$(db "$BABS_SHA_Q")" ] || { fail "the flip did not change the hash"; return 1; }
    [ "$(db 'PRAGMA quick_check')" = ok ] || fail "quick_check sees the flipped byte (it should not)"
    rm -f "$T/plugins/"*.so
}

# ---- the issue's scenario ----

# Default config: refuses, names the binary and where the good copy is.
# image_recover = true: repaired from the backup, all 5 notes back.
test_repaired_from_backup() {
    babs_damaged || return
    local before rc log sha
    sha=$(db "$BABS_SHA_Q")
    before=$(babs_rows)
    run_refused "$T/refused.log"
    rc=$?
    [ "$rc" != 0 ] && [ "$rc" != 124 ] || { fail "a4psd started on a damaged binary with image_recover off ($rc)"; return; }
    log=$(cat "$T/refused.log")
    expect_contains "$log" "babs 1.0.0" "the refusal"
    expect_contains "$log" "$sha" "the refusal (the sha256)"
    expect_contains "$log" "a verified good copy is in backup generation $T/a4ps.img.1" "the refusal"
    expect_contains "$log" "image_recover = true" "the refusal"
    [ "$(stored_babs_hash)" != "$sha" ] || fail "the refusal changed the image"
    [ "$(babs_rows)" = "$before" ] || fail "the refusal changed BABS's rows"
    recover_on
    launch || return
    log=$(cat "$LOG")
    expect_contains "$log" "REPAIRED: image $T/a4ps.img: the stored binary of babs 1.0.0" "the log"
    expect_contains "$log" "from backup generation $T/a4ps.img.1" "the log"
    expect_lacks "$log" "RECOVERED" "the log (an older backup replaced the image)"
    expect_reply BABS count "" "5 notes"
    local r
    r=$(ctl send BABS recall "quarterly budget" 2>&1) || fail "recall: $r"
    expect_contains "$r" "note 5 about" "recall"
    [ "$(stored_babs_hash)" = "$sha" ] || fail "the stored binary is still damaged after the repair"
    halt
    [ "$(babs_rows)" = "$before" ] || fail "BABS's rows changed across the repair"
}

# No verified copy anywhere: BABS is unrestorable, its rows untouched by
# the config, a reload, a plugin of its name arriving, snapshots and a clean
# stop; destroy removes them.
test_unrestorable_without_copy() {
    babs_damaged || return
    rm -f "$T/a4ps.img."[0-9]*
    local before rc log st r
    before=$(babs_rows)
    [ "$(db "SELECT count(*) FROM state WHERE proto = 'BABS' AND key LIKE 'note:%'")" = 5 ] ||
        { fail "the image does not hold BABS's 5 notes"; return; }
    run_refused "$T/refused.log"
    rc=$?
    [ "$rc" != 0 ] && [ "$rc" != 124 ] || { fail "a4psd started with image_recover off ($rc)"; return; }
    log=$(cat "$T/refused.log")
    expect_contains "$log" "no verified copy exists" "the refusal"
    expect_contains "$log" "image_recover = true" "the refusal"
    recover_on
    launch || return
    log=$(cat "$LOG")
    expect_contains "$log" "proto BABS (babs 1.0.0) is UNRESTORABLE" "the log"
    expect_lacks "$log" "RECOVERED" "the log (an older backup replaced the image)"
    st=$(ctl status)
    expect_contains "$st" "unrestorable" "status"
    echo "  status: $(grep -A2 '^unrestorable' <<< "$st" | tr -s ' ' | tr '\n' '|')"
    expect_contains "$st" "fails its SHA-256" "status (the reason)"
    st=$(ctl --json status)
    expect_contains "$st" '"unrestorable":[{"name":"BABS","plugin":"babs","version":"1.0.0"' "status --json"
    r=$(ctl send BABS count 2>&1) && fail "BABS answered though unrestorable: $r"
    # A babs of another layout arrives, then a reload: the config's BABS
    # would be created empty on it -- it must not be.
    install -m 644 "$TEST_PLUGINS/babs-2.so" "$T/plugins/babs-2.so"
    for _ in $(seq 400); do
        ctl --json status | grep -q '"name":"babs","version":"2.0.0"' && break
        sleep 0.025
    done
    ctl --json status | grep -q '"name":"babs","version":"2.0.0"' || fail "babs 2.0.0 was not loaded"
    ctl reload > /dev/null || fail "reload"
    expect_lacks "$(ctl list)" "BABS" "a4psctl list (BABS recreated from the config)"
    local applied
    applied=$(grep -c "config applied" "$LOG")
    kill -HUP "$PID"
    for _ in $(seq 400); do
        [ "$(grep -c "config applied" "$LOG")" -gt "$applied" ] && break
        sleep 0.025
    done
    [ "$(grep -c "config applied" "$LOG")" -gt "$applied" ] || fail "SIGHUP: no reload in the log"
    expect_lacks "$(ctl list)" "BABS" "a4psctl list after SIGHUP (BABS recreated from the config)"
    r=$(ctl rollback BABS 2>&1) && fail "rollback onto a version of another state layout: $r"
    expect_contains "$r" "no loaded version of plugin babs keeps state layout 1" "rollback's refusal"
    r=$(ctl rollback BABS 2.0.0 2>&1) && fail "rollback BABS 2.0.0: $r"
    expect_contains "$r" "keeps state layout 2" "rollback 2.0.0's refusal"
    kill -USR1 "$PID"
    ctl snapshot > /dev/null || fail "a4psctl snapshot"
    ctl snapshot > /dev/null || fail "a4psctl snapshot"
    [ "$(babs_rows)" = "$before" ] || fail "a snapshot changed BABS's rows: $(babs_rows)"
    halt
    [ "$(babs_rows)" = "$before" ] || fail "the clean stop changed BABS's rows: $(babs_rows)"
    # Still unrestorable at the next start (babs 2.0.0 is now loaded too).
    launch || return
    expect_contains "$(ctl status)" "fails its SHA-256" "status after a restart"
    r=$(ctl destroy BABS 2>&1) || fail "destroy BABS: $r"
    expect_contains "$r" "6 state rows" "destroy's reply (5 notes and next)"
    [ "$(db "SELECT count(*) FROM state WHERE proto = 'BABS'")" = 0 ] || fail "BABS's state rows survived destroy"
    [ "$(db "SELECT count(*) FROM protos WHERE name = 'BABS'")" = 0 ] || fail "BABS's record survived destroy"
    expect_lacks "$(ctl --json status)" '"name":"BABS","plugin"' "status after destroy"
    halt
}

# The file comes back while a4psd runs: rollback brings BABS back onto it
# with its notes, and the image's binary is mended from it.
test_unrestorable_rolled_back() {
    babs_damaged || return
    rm -f "$T/a4ps.img."[0-9]*
    recover_on
    launch || return
    expect_contains "$(ctl status)" "unrestorable" "status"
    install -m 644 "$PLUGINS/babs.so" "$T/plugins/babs.so"
    for _ in $(seq 400); do
        ctl --json status | grep -q '"name":"babs","version":"1.0.0"' && break
        sleep 0.025
    done
    local r
    r=$(ctl rollback BABS 2>&1) || fail "rollback BABS: $r"
    expect_contains "$r" "back on babs 1.0.0" "rollback's reply"
    expect_reply BABS count "" "5 notes"
    expect_lacks "$(ctl --json status)" '"unrestorable":[{' "status after the rollback"
    halt
    # The rollback's snapshot mended the stored binary from the loaded copy:
    # the image alone brings BABS back now.
    [ "$(stored_babs_hash)" = "$(db "$BABS_SHA_Q")" ] || fail "the stored binary is still damaged"
    rm -f "$T/plugins/"*.so
    launch || return
    expect_lacks "$(cat "$LOG")" "UNRESTORABLE" "the log of the next start"
    expect_reply BABS count "" "5 notes"
    halt
}

# destroy on a live proto: gone from the daemon now, from the image at the
# next snapshot; on no proto at all: not found, exit 1.
test_destroy_live() {
    new_dir id "$PLUGINS/babs.so"
    write_config '    { name = "BABS"; plugin = "babs"; }'
    launch || return
    ctl send BABS remember "a note to be destroyed" > /dev/null || fail "remember"
    ctl snapshot > /dev/null || fail "snapshot"
    [ "$(db "SELECT count(*) FROM state WHERE proto = 'BABS'")" = 2 ] || fail "BABS's rows are not in the image"
    local r
    r=$(ctl destroy BABS 2>&1) || fail "destroy BABS: $r"
    expect_contains "$r" "proto BABS destroyed and removed from the image" "destroy's reply"
    expect_contains "$r" "a reload or a restart creates it again" "destroy's reply"
    r=$(ctl send BABS count 2>&1) && fail "BABS answered after destroy: $r"
    # Acknowledged means gone from the image already, with no snapshot asked.
    [ "$(db "SELECT count(*) FROM state WHERE proto = 'BABS'")" = 0 ] || fail "BABS's rows are still in the image after destroy's reply"
    r=$(ctl destroy NOPE 2>&1)
    [ $? = 1 ] || fail "destroy NOPE did not exit 1: $r"
    expect_contains "$r" "no proto named 'NOPE'" "destroy NOPE"
    halt
}

# ---- a4psctl image check ----

test_image_check() {
    new_dir id "$PLUGINS/babs.so"
    write_config '    { name = "BABS"; plugin = "babs"; }'
    launch || return
    ctl send BABS remember "the sandbox budget is 500 dollars" > /dev/null || fail "remember"
    ctl snapshot > /dev/null || fail "snapshot"
    local r
    r=$(ctl image check 2>&1) || fail "image check on a good image exited $?: $r"
    expect_contains "$r" ": ok (integrity_check, 1 binaries" "image check on a good image"
    r=$(ctl --json image check) || fail "image check --json on a good image: $r"
    expect_contains "$r" '"damaged":false' "image check --json"
    # One byte of the stored note: 500 -> 900.
    db "UPDATE state SET value = CAST(replace(CAST(value AS TEXT), 'is 500', 'is 900') AS BLOB)
        WHERE proto = 'BABS' AND key = 'note:1'" || fail "sqlite3 update"
    r=$(ctl image check 2>&1) && fail "image check passed a flipped state value: $r"
    expect_contains "$r" "DAMAGED: 1 problem" "image check"
    expect_contains "$r" "state of proto 'BABS', key 'note:1': fails its checksum" "image check"
    flip_babs_binary
    local sha
    sha=$(db "$BABS_SHA_Q")
    r=$(ctl image check 2>&1)
    [ $? = 1 ] || fail "image check on a damaged image did not exit 1: $r"
    expect_contains "$r" "DAMAGED: 2 problems" "image check"
    echo "  image check: $(tr '\n' '|' <<< "$r")"
    expect_contains "$r" "binary $sha (babs 1.0.0): its bytes hash to" "image check"
    r=$(ctl --json image check) && fail "image check --json exited 0 on a damaged image"
    expect_contains "$r" '"damaged":true' "image check --json"
    kill -9 "$PID"
    wait "$PID" 2> /dev/null
    PID=""
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(repaired_from_backup unrestorable_without_copy
                                 unrestorable_rolled_back destroy_live image_check)
for t in "${tests[@]}"; do
    CURRENT=$t
    before=$failures
    "test_$t"
    [ -n "${KEEP:-}" ] || stop
    [ "$failures" = "$before" ] && echo "PASS $t"
done
echo "$failures failure(s)"
exit $((failures > 0))
