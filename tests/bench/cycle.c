/* cycle.c: workload 10, the full cycle of a remote job (issue 9): submit, a
 * worker runs a no-op, a watcher sees `success` — jobs/s and submit ->
 * success latency — with 1, 4 and 16 worker connections under --sync
 * always and none; then worker-loss detection and cancel latency. The same
 * cycle on beanstalkd, Redis streams and gearmand is in cycle_peers.c; the
 * run state every system shares (window, completions) is here.
 *
 * jobq side: the workers speak the worker protocol raw (jworker.c: one
 * thread drives every worker connection, capacity 1 each, opcode
 * `bench.noop`, `done` with the job's own argument `t` as result); the
 * producer pipelines submit_job on a raw DEALER (jclient.c); the watcher is
 * a SUB on the events endpoint that reads `update` records whose status is
 * `success` and takes the submit time back from the opcode's result. */
#include "cycle.h"

#include "jworker.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <zmq.h>

#define NOOP_OP "bench.noop"
#define HOLD_OP "bench.hold" /* the cancel and loss jobs: held until told */
#define DRAIN_SECONDS 10.0

/* ------------------------------------------------------------------ */
/* the shared run state                                                */

int cycle_init(cycle_t *cy, long window)
{
    memset(cy, 0, sizeof *cy);
    cy->window = window;
    cy->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return cy->efd < 0 ? -1 : 0;
}

void cycle_free(cycle_t *cy)
{
    if (cy->efd >= 0)
        close(cy->efd);
    free(cy->t_done);
    free(cy->lat);
    memset(cy, 0, sizeof *cy);
    cy->efd = -1;
}

static void wake_producer(cycle_t *cy)
{
    /* seq_cst: either the producer sees the new `done` after arming, or we
     * see it armed here (cycle_sleep). */
    if (atomic_load(&cy->sleeping)) {
        uint64_t one = 1;
        if (write(cy->efd, &one, sizeof one) < 0) {
            /* EAGAIN: a wake-up is pending already */
        }
    }
}

void cycle_complete(cycle_t *cy, double t_submit)
{
    double now = bench_now();
    if (cy->n == cy->cap) {
        size_t cap = cy->cap ? cy->cap * 2 : 65536;
        double *a = realloc(cy->t_done, cap * sizeof *a);
        if (a)
            cy->t_done = a;
        double *b = realloc(cy->lat, cap * sizeof *b);
        if (b)
            cy->lat = b;
        if (a && b)
            cy->cap = cap;
    }
    if (cy->n < cy->cap) {
        cy->t_done[cy->n] = now;
        cy->lat[cy->n] = now - t_submit;
        cy->n++;
    }
    atomic_fetch_add(&cy->done, 1);
    wake_producer(cy);
}

void cycle_failed(cycle_t *cy)
{
    atomic_fetch_add(&cy->errors, 1);
    atomic_fetch_add(&cy->done, 1);
    wake_producer(cy);
}

long cycle_room(cycle_t *cy)
{
    if (atomic_load(&cy->stop_submit))
        return 0;
    long room = cy->window - (atomic_load(&cy->submitted) - atomic_load(&cy->done));
    return room > 0 ? room : 0;
}

bool cycle_sleep(cycle_t *cy)
{
    atomic_store(&cy->sleeping, true);
    if (cycle_room(cy) > 0 || atomic_load(&cy->stop_submit)) {
        atomic_store(&cy->sleeping, false);
        return false;
    }
    return true;
}

void cycle_woken(cycle_t *cy)
{
    uint64_t v;
    if (read(cy->efd, &v, sizeof v) < 0) {
        /* nothing pending */
    }
    atomic_store(&cy->sleeping, false);
}

int cycle_stamp(char *buf, size_t len, double t)
{
    return snprintf(buf, len, "%.9f", t);
}

int cycle_measure(cycle_t *cy, double seconds, others_t *o, pid_t daemon, cycle_result_t *r)
{
    memset(r, 0, sizeof *r);
    /* Warm-up: connections, caches, the daemon's first allocations. */
    bench_sleep(seconds < 1 ? seconds / 2 : 0.5);
    if (cy->mark)
        cy->mark(cy->mark_arg, 0);
    others_begin(o, daemon);
    double d0 = proc_cpu_seconds(daemon), b0 = proc_cpu_seconds(getpid());
    r->t0 = bench_now();
    bench_sleep(seconds); /* the measured window */
    r->t1 = bench_now();
    r->daemon_cores = (proc_cpu_seconds(daemon) - d0) / (r->t1 - r->t0);
    r->bench_cores = (proc_cpu_seconds(getpid()) - b0) / (r->t1 - r->t0);
    if (cy->mark)
        cy->mark(cy->mark_arg, 1);
    atomic_store(&cy->stop_submit, true);
    double end = bench_now() + DRAIN_SECONDS;
    while (atomic_load(&cy->done) < atomic_load(&cy->submitted) && bench_now() < end)
        bench_sleep(0.005); /* poll interval */
    r->lost = atomic_load(&cy->submitted) - atomic_load(&cy->done);
    r->errors = atomic_load(&cy->errors);
    atomic_store(&cy->stop, true);
    return r->lost ? -1 : 0;
}

