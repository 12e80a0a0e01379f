/* idle.c: workloads 1 (idle clients: threads, RSS and list latency with
 * 10,000 idle DEALERs; a bare libzmq ROUTER and beanstalkd with the same
 * clients) and 5 (memory per queued job, next to beanstalkd), plus the
 * helper processes that hold the idle sockets. */
#include "beans.h"
#include "workloads.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

/* ------------------------------------------------------------------ */
/* idle-connection helpers: child processes holding DEALER sockets      */

#define CLIENTS_PER_HELPER 2500

typedef struct {
    pid_t pid;
    int to_child; /* closing it tells the helper to exit */
} helper_t;

int idle_helper_main(const char *endpoint, long n)
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
int router_helper_main(const char *endpoint)
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

double idle_tcp_cost(pid_t pid, int port, long n, long *made_out, long *rss0_out,
                     long *rss1_out)
{
    long rss0 = proc_rss_settled(pid, 2), fd0 = proc_fd_count(pid);
    int *fds = calloc((size_t)n, sizeof *fds);
    long made = 0;
    for (long i = 0; fds && i < n; i++) {
        fds[i] = bs_connect(port, true);
        if (fds[i] < 0)
            break;
        made++;
    }
    bool all = wait_fds(pid, fd0 + made, 60);
    long rss1 = proc_rss_settled(pid, 5);
    *made_out = all ? made : proc_fd_count(pid) - fd0; /* before they close */
    for (long i = 0; i < made; i++)
        close(fds[i]);
    free(fds);
    if (rss0_out)
        *rss0_out = rss0;
    if (rss1_out)
        *rss1_out = rss1;
    return *made_out > 0 ? (double)(rss1 - rss0) * 1024.0 / (double)*made_out : NAN;
}

static void beanstalkd_idle(long nclients)
{
    daemon_t b;
    int port;
    if (beanstalkd_start(&b, &port) < 0) {
        printf("  beanstalkd: not measured (could not start it)\n");
        return;
    }
    long made, rss0, rss1;
    double per = idle_tcp_cost(b.pid, port, nclients, &made, &rss0, &rss1);
    printf("  beanstalkd: %ld idle TCP connections%s; RSS %ld -> %ld kB = %.0f B per connection\n",
           made, made >= nclients ? "" : " (not all accepted)", rss0, rss1, per);
    result_set("idle.beanstalkd.clients", (double)made);
    result_set("idle.beanstalkd.bytes_per_client", per);
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

double idle_zmq_cost(pid_t pid, const char *endpoint, long n, long *made)
{
    helper_t helpers[64];
    int nh = 0;
    long fd0 = proc_fd_count(pid), rss0 = proc_rss_settled(pid, 2);
    long got = connect_idle(helpers, &nh, endpoint, n, pid, fd0);
    long rss1 = proc_rss_settled(pid, 10);
    stop_helpers(helpers, &nh);
    *made = got;
    return got > 0 ? (double)(rss1 - rss0) * 1024.0 / (double)got : NAN;
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

int workload_idle(void)
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
/* workload 5: memory per queued job                                    */

int workload_memory(void)
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
    long anon0 = proc_status_kb(d.pid, "RssAnon"), file0 = proc_status_kb(d.pid, "RssFile");
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
    long anon1 = proc_status_kb(d.pid, "RssAnon"), file1 = proc_status_kb(d.pid, "RssFile");
    double per_anon = (double)(anon1 - anon0) * 1024.0 / (double)opt_mem_jobs;
    /* Since the store, RSS also counts the store file's pages LMDB's
     * read-only map touched (RssFile: page cache, shared, reclaimable). */
    printf("         of which anonymous (heap) %ld -> %ld kB = %.0f B per job; file-backed (the"
           " store's map) %ld -> %ld kB\n",
           anon0, anon1, per_anon, file0, file1);
    result_set("memory.anon_bytes_per_job", per_anon);
    result_set("memory.rss_file_kb_after", (double)file1);
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

