/* core.c: workload 9, the core: what the scheduler and the store do under
 * the loads that hurt the previous release (run it with --jobqd of each
 * release and compare the two reports side by side).
 *
 * 1. query and submit latency, idle and under a heavy log load, --sync
 *    always: one client alternates query_jobs of 10 fixed ids (fields
 *    id,status,log_serial) and, every 10th iteration, a submit_job of
 *    test.delay(0), one request in flight; first with nothing running,
 *    then with --core-busy-jobs jobs logging every 10 ms (nominal 100 log
 *    entries/s each); alongside, the records the store committed per second
 *    (stats store.records) and its backlog (store.queued) at the end.
 * 2. one job with --core-log-entries log entries, end to end: from the
 *    submit's answer to success (polled every 20 ms, at most
 *    --core-biglog-timeout s), one query_jobs of its oplog (time, reply
 *    bytes), SIGTERM, the daemon again on the same data directory (exec ->
 *    first ping) and the oplog query again.
 * 3. scheduler throughput, --shards 1 against --shards 64, while one shard
 *    is hot: job D (test.delay 0) succeeds, 63 fillers follow so that job H
 *    (test.delay 0, repeat 100,000, logging flat out) lands in D's shard;
 *    once H runs, --core-jobs jobs each depending on D are submitted in
 *    batches of 1,000 and timed until they are all done (stats jobs).
 *
 * Error answers are counted, not fatal: Busy (the store is far behind) and
 * StoreFailed (it cannot commit) apart, the rest as "other". */
#include "workloads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define POLL_S 0.02      /* poll interval while waiting for a job's state */
#define DONE_POLL_S 0.005 /* stats poll interval while timing the dependent jobs */

/* ------------------------------------------------------------------ */
/* requests and errors                                                  */

typedef struct {
    long busy, store_failed, other, no_reply;
    char first[200]; /* the first error's text */
} cerrs_t;

static long cerrs_total(const cerrs_t *e)
{
    return e->busy + e->store_failed + e->other + e->no_reply;
}

static void cerrs_note(cerrs_t *e, const char *what, const char *msg)
{
    if (!e->first[0])
        snprintf(e->first, sizeof e->first, "%.40s: %.150s", what, msg);
}

/* rc as crpc's: 1 an error answer (c->rep.code), -1 none. */
static void cerrs_count(cerrs_t *e, jc_t *c, int rc, const char *what)
{
    if (rc < 0)
        e->no_reply++;
    else if (c->rep.code == JOBQ_ERR_BUSY)
        e->busy++;
    else if (c->rep.code == JOBQ_ERR_STORE_FAILED)
        e->store_failed++;
    else
        e->other++;
    cerrs_note(e, what, c->errbuf);
}

static const char *cerrs_str(const cerrs_t *e)
{
    static char buf[400];
    if (!cerrs_total(e))
        return "errors: none";
    snprintf(buf, sizeof buf, "ERRORS: Busy %ld, StoreFailed %ld, other %ld, no reply %ld"
             " (first: %s)",
             e->busy, e->store_failed, e->other, e->no_reply, e->first);
    return buf;
}

static void cerrs_record(const cerrs_t *e, const char *prefix)
{
    char k[128];
    snprintf(k, sizeof k, "%s_errors_busy", prefix);
    result_set(k, (double)e->busy);
    snprintf(k, sizeof k, "%s_errors_store_failed", prefix);
    result_set(k, (double)e->store_failed);
    snprintf(k, sizeof k, "%s_errors_other", prefix);
    result_set(k, (double)(e->other + e->no_reply));
}

/* Send the request built in c and wait for its answer: 0 ok, 1 an error
 * answer (its code in c->rep.code, text in c->errbuf), -1 no answer. */
