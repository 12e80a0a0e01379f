/* store.c: LMDB layout, checksums, group commit and recovery (see store.h).
 * The start-up check and the format upgrade are in storecheck.c. */
#include "store.h"
#include "jobcodec.h"
#include "log.h"
#include "mirror.h"
#include "storeint.h"
#include "wal.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- opening ---- */

static void close_env(jq_store_t *s)
{
    if (s->env)
        mdb_env_close(s->env);
    s->env = NULL;
}

static void store_free(jq_store_t *s)
{
    if (s->pin)
        mdb_txn_abort(s->pin);
    s->pin = NULL;
    jq_wal_close(&s->wal);
    close_env(s);
    jq_changeq_destroy(&s->in);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int wal_open(jq_store_t *s, bool fresh, bool *replay, char *err, size_t errlen);
static int wal_recover(jq_store_t *s, bool replay, char *err, size_t errlen);

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
    /* The child process reads everything first: only a store it read from
     * end to end without crashing, hanging or finding a damaged record
     * (unless salvaging) is opened here. */
    bool fresh = false;
    bool replay = false;
    if (jq_store_precheck(s, &fresh, err, errlen) < 0 ||
        wal_open(s, fresh, &replay, err, errlen) < 0 ||
        (!fresh && jq_store_check_in_child(s, err, errlen) < 0) ||
        jq_store_open_env(s, fresh, err, errlen) < 0 ||
        (s->wal && wal_recover(s, replay, err, errlen) < 0)) {
        store_free(s);
        return NULL;
    }
    return s;
}

/* ---- reading ---- */

/* The payload of a job value: [status][stored job]. */
static jq_job_t *decode_job_value(const MDB_val *k, const MDB_val *v, char *err, size_t errlen)
{
    const unsigned char *payload;
    size_t len;
    if (jq_store_verify(k, v, &payload, &len) < 0 || len < 2 || k->mv_size != 8) {
        snprintf(err, errlen, "its record fails its checksum (damaged)");
        return NULL;
    }
    jq_job_t *job = jq_job_decode(payload + 1, len - 1, err, errlen);
    if (job && job->id != jq_get_be64(k->mv_data)) {
        snprintf(err, errlen, "its record holds job %llu (damaged)", (unsigned long long)job->id);
        jq_job_destroy(&job);
    }
    return job;
}

/* Entries moved aside by --salvage leave holes in an opcode's serials;
 * each is filled with an entry saying so, so that serials stay contiguous
 * within an opcode (what finding new entries relies on). */
static int fill_gap(jq_job_t *job, uint32_t op_index, uint32_t serial)
{
    if (op_index >= job->nops)
        return -1;
    const jq_op_t *op = &job->ops[op_index];
    if (!op->nlog || serial <= op->log_base + op->nlog + 1)
        return 0;
    if (serial - (op->log_base + op->nlog) > JOBQ_DEFAULT_MAX_LOG_ENTRIES * 10u)
        return -1;
    static const char lost[] = "jobq: this log entry was damaged and moved aside (--salvage)";
    for (uint32_t s = op->log_base + op->nlog + 1; s < serial; s++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint32(&pk, s);
        msgpack_pack_nil(&pk);
        msgpack_pack_str_with_body(&pk, "message", 7);
        msgpack_pack_str_with_body(&pk, lost, sizeof lost - 1);
        int rc = jq_job_append_log(job, op_index, s, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Append the job's log entries from the logs db. -1 with a message when an
 * entry is damaged. */
static int load_logs(jq_store_t *s, MDB_txn *txn, jq_job_t *job, char *err, size_t errlen)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->logs, &cur);
    if (rc != 0) {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        return -1;
    }
    unsigned char kb[12];
    jq_put_be64(kb, job->id);
    jq_put_be32(kb + 8, 0);
    MDB_val k = {sizeof kb, kb}, v;
    int out = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size == 12 && jq_get_be64(k.mv_data) == job->id;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint32_t serial = jq_get_be32((const unsigned char *)k.mv_data + 8);
        uint32_t op;
        const unsigned char *entry;
        size_t len;
        if (jq_store_log_entry(&k, &v, &op, &entry, &len) < 0 ||
            fill_gap(job, op, serial) < 0 ||
            jq_job_append_log(job, op, serial, entry, len) < 0) {
            snprintf(err, errlen, "its log entry %u is damaged (key logs/%016llx%08x)", serial,
                     (unsigned long long)job->id, serial);
            out = -1;
            break;
        }
    }
    if (out == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        out = -1;
    }
    mdb_cursor_close(cur);
    return out;
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
    jq_store_meta_get(s, txn, "last_id", last_id, sizeof *last_id);
    jq_store_meta_get(s, txn, "drain", &drain, sizeof drain);
    *drained = drain != 0;
    MDB_stat st;
    *narchived = mdb_stat(txn, s->archive, &st) == 0 ? st.ms_entries : 0;
    /* The highest archived id counts too (ids are never handed out twice). */
    MDB_cursor *cur;
    MDB_val k, v;
    if (mdb_cursor_open(txn, s->archive, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8 &&
            jq_get_be64(k.mv_data) > *last_id)
            *last_id = jq_get_be64(k.mv_data);
        mdb_cursor_close(cur);
    }
    int out = 0;
    if (!fn) { /* the figures only (a cluster's new leader has its jobs) */
        mdb_txn_abort(txn);
        atomic_store(&s->last_id, *last_id);
        return 0;
    }
    if ((rc = mdb_cursor_open(txn, s->jobs, &cur)) != 0) {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        mdb_txn_abort(txn);
        return -1;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char why[256] = "";
        jq_job_t *job = decode_job_value(&k, &v, why, sizeof why);
        if (!job || load_logs(s, txn, job, why, sizeof why) < 0) {
            snprintf(err, errlen, "the store is damaged: job %llu (key jobs/%016llx): %s; "
                                  "start with --salvage to move damaged records aside",
                     k.mv_size == 8 ? (unsigned long long)jq_get_be64(k.mv_data) : 0ull,
                     k.mv_size == 8 ? (unsigned long long)jq_get_be64(k.mv_data) : 0ull, why);
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
    atomic_store(&s->last_id, *last_id);
    return out;
}

static jq_job_t *get_job(MDB_txn *txn, MDB_dbi dbi, uint64_t id, char *err, size_t errlen)
{
    unsigned char kb[8];
    jq_put_be64(kb, id);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0) {
        if (rc != MDB_NOTFOUND)
            snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        return NULL;
    }
    char why[200] = "";
    jq_job_t *job = decode_job_value(&k, &v, why, sizeof why);
    if (!job)
        snprintf(err, errlen, "the stored record of job %llu is damaged: %s",
                 (unsigned long long)id, why);
    return job;
}

jq_job_t *jq_store_load_archived(jq_store_t *s, uint64_t id, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, errlen, "store read failed: %s", mdb_strerror(rc));
        return NULL;
    }
    jq_job_t *job = get_job(txn, s->archive, id, err, errlen);
    char why[200];
    if (job && load_logs(s, txn, job, why, sizeof why) < 0) {
        snprintf(err, errlen, "archived job %llu: %s", (unsigned long long)id, why);
        jq_job_destroy(&job);
    }
    if (job) {
        job->archived = true;
        atomic_store_explicit(&job->committed_serial, job->change_serial, memory_order_relaxed);
    }
    mdb_txn_abort(txn);
    return job;
}

