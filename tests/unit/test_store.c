/* test_store.c: the durable store (queue/store.c) and its job encoding
 * (queue/jobcodec.c): the codec round trip (every stored field, including
 * dependencies, results, priorities and timestamps) and its refusals; a
 * fresh store's open/load/close; refusal of a newer or unknown format, of a
 * damaged file and of a foreign LMDB file, each left byte for byte as it
 * was; a damaged job record named at load; and the store thread fed by a
 * real table through jq_store_sink — archived jobs evicted from the table
 * once committed and read back by jq_store_load_archived,
 * jq_store_archived_ids and jq_store_archived_status, before and after a
 * reopen, with the last id and drain flag kept in meta; and cluster mode's
 * apply, event seq, snapshot and restore. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobq_json.h"
#include <ftw.h>
#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builtin_ops.h"
#include "jobcodec.h"
#include "jobspec.h"
#include "mirror.h"
#include "store.h"
#include "storeint.h"
#include "table.h"

#define NOW 1700000000000000LL

/* ---- JSON text → msgpack object ---- */

/* Test inputs are written as JSON text; libjobq's converter packs them. */
static void pack_json(msgpack_packer *pk, const json_t *j)
{
    assert_int_equal(jobq_json_to_msgpack(pk, j, JOBQ_JSON_MAX_DEPTH, NULL, 0), 0);
}

/* JSON text as msgpack bytes in sb (initialised here). */
static void to_msgpack(msgpack_sbuffer *sb, const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j)
        fail_msg("bad JSON in test: %s: %s", text, jerr.text);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_json(&pk, j);
    json_decref(j);
}

/* A job parsed from submitted opcodes (JSON) and given its id. */
static jq_job_t *job_from(const char *ops, uint64_t id)
{
    msgpack_sbuffer sb;
    to_msgpack(&sb, ops);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    jq_job_t *job = NULL;
    char err[256];
    jobq_code_t rc = jq_jobspec_parse(jq_builtin_ops(), &up.data, false, UINT64_MAX >> 1, NOW, &job, err, sizeof err);
    if (rc != JOBQ_ERR_NONE)
        fail_msg("%s: %s", ops, err);
    assert_int_equal(jq_jobspec_resolve(job, id, NULL, 0, err, sizeof err), 0);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return job;
}

