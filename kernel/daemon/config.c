/* config.c -- parsing and validating a4psd's libconfig file.
 *
 * The schema is a table of known keys per group; anything else is an error
 * naming the file and line, as is every wrong type or out-of-range value.
 * Nothing is applied here: the caller gets a complete dconfig or a list of
 * everything that is wrong with the file. */
#define _GNU_SOURCE
#include "daemon/config.h"
#include "daemon/outside.h"
#include "kernel.h"

#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <libconfig.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

typedef struct errs {
    char *text;
    size_t len;
    int n;
    const char *file;
} errs;

static void errf(errs *e, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(errs *e, const config_setting_t *s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = s ? config_setting_source_line(s) : 0;
    char *line_text;
    /* Line 0: a key missing from the top level has no line of its own. */
    int n = line ? asprintf(&line_text, "%s:%d: %s\n", e->file, line, msg)
                 : asprintf(&line_text, "%s: %s\n", e->file, msg);
    if (n < 0)
        return;
    char *nt = realloc(e->text, e->len + (size_t)n + 1);
    if (nt) {
        memcpy(nt + e->len, line_text, (size_t)n + 1);
        e->text = nt;
        e->len += (size_t)n;
        e->n++;
    }
    free(line_text);
}

static const char *type_name(int t)
{
    switch (t) {
    case CONFIG_TYPE_GROUP: return "a group { }";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a number";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array [ ]";
    case CONFIG_TYPE_LIST: return "a list ( )";
    default: return "nothing";
    }
}

/* The dotted path of a setting, for messages: "control.uids", "protos.[2].name". */
static void setting_path(const config_setting_t *s, char *buf, size_t len)
{
    const config_setting_t *chain[32];
    int n = 0;
    for (const config_setting_t *p = s; p && config_setting_parent(p) && n < 32;
         p = config_setting_parent(p))
        chain[n++] = p;
    buf[0] = 0;
    size_t used = 0;
    for (int i = n - 1; i >= 0; i--) {
        const char *name = config_setting_name(chain[i]);
        int w = name ? snprintf(buf + used, len - used, "%s%s", used ? "." : "", name)
                     : snprintf(buf + used, len - used, "[%d]", config_setting_index(chain[i]));
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

typedef enum { K_STRING, K_INT, K_GROUP, K_LIST, K_INTS, K_STRINGS, K_ANY } ktype;

typedef struct keyspec {
    const char *name;
    ktype type;
    long min, max;               /* K_INT range */
    int required;
    long long dflt;              /* K_INT: the value when the key is absent */
} keyspec;

static int type_ok(const config_setting_t *s, ktype t)
{
    int st = config_setting_type(s);
    switch (t) {
    case K_STRING: return st == CONFIG_TYPE_STRING;
    case K_INT: return st == CONFIG_TYPE_INT || st == CONFIG_TYPE_INT64;
    case K_GROUP: return st == CONFIG_TYPE_GROUP;
    case K_LIST: return st == CONFIG_TYPE_LIST;
    case K_INTS: return st == CONFIG_TYPE_ARRAY || st == CONFIG_TYPE_LIST;
    case K_STRINGS: return st == CONFIG_TYPE_ARRAY || st == CONFIG_TYPE_LIST;
    case K_ANY: return 1;
    }
    return 0;
}

static const char *want_name(ktype t)
{
    switch (t) {
    case K_STRING: return "a string";
    case K_INT: return "an integer";
    case K_GROUP: return "a group { }";
    case K_LIST: return "a list ( )";
    case K_INTS: return "an array of integers [ ]";
    case K_STRINGS: return "an array of strings [ ]";
    case K_ANY: return "anything";
    }
    return "?";
}

/* Check the members of group g against spec: unknown keys, wrong types,
 * ranges, required keys.  Returns the number of problems. */
static int check_group(errs *e, const config_setting_t *g, const keyspec *spec)
{
    int before = e->n;
    char path[256];
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        const keyspec *k = NULL;
        for (const keyspec *p = spec; p->name; p++)
            if (name && !strcmp(p->name, name))
                k = p;
        setting_path(s, path, sizeof path);
        if (!k) {
            char known[512] = "";
            for (const keyspec *p = spec; p->name; p++) {
                strncat(known, known[0] ? ", " : "", sizeof known - strlen(known) - 1);
                strncat(known, p->name, sizeof known - strlen(known) - 1);
            }
            errf(e, s, "%s: unknown key (known here: %s)", path, known);
            continue;
        }
        if (!type_ok(s, k->type)) {
            errf(e, s, "%s: expected %s, found %s", path, want_name(k->type),
                 type_name(config_setting_type(s)));
            continue;
        }
        if (k->type == K_INT) {
            long long v = config_setting_get_int64(s);
            if (v < k->min || v > k->max)
                errf(e, s, "%s: %lld is out of range (%ld to %ld)", path, v, k->min, k->max);
        }
        if (k->type == K_STRING && !*config_setting_get_string(s))
            errf(e, s, "%s: must not be empty", path);
    }
    for (const keyspec *p = spec; p->name; p++)
        if (p->required && !config_setting_get_member(g, p->name)) {
            setting_path(g, path, sizeof path);
            errf(e, g, "%s%s%s: required but missing", path, path[0] ? "." : "", p->name);
        }
    return e->n - before;
}

/* Collapse "//", "/./" and "dir/.." in an absolute path, in place, without
 * touching the filesystem (the path may not exist yet). */
static void normalize(char *path)
{
    char *out = path, *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        char *seg = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - seg);
        if (n == 0 || (n == 1 && seg[0] == '.'))
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > path && *--out != '/')
                ;
            continue;
        }
        *out++ = '/';
        memmove(out, seg, n);
        out += n;
    }
    if (out == path)
        *out++ = '/';
    *out = 0;
}

