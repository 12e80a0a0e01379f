/* cluster.c: the Raft node (cluster.h): libraft's state machine is the
 * LMDB store, its entries are the store's batches of change records.
 *
 * Entries (msgpack): ["jq1", type, proposer, ...]
 *   BATCH ..., n, [job, serial, kind, bytes] x n  change records, in order
 *   NODE  info                                      a node's endpoints (add_node)
 *   GONE  id                                        a node was removed
 *   INIT  epoch                                     the cluster's event epoch
 * `proposer` is a random number of this process: an entry of its own is
 * one whose records came from this node's intake, so its apply advances
 * `durable` and releases what waited for them. */
#include "cluster.h"
#include "daemon.h"
#include "log.h"
#include "storeint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <zmq.h>

#define ENTRY_MAGIC "jq1"
enum { ENTRY_BATCH = 1, ENTRY_NODE = 2, ENTRY_GONE = 3, ENTRY_INIT = 4 };
/* An entry carries at most this many records or bytes; the rest of a
 * burst goes in the next entries (libraft appends them in one write). */
#define ENTRY_MAX_RECORDS 20000
#define ENTRY_MAX_BYTES (8u << 20)
#define WATCH_MS 10
#define MAX_NODES 16
#define CMD_WAIT_S 30

enum { PHASE_FOLLOWING, PHASE_PROMOTING, PHASE_READY, PHASE_LEADING };
enum { CMD_ADD, CMD_REMOVE, CMD_TRANSFER };

typedef struct cmd {
    struct cmd *next;
    int type;
    uint64_t id;
    char address[256];
    bool voter;
    char *info;
    size_t info_len;
    /* filled by the cluster thread */
    bool done, not_leader;
    int rc;
    char err[256];
    uint64_t leader;
    int refs; /* the handler's and the cluster thread's (under mu) */
    struct raft_change change;
    struct raft_transfer transfer;
    struct jq_cluster *c;
} cmd_t;

typedef struct {
    uint64_t id;
    char address[256];
    int role;
    bool present;
    uint64_t match;
    int64_t contact_us, caught_up_us; /* wall clock, 0: never seen */
} peer_t;

typedef struct {
    uint64_t id;
    char *info; /* msgpack map */
    size_t len;
} node_t;

struct jq_cluster {
    jq_daemon_t *d;
    char dir[JQ_PATH_BYTES + 16];
    char raft_dir[JQ_PATH_BYTES + 32];
    uint64_t id, nonce;
    bool pristine; /* no Raft state yet */
    struct uv_loop_s loop;
    uv_async_t wake;
    uv_poll_t intake;
    uv_timer_t watch;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct raft_fsm fsm;
    struct raft_barrier barrier;
    bool io_ready, transport_ready, raft_ready, loop_ready;
    pthread_t thread;
    bool started;
    _Atomic int phase;
    _Atomic bool stop;
    _Atomic uint64_t epoch;
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;
    cmd_t *cmds, *cmds_tail;
    node_t nodes[MAX_NODES];
    unsigned nnodes;
    int state;
    uint64_t leader_id, term, last_index, applied, commit;
    peer_t peers[MAX_NODES];
    unsigned npeers;
};

/* ---- addresses ---- */

int jq_node_address_parse(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *h = addr, *colon;
    size_t n;
    if (*addr == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return -1;
        h = addr + 1;
        n = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
            return -1;
        n = (size_t)(colon - addr);
    }
    if (n == 0 || n >= 254)
        return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 1 || p > 65535)
        return -1;
    if (host) {
        if (hostlen <= n)
            return -1;
        memcpy(host, h, n);
        host[n] = '\0';
    }
    if (port)
        *port = (int)p;
    return 0;
}

bool jq_node_address_loopback(const char *addr)
{
    char host[256];
    if (jq_node_address_parse(addr, host, sizeof host, NULL) < 0)
        return false;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return !strcmp(host, "localhost");
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- node records ---- */

/* This node's record: what NotLeader and query_nodes tell clients. */
static void pack_self_info(jq_cluster_t *c, msgpack_packer *pk)
{
    const jq_config_t *cfg = &c->d->cfg;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char ep[JQ_PATH_BYTES + 32];
    msgpack_pack_map(pk, 6);
    wire_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, c->id);
    wire_pack_cstr(pk, "name");
    wire_pack_cstr(pk, host);
    wire_pack_cstr(pk, "address");
    wire_pack_cstr(pk, cfg->node_address);
    wire_pack_cstr(pk, "endpoints");
    msgpack_pack_array(pk, 1 + cfg->nlisten);
    snprintf(ep, sizeof ep, "ipc://%s/jobq.sock", cfg->run_dir);
    wire_pack_cstr(pk, ep);
    for (unsigned i = 0; i < cfg->nlisten; i++)
        wire_pack_cstr(pk, cfg->listen[i]);
    wire_pack_cstr(pk, "workers");
    msgpack_pack_array(pk, 1 + cfg->nworkers);
    snprintf(ep, sizeof ep, "ipc://%s/workers.sock", cfg->run_dir);
    wire_pack_cstr(pk, ep);
    for (unsigned i = 0; i < cfg->nworkers; i++)
        wire_pack_cstr(pk, cfg->workers[i]);
    wire_pack_cstr(pk, "publish");
    msgpack_pack_array(pk, 1 + cfg->npublish);
    snprintf(ep, sizeof ep, "ipc://%s/events.sock", cfg->run_dir);
    wire_pack_cstr(pk, ep);
    for (unsigned i = 0; i < cfg->npublish; i++)
        wire_pack_cstr(pk, cfg->publish[i]);
}

/* Under mu. */
static node_t *node_find(jq_cluster_t *c, uint64_t id)
{
    for (unsigned i = 0; i < c->nnodes; i++)
        if (c->nodes[i].id == id)
            return &c->nodes[i];
    return NULL;
}

