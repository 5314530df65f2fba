/* a4psctl.c -- the operator's client for a4psd, the A4PS daemon.
 *
 * One request per run over the daemon's Unix control socket: a JSON object
 * on one '\n'-terminated line, answered by one JSON line
 * {"ok":true,"result":...} or {"ok":false,"code":...,"error":...}
 * (`events --follow` then keeps reading one {"event":...} line per event).
 * Prints the result for a human, or as one compact JSON line with --json,
 * and tells the ways a run can fail apart by exit status (see usage_text). */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "a4ps.h"

/* Exit statuses; every function that can fail returns one of these. */
enum {
    CTL_OK = 0,
    CTL_EREPLY = 1,      /* the daemon answered with an error */
    CTL_EUSAGE = 2,      /* bad arguments, unreadable config, request too big */
    CTL_EDOWN = 3,       /* a4psd not running, or shutting down */
    CTL_EREFUSED = 4,    /* this uid may not use the daemon */
    CTL_EIO = 5,         /* protocol or I/O error, timeout */
};

/* Results of the socket layer; its callers, who know what was being
 * attempted, turn them into messages and exit statuses. */
enum { IO_OK, IO_EOF, IO_TIMEOUT, IO_TOOLONG, IO_ERR };

#define REQUEST_MAX (1u << 20)   /* the daemon refuses longer request lines */
#define REPLY_MAX (16u << 20)    /* we refuse longer reply lines */
#define DEFAULT_TIMEOUT_S 30.0
#define DEFAULT_SOCKET "/run/a4ps/a4ps.sock"
#define LOCAL_SOCKET "var/a4ps.sock"
#define DEFAULT_CONFIG "config/a4ps.cfg"

static const char usage_text[] =
    "usage: a4psctl [-s SOCKET | -c CONFIG] [--json] [--timeout SECONDS] COMMAND [ARGS]\n"
    "\n"
    "Drives a4psd, the A4PS daemon, through its control socket.\n"
    "\n"
    "commands:\n"
    "  status               uptime, protos (with their version's calls and net\n"
    "                       bytes allocated), versions with hashes, draining and\n"
    "                       quarantined versions, last errors, event-bus counters,\n"
    "                       unrestorable protos: in the image, their version could\n"
    "                       not come back (--json: daemon.unrestorable, each with\n"
    "                       name, plugin, version, state_version, reason)\n"
    "  list                 the protos: name, plugin, version\n"
    "  explain PROTO        one proto in full: plugin, methods, state, lineage\n"
    "  history PROTO        the versions of the proto's plugin: status, hash,\n"
    "                       parent, calls, bytes allocated/freed/net in them;\n"
    "                       which one it runs and which it ran before\n"
    "  rollback PROTO [VERSION]\n"
    "                       go back to the previous version, or to VERSION, from\n"
    "                       the daemon's stored binary (no file needed); for an\n"
    "                       unrestorable proto (status): bring it back from its\n"
    "                       rows in the image onto VERSION (default: the newest\n"
    "                       loaded version of its plugin with its state layout)\n"
    "  destroy PROTO        remove a proto: an unrestorable one from the image now,\n"
    "                       a live one from the daemon (the image at the next\n"
    "                       snapshot)\n"
    "  send PROTO SELECTOR [PAYLOAD]\n"
    "                       call a method and print its reply; PAYLOAD \"-\", or no\n"
    "                       PAYLOAD while stdin is not a terminal, reads stdin\n"
    "  reload               re-read the config and rescan the plugin directory (as\n"
    "                       SIGHUP); a broken config is reported and not applied\n"
    "  snapshot             write an image snapshot now (as SIGUSR1)\n"
    "  events [--follow]    recent events, one a line: SEQ TIME EVENT DATA;\n"
    "                       --follow prints new ones as they come, until interrupted\n"
    "  image check          the full check of the live image: integrity_check,\n"
    "                       every binary's SHA-256, every row's checksum; prints\n"
    "                       each problem, or ok; exit 1 when it is damaged\n"
    "  stats                allocator and kernel statistics\n"
    "  forge PROTO [--selector NAME] [--example 'INPUT=>OUTPUT']... [--goal TEXT]\n"
    "        [--plugin NEW] [--generator PROTO] [--iterations N] [--wall SECONDS]\n"
    "        [--probation SECONDS] [--wait]\n"
    "                       open a forge task: a generator writes a new version of\n"
    "                       PROTO's plugin (or NEW, for a proto that does not exist\n"
    "                       yet), tested in the sandbox against the examples, then\n"
    "                       swapped in; --wait follows it to the end (exit 0 when\n"
    "                       adopted, 1 when not)\n"
    "  tasks                forge tasks: state, stage, iteration, result\n"
    "  task ID [--source]   one task: its stages and every attempt (verdict,\n"
    "                       diagnostics, failures); --source prints the sources too\n"
    "  cancel ID            stop a queued or running task\n"
    "  help                 this text\n"
    "\n"
    "options:\n"
    "  -s, --socket SOCKET  the daemon's control socket\n"
    "  -c, --config CONFIG  use control.socket from the daemon's config file (a\n"
    "                       relative path is relative to CONFIG's directory)\n"
    "  -j, --json           print the result as one compact JSON line, for scripts\n"
    "                       (an error reply: its JSON object); events --follow: one\n"
    "                       JSON line per event\n"
    "  -t, --timeout SECONDS  wait at most this long for a reply (default 30; 0: for\n"
    "                       ever; never applies to events arriving with --follow)\n"
    "  -h, --help           this text\n"
    "\n"
    "The socket is, in this order: -s; control.socket of -c CONFIG; $A4PS_SOCKET;\n"
    LOCAL_SOCKET " if it exists in the current directory; " DEFAULT_SOCKET ".\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  the daemon answered with an error (no such proto, bad request, the\n"
    "     operation failed; for send the method's reply goes to stderr), or a\n"
    "     reload was not applied\n"
    "  2  usage error: bad arguments, unreadable config, request over 1 MiB\n"
    "  3  a4psd is not running (no socket, connection refused) or shutting down\n"
    "  4  refused: this uid may not use the daemon (control.uids, the socket's\n"
    "     mode and group)\n"
    "  5  protocol or I/O error, or no reply within the timeout\n";

/* The parsed command line: the only state that outlives a function. */
typedef struct ctl_opts {
    const char *socket;          /* -s */
    const char *config;          /* -c */
    bool json;
    bool follow;                 /* events --follow */
    double timeout_s;            /* 0: no limit */
    const char *cmd;
    char **args;                 /* the command's positional arguments */
    int nargs;
    /* forge's options */
    const char *selector, *goal, *plugin, *generator;
    const char *examples[256];
    int nexamples;
    long iterations, wall_s, probation_s;  /* -1: the daemon's default */
    bool wait;                   /* forge --wait */
    bool source;                 /* task --source */
} ctl_opts;

/* One connection to the daemon and its read buffer: bytes [off, len) are
 * received and not yet consumed, and [off, scan) holds no '\n'. */
typedef struct conn {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char origin[PATH_MAX + 64];  /* how the path was chosen, for messages */
    char *buf;
    size_t off, scan, len, cap;
} conn;

