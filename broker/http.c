/* http.c: jobqd's HTTP endpoint (--http): the server thread, who may do
 * what, the pages and the JSON API. The event stream, the dashboard's ticks
 * and the SSE streams are in http_live.c.
 *
 * One thread runs libmicrohttpd in its external-poll mode beside a SUB
 * socket, so browsers, scrapes and the event stream share one zmq_poll and
 * the thread count never depends on how many are connected. Data comes
 * from the request path (jq_dispatch as the caller's identity) and the
 * event stream: the same rules as every client, committed-before-visible
 * included — an answer showing state the store has not made durable is
 * held (the connection suspended) until it is. */
#include "http_int.h"
#include "log.h"
#include "metrics.h"
#include "paths.h"
#include "workers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#ifndef JQ_WEB_DIR
#define JQ_WEB_DIR "/usr/share/jobq/web"
#endif
#ifndef JQ_WEB_SRC_DIR
#define JQ_WEB_SRC_DIR JQ_WEB_DIR
#endif
#ifndef JQ_CHARTJS_PATH
#define JQ_CHARTJS_PATH "/usr/share/javascript/chart.js/chart.min.js"
#endif

#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

int jq_http_addr_parse(const char *text, jq_http_addr_t *out, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(text, ':');
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    if (!colon || hlen == 0 || hlen >= sizeof host || !colon[1]) {
        snprintf(err, errlen, "--http: expected ADDRESS:PORT (e.g. 127.0.0.1:8080), got '%s'",
                 text);
        return -1;
    }
    memcpy(host, text, hlen);
    host[hlen] = 0;
    if (host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = 0;
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || colon[1] == '-' || port > 65535) {
        snprintf(err, errlen, "--http %s: the port must be 0 to 65535", text);
        return -1;
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai) {
        snprintf(err, errlen, "--http %s: '%s' is not a numeric IPv4 or [IPv6] address "
                              "(names are not resolved)", text, host);
        return -1;
    }
    memset(out, 0, sizeof *out);
    memcpy(&out->sa, ai->ai_addr, ai->ai_addrlen);
    out->len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (out->sa.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&out->sa;
        in->sin_port = htons((uint16_t)port);
        out->loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->sa;
        in6->sin6_port = htons((uint16_t)port);
        out->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                        (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
                         in6->sin6_addr.s6_addr[12] == 127);
    }
    return 0;
}

/* ---- responses ---------------------------------------------------------- */

void jq_http_headers(struct MHD_Response *r, bool page)
{
    MHD_add_response_header(r, "Content-Security-Policy", CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin");
    MHD_add_response_header(r, "Cache-Control", page ? "no-cache" : "no-store");
}

struct MHD_Response *jq_http_json_response(char *json, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, json, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(json);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
    jq_http_headers(r, false);
    return r;
}

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
    if (!r)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result jq_http_error(struct MHD_Connection *c, unsigned status, const char *code,
                              const char *message)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return MHD_NO;
    fputs("{\"error\":", f);
    jq_json_cstr(f, code);
    fputs(",\"message\":", f);
    jq_json_cstr(f, message);
    fputs("}", f);
    fclose(f);
    return queue(c, status, jq_http_json_response(buf, len));
}

/* A JSON body being written, then answered (held while ticket is ahead of
 * the store). */
typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} body_t;

static int body_open(body_t *b)
{
    b->buf = NULL;
    b->len = 0;
    b->f = open_memstream(&b->buf, &b->len);
    return b->f ? 0 : -1;
}

static void body_discard(body_t *b)
{
    if (b->f)
        fclose(b->f);
    free(b->buf);
    b->f = NULL;
    b->buf = NULL;
}

/* Answers now, or suspends the connection until the store is durable up
 * to ticket (the thread's loop resumes it; MHD then calls the handler
 * again and the ready response goes). */
static enum MHD_Result answer(jq_http_t *h, jq_req_t *rq, unsigned status, body_t *b,
                              uint64_t ticket)
{
    fclose(b->f);
    b->f = NULL;
    struct MHD_Response *r = jq_http_json_response(b->buf, b->len);
    b->buf = NULL;
    if (!r)
        return MHD_NO;
    if (!ticket || ticket <= jq_store_durable(h->d->store))
        return queue(rq->conn, status, r);
    rq->ready = r;
    rq->ready_status = status;
    rq->ticket = ticket;
    rq->next_held = h->held;
    h->held = rq;
    MHD_suspend_connection(rq->conn);
    return MHD_YES;
}

