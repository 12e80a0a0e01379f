/* submit.c: workload 4, submit throughput: submit_job one at a time and
 * submit_many_jobs, 1 and C clients, next to the libzmq echo floor, jobqd's
 * ping and beanstalkd puts. */
#include "beans.h"
#include "workloads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* ------------------------------------------------------------------ */
/* workload 4: submit throughput                                        */

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

const char BS_BODY_NOTE[] = "the msgpack opcode list of a one-opcode test.delay job";
char bs_body[128];
size_t bs_body_len;

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

void echo_answer(void *router, zmq_msg_t *rid, const zmq_msg_t *body, msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    wire_request_t req;
    char err[64];
    sb->size = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (msgpack_unpack_next(&up, zmq_msg_data((zmq_msg_t *)body), zmq_msg_size(body), NULL) ==
            MSGPACK_UNPACK_SUCCESS &&
        wire_request_parse(&up.data, &req, err, sizeof err) == JOBQ_ERR_NONE) {
        wire_reply_ok_begin(&pk, req.id, true);
        msgpack_pack_true(&pk);
    }
    zmq_msg_send(rid, router, ZMQ_SNDMORE);
    zmq_send(router, sb->data, sb->size, 0);
    msgpack_unpacked_destroy(&up);
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
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            echo_answer(r, &rid, &body, &sb);
            msgpack_sbuffer_destroy(&sb);
        }
        zmq_msg_close(&rid);
        zmq_msg_close(&body);
    }
    return NULL;
}

/* Run n workers of one kind for `seconds`; returns items/s and fills
 * p50/p99 of per-request latency (ms) and *items (may be NULL). */
double run_workers(wkind_t kind, int n, const char *ep, int port, long cap_total, pid_t daemon,
                   double seconds, double *p50, double *p99, long *errors, others_t *o,
                   long *items_out)
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
    t_end = t0 + seconds;
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
    if (items_out)
        *items_out = items;
    return (double)items / (t1 - t0);
}

void report_rate(const char *label, const char *key, double rate, double p50, double p99,
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

int workload_submit(void)
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
        r = run_workers(W_ECHO, 1, ep, 0, 1L << 40, 0, opt_submit_seconds, &p50, &p99, &errors,
                        &o, NULL);
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
    int retries = 0;
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        void *ctx = new_ctx(1, 64);
        daemon_t d;
        jc_t *c = NULL;
        bool again = false;
        if (start_blocked_daemon(&d, &c, ctx, "20000000") < 0) {
            rc = -1;
        } else {
            if (runs[i].kind == W_BATCH && runs[i].clients > 1)
                snprintf(label, sizeof label, runs[i].what, opt_batch, runs[i].clients);
            else if (runs[i].kind == W_BATCH)
                snprintf(label, sizeof label, runs[i].what, opt_batch);
            else
                snprintf(label, sizeof label, runs[i].what, runs[i].clients);
            r = run_workers(runs[i].kind, runs[i].clients, d.endpoint, 0, 19000000, d.pid,
                            opt_submit_seconds, &p50, &p99, &errors, &o, NULL);
            double noise = others_end(&o);
            /* Other sessions' bursts: measure the line again (twice at most). */
            if (noise >= 0.25 && retries < 2 && opt_quiet_wait > 0 && !errors) {
                printf("  %-44s (others used %.2f cores: measured again)\n", label, noise);
                again = true;
                retries++;
            } else {
                report_rate(label, runs[i].key, r, p50, p99, errors, runs[i].unit, &o);
                retries = 0;
            }
            if (errors)
                rc = -1;
        }
        jc_close(&c);
        zmq_ctx_term(ctx);
        daemon_stop(&d);
        if (again)
            i--;
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
        r = run_workers(W_BS_PUT, n, NULL, port, 1L << 40, b.pid, opt_submit_seconds, &p50, &p99,
                        &errors, &o, NULL);
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