/* The status byte of a checked job value; -1 when damaged. */
static int value_status(const MDB_val *k, const MDB_val *v)
{
    const unsigned char *payload;
    size_t len;
    if (jq_store_verify(k, v, &payload, &len) < 0 || len < 2 || payload[0] >= JQ_STATUS__COUNT)
        return -1;
    return payload[0];
}

bool jq_store_archived_status(jq_store_t *s, uint64_t id, jq_status_t *status)
{
    MDB_txn *txn;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return false;
    unsigned char kb[8];
    jq_put_be64(kb, id);
    MDB_val k = {sizeof kb, kb}, v;
    int st = mdb_get(txn, s->archive, &k, &v) == 0 ? value_status(&k, &v) : -1;
    mdb_txn_abort(txn);
    if (st < 0)
        return false;
    *status = (jq_status_t)st;
    return true;
}

size_t jq_store_archived_ids(jq_store_t *s, uint64_t after, size_t cap, uint8_t status_mask,
                             uint64_t *out)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    size_t n = 0;
    if (after == UINT64_MAX || mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return 0;
    if (mdb_cursor_open(txn, s->archive, &cur) == 0) {
        unsigned char kb[8];
        jq_put_be64(kb, after + 1);
        MDB_val k = {sizeof kb, kb}, v;
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && n < cap;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != 8)
                continue;
            /* Filtered here, before any limit applies: a page never comes
             * back short of matching jobs that exist further on. A damaged
             * record is listed (its row says so when read). */
            int st = value_status(&k, &v);
            if (status_mask && st >= 0 && !(status_mask & (1u << st)))
                continue;
            out[n++] = jq_get_be64(k.mv_data);
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return n;
}

/* ---- the writer ---- */

/* Jobs touched by one batch, decoded once and written back once. A job
 * submitted in the batch is kept as its record (submit) and decoded only
 * if a later record of the batch changes it; otherwise those very bytes
 * are its stored value (jq_job_decode reads both forms), which spares the
 * store a decode, a job and an encode per submitted job. */
typedef struct {
    uint64_t id;
    jq_job_t *job;
    const jq_change_t *submit; /* its submit record, while job is NULL */
    bool archived; /* moved to the archive in this batch: not written back */
} cached_t;

typedef struct {
    jq_store_t *s;
    MDB_txn *txn;
    cached_t *slots;
    size_t cap;
    uint64_t job_id;     /* whose log entries on_log is writing */
    uint64_t last_id;    /* highest job id submitted in the batch */
    msgpack_sbuffer buf;
    char why[256];       /* a record the store could not apply */
} batch_t;

