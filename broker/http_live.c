/* http_live.c: the dashboard's live view, on the HTTP thread.
 *
 * A SUB socket on the publisher's inproc endpoint brings every committed
 * change record. From them the thread keeps the jobs that are running
 * (with their last log line) and this tick's counts; every 500 ms it makes
 * one tick — the table's counts from `stats`, the running jobs' opcode and
 * worker from one query by id — and sends it to every overview stream.
 * Whatever the rate of changes, a browser gets two small messages a
 * second: the page never falls behind, it is given less often.
 *
 * A job's stream gets a snapshot of the job, then each of its records
 * after the snapshot's change serial, as they come. Streams are SSE
 * (text/event-stream) responses fed from a bounded buffer: a browser that
 * stops reading is cut off (it reconnects and starts from a snapshot)
 * rather than holding memory. */
#include "http_int.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* A job seen running, kept in ascending id order. */
typedef struct {
    uint64_t id;
    char *log; /* its last log line (truncated), or NULL */
} run_entry_t;

struct jq_running {
    run_entry_t *v;
    size_t n, cap;
};

static size_t run_find(const jq_running_t *r, uint64_t id, bool *found)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < r->n && r->v[lo].id == id;
    return lo;
}

static run_entry_t *run_upsert(jq_running_t *r, uint64_t id)
{
    bool found;
    size_t i = run_find(r, id, &found);
    if (found)
        return &r->v[i];
    if (r->n == JQ_RUNNING_TRACKED)
        return NULL;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        run_entry_t *nv = realloc(r->v, cap * sizeof *nv);
        if (!nv)
            return NULL;
        r->v = nv;
        r->cap = cap;
    }
    memmove(&r->v[i + 1], &r->v[i], (r->n - i) * sizeof *r->v);
    r->v[i] = (run_entry_t){.id = id};
    r->n++;
    return &r->v[i];
}

static void run_remove(jq_running_t *r, uint64_t id)
{
    bool found;
    size_t i = run_find(r, id, &found);
    if (!found)
        return;
    free(r->v[i].log);
    memmove(&r->v[i], &r->v[i + 1], (r->n - i - 1) * sizeof *r->v);
    r->n--;
}

/* ---- streams ------------------------------------------------------------ */

static void sse_wake(jq_sse_t *s)
{
    if (s->suspended && (s->closing || !s->ticket)) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

/* Ends a stream: what it had waiting is dropped now, and the browser gets
 * the end of the stream at its next read (it reconnects to a fresh one). */
static void sse_cut(jq_sse_t *s)
{
    s->closing = true;
    s->len = s->off = s->cap = 0;
    free(s->buf);
    s->buf = NULL;
    sse_wake(s);
}

static void sse_append(jq_sse_t *s, const char *data, size_t n)
{
    if (s->closing)
        return;
    if (s->off && s->len + n > s->cap) {
        memmove(s->buf, s->buf + s->off, s->len - s->off);
        s->len -= s->off;
        s->off = 0;
    }
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) {
            sse_cut(s);
            return;
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    s->appended += n;
}

/* One message (an event or a comment) in pieces; the browser's backlog is
 * checked once per message, before it: one message is taken whole however
 * large, a browser behind by more than the bound is cut off (it comes back
 * from a snapshot). */
static bool sse_begin(jq_sse_t *s)
{
    if (s->closing)
        return false;
    uint64_t from = s->sent > s->exempt_until ? s->sent : s->exempt_until;
    if (s->appended > from && s->appended - from > JQ_SSE_MAX_PENDING) {
        sse_cut(s);
        return false;
    }
    return true;
}

static void sse_comment(jq_sse_t *s, const char *text)
{
    if (!sse_begin(s))
        return;
    sse_append(s, text, strlen(text));
    sse_wake(s);
}

static void sse_event(jq_sse_t *s, const char *event, const char *json, size_t len)
{
    if (!sse_begin(s))
        return;
    char head[64];
    int hn = snprintf(head, sizeof head, "event: %s\ndata: ", event);
    sse_append(s, head, (size_t)hn);
    sse_append(s, json, len);
    sse_append(s, "\n\n", 2);
    sse_wake(s);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    jq_sse_t *s = cls;
    if (s->len > s->off && !s->ticket && !s->closing) {
        size_t n = s->len - s->off < max ? s->len - s->off : max;
        memcpy(buf, s->buf + s->off, n);
        s->off += n;
        s->sent += n;
        if (s->off == s->len) {
            s->off = s->len = 0;
            if (s->cap > JQ_SSE_KEEP_BUFFER) { /* a big snapshot went: give it back */
                free(s->buf);
                s->buf = NULL;
                s->cap = 0;
            }
        }
        return (ssize_t)n;
    }
    if (s->closing || s->h->stopping)
        return MHD_CONTENT_READER_END_OF_STREAM;
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    return 0;
}

static void sse_free(void *cls)
{
    jq_sse_t *s = cls;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s->buf);
    free(s);
}

