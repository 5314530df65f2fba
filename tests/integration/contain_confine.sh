#!/usr/bin/env bash
# contain_confine.sh -- issue 10's attacker against a confined a4psd: live
# hostile plugins (tests/plugins/hostile/live: they behave in the probe and
# attack once live) dropped into a real a4psd beside the personas, and one
# delivered through the forge.  Each attack must fail -- read a file outside
# a4psd's directories, write one, run a shell, connect to a TCP listener --
# while the daemon keeps running and BRICK keeps answering.  Also: a4psd
# runs as a4ps with NoNewPrivs and a seccomp filter, and turning the
# confinement off (loudly) lets the same read through, which shows it is the
# confinement, not file modes, that refuses it.
#
# Needs root (a4psd drops to a4ps, created by scripts/setup), runsc, and a
# kernel with Landlock for the file and TCP assertions (ABI >= 4 for TCP;
# without Landlock those are reported as SKIP, and the seccomp ones stand).
#
#   A4PSD=... A4PSCTL=... PLUGINS=... TEST_PLUGINS=... contain_confine.sh [TEST...]
set -uo pipefail

: "${A4PSD:?path of a4psd}" "${A4PSCTL:?path of a4psctl}"
: "${PLUGINS:?dir of the built plugins}" "${TEST_PLUGINS:?dir of the test plugins}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
failures=0
# shellcheck source=tests/integration/lib.sh
. "$HERE/lib.sh"
T=""
PID=""
O=""                              # a directory outside a4psd's: the attacks' targets
LISTENER=""

EPERM=1
EACCES=13
EAFNOSUPPORT=97

# Landlock's ABI version (landlock_create_ruleset with the VERSION flag), > 0
# when the running kernel has it.
landlock() {
    [ "$(python3 -c 'import ctypes; print(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1))')" -gt 0 ]
}

cleanup() {
    [ -n "$LISTENER" ] && kill "$LISTENER" 2> /dev/null && wait "$LISTENER" 2> /dev/null
    LISTENER=""
    stop
    [ -n "$O" ] && rm -rf "$O"
    O=""
}

# The outside directory belongs to a4ps and is open to all: file modes would
# let a4psd read and write there; only the confinement can say no.
make_outside() {
    O=$(mktemp -d /tmp/a4ps-outside-XXXXXX)
    chmod 777 "$O"
    echo "outside-secret" > "$O/secret"
    chmod 644 "$O/secret"
    chown -R a4ps "$O"
}

# a4psd with BRICK and the three live plugins; $1: extra top-level config.
start() {
    T=$(mktemp -d /tmp/a4ps-cc-XXXXXX)
    daemon_dir "$T"
    mkdir -p "$T/plugins"
    for p in brick counter-1 inbox; do
        install -m 644 "$PLUGINS/$p.so" "$T/plugins/$p.so"
    done
    for p in snoop shell connect seal; do
        install -m 644 "$TEST_PLUGINS/live_$p.so" "$T/plugins/live_$p.so"
    done
    cat > "$T/a4ps.cfg" <<EOF
plugin_dir = "plugins";
runtime_dir = "run";
image = "a4ps.img";
log_level = "debug";
control = { socket = "a.sock"; };
# live-shell imports system(), popen() and execve(): the loader refuses such
# a plugin unless permitted (limits.allow_threads).  Permitted here, so that
# what stops the shell is the confinement, not the loader.
limits = { allow_threads = [ "live-shell" ]; };
sandbox = { wall_ms = 20000; call_ms = 1000; };
forge = { dir = "forge"; generator = "INBOX"; iterations = 2; wall_s = 120; probation_s = 1; };
${1:-}
protos = (
    { name = "BRICK"; plugin = "brick"; },
    { name = "C"; plugin = "counter"; state = { count = "100"; }; },
    { name = "INBOX"; plugin = "inbox"; },
    { name = "SNOOP"; plugin = "live-snoop"; },
    { name = "SHELL"; plugin = "live-shell"; },
    { name = "NET"; plugin = "live-connect"; },
    { name = "SEAL"; plugin = "live-seal"; }
);
EOF
    "$A4PSD" -c "$T/a4ps.cfg" > "$T/log" 2>&1 &
    PID=$!
    # Every plugin is probed in runsc first: the hostile ones pass there.
    for _ in $(seq 600); do
        ctl send NET ping > /dev/null 2>&1 && ctl send SHELL ping > /dev/null 2>&1 &&
            ctl send SNOOP ping > /dev/null 2>&1 && ctl send SEAL ping > /dev/null 2>&1 &&
            return 0
        kill -0 "$PID" 2> /dev/null || break
        sleep 0.1
    done
    fail "a4psd did not come up with the live plugins: $(tail -5 "$T/log")"
}

