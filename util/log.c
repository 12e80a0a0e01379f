/* log.c: leveled one-line logging to stderr, journald-aware (see log.h). */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static _Atomic int log_level = JQ_LOG_DEFAULT;
static _Atomic bool log_journal;
static char log_ident[32] = "jobq";

static const char *const names[] = {
    [JQ_LOG_ERROR] = "error", [JQ_LOG_WARNING] = "warning", [JQ_LOG_NOTICE] = "notice",
    [JQ_LOG_INFO] = "info",   [JQ_LOG_DEBUG] = "debug",
};

/* systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it connects
 * stderr to; a stderr redirected since then (to a file, a pipe) differs. */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char extra;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu%c", &dev, &ino, &extra) != 2 || fstat(2, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void jq_log_setup(const char *ident)
{
    snprintf(log_ident, sizeof log_ident, "%s", ident);
    atomic_store(&log_journal, stderr_is_journal());
}

void jq_log_set_level(jq_log_level_t level)
{
    atomic_store(&log_level, (int)level);
}

jq_log_level_t jq_log_get_level(void)
{
    return (jq_log_level_t)atomic_load(&log_level);
}

bool jq_log_enabled(jq_log_level_t level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

const char *jq_log_level_name(jq_log_level_t level)
{
    return level >= JQ_LOG_ERROR && level <= JQ_LOG_DEBUG ? names[level] : "?";
}

int jq_log_level_parse(const char *name, jq_log_level_t *out)
{
    for (int l = JQ_LOG_ERROR; l <= JQ_LOG_DEBUG; l++)
        if (!strcmp(name, names[l])) {
            *out = (jq_log_level_t)l;
            return 0;
        }
    return -1;
}

void jq_log(jq_log_level_t level, const char *fmt, ...)
{
    if (!jq_log_enabled(level))
        return;
    int saved = errno; /* callers may still look at it */
    char line[LINE_MAX_BYTES];
    int n;
    if (atomic_load_explicit(&log_journal, memory_order_relaxed))
        n = snprintf(line, sizeof line, "<%d>", (int)level);
    else
        n = snprintf(line, sizeof line, "%s: %s: ", log_ident, jq_log_level_name(level));
    size_t head = n > 0 ? (size_t)n : 0;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(line + head, sizeof line - head - 1, fmt, ap);
    va_end(ap);
    size_t len = head + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof line - 2) { /* cut: say so */
        len = sizeof line - 2;
        memcpy(line + len - 3, "...", 3);
    }
    for (size_t i = head; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    /* One write: lines of different threads do not mix. A short write
     * (a full pipe, a signal) is finished; a failing stderr is ignored. */
    for (size_t off = 0; off < len;) {
        ssize_t w = write(2, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved;
}
