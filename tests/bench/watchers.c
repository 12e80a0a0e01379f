/* watchers.c: workload 7, pollers against subscribers: N watchers follow
 * the same busy jobs, once by polling query_jobs (status, log_serial) at a
 * fixed interval, once on the event stream (one SUB per watcher, one topic
 * per job); the daemon's CPU and requests in each mode, and what the
 * watchers saw. */
#include "workloads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Requests served so far: the sum of stats' per-method counters. */
static long long requests_served(jc_t *c)
{
    msgpack_packer *pk = jc_begin(c, "stats");
    msgpack_pack_map(pk, 0);
    if (jc_call(c, 10000) < 0)
        return -1;
    const msgpack_object *r = wire_map_get(c->rep.result, "requests");
    if (!r || r->type != MSGPACK_OBJECT_MAP)
        return -1;
    long long sum = 0;
    for (uint32_t i = 0; i < r->via.map.size; i++) {
        int64_t v;
        if (wire_get_int(&r->via.map.ptr[i].val, &v))
            sum += v;
    }
    return sum;
}

typedef struct {
    double cpu_cores, req_per_s, secs, noise;
    long threads;
} load_t;

typedef struct {
    pid_t pid;
    jc_t *c;
    double cpu0, t0;
    long long req0;
    others_t o;
} window_t;

static void window_begin(window_t *w, pid_t pid, jc_t *c)
{
    w->pid = pid;
    w->c = c;
    others_begin(&w->o, pid);
    w->req0 = requests_served(c);
    w->cpu0 = proc_cpu_seconds(pid);
    w->t0 = bench_now();
}

static void window_end(window_t *w, load_t *l, const char *key)
{
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(w->pid);
    long long req1 = requests_served(w->c);
    l->secs = t1 - w->t0;
    l->cpu_cores = (cpu1 - w->cpu0) / l->secs;
    /* Minus the two stats requests that bracket the window. */
    l->req_per_s = (double)(req1 - w->req0 - 1) / l->secs;
    l->threads = proc_threads(w->pid);
    l->noise = noise_end(&w->o, key);
}

/* ------------------------------------------------------------------ */
/* pollers                                                              */

typedef struct {
    jc_t *c;
    double next;    /* when the next query goes out */
    bool waiting;   /* a query is in flight */
    double sent;
    int64_t *serial; /* last log_serial seen per job (-1: none yet) */
} poller_t;

typedef struct {
    uint64_t first;
    int njobs;
    _Atomic int phase; /* 0 warm-up, 1 measure, 2 stop */
    poller_t *p;
    int n;
    long queries, states, increments, errors;
    samples_t lat;
} pollset_t;

static void poll_send(pollset_t *ps, poller_t *p)
{
    msgpack_packer *pk = jc_begin(p->c, "query_jobs");
    msgpack_pack_map(pk, 2);
    wire_pack_cstr(pk, "ids");
    msgpack_pack_array(pk, (uint32_t)ps->njobs);
    for (int j = 0; j < ps->njobs; j++)
        msgpack_pack_uint64(pk, ps->first + (uint64_t)j);
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, 2);
    wire_pack_cstr(pk, "status");
    wire_pack_cstr(pk, "log_serial");
    p->sent = bench_now();
    jc_send(p->c);
    p->waiting = true;
}

/* One thread drives every poller: each sends its next query opt_poll_interval
 * after the previous one went out (at once when late), one in flight. */
