/* workloads.h: what the workload files (idle.c, busy.c, shards.c, submit.c,
 * events.c, watchers.c, store.c, core.c, cycle.c, py.c, curve.c, http.c,
 * cluster.c, sidebyside.c) share with main.c and harness.c:
 * the options, the report helpers and the workload entry points. */
#ifndef JOBQ_BENCH_WORKLOADS_H
#define JOBQ_BENCH_WORKLOADS_H

#include "bench.h"

#define LONG_REPEAT 100000L /* test.delay's largest repeat (a job's log limit) */
#define BLOCKER_SECONDS 3600.0

/* ---- options (main.c; defaults in --help) ---- */

extern long opt_idle_clients, opt_list_jobs, opt_samples;
extern long opt_busy[8];
extern int opt_nbusy;
extern double opt_busy_seconds, opt_busy_period;
extern long opt_shard_jobs;
extern double opt_shard_seconds;
extern int opt_readers, opt_writers, opt_pipeline, opt_ids_per_query;
extern long opt_log_jobs;
extern double opt_submit_seconds;
extern int opt_clients, opt_batch;
extern long opt_mem_jobs;
extern const char *opt_json;
extern double opt_quiet_wait;
/* events workloads (events.c, watchers.c) */
extern double opt_ev_seconds;   /* window of each events/s line */
extern int opt_ev_subs;         /* the "many subscribers" count */
extern int opt_ev_jobs;         /* jobs driving the event stream */
extern long opt_ev_samples;     /* latency samples (changes) */
extern long opt_waiters;        /* parked wait_for_job_change requests */
extern int opt_waiter_conns;    /* DEALER connections carrying them */
extern int opt_watchers;        /* pollers / subscribers following jobs */
extern int opt_watch_jobs;      /* busy jobs they follow */
extern double opt_watch_seconds;
extern double opt_poll_interval; /* seconds between a poller's queries */
/* store workload (store.c) */
extern double opt_store_seconds; /* window of each durable-submit line */
extern long opt_recover_jobs[4]; /* live jobs for the recovery times */
extern int opt_nrecover;
extern long opt_store_log_jobs;  /* jobs with 10 log entries (bytes on disk) */
/* core workload (core.c) */
extern double opt_core_seconds;        /* window of each latency line */
extern long opt_core_jobs;             /* dependent jobs per shards line */
extern double opt_core_biglog_timeout; /* longest wait for the long log / dependents */
extern long opt_core_log_entries;      /* log entries of the long-log job */
extern long opt_core_busy_jobs;        /* logging jobs of the busy latency line */

/* cycle workload: see cycle.h */
/* python workload (py.c) */
extern const char *opt_python;   /* the interpreter running py_bench.py */
extern long opt_py_workers[8];   /* worker processes per cycle line */
extern int opt_py_nworkers;
/* http workload (http.c) */
extern double opt_http_seconds; /* window of the list and of the submit measurement */
extern int opt_http_streams;    /* the dashboard's overview streams */
extern double opt_http_rate;    /* background changes/s (submissions) */
extern long opt_http_jobs;      /* jobs queued before measuring */

/* cluster workload (cluster.c) */
extern long opt_cluster_failovers; /* kill -9 rounds of the failover line */
extern long opt_catchup_jobs;      /* jobs in the cluster a new node catches up with */

/* peers workload (sidebyside.c) */
extern double opt_peers_seconds; /* window of each line */
extern long opt_peers_mem_jobs;  /* jobs queued per server for the heap line */
extern long opt_peers_idle;      /* idle connections per server */

/* ---- harness (harness.c) ---- */

extern const char *const LIST_FIELDS[4]; /* id, status, priority, summary */
extern double noise_max;  /* most other-process cores in any line */
extern int noisy_lines;   /* lines at 0.25 cores or more */

void *new_ctx(int io_threads, int max_sockets);
void section(const char *title);
/* Ends an others_t window, records it under key and in the noise totals. */
double noise_end(const others_t *o, const char *key);
/* Before each measured line: let other sessions' bursts pass. */
void quiet_gate(void);
void fail(const char *what);
/* n samples of query_jobs listing every job with LIST_FIELDS (ms). */
int measure_list(jc_t *c, long n, long expect_rows, samples_t *lat);
/* jobqd with job 1 running a long test.delay under --max-running 1, so
 * every job submitted after it stays queued. */
int start_blocked_daemon(daemon_t *d, jc_t **cp, void *ctx, const char *max_jobs);
/* The same with more jobqd arguments (NULL-terminated, may be NULL). */
int start_blocked_daemon_ex(daemon_t *d, jc_t **cp, void *ctx, const char *max_jobs,
                            const char *const *more);
