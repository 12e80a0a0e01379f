/* harness.c: what every workload shares: ZeroMQ contexts, section
 * headings, the noise gate, list sampling, the blocked daemon, batches. */
#include "workloads.h"

#include <math.h>
#include <stdio.h>
#include <zmq.h>

const char *const LIST_FIELDS[] = {"id", "status", "priority", "summary"};

void *new_ctx(int io_threads, int max_sockets)
{
    void *ctx = zmq_ctx_new();
    /* zmq_ctx_term never waits for messages a socket could not deliver
     * (linger 0 for every socket of it): a workload's teardown cannot hang
     * on a peer that stopped reading. */
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, io_threads);
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, max_sockets);
    return ctx;
}

void section(const char *title)
{
    printf("\n== %s ==\n", title);
    fflush(stdout);
}

/* Other processes' CPU during the measurement, for the report. */
double noise_max;
int noisy_lines;

double noise_end(const others_t *o, const char *key)
{
    double v = others_end(o);
    result_set(key, v);
    if (v > noise_max)
        noise_max = v;
    if (v >= 0.25)
        noisy_lines++;
    return v;
}

/* Before each measured line: let other sessions' bursts pass. */
void quiet_gate(void)
{
    if (opt_quiet_wait > 0 && !wait_quiet(opt_quiet_wait))
        note("machine not quiet after %.0f s; measuring anyway", opt_quiet_wait);
}

void fail(const char *what)
{
    fprintf(stderr, "jobq-bench: %s\n", what);
}

/* list latency: n samples of query_jobs (all jobs, LIST_FIELDS). */
int measure_list(jc_t *c, long n, long expect_rows, samples_t *lat)
{
    for (long i = 0; i < n; i++) {
        double t0 = bench_now();
        long rows = jc_list(c, LIST_FIELDS, 4);
        double t1 = bench_now();
        if (rows < 0) {
            fprintf(stderr, "jobq-bench: query_jobs failed: %s\n", c->errbuf);
            return -1;
        }
        if (expect_rows >= 0 && rows != expect_rows) {
            fprintf(stderr, "jobq-bench: query_jobs returned %ld rows, expected %ld\n", rows,
                    expect_rows);
            return -1;
        }
        samples_add(lat, (t1 - t0) * 1e3);
    }
    return 0;
}

/* A daemon with job 1 running a long test.delay and --max-running 1, so
 * every job submitted after it stays queued. */
int start_blocked_daemon(daemon_t *d, jc_t **cp, void *ctx, const char *max_jobs)
{
    return start_blocked_daemon_ex(d, cp, ctx, max_jobs, NULL);
}

int start_blocked_daemon_ex(daemon_t *d, jc_t **cp, void *ctx, const char *max_jobs,
                            const char *const *more)
{
    const char *extra[32] = {"--max-running", "1", "--max-jobs", max_jobs};
    int n = 4;
    for (int i = 0; more && more[i] && n < 31; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    quiet_gate();
    if (jobqd_start(d, extra) < 0) {
        fail("cannot start jobqd");
        return -1;
    }
    *cp = jc_open(ctx, d->endpoint);
    if (!jc_submit_delay(*cp, BLOCKER_SECONDS, 0) || !jc_wait_stat(*cp, "running", 1, 10)) {
        fprintf(stderr, "jobq-bench: blocker job did not start: %s\n", (*cp)->errbuf);
        return -1;
    }
    return 0;
}

int submit_batches(jc_t *c, long n, double duration, long repeat)
{
    while (n > 0) {
        uint32_t k = n > opt_batch ? (uint32_t)opt_batch : (uint32_t)n;
        long ok = jc_submit_many_delay(c, k, duration, repeat);
        if (ok != (long)k) {
            fprintf(stderr, "jobq-bench: submit_many_jobs accepted %ld of %u: %s\n", ok, k,
                    c->errbuf);
            return -1;
        }
        n -= k;
    }
    return 0;
}
