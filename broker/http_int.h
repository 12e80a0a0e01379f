/* http_int.h: the HTTP thread's parts, shared by http.c (the server:
 * routing, authentication, static files, the API), http_live.c (the event
 * stream, the dashboard's ticks and the SSE streams) and http_json.c.
 * Everything here runs on the HTTP thread only. */
#ifndef JOBQ_HTTP_INT_H
#define JOBQ_HTTP_INT_H

#include "auth.h"
#include "daemon.h"
#include "http.h"

#include <microhttpd.h>
#include <stdio.h>

/* What one browser may have waiting before its stream is closed (it
 * reconnects and starts from a fresh snapshot). */
#define JQ_SSE_MAX_PENDING (4u << 20)
/* A stream's buffer larger than this is freed once it is sent. */
#define JQ_SSE_KEEP_BUFFER (256u << 10)
#define JQ_SSE_KEEPALIVE_US (15 * 1000000LL)
#define JQ_TICK_US 500000
/* The event stream is read every so often, not at each event: a busy
 * daemon's thousands of events a second cost the thread twenty wake-ups a
 * second, not thousands (each one a context switch the loop and the store
 * would pay for on a small machine). */
#define JQ_LIVE_READ_US 50000
#define JQ_LIVE_BATCH 256
#define JQ_TICK_HISTORY 1200 /* ten minutes of ticks */
#define JQ_RUNNING_SHOWN 100
#define JQ_RUNNING_TRACKED 100000
#define JQ_HTTP_MAX_CONNECTIONS 256
#define JQ_HTTP_MAX_PER_IP 64
#define JQ_HTTP_MAX_BODY 65536
#define JQ_HTTP_LOG_BYTES 200 /* of a log line shown in the running table */
/* A job as the API and its stream's snapshot show it: its newest log
 * entries only (the rest stay in the store and `jobq info`). */
#define JQ_HTTP_JOB_LOG_SHOWN 1000
/* What every stream together may have waiting: beyond it new streams are
 * refused (503) until browsers catch up. */
#define JQ_SSE_MAX_TOTAL (64u << 20)
/* Logged-in browsers: their sessions (a cookie naming one), at most this
 * many, the oldest dropped first; each at most a day. */
#define JQ_HTTP_SESSIONS 1024
#define JQ_HTTP_SESSION_US (24 * 3600 * 1000000LL)
#define JQ_HTTP_STOP_US 2000000 /* held answers' last chance to be saved */

/* A reply from jq_dispatch, decoded. */
typedef struct {
    msgpack_sbuffer bytes;
    msgpack_unpacked up;
    const msgpack_object *result; /* when ok */
    bool ok;
    jobq_code_t code;
    char message[512];
    uint64_t ticket; /* nonzero: shows state the store has not made durable */
} jq_http_reply_t;

typedef void (*jq_http_args_fn)(msgpack_packer *pk, const void *ctx);

/* Runs a method as `who` through jq_dispatch; args packs the args map
 * (NULL: {}). 0 and *out (free with jq_http_reply_destroy), -1 when the
 * request could not be run at all. */
int jq_http_call(jq_daemon_t *d, const jq_identity_t *who, const char *method,
                 jq_http_args_fn args, const void *ctx, jq_http_reply_t *out);
void jq_http_reply_destroy(jq_http_reply_t *r);

void jq_json_string(FILE *f, const char *s, size_t n);
void jq_json_cstr(FILE *f, const char *s);
void jq_json_msgpack(FILE *f, const msgpack_object *o);
/* {"key": int, ...} with keys from keys[]; -1 for anything else. */
int jq_json_flat_ints(const char *s, size_t n, const char *const *keys, size_t nkeys,
                      int64_t *vals, bool *present);

/* One open SSE stream: the overview (job 0) or one job's records. */
typedef struct jq_sse {
    struct jq_sse *next, *prev;
    struct jq_http *h;
    struct MHD_Connection *conn;
    uint64_t job;
    uint64_t min_serial; /* a job stream: records after its snapshot */
    uint64_t ticket;     /* nothing is sent before the store is durable here */
    char *buf;
    size_t len, off, cap;
    /* Bytes appended and handed to MHD since the stream began; the first
     * message (a job's snapshot, however large) is not counted against the
     * bound: only what piles up after it. */
    uint64_t appended, sent, exempt_until;
    bool suspended;
    bool closing;
} jq_sse_t;

typedef struct jq_running jq_running_t; /* http_live.c */

/* A browser logged in: the cookie carries the random id, never the token,
 * so a page on another port of the host (cookies ignore ports) learns
 * nothing lasting, a restart or logout ends it, and the token is checked
 * again at every request (a removed key ends it too). */
typedef struct {
    char id[65];
    char *token;
    int64_t expires_wall; /* microseconds */
    int64_t created_mono;
} jq_session_t;

