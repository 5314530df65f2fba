/* command.c -- the "command" code generator: an outside program writes the
 * candidate.
 *
 * generate runs the program named by the proto's state with the forge's task
 * JSON on its stdin and takes the candidate C source from its stdout.  The
 * program is started through the host's run entry (ABI rule R12): a helper
 * outside a4psd starts it -- only when the config grants this plugin that
 * program -- with no shell, in a process group of its own, a clean
 * environment and no descriptor but its three pipes, and kills the group
 * when it overruns its time.  Nothing here forks or execs.
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
 * Global state: none.  Uses abi/a4ps.h (minor 3: the run entry), jansson and
 * libc. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "a4ps.h"
#include "generator.h"

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

/* ---- running the program, through the host ---- */

/* Run s's program with input on stdin through the host's run entry and
 * turn the outcome into the method's status and reply (the candidate when
 * want_output). */
static int run_and_report(a4ps_ctx *ctx, const settings *s, const void *input, size_t inlen,
                          bool want_output)
{
    if (!A4PS_HOST_HAS(ctx->api, run))
        return reply_fmt(ctx, A4PS_ERROR, "command: this host has no run entry (ABI 1.3, rule "
                                          "R12): it cannot run %s", s->command);
    a4ps_run_request rq = {
        .size = sizeof rq, .argv = (const char *const *)s->argv, .input = input,
        .input_len = inlen, .timeout_ms = (unsigned)s->timeout_ms, .stdout_max = OUT_MAX,
        .stderr_max = ERR_MAX,
    };
    a4ps_run_result r = {.size = sizeof r};
    int hrc = ctx->api->run(ctx, &rq, &r);
    int rc;
    if (hrc != A4PS_OK) {
        rc = reply_fmt(ctx, A4PS_ERROR, "command: %s", r.error);
        goto out;
    }
    char line[512];
    first_line(r.err, r.err_len, line, sizeof line);
    const char *sep = line[0] ? ": " : "";
    if (r.timed_out)
        rc = reply_fmt(ctx, A4PS_ERROR, "command %s timed out after %lu ms and was killed%s%s",
                       s->command, s->timeout_ms, sep, line);
    else if (r.stdout_overflow)
        rc = reply_fmt(ctx, A4PS_ERROR, "command %s wrote more than 1 MiB on stdout and was "
                                        "killed", s->command);
    else if (r.signal)
        rc = reply_fmt(ctx, A4PS_ERROR, "command %s was killed by signal %d (%s)%s%s",
                       s->command, r.signal, strsignal(r.signal), sep, line);
    else if (want_output && r.exited && r.exit_code == EXIT_NOT_YET)
        rc = reply_fmt(ctx, A4PS_ENOENT, "command %s has no candidate yet%s%s", s->command, sep,
                       line);
    else if (!r.exited || r.exit_code != 0)
        rc = reply_fmt(ctx, A4PS_ERROR, "command %s exited %d%s%s", s->command,
                       r.exited ? r.exit_code : -1, sep, line);
    else if (!want_output)
        rc = reply_fmt(ctx, A4PS_OK, "ok");
    else if (r.out_len == 0)
        rc = reply_fmt(ctx, A4PS_ERROR, "command %s exited 0 but wrote nothing on stdout%s%s",
                       s->command, sep, line);
    else {
        rc = a4ps_reply(ctx, r.out, r.out_len);
        if (rc != A4PS_OK)
            rc = reply_fmt(ctx, rc, "command: cannot reply with the %zu bytes of %s (%d)",
                           r.out_len, s->command, rc);
    }
out:
    ctx->api->free(r.out);
    ctx->api->free(r.err);
    return rc;
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
    if (rc == A4PS_OK)
        rc = run_and_report(ctx, &s, msg, len, true);
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
        rc = run_and_report(ctx, &s, msg, len, false);
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
    .version = "1.1.0",
    .state_version = 1,
    .kind = A4PS_KIND_GENERATOR,
    .methods = command_methods,
    .self_test = command_self_test,
    .description = "code generator: an external program (no shell), started by the host's "
                   "run entry, gets the task JSON on stdin and writes the candidate C source "
                   "on stdout",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &command_plugin;
}