static void append_history(FILE *f, const jq_http_t *h)
{
    fputc('[', f);
    for (unsigned i = 0; i < h->hist_len; i++) {
        unsigned at = (h->hist_head + JQ_TICK_HISTORY - h->hist_len + i) % JQ_TICK_HISTORY;
        if (i)
            fputc(',', f);
        fputs(h->history[at], f);
    }
    fputc(']', f);
}

bool jq_live_streams_open(const jq_http_t *h)
{
    return h->streams != NULL;
}

enum MHD_Result jq_live_open(jq_http_t *h, struct MHD_Connection *c, const jq_identity_t *who,
                             uint64_t job)
{
    uint64_t waiting = 0; /* what the streams' buffers hold */
    for (const jq_sse_t *o = h->streams; o; o = o->next)
        waiting += o->cap;
    if (waiting > JQ_SSE_MAX_TOTAL)
        return jq_http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Busy",
                             "the open streams have too much waiting for their browsers: "
                             "try again");
    jq_sse_t *s = calloc(1, sizeof *s);
    char *json = NULL;
    size_t len = 0;
    FILE *f = s ? open_memstream(&json, &len) : NULL;
    if (!f) {
        free(s);
        return MHD_NO;
    }
    s->h = h;
    s->conn = c;
    s->job = job;
    int rc = 0;
    if (job) {
        rc = jq_http_job_json(h, who, job, f, &s->min_serial, &s->ticket);
    } else {
        fprintf(f, "{\"epoch\":%llu,\"seq\":%llu,\"history\":", (unsigned long long)h->epoch,
                (unsigned long long)h->seq);
        append_history(f, h);
        fputc('}', f);
    }
    fclose(f);
    if (rc != 0) {
        free(json);
        free(s);
        return jq_http_job_error(c, rc);
    }
    sse_comment(s, "retry: 2000\n\n");
    sse_event(s, job ? "snapshot" : "hello", json, len);
    s->exempt_until = s->appended;
    free(json);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, s, sse_free);
    if (!r) {
        free(s->buf);
        free(s);
        return MHD_NO;
    }
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    /* A stream that ends (cut off, or the daemon stopping) closes its
     * connection: the browser's EventSource reconnects to a fresh one. */
    MHD_add_response_header(r, "Connection", "close");
    jq_http_headers(r, false);
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

void jq_live_close_all(jq_http_t *h)
{
    for (jq_sse_t *s = h->streams; s; s = s->next)
        sse_cut(s);
}

/* ---- the event stream --------------------------------------------------- */

