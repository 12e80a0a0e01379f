/* handlers.c: the request handler threads and method dispatch.
 *
 * The loop hands each request it does not serve itself (jq_dispatch_cheap,
 * cheap.c) to a handler over inproc (PUSH → PULL, one PULL per handler) as
 * [routing-id, delimiter-flag, body]; the handler
 * decodes it, calls the method's function (table-dispatched, one function
 * per method) and pushes [routing-id, delimiter-flag, reply] back. Handlers
 * never wait on anything but their own socket: no request blocks another
 * for longer than its own table work. */
#include "cluster.h"
#include "daemon.h"
#include "scan.h"
#include <msgpack/unpack_define.h>
#include "waiters.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Each method names the least role that may call it; cancel, priority
 * and archive also check that a submitter owns the job (handle_jobs.c). */
static const struct {
    const char *name;
    jq_handler_fn fn;
    jq_role_t role;
} methods[JQ_M__COUNT] = {
    [JQ_M_PING] = {"ping", jq_handle_admin_ping, JQ_ROLE_READ},
    [JQ_M_SUBMIT_JOB] = {"submit_job", jq_handle_submit_job, JQ_ROLE_SUBMIT},
    [JQ_M_SUBMIT_MANY_JOBS] = {"submit_many_jobs", jq_handle_submit_many_jobs, JQ_ROLE_SUBMIT},
    [JQ_M_QUERY_JOBS] = {"query_jobs", jq_handle_query_jobs, JQ_ROLE_READ},
    [JQ_M_CANCEL_JOB] = {"cancel_job", jq_handle_cancel_job, JQ_ROLE_SUBMIT},
    [JQ_M_CHANGE_JOB_PRIORITY] = {"change_job_priority", jq_handle_change_job_priority,
                                  JQ_ROLE_SUBMIT},
    [JQ_M_ARCHIVE_JOB] = {"archive_job", jq_handle_archive_job, JQ_ROLE_SUBMIT},
    [JQ_M_AUTO_ARCHIVE_JOBS] = {"auto_archive_jobs", jq_handle_auto_archive_jobs, JQ_ROLE_ADMIN},
    [JQ_M_SET_DRAIN_FLAG] = {"set_drain_flag", jq_handle_admin_drain, JQ_ROLE_ADMIN},
    [JQ_M_STATS] = {"stats", jq_handle_admin_stats, JQ_ROLE_READ},
    [JQ_M_SHUTDOWN] = {"shutdown", jq_handle_admin_shutdown, JQ_ROLE_ADMIN},
    [JQ_M_WAIT_FOR_JOB_CHANGE] = {"wait_for_job_change", jq_handle_wait_for_job_change,
                                  JQ_ROLE_READ},
    [JQ_M_EVENTS_SINCE] = {"events_since", jq_handle_events_since, JQ_ROLE_READ},
    [JQ_M_LIST_FIELDS] = {"list_fields", jq_handle_list_fields, JQ_ROLE_READ},
    [JQ_M_LIST_OPCODES] = {"list_opcodes", jq_handle_list_opcodes, JQ_ROLE_READ},
    [JQ_M_HTTP_TOKEN] = {"http_token", jq_handle_http_token, JQ_ROLE_READ},
    [JQ_M_QUERY_NODES] = {"query_nodes", jq_handle_query_nodes, JQ_ROLE_READ},
    [JQ_M_ADD_NODE] = {"add_node", jq_handle_add_node, JQ_ROLE_ADMIN},
    [JQ_M_REMOVE_NODE] = {"remove_node", jq_handle_remove_node, JQ_ROLE_ADMIN},
    [JQ_M_TRANSFER_LEADER] = {"transfer_leader", jq_handle_transfer_leader, JQ_ROLE_ADMIN},
};

/* What a cluster node serves while it does not lead: who it is, who
 * leads, the lists that do not depend on the queue, its own counters, a
 * stop, and query_jobs from its view when the caller asks for a stale
 * read. */
static bool served_by_follower(jq_method_t m, const msgpack_object *args)
{
    const msgpack_object *stale = m == JQ_M_QUERY_JOBS ? wire_map_get(args, "stale") : NULL;
    return m == JQ_M_PING || m == JQ_M_QUERY_NODES || m == JQ_M_LIST_FIELDS ||
           m == JQ_M_LIST_OPCODES || m == JQ_M_STATS || m == JQ_M_SHUTDOWN ||
           (stale && stale->type == MSGPACK_OBJECT_BOOLEAN && stale->via.boolean);
}

