/* handle_describe.c: list_fields and list_opcodes, the requests that
 * describe what the daemon offers, so that clients (the CLI's help and
 * completion, monitoring tools) never keep a copy that can drift.
 *
 * Both answer from static tables: the query fields' names and descriptions
 * live beside their definitions in queue/fields.c, each opcode's arguments
 * beside its validation (broker/builtin_ops.c). list_opcodes reports each
 * opcode with its "source" so that opcodes from several sources (built-in
 * today, workers later) fit one reply. */
#include "daemon.h"
#include "opreg.h"
#include "fields.h"

static void pack_kv_str(msgpack_packer *pk, const char *key, const char *val)
{
    wire_pack_cstr(pk, key);
    wire_pack_cstr(pk, val ? val : "");
}

jobq_code_t jq_handle_list_fields(jq_call_t *c)
{
    msgpack_pack_array(c->pk, JQ_F__COUNT);
    for (int f = 0; f < JQ_F__COUNT; f++) {
        msgpack_pack_map(c->pk, 2);
        pack_kv_str(c->pk, "name", jq_field_name((jq_field_t)f));
        pack_kv_str(c->pk, "description", jq_field_description((jq_field_t)f));
    }
    return JOBQ_ERR_NONE;
}

static void pack_default(msgpack_packer *pk, const jq_argdef_t *a)
{
    switch (a->def) {
    case JQ_ARGDEF_BOOL:
        if (a->defval.b)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case JQ_ARGDEF_INT:
        msgpack_pack_int64(pk, a->defval.i);
        break;
    case JQ_ARGDEF_NUMBER:
        msgpack_pack_double(pk, a->defval.d);
        break;
    case JQ_ARGDEF_STRING:
        wire_pack_cstr(pk, a->defval.s);
        break;
    case JQ_ARGDEF_EMPTY_LIST:
        msgpack_pack_array(pk, 0);
        break;
    default:
        msgpack_pack_nil(pk);
        break;
    }
}

static void pack_opdef(msgpack_packer *pk, const jq_opdef_t *def, const char *source)
{
    msgpack_pack_map(pk, 4);
    pack_kv_str(pk, "name", def->name);
    pack_kv_str(pk, "description", def->description);
    pack_kv_str(pk, "source", source);
    wire_pack_cstr(pk, "args");
    size_t n = 0;
    for (const jq_argdef_t *a = def->args; a && a->name; a++)
        n++;
    msgpack_pack_array(pk, n);
    for (const jq_argdef_t *a = def->args; a && a->name; a++) {
        msgpack_pack_map(pk, 5);
        pack_kv_str(pk, "name", a->name);
        pack_kv_str(pk, "type", a->type);
        wire_pack_cstr(pk, "required");
        if (a->required)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        wire_pack_cstr(pk, "default");
        pack_default(pk, a);
        pack_kv_str(pk, "description", a->description);
    }
}

/* Worker opcodes, packed apart and counted (the registry may change
 * between two calls: one pass gives the count and the entries). */
typedef struct {
    msgpack_packer *pk;
    size_t n;
} counted_t;

static void count_and_pack(void *ctx, const jq_opdef_t *def)
{
    counted_t *cw = ctx;
    pack_opdef(cw->pk, def, "worker");
    cw->n++;
}

jobq_code_t jq_handle_list_opcodes(jq_call_t *c)
{
    const jq_opset_t *set = c->d->ops;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer wpk;
    msgpack_packer_init(&wpk, &sb, msgpack_sbuffer_write);
    counted_t cw = {&wpk, 0};
    if (set && set->reg)
        jq_opreg_each(set->reg, count_and_pack, &cw);
    msgpack_pack_array(c->pk, (set ? set->count : 0) + cw.n);
    for (size_t i = 0; set && i < set->count; i++)
        pack_opdef(c->pk, set->defs[i], "builtin");
    if (sb.size)
        c->pk->callback(c->pk->data, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return JOBQ_ERR_NONE;
}