/* A parsed reply line; result, code, error and status borrow from root. */
typedef struct reply {
    json_t *root;
    bool ok;
    json_t *result;
    const char *code;
    const char *error;
    json_t *status;
} reply;

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("a4psctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("a4psctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'a4psctl --help'.\n", stderr);
    va_end(ap);
    return CTL_EUSAGE;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* "uid 1000 (alice)", for messages about access. */
static void who_am_i(char *buf, size_t size)
{
    uid_t uid = getuid();
    struct passwd *pw = getpwuid(uid);
    if (pw)
        snprintf(buf, size, "uid %u (%s)", (unsigned)uid, pw->pw_name);
    else
        snprintf(buf, size, "uid %u", (unsigned)uid);
}

/* ---- Finding and reaching the daemon ---- */

/* Reads control.socket from the libconfig file into c->path; a relative
 * path is relative to the file's directory, as the daemon takes it. */
static int socket_from_config(const char *file, conn *c)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(file, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else                         /* "/a4ps.cfg" is in "/" */
        snprintf(dir, sizeof dir, "%.*s", slash == file ? 1 : (int)(slash - file), file);
    FILE *f = fopen(file, "r");
    if (!f) {
        errmsg("cannot read the config %s: %s", file, strerror(errno));
        return CTL_EUSAGE;
    }
    config_t cfg;
    config_init(&cfg);
    config_set_include_dir(&cfg, dir);
    int rc = CTL_EUSAGE;
    const char *sock;
    if (config_read(&cfg, f) != CONFIG_TRUE) {
        const char *where = config_error_file(&cfg);
        errmsg("%s:%d: %s", where ? where : file, config_error_line(&cfg),
               config_error_text(&cfg));
    } else if (!config_lookup_string(&cfg, "control.socket", &sock)) {
        errmsg("%s: no control.socket string in it; name the socket with -s", file);
    } else {
        int n = sock[0] == '/' ? snprintf(c->path, sizeof c->path, "%s", sock)
                               : snprintf(c->path, sizeof c->path, "%s/%s", dir, sock);
        if (n < 0 || (size_t)n >= sizeof c->path)
            errmsg("%s: control.socket makes a path over %zu bytes, too long for a socket",
                   file, sizeof c->path - 1);
        else
            rc = CTL_OK;
        snprintf(c->origin, sizeof c->origin, "control.socket in %s", file);
    }
    config_destroy(&cfg);
    fclose(f);
    return rc;
}

/* Chooses the socket: -s, control.socket of -c, $A4PS_SOCKET, ./var/a4ps.sock
 * if it exists, then the system default. */
static int resolve_socket(const ctl_opts *o, conn *c)
{
    if (o->config)
        return socket_from_config(o->config, c);
    const char *path = o->socket, *origin = "-s", *env = getenv("A4PS_SOCKET");
    struct stat st;
    if (!path && env && *env) {
        path = env;
        origin = "$A4PS_SOCKET";
    } else if (!path && lstat(LOCAL_SOCKET, &st) == 0) {
        path = LOCAL_SOCKET;
        origin = "found in the current directory";
    } else if (!path) {
        path = DEFAULT_SOCKET;
        origin = "the default";
    }
    if (!*path || strlen(path) >= sizeof c->path) {
        errmsg("socket path '%s' (%s) is empty or over %zu bytes", path, origin,
               sizeof c->path - 1);
        return CTL_EUSAGE;
    }
    snprintf(c->path, sizeof c->path, "%s", path);
    snprintf(c->origin, sizeof c->origin, "%s", origin);
    return CTL_OK;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline (CLOCK_MONOTONIC ms,
 * -1: none) passes; EINTR waits again for the time that is left. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return IO_TIMEOUT;
            ms = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n > 0)
            return IO_OK;        /* ready, or an error the next call reports */
        if (n == 0)
            return IO_TIMEOUT;
        if (errno != EINTR)
            return IO_ERR;
    }
}

/* Connects to c->path.  A full listen backlog (EAGAIN) is retried until the
 * deadline; each failure is explained in terms of what the operator can do. */
static int conn_open(conn *c, const ctl_opts *o, int64_t deadline)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        errmsg("socket: %s", strerror(errno));
        return CTL_EIO;
    }
    for (;;) {
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EISCONN)
            return CTL_OK;
        int e = errno;
        char me[128];
        switch (e) {
        case EINTR:
            continue;
        case EAGAIN:
            if (deadline >= 0 && now_ms() >= deadline) {
                errmsg("a4psd at %s accepts no connection (its backlog stays full)", c->path);
                return CTL_EIO;
            }
            poll(NULL, 0, 10);
            continue;
        case ENOENT:
        case ENOTDIR:
        case ECONNREFUSED:
            errmsg("a4psd is not running: %s %s (socket: %s)",
                   e == ECONNREFUSED ? "nothing listens on" : "no socket at", c->path, c->origin);
            fprintf(stderr, "  start it with 'a4psd -c %s' or 'systemctl start a4psd',\n"
                            "  or name its socket with -s SOCKET or -c CONFIG\n",
                    o->config ? o->config : DEFAULT_CONFIG);
            return CTL_EDOWN;
        case EACCES:
        case EPERM:
            who_am_i(me, sizeof me);
            errmsg("may not connect to %s (socket: %s): %s", c->path, c->origin, strerror(e));
            fprintf(stderr, "  you are %s; the socket's mode and group decide who may connect,\n"
                            "  and a4psd admits only the uids in control.uids of its config\n",
                    me);
            return CTL_EREFUSED;
        default:
            errmsg("cannot connect to %s (socket: %s): %s", c->path, c->origin, strerror(e));
            return CTL_EIO;
        }
    }
}

/* Writes all of buf; IO_EOF when the daemon has closed its end (it may
 * have said why first, so the caller still reads). */
static int conn_write(conn *c, const char *buf, size_t len, int64_t deadline)
{
    while (len) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (errno == EAGAIN) {
            int rc = wait_fd(c->fd, POLLOUT, deadline);
            if (rc != IO_OK)
                return rc;
        } else if (errno == EPIPE || errno == ECONNRESET) {
            return IO_EOF;
        } else if (errno != EINTR) {
            return IO_ERR;
        }
    }
    return IO_OK;
}

/* Returns the next line, its '\n' replaced by '\0', in *line (valid until
 * the next call).  A line may arrive in any number of pieces; one longer
 * than REPLY_MAX is refused.  IO_EOF at end of stream, also when part of a
 * line was pending (the daemon went away mid-reply: c->len > c->off). */
static int conn_read_line(conn *c, int64_t deadline, char **line, size_t *linelen)
{
    for (;;) {
        char *nl = c->len > c->scan ? memchr(c->buf + c->scan, '\n', c->len - c->scan) : NULL;
        if (nl) {
            *line = c->buf + c->off;
            *linelen = (size_t)(nl - *line);
            *nl = '\0';
            c->off = c->scan = (size_t)(nl - c->buf) + 1;
            return IO_OK;
        }
        c->scan = c->len;
        if (c->len - c->off > REPLY_MAX)
            return IO_TOOLONG;
        if (c->off) {            /* keep the pending part at the front */
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->scan -= c->off;
            c->off = 0;
        }
        if (c->len == c->cap) {  /* capped so that a too-long line is seen as one */
            size_t cap = c->cap ? c->cap * 2 : 65536;
            cap = cap > REPLY_MAX + 1 ? REPLY_MAX + 1 : cap;
            char *nb = realloc(c->buf, cap);
            if (!nb)
                return IO_ERR;
            c->buf = nb;
            c->cap = cap;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
        } else if (n == 0 || errno == ECONNRESET) {
            return IO_EOF;
        } else if (errno == EAGAIN) {
            int rc = wait_fd(c->fd, POLLIN, deadline);
            if (rc != IO_OK)
                return rc;
        } else if (errno != EINTR) {
            return IO_ERR;
        }
    }
}

/* Explains a failed read of a reply or event line; returns CTL_EIO. */
static int read_failure(const conn *c, int io, const char *what)
{
    if (io == IO_TIMEOUT)
        errmsg("no %s from a4psd at %s within the timeout (see --timeout)", what, c->path);
    else if (io == IO_TOOLONG)
        errmsg("a %s line from a4psd is over %u MiB: refused", what, REPLY_MAX >> 20);
    else if (io == IO_EOF && c->len > c->off)
        errmsg("a4psd at %s closed the connection in the middle of a %s", c->path, what);
    else if (io == IO_EOF)
        errmsg("a4psd at %s closed the connection, no %s came", c->path, what);
    else
        errmsg("reading a %s from %s: %s", what, c->path, strerror(errno));
    return CTL_EIO;
}

