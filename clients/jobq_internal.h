/* jobq_internal.h: what libjobq's own files share and callers must not
 * use. */
#ifndef JOBQ_INTERNAL_H
#define JOBQ_INTERNAL_H

#include "jobq.h"

/* Records a failure in the client (jobq_client_status/reason), so that a
 * component built on the client (the subscriber) reports through the same
 * two functions. */
void jobq_client_fail(jobq_client_t *self, jobq_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* For a component that waits on other sockets (the subscriber): returns
 * -1 with JOBQ_ERR_NOT_RUNNING recorded when the client's connection is
 * down and a connect attempt failed since the last check (the daemon went
 * away), else 0. Never blocks. */
int jobq_client_check_connection(jobq_client_t *self);

/* How many times the client moved to another endpoint (a leader, the
 * next configured one): a subscriber follows it to the new daemon. */
uint64_t jobq_client_moves(jobq_client_t *self);
/* Whether the client talks to a cluster: several endpoints, a move
 * already, or a ping answered with "cluster". */
bool jobq_client_in_cluster(jobq_client_t *self);
/* How many endpoints the client was given. */
size_t jobq_client_endpoint_count(jobq_client_t *self);
/* The `leader` of the last NotLeader answer (borrowed), or NULL. */
const json_t *jobq_client_leader(jobq_client_t *self);

/* CURVE keys (jobq_keys.c), Z85. */
#define JOBQ_KEY_CHARS 40
typedef struct {
    char pub[JOBQ_KEY_CHARS + 1], sec[JOBQ_KEY_CHARS + 1], server[JOBQ_KEY_CHARS + 1];
    bool set;
} jobq_curve_t;
/* Both NULL or empty: no keys (0, c->set false). -1 with err set. */
int jobq_curve_load(jobq_curve_t *c, const char *key_file, const char *server_key, char *err,
                    size_t errlen);
/* Before connect: CURVE client options on sock when c->set and endpoint
 * is tcp:// (ipc never uses keys). -1 when libzmq refuses them. */
int jobq_curve_apply(const jobq_curve_t *c, void *sock, const char *endpoint);
/* The client's keys, for the subscriber's socket. */
const jobq_curve_t *jobq_client_curve(jobq_client_t *self);

#endif
