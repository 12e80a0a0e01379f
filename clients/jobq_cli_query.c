/* jobq_cli_query.c: the "list", "info", "list-fields" and "list-opcodes"
 * commands of jobq.
 *
 * list pages through query_jobs (after_id = last id seen, while the daemon
 * says "more"), so it shows every job however many there are; the "id"
 * field is always requested because paging needs it, and hidden again when
 * the user did not ask for it. Given job ids, list asks for just those
 * (and for "status", hidden the same way, which tells a missing job). info
 * asks for every field of the given jobs in one call; a job that does not
 * exist is reported on stderr and makes the exit code 1, the others are
 * still shown. Priorities are shown by name when they have one (high,
 * normal, low); --json keeps the numbers. list-fields and list-opcodes
 * print what the daemon says it offers, so nothing here can drift from it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq_cli.h"

#define LIST_DEFAULT_FIELDS "id,status,priority,summary"
#define LIST_DEFAULT_PAGE 10000

static const char *const statuses[] = {"queued",  "waiting", "canceling", "running",
                                       "canceled", "success", "error"};

static bool is_status(const char *s)
{
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
        if (strcmp(s, statuses[i]) == 0)
            return true;
    return false;
}

/* Appends the comma-separated words of s to arr (empty words skipped). */
static void append_words(json_t *arr, const char *s)
{
    char *copy = strdup(s);
    char *save = NULL;
    if (!copy)
        return;
    for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save))
        json_array_append_new(arr, json_string(w));
    free(copy);
}

static int field_index(const json_t *fields, const char *name)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f) {
        if (json_is_string(f) && strcmp(json_string_value(f), name) == 0)
            return (int)i;
    }
    return -1;
}

/* Prints rows as a table: columns 0..ncols-1, two spaces apart. */
static void print_table(const json_t *fields, const json_t *rows, size_t ncols, bool headers)
{
    size_t nrows = json_array_size(rows);
    char **cells = calloc((nrows + 1) * ncols + 1, sizeof *cells);
    size_t *width = calloc(ncols + 1, sizeof *width);
    if (!cells || !width) {
        free(cells);
        free(width);
        return;
    }
    for (size_t c = 0; c < ncols; c++) {
        const char *name = json_string_value(json_array_get(fields, c));
        char *h = strdup(name ? name : "?");
        for (char *p = h; p && *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        cells[c] = h;
        bool prio = name && (strcmp(name, "priority") == 0 || strcmp(name, "oppriority") == 0);
        for (size_t r = 0; r < nrows; r++) {
            json_t *v = json_array_get(json_array_get(rows, r), c);
            json_t *named = prio ? cli_priority_names(v) : NULL;
            cells[(r + 1) * ncols + c] = cli_fmt_field(name ? name : "", named ? named : v);
            json_decref(named);
        }
    }
    for (size_t r = headers ? 0 : 1; r <= nrows; r++)
        for (size_t c = 0; c < ncols; c++) {
            size_t n = cells[r * ncols + c] ? strlen(cells[r * ncols + c]) : 0;
            if (n > width[c])
                width[c] = n;
        }
    for (size_t r = headers ? 0 : 1; r <= nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            const char *s = cells[r * ncols + c] ? cells[r * ncols + c] : "?";
            if (c + 1 < ncols)
                printf("%-*s  ", (int)width[c], s);
            else
                printf("%s\n", s);
        }
    }
    for (size_t i = 0; i < (nrows + 1) * ncols; i++)
        free(cells[i]);
    free(cells);
    free(width);
}

/* Index of name in fields, appending it (a hidden column) when missing. */
static int need_field(json_t *fields, const char *name)
{
    int i = field_index(fields, name);
    if (i >= 0)
        return i;
    json_array_append_new(fields, json_string(name));
    return (int)json_array_size(fields) - 1;
}