/* Reads and parses one reply line into r. */
static int read_reply(conn *c, int64_t deadline, reply *r)
{
    char *line;
    size_t len;
    int io = conn_read_line(c, deadline, &line, &len);
    if (io != IO_OK)
        return read_failure(c, io, "reply");
    json_error_t je;
    r->root = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    json_t *ok = json_object_get(r->root, "ok");
    if (!json_is_object(r->root) || !json_is_boolean(ok)) {
        errmsg("malformed reply from a4psd: %s", r->root ? "no boolean \"ok\"" : je.text);
        return CTL_EIO;
    }
    r->ok = json_is_true(ok);
    r->result = json_object_get(r->root, "result");
    r->code = jstr(r->root, "code") ? jstr(r->root, "code") : "?";
    r->error = jstr(r->root, "error") ? jstr(r->root, "error") : "";
    r->status = json_object_get(r->root, "status");
    return CTL_OK;
}

/* Sends one request line (with its '\n') and reads its reply. */
static int request(conn *c, const char *line, size_t len, int64_t deadline, reply *r)
{
    int io = conn_write(c, line, len, deadline);
    if (io == IO_TIMEOUT) {
        errmsg("a4psd at %s took no request within the timeout (see --timeout)", c->path);
        return CTL_EIO;
    }
    if (io == IO_ERR) {
        errmsg("sending the request to %s: %s", c->path, strerror(errno));
        return CTL_EIO;
    }
    /* After IO_EOF too: a daemon that refuses us says so, then closes. */
    return read_reply(c, deadline, r);
}

/* ---- Text for humans ---- */

/* Writes s[0..n) with C0 and C1 control characters and DEL as \xNN: names
 * and messages come from plugins and must not drive the operator's
 * terminal.  Returns the columns written, one per code point. */
static size_t put_text(FILE *f, const char *s, size_t n)
{
    size_t cols = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        unsigned char next = i + 1 < n ? (unsigned char)s[i + 1] : 0;
        if (ch < 0x20 || ch == 0x7f) {
            cols += 4;
            if (f)
                fprintf(f, "\\x%02x", ch);
        } else if (ch == 0xc2 && next >= 0x80 && next <= 0x9f) {
            cols += 8;
            if (f)
                fprintf(f, "\\xc2\\x%02x", next);
            i++;
        } else {
            cols += (ch & 0xc0) != 0x80;
            if (f)
                fputc(ch, f);
        }
    }
    return cols;
}

/* The text of a JSON value for a human: strings as they are, null as "-",
 * booleans as yes/no, numbers, anything else as compact JSON ("?" if that
 * cannot be had); at most max bytes when max is not 0. */
typedef struct vtext {
    const char *s;
    size_t n;
    char *owned;
    char num[40];
} vtext;

static void vtext_of(const json_t *v, size_t max, vtext *t)
{
    t->owned = NULL;
    t->s = t->num;
    if (json_is_string(v))
        t->s = json_string_value(v);
    else if (!v || json_is_null(v))
        t->s = "-";
    else if (json_is_boolean(v))
        t->s = json_is_true(v) ? "yes" : "no";
    else if (json_is_integer(v))
        snprintf(t->num, sizeof t->num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(t->num, sizeof t->num, "%g", json_real_value(v));
    else
        t->s = (t->owned = json_dumps(v, JSON_COMPACT)) ? t->owned : "?";
    t->n = json_is_string(v) ? json_string_length(v) : strlen(t->s);
    if (max && t->n > max)
        t->n = max;
}

/* Writes a value's text, sanitized; returns its width. */
static size_t put_value(FILE *f, const json_t *v, size_t max)
{
    vtext t;
    vtext_of(v, max, &t);
    size_t cols = put_text(f, t.s, t.n);
    free(t.owned);
    return cols;
}

/* "  label        value" */
static void print_field(const char *label, const json_t *v)
{
    printf("  %-13s", label);
    put_value(stdout, v, 0);
    fputc('\n', stdout);
}

/* Writes a value as one line of compact JSON, exactly as scripts expect
 * it (JSON escapes the C0 controls itself). */
static int put_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) {
        errmsg("out of memory");
        return CTL_EIO;
    }
    puts(s);
    free(s);
    return CTL_OK;
}

/* A table column: which member of each row object ("a.b": member b of
 * member a), its heading, and how many bytes of it to show (0: all; hashes
 * are cut to 12 hex digits, enough to tell versions apart at a glance). */
typedef struct column {
    const char *key, *head;
    size_t max;
} column;

static const json_t *column_value(const json_t *row, const column *c)
{
    const char *dot = strchr(c->key, '.');
    if (!dot)
        return json_object_get(row, c->key);
    char outer[64];
    snprintf(outer, sizeof outer, "%.*s", (int)(dot - c->key), c->key);
    return json_object_get(json_object_get(row, outer), dot + 1);
}

#define MAX_COLUMNS 10

/* Prints the objects of rows as a table under its title, columns aligned
 * two spaces apart; "title: none" when there are none. */
static void print_table(const char *title, const json_t *rows, const column *cols, size_t ncols)
{
    size_t width[MAX_COLUMNS], i, j;
    json_t *row;
    assert(ncols <= MAX_COLUMNS);
    if (!json_array_size(rows)) {
        printf("%s: none\n", title);
        return;
    }
    for (j = 0; j < ncols; j++)
        width[j] = strlen(cols[j].head);
    json_array_foreach(rows, i, row) {
        for (j = 0; j < ncols; j++) {
            size_t w = put_value(NULL, column_value(row, &cols[j]), cols[j].max);
            width[j] = w > width[j] ? w : width[j];
        }
    }
    printf("%s (%zu)\n ", title, json_array_size(rows));
    for (j = 0; j < ncols; j++)
        printf(" %s%*s", cols[j].head,
               j + 1 < ncols ? (int)(width[j] - strlen(cols[j].head) + 1) : 0, "");
    fputc('\n', stdout);
    json_array_foreach(rows, i, row) {
        fputc(' ', stdout);
        for (j = 0; j < ncols; j++) {
            fputc(' ', stdout);
            size_t w = put_value(stdout, column_value(row, &cols[j]), cols[j].max);
            if (j + 1 < ncols)
                printf("%*s", (int)(width[j] - w + 1), "");
        }
        fputc('\n', stdout);
    }
}

/* Local time of a Unix timestamp as "YYYY-MM-DDTHH:MM:SS", plus ".mmm"
 * when with_ms: no spaces, so event lines split cleanly into fields. */
static void format_time(const json_t *v, bool with_ms, char *buf, size_t size)
{
    double t = json_number_value(v);
    time_t secs = (time_t)floor(t);
    struct tm tm;
    if (!json_is_number(v) || !localtime_r(&secs, &tm) ||
        !strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm)) {
        snprintf(buf, size, "-");
    } else if (with_ms) {
        size_t n = strlen(buf);
        int ms = (int)((t - floor(t)) * 1000 + 0.5);
        snprintf(buf + n, size - n, ".%03d", ms > 999 ? 999 : ms);
    }
}

/* ---- Output, one function per command ---- */

