/* store.h: the durable queue — jobs, the archive, the last job id and the
 * drain flag in LMDB, written by one store thread with group commit.
 *
 * The store thread consumes the change records the table produces (the
 * table's sink pushes them onto the store's queue, in order, outside any
 * shard lock), applies each to the stored job (queue/mirror.c, the same
 * code that keeps waiters' copies current), and commits everything that
 * arrived while the previous commit ran in one transaction: one fsync for
 * the whole batch. Only then are the records handed on (to the publisher),
 * so nothing is published that a crash could take back, and `durable`
 * advances, which releases the submit replies waiting for it.
 *
 * Layout (store format JQ_STORE_FORMAT; job encoding in jobcodec.h):
 *   meta     "format" → u32, "last_id" → u64, "id_reserve" → u64,
 *            "drain" → u8                                     (host order)
 *   jobs     be64 id → stored job                (live jobs)
 *   archive  be64 id → stored job                (archived jobs)
 *   logs     be64 id . be32 serial → be16 opcode index . log entry (msgpack)
 * Readers (archive lookups, from any thread) use their own read
 * transactions and never block the writer.
 */
#ifndef JOBQ_STORE_H
#define JOBQ_STORE_H

#include "changeq.h"
#include "job.h"
#include "opdef.h"
#include "table.h"

#include <stdbool.h>
#include <stdint.h>

#define JQ_STORE_FORMAT 1
/* Ids a crash may skip: each commit records last id + this as the point
 * the next start continues from (a clean stop records the exact last id). */
#define JQ_STORE_ID_RESERVE 1000000

typedef enum {
    JQ_SYNC_ALWAYS, /* fsync every commit before anything is acknowledged */
    JQ_SYNC_BATCH,  /* commit without fsync; fsync every sync_interval */
    JQ_SYNC_NONE    /* never fsync: the OS writes back when it likes */
} jq_sync_t;

typedef struct {
    const char *dir;        /* created if missing */
    uint64_t map_size;      /* bytes LMDB may grow to */
    jq_sync_t sync;
    int64_t sync_interval_us;
    const jq_opset_t *ops;
} jq_store_opts_t;

typedef struct jq_store jq_store_t;

/* Open (or create) the store and check its format. NULL with a message:
 * a newer or unknown format, or a damaged file, is refused untouched. */
jq_store_t *jq_store_open(const jq_store_opts_t *opts, char *err, size_t errlen);
/* Stops the thread after it committed what was queued; closes. */
void jq_store_close(jq_store_t **s);

/* Recovery: every live job with its log entries, in id order, handed to fn
 * (which owns it). Also the last id handed out, the drain flag and the
 * number of archived jobs. -1 with a message naming the damaged job. */
typedef int (*jq_store_job_fn)(void *ctx, jq_job_t *job);
int jq_store_load(jq_store_t *s, jq_store_job_fn fn, void *ctx, uint64_t *last_id,
                  bool *drained, uint64_t *narchived, char *err, size_t errlen);

/* Start the store thread: committed records go to out (in order, meta
 * records dropped); archived jobs, once committed, are evicted from table's
 * memory. */
int jq_store_start(jq_store_t *s, jq_table_t *table, jq_changeq_t *out);

/* The table's sink (any thread). */
void jq_store_sink(void *store, jq_change_t *head);
/* Any thread: queue the drain flag for the next commit. */
void jq_store_set_drain(jq_store_t *s, bool drained);

/* Any thread: records queued so far; read after a change is made, every
 * record of that change is among them. */
uint64_t jq_store_ticket(jq_store_t *s);
/* Any thread: records committed so far (durable per the sync mode). */
uint64_t jq_store_durable(jq_store_t *s);
/* Any thread: records up to this ticket were in a commit that failed (0:
 * none since the last success); msg says why. They are retried. */
uint64_t jq_store_failed(jq_store_t *s, char *msg, size_t len);

/* Any thread: an archived job with its log, or NULL (not found, or with
 * err set on a read failure). */
jq_job_t *jq_store_load_archived(jq_store_t *s, uint64_t id, char *err, size_t errlen);
/* Any thread: the status of an archived job; false when not archived. */
bool jq_store_archived_status(jq_store_t *s, uint64_t id, jq_status_t *status);
/* Any thread: up to cap archived ids above after, ascending. */
size_t jq_store_archived_ids(jq_store_t *s, uint64_t after, size_t cap, uint64_t *out);

typedef struct {
    uint64_t commits, fsyncs, records, failures;
    uint64_t bytes;          /* size of the data file in use */
    const char *sync;        /* "always", "batch", "none" */
} jq_store_stats_t;
void jq_store_get_stats(jq_store_t *s, jq_store_stats_t *out);

#endif