static bool in_list(const json_t *list, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (s && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

/* Every live (or archived too) job, a page at a time, into rows. */
static int list_all(cli_t *cli, jobq_client_t *c, json_t *fields, json_t *status, int id_col,
                    long long limit, long long page, bool archived, json_t *rows, bool *more)
{
    uint64_t after = 0;
    *more = true;
    while (*more) {
        long long want = page;
        long long got = (long long)json_array_size(rows);
        if (limit >= 0 && limit - got < want)
            want = limit - got;
        if (want <= 0)
            break;
        json_t *res = jobq_query_jobs(c, NULL, fields, status, after, (uint64_t)want, archived,
                                      cli->timeout_ms);
        if (!res)
            return cli_call_failed(cli);
        json_t *page_rows = json_object_get(res, "rows");
        *more = json_is_true(json_object_get(res, "more"));
        size_t n = json_array_size(page_rows);
        if (!json_is_array(page_rows) || n == 0) {
            json_decref(res);
            break;
        }
        json_array_extend(rows, page_rows);
        json_t *last_id = json_array_get(json_array_get(page_rows, n - 1), (size_t)id_col);
        bool advanced = json_is_integer(last_id) && (uint64_t)json_integer_value(last_id) > after;
        if (advanced)
            after = (uint64_t)json_integer_value(last_id);
        json_decref(res);
        if (!advanced) {
            cli_error(cli, "the daemon's paging did not advance; stopping");
            return CLI_EXIT_FAIL;
        }
    }
    return CLI_EXIT_OK;
}

/* The jobs of ids, in that order, into rows: a job not found is reported
 * on stderr and sets *missing; the status filter is applied here so that a
 * missing job is still told from a filtered one. A reply may answer the
 * first ids only (the daemon's reply size cap): ask again for the rest. */
static int list_ids(cli_t *cli, jobq_client_t *c, json_t *fields, const json_t *ids,
                    const json_t *status, int id_col, int st_col, long long limit,
                    json_t *rows, bool *more, bool *missing)
{
    size_t done = 0, nids = json_array_size(ids);
    *more = false;
    while (done < nids) {
        json_t *want = json_array();
        for (size_t i = done; i < nids; i++)
            json_array_append(want, json_array_get(ids, i));
        json_t *res = jobq_query_jobs(c, want, fields, NULL, 0, 0, false, cli->timeout_ms);
        json_decref(want);
        if (!res)
            return cli_call_failed(cli);
        json_t *got = json_object_get(res, "rows");
        size_t n = json_array_size(got);
        if (n == 0 || done + n > nids) {
            json_decref(res);
            cli_error(cli, "the daemon answered %zu rows for %zu jobs", n, nids - done);
            return CLI_EXIT_FAIL;
        }
        size_t i;
        json_t *row;
        json_array_foreach(got, i, row) {
            const char *st = json_string_value(json_array_get(row, (size_t)st_col));
            if (!st) {
                cli_error(cli, "job %lld not found",
                          (long long)json_integer_value(json_array_get(row, (size_t)id_col)));
                *missing = true;
            } else if (!status || in_list(status, st)) {
                if (limit >= 0 && (long long)json_array_size(rows) >= limit)
                    *more = true;
                else
                    json_array_append(rows, row);
            }
        }
        done += n;
        json_decref(res);
    }
    return CLI_EXIT_OK;
}

int cmd_list(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "output", .short_name = 'o', .has_arg = true},
        {.name = "status", .has_arg = true},
        {.name = "limit", .short_name = 'n', .has_arg = true},
        {.name = "page-size", .has_arg = true},
        {.name = "archived", .has_arg = false},
        {.name = "no-headers", .has_arg = false},
        {0},
    };
    enum { O_OUTPUT, O_STATUS, O_LIMIT, O_PAGE, O_ARCHIVED, O_NO_HEADERS };
    char **pos;
    int npos, rc;
    bool done;
    json_t *fields = json_array(), *status = NULL, *rows = json_array(), *ids = json_array();
    rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    for (int i = 0; i < npos; i++) {
        uint64_t id;
        if (cli_parse_job_id(pos[i], &id) < 0) {
            rc = cli_usage(cli, "invalid job ID '%s'", pos[i]);
            goto out;
        }
        json_array_append_new(ids, json_integer((json_int_t)id));
    }
    const char *out_spec = opts[O_OUTPUT].value;
    if (!out_spec || out_spec[0] == '+')
        append_words(fields, LIST_DEFAULT_FIELDS);
    if (out_spec)
        append_words(fields, out_spec[0] == '+' ? out_spec + 1 : out_spec);
    if (json_array_size(fields) == 0) {
        rc = cli_usage(cli, "no fields given to -o");
        goto out;
    }
    size_t ncols = json_array_size(fields);
    /* Paging needs the id, and a listing by id the status (nil: no such
     * job): asked for, hidden again below. */
    int id_col = need_field(fields, "id");
    int st_col = npos ? need_field(fields, "status") : -1;
    if (opts[O_STATUS].count) {
        status = json_array();
        for (int i = 0; i < opts[O_STATUS].count; i++)
            append_words(status, opts[O_STATUS].values[i]);
        size_t i;
        json_t *s;
        json_array_foreach(status, i, s) {
            if (!is_status(json_string_value(s))) {
                rc = cli_usage(cli, "unknown status '%s'", json_string_value(s));
                goto out;
            }
        }
    }
    long long limit = -1, page = LIST_DEFAULT_PAGE;
    if (opts[O_LIMIT].count && (cli_parse_int(opts[O_LIMIT].value, &limit) < 0 || limit < 1)) {
        rc = cli_usage(cli, "invalid limit '%s' (an integer >= 1)", opts[O_LIMIT].value);
        goto out;
    }
    if (opts[O_PAGE].count && (cli_parse_int(opts[O_PAGE].value, &page) < 0 || page < 1 ||
                               page > JOBQ_MAX_ROWS_PER_REPLY)) {
        rc = cli_usage(cli, "invalid page size '%s' (1 to %d)", opts[O_PAGE].value,
                       JOBQ_MAX_ROWS_PER_REPLY);
        goto out;
    }
    jobq_client_t *c = cli_client(cli);
    if (!c) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    bool more, missing = false;
    if (npos)
        rc = list_ids(cli, c, fields, ids, status, id_col, st_col, limit, rows, &more, &missing);
    else
        rc = list_all(cli, c, fields, status, id_col, limit, page, opts[O_ARCHIVED].count > 0,
                      rows, &more);
    if (rc != CLI_EXIT_OK)
        goto out;
    /* Drop the hidden columns. */
    while (json_array_size(fields) > ncols) {
        size_t last = json_array_size(fields) - 1;
        json_array_remove(fields, last);
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row) json_array_remove(row, last);
    }
    if (cli->json) {
        json_t *out = json_pack("{s:O, s:O, s:b}", "fields", fields, "rows", rows, "more", more);
        cli_print_json(out);
        json_decref(out);
    } else {
        print_table(fields, rows, ncols, opts[O_NO_HEADERS].count == 0);
    }
    rc = missing ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
    json_decref(fields);
    json_decref(status);
    json_decref(rows);
    json_decref(ids);
    cli_opts_free(opts);
    free(pos);
    return rc;
}

