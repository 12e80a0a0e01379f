/* storecheck.c: opening the store safely — value checksums, the store's
 * name beside its file, the start-up check in a child process, the
 * upgrade from format 1 and --salvage.
 *
 * Why a child: LMDB trusts its file. A flipped byte in a page header or a
 * branch pointer makes it read past the end of the map (SIGBUS, SIGSEGV)
 * or walk in circles, and it keeps no checksums of its own. So before the
 * daemon maps the file, a forked child reads every page the daemon could
 * ever read and checks every value's checksum; if the child dies, hangs or
 * finds damage, the daemon refuses to start and says which — it never
 * serves what it cannot vouch for, and never crashes on it. The child runs
 * before any thread is started. */
#include "jobcodec.h"
#include "log.h"
#include "storeint.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* A child that reports no progress for this long is taken to hang. */
#define CHECK_STALL_SECONDS 60
/* Progress lines from the child at most this often (and after every
 * record that took longer: one huge value read from a cold disk is slow,
 * not a hang). */
#define CHECK_PROGRESS_US 500000
#define STORE_ID_BYTES 16

/* ---- checksummed values ---- */

static uint32_t crc_of(const void *key, size_t klen, const void *payload, size_t plen)
{
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, key, (uInt)klen);
    /* zlib takes 32-bit lengths: feed large payloads in pieces. */
    const unsigned char *p = payload;
    while (plen) {
        uInt n = plen > (1u << 30) ? (1u << 30) : (uInt)plen;
        c = crc32(c, p, n);
        p += n;
        plen -= n;
    }
    return (uint32_t)c;
}

int jq_store_put(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, const void *hdr,
                 size_t hlen, const void *data, size_t dlen)
{
    MDB_val k = {klen, (void *)key}, v = {JQ_STORE_CRC_BYTES + hlen + dlen, NULL};
    int rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
    if (rc)
        return rc;
    unsigned char *p = v.mv_data;
    if (hlen)
        memcpy(p + JQ_STORE_CRC_BYTES, hdr, hlen);
    if (dlen)
        memcpy(p + JQ_STORE_CRC_BYTES + hlen, data, dlen);
    jq_put_be32(p, crc_of(key, klen, p + JQ_STORE_CRC_BYTES, hlen + dlen));
    return 0;
}

int jq_store_verify(const MDB_val *k, const MDB_val *v, const unsigned char **payload,
                    size_t *len)
{
    if (v->mv_size < JQ_STORE_CRC_BYTES)
        return -1;
    const unsigned char *p = v->mv_data;
    size_t n = v->mv_size - JQ_STORE_CRC_BYTES;
    if (jq_get_be32(p) != crc_of(k->mv_data, k->mv_size, p + JQ_STORE_CRC_BYTES, n))
        return -1;
    *payload = p + JQ_STORE_CRC_BYTES;
    *len = n;
    return 0;
}

/* The entry must be exactly one msgpack array [serial, ts, type, msg]
 * whose serial is the key's: anything else would be served as garbage. */
static int check_entry(const unsigned char *e, size_t len, uint32_t serial)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int64_t got;
    int rc = msgpack_unpack_next(&up, (const char *)e, len, &off) == MSGPACK_UNPACK_SUCCESS &&
                     off == len && up.data.type == MSGPACK_OBJECT_ARRAY &&
                     up.data.via.array.size == 4 &&
                     wire_get_int(&up.data.via.array.ptr[0], &got) && got == serial
                 ? 0
                 : -1;
    msgpack_unpacked_destroy(&up);
    return rc;
}

int jq_store_log_entry(const MDB_val *k, const MDB_val *v, uint32_t *op,
                       const unsigned char **entry, size_t *len)
{
    const unsigned char *p;
    size_t n;
    if (k->mv_size != 12 || jq_store_verify(k, v, &p, &n) < 0 || n < 3)
        return -1;
    uint32_t serial = jq_get_be32((const unsigned char *)k->mv_data + 8);
    if (serial == 0 || check_entry(p + 2, n - 2, serial) < 0)
        return -1;
    *op = (uint32_t)(p[0] << 8 | p[1]);
    *entry = p + 2;
    *len = n - 2;
    return 0;
}

