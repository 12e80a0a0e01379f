/* http.c: workload 13, the HTTP thread's cost (issue 12). Four phases,
 * each on a fresh jobqd with the same options: (a) no --http, (b) --http
 * with nobody connected, (c) --http with a dashboard open — overview
 * streams and one job stream read continuously, /api/workers and
 * /api/jobs?limit=50 every 2 s as the page polls them — and a Prometheus
 * scraper (/metrics every second), (a') no --http again. In each, beside a
 * steady background of submissions (so the streams have work): the
 * daemon's cores with the background alone, query_jobs of a 50-job page
 * (latency), submit_job one at a time (latency, jobs/s), the daemon's CPU
 * per request and its threads; then the phases side by side.
 *
 * The HTTP client is a minimal one on plain sockets: one request per
 * connection (Connection: close); the streams' chunked bodies are decoded
 * and their SSE event lines counted. */
#include "workloads.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#define HTTP_TIMEOUT_MS 10000
#define PAGE_ROWS 50
#define BG_PERIOD 0.01 /* the background submitter sends a batch every 10 ms */

/* (a) again last: how far the figures drift within the run (the order
 * of the phases, the machine), to read the ratios against. */
enum { PH_OFF, PH_IDLE, PH_DASH, PH_OFF2, NPHASES };
static const char *const PHASE_KEY[NPHASES] = {"off", "idle", "dashboard", "off_again"};
static const char *const PHASE_LABEL[NPHASES] = {
    "(a) no --http", "(b) --http, nobody connected", "(c) --http, dashboard + scraper",
    "(a') no --http, again"};
static const char *const RATIO_LABEL[NPHASES] = {"", "ratio (b)/(a)", "ratio (c)/(a)",
                                                 "ratio (a')/(a): the drift"};

/* ------------------------------------------------------------------ */
/* a minimal HTTP/1.1 client                                            */

/* A GET sent on a fresh connection to 127.0.0.1:port; the socket, -1 on
 * error. */
static int http_open(int port, const char *path, const char *accept)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: %s\r\n"
                     "Connection: close\r\n\r\n",
                     path, port, accept);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One response read as it arrives: the head, then the body (chunked or
 * not), whose lines go to the SSE counters. */
typedef struct {
    int fd;
    int status; /* 0 until the head is in; -1 a malformed head */
    bool in_body, chunked, ended;
    char head[4096];
    size_t hlen;
    enum { CH_SIZE, CH_DATA, CH_CRLF, CH_END } cs;
    char size[24];
    size_t slen, left;
    char line[64]; /* the start of the current line: enough for "event: NAME" */
    size_t llen;
    long bytes;                         /* body bytes */
    long hello, tick, snapshot, record; /* SSE events by name */
    long other;
} resp_t;

static void sse_line(resp_t *r)
{
    r->line[r->llen] = 0;
    r->llen = 0;
    if (strncmp(r->line, "event: ", 7) != 0)
        return;
    const char *e = r->line + 7;
    long *n = !strcmp(e, "tick")       ? &r->tick
              : !strcmp(e, "record")   ? &r->record
              : !strcmp(e, "hello")    ? &r->hello
              : !strcmp(e, "snapshot") ? &r->snapshot
                                       : &r->other;
    (*n)++;
}

static void body_bytes(resp_t *r, const char *p, size_t n)
{
    r->bytes += (long)n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n')
            sse_line(r);
        else if (r->llen < sizeof r->line - 1)
            r->line[r->llen++] = p[i];
    }
}

static void head_done(resp_t *r)
{
    r->head[r->hlen] = 0;
    int st = 0;
    r->status = sscanf(r->head, "HTTP/1.%*d %d", &st) == 1 && st > 0 ? st : -1;
    for (const char *p = strchr(r->head, '\n'); p; p = strchr(p + 1, '\n'))
        if (!strncasecmp(p + 1, "transfer-encoding:", 18) &&
            memmem(p + 1, strcspn(p + 1, "\r\n"), "chunked", 7))
            r->chunked = true;
    r->in_body = true;
}

