/* store.c: workload 8, the durable store.
 *
 * - Acknowledged-durable submits: for --sync always, batch and none, a
 *   fresh daemon per line (jobs stay queued behind a blocker, so the store
 *   sees submits only), submit_job one at a time and submit_many_jobs, 1
 *   and C clients; alongside, stats.store deltas: commits/s, fsyncs/s,
 *   records per commit, jobs per fsync (group commit), daemon CPU.
 * - Recovery: a data directory filled with N live queued one-opcode jobs
 *   (for each N of --recover-jobs, ascending, filled under --sync none),
 *   stopped with SIGTERM and started again on the same directory: time
 *   from exec to the first answered ping (the daemon loads the store before
 *   it binds), the daemon's own "recovered ..." line, RSS after recovery;
 *   once with the store file in the page cache (warm) and once with it
 *   evicted (cold: fdatasync + posix_fadvise DONTNEED on data.mdb only).
 * - Bytes on disk per job: store.bytes and data.mdb's size over the jobs of
 *   the largest store; and for finished jobs without and with 10 log
 *   entries each. */
#include "workloads.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <zmq.h>

static const char *fs_type(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf) < 0)
        return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0xEF53UL: return "ext2/3/4";
    case 0x01021994UL: return "tmpfs (fsync costs nothing)";
    case 0x58465342UL: return "xfs";
    case 0x9123683EUL: return "btrfs";
    case 0x794c7630UL: return "overlayfs";
    case 0x2fc12fc1UL: return "zfs";
    default: return "other";
    }
}

static const char *sync_modes[] = {"always", "batch", "none"};

/* ------------------------------------------------------------------ */
/* durable submits                                                      */

static int store_line(const char *mode, wkind_t kind, int clients, const char *name)
{
    char label[96], key[96], k[128];
    if (kind == W_BATCH)
        snprintf(label, sizeof label, "%-6s submit_many_jobs x%d, %d client%s", mode, opt_batch,
                 clients, clients > 1 ? "s" : "");
    else
        snprintf(label, sizeof label, "%-6s submit_job one at a time, %d client%s", mode, clients,
                 clients > 1 ? "s" : "");
    snprintf(key, sizeof key, "store.%s.%s", mode, name);
    const char *more[] = {"--sync", mode, NULL};
    for (int attempt = 0;; attempt++) {
        void *ctx = new_ctx(1, 64);
        daemon_t d;
        jc_t *c = NULL;
        int rc = -1;
        store_stats_t s0, s1;
        if (start_blocked_daemon_ex(&d, &c, ctx, "20000000", more) < 0 ||
            jc_store_stats(c, &s0) < 0) {
            if (c)
                fprintf(stderr, "jobq-bench: %s\n", c->errbuf);
            goto next;
        }
        double p50, p99;
        long errors, items = 0;
        others_t o;
        double cpu0 = proc_cpu_seconds(d.pid), t0 = bench_now();
        double r = run_workers(kind, clients, d.endpoint, 0, 19000000, d.pid, opt_store_seconds,
                               &p50, &p99, &errors, &o, &items);
        double t1 = bench_now(), cpu1 = proc_cpu_seconds(d.pid);
        if (jc_store_stats(c, &s1) < 0) {
            fprintf(stderr, "jobq-bench: stats: %s\n", c->errbuf);
            goto next;
        }
        double noise = others_end(&o), kern = others_kernel(&o);
        if (noise >= 0.25 && attempt < 2 && opt_quiet_wait > 0) {
            printf("  %-44s (others used %.2f cores: measured again)\n", label, noise);
            rc = 1;
            goto next;
        }
        report_rate(label, key, r, p50, p99, errors, "job", &o);
        double secs = t1 - t0;
        double commits = (double)(s1.commits - s0.commits),
               fsyncs = (double)(s1.fsyncs - s0.fsyncs),
               records = (double)(s1.records - s0.records);
        double cores = (cpu1 - cpu0) / secs;
        char jpf[32] = "      -";
        if (fsyncs > 0)
            snprintf(jpf, sizeof jpf, "%7.1f", (double)items / fsyncs);
        printf("  %-44s commits %7.0f/s  fsyncs %6.0f/s  records/commit %7.1f  jobs/fsync %s"
               "  daemon %.2f  kernel %.2f cores%s\n",
               "", commits / secs, fsyncs / secs, commits > 0 ? records / commits : NAN, jpf,
               cores, kern, s1.failures != s0.failures ? "  (STORE FAILURES)" : "");
        snprintf(k, sizeof k, "%s.commits_per_s", key);
        result_set(k, commits / secs);
        snprintf(k, sizeof k, "%s.fsyncs_per_s", key);
        result_set(k, fsyncs / secs);
        snprintf(k, sizeof k, "%s.records_per_commit", key);
        result_set(k, commits > 0 ? records / commits : NAN);
        snprintf(k, sizeof k, "%s.jobs_per_commit", key);
        result_set(k, commits > 0 ? (double)items / commits : NAN);
        snprintf(k, sizeof k, "%s.jobs_per_fsync", key);
        result_set(k, fsyncs > 0 ? (double)items / fsyncs : NAN);
        snprintf(k, sizeof k, "%s.records_per_job", key);
        result_set(k, items > 0 ? records / (double)items : NAN);
        snprintf(k, sizeof k, "%s.daemon_cores", key);
        result_set(k, cores);
        snprintf(k, sizeof k, "%s.kernel_cores", key);
        result_set(k, kern);
        snprintf(k, sizeof k, "%s.failures", key);
        result_set(k, (double)(s1.failures - s0.failures));
        rc = errors || s1.failures != s0.failures ? -1 : 0;
    next:
        jc_close(&c);
        zmq_ctx_term(ctx);
        daemon_stop(&d);
        if (rc <= 0)
            return rc;
        quiet_gate();
    }
}

