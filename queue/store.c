/* store.c: LMDB layout, group commit and recovery (see store.h). */
#include "store.h"
#include "jobcodec.h"
#include "jobspec.h"
#include "mirror.h"
#include "wire.h"

#include <errno.h>
#include <lmdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct jq_store {
    MDB_env *env;
    MDB_dbi meta, jobs, archive, logs;
    jq_store_opts_t opts;
    jq_changeq_t *in;          /* records waiting for a commit */
    jq_changeq_t *out;         /* committed records, for the publisher */
    jq_table_t *table;
    pthread_t thread;
    bool started;
    _Atomic bool stopping;
    _Atomic uint64_t durable;  /* records committed */
    _Atomic uint64_t failed;   /* records up to here were in a failed commit */
    pthread_mutex_t mu;        /* guards failmsg */
    char failmsg[256];
    _Atomic uint64_t commits, fsyncs, records, failures;
    uint64_t last_id;          /* store thread only */
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void be32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static int meta_get(jq_store_t *s, MDB_txn *txn, const char *key, void *out, size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == 0 && v.mv_size == len)
        memcpy(out, v.mv_data, len);
    return rc == 0 && v.mv_size != len ? MDB_CORRUPTED : rc;
}

static int meta_put(jq_store_t *s, MDB_txn *txn, const char *key, const void *val, size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)val};
    return mdb_put(txn, s->meta, &k, &v, 0);
}

jq_store_t *jq_store_open(const jq_store_opts_t *opts, char *err, size_t errlen)
{
    if (mkdir(opts->dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", opts->dir, strerror(errno));
        return NULL;
    }
    jq_store_t *s = calloc(1, sizeof *s);
    if (!s || !(s->in = jq_changeq_new())) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    pthread_mutex_init(&s->mu, NULL);
    unsigned flags = MDB_NOTLS | (opts->sync == JQ_SYNC_ALWAYS ? 0 : MDB_NOSYNC);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&s->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, 4);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, opts->map_size);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env, 512);
    if (rc == 0)
        rc = mdb_env_open(s->env, opts->dir, flags, 0640);
    if (rc != 0) {
        snprintf(err, errlen, "cannot open the store in %s: %s%s", opts->dir, mdb_strerror(rc),
                 rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? " (damaged, or not an LMDB store)" : "");
        goto fail;
    }
    /* Read first: a store we refuse must be left exactly as it was. */
    uint32_t format = 0;
    bool fresh = false;
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) == 0) {
        MDB_dbi meta;
        rc = mdb_dbi_open(txn, "meta", 0, &meta);
        if (rc == MDB_NOTFOUND) {
            MDB_dbi main_db;
            MDB_stat st;
            fresh = mdb_dbi_open(txn, NULL, 0, &main_db) == 0 &&
                    mdb_stat(txn, main_db, &st) == 0 && st.ms_entries == 0;
            rc = fresh ? 0 : MDB_INCOMPATIBLE;
        } else if (rc == 0) {
            s->meta = meta;
            rc = meta_get(s, txn, "format", &format, sizeof format);
        }
        mdb_txn_abort(txn);
        txn = NULL;
    }
    if (rc != 0) {
        snprintf(err, errlen, "the store in %s is damaged or not jobq's: %s", opts->dir,
                 mdb_strerror(rc));
        goto fail;
    }
    if (!fresh && format != JQ_STORE_FORMAT) {
        snprintf(err, errlen, "the store in %s has format %u; this jobqd reads format %d%s",
                 opts->dir, format, JQ_STORE_FORMAT,
                 format > JQ_STORE_FORMAT ? " (written by a newer jobqd)" : "");
        goto fail;
    }
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) == 0 &&
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) == 0 &&
        (rc = mdb_dbi_open(txn, "jobs", MDB_CREATE, &s->jobs)) == 0 &&
        (rc = mdb_dbi_open(txn, "archive", MDB_CREATE, &s->archive)) == 0 &&
        (rc = mdb_dbi_open(txn, "logs", MDB_CREATE, &s->logs)) == 0) {
        if (fresh) {
            format = JQ_STORE_FORMAT;
            rc = meta_put(s, txn, "format", &format, sizeof format);
        }
        rc = rc ? rc : mdb_txn_commit(txn);
        txn = NULL;
    }
    if (rc != 0) {
        if (txn)
            mdb_txn_abort(txn);
        snprintf(err, errlen, "cannot initialise the store in %s: %s", opts->dir, mdb_strerror(rc));
        goto fail;
    }
    return s;