static cached_t *cache_slot(batch_t *b, uint64_t id)
{
    size_t i = (size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & (b->cap - 1);
    while (b->slots[i].id && b->slots[i].id != id)
        i = (i + 1) & (b->cap - 1);
    return &b->slots[i];
}

static int on_log(void *ctx, uint32_t op_index, const msgpack_object *entry)
{
    batch_t *b = ctx;
    int64_t serial;
    if (op_index > 0xffff || !wire_get_int(&entry->via.array.ptr[0], &serial) || serial <= 0 ||
        serial > UINT32_MAX)
        return -1;
    unsigned char kb[12];
    jq_put_be64(kb, b->job_id);
    jq_put_be32(kb + 8, (uint32_t)serial);
    msgpack_sbuffer_clear(&b->buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->buf, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *entry);
    unsigned char idx[2] = {(unsigned char)(op_index >> 8), (unsigned char)op_index};
    int rc = jq_store_put(b->txn, b->s->logs, kb, sizeof kb, idx, 2, b->buf.data, b->buf.size);
    if (rc) {
        snprintf(b->why, sizeof b->why, "%s", mdb_strerror(rc));
        return -1;
    }
    return 0;
}

/* The job that slot's submit record describes, read by the decoder a
 * load uses for a job stored in that form (change serial 1, every opcode
 * queued). */
static int decode_submit(batch_t *b, cached_t *slot)
{
    const jq_change_t *c = slot->submit;
    char err[192];
    slot->job = jq_job_decode(c->data, c->len, err, sizeof err);
    if (slot->job && slot->job->id != c->job_id) {
        snprintf(err, sizeof err, "it holds job %llu", (unsigned long long)slot->job->id);
        jq_job_destroy(&slot->job);
    }
    if (!slot->job) {
        snprintf(b->why, sizeof b->why, "the submit record of job %llu: %s",
                 (unsigned long long)c->job_id, err);
        return -1;
    }
    slot->submit = NULL;
    return 0;
}

static int put_job(batch_t *b, MDB_dbi dbi, const jq_job_t *job)
{
    unsigned char kb[8];
    jq_put_be64(kb, job->id);
    msgpack_sbuffer_clear(&b->buf);
    jq_job_encode(&b->buf, job);
    unsigned char st = job->status;
    return jq_store_put(b->txn, dbi, kb, sizeof kb, &st, 1, b->buf.data, b->buf.size);
}

/* One record into the batch: 0, or an LMDB error code, or -1 with b->why
 * (a record the store cannot use). Either fails the whole batch. */
static int apply_record(batch_t *b, const jq_change_t *c)
{
    jq_store_t *s = b->s;
    if (c->job_id == 0 && c->kind == JQ_CHANGE_OPCODES)
        return jq_store_meta_put(s, b->txn, "opcodes", c->data, c->len);
    if (c->job_id == 0) { /* the drain flag */
        uint8_t drain = c->len && c->data[0];
        return jq_store_meta_put(s, b->txn, "drain", &drain, sizeof drain);
    }
    cached_t *slot = cache_slot(b, c->job_id);
    if (c->kind == JQ_CHANGE_SUBMIT) {
        /* Only its first byte is checked (a msgpack map): the record is
         * this daemon's own encoding (jq_change_encode; a cluster's log
         * and the write-ahead log carry the same bytes under checksums),
         * and what it holds from the client passed the request's scan
         * nested deeper than it is here, so the decoder's limits at load
         * accept it. A full scan here was a fifth of the store thread. */
        const unsigned char *p = (const unsigned char *)c->data;
        if (!c->len || !((*p & 0xf0) == 0x80 || *p == 0xde || *p == 0xdf)) {
            snprintf(b->why, sizeof b->why, "the submit record of job %llu is not a msgpack map",
                     (unsigned long long)c->job_id);
            return -1;
        }
        jq_job_destroy(&slot->job);
        slot->id = c->job_id;
        slot->submit = c;
        slot->archived = false;
        if (c->job_id > b->last_id)
            b->last_id = c->job_id;
        return 0;
    }
    if (slot->submit && decode_submit(b, slot) < 0)
        return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = 0;
    if (msgpack_unpack_next(&up, c->data, c->len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        snprintf(b->why, sizeof b->why, "change %llu of job %llu is not msgpack",
                 (unsigned long long)c->serial, (unsigned long long)c->job_id);
        rc = -1;
        goto out;
    }
    const msgpack_object *rec = &up.data;
    char err[192] = ""; /* room for it in b->why with the job named */
    if (!slot->job) {
        slot->job = get_job(b->txn, s->jobs, c->job_id, err, sizeof err);
        if (!slot->job) {
            snprintf(b->why, sizeof b->why, "change %llu of job %llu: %s",
                     (unsigned long long)c->serial, (unsigned long long)c->job_id,
                     err[0] ? err : "the job is not in the store");
            rc = -1;
            goto out;
        }
        slot->id = c->job_id;
    }
    b->job_id = c->job_id;
    if (jq_mirror_apply(slot->job, rec, JQ_MIRROR_RESULTS, on_log, b) < 0) {
        if (!b->why[0])
            snprintf(b->why, sizeof b->why, "change %llu of job %llu does not apply",
                     (unsigned long long)c->serial, (unsigned long long)c->job_id);
        rc = -1;
        goto out;
    }
    if (slot->job->archived && !slot->archived) {
        unsigned char kb[8];
        jq_put_be64(kb, c->job_id);
        MDB_val k = {sizeof kb, kb};
        rc = mdb_del(b->txn, s->jobs, &k, NULL);
        if (rc == 0 || rc == MDB_NOTFOUND)
            rc = put_job(b, s->archive, slot->job);
        slot->archived = true;
    }
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* Commit the first n records of head in one transaction. */
static int commit_batch(jq_store_t *s, const jq_change_t *head, size_t n,
                        const jq_store_meta_t *meta, size_t nmeta, char *why, size_t whylen)
{
    batch_t b = {.s = s};
    b.cap = 16;
    while (b.cap < 2 * n)
        b.cap *= 2;
    b.slots = calloc(b.cap, sizeof *b.slots);
    msgpack_sbuffer_init(&b.buf);
    if (!b.slots) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    int rc = mdb_txn_begin(s->env, NULL, 0, &b.txn);
    const jq_change_t *c = head;
    for (size_t i = 0; rc == 0 && i < n; i++, c = c->next)
        rc = apply_record(&b, c);
    for (size_t i = 0; i < b.cap; i++) {
        cached_t *e = &b.slots[i];
        if (rc == 0 && e->job && !e->archived) {
            rc = put_job(&b, s->jobs, e->job);
        } else if (rc == 0 && e->submit) {
            unsigned char kb[8], st = JQ_QUEUED;
            jq_put_be64(kb, e->id);
            rc = jq_store_put(b.txn, s->jobs, kb, sizeof kb, &st, 1, e->submit->data,
                              e->submit->len);
        }
        jq_job_destroy(&e->job);
    }
    uint64_t last = atomic_load(&s->last_id);
    if (rc == 0 && b.last_id > last)
        rc = jq_store_meta_put(s, b.txn, "last_id", &b.last_id, sizeof b.last_id);
    uint64_t seq = atomic_load(&s->seq);
    if (rc == 0 && s->count_seq) {
        c = head;
        for (size_t i = 0; i < n; i++, c = c->next)
            seq += c->job_id != 0; /* each job record is one event */
        rc = jq_store_meta_put(s, b.txn, "seq", &seq, sizeof seq);
    }
    for (size_t i = 0; rc == 0 && i < nmeta; i++)
        rc = jq_store_meta_put(s, b.txn, meta[i].key, meta[i].val, meta[i].len);
    if (b.txn) {
        if (rc == 0)
            rc = mdb_txn_commit(b.txn);
        else
            mdb_txn_abort(b.txn);
    }
    if (rc == 0 && b.last_id > last)
        atomic_store(&s->last_id, b.last_id);
    if (rc == 0 && s->count_seq)
        atomic_store(&s->seq, seq);
    if (rc == -1)
        snprintf(why, whylen, "%s", b.why);
    free(b.slots);
    msgpack_sbuffer_destroy(&b.buf);
    return rc;
}

/* ---- the write-ahead log (--sync always; wal.h) ---- */

/* A checkpoint at least this often while commits come in: it bounds the
 * log and what a restart replays, at two flushes a second. */
#define CHECKPOINT_US 1000000

/* LMDB flushed: the log is no longer needed. Removed (emptied first) and
 * the pin let go; LMDB flushes its own commits from now on if the mode
 * asks for it. */
static void wal_drop(jq_store_t *s)
{
    if (s->opts.sync == JQ_SYNC_ALWAYS)
        mdb_env_set_flags(s->env, MDB_NOSYNC, 0);
    if (s->pin)
        mdb_txn_abort(s->pin);
    s->pin = NULL;
    int rc = jq_wal_remove(&s->wal, s->opts.dir);
    if (rc)
        jq_log(JQ_LOG_WARNING, "store: cannot remove %s/wal: %s", s->opts.dir, strerror(rc));
}

/* A flush failed (of the log or of LMDB): Linux may have marked the
 * unwritten pages clean, so no later flush can be trusted to cover them.
 * Nothing more is acknowledged by this process; a restart rolls back to
 * the last good checkpoint and replays what the log holds. */
static int flush_failed(jq_store_t *s, int rc, const char *what, char *why, size_t whylen)
{
    if (!s->flush_failed)
        jq_log(JQ_LOG_ERROR, "store: %s failed (%s); nothing more is acknowledged: restart "
                             "jobqd (it replays every acknowledged commit from the log)",
               what, strerror(rc));
    s->flush_failed = true;
    snprintf(why, whylen, "%s failed (%s): restart jobqd", what, strerror(rc));
    return -1; /* the message is why */
}

/* LMDB flushed, its meta pages taken, its snapshot pinned, a new
 * checkpoint in the log: 0, or an error code with why (the previous
 * checkpoint and pin then still hold). Everything committed to LMDB
 * before it is durable after it. */
static int wal_checkpoint(jq_store_t *s, bool clean, char *why, size_t whylen)
{
    if (s->flush_failed)
        return flush_failed(s, EIO, "an earlier flush", why, whylen);
    int rc = mdb_env_sync(s->env, 1);
    if (rc)
        return flush_failed(s, rc, "flushing the store file", why, whylen);
    jq_wal_checkpoint_t cp;
    uint64_t txnid;
    MDB_envinfo info;
    int got = jq_wal_read_meta(s->opts.dir, &cp, &txnid);
    if (got == -2) {
        snprintf(why, whylen, "cannot read %s/data.mdb: %s", s->opts.dir, strerror(errno));
        return EIO;
    }
    if (got < 0 || mdb_env_info(s->env, &info) != 0 || txnid != info.me_last_txnid) {
        jq_log(JQ_LOG_WARNING, "store: LMDB's meta pages are not laid out as this jobqd "
                               "expects; the write-ahead log is off and every commit flushes "
                               "the store file twice instead");
        wal_drop(s); /* LMDB was just flushed: the log holds nothing it lacks */
        return 0;
    }
    cp.base = s->wal_next;
    cp.clean = clean;
    MDB_txn *pin = NULL;
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &pin);
    if (rc) {
        snprintf(why, whylen, "cannot pin the checkpoint: %s", mdb_strerror(rc));
        return rc;
    }
    if ((rc = jq_wal_checkpoint(s->wal, &cp)) != 0) {
        mdb_txn_abort(pin);
        if (jq_wal_broken(s->wal))
            return flush_failed(s, rc, "writing the write-ahead log", why, whylen);
        snprintf(why, whylen, "cannot write the write-ahead log in %s: %s", s->opts.dir,
                 strerror(rc));
        return rc;
    }
    atomic_fetch_add(&s->checkpoints, 1);
    if (s->pin)
        mdb_txn_abort(s->pin);
    s->pin = pin;
    s->last_checkpoint = mono_us();
    s->wal_dirty = false;
    return 0;
}

/* A batch LMDB committed (without a flush) made durable: one frame and
 * one flush of the log; a checkpoint instead when the log is full or
 * cannot grow. */
static int wal_make_durable(jq_store_t *s, const jq_change_t *head, size_t n, char *why,
                            size_t whylen)
{
    if (s->flush_failed)
        return flush_failed(s, EIO, "an earlier flush", why, whylen);
    size_t bytes = 0, k = 0;
    for (const jq_change_t *c = head; c && k < n; c = c->next, k++)
        bytes += c->len;
    int rc = jq_wal_full(s->wal, n, bytes) ? ENOSPC : jq_wal_append(s->wal, s->wal_next, head, n);
    if (rc == 0) {
        s->wal_next++;
        s->wal_dirty = true;
        return 0;
    }
    if (jq_wal_broken(s->wal))
        return flush_failed(s, rc, "flushing the write-ahead log", why, whylen);
    if (rc != ENOSPC)
        jq_log(JQ_LOG_WARNING, "store: cannot append to the write-ahead log (%s); flushing "
                               "the store file instead", strerror(rc));
    return wal_checkpoint(s, false, why, whylen);
}

/* One frame of the log applied again at start-up. */
static int replay_frame(void *ctx, uint64_t batch, jq_change_t *head, size_t n, char *err,
                        size_t errlen)
{
    jq_store_t *s = ctx;
    char why[256] = "";
    int rc = commit_batch(s, head, n, NULL, 0, why, sizeof why);
    jq_change_list_free(&head);
    if (rc) {
        snprintf(err, errlen, "replaying batch %llu of %s/wal: %s", (unsigned long long)batch,
                 s->opts.dir, rc == -1 ? why : mdb_strerror(rc));
        return -1;
    }
    s->wal_next = batch + 1;
    return 0;
}

/* Before LMDB opens the file: the log (always under --sync always; under
 * the other modes only one that is there, left by an unclean stop), and
 * after an unclean stop the meta pages of its checkpoint put back
 * (*replay: the frames are to be applied once LMDB is open). */
static int wal_open(jq_store_t *s, bool fresh, bool *replay, char *err, size_t errlen)
{
    jq_wal_checkpoint_t cp;
    bool has_cp;
    *replay = false;
    char path[4200];
    snprintf(path, sizeof path, "%s/wal", s->opts.dir);
    if (s->opts.sync != JQ_SYNC_ALWAYS && access(path, F_OK) < 0)
        return 0;
    if (!(s->wal = jq_wal_open(s->opts.dir, &cp, &has_cp, err, errlen)))
        return -1;
    s->wal_next = has_cp ? cp.base : 1;
    if (fresh || !has_cp || cp.clean)
        return 0; /* a new store, a clean stop, or one last used without the log */
    if (jq_wal_restore_meta(s->opts.dir, &cp, err, errlen) < 0)
        return -1;
    *replay = true;
    return 0;
}

/* LMDB is open: pin the checkpoint's snapshot, apply the frames since,
 * then checkpoint, so the log starts empty; under another mode than
 * --sync always the log is then removed. */
static int wal_recover(jq_store_t *s, bool replay, char *err, size_t errlen)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->pin);
    if (rc == 0) {
        uint64_t last = 0;
        if (jq_store_meta_get(s, s->pin, "last_id", &last, sizeof last) == 0)
            atomic_store(&s->last_id, last);
    } else {
        snprintf(err, errlen, "cannot read the store in %s: %s", s->opts.dir, mdb_strerror(rc));
        return -1;
    }
    uint64_t frames = 0;
    if (replay && jq_wal_replay(s->wal, replay_frame, s, &frames, err, errlen) < 0)
        return -1;
    if (frames)
        jq_log(JQ_LOG_NOTICE, "store: %llu commits replayed from the write-ahead log",
               (unsigned long long)frames);
    char why[256] = "";
    if (wal_checkpoint(s, s->opts.sync != JQ_SYNC_ALWAYS, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    if (s->wal && s->opts.sync != JQ_SYNC_ALWAYS)
        wal_drop(s);
    return 0;
}

/* LMDB reports a short write as EIO: a disk that filled, or the file size
 * limit, cut the write. Find which, so the message names the cause. */
static int real_cause(jq_store_t *s, int rc)
{
    if (rc != EIO)
        return rc;
    struct statvfs vfs;
    if (statvfs(s->opts.dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < (4u << 20))
        return ENOSPC;
    struct rlimit rl;
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", s->opts.dir);
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        stat(path, &st) == 0 && (uint64_t)st.st_size + (1u << 20) >= rl.rlim_cur)
        return EFBIG;
    return rc;
}

/* Say what went wrong in words an operator acts on. */
static void describe_failure(jq_store_t *s, int rc, const char *why, char *out, size_t len)
{
    switch (real_cause(s, rc)) {
    case MDB_MAP_FULL:
        snprintf(out, len, "the store is full: it reached --store-map-size (%llu bytes); "
                           "archive jobs or restart with a larger --store-map-size",
                 (unsigned long long)s->opts.map_size);
        break;
    case ENOSPC:
        snprintf(out, len, "the disk holding %s is full (%s)", s->opts.dir, strerror(rc));
        break;
    case EDQUOT:
        snprintf(out, len, "the disk quota for %s is used up (%s)", s->opts.dir, strerror(rc));
        break;
    case EFBIG:
        snprintf(out, len, "the store file reached the largest size this process may write "
                           "(%s; see ulimit -f)", strerror(rc));
        break;
    case EIO:
        snprintf(out, len, "the disk holding %s failed to write (%s)", s->opts.dir, strerror(rc));
        break;
    case -1:
        snprintf(out, len, "a change could not be stored: %s", why);
        break;
    default:
        snprintf(out, len, "%s", mdb_strerror(rc));
    }
}

/* Detach the first n records of *head. */
static jq_change_t *take_first(jq_change_t **head, jq_change_t **tail, size_t n)
{
    jq_change_t *first = *head, *last = NULL, *c = *head;
    for (size_t i = 0; i < n && c; i++) {
        last = c;
        c = c->next;
    }
    if (last)
        last->next = NULL;
    *head = c;
    if (!c)
        *tail = NULL;
    return first;
}

static void count_commit(jq_store_t *s, size_t n)
{
    atomic_fetch_add(&s->commits, 1);
    atomic_fetch_add(&s->records, n);
    jq_histo_observe(&s->batch, &jq_store_batch_spec, n);
    if (s->opts.sync == JQ_SYNC_ALWAYS)
        atomic_fetch_add(&s->fsyncs, 1);
}

static void *store_main(void *arg)
{
    jq_store_t *s = arg;
    pthread_setname_np(pthread_self(), "jobqd-store"); /* for top -H and perf */
    jq_change_t *pending = NULL, *pending_tail = NULL;
    size_t npending = 0;
    /* After a failure the next attempt commits at most `chunk` records,
     * halving on each failure: a disk with room for some of the backlog
     * takes that much at once instead of failing all of it forever. */
    size_t chunk = SIZE_MAX;
    bool unsynced = false, retrying = false, backoff = false, checkpoint_failed = false;
    /* With the log: the first `owed` pending records are in LMDB already
     * but not durable (the log and LMDB's own flush both failed); only
     * their flush is tried again, never their commit. */
    size_t owed = 0;
    int64_t next_sync = mono_us() + s->opts.sync_interval_us;
    for (;;) {
        int timeout = -1;
        if (retrying)
            timeout = backoff ? 1000 : 0;
        else if (s->opts.sync == JQ_SYNC_BATCH && unsynced) {
            int64_t left = (next_sync - mono_us()) / 1000 + 1;
            timeout = left < 0 ? 0 : (int)left; /* overdue: sync now, not never */
        } else if (s->wal && s->wal_dirty) {
            int64_t left = (s->last_checkpoint + CHECKPOINT_US - mono_us()) / 1000 + 1;
            timeout = left < 0 ? 0 : (int)left;
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
            size_t n = owed ? owed : npending < chunk ? npending : chunk;
            char why[256] = "";
            int64_t t0 = mono_us();
            int rc;
            if (owed) {
                rc = wal_checkpoint(s, false, why, sizeof why);
            } else {
                rc = commit_batch(s, pending, n, NULL, 0, why, sizeof why);
                if (rc == 0 && s->wal && (rc = wal_make_durable(s, pending, n, why, sizeof why)))
                    owed = n;
            }
            jq_histo_observe(&s->latency, &jq_store_latency_spec,
                             (uint64_t)(mono_us() - t0));
            if (rc == 0) {
                owed = 0;
                jq_change_t *done = take_first(&pending, &pending_tail, n);
                npending -= n;
                count_commit(s, n);
                unsynced = true;
                uint64_t durable = atomic_fetch_add(&s->durable, n) + n;
                atomic_store(&s->failed, 0);
                /* Failing until everything that waited is saved: a piece
                 * of the backlog fitting does not make room for intake. */
                if (!npending && atomic_exchange(&s->failing, false))
                    jq_log(JQ_LOG_NOTICE, "store: commits succeed again");
                chunk = chunk >= SIZE_MAX / 2 ? SIZE_MAX : chunk * 2;
                retrying = npending > 0; /* the rest of a cut batch: at once */
                backoff = false;
                if (s->hooks.committed)
                    s->hooks.committed(s->hooks.ctx, done, durable);
                else
                    jq_change_list_free(&done);
            } else {
                pthread_mutex_lock(&s->mu);
                describe_failure(s, rc, why, s->failmsg, sizeof s->failmsg);
                pthread_mutex_unlock(&s->mu);
                if (!atomic_exchange(&s->failing, true))
                    jq_log(JQ_LOG_ERROR, "store: commit of %zu changes failed: %s; "
                                         "submissions are refused until it succeeds; retrying",
                            n, s->failmsg);
                atomic_fetch_add(&s->failures, 1);
                atomic_store(&s->failed, atomic_load(&s->durable) + npending);
                if (s->hooks.failed)
                    s->hooks.failed(s->hooks.ctx);
                backoff = owed || n == 1; /* nothing smaller to try: wait a while */
                if (!owed)
                    chunk = n > 1 ? n / 2 : 1;
                retrying = true;
            }
        }
        if (s->wal && s->wal_dirty && !owed && !s->flush_failed &&
            mono_us() - s->last_checkpoint >= CHECKPOINT_US) {
            char why[256] = "";
            /* A failed checkpoint loses nothing (the log holds it all); the
             * full log's forced one reports it as a failed commit. */
            int rc = wal_checkpoint(s, false, why, sizeof why);
            if (rc && !checkpoint_failed)
                jq_log(JQ_LOG_WARNING, "store: checkpoint failed: %s; trying again", why);
            else if (!rc && checkpoint_failed)
                jq_log(JQ_LOG_NOTICE, "store: checkpoints succeed again");
            checkpoint_failed = rc != 0;
            if (rc) /* not at every turn: once per interval */
                s->last_checkpoint = mono_us();
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
        if (atomic_load(&s->stopping) && retrying && backoff) {
            jq_log(JQ_LOG_ERROR, "store: %zu changes could not be saved: %s", npending,
                    s->failmsg);
            break;
        }
    }
    jq_change_list_free(&pending);
    char why[256];
    if (s->wal && !s->flush_failed) { /* a clean stop: nothing to roll back next time */
        if (wal_checkpoint(s, true, why, sizeof why) != 0)
            jq_log(JQ_LOG_WARNING, "store: the last checkpoint failed: %s", why);
    } else if (s->opts.sync != JQ_SYNC_NONE) {
        mdb_env_sync(s->env, 1);
    }
    return NULL;
}

int jq_store_start(jq_store_t *s, const jq_store_hooks_t *hooks)
{
    if (hooks)
        s->hooks = *hooks;
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
    c->kind = JQ_CHANGE_DRAIN;
    c->data[0] = drained ? 1 : 0;
    jq_changeq_push(s->in, c);
}

int jq_store_set_opcodes(jq_store_t *s, const void *data, size_t len)
{
    jq_change_t *c = calloc(1, sizeof *c + len);
    if (!c)
        return -1;
    c->len = (uint32_t)len;
    c->kind = JQ_CHANGE_OPCODES;
    memcpy(c->data, data, len);
    jq_changeq_push(s->in, c);
    return 0;
}

int jq_store_get_opcodes(jq_store_t *s, msgpack_sbuffer *out, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        return -1;
    }
    MDB_val k = {7, "opcodes"}, v;
    const unsigned char *p;
    size_t n;
    rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == 0 && jq_store_verify(&k, &v, &p, &n) < 0) {
        snprintf(err, errlen, "the stored worker opcodes are damaged (checksum)");
        rc = -1;
    } else if (rc == 0) {
        msgpack_sbuffer_write(out, (const char *)p, n);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0; /* none declared yet */
    } else {
        snprintf(err, errlen, "store read: %s", mdb_strerror(rc));
        rc = -1;
    }
    mdb_txn_abort(txn);
    return rc;
}

uint64_t jq_store_ticket(jq_store_t *s) { return jq_changeq_pushed(s->in); }
uint64_t jq_store_durable(jq_store_t *s) { return atomic_load(&s->durable); }

/* Why the last commit failed, into msg (when there is a msg). */
static void copy_failmsg(jq_store_t *s, char *msg, size_t len)
{
    if (!msg)
        return;
    pthread_mutex_lock(&s->mu);
    snprintf(msg, len, "%s", s->failmsg);
    pthread_mutex_unlock(&s->mu);
}

uint64_t jq_store_failed(jq_store_t *s, char *msg, size_t len)
{
    uint64_t f = atomic_load(&s->failed);
    if (f)
        copy_failmsg(s, msg, len);
    return f;
}

bool jq_store_failing(jq_store_t *s, char *msg, size_t len)
{
    bool failing = atomic_load(&s->failing);
    if (failing)
        copy_failmsg(s, msg, len);
    return failing;
}

static const uint64_t batch_le[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};
const jq_histo_spec_t jq_store_batch_spec = {batch_le, sizeof batch_le / sizeof batch_le[0], 1};
/* 50 µs (no sync) to 2.5 s (a slow disk's fsync). */
static const uint64_t latency_le[] = {50, 100, 250, 500, 1000, 2500, 5000, 10000,
                                      25000, 50000, 100000, 250000, 500000, 1000000, 2500000};
const jq_histo_spec_t jq_store_latency_spec = {latency_le,
                                               sizeof latency_le / sizeof latency_le[0], 1e-6};

void jq_store_get_histograms(jq_store_t *s, jq_histo_snap_t *batch, jq_histo_snap_t *latency)
{
    jq_histo_read(&s->batch, &jq_store_batch_spec, batch);
    jq_histo_read(&s->latency, &jq_store_latency_spec, latency);
}

void jq_store_get_stats(jq_store_t *s, jq_store_stats_t *out)
{
    static const char *const names[] = {"always", "batch", "none"};
    out->commits = atomic_load(&s->commits);
    out->fsyncs = atomic_load(&s->fsyncs);
    out->checkpoints = atomic_load(&s->checkpoints);
    out->records = atomic_load(&s->records);
    out->failures = atomic_load(&s->failures);
    out->last_id = atomic_load(&s->last_id);
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
    store_free(s);
    *sp = NULL;
}

/* ---- cluster mode ---- */

void jq_store_cluster_mode(jq_store_t *s, const jq_store_hooks_t *hooks)
{
    if (hooks)
        s->hooks = *hooks;
    s->count_seq = true;
    MDB_txn *txn;
    uint64_t seq = 0;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0) {
        if (jq_store_meta_get(s, txn, "seq", &seq, sizeof seq) != 0)
            seq = 0;
        mdb_txn_abort(txn);
    }
    atomic_store(&s->seq, seq);
}