static void nodes_clear(jq_cluster_t *c)
{
    for (unsigned i = 0; i < c->nnodes; i++)
        free(c->nodes[i].info);
    c->nnodes = 0;
}

/* Under mu: the records as the store keeps them (meta "nodes"). */
static void nodes_encode(jq_cluster_t *c, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, c->nnodes);
    for (unsigned i = 0; i < c->nnodes; i++)
        msgpack_sbuffer_write(sb, c->nodes[i].info, c->nodes[i].len);
}

static bool map_u64(const msgpack_object *m, const char *key, uint64_t *out)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return false;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
            !memcmp(kv->key.via.str.ptr, key, kl) &&
            kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            *out = kv->val.via.u64;
            return true;
        }
    }
    return false;
}

/* Under mu: add or replace a node's record (a msgpack map with its id). */
static int nodes_put(jq_cluster_t *c, const msgpack_object *info)
{
    uint64_t id;
    if (!map_u64(info, "id", &id) || id == 0)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *info);
    node_t *n = node_find(c, id);
    if (!n && c->nnodes == MAX_NODES) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    if (!n) {
        n = &c->nodes[c->nnodes++];
        n->id = id;
    } else {
        free(n->info);
    }
    n->info = sb.data; /* the sbuffer's memory, kept */
    n->len = sb.size;
    return 0;
}

static void nodes_drop(jq_cluster_t *c, uint64_t id)
{
    node_t *n = node_find(c, id);
    if (!n)
        return;
    free(n->info);
    *n = c->nodes[--c->nnodes];
}