typedef struct jq_http {
    jq_daemon_t *d;
    struct MHD_Daemon *mhd;
    jq_http_addr_t addr;
    char port_path[JQ_PATH_BYTES + 16];
    char web_dir[JQ_PATH_BYTES];
    char csrf[65];        /* hex of 32 random bytes, for the life of the run */
    char cookie_name[32]; /* jobq_session_PORT */
    jq_session_t sessions[JQ_HTTP_SESSIONS];
    bool stopping;        /* the daemon stops: finish, take nothing new */
    void *sub;            /* SUB on JQ_HTTP_EVENTS_EP */
    int stop_fd;          /* eventfd: jq_http_destroy wakes the thread */
    pthread_t thread;
    bool started;
    struct jq_req *held;  /* requests waiting for the store */
    jq_sse_t *streams;    /* every SSE stream */
    /* The live view (http_live.c). */
    uint64_t epoch, seq;  /* last event seen */
    uint64_t missed;      /* events lost by this thread's stream (gaps) */
    uint64_t t_changes, t_submitted, t_finished[3]; /* this tick's */
    int64_t next_tick, next_keepalive;
    jq_running_t *running;
    char *history[JQ_TICK_HISTORY]; /* the last ticks' JSON, a ring */
    unsigned hist_head, hist_len;
    char *pending_tick;   /* a tick waiting for the store */
    uint64_t pending_ticket;
} jq_http_t;

/* A request's own state across MHD's calls. */
typedef struct jq_req {
    struct jq_req *next_held;
    struct MHD_Connection *conn;
    char *body;
    size_t body_len;
    bool body_too_large;
    struct MHD_Response *ready; /* answered, waiting for the store */
    unsigned ready_status;
    bool resumed;               /* suspended once: never run again */
    uint64_t ticket;
} jq_req_t;

/* Who is asking (http_auth.c). A bearer token that does not verify is
 * answered 401 (a program sent it); a session cookie that does not
 * (expired, its key removed, logged out) is as good as none, so the page
 * still loads and can log in again. */
typedef enum {
    ASK_TOKEN,     /* a valid token: its key's role */
    ASK_ANONYMOUS, /* no token where one is not needed: --http-role */
    ASK_NOBODY,    /* no token where one is needed: the page and login only */
} asker_t;

/* A JSON body being written, then answered (held while its ticket is ahead
 * of the store). */
typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} jq_body_t;

/* http.c */
int jq_http_body_open(jq_body_t *b);
void jq_http_body_discard(jq_body_t *b);
/* Answers b (and frees it) now, or suspends the connection until the
 * store is durable up to ticket; MHD then calls the handler again and the
 * ready response goes. */
enum MHD_Result jq_http_answer(jq_http_t *h, jq_req_t *rq, unsigned status, jq_body_t *b,
                               uint64_t ticket);
/* Queues r with status and drops the caller's reference. */
enum MHD_Result jq_http_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r);
struct MHD_Response *jq_http_json_response(char *json, size_t len);
void jq_http_headers(struct MHD_Response *r, bool page);
/* Answer {"error": code, "message": ...} with status. */
enum MHD_Result jq_http_error(struct MHD_Connection *c, unsigned status, const char *code,
                              const char *message);
/* The job page's row as JSON into f (the newest log entries only) as who
 * may read it: 0; 1 when the job does not exist, 2 when who may not read
 * jobs, -1 on failure. *ticket as jq_http_call's. */
int jq_http_job_json(jq_http_t *h, const jq_identity_t *who, uint64_t id, FILE *f,
                     uint64_t *change_serial, uint64_t *ticket);

/* http_auth.c. 0 and *who, *asker; -1 when an error was answered. */
int jq_http_authenticate(jq_http_t *h, struct MHD_Connection *c, jq_identity_t *who,
                         asker_t *asker, bool *cookie_refused, enum MHD_Result *answered);
bool jq_http_host_ok(jq_http_t *h, struct MHD_Connection *c);
/* form_token: the login form's field; NULL: the X-CSRF-Token header. */
bool jq_http_csrf_ok(jq_http_t *h, struct MHD_Connection *c, const char *form_token);
/* POST /login (out false) or /logout. */
enum MHD_Result jq_http_login(jq_http_t *h, jq_req_t *rq, bool out);
void jq_http_sessions_free(jq_http_t *h);

/* http_api.c: GET /api/jobs, /api/job, /api/stats (method), /api/session,
 * /api/workers, /metrics; POST /api/cancel|priority|archive (method). */
enum MHD_Result jq_api_jobs(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who);
enum MHD_Result jq_api_job(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who);
enum MHD_Result jq_api_plain(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                             const char *method);
enum MHD_Result jq_api_session(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                               asker_t asker, bool cookie_refused);
enum MHD_Result jq_api_workers(jq_http_t *h, jq_req_t *rq);
enum MHD_Result jq_api_metrics(jq_http_t *h, jq_req_t *rq);
enum MHD_Result jq_api_action(jq_http_t *h, jq_req_t *rq, const jq_identity_t *who,
                              const char *method);
/* The answer to jq_http_job_json's rc other than 0. */
enum MHD_Result jq_http_job_error(struct MHD_Connection *c, int rc);
/* A decimal id or count of a query string; false for anything else. */
bool jq_http_parse_u64(const char *s, uint64_t *out);

/* http_live.c */
int jq_live_init(jq_http_t *h, void *zctx, char *err, size_t errlen);
void jq_live_fini(jq_http_t *h);
/* Reads what the event stream has, at most JQ_LIVE_BATCH events; returns
 * how many it read. */
int jq_live_read(jq_http_t *h);
/* Ticks, keepalives, store releases; returns microseconds until the next
 * thing due. */
int64_t jq_live_work(jq_http_t *h, int64_t now_mono);
/* GET /events[?job=N]. */
enum MHD_Result jq_live_open(jq_http_t *h, struct MHD_Connection *c, const jq_identity_t *who,
                             uint64_t job);
/* Streams still open. */
bool jq_live_streams_open(const jq_http_t *h);
/* Closes every stream (stopping). */
void jq_live_close_all(jq_http_t *h);

#endif
