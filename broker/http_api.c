/* http_api.c: the JSON API the dashboard uses (docs/dashboard.md): stats,
 * pages of jobs, one job, the workers, the session, the actions, and
 * /metrics. Each method runs through jq_dispatch as the caller, so roles
 * and job ownership apply as over ZeroMQ; answers showing what the store
 * has not saved yet are held (jq_http_answer). HTTP thread only. */
#include "http_int.h"
#include "metrics.h"
#include "workers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static unsigned http_status_of(jobq_code_t code)
{
    switch (code) {
    case JOBQ_ERR_NONE:
        return MHD_HTTP_OK;
    case JOBQ_ERR_PERMISSION_DENIED:
        return MHD_HTTP_FORBIDDEN;
    case JOBQ_ERR_MALFORMED:
    case JOBQ_ERR_BAD_ARGUMENT:
    case JOBQ_ERR_INVALID_PRIORITY:
    case JOBQ_ERR_UNKNOWN_FIELD:
        return MHD_HTTP_BAD_REQUEST;
    case JOBQ_ERR_STORE_FAILED:
    case JOBQ_ERR_BUSY:
    case JOBQ_ERR_SHUTTING_DOWN:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        return MHD_HTTP_CONFLICT;
    }
}

/* An error reply from the daemon, as the API's JSON. */
static enum MHD_Result call_error(struct MHD_Connection *c, const jq_http_reply_t *r)
{
    return jq_http_error(c, http_status_of(r->code), jobq_code_name(r->code), r->message);
}

/* Writes `"name": value` of a query row. */
static void row_field(FILE *f, const msgpack_object *fields, const msgpack_object *row,
                      uint32_t i, bool first)
{
    if (!first)
        fputc(',', f);
    jq_json_msgpack(f, &fields->via.array.ptr[i]);
    fputc(':', f);
    jq_json_msgpack(f, &row->via.array.ptr[i]);
}

static void rows_as_objects(FILE *f, const msgpack_object *result, uint64_t *last_id,
                            size_t *nrows)
{
    const msgpack_object *fields = wire_map_get(result, "fields");
    const msgpack_object *rows = wire_map_get(result, "rows");
    *nrows = 0;
    fputc('[', f);
    if (!fields || !rows || fields->type != MSGPACK_OBJECT_ARRAY ||
        rows->type != MSGPACK_OBJECT_ARRAY) {
        fputc(']', f);
        return;
    }
    for (uint32_t r = 0; r < rows->via.array.size; r++) {
        const msgpack_object *row = &rows->via.array.ptr[r];
        if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size != fields->via.array.size)
            continue;
        fputs(*nrows ? ",{" : "{", f);
        for (uint32_t i = 0; i < fields->via.array.size; i++) {
            row_field(f, fields, row, i, i == 0);
            if (wire_str_eq(&fields->via.array.ptr[i], "id") &&
                row->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                *last_id = row->via.array.ptr[i].via.u64;
        }
        fputc('}', f);
        (*nrows)++;
    }
    fputc(']', f);
}

typedef struct {
    const char *const *fields;
    size_t nfields;
    const uint64_t *ids;
    size_t nids;
    const char *const *statuses;
    size_t nstatuses;
    uint64_t after_id;
    uint64_t limit;
    bool archived;
} query_args_t;

static void pack_query(msgpack_packer *pk, const void *ctx)
{
    const query_args_t *q = ctx;
    msgpack_pack_map(pk, 2 + (q->nids ? 1 : 0) + (q->nstatuses ? 1 : 0) +
                             (q->after_id ? 1 : 0) + (q->limit ? 1 : 0));
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, q->nfields);
    for (size_t i = 0; i < q->nfields; i++)
        wire_pack_cstr(pk, q->fields[i]);
    wire_pack_cstr(pk, "archived");
    if (q->archived)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    if (q->nids) {
        wire_pack_cstr(pk, "ids");
        msgpack_pack_array(pk, q->nids);
        for (size_t i = 0; i < q->nids; i++)
            msgpack_pack_uint64(pk, q->ids[i]);
    }
    if (q->nstatuses) {
        wire_pack_cstr(pk, "status");
        msgpack_pack_array(pk, q->nstatuses);
        for (size_t i = 0; i < q->nstatuses; i++)
            wire_pack_cstr(pk, q->statuses[i]);
    }
    if (q->after_id) {
        wire_pack_cstr(pk, "after_id");
        msgpack_pack_uint64(pk, q->after_id);
    }
    if (q->limit) {
        wire_pack_cstr(pk, "limit");
        msgpack_pack_uint64(pk, q->limit);
    }
}

