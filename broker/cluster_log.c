/* cluster_log.c: the Raft entries and the state machine they drive (see
 * cluster.h). Entries (msgpack): ["jq1", type, proposer, ...]
 *   BATCH  [job, serial, kind, bytes] x n   change records, in order
 *   NODE   info                             a node's record (endpoints, name)
 *   GONE   id                               a node was removed
 *   INIT   epoch                            the cluster's event epoch
 * `proposer` is a random number of this process: an entry of its own is
 * one whose records came from this node's intake, so its apply advances
 * `durable` and releases what waited for them. Every node applies every
 * entry to its own store with the store's code (jq_store_apply). */
#include "cluster_int.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* ---- node records ---- */

/* key: [the ipc socket `name` in run_dir, then the configured endpoints]. */
static void pack_endpoints(msgpack_packer *pk, const char *key, const char *run_dir,
                           const char *name, const char (*eps)[512], unsigned n)
{
    char ep[JQ_PATH_BYTES + 32];
    wire_pack_cstr(pk, key);
    msgpack_pack_array(pk, 1 + n);
    snprintf(ep, sizeof ep, "ipc://%s/%s", run_dir, name);
    wire_pack_cstr(pk, ep);
    for (unsigned i = 0; i < n; i++)
        wire_pack_cstr(pk, eps[i]);
}

/* This node's record: what NotLeader and query_nodes tell clients. */
void cl_pack_self_info(jq_cluster_t *c, msgpack_packer *pk)
{
    const jq_config_t *cfg = &c->d->cfg;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    msgpack_pack_map(pk, 6);
    wire_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, c->id);
    wire_pack_cstr(pk, "name");
    wire_pack_cstr(pk, host);
    wire_pack_cstr(pk, "address");
    wire_pack_cstr(pk, cfg->node_address);
    /* Absolute: a client elsewhere than this daemon's directory uses them. */
    char run_dir[JQ_PATH_BYTES];
    if (!realpath(cfg->run_dir, run_dir))
        snprintf(run_dir, sizeof run_dir, "%s", cfg->run_dir);
    pack_endpoints(pk, "endpoints", run_dir, "jobq.sock", cfg->listen, cfg->nlisten);
    pack_endpoints(pk, "workers", run_dir, "workers.sock", cfg->workers, cfg->nworkers);
    pack_endpoints(pk, "publish", run_dir, "events.sock", cfg->publish, cfg->npublish);
}

/* Under mu. */
node_t *cl_node_find(jq_cluster_t *c, uint64_t id)
{
    for (unsigned i = 0; i < c->nnodes; i++)
        if (c->nodes[i].id == id)
            return &c->nodes[i];
    return NULL;
}

void cl_nodes_clear(jq_cluster_t *c)
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
    node_t *n = cl_node_find(c, id);
    if (!n && c->nnodes == MAX_NODES) { /* the oldest record of a node gone goes */
        unsigned drop = 0;
        for (unsigned i = 0; i < c->nnodes; i++) {
            bool member = false;
            for (unsigned k = 0; k < c->raft.configuration.n; k++)
                member |= c->raft.configuration.servers[k].id == c->nodes[i].id;
            if (!member) {
                drop = i;
                break;
            }
        }
        free(c->nodes[drop].info);
        c->nodes[drop] = c->nodes[--c->nnodes];
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
    node_t *n = cl_node_find(c, id);
    if (!n)
        return;
    free(n->info);
    *n = c->nodes[--c->nnodes];
}

