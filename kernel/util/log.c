/* log.c -- the kernel's log lines, its record of refusals, its events.
 *
 * One line per event with a syslog priority, through the configured sink or
 * to stderr as "<N>message" so journald classifies it. */
#include "kernel_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kernel_log(kernel *k, int level, const char *fmt, ...)
{
    if (level > __atomic_load_n(&k->cfg.log_level, __ATOMIC_RELAXED))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++)      /* one event, one line */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    if (k->cfg.log)
        k->cfg.log(k->cfg.log_arg, level, line);
    else
        fprintf(stderr, "<%d>a4ps: %s\n", level, line);
}

void kernel_record_error(kernel *k, const char *msg)
{
    pthread_mutex_lock(&k->err_lock);
    unsigned i = k->nerrors % KERNEL_LAST_ERRORS;
    snprintf(k->last_errors[i], sizeof k->last_errors[i], "%s", msg);
    k->last_error_at[i] = time(NULL);
    k->nerrors++;
    pthread_mutex_unlock(&k->err_lock);
}

void kernel_report_error(kernel *k, const char *msg)
{
    kernel_record_error(k, msg);
}

void kernel_emitf(kernel *k, const char *event, const char *fmt, ...)
{
    if (!k->bus)
        return;
    va_list ap;
    va_start(ap, fmt);
    json_error_t je;
    json_t *j = json_vpack_ex(&je, 0, fmt, ap);
    va_end(ap);
    if (!j) {
        kernel_log(k, A4PS_LOG_ERR, "event %s: cannot build payload: %s", event, je.text);
        return;
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s && bus_publish(k->bus, event, s) == A4PS_EBUSY)
        kernel_log(k, A4PS_LOG_WARNING, "event %s dropped: the bus queue is full", event);
    free(s);
}
