/* metrics.c: GET /metrics (metrics.h).
 *
 * Everything here reads what the daemon already keeps: the shards' status
 * counts (one read lock at a time, as `stats`), atomics (requests, errors,
 * the worker hub's and the loop's counters, the table's meter, the store's
 * histograms), the worker hub's copy made by the loop (hubsnap.h) and the
 * replay ring's counts (its read lock, briefly). Names follow Prometheus'
 * conventions: the jobq_ prefix, _total on counters, seconds and bytes. */
#include "metrics.h"
#include "cluster.h"
#include "meter.h"
#include "workers.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>

static void help(FILE *f, const char *name, const char *type, const char *text)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* A label value: backslash, double quote and line feed escaped. */
static void label_value(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void sample(FILE *f, const char *name, uint64_t v)
{
    fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void sample1(FILE *f, const char *name, const char *label, const char *lv, uint64_t v)
{
    fprintf(f, "%s{%s=\"", name, label);
    label_value(f, lv);
    fprintf(f, "\"} %" PRIu64 "\n", v);
}

static void sample2(FILE *f, const char *name, const char *l1, const char *v1, const char *l2,
                    const char *v2, uint64_t v)
{
    fprintf(f, "%s{%s=\"", name, l1);
    label_value(f, v1);
    fprintf(f, "\",%s=\"", l2);
    label_value(f, v2);
    fprintf(f, "\"} %" PRIu64 "\n", v);
}

static void gauge(FILE *f, const char *name, const char *text, uint64_t v)
{
    help(f, name, "gauge", text);
    sample(f, name, v);
}

static void counter(FILE *f, const char *name, const char *text, uint64_t v)
{
    help(f, name, "counter", text);
    sample(f, name, v);
}

/* A stored value in the exposed unit, exactly: integers as they are,
 * microseconds as decimal seconds without trailing zeros. */
static void scaled(FILE *f, uint64_t v, double scale)
{
    if (scale != 1e-6) {
        fprintf(f, "%" PRIu64, v);
        return;
    }
    char frac[8];
    snprintf(frac, sizeof frac, "%06" PRIu64, v % 1000000);
    size_t n = strlen(frac);
    while (n && frac[n - 1] == '0')
        frac[--n] = '\0';
    fprintf(f, "%" PRIu64 "%s%s", v / 1000000, n ? "." : "", frac);
}

/* One histogram's samples: cumulative buckets, +Inf, _sum, _count; label
 * (may be NULL) names the series. */
static void histogram(FILE *f, const char *name, const char *label, const char *lv,
                      const jq_histo_spec_t *spec, const jq_histo_snap_t *h)
{
    for (unsigned i = 0; i <= spec->n; i++) {
        fprintf(f, "%s_bucket{", name);
        if (label) {
            fprintf(f, "%s=\"", label);
            label_value(f, lv);
            fputs("\",", f);
        }
        fputs("le=\"", f);
        if (i < spec->n)
            scaled(f, spec->le[i], spec->scale);
        else
            fputs("+Inf", f);
        fprintf(f, "\"} %" PRIu64 "\n", h->cum[i]);
    }
    const char *suffix[2] = {"_sum", "_count"};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "%s%s", name, suffix[k]);
        if (label) {
            fprintf(f, "{%s=\"", label);
            label_value(f, lv);
            fputs("\"}", f);
        }
        fputc(' ', f);
        if (k == 0)
            scaled(f, h->sum, spec->scale);
        else
            fprintf(f, "%" PRIu64, h->count);
        fputc('\n', f);
    }
}

static long thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

static void render_jobs(jq_daemon_t *d, FILE *f)
{
    uint64_t counts[JQ_STATUS__COUNT] = {0};
    jq_table_count_status(d->table, counts);
    help(f, "jobq_jobs", "gauge", "Live jobs by status.");
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        sample1(f, "jobq_jobs", "status", jq_status_name((jq_status_t)s), counts[s]);
    gauge(f, "jobq_jobs_live", "Live (not archived) jobs, including submissions in flight.",
          jq_table_live_count(d->table));
    gauge(f, "jobq_jobs_archived", "Archived jobs.", jq_table_archived_count(d->table));
    gauge(f, "jobq_jobs_max", "Live jobs beyond which submissions are refused (--max-jobs).",
          d->cfg.max_jobs);
    counter(f, "jobq_jobs_submitted_total", "Jobs accepted since the daemon started.",
            atomic_load(&d->submitted));
    jq_meter_t *m = jq_table_meter(d->table);
    uint64_t fin[JQ_STATUS__COUNT];
    jq_meter_jobs_finished(m, fin);
    help(f, "jobq_jobs_finished_total", "counter",
         "Jobs that reached a final status since the daemon started, by that status.");
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        if (jq_status_final((jq_status_t)s))
            sample1(f, "jobq_jobs_finished_total", "status", jq_status_name((jq_status_t)s),
                    fin[s]);
    counter(f, "jobq_log_records_total",
            "Entries appended to job logs since the daemon started.", jq_meter_log_entries(m));
    counter(f, "jobq_changes_total", "Change records made since the daemon started.",
            jq_table_changes(d->table));
}

