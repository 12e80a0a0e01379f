/* main.c: jobq-bench — workloads, options and the report.
 *
 * Every workload starts its own jobqd (and beanstalkd, for the figures the
 * issue compares against) in a fresh temporary data directory, drives it
 * with raw ZeroMQ clients and prints what it measured. See --help and
 * docs/benchmarks.md. This file holds the options, the dispatch, the
 * machine line and the summary; each workload group has its own file
 * (idle.c, busy.c, shards.c, submit.c, events.c, watchers.c, store.c,
 * core.c, cycle.c with cycle_peers.c, py.c, curve.c, http.c, cluster.c). */
#include "cycle.h"
#include "workloads.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zmq.h>

#ifndef JOBQ_BENCH_JOBQD
#define JOBQ_BENCH_JOBQD ""
#endif

const char *opt_jobqd = JOBQ_BENCH_JOBQD;
const char *opt_beanstalkd = NULL;
const char *opt_redis = NULL;
const char *opt_gearmand = NULL;
bool opt_no_redis = false, opt_no_gearmand = false;
double opt_cycle_seconds = 3;
long opt_cycle_workers[8] = {1, 4, 16};
int opt_cycle_nworkers = 3;
long opt_cycle_window = 64;
long opt_cycle_cancels = 200;
long opt_cycle_losses = 3;
double opt_cycle_lease = 2;
const char *opt_python = "/usr/bin/python3";
long opt_py_workers[8] = {1, 4};
int opt_py_nworkers = 2;
const char *opt_transport = "tcp";
bool opt_verbose = false;

long opt_idle_clients = 10000;
long opt_list_jobs = 1000;
long opt_samples = 300;
long opt_busy[8] = {0, 15, 1000};
int opt_nbusy = 3;
double opt_busy_seconds = 10;
double opt_busy_period = 0.02;
long opt_shard_jobs = 20000;
double opt_shard_seconds = 5;
const char *opt_sync = NULL;
int opt_readers = 4, opt_writers = 2, opt_pipeline = 4, opt_ids_per_query = 100;
long opt_log_jobs = 500;
double opt_submit_seconds = 3;
int opt_clients = 8;
int opt_batch = 1000;
long opt_mem_jobs = 1000000;
const char *opt_json = NULL;
double opt_quiet_wait = 30;
bool opt_keep = false;
static bool opt_no_beanstalkd = false;
double opt_ev_seconds = 5;
int opt_ev_subs = 100;
int opt_ev_jobs = 200;
long opt_ev_samples = 1000;
long opt_waiters = 10000;
int opt_waiter_conns = 100;
int opt_watchers = 100;
int opt_watch_jobs = 10;
double opt_watch_seconds = 5;
double opt_poll_interval = 0.01;
double opt_store_seconds = 3;
long opt_recover_jobs[4] = {100000, 1000000};
int opt_nrecover = 2;
long opt_store_log_jobs = 10000;
double opt_core_seconds = 5;
long opt_core_jobs = 50000;
double opt_core_biglog_timeout = 120;
long opt_core_log_entries = 100000;
long opt_core_busy_jobs = 1000;
double opt_http_seconds = 5;
int opt_http_streams = 3;
double opt_http_rate = 2000;
long opt_http_jobs = 10000;
long opt_cluster_failovers = 5;
long opt_catchup_jobs = 50000;
double opt_peers_seconds = 2;
long opt_peers_mem_jobs = 200000;
long opt_peers_idle = 2000;

/* ------------------------------------------------------------------ */
/* summary                                                              */

static void row(const char *what, const char *value, const char *target, int met,
                const char *beans)
{
    printf("  %-46s %-22s %-22s %-7s %s\n", what, value, target,
           met < 0 ? "-" : met ? "met" : "NOT met", beans);
}

static void fmt(char *buf, size_t len, const char *f, double v)
{
    if (isnan(v))
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, f, v);
}

static int met(double v, bool ok)
{
    return isnan(v) ? -1 : ok;
}