fail:
    if (s->env)
        mdb_env_close(s->env);
    jq_changeq_destroy(&s->in);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

/* ---- reading ---- */

/* Append the job's log entries (key prefix be64 id) from the logs db. */
static int load_logs(jq_store_t *s, MDB_txn *txn, jq_job_t *job)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, s->logs, &cur) != 0)
        return -1;
    unsigned char kb[12];
    be64(kb, job->id);
    be32(kb + 8, 0);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE), out = 0;
    while (rc == 0 && k.mv_size == 12 && get_be64(k.mv_data) == job->id) {
        const unsigned char *p = v.mv_data;
        if (v.mv_size < 3 ||
            jq_job_append_log(job, (uint32_t)(p[0] << 8 | p[1]), p + 2, v.mv_size - 2) < 0) {
            out = -1;
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return out;
}

static jq_job_t *get_job(jq_store_t *s, MDB_txn *txn, MDB_dbi dbi, uint64_t id, char *err,
                         size_t errlen)
{
    unsigned char kb[8];
    be64(kb, id);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0) {
        if (rc != MDB_NOTFOUND)
            snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        return NULL;
    }
    return jq_job_decode(s->opts.ops, v.mv_data, v.mv_size, err, errlen);
}

int jq_store_load(jq_store_t *s, jq_store_job_fn fn, void *ctx, uint64_t *last_id,
                  bool *drained, uint64_t *narchived, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        return -1;
    }
    uint8_t drain = 0;
    *last_id = 0;
    meta_get(s, txn, "last_id", last_id, sizeof *last_id);
    /* After a crash, ids may have been shown (by a query) for jobs whose
     * commit never happened: continue above the reserve, not above the
     * last committed id, so no id is handed out twice. */
    uint64_t reserve = 0;
    if (meta_get(s, txn, "id_reserve", &reserve, sizeof reserve) == 0 && reserve > *last_id)
        *last_id = reserve;
    meta_get(s, txn, "drain", &drain, sizeof drain);
    *drained = drain != 0;
    MDB_stat st;
    *narchived = mdb_stat(txn, s->archive, &st) == 0 ? st.ms_entries : 0;
    MDB_cursor *cur;
    int out = 0;
    if ((rc = mdb_cursor_open(txn, s->jobs, &cur)) != 0) {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        mdb_txn_abort(txn);
        return -1;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char why[256];
        jq_job_t *job = k.mv_size == 8 ? jq_job_decode(s->opts.ops, v.mv_data, v.mv_size, why, sizeof why) : NULL;
        if (!job || job->id != get_be64(k.mv_data) || load_logs(s, txn, job) < 0) {
            snprintf(err, errlen, "the store is damaged: job %llu: %s",
                     k.mv_size == 8 ? (unsigned long long)get_be64(k.mv_data) : 0ull,
                     job ? "bad log entries" : why);
            jq_job_destroy(&job);
            out = -1;
            break;
        }
        if (job->id > *last_id)
            *last_id = job->id;
        if (fn(ctx, job) < 0) {
            snprintf(err, errlen, "out of memory loading job %llu", (unsigned long long)job->id);
            out = -1;
            break;
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    s->last_id = *last_id;
    return out;
}

jq_job_t *jq_store_load_archived(jq_store_t *s, uint64_t id, char *err, size_t errlen)
{
    MDB_txn *txn;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0) {
        snprintf(err, errlen, "store read failed");
        return NULL;
    }
    jq_job_t *job = get_job(s, txn, s->archive, id, err, errlen);
    if (job && load_logs(s, txn, job) < 0)
        jq_job_destroy(&job);
    if (job)
        job->archived = true;
    mdb_txn_abort(txn);
    return job;
}

bool jq_store_archived_status(jq_store_t *s, uint64_t id, jq_status_t *status)
{
    MDB_txn *txn;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return false;
    char err[128];
    jq_job_t *job = get_job(s, txn, s->archive, id, err, sizeof err);
    mdb_txn_abort(txn);
    if (!job)
        return false;
    *status = (jq_status_t)job->status;
    jq_job_destroy(&job);
    return true;
}

