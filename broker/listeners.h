/* listeners.h: the daemon's bound endpoints and the connections they
 * accept, counted, so that too many peers never exhaust the daemon's file
 * descriptors.
 *
 * libzmq aborts the whole process when accept(2) fails with EMFILE on an
 * ipc endpoint, so the daemon must stop accepting before that can happen.
 * It counts connections from the sockets' monitor events; at the
 * high-water mark (--max-connections, by default what the descriptor limit
 * leaves after a reserve) it moves its ipc socket files aside and holds
 * back TCP connection requests with a socket filter — connected clients
 * keep being served, new ones wait in their own reconnect loop or resend
 * their SYN — and lets them in again below the low-water mark. Loop
 * thread only.
 */
#ifndef JOBQ_LISTENERS_H
#define JOBQ_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

/* Descriptors kept free for the daemon's own files. Beyond it, the
 * default --max-connections leaves room for what comes in after the mark:
 * a full queue on each listening socket and what libzmq accepts before
 * the loop learns of the connection at the mark. */
#define JQ_FD_RESERVE 64
/* Listening queue: a sixteenth of the descriptor limit, within these. */
#define JQ_LISTEN_BACKLOG_MIN 16
#define JQ_LISTEN_BACKLOG_MAX 1024
#define JQ_MAX_BOUND 64

typedef struct jq_listeners jq_listeners_t;

/* What a watched socket's peers are, for counting them apart. */
typedef enum {
    JQ_CONN_CLIENTS = 0, /* the client ROUTERs */
    JQ_CONN_EVENTS,      /* the event publishers: subscribers */
    JQ_CONN_WORKERS,     /* the worker ROUTERs */
    JQ_CONN__KINDS
} jq_conn_kind_t;

typedef struct {
    uint64_t connections;   /* open now */
    uint64_t peak;
    uint64_t accepted;      /* since start */
    uint64_t max;           /* the high-water mark */
    uint64_t pauses;        /* times accepting stopped */
    uint64_t refused_auth;  /* handshakes zauth refused (unknown or revoked key) */
    uint64_t handshake_failed; /* other failed handshakes (no key, wrong
                                  mechanism, bad server key, timeout...) */
    bool paused;
    uint64_t by_kind[JQ_CONN__KINDS]; /* open now, by jq_conn_kind_t */
} jq_listeners_stats_t;

jq_listeners_t *jq_listeners_new(void *zctx);
/* ipc socket files bound from now on belong to group gid (-1: jobqd's). */
void jq_listeners_set_group(jq_listeners_t *l, int gid);
void jq_listeners_destroy(jq_listeners_t **l);

/* Bind socket to endpoint and remember it (an ipc socket file gets mode
 * 0660). The bound address, wildcards resolved, goes to resolved (may be
 * NULL). -1 with errno. */
int jq_listeners_bind(jq_listeners_t *l, void *socket, const char *endpoint, char *resolved,
                      size_t len);
/* Count the connections socket accepts (a monitor on it), as peers of
 * that kind. -1 on failure. */
int jq_listeners_watch(jq_listeners_t *l, void *socket, jq_conn_kind_t kind);
/* After every bind and watch: the high-water mark, max (0: from the
 * descriptor limit). Returns the mark used. */
uint64_t jq_listeners_set_max(jq_listeners_t *l, uint64_t max);

/* Poll items of the monitors (up to max); then on_events for any input. */
size_t jq_listeners_pollitems(jq_listeners_t *l, zmq_pollitem_t *items, size_t max);
void jq_listeners_on_events(jq_listeners_t *l);

void jq_listeners_get_stats(jq_listeners_t *l, jq_listeners_stats_t *out);

#endif
