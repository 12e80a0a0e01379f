/* test_wal.c: the write-ahead log (queue/wal.c) on its own: frames come
 * back in order, byte for byte, after a reopen; a torn or bit-flipped last
 * frame ends the replay there; a checkpoint starts a new generation whose
 * replay never reaches the older frames behind it; a damaged header slot
 * falls back to the other one, and a log with frames but no readable
 * header is refused; the log refuses a frame past its largest size; and
 * LMDB's meta pages are read from a real store, put back after being
 * garbled, and refused when the store file is newer than the log or is
 * another file put in its place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal.h"

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static int setup(void **state)
{
    char *dir = strdup("/tmp/jq-wal-XXXXXX");
    if (!dir || !mkdtemp(dir))
        return -1;
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    nftw(*state, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

/* A list of n records, record i holding `tag` and i in its bytes. */
static jq_change_t *records(int tag, size_t n)
{
    jq_change_t *head = NULL, **tail = &head;
    for (size_t i = 0; i < n; i++) {
        char text[64];
        int len = snprintf(text, sizeof text, "rec-%d-%zu", tag, i);
        jq_change_t *c = calloc(1, sizeof *c + (size_t)len + 1);
        assert_non_null(c);
        c->job_id = (uint64_t)tag * 1000 + i;
        c->serial = i + 1;
        c->kind = (uint8_t)(i % 3);
        c->len = (uint32_t)len;
        memcpy(c->data, text, (size_t)len);
        *tail = c;
        tail = &c->next;
    }
    return head;
}

typedef struct {
    uint64_t batches[64];
    int tags[64];
    size_t n;
} seen_t;

static int collect(void *ctx, uint64_t batch, jq_change_t *head, size_t n, char *err,
                   size_t errlen)
{
    (void)err;
    (void)errlen;
    seen_t *s = ctx;
    assert_true(s->n < 64);
    /* Each record as written: tag from the first one's job id. */
    int tag = (int)(head->job_id / 1000);
    size_t i = 0;
    for (jq_change_t *c = head; c; c = c->next, i++) {
        char text[64];
        int len = snprintf(text, sizeof text, "rec-%d-%zu", tag, i);
        assert_int_equal(c->job_id, (uint64_t)tag * 1000 + i);
        assert_int_equal(c->serial, i + 1);
        assert_int_equal(c->kind, i % 3);
        assert_int_equal(c->len, (uint32_t)len);
        assert_memory_equal(c->data, text, (size_t)len);
    }
    assert_int_equal(i, n);
    s->batches[s->n] = batch;
    s->tags[s->n++] = tag;
    jq_change_list_free(&head);
    return 0;
}

static jq_wal_checkpoint_t checkpoint_at(uint64_t base)
{
    jq_wal_checkpoint_t cp;
    memset(&cp, 0, sizeof cp);
    cp.base = base;
    cp.psize = 4096;
    memset(cp.meta[0], 0xa5, sizeof cp.meta[0]);
    return cp;
}

static void append(jq_wal_t *w, uint64_t batch, int tag, size_t n)
{
    jq_change_t *r = records(tag, n);
    assert_int_equal(jq_wal_append(w, batch, r, n), 0);
    jq_change_list_free(&r);
}

static seen_t reopen_and_replay(const char *dir, uint64_t *base)
{
    jq_wal_checkpoint_t cp;
    bool has;
    char err[256];
    jq_wal_t *w = jq_wal_open(dir, &cp, &has, err, sizeof err);
    assert_non_null(w);
    assert_true(has);
    *base = cp.base;
    seen_t s = {.n = 0};
    uint64_t frames;
    assert_int_equal(jq_wal_replay(w, collect, &s, &frames, err, sizeof err), 0);
    assert_int_equal(frames, s.n);
    jq_wal_close(&w);
    return s;
}

static jq_wal_t *new_log(const char *dir, uint64_t base)
{
    jq_wal_checkpoint_t cp;
    bool has = true;
    char err[256];
    jq_wal_t *w = jq_wal_open(dir, &cp, &has, err, sizeof err);
    assert_non_null(w);
    assert_false(has);
    jq_wal_checkpoint_t first = checkpoint_at(base);
    assert_int_equal(jq_wal_checkpoint(w, &first), 0);
    return w;
}

