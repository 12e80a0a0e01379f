/* log.h: the daemon's log — one line per event on stderr, with a level.
 *
 * Under systemd (stderr is the journal stream named by $JOURNAL_STREAM) a
 * line is "<N>message", N the syslog priority journald reads from it;
 * otherwise "IDENT: LEVEL: message". No timestamp: the journal, or
 * whatever collects stderr, adds its own. Each line goes out in a single
 * write(2), so lines from several threads never interleave.
 *
 * The level and the output form are process-wide: the one piece of global
 * state outside the daemon's context, because every module logs (the store
 * has no daemon context to reach it through). */
#ifndef JOBQ_LOG_H
#define JOBQ_LOG_H

#include <stdbool.h>

/* Values are the syslog priorities (sd-daemon.h's SD_ERR...). */
typedef enum {
    JQ_LOG_ERROR = 3,
    JQ_LOG_WARNING = 4,
    JQ_LOG_NOTICE = 5,
    JQ_LOG_INFO = 6,
    JQ_LOG_DEBUG = 7,
} jq_log_level_t;

#define JQ_LOG_DEFAULT JQ_LOG_INFO

/* Once, before threads start: the name lines start with, and whether
 * stderr is the journal (from $JOURNAL_STREAM). */
void jq_log_setup(const char *ident);

/* Lines less severe than level are dropped. Any thread. */
void jq_log_set_level(jq_log_level_t level);
jq_log_level_t jq_log_get_level(void);
bool jq_log_enabled(jq_log_level_t level);

/* "error", "warning", "notice", "info", "debug" (and back: -1 for an
 * unknown name). */
const char *jq_log_level_name(jq_log_level_t level);
int jq_log_level_parse(const char *name, jq_log_level_t *out);

/* Log one line (a newline in the message becomes a space; a very long
 * one is cut). Any thread. */
void jq_log(jq_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