static void *pollset_main(void *arg)
{
    pollset_t *ps = arg;
    zmq_pollitem_t *it = calloc((size_t)ps->n, sizeof *it);
    for (int i = 0; i < ps->n; i++) {
        it[i] = (zmq_pollitem_t){.socket = ps->p[i].c->sock, .events = ZMQ_POLLIN};
        ps->p[i].next = bench_now() + opt_poll_interval * i / ps->n; /* spread out */
    }
    int phase;
    while ((phase = atomic_load(&ps->phase)) < 2) {
        double now = bench_now(), due = now + 0.05;
        for (int i = 0; i < ps->n; i++) {
            poller_t *p = &ps->p[i];
            if (!p->waiting && p->next <= now)
                poll_send(ps, p);
            if (!p->waiting && p->next < due)
                due = p->next;
        }
        int timeout = (int)((due - bench_now()) * 1e3);
        if (zmq_poll(it, ps->n, timeout > 0 ? timeout : 0) <= 0)
            continue;
        for (int i = 0; i < ps->n; i++) {
            poller_t *p = &ps->p[i];
            if (!(it[i].revents & ZMQ_POLLIN) || jc_recv(p->c, 0) < 0)
                continue;
            double t = bench_now();
            p->waiting = false;
            p->next = p->sent + opt_poll_interval;
            const msgpack_object *rows = p->c->rep.ok ? wire_map_get(p->c->rep.result, "rows")
                                                      : NULL;
            if (!rows || rows->type != MSGPACK_OBJECT_ARRAY ||
                rows->via.array.size != (uint32_t)ps->njobs) {
                ps->errors++;
                continue;
            }
            if (phase == 1) {
                ps->queries++;
                samples_add(&ps->lat, (t - p->sent) * 1e3);
            }
            for (int j = 0; j < ps->njobs; j++) {
                const msgpack_object *row = &rows->via.array.ptr[j];
                int64_t s = 0;
                if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size < 2 ||
                    !wire_get_int(&row->via.array.ptr[1], &s))
                    continue;
                if (phase == 1 && p->serial[j] >= 0 && s > p->serial[j]) {
                    ps->states++;
                    ps->increments += s - p->serial[j];
                }
                p->serial[j] = s;
            }
        }
    }
    free(it);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* stream watchers                                                      */

typedef struct {
    void *ctx;
    void **socks;
    int n, njobs;
    uint64_t first;
    uint64_t *serial; /* [watcher][job]: last change serial seen */
    _Atomic int phase; /* 0 warm-up, 1 measure, 2 stop */
    _Atomic int ready;
    bool *seen;
    long events, missed, errors;
    samples_t lat;
} streamset_t;

