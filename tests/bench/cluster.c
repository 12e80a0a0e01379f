/* cluster.c: workload 14, the Raft cluster (issue 13), in one run:
 * submit throughput and latency on a plain jobqd and on clusters of 1, 3
 * and 5 nodes; the full cycle with workers on 1 and 3 nodes; failover
 * time (kill -9 of the leader under a submit load); the catch-up rate of
 * a node that joins a cluster holding many jobs; list and submit latency
 * while a follower is stopped (SIGSTOP).
 *
 * Every node runs on this machine: node traffic on 127.0.0.1 TCP, CURVE
 * (each node's keypair in its data directory, role admin, and every other
 * node's public key in its authorized_keys, as docs/cluster.md says) —
 * the secure configuration, not --insecure. --insecure would also make the
 * client endpoints plain TCP; so that the node traffic stays encrypted the
 * bench's clients, workers and subscribers use the nodes' ipc:// endpoints
 * in every line of this workload, the plain jobqd's included. */
#include "cycle.h"
#include "workloads.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_NODES 6
#define PIPE_SINGLE 64 /* submit_job requests in flight, pipelined line */
#define PIPE_BATCH 4   /* submit_many_jobs requests in flight */
#define STALL_JOBS 10000
#define STALL_RATE 2000.0 /* background jobs/s of the stalled-follower phases */
#define BG_PERIOD 0.01
#define PAGE_ROWS 50

typedef struct {
    daemon_t node[MAX_NODES];
    char pub[MAX_NODES][41];
    int port[MAX_NODES];
    bool up[MAX_NODES];
    int prepared;
    const char *const *extra; /* more jobqd arguments for every node */
    int starts[MAX_NODES];
} cluster_t;

/* ------------------------------------------------------------------ */
/* nodes                                                               */

/* Data directories, keys and node ports for n nodes: each its own CURVE
 * keypair (role admin), and every other node's public key authorized. */
static int cl_prepare(cluster_t *cl, int n, const char *const *extra)
{
    memset(cl, 0, sizeof *cl);
    cl->extra = extra;
    for (int i = 0; i < n; i++) {
        daemon_t *d = &cl->node[i];
        char sec[41], dir[400];
        if (bench_mkdtemp(d->dir, sizeof d->dir, "node") < 0 ||
            zmq_curve_keypair(cl->pub[i], sec) != 0 ||
            bench_write_cert(d->dir, "server", "admin", cl->pub[i], sec) < 0)
            return -1;
        snprintf(dir, sizeof dir, "%s/authorized_keys", d->dir);
        if (mkdir(dir, 0700) < 0)
            return -1;
        char base[sizeof d->dir]; /* a copy: gcc cannot tell d->dir from d->endpoint */
        memcpy(base, d->dir, sizeof base);
        snprintf(d->endpoint, sizeof d->endpoint, "ipc://%s/jobq.sock", base);
        cl->port[i] = free_tcp_port();
        cl->prepared = i + 1;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            char dir[400], name[32];
            snprintf(dir, sizeof dir, "%s/authorized_keys", cl->node[i].dir);
            snprintf(name, sizeof name, "node%d", j);
            if (i != j && bench_write_cert(dir, name, "admin", cl->pub[j], NULL) < 0)
                return -1;
        }
    return 0;
}

/* A ping's result.cluster.state into state ("" when absent); -1 when the
 * node does not answer within timeout_ms. */
static int ping_state(jc_t *c, char *state, size_t len, int timeout_ms)
{
    state[0] = '\0';
    msgpack_packer *pk = jc_begin(c, "ping");
    msgpack_pack_map(pk, 0);
    if (jc_call(c, timeout_ms) < 0)
        return -1;
    const msgpack_object *cs = wire_map_get(c->rep.result, "cluster");
    const msgpack_object *st = cs ? wire_map_get(cs, "state") : NULL;
    if (st && st->type == MSGPACK_OBJECT_STR && st->via.str.size < len) {
        memcpy(state, st->via.str.ptr, st->via.str.size);
        state[st->via.str.size] = '\0';
    }
    return 0;
}

static int cl_node_start(cluster_t *cl, int i, bool join)
{
    daemon_t *d = &cl->node[i];
    char addr[32], joinep[420];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cl->port[i]);
    char dir[sizeof d->dir];
    memcpy(dir, d->dir, sizeof dir);
    if (cl->starts[i]++)
        snprintf(d->log, sizeof d->log, "%s/jobqd.%d.log", dir, cl->starts[i]);
    else
        snprintf(d->log, sizeof d->log, "%s/jobqd.log", dir);
    const char *argv[48];
    int n = 0;
    argv[n++] = opt_jobqd;
    argv[n++] = "--data-dir";
    argv[n++] = d->dir;
    argv[n++] = "--cluster";
    argv[n++] = "--node-address";
    argv[n++] = addr;
    if (opt_sync) {
        argv[n++] = "--sync";
        argv[n++] = opt_sync;
    }
    if (join) { /* the first node's client endpoint; NotLeader is followed */
        snprintf(joinep, sizeof joinep, "%s", cl->node[0].endpoint);
        argv[n++] = "--join";
        argv[n++] = joinep;
    }
    for (int k = 0; cl->extra && cl->extra[k] && n < 46; k++)
        argv[n++] = cl->extra[k];
    argv[n] = NULL;
    d->pid = bench_spawn(argv, d->log);
    if (d->pid < 0)
        return -1;
    cl->up[i] = true;
    note("cluster node %d pid %d on %s (node address %s)", i, (int)d->pid, d->endpoint, addr);
    return 0;
}

