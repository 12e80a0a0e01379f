/* cluster_int.h: what the cluster's files share (cluster.c: the thread,
 * leadership, start and stop; cluster_log.c: entries, the state machine,
 * node records; cluster_admin.c: node requests, what they read, joining). */
#ifndef JOBQ_CLUSTER_INT_H
#define JOBQ_CLUSTER_INT_H

#include "cluster.h"
#include "daemon.h"

#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <time.h>
#include <uv.h>

#define ENTRY_MAGIC "jq1"
enum { ENTRY_BATCH = 1, ENTRY_NODE = 2, ENTRY_GONE = 3, ENTRY_INIT = 4 };
/* An entry carries at most this many records or bytes; the rest of a
 * burst goes in the next entries (libraft appends them in one write). */
#define ENTRY_MAX_RECORDS 20000
#define ENTRY_MAX_BYTES (8u << 20)
#define WATCH_MS 10
#define MAX_NODES 16
#define CMD_WAIT_S 30

enum { PHASE_FOLLOWING, PHASE_PROMOTING, PHASE_READY, PHASE_LEADING, PHASE_DEPOSED };
/* A deposed leader answers NotLeader at once, and starts again this much
 * later: the answers already made (a transfer_leader's, which waits to
 * hear from the new leader) leave first. */
#define DEPOSED_EXEC_MS 1000
enum { CMD_ADD, CMD_REMOVE, CMD_TRANSFER };

typedef struct cmd {
    struct cmd *next;
    int type;
    uint64_t id;
    char address[256];
    bool voter;
    char *info;
    size_t info_len;
    /* filled by the cluster thread */
    bool done, not_leader;
    int rc;
    char err[256];
    uint64_t leader;
    int refs; /* the handler's and the cluster thread's (under mu) */
    struct raft_change change;
    struct raft_transfer transfer;
    struct jq_cluster *c;
} cmd_t;

typedef struct {
    uint64_t id;
    char address[256];
    int role;
    bool present;
    uint64_t match;
    int64_t contact_us, caught_up_us; /* wall clock, 0: never seen */
} peer_t;

typedef struct {
    uint64_t id;
    char *info; /* msgpack map */
    size_t len;
} node_t;

struct jq_cluster {
    jq_daemon_t *d;
    char dir[JQ_PATH_BYTES + 16];
    char raft_dir[JQ_PATH_BYTES + 32];
    uint64_t id, nonce;
    bool pristine; /* no Raft state yet */
    struct uv_loop_s loop;
    uv_async_t wake;
    uv_poll_t intake;
    uv_timer_t watch;
    uv_timer_t deposed;
    bool deposed_timer;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct raft_fsm fsm;
    struct raft_barrier barrier;
    bool io_ready, transport_ready, raft_ready, loop_ready;
    pthread_t thread;
    bool started;
    _Atomic int phase;
    _Atomic bool stop;
    _Atomic uint64_t epoch;
    jq_changeq_t *view_q;  /* records a follower applied, for its view */
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;
    cmd_t *cmds, *cmds_tail;
    node_t nodes[MAX_NODES];
    unsigned nnodes;
    int state;
    uint64_t leader_id, term, last_index, applied, commit;
    peer_t peers[MAX_NODES];
    unsigned npeers;
};


static inline int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* cluster_log.c */
void cl_pack_self_info(jq_cluster_t *c, msgpack_packer *pk);
node_t *cl_node_find(jq_cluster_t *c, uint64_t id); /* under mu */
void cl_nodes_clear(jq_cluster_t *c);               /* under mu */
int cl_propose(jq_cluster_t *c, msgpack_sbuffer *sb);
void cl_entry_begin(jq_cluster_t *c, msgpack_packer *pk, int type, uint32_t n);
void cl_on_intake(uv_poll_t *h, int status, int events);
int cl_fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result);
int cl_fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n);
int cl_fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n);
int cl_fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf);
/* cluster.c: stop serving now, start again as a follower shortly. */
void cl_restart_as_follower(jq_cluster_t *c, const char *why);
/* cluster_admin.c: run a handler's command (the cluster thread). */
void cl_run_cmd(jq_cluster_t *c, cmd_t *m);

#endif