/* submit_many_jobs of n test.delay jobs in batches of opt_batch. */
int submit_batches(jc_t *c, long n, double duration, long repeat);

/* ---- event stream helpers (events.c) ---- */

double wall_now(void); /* CLOCK_REALTIME seconds: the clock of event times */
/* jobqd that also publishes on tcp://127.0.0.1:<free port> (with --transport
 * tcp; ipc://DIR/events.sock otherwise), written to pub; more: extra
 * arguments, NULL-terminated (may be NULL). */
int start_pub_daemon(daemon_t *d, char *pub, size_t len, const char *const *more);
/* An event body's seq, read without unpacking the record when it can be. */
bool event_seq(const void *data, size_t n, uint64_t *seq);
/* The length of the one msgpack value at p (at most n bytes), 0 when it
 * does not end there (events.c). */
size_t mp_skip(const unsigned char *p, size_t n);
/* A batch/ message's array header: its event count, *p and *n moved past
 * it; false when the body is not such an array (events.c). */
bool batch_header(const unsigned char **p, size_t *n, size_t *count);
/* Answer a request read off router as jobqd answers a ping: an ok reply
 * with its id (submit.c; the echo floors). sb is scratch. */
void echo_answer(void *router, zmq_msg_t *rid, const zmq_msg_t *body, msgpack_sbuffer *sb);
typedef struct {
    uint64_t job, serial;
    double time; /* the change's time (wall clock, seconds) */
} event_info_t;
/* Unpacks a job event body (into up) and reads its record's job, serial
 * and time. */
bool event_record(msgpack_unpacked *up, const void *data, size_t n, event_info_t *ev);

/* ---- submit workers (submit.c) ---- */

typedef enum { W_ECHO, W_PING, W_SUBMIT, W_BATCH, W_BS_PUT } wkind_t;
/* n client threads of one kind for `seconds` (each its own socket; W_BATCH
 * sends submit_many_jobs of opt_batch); returns items/s, fills p50/p99 of
 * the per-request latency (ms), errors, and *items (may be NULL). */
double run_workers(wkind_t kind, int n, const char *ep, int port, long cap_total, pid_t daemon,
                   double seconds, double *p50, double *p99, long *errors, others_t *o,
                   long *items);
/* One line of rate and latency; records key.per_s/.p50_ms/.p99_ms and the
 * noise (ends o). */
void report_rate(const char *label, const char *key, double rate, double p50, double p99,
                 long errors, const char *unit, const others_t *o);

/* ---- the beanstalkd body (submit.c): one job's ops, as jobqd gets them ---- */

extern const char BS_BODY_NOTE[];
extern char bs_body[128];
extern size_t bs_body_len;

/* ---- workloads: 0 when measured, -1 when one failed ---- */

int workload_idle(void);   /* idle.c */
int workload_memory(void); /* idle.c */
int workload_busy(void);   /* busy.c */
int workload_shards(void); /* shards.c */
int workload_submit(void); /* submit.c */
int workload_events(void); /* events.c: events/s, subscriber and waiter latency */
int workload_watch(void);  /* watchers.c: pollers against subscribers */
int workload_store(void);  /* store.c: durable submits, fsyncs, recovery, bytes on disk */
int workload_core(void);   /* core.c: latency under a log load, a long log, hot shard */
int workload_cycle(void);  /* cycle.c: submit -> worker -> success, against peers */
int workload_python(void); /* py.c: the Python client against the C client */
int workload_curve(void);  /* curve.c: CURVE against plain TCP, submit and the full cycle */
int workload_http(void);   /* http.c: list and submit with and without a dashboard open */
int workload_cluster(void); /* cluster.c: 1/3/5 nodes, failover, catch-up, stopped follower */

/* RSS per idle connection (idle.c): n connections to a server's pid, plain
 * TCP to 127.0.0.1:port (the rss before and after in kB, may be NULL) or
 * idle DEALERs from helper processes to a ZeroMQ endpoint; *made: the
 * connections the server accepted. NaN when none was. */
double idle_tcp_cost(pid_t pid, int port, long n, long *made, long *rss0, long *rss1);
double idle_zmq_cost(pid_t pid, const char *endpoint, long n, long *made);

int workload_peers(void); /* sidebyside.c: the issue-14 table against Redis, beanstalkd, gearmand */

/* Child-process entry points (idle.c), run through /proc/self/exe. */
int idle_helper_main(const char *endpoint, long n);
int router_helper_main(const char *endpoint);
/* sidebyside.c: a ROUTER on each endpoint answering every request ok. */
int echo_helper_main(int nendpoints, char **endpoints);

#endif
