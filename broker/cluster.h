/* cluster.h: jobqd as a node of a Raft cluster (--cluster; docs/cluster.md).
 *
 * The queue's change records are replicated with libraft (Debian's
 * libraft-dev) before they count: the cluster thread takes what the table
 * flushed to the store's intake, proposes it as one Raft entry and, once a
 * quorum has the entry, every node applies it to its own LMDB store with
 * the store's own apply code (jq_store_apply). Only then does the leader
 * mark the records committed, answer, publish and run — the single node's
 * rule, cluster-wide. The event seq is counted by the apply, so it is the
 * same on every node.
 *
 * A node that is not the leader keeps its store current and serves only
 * ping, query_nodes and the lists; everything else is answered NotLeader
 * with the leader's endpoints. When a node wins an election it first
 * applies everything committed (a barrier), then the loop loads the queue
 * from its store (recovery, as a restart does) and serves. A leader that
 * loses its leadership stops serving at once: it starts itself again (exec)
 * and comes back as a follower.
 *
 * The cluster thread runs libuv's loop for libraft (disk and network) and
 * never takes a table lock; handlers reach it through a command queue. */
#ifndef JOBQ_CLUSTER_H
#define JOBQ_CLUSTER_H

#include "change.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jq_daemon;
typedef struct jq_cluster jq_cluster_t;

/* "host:port" (an IPv6 host in brackets): 0, with the host and port when
 * asked (host may be NULL); -1 when malformed. */
int jq_node_address_parse(const char *addr, char *host, size_t hostlen, int *port);
/* Is the address's host a loopback address (127.0.0.0/8, ::1, localhost)? */
bool jq_node_address_loopback(const char *addr);

/* Open the node's Raft state in DATA/cluster (its id, its log) and its
 * store (DATA/cluster/store, rebuilt from the log). The store is d->store
 * from then on. NULL with err. */
jq_cluster_t *jq_cluster_new(struct jq_daemon *d, char *err, size_t errlen);
/* Start the cluster thread (bootstrapping a cluster of one on a first start
 * without --join). -1 with err. */
int jq_cluster_start(jq_cluster_t *c, char *err, size_t errlen);
/* First start with --join: ask the members to add this node (following
 * NotLeader), up to timeout_s. -1 with err. */
int jq_cluster_join(jq_cluster_t *c, double timeout_s, char *err, size_t errlen);
void jq_cluster_destroy(jq_cluster_t **c);

/* Any thread: does this node serve the queue (leader, everything applied,
 * queue loaded)? */
bool jq_cluster_leading(jq_cluster_t *c);
/* Loop: true once, when this node won an election and has applied
 * everything before it: the loop loads the queue, then calls
 * jq_cluster_set_leading. */
bool jq_cluster_take_ready(jq_cluster_t *c);
void jq_cluster_set_leading(jq_cluster_t *c);
/* The cluster's event epoch (chosen when it was made; 0 while unknown). */
uint64_t jq_cluster_epoch(jq_cluster_t *c);

/* Loop, while following: the records this node applied (owned), for the
 * view it answers stale reads from, and the fd that says there are some.
 * A record of kind JQ_VIEW_RELOAD says the store was replaced (a snapshot
 * was installed): load the view from the store again. */
#define JQ_VIEW_RELOAD 255
int jq_cluster_applied_fd(jq_cluster_t *c);
jq_change_t *jq_cluster_take_applied(jq_cluster_t *c);
/* Any thread: the last Raft index this node applied (a stale read's age). */
uint64_t jq_cluster_applied_index(jq_cluster_t *c);

/* Any thread: pack the leader as NotLeader and ping show it
 * ({id, name, address, endpoints, workers, publish}), or nil. */
void jq_cluster_pack_leader(jq_cluster_t *c, msgpack_packer *pk);
/* ping's "cluster" value. */
void jq_cluster_pack_ping(jq_cluster_t *c, msgpack_packer *pk);
/* query_nodes' result. */
void jq_cluster_pack_nodes(jq_cluster_t *c, msgpack_packer *pk);

/* Any thread: figures for /metrics. */
typedef struct {
    unsigned nodes;                 /* in the configuration */
    bool leading;                   /* serving the queue */
    uint64_t term, applied, commit, last_index;
    unsigned npeers;                /* for each other node, the leader's view */
    uint64_t peer_id[16], peer_lag[16];
} jq_cluster_stats_t;
void jq_cluster_get_stats(jq_cluster_t *c, jq_cluster_stats_t *out);

/* Handlers: configuration changes, waiting (bounded) until committed.
 * info: the node's msgpack map as add_node got it. 0, or -1 with err
 * (and *not_leader set when this node is not the leader). */
int jq_cluster_add(jq_cluster_t *c, uint64_t id, const char *address, bool voter,
                   const char *info, size_t info_len, bool *not_leader, char *err,
                   size_t errlen);
int jq_cluster_remove(jq_cluster_t *c, uint64_t id, bool *not_leader, char *err, size_t errlen);
/* id 0: the daemon picks. *leader: who leads afterwards. */
int jq_cluster_transfer(jq_cluster_t *c, uint64_t id, uint64_t *leader, bool *not_leader,
                        char *err, size_t errlen);

#endif