jq_role_t jq_method_role(jq_method_t m)
{
    return (unsigned)m < JQ_M__COUNT ? methods[m].role : JQ_ROLE_ADMIN;
}

/* ---- refusals: logged once per peer per DENY_LOG_INTERVAL ---- */

#define DENY_LOG_SLOTS 256
#define DENY_LOG_INTERVAL_US (60 * 1000000ll)

typedef struct {
    uint64_t hash;
    int64_t last;
    uint64_t quiet; /* refusals not logged since */
} deny_slot_t;

static struct {
    pthread_mutex_t mu; /* refusals only: never on the path of an allowed request */
    deny_slot_t slot[DENY_LOG_SLOTS];
} deny_log = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t owner_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h | 1;
}

static void log_denied(const jq_identity_t *who, const char *what)
{
    uint64_t h = owner_hash(who->owner);
    int64_t now = jq_now_mono();
    uint64_t quiet = 0;
    bool say = false;
    pthread_mutex_lock(&deny_log.mu);
    deny_slot_t *sl = &deny_log.slot[h % DENY_LOG_SLOTS];
    if (sl->hash != h || now - sl->last >= DENY_LOG_INTERVAL_US) {
        quiet = sl->hash == h ? sl->quiet : 0;
        sl->hash = h;
        sl->last = now;
        sl->quiet = 0;
        say = true;
    } else {
        sl->quiet++;
    }
    pthread_mutex_unlock(&deny_log.mu);
    if (say)
        jq_log(JQ_LOG_WARNING, "refused %s to '%s' (role %s)%s%.0llu%s", what,
               who->owner, jq_role_name(who->role), quiet ? "; " : "",
               (unsigned long long)quiet, quiet ? " more refused since the last report" : "");
}

bool jq_call_owns(const jq_call_t *c, const char *owner)
{
    if (c->who->role >= JQ_ROLE_ADMIN)
        return true;
    return owner && !strcmp(owner, c->who->owner);
}

jobq_code_t jq_call_not_owner(jq_call_t *c, uint64_t id, const char *owner)
{
    snprintf(c->err, c->errlen, "job %llu belongs to %s%s%s; role %s may change only its own "
                                "jobs",
             (unsigned long long)id, owner ? "'" : "", owner ? owner : "no recorded owner",
             owner ? "'" : "", jq_role_name(c->who->role));
    char what[64];
    snprintf(what, sizeof what, "a change of job %llu", (unsigned long long)id);
    log_denied(c->who, what);
    return JOBQ_ERR_PERMISSION_DENIED;
}

size_t jq_identity_frame(const jq_identity_t *who, char flag, char *out, size_t len)
{
    if (len < 2)
        return 0;
    size_t n = strnlen(who->owner, sizeof who->owner - 1);
    if (len < 2 + n)
        n = len - 2;
    out[0] = flag;
    out[1] = (char)who->role;
    memcpy(out + 2, who->owner, n);
    size_t k = strnlen(who->key, sizeof who->key);
    if (k != JQ_KEY_Z85)
        k = 0;
    if (who->via == JQ_VIA_NONE || (unsigned)who->via >= JQ_VIA__COUNT || len < 2 + n + 2 + k)
        return 2 + n;
    out[2 + n] = '\0';
    out[3 + n] = (char)who->via;
    memcpy(out + 4 + n, who->key, k);
    return 4 + n + k;
}

void jq_identity_from_frame(const char *frame, size_t len, jq_identity_t *who)
{
    memset(who, 0, sizeof *who);
    who->role = JQ_ROLE_READ;
    if (len < 2 || (unsigned char)frame[1] >= JQ_ROLE__COUNT)
        return;
    who->role = (jq_role_t)frame[1];
    const char *owner = frame + 2, *end = frame + len;
    const char *nul = memchr(owner, '\0', (size_t)(end - owner));
    size_t n = (size_t)((nul ? nul : end) - owner);
    memcpy(who->owner, owner, n < sizeof who->owner - 1 ? n : sizeof who->owner - 1);
    if (!nul || end - nul < 2 || (unsigned char)nul[1] >= JQ_VIA__COUNT)
        return;
    who->via = (jq_via_t)(unsigned char)nul[1];
    if (end - (nul + 2) == JQ_KEY_Z85)
        memcpy(who->key, nul + 2, JQ_KEY_Z85);
}

