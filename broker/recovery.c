/* recovery.c: start-up from the store (JOBMODEL §4.4, and docs/operations.md
 * "Crash recovery"). Every live job comes back into the table; queued jobs
 * run again in priority order; waiting jobs go back to queued; jobs that
 * were running or canceling end `error` with a log entry and a result that
 * say the broker restarted while they ran. Already finished opcodes of a
 * partly run job keep their results, so it resumes where it stopped.
 * The client tokens of recent submissions come back too (tokens.h). */
#include "daemon.h"
#include "log.h"
#include "opreg.h"
#include "workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESTARTED_MESSAGE "jobqd restarted while this job ran; its opcode was interrupted"

typedef struct {
    jq_daemon_t *d;
    uint64_t *ids; /* every job loaded */
    size_t n, cap;
    uint64_t *tokened; /* the loaded jobs that carry a client token */
    size_t ntokened, captokened;
} loader_t;

static int note_tokened(loader_t *l, uint64_t id)
{
    if (l->ntokened == l->captokened) {
        size_t cap = l->captokened ? l->captokened * 2 : 64;
        uint64_t *grown = realloc(l->tokened, cap * sizeof *grown);
        if (!grown)
            return -1;
        l->tokened = grown;
        l->captokened = cap;
    }
    l->tokened[l->ntokened++] = id;
    return 0;
}

/* For a batch's restored answer: is job id stored (live or archived)? */
static bool job_stored(void *ctx, uint64_t id)
{
    jq_daemon_t *d = ctx;
    jq_shard_t *sh = jq_table_shard_for(d->table, id);
    jq_shard_rdlock(sh);
    bool live = jq_shard_find(sh, id) != NULL;
    jq_shard_rdunlock(sh);
    jq_status_t st;
    return live || jq_store_archived_status(d->store, id, &st);
}

/* Rebuild the token index from the jobs that carry a token, once every job
 * is loaded (a batch's answer names later jobs). */
static int restore_tokens(jq_daemon_t *d, const loader_t *l, int64_t now)
{
    for (size_t i = 0; i < l->ntokened; i++) {
        jq_shard_t *sh = jq_table_shard_for(d->table, l->tokened[i]);
        jq_shard_rdlock(sh);
        jq_job_t *job = jq_shard_find(sh, l->tokened[i]);
        jq_blob_t client = {0};
        int64_t received = job ? job->received_ts : 0;
        int rc = job ? jq_blob_set(&client, job->client.data, job->client.len) : 0;
        jq_shard_rdunlock(sh);
        if (rc < 0 || (client.data && jq_tokens_restore(d->tokens, client.data, client.len,
                                                        l->tokened[i], received, now,
                                                        job_stored, d) < 0)) {
            jq_blob_free(&client);
            return -1;
        }
        jq_blob_free(&client);
    }
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int insert_loaded(void *ctx, jq_job_t *job)
{
    loader_t *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint64_t *grown = realloc(l->ids, cap * sizeof *grown);
        if (!grown) {
            jq_job_destroy(&job);
            return -1;
        }
        l->ids = grown;
        l->cap = cap;
    }
    /* Opcodes this jobqd runs get their definitions; others keep their
     * names, and a job reaching one fails then, saying so (executor.c). */
    for (uint32_t i = 0; i < job->nops; i++) {
        const char *name = jq_op_name(&job->ops[i]);
        const jq_opdef_t *def = jq_opset_find(l->d->ops, name, strlen(name));
        if (def)
            jq_op_set_name(&job->ops[i], def, NULL, 0);
    }
    (void)jq_job_pack(&job); /* one allocation; unpacked (whole) when short of memory */
    uint64_t id = job->id;
    if (job->client.data && note_tokened(l, id) < 0) {
        jq_job_destroy(&job);
        return -1;
    }
    jq_shard_t *sh = jq_table_shard_for(l->d->table, id);
    jq_shard_wrlock(sh);
    int rc = jq_shard_insert_loaded(sh, job);
    jq_shard_wrunlock(sh);
    if (rc < 0) {
        jq_job_destroy(&job);
        return -1;
    }
    l->ids[l->n++] = id;
    return 0;
}