static void set_packed(jq_blob_t *b, const char *json)
{
    msgpack_sbuffer sb;
    to_msgpack(&sb, json);
    assert_int_equal(jq_blob_set(b, sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
}

static void assert_blob_equal(const jq_blob_t *a, const jq_blob_t *b)
{
    assert_true((a->data == NULL) == (b->data == NULL));
    if (a->data) {
        assert_int_equal(a->len, b->len);
        assert_memory_equal(a->data, b->data, a->len);
    }
}

static void assert_jobs_equal(const jq_job_t *a, const jq_job_t *b)
{
    assert_int_equal(a->id, b->id);
    assert_int_equal(a->received_ts, b->received_ts);
    assert_int_equal(a->start_ts, b->start_ts);
    assert_int_equal(a->end_ts, b->end_ts);
    assert_int_equal(a->change_serial, b->change_serial);
    assert_int_equal(a->log_serial, b->log_serial);
    assert_int_equal(a->nops, b->nops);
    assert_int_equal(a->status, b->status);
    for (uint32_t i = 0; i < a->nops; i++) {
        const jq_op_t *x = &a->ops[i], *y = &b->ops[i];
        assert_string_equal(jq_op_name(x), jq_op_name(y)); /* decoded: names, no defs */
        assert_blob_equal(&x->args, &y->args);
        assert_blob_equal(&x->result, &y->result);
        assert_string_equal(x->summary, y->summary);
        assert_int_equal(x->status, y->status);
        assert_int_equal(x->priority, y->priority);
        assert_int_equal(x->input_priority, y->input_priority);
        assert_int_equal(x->start_ts, y->start_ts);
        assert_int_equal(x->exec_ts, y->exec_ts);
        assert_int_equal(x->end_ts, y->end_ts);
        assert_int_equal(x->ndeps, y->ndeps);
        for (unsigned k = 0; k < x->ndeps; k++) {
            assert_int_equal(x->deps[k].job_id, y->deps[k].job_id);
            assert_int_equal(x->deps[k].status_mask, y->deps[k].status_mask);
        }
    }
}

/* ---- the codec ---- */

static void test_codec_round_trip(void **state)
{
    (void)state;
    jq_job_t *job = job_from(
        "[{\"op\":\"test.log\",\"args\":{\"messages\":[\"a\",\"b\"]},\"priority\":-10,"
        "  \"depends\":[[5,[\"success\",\"error\"]],[7,[]]]},"
        " {\"op\":\"test.delay\",\"args\":{\"duration\":0.5,\"repeat\":2},\"priority\":10,"
        "  \"depends\":[[9,[\"canceled\"]]]},"
        " {\"op\":\"test.log\"},"
        " {\"op\":\"test.delay\",\"args\":{\"duration\":1}}]",
        42);
    /* A job in the middle of its life: one opcode done, one failed with a
     * structured result, one still queued at a changed priority. */
    job->start_ts = NOW + 10;
    job->end_ts = NOW + 99;
    job->change_serial = 17;
    job->log_serial = 3;
    job->ops[0].status = JQ_SUCCESS;
    job->ops[0].start_ts = NOW + 10;
    job->ops[0].exec_ts = NOW + 11;
    job->ops[0].end_ts = NOW + 12;
    set_packed(&job->ops[0].result, "{\"n\":2,\"list\":[1,\"x\",null,true,1.5]}");
    job->ops[1].status = JQ_ERROR;
    job->ops[1].start_ts = NOW + 13;
    job->ops[1].exec_ts = NOW + 14;
    job->ops[1].end_ts = NOW + 15;
    assert_int_equal(jq_blob_exec_error(&job->ops[1].result, "went wrong"), 0);
    job->ops[2].priority = -20;
    job->ops[3].status = JQ_CANCELED;
    job->ops[3].priority = 19;
    job->status = (uint8_t)jq_job_derive_status(job);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    jq_job_encode(&sb, job);
    char err[256] = "";
    jq_job_t *back = jq_job_decode(sb.data, sb.size, err, sizeof err);
    if (!back)
        fail_msg("decode: %s", err);
    assert_jobs_equal(job, back);
    for (uint32_t i = 0; i < back->nops; i++)
        assert_int_equal(back->ops[i].nlog, 0); /* logs are stored apart */
    assert_int_equal(back->ops[0].ndeps, 2);
    assert_int_equal(back->ops[0].deps[1].job_id, 7);
    assert_int_equal(back->ops[0].deps[1].status_mask, 0);
    assert_int_equal(back->ops[1].deps[0].status_mask, 1u << JQ_CANCELED);
    assert_int_equal(back->ops[2].ndeps, 0);
    assert_null(back->ops[2].result.data);
    assert_string_equal(back->ops[1].summary, job->ops[1].summary);

    /* Encoding the decoded job gives the same bytes. */
    msgpack_sbuffer sb2;
    msgpack_sbuffer_init(&sb2);
    jq_job_encode(&sb2, back);
    assert_int_equal(sb.size, sb2.size);
    assert_memory_equal(sb.data, sb2.data, sb.size);

    /* Trailing bytes, a truncated value: refused. */
    msgpack_sbuffer_write(&sb2, "\xc0", 1);
    jq_job_t *bad = jq_job_decode(sb2.data, sb2.size, err, sizeof err);
    assert_null(bad);
    assert_non_null(strstr(err, "not a msgpack value"));
    bad = jq_job_decode(sb.data, sb.size - 3, err, sizeof err);
    assert_null(bad);
    msgpack_sbuffer_destroy(&sb2);
    msgpack_sbuffer_destroy(&sb);
    jq_job_destroy(&back);
    jq_job_destroy(&job);
}

static void expect_decode_error(const char *json, const char *needle)
{
    msgpack_sbuffer sb;
    to_msgpack(&sb, json);
    char err[256] = "";
    jq_job_t *job = jq_job_decode(sb.data, sb.size, err, sizeof err);
    msgpack_sbuffer_destroy(&sb);
    if (job)
        fail_msg("%s decoded", json);
    if (!strstr(err, needle))
        fail_msg("%s: '%s' lacks '%s'", json, err, needle);
}

#define STORED_OP(name, extra)                                                                   \
    "{\"op\":\"" name "\",\"args\":{},\"input_priority\":0,\"priority\":0,\"status\":\"queued\"," \
    "\"start_ts\":0,\"exec_ts\":0,\"end_ts\":0,\"result\":null,\"depends\":[]" extra "}"
#define STORED_JOB(id, ops)                                                                      \
    "{\"id\":" id ",\"received_ts\":1,\"start_ts\":0,\"end_ts\":0,\"change_serial\":1,"           \
    "\"log_serial\":0,\"ops\":[" ops "]}"

static void test_codec_refusals(void **state)
{
    (void)state;
    /* The template itself decodes. */
    msgpack_sbuffer sb;
    to_msgpack(&sb, STORED_JOB("3", STORED_OP("test.log", "")));
    char err[256];
    jq_job_t *job = jq_job_decode(sb.data, sb.size, err, sizeof err);
    msgpack_sbuffer_destroy(&sb);
    if (!job)
        fail_msg("template: %s", err);
    assert_int_equal(job->id, 3);
    assert_int_equal(job->status, JQ_QUEUED);
    jq_job_destroy(&job);

    expect_decode_error("[1,2,3]", "not a stored job");
    expect_decode_error(STORED_JOB("0", STORED_OP("test.log", "")), "not a stored job");
    expect_decode_error(STORED_JOB("3", ""), "not a stored job");
    /* An opcode this jobqd does not know is kept by name: the store never
     * judges what was accepted once. */
    to_msgpack(&sb, STORED_JOB("3", STORED_OP("no.such", "")));
    job = jq_job_decode(sb.data, sb.size, err, sizeof err);
    msgpack_sbuffer_destroy(&sb);
    assert_non_null(job);
    assert_null(job->ops[0].def);
    assert_string_equal(jq_op_name(&job->ops[0]), "no.such");
    jq_job_destroy(&job);
    expect_decode_error(STORED_JOB("3", STORED_OP("test.log", ",\"status\":\"sleeping\"")),
                        "job 3, opcode 0: malformed opcode");
    expect_decode_error(STORED_JOB("3", STORED_OP("test.log", "") "," STORED_OP("test.log", ",\"depends\":[[1]]")),
                        "job 3, opcode 1: malformed dependency");
}

/* ---- temporary directories and files ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

typedef struct {
    char root[64];
    char dir[96]; /* root/store */
} tmp_t;

static int setup_tmp(void **state)
{
    tmp_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    strcpy(t->root, "/tmp/jobq-test-store-XXXXXX");
    if (!mkdtemp(t->root))
        return -1;
    snprintf(t->dir, sizeof t->dir, "%s/store", t->root);
    *state = t;
    return 0;
}

static int teardown_tmp(void **state)
{
    tmp_t *t = *state;
    nftw(t->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
    return 0;
}

typedef struct {
    char *data;
    size_t len;
} bytes_t;

static bytes_t slurp(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    bytes_t b = {0};
    fseek(f, 0, SEEK_END);
    b.len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.data = malloc(b.len ? b.len : 1);
    assert_non_null(b.data);
    assert_int_equal(fread(b.data, 1, b.len, f), b.len);
    fclose(f);
    return b;
}

static void assert_unchanged(const char *dir, bytes_t *before)
{
    bytes_t now = slurp(dir, "data.mdb");
    assert_int_equal(now.len, before->len);
    if (memcmp(now.data, before->data, now.len) != 0)
        fail_msg("%s/data.mdb was changed", dir);
    free(now.data);
    free(before->data);
    before->data = NULL;
}

static jq_store_opts_t opts_for(const char *dir)
{
    return (jq_store_opts_t){.dir = dir, .map_size = 64ull << 20, .sync = JQ_SYNC_NONE,
                             .sync_interval_us = 100000};
}

/* Write key → value into database db (NULL: the main one) with LMDB;
 * with `checked`, with the store's checksum in front (a well-formed
 * value), else the bytes as they are (damage). */
static void lmdb_write(const char *dir, const char *db, const void *key, size_t klen,
                       const void *val, size_t vlen, bool checked)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 64ull << 20), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    if (checked)
        assert_int_equal(jq_store_put(txn, dbi, key, klen, NULL, 0, val, vlen), 0);
    else
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* The value of key in database db of the store in dir, copied (the caller
 * frees data): with `checked`, its payload behind the store's checksum,
 * which must hold; else its bytes as they are. */
static bytes_t read_value(const char *dir, const char *db, const void *key, size_t klen,
                          bool checked)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    const unsigned char *payload = v.mv_data;
    bytes_t b = {.len = v.mv_size};
    if (checked)
        assert_int_equal(jq_store_verify(&k, &v, &payload, &b.len), 0);
    b.data = malloc(b.len ? b.len : 1);
    assert_non_null(b.data);
    memcpy(b.data, payload, b.len);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return b;
}