/* Under mu: the records kept in the store (after a restore). */
static void nodes_load(jq_cluster_t *c)
{
    nodes_clear(c);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (jq_store_meta_read(c->d->store, "nodes", &sb) == 0) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        if (msgpack_unpack_next(&up, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_ARRAY)
            for (uint32_t i = 0; i < up.data.via.array.size; i++)
                nodes_put(c, &up.data.via.array.ptr[i]);
        msgpack_unpacked_destroy(&up);
    }
    msgpack_sbuffer_clear(&sb);
    uint64_t epoch = 0;
    if (jq_store_meta_read(c->d->store, "epoch", &sb) == 0 && sb.size == sizeof epoch)
        memcpy(&epoch, sb.data, sizeof epoch);
    atomic_store(&c->epoch, epoch);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- the state machine ---- */

/* The process cannot go on with a store that missed a committed entry:
 * it stops, and its next start rebuilds the store from the log. */
static void fatal_apply(jq_cluster_t *c, const char *what)
{
    jq_log(JQ_LOG_ERROR, "cluster: cannot apply a committed entry (%s) at index %llu; "
                         "stopping (the next start rebuilds the store from the log)",
           what, (unsigned long long)raft_last_applied(&c->raft) + 1);
    _exit(1);
}

static jq_change_t *decode_records(const msgpack_object *a, uint32_t first, size_t *n)
{
    jq_change_t *head = NULL, **tail = &head;
    *n = 0;
    for (uint32_t i = first; i < a->via.array.size; i++) {
        const msgpack_object *r = &a->via.array.ptr[i];
        if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size != 4 ||
            r->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            r->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            r->via.array.ptr[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            r->via.array.ptr[3].type != MSGPACK_OBJECT_BIN)
            goto bad;
        const msgpack_object_bin *b = &r->via.array.ptr[3].via.bin;
        jq_change_t *ch = malloc(sizeof *ch + b->size);
        if (!ch)
            goto bad;
        ch->next = NULL;
        ch->job_id = r->via.array.ptr[0].via.u64;
        ch->serial = r->via.array.ptr[1].via.u64;
        ch->kind = (uint8_t)r->via.array.ptr[2].via.u64;
        ch->len = b->size;
        memcpy(ch->data, b->ptr, b->size);
        *tail = ch;
        tail = &ch->next;
        (*n)++;
    }
    return head;
bad:
    jq_change_list_free(&head);
    *n = SIZE_MAX;
    return NULL;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    jq_cluster_t *c = fsm->data;
    *result = NULL;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    const msgpack_object *a = &up.data;
    if (msgpack_unpack_next(&up, buf->base, buf->len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size < 4 ||
        a->via.array.ptr[0].type != MSGPACK_OBJECT_STR || a->via.array.ptr[0].via.str.size != 3 ||
        memcmp(a->via.array.ptr[0].via.str.ptr, ENTRY_MAGIC, 3) != 0 ||
        a->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        a->via.array.ptr[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        char what[96];
        snprintf(what, sizeof what, "not a jobq entry: %zu bytes, starting %02x %02x %02x",
                 buf->len, buf->len > 0 ? ((unsigned char *)buf->base)[0] : 0,
                 buf->len > 1 ? ((unsigned char *)buf->base)[1] : 0,
                 buf->len > 2 ? ((unsigned char *)buf->base)[2] : 0);
        fatal_apply(c, what);
    }
    uint64_t type = a->via.array.ptr[1].via.u64;
    bool mine = a->via.array.ptr[2].via.u64 == c->nonce;
    char err[512];
    int rc = 0;
    if (type == ENTRY_BATCH) {
        size_t n;
        jq_change_t *head = decode_records(a, 3, &n);
        if (n == SIZE_MAX)
            fatal_apply(c, "a malformed batch");
        rc = jq_store_apply(c->d->store, head, n, mine, NULL, 0, err, sizeof err);
        if (rc < 0)
            jq_change_list_free(&head);
    } else if (type == ENTRY_NODE || type == ENTRY_GONE) {
        pthread_mutex_lock(&c->mu);
        if (type == ENTRY_NODE)
            rc = nodes_put(c, &a->via.array.ptr[3]);
        else if (a->via.array.ptr[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            nodes_drop(c, a->via.array.ptr[3].via.u64);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        nodes_encode(c, &sb);
        pthread_mutex_unlock(&c->mu);
        jq_store_meta_t m = {"nodes", sb.data, sb.size};
        if (rc == 0)
            rc = jq_store_apply(c->d->store, NULL, 0, false, &m, 1, err, sizeof err);
        else
            snprintf(err, sizeof err, "a malformed node record");
        msgpack_sbuffer_destroy(&sb);
    } else if (type == ENTRY_INIT && a->via.array.ptr[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        uint64_t epoch = a->via.array.ptr[3].via.u64;
        jq_store_meta_t m = {"epoch", &epoch, sizeof epoch};
        rc = jq_store_apply(c->d->store, NULL, 0, false, &m, 1, err, sizeof err);
        if (rc == 0 && !atomic_load(&c->epoch))
            atomic_store(&c->epoch, epoch);
    } else {
        snprintf(err, sizeof err, "an entry of unknown type %llu", (unsigned long long)type);
        rc = -1;
    }
    msgpack_unpacked_destroy(&up);
    if (rc < 0)
        fatal_apply(c, err);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    jq_cluster_t *c = fsm->data;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    if (jq_store_snapshot(c->d->store, &sb, err, sizeof err) < 0) {
        jq_log(JQ_LOG_WARNING, "cluster: %s", err);
        msgpack_sbuffer_destroy(&sb);
        return RAFT_IOERR;
    }
    *bufs = raft_malloc(sizeof **bufs);
    if (!*bufs) {
        msgpack_sbuffer_destroy(&sb);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = sb.data;
    (*bufs)[0].len = sb.size;
    *n = 1;
    return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    (void)fsm;
    if (*bufs) {
        for (unsigned i = 0; i < *n; i++)
            free((*bufs)[i].base);
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    jq_cluster_t *c = fsm->data;
    char err[256];
    if (jq_store_restore(c->d->store, buf->base, buf->len, err, sizeof err) < 0) {
        jq_log(JQ_LOG_ERROR, "cluster: %s", err);
        return RAFT_IOERR;
    }
    pthread_mutex_lock(&c->mu);
    nodes_load(c);
    pthread_mutex_unlock(&c->mu);
    raft_free(buf->base);
    jq_log(JQ_LOG_INFO, "cluster: store restored from a snapshot (%zu bytes)", buf->len);
    return 0;
}

/* ---- proposing ---- */

static void applied_cb(struct raft_apply *req, int status, void *result);

/* A deposed leader stops serving at once: what it had in memory may not
 * be what the cluster committed, so it starts again from its store as a
 * follower (the same pid, so a supervisor sees nothing). */
static void restart_as_follower(jq_cluster_t *c, const char *why)
{
    if (atomic_load(&c->stop))
        return;
    jq_log(JQ_LOG_WARNING, "cluster: %s: no longer serving; restarting as a follower", why);
    if (!c->d->argv)
        _exit(1);
#ifdef CLOSE_RANGE_CLOEXEC
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
#else
    for (int fd = 3; fd < 65536; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    execv("/proc/self/exe", c->d->argv);
    jq_log(JQ_LOG_ERROR, "cluster: cannot start again: %s", strerror(errno));
    _exit(1);
}

static int propose(jq_cluster_t *c, msgpack_sbuffer *sb)
{
    /* libraft frames entries on the wire in 8-byte words and expects
     * their sizes to be multiples of 8 (a follower misreads the entry after
     * an odd one); the apply reads one msgpack value and ignores the zero
     * padding. */
    size_t padded = (sb->size + 7) & ~(size_t)7;
    struct raft_buffer b = {.base = raft_malloc(padded), .len = padded};
    struct raft_apply *req = malloc(sizeof *req);
    if (!b.base || !req) {
        raft_free(b.base);
        free(req);
        return RAFT_NOMEM;
    }
    memcpy(b.base, sb->data, sb->size);
    memset((char *)b.base + sb->size, 0, padded - sb->size);
    req->data = c;
    int rc = raft_apply(&c->raft, req, &b, 1, applied_cb);
    if (rc != 0) {
        raft_free(b.base);
        free(req);
    }
    return rc;
}

static void applied_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    jq_cluster_t *c = req->data;
    free(req);
    if (status != 0 && atomic_load(&c->phase) != PHASE_FOLLOWING)
        restart_as_follower(c, raft_strerror(status));
}

static void entry_begin(jq_cluster_t *c, msgpack_packer *pk, int type, uint32_t n)
{
    msgpack_pack_array(pk, 3 + n);
    msgpack_pack_str_with_body(pk, ENTRY_MAGIC, 3);
    msgpack_pack_uint64(pk, (uint64_t)type);
    msgpack_pack_uint64(pk, c->nonce);
}

/* The intake's records, as entries. */
static void on_intake(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    jq_cluster_t *c = h->data;
    jq_change_t *head = jq_changeq_take(jq_store_intake(c->d->store));
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    while (head) {
        uint32_t n = 0;
        size_t bytes = 0;
        for (jq_change_t *x = head; x && n < ENTRY_MAX_RECORDS && (n == 0 || bytes < ENTRY_MAX_BYTES);
             x = x->next, n++)
            bytes += x->len;
        msgpack_sbuffer_clear(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        entry_begin(c, &pk, ENTRY_BATCH, n);
        for (uint32_t i = 0; i < n; i++) {
            jq_change_t *x = head;
            head = x->next;
            msgpack_pack_array(&pk, 4);
            msgpack_pack_uint64(&pk, x->job_id);
            msgpack_pack_uint64(&pk, x->serial);
            msgpack_pack_uint64(&pk, x->kind);
            msgpack_pack_bin_with_body(&pk, x->data, x->len);
            free(x);
        }
        int rc = propose(c, &sb);
        if (rc != 0) {
            /* Records this node acknowledged nothing for yet, but its
             * table has them: only a fresh start makes the two agree. */
            jq_change_list_free(&head);
            msgpack_sbuffer_destroy(&sb);
            restart_as_follower(c, raft_strerror(rc));
            return;
        }
    }
    msgpack_sbuffer_destroy(&sb);
}

/* ---- leadership ---- */

static void barrier_cb(struct raft_barrier *req, int status)
{
    jq_cluster_t *c = req->data;
    if (status != 0) {
        restart_as_follower(c, raft_strerror(status));
        return;
    }
    int expect = PHASE_PROMOTING;
    if (atomic_compare_exchange_strong(&c->phase, &expect, PHASE_READY)) {
        jq_log(JQ_LOG_NOTICE, "cluster: elected leader (term %llu); loading the queue",
               (unsigned long long)c->raft.current_term);
        jq_changeq_kick(c->d->changeq); /* the loop takes it from here */
    }
}

/* Elected: say where clients find this node, name the cluster's epoch on
 * its first election, and wait until everything before is applied. */
static void promote(jq_cluster_t *c)
{
    atomic_store(&c->phase, PHASE_PROMOTING);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    entry_begin(c, &pk, ENTRY_NODE, 1);
    pack_self_info(c, &pk);
    int rc = propose(c, &sb);
    if (rc == 0 && !atomic_load(&c->epoch)) {
        msgpack_sbuffer_clear(&sb);
        entry_begin(c, &pk, ENTRY_INIT, 1);
        msgpack_pack_uint64(&pk, (uint64_t)wall_us());
        rc = propose(c, &sb);
    }
    msgpack_sbuffer_destroy(&sb);
    c->barrier.data = c;
    if (rc == 0)
        rc = raft_barrier(&c->raft, &c->barrier, barrier_cb);
    if (rc != 0)
        restart_as_follower(c, raft_strerror(rc));
}

/* Under mu: what query_nodes and NotLeader read. */
static void refresh_status(jq_cluster_t *c)
{
    struct raft *r = &c->raft;
    int64_t now = wall_us();
    c->state = raft_state(r);
    const char *addr;
    raft_id lid = 0;
    raft_leader(r, &lid, &addr);
    c->leader_id = lid;
    c->term = r->current_term;
    c->last_index = raft_last_index(r);
    c->applied = raft_last_applied(r);
    c->commit = r->commit_index;
    for (unsigned i = 0; i < c->npeers; i++)
        c->peers[i].present = false;
    for (unsigned i = 0; i < r->configuration.n && i < MAX_NODES; i++) {
        const struct raft_server *s = &r->configuration.servers[i];
        peer_t *p = NULL;
        for (unsigned j = 0; j < c->npeers && !p; j++)
            if (c->peers[j].id == s->id)
                p = &c->peers[j];
        if (!p && c->npeers < MAX_NODES) {
            p = &c->peers[c->npeers++];
            memset(p, 0, sizeof *p);
            p->id = s->id;
        }
        if (!p)
            continue;
        p->present = true;
        p->role = s->role;
        snprintf(p->address, sizeof p->address, "%s", s->address ? s->address : "");
        if (s->id == c->id) {
            p->match = c->last_index;
            p->contact_us = p->caught_up_us = now;
        } else if (c->state == RAFT_LEADER && r->leader_state.progress) {
            const struct raft_progress *pr = &r->leader_state.progress[i];
            if (pr->match_index > p->match || pr->recent_recv)
                p->contact_us = now;
            p->match = pr->match_index;
            if (p->match >= c->last_index)
                p->caught_up_us = now;
        }
    }
    unsigned k = 0; /* drop removed servers */
    for (unsigned i = 0; i < c->npeers; i++)
        if (c->peers[i].present)
            c->peers[k++] = c->peers[i];
    c->npeers = k;
}

static void on_watch(uv_timer_t *t)
{
    jq_cluster_t *c = t->data;
    if (atomic_load(&c->stop))
        return;
    pthread_mutex_lock(&c->mu);
    refresh_status(c);
    int state = c->state;
    pthread_mutex_unlock(&c->mu);
    int phase = atomic_load(&c->phase);
    if (state == RAFT_LEADER && phase == PHASE_FOLLOWING)
        promote(c);
    else if (state != RAFT_LEADER && phase != PHASE_FOLLOWING)
        restart_as_follower(c, "lost the leadership");
}

/* ---- commands from handlers ---- */

static void cmd_release(jq_cluster_t *c, cmd_t *m)
{
    /* under mu */
    if (--m->refs == 0) {
        free(m->info);
        free(m);
    }
    (void)c;
}

static void cmd_finish(cmd_t *m, int rc, const char *err)
{
    jq_cluster_t *c = m->c;
    pthread_mutex_lock(&c->mu);
    m->rc = rc;
    if (err)
        snprintf(m->err, sizeof m->err, "%s", err);
    m->done = true;
    pthread_cond_broadcast(&c->cv);
    cmd_release(c, m);
    pthread_mutex_unlock(&c->mu);
}

static void assigned_cb(struct raft_change *req, int status)
{
    cmd_t *m = req->data;
    char err[256];
    snprintf(err, sizeof err, "node %llu was added but not made a %s: %s",
             (unsigned long long)m->id, m->voter ? "voter" : "standby", raft_strerror(status));
    cmd_finish(m, status ? -1 : 0, status ? err : NULL);
}

static void added_cb(struct raft_change *req, int status)
{
    cmd_t *m = req->data;
    if (status != 0) {
        cmd_finish(m, -1, raft_strerror(status));
        return;
    }
    int rc = raft_assign(&m->c->raft, &m->change, m->id, m->voter ? RAFT_VOTER : RAFT_STANDBY,
                         assigned_cb);
    if (rc != 0)
        assigned_cb(&m->change, rc);
}

static void removed_cb(struct raft_change *req, int status)
{
    cmd_t *m = req->data;
    if (status == 0) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        entry_begin(m->c, &pk, ENTRY_GONE, 1);
        msgpack_pack_uint64(&pk, m->id);
        propose(m->c, &sb); /* the record only: the removal itself is committed */
        msgpack_sbuffer_destroy(&sb);
    }
    cmd_finish(m, status ? -1 : 0, status ? raft_strerror(status) : NULL);
}

static void transferred_cb(struct raft_transfer *req)
{
    cmd_t *m = req->data;
    const char *addr;
    raft_id lid = 0;
    raft_leader(&m->c->raft, &lid, &addr);
    pthread_mutex_lock(&m->c->mu);
    m->leader = lid;
    pthread_mutex_unlock(&m->c->mu);
    char err[128];
    snprintf(err, sizeof err, "leadership did not move in time (leader: node %llu)",
             (unsigned long long)lid);
    cmd_finish(m, lid && (m->id == 0 ? lid != m->c->id : lid == m->id) ? 0 : -1, err);
}

static void run_cmd(jq_cluster_t *c, cmd_t *m)
{
    if (raft_state(&c->raft) != RAFT_LEADER || atomic_load(&c->phase) != PHASE_LEADING) {
        pthread_mutex_lock(&c->mu);
        m->not_leader = true;
        pthread_mutex_unlock(&c->mu);
        cmd_finish(m, -1, "this node is not the leader");
        return;
    }
    int rc = 0;
    m->change.data = m;
    m->transfer.data = m;
    if (m->type == CMD_ADD) {
        if (m->info_len) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            entry_begin(c, &pk, ENTRY_NODE, 1);
            msgpack_sbuffer_write(&sb, m->info, m->info_len);
            rc = propose(c, &sb);
            msgpack_sbuffer_destroy(&sb);
        }
        if (rc == 0)
            rc = raft_add(&c->raft, &m->change, m->id, m->address, added_cb);
    } else if (m->type == CMD_REMOVE) {
        rc = m->id == c->id ? RAFT_BADID : raft_remove(&c->raft, &m->change, m->id, removed_cb);
        if (m->id == c->id) {
            cmd_finish(m, -1, "a leader does not remove itself: transfer the leadership first");
            return;
        }
    } else {
        rc = raft_transfer(&c->raft, &m->transfer, m->id, transferred_cb);
    }
    if (rc != 0) {
        char err[256];
        snprintf(err, sizeof err, "%s%s", raft_strerror(rc),
                 rc == RAFT_CANTCHANGE ? " (another configuration change is under way)" : "");
        cmd_finish(m, -1, err);
    }
}

static void close_handles(struct raft *r)
{
    jq_cluster_t *c = r->data;
    uv_close((uv_handle_t *)&c->wake, NULL);
    uv_close((uv_handle_t *)&c->intake, NULL);
    uv_close((uv_handle_t *)&c->watch, NULL);
}

static void on_wake(uv_async_t *h)
{
    jq_cluster_t *c = h->data;
    if (atomic_load(&c->stop)) {
        if (c->raft_ready) {
            c->raft_ready = false;
            uv_timer_stop(&c->watch);
            uv_poll_stop(&c->intake);
            raft_close(&c->raft, close_handles);
        }
        return;
    }
    pthread_mutex_lock(&c->mu);
    cmd_t *list = c->cmds;
    c->cmds = c->cmds_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (list) {
        cmd_t *m = list;
        list = m->next;
        run_cmd(c, m);
    }
}

static int submit_cmd(jq_cluster_t *c, cmd_t *m, bool *not_leader, char *err, size_t errlen)
{
    m->c = c;
    m->refs = 2;
    pthread_mutex_lock(&c->mu);
    if (c->cmds_tail)
        c->cmds_tail->next = m;
    else
        c->cmds = m;
    c->cmds_tail = m;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->wake);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += CMD_WAIT_S;
    pthread_mutex_lock(&c->mu);
    while (!m->done && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT)
        ;
    int rc = m->done ? m->rc : -1;
    if (!m->done)
        snprintf(err, errlen, "no answer within %d s (the change may still be made)", CMD_WAIT_S);
    else if (rc)
        snprintf(err, errlen, "%s", m->err);
    *not_leader = m->not_leader;
    cmd_release(c, m);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int jq_cluster_add(jq_cluster_t *c, uint64_t id, const char *address, bool voter,
                   const char *info, size_t info_len, bool *not_leader, char *err,
                   size_t errlen)
{
    cmd_t *m = calloc(1, sizeof *m);
    if (!m || (info_len && !(m->info = malloc(info_len)))) {
        free(m);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->type = CMD_ADD;
    m->id = id;
    m->voter = voter;
    snprintf(m->address, sizeof m->address, "%s", address);
    if (info_len)
        memcpy(m->info, info, info_len);
    m->info_len = info_len;
    return submit_cmd(c, m, not_leader, err, errlen);
}

int jq_cluster_remove(jq_cluster_t *c, uint64_t id, bool *not_leader, char *err, size_t errlen)
{
    cmd_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->type = CMD_REMOVE;
    m->id = id;
    return submit_cmd(c, m, not_leader, err, errlen);
}

int jq_cluster_transfer(jq_cluster_t *c, uint64_t id, uint64_t *leader, bool *not_leader,
                        char *err, size_t errlen)
{
    cmd_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->type = CMD_TRANSFER;
    m->id = id;
    int rc = submit_cmd(c, m, not_leader, err, errlen);
    /* m is freed by now: the leader was copied under mu before */
    pthread_mutex_lock(&c->mu);
    *leader = c->leader_id;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- reading ---- */

static const char *state_name(int s)
{
    switch (s) {
    case RAFT_LEADER: return "leader";
    case RAFT_FOLLOWER: return "follower";
    case RAFT_CANDIDATE: return "candidate";
    default: return "unavailable";
    }
}

static const char *role_name(int r)
{
    return r == RAFT_VOTER ? "voter" : r == RAFT_STANDBY ? "standby" : "spare";
}

/* Under mu. */
static void pack_leader_locked(jq_cluster_t *c, msgpack_packer *pk)
{
    node_t *n = c->leader_id ? node_find(c, c->leader_id) : NULL;
    if (n)
        pk->callback(pk->data, n->info, n->len); /* a packed map, as it came */
    else
        msgpack_pack_nil(pk);
}

void jq_cluster_pack_leader(jq_cluster_t *c, msgpack_packer *pk)
{
    pthread_mutex_lock(&c->mu);
    pack_leader_locked(c, pk);
    pthread_mutex_unlock(&c->mu);
}

void jq_cluster_pack_ping(jq_cluster_t *c, msgpack_packer *pk)
{
    pthread_mutex_lock(&c->mu);
    msgpack_pack_map(pk, 4);
    wire_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, c->id);
    wire_pack_cstr(pk, "state");
    wire_pack_cstr(pk, c->state == RAFT_LEADER && atomic_load(&c->phase) != PHASE_LEADING
                           ? "candidate" : state_name(c->state));
    wire_pack_cstr(pk, "term");
    msgpack_pack_uint64(pk, c->term);
    wire_pack_cstr(pk, "leader");
    pack_leader_locked(c, pk);
    pthread_mutex_unlock(&c->mu);
}

static void pack_info_field(msgpack_packer *pk, const node_t *n, const char *key)
{
    if (n) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        if (msgpack_unpack_next(&up, n->info, n->len, NULL) == MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_MAP) {
            size_t kl = strlen(key);
            for (uint32_t i = 0; i < up.data.via.map.size; i++) {
                const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
                if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
                    !memcmp(kv->key.via.str.ptr, key, kl)) {
                    msgpack_pack_object(pk, kv->val);
                    msgpack_unpacked_destroy(&up);
                    return;
                }
            }
        }
        msgpack_unpacked_destroy(&up);
    }
    if (!strcmp(key, "name"))
        wire_pack_cstr(pk, "");
    else
        msgpack_pack_array(pk, 0);
}

void jq_cluster_pack_nodes(jq_cluster_t *c, msgpack_packer *pk)
{
    pthread_mutex_lock(&c->mu);
    int64_t now = wall_us();
    bool leading = c->state == RAFT_LEADER;
    /* sorted by id */
    unsigned order[MAX_NODES];
    for (unsigned i = 0; i < c->npeers; i++)
        order[i] = i;
    for (unsigned i = 1; i < c->npeers; i++)
        for (unsigned j = i; j > 0 && c->peers[order[j - 1]].id > c->peers[order[j]].id; j--) {
            unsigned t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    msgpack_pack_array(pk, c->npeers);
    for (unsigned i = 0; i < c->npeers; i++) {
        const peer_t *p = &c->peers[order[i]];
        const node_t *n = node_find(c, p->id);
        bool self = p->id == c->id;
        msgpack_pack_map(pk, 12);
        wire_pack_cstr(pk, "id");
        msgpack_pack_uint64(pk, p->id);
        wire_pack_cstr(pk, "name");
        pack_info_field(pk, n, "name");
        wire_pack_cstr(pk, "address");
        wire_pack_cstr(pk, p->address);
        wire_pack_cstr(pk, "role");
        wire_pack_cstr(pk, role_name(p->role));
        wire_pack_cstr(pk, "state");
        if (self)
            wire_pack_cstr(pk, state_name(c->state));
        else if (p->id == c->leader_id)
            wire_pack_cstr(pk, "leader");
        else if (leading)
            wire_pack_cstr(pk, now - p->contact_us < 2000000 ? "follower" : "unavailable");
        else
            wire_pack_cstr(pk, "unknown");
        wire_pack_cstr(pk, "endpoints");
        pack_info_field(pk, n, "endpoints");
        wire_pack_cstr(pk, "applied");
        if (self)
            msgpack_pack_uint64(pk, c->applied);
        else if (leading)
            msgpack_pack_uint64(pk, p->match);
        else
            msgpack_pack_nil(pk);
        wire_pack_cstr(pk, "lag_entries");
        if (self || leading)
            msgpack_pack_uint64(pk, self ? c->last_index - c->applied
                                         : c->last_index > p->match ? c->last_index - p->match : 0);
        else
            msgpack_pack_nil(pk);
        wire_pack_cstr(pk, "lag_seconds");
        if (self)
            msgpack_pack_double(pk, 0);
        else if (leading && p->caught_up_us)
            msgpack_pack_double(pk, (double)(now - p->caught_up_us) / 1e6);
        else
            msgpack_pack_nil(pk);
        wire_pack_cstr(pk, "last_contact");
        if ((self || leading) && p->contact_us)
            wire_pack_ts(pk, p->contact_us);
        else
            msgpack_pack_nil(pk);
        wire_pack_cstr(pk, "self");
        if (self)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        wire_pack_cstr(pk, "leader");
        if (p->id == c->leader_id)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    pthread_mutex_unlock(&c->mu);
}

bool jq_cluster_leading(jq_cluster_t *c) { return atomic_load(&c->phase) == PHASE_LEADING; }

bool jq_cluster_take_ready(jq_cluster_t *c)
{
    return atomic_load(&c->phase) == PHASE_READY;
}

void jq_cluster_set_leading(jq_cluster_t *c)
{
    int expect = PHASE_READY;
    if (atomic_compare_exchange_strong(&c->phase, &expect, PHASE_LEADING))
        jq_log(JQ_LOG_NOTICE, "cluster: leading (node %llu)", (unsigned long long)c->id);
}

uint64_t jq_cluster_epoch(jq_cluster_t *c) { return atomic_load(&c->epoch); }

/* ---- start and stop ---- */

static int read_or_make_id(jq_cluster_t *c, char *err, size_t errlen)
{
    char path[sizeof c->dir + 16];
    snprintf(path, sizeof path, "%s/node-id", c->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        unsigned long long v = 0;
        int ok = fscanf(f, "%llu", &v) == 1 && v > 0;
        fclose(f);
        if (!ok) {
            snprintf(err, errlen, "%s is damaged: it should hold this node's id", path);
            return -1;
        }
        c->id = v;
        return 0;
    }
    uint64_t v = 0;
    while (v == 0) { /* below 2^53: a JSON number keeps it exact */
        if (getrandom(&v, sizeof v, 0) != sizeof v) {
            snprintf(err, errlen, "cannot make a node id: %s", strerror(errno));
            return -1;
        }
        v &= (1ull << 53) - 1;
    }
    char tmp[sizeof path + 8];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    f = fopen(tmp, "w");
    if (!f || fprintf(f, "%llu\n", (unsigned long long)v) < 0 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    c->id = v;
    return 0;
}

/* The store is rebuilt from the log at every start: what it held may
 * be ahead of what the log replays from its snapshot. */
static void wipe_store(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "store.id"};
    char path[JQ_PATH_BYTES + 64];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
}

jq_cluster_t *jq_cluster_new(jq_daemon_t *d, char *err, size_t errlen)
{
    jq_cluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->d = d;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    snprintf(c->dir, sizeof c->dir, "%s/cluster", d->cfg.data_dir);
    snprintf(c->raft_dir, sizeof c->raft_dir, "%s/raft", c->dir);
    char store_dir[sizeof c->dir + 8];
    snprintf(store_dir, sizeof store_dir, "%s/store", c->dir);
    if ((mkdir(c->dir, 0700) < 0 && errno != EEXIST) ||
        (mkdir(c->raft_dir, 0700) < 0 && errno != EEXIST) ||
        (mkdir(store_dir, 0700) < 0 && errno != EEXIST)) {
        snprintf(err, errlen, "cannot create %s: %s", c->dir, strerror(errno));
        jq_cluster_destroy(&c);
        return NULL;
    }
    if (read_or_make_id(c, err, errlen) < 0 ||
        getrandom(&c->nonce, sizeof c->nonce, 0) != sizeof c->nonce) {
        if (!err[0])
            snprintf(err, errlen, "cannot draw a random number: %s", strerror(errno));
        jq_cluster_destroy(&c);
        return NULL;
    }
    char meta[sizeof c->raft_dir + 16];
    snprintf(meta, sizeof meta, "%s/metadata1", c->raft_dir);
    c->pristine = access(meta, F_OK) != 0;
    wipe_store(store_dir);
    jq_store_opts_t so = {.dir = store_dir, .map_size = d->cfg.store_map_size,
                          .sync = JQ_SYNC_NONE};
    d->store = jq_store_open(&so, err, errlen);
    if (!d->store) {
        jq_cluster_destroy(&c);
        return NULL;
    }
    return c;
}

static void *cluster_main(void *arg)
{
    jq_cluster_t *c = arg;
    pthread_setname_np(pthread_self(), "jobqd-raft");
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}

int jq_cluster_start(jq_cluster_t *c, char *err, size_t errlen)
{
    jq_daemon_t *d = c->d;
    jq_store_hooks_t hooks;
    jq_daemon_store_hooks(d, &hooks);
    jq_store_cluster_mode(d->store, &hooks);
    int rc = uv_loop_init(&c->loop);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: %s", uv_strerror(rc));
        return -1;
    }
    c->loop_ready = true;
    uv_async_init(&c->loop, &c->wake, on_wake);
    c->wake.data = c;
    uv_poll_init(&c->loop, &c->intake, jq_changeq_fd(jq_store_intake(d->store)));
    c->intake.data = c;
    uv_timer_init(&c->loop, &c->watch);
    c->watch.data = c;
    if (!d->cfg.insecure) {
        snprintf(err, errlen, "--cluster: node traffic with keys is not built yet: give "
                              "--insecure with a loopback --node-address");
        return -1;
    }
    rc = raft_uv_tcp_init(&c->transport, &c->loop);
    if (rc == 0)
        c->transport_ready = true;
    if (rc == 0)
        rc = raft_uv_init(&c->io, &c->loop, c->raft_dir, &c->transport);
    if (rc == 0)
        c->io_ready = true;
    c->fsm = (struct raft_fsm){.version = 2, .data = c, .apply = fsm_apply,
                               .snapshot = fsm_snapshot, .restore = fsm_restore,
                               .snapshot_finalize = fsm_snapshot_finalize};
    if (rc == 0)
        rc = raft_init(&c->raft, &c->io, &c->fsm, c->id, d->cfg.node_address);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: cannot start Raft in %s: %s", c->raft_dir,
                 c->io_ready ? raft_errmsg(&c->raft) : raft_strerror(rc));
        return -1;
    }
    c->raft.data = c;
    c->raft_ready = true;
    raft_set_snapshot_threshold(&c->raft, 4096);
    raft_set_snapshot_trailing(&c->raft, 1024);
    raft_set_pre_vote(&c->raft, true);
    if (c->pristine && !d->cfg.njoin) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rc = raft_configuration_add(&conf, c->id, d->cfg.node_address, RAFT_VOTER);
        if (rc == 0)
            rc = raft_bootstrap(&c->raft, &conf);
        raft_configuration_close(&conf);
        if (rc != 0) {
            snprintf(err, errlen, "cluster: cannot start a new cluster: %s",
                     raft_errmsg(&c->raft));
            return -1;
        }
        jq_log(JQ_LOG_NOTICE, "cluster: started a new cluster of one (node %llu at %s)",
               (unsigned long long)c->id, d->cfg.node_address);
    }
    rc = raft_start(&c->raft);
    if (rc != 0) {
        snprintf(err, errlen, "cluster: cannot start Raft: %s", raft_errmsg(&c->raft));
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    refresh_status(c);
    pthread_mutex_unlock(&c->mu);
    uv_poll_start(&c->intake, UV_READABLE, on_intake);
    uv_timer_start(&c->watch, on_watch, WATCH_MS, WATCH_MS);
    if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
        snprintf(err, errlen, "cluster: out of threads");
        return -1;
    }
    c->started = true;
    jq_log(JQ_LOG_INFO, "cluster: node %llu at %s (%s)", (unsigned long long)c->id,
           d->cfg.node_address, c->pristine ? (d->cfg.njoin ? "joining" : "new") : "restarted");
    return 0;
}

/* ---- joining ---- */

static int join_once(jq_cluster_t *c, const char *endpoint, char *next, size_t nextlen,
                     char *err, size_t errlen)
{
    void *s = zmq_socket(c->d->zctx, ZMQ_DEALER);
    if (!s) {
        snprintf(err, errlen, "no socket: %s", zmq_strerror(errno));
        return -1;
    }
    int linger = 0, timeout = 35000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    wire_pack_cstr(&pk, "v");
    msgpack_pack_int(&pk, 1);
    wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 1);
    wire_pack_cstr(&pk, "method");
    wire_pack_cstr(&pk, "add_node");
    wire_pack_cstr(&pk, "args");
    /* add_node's arguments are this node's record plus its role */
    msgpack_sbuffer info;
    msgpack_sbuffer_init(&info);
    msgpack_packer ip;
    msgpack_packer_init(&ip, &info, msgpack_sbuffer_write);
    pack_self_info(c, &ip);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_unpack_next(&up, info.data, info.size, NULL);
    msgpack_pack_map(&pk, up.data.via.map.size + 1);
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        msgpack_pack_object(&pk, up.data.via.map.ptr[i].key);
        msgpack_pack_object(&pk, up.data.via.map.ptr[i].val);
    }
    wire_pack_cstr(&pk, "role");
    wire_pack_cstr(&pk, c->d->cfg.standby ? "standby" : "voter");
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&info);
    int rc = -1;
    if (zmq_connect(s, endpoint) < 0) {
        snprintf(err, errlen, "%s: %s", endpoint, zmq_strerror(errno));
    } else if (zmq_send(s, sb.data, sb.size, 0) < 0) {
        snprintf(err, errlen, "%s: %s", endpoint, zmq_strerror(errno));
    } else {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s, 0) < 0) {
            snprintf(err, errlen, "%s: no answer", endpoint);
        } else {
            msgpack_unpacked_init(&up);
            wire_reply_t rep;
            if (msgpack_unpack_next(&up, zmq_msg_data(&msg), zmq_msg_size(&msg), NULL) !=
                    MSGPACK_UNPACK_SUCCESS ||
                wire_reply_parse(&up.data, &rep) != 0) {
                snprintf(err, errlen, "%s: a malformed answer", endpoint);
            } else if (rep.ok) {
                rc = 0;
            } else {
                snprintf(err, errlen, "%s: %s: %.*s", endpoint, jobq_code_name(rep.code),
                         (int)rep.message_len, rep.message);
                /* NotLeader names where to go: the leader's first endpoint
                 * of the same transport */
                const msgpack_object *e = wire_map_get(&up.data, "error");
                const msgpack_object *l = e ? wire_map_get(e, "leader") : NULL;
                const msgpack_object *eps = l ? wire_map_get(l, "endpoints") : NULL;
                bool tcp = !strncmp(endpoint, "tcp://", 6);
                for (uint32_t k = 0; eps && eps->type == MSGPACK_OBJECT_ARRAY &&
                                     k < eps->via.array.size; k++) {
                    const msgpack_object *x = &eps->via.array.ptr[k];
                    if (x->type != MSGPACK_OBJECT_STR || x->via.str.size >= nextlen ||
                        (x->via.str.size > 6 && !memcmp(x->via.str.ptr, "tcp://", 6)) != tcp)
                        continue;
                    memcpy(next, x->via.str.ptr, x->via.str.size);
                    next[x->via.str.size] = '\0';
                    break;
                }
            }
            msgpack_unpacked_destroy(&up);
        }
        zmq_msg_close(&msg);
    }
    msgpack_sbuffer_destroy(&sb);
    zmq_close(s);
    return rc;
}