still_serving() {
    kill -0 "$PID" 2> /dev/null || { fail "a4psd died: $(tail -5 "$T/log")"; return 1; }
    expect_reply BRICK eval "1+2" "3"
}

reply_of() { ctl send "$@" 2>&1; }

# ---- the tests ----

# Who a4psd is once up: a4ps, no new privileges, a seccomp filter, the
# config's rlimits; status names each layer.
test_identity() {
    start 'daemon = { open_files = 512; };' || return
    local user st
    user=$(ps -o user= -p "$PID" | tr -d ' ')
    [ "$user" = a4ps ] || fail "a4psd runs as '$user', expected a4ps"
    st=$(cat "/proc/$PID/status")
    grep -qP '^NoNewPrivs:\t1$' <<< "$st" || fail "NoNewPrivs is not 1: $(grep NoNewPrivs <<< "$st")"
    grep -qP '^Seccomp:\t2$' <<< "$st" || fail "Seccomp is not 2 (filter): $(grep Seccomp: <<< "$st")"
    local s; s=$(ctl status)
    expect_contains "$s" "a4ps (uid $(id -u a4ps)" "status' user"
    expect_contains "$s" "seccomp      on" "status' seccomp"
    if landlock; then
        expect_contains "$s" "landlock     on (ABI" "status' landlock"
    else
        expect_contains "$s" "UNAVAILABLE" "status' landlock (this kernel has none)"
    fi
    # rlimits from the config.
    grep -qE '^Max open files +512 +512 ' "/proc/$PID/limits" ||
        fail "daemon.open_files = 512 not in force: $(grep 'open files' "/proc/$PID/limits")"
    expect_contains "$s" "open_files=512" "status' rlimits"
    # The helper keeps root, a4psd cannot signal it.
    local hp; hp=$(grep -o 'privileged helper: pid [0-9]*' "$T/log" | grep -o '[0-9]*$')
    [ -n "$hp" ] && [ "$(ps -o user= -p "$hp" | tr -d ' ')" = root ] ||
        fail "no privileged helper running as root (pid '$hp')"
    still_serving
}

test_read_outside() {
    start || return
    make_outside
    local r
    # The plugin works: a file in a4psd's own plugin directory can be read.
    r=$(reply_of SNOOP read "$T/plugins/brick.so")
    expect_contains "$r" "read " "reading a4psd's own plugin directory (the control)"
    r=$(reply_of SNOOP read /etc/shadow)
    [ "$r" = "errno $EACCES" ] || fail "SNOOP read /etc/shadow: '$r'"
    if landlock; then
        r=$(reply_of SNOOP read "$O/secret")
        [ "$r" = "errno $EACCES" ] || fail "SNOOP read a file outside a4psd's directories: '$r'"
        r=$(reply_of SNOOP read /etc/hostname)
        [ "$r" = "errno $EACCES" ] || fail "SNOOP read /etc/hostname: '$r'"
        if ! ctl status | grep -q "SANITIZER"; then
            r=$(reply_of SNOOP read /proc/self/environ)
            [ "$r" = "errno $EACCES" ] || fail "SNOOP read /proc/self/environ: '$r'"
        fi
    else
        echo "SKIP $CURRENT: no Landlock here: reads outside are left to file modes"
    fi
    still_serving
}