/* Held answers the store has made good go; those in a failed batch are
 * replaced by the error a client would get. */
static void release_held(jq_http_t *h)
{
    if (!h->held)
        return;
    char why[256] = "";
    uint64_t failed = jq_store_failed(h->d->store, why, sizeof why);
    uint64_t durable = jq_store_durable(h->d->store);
    for (jq_req_t **pp = &h->held; *pp;) {
        jq_req_t *rq = *pp;
        if (rq->ticket > durable && rq->ticket > failed) {
            pp = &rq->next_held;
            continue;
        }
        if (rq->ticket > durable) {
            MHD_destroy_response(rq->ready);
            char *buf = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&buf, &len);
            if (f) {
                fputs("{\"error\":\"StoreFailed\",\"message\":", f);
                jq_json_cstr(f, why);
                fputs("}", f);
                fclose(f);
            }
            rq->ready = f ? jq_http_json_response(buf, len) : NULL;
            rq->ready_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        *pp = rq->next_held;
        rq->next_held = NULL;
        rq->ticket = 0;
        rq->resumed = true;
        MHD_resume_connection(rq->conn);
    }
}

/* ---- who is asking ------------------------------------------------------ */

static const char *bearer_token(struct MHD_Connection *c)
{
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (a && !strncasecmp(a, "Bearer ", 7))
        return a + 7;
    return NULL;
}

/* ---- sessions ----------------------------------------------------------- */

static jq_session_t *session_find(jq_http_t *h, const char *id)
{
    if (!id || strlen(id) != 64)
        return NULL;
    for (size_t i = 0; i < JQ_HTTP_SESSIONS; i++) {
        jq_session_t *se = &h->sessions[i];
        if (!se->token)
            continue;
        unsigned char diff = 0;
        for (size_t k = 0; k < 64; k++)
            diff |= (unsigned char)(se->id[k] ^ id[k]);
        if (!diff)
            return se;
    }
    return NULL;
}

static void session_end(jq_session_t *se)
{
    free(se->token);
    memset(se, 0, sizeof *se);
}

/* A new session for a verified token: a free slot, or the oldest one's. */
static jq_session_t *session_new(jq_http_t *h, const char *token)
{
    jq_session_t *slot = NULL;
    for (size_t i = 0; i < JQ_HTTP_SESSIONS; i++) {
        jq_session_t *se = &h->sessions[i];
        if (!se->token) {
            slot = se;
            break;
        }
        if (!slot || se->created_mono < slot->created_mono)
            slot = se;
    }
    unsigned char rnd[32];
    char *copy = strdup(token);
    if (!copy || getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        free(copy);
        return NULL;
    }
    session_end(slot);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(slot->id + 2 * i, 3, "%02x", rnd[i]);
    slot->token = copy;
    slot->expires_wall = jq_now_wall() + JQ_HTTP_SESSION_US;
    slot->created_mono = jq_now_mono();
    return slot;
}

static void sessions_free(jq_http_t *h)
{
    for (size_t i = 0; i < JQ_HTTP_SESSIONS; i++)
        session_end(&h->sessions[i]);
}

/* Who is asking. A bearer token that does not verify is answered 401 (a
 * program sent it); a cookie that does not (expired, its key removed) is
 * as good as none, so the page still loads and can log in again. */
typedef enum {
    ASK_TOKEN,     /* a valid token: its key's role */
    ASK_ANONYMOUS, /* no token where one is not needed: --http-role */
    ASK_NOBODY,    /* no token where one is needed: the page and login only */
} asker_t;

