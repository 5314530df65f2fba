# lib.sh -- helpers shared by the integration scripts (sourced, not run).
#
# The sourcing script sets CURRENT (the test's name), T (its temp dir), PID
# (its daemon) and failures; these helpers read and update them.

# a4psd, started as root, drops to its own user (daemon.user, "a4ps"): the
# test's directory plays the part of its data directory (the image and its
# backups, the control socket), which must be that user's.  Its other files
# stay root's and readable.
daemon_dir() { chmod 755 "$1" && chown a4ps "$1"; }
# What acts on the running a4psd as its own user would (prlimit --pid needs
# the same uid, or CAP_SYS_RESOURCE, which a container's root may lack).
as_daemon() { setpriv --reuid=a4ps --regid="$(id -g a4ps)" --clear-groups "$@"; }

fail() { echo "FAIL $CURRENT: $*"; failures=$((failures + 1)); return 1; }
ctl() { "$A4PSCTL" -s "$T/a.sock" "$@"; }

# Stop the test's daemon (if it still runs) and remove its directory.
stop() {
    if [ -n "$PID" ] && kill -0 "$PID" 2> /dev/null; then
        kill -TERM "$PID"
        wait "$PID" 2> /dev/null
    fi
    PID=""
    [ -n "$T" ] && rm -rf "$T"
    T=""
}

# A forge task's field: $2 is a Python expression over the task t.
task_field() {   # id expression
    ctl --json task "$1" | python3 -c "import json,sys; t=json.load(sys.stdin); print(eval(sys.argv[1]))" "$2"
}

# Wait until task $1 ends (adopted, failed or cancelled); its state is then
# in TASK_STATE.  Fails the test when it never does.
wait_task_end() {   # id
    TASK_STATE=""
    for _ in $(seq 600); do
        TASK_STATE=$(task_field "$1" 't["state"]' 2> /dev/null)
        case "$TASK_STATE" in failed|adopted|cancelled) return 0 ;; esac
        sleep 0.1
    done
    fail "task $1 did not end (state '$TASK_STATE')"
}

expect_reply() {   # proto selector payload expected
    local got
    got=$(ctl send "$1" "$2" "$3" 2>&1) || { fail "send $1 $2 '$3' failed: $got"; return 1; }
    [ "$got" = "$4" ] || { fail "send $1 $2 '$3': got '$got', expected '$4'"; return 1; }
}

expect_contains() {   # text needle what
    case "$1" in *"$2"*) return 0 ;; esac
    fail "$3 does not contain '$2': $1"
}

expect_line() {   # text extended-regex what: some line of text matches
    grep -qE -- "$2" <<< "$1" || fail "$3 has no line matching '$2': $1"
}

expect_lacks() {   # text needle what
    case "$1" in *"$2"*) fail "$3 contains '$2': $1" ;; esac
    return 0
}

db() { sqlite3 -batch "$T/a4ps.img" "$@"; }
