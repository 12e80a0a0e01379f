/* events.c: workload 6, the event stream: events/s published with 1 and
 * with many SUB subscribers (and what each subscriber missed), on the
 * per-event stream and on the batched one (topic batch/), change to
 * subscriber latency, and change to wait_for_job_change reply latency with
 * thousands of parked waiters; the daemon's threads throughout. */
#include "workloads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int start_pub_daemon(daemon_t *d, char *pub, size_t len, const char *const *more)
{
    const char *extra[24];
    int n = 0;
    char pubarg[64];
    if (strcmp(opt_transport, "tcp") == 0) {
        snprintf(pubarg, sizeof pubarg, "tcp://127.0.0.1:%d", free_tcp_port());
        extra[n++] = "--publish";
        extra[n++] = pubarg;
    }
    for (int i = 0; more && more[i] && n < 22; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    quiet_gate();
    if (jobqd_start(d, extra) < 0) {
        fail("cannot start jobqd");
        return -1;
    }
    if (strcmp(opt_transport, "tcp") == 0)
        snprintf(pub, len, "%s", pubarg);
    else
        snprintf(pub, len, "ipc://%s/events.sock", d->dir);
    return 0;
}

bool event_seq(const void *data, size_t n, uint64_t *seq)
{
    /* The body starts {"seq": S, ...} (pubsub/event.c): read S without
     * unpacking the whole record. */
    const unsigned char *p = data;
    if (n >= 6 && p[0] == 0x83 && p[1] == 0xa3 && memcmp(p + 2, "seq", 3) == 0) {
        p += 5;
        n -= 5;
        if (p[0] < 0x80) {
            *seq = p[0];
            return true;
        }
        int w = p[0] == 0xcc ? 1 : p[0] == 0xcd ? 2 : p[0] == 0xce ? 4 : p[0] == 0xcf ? 8 : 0;
        if (w && n > (size_t)w) {
            uint64_t v = 0;
            for (int i = 1; i <= w; i++)
                v = v << 8 | p[i];
            *seq = v;
            return true;
        }
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    bool ok = false;
    int64_t s;
    if (msgpack_unpack_next(&up, data, n, NULL) == MSGPACK_UNPACK_SUCCESS &&
        wire_get_int(wire_map_get(&up.data, "seq"), &s)) {
        *seq = (uint64_t)s;
        ok = true;
    }
    msgpack_unpacked_destroy(&up);
    return ok;
}

bool event_record(msgpack_unpacked *up, const void *data, size_t n, event_info_t *ev)
{
    if (msgpack_unpack_next(up, data, n, NULL) != MSGPACK_UNPACK_SUCCESS)
        return false;
    const msgpack_object *ch = wire_map_get(&up->data, "change");
    if (!ch)
        return false;
    int64_t v;
    ev->job = wire_get_int(wire_map_get(ch, "job"), &v) ? (uint64_t)v : 0;
    ev->serial = wire_get_int(wire_map_get(ch, "serial"), &v) ? (uint64_t)v : 0;
    const msgpack_object *tm = wire_map_get(ch, "time");
    int64_t s, us;
    if (!tm || tm->type != MSGPACK_OBJECT_ARRAY || tm->via.array.size != 2 ||
        !wire_get_int(&tm->via.array.ptr[0], &s) || !wire_get_int(&tm->via.array.ptr[1], &us))
        return false;
    ev->time = (double)s + (double)us / 1e6;
    return true;
}

/* The length of the one msgpack value at p (at most n bytes), 0 when it
 * does not end there: walks the bytes without decoding them, so that the
 * subscriber thread can split a batch into its event bodies cheaply. */
bool batch_header(const unsigned char **p, size_t *n, size_t *count)
{
    const unsigned char *b = *p;
    if (*n && (b[0] & 0xf0) == 0x90) {
        *count = b[0] & 0x0f;
        *p += 1, *n -= 1;
    } else if (*n >= 3 && b[0] == 0xdc) {
        *count = (size_t)b[1] << 8 | b[2];
        *p += 3, *n -= 3;
    } else {
        return false;
    }
    return true;
}

size_t mp_skip(const unsigned char *p, size_t n)
{
    size_t off = 0, left = 1; /* values still to walk */
    while (left) {
        if (off >= n)
            return 0;
        unsigned char b = p[off++];
        left--;
        size_t len = 0, w = 0, items = 0;
        if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3))
            continue; /* fixint, nil, bool */
        if ((b & 0xe0) == 0xa0)
            len = b & 0x1f; /* fixstr */
        else if ((b & 0xf0) == 0x90)
            items = b & 0x0f; /* fixarray */
        else if ((b & 0xf0) == 0x80)
            items = 2 * (size_t)(b & 0x0f); /* fixmap */
        else {
            switch (b) {
            case 0xcc: case 0xd0: len = 1; break;
            case 0xcd: case 0xd1: len = 2; break;
            case 0xca: case 0xce: case 0xd2: len = 4; break;
            case 0xcb: case 0xcf: case 0xd3: len = 8; break;
            case 0xd4: len = 2; break; case 0xd5: len = 3; break; case 0xd6: len = 5; break;
            case 0xd7: len = 9; break; case 0xd8: len = 17; break;
            case 0xc4: case 0xd9: w = 1; break; /* bin8, str8 */
            case 0xc5: case 0xda: w = 2; break;
            case 0xc6: case 0xdb: w = 4; break;
            case 0xc7: case 0xc8: case 0xc9: /* ext: size, type, data */
                w = b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4;
                break;
            case 0xdc: case 0xdd: case 0xde: case 0xdf: {
                size_t hw = (b == 0xdc || b == 0xde) ? 2 : 4, c = 0;
                if (off + hw > n)
                    return 0;
                for (size_t i = 0; i < hw; i++)
                    c = c << 8 | p[off + i];
                off += hw;
                items = b >= 0xde ? 2 * c : c;
                break;
            }
            default: return 0;
            }
            if (w) {
                if (off + w > n)
                    return 0;
                for (size_t i = 0; i < w; i++)
                    len = len << 8 | p[off + i];
                off += w;
                if (b >= 0xc7 && b <= 0xc9)
                    len++; /* the ext type byte */
            }
        }
        if (len > n - off)
            return 0;
        off += len;
        left += items;
    }
    return off;
}