static bytes_t read_checked(const char *dir, const char *db, const void *key, size_t klen)
{
    return read_value(dir, db, key, klen, true);
}

/* Whether job id's value in the live table is its submit record as it
 * came (store format 3), rather than the store's own encoding. */
static bool stored_as_submit_record(const char *dir, uint64_t id)
{
    unsigned char kb[8];
    jq_put_be64(kb, id);
    bytes_t b = read_checked(dir, "jobs", kb, sizeof kb);
    assert_true(b.len > 1);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, b.data + 1, b.len - 1, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    bool raw = wire_str_eq(wire_map_get(&up.data, "kind"), "submit");
    if (raw)
        assert_int_equal((unsigned char)b.data[0], JQ_QUEUED);
    msgpack_unpacked_destroy(&up);
    free(b.data);
    return raw;
}

static void lmdb_put(const char *dir, const char *db, const void *key, size_t klen,
                     const void *val, size_t vlen)
{
    lmdb_write(dir, db, key, klen, val, vlen, false);
}

static void lmdb_put_checked(const char *dir, const char *db, const void *key, size_t klen,
                             const void *val, size_t vlen)
{
    lmdb_write(dir, db, key, klen, val, vlen, true);
}

static int count_job(void *ctx, jq_job_t *job)
{
    (*(int *)ctx)++;
    jq_job_destroy(&job);
    return 0;
}