static const char *const job_fields[] = {
    "id", "status", "priority", "archived", "ops", "summary", "opstatus", "opresult",
    "oplog", "opstart", "opexec", "opend", "worker", "opworker", "opattempt", "owner",
    "received_ts", "start_ts", "end_ts", "change_serial", "log_serial"};

/* The opcodes' logs, newest JQ_HTTP_JOB_LOG_SHOWN entries only; returns
 * how many were left out. */
static uint64_t write_oplog(FILE *f, const msgpack_object *oplog)
{
    if (oplog->type != MSGPACK_OBJECT_ARRAY) {
        jq_json_msgpack(f, oplog);
        return 0;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < oplog->via.array.size; i++)
        if (oplog->via.array.ptr[i].type == MSGPACK_OBJECT_ARRAY)
            total += oplog->via.array.ptr[i].via.array.size;
    uint64_t skip = total > JQ_HTTP_JOB_LOG_SHOWN ? total - JQ_HTTP_JOB_LOG_SHOWN : 0;
    uint64_t left_out = skip;
    fputc('[', f);
    for (uint32_t i = 0; i < oplog->via.array.size; i++) {
        const msgpack_object *op = &oplog->via.array.ptr[i];
        if (i)
            fputc(',', f);
        if (op->type != MSGPACK_OBJECT_ARRAY) {
            jq_json_msgpack(f, op);
            continue;
        }
        uint32_t from = skip >= op->via.array.size ? op->via.array.size : (uint32_t)skip;
        skip -= from;
        fputc('[', f);
        for (uint32_t k = from; k < op->via.array.size; k++) {
            if (k > from)
                fputc(',', f);
            jq_json_msgpack(f, &op->via.array.ptr[k]);
        }
        fputc(']', f);
    }
    fputc(']', f);
    return left_out;
}

enum MHD_Result jq_http_job_error(struct MHD_Connection *c, int rc)
{
    if (rc == 2)
        return jq_http_error(c, MHD_HTTP_FORBIDDEN, "PermissionDenied",
                             "this role may not read jobs");
    if (rc == 1)
        return jq_http_error(c, MHD_HTTP_NOT_FOUND, "UnknownJob", "no such job");
    return jq_http_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal", "query failed");
}

