/* sandbox.c -- the gVisor driver: an OCI bundle per run, runsc, limits.
 *
 * runsc keeps its container state under our own --root (inside the runtime
 * directory), so containers left by a daemon that died are found and
 * deleted at open.  A run's stdout and stderr come back through pipes and
 * are cut at output_bytes, so a command that prints gigabytes costs us
 * nothing but the time to discard them. */
#define _GNU_SOURCE
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOBODY 65534

struct sandbox {
    char *runsc;
    char *dir;                   /* runtime_dir/sandbox */
    char *state;                 /* runsc --root */
    char **ro;                   /* pairs: host, mount point */
    size_t nro;
    unsigned long seq;
    unsigned long inst;          /* several sandboxes in one process never share an id */
};

static const sandbox_runner *runner;   /* NULL: fork and exec runsc here */

void sandbox_set_runner(const sandbox_runner *r)
{
    runner = r;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *find_on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    char *copy = strdup(path), *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *cand;
        if (asprintf(&cand, "%s/%s", d, name) < 0)
            break;
        if (access(cand, X_OK) == 0) {
            free(copy);
            return cand;
        }
        free(cand);
    }
    free(copy);
    return NULL;
}

/* Run runsc with args, quietly; its exit status, or -1. */
static int runsc_quiet(sandbox *sb, const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        const char *argv[16];
        int n = 0;
        argv[n++] = sb->runsc;
        argv[n++] = "--root";
        argv[n++] = sb->state;
        for (int i = 0; args[i] && n < 15; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(sb->runsc, (char *const *)argv);
        _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *p;
            if (asprintf(&p, "%s/%s", path, e->d_name) < 0)
                continue;
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(path);
}

int sandbox_open(const char *runtime_dir, const char *runsc, const char *const *ro_dirs,
                 sandbox **out, char *err, size_t errlen)
{
    sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        snprintf(err, errlen, "sandbox: out of memory");
        return -1;
    }
    sb->runsc = runsc ? strdup(runsc) : find_on_path("runsc");
    if (!sb->runsc || access(sb->runsc, X_OK) != 0) {
        snprintf(err, errlen, "sandbox: runsc (gVisor) is not installed%s%s: the forge and the "
                 "verification of plugins refuse to run without it; install it with "
                 "`apt-get install runsc` (scripts/setup does)", runsc ? " at " : "",
                 runsc ? runsc : "");
        sandbox_close(sb);
        return -1;
    }
    if (asprintf(&sb->dir, "%s/sandbox", runtime_dir) < 0 ||
        asprintf(&sb->state, "%s/sandbox/runsc", runtime_dir) < 0) {
        snprintf(err, errlen, "sandbox: out of memory");
        sandbox_close(sb);
        return -1;
    }
    static _Atomic unsigned long instances;
    sb->inst = ++instances;
    for (size_t i = 0; ro_dirs && ro_dirs[i] && ro_dirs[i + 1]; i += 2)
        sb->nro += 2;
    sb->ro = calloc(sb->nro + 1, sizeof *sb->ro);
    for (size_t i = 0; sb->ro && i < sb->nro; i++)
        sb->ro[i] = strdup(ro_dirs[i]);
    if (runner) {
        *out = sb;               /* runsc is the helper's: it checked it */
        return 0;
    }
    mkdir(sb->dir, 0700);
    mkdir(sb->state, 0700);
    /* Containers of a daemon that died: kill and delete them. */
    DIR *d = opendir(sb->state);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, "a4ps-", 5))
            continue;
        const char *del[] = {"delete", "--force", e->d_name, NULL};
        runsc_quiet(sb, del);
    }
    if (d)
        closedir(d);
    const char *ver[] = {"--version", NULL};
    if (runsc_quiet(sb, ver) != 0) {
        snprintf(err, errlen, "sandbox: %s --version fails: runsc is installed but cannot run "
                 "here (it needs root, or a kernel that allows its sandboxing)", sb->runsc);
        sandbox_close(sb);
        return -1;
    }
    *out = sb;
    return 0;
}

void sandbox_close(sandbox *sb)
{
    if (!sb)
        return;
    for (size_t i = 0; i < sb->nro; i++)
        free(sb->ro[i]);
    free(sb->ro);
    free(sb->runsc);
    free(sb->dir);
    free(sb->state);
    free(sb);
}

static json_t *bind(const char *dst, const char *src, const char *mode)
{
    return json_pack("{s:s, s:s, s:s, s:[s,s]}", "destination", dst, "type", "bind", "source",
                     src, "options", "rbind", mode);
}

static json_t *rlimit(const char *type, unsigned long long v)
{
    return json_pack("{s:s, s:I, s:I}", "type", type, "hard", (json_int_t)v, "soft",
                     (json_int_t)v);
}