static int authenticate(jq_http_t *h, struct MHD_Connection *c, jq_identity_t *who,
                        asker_t *asker, bool *cookie_refused, enum MHD_Result *answered)
{
    const char *bearer = bearer_token(c);
    *cookie_refused = false;
    memset(who, 0, sizeof *who);
    if (bearer) {
        if (h->d->auth &&
            jq_auth_http_token(h->d->auth, bearer, strlen(bearer), jq_now_wall(), who) == 0) {
            *asker = ASK_TOKEN;
            return 0;
        }
        *answered = jq_http_error(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                                  "the token is not valid (expired, malformed, or its key "
                                  "was removed): make a new one with `jobq http-token`");
        return -1;
    }
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, h->cookie_name);
    if (cookie && *cookie) {
        jq_session_t *se = session_find(h, cookie);
        if (se && se->expires_wall > jq_now_wall() && h->d->auth &&
            jq_auth_http_token(h->d->auth, se->token, strlen(se->token), jq_now_wall(), who) ==
                0) {
            *asker = ASK_TOKEN;
            return 0;
        }
        if (se) /* its token no longer holds: the session is over */
            session_end(se);
        *cookie_refused = true;
        memset(who, 0, sizeof *who);
    }
    if ((!h->addr.loopback && !h->d->cfg.insecure) || h->d->cfg.http_role < 0) {
        *asker = ASK_NOBODY;
        return 0;
    }
    *asker = ASK_ANONYMOUS;
    who->role = (jq_role_t)h->d->cfg.http_role;
    snprintf(who->owner, sizeof who->owner, "http");
    return 0;
}

/* A page reached through a name that resolves to loopback only by the
 * attacker's DNS (rebinding) must not be served: on loopback the Host must
 * be a loopback name or the bound address. */
static bool host_ok(jq_http_t *h, struct MHD_Connection *c)
{
    if (!h->addr.loopback)
        return true;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (!host)
        return false;
    char name[300];
    snprintf(name, sizeof name, "%s", host);
    char *colon = name[0] == '[' ? strchr(name, ']') : strrchr(name, ':');
    if (name[0] == '[') {
        if (!colon)
            return false;
        colon[1] = 0;
    } else if (colon) {
        *colon = 0;
    }
    if (!strcasecmp(name, "localhost") || !strcmp(name, "[::1]"))
        return true;
    struct in_addr a4;
    return inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* A state-changing request must come from our own page: it carries the
 * run's CSRF token (which only a same-origin script can read), and a
 * browser that says where it comes from must say "same-origin". */
static bool csrf_ok(jq_http_t *h, struct MHD_Connection *c, const char *form_token)
{
    const char *site = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (site && strcmp(site, "same-origin") && strcmp(site, "none"))
        return false;
    const char *t = form_token;
    if (!t)
        t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    if (!t || strlen(t) != strlen(h->csrf))
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; t[i]; i++)
        diff |= (unsigned char)(t[i] ^ h->csrf[i]);
    return diff == 0;
}

/* ---- static files ------------------------------------------------------- */

static const struct {
    const char *url, *file, *type;
} statics[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/index.html", "index.html", "text/html; charset=utf-8"},
    {"/job.html", "job.html", "text/html; charset=utf-8"},
    {"/static/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8"},
    {"/static/job.js", "job.js", "text/javascript; charset=utf-8"},
    {"/static/common.js", "common.js", "text/javascript; charset=utf-8"},
    {"/static/dashboard.css", "dashboard.css", "text/css; charset=utf-8"},
    {"/static/chart.js", NULL, "text/javascript; charset=utf-8"},
};

static enum MHD_Result serve_static(jq_http_t *h, struct MHD_Connection *c, const char *url,
                                    bool *found)
{
    *found = false;
    for (size_t i = 0; i < sizeof statics / sizeof *statics; i++) {
        if (strcmp(url, statics[i].url))
            continue;
        *found = true;
        char path[JQ_PATH_BYTES + 64];
        if (statics[i].file)
            snprintf(path, sizeof path, "%s/%s", h->web_dir, statics[i].file);
        else
            snprintf(path, sizeof path, "%s", JQ_CHARTJS_PATH);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            if (fd >= 0)
                close(fd);
            char msg[JQ_PATH_BYTES + 128];
            snprintf(msg, sizeof msg, "%s is missing (%s)", path,
                     statics[i].file ? "the dashboard's files are not installed"
                                     : "install Debian's libjs-chart.js");
            return jq_http_error(c, MHD_HTTP_NOT_FOUND, "NotFound", msg);
        }
        struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
        if (!r) {
            close(fd);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", statics[i].type);
        jq_http_headers(r, true);
        return queue(c, MHD_HTTP_OK, r);
    }
    return MHD_NO;
}

/* ---- the API ------------------------------------------------------------ */

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

