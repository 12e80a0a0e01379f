/* wire.h: the jobq wire codec shared by the daemon and every C client.
 *
 * One request or reply is one ZeroMQ frame holding one msgpack map (see
 * docs/protocol.md, which is the reference; this file is its C form). This
 * module only frames envelopes and names error codes and limits; what each
 * method's arguments mean belongs to the daemon's handlers. Nothing here
 * keeps state, so every function may be called from any thread.
 *
 * Protocol version history (bump JOBQ_PROTOCOL_VERSION and record it here
 * and in docs/protocol.md):
 *   1  first version.
 */
#ifndef JOBQ_WIRE_H
#define JOBQ_WIRE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOBQ_PROTOCOL_VERSION 1

/* Named limits for everything a peer controls. */
#define JOBQ_MAX_REQUEST_BYTES (16u * 1024 * 1024) /* default request cap */
#define JOBQ_MAX_OPS_PER_JOB 1000
#define JOBQ_MAX_JOBS_PER_BATCH 100000
/* Jobs a submit_many_jobs carrying a client token may hold: its whole
 * answer is kept (in memory and with its first job) for the retry. */
#define JOBQ_MAX_JOBS_PER_TOKEN 10000
#define JOBQ_MAX_OP_NAME 64
#define JOBQ_MAX_ROWS_PER_REPLY 100000
#define JOBQ_MAX_LOG_MESSAGE 4096
#define JOBQ_DEFAULT_MAX_LOG_ENTRIES 100000 /* per job (--max-log-entries) */
#define JOBQ_MAX_DEPENDS 64
#define JOBQ_MAX_EVENTS_PER_REPLY 10000
#define JOBQ_MAX_REPLY_BYTES (32u * 1024 * 1024) /* query_jobs, events_since: then `more` */
#define JOBQ_KEEPALIVE_SECONDS 5     /* while wait_for_job_change is parked */
#define JOBQ_MAX_WAIT_SECONDS 600    /* longest wait_for_job_change timeout */

/* Stable error codes; the string form travels on the wire. */
typedef enum {
    JOBQ_ERR_NONE = 0,
    JOBQ_ERR_MALFORMED,        /* not msgpack, not a map, bad envelope */
    JOBQ_ERR_VERSION,          /* protocol version not supported */
    JOBQ_ERR_UNKNOWN_METHOD,   /* no such method */
    JOBQ_ERR_BAD_ARGUMENT,     /* missing argument, wrong type or range */
    JOBQ_ERR_TOO_LARGE,        /* request over the size limit */
    JOBQ_ERR_QUEUE_FULL,       /* live job limit reached */
    JOBQ_ERR_DRAINED,          /* drain flag set, submissions refused */
    JOBQ_ERR_SHUTTING_DOWN,    /* daemon stopping, submissions refused */
    JOBQ_ERR_UNKNOWN_OPCODE,   /* opcode name not known to any executor */
    JOBQ_ERR_INVALID_PRIORITY, /* priority not one of -10, 0, 10 */
    JOBQ_ERR_INVALID_DEPENDS,  /* malformed or relative dependency */
    JOBQ_ERR_UNKNOWN_FIELD,    /* query field not known */
    JOBQ_ERR_TOO_MANY_WAITERS, /* wait_for_job_change: --max-waiters parked */
    JOBQ_ERR_STORE_FAILED,     /* the store cannot commit: nothing new accepted */
    JOBQ_ERR_BUSY,             /* over a limit for now (store backlog, requests
                                  in flight on this connection): ask again */
    JOBQ_ERR_INTERNAL,         /* the daemon's own failure */
    /* Client-side only: never sent by the daemon. */
    JOBQ_ERR_TIMEOUT,          /* no reply within the caller's timeout */
    JOBQ_ERR_TRANSPORT,        /* could not send or connect */
    JOBQ_ERR_NOT_RUNNING,      /* nothing listens at the endpoint (daemon
                                  stopped, or stopped while a request was in
                                  flight) */
    /* Daemon codes added since: after the others, so their values (the
     * C library's ABI) never move. */
    JOBQ_ERR_TOKEN_REUSED,     /* a client token sent again with another body */
    JOBQ_ERR_PERMISSION_DENIED, /* the caller's role (or ownership) does not
                                   allow the request: nothing changed */
    JOBQ_ERR_NOT_LEADER,       /* a cluster node that is not the leader: the
                                  error's "leader" says where to go */
    JOBQ_ERR__COUNT
} jobq_code_t;

