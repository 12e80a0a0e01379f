/* waiters.h: parked wait_for_job_change requests (JOBMODEL §2.4).
 *
 * A handler makes the first check under the job's shard read lock; when
 * nothing changed it builds a jq_waiter_t — the request's id, the fields
 * watched, what the client saw, a deadline and a mirror (copy) of the job —
 * and hands it to the loop. From then on the loop alone owns it: each
 * published change record of the job is applied to the mirror and the rule
 * re-evaluated; the table is never read again. A waiter costs a small
 * allocation and a heap slot, never a thread. Keepalives go out every
 * --keepalive seconds (default JOBQ_KEEPALIVE_SECONDS); at the deadline the answer is "nochange".
 */
#ifndef JOBQ_WAITERS_H
#define JOBQ_WAITERS_H

#include "fields.h"
#include "ring.h"
#include "wire.h"

#include <msgpack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <zmq.h>

#define JQ_WAIT_MAX_FIELDS 64

typedef struct jq_waiter {
    /* Filled by the handler. */
    uint64_t request_id;
    uint64_t job_id;
    jq_field_t fields[JQ_WAIT_MAX_FIELDS];
    unsigned nfields;
    char *prev_info;          /* the client's prev_job_info, msgpack */
    size_t prev_info_len;
    uint32_t prev_log_serial;
    int64_t deadline;         /* CLOCK_MONOTONIC µs */
    jq_job_t *mirror;         /* the job as of mirror->change_serial */
    unsigned keep;            /* what the mirror keeps (JQ_MIRROR_*) */
    char *request;            /* the original request body, to re-run the */
    size_t request_len;       /* first check if the ring lost events */
    /* The hand-off: the handler stores 1 (release) before sending the
     * pointer, the loop loads it (acquire) on receipt. ZeroMQ already
     * orders the two, but inside an uninstrumented library; this makes the
     * ordering visible to ThreadSanitizer too. */
    _Atomic int handed_over;
    /* Owned by the loop. */
    zmq_msg_t rid;
    bool delimiter;
    int64_t next_keepalive;
    msgpack_sbuffer new_logs; /* entries with serial > prev_log_serial */
    uint32_t nnew_logs;
    size_t heap_index;
    struct jq_waiter *next_same_job;
    struct jq_peer *peer;     /* the connection's record in the loop */
} jq_waiter_t;

/* Any thread: a new waiter with an empty log buffer; NULL out of memory. */
jq_waiter_t *jq_waiter_new(void);
void jq_waiter_destroy(jq_waiter_t **w);

/* Any thread: JOBMODEL §2.4's rule on `job` (the real job under its lock,
 * or a mirror) with the log entries already collected in w->new_logs. When
 * the client must be answered, packs [job_info, log_entries] into pk and
 * returns true. */
bool jq_waiter_evaluate(jq_waiter_t *w, const jq_job_t *job, msgpack_packer *pk);
/* Any thread: collect the job's log entries after w->prev_log_serial. */
void jq_waiter_collect_logs(jq_waiter_t *w, const jq_job_t *job);

typedef struct {
    /* Send one reply (a whole reply map) to the waiter's client; answer is
     * false for a keepalive (which may be dropped, an answer never is). */
    void (*send)(void *ctx, jq_waiter_t *w, const char *body, size_t len, bool answer);
    /* The waiter is done and about to be freed. */
    void (*done)(void *ctx, jq_waiter_t *w);
    void *ctx;
} jq_waiters_hooks_t;

typedef struct jq_waiters jq_waiters_t;

jq_waiters_t *jq_waiters_new(jq_ring_t *ring, const jq_waiters_hooks_t *hooks,
                             _Atomic uint64_t *count, int64_t keepalive_us);
/* Drops every waiter without answering. */
void jq_waiters_destroy(jq_waiters_t **ws);
/* A new keepalive interval (a reload): each waiter's next keepalive
 * follows it after the one already due. */
void jq_waiters_set_keepalive(jq_waiters_t *ws, int64_t keepalive_us);

typedef enum {
    JQ_PARK_PARKED,    /* waiting */
    JQ_PARK_ANSWERED,  /* changed while it travelled to the loop: answered */
    JQ_PARK_RECHECK    /* the ring no longer holds what it missed: the caller
                          must run the request again (w is returned intact) */
} jq_park_t;

/* Loop thread: take over w (except on RECHECK). The events published
 * between the handler's check and now are replayed from the ring. */
jq_park_t jq_waiters_park(jq_waiters_t *ws, jq_waiter_t *w, int64_t now);
/* Loop thread: a change record was published. */
void jq_waiters_on_change(jq_waiters_t *ws, uint64_t job_id, const char *record,
                          size_t len);
/* Loop thread: when the next keepalive or deadline is due (INT64_MAX: none). */
int64_t jq_waiters_next_wake(jq_waiters_t *ws);
/* Loop thread: send due keepalives, answer expired waiters "nochange". */
void jq_waiters_tick(jq_waiters_t *ws, int64_t now);
/* Loop thread: answer every parked waiter with an error and drop it. */
void jq_waiters_fail_all(jq_waiters_t *ws, jobq_code_t code, const char *message);

#endif