static int crpc(jc_t *c, int timeout_ms)
{
    if (jc_send(c) < 0) {
        snprintf(c->errbuf, sizeof c->errbuf, "send failed");
        return -1;
    }
    double end = bench_now() + timeout_ms / 1e3;
    for (;;) {
        double left = end - bench_now();
        if (jc_recv(c, left > 0 ? (int)(left * 1e3) + 1 : 0) < 0) {
            snprintf(c->errbuf, sizeof c->errbuf, "no reply within %d ms", timeout_ms);
            return -1;
        }
        if (c->rep.keepalive || !c->rep.has_id || c->rep.id != c->last_sent_id)
            continue; /* a stale answer to an earlier, timed-out request */
        if (!c->rep.ok) {
            snprintf(c->errbuf, sizeof c->errbuf, "%s: %.*s", jobq_code_name(c->rep.code),
                     (int)c->rep.message_len, c->rep.message ? c->rep.message : "");
            return 1;
        }
        return 0;
    }
}

/* submit_job of one test.delay: the id, 0 on failure (counted in e). */
static uint64_t submit_one(jc_t *c, double duration, long repeat, cerrs_t *e)
{
    msgpack_packer *pk = jc_begin(c, "submit_job");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "ops");
    pack_delay_job(pk, duration, repeat);
    int rc = crpc(c, 10000);
    int64_t id = 0;
    if (rc == 0 && wire_get_int(c->rep.result, &id) && id > 0)
        return (uint64_t)id;
    if (rc == 0) {
        rc = 1;
        c->rep.code = JOBQ_ERR_INTERNAL;
        snprintf(c->errbuf, sizeof c->errbuf, "submit_job answered without an id");
    }
    cerrs_count(e, c, rc, "submit_job");
    return 0;
}

/* submit_many_jobs of n test.delay jobs (each depending on dep when > 0);
 * the first and last accepted ids into *first and *last (either may be
 * NULL; *first is set only when 0). Returns the jobs accepted; refused jobs
 * and a refused call are counted in e. */
static long submit_many(jc_t *c, uint32_t n, double duration, long repeat, uint64_t dep,
                        uint64_t *first, uint64_t *last, cerrs_t *e)
{
    msgpack_packer *pk = jc_begin(c, "submit_many_jobs");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "jobs");
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++)
        pack_delay_job_dep(pk, duration, repeat, dep);
    int rc = crpc(c, 60000);
    if (rc != 0) {
        cerrs_count(e, c, rc, "submit_many_jobs");
        return 0;
    }
    if (c->rep.result->type != MSGPACK_OBJECT_ARRAY) {
        e->other++;
        cerrs_note(e, "submit_many_jobs", "result is not a list");
        return 0;
    }
    long ok = 0;
    const msgpack_object_array *a = &c->rep.result->via.array;
    for (uint32_t i = 0; i < a->size; i++) {
        const msgpack_object *r = &a->ptr[i];
        int64_t id;
        if (r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size == 2 &&
            r->via.array.ptr[0].type == MSGPACK_OBJECT_BOOLEAN &&
            r->via.array.ptr[0].via.boolean && wire_get_int(&r->via.array.ptr[1], &id)) {
            ok++;
            if (first && !*first)
                *first = (uint64_t)id;
            if (last)
                *last = (uint64_t)id;
        } else {
            e->other++;
            if (r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size == 2 &&
                r->via.array.ptr[1].type == MSGPACK_OBJECT_STR) {
                char m[160];
                snprintf(m, sizeof m, "%.*s", (int)r->via.array.ptr[1].via.str.size,
                         r->via.array.ptr[1].via.str.ptr);
                cerrs_note(e, "submit_many_jobs entry", m);
            } else {
                cerrs_note(e, "submit_many_jobs entry", "refused");
            }
        }
    }
    if (a->size != n) {
        e->other++;
        cerrs_note(e, "submit_many_jobs", "fewer entries than jobs");
    }
    return ok;
}

/* Status and log_serial of one job; false (with c->errbuf) when the query
 * failed or the job is unknown. */
/* A query_jobs of ids with the given fields, packed and ready for crpc. */
static void begin_query(jc_t *c, const uint64_t *ids, uint32_t nids,
                        const char *const *fields, uint32_t nfields)
{
    msgpack_packer *pk = jc_begin(c, "query_jobs");
    msgpack_pack_map(pk, 2);
    wire_pack_cstr(pk, "ids");
    msgpack_pack_array(pk, nids);
    for (uint32_t k = 0; k < nids; k++)
        msgpack_pack_uint64(pk, ids[k]);
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, nfields);
    for (uint32_t k = 0; k < nfields; k++)
        wire_pack_cstr(pk, fields[k]);
}

