/* handle_query.c: query_jobs (JOBMODEL §2.10, docs/protocol.md).
 *
 * Listing pages through the sharded table in id order without holding
 * more than one read lock at a time: first each shard contributes its
 * smallest matching ids (a running bound keeps that work near `limit`),
 * then the rows are packed job by job under the job's shard read lock. A
 * job archived or changed between the two steps is dropped from a listing,
 * as Ganeti drops jobs that vanish while it lists.
 *
 * What a row shows must be committed before the client sees it: a row of
 * a job whose last change is not committed yet holds the whole reply until
 * it is (jq_call_hold); a reply that shows nothing of the log waits only
 * for the job's last change of anything else, so a busy log does not hold
 * a listing of statuses. An idle queue holds nothing. A reply is bounded in
 * rows and bytes; `more` says the client should ask for the rest. */
#include "cluster.h"
#include "daemon.h"
#include "fields.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_QUERY_FIELDS JQ_F__COUNT

typedef struct {
    jq_field_t fields[MAX_QUERY_FIELDS];
    unsigned nfields;
    bool shows_log;      /* oplog, log_serial or change_serial asked for */
    uint8_t status_mask; /* 0: no filter */
    bool archived;
    bool snapshot;
    uint64_t seq;        /* snapshot: last event published before reading */
    jq_table_t *table;   /* the queue, or a cluster follower's view */
    bool stale;          /* read from the view: labelled with its index */
} query_t;

/* Rows packed into one reply, and their bytes, before it is cut (`more`). */
typedef struct {
    msgpack_sbuffer rows;
    msgpack_packer pk;
    uint32_t nrows;
    bool full;
} page_t;

static bool matches(const query_t *q, const jq_job_t *job)
{
    return !q->status_mask || (q->status_mask & (1u << job->status));
}

static void page_init(page_t *p)
{
    msgpack_sbuffer_init(&p->rows);
    msgpack_packer_init(&p->pk, &p->rows, msgpack_sbuffer_write);
    p->nrows = 0;
    p->full = false;
}

/* One row; the page is full once it holds JOBQ_MAX_REPLY_BYTES (a row is
 * never split, and the first row always goes in, so paging progresses). */
static void pack_row(page_t *p, const query_t *q, const jq_job_t *job)
{
    msgpack_pack_array(&p->pk, q->nfields);
    for (unsigned f = 0; f < q->nfields; f++)
        jq_field_pack(&p->pk, job, q->fields[f]);
    p->nrows++;
    p->full = p->rows.size >= JOBQ_MAX_REPLY_BYTES;
}

static void pack_missing_row(page_t *p, const query_t *q, uint64_t id)
{
    msgpack_pack_array(&p->pk, q->nfields);
    for (unsigned f = 0; f < q->nfields; f++)
        if (q->fields[f] == JQ_F_ID)
            msgpack_pack_uint64(&p->pk, id);
        else
            msgpack_pack_nil(&p->pk);
    p->nrows++;
}