static bool parse_u64(const char *s, uint64_t *out)
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

static enum MHD_Result api_jobs(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who)
{
    struct MHD_Connection *c = rq->conn;
    static const char *const list_fields[] = {"id",          "status",   "priority",
                                              "summary",     "owner",    "received_ts",
                                              "start_ts",    "end_ts",   "worker"};
    query_args_t q = {.fields = list_fields, .nfields = sizeof list_fields / sizeof *list_fields,
                      .limit = 50};
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    if (v && (!parse_u64(v, &q.limit) || q.limit < 1 || q.limit > 500))
        return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "limit: 1 to 500");
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after_id");
    if (v && !parse_u64(v, &q.after_id))
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
    body_t b;
    if (body_open(&b) < 0) {
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
    return answer(h, rq, MHD_HTTP_OK, &b, ticket);
}

static enum MHD_Result api_job(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who)
{
    struct MHD_Connection *c = rq->conn;
    uint64_t id;
    if (!parse_u64(MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id"), &id) || !id)
        return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "id: a job id");
    body_t b;
    if (body_open(&b) < 0)
        return MHD_NO;
    fputs("{\"job\":", b.f);
    uint64_t serial = 0, ticket = 0;
    int rc = jq_http_job_json(h, who, id, b.f, &serial, &ticket);
    if (rc != 0) {
        body_discard(&b);
        if (rc == 2)
            return jq_http_error(c, MHD_HTTP_FORBIDDEN, "PermissionDenied",
                                 "this role may not read jobs");
        if (rc > 0)
            return jq_http_error(c, MHD_HTTP_NOT_FOUND, "UnknownJob", "no such job");
        return jq_http_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal", "query failed");
    }
    fputs("}", b.f);
    return answer(h, rq, MHD_HTTP_OK, &b, ticket);
}

/* stats, or anything else whose result is shown as it is. */
static enum MHD_Result api_plain(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
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
    body_t b;
    if (body_open(&b) < 0) {
        jq_http_reply_destroy(&r);
        return MHD_NO;
    }
    jq_json_msgpack(b.f, r.result);
    uint64_t ticket = r.ticket;
    jq_http_reply_destroy(&r);
    return answer(h, rq, MHD_HTTP_OK, &b, ticket);
}

static enum MHD_Result api_session(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                                   asker_t asker, bool cookie_refused)
{
    body_t b;
    if (body_open(&b) < 0)
        return MHD_NO;
    fputs("{\"role\":", b.f);
    jq_json_cstr(b.f, asker == ASK_NOBODY ? "none" : jq_role_name(who->role));
    fputs(",\"owner\":", b.f);
    jq_json_cstr(b.f, asker == ASK_NOBODY ? "" : who->owner);
    fprintf(b.f, ",\"csrf\":\"%s\",\"authenticated\":%s,\"login_required\":%s,"
                 "\"token_refused\":%s}",
            h->csrf, asker == ASK_TOKEN ? "true" : "false",
            asker == ASK_NOBODY ? "true" : "false", cookie_refused ? "true" : "false");
    return answer(h, rq, MHD_HTTP_OK, &b, 0);
}

static enum MHD_Result api_workers(jq_http_t *h, jq_req_t *rq)
{
    body_t b;
    if (body_open(&b) < 0)
        return MHD_NO;
    if (jq_hub_snapshot_json(h->d->hub, b.f) < 0) {
        body_discard(&b);
        return jq_http_error(rq->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal",
                             "no snapshot of the workers");
    }
    return answer(h, rq, MHD_HTTP_OK, &b, 0);
}

static enum MHD_Result serve_metrics(jq_http_t *h, jq_req_t *rq)
{
    body_t b;
    if (body_open(&b) < 0)
        return MHD_NO;
    if (jq_metrics_render(h->d, b.f) < 0) {
        body_discard(&b);
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
    return queue(rq->conn, MHD_HTTP_OK, r);
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

static enum MHD_Result api_action(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                                  const char *method)
{
    struct MHD_Connection *c = rq->conn;
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ctype || strncasecmp(ctype, "application/json", 16) || !csrf_ok(h, c, NULL))
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
    body_t b;
    if (body_open(&b) < 0) {
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
    return answer(h, rq, status, &b, ticket);
}

/* x-www-form-urlencoded value of name in body, decoded into out. */
static bool form_value(const char *body, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nlen && !memcmp(p, name, nlen) && p[nlen] == '=') {
            size_t o = 0;
            for (const char *q = p + nlen + 1; q < stop; q++) {
                char ch = *q;
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%' && stop - q > 2) {
                    char hex[3] = {q[1], q[2], 0};
                    ch = (char)strtol(hex, NULL, 16);
                    q += 2;
                }
                if (o + 1 >= outlen)
                    return false;
                out[o++] = ch;
            }
            out[o] = 0;
            return true;
        }
        p = stop + 1;
    }
    return false;
}