int jq_store_meta_get(jq_store_t *s, MDB_txn *txn, const char *key, void *out, size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, s->meta, &k, &v);
    if (rc)
        return rc;
    const unsigned char *p;
    size_t n;
    if (jq_store_verify(&k, &v, &p, &n) < 0 || n != len)
        return -1;
    memcpy(out, p, len);
    return 0;
}

int jq_store_meta_put(jq_store_t *s, MDB_txn *txn, const char *key, const void *val, size_t len)
{
    return jq_store_put(txn, s->meta, key, strlen(key), NULL, 0, val, len);
}

/* ---- the store's name, beside its file ---- */

static void path_in(const jq_store_t *s, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", s->opts.dir, name);
}

static void hex(const unsigned char *id, char out[2 * STORE_ID_BYTES + 1])
{
    for (int i = 0; i < STORE_ID_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* 1 read, 0 no such file, -1 unreadable (message in err). */
static int read_store_id(const jq_store_t *s, unsigned char id[STORE_ID_BYTES], char *err,
                         size_t errlen)
{
    char path[4200], text[64];
    path_in(s, "store.id", path, sizeof path);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    unsigned v;
    for (int i = 0; n >= 2 * STORE_ID_BYTES && i < STORE_ID_BYTES; i++) {
        if (sscanf(text + 2 * i, "%2x", &v) != 1) {
            n = -1;
            break;
        }
        id[i] = (unsigned char)v;
    }
    if (n < 2 * STORE_ID_BYTES) {
        snprintf(err, errlen, "%s is damaged (it should hold the store's id in hex)", path);
        return -1;
    }
    return 1;
}

static int write_store_id(const jq_store_t *s, const unsigned char id[STORE_ID_BYTES], char *err,
                          size_t errlen)
{
    char path[4200], text[2 * STORE_ID_BYTES + 2];
    path_in(s, "store.id", path, sizeof path);
    hex(id, text);
    strcat(text, "\n");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
    bool ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) &&
              fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    int dfd = open(s->opts.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the new name must survive a power cut too */
        close(dfd);
    }
    if (!ok)
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return ok ? 0 : -1;
}

/* ---- before LMDB sees the file ---- */

int jq_store_precheck(jq_store_t *s, bool *fresh, char *err, size_t errlen)
{
    char path[4200];
    path_in(s, "data.mdb", path, sizeof path);
    struct stat st;
    unsigned char id[STORE_ID_BYTES];
    int have_id = read_store_id(s, id, err, errlen);
    if (have_id < 0)
        return -1;
    bool missing = lstat(path, &st) < 0;
    if (missing && errno != ENOENT) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (!missing && !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        return -1;
    }
    if (missing || st.st_size == 0) {
        if (have_id) {
            char h[2 * STORE_ID_BYTES + 1];
            hex(id, h);
            snprintf(err, errlen,
                     "%s is %s, but %s/store.id says store %s was created here: the store "
                     "was lost, not never made. Restore data.mdb from a backup, or move %s "
                     "away to start with an empty queue",
                     path, missing ? "missing" : "empty", s->opts.dir, h, s->opts.dir);
            return -1;
        }
        *fresh = true;
        return 0;
    }
    /* Two meta pages at least; anything shorter was cut. */
    if (st.st_size < 8192) {
        snprintf(err, errlen, "%s is truncated (%lld bytes): restore it from a backup", path,
                 (long long)st.st_size);
        return -1;
    }
    *fresh = false;
    return 0;
}

/* The file must hold every page the meta page says is in use. */
static int check_size(MDB_env *env, const char *dir, char *err, size_t errlen)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fs;
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 || stat(path, &fs) < 0)
        return 0;
    uint64_t need = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fs.st_size < need) {
        snprintf(err, errlen, "%s is truncated: %lld bytes, but its pages in use need %llu; "
                              "restore it from a backup",
                 path, (long long)fs.st_size, (unsigned long long)need);
        return -1;
    }
    return 0;
}