static jobq_code_t parse_fields(jq_call_t *c, query_t *q)
{
    const msgpack_object *fo = wire_map_get(c->args, "fields");
    if (!fo || fo->type == MSGPACK_OBJECT_NIL) {
        q->fields[0] = JQ_F_ID;
        q->fields[1] = JQ_F_STATUS;
        q->nfields = 2;
        return JOBQ_ERR_NONE;
    }
    if (fo->type != MSGPACK_OBJECT_ARRAY || fo->via.array.size == 0 ||
        fo->via.array.size > MAX_QUERY_FIELDS) {
        snprintf(c->err, c->errlen, "argument 'fields' must be a list of 1 to %d field names",
                 MAX_QUERY_FIELDS);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    uint32_t seen = 0;
    for (uint32_t i = 0; i < fo->via.array.size; i++) {
        const msgpack_object *n = &fo->via.array.ptr[i];
        if (n->type != MSGPACK_OBJECT_STR) {
            snprintf(c->err, c->errlen, "field names must be strings");
            return JOBQ_ERR_BAD_ARGUMENT;
        }
        if (jq_field_parse(n->via.str.ptr, n->via.str.size, &q->fields[i]) < 0) {
            snprintf(c->err, c->errlen, "Unknown output fields selected: %.*s",
                     wire_utf8_quote_len(n->via.str.ptr, n->via.str.size, 64), n->via.str.ptr);
            return JOBQ_ERR_UNKNOWN_FIELD;
        }
        if (seen & (1u << q->fields[i])) {
            snprintf(c->err, c->errlen, "field '%s' is asked for twice",
                     jq_field_name(q->fields[i]));
            return JOBQ_ERR_BAD_ARGUMENT;
        }
        seen |= 1u << q->fields[i];
    }
    q->nfields = fo->via.array.size;
    q->shows_log = seen & (1u << JQ_F_OPLOG | 1u << JQ_F_LOG_SERIAL | 1u << JQ_F_CHANGE_SERIAL);
    return JOBQ_ERR_NONE;
}

static jobq_code_t parse_query(jq_call_t *c, query_t *q)
{
    memset(q, 0, sizeof *q);
    jobq_code_t rc = parse_fields(c, q);
    if (rc != JOBQ_ERR_NONE)
        return rc;
    const msgpack_object *so = wire_map_get(c->args, "status");
    if (so && so->type != MSGPACK_OBJECT_NIL) {
        if (so->type != MSGPACK_OBJECT_ARRAY) {
            snprintf(c->err, c->errlen, "argument 'status' must be a list of statuses");
            return JOBQ_ERR_BAD_ARGUMENT;
        }
        for (uint32_t i = 0; i < so->via.array.size; i++) {
            const msgpack_object *n = &so->via.array.ptr[i];
            jq_status_t st;
            if (n->type != MSGPACK_OBJECT_STR ||
                jq_status_parse(n->via.str.ptr, n->via.str.size, &st) < 0) {
                snprintf(c->err, c->errlen,
                         "argument 'status' item %u is not a status (queued, waiting, "
                         "canceling, running, canceled, success, error)", i);
                return JOBQ_ERR_BAD_ARGUMENT;
            }
            q->status_mask |= (uint8_t)(1u << st);
        }
    }
    bool stale = false;
    if (jq_arg_bool(c, "archived", &q->archived) < 0 ||
        jq_arg_bool(c, "snapshot", &q->snapshot) < 0 || jq_arg_bool(c, "stale", &stale) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    q->table = c->d->table;
    /* A follower answers from its view only when asked to (dispatch lets
     * only such a query through), and says how old it is. */
    q->stale = stale && c->d->cluster && !jq_cluster_leading(c->d->cluster);
    if (q->stale && q->snapshot) {
        snprintf(c->err, c->errlen, "a stale read has no event position: ask the leader "
                                    "for a snapshot");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    /* Every event up to this one was applied to the table before it was
     * published, so the rows read from now on reflect it. */
    q->seq = atomic_load(&c->d->last_seq);
    return JOBQ_ERR_NONE;
}

static void pack_head(jq_call_t *c, const query_t *q)
{
    msgpack_pack_map(c->pk, (q->snapshot ? 5 : 3) + (q->stale ? 1 : 0));
    if (q->stale) { /* the Raft index the view reflects */
        wire_pack_cstr(c->pk, "stale");
        msgpack_pack_uint64(c->pk, jq_cluster_applied_index(c->d->cluster));
    }
    if (q->snapshot) {
        wire_pack_cstr(c->pk, "seq");
        msgpack_pack_uint64(c->pk, q->seq);
        wire_pack_cstr(c->pk, "epoch");
        msgpack_pack_uint64(c->pk, c->d->epoch);
    }
    wire_pack_cstr(c->pk, "fields");
    msgpack_pack_array(c->pk, q->nfields);
    for (unsigned f = 0; f < q->nfields; f++)
        wire_pack_cstr(c->pk, jq_field_name(q->fields[f]));
    wire_pack_cstr(c->pk, "rows");
}

/* Rows go to a side buffer first: their count is known only at the end. */
static void emit_rows(jq_call_t *c, page_t *p, bool more)
{
    msgpack_pack_array(c->pk, p->nrows);
    if (p->rows.size)
        c->pk->callback(c->pk->data, p->rows.data, p->rows.size);
    wire_pack_cstr(c->pk, "more");
    if (more)
        msgpack_pack_true(c->pk);
    else
        msgpack_pack_false(c->pk);
}

/* A job the table does not hold: archived (in the store) or unknown. Read
 * with the store's own read transaction, no shard lock held. */
static jobq_code_t pack_stored_row(jq_call_t *c, const query_t *q, page_t *p, uint64_t id,
                                   bool missing_row)
{
    char err[256] = "";
    jq_job_t *job = jq_store_load_archived(c->d->store, id, err, sizeof err);
    if (!job && err[0]) { /* never serve what cannot be vouched for */
        snprintf(c->err, c->errlen, "%s", err);
        return JOBQ_ERR_INTERNAL;
    }
    if (job && matches(q, job))
        pack_row(p, q, job);
    else if (!job && missing_row && !q->status_mask)
        pack_missing_row(p, q, id);
    jq_job_destroy(&job);
    return JOBQ_ERR_NONE;
}

/* One job by id, from the table or the store. */
static jobq_code_t pack_one(jq_call_t *c, const query_t *q, page_t *p, uint64_t id,
                            bool missing_row)
{
    jq_shard_t *sh = jq_table_shard_for(q->table, id);
    jq_shard_rdlock(sh);
    const jq_job_t *job = jq_shard_find_any(sh, id);
    bool shown = false;
    if (job && (missing_row || q->archived || !job->archived)) {
        if (matches(q, job)) {
            pack_row(p, q, job);
            shown = q->shows_log ? jq_job_uncommitted(job) : jq_job_state_uncommitted(job);
        } else {
            /* Left out by the status filter: the absence shows its status. */
            shown = jq_job_state_uncommitted(job);
        }
    }
    jq_shard_rdunlock(sh);
    if (shown)
        jq_call_hold(c, sh);
    if (!job && (missing_row || q->archived))
        return pack_stored_row(c, q, p, id, missing_row);
    return JOBQ_ERR_NONE;
}

static jobq_code_t query_by_ids(jq_call_t *c, const query_t *q, const msgpack_object *ids)
{
    if (ids->via.array.size > JOBQ_MAX_ROWS_PER_REPLY) {
        snprintf(c->err, c->errlen, "at most %d ids per query", JOBQ_MAX_ROWS_PER_REPLY);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    for (uint32_t i = 0; i < ids->via.array.size; i++) {
        int64_t id;
        if (!wire_get_int(&ids->via.array.ptr[i], &id) || id < 0) {
            snprintf(c->err, c->errlen, "argument 'ids' item %u is not a job id", i);
            return JOBQ_ERR_BAD_ARGUMENT;
        }
    }
    page_t p;
    page_init(&p);
    jobq_code_t rc = JOBQ_ERR_NONE;
    uint32_t i = 0;
    /* Cut at the byte bound: `more` then says that the rows answer the
     * first ids only; the client asks again for the rest. */
    for (; i < ids->via.array.size && !p.full && rc == JOBQ_ERR_NONE; i++) {
        int64_t id;
        wire_get_int(&ids->via.array.ptr[i], &id);
        rc = pack_one(c, q, &p, (uint64_t)id, true);
    }
    if (rc == JOBQ_ERR_NONE) {
        pack_head(c, q);
        emit_rows(c, &p, i < ids->via.array.size);
    }
    msgpack_sbuffer_destroy(&p.rows);
    return rc;
}

/* Merge sorted b into sorted a (capacity cap), keeping the smallest cap. */
static size_t merge_keep(uint64_t *a, size_t na, const uint64_t *b, size_t nb,
                         uint64_t *tmp, size_t cap)
{
    size_t i = 0, j = 0, k = 0;
    while (k < cap && (i < na || j < nb)) {
        if (i < na && j < nb && a[i] == b[j])
            j++; /* the same job from two places: an archive being evicted */
        tmp[k++] = (j >= nb || (i < na && a[i] < b[j])) ? a[i++] : b[j++];
    }
    memcpy(a, tmp, k * sizeof *a);
    return k;
}

/* Up to cap matching ids of one shard with after < id < bound, ascending;
 * *hold when a job the filter left out has a status not committed yet (its
 * absence from the page shows that status). */
static size_t shard_candidates(jq_shard_t *sh, const query_t *q, uint64_t after,
                               uint64_t bound, size_t cap, uint64_t *out, bool *hold)
{
    size_t n = 0, li = jq_shard_live_after(sh, after);
    size_t ai = q->archived ? jq_shard_archived_after(sh, after) : jq_shard_archived_size(sh);
    while (n < cap) {
        const jq_job_t *l = jq_shard_live_at(sh, li), *a = jq_shard_archived_at(sh, ai);
        const jq_job_t *next;
        if (l && (!a || l->id < a->id)) {
            next = l;
            li++;
        } else if (a) {
            next = a;
            ai++;
        } else {
            break;
        }
        if (next->id >= bound)
            break;
        if (matches(q, next))
            out[n++] = next->id;
        else if (jq_job_state_uncommitted(next))
            *hold = true;
    }
    return n;
}

/* The smallest cap matching ids above after, table and store together:
 * the status filter applies here, before the limit. */
static size_t candidates(jq_call_t *c, const query_t *q, uint64_t after, size_t cap,
                         uint64_t *best, uint64_t *shard_ids, uint64_t *tmp)
{
    jq_table_t *t = q->table;
    size_t nbest = 0;
    unsigned nshards = jq_table_shard_count(t);
    for (unsigned i = 0; i < nshards; i++) {
        uint64_t bound = nbest == cap ? best[cap - 1] : UINT64_MAX;
        jq_shard_t *sh = jq_table_shard_at(t, i);
        bool hold = false;
        jq_shard_rdlock(sh);
        size_t n = shard_candidates(sh, q, after, bound, cap, shard_ids, &hold);
        jq_shard_rdunlock(sh);
        if (hold)
            jq_call_hold(c, sh);
        nbest = merge_keep(best, nbest, shard_ids, n, tmp, cap);
    }
    if (q->archived) { /* archived jobs the table no longer holds */
        uint64_t bound = nbest == cap ? best[cap - 1] : UINT64_MAX;
        size_t n = jq_store_archived_ids(c->d->store, after, cap, q->status_mask, shard_ids);
        while (n > 0 && shard_ids[n - 1] >= bound)
            n--;
        nbest = merge_keep(best, nbest, shard_ids, n, tmp, cap);
    }
    return nbest;
}

static jobq_code_t query_listing(jq_call_t *c, const query_t *q)
{
    int64_t after = 0, limit = JOBQ_MAX_ROWS_PER_REPLY;
    if (jq_arg_int(c, "after_id", false, 0, INT64_MAX, &after) < 0 ||
        jq_arg_int(c, "limit", false, 1, JOBQ_MAX_ROWS_PER_REPLY, &limit) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    size_t cap = (size_t)limit + 1; /* one more tells whether there is more */
    uint64_t *best = malloc(cap * sizeof *best), *shard_ids = malloc(cap * sizeof *best),
             *tmp = malloc(cap * sizeof *best);
    jobq_code_t rc = JOBQ_ERR_NONE;
    if (!best || !shard_ids || !tmp) {
        snprintf(c->err, c->errlen, "out of memory");
        rc = JOBQ_ERR_INTERNAL;
    }
    page_t p;
    page_init(&p);
    bool more = false;
    /* Jobs may vanish between choosing and packing (archived, changed):
     * a page that comes out empty while more exist looks further on, so an
     * empty page never says `more`. */
    while (rc == JOBQ_ERR_NONE) {
        size_t nbest = candidates(c, q, (uint64_t)after, cap, best, shard_ids, tmp);
        more = nbest == cap;
        size_t want = more ? cap - 1 : nbest, k = 0;
        for (; k < want && !p.full && rc == JOBQ_ERR_NONE; k++)
            rc = pack_one(c, q, &p, best[k], false);
        if (k < want)
            more = true; /* cut by bytes */
        if (p.nrows || !more || !want)
            break;
        after = (int64_t)best[want - 1];
    }
    if (rc == JOBQ_ERR_NONE) {
        pack_head(c, q);
        emit_rows(c, &p, more);
    }
    msgpack_sbuffer_destroy(&p.rows);
    free(best);
    free(shard_ids);
    free(tmp);
    return rc;
}

static jobq_code_t query_jobs(jq_call_t *c, query_t *q)
{
    const msgpack_object *ids = wire_map_get(c->args, "ids");
    if (ids && ids->type != MSGPACK_OBJECT_NIL && ids->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(c->err, c->errlen, "argument 'ids' must be a list of job ids");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    if (ids && ids->type == MSGPACK_OBJECT_ARRAY && ids->via.array.size > 0)
        return query_by_ids(c, q, ids);
    return query_listing(c, q);
}

jobq_code_t jq_handle_query_jobs(jq_call_t *c)
{
    query_t q;
    jobq_code_t rc = parse_query(c, &q);
    if (rc != JOBQ_ERR_NONE || !q.stale)
        return rc != JOBQ_ERR_NONE ? rc : query_jobs(c, &q);
    /* The view goes away when this node starts leading. */
    pthread_rwlock_rdlock(&c->d->view_lock);
    if (c->d->view) {
        q.table = c->d->view;
        rc = query_jobs(c, &q);
    } else {
        snprintf(c->err, c->errlen, "this node leads now: ask again without stale");
        rc = JOBQ_ERR_NOT_LEADER; /* a moment's race: the client asks again */
    }
    pthread_rwlock_unlock(&c->d->view_lock);
    return rc;
}
