/* command.c -- the "command" code generator: an outside program writes the
 * candidate.
 *
 * generate runs the program named by the proto's state with the forge's task
 * JSON on its stdin and takes the candidate C source from its stdout.  No
 * shell is involved: the program is posix_spawn()ed (never fork(): the daemon
 * is multithreaded) in a process group of its own, with default signal
 * handling, an empty signal mask and no descriptor of the daemon but the
 * three pipes.  It is killed (SIGKILL to its group) when it overruns its time.
 *
 * Proto state (the settings, strings):
 *     command      absolute path of the program (required)
 *     args         extra arguments, separated by spaces (optional)
 *     timeout_ms   limit of one run (default 60000)
 *     feedback     "true": feedback runs the program again with "--feedback"
 *                  as its first argument and the feedback JSON on stdin
 *
 * The program's contract: exit 0 with the complete C source on stdout (at
 * most 1 MiB); exit 75 (EX_TEMPFAIL) when it has no candidate yet, with what
 * it waits for on stderr (the forge asks again); any other exit is a failure,
 * reported with the first line of stderr (the first 64 KiB are kept).
 *
 * Global state: none.  Uses abi/a4ps.h, jansson and libc (POSIX). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "a4ps.h"
#include "generator.h"

extern char **environ;

#define OUT_MAX (1024u * 1024u)       /* stdout: the candidate */
#define ERR_MAX (64u * 1024u)         /* stderr kept for the reason */
#define SETTING_MAX 4096u
#define MAX_ARGS 64
#define DEFAULT_TIMEOUT_MS 60000u
#define MAX_TIMEOUT_MS 86400000u      /* a day */
#define EXIT_NOT_YET 75               /* EX_TEMPFAIL of sysexits.h */

/* ---- small text helpers ---- */

/* Split s in place at runs of spaces and tabs into argv (at most max
 * words); the number of words, or -1 when there are more. */
static int split_args(char *s, char **argv, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *w = strtok_r(s, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (n == max)
            return -1;
        argv[n++] = w;
    }
    return n;
}

/* ---- settings ---- */

typedef struct settings {
    char *command;
    char *args;                  /* split in place; argv points into it */
    char *argv[MAX_ARGS + 3];    /* command, [--feedback], args..., NULL */
    unsigned long timeout_ms;
    bool feedback;
} settings;

static void settings_free(settings *s)
{
    free(s->command);
    free(s->args);
}

/* Read and check the proto's settings; on failure the reply says which key
 * is wrong and A4PS_ERROR is returned. */
static int settings_read(a4ps_ctx *ctx, settings *s, bool for_feedback)
{
    memset(s, 0, sizeof *s);
    s->timeout_ms = DEFAULT_TIMEOUT_MS;

    char *v = NULL;
    int rc = state_str(ctx, "feedback", SETTING_MAX, &v);
    s->feedback = rc == A4PS_OK && strcmp(v, "true") == 0;
    free(v);
    if (for_feedback && !s->feedback)
        return A4PS_OK;

    rc = state_str(ctx, "command", SETTING_MAX, &s->command);
    if (rc == A4PS_ENOENT || (rc == A4PS_OK && s->command[0] == '\0'))
        return reply_fmt(ctx, A4PS_ERROR, "command: state key \"command\" is not set (the "
                                          "absolute path of the generator program)");
    if (rc != A4PS_OK)
        return reply_fmt(ctx, A4PS_ERROR, "command: cannot read state key \"command\" (%d)", rc);
    if (s->command[0] != '/')
        return reply_fmt(ctx, A4PS_ERROR, "command: state key \"command\" must be an absolute "
                                          "path, not \"%.200s\"", s->command);

    rc = state_str(ctx, "timeout_ms", SETTING_MAX, &v);
    if (rc == A4PS_OK && !parse_ulong(v, 1, MAX_TIMEOUT_MS, &s->timeout_ms)) {
        rc = reply_fmt(ctx, A4PS_ERROR, "command: state key \"timeout_ms\" must be a number "
                                        "of milliseconds from 1 to %u, not \"%.40s\"",
                       MAX_TIMEOUT_MS, v);
        free(v);
        return rc;
    }
    free(v);

    int n = 0;
    s->argv[n++] = s->command;
    if (for_feedback)
        s->argv[n++] = "--feedback";
    rc = state_str(ctx, "args", SETTING_MAX, &s->args);
    if (rc == A4PS_OK) {
        int w = split_args(s->args, s->argv + n, MAX_ARGS);
        if (w < 0)
            return reply_fmt(ctx, A4PS_ERROR, "command: state key \"args\" holds more than %d "
                                              "arguments", MAX_ARGS);
        n += w;
    } else if (rc != A4PS_ENOENT) {
        return reply_fmt(ctx, A4PS_ERROR, "command: cannot read state key \"args\" (%d)", rc);
    }
    s->argv[n] = NULL;
    return A4PS_OK;
}

