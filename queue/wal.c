/* wal.c: the write-ahead log of a --sync always store (see wal.h).
 *
 * File layout: two header slots of 4 KiB (a checkpoint is written to the
 * slot the current one is not in, so a torn header write leaves the other
 * intact), then frames from byte 8192 on. Integers are big-endian.
 *   header: "JQWH" crc32 generation base psize clean dev ino meta0 meta1
 *   frame:  "JQWF" crc32 generation batch nrec bytes
 *           then nrec × (job_id serial kind len data)
 * The crc covers everything after itself. A frame belongs to the log only
 * with the header's generation and the next batch number: what lies
 * beyond the last frame written since the checkpoint is either zeros or
 * frames of an older generation, and either ends the replay. */
#include "wal.h"
#include "log.h"
#include "storeint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SLOT_BYTES 4096u
#define FRAMES_AT (2 * SLOT_BYTES)
#define HEADER_BYTES (4 + 4 + 8 + 8 + 4 + 4 + 8 + 8 + 2 * JQ_WAL_META_BYTES)
#define META_AT 48
#define FRAME_HEAD (4 + 4 + 8 + 8 + 4 + 4)
#define RECORD_HEAD (8 + 8 + 1 + 4)
/* A checkpoint is forced before the log grows past this. */
#define WAL_MAX (64u << 20)

/* LMDB 0.9's meta page on a 64-bit build: a 16-byte page header (flags at
 * byte 10, P_META = 0x08), then MDB_meta: magic at 16, page size at 40
 * (mm_dbs[0].md_pad), txnid at 144. Checked at every checkpoint against
 * what LMDB itself reports; a mismatch turns the log off. */
#define META_FLAGS_AT 10
#define META_MAGIC_AT 16
#define META_PSIZE_AT 40
#define META_TXNID_AT 144
#define LMDB_MAGIC 0xBEEFC0DEu
#define P_META 0x08

struct jq_wal {
    int fd;
    /* A flush of the log failed: Linux may have marked the pages clean
     * anyway, so a later flush that succeeds proves nothing. Nothing more
     * is written by this process; a restart replays what was flushed. */
    bool broken;
    char path[4200];
    uint64_t generation;
    unsigned slot;      /* the slot holding the current header */
    uint64_t next;      /* the next batch number */
    uint64_t tail;      /* where the next frame goes */
    uint64_t filled;    /* bytes of the file written (zeros ahead of tail) */
    unsigned char *buf; /* one frame being built */
    size_t cap;
};

