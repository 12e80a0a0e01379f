/* executor.c: executor threads — take jobs from the scheduler, walk their
 * opcodes through waiting → running → end (JOBMODEL §1.5), check
 * dependencies (§1.7), and step running opcodes from a timer heap.
 *
 * Every change goes through the table's write protocol (lock, transition,
 * emit, unlock); opcode code (start/step) runs with no lock held. The
 * scheduler says which executor holds a job, so an executor that locks a
 * job it holds never has to ask whether it still may change it. */
#include "executor.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* While the store is far behind, due steps (which log) are put off by
 * this much at a time: a busy log slows itself, and the executor stays
 * free for cancels, stops and new jobs meanwhile. */
#define STEP_DEFER_US 5000

struct jq_executor {
    unsigned index;
    pthread_t thread;
    struct jq_executors *pool;
    jq_heap_t timers;     /* started tasks, by deadline */
    jq_task_t **starting; /* tasks waiting for their running record's commit */
    size_t nstarting, capstarting;
};

struct jq_executors {
    jq_executors_opts_t o;
    _Atomic uint32_t max_log_entries; /* o.max_log_entries, changed by reloads */
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

static bool task_before(const void *a, const void *b)
{
    return ((const jq_task_t *)a)->deadline < ((const jq_task_t *)b)->deadline;
}

static void task_moved(void *t, size_t index)
{
    ((jq_task_t *)t)->heap_index = index;
}

static void task_free(jq_task_t **tp)
{
    jq_task_t *t = *tp;
    if (t->started && t->def->cleanup)
        t->def->cleanup(t);
    jq_blob_free(&t->result);
    jq_blob_free(&t->args);
    free(t);
    *tp = NULL;
}

/* ---- job transitions ---- */

void jq_job_release(jq_sched_t *sched, jq_shard_t *sh, jq_job_t *job)
{
    uint64_t id = job->id;
    jq_status_t st = (jq_status_t)job->status;
    if (jq_status_final(st)) {
        jq_shard_wrunlock(sh);
        jq_sched_done(sched, id, st);
        return;
    }
    int prio = jq_job_priority(job);
    uint64_t serial = job->change_serial;
    jq_shard_wrunlock(sh);
    jq_sched_requeue(sched, id, prio, serial);
}

static void release_job(jq_executors_t *p, jq_shard_t *sh, jq_job_t *job)
{
    jq_job_release(p->o.sched, sh, job);
}

/* Lock a job this executor holds; NULL (nothing locked) when it is gone. */
static jq_job_t *lock_job(jq_executors_t *p, uint64_t id, jq_shard_t **shp)
{
    jq_shard_t *sh = jq_table_shard_for(p->o.table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    if (!job) {
        jq_shard_wrunlock(sh);
        return NULL;
    }
    *shp = sh;
    return job;
}

static bool op_canceling(const jq_job_t *job)
{
    uint32_t i = jq_job_current_op(job);
    return i < job->nops && job->ops[i].status == JQ_CANCELING;
}

void jq_job_end_op(jq_sched_t *sched, jq_shard_t *sh, jq_job_t *job, bool cancel,
                   bool success, jq_blob_t *result, const char *error)
{
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    if (cancel || op_canceling(job)) {
        jq_job_mark_canceled(job, now, &d);
    } else if (success) {
        jq_job_op_finish(job, now, true, result, &d);
    } else {
        jq_blob_t err = {0};
        jq_blob_exec_error(&err, error);
        jq_job_op_finish(job, now, false, &err, &d);
        jq_blob_free(&err);
    }
    if (!jq_delta_empty(&d, job))
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    jq_job_release(sched, sh, job);
}

/* End the held job's current opcode (see jq_job_end_op). */
static void end_op_as(jq_executors_t *p, uint64_t id, bool cancel, bool success,
                      jq_blob_t *result, const char *error)
{
    jq_shard_t *sh;
    jq_job_t *job = lock_job(p, id, &sh);
    if (!job) {
        jq_sched_done(p->o.sched, id, JQ_ERROR);
        return;
    }
    jq_job_end_op(p->o.sched, sh, job, cancel, success, result, error);
}

static void end_op(jq_executors_t *p, uint64_t id, bool success, jq_blob_t *result,
                   const char *error)
{
    end_op_as(p, id, false, success, result, error);
}

static void finish_task(jq_executor_t *ex, jq_task_t *t, jq_step_t r)
{
    if (t->canceled)
        end_op(ex->pool, t->job_id, false, NULL, "Job canceled by request");
    else if (r == JQ_STEP_SUCCESS)
        end_op(ex->pool, t->job_id, true, &t->result, NULL);
    else
        end_op(ex->pool, t->job_id, false, NULL, t->error);
    task_free(&t);
}

bool jq_task_log(jq_task_t *t, const char *message)
{
    jq_executors_t *p = t->ex->pool;
    jq_shard_t *sh;
    jq_job_t *job = lock_job(p, t->job_id, &sh);
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
    uint32_t max_log = atomic_load_explicit(&p->max_log_entries, memory_order_relaxed);
    if (jq_job_log(job, now, "message", message, len, max_log, &d) == 0)
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    jq_shard_wrunlock(sh);
    return true;
}

/* Run the opcode's start hook and put the task on the timer heap; a
 * failure ends the opcode. */
static void launch(jq_executor_t *ex, jq_task_t *t)
{
    char err[JQ_TASK_ERROR_MAX] = "out of memory";
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    bool ok = msgpack_unpack_next(&up, t->args.data, t->args.len, NULL) == MSGPACK_UNPACK_SUCCESS;
    t->now = t->deadline = jq_now_mono();
    if (ok && t->def->start(t, &up.data, err, sizeof err) < 0)
        ok = false;
    t->started = true; /* from here cleanup runs */
    msgpack_unpacked_destroy(&up);
    jq_blob_free(&t->args);
    if (!ok || jq_heap_push(&ex->timers, t) < 0) {
        end_op(ex->pool, t->job_id, false, NULL, err);
        task_free(&t);
    }
}

static int reserve_starting(jq_executor_t *ex)
{
    if (ex->nstarting < ex->capstarting)
        return 0;
    size_t cap = ex->capstarting ? ex->capstarting * 2 : 16;
    jq_task_t **grown = realloc(ex->starting, cap * sizeof *grown);
    if (!grown)
        return -1;
    ex->starting = grown;
    ex->capstarting = cap;
    return 0;
}

/* The held job's current opcode goes running; the opcode itself starts
 * once that is committed (see executor.h). */
static void start_op(jq_executor_t *ex, uint64_t id)
{
    jq_executors_t *p = ex->pool;
    jq_shard_t *sh;
    jq_job_t *job = lock_job(p, id, &sh);
    if (!job) {
        jq_sched_done(p->o.sched, id, JQ_ERROR);
        return;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    uint32_t i = jq_job_current_op(job);
    if (i >= job->nops || job->ops[i].status != JQ_WAITING || !job->ops[i].def) {
        if (op_canceling(job)) {
            jq_job_mark_canceled(job, now, &d);
        } else if (i < job->nops && job->ops[i].status == JQ_WAITING) {
            /* A stored job whose opcode went away (recovery keeps it). */
            char msg[200];
            snprintf(msg, sizeof msg, "opcode '%s' is not known to this jobqd: nothing here "
                                      "runs it any more", jq_op_name(&job->ops[i]));
            jq_blob_t err = {0};
            jq_blob_exec_error(&err, msg);
            jq_job_op_finish(job, now, false, &err, &d);
            jq_blob_free(&err);
        }
        if (!jq_delta_empty(&d, job))
            jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
        release_job(p, sh, job);
        return;
    }
    if (job->ops[i].def->remote) {
        /* A worker's: it waits (picked up) for the hub to hand it out. */
        jq_shard_wrunlock(sh);
        jq_sched_to_remote(p->o.sched, id);
        return;
    }
    jq_job_op_running(job, now, &d);
    if (jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now) < 0) {
        /* No record says it runs: it must not start (the next record
         * catches up). */
        jq_shard_wrunlock(sh);
        end_op(p, id, false, NULL, "out of memory: the opcode's start could not be recorded");
        return;
    }
    jq_task_t *t = calloc(1, sizeof *t);
    if (t) {
        t->job_id = id;
        t->def = job->ops[i].def;
        t->ex = ex;
        t->heap_index = JQ_HEAP_NONE;
    }
    int copied = t ? jq_blob_set(&t->args, job->ops[i].args.data, job->ops[i].args.len) : -1;
    jq_shard_wrunlock(sh); /* flushes the record: the ticket below covers it */
    if (copied < 0 || reserve_starting(ex) < 0) {
        if (t)
            task_free(&t);
        end_op(p, id, false, NULL, "out of memory");
        return;
    }
    t->ticket = p->o.store ? jq_store_ticket(p->o.store) : 0;
    ex->starting[ex->nstarting++] = t;
}

/* Start every task whose running record is committed. */
static void start_committed(jq_executor_t *ex, uint64_t durable)
{
    size_t keep = 0;
    for (size_t i = 0; i < ex->nstarting; i++) {
        jq_task_t *t = ex->starting[i];
        if (t->ticket <= durable)
            launch(ex, t);
        else
            ex->starting[keep++] = t;
    }
    ex->nstarting = keep;
}

static uint64_t want_durable(const jq_executor_t *ex)
{
    uint64_t want = 0;
    for (size_t i = 0; i < ex->nstarting; i++)
        if (!want || ex->starting[i]->ticket < want)
            want = ex->starting[i]->ticket;
    return want;
}

/* The held job's current opcode fails on a dependency: it gets the error,
 * every later opcode "Preceding opcode failed" (or the job is canceled). */
static void dep_failed(jq_executors_t *p, uint64_t id, const char *msg, bool cancel)
{
    end_op_as(p, id, cancel, false, NULL, msg);
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
static bool check_deps(jq_executors_t *p, uint64_t id, const jq_dep_t *deps, unsigned ndeps)
{
    char msg[512];
    for (unsigned k = 0; k < ndeps; k++) {
        uint64_t dep_id = (uint64_t)deps[k].job_id;
        if (dep_id == id) {
            dep_failed(p, id, "Job can't depend on itself", false);
            return false;
        }
        jq_status_t st;
        switch (jq_sched_check_dep(p->o.sched, id, dep_id, &st)) {
        case JQ_DEP_PARKED:
            return false;
        case JQ_DEP_CANCELED:
            return true; /* start_op finishes the cancel */
        case JQ_DEP_NOT_FOUND:
            /* Not live: archived (and final for good) or absent. */
            if (p->o.store && jq_store_archived_status(p->o.store, dep_id, &st))
                break;
            snprintf(msg, sizeof msg, "Dependency error: job %llu not found",
                     (unsigned long long)dep_id);
            dep_failed(p, id, msg, false);
            return false;
        case JQ_DEP_FINAL:
            break;
        }
        uint8_t mask = deps[k].status_mask;
        if (st == JQ_CANCELED && !(mask & (1u << JQ_CANCELED))) {
            dep_failed(p, id, NULL, true);
            return false;
        }
        if (mask == 0 || (mask & (1u << st)))
            continue;
        char allowed[128];
        status_list(mask, allowed, sizeof allowed);
        snprintf(msg, sizeof msg,
                 "Dependency job %llu finished with status '%s', not one of '%s' as required",
                 (unsigned long long)dep_id, jq_status_name(st), allowed);
        dep_failed(p, id, msg, false);
        return false;
    }
    return true;
}

/* The scheduler gave us a job: pick it up (opcode waiting), check its
 * dependencies, start it. */
static void pick_up(jq_executor_t *ex, uint64_t id)
{
    jq_executors_t *p = ex->pool;
    jq_shard_t *sh;
    jq_job_t *job = lock_job(p, id, &sh);
    if (!job) {
        jq_sched_done(p->o.sched, id, JQ_ERROR);
        return;
    }
    if (jq_status_final((jq_status_t)job->status)) {
        release_job(p, sh, job); /* canceled while queued */
        return;
    }
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

    if (check_deps(p, id, deps, ndeps))
        start_op(ex, id);
}

/* Steps per turn: then the executor looks at the scheduler again, so kicks,
 * stops and new jobs wait for at most this many steps. */
#define STEPS_PER_TURN 64

static void run_due(jq_executor_t *ex, int64_t now)
{
    jq_store_t *store = ex->pool->o.store;
    for (int steps = 0; steps < STEPS_PER_TURN; steps++) {
        jq_task_t *t = jq_heap_top(&ex->timers);
        if (!t || t->deadline > now)
            break;
        if (store && jq_store_backlog(store) > JQ_STORE_LOG_BACKLOG) {
            t->deadline = now + STEP_DEFER_US;
            jq_heap_fix(&ex->timers, t->heap_index);
            continue;
        }
        t->now = now;
        jq_step_t r = t->def->step(t);
        if (r == JQ_STEP_CONTINUE && !t->canceled) {
            jq_heap_fix(&ex->timers, t->heap_index);
            continue;
        }
        jq_heap_remove(&ex->timers, t->heap_index);
        finish_task(ex, t, r);
        now = jq_now_mono();
    }
}

/* A kicked job: if its opcode is being canceled, end it now. */
static void on_kick(jq_executor_t *ex, uint64_t id)
{
    jq_task_t *t = NULL;
    for (size_t i = 0; !t && i < jq_heap_size(&ex->timers); i++)
        if (((jq_task_t *)jq_heap_at(&ex->timers, i))->job_id == id)
            t = jq_heap_at(&ex->timers, i);
    size_t si = ex->nstarting;
    for (size_t i = 0; !t && i < ex->nstarting; i++)
        if (ex->starting[i]->job_id == id)
            t = ex->starting[si = i];
    if (!t)
        return;
    jq_shard_t *sh = jq_table_shard_for(ex->pool->o.table, id);
    jq_shard_rdlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    bool canceling = job && op_canceling(job);
    jq_shard_rdunlock(sh);
    if (!canceling)
        return;
    t->canceled = true;
    if (si < ex->nstarting)
        ex->starting[si] = ex->starting[--ex->nstarting];
    else
        jq_heap_remove(&ex->timers, t->heap_index);
    finish_task(ex, t, JQ_STEP_FAIL);
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
        jq_task_t *next = jq_heap_top(&ex->timers);
        int64_t deadline = next ? next->deadline : INT64_MAX;
        uint64_t run_id = 0, durable = 0;
        size_t nkicked = 0;
        jq_sched_event_t ev = jq_sched_wait(p->o.sched, ex->index, now, deadline,
                                            want_durable(ex), &run_id, kicked, 64, &nkicked,
                                            &durable);
        if (ev == JQ_EV_STOP)
            break;
        if (ev == JQ_EV_RUN)
            pick_up(ex, run_id);
        else if (ev == JQ_EV_KICK)
            for (size_t k = 0; k < nkicked; k++)
                on_kick(ex, kicked[k]);
        else if (ev == JQ_EV_TIMEOUT)
            run_due(ex, jq_now_mono());
        start_committed(ex, durable);
    }
    while (ex->nstarting || jq_heap_size(&ex->timers)) {
        jq_task_t *t = ex->nstarting ? ex->starting[--ex->nstarting] : jq_heap_pop(&ex->timers);
        end_op(p, t->job_id, false, NULL, "Interrupted by broker shutdown");
        task_free(&t);
    }
    return NULL;
}

jq_executors_t *jq_executors_new(const jq_executors_opts_t *opts)
{
    unsigned n = opts->n;
    if (n == 0 || n > JQ_MAX_EXECUTORS)
        return NULL;
    jq_executors_t *p = calloc(1, sizeof *p + n * sizeof(jq_executor_t));
    if (!p)
        return NULL;
    p->o = *opts;
    p->o.n = 0;
    atomic_init(&p->max_log_entries, opts->max_log_entries);
    for (unsigned i = 0; i < n; i++) {
        p->ex[i].index = i;
        p->ex[i].pool = p;
        jq_heap_init(&p->ex[i].timers, task_before, task_moved);
        if (pthread_create(&p->ex[i].thread, NULL, executor_main, &p->ex[i]) != 0) {
            jq_executors_destroy(&p);
            return NULL;
        }
        p->o.n = i + 1;
    }
    return p;
}

void jq_executors_set_max_log_entries(jq_executors_t *pool, uint32_t max)
{
    atomic_store_explicit(&pool->max_log_entries, max, memory_order_relaxed);
}

void jq_executors_destroy(jq_executors_t **pp)
{
    if (!pp || !*pp)
        return;
    jq_executors_t *p = *pp;
    jq_sched_stop(p->o.sched);
    for (unsigned i = 0; i < p->o.n; i++) {
        pthread_join(p->ex[i].thread, NULL);
        jq_heap_free(&p->ex[i].timers);
        free(p->ex[i].starting);
    }
    free(p);
    *pp = NULL;
}
