/* a4psctl.c -- the operator's client for a4psd, the A4PS daemon.
 *
 * One request per run over the daemon's Unix control socket: a JSON object
 * on one '\n'-terminated line, answered by one JSON line
 * {"ok":true,"result":...} or {"ok":false,"code":...,"error":...}
 * (`events --follow` then keeps reading one {"event":...} line per event).
 * Prints the result for a human, or as one compact JSON line with --json,
 * and tells the failure modes apart by exit status (see usage_text). */
#define _GNU_SOURCE
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
    CTL_EDOWN = 3,       /* a4psd not running (or shutting down) */
    CTL_EREFUSED = 4,    /* this uid is not permitted */
    CTL_EIO = 5,         /* protocol or I/O error, timeout */
};

/* Results of the socket I/O layer, mapped to exit statuses by its callers,
 * which know what was being attempted. */
enum { IO_OK, IO_EOF, IO_TIMEOUT, IO_TOOLONG, IO_ERR };

#define REQUEST_MAX (1u << 20)     /* the daemon refuses longer request lines */
#define REPLY_MAX (16u << 20)      /* we refuse longer reply lines */
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
    "  status               uptime, protos, versions with hashes, draining and\n"
    "                       quarantined versions, last errors, event-bus counters\n"
    "  list                 the protos: name, plugin, version\n"
    "  explain PROTO        one proto in full: plugin, methods, state, lineage\n"
    "  send PROTO SELECTOR [PAYLOAD]\n"
    "                       call a method and print its reply; PAYLOAD \"-\", or no\n"
    "                       PAYLOAD while stdin is not a terminal, reads stdin\n"
    "  reload               re-read the config and rescan the plugin directory (as\n"
    "                       SIGHUP); a broken config is reported and not applied\n"
    "  snapshot             write an image snapshot now (as SIGUSR1)\n"
    "  events [--follow]    recent events, one a line: SEQ TIME EVENT DATA;\n"
    "                       --follow prints new ones as they come, until interrupted\n"
    "  stats                allocator and kernel statistics\n"
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
    "" LOCAL_SOCKET " if it exists in the current directory; " DEFAULT_SOCKET ".\n"
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
} ctl_opts;

/* One connection to the daemon and its read buffer: bytes [off, len) are
 * received and not yet consumed; [off, scan) holds no '\n'. */
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

static int out_of_memory(void)
{
    errmsg("out of memory");
    return CTL_EIO;
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

/* ---- Time ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An absolute CLOCK_MONOTONIC deadline in ms, or -1 for none. */
static int64_t deadline_after(double seconds)
{
    return seconds > 0 ? now_ms() + (int64_t)ceil(seconds * 1000) : -1;
}

/* Waits until fd is ready for events or the deadline passes; IO_OK or
 * IO_TIMEOUT or IO_ERR.  EINTR restarts with the time that is left. */
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
            return IO_OK;     /* readable, writable, or an error read/send will report */
        if (n == 0)
            return IO_TIMEOUT;
        if (errno != EINTR)
            return IO_ERR;
    }
}

/* ---- Text for humans ---- */

/* A copy of s[0..n) with C0 and C1 control characters and DEL written as
 * \xNN: names and messages come from plugins and must not drive the
 * operator's terminal.  NULL when out of memory. */
static char *sanitize(const char *s, size_t n)
{
    char *out = malloc(n * 4 + 1), *p = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        unsigned char next = i + 1 < n ? (unsigned char)s[i + 1] : 0;
        if (ch < 0x20 || ch == 0x7f) {
            p += sprintf(p, "\\x%02x", ch);
        } else if (ch == 0xc2 && next >= 0x80 && next <= 0x9f) {
            p += sprintf(p, "\\xc2\\x%02x", next);
            i++;
        } else {
            *p++ = (char)ch;
        }
    }
    *p = '\0';
    return out;
}

/* Columns a UTF-8 string takes, counting one per code point. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The text of a JSON value for a table cell or a line, sanitized, as a new
 * JSON string: strings as they are, null as "-", booleans as yes/no,
 * anything else as compact JSON.  NULL when out of memory. */
static json_t *cell(const json_t *v)
{
    char num[64];
    char *raw = NULL;
    const char *text = num;
    size_t n;
    if (json_is_string(v)) {
        text = json_string_value(v);
        n = json_string_length(v);
    } else if (!v || json_is_null(v)) {
        text = "-";
        n = 1;
    } else if (json_is_boolean(v)) {
        text = json_is_true(v) ? "yes" : "no";
        n = strlen(text);
    } else if (json_is_integer(v)) {
        n = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        n = (size_t)snprintf(num, sizeof num, "%g", json_real_value(v));
    } else {
        raw = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!raw)
            return NULL;
        text = raw;
        n = strlen(raw);
    }
    char *clean = sanitize(text, n);
    free(raw);
    json_t *s = clean ? json_string(clean) : NULL;
    free(clean);
    return s;
}