static void show_status(const json_t *res)
{
    const json_t *d = json_object_get(res, "daemon");
    json_t *up = json_object_get(d, "uptime_s");
    json_int_t s = json_integer_value(up ? up : json_object_get(res, "uptime_s"));
    printf("a4psd pid %" JSON_INTEGER_FORMAT ", up ",
           json_integer_value(json_object_get(d, "pid")));
    long long part[] = {s / 86400, s / 3600 % 24, s / 60 % 60, s % 60};
    for (size_t i = 0, lead = 1; i < 4; i++)  /* 1d02h03m04s, no leading zero units */
        if (!lead || part[i] || i == 3) {
            printf(lead ? "%lld%c" : "%02lld%c", part[i], "dhms"[i]);
            lead = 0;
        }
    static const char *const counts[][2] = {{"workers", "worker"}, {"clients", "client"}};
    for (size_t i = 0; i < 2; i++) {
        json_t *n = json_object_get(d, counts[i][0]);
        if (json_is_integer(n))
            printf(", %" JSON_INTEGER_FORMAT " %s", json_integer_value(n),
                   counts[i][json_integer_value(n) != 1 ? 0 : 1]);
    }
    if (jstr(res, "abi"))
        printf(", plugin ABI %s", jstr(res, "abi"));
    fputc('\n', stdout);
    print_field("config", json_object_get(d, "config"));
    print_field("plugin dir", json_object_get(d, "plugin_dir"));
    json_t *cerr = json_object_get(d, "config_error");
    if (json_is_string(cerr) && json_string_length(cerr)) {
        print_field("CONFIG ERROR", cerr);
        printf("  %-13s(not applied: the previous config keeps running)\n", "");
    }
    if (jstr(d, "image")) {
        json_int_t at = json_integer_value(json_object_get(d, "last_snapshot"));
        printf("  %-13s%s, last snapshot %s", "image", jstr(d, "image"), at ? "" : "never");
        if (at) {
            char when[64];
            time_t t = (time_t)at;
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
            printf("%s", when);
        }
        fputc('\n', stdout);
        if (jstr(d, "snapshot_error"))
            print_field("SNAPSHOT", json_object_get(d, "snapshot_error"));
    }
    const json_t *jn = json_object_get(d, "journal");
    if (json_is_object(jn)) {
        /* What a crash may lose: the durability, and how far the journal
         * has been written and fsync'd past what the image holds. */
        printf("  %-13s%s", "journal", jstr(jn, "durability") ? jstr(jn, "durability") : "?");
        if (json_is_true(json_object_get(jn, "recording")))
            printf(", sequence %" JSON_INTEGER_FORMAT ", written %" JSON_INTEGER_FORMAT
                   ", fsync'd %" JSON_INTEGER_FORMAT ", in the image %" JSON_INTEGER_FORMAT
                   ", %" JSON_INTEGER_FORMAT " segment%s",
                   json_integer_value(json_object_get(jn, "seq")),
                   json_integer_value(json_object_get(jn, "written")),
                   json_integer_value(json_object_get(jn, "synced")),
                   json_integer_value(json_object_get(jn, "covered")),
                   json_integer_value(json_object_get(jn, "segments")),
                   json_integer_value(json_object_get(jn, "segments")) == 1 ? "" : "s");
        else
            printf(" (no journal: a crash loses what came after the last snapshot)");
        fputc('\n', stdout);
        if (jstr(jn, "error"))
            print_field("JOURNAL", json_object_get(jn, "error"));
    }
    const json_t *cc = json_object_get(d, "control");
    if (json_is_object(cc)) {
        /* What the control socket turned away or closed, so a flood of
         * connections shows here rather than as thousands of log lines. */
        static const char *const keys[][2] = {
            {"accepted", "accepted"},         {"refused_full", "refused (all busy)"},
            {"refused_uid", "refused (uid)"}, {"evicted", "evicted (idle, for a newcomer)"},
            {"idle_closed", "closed idle"},   {"timed_out", "requests cut off"}};
        printf("  %-13sat most %" JSON_INTEGER_FORMAT, "connections",
               json_integer_value(json_object_get(cc, "max_clients")));
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            printf(", %" JSON_INTEGER_FORMAT " %s",
                   json_integer_value(json_object_get(cc, keys[i][0])), keys[i][1]);
        fputc('\n', stdout);
    }
    const json_t *sb = json_object_get(res, "sandbox");
    if (json_is_object(sb)) {
        const char *mode = jstr(sb, "mode");
        printf("  %-13s%s", "sandbox", mode ? mode : "?");
        if (mode && !strcmp(mode, "none"))
            printf(" (plugins load WITHOUT verification)");
        printf(", %" JSON_INTEGER_FORMAT " binaries passed, %" JSON_INTEGER_FORMAT
               " probed, %" JSON_INTEGER_FORMAT " refused\n",
               json_integer_value(json_object_get(sb, "passed_binaries")),
               json_integer_value(json_object_get(sb, "probed")),
               json_integer_value(json_object_get(sb, "refused")));
        if (jstr(sb, "error"))
            print_field("SANDBOX", json_object_get(sb, "error"));
    }
    const json_t *cf = json_object_get(res, "confinement");
    if (json_is_object(cf)) {
        static const char *const layers[][2] = {
            {"user", "user"},         {"helper", "helper"},   {"no_new_privs", "no_new_privs"},
            {"landlock", "landlock"}, {"seccomp", "seccomp"}, {"rlimits", "rlimits"}};
        for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
            if (jstr(cf, layers[i][0]) && *jstr(cf, layers[i][0]))
                print_field(layers[i][1], json_object_get(cf, layers[i][0]));
    }
    const json_t *ev = json_object_get(res, "events");
    static const char *const counters[] = {"published", "delivered", "dropped", "failed", "queued"};
    printf("  %-13s", "events");
    for (size_t i = 0; i < 5; i++)
        printf("%s%s %" JSON_INTEGER_FORMAT, i ? ", " : "", counters[i],
               json_integer_value(json_object_get(ev, counters[i])));
    fputc('\n', stdout);

    /* usage: what the version serving the proto allocated in its calls
     * ("-" when a4psd keeps no accounting). */
    static const column protos[] = {{"name", "NAME", 0},         {"plugin", "PLUGIN", 0},
                                    {"version", "VERSION", 0},   {"state_keys", "STATE KEYS", 0},
                                    {"usage.calls", "CALLS", 0},
                                    {"usage.net", "NET BYTES", 0}};
    static const column versions[] = {{"name", "PLUGIN", 0},      {"version", "VERSION", 0},
                                      {"sha256", "SHA256", 12},   {"status", "STATUS", 0},
                                      {"state_version", "LAYOUT", 0}, {"generation", "GEN", 0}};
    static const column draining[] = {{"name", "PLUGIN", 0}, {"version", "VERSION", 0},
                                      {"generation", "GEN", 0}, {"state", "STATE", 0}};
    static const column quarantined[] = {{"name", "PLUGIN", 0}, {"version", "VERSION", 0},
                                         {"reason", "REASON", 0}};
    print_table("protos", json_object_get(res, "protos"), protos, 6);
    print_table("versions", json_object_get(res, "versions"), versions, 6);
    print_table("draining", json_object_get(res, "draining"), draining, 4);
    print_table("quarantined", json_object_get(res, "quarantined"), quarantined, 3);
    /* Protos the image holds but could not restore: their rows wait for
     * destroy or rollback (shown only when there are some). */
    const json_t *unr = json_object_get(d, "unrestorable");
    if (json_array_size(unr)) {
        static const column ucols[] = {{"name", "UNRESTORABLE", 0}, {"plugin", "PLUGIN", 0},
                                       {"version", "VERSION", 0}, {"reason", "REASON", 0}};
        print_table("unrestorable (a4psctl destroy PROTO, or rollback PROTO [VERSION])", unr,
                    ucols, 4);
    }
    /* Generations that may have started a thread: mapped for good. */
    static const column pinned[] = {{"name", "PLUGIN", 0}, {"version", "VERSION", 0},
                                    {"generation", "GEN", 0}, {"imports", "IMPORTS", 0}};
    if (json_array_size(json_object_get(res, "pinned")))
        print_table("pinned (never unmapped)", json_object_get(res, "pinned"), pinned, 4);

    const json_t *errs = json_object_get(res, "last_errors");
    size_t i;
    json_t *e;
    if (!json_array_size(errs))
        printf("last errors: none\n");
    else
        printf("last errors (%zu)\n", json_array_size(errs));
    json_array_foreach(errs, i, e) {
        char when[64];
        format_time(json_object_get(e, "time"), false, when, sizeof when);
        printf("  %s  ", when);
        put_value(stdout, json_object_get(e, "message"), 0);
        fputc('\n', stdout);
    }
}