int jq_http_job_json(jq_http_t *h, const jq_identity_t *who, uint64_t id, FILE *f,
                     uint64_t *change_serial, uint64_t *ticket)
{
    query_args_t q = {.fields = job_fields, .nfields = sizeof job_fields / sizeof *job_fields,
                      .ids = &id, .nids = 1, .archived = true};
    jq_http_reply_t r;
    if (jq_http_call(h->d, who, "query_jobs", pack_query, &q, &r) < 0)
        return -1;
    int rc = -1;
    const msgpack_object *rows = r.ok ? wire_map_get(r.result, "rows") : NULL;
    const msgpack_object *fields = r.ok ? wire_map_get(r.result, "fields") : NULL;
    if (rows && fields && rows->type == MSGPACK_OBJECT_ARRAY && rows->via.array.size == 1 &&
        fields->type == MSGPACK_OBJECT_ARRAY) {
        const msgpack_object *row = &rows->via.array.ptr[0];
        /* An unknown id answers a row of nils but the id. */
        rc = 1;
        for (uint32_t i = 0; row->type == MSGPACK_OBJECT_ARRAY &&
                             i < row->via.array.size && i < fields->via.array.size; i++) {
            if (wire_str_eq(&fields->via.array.ptr[i], "status") &&
                row->via.array.ptr[i].type == MSGPACK_OBJECT_STR)
                rc = 0;
            if (wire_str_eq(&fields->via.array.ptr[i], "change_serial") &&
                row->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                *change_serial = row->via.array.ptr[i].via.u64;
        }
        if (rc == 0) {
            uint64_t omitted = 0;
            fputc('{', f);
            for (uint32_t i = 0; i < fields->via.array.size; i++) {
                if (wire_str_eq(&fields->via.array.ptr[i], "oplog")) {
                    fputs(i ? ",\"oplog\":" : "\"oplog\":", f);
                    omitted = write_oplog(f, &row->via.array.ptr[i]);
                } else {
                    row_field(f, fields, row, i, i == 0);
                }
            }
            fprintf(f, ",\"log_omitted\":%llu}", (unsigned long long)omitted);
        }
    } else if (!r.ok && r.code == JOBQ_ERR_PERMISSION_DENIED) {
        rc = 2;
    }
    *ticket = r.ticket;
    jq_http_reply_destroy(&r);
    return rc;
}

bool jq_http_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

enum MHD_Result jq_api_jobs(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who)
{
    struct MHD_Connection *c = rq->conn;
    static const char *const list_fields[] = {"id",          "status",   "priority",
                                              "summary",     "owner",    "received_ts",
                                              "start_ts",    "end_ts",   "worker"};
    query_args_t q = {.fields = list_fields, .nfields = sizeof list_fields / sizeof *list_fields,
                      .limit = 50};
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    if (v && (!jq_http_parse_u64(v, &q.limit) || q.limit < 1 || q.limit > 500))
        return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "limit: 1 to 500");
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after_id");
    if (v && !jq_http_parse_u64(v, &q.after_id))
        return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "after_id: a job id");
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "archived");
    q.archived = v && !strcmp(v, "1");
    char statuses[128] = "";
    const char *st[JQ_STATUS__COUNT];
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "status");
    if (v && *v) {
        snprintf(statuses, sizeof statuses, "%s", v);
        char *save = NULL;
        for (char *tok = strtok_r(statuses, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            jq_status_t s;
            if (q.nstatuses == JQ_STATUS__COUNT || jq_status_parse(tok, strlen(tok), &s) < 0)
                return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument",
                                     "status: a comma-separated list of job statuses");
            st[q.nstatuses++] = tok;
        }
        q.statuses = st;
    }
    jq_http_reply_t r;
    if (jq_http_call(h->d, who, "query_jobs", pack_query, &q, &r) < 0)
        return jq_http_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal", "query failed");
    if (!r.ok) {
        enum MHD_Result rc = call_error(c, &r);
        jq_http_reply_destroy(&r);
        return rc;
    }
    jq_body_t b;
    if (jq_http_body_open(&b) < 0) {
        jq_http_reply_destroy(&r);
        return MHD_NO;
    }
    uint64_t last = 0;
    size_t n;
    fputs("{\"jobs\":", b.f);
    rows_as_objects(b.f, r.result, &last, &n);
    const msgpack_object *more = wire_map_get(r.result, "more");
    if (more && more->type == MSGPACK_OBJECT_BOOLEAN && more->via.boolean && n)
        fprintf(b.f, ",\"next_after_id\":%llu}", (unsigned long long)last);
    else
        fputs(",\"next_after_id\":null}", b.f);
    uint64_t ticket = r.ticket;
    jq_http_reply_destroy(&r);
    return jq_http_answer(h, rq, MHD_HTTP_OK, &b, ticket);
}