/* After the threads are joined: the completions inside the window. */
void cycle_summarize(cycle_t *cy, cycle_result_t *r)
{
    double t0 = r->t0, t1 = r->t1;
    samples_t s = {0};
    for (size_t i = 0; i < cy->n; i++)
        if (cy->t_done[i] >= t0 && cy->t_done[i] < t1)
            samples_add(&s, cy->lat[i] * 1e3);
    r->jobs = (long)s.n;
    r->rate = (double)s.n / (t1 - t0);
    r->p50 = samples_pct(&s, 50);
    r->p99 = samples_pct(&s, 99);
    samples_free(&s);
}

void cycle_report(const char *label, const char *key, const cycle_result_t *r,
                  const others_t *o)
{
    char k[128];
    snprintf(k, sizeof k, "%s.others_cores", key);
    double noise = noise_end(o, k);
    printf("  %-54s %7.0f jobs/s  p50 %7.3f ms  p99 %7.3f ms  daemon %.2f bench %.2f others"
           " %.2f%s\n",
           label, r->rate, r->p50, r->p99, r->daemon_cores, r->bench_cores, noise,
           r->errors || r->lost ? "  (ERRORS)" : "");
    if (r->errors || r->lost)
        printf("    %ld errors, %ld jobs never seen complete\n", r->errors, r->lost);
    snprintf(k, sizeof k, "%s.per_s", key);
    result_set(k, r->rate);
    snprintf(k, sizeof k, "%s.p50_ms", key);
    result_set(k, r->p50);
    snprintf(k, sizeof k, "%s.p99_ms", key);
    result_set(k, r->p99);
    snprintf(k, sizeof k, "%s.daemon_cores", key);
    result_set(k, r->daemon_cores);
    snprintf(k, sizeof k, "%s.bench_cores", key);
    result_set(k, r->bench_cores);
}

int cycle_quiet_line(int (*line)(void *arg), void *arg, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s.others_cores", key);
    int rc = -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        rc = line(arg);
        double noise = result_get(k);
        if (rc < 0 || isnan(noise) || noise < 0.25)
            break;
        if (attempt < 2)
            printf("    (other processes used %.2f cores: measured again)\n", noise);
    }
    return rc;
}

void cycle_not_measured(const char *label, const char *key, const char *why)
{
    printf("  %-54s not measured: %s\n", label, why);
    char k[128];
    snprintf(k, sizeof k, "%s.per_s", key);
    result_set(k, NAN);
}

/* ------------------------------------------------------------------ */
/* jobq: producer, workers, watcher                                    */

typedef struct {
    cycle_t *cy;
    void *ctx;
    const char *endpoint; /* client requests */
    const char *pub;      /* events */
    jw_t **workers;
    int nworkers;
    void *sub; /* opened by main (live before the run), used by the watcher */
    long missed; /* watcher: events lost to gaps in seq */
    long events; /* watcher: job events received */
} jrun_t;

static void pack_noop_job(msgpack_packer *pk, const char *op, double t)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 2);
    wire_pack_cstr(pk, "op");
    wire_pack_cstr(pk, op);
    wire_pack_cstr(pk, "args");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "t");
    msgpack_pack_double(pk, t);
}

static uint64_t submit_one(jc_t *c, const char *op, double t, int retry)
{
    msgpack_packer *pk = jc_begin(c, "submit_job");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "ops");
    if (retry < 0) {
        pack_noop_job(pk, op, t);
    } else {
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 3);
        wire_pack_cstr(pk, "op");
        wire_pack_cstr(pk, op);
        wire_pack_cstr(pk, "args");
        msgpack_pack_map(pk, 0);
        wire_pack_cstr(pk, "retry");
        msgpack_pack_int(pk, retry);
    }
    int64_t id;
    if (jc_call(c, 10000) < 0 || !wire_get_int(c->rep.result, &id)) {
        fprintf(stderr, "jobq-bench: submit_job of %s failed: %s\n", op, c->errbuf);
        return 0;
    }
    return (uint64_t)id;
}