/* The index of the node whose ping says "leader" (polled every 20 ms
 * over the running nodes), -1 after timeout seconds. */
static int cl_leader(cluster_t *cl, void *ctx, double timeout)
{
    double end = bench_now() + timeout;
    jc_t *c[MAX_NODES] = {0};
    int found = -1;
    while (found < 0 && bench_now() < end) {
        for (int i = 0; i < cl->prepared && found < 0; i++) {
            if (!cl->up[i])
                continue;
            if (!c[i])
                c[i] = jc_open(ctx, cl->node[i].endpoint);
            char st[32];
            if (ping_state(c[i], st, sizeof st, 200) == 0 && strcmp(st, "leader") == 0)
                found = i;
        }
        if (found < 0)
            bench_sleep(0.02); /* poll interval */
    }
    for (int i = 0; i < MAX_NODES; i++)
        jc_close(&c[i]);
    return found;
}

/* query_nodes on c: members that are leader or follower (*members), the
 * answering node's own applied index (*self), the smallest and largest
 * applied index among those members; -1 on failure. */
static int nodes_view(jc_t *c, int *members, uint64_t *self, uint64_t *min_applied,
                      uint64_t *max_applied)
{
    msgpack_packer *pk = jc_begin(c, "query_nodes");
    msgpack_pack_map(pk, 0);
    if (jc_call(c, 2000) < 0 || c->rep.result->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    *members = 0;
    *self = 0;
    *min_applied = UINT64_MAX;
    *max_applied = 0;
    const msgpack_object_array *a = &c->rep.result->via.array;
    for (uint32_t i = 0; i < a->size; i++) {
        const msgpack_object *r = &a->ptr[i];
        int64_t ap = 0;
        wire_get_int(wire_map_get(r, "applied"), &ap);
        const msgpack_object *me = wire_map_get(r, "self");
        if (me && me->type == MSGPACK_OBJECT_BOOLEAN && me->via.boolean)
            *self = (uint64_t)ap;
        const msgpack_object *st = wire_map_get(r, "state");
        if (wire_str_eq(st, "leader") || wire_str_eq(st, "follower")) {
            (*members)++;
            if ((uint64_t)ap < *min_applied)
                *min_applied = (uint64_t)ap;
            if ((uint64_t)ap > *max_applied)
                *max_applied = (uint64_t)ap;
        }
    }
    return 0;
}

/* Until the leader's query_nodes shows n members (leader or follower)
 * that all applied the same index; false after timeout seconds. */
static bool cl_converged(cluster_t *cl, void *ctx, int leader, int n, double timeout)
{
    jc_t *c = jc_open(ctx, cl->node[leader].endpoint);
    double end = bench_now() + timeout;
    bool ok = false;
    while (!ok && bench_now() < end) {
        int members;
        uint64_t self, lo, hi;
        if (nodes_view(c, &members, &self, &lo, &hi) == 0 && members == n && lo == hi)
            ok = true;
        else
            bench_sleep(0.02); /* poll interval */
    }
    jc_close(&c);
    return ok;
}

/* Starts nodes 0..n-1 (node 0 starts the cluster, the others join it one
 * after the other); the leader's index, -1 on failure. */
static int cl_start(cluster_t *cl, void *ctx, int n)
{
    quiet_gate();
    for (int i = 0; i < n; i++) {
        if (cl_node_start(cl, i, i > 0) < 0)
            return -1;
        int l = cl_leader(cl, ctx, 30);
        if (l < 0 || !cl_converged(cl, ctx, l, i + 1, 30)) {
            fprintf(stderr, "jobq-bench: cluster node %d did not join in 30 s (log %s)\n", i,
                    cl->node[i].log);
            return -1;
        }
    }
    return cl_leader(cl, ctx, 10);
}

static void cl_stop(cluster_t *cl)
{
    for (int i = 0; i < cl->prepared; i++) {
        if (cl->up[i]) {
            kill(cl->node[i].pid, SIGCONT); /* a stopped node cannot handle SIGTERM */
            daemon_term(&cl->node[i], 15);
        }
        cl->up[i] = false;
        if (!opt_keep)
            bench_rmtree(cl->node[i].dir);
    }
}

/* The nodes other than the leader count as the bench's own processes in
 * the "others" figure (their CPU is part of what is measured). */
static void cl_account(cluster_t *cl, int leader, bool on)
{
    for (int i = 0; i < cl->prepared; i++)
        if (cl->up[i] && i != leader) {
            if (on)
                bench_child_add(cl->node[i].pid);
            else
                bench_child_remove(cl->node[i].pid);
        }
}

static double cl_cpu(cluster_t *cl, int leader, bool followers)
{
    double s = 0;
    for (int i = 0; i < cl->prepared; i++)
        if (cl->up[i] && (i == leader) != followers)
            s += proc_cpu_seconds(cl->node[i].pid);
    return s;
}

/* ------------------------------------------------------------------ */
/* submit lines                                                        */

static void pack_submit(jc_t *c, bool batch)
{
    msgpack_packer *pk = jc_begin(c, batch ? "submit_many_jobs" : "submit_job");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, batch ? "jobs" : "ops");
    if (!batch) {
        pack_delay_job(pk, 0, 0);
        return;
    }
    msgpack_pack_array(pk, (uint32_t)opt_batch);
    for (int i = 0; i < opt_batch; i++)
        pack_delay_job(pk, 0, 0);
}

/* One client keeping `window` requests in flight for `seconds`: jobs/s
 * (to the last reply), p50/p99 of each request's send -> reply (ms). */