static void summary(void)
{
    section("Summary against the issue's targets");
    printf("  %-46s %-22s %-22s %-7s %s\n", "figure", "jobqd", "target", "", "beanstalkd");
    char v[64], b[64];
    double t0 = result_get("idle.threads_before"), t1 = result_get("idle.threads_after");
    snprintf(v, sizeof v, isnan(t0) ? "n/a" : "%.0f -> %.0f", t0, t1);
    row("daemon threads, 10k idle clients", v, "unchanged", met(t0, t0 == t1), "-");
    char key[64];
    snprintf(key, sizeof key, "busy.%ld.list_p99_ms", opt_busy[opt_nbusy - 1]);
    double x = result_get(key);
    fmt(v, sizeof v, "%.2f ms", x);
    char what[96];
    snprintf(what, sizeof what, "list p99 with %ld busy jobs", opt_busy[opt_nbusy - 1]);
    row(what, v, "< 5 ms", met(x, x < 5), "-");
    x = result_get("submit.single_1.per_s");
    double floor = result_get("submit.ping_1.per_s");
    fmt(v, sizeof v, "%.0f /s", x);
    fmt(b, sizeof b, "%.0f /s", result_get("submit.beanstalkd_put_1.per_s"));
    row("submit one at a time, 1 client", v, "~25,000 /s (floor)", met(x, x >= 25000), b);
    fmt(v, sizeof v, "%.0f /s", floor);
    row("  jobqd ping floor, 1 client", v, "", -1, "");
    x = result_get("submit.batch_1.per_s");
    fmt(v, sizeof v, "%.0f /s", x);
    row("submit in batches, 1 client", v, "> 200,000 /s", met(x, x > 200000), "-");
    x = result_get("memory.bytes_per_job");
    fmt(v, sizeof v, "%.0f B", x);
    fmt(b, sizeof b, "%.0f B", result_get("memory.beanstalkd.bytes_per_job"));
    row("RSS per queued job", v, "< 1 KB (1024 B)", met(x, x < 1024), b);
    x = result_get("idle.bytes_per_client");
    fmt(v, sizeof v, "%.0f B", x);
    fmt(b, sizeof b, "%.0f B", result_get("idle.beanstalkd.bytes_per_client"));
    row("RSS per idle client connection", v, "< 4 KB (4096 B)", met(x, x < 4096), b);
    double e1 = result_get("events.rate_1.published_per_s");
    snprintf(key, sizeof key, "events.rate_%d.published_per_s", opt_ev_subs);
    double en = result_get(key);
    snprintf(v, sizeof v, isnan(e1) ? "n/a" : "%.0f / %.0f /s", e1, en);
    snprintf(what, sizeof what, "events published, 1 / %d subscribers", opt_ev_subs);
    row(what, v, "(report)", -1, "-");
    snprintf(key, sizeof key, "events.rate_%d.missed_pct", opt_ev_subs);
    x = result_get(key);
    fmt(v, sizeof v, "%.2f %%", x);
    snprintf(what, sizeof what, "  events missed per subscriber, %d subs", opt_ev_subs);
    row(what, v, "(report)", -1, "-");
    snprintf(key, sizeof key, "events.batch_%d.received_per_s_total", opt_ev_subs);
    x = result_get(key);
    snprintf(key, sizeof key, "events.batch_%d.missed_pct", opt_ev_subs);
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2fM/s, %.2f%% missed", x / 1e6, result_get(key));
    snprintf(what, sizeof what, "  deliveries to %d subs, batch/ stream", opt_ev_subs);
    row(what, v, ">= 1M /s, none missed", met(x, x >= 1e6 && result_get(key) == 0), "-");
    x = result_get("events.latency_1.p50_ms");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f ms", x,
             result_get("events.latency_1.p99_ms"));
    row("change -> subscriber p50 / p99", v, "(report)", -1, "-");
    x = result_get("events.waiters.p50_ms");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f ms", x,
             result_get("events.waiters.p99_ms"));
    snprintf(what, sizeof what, "change -> waiter answer, %ld parked", opt_waiters);
    row(what, v, "(report)", -1, "-");
    t0 = result_get("events.waiters.threads_before");
    t1 = result_get("events.waiters.threads_during");
    snprintf(v, sizeof v, isnan(t0) ? "n/a" : "%.0f -> %.0f", t0, t1);
    row("  daemon threads, waiters parked", v, "unchanged", met(t0, t0 == t1), "-");
    x = result_get("watch.poll.daemon_cpu_cores");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f cores", x,
             result_get("watch.stream.daemon_cpu_cores"));
    snprintf(what, sizeof what, "daemon CPU, %d pollers / %d subscribers", opt_watchers,
             opt_watchers);
    row(what, v, "(report)", -1, "-");
    x = result_get("store.always.single_1.per_s");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.0f / %.0f /s", x,
             result_get("store.none.single_1.per_s"));
    row("durable submit_job, 1 client, always / none", v, "~25,000 /s (pre-store)",
        met(x, x >= 25000), "-");
    x = result_get("store.always.batch_1.per_s");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.0f / %.0f /s", x,
             result_get("store.none.batch_1.per_s"));
    row("durable batches, 1 client, always / none", v, ">200,000/s (pre-store)",
        met(x, x > 200000), "-");
    x = result_get("store.always.single_n.jobs_per_fsync");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.1f / %.0f", x,
             result_get("store.always.batch_n.jobs_per_fsync"));
    snprintf(what, sizeof what, "  jobs per fsync, %d clients, single / batch", opt_clients);
    row(what, v, "(report)", -1, "-");
    if (opt_nrecover > 0) {
        long big = opt_recover_jobs[0];
        for (int i = 1; i < opt_nrecover; i++)
            if (opt_recover_jobs[i] > big)
                big = opt_recover_jobs[i];
        snprintf(key, sizeof key, "store.recover_%ld.cold.ready_s", big);
        x = result_get(key);
        snprintf(key, sizeof key, "store.recover_%ld.warm.ready_s", big);
        snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f s", result_get(key), x);
        snprintf(what, sizeof what, "recovery, %ld jobs, warm / cold", big);
        row(what, v, "(report)", -1, "-");
    }
    x = result_get("store.disk.bytes_per_queued_job");
    fmt(v, sizeof v, "%.0f B", x);
    row("store bytes on disk per queued job", v, "(report)", -1, "-");
    x = result_get("shards.ratio_total");
    fmt(v, sizeof v, "%.2fx", x);
    row("throughput --shards 64 / --shards 1", v, "(report)", -1, "-");
    x = result_get("core.query_idle_p99_ms");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f ms", x,
             result_get("core.query_busy_p99_ms"));
    snprintf(what, sizeof what, "query p99, idle / %ld logging jobs", opt_core_busy_jobs);
    row(what, v, "(report)", -1, "-");
    x = result_get("core.submit_idle_p99_ms");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f ms", x,
             result_get("core.submit_busy_p99_ms"));
    snprintf(what, sizeof what, "submit p99, idle / %ld logging jobs", opt_core_busy_jobs);
    row(what, v, "(report)", -1, "-");
    x = result_get("core.biglog_seconds");
    if (isnan(x) && !isnan(result_get("core.biglog_log_serial")))
        snprintf(v, sizeof v, "unfinished (%.0f)", result_get("core.biglog_log_serial"));
    else
        fmt(v, sizeof v, "%.2f s", x);
    snprintf(what, sizeof what, "one job logging %ld entries, end to end", opt_core_log_entries);
    row(what, v, "(report)", -1, "-");
    x = result_get("core.shards1_jobs_per_s");
    snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.0f / %.0f /s", x,
             result_get("core.shards64_jobs_per_s"));
    row("dependent jobs, hot shard, --shards 1 / 64", v, "(report)", -1, "-");
    {
        long nw = opt_cycle_workers[opt_cycle_nworkers - 1];
        snprintf(key, sizeof key, "cycle.jobq_always.w%ld.per_s", nw);
        x = result_get(key);
        snprintf(key, sizeof key, "cycle.jobq_none.w%ld.per_s", nw);
        snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.0f / %.0f /s", x, result_get(key));
        snprintf(key, sizeof key, "cycle.beanstalkd_fsync.w%ld.per_s", nw);
        double b1 = result_get(key);
        snprintf(key, sizeof key, "cycle.beanstalkd_mem.w%ld.per_s", nw);
        snprintf(b, sizeof b, isnan(b1) ? "n/a" : "%.0f / %.0f /s", b1, result_get(key));
        snprintf(what, sizeof what, "full cycle, %ld workers, always / none", nw);
        row(what, v, "beat the peers", -1, b);
        x = result_get("cycle.loss.retry_p50_ms");
        snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.0f ms", x);
        snprintf(what, sizeof what, "silent worker -> opcode reassigned (lease %g s)",
                 opt_cycle_lease);
        row(what, v, "(report)", -1, "-");
        x = result_get("cycle.cancel_always.worker_p50_ms");
        snprintf(v, sizeof v, isnan(x) ? "n/a" : "%.2f / %.2f ms", x,
                 result_get("cycle.cancel_always.worker_p99_ms"));
        row("cancel_job -> worker's cancel p50 / p99", v, "(report)", -1, "-");
    }
    printf("\n  other processes on the machine used up to %.2f cores during a measurement"
           " (%d line%s at 0.25 cores or more: treat those figures as noisy)\n",
           noise_max, noisy_lines, noisy_lines == 1 ? "" : "s");
}