/* A JSON string of the first 12 hex digits of a hash: enough to tell
 * versions apart at a glance; explain shows the whole hash. */
static json_t *short_hash(const json_t *v)
{
    const char *h = json_string_value(v);
    return h ? json_stringn(h, strnlen(h, 12)) : json_string("-");
}

/* Prints a value after a label, sanitized; continuation lines of a
 * multi-part value are indented the same way. */
static int print_kv(const char *label, const json_t *v)
{
    json_t *c = cell(v);
    if (!c)
        return CTL_EIO;
    printf("  %-13s%s\n", label, json_string_value(c));
    json_decref(c);
    return CTL_OK;
}

/* Prints rows (a JSON array of arrays of JSON strings, the first row the
 * header) as aligned columns two spaces apart. */
static void print_table(const json_t *rows)
{
    size_t width[16] = {0}, ncols = 0, i, j;
    json_t *row, *c;
    json_array_foreach(rows, i, row) {
        json_array_foreach(row, j, c) {
            if (j >= 16)
                break;
            size_t w = text_width(json_string_value(c));
            if (w > width[j])
                width[j] = w;
            if (j + 1 > ncols)
                ncols = j + 1;
        }
    }
    json_array_foreach(rows, i, row) {
        fputs("  ", stdout);
        size_t n = json_array_size(row) < ncols ? json_array_size(row) : ncols;
        for (j = 0; j < n; j++) {
            const char *s = json_string_value(json_array_get(row, j));
            fputs(s, stdout);
            if (j + 1 < n)
                printf("%*s", (int)(width[j] - text_width(s) + 2), "");
        }
        fputc('\n', stdout);
    }
}

/* Builds a table of the members of each object of items, one column per
 * key, and prints it under its title; "title: none" for an empty list.
 * Keys named "sha256" are shortened. */
static int print_object_table(const char *title, const json_t *items, const char *const *keys,
                              const char *const *headers, size_t ncols)
{
    if (!json_array_size(items)) {
        printf("%s: none\n", title);
        return CTL_OK;
    }
    json_t *rows = json_array(), *head = json_array();
    if (json_array_append_new(rows, head))
        goto oom;
    for (size_t j = 0; j < ncols; j++)
        if (json_array_append_new(head, json_string(headers[j])))
            goto oom;
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        json_t *row = json_array();
        if (json_array_append_new(rows, row))
            goto oom;
        for (size_t j = 0; j < ncols; j++) {
            json_t *v = json_object_get(item, keys[j]);
            if (json_array_append_new(row, strcmp(keys[j], "sha256") ? cell(v) : short_hash(v)))
                goto oom;
        }
    }
    printf("%s (%zu)\n", title, json_array_size(items));
    print_table(rows);
    json_decref(rows);
    return CTL_OK;
oom:
    json_decref(rows);
    errmsg("out of memory");
    return CTL_EIO;
}

/* "1d02h03m04s", leading zero units left out. */
static void format_duration(json_int_t s, char *buf, size_t size)
{
    json_int_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
    if (d)
        snprintf(buf, size, "%lldd%02lldh%02lldm%02llds", (long long)d, (long long)h,
                 (long long)m, (long long)sec);
    else if (h)
        snprintf(buf, size, "%lldh%02lldm%02llds", (long long)h, (long long)m, (long long)sec);
    else if (m)
        snprintf(buf, size, "%lldm%02llds", (long long)m, (long long)sec);
    else
        snprintf(buf, size, "%llds", (long long)sec);
}

/* Local time of a Unix timestamp as "YYYY-MM-DDTHH:MM:SS" plus ".mmm" when
 * with_ms: no spaces, so event lines split cleanly into fields. */