static double run_pipelined(bool batch, int window, const char *ep, pid_t daemon,
                            double seconds, double *p50, double *p99, long *errors,
                            others_t *o)
{
    enum { RING = 1 << 16 };
    void *ctx = new_ctx(1, 16);
    jc_t *c = jc_open(ctx, ep);
    double *sent = calloc(RING, sizeof *sent);
    samples_t lat = {0};
    long items = 0, inflight = 0;
    *errors = 0;
    msgpack_packer *pk = jc_begin(c, "ping");
    msgpack_pack_map(pk, 0);
    if (jc_call(c, 5000) < 0)
        (*errors)++;
    double t0 = bench_now(), end = t0 + seconds;
    others_begin(o, daemon);
    while (!*errors) {
        double now = bench_now();
        while (inflight < window && now < end) {
            pack_submit(c, batch);
            sent[c->last_sent_id & (RING - 1)] = bench_now();
            if (jc_send(c) < 0) {
                (*errors)++;
                break;
            }
            inflight++;
        }
        if (inflight == 0)
            break;
        if (jc_recv(c, 60000) < 0) {
            fprintf(stderr, "jobq-bench: pipelined submit: %s\n", c->errbuf);
            (*errors)++;
            break;
        }
        if (c->rep.keepalive || !c->rep.has_id)
            continue;
        double b = bench_now();
        inflight--;
        if (!c->rep.ok) {
            if ((*errors)++ == 0)
                fprintf(stderr, "jobq-bench: pipelined submit refused: %s: %.*s\n",
                        jobq_code_name(c->rep.code), (int)c->rep.message_len,
                        c->rep.message ? c->rep.message : "");
            continue;
        }
        items += batch ? opt_batch : 1;
        samples_add(&lat, (b - sent[c->rep.id & (RING - 1)]) * 1e3);
    }
    double t1 = bench_now();
    *p50 = samples_pct(&lat, 50);
    *p99 = samples_pct(&lat, 99);
    samples_free(&lat);
    free(sent);
    jc_close(&c);
    zmq_ctx_term(ctx);
    return (double)items / (t1 - t0);
}

typedef struct {
    const char *name, *label; /* key part, report label */
    int nodes;                /* 0: jobqd without --cluster */
} config_t;

static const config_t CONFIGS[] = {
    {"plain1", "1 node, plain", 0},
    {"raft1", "1 node, --cluster", 1},
    {"raft3", "3 nodes", 3},
    {"raft5", "5 nodes", 5},
};
enum { NCONFIGS = sizeof CONFIGS / sizeof *CONFIGS };

typedef struct {
    const char *name, *what;
    bool batch;
    int window; /* 0: one at a time (the submit workload's client) */
} sline_t;

static const sline_t SLINES[] = {
    {"single", "submit_job, one at a time", false, 0},
    {"single_pipe", "submit_job, 64 in flight", false, PIPE_SINGLE},
    {"batch", "submit_many_jobs x%d, one at a time", true, 0},
    {"batch_pipe", "submit_many_jobs x%d, 4 in flight", true, PIPE_BATCH},
};
enum { NSLINES = sizeof SLINES / sizeof *SLINES };

/* A fresh daemon or cluster with job 1 blocking the only run slot, so
 * every submitted job stays queued: every submit line on it, in turn. */