/* Every field info shows, in this order. */
static const char *const info_fields[] = {
    "id",     "status",   "priority", "archived", "received_ts", "start_ts",
    "end_ts", "ops",      "opstatus", "opresult", "oplog",       "opstart",
    "opexec", "opend",    "oppriority", "summary", "worker", "opworker", "opattempt",
    "owner",
};
enum { F_ID, F_STATUS, F_PRIO, F_ARCHIVED, F_RECV, F_START, F_END, F_OPS, F_OPSTATUS,
       F_OPRESULT, F_OPLOG, F_OPSTART, F_OPEXEC, F_OPEND, F_OPPRIO, F_SUMMARY, F_WORKER,
       F_OPWORKER, F_OPATTEMPT, F_OWNER, F__COUNT };

static void print_ts_line(const char *indent, const char *label, const json_t *ts,
                          const json_t *since)
{
    char buf[64];
    printf("%s%-18s %s", indent, label, cli_fmt_ts(ts, buf, sizeof buf));
    double d = since ? cli_ts_diff(since, ts) : -1;
    if (d >= 0)
        printf(" (delta %.6fs)", d);
    putchar('\n');
}

static void print_json_line(const char *indent, const char *label, const json_t *v)
{
    char *s = cli_json_text(v, false);
    printf("%s%s %s\n", indent, label, s ? s : "?");
    free(s);
}