static void test_frames_come_back_in_order(void **state)
{
    const char *dir = *state;
    jq_wal_t *w = new_log(dir, 5);
    append(w, 5, 1, 3);
    append(w, 6, 2, 1);
    append(w, 7, 3, 40);
    /* Out of sequence: refused, nothing written. */
    jq_change_t *r = records(9, 1);
    assert_int_equal(jq_wal_append(w, 9, r, 1), EINVAL);
    jq_change_list_free(&r);
    jq_wal_close(&w);
    uint64_t base;
    seen_t s = reopen_and_replay(dir, &base);
    assert_int_equal(base, 5);
    assert_int_equal(s.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(s.batches[i], 5 + i);
        assert_int_equal(s.tags[i], (int)i + 1);
    }
}

static uint64_t frame_end(const char *dir)
{
    /* Where the zeros after the last frame start. */
    char path[512];
    snprintf(path, sizeof path, "%s/wal", dir);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    unsigned char buf[65536];
    ssize_t n = pread(fd, buf, sizeof buf, 8192);
    close(fd);
    assert_true(n > 0);
    ssize_t end = n;
    while (end > 0 && buf[end - 1] == 0)
        end--;
    return 8192 + (uint64_t)end;
}

static void poke(const char *dir, uint64_t off, unsigned char xor)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wal", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= xor;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static void test_torn_or_flipped_last_frame_ends_replay(void **state)
{
    const char *dir = *state;
    jq_wal_t *w = new_log(dir, 1);
    append(w, 1, 1, 2);
    append(w, 2, 2, 2);
    jq_wal_close(&w);
    uint64_t end = frame_end(dir);
    /* A bit flipped in the last frame's last byte: the frame is not there. */
    poke(dir, end - 1, 0x10);
    uint64_t base;
    seen_t s = reopen_and_replay(dir, &base);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.tags[0], 1);
    /* Restored, then cut in the middle (zeros where its end should be). */
    poke(dir, end - 1, 0x10);
    s = reopen_and_replay(dir, &base);
    assert_int_equal(s.n, 2);
    char path[512];
    snprintf(path, sizeof path, "%s/wal", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char zeros[8] = {0};
    assert_int_equal(pwrite(fd, zeros, sizeof zeros, (off_t)(end - 8)), 8);
    close(fd);
    s = reopen_and_replay(dir, &base);
    assert_int_equal(s.n, 1);
}

static void test_checkpoint_starts_a_new_generation(void **state)
{
    const char *dir = *state;
    jq_wal_t *w = new_log(dir, 1);
    for (int i = 1; i <= 4; i++)
        append(w, (uint64_t)i, i, 3);
    jq_wal_checkpoint_t cp = checkpoint_at(5);
    assert_int_equal(jq_wal_checkpoint(w, &cp), 0);
    /* One frame of the new generation; the older 2nd to 4th lie behind
     * it, and they even carry the next batch numbers: still not replayed. */
    append(w, 5, 7, 1);
    jq_wal_close(&w);
    uint64_t base;
    seen_t s = reopen_and_replay(dir, &base);
    assert_int_equal(base, 5);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.tags[0], 7);
    /* The new header's slot damaged: the older checkpoint (slot 0) is
     * read, and its generation's frames were overwritten at their start:
     * the replay stops at once. */
    poke(dir, 4096 + 40, 0xff);
    s = reopen_and_replay(dir, &base);
    assert_int_equal(base, 1);
    assert_int_equal(s.n, 0);
}

static void test_full_log_refuses(void **state)
{
    const char *dir = *state;
    jq_wal_t *w = new_log(dir, 1);
    assert_false(jq_wal_full(w, 10, 1000));
    assert_true(jq_wal_full(w, 1, 64u << 20));
    /* One record bigger than the whole log. */
    jq_change_t *c = calloc(1, sizeof *c + (64u << 20));
    assert_non_null(c);
    c->job_id = 1;
    c->len = 64u << 20;
    assert_int_equal(jq_wal_append(w, 1, c, 1), ENOSPC);
    free(c);
    assert_int_equal(jq_wal_used(w), 0);
    jq_wal_close(&w);
}