/* ------------------------------------------------------------------ */
/* options                                                              */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: jobq-bench [OPTIONS] [WORKLOAD...]\n"
"Benchmarks jobqd (and beanstalkd, Redis and gearmand, for comparison) and\n"
"prints a report.\n"
"Each workload starts its own daemons in fresh temporary directories.\n"
"\n"
"Workloads (default: all):\n"
"  idle     N idle DEALER connections: daemon threads and RSS before/after,\n"
"           query_jobs list latency with and without them\n"
"  busy     K running log-producing jobs: list and submit latency, log rate\n"
"  shards   readers + writers on --shards 1 vs --shards 64 (--handlers 4)\n"
"  submit   submit_job / submit_many_jobs throughput, 1 and C clients,\n"
"           next to the ZeroMQ round-trip floor and beanstalkd puts\n"
"  memory   RSS per queued job (M jobs), next to beanstalkd\n"
"  events   events/s published to 1 and to S subscribers (and what they\n"
"           missed), change -> subscriber latency, change -> answer of\n"
"           wait_for_job_change with W parked waiters; daemon threads\n"
"  watch    V watchers of the same busy jobs: polling query_jobs against\n"
"           the event stream (daemon CPU, requests/s, what they saw)\n"
"  store    the durable store: acknowledged submits/s under --sync always,\n"
"           batch and none (1 and C clients, one at a time and in batches)\n"
"           with commits/s, fsyncs/s and jobs per fsync; recovery time and\n"
"           RSS for stores of --recover-jobs live jobs; bytes on disk per job\n"
"  core     query and submit latency idle and with --core-busy-jobs jobs\n"
"           logging (--sync always; store records/s and backlog); one job\n"
"           with --core-log-entries log entries end to end, its oplog query,\n"
"           recovery; jobs depending on a job whose shard is hot (another\n"
"           job logging flat out there), --shards 1 against --shards 64\n"
"  cycle    remote workers: submit -> a worker (raw worker protocol) runs a\n"
"           no-op -> a watcher sees success; jobs/s and latency with 1, 4, 16\n"
"           worker connections, --sync always and none, beside the same\n"
"           cycle on beanstalkd, Redis streams and gearmand (durable and\n"
"           not); worker-loss detection; cancel -> the worker's cancel\n"
"  python   the Python client (tests/bench/py_bench.py) against the C client\n"
"           (libjobq) and the raw bench client: submit_job and submit_many_jobs\n"
"           from one client; the full cycle (--sync as the cycle workload) with\n"
"           C workers, Python worker processes, and all in Python\n"
"  curve    CURVE against plain TCP (--insecure), in one run on\n"
"           tcp://127.0.0.1: ping, submit_job and submit_many_jobs (one\n"
"           client, as submit) and the full cycle with 1 and 4 workers (as\n"
"           cycle); jobs/s, latency, daemon CPU per job, the ratio\n"
"  http     the HTTP thread's cost: query_jobs (a 50-job page) and submit_job\n"
"           latency, submits/s, daemon CPU per request and threads, without\n"
"           --http, with it and nobody connected, and with a dashboard open\n"
"           (SSE streams, the page's polls) and /metrics scraped every second,\n"
"           then without --http again (the drift within the run)\n"
"  cluster  the Raft cluster (CURVE node traffic on 127.0.0.1, clients on\n"
"           ipc://): submit one at a time, pipelined and in batches on a\n"
"           plain jobqd and on 1, 3 and 5 nodes; the full cycle on 1 and 3;\n"
"           failover (kill -9 of the leader -> first acknowledged submit);\n"
"           a joining node's catch-up rate; list and submit latency with a\n"
"           follower stopped (SIGSTOP)\n"
"  peers    issue 14's side-by-side table: jobqd next to Redis, beanstalkd and\n"
"           gearmand, each fresh per line: strict ping on ipc and TCP (with the\n"
"           bare libzmq echo floor, a separate process, on each), strict submit\n"
"           one at a time without and with an fsync per change, batched enqueue\n"
"           from --clients connections (--batch jobs per request; the peers\n"
"           pipeline --batch requests), events to --ev-subs subscribers (jobq's\n"
"           stream driven by --ev-jobs logging jobs; Redis pub/sub flat out),\n"
"           heap per queued job, RSS per idle connection; then the table with\n"
"           jobq / best peer, and each server's wake-ups (context switches of\n"
"           all its threads) and CPU per request from /proc\n"
"  all      every workload above, then a summary against the targets\n"
"\n"
"Options:\n"
"      --jobqd PATH         the daemon to test [%s]\n"
"      --beanstalkd PATH    beanstalkd for the comparison [found on PATH]\n"
"      --no-beanstalkd      skip the beanstalkd comparison\n"
"      --redis PATH         redis-server for the cycle and peers comparisons\n"
"                           [found on PATH]\n"
"      --no-redis           skip it\n"
"      --gearmand PATH      gearmand for the cycle and peers comparisons\n"
"                           [found on PATH]\n"
"      --no-gearmand        skip it\n"
"      --transport T        tcp (127.0.0.1, free port) or ipc (in the data dir) [tcp]\n"
"      --sync MODE          jobqd --sync for every workload but store (which\n"
"                           runs all three): always, batch or none; a change is\n"
"                           answered once committed, with always after an fsync\n"
"                           [the daemon's default, always]\n"
"      --idle-clients N     idle connections [10000]\n"
"      --list-jobs N        jobs in the queue for the idle list latency [1000]\n"
"      --samples N          latency samples per idle measurement [300]\n"
"      --busy K[,K...]      busy job counts; 0 is the same paced pattern with no\n"
"                           busy job, a baseline [0,15,1000]\n"
"      --busy-seconds S     measuring window per busy count [10]\n"
"      --shard-jobs N       queued jobs the shard readers/writers pick from [20000]\n"
"      --shard-seconds S    measuring window per shard count [5]\n"
"      --readers N          shard reader clients [4]\n"
"      --writers N          shard writer clients [2]\n"
"      --pipeline N         requests in flight per shard client [4]\n"
"      --ids-per-query N    job ids per reader query [100]\n"
"      --log-jobs N         running log jobs (test.delay 0.01) during the shard\n"
"                           runs; a second pair runs with none unless N is 0 [500]\n"
"      --submit-seconds S   measuring window per submit line [3]\n"
"      --clients C          clients (threads, one socket each) for the\n"
"                           multi-client submit lines [8]\n"
"      --batch N            jobs per submit_many_jobs / pipelined put [1000]\n"
"      --mem-jobs M         jobs queued for the memory figure [1000000]\n"
"      --ev-seconds S       measuring window per events/s line [5]\n"
"      --ev-subs S          the many-subscribers count [100]\n"
"      --ev-jobs N          jobs logging every 10 ms that drive the event stream\n"
"                           (nominal N x 100 events/s) [200]\n"
"      --ev-samples N       changes timed per latency line [1000]\n"
"      --waiters W          parked wait_for_job_change requests [10000]\n"
"      --waiter-conns N     DEALER connections carrying them [100]\n"
"      --watchers V         watchers in the watch workload [100]\n"
"      --watch-jobs N       busy jobs they follow [10]\n"
"      --watch-seconds S    measuring window per watch mode [5]\n"
"      --poll-interval-ms T a poller's query interval [10]\n"
"      --store-seconds S    measuring window per durable-submit line [3]\n"
"      --recover-jobs N[,N] live queued jobs in the stores timed for recovery,\n"
"                           filled one after the other; 0: skip [100000,1000000]\n"
"      --store-log-jobs N   finished jobs (and as many with 10 log entries\n"
"                           each) for bytes on disk; 0: skip [10000]\n"
"      --core-seconds S     measuring window per core latency line [5]\n"
"      --core-busy-jobs N   jobs logging every 10 ms in the core latency line\n"
"                           under load [1000]\n"
"      --core-log-entries N log entries of the core long-log job (test.delay\n"
"                           repeat; at most 100000) [100000]\n"
"      --core-biglog-timeout S  longest wait for the long-log job to finish, and\n"
"                           for the dependent jobs of a core shards line [120]\n"
"      --core-jobs N        dependent jobs per core shards line [50000]\n"
"      --cycle-seconds S    measuring window per cycle line [3]\n"
"      --cycle-workers N[,N] worker connections per cycle line [1,4,16]\n"
"      --cycle-window N     cycle jobs in flight (submitted, not yet seen done) [64]\n"
"      --cycle-cancels N    cancels timed per --sync mode; 0: skip [200]\n"
"      --cycle-losses N     worker losses timed (each waits a lease) with retry and\n"
"                           without; 0: skip [3]\n"
"      --cycle-lease S      --worker-lease of the loss daemon (heartbeat: S/4) [2]\n"
"      --python PATH        the interpreter of the python workload [/usr/bin/python3]\n"
"      --py-workers N[,N]   worker processes per python cycle line (at most 16)\n"
"                           [1,4]; the python workload also uses\n"
"                           --submit-seconds, --batch, --cycle-seconds and\n"
"                           --cycle-window\n"
"      --http-seconds S     each window of the http workload's phases (the\n"
"                           background alone, lists, submits) [5]\n"
"      --http-streams N     the dashboard's overview streams (GET /events) [3]\n"
"      --http-rate R        background changes/s (submissions) in every phase [2000]\n"
"      --http-jobs N        jobs queued before the http workload measures [10000]\n"
"      --cluster-failovers N  kill -9 rounds of the cluster's failover line [5]\n"
"      --catchup-jobs N     jobs in the cluster a joining node catches up with [50000]\n"
"      --peers-seconds S    measuring window per peers line [2]\n"
"      --peers-mem-jobs N   jobs queued per server for the peers heap line [200000]\n"
"      --peers-idle N       idle connections per server for the peers idle line [2000]\n"
"      --json FILE          also write every figure as JSON; with - the JSON\n"
"                           goes to stdout and the report to stderr\n"
"      --keep               keep the temporary directory (daemon logs)\n"
"      --quiet-wait S       before each measured line, wait up to S seconds for\n"
"                           other processes to use under 0.15 cores (0: don't) [30]\n"
"  -v, --verbose            progress notes on stderr\n"
"  -h, --help               show this help and exit\n"
"\n"
"Internal (spawned by the idle workload): --idle-helper ENDPOINT N holds N\n"
"idle DEALER sockets until its stdin closes, so no process needs more than\n"
"~5,000 descriptors; --router-helper ENDPOINT serves a bare libzmq ROUTER,\n"
"the floor for what an idle connection costs in libzmq itself; --echo-helper\n"
"ENDPOINT ENDPOINT (spawned by the peers workload) answers every request on\n"
"a bare ROUTER bound on both, the round-trip floor.\n",
            *JOBQ_BENCH_JOBQD ? JOBQ_BENCH_JOBQD : "none built in; required");
}