/* "name version (hash prefix)" of a version reference, or "-". */
static void print_version_ref(const char *label, const json_t *v)
{
    printf("  %-13s", label);
    if (json_is_object(v)) {
        put_value(stdout, json_object_get(v, "name"), 0);
        fputc(' ', stdout);
        put_value(stdout, json_object_get(v, "version"), 0);
        fputs(" (", stdout);
        put_value(stdout, json_object_get(v, "sha256"), 12);
        fputc(')', stdout);
    } else {
        fputc('-', stdout);
    }
    fputc('\n', stdout);
}

/* The values of a JSON array joined by sep, or "none". */
static void put_list(const json_t *arr, const char *sep)
{
    size_t i;
    json_t *v;
    if (!json_array_size(arr))
        fputs("none", stdout);
    json_array_foreach(arr, i, v) {
        fputs(i ? sep : "", stdout);
        put_value(stdout, v, 0);
    }
}

static void show_explain(const json_t *res)
{
    const json_t *pl = json_object_get(res, "plugin");
    put_value(stdout, json_object_get(res, "proto"), 0);
    printf(" (proto #%" JSON_INTEGER_FORMAT ")\n  %-13s",
           json_integer_value(json_object_get(res, "id")), "plugin");
    static const char *const parts[] = {"name", "version", "kind", "state_version",
                                        "generation", "status"};
    static const char *const before[] = {"", " ", ", ", ", state layout ", ", generation ", ", "};
    for (size_t i = 0; i < 6; i++) {
        fputs(before[i], stdout);
        put_value(stdout, json_object_get(pl, parts[i]), 0);
    }
    fputc('\n', stdout);
    if (json_is_string(json_object_get(pl, "description")))
        print_field("description", json_object_get(pl, "description"));
    print_field("sha256", json_object_get(pl, "sha256"));
    if (json_is_string(json_object_get(pl, "origin")))
        print_field("origin", json_object_get(pl, "origin"));
    const json_t *persona = json_object_get(res, "persona");
    const char *key, *label = "persona";
    json_t *v;
    json_object_foreach((json_t *)persona, key, v) {
        printf("  %-13s", label);
        put_text(stdout, key, strlen(key));
        fputs(": ", stdout);
        put_value(stdout, v, 0);
        fputc('\n', stdout);
        label = "";
    }
    if (persona && !json_is_object(persona) && !json_is_null(persona))
        print_field("persona", persona);
    if (json_is_string(json_object_get(res, "cloned_from")))
        print_field("cloned from", json_object_get(res, "cloned_from"));
    print_version_ref("parent", json_object_get(res, "parent"));
    print_version_ref("previous", json_object_get(res, "previous"));
    printf("  %-13s", "history");   /* earlier versions, oldest first, then now */
    put_list(json_object_get(res, "history"), " -> ");
    if (json_array_size(json_object_get(res, "history"))) {
        fputs(" -> ", stdout);
        put_value(stdout, json_object_get(pl, "version"), 0);
        fputs(" (now)", stdout);
    }
    const json_t *deps = json_object_get(res, "dependencies");
    printf("\n  %-13sprotos: ", "depends on");
    put_list(json_object_get(deps, "protos"), ", ");
    fputs("; plugins: ", stdout);
    put_list(json_object_get(deps, "plugins"), ", ");
    fputc('\n', stdout);
    static const column methods[] = {{"selector", "SELECTOR", 0}, {"doc", "DOC", 0}};
    static const column state[] = {{"key", "KEY", 0}, {"bytes", "BYTES", 0}};
    print_table("methods", json_object_get(res, "methods"), methods, 2);
    print_table("state", json_object_get(res, "state"), state, 2);
}

/* The method's reply as it is (the operator may pipe it), newline-terminated. */
static int show_send(const json_t *res)
{
    const json_t *rep = json_object_get(res, "reply");
    const char *s = json_string_value(rep);
    size_t n = json_string_length(rep);
    if (!s) {
        errmsg("malformed reply from a4psd: a send result without a \"reply\" string");
        return CTL_EIO;
    }
    fwrite(s, 1, n, stdout);
    if (!n || s[n - 1] != '\n')
        fputc('\n', stdout);
    return CTL_OK;
}

/* A reload that did not apply is a failure for scripts too: exit 1. */
static int show_reload(const ctl_opts *o, const json_t *res)
{
    if (json_is_true(json_object_get(res, "applied"))) {
        if (!o->json)
            printf("config reloaded, plugin directory rescanned\n");
        return CTL_OK;
    }
    errmsg("reload not applied; the previous config keeps running");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "errors"), i, e) {
        fputs("  ", stderr);
        put_value(stderr, e, 0);
        fputc('\n', stderr);
    }
    return CTL_EREPLY;
}