size_t jq_store_archived_ids(jq_store_t *s, uint64_t after, size_t cap, uint64_t *out)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    size_t n = 0;
    if (after == UINT64_MAX || mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return 0;
    if (mdb_cursor_open(txn, s->archive, &cur) == 0) {
        unsigned char kb[8];
        be64(kb, after + 1);
        MDB_val k = {sizeof kb, kb}, v;
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && n < cap;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
            if (k.mv_size == 8)
                out[n++] = get_be64(k.mv_data);
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return n;
}

/* ---- the writer ---- */

/* Jobs touched by one batch, decoded once and written back once. */
typedef struct {
    uint64_t id;
    jq_job_t *job;
    bool archived; /* moved to the archive in this batch: not written back */
} cached_t;

typedef struct {
    jq_store_t *s;
    MDB_txn *txn;
    cached_t *slots;
    size_t cap;
    uint64_t job_id; /* whose log entries on_log is writing */
    msgpack_sbuffer buf;
    int rc;
} batch_t;

static cached_t *cache_slot(batch_t *b, uint64_t id)
{
    size_t i = (size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & (b->cap - 1);
    while (b->slots[i].id && b->slots[i].id != id)
        i = (i + 1) & (b->cap - 1);
    return &b->slots[i];
}

static void on_log(void *ctx, uint32_t op_index, const msgpack_object *entry)
{
    batch_t *b = ctx;
    int64_t serial;
    if (b->rc || !wire_get_int(&entry->via.array.ptr[0], &serial))
        return;
    unsigned char kb[12];
    be64(kb, b->job_id);
    be32(kb + 8, (uint32_t)serial);
    msgpack_sbuffer_clear(&b->buf);
    unsigned char idx[2] = {(unsigned char)(op_index >> 8), (unsigned char)op_index};
    msgpack_sbuffer_write(&b->buf, (const char *)idx, 2);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->buf, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *entry);
    MDB_val k = {sizeof kb, kb}, v = {b->buf.size, b->buf.data};
    b->rc = mdb_put(b->txn, b->s->logs, &k, &v, 0);
}

static int put_job(batch_t *b, MDB_dbi dbi, const jq_job_t *job)
{
    unsigned char kb[8];
    be64(kb, job->id);
    msgpack_sbuffer_clear(&b->buf);
    jq_job_encode(&b->buf, job);
    MDB_val k = {sizeof kb, kb}, v = {b->buf.size, b->buf.data};
    return mdb_put(b->txn, dbi, &k, &v, 0);
}

/* One record into the batch. Records the store cannot use are skipped with
 * a message: they were accepted by the table, so refusing the batch would
 * refuse every other job in it too. */
static void apply_record(batch_t *b, const jq_change_t *c)
{
    jq_store_t *s = b->s;
    if (c->job_id == 0) { /* the drain flag */
        uint8_t drain = c->len && c->data[0];
        b->rc = meta_put(s, b->txn, "drain", &drain, sizeof drain);
        return;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    char err[256] = "";
    if (msgpack_unpack_next(&up, c->data, c->len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        fprintf(stderr, "jobqd: store: unreadable change record of job %llu skipped\n",
                (unsigned long long)c->job_id);
        msgpack_unpacked_destroy(&up);
        return;
    }
    const msgpack_object *rec = &up.data;
    cached_t *slot = cache_slot(b, c->job_id);
    if (wire_str_eq(wire_map_get(rec, "kind"), "submit")) {
        int64_t received = 0, sec, usec;
        const msgpack_object *ts = wire_map_get(rec, "received_ts");
        if (ts && ts->type == MSGPACK_OBJECT_ARRAY && ts->via.array.size == 2 &&
            wire_get_int(&ts->via.array.ptr[0], &sec) && wire_get_int(&ts->via.array.ptr[1], &usec))
            received = sec * 1000000 + usec;
        jq_job_t *job = NULL;
        if (jq_jobspec_parse(s->opts.ops, wire_map_get(rec, "input"), false, received, &job, err,
                             sizeof err) == JOBQ_ERR_NONE) {
            job->id = c->job_id;
            jq_job_destroy(&slot->job);
            slot->id = c->job_id;
            slot->job = job;
            slot->archived = false;
            if (c->job_id > s->last_id)
                s->last_id = c->job_id;
        }
    } else if (!slot->job) {
        slot->job = get_job(s, b->txn, s->jobs, c->job_id, err, sizeof err);
        if (slot->job)
            slot->id = c->job_id;
    }
    if (!slot->job) {
        fprintf(stderr, "jobqd: store: change %llu of job %llu skipped: %s\n",
                (unsigned long long)c->serial, (unsigned long long)c->job_id,
                err[0] ? err : "job not in the store");
        msgpack_unpacked_destroy(&up);
        return;
    }
    b->job_id = c->job_id;
    jq_mirror_apply(slot->job, rec, false, on_log, b);
    if (slot->job->archived && !slot->archived) {
        unsigned char kb[8];
        be64(kb, c->job_id);
        MDB_val k = {sizeof kb, kb};
        int rc = mdb_del(b->txn, s->jobs, &k, NULL);
        if (rc == 0 || rc == MDB_NOTFOUND)
            rc = put_job(b, s->archive, slot->job);
        if (rc)
            b->rc = rc;
        slot->archived = true;
    }
    msgpack_unpacked_destroy(&up);
}

static int commit_batch(jq_store_t *s, jq_change_t *head, size_t n)
{
    batch_t b = {.s = s};
    b.cap = 16;
    while (b.cap < 2 * n)
        b.cap *= 2;
    b.slots = calloc(b.cap, sizeof *b.slots);
    msgpack_sbuffer_init(&b.buf);
    if (!b.slots)
        return ENOMEM;
    uint64_t last_id = s->last_id;
    int rc = mdb_txn_begin(s->env, NULL, 0, &b.txn);
    for (const jq_change_t *c = head; rc == 0 && c && !b.rc; c = c->next)
        apply_record(&b, c);
    rc = rc ? rc : b.rc;
    for (size_t i = 0; i < b.cap; i++) {
        cached_t *e = &b.slots[i];
        if (rc == 0 && e->job && !e->archived)
            rc = put_job(&b, s->jobs, e->job);
        jq_job_destroy(&e->job);
    }
    if (rc == 0 && s->last_id != last_id) {
        uint64_t reserve = s->last_id + JQ_STORE_ID_RESERVE;
        rc = meta_put(s, b.txn, "last_id", &s->last_id, sizeof s->last_id);
        if (rc == 0)
            rc = meta_put(s, b.txn, "id_reserve", &reserve, sizeof reserve);
    }
    if (b.txn) {
        if (rc == 0)
            rc = mdb_txn_commit(b.txn);
        else
            mdb_txn_abort(b.txn);
    }
    if (rc != 0)
        s->last_id = last_id;
    free(b.slots);
    msgpack_sbuffer_destroy(&b.buf);
    return rc;
}

/* After a commit: archived jobs leave the table's memory (readers find them
 * in the store from now on); records go on to the publisher. */
static void hand_on(jq_store_t *s, jq_change_t *head)
{
    jq_change_t *keep = NULL, **tail = &keep;
    while (head) {
        jq_change_t *c = head;
        head = c->next;
        c->next = NULL;
        if (c->job_id == 0) {
            free(c);
            continue;
        }
        if (s->table && c->kind == JQ_CHANGE_ARCHIVE)
            jq_table_evict_archived(s->table, c->job_id);
        *tail = c;
        tail = &c->next;
    }
    /* Pushed even when empty (a batch of meta records only): the wake-up
     * is what lets the loop release the replies waiting for this commit. */
    if (s->out)
        jq_changeq_push(s->out, keep);
    else
        jq_change_list_free(&keep);
}

static void *store_main(void *arg)
{
    jq_store_t *s = arg;
    pthread_setname_np(pthread_self(), "jobqd-store"); /* for top -H and perf */
    jq_change_t *pending = NULL, *pending_tail = NULL;
    size_t npending = 0;
    bool unsynced = false, retrying = false;
    int64_t next_sync = mono_us() + s->opts.sync_interval_us;
    for (;;) {
        int timeout = -1;
        if (retrying)
            timeout = 1000;
        else if (s->opts.sync == JQ_SYNC_BATCH && unsynced)
        {
            int64_t left = (next_sync - mono_us()) / 1000 + 1;
            timeout = left < 0 ? 0 : (int)left; /* overdue: sync now, not never */
        }
        struct pollfd pfd = {.fd = jq_changeq_fd(s->in), .events = POLLIN};
        if (timeout != 0 && !atomic_load(&s->stopping))
            poll(&pfd, 1, timeout < 0 ? -1 : timeout);
        /* Everything that arrived while the last commit ran: one batch. */
        for (jq_change_t *c = jq_changeq_take(s->in); c; c = c->next) {
            if (pending_tail)
                pending_tail->next = c;
            else
                pending = c;
            pending_tail = c;
            npending++;
        }
        if (pending) {
            int rc = commit_batch(s, pending, npending);
            if (rc == 0) {
                atomic_fetch_add(&s->commits, 1);
                atomic_fetch_add(&s->records, npending);
                if (s->opts.sync == JQ_SYNC_ALWAYS)
                    atomic_fetch_add(&s->fsyncs, 1);
                unsynced = true;
                atomic_fetch_add(&s->durable, npending);
                atomic_store(&s->failed, 0);
                hand_on(s, pending);
                pending = pending_tail = NULL;
                npending = 0;
                retrying = false;
            } else {
                pthread_mutex_lock(&s->mu);
                snprintf(s->failmsg, sizeof s->failmsg, "%s%s", mdb_strerror(rc),
                         rc == MDB_MAP_FULL ? " (the store reached --store-map-size)" : "");
                pthread_mutex_unlock(&s->mu);
                if (!retrying)
                    fprintf(stderr, "jobqd: store: commit of %zu changes failed: %s; retrying\n",
                            npending, s->failmsg);
                atomic_fetch_add(&s->failures, 1);
                atomic_store(&s->failed, atomic_load(&s->durable) + npending);
                if (s->out)
                    jq_changeq_kick(s->out); /* the loop answers the waiting submitters */
                retrying = true;
            }
        }
        if (s->opts.sync == JQ_SYNC_BATCH && unsynced && mono_us() >= next_sync) {
            mdb_env_sync(s->env, 1);
            atomic_fetch_add(&s->fsyncs, 1);
            unsynced = false;
            next_sync = mono_us() + s->opts.sync_interval_us;
        }
        /* Stopping: the producers are gone, so what was taken is all. */
        if (atomic_load(&s->stopping) && !pending)
            break;
        if (atomic_load(&s->stopping) && retrying) {
            fprintf(stderr, "jobqd: store: %zu changes could not be saved: %s\n", npending,
                    s->failmsg);
            break;
        }
    }
    jq_change_list_free(&pending);
    /* A clean stop: every id handed out is committed (or was never shown),
     * so the next start continues right above it. */
    MDB_txn *txn;
    if (!retrying && mdb_txn_begin(s->env, NULL, 0, &txn) == 0) {
        if (meta_put(s, txn, "id_reserve", &s->last_id, sizeof s->last_id) == 0)
            mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (s->opts.sync != JQ_SYNC_NONE)
        mdb_env_sync(s->env, 1);
    return NULL;
}

int jq_store_start(jq_store_t *s, jq_table_t *table, jq_changeq_t *out)
{
    s->table = table;
    s->out = out;
    if (pthread_create(&s->thread, NULL, store_main, s) != 0)
        return -1;
    s->started = true;
    return 0;
}

void jq_store_sink(void *store, jq_change_t *head)
{
    jq_store_t *s = store;
    jq_changeq_push(s->in, head);
}

void jq_store_set_drain(jq_store_t *s, bool drained)
{
    jq_change_t *c = calloc(1, sizeof *c + 1);
    if (!c)
        return;
    c->len = 1;
    c->data[0] = drained ? 1 : 0;
    jq_changeq_push(s->in, c);
}

uint64_t jq_store_ticket(jq_store_t *s) { return jq_changeq_pushed(s->in); }
uint64_t jq_store_durable(jq_store_t *s) { return atomic_load(&s->durable); }

uint64_t jq_store_failed(jq_store_t *s, char *msg, size_t len)
{
    uint64_t f = atomic_load(&s->failed);
    if (f && msg) {
        pthread_mutex_lock(&s->mu);
        snprintf(msg, len, "%s", s->failmsg);
        pthread_mutex_unlock(&s->mu);
    }
    return f;
}

void jq_store_get_stats(jq_store_t *s, jq_store_stats_t *out)
{
    static const char *const names[] = {"always", "batch", "none"};
    out->commits = atomic_load(&s->commits);
    out->fsyncs = atomic_load(&s->fsyncs);
    out->records = atomic_load(&s->records);
    out->failures = atomic_load(&s->failures);
    out->sync = names[s->opts.sync];
    MDB_envinfo info;
    MDB_stat st;
    out->bytes = 0;
    if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &st) == 0)
        out->bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
}

void jq_store_close(jq_store_t **sp)
{
    if (!sp || !*sp)
        return;
    jq_store_t *s = *sp;
    if (s->started) {
        atomic_store(&s->stopping, true);
        jq_changeq_kick(s->in);
        pthread_join(s->thread, NULL);
    }
    mdb_env_close(s->env);
    jq_changeq_destroy(&s->in);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *sp = NULL;
}