static void format_time(const json_t *v, bool with_ms, char *buf, size_t size)
{
    if (!json_is_number(v)) {
        snprintf(buf, size, "-");
        return;
    }
    double t = json_number_value(v);
    time_t secs = (time_t)floor(t);
    struct tm tm;
    if (!localtime_r(&secs, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm)) {
        snprintf(buf, size, "%.3f", t);
        return;
    }
    if (with_ms) {
        size_t n = strlen(buf);
        int ms = (int)((t - floor(t)) * 1000 + 0.5);
        snprintf(buf + n, size - n, ".%03d", ms > 999 ? 999 : ms);
    }
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
 * path is taken relative to the file's directory, as the daemon does. */
static int socket_from_config(const char *file, conn *c)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(file, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", slash == file ? 1 : (int)(slash - file), file);

    FILE *f = fopen(file, "r");
    if (!f) {
        errmsg("cannot read the config %s: %s", file, strerror(errno));
        return CTL_EUSAGE;
    }
    config_t cfg;
    config_init(&cfg);
    config_set_include_dir(&cfg, dir);
    int rc = CTL_OK;
    const char *sock = NULL;
    if (config_read(&cfg, f) != CONFIG_TRUE) {
        const char *where = config_error_file(&cfg);
        errmsg("%s:%d: %s", where ? where : file, config_error_line(&cfg),
               config_error_text(&cfg));
        rc = CTL_EUSAGE;
    } else if (!config_lookup_string(&cfg, "control.socket", &sock)) {
        errmsg("%s: no control.socket string in it; name the socket with -s", file);
        rc = CTL_EUSAGE;
    } else {
        int n = sock[0] == '/' ? snprintf(c->path, sizeof c->path, "%s", sock)
                               : snprintf(c->path, sizeof c->path, "%s/%s", dir, sock);
        if (n < 0 || (size_t)n >= sizeof c->path) {
            errmsg("%s: control.socket %s%s%s is longer than a Unix socket path may be (%zu bytes)",
                   file, sock[0] == '/' ? "" : dir, sock[0] == '/' ? "" : "/", sock,
                   sizeof c->path - 1);
            rc = CTL_EUSAGE;
        }
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
    if (o->config && !o->socket)
        return socket_from_config(o->config, c);
    const char *path = o->socket, *origin = "-s";
    const char *env = getenv("A4PS_SOCKET");
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
        errmsg("socket path '%s' (%s) is empty or longer than a Unix socket path may be "
               "(%zu bytes)", path, origin, sizeof c->path - 1);
        return CTL_EUSAGE;
    }
    snprintf(c->path, sizeof c->path, "%s", path);
    snprintf(c->origin, sizeof c->origin, "%s", origin);
    return CTL_OK;
}

/* Connects to c->path.  A full listen backlog (EAGAIN) is retried until the
 * deadline; every failure is explained in terms of what the operator can do. */
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
        if (e == EINTR)
            continue;
        if (e == EAGAIN) {
            if (deadline >= 0 && now_ms() >= deadline) {
                errmsg("a4psd at %s accepts no connections (its backlog stayed full)", c->path);
                return CTL_EIO;
            }
            poll(NULL, 0, 10);
            continue;
        }
        char me[128];
        switch (e) {
        case ENOENT:
        case ENOTDIR:
        case ECONNREFUSED:
            errmsg("a4psd is not running: %s %s (socket: %s)",
                   e == ECONNREFUSED ? "nothing listens on" : "there is no socket", c->path,
                   c->origin);
            fprintf(stderr, "  start it with 'a4psd -c %s' (or 'systemctl start a4psd'), or "
                            "name its socket with -s SOCKET or -c CONFIG\n",
                    o->config ? o->config : DEFAULT_CONFIG);
            return CTL_EDOWN;
        case EACCES:
        case EPERM:
            who_am_i(me, sizeof me);
            errmsg("may not connect to %s (socket: %s): %s", c->path, c->origin, strerror(e));
            fprintf(stderr, "  you are %s; the socket's mode and group decide who may "
                            "connect, and a4psd admits only the uids in control.uids\n", me);
            return CTL_EREFUSED;
        default:
            errmsg("cannot connect to %s (socket: %s): %s", c->path, c->origin, strerror(e));
            return CTL_EIO;
        }
    }
}

/* Writes all of buf; IO_EOF when the daemon has closed its end (it may have
 * refused us first: the caller still reads). */
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

/* Returns the next line (its '\n' replaced by '\0') in *line, valid until
 * the next call.  A line may arrive in any number of pieces; one longer
 * than REPLY_MAX is refused (IO_TOOLONG).  IO_EOF at end of stream, also
 * when a partial line was pending (the daemon went away mid-reply). */