static enum MHD_Result redirect(struct MHD_Connection *c, const char *where, const char *cookie)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Location", where);
    if (cookie)
        MHD_add_response_header(r, "Set-Cookie", cookie);
    jq_http_headers(r, false);
    return queue(c, MHD_HTTP_SEE_OTHER, r);
}

/* POST /login (token=...&csrf=...) puts the token in an HttpOnly cookie:
 * the page's scripts never hold it. POST /logout takes it away. */
static enum MHD_Result login(jq_http_t *h, jq_req_t *rq, bool out)
{
    struct MHD_Connection *c = rq->conn;
    char csrf[80] = "";
    if (!rq->body || !form_value(rq->body, rq->body_len, "csrf", csrf, sizeof csrf) ||
        !csrf_ok(h, c, csrf))
        return jq_http_error(c, MHD_HTTP_FORBIDDEN, "CSRF",
                             "the form's csrf field does not match this run's");
    char cookie[200];
    if (out) {
        jq_session_t *se =
            session_find(h, MHD_lookup_connection_value(c, MHD_COOKIE_KIND, h->cookie_name));
        if (se)
            session_end(se);
        snprintf(cookie, sizeof cookie, "%s=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
                 h->cookie_name);
        return redirect(c, "/", cookie);
    }
    char token[1024];
    jq_identity_t who = {0};
    if (!form_value(rq->body, rq->body_len, "token", token, sizeof token) || !h->d->auth ||
        jq_auth_http_token(h->d->auth, token, strlen(token), jq_now_wall(), &who) < 0)
        return redirect(c, "/?login=failed", NULL);
    jq_session_t *se = session_new(h, token);
    if (!se)
        return jq_http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Internal", "no session");
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Strict",
             h->cookie_name, se->id, (long long)(JQ_HTTP_SESSION_US / 1000000));
    return redirect(c, "/", cookie);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    jq_http_t *h = cls;
    jq_req_t *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        rq->conn = c;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) { /* a body, in pieces */
        if (rq->body_len + *upload_size > JQ_HTTP_MAX_BODY) {
            rq->body_too_large = true;
        } else {
            char *nb = realloc(rq->body, rq->body_len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            memcpy(nb + rq->body_len, upload, *upload_size);
            rq->body = nb;
            rq->body_len += *upload_size;
            rq->body[rq->body_len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->resumed) { /* the store has caught up (or failed, or we stop) */
        struct MHD_Response *r = rq->ready;
        rq->ready = NULL;
        return r ? queue(c, rq->ready_status, r) : MHD_NO; /* never run twice */
    }
    if (h->stopping)
        return jq_http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "ShuttingDown",
                             "jobqd is stopping");
    if (!host_ok(h, c))
        return jq_http_error(c, MHD_HTTP_MISDIRECTED_REQUEST, "MisdirectedRequest",
                             "on a loopback address the Host must be localhost or a loopback "
                             "address");
    if (rq->body_too_large)
        return jq_http_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "TooLarge", "body over 64 KiB");
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if (post && !strcmp(url, "/login"))
        return login(h, rq, false);
    if (post && !strcmp(url, "/logout"))
        return login(h, rq, true);
    jq_identity_t who = {0};
    asker_t asker;
    bool cookie_refused;
    enum MHD_Result answered = MHD_NO;
    if (authenticate(h, c, &who, &asker, &cookie_refused, &answered) < 0)
        return answered;
    /* The page itself (public files), the session and the login are for
     * everyone; everything else for those who may. */
    if (get && !strcmp(url, "/api/session"))
        return api_session(h, rq, &who, asker, cookie_refused);
    bool found;
    if (get) {
        enum MHD_Result rc = serve_static(h, c, url, &found);
        if (found)
            return rc;
    }
    if (asker == ASK_NOBODY)
        return jq_http_error(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                             "this endpoint is not on loopback: every request needs a token "
                             "(Authorization: Bearer, or log in on the page; `jobq http-token`)");
    if (post) {
        if (!strcmp(url, "/api/cancel"))
            return api_action(h, rq, &who, "cancel_job");
        if (!strcmp(url, "/api/priority"))
            return api_action(h, rq, &who, "change_job_priority");
        if (!strcmp(url, "/api/archive"))
            return api_action(h, rq, &who, "archive_job");
    }
    if (!get) {
        return jq_http_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                             "GET, or POST to /api/cancel, /api/priority, /api/archive, "
                             "/login, /logout");
    }
    if (!strcmp(url, "/metrics"))
        return serve_metrics(h, rq);
    if (!strcmp(url, "/api/stats"))
        return api_plain(h, rq, &who, "stats");
    if (!strcmp(url, "/api/jobs"))
        return api_jobs(h, rq, &who);
    if (!strcmp(url, "/api/job"))
        return api_job(h, rq, &who);
    if (!strcmp(url, "/api/workers"))
        return api_workers(h, rq);
    if (!strcmp(url, "/events")) {
        uint64_t job = 0;
        const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "job");
        if (v && (!parse_u64(v, &job) || !job))
            return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "job: a job id");
        return jq_live_open(h, c, &who, job);
    }
    return jq_http_error(c, MHD_HTTP_NOT_FOUND, "NotFound", "no such page");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    jq_http_t *h = cls;
    jq_req_t *rq = *con_cls;
    if (!rq)
        return;
    for (jq_req_t **pp = &h->held; *pp; pp = &(*pp)->next_held)
        if (*pp == rq) {
            *pp = rq->next_held;
            break;
        }
    if (rq->ready)
        MHD_destroy_response(rq->ready);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    jq_log(JQ_LOG_DEBUG, "http: %s", line);
}