static void render_opcodes(jq_daemon_t *d, FILE *f)
{
    jq_meter_t *m = jq_table_meter(d->table);
    unsigned n = jq_meter_count(m);
    jq_meter_op_snap_t *ops = calloc(n ? n : 1, sizeof *ops);
    if (!ops) {
        fputs("# out of memory: per-opcode metrics left out\n", f);
        return;
    }
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++)
        if (jq_meter_read(m, i, &ops[k]))
            k++;
    help(f, "jobq_opcodes", "gauge",
         "Opcodes of live jobs by opcode and unfinished status (queued, waiting, canceling, "
         "running).");
    for (unsigned i = 0; i < k; i++)
        for (int s = 0; s < JQ_STATUS__COUNT; s++)
            if (!jq_status_final((jq_status_t)s))
                sample2(f, "jobq_opcodes", "opcode", ops[i].name, "status",
                        jq_status_name((jq_status_t)s), ops[i].status[s]);
    help(f, "jobq_opcodes_finished_total", "counter",
         "Opcodes that ended since the daemon started, by opcode and final status.");
    for (unsigned i = 0; i < k; i++)
        for (int s = 0; s < JQ_STATUS__COUNT; s++)
            if (jq_status_final((jq_status_t)s))
                sample2(f, "jobq_opcodes_finished_total", "opcode", ops[i].name, "status",
                        jq_status_name((jq_status_t)s), ops[i].status[s]);
    help(f, "jobq_opcode_queue_wait_seconds", "histogram",
         "From the end of the previous opcode (or the job's receipt) to the opcode's start, "
         "observed when it first starts running.");
    for (unsigned i = 0; i < k; i++)
        histogram(f, "jobq_opcode_queue_wait_seconds", "opcode", ops[i].name,
                  &jq_meter_seconds_spec, &ops[i].wait);
    help(f, "jobq_opcode_run_seconds", "histogram",
         "From an opcode's (last attempt's) start to its end, observed when an opcode that "
         "started in this run ends.");
    for (unsigned i = 0; i < k; i++)
        histogram(f, "jobq_opcode_run_seconds", "opcode", ops[i].name, &jq_meter_seconds_spec,
                  &ops[i].run);
    free(ops);
}

static void render_requests(jq_daemon_t *d, FILE *f)
{
    help(f, "jobq_requests_total", "counter", "Requests handled, by method.");
    for (int i = 0; i < JQ_M__COUNT; i++)
        sample1(f, "jobq_requests_total", "method", jq_method_name((jq_method_t)i),
                atomic_load(&d->requests[i]));
    counter(f, "jobq_requests_on_loop_total",
            "Requests the loop served itself, with no handler thread.",
            atomic_load(&d->requests_on_loop));
    /* The codes the daemon sends, as `stats` lists them. */
    help(f, "jobq_request_errors_total", "counter", "Error replies sent, by error code.");
    for (int e = 1; e < JOBQ_ERR__COUNT; e++)
        if (e <= JOBQ_ERR_INTERNAL || e == JOBQ_ERR_TOKEN_REUSED ||
            e == JOBQ_ERR_PERMISSION_DENIED)
            sample1(f, "jobq_request_errors_total", "code", jobq_code_name((jobq_code_t)e),
                    atomic_load(&d->errors[e]));
    counter(f, "jobq_requests_dropped_total",
            "Requests dropped unanswered for their frame layout.", atomic_load(&d->dropped));
    counter(f, "jobq_requests_too_large_total",
            "Requests refused for their size (--max-request-bytes).",
            atomic_load(&d->dropped_size));
    gauge(f, "jobq_waiters", "wait_for_job_change requests parked or in flight.",
          atomic_load(&d->waiters));
}

