/* confine.h -- a4psd's self-confinement once it is up (DESIGN.md §9): no new
 * privileges, Landlock on its own directories and no TCP, a seccomp filter
 * without exec, fork, ptrace, mount, modules, BPF or non-Unix sockets, and
 * rlimits.  OpenBSD's pledge/unveil is the model: what the daemon may do is
 * decided once, after start, and a plugin that turns hostile later can do
 * no more than that. */
#ifndef A4PS_DAEMON_CONFINE_H
#define A4PS_DAEMON_CONFINE_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

struct a4psd;

/* Sanitizer builds let LeakSanitizer's exit check through (confine.c). */
#if defined(__SANITIZE_ADDRESS__)
#define A4PS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define A4PS_SANITIZED 1
#endif
#endif
#ifndef A4PS_SANITIZED
#define A4PS_SANITIZED 0
#endif

/* What each layer came to: shown by status, one line each. */
typedef struct dconfine {
    char user[160];              /* who a4psd runs as, and how it got there */
    char helper[160];            /* the privileged helper (privsep.c) */
    char nnp[64];
    char landlock[200];
    char seccomp[200];
    char rlimits[200];
} dconfine;

/* Confine the calling process (every thread: the seccomp filter is
 * synchronised, Landlock is applied before any thread when called early, or
 * with the threads of a4psd all created after).  Each layer that the
 * running kernel lacks is logged as a warning naming it; 0 when every
 * layer the config asks for is in force, -1 when one could not be set up
 * although the kernel has it (the caller stops: a half-confined daemon is
 * not what the operator asked for). */
int confine_apply(struct a4psd *d, dconfine *out);

/* rlimits from the config (0: unchanged); before the threads, so they
 * inherit them.  -1 with the reason logged when one is refused. */
int confine_rlimits(struct a4psd *d, dconfine *out);

/* The last filter, right before the loop, when a4psd will never again add
 * a filter, set a limit, open or connect a socket, or close one of guarded
 * (the helpers' channels): those, and signals that would stop or kill
 * a4psd, are refused from then on.  0, or -1 with the reason logged. */
int confine_seal(struct a4psd *d, dconfine *out, const int *guarded, int nguarded);

json_t *confine_status(const dconfine *c);

/* dropuser.c.  drop_lookup: whom to run as (*drop false: stay as we are,
 * said in the log and in conf.user); drop_prepare: the directories a4psd
 * needs, made and (when dropping) handed to uid:gid; drop_now: the drop
 * itself, verified.  Each 0, or -1 with the reason logged. */
int drop_lookup(struct a4psd *d, uid_t *uid, gid_t *gid, _Bool *drop);
int drop_prepare(struct a4psd *d, _Bool drop, uid_t uid, gid_t gid);
int drop_now(struct a4psd *d, uid_t uid, gid_t gid);

#endif