static void *jproducer_main(void *arg)
{
    jrun_t *jr = arg;
    cycle_t *cy = jr->cy;
    jc_t *c = jc_open(jr->ctx, jr->endpoint);
    if (!c) {
        atomic_fetch_add(&cy->errors, 1);
        return NULL;
    }
    zmq_pollitem_t it[2] = {{.socket = c->sock, .events = ZMQ_POLLIN},
                            {.fd = cy->efd, .events = ZMQ_POLLIN}};
    while (!atomic_load(&cy->stop)) {
        long k = cycle_room(cy);
        for (long i = 0; i < k; i++) {
            msgpack_packer *pk = jc_begin(c, "submit_job");
            msgpack_pack_map(pk, 1);
            wire_pack_cstr(pk, "ops");
            pack_noop_job(pk, NOOP_OP, bench_now());
            atomic_fetch_add(&cy->submitted, 1);
            if (jc_send(c) < 0)
                atomic_fetch_add(&cy->errors, 1);
        }
        bool armed = cycle_sleep(cy);
        int wait = armed || atomic_load(&cy->stop_submit) ? 50 : 0;
        if (zmq_poll(it, armed ? 2 : 1, wait) < 0 && errno != EINTR)
            break;
        if (armed)
            cycle_woken(cy);
        while (jc_recv(c, 0) == 0)
            if (!c->rep.ok && !c->rep.keepalive) {
                if (atomic_fetch_add(&cy->errors, 1) == 0)
                    fprintf(stderr, "jobq-bench: submit_job refused: %s: %.*s\n",
                            jobq_code_name(c->rep.code), (int)c->rep.message_len,
                            c->rep.message ? c->rep.message : "");
                cycle_failed(cy); /* never runs: room in the window */
            }
    }
    jc_close(&c);
    return NULL;
}

/* Answers every assign at once: done, result = the job's argument t. */
static void *jworkers_main(void *arg)
{
    jrun_t *jr = arg;
    cycle_t *cy = jr->cy;
    int n = jr->nworkers;
    zmq_pollitem_t *it = calloc((size_t)n, sizeof *it);
    for (int i = 0; i < n; i++)
        it[i] = (zmq_pollitem_t){.socket = jr->workers[i]->sock, .events = ZMQ_POLLIN};
    while (!atomic_load(&cy->stop)) {
        int r = zmq_poll(it, n, 50);
        double now = bench_now();
        for (int i = 0; i < n; i++) {
            jw_t *w = jr->workers[i];
            if (r > 0 && (it[i].revents & ZMQ_POLLIN)) {
                jw_msg_t m;
                int got;
                while ((got = jw_recv(w, &m, 0)) != 0) {
                    if (got < 0 || m.type == JW_ERROR || m.type == JW_REVOKE ||
                        m.type == JW_DISCONNECT) {
                        if (atomic_fetch_add(&cy->errors, 1) == 0)
                            fprintf(stderr, "jobq-bench: worker %d: unexpected message (%s)\n",
                                    i, got < 0 ? w->errbuf : "error/revoke/disconnect");
                        continue;
                    }
                    if (m.type == JW_ASSIGN || m.type == JW_CANCEL)
                        jw_done(w, m.job, m.op, m.attempt,
                                m.args ? wire_map_get(m.args, "t") : NULL);
                }
            }
            jw_keepalive(w, now);
        }
    }
    free(it);
    return NULL;
}

/* One job event: 1 and *t when it is the update to success, 2 when the job
 * ended otherwise, 0 for any other event; *seq its sequence number. */
static int event_outcome(msgpack_unpacked *up, const void *data, size_t n, double *t,
                         uint64_t *seq, uint64_t *job)
{
    if (msgpack_unpack_next(up, data, n, NULL) != MSGPACK_UNPACK_SUCCESS)
        return 0;
    int64_t v;
    *seq = wire_get_int(wire_map_get(&up->data, "seq"), &v) ? (uint64_t)v : 0;
    const msgpack_object *ch = wire_map_get(&up->data, "change");
    if (!ch || !wire_str_eq(wire_map_get(ch, "kind"), "update"))
        return 0;
    *job = wire_get_int(wire_map_get(ch, "job"), &v) ? (uint64_t)v : 0;
    const msgpack_object *st = wire_map_get(ch, "status");
    if (wire_str_eq(st, "success")) {
        const msgpack_object *ops = wire_map_get(ch, "ops");
        *t = NAN;
        if (ops && ops->type == MSGPACK_OBJECT_ARRAY && ops->via.array.size >= 1)
            wire_get_number(wire_map_get(&ops->via.array.ptr[0], "result"), t);
        return 1;
    }
    if (wire_str_eq(st, "error") || wire_str_eq(st, "canceled"))
        return 2;
    return 0;
}