/* A fresh store, closed again. */
static void make_empty_store(const char *dir)
{
    jq_store_opts_t o = opts_for(dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("open: %s", err);
    jq_store_close(&s);
}

static void test_fresh_store(void **state)
{
    tmp_t *t = *state;
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err); /* creates the directory */
    if (!s)
        fail_msg("open: %s", err);
    int n = 0;
    uint64_t last_id = 99, narchived = 99;
    bool drained = true;
    assert_int_equal(jq_store_load(s, count_job, &n, &last_id, &drained, &narchived, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(last_id, 0);
    assert_false(drained);
    assert_int_equal(narchived, 0);
    jq_store_stats_t st;
    jq_store_get_stats(s, &st);
    assert_string_equal(st.sync, "none");
    assert_int_equal(st.commits, 0);
    assert_true(st.bytes > 0);
    assert_int_equal(jq_store_archived_ids(s, 0, 10, 0, (uint64_t[10]){0}), 0);
    jq_store_close(&s);
    assert_null(s);
    jq_store_close(&s); /* NULL is fine */

    /* The format is recorded: a second open reads it back. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, t->dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_val k = {6, "format"}, v;
    assert_int_equal(mdb_get(txn, meta, &k, &v), 0);
    const unsigned char *payload;
    size_t plen;
    assert_int_equal(jq_store_verify(&k, &v, &payload, &plen), 0); /* checksummed */
    assert_int_equal(plen, sizeof(uint32_t));
    uint32_t format;
    memcpy(&format, payload, sizeof format);
    assert_int_equal(format, JQ_STORE_FORMAT);
    mdb_txn_abort(txn);
    mdb_env_close(env);

    o.sync = JQ_SYNC_ALWAYS;
    s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("reopen: %s", err);
    jq_store_get_stats(s, &st);
    assert_string_equal(st.sync, "always");
    jq_store_close(&s);
}

/* The "format" record of the store in dir. */
static uint32_t stored_format(const char *dir)
{
    bytes_t b = read_checked(dir, "meta", "format", 6);
    assert_int_equal(b.len, 4);
    uint32_t format;
    memcpy(&format, b.data, 4);
    free(b.data);
    return format;
}

static void test_newer_format_refused(void **state)
{
    tmp_t *t = *state;
    make_empty_store(t->dir);
    uint32_t format = 99;
    lmdb_put_checked(t->dir, "meta", "format", 6, &format, sizeof format);
    bytes_t before = slurp(t->dir, "data.mdb");
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    assert_null(s);
    if (!strstr(err, "format 99") || !strstr(err, "newer jobqd") || !strstr(err, t->dir))
        fail_msg("message: %s", err);
    assert_unchanged(t->dir, &before);

    /* An unknown older format is refused too, without "newer". */
    format = 0;
    lmdb_put_checked(t->dir, "meta", "format", 6, &format, sizeof format);
    before = slurp(t->dir, "data.mdb");
    s = jq_store_open(&o, err, sizeof err);
    assert_null(s);
    if (!strstr(err, "format 0") || strstr(err, "newer"))
        fail_msg("message: %s", err);
    assert_unchanged(t->dir, &before);

    /* A format record that fails its checksum is damage. */
    uint64_t wide = 1;
    lmdb_put(t->dir, "meta", "format", 6, &wide, sizeof wide);
    before = slurp(t->dir, "data.mdb");
    s = jq_store_open(&o, err, sizeof err);
    assert_null(s);
    if (!strstr(err, "damaged"))
        fail_msg("message: %s", err);
    assert_unchanged(t->dir, &before);

    /* Put right again, it opens. */
    format = JQ_STORE_FORMAT;
    lmdb_put_checked(t->dir, "meta", "format", 6, &format, sizeof format);
    s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("open: %s", err);
    jq_store_close(&s);

    /* Format 2 opens as it is, and is marked 3: an older jobqd then
     * refuses the submit records it could not read. */
    format = 2;
    lmdb_put_checked(t->dir, "meta", "format", 6, &format, sizeof format);
    s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("open format 2: %s", err);
    jq_store_close(&s);
    assert_int_equal(stored_format(t->dir), JQ_STORE_FORMAT);
}

static void test_damaged_file_refused(void **state)
{
    tmp_t *t = *state;
    assert_int_equal(mkdir(t->dir, 0750), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", t->dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    srand(7);
    for (int i = 0; i < 64 * 1024; i++)
        fputc(rand() & 0xff, f);
    fclose(f);
    bytes_t before = slurp(t->dir, "data.mdb");
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    assert_null(s);
    if (!strstr(err, "cannot open the store") || !strstr(err, "damaged"))
        fail_msg("message: %s", err);
    assert_unchanged(t->dir, &before);
}

static void test_foreign_lmdb_refused(void **state)
{
    tmp_t *t = *state;
    assert_int_equal(mkdir(t->dir, 0750), 0);
    lmdb_put(t->dir, NULL, "someone", 7, "else's", 6);
    bytes_t before = slurp(t->dir, "data.mdb");
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    assert_null(s);
    if (!strstr(err, "damaged or not jobq's"))
        fail_msg("message: %s", err);
    assert_unchanged(t->dir, &before);
}

/* A record that fails its checksum is found before anything is served:
 * the open is refused naming the key, the file untouched; --salvage moves
 * it aside and opens. */
static void test_damaged_record_refused_or_salvaged(void **state)
{
    tmp_t *t = *state;
    make_empty_store(t->dir);
    unsigned char key[8] = {0, 0, 0, 0, 0, 0, 0, 3};
    lmdb_put(t->dir, "jobs", key, sizeof key, "\x93\x01\x02\x03\x04\x05", 6);
    bytes_t before = slurp(t->dir, "data.mdb");
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    assert_null(s);
    if (!strstr(err, "jobs/0000000000000003") || !strstr(err, "--salvage"))
        fail_msg("message: %s", err);
    assert_unchanged(t->dir, &before);
    o.salvage = true;
    s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("salvage: %s", err);
    int n = 0;
    uint64_t last_id, narchived;
    bool drained;
    assert_int_equal(jq_store_load(s, count_job, &n, &last_id, &drained, &narchived, err, sizeof err), 0);
    assert_int_equal(n, 0);
    jq_store_close(&s);
    o.salvage = false;
    s = jq_store_open(&o, err, sizeof err); /* clean now */
    if (!s)
        fail_msg("reopen: %s", err);
    jq_store_close(&s);
}

/* An emptied data file is not a new store: the store's name beside it
 * says one was made here. */
static void test_emptied_store_refused(void **state)
{
    tmp_t *t = *state;
    make_empty_store(t->dir);
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", t->dir);
    assert_int_equal(truncate(path, 0), 0);
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    assert_null(jq_store_open(&o, err, sizeof err));
    if (!strstr(err, "is empty") || !strstr(err, "store.id"))
        fail_msg("message: %s", err);
    assert_int_equal(unlink(path), 0);
    assert_null(jq_store_open(&o, err, sizeof err));
    if (!strstr(err, "is missing"))
        fail_msg("message: %s", err);
}

/* ---- the store thread, fed by a table ---- */

/* What the daemon does after a commit (broker/commit.c), for a table and
 * an output queue of its own. */
typedef struct {
    jq_table_t *table;
    jq_changeq_t *out;
} hook_ctx_t;

static void on_committed(void *ctx, jq_change_t *head, uint64_t durable)
{
    (void)durable;
    hook_ctx_t *h = ctx;
    jq_table_mark_committed(h->table, head);
    jq_change_t *keep = NULL, **tail = &keep;
    while (head) {
        jq_change_t *c = head;
        head = c->next;
        c->next = NULL;
        if (c->job_id == 0) {
            free(c);
            continue;
        }
        if (c->kind == JQ_CHANGE_ARCHIVE)
            jq_table_evict_archived(h->table, c->job_id);
        *tail = c;
        tail = &c->next;
    }
    jq_changeq_push(h->out, keep);
}

static void start_store(jq_store_t *s, hook_ctx_t *h)
{
    jq_store_hooks_t hooks = {.committed = on_committed, .ctx = h};
    assert_int_equal(jq_store_start(s, &hooks), 0);
}

/* Take records off the store's output until `archives` archive records
 * came (bounded: 10 s). Returns the number of records taken. */
static uint64_t drain_out(jq_changeq_t *out, int archives)
{
    uint64_t n = 0;
    int seen = 0;
    for (int rounds = 0; seen < archives; rounds++) {
        assert_true(rounds < 100);
        struct pollfd p = {.fd = jq_changeq_fd(out), .events = POLLIN};
        poll(&p, 1, 100);
        jq_change_t *head = jq_changeq_take(out);
        for (jq_change_t *c = head; c; c = c->next, n++)
            if (c->kind == JQ_CHANGE_ARCHIVE)
                seen++;
        jq_change_list_free(&head);
    }
    return n;
}

/* Run a job's current opcode to its end (success) with one log entry. */
static void run_op(jq_table_t *table, uint64_t id, const char *logmsg, int64_t at)
{
    jq_shard_t *sh = jq_table_shard_for(table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    assert_non_null(job);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, at, &d), 0);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, at);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_running(job, at + 1, &d), 0);
    assert_int_equal(jq_job_log(job, at + 2, "message", logmsg, strlen(logmsg), 0, &d), 0);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, at + 2);
    jq_delta_init(&d, job);
    jq_blob_t result = {0};
    set_packed(&result, "1");
    assert_int_equal(jq_job_op_finish(job, at + 3, true, &result, &d), 0);
    jq_blob_free(&result);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, at + 3);
    jq_shard_wrunlock(sh);
}