static int submit_config(const config_t *cf)
{
    static const char *const blocked[] = {"--max-running", "1", "--max-jobs", "20000000", NULL};
    void *ctx = new_ctx(1, 64);
    cluster_t cl;
    daemon_t plain;
    jc_t *c = NULL;
    int rc = -1, leader = -1;
    const char *ep;
    pid_t pid;
    memset(&cl, 0, sizeof cl);
    memset(&plain, 0, sizeof plain);
    if (cf->nodes == 0) {
        if (start_blocked_daemon_ex(&plain, &c, ctx, "20000000", NULL) < 0)
            goto out;
        ep = plain.endpoint;
        pid = plain.pid;
    } else {
        if (cl_prepare(&cl, cf->nodes, blocked) < 0 || (leader = cl_start(&cl, ctx, cf->nodes)) < 0)
            goto out;
        ep = cl.node[leader].endpoint;
        pid = cl.node[leader].pid;
        c = jc_open(ctx, ep);
        if (!jc_submit_delay(c, BLOCKER_SECONDS, 0) || !jc_wait_stat(c, "running", 1, 10)) {
            fprintf(stderr, "jobq-bench: blocker job did not start: %s\n", c->errbuf);
            goto out;
        }
    }
    rc = 0;
    for (int i = 0; i < NSLINES; i++) {
        const sline_t *sl = &SLINES[i];
        char label[128], what[64], key[96];
        snprintf(what, sizeof what, sl->what, opt_batch);
        snprintf(label, sizeof label, "%s, %s", cf->label, what);
        snprintf(key, sizeof key, "cluster.submit.%s.%s", cf->name, sl->name);
        quiet_gate();
        if (cf->nodes)
            cl_account(&cl, leader, true);
        double l0 = proc_cpu_seconds(pid), f0 = cf->nodes ? cl_cpu(&cl, leader, true) : 0;
        double t0 = bench_now(), p50, p99, r;
        long errors = 0;
        others_t o;
        if (sl->window)
            r = run_pipelined(sl->batch, sl->window, ep, pid, opt_submit_seconds, &p50, &p99,
                              &errors, &o);
        else
            r = run_workers(sl->batch ? W_BATCH : W_SUBMIT, 1, ep, 0, 19000000, pid,
                            opt_submit_seconds, &p50, &p99, &errors, &o, NULL);
        double secs = bench_now() - t0;
        double lc = (proc_cpu_seconds(pid) - l0) / secs;
        double fc = cf->nodes ? (cl_cpu(&cl, leader, true) - f0) / secs : 0;
        report_rate(label, key, r, p50, p99, errors, "job", &o);
        if (cf->nodes)
            cl_account(&cl, leader, false);
        printf("    CPU: %s %.2f cores", cf->nodes ? "leader" : "daemon", lc);
        if (cf->nodes > 1)
            printf(", followers %.2f cores (all %d)", fc, cf->nodes - 1);
        printf("\n");
        char k[128];
        snprintf(k, sizeof k, "%s.leader_cores", key);
        result_set(k, lc);
        snprintf(k, sizeof k, "%s.followers_cores", key);
        result_set(k, fc);
        if (errors)
            rc = -1;
    }
out:
    jc_close(&c);
    zmq_ctx_term(ctx);
    if (cf->nodes == 0) {
        if (plain.pid)
            daemon_stop(&plain);
    } else {
        cl_stop(&cl);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* full cycle                                                          */

static int cycle_config(const config_t *cf, int nworkers)
{
    char label[128], key[96];
    snprintf(label, sizeof label, "cycle, %d workers, %s", nworkers, cf->label);
    snprintf(key, sizeof key, "cluster.cycle.%s", cf->name);
    const char *sync = opt_sync ? opt_sync : "always";
    if (cf->nodes == 0)
        return cycle_jobq_line(sync, nworkers, opt_cycle_window, label, key, NULL);
    void *ctx = new_ctx(1, 16);
    cluster_t cl;
    int rc = -1, leader;
    if (cl_prepare(&cl, cf->nodes, NULL) == 0 && (leader = cl_start(&cl, ctx, cf->nodes)) >= 0) {
        char pub[420], wep[420];
        snprintf(pub, sizeof pub, "ipc://%s/events.sock", cl.node[leader].dir);
        snprintf(wep, sizeof wep, "ipc://%s/workers.sock", cl.node[leader].dir);
        cl_account(&cl, leader, true);
        double f0 = cl_cpu(&cl, leader, true), t0 = bench_now();
        rc = cycle_jobq_on(&cl.node[leader], pub, wep, nworkers, opt_cycle_window, label, key,
                           NULL);
        cl_account(&cl, leader, false);
        if (cf->nodes > 1) {
            double fc = (cl_cpu(&cl, leader, true) - f0) / (bench_now() - t0);
            printf("    followers %.2f cores (all %d, over the whole line)\n", fc,
                   cf->nodes - 1);
            char k[128];
            snprintf(k, sizeof k, "%s.followers_cores", key);
            result_set(k, fc);
        }
    }
    zmq_ctx_term(ctx);
    cl_stop(&cl);
    return rc;
}

/* ------------------------------------------------------------------ */
/* failover                                                            */

/* The node a NotLeader answer names as leader (matched by its first client
 * endpoint), -1 when it names none or one the bench does not know. */
static int named_leader(cluster_t *cl, jc_t *c)
{
    const msgpack_object *e = wire_map_get(&c->up.data, "error");
    const msgpack_object *l = e ? wire_map_get(e, "leader") : NULL;
    const msgpack_object *eps = l ? wire_map_get(l, "endpoints") : NULL;
    if (!eps || eps->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    for (uint32_t k = 0; k < eps->via.array.size; k++)
        for (int i = 0; i < cl->prepared; i++)
            if (wire_str_eq(&eps->via.array.ptr[k], cl->node[i].endpoint))
                return i;
    return -1;
}

typedef struct {
    double elected_s; /* kill -> a survivor's ping says "leader" */
    double ack_s;     /* kill -> first acknowledged submit on another node */
    long acked_before, timeouts, redirects;
    long self_named; /* NotLeader answers naming the node that answered */
    double self_first_s, self_last_s; /* kill -> the first and last of them */
} failover_t;

/* Pings the surviving nodes every 10 ms from the kill on, until one says
 * it leads: the election's share of the failover time. */
typedef struct {
    cluster_t *cl;
    void *ctx;
    double t_kill, elected_s;
    _Atomic bool stop;
    pthread_t th;
} elect_t;

static void *elect_main(void *arg)
{
    elect_t *e = arg;
    jc_t *c[MAX_NODES] = {0};
    for (int i = 0; i < e->cl->prepared; i++)
        if (e->cl->up[i])
            c[i] = jc_open(e->ctx, e->cl->node[i].endpoint);
    while (!atomic_load(&e->stop) && isnan(e->elected_s) && bench_now() < e->t_kill + 30) {
        for (int i = 0; i < MAX_NODES && isnan(e->elected_s); i++) {
            char st[32];
            if (c[i] && ping_state(c[i], st, sizeof st, 100) == 0 && strcmp(st, "leader") == 0)
                e->elected_s = bench_now() - e->t_kill;
        }
        bench_sleep(0.01); /* poll interval */
    }
    for (int i = 0; i < MAX_NODES; i++)
        jc_close(&c[i]);
    return NULL;
}

/* One client submitting test.delay(0) one at a time to the leader; after
 * 1 s the leader is killed (SIGKILL, between two requests) and the client
 * looks for the new leader as the clients do: it follows NotLeader's
 * `leader`, tries the next node after a 100 ms timeout, and waits 50 ms
 * when NotLeader names no leader. */
static int failover_once(cluster_t *cl, void *ctx, int leader, failover_t *f)
{
    memset(f, 0, sizeof *f);
    jc_t *c[MAX_NODES] = {0};
    for (int i = 0; i < cl->prepared; i++)
        if (cl->up[i])
            c[i] = jc_open(ctx, cl->node[i].endpoint);
    int cur = leader, rc = -1;
    double t_start = bench_now(), t_kill = 0;
    elect_t el = {.cl = cl, .ctx = ctx, .elected_s = NAN};
    bool el_on = false;
    while (bench_now() < t_start + 30) {
        if (!t_kill && bench_now() >= t_start + 1.0) {
            kill(cl->node[leader].pid, SIGKILL);
            t_kill = bench_now();
            waitpid(cl->node[leader].pid, NULL, 0);
            cl->up[leader] = false;
            note("killed the leader, node %d (pid %d)", leader, (int)cl->node[leader].pid);
            el.t_kill = t_kill;
            el_on = pthread_create(&el.th, NULL, elect_main, &el) == 0;
        }
        jc_t *cc = c[cur];
        msgpack_packer *pk = jc_begin(cc, "submit_job");
        msgpack_pack_map(pk, 1);
        wire_pack_cstr(pk, "ops");
        pack_delay_job(pk, 0, 0);
        int r = jc_call(cc, 100);
        double now = bench_now();
        if (r == 0) {
            if (!t_kill) {
                f->acked_before++;
                continue;
            }
            if (cur != leader) {
                f->ack_s = now - t_kill;
                rc = 0;
                break;
            }
            continue;
        }
        if (cc->rep.has_id && cc->rep.id == cc->last_sent_id && !cc->rep.ok &&
            cc->rep.code == JOBQ_ERR_NOT_LEADER) {
            int n = named_leader(cl, cc);
            if (n >= 0) {
                f->redirects++;
                if (n == cur) {
                    if (!f->self_named++)
                        f->self_first_s = now - t_kill;
                    f->self_last_s = now - t_kill;
                }
                cur = n;
                continue;
            }
            bench_sleep(0.05); /* no leader yet: an election */
        } else if (r < 0 && strncmp(cc->errbuf, "no reply", 8) == 0) {
            f->timeouts++;
        } else {
            fprintf(stderr, "jobq-bench: failover submit: %s\n", cc->errbuf);
        }
        do /* the next node of the configured list */
            cur = (cur + 1) % cl->prepared;
        while (!c[cur]);
    }
    if (el_on) { /* it ends once a node says it leads, or 30 s after the kill */
        if (rc < 0)
            atomic_store(&el.stop, true);
        pthread_join(el.th, NULL);
    }
    f->elected_s = el.elected_s;
    for (int i = 0; i < MAX_NODES; i++)
        jc_close(&c[i]);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int failover_section(void)
{
    printf("\n  failover: 3 nodes; one client submits test.delay(0) one at a time to the leader;"
           " after 1 s the leader gets SIGKILL (between two requests); the client follows"
           " NotLeader's leader, moves to the next node after a 100 ms timeout, waits 50 ms"
           " when no leader is named; elected: another thread pings the survivors every 10 ms"
           " until one says it leads; the killed node is started again and caught up before"
           " the next round\n");
    void *ctx = new_ctx(1, 64);
    cluster_t cl;
    int rc = 0, leader = -1;
    double ack[32], elected[32];
    int n = 0;
    if (cl_prepare(&cl, 3, NULL) < 0 || (leader = cl_start(&cl, ctx, 3)) < 0) {
        rc = -1;
        goto out;
    }
    for (long k = 0; k < opt_cluster_failovers && k < 32; k++) {
        quiet_gate();
        failover_t f;
        /* No "others" figure here: the killed leader's CPU leaves /proc
         * with it, so the machine's time could not be split. */
        int old = leader;
        int r = failover_once(&cl, ctx, leader, &f);
        char key[96], label[128];
        if (r < 0) {
            printf("  round %ld: no submit acknowledged by another node within 30 s\n", k + 1);
            rc = -1;
            break;
        }
        snprintf(label, sizeof label, "round %ld: kill -9 of node %d", k + 1, old);
        printf("  %-44s elected %.3f s, first acknowledged submit %.3f s"
               "  (%ld timeouts, %ld redirects, %ld naming the answering node)\n",
               label, f.elected_s, f.ack_s, f.timeouts, f.redirects, f.self_named);
        snprintf(key, sizeof key, "cluster.failover.run%ld.self_named", k + 1);
        result_set(key, (double)f.self_named);
        if (f.self_named)
            printf("    NotLeader naming the answering node itself: from %.3f s to %.3f s after"
                   " the kill\n",
                   f.self_first_s, f.self_last_s);
        snprintf(key, sizeof key, "cluster.failover.run%ld.ack_s", k + 1);
        result_set(key, f.ack_s);
        snprintf(key, sizeof key, "cluster.failover.run%ld.elected_s", k + 1);
        result_set(key, f.elected_s);
        ack[n] = f.ack_s;
        elected[n++] = f.elected_s;
        /* The killed node again, rejoining from its Raft log. */
        if (cl_node_start(&cl, old, false) < 0 || (leader = cl_leader(&cl, ctx, 10)) < 0 ||
            !cl_converged(&cl, ctx, leader, 3, 60)) {
            printf("  the killed node did not catch up within 60 s (log %s)\n", cl.node[old].log);
            rc = -1;
            break;
        }
    }
    if (n) {
        qsort(ack, (size_t)n, sizeof *ack, cmp_double);
        qsort(elected, (size_t)n, sizeof *elected, cmp_double);
        double ma = n % 2 ? ack[n / 2] : (ack[n / 2 - 1] + ack[n / 2]) / 2;
        double mn = n % 2 ? elected[n / 2] : (elected[n / 2 - 1] + elected[n / 2]) / 2;
        printf("  %-44s elected %.3f s, first acknowledged submit %.3f s"
               " (min %.3f, max %.3f)\n",
               "median of the rounds", mn, ma, ack[0], ack[n - 1]);
        result_set("cluster.failover.median_ack_s", ma);
        result_set("cluster.failover.median_elected_s", mn);
        result_set("cluster.failover.rounds", n);
    }
out:
    cl_stop(&cl);
    zmq_ctx_term(ctx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* catch-up of a new node                                              */

/* n submit_job requests, `window` in flight, on c; -1 on a failure. */
static int fill_pipelined(jc_t *c, long n, int window)
{
    long sent = 0, done = 0;
    while (done < n) {
        while (sent < n && sent - done < window) {
            pack_submit(c, false);
            if (jc_send(c) < 0)
                return -1;
            sent++;
        }
        if (jc_recv(c, 60000) < 0)
            return -1;
        if (c->rep.keepalive || !c->rep.has_id)
            continue;
        if (!c->rep.ok) {
            fprintf(stderr, "jobq-bench: submit_job refused: %s\n", jobq_code_name(c->rep.code));
            return -1;
        }
        done++;
    }
    return 0;
}

/* A 3-node cluster filled with jobs (batches: submit_many_jobs of
 * opt_batch, few large entries; else submit_job 64 in flight, many small
 * ones), then a 4th node started with --join and timed until its own
 * applied index reaches the leader's. */
static int catchup_once(bool batches, long jobs, const char *name)
{
    static const char *const blocked[] = {"--max-running", "1", "--max-jobs", "20000000", NULL};
    void *ctx = new_ctx(1, 64);
    cluster_t cl;
    int rc = -1, leader;
    jc_t *c = NULL, *nc = NULL;
    char label[96], k[128];
    if (cl_prepare(&cl, 4, blocked) < 0)
        goto out;
    leader = cl_start(&cl, ctx, 3); /* the 4th is authorized everywhere, not started */
    if (leader < 0)
        goto out;
    c = jc_open(ctx, cl.node[leader].endpoint);
    if (!jc_submit_delay(c, BLOCKER_SECONDS, 0) || !jc_wait_stat(c, "running", 1, 10))
        goto out;
    double t0 = bench_now();
    if ((batches ? submit_batches(c, jobs, 0, 0) : fill_pipelined(c, jobs, PIPE_SINGLE)) < 0)
        goto out;
    double fill = bench_now() - t0;
    if (!cl_converged(&cl, ctx, leader, 3, 60))
        goto out;
    int members;
    uint64_t target, lo, hi;
    if (nodes_view(c, &members, &target, &lo, &hi) < 0)
        goto out;
    if (batches)
        snprintf(label, sizeof label, "%ld jobs in batches of %d", jobs, opt_batch);
    else
        snprintf(label, sizeof label, "%ld jobs, submit_job %d in flight", jobs, PIPE_SINGLE);
    printf("  %-44s filled in %.2f s (%.0f jobs/s on 3 nodes); leader's applied index %llu\n",
           label, fill, (double)jobs / fill, (unsigned long long)target);
    quiet_gate();
    others_t o;
    cl_account(&cl, leader, true);
    others_begin(&o, cl.node[leader].pid);
    double ts = bench_now(), t_first = NAN, t_done = NAN;
    if (cl_node_start(&cl, 3, true) < 0)
        goto out;
    bench_child_add(cl.node[3].pid);
    nc = jc_open(ctx, cl.node[3].endpoint);
    uint64_t applied = 0;
    while (bench_now() < ts + 300 && isnan(t_done)) {
        uint64_t self;
        if (nodes_view(nc, &members, &self, &lo, &hi) == 0) {
            if (isnan(t_first))
                t_first = bench_now() - ts;
            applied = self;
            if (self >= target)
                t_done = bench_now() - ts;
        }
        if (isnan(t_done))
            bench_sleep(0.02); /* poll interval */
    }
    cl_account(&cl, leader, false);
    bench_child_remove(cl.node[3].pid);
    snprintf(k, sizeof k, "cluster.catchup.%s.others_cores", name);
    double noise = noise_end(&o, k);
    if (isnan(t_done)) {
        printf("  the new node applied %llu of %llu entries in 300 s\n",
               (unsigned long long)applied, (unsigned long long)target);
        goto out;
    }
    printf("  %-44s first answer %.3f s, caught up %.3f s after exec: %.0f jobs/s, %.0f"
           " entries/s  others %.2f\n",
           "  4th node, --join", t_first, t_done, (double)jobs / t_done, (double)target / t_done,
           noise);
    const struct {
        const char *what;
        double v;
    } figs[] = {{"jobs", (double)jobs},
                {"entries", (double)target},
                {"fill_jobs_per_s", (double)jobs / fill},
                {"first_answer_s", t_first},
                {"seconds", t_done},
                {"jobs_per_s", (double)jobs / t_done},
                {"entries_per_s", (double)target / t_done}};
    for (size_t i = 0; i < sizeof figs / sizeof *figs; i++) {
        snprintf(k, sizeof k, "cluster.catchup.%s.%s", name, figs[i].what);
        result_set(k, figs[i].v);
    }
    rc = 0;
out:
    jc_close(&nc);
    jc_close(&c);
    cl_stop(&cl);
    zmq_ctx_term(ctx);
    if (rc < 0)
        printf("  catch-up (%s): not measured (see above)\n", name);
    return rc;
}

static int catchup_section(void)
{
    printf("\n  catch-up: 3 nodes, job 1 blocking the only run slot, filled with test.delay"
           " jobs (they stay queued); then a 4th node starts with --join: from its exec to its"
           " own query_nodes `applied` reaching the leader's (polled every 20 ms; the node"
           " answers once its join is committed); entries = the leader's applied index\n");
    int rc = catchup_once(true, opt_catchup_jobs, "batches");
    if (catchup_once(false, opt_catchup_jobs, "singles") < 0)
        rc = -1;
    return rc;
}

/* ------------------------------------------------------------------ */
/* a stopped follower                                                  */

typedef struct {
    const char *ep;
    void *ctx;
    _Atomic bool stop;
    char err[256];
    pthread_t th;
} bg_t;

/* submit_many_jobs of STALL_RATE/100 jobs every 10 ms on the leader. */
static void *bg_main(void *arg)
{
    bg_t *b = arg;
    jc_t *c = jc_open(b->ctx, b->ep);
    uint32_t per = (uint32_t)lround(STALL_RATE * BG_PERIOD);
    double next = bench_now();
    while (!atomic_load(&b->stop)) {
        if (jc_submit_many_delay(c, per, 0, 0) != (long)per) {
            snprintf(b->err, sizeof b->err, "submit_many_jobs: %.200s", c->errbuf);
            break;
        }
        next += BG_PERIOD; /* the load pattern */
        bench_sleep(next - bench_now());
    }
    jc_close(&c);
    return NULL;
}

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

/* query_jobs of 50 rows back to back, then submit_job one at a time, each
 * for opt_submit_seconds; figures under key. */
static int stall_phase(cluster_t *cl, void *ctx, int leader, const char *label, const char *key)
{
    jc_t *c = jc_open(ctx, cl->node[leader].endpoint);
    samples_t lat = {0};
    others_t o;
    int rc = 0;
    cl_account(cl, leader, true);
    others_begin(&o, cl->node[leader].pid);
    double t0 = bench_now(), end = t0 + opt_submit_seconds;
    while (bench_now() < end) {
        double a = bench_now();
        if (list_page(c) != PAGE_ROWS) {
            fprintf(stderr, "jobq-bench: query_jobs: %s\n", c->errbuf);
            rc = -1;
            break;
        }
        samples_add(&lat, (bench_now() - a) * 1e3);
    }
    double lists = (double)lat.n / (bench_now() - t0);
    double lp50 = samples_pct(&lat, 50), lp99 = samples_pct(&lat, 99);
    samples_free(&lat);
    char k[128];
    snprintf(k, sizeof k, "%s.list_others_cores", key);
    double noise = noise_end(&o, k);
    printf("  %-44s list p50 %.3f ms  p99 %.3f ms  %.0f lists/s  others %.2f\n", label, lp50,
           lp99, lists, noise);
    snprintf(k, sizeof k, "%s.list_p50_ms", key);
    result_set(k, lp50);
    snprintf(k, sizeof k, "%s.list_p99_ms", key);
    result_set(k, lp99);
    snprintf(k, sizeof k, "%s.lists_per_s", key);
    result_set(k, lists);
    double p50, p99;
    long errors;
    double r = run_workers(W_SUBMIT, 1, cl->node[leader].endpoint, 0, 19000000,
                           cl->node[leader].pid, opt_submit_seconds, &p50, &p99, &errors, &o,
                           NULL);
    snprintf(k, sizeof k, "%s.submit", key);
    char l2[128];
    snprintf(l2, sizeof l2, "%s, submit_job", label);
    report_rate(l2, k, r, p50, p99, errors, "job", &o);
    cl_account(cl, leader, false);
    jc_close(&c);
    return errors ? -1 : rc;
}

static int stall_section(void)
{
    printf("\n  a stopped follower: 3 nodes, job 1 blocking the only run slot, %d jobs queued;"
           " a background client submits %.0f jobs/s (submit_many_jobs of %.0f every 10 ms)"
           " throughout; query_jobs of %d rows (fields id,status,priority,summary) back to"
           " back for %g s, then submit_job one at a time for %g s; with every node running,"
           " then with one follower stopped (SIGSTOP); then SIGCONT: time until it has"
           " applied what the leader has\n",
           STALL_JOBS, STALL_RATE, STALL_RATE * BG_PERIOD, PAGE_ROWS, opt_submit_seconds,
           opt_submit_seconds);
    static const char *const blocked[] = {"--max-running", "1", "--max-jobs", "20000000", NULL};
    void *ctx = new_ctx(1, 64);
    cluster_t cl;
    int rc = -1, leader;
    jc_t *c = NULL;
    bg_t bg = {0};
    bool bg_on = false;
    if (cl_prepare(&cl, 3, blocked) < 0 || (leader = cl_start(&cl, ctx, 3)) < 0)
        goto out;
    c = jc_open(ctx, cl.node[leader].endpoint);
    if (!jc_submit_delay(c, BLOCKER_SECONDS, 0) || !jc_wait_stat(c, "running", 1, 10) ||
        submit_batches(c, STALL_JOBS, 0, 0) < 0)
        goto out;
    int f = (leader + 1) % 3;
    bg.ep = cl.node[leader].endpoint;
    bg.ctx = ctx;
    if (pthread_create(&bg.th, NULL, bg_main, &bg) != 0)
        goto out;
    bg_on = true;
    bench_sleep(1); /* the background settles */
    quiet_gate();
    rc = stall_phase(&cl, ctx, leader, "every node running", "cluster.stall.running");
    kill(cl.node[f].pid, SIGSTOP);
    double t_stop = bench_now();
    if (stall_phase(&cl, ctx, leader, "one follower stopped", "cluster.stall.stopped") < 0)
        rc = -1;
    kill(cl.node[f].pid, SIGCONT);
    double stopped = bench_now() - t_stop;
    atomic_store(&bg.stop, true);
    pthread_join(bg.th, NULL);
    bg_on = false;
    if (bg.err[0]) {
        fprintf(stderr, "jobq-bench: background: %s\n", bg.err);
        rc = -1;
    }
    double t_cont = bench_now();
    if (!cl_converged(&cl, ctx, leader, 3, 120)) {
        printf("  the follower did not catch up within 120 s of SIGCONT\n");
        rc = -1;
    } else {
        double s = bench_now() - t_cont;
        printf("  %-44s %.3f s after SIGCONT (stopped for %.1f s)\n", "follower caught up", s,
               stopped);
        result_set("cluster.stall.resume_s", s);
        result_set("cluster.stall.stopped_s", stopped);
    }
    for (int i = 0; i < 2; i++) {
        const char *what[2] = {"list_p99_ms", "submit.p99_ms"};
        char a[96], b[96];
        snprintf(a, sizeof a, "cluster.stall.running.%s", what[i]);
        snprintf(b, sizeof b, "cluster.stall.stopped.%s", what[i]);
        char k[96];
        snprintf(k, sizeof k, "cluster.stall.%s_ratio", i ? "submit_p99" : "list_p99");
        result_set(k, result_get(b) / result_get(a));
    }
    printf("  %-44s list p99 x%.2f, submit p99 x%.2f\n", "stopped / running",
           result_get("cluster.stall.list_p99_ratio"),
           result_get("cluster.stall.submit_p99_ratio"));
out:
    if (bg_on) {
        atomic_store(&bg.stop, true);
        pthread_join(bg.th, NULL);
    }
    jc_close(&c);
    cl_stop(&cl);
    zmq_ctx_term(ctx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the workload                                                        */

static void table(void)
{
    printf("\n  %-38s", "jobs/s (p99 ms)");
    for (int j = 0; j < NCONFIGS; j++)
        printf(" %21s", CONFIGS[j].label);
    printf("\n");
    for (int i = 0; i < NSLINES; i++) {
        char what[64];
        snprintf(what, sizeof what, SLINES[i].what, opt_batch);
        printf("  %-38s", what);
        for (int j = 0; j < NCONFIGS; j++) {
            char k[128], cell[64];
            snprintf(k, sizeof k, "cluster.submit.%s.%s.per_s", CONFIGS[j].name, SLINES[i].name);
            double r = result_get(k);
            snprintf(k, sizeof k, "cluster.submit.%s.%s.p99_ms", CONFIGS[j].name,
                     SLINES[i].name);
            snprintf(cell, sizeof cell, isnan(r) ? "n/a" : "%.0f (%.2f)", r, result_get(k));
            printf(" %21s", cell);
        }
        printf("\n");
    }
    printf("  %-38s", "  ratio to 1 node, no --cluster (jobs/s)");
    for (int j = 0; j < NCONFIGS; j++) {
        char k[128], k0[128], cell[32];
        snprintf(k, sizeof k, "cluster.submit.%s.single.per_s", CONFIGS[j].name);
        snprintf(k0, sizeof k0, "cluster.submit.plain1.single.per_s");
        snprintf(cell, sizeof cell, "x%.2f", result_get(k) / result_get(k0));
        printf(" %21s", cell);
    }
    printf("   (submit_job one at a time)\n");
}

int workload_cluster(void)
{
    section("14. The Raft cluster: 1, 3 and 5 nodes, failover, catch-up, a stopped follower");
    const char *transport = opt_transport;
    opt_transport = "ipc"; /* see the header: node traffic CURVE, clients on ipc:// */
    printf("  every node on this machine: node traffic CURVE-encrypted TCP on 127.0.0.1 (each"
           " node's keypair, role admin, the others' public keys authorized); clients, workers"
           " and subscribers on the leader's ipc:// endpoints; every data directory on the same"
           " disk (all nodes' writes and fsyncs share it); --sync %s\n",
           opt_sync ? opt_sync : "always (the default)");
    printf("  submit lines: one client; test.delay(0) jobs queued behind a blocker"
           " (--max-running 1); one daemon or cluster per column, its lines in turn on it"
           " (%g s each), so later lines see a longer queue\n",
           opt_submit_seconds);
    int rc = 0;
    for (int j = 0; j < NCONFIGS; j++)
        if (submit_config(&CONFIGS[j]) < 0)
            rc = -1;
    table();

    printf("\n  full cycle (the cycle workload's jobq line: bench workers on the leader's worker"
           " endpoint, done = success seen on its event stream), %d workers, %ld jobs in"
           " flight, %.1f s\n",
           4, opt_cycle_window, opt_cycle_seconds);
    for (int j = 0; j < 3; j++)
        if (cycle_config(&CONFIGS[j], 4) < 0)
            rc = -1;

    if (failover_section() < 0)
        rc = -1;
    if (catchup_section() < 0)
        rc = -1;
    if (stall_section() < 0)
        rc = -1;
    opt_transport = transport;
    return rc;
}