/* One event: "SEQ TIME EVENT DATA-JSON", or with --json its object. */
static int show_event(const ctl_opts *o, const json_t *ev)
{
    if (o->json)
        return put_json(ev);
    char when[64];
    format_time(json_object_get(ev, "time"), true, when, sizeof when);
    printf("%" JSON_INTEGER_FORMAT " %s ", json_integer_value(json_object_get(ev, "seq")), when);
    put_value(stdout, json_object_get(ev, "event"), 0);
    fputc(' ', stdout);
    const json_t *data = json_object_get(ev, "data");
    char *s = json_dumps(data ? data : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    put_text(stdout, s ? s : "?", s ? strlen(s) : 1);   /* a string data quoted, too */
    free(s);
    fputc('\n', stdout);
    return CTL_OK;
}

/* Statistics as "dotted.key  value" lines, nested objects flattened; walks
 * twice, first (f NULL) to find the widest key. */
static size_t stats_walk(FILE *f, const json_t *v, char *path, size_t plen, size_t width)
{
    const char *key;
    json_t *m;
    size_t widest = 0;
    json_object_foreach((json_t *)v, key, m) {
        int n = snprintf(path + plen, 256 - plen, "%s%s", plen ? "." : "", key);
        size_t end = n < 0 || (size_t)n >= 256 - plen ? 255 : plen + (size_t)n;
        size_t w;
        if (json_is_object(m)) {
            w = stats_walk(f, m, path, end, width);
        } else {
            w = put_text(NULL, path, end);
            if (f) {
                fputs("  ", f);
                put_text(f, path, end);
                fprintf(f, "%*s", (int)(width - w + 2), "");
                put_value(f, m, 0);
                fputc('\n', f);
            }
        }
        widest = w > widest ? w : widest;
    }
    return widest;
}

static void show_stats(const json_t *res)
{
    char path[256];
    stats_walk(stdout, res, path, 0, stats_walk(NULL, res, path, 0, 0));
}

/* ---- Errors the daemon reports ---- */

static const char *status_name(json_int_t st)
{
    static const struct {
        int status;
        const char *name;
    } names[] = {
        {A4PS_ERROR, "the method failed"},     {A4PS_ENOENT, "no such proto, key or version"},
        {A4PS_ENOMEM, "out of memory"},        {A4PS_EFAULT, "the plugin faulted"},
        {A4PS_EBUSY, "the proto is changing"}, {A4PS_EEXIST, "already exists"},
        {A4PS_EINVAL, "invalid argument"},     {A4PS_ERANGE, "out of range"},
        {A4PS_ENOSYS, "not understood"},       {A4PS_ELOOP, "sends nested too deep"},
        {A4PS_ETIMEDOUT, "timed out"},         {A4PS_EPERM, "not permitted"},
        {A4PS_EQUARANTINED, "quarantined"},    {A4PS_EIO, "the change could not be recorded"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].status == st)
            return names[i].name;
    return "unknown status";
}

/* Reports an ok:false reply and returns the exit status its code means;
 * with --json the reply object goes to stdout as well. */
static int reply_error(const ctl_opts *o, const reply *r)
{
    if (o->json)
        put_json(r->root);           /* best effort: stderr says it all too */
    int rc = CTL_EREPLY;
    if (!strcmp(r->code, "failed") && !strcmp(o->cmd, "send") && json_is_integer(r->status)) {
        json_int_t st = json_integer_value(r->status);
        size_t n = strlen(r->error);
        fprintf(stderr, "a4psctl: %s %s: status %" JSON_INTEGER_FORMAT " (%s)%s", o->args[0],
                o->args[1], st, status_name(st), n ? ": " : "\n");
        fwrite(r->error, 1, n, stderr);      /* the method's reply text, as it is */
        if (n && r->error[n - 1] != '\n')
            fputc('\n', stderr);
        return rc;
    }
    if (!strcmp(r->code, "refused"))
        rc = CTL_EREFUSED;
    else if (!strcmp(r->code, "shutting_down"))
        rc = CTL_EDOWN;
    fputs(rc == CTL_EREFUSED ? "a4psctl: refused: " : "a4psctl: ", stderr);
    put_text(stderr, r->error, strlen(r->error));
    fprintf(stderr, rc == CTL_EREFUSED ? "\n" : " (%s)\n", r->code);
    if (rc == CTL_EREFUSED) {
        char me[128];
        who_am_i(me, sizeof me);
        fprintf(stderr, "  you are %s; a4psd admits the uids in control.uids of its config\n",
                me);
    }
    return rc;
}

/* Follows the event stream after its {"following":true} answer until the
 * daemon closes it or reports an error; no timeout applies. */
static int follow_events(const ctl_opts *o, conn *c)
{
    for (;;) {
        char *line;
        size_t len;
        int io = conn_read_line(c, -1, &line, &len);
        if (io == IO_EOF && c->len == c->off) {
            errmsg("a4psd at %s closed the event stream (has it stopped?)", c->path);
            return CTL_EIO;
        }
        if (io != IO_OK)
            return read_failure(c, io, "event");
        json_error_t je;
        reply r = {.root = json_loadb(line, len, JSON_ALLOW_NUL, &je), .code = "?", .error = ""};
        json_t *ev = json_object_get(r.root, "event");
        int rc = CTL_OK;
        if (json_is_object(ev)) {
            rc = show_event(o, ev);
        } else if (json_is_false(json_object_get(r.root, "ok"))) {
            r.code = jstr(r.root, "code") ? jstr(r.root, "code") : r.code;
            r.error = jstr(r.root, "error") ? jstr(r.root, "error") : r.error;
            rc = reply_error(o, &r);
        } else {
            errmsg("malformed event line from a4psd: %s", r.root ? "no \"event\" object" : je.text);
            rc = CTL_EIO;
        }
        json_decref(r.root);
        if (rc)
            return rc;
        if (fflush(stdout) != 0)
            return CTL_EIO;
    }
}

static void put_indented(const char *label, const char *text)
{
    if (!text || !*text)
        return;
    printf("    %s:\n", label);
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        printf("      %.*s\n", n, p);
        p += n + (nl != NULL);
    }
}

/* One forge task: what it is, where it stands, every attempt. */
static void show_task(const ctl_opts *o, const json_t *t)
{
    printf("task %lld: %s %s (%s%s), generator %s\n",
           (long long)json_integer_value(json_object_get(t, "id")),
           jstr(t, "target") ? jstr(t, "target") : "?", jstr(t, "state") ? jstr(t, "state") : "?",
           jstr(t, "plugin") ? jstr(t, "plugin") : "?",
           json_is_true(json_object_get(t, "new_plugin")) ? ", new" : "",
           jstr(t, "generator") ? jstr(t, "generator") : "?");
    printf("  goal      %s\n", jstr(t, "goal") ? jstr(t, "goal") : "");
    printf("  stage     %s (iteration %lld)%s%s\n", jstr(t, "stage") ? jstr(t, "stage") : "?",
           (long long)json_integer_value(json_object_get(t, "iteration")),
           jstr(t, "progress") ? ": " : "", jstr(t, "progress") ? jstr(t, "progress") : "");
    if (jstr(t, "result"))
        printf("  result    %s\n", jstr(t, "result"));
    printf("  directory %s\n", jstr(t, "dir") ? jstr(t, "dir") : "");
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(t, "attempts"), i, a) {
        printf("  #%lld %s: %s\n", (long long)json_integer_value(json_object_get(a, "iteration")),
               jstr(a, "verdict") ? jstr(a, "verdict") : "?",
               jstr(a, "summary") ? jstr(a, "summary") : "");
        put_indented("diagnostics", jstr(a, "diagnostics"));
        put_indented("failures", jstr(a, "failures"));
        if (o->source)
            put_indented("source", jstr(a, "source"));
    }
}