int jq_live_init(jq_http_t *h, void *zctx, char *err, size_t errlen)
{
    h->running = calloc(1, sizeof *h->running);
    h->sub = zmq_socket(zctx, ZMQ_SUB);
    if (!h->running || !h->sub) {
        snprintf(err, errlen, "http: out of memory");
        return -1;
    }
    /* Two seconds of a busy daemon's events: beyond that a gap is counted
     * and the view goes on (the counts come from stats anyway). */
    int hwm = 100000, linger = 0;
    zmq_setsockopt(h->sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(h->sub, ZMQ_LINGER, &linger, sizeof linger);
    /* Not "": that would take the batched stream too, every event twice. */
    zmq_setsockopt(h->sub, ZMQ_SUBSCRIBE, "job/", 4);
    zmq_setsockopt(h->sub, ZMQ_SUBSCRIBE, "sys/", 4);
    if (zmq_connect(h->sub, JQ_HTTP_EVENTS_EP) < 0) {
        snprintf(err, errlen, "http: cannot subscribe to the events: %s", zmq_strerror(errno));
        return -1;
    }
    /* This run's epoch from the start (a stream opened before the first
     * event or heartbeat still names it). */
    h->epoch = h->d->epoch;
    h->seq = atomic_load(&h->d->last_seq);
    h->next_tick = jq_now_mono() + JQ_TICK_US;
    h->next_keepalive = jq_now_mono() + JQ_SSE_KEEPALIVE_US;
    return 0;
}

void jq_live_fini(jq_http_t *h)
{
    if (h->sub)
        zmq_close(h->sub);
    h->sub = NULL;
    if (h->running) {
        for (size_t i = 0; i < h->running->n; i++)
            free(h->running->v[i].log);
        free(h->running->v);
        free(h->running);
        h->running = NULL;
    }
    for (unsigned i = 0; i < JQ_TICK_HISTORY; i++) {
        free(h->history[i]);
        h->history[i] = NULL;
    }
    free(h->pending_tick);
    h->pending_tick = NULL;
}

static bool get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *o = wire_map_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

static bool objects_equal(const msgpack_object *a, const msgpack_object *b)
{
    return a && b && msgpack_object_equal(*a, *b);
}

static void on_change(jq_http_t *h, const msgpack_object *ch)
{
    uint64_t job = 0, serial = 0;
    if (ch->type != MSGPACK_OBJECT_MAP || !get_u64(ch, "job", &job) ||
        !get_u64(ch, "serial", &serial))
        return;
    const msgpack_object *kind = wire_map_get(ch, "kind");
    const msgpack_object *st = wire_map_get(ch, "status");
    jq_status_t status = JQ_QUEUED;
    if (!st || st->type != MSGPACK_OBJECT_STR ||
        jq_status_parse(st->via.str.ptr, st->via.str.size, &status) < 0)
        return;
    h->t_changes++;
    if (wire_str_eq(kind, "submit"))
        h->t_submitted++;
    /* The record that makes a job final is the one whose time is its end. */
    if (wire_str_eq(kind, "update") && jq_status_final(status) &&
        objects_equal(wire_map_get(ch, "end_ts"), wire_map_get(ch, "time")))
        h->t_finished[status == JQ_SUCCESS ? 0 : status == JQ_ERROR ? 1 : 2]++;
    if (status == JQ_WAITING || status == JQ_RUNNING || status == JQ_CANCELING) {
        run_entry_t *e = run_upsert(h->running, job);
        const msgpack_object *log = wire_map_get(ch, "log");
        if (e && log && log->type == MSGPACK_OBJECT_ARRAY && log->via.array.size) {
            const msgpack_object *last = &log->via.array.ptr[log->via.array.size - 1];
            if (last->type == MSGPACK_OBJECT_ARRAY && last->via.array.size == 4 &&
                last->via.array.ptr[3].type == MSGPACK_OBJECT_STR) {
                const msgpack_object *m = &last->via.array.ptr[3];
                size_t n = m->via.str.size < JQ_HTTP_LOG_BYTES ? m->via.str.size
                                                               : JQ_HTTP_LOG_BYTES;
                /* Cut on a character boundary. */
                while (n < m->via.str.size && n && ((unsigned char)m->via.str.ptr[n] & 0xc0) == 0x80)
                    n--;
                char *copy = strndup(m->via.str.ptr, n);
                if (copy) {
                    free(e->log);
                    e->log = copy;
                }
            }
        }
    } else {
        run_remove(h->running, job);
    }
    char *json = NULL;
    size_t len = 0;
    for (jq_sse_t *s = h->streams; s; s = s->next) {
        if (s->job != job || serial <= s->min_serial || s->closing)
            continue;
        if (!json) {
            FILE *f = open_memstream(&json, &len);
            if (!f)
                return;
            jq_json_msgpack(f, ch);
            fclose(f);
        }
        s->min_serial = serial;
        sse_event(s, "record", json, len);
    }
    free(json);
}

int jq_live_read(jq_http_t *h)
{
    /* A few at a time, so the streams they feed are written out between
     * them (MHD_run) rather than all buffered at once. */
    int i = 0;
    for (; i < JQ_LIVE_BATCH; i++) {
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        if (zmq_msg_recv(&topic, h->sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&topic);
            return i;
        }
        zmq_msg_init(&body);
        if (!zmq_msg_more(&topic) || zmq_msg_recv(&body, h->sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&topic);
            zmq_msg_close(&body);
            continue;
        }
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        if (msgpack_unpack_next(&up, zmq_msg_data(&body), zmq_msg_size(&body), &off) ==
                MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_MAP) {
            uint64_t seq = 0, epoch = 0;
            get_u64(&up.data, "seq", &seq);
            get_u64(&up.data, "epoch", &epoch);
            bool heartbeat = wire_map_get(&up.data, "heartbeat") != NULL;
            if (epoch != h->epoch) {
                h->epoch = epoch;
                h->seq = heartbeat ? seq : seq - 1;
            }
            /* A heartbeat carries the last seq sent: anything before it that
             * never came was lost at the high-water mark. */
            uint64_t expect = heartbeat ? seq : seq - 1;
            if (expect > h->seq)
                h->missed += expect - h->seq;
            if (seq > h->seq)
                h->seq = seq;
            const msgpack_object *ch = wire_map_get(&up.data, "change");
            if (!heartbeat && ch)
                on_change(h, ch);
        }
        msgpack_unpacked_destroy(&up);
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
    }
    return i;
}

/* ---- ticks -------------------------------------------------------------- */

static uint64_t map_u64(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;
    if (map && map->type == MSGPACK_OBJECT_MAP)
        get_u64(map, key, &v);
    return v;
}

typedef struct {
    const uint64_t *ids;
    size_t n;
} ids_t;

static void pack_running_query(msgpack_packer *pk, const void *ctx)
{
    const ids_t *q = ctx;
    static const char *const fields[] = {"id", "status", "summary", "opstatus", "worker"};
    msgpack_pack_map(pk, 3);
    wire_pack_cstr(pk, "ids");
    msgpack_pack_array(pk, q->n);
    for (size_t i = 0; i < q->n; i++)
        msgpack_pack_uint64(pk, q->ids[i]);
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, 5);
    for (size_t i = 0; i < 5; i++)
        wire_pack_cstr(pk, fields[i]);
    wire_pack_cstr(pk, "archived");
    msgpack_pack_true(pk);
}