jq_changeq_t *jq_store_intake(jq_store_t *s) { return s->in; }
uint64_t jq_store_seq(jq_store_t *s) { return atomic_load(&s->seq); }

uint64_t jq_store_live_count(jq_store_t *s)
{
    MDB_txn *txn;
    MDB_stat st;
    uint64_t n = UINT64_MAX;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_stat(txn, s->jobs, &st) == 0)
            n = st.ms_entries;
        mdb_txn_abort(txn);
    }
    return n;
}

int jq_store_apply(jq_store_t *s, jq_change_t *head, size_t n, bool mine,
                   const jq_store_meta_t *meta, size_t nmeta, char *err, size_t errlen)
{
    char why[256] = "";
    int64_t t0 = mono_us();
    /* Each job record's event seq, the same on every node. */
    uint64_t seq = atomic_load(&s->seq);
    for (jq_change_t *c = head; c; c = c->next)
        c->seq = c->job_id ? ++seq : 0;
    int rc = commit_batch(s, head, n, meta, nmeta, why, sizeof why);
    jq_histo_observe(&s->latency, &jq_store_latency_spec, (uint64_t)(mono_us() - t0));
    if (rc != 0) {
        describe_failure(s, rc, why, err, errlen);
        atomic_fetch_add(&s->failures, 1);
        return -1;
    }
    count_commit(s, n);
    if (!mine)
        return 0; /* still the caller's */
    uint64_t durable = atomic_fetch_add(&s->durable, n) + n;
    if (s->hooks.committed)
        s->hooks.committed(s->hooks.ctx, head, durable);
    else
        jq_change_list_free(&head);
    return 0;
}