static void resp_feed(resp_t *r, const char *p, size_t n)
{
    while (n > 0 && !r->ended) {
        if (!r->in_body) {
            r->head[r->hlen++] = *p++;
            n--;
            if (r->hlen >= 4 && !memcmp(r->head + r->hlen - 4, "\r\n\r\n", 4))
                head_done(r);
            else if (r->hlen == sizeof r->head - 1)
                r->status = -1, r->ended = true;
        } else if (!r->chunked) {
            body_bytes(r, p, n);
            return;
        } else if (r->cs == CH_DATA) {
            size_t k = n < r->left ? n : r->left;
            body_bytes(r, p, k);
            p += k;
            n -= k;
            r->left -= k;
            if (!r->left)
                r->cs = CH_CRLF;
        } else {
            char c = *p++;
            n--;
            if (r->cs == CH_CRLF && c == '\n') {
                r->cs = CH_SIZE;
            } else if (r->cs == CH_SIZE && c == '\n') { /* "1a3\r\n" (extensions ignored) */
                r->size[r->slen] = 0;
                r->left = strtoul(r->size, NULL, 16);
                r->slen = 0;
                r->cs = r->left ? CH_DATA : CH_END;
                r->ended = !r->left;
            } else if (r->cs == CH_SIZE && r->slen < sizeof r->size - 1) {
                r->size[r->slen++] = c;
            }
        }
    }
}

/* Reads what is there; false at the end of the response or on error. */
static bool resp_read(resp_t *r)
{
    char buf[16384];
    ssize_t n = read(r->fd, buf, sizeof buf);
    if (n <= 0)
        return n < 0 && (errno == EINTR || errno == EAGAIN);
    resp_feed(r, buf, (size_t)n);
    return !r->ended;
}

/* One GET, read to the end: its status (0: no answer in time). */
static int http_get(int port, const char *path, long *bytes)
{
    resp_t r = {.fd = http_open(port, path, "*/*")};
    if (r.fd < 0)
        return 0;
    struct pollfd p = {.fd = r.fd, .events = POLLIN};
    while (poll(&p, 1, HTTP_TIMEOUT_MS) > 0 && resp_read(&r))
        ;
    close(r.fd);
    *bytes = r.bytes;
    return r.status > 0 ? r.status : 0;
}

/* ------------------------------------------------------------------ */
/* the dashboard and the scraper                                        */

enum { G_METRICS, G_WORKERS, G_JOBS, NGETS };
static const char *const GET_PATH[NGETS] = {"/metrics", "/api/workers", "/api/jobs?limit=50"};
static const double GET_EVERY[NGETS] = {1, 2, 2}; /* seconds: Prometheus, the page's polls */

typedef struct {
    int port, nstreams; /* overview streams; one job stream after them */
    uint64_t job;
    resp_t *s;
    _Atomic int ready; /* streams that got their first event */
    _Atomic bool stop;
    pthread_t reader, poller;
    /* the poller's, read after it is joined */
    long gets[NGETS], non200[NGETS], failed[NGETS], bytes[NGETS];
    int bad_status[NGETS]; /* the last status other than 200 */
    samples_t lat[NGETS];  /* ms */
    double t0, t1;
} dash_t;

static void *reader_main(void *arg)
{
    dash_t *d = arg;
    int n = d->nstreams + 1;
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    bool *seen = calloc((size_t)n, sizeof *seen);
    for (int i = 0; i < n; i++)
        p[i] = (struct pollfd){.fd = d->s[i].fd, .events = POLLIN};
    while (!atomic_load(&d->stop)) {
        if (poll(p, (nfds_t)n, 100) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            resp_t *r = &d->s[i];
            if (!p[i].revents)
                continue;
            if (!resp_read(r)) {
                r->ended = true;
                p[i].fd = -1; /* closed by the server: reported after the phase */
            }
            if (!seen[i] && r->hello + r->snapshot > 0) {
                seen[i] = true;
                atomic_fetch_add(&d->ready, 1);
            }
        }
    }
    free(p);
    free(seen);
    return NULL;
}