/* ---- the thread --------------------------------------------------------- */

static void *http_main(void *arg)
{
    jq_http_t *h = arg;
    pthread_setname_np(pthread_self(), "jobqd-http"); /* for top -H, ps -L */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int mhd_fd = info ? info->epoll_fd : -1;
    int64_t next_read = jq_now_mono();
    for (;;) {
        int64_t now = jq_now_mono();
        if (now >= next_read) /* all of it, a batch per turn */
            next_read = jq_live_read(h) == JQ_LIVE_BATCH ? now : now + JQ_LIVE_READ_US;
        int64_t wait_us = jq_live_work(h, now);
        release_held(h);
        MHD_run(h->mhd);
        if (next_read - now < wait_us)
            wait_us = next_read > now ? next_read - now : 0;
        MHD_UNSIGNED_LONG_LONG mhd_ms;
        if (MHD_get_timeout(h->mhd, &mhd_ms) == MHD_YES && (int64_t)mhd_ms * 1000 < wait_us)
            wait_us = (int64_t)mhd_ms * 1000;
        if (h->held || h->pending_tick) /* the store acknowledges in about a millisecond */
            wait_us = wait_us > 1000 ? 1000 : wait_us;
        zmq_pollitem_t items[2] = {{NULL, mhd_fd, ZMQ_POLLIN, 0},
                                   {NULL, h->stop_fd, ZMQ_POLLIN, 0}};
        long timeout_ms = (long)((wait_us + 999) / 1000);
        if (zmq_poll(items, 2, timeout_ms) < 0 && errno != EINTR)
            break;
        if (items[1].revents)
            break;
    }
    /* Stopping: no new connection, every request still coming is told so,
     * the streams end, and held answers go once the store (still running)
     * has saved what they show — for a while; what is left then is told
     * ShuttingDown, never shown unsaved. MHD must not stop with a
     * connection suspended. */
    h->stopping = true;
    MHD_socket lsock = MHD_quiesce_daemon(h->mhd);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    jq_live_close_all(h);
    int64_t deadline = jq_now_mono() + JQ_HTTP_STOP_US;
    while ((h->held || jq_live_streams_open(h)) && jq_now_mono() < deadline) {
        release_held(h);
        MHD_run(h->mhd);
        zmq_pollitem_t item = {NULL, mhd_fd, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 1);
    }
    for (jq_req_t *rq = h->held; rq; rq = rq->next_held) {
        if (rq->ready)
            MHD_destroy_response(rq->ready);
        rq->ready = NULL;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (f) {
            fputs("{\"error\":\"ShuttingDown\",\"message\":\"jobqd stopped before what this "
                  "answer shows was saved\"}", f);
            fclose(f);
            rq->ready = jq_http_json_response(buf, len);
        }
        rq->ready_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        rq->resumed = true;
        MHD_resume_connection(rq->conn);
    }
    h->held = NULL;
    deadline = jq_now_mono() + JQ_HTTP_STOP_US / 4;
    do {
        MHD_run(h->mhd);
        zmq_pollitem_t item = {NULL, mhd_fd, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 1);
    } while (jq_live_streams_open(h) && jq_now_mono() < deadline);
    return NULL;
}

