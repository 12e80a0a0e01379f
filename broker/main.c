/* main.c: jobqd start-up and tear-down: options, the log, the data and
 * run directories and their locks, the table, scheduler, executors, then
 * the loop; on a clean stop the socket files go. */
#include "builtin_ops.h"
#include "cluster.h"
#include "auth.h"
#include "daemon.h"
#include "datadir.h"
#include "epoch.h"
#include "http.h"
#include "log.h"
#include "opreg.h"
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* libzmq's context option ZMQ_ZERO_COPY_RECV (10): declared only in its
 * draft API, but honoured by the stable library too. */
#define JQ_ZMQ_ZERO_COPY_RECV 10

/* One daemon per data directory, and per run directory: a second one
 * would take over the socket paths of the first. */
static int lock_dir(const char *dir, const char *what, int *fd)
{
    char path[JQ_PATH_BYTES + 8];
    snprintf(path, sizeof path, "%s/lock", dir);
    *fd = jq_open_private(path, O_RDWR | O_CREAT, 0640);
    if (*fd < 0) {
        jq_log(JQ_LOG_ERROR, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
        jq_log(JQ_LOG_ERROR, "%s %s is in use by another jobqd (%s is locked)", what, dir, path);
        return -1;
    }
    return 0;
}

/* Same directory? (The run directory defaults to the data directory.) */
static bool same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* A clean stop takes its socket files away, so a client finds no socket
 * and knows at once that no daemon runs (after a crash they stay; the
 * next start binds over them). libzmq may have removed them already. */
static void remove_sockets(const char *run_dir)
{
    static const char *const names[] = {"jobq.sock", "events.sock", "workers.sock"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[JQ_PATH_BYTES + 16];
        if (snprintf(path, sizeof path, "%s/%s", run_dir, names[i]) >= (int)sizeof path)
            continue; /* cannot be: --run-dir is shorter */
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(path) < 0)
            jq_log(JQ_LOG_WARNING, "cannot remove %s: %s", path, strerror(errno));
    }
}

/* The daemon's keypair (always: clients may fetch its public key) and,
 * when a TCP endpoint is served with CURVE, zauth on the authorized keys. */
static int start_auth(jq_daemon_t *d, char *err, size_t errlen)
{
    const jq_config_t *c = &d->cfg;
    bool curve = false;
    for (unsigned i = 0; !c->insecure && i < c->nlisten; i++)
        curve |= jq_endpoint_is_tcp(c->listen[i]);
    for (unsigned i = 0; !c->insecure && i < c->nworkers; i++)
        curve |= jq_endpoint_is_tcp(c->workers[i]);
    for (unsigned i = 0; !c->insecure && i < c->npublish; i++)
        curve |= jq_endpoint_is_tcp(c->publish[i]);
    curve |= c->cluster && !c->insecure; /* node keys are authorized keys too */
    char keys[JQ_PATH_BYTES + 32];
    if (c->authorized_keys[0])
        snprintf(keys, sizeof keys, "%s", c->authorized_keys);
    else
        snprintf(keys, sizeof keys, "%s/authorized_keys", c->data_dir);
    d->auth = jq_auth_new(c->data_dir, curve ? keys : NULL, err, errlen);
    if (d->auth && curve)
        jq_log(JQ_LOG_INFO, "TCP endpoints use CURVE: server key %s, authorized keys in %s",
               jq_auth_public_key(d->auth), keys);
    return d->auth ? 0 : -1;
}

/* --group: the directory belongs to the group, which may enter it (the
 * sockets in it are 0660 and the group's too: listeners.c). Only a
 * directory that is not writable by the group is trusted (datadir.c). */
static int share_dir(const char *dir, int gid)
{
    struct stat st;
    if (stat(dir, &st) < 0 || (st.st_gid != (gid_t)gid && chown(dir, (uid_t)-1, (gid_t)gid) < 0)) {
        jq_log(JQ_LOG_ERROR, "--group: cannot give %s to group %d: %s", dir, gid, strerror(errno));
        return -1;
    }
    if (!(st.st_mode & S_IXGRP))
        jq_log(JQ_LOG_WARNING, "--group: %s has mode %04o: the group cannot enter it "
                               "(chmod g+rx %s)", dir, (unsigned)(st.st_mode & 07777), dir);
    return 0;
}

