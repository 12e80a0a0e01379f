/* jworker.h: a minimal jobq worker on a raw DEALER socket (docs/protocol.md,
 * "Workers"), for the cycle workload. Like jclient.c it does not use
 * libjobq, so a change of the library's worker loop cannot move the
 * daemon's figures. One connection per jw_t; owner thread only. */
#ifndef JOBQ_BENCH_JWORKER_H
#define JOBQ_BENCH_JWORKER_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

typedef enum {
    JW_WELCOME,
    JW_ASSIGN,
    JW_CANCEL,
    JW_REVOKE,
    JW_HEARTBEAT,
    JW_ERROR,
    JW_DISCONNECT,
    JW_OTHER, /* a type this client does not know (counted, ignored) */
} jw_type_t;

/* One message from the daemon; pointers are into the jw_t's last frame and
 * stay valid until the next jw_recv. */
typedef struct {
    jw_type_t type;
    uint64_t job, attempt;   /* assign, cancel, revoke (0 when absent) */
    uint32_t op;             /* opcode index in the job */
    const msgpack_object *args;   /* assign: the opcode's arguments (a map) */
    const msgpack_object *reason; /* cancel, revoke, disconnect: a str */
    int64_t worker;          /* welcome: this connection's worker id */
    double heartbeat, lease; /* welcome: seconds */
} jw_msg_t;

typedef struct {
    void *sock;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    zmq_msg_t frame;    /* the last message received; up points into it */
    double last_sent;   /* CLOCK_MONOTONIC of the last message sent */
    double heartbeat;   /* the interval welcome announced (1 s until then) */
    char errbuf[256];
} jw_t;

/* A DEALER connected to endpoint (linger 0, no high-water marks). */
jw_t *jw_open(void *zctx, const char *endpoint);
void jw_close(jw_t **w);
/* hello with capacity and n opcode names (plain-name declarations). */
int jw_hello(jw_t *w, const char *name, int capacity, const char *const *opcodes, int n);
/* hello, then wait up to timeout_ms for welcome; -1 on error (errbuf). */
int jw_register(jw_t *w, const char *name, int capacity, const char *const *opcodes, int n,
                int timeout_ms);
/* Receive one message: timeout_ms 0 does not wait, -1 waits forever.
 * 1 when one was read, 0 when none came, -1 on an unreadable message. */
int jw_recv(jw_t *w, jw_msg_t *m, int timeout_ms);
/* done with ok true and result (NULL: nil). */
int jw_done(jw_t *w, uint64_t job, uint32_t op, uint64_t attempt, const msgpack_object *result);
int jw_heartbeat(jw_t *w);
/* A heartbeat when nothing was sent for the announced interval (now:
 * CLOCK_MONOTONIC seconds). */
int jw_keepalive(jw_t *w, double now);
int jw_disconnect(jw_t *w);

#endif