static uint32_t crc_of(const unsigned char *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

static int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const char *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
    char *c = p;
    while (n) {
        ssize_t r = pread(fd, c, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int flush(jq_wal_t *w)
{
    if (fdatasync(w->fd) == 0)
        return 0;
    int e = errno;
    w->broken = true;
    return e;
}

/* Zero-filled space ahead of the frames, flushed with its size. */
static int grow_to(jq_wal_t *w, uint64_t want)
{
    static const unsigned char zeros[64 * 1024];
    uint64_t to = (want + JQ_WAL_GROW - 1) / JQ_WAL_GROW * JQ_WAL_GROW;
    for (uint64_t off = w->filled; off < to; off += sizeof zeros) {
        int rc = pwrite_all(w->fd, zeros, sizeof zeros, off);
        if (rc)
            return rc;
    }
    int rc = flush(w);
    if (rc == 0)
        w->filled = to;
    return rc;
}

static void encode_header(unsigned char *h, uint64_t generation, const jq_wal_checkpoint_t *cp)
{
    memcpy(h, "JQWH", 4);
    jq_put_be64(h + 8, generation);
    jq_put_be64(h + 16, cp->base);
    jq_put_be32(h + 24, cp->psize);
    jq_put_be32(h + 28, cp->clean);
    jq_put_be64(h + 32, cp->dev);
    jq_put_be64(h + 40, cp->ino);
    memcpy(h + META_AT, cp->meta[0], JQ_WAL_META_BYTES);
    memcpy(h + META_AT + JQ_WAL_META_BYTES, cp->meta[1], JQ_WAL_META_BYTES);
    jq_put_be32(h + 4, crc_of(h + 8, HEADER_BYTES - 8));
}

static bool decode_header(const unsigned char *h, uint64_t *generation, jq_wal_checkpoint_t *cp)
{
    if (memcmp(h, "JQWH", 4) != 0 || jq_get_be32(h + 4) != crc_of(h + 8, HEADER_BYTES - 8))
        return false;
    *generation = jq_get_be64(h + 8);
    cp->base = jq_get_be64(h + 16);
    cp->psize = jq_get_be32(h + 24);
    cp->clean = jq_get_be32(h + 28) != 0;
    cp->dev = jq_get_be64(h + 32);
    cp->ino = jq_get_be64(h + 40);
    /* A page size LMDB could have: meta page 1 is written there. */
    if (cp->psize < JQ_WAL_META_BYTES || cp->psize > 65536 || (cp->psize & (cp->psize - 1)))
        return false;
    memcpy(cp->meta[0], h + META_AT, JQ_WAL_META_BYTES);
    memcpy(cp->meta[1], h + META_AT + JQ_WAL_META_BYTES, JQ_WAL_META_BYTES);
    return true;
}

jq_wal_t *jq_wal_open(const char *dir, jq_wal_checkpoint_t *cp, bool *has_cp, char *err,
                      size_t errlen)
{
    jq_wal_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(w->path, sizeof w->path, "%s/wal", dir);
    struct stat st;
    bool existed = lstat(w->path, &st) == 0;
    if (existed && !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", w->path);
        free(w);
        return NULL;
    }
    w->fd = open(w->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", w->path, strerror(errno));
        free(w);
        return NULL;
    }
    if (!existed) { /* the name must survive a power cut before anything relies on it */
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    *has_cp = false;
    unsigned char h[2][HEADER_BYTES];
    uint64_t gen[2] = {0, 0};
    jq_wal_checkpoint_t c[2];
    bool ok[2] = {false, false};
    if (fstat(w->fd, &st) == 0)
        w->filled = (uint64_t)st.st_size;
    for (unsigned i = 0; i < 2; i++)
        ok[i] = w->filled >= FRAMES_AT && pread_all(w->fd, h[i], HEADER_BYTES, i * SLOT_BYTES) == 0 &&
                decode_header(h[i], &gen[i], &c[i]);
    if (ok[0] || ok[1]) {
        unsigned i = ok[0] && (!ok[1] || gen[0] > gen[1]) ? 0 : 1;
        w->slot = i;
        w->generation = gen[i];
        *cp = c[i];
        *has_cp = true;
        w->next = cp->base;
    } else {
        /* No checkpoint. Frames behind it mean one was written once (and
         * relied on): both slots damaged since. Without frames, the log
         * was cut while it was being made, before anything relied on it. */
        unsigned char magic[4];
        if (w->filled >= FRAMES_AT + 4 && pread_all(w->fd, magic, 4, FRAMES_AT) == 0 &&
            !memcmp(magic, "JQWF", 4)) {
            snprintf(err, errlen, "%s holds frames but no readable checkpoint: it is damaged. "
                                  "Move it away to use data.mdb as it is (what was acknowledged "
                                  "since its last checkpoint may be lost)", w->path);
            jq_wal_close(&w);
            return NULL;
        }
        w->filled = 0;
        if (ftruncate(w->fd, 0) < 0) {
            snprintf(err, errlen, "cannot reset %s: %s", w->path, strerror(errno));
            jq_wal_close(&w);
            return NULL;
        }
        w->slot = 1; /* the first checkpoint goes to slot 0 */
    }
    w->filled -= w->filled % JQ_WAL_GROW; /* a cut-off grow step is grown again */
    w->tail = FRAMES_AT;
    return w;
}

int jq_wal_remove(jq_wal_t **wp, const char *dir)
{
    jq_wal_t *w = *wp;
    /* Emptied and flushed first: should the unlink not survive a power
     * cut, an empty log is one with nothing to roll back. */
    int rc = ftruncate(w->fd, 0) == 0 && fdatasync(w->fd) == 0 ? 0 : errno;
    if (rc == 0 && unlink(w->path) < 0)
        rc = errno;
    if (rc == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    jq_wal_close(wp);
    return rc;
}

void jq_wal_close(jq_wal_t **wp)
{
    jq_wal_t *w = *wp;
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    free(w->buf);
    free(w);
    *wp = NULL;
}

uint64_t jq_wal_used(const jq_wal_t *w) { return w->tail - FRAMES_AT; }
bool jq_wal_broken(const jq_wal_t *w) { return w->broken; }

static size_t frame_bytes(const jq_change_t *head, size_t n, size_t *nrec)
{
    size_t b = FRAME_HEAD, k = 0;
    for (const jq_change_t *c = head; c && k < n; c = c->next, k++)
        b += RECORD_HEAD + c->len;
    *nrec = k;
    return b;
}

bool jq_wal_full(const jq_wal_t *w, size_t n, size_t bytes)
{
    return w->tail + FRAME_HEAD + n * RECORD_HEAD + bytes > WAL_MAX;
}

int jq_wal_append(jq_wal_t *w, uint64_t batch, const jq_change_t *head, size_t n)
{
    size_t nrec;
    size_t len = frame_bytes(head, n, &nrec);
    if (w->broken)
        return EIO;
    if (batch != w->next)
        return EINVAL;
    if (w->tail + len > WAL_MAX)
        return ENOSPC;
    if (len > w->cap) {
        size_t cap = w->cap ? w->cap : 65536;
        while (cap < len)
            cap *= 2;
        unsigned char *b = realloc(w->buf, cap);
        if (!b)
            return ENOMEM;
        w->buf = b;
        w->cap = cap;
    }
    unsigned char *p = w->buf;
    memcpy(p, "JQWF", 4);
    jq_put_be64(p + 8, w->generation);
    jq_put_be64(p + 16, batch);
    jq_put_be32(p + 24, (uint32_t)nrec);
    jq_put_be32(p + 28, (uint32_t)(len - FRAME_HEAD));
    unsigned char *q = p + FRAME_HEAD;
    size_t k = 0;
    for (const jq_change_t *c = head; c && k < nrec; c = c->next, k++) {
        jq_put_be64(q, c->job_id);
        jq_put_be64(q + 8, c->serial);
        q[16] = c->kind;
        jq_put_be32(q + 17, c->len);
        memcpy(q + RECORD_HEAD, c->data, c->len);
        q += RECORD_HEAD + c->len;
    }
    jq_put_be32(p + 4, crc_of(p + 8, len - 8));
    int rc = 0;
    if (w->tail + len > w->filled)
        rc = grow_to(w, w->tail + len);
    if (rc == 0)
        rc = pwrite_all(w->fd, p, len, w->tail);
    if (rc == 0)
        rc = flush(w);
    if (rc)
        return rc;
    w->tail += len;
    w->next = batch + 1;
    return 0;
}

int jq_wal_checkpoint(jq_wal_t *w, const jq_wal_checkpoint_t *cp)
{
    unsigned char h[HEADER_BYTES];
    unsigned slot = w->slot ^ 1;
    if (w->broken)
        return EIO;
    encode_header(h, w->generation + 1, cp);
    int rc = 0;
    if (w->filled < FRAMES_AT + FRAME_HEAD)
        rc = grow_to(w, FRAMES_AT + FRAME_HEAD);
    if (rc == 0 && (rc = pwrite_all(w->fd, h, sizeof h, slot * SLOT_BYTES)) != 0)
        w->broken = true; /* part of it, or all, may be in the slot */
    if (rc == 0)
        rc = flush(w);
    if (rc)
        return rc;
    w->generation++;
    w->slot = slot;
    w->next = cp->base;
    w->tail = FRAMES_AT;
    return 0;
}

/* One frame at w->tail into a record list; 0, 1 at the end of the log,
 * or -1 out of memory. */
static int read_frame(jq_wal_t *w, jq_change_t **head, size_t *n)
{
    unsigned char fh[FRAME_HEAD];
    *head = NULL;
    *n = 0;
    if (w->tail + FRAME_HEAD > w->filled || pread_all(w->fd, fh, FRAME_HEAD, w->tail) < 0)
        return 1;
    uint64_t len = (uint64_t)jq_get_be32(fh + 28) + FRAME_HEAD;
    if (len > WAL_MAX || memcmp(fh, "JQWF", 4) != 0 || jq_get_be64(fh + 8) != w->generation ||
        jq_get_be64(fh + 16) != w->next || w->tail + len > w->filled)
        return 1;
    unsigned char *p = malloc(len);
    if (!p)
        return -1;
    if (pread_all(w->fd, p, len, w->tail) < 0 || jq_get_be32(p + 4) != crc_of(p + 8, len - 8)) {
        free(p);
        return 1; /* torn: the flush of this frame never completed */
    }
    uint32_t nrec = jq_get_be32(p + 24);
    const unsigned char *q = p + FRAME_HEAD, *end = p + len;
    jq_change_t **tailp = head;
    int rc = 0;
    for (uint32_t i = 0; i < nrec; i++) {
        uint32_t dlen = end - q >= RECORD_HEAD ? jq_get_be32(q + 17) : 0;
        if (end - q < RECORD_HEAD || (uint64_t)(end - q - RECORD_HEAD) < dlen) {
            rc = 1; /* a frame whose crc matched but whose records do not add up */
            break;
        }
        jq_change_t *c = calloc(1, sizeof *c + dlen + 1);
        if (!c) {
            rc = -1;
            break;
        }
        c->job_id = jq_get_be64(q);
        c->serial = jq_get_be64(q + 8);
        c->kind = q[16];
        c->len = dlen;
        memcpy(c->data, q + RECORD_HEAD, dlen);
        *tailp = c;
        tailp = &c->next;
        (*n)++;
        q += RECORD_HEAD + dlen;
    }
    free(p);
    if (rc) {
        jq_change_list_free(head);
        *n = 0;
        return rc;
    }
    w->tail += len;
    w->next++;
    return 0;
}

int jq_wal_replay(jq_wal_t *w, jq_wal_frame_fn fn, void *ctx, uint64_t *frames, char *err,
                  size_t errlen)
{
    *frames = 0;
    for (;;) {
        jq_change_t *head;
        size_t n;
        uint64_t batch = w->next;
        int rc = read_frame(w, &head, &n);
        if (rc < 0) {
            snprintf(err, errlen, "out of memory reading %s", w->path);
            return -1;
        }
        if (rc > 0)
            return 0;
        if (fn(ctx, batch, head, n, err, errlen) < 0)
            return -1;
        (*frames)++;
    }
}

/* ---- LMDB's meta pages ---- */

static uint64_t meta_txnid(const unsigned char *m)
{
    uint64_t t;
    memcpy(&t, m + META_TXNID_AT, sizeof t);
    return t;
}

static bool meta_ok(const unsigned char *m)
{
    uint16_t flags;
    uint32_t magic;
    memcpy(&flags, m + META_FLAGS_AT, sizeof flags);
    memcpy(&magic, m + META_MAGIC_AT, sizeof magic);
    return sizeof(void *) == 8 && (flags & P_META) && magic == LMDB_MAGIC;
}

int jq_wal_read_meta(const char *dir, jq_wal_checkpoint_t *cp, uint64_t *txnid)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return -2;
    }
    cp->dev = (uint64_t)st.st_dev;
    cp->ino = (uint64_t)st.st_ino;
    int rc = pread_all(fd, cp->meta[0], JQ_WAL_META_BYTES, 0);
    uint32_t psize = 0;
    if (rc < 0) {
        rc = -2;
    } else if (meta_ok(cp->meta[0])) {
        memcpy(&psize, cp->meta[0] + META_PSIZE_AT, sizeof psize);
        rc = psize >= JQ_WAL_META_BYTES && psize <= 65536 && !(psize & (psize - 1)) ?
                 (pread_all(fd, cp->meta[1], JQ_WAL_META_BYTES, psize) < 0 ? -2 : 0) : -1;
    } else {
        rc = -1;
    }
    close(fd);
    if (rc < 0)
        return rc;
    if (!meta_ok(cp->meta[1]))
        return -1;
    cp->psize = psize;
    uint64_t a = meta_txnid(cp->meta[0]), b = meta_txnid(cp->meta[1]);
    *txnid = a > b ? a : b;
    return 0;
}

int jq_wal_restore_meta(const char *dir, const jq_wal_checkpoint_t *cp, char *err,
                        size_t errlen)
{
    jq_wal_checkpoint_t now;
    uint64_t now_txnid = 0, a = meta_txnid(cp->meta[0]), b = meta_txnid(cp->meta[1]);
    uint64_t cp_txnid = a > b ? a : b;
    if (!meta_ok(cp->meta[0]) || !meta_ok(cp->meta[1])) {
        snprintf(err, errlen, "%s/wal: its checkpoint is damaged", dir);
        return -1;
    }
    /* Meta pages that do not read (torn by a power cut while LMDB wrote
     * one, say) are what the checkpoint's copies are for. */
    int got = jq_wal_read_meta(dir, &now, &now_txnid);
    bool readable = got == 0;
    if (got == -2) {
        snprintf(err, errlen, "cannot read %s/data.mdb: %s", dir, strerror(errno));
        return -1;
    }
    /* The same file (not a copy put in its place) at the same or a later
     * transaction: only then are the checkpoint's pages in it, pinned. */
    if (now.dev != cp->dev || now.ino != cp->ino ||
        (readable && (now_txnid < cp_txnid || now.psize != cp->psize))) {
        snprintf(err, errlen, "%s/wal goes with another data.mdb than the one in %s (its "
                              "checkpoint is of transaction %llu, the file has %llu%s): the "
                              "file was replaced. Put back the data.mdb that goes with this "
                              "wal, or move wal away to use the file as it is",
                 dir, dir, (unsigned long long)cp_txnid, (unsigned long long)now_txnid,
                 now.dev != cp->dev || now.ino != cp->ino ? ", and it is another file" : "");
        return -1;
    }
    if (readable && !memcmp(now.meta, cp->meta, sizeof now.meta))
        return 0; /* nothing was committed since the checkpoint */
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    int rc = fd < 0 ? errno : 0;
    if (rc == 0)
        rc = pwrite_all(fd, cp->meta[0], JQ_WAL_META_BYTES, 0);
    if (rc == 0)
        rc = pwrite_all(fd, cp->meta[1], JQ_WAL_META_BYTES, cp->psize);
    if (rc == 0 && fdatasync(fd) < 0)
        rc = errno;
    if (fd >= 0)
        close(fd);
    if (rc) {
        snprintf(err, errlen, "cannot roll %s back to its last checkpoint: %s", path,
                 strerror(rc));
        return -1;
    }
    jq_log(JQ_LOG_NOTICE, "store: rolled back to the checkpoint of transaction %llu (the "
                          "last stop was not clean); replaying the write-ahead log",
           (unsigned long long)cp_txnid);
    return 0;
}