/* ---- the child's walk ---- */

typedef struct {
    int fd;            /* to the parent */
    int64_t last_said; /* CLOCK_MONOTONIC µs of the last progress line */
    uint64_t records;
    uint32_t format;
    bool salvage;
    uint64_t damaged;
} walk_t;

static void say(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(walk_t *w, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t r = write(w->fd, line, (size_t)n);
    (void)r;
}

static void progress(walk_t *w)
{
    w->records++;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (now - w->last_said >= CHECK_PROGRESS_US) {
        say(w, "P %llu", (unsigned long long)w->records);
        w->last_said = now;
    }
}

static void key_text(const MDB_val *k, char *out, size_t len)
{
    size_t n = 0;
    const unsigned char *p = k->mv_data;
    for (size_t i = 0; i < k->mv_size && n + 3 < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%02x", p[i]);
    out[n] = '\0';
}

/* Why a value is damaged, or NULL when it is sound. */
static const char *judge(const char *db, const MDB_val *k, const MDB_val *v, uint32_t format)
{
    const unsigned char *p = v->mv_data;
    size_t n = v->mv_size;
    bool is_log = !strcmp(db, "logs"), is_job = !strcmp(db, "jobs") || !strcmp(db, "archive");
    if (format >= 2 && !is_log && jq_store_verify(k, v, &p, &n) < 0)
        return "fails its checksum";
    if (is_log) {
        uint32_t op;
        const unsigned char *e;
        size_t len;
        if (format >= 2)
            return jq_store_log_entry(k, v, &op, &e, &len) < 0 ? "fails its checksum" : NULL;
        if (k->mv_size != 12 || n < 3 ||
            check_entry(p + 2, n - 2, jq_get_be32((const unsigned char *)k->mv_data + 8)) < 0)
            return "is not a log entry";
        return NULL;
    }
    if (is_job) {
        if (k->mv_size != 8)
            return "has a key that is not a job id";
        if (format >= 2) {
            if (n < 2 || p[0] >= JQ_STATUS__COUNT)
                return "is not a stored job";
            p++;
            n--;
        }
        char why[128];
        jq_job_t *job = jq_job_decode(p, n, why, sizeof why);
        bool ok = job && job->id == jq_get_be64(k->mv_data);
        jq_job_destroy(&job);
        return ok ? NULL : "is not a stored job";
    }
    return NULL;
}

/* Walk one database: every page LMDB has to read, every value judged. */
static int walk_db(walk_t *w, MDB_txn *txn, MDB_dbi dbi, const char *name)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) {
        say(w, "F the store's %s table cannot be read: %s", name, mdb_strerror(rc));
        return -1;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        progress(w);
        if (dbi < 2)
            continue; /* LMDB's own free list and table of tables */
        const char *why = judge(name, &k, &v, w->format);
        if (!why)
            continue;
        char kt[80];
        key_text(&k, kt, sizeof kt);
        w->damaged++;
        say(w, "D the store is damaged: the record %s/%s %s", name, kt, why);
        if (!w->salvage) {
            mdb_cursor_close(cur);
            return -1;
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        say(w, "F the store's %s table cannot be read: %s", name, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

static int child_walk(const jq_store_opts_t *o, walk_t *w)
{
    MDB_env *env;
    MDB_txn *txn;
    char err[512];
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 8);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, o->map_size);
    /* No lock file: the data directory's lock keeps writers out, and a
     * planted or damaged lock.mdb must not be touched before it is judged. */
    if (rc == 0)
        rc = mdb_env_open(env, o->dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0640);
    if (rc) {
        say(w, "F cannot open the store in %s: %s%s", o->dir, mdb_strerror(rc),
            rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? " (damaged, or not an LMDB store)"
                                                            : "");
        return -1;
    }
    if (check_size(env, o->dir, err, sizeof err) < 0) {
        say(w, "F %s", err);
        return -1;
    }
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) {
        say(w, "F cannot read the store: %s", mdb_strerror(rc));
        return -1;
    }
    if (walk_db(w, txn, 0, "free") < 0 || walk_db(w, txn, 1, "main") < 0)
        return -1;
    MDB_dbi meta;
    if (mdb_dbi_open(txn, "meta", 0, &meta) != 0) {
        say(w, "F the store in %s is damaged or not jobq's (it has no meta table)", o->dir);
        return -1;
    }
    MDB_val k = {6, "format"}, v;
    if (mdb_get(txn, meta, &k, &v) != 0) {
        say(w, "F the store in %s has no format record", o->dir);
        return -1;
    }
    const unsigned char *p;
    size_t n;
    if (v.mv_size == 4) {
        memcpy(&w->format, v.mv_data, 4); /* format 1: no checksums yet */
    } else if (jq_store_verify(&k, &v, &p, &n) == 0 && n == 4) {
        memcpy(&w->format, p, 4);
    } else {
        say(w, "F the store is damaged: its format record fails its checksum");
        return -1;
    }
    if (w->format > JQ_STORE_FORMAT)
        return 0; /* the parent refuses it, with the versions */
    static const char *const tables[] = {"meta", "jobs", "archive", "logs"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        MDB_dbi dbi;
        if (mdb_dbi_open(txn, tables[i], 0, &dbi) != 0)
            continue; /* created when first written */
        if (walk_db(w, txn, dbi, tables[i]) < 0)
            return -1;
    }
    return 0;
}

/* A line of the child's report, cut to fit (the start says what it is). */
static void copy_line(char *dst, size_t len, const char *line)
{
    size_t n = strnlen(line, len - 1);
    memcpy(dst, line, n);
    dst[n] = '\0';
}

int jq_store_check_in_child(jq_store_t *s, char *err, size_t errlen)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "cannot check the store: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot check the store: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        /* The child speaks through the pipe. A damaged store may crash
         * LMDB here, which is how the parent learns of it: a sanitizer's
         * report of that crash would only be noise on the daemon's
         * stderr. */
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (devnull >= 0) {
            dup2(devnull, STDERR_FILENO);
            close(devnull);
        }
        walk_t w = {.fd = fds[1], .salvage = s->opts.salvage};
        int rc = child_walk(&s->opts, &w);
        if (rc == 0)
            say(&w, "OK %llu %llu", (unsigned long long)w.records, (unsigned long long)w.damaged);
        _exit(rc == 0 ? 0 : 1);
    }
    close(fds[1]);
    char buf[8192], first_bad[600] = "", last[600] = "";
    size_t have = 0;
    bool ok = false, hung = false;
    int64_t stall_ms = CHECK_STALL_SECONDS * 1000;
    for (;;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int r = poll(&pfd, 1, (int)stall_ms);
        if (r == 0) {
            hung = true;
            kill(pid, SIGKILL);
            break;
        }
        if (r < 0 && errno == EINTR)
            continue;
        ssize_t n = read(fds[0], buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            if (!strncmp(line, "OK", 2))
                ok = true;
            else if ((line[0] == 'D' || line[0] == 'F') && !first_bad[0])
                copy_line(first_bad, sizeof first_bad, line + 2);
            copy_line(last, sizeof last, line);
            line = nl + 1;
        }
        have = strlen(line);
        memmove(buf, line, have + 1);
        if (have == sizeof buf - 1)
            have = 0; /* a line that long is noise */
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (hung) {
        snprintf(err, errlen, "the store in %s is damaged: reading it made no progress for %d s "
                              "(a loop in its pages); restore it from a backup",
                 s->opts.dir, CHECK_STALL_SECONDS);
        return -1;
    }
    if (WIFSIGNALED(status)) {
        snprintf(err, errlen, "the store in %s is damaged: reading it crashed (%s) after %s; "
                              "restore it from a backup",
                 s->opts.dir, strsignal(WTERMSIG(status)), last[0] ? last : "no record");
        return -1;
    }
    if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (first_bad[0] && !strncmp(first_bad, "the store is damaged: the record", 32))
            snprintf(err, errlen, "%s; start with --salvage to move damaged records aside",
                     first_bad);
        else
            snprintf(err, errlen, "%s", first_bad[0] ? first_bad : "the store check failed");
        return -1;
    }
    return 0;
}