/* ---- running the program ---- */

typedef struct run {
    char *out;
    size_t outlen;
    char err[ERR_MAX];
    size_t errlen;
    int status;                  /* from waitpid, when reaped */
    bool timed_out;
    bool out_overflow;
    int spawn_errno;
} run;

/* A copy of fd at 3 or above, close-on-exec, and fd closed: the child's
 * dup2 onto 0, 1 and 2 must never find its source already there. */
static int fd_above_stdio(int fd)
{
    if (fd > 2)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return n;
}

static int pipe_cloexec(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    p[0] = fd_above_stdio(p[0]);
    p[1] = fd_above_stdio(p[1]);
    if (p[0] < 0 || p[1] < 0) {
        if (p[0] >= 0)
            close(p[0]);
        if (p[1] >= 0)
            close(p[1]);
        return -1;
    }
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Spawn argv[0] with the three pipe ends as its stdio.  0 or an errno. */
static int spawn(char *const argv[], int in, int out, int err, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return rc;
    rc = posix_spawnattr_init(&at);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, in, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, out, 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, err, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Descriptors another part of the daemon opened without O_CLOEXEC. */
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    /* The daemon blocks and ignores signals for its own reasons; the program
     * starts clean, in a group of its own so that a timeout kills its
     * children too. */
    if (!rc)
        rc = posix_spawnattr_setsigmask(&at, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&at, &all);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&at, 0);
    if (!rc)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                               POSIX_SPAWN_SETPGROUP);
    if (!rc)
        rc = posix_spawn(pid, argv[0], &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* Run argv with input on stdin; collect stdout (at most OUT_MAX; more ends
 * the run) and stderr into r, killing the program's group at timeout_ms.
 * SIGPIPE from a program that stops reading early is kept from the daemon:
 * blocked on this thread while writing, and a pending one taken away. */
static void run_program(char *const argv[], const char *input, size_t inlen,
                        unsigned long timeout_ms, run *r)
{
    memset(r, 0, sizeof *r);
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    if (pipe_cloexec(pin) || pipe_cloexec(pout) || pipe_cloexec(perr)) {
        r->spawn_errno = errno;
        close_fd(&pin[0]), close_fd(&pin[1]), close_fd(&pout[0]), close_fd(&pout[1]);
        close_fd(&perr[0]), close_fd(&perr[1]);
        return;
    }
    pid_t pid;
    int rc = spawn(argv, pin[0], pout[1], perr[1], &pid);
    close_fd(&pin[0]);
    close_fd(&pout[1]);
    close_fd(&perr[1]);
    if (rc) {
        r->spawn_errno = rc;
        close_fd(&pin[1]), close_fd(&pout[0]), close_fd(&perr[0]);
        return;
    }
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    fcntl(perr[0], F_SETFL, O_NONBLOCK);

    sigset_t pipeset, oldmask, pending;
    sigemptyset(&pipeset);
    sigaddset(&pipeset, SIGPIPE);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipeset, &oldmask);

    size_t outcap = 0, inoff = 0;
    if (inlen == 0)
        close_fd(&pin[1]);
    uint64_t deadline = now_ms() + timeout_ms;
    bool exited = false;
    char buf[65536];
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            r->timed_out = true;
            break;
        }
        struct pollfd fds[3];
        int nfds = 0;
        if (pin[1] >= 0)
            fds[nfds++] = (struct pollfd){pin[1], POLLOUT, 0};
        if (pout[0] >= 0)
            fds[nfds++] = (struct pollfd){pout[0], POLLIN, 0};
        if (perr[0] >= 0)
            fds[nfds++] = (struct pollfd){perr[0], POLLIN, 0};
        /* With every pipe closed only the exit is awaited: poll briefly. */
        int wait = (int)(deadline - now);
        int cap = nfds ? 50 : 5;
        if (wait > cap)
            wait = cap;
        int n = poll(fds, (nfds_t)nfds, wait);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; n > 0 && i < nfds; i++) {
            if (!fds[i].revents)
                continue;
            int fd = fds[i].fd;
            if (fd == pin[1]) {
                ssize_t w = write(fd, input + inoff, inlen - inoff);
                if (w > 0)
                    inoff += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) || inoff == inlen ||
                    (fds[i].revents & (POLLERR | POLLHUP)))
                    close_fd(&pin[1]);   /* done, or the program stopped reading */
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (got <= 0) {
                close_fd(fd == pout[0] ? &pout[0] : &perr[0]);
                continue;
            }
            if (fd == perr[0]) {
                size_t keep = ERR_MAX - 1 - r->errlen;
                if ((size_t)got < keep)
                    keep = (size_t)got;
                memcpy(r->err + r->errlen, buf, keep);
                r->errlen += keep;
                continue;
            }
            if (r->outlen + (size_t)got > OUT_MAX) {
                r->out_overflow = true;
                break;
            }
            if (r->outlen + (size_t)got + 1 > outcap) {
                size_t nc = outcap ? outcap : 65536;
                while (nc < r->outlen + (size_t)got + 1)
                    nc *= 2;
                char *p = realloc(r->out, nc);
                if (!p) {
                    r->out_overflow = true;
                    break;
                }
                r->out = p;
                outcap = nc;
            }
            memcpy(r->out + r->outlen, buf, (size_t)got);
            r->outlen += (size_t)got;
        }
        if (r->out_overflow)
            break;
        if (!exited) {
            /* WNOWAIT leaves the zombie, so pid (and its group id) cannot be
             * reused before the kill below. */
            siginfo_t si = {0};
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid)
                exited = true;
        }
        /* Done when the program exited and its pipes are drained; a child it
         * left behind may keep them open, which is not waited for. */
        if (exited && (pout[0] < 0 && perr[0] < 0))
            break;
        if (exited && n == 0)
            break;
    }
    if (r->timed_out || r->out_overflow || !exited) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    while (waitpid(pid, &r->status, 0) < 0 && errno == EINTR)
        ;
    close_fd(&pin[1]);
    close_fd(&pout[0]);
    close_fd(&perr[0]);

    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipeset, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
    if (r->out)
        r->out[r->outlen] = '\0';
    r->err[r->errlen] = '\0';
}

