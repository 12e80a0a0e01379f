/* cycle.h: what cycle.c (jobq, the report) and cycle_peers.c (beanstalkd,
 * Redis streams, gearmand) share: one measured run of the full cycle —
 * submit, a worker runs a no-op, completion observed — driven the same way
 * for every system.
 *
 * A producer keeps `window` jobs in flight (submitted, completion not yet
 * observed), pipelining submits; each job carries its submit time (the
 * bench's CLOCK_MONOTONIC) in its payload, and whoever observes the
 * completion computes the latency from it, so no table maps ids to times.
 * The observer runs on another thread than the producer for jobq,
 * beanstalkd and Redis: it tells the producer about room in the window
 * through `done` and an eventfd the producer polls beside its socket. */
#ifndef JOBQ_BENCH_CYCLE_H
#define JOBQ_BENCH_CYCLE_H

#include "workloads.h"

#include <stdatomic.h>

typedef struct {
    long window;                /* jobs in flight at most */
    _Atomic long submitted;     /* producer */
    _Atomic long done;          /* observer */
    _Atomic long errors;        /* refused submits, failed jobs, protocol surprises */
    _Atomic bool stop_submit;   /* main: no more submits (drain) */
    _Atomic bool stop;          /* main: every thread returns */
    _Atomic bool sleeping;      /* producer: waiting for room in the window */
    int efd;                    /* eventfd: observer -> sleeping producer */
    /* Main thread, optional: called at the start (edge 0) and the end
     * (edge 1) of the measured window, for the system's own counters. */
    void (*mark)(void *arg, int edge);
    void *mark_arg;
    /* Observer only (read by main after the threads are joined): each
     * completion's time and latency, seconds. */
    double *t_done, *lat;
    size_t n, cap;
} cycle_t;

int cycle_init(cycle_t *cy, long window);
void cycle_free(cycle_t *cy);
/* Observer: a job submitted at t_submit (monotonic seconds) completed. */
void cycle_complete(cycle_t *cy, double t_submit);
/* Observer or producer: a job that will not complete (refused, failed):
 * an error, and room in the window; no sample. */
void cycle_failed(cycle_t *cy);
/* Producer: how many more jobs may be submitted now (0: the window is
 * full, or submitting stopped). */
long cycle_room(cycle_t *cy);
/* Producer with a full window: arms the wake-up; returns false when room
 * appeared meanwhile (do not sleep). Poll cy->efd, then cycle_woken. */
bool cycle_sleep(cycle_t *cy);
void cycle_woken(cycle_t *cy);

typedef struct {
    double t0, t1;      /* the measured window (monotonic seconds) */
    double rate, p50, p99; /* completions in the window per second; ms */
    double daemon_cores, bench_cores; /* CPU over the window */
    long jobs, errors, lost;
} cycle_result_t;
/* With the caller's threads running: warms up, measures `seconds` (o from
 * its start), stops submits, waits (up to 10 s) for every job in flight,
 * then sets cy->stop; -1 when some never completed. */
int cycle_measure(cycle_t *cy, double seconds, others_t *o, pid_t daemon, cycle_result_t *r);
/* Once the threads are joined: rate and latencies of the completions in
 * the window. */
void cycle_summarize(cycle_t *cy, cycle_result_t *r);

/* A job's payload as text ("%.9f" of its submit time), for the peers. */
int cycle_stamp(char *buf, size_t len, double t);

/* Options (main.c). */
extern double opt_cycle_seconds; /* window of each throughput line */
extern long opt_cycle_workers[8]; /* worker connections per line */
extern int opt_cycle_nworkers;
extern long opt_cycle_window;     /* jobs in flight */
extern long opt_cycle_cancels;    /* cancel samples */
extern long opt_cycle_losses;     /* worker-loss samples (each waits a lease) */
extern double opt_cycle_lease;    /* --worker-lease of the loss daemon */
extern bool opt_no_redis, opt_no_gearmand;

/* One line of the report and its figures under key (key.per_s, .p50_ms,
 * .p99_ms, .others_cores); ends o. */
void cycle_report(const char *label, const char *key, const cycle_result_t *r,
                  const others_t *o);
/* A line measured again (twice at most) while other processes used 0.25
 * cores or more during it: runs line(arg) until key.others_cores is
 * under that; returns the last run's rc. */
int cycle_quiet_line(int (*line)(void *arg), void *arg, const char *key);
/* "not measured: why" for a peer line, and a NaN figure. */
void cycle_not_measured(const char *label, const char *key, const char *why);

/* jobqd with events and a worker endpoint (tcp on a free port with
 * --transport tcp, the data directory's workers.sock otherwise): pub gets
 * the events endpoint, wep the workers'; more: extra arguments. */
int cycle_start_worker_daemon(daemon_t *d, char *pub, size_t plen, char *wep, size_t wlen,
                              const char *const *more);

/* Worker processes outside the bench (the python workload) that take the
 * place of the bench's own worker connections in a jobq line. */
typedef struct {
    int (*start)(void *arg, const char *wep, int n); /* 0 once started */
    void (*stop)(void *arg);
    void *arg;
} cycle_ext_t;
/* One jobq line: a fresh daemon (--sync sync), nworkers worker
 * connections (ext: processes), window jobs in flight for
 * opt_cycle_seconds; reported under label and key. */
int cycle_jobq_line(const char *sync, int nworkers, long window, const char *label,
                    const char *key, const cycle_ext_t *ext);

/* The same line on a daemon already running (the leader of a cluster, in
 * the cluster workload): d's client endpoint and pid, its events endpoint
 * pub and worker endpoint wep; the daemon is left running. */
int cycle_jobq_on(const daemon_t *d, const char *pub, const char *wep, int nworkers,
                  long window, const char *label, const char *key, const cycle_ext_t *ext);

/* cycle_peers.c: every peer line (beanstalkd, Redis, gearmand). */
int cycle_peers(void);

#endif