static int conn_read_line(conn *c, int64_t deadline, char **line, size_t *linelen)
{
    for (;;) {
        char *nl = memchr(c->buf + c->scan, '\n', c->len - c->scan);
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
        if (c->len == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 65536;
            if (cap > REPLY_MAX + 1)
                cap = REPLY_MAX + 1;
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

/* Explains a failed read or write on the connection; returns CTL_EIO. */
static int io_failure(const conn *c, int io, const char *what)
{
    if (io == IO_TIMEOUT)
        errmsg("no %s from a4psd at %s within the timeout (see --timeout)", what, c->path);
    else if (io == IO_TOOLONG)
        errmsg("a %s line from a4psd is over %u MiB: refused", what, REPLY_MAX >> 20);
    else if (io == IO_EOF)
        errmsg("a4psd at %s closed the connection without a %s%s", c->path, what,
               c->len > c->off ? " (a partial line was received)" : "");
    else
        errmsg("reading the %s from %s: %s", what, c->path, strerror(errno));
    return CTL_EIO;
}

/* Reads and parses one reply line. */
static int read_reply(conn *c, int64_t deadline, reply *r)
{
    char *line;
    size_t len;
    int io = conn_read_line(c, deadline, &line, &len);
    if (io != IO_OK)
        return io_failure(c, io, "reply");
    json_error_t je;
    r->root = json_loadb(line, len, 0, &je);
    json_t *ok = json_object_get(r->root, "ok");
    if (!json_is_object(r->root) || !json_is_boolean(ok)) {
        errmsg("malformed reply from a4psd: %s", r->root ? "no boolean \"ok\"" : je.text);
        return CTL_EIO;
    }
    r->ok = json_is_true(ok);
    r->result = json_object_get(r->root, "result");
    r->code = jstr(r->root, "code");
    r->error = jstr(r->root, "error");
    r->status = json_object_get(r->root, "status");
    if (!r->code)
        r->code = "?";
    if (!r->error)
        r->error = "";
    return CTL_OK;
}

/* Sends one request line and reads its reply. */
static int request(conn *c, const json_t *req, int64_t deadline, reply *r)
{
    char *s = json_dumps(req, JSON_COMPACT);
    if (!s) {
        errmsg("out of memory");
        return CTL_EIO;
    }
    size_t len = strlen(s);
    if (len + 1 > REQUEST_MAX) {
        free(s);
        errmsg("the request is %zu bytes; a4psd accepts at most 1 MiB a line", len + 1);
        return CTL_EUSAGE;
    }
    s[len] = '\n';               /* json_dumps leaves room: its '\0' */
    int io = conn_write(c, s, len + 1, deadline);
    free(s);
    if (io != IO_OK && io != IO_EOF)
        return io_failure(c, io, "request sent");
    /* Even when the write failed on a closed connection, the daemon may have
     * told us why (refused) before closing. */
    return read_reply(c, deadline, r);
}

/* ---- Errors the daemon reports ---- */

static const char *a4ps_status_name(json_int_t st)
{
    switch (st) {
    case A4PS_OK: return "ok";
    case A4PS_ERROR: return "the method failed";
    case A4PS_ENOENT: return "no such proto, key or version";
    case A4PS_ENOMEM: return "out of memory";
    case A4PS_EFAULT: return "the plugin faulted";
    case A4PS_EBUSY: return "the proto is being changed, try again";
    case A4PS_EEXIST: return "already exists";
    case A4PS_EINVAL: return "invalid argument";
    case A4PS_ERANGE: return "out of range";
    case A4PS_ENOSYS: return "selector not understood";
    case A4PS_ELOOP: return "sends nested too deep";
    case A4PS_ETIMEDOUT: return "timed out";
    case A4PS_EPERM: return "not permitted";
    case A4PS_EQUARANTINED: return "the version is quarantined";
    }
    return "unknown status";
}

/* Reports an ok:false reply and returns the exit status its code means.
 * With --json the reply object itself goes to stdout as well. */
static int reply_error(const ctl_opts *o, const reply *r)
{
    if (o->json) {
        char *s = json_dumps(r->root, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
    }
    if (!strcmp(r->code, "refused")) {
        char me[128];
        who_am_i(me, sizeof me);
        errmsg("a4psd refused %s: %s", me, r->error);
        fprintf(stderr, "  the uids it admits are listed in control.uids of its config\n");
        return CTL_EREFUSED;
    }
    if (!strcmp(r->code, "shutting_down")) {
        errmsg("a4psd is shutting down: %s", r->error);
        return CTL_EDOWN;
    }
    if (!strcmp(r->code, "failed") && !strcmp(o->cmd, "send") && json_is_integer(r->status)) {
        json_int_t st = json_integer_value(r->status);
        size_t n = strlen(r->error);
        fprintf(stderr, "a4psctl: %s %s: status %" JSON_INTEGER_FORMAT " (%s)%s", o->args[0],
                o->args[1], st, a4ps_status_name(st), n ? ": " : "\n");
        if (n) {                 /* the method's reply text, as it is */
            fwrite(r->error, 1, n, stderr);
            if (r->error[n - 1] != '\n')
                fputc('\n', stderr);
        }
        return CTL_EREPLY;
    }
    char *clean = sanitize(r->error, strlen(r->error));
    errmsg("%s (%s)", clean ? clean : r->error, r->code);
    free(clean);
    return CTL_EREPLY;
}

/* ---- Human output, one function per command ---- */

static int show_status(const json_t *res)
{
    const json_t *d = json_object_get(res, "daemon");
    char up[64] = "?";
    json_t *upv = json_object_get(d, "uptime_s");
    if (!upv)
        upv = json_object_get(res, "uptime_s");
    if (json_is_integer(upv))
        format_duration(json_integer_value(upv), up, sizeof up);
    printf("a4psd pid %" JSON_INTEGER_FORMAT ", up %s", json_integer_value(json_object_get(d, "pid")),
           up);
    static const char *const counts[][2] = {{"workers", "worker"}, {"clients", "client"}};
    for (size_t i = 0; i < 2; i++) {
        json_t *n = json_object_get(d, counts[i][0]);
        if (json_is_integer(n))
            printf(", %" JSON_INTEGER_FORMAT " %s", json_integer_value(n),
                   json_integer_value(n) == 1 ? counts[i][1] : counts[i][0]);
    }
    if (jstr(res, "abi"))
        printf(", plugin ABI %s", jstr(res, "abi"));
    fputc('\n', stdout);
    int rc = print_kv("config", json_object_get(d, "config"));
    if (!rc)
        rc = print_kv("plugin dir", json_object_get(d, "plugin_dir"));
    json_t *cerr = json_object_get(d, "config_error");
    if (!rc && json_is_string(cerr) && json_string_length(cerr)) {
        rc = print_kv("CONFIG ERROR", cerr);
        printf("  %-13s%s\n", "", "(not applied: the previous config keeps running)");
    }
    const json_t *ev = json_object_get(res, "events");
    if (json_is_object(ev)) {
        printf("  %-13s", "events");
        const char *names[] = {"published", "delivered", "dropped", "failed", "queued"};
        for (size_t i = 0; i < 5; i++)
            printf("%s%s %" JSON_INTEGER_FORMAT, i ? ", " : "", names[i],
                   json_integer_value(json_object_get(ev, names[i])));
        fputc('\n', stdout);
    }
    static const char *const pk[] = {"name", "plugin", "version", "state_keys"};
    static const char *const ph[] = {"NAME", "PLUGIN", "VERSION", "STATE KEYS"};
    static const char *const vk[] = {"name", "version", "sha256", "status", "state_version",
                                     "generation"};
    static const char *const vh[] = {"PLUGIN", "VERSION", "SHA256", "STATUS", "LAYOUT", "GEN"};
    static const char *const dk[] = {"name", "version", "generation", "state"};
    static const char *const dh[] = {"PLUGIN", "VERSION", "GEN", "STATE"};
    if (!rc)
        rc = print_object_table("protos", json_object_get(res, "protos"), pk, ph, 4);
    if (!rc)
        rc = print_object_table("versions", json_object_get(res, "versions"), vk, vh, 6);
    if (!rc)
        rc = print_object_table("draining", json_object_get(res, "draining"), dk, dh, 4);
    size_t i;
    json_t *q;
    const json_t *quar = json_object_get(res, "quarantined");
    if (!rc && !json_array_size(quar))
        printf("quarantined: none\n");
    else if (!rc)
        printf("quarantined (%zu)\n", json_array_size(quar));
    json_array_foreach(quar, i, q) {
        json_t *name = cell(json_object_get(q, "name")), *ver = cell(json_object_get(q, "version"));
        json_t *why = cell(json_object_get(q, "reason"));
        if (name && ver && why)
            printf("  %s %s: %s\n", json_string_value(name), json_string_value(ver),
                   json_string_value(why));
        else
            rc = CTL_EIO;
        json_decref(name);
        json_decref(ver);
        json_decref(why);
    }
    const json_t *errs = json_object_get(res, "last_errors");
    if (!rc && !json_array_size(errs))
        printf("last errors: none\n");
    else if (!rc)
        printf("last errors (%zu)\n", json_array_size(errs));
    json_array_foreach(errs, i, q) {
        char when[64];
        format_time(json_object_get(q, "time"), false, when, sizeof when);
        json_t *msg = cell(json_object_get(q, "message"));
        if (msg)
            printf("  %s  %s\n", when, json_string_value(msg));
        else
            rc = CTL_EIO;
        json_decref(msg);
    }
    if (rc)
        errmsg("out of memory");
    return rc;
}

static int show_list(const json_t *res)
{
    static const char *const k[] = {"name", "plugin", "version"};
    static const char *const h[] = {"NAME", "PLUGIN", "VERSION"};
    return print_object_table("protos", res, k, h, 3);
}

/* "name version (sha256 prefix)" of a version reference, or "-". */
static void print_version_ref(const char *label, const json_t *v)
{
    if (!json_is_object(v)) {
        printf("  %-13s-\n", label);
        return;
    }
    json_t *n = cell(json_object_get(v, "name")), *ver = cell(json_object_get(v, "version"));
    json_t *h = short_hash(json_object_get(v, "sha256"));
    printf("  %-13s%s %s (%s)\n", label, n ? json_string_value(n) : "?",
           ver ? json_string_value(ver) : "?", h ? json_string_value(h) : "?");
    json_decref(n);
    json_decref(ver);
    json_decref(h);
}

/* Prints the strings of a JSON array joined by sep, or "none". */
static void print_joined(const json_t *arr, const char *sep)
{
    size_t i;
    json_t *v;
    if (!json_array_size(arr))
        fputs("none", stdout);
    json_array_foreach(arr, i, v) {
        json_t *c = cell(v);
        printf("%s%s", i ? sep : "", c ? json_string_value(c) : "?");
        json_decref(c);
    }
}

static int show_explain(const json_t *res)
{
    const json_t *pl = json_object_get(res, "plugin");
    json_t *name = cell(json_object_get(res, "proto"));
    if (!name)
        return CTL_EIO;
    printf("%s (proto #%" JSON_INTEGER_FORMAT ")\n", json_string_value(name),
           json_integer_value(json_object_get(res, "id")));
    json_decref(name);
    json_t *line = json_sprintf("%s %s, %s, state layout %" JSON_INTEGER_FORMAT
                                ", generation %" JSON_INTEGER_FORMAT ", %s",
                                jstr(pl, "name") ? jstr(pl, "name") : "?",
                                jstr(pl, "version") ? jstr(pl, "version") : "?",
                                jstr(pl, "kind") ? jstr(pl, "kind") : "?",
                                json_integer_value(json_object_get(pl, "state_version")),
                                json_integer_value(json_object_get(pl, "generation")),
                                jstr(pl, "status") ? jstr(pl, "status") : "?");
    int rc = print_kv("plugin", line);
    json_decref(line);
    if (!rc && json_is_string(json_object_get(pl, "description")))
        rc = print_kv("description", json_object_get(pl, "description"));
    if (!rc)
        rc = print_kv("sha256", json_object_get(pl, "sha256"));
    if (!rc && json_is_string(json_object_get(pl, "origin")))
        rc = print_kv("origin", json_object_get(pl, "origin"));
    const json_t *persona = json_object_get(res, "persona");
    if (!rc && json_is_object(persona)) {
        const char *key, *label = "persona";
        json_t *v;
        json_object_foreach((json_t *)persona, key, v) {
            json_t *ks = json_string(key);
            json_t *kc = ks ? cell(ks) : NULL, *c = cell(v);
            if (kc && c)
                printf("  %-13s%s: %s\n", label, json_string_value(kc), json_string_value(c));
            else
                rc = CTL_EIO;
            json_decref(ks);
            json_decref(kc);
            json_decref(c);
            label = "";
        }
    } else if (!rc && persona && !json_is_null(persona)) {
        rc = print_kv("persona", persona);
    }
    if (!rc && json_is_string(json_object_get(res, "cloned_from")))
        rc = print_kv("cloned from", json_object_get(res, "cloned_from"));
    if (rc)
        return rc;
    print_version_ref("parent", json_object_get(res, "parent"));
    print_version_ref("previous", json_object_get(res, "previous"));
    printf("  %-13s", "history");
    const json_t *hist = json_object_get(res, "history");
    if (json_array_size(hist)) {
        print_joined(hist, " -> ");
        printf(" -> %s (now)\n", jstr(pl, "version") ? jstr(pl, "version") : "?");
    } else {
        printf("none\n");
    }
    const json_t *deps = json_object_get(res, "dependencies");
    printf("  %-13sprotos: ", "depends on");
    print_joined(json_object_get(deps, "protos"), ", ");
    printf("; plugins: ");
    print_joined(json_object_get(deps, "plugins"), ", ");
    fputc('\n', stdout);

    static const char *const mk[] = {"selector", "doc"};
    static const char *const mh[] = {"SELECTOR", "DOC"};
    static const char *const sk[] = {"key", "bytes"};
    static const char *const sh[] = {"KEY", "BYTES"};
    rc = print_object_table("methods", json_object_get(res, "methods"), mk, mh, 2);
    if (!rc)
        rc = print_object_table("state", json_object_get(res, "state"), sk, sh, 2);
    return rc;
}

/* The method's reply, as it is, newline-terminated. */
static int show_send(const json_t *res)
{
    const json_t *rep = json_object_get(res, "reply");
    size_t n = json_string_length(rep);
    const char *s = json_string_value(rep);
    if (!s) {
        errmsg("malformed reply from a4psd: send result without a \"reply\" string");
        return CTL_EIO;
    }
    fwrite(s, 1, n, stdout);
    if (!n || s[n - 1] != '\n')
        fputc('\n', stdout);
    return CTL_OK;
}

static int show_reload(const ctl_opts *o, const json_t *res)
{
    const json_t *errs = json_object_get(res, "errors");
    if (!o->json && json_is_true(json_object_get(res, "applied")))
        printf("config reloaded and plugin directory rescanned\n");
    if (json_is_true(json_object_get(res, "applied")))
        return CTL_OK;
    errmsg("reload not applied; the previous config keeps running");
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e) {
        json_t *c = cell(e);
        fprintf(stderr, "  %s\n", c ? json_string_value(c) : "?");
        json_decref(c);
    }
    return CTL_EREPLY;
}

/* One event, "SEQ TIME EVENT DATA-JSON" or, with --json, its object. */
static int show_event(const ctl_opts *o, const json_t *ev)
{
    if (o->json) {
        char *s = json_dumps(ev, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        return s ? CTL_OK : out_of_memory();
    }
    char when[64];
    format_time(json_object_get(ev, "time"), true, when, sizeof when);
    const json_t *data = json_object_get(ev, "data");
    char *raw = json_dumps(data ? data : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    char *clean = raw ? sanitize(raw, strlen(raw)) : NULL;
    json_t *name = cell(json_object_get(ev, "event"));
    int rc = clean && name ? CTL_OK : out_of_memory();
    if (!rc)
        printf("%" JSON_INTEGER_FORMAT " %s %s %s\n", json_integer_value(json_object_get(ev, "seq")),
               when, json_string_value(name), clean);
    free(raw);
    free(clean);
    json_decref(name);
    return rc;
}

/* Statistics, flattened to "dotted.key  value" lines aligned on the value. */
static int flatten(const json_t *v, const char *prefix, json_t *rows)
{
    if (!json_is_object(v)) {
        json_t *row = json_pack("[s,o]", prefix, cell(v));
        return json_array_append_new(rows, row) ? CTL_EIO : CTL_OK;
    }
    const char *key;
    json_t *m;
    json_object_foreach((json_t *)v, key, m) {
        json_t *path = *prefix ? json_sprintf("%s.%s", prefix, key) : json_string(key);
        json_t *clean = path ? cell(path) : NULL;
        int rc = clean ? flatten(m, json_string_value(clean), rows) : CTL_EIO;
        json_decref(path);
        json_decref(clean);
        if (rc)
            return rc;
    }
    return CTL_OK;
}

static int show_stats(const json_t *res)
{
    json_t *rows = json_array();
    int rc = rows ? flatten(res, "", rows) : CTL_EIO;
    if (!rc)
        print_table(rows);
    else
        errmsg("out of memory");
    json_decref(rows);
    return rc;
}

/* Follows the event stream after its {"following":true} answer, until the
 * daemon closes it or reports an error; no timeout applies. */
static int follow_events(const ctl_opts *o, conn *c)
{
    for (;;) {
        char *line;
        size_t len;
        int io = conn_read_line(c, -1, &line, &len);
        if (io != IO_OK)
            return io_failure(c, io, "event");
        json_error_t je;
        reply r = {.root = json_loadb(line, len, 0, &je)};
        json_t *ev = json_object_get(r.root, "event");
        json_t *ok = json_object_get(r.root, "ok");
        int rc = CTL_OK;
        if (json_is_object(ev)) {
            rc = show_event(o, ev);
        } else if (json_is_false(ok)) {
            r.code = jstr(r.root, "code") ? jstr(r.root, "code") : "?";
            r.error = jstr(r.root, "error") ? jstr(r.root, "error") : "";
            rc = reply_error(o, &r);
            if (!rc)
                rc = CTL_EREPLY;
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

/* ---- Command line ---- */

/* Reads all of stdin, at most REQUEST_MAX bytes, into a new string. */
static int read_stdin(char **out, size_t *outlen)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return CTL_EIO;
    for (;;) {
        if (len == cap) {
            char *nb = cap > REQUEST_MAX ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                errmsg(cap > REQUEST_MAX ? "the payload on stdin is over 1 MiB"
                                         : "out of memory");
                return cap > REQUEST_MAX ? CTL_EUSAGE : CTL_EIO;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
        if (n > 0) {
            len += (size_t)n;
        } else if (n == 0) {
            *out = buf;
            *outlen = len;
            return CTL_OK;
        } else if (errno != EINTR) {
            errmsg("reading the payload from stdin: %s", strerror(errno));
            free(buf);
            return CTL_EIO;
        }
    }
}

/* Builds the request for the parsed command line into *req. */
static int build_request(const ctl_opts *o, json_t **req)
{
    const char *cmd = o->cmd;
    if (!strcmp(cmd, "explain")) {
        *req = json_pack("{s:s, s:s}", "cmd", cmd, "proto", o->args[0]);
    } else if (!strcmp(cmd, "send")) {
        char *payload = NULL;
        size_t len = 0;
        const char *arg = o->nargs > 2 ? o->args[2] : NULL;
        if ((arg && !strcmp(arg, "-")) || (!arg && !isatty(STDIN_FILENO))) {
            int rc = read_stdin(&payload, &len);
            if (rc)
                return rc;
        }
        json_t *p = payload ? json_stringn(payload, len) : json_string(arg ? arg : "");
        free(payload);
        if (!p) {
            errmsg("the payload is not valid UTF-8 text");
            return CTL_EUSAGE;
        }
        *req = json_pack("{s:s, s:s, s:s, s:o}", "cmd", cmd, "proto", o->args[0], "selector",
                         o->args[1], "payload", p);
    } else if (!strcmp(cmd, "events") && o->follow) {
        *req = json_pack("{s:s, s:b}", "cmd", cmd, "follow", 1);
    } else {
        *req = json_pack("{s:s}", "cmd", cmd);
    }
    if (!*req) {
        errmsg("arguments must be valid UTF-8 text");
        return CTL_EUSAGE;
    }
    return CTL_OK;
}

/* Commands, with how many positional arguments each takes. */
static const struct {
    const char *name;
    int min, max;
} commands[] = {
    {"status", 0, 0}, {"list", 0, 0},     {"explain", 1, 1}, {"send", 2, 3},
    {"reload", 0, 0}, {"snapshot", 0, 0}, {"events", 0, 0},  {"stats", 0, 0},
};

/* Parses argv into o.  Options go before the command; after it, "--json"
 * is accepted too (and "--follow" for events), except for send, whose
 * arguments are all taken as they are.  Returns CTL_OK, CTL_EUSAGE, or -1
 * when help was printed. */
static int parse_args(int argc, char **argv, ctl_opts *o)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},         {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    *o = (ctl_opts){.timeout_s = DEFAULT_TIMEOUT_S};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+s:c:jt:h", longopts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 's': o->socket = optarg; break;
        case 'c': o->config = optarg; break;
        case 'j': o->json = true; break;
        case 't':
            errno = 0;
            o->timeout_s = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(o->timeout_s >= 0 && o->timeout_s <= 1e6))
                return usage_error("--timeout wants seconds between 0 and 1000000, not '%s'",
                                   optarg);
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
    size_t i;
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, o->cmd))
            break;
    if (i == sizeof commands / sizeof commands[0])
        return usage_error("unknown command '%s'", o->cmd);
    o->args = argv + optind;
    bool is_send = !strcmp(o->cmd, "send");
    for (int a = optind; a < argc; a++) {
        if (is_send) {
            o->args[o->nargs++] = argv[a];
        } else if (!strcmp(argv[a], "--json") || !strcmp(argv[a], "-j")) {
            o->json = true;
        } else if (!strcmp(o->cmd, "events") &&
                   (!strcmp(argv[a], "--follow") || !strcmp(argv[a], "-f"))) {
            o->follow = true;
        } else if (argv[a][0] == '-' && argv[a][1]) {
            return usage_error("%s: unknown option '%s'", o->cmd, argv[a]);
        } else {
            o->args[o->nargs++] = argv[a];
        }
    }
    if (o->nargs < commands[i].min || o->nargs > commands[i].max)
        return usage_error("%s: %s arguments", o->cmd,
                           o->nargs < commands[i].min ? "missing" : "too many");
    return CTL_OK;
}

/* Prints a successful result for the command. */
static int show_result(const ctl_opts *o, const json_t *res)
{
    if (!strcmp(o->cmd, "reload") && o->json) {
        char *s = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s)
            puts(s);
        free(s);
        return s ? show_reload(o, res) : CTL_EIO;
    }
    if (!strcmp(o->cmd, "events") && !o->json) {
        size_t i;
        json_t *ev;
        json_array_foreach(res, i, ev) {
            int rc = show_event(o, ev);
            if (rc)
                return rc;
        }
        return CTL_OK;
    }
    if (o->json) {
        char *s = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
            return CTL_EIO;
        puts(s);
        free(s);
        return CTL_OK;
    }
    if (!strcmp(o->cmd, "status"))
        return show_status(res);
    if (!strcmp(o->cmd, "list"))
        return show_list(res);
    if (!strcmp(o->cmd, "explain"))
        return show_explain(res);
    if (!strcmp(o->cmd, "send"))
        return show_send(res);
    if (!strcmp(o->cmd, "reload"))
        return show_reload(o, res);
    if (!strcmp(o->cmd, "stats"))
        return show_stats(res);
    if (!strcmp(o->cmd, "snapshot") && jstr(res, "message")) {
        json_t *c = cell(json_object_get(res, "message"));
        printf("%s\n", c ? json_string_value(c) : "?");
        json_decref(c);
        return c ? CTL_OK : CTL_EIO;
    }
    json_t *c = cell(res);       /* anything else: its JSON */
    printf("%s\n", c ? json_string_value(c) : "?");
    json_decref(c);
    return c ? CTL_OK : CTL_EIO;
}

int main(int argc, char **argv)
{
    ctl_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CTL_OK : rc;

    json_t *req = NULL;
    conn c = {.fd = -1};
    reply r = {0};
    rc = build_request(&o, &req);
    if (!rc)
        rc = resolve_socket(&o, &c);
    int64_t deadline = deadline_after(o.timeout_s);
    if (!rc)
        rc = conn_open(&c, &o, deadline);
    if (!rc)
        rc = request(&c, req, deadline, &r);
    if (!rc && !r.ok)
        rc = reply_error(&o, &r);
    else if (!rc && !strcmp(o.cmd, "events") && o.follow)
        rc = follow_events(&o, &c);
    else if (!rc)
        rc = show_result(&o, r.result ? r.result : json_null());

    if (fflush(stdout) != 0 || ferror(stdout)) {
        errmsg("writing the output: %s", strerror(errno));
        if (!rc)
            rc = CTL_EIO;
    }
    json_decref(r.root);
    json_decref(req);
    free(c.buf);
    if (c.fd >= 0)
        close(c.fd);
    return rc;
}