/* Turn a finished run into the method's status and reply (the candidate
 * when want_output). */
static int report_run(a4ps_ctx *ctx, const settings *s, const run *r, bool want_output,
                      unsigned long timeout_ms)
{
    char line[512];
    first_line(r->err, r->errlen, line, sizeof line);
    const char *sep = line[0] ? ": " : "";
    if (r->spawn_errno)
        return reply_fmt(ctx, A4PS_ERROR, "command %s cannot be run: %s", s->command,
                         strerror(r->spawn_errno));
    if (r->timed_out)
        return reply_fmt(ctx, A4PS_ERROR, "command %s timed out after %lu ms and was killed%s%s",
                         s->command, timeout_ms, sep, line);
    if (r->out_overflow)
        return reply_fmt(ctx, A4PS_ERROR, "command %s wrote more than 1 MiB on stdout and was "
                                          "killed", s->command);
    if (WIFSIGNALED(r->status))
        return reply_fmt(ctx, A4PS_ERROR, "command %s was killed by signal %d (%s)%s%s",
                         s->command, WTERMSIG(r->status), strsignal(WTERMSIG(r->status)), sep,
                         line);
    int code = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : -1;
    if (want_output && code == EXIT_NOT_YET)
        return reply_fmt(ctx, A4PS_ENOENT, "command %s has no candidate yet%s%s", s->command,
                         sep, line);
    if (code != 0)
        return reply_fmt(ctx, A4PS_ERROR, "command %s exited %d%s%s", s->command, code, sep,
                         line);
    if (!want_output)
        return reply_fmt(ctx, A4PS_OK, "ok");
    if (r->outlen == 0)
        return reply_fmt(ctx, A4PS_ERROR, "command %s exited 0 but wrote nothing on stdout%s%s",
                         s->command, sep, line);
    int rc = a4ps_reply(ctx, r->out, r->outlen);
    if (rc != A4PS_OK)
        return reply_fmt(ctx, rc, "command: cannot reply with the %zu bytes of %s (%d)",
                         r->outlen, s->command, rc);
    return A4PS_OK;
}