static void insert(jq_table_t *table, jq_job_t *job)
{
    assert_true(jq_table_reserve(table, 1000));
    jq_shard_t *sh = jq_table_shard_for(table, job->id);
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_insert(sh, job, jq_shard_submit_record(job, NOW)), 0);
    jq_shard_wrunlock(sh);
}

static void archive(jq_table_t *table, uint64_t id)
{
    jq_shard_t *sh = jq_table_shard_for(table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    assert_non_null(job);
    assert_int_equal(jq_shard_archive(sh, job, NOW + 100), 0);
    jq_shard_wrunlock(sh);
}

/* The single message of the single log entry of opcode i. */
static void assert_log(const jq_job_t *job, uint32_t i, const char *msg)
{
    assert_int_equal(job->ops[i].nlog, 1);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, job->ops[i].log[0].data, job->ops[i].log[0].len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(up.data.via.array.size, 4);
    const msgpack_object *m = &up.data.via.array.ptr[3];
    assert_int_equal(m->type, MSGPACK_OBJECT_STR);
    assert_int_equal(m->via.str.size, strlen(msg));
    assert_memory_equal(m->via.str.ptr, msg, strlen(msg));
    msgpack_unpacked_destroy(&up);
}

typedef struct {
    jq_job_t *jobs[8];
    int n;
} loaded_t;

static int keep_job(void *ctx, jq_job_t *job)
{
    loaded_t *l = ctx;
    assert_true(l->n < 8);
    l->jobs[l->n++] = job;
    return 0;
}

static void check_archived(jq_store_t *s, jq_job_t *const expect[2])
{
    char err[256] = "";
    for (int k = 0; k < 2; k++) {
        jq_job_t *a = jq_store_load_archived(s, expect[k]->id, err, sizeof err);
        if (!a)
            fail_msg("archived job %llu: %s", (unsigned long long)expect[k]->id, err);
        assert_true(a->archived);
        assert_int_equal(a->status, JQ_SUCCESS);
        assert_jobs_equal(expect[k], a);
        assert_log(a, 0, k ? "three" : "two");
        jq_job_destroy(&a);
        jq_status_t st = JQ_QUEUED;
        assert_true(jq_store_archived_status(s, expect[k]->id, &st));
        assert_int_equal(st, JQ_SUCCESS);
    }
    /* Live or unknown: not archived, no error. */
    err[0] = '\0';
    assert_null(jq_store_load_archived(s, 1, err, sizeof err));
    assert_string_equal(err, "");
    assert_null(jq_store_load_archived(s, 77, err, sizeof err));
    assert_string_equal(err, "");
    jq_status_t st;
    assert_false(jq_store_archived_status(s, 1, &st));
    assert_false(jq_store_archived_status(s, 77, &st));
    uint64_t ids[10] = {0};
    assert_int_equal(jq_store_archived_ids(s, 0, 10, 0, ids), 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 3);
    assert_int_equal(jq_store_archived_ids(s, 2, 10, 0, ids), 1);
    assert_int_equal(ids[0], 3);
    assert_int_equal(jq_store_archived_ids(s, 0, 1, 0, ids), 1);
    assert_int_equal(ids[0], 2);
    assert_int_equal(jq_store_archived_ids(s, 3, 10, 0, ids), 0);
    assert_int_equal(jq_store_archived_ids(s, UINT64_MAX, 10, 0, ids), 0);
    /* The status filter applies before the limit. */
    assert_int_equal(jq_store_archived_ids(s, 0, 1, 1u << JQ_ERROR, ids), 0);
    assert_int_equal(jq_store_archived_ids(s, 0, 1, 1u << JQ_SUCCESS, ids), 1);
}

static void test_store_thread_archive_and_reload(void **state)
{
    tmp_t *t = *state;
    jq_store_opts_t o = opts_for(t->dir);
    o.sync = JQ_SYNC_ALWAYS;
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("open: %s", err);
    jq_table_t *table = jq_table_new(4, jq_store_sink, s);
    jq_changeq_t *out = jq_changeq_new();
    assert_non_null(table);
    assert_non_null(out);
    hook_ctx_t hook = {table, out};
    start_store(s, &hook);

    /* Job 1 stays live and queued; 2 and 3 run, then are archived. */
    insert(table, job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"one\"]},\"priority\":10},"
                           " {\"op\":\"test.delay\",\"args\":{\"duration\":2},\"depends\":[[3,[]]]}]", 1));
    insert(table, job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"two\"]}}]", 2));
    insert(table, job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"three\"]},"
                           "\"depends\":[[2,[\"success\"]]],\"priority\":-10}]", 3));
    run_op(table, 2, "two", NOW + 1000);
    run_op(table, 3, "three", NOW + 2000);
    jq_job_t *expect[2];
    for (int k = 0; k < 2; k++) { /* copies, as they were before archiving */
        jq_shard_t *sh = jq_table_shard_for(table, 2 + k);
        jq_shard_rdlock(sh);
        expect[k] = jq_mirror_new(jq_shard_find(sh, 2 + k), JQ_MIRROR_ALL & ~JQ_MIRROR_LOGS);
        jq_shard_rdunlock(sh);
        assert_non_null(expect[k]);
        expect[k]->change_serial++; /* the archive record to come */
    }
    jq_store_set_drain(s, true);
    archive(table, 2);
    archive(table, 3);
    uint64_t records = drain_out(out, 2);
    /* Every record (but the drain flag) came out once committed. */
    assert_int_equal(jq_store_ticket(s), records + 1);
    assert_int_equal(jq_store_durable(s), jq_store_ticket(s));
    assert_int_equal(jq_store_failed(s, NULL, 0), 0);
    jq_store_stats_t st;
    jq_store_get_stats(s, &st);
    assert_int_equal(st.records, records + 1);
    assert_true(st.commits >= 1 && st.commits <= st.records);
    assert_int_equal(st.fsyncs, st.commits);
    assert_int_equal(st.failures, 0);

    /* Committed archives left the table's memory. */
    for (uint64_t id = 2; id <= 3; id++) {
        jq_shard_t *sh = jq_table_shard_for(table, id);
        jq_shard_rdlock(sh);
        assert_null(jq_shard_find_any(sh, id));
        jq_shard_rdunlock(sh);
    }
    check_archived(s, expect);

    jq_store_close(&s);
    jq_table_destroy(&table);
    jq_changeq_destroy(&out);

    /* Reopened: job 1 is the only live job, as submitted; the last id and
     * the drain flag come from meta; the archive is still readable. */
    s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("reopen: %s", err);
    loaded_t l = {0};
    uint64_t last_id = 0, narchived = 0;
    bool drained = false;
    if (jq_store_load(s, keep_job, &l, &last_id, &drained, &narchived, err, sizeof err) < 0)
        fail_msg("load: %s", err);
    assert_int_equal(l.n, 1);
    assert_int_equal(last_id, 3);
    assert_true(drained);
    assert_int_equal(narchived, 2);
    jq_job_t *one = l.jobs[0];
    jq_job_t *orig = job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"one\"]},\"priority\":10},"
                              " {\"op\":\"test.delay\",\"args\":{\"duration\":2},\"depends\":[[3,[]]]}]", 1);
    orig->change_serial = 1;
    assert_jobs_equal(orig, one);
    jq_job_destroy(&orig);
    jq_job_destroy(&one);
    check_archived(s, expect);
    jq_store_close(&s);
    jq_job_destroy(&expect[0]);
    jq_job_destroy(&expect[1]);
}