/* Under mu: the records kept in the store (after a restore). */
static void nodes_load(jq_cluster_t *c)
{
    cl_nodes_clear(c);
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
        if (r->via.array.ptr[2].via.u64 > JQ_CHANGE_OPCODES)
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
        ch->seq = 0; /* jq_store_apply gives it */
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

int cl_fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
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
        int phase = atomic_load(&c->phase);
        if (rc == 0 && !mine && (phase == PHASE_FOLLOWING || phase == PHASE_PROMOTING))
            jq_changeq_push(c->view_q, head); /* the follower's view (loop.c) */
        else if (rc < 0 || !mine)
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
        if (rc < 0) /* skipped, as on every node: never worth stopping them all */
            jq_log(JQ_LOG_WARNING, "cluster: a node record without an id was skipped");
        rc = jq_store_apply(c->d->store, NULL, 0, false, &m, 1, err, sizeof err);
        msgpack_sbuffer_destroy(&sb);
    } else if (type == ENTRY_INIT && a->via.array.ptr[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        /* The first INIT of the log names the epoch; a later one (a leader
         * elected before its log was replayed proposes one too) changes
         * nothing, on every node alike. */
        uint64_t epoch = a->via.array.ptr[3].via.u64;
        jq_store_meta_t m = {"epoch", &epoch, sizeof epoch};
        if (!atomic_load(&c->epoch)) {
            rc = jq_store_apply(c->d->store, NULL, 0, false, &m, 1, err, sizeof err);
            if (rc == 0)
                atomic_store(&c->epoch, epoch);
        }
    } else {
        snprintf(err, sizeof err, "an entry of unknown type %llu", (unsigned long long)type);
        rc = -1;
    }
    msgpack_unpacked_destroy(&up);
    if (rc < 0)
        fatal_apply(c, err);
    return 0;
}

/* Synchronous, on the cluster thread: libraft 0.15's libuv I/O has no
 * async work for a snapshot to be read elsewhere (docs/cluster.md). */
int cl_fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    jq_cluster_t *c = fsm->data;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    int64_t t0 = wall_us();
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
    jq_log(JQ_LOG_INFO, "cluster: snapshot at index %llu: %zu bytes in %.3f s",
           (unsigned long long)raft_last_applied(&c->raft), sb.size,
           (double)(wall_us() - t0) / 1e6);
    return 0;
}

int cl_fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
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

int cl_fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
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
    jq_change_t *reload = calloc(1, sizeof *reload);
    if (reload) { /* the view follows the new store (loop.c) */
        reload->kind = JQ_VIEW_RELOAD;
        jq_changeq_push(c->view_q, reload);
    }
    raft_free(buf->base);
    jq_log(JQ_LOG_INFO, "cluster: store restored from a snapshot (%zu bytes)", buf->len);
    return 0;
}

static void applied_cb(struct raft_apply *req, int status, void *result);

int cl_propose(jq_cluster_t *c, msgpack_sbuffer *sb)
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
        cl_restart_as_follower(c, raft_strerror(status));
}

void cl_entry_begin(jq_cluster_t *c, msgpack_packer *pk, int type, uint32_t n)
{
    msgpack_pack_array(pk, 3 + n);
    msgpack_pack_str_with_body(pk, ENTRY_MAGIC, 3);
    msgpack_pack_uint64(pk, (uint64_t)type);
    msgpack_pack_uint64(pk, c->nonce);
}

/* The intake's records, as entries. */
void cl_on_intake(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    jq_cluster_t *c = h->data;
    jq_change_t *head = jq_changeq_take(jq_store_intake(c->d->store));
    int phase = atomic_load(&c->phase);
    if (head && (phase == PHASE_FOLLOWING || phase == PHASE_DEPOSED)) {
        /* Nothing serves here: nothing made these for a client. */
        jq_log(JQ_LOG_WARNING, "cluster: dropping changes made while not leading");
        jq_change_list_free(&head);
        return;
    }
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
        cl_entry_begin(c, &pk, ENTRY_BATCH, n);
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
        int rc = cl_propose(c, &sb);
        if (rc != 0) {
            /* Records this node acknowledged nothing for yet, but its
             * table has them: only a fresh start makes the two agree. */
            jq_change_list_free(&head);
            msgpack_sbuffer_destroy(&sb);
            cl_restart_as_follower(c, raft_strerror(rc));
            return;
        }
    }
    msgpack_sbuffer_destroy(&sb);
}

