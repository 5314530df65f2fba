/* probe.h -- the forge's two sandboxed steps: compile a candidate, probe it.
 *
 * Both run in a sandbox opened by the caller (sandbox.h): compiling needs
 * the abi/ headers bound at /abi, probing needs the directory holding
 * a4ps-probe (the build's libexec/, or the installed libexecdir/a4ps) bound
 * at /probe.  Each call works in a fresh directory under the sandbox's own,
 * removed before it returns.
 *
 * The report of a probe is JSON, the same shape whether a4ps-probe wrote it
 * or the probe died and it was composed here:
 *   {"probe":1, "file", "sha256", "verdict":"pass"|"fail", "reason",
 *    "plugin", "steps":[{"step","ok","ms","error"}], "tests":[...],
 *    "cases":[{"case","selector","input_sha256","expect_sha256","status",
 *              "ran","passed"}], "child":{"pid","answered","end","stage"},
 *    "denied_syscalls":[{"syscall","count"}], "passed", "failed", "ms"}
 * "cases" lists every case asked, in order, run or not; "child" is how the
 * process that loaded the candidate ended ("end": {"status"}, {"signal",
 * "name"} or {"killed","why"}), as the reporting process saw it.
 * and, when composed here, "composed":true plus "stage" (where the probe
 * was when it died) and "exit" ({"status"}, {"signal","name"} or
 * {"timed_out":true}). */
#ifndef A4PS_PROBE_H
#define A4PS_PROBE_H

#include <stddef.h>

#include "sandbox.h"

/* Where the probe is inside the sandbox. */
#define SANDBOX_PROBE_MOUNT "/probe"
#define SANDBOX_PROBE_NAME "a4ps-probe"
#define SANDBOX_ABI_MOUNT "/abi"

/* Compile one candidate source in the sandbox with flags fixed here:
 *   /usr/bin/cc -std=gnu17 -O2 -g0 -Wall -Wextra -shared -fPIC
 *       -fvisibility=hidden -I/abi -o /work/candidate.so /work/candidate.c
 * On success copies the .so to out_so (a host path, mode 0644).
 * *diagnostics: malloc'd compiler output (may be empty), always set when the
 * sandbox ran; the caller frees it.  Returns 0 compiled, 1 did not compile
 * (errors, killed at the wall limit, or no output), -1 sandbox failure (err). */
int sandbox_compile(sandbox *sb, const char *source, size_t len, const char *out_so,
                    const sandbox_limits *lim, char **diagnostics, char *err, size_t errlen);

typedef struct probe_request {
    const char *so_path;         /* host path of the candidate .so */
    const void *state;           /* state file bytes or NULL: records of */
    size_t state_len;            /* u32 key_len | key | u32 value_len | value (LE) */
    const char *cases_json;      /* [{"selector","input","expect","status"}] or NULL */
    unsigned call_ms, hook_ms;   /* 0 = 2000 */
} probe_request;

/* Run /probe/a4ps-probe on a copy of the candidate.  *report: malloc'd JSON
 * (always set when returning >= 0): the probe's own, or one composed here
 * when the probe died (signal, no output, wall limit, a report that is not
 * valid JSON or does not match the candidate), verdict "fail", saying how
 * and in which stage.  Returns 1 passed, 0 failed, -1 could not run (err:
 * the sandbox failed, the probe is missing or refused its arguments).
 * lim applies as given, except that output_bytes is raised to 16 MiB if
 * smaller: the report of a plugin with many methods is that long. */
int sandbox_probe(sandbox *sb, const probe_request *rq, const sandbox_limits *lim,
                  char **report, char *err, size_t errlen);

/* Does a report show a pass for exactly what was asked?  Only a report
 * that a4ps-probe wrote (not composed) with verdict pass, every step ok,
 * every test ok, the child ended with status 0 after its last answer, and
 * "cases" listing each case of cases_json (NULL: none) by index with its
 * selector, input, expectation and status, as run and passed -- matched
 * one by one, not counted.  selector (or NULL): a method the candidate must
 * have, whose contract calls ran.  1 accepted; 0 not, with why; -1
 * cases_json is not a JSON array of cases (why). */
int probe_report_accept(const char *report, const char *cases_json, const char *selector,
                        char *why, size_t whylen);

/* Is the probe where a sandbox would find it: probe_dir/a4ps-probe, an
 * executable regular file?  0, or -1 with err saying what is wrong.  Cheap:
 * for the daemon's start-up checks. */
int sandbox_probe_check(const char *probe_dir, char *err, size_t errlen);

/* BENCHMARK BASELINE ONLY -- no sandbox, no limits but a wall clock: the
 * candidate's code runs as the caller, with the caller's view of the host.
 * Never use these to verify a plugin.  probe_run_bare runs the probe at
 * probe_path directly as a child process and returns like sandbox_probe;
 * probe_compile_bare runs cc with the flags of sandbox_compile (-I abi_dir)
 * and returns like it. */
int probe_run_bare(const char *probe_path, const probe_request *rq, unsigned wall_ms,
                   char **report, char *err, size_t errlen);
int probe_compile_bare(const char *abi_dir, const char *source, size_t len, const char *out_so,
                       unsigned wall_ms, char **diagnostics, char *err, size_t errlen);

#endif