int jq_store_meta_read(jq_store_t *s, const char *key, msgpack_sbuffer *out)
{
    MDB_txn *txn;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    MDB_val k = {strlen(key), (void *)key}, v;
    const unsigned char *p;
    size_t n;
    int rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == 0 && jq_store_verify(&k, &v, &p, &n) == 0)
        msgpack_sbuffer_write(out, (const char *)p, n);
    else if (rc == 0)
        rc = -1;
    mdb_txn_abort(txn);
    return rc == MDB_NOTFOUND ? 1 : rc ? -1 : 0;
}

/* A snapshot is every key and value of the four tables, as stored (their
 * checksums included), so restoring writes them back byte for byte:
 * ["jqsnap1", [name, k, v, k, v...] x 4]. */
static const char *const snap_dbs[] = {"meta", "jobs", "archive", "logs"};

static MDB_dbi snap_dbi(jq_store_t *s, size_t i)
{
    return i == 0 ? s->meta : i == 1 ? s->jobs : i == 2 ? s->archive : s->logs;
}

int jq_store_snapshot(jq_store_t *s, msgpack_sbuffer *out, char *err, size_t errlen)
{
    MDB_txn *txn; /* a read transaction: the state when it began */
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, errlen, "snapshot: %s", mdb_strerror(rc));
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_str_with_body(&pk, "jqsnap1", 7);
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        MDB_stat st;
        MDB_cursor *cur;
        rc = mdb_stat(txn, snap_dbi(s, i), &st);
        if (rc == 0)
            rc = mdb_cursor_open(txn, snap_dbi(s, i), &cur);
        if (rc != 0)
            break;
        msgpack_pack_array(&pk, 1 + 2 * (uint32_t)st.ms_entries);
        msgpack_pack_str_with_body(&pk, snap_dbs[i], strlen(snap_dbs[i]));
        MDB_val k, v;
        size_t packed = 0;
        for (int c = mdb_cursor_get(cur, &k, &v, MDB_FIRST); c == 0 && packed < st.ms_entries;
             c = mdb_cursor_get(cur, &k, &v, MDB_NEXT), packed++) {
            msgpack_pack_bin_with_body(&pk, k.mv_data, k.mv_size);
            msgpack_pack_bin_with_body(&pk, v.mv_data, v.mv_size);
        }
        mdb_cursor_close(cur);
        if (packed != st.ms_entries)
            rc = MDB_CORRUPTED; /* the count said otherwise: never a short snapshot */
    }
    mdb_txn_abort(txn);
    if (rc != 0) {
        snprintf(err, errlen, "snapshot: %s", mdb_strerror(rc));
        return -1;
    }
    return 0;
}