static void print_prio(const char *indent, const json_t *v)
{
    json_t *named = cli_priority_names(v);
    char *s = cli_fmt_value(named);
    printf("%sPriority: %s\n", indent, s ? s : "?");
    free(s);
    json_decref(named);
}

static void print_job_info(const json_t *row)
{
    #define F(i) json_array_get(row, i)
    char *s;
    printf("Job ID: %lld\n", (long long)json_integer_value(F(F_ID)));
    printf("  Status: %s\n", json_string_value(F(F_STATUS)));
    if (json_is_string(F(F_WORKER))) /* its current opcode is a worker's */
        printf("  Worker: %s\n", json_string_value(F(F_WORKER)));
    print_prio("  ", F(F_PRIO));
    printf("  Archived: %s\n", json_is_true(F(F_ARCHIVED)) ? "yes" : "no");
    printf("  Owner: %s\n", json_is_string(F(F_OWNER)) ? json_string_value(F(F_OWNER))
                                                      : "(not recorded)");
    print_ts_line("  ", "Received:", F(F_RECV), NULL);
    print_ts_line("  ", "Processing start:", F(F_START), F(F_RECV));
    print_ts_line("  ", "Processing end:", F(F_END), F(F_START));
    double total = cli_ts_diff(F(F_RECV), F(F_END));
    if (total >= 0)
        printf("  Total time: %.6fs\n", total);
    printf("  Opcodes:\n");
    for (size_t i = 0; i < json_array_size(F(F_OPS)); i++) {
        json_t *op = json_array_get(F(F_OPS), i);
        json_t *name = json_object_get(op, "op");
        printf("    Opcode %zu: %s\n", i, json_is_string(name) ? json_string_value(name) : "?");
        s = cli_fmt_value(json_array_get(F(F_OPSTATUS), i));
        printf("      Status: %s\n", s);
        free(s);
        print_prio("      ", json_array_get(F(F_OPPRIO), i));
        json_t *worker = json_array_get(F(F_OPWORKER), i);
        if (json_is_string(worker))
            printf("      Worker: %s (attempt %lld)\n", json_string_value(worker),
                   (long long)json_integer_value(json_array_get(F(F_OPATTEMPT), i)));
        s = cli_fmt_value(json_array_get(F(F_SUMMARY), i));
        printf("      Summary: %s\n", s);
        free(s);
        json_t *args = json_object_get(op, "args");
        print_json_line("      ", "Args:", args ? args : json_object());
        json_t *deps = json_object_get(op, "depends");
        if (json_array_size(deps))
            print_json_line("      ", "Depends:", deps);
        print_ts_line("      ", "Processing start:", json_array_get(F(F_OPSTART), i), NULL);
        print_ts_line("      ", "Execution start:", json_array_get(F(F_OPEXEC), i),
                      json_array_get(F(F_OPSTART), i));
        print_ts_line("      ", "Processing end:", json_array_get(F(F_OPEND), i),
                      json_array_get(F(F_OPEXEC), i));
        json_t *res = json_array_get(F(F_OPRESULT), i);
        print_json_line("      ", "Result:", res ? res : json_null());
        json_t *log = json_array_get(F(F_OPLOG), i);
        if (json_array_size(log) == 0) {
            printf("      Execution log: none\n");
            continue;
        }
        printf("      Execution log:\n");
        size_t j;
        json_t *entry;
        json_array_foreach(log, j, entry) {
            s = cli_fmt_log_entry(entry);
            printf("        %s\n", s ? s : "?");
            free(s);
        }
    }
    #undef F
}

