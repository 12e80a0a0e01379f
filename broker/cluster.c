/* cluster.c: the Raft node (cluster.h): the cluster thread (libuv's loop
 * for libraft), elections and what follows them, start and stop. The
 * entries and the state machine are in cluster_log.c, node requests in
 * cluster_admin.c. */
#include "cluster_int.h"
#include "auth.h"
#include "log.h"
#include "nodelink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- addresses ---- */

int jq_node_address_parse(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *h = addr, *colon;
    size_t n;
    if (*addr == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return -1;
        h = addr + 1;
        n = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
            return -1;
        n = (size_t)(colon - addr);
    }
    if (n == 0 || n >= 254)
        return -1;
    if (colon[1] < '0' || colon[1] > '9') /* strtol would skip spaces and signs */
        return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 1 || p > 65535)
        return -1;
    if (host) {
        if (hostlen <= n)
            return -1;
        memcpy(host, h, n);
        host[n] = '\0';
    }
    if (port)
        *port = (int)p;
    return 0;
}

bool jq_node_address_loopback(const char *addr)
{
    char host[256];
    if (jq_node_address_parse(addr, host, sizeof host, NULL) < 0)
        return false;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return !strcmp(host, "localhost");
}

static void exec_self(uv_timer_t *t)
{
    jq_cluster_t *c = t->data;
    if (atomic_load(&c->stop))
        return;
    /* A node request still being answered (a transfer waits to hear from
     * the new leader) goes out first, up to DEPOSED_MAX_MS. */
    pthread_mutex_lock(&c->mu);
    unsigned busy = c->inflight;
    int64_t idle_since = c->inflight_done_us;
    pthread_mutex_unlock(&c->mu);
    int64_t now = wall_us();
    if ((busy || now - idle_since < DEPOSED_EXEC_MS * 1000) &&
        now - c->deposed_us < DEPOSED_MAX_MS * 1000) {
        uv_timer_start(&c->deposed, exec_self, 20, 0);
        return;
    }
    if (!c->d->argv)
        _exit(1);
    /* Nothing of this process may stay open in the next: its lock files
     * would keep it out of its own directories. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) { /* a kernel before 5.11 */
        struct rlimit rl;
        long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                       ? (long)rl.rlim_cur : 1L << 20;
        for (long fd = 3; fd < max; fd++)
            fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    }
    execv("/proc/self/exe", c->d->argv);
    jq_log(JQ_LOG_ERROR, "cluster: cannot start again: %s", strerror(errno));
    _exit(1);
}

void cl_restart_as_follower(jq_cluster_t *c, const char *why)
{
    if (atomic_load(&c->stop) || atomic_exchange(&c->phase, PHASE_DEPOSED) == PHASE_DEPOSED)
        return;
    jq_log(JQ_LOG_WARNING, "cluster: %s: no longer serving; restarting as a follower", why);
    uv_timer_init(&c->loop, &c->deposed);
    c->deposed_timer = true;
    c->deposed.data = c;
    c->deposed_us = wall_us();
    raft_set_election_timeout(&c->raft, DEPOSED_MAX_MS * 4); /* no campaign meanwhile */
    uv_timer_start(&c->deposed, exec_self, DEPOSED_EXEC_MS, 0);
}

/* ---- leadership ---- */

static void barrier_cb(struct raft_barrier *req, int status)
{
    jq_cluster_t *c = req->data;
    if (status != 0) {
        cl_restart_as_follower(c, raft_strerror(status));
        return;
    }
    int expect = PHASE_PROMOTING;
    if (atomic_compare_exchange_strong(&c->phase, &expect, PHASE_READY)) {
        jq_log(JQ_LOG_NOTICE, "cluster: elected leader (term %llu); loading the queue",
               (unsigned long long)c->raft.current_term);
        jq_changeq_kick(c->d->changeq); /* the loop takes it from here */
    }
}

/* Elected: say where clients find this node, name the cluster's epoch on
 * its first election, and wait until everything before is applied. */