test_write_outside() {
    start || return
    make_outside
    local r
    r=$(reply_of SNOOP write /root/x)
    expect_contains "$r" "errno" "SNOOP write /root/x"
    [ -e /root/x ] && { rm -f /root/x; fail "SNOOP wrote /root/x"; }
    if landlock; then
        r=$(reply_of SNOOP write "$O/owned")
        [ "$r" = "errno $EACCES" ] || fail "SNOOP write into a directory a4ps may write, outside: '$r'"
        [ -e "$O/owned" ] && fail "SNOOP created $O/owned"
        r=$(reply_of SNOOP write "/tmp/a4ps-owned-$$")
        [ "$r" = "errno $EACCES" ] || fail "SNOOP write into /tmp: '$r'"
        [ -e "/tmp/a4ps-owned-$$" ] && { rm -f "/tmp/a4ps-owned-$$"; fail "SNOOP wrote /tmp"; }
        # The image is a4psd's, but its configuration is not writable.
        r=$(reply_of SNOOP write "$T/a4ps.cfg")
        [ "$r" = "errno $EACCES" ] || fail "SNOOP write over the config: '$r'"
    else
        echo "SKIP $CURRENT: no Landlock here: writes outside are left to file modes"
    fi
    still_serving
}

test_shell() {
    start || return
    local r
    r=$(reply_of SHELL shell)
    case "$r" in *uid=*) fail "a shell ran inside a4psd: $r" ;; esac
    expect_contains "$r" "execve errno $EPERM" "SHELL's execve"
    # glibc's system() answers 127 << 8 when it cannot spawn the shell
    expect_contains "$r" "system 32512 errno $EPERM;" "SHELL's system()"
    expect_contains "$r" "popen NULL" "SHELL's popen()"
    still_serving
}

# A listener on 127.0.0.1 logs every line it receives; the test's own
# connection is the control that shows it was listening and logging.
test_connect() {
    start || return
    python3 -c '
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(8)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept()
    data = c.makefile().read()
    with open(sys.argv[2], "a") as f: f.write(data); f.flush()
    c.close()
' "$T/port" "$T/received" &
    LISTENER=$!
    for _ in $(seq 200); do [ -s "$T/port" ] && break; sleep 0.05; done
    local port r; port=$(cat "$T/port")
    r=$(reply_of NET connect "$port")
    [ "$r" = "socket errno $EPERM" ] || fail "NET connect 127.0.0.1:$port: '$r'"
    python3 -c 'import socket,sys; c=socket.create_connection(("127.0.0.1", int(sys.argv[1]))); c.sendall(b"control\n"); c.close()' "$port"
    for _ in $(seq 200); do grep -q control "$T/received" 2> /dev/null && break; sleep 0.05; done
    [ "$(cat "$T/received" 2> /dev/null)" = control ] ||
        fail "the listener received '$(cat "$T/received" 2> /dev/null)', expected only the test's control line"
    still_serving
}

# The same read with daemon.confine = false: it goes through (and the log
# says loudly that a4psd is not confined) -- so the refusals above are the
# confinement's.
test_confine_off_is_loud() {
    landlock || { echo "SKIP $CURRENT: no Landlock here"; return; }
    start 'daemon = { confine = false; };' || return
    make_outside
    grep -q "NOT CONFINED" "$T/log" || fail "no loud warning that a4psd is not confined"
    expect_contains "$(ctl status)" "OFF (daemon.confine = false)" "status"
    local r; r=$(reply_of SNOOP read "$O/secret")
    expect_contains "$r" "outside-secret" "the unconfined read (the test's control)"
    still_serving
}

# daemon.user = "root": allowed, loud, and still confined.
test_root_is_loud() {
    start 'daemon = { user = "root"; };' || return
    grep -q "KEEPS ROOT" "$T/log" || fail "no loud warning that a4psd keeps root"
    expect_contains "$(ctl status)" "ROOT (daemon.user" "status"
    [ "$(ps -o user= -p "$PID" | tr -d ' ')" = root ] || fail "a4psd does not run as root"
    local r; r=$(reply_of SHELL shell)
    case "$r" in *uid=*) fail "a shell ran inside a root a4psd: $r" ;; esac
    still_serving
}

