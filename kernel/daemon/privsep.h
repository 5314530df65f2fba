/* privsep.h -- a4psd's privileged helper (OpenSSH's monitor is the model).
 *
 * Forked at start, before a4psd drops its user, the helper keeps the rights
 * a4psd started with and does the one thing that needs them: starting runsc
 * for the sandbox.  It talks to a4psd over a socket pair and accepts a
 * single, narrow request -- "run this probe or compile in sandbox N" --
 * whose every field it checks; it writes the OCI bundle itself, so nothing
 * a4psd (or a plugin inside it) sends decides a mount, a user or a flag of
 * runsc.  It ends when a4psd does (PR_SET_PDEATHSIG and the socket's EOF). */
#ifndef A4PS_DAEMON_PRIVSEP_H
#define A4PS_DAEMON_PRIVSEP_H

#include <stddef.h>
#include <sys/types.h>

#include "sandbox.h"

typedef struct privsep privsep;

/* What the helper is fixed to at its start; nothing later changes it. */
typedef struct privsep_config {
    const char *runsc;           /* NULL: found on PATH */
    const char *const *sandbox_dirs; /* NULL-terminated runtime dirs, one per sandbox, in
                                        the order a4psd opens them */
    const char *const *ro_dirs;  /* as sandbox_open's */
    uid_t daemon_uid;            /* whom a4psd will run as: owner of work dirs */
    gid_t daemon_gid;
    sandbox_limits max;          /* a request's limits may not exceed these */
    const char *const *programs; /* what may run in the sandbox (NULL-terminated);
                                    NULL: PRIVSEP_PROGRAMS, the compiler and the probe */
} privsep_config;

/* The only programs a4psd ever runs in the sandbox (sandbox/probe.c): a
 * plugin that finds the channel cannot have the root helper start a shell. */
#define PRIVSEP_PROGRAMS {"/usr/bin/cc", "/probe/a4ps-probe", NULL}

/* Fork the helper.  It opens its sandboxes (checking runsc, deleting the
 * containers of a daemon that died) and answers whether that worked; a
 * helper whose sandboxes cannot open still runs and refuses every request,
 * and *why says why (malloc'd; NULL when ready).  0, or -1 with err when
 * no helper could be started. */
int privsep_start(const privsep_config *pc, privsep **out, char **why, char *err,
                  size_t errlen);
pid_t privsep_pid(const privsep *ps);
/* The runner a4psd gives sandbox_set_runner: every run goes to the helper. */
const sandbox_runner *privsep_runner(privsep *ps);
/* Close the channel (the helper exits) and reap it. */
void privsep_stop(privsep *ps);

/* ---- The wire, for the tests that play a hostile a4psd ---- */
#define PRIVSEP_MAGIC 0x41345053u    /* "A4PS" */
#define PRIVSEP_OP_RUN 1u
#define PRIVSEP_MAX_ARGS 32
typedef struct privsep_req {
    uint32_t magic;
    uint32_t op;
    uint32_t reserved;           /* 0 (the work directory says which sandbox) */
    uint32_t nargs;
    uint64_t cpu_s, mem_bytes, nproc, file_bytes;
    char id[64];
    char workdir[1024];
    char args[4096];             /* nargs NUL-terminated strings, back to back */
} privsep_req;
typedef struct privsep_reply {
    int32_t ok;                  /* 1: ran, wstatus is runsc's; 0: refused or failed */
    int32_t wstatus;
    char message[256];
} privsep_reply;
/* a4psd's end of the channel to the helper: requests go here with three
 * descriptors (stdout pipe, stderr pipe, a SOCK_SEQPACKET reply socket);
 * tests send theirs, and confine_seal guards it from plugins. */
int privsep_fd(const privsep *ps);

#endif