static void render_store(jq_daemon_t *d, FILE *f)
{
    jq_store_stats_t st;
    jq_store_get_stats(d->store, &st);
    counter(f, "jobq_store_commits_total", "Store transactions committed.", st.commits);
    counter(f, "jobq_store_fsyncs_total", "Store syncs to disk.", st.fsyncs);
    counter(f, "jobq_store_checkpoints_total",
            "Checkpoints of the write-ahead log (--sync always).", st.checkpoints);
    counter(f, "jobq_store_records_total", "Change records committed to the store.",
            st.records);
    counter(f, "jobq_store_failures_total", "Store commits that failed.", st.failures);
    gauge(f, "jobq_store_bytes", "Size of the store's data file in use.", st.bytes);
    gauge(f, "jobq_store_queued", "Change records waiting for a commit.",
          jq_store_backlog(d->store));
    gauge(f, "jobq_store_failing", "1 while the last store commit failed, else 0.",
          jq_store_failing(d->store, NULL, 0) ? 1 : 0);
    jq_histo_snap_t batch, latency;
    jq_store_get_histograms(d->store, &batch, &latency);
    help(f, "jobq_store_batch_records", "histogram", "Change records per successful commit.");
    histogram(f, "jobq_store_batch_records", NULL, NULL, &jq_store_batch_spec, &batch);
    help(f, "jobq_store_commit_seconds", "histogram",
         "Time of each store commit with its sync, in the store thread (failed ones too).");
    histogram(f, "jobq_store_commit_seconds", NULL, NULL, &jq_store_latency_spec, &latency);
}

static void render_events(jq_daemon_t *d, FILE *f)
{
    counter(f, "jobq_events_published_total",
            "Events published in this epoch (the last sequence number).",
            atomic_load(&d->last_seq));
    gauge(f, "jobq_epoch", "This run's event epoch.", d->epoch);
    if (d->ring) {
        jq_ring_stats_t rs;
        jq_ring_get_stats(d->ring, &rs);
        gauge(f, "jobq_replay_ring_events", "Events held by the replay ring.", rs.events);
        gauge(f, "jobq_replay_ring_bytes", "Bytes of events held by the replay ring.",
              rs.bytes);
        gauge(f, "jobq_replay_ring_max_events", "Events the replay ring holds at most.",
              rs.max_events);
        gauge(f, "jobq_replay_ring_max_bytes", "Bytes the replay ring holds at most.",
              rs.max_bytes);
    }
}

static void render_connections(jq_daemon_t *d, FILE *f)
{
    static const char *const kinds[] = {"clients", "subscribers", "workers"};
    const jq_loop_stats_t *ls = &d->loop_stats;
    help(f, "jobq_connections", "gauge",
         "Connections open now, by kind (clients, subscribers of the event endpoints, "
         "workers).");
    for (int k = 0; k < 3; k++)
        sample1(f, "jobq_connections", "kind", kinds[k], atomic_load(&ls->by_kind[k]));
    gauge(f, "jobq_connections_peak", "Most connections open at once.",
          atomic_load(&ls->connections_peak));
    gauge(f, "jobq_connections_max",
          "Connections at which new ones are not accepted (--max-connections).",
          atomic_load(&ls->max_connections));
    counter(f, "jobq_connections_refused_total",
            "Handshakes refused: unknown or revoked keys, and other failed handshakes.",
            atomic_load(&ls->refused_auth) + atomic_load(&ls->handshake_failed));
    counter(f, "jobq_replies_dropped_total",
            "Replies dropped: to clients gone, or over a client's backlog.",
            atomic_load(&ls->replies_to_gone) + atomic_load(&ls->busy_dropped));
}

static void render_workers(jq_daemon_t *d, FILE *f)
{
    const jq_worker_stats_t *ws = &d->worker_stats;
    gauge(f, "jobq_workers_connected", "Workers registered now.", atomic_load(&ws->connected));
    gauge(f, "jobq_workers_capacity", "Capacity of the workers registered, summed.",
          atomic_load(&ws->capacity));
    gauge(f, "jobq_workers_busy", "Opcodes held by workers now.", atomic_load(&ws->leases));
    gauge(f, "jobq_workers_waiting", "Opcodes waiting for a worker.",
          atomic_load(&ws->waiting));
    counter(f, "jobq_worker_hellos_total", "Worker registrations.", atomic_load(&ws->hellos));
    counter(f, "jobq_worker_assigned_total", "Opcode attempts handed to workers.",
            atomic_load(&ws->assigned));
    counter(f, "jobq_worker_completed_total",
            "Opcode attempts workers ended (with success or an error).",
            atomic_load(&ws->completed));
    counter(f, "jobq_worker_failed_total", "Opcode attempts workers ended with an error.",
            atomic_load(&ws->failed));
    counter(f, "jobq_worker_lost_total",
            "Workers lost (silent for the lease time): their leases ended.",
            atomic_load(&ws->lost));
    counter(f, "jobq_worker_retries_total", "Attempts that went back to the queue.",
            atomic_load(&ws->retries));
    counter(f, "jobq_worker_timeouts_total", "Attempts that ran out of time.",
            atomic_load(&ws->timeouts));
    counter(f, "jobq_worker_cancels_total", "Attempts workers were told to stop (cancel).",
            atomic_load(&ws->cancels));
    counter(f, "jobq_worker_refused_total",
            "Worker messages refused (malformed, stale lease...).", atomic_load(&ws->refused));
    jq_hubsnap_op_t *ops = NULL;
    size_t n = jq_hub_snapshot_opcodes(d->hub, &ops);
    if (n == SIZE_MAX) {
        fputs("# out of memory: per-opcode worker metrics left out\n", f);
        return;
    }
    struct {
        const char *name, *text;
    } fam[4] = {
        {"jobq_worker_opcode_workers", "Workers serving the opcode."},
        {"jobq_worker_opcode_capacity", "Capacity of the workers serving the opcode, summed."},
        {"jobq_worker_opcode_busy", "The opcode's attempts held by workers now."},
        {"jobq_worker_opcode_waiting", "The opcode's attempts waiting for a worker."},
    };
    for (int k = 0; k < 4; k++) {
        help(f, fam[k].name, "gauge", fam[k].text);
        for (size_t i = 0; i < n; i++) {
            uint64_t v = k == 0 ? ops[i].workers : k == 1 ? ops[i].capacity
                                                 : k == 2 ? ops[i].busy : ops[i].waiting;
            sample1(f, fam[k].name, "opcode", ops[i].name, v);
        }
    }
    free(ops);
}

