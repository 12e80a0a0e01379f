/* sidebyside.c: the peers workload — issue 14's table: jobq next to Redis,
 * beanstalkd and gearmand (and the bare libzmq echo floor) in one run, each
 * server fresh for each line, on 127.0.0.1 or a socket in the run's
 * temporary directory:
 *
 *   strict ping, 1 connection        p50/p99 of one request at a time
 *   strict submit, no fsync          jobs/s, one at a time, 1 connection
 *   strict submit, durable           the same with an fsync per change
 *   batched enqueue, no fsync        C connections, requests of --batch jobs
 *                                    (the peers: pipelines of --batch requests)
 *   events to S subscribers          deliveries/s and % missed (seq gaps)
 *   heap per queued job              bytes per one-opcode job
 *   idle connections                 RSS per idle connection
 *
 * and for the ping, submit and batched lines the server's wake-ups (context
 * switches of all its threads) and CPU (utime + stime) per request, from
 * /proc, over the measured window only.
 *
 * The peers are spoken to with the minimal clients of peers.c (no client
 * library), one request's bytes built once; jobq with the bench's raw
 * client (jclient.c). The echo floor is a separate process (this binary,
 * --echo-helper): a ROUTER served by zmq_poll like jobqd's loop, answering
 * each request with an ok reply, so it pays the same thread crossings a
 * server does and nothing else. */
#include "beans.h"
#include "cycle.h"
#include "peers.h"
#include "workloads.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define GM_FUNC "bench.noop"
#define REDIS_LIST "jobs"
#define REDIS_CHANNEL "ev"
#define WARMUP_SECONDS 0.2

/* ------------------------------------------------------------------ */
/* the echo floor: a separate process                                   */

int echo_helper_main(int nendpoints, char **endpoints)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the bench, whatever ends it */
    void *ctx = new_ctx(1, 1024);
    void *r = zmq_socket(ctx, ZMQ_ROUTER);
    for (int i = 0; i < nendpoints; i++)
        if (zmq_bind(r, endpoints[i]) < 0) {
            fprintf(stderr, "echo helper: bind %s: %s\n", endpoints[i], zmq_strerror(errno));
            return 1;
        }
    printf("ready 1\n");
    fflush(stdout);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (;;) {
        zmq_pollitem_t it[2] = {{.socket = r, .events = ZMQ_POLLIN},
                                {.fd = 0, .events = ZMQ_POLLIN}};
        if (zmq_poll(it, 2, -1) < 0 && errno != EINTR)
            break;
        char buf[16];
        if (it[1].revents && read(0, buf, sizeof buf) <= 0)
            break; /* the bench closed the pipe */
        /* Drain what is there, as a loop would, then poll again. */
        while (it[0].revents) {
            zmq_msg_t rid, body;
            zmq_msg_init(&rid);
            zmq_msg_init(&body);
            if (zmq_msg_recv(&rid, r, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&rid);
                zmq_msg_close(&body);
                break;
            }
            /* An ok reply to the request's id, as the daemon answers a
             * ping: the client cannot tell the difference. */
            if (zmq_msg_recv(&body, r, 0) >= 0)
                echo_answer(r, &rid, &body, &sb);
            zmq_msg_close(&rid);
            zmq_msg_close(&body);
        }
    }
    msgpack_sbuffer_destroy(&sb);
    zmq_close(r);
    zmq_ctx_term(ctx);
    return 0;
}

typedef struct {
    pid_t pid;
    int to_child; /* closing it ends the helper */
} echo_t;