/* ------------------------------------------------------------------ */
/* subscribers: n SUB sockets on "job/" (or "batch/") served by one     */
/* thread                                                               */

typedef struct {
    void *sock;
    uint64_t last; /* last seq seen */
    long got, missed; /* in the measured window */
    bool seen;
} sub_t;

typedef struct {
    void *ctx;
    sub_t *subs;
    int n;
    _Atomic int phase; /* 0 warm-up, 1 measure, 2 stop counting, 3 exit */
    _Atomic int ready; /* subscribers that have received an event */
    bool batched; /* topic batch/: each message an array of event bodies */
    long sample_every; /* latency of every k-th event per window */
    long counter;
    samples_t lat; /* ms: event time (made under the job's lock) to receipt */
    pthread_t th;
} subset_t;

static void *subset_main(void *arg)
{
    subset_t *ss = arg;
    zmq_pollitem_t *it = calloc((size_t)ss->n, sizeof *it);
    for (int i = 0; i < ss->n; i++)
        it[i] = (zmq_pollitem_t){.socket = ss->subs[i].sock, .events = ZMQ_POLLIN};
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    while (atomic_load(&ss->phase) < 3) {
        if (zmq_poll(it, ss->n, 50) <= 0)
            continue;
        int phase = atomic_load(&ss->phase);
        for (int i = 0; i < ss->n; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            sub_t *s = &ss->subs[i];
            for (int k = 0; k < 256; k++) {
                if (zmq_msg_recv(&topic, s->sock, ZMQ_DONTWAIT) < 0)
                    break;
                if (zmq_msg_recv(&body, s->sock, ZMQ_DONTWAIT) < 0)
                    break;
                double rt = wall_now();
                const unsigned char *p = zmq_msg_data(&body);
                size_t n = zmq_msg_size(&body), count = 1;
                if (ss->batched && !batch_header(&p, &n, &count))
                    continue; /* the array header, then the bodies */
                for (size_t e = 0; e < count; e++) {
                    size_t len = ss->batched ? mp_skip(p, n) : n;
                    uint64_t seq;
                    if (!len || !event_seq(p, len, &seq))
                        break;
                    if (!s->seen) {
                        s->seen = true;
                        atomic_fetch_add(&ss->ready, 1);
                    }
                    if (phase == 1) {
                        s->got++;
                        if (s->last && seq > s->last + 1)
                            s->missed += (long)(seq - s->last - 1);
                        event_info_t ev;
                        if (++ss->counter % ss->sample_every == 0 &&
                            event_record(&up, p, len, &ev))
                            samples_add(&ss->lat, (rt - ev.time) * 1e3);
                    }
                    if (seq > s->last)
                        s->last = seq;
                    p += len, n -= len;
                }
            }
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    msgpack_unpacked_destroy(&up);
    free(it);
    return NULL;
}

static int subset_open(subset_t *ss, const char *pub, int n, long sample_every, bool batched)
{
    memset(ss, 0, sizeof *ss);
    ss->batched = batched;
    ss->ctx = new_ctx(1, n + 64);
    ss->subs = calloc((size_t)n, sizeof *ss->subs);
    ss->n = n;
    ss->sample_every = sample_every > 0 ? sample_every : 1;
    for (int i = 0; i < n; i++) {
        void *s = zmq_socket(ss->ctx, ZMQ_SUB);
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        if (batched)
            zmq_setsockopt(s, ZMQ_SUBSCRIBE, "batch/", 6);
        else
            zmq_setsockopt(s, ZMQ_SUBSCRIBE, "job/", 4);
        if (zmq_connect(s, pub) < 0) {
            zmq_close(s);
            return -1;
        }
        ss->subs[i].sock = s;
    }
    return pthread_create(&ss->th, NULL, subset_main, ss) == 0 ? 0 : -1;
}

static void subset_close(subset_t *ss)
{
    atomic_store(&ss->phase, 3);
    pthread_join(ss->th, NULL);
    for (int i = 0; i < ss->n; i++)
        zmq_close(ss->subs[i].sock);
    free(ss->subs);
    samples_free(&ss->lat);
    zmq_ctx_term(ss->ctx);
}

/* Poll until every subscriber has received an event (a subscription is
 * live only once it has reached the PUB socket). */
static bool subset_wait_ready(subset_t *ss, double timeout)
{
    double end = bench_now() + timeout;
    while (atomic_load(&ss->ready) < ss->n) {
        if (bench_now() > end)
            return false;
        bench_sleep(0.02); /* poll interval */
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* events/s with n subscribers                                          */

/* batched: the subscribers take topic batch/ (many events a message). */
static int ev_rate(int nsubs, bool batched)
{
    daemon_t d;
    char pub[400];
    jc_t *c = NULL;
    subset_t ss;
    bool ss_open = false;
    int rc = -1;
    void *ctx = new_ctx(1, 64);
    if (start_pub_daemon(&d, pub, sizeof pub, NULL) < 0)
        goto out;
    c = jc_open(ctx, d.endpoint);
    long threads0 = proc_threads(d.pid);
    if (subset_open(&ss, pub, nsubs, nsubs > 1 ? 97 : 7, batched) < 0) {
        fail("cannot open subscribers");
        goto out;
    }
    ss_open = true;
    /* The stream: jobs that each log every 10 ms. (Not test.delay(0): an
     * executor steps a zero-duration delay to its end without returning to
     * its queue, see docs/benchmarks.md.) */
    if (submit_batches(c, opt_ev_jobs, 0.01, LONG_REPEAT) < 0 ||
        !jc_wait_stat(c, "running", opt_ev_jobs, 30))
        goto out;
    if (!subset_wait_ready(&ss, 20)) {
        fprintf(stderr, "jobq-bench: events: only %d of %d subscribers receive\n",
                atomic_load(&ss.ready), nsubs);
        goto out;
    }
    bench_sleep(0.5); /* load pattern: warm-up, not counted */
    long rss0 = proc_status_kb(d.pid, "VmRSS");
    others_t o;
    others_begin(&o, d.pid);
    long long p0 = jc_stat(c, "events_published");
    double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
    atomic_store(&ss.phase, 1);
    bench_sleep(opt_ev_seconds); /* load pattern: the measured window */
    atomic_store(&ss.phase, 2);
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    long long p1 = jc_stat(c, "events_published");
    long threads1 = proc_threads(d.pid);
    long rss1 = proc_status_kb(d.pid, "VmRSS");
    char key[96];
    const char *kind = batched ? "batch" : "rate";
    snprintf(key, sizeof key, "events.%s_%d.others_cores", kind, nsubs);
    double noise = noise_end(&o, key);
    bench_sleep(0.1); /* let the receiver finish the message in hand */
    double secs = t1 - t0;
    long got = 0, missed = 0, gmin = -1, gmax = 0;
    int lossy = 0;
    for (int i = 0; i < nsubs; i++) {
        long g = ss.subs[i].got;
        got += g;
        missed += ss.subs[i].missed;
        lossy += ss.subs[i].missed > 0;
        if (gmin < 0 || g < gmin)
            gmin = g;
        if (g > gmax)
            gmax = g;
    }
    double pub_rate = (double)(p1 - p0) / secs;
    double per_sub = (double)got / nsubs / secs;
    double miss_pct = got + missed ? 100.0 * (double)missed / (double)(got + missed) : 0;
    printf("  %d subscriber%s (topic %s), %d jobs test.delay(0.01, repeat %ld) (nominal %d"
           " events/s), %.1f s:\n",
           nsubs, nsubs > 1 ? "s" : "", batched ? "batch/" : "job/", opt_ev_jobs, LONG_REPEAT,
           opt_ev_jobs * 100, secs);
    printf("    published %.0f events/s; received %.0f /s per subscriber (min %.0f, max %.0f),"
           " %.0f /s in all\n",
           pub_rate, per_sub, (double)gmin / secs, (double)gmax / secs, (double)got / secs);
    printf("    missed (seq gaps): %ld of %ld = %.2f%% (%d of %d subscribers lost some)\n", missed,
           got + missed, miss_pct, lossy, nsubs);
    printf("    event time -> receipt under this load: p50 %.3f ms  p99 %.3f ms (%zu sampled)\n",
           samples_pct(&ss.lat, 50), samples_pct(&ss.lat, 99), ss.lat.n);
    printf("    daemon: %.2f CPU cores, threads %ld -> %ld, RSS %+.1f MB in the window;"
           " other processes %.2f cores\n",
           (cpu1 - cpu0) / secs, threads0, threads1, (double)(rss1 - rss0) / 1024.0, noise);
#define ESET(name, v)                                                    \
    do {                                                                 \
        snprintf(key, sizeof key, "events.%s_%d.%s", kind, nsubs, name); \
        result_set(key, v);                                              \
    } while (0)
    ESET("published_per_s", pub_rate);
    ESET("received_per_s_per_sub", per_sub);
    ESET("received_per_s_min", (double)gmin / secs);
    ESET("received_per_s_total", (double)got / secs);
    ESET("missed", (double)missed);
    ESET("missed_pct", miss_pct);
    ESET("lossy_subscribers", (double)lossy);
    ESET("latency_p50_ms", samples_pct(&ss.lat, 50));
    ESET("latency_p99_ms", samples_pct(&ss.lat, 99));
    ESET("daemon_cpu_cores", (cpu1 - cpu0) / secs);
    ESET("threads_before", (double)threads0);
    ESET("threads_after", (double)threads1);
    ESET("rss_mb_growth", (double)(rss1 - rss0) / 1024.0);
#undef ESET
    rc = 0;
out:
    if (ss_open)
        subset_close(&ss);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* change -> subscriber latency, paced changes                          */

static int change_priority(jc_t *c, uint64_t id, int prio)
{
    msgpack_packer *pk = jc_begin(c, "change_job_priority");
    msgpack_pack_map(pk, 2);
    wire_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, id);
    wire_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, prio);
    return jc_call(c, 10000);
}

#define CHANGE_PERIOD 0.002 /* one change every 2 ms: no queueing */

static int ev_latency(daemon_t *d, const char *pub, jc_t *c, uint64_t first, int nsubs)
{
    subset_t ss;
    if (subset_open(&ss, pub, nsubs, 1, false) < 0) {
        fail("cannot open subscribers");
        return -1;
    }
    /* Subscriptions are live once an event reaches every subscriber. */
    int rc = -1;
    double end = bench_now() + 20;
    uint64_t id = first;
    while (atomic_load(&ss.ready) < nsubs && bench_now() < end) {
        if (change_priority(c, id++, 10) < 0)
            goto out;
        bench_sleep(0.02); /* poll interval */
    }
    if (atomic_load(&ss.ready) < nsubs)
        goto out;
    bench_sleep(0.1);
    quiet_gate();
    others_t o;
    others_begin(&o, d->pid);
    atomic_store(&ss.phase, 1);
    samples_t rt = {0};
    double next = bench_now();
    for (long i = 0; i < opt_ev_samples; i++) {
        double a = bench_now();
        if (change_priority(c, id++, 10) < 0)
            goto out;
        samples_add(&rt, (bench_now() - a) * 1e3);
        next += CHANGE_PERIOD; /* load pattern */
        bench_sleep(next - bench_now());
    }
    bench_sleep(0.2); /* the last events' flight */
    atomic_store(&ss.phase, 2);
    char key[96];
    snprintf(key, sizeof key, "events.latency_%d.others_cores", nsubs);
    double noise = noise_end(&o, key);
    long got = 0, missed = 0;
    for (int i = 0; i < nsubs; i++) {
        got += ss.subs[i].got;
        missed += ss.subs[i].missed;
    }
    printf("  %4d subscriber%s: change -> event received p50 %.3f ms  p99 %.3f ms  max %.3f ms"
           " (%zu samples; %ld received, %ld missed; change_job_priority round trip p50 %.3f"
           " ms); others %.2f\n",
           nsubs, nsubs > 1 ? "s" : " ", samples_pct(&ss.lat, 50), samples_pct(&ss.lat, 99),
           samples_pct(&ss.lat, 100), ss.lat.n, got, missed, samples_pct(&rt, 50), noise);
    snprintf(key, sizeof key, "events.latency_%d.p50_ms", nsubs);
    result_set(key, samples_pct(&ss.lat, 50));
    snprintf(key, sizeof key, "events.latency_%d.p99_ms", nsubs);
    result_set(key, samples_pct(&ss.lat, 99));
    snprintf(key, sizeof key, "events.latency_%d.missed", nsubs);
    result_set(key, (double)missed);
    samples_free(&rt);
    rc = 0;
out:
    subset_close(&ss);
    return rc;
}

static int ev_latency_all(void)
{
    daemon_t d;
    char pub[400];
    jc_t *c = NULL;
    int rc = -1;
    void *ctx = new_ctx(1, 64);
    const char *more[] = {"--max-running", "1", NULL};
    if (start_pub_daemon(&d, pub, sizeof pub, more) < 0)
        goto out;
    c = jc_open(ctx, d.endpoint);
    /* Job 1 blocks the run slot; the rest stay queued, so each
     * change_job_priority(id, 10) is one change and one event. */
    long need = 2 * (opt_ev_samples + 2000);
    if (!jc_submit_delay(c, BLOCKER_SECONDS, 0) || !jc_wait_stat(c, "running", 1, 10) ||
        submit_batches(c, need, 0, 0) < 0)
        goto out;
    printf("  change_job_priority on a queued job every %.0f ms, %ld changes; latency = the"
           " event's time (taken under the job's lock) to the subscriber's receipt (same"
           " clock):\n",
           CHANGE_PERIOD * 1e3, opt_ev_samples);
    if (ev_latency(&d, pub, c, 2, 1) < 0 ||
        ev_latency(&d, pub, c, 2 + (uint64_t)need / 2, opt_ev_subs) < 0)
        goto out;
    rc = 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* change -> wait_for_job_change reply, parked waiters                  */

typedef struct {
    jc_t **conns;
    int n;
    double *t_change; /* per waiter index: when its change was sent */
    double *t_reply;  /* when its answer arrived */
    _Atomic long answered, keepalives, errors;
    _Atomic int stop;
    pthread_t th;
} wset_t;

static void *wset_main(void *arg)
{
    wset_t *w = arg;
    zmq_pollitem_t *it = calloc((size_t)w->n, sizeof *it);
    for (int i = 0; i < w->n; i++)
        it[i] = (zmq_pollitem_t){.socket = w->conns[i]->sock, .events = ZMQ_POLLIN};
    while (!atomic_load(&w->stop)) {
        if (zmq_poll(it, w->n, 50) <= 0)
            continue;
        for (int i = 0; i < w->n; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            jc_t *c = w->conns[i];
            while (jc_recv(c, 0) == 0) {
                double now = bench_now();
                if (c->rep.keepalive) {
                    atomic_fetch_add(&w->keepalives, 1);
                    continue;
                }
                if (!c->rep.ok || !c->rep.has_id) {
                    atomic_fetch_add(&w->errors, 1);
                    continue;
                }
                /* Waiter k went out on connection k % n as its (k / n + 1)-th request. */
                long k = (long)(c->rep.id - 1) * w->n + i;
                w->t_reply[k] = now;
                atomic_fetch_add(&w->answered, 1);
            }
        }
    }
    free(it);
    return NULL;
}

static void pack_wait(jc_t *c, uint64_t job)
{
    msgpack_packer *pk = jc_begin(c, "wait_for_job_change");
    msgpack_pack_map(pk, 5);
    wire_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, job);
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, 2);
    wire_pack_cstr(pk, "status");
    wire_pack_cstr(pk, "priority");
    wire_pack_cstr(pk, "prev_job_info");
    msgpack_pack_array(pk, 2);
    wire_pack_cstr(pk, "queued");
    msgpack_pack_int(pk, 0);
    wire_pack_cstr(pk, "prev_log_serial");
    msgpack_pack_int(pk, 0);
    wire_pack_cstr(pk, "timeout");
    msgpack_pack_int(pk, 600);
}

/* Park n waiters (waiter k on job first + k, over the set's connections),
 * then change m of those jobs one every CHANGE_PERIOD and time each answer;
 * then change the rest as fast as one pipelined client can and time the
 * whole burst. */
static int waiters_run(daemon_t *d, jc_t *c, void *ctx, uint64_t first, long n, int nconn,
                       const char *label, const char *prefix)
{
    wset_t w = {0};
    w.n = nconn;
    w.conns = calloc((size_t)nconn, sizeof *w.conns);
    w.t_change = calloc((size_t)n, sizeof(double));
    w.t_reply = calloc((size_t)n, sizeof(double));
    int rc = -1;
    bool started = false;
    for (int i = 0; i < nconn; i++)
        w.conns[i] = jc_open(ctx, d->endpoint);
    long threads0 = proc_threads(d->pid), rss0 = proc_rss_settled(d->pid, 3);
    long long base = jc_stat(c, "waiters");
    if (pthread_create(&w.th, NULL, wset_main, &w) != 0)
        goto out;
    started = true;
    double tp = bench_now();
    for (long k = 0; k < n; k++) {
        pack_wait(w.conns[k % nconn], first + (uint64_t)k);
        jc_send(w.conns[k % nconn]);
    }
    if (!jc_wait_stat(c, "waiters", base + n, 60)) {
        fprintf(stderr, "jobq-bench: waiters: %lld of %ld parked\n", jc_stat(c, "waiters") - base,
                n);
        goto out;
    }
    double park_s = bench_now() - tp;
    long threads1 = proc_threads(d->pid), rss1 = proc_rss_settled(d->pid, 5);
    long m = n < opt_ev_samples ? n : opt_ev_samples;
    quiet_gate();
    others_t o;
    others_begin(&o, d->pid);
    double cpu0 = proc_cpu_seconds(d->pid), next = bench_now(), tw0 = next;
    for (long k = 0; k < m; k++) {
        w.t_change[k] = bench_now();
        if (change_priority(c, first + (uint64_t)k, 10) < 0)
            goto out;
        next += CHANGE_PERIOD; /* load pattern */
        bench_sleep(next - bench_now());
    }
    double end = bench_now() + 10;
    while (atomic_load(&w.answered) < m && bench_now() < end)
        bench_sleep(0.01); /* poll interval */
    double t_paced = bench_now();
    double cpu1 = proc_cpu_seconds(d->pid);
    long threads2 = proc_threads(d->pid);
    char key[96];
    snprintf(key, sizeof key, "%s.others_cores", prefix);
    double noise = noise_end(&o, key);
    samples_t lat = {0};
    for (long k = 0; k < m; k++)
        if (w.t_reply[k] > 0)
            samples_add(&lat, (w.t_reply[k] - w.t_change[k]) * 1e3);
    /* The burst: the remaining jobs' changes, pipelined 100 in flight. */
    double burst_s = 0;
    long rest = n - m;
    if (rest > 0) {
        double b0 = bench_now();
        long sent = 0, done = 0;
        while (done < rest) {
            while (sent < rest && sent - done < 100) {
                uint64_t id = first + (uint64_t)(m + sent);
                msgpack_packer *pk = jc_begin(c, "change_job_priority");
                msgpack_pack_map(pk, 2);
                wire_pack_cstr(pk, "id");
                msgpack_pack_uint64(pk, id);
                wire_pack_cstr(pk, "priority");
                msgpack_pack_int(pk, 10);
                jc_send(c);
                sent++;
            }
            if (jc_recv(c, 10000) < 0)
                goto out;
            done++;
        }
        end = bench_now() + 30;
        while (atomic_load(&w.answered) < n && bench_now() < end)
            bench_sleep(0.001); /* poll interval */
        burst_s = bench_now() - b0;
    }
    long threads3 = proc_threads(d->pid);
    long long left = jc_stat(c, "waiters") - base;
    printf("  %s: %ld parked (in %.2f s) over %d connection%s; daemon RSS %+.0f kB = %.0f B"
           " per parked waiter\n",
           label, n, park_s, nconn, nconn > 1 ? "s" : "", (double)(rss1 - rss0),
           (double)(rss1 - rss0) * 1024.0 / (double)n);
    printf("    change -> waiter's answer (change sent every %.0f ms): p50 %.3f ms  p99 %.3f ms"
           "  max %.3f ms (%zu of %ld answered); daemon %.2f cores; others %.2f\n",
           CHANGE_PERIOD * 1e3, samples_pct(&lat, 50), samples_pct(&lat, 99),
           samples_pct(&lat, 100), lat.n, m, (cpu1 - cpu0) / (t_paced - tw0), noise);
    if (rest > 0)
        printf("    then %ld changes pipelined from one client: all %ld waiters answered %.2f s"
               " after the first (%.0f answers/s)\n",
               rest, (long)atomic_load(&w.answered), burst_s, (double)rest / burst_s);
    printf("    daemon threads: %ld before, %ld parked, %ld during the changes, %ld after;"
           " keepalives received %ld; waiters left %lld; errors %ld\n",
           threads0, threads1, threads2, threads3, (long)atomic_load(&w.keepalives), left,
           (long)atomic_load(&w.errors));
#define WSET(name, v)                                              \
    do {                                                           \
        snprintf(key, sizeof key, "%s.%s", prefix, name);          \
        result_set(key, v);                                        \
    } while (0)
    WSET("waiters", (double)n);
    WSET("p50_ms", samples_pct(&lat, 50));
    WSET("p99_ms", samples_pct(&lat, 99));
    WSET("max_ms", samples_pct(&lat, 100));
    WSET("bytes_per_waiter", (double)(rss1 - rss0) * 1024.0 / (double)n);
    WSET("threads_before", (double)threads0);
    WSET("threads_parked", (double)threads1);
    WSET("threads_during", (double)threads2);
    WSET("threads_after", (double)threads3);
    if (rest > 0)
        WSET("burst_answers_per_s", (double)rest / burst_s);
#undef WSET
    rc = lat.n == (size_t)m && atomic_load(&w.errors) == 0 ? 0 : -1;
    samples_free(&lat);
out:
    if (started) {
        atomic_store(&w.stop, 1);
        pthread_join(w.th, NULL);
    }
    for (int i = 0; i < nconn; i++)
        jc_close(&w.conns[i]);
    free(w.conns);
    free(w.t_change);
    free(w.t_reply);
    return rc;
}

static int ev_waiters(void)
{
    daemon_t d;
    char pub[400];
    jc_t *c = NULL;
    int rc = -1;
    void *ctx = new_ctx(1, opt_waiter_conns + 64);
    char mw[32];
    snprintf(mw, sizeof mw, "%ld", opt_waiters + 1000);
    const char *more[] = {"--max-running", "1", "--max-waiters", mw, NULL};
    if (start_pub_daemon(&d, pub, sizeof pub, more) < 0)
        goto out;
    c = jc_open(ctx, d.endpoint);
    long single = opt_ev_samples < 200 ? opt_ev_samples : 200;
    if (!jc_submit_delay(c, BLOCKER_SECONDS, 0) || !jc_wait_stat(c, "running", 1, 10) ||
        submit_batches(c, single + opt_waiters, 0, 0) < 0)
        goto out;
    printf("  wait_for_job_change on queued jobs (fields status,priority; prev [queued, 0];"
           " timeout 600 s; --keepalive 5), each answered by a change_job_priority(10):\n");
    /* One waiter alone, parked and answered `single` times in turn. */
    {
        samples_t lat = {0};
        jc_t *w = jc_open(ctx, d.endpoint);
        long long base = jc_stat(c, "waiters");
        for (long k = 0; k < single; k++) {
            uint64_t job = 2 + (uint64_t)k;
            pack_wait(w, job);
            jc_send(w);
            if (!jc_wait_stat(c, "waiters", base + 1, 10))
                break;
            double a = bench_now();
            msgpack_packer *pk = jc_begin(c, "change_job_priority");
            msgpack_pack_map(pk, 2);
            wire_pack_cstr(pk, "id");
            msgpack_pack_uint64(pk, job);
            wire_pack_cstr(pk, "priority");
            msgpack_pack_int(pk, 10);
            jc_send(c);
            int answers = 0;
            while (answers < 2) {
                zmq_pollitem_t it[2] = {{.socket = w->sock, .events = ZMQ_POLLIN},
                                        {.socket = c->sock, .events = ZMQ_POLLIN}};
                if (zmq_poll(it, 2, 10000) <= 0)
                    break;
                if (it[0].revents && jc_recv(w, 0) == 0 && !w->rep.keepalive) {
                    samples_add(&lat, (bench_now() - a) * 1e3);
                    answers++;
                }
                if (it[1].revents && jc_recv(c, 0) == 0)
                    answers++;
            }
            if (answers < 2)
                break;
        }
        jc_close(&w);
        printf("  1 waiter on its own: change -> answer p50 %.3f ms  p99 %.3f ms  max %.3f ms"
               " (%zu samples)\n",
               samples_pct(&lat, 50), samples_pct(&lat, 99), samples_pct(&lat, 100), lat.n);
        result_set("events.waiter_1.p50_ms", samples_pct(&lat, 50));
        result_set("events.waiter_1.p99_ms", samples_pct(&lat, 99));
        bool ok = lat.n == (size_t)single;
        samples_free(&lat);
        if (!ok) {
            fail("waiters: a single waiter was not answered");
            goto out;
        }
    }
    char label[64];
    snprintf(label, sizeof label, "%ld waiters", opt_waiters);
    rc = waiters_run(&d, c, ctx, 2 + (uint64_t)single, opt_waiters, opt_waiter_conns, label,
                     "events.waiters");
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

int workload_events(void)
{
    section("6. Event stream");
    int rc = 0;
    printf(" events published and received (every job; jobqd's default --publish-hwm, the"
           " subscribers' default SUB high-water mark 1000):\n");
    if (ev_rate(1, false) < 0 || ev_rate(opt_ev_subs, false) < 0)
        rc = -1;
    printf(" the batched stream (topic batch/, many events a message), same load:\n");
    if (ev_rate(opt_ev_subs, true) < 0)
        rc = -1;
    printf(" change -> subscriber latency:\n");
    if (ev_latency_all() < 0)
        rc = -1;
    printf(" change -> wait_for_job_change answer:\n");
    if (ev_waiters() < 0)
        rc = -1;
    return rc;
}