/* Idle clients cost a file descriptor each: take all the kernel allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    static jq_daemon_t daemon; /* the top-level context */
    jq_daemon_t *d = &daemon;
    jq_http_t *http = NULL; /* --http's thread */
    char err[512];
    jq_log_setup("jobqd");
    int rc = jq_config_load(&d->cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0) /* a usage error: plain, whatever the log's form */
            fprintf(stderr, "jobqd: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    d->argc = argc;
    d->argv = argv;
    jq_log_set_level((jq_log_level_t)d->cfg.log_level);
    /* Signals are taken by the loop's signalfd; every thread blocks them
     * (SIGHUP too: a reload, never the default death). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A write past the file size limit must fail (EFBIG, which the store
     * reports and retries), not kill the daemon. */
    signal(SIGXFSZ, SIG_IGN);
    raise_fd_limit();
    d->lock_fd = -1;
    d->run_lock_fd = -1;
    d->started_mono = jq_now_mono();
    pthread_mutex_init(&d->drain_mu, NULL);
    pthread_rwlock_init(&d->view_lock, NULL);
    /* Nothing is opened in a directory the daemon cannot trust. */
    rc = 1;
    d->socket_gid = -1;
    if (d->cfg.group[0]) {
        struct group *g = getgrnam(d->cfg.group);
        if (!g) {
            jq_log(JQ_LOG_ERROR, "--group: no group named '%s'", d->cfg.group);
            goto out_locks;
        }
        d->socket_gid = (int)g->gr_gid;
        jq_datadir_share_with_group(true);
    }
    if (jq_datadir_prepare(d->cfg.data_dir, err, sizeof err) < 0) {
        jq_log(JQ_LOG_ERROR, "%s", err);
        goto out_locks;
    }
    if (lock_dir(d->cfg.data_dir, "data directory", &d->lock_fd) < 0)
        goto out_locks;
    if (!same_dir(d->cfg.data_dir, d->cfg.run_dir)) {
        if (jq_rundir_prepare(d->cfg.run_dir, err, sizeof err) < 0) {
            jq_log(JQ_LOG_ERROR, "%s", err);
            goto out_locks;
        }
        if (lock_dir(d->cfg.run_dir, "run directory", &d->run_lock_fd) < 0)
            goto out_locks;
    }
    if (d->socket_gid >= 0 && (share_dir(d->cfg.data_dir, d->socket_gid) < 0 ||
                               share_dir(d->cfg.run_dir, d->socket_gid) < 0))
        goto out_locks;
    d->opset = *jq_builtin_ops();
    d->opset.reg = jq_opreg_new();
    d->ops = &d->opset;
    char store_dir[sizeof d->cfg.data_dir + 8];
    memcpy(store_dir, d->cfg.data_dir, strnlen(d->cfg.data_dir, sizeof d->cfg.data_dir - 1));
    strcpy(store_dir + strnlen(d->cfg.data_dir, sizeof d->cfg.data_dir - 1), "/store");
    jq_store_opts_t so = {.dir = store_dir, .map_size = d->cfg.store_map_size,
                          .sync = (jq_sync_t)d->cfg.sync,
                          .sync_interval_us = (int64_t)(d->cfg.sync_interval * 1e6),
                          .salvage = d->cfg.salvage};
    /* The store first, while this is the only thread: its check forks.
     * A cluster node's store is rebuilt from its Raft log (cluster.h). */
    if (d->cfg.cluster)
        d->cluster = jq_cluster_new(d, err, sizeof err);
    else
        d->store = jq_store_open(&so, err, sizeof err);
    if (!d->store) {
        jq_log(JQ_LOG_ERROR, "%s", err);
        rc = 1;
        goto out;
    }
    /* czmq's context: zauth answers ZAP there, and ZAP serves only the
     * sockets of its own context. czmq installs no signal handler of its
     * own (signals stay the loop's signalfd's). */
    zsys_handler_set(NULL);
    d->zctx = zsys_init();
    /* Epochs (microseconds) only grow: max(now, the last run's + 1). */
    uint64_t epoch = 0; /* a cluster's comes with its log (set when leading) */
    if (!d->cluster && jq_epoch_next(d->cfg.data_dir, (uint64_t)jq_now_wall(), &epoch, err, sizeof err) < 0) {
        fprintf(stderr, "jobqd: %s\n", err);
        rc = 1;
        goto out;
    }
    d->epoch = epoch;
    d->changeq = jq_changeq_new();
    d->ring = jq_ring_new(d->cfg.ring_events, JQ_RING_DEFAULT_BYTES);
    /* Change records flow: table (under no lock) → store thread (commit)
     * → loop (publish). */
    d->table = jq_table_new(d->cfg.shards, jq_store_sink, d->store);
    /* A follower's view for stale reads: never flushed, so never sunk. */
    if (d->cluster && !(d->view = jq_table_new(d->cfg.shards, jq_store_sink, NULL))) {
        jq_log(JQ_LOG_ERROR, "cannot start: out of memory");
        goto out;
    }
    d->sched = jq_sched_new(d->cfg.max_running, d->cfg.executors);
    d->tokens = jq_tokens_new((int64_t)d->cfg.token_window * 1000000, JQ_TOKEN_MAX_COUNT);
    if (d->zctx) {
        zmq_ctx_set(d->zctx, ZMQ_MAX_SOCKETS, 1024);
        /* Without zero-copy receive libzmq keeps one plain 8 KB input
         * buffer per connection instead of a buffer plus a table of
         * reference counts: ~4 KB less per idle client. Requests are
         * small; copying them costs nothing measurable. */
        zmq_ctx_set(d->zctx, JQ_ZMQ_ZERO_COPY_RECV, 0);
    }
    rc = 1;
    if (!d->zctx || !d->changeq || !d->ring || !d->table || !d->sched || !d->tokens) {
        jq_log(JQ_LOG_ERROR, "cannot start: out of memory");
        goto out;
    }
    /* A cluster node loads the queue when it is elected (loop.c). */
    if (!d->opset.reg || (!d->cluster && jq_load_worker_opcodes(d, err, sizeof err) < 0)) {
        jq_log(JQ_LOG_ERROR, "%s", d->opset.reg ? err : "cannot start: out of memory");
        goto out;
    }
    if (start_auth(d, err, sizeof err) < 0) {
        jq_log(JQ_LOG_ERROR, "%s", err);
        goto out;
    }
    if (!d->cluster && jq_recover(d, NULL, err, sizeof err) < 0) {
        jq_log(JQ_LOG_ERROR, "%s", err);
        goto out;
    }
    jq_store_hooks_t hooks;
    jq_daemon_store_hooks(d, &hooks);
    jq_executors_opts_t eo = {.table = d->table, .sched = d->sched, .store = d->store,
                              .ops = d->ops, .max_log_entries = (uint32_t)d->cfg.max_log_entries,
                              .n = d->cfg.executors};
    /* The hub's inbox exists before any executor can hand it a job. */
    if (!(d->hub = jq_hub_new(d, NULL))) {
        jq_log(JQ_LOG_ERROR, "cannot start: out of memory");
        goto out;
    }
    if (d->cluster && (jq_cluster_start(d->cluster, err, sizeof err) < 0 ||
                       jq_cluster_join(d->cluster, 60, err, sizeof err) < 0)) {
        jq_log(JQ_LOG_ERROR, "%s", err);
        goto out;
    }
    if ((!d->cluster && jq_store_start(d->store, &hooks) < 0) ||
        !(d->executors = jq_executors_new(&eo))) {
        jq_log(JQ_LOG_ERROR, "cannot start: out of threads");
        goto out;
    }
    if (d->cfg.http[0] && !(http = jq_http_new(d, d->zctx, err, sizeof err))) {
        jq_log(JQ_LOG_ERROR, "%s", err);
        goto out;
    }
    if (jq_loop_run(d) == 0)
        rc = 0;
out:
    jq_http_destroy(&http); /* its SUB socket before the context ends */
    jq_executors_destroy(&d->executors);
    jq_hub_destroy(&d->hub);
    jq_auth_destroy(&d->auth);
    jq_cluster_destroy(&d->cluster); /* before the store it applies to */
    if (d->zctx)
        zsys_shutdown(); /* terminates the context */
    jq_store_close(&d->store); /* commits what is still queued */
    jq_sched_destroy(&d->sched);
    jq_table_destroy(&d->table);
    jq_table_destroy(&d->view);
    jq_tokens_destroy(&d->tokens);
    jq_changeq_destroy(&d->changeq);
    jq_ring_destroy(&d->ring);
    jq_opreg_destroy(&d->opset.reg);
    if (rc == 0) /* still under the locks: no new daemon has bound them */
        remove_sockets(d->cfg.run_dir);
out_locks:
    pthread_mutex_destroy(&d->drain_mu);
    pthread_rwlock_destroy(&d->view_lock);
    if (d->run_lock_fd >= 0)
        close(d->run_lock_fd);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    if (rc == 0)
        jq_log(JQ_LOG_INFO, "stopped");
    return rc ? 1 : 0;
}
