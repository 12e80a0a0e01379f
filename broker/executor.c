/* executor.c: executor threads — pick jobs from the scheduler, walk their
 * opcodes through waiting → running → end (JOBMODEL §1.5), check
 * dependencies (§1.7), and step running opcodes from a timer heap.
 *
 * Every change goes through the table's write protocol (lock, transition,
 * emit, unlock); opcode code (start/step) runs with no lock held. */
#include "executor.h"
#include "wire.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct jq_executor {
    unsigned index;
    pthread_t thread;
    struct jq_executors *pool;
    jq_task_t **heap; /* by deadline */
    size_t ntasks, cap;
};

struct jq_executors {
    jq_table_t *table;
    jq_sched_t *sched;
    jq_store_t *store;
    const jq_opset_t *ops;
    unsigned n;
    jq_executor_t ex[];
};

int64_t jq_now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t jq_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- timer heap of tasks ---- */

static void heap_set(jq_executor_t *ex, size_t i, jq_task_t *t)
{
    ex->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(jq_executor_t *ex, size_t i)
{
    jq_task_t *t = ex->heap[i];
    while (i > 0 && ex->heap[(i - 1) / 2]->deadline > t->deadline) {
        heap_set(ex, i, ex->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(ex, i, t);
}

static void heap_down(jq_executor_t *ex, size_t i)
{
    jq_task_t *t = ex->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ex->ntasks)
            break;
        if (c + 1 < ex->ntasks && ex->heap[c + 1]->deadline < ex->heap[c]->deadline)
            c++;
        if (ex->heap[c]->deadline >= t->deadline)
            break;
        heap_set(ex, i, ex->heap[c]);
        i = c;
    }
    heap_set(ex, i, t);
}

static int heap_add(jq_executor_t *ex, jq_task_t *t)
{
    if (ex->ntasks == ex->cap) {
        size_t cap = ex->cap ? ex->cap * 2 : 64;
        jq_task_t **grown = realloc(ex->heap, cap * sizeof *grown);
        if (!grown)
            return -1;
        ex->heap = grown;
        ex->cap = cap;
    }
    ex->heap[ex->ntasks++] = t;
    heap_up(ex, ex->ntasks - 1);
    return 0;
}

static void heap_remove(jq_executor_t *ex, jq_task_t *t)
{
    size_t i = t->heap_index;
    jq_task_t *last = ex->heap[--ex->ntasks];
    if (i == ex->ntasks)
        return;
    heap_set(ex, i, last);
    heap_up(ex, i);
    heap_down(ex, last->heap_index);
}

/* ---- job transitions ---- */

static void task_free(jq_task_t **tp)
{
    jq_task_t *t = *tp;
    if (t->def && t->def->cleanup)
        t->def->cleanup(t);
    jq_blob_free(&t->result);
    free(t);
    *tp = NULL;
}

/* After a job's opcode ended (job locked by the caller): either the job is
 * final, or its next opcode goes back to the run queue as Ganeti defers. */
static void release_job(jq_executors_t *p, jq_shard_t *sh, jq_job_t *job)
{
    uint64_t id = job->id;
    job->runner = -1;
    if (jq_status_final((jq_status_t)job->status)) {
        job->sched_state = JQ_SCHED_DONE;
        jq_shard_wrunlock(sh);
        jq_sched_release(p->sched);
        jq_sched_job_finished(p->sched, id);
        return;
    }
    int prio;
    uint32_t gen = jq_job_requeue(job, &prio);
    jq_shard_wrunlock(sh);
    jq_sched_release(p->sched);
    jq_sched_push(p->sched, id, prio, gen);
}

/* Lock the job held by this executor (ACTIVE at generation gen). */
static jq_job_t *lock_held(jq_executors_t *p, uint64_t id, uint32_t gen, jq_shard_t **shp)
{
    jq_shard_t *sh = jq_table_shard_for(p->table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    if (!job || job->sched_gen != gen || job->sched_state != JQ_SCHED_ACTIVE) {
        jq_shard_wrunlock(sh);
        return NULL;
    }
    *shp = sh;
    return job;
}

/* End the held job's current opcode: canceled when a cancel is pending,
 * else success or error. */
static void end_op(jq_executors_t *p, uint64_t id, uint32_t gen, bool success,
                   jq_blob_t *result, const char *error)
{
    jq_shard_t *sh;
    jq_job_t *job = lock_held(p, id, gen, &sh);
    if (!job) {
        jq_sched_release(p->sched);
        return;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    uint32_t i = jq_job_current_op(job);
    if (i < job->nops && job->ops[i].status == JQ_CANCELING) {
        jq_job_mark_canceled(job, now, &d);
    } else if (success) {
        jq_job_op_finish(job, now, true, result, &d);
    } else {
        jq_blob_t err = {0};
        jq_blob_exec_error(&err, error);
        jq_job_op_finish(job, now, false, &err, &d);
        jq_blob_free(&err);
    }
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    release_job(p, sh, job);
}

static void finish_task(jq_executor_t *ex, jq_task_t *t, jq_step_t r)
{
    if (t->canceled)
        end_op(ex->pool, t->job_id, t->gen, false, NULL, "Job canceled by request");
    else if (r == JQ_STEP_SUCCESS)
        end_op(ex->pool, t->job_id, t->gen, true, &t->result, NULL);
    else
        end_op(ex->pool, t->job_id, t->gen, false, NULL, t->error);
    task_free(&t);
}

bool jq_task_log(jq_task_t *t, const char *message)
{
    jq_shard_t *sh;
    jq_job_t *job = lock_held(t->ex->pool, t->job_id, t->gen, &sh);
    if (!job) {
        t->canceled = true;
        return false;
    }
    uint32_t i = jq_job_current_op(job);
    if (i >= job->nops || job->ops[i].status != JQ_RUNNING) {
        jq_shard_wrunlock(sh);
        t->canceled = true;
        return false;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    size_t len = strnlen(message, JOBQ_MAX_LOG_MESSAGE);
    if (jq_job_log(job, now, "message", message, len, &d) == 0)
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    jq_shard_wrunlock(sh);
    return true;
}

/* Start the held job's current opcode: running, then the opcode's start
 * hook with no lock held, then the first step on the next turn. */
static void start_op(jq_executor_t *ex, uint64_t id, uint32_t gen)
{
    jq_executors_t *p = ex->pool;
    jq_shard_t *sh;
    jq_job_t *job = lock_held(p, id, gen, &sh);
    if (!job) {
        jq_sched_release(p->sched);
        return;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    uint32_t i = jq_job_current_op(job);
    if (i >= job->nops || job->ops[i].status != JQ_WAITING) {
        if (i < job->nops && job->ops[i].status == JQ_CANCELING)
            jq_job_mark_canceled(job, now, &d);
        if (!jq_delta_empty(&d, job))
            jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
        release_job(p, sh, job);
        return;
    }
    jq_job_op_running(job, now, &d);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    job->runner = (int8_t)ex->index;
    const jq_opdef_t *def = job->ops[i].def;
    jq_blob_t args = {0};
    int copied = jq_blob_set(&args, job->ops[i].args.data, job->ops[i].args.len);
    jq_shard_wrunlock(sh);

    jq_task_t *t = calloc(1, sizeof *t);
    char err[JQ_TASK_ERROR_MAX] = "out of memory";
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    bool ok = t && copied == 0 &&
              msgpack_unpack_next(&up, args.data, args.len, NULL) == MSGPACK_UNPACK_SUCCESS;
    if (t) {
        *t = (jq_task_t){.job_id = id, .gen = gen, .ex = ex, .now = jq_now_mono()};
        t->deadline = t->now;
        if (ok && def->start(t, &up.data, err, sizeof err) < 0)
            ok = false;
        t->def = def; /* from here cleanup runs */
    }
    msgpack_unpacked_destroy(&up);
    jq_blob_free(&args);
    if (!ok || heap_add(ex, t) < 0) {
        end_op(p, id, gen, false, NULL, err);
        if (t)
            task_free(&t);
    }
}

static void fail_held(jq_executors_t *p, uint64_t id, uint32_t gen, const char *msg,
                      bool cancel)
{
    jq_shard_t *sh;
    jq_job_t *job = lock_held(p, id, gen, &sh);
    if (!job) {
        jq_sched_release(p->sched);
        return;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    if (cancel)
        jq_job_mark_canceled(job, now, &d);
    else
        jq_job_fail(job, now, msg, &d);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    release_job(p, sh, job);
}

static void status_list(uint8_t mask, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int s = 0; s < JQ_STATUS__COUNT && off < len; s++)
        if ((mask >> s) & 1)
            off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? ", " : "",
                                    jq_status_name((jq_status_t)s));
}

/* Dependencies of the current opcode, in order (JOBMODEL §1.7). Returns
 * true when the opcode may start; otherwise the job was parked, failed or
 * canceled and is no longer ours. */
static bool check_deps(jq_executors_t *p, uint64_t id, uint32_t gen,
                       const jq_dep_t *deps, unsigned ndeps)
{
    char msg[512];
    for (unsigned k = 0; k < ndeps; k++) {
        uint64_t dep_id = (uint64_t)deps[k].job_id;
        if (dep_id == id) {
            fail_held(p, id, gen, "Job can't depend on itself", false);
            return false;
        }
        jq_status_t st;
        switch (jq_sched_check_dep(p->sched, p->table, dep_id, id, gen, &st)) {
        case JQ_DEP_PARKED:
            return false;
        case JQ_DEP_RECHECK: {
            /* The job changed while we looked (a cancel), or it could not
             * be parked (out of memory): never start it past the check. */
            jq_shard_t *sh;
            jq_job_t *job = lock_held(p, id, gen, &sh);
            if (!job) {
                jq_sched_release(p->sched);
                return false;
            }
            uint32_t cur = jq_job_current_op(job);
            if (cur < job->nops && job->ops[cur].status == JQ_CANCELING) {
                jq_shard_wrunlock(sh);
                return true; /* start_op finishes the cancel */
            }
            release_job(p, sh, job); /* back to the run queue, checked again */
            return false;
        }
        case JQ_DEP_NOT_FOUND:
            /* Not in the table: archived (and final for good) or absent. */
            if (p->store && jq_store_archived_status(p->store, dep_id, &st))
                break;
            snprintf(msg, sizeof msg, "Dependency error: job %llu not found",
                     (unsigned long long)dep_id);
            fail_held(p, id, gen, msg, false);
            return false;
        case JQ_DEP_FINAL:
            break;
        }
        uint8_t mask = deps[k].status_mask;
        if (st == JQ_CANCELED && !(mask & (1u << JQ_CANCELED))) {
            fail_held(p, id, gen, NULL, true);
            return false;
        }
        if (mask == 0 || (mask & (1u << st)))
            continue;
        char allowed[128];
        status_list(mask, allowed, sizeof allowed);
        snprintf(msg, sizeof msg,
                 "Dependency job %llu finished with status '%s', not one of '%s' as required",
                 (unsigned long long)dep_id, jq_status_name(st), allowed);
        fail_held(p, id, gen, msg, false);
        return false;
    }
    return true;
}

/* A run-queue entry: take the job if the entry is still current. */
static void pick_up(jq_executor_t *ex, jq_runnable_t run)
{
    jq_executors_t *p = ex->pool;
    jq_shard_t *sh = jq_table_shard_for(p->table, run.job_id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, run.job_id);
    if (!job || job->sched_gen != run.gen ||
        (job->sched_state != JQ_SCHED_QUEUED && job->sched_state != JQ_SCHED_DEPWAIT) ||
        jq_status_final((jq_status_t)job->status)) {
        jq_shard_wrunlock(sh); /* stale entry, or canceled while queued */
        jq_sched_release(p->sched);
        return;
    }
    job->sched_state = JQ_SCHED_ACTIVE;
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    uint32_t i = jq_job_current_op(job);
    if (job->ops[i].status == JQ_CANCELING) {
        jq_job_mark_canceled(job, now, &d);
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
        release_job(p, sh, job);
        return;
    }
    jq_job_pickup(job, now, &d);
    if (!jq_delta_empty(&d, job))
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    jq_dep_t deps[JOBQ_MAX_DEPENDS];
    unsigned ndeps = job->ops[i].ndeps;
    if (ndeps) /* deps is NULL when there are none: memcpy(_, NULL, 0) is UB */
        memcpy(deps, job->ops[i].deps, ndeps * sizeof *deps);
    jq_shard_wrunlock(sh);

    if (check_deps(p, run.job_id, run.gen, deps, ndeps))
        start_op(ex, run.job_id, run.gen);
}

/* Steps per turn: then the executor looks at the scheduler again, so kicks,
 * stops and new jobs wait for at most this many steps. */
#define STEPS_PER_TURN 64

static void run_due(jq_executor_t *ex, int64_t now)
{
    for (int steps = 0; steps < STEPS_PER_TURN && ex->ntasks && ex->heap[0]->deadline <= now;
         steps++) {
        jq_task_t *t = ex->heap[0];
        t->now = now;
        jq_step_t r = t->def->step(t);
        if (r == JQ_STEP_CONTINUE && !t->canceled) {
            heap_down(ex, 0);
            continue;
        }
        heap_remove(ex, t);
        finish_task(ex, t, r);
        now = jq_now_mono();
    }
}

/* A kicked job: if its opcode is being canceled, end it now. */
static void on_kick(jq_executor_t *ex, uint64_t id)
{
    for (size_t i = 0; i < ex->ntasks; i++) {
        jq_task_t *t = ex->heap[i];
        if (t->job_id != id)
            continue;
        jq_shard_t *sh = jq_table_shard_for(ex->pool->table, id);
        jq_shard_rdlock(sh);
        jq_job_t *job = jq_shard_find(sh, id);
        uint32_t cur = job ? jq_job_current_op(job) : 0;
        bool canceling = job && cur < job->nops && job->ops[cur].status == JQ_CANCELING;
        jq_shard_rdunlock(sh);
        if (canceling) {
            t->canceled = true;
            heap_remove(ex, t);
            finish_task(ex, t, JQ_STEP_FAIL);
        }
        return;
    }
}

static void *executor_main(void *arg)
{
    jq_executor_t *ex = arg;
    jq_executors_t *p = ex->pool;
    uint64_t kicked[64];
    char name[16];
    snprintf(name, sizeof name, "jobqd-exec%u", ex->index);
    pthread_setname_np(pthread_self(), name); /* for top -H and perf */
    for (;;) {
        int64_t now = jq_now_mono();
        int64_t deadline = ex->ntasks ? ex->heap[0]->deadline : INT64_MAX;
        jq_runnable_t run;
        size_t nkicked = 0;
        jq_sched_event_t ev = jq_sched_wait(p->sched, ex->index, now, deadline, &run,
                                            kicked, 64, &nkicked);
        if (ev == JQ_EV_STOP)
            break;
        if (ev == JQ_EV_RUN)
            pick_up(ex, run);
        else if (ev == JQ_EV_KICK)
            for (size_t k = 0; k < nkicked; k++)
                on_kick(ex, kicked[k]);
        else
            run_due(ex, jq_now_mono());
    }
    while (ex->ntasks) {
        jq_task_t *t = ex->heap[ex->ntasks - 1];
        ex->ntasks--;
        end_op(p, t->job_id, t->gen, false, NULL, "Interrupted by broker shutdown");
        task_free(&t);
    }
    return NULL;
}

jq_executors_t *jq_executors_new(jq_table_t *table, jq_sched_t *sched,
                                 const jq_opset_t *ops, jq_store_t *store, unsigned n)
{
    if (n == 0 || n > JQ_MAX_EXECUTORS)
        return NULL;
    jq_executors_t *p = calloc(1, sizeof *p + n * sizeof(jq_executor_t));
    if (!p)
        return NULL;
    p->table = table;
    p->sched = sched;
    p->store = store;
    p->ops = ops;
    for (unsigned i = 0; i < n; i++) {
        p->ex[i].index = i;
        p->ex[i].pool = p;
        if (pthread_create(&p->ex[i].thread, NULL, executor_main, &p->ex[i]) != 0) {
            p->n = i;
            jq_executors_destroy(&p);
            return NULL;
        }
        p->n = i + 1;
    }
    return p;
}

void jq_executors_destroy(jq_executors_t **pp)
{
    if (!pp || !*pp)
        return;
    jq_executors_t *p = *pp;
    jq_sched_stop(p->sched);
    for (unsigned i = 0; i < p->n; i++) {
        pthread_join(p->ex[i].thread, NULL);
        free(p->ex[i].heap);
    }
    free(p);
    *pp = NULL;
}