/* The dashboard's files: the checkout's web/ for a build-tree binary,
 * else the installed ones. */
static void find_web_dir(jq_http_t *h)
{
    jq_default_dirs_t dd = jq_default_dirs();
    snprintf(h->web_dir, sizeof h->web_dir, "%s", dd.build_tree ? JQ_WEB_SRC_DIR : JQ_WEB_DIR);
}

static int write_port_file(jq_http_t *h, unsigned port, char *err, size_t errlen)
{
    char tmp[sizeof h->port_path + 8];
    snprintf(h->port_path, sizeof h->port_path, "%s/http.port", h->d->cfg.run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", h->port_path);
    FILE *f = fopen(tmp, "we");
    if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f) != 0 || rename(tmp, h->port_path) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", h->port_path, strerror(errno));
        h->port_path[0] = 0;
        return -1;
    }
    return 0;
}

jq_http_t *jq_http_new(jq_daemon_t *d, void *zctx, char *err, size_t errlen)
{
    jq_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->d = d;
    h->stop_fd = -1;
    if (jq_http_addr_parse(d->cfg.http, &h->addr, err, errlen) < 0)
        goto fail;
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        snprintf(err, errlen, "no random bytes for the CSRF token: %s", strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(h->csrf + 2 * i, 3, "%02x", rnd[i]);
    find_web_dir(h);
    h->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->stop_fd < 0 || jq_live_init(h, zctx, err, errlen) < 0) {
        if (h->stop_fd < 0)
            snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (h->addr.sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->addr.sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)JQ_HTTP_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)JQ_HTTP_MAX_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "--http %s: cannot listen there (in use, or not an address of "
                              "this host)", d->cfg.http);
        goto fail;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = pi ? pi->port : 0;
    if (write_port_file(h, port, err, errlen) < 0)
        goto fail;
    /* Browsers send a host's cookies to all its ports: a name per port
     * keeps two daemons on one host from ending each other's sessions. */
    snprintf(h->cookie_name, sizeof h->cookie_name, "jobq_session_%u", port);
    if (pthread_create(&h->thread, NULL, http_main, h) != 0) {
        snprintf(err, errlen, "cannot start the HTTP thread");
        goto fail;
    }
    h->started = true;
    char shown[300];
    snprintf(shown, sizeof shown, "%s", d->cfg.http);
    char *colon = strrchr(shown, ':');
    if (colon)
        *colon = 0;
    jq_log(JQ_LOG_INFO, "HTTP on http://%s:%u/ (metrics at /metrics)%s", shown, port,
           h->addr.loopback ? "" : (d->cfg.insecure ? ", without tokens (--insecure)"
                                                    : ", tokens required"));
    return h;
fail:
    jq_http_destroy(&h);
    return NULL;
}

void jq_http_destroy(jq_http_t **hp)
{
    if (!hp || !*hp)
        return;
    jq_http_t *h = *hp;
    if (h->started) {
        uint64_t one = 1;
        if (write(h->stop_fd, &one, sizeof one) < 0)
            jq_log(JQ_LOG_WARNING, "http: cannot wake the HTTP thread: %s", strerror(errno));
        pthread_join(h->thread, NULL);
    }
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    jq_live_fini(h);
    sessions_free(h);
    if (h->stop_fd >= 0)
        close(h->stop_fd);
    if (h->port_path[0])
        unlink(h->port_path);
    free(h);
    *hp = NULL;
}