/* The running jobs shown (at most JQ_RUNNING_SHOWN): their current
 * opcode and worker read now, the last log line from the records. */
static uint64_t write_running(jq_http_t *h, FILE *f)
{
    static const jq_identity_t reader = {.role = JQ_ROLE_READ, .owner = "http"};
    size_t n = h->running->n < JQ_RUNNING_SHOWN ? h->running->n : JQ_RUNNING_SHOWN;
    fputs("\"running\":[", f);
    if (!n) {
        fputc(']', f);
        return 0;
    }
    uint64_t ids[JQ_RUNNING_SHOWN];
    for (size_t i = 0; i < n; i++)
        ids[i] = h->running->v[i].id;
    ids_t q = {ids, n};
    jq_http_reply_t r;
    if (jq_http_call(h->d, &reader, "query_jobs", pack_running_query, &q, &r) < 0) {
        fputc(']', f);
        return 0;
    }
    const msgpack_object *rows = r.ok ? wire_map_get(r.result, "rows") : NULL;
    size_t shown = 0, ngone = 0;
    uint64_t gone[JQ_RUNNING_SHOWN];
    for (uint32_t i = 0; rows && rows->type == MSGPACK_OBJECT_ARRAY && i < rows->via.array.size &&
                         i < n; i++) {
        const msgpack_object *row = &rows->via.array.ptr[i];
        jq_status_t st;
        if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size != 5)
            continue;
        if (row->via.array.ptr[1].type != MSGPACK_OBJECT_STR || /* no such job any more */
            jq_status_parse(row->via.array.ptr[1].via.str.ptr, row->via.array.ptr[1].via.str.size,
                            &st) < 0) {
            gone[ngone++] = ids[i];
            continue;
        }
        /* The table may be ahead of the records read so far, and records
         * lost at the high-water mark never come: a job that is not running
         * now is not shown, and forgotten. */
        if (st != JQ_WAITING && st != JQ_RUNNING && st != JQ_CANCELING) {
            gone[ngone++] = ids[i];
            continue;
        }
        const msgpack_object *summary = &row->via.array.ptr[2];
        const msgpack_object *opstatus = &row->via.array.ptr[3];
        uint32_t cur = 0;
        if (opstatus->type == MSGPACK_OBJECT_ARRAY) {
            while (cur + 1 < opstatus->via.array.size &&
                   wire_str_eq(&opstatus->via.array.ptr[cur], "success"))
                cur++;
        }
        fprintf(f, "%s{\"id\":%llu,\"status\":", shown ? "," : "", (unsigned long long)ids[i]);
        jq_json_msgpack(f, &row->via.array.ptr[1]);
        fprintf(f, ",\"op_index\":%u,\"op\":", cur);
        if (summary->type == MSGPACK_OBJECT_ARRAY && cur < summary->via.array.size)
            jq_json_msgpack(f, &summary->via.array.ptr[cur]);
        else
            fputs("null", f);
        fputs(",\"worker\":", f);
        jq_json_msgpack(f, &row->via.array.ptr[4]);
        fputs(",\"log\":", f);
        if (h->running->v[i].log)
            jq_json_cstr(f, h->running->v[i].log);
        else
            fputs("null", f);
        fputc('}', f);
        shown++;
    }
    fputc(']', f);
    uint64_t ticket = r.ticket;
    jq_http_reply_destroy(&r);
    for (size_t i = 0; i < ngone; i++)
        run_remove(h->running, gone[i]);
    return ticket;
}