/* Records of a whole job life in one batch, and a partly run job: the
 * stored job and its log entries match the table's job exactly. */
static void test_store_thread_live_jobs_reload(void **state)
{
    tmp_t *t = *state;
    jq_store_opts_t o = opts_for(t->dir);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("open: %s", err);
    jq_table_t *table = jq_table_new(2, jq_store_sink, s);
    jq_changeq_t *out = jq_changeq_new();
    /* Records queued before the thread starts form one batch. */
    insert(table, job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"x\"]}},"
                           " {\"op\":\"test.log\",\"args\":{\"messages\":[\"y\"]}}]", 5));
    insert(table, job_from("[{\"op\":\"test.delay\",\"args\":{\"duration\":0}}]", 6));
    run_op(table, 5, "first", NOW + 500);
    jq_job_t *expect[2];
    assert_int_equal(jq_table_changes(table), 5);
    for (int k = 0; k < 2; k++) {
        jq_shard_t *sh = jq_table_shard_for(table, 5 + k);
        jq_shard_rdlock(sh);
        expect[k] = jq_mirror_new(jq_shard_find(sh, 5 + k), JQ_MIRROR_ALL);
        jq_shard_rdunlock(sh);
    }
    hook_ctx_t hook = {table, out};
    start_store(s, &hook);
    jq_store_close(&s); /* commits what was queued */
    jq_table_destroy(&table);
    jq_changeq_destroy(&out);
    /* Job 6 was only submitted: its record is its stored value, decoded
     * by the load below like job 5's encoding. */
    assert_false(stored_as_submit_record(t->dir, 5));
    assert_true(stored_as_submit_record(t->dir, 6));

    s = jq_store_open(&o, err, sizeof err);
    if (!s)
        fail_msg("reopen: %s", err);
    loaded_t l = {0};
    uint64_t last_id = 0, narchived = 9;
    bool drained = true;
    if (jq_store_load(s, keep_job, &l, &last_id, &drained, &narchived, err, sizeof err) < 0)
        fail_msg("load: %s", err);
    assert_int_equal(l.n, 2);
    assert_int_equal(last_id, 6);
    assert_false(drained);
    assert_int_equal(narchived, 0);
    for (int k = 0; k < 2; k++) {
        assert_jobs_equal(expect[k], l.jobs[k]);
        for (uint32_t i = 0; i < expect[k]->nops; i++) {
            assert_int_equal(expect[k]->ops[i].nlog, l.jobs[k]->ops[i].nlog);
            for (uint32_t e = 0; e < expect[k]->ops[i].nlog; e++)
                assert_blob_equal(&expect[k]->ops[i].log[e], &l.jobs[k]->ops[i].log[e]);
        }
        jq_job_destroy(&l.jobs[k]);
        jq_job_destroy(&expect[k]);
    }
    jq_store_close(&s);
}