static bool job_state(jc_t *c, uint64_t id, char *status, size_t len, long long *serial)
{
    static const char *const fields[] = {"status", "log_serial"};
    begin_query(c, &id, 1, fields, 2);
    if (crpc(c, 60000) != 0)
        return false;
    const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
    if (!rows || rows->type != MSGPACK_OBJECT_ARRAY || rows->via.array.size != 1 ||
        rows->via.array.ptr[0].type != MSGPACK_OBJECT_ARRAY ||
        rows->via.array.ptr[0].via.array.size != 2 ||
        rows->via.array.ptr[0].via.array.ptr[0].type != MSGPACK_OBJECT_STR) {
        snprintf(c->errbuf, sizeof c->errbuf, "job %llu: no status in the answer",
                 (unsigned long long)id);
        return false;
    }
    const msgpack_object *row = rows->via.array.ptr[0].via.array.ptr;
    snprintf(status, len, "%.*s", (int)row[0].via.str.size, row[0].via.str.ptr);
    int64_t s = 0;
    if (!wire_get_int(&row[1], &s))
        s = 0; /* nil: no entry yet */
    *serial = s;
    return true;
}

static bool is_final(const char *status)
{
    return strcmp(status, "success") == 0 || strcmp(status, "error") == 0 ||
           strcmp(status, "canceled") == 0;
}

/* Poll (every 20 ms) until the job is final, or running with a log entry
 * when running is set; false on a failed query or timeout (status and
 * serial hold the last reading). */
static bool wait_job(jc_t *c, uint64_t id, bool running, double timeout, char *status,
                     size_t len, long long *serial)
{
    double end = bench_now() + timeout;
    for (;;) {
        if (!job_state(c, id, status, len, serial)) {
            fprintf(stderr, "jobq-bench: core: job %llu: %s\n", (unsigned long long)id,
                    c->errbuf);
            return false;
        }
        if (is_final(status) || (running && strcmp(status, "running") == 0 && *serial > 0))
            return true;
        if (bench_now() > end)
            return false;
        bench_sleep(POLL_S); /* poll interval */
    }
}

/* Jobs in a final status (stats jobs: success + error + canceled); -1 on
 * failure. */
static long long stat_final(jc_t *c)
{
    msgpack_packer *pk = jc_begin(c, "stats");
    msgpack_pack_map(pk, 0);
    if (crpc(c, 30000) != 0)
        return -1;
    const msgpack_object *m = wire_map_get(c->rep.result, "jobs");
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return -1;
    static const char *const fin[] = {"success", "error", "canceled"};
    long long sum = 0;
    for (int i = 0; i < 3; i++) {
        int64_t v = 0;
        const msgpack_object *o = wire_map_get(m, fin[i]);
        if (o && !wire_get_int(o, &v))
            return -1;
        sum += v;
    }
    return sum;
}

/* Poll stats until `want` jobs are final; returns the last count (-1 when
 * stats failed). */
static long long wait_final(jc_t *c, long long want, double timeout, double poll)
{
    double end = bench_now() + timeout;
    for (;;) {
        long long v = stat_final(c);
        if (v < 0 || v >= want || bench_now() > end)
            return v;
        bench_sleep(poll); /* poll interval */
    }
}

/* Every running job has logged (at least once); false on timeout. */
static bool wait_all_logging(jc_t *c, long want, double timeout)
{
    double end = bench_now() + timeout;
    for (;;) {
        msgpack_packer *pk = jc_begin(c, "query_jobs");
        msgpack_pack_map(pk, 2);
        wire_pack_cstr(pk, "fields");
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, "log_serial");
        wire_pack_cstr(pk, "status");
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, "running");
        if (crpc(c, 30000) != 0) {
            fprintf(stderr, "jobq-bench: core: query_jobs: %s\n", c->errbuf);
            return false;
        }
        const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
        long logging = 0;
        for (uint32_t i = 0; rows && rows->type == MSGPACK_OBJECT_ARRAY &&
                             i < rows->via.array.size; i++) {
            const msgpack_object *r = &rows->via.array.ptr[i];
            int64_t s = 0;
            if (r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size == 1 &&
                wire_get_int(&r->via.array.ptr[0], &s) && s > 0)
                logging++;
        }
        if (logging >= want)
            return true;
        if (bench_now() > end) {
            fprintf(stderr, "jobq-bench: core: %ld of %ld jobs logging after %.0f s\n", logging,
                    want, timeout);
            return false;
        }
        bench_sleep(0.05); /* poll interval */
    }
}