/* ---- this process's environment ---- */

/* Rewrite every value of a format 1 table with its checksum (and, for
 * jobs, the status byte in front). */
static int upgrade_table(MDB_txn *txn, MDB_dbi dbi, bool jobs, bool salvage, msgpack_sbuffer *sb)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        msgpack_sbuffer_clear(sb);
        unsigned char crc[JQ_STORE_CRC_BYTES] = {0}, st = 0;
        msgpack_sbuffer_write(sb, (const char *)crc, sizeof crc);
        if (jobs) {
            char why[128];
            jq_job_t *job = jq_job_decode(v.mv_data, v.mv_size, why, sizeof why);
            if (!job && salvage)
                continue; /* left as it is: it fails its checksum, salvage moves it */
            if (!job) {
                rc = MDB_CORRUPTED;
                break;
            }
            st = job->status;
            jq_job_destroy(&job);
            msgpack_sbuffer_write(sb, (const char *)&st, 1);
        }
        msgpack_sbuffer_write(sb, v.mv_data, v.mv_size);
        unsigned char *p = (unsigned char *)sb->data;
        jq_put_be32(p, crc_of(k.mv_data, k.mv_size, p + JQ_STORE_CRC_BYTES,
                              sb->size - JQ_STORE_CRC_BYTES));
        MDB_val nv = {sb->size, sb->data};
        if ((rc = mdb_cursor_put(cur, &k, &nv, MDB_CURRENT)))
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int upgrade_from_1(jq_store_t *s, MDB_txn *txn)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = upgrade_table(txn, s->jobs, true, s->opts.salvage, &sb);
    if (!rc)
        rc = upgrade_table(txn, s->archive, true, s->opts.salvage, &sb);
    if (!rc)
        rc = upgrade_table(txn, s->logs, false, s->opts.salvage, &sb);
    msgpack_sbuffer_destroy(&sb);
    /* Meta: format 1 kept raw values and a reserve of ids above the last;
     * ids shown under format 1 may reach the reserve, so continue there. */
    uint64_t last = 0, reserve = 0;
    uint8_t drain = 0;
    MDB_val k, v;
    k = (MDB_val){7, "last_id"};
    if (!rc && mdb_get(txn, s->meta, &k, &v) == 0 && v.mv_size == 8)
        memcpy(&last, v.mv_data, 8);
    k = (MDB_val){10, "id_reserve"};
    if (!rc && mdb_get(txn, s->meta, &k, &v) == 0 && v.mv_size == 8)
        memcpy(&reserve, v.mv_data, 8);
    if (!rc)
        mdb_del(txn, s->meta, &k, NULL);
    k = (MDB_val){5, "drain"};
    if (!rc && mdb_get(txn, s->meta, &k, &v) == 0 && v.mv_size == 1)
        drain = *(uint8_t *)v.mv_data;
    if (reserve > last)
        last = reserve;
    uint32_t format = JQ_STORE_FORMAT;
    if (!rc)
        rc = jq_store_meta_put(s, txn, "last_id", &last, sizeof last);
    if (!rc)
        rc = jq_store_meta_put(s, txn, "drain", &drain, sizeof drain);
    if (!rc)
        rc = jq_store_meta_put(s, txn, "format", &format, sizeof format);
    return rc;
}

