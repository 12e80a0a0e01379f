/* main.c: jobq-bench — workloads, options and the report.
 *
 * Every workload starts its own jobqd (and beanstalkd, for the figures the
 * issue compares against) in a fresh temporary data directory, drives it
 * with raw ZeroMQ clients and prints what it measured. See --help and
 * docs/benchmarks.md. */
#include "beans.h"
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#ifndef JOBQ_BENCH_JOBQD
#define JOBQ_BENCH_JOBQD ""
#endif

const char *opt_jobqd = JOBQ_BENCH_JOBQD;
const char *opt_beanstalkd = NULL;
const char *opt_transport = "tcp";
bool opt_verbose = false;

static long opt_idle_clients = 10000;
static long opt_list_jobs = 1000;
static long opt_samples = 300;
static long opt_busy[8] = {0, 15, 1000};
static int opt_nbusy = 3;
static double opt_busy_seconds = 10;
static double opt_busy_period = 0.02;
static long opt_shard_jobs = 20000;
static double opt_shard_seconds = 5;
static int opt_readers = 4, opt_writers = 2, opt_pipeline = 4, opt_ids_per_query = 100;
static long opt_log_jobs = 500;
static double opt_submit_seconds = 3;
static int opt_clients = 8;
static int opt_batch = 1000;
static long opt_mem_jobs = 1000000;
static const char *opt_json = NULL;
static double opt_quiet_wait = 30;
bool opt_keep = false;
static bool opt_no_beanstalkd = false;

#define LONG_REPEAT 10000000L /* test.delay's largest repeat */
#define BLOCKER_SECONDS 3600.0

static const char *const LIST_FIELDS[] = {"id", "status", "priority", "summary"};

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static void *new_ctx(int io_threads, int max_sockets)
{
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, io_threads);
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, max_sockets);
    return ctx;
}

static void section(const char *title)
{
    printf("\n== %s ==\n", title);
    fflush(stdout);
}

/* Other processes' CPU during the measurement, for the report. */
static double noise_max;
static int noisy_lines;

static double noise_end(const others_t *o, const char *key)
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
static void quiet_gate(void)
{
    if (opt_quiet_wait > 0 && !wait_quiet(opt_quiet_wait))
        note("machine not quiet after %.0f s; measuring anyway", opt_quiet_wait);
}

static void fail(const char *what)
{
    fprintf(stderr, "jobq-bench: %s\n", what);
}

/* list latency: n samples of query_jobs (all jobs, LIST_FIELDS). */
static int measure_list(jc_t *c, long n, long expect_rows, samples_t *lat)
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
static int start_blocked_daemon(daemon_t *d, jc_t **cp, void *ctx, const char *max_jobs)
{
    const char *extra[] = {"--max-running", "1", "--max-jobs", max_jobs, NULL};
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

static int submit_batches(jc_t *c, long n, double duration, long repeat)
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

/* ------------------------------------------------------------------ */
/* idle-connection helpers: child processes holding DEALER sockets      */

#define CLIENTS_PER_HELPER 2500

typedef struct {
    pid_t pid;
    int to_child; /* closing it tells the helper to exit */
} helper_t;

static int idle_helper_main(const char *endpoint, long n)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    void *ctx = new_ctx(1, (int)n + 16);
    void **socks = calloc((size_t)n, sizeof *socks);
    long made = 0;
    for (long i = 0; i < n; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        if (!socks[i]) {
            fprintf(stderr, "idle helper: socket %ld: %s\n", i, zmq_strerror(errno));
            break;
        }
        int linger = 0;
        zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(socks[i], endpoint) < 0) {
            fprintf(stderr, "idle helper: connect %ld: %s\n", i, zmq_strerror(errno));
            zmq_close(socks[i]);
            break;
        }
        made++;
    }
    printf("ready %ld\n", made);
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0) /* until the parent closes the pipe */
        ;
    for (long i = 0; i < made; i++)
        zmq_close(socks[i]);
    zmq_ctx_term(ctx);
    free(socks);
    return 0;
}

/* A bare libzmq ROUTER bound on endpoint, served by zmq_poll like jobqd's
 * loop: the floor for what an idle connection costs in libzmq itself. */
static int router_helper_main(const char *endpoint)
{
    void *ctx = new_ctx(1, 1024);
    void *r = zmq_socket(ctx, ZMQ_ROUTER);
    int backlog = 4096;
    zmq_setsockopt(r, ZMQ_BACKLOG, &backlog, sizeof backlog);
    if (zmq_bind(r, endpoint) < 0) {
        fprintf(stderr, "router helper: bind %s: %s\n", endpoint, zmq_strerror(errno));
        return 1;
    }
    printf("ready 1\n");
    fflush(stdout);
    for (;;) {
        zmq_pollitem_t it[2] = {{.socket = r, .events = ZMQ_POLLIN},
                                {.fd = 0, .events = ZMQ_POLLIN}};
        if (zmq_poll(it, 2, -1) < 0 && errno != EINTR)
            break;
        if (it[0].revents) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, r, ZMQ_DONTWAIT);
            zmq_msg_close(&m);
        }
        char buf[16];
        if (it[1].revents && read(0, buf, sizeof buf) <= 0)
            break;
    }
    zmq_close(r);
    zmq_ctx_term(ctx);
    return 0;
}

