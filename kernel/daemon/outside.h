/* outside.h -- reaching outside a4psd as a capability the host grants (ABI
 * rule R12): the http and run host entries, carried out by two helper
 * processes forked at start, each allowed per calling plugin by the
 * config's outside { } group.
 *
 * a4psd itself opens no network socket and starts no program: it hands each
 * call to a helper over a Unix socket pair.  The helpers check every field
 * and the policy (origins, credentials, programs) themselves, so what a4psd
 * (and any plugin in it) may reach is decided by memory it cannot write.
 * The same checks and work are callable in-process (outside_http_serve,
 * outside_run_serve) for tests that run generators without a4psd. */
#ifndef A4PS_DAEMON_OUTSIDE_H
#define A4PS_DAEMON_OUTSIDE_H

#include <stddef.h>
#include <sys/types.h>

#include "a4ps.h"

/* One outside.http entry: what plugin may reach. */
typedef struct outside_http_rule {
    char *plugin;
    char **origins;              /* normalized "scheme://host:port" */
    int norigins;
    char **credentials;          /* environment variable names it may name */
    int ncredentials;
    unsigned timeout_ms;         /* per request, at most */
    size_t max_response;         /* bytes of an answer's body */
    size_t max_request;          /* bytes of a request's body */
    int line;                    /* in the config, for messages */
} outside_http_rule;

/* One outside.run entry: what plugin may start. */
typedef struct outside_run_rule {
    char *plugin;
    char **programs;             /* absolute, canonical paths */
    int nprograms;
    char **env;                  /* variables passed from the helper's environment */
    int nenv;
    unsigned timeout_ms;         /* wall limit of one run, at most */
    size_t max_output;           /* bytes of stdout (and of stderr kept) */
    int line;
} outside_run_rule;

typedef struct outside_policy {
    outside_http_rule *http;
    int nhttp;
    outside_run_rule *run;
    int nrun;
    char *user;                  /* the helpers' user when a4psd starts as root */
} outside_policy;

void outside_policy_free(outside_policy *p);      /* its members */
/* 1 when a and b grant the same (a reload that changes it needs a restart). */
int outside_policy_equal(const outside_policy *a, const outside_policy *b);

/* The origin of url as "scheme://host:port" (scheme and host in lower case,
 * the port explicit) into out: 0, or -1 with why.  Only http and https;
 * userinfo is refused.  With origin_only, a path other than "/", a query or
 * a fragment is refused too (a config's origin). */
int outside_origin_of(const char *url, int origin_only, char *out, size_t cap, char *why,
                      size_t whylen);
/* Is path an absolute, canonical path ("//", "/./", "/../", a trailing "/"
 * refused)?  1, or 0 with why. */
int outside_program_valid(const char *path, char *why, size_t whylen);
/* Is s an environment variable name ([A-Za-z_][A-Za-z0-9_]{0,127})? */
int outside_env_name_valid(const char *s);

/* The helpers' work, in this process: the policy's checks, then the
 * request.  Status and outcome as the host entries document (a4ps.h). */
int outside_http_serve(const outside_policy *p, const char *plugin,
                       const a4ps_http_request *rq, a4ps_http_response *rs);
int outside_run_serve(const outside_policy *p, const char *plugin, const a4ps_run_request *rq,
                      a4ps_run_result *rs);
/* The same as kernel_config callbacks: arg is the const outside_policy *. */
int outside_http_local(void *arg, const char *plugin, const a4ps_http_request *rq,
                       a4ps_http_response *rs);
int outside_run_local(void *arg, const char *plugin, const a4ps_run_request *rq,
                      a4ps_run_result *rs);

/* The helper's handling of one request message (the bytes after its u32
 * length): every field checked, then served under p.  0 and *answer (the
 * answer message, length first; malloc'd) of *anslen bytes; -1 when msg is
 * not a well-formed message (the helper closes the channel unanswered). */
int outside_serve_message(const outside_policy *p, int http, const void *msg, size_t len,
                          void **answer, size_t *anslen);
/* The status (and error text) an answer message carries; A4PS_EINVAL when
 * it is not one. */
int outside_answer_status(int http, const void *answer, size_t len, char *error, size_t cap);

/* ---- the helpers ---- */

typedef struct outside outside;

/* Fork the helpers p needs (an http helper when p has http entries, a run
 * helper when it has run entries), each holding a copy of p, its own socket
 * and nothing else of a4psd's; when started as root they drop to p->user
 * (default "nobody").  Call before any thread exists.  0 and *out, or -1
 * with err. */
/* The helpers' channels in a4psd (up to 2 into fds, -1 for none): what
 * confine_seal guards.  How many. */
int outside_fds(const outside *o, int *fds);

int outside_start(const outside_policy *p, outside **out, char *err, size_t errlen);
/* Remove the credential variables of p from this process's environment:
 * only the http helper keeps them.  Call after outside_start, before any
 * thread exists. */
void outside_scrub_environment(const outside_policy *p);
/* kernel_config callbacks: arg is the outside *.  Safe from any thread;
 * each call has its own channel, so calls run side by side. */
int outside_http_call(void *arg, const char *plugin, const a4ps_http_request *rq,
                      a4ps_http_response *rs);
int outside_run_call(void *arg, const char *plugin, const a4ps_run_request *rq,
                     a4ps_run_result *rs);
/* The helpers' pids (0: not started), for status and tests. */
pid_t outside_http_pid(const outside *o);
pid_t outside_run_pid(const outside *o);
/* Close the channels (the helpers exit on EOF) and reap them. */
void outside_stop(outside *o);

#endif