/* Move every damaged record into the `damaged` table; say what moved.
 * Found first, moved after: the cursor never walks over its own deletes. */
static int salvage(jq_store_t *s, MDB_txn *txn, uint32_t format, uint64_t *moved)
{
    MDB_dbi damaged;
    int rc = mdb_dbi_open(txn, "damaged", MDB_CREATE, &damaged);
    static const char *const names[] = {"jobs", "archive", "logs", "meta"};
    MDB_dbi dbis[] = {s->jobs, s->archive, s->logs, s->meta};
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        MDB_val *bad = NULL;
        size_t nbad = 0, cap = 0;
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, dbis[i], &cur)))
            break;
        MDB_val k, v;
        for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (!judge(names[i], &k, &v, format))
                continue;
            if (nbad == cap) {
                cap = cap ? cap * 2 : 16;
                MDB_val *grown = realloc(bad, cap * 2 * sizeof *bad);
                if (!grown) {
                    rc = ENOMEM;
                    break;
                }
                bad = grown;
            }
            bad[2 * nbad] = k; /* valid until the transaction changes */
            bad[2 * nbad + 1] = v;
            nbad++;
        }
        mdb_cursor_close(cur);
        /* Copies first: the pointers into the map die with the first write.
         * Only copies are moved (and freed). */
        size_t ncopied = 0;
        for (size_t j = 0; rc == 0 && j < nbad; j++, ncopied++) {
            void *copy = malloc(bad[2 * j].mv_size + bad[2 * j + 1].mv_size);
            if (!copy) {
                rc = ENOMEM;
                break;
            }
            memcpy(copy, bad[2 * j].mv_data, bad[2 * j].mv_size);
            memcpy((char *)copy + bad[2 * j].mv_size, bad[2 * j + 1].mv_data, bad[2 * j + 1].mv_size);
            bad[2 * j].mv_data = copy;
            bad[2 * j + 1].mv_data = (char *)copy + bad[2 * j].mv_size;
        }
        for (size_t j = 0; j < ncopied; j++) {
            char kt[80], key[96];
            key_text(&bad[2 * j], kt, sizeof kt);
            snprintf(key, sizeof key, "%s/%s", names[i], kt);
            MDB_val dk = {strlen(key), key};
            if (rc == 0)
                rc = mdb_put(txn, damaged, &dk, &bad[2 * j + 1], 0);
            if (rc == 0)
                rc = mdb_del(txn, dbis[i], &bad[2 * j], NULL);
            if (rc == 0 && *moved < 10)
                jq_log(JQ_LOG_WARNING, "--salvage: record %s %s: moved aside", key,
                        judge(names[i], &bad[2 * j], &bad[2 * j + 1], format));
            if (rc == 0)
                (*moved)++;
            free(bad[2 * j].mv_data);
        }
        free(bad);
    }
    return rc;
}