/* ------------------------------------------------------------------ */
/* recovery                                                             */

/* Push data.mdb out of the page cache (this file only); returns the
 * fraction of its pages still resident afterwards (mincore), -1 on error. */
static double evict_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    double resident = -1;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        long pg = sysconf(_SC_PAGESIZE);
        size_t pages = (size_t)((st.st_size + pg - 1) / pg);
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        unsigned char *vec = malloc(pages);
        if (m != MAP_FAILED && vec && mincore(m, (size_t)st.st_size, vec) == 0) {
            size_t in = 0;
            for (size_t i = 0; i < pages; i++)
                in += vec[i] & 1;
            resident = (double)in / (double)pages;
        }
        free(vec);
        if (m != MAP_FAILED)
            munmap(m, (size_t)st.st_size);
    }
    close(fd);
    return resident;
}

/* The daemon's "jobqd: recovered ..." line (without "jobqd: "), and the
 * seconds it states. */
static bool recovery_line(const char *log, char *out, size_t len, double *secs)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    *secs = NAN;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "recovered ");
        if (!p)
            continue;
        line[strcspn(line, "\n")] = '\0';
        snprintf(out, len, "%s", p);
        const char *in = strstr(p, " in ");
        if (in)
            *secs = strtod(in + 4, NULL);
        found = true;
    }
    fclose(f);
    return found;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double ready, stated, rss_mb, resident;
    long long live;
} restart_t;

/* Start the stopped daemon again on its directory; on success *cp is a
 * client of the new daemon. */
static int restart_once(daemon_t *d, const char *const *extra, void *ctx, jc_t **cp,
                        const char *what, const char *key, restart_t *out)
{
    char line[400] = "(no recovery line on stderr)", k[128];
    quiet_gate();
    others_t o;
    others_begin(&o, 0);
    if (jobqd_restart(d, extra, 600, &out->ready) < 0) {
        fail("jobqd did not come back on its data directory");
        return -1;
    }
    o.daemon = d->pid; /* all of its CPU since exec is the daemon's */
    o.dmn = 0;
    snprintf(k, sizeof k, "%s.others_cores", key);
    double noise = noise_end(&o, k);
    recovery_line(d->log, line, sizeof line, &out->stated);
    out->rss_mb = (double)proc_rss_settled(d->pid, 15) / 1024.0;
    double anon_mb = (double)proc_status_kb(d->pid, "RssAnon") / 1024.0;
    *cp = jc_open(ctx, d->endpoint);
    out->live = jc_stat(*cp, "live_jobs");
    printf("    %-5s exec -> first ping %7.3f s  RSS %6.1f MB (anonymous %.1f MB, the rest the"
           " store's file map)  live_jobs %lld  others %.2f\n"
           "          jobqd: %s\n",
           what, out->ready, out->rss_mb, anon_mb, out->live, noise, line);
    snprintf(k, sizeof k, "%s.ready_s", key);
    result_set(k, out->ready);
    snprintf(k, sizeof k, "%s.stated_s", key);
    result_set(k, out->stated);
    snprintf(k, sizeof k, "%s.rss_mb", key);
    result_set(k, out->rss_mb);
    snprintf(k, sizeof k, "%s.rss_anon_mb", key);
    result_set(k, anon_mb);
    snprintf(k, sizeof k, "%s.live_jobs", key);
    result_set(k, (double)out->live);
    return 0;
}