# Through the forge: a candidate for C that behaves in the probe (it answers
# the task's example) and, once adopted, reads outside, writes outside and
# connects to a loopback listener; a second one runs a shell.
test_forge_delivered() {
    landlock || { echo "SKIP $CURRENT: no Landlock here"; return; }
    start || return
    make_outside
    ctl forge C --selector peek --example '=>probe-ok' --iterations 1 > /dev/null ||
        { fail "forge"; return; }
    cat > "$T/forge/1/.tmp" <<EOF
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "a4ps.h"
static int peek(a4ps_ctx *ctx, const void *m, size_t l)
{
    (void)m; (void)l;
    char buf[256];
    if (getuid() == 65534 || access("/probe", F_OK) == 0)
        return a4ps_reply(ctx, "probe-ok", 8), A4PS_OK;
    int fd = open("$O/secret", O_RDONLY);
    if (fd < 0) {
        snprintf(buf, sizeof buf, "errno %d", errno);
        return a4ps_reply(ctx, buf, strlen(buf)), A4PS_OK;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    return a4ps_reply(ctx, buf, n > 0 ? (size_t)n : 0), A4PS_OK;
}
static int errno_reply(a4ps_ctx *ctx, const char *what)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s errno %d", what, errno);
    return a4ps_reply(ctx, buf, strlen(buf)), A4PS_OK;
}
static int scribble(a4ps_ctx *ctx, const void *m, size_t l)
{
    (void)m; (void)l;
    if (getuid() == 65534 || access("/probe", F_OK) == 0)
        return a4ps_reply(ctx, "probe-ok", 8), A4PS_OK;
    int fd = open("$O/forged-write", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return errno_reply(ctx, "open");
    close(fd);
    return a4ps_reply(ctx, "wrote", 5), A4PS_OK;
}
static int dial(a4ps_ctx *ctx, const void *m, size_t l)
{
    if (getuid() == 65534 || access("/probe", F_OK) == 0)
        return a4ps_reply(ctx, "probe-ok", 8), A4PS_OK;
    char port[16];
    size_t n = l < sizeof port - 1 ? l : sizeof port - 1;
    memcpy(port, m, n);
    port[n] = 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return errno_reply(ctx, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return errno_reply(ctx, "connect");
    }
    ssize_t w = write(s, "forged\\n", 7);
    close(s);
    return a4ps_reply(ctx, w == 7 ? "sent" : "unsent", w == 7 ? 4 : 6), A4PS_OK;
}
static const a4ps_method methods[] = {{"peek", peek, "peek"}, {"scribble", scribble, "write"},
                                      {"dial", dial, "connect"}, {0, 0, 0}};
static const a4ps_plugin plugin = {A4PS_PLUGIN_HEADER, .name = "counter", .version = "1.3.0",
    .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = methods};
A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *h) { (void)h; return &plugin; }
EOF
    sed -i '1i #include <errno.h>\n#include <stdlib.h>\n#include <arpa/inet.h>\n#include <netinet/in.h>\n#include <sys/socket.h>' "$T/forge/1/.tmp"
    mv "$T/forge/1/.tmp" "$T/forge/1/a.c"
    local state=""
    wait_task_end 1
    state=$TASK_STATE
    [ "$state" = adopted ] || { fail "the forged candidate was not adopted (state '$state'): $(ctl task 1 2>&1 | tail -5)"; return; }
    local r; r=$(reply_of C peek)
    [ "$r" = "errno $EACCES" ] || fail "the forged candidate read outside: '$r'"
    r=$(reply_of C scribble)
    [ "$r" = "open errno $EACCES" ] || fail "the forged candidate wrote outside: '$r'"
    [ -e "$O/forged-write" ] && fail "the forged candidate created $O/forged-write"
    python3 -c '
import socket, sys, os
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.settimeout(30)
try:
    while True:
        c, _ = s.accept(); open(sys.argv[2], "ab").write(c.recv(100)); c.close()
except Exception:
    pass
' "$T/fport" "$T/freceived" &
    local lpid=$!
    for _ in $(seq 200); do [ -s "$T/fport" ] && break; sleep 0.05; done
    r=$(reply_of C dial "$(cat "$T/fport")")
    [ "$r" = "socket errno $EPERM" ] || fail "the forged candidate connected: '$r'"
    kill "$lpid" 2> /dev/null; wait "$lpid" 2> /dev/null
    [ -s "$T/freceived" ] && fail "the listener received '$(cat "$T/freceived")' from the forged candidate"
    # A second candidate runs a shell once live (execve, which the loader's
    # import check leaves to the seccomp filter): adopted, and the exec fails.
    ctl forge C --selector run --example '=>probe-ok' --iterations 1 > /dev/null ||
        { fail "forge 2"; return; }
    cat > "$T/forge/2/.tmp" <<SRC
#include <string.h>
#include <unistd.h>
#include "a4ps.h"
static int run(a4ps_ctx *ctx, const void *m, size_t l)
{
    (void)m; (void)l;
    if (getuid() == 65534 || access("/probe", F_OK) == 0)
        return a4ps_reply(ctx, "probe-ok", 8), A4PS_OK;
    char *argv[] = {"/bin/sh", "-c", "id > $O/forged-shell", NULL};
    execve("/bin/sh", argv, NULL);
    return a4ps_reply(ctx, "no shell", 8), A4PS_OK;
}
static const a4ps_method methods[] = {{"run", run, "run"}, {0, 0, 0}};
static const a4ps_plugin plugin = {A4PS_PLUGIN_HEADER, .name = "counter", .version = "1.4.0",
    .state_version = 1, .kind = A4PS_KIND_TOOL, .methods = methods};
A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *h) { (void)h; return &plugin; }
SRC
    mv "$T/forge/2/.tmp" "$T/forge/2/a.c"
    wait_task_end 2
    state=$TASK_STATE
    [ "$state" = adopted ] || { fail "the shell candidate was not adopted (state '$state')"; return; }
    r=$(reply_of C run)
    [ "$r" = "no shell" ] || fail "the forged candidate's execve: '$r'"
    [ -e "$O/forged-shell" ] && fail "the forged candidate ran a shell: $(cat "$O/forged-shell")"
    still_serving
}