const char *jq_method_name(jq_method_t m)
{
    return (unsigned)m < JQ_M__COUNT ? methods[m].name : "?";
}

static void reply_error(jq_daemon_t *d, msgpack_sbuffer *sb, uint64_t id, bool has_id,
                        jobq_code_t code, const char *msg)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (code == JOBQ_ERR_NOT_LEADER && d->cluster) { /* where to go instead */
        wire_reply_error_begin(&pk, id, has_id, code, msg, 1);
        wire_pack_cstr(&pk, "leader");
        jq_cluster_pack_leader(d->cluster, &pk);
    } else {
        wire_reply_error(&pk, id, has_id, code, msg);
    }
    atomic_fetch_add_explicit(&d->errors[code], 1, memory_order_relaxed);
}

/* jq_dispatch, and jq_dispatch_cheap when on_loop: then a request whose
 * method is not cheap comes back *deferred, with nothing done (but its
 * decoding) and nothing counted. */
static jq_waiter_t *dispatch(jq_daemon_t *d, const jq_identity_t *who, const char *body,
                             size_t len, msgpack_sbuffer *sb, uint64_t *hold_ticket,
                             bool on_loop, bool *deferred)
{
    *hold_ticket = 0;
    if (deferred)
        *deferred = false;
    char err[1024] = "";
    msgpack_sbuffer_clear(sb);
    /* Before msgpack-c sees a byte: the size limit, then a walk that checks
     * every declared length against the bytes that arrived (msgpack-c
     * allocates what a header declares), the nesting, the number of
     * objects and that every string is UTF-8. Nothing is allocated for a
     * request that fails here. */
    /* msgpack-c nests 32 deep at most (MSGPACK_EMBED_STACK_SIZE): deeper
     * is refused here, with a clear message, rather than by it. */
    jq_scan_limits_t limits = {.max_depth = MSGPACK_EMBED_STACK_SIZE, .check_utf8 = true};
    jq_scan_result_t sr;
    if (len > d->cfg.max_request_bytes) {
        jq_scan(body, len < 4096 ? len : 4096, &limits, &sr); /* for its id only */
        snprintf(err, sizeof err, "request of %zu bytes is over the limit of %zu bytes",
                 len, d->cfg.max_request_bytes);
        reply_error(d, sb, sr.id, sr.has_id, JOBQ_ERR_TOO_LARGE, err);
        atomic_fetch_add_explicit(&d->dropped_size, 1, memory_order_relaxed);
        return NULL;
    }
    if (!jq_scan(body, len, &limits, &sr)) {
        snprintf(err, sizeof err, "%s (at byte %zu)", jq_scan_status_text(sr.status), sr.offset);
        reply_error(d, sb, sr.id, sr.has_id,
                    sr.status == JQ_SCAN_BAD_UTF8 ? JOBQ_ERR_BAD_ARGUMENT : JOBQ_ERR_MALFORMED,
                    err);
        return NULL;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, body, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(&up);
        reply_error(d, sb, sr.id, sr.has_id, JOBQ_ERR_MALFORMED,
                    "request is not one complete msgpack value");
        return NULL;
    }
    wire_request_t req;
    jobq_code_t rc = wire_request_parse(&up.data, &req, err, sizeof err);
    jq_method_t m = JQ_M__COUNT;
    jq_waiter_t *park = NULL;
    if (rc == JOBQ_ERR_NONE) {
        for (int i = 0; i < JQ_M__COUNT; i++)
            if (strlen(methods[i].name) == req.method_len &&
                memcmp(methods[i].name, req.method, req.method_len) == 0)
                m = (jq_method_t)i;
        if (m == JQ_M__COUNT) {
            snprintf(err, sizeof err, "unknown method '%.*s'",
                     wire_utf8_quote_len(req.method, req.method_len, 64), req.method);
            rc = JOBQ_ERR_UNKNOWN_METHOD;
        } else if (who->role < methods[m].role) {
            snprintf(err, sizeof err, "%s needs role %s; '%s' has role %s", methods[m].name,
                     jq_role_name(methods[m].role), who->owner, jq_role_name(who->role));
            log_denied(who, methods[m].name);
            rc = JOBQ_ERR_PERMISSION_DENIED;
        } else if (d->cluster && !served_by_follower(m, req.args) &&
                   !jq_cluster_serving(d->cluster)) {
            snprintf(err, sizeof err, "this node does not lead the cluster: send %s to the "
                                      "leader", methods[m].name);
            rc = JOBQ_ERR_NOT_LEADER;
        } else if (on_loop && !jq_request_cheap(d, m, req.args)) {
            msgpack_unpacked_destroy(&up);
            *deferred = true;
            return NULL;
        }
    }
    if (rc == JOBQ_ERR_NONE) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        wire_reply_ok_begin(&pk, req.id, true);
        jq_call_t call = {.d = d, .args = req.args, .pk = &pk, .err = err,
                          .errlen = sizeof err, .request_id = req.id,
                          .body = body, .body_len = len, .who = who};
        rc = methods[m].fn(&call);
        atomic_fetch_add_explicit(&d->requests[m], 1, memory_order_relaxed);
        park = call.park;
        if (park)
            msgpack_sbuffer_clear(sb);
        if (rc == JOBQ_ERR_NONE)
            *hold_ticket = call.hold_ticket;
    }
    if (rc != JOBQ_ERR_NONE)
        reply_error(d, sb, req.id, req.has_id, rc, err);
    msgpack_unpacked_destroy(&up);
    return park;
}

