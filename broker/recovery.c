/* recovery.c: start-up from the store (JOBMODEL §4.4, and docs/operations.md
 * "Crash recovery"). Every live job comes back into the table; queued jobs
 * run again in priority order; waiting jobs go back to queued; jobs that
 * were running or canceling end `error` with a log entry and a result that
 * say the broker restarted while they ran. Already finished opcodes of a
 * partly run job keep their results, so it resumes where it stopped. */
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESTARTED_MESSAGE "jobqd restarted while this job ran; its opcode was interrupted"

typedef struct {
    jq_daemon_t *d;
    uint64_t *ids; /* jobs to settle */
    size_t n, cap;
} loader_t;

static int insert_loaded(void *ctx, jq_job_t *job)
{
    loader_t *l = ctx;
    bool settle = !jq_status_final((jq_status_t)job->status);
    if (settle && l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint64_t *grown = realloc(l->ids, cap * sizeof *grown);
        if (!grown) {
            jq_job_destroy(&job);
            return -1;
        }
        l->ids = grown;
        l->cap = cap;
    }
    uint64_t id = job->id;
    jq_shard_t *sh = jq_table_shard_for(l->d->table, id);
    jq_shard_wrlock(sh);
    int rc = jq_shard_insert_loaded(sh, job);
    jq_shard_wrunlock(sh);
    if (rc < 0) {
        jq_job_destroy(&job);
        return -1;
    }
    if (settle)
        l->ids[l->n++] = id;
    return 0;
}

/* One job that was not finished when the daemon stopped. */
static void settle(jq_daemon_t *d, uint64_t id, int64_t now)
{
    jq_shard_t *sh = jq_table_shard_for(d->table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    jq_status_t st = (jq_status_t)job->status;
    jq_delta_t delta;
    jq_delta_init(&delta, job);
    bool run = true;
    if (st == JQ_RUNNING || st == JQ_CANCELING) {
        jq_job_log(job, now, "message", RESTARTED_MESSAGE, strlen(RESTARTED_MESSAGE), &delta);
        jq_job_fail(job, now, "Unclean shutdown: " RESTARTED_MESSAGE, &delta);
        run = false;
    } else if (st == JQ_WAITING) {
        uint32_t i = jq_job_current_op(job);
        job->ops[i].status = JQ_QUEUED;
        jq_delta_mark(&delta, (int)i);
    }
    if (!jq_delta_empty(&delta, job))
        jq_shard_emit(sh, job, &delta, JQ_CHANGE_UPDATE, now);
    job->sched_state = run ? JQ_SCHED_QUEUED : JQ_SCHED_DONE;
    int prio = jq_job_priority(job);
    jq_shard_wrunlock(sh);
    if (run)
        jq_sched_push(d->sched, id, prio, 0);
}

int jq_recover(jq_daemon_t *d, char *err, size_t errlen)
{
    loader_t l = {.d = d};
    uint64_t last_id = 0, narchived = 0;
    bool drained = false;
    int64_t t0 = jq_now_mono();
    if (jq_store_load(d->store, insert_loaded, &l, &last_id, &drained, &narchived, err,
                      errlen) < 0) {
        free(l.ids);
        return -1;
    }
    atomic_store(&d->last_id, last_id);
    atomic_store(&d->drained, drained);
    jq_table_add_archived(d->table, narchived);
    int64_t now = jq_now_wall();
    for (size_t i = 0; i < l.n; i++)
        settle(d, l.ids[i], now);
    uint64_t live = jq_table_live_count(d->table);
    if (live || narchived)
        fprintf(stderr, "jobqd: recovered %llu live jobs (%zu to run or settle) and %llu archived "
                        "in %.2f s; last job id %llu%s\n",
                (unsigned long long)live, l.n, (unsigned long long)narchived,
                (double)(jq_now_mono() - t0) / 1e6, (unsigned long long)last_id,
                drained ? "; the queue is drained" : "");
    free(l.ids);
    return 0;
}