static void promote(jq_cluster_t *c)
{
    atomic_store(&c->phase, PHASE_PROMOTING);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    cl_entry_begin(c, &pk, ENTRY_NODE, 1);
    cl_pack_self_info(c, &pk);
    int rc = cl_propose(c, &sb);
    if (rc == 0 && !atomic_load(&c->epoch)) {
        msgpack_sbuffer_clear(&sb);
        cl_entry_begin(c, &pk, ENTRY_INIT, 1);
        msgpack_pack_uint64(&pk, (uint64_t)wall_us());
        rc = cl_propose(c, &sb);
    }
    msgpack_sbuffer_destroy(&sb);
    c->barrier.data = c;
    if (rc == 0)
        rc = raft_barrier(&c->raft, &c->barrier, barrier_cb);
    if (rc != 0)
        cl_restart_as_follower(c, raft_strerror(rc));
}

/* Under mu: what query_nodes and NotLeader read. */
static void refresh_status(jq_cluster_t *c)
{
    struct raft *r = &c->raft;
    int64_t now = wall_us();
    c->state = raft_state(r);
    const char *addr;
    raft_id lid = 0;
    raft_leader(r, &lid, &addr);
    if (lid && c->known_leader_id && lid != c->known_leader_id) {
        /* The one that led before, remembered a few seconds: it is starting
         * again as a follower (transfer_leader does not pick it). */
        c->prev_leader_id = c->known_leader_id;
        c->prev_leader_until_us = now + 5000000;
    }
    if (lid)
        c->known_leader_id = lid;
    c->leader_id = lid;
    c->term = r->current_term;
    c->last_index = raft_last_index(r);
    c->applied = raft_last_applied(r);
    c->commit = r->commit_index;
    for (unsigned i = 0; i < c->npeers; i++)
        c->peers[i].present = false;
    unsigned voters = 0;
    for (unsigned i = 0; i < r->configuration.n; i++)
        voters += r->configuration.servers[i].role == RAFT_VOTER;
    atomic_store(&c->voters, voters);
    for (unsigned i = 0; i < r->configuration.n && i < MAX_NODES; i++) {
        const struct raft_server *s = &r->configuration.servers[i];
        peer_t *p = NULL;
        for (unsigned j = 0; j < c->npeers && !p; j++)
            if (c->peers[j].id == s->id)
                p = &c->peers[j];
        if (!p && c->npeers < MAX_NODES) {
            p = &c->peers[c->npeers++];
            memset(p, 0, sizeof *p);
            p->id = s->id;
        }
        if (!p)
            continue;
        p->present = true;
        p->role = s->role;
        snprintf(p->address, sizeof p->address, "%s", s->address ? s->address : "");
        if (s->id == c->id) {
            p->match = c->last_index;
            p->contact_us = p->caught_up_us = now;
        } else if (c->state == RAFT_LEADER && r->leader_state.progress) {
            const struct raft_progress *pr = &r->leader_state.progress[i];
            if (pr->match_index > p->match || pr->recent_recv)
                p->contact_us = now;
            p->match = pr->match_index;
            if (p->match >= c->last_index)
                p->caught_up_us = now;
        }
    }
    unsigned k = 0; /* drop removed servers */
    for (unsigned i = 0; i < c->npeers; i++)
        if (c->peers[i].present)
            c->peers[k++] = c->peers[i];
    c->npeers = k;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_watch(uv_timer_t *t)
{
    jq_cluster_t *c = t->data;
    if (atomic_load(&c->stop))
        return;
    /* This thread did not run for a while (the process was stopped, or
     * starved): what it knows of its leadership may be stale — a newer
     * leader's messages may wait in its sockets. Serve again only after
     * a few heartbeats' time of running normally. */
    int64_t now = mono_us();
    if (now - atomic_load(&c->last_tick_us) > STALL_US)
        atomic_store(&c->serve_after_us, now + RESUME_US);
    atomic_store(&c->last_tick_us, now);
    pthread_mutex_lock(&c->mu);
    refresh_status(c);
    int state = c->state;
    pthread_mutex_unlock(&c->mu);
    int phase = atomic_load(&c->phase);
    if (state == RAFT_LEADER && phase == PHASE_FOLLOWING)
        promote(c);
    else if (state != RAFT_LEADER && phase != PHASE_FOLLOWING)
        cl_restart_as_follower(c, "lost the leadership");
}

static void close_handles(struct raft *r)
{
    jq_cluster_t *c = r->data;
    uv_close((uv_handle_t *)&c->wake, NULL);
    uv_close((uv_handle_t *)&c->intake, NULL);
    uv_close((uv_handle_t *)&c->watch, NULL);
    if (c->deposed_timer)
        uv_close((uv_handle_t *)&c->deposed, NULL);
}

static void on_wake(uv_async_t *h)
{
    jq_cluster_t *c = h->data;
    if (atomic_load(&c->stop)) {
        if (c->raft_ready) {
            c->raft_ready = false;
            uv_timer_stop(&c->watch);
            uv_poll_stop(&c->intake);
            raft_close(&c->raft, close_handles);
        }
        return;
    }
    pthread_mutex_lock(&c->mu);
    cmd_t *list = c->cmds;
    c->cmds = c->cmds_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (list) {
        cmd_t *m = list;
        list = m->next;
        cl_run_cmd(c, m);
    }
}

bool jq_cluster_leading(jq_cluster_t *c) { return atomic_load(&c->phase) == PHASE_LEADING; }

bool jq_cluster_serving(jq_cluster_t *c)
{
    if (!jq_cluster_leading(c))
        return false;
    if (atomic_load(&c->voters) <= 1) /* nobody could have replaced it */
        return true;
    int64_t now = mono_us();
    return now - atomic_load(&c->last_tick_us) < STALL_US &&
           now >= atomic_load(&c->serve_after_us);
}

bool jq_cluster_take_ready(jq_cluster_t *c)
{
    return atomic_load(&c->phase) == PHASE_READY;
}

void jq_cluster_set_leading(jq_cluster_t *c)
{
    int expect = PHASE_READY;
    if (atomic_compare_exchange_strong(&c->phase, &expect, PHASE_LEADING))
        jq_log(JQ_LOG_NOTICE, "cluster: leading (node %llu)", (unsigned long long)c->id);
}

uint64_t jq_cluster_epoch(jq_cluster_t *c) { return atomic_load(&c->epoch); }

int jq_cluster_applied_fd(jq_cluster_t *c) { return jq_changeq_fd(c->view_q); }

jq_change_t *jq_cluster_take_applied(jq_cluster_t *c) { return jq_changeq_take(c->view_q); }

uint64_t jq_cluster_applied_index(jq_cluster_t *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t v = c->applied;
    pthread_mutex_unlock(&c->mu);
    return v;
}

/* ---- start and stop ---- */

static int read_or_make_id(jq_cluster_t *c, char *err, size_t errlen)
{
    char path[sizeof c->dir + 16];
    snprintf(path, sizeof path, "%s/node-id", c->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        unsigned long long v = 0;
        int ok = fscanf(f, "%llu", &v) == 1 && v > 0;
        fclose(f);
        if (!ok) {
            snprintf(err, errlen, "%s is damaged: it should hold this node's id", path);
            return -1;
        }
        c->id = v;
        return 0;
    }
    uint64_t v = 0;
    while (v == 0) { /* below 2^53: a JSON number keeps it exact */
        if (getrandom(&v, sizeof v, 0) != sizeof v) {
            snprintf(err, errlen, "cannot make a node id: %s", strerror(errno));
            return -1;
        }
        v &= (1ull << 53) - 1;
    }
    char tmp[sizeof path + 8];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    f = fopen(tmp, "w");
    if (!f || fprintf(f, "%llu\n", (unsigned long long)v) < 0 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    c->id = v;
    return 0;
}

/* The store is rebuilt from the log at every start: what it held may
 * be ahead of what the log replays from its snapshot. */
static void wipe_store(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "store.id"};
    char path[JQ_PATH_BYTES + 64];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
}

jq_cluster_t *jq_cluster_new(jq_daemon_t *d, char *err, size_t errlen)
{
    jq_cluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->d = d;
    /* libuv's thread pool serves libraft's file work (segments, snapshots)
     * only: one thread, made once, keeps the daemon's count fixed and small. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (!(c->view_q = jq_changeq_new())) {
        snprintf(err, errlen, "out of memory");
        jq_cluster_destroy(&c);
        return NULL;
    }
    snprintf(c->dir, sizeof c->dir, "%s/cluster", d->cfg.data_dir);
    snprintf(c->raft_dir, sizeof c->raft_dir, "%s/raft", c->dir);
    char store_dir[sizeof c->dir + 8];
    snprintf(store_dir, sizeof store_dir, "%s/store", c->dir);
    if ((mkdir(c->dir, 0700) < 0 && errno != EEXIST) ||
        (mkdir(c->raft_dir, 0700) < 0 && errno != EEXIST) ||
        (mkdir(store_dir, 0700) < 0 && errno != EEXIST)) {
        snprintf(err, errlen, "cannot create %s: %s", c->dir, strerror(errno));
        jq_cluster_destroy(&c);
        return NULL;
    }
    if (read_or_make_id(c, err, errlen) < 0 ||
        getrandom(&c->nonce, sizeof c->nonce, 0) != sizeof c->nonce) {
        if (!err[0])
            snprintf(err, errlen, "cannot draw a random number: %s", strerror(errno));
        jq_cluster_destroy(&c);
        return NULL;
    }
    char meta[sizeof c->raft_dir + 16];
    snprintf(meta, sizeof meta, "%s/metadata1", c->raft_dir);
    c->pristine = access(meta, F_OK) != 0;
    wipe_store(store_dir);
    jq_store_opts_t so = {.dir = store_dir, .map_size = d->cfg.store_map_size,
                          .sync = JQ_SYNC_NONE};
    d->store = jq_store_open(&so, err, errlen);
    if (!d->store) {
        jq_cluster_destroy(&c);
        return NULL;
    }
    return c;
}

static bool node_key_ok(void *ctx, const uint8_t key[JQ_NODELINK_KEY_BYTES])
{
    return jq_auth_is_node_key(ctx, key);
}

static void *cluster_main(void *arg)
{
    jq_cluster_t *c = arg;
    pthread_setname_np(pthread_self(), "jobqd-raft");
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}

int jq_cluster_start(jq_cluster_t *c, char *err, size_t errlen)
{
    jq_daemon_t *d = c->d;
    jq_store_hooks_t hooks;
    jq_daemon_store_hooks(d, &hooks);
    jq_store_cluster_mode(d->store, &hooks);
    int rc = uv_loop_init(&c->loop);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: %s", uv_strerror(rc));
        return -1;
    }
    c->loop_ready = true;
    uv_async_init(&c->loop, &c->wake, on_wake);
    c->wake.data = c;
    uv_poll_init(&c->loop, &c->intake, jq_changeq_fd(jq_store_intake(d->store)));
    c->intake.data = c;
    uv_timer_init(&c->loop, &c->watch);
    c->watch.data = c;
    /* Node traffic: each end proves it holds an authorized node key (the
     * daemon's own keypair; nodelink.h), then everything is encrypted. */
    uint8_t pk[JQ_NODELINK_KEY_BYTES], sk[JQ_NODELINK_KEY_BYTES];
    jq_nodelink_opts_t lo = {.loop = &c->loop, .insecure = d->cfg.insecure,
                             .authorize = node_key_ok, .ctx = d->auth};
    if (!lo.insecure) {
        jq_auth_keypair(d->auth, pk, sk);
        lo.public_key = pk;
        lo.secret_key = sk;
    }
    rc = jq_nodelink_init(&c->transport, &lo) == 0 ? 0 : RAFT_INVALID;
    sodium_memzero(sk, sizeof sk);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: node transport: %s", c->transport.errmsg);
        return -1;
    }
    c->transport_ready = true;
    if (rc == 0)
        rc = raft_uv_init(&c->io, &c->loop, c->raft_dir, &c->transport);
    if (rc == 0)
        c->io_ready = true;
    c->fsm = (struct raft_fsm){.version = 2, .data = c, .apply = cl_fsm_apply,
                               .snapshot = cl_fsm_snapshot, .restore = cl_fsm_restore,
                               .snapshot_finalize = cl_fsm_snapshot_finalize};
    if (rc == 0)
        rc = raft_init(&c->raft, &c->io, &c->fsm, c->id, d->cfg.node_address);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: cannot start Raft in %s: %s", c->raft_dir,
                 c->io_ready ? raft_errmsg(&c->raft) : raft_strerror(rc));
        return -1;
    }
    c->raft.data = c;
    c->raft_ready = true;
    raft_set_snapshot_threshold(&c->raft, d->cfg.snapshot_entries);
    raft_set_snapshot_trailing(&c->raft, d->cfg.snapshot_entries / 4);
    raft_set_pre_vote(&c->raft, true);
    if (c->pristine && !d->cfg.njoin) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rc = raft_configuration_add(&conf, c->id, d->cfg.node_address, RAFT_VOTER);
        if (rc == 0)
            rc = raft_bootstrap(&c->raft, &conf);
        raft_configuration_close(&conf);
        if (rc != 0) {
            snprintf(err, errlen, "cluster: cannot start a new cluster: %s",
                     raft_errmsg(&c->raft));
            return -1;
        }
        jq_log(JQ_LOG_NOTICE, "cluster: started a new cluster of one (node %llu at %s)",
               (unsigned long long)c->id, d->cfg.node_address);
    }
    rc = raft_start(&c->raft);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: cannot start Raft: %s", raft_errmsg(&c->raft));
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    refresh_status(c);
    pthread_mutex_unlock(&c->mu);
    atomic_store(&c->last_tick_us, mono_us()); /* no stall at the start */
    uv_poll_start(&c->intake, UV_READABLE, cl_on_intake);
    uv_timer_start(&c->watch, on_watch, WATCH_MS, WATCH_MS);
    if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
        snprintf(err, errlen, "cluster: out of threads");
        return -1;
    }
    c->started = true;
    jq_log(JQ_LOG_INFO, "cluster: node %llu at %s (%s)", (unsigned long long)c->id,
           d->cfg.node_address, c->pristine ? (d->cfg.njoin ? "joining" : "new") : "restarted");
    return 0;
}