static void *streamset_main(void *arg)
{
    streamset_t *ss = arg;
    zmq_pollitem_t *it = calloc((size_t)ss->n, sizeof *it);
    for (int i = 0; i < ss->n; i++)
        it[i] = (zmq_pollitem_t){.socket = ss->socks[i], .events = ZMQ_POLLIN};
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    int phase;
    long counter = 0;
    while ((phase = atomic_load(&ss->phase)) < 2) {
        if (zmq_poll(it, ss->n, 50) <= 0)
            continue;
        for (int i = 0; i < ss->n; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            for (int k = 0; k < 256; k++) {
                if (zmq_msg_recv(&topic, ss->socks[i], ZMQ_DONTWAIT) < 0 ||
                    zmq_msg_recv(&body, ss->socks[i], ZMQ_DONTWAIT) < 0)
                    break;
                double rt = wall_now();
                event_info_t ev;
                /* A watcher applies every event: unpack each one. */
                if (!event_record(&up, zmq_msg_data(&body), zmq_msg_size(&body), &ev) ||
                    ev.job < ss->first || ev.job >= ss->first + (uint64_t)ss->njobs) {
                    ss->errors++;
                    continue;
                }
                if (!ss->seen[i]) {
                    ss->seen[i] = true;
                    atomic_fetch_add(&ss->ready, 1);
                }
                uint64_t *last = &ss->serial[(size_t)i * (size_t)ss->njobs + (ev.job - ss->first)];
                if (phase == 1) {
                    ss->events++;
                    if (*last && ev.serial > *last + 1)
                        ss->missed += (long)(ev.serial - *last - 1);
                    if (++counter % 101 == 0)
                        samples_add(&ss->lat, (rt - ev.time) * 1e3);
                }
                if (ev.serial > *last)
                    *last = ev.serial;
            }
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    msgpack_unpacked_destroy(&up);
    free(it);
    return NULL;
}

/* ------------------------------------------------------------------ */

int workload_watch(void)
{
    section("7. Watchers: polling query_jobs against the event stream");
    daemon_t d;
    char pub[400];
    jc_t *c = NULL;
    int rc = -1;
    void *ctx = new_ctx(1, opt_watchers + 64);
    char mr[32];
    snprintf(mr, sizeof mr, "%d", opt_watch_jobs + 10);
    const char *more[] = {"--max-running", mr, NULL};
    pollset_t ps = {0};
    streamset_t ss = {0};
    if (start_pub_daemon(&d, pub, sizeof pub, more) < 0)
        goto out;
    c = jc_open(ctx, d.endpoint);
    if (submit_batches(c, opt_watch_jobs, 0.01, LONG_REPEAT) < 0 ||
        !jc_wait_stat(c, "running", opt_watch_jobs, 30))
        goto out;
    uint64_t first = 1;
    printf("  %d watchers follow the same %d running jobs (test.delay 0.01: each logs every"
           " 10 ms, nominal %d changes/s); %.0f s per mode\n",
           opt_watchers, opt_watch_jobs, opt_watch_jobs * 100, opt_watch_seconds);
    printf("  polling: each watcher its own DEALER, query_jobs(ids of the %d jobs, fields"
           " status,log_serial) every %.0f ms (one in flight; the next goes out at once when"
           " a reply is late), all driven by one bench thread\n",
           opt_watch_jobs, opt_poll_interval * 1e3);
    printf("  stream: each watcher its own SUB with one topic per job (job/<id>/), unpacks"
           " every event and checks each job's change serial for gaps\n");

    /* Baseline: the jobs alone. */
    load_t base, lp, ls;
    window_t w;
    quiet_gate();
    long long ch0 = jc_stat(c, "changes");
    window_begin(&w, d.pid, c);
    bench_sleep(opt_watch_seconds); /* load pattern: the measured window */
    window_end(&w, &base, "watch.none.others_cores");
    double ch_rate = (double)(jc_stat(c, "changes") - ch0) / base.secs;

    /* Polling. */
    ps.first = first;
    ps.njobs = opt_watch_jobs;
    ps.n = opt_watchers;
    ps.p = calloc((size_t)ps.n, sizeof *ps.p);
    for (int i = 0; i < ps.n; i++) {
        ps.p[i].c = jc_open(ctx, d.endpoint);
        ps.p[i].serial = malloc((size_t)ps.njobs * sizeof(int64_t));
        for (int j = 0; j < ps.njobs; j++)
            ps.p[i].serial[j] = -1;
    }
    pthread_t th;
    pthread_create(&th, NULL, pollset_main, &ps);
    bench_sleep(0.5); /* load pattern: warm-up, not counted */
    quiet_gate();
    ch0 = jc_stat(c, "changes");
    window_begin(&w, d.pid, c);
    atomic_store(&ps.phase, 1);
    bench_sleep(opt_watch_seconds); /* load pattern: the measured window */
    window_end(&w, &lp, "watch.poll.others_cores");
    double ch_rate_p = (double)(jc_stat(c, "changes") - ch0) / lp.secs;
    atomic_store(&ps.phase, 2);
    pthread_join(th, NULL);

    /* Stream. */
    ss.n = opt_watchers;
    ss.njobs = opt_watch_jobs;
    ss.first = first;
    ss.ctx = new_ctx(1, opt_watchers + 64);
    ss.socks = calloc((size_t)ss.n, sizeof *ss.socks);
    ss.seen = calloc((size_t)ss.n, sizeof *ss.seen);
    ss.serial = calloc((size_t)ss.n * (size_t)ss.njobs, sizeof *ss.serial);
    for (int i = 0; i < ss.n; i++) {
        ss.socks[i] = zmq_socket(ss.ctx, ZMQ_SUB);
        int linger = 0;
        zmq_setsockopt(ss.socks[i], ZMQ_LINGER, &linger, sizeof linger);
        for (int j = 0; j < ss.njobs; j++) {
            char t[48];
            int tl = snprintf(t, sizeof t, "job/%llu/", (unsigned long long)(first + (uint64_t)j));
            zmq_setsockopt(ss.socks[i], ZMQ_SUBSCRIBE, t, (size_t)tl);
        }
        zmq_connect(ss.socks[i], pub);
    }
    pthread_create(&th, NULL, streamset_main, &ss);
    double end = bench_now() + 20;
    while (atomic_load(&ss.ready) < ss.n && bench_now() < end)
        bench_sleep(0.02); /* poll interval */
    bool ready = atomic_load(&ss.ready) == ss.n;
    bench_sleep(0.5); /* load pattern: warm-up, not counted */
    quiet_gate();
    ch0 = jc_stat(c, "changes");
    window_begin(&w, d.pid, c);
    atomic_store(&ss.phase, 1);
    bench_sleep(opt_watch_seconds); /* load pattern: the measured window */
    window_end(&w, &ls, "watch.stream.others_cores");
    double ch_rate_s = (double)(jc_stat(c, "changes") - ch0) / ls.secs;
    atomic_store(&ss.phase, 2);
    pthread_join(th, NULL);
    if (!ready)
        fprintf(stderr, "jobq-bench: watch: only %d of %d subscribers received\n",
                atomic_load(&ss.ready), ss.n);

    double pq = (double)ps.queries / lp.secs;
    double seen_pct = ps.increments ? 100.0 * (double)ps.states / (double)ps.increments : 0;
    double ev_per_w = (double)ss.events / ss.n / ls.secs;
    double smiss_pct = ss.events + ss.missed
                           ? 100.0 * (double)ss.missed / (double)(ss.events + ss.missed)
                           : 0;
    printf("  %-28s %10s %12s %13s %9s  %s\n", "mode", "daemon CPU", "requests/s",
           "changes/s", "threads", "what the watchers saw");
    printf("  %-28s %7.2f c. %12.0f %13.0f %9ld  -\n", "jobs alone (no watchers)",
           base.cpu_cores, base.req_per_s, ch_rate, base.threads);
    printf("  %-28s %7.2f c. %12.0f %13.0f %9ld  %.0f queries/s (%.1f per watcher), reply p50"
           " %.3f ms p99 %.3f ms; saw %ld of %ld log_serial steps = %.1f%% (the rest were"
           " skipped between two polls)%s\n",
           "polling", lp.cpu_cores, lp.req_per_s, ch_rate_p, lp.threads, pq, pq / ps.n,
           samples_pct(&ps.lat, 50), samples_pct(&ps.lat, 99), ps.states, ps.increments,
           seen_pct, ps.errors ? " (ERRORS)" : "");
    printf("  %-28s %7.2f c. %12.0f %13.0f %9ld  %.0f events/s per watcher, missed %ld"
           " (%.2f%%), change -> receipt p50 %.3f ms p99 %.3f ms%s\n",
           "stream", ls.cpu_cores, ls.req_per_s, ch_rate_s, ls.threads, ev_per_w, ss.missed,
           smiss_pct, samples_pct(&ss.lat, 50), samples_pct(&ss.lat, 99),
           ss.errors ? " (ERRORS)" : "");
    printf("  others: %.2f / %.2f / %.2f cores\n", base.noise, lp.noise, ls.noise);
    result_set("watch.watchers", opt_watchers);
    result_set("watch.jobs", opt_watch_jobs);
    result_set("watch.poll_interval_ms", opt_poll_interval * 1e3);
    result_set("watch.none.daemon_cpu_cores", base.cpu_cores);
    result_set("watch.none.changes_per_s", ch_rate);
    result_set("watch.poll.daemon_cpu_cores", lp.cpu_cores);
    result_set("watch.poll.requests_per_s", lp.req_per_s);
    result_set("watch.poll.changes_per_s", ch_rate_p);
    result_set("watch.poll.seen_pct", seen_pct);
    result_set("watch.poll.reply_p50_ms", samples_pct(&ps.lat, 50));
    result_set("watch.poll.reply_p99_ms", samples_pct(&ps.lat, 99));
    result_set("watch.stream.daemon_cpu_cores", ls.cpu_cores);
    result_set("watch.stream.requests_per_s", ls.req_per_s);
    result_set("watch.stream.changes_per_s", ch_rate_s);
    result_set("watch.stream.events_per_s_per_watcher", ev_per_w);
    result_set("watch.stream.missed_pct", smiss_pct);
    result_set("watch.stream.latency_p50_ms", samples_pct(&ss.lat, 50));
    result_set("watch.stream.latency_p99_ms", samples_pct(&ss.lat, 99));
    rc = ready && !ps.errors && !ss.errors ? 0 : -1;
out:
    for (int i = 0; i < ps.n; i++) {
        jc_close(&ps.p[i].c);
        free(ps.p[i].serial);
    }
    free(ps.p);
    samples_free(&ps.lat);
    for (int i = 0; ss.socks && i < ss.n; i++)
        zmq_close(ss.socks[i]);
    free(ss.socks);
    free(ss.seen);
    free(ss.serial);
    samples_free(&ss.lat);
    if (ss.ctx)
        zmq_ctx_term(ss.ctx);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}
