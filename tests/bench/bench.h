/* bench.h: shared pieces of jobq-bench (see docs/benchmarks.md).
 *
 * The benchmark speaks the wire protocol with raw libzmq + msgpack-c and
 * the shared envelope codec (proto/wire.h); it does not use libjobq, so a
 * client-library change cannot move the daemon's figures. */
#ifndef JOBQ_BENCH_H
#define JOBQ_BENCH_H

#include "wire.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <zmq.h>

/* ---- time and statistics (util.c) ---- */

double bench_now(void);               /* CLOCK_MONOTONIC seconds */
void bench_sleep(double seconds);     /* the load pattern only, never to wait for state */

typedef struct {
    double *v;
    size_t n, cap;
} samples_t;

void samples_add(samples_t *s, double v);
void samples_free(samples_t *s);
/* Percentile (0..100) by nearest rank; sorts in place. NAN when empty. */
double samples_pct(samples_t *s, double pct);
double samples_mean(const samples_t *s);

/* ---- processes (util.c) ---- */

long proc_status_kb(pid_t pid, const char *key); /* "VmRSS", ... ; -1 on error */
long proc_threads(pid_t pid);
long proc_fd_count(pid_t pid);
double proc_cpu_seconds(pid_t pid);   /* utime + stime */
/* Context switches (voluntary + involuntary) of every thread of pid now:
 * each is a thread going to sleep or being preempted, so the count is
 * the process's wake-ups; -1 on error. */
long long proc_ctx_switches(pid_t pid);
typedef struct {
    pid_t tid;
    char name[32];
    double cpu; /* seconds */
} thread_cpu_t;
/* Each thread's name and CPU seconds; returns the count. */
int proc_threads_cpu(pid_t pid, thread_cpu_t *out, int max);
bool proc_alive(pid_t pid);
/* Poll RSS every 200 ms until six readings in a row (a second) agree (or
 * timeout); returns the last reading in kB. */
long proc_rss_settled(pid_t pid, double timeout);

/* CPU the rest of the machine used while we measured (other sessions'
 * processes: the figures are noisy when this is well above 0). */
typedef struct {
    pid_t daemon;
    double t, sys, irq, kth, self, dmn, kids;
} others_t;
void others_begin(others_t *o, pid_t daemon);
/* Cores busy outside this process, the daemon and the kernel's own threads
 * and interrupts since others_begin: other processes (and the VM's steal). */
double others_end(const others_t *o);
/* Cores the kernel's threads (journal, writeback, I/O completion) and
 * interrupts used since others_begin: mostly the daemon's fsyncs and the
 * loopback traffic, so not counted as others. */
double others_kernel(const others_t *o);
/* Processes the bench started to drive the daemon (the python workload's
 * clients and workers): their CPU is the bench's, not other processes'. */
void bench_child_add(pid_t pid);
void bench_child_remove(pid_t pid);
/* CPU seconds (utime + stime) of the registered children alive now. */
double bench_children_cpu(void);
/* Poll until the machine is quiet (under 0.15 busy cores outside us over
 * half a second) or max_wait passes; false on timeout. */
bool wait_quiet(double max_wait);

/* A free TCP port on 127.0.0.1 (bound and released). */
int free_tcp_port(void);

/* A fresh directory under the run's temporary root. */
int bench_mkdtemp(char *out, size_t len, const char *prefix);
void bench_rmtree(const char *dir);
extern char bench_tmp_root[256];

typedef struct {
    pid_t pid;
    char dir[300];
    char endpoint[400];  /* what clients connect to */
    char log[400];
} daemon_t;

/* Start jobqd in a fresh data directory, extra arguments NULL-terminated;
 * returns 0 once it answers a ping. */
int jobqd_start(daemon_t *d, const char *const *extra);
/* SIGTERM, wait up to 15 s (then SIGKILL), remove the data directory. */
void daemon_stop(daemon_t *d);
/* SIGTERM and wait up to `timeout` s (then SIGKILL), keeping the data
 * directory; returns the seconds it took to exit, -1 if it had to be
 * killed or died of another signal. */
double daemon_term(daemon_t *d, double timeout);
/* Start jobqd again on d's data directory (the store is recovered) with a
 * new log file (jobqd.<n>.log) and endpoint; extra as for jobqd_start.
 * *ready_s: from just before fork+exec to the first answered ping (pinged
 * with a 10 ms reconnect interval). 0 once it answers within timeout. */
int jobqd_restart(daemon_t *d, const char *const *extra, double timeout, double *ready_s);
/* beanstalkd on 127.0.0.1:free port; 0 once it accepts connections. */
int beanstalkd_start(daemon_t *d, int *port);
/* fork + exec argv (argv[0] a path) with stdin /dev/null and stdout and
 * stderr into log; the child's pid, -1 on error. */
pid_t bench_spawn(const char *const *argv, const char *log);
/* A TCP server on 127.0.0.1:free port in a fresh directory named after
 * `name`: argv_tpl is its argv (NULL-terminated) where "{port}", "{dir}"
 * and "{log}" stand for the port, the directory and the log file (which
 * also gets its output), and "{dir}/NAME" for a file in the directory; 0
 * once it accepts connections. Main thread only. */
int tcp_daemon_start(daemon_t *d, const char *name, const char *const *argv_tpl, int *port);