static long helper_spawn(helper_t *h, const char *endpoint, long n)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        return -1;
    h->pid = fork();
    if (h->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        char ns[32];
        snprintf(ns, sizeof ns, "%ld", n);
        if (n > 0)
            execl("/proc/self/exe", "jobq-bench", "--idle-helper", endpoint, ns, (char *)NULL);
        else
            execl("/proc/self/exe", "jobq-bench", "--router-helper", endpoint, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    h->to_child = in[1];
    long made = -1;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    char line[64] = "";
    if (h->pid > 0 && poll(&p, 1, 60000) > 0) {
        ssize_t r = read(out[0], line, sizeof line - 1);
        if (r > 0) {
            line[r] = '\0';
            sscanf(line, "ready %ld", &made);
        }
    }
    close(out[0]);
    return made;
}

static void helper_stop(helper_t *h)
{
    if (h->to_child >= 0)
        close(h->to_child);
    if (h->pid > 0)
        waitpid(h->pid, NULL, 0);
    h->pid = 0;
    h->to_child = -1;
}

/* Poll the daemon's open descriptors until they reach want. */
static bool wait_fds(pid_t pid, long want, double timeout)
{
    double end = bench_now() + timeout;
    long n;
    while ((n = proc_fd_count(pid)) < want) {
        if (bench_now() > end) {
            fprintf(stderr, "jobq-bench: pid %d has %ld descriptors, waited for %ld\n",
                    (int)pid, n, want);
            return false;
        }
        bench_sleep(0.05); /* poll interval */
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* workload 1: idle clients                                             */

static void beanstalkd_idle(long nclients)
{
    daemon_t b;
    int port;
    if (beanstalkd_start(&b, &port) < 0) {
        printf("  beanstalkd: not measured (could not start it)\n");
        return;
    }
    long rss0 = proc_rss_settled(b.pid, 2), fd0 = proc_fd_count(b.pid);
    int *fds = calloc((size_t)nclients, sizeof *fds);
    long made = 0;
    for (long i = 0; i < nclients; i++) {
        fds[i] = bs_connect(port, true);
        if (fds[i] < 0)
            break;
        made++;
    }
    bool all = wait_fds(b.pid, fd0 + made, 60);
    long rss1 = proc_rss_settled(b.pid, 5);
    double per = (double)(rss1 - rss0) * 1024.0 / (double)made;
    printf("  beanstalkd: %ld idle TCP connections%s; RSS %ld -> %ld kB = %.0f B per connection\n",
           made, all ? "" : " (not all accepted)", rss0, rss1, per);
    result_set("idle.beanstalkd.clients", (double)made);
    result_set("idle.beanstalkd.bytes_per_client", per);
    for (long i = 0; i < made; i++)
        close(fds[i]);
    free(fds);
    daemon_stop(&b);
}

/* Connect n idle DEALERs to endpoint from helper processes and wait until
 * pid has accepted them all; returns the connections pid accepted. */
static long connect_idle(helper_t *helpers, int *nh, const char *endpoint, long n, pid_t pid,
                         long fd0)
{
    long made = 0;
    while (made < n && *nh < 64) {
        long k = n - made > CLIENTS_PER_HELPER ? CLIENTS_PER_HELPER : n - made;
        long got = helper_spawn(&helpers[*nh], endpoint, k);
        (*nh)++;
        if (got < 0) {
            fail("idle helper did not start");
            break;
        }
        made += got;
        if (got < k)
            break;
    }
    wait_fds(pid, fd0 + made, 120);
    return proc_fd_count(pid) - fd0;
}

static void stop_helpers(helper_t *helpers, int *nh)
{
    for (int i = 0; i < *nh; i++)
        helper_stop(&helpers[i]);
    *nh = 0;
}

/* The same idle DEALERs against a bare libzmq ROUTER. */
static void bare_router_idle(long nclients)
{
    helper_t router = {.to_child = -1}, helpers[64];
    int nh = 0;
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", free_tcp_port());
    if (helper_spawn(&router, ep, 0) != 1) {
        printf("  bare libzmq ROUTER: not measured (helper did not start)\n");
        helper_stop(&router);
        return;
    }
    long fd0 = proc_fd_count(router.pid), rss0 = proc_rss_settled(router.pid, 2);
    long got = connect_idle(helpers, &nh, ep, nclients, router.pid, fd0);
    long rss1 = proc_rss_settled(router.pid, 10);
    double per = (double)(rss1 - rss0) * 1024.0 / (double)(got > 0 ? got : 1);
    printf("  bare libzmq ROUTER (no jobq code, same clients): %ld connections, RSS %ld -> %ld"
           " kB = %.0f B per connection\n",
           got, rss0, rss1, per);
    result_set("idle.bare_router.bytes_per_client", per);
    stop_helpers(helpers, &nh);
    helper_stop(&router);
}

static int workload_idle(void)
{
    section("1. Idle clients");
    void *ctx = new_ctx(1, 1024);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    helper_t helpers[64];
    int nh = 0;
    char mj[32];
    snprintf(mj, sizeof mj, "%ld", opt_list_jobs + 10);
    long fd0 = 0, rss0 = 0;
    if (start_blocked_daemon(&d, &c, ctx, mj) < 0)
        goto out;
    if (submit_batches(c, opt_list_jobs - 1, 0, 0) < 0)
        goto out;
    long threads0 = proc_threads(d.pid);
    fd0 = proc_fd_count(d.pid);
    rss0 = proc_rss_settled(d.pid, 3);
    samples_t lat0 = {0}, lat1 = {0};
    measure_list(c, 20, opt_list_jobs, &lat0); /* warm up */
    samples_free(&lat0);
    others_t o;
    others_begin(&o, d.pid);
    if (measure_list(c, opt_samples, opt_list_jobs, &lat0) < 0)
        goto out;
    double noise0 = noise_end(&o, "idle.others_cores_without");

    double t0 = bench_now();
    long fds = connect_idle(helpers, &nh, d.endpoint, opt_idle_clients, d.pid, fd0);
    bool all = fds >= opt_idle_clients;
    double connect_s = bench_now() - t0;
    long rss1 = proc_rss_settled(d.pid, 10);
    long threads1 = proc_threads(d.pid);
    quiet_gate();
    others_begin(&o, d.pid);
    if (measure_list(c, opt_samples, opt_list_jobs, &lat1) < 0)
        goto out;
    double noise1 = noise_end(&o, "idle.others_cores_with");
    double per = (double)(rss1 - rss0) * 1024.0 / (double)(fds > 0 ? fds : 1);

    printf("  jobqd: %ld queued jobs; %ld idle DEALER connections from %d helper processes"
           " (%ld accepted by the daemon%s, in %.1f s)\n",
           opt_list_jobs, opt_idle_clients, nh, fds, all ? "" : ", NOT all", connect_s);
    printf("  daemon threads: %ld before, %ld with the idle clients\n", threads0, threads1);
    printf("  daemon RSS: %ld kB before, %ld kB after = %.0f B per idle connection\n", rss0,
           rss1, per);
    double p50a = samples_pct(&lat0, 50), p99a = samples_pct(&lat0, 99);
    double p50b = samples_pct(&lat1, 50), p99b = samples_pct(&lat1, 99);
    printf("  query_jobs (list %ld jobs: id,status,priority,summary), %ld samples each:\n",
           opt_list_jobs, opt_samples);
    printf("    without idle clients: p50 %.3f ms  p99 %.3f ms   (other processes: %.2f cores)\n",
           p50a, p99a, noise0);
    printf("    with %6ld idle      : p50 %.3f ms  p99 %.3f ms   (other processes: %.2f cores)\n",
           fds, p50b, p99b, noise1);
    result_set("idle.clients", (double)fds);
    result_set("idle.threads_before", (double)threads0);
    result_set("idle.threads_after", (double)threads1);
    result_set("idle.rss_kb_before", (double)rss0);
    result_set("idle.rss_kb_after", (double)rss1);
    result_set("idle.bytes_per_client", per);
    result_set("idle.list_p50_ms_without", p50a);
    result_set("idle.list_p99_ms_without", p99a);
    result_set("idle.list_p50_ms_with", p50b);
    result_set("idle.list_p99_ms_with", p99b);
    samples_free(&lat0);
    samples_free(&lat1);
    /* The clients leave: descriptors and memory should come back. */
    stop_helpers(helpers, &nh);
    double end = bench_now() + 30;
    while (proc_fd_count(d.pid) > fd0 && bench_now() < end)
        bench_sleep(0.05); /* poll interval */
    long fd2 = proc_fd_count(d.pid) - fd0, rss2 = proc_rss_settled(d.pid, 10);
    printf("  after the clients disconnect: %ld extra descriptors, RSS %ld kB (%+.0f kB from"
           " before they came)\n",
           fd2, rss2, (double)(rss2 - rss0));
    result_set("idle.rss_kb_after_disconnect", (double)rss2);
    rc = 0;
out:
    stop_helpers(helpers, &nh);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    if (rc == 0)
        bare_router_idle(opt_idle_clients);
    if (rc == 0 && opt_beanstalkd)
        beanstalkd_idle(opt_idle_clients);
    else if (rc == 0)
        printf("  beanstalkd: not measured (not installed or --no-beanstalkd)\n");
    return rc;
}

/* ------------------------------------------------------------------ */
/* workload 2: busy jobs                                                */

static int busy_one(long k)
{
    void *ctx = new_ctx(1, 1024);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    char mr[32];
    snprintf(mr, sizeof mr, "%ld", k + 2000);
    const char *extra[] = {"--max-running", mr, NULL};
    quiet_gate();
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    long threads0 = proc_threads(d.pid);
    if (submit_batches(c, k, 0.01, LONG_REPEAT) < 0 || !jc_wait_stat(c, "running", k, 60))
        goto out;
    /* Steady state: wait (poll) until every busy job has logged. */
    double end = bench_now() + 30;
    for (;;) {
        static const char *const f[] = {"log_serial"};
        msgpack_packer *pk = jc_begin(c, "query_jobs");
        msgpack_pack_map(pk, 2);
        wire_pack_cstr(pk, "fields");
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, f[0]);
        wire_pack_cstr(pk, "status");
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, "running");
        if (jc_call(c, 10000) < 0)
            goto out;
        const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
        long zero = 0;
        for (uint32_t i = 0; rows && i < rows->via.array.size; i++) {
            int64_t s = 0;
            wire_get_int(&rows->via.array.ptr[i].via.array.ptr[0], &s);
            zero += s == 0;
        }
        if (zero == 0 || bench_now() > end)
            break;
        bench_sleep(0.05); /* poll interval */
    }
    long long log0 = jc_sum_log_serial(c), ch0 = jc_stat(c, "changes");
    long rss0 = proc_status_kb(d.pid, "VmRSS");
    thread_cpu_t th0[64], th1[64];
    int nth0 = proc_threads_cpu(d.pid, th0, 64);
    others_t o;
    others_begin(&o, d.pid);
    double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
    samples_t lat_list = {0}, lat_sub = {0};
    long submitted = 0;
    double next = t0;
    while (bench_now() - t0 < opt_busy_seconds) {
        double a = bench_now();
        long rows = jc_list(c, LIST_FIELDS, 4);
        double b = bench_now();
        uint64_t id = jc_submit_delay(c, 0, 0);
        double e = bench_now();
        if (rows < 0 || !id) {
            fprintf(stderr, "jobq-bench: busy: request failed: %s\n", c->errbuf);
            goto out;
        }
        samples_add(&lat_list, (b - a) * 1e3);
        samples_add(&lat_sub, (e - b) * 1e3);
        submitted++;
        next += opt_busy_period; /* the load pattern: one list + one submit per period */
        bench_sleep(next - bench_now());
    }
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    char nkey[96];
    snprintf(nkey, sizeof nkey, "busy.%ld.others_cores", k);
    double noise = noise_end(&o, nkey);
    int nth1 = proc_threads_cpu(d.pid, th1, 64);
    long long ch1 = jc_stat(c, "changes"), log1 = jc_sum_log_serial(c);
    long rss1 = proc_status_kb(d.pid, "VmRSS");
    long threads1 = proc_threads(d.pid);
    double secs = t1 - t0;
    /* The two log sums bracket the window (plus the time of the sums). */
    double log_rate = (double)(log1 - log0) / secs;
    double ch_rate = (double)(ch1 - ch0) / secs;
    double expect = (double)k / 0.01;
    char key[96];
    printf("  %ld busy jobs (test.delay duration 0.01, repeat %ld), %.1f s, one list + one"
           " submit every %.0f ms:\n",
           k, LONG_REPEAT, secs, opt_busy_period * 1e3);
    printf("    query_jobs list (%ld+ rows): p50 %.3f ms  p99 %.3f ms  max %.3f ms  (%zu samples)\n",
           k, samples_pct(&lat_list, 50), samples_pct(&lat_list, 99),
           samples_pct(&lat_list, 100), lat_list.n);
    printf("    submit_job            : p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
           samples_pct(&lat_sub, 50), samples_pct(&lat_sub, 99), samples_pct(&lat_sub, 100));
    printf("    log entries absorbed: %.0f /s (sum of log_serial; nominal %.0f /s); change"
           " records %.0f /s\n",
           log_rate, expect, ch_rate);
    printf("    daemon: %.2f CPU cores busy, threads %ld -> %ld, RSS +%.1f MB in the window;"
           " other processes %.2f cores\n",
           (cpu1 - cpu0) / secs, threads0, threads1, (double)(rss1 - rss0) / 1024.0, noise);
    printf("    daemon threads' CPU (cores):");
    for (int i = 0; i < nth1; i++) {
        double before = 0;
        for (int j = 0; j < nth0; j++)
            if (th0[j].tid == th1[i].tid)
                before = th0[j].cpu;
        printf(" %s%s %.2f", th1[i].tid == d.pid ? "main/" : "", th1[i].name,
               (th1[i].cpu - before) / secs);
    }
    printf("\n");
#define BSET(name, v)                                               \
    do {                                                            \
        snprintf(key, sizeof key, "busy.%ld.%s", k, name);          \
        result_set(key, v);                                         \
    } while (0)
    BSET("list_p50_ms", samples_pct(&lat_list, 50));
    BSET("list_p99_ms", samples_pct(&lat_list, 99));
    BSET("list_max_ms", samples_pct(&lat_list, 100));
    BSET("submit_p50_ms", samples_pct(&lat_sub, 50));
    BSET("submit_p99_ms", samples_pct(&lat_sub, 99));
    BSET("log_entries_per_s", log_rate);
    BSET("log_entries_nominal_per_s", expect);
    BSET("changes_per_s", ch_rate);
    BSET("daemon_cpu_cores", (cpu1 - cpu0) / secs);
    BSET("threads_before", (double)threads0);
    BSET("threads_after", (double)threads1);
#undef BSET
    samples_free(&lat_list);
    samples_free(&lat_sub);
    rc = 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

static int workload_busy(void)
{
    section("2. Busy jobs");
    for (int i = 0; i < opt_nbusy; i++)
        if (busy_one(opt_busy[i]) < 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* workload 3: lock sharding                                            */

static _Atomic int shard_phase; /* 0 warm-up, 1 measure, 2 stop */

typedef struct {
    pthread_t th;
    const char *ep;
    void *ctx;
    bool writer;
    uint64_t first_id, njobs;
    uint64_t rng;
    long ops, errors;
} shard_worker_t;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void shard_send(shard_worker_t *w, jc_t *c, unsigned *prio_i)
{
    static const int prios[] = {-10, 0, 10};
    if (w->writer) {
        msgpack_packer *pk = jc_begin(c, "change_job_priority");
        msgpack_pack_map(pk, 2);
        wire_pack_cstr(pk, "id");
        msgpack_pack_uint64(pk, w->first_id + xorshift(&w->rng) % w->njobs);
        wire_pack_cstr(pk, "priority");
        msgpack_pack_int(pk, prios[(*prio_i)++ % 3]);
    } else {
        msgpack_packer *pk = jc_begin(c, "query_jobs");
        msgpack_pack_map(pk, 2);
        wire_pack_cstr(pk, "ids");
        msgpack_pack_array(pk, (uint32_t)opt_ids_per_query);
        for (int i = 0; i < opt_ids_per_query; i++)
            msgpack_pack_uint64(pk, w->first_id + xorshift(&w->rng) % w->njobs);
        wire_pack_cstr(pk, "fields");
        msgpack_pack_array(pk, 3);
        wire_pack_cstr(pk, "id");
        wire_pack_cstr(pk, "status");
        wire_pack_cstr(pk, "priority");
    }
    jc_send(c);
}

static void *shard_worker_main(void *arg)
{
    shard_worker_t *w = arg;
    jc_t *c = jc_open(w->ctx, w->ep);
    unsigned prio_i = (unsigned)w->rng;
    int outstanding = 0;
    while (atomic_load(&shard_phase) < 2) {
        while (outstanding < opt_pipeline) {
            shard_send(w, c, &prio_i);
            outstanding++;
        }
        if (jc_recv(c, 10000) < 0) {
            fprintf(stderr, "jobq-bench: shard %s: %s\n", w->writer ? "writer" : "reader",
                    c->errbuf);
            w->errors++;
            break;
        }
        outstanding--;
        if (!c->rep.ok) {
            if (!w->errors++)
                fprintf(stderr, "jobq-bench: shard %s: %s: %.*s\n",
                        w->writer ? "writer" : "reader", jobq_code_name(c->rep.code),
                        (int)c->rep.message_len, c->rep.message ? c->rep.message : "");
        } else if (atomic_load(&shard_phase) == 1) {
            w->ops++;
        }
    }
    while (outstanding > 0 && jc_recv(c, 2000) == 0)
        outstanding--;
    jc_close(&c);
    return NULL;
}

static int shards_one(unsigned shards, long log_jobs, const char *prefix, double out[5])
{
    void *ctx = new_ctx(1, 1024);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    char sh[16], mr[32];
    snprintf(sh, sizeof sh, "%u", shards);
    snprintf(mr, sizeof mr, "%ld", log_jobs > 0 ? log_jobs : 1);
    const char *extra[] = {"--shards", sh, "--handlers", "4", "--max-running", mr, NULL};
    quiet_gate();
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    /* The log load occupies every run slot (or one blocker job does), so
     * the jobs behind stay queued and change_job_priority always has
     * pending opcodes to move. */
    if (log_jobs > 0) {
        if (submit_batches(c, log_jobs, 0.01, LONG_REPEAT) < 0 ||
            !jc_wait_stat(c, "running", log_jobs, 30))
            goto out;
    } else if (!jc_submit_delay(c, BLOCKER_SECONDS, 0) || !jc_wait_stat(c, "running", 1, 10)) {
        goto out;
    }
    uint64_t first = (uint64_t)(log_jobs > 0 ? log_jobs : 1) + 1;
    if (submit_batches(c, opt_shard_jobs, 0, 0) < 0)
        goto out;
    int nw = opt_readers + opt_writers;
    shard_worker_t *w = calloc((size_t)nw, sizeof *w);
    atomic_store(&shard_phase, 0);
    for (int i = 0; i < nw; i++) {
        w[i] = (shard_worker_t){.ep = d.endpoint, .ctx = ctx, .writer = i >= opt_readers,
                                .first_id = first, .njobs = (uint64_t)opt_shard_jobs,
                                .rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)};
        pthread_create(&w[i].th, NULL, shard_worker_main, &w[i]);
    }
    bench_sleep(opt_shard_seconds < 0.5 ? opt_shard_seconds : 0.5); /* warm-up, not counted */
    long long ch0 = jc_stat(c, "changes");
    others_t o;
    others_begin(&o, d.pid);
    double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
    atomic_store(&shard_phase, 1);
    bench_sleep(opt_shard_seconds); /* load pattern: the measured window */
    atomic_store(&shard_phase, 2);
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    char nkey[96];
    snprintf(nkey, sizeof nkey, "%s.%u.others_cores", prefix, shards);
    double noise = noise_end(&o, nkey);
    long long ch1 = jc_stat(c, "changes");
    long reads = 0, writes = 0, errors = 0;
    for (int i = 0; i < nw; i++) {
        pthread_join(w[i].th, NULL);
        if (w[i].writer)
            writes += w[i].ops;
        else
            reads += w[i].ops;
        errors += w[i].errors;
    }
    free(w);
    double secs = t1 - t0;
    out[0] = (double)reads / secs;
    out[1] = (double)writes / secs;
    out[2] = out[0] + out[1];
    out[3] = (cpu1 - cpu0) / secs;
    /* Change records are priority changes plus log entries. */
    out[4] = (double)(ch1 - ch0) / secs - out[1];
    if (out[4] < 0)
        out[4] = 0;
    printf("  --shards %-3u: %7.0f reads/s (%8.0f job lookups/s) %7.0f writes/s  total %7.0f"
           " req/s; %6.0f log entries/s; daemon %.2f cores; others %.2f%s\n",
           shards, out[0], out[0] * opt_ids_per_query, out[1], out[2], out[4], out[3], noise,
           errors ? " (errors!)" : "");
    static const char *const names[5] = {"reads_per_s", "writes_per_s", "total_per_s",
                                         "daemon_cpu_cores", "log_entries_per_s"};
    char key[96];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "%s.%u.%s", prefix, shards, names[i]);
        result_set(key, out[i]);
    }
    snprintf(key, sizeof key, "%s.%u.errors", prefix, shards);
    result_set(key, (double)errors);
    rc = errors ? -1 : 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

static int shards_pair(long log_jobs, const char *prefix)
{
    double a[5], b[5];
    printf(" %s\n", log_jobs ? "with the log load:" : "without log load (one blocker job runs):");
    if (shards_one(1, log_jobs, prefix, a) < 0 || shards_one(64, log_jobs, prefix, b) < 0)
        return -1;
    printf("  ratio 64/1: reads %.2f  writes %.2f  total requests %.2f", b[0] / a[0],
           b[1] / a[1], b[2] / a[2]);
    if (log_jobs)
        printf("  log entries %.2f", b[4] / a[4]);
    printf("\n");
    char key[96];
    snprintf(key, sizeof key, "%s.ratio_reads", prefix);
    result_set(key, b[0] / a[0]);
    snprintf(key, sizeof key, "%s.ratio_writes", prefix);
    result_set(key, b[1] / a[1]);
    snprintf(key, sizeof key, "%s.ratio_total", prefix);
    result_set(key, b[2] / a[2]);
    if (log_jobs) {
        snprintf(key, sizeof key, "%s.ratio_log", prefix);
        result_set(key, b[4] / a[4]);
    }
    return 0;
}

static int workload_shards(void)
{
    section("3. Lock sharding");
    printf("  %d reader clients (query_jobs by %d random ids, fields id,status,priority) + %d"
           " writer clients (change_job_priority on random queued jobs), %d requests in flight"
           " each, over %ld queued jobs; --handlers 4; %g s per run\n",
           opt_readers, opt_ids_per_query, opt_writers, opt_pipeline, opt_shard_jobs,
           opt_shard_seconds);
    if (opt_log_jobs > 0)
        printf("  log load: %ld running jobs logging every 10 ms (nominal %ld entries/s)\n",
               opt_log_jobs, opt_log_jobs * 100);
    if (opt_log_jobs > 0 && shards_pair(opt_log_jobs, "shards") < 0)
        return -1;
    return shards_pair(0, opt_log_jobs > 0 ? "shards_nolog" : "shards");
}

/* ------------------------------------------------------------------ */
/* workload 4: submit throughput                                        */

typedef enum { W_ECHO, W_PING, W_SUBMIT, W_BATCH, W_BS_PUT } wkind_t;

typedef struct {
    pthread_t th;
    wkind_t kind;
    const char *ep;
    int port;
    void *ctx;
    pthread_barrier_t *bar;
    volatile double *t_end;
    long cap;     /* most jobs this worker may submit */
    long ops;     /* round trips */
    long items;   /* jobs (batch: jobs per batch) */
    long errors;
    samples_t lat;
    char err[256];
} tworker_t;

static const char BS_BODY_NOTE[] = "the msgpack opcode list of a one-opcode test.delay job";
static char bs_body[128];
static size_t bs_body_len;

static void *tworker_main(void *arg)
{
    tworker_t *w = arg;
    jc_t *c = NULL;
    int fd = -1;
    if (w->kind == W_BS_PUT) {
        fd = bs_connect(w->port, false);
        if (fd < 0 || bs_put(fd, bs_body, bs_body_len) < 0)
            w->errors++;
    } else {
        c = jc_open(w->ctx, w->ep);
        msgpack_packer *pk = jc_begin(c, "ping");
        msgpack_pack_map(pk, 0);
        if (jc_call(c, 5000) < 0)
            w->errors++; /* connection warm-up */
    }
    pthread_barrier_wait(w->bar);
    double end = *w->t_end;
    while (!w->errors && w->items < w->cap) {
        double a = bench_now();
        if (a >= end)
            break;
        int rc = 0;
        long n = 1;
        switch (w->kind) {
        case W_ECHO:
        case W_PING: {
            msgpack_packer *pk = jc_begin(c, "ping");
            msgpack_pack_map(pk, 0);
            rc = jc_call(c, 10000);
            break;
        }
        case W_SUBMIT:
            rc = jc_submit_delay(c, 0, 0) ? 0 : -1;
            break;
        case W_BATCH:
            n = opt_batch;
            rc = jc_submit_many_delay(c, (uint32_t)n, 0, 0) == n ? 0 : -1;
            break;
        case W_BS_PUT:
            rc = bs_put(fd, bs_body, bs_body_len);
            break;
        }
        double b = bench_now();
        if (rc < 0) {
            w->errors++;
            snprintf(w->err, sizeof w->err, "%s", c ? c->errbuf : "beanstalkd put failed");
            break;
        }
        w->ops++;
        w->items += n;
        samples_add(&w->lat, (b - a) * 1e3);
    }
    if (fd >= 0)
        close(fd);
    jc_close(&c);
    return NULL;
}

/* An in-process ROUTER that echoes every request: the ZeroMQ loopback
 * floor with no daemon work at all. */
static _Atomic bool echo_stop;

static void *echo_main(void *arg)
{
    void *r = arg;
    zmq_pollitem_t it = {.socket = r, .events = ZMQ_POLLIN};
    while (!atomic_load(&echo_stop)) {
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        zmq_msg_t rid, body;
        zmq_msg_init(&rid);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&rid, r, 0) >= 0 && zmq_msg_recv(&body, r, 0) >= 0) {
            /* Answer as the daemon would: an ok reply with the same id. */
            msgpack_unpacked up;
            msgpack_unpacked_init(&up);
            wire_request_t req;
            char err[64];
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            if (msgpack_unpack_next(&up, zmq_msg_data(&body), zmq_msg_size(&body), NULL) ==
                    MSGPACK_UNPACK_SUCCESS &&
                wire_request_parse(&up.data, &req, err, sizeof err) == JOBQ_ERR_NONE) {
                wire_reply_ok_begin(&pk, req.id, true);
                msgpack_pack_true(&pk);
            }
            zmq_msg_send(&rid, r, ZMQ_SNDMORE);
            zmq_send(r, sb.data, sb.size, 0);
            msgpack_sbuffer_destroy(&sb);
            msgpack_unpacked_destroy(&up);
        }
        zmq_msg_close(&rid);
        zmq_msg_close(&body);
    }
    return NULL;
}

