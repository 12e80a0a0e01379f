/* change.h: change records — one encoded msgpack map per change to a job,
 * built by the thread that made the change while it holds the job's shard
 * lock, then handed on (see table.h) to whatever consumes changes: today
 * the daemon's change counter, later the publisher, the store and the
 * replicator. Record layout: docs/architecture.md, "Change records". */
#ifndef JOBQ_CHANGE_H
#define JOBQ_CHANGE_H

#include "job.h"

typedef enum {
    JQ_CHANGE_SUBMIT,  /* the whole job as submitted */
    JQ_CHANGE_UPDATE,  /* opcodes and log entries that changed */
    JQ_CHANGE_ARCHIVE, /* the job moved to the archive */
    /* Not a job's (job_id 0): settings the store keeps. */
    JQ_CHANGE_DRAIN,   /* the drain flag: one byte */
    JQ_CHANGE_OPCODES  /* the worker opcodes' declarations (queue/opreg.h) */
} jq_change_kind_t;

typedef struct jq_change {
    struct jq_change *next;
    uint64_t job_id;
    uint64_t serial;   /* the job's change serial: 1, 2, 3... */
    uint8_t kind;      /* jq_change_kind_t */
    uint32_t len;
    uint64_t seq;      /* a cluster's: its event seq, set when applied; else 0 */
    char data[];       /* msgpack map */
} jq_change_t;

/* Encode the change d made to job (whose change_serial the caller has
 * already advanced). NULL when out of memory. */
jq_change_t *jq_change_encode(const jq_job_t *job, jq_change_kind_t kind,
                              const jq_delta_t *d, int64_t now);
/* Frees a whole list. */
void jq_change_list_free(jq_change_t **head);

#endif