/* Cluster mode (broker/cluster.c): records applied with jq_store_apply —
 * this node's own (durable advances, the hook gets them) and another's
 * (only stored) — count the event seq; a snapshot restored into a fresh
 * store gives the same jobs, seq and last id; a damaged snapshot is
 * refused and changes nothing. */
static void test_cluster_apply_snapshot_restore(void **state)
{
    tmp_t *t = *state;
    char dir2[128], dir3[128];
    snprintf(dir2, sizeof dir2, "%s/b", t->root);
    snprintf(dir3, sizeof dir3, "%s/c", t->root);
    jq_store_opts_t o = opts_for(t->dir), o2 = opts_for(dir2), o3 = opts_for(dir3);
    char err[512] = "";
    jq_store_t *s = jq_store_open(&o, err, sizeof err);
    jq_store_t *other = jq_store_open(&o3, err, sizeof err);
    assert_non_null(s);
    assert_non_null(other);
    jq_table_t *table = jq_table_new(4, jq_store_sink, s);
    jq_changeq_t *out = jq_changeq_new();
    hook_ctx_t hook = {table, out};
    jq_store_hooks_t hooks = {.committed = on_committed, .ctx = &hook};
    jq_store_cluster_mode(s, &hooks);
    jq_store_cluster_mode(other, NULL);
    insert(table, job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"a\"]}}]", 1));
    insert(table, job_from("[{\"op\":\"test.delay\",\"args\":{\"duration\":0}}]", 2));
    run_op(table, 1, "ran", NOW + 10);
    jq_store_set_drain(s, true); /* a record without a job: no event */
    jq_change_t *head = jq_changeq_take(jq_store_intake(s));
    size_t n = 0, jobs = 0;
    for (jq_change_t *c = head; c; c = c->next, n++)
        jobs += c->job_id != 0;
    assert_int_equal(n, jq_store_ticket(s));
    /* The same records, as another node would apply them. */
    jq_change_t *copy = NULL, **tail = &copy;
    for (jq_change_t *c = head; c; c = c->next) {
        jq_change_t *d = malloc(sizeof *d + c->len);
        memcpy(d, c, sizeof *d + c->len);
        d->next = NULL;
        *tail = d;
        tail = &d->next;
    }
    jq_store_meta_t meta = {"epoch", "12345678", 8};
    assert_int_equal(jq_store_apply(s, head, n, true, &meta, 1, err, sizeof err), 0);
    assert_int_equal(jq_store_durable(s), n);
    assert_int_equal(jq_store_seq(s), jobs);
    assert_int_equal(jq_store_apply(other, copy, n, false, NULL, 0, err, sizeof err), 0);
    jq_change_list_free(&copy); /* not this node's: still ours */
    assert_int_equal(jq_store_durable(other), 0);
    assert_int_equal(jq_store_seq(other), jobs);
    jq_change_t *published = jq_changeq_take(out); /* the hook had this node's, in order */
    size_t np = 0;
    for (jq_change_t *c = published; c; c = c->next, np++)
        ;
    assert_int_equal(np, jobs);
    jq_change_list_free(&published);
    msgpack_sbuffer snap;
    msgpack_sbuffer_init(&snap);
    assert_int_equal(jq_store_snapshot(s, &snap, err, sizeof err), 0);

    jq_store_t *b = jq_store_open(&o2, err, sizeof err);
    assert_non_null(b);
    jq_store_cluster_mode(b, NULL);
    assert_int_equal(jq_store_restore(b, "garbage", 7, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a jobq snapshot"));
    assert_int_equal(jq_store_seq(b), 0);
    /* A snapshot of a newer store format (a newer leader's) is refused. */
    char scratch[160];
    snprintf(scratch, sizeof scratch, "%s/scratch", t->root);
    assert_int_equal(mkdir(scratch, 0700), 0);
    uint32_t newer = JQ_STORE_FORMAT + 1;
    lmdb_put_checked(scratch, "meta", "format", 6, &newer, sizeof newer);
    bytes_t fv = read_value(scratch, "meta", "format", 6, false);
    msgpack_sbuffer bad;
    msgpack_sbuffer_init(&bad);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &bad, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_str_with_body(&pk, "jqsnap1", 7);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_str_with_body(&pk, "meta", 4);
    msgpack_pack_bin_with_body(&pk, "format", 6);
    msgpack_pack_bin_with_body(&pk, fv.data, fv.len);
    static const char *const rest[] = {"jobs", "archive", "logs"};
    for (int k = 0; k < 3; k++) {
        msgpack_pack_array(&pk, 1);
        msgpack_pack_str_with_body(&pk, rest[k], strlen(rest[k]));
    }
    assert_int_equal(jq_store_restore(b, bad.data, bad.size, err, sizeof err), -1);
    if (!strstr(err, "newer jobqd"))
        fail_msg("message: %s", err);
    msgpack_sbuffer_destroy(&bad);
    free(fv.data);
    assert_int_equal(jq_store_restore(b, snap.data, snap.size, err, sizeof err), 0);
    assert_int_equal(jq_store_seq(b), jobs);
    msgpack_sbuffer ep;
    msgpack_sbuffer_init(&ep);
    assert_int_equal(jq_store_meta_read(b, "epoch", &ep), 0);
    assert_int_equal(ep.size, 8);
    assert_memory_equal(ep.data, "12345678", 8);
    assert_int_equal(jq_store_meta_read(b, "no such key", &ep), 1);
    msgpack_sbuffer_destroy(&ep);
    jq_store_t *stores[3] = {s, b, other};
    loaded_t l[3];
    memset(l, 0, sizeof l);
    for (int k = 0; k < 3; k++) {
        uint64_t last_id = 0, narchived = 0;
        bool drained = false;
        if (jq_store_load(stores[k], keep_job, &l[k], &last_id, &drained, &narchived, err,
                          sizeof err) < 0)
            fail_msg("load: %s", err);
        assert_int_equal(l[k].n, 2);
        assert_int_equal(last_id, 2);
        assert_true(drained);
    }
    for (int j = 0; j < 2; j++) {
        for (int k = 1; k < 3; k++) {
            assert_jobs_equal(l[0].jobs[j], l[k].jobs[j]);
            jq_job_destroy(&l[k].jobs[j]);
        }
        jq_job_destroy(&l[0].jobs[j]);
    }
    msgpack_sbuffer_destroy(&snap);
    jq_store_close(&b);
    jq_store_close(&other);
    jq_store_close(&s);
    jq_table_destroy(&table);
    jq_changeq_destroy(&out);
}

static int take_into(void *ctx, jq_job_t *job)
{
    jq_shard_t *sh = jq_table_shard_for(ctx, job->id);
    jq_shard_wrlock(sh);
    int rc = jq_shard_insert_loaded(sh, job);
    jq_shard_wrunlock(sh);
    return rc;
}

/* A cluster follower's view (jq_table_replay): the records a table made
 * — submits, a run with its log, an archive — replayed into an empty table
 * give the same live jobs, logs included, and the archived one is gone;
 * the view's jobs move to another table whole (jq_table_take_live); a
 * record of a job the view never saw is refused. */
static void test_table_replay_view(void **state)
{
    (void)state;
    jq_changeq_t *q = jq_changeq_new();
    jq_table_t *table = jq_table_new(4, (jq_sink_fn)jq_changeq_push, q);
    jq_table_t *view = jq_table_new(4, jq_store_sink, NULL);
    assert_non_null(table);
    assert_non_null(view);
    insert(table, job_from("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"a\"]}},"
                           " {\"op\":\"test.log\",\"args\":{\"messages\":[\"b\"]}}]", 1));
    insert(table, job_from("[{\"op\":\"test.delay\",\"args\":{\"duration\":0}}]", 2));
    insert(table, job_from("[{\"op\":\"test.delay\",\"args\":{\"duration\":0}}]", 3));
    run_op(table, 1, "first", NOW + 10);
    run_op(table, 2, "two", NOW + 20);
    archive(table, 2);
    jq_change_t *head = jq_changeq_take(q);
    for (jq_change_t *c = head; c; c = c->next)
        assert_int_equal(jq_table_replay(view, c), 0);
    assert_int_equal(jq_table_live_count(view), 2);
    uint64_t want[JQ_STATUS__COUNT] = {0}, got[JQ_STATUS__COUNT] = {0};
    jq_table_count_status(table, want);
    jq_table_count_status(view, got);
    assert_memory_equal(want, got, sizeof want);
    for (uint64_t id = 1; id <= 3; id++) {
        jq_shard_t *a = jq_table_shard_for(table, id), *b = jq_table_shard_for(view, id);
        jq_shard_rdlock(a);
        jq_shard_rdlock(b);
        const jq_job_t *x = jq_shard_find(a, id), *y = jq_shard_find(b, id);
        if (id == 2) {
            assert_null(y); /* archived: read from the store */
        } else {
            assert_non_null(x);
            assert_non_null(y);
            assert_jobs_equal(x, y);
            for (uint32_t i = 0; i < x->nops; i++) {
                assert_int_equal(x->ops[i].nlog, y->ops[i].nlog);
                for (uint32_t e = 0; e < x->ops[i].nlog; e++)
                    assert_blob_equal(&x->ops[i].log[e], &y->ops[i].log[e]);
            }
        }
        jq_shard_rdunlock(b);
        jq_shard_rdunlock(a);
    }
    /* The view's jobs move to another table (a new leader's queue). */
    jq_table_t *queue = jq_table_new(4, jq_store_sink, NULL);
    assert_int_equal(jq_table_take_live(view, take_into, queue), 0);
    assert_int_equal(jq_table_live_count(view), 0);
    assert_int_equal(jq_table_live_count(queue), 2);
    memset(got, 0, sizeof got);
    jq_table_count_status(queue, got);
    assert_memory_equal(want, got, sizeof want);
    memset(got, 0, sizeof got);
    jq_table_count_status(view, got);
    for (int st = 0; st < JQ_STATUS__COUNT; st++)
        assert_int_equal(got[st], 0);
    jq_table_destroy(&queue);
    /* An update of a job the view does not have is told apart (1); a
     * submit it has already is skipped; a malformed record is refused. */
    jq_table_t *empty = jq_table_new(2, jq_store_sink, NULL);
    for (jq_change_t *c = head; c; c = c->next)
        if (c->kind == JQ_CHANGE_UPDATE) {
            assert_int_equal(jq_table_replay(empty, c), 1);
            break;
        }
    assert_int_equal(jq_table_replay(empty, head), 0); /* job 1's submit */
    assert_int_equal(jq_table_replay(empty, head), 0); /* again: skipped */
    assert_int_equal(jq_table_live_count(empty), 1);
    jq_change_t *bad = calloc(1, sizeof *bad + 1);
    bad->job_id = 7;
    bad->kind = JQ_CHANGE_UPDATE;
    bad->len = 1;
    bad->data[0] = (char)0xc1; /* never valid msgpack */
    assert_int_equal(jq_table_replay(view, bad), -1);
    free(bad);
    jq_change_list_free(&head);
    jq_table_destroy(&empty);
    jq_table_destroy(&view);
    jq_table_destroy(&table);
    jq_changeq_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_round_trip),
        cmocka_unit_test(test_codec_refusals),
        cmocka_unit_test_setup_teardown(test_fresh_store, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_newer_format_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_damaged_file_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_foreign_lmdb_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_damaged_record_refused_or_salvaged, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_emptied_store_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_store_thread_archive_and_reload, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_store_thread_live_jobs_reload, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_cluster_apply_snapshot_restore, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_table_replay_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
