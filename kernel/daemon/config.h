/* config.h -- a4psd's configuration: parsed and validated whole, or refused.
 *
 * dconfig_load reads a libconfig file, checks every key it knows and refuses
 * every key it does not, and collects every problem as "FILE:LINE: key:
 * message" -- so --check-config and a refused SIGHUP show them all at once.
 * Relative paths are resolved against the directory of the config file. */
#ifndef A4PS_DAEMON_CONFIG_H
#define A4PS_DAEMON_CONFIG_H

#include <stddef.h>
#include <sys/types.h>

#include "daemon/outside.h"

typedef struct dstate {
    char *key;
    char *value;
} dstate;

typedef struct dproto {
    char *name;
    char *plugin;
    char *version;               /* NULL: the newest loaded */
    char *persona_json;          /* NULL when the config has none */
    dstate *state;               /* initial state, applied at creation only */
    int nstate;
    int line;
} dproto;

typedef struct dsub {
    char *event;
    char *proto;
    char *selector;
} dsub;

/* durability: the journal beside the image (journal.c).  SNAPSHOT keeps no
 * journal (a crash loses what came after the last snapshot); EVERYSEC
 * writes every change before its reply and fsyncs once a second; ALWAYS
 * fsyncs before the reply. */
enum { DURABLE_SNAPSHOT = 0, DURABLE_EVERYSEC = 1, DURABLE_ALWAYS = 2 };

typedef struct dconfig {
    char *path;                  /* the file, absolute */
    char *plugin_dir;
    char *runtime_dir;
    char *image;                 /* NULL: no image (nothing persists) */
    unsigned snapshot_interval_s; /* 0: only on request and at shutdown */
    int image_backups;           /* good generations kept as IMAGE.1 ... */
    long audit_keep;             /* newest audit entries the image keeps */
    int image_recover;           /* start from the newest good backup if damaged */
    int durability;              /* DURABLE_*: when the journal reaches the disk */
    char *socket;
    char *group;                 /* NULL: socket mode 0600 */
    uid_t *uids;                 /* permitted besides the daemon's own uid */
    int nuids;
    int log_level;               /* syslog priority */
    int workers;
    size_t max_plugin_bytes;
    unsigned hook_timeout_ms;
    unsigned migrate_timeout_ms;
    size_t event_queue;
    size_t max_request_bytes;
    int max_clients;
    unsigned request_timeout_ms; /* from a request line's first byte */
    unsigned idle_timeout_ms;    /* a connection with no request; 0: never */
    char **allow_threads;        /* plugins that may import thread creation */
    int nallow_threads;
    int contain_exits;           /* plugin exit() faults; 0 only to test what it guards */
    /* sandbox { } (needs a restart) */
    int sandbox_none;            /* mode = "none": no verification, said loudly */
    char *runsc;                 /* NULL: found on PATH */
    char *probe;                 /* a4ps-probe; NULL: the one built with a4psd */
    char *abi_dir;               /* abi/ headers for candidates; NULL: built-in */
    unsigned sbx_wall_ms, sbx_cpu_s, sbx_nproc, sbx_call_ms;
    size_t sbx_mem_bytes, sbx_file_bytes, sbx_output_bytes;
    /* forge { } (needs a restart) */
    char *forge_generator;       /* proto asked for candidates; NULL: none */
    char *forge_dir;             /* task directories (inboxes, attempts) */
    unsigned forge_iterations, forge_wall_s, forge_probation_s;
    /* daemon { } (needs a restart): who a4psd runs as, how it confines itself */
    char *daemon_user;           /* "root": no drop (said loudly) */
    char *daemon_group;          /* NULL: the user's primary group */
    int daemon_confine;          /* Landlock + seccomp + no_new_privs after start */
    unsigned long daemon_as_mb;  /* RLIMIT_AS; 0: unchanged */
    unsigned long daemon_open_files; /* RLIMIT_NOFILE; 0: unchanged */
    unsigned long daemon_threads;    /* RLIMIT_NPROC; 0: unchanged */
    /* outside { } (needs a restart): what plugins may reach (ABI rule R12) */
    outside_policy outside;
    dproto *protos;
    int nprotos;
    dsub *subs;
    int nsubs;
} dconfig;

/* 0 and *out on success; otherwise -1 and *errors, a malloc'd text of one
 * "FILE:LINE: message" line per problem (caller frees). */
int dconfig_load(const char *path, dconfig **out, char **errors);
void dconfig_free(dconfig *c);

const char *dconfig_level_name(int level);
const char *dconfig_durability_name(int durability);

#endif