void jq_cluster_destroy(jq_cluster_t **cp)
{
    if (!cp || !*cp)
        return;
    jq_cluster_t *c = *cp;
    atomic_store(&c->stop, true);
    if (c->started) {
        uv_async_send(&c->wake);
        pthread_join(c->thread, NULL);
    } else if (c->loop_ready) {
        if (c->raft_ready) {
            raft_close(&c->raft, close_handles);
        } else {
            uv_close((uv_handle_t *)&c->wake, NULL);
            uv_close((uv_handle_t *)&c->intake, NULL);
            uv_close((uv_handle_t *)&c->watch, NULL);
        }
        uv_run(&c->loop, UV_RUN_DEFAULT);
    }
    if (c->io_ready)
        raft_uv_close(&c->io);
    if (c->transport_ready)
        jq_nodelink_close(&c->transport);
    if (c->loop_ready)
        uv_loop_close(&c->loop);
    pthread_mutex_lock(&c->mu);
    cl_nodes_clear(c);
    for (cmd_t *m = c->cmds; m;) {
        cmd_t *next = m->next;
        m->done = true;
        m->rc = -1;
        m->next = NULL;
        m = next;
    }
    pthread_mutex_unlock(&c->mu);
    jq_changeq_destroy(&c->view_q);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    *cp = NULL;
}