static char *resolve(const char *dir, const char *p)
{
    char *out;
    if (p[0] == '/')
        out = strdup(p);
    else if (asprintf(&out, "%s/%s", dir, p) < 0)
        return NULL;
    if (out)
        normalize(out);
    return out;
}

static const char *str_member(const config_setting_t *g, const char *name)
{
    const config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
    return s && config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
}

/* Group name of root, checked against spec; NULL when absent (or not a
 * group, which check_group of root reported). */
static const config_setting_t *checked_group(errs *e, const config_setting_t *root,
                                             const char *name, const keyspec *spec)
{
    const config_setting_t *g = config_setting_get_member(root, name);
    if (!g || config_setting_type(g) != CONFIG_TYPE_GROUP)
        return NULL;
    check_group(e, g, spec);
    return g;
}

/* Integer key name of group g (NULL: absent), or its default in spec. */
static long long spec_int(const config_setting_t *g, const keyspec *spec, const char *name)
{
    const keyspec *k = spec;
    while (k->name && strcmp(k->name, name))
        k++;
    const config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
    if (!s || (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64))
        return k->dflt;
    return config_setting_get_int64(s);
}

static const struct {
    const char *name;
    int level;
} levels[] = {
    {"err", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
    {"info", LOG_INFO}, {"debug", LOG_DEBUG},
};

const char *dconfig_level_name(int level)
{
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (levels[i].level == level)
            return levels[i].name;
    return "?";
}

/* A libconfig value as JSON (persona metadata). */
static json_t *to_json(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return json_integer(config_setting_get_int64(s));
    case CONFIG_TYPE_FLOAT: return json_real(config_setting_get_float(s));
    case CONFIG_TYPE_STRING: return json_string(config_setting_get_string(s));
    case CONFIG_TYPE_BOOL: return json_boolean(config_setting_get_bool(s));
    case CONFIG_TYPE_GROUP: {
        json_t *o = json_object();
        for (int i = 0; i < config_setting_length(s); i++) {
            config_setting_t *m = config_setting_get_elem(s, (unsigned)i);
            json_object_set_new(o, config_setting_name(m), to_json(m));
        }
        return o;
    }
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST: {
        json_t *a = json_array();
        for (int i = 0; i < config_setting_length(s); i++)
            json_array_append_new(a, to_json(config_setting_get_elem(s, (unsigned)i)));
        return a;
    }
    }
    return json_null();
}


