/* fuzz_daemon.c: the in-process jobqd of the fuzz targets (fuzz_daemon.h).
 * Built the way broker/main.c builds it, in the same order, minus what
 * needs sockets or runs jobs. */
#include "fuzz_daemon.h"

#include "builtin_ops.h"
#include "epoch.h"
#include "log.h"
#include "opreg.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Past these the context is rebuilt: a fuzzing run must not grow without
 * bound, and a full queue would hide the submit path behind QueueFull. */
#define FUZZ_MAX_LIVE_JOBS 5000
#define FUZZ_MAX_OPCODES 2000
#define FUZZ_MAX_WAITERS 64
#define FUZZ_SYNC_WAIT_US 5000000 /* fuzz_daemon_sync's bound */

static jq_daemon_t the_daemon;
static jq_waiters_t *waiters;
static char dir[512];
static bool started;

static void fail(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_daemon: %s: %s\n", what, why);
    abort();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* No client to send to; what would go must still be one reply map. */
static void waiter_send(void *ctx, jq_waiter_t *w, const char *body, size_t len, bool answer)
{
    (void)ctx, (void)w;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    wire_reply_t rep;
    if (msgpack_unpack_next(&up, body, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        wire_reply_parse(&up.data, &rep) != 0 || rep.keepalive == answer)
        fail("a waiter's reply", "not one reply map");
    msgpack_unpacked_destroy(&up);
}

static void waiter_done(void *ctx, jq_waiter_t *w) { (void)ctx, (void)w; }

static void start(void)
{
    jq_daemon_t *d = &the_daemon;
    char err[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/jobq-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        fail("mkdtemp", dir);
    /* The real option parser, so defaults are the daemon's. The store
     * need not survive a crash of the fuzzer: no fsync. */
    char *argv[] = {"jobqd", "--data-dir", dir, "--sync", "none", "--store-map-size", "1G",
                    "--log-level", "error", NULL};
    memset(d, 0, sizeof *d);
    if (jq_config_load(&d->cfg, 9, argv, err, sizeof err) != 0)
        fail("config", err);
    jq_log_set_level((jq_log_level_t)d->cfg.log_level);
    d->lock_fd = d->run_lock_fd = -1;
    d->started_mono = jq_now_mono();
    pthread_mutex_init(&d->drain_mu, NULL);
    d->opset = *jq_builtin_ops();
    d->opset.reg = jq_opreg_new();
    d->ops = &d->opset;
    char store_dir[600];
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    jq_store_opts_t so = {.dir = store_dir, .map_size = d->cfg.store_map_size,
                          .sync = (jq_sync_t)d->cfg.sync, .sync_interval_us = 100000};
    if (!(d->store = jq_store_open(&so, err, sizeof err)))
        fail("store", err);
    uint64_t epoch;
    if (jq_epoch_next(dir, (uint64_t)jq_now_wall(), &epoch, err, sizeof err) < 0)
        fail("epoch", err);
    d->epoch = epoch;
    d->changeq = jq_changeq_new();
    d->ring = jq_ring_new(d->cfg.ring_events, JQ_RING_DEFAULT_BYTES);
    d->table = jq_table_new(d->cfg.shards, jq_store_sink, d->store);
    d->sched = jq_sched_new(d->cfg.max_running, d->cfg.executors);
    d->tokens = jq_tokens_new((int64_t)d->cfg.token_window * 1000000, JQ_TOKEN_MAX_COUNT);
    if (!d->opset.reg || !d->changeq || !d->ring || !d->table || !d->sched || !d->tokens)
        fail("start", "out of memory");
    /* Worker opcodes known from the start, as --worker-opcode declares
     * them: submits may name them (the vectors' among them), workers may
     * serve them. */
    static const char *const worker_ops[] = {"fuzz.op", "vec.echo", "vec.fail"};
    const jq_opset_t builtins = {d->opset.defs, d->opset.count, NULL};
    for (size_t i = 0; i < sizeof worker_ops / sizeof *worker_ops; i++) {
        msgpack_object name = {.type = MSGPACK_OBJECT_STR,
                               .via.str = {.ptr = worker_ops[i],
                                           .size = (uint32_t)strlen(worker_ops[i])}};
        const jq_opdef_t *def;
        bool changed;
        if (jq_opreg_declare(d->opset.reg, &builtins, &name, &def, &changed, err,
                             sizeof err) < 0)
            fail("worker opcode", err);
    }
    if (jq_recover(d, NULL, err, sizeof err) < 0)
        fail("recover", err);
    jq_store_hooks_t hooks;
    jq_daemon_store_hooks(d, &hooks);
    if (jq_store_start(d->store, &hooks) < 0)
        fail("store thread", "cannot start");
    jq_waiters_hooks_t wh = {.send = waiter_send, .done = waiter_done};
    if (!(waiters = jq_waiters_new(d->ring, &wh, &d->waiters,
                                   (int64_t)(d->cfg.keepalive * 1e6))))
        fail("waiters", "out of memory");
    started = true;
}

static void stop(void)
{
    if (!started)
        return;
    jq_daemon_t *d = &the_daemon;
    jq_waiters_destroy(&waiters);
    jq_store_close(&d->store);
    jq_change_t *rest = jq_changeq_take(d->changeq);
    jq_change_list_free(&rest);
    jq_sched_destroy(&d->sched);
    jq_table_destroy(&d->table);
    jq_tokens_destroy(&d->tokens);
    jq_changeq_destroy(&d->changeq);
    jq_ring_destroy(&d->ring);
    jq_opreg_destroy(&d->opset.reg);
    pthread_mutex_destroy(&d->drain_mu);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    started = false;
}

jq_daemon_t *fuzz_daemon(void)
{
    if (!started) {
        static bool registered;
        if (!registered)
            atexit(stop);
        registered = true;
        start();
    }
    return &the_daemon;
}

void fuzz_daemon_park(jq_waiter_t *w)
{
    /* What loop.c's park() does with a waiter a handler hands over. */
    if (atomic_load(&the_daemon.stopping) ||
        jq_waiters_park(waiters, w, jq_now_mono()) == JQ_PARK_RECHECK) {
        atomic_fetch_sub(&the_daemon.waiters, 1);
        jq_waiter_destroy(&w);
    }
}

void fuzz_daemon_sync(void)
{
    jq_daemon_t *d = fuzz_daemon();
    int64_t until = jq_now_mono() + FUZZ_SYNC_WAIT_US;
    uint64_t want = jq_store_ticket(d->store);
    while (jq_store_durable(d->store) < want && jq_now_mono() < until)
        usleep(50);
}

void fuzz_daemon_settle(void)
{
    if (!started)
        return;
    jq_daemon_t *d = &the_daemon;
    /* What the loop does with committed records: feed the waiters. */
    jq_change_t *head = jq_changeq_take(d->changeq);
    for (jq_change_t *c = head; c; c = c->next)
        jq_waiters_on_change(waiters, c->job_id, c->data, c->len);
    jq_change_list_free(&head);
    /* Parked waiters stay for later inputs to change their jobs (their
     * records arrive as the store commits them), up to a few. */
    jq_waiters_tick(waiters, jq_now_mono());
    if (atomic_load(&d->waiters) > FUZZ_MAX_WAITERS)
        jq_waiters_fail_all(waiters, JOBQ_ERR_SHUTTING_DOWN, "the fuzz run has enough waiters");
    atomic_store(&d->stopping, false);
    atomic_store(&d->shutdown_requested, JQ_SHUTDOWN_NONE);
    atomic_store(&d->drained, false);
    if (fuzz_daemon_grown())
        fuzz_daemon_reset();
}

bool fuzz_daemon_grown(void)
{
    return started && (jq_table_live_count(the_daemon.table) > FUZZ_MAX_LIVE_JOBS ||
                       jq_opreg_count(the_daemon.opset.reg) > FUZZ_MAX_OPCODES);
}

void fuzz_daemon_reset(void)
{
    stop();
    fuzz_daemon();
}