/* A real LMDB store with n commits. */
static void lmdb_commits(const char *dir, int n)
{
    MDB_env *env;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    for (int i = 0; i < n; i++) {
        MDB_txn *txn;
        MDB_dbi dbi;
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        MDB_val key = {strlen(k), k}, val = {2, "v!"};
        assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
        assert_int_equal(mdb_txn_commit(txn), 0);
    }
    mdb_env_close(env);
}

static void test_meta_pages_read_and_put_back(void **state)
{
    const char *dir = *state;
    lmdb_commits(dir, 3);
    jq_wal_checkpoint_t cp;
    uint64_t txnid;
    assert_int_equal(jq_wal_read_meta(dir, &cp, &txnid), 0);
    assert_int_equal(txnid, 3);
    assert_int_equal(cp.psize, (uint32_t)sysconf(_SC_PAGESIZE));
    /* Nothing since: nothing to put back. */
    char err[512];
    assert_int_equal(jq_wal_restore_meta(dir, &cp, err, sizeof err), 0);
    /* Two more commits, then both meta pages garbled: put back, LMDB
     * opens at the checkpoint's transaction. */
    lmdb_commits(dir, 2);
    char path[512];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char junk[100];
    memset(junk, 0x5a, sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 16), (ssize_t)sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, (off_t)cp.psize + 16), (ssize_t)sizeof junk);
    close(fd);
    assert_int_equal(jq_wal_restore_meta(dir, &cp, err, sizeof err), 0);
    jq_wal_checkpoint_t now;
    assert_int_equal(jq_wal_read_meta(dir, &now, &txnid), 0);
    assert_int_equal(txnid, 3);
    MDB_env *env;
    MDB_envinfo info;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_env_info(env, &info), 0);
    assert_int_equal(info.me_last_txnid, 3);
    mdb_env_close(env);
    /* A checkpoint of a later transaction than the file holds: the file
     * was replaced; refused. */
    jq_wal_checkpoint_t newer = cp;
    unsigned char big[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    memcpy(newer.meta[0] + 144, big, 8);
    assert_int_equal(jq_wal_restore_meta(dir, &newer, err, sizeof err), -1);
    assert_non_null(strstr(err, "the file was replaced"));
    /* The same bytes in another file put in its place (a copy restored
     * from a backup, say): refused, and its meta pages left alone. */
    char copy[512];
    snprintf(copy, sizeof copy, "%s/data.mdb.copy", dir);
    FILE *in = fopen(path, "rb"), *out = fopen(copy, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    assert_int_equal(rename(copy, path), 0);
    lmdb_commits(dir, 1);
    assert_int_equal(jq_wal_restore_meta(dir, &cp, err, sizeof err), -1);
    assert_non_null(strstr(err, "another file"));
    assert_int_equal(jq_wal_read_meta(dir, &now, &txnid), 0);
    assert_int_equal(txnid, 4);
}

static void test_frames_without_a_checkpoint_are_refused(void **state)
{
    const char *dir = *state;
    jq_wal_t *w = new_log(dir, 1);
    append(w, 1, 1, 2);
    jq_wal_close(&w);
    /* Both header slots damaged: frames are there, so a checkpoint was
     * relied on; the log is refused, not emptied. */
    poke(dir, 8, 0xff);
    poke(dir, 4096 + 8, 0xff);
    jq_wal_checkpoint_t cp;
    bool has;
    char err[512];
    assert_null(jq_wal_open(dir, &cp, &has, err, sizeof err));
    assert_non_null(strstr(err, "no readable checkpoint"));
    /* A log cut while it was made (zeros, no frame): taken as new. */
    char path[512];
    snprintf(path, sizeof path, "%s/wal", dir);
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(truncate(path, 1 << 20), 0);
    w = jq_wal_open(dir, &cp, &has, err, sizeof err);
    assert_non_null(w);
    assert_false(has);
    jq_wal_close(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_frames_come_back_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_or_flipped_last_frame_ends_replay, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_starts_a_new_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_log_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meta_pages_read_and_put_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frames_without_a_checkpoint_are_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
