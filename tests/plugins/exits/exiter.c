/* exiter.c -- a plugin whose methods end the process, each its own way:
 * exit(3), quick_exit(3), _exit(3), _Exit(3) and syscall(SYS_exit_group, 3);
 * fork_exit's child calls exit(9), which must end the child alone.
 * With containment on (kernel_contain_exits) each is a fault of the plugin.
 * Built twice: 2.0.0 ends the process; EXITER_SAFE makes a well-behaved
 * 1.0.0 of the same name, so a test sees the proto rolled back to it. */
#include <stdlib.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tp_common.h"

#ifdef EXITER_SAFE
#define EXITER_VERSION "1.0.0"
#define END(call) return tp_reply(ctx, "still here " EXITER_VERSION)
#else
#define EXITER_VERSION "2.0.0"
#define END(call) (call); return tp_reply(ctx, "survived")
#endif

static int m_exit(a4ps_ctx *ctx, const void *msg, size_t len) { END(exit(3)); }
static int m_quick_exit(a4ps_ctx *ctx, const void *msg, size_t len) { END(quick_exit(3)); }
static int m_underscore_exit(a4ps_ctx *ctx, const void *msg, size_t len) { END(_exit(3)); }
static int m_big_exit(a4ps_ctx *ctx, const void *msg, size_t len) { END(_Exit(3)); }
static int m_exit_group(a4ps_ctx *ctx, const void *msg, size_t len)
{
    END(syscall(SYS_exit_group, 3));
}

/* A child of the plugin's fork calls exit(9): its exit is its own (it has
 * no caller to go back to), and the plugin's call goes on. */
static int m_fork_exit(a4ps_ctx *ctx, const void *msg, size_t len)
{
    pid_t p = fork();
    if (p == 0)
        exit(9);
    int st = 0;
    if (p < 0 || waitpid(p, &st, 0) != p)
        return A4PS_ERROR;
    char buf[64];
    snprintf(buf, sizeof buf, "child %s %d", WIFEXITED(st) ? "exited" : "killed",
             WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return tp_reply(ctx, buf);
}

static int m_ok(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return tp_reply(ctx, "ok " EXITER_VERSION);
}

static const a4ps_method methods[] = {
    {"exit", m_exit, "exit(3)"},
    {"quick_exit", m_quick_exit, "quick_exit(3)"},
    {"_exit", m_underscore_exit, "_exit(3)"},
    {"_Exit", m_big_exit, "_Exit(3)"},
    {"exit_group", m_exit_group, "syscall(SYS_exit_group, 3)"},
    {"fork_exit", m_fork_exit, "fork; the child calls exit(9)"},
    {"ok", m_ok, "reply ok and the version"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "exiter",
    .version = EXITER_VERSION,
    .state_version = 1,
    .kind = A4PS_KIND_TOOL,
    .methods = methods,
};

const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &plugin;
}
