/* cycle_peers.c: the full cycle of workload 10 on the servers jobq is
 * compared with, driven exactly like jobq's (cycle.h: the same window of
 * jobs in flight, pipelined submits, one thread for every worker
 * connection, capacity 1 each, the submit time in the payload):
 *
 *   beanstalkd  put -> reserve -> delete; a job is done when its worker's
 *               delete is acknowledged (DELETED). The worker sends the
 *               delete and its next reserve together.
 *   Redis       XADD -> XREADGROUP (consumer group, COUNT 1, BLOCK 0) ->
 *               XACK; done when the XACK is answered. XACK and the next
 *               XREADGROUP go together.
 *   gearmand    SUBMIT_JOB (foreground) -> GRAB_JOB / JOB_ASSIGN ->
 *               WORK_COMPLETE; done when the submitting client receives
 *               WORK_COMPLETE (gearmand's own watcher: it tells the client).
 *
 * Each is measured in memory and, where the server can make the cycle
 * durable, with an fsync before every acknowledgement: beanstalkd -b DIR
 * -f0, Redis appendonly with appendfsync always. gearmand persists only
 * background jobs, whose completion no client is told, so it has no
 * durable line. */
#include "cycle.h"

#include "peers.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM "jobq-bench"
#define GROUP "workers"
#define GM_FUNC "bench.noop"

typedef enum { P_BEANSTALKD, P_REDIS, P_GEARMAND } ptype_t;

/* One worker connection and where it is in its cycle. */
typedef struct {
    pconn_t c;
    int index;
    double pending;   /* the job being acknowledged: its submit time */
    bool expect_ack;  /* Redis: the next reply answers XACK (else XREADGROUP) */
    bool grabbing;    /* gearmand: a GRAB_JOB is unanswered */
} wconn_t;

typedef struct {
    ptype_t type;
    cycle_t *cy;
    int port;
    int nworkers;
    wconn_t *w;
    pconn_t prod;
    char fail[160]; /* the first protocol surprise */
} prun_t;

static void surprise(prun_t *p, const char *what, const char *data, size_t n)
{
    if (atomic_fetch_add(&p->cy->errors, 1) == 0)
        snprintf(p->fail, sizeof p->fail, "%s: %.*s", what, (int)(n > 80 ? 80 : n), data);
}

static double stamp_value(const char *s, size_t n)
{
    char buf[48];
    if (n == 0 || n >= sizeof buf)
        return NAN;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    double v = strtod(buf, &end);
    return end == buf ? NAN : v;
}

/* ---- producer: submits and their replies (gearmand: completions too) ---- */

static void submit(prun_t *p, double t)
{
    char stamp[48];
    int n = cycle_stamp(stamp, sizeof stamp, t);
    switch (p->type) {
    case P_BEANSTALKD:
        pconn_queuef(&p->prod, "put 0 0 60 %d\r\n%s\r\n", n, stamp);
        break;
    case P_REDIS: {
        const char *argv[] = {"XADD", STREAM, "*", "t", stamp};
        resp_cmd(&p->prod, 5, argv);
        break;
    }
    case P_GEARMAND: {
        const char *args[] = {GM_FUNC, "", stamp};
        size_t lens[] = {strlen(GM_FUNC), 0, (size_t)n};
        gm_req(&p->prod, GM_SUBMIT_JOB, 3, args, lens);
        break;
    }
    }
}

/* Consumes the complete replies at the head of the producer's input; -1
 * on an unreadable one. */
static int producer_replies(prun_t *p)
{
    pconn_t *c = &p->prod;
    for (;;) {
        ssize_t used = 0;
        if (p->type == P_BEANSTALKD) {
            char word[16];
            uint64_t id;
            const char *body;
            size_t blen;
            used = (ssize_t)bs_reply(c, word, &id, &body, &blen);
            if (used > 0 && strcmp(word, "INSERTED") != 0) {
                surprise(p, "put", c->in, (size_t)used);
                cycle_failed(p->cy);
            }
        } else if (p->type == P_REDIS) {
            char type;
            long long iv;
            const char *bulk[1];
            size_t blen[1];
            int nb;
            used = resp_reply(c, &type, &iv, bulk, blen, 1, &nb);
            if (used > 0 && type != '$') {
                surprise(p, "XADD", c->in, (size_t)used);
                cycle_failed(p->cy);
            }
        } else {
            uint32_t type;
            const char *d;
            size_t n;
            used = gm_res(c, &type, &d, &n);
            if (used > 0 && type == GM_WORK_COMPLETE) {
                const char *nul = memchr(d, '\0', n);
                double t = nul ? stamp_value(nul + 1, n - (size_t)(nul + 1 - d)) : NAN;
                if (isnan(t)) {
                    surprise(p, "WORK_COMPLETE", d, n);
                    cycle_failed(p->cy);
                } else {
                    cycle_complete(p->cy, t);
                }
            } else if (used > 0 && type != GM_JOB_CREATED) {
                surprise(p, "gearmand answered", d, n);
                cycle_failed(p->cy);
            }
        }
        if (used < 0)
            return -1;
        if (used == 0)
            return 0;
        pconn_consume(c, (size_t)used);
    }
}

