/* journal_writer.c -- the writing clients of journal_crash.sh: CLIENTS
 * threads, each on ONE connection to a4psd's control socket, send BABS
 * `remember` one at a time and keep an exact account of what a4psd
 * acknowledged.
 *
 *   a4ps-journal-writer SOCKET DIR TAG CLIENTS [WRITES [PAD]]
 *
 * Client c sends the notes "c<c> <TAG> w<seq>" (seq 000001, 000002, ...;
 * PAD 'x's appended after a space when PAD > 0), each unique per client and
 * write, and waits for each reply.  It appends to DIR/c<c>, with one write(2)
 * per line so that nothing it learnt is held in a buffer when it is killed
 * or the daemon dies:
 *
 *   ack SEQ N         the reply was ok: "noted #N" (acknowledged)
 *   nak SEQ REPLY     any other reply (not acknowledged; may or may not be
 *                     in the state)
 *   lost SEQ ERRNO    sent (or being sent) when the connection ended: in
 *                     flight, not acknowledged; at most one per client
 *   noconnect ERRNO   the connection could not be made
 *
 * DIR/up appears once every client has tried to connect, so the caller can
 * time its kill from the moment the writes start.  Without WRITES a client
 * writes until its connection ends (the daemon killed); with it, it stops
 * after WRITES notes.  Prints "acked A nak N lost L" on stdout; exits 0 when
 * every client with a WRITES limit reached it (always without one), 1 when
 * one did not, 2 on a usage or local error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NOTE_MAX 4096            /* babs's limit on one note */
#define REPLY_MAX 8192

static const char *sock_path, *dir, *tag;
static long writes_limit = -1;   /* -1: until the connection ends */
static long pad;
static int nclients;
static pthread_barrier_t connected;
static atomic_long acked, naked, lost;
static atomic_int short_clients; /* stopped before WRITES */

static void die(const char *what)
{
    fprintf(stderr, "journal_writer: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* One line of the client's record, in one write(2): the line is either in
 * the file whole or not at all, whatever happens to this process next. */
static void record(int fd, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(fd, line, (size_t)n) != n)
        die("writing the record");
}

static int send_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct {
    int fd;
    char buf[REPLY_MAX];
    size_t len;
} conn;

/* The next reply line (NUL-terminated, without its newline), or NULL when
 * the connection ended before one came whole. */
static char *read_line(conn *c)
{
    static __thread char line[REPLY_MAX];
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            memcpy(line, c->buf, n);
            line[n] = '\0';
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return line;
        }
        if (c->len == sizeof c->buf) {
            errno = EMSGSIZE;
            return NULL;
        }
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = ECONNRESET;
            return NULL;
        }
        c->len += (size_t)r;
    }
}

static void *client(void *arg)
{
    int id = (int)(long)arg;
    char path[4096];
    snprintf(path, sizeof path, "%s/c%d", dir, id);
    int rec = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (rec < 0)
        die(path);

    static __thread conn c;
    c.len = 0;
    c.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0)
        die("socket");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    int ok = connect(c.fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (!ok)
        record(rec, "noconnect %d", errno);
    pthread_barrier_wait(&connected);

    static __thread char req[NOTE_MAX + 256];
    long seq = 0;
    while (ok && (writes_limit < 0 || seq < writes_limit)) {
        seq++;
        int n = snprintf(req, sizeof req,
                         "{\"cmd\":\"send\",\"proto\":\"BABS\",\"selector\":\"remember\","
                         "\"payload\":\"c%d %s w%06ld", id, tag, seq);
        if (pad > 0) {
            req[n++] = ' ';
            memset(req + n, 'x', (size_t)pad);
            n += (int)pad;
        }
        n += snprintf(req + n, sizeof req - (size_t)n, "\"}\n");
        char *line = NULL;
        if (send_all(c.fd, req, (size_t)n) == 0)
            line = read_line(&c);
        if (!line) {
            record(rec, "lost %ld %d", seq, errno);
            atomic_fetch_add(&lost, 1);
            break;
        }
        const char *noted = strstr(line, "\"reply\":\"noted #");
        if (strncmp(line, "{\"ok\":true,", 11) == 0 && strstr(line, "\"status\":0") && noted) {
            record(rec, "ack %ld %ld", seq, strtol(noted + 16, NULL, 10));
            atomic_fetch_add(&acked, 1);
        } else {
            record(rec, "nak %ld %.200s", seq, line);
            atomic_fetch_add(&naked, 1);
        }
    }
    if (writes_limit >= 0 && seq < writes_limit)
        atomic_fetch_add(&short_clients, 1);
    close(c.fd);
    close(rec);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: %s SOCKET DIR TAG CLIENTS [WRITES [PAD]]\n", argv[0]);
        return 2;
    }
    sock_path = argv[1];
    dir = argv[2];
    tag = argv[3];
    nclients = atoi(argv[4]);
    if (argc > 5)
        writes_limit = atol(argv[5]);
    if (argc > 6)
        pad = atol(argv[6]);
    if (nclients < 1 || nclients > 256 || pad < 0 || pad > NOTE_MAX - 64 ||
        strlen(tag) > 32 || strpbrk(tag, "\"\\")) {
        fprintf(stderr, "journal_writer: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* +1: the main thread marks the start once every client has connected. */
    pthread_barrier_init(&connected, NULL, (unsigned)nclients + 1);
    pthread_t *t = calloc((size_t)nclients, sizeof *t);
    if (!t)
        die("calloc");
    for (int i = 0; i < nclients; i++)
        if ((errno = pthread_create(&t[i], NULL, client, (void *)(long)i)) != 0)
            die("pthread_create");
    pthread_barrier_wait(&connected);
    char up[4096];
    snprintf(up, sizeof up, "%s/up", dir);
    int fd = open(up, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        die(up);
    close(fd);
    for (int i = 0; i < nclients; i++)
        pthread_join(t[i], NULL);
    free(t);
    printf("acked %ld nak %ld lost %ld\n", atomic_load(&acked), atomic_load(&naked),
           atomic_load(&lost));
    return atomic_load(&short_clients) ? 1 : 0;
}
