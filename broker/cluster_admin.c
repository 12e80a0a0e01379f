/* cluster_admin.c: the node requests a handler passes to the cluster
 * thread (add, remove, transfer: a command queue and a bounded wait), what
 * query_nodes, ping and NotLeader read, and a new node's join. */
#include "cluster_int.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <zmq.h>

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
    if (status == RAFT_BADROLE) /* it has that role already */
        status = 0;
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
        cl_entry_begin(m->c, &pk, ENTRY_GONE, 1);
        msgpack_pack_uint64(&pk, m->id);
        cl_propose(m->c, &sb); /* the record only: the removal itself is committed */
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
    /* libraft calls back when the target leads, or when the election
     * timeout passed: this node no longer leading is the sign it went. */
    bool moved = raft_state(&m->c->raft) != RAFT_LEADER &&
                 (m->id == 0 || lid == 0 || lid == m->id);
    cmd_finish(m, moved ? 0 : -1, err);
}

void cl_run_cmd(jq_cluster_t *c, cmd_t *m)
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
            cl_entry_begin(c, &pk, ENTRY_NODE, 1);
            msgpack_sbuffer_write(&sb, m->info, m->info_len);
            rc = cl_propose(c, &sb);
            msgpack_sbuffer_destroy(&sb);
        }
        const struct raft_server *known = NULL;
        for (unsigned i = 0; i < c->raft.configuration.n; i++)
            if (c->raft.configuration.servers[i].id == m->id)
                known = &c->raft.configuration.servers[i];
        if (rc == 0 && known && strcmp(known->address, m->address) != 0)
            rc = RAFT_DUPLICATEID; /* another node's id */
        else if (rc == 0 && known) /* a join asked again: give it its role */
            added_cb(&m->change, 0);
        else if (rc == 0)
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
    /* The answer names the node that leads now: wait (bounded) until this
     * node has heard from it. */
    *leader = 0;
    for (int i = 0; rc == 0 && i < 250 && !*leader; i++) {
        pthread_mutex_lock(&c->mu);
        if (c->leader_id && c->leader_id != c->id)
            *leader = c->leader_id;
        pthread_mutex_unlock(&c->mu);
        if (!*leader)
            usleep(20000);
    }
    if (rc == 0 && !*leader) {
        snprintf(err, errlen, "leadership was handed over, but no new leader was heard of "
                              "within 5 s");
        rc = -1;
    }
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
    /* Elected but still loading the queue (or deposed): no leader to name
     * yet — naming this node would send clients straight back here. */
    bool self_not_serving = c->leader_id == c->id && !jq_cluster_leading(c);
    node_t *n = c->leader_id && !self_not_serving ? cl_node_find(c, c->leader_id) : NULL;
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
    int phase = atomic_load(&c->phase);
    wire_pack_cstr(pk, phase == PHASE_DEPOSED ? "follower"
                       : c->state == RAFT_LEADER && phase != PHASE_LEADING ? "candidate"
                                                                            : state_name(c->state));
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
        const node_t *n = cl_node_find(c, p->id);
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

/* ---- joining ---- */

/* Signals wait for the loop, which does not run yet while joining. */
static bool stop_pending(void)
{
    sigset_t pending;
    return sigpending(&pending) == 0 &&
           (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT));
}

static int join_once(jq_cluster_t *c, const char *endpoint, char *next, size_t nextlen,
                     char *err, size_t errlen)
{
    void *s = zmq_socket(c->d->zctx, ZMQ_DEALER);
    if (!s) {
        snprintf(err, errlen, "no socket: %s", zmq_strerror(errno));
        return -1;
    }
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_request_begin(&pk, 1, "add_node");
    /* add_node's arguments are this node's record plus its role */
    msgpack_sbuffer info;
    msgpack_sbuffer_init(&info);
    msgpack_packer ip;
    msgpack_packer_init(&ip, &info, msgpack_sbuffer_write);
    cl_pack_self_info(c, &ip);
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
        /* Half a second at a time: a SIGTERM meanwhile stops the join. */
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        int ready = 0;
        for (int i = 0; i < 70 && !ready && !stop_pending(); i++)
            ready = zmq_poll(&it, 1, 500);
        if (ready <= 0 || zmq_msg_recv(&msg, s, ZMQ_DONTWAIT) < 0) {
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
    if (!strcmp(c->d->cfg.join[0], "wait")) { /* an operator adds it */
        jq_log(JQ_LOG_NOTICE, "cluster: waiting to be added: on the leader, jobq nodes add "
                              "%llu %s", (unsigned long long)c->id, c->d->cfg.node_address);
        return 0;
    }
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
        if (stop_pending()) {
            snprintf(err, errlen, "stopped (a signal) while joining the cluster");
            return -1;
        }
        jq_log(JQ_LOG_INFO, "cluster: joining: %s; trying again", err);
        usleep(500000);
    }
}


void jq_cluster_get_stats(jq_cluster_t *c, jq_cluster_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->leading = jq_cluster_leading(c);
    pthread_mutex_lock(&c->mu);
    out->nodes = c->npeers;
    out->term = c->term;
    out->applied = c->applied;
    out->commit = c->commit;
    out->last_index = c->last_index;
    for (unsigned i = 0; i < c->npeers && c->state == RAFT_LEADER; i++) {
        if (c->peers[i].id == c->id)
            continue;
        out->peer_id[out->npeers] = c->peers[i].id;
        out->peer_lag[out->npeers++] =
            c->last_index > c->peers[i].match ? c->last_index - c->peers[i].match : 0;
    }
    pthread_mutex_unlock(&c->mu);
}