/* ---- methods ---- */

/* The message must be a JSON object with a usable "task": a garbage message
 * is refused here, before anything is spawned. */
static int check_message(a4ps_ctx *ctx, const char *sel, const void *msg, size_t len)
{
    json_t *j;
    char id[TASK_ID_MAX + 1];
    int rc = parse_task(ctx, "command", sel, msg, len, &j, id);
    json_decref(j);
    return rc;
}

static int command_generate(a4ps_ctx *ctx, const void *msg, size_t len)
{
    int rc = check_message(ctx, "generate", msg, len);
    if (rc != A4PS_OK)
        return rc;
    settings s;
    rc = settings_read(ctx, &s, false);
    if (rc == A4PS_OK) {
        run *r = malloc(sizeof *r);
        if (!r) {
            rc = reply_fmt(ctx, A4PS_ENOMEM, "command: out of memory");
        } else {
            run_program(s.argv, msg, len, s.timeout_ms, r);
            rc = report_run(ctx, &s, r, true, s.timeout_ms);
            free(r->out);
            free(r);
        }
    }
    settings_free(&s);
    return rc;
}

static int command_feedback(a4ps_ctx *ctx, const void *msg, size_t len)
{
    int rc = check_message(ctx, "feedback", msg, len);
    if (rc != A4PS_OK)
        return rc;
    settings s;
    rc = settings_read(ctx, &s, true);
    if (rc == A4PS_OK && !s.feedback) {
        rc = reply_fmt(ctx, A4PS_OK, "ok");
    } else if (rc == A4PS_OK) {
        run *r = malloc(sizeof *r);
        if (!r) {
            rc = reply_fmt(ctx, A4PS_ENOMEM, "command: out of memory");
        } else {
            run_program(s.argv, msg, len, s.timeout_ms, r);
            rc = report_run(ctx, &s, r, false, s.timeout_ms);
            free(r->out);
            free(r);
        }
    }
    settings_free(&s);
    return rc;
}

/* ---- self-test and descriptor ---- */

static int command_self_test(a4ps_ctx *ctx)
{
    char args[] = "  --model  qwen\t-x ";
    char *argv[4];
    if (split_args(args, argv, 4) != 3 || strcmp(argv[0], "--model") != 0 ||
        strcmp(argv[1], "qwen") != 0 || strcmp(argv[2], "-x") != 0)
        return A4PS_ERROR;
    char many[] = "a b c";
    if (split_args(many, argv, 2) != -1)
        return A4PS_ERROR;
    char line[16];
    first_line("\n  error: no model\nmore", 22, line, sizeof line);
    if (strcmp(line, "error: no model") != 0)
        return A4PS_ERROR;
    unsigned long v;
    if (!parse_ulong("60000", 1, MAX_TIMEOUT_MS, &v) || v != 60000 ||
        parse_ulong("0", 1, 10, &v) || parse_ulong("12x", 1, 100, &v) ||
        parse_ulong("", 0, 1, &v))
        return A4PS_ERROR;
    return A4PS_OK;
}

static const a4ps_method command_methods[] = {
    {"generate", command_generate,
     "run the configured program with the task JSON on stdin; its stdout is the candidate"},
    {"feedback", command_feedback,
     "when state feedback is \"true\", pipe the feedback JSON to the program run with "
     "--feedback"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin command_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "command",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_GENERATOR,
    .methods = command_methods,
    .self_test = command_self_test,
    .description = "code generator: an external program (no shell) gets the task JSON on "
                   "stdin and writes the candidate C source on stdout",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &command_plugin;
}
