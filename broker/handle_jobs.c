/* handle_jobs.c: the methods that change jobs — submit, submit many,
 * cancel, change priority, archive, auto-archive (JOBMODEL §2). Each change
 * follows the table's write protocol; scheduler calls happen after the
 * shard lock is released. A reply that reports a change is held until the
 * change is committed; a reply that shows a job's state is held while that
 * state is not committed yet (jq_call_hold). A submission with a client
 * token answers a retry with the first call's reply (tokens.h). */
#include "daemon.h"
#include "jobspec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static jobq_code_t submission_allowed(jq_call_t *c)
{
    bool ignore_drain = false;
    if (jq_arg_bool(c, "ignore_drain", &ignore_drain) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    if (atomic_load(&c->d->stopping)) {
        snprintf(c->err, c->errlen, "Job queue is shutting down, refusing job");
        return JOBQ_ERR_SHUTTING_DOWN;
    }
    if (atomic_load(&c->d->drained) && !ignore_drain) {
        snprintf(c->err, c->errlen, "Job queue is drained, refusing job");
        return JOBQ_ERR_DRAINED;
    }
    /* Nothing is taken that cannot be saved: a failing store, or one far
     * behind, refuses intake until it catches up (by itself). */
    char why[256];
    if (jq_store_failing(c->d->store, why, sizeof why)) {
        snprintf(c->err, c->errlen, "the store cannot save jobs now: %s; submissions are "
                                    "accepted again as soon as it can", why);
        return JOBQ_ERR_STORE_FAILED;
    }
    uint64_t backlog = jq_store_backlog(c->d->store);
    if (backlog > JQ_STORE_MAX_BACKLOG) {
        snprintf(c->err, c->errlen, "the store is %llu changes behind (more than %d); "
                                    "submit again shortly",
                 (unsigned long long)backlog, JQ_STORE_MAX_BACKLOG);
        return JOBQ_ERR_BUSY;
    }
    return JOBQ_ERR_NONE;
}

/* A submission's client token (docs/protocol.md "Client tokens"). */
typedef struct {
    const char *token;   /* NULL: none */
    size_t len;
    uint64_t hash;       /* of the method and the jobs it submits */
    bool claimed;        /* this call is the token's first: it records it */
    bool created_nothing; /* every job of the batch was refused */
    size_t reply_start;  /* where this call's result starts in the reply */
} token_call_t;

/* Read the optional token and look it up. *answered when it is a retry of
 * a call already answered: its reply is packed, held as the first one. */
static jobq_code_t token_begin(jq_call_t *c, const char *method, const msgpack_object *body,
                               token_call_t *t, bool *answered)
{
    memset(t, 0, sizeof *t);
    *answered = false;
    bool ignore_drain; /* a type error is BadArgument, retry or not */
    if (jq_arg_bool(c, "ignore_drain", &ignore_drain) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    const msgpack_object *o = wire_map_get(c->args, "token");
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return JOBQ_ERR_NONE;
    if (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN) {
        t->token = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
        t->len = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
    }
    if (!t->token || t->len == 0 || t->len > JQ_TOKEN_MAX) {
        snprintf(c->err, c->errlen, "argument 'token' must be a str or bin of 1 to %d bytes",
                 JQ_TOKEN_MAX);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    if (body && body->type == MSGPACK_OBJECT_ARRAY &&
        body->via.array.size > JOBQ_MAX_JOBS_PER_TOKEN && !strcmp(method, "submit_many_jobs")) {
        snprintf(c->err, c->errlen, "a batch with a client token holds at most %d jobs (its "
                                    "answer is kept for the retry); split it",
                 JOBQ_MAX_JOBS_PER_TOKEN);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    t->hash = jq_tokens_hash(method, body);
    jq_token_claim_t claim;
    char *reply = NULL;
    size_t reply_len = 0;
    uint64_t ticket = 0;
    if (jq_tokens_claim(c->d->tokens, t->token, t->len, t->hash, jq_now_wall(), &claim, &reply,
                        &reply_len, &ticket) < 0) {
        snprintf(c->err, c->errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    switch (claim) {
    case JQ_TOKEN_NEW:
        t->claimed = c->d->cfg.token_window > 0;
        t->reply_start = ((msgpack_sbuffer *)c->pk->data)->size;
        return JOBQ_ERR_NONE;
    case JQ_TOKEN_REUSED:
        snprintf(c->err, c->errlen, "client token already used for another submission "
                                    "within the last %llu s",
                 (unsigned long long)c->d->cfg.token_window);
        return JOBQ_ERR_TOKEN_REUSED;
    case JQ_TOKEN_REPLY:
        /* The same bytes as the first answer, held until what they show
         * is committed, like the first. */
        c->pk->callback(c->pk->data, reply, reply_len);
        free(reply);
        c->hold_ticket = ticket;
        *answered = true;
        return JOBQ_ERR_NONE;
    }
    return JOBQ_ERR_NONE;
}

/* After the call: record its answer under the token, or let the token go
 * when it failed (it created nothing). Returns rc. */
static jobq_code_t token_end(jq_call_t *c, token_call_t *t, jobq_code_t rc)
{
    if (!t->claimed)
        return rc;
    if (rc != JOBQ_ERR_NONE || t->created_nothing) {
        /* Nothing to keep apart from a second copy: a retry may run. */
        jq_tokens_abandon(c->d->tokens, t->token, t->len);
    } else {
        msgpack_sbuffer *sb = c->pk->data;
        jq_tokens_done(c->d->tokens, t->token, t->len, sb->data + t->reply_start,
                       sb->size - t->reply_start, c->hold_ticket);
    }
    return rc;
}

/* The token as the job's submit record and stored form carry it: enough
 * to rebuild the index after a restart. reply: a batch's whole answer
 * (on its first job only), NULL for submit_job (the answer is the id). */
static int token_attach(jq_job_t *job, const token_call_t *t, const msgpack_sbuffer *reply)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* In hex: the record is also the published event, and every client
     * must be able to read it (JSON has no bytes). */
    char hex[2 * JQ_TOKEN_MAX + 1];
    for (size_t i = 0; i < t->len; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)t->token[i]);
    msgpack_pack_map(&pk, reply ? 3 : 2);
    wire_pack_cstr(&pk, "token");
    msgpack_pack_str_with_body(&pk, hex, 2 * t->len);
    wire_pack_cstr(&pk, "hash");
    msgpack_pack_uint64(&pk, t->hash);
    if (reply) {
        wire_pack_cstr(&pk, "reply");
        msgpack_sbuffer_write(&sb, reply->data, reply->size);
    }
    return sb.data ? jq_blob_take(&job->client, &sb) : -1;
}

/* The job records its submitter (jobs it may later cancel, reprioritize
 * or archive). */
static int set_owner(jq_call_t *c, jq_job_t *job)
{
    if (!c->who || !c->who->owner[0])
        return 0;
    job->owner = strdup(c->who->owner);
    return job->owner ? 0 : -1;
}

static void queue_full_message(jq_daemon_t *d, char *err, size_t len)
{
    snprintf(err, len, "Job queue is full (%llu live jobs); archive finished jobs",
             (unsigned long long)d->cfg.max_jobs);
}

/* Insert a reserved job that has its id and resolved dependencies, with
 * its submit record made before the lock is taken. The scheduler lets it
 * run once that record is committed. On failure the job is freed, its id
 * withdrawn and its reservation given back. */
static int enqueue(jq_daemon_t *d, jq_job_t **jobp, int64_t now)
{
    /* Complete now: into one allocation (a job that cannot be packed for
     * want of memory stays as it is, whole). Packing here rather than
     * right after each parse measured 18 B less per queued job (1,000,000
     * jobs in batches of 1,000): glibc places the batch's pieces better. */
    (void)jq_job_pack(jobp);
    jq_job_t *job = *jobp;
    uint64_t id = job->id;
    int prio = jq_job_priority(job);
    jq_change_t *rec = jq_shard_submit_record(job, now);
    jq_shard_t *sh = jq_table_shard_for(d->table, id);
    int rc = -1;
    if (rec) {
        jq_shard_wrlock(sh);
        rc = jq_shard_insert(sh, job, rec);
        jq_shard_wrunlock(sh); /* flushes the record: the ticket covers it */
    }
    if (rc < 0) {
        free(rec);
        jq_sched_withdraw(d->sched, id);
        jq_table_unreserve(d->table);
        jq_job_destroy(jobp);
        return -1;
    }
    *jobp = NULL; /* the table owns it */
    atomic_fetch_add_explicit(&d->submitted, 1, memory_order_relaxed);
    jq_sched_submitted(d->sched, id, prio, jq_store_ticket(d->store));
    return 0;
}

static jobq_code_t submit_job(jq_call_t *c, const token_call_t *t)
{
    jq_daemon_t *d = c->d;
    jobq_code_t rc = submission_allowed(c);
    if (rc != JOBQ_ERR_NONE)
        return rc;
    int64_t now = jq_now_wall();
    jq_job_t *job;
    rc = jq_jobspec_parse(d->ops, wire_map_get(c->args, "ops"), false,
                          jq_sched_last_id(d->sched), now, &job, c->err, c->errlen);
    if (rc != JOBQ_ERR_NONE)
        return rc;
    if ((t->claimed && token_attach(job, t, NULL) < 0) || set_owner(c, job) < 0) {
        jq_job_destroy(&job);
        snprintf(c->err, c->errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    if (!jq_table_reserve(d->table, d->cfg.max_jobs)) {
        jq_job_destroy(&job);
        queue_full_message(d, c->err, c->errlen);
        return JOBQ_ERR_QUEUE_FULL;
    }
    uint64_t id = jq_sched_new_jobs(d->sched, 1);
    if (!id || jq_jobspec_resolve(job, id, NULL, 0, c->err, c->errlen) < 0 ||
        enqueue(d, &job, now) < 0) {
        if (job) { /* enqueue cleans up after itself */
            jq_sched_withdraw(d->sched, id);
            jq_table_unreserve(d->table);
            jq_job_destroy(&job);
        }
        snprintf(c->err, c->errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    msgpack_pack_uint64(c->pk, id);
    /* Acknowledged only once the job is committed: the loop holds the
     * reply until the store is durable past this ticket. */
    c->hold_ticket = jq_store_ticket(d->store);
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_submit_job(jq_call_t *c)
{
    token_call_t t;
    bool answered;
    jobq_code_t rc = token_begin(c, "submit_job", wire_map_get(c->args, "ops"), &t, &answered);
    if (rc != JOBQ_ERR_NONE || answered)
        return rc;
    return token_end(c, &t, submit_job(c, &t));
}

static void pack_failure(msgpack_packer *pk, const char *msg)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_false(pk);
    wire_pack_cstr(pk, msg);
}

static void pack_outcome(msgpack_packer *pk, uint64_t id, const char *error)
{
    if (id) {
        msgpack_pack_array(pk, 2);
        msgpack_pack_true(pk);
        msgpack_pack_uint64(pk, id);
    } else {
        pack_failure(pk, error ? error : "out of memory");
    }
}

static jobq_code_t submit_many_jobs(jq_call_t *c, token_call_t *t)
{
    jq_daemon_t *d = c->d;
    jobq_code_t rc = submission_allowed(c);
    if (rc != JOBQ_ERR_NONE)
        return rc;
    const msgpack_object *jobs = wire_map_get(c->args, "jobs");
    if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY ||
        jobs->via.array.size > JOBQ_MAX_JOBS_PER_BATCH) {
        snprintf(c->err, c->errlen, "argument 'jobs' must be a list of at most %d opcode lists",
                 JOBQ_MAX_JOBS_PER_BATCH);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    uint32_t n = jobs->via.array.size;
    int64_t now = jq_now_wall();
    jq_job_t **parsed = calloc(n ? n : 1, sizeof *parsed);
    char **errors = calloc(n ? n : 1, sizeof *errors);
    uint64_t *ids = calloc(n ? n : 1, sizeof *ids); /* ids[k]: job at position k */
    /* ids in reverse (rev[n-1-k] = ids[k]): &rev[n-k] lists the jobs before
     * position k nearest first, as jq_jobspec_resolve wants, at no cost. */
    uint64_t *back = calloc(n ? n : 1, sizeof *back);
    if (!parsed || !errors || !ids || !back) {
        free(parsed);
        free(errors);
        free(ids);
        free(back);
        snprintf(c->err, c->errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    char msg[1024];
    /* Validate and reserve each job on its own; then hand out consecutive
     * ids to those that passed. */
    uint32_t nvalid = 0;
    uint64_t last_id = jq_sched_last_id(d->sched);
    for (uint32_t k = 0; k < n; k++) {
        if (jq_jobspec_parse(d->ops, &jobs->via.array.ptr[k], true, last_id, now, &parsed[k],
                             msg, sizeof msg) != JOBQ_ERR_NONE) {
            errors[k] = strdup(msg);
        } else if (set_owner(c, parsed[k]) < 0) {
            jq_job_destroy(&parsed[k]);
            errors[k] = strdup("out of memory");
        } else if (!jq_table_reserve(d->table, d->cfg.max_jobs)) {
            jq_job_destroy(&parsed[k]);
            queue_full_message(d, msg, sizeof msg);
            errors[k] = strdup(msg);
        } else {
            nvalid++;
        }
    }
    uint64_t next = nvalid ? jq_sched_new_jobs(d->sched, nvalid) : 0;
    /* Every outcome is known before the first job is enqueued (but for
     * running out of memory then), so a token's first job can carry the
     * whole answer to the store. */
    uint32_t first = n;
    for (uint32_t k = 0; k < n; k++) {
        if (parsed[k] && !next) {
            jq_table_unreserve(d->table);
            jq_job_destroy(&parsed[k]);
            errors[k] = strdup("out of memory");
        } else if (parsed[k]) {
            uint64_t id = next++;
            if (jq_jobspec_resolve(parsed[k], id, back + (n - k), k, msg, sizeof msg) < 0) {
                jq_sched_withdraw(d->sched, id);
                jq_table_unreserve(d->table);
                jq_job_destroy(&parsed[k]);
                errors[k] = strdup(msg);
            } else {
                ids[k] = id;
                back[n - 1 - k] = id;
                if (first == n)
                    first = k;
            }
        }
    }
    t->created_nothing = first == n;
    if (t->claimed && first < n) {
        msgpack_sbuffer reply;
        msgpack_sbuffer_init(&reply);
        msgpack_packer rpk;
        msgpack_packer_init(&rpk, &reply, msgpack_sbuffer_write);
        msgpack_pack_array(&rpk, n);
        for (uint32_t k = 0; k < n; k++)
            pack_outcome(&rpk, ids[k], errors[k]);
        if (!reply.data || token_attach(parsed[first], t, &reply) < 0)
            jq_blob_free(&parsed[first]->client); /* a retry may then submit again */
        msgpack_sbuffer_destroy(&reply);
    }
    for (uint32_t k = 0; k < n; k++) {
        if (parsed[k] && enqueue(d, &parsed[k], now) < 0) {
            ids[k] = 0;
            errors[k] = strdup("out of memory");
        }
    }
    msgpack_pack_array(c->pk, n);
    for (uint32_t k = 0; k < n; k++) {
        pack_outcome(c->pk, ids[k], errors[k]);
        free(errors[k]);
    }
    free(parsed);
    free(errors);
    free(ids);
    free(back);
    if (nvalid)
        c->hold_ticket = jq_store_ticket(d->store);
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_submit_many_jobs(jq_call_t *c)
{
    token_call_t t;
    bool answered;
    jobq_code_t rc =
        token_begin(c, "submit_many_jobs", wire_map_get(c->args, "jobs"), &t, &answered);
    if (rc != JOBQ_ERR_NONE || answered)
        return rc;
    return token_end(c, &t, submit_many_jobs(c, &t));
}

static void pack_bool_msg(msgpack_packer *pk, bool ok, const char *fmt, uint64_t id, int extra)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, (unsigned long long)id, extra);
    msgpack_pack_array(pk, 2);
    if (ok)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    wire_pack_cstr(pk, msg);
}

/* Write-lock the live job `id`; when there is none, answer Ganeti's
 * [false, "Job N not found"] and return NULL (nothing locked). */
static jq_job_t *lock_live(jq_call_t *c, uint64_t id, jq_shard_t **shp)
{
    jq_shard_t *sh = jq_table_shard_for(c->d->table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    if (!job) {
        jq_shard_wrunlock(sh);
        pack_bool_msg(c->pk, false, "Job %llu not found", id, 0);
        return NULL;
    }
    *shp = sh;
    return job;
}

/* The caller may not change this job: unlock and refuse (nothing changed). */
static bool refuse_other(jq_call_t *c, jq_shard_t *sh, jq_job_t *job, jobq_code_t *rc)
{
    if (jq_call_owns(c, job->owner))
        return false;
    char owner[JQ_OWNER_MAX] = "";
    bool has = job->owner != NULL;
    if (has)
        snprintf(owner, sizeof owner, "%s", job->owner);
    uint64_t id = job->id;
    jq_shard_wrunlock(sh);
    *rc = jq_call_not_owner(c, id, has ? owner : NULL);
    return true;
}

jobq_code_t jq_handle_cancel_job(jq_call_t *c)
{
    jq_daemon_t *d = c->d;
    uint64_t id;
    if (jq_arg_job_id(c, "id", &id) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    jq_shard_t *sh;
    jq_job_t *job = lock_live(c, id, &sh);
    if (!job)
        return JOBQ_ERR_NONE;
    jobq_code_t denied;
    if (refuse_other(c, sh, job, &denied))
        return denied;
    int64_t now = jq_now_wall();
    jq_delta_t delta;
    jq_delta_init(&delta, job);
    jq_cancel_t r = jq_job_cancel(job, now, &delta);
    if (r != JQ_CANCEL_TOO_LATE)
        jq_shard_emit(sh, job, &delta, JQ_CHANGE_UPDATE, now);
    bool shown = jq_job_uncommitted(job);
    jq_shard_wrunlock(sh);
    if (r == JQ_CANCEL_DONE)
        jq_sched_final(d->sched, id, JQ_CANCELED);
    else if (r == JQ_CANCEL_PENDING)
        jq_sched_cancel(d->sched, id); /* parked: run it to its end; running: kick */
    if (shown)
        jq_call_hold(c, sh);
    if (r == JQ_CANCEL_DONE)
        pack_bool_msg(c->pk, true, "Job %llu canceled", id, 0);
    else if (r == JQ_CANCEL_PENDING)
        pack_bool_msg(c->pk, true, "Job %llu will be canceled", id, 0);
    else
        pack_bool_msg(c->pk, false, "Job %llu is no longer waiting in the queue", id, 0);
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_change_job_priority(jq_call_t *c)
{
    jq_daemon_t *d = c->d;
    uint64_t id;
    int64_t prio;
    if (jq_arg_job_id(c, "id", &id) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    const msgpack_object *po = wire_map_get(c->args, "priority");
    int rc = jq_priority_parse(po, &prio);
    if (rc == -1) {
        snprintf(c->err, c->errlen, "argument 'priority' must be an integer (-10, 0 or 10)");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    if (rc < 0) {
        if (po->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            snprintf(c->err, c->errlen, "Invalid priority %llu, allowed are -10, 0, 10",
                     (unsigned long long)po->via.u64);
        else if (po->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            snprintf(c->err, c->errlen, "Invalid priority %lld, allowed are -10, 0, 10",
                     (long long)po->via.i64);
        else /* a whole number sent as a float */
            snprintf(c->err, c->errlen, "Invalid priority %g, allowed are -10, 0, 10",
                     po->via.f64);
        return JOBQ_ERR_INVALID_PRIORITY;
    }
    jq_shard_t *sh;
    jq_job_t *job = lock_live(c, id, &sh);
    if (!job)
        return JOBQ_ERR_NONE;
    jobq_code_t denied;
    if (refuse_other(c, sh, job, &denied))
        return denied;
    int64_t now = jq_now_wall();
    jq_delta_t delta;
    jq_delta_init(&delta, job);
    jq_prio_change_t r = jq_job_change_priority(job, (int)prio, &delta);
    bool changed = r == JQ_PRIO_CHANGED && !jq_delta_empty(&delta, job);
    if (changed)
        jq_shard_emit(sh, job, &delta, JQ_CHANGE_UPDATE, now);
    int newprio = jq_job_priority(job);
    uint64_t serial = job->change_serial;
    bool shown = jq_job_uncommitted(job);
    jq_shard_wrunlock(sh);
    if (changed) /* queued: moves in line; parked or pending: runs at it later */
        jq_sched_set_priority(d->sched, id, newprio, serial);
    if (shown)
        jq_call_hold(c, sh);
    switch (r) {
    case JQ_PRIO_CHANGED:
        pack_bool_msg(c->pk, true,
                      "Priorities of pending opcodes for job %llu have been changed to %d",
                      id, (int)prio);
        break;
    case JQ_PRIO_FINISHED:
        pack_bool_msg(c->pk, false, "Job %llu is finished", id, 0);
        break;
    case JQ_PRIO_CANCELING:
        pack_bool_msg(c->pk, false, "Job %llu is cancelling", id, 0);
        break;
    case JQ_PRIO_NO_PENDING:
        pack_bool_msg(c->pk, false, "Job %llu had no pending opcodes", id, 0);
        break;
    }
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_archive_job(jq_call_t *c)
{
    uint64_t id;
    if (jq_arg_job_id(c, "id", &id) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    jq_shard_t *sh = jq_table_shard_for(c->d->table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    jobq_code_t denied;
    if (job && refuse_other(c, sh, job, &denied))
        return denied;
    bool ok = job && jq_shard_archive(sh, job, jq_now_wall()) == 0;
    bool shown = job && jq_job_uncommitted(job);
    jq_shard_wrunlock(sh);
    if (shown)
        jq_call_hold(c, sh);
    if (ok)
        msgpack_pack_true(c->pk);
    else
        msgpack_pack_false(c->pk);
    return JOBQ_ERR_NONE;
}

/* Jobs examined per shard lock hold: bounds how long a writer waits. */
#define AUTO_ARCHIVE_CHUNK 1024

static bool budget_spent(void *deadline)
{
    return jq_now_mono() >= *(int64_t *)deadline;
}

jobq_code_t jq_handle_auto_archive_jobs(jq_call_t *c)
{
    jq_daemon_t *d = c->d;
    int64_t age;
    double timeout;
    if (jq_arg_int(c, "age", true, -1, INT64_MAX / 1000000, &age) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    if (!wire_get_number(wire_map_get(c->args, "timeout"), &timeout) || timeout < 0 ||
        timeout > 86400.0 * 365) {
        snprintf(c->err, c->errlen, "argument 'timeout' (seconds, a number >= 0) is required");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    int64_t now = jq_now_wall();
    int64_t cutoff = age < 0 ? INT64_MAX : now - age * 1000000;
    int64_t deadline = jq_now_mono() + (int64_t)(timeout * 1e6);
    uint64_t archived = 0, remaining = 0;
    unsigned nshards = jq_table_shard_count(d->table);
    for (unsigned i = 0; i < nshards; i++) {
        jq_shard_t *sh = jq_table_shard_at(d->table, i);
        uint64_t after = 0;
        bool done = false;
        /* The budget is asked before each job: 0 archives nothing. */
        while (!done && !budget_spent(&deadline)) {
            jq_shard_wrlock(sh);
            archived += jq_shard_auto_archive(sh, now, cutoff, after, AUTO_ARCHIVE_CHUNK,
                                              budget_spent, &deadline, &after, &done);
            jq_shard_wrunlock(sh);
        }
        if (!done) { /* count what this shard still holds past `after` */
            jq_shard_rdlock(sh);
            remaining += jq_shard_live_size(sh) - jq_shard_live_after(sh, after);
            jq_shard_rdunlock(sh);
        }
    }
    if (archived)
        c->hold_ticket = jq_store_ticket(d->store); /* answered once committed */
    msgpack_pack_array(c->pk, 2);
    msgpack_pack_uint64(c->pk, archived);
    msgpack_pack_uint64(c->pk, remaining);
    return JOBQ_ERR_NONE;
}
