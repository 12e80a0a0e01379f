/* busy.c: workload 2, busy jobs: list and submit latency while K running
 * jobs log every 10 ms, the log rate the daemon absorbs, its threads. */
#include "workloads.h"

#include <stdio.h>
#include <zmq.h>

/* ------------------------------------------------------------------ */
/* workload 2: busy jobs                                                */

static int busy_one(long k)
{
    void *ctx = new_ctx(1, 1024);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    char mr[32];
    snprintf(mr, sizeof mr, "%ld", k + 2000);
    const char *extra[] = {"--max-running", mr, NULL};
    quiet_gate();
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    long threads0 = proc_threads(d.pid);
    if (submit_batches(c, k, 0.01, LONG_REPEAT) < 0 || !jc_wait_stat(c, "running", k, 60))
        goto out;
    /* Steady state: wait (poll) until every busy job has logged. */
    double end = bench_now() + 30;
    for (;;) {
        static const char *const f[] = {"log_serial"};
        msgpack_packer *pk = jc_begin(c, "query_jobs");
        msgpack_pack_map(pk, 2);
        wire_pack_cstr(pk, "fields");
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, f[0]);
        wire_pack_cstr(pk, "status");
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, "running");
        if (jc_call(c, 10000) < 0)
            goto out;
        const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
        long zero = 0;
        for (uint32_t i = 0; rows && i < rows->via.array.size; i++) {
            int64_t s = 0;
            wire_get_int(&rows->via.array.ptr[i].via.array.ptr[0], &s);
            zero += s == 0;
        }
        if (zero == 0 || bench_now() > end)
            break;
        bench_sleep(0.05); /* poll interval */
    }
    long long log0 = jc_sum_log_serial(c), ch0 = jc_stat(c, "changes");
    long rss0 = proc_status_kb(d.pid, "VmRSS"), anon0 = proc_status_kb(d.pid, "RssAnon");
    thread_cpu_t th0[64], th1[64];
    int nth0 = proc_threads_cpu(d.pid, th0, 64);
    others_t o;
    others_begin(&o, d.pid);
    double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
    samples_t lat_list = {0}, lat_sub = {0};
    long submitted = 0;
    double next = t0;
    while (bench_now() - t0 < opt_busy_seconds) {
        double a = bench_now();
        long rows = jc_list(c, LIST_FIELDS, 4);
        double b = bench_now();
        uint64_t id = jc_submit_delay(c, 0, 0);
        double e = bench_now();
        if (rows < 0 || !id) {
            fprintf(stderr, "jobq-bench: busy: request failed: %s\n", c->errbuf);
            goto out;
        }
        samples_add(&lat_list, (b - a) * 1e3);
        samples_add(&lat_sub, (e - b) * 1e3);
        submitted++;
        next += opt_busy_period; /* the load pattern: one list + one submit per period */
        bench_sleep(next - bench_now());
    }
    double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
    char nkey[96];
    snprintf(nkey, sizeof nkey, "busy.%ld.others_cores", k);
    double noise = noise_end(&o, nkey);
    int nth1 = proc_threads_cpu(d.pid, th1, 64);
    long long ch1 = jc_stat(c, "changes"), log1 = jc_sum_log_serial(c);
    long rss1 = proc_status_kb(d.pid, "VmRSS"), anon1 = proc_status_kb(d.pid, "RssAnon");
    long threads1 = proc_threads(d.pid);
    double secs = t1 - t0;
    /* The two log sums bracket the window (plus the time of the sums). */
    double log_rate = (double)(log1 - log0) / secs;
    double ch_rate = (double)(ch1 - ch0) / secs;
    double expect = (double)k / 0.01;
    char key[96];
    printf("  %ld busy jobs (test.delay duration 0.01, repeat %ld), %.1f s, one list + one"
           " submit every %.0f ms:\n",
           k, LONG_REPEAT, secs, opt_busy_period * 1e3);
    printf("    query_jobs list (%ld+ rows): p50 %.3f ms  p99 %.3f ms  max %.3f ms  (%zu samples)\n",
           k, samples_pct(&lat_list, 50), samples_pct(&lat_list, 99),
           samples_pct(&lat_list, 100), lat_list.n);
    printf("    submit_job            : p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
           samples_pct(&lat_sub, 50), samples_pct(&lat_sub, 99), samples_pct(&lat_sub, 100));
    printf("    log entries absorbed: %.0f /s (sum of log_serial; nominal %.0f /s); change"
           " records %.0f /s\n",
           log_rate, expect, ch_rate);
    printf("    daemon: %.2f CPU cores busy, threads %ld -> %ld, RSS +%.1f MB in the window"
           " (anonymous +%.1f MB, the rest the store's file map); other processes %.2f cores\n",
           (cpu1 - cpu0) / secs, threads0, threads1, (double)(rss1 - rss0) / 1024.0,
           (double)(anon1 - anon0) / 1024.0, noise);
    printf("    daemon threads' CPU (cores):");
    for (int i = 0; i < nth1; i++) {
        double before = 0;
        for (int j = 0; j < nth0; j++)
            if (th0[j].tid == th1[i].tid)
                before = th0[j].cpu;
        printf(" %s%s %.2f", th1[i].tid == d.pid ? "main/" : "", th1[i].name,
               (th1[i].cpu - before) / secs);
    }
    printf("\n");
#define BSET(name, v)                                               \
    do {                                                            \
        snprintf(key, sizeof key, "busy.%ld.%s", k, name);          \
        result_set(key, v);                                         \
    } while (0)
    BSET("rss_anon_growth_mb", (double)(anon1 - anon0) / 1024.0);
    BSET("list_p50_ms", samples_pct(&lat_list, 50));
    BSET("list_p99_ms", samples_pct(&lat_list, 99));
    BSET("list_max_ms", samples_pct(&lat_list, 100));
    BSET("submit_p50_ms", samples_pct(&lat_sub, 50));
    BSET("submit_p99_ms", samples_pct(&lat_sub, 99));
    BSET("log_entries_per_s", log_rate);
    BSET("log_entries_nominal_per_s", expect);
    BSET("changes_per_s", ch_rate);
    BSET("daemon_cpu_cores", (cpu1 - cpu0) / secs);
    BSET("threads_before", (double)threads0);
    BSET("threads_after", (double)threads1);
#undef BSET
    samples_free(&lat_list);
    samples_free(&lat_sub);
    rc = 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

int workload_busy(void)
{
    section("2. Busy jobs");
    for (int i = 0; i < opt_nbusy; i++)
        if (busy_one(opt_busy[i]) < 0)
            return -1;
    return 0;
}

