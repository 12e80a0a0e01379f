/* wal.h: the write-ahead log of a --sync always store, which makes a
 * durable commit cost one device flush instead of LMDB's two.
 *
 * Each batch the store commits (to LMDB without a sync) is appended to the
 * log as one frame and the log is flushed once; that flush is what makes
 * the batch durable. Now and then the store checkpoints: it syncs LMDB,
 * copies LMDB's two meta pages (the roots of the synced tree) into the
 * log's header, and the log starts over. After any unclean stop, the meta
 * pages are put back as they were at the checkpoint and the frames since
 * are applied again. The argument that this loses no acknowledged commit,
 * even on power loss, is in docs/operations.md, "One flush per commit". */
#ifndef JOBQ_WAL_H
#define JOBQ_WAL_H

#include "change.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of each LMDB meta page kept (its header and MDB_meta fit). */
#define JQ_WAL_META_BYTES 512
/* The log is refilled from its start at each checkpoint; it grows in
 * steps of JQ_WAL_GROW (zero-filled ahead of use, so that a frame's flush
 * writes data blocks only) up to a size that forces a checkpoint. */
#define JQ_WAL_GROW (1u << 20)

typedef struct jq_wal jq_wal_t;

/* What a checkpoint names: the first batch number after it, and LMDB's
 * two meta pages as they were on disk when it was taken. */
typedef struct {
    uint64_t base;
    uint32_t psize; /* LMDB's page size: where meta page 1 starts */
    /* Written by a clean stop: the store file is what counts (it may be
     * changed by tools while jobqd is stopped); nothing is rolled back. */
    bool clean;
    uint64_t dev, ino; /* of data.mdb: a file put in its place is not rolled back */
    unsigned char meta[2][JQ_WAL_META_BYTES];
} jq_wal_checkpoint_t;

/* Open dir/wal, creating it when missing. *cp is the current checkpoint,
 * *has_cp false when there is none (a new log). NULL with a message. */
jq_wal_t *jq_wal_open(const char *dir, jq_wal_checkpoint_t *cp, bool *has_cp, char *err,
                      size_t errlen);
void jq_wal_close(jq_wal_t **w);
/* Empty the log, remove it and close it: 0 or an errno value (closed
 * either way). */
int jq_wal_remove(jq_wal_t **w, const char *dir);

/* The frames after the checkpoint, in order, each as a list of records
 * (owned by fn); stops at the first frame that is torn, of an older
 * generation or out of sequence. -1 when fn fails (with its message). */
typedef int (*jq_wal_frame_fn)(void *ctx, uint64_t batch, jq_change_t *head, size_t n,
                               char *err, size_t errlen);
int jq_wal_replay(jq_wal_t *w, jq_wal_frame_fn fn, void *ctx, uint64_t *frames, char *err,
                  size_t errlen);

/* Append the first n records of head as frame `batch` (the checkpoint's
 * base, then one more each time) and flush: 0, or an errno value (ENOSPC
 * when the log is at its largest: checkpoint first). */
int jq_wal_append(jq_wal_t *w, uint64_t batch, const jq_change_t *head, size_t n);
/* Bytes of frames since the checkpoint. */
uint64_t jq_wal_used(const jq_wal_t *w);
/* A flush of the log failed: it takes nothing more (see wal.c). */
bool jq_wal_broken(const jq_wal_t *w);
/* True when a frame of this many record bytes would push the log past
 * its largest size. */
bool jq_wal_full(const jq_wal_t *w, size_t n, size_t bytes);
/* Write a new checkpoint (a new generation) and start the frames over: 0
 * or an errno value (the old checkpoint then still holds). */
int jq_wal_checkpoint(jq_wal_t *w, const jq_wal_checkpoint_t *cp);

/* LMDB's meta pages (and the file's dev/ino), read from dir/data.mdb: 0,
 * -1 when they do not look like LMDB 0.9's meta pages of a 64-bit build
 * (the log is then not used), -2 when the file cannot be read (errno).
 * *txnid: the higher of the two. */
int jq_wal_read_meta(const char *dir, jq_wal_checkpoint_t *cp, uint64_t *txnid);
/* Put the checkpoint's meta pages back into dir/data.mdb and flush: 0,
 * or -1 with a message (a store newer than the log is refused: the log is
 * not this store's). */
int jq_wal_restore_meta(const char *dir, const jq_wal_checkpoint_t *cp, char *err,
                        size_t errlen);

#endif
