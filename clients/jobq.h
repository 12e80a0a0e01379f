/* jobq.h: libjobq, the C client library of the jobq job-queue daemon.
 *
 * Modelled on malamute's mlm_client: one opaque client object per
 * connection, every call that waits takes an explicit timeout, and the
 * detail of the last failure is kept in the object (jobq_client_status()
 * for the code, jobq_client_reason() for a human sentence).
 *
 * Each client owns one ZeroMQ DEALER socket (and its own ZeroMQ context)
 * connected to the daemon's endpoint. Every call sends one request with a
 * fresh request id and waits for the reply carrying that id; replies with
 * other ids (answers to earlier calls that timed out) are discarded, and
 * keepalive replies are ignored (they extend nothing: the timeout is the
 * caller's). The wire protocol is docs/protocol.md; the envelope codec is
 * proto/wire.h.
 *
 * Values cross the API as jansson values (json_t). Arguments are borrowed:
 * the library never steals a reference. Returned json_t values are new
 * references owned by the caller (json_decref them).
 *
 * Timeouts are in milliseconds; a negative timeout waits forever.
 *
 * Return scheme: int functions return 0 on success and -1 on failure;
 * pointer functions return NULL on failure. On failure the status is one of
 * - a daemon error code (the daemon's error reply; the reason is its message),
 * - JOBQ_ERR_TIMEOUT: no reply within the timeout (daemon not running,
 *   hung, or slower than the timeout),
 * - JOBQ_ERR_TRANSPORT: the request could not be sent (for an ipc://
 *   endpoint this includes "the socket file does not exist"),
 * - JOBQ_ERR_MALFORMED: the daemon's reply could not be understood,
 * - JOBQ_ERR_BAD_ARGUMENT: the caller's arguments were rejected before
 *   sending (wrong JSON type, nesting too deep).
 *
 * Thread contract: a client object must be used by one thread at a time
 * (a ZeroMQ socket belongs to one thread); distinct objects are
 * independent.
 */
#ifndef JOBQ_H
#define JOBQ_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

typedef struct _jobq_client_t jobq_client_t;

/* Creates a client connected (asynchronously, as ZeroMQ does) to endpoint,
 * e.g. "ipc:///var/lib/jobq/jobq.sock" or "tcp://127.0.0.1:5555". Returns
 * NULL when the endpoint is invalid or ZeroMQ cannot create the socket. */
jobq_client_t *jobq_client_new(const char *endpoint);

/* Destroys the client (pending requests are dropped: linger is 0) and sets
 * *self_p to NULL. NULL-safe and idempotent. */
void jobq_client_destroy(jobq_client_t **self_p);

/* The endpoint given to jobq_client_new. */
const char *jobq_client_endpoint(jobq_client_t *self);

/* Code of the last call's failure, JOBQ_ERR_NONE after a success. */
jobq_code_t jobq_client_status(jobq_client_t *self);

/* Human sentence for the last failure ("" after a success). Valid until the
 * next call on this client. */
const char *jobq_client_reason(jobq_client_t *self);

/* The generic call every method below goes through: sends method with args
 * (a JSON object, or NULL for no arguments) and waits up to timeout_ms for
 * the reply. On success stores the decoded result in *result (a new
 * reference) when result is not NULL, and returns 0. */
int jobq_call(jobq_client_t *self, const char *method, const json_t *args,
              json_t **result, int timeout_ms);

/* ping: returns {"version", "protocol", "time"} or NULL. */
json_t *jobq_ping(jobq_client_t *self, int timeout_ms);

/* submit_job: ops is a JSON array of opcode objects
 * ({"op", "args", "priority", "depends"}). Stores the new job id in
 * *id_out (when not NULL). */
int jobq_submit_job(jobq_client_t *self, const json_t *ops, bool ignore_drain,
                    uint64_t *id_out, int timeout_ms);

/* submit_many_jobs: jobs is a JSON array of opcode arrays. Returns the
 * per-job result list ([true, id] or [false, message] each) or NULL. */
json_t *jobq_submit_many_jobs(jobq_client_t *self, const json_t *jobs,
                              bool ignore_drain, int timeout_ms);

/* query_jobs: ids (array of ints) or NULL for a listing; fields (array of
 * names) or NULL for the daemon's default; status (array of status names)
 * or NULL for no filter; after_id 0 to start at the beginning; limit 0 for
 * the daemon's default; archived to include archived jobs in a listing.
 * Returns the result object {"fields", "rows", "more"} or NULL. */
json_t *jobq_query_jobs(jobq_client_t *self, const json_t *ids, const json_t *fields,
                        const json_t *status, uint64_t after_id, uint64_t limit,
                        bool archived, int timeout_ms);

/* cancel_job: returns the daemon's [bool, message] or NULL. */
json_t *jobq_cancel_job(jobq_client_t *self, uint64_t id, int timeout_ms);

/* change_job_priority: returns the daemon's [bool, message] or NULL. */
json_t *jobq_change_job_priority(jobq_client_t *self, uint64_t id, int priority,
                                 int timeout_ms);

/* archive_job: stores in *archived_out whether the job was archived. */
int jobq_archive_job(jobq_client_t *self, uint64_t id, bool *archived_out, int timeout_ms);

/* auto_archive_jobs: age in seconds (-1: every finished job), budget_s the
 * daemon's work budget in whole seconds (jobqd takes an integer). Stores
 * the counts when the pointers are not NULL. */
int jobq_auto_archive_jobs(jobq_client_t *self, int64_t age, int64_t budget_s,
                           uint64_t *archived_out, uint64_t *remaining_out,
                           int timeout_ms);

/* set_drain_flag: sets or clears the drain flag. */
int jobq_set_drain_flag(jobq_client_t *self, bool flag, int timeout_ms);

/* stats: returns the daemon's counters map or NULL. */
json_t *jobq_stats(jobq_client_t *self, int timeout_ms);

/* shutdown: asks the daemon to stop; returns once it has acknowledged. */
int jobq_shutdown(jobq_client_t *self, int timeout_ms);

#endif