/* Run n workers of one kind for opt_submit_seconds; returns items/s and
 * fills p50/p99 of per-request latency (ms). */
static double run_workers(wkind_t kind, int n, const char *ep, int port, long cap_total,
                          pid_t daemon, double *p50, double *p99, long *errors, others_t *o)
{
    void *ctx = new_ctx(n > 1 ? 2 : 1, 1024);
    tworker_t *w = calloc((size_t)n, sizeof *w);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
    volatile double t_end = 0;
    for (int i = 0; i < n; i++) {
        w[i] = (tworker_t){.kind = kind, .ep = ep, .port = port, .ctx = ctx, .bar = &bar,
                           .t_end = &t_end, .cap = cap_total / n};
        pthread_create(&w[i].th, NULL, tworker_main, &w[i]);
    }
    double t0 = bench_now();
    t_end = t0 + opt_submit_seconds;
    others_begin(o, daemon);
    pthread_barrier_wait(&bar);
    samples_t all = {0};
    long items = 0;
    *errors = 0;
    double t1;
    for (int i = 0; i < n; i++) {
        pthread_join(w[i].th, NULL);
        items += w[i].items;
        *errors += w[i].errors;
        if (w[i].errors)
            fprintf(stderr, "jobq-bench: client %d: %s\n", i, w[i].err);
        for (size_t k = 0; k < w[i].lat.n; k++)
            samples_add(&all, w[i].lat.v[k]);
        samples_free(&w[i].lat);
    }
    t1 = bench_now(); /* includes the tail of each client's last request */
    *p50 = samples_pct(&all, 50);
    *p99 = samples_pct(&all, 99);
    samples_free(&all);
    pthread_barrier_destroy(&bar);
    free(w);
    zmq_ctx_term(ctx);
    return (double)items / (t1 - t0);
}