int jq_store_restore(jq_store_t *s, const void *data, size_t len, char *err, size_t errlen)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_ARRAY || up.data.via.array.size != 5 ||
        up.data.via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        up.data.via.array.ptr[0].via.str.size != 7 ||
        memcmp(up.data.via.array.ptr[0].via.str.ptr, "jqsnap1", 7) != 0) {
        msgpack_unpacked_destroy(&up);
        snprintf(err, errlen, "restore: not a jobq snapshot");
        return -1;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    for (size_t i = 0; rc == 0 && i < 4; i++)
        rc = mdb_drop(txn, snap_dbi(s, i), 0);
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        const msgpack_object *t = &up.data.via.array.ptr[1 + i];
        if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size % 2 != 1) {
            rc = MDB_CORRUPTED;
            break;
        }
        for (uint32_t j = 1; rc == 0 && j + 1 < t->via.array.size; j += 2) {
            const msgpack_object *k = &t->via.array.ptr[j], *v = &t->via.array.ptr[j + 1];
            if (k->type != MSGPACK_OBJECT_BIN || v->type != MSGPACK_OBJECT_BIN) {
                rc = MDB_CORRUPTED;
                break;
            }
            MDB_val kv = {k->via.bin.size, (void *)k->via.bin.ptr};
            MDB_val vv = {v->via.bin.size, (void *)v->via.bin.ptr};
            rc = mdb_put(txn, snap_dbi(s, i), &kv, &vv, MDB_APPEND);
        }
    }
    uint64_t last_id = 0, seq = 0;
    uint32_t format = 0, ours = JQ_STORE_FORMAT;
    bool newer = false;
    if (rc == 0) {
        if (jq_store_meta_get(s, txn, "last_id", &last_id, sizeof last_id) != 0)
            last_id = 0;
        if (jq_store_meta_get(s, txn, "seq", &seq, sizeof seq) != 0)
            seq = 0;
        /* A newer leader's values may be beyond this jobqd: refused, as
         * its store would be. An older one's are read as they are, and
         * marked this format, since this node now writes its forms. */
        if (jq_store_meta_get(s, txn, "format", &format, sizeof format) == 0 &&
            format > JQ_STORE_FORMAT) {
            newer = true;
            rc = MDB_INCOMPATIBLE;
        }
        if (rc == 0)
            rc = jq_store_meta_put(s, txn, "format", &ours, sizeof ours);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    msgpack_unpacked_destroy(&up);
    if (newer) {
        snprintf(err, errlen, "restore: the snapshot is of store format %u; this jobqd reads "
                              "formats up to %d (the leader runs a newer jobqd)",
                 format, JQ_STORE_FORMAT);
        return -1;
    }
    if (rc != 0) {
        snprintf(err, errlen, "restore: %s", mdb_strerror(rc));
        return -1;
    }
    atomic_store(&s->last_id, last_id);
    atomic_store(&s->seq, seq);
    return 0;
}