static void *producer_main(void *arg)
{
    prun_t *p = arg;
    cycle_t *cy = p->cy;
    while (!atomic_load(&cy->stop)) {
        long k = cycle_room(cy);
        for (long i = 0; i < k; i++) {
            atomic_fetch_add(&cy->submitted, 1);
            submit(p, bench_now());
        }
        if (pconn_flush(&p->prod) < 0)
            break;
        bool armed = cycle_sleep(cy);
        struct pollfd fds[2] = {{.fd = p->prod.fd, .events = pconn_events(&p->prod)},
                                {.fd = cy->efd, .events = POLLIN}};
        int wait = armed || atomic_load(&cy->stop_submit) ? 50 : 0;
        if (poll(fds, armed ? 2 : 1, wait) < 0 && errno != EINTR)
            break;
        if (armed)
            cycle_woken(cy);
        if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
            (pconn_fill(&p->prod) < 0 || producer_replies(p) < 0))
            break;
    }
    return NULL;
}

/* ---- workers ---- */

static void worker_start(prun_t *p, wconn_t *w)
{
    if (p->type == P_BEANSTALKD) {
        pconn_queue(&w->c, "reserve\r\n", 9);
    } else if (p->type == P_REDIS) {
        char consumer[32];
        snprintf(consumer, sizeof consumer, "c%d", w->index);
        const char *argv[] = {"XREADGROUP", "GROUP", GROUP, consumer, "COUNT", "1",
                              "BLOCK",      "0",     "STREAMS", STREAM, ">"};
        resp_cmd(&w->c, 11, argv);
        w->expect_ack = false;
    } else {
        const char *args[] = {GM_FUNC};
        size_t lens[] = {strlen(GM_FUNC)};
        gm_req(&w->c, GM_CAN_DO, 1, args, lens);
        gm_req(&w->c, GM_GRAB_JOB, 0, NULL, NULL);
        w->grabbing = true;
    }
}

static int worker_replies(prun_t *p, wconn_t *w)
{
    pconn_t *c = &w->c;
    for (;;) {
        ssize_t used;
        if (p->type == P_BEANSTALKD) {
            char word[16];
            uint64_t id;
            const char *body;
            size_t blen;
            used = (ssize_t)bs_reply(c, word, &id, &body, &blen);
            if (used > 0 && strcmp(word, "RESERVED") == 0) {
                w->pending = stamp_value(body, blen);
                pconn_queuef(c, "delete %llu\r\nreserve\r\n", (unsigned long long)id);
            } else if (used > 0 && strcmp(word, "DELETED") == 0) {
                cycle_complete(p->cy, w->pending);
            } else if (used > 0) {
                surprise(p, "worker", c->in, (size_t)used);
            }
        } else if (p->type == P_REDIS) {
            char type;
            long long iv;
            const char *bulk[4];
            size_t blen[4];
            int nb;
            used = resp_reply(c, &type, &iv, bulk, blen, 4, &nb);
            if (used > 0 && w->expect_ack) {
                w->expect_ack = false;
                if (type == ':' && iv == 1)
                    cycle_complete(p->cy, w->pending);
                else
                    surprise(p, "XACK", c->in, (size_t)used);
            } else if (used > 0 && type == '*' && nb == 4) {
                /* [[stream, [[id, [t, stamp]]]]] */
                char id[64];
                snprintf(id, sizeof id, "%.*s", (int)blen[1], bulk[1]);
                w->pending = stamp_value(bulk[3], blen[3]);
                const char *ack[] = {"XACK", STREAM, GROUP, id};
                resp_cmd(c, 4, ack);
                worker_start(p, w); /* the next XREADGROUP, pipelined */
                w->expect_ack = true;
            } else if (used > 0) {
                surprise(p, "XREADGROUP", c->in, (size_t)used);
            }
        } else {
            uint32_t type;
            const char *d;
            size_t n;
            used = gm_res(c, &type, &d, &n);
            if (used > 0 && type == GM_JOB_ASSIGN) {
                /* handle \0 function \0 payload: answer with the payload */
                const char *h_end = memchr(d, '\0', n);
                const char *f_end = h_end ? memchr(h_end + 1, '\0', n - (size_t)(h_end + 1 - d))
                                          : NULL;
                if (!f_end) {
                    surprise(p, "JOB_ASSIGN", d, n);
                } else {
                    const char *args[] = {d, f_end + 1};
                    size_t lens[] = {(size_t)(h_end - d), n - (size_t)(f_end + 1 - d)};
                    gm_req(c, GM_WORK_COMPLETE, 2, args, lens);
                    gm_req(c, GM_GRAB_JOB, 0, NULL, NULL);
                    w->grabbing = true;
                }
            } else if (used > 0 && type == GM_NO_JOB) {
                w->grabbing = false;
                gm_req(c, GM_PRE_SLEEP, 0, NULL, NULL);
            } else if (used > 0 && type == GM_NOOP) {
                if (!w->grabbing) {
                    gm_req(c, GM_GRAB_JOB, 0, NULL, NULL);
                    w->grabbing = true;
                }
            } else if (used > 0) {
                surprise(p, "gearmand told a worker", d, n);
            }
        }
        if (used < 0)
            return -1;
        if (used == 0)
            return 0;
        pconn_consume(c, (size_t)used);
    }
}