static int recovery(void)
{
    long ns[4];
    int nn = opt_nrecover;
    memcpy(ns, opt_recover_jobs, sizeof ns);
    qsort(ns, (size_t)nn, sizeof *ns, cmp_long);
    long maxn = ns[nn - 1];
    char mj[32];
    snprintf(mj, sizeof mj, "%ld", maxn + 100000);
    const char *more[] = {"--sync", "none", NULL};
    /* What start_blocked_daemon_ex runs, for the restarts. */
    const char *extra[] = {"--max-running", "1", "--max-jobs", mj, "--sync", "none", NULL};
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    store_stats_t s;
    char path[400], k[128];
    if (start_blocked_daemon_ex(&d, &c, ctx, mj, more) < 0 || jc_store_stats(c, &s) < 0)
        goto out;
    long long bytes_empty = s.bytes;
    snprintf(path, sizeof path, "%s/store/data.mdb", d.dir);
    printf("  recovery: live queued one-opcode jobs (test.delay %.0f s) filled in batches of %d"
           " under --sync none, --max-running 1 (one job runs, the rest stay queued);"
           " SIGTERM, then jobqd again on the same --data-dir\n",
           BLOCKER_SECONDS, opt_batch);
    long have = 0;
    for (int i = 0; i < nn; i++) {
        long n = ns[i];
        double t0 = bench_now();
        if (submit_batches(c, n - have, BLOCKER_SECONDS, 0) < 0)
            goto out;
        double fill = bench_now() - t0;
        long added = n - have;
        have = n;
        if (jc_store_stats(c, &s) < 0)
            goto out;
        long rss0 = proc_rss_settled(d.pid, 10);
        jc_close(&c);
        double stop = daemon_term(&d, 600);
        struct stat st;
        long long fsize = 0, falloc = 0;
        if (stat(path, &st) == 0) {
            fsize = (long long)st.st_size;
            falloc = (long long)st.st_blocks * 512;
        }
        long long jobs = s.live_jobs;
        printf("  %ld jobs (%lld live with the blocker): +%ld filled in %.1f s (%.0f jobs/s);"
               " RSS %.1f MB; store.bytes %.1f MB; data.mdb %.1f MB (%.1f MB allocated);"
               " SIGTERM -> exit %.2f s\n",
               n, jobs, added, fill, (double)added / fill, (double)rss0 / 1024.0,
               (double)s.bytes / 1048576.0, (double)fsize / 1048576.0,
               (double)falloc / 1048576.0, stop);
        snprintf(k, sizeof k, "store.recover_%ld.fill_jobs_per_s", n);
        result_set(k, (double)added / fill);
        snprintf(k, sizeof k, "store.recover_%ld.rss_mb_before", n);
        result_set(k, (double)rss0 / 1024.0);
        snprintf(k, sizeof k, "store.recover_%ld.store_bytes", n);
        result_set(k, (double)s.bytes);
        snprintf(k, sizeof k, "store.recover_%ld.file_bytes", n);
        result_set(k, (double)fsize);
        snprintf(k, sizeof k, "store.recover_%ld.stop_s", n);
        result_set(k, stop);
        if (stop < 0)
            goto out;
        if (i == nn - 1) {
            double per = (double)s.bytes / (double)jobs;
            double per_net = (double)(s.bytes - bytes_empty) / (double)jobs;
            double per_file = (double)fsize / (double)jobs;
            printf("  bytes on disk per queued job (%lld jobs): store.bytes %.0f B (%.0f B above"
                   " the empty store), data.mdb size %.0f B, allocated %.0f B\n",
                   jobs, per, per_net, per_file, (double)falloc / (double)jobs);
            result_set("store.disk.queued_jobs", (double)jobs);
            result_set("store.disk.bytes_per_queued_job", per);
            result_set("store.disk.file_bytes_per_queued_job", per_file);
        }
        restart_t warm, cold;
        snprintf(k, sizeof k, "store.recover_%ld.warm", n);
        if (restart_once(&d, extra, ctx, &c, "warm", k, &warm) < 0)
            goto out;
        jc_close(&c);
        if (daemon_term(&d, 600) < 0)
            goto out;
        cold.resident = evict_file(path);
        snprintf(k, sizeof k, "store.recover_%ld.cold", n);
        if (restart_once(&d, extra, ctx, &c, "cold", k, &cold) < 0)
            goto out;
        printf("          (cold: data.mdb evicted from the page cache before the start;"
               " %.0f%% of it was still resident)\n",
               cold.resident * 100);
    }
    rc = 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* bytes on disk for finished jobs, without and with log entries        */

static bool wait_success(jc_t *c, long long want, double timeout)
{
    double end = bench_now() + timeout;
    for (;;) {
        long long v = jc_stat2(c, "jobs", "success");
        if (v >= want)
            return true;
        if (v < 0 || bench_now() > end) {
            fprintf(stderr, "jobq-bench: %lld jobs succeeded, waited for %lld\n", v, want);
            return false;
        }
        bench_sleep(0.05); /* poll interval */
    }
}

static int log_bytes(void)
{
    long L = opt_store_log_jobs;
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    store_stats_t s0, s1, s2;
    const char *extra[] = {"--sync", "none", NULL};
    if (jobqd_start(&d, extra) < 0) {
        fail("cannot start jobqd");
        goto out;
    }
    c = jc_open(ctx, d.endpoint);
    if (jc_store_stats(c, &s0) < 0 || submit_batches(c, L, 0, 0) < 0 ||
        !wait_success(c, L, 120) || jc_store_stats(c, &s1) < 0 ||
        submit_batches(c, L, 0, 10) < 0 || !wait_success(c, 2 * L, 300) ||
        jc_store_stats(c, &s2) < 0)
        goto out;
    double plain = (double)(s1.bytes - s0.bytes) / (double)L;
    double logged = (double)(s2.bytes - s1.bytes) / (double)L;
    printf("  finished jobs (--sync none, %ld each): one-opcode test.delay(0) %.0f B per job;"
           " test.delay(0, repeat 10), 10 log entries each, %.0f B per job (%.0f B per log"
           " entry)\n",
           L, plain, logged, (logged - plain) / 10.0);
    result_set("store.disk.finished_jobs", (double)L);
    result_set("store.disk.bytes_per_finished_job", plain);
    result_set("store.disk.bytes_per_job_10_logs", logged);
    result_set("store.disk.bytes_per_log_entry", (logged - plain) / 10.0);
    rc = 0;
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */

int workload_store(void)
{
    section("8. Durable store");
    printf("  data directories on %s (%s); a submit is answered once its job is committed"
           " (always: and fsynced)\n",
           bench_tmp_root, fs_type(bench_tmp_root));
    printf("  submits: jobs are one-opcode test.delay(0) queued behind a blocker (--max-running"
           " 1), a fresh daemon per line, %.1f s each; commits/fsyncs from stats.store\n",
           opt_store_seconds);
    int rc = 0;
    static const struct {
        wkind_t kind;
        bool many;
        const char *name;
    } lines[] = {
        {W_SUBMIT, false, "single_1"},
        {W_SUBMIT, true, "single_n"},
        {W_BATCH, false, "batch_1"},
        {W_BATCH, true, "batch_n"},
    };
    for (size_t m = 0; m < sizeof sync_modes / sizeof *sync_modes; m++)
        for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
            quiet_gate();
            if (store_line(sync_modes[m], lines[i].kind, lines[i].many ? opt_clients : 1,
                           lines[i].name) < 0)
                rc = -1;
        }
    if (opt_nrecover > 0 && recovery() < 0)
        rc = -1;
    if (opt_store_log_jobs > 0 && log_bytes() < 0)
        rc = -1;
    return rc;
}