/* Prints a successful result. */
static int show_result(const ctl_opts *o, const json_t *res)
{
    const char *cmd = o->cmd;
    int rc = CTL_OK;
    if (!strcmp(cmd, "image") && json_is_true(json_object_get(res, "damaged"))) {
        /* A damaged image is this command's failure: exit 1, with or
         * without --json. */
        if (o->json)
            return put_json(res) ? CTL_EIO : CTL_EREPLY;
        size_t i;
        json_t *p;
        printf("%s is DAMAGED: %zu problem%s\n", jstr(res, "image") ? jstr(res, "image") : "image",
               json_array_size(json_object_get(res, "problems")),
               json_array_size(json_object_get(res, "problems")) == 1 ? "" : "s");
        json_array_foreach(json_object_get(res, "problems"), i, p)
            printf("  %s\n", json_string_value(p));
        return CTL_EREPLY;
    }
    if (o->json) {
        rc = put_json(res);
    } else if (!strcmp(cmd, "image")) {
        printf("%s: ok (integrity_check, %" JSON_INTEGER_FORMAT " binaries, %" JSON_INTEGER_FORMAT
               " protos, %" JSON_INTEGER_FORMAT " state rows checked)\n",
               jstr(res, "image") ? jstr(res, "image") : "image",
               json_integer_value(json_object_get(res, "binaries")),
               json_integer_value(json_object_get(res, "protos")),
               json_integer_value(json_object_get(res, "state_rows")));
    } else if (!strcmp(cmd, "destroy") ||
               (!strcmp(cmd, "rollback") && jstr(res, "message"))) {
        printf("%s\n", jstr(res, "message") ? jstr(res, "message") : "destroyed");
    } else if (!strcmp(cmd, "status")) {
        show_status(res);
    } else if (!strcmp(cmd, "list")) {
        static const column cols[] = {{"name", "NAME", 0}, {"plugin", "PLUGIN", 0},
                                      {"version", "VERSION", 0}};
        print_table("protos", res, cols, 3);
    } else if (!strcmp(cmd, "explain")) {
        show_explain(res);
    } else if (!strcmp(cmd, "history")) {
        printf("%s runs %s %s", json_string_value(json_object_get(res, "proto")),
               json_string_value(json_object_get(res, "plugin")),
               json_string_value(json_object_get(res, "version")));
        size_t i;
        json_t *v;
        json_t *ran = json_object_get(res, "ran_before");
        if (json_array_size(ran)) {
            fputs("; ran before:", stdout);
            json_array_foreach(ran, i, v)
                printf(" %s", json_string_value(v));
        }
        fputc('\n', stdout);
        static const column cols[] = {{"version", "VERSION", 0},
                                      {"status", "STATUS", 0},
                                      {"sha256", "SHA256", 12},
                                      {"parent", "PARENT", 0},
                                      {"usage.calls", "CALLS", 0},
                                      {"usage.allocated", "ALLOCATED", 0},
                                      {"usage.freed", "FREED", 0},
                                      {"usage.net", "NET BYTES", 0},
                                      {"origin", "ORIGIN", 0}};
        print_table("versions", json_object_get(res, "versions"), cols, 9);
    } else if (!strcmp(cmd, "rollback")) {
        printf("%s now runs %s\n", json_string_value(json_object_get(res, "proto")),
               json_string_value(json_object_get(res, "version")));
    } else if (!strcmp(cmd, "send")) {
        return show_send(res);
    } else if (!strcmp(cmd, "events")) {
        size_t i;
        json_t *ev;
        json_array_foreach(res, i, ev)
            show_event(o, ev);      /* cannot fail without --json */
    } else if (!strcmp(cmd, "stats")) {
        show_stats(res);
    } else if (!strcmp(cmd, "forge")) {
        printf("task %lld opened: %s (%s), generator %s; follow it with: a4psctl task %lld\n",
               (long long)json_integer_value(json_object_get(res, "id")), jstr(res, "target"),
               jstr(res, "plugin"), jstr(res, "generator"),
               (long long)json_integer_value(json_object_get(res, "id")));
    } else if (!strcmp(cmd, "tasks")) {
        static const column cols[] = {{"id", "ID", 0},         {"target", "TARGET", 0},
                                      {"state", "STATE", 0},   {"stage", "STAGE", 0},
                                      {"iteration", "ITER", 0}, {"result", "RESULT", 0}};
        print_table("tasks", res, cols, 6);
    } else if (!strcmp(cmd, "task") || !strcmp(cmd, "cancel")) {
        show_task(o, res);
    } else if (!strcmp(cmd, "snapshot") && json_is_string(json_object_get(res, "message"))) {
        put_value(stdout, json_object_get(res, "message"), 0);
        fputc('\n', stdout);
    } else if (strcmp(cmd, "reload")) {
        put_value(stdout, res, 0);
        fputc('\n', stdout);
    }
    return !rc && !strcmp(cmd, "reload") ? show_reload(o, res) : rc;
}

/* ---- Command line ---- */

/* Reads all of stdin, up to just over REQUEST_MAX bytes (more could never
 * be sent), into a new buffer. */
static int read_stdin(char **out, size_t *outlen)
{
    size_t cap = REQUEST_MAX + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        errmsg("out of memory");
        return CTL_EIO;
    }
    while (len < cap) {
        ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
        if (n == 0)
            break;
        if (n < 0 && errno != EINTR) {
            errmsg("reading the payload from stdin: %s", strerror(errno));
            free(buf);
            return CTL_EIO;
        }
        len += n > 0 ? (size_t)n : 0;
    }
    if (len == cap) {
        errmsg("the payload on stdin is over 1 MiB, more than a4psd accepts");
        free(buf);
        return CTL_EUSAGE;
    }
    *out = buf;
    *outlen = len;
    return CTL_OK;
}

/* Builds the request line for the command: compact JSON and its '\n', in
 * a new buffer *line of *len bytes. */
static int build_request(const ctl_opts *o, char **line, size_t *len)
{
    json_t *req;
    const char *cmd = o->cmd;
    if (!strcmp(cmd, "explain") || !strcmp(cmd, "history")) {
        req = json_pack("{s:s, s:s}", "cmd", cmd, "proto", o->args[0]);
    } else if (!strcmp(cmd, "rollback")) {
        req = json_pack("{s:s, s:s, s:s?}", "cmd", cmd, "proto", o->args[0], "version",
                        o->nargs > 1 ? o->args[1] : NULL);
    } else if (!strcmp(cmd, "send")) {
        char *payload = NULL;
        size_t plen = 0;
        const char *arg = o->nargs > 2 ? o->args[2] : NULL;
        if ((arg && !strcmp(arg, "-")) || (!arg && !isatty(STDIN_FILENO))) {
            int rc = read_stdin(&payload, &plen);
            if (rc)
                return rc;
        }
        json_t *p = payload ? json_stringn(payload, plen) : json_string(arg ? arg : "");
        free(payload);
        if (!p) {
            errmsg("the payload is not valid UTF-8 text");
            return CTL_EUSAGE;
        }
        req = json_pack("{s:s, s:s, s:s, s:o}", "cmd", cmd, "proto", o->args[0], "selector",
                        o->args[1], "payload", p);
    } else if (!strcmp(cmd, "events") && o->follow) {
        req = json_pack("{s:s, s:b}", "cmd", cmd, "follow", 1);
    } else if (!strcmp(cmd, "forge")) {
        json_t *tests = json_array();
        for (int i = 0; i < o->nexamples; i++) {
            const char *ex = o->examples[i], *arrow = strstr(ex, "=>");
            if (!arrow) {
                json_decref(tests);
                return usage_error("forge: --example '%s': write it as 'INPUT=>OUTPUT'", ex);
            }
            json_array_append_new(tests, json_pack("{s:s%, s:s}", "input", ex,
                                                   (size_t)(arrow - ex), "expect", arrow + 2));
        }
        req = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:o}", "cmd", cmd, "proto",
                        o->args[0], "selector", o->selector, "goal", o->goal, "plugin",
                        o->plugin, "generator", o->generator, "tests", tests);
        if (req && o->iterations >= 0)
            json_object_set_new(req, "iterations", json_integer(o->iterations));
        if (req && o->wall_s >= 0)
            json_object_set_new(req, "wall_s", json_integer(o->wall_s));
        if (req && o->probation_s >= 0)
            json_object_set_new(req, "probation_s", json_integer(o->probation_s));
    } else if (!strcmp(cmd, "destroy")) {
        req = json_pack("{s:s, s:s}", "cmd", cmd, "proto", o->args[0]);
    } else if (!strcmp(cmd, "image")) {
        if (strcmp(o->args[0], "check"))
            return usage_error("image: unknown action '%s' (known: check)", o->args[0]);
        req = json_pack("{s:s, s:s}", "cmd", cmd, "action", o->args[0]);
    } else if (!strcmp(cmd, "task") || !strcmp(cmd, "cancel")) {
        char *end;
        long id = strtol(o->args[0], &end, 10);
        if (*end || end == o->args[0] || id <= 0)
            return usage_error("%s: '%s' is not a task number", cmd, o->args[0]);
        req = json_pack("{s:s, s:I}", "cmd", cmd, "id", (json_int_t)id);
    } else {
        req = json_pack("{s:s}", "cmd", cmd);
    }
    if (!req) {
        errmsg("the arguments are not valid UTF-8 text");
        return CTL_EUSAGE;
    }
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s) {
        errmsg("out of memory");
        return CTL_EIO;
    }
    *len = strlen(s) + 1;
    if (*len > REQUEST_MAX) {
        errmsg("the request is %zu bytes; a4psd accepts at most 1 MiB a line", *len);
        free(s);
        return CTL_EUSAGE;
    }
    s[*len - 1] = '\n';          /* over the '\0': a counted line */
    *line = s;
    return CTL_OK;
}