/* One job as it was when the daemon stopped: settled if it was not
 * finished, then known to the scheduler (queued, or final for its
 * dependants). -1 out of memory. */
static int settle(jq_daemon_t *d, uint64_t id, int64_t now, size_t *unfinished)
{
    jq_shard_t *sh = jq_table_shard_for(d->table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    jq_status_t st = (jq_status_t)job->status;
    if (!jq_status_final(st))
        (*unfinished)++;
    jq_delta_t delta;
    jq_delta_init(&delta, job);
    uint32_t cur = jq_job_current_op(job);
    jq_op_t *op = cur < job->nops ? &job->ops[cur] : NULL;
    if (d->cluster && st == JQ_RUNNING && op && op->def && op->def->remote &&
        op->status == JQ_RUNNING) {
        /* A cluster's new leader: the previous leader's worker may still
         * run it and come back with it (workers.h, jq_hub_adopt). */
        char name[JOBQ_MAX_OP_NAME + 1];
        snprintf(name, sizeof name, "%s", jq_op_name(op));
        uint16_t attempt = (uint16_t)op->attempt;
        int64_t timeout = op->timeout_us ? op->timeout_us : op->def->timeout_us;
        int prio = jq_job_priority(job);
        jq_shard_wrunlock(sh);
        if (jq_sched_load_remote(d->sched, id, prio) < 0)
            return -1;
        return jq_hub_adopt(d->hub, id, cur, attempt, name, prio, timeout);
    }
    if (st == JQ_RUNNING && op && op->def && op->def->remote && op->status == JQ_RUNNING &&
        op->retries < op->retry) {
        /* A worker's opcode that may be retried: its next attempt. */
        char msg[256];
        snprintf(msg, sizeof msg, "%s while %s ran attempt %u; retry %u of %u",
                 RESTARTED_MESSAGE, op->worker ? op->worker : "a worker", op->attempt,
                 op->retries + 1, op->retry);
        jq_job_log(job, now, "retry", msg, strlen(msg), 0, &delta);
        jq_job_op_unassign(job, true, &delta);
        op->status = JQ_QUEUED;
    } else if (st == JQ_RUNNING || st == JQ_CANCELING) {
        jq_job_log(job, now, "message", RESTARTED_MESSAGE, strlen(RESTARTED_MESSAGE), 0, &delta);
        jq_job_fail(job, now, "Unclean shutdown: " RESTARTED_MESSAGE, &delta);
    } else if (st == JQ_WAITING) {
        uint32_t i = jq_job_current_op(job);
        job->ops[i].status = JQ_QUEUED;
        jq_delta_mark(&delta, (int)i);
    }
    if (!jq_delta_empty(&delta, job))
        jq_shard_emit(sh, job, &delta, JQ_CHANGE_UPDATE, now);
    st = (jq_status_t)job->status;
    int prio = jq_job_priority(job);
    jq_shard_wrunlock(sh);
    return jq_sched_load(d->sched, id, prio, st);
}

int jq_recover(jq_daemon_t *d, jq_table_t *view, char *err, size_t errlen)
{
    loader_t l = {.d = d};
    uint64_t last_id = 0, narchived = 0;
    bool drained = false;
    int64_t t0 = jq_now_mono();
    uint64_t stored = view ? jq_store_live_count(d->store) : 0;
    if (view && stored != jq_table_live_count(view)) { /* never seen; a net all the same */
        jq_log(JQ_LOG_WARNING, "the follower's view holds %llu live jobs and the store %llu: "
                               "loading the queue from the store",
               (unsigned long long)jq_table_live_count(view), (unsigned long long)stored);
        view = NULL;
    }
    /* A cluster's new leader has its jobs in its view already (decoded as
     * they were applied): only the store's figures are read. */
    int rc = jq_store_load(d->store, view ? NULL : insert_loaded, &l, &last_id, &drained,
                           &narchived, err, errlen);
    if (rc == 0 && view && jq_table_take_live(view, insert_loaded, &l) < 0) {
        snprintf(err, errlen, "out of memory taking the jobs over from the view");
        rc = -1;
    }
    if (rc < 0) {
        free(l.ids);
        free(l.tokened);
        return -1;
    }
    jq_sched_set_last_id(d->sched, last_id);
    atomic_store(&d->drained, drained);
    jq_table_add_archived(d->table, narchived);
    int64_t now = jq_now_wall();
    if (restore_tokens(d, &l, now) < 0) {
        snprintf(err, errlen, "out of memory restoring client tokens");
        free(l.ids);
        free(l.tokened);
        return -1;
    }
    free(l.tokened);
    /* In id order (a view hands its jobs over shard by shard): a job is
     * known to the scheduler before any job that depends on it — a cluster's
     * executors already run while its new leader loads the queue. */
    if (l.n > 1) /* (no jobs: no array at all) */
        qsort(l.ids, l.n, sizeof *l.ids, cmp_id);
    size_t nsettled = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (settle(d, l.ids[i], now, &nsettled) < 0) {
            snprintf(err, errlen, "out of memory recovering job %llu",
                     (unsigned long long)l.ids[i]);
            free(l.ids);
            return -1;
        }
    }
    uint64_t live = jq_table_live_count(d->table);
    if (live || narchived)
        jq_log(JQ_LOG_INFO, "recovered %llu live jobs (%zu to run or settle) and %llu archived "
                            "in %.2f s%s; last job id %llu%s",
                (unsigned long long)live, nsettled, (unsigned long long)narchived,
                (double)(jq_now_mono() - t0) / 1e6, view ? " (from the follower's view)" : "",
                (unsigned long long)last_id,
                drained ? "; the queue is drained" : "");
    free(l.ids);
    return 0;
}