int cmd_info(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos, rc;
    bool done;
    json_t *ids = json_array(), *fields = json_array(), *res = NULL;
    rc = cli_parse(cli, argc, argv, NULL, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos == 0) {
        rc = cli_usage(cli, "missing job ID");
        goto out;
    }
    for (int i = 0; i < npos; i++) {
        uint64_t id;
        if (cli_parse_job_id(pos[i], &id) < 0) {
            rc = cli_usage(cli, "invalid job ID '%s'", pos[i]);
            goto out;
        }
        json_array_append_new(ids, json_integer((json_int_t)id));
    }
    for (size_t i = 0; i < F__COUNT; i++)
        json_array_append_new(fields, json_string(info_fields[i]));
    jobq_client_t *c = cli_client(cli);
    if (!c) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    res = jobq_query_jobs(c, ids, fields, NULL, 0, 0, false, cli->timeout_ms);
    if (!res) {
        rc = cli_call_failed(cli);
        goto out;
    }
    json_t *rows = json_object_get(res, "rows");
    json_t *out_list = json_array();
    rc = CLI_EXIT_OK;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        if (json_array_size(row) != F__COUNT) {
            cli_error(cli, "the daemon's reply has %zu fields per row, not %d",
                      json_array_size(row), F__COUNT);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (!json_is_string(json_array_get(row, F_STATUS))) {
            cli_error(cli, "job %lld not found",
                      (long long)json_integer_value(json_array_get(ids, i)));
            rc = CLI_EXIT_FAIL;
            continue;
        }
        if (cli->json) {
            json_t *obj = json_object();
            for (size_t f = 0; f < F__COUNT; f++)
                json_object_set(obj, info_fields[f], json_array_get(row, f));
            json_array_append_new(out_list, obj);
        } else {
            if (i > 0)
                putchar('\n');
            print_job_info(row);
        }
    }
    if (cli->json)
        cli_print_json(out_list);
    json_decref(out_list);
out:
    json_decref(ids);
    json_decref(fields);
    json_decref(res);
    free(pos);
    return rc;
}

