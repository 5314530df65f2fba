/* sandbox.h -- running a command inside gVisor (runsc), fenced off.
 *
 * Each run gets an OCI bundle of its own: an empty root with the toolchain
 * bound read-only (/usr, and the few files of /etc the compiler needs), extra
 * read-only directories the caller names (the abi/ headers), the caller's
 * work directory read-write at /work, a tmpfs /tmp, no network, an
 * unprivileged user, and rlimits for CPU, memory, processes and file size.
 * Nothing else of the host is visible: not the image, the config, the plugin
 * directory, the control socket, /root, /home or /etc/shadow.  A run that
 * outlives its wall-clock limit is killed and deleted.  Without runsc,
 * sandbox_open refuses (fail closed) and says how to install it. */
#ifndef A4PS_SANDBOX_H
#define A4PS_SANDBOX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct sandbox sandbox;

typedef struct sandbox_limits {
    unsigned wall_ms;            /* killed after this long */
    unsigned cpu_s;              /* RLIMIT_CPU */
    size_t mem_bytes;            /* RLIMIT_AS */
    unsigned nproc;              /* RLIMIT_NPROC */
    size_t file_bytes;           /* RLIMIT_FSIZE: the largest file it may write */
    size_t output_bytes;         /* stdout and stderr kept, each */
} sandbox_limits;

typedef struct sandbox_result {
    int exited;                  /* 1: exit status in status */
    int status;
    int timed_out;               /* killed at wall_ms */
    char *out;                   /* stdout (NUL-terminated, at most output_bytes) */
    size_t outlen;
    char *errout;                /* stderr */
    size_t errlen;
    int truncated;               /* output beyond output_bytes was dropped */
    uint64_t wall_ms;
} sandbox_result;

/* runsc: its path, or NULL to find it on PATH.  ro_dirs: NULL-terminated
 * pairs of host directory and sandbox mount point, bound read-only. */
int sandbox_open(const char *runtime_dir, const char *runsc, const char *const *ro_dirs,
                 sandbox **out, char *err, size_t errlen);
void sandbox_close(sandbox *sb);

/* Run argv (argv[0] an absolute path inside the sandbox) with workdir (a
 * host directory) as /work and the current directory.  Returns 0 when the
 * sandbox ran it (whatever its exit status; see res), or -1 with err. */
int sandbox_run(sandbox *sb, const char *workdir, const char *const *argv,
                const sandbox_limits *lim, sandbox_result *res, char *err, size_t errlen);
void sandbox_result_free(sandbox_result *res);

/* A fresh, empty work directory under the sandbox's own directory, for one
 * run: its path in path.  Returns 0, or -1 with err.  sandbox_work_remove
 * deletes it and everything in it. */
int sandbox_work_create(sandbox *sb, char *path, size_t pathlen, char *err, size_t errlen);
void sandbox_work_remove(const char *path);

/* ---- Who starts runsc ----
 * By default sandbox_run forks and execs runsc itself (the tests, and a
 * process that keeps its rights).  a4psd, which drops its rights and may not
 * exec, sets a runner that asks its privileged helper (kernel/daemon/
 * privsep.c) instead; the helper carries the run out with the sandbox_exec_*
 * calls below.  The runner is process-wide and set before any sandbox is
 * opened; with one set, sandbox_open leaves checking runsc and deleting old
 * containers to the helper. */
typedef struct sandbox_runner {
    /* Start run id of argv in workdir, its stdout and stderr on out and
     * errfd (the callee takes copies).  A handle >= 0, or -1 with err. */
    int (*start)(void *arg, sandbox *sb, const char *id, const char *workdir,
                 const char *const *argv, const sandbox_limits *lim, int out, int errfd,
                 char *err, size_t errlen);
    void (*kill)(void *arg, int handle);          /* past its wall-clock limit */
    /* Wait for its end (deleted, bundle gone): 0 and the wait status, or -1
     * with err; the handle is released either way. */
    int (*wait)(void *arg, int handle, int *wstatus, char *err, size_t errlen);
    void *arg;
} sandbox_runner;
void sandbox_set_runner(const sandbox_runner *r);

/* ---- For the process that execs runsc (the helper, or this one) ---- */
/* "a4ps-PID-N-N", as sandbox_run names its runs. */
int sandbox_valid_id(const char *id);
/* workdir is one sandbox_work_create made under sb: that name, a real
 * directory (no link) of owner. */
int sandbox_valid_workdir(const sandbox *sb, const char *workdir, uid_t owner);
/* Write the bundle and start runsc for run id; the process inside runs as
 * uid:gid.  *pid, or -1 with err.  sandbox_exec_kill kills the container;
 * sandbox_exec_end deletes it and its bundle (after the runsc process was
 * waited for). */
int sandbox_exec_start(sandbox *sb, const char *id, const char *workdir,
                       const char *const *argv, const sandbox_limits *lim, int out, int errfd,
                       uid_t uid, gid_t gid, pid_t *pid, char *err, size_t errlen);
void sandbox_exec_kill(sandbox *sb, const char *id);
void sandbox_exec_end(sandbox *sb, const char *id);

#endif
