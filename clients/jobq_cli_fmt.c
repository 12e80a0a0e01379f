/* jobq_cli_fmt.c: turning decoded jobq values into text for the jobq CLI.
 *
 * Timestamps arrive as [seconds, microseconds] and are shown as ISO-8601
 * local time with microseconds and the UTC offset
 * (2024-05-01T12:34:56.123456+02:00). Per-opcode list fields are joined
 * with "," in tables. All JSON output goes through jansson; text output
 * prints reals with 15 significant digits (0.1, not 0.10000000000000001),
 * --json output with jansson's default 17, which reads back exactly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq_cli.h"

void cli_print_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

/* Reads a [sec, usec] timestamp; false when v is not one. */
static bool ts_parts(const json_t *v, long long *sec, long long *usec)
{
    if (!json_is_array(v) || json_array_size(v) != 2)
        return false;
    json_t *s = json_array_get(v, 0), *u = json_array_get(v, 1);
    if (!json_is_number(s) || !json_is_number(u))
        return false;
    *sec = (long long)json_number_value(s);
    *usec = (long long)json_number_value(u);
    return *usec >= 0 && *usec < 1000000;
}

const char *cli_fmt_ts(const json_t *ts, char *buf, size_t len)
{
    long long sec, usec;
    struct tm tm;
    time_t t;
    if (!ts_parts(ts, &sec, &usec) || (t = (time_t)sec, !localtime_r(&t, &tm))) {
        snprintf(buf, len, "-");
        return buf;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(buf, len, "%s.%06lld%c%02ld:%02ld", date, usec, sign, off / 60, off % 60);
    return buf;
}

double cli_ts_diff(const json_t *from, const json_t *to)
{
    long long s1, u1, s2, u2;
    if (!ts_parts(from, &s1, &u1) || !ts_parts(to, &s2, &u2))
        return -1;
    return (double)(s2 - s1) + (double)(u2 - u1) / 1e6;
}

char *cli_fmt_value(const json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("-");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | CLI_TEXT_REAL_PRECISION);
    return s ? s : strdup("?");
}

static bool is_ts_field(const char *f)
{
    return strcmp(f, "received_ts") == 0 || strcmp(f, "start_ts") == 0 ||
           strcmp(f, "end_ts") == 0;
}

static bool is_op_ts_field(const char *f)
{
    return strcmp(f, "opstart") == 0 || strcmp(f, "opexec") == 0 || strcmp(f, "opend") == 0;
}

/* Per-opcode lists whose items are shown one by one, joined by ",". */
static bool is_op_list_field(const char *f)
{
    return is_op_ts_field(f) || strcmp(f, "summary") == 0 || strcmp(f, "opstatus") == 0 ||
           strcmp(f, "oppriority") == 0 || strcmp(f, "opresult") == 0;
}

char *cli_fmt_field(const char *field, const json_t *v)
{
    char buf[64];
    if (is_ts_field(field) && json_is_array(v))
        return strdup(cli_fmt_ts(v, buf, sizeof buf));
    if (!is_op_list_field(field) || !json_is_array(v))
        return cli_fmt_value(v);
    size_t cap = 64, used = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *item = json_array_get(v, i);
        char *s = is_op_ts_field(field) ? strdup(cli_fmt_ts(item, buf, sizeof buf))
                                        : cli_fmt_value(item);
        if (!s) {
            free(out);
            return NULL;
        }
        size_t n = strlen(s);
        if (used + n + 2 > cap) {
            while (used + n + 2 > cap)
                cap *= 2;
            char *bigger = realloc(out, cap);
            if (!bigger) {
                free(s);
                free(out);
                return NULL;
            }
            out = bigger;
        }
        if (i > 0)
            out[used++] = ',';
        memcpy(out + used, s, n + 1);
        used += n;
        free(s);
    }
    return out;
}

char *cli_fmt_log_entry(const json_t *entry)
{
    char tsbuf[64];
    const char *ts = cli_fmt_ts(json_array_get(entry, 1), tsbuf, sizeof tsbuf);
    json_t *type = json_array_get(entry, 2);
    char *msg = cli_fmt_value(json_array_get(entry, 3));
    if (!msg)
        return NULL;
    char *out = NULL;
    int rc;
    if (json_is_string(type) && strcmp(json_string_value(type), "message") != 0)
        rc = asprintf(&out, "%s [%s] %s", ts, json_string_value(type), msg);
    else
        rc = asprintf(&out, "%s %s", ts, msg);
    free(msg);
    return rc < 0 ? NULL : out;
}