static void report_rate(const char *label, const char *key, double rate, double p50, double p99,
                        long errors, const char *unit, const others_t *o)
{
    char k[96];
    snprintf(k, sizeof k, "%s.others_cores", key);
    double noise = noise_end(o, k);
    printf("  %-44s %9.0f %s/s  p50 %.3f ms  p99 %.3f ms  others %.2f%s\n", label, rate, unit,
           p50, p99, noise, errors ? "  (ERRORS)" : "");
    snprintf(k, sizeof k, "%s.per_s", key);
    result_set(k, rate);
    snprintf(k, sizeof k, "%s.p50_ms", key);
    result_set(k, p50);
    snprintf(k, sizeof k, "%s.p99_ms", key);
    result_set(k, p99);
}

static int workload_submit(void)
{
    section("4. Submit throughput");
    printf("  jobs are one-opcode test.delay(0); job 1 runs a long delay under --max-running 1,"
           " so every submitted job stays queued; a fresh daemon per line; %.0f s each\n",
           opt_submit_seconds);
    double p50, p99, r;
    long errors;
    int rc = 0;
    char label[96];
    others_t o;

    /* The ZeroMQ floor: DEALER -> in-process ROUTER echo over the same transport. */
    {
        void *ctx = new_ctx(1, 1024);
        void *router = zmq_socket(ctx, ZMQ_ROUTER);
        char ep[400];
        char dir[300];
        bench_mkdtemp(dir, sizeof dir, "echo");
        if (strcmp(opt_transport, "tcp") == 0)
            snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", free_tcp_port());
        else
            snprintf(ep, sizeof ep, "ipc://%s/echo.sock", dir);
        zmq_bind(router, ep);
        pthread_t th;
        atomic_store(&echo_stop, false);
        pthread_create(&th, NULL, echo_main, router);
        quiet_gate();
        r = run_workers(W_ECHO, 1, ep, 0, 1L << 40, 0, &p50, &p99, &errors, &o);
        report_rate("ZeroMQ round-trip floor (echo, no daemon), 1", "submit.floor_echo_1", r,
                    p50, p99, errors, "rt ", &o);
        atomic_store(&echo_stop, true);
        pthread_join(th, NULL);
        zmq_close(router);
        zmq_ctx_term(ctx);
        bench_rmtree(dir);
    }

    struct {
        wkind_t kind;
        int clients;
        const char *key;
        const char *what;
        const char *unit;
    } runs[] = {
        {W_PING, 1, "submit.ping_1", "jobqd ping, one at a time, 1 client", "rt "},
        {W_PING, opt_clients, "submit.ping_n", "jobqd ping, one at a time, %d clients", "rt "},
        {W_SUBMIT, 1, "submit.single_1", "submit_job one at a time, 1 client", "job"},
        {W_SUBMIT, opt_clients, "submit.single_n", "submit_job one at a time, %d clients", "job"},
        {W_BATCH, 1, "submit.batch_1", "submit_many_jobs x%d, 1 client", "job"},
        {W_BATCH, opt_clients, "submit.batch_n", "submit_many_jobs x%d, %d clients", "job"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        void *ctx = new_ctx(1, 64);
        daemon_t d;
        jc_t *c = NULL;
        if (start_blocked_daemon(&d, &c, ctx, "20000000") < 0) {
            rc = -1;
        } else {
            if (runs[i].kind == W_BATCH && runs[i].clients > 1)
                snprintf(label, sizeof label, runs[i].what, opt_batch, runs[i].clients);
            else if (runs[i].kind == W_BATCH)
                snprintf(label, sizeof label, runs[i].what, opt_batch);
            else
                snprintf(label, sizeof label, runs[i].what, runs[i].clients);
            r = run_workers(runs[i].kind, runs[i].clients, d.endpoint, 0, 19000000, d.pid, &p50,
                            &p99, &errors, &o);
            report_rate(label, runs[i].key, r, p50, p99, errors, runs[i].unit, &o);
            if (errors)
                rc = -1;
        }
        jc_close(&c);
        zmq_ctx_term(ctx);
        daemon_stop(&d);
    }
    result_set("submit.clients", opt_clients);
    result_set("submit.batch", opt_batch);

    if (!opt_beanstalkd) {
        printf("  beanstalkd: not measured (not installed or --no-beanstalkd)\n");
        return rc;
    }
    for (int n = 1; n <= opt_clients; n += opt_clients - 1) {
        daemon_t b;
        int port;
        quiet_gate();
        if (beanstalkd_start(&b, &port) < 0) {
            printf("  beanstalkd: not measured (could not start it)\n");
            return rc;
        }
        r = run_workers(W_BS_PUT, n, NULL, port, 1L << 40, b.pid, &p50, &p99, &errors, &o);
        snprintf(label, sizeof label, "beanstalkd put one at a time, %d client%s", n,
                 n > 1 ? "s" : "");
        report_rate(label, n == 1 ? "submit.beanstalkd_put_1" : "submit.beanstalkd_put_n", r,
                    p50, p99, errors, "job", &o);
        daemon_stop(&b);
        if (opt_clients == 1)
            break;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* workload 5: memory per queued job                                    */

static int workload_memory(void)
{
    section("5. Memory per queued job");
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    char mj[32];
    snprintf(mj, sizeof mj, "%ld", opt_mem_jobs + 1000 > 2000000 ? opt_mem_jobs + 1000 : 2000000);
    if (start_blocked_daemon(&d, &c, ctx, mj) < 0)
        goto out;
    long rss0 = proc_rss_settled(d.pid, 3);
    double t0 = bench_now();
    if (submit_batches(c, opt_mem_jobs, 0, 0) < 0)
        goto out;
    double secs = bench_now() - t0;
    long long live = jc_stat(c, "live_jobs");
    long rss1 = proc_rss_settled(d.pid, 10);
    double per = (double)(rss1 - rss0) * 1024.0 / (double)opt_mem_jobs;
    printf("  jobqd: %ld one-opcode jobs queued (live_jobs %lld) in %.1f s (%.0f jobs/s in"
           " batches of %d); RSS %ld -> %ld kB = %.0f B per queued job\n",
           opt_mem_jobs, live, secs, (double)opt_mem_jobs / secs, opt_batch, rss0, rss1, per);
    result_set("memory.jobs", (double)opt_mem_jobs);
    result_set("memory.rss_kb_before", (double)rss0);
    result_set("memory.rss_kb_after", (double)rss1);
    result_set("memory.bytes_per_job", per);
    result_set("memory.fill_jobs_per_s", (double)opt_mem_jobs / secs);
    rc = 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    if (rc < 0)
        return rc;
    if (!opt_beanstalkd) {
        printf("  beanstalkd: not measured (not installed or --no-beanstalkd)\n");
        return 0;
    }
    daemon_t b;
    int port;
    if (beanstalkd_start(&b, &port) < 0) {
        printf("  beanstalkd: not measured (could not start it)\n");
        return 0;
    }
    int fd = bs_connect(port, false);
    long brss0 = proc_rss_settled(b.pid, 3);
    long inserted = 0;
    for (long left = opt_mem_jobs; left > 0 && fd >= 0;) {
        long k = left > opt_batch ? opt_batch : left;
        long got = bs_put_many(fd, k, bs_body, bs_body_len);
        if (got < 0)
            break;
        inserted += got;
        left -= k;
    }
    long brss1 = proc_rss_settled(b.pid, 10);
    double bper = (double)(brss1 - brss0) * 1024.0 / (double)(inserted ? inserted : 1);
    printf("  beanstalkd: %ld puts (%zu-byte body: %s) RSS %ld -> %ld kB = %.0f B per"
           " queued job\n",
           inserted, bs_body_len, BS_BODY_NOTE, brss0, brss1, bper);
    result_set("memory.beanstalkd.jobs", (double)inserted);
    result_set("memory.beanstalkd.bytes_per_job", bper);
    if (fd >= 0)
        close(fd);
    daemon_stop(&b);
    return 0;
}

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
    x = result_get("shards.ratio_total");
    fmt(v, sizeof v, "%.2fx", x);
    row("throughput --shards 64 / --shards 1", v, "(report)", -1, "-");
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
"Benchmarks jobqd (and beanstalkd, for comparison) and prints a report.\n"
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
"  all      every workload above, then a summary against the targets\n"
"\n"
"Options:\n"
"      --jobqd PATH         the daemon to test [%s]\n"
"      --beanstalkd PATH    beanstalkd for the comparison [found on PATH]\n"
"      --no-beanstalkd      skip the beanstalkd comparison\n"
"      --transport T        tcp (127.0.0.1, free port) or ipc (in the data dir) [tcp]\n"
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
"the floor for what an idle connection costs in libzmq itself.\n",
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
    if (access("/usr/sbin/beanstalkd", X_OK) == 0 && strcmp(name, "beanstalkd") == 0)
        return "/usr/sbin/beanstalkd";
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
    printf("jobqd: %s (transport %s)\n", opt_jobqd, opt_transport);
    printf("beanstalkd: %s\n", opt_beanstalkd ? opt_beanstalkd : "not available");
    snprintf(json, len,
             "{\"cpus\": %ld, \"cpu_model\": \"%s\", \"mem_kb\": %ld, \"kernel\": \"%s\", "
             "\"transport\": \"%s\"}",
             ncpu, model_s, mem_kb, u.release, opt_transport);
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

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--idle-helper") == 0)
        return idle_helper_main(argv[2], strtol(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "--router-helper") == 0)
        return router_helper_main(argv[2]);
    enum {
        O_JOBQD = 256, O_BEANS, O_NOBEANS, O_TRANSPORT, O_IDLE, O_LISTJOBS, O_SAMPLES, O_BUSY,
        O_BUSYSEC, O_SHJOBS, O_SHSEC, O_READERS, O_WRITERS, O_PIPE, O_IDS, O_LOGJOBS,
        O_SUBSEC, O_CLIENTS, O_BATCH, O_MEMJOBS, O_JSON, O_KEEP, O_QUIET
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
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *beans_path = NULL;
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
        case 'v': opt_verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: bad = true;
        }
    }
    if (strcmp(opt_transport, "tcp") != 0 && strcmp(opt_transport, "ipc") != 0)
        bad = true;
    if (opt_idle_clients < 1 || opt_list_jobs < 1 || opt_samples < 1 || opt_shard_jobs < 1 ||
        opt_readers < 0 || opt_writers < 0 || opt_readers + opt_writers < 1 ||
        opt_pipeline < 1 || opt_ids_per_query < 1 || opt_ids_per_query > 100000 ||
        opt_log_jobs < 0 || opt_clients < 1 || opt_batch < 1 || opt_batch > 100000 ||
        opt_mem_jobs < 1 || opt_busy_seconds <= 0 || opt_shard_seconds <= 0 ||
        opt_submit_seconds <= 0)
        bad = true;
    bool want[5] = {false};
    static const char *const names[5] = {"idle", "busy", "shards", "submit", "memory"};
    bool any = false;
    for (int i = optind; i < argc; i++) {
        bool known = false;
        for (int k = 0; k < 5; k++)
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
        for (int k = 0; k < 5; k++)
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
    int (*fns[5])(void) = {workload_idle, workload_busy, workload_shards, workload_submit,
                           workload_memory};
    for (int k = 0; k < 5; k++)
        if (want[k] && fns[k]() < 0) {
            fprintf(stderr, "jobq-bench: workload %s failed\n", names[k]);
            rc = 1;
        }
    if (want[0] && want[1] && want[2] && want[3] && want[4])
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