static const char *find_on_path(const char *name)
{
    static char buf[4096];
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        const char *e = strchr(path, ':');
        size_t n = e ? (size_t)(e - path) : strlen(path);
        snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
        if (access(buf, X_OK) == 0)
            return buf;
        path += n + (e ? 1 : 0);
    }
    /* Daemons live in sbin, which a user's PATH may lack. */
    static const char *const sbins[] = {"/usr/sbin", "/usr/local/sbin", "/sbin"};
    for (size_t i = 0; i < sizeof sbins / sizeof *sbins; i++) {
        snprintf(buf, sizeof buf, "%s/%s", sbins[i], name);
        if (access(buf, X_OK) == 0)
            return buf;
    }
    return NULL;
}

static char *read_first(const char *path, const char *key)
{
    static char out[256];
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[512];
    char *res = NULL;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) {
            char *p = strchr(line, ':');
            if (!p)
                continue;
            p++;
            while (*p == ' ' || *p == '\t')
                p++;
            p[strcspn(p, "\n")] = '\0';
            snprintf(out, sizeof out, "%s", p);
            res = out;
            break;
        }
    fclose(f);
    return res;
}

static void machine(char *json, size_t len)
{
    struct utsname u;
    uname(&u);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const char *model = read_first("/proc/cpuinfo", "model name");
    char model_s[256];
    snprintf(model_s, sizeof model_s, "%s", model ? model : "unknown");
    const char *mem = read_first("/proc/meminfo", "MemTotal");
    long mem_kb = mem ? strtol(mem, NULL, 10) : 0;
    printf("machine: %ld CPUs (%s), %.1f GiB RAM, %s %s\n", ncpu, model_s,
           (double)mem_kb / 1048576.0, u.sysname, u.release);
    printf("jobqd: %s (transport %s, --sync %s)\n", opt_jobqd, opt_transport,
           opt_sync ? opt_sync : "always (default; the store workload runs all three)");
    printf("beanstalkd: %s\n", opt_beanstalkd ? opt_beanstalkd : "not available");
    printf("redis-server: %s; gearmand: %s (the cycle and peers workloads)\n",
           opt_redis && !opt_no_redis ? opt_redis : "not available",
           opt_gearmand && !opt_no_gearmand ? opt_gearmand : "not available");
    snprintf(json, len,
             "{\"cpus\": %ld, \"cpu_model\": \"%s\", \"mem_kb\": %ld, \"kernel\": \"%s\", "
             "\"transport\": \"%s\", \"sync\": \"%s\"}",
             ncpu, model_s, mem_kb, u.release, opt_transport, opt_sync ? opt_sync : "always");
}