/* ------------------------------------------------------------------ */
/* 1. query and submit latency, idle and under a log load               */

typedef struct {
    samples_t q, s;
    double secs;
    cerrs_t e;
} qs_t;

static int qs_window(jc_t *c, const uint64_t *ids, int nids, qs_t *r)
{
    double t0 = bench_now(), end = t0 + opt_core_seconds;
    for (long i = 0; bench_now() < end; i++) {
        static const char *const fields[] = {"id", "status", "log_serial"};
        begin_query(c, ids, (uint32_t)nids, fields, 3);
        double a = bench_now();
        int rc = crpc(c, 10000);
        double b = bench_now();
        if (rc == 0) {
            const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
            if (rows && rows->type == MSGPACK_OBJECT_ARRAY &&
                rows->via.array.size == (uint32_t)nids) {
                samples_add(&r->q, (b - a) * 1e3);
            } else {
                r->e.other++;
                cerrs_note(&r->e, "query_jobs", "wrong row count");
            }
        } else {
            cerrs_count(&r->e, c, rc, "query_jobs");
        }
        if (i % 10 == 9) {
            msgpack_packer *pk = jc_begin(c, "submit_job");
            msgpack_pack_map(pk, 1);
            wire_pack_cstr(pk, "ops");
            pack_delay_job(pk, 0, 0);
            a = bench_now();
            rc = crpc(c, 10000);
            b = bench_now();
            if (rc == 0)
                samples_add(&r->s, (b - a) * 1e3);
            else
                cerrs_count(&r->e, c, rc, "submit_job");
        }
        if (r->e.no_reply > 2)
            break; /* the daemon is gone or stuck: reported below */
    }
    r->secs = bench_now() - t0;
    return 0;
}

static void qs_report(qs_t *r, const char *label, const char *tag, const others_t *o)
{
    char k[96];
    snprintf(k, sizeof k, "core.%s.others_cores", tag);
    double noise = noise_end(o, k);
    double qp50 = samples_pct(&r->q, 50), qp99 = samples_pct(&r->q, 99);
    double sp50 = samples_pct(&r->s, 50), sp99 = samples_pct(&r->s, 99);
    double qps = (double)r->q.n / r->secs;
    printf("  query  p50 %7.3f ms  p99 %7.3f ms  max %7.3f ms  (%s)  %6.0f queries/s;"
           " others %.2f\n",
           qp50, qp99, samples_pct(&r->q, 100), label, qps, noise);
    printf("  submit p50 %7.3f ms  p99 %7.3f ms  max %7.3f ms  (%s)  %zu submits; %s\n", sp50,
           sp99, samples_pct(&r->s, 100), label, r->s.n, cerrs_str(&r->e));
    snprintf(k, sizeof k, "core.query_%s_p50_ms", tag);
    result_set(k, qp50);
    snprintf(k, sizeof k, "core.query_%s_p99_ms", tag);
    result_set(k, qp99);
    snprintf(k, sizeof k, "core.query_%s_per_s", tag);
    result_set(k, qps);
    snprintf(k, sizeof k, "core.submit_%s_p50_ms", tag);
    result_set(k, sp50);
    snprintf(k, sizeof k, "core.submit_%s_p99_ms", tag);
    result_set(k, sp99);
    snprintf(k, sizeof k, "core.%s", tag);
    cerrs_record(&r->e, k);
}