static void *workers_main(void *arg)
{
    prun_t *p = arg;
    int n = p->nworkers;
    struct pollfd *fds = calloc((size_t)n, sizeof *fds);
    for (int i = 0; i < n; i++)
        pconn_flush(&p->w[i].c);
    while (!atomic_load(&p->cy->stop)) {
        for (int i = 0; i < n; i++)
            fds[i] = (struct pollfd){.fd = p->w[i].c.fd, .events = pconn_events(&p->w[i].c)};
        if (poll(fds, (nfds_t)n, 50) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            wconn_t *w = &p->w[i];
            if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                (pconn_fill(&w->c) < 0 || worker_replies(p, w) < 0)) {
                if (!atomic_load(&p->cy->stop))
                    surprise(p, "worker connection lost", "", 0);
                fds[i].fd = -1;
                atomic_store(&p->cy->stop, true);
            }
            pconn_flush(&w->c);
        }
    }
    free(fds);
    return NULL;
}

/* ---- one line ---- */

/* Blocking request on a fresh connection (setup only): the first reply's
 * type byte, or 0. */
static char redis_setup(int port)
{
    pconn_t c;
    if (pconn_open(&c, port) < 0)
        return 0;
    const char *argv[] = {"XGROUP", "CREATE", STREAM, GROUP, "$", "MKSTREAM"};
    resp_cmd(&c, 6, argv);
    char type = 0;
    double end = bench_now() + 5;
    while (bench_now() < end) {
        pconn_flush(&c);
        struct pollfd f = {.fd = c.fd, .events = pconn_events(&c)};
        poll(&f, 1, 50);
        if (pconn_fill(&c) < 0)
            break;
        long long iv;
        const char *b[1];
        size_t bl[1];
        int nb;
        if (resp_reply(&c, &type, &iv, b, bl, 1, &nb) > 0)
            break;
        type = 0;
    }
    pconn_close(&c);
    return type;
}

typedef struct {
    const char *key;   /* result key: cycle.<key>.w<N> */
    const char *what;  /* label */
    ptype_t type;
    const char *const *argv; /* tcp_daemon_start template; argv[0] set at run time */
} pconf_t;