static void *jwatcher_main(void *arg)
{
    jrun_t *jr = arg;
    cycle_t *cy = jr->cy;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    zmq_pollitem_t it = {.socket = jr->sub, .events = ZMQ_POLLIN};
    uint64_t last = 0;
    while (!atomic_load(&cy->stop)) {
        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        while (zmq_msg_recv(&topic, jr->sub, ZMQ_DONTWAIT) >= 0) {
            if (zmq_msg_recv(&body, jr->sub, ZMQ_DONTWAIT) < 0)
                break;
            double t;
            uint64_t seq = 0, job = 0;
            int o = event_outcome(&up, zmq_msg_data(&body), zmq_msg_size(&body), &t, &seq, &job);
            jr->events++;
            if (last && seq > last + 1)
                jr->missed += (long)(seq - last - 1);
            if (seq > last)
                last = seq;
            if (o == 1 && !isnan(t))
                cycle_complete(cy, t);
            else if (o != 0)
                cycle_failed(cy);
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    msgpack_unpacked_destroy(&up);
    return NULL;
}

/* A SUB on pub subscribed to job/<id>/ prefixes given ("job/" for all). */
static void *open_sub(void *ctx, const char *pub, const char *prefix)
{
    void *s = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0, hwm = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_SUBSCRIBE, prefix, strlen(prefix));
    if (bench_curve_apply(s, pub, false) < 0 || zmq_connect(s, pub) < 0) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Wait on sub for job's final event; returns 1 success, 2 other final
 * status, 0 on timeout. *when: receipt time. */
static int wait_final(void *sub, uint64_t job, double timeout, double *when)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    double end = bench_now() + timeout;
    int rc = 0;
    zmq_pollitem_t it = {.socket = sub, .events = ZMQ_POLLIN};
    while (!rc && bench_now() < end) {
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        while (!rc && zmq_msg_recv(&topic, sub, ZMQ_DONTWAIT) >= 0) {
            if (zmq_msg_recv(&body, sub, ZMQ_DONTWAIT) < 0)
                break;
            double t;
            uint64_t seq, j = 0;
            int o = event_outcome(&up, zmq_msg_data(&body), zmq_msg_size(&body), &t, &seq, &j);
            if (o && j == job) {
                rc = o;
                *when = bench_now();
            }
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* Until sub receives events: a subscription is live only some time after
 * the connect (ZeroMQ's slow joiner), so a built-in test.delay(0) job is
 * submitted until its end is seen. false after 10 s. */
static bool sub_live(jc_t *c, void *sub)
{
    for (int i = 0; i < 20; i++) {
        uint64_t id = jc_submit_delay(c, 0, 0);
        double when;
        if (!id)
            return false;
        if (wait_final(sub, id, 0.5, &when))
            return true;
    }
    fprintf(stderr, "jobq-bench: no event reached the subscriber in 10 s\n");
    return false;
}

/* jobqd with events (start_pub_daemon) and a worker endpoint: tcp on a
 * free port with --transport tcp, the data directory's workers.sock
 * otherwise; more: extra arguments. */
int cycle_start_worker_daemon(daemon_t *d, char *pub, size_t plen, char *wep, size_t wlen,
                              const char *const *more)
{
    const char *extra[24];
    int n = 0;
    char warg[64];
    bool tcp = strcmp(opt_transport, "tcp") == 0;
    if (tcp) {
        snprintf(warg, sizeof warg, "tcp://127.0.0.1:%d", free_tcp_port());
        extra[n++] = "--workers";
        extra[n++] = warg;
    }
    for (int i = 0; more && more[i] && n < 22; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    if (start_pub_daemon(d, pub, plen, extra) < 0)
        return -1;
    if (tcp)
        snprintf(wep, wlen, "%s", warg);
    else
        snprintf(wep, wlen, "ipc://%s/workers.sock", d->dir);
    return 0;
}

/* The store's counters at the window's edges (jobq lines). */
typedef struct {
    jc_t *c;
    pid_t pid;
    store_stats_t s[2];
    int ok[2];
    thread_cpu_t th[2][64]; /* the daemon's threads: where its CPU goes */
    int nth[2];
    double kids[2]; /* CPU seconds of the bench's child processes (external workers) */
} jmark_t;

static void jobq_mark(void *arg, int edge)
{
    jmark_t *m = arg;
    m->nth[edge] = proc_threads_cpu(m->pid, m->th[edge], 64);
    m->kids[edge] = bench_children_cpu();
    m->ok[edge] = jc_store_stats(m->c, &m->s[edge]) == 0;
}

/* "name 0.41, name 0.20, ..." of the daemon's threads over the window,
 * busiest first, those above 0.02 cores. */
static void jobq_threads(const jmark_t *m, double secs, char *out, size_t len)
{
    struct {
        const char *name;
        double cores;
    } t[64];
    int n = 0;
    for (int i = 0; i < m->nth[1]; i++)
        for (int j = 0; j < m->nth[0]; j++)
            if (m->th[1][i].tid == m->th[0][j].tid) {
                t[n].name = m->th[1][i].name;
                t[n++].cores = (m->th[1][i].cpu - m->th[0][j].cpu) / secs;
            }
    for (int i = 1; i < n; i++) /* insertion sort, busiest first */
        for (int j = i; j > 0 && t[j].cores > t[j - 1].cores; j--) {
            __typeof__(t[0]) x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    size_t off = 0;
    out[0] = '\0';
    for (int i = 0; i < n && t[i].cores > 0.02 && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s %.2f", i ? ", " : "", t[i].name,
                                t[i].cores);
}

int cycle_jobq_line(const char *sync, int nworkers, long window, const char *label,
                    const char *key, const cycle_ext_t *ext)
{
    daemon_t d;
    char pub[400], wep[400];
    const char *more[] = {"--sync", sync, NULL};
    if (cycle_start_worker_daemon(&d, pub, sizeof pub, wep, sizeof wep, more) < 0)
        return -1;
    int rc = cycle_jobq_on(&d, pub, wep, nworkers, window, label, key, ext);
    daemon_stop(&d);
    return rc;
}

int cycle_jobq_on(const daemon_t *dp, const char *pub, const char *wep, int nworkers,
                  long window, const char *label, const char *key, const cycle_ext_t *ext)
{
    const daemon_t d = *dp;
    void *ctx = new_ctx(1, nworkers + 64);
    int rc = -1;
    cycle_t cy;
    cycle_init(&cy, window);
    jrun_t jr = {.cy = &cy, .ctx = ctx, .endpoint = d.endpoint, .pub = pub,
                 .nworkers = nworkers};
    jr.workers = calloc((size_t)nworkers, sizeof *jr.workers);
    jc_t *c = jc_open(ctx, d.endpoint);
    pthread_t tw, tp, tv;
    bool workers_on = false, run_on = false, ext_on = false;
    const char *ops[] = {NOOP_OP};
    if (ext) {
        ext_on = true; /* stopped at the end even when only some started */
        if (ext->start(ext->arg, wep, nworkers) < 0)
            goto out;
        /* Every process has said hello and was welcomed. */
        double end = bench_now() + 30;
        long long n = 0;
        while ((n = jc_stat2(c, "workers", "connected")) < nworkers && bench_now() < end)
            bench_sleep(0.05); /* poll interval */
        if (n < nworkers) {
            fprintf(stderr, "jobq-bench: %lld of %d worker processes connected in 30 s\n", n,
                    nworkers);
            goto out;
        }
    }
    for (int i = 0; !ext && i < nworkers; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-%d", i);
        jr.workers[i] = jw_open(ctx, wep);
        if (!jr.workers[i] || jw_register(jr.workers[i], name, 1, ops, 1, 10000) < 0) {
            fprintf(stderr, "jobq-bench: worker %d on %s: %s\n", i, wep,
                    jr.workers[i] ? jr.workers[i]->errbuf : "cannot open");
            goto out;
        }
    }
    jr.sub = open_sub(ctx, pub, "job/");
    if (!jr.sub)
        goto out;
    if (!ext) {
        if (pthread_create(&tw, NULL, jworkers_main, &jr) != 0)
            goto out;
        workers_on = true;
    }
    /* A first job through the whole cycle: the subscription is live and
     * the workers answer before anything is timed. */
    uint64_t id = sub_live(c, jr.sub) ? submit_one(c, NOOP_OP, bench_now(), -1) : 0;
    double when;
    if (!id || wait_final(jr.sub, id, 10, &when) != 1) {
        fprintf(stderr, "jobq-bench: the first %s job did not succeed\n", NOOP_OP);
        goto out;
    }
    if (pthread_create(&tv, NULL, jwatcher_main, &jr) != 0)
        goto out;
    if (pthread_create(&tp, NULL, jproducer_main, &jr) != 0) {
        atomic_store(&cy.stop, true);
        pthread_join(tv, NULL);
        goto out;
    }
    run_on = true;
    static jmark_t mk; /* large: not on the stack */
    memset(&mk, 0, sizeof mk);
    mk.c = c;
    mk.pid = d.pid;
    cy.mark = jobq_mark;
    cy.mark_arg = &mk;
    others_t o;
    cycle_result_t r;
    rc = cycle_measure(&cy, opt_cycle_seconds, &o, d.pid, &r);
    pthread_join(tp, NULL);
    pthread_join(tv, NULL);
    if (workers_on)
        pthread_join(tw, NULL);
    workers_on = false;
    cycle_summarize(&cy, &r);
    cycle_report(label, key, &r, &o);
    if (jr.missed)
        printf("    the watcher missed %ld events (seq gaps)\n", jr.missed);
    if (mk.ok[0] && mk.ok[1] && r.jobs > 0) {
        double jobs = (double)r.jobs, secs = r.t1 - r.t0;
        double commits = (double)(mk.s[1].commits - mk.s[0].commits);
        double fsyncs = (double)(mk.s[1].fsyncs - mk.s[0].fsyncs);
        double records = (double)(mk.s[1].records - mk.s[0].records);
        printf("    store: %.0f commits/s, %.0f fsyncs/s, %.2f records and %.2f commits per job;"
               " %.2f events per job (whole run)\n",
               commits / secs, fsyncs / secs, records / jobs, commits / jobs,
               cy.n ? (double)jr.events / (double)cy.n : 0.0);
        char threads[512];
        jobq_threads(&mk, secs, threads, sizeof threads);
        printf("    daemon threads (cores): %s\n", threads);
        char k[128];
        if (ext) {
            double kc = (mk.kids[1] - mk.kids[0]) / secs;
            printf("    worker processes: %.2f cores, %.0f us CPU per job\n", kc,
                   kc / r.rate * 1e6);
            snprintf(k, sizeof k, "%s.worker_cores", key);
            result_set(k, kc);
        }
        snprintf(k, sizeof k, "%s.commits_per_job", key);
        result_set(k, commits / jobs);
        snprintf(k, sizeof k, "%s.fsyncs_per_s", key);
        result_set(k, fsyncs / secs);
    }
out:
    atomic_store(&cy.stop, true);
    if (workers_on)
        pthread_join(tw, NULL);
    (void)run_on;
    if (ext_on)
        ext->stop(ext->arg);
    for (int i = 0; i < nworkers; i++)
        jw_close(&jr.workers[i]);
    free(jr.workers);
    if (jr.sub)
        zmq_close(jr.sub);
    jc_close(&c);
    zmq_ctx_term(ctx);
    cycle_free(&cy);
    return rc;
}

/* ------------------------------------------------------------------ */
/* worker loss and cancel                                              */

/* Poll worker w (answering nothing, sending keepalives) until a message of
 * type want for job arrives; 1 when it did (*when its receipt), 0 on
 * timeout. keep: more workers to keep alive meanwhile (may be NULL). */
static int wait_worker(jw_t *w, jw_type_t want, uint64_t job, double timeout, double *when,
                       jw_msg_t *out, jw_t *keep)
{
    double end = bench_now() + timeout;
    while (bench_now() < end) {
        jw_msg_t m;
        int r = jw_recv(w, &m, 5);
        double now = bench_now();
        jw_keepalive(w, now);
        if (keep)
            jw_keepalive(keep, now);
        if (r > 0 && m.type == want && m.job == job) {
            *when = now;
            if (out)
                *out = m;
            return 1;
        }
    }
    return 0;
}

/* Time from a worker's last message to its opcode handed to another
 * worker (retry 1) or ended `error` (no retry), with --worker-lease L. */
static int measure_loss(void)
{
    char lease[32], hb[32];
    snprintf(lease, sizeof lease, "%g", opt_cycle_lease);
    snprintf(hb, sizeof hb, "%g", opt_cycle_lease / 4);
    const char *more[] = {"--worker-lease", lease, "--worker-heartbeat", hb, NULL};
    daemon_t d;
    char pub[400], wep[400];
    if (cycle_start_worker_daemon(&d, pub, sizeof pub, wep, sizeof wep, more) < 0)
        return -1;
    void *ctx = new_ctx(1, 64);
    jc_t *c = jc_open(ctx, d.endpoint);
    void *sub = open_sub(ctx, pub, "job/");
    samples_t retry = {0}, error = {0};
    const char *ops[] = {HOLD_OP};
    int rc = sub_live(c, sub) ? 0 : -1;
    for (long i = 0; i < opt_cycle_losses * 2 && rc == 0; i++) {
        bool with_retry = i % 2 == 0;
        jw_t *a = jw_open(ctx, wep), *b = NULL;
        double t0, t1;
        jw_msg_t m;
        uint64_t id = 0;
        if (!a || jw_register(a, "lost", 1, ops, 1, 10000) < 0 ||
            !(id = submit_one(c, HOLD_OP, 0, with_retry ? 1 : 0)) ||
            !wait_worker(a, JW_ASSIGN, id, 10, &t0, &m, NULL)) {
            fprintf(stderr, "jobq-bench: loss: no assignment: %s\n", a ? a->errbuf : "no socket");
            rc = -1;
        }
        if (rc == 0 && with_retry) {
            b = jw_open(ctx, wep);
            if (!b || jw_register(b, "heir", 1, ops, 1, 10000) < 0)
                rc = -1;
        }
        if (rc == 0) {
            /* a's last word; from now on it is silent. */
            jw_heartbeat(a);
            t0 = a->last_sent;
            int ok = with_retry ? wait_worker(b, JW_ASSIGN, id, opt_cycle_lease * 4 + 10, &t1,
                                              &m, NULL)
                                : wait_final(sub, id, opt_cycle_lease * 4 + 10, &t1) == 2;
            if (!ok) {
                fprintf(stderr, "jobq-bench: loss: job %llu was not %s\n",
                        (unsigned long long)id, with_retry ? "handed over" : "failed");
                rc = -1;
            } else {
                samples_add(with_retry ? &retry : &error, (t1 - t0) * 1e3);
                if (with_retry) {
                    jw_done(b, m.job, m.op, m.attempt, NULL);
                    double w;
                    wait_final(sub, id, 10, &w);
                }
            }
        }
        if (b)
            jw_disconnect(b);
        jw_close(&b);
        jw_close(&a);
    }
    if (rc == 0) {
        char label[96];
        snprintf(label, sizeof label, "silent worker -> opcode to another (retry 1), lease %g s",
                 opt_cycle_lease);
        printf("  %-54s p50 %7.1f ms  max %7.1f ms  (%zu samples)\n", label,
               samples_pct(&retry, 50), samples_pct(&retry, 100), retry.n);
        printf("  %-54s p50 %7.1f ms  max %7.1f ms  (%zu samples)\n",
               "silent worker -> watcher sees `error` (no retry)", samples_pct(&error, 50),
               samples_pct(&error, 100), error.n);
        result_set("cycle.loss.lease_s", opt_cycle_lease);
        result_set("cycle.loss.retry_p50_ms", samples_pct(&retry, 50));
        result_set("cycle.loss.retry_max_ms", samples_pct(&retry, 100));
        result_set("cycle.loss.error_p50_ms", samples_pct(&error, 50));
        result_set("cycle.loss.error_max_ms", samples_pct(&error, 100));
    }
    samples_free(&retry);
    samples_free(&error);
    zmq_close(sub);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* cancel_job of a running remote opcode: sent -> the worker's `cancel`,
 * sent -> the reply, sent -> `canceled` seen by a watcher. */
static int measure_cancel(const char *sync)
{
    daemon_t d;
    char pub[400], wep[400];
    const char *more[] = {"--sync", sync, NULL};
    if (cycle_start_worker_daemon(&d, pub, sizeof pub, wep, sizeof wep, more) < 0)
        return -1;
    void *ctx = new_ctx(1, 64);
    jc_t *c = jc_open(ctx, d.endpoint);
    void *sub = open_sub(ctx, pub, "job/");
    jw_t *w = jw_open(ctx, wep);
    const char *ops[] = {HOLD_OP};
    samples_t to_worker = {0}, to_reply = {0}, to_final = {0};
    int rc = w && sub_live(c, sub) ? jw_register(w, "holder", 1, ops, 1, 10000) : -1;
    if (rc < 0)
        fprintf(stderr, "jobq-bench: cancel: %s\n", w ? w->errbuf : "no socket");
    for (long i = 0; i < opt_cycle_cancels && rc == 0; i++) {
        jw_msg_t m;
        double t0, t1 = 0, t2 = 0, t3 = 0;
        uint64_t id = submit_one(c, HOLD_OP, 0, -1);
        if (!id || !wait_worker(w, JW_ASSIGN, id, 10, &t0, &m, NULL)) {
            rc = -1;
            break;
        }
        msgpack_packer *pk = jc_begin(c, "cancel_job");
        msgpack_pack_map(pk, 1);
        wire_pack_cstr(pk, "id");
        msgpack_pack_uint64(pk, id);
        t0 = bench_now();
        jc_send(c);
        /* The worker's cancel and the reply may come in either order. */
        bool got_cancel = false, got_reply = false;
        double end = t0 + 10;
        zmq_pollitem_t it[2] = {{.socket = w->sock, .events = ZMQ_POLLIN},
                                {.socket = c->sock, .events = ZMQ_POLLIN}};
        while ((!got_cancel || !got_reply) && bench_now() < end) {
            if (zmq_poll(it, 2, 5) <= 0)
                continue;
            double now = bench_now();
            if (!got_cancel && jw_recv(w, &m, 0) > 0 && m.type == JW_CANCEL && m.job == id) {
                t1 = now;
                got_cancel = true;
                jw_done(w, m.job, m.op, m.attempt, NULL);
            }
            if (!got_reply && jc_recv(c, 0) == 0 && c->rep.id == c->last_sent_id) {
                t2 = now;
                got_reply = true;
            }
        }
        if (!got_cancel || !got_reply || wait_final(sub, id, 10, &t3) != 2) {
            fprintf(stderr, "jobq-bench: cancel of job %llu: %s%s\n", (unsigned long long)id,
                    got_cancel ? "" : "no cancel at the worker; ",
                    got_reply ? "not seen canceled" : "no reply");
            rc = -1;
            break;
        }
        samples_add(&to_worker, (t1 - t0) * 1e3);
        samples_add(&to_reply, (t2 - t0) * 1e3);
        samples_add(&to_final, (t3 - t0) * 1e3);
    }
    if (rc == 0) {
        char key[96];
        char label[96];
        snprintf(label, sizeof label, "cancel_job -> the worker's cancel, --sync %s", sync);
        printf("  %-54s p50 %7.3f ms  p99 %7.3f ms  (%zu samples)\n", label,
               samples_pct(&to_worker, 50), samples_pct(&to_worker, 99), to_worker.n);
        printf("  %-54s p50 %7.3f ms  p99 %7.3f ms\n", "cancel_job -> its reply",
               samples_pct(&to_reply, 50), samples_pct(&to_reply, 99));
        printf("  %-54s p50 %7.3f ms  p99 %7.3f ms\n",
               "cancel_job -> watcher sees `canceled` (done at once)",
               samples_pct(&to_final, 50), samples_pct(&to_final, 99));
        snprintf(key, sizeof key, "cycle.cancel_%s.worker_p50_ms", sync);
        result_set(key, samples_pct(&to_worker, 50));
        snprintf(key, sizeof key, "cycle.cancel_%s.worker_p99_ms", sync);
        result_set(key, samples_pct(&to_worker, 99));
        snprintf(key, sizeof key, "cycle.cancel_%s.canceled_p50_ms", sync);
        result_set(key, samples_pct(&to_final, 50));
        snprintf(key, sizeof key, "cycle.cancel_%s.canceled_p99_ms", sync);
        result_set(key, samples_pct(&to_final, 99));
    }
    samples_free(&to_worker);
    samples_free(&to_reply);
    samples_free(&to_final);
    if (w)
        jw_disconnect(w);
    jw_close(&w);
    zmq_close(sub);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the workload                                                        */

static const char *fs_name(const char *path)
{
    struct statfs s;
    if (statfs(path, &s) < 0)
        return "unknown";
    switch ((unsigned long)s.f_type) {
    case 0xEF53: return "ext4 (or ext2/3)";
    case 0x01021994: return "tmpfs (an fsync costs nothing)";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794c7630: return "overlayfs";
    default: return "other";
    }
}

/* The summary: jobq against each peer, per worker count. */
static void cycle_table(void)
{
    static const struct {
        const char *key, *what;
        const char *jobq; /* the jobq configuration it compares with */
    } peers[] = {
        {"beanstalkd_fsync", "beanstalkd -b -f0 (fsync each write)", "jobq_always"},
        {"redis_aof_always", "Redis streams, appendfsync always", "jobq_always"},
        {"beanstalkd_mem", "beanstalkd, no binlog", "jobq_none"},
        {"redis_mem", "Redis streams, no AOF", "jobq_none"},
        {"gearmand_mem", "gearmand, foreground jobs (memory)", "jobq_none"},
    };
    printf("\n  jobs/s, jobq against each peer (ratio = jobq / peer; durable peers against"
           " --sync always, the others against --sync none)\n");
    printf("  %-40s", "");
    for (int k = 0; k < opt_cycle_nworkers; k++)
        printf("  %6ld worker%s       ", opt_cycle_workers[k], opt_cycle_workers[k] == 1 ? " " : "s");
    printf("\n");
    const char *jobqs[] = {"jobq_always", "jobq_none"};
    for (int j = 0; j < 2; j++) {
        printf("  %-40s", j == 0 ? "jobq --sync always" : "jobq --sync none");
        for (int k = 0; k < opt_cycle_nworkers; k++) {
            char key[96];
            snprintf(key, sizeof key, "cycle.%s.w%ld.per_s", jobqs[j], opt_cycle_workers[k]);
            printf("  %9.0f            ", result_get(key));
        }
        printf("\n");
    }
    for (size_t p = 0; p < sizeof peers / sizeof *peers; p++) {
        printf("  %-40s", peers[p].what);
        for (int k = 0; k < opt_cycle_nworkers; k++) {
            char key[96];
            snprintf(key, sizeof key, "cycle.%s.w%ld.per_s", peers[p].key, opt_cycle_workers[k]);
            double v = result_get(key);
            snprintf(key, sizeof key, "cycle.%s.w%ld.per_s", peers[p].jobq, opt_cycle_workers[k]);
            double q = result_get(key);
            if (isnan(v))
                printf("  %-21s", "not measured");
            else
                printf("  %9.0f (x%-6.2f)   ", v, q / v);
            snprintf(key, sizeof key, "cycle.%s.w%ld.ratio", peers[p].key, opt_cycle_workers[k]);
            result_set(key, isnan(v) ? NAN : q / v);
        }
        printf("\n");
    }
}

typedef struct {
    const char *sync, *label, *key;
    int nworkers;
    long window;
} jline_t;

static int jline_run(void *arg)
{
    const jline_t *l = arg;
    return cycle_jobq_line(l->sync, l->nworkers, l->window, l->label, l->key, NULL);
}

int workload_cycle(void)
{
    section("10. Full cycle: submit -> a worker runs a no-op -> success seen");
    printf("  data directories in %s: %s\n", bench_tmp_root, fs_name(bench_tmp_root));
    printf("  %.1f s per line after a warm-up, %ld jobs in flight (pipelined submits), each"
           " worker connection runs one job at a time; latency = submit sent -> completion"
           " observed\n",
           opt_cycle_seconds, opt_cycle_window);
    printf("  jobq: the watcher is a SUB on the event stream (update to `success`); workers"
           " are raw worker-protocol DEALERs, opcode %s\n",
           NOOP_OP);
    int rc = 0;
    static const char *const syncs[] = {"always", "none"};
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < opt_cycle_nworkers; k++) {
            char label[96], key[96];
            snprintf(label, sizeof label, "jobq --sync %s, %ld worker%s", syncs[s],
                     opt_cycle_workers[k], opt_cycle_workers[k] == 1 ? "" : "s");
            snprintf(key, sizeof key, "cycle.jobq_%s.w%ld", syncs[s], opt_cycle_workers[k]);
            jline_t l = {syncs[s], label, key, (int)opt_cycle_workers[k], opt_cycle_window};
            if (cycle_quiet_line(jline_run, &l, key) < 0)
                rc = -1;
        }
        char label[96], key[96];
        snprintf(label, sizeof label, "jobq --sync %s, one job at a time", syncs[s]);
        snprintf(key, sizeof key, "cycle.jobq_%s.single", syncs[s]);
        jline_t l = {syncs[s], label, key, 1, 1};
        if (cycle_quiet_line(jline_run, &l, key) < 0)
            rc = -1;
    }
    if (cycle_peers() < 0)
        rc = -1;
    cycle_table();
    printf("\n");
    if (opt_cycle_losses > 0 && measure_loss() < 0)
        rc = -1;
    if (opt_cycle_cancels > 0)
        for (int s = 0; s < 2; s++)
            if (measure_cancel(syncs[s]) < 0)
                rc = -1;
    return rc;
}