static void *poller_main(void *arg)
{
    dash_t *d = arg;
    double next[NGETS];
    for (int g = 0; g < NGETS; g++)
        next[g] = bench_now();
    while (!atomic_load(&d->stop)) {
        double now = bench_now(), soonest = now + 0.1;
        for (int g = 0; g < NGETS; g++) {
            if (now >= next[g]) {
                long bytes = 0;
                double a = bench_now();
                int st = http_get(d->port, GET_PATH[g], &bytes);
                samples_add(&d->lat[g], (bench_now() - a) * 1e3);
                d->gets[g]++;
                d->bytes[g] += bytes;
                if (!st) {
                    d->failed[g]++;
                } else if (st != 200) {
                    d->non200[g]++;
                    d->bad_status[g] = st;
                }
                next[g] += GET_EVERY[g]; /* the load pattern: a fixed schedule */
            }
            if (next[g] < soonest)
                soonest = next[g];
        }
        bench_sleep(soonest - bench_now());
    }
    return NULL;
}

/* Opens the streams and starts the reader and the poller; 0 once every
 * stream has its first event. */
static int dash_start(dash_t *d, int port, uint64_t job)
{
    d->port = port;
    d->job = job;
    d->nstreams = opt_http_streams;
    d->s = calloc((size_t)d->nstreams + 1, sizeof *d->s);
    for (int i = 0; i <= d->nstreams; i++) {
        char path[64];
        if (i < d->nstreams)
            snprintf(path, sizeof path, "/events");
        else
            snprintf(path, sizeof path, "/events?job=%llu", (unsigned long long)job);
        d->s[i].fd = http_open(port, path, "text/event-stream");
        if (d->s[i].fd < 0) {
            fprintf(stderr, "jobq-bench: http: cannot open %s: %s\n", path, strerror(errno));
            for (int k = 0; k < i; k++)
                close(d->s[k].fd);
            free(d->s);
            d->s = NULL;
            return -1;
        }
    }
    d->t0 = bench_now();
    pthread_create(&d->reader, NULL, reader_main, d);
    pthread_create(&d->poller, NULL, poller_main, d);
    double end = bench_now() + 10;
    while (atomic_load(&d->ready) < d->nstreams + 1 && bench_now() < end)
        bench_sleep(0.02); /* poll interval */
    if (atomic_load(&d->ready) < d->nstreams + 1) {
        fprintf(stderr, "jobq-bench: http: %d of %d streams sent nothing in 10 s\n",
                d->nstreams + 1 - atomic_load(&d->ready), d->nstreams + 1);
        return -1;
    }
    return 0;
}

static void dash_stop(dash_t *d)
{
    if (!d->s)
        return;
    atomic_store(&d->stop, true);
    pthread_join(d->reader, NULL);
    pthread_join(d->poller, NULL);
    d->t1 = bench_now();
    for (int i = 0; i <= d->nstreams; i++)
        close(d->s[i].fd);
}

static void dash_free(dash_t *d)
{
    for (int g = 0; g < NGETS; g++)
        samples_free(&d->lat[g]);
    free(d->s);
    d->s = NULL;
}

/* What the dashboard saw, after dash_stop. A stream the server ended or
 * refused, and answers other than 200, are shown, not fatal: /metrics and
 * /api/workers may still be stubs answering 500. */