extern const char *opt_jobqd;
extern const char *opt_beanstalkd; /* NULL: not available */
extern const char *opt_redis;      /* redis-server for the cycle workload; NULL: not available */
extern const char *opt_gearmand;   /* gearmand for the cycle workload; NULL: not available */
extern const char *opt_transport;  /* "tcp" or "ipc" */
extern bool opt_verbose;
/* --sync for every jobqd the workloads start (NULL: the daemon's default,
 * always); the store workload sets its own per line. */
extern const char *opt_sync;
extern bool opt_keep; /* leave daemon directories (and their logs) in place */

void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- results (util.c) ---- */

/* Record a figure under a dotted name ("submit.single_1.jobs_per_s"). */
void result_set(const char *name, double value);
double result_get(const char *name); /* NAN when absent */
/* Writes {"machine": ..., "results": {...}} to `to` when given (and closes
 * it), else to the file at path. */
void results_write_json(const char *path, const char *machine_json, FILE *to);

/* ---- jobq client (jclient.c) ---- */

typedef struct {
    void *sock;
    uint64_t next_id;
    uint64_t last_sent_id;
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_unpacked up;
    zmq_msg_t frame; /* the last reply; up's strings point into it */
    wire_reply_t rep;
    char errbuf[256];
} jc_t;

jc_t *jc_open(void *zctx, const char *endpoint);
/* jc_open with ZMQ_RECONNECT_IVL set (ms; 0: libzmq's 100 ms), for timing
 * when a restarting daemon starts to answer. */
jc_t *jc_open_ivl(void *zctx, const char *endpoint, int reconnect_ivl_ms);
void jc_close(jc_t **c);
/* Start a request: the caller then packs exactly one args value into c->pk. */
msgpack_packer *jc_begin(jc_t *c, const char *method);
int jc_send(jc_t *c);
/* Receive one reply (any id) into c->rep; -1 on timeout. */
int jc_recv(jc_t *c, int timeout_ms);
/* Send the built request and wait for its reply; -1 on timeout, transport
 * error or an error reply (message in c->errbuf). */
int jc_call(jc_t *c, int timeout_ms);

/* Packs a one-opcode test.delay job: [ {op, args:{duration, repeat}} ]. */
void pack_delay_job(msgpack_packer *pk, double duration, long repeat);
/* The same job, its opcode depending on job dep's success when dep > 0. */
void pack_delay_job_dep(msgpack_packer *pk, double duration, long repeat, uint64_t dep);
/* submit_job of one test.delay; returns the id or 0. */
uint64_t jc_submit_delay(jc_t *c, double duration, long repeat);
/* submit_many_jobs of n identical test.delay jobs; returns jobs accepted,
 * -1 on failure. */
long jc_submit_many_delay(jc_t *c, uint32_t n, double duration, long repeat);
/* query_jobs listing (no ids) with the given fields; returns row count,
 * -1 on failure. */
long jc_list(jc_t *c, const char *const *fields, unsigned nfields);
/* stats: an integer counter by top-level key; -1 on failure. */
long long jc_stat(jc_t *c, const char *key);
/* stats: an integer in a top-level map ("jobs", "success"); 0 when the map
 * lacks the key, -1 on failure. */
long long jc_stat2(jc_t *c, const char *key, const char *sub);
/* stats.store (and live_jobs); -1 fields when absent. */
typedef struct {
    long long commits, fsyncs, records, failures, bytes, queued, durable, live_jobs;
    char sync[16];
} store_stats_t;
int jc_store_stats(jc_t *c, store_stats_t *s);
/* Sum of log_serial over every live job; -1 on failure. */
long long jc_sum_log_serial(jc_t *c);
int jc_ping(jc_t *c);
/* Poll stats every 50 ms until key >= want; false on timeout. */
bool jc_wait_stat(jc_t *c, const char *key, long long want, double timeout);

/* ---- CURVE (curve.c) ---- */

/* The keys of the curve workload's CURVE lines, read back from the czmq
 * certificate files it wrote (Z85 text). While bench_curve is set, every
 * jobqd the bench starts gets the server keypair in its data directory and
 * the client and worker public keys in DATA_DIR/authorized_keys, and is
 * started without --insecure; the bench's sockets on tcp:// endpoints are
 * CURVE clients (jclient.c and the SUBs with the submit key, jworker.c with
 * the worker key). NULL: plain TCP (--insecure), as every other workload. */
typedef struct {
    char dir[300]; /* the certificate files */
    char server_pub[41], client_pub[41], client_sec[41], worker_pub[41], worker_sec[41];
} bench_curve_t;
extern const bench_curve_t *bench_curve;
/* Copies the server keypair and the authorized public keys into a data
 * directory about to be given to jobqd; -1 on error. */
int bench_curve_prepare(const char *data_dir);
/* One czmq certificate: NAME.key (public) and, when sec is given,
 * NAME.key_secret (mode 0600), with metadata role; -1 on error. */
int bench_write_cert(const char *dir, const char *name, const char *role, const char *pub,
                     const char *sec);
/* Makes sock a CURVE client (worker: the worker key, else the submit key)
 * when bench_curve is set and endpoint is tcp://; -1 on error. */
int bench_curve_apply(void *sock, const char *endpoint, bool worker);

#endif
