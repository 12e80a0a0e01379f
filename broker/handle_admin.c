/* handle_admin.c: ping, stats, set_drain_flag and shutdown. */
#include "cluster.h"
#include "daemon.h"
#include "log.h"
#include "opreg.h"

#include <stdio.h>
#include <string.h>

jobq_code_t jq_handle_admin_ping(jq_call_t *c)
{
    msgpack_pack_map(c->pk, c->d->cluster ? 9 : 8);
    if (c->d->cluster) { /* who this node is, and who leads */
        wire_pack_cstr(c->pk, "cluster");
        jq_cluster_pack_ping(c->d->cluster, c->pk);
    }
    /* Every version this daemon answers (a client picks one it speaks),
     * and how long a client token is remembered. */
    wire_pack_cstr(c->pk, "protocols");
    msgpack_pack_array(c->pk, 1);
    msgpack_pack_int(c->pk, JOBQ_PROTOCOL_VERSION);
    wire_pack_cstr(c->pk, "token_window");
    msgpack_pack_uint64(c->pk, c->d->cfg.token_window);
    wire_pack_cstr(c->pk, "epoch"); /* a cluster's, known to followers too */
    msgpack_pack_uint64(c->pk, c->d->cluster ? jq_cluster_epoch(c->d->cluster) : c->d->epoch);
    wire_pack_cstr(c->pk, "publish");
    msgpack_pack_array(c->pk, c->d->npublish_eps);
    for (unsigned i = 0; i < c->d->npublish_eps; i++)
        wire_pack_cstr(c->pk, c->d->publish_eps[i]);
    wire_pack_cstr(c->pk, "workers"); /* where workers connect (docs/protocol.md) */
    msgpack_pack_array(c->pk, c->d->nworker_eps);
    for (unsigned i = 0; i < c->d->nworker_eps; i++)
        wire_pack_cstr(c->pk, c->d->worker_eps[i]);
    wire_pack_cstr(c->pk, "version");
    wire_pack_cstr(c->pk, JOBQ_VERSION);
    wire_pack_cstr(c->pk, "protocol");
    msgpack_pack_int(c->pk, JOBQ_PROTOCOL_VERSION);
    wire_pack_cstr(c->pk, "time");
    wire_pack_ts(c->pk, jq_now_wall());
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_admin_drain(jq_call_t *c)
{
    const msgpack_object *o = wire_map_get(c->args, "flag");
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN) {
        snprintf(c->err, c->errlen, "argument 'flag' (boolean) is required");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    /* The flag in memory and the last one queued for the store are set
     * together: two concurrent calls cannot leave them different. */
    pthread_mutex_lock(&c->d->drain_mu);
    atomic_store(&c->d->drained, o->via.boolean);
    jq_store_set_drain(c->d->store, o->via.boolean);
    c->hold_ticket = jq_store_ticket(c->d->store); /* answered once committed */
    pthread_mutex_unlock(&c->d->drain_mu);
    msgpack_pack_true(c->pk);
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_admin_shutdown(jq_call_t *c)
{
    bool now = false;
    if (jq_arg_bool(c, "now", &now) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    /* Refuse submissions from now on; the loop lets running opcodes
     * finish (unless `now`), and this reply goes out first. A later `now`
     * cuts a graceful stop short. */
    atomic_store(&c->d->stopping, true);
    int want = now ? JQ_SHUTDOWN_NOW : JQ_SHUTDOWN_GRACEFUL, cur = JQ_SHUTDOWN_NONE;
    while (cur < want && !atomic_compare_exchange_weak(&c->d->shutdown_requested, &cur, want))
        ;
    msgpack_pack_true(c->pk);
    return JOBQ_ERR_NONE;
}

static long thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %ld", &n) == 1)
            break;
    fclose(f);
    return n;
}

static void pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
    wire_pack_cstr(pk, key);
    msgpack_pack_uint64(pk, v);
}

/* The settings a reload (SIGHUP) may change, as they are now. */
static void pack_limits(msgpack_packer *pk, jq_daemon_t *d)
{
    const jq_config_t *cfg = &d->cfg;
    wire_pack_cstr(pk, "limits");
    msgpack_pack_map(pk, 10);
    pack_kv_u64(pk, "max_running", cfg->max_running);
    pack_kv_u64(pk, "max_jobs", cfg->max_jobs);
    pack_kv_u64(pk, "max_waiters", cfg->max_waiters);
    pack_kv_u64(pk, "max_client_requests", cfg->max_client_requests);
    pack_kv_u64(pk, "max_client_waiters", cfg->max_client_waiters);
    pack_kv_u64(pk, "max_log_entries", cfg->max_log_entries);
    pack_kv_u64(pk, "max_request_bytes", cfg->max_request_bytes);
    wire_pack_cstr(pk, "keepalive");
    msgpack_pack_double(pk, cfg->keepalive);
    wire_pack_cstr(pk, "shutdown_grace");
    msgpack_pack_double(pk, cfg->shutdown_grace);
    wire_pack_cstr(pk, "log_level");
    wire_pack_cstr(pk, jq_log_level_name((jq_log_level_t)cfg->log_level));
}

jobq_code_t jq_handle_admin_stats(jq_call_t *c)
{
    jq_daemon_t *d = c->d;
    msgpack_packer *pk = c->pk;
    uint64_t counts[JQ_STATUS__COUNT] = {0};
    jq_table_count_status(d->table, counts);
    unsigned nshards = jq_table_shard_count(d->table);
    jq_sched_stats_t ss;
    jq_sched_get_stats(d->sched, &ss);

    msgpack_pack_map(pk, 29);
    wire_pack_cstr(pk, "version");
    wire_pack_cstr(pk, JOBQ_VERSION);
    wire_pack_cstr(pk, "uptime");
    msgpack_pack_double(pk, (double)(jq_now_mono() - d->started_mono) / 1e6);
    wire_pack_cstr(pk, "threads");
    msgpack_pack_long(pk, thread_count());
    pack_kv_u64(pk, "shards", nshards);
    wire_pack_cstr(pk, "jobs");
    msgpack_pack_map(pk, JQ_STATUS__COUNT);
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        pack_kv_u64(pk, jq_status_name((jq_status_t)s), counts[s]);
    pack_kv_u64(pk, "live_jobs", jq_table_live_count(d->table));
    pack_kv_u64(pk, "archived_jobs", jq_table_archived_count(d->table));
    pack_kv_u64(pk, "max_jobs", d->cfg.max_jobs);
    pack_limits(pk, d);
    pack_kv_u64(pk, "running", ss.running);
    pack_kv_u64(pk, "max_running", ss.max_running);
    pack_kv_u64(pk, "runnable", ss.runnable);
    pack_kv_u64(pk, "dep_waiting", ss.dep_waiting);
    const jq_worker_stats_t *ws = &d->worker_stats;
    wire_pack_cstr(pk, "workers");
    msgpack_pack_map(pk, 14);
    pack_kv_u64(pk, "connected", atomic_load(&ws->connected));
    pack_kv_u64(pk, "capacity", atomic_load(&ws->capacity));
    pack_kv_u64(pk, "running", atomic_load(&ws->leases));
    pack_kv_u64(pk, "waiting", atomic_load(&ws->waiting));
    pack_kv_u64(pk, "opcodes", jq_opreg_count(d->opset.reg));
    pack_kv_u64(pk, "hellos", atomic_load(&ws->hellos));
    pack_kv_u64(pk, "assigned", atomic_load(&ws->assigned));
    pack_kv_u64(pk, "completed", atomic_load(&ws->completed));
    pack_kv_u64(pk, "failed", atomic_load(&ws->failed));
    pack_kv_u64(pk, "lost", atomic_load(&ws->lost));
    pack_kv_u64(pk, "retries", atomic_load(&ws->retries));
    pack_kv_u64(pk, "timeouts", atomic_load(&ws->timeouts));
    pack_kv_u64(pk, "cancels", atomic_load(&ws->cancels));
    pack_kv_u64(pk, "refused", atomic_load(&ws->refused));
    pack_kv_u64(pk, "pending_commit", ss.pending);
    wire_pack_cstr(pk, "drained");
    if (atomic_load(&d->drained))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    wire_pack_cstr(pk, "requests");
    msgpack_pack_map(pk, JQ_M__COUNT);
    for (int m = 0; m < JQ_M__COUNT; m++)
        pack_kv_u64(pk, jq_method_name((jq_method_t)m), atomic_load(&d->requests[m]));
    wire_pack_cstr(pk, "errors");
    /* The codes the daemon sends: those up to Internal, and those added
     * after the client-side ones. */
    msgpack_pack_map(pk, JOBQ_ERR_INTERNAL + 2);
    for (int e = 1; e <= JOBQ_ERR_INTERNAL; e++)
        pack_kv_u64(pk, jobq_code_name((jobq_code_t)e), atomic_load(&d->errors[e]));
    pack_kv_u64(pk, jobq_code_name(JOBQ_ERR_TOKEN_REUSED),
                atomic_load(&d->errors[JOBQ_ERR_TOKEN_REUSED]));
    pack_kv_u64(pk, jobq_code_name(JOBQ_ERR_PERMISSION_DENIED),
                atomic_load(&d->errors[JOBQ_ERR_PERMISSION_DENIED]));
    pack_kv_u64(pk, "dropped", atomic_load(&d->dropped));
    pack_kv_u64(pk, "too_large", atomic_load(&d->dropped_size));
    pack_kv_u64(pk, "changes", jq_table_changes(d->table));
    pack_kv_u64(pk, "changes_consumed", atomic_load(&d->changes_consumed));
    pack_kv_u64(pk, "submitted", atomic_load(&d->submitted));
    jq_store_stats_t st;
    jq_store_get_stats(d->store, &st);
    pack_kv_u64(pk, "last_job_id", st.last_id); /* committed: never handed out again */
    pack_kv_u64(pk, "events_published", atomic_load(&d->last_seq));
    pack_kv_u64(pk, "epoch", d->epoch);
    pack_kv_u64(pk, "waiters", atomic_load(&d->waiters));
    const jq_loop_stats_t *ls = &d->loop_stats;
    wire_pack_cstr(pk, "connections");
    msgpack_pack_map(pk, 11);
    pack_kv_u64(pk, "open", atomic_load(&ls->connections));
    pack_kv_u64(pk, "peak", atomic_load(&ls->connections_peak));
    pack_kv_u64(pk, "max", atomic_load(&ls->max_connections));
    pack_kv_u64(pk, "accept_pauses", atomic_load(&ls->accept_pauses));
    wire_pack_cstr(pk, "accepting");
    if (atomic_load(&ls->accepting))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    pack_kv_u64(pk, "replies_waiting", atomic_load(&ls->replies_waiting));
    pack_kv_u64(pk, "replies_late", atomic_load(&ls->replies_late));
    pack_kv_u64(pk, "replies_to_gone", atomic_load(&ls->replies_to_gone));
    pack_kv_u64(pk, "busy_dropped", atomic_load(&ls->busy_dropped));
    pack_kv_u64(pk, "refused_auth", atomic_load(&ls->refused_auth));
    pack_kv_u64(pk, "handshake_failed", atomic_load(&ls->handshake_failed));
    wire_pack_cstr(pk, "store");
    msgpack_pack_map(pk, 9);
    wire_pack_cstr(pk, "sync");
    wire_pack_cstr(pk, st.sync);
    pack_kv_u64(pk, "commits", st.commits);
    pack_kv_u64(pk, "fsyncs", st.fsyncs);
    pack_kv_u64(pk, "records", st.records);
    pack_kv_u64(pk, "failures", st.failures);
    pack_kv_u64(pk, "bytes", st.bytes);
    pack_kv_u64(pk, "queued", jq_store_ticket(d->store) - jq_store_durable(d->store));
    pack_kv_u64(pk, "durable", jq_store_durable(d->store));
    wire_pack_cstr(pk, "failing");
    if (jq_store_failing(d->store, NULL, 0))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    return JOBQ_ERR_NONE;
}