jq_waiter_t *jq_dispatch(jq_daemon_t *d, const jq_identity_t *who, const char *body,
                         size_t len, msgpack_sbuffer *sb, uint64_t *hold_ticket)
{
    return dispatch(d, who, body, len, sb, hold_ticket, false, NULL);
}

bool jq_dispatch_cheap(jq_daemon_t *d, const jq_identity_t *who, const char *body, size_t len,
                       msgpack_sbuffer *sb, uint64_t *hold_ticket)
{
    *hold_ticket = 0;
    /* A big body is never cheap: not even scanned here. */
    if (len > JQ_LOOP_MAX_BYTES)
        return false;
    bool deferred;
    jq_waiter_t *park = dispatch(d, who, body, len, sb, hold_ticket, true, &deferred);
    /* Only wait_for_job_change parks, and it is never cheap: cannot happen.
     * Were it to, the wait runs again in a handler (it changes nothing). */
    if (park) {
        jq_waiter_destroy(&park);
        atomic_fetch_sub(&d->waiters, 1);
        msgpack_sbuffer_clear(sb);
        return false;
    }
    return !deferred;
}

void jq_call_hold(jq_call_t *c, jq_shard_t *sh)
{
    /* The record of what the reply shows may still be in the shard's
     * outbox (its maker flushes right after unlocking): flush it ourselves,
     * then a ticket read now covers it. */
    jq_shard_flush(sh);
    uint64_t t = jq_store_ticket(c->d->store);
    if (t > c->hold_ticket)
        c->hold_ticket = t;
}

/* ---- argument readers ---- */

