/* table.h: the sharded job table.
 *
 * Jobs live in shards chosen by id (id % shard count), each behind a pthread
 * rwlock. Queries take a shard's read lock, so readers of different (and of
 * the same) shards run in parallel; a change to one job write-locks only its
 * shard. Within a shard jobs are kept in id order (live and archived apart),
 * so lookup is a binary search and listing pages without sorting.
 *
 * The write protocol, the only way a job changes:
 *     jq_shard_wrlock(sh); job = jq_shard_find(sh, id);
 *     ...transition job with a delta...; jq_shard_emit(sh, job, &d, kind, now);
 *     jq_shard_wrunlock(sh);
 * emit encodes the change record under the lock and appends it to the
 * shard's outbox; wrunlock releases the lock and then hands the outbox to
 * the table's sink, in order, so per-job order survives the hand-off. The
 * sink runs outside the shard lock (under the small outbox mutex only) and
 * must not block.
 *
 * Lock order: no code holds two shard locks, and none takes a shard lock
 * while holding the scheduler's mutex.
 */
#ifndef JOBQ_TABLE_H
#define JOBQ_TABLE_H

#include "change.h"
#include "job.h"

#include <stdatomic.h>

typedef struct jq_table jq_table_t;
typedef struct jq_shard jq_shard_t;

/* Receives a list of change records, in order; owns them. Called from the
 * thread that unlocked the shard. */
typedef void (*jq_sink_fn)(void *ctx, jq_change_t *head);

#define JQ_DEFAULT_SHARDS 64
#define JQ_MAX_SHARDS 4096

jq_table_t *jq_table_new(unsigned nshards, jq_sink_fn sink, void *sink_ctx);
/* Frees every job; no other thread may use the table. */
void jq_table_destroy(jq_table_t **t);

unsigned jq_table_shard_count(const jq_table_t *t);
jq_shard_t *jq_table_shard_for(jq_table_t *t, uint64_t job_id);
jq_shard_t *jq_table_shard_at(jq_table_t *t, unsigned index);

/* Any thread: reserve room for one live job below max (atomically), or
 * give a reservation back. Keeps the queue limit exact under concurrency. */
bool jq_table_reserve(jq_table_t *t, uint64_t max_live);
void jq_table_unreserve(jq_table_t *t);
uint64_t jq_table_live_count(jq_table_t *t);
uint64_t jq_table_archived_count(jq_table_t *t);
/* Change records produced so far (any thread). */
uint64_t jq_table_changes(jq_table_t *t);
/* The per-opcode counters the table keeps (meter.h); readers any thread. */
struct jq_meter;
struct jq_meter *jq_table_meter(jq_table_t *t);

void jq_shard_rdlock(jq_shard_t *sh);
void jq_shard_rdunlock(jq_shard_t *sh);
void jq_shard_wrlock(jq_shard_t *sh);
/* Unlock, then hand the outbox to the sink. */
void jq_shard_wrunlock(jq_shard_t *sh);
/* No lock held: hand whatever the outbox holds to the sink now. A reader
 * that saw a change not yet committed calls it so that the change's record
 * is surely with the sink (the thread that made it may not have flushed
 * yet) before it asks the store for a ticket that covers it. */
void jq_shard_flush(jq_shard_t *sh);

/* Under a lock: the live job with that id, or NULL. */
jq_job_t *jq_shard_find(jq_shard_t *sh, uint64_t id);
/* Under a lock: live or archived. */
jq_job_t *jq_shard_find_any(jq_shard_t *sh, uint64_t id);

/* No lock held: encode a new job's submit record (change serial 1), so
 * the heavy part of a submission happens before the shard lock is taken.
 * NULL when out of memory. */
jq_change_t *jq_shard_submit_record(jq_job_t *job, int64_t now);
/* Under the write lock: add a job (reserved with jq_table_reserve) with
 * its submit record. The table owns both on success; -1 when out of
 * memory or the id is taken (both untouched, reservation kept). */
int jq_shard_insert(jq_shard_t *sh, jq_job_t *job, jq_change_t *record);
/* The same for a job loaded from the store at start-up: no record (the
 * store has it already). */