static void render_process(jq_daemon_t *d, FILE *f)
{
    jq_sched_stats_t ss;
    jq_sched_get_stats(d->sched, &ss);
    gauge(f, "jobq_executor_running", "Jobs held by the daemon's executors now.", ss.running);
    gauge(f, "jobq_executor_max_running", "Jobs the executors run at once at most.",
          ss.max_running);
    gauge(f, "jobq_scheduler_runnable", "Jobs in the run queue.", ss.runnable);
    gauge(f, "jobq_scheduler_dep_waiting", "Jobs parked on a dependency.", ss.dep_waiting);
    gauge(f, "jobq_drained", "1 while the queue is drained (no new jobs), else 0.",
          atomic_load(&d->drained) ? 1 : 0);
    long threads = thread_count();
    gauge(f, "jobq_threads", "Threads of the daemon process.",
          threads > 0 ? (uint64_t)threads : 0);
    gauge(f, "jobq_resident_memory_bytes", "Resident memory of the daemon process.",
          rss_bytes());
    int64_t up = jq_now_mono() - d->started_mono;
    if (up < 0)
        up = 0;
    help(f, "jobq_uptime_seconds", "gauge", "Seconds since the daemon started.");
    fputs("jobq_uptime_seconds ", f);
    scaled(f, (uint64_t)up, 1e-6);
    fputc('\n', f);
    int64_t start = jq_now_wall() - up;
    help(f, "jobq_start_time_seconds", "gauge", "When the daemon started, in Unix seconds.");
    fputs("jobq_start_time_seconds ", f);
    scaled(f, start > 0 ? (uint64_t)start : 0, 1e-6);
    fputc('\n', f);
    help(f, "jobq_build_info", "gauge", "The daemon's version, as a label; always 1.");
    sample1(f, "jobq_build_info", "version", JOBQ_VERSION, 1);
}

/* Always rendered (zeros without --cluster), so the set of families does
 * not depend on the options. */
static void render_cluster(jq_daemon_t *d, FILE *f)
{
    jq_cluster_stats_t cs = {.leading = true};
    if (d->cluster)
        jq_cluster_get_stats(d->cluster, &cs);
    gauge(f, "jobq_cluster_nodes", "Nodes in the Raft configuration (0 without --cluster).",
          cs.nodes);
    gauge(f, "jobq_cluster_serving", "1 while this daemon serves the queue (a cluster's "
                                     "leader; always without --cluster), else 0.",
          cs.leading ? 1 : 0);
    gauge(f, "jobq_cluster_term", "The Raft term this node knows.", cs.term);
    gauge(f, "jobq_cluster_applied_index", "The last Raft log index this node applied.",
          cs.applied);
    gauge(f, "jobq_cluster_commit_index", "The last Raft log index this node knows committed.",
          cs.commit);
    gauge(f, "jobq_cluster_last_index", "The last Raft log index this node has.",
          cs.last_index);
    help(f, "jobq_cluster_node_lag_entries", "gauge",
         "On the leader: how many log entries each other node is behind.");
    for (unsigned i = 0; i < cs.npeers; i++) {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)cs.peer_id[i]);
        sample1(f, "jobq_cluster_node_lag_entries", "node", id, cs.peer_lag[i]);
    }
}

int jq_metrics_render(jq_daemon_t *d, FILE *out)
{
    render_jobs(d, out);
    render_opcodes(d, out);
    render_requests(d, out);
    render_store(d, out);
    render_events(d, out);
    render_connections(d, out);
    render_workers(d, out);
    render_process(d, out);
    render_cluster(d, out);
    return ferror(out) ? -1 : 0;
}