static void broadcast_tick(jq_http_t *h, char *full)
{
    size_t len = strlen(full);
    for (jq_sse_t *s = h->streams; s; s = s->next)
        if (!s->job)
            sse_event(s, "tick", full, len);
    free(full);
}

static void make_tick(jq_http_t *h)
{
    static const jq_identity_t reader = {.role = JQ_ROLE_READ, .owner = "http"};
    jq_http_reply_t st;
    if (jq_http_call(h->d, &reader, "stats", NULL, NULL, &st) < 0)
        return;
    if (!st.ok) {
        jq_http_reply_destroy(&st);
        return;
    }
    const msgpack_object *jobs = wire_map_get(st.result, "jobs");
    const msgpack_object *workers = wire_map_get(st.result, "workers");
    char *compact = NULL;
    size_t clen = 0;
    FILE *f = open_memstream(&compact, &clen);
    if (!f) {
        jq_http_reply_destroy(&st);
        return;
    }
    fprintf(f, "{\"t\":%.3f,\"seq\":%llu,\"changes\":%llu,\"submitted\":%llu,"
               "\"finished\":{\"success\":%llu,\"error\":%llu,\"canceled\":%llu},\"jobs\":{",
            (double)jq_now_wall() / 1e6, (unsigned long long)h->seq,
            (unsigned long long)h->t_changes, (unsigned long long)h->t_submitted,
            (unsigned long long)h->t_finished[0], (unsigned long long)h->t_finished[1],
            (unsigned long long)h->t_finished[2]);
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        fprintf(f, "%s\"%s\":%llu", s ? "," : "", jq_status_name((jq_status_t)s),
                (unsigned long long)map_u64(jobs, jq_status_name((jq_status_t)s)));
    fprintf(f, "},\"live\":%llu,\"archived\":%llu,\"queue_depth\":%llu,\"running_count\":%llu,"
               "\"missed\":%llu,\"workers\":{\"connected\":%llu,\"capacity\":%llu,\"busy\":%llu}}",
            (unsigned long long)map_u64(st.result, "live_jobs"),
            (unsigned long long)map_u64(st.result, "archived_jobs"),
            (unsigned long long)(map_u64(jobs, "queued") + map_u64(jobs, "waiting")),
            (unsigned long long)map_u64(jobs, "running"), (unsigned long long)h->missed,
            (unsigned long long)map_u64(workers, "connected"),
            (unsigned long long)map_u64(workers, "capacity"),
            (unsigned long long)map_u64(workers, "running"));
    fclose(f);
    jq_http_reply_destroy(&st);
    h->t_changes = h->t_submitted = 0;
    memset(h->t_finished, 0, sizeof h->t_finished);
    if (!compact)
        return;
    /* The history keeps the counts; the running list is for now only. */
    free(h->history[h->hist_head]);
    h->history[h->hist_head] = compact;
    h->hist_head = (h->hist_head + 1) % JQ_TICK_HISTORY;
    if (h->hist_len < JQ_TICK_HISTORY)
        h->hist_len++;
    char *full = NULL;
    size_t flen = 0;
    f = open_memstream(&full, &flen);
    if (!f)
        return;
    fwrite(compact, 1, clen - 1, f); /* without its closing brace */
    fputc(',', f);
    uint64_t ticket = write_running(h, f);
    fputc('}', f);
    fclose(f);
    if (!full)
        return;
    free(h->pending_tick);
    h->pending_tick = NULL;
    if (ticket > jq_store_durable(h->d->store)) {
        h->pending_tick = full;
        h->pending_ticket = ticket;
        return;
    }
    broadcast_tick(h, full);
}