static void dash_report(dash_t *d)
{
    double secs = d->t1 - d->t0;
    long tmin = -1, tmax = 0, ended = 0, bad = 0;
    for (int i = 0; i <= d->nstreams; i++) {
        const resp_t *r = &d->s[i];
        ended += r->ended;
        bad += r->status != 200;
        if (i < d->nstreams) {
            tmin = tmin < 0 || r->tick < tmin ? r->tick : tmin;
            tmax = r->tick > tmax ? r->tick : tmax;
        }
    }
    const resp_t *j = &d->s[d->nstreams];
    printf("    dashboard, %.1f s: %d overview streams, %ld-%ld ticks each (%.1f/s); job %llu's"
           " stream: %ld snapshot, %ld records (%.0f/s)\n",
           secs, d->nstreams, tmin, tmax, (double)tmin / secs, (unsigned long long)d->job,
           j->snapshot, j->record, (double)j->record / secs);
    if (ended || bad)
        printf("    STREAMS: %ld ended by the server, %ld answered other than 200\n", ended, bad);
    result_set("http.dashboard.ticks_per_stream_per_s", (double)tmin / secs);
    result_set("http.dashboard.job_records_per_s", (double)j->record / secs);
    result_set("http.dashboard.streams_ended", (double)(ended + bad));
    static const char *const name[NGETS] = {"metrics", "workers", "jobs"};
    for (int g = 0; g < NGETS; g++) {
        char bad_st[32] = "";
        if (d->non200[g])
            snprintf(bad_st, sizeof bad_st, " (last %d)", d->bad_status[g]);
        printf("    GET %-20s %3ld: %ld not 200%s, %ld no answer; p50 %.2f ms, max %.2f ms,"
               " %.0f bytes each\n",
               GET_PATH[g], d->gets[g], d->non200[g], bad_st, d->failed[g],
               samples_pct(&d->lat[g], 50), samples_pct(&d->lat[g], 100),
               d->gets[g] ? (double)d->bytes[g] / (double)d->gets[g] : 0.0);
        char k[96];
        snprintf(k, sizeof k, "http.dashboard.get_%s.non200", name[g]);
        result_set(k, (double)d->non200[g]);
        snprintf(k, sizeof k, "http.dashboard.get_%s.no_answer", name[g]);
        result_set(k, (double)d->failed[g]);
    }
}

/* ------------------------------------------------------------------ */
/* the background submitter                                             */

typedef struct {
    const char *ep;
    void *ctx;
    _Atomic bool stop;
    char err[256];
    pthread_t th;
} bg_t;

/* submit_many_jobs of rate/100 jobs every 10 ms: each job one change. */
static void *bg_main(void *arg)
{
    bg_t *b = arg;
    jc_t *c = jc_open(b->ctx, b->ep);
    long per = lround(opt_http_rate * BG_PERIOD);
    if (per < 1)
        per = 1;
    double next = bench_now();
    while (!atomic_load(&b->stop)) {
        long ok = jc_submit_many_delay(c, (uint32_t)per, 0, 0);
        if (ok != per) {
            snprintf(b->err, sizeof b->err, "submit_many_jobs: %.200s", c->errbuf);
            break;
        }
        next += BG_PERIOD; /* the load pattern */
        bench_sleep(next - bench_now());
    }
    jc_close(&c);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* one phase                                                            */

typedef struct {
    double list_p50, list_p99, list_per_s, sub_p50, sub_p99, sub_per_s;
    double bg_cores;       /* the daemon with the background (and dashboard) only */
    double http_cores;     /* its HTTP thread, over the three windows */
    double us_per_list, us_per_submit; /* daemon CPU beyond bg_cores, per request */
    double changes_per_s, noise;
    long threads;
    char by_thread[400]; /* the daemon's threads' cores in the background window */
} phase_t;

/* query_jobs of the first PAGE_ROWS jobs (LIST_FIELDS); rows, -1 on failure. */
static long list_page(jc_t *c)
{
    msgpack_packer *pk = jc_begin(c, "query_jobs");
    msgpack_pack_map(pk, 2);
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, 4);
    for (int i = 0; i < 4; i++)
        wire_pack_cstr(pk, LIST_FIELDS[i]);
    wire_pack_cstr(pk, "limit");
    msgpack_pack_uint32(pk, PAGE_ROWS);
    if (jc_call(c, 30000) < 0)
        return -1;
    const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
    return rows && rows->type == MSGPACK_OBJECT_ARRAY ? (long)rows->via.array.size : -1;
}

/* RUN_DIR/http.port (the run directory is the data directory here). */
static int http_port(const daemon_t *d)
{
    char path[400];
    snprintf(path, sizeof path, "%s/http.port", d->dir);
    double end = bench_now() + 10;
    for (;;) {
        FILE *f = fopen(path, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port > 0 || bench_now() > end)
            return port;
        bench_sleep(0.05); /* poll interval */
    }
}