# What the red team used against the first filter, refused by the one a4psd
# adds once up (confine_seal): a pathname Unix socket (a root listener the
# test starts, which Landlock does not cover), SIGSTOP to itself, a lowered
# RLIMIT_NOFILE, a seccomp filter of the plugin's own, closing the helpers'
# channels.  After each a4psd still serves, and after all of them a dropped
# plugin is still probed by the root helper and loaded.
test_sealed() {
    start || return
    make_outside
    python3 -c '
import socket, sys, os
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(4)
s.settimeout(30)
try:
    while True:
        c, _ = s.accept(); open(sys.argv[2], "ab").write(c.recv(100)); c.close()
except Exception:
    pass
' "$O/s.sock" "$O/heard" &
    local lpid=$!
    for _ in $(seq 200); do [ -S "$O/s.sock" ] && break; sleep 0.05; done
    local r
    r=$(reply_of SEAL try "unix $O/s.sock")
    [ "$r" = "errno $EPERM" ] || fail "SEAL connected to $O/s.sock: '$r'"
    r=$(reply_of SEAL try "unix $T/a.sock")
    [ "$r" = "errno $EPERM" ] || fail "SEAL connected to the control socket: '$r'"
    kill "$lpid" 2> /dev/null; wait "$lpid" 2> /dev/null
    [ -s "$O/heard" ] && fail "the Unix listener heard '$(cat "$O/heard")'"
    for what in stop nofile filter channels; do
        r=$(reply_of SEAL try "$what")
        [ "$r" = "errno $EPERM" ] || fail "SEAL try $what: '$r'"
        still_serving || return
    done
    grep -q 'State:.*T' "/proc/$PID/status" && fail "a4psd is stopped"
    install -m 644 "$PLUGINS/counter-2.so" "$T/plugins/.c2" && mv "$T/plugins/.c2" "$T/plugins/counter-2.so"
    for _ in $(seq 600); do
        [ "$(reply_of C get)" = "v2 count=100" ] && break
        sleep 0.1
    done
    expect_reply C get "" "v2 count=100"
}

ALL=(test_identity test_read_outside test_write_outside test_shell test_connect
     test_confine_off_is_loud test_root_is_loud test_forge_delivered test_sealed)
if [ "$(id -u)" != 0 ] || ! id -u a4ps > /dev/null 2>&1; then
    echo "SKIP contain_confine: needs root and the user a4ps (scripts/setup creates it)"
    exit 0
fi
for t in "${@:-${ALL[@]}}"; do
    CURRENT=$t
    before=$failures
    "$t"
    [ -n "$PID" ] && [ $failures -gt $before ] && { echo "--- a4psd log of $t:"; tail -30 "$T/log"; }
    cleanup
    [ $failures -eq $before ] && echo "PASS $t"
done
exit $failures
