/* storeint.h: what store.c (the running store) and storecheck.c (opening,
 * checking, upgrading and salvaging it) share. Not for other modules. */
#ifndef JOBQ_STOREINT_H
#define JOBQ_STOREINT_H

#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

struct jq_store {
    MDB_env *env;
    MDB_dbi meta, jobs, archive, logs;
    jq_store_opts_t opts;
    jq_store_hooks_t hooks;
    jq_changeq_t *in;          /* records waiting for a commit */
    pthread_t thread;
    bool started;
    _Atomic bool stopping;
    _Atomic bool failing;      /* the last commit failed */
    _Atomic uint64_t durable;  /* records committed */
    _Atomic uint64_t failed;   /* records up to here were at stake in a failed commit */
    _Atomic uint64_t last_id;  /* highest job id committed */
    pthread_mutex_t mu;        /* guards failmsg */
    char failmsg[256];
    _Atomic uint64_t commits, fsyncs, records, failures;
    jq_histo_t batch;          /* records per successful commit */
    jq_histo_t latency;        /* µs of each commit (and its sync), failed ones too */
    /* Cluster mode: job records applied, ever (the event seq), kept in
     * meta "seq" with every commit. */
    bool count_seq;
    _Atomic uint64_t seq;
    /* --sync always: the write-ahead log (wal.h). LMDB then commits
     * without a flush; pin holds the checkpoint's snapshot so that LMDB
     * never writes over its pages until the next checkpoint. */
    struct jq_wal *wal;
    MDB_txn *pin;
    uint64_t wal_next;       /* the next frame's batch number */
    int64_t last_checkpoint; /* mono µs */
    bool wal_dirty;          /* commits since the last checkpoint */
    bool flush_failed;       /* nothing more is acknowledged (store.c) */
    _Atomic uint64_t checkpoints;
};

static inline void jq_put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static inline uint64_t jq_get_be64(const void *vp)
{
    const unsigned char *p = vp;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static inline void jq_put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static inline uint32_t jq_get_be32(const void *vp)
{
    const unsigned char *p = vp;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bytes in front of every value: its checksum. */
#define JQ_STORE_CRC_BYTES 4

/* Put key → [crc][hdr][data] (hdr may be empty); an LMDB error code. */
int jq_store_put(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, const void *hdr,
                 size_t hlen, const void *data, size_t dlen);
/* Check a value's checksum: 0 and its payload (after the checksum), or -1. */
int jq_store_verify(const MDB_val *k, const MDB_val *v, const unsigned char **payload,
                    size_t *len);
/* A checked log value: its opcode index and entry (one msgpack array of 4
 * whose serial is the key's). -1 when damaged. */
int jq_store_log_entry(const MDB_val *k, const MDB_val *v, uint32_t *op,
                       const unsigned char **entry, size_t *len);
/* Meta values: 0, MDB_NOTFOUND, or -1 when damaged (or of the wrong size). */
int jq_store_meta_get(jq_store_t *s, MDB_txn *txn, const char *key, void *out, size_t len);
int jq_store_meta_put(jq_store_t *s, MDB_txn *txn, const char *key, const void *val, size_t len);

/* Before LMDB sees the file: is there a store here, and may it be opened?
 * *fresh when none exists yet. */
int jq_store_precheck(jq_store_t *s, bool *fresh, char *err, size_t errlen);
/* Read the whole store in a child process. */
int jq_store_check_in_child(jq_store_t *s, char *err, size_t errlen);
/* Open (create, upgrade, salvage) the environment for this process. */
int jq_store_open_env(jq_store_t *s, bool fresh, char *err, size_t errlen);

#endif