/* Prints rows of [left, right] text pairs with the left column aligned. */
static void print_pairs(const char *indent, char **left, char **right, size_t n)
{
    int width = 0;
    for (size_t i = 0; i < n; i++) {
        int w = (int)strlen(left[i]);
        width = w > width ? w : width;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s%-*s  %s\n", indent, width, left[i], right[i]);
}

/* Prints list_fields' answer: one "NAME  DESCRIPTION" line per field. */
static void print_fields(const json_t *r)
{
    size_t n = json_array_size(r);
    char **left = calloc(n + 1, sizeof *left), **right = calloc(n + 1, sizeof *right);
    for (size_t i = 0; left && right && i < n; i++) {
        json_t *f = json_array_get(r, i);
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *desc = json_string_value(json_object_get(f, "description"));
        left[i] = (char *)(name ? name : "?");
        right[i] = (char *)(desc ? desc : "");
    }
    if (left && right)
        print_pairs("", left, right, n);
    free(left);
    free(right);
}

/* A command without arguments that shows one of the daemon's lists: its
 * JSON with --json, else print(list). */
static int run_listing(cli_t *cli, int argc, char **argv,
                       json_t *(*call)(jobq_client_t *, int), void (*print)(const json_t *))
{
    char **pos;
    int npos, rc;
    bool done;
    json_t *r = NULL;
    rc = cli_parse(cli, argc, argv, NULL, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos) {
        rc = cli_usage(cli, "unexpected argument '%s'", pos[0]);
        goto out;
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (!(r = call(cli->client, cli->timeout_ms))) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json)
        cli_print_json(r);
    else
        print(r);
    rc = CLI_EXIT_OK;
out:
    json_decref(r);
    free(pos);
    return rc;
}

int cmd_list_fields(cli_t *cli, int argc, char **argv)
{
    return run_listing(cli, argc, argv, jobq_list_fields, print_fields);
}

/* Prints list_opcodes' answer: per opcode "NAME: DESCRIPTION", then one
 * line per argument "NAME  TYPE, required|default VALUE  DESCRIPTION". */
static void print_opcodes(const json_t *ops)
{
    size_t i;
    json_t *op;
    json_array_foreach(ops, i, op) {
        const char *name = json_string_value(json_object_get(op, "name"));
        const char *desc = json_string_value(json_object_get(op, "description"));
        printf("%s: %s\n", name ? name : "?", desc && *desc ? desc : "(no description)");
        json_t *args = json_object_get(op, "args");
        size_t n = json_array_size(args);
        if (n == 0) {
            printf("    (no arguments)\n");
            continue;
        }
        char **left = calloc(n, sizeof *left), **right = calloc(n, sizeof *right);
        for (size_t k = 0; left && right && k < n; k++) {
            json_t *a = json_array_get(args, k);
            const char *an = json_string_value(json_object_get(a, "name"));
            const char *type = json_string_value(json_object_get(a, "type"));
            const char *adesc = json_string_value(json_object_get(a, "description"));
            json_t *def = json_object_get(a, "default");
            char *defs = json_is_null(def) || !def ? NULL : cli_json_text(def, true);
            int rc1, rc2;
            if (json_is_true(json_object_get(a, "required")))
                rc1 = asprintf(&left[k], "%s (%s, required)", an ? an : "?", type ? type : "?");
            else if (defs)
                rc1 = asprintf(&left[k], "%s (%s, default %s)", an ? an : "?", type ? type : "?",
                               defs);
            else
                rc1 = asprintf(&left[k], "%s (%s)", an ? an : "?", type ? type : "?");
            rc2 = asprintf(&right[k], "%s", adesc ? adesc : "");
            if (rc1 < 0)
                left[k] = NULL;
            if (rc2 < 0)
                right[k] = NULL;
            free(defs);
        }
        bool ok = left && right;
        for (size_t k = 0; ok && k < n; k++)
            ok = left[k] && right[k];
        if (ok)
            print_pairs("    ", left, right, n);
        for (size_t k = 0; left && right && k < n; k++) {
            free(left[k]);
            free(right[k]);
        }
        free(left);
        free(right);
    }
}

int cmd_list_opcodes(cli_t *cli, int argc, char **argv)
{
    return run_listing(cli, argc, argv, jobq_list_opcodes, print_opcodes);
}

void cli_help_opcodes(cli_t *cli)
{
    /* Help must never fail nor print errors for a daemon that is away. */
    if (!cli->client && (cli->client = jobq_client_new(cli->endpoint)) &&
        jobq_client_set_keys(cli->client, cli->key, cli->server_key) < 0)
        jobq_client_destroy(&cli->client);
    if (!cli->client)
        return;
    int wait_ms = cli->timeout_ms < CLI_HELP_DAEMON_TIMEOUT_MS ? cli->timeout_ms
                                                               : CLI_HELP_DAEMON_TIMEOUT_MS;
    json_t *r = jobq_list_opcodes(cli->client, wait_ms);
    if (!r)
        return;
    printf("\nOpcodes of the daemon at %s ('jobq list-opcodes'):\n", cli->endpoint);
    print_opcodes(r);
    json_decref(r);
}