enum MHD_Result jq_api_job(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who)
{
    struct MHD_Connection *c = rq->conn;
    uint64_t id;
    if (!jq_http_parse_u64(MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id"), &id) || !id)
        return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "id: a job id");
    jq_body_t b;
    if (jq_http_body_open(&b) < 0)
        return MHD_NO;
    fputs("{\"job\":", b.f);
    uint64_t serial = 0, ticket = 0;
    int rc = jq_http_job_json(h, who, id, b.f, &serial, &ticket);
    if (rc != 0) {
        jq_http_body_discard(&b);
        return jq_http_job_error(c, rc);
    }
    fputs("}", b.f);
    return jq_http_answer(h, rq, MHD_HTTP_OK, &b, ticket);
}

/* stats, or anything else whose result is shown as it is. */
enum MHD_Result jq_api_plain(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                                 const char *method)
{
    jq_http_reply_t r;
    if (jq_http_call(h->d, who, method, NULL, NULL, &r) < 0)
        return jq_http_error(rq->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal",
                             "request failed");
    if (!r.ok) {
        enum MHD_Result rc = call_error(rq->conn, &r);
        jq_http_reply_destroy(&r);
        return rc;
    }
    jq_body_t b;
    if (jq_http_body_open(&b) < 0) {
        jq_http_reply_destroy(&r);
        return MHD_NO;
    }
    jq_json_msgpack(b.f, r.result);
    uint64_t ticket = r.ticket;
    jq_http_reply_destroy(&r);
    return jq_http_answer(h, rq, MHD_HTTP_OK, &b, ticket);
}

enum MHD_Result jq_api_session(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                                   asker_t asker, bool cookie_refused)
{
    jq_body_t b;
    if (jq_http_body_open(&b) < 0)
        return MHD_NO;
    fputs("{\"role\":", b.f);
    jq_json_cstr(b.f, asker == ASK_NOBODY ? "none" : jq_role_name(who->role));
    fputs(",\"owner\":", b.f);
    jq_json_cstr(b.f, asker == ASK_NOBODY ? "" : who->owner);
    fprintf(b.f, ",\"csrf\":\"%s\",\"authenticated\":%s,\"login_required\":%s,"
                 "\"token_refused\":%s}",
            h->csrf, asker == ASK_TOKEN ? "true" : "false",
            asker == ASK_NOBODY ? "true" : "false", cookie_refused ? "true" : "false");
    return jq_http_answer(h, rq, MHD_HTTP_OK, &b, 0);
}

enum MHD_Result jq_api_workers(jq_http_t *h, jq_req_t *rq)
{
    jq_body_t b;
    if (jq_http_body_open(&b) < 0)
        return MHD_NO;
    if (jq_hub_snapshot_json(h->d->hub, b.f) < 0) {
        jq_http_body_discard(&b);
        return jq_http_error(rq->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal",
                             "no snapshot of the workers");
    }
    return jq_http_answer(h, rq, MHD_HTTP_OK, &b, 0);
}

enum MHD_Result jq_api_metrics(jq_http_t *h, jq_req_t *rq)
{
    jq_body_t b;
    if (jq_http_body_open(&b) < 0)
        return MHD_NO;
    if (jq_metrics_render(h->d, b.f) < 0) {
        jq_http_body_discard(&b);
        return jq_http_error(rq->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal",
                             "metrics could not be rendered");
    }
    fclose(b.f);
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(b.buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    jq_http_headers(r, false);
    return jq_http_queue(rq->conn, MHD_HTTP_OK, r);
}

/* POST /api/cancel, /api/priority, /api/archive: {"id": N[, "priority": P]}. */
typedef struct {
    uint64_t id;
    int64_t priority;
    bool with_priority;
} action_args_t;

static void pack_action(msgpack_packer *pk, const void *ctx)
{
    const action_args_t *a = ctx;
    msgpack_pack_map(pk, a->with_priority ? 2 : 1);
    wire_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, a->id);
    if (a->with_priority) {
        wire_pack_cstr(pk, "priority");
        msgpack_pack_int64(pk, a->priority);
    }
}

enum MHD_Result jq_api_action(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                                  const char *method)
{
    struct MHD_Connection *c = rq->conn;
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ctype || strncasecmp(ctype, "application/json", 16) || !jq_http_csrf_ok(h, c, NULL))
        return jq_http_error(c, MHD_HTTP_FORBIDDEN, "CSRF",
                             "a change needs the page's X-CSRF-Token header (GET /api/session) "
                             "and a JSON body, from this origin");
    static const char *const keys[] = {"id", "priority"};
    int64_t vals[2];
    bool present[2];
    bool want_prio = !strcmp(method, "change_job_priority");
    if (!rq->body ||
        jq_json_flat_ints(rq->body, rq->body_len, keys, 2, vals, present) < 0 || !present[0] ||
        vals[0] < 1 || present[1] != want_prio)
        return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument",
                             want_prio ? "expected {\"id\": N, \"priority\": -10|0|10}"
                                       : "expected {\"id\": N}");
    action_args_t a = {.id = (uint64_t)vals[0], .priority = vals[1], .with_priority = want_prio};
    jq_http_reply_t r;
    if (jq_http_call(h->d, who, method, pack_action, &a, &r) < 0)
        return jq_http_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal", "request failed");
    jq_body_t b;
    if (jq_http_body_open(&b) < 0) {
        jq_http_reply_destroy(&r);
        return MHD_NO;
    }
    unsigned status = http_status_of(r.code);
    if (r.ok) {
        fputs("{\"ok\":true,\"result\":", b.f);
        jq_json_msgpack(b.f, r.result);
        fputs("}", b.f);
    } else {
        fputs("{\"error\":", b.f);
        jq_json_cstr(b.f, jobq_code_name(r.code));
        fputs(",\"message\":", b.f);
        jq_json_cstr(b.f, r.message);
        fputs("}", b.f);
    }
    uint64_t ticket = r.ticket;
    jq_http_reply_destroy(&r);
    return jq_http_answer(h, rq, status, &b, ticket);
}