/* The HTTP thread: one named for it, else jobqd's only unnamed thread
 * beside the main one (the others are named: store, executors, handlers,
 * libzmq's). */
static bool is_http_thread(const thread_cpu_t *t, pid_t pid)
{
    return strstr(t->name, "http") || (t->tid != pid && !strcmp(t->name, "jobqd"));
}

/* CPU seconds of the HTTP thread; 0 without --http. */
static double http_thread_cpu(pid_t pid)
{
    thread_cpu_t t[128];
    int n = proc_threads_cpu(pid, t, 128);
    double sum = 0;
    for (int i = 0; i < n; i++)
        if (is_http_thread(&t[i], pid))
            sum += t[i].cpu;
    return sum;
}

/* "name cores ..." of the daemon's threads between two readings, summed
 * by name without its digits (executors together, libzmq's together). */
static void by_thread(pid_t pid, const thread_cpu_t *a, int na, const thread_cpu_t *b, int nb,
                      double secs, char *out, size_t len)
{
    char names[16][32];
    double cores[16];
    int n = 0;
    for (int i = 0; i < nb; i++) {
        double before = 0;
        for (int j = 0; j < na; j++)
            if (a[j].tid == b[i].tid)
                before = a[j].cpu;
        char name[32];
        snprintf(name, sizeof name, "%s",
                 b[i].tid == pid ? "main" : is_http_thread(&b[i], pid) ? "http" : b[i].name);
        name[strcspn(name, "0123456789")] = 0;
        int k = 0;
        while (k < n && strcmp(names[k], name))
            k++;
        if (k == n && n == 16)
            continue;
        if (k == n) {
            snprintf(names[n], sizeof names[n], "%s", name);
            cores[n++] = 0;
        }
        cores[k] += (b[i].cpu - before) / secs;
    }
    size_t used = 0;
    out[0] = 0;
    for (int k = 0; k < n && used < len; k++)
        used += (size_t)snprintf(out + used, len - used, "%s%s %.3f", k ? ", " : "", names[k],
                                 cores[k]);
}

/* The measured windows on a ready daemon: the background (and dashboard)
 * alone, then lists, then submits. A request's CPU is what the daemon used
 * beyond the background's rate, so that the background's share does not
 * depend on how fast the requests went. */
static int measure(const daemon_t *d, jc_t *c, phase_t *r)
{
    others_t o, o2;
    others_begin(&o, d->pid);
    long long ch0 = jc_stat(c, "changes");
    thread_cpu_t th0[128], th1[128];
    int nth0 = proc_threads_cpu(d->pid, th0, 128);
    double h0 = http_thread_cpu(d->pid), cpu0 = proc_cpu_seconds(d->pid), t0 = bench_now();
    bench_sleep(opt_http_seconds); /* the background window */
    double cpu1 = proc_cpu_seconds(d->pid), t1 = bench_now();
    int nth1 = proc_threads_cpu(d->pid, th1, 128);
    by_thread(d->pid, th0, nth0, th1, nth1, t1 - t0, r->by_thread, sizeof r->by_thread);
    r->bg_cores = (cpu1 - cpu0) / (t1 - t0);
    samples_t lat = {0};
    while (bench_now() - t1 < opt_http_seconds) {
        double a = bench_now();
        long rows = list_page(c);
        if (rows != PAGE_ROWS) {
            fprintf(stderr, "jobq-bench: http: query_jobs gave %ld rows: %s\n", rows, c->errbuf);
            samples_free(&lat);
            return -1;
        }
        samples_add(&lat, (bench_now() - a) * 1e3);
    }
    double cpu2 = proc_cpu_seconds(d->pid), t2 = bench_now();
    long errors, submits = 0;
    r->sub_per_s = run_workers(W_SUBMIT, 1, d->endpoint, 0, 1L << 40, d->pid, opt_http_seconds,
                               &r->sub_p50, &r->sub_p99, &errors, &o2, &submits);
    double cpu3 = proc_cpu_seconds(d->pid), t3 = bench_now();
    r->http_cores = (http_thread_cpu(d->pid) - h0) / (t3 - t0);
    long long ch1 = jc_stat(c, "changes");
    r->threads = (long)jc_stat(c, "threads");
    r->noise = others_end(&o);
    r->list_p50 = samples_pct(&lat, 50);
    r->list_p99 = samples_pct(&lat, 99);
    r->list_per_s = (double)lat.n / (t2 - t1);
    r->us_per_list = (cpu2 - cpu1 - r->bg_cores * (t2 - t1)) / (double)lat.n * 1e6;
    r->us_per_submit =
        submits ? (cpu3 - cpu2 - r->bg_cores * (t3 - t2)) / (double)submits * 1e6 : NAN;
    r->changes_per_s = (double)(ch1 - ch0) / (t3 - t0);
    samples_free(&lat);
    return errors ? -1 : 0;
}