/* The bundle: config.json and an empty root whose /bin, /lib, /lib64 and
 * /sbin point into the read-only /usr (Debian's merged /usr). */
static int write_bundle(sandbox *sb, const char *bundle, const char *workdir,
                        const char *const *argv, const sandbox_limits *lim, uid_t uid, gid_t gid)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/rootfs", bundle);
    if (mkdir(bundle, 0700) != 0 || mkdir(path, 0755) != 0)
        return -1;
    static const char *const links[][2] = {
        {"usr/bin", "bin"}, {"usr/lib", "lib"}, {"usr/lib64", "lib64"}, {"usr/sbin", "sbin"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        snprintf(path, sizeof path, "%s/rootfs/%s", bundle, links[i][1]);
        if (symlink(links[i][0], path) != 0)
            return -1;
    }
    json_t *args = json_array();
    for (size_t i = 0; argv[i]; i++)
        json_array_append_new(args, json_string(argv[i]));
    json_t *mounts = json_array();
    json_array_append_new(mounts, bind("/usr", "/usr", "ro"));
    json_array_append_new(mounts, bind("/etc/alternatives", "/etc/alternatives", "ro"));
    json_array_append_new(mounts, bind("/etc/ld.so.cache", "/etc/ld.so.cache", "ro"));
    for (size_t i = 0; i + 1 < sb->nro; i += 2)
        json_array_append_new(mounts, bind(sb->ro[i + 1], sb->ro[i], "ro"));
    json_array_append_new(mounts, bind("/work", workdir, "rw"));
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:s}", "destination", "/tmp", "type",
                                            "tmpfs", "source", "tmpfs"));
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:s}", "destination", "/proc", "type",
                                            "proc", "source", "proc"));
    json_t *rl = json_array();
    if (lim->cpu_s)
        json_array_append_new(rl, rlimit("RLIMIT_CPU", lim->cpu_s));
    if (lim->mem_bytes)
        json_array_append_new(rl, rlimit("RLIMIT_AS", lim->mem_bytes));
    if (lim->nproc)
        json_array_append_new(rl, rlimit("RLIMIT_NPROC", lim->nproc));
    if (lim->file_bytes)
        json_array_append_new(rl, rlimit("RLIMIT_FSIZE", lim->file_bytes));
    json_t *cfg = json_pack(
        "{s:s, s:{s:b, s:{s:i, s:i}, s:o, s:[s], s:s, s:o}, s:{s:s, s:b}, s:o,"
        " s:{s:[{s:s},{s:s},{s:s},{s:s},{s:s}]}}",
        "ociVersion", "1.0.0",
        "process", "terminal", 0, "user", "uid", (int)uid, "gid", (int)gid, "args", args, "env",
        "PATH=/usr/bin:/bin", "cwd", "/work", "rlimits", rl,
        "root", "path", "rootfs", "readonly", 1,
        "mounts", mounts,
        "linux", "namespaces", "type", "pid", "type", "mount", "type", "ipc", "type", "uts",
        "type", "network");
    snprintf(path, sizeof path, "%s/config.json", bundle);
    int rc = cfg ? json_dump_file(cfg, path, JSON_COMPACT) : -1;
    json_decref(cfg);
    return rc;
}