static int peer_line(const pconf_t *pc, const char *bin, int nworkers, long window,
                     const char *label, const char *key)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    for (int i = 1; pc->argv[i] && n < 31; i++)
        argv[n++] = pc->argv[i];
    argv[n] = NULL;
    quiet_gate();
    daemon_t d;
    int port;
    if (tcp_daemon_start(&d, pc->key, argv, &port) < 0) {
        fprintf(stderr, "jobq-bench: cannot start %s\n", bin);
        return -1;
    }
    if (pc->type == P_REDIS && redis_setup(port) != '+') {
        fprintf(stderr, "jobq-bench: XGROUP CREATE failed\n");
        daemon_stop(&d);
        return -1;
    }
    cycle_t cy;
    cycle_init(&cy, window);
    prun_t p = {.type = pc->type, .cy = &cy, .port = port, .nworkers = nworkers};
    p.w = calloc((size_t)nworkers, sizeof *p.w);
    int rc = -1;
    int opened = 0;
    for (; opened < nworkers; opened++) {
        p.w[opened].index = opened;
        if (pconn_open(&p.w[opened].c, port) < 0)
            break;
        worker_start(&p, &p.w[opened]);
    }
    pthread_t tw, tp;
    if (opened < nworkers || pconn_open(&p.prod, port) < 0) {
        fprintf(stderr, "jobq-bench: cannot connect to %s\n", d.endpoint);
        p.prod.fd = -1;
    } else if (pthread_create(&tw, NULL, workers_main, &p) == 0) {
        if (pthread_create(&tp, NULL, producer_main, &p) == 0) {
            others_t o;
            cycle_result_t r;
            rc = cycle_measure(&cy, opt_cycle_seconds, &o, d.pid, &r);
            pthread_join(tp, NULL);
            pthread_join(tw, NULL);
            cycle_summarize(&cy, &r);
            cycle_report(label, key, &r, &o);
            if (p.fail[0])
                printf("    first error: %s\n", p.fail);
        } else {
            atomic_store(&cy.stop, true);
            pthread_join(tw, NULL);
        }
    }
    for (int i = 0; i < opened; i++)
        pconn_close(&p.w[i].c);
    if (p.prod.fd >= 0)
        pconn_close(&p.prod);
    free(p.w);
    cycle_free(&cy);
    daemon_stop(&d);
    return rc;
}

typedef struct {
    const pconf_t *pc;
    const char *bin, *label, *key;
    int nworkers;
    long window;
} pline_t;

static int pline_run(void *arg)
{
    const pline_t *l = arg;
    return peer_line(l->pc, l->bin, l->nworkers, l->window, l->label, l->key);
}

int cycle_peers(void)
{
    static const char *const bs_mem[] = {"", "-l", "127.0.0.1", "-p", "{port}", NULL};
    static const char *const bs_fsync[] = {"", "-l", "127.0.0.1", "-p", "{port}",
                                           "-b", "{dir}", "-f", "0", NULL};
    static const char *const rd_mem[] = {"", "--port", "{port}", "--bind", "127.0.0.1", "--dir",
                                         "{dir}", "--save", "", "--appendonly", "no",
                                         "--protected-mode", "no", "--daemonize", "no", NULL};
    static const char *const rd_aof[] = {"", "--port", "{port}", "--bind", "127.0.0.1", "--dir",
                                         "{dir}", "--save", "", "--appendonly", "yes",
                                         "--appendfsync", "always", "--protected-mode", "no",
                                         "--daemonize", "no", NULL};
    static const char *const gm_mem[] = {"", "-L", "127.0.0.1", "-p", "{port}", "-l",
                                         "{dir}/gearmand.log", "-P", "{dir}/gearmand.pid", NULL};
    static const pconf_t confs[] = {
        {"beanstalkd_fsync", "beanstalkd -b -f0 (fsync each write)", P_BEANSTALKD, bs_fsync},
        {"redis_aof_always", "Redis streams, appendfsync always", P_REDIS, rd_aof},
        {"beanstalkd_mem", "beanstalkd, no binlog", P_BEANSTALKD, bs_mem},
        {"redis_mem", "Redis streams, no AOF", P_REDIS, rd_mem},
        {"gearmand_mem", "gearmand, foreground jobs (memory)", P_GEARMAND, gm_mem},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof confs / sizeof *confs; i++) {
        const pconf_t *pc = &confs[i];
        const char *bin = pc->type == P_BEANSTALKD ? opt_beanstalkd
                          : pc->type == P_REDIS    ? (opt_no_redis ? NULL : opt_redis)
                                                   : (opt_no_gearmand ? NULL : opt_gearmand);
        const char *why = pc->type == P_BEANSTALKD ? "beanstalkd not available"
                          : pc->type == P_REDIS    ? "redis-server not available"
                                                   : "gearmand not available";
        for (int k = 0; k <= opt_cycle_nworkers; k++) {
            bool single = k == opt_cycle_nworkers;
            long nw = single ? 1 : opt_cycle_workers[k];
            char label[96], key[96];
            if (single)
                snprintf(label, sizeof label, "%s, one job at a time", pc->what);
            else
                snprintf(label, sizeof label, "%s, %ld worker%s", pc->what, nw,
                         nw == 1 ? "" : "s");
            snprintf(key, sizeof key, single ? "cycle.%s.single" : "cycle.%s.w%ld", pc->key, nw);
            if (!bin)
                cycle_not_measured(label, key, why);
            else {
                pline_t l = {pc, bin, label, key, (int)nw, single ? 1 : opt_cycle_window};
                if (cycle_quiet_line(pline_run, &l, key) < 0)
                    rc = -1;
            }
        }
    }
    return rc;
}
