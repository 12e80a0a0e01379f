/* handle_nodes.c: query_nodes, add_node, remove_node and transfer_leader
 * (Ganeti's node requests) on a --cluster daemon. The changes wait,
 * bounded, for the cluster thread to commit them: they are rare, an
 * operator's, and never touch the table. */
#include "cluster.h"
#include "daemon.h"

#include <stdio.h>
#include <string.h>

static jobq_code_t not_clustered(jq_call_t *c)
{
    snprintf(c->err, c->errlen, "this jobqd runs without --cluster: it has no nodes");
    return JOBQ_ERR_BAD_ARGUMENT;
}

jobq_code_t jq_handle_query_nodes(jq_call_t *c)
{
    if (!c->d->cluster)
        return not_clustered(c);
    jq_cluster_pack_nodes(c->d->cluster, c->pk);
    return JOBQ_ERR_NONE;
}

static bool str_arg(jq_call_t *c, const char *key, bool required, char *out, size_t len)
{
    const msgpack_object *o = wire_map_get(c->args, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required)
            snprintf(c->err, c->errlen, "%s is required", key);
        out[0] = '\0';
        return !required;
    }
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= len) {
        snprintf(c->err, c->errlen, "%s: expected a string of under %zu bytes", key, len);
        return false;
    }
    memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = '\0';
    return true;
}

static bool endpoints_arg(jq_call_t *c, const char *key)
{
    const msgpack_object *o = wire_map_get(c->args, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return true;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > JQ_MAX_LISTEN + 1)
        goto bad;
    for (uint32_t i = 0; i < o->via.array.size; i++)
        if (o->via.array.ptr[i].type != MSGPACK_OBJECT_STR ||
            o->via.array.ptr[i].via.str.size == 0 || o->via.array.ptr[i].via.str.size >= 512)
            goto bad;
    return true;
bad:
    snprintf(c->err, c->errlen, "%s: expected a list of at most %d endpoints", key,
             JQ_MAX_LISTEN + 1);
    return false;
}

static jobq_code_t change_failed(bool not_leader)
{
    return not_leader ? JOBQ_ERR_NOT_LEADER : JOBQ_ERR_INTERNAL;
}

jobq_code_t jq_handle_add_node(jq_call_t *c)
{
    if (!c->d->cluster)
        return not_clustered(c);
    int64_t id;
    char address[256], role[16], name[65];
    if (jq_arg_int(c, "id", true, 1, (1ll << 53) - 1, &id) < 0 ||
        !str_arg(c, "address", true, address, sizeof address) ||
        !str_arg(c, "role", false, role, sizeof role) ||
        !str_arg(c, "name", false, name, sizeof name) || !endpoints_arg(c, "endpoints") ||
        !endpoints_arg(c, "workers") || !endpoints_arg(c, "publish"))
        return JOBQ_ERR_BAD_ARGUMENT;
    if (jq_node_address_parse(address, NULL, 0, NULL) < 0) {
        snprintf(c->err, c->errlen, "address: expected HOST:PORT, got '%s'", address);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    if (role[0] && strcmp(role, "voter") && strcmp(role, "standby")) {
        snprintf(c->err, c->errlen, "role: expected voter or standby, got '%s'", role);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    /* The node's record, as clients will be shown it. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, (uint64_t)id);
    wire_pack_cstr(&pk, "name");
    wire_pack_cstr(&pk, name);
    wire_pack_cstr(&pk, "address");
    wire_pack_cstr(&pk, address);
    static const char *const lists[] = {"endpoints", "workers", "publish"};
    for (size_t i = 0; i < 3; i++) {
        const msgpack_object *o = wire_map_get(c->args, lists[i]);
        wire_pack_cstr(&pk, lists[i]);
        if (o && o->type == MSGPACK_OBJECT_ARRAY)
            msgpack_pack_object(&pk, *o);
        else
            msgpack_pack_array(&pk, 0);
    }
    bool not_leader = false;
    int rc = jq_cluster_add(c->d->cluster, (uint64_t)id, address, strcmp(role, "standby") != 0,
                            sb.data, sb.size, &not_leader, c->err, c->errlen);
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0)
        return change_failed(not_leader);
    msgpack_pack_map(c->pk, 1);
    wire_pack_cstr(c->pk, "id");
    msgpack_pack_uint64(c->pk, (uint64_t)id);
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_remove_node(jq_call_t *c)
{
    if (!c->d->cluster)
        return not_clustered(c);
    int64_t id;
    if (jq_arg_int(c, "id", true, 1, (1ll << 53) - 1, &id) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    bool not_leader = false;
    if (jq_cluster_remove(c->d->cluster, (uint64_t)id, &not_leader, c->err, c->errlen) < 0)
        return change_failed(not_leader);
    msgpack_pack_nil(c->pk);
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_transfer_leader(jq_call_t *c)
{
    if (!c->d->cluster)
        return not_clustered(c);
    int64_t id = 0;
    if (jq_arg_int(c, "id", false, 1, (1ll << 53) - 1, &id) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    bool not_leader = false;
    uint64_t leader = 0;
    if (jq_cluster_transfer(c->d->cluster, (uint64_t)id, &leader, &not_leader, c->err,
                            c->errlen) < 0)
        return change_failed(not_leader);
    msgpack_pack_map(c->pk, 1);
    wire_pack_cstr(c->pk, "leader");
    msgpack_pack_uint64(c->pk, leader);
    return JOBQ_ERR_NONE;
}
