/* jobq_worker_int.h: what the two files of libjobq's worker API share
 * (jobq_worker.c: connections, events, liveness; jobq_worker_send.c:
 * declarations and what is sent for a lease) and callers must not see:
 * the worker object's layout and a few helpers. Owner thread only, as
 * every worker function. */
#ifndef JOBQ_WORKER_INT_H
#define JOBQ_WORKER_INT_H

#include "jobq.h"
#include "jobq_internal.h"

/* Longest failure sentence kept. */
#define JW_REASON_MAX 512

typedef enum { STATE_OFF, STATE_HELLO, STATE_READY } conn_t;

/* A lease held, with what the daemon said of it since. */
typedef struct {
    jobq_lease_t lease;
    jobq_lease_state_t state;
} held_t;

/* A done sent in a cluster, kept for a lease time: a leader that died
 * before reading it never saw it, and the next one must get it. */
typedef struct sent_done {
    struct sent_done *next;
    jobq_lease_t lease;
    int64_t at;                /* when it was sent (ms) */
    bool pending;              /* to send again once the lease is resumed */
    msgpack_sbuffer body;
} sent_done_t;

/* A queued event with the storage its pointers point into. */
typedef struct event_node {
    struct event_node *next;
    jobq_worker_event_t ev;
    char *opcode;
    char *reason;
    char *args_json;
    char *args_error;
    json_t *args;
    void *args_msgpack;
} event_node_t;

struct _jobq_worker_t {
    void *ctx;                 /* ZeroMQ context owned by this worker */
    void *sock;                /* DEALER of the current connection, or NULL */
    char *endpoint;            /* where it connects now (malloc'ed) */
    char **eps;                /* the configured endpoints (a cluster's nodes) */
    size_t neps;
    size_t cur;                /* eps[cur]: the configured one last used */
    int hops;                  /* NotLeader answers followed since the last welcome */
    bool moved;                /* it followed a NotLeader: a cluster */
    bool resuming;             /* held leases outlived their connection: the
                                  next hello names them (see jobq_worker.c) */
    int64_t welcome_hb_ms;     /* heartbeat of the last welcome (0: none yet) */
    sent_done_t *dones;        /* dones of the last lease time (a cluster) */
    char *name;                /* for people; NULL: none sent */
    int capacity;              /* opcodes run at once */
    json_t *opcodes;           /* declarations for hello: array of str or object */
    bool started;              /* connect was called: keep a connection open */
    bool fatal;                /* the hello was refused: nothing more happens */
    conn_t state;              /* see jobq_worker.c's file comment */
    int64_t heartbeat_ms;      /* interval: the welcome's, else the default */
    int64_t lease_ms;          /* silence that ends a connection */
    int64_t last_sent;         /* when the last message went out (ms) */
    int64_t last_heard;        /* when the last message came in, or the hello left */
    int64_t reconnect_at;      /* STATE_OFF after start: when to connect again */
    int64_t backoff_ms;        /* the back-off the next failed connection gets */
    held_t *held;              /* leases held */
    size_t nheld, held_cap;
    event_node_t *head, *tail; /* events not delivered yet */
    event_node_t *current;     /* the event delivered last (its storage) */
    uint64_t malformed;        /* messages from the daemon that made no sense */
    jobq_curve_t curve;        /* CURVE keys for a tcp:// endpoint */
    jobq_code_t status;        /* code of the last failure */
    char reason[JW_REASON_MAX];   /* its sentence */
};

/* Records a failure (jobq_worker_status/reason), or success. */
void jw_set_error(jobq_worker_t *self, jobq_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void jw_set_ok(jobq_worker_t *self);

/* Monotonic milliseconds. */
int64_t jw_now_ms(void);

/* The held lease l, or NULL; jw_drop_held lets h go (h must be held). */
held_t *jw_find_held(jobq_worker_t *self, const jobq_lease_t *l);
void jw_drop_held(jobq_worker_t *self, held_t *h);

/* A done just sent for lease (its bytes in sb), kept in a cluster (see
 * sent_done_t); and the list's end: jw_forget_dones frees it all. */
void jw_keep_done(jobq_worker_t *self, const jobq_lease_t *lease, const msgpack_sbuffer *sb);
void jw_forget_dones(jobq_worker_t *self);

/* Starts a worker message: a map of n + 2 entries, v and type first. */
void jw_begin_message(msgpack_packer *pk, const char *type, size_t n);
/* Packs job, op and attempt (three map entries). */
void jw_pack_lease(msgpack_packer *pk, const jobq_lease_t *l);

/* Sends one frame on the current connection, waiting for room as
 * timeout_ms says (jobq.h, "Workers"). 0, or -1 with the status set. */
int jw_send_frame(jobq_worker_t *self, const msgpack_sbuffer *sb, int timeout_ms);

#endif