int jq_arg_int(jq_call_t *c, const char *key, bool required, int64_t lo, int64_t hi,
               int64_t *out)
{
    const msgpack_object *o = wire_map_get(c->args, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (!required)
            return 0;
        snprintf(c->err, c->errlen, "missing argument '%s'", key);
        return -1;
    }
    int64_t v;
    if (!wire_get_int(o, &v) || v < lo || v > hi) {
        snprintf(c->err, c->errlen, "argument '%s' must be an integer from %lld to %lld",
                 key, (long long)lo, (long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}

int jq_arg_job_id(jq_call_t *c, const char *key, uint64_t *out)
{
    int64_t v;
    if (jq_arg_int(c, key, true, 1, INT64_MAX, &v) < 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int jq_arg_bool(jq_call_t *c, const char *key, bool *out)
{
    const msgpack_object *o = wire_map_get(c->args, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN) {
        snprintf(c->err, c->errlen, "argument '%s' must be a boolean", key);
        return -1;
    }
    *out = o->via.boolean;
    return 0;
}

/* ---- threads ---- */

typedef struct {
    pthread_t thread;
    jq_daemon_t *d;
    const char *requests_ep, *replies_ep;
    _Atomic bool exited;
} handler_t;

struct jq_handlers {
    unsigned n;
    handler_t h[];
};

static void *handler_main(void *arg)
{
    handler_t *h = arg;
    jq_daemon_t *d = h->d;
    pthread_setname_np(pthread_self(), "jobqd-handler"); /* for top -H and perf */
    void *in = zmq_socket(d->zctx, ZMQ_PULL);
    void *out = zmq_socket(d->zctx, ZMQ_PUSH);
    int linger = 0, hwm = 0;
    zmq_setsockopt(in, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(out, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_connect(in, h->requests_ep);
    zmq_connect(out, h->replies_ep);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    zmq_msg_t rid, flag, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&flag);
    zmq_msg_init(&body);
    zmq_pollitem_t item = {.socket = in, .events = ZMQ_POLLIN};
    for (;;) {
        /* A bounded poll lets the handler notice the stop flag. */
        if (zmq_poll(&item, 1, 100) <= 0) {
            if (atomic_load(&d->handlers_stop))
                break;
            continue;
        }
        if (zmq_msg_recv(&rid, in, 0) < 0 || zmq_msg_recv(&flag, in, 0) < 0 ||
            zmq_msg_recv(&body, in, 0) < 0)
            continue;
        uint64_t hold;
        jq_identity_t who;
        jq_identity_from_frame(zmq_msg_data(&flag), zmq_msg_size(&flag), &who);
        jq_waiter_t *park =
            jq_dispatch(d, &who, zmq_msg_data(&body), zmq_msg_size(&body), &sb, &hold);
        zmq_msg_send(&rid, out, ZMQ_SNDMORE);
        if (hold) {
            char f[9];
            f[0] = (char)(JQ_FLAG_HOLD | (*(char *)zmq_msg_data(&flag) & JQ_FLAG_DELIMITER));
            memcpy(f + 1, &hold, sizeof hold);
            zmq_send(out, f, sizeof f, ZMQ_SNDMORE);
            zmq_send(out, sb.data, sb.size, 0);
        } else if (park) {
            /* The loop takes the waiter over: hand it the pointer. */
            char f = (char)(JQ_FLAG_PARK | (*(char *)zmq_msg_data(&flag) & JQ_FLAG_DELIMITER));
            atomic_store_explicit(&park->handed_over, 1, memory_order_release);
            zmq_send(out, &f, 1, ZMQ_SNDMORE);
            zmq_send(out, &park, sizeof park, 0);
        } else {
            char f = (char)(*(char *)zmq_msg_data(&flag) & JQ_FLAG_DELIMITER);
            zmq_send(out, &f, 1, ZMQ_SNDMORE);
            zmq_send(out, sb.data, sb.size, 0);
        }
        if (sb.alloc > (1u << 20)) { /* don't keep a huge buffer around */
            msgpack_sbuffer_destroy(&sb);
            msgpack_sbuffer_init(&sb);
        }
    }
    zmq_msg_close(&rid);
    zmq_msg_close(&flag);
    zmq_msg_close(&body);
    msgpack_sbuffer_destroy(&sb);
    zmq_close(in);
    zmq_close(out);
    atomic_store(&h->exited, true);
    return NULL;
}

jq_handlers_t *jq_handlers_new(jq_daemon_t *d, const char *requests_ep,
                               const char *replies_ep)
{
    unsigned n = d->cfg.handlers;
    jq_handlers_t *hs = calloc(1, sizeof *hs + n * sizeof(handler_t));
    if (!hs)
        return NULL;
    for (unsigned i = 0; i < n; i++) {
        handler_t *h = &hs->h[i];
        h->d = d;
        h->requests_ep = requests_ep;
        h->replies_ep = replies_ep;
        if (pthread_create(&h->thread, NULL, handler_main, h) != 0) {
            hs->n = i;
            atomic_store(&d->handlers_stop, true);
            jq_handlers_destroy(&hs);
            return NULL;
        }
        hs->n = i + 1;
    }
    return hs;
}

bool jq_handlers_running(jq_handlers_t *hs)
{
    for (unsigned i = 0; i < hs->n; i++)
        if (!atomic_load(&hs->h[i].exited))
            return true;
    return false;
}

void jq_handlers_destroy(jq_handlers_t **hp)
{
    if (!hp || !*hp)
        return;
    jq_handlers_t *hs = *hp;
    for (unsigned i = 0; i < hs->n; i++)
        pthread_join(hs->h[i].thread, NULL);
    free(hs);
    *hp = NULL;
}
