/* shards.c: workload 3, lock sharding: readers and writers against
 * --shards 1 and --shards 64, with and without a log load. */
#include "workloads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <zmq.h>

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

int workload_shards(void)
{
    section("3. Lock sharding");
    printf("  %d reader clients (query_jobs by %d random ids, fields id,status,priority) + %d"
           " writer clients (change_job_priority on random queued jobs), %d requests in flight"
           " each, over %ld queued jobs; --handlers 4 --sync %s; %g s per run\n",
           opt_readers, opt_ids_per_query, opt_writers, opt_pipeline, opt_shard_jobs,
           opt_sync ? opt_sync : "always", opt_shard_seconds);
    if (opt_log_jobs > 0)
        printf("  log load: %ld running jobs logging every 10 ms (nominal %ld entries/s)\n",
               opt_log_jobs, opt_log_jobs * 100);
    if (opt_log_jobs > 0 && shards_pair(opt_log_jobs, "shards") < 0)
        return -1;
    return shards_pair(0, opt_log_jobs > 0 ? "shards_nolog" : "shards");
}

