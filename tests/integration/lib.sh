# lib.sh -- helpers shared by the integration scripts (sourced, not run).
#
# The sourcing script sets CURRENT (the test's name), T (its temp dir), PID
# (its daemon) and failures; these helpers read and update them.  The
# daemon helpers at the end (new_dir ... run_refused) also use LOG (the
# last start's log) and LOGN (starts so far, 0 at first), and IMAGE (the
# image's path relative to $T, empty for a4ps.img: set it, empty, at the
# top, so the environment's cannot leak in).

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

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Has process $1 ended (gone, or a zombie not yet reaped)?  kill -0 still
# succeeds on a zombie.
ended() {
    local s
    s=$(ps -o stat= -p "$1" 2> /dev/null) || return 0
    [[ $s == Z* ]]
}

# ---- a daemon of the test's own, on an image in $T ----

# A fresh temp dir /tmp/a4ps-PREFIX-XXXXXX as T, the daemon's, with the
# given plugin files in its plugin directory.
new_dir() {   # prefix [plugin-file...]
    T=$(mktemp -d "/tmp/a4ps-$1-XXXXXX")
    shift
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    local f
    for f in "$@"; do install -m 644 "$f" "$T/plugins/$(basename "$f")"; done
}

# $T/a4ps.cfg: the image (IMAGE, default a4ps.img), no interval snapshots
# (scripts add keys by sed after "snapshot_interval_s = 0;"), the socket
# $T/a.sock; $1 the protos, $2 extra top-level lines.
write_config() {   # protos [extra]
    cat > "$T/a4ps.cfg" <<EOF
plugin_dir = "plugins";
runtime_dir = "run";
image = "${IMAGE:-a4ps.img}"; snapshot_interval_s = 0;
log_level = "info";
workers = 4;
control = { socket = "a.sock"; };
${2:-}
protos = (
$1
);
EOF
}

# Start a4psd on $T/a4ps.cfg as PID, after an optional command prefix (e.g.
# prlimit ...), each start logging to $T/log.N of its own (LOG, LOGN); wait
# until a4psctl status answers -- generously, as a restart may replay a
# journal -- or the daemon ends.
launch() {   # [prefix-command...]
    LOGN=$((LOGN + 1))
    LOG="$T/log.$LOGN"
    "$@" "$A4PSD" -c "$T/a4ps.cfg" > "$LOG" 2>&1 &
    PID=$!
    for _ in $(seq 2400); do
        ctl status > /dev/null 2>&1 && return 0
        ended "$PID" && break
        sleep 0.05
    done
    fail "a4psd did not come up (start $LOGN): $(tail -5 "$LOG")"
}

# Stop the daemon with SIGTERM; its exit status must be 0 (a sanitizer's
# report, if any, is the reason given).
halt() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID"
    wait "$PID"
    local rc=$?
    PID=""
    [ "$rc" = 0 ] && return 0
    local why
    why=$(grep -m2 -E 'ERROR: [A-Za-z]+Sanitizer|^SUMMARY: ' "$LOG") || why=$(tail -3 "$LOG")
    fail "a4psd exited $rc at shutdown: $why"
}

# Start a4psd where it must refuse to start, its output to $1.  Returns its
# exit status, or 124 when it came up instead (or in two minutes neither
# came up nor ended): left running as PID for the caller to look at.
run_refused() {   # logfile
    "$A4PSD" -c "$T/a4ps.cfg" > "$1" 2>&1 &
    local p=$!
    for _ in $(seq 2400); do
        if ended "$p"; then
            wait "$p"
            return
        fi
        if ctl status > /dev/null 2>&1; then
            PID=$p
            return 124
        fi
        sleep 0.05
    done
    PID=$p
    return 124
}
