/* store.h: the durable queue — jobs, the archive, the last job id and the
 * drain flag in LMDB, written by one store thread with group commit.
 *
 * The store thread consumes the change records the table produces (the
 * table's sink pushes them onto the store's queue, in order, outside any
 * shard lock), applies each to the stored job (queue/mirror.c, the same
 * code that keeps waiters' copies current), and commits everything that
 * arrived while the previous commit ran in one transaction: one fsync for
 * the whole batch. Only then does `durable` advance and the records go to
 * the `committed` hook (the daemon marks jobs committed, releases held
 * replies, runs what waited for the commit, publishes). A record the store
 * cannot apply fails its whole batch: nothing is acknowledged that the
 * store skipped. A failed batch is retried in smaller and smaller pieces,
 * so that a disk with a little room again makes progress at once.
 *
 * Layout (store format JQ_STORE_FORMAT; job encoding in jobcodec.h). Every
 * value starts with a 4-byte big-endian CRC-32 of the key and the rest of
 * the value (LMDB keeps no checksums of its own): a damaged record is
 * found, never served.
 *   meta     "format" → u32, "last_id" → u64 (highest committed job id),
 *            "drain" → u8, "store_id" → 16 bytes         (host order),
 *            "opcodes" → the worker opcodes' declarations (msgpack list)
 *   jobs     be64 id → u8 status . stored job            (live jobs; the
 *            job's submit record, as it came, until its first change)
 *   archive  be64 id → u8 status . stored job            (archived jobs)
 *   logs     be64 id . be32 serial → be16 opcode index . log entry
 *   damaged  "<db>/<hex key>" → the raw value            (--salvage only)
 * Beside data.mdb, `store.id` names the store (the same 16 bytes, in hex),
 * so an emptied or missing data.mdb is never taken for a new store.
 * Readers (archive lookups, from any thread) use their own read
 * transactions and never block the writer.
 */
#ifndef JOBQ_STORE_H
#define JOBQ_STORE_H

#include "changeq.h"
#include "histo.h"
#include "job.h"

#include <stdbool.h>
#include <stdint.h>

/* Format 3: a live job's value may be its submit record (jobcodec.h);
 * format 2 stores are marked 3 as they are, and older jobqd refuse them. */
#define JQ_STORE_FORMAT 3
/* Records waiting for a commit beyond which submissions are refused
 * (`Busy`) until the store catches up. */
#define JQ_STORE_MAX_BACKLOG 65536
/* Records waiting for a commit beyond which executors put opcode steps
 * (and so their log entries) off: a busy log never stands long between a
 * submit and its commit. */
#define JQ_STORE_LOG_BACKLOG 1024

typedef enum {
    JQ_SYNC_ALWAYS, /* fsync every commit before anything is acknowledged */
    JQ_SYNC_BATCH,  /* commit without fsync; fsync every sync_interval */
    JQ_SYNC_NONE    /* never fsync: the OS writes back when it likes */
} jq_sync_t;

typedef struct {
    const char *dir;        /* must exist (the daemon's data directory checks) */
    uint64_t map_size;      /* bytes LMDB may grow to */
    jq_sync_t sync;
    int64_t sync_interval_us;
    bool salvage;           /* move damaged records aside instead of refusing */
} jq_store_opts_t;

typedef struct jq_store jq_store_t;

/* Check the store (in a child process, so that a file damaged in a way
 * LMDB cannot survive costs a refusal, not the daemon), then open or
 * create it. NULL with a message: a newer format, a damaged record (named)
 * or file, or a store file that went missing or empty, is refused
 * untouched — unless opts->salvage, which moves damaged records aside and
 * says so on stderr. A format 1 store is upgraded in place. */
jq_store_t *jq_store_open(const jq_store_opts_t *opts, char *err, size_t errlen);
/* Stops the thread after it committed what was queued; closes. */
void jq_store_close(jq_store_t **s);

/* Recovery: every live job with its log entries, in id order, handed to fn
 * (which owns it); opcodes have no definition yet (jobcodec.h). Also the
 * highest job id ever committed, the drain flag and the number of archived
 * jobs (only these when fn is NULL). -1 with a message naming the damaged
 * job. */
typedef int (*jq_store_job_fn)(void *ctx, jq_job_t *job);
int jq_store_load(jq_store_t *s, jq_store_job_fn fn, void *ctx, uint64_t *last_id,
                  bool *drained, uint64_t *narchived, char *err, size_t errlen);

typedef struct {
    /* Store thread, after each commit: the committed records (owned, in
     * order, drain-flag records included: job_id 0) and the new durable
     * count. */
    void (*committed)(void *ctx, jq_change_t *head, uint64_t durable);
    /* Store thread, after a commit failed. */
    void (*failed)(void *ctx);
    void *ctx;
} jq_store_hooks_t;

int jq_store_start(jq_store_t *s, const jq_store_hooks_t *hooks);