/* The worker opcodes known before any worker connects: those the store
 * remembers, then the config file's names (a name already declared keeps
 * its declaration). New ones are stored. */
int jq_load_worker_opcodes(jq_daemon_t *d, char *err, size_t errlen)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    const jq_opset_t builtins = {d->opset.defs, d->opset.count, NULL};
    int rc = jq_store_get_opcodes(d->store, &sb, err, errlen);
    if (rc == 0 && sb.size &&
        jq_opreg_load(d->opset.reg, &builtins, sb.data, sb.size, err, errlen) < 0)
        rc = -1;
    msgpack_sbuffer_destroy(&sb);
    bool changed = false;
    for (unsigned i = 0; rc == 0 && i < d->cfg.nworker_opcodes; i++) {
        const char *name = d->cfg.worker_opcodes[i];
        if (jq_opreg_find(d->opset.reg, name, strlen(name)))
            continue;
        msgpack_object o = {.type = MSGPACK_OBJECT_STR,
                            .via.str = {.ptr = name, .size = (uint32_t)strlen(name)}};
        const jq_opdef_t *def;
        bool ch;
        char why[256];
        if (jq_opreg_declare(d->opset.reg, &builtins, &o, &def, &ch, why, sizeof why) < 0) {
            snprintf(err, errlen, "worker-opcode %s: %s", name, why);
            rc = -1;
        }
        changed |= ch;
    }
    if (rc == 0 && changed) {
        msgpack_sbuffer_init(&sb);
        if (jq_opreg_encode(d->opset.reg, &sb) < 0 ||
            jq_store_set_opcodes(d->store, sb.data, sb.size) < 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
        msgpack_sbuffer_destroy(&sb);
    }
    return rc;
}