int64_t jq_live_work(jq_http_t *h, int64_t now)
{
    uint64_t durable = jq_store_durable(h->d->store);
    uint64_t failed = jq_store_failed(h->d->store, NULL, 0);
    if (h->pending_tick && (h->pending_ticket <= durable || h->pending_ticket <= failed)) {
        char *t = h->pending_tick;
        h->pending_tick = NULL;
        if (h->pending_ticket <= durable)
            broadcast_tick(h, t);
        else
            free(t);
    }
    for (jq_sse_t *s = h->streams; s; s = s->next) {
        if (!s->ticket)
            continue;
        if (s->ticket <= durable) {
            s->ticket = 0;
            sse_wake(s);
        } else if (s->ticket <= failed) { /* its snapshot was never saved */
            sse_cut(s);
        }
    }
    if (now >= h->next_tick) {
        /* Made whether or not a page watches: one opened later shows
         * the last minutes from the history. */
        make_tick(h);
        h->next_tick += JQ_TICK_US;
        if (h->next_tick <= now)
            h->next_tick = now + JQ_TICK_US;
    }
    if (now >= h->next_keepalive) {
        for (jq_sse_t *s = h->streams; s; s = s->next)
            sse_comment(s, ": keepalive\n\n");
        h->next_keepalive = now + JQ_SSE_KEEPALIVE_US;
    }
    int64_t next = h->next_tick < h->next_keepalive ? h->next_tick : h->next_keepalive;
    return next > now ? next - now : 0;
}