/* The table's sink (any thread). */
void jq_store_sink(void *store, jq_change_t *head);
/* Any thread: queue the drain flag for the next commit. The caller orders
 * concurrent calls (the last one queued is what the store keeps). */
void jq_store_set_drain(jq_store_t *s, bool drained);

/* Any thread: queue the worker opcodes' declarations (jq_opreg_encode)
 * for the next commit; the last one queued is what the store keeps. -1
 * out of memory. */
int jq_store_set_opcodes(jq_store_t *s, const void *data, size_t len);
/* Start-up: the declarations kept (out stays empty when none). -1 with a
 * message when they cannot be read. */
int jq_store_get_opcodes(jq_store_t *s, msgpack_sbuffer *out, char *err, size_t errlen);

/* Any thread: records queued so far; read after a change's record is with
 * the sink, it covers that record. */
uint64_t jq_store_ticket(jq_store_t *s);
/* Any thread: records committed so far (durable per the sync mode). */
uint64_t jq_store_durable(jq_store_t *s);
/* Any thread: records up to this ticket were at stake in a commit that
 * failed (0: none since the last success); msg says why. */
uint64_t jq_store_failed(jq_store_t *s, char *msg, size_t len);
/* Any thread: true while the last commit failed (msg says why). */
bool jq_store_failing(jq_store_t *s, char *msg, size_t len);
/* Any thread: records waiting for a commit. */
static inline uint64_t jq_store_backlog(jq_store_t *s)
{
    uint64_t t = jq_store_ticket(s), d = jq_store_durable(s);
    return t > d ? t - d : 0;
}

/* Any thread: an archived job with its log, or NULL (not found; err set
 * when the read failed or the record is damaged). */
jq_job_t *jq_store_load_archived(jq_store_t *s, uint64_t id, char *err, size_t errlen);
/* Any thread: the status of an archived job; false when not archived (or
 * its record is damaged). */
bool jq_store_archived_status(jq_store_t *s, uint64_t id, jq_status_t *status);
/* Any thread: up to cap archived ids above after, ascending, whose status
 * is in status_mask (0: any). */
size_t jq_store_archived_ids(jq_store_t *s, uint64_t after, size_t cap, uint8_t status_mask,
                             uint64_t *out);

typedef struct {
    uint64_t commits, fsyncs, records, failures;
    uint64_t checkpoints;    /* of the write-ahead log (--sync always) */
    uint64_t bytes;          /* size of the data file in use */
    uint64_t last_id;        /* highest committed job id */
    const char *sync;        /* "always", "batch", "none" */
} jq_store_stats_t;
void jq_store_get_stats(jq_store_t *s, jq_store_stats_t *out);

/* The store thread's histograms (any thread): records per successful
 * commit, and how long each commit took with its sync (seconds), failed
 * ones included. */
extern const jq_histo_spec_t jq_store_batch_spec, jq_store_latency_spec;
void jq_store_get_histograms(jq_store_t *s, jq_histo_snap_t *batch, jq_histo_snap_t *latency);

/* ---- cluster mode (broker/cluster.c) ----
 * No store thread: the cluster's thread takes the intake's records,
 * proposes them as one Raft entry and, once the entry is committed,
 * applies it with jq_store_apply — on every node, with the same code as
 * the store thread's commits. The store is derived from the Raft log and
 * snapshots, so it is opened without fsync. */
typedef struct {
    const char *key;
    const void *val;
    size_t len;
} jq_store_meta_t;
/* Before anything is applied: count the event seq (meta "seq") and use
 * hooks for what this node's records do once applied. */
void jq_store_cluster_mode(jq_store_t *s, const jq_store_hooks_t *hooks);
/* The queue the table's sink pushes to (the cluster thread takes it). */
jq_changeq_t *jq_store_intake(jq_store_t *s);
/* Apply n committed records and the meta values in one transaction.
 * mine: they are this node's intake's, in order: durable advances and the
 * committed hook takes them (owned); otherwise they stay the caller's.
 * -1 with err (nothing applied; the records are still the caller's). */
int jq_store_apply(jq_store_t *s, jq_change_t *head, size_t n, bool mine,
                   const jq_store_meta_t *meta, size_t nmeta, char *err, size_t errlen);
/* Job records applied, ever: the last event seq. */
uint64_t jq_store_seq(jq_store_t *s);
/* Live jobs stored (UINT64_MAX when the store cannot be read). */
uint64_t jq_store_live_count(jq_store_t *s);
/* A meta value (checksum verified) appended to out: 0, 1 when absent, -1. */
int jq_store_meta_read(jq_store_t *s, const char *key, msgpack_sbuffer *out);
/* Every table, as stored, into out; and back (replacing everything). */
int jq_store_snapshot(jq_store_t *s, msgpack_sbuffer *out, char *err, size_t errlen);
int jq_store_restore(jq_store_t *s, const void *data, size_t len, char *err, size_t errlen);

#endif