/* One phase on a fresh daemon: 0 when measured; *again when other
 * processes were busy (0.25 cores or more) and attempt allows another. */
static int phase_run(int ph, phase_t *r, int attempt, bool *again)
{
    void *ctx = new_ctx(1, 64);
    daemon_t d = {0};
    jc_t *c = NULL;
    bg_t bg = {.ctx = ctx};
    dash_t dash = {0};
    bool bg_on = false;
    int rc = -1, port = 0;
    long bytes;
    *again = false;
    bool http = ph == PH_IDLE || ph == PH_DASH;
    const char *extra[] = {"--max-running", "1", "--max-jobs", "10000000",
                           http ? "--http" : NULL, "127.0.0.1:0", NULL};
    quiet_gate();
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    /* Job 1 logs every 10 ms and holds the only run slot: every job after
     * it stays queued, and the job stream has records. */
    uint64_t job = jc_submit_delay(c, 0.01, LONG_REPEAT);
    if (!job || !jc_wait_stat(c, "running", 1, 10) || submit_batches(c, opt_http_jobs, 0, 0) < 0)
        goto out;
    if (http &&
        ((port = http_port(&d)) <= 0 || http_get(port, "/api/session", &bytes) != 200)) {
        fprintf(stderr, "jobq-bench: http: the HTTP endpoint (port %d) does not answer\n", port);
        goto out;
    }
    bg.ep = d.endpoint;
    pthread_create(&bg.th, NULL, bg_main, &bg);
    bg_on = true;
    if (ph == PH_DASH && dash_start(&dash, port, job) < 0)
        goto out;
    bench_sleep(1); /* the load pattern: let the streams and the background settle */
    rc = measure(&d, c, r);
out:
    dash_stop(&dash);
    atomic_store(&bg.stop, true);
    if (bg_on)
        pthread_join(bg.th, NULL);
    if (bg.err[0]) {
        fprintf(stderr, "jobq-bench: http: background: %s\n", bg.err);
        rc = -1;
    }
    if (rc == 0 && r->noise >= 0.25 && attempt < 2 && opt_quiet_wait > 0) {
        printf("  %-34s (others used %.2f cores: measured again)\n", PHASE_LABEL[ph], r->noise);
        *again = true;
    } else if (rc == 0) {
        printf("  %s: %.0f lists/s, %.0f submits/s, %.0f changes/s (stats changes); daemon"
               " %.2f cores with the background alone, HTTP thread %.3f cores; threads %ld;"
               " others %.2f cores\n",
               PHASE_LABEL[ph], r->list_per_s, r->sub_per_s, r->changes_per_s, r->bg_cores,
               r->http_cores, r->threads, r->noise);
        printf("    daemon threads with the background alone (cores): %s\n", r->by_thread);
        if (dash.s)
            dash_report(&dash);
    }
    dash_free(&dash);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the table                                                            */

enum { NCOLS = 9 };
static const char *const COL_KEY[NCOLS] = {
    "list_p50_ms",   "list_p99_ms",        "submit_p50_ms",        "submit_p99_ms",
    "submit_per_s",  "daemon_us_per_list", "daemon_us_per_submit", "daemon_bg_cores",
    "http_thread_cores"};
static const char *const COL_FMT[NCOLS] = {" %8.3f", " %8.3f", " %8.3f", " %8.3f", " %8.0f",
                                           " %8.1f", " %8.1f", " %8.2f", " %8.3f"};

static double col(const phase_t *p, int i)
{
    const double v[NCOLS] = {p->list_p50,     p->list_p99,      p->sub_p50,
                             p->sub_p99,      p->sub_per_s,     p->us_per_list,
                             p->us_per_submit, p->bg_cores,     p->http_cores};
    return v[i];
}

static void table(const phase_t *p)
{
    printf("\n  %-34s %8s %8s %8s %8s %8s %8s %8s %8s %8s %7s\n",
           "(ms, jobs/s, us and cores of CPU)", "list p50", "list p99", "sub p50", "sub p99",
           "submit/s", "us/list", "us/sub", "bg cores", "http thr", "threads");
    char k[96];
    for (int ph = 0; ph < NPHASES; ph++) {
        printf("  %-34s", PHASE_LABEL[ph]);
        for (int i = 0; i < NCOLS; i++) {
            printf(COL_FMT[i], col(&p[ph], i));
            snprintf(k, sizeof k, "http.%s.%s", PHASE_KEY[ph], COL_KEY[i]);
            result_set(k, col(&p[ph], i));
        }
        printf(" %7ld\n", p[ph].threads);
        snprintf(k, sizeof k, "http.%s.threads", PHASE_KEY[ph]);
        result_set(k, (double)p[ph].threads);
        snprintf(k, sizeof k, "http.%s.changes_per_s", PHASE_KEY[ph]);
        result_set(k, p[ph].changes_per_s);
        snprintf(k, sizeof k, "http.%s.others_cores", PHASE_KEY[ph]);
        result_set(k, p[ph].noise);
    }
    /* Ratios of everything but the HTTP thread's cores (0 in (a)); the
     * threads as a difference. */
    for (int ph = PH_IDLE; ph < NPHASES; ph++) {
        printf("  %-34s", RATIO_LABEL[ph]);
        for (int i = 0; i < NCOLS - 1; i++) {
            double x = col(&p[ph], i) / col(&p[PH_OFF], i);
            printf(" %8.2f", x);
            snprintf(k, sizeof k, "http.ratio_%s.%s", PHASE_KEY[ph], COL_KEY[i]);
            result_set(k, x);
        }
        printf(" %8s %+7ld\n", "", p[ph].threads - p[PH_OFF].threads);
    }
}

int workload_http(void)
{
    section("13. The HTTP thread's cost: list and submit with a dashboard open");
    printf("  each phase a fresh jobqd (--max-running 1, --sync %s): job 1 test.delay(0.01,"
           " repeat %ld) logs and holds the run slot, %ld jobs queued behind it; background"
           " submit_many_jobs of %ld jobs every 10 ms (%.0f changes/s); %.1f s of the background"
           " alone (daemon cores), %.1f s of query_jobs (first %d jobs, one client), %.1f s of"
           " submit_job (one client); us/list and us/sub: the daemon's CPU beyond the"
           " background's cores, per request\n",
           opt_sync ? opt_sync : "always", LONG_REPEAT, opt_http_jobs,
           lround(opt_http_rate * BG_PERIOD), opt_http_rate, opt_http_seconds, opt_http_seconds,
           PAGE_ROWS, opt_http_seconds);
    printf("  (c): %d overview streams (GET /events) + job 1's stream, GET /api/workers and"
           " /api/jobs?limit=50 every 2 s, GET /metrics every 1 s; (a'): (a) again, last\n",
           opt_http_streams);
    phase_t p[NPHASES];
    int rc = 0;
    for (int ph = 0; ph < NPHASES && rc == 0; ph++) {
        bool again = true;
        for (int attempt = 0; again && rc == 0; attempt++)
            rc = phase_run(ph, &p[ph], attempt, &again);
    }
    if (rc == 0)
        table(p);
    return rc;
}
