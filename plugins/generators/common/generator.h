/* generator.h -- the helpers the forge's code generators of this tree
 * (inbox, command, openai) share: formatted replies, state strings, numbers,
 * the clock, JSON members, first lines and the task message.
 *
 * Header-only (static inline) and built on abi/a4ps.h, jansson and libc
 * alone, so each generator still builds like a third-party plugin and, with
 * hidden visibility, exports nothing but its a4ps_plugin_entry.  Include it
 * after the plugin's feature macros (_GNU_SOURCE). */
#ifndef A4PS_GENERATOR_H
#define A4PS_GENERATOR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "a4ps.h"

/* The longest task id: [A-Za-z0-9_-]{1,32}, or a non-negative integer. */
#define TASK_ID_MAX 32

static inline int reply_fmt(a4ps_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Set the reply to a formatted line (at most 1023 bytes) and return status,
 * so that every error path is one statement. */
static inline int reply_fmt(a4ps_ctx *ctx, int status, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    a4ps_reply(ctx, line, strlen(line));
    return status;
}

/* The value of key as a malloc'd NUL-terminated string in *out (NULL on
 * failure): A4PS_OK, A4PS_ENOENT when unset, A4PS_ERANGE when longer than
 * max bytes, A4PS_ENOMEM, or the host's error. */
static inline int state_str(a4ps_ctx *ctx, const char *key, size_t max, char **out)
{
    *out = NULL;
    for (;;) {
        int64_t n = a4ps_get(ctx, key, NULL, 0);
        if (n < 0)
            return (int)n;
        if ((uint64_t)n > max)
            return A4PS_ERANGE;
        char *buf = malloc((size_t)n + 1);
        if (!buf)
            return A4PS_ENOMEM;
        int64_t m = a4ps_get(ctx, key, buf, (size_t)n);
        if (m == n) {
            buf[n] = '\0';
            *out = buf;
            return A4PS_OK;
        }
        free(buf);
        if (m < 0)
            return (int)m;
        /* The value changed size between the two reads: read it again. */
    }
}

/* s as a decimal number of at most 10 digits (no sign, no space) in [lo, hi]
 * into *out; false, *out untouched, otherwise. */
static inline bool parse_ulong(const char *s, unsigned long lo, unsigned long hi,
                               unsigned long *out)
{
    if (!*s || strlen(s) > 10)
        return false;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Milliseconds of CLOCK_MONOTONIC: for deadlines, never for dates. */
static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A string member of obj, NULL when obj is no object or the member is
 * absent, null or not a string. */
static inline const char *member_str(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The first non-empty line of s[0..len) (leading newlines and spaces
 * skipped, control bytes shown as spaces), at most cap-1 bytes, into out. */
static inline void first_line(const char *s, size_t len, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < len && (s[i] == '\n' || s[i] == '\r' || s[i] == ' '))
        i++;
    for (; i < len && s[i] != '\n' && s[i] != '\r' && o + 1 < cap; i++)
        out[o++] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    out[o] = '\0';
}

/* Whether s[0..n) is a task id: 1 to TASK_ID_MAX bytes of [A-Za-z0-9_-]
 * (so no NUL inside). */
static inline bool task_id_valid(const char *s, size_t n)
{
    return n > 0 && n <= TASK_ID_MAX &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* The "task" member t as its id text in id: a valid id string, or a
 * non-negative integer in decimal; false when t is neither. */
static inline bool task_id_of(json_t *t, char id[TASK_ID_MAX + 1])
{
    if (json_is_integer(t) && json_integer_value(t) >= 0) {
        snprintf(id, TASK_ID_MAX + 1, "%" JSON_INTEGER_FORMAT, json_integer_value(t));
        return true;
    }
    if (json_is_string(t) && task_id_valid(json_string_value(t), json_string_length(t))) {
        snprintf(id, TASK_ID_MAX + 1, "%s", json_string_value(t));
        return true;
    }
    return false;
}

/* Parse msg[0..len) as JSON (duplicate keys refused) into *root: A4PS_OK,
 * or A4PS_EINVAL with the reply "<who> <sel>: the message is not JSON (...)"
 * and *root NULL. */
static inline int message_json(a4ps_ctx *ctx, const char *who, const char *sel,
                               const void *msg, size_t len, json_t **root)
{
    json_error_t jerr;
    *root = len ? json_loadb(msg, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!*root)
        return reply_fmt(ctx, A4PS_EINVAL, "%s %s: the message is not JSON (%s)", who, sel,
                         len ? jerr.text : "it is empty");
    return A4PS_OK;
}

/* Parse msg as the forge's task: a JSON object whose "task" is an id (see
 * task_id_of), into *root (the caller's to json_decref) and id.  A4PS_OK, or
 * A4PS_EINVAL with the reason in the reply, prefixed "<who> <sel>: ", and
 * *root NULL. */
static inline int parse_task(a4ps_ctx *ctx, const char *who, const char *sel, const void *msg,
                             size_t len, json_t **root, char id[TASK_ID_MAX + 1])
{
    int rc = message_json(ctx, who, sel, msg, len, root);
    if (rc != A4PS_OK)
        return rc;
    if (!json_is_object(*root) || !task_id_of(json_object_get(*root, "task"), id)) {
        json_decref(*root);
        *root = NULL;
        return reply_fmt(ctx, A4PS_EINVAL, "%s %s: the message must be a JSON object with a "
                                           "\"task\" id ([A-Za-z0-9_-]{1,32})", who, sel);
    }
    return A4PS_OK;
}

#endif