int jq_shard_insert_loaded(jq_shard_t *sh, jq_job_t *job);
/* Under the write lock: refresh the job's cached status and the shard's
 * counters, advance its change serial and queue the change record. */
int jq_shard_emit(jq_shard_t *sh, jq_job_t *job, const jq_delta_t *d,
                  jq_change_kind_t kind, int64_t now);
/* Under the write lock: move a final live job to the archive (emits the
 * archive record). -1 when it is not live or not final, or its record
 * could not be made (it stays live). */
int jq_shard_archive(jq_shard_t *sh, jq_job_t *job, int64_t now);

/* Any thread, no lock held: drop an archived job from memory once the
 * store holds it (takes the shard's write lock). */
void jq_table_evict_archived(jq_table_t *t, uint64_t id);
/* Any thread, no lock held: these records are committed; each job's
 * committed_serial catches up with them (takes read locks). */
void jq_table_mark_committed(jq_table_t *t, const jq_change_t *head);
/* Under a lock: true when the job shows a change the store has not
 * committed yet (a reply showing it must wait for the commit). */
static inline bool jq_job_uncommitted(const jq_job_t *job)
{
    return job->change_serial >
           atomic_load_explicit(&((jq_job_t *)job)->committed_serial, memory_order_relaxed);
}
/* The same for a reply that shows nothing of the log (no oplog, log_serial
 * or change_serial): log entries made since the commit do not count. */
static inline bool jq_job_state_uncommitted(const jq_job_t *job)
{
    return job->state_serial >
           atomic_load_explicit(&((jq_job_t *)job)->committed_serial, memory_order_relaxed);
}
/* Count archived jobs the table does not hold (the store's, at start). */
void jq_table_add_archived(jq_table_t *t, uint64_t n);

/* Under the write lock: archive final live jobs with id > after_id whose
 * age reference is older than cutoff (INT64_MAX: any), examining at most
 * max_examine live jobs and asking spent(ctx) (may be NULL) before each:
 * once it says the time budget is spent, no more are examined. Returns
 * the number archived; *last_id is the last id examined, *done true when
 * the shard's end was reached. */
size_t jq_shard_auto_archive(jq_shard_t *sh, int64_t now, int64_t cutoff,
                             uint64_t after_id, size_t max_examine,
                             bool (*spent)(void *ctx), void *ctx,
                             uint64_t *last_id, bool *done);

/* Under a lock: listing helpers. */
size_t jq_shard_live_size(jq_shard_t *sh);
size_t jq_shard_archived_size(jq_shard_t *sh);
/* Index of the first live (archived) job with id > after_id. */
size_t jq_shard_live_after(jq_shard_t *sh, uint64_t after_id);
size_t jq_shard_archived_after(jq_shard_t *sh, uint64_t after_id);
jq_job_t *jq_shard_live_at(jq_shard_t *sh, size_t index);
jq_job_t *jq_shard_archived_at(jq_shard_t *sh, size_t index);
/* Under a lock: live jobs by cached status, added into counts. */
void jq_shard_count_status(jq_shard_t *sh, uint64_t counts[JQ_STATUS__COUNT]);
/* Live jobs by status over every shard, each read-locked in turn (never
 * two at once): counts are added to. Any thread, no lock held. */
void jq_table_count_status(jq_table_t *t, uint64_t counts[JQ_STATUS__COUNT]);

/* A cluster follower's view of the queue (broker/cluster.h): apply a
 * committed record as it is, without making a record. A record the job in
 * the view has already seen is skipped. 0; 1 when the record changes a
 * job the view does not hold (archived meanwhile, if the view was loaded
 * from a store that had the archive); -1 when it is malformed. */
int jq_table_replay(jq_table_t *t, const jq_change_t *c);

/* Hand every live job (owned) to fn, shard by shard, each in id order,
 * leaving the table without live jobs: a cluster follower's view becoming
 * the leader's queue. fn is called with no lock held. -1 when fn failed
 * (the jobs not handed on yet are freed). */
int jq_table_take_live(jq_table_t *t, int (*fn)(void *ctx, jq_job_t *job), void *ctx);

#endif