static const keyspec root_spec[] = {
    {"plugin_dir", K_STRING, 0, 0, 1, 0},
    {"runtime_dir", K_STRING, 0, 0, 1, 0},
    {"image", K_STRING, 0, 0, 0, 0},
    {"snapshot_interval_s", K_INT, 0, 86400, 0, 60},
    {"image_backups", K_INT, 0, 100, 0, 3},
    {"audit_keep", K_INT, 100, 100000000, 0, 10000},
    {"image_recover", K_ANY, 0, 0, 0, 0},
    {"durability", K_STRING, 0, 0, 0, 0},
    {"log_level", K_STRING, 0, 0, 0, 0},
    {"workers", K_INT, 1, 64, 0, 2},
    {"control", K_GROUP, 0, 0, 1, 0},
    {"limits", K_GROUP, 0, 0, 0, 0},
    {"protos", K_LIST, 0, 0, 0, 0},
    {"subscriptions", K_LIST, 0, 0, 0, 0},
    {"sandbox", K_GROUP, 0, 0, 0, 0},
    {"forge", K_GROUP, 0, 0, 0, 0},
    {"daemon", K_GROUP, 0, 0, 0, 0},
    {"outside", K_GROUP, 0, 0, 0, 0},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec daemon_spec[] = {
    {"user", K_STRING, 0, 0, 0, 0},
    {"group", K_STRING, 0, 0, 0, 0},
    {"confine", K_ANY, 0, 0, 0, 0},
    {"address_space_mb", K_INT, 0, 1 << 24, 0, 0},
    {"open_files", K_INT, 0, 1 << 20, 0, 0},
    {"threads", K_INT, 0, 1 << 20, 0, 0},
    {NULL, 0, 0, 0, 0, 0},
};
/* outside { user; http = ( {...} ); run = ( {...} ); }: what each plugin may
 * reach outside a4psd (ABI rule R12; kernel/daemon/outside.c). */
static const keyspec outside_spec[] = {
    {"user", K_STRING, 0, 0, 0, 0},
    {"http", K_LIST, 0, 0, 0, 0},
    {"run", K_LIST, 0, 0, 0, 0},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec outside_http_spec[] = {
    {"plugin", K_STRING, 0, 0, 1, 0},
    {"origins", K_STRINGS, 0, 0, 1, 0},
    {"credentials", K_STRINGS, 0, 0, 0, 0},
    {"timeout_ms", K_INT, 10, 86400000, 0, 120000},
    {"max_response_kb", K_INT, 1, 1 << 20, 0, 4096},
    {"max_request_kb", K_INT, 1, 1 << 20, 0, 8192},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec outside_run_spec[] = {
    {"plugin", K_STRING, 0, 0, 1, 0},
    {"programs", K_STRINGS, 0, 0, 1, 0},
    {"env", K_STRINGS, 0, 0, 0, 0},
    {"timeout_ms", K_INT, 10, 86400000, 0, 60000},
    {"max_output_kb", K_INT, 1, 1 << 20, 0, 1024},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec sandbox_spec[] = {
    {"mode", K_STRING, 0, 0, 0, 0},
    {"runsc", K_STRING, 0, 0, 0, 0},
    {"probe", K_STRING, 0, 0, 0, 0},
    {"abi_dir", K_STRING, 0, 0, 0, 0},
    {"wall_ms", K_INT, 100, 3600000, 0, 30000},
    {"cpu_s", K_INT, 1, 3600, 0, 30},
    {"memory_mb", K_INT, 16, 65536, 0, 1024},
    {"processes", K_INT, 1, 4096, 0, 64},
    {"file_mb", K_INT, 1, 65536, 0, 64},
    {"output_kb", K_INT, 1, 1 << 20, 0, 1024},
    {"call_ms", K_INT, 10, 600000, 0, 2000},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec forge_spec[] = {
    {"generator", K_STRING, 0, 0, 0, 0},
    {"dir", K_STRING, 0, 0, 0, 0},
    {"iterations", K_INT, 1, 1000, 0, 5},
    {"wall_s", K_INT, 1, 604800, 0, 600},
    {"probation_s", K_INT, 0, 86400, 0, 30},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec control_spec[] = {
    {"socket", K_STRING, 0, 0, 1, 0},
    {"uids", K_INTS, 0, 0, 0, 0},
    {"group", K_STRING, 0, 0, 0, 0},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec limits_spec[] = {
    {"max_plugin_bytes", K_INT, 4096, 1L << 30, 0, 64LL << 20},
    {"hook_timeout_ms", K_INT, 10, 600000, 0, 2000},
    {"migrate_timeout_ms", K_INT, 10, 600000, 0, 1000},
    {"event_queue", K_INT, 16, 1 << 20, 0, 4096},
    {"max_request_bytes", K_INT, 1024, 64L << 20, 0, 1 << 20},
    {"max_clients", K_INT, 1, 4096, 0, 64},
    {"request_timeout_ms", K_INT, 100, 3600000, 0, 10000},
    {"idle_timeout_ms", K_INT, 0, 86400000, 0, 60000},
    {"allow_threads", K_STRINGS, 0, 0, 0, 0},
    {"contain_exits", K_ANY, 0, 0, 0, 0},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec proto_spec[] = {
    {"name", K_STRING, 0, 0, 1, 0},
    {"plugin", K_STRING, 0, 0, 1, 0},
    {"version", K_STRING, 0, 0, 0, 0},
    {"persona", K_GROUP, 0, 0, 0, 0},
    {"state", K_GROUP, 0, 0, 0, 0},
    {NULL, 0, 0, 0, 0, 0},
};
static const keyspec sub_spec[] = {
    {"event", K_STRING, 0, 0, 1, 0},
    {"proto", K_STRING, 0, 0, 1, 0},
    {"selector", K_STRING, 0, 0, 1, 0},
    {NULL, 0, 0, 0, 0, 0},
};

/* The strings of array key of g, each checked by ok (which writes why)
 * and transformed into a malloc'd copy; *n of them. */
static char *plugin_name_ok(const char *v, char *why, size_t whylen)
{
    if (kernel_valid_plugin_name(v))
        return strdup(v);
    snprintf(why, whylen, "'%.64s' is not a plugin name ([a-z][a-z0-9_-]{0,63})", v);
    return NULL;
}

static char **str_array(errs *e, const config_setting_t *g, const char *key, int *n,
                        char *(*ok)(const char *v, char *why, size_t whylen))
{
    const config_setting_t *a = config_setting_get_member(g, key);
    *n = 0;
    if (!a)
        return NULL;
    int len = config_setting_length(a);
    char **out = calloc((size_t)len + 1, sizeof *out);
    char path[256], why[300];
    for (int i = 0; out && i < len; i++) {
        const config_setting_t *v = config_setting_get_elem(a, (unsigned)i);
        setting_path(v, path, sizeof path);
        if (config_setting_type(v) != CONFIG_TYPE_STRING) {
            errf(e, v, "%s: expected a string, found %s", path, type_name(config_setting_type(v)));
            continue;
        }
        char *s = ok(config_setting_get_string(v), why, sizeof why);
        if (!s) {
            errf(e, v, "%s: %s", path, why);
            continue;
        }
        for (int j = 0; j < *n; j++)
            if (!strcmp(out[j], s)) {
                errf(e, v, "%s: '%s' is listed twice", path, s);
                free(s);
                s = NULL;
                break;
            }
        if (s)
            out[(*n)++] = s;
    }
    return out;
}

static char *origin_ok(const char *v, char *why, size_t whylen)
{
    char o[8300];
    return outside_origin_of(v, 1, o, sizeof o, why, whylen) == 0 ? strdup(o) : NULL;
}

static char *program_ok(const char *v, char *why, size_t whylen)
{
    return outside_program_valid(v, why, whylen) ? strdup(v) : NULL;
}

static char *env_ok(const char *v, char *why, size_t whylen)
{
    if (outside_env_name_valid(v))
        return strdup(v);
    snprintf(why, whylen, "'%.64s' is not an environment variable name", v);
    return NULL;
}

/* The plugin of one outside.http / outside.run entry, checked; NULL when
 * wrong or already granted by an earlier entry of the same list. */
static const char *outside_plugin(errs *e, const config_setting_t *g, const char *path,
                                  char **seen, int nseen)
{
    const char *plugin = str_member(g, "plugin");
    if (!kernel_valid_plugin_name(plugin)) {
        errf(e, config_setting_get_member(g, "plugin"),
             "%s.plugin: '%s' is not a plugin name ([a-z][a-z0-9_-]{0,63})", path, plugin);
        return NULL;
    }
    for (int i = 0; i < nseen; i++)
        if (!strcmp(seen[i], plugin)) {
            errf(e, config_setting_get_member(g, "plugin"),
                 "%s.plugin: '%s' has an earlier entry in this list", path, plugin);
            return NULL;
        }
    return plugin;
}

static void parse_outside(errs *e, dconfig *c, const config_setting_t *og)
{
    outside_policy *p = &c->outside;
    const char *user = str_member(og, "user");
    if (user)
        p->user = strdup(user);
    char path[256];
    const config_setting_t *list = config_setting_get_member(og, "http");
    int n = list && config_setting_type(list) == CONFIG_TYPE_LIST ? config_setting_length(list) : 0;
    p->http = calloc((size_t)n + 1, sizeof *p->http);
    char *seen[256];
    int nseen = 0;
    for (int i = 0; p->http && i < n; i++) {
        config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        setting_path(g, path, sizeof path);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            errf(e, g, "%s: expected a group { plugin = ...; origins = [ ... ]; }", path);
            continue;
        }
        if (check_group(e, g, outside_http_spec))
            continue;
        const char *plugin = outside_plugin(e, g, path, seen, nseen);
        if (!plugin || nseen == 256)
            continue;
        outside_http_rule *r = &p->http[p->nhttp++];
        r->plugin = strdup(plugin);
        seen[nseen++] = r->plugin;
        r->line = config_setting_source_line(g);
        r->origins = str_array(e, g, "origins", &r->norigins, origin_ok);
        r->credentials = str_array(e, g, "credentials", &r->ncredentials, env_ok);
        r->timeout_ms = (unsigned)spec_int(g, outside_http_spec, "timeout_ms");
        r->max_response = (size_t)spec_int(g, outside_http_spec, "max_response_kb") << 10;
        r->max_request = (size_t)spec_int(g, outside_http_spec, "max_request_kb") << 10;
        if (!r->norigins)
            errf(e, g, "%s.origins: lists no origin", path);
    }
    list = config_setting_get_member(og, "run");
    n = list && config_setting_type(list) == CONFIG_TYPE_LIST ? config_setting_length(list) : 0;
    p->run = calloc((size_t)n + 1, sizeof *p->run);
    nseen = 0;
    for (int i = 0; p->run && i < n; i++) {
        config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        setting_path(g, path, sizeof path);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            errf(e, g, "%s: expected a group { plugin = ...; programs = [ ... ]; }", path);
            continue;
        }
        if (check_group(e, g, outside_run_spec))
            continue;
        const char *plugin = outside_plugin(e, g, path, seen, nseen);
        if (!plugin || nseen == 256)
            continue;
        outside_run_rule *r = &p->run[p->nrun++];
        r->plugin = strdup(plugin);
        seen[nseen++] = r->plugin;
        r->line = config_setting_source_line(g);
        r->programs = str_array(e, g, "programs", &r->nprograms, program_ok);
        r->env = str_array(e, g, "env", &r->nenv, env_ok);
        r->timeout_ms = (unsigned)spec_int(g, outside_run_spec, "timeout_ms");
        r->max_output = (size_t)spec_int(g, outside_run_spec, "max_output_kb") << 10;
        if (!r->nprograms)
            errf(e, g, "%s.programs: lists no program", path);
    }
}

static void parse_protos(errs *e, dconfig *c, const config_setting_t *list)
{
    int n = config_setting_length(list);
    c->protos = calloc((size_t)(n ? n : 1), sizeof *c->protos);
    if (!c->protos)
        return;
    char path[256];
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        setting_path(g, path, sizeof path);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            errf(e, g, "%s: expected a group { name = ...; plugin = ...; }, found %s", path,
                 type_name(config_setting_type(g)));
            continue;
        }
        if (check_group(e, g, proto_spec))
            continue;
        dproto *p = &c->protos[c->nprotos];
        const char *name = str_member(g, "name");
        if (!kernel_valid_proto_name(name)) {
            errf(e, config_setting_get_member(g, "name"),
                 "%s.name: '%s' must match [A-Za-z][A-Za-z0-9_.-]{0,62}", path, name);
            continue;
        }
        for (int j = 0; j < c->nprotos; j++)
            if (!strcmp(c->protos[j].name, name)) {
                errf(e, config_setting_get_member(g, "name"),
                     "%s.name: proto '%s' is defined twice (also on line %d)", path, name,
                     c->protos[j].line);
                name = NULL;
                break;
            }
        if (!name)
            continue;
        const char *plugin = str_member(g, "plugin");
        if (!kernel_valid_plugin_name(plugin)) {
            errf(e, config_setting_get_member(g, "plugin"),
                 "%s.plugin: '%s' is not a plugin name ([a-z][a-z0-9_-]{0,63})", path, plugin);
            continue;
        }
        p->name = strdup(name);
        p->plugin = strdup(plugin);
        p->line = config_setting_source_line(g);
        const char *ver = str_member(g, "version");
        p->version = ver ? strdup(ver) : NULL;
        const config_setting_t *persona = config_setting_get_member(g, "persona");
        if (persona) {
            json_t *j = to_json(persona);
            p->persona_json = json_dumps(j, JSON_COMPACT);
            json_decref(j);
        }
        const config_setting_t *st = config_setting_get_member(g, "state");
        if (st) {
            int m = config_setting_length(st);
            p->state = calloc((size_t)(m ? m : 1), sizeof *p->state);
            for (int j = 0; p->state && j < m; j++) {
                config_setting_t *kv = config_setting_get_elem(st, (unsigned)j);
                if (config_setting_type(kv) != CONFIG_TYPE_STRING) {
                    char kp[256];
                    setting_path(kv, kp, sizeof kp);
                    errf(e, kv, "%s: state values are strings, found %s", kp,
                         type_name(config_setting_type(kv)));
                    continue;
                }
                p->state[p->nstate].key = strdup(config_setting_name(kv));
                p->state[p->nstate].value = strdup(config_setting_get_string(kv));
                p->nstate++;
            }
        }
        c->nprotos++;
    }
}

static void parse_subs(errs *e, dconfig *c, const config_setting_t *list)
{
    int n = config_setting_length(list);
    c->subs = calloc((size_t)(n ? n : 1), sizeof *c->subs);
    if (!c->subs)
        return;
    char path[256];
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        setting_path(g, path, sizeof path);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            errf(e, g, "%s: expected a group { event = ...; proto = ...; selector = ...; }", path);
            continue;
        }
        if (check_group(e, g, sub_spec))
            continue;
        dsub *s = &c->subs[c->nsubs++];
        s->event = strdup(str_member(g, "event"));
        s->proto = strdup(str_member(g, "proto"));
        s->selector = strdup(str_member(g, "selector"));
    }
}

int dconfig_load(const char *path, dconfig **out, char **errors)
{
    errs e = {.file = path};
    config_t cf;
    config_init(&cf);
    dconfig *c = calloc(1, sizeof *c);
    *out = NULL;
    *errors = NULL;
    if (!c) {
        *errors = strdup("out of memory\n");
        config_destroy(&cf);
        return -1;
    }
    char abs[PATH_MAX];
    if (!realpath(path, abs)) {
        errf(&e, NULL, "cannot read: %s", strerror(errno));
        goto done;
    }
    c->path = strdup(abs);
    e.file = c->path;
    if (!config_read_file(&cf, abs)) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            errf(&e, NULL, "cannot read: %s", strerror(errno));
        else {
            char *line;
            if (asprintf(&line, "%s:%d: syntax: %s\n",
                         config_error_file(&cf) ? config_error_file(&cf) : abs,
                         config_error_line(&cf), config_error_text(&cf)) >= 0) {
                e.text = line;
                e.len = strlen(line);
                e.n = 1;
            }
        }
        goto done;
    }
    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof dirbuf, "%s", abs);
    const char *dir = dirname(dirbuf);
    const config_setting_t *root = config_root_setting(&cf);
    check_group(&e, root, root_spec);

    const char *s;
    if ((s = str_member(root, "plugin_dir")) && *s)
        c->plugin_dir = resolve(dir, s);
    if ((s = str_member(root, "runtime_dir")) && *s)
        c->runtime_dir = resolve(dir, s);
    if ((s = str_member(root, "image")) && *s)
        c->image = resolve(dir, s);
    c->log_level = LOG_INFO;
    if ((s = str_member(root, "log_level"))) {
        int found = 0;
        for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
            if (!strcmp(levels[i].name, s)) {
                c->log_level = levels[i].level;
                found = 1;
            }
        if (!found)
            errf(&e, config_setting_get_member(root, "log_level"),
                 "log_level: '%s' is not one of err, warning, notice, info, debug", s);
    }
    c->workers = (int)spec_int(root, root_spec, "workers");
    c->snapshot_interval_s = (unsigned)spec_int(root, root_spec, "snapshot_interval_s");
    c->image_backups = (int)spec_int(root, root_spec, "image_backups");
    c->audit_keep = (long)spec_int(root, root_spec, "audit_keep");
    const config_setting_t *rec = config_setting_get_member(root, "image_recover");
    if (rec && config_setting_type(rec) != CONFIG_TYPE_BOOL)
        errf(&e, rec, "image_recover: expected a boolean (true or false), found %s",
             type_name(config_setting_type(rec)));
    c->image_recover = rec && config_setting_type(rec) == CONFIG_TYPE_BOOL &&
                       config_setting_get_bool(rec);
    c->durability = DURABLE_EVERYSEC;
    if ((s = str_member(root, "durability"))) {
        int found = 0;
        for (int i = DURABLE_SNAPSHOT; i <= DURABLE_ALWAYS; i++)
            if (!strcmp(dconfig_durability_name(i), s)) {
                c->durability = i;
                found = 1;
            }
        if (!found)
            errf(&e, config_setting_get_member(root, "durability"),
                 "durability: '%s' is not one of always, everysec, snapshot", s);
    }

    const config_setting_t *ctl = config_setting_get_member(root, "control");
    if (ctl && config_setting_type(ctl) == CONFIG_TYPE_GROUP && !check_group(&e, ctl, control_spec)) {
        c->socket = resolve(dir, str_member(ctl, "socket"));
        const char *grp = str_member(ctl, "group");
        if (grp) {
            if (!getgrnam(grp))
                errf(&e, config_setting_get_member(ctl, "group"),
                     "control.group: no group named '%s' on this machine", grp);
            c->group = strdup(grp);
        }
        const config_setting_t *uids = config_setting_get_member(ctl, "uids");
        if (uids) {
            int n = config_setting_length(uids);
            c->uids = calloc((size_t)(n ? n : 1), sizeof *c->uids);
            for (int i = 0; c->uids && i < n; i++) {
                config_setting_t *u = config_setting_get_elem(uids, (unsigned)i);
                int t = config_setting_type(u);
                long long v = (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
                                  ? config_setting_get_int64(u) : -1;
                if (v < 0 || v > 0x7fffffff) {
                    errf(&e, u, "control.uids[%d]: expected a uid (a non-negative integer)", i);
                    continue;
                }
                c->uids[c->nuids++] = (uid_t)v;
            }
        }
    }
    const config_setting_t *lim = checked_group(&e, root, "limits", limits_spec);
    c->max_plugin_bytes = (size_t)spec_int(lim, limits_spec, "max_plugin_bytes");
    c->hook_timeout_ms = (unsigned)spec_int(lim, limits_spec, "hook_timeout_ms");
    c->migrate_timeout_ms = (unsigned)spec_int(lim, limits_spec, "migrate_timeout_ms");
    c->event_queue = (size_t)spec_int(lim, limits_spec, "event_queue");
    c->max_request_bytes = (size_t)spec_int(lim, limits_spec, "max_request_bytes");
    c->max_clients = (int)spec_int(lim, limits_spec, "max_clients");
    c->request_timeout_ms = (unsigned)spec_int(lim, limits_spec, "request_timeout_ms");
    c->idle_timeout_ms = (unsigned)spec_int(lim, limits_spec, "idle_timeout_ms");
    if (lim)
        c->allow_threads = str_array(&e, lim, "allow_threads", &c->nallow_threads, plugin_name_ok);
    const config_setting_t *cx = lim ? config_setting_get_member(lim, "contain_exits") : NULL;
    if (cx && config_setting_type(cx) != CONFIG_TYPE_BOOL)
        errf(&e, cx, "limits.contain_exits: expected a boolean (true or false), found %s",
             type_name(config_setting_type(cx)));
    c->contain_exits = !cx || config_setting_type(cx) != CONFIG_TYPE_BOOL ||
                       config_setting_get_bool(cx);

    const config_setting_t *sbx = checked_group(&e, root, "sandbox", sandbox_spec);
    if ((s = str_member(sbx, "mode"))) {
        if (!strcmp(s, "none"))
            c->sandbox_none = 1;
        else if (strcmp(s, "runsc"))
            errf(&e, config_setting_get_member(sbx, "mode"),
                 "sandbox.mode: '%s' is not one of runsc, none", s);
    }
    if ((s = str_member(sbx, "runsc")) && *s)
        c->runsc = resolve(dir, s);
    if ((s = str_member(sbx, "probe")) && *s)
        c->probe = resolve(dir, s);
    if ((s = str_member(sbx, "abi_dir")) && *s)
        c->abi_dir = resolve(dir, s);
    c->sbx_wall_ms = (unsigned)spec_int(sbx, sandbox_spec, "wall_ms");
    c->sbx_cpu_s = (unsigned)spec_int(sbx, sandbox_spec, "cpu_s");
    c->sbx_mem_bytes = (size_t)spec_int(sbx, sandbox_spec, "memory_mb") << 20;
    c->sbx_nproc = (unsigned)spec_int(sbx, sandbox_spec, "processes");
    c->sbx_file_bytes = (size_t)spec_int(sbx, sandbox_spec, "file_mb") << 20;
    c->sbx_output_bytes = (size_t)spec_int(sbx, sandbox_spec, "output_kb") << 10;
    c->sbx_call_ms = (unsigned)spec_int(sbx, sandbox_spec, "call_ms");

    const config_setting_t *fg = checked_group(&e, root, "forge", forge_spec);
    if ((s = str_member(fg, "generator"))) {
        if (!kernel_valid_proto_name(s))
            errf(&e, config_setting_get_member(fg, "generator"),
                 "forge.generator: '%s' is not a proto name", s);
        else
            c->forge_generator = strdup(s);
    }
    c->forge_dir = (s = str_member(fg, "dir")) && *s ? resolve(dir, s) : NULL;
    c->forge_iterations = (unsigned)spec_int(fg, forge_spec, "iterations");
    c->forge_wall_s = (unsigned)spec_int(fg, forge_spec, "wall_s");
    c->forge_probation_s = (unsigned)spec_int(fg, forge_spec, "probation_s");

    const config_setting_t *dm = checked_group(&e, root, "daemon", daemon_spec);
    c->daemon_user = strdup((s = str_member(dm, "user")) && *s ? s : "a4ps");
    if ((s = str_member(dm, "group")) && *s) {
        if (!getgrnam(s))
            errf(&e, config_setting_get_member(dm, "group"),
                 "daemon.group: no group named '%s' on this machine", s);
        c->daemon_group = strdup(s);
    }
    const config_setting_t *conf = dm ? config_setting_get_member(dm, "confine") : NULL;
    if (conf && config_setting_type(conf) != CONFIG_TYPE_BOOL)
        errf(&e, conf, "daemon.confine: expected a boolean (true or false), found %s",
             type_name(config_setting_type(conf)));
    c->daemon_confine = !conf || config_setting_type(conf) != CONFIG_TYPE_BOOL ||
                        config_setting_get_bool(conf);
    c->daemon_as_mb = (unsigned long)spec_int(dm, daemon_spec, "address_space_mb");
    c->daemon_open_files = (unsigned long)spec_int(dm, daemon_spec, "open_files");
    c->daemon_threads = (unsigned long)spec_int(dm, daemon_spec, "threads");

    const config_setting_t *og = checked_group(&e, root, "outside", outside_spec);
    if (og)
        parse_outside(&e, c, og);

    const config_setting_t *protos = config_setting_get_member(root, "protos");
    if (protos && config_setting_type(protos) == CONFIG_TYPE_LIST)
        parse_protos(&e, c, protos);
    const config_setting_t *subs = config_setting_get_member(root, "subscriptions");
    if (subs && config_setting_type(subs) == CONFIG_TYPE_LIST)
        parse_subs(&e, c, subs);
    for (int i = 0; i < c->nsubs; i++) {
        int known = 0;
        for (int j = 0; j < c->nprotos; j++)
            if (!strcmp(c->subs[i].proto, c->protos[j].name))
                known = 1;
        if (!known)
            errf(&e, config_setting_get_elem(subs, (unsigned)i),
                 "subscriptions.[%d].proto: '%s' is not one of the protos of this file", i,
                 c->subs[i].proto);
    }
done:
    config_destroy(&cf);
    if (e.n || !e.text) {
        if (e.n) {
            *errors = e.text;
            dconfig_free(c);
            return -1;
        }
    }
    free(e.text);
    *out = c;
    return 0;
}

void dconfig_free(dconfig *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->nprotos; i++) {
        dproto *p = &c->protos[i];
        free(p->name);
        free(p->plugin);
        free(p->version);
        free(p->persona_json);
        for (int j = 0; j < p->nstate; j++) {
            free(p->state[j].key);
            free(p->state[j].value);
        }
        free(p->state);
    }
    free(c->protos);
    for (int i = 0; i < c->nsubs; i++) {
        free(c->subs[i].event);
        free(c->subs[i].proto);
        free(c->subs[i].selector);
    }
    free(c->subs);
    free(c->uids);
    for (int i = 0; i < c->nallow_threads; i++)
        free(c->allow_threads[i]);
    free(c->allow_threads);
    free(c->path);
    free(c->plugin_dir);
    free(c->runtime_dir);
    free(c->image);
    free(c->runsc);
    free(c->probe);
    free(c->abi_dir);
    free(c->forge_generator);
    free(c->forge_dir);
    free(c->daemon_user);
    free(c->daemon_group);
    outside_policy_free(&c->outside);
    free(c->socket);
    free(c->group);
    free(c);
}

const char *dconfig_durability_name(int durability)
{
    switch (durability) {
    case DURABLE_ALWAYS: return "always";
    case DURABLE_EVERYSEC: return "everysec";
    default: return "snapshot";
    }
}