int jq_cluster_join(jq_cluster_t *c, double timeout_s, char *err, size_t errlen)
{
    if (!c->pristine || !c->d->cfg.njoin)
        return 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned attempt = 0;; attempt++) {
        const char *ep = c->d->cfg.join[attempt % c->d->cfg.njoin];
        char next[512] = "";
        for (int hop = 0; hop < 5; hop++) {
            if (join_once(c, ep, next, sizeof next, err, errlen) == 0) {
                jq_log(JQ_LOG_NOTICE, "cluster: joined through %s as node %llu", ep,
                       (unsigned long long)c->id);
                return 0;
            }
            if (!next[0])
                break;
            ep = next;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 >
            timeout_s)
            return -1;
        jq_log(JQ_LOG_INFO, "cluster: joining: %s; trying again", err);
        usleep(500000);
    }
}

void jq_cluster_destroy(jq_cluster_t **cp)
{
    if (!cp || !*cp)
        return;
    jq_cluster_t *c = *cp;
    atomic_store(&c->stop, true);
    if (c->started) {
        uv_async_send(&c->wake);
        pthread_join(c->thread, NULL);
    } else if (c->loop_ready) {
        if (c->raft_ready) {
            raft_close(&c->raft, close_handles);
        } else {
            uv_close((uv_handle_t *)&c->wake, NULL);
            uv_close((uv_handle_t *)&c->intake, NULL);
            uv_close((uv_handle_t *)&c->watch, NULL);
        }
        uv_run(&c->loop, UV_RUN_DEFAULT);
    }
    if (c->io_ready)
        raft_uv_close(&c->io);
    if (c->transport_ready)
        raft_uv_tcp_close(&c->transport);
    if (c->loop_ready)
        uv_loop_close(&c->loop);
    pthread_mutex_lock(&c->mu);
    nodes_clear(c);
    for (cmd_t *m = c->cmds; m;) {
        cmd_t *next = m->next;
        m->done = true;
        m->rc = -1;
        m->next = NULL;
        m = next;
    }
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    *cp = NULL;
}