/* Wire name of a code ("QueueFull"...); never NULL. */
const char *jobq_code_name(jobq_code_t code);
/* Code for a wire name; JOBQ_ERR_INTERNAL for a name not known. */
jobq_code_t jobq_code_from_name(const char *name, size_t len);

/* A parsed request. Pointers point into the msgpack object it came from. */
typedef struct {
    uint64_t id;                 /* client-chosen request id */
    bool has_id;                 /* false when the id could not be read */
    const char *method;          /* not NUL-terminated */
    size_t method_len;
    const msgpack_object *args;  /* a map, or NULL when absent */
} wire_request_t;

/* Parse a request envelope. Returns JOBQ_ERR_NONE or the code to answer
 * with, and a message in err. req->id/has_id are filled as early as possible
 * so even a rejected request can be answered with its id. */
jobq_code_t wire_request_parse(const msgpack_object *root, wire_request_t *req,
                               char *err, size_t errlen);

/* A parsed reply. */
typedef struct {
    uint64_t id;
    bool has_id;
    bool ok;
    bool keepalive;               /* a keepalive, not the answer yet */
    const msgpack_object *result; /* when ok */
    jobq_code_t code;             /* when !ok */
    const char *message;          /* when !ok; not NUL-terminated */
    size_t message_len;
} wire_reply_t;

int wire_reply_parse(const msgpack_object *root, wire_reply_t *rep);

/* Envelope writers: each starts the map; the caller then packs exactly one
 * value (the args map or the result). */
void wire_request_begin(msgpack_packer *pk, uint64_t id, const char *method);
void wire_reply_ok_begin(msgpack_packer *pk, uint64_t id, bool has_id);
/* Writes a whole error reply. */
void wire_reply_error(msgpack_packer *pk, uint64_t id, bool has_id,
                      jobq_code_t code, const char *message);
/* An error reply whose error map has `extra` more keys, which the caller
 * packs next (key, value...): NotLeader's "leader". */
void wire_reply_error_begin(msgpack_packer *pk, uint64_t id, bool has_id, jobq_code_t code,
                            const char *message, uint32_t extra);
/* Writes a whole keepalive: not the answer yet, the request is parked. */
void wire_reply_keepalive(msgpack_packer *pk, uint64_t id);

/* Small helpers for reading msgpack maps. */
const msgpack_object *wire_map_get(const msgpack_object *map, const char *key);
bool wire_str_eq(const msgpack_object *o, const char *s);
void wire_pack_cstr(msgpack_packer *pk, const char *s);
void wire_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* How many of the n bytes of UTF-8 string s to quote so that at most max
 * are quoted and no character is cut. */
int wire_utf8_quote_len(const char *s, size_t n, size_t max);
/* Integer value of o into *out; false if o is not an integer (a float with
 * an integral value is accepted, as JSON-born clients send those). */
bool wire_get_int(const msgpack_object *o, int64_t *out);
/* Number (integer or float) into *out. */
bool wire_get_number(const msgpack_object *o, double *out);
/* A worker opcode's name: 1 to JOBQ_MAX_OP_NAME bytes of letters, digits,
 * '.', '_' and '-' (docs/protocol.md, "Workers"). */
bool wire_opcode_name_ok(const char *s, size_t len);
/* Timestamps travel as [seconds, microseconds]; 0 means unset (nil). */
void wire_pack_ts(msgpack_packer *pk, int64_t usec);
/* A timestamp wire_pack_ts packed, read back into *usec: false (and *usec
 * 0) unless o is [seconds >= 0, microseconds 0..999999] whose sum fits in
 * an int64_t. */
bool wire_get_ts(const msgpack_object *o, int64_t *usec);

/* A msgpack write target for a value that is kept, grown from a small
 * first size (msgpack_sbuffer starts at 8 KB: a large allocation, then a
 * copy or a shrink, per small value). `head` bytes are reserved in front
 * of the value, for a header the caller writes (a change record's). The
 * value is mem + head, len bytes; on a failed allocation `failed` is set,
 * later writes do nothing and the caller frees mem. */
typedef struct {
    char *mem;
    size_t head, len, cap;
    bool failed;
} wire_buf_t;

/* -1 when the first allocation fails (nothing to free then). */
int wire_buf_init(wire_buf_t *b, size_t head, size_t first);
/* msgpack_packer's write callback; data is the wire_buf_t. */
int wire_buf_write(void *data, const char *buf, size_t len);

#endif