/* Commands and how many positional arguments each takes. */
static const struct {
    const char *name;
    int min, max;
} commands[] = {
    {"status", 0, 0}, {"list", 0, 0},     {"explain", 1, 1}, {"send", 2, 3},
    {"history", 1, 1}, {"rollback", 1, 2},
    {"reload", 0, 0}, {"snapshot", 0, 0}, {"events", 0, 0},  {"stats", 0, 0},
    {"forge", 1, 1},  {"tasks", 0, 0},    {"task", 1, 1},    {"cancel", 1, 1},
    {"destroy", 1, 1}, {"image", 1, 1},
};

/* forge's options that take a value: where each goes. */
static int forge_option(ctl_opts *o, const char *opt, const char *val)
{
    char *end;
    long *num = !strcmp(opt, "--iterations") ? &o->iterations
                : !strcmp(opt, "--wall") ? &o->wall_s
                : !strcmp(opt, "--probation") ? &o->probation_s : NULL;
    if (num) {
        *num = strtol(val, &end, 10);
        if (*end || end == val || *num < 0 || *num > 604800)
            return usage_error("forge: %s wants a number from 0 to 604800, not '%s'", opt, val);
    } else if (!strcmp(opt, "--selector")) {
        o->selector = val;
    } else if (!strcmp(opt, "--goal")) {
        o->goal = val;
    } else if (!strcmp(opt, "--plugin")) {
        o->plugin = val;
    } else if (!strcmp(opt, "--generator")) {
        o->generator = val;
    } else if (!strcmp(opt, "--example")) {
        if (o->nexamples == (int)(sizeof o->examples / sizeof o->examples[0]))
            return usage_error("forge: at most 256 examples");
        o->examples[o->nexamples++] = val;
    } else {
        return usage_error("forge: unknown option '%s'", opt);
    }
    return CTL_OK;
}

/* Parses argv into o.  Options go before the command; after it "--json" is
 * accepted too (and "--follow" for events), except by send, whose
 * arguments are all taken as they are.  Returns CTL_OK, CTL_EUSAGE, or -1
 * when help was asked for (and printed). */
static int parse_args(int argc, char **argv, ctl_opts *o)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},         {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    *o = (ctl_opts){.timeout_s = DEFAULT_TIMEOUT_S, .iterations = -1, .wall_s = -1,
                    .probation_s = -1};
    opterr = 0;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "+:s:c:jt:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 's': o->socket = optarg; break;
        case 'c': o->config = optarg; break;
        case 'j': o->json = true; break;
        case 't':
            errno = 0;
            o->timeout_s = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(o->timeout_s >= 0 && o->timeout_s <= 1e6))
                return usage_error("--timeout wants seconds from 0 to 1000000, not '%s'", optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return -1;
        case ':':
            return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (o->socket && o->config)
        return usage_error("give -s SOCKET or -c CONFIG, not both");
    if (optind >= argc)
        return usage_error("no command given");
    o->cmd = argv[optind++];
    if (!strcmp(o->cmd, "help")) {
        fputs(usage_text, stdout);
        return -1;
    }
    size_t i = 0, n = sizeof commands / sizeof commands[0];
    while (i < n && strcmp(commands[i].name, o->cmd))
        i++;
    if (i == n)
        return usage_error("unknown command '%s'", o->cmd);
    o->args = argv + optind;
    for (int a = optind; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(o->cmd, "send") || arg[0] != '-' || !arg[1])
            o->args[o->nargs++] = argv[a];
        else if (!strcmp(arg, "--json") || !strcmp(arg, "-j"))
            o->json = true;
        else if (!strcmp(o->cmd, "events") && (!strcmp(arg, "--follow") || !strcmp(arg, "-f")))
            o->follow = true;
        else if (!strcmp(o->cmd, "forge") && !strcmp(arg, "--wait"))
            o->wait = true;
        else if (!strcmp(o->cmd, "task") && !strcmp(arg, "--source"))
            o->source = true;
        else if (!strcmp(o->cmd, "forge") && !strncmp(arg, "--", 2)) {
            if (a + 1 >= argc)
                return usage_error("forge: option '%s' needs a value", arg);
            int frc = forge_option(o, arg, argv[++a]);
            if (frc)
                return frc;
        } else
            return usage_error("%s: unknown option '%s'", o->cmd, arg);
    }
    if (o->nargs < commands[i].min || o->nargs > commands[i].max)
        return usage_error("%s: %s arguments", o->cmd,
                           o->nargs < commands[i].min ? "missing" : "too many");
    return CTL_OK;
}

/* forge --wait: poll the task (a new connection each time, so a restart of
 * the daemon shows as such) until it ends; progress goes to stderr.  0 when
 * adopted, 1 when it failed or was cancelled. */
static int wait_task(ctl_opts *o, json_int_t id)
{
    char line[64];
    int n = snprintf(line, sizeof line, "{\"cmd\":\"task\",\"id\":%lld}\n", (long long)id);
    char *last = NULL;
    o->cmd = "task";
    for (;;) {
        conn c = {.fd = -1};
        reply r = {0};
        int64_t deadline = now_ms() + DEFAULT_TIMEOUT_S * 1000;
        int rc = resolve_socket(o, &c);
        if (!rc)
            rc = conn_open(&c, o, deadline);
        if (!rc)
            rc = request(&c, line, (size_t)n, deadline, &r);
        if (!rc && !r.ok)
            rc = reply_error(o, &r);
        free(c.buf);
        if (c.fd >= 0)
            close(c.fd);
        if (rc) {
            json_decref(r.root);
            free(last);
            return rc;
        }
        const char *state = jstr(r.result, "state"), *stage = jstr(r.result, "stage");
        const char *prog = jstr(r.result, "progress");
        char *now = NULL;
        if (asprintf(&now, "%s: %s", stage ? stage : "?", prog ? prog : "") < 0)
            now = NULL;
        if (now && (!last || strcmp(now, last)) && state &&
            (!strcmp(state, "running") || !strcmp(state, "queued")))
            fprintf(stderr, "task %lld, iteration %lld: %s\n", (long long)id,
                    (long long)json_integer_value(json_object_get(r.result, "iteration")), now);
        free(last);
        last = now;
        if (state && strcmp(state, "running") && strcmp(state, "queued")) {
            int out = !strcmp(state, "adopted") ? CTL_OK : CTL_EREPLY;
            if (o->json)
                put_json(r.result);
            else
                show_task(o, r.result);
            json_decref(r.root);
            free(last);
            return out;
        }
        json_decref(r.root);
        usleep(300 * 1000);
    }
}

int main(int argc, char **argv)
{
    ctl_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CTL_OK : rc;

    char *line = NULL;
    size_t len = 0;
    conn c = {.fd = -1};
    reply r = {0};
    /* The timeout covers connecting, sending and the reply, not reading stdin. */
    rc = build_request(&o, &line, &len);
    int64_t deadline = o.timeout_s > 0 ? now_ms() + (int64_t)ceil(o.timeout_s * 1000) : -1;
    if (!rc)
        rc = resolve_socket(&o, &c);
    if (!rc)
        rc = conn_open(&c, &o, deadline);
    if (!rc)
        rc = request(&c, line, len, deadline, &r);
    if (!rc && !r.ok)
        rc = reply_error(&o, &r);
    else if (!rc && o.follow)
        rc = follow_events(&o, &c);
    else if (!rc && !strcmp(o.cmd, "forge") && o.wait)
        rc = wait_task(&o, json_integer_value(json_object_get(r.result, "id")));
    else if (!rc)
        rc = show_result(&o, r.result ? r.result : json_null());

    if (fflush(stdout) != 0 || ferror(stdout)) {
        errmsg("writing the output: %s", strerror(errno));
        rc = rc ? rc : CTL_EIO;
    }
    json_decref(r.root);
    free(line);
    free(c.buf);
    if (c.fd >= 0)
        close(c.fd);
    return rc;
}