static void keep(char **buf, size_t *len, size_t cap, const char *data, size_t n, int *cut)
{
    if (*len + n > cap) {
        *cut = 1;
        n = *len < cap ? cap - *len : 0;
    }
    if (!n)
        return;
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return;
    memcpy(nb + *len, data, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
}

int sandbox_valid_id(const char *id)
{
    static const char prefix[] = "a4ps-";
    if (!id || strncmp(id, prefix, sizeof prefix - 1) || strlen(id) >= 64)
        return 0;
    int groups = 0;
    for (const char *p = id + sizeof prefix - 1; *p;) {
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
        groups++;
        if (*p == '-' && p[1])
            p++;
        else if (*p)
            return 0;
    }
    return groups == 3;
}

int sandbox_valid_workdir(const sandbox *sb, const char *workdir, uid_t owner)
{
    size_t n = strlen(sb->dir);
    if (strncmp(workdir, sb->dir, n) || strncmp(workdir + n, "/work-", 6))
        return 0;
    const char *x = workdir + n + 6;
    if (strlen(x) != 6)
        return 0;
    for (int i = 0; i < 6; i++)
        if (!((x[i] >= 'a' && x[i] <= 'z') || (x[i] >= 'A' && x[i] <= 'Z') ||
              (x[i] >= '0' && x[i] <= '9')))
            return 0;
    struct stat st;
    return lstat(workdir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == owner;
}

int sandbox_exec_start(sandbox *sb, const char *id, const char *workdir,
                       const char *const *argv, const sandbox_limits *lim, int out, int errfd,
                       uid_t uid, gid_t gid, pid_t *pid, char *err, size_t errlen)
{
    char bundle[4096];
    snprintf(bundle, sizeof bundle, "%s/%s", sb->dir, id);
    if (write_bundle(sb, bundle, workdir, argv, lim, uid, gid) != 0) {
        snprintf(err, errlen, "sandbox: cannot write the bundle %s: %s", bundle, strerror(errno));
        remove_tree(bundle);
        return -1;
    }
    *pid = fork();
    if (*pid == 0) {
        dup2(out, 1);
        dup2(errfd, 2);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        execl(sb->runsc, sb->runsc, "--root", sb->state, "--network=none", "run", "--bundle",
              bundle, id, (char *)NULL);
        _exit(127);
    }
    if (*pid < 0) {
        snprintf(err, errlen, "sandbox: fork: %s", strerror(errno));
        remove_tree(bundle);
        return -1;
    }
    return 0;
}

void sandbox_exec_kill(sandbox *sb, const char *id)
{
    const char *kill_args[] = {"kill", id, "KILL", NULL};
    runsc_quiet(sb, kill_args);
}

void sandbox_exec_end(sandbox *sb, const char *id)
{
    char bundle[4096];
    snprintf(bundle, sizeof bundle, "%s/%s", sb->dir, id);
    const char *del[] = {"delete", "--force", id, NULL};
    runsc_quiet(sb, del);
    remove_tree(bundle);
}

int sandbox_run(sandbox *sb, const char *workdir, const char *const *argv,
                const sandbox_limits *lim, sandbox_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    char id[64];
    snprintf(id, sizeof id, "a4ps-%d-%lu-%lu", (int)getpid(), sb->inst, ++sb->seq);
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (!runner && uid == 0) {
        /* Run by root: the sandbox's user is nobody, and must be able to
         * write its work directory.  (A process of another user runs the
         * sandbox as itself, and the helper decides for the daemon.) */
        uid = gid = NOBODY;
        if (chown(workdir, NOBODY, NOBODY) != 0 || chmod(workdir, 0700) != 0) {
            snprintf(err, errlen, "sandbox: cannot hand %s to the sandbox's user: %s", workdir,
                     strerror(errno));
            return -1;
        }
    }
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "sandbox: pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(pe, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "sandbox: pipe: %s", strerror(errno));
        close(po[0]);
        close(po[1]);
        return -1;
    }
    uint64_t t0 = now_ms();
    pid_t pid = -1;
    int handle = -1;
    int rc = runner ? ((handle = runner->start(runner->arg, sb, id, workdir, argv, lim, po[1],
                                               pe[1], err, errlen)) < 0 ? -1 : 0)
                    : sandbox_exec_start(sb, id, workdir, argv, lim, po[1], pe[1], uid, gid,
                                         &pid, err, errlen);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds) {
        uint64_t now = now_ms();
        if (lim->wall_ms && now - t0 >= lim->wall_ms && !res->timed_out) {
            res->timed_out = 1;
            if (runner)
                runner->kill(runner->arg, handle);
            else
                sandbox_exec_kill(sb, id);
        }
        int wait = res->timed_out ? 1000 : lim->wall_ms ? (int)(lim->wall_ms - (now - t0)) : -1;
        int n = poll(fds, 2, wait);
        if (n < 0 && errno != EINTR)
            break;
        if (n == 0 && res->timed_out)
            break;               /* killed, and its pipes still open: stop waiting */
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 0)
                keep(&res->out, &res->outlen, lim->output_bytes, buf, (size_t)r, &res->truncated);
            else
                keep(&res->errout, &res->errlen, lim->output_bytes, buf, (size_t)r, &res->truncated);
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int st = 0;
    if (runner) {
        if (runner->wait(runner->arg, handle, &st, err, errlen) != 0)
            return -1;
    } else {
        if (res->timed_out)
            kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        sandbox_exec_end(sb, id);
    }
    res->wall_ms = now_ms() - t0;
    if (WIFEXITED(st)) {
        res->exited = 1;
        res->status = WEXITSTATUS(st);
    }
    return 0;
}

void sandbox_result_free(sandbox_result *res)
{
    free(res->out);
    free(res->errout);
    memset(res, 0, sizeof *res);
}

int sandbox_work_create(sandbox *sb, char *path, size_t pathlen, char *err, size_t errlen)
{
    if ((size_t)snprintf(path, pathlen, "%s/work-XXXXXX", sb->dir) >= pathlen) {
        snprintf(err, errlen, "sandbox: work directory path under %s too long", sb->dir);
        return -1;
    }
    if (!mkdtemp(path)) {
        snprintf(err, errlen, "sandbox: cannot create a work directory under %s: %s", sb->dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

void sandbox_work_remove(const char *path)
{
    remove_tree(path);
}