int jq_store_open_env(jq_store_t *s, bool fresh, char *err, size_t errlen)
{
    /* With the write-ahead log, its flush makes a commit durable. */
    unsigned flags = MDB_NOTLS | (s->opts.sync == JQ_SYNC_ALWAYS && !s->wal ? 0 : MDB_NOSYNC);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&s->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, 8);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, s->opts.map_size);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env, 512);
    if (rc == 0)
        rc = mdb_env_open(s->env, s->opts.dir, flags, 0640);
    if (rc != 0) {
        snprintf(err, errlen, "cannot open the store in %s: %s%s", s->opts.dir, mdb_strerror(rc),
                 rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? " (damaged, or not an LMDB store)" : "");
        return -1;
    }
    int dead;
    mdb_reader_check(s->env, &dead); /* slots of readers that died */
    if (!fresh && check_size(s->env, s->opts.dir, err, errlen) < 0)
        return -1;
    /* Read first: a store we refuse must be left exactly as it was. */
    uint32_t format = 0;
    unsigned char stored_id[STORE_ID_BYTES] = {0}, file_id[STORE_ID_BYTES];
    bool has_stored_id = false;
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0) {
        snprintf(err, errlen, "cannot read the store in %s: %s", s->opts.dir, mdb_strerror(rc));
        return -1;
    }
    rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
    if (rc == MDB_NOTFOUND && fresh) {
        rc = 0;
    } else if (rc == 0) {
        MDB_val k = {6, "format"}, v;
        const unsigned char *p;
        size_t n;
        rc = mdb_get(txn, s->meta, &k, &v);
        if (rc == 0 && v.mv_size == 4)
            memcpy(&format, v.mv_data, 4);
        else if (rc == 0 && jq_store_verify(&k, &v, &p, &n) == 0 && n == 4)
            memcpy(&format, p, 4);
        else if (rc == 0)
            rc = MDB_CORRUPTED;
        if (rc == 0 && format >= 2)
            has_stored_id = jq_store_meta_get(s, txn, "store_id", stored_id, sizeof stored_id) == 0;
    } else {
        rc = MDB_INCOMPATIBLE;
    }
    mdb_txn_abort(txn);
    txn = NULL;
    if (rc != 0) {
        snprintf(err, errlen, "the store in %s is damaged or not jobq's: %s", s->opts.dir,
                 mdb_strerror(rc));
        return -1;
    }
    if (!fresh && (format < 1 || format > JQ_STORE_FORMAT)) {
        snprintf(err, errlen, "the store in %s has format %u; this jobqd reads formats 1 to %d%s",
                 s->opts.dir, format, JQ_STORE_FORMAT,
                 format > JQ_STORE_FORMAT ? " (written by a newer jobqd)" : "");
        return -1;
    }
    int have_file_id = read_store_id(s, file_id, err, errlen);
    if (have_file_id < 0)
        return -1;
    if (has_stored_id && have_file_id && memcmp(stored_id, file_id, STORE_ID_BYTES) != 0) {
        char a[2 * STORE_ID_BYTES + 1], b[2 * STORE_ID_BYTES + 1];
        hex(stored_id, a);
        hex(file_id, b);
        snprintf(err, errlen, "%s/data.mdb holds store %s, but %s/store.id names store %s: "
                              "the file was swapped; put back the right one",
                 s->opts.dir, a, s->opts.dir, b);
        return -1;
    }
    if (!has_stored_id) {
        if (have_file_id)
            memcpy(stored_id, file_id, STORE_ID_BYTES);
        else if (getrandom(stored_id, STORE_ID_BYTES, 0) != STORE_ID_BYTES) {
            snprintf(err, errlen, "cannot name the store: %s", strerror(errno));
            return -1;
        }
    }
    uint64_t moved = 0;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) == 0 &&
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) == 0 &&
        (rc = mdb_dbi_open(txn, "jobs", MDB_CREATE, &s->jobs)) == 0 &&
        (rc = mdb_dbi_open(txn, "archive", MDB_CREATE, &s->archive)) == 0 &&
        (rc = mdb_dbi_open(txn, "logs", MDB_CREATE, &s->logs)) == 0) {
        uint32_t now_format = JQ_STORE_FORMAT;
        if (fresh)
            rc = jq_store_meta_put(s, txn, "format", &now_format, sizeof now_format);
        else if (format == 1) {
            jq_log(JQ_LOG_NOTICE, "upgrading the store in %s from format 1 to %d (checksums)",
                    s->opts.dir, JQ_STORE_FORMAT);
            rc = upgrade_from_1(s, txn);
        } else if (format < JQ_STORE_FORMAT) {
            /* Format 2 reads as 3 unchanged; marked 3 so that an older
             * jobqd refuses the submit records it would not read. */
            jq_log(JQ_LOG_NOTICE, "the store in %s is now format %d (submit records kept as "
                                  "they came); jobqd before it cannot open it",
                   s->opts.dir, JQ_STORE_FORMAT);
            rc = jq_store_meta_put(s, txn, "format", &now_format, sizeof now_format);
        }
        if (rc == 0 && !has_stored_id)
            rc = jq_store_meta_put(s, txn, "store_id", stored_id, sizeof stored_id);
        if (rc == 0 && s->opts.salvage)
            rc = salvage(s, txn, JQ_STORE_FORMAT, &moved);
        rc = rc ? rc : mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        snprintf(err, errlen, "cannot prepare the store in %s: %s", s->opts.dir, mdb_strerror(rc));
        return -1;
    }
    if (moved)
        jq_log(JQ_LOG_WARNING, "--salvage: %llu damaged record%s moved aside into the store's "
                               "`damaged` table: a job whose record moved is gone from the queue, a "
                               "log entry that moved is marked in its job's log",
                (unsigned long long)moved, moved == 1 ? "" : "s");
    if (!have_file_id && write_store_id(s, stored_id, err, errlen) < 0)
        return -1;
    return 0;
}