/* "N[,N...]" of up to 8 positive numbers. */
static int parse_list(const char *s, long *out, int *n)
{
    *n = 0;
    char *end;
    while (*s && *n < 8) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1)
            return -1;
        out[(*n)++] = v;
        if (*end && *end != ',')
            return -1;
        s = *end == ',' ? end + 1 : end;
    }
    return *n ? 0 : -1;
}

static int parse_busy(const char *s)
{
    opt_nbusy = 0;
    char *end;
    while (*s && opt_nbusy < 8) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 0)
            return -1;
        opt_busy[opt_nbusy++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return opt_nbusy ? 0 : -1;
}

static int parse_recover(const char *s)
{
    opt_nrecover = 0;
    char *end;
    while (*s && opt_nrecover < 4) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 0)
            return -1;
        if (v > 0)
            opt_recover_jobs[opt_nrecover++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--idle-helper") == 0)
        return idle_helper_main(argv[2], strtol(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "--router-helper") == 0)
        return router_helper_main(argv[2]);
    if (argc == 4 && strcmp(argv[1], "--echo-helper") == 0)
        return echo_helper_main(2, argv + 2);
    enum {
        O_JOBQD = 256, O_BEANS, O_NOBEANS, O_TRANSPORT, O_IDLE, O_LISTJOBS, O_SAMPLES, O_BUSY,
        O_BUSYSEC, O_SHJOBS, O_SHSEC, O_READERS, O_WRITERS, O_PIPE, O_IDS, O_LOGJOBS,
        O_SUBSEC, O_CLIENTS, O_BATCH, O_MEMJOBS, O_JSON, O_KEEP, O_QUIET, O_EVSEC, O_EVSUBS,
        O_EVJOBS, O_EVSAMPLES, O_WAITERS, O_WCONNS, O_WATCHERS, O_WJOBS, O_WSEC, O_POLLMS,
        O_STSEC, O_RECJOBS, O_STLOGS, O_SYNC, O_CORESEC, O_COREJOBS, O_COREBIGTO, O_CORELOGS,
        O_COREBUSY, O_REDIS, O_NOREDIS, O_GEAR, O_NOGEAR, O_CYSEC, O_CYWORKERS, O_CYWINDOW,
        O_CYCANCELS, O_CYLOSSES, O_CYLEASE, O_PYTHON, O_PYWORKERS, O_HTSEC, O_HTSTREAMS,
        O_HTRATE, O_HTJOBS, O_CLFAIL, O_CLCATCH, O_PRSEC, O_PRMEM, O_PRIDLE
    };
    static const struct option longopts[] = {
        {"jobqd", required_argument, 0, O_JOBQD},
        {"beanstalkd", required_argument, 0, O_BEANS},
        {"no-beanstalkd", no_argument, 0, O_NOBEANS},
        {"transport", required_argument, 0, O_TRANSPORT},
        {"idle-clients", required_argument, 0, O_IDLE},
        {"list-jobs", required_argument, 0, O_LISTJOBS},
        {"samples", required_argument, 0, O_SAMPLES},
        {"busy", required_argument, 0, O_BUSY},
        {"busy-seconds", required_argument, 0, O_BUSYSEC},
        {"shard-jobs", required_argument, 0, O_SHJOBS},
        {"shard-seconds", required_argument, 0, O_SHSEC},
        {"readers", required_argument, 0, O_READERS},
        {"writers", required_argument, 0, O_WRITERS},
        {"pipeline", required_argument, 0, O_PIPE},
        {"ids-per-query", required_argument, 0, O_IDS},
        {"log-jobs", required_argument, 0, O_LOGJOBS},
        {"submit-seconds", required_argument, 0, O_SUBSEC},
        {"clients", required_argument, 0, O_CLIENTS},
        {"batch", required_argument, 0, O_BATCH},
        {"mem-jobs", required_argument, 0, O_MEMJOBS},
        {"json", required_argument, 0, O_JSON},
        {"keep", no_argument, 0, O_KEEP},
        {"quiet-wait", required_argument, 0, O_QUIET},
        {"ev-seconds", required_argument, 0, O_EVSEC},
        {"ev-subs", required_argument, 0, O_EVSUBS},
        {"ev-jobs", required_argument, 0, O_EVJOBS},
        {"ev-samples", required_argument, 0, O_EVSAMPLES},
        {"waiters", required_argument, 0, O_WAITERS},
        {"waiter-conns", required_argument, 0, O_WCONNS},
        {"watchers", required_argument, 0, O_WATCHERS},
        {"watch-jobs", required_argument, 0, O_WJOBS},
        {"watch-seconds", required_argument, 0, O_WSEC},
        {"poll-interval-ms", required_argument, 0, O_POLLMS},
        {"store-seconds", required_argument, 0, O_STSEC},
        {"sync", required_argument, 0, O_SYNC},
        {"recover-jobs", required_argument, 0, O_RECJOBS},
        {"store-log-jobs", required_argument, 0, O_STLOGS},
        {"core-seconds", required_argument, 0, O_CORESEC},
        {"core-jobs", required_argument, 0, O_COREJOBS},
        {"core-biglog-timeout", required_argument, 0, O_COREBIGTO},
        {"core-log-entries", required_argument, 0, O_CORELOGS},
        {"core-busy-jobs", required_argument, 0, O_COREBUSY},
        {"redis", required_argument, 0, O_REDIS},
        {"no-redis", no_argument, 0, O_NOREDIS},
        {"gearmand", required_argument, 0, O_GEAR},
        {"no-gearmand", no_argument, 0, O_NOGEAR},
        {"cycle-seconds", required_argument, 0, O_CYSEC},
        {"cycle-workers", required_argument, 0, O_CYWORKERS},
        {"cycle-window", required_argument, 0, O_CYWINDOW},
        {"cycle-cancels", required_argument, 0, O_CYCANCELS},
        {"cycle-losses", required_argument, 0, O_CYLOSSES},
        {"cycle-lease", required_argument, 0, O_CYLEASE},
        {"python", required_argument, 0, O_PYTHON},
        {"py-workers", required_argument, 0, O_PYWORKERS},
        {"http-seconds", required_argument, 0, O_HTSEC},
        {"http-streams", required_argument, 0, O_HTSTREAMS},
        {"http-rate", required_argument, 0, O_HTRATE},
        {"http-jobs", required_argument, 0, O_HTJOBS},
        {"cluster-failovers", required_argument, 0, O_CLFAIL},
        {"catchup-jobs", required_argument, 0, O_CLCATCH},
        {"peers-seconds", required_argument, 0, O_PRSEC},
        {"peers-mem-jobs", required_argument, 0, O_PRMEM},
        {"peers-idle", required_argument, 0, O_PRIDLE},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *beans_path = NULL, *redis_path = NULL, *gear_path = NULL;
    int o;
    bool bad = false;
    while ((o = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (o) {
        case O_JOBQD: opt_jobqd = optarg; break;
        case O_BEANS: beans_path = optarg; break;
        case O_NOBEANS: opt_no_beanstalkd = true; break;
        case O_TRANSPORT: opt_transport = optarg; break;
        case O_IDLE: opt_idle_clients = atol(optarg); break;
        case O_LISTJOBS: opt_list_jobs = atol(optarg); break;
        case O_SAMPLES: opt_samples = atol(optarg); break;
        case O_BUSY: bad |= parse_busy(optarg) < 0; break;
        case O_BUSYSEC: opt_busy_seconds = atof(optarg); break;
        case O_SHJOBS: opt_shard_jobs = atol(optarg); break;
        case O_SHSEC: opt_shard_seconds = atof(optarg); break;
        case O_READERS: opt_readers = atoi(optarg); break;
        case O_WRITERS: opt_writers = atoi(optarg); break;
        case O_PIPE: opt_pipeline = atoi(optarg); break;
        case O_IDS: opt_ids_per_query = atoi(optarg); break;
        case O_LOGJOBS: opt_log_jobs = atol(optarg); break;
        case O_SUBSEC: opt_submit_seconds = atof(optarg); break;
        case O_CLIENTS: opt_clients = atoi(optarg); break;
        case O_BATCH: opt_batch = atoi(optarg); break;
        case O_MEMJOBS: opt_mem_jobs = atol(optarg); break;
        case O_JSON: opt_json = optarg; break;
        case O_KEEP: opt_keep = true; break;
        case O_QUIET: opt_quiet_wait = atof(optarg); break;
        case O_EVSEC: opt_ev_seconds = atof(optarg); break;
        case O_EVSUBS: opt_ev_subs = atoi(optarg); break;
        case O_EVJOBS: opt_ev_jobs = atoi(optarg); break;
        case O_EVSAMPLES: opt_ev_samples = atol(optarg); break;
        case O_WAITERS: opt_waiters = atol(optarg); break;
        case O_WCONNS: opt_waiter_conns = atoi(optarg); break;
        case O_WATCHERS: opt_watchers = atoi(optarg); break;
        case O_WJOBS: opt_watch_jobs = atoi(optarg); break;
        case O_WSEC: opt_watch_seconds = atof(optarg); break;
        case O_POLLMS: opt_poll_interval = atof(optarg) / 1e3; break;
        case O_STSEC: opt_store_seconds = atof(optarg); break;
        case O_SYNC: opt_sync = optarg; break;
        case O_RECJOBS: bad |= parse_recover(optarg) < 0; break;
        case O_STLOGS: opt_store_log_jobs = atol(optarg); break;
        case O_CORESEC: opt_core_seconds = atof(optarg); break;
        case O_COREJOBS: opt_core_jobs = atol(optarg); break;
        case O_COREBIGTO: opt_core_biglog_timeout = atof(optarg); break;
        case O_CORELOGS: opt_core_log_entries = atol(optarg); break;
        case O_COREBUSY: opt_core_busy_jobs = atol(optarg); break;
        case O_REDIS: redis_path = optarg; break;
        case O_NOREDIS: opt_no_redis = true; break;
        case O_GEAR: gear_path = optarg; break;
        case O_NOGEAR: opt_no_gearmand = true; break;
        case O_CYSEC: opt_cycle_seconds = atof(optarg); break;
        case O_CYWORKERS: bad |= parse_list(optarg, opt_cycle_workers, &opt_cycle_nworkers) < 0;
            break;
        case O_CYWINDOW: opt_cycle_window = atol(optarg); break;
        case O_CYCANCELS: opt_cycle_cancels = atol(optarg); break;
        case O_CYLOSSES: opt_cycle_losses = atol(optarg); break;
        case O_CYLEASE: opt_cycle_lease = atof(optarg); break;
        case O_PYTHON: opt_python = optarg; break;
        case O_PYWORKERS: bad |= parse_list(optarg, opt_py_workers, &opt_py_nworkers) < 0; break;
        case O_HTSEC: opt_http_seconds = atof(optarg); break;
        case O_HTSTREAMS: opt_http_streams = atoi(optarg); break;
        case O_HTRATE: opt_http_rate = atof(optarg); break;
        case O_HTJOBS: opt_http_jobs = atol(optarg); break;
        case O_CLFAIL: opt_cluster_failovers = atol(optarg); break;
        case O_CLCATCH: opt_catchup_jobs = atol(optarg); break;
        case O_PRSEC: opt_peers_seconds = atof(optarg); break;
        case O_PRMEM: opt_peers_mem_jobs = atol(optarg); break;
        case O_PRIDLE: opt_peers_idle = atol(optarg); break;
        case 'v': opt_verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: bad = true;
        }
    }
    if (strcmp(opt_transport, "tcp") != 0 && strcmp(opt_transport, "ipc") != 0)
        bad = true;
    if (opt_sync && strcmp(opt_sync, "always") != 0 && strcmp(opt_sync, "batch") != 0 &&
        strcmp(opt_sync, "none") != 0)
        bad = true;
    if (opt_idle_clients < 1 || opt_list_jobs < 1 || opt_samples < 1 || opt_shard_jobs < 1 ||
        opt_readers < 0 || opt_writers < 0 || opt_readers + opt_writers < 1 ||
        opt_pipeline < 1 || opt_ids_per_query < 1 || opt_ids_per_query > 100000 ||
        opt_log_jobs < 0 || opt_clients < 1 || opt_batch < 1 || opt_batch > 100000 ||
        opt_mem_jobs < 1 || opt_busy_seconds <= 0 || opt_shard_seconds <= 0 ||
        opt_submit_seconds <= 0 || opt_ev_seconds <= 0 || opt_ev_subs < 1 || opt_ev_jobs < 1 ||
        opt_ev_samples < 1 || opt_waiters < 1 || opt_waiter_conns < 1 || opt_watchers < 1 ||
        opt_watch_jobs < 1 || opt_watch_seconds <= 0 || opt_poll_interval < 0 ||
        opt_store_seconds <= 0 || opt_store_log_jobs < 0 || opt_core_seconds <= 0 ||
        opt_core_jobs < 1 || opt_core_biglog_timeout <= 0 || opt_core_log_entries < 1 ||
        opt_core_log_entries > LONG_REPEAT || opt_core_busy_jobs < 1 ||
        opt_cycle_seconds <= 0 || opt_cycle_window < 1 || opt_cycle_cancels < 0 ||
        opt_cycle_losses < 0 || opt_cycle_lease <= 0 || opt_http_seconds <= 0 ||
        opt_http_streams < 1 || opt_http_streams > 1000 || opt_http_rate <= 0 ||
        opt_http_rate > 1e6 || opt_http_jobs < 50 || opt_cluster_failovers < 1 ||
        opt_cluster_failovers > 32 || opt_catchup_jobs < 1 || opt_peers_seconds <= 0 ||
        opt_peers_mem_jobs < 1 || opt_peers_idle < 1)
        bad = true;
    for (int i = 0; i < opt_cycle_nworkers; i++)
        if (opt_cycle_workers[i] < 1 || opt_cycle_workers[i] > 1000)
            bad = true;
    for (int i = 0; i < opt_py_nworkers; i++)
        if (opt_py_workers[i] > 16)
            bad = true;
    enum { NWL = 15 };
    bool want[NWL] = {false};
    static const char *const names[NWL] = {"idle",   "busy",   "shards", "submit",
                                           "memory", "events", "watch",  "store",
                                           "core",   "cycle",  "python", "curve",
                                           "http",   "cluster", "peers"};
    bool any = false;
    for (int i = optind; i < argc; i++) {
        bool known = false;
        for (int k = 0; k < NWL; k++)
            if (strcmp(argv[i], names[k]) == 0 || strcmp(argv[i], "all") == 0) {
                want[k] = true;
                known = true;
            }
        if (!known) {
            fprintf(stderr, "jobq-bench: unknown workload '%s'\n", argv[i]);
            bad = true;
        }
        any = true;
    }
    if (!any)
        for (int k = 0; k < NWL; k++)
            want[k] = true;
    if (bad) {
        usage(stderr);
        return 2;
    }
    if (!*opt_jobqd || access(opt_jobqd, X_OK) != 0) {
        fprintf(stderr, "jobq-bench: jobqd not found at '%s' (use --jobqd PATH)\n", opt_jobqd);
        return 2;
    }
    if (!opt_no_beanstalkd) {
        opt_beanstalkd = beans_path ? beans_path : find_on_path("beanstalkd");
        if (opt_beanstalkd && access(opt_beanstalkd, X_OK) != 0)
            opt_beanstalkd = NULL;
        if (opt_beanstalkd)
            opt_beanstalkd = strdup(opt_beanstalkd);
    }
    {
        const char *r = redis_path ? redis_path : find_on_path("redis-server");
        opt_redis = r && access(r, X_OK) == 0 ? strdup(r) : NULL;
        const char *g = gear_path ? gear_path : find_on_path("gearmand");
        opt_gearmand = g && access(g, X_OK) == 0 ? strdup(g) : NULL;
    }
    /* The beanstalkd body: the bytes jobqd receives for one job's ops. */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_delay_job(&pk, 0, 0);
        bs_body_len = sb.size < sizeof bs_body ? sb.size : sizeof bs_body;
        memcpy(bs_body, sb.data, bs_body_len);
        msgpack_sbuffer_destroy(&sb);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0); /* the report appears as it is measured */
    const char *tmp = getenv("TMPDIR");
    snprintf(bench_tmp_root, sizeof bench_tmp_root, "%s/jobq-bench-XXXXXX",
             tmp && *tmp && strlen(tmp) < 100 ? tmp : "/tmp");
    if (!mkdtemp(bench_tmp_root)) {
        perror("jobq-bench: mkdtemp");
        return 1;
    }
    /* --json -: the JSON alone on stdout, the report on stderr. */
    FILE *json_out = NULL;
    if (opt_json && strcmp(opt_json, "-") == 0) {
        int fd = dup(1);
        json_out = fd >= 0 ? fdopen(fd, "w") : NULL;
        fflush(stdout);
        dup2(2, 1);
    }
    char mjson[1024];
    printf("jobq-bench\n");
    machine(mjson, sizeof mjson);
    double t0 = bench_now();
    int rc = 0;
    int (*fns[NWL])(void) = {workload_idle,   workload_busy,   workload_shards,
                             workload_submit, workload_memory, workload_events,
                             workload_watch,  workload_store,  workload_core,
                             workload_cycle,  workload_python, workload_curve,
                             workload_http,   workload_cluster, workload_peers};
    bool every = true;
    for (int k = 0; k < NWL; k++)
        every &= want[k];
    for (int k = 0; k < NWL; k++)
        if (want[k] && fns[k]() < 0) {
            fprintf(stderr, "jobq-bench: workload %s failed\n", names[k]);
            rc = 1;
        }
    if (every)
        summary();
    printf("\ntotal time %.0f s\n", bench_now() - t0);
    if (opt_json)
        results_write_json(opt_json, mjson, json_out);
    if (opt_keep)
        printf("temporary files kept in %s\n", bench_tmp_root);
    else
        bench_rmtree(bench_tmp_root);
    return rc;
}