/* Starts the echo helper bound on both endpoints; 0 once it is ready. */
static int echo_start(echo_t *e, const char *ep1, const char *ep2)
{
    int in[2], out[2];
    e->pid = -1;
    e->to_child = -1;
    if (pipe2(in, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    fflush(NULL);
    e->pid = fork();
    if (e->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl("/proc/self/exe", "jobq-bench", "--echo-helper", ep1, ep2, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    e->to_child = in[1];
    char line[32] = "";
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    if (e->pid > 0 && poll(&p, 1, 10000) > 0) {
        ssize_t r = read(out[0], line, sizeof line - 1);
        line[r > 0 ? r : 0] = '\0';
    }
    close(out[0]);
    return strncmp(line, "ready", 5) == 0 ? 0 : -1;
}

static void echo_stop(echo_t *e)
{
    if (e->to_child >= 0)
        close(e->to_child);
    if (e->pid > 0) {
        double end = bench_now() + 5;
        while (waitpid(e->pid, NULL, WNOHANG) == 0) {
            if (bench_now() > end) {
                kill(e->pid, SIGKILL);
                waitpid(e->pid, NULL, 0);
                break;
            }
            bench_sleep(0.01); /* poll interval */
        }
    }
    e->pid = -1;
    e->to_child = -1;
}

/* ------------------------------------------------------------------ */
/* the servers                                                          */

typedef enum { SYS_JOBQ, SYS_REDIS, SYS_BEANS, SYS_GEAR } sys_t;

typedef struct {
    const char *key;   /* result key part */
    const char *label;
    sys_t sys;
    const char *const *tpl; /* tcp_daemon_start's argv (argv[0] set at run time) */
} pkind_t;

static const char *const redis_mem_tpl[] = {
    "", "--port", "{port}", "--bind", "127.0.0.1", "--tcp-backlog", "4096", "--dir", "{dir}", "--save", "",
    "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
    "--unixsocket", "{dir}/redis.sock", "--unixsocketperm", "700", NULL};
static const char *const redis_aof_tpl[] = {
    "", "--port", "{port}", "--bind", "127.0.0.1", "--dir", "{dir}", "--save", "",
    "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no",
    "--daemonize", "no", NULL};
static const char *const bs_mem_tpl[] = {"", "-l", "127.0.0.1", "-p", "{port}", NULL};
static const char *const bs_fsync_tpl[] = {"", "-l", "127.0.0.1", "-p", "{port}", "-b", "{dir}",
                                           "-f", "0", NULL};
/* gearmand's listen backlog (32 by default) and Redis's (511) would drop
 * much of the idle line's burst of connections; beanstalkd's is SOMAXCONN. */
static const char *const gm_mem_tpl[] = {"", "-L", "127.0.0.1", "-p", "{port}", "-b", "4096", "-l",
                                         "{dir}/gearmand.log", "-P", "{dir}/gearmand.pid", NULL};
static const char *const gm_sqlite_tpl[] = {
    "", "-L", "127.0.0.1", "-p", "{port}", "-l", "{dir}/gearmand.log", "-P", "{dir}/gearmand.pid",
    "-q", "libsqlite3", "--libsqlite3-db", "{dir}/queue.sqlite", NULL};

static const pkind_t REDIS_MEM = {"redis", "Redis (no AOF)", SYS_REDIS, redis_mem_tpl};
static const pkind_t REDIS_AOF = {"redis_aof_always", "Redis appendfsync always", SYS_REDIS,
                                  redis_aof_tpl};
static const pkind_t BS_MEM = {"beanstalkd", "beanstalkd (no binlog)", SYS_BEANS, bs_mem_tpl};
static const pkind_t BS_FSYNC = {"beanstalkd_fsync", "beanstalkd -b DIR -f0", SYS_BEANS,
                                 bs_fsync_tpl};
static const pkind_t GM_MEM = {"gearmand", "gearmand (memory)", SYS_GEAR, gm_mem_tpl};
static const pkind_t GM_SQLITE = {"gearmand_sqlite", "gearmand -q libsqlite3", SYS_GEAR,
                                  gm_sqlite_tpl};

static const char *peer_bin(sys_t sys)
{
    switch (sys) {
    case SYS_REDIS: return opt_no_redis ? NULL : opt_redis;
    case SYS_BEANS: return opt_beanstalkd;
    case SYS_GEAR: return opt_no_gearmand ? NULL : opt_gearmand;
    default: return NULL;
    }
}

/* A fresh server of kind k; -1 (and why) when it is missing or did not start. */
static int peer_start(const pkind_t *k, daemon_t *d, int *port, const char **why)
{
    const char *bin = peer_bin(k->sys);
    if (!bin) {
        *why = "not installed or left out";
        return -1;
    }
    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    for (int i = 1; k->tpl[i] && n < 31; i++)
        argv[n++] = k->tpl[i];
    argv[n] = NULL;
    quiet_gate();
    if (tcp_daemon_start(d, k->key, argv, port) < 0) {
        *why = "could not start it";
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* one client: a connection and its request                             */

typedef struct {
    sys_t sys;
    bool ping;        /* the cheap request; else a submit (put, LPUSH, SUBMIT_JOB_BG) */
    long pipe;        /* jobq: jobs per submit_many_jobs (1: submit_job); peers:
                       * requests written together before the replies are read */
    const char *ep;   /* jobq: endpoint */
    int port;         /* peers: 127.0.0.1:port ... */
    const char *path; /* ... or this unix socket */
} target_t;

typedef struct {
    const target_t *t;
    jc_t *jc;
    pconn_t pc;
    char *req; /* peers: `pipe` requests, built once */
    size_t req_len;
    char err[200];
} client_t;

/* One request of t's kind, appended to b's output. */
static void peer_request(const target_t *t, pconn_t *b)
{
    switch (t->sys) {
    case SYS_REDIS:
        if (t->ping) {
            pconn_queue(b, "*1\r\n$4\r\nPING\r\n", 14);
        } else {
            pconn_queuef(b, "*3\r\n$5\r\nLPUSH\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(REDIS_LIST),
                         REDIS_LIST, bs_body_len);
            pconn_queue(b, bs_body, bs_body_len);
            pconn_queue(b, "\r\n", 2);
        }
        break;
    case SYS_BEANS:
        if (t->ping) {
            pconn_queue(b, "stats-job 0\r\n", 13); /* never an id: NOT_FOUND */
        } else {
            pconn_queuef(b, "put 0 0 60 %zu\r\n", bs_body_len);
            pconn_queue(b, bs_body, bs_body_len);
            pconn_queue(b, "\r\n", 2);
        }
        break;
    case SYS_GEAR:
        if (t->ping) {
            const char *args[] = {"x"};
            size_t lens[] = {1};
            gm_req(b, GM_ECHO_REQ, 1, args, lens);
        } else {
            /* A background job: gearmand answers JOB_CREATED once queued. */
            const char *args[] = {GM_FUNC, "", bs_body};
            size_t lens[] = {strlen(GM_FUNC), 0, bs_body_len};
            gm_req(b, GM_SUBMIT_JOB_BG, 3, args, lens);
        }
        break;
    case SYS_JOBQ:
        break;
    }
}

/* One reply at the head of c's input: its length (0: not complete yet,
 * -1: unreadable); *ok when it is the answer a success gets. */
static ssize_t peer_reply(const target_t *t, const pconn_t *c, bool *ok)
{
    *ok = false;
    if (t->sys == SYS_REDIS) {
        char type;
        long long iv;
        const char *b[1];
        size_t bl[1];
        int nb;
        ssize_t n = resp_reply(c, &type, &iv, b, bl, 1, &nb);
        *ok = type == (t->ping ? '+' : ':');
        return n;
    }
    if (t->sys == SYS_BEANS) {
        char word[16];
        uint64_t id;
        const char *body;
        size_t blen;
        size_t n = bs_reply(c, word, &id, &body, &blen);
        *ok = strcmp(word, t->ping ? "NOT_FOUND" : "INSERTED") == 0;
        return (ssize_t)n;
    }
    uint32_t type;
    const char *d;
    size_t dl;
    ssize_t n = gm_res(c, &type, &d, &dl);
    *ok = type == (t->ping ? GM_ECHO_RES : GM_JOB_CREATED);
    return n;
}

/* c's input from off on: the parsers read the head of a connection's
 * input, and consuming each reply at once would move the rest of a big
 * read once per reply. */
static pconn_t view_at(const pconn_t *c, size_t off)
{
    pconn_t v = *c;
    v.in += off;
    v.in_len -= off;
    return v;
}

static int client_open(client_t *w, const target_t *t, void *ctx)
{
    memset(w, 0, sizeof *w);
    w->t = t;
    w->pc.fd = -1;
    if (t->sys == SYS_JOBQ) {
        w->jc = jc_open(ctx, t->ep);
        return w->jc ? 0 : -1;
    }
    pconn_t b;
    memset(&b, 0, sizeof b);
    b.fd = -1;
    for (long i = 0; i < t->pipe; i++)
        peer_request(t, &b);
    w->req = b.out;
    w->req_len = b.out_len;
    return t->path ? pconn_open_unix(&w->pc, t->path) : pconn_open(&w->pc, t->port);
}

static void client_close(client_t *w)
{
    jc_close(&w->jc);
    if (w->pc.fd >= 0)
        pconn_close(&w->pc);
    free(w->req);
    w->req = NULL;
}

/* One round trip: a request (jobq) or `pipe` requests (peers) and every
 * reply; 0 when all succeeded. */
static int client_op(client_t *w)
{
    const target_t *t = w->t;
    if (t->sys == SYS_JOBQ) {
        int rc;
        if (t->ping) {
            msgpack_packer *pk = jc_begin(w->jc, "ping");
            msgpack_pack_map(pk, 0);
            rc = jc_call(w->jc, 10000);
        } else if (t->pipe == 1) {
            rc = jc_submit_delay(w->jc, 0, 0) ? 0 : -1;
        } else {
            rc = jc_submit_many_delay(w->jc, (uint32_t)t->pipe, 0, 0) == t->pipe ? 0 : -1;
        }
        if (rc < 0)
            snprintf(w->err, sizeof w->err, "%.190s", w->jc->errbuf);
        return rc;
    }
    pconn_t *c = &w->pc;
    if (c->fd < 0) {
        snprintf(w->err, sizeof w->err, "not connected");
        return -1;
    }
    pconn_queue(c, w->req, w->req_len);
    long got = 0;
    while (got < t->pipe) {
        if (pconn_flush(c) < 0) {
            snprintf(w->err, sizeof w->err, "write: %s", strerror(errno));
            return -1;
        }
        struct pollfd p = {.fd = c->fd, .events = pconn_events(c)};
        int r = poll(&p, 1, 10000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(w->err, sizeof w->err, "no reply within 10 s");
            return -1;
        }
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (pconn_fill(c) < 0) {
            snprintf(w->err, sizeof w->err, "connection closed");
            return -1;
        }
        size_t off = 0;
        for (;;) {
            bool ok;
            pconn_t v = view_at(c, off);
            ssize_t n = peer_reply(t, &v, &ok);
            if (n < 0 || (n > 0 && !ok)) {
                snprintf(w->err, sizeof w->err, "unexpected reply: %.60s", v.in);
                for (char *s = w->err; *s; s++)
                    if (*s == '\r' || *s == '\n' || (unsigned char)*s < 32)
                        *s = ' ';
                return -1;
            }
            if (n == 0)
                break;
            off += (size_t)n;
            got++;
        }
        pconn_consume(c, off);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* a measured line: n clients, each a thread and a connection           */

typedef struct {
    double rate;                 /* items (jobs, pings) per second */
    double p50_us, p99_us;       /* per round trip */
    double wake_per_req;         /* server context switches per round trip */
    double cpu_us_per_req, cpu_us_per_item;
    long reqs, items, errors;
} meas_t;

typedef struct {
    client_t c;
    const target_t *t;
    void *ctx;
    pthread_t th;
    pthread_barrier_t *bar;
    const double *t_end;
    long reqs, items, errors;
    samples_t lat; /* µs */
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    if (client_open(&w->c, w->t, w->ctx) < 0) {
        snprintf(w->c.err, sizeof w->c.err, "cannot connect");
        w->errors++;
    }
    /* Warm-up (connection, first allocations), outside the window. */
    double warm = bench_now() + WARMUP_SECONDS;
    while (!w->errors && bench_now() < warm)
        if (client_op(&w->c) < 0)
            w->errors++;
    pthread_barrier_wait(w->bar); /* ready */
    pthread_barrier_wait(w->bar); /* go: *t_end is set */
    double end = *w->t_end;
    long per = w->t->sys == SYS_JOBQ && w->t->ping ? 1 : w->t->pipe;
    while (!w->errors) {
        double a = bench_now();
        if (a >= end)
            break;
        if (client_op(&w->c) < 0) {
            w->errors++;
            break;
        }
        double b = bench_now();
        w->reqs++;
        w->items += per;
        samples_add(&w->lat, (b - a) * 1e6);
    }
    client_close(&w->c);
    return NULL;
}

/* Runs n clients of target t against the server pid for `seconds`. */
static void measure(const target_t *t, int n, pid_t pid, double seconds, others_t *o, meas_t *m)
{
    memset(m, 0, sizeof *m);
    void *ctx = t->sys == SYS_JOBQ ? new_ctx(n > 1 ? 2 : 1, 1024) : NULL;
    worker_t *w = calloc((size_t)n, sizeof *w);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
    double t_end = 0;
    for (int i = 0; i < n; i++) {
        w[i] = (worker_t){.t = t, .ctx = ctx, .bar = &bar, .t_end = &t_end};
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    }
    pthread_barrier_wait(&bar);
    others_begin(o, pid);
    long long sw0 = proc_ctx_switches(pid);
    double cpu0 = proc_cpu_seconds(pid);
    double t0 = bench_now();
    t_end = t0 + seconds;
    pthread_barrier_wait(&bar);
    samples_t all = {0};
    for (int i = 0; i < n; i++) {
        pthread_join(w[i].th, NULL);
        m->reqs += w[i].reqs;
        m->items += w[i].items;
        m->errors += w[i].errors;
        if (w[i].errors)
            fprintf(stderr, "jobq-bench: client %d: %s\n", i, w[i].c.err);
        for (size_t k = 0; k < w[i].lat.n; k++)
            samples_add(&all, w[i].lat.v[k]);
        samples_free(&w[i].lat);
    }
    double t1 = bench_now(); /* includes the last request begun in the window */
    long long sw1 = proc_ctx_switches(pid);
    double cpu1 = proc_cpu_seconds(pid);
    m->rate = (double)m->items / (t1 - t0);
    m->p50_us = samples_pct(&all, 50);
    m->p99_us = samples_pct(&all, 99);
    double reqs = m->reqs ? (double)m->reqs : NAN;
    m->wake_per_req = sw0 >= 0 && sw1 >= 0 ? (double)(sw1 - sw0) / reqs : NAN;
    m->cpu_us_per_req = (cpu1 - cpu0) * 1e6 / reqs;
    m->cpu_us_per_item = m->items ? (cpu1 - cpu0) * 1e6 / (double)m->items : NAN;
    samples_free(&all);
    pthread_barrier_destroy(&bar);
    free(w);
    if (ctx)
        zmq_ctx_term(ctx);
}

static void set2(const char *key, const char *name, double v)
{
    char k[128];
    snprintf(k, sizeof k, "%.100s.%.26s", key, name);
    result_set(k, v);
}

static double get2(const char *key, const char *name)
{
    char k[128];
    snprintf(k, sizeof k, "%.100s.%.26s", key, name);
    return result_get(k);
}

/* Prints one line and records it under key (peers.<line>.<system>). */
static void report(const char *label, const char *key, const meas_t *m, const char *unit,
                   const others_t *o)
{
    char k[128];
    snprintf(k, sizeof k, "%s.others_cores", key);
    double noise = noise_end(o, k);
    printf("  %-40s %9.0f %s/s  p50 %7.1f µs  p99 %7.1f µs  %5.1f wake-ups  %6.1f µs CPU"
           " /req  others %.2f%s\n",
           label, m->rate, unit, m->p50_us, m->p99_us, m->wake_per_req, m->cpu_us_per_req, noise,
           m->errors ? "  (ERRORS)" : "");
    set2(key, "per_s", m->errors ? NAN : m->rate);
    set2(key, "p50_us", m->p50_us);
    set2(key, "p99_us", m->p99_us);
    set2(key, "wakeups_per_req", m->wake_per_req);
    set2(key, "cpu_us_per_req", m->cpu_us_per_req);
    set2(key, "cpu_us_per_job", m->cpu_us_per_item);
    set2(key, "requests", (double)m->reqs);
}

static void not_measured(const char *label, const char *why)
{
    printf("  %-40s not measured (%s)\n", label, why);
}

/* A peer line: a fresh server of kind k, n clients of target t (port and
 * path filled in here), stopped afterwards. */
static int peer_line(const pkind_t *k, target_t t, bool unix_socket, int n, const char *label,
                     const char *line)
{
    daemon_t d;
    const char *why;
    char key[128];
    snprintf(key, sizeof key, "peers.%s.%s%s", line, k->key, unix_socket ? "_unix" : "");
    if (peer_start(k, &d, &t.port, &why) < 0) {
        not_measured(label, why);
        return 0;
    }
    char path[420];
    snprintf(path, sizeof path, "%s/redis.sock", d.dir);
    t.sys = k->sys;
    t.path = unix_socket ? path : NULL;
    others_t o;
    meas_t m;
    measure(&t, n, d.pid, opt_peers_seconds, &o, &m);
    report(label, key, &m, t.ping ? "rt " : "job", &o);
    daemon_stop(&d);
    return m.errors ? -1 : 0;
}

/* A jobq line on a fresh daemon: --sync sync, every submitted job kept
 * queued (a blocker job under --max-running 1); tcp: the client talks TCP
 * (else the daemon's ipc socket). */
static int jobq_line(const char *sync, target_t t, bool tcp, int n, const char *label,
                     const char *key)
{
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    char listen[64];
    const char *more[8] = {"--sync", sync};
    int k = 2;
    if (tcp && strcmp(opt_transport, "tcp") != 0) {
        snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", free_tcp_port());
        more[k++] = "--listen";
        more[k++] = listen;
        more[k++] = "--insecure";
    }
    more[k] = NULL;
    int rc = -1;
    if (start_blocked_daemon_ex(&d, &c, ctx, "20000000", more) == 0) {
        char ep[420];
        if (tcp && strcmp(opt_transport, "tcp") != 0)
            snprintf(ep, sizeof ep, "%s", listen);
        else if (tcp)
            snprintf(ep, sizeof ep, "%s", d.endpoint);
        else
            snprintf(ep, sizeof ep, "ipc://%s/jobq.sock", d.dir);
        t.sys = SYS_JOBQ;
        t.ep = ep;
        jc_close(&c); /* the blocker is running; this connection stays out */
        others_t o;
        meas_t m;
        measure(&t, n, d.pid, opt_peers_seconds, &o, &m);
        report(label, key, &m, t.ping ? "rt " : "job", &o);
        rc = m.errors ? -1 : 0;
    } else {
        not_measured(label, "jobqd did not start");
    }
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the lines                                                            */

static int ping_lines(void)
{
    section("peers: strict ping, 1 connection, one request at a time");
    int rc = 0;
    /* The floor: a separate process with a ROUTER, on ipc and on TCP. */
    char dir[300], ipc[400], tcp[64];
    bench_mkdtemp(dir, sizeof dir, "echo");
    snprintf(ipc, sizeof ipc, "ipc://%s/echo.sock", dir);
    snprintf(tcp, sizeof tcp, "tcp://127.0.0.1:%d", free_tcp_port());
    echo_t e;
    quiet_gate();
    bool echo_up = echo_start(&e, ipc, tcp) == 0;
    for (int tr = 0; tr < 2; tr++) {
        const char *tname = tr ? "tcp" : "ipc";
        char label[96], key[96];
        snprintf(label, sizeof label, "libzmq echo floor (own process), %s", tname);
        if (!echo_up) {
            not_measured(label, "the echo helper did not start");
        } else {
            target_t t = {.sys = SYS_JOBQ, .ping = true, .pipe = 1, .ep = tr ? tcp : ipc};
            others_t o;
            meas_t m;
            quiet_gate();
            measure(&t, 1, e.pid, opt_peers_seconds, &o, &m);
            snprintf(key, sizeof key, "peers.ping_%s.echo", tname);
            report(label, key, &m, "rt ", &o);
            rc |= m.errors ? -1 : 0;
        }
        /* jobq right after its floor, on the same transport */
        snprintf(label, sizeof label, "jobqd ping, %s", tname);
        snprintf(key, sizeof key, "peers.ping_%s.jobq", tname);
        target_t t = {.ping = true, .pipe = 1};
        rc |= jobq_line("none", t, tr == 1, 1, label, key);
    }
    echo_stop(&e);
    bench_rmtree(dir);
    target_t t = {.ping = true, .pipe = 1};
    rc |= peer_line(&REDIS_MEM, t, true, 1, "Redis PING, unix socket", "ping_ipc");
    rc |= peer_line(&REDIS_MEM, t, false, 1, "Redis PING, tcp", "ping_tcp");
    rc |= peer_line(&BS_MEM, t, false, 1, "beanstalkd stats-job (missing id), tcp",
                    "ping_tcp");
    rc |= peer_line(&GM_MEM, t, false, 1, "gearmand ECHO_REQ, tcp", "ping_tcp");
    return rc;
}

static int submit_lines(void)
{
    section("peers: strict submit, one at a time, 1 connection, no fsync");
    printf("  one-opcode test.delay(0) jobs, kept queued; the peers get its %zu-byte msgpack"
           " ops as the body\n",
           bs_body_len);
    bool tcp = strcmp(opt_transport, "tcp") == 0;
    target_t t = {.pipe = 1};
    int rc = jobq_line("none", t, tcp, 1, "jobqd submit_job, --sync none", "peers.submit.jobq");
    rc |= peer_line(&REDIS_MEM, t, false, 1, "Redis LPUSH, appendonly no", "submit");
    rc |= peer_line(&BS_MEM, t, false, 1, "beanstalkd put, no binlog", "submit");
    rc |= peer_line(&GM_MEM, t, false, 1, "gearmand SUBMIT_JOB_BG (memory)", "submit");

    section("peers: strict durable submit, one at a time, 1 connection, fsync each");
    rc |= jobq_line("always", t, tcp, 1, "jobqd submit_job, --sync always", "peers.durable.jobq");
    rc |= peer_line(&BS_FSYNC, t, false, 1, "beanstalkd put, -b DIR -f0", "durable");
    rc |= peer_line(&REDIS_AOF, t, false, 1, "Redis LPUSH, appendfsync always", "durable");
    rc |= peer_line(&GM_SQLITE, t, false, 1, "gearmand SUBMIT_JOB_BG, -q libsqlite3",
                    "durable");
    return rc;
}

static int batch_lines(void)
{
    section("peers: batched enqueue, no fsync");
    printf("  %d connections; jobq: submit_many_jobs of %d jobs; the peers: pipelines of %d"
           " requests\n",
           opt_clients, opt_batch, opt_batch);
    bool tcp = strcmp(opt_transport, "tcp") == 0;
    target_t t = {.pipe = opt_batch};
    char label[96];
    snprintf(label, sizeof label, "jobqd submit_many_jobs x%d, --sync none", opt_batch);
    int rc = jobq_line("none", t, tcp, opt_clients, label, "peers.batch.jobq");
    rc |= peer_line(&REDIS_MEM, t, false, opt_clients, "Redis pipelined LPUSH", "batch");
    rc |= peer_line(&BS_MEM, t, false, opt_clients, "beanstalkd pipelined put", "batch");
    rc |= peer_line(&GM_MEM, t, false, opt_clients, "gearmand pipelined SUBMIT_JOB_BG",
                    "batch");
    result_set("peers.batch.clients", opt_clients);
    result_set("peers.batch.batch", opt_batch);
    return rc;
}

/* ------------------------------------------------------------------ */
/* events to many subscribers                                           */

/* How a subscriber reads one kind of jobq event stream. A new kind (a
 * batched stream: many changes per message) is one more entry in
 * jobq_streams below: its subscription, the daemon's extra arguments, and
 * a decoder of one message. */
typedef struct {
    const char *key;   /* peers.events.<key> */
    const char *label;
    const char *topic; /* the SUB prefix */
    const char *const *daemon_args; /* NULL-terminated, may be NULL */
    /* The events in one message body: their count (0: not an event
     * message) and the seq of the first and of the last. */
    long (*decode)(const void *data, size_t n, uint64_t *first, uint64_t *last);
} jobq_stream_t;

static long decode_one_event(const void *data, size_t n, uint64_t *first, uint64_t *last)
{
    uint64_t seq;
    if (!event_seq(data, n, &seq))
        return 0;
    *first = *last = seq;
    return 1;
}

/* A batch/ message: an array of event bodies with consecutive seqs. */
static long decode_batch(const void *data, size_t n, uint64_t *first, uint64_t *last)
{
    const unsigned char *p = data;
    size_t count;
    if (!batch_header(&p, &n, &count))
        return 0;
    for (size_t e = 0; e < count; e++) {
        size_t len = mp_skip(p, n);
        uint64_t seq;
        if (!len || !event_seq(p, len, &seq))
            return 0;
        if (e == 0)
            *first = seq;
        *last = seq;
        p += len, n -= len;
    }
    return (long)count;
}

static const jobq_stream_t jobq_streams[] = {
    {"jobq_stream", "jobq stream, a change per message", "job/", NULL,
     decode_one_event},
    {"jobq_batch", "jobq batched stream (batch/)", "batch/", NULL, decode_batch},
};

typedef struct {
    uint64_t last;
    long got, missed;
    bool seen, lost; /* lost: the connection ended (a peer dropped it) */
} ssub_t;

typedef struct {
    int n;
    ssub_t *s;
    _Atomic int phase; /* 0 warm-up, 1 counting, 2 not counting, 3 exit */
    _Atomic int ready;
    long long bytes, msgs; /* jobq: message bytes and messages while counting */
} sstate_t;

/* A subscriber saw events first..last (count of them) in one message. */
static void sub_saw(sstate_t *st, ssub_t *s, uint64_t first, uint64_t last, long count,
                    int phase)
{
    if (!s->seen) {
        s->seen = true;
        atomic_fetch_add(&st->ready, 1);
    }
    if (phase == 1) {
        s->got += count;
        if (s->last && first > s->last + 1)
            s->missed += (long)(first - s->last - 1);
    }
    if (last > s->last)
        s->last = last;
}

typedef struct {
    sstate_t st;
    void **socks;
    const jobq_stream_t *kind;
    pthread_t th;
} jsubs_t;

static void *jsubs_main(void *arg)
{
    jsubs_t *js = arg;
    int n = js->st.n;
    zmq_pollitem_t *it = calloc((size_t)n, sizeof *it);
    for (int i = 0; i < n; i++)
        it[i] = (zmq_pollitem_t){.socket = js->socks[i], .events = ZMQ_POLLIN};
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    while (atomic_load(&js->st.phase) < 3) {
        if (zmq_poll(it, n, 50) <= 0)
            continue;
        int phase = atomic_load(&js->st.phase);
        for (int i = 0; i < n; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            for (int k = 0; k < 256; k++) {
                if (zmq_msg_recv(&topic, js->socks[i], ZMQ_DONTWAIT) < 0)
                    break;
                if (zmq_msg_recv(&body, js->socks[i], ZMQ_DONTWAIT) < 0)
                    break;
                uint64_t first, last;
                long cnt = js->kind->decode(zmq_msg_data(&body), zmq_msg_size(&body), &first,
                                            &last);
                if (cnt <= 0)
                    continue;
                if (phase == 1) {
                    js->st.bytes += (long long)zmq_msg_size(&body);
                    js->st.msgs++;
                }
                sub_saw(&js->st, &js->st.s[i], first, last, cnt, phase);
            }
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    free(it);
    return NULL;
}

static bool wait_ready(sstate_t *st, double timeout)
{
    double end = bench_now() + timeout;
    while (atomic_load(&st->ready) < st->n) {
        if (bench_now() > end)
            return false;
        bench_sleep(0.02); /* poll interval */
    }
    return true;
}

/* Sums the subscribers' counts over secs and reports the line. */
static void events_report(const char *label, const char *key, const sstate_t *st, double secs,
                          double published, const others_t *o)
{
    long got = 0, missed = 0, lost = 0;
    for (int i = 0; i < st->n; i++) {
        got += st->s[i].got;
        missed += st->s[i].missed;
        lost += st->s[i].lost;
    }
    double pct = got + missed ? 100.0 * (double)missed / (double)(got + missed) : NAN;
    char k[128];
    snprintf(k, sizeof k, "%s.others_cores", key);
    double noise = noise_end(o, k);
    printf("  %-40s %9.0f deliveries/s to %d subs (%.0f published/s); missed %.2f %%%s"
           "  others %.2f\n",
           label, (double)got / secs, st->n, published, pct,
           lost ? "; some subscribers dropped" : "", noise);
    set2(key, "deliveries_per_s", (double)got / secs);
    set2(key, "published_per_s", published);
    set2(key, "missed_pct", pct);
    set2(key, "dropped_subscribers", (double)lost);
}

/* One jobq stream line: jobs logging every 10 ms drive it, as in the
 * events workload. *body_bytes: the mean message size seen. */
static int jobq_events(const jobq_stream_t *kind, int nsubs, double *body_bytes)
{
    char key[96];
    snprintf(key, sizeof key, "peers.events.%s", kind->key);
    daemon_t d;
    char pub[400];
    void *ctx = new_ctx(1, 64);
    void *sctx = new_ctx(1, nsubs + 64);
    jsubs_t js = {.kind = kind};
    bool started = false;
    int rc = -1;
    jc_t *c = NULL;
    if (start_pub_daemon(&d, pub, sizeof pub, kind->daemon_args) < 0) {
        not_measured(kind->label, "jobqd did not start");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    js.st.n = nsubs;
    js.st.s = calloc((size_t)nsubs, sizeof *js.st.s);
    js.socks = calloc((size_t)nsubs, sizeof *js.socks);
    for (int i = 0; i < nsubs; i++) {
        js.socks[i] = zmq_socket(sctx, ZMQ_SUB);
        zmq_setsockopt(js.socks[i], ZMQ_SUBSCRIBE, kind->topic, strlen(kind->topic));
        zmq_connect(js.socks[i], pub);
    }
    if (pthread_create(&js.th, NULL, jsubs_main, &js) != 0)
        goto out;
    started = true;
    if (submit_batches(c, opt_ev_jobs, 0.01, LONG_REPEAT) < 0 ||
        !jc_wait_stat(c, "running", opt_ev_jobs, 30) || !wait_ready(&js.st, 20)) {
        fprintf(stderr, "jobq-bench: %s: the stream did not reach every subscriber\n",
                kind->label);
        goto out;
    }
    bench_sleep(0.5); /* load pattern: warm-up */
    others_t o;
    others_begin(&o, d.pid);
    long long p0 = jc_stat(c, "events_published");
    double t0 = bench_now();
    atomic_store(&js.st.phase, 1);
    bench_sleep(opt_peers_seconds); /* load pattern: the window */
    atomic_store(&js.st.phase, 2);
    double t1 = bench_now();
    long long p1 = jc_stat(c, "events_published");
    bench_sleep(0.1); /* the reader finishes the message in hand */
    events_report(kind->label, key, &js.st, t1 - t0, (double)(p1 - p0) / (t1 - t0), &o);
    if (js.st.msgs)
        *body_bytes = (double)js.st.bytes / (double)js.st.msgs;
    rc = 0;
out:
    if (started) {
        atomic_store(&js.st.phase, 3);
        pthread_join(js.th, NULL);
    }
    for (int i = 0; js.socks && i < nsubs; i++)
        zmq_close(js.socks[i]);
    free(js.socks);
    free(js.st.s);
    jc_close(&c);
    zmq_ctx_term(sctx);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* Redis pub/sub: n subscribers read by one thread, as jobq's are; a
 * publisher keeps 64 PUBLISH in flight, flat out. */
typedef struct {
    sstate_t st;
    pconn_t *subs;
    pconn_t pubc;
    size_t body;
    _Atomic bool stop_pub;
    _Atomic long long published;
    pthread_t rd, pb;
} rps_t;

static void *rps_reader(void *arg)
{
    rps_t *r = arg;
    int n = r->st.n;
    struct pollfd *fds = calloc((size_t)n, sizeof *fds);
    while (atomic_load(&r->st.phase) < 3) {
        for (int i = 0; i < n; i++)
            fds[i] = (struct pollfd){.fd = r->st.s[i].lost ? -1 : r->subs[i].fd,
                                     .events = POLLIN};
        if (poll(fds, (nfds_t)n, 50) <= 0)
            continue;
        int phase = atomic_load(&r->st.phase);
        for (int i = 0; i < n; i++) {
            if (!fds[i].revents)
                continue;
            pconn_t *c = &r->subs[i];
            if (pconn_fill(c) < 0) {
                r->st.s[i].lost = true;
                continue;
            }
            size_t off = 0;
            for (;;) {
                char type;
                long long iv;
                const char *b[3];
                size_t bl[3];
                int nb;
                pconn_t v = view_at(c, off);
                ssize_t used = resp_reply(&v, &type, &iv, b, bl, 3, &nb);
                if (used <= 0)
                    break;
                /* A "subscribe" confirmation is skipped: a subscriber is
                 * ready once its first message arrives. */
                if (nb == 3 && bl[0] == 7 && memcmp(b[0], "message", 7) == 0) {
                    uint64_t seq = strtoull(b[2], NULL, 10);
                    sub_saw(&r->st, &r->st.s[i], seq, seq, 1, phase);
                }
                off += (size_t)used;
            }
            pconn_consume(c, off);
        }
    }
    free(fds);
    return NULL;
}

static void *rps_publisher(void *arg)
{
    rps_t *r = arg;
    pconn_t *c = &r->pubc;
    char *payload = malloc(r->body + 32);
    long inflight = 0;
    uint64_t seq = 0;
    while (!atomic_load(&r->stop_pub)) {
        for (; inflight < 64; inflight++) {
            int h = snprintf(payload, 32, "%llu ", (unsigned long long)++seq);
            size_t len = r->body > (size_t)h ? r->body : (size_t)h;
            memset(payload + h, 'x', len - (size_t)h);
            pconn_queuef(c, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n",
                         strlen(REDIS_CHANNEL), REDIS_CHANNEL, len);
            pconn_queue(c, payload, len);
            pconn_queue(c, "\r\n", 2);
        }
        if (pconn_flush(c) < 0)
            break;
        struct pollfd p = {.fd = c->fd, .events = pconn_events(c)};
        if (poll(&p, 1, 50) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (pconn_fill(c) < 0)
            break;
        size_t off = 0;
        for (;;) {
            char type;
            long long iv;
            const char *b[1];
            size_t bl[1];
            int nb;
            pconn_t v = view_at(c, off);
            ssize_t used = resp_reply(&v, &type, &iv, b, bl, 1, &nb);
            if (used <= 0)
                break;
            off += (size_t)used;
            inflight--;
            atomic_fetch_add(&r->published, 1);
        }
        pconn_consume(c, off);
    }
    free(payload);
    return NULL;
}

static int redis_events(int nsubs, double body_bytes)
{
    const char *label = "Redis pub/sub, publisher flat out";
    const char *key = "peers.events.redis_pubsub";
    daemon_t d;
    int port;
    const char *why;
    if (peer_start(&REDIS_MEM, &d, &port, &why) < 0) {
        not_measured(label, why);
        return 0;
    }
    rps_t r = {.body = (size_t)body_bytes};
    r.st.n = nsubs;
    r.st.s = calloc((size_t)nsubs, sizeof *r.st.s);
    r.subs = calloc((size_t)nsubs, sizeof *r.subs);
    r.pubc.fd = -1;
    int opened = 0, rc = -1;
    bool rd = false, pb = false;
    for (; opened < nsubs; opened++) {
        if (pconn_open(&r.subs[opened], port) < 0)
            break;
        const char *argv[] = {"SUBSCRIBE", REDIS_CHANNEL};
        resp_cmd(&r.subs[opened], 2, argv);
        pconn_flush(&r.subs[opened]);
    }
    if (opened < nsubs || pconn_open(&r.pubc, port) < 0) {
        not_measured(label, "cannot connect");
        goto out;
    }
    rd = pthread_create(&r.rd, NULL, rps_reader, &r) == 0;
    pb = rd && pthread_create(&r.pb, NULL, rps_publisher, &r) == 0;
    if (!pb || !wait_ready(&r.st, 20)) {
        not_measured(label, "the subscribers did not receive");
        goto out;
    }
    bench_sleep(0.5); /* load pattern: warm-up */
    others_t o;
    others_begin(&o, d.pid);
    long long p0 = atomic_load(&r.published);
    double t0 = bench_now();
    atomic_store(&r.st.phase, 1);
    bench_sleep(opt_peers_seconds); /* load pattern: the window */
    atomic_store(&r.st.phase, 2);
    double t1 = bench_now();
    long long p1 = atomic_load(&r.published);
    bench_sleep(0.1);
    printf("  (Redis messages of %zu bytes: the jobq stream's mean)\n", r.body);
    events_report(label, key, &r.st, t1 - t0, (double)(p1 - p0) / (t1 - t0), &o);
    rc = 0;
out:
    atomic_store(&r.stop_pub, true);
    if (pb)
        pthread_join(r.pb, NULL);
    atomic_store(&r.st.phase, 3);
    if (rd)
        pthread_join(r.rd, NULL);
    for (int i = 0; i < opened; i++)
        pconn_close(&r.subs[i]);
    if (r.pubc.fd >= 0)
        pconn_close(&r.pubc);
    free(r.subs);
    free(r.st.s);
    daemon_stop(&d);
    return rc;
}

static int events_lines(void)
{
    section("peers: events to many subscribers");
    printf("  %d subscribers read by one thread; jobq's stream driven by %d jobs logging every"
           " 10 ms (nominal %d changes/s)\n",
           opt_ev_subs, opt_ev_jobs, opt_ev_jobs * 100);
    int rc = 0;
    double body = 150; /* the Redis message size when no jobq line measured it */
    /* Redis carries one change per message, sized as the first stream's
     * (a change per message): a batch's size would not be one change. */
    for (size_t i = 0; i < sizeof jobq_streams / sizeof *jobq_streams; i++) {
        double mean = body;
        rc |= jobq_events(&jobq_streams[i], opt_ev_subs, &mean);
        if (i == 0)
            body = mean;
    }
    rc |= redis_events(opt_ev_subs, body);
    return rc;
}

/* ------------------------------------------------------------------ */
/* heap per queued job, idle connections                                */

/* Redis INFO memory's used_memory; -1 on failure. */
static long long redis_used_memory(int port)
{
    pconn_t c;
    if (pconn_open(&c, port) < 0)
        return -1;
    const char *argv[] = {"INFO", "memory"};
    resp_cmd(&c, 2, argv);
    long long v = -1;
    double end = bench_now() + 5;
    while (bench_now() < end) {
        pconn_flush(&c);
        struct pollfd p = {.fd = c.fd, .events = pconn_events(&c)};
        poll(&p, 1, 50);
        if (pconn_fill(&c) < 0)
            break;
        char type;
        long long iv;
        const char *b[1];
        size_t bl[1];
        int nb;
        if (resp_reply(&c, &type, &iv, b, bl, 1, &nb) > 0) {
            if (nb == 1) {
                char *s = strndup(b[0], bl[0]);
                const char *m = s ? strstr(s, "used_memory:") : NULL;
                if (m)
                    v = strtoll(m + 12, NULL, 10);
                free(s);
            }
            break;
        }
    }
    pconn_close(&c);
    return v;
}

/* Queues n jobs on a peer with pipelines of opt_batch; the jobs queued. */
static long peer_fill(sys_t sys, int port, long n)
{
    target_t t = {.sys = sys, .pipe = opt_batch, .port = port};
    client_t c;
    long done = 0;
    if (client_open(&c, &t, NULL) == 0) {
        target_t last = t;
        while (done < n) {
            if (n - done < opt_batch) { /* the tail: a shorter pipeline */
                free(c.req);
                last.pipe = n - done;
                pconn_t b;
                memset(&b, 0, sizeof b);
                b.fd = -1;
                for (long i = 0; i < last.pipe; i++)
                    peer_request(&last, &b);
                c.req = b.out;
                c.req_len = b.out_len;
                c.t = &last;
            }
            if (client_op(&c) < 0) {
                fprintf(stderr, "jobq-bench: filling: %s\n", c.err);
                break;
            }
            done += c.t->pipe;
        }
    }
    client_close(&c);
    return done;
}

static void heap_line(const pkind_t *k, long n)
{
    char label[96], key[96];
    snprintf(label, sizeof label, "%s", k->label);
    snprintf(key, sizeof key, "peers.heap.%s", k->key);
    daemon_t d;
    int port;
    const char *why;
    if (peer_start(k, &d, &port, &why) < 0) {
        not_measured(label, why);
        return;
    }
    long long um0 = k->sys == SYS_REDIS ? redis_used_memory(port) : -1;
    long rss0 = proc_rss_settled(d.pid, 3);
    long done = peer_fill(k->sys, port, n);
    long rss1 = proc_rss_settled(d.pid, 10);
    long long um1 = k->sys == SYS_REDIS ? redis_used_memory(port) : -1;
    double rss_per = done ? (double)(rss1 - rss0) * 1024.0 / (double)done : NAN;
    double per = rss_per;
    if (um0 >= 0 && um1 >= 0 && done) {
        per = (double)(um1 - um0) / (double)done;
        printf("  %-40s %9.0f B per queued job (INFO used_memory; RSS %.0f B) over %ld"
               " LPUSH\n",
               label, per, rss_per, done);
    } else {
        printf("  %-40s %9.0f B per queued job (RSS %ld -> %ld kB) over %ld jobs\n", label, per,
               rss0, rss1, done);
    }
    set2(key, "bytes_per_job", per);
    set2(key, "rss_bytes_per_job", rss_per);
    daemon_stop(&d);
}

static int heap_lines(void)
{
    section("peers: heap per queued one-opcode job");
    long n = opt_peers_mem_jobs;
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    char mj[32];
    int rc = -1;
    /* jobqd's replay ring (--ring-events, 65536 by default) holds the latest
     * events whatever the queue holds: a fixed cost, filled before the
     * baseline so the figure is what one more queued job costs. */
    long ring = 70000;
    snprintf(mj, sizeof mj, "%ld", n + ring + 1000);
    if (start_blocked_daemon(&d, &c, ctx, mj) == 0 && submit_batches(c, ring, 0, 0) == 0) {
        long rss0 = proc_rss_settled(d.pid, 3);
        long anon0 = proc_status_kb(d.pid, "RssAnon");
        if (submit_batches(c, n, 0, 0) == 0) {
            long rss1 = proc_rss_settled(d.pid, 10);
            long anon1 = proc_status_kb(d.pid, "RssAnon");
            double per = (double)(anon1 - anon0) * 1024.0 / (double)n;
            printf("  %-40s %9.0f B per queued job (RssAnon %ld -> %ld kB; RSS %ld -> %ld kB)"
                   " over %ld jobs after %ld\n",
                   "jobqd", per, anon0, anon1, rss0, rss1, n, ring);
            result_set("peers.heap.jobq.bytes_per_job", per);
            result_set("peers.heap.jobq.rss_bytes_per_job",
                       (double)(rss1 - rss0) * 1024.0 / (double)n);
            rc = 0;
        }
    }
    if (rc < 0)
        not_measured("jobqd", "jobqd did not start or refused jobs");
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    heap_line(&REDIS_MEM, n);
    heap_line(&BS_MEM, n);
    heap_line(&GM_MEM, n);
    return rc;
}

static void idle_peer(const pkind_t *k, long n)
{
    char key[96];
    snprintf(key, sizeof key, "peers.idle.%s", k->key);
    daemon_t d;
    int port;
    const char *why;
    if (peer_start(k, &d, &port, &why) < 0) {
        not_measured(k->label, why);
        return;
    }
    long made;
    double per = idle_tcp_cost(d.pid, port, n, &made, NULL, NULL);
    printf("  %-40s %9.0f B per idle TCP connection (%ld connections)\n", k->label, per, made);
    set2(key, "bytes_per_conn", per);
    daemon_stop(&d);
}

static int idle_lines(void)
{
    section("peers: RSS per idle connection");
    long n = opt_peers_idle;
    daemon_t d;
    int rc = -1;
    quiet_gate();
    if (jobqd_start(&d, NULL) == 0) {
        long made;
        double per = idle_zmq_cost(d.pid, d.endpoint, n, &made);
        printf("  %-40s %9.0f B per idle DEALER connection (%ld connections, %s)\n", "jobqd",
               per, made, opt_transport);
        result_set("peers.idle.jobq.bytes_per_conn", per);
        rc = 0;
    } else {
        not_measured("jobqd", "jobqd did not start");
    }
    daemon_stop(&d);
    idle_peer(&REDIS_MEM, n);
    idle_peer(&BS_MEM, n);
    idle_peer(&GM_MEM, n);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the table                                                            */

typedef struct {
    const char *key;   /* peers.<line>.<key> */
    const char *name;
} peer_name_t;

/* The best measured peer of a line by `metric` (highest or lowest); its
 * index in peers, -1 when none was measured. */
static int best_peer(const char *line, const peer_name_t *peers, int n, const char *metric,
                     bool higher, double *best)
{
    int bi = -1;
    for (int i = 0; i < n; i++) {
        char k[128];
        snprintf(k, sizeof k, "peers.%s.%s", line, peers[i].key);
        double v = get2(k, metric);
        if (isnan(v))
            continue;
        if (bi < 0 || (higher ? v > *best : v < *best)) {
            bi = i;
            *best = v;
        }
    }
    return bi;
}

static void fmt_value(char *buf, size_t len, double v, const char *unit)
{
    if (isnan(v))
        snprintf(buf, len, "not measured");
    else if (strcmp(unit, "/s") == 0 && v >= 1e6)
        snprintf(buf, len, "%.2fM/s", v / 1e6);
    else if (strcmp(unit, "/s") == 0 && v >= 1e4)
        snprintf(buf, len, "%.1fk/s", v / 1e3);
    else
        snprintf(buf, len, "%.0f%s", v, unit);
}

/* A printf width for s that pads to `width` columns: printf counts bytes,
 * and µ takes two. */
static int cols(const char *s, int width)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == 0xc2)
            width++;
    return width;
}

/* One row: jobq's figure, the best peer's, and jobq / best. */
static void table_row(const char *what, const char *line, const char *jkey, const char *metric,
                      const char *unit, bool higher, const peer_name_t *peers, int n,
                      const char *rkey)
{
    char k[128], jv[64], pv[128], ratio[48];
    snprintf(k, sizeof k, "peers.%s.%s", line, jkey);
    double j = get2(k, metric), b = NAN;
    int bi = best_peer(line, peers, n, metric, higher, &b);
    fmt_value(jv, sizeof jv, j, unit);
    /* The events lines also say what the subscribers missed. */
    bool ev = strcmp(metric, "deliveries_per_s") == 0;
    if (ev && !isnan(j))
        snprintf(jv + strlen(jv), sizeof jv - strlen(jv), ", %.1f %% missed",
                 get2(k, "missed_pct"));
    if (bi < 0) {
        snprintf(pv, sizeof pv, "not measured");
    } else {
        char v[48];
        fmt_value(v, sizeof v, b, unit);
        snprintf(pv, sizeof pv, "%s %s", peers[bi].name, v);
        if (ev) {
            snprintf(k, sizeof k, "peers.%s.%s", line, peers[bi].key);
            snprintf(pv + strlen(pv), sizeof pv - strlen(pv), ", %.1f %% missed",
                     get2(k, "missed_pct"));
        }
    }
    double r = j / b;
    if (isnan(r))
        snprintf(ratio, sizeof ratio, "-");
    else
        snprintf(ratio, sizeof ratio, "%.2fx (%s better)", r, higher ? "higher" : "lower");
    printf("  | %-38s | %-*s | %-*s | %-22s |\n", what, cols(jv, 24), jv, cols(pv, 44), pv,
           ratio);
    result_set(rkey, r);
}

static void cost_rows(const char *what, const char *line, const peer_name_t *sys, int n)
{
    for (int i = 0; i < n; i++) {
        char k[128];
        snprintf(k, sizeof k, "peers.%s.%s", line, sys[i].key);
        double w = get2(k, "wakeups_per_req");
        if (isnan(get2(k, "p50_us")))
            continue;
        printf("  | %-30s | %-26s | %10.1f | %10.1f | %10.2f |\n", what, sys[i].name, w,
               get2(k, "cpu_us_per_req"), get2(k, "cpu_us_per_job"));
    }
}

static void table(void)
{
    section("peers: side by side (jobq / best peer)");
    static const peer_name_t ping_ipc[] = {{"redis_unix", "Redis unix"}};
    static const peer_name_t ping_tcp[] = {
        {"redis", "Redis"}, {"beanstalkd", "beanstalkd"}, {"gearmand", "gearmand"}};
    static const peer_name_t submit[] = {
        {"redis", "Redis LPUSH"}, {"beanstalkd", "beanstalkd put"}, {"gearmand", "gearmand BG"}};
    static const peer_name_t durable[] = {{"beanstalkd_fsync", "beanstalkd -f0"},
                                          {"redis_aof_always", "Redis AOF always"},
                                          {"gearmand_sqlite", "gearmand sqlite"}};
    static const peer_name_t batch[] = {{"redis", "Redis pipelined"},
                                        {"beanstalkd", "beanstalkd pipelined"},
                                        {"gearmand", "gearmand pipelined"}};
    static const peer_name_t events[] = {{"redis_pubsub", "Redis pub/sub"}};
    static const peer_name_t mem[] = {
        {"redis", "Redis"}, {"beanstalkd", "beanstalkd"}, {"gearmand", "gearmand"}};
    printf("  | %-38s | %-24s | %-44s | %-22s |\n", "workload", "jobq", "best peer",
           "ratio jobq / best");
    printf("  |%s|%s|%s|%s|\n", "----------------------------------------",
           "--------------------------", "----------------------------------------------",
           "------------------------");
    table_row("strict ping, 1 conn, ipc/unix, p50", "ping_ipc", "jobq", "p50_us", " µs", false, ping_ipc,
              1, "peers.ratio.ping_ipc");
    table_row("strict ping, 1 conn, tcp, p50", "ping_tcp", "jobq", "p50_us", " µs", false, ping_tcp, 3,
              "peers.ratio.ping_tcp");
    table_row("strict submit, --sync none", "submit", "jobq", "per_s", "/s", true, submit, 3,
              "peers.ratio.submit");
    table_row("strict submit, durable", "durable", "jobq", "per_s", "/s", true, durable, 3,
              "peers.ratio.durable");
    char what[96];
    snprintf(what, sizeof what, "batched enqueue, no fsync, %d clients", opt_clients);
    table_row(what, "batch", "jobq", "per_s", "/s", true, batch, 3, "peers.ratio.batch");
    /* events: a row per jobq stream kind (jobq_streams) */
    for (size_t i = 0; i < sizeof jobq_streams / sizeof *jobq_streams; i++) {
        char rk[96];
        snprintf(what, sizeof what, "events to %d subs, %s", opt_ev_subs, jobq_streams[i].key);
        snprintf(rk, sizeof rk, "peers.ratio.events_%s", jobq_streams[i].key);
        table_row(what, "events", jobq_streams[i].key, "deliveries_per_s", "/s", true, events, 1,
                  rk);
    }
    table_row("heap per queued job", "heap", "jobq", "bytes_per_job", " B", false, mem, 3,
              "peers.ratio.heap");
    table_row("RSS per idle connection", "idle", "jobq", "bytes_per_conn", " B", false, mem, 3,
              "peers.ratio.idle");

    printf("\n  jobq ping against the bare libzmq echo (own process, same transport);"
           " target <= 1.15x:\n");
    for (int tr = 0; tr < 2; tr++) {
        const char *tn = tr ? "tcp" : "ipc";
        char k1[64], k2[64];
        snprintf(k1, sizeof k1, "peers.ping_%s.jobq", tn);
        snprintf(k2, sizeof k2, "peers.ping_%s.echo", tn);
        double j = get2(k1, "p50_us"), e = get2(k2, "p50_us");
        double r = j / e;
        printf("    %s: jobq p50 %.1f µs, echo p50 %.1f µs: %.2fx  %s\n", tn, j, e, r,
               isnan(r) ? "-" : r <= 1.15 ? "met" : "NOT met");
        char rk[64];
        snprintf(rk, sizeof rk, "peers.ratio.ping_%s_echo", tn);
        result_set(rk, r);
    }

    printf("\n  server cost per request (wake-ups: context switches of all its threads;"
           " CPU: utime+stime), over each window:\n");
    printf("  | %-30s | %-26s | %10s | %10s | %10s |\n", "line", "server", "wake-ups",
           "CPU µs/req", "CPU µs/job");
    static const peer_name_t ipc_sys[] = {{"jobq", "jobqd"}, {"echo", "libzmq echo"},
                                          {"redis_unix", "Redis"}};
    static const peer_name_t tcp_sys[] = {{"jobq", "jobqd"},
                                          {"echo", "libzmq echo"},
                                          {"redis", "Redis"},
                                          {"beanstalkd", "beanstalkd"},
                                          {"gearmand", "gearmand"}};
    static const peer_name_t sub_sys[] = {{"jobq", "jobqd --sync none"},
                                          {"redis", "Redis"},
                                          {"beanstalkd", "beanstalkd"},
                                          {"gearmand", "gearmand"}};
    static const peer_name_t dur_sys[] = {{"jobq", "jobqd --sync always"},
                                          {"beanstalkd_fsync", "beanstalkd -f0"},
                                          {"redis_aof_always", "Redis AOF always"},
                                          {"gearmand_sqlite", "gearmand sqlite"}};
    static const peer_name_t bat_sys[] = {{"jobq", "jobqd"},
                                          {"redis", "Redis"},
                                          {"beanstalkd", "beanstalkd"},
                                          {"gearmand", "gearmand"}};
    cost_rows("strict ping, ipc", "ping_ipc", ipc_sys, 3);
    cost_rows("strict ping, tcp", "ping_tcp", tcp_sys, 5);
    cost_rows("strict submit, no fsync", "submit", sub_sys, 4);
    cost_rows("strict submit, durable", "durable", dur_sys, 4);
    snprintf(what, sizeof what, "batched, %d per request", opt_batch);
    cost_rows(what, "batch", bat_sys, 4);
}

int workload_peers(void)
{
    section("peers: jobq side by side with Redis, beanstalkd and gearmand (issue 14)");
    printf("  %.1f s per line; every server fresh per line, on 127.0.0.1 (Redis also on a unix"
           " socket); jobq's submit lines over %s\n",
           opt_peers_seconds, opt_transport);
    int rc = 0;
    rc |= ping_lines();
    rc |= submit_lines();
    rc |= batch_lines();
    rc |= events_lines();
    rc |= heap_lines();
    rc |= idle_lines();
    table();
    return rc ? -1 : 0;
}