static int core_latency(void)
{
    enum { NSHORT = 200, NIDS = 10 };
    long k = opt_core_busy_jobs;
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    char mr[32];
    snprintf(mr, sizeof mr, "%ld", k + 1000 > 2000 ? k + 1000 : 2000);
    const char *extra[] = {"--max-running", mr, "--sync", "always", NULL};
    qs_t idle = {0}, busy = {0};
    cerrs_t setup = {0};
    printf("  1. one client, one request in flight: query_jobs of %d fixed ids (fields"
           " id,status,log_serial), every 10th iteration a submit_job test.delay(0); %g s per"
           " line; --sync always --max-running %s\n",
           NIDS, opt_core_seconds, mr);
    quiet_gate();
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    /* NSHORT short jobs to query: ids spread over them. */
    uint64_t first = 0;
    for (long done = 0; done < NSHORT;) {
        uint32_t n = NSHORT - done > opt_batch ? (uint32_t)opt_batch : (uint32_t)(NSHORT - done);
        if (submit_many(c, n, 0, 0, 0, &first, NULL, &setup) != (long)n) {
            fprintf(stderr, "jobq-bench: core: short jobs: %s\n", cerrs_str(&setup));
            goto out;
        }
        done += n;
    }
    if (wait_final(c, NSHORT, 60, 0.05) < NSHORT) {
        fail("core: the short jobs did not finish");
        goto out;
    }
    uint64_t ids[NIDS];
    for (int i = 0; i < NIDS; i++)
        ids[i] = first + (uint64_t)i * (NSHORT / NIDS);
    quiet_gate(); /* the daemon is idle now */
    others_t o;
    others_begin(&o, d.pid);
    qs_window(c, ids, NIDS, &idle);
    qs_report(&idle, "idle", "idle", &o);
    if (!proc_alive(d.pid)) {
        fail("core: jobqd died");
        goto out;
    }
    /* Phase B: the log load. */
    quiet_gate();
    if (submit_batches(c, k, 0.01, LONG_REPEAT) < 0 || !jc_wait_stat(c, "running", k, 60) ||
        !wait_all_logging(c, k, 60))
        goto out;
    store_stats_t s0, s1;
    bool have_store = jc_store_stats(c, &s0) == 0;
    long long log0 = jc_sum_log_serial(c);
    others_begin(&o, d.pid);
    double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
    qs_window(c, ids, NIDS, &busy);
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    char label[64];
    snprintf(label, sizeof label, "%ld logging jobs", k);
    qs_report(&busy, label, "busy", &o);
    if (!proc_alive(d.pid)) {
        fail("core: jobqd died under the log load");
        goto out;
    }
    have_store = have_store && jc_store_stats(c, &s1) == 0;
    long long log1 = jc_sum_log_serial(c);
    double secs = t1 - t0;
    double rec = have_store ? (double)(s1.records - s0.records) / secs : NAN;
    double made = log0 >= 0 && log1 >= 0 ? (double)(log1 - log0) / secs : NAN;
    double commits = have_store ? (double)(s1.commits - s0.commits) / secs : NAN;
    double fsyncs = have_store ? (double)(s1.fsyncs - s0.fsyncs) / secs : NAN;
    printf("  log load: %ld jobs test.delay(0.01, repeat %ld), nominal %ld entries/s: log"
           " entries made %.0f /s (sum of log_serial), store committed %.0f records/s"
           " (store.records) in %.0f commits/s (%.0f records each; %.0f fsyncs/s), store"
           " backlog at the end %lld records (store.queued)%s; daemon %.2f cores\n",
           k, LONG_REPEAT, k * 100, made, rec, commits, commits > 0 ? rec / commits : NAN,
           fsyncs, have_store ? s1.queued : -1LL,
           have_store && s1.failures != s0.failures ? " (STORE FAILURES)" : "",
           (cpu1 - cpu0) / secs);
    result_set("core.busy_jobs", (double)k);
    result_set("core.busy_log_entries_per_s", made);
    result_set("core.busy_store_records_per_s", rec);
    result_set("core.busy_store_commits_per_s", commits);
    result_set("core.busy_store_fsyncs_per_s", fsyncs);
    result_set("core.busy_store_queued", have_store ? (double)s1.queued : NAN);
    result_set("core.busy_store_failures",
               have_store ? (double)(s1.failures - s0.failures) : NAN);
    result_set("core.busy_daemon_cpu_cores", (cpu1 - cpu0) / secs);
    rc = 0;
out:
    samples_free(&idle.q);
    samples_free(&idle.s);
    samples_free(&busy.q);
    samples_free(&busy.s);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* 2. one job with a long log                                           */

/* query_jobs of the job's oplog: ms, reply bytes and entries; false when
 * it failed. */
static bool oplog_query(jc_t *c, uint64_t id, double *ms, size_t *bytes, long *entries)
{
    static const char *const fields[] = {"oplog"};
    begin_query(c, &id, 1, fields, 1);
    double a = bench_now();
    int rc = crpc(c, 120000);
    *ms = (bench_now() - a) * 1e3;
    if (rc != 0) {
        fprintf(stderr, "jobq-bench: core: oplog query: %s\n", c->errbuf);
        return false;
    }
    *bytes = zmq_msg_size(&c->frame);
    *entries = 0;
    const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
    if (rows && rows->type == MSGPACK_OBJECT_ARRAY && rows->via.array.size == 1) {
        const msgpack_object *row = &rows->via.array.ptr[0];
        const msgpack_object *ol = row->type == MSGPACK_OBJECT_ARRAY && row->via.array.size == 1
                                       ? &row->via.array.ptr[0]
                                       : NULL;
        for (uint32_t i = 0; ol && ol->type == MSGPACK_OBJECT_ARRAY && i < ol->via.array.size;
             i++)
            if (ol->via.array.ptr[i].type == MSGPACK_OBJECT_ARRAY)
                *entries += ol->via.array.ptr[i].via.array.size;
    }
    return true;
}

static int core_biglog(void)
{
    long n = opt_core_log_entries;
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    cerrs_t e = {0};
    char st[32] = "?";
    long long serial = 0;
    printf("  2. one job test.delay(0, repeat %ld): submit answered -> success (polled every"
           " %.0f ms, at most %.0f s); one query_jobs of its oplog; SIGTERM and jobqd again on"
           " the same data directory; --sync %s\n",
           n, POLL_S * 1e3, opt_core_biglog_timeout, opt_sync ? opt_sync : "always");
    quiet_gate();
    if (jobqd_start(&d, NULL) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    others_t o;
    others_begin(&o, d.pid);
    double cpu0 = proc_cpu_seconds(d.pid);
    uint64_t id = submit_one(c, 0, n, &e);
    double t0 = bench_now();
    if (!id) {
        fprintf(stderr, "jobq-bench: core: %s\n", cerrs_str(&e));
        goto out;
    }
    bool done = wait_job(c, id, false, opt_core_biglog_timeout, st, sizeof st, &serial);
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    double secs = t1 - t0;
    double noise = noise_end(&o, "core.biglog.others_cores");
    bool finished = done && is_final(st);
    if (!finished && !proc_alive(d.pid)) {
        fail("core: jobqd died running the long-log job");
        goto out;
    }
    result_set("core.biglog_entries", (double)n);
    result_set("core.biglog_finished", finished && strcmp(st, "success") == 0);
    result_set("core.biglog_log_serial", (double)serial);
    result_set("core.biglog_seconds", finished ? secs : NAN);
    result_set("core.biglog_entries_per_s", (double)serial / secs);
    result_set("core.biglog_daemon_cpu_cores", (cpu1 - cpu0) / secs);
    if (finished)
        printf("  %ld log entries: %s in %.3f s (%.0f entries/s), log_serial %lld; daemon %.2f"
               " cores; others %.2f\n",
               n, st, secs, (double)serial / secs, serial, (cpu1 - cpu0) / secs, noise);
    else
        printf("  %ld log entries: did not finish in %.0f s (status %s, log_serial %lld reached,"
               " %.0f entries/s on average); daemon %.2f cores; others %.2f\n",
               n, secs, st, serial, (double)serial / secs, (cpu1 - cpu0) / secs, noise);
    if (finished && strcmp(st, "success") != 0)
        fprintf(stderr, "jobq-bench: core: the long-log job ended %s\n", st);
    double ms;
    size_t bytes;
    long entries;
    if (!oplog_query(c, id, &ms, &bytes, &entries))
        goto out;
    printf("  query_jobs oplog: %.1f ms, reply %.2f MB (%zu bytes), %ld entries%s\n", ms,
           (double)bytes / 1048576.0, bytes, entries,
           finished && entries != serial ? " (not the job's log_serial!)" : "");
    result_set("core.biglog_oplog_query_ms", ms);
    result_set("core.biglog_oplog_bytes", (double)bytes);
    result_set("core.biglog_oplog_entries", (double)entries);
    /* Stop and start again on the same directory. */
    jc_close(&c);
    double stop = daemon_term(&d, 60);
    quiet_gate();
    others_begin(&o, 0);
    double ready = NAN;
    if (jobqd_restart(&d, NULL, 600, &ready) < 0) {
        fail("core: jobqd did not come back on its data directory");
        goto out;
    }
    o.daemon = d.pid; /* all of its CPU since exec is the daemon's */
    o.dmn = 0;
    noise = noise_end(&o, "core.biglog_restart.others_cores");
    c = jc_open(ctx, d.endpoint);
    long long serial2 = 0;
    char st2[32] = "?";
    if (!job_state(c, id, st2, sizeof st2, &serial2)) {
        fprintf(stderr, "jobq-bench: core: after the restart: %s\n", c->errbuf);
        goto out;
    }
    double ms2;
    size_t bytes2;
    long entries2;
    if (!oplog_query(c, id, &ms2, &bytes2, &entries2))
        goto out;
    printf("  SIGTERM -> exit %.2f s; exec -> first ping %.3f s (recovery); the job %s with"
           " log_serial %lld; query_jobs oplog %.1f ms, reply %zu bytes, %ld entries; others"
           " %.2f\n",
           stop, ready, st2, serial2, ms2, bytes2, entries2, noise);
    result_set("core.biglog_stop_s", stop);
    result_set("core.biglog_recovery_s", ready);
    result_set("core.biglog_oplog_query_after_restart_ms", ms2);
    result_set("core.biglog_oplog_bytes_after_restart", (double)bytes2);
    result_set("core.biglog_oplog_entries_after_restart", (double)entries2);
    rc = stop < 0 ? -1 : 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* 3. dependencies while one shard is hot                               */

static int core_shards_one(unsigned shards, double *rate)
{
    enum { FILLERS = 63 };
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    cerrs_t e = {0};
    char sh[16], st[32] = "?", k[96];
    long long serial = 0;
    snprintf(sh, sizeof sh, "%u", shards);
    const char *extra[] = {"--shards", sh,      "--sync",      "none", "--max-running",
                           "10000",    "--executors", "2", NULL};
    *rate = NAN;
    quiet_gate();
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    uint64_t dep = submit_one(c, 0, 0, &e);
    if (!dep || !wait_job(c, dep, false, 30, st, sizeof st, &serial) ||
        strcmp(st, "success") != 0) {
        fprintf(stderr, "jobq-bench: core: job D did not succeed (%s; %s)\n", st,
                cerrs_str(&e));
        goto out;
    }
    uint64_t lastf = 0;
    if (submit_many(c, FILLERS, 0, 0, 0, NULL, &lastf, &e) != FILLERS) {
        fprintf(stderr, "jobq-bench: core: fillers: %s\n", cerrs_str(&e));
        goto out;
    }
    uint64_t hot = submit_one(c, 0, LONG_REPEAT, &e);
    if (!hot || !wait_job(c, hot, true, 30, st, sizeof st, &serial)) {
        fprintf(stderr, "jobq-bench: core: job H did not start (%s; %s)\n", st, cerrs_str(&e));
        goto out;
    }
    long long base = stat_final(c);
    long long h0 = 0;
    if (base < 0 || !job_state(c, hot, st, sizeof st, &h0)) {
        fprintf(stderr, "jobq-bench: core: %s\n", c->errbuf);
        goto out;
    }
    bool hot_running0 = strcmp(st, "running") == 0;
    /* Measured: N jobs depending on D, batches of 1000, until all are done. */
    long n = opt_core_jobs, accepted = 0;
    others_t o;
    others_begin(&o, d.pid);
    double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
    for (long left = n; left > 0;) {
        uint32_t b = left > 1000 ? 1000 : (uint32_t)left;
        accepted += submit_many(c, b, 0, 0, dep, NULL, NULL, &e);
        left -= b;
    }
    double ts = bench_now();
    long long fin = wait_final(c, base + accepted, opt_core_biglog_timeout, DONE_POLL_S);
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    snprintf(k, sizeof k, "core.shards%u.others_cores", shards);
    double noise = noise_end(&o, k);
    long long h1 = 0;
    bool hq = job_state(c, hot, st, sizeof st, &h1);
    bool hot_running1 = hq && strcmp(st, "running") == 0;
    double secs = t1 - t0;
    long long doneN = fin >= 0 ? fin - base : -1;
    bool all = accepted > 0 && doneN >= accepted;
    *rate = all ? (double)accepted / secs : NAN;
    double hrate = hq ? (double)(h1 - h0) / secs : NAN;
    double cores = (cpu1 - cpu0) / secs;
    if (all)
        printf("  --shards %-2u: %6.0f jobs/s (%ld jobs, %.3f s; submits took %.3f s); H logged"
               " %.0f entries/s%s; daemon %.2f cores; others %.2f; %s\n",
               shards, *rate, accepted, secs, ts - t0, hrate,
               hot_running0 && hot_running1 ? "" : " (H was not running all along!)", cores,
               noise, cerrs_str(&e));
    else
        printf("  --shards %-2u: NOT DONE: %lld of %ld jobs final after %.1f s (%.0f jobs/s so"
               " far); H logged %.0f entries/s; daemon %.2f cores; others %.2f; %s\n",
               shards, doneN, accepted, secs, doneN > 0 ? (double)doneN / secs : 0.0, hrate,
               cores, noise, cerrs_str(&e));
    printf("              D = job %llu, H = job %llu (shard %llu of %u, D's: %llu), H's"
           " log_serial %lld -> %lld (%s at the end)\n",
           (unsigned long long)dep, (unsigned long long)hot,
           (unsigned long long)(hot % shards), shards, (unsigned long long)(dep % shards), h0,
           h1, hq ? st : "?");
#define SSET(name, v)                                                 \
    do {                                                              \
        snprintf(k, sizeof k, "core.shards%u_%s", shards, name);      \
        result_set(k, v);                                             \
    } while (0)
    SSET("jobs_per_s", *rate);
    SSET("jobs", (double)accepted);
    SSET("jobs_done", (double)doneN);
    SSET("seconds", secs);
    SSET("submit_seconds", ts - t0);
    SSET("hot_log_per_s", hrate);
    SSET("hot_running", hot_running0 && hot_running1);
    SSET("daemon_cpu_cores", cores);
#undef SSET
    snprintf(k, sizeof k, "core.shards%u", shards);
    cerrs_record(&e, k);
    if (!proc_alive(d.pid)) {
        fail("core: jobqd died");
        goto out;
    }
    /* Slow is reported above, not a failure; nothing accepted is one. */
    rc = accepted > 0 && doneN >= 0 ? 0 : -1;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

static int core_shards(void)
{
    printf("  3. job D (test.delay 0) succeeds; 63 fillers, then H = test.delay(0, repeat %ld)"
           " in D's shard (ids are consecutive, shard = id mod shards); once H runs, %ld jobs"
           " test.delay(0) each depending on [[D, [success]]] in submit_many_jobs of up to"
           " 1000, timed from the first submit until stats jobs counts them all final (polled"
           " every %.0f ms, at most %.0f s); --sync none --max-running 10000 --executors 2\n",
           LONG_REPEAT, opt_core_jobs, DONE_POLL_S * 1e3, opt_core_biglog_timeout);
    double r1, r64;
    int rc = 0;
    if (core_shards_one(1, &r1) < 0)
        rc = -1;
    if (core_shards_one(64, &r64) < 0)
        rc = -1;
    if (!isnan(r1) && !isnan(r64)) {
        printf("  ratio --shards 64 / --shards 1: %.2f\n", r64 / r1);
        result_set("core.shards_ratio", r64 / r1);
    }
    return rc;
}

int workload_core(void)
{
    section("9. Core: latency under a log load, a long log, dependencies on a hot shard");
    int rc = 0;
    if (core_latency() < 0)
        rc = -1;
    if (core_biglog() < 0)
        rc = -1;
    if (core_shards() < 0)
        rc = -1;
    return rc;
}
