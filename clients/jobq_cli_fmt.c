/* jobq_cli_fmt.c: turning decoded jobq values into text for the jobq CLI.
 *
 * Timestamps arrive as [seconds, microseconds] and are shown as ISO-8601
 * local time with microseconds and the UTC offset
 * (2024-05-01T12:34:56.123456+02:00). Per-opcode list fields are joined
 * with "," in tables. JSON text (--json and JSON inside text output) is
 * written here rather than by json_dumps so that a real prints as a person
 * writes it: with the fewest significant digits that read back as the
 * same double (0.098, not jansson's 0.098000000000000004), so the output
 * is both short and exact. Strings and integers are still encoded by
 * jansson.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq_cli.h"

void cli_format_real(double d, char *buf, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* Still a real when read back: 1 prints as 1.0, as jansson does. */
    if (!strpbrk(buf, ".eEn")) {
        size_t n = strlen(buf);
        if (n + 2 < len)
            memcpy(buf + n, ".0", 3);
    }
}

/* Appends v's JSON text to f. */
static int write_json(FILE *f, const json_t *v, bool compact)
{
    const char *comma = compact ? "," : ", ", *colon = compact ? ":" : ": ";
    size_t i;
    json_t *item;
    switch (json_typeof(v)) {
    case JSON_REAL: {
        char buf[40];
        cli_format_real(json_real_value(v), buf, sizeof buf);
        return fputs(buf, f) < 0 ? -1 : 0;
    }
    case JSON_ARRAY:
        fputc('[', f);
        json_array_foreach(v, i, item) {
            if (i)
                fputs(comma, f);
            if (write_json(f, item, compact) < 0)
                return -1;
        }
        return fputc(']', f) < 0 ? -1 : 0;
    case JSON_OBJECT: {
        const char *key;
        bool first = true;
        fputc('{', f);
        json_object_foreach((json_t *)v, key, item) {
            json_t *k = json_string(key);
            char *ks = k ? json_dumps(k, JSON_ENCODE_ANY) : NULL;
            json_decref(k);
            if (!ks)
                return -1;
            fprintf(f, "%s%s%s", first ? "" : comma, ks, colon);
            free(ks);
            first = false;
            if (write_json(f, item, compact) < 0)
                return -1;
        }
        return fputc('}', f) < 0 ? -1 : 0;
    }
    default: {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        if (!s)
            return -1;
        fputs(s, f);
        free(s);
        return 0;
    }
    }
}

char *cli_json_text(const json_t *v, bool compact)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    int rc = write_json(f, v, compact);
    if (fclose(f) != 0 || rc < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

void cli_print_json(const json_t *v)
{
    char *s = cli_json_text(v, true);
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
    char *s = cli_json_text(v, true);
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
