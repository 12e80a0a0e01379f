/* wire.c: envelope framing and error names of the jobq protocol (v1).
 * See wire.h and docs/protocol.md. Peer input is validated, never asserted. */
#include "wire.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[JOBQ_ERR__COUNT] = {
    [JOBQ_ERR_NONE] = "None",
    [JOBQ_ERR_MALFORMED] = "Malformed",
    [JOBQ_ERR_VERSION] = "VersionMismatch",
    [JOBQ_ERR_UNKNOWN_METHOD] = "UnknownMethod",
    [JOBQ_ERR_BAD_ARGUMENT] = "BadArgument",
    [JOBQ_ERR_TOO_LARGE] = "TooLarge",
    [JOBQ_ERR_QUEUE_FULL] = "QueueFull",
    [JOBQ_ERR_DRAINED] = "Drained",
    [JOBQ_ERR_SHUTTING_DOWN] = "ShuttingDown",
    [JOBQ_ERR_UNKNOWN_OPCODE] = "UnknownOpcode",
    [JOBQ_ERR_INVALID_PRIORITY] = "InvalidPriority",
    [JOBQ_ERR_INVALID_DEPENDS] = "InvalidDependency",
    [JOBQ_ERR_UNKNOWN_FIELD] = "UnknownField",
    [JOBQ_ERR_TOO_MANY_WAITERS] = "TooManyWaiters",
    [JOBQ_ERR_STORE_FAILED] = "StoreFailed",
    [JOBQ_ERR_BUSY] = "Busy",
    [JOBQ_ERR_INTERNAL] = "Internal",
    [JOBQ_ERR_TIMEOUT] = "Timeout",
    [JOBQ_ERR_TRANSPORT] = "Transport",
    [JOBQ_ERR_NOT_RUNNING] = "NotRunning",
    [JOBQ_ERR_TOKEN_REUSED] = "TokenReused",
    [JOBQ_ERR_PERMISSION_DENIED] = "PermissionDenied",
    [JOBQ_ERR_NOT_LEADER] = "NotLeader",
};

const char *jobq_code_name(jobq_code_t code)
{
    if ((int)code < 0 || code >= JOBQ_ERR__COUNT)
        return "Internal";
    return code_names[code];
}

jobq_code_t jobq_code_from_name(const char *name, size_t len)
{
    for (int i = 0; i < JOBQ_ERR__COUNT; i++)
        if (strlen(code_names[i]) == len && memcmp(code_names[i], name, len) == 0)
            return (jobq_code_t)i;
    return JOBQ_ERR_INTERNAL;
}

bool wire_str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

const msgpack_object *wire_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    /* The key's length once, not per entry: a submitted opcode is looked
     * up a dozen times, and strlen per entry was 4 % of a batched
     * submission's daemon CPU. */
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool wire_get_int(const msgpack_object *o, int64_t *out)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return false;
        *out = (int64_t)o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = o->via.i64;
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64) || floor(o->via.f64) != o->via.f64 ||
            fabs(o->via.f64) > 9.0e15)
            return false;
        *out = (int64_t)o->via.f64;
        return true;
    default:
        return false;
    }
}

bool wire_get_number(const msgpack_object *o, double *out)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)o->via.i64;
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            return false;
        *out = o->via.f64;
        return true;
    default:
        return false;
    }
}

void wire_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void wire_pack_cstr(msgpack_packer *pk, const char *s)
{
    wire_pack_strn(pk, s, strlen(s));
}

void wire_pack_ts(msgpack_packer *pk, int64_t usec)
{
    if (usec <= 0) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, usec / 1000000);
    msgpack_pack_int64(pk, usec % 1000000);
}

bool wire_get_ts(const msgpack_object *o, int64_t *usec)
{
    int64_t sec, us;
    *usec = 0;
    /* Range-checked before the product: a peer's or a damaged record's
     * [huge, x] must not overflow (found by tests/fuzz/fuzz_job.c). */
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        !wire_get_int(&o->via.array.ptr[0], &sec) || !wire_get_int(&o->via.array.ptr[1], &us) ||
        sec < 0 || sec > (INT64_MAX - 999999) / 1000000 || us < 0 || us > 999999)
        return false;
    *usec = sec * 1000000 + us;
    return true;
}

static void pack_head(msgpack_packer *pk, size_t entries, uint64_t id, bool has_id)
{
    msgpack_pack_map(pk, entries);
    wire_pack_cstr(pk, "v");
    msgpack_pack_int(pk, JOBQ_PROTOCOL_VERSION);
    wire_pack_cstr(pk, "id");
    if (has_id)
        msgpack_pack_uint64(pk, id);
    else
        msgpack_pack_nil(pk);
}

void wire_request_begin(msgpack_packer *pk, uint64_t id, const char *method)
{
    pack_head(pk, 4, id, true);
    wire_pack_cstr(pk, "method");
    wire_pack_cstr(pk, method);
    wire_pack_cstr(pk, "args");
}

void wire_reply_ok_begin(msgpack_packer *pk, uint64_t id, bool has_id)
{
    pack_head(pk, 4, id, has_id);
    wire_pack_cstr(pk, "ok");
    msgpack_pack_true(pk);
    wire_pack_cstr(pk, "result");
}

int wire_utf8_quote_len(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return (int)n;
    size_t len = max;
    while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
        len--; /* s[len] starts a character: the cut falls between two */
    return (int)len;
}

/* A message cut by snprintf may end inside a character: drop its start. */
static size_t utf8_whole_len(const char *s)
{
    size_t n = strlen(s), start = n;
    while (start > 0 && ((unsigned char)s[start - 1] & 0xC0) == 0x80 && n - start < 3)
        start--;
    if (start == 0 || ((unsigned char)s[start - 1] & 0x80) == 0)
        return n; /* ASCII last */
    unsigned char lead = (unsigned char)s[start - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return n - (start - 1) >= need ? n : start - 1;
}

void wire_reply_error(msgpack_packer *pk, uint64_t id, bool has_id,
                      jobq_code_t code, const char *message)
{
    wire_reply_error_begin(pk, id, has_id, code, message, 0);
}

void wire_reply_error_begin(msgpack_packer *pk, uint64_t id, bool has_id, jobq_code_t code,
                            const char *message, uint32_t extra)
{
    pack_head(pk, 4, id, has_id);
    wire_pack_cstr(pk, "ok");
    msgpack_pack_false(pk);
    wire_pack_cstr(pk, "error");
    msgpack_pack_map(pk, 2 + extra);
    wire_pack_cstr(pk, "code");
    wire_pack_cstr(pk, jobq_code_name(code));
    wire_pack_cstr(pk, "message");
    message = message ? message : "";
    wire_pack_strn(pk, message, utf8_whole_len(message));
}

void wire_reply_keepalive(msgpack_packer *pk, uint64_t id)
{
    pack_head(pk, 3, id, true);
    wire_pack_cstr(pk, "keepalive");
    msgpack_pack_true(pk);
}

jobq_code_t wire_request_parse(const msgpack_object *root, wire_request_t *req,
                               char *err, size_t errlen)
{
    memset(req, 0, sizeof *req);
    if (root->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "request is not a msgpack map");
        return JOBQ_ERR_MALFORMED;
    }
    const msgpack_object *id = wire_map_get(root, "id");
    if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        req->id = id->via.u64;
        req->has_id = true;
    }
    const msgpack_object *v = wire_map_get(root, "v");
    int64_t version;
    if (!v || !wire_get_int(v, &version)) {
        snprintf(err, errlen, "request has no integer protocol version 'v'");
        return JOBQ_ERR_MALFORMED;
    }
    if (!req->has_id) {
        snprintf(err, errlen, "request has no unsigned integer 'id'");
        return JOBQ_ERR_MALFORMED;
    }
    if (version != JOBQ_PROTOCOL_VERSION) {
        snprintf(err, errlen, "protocol version %lld not supported (server speaks %d)",
                 (long long)version, JOBQ_PROTOCOL_VERSION);
        return JOBQ_ERR_VERSION;
    }
    const msgpack_object *m = wire_map_get(root, "method");
    if (!m || m->type != MSGPACK_OBJECT_STR) {
        snprintf(err, errlen, "request has no string 'method'");
        return JOBQ_ERR_MALFORMED;
    }
    req->method = m->via.str.ptr;
    req->method_len = m->via.str.size;
    const msgpack_object *args = wire_map_get(root, "args");
    if (args && args->type != MSGPACK_OBJECT_NIL) {
        if (args->type != MSGPACK_OBJECT_MAP) {
            snprintf(err, errlen, "'args' must be a map");
            return JOBQ_ERR_MALFORMED;
        }
        req->args = args;
    }
    return JOBQ_ERR_NONE;
}

int wire_reply_parse(const msgpack_object *root, wire_reply_t *rep)
{
    memset(rep, 0, sizeof *rep);
    if (root->type != MSGPACK_OBJECT_MAP)
        return -1;
    const msgpack_object *id = wire_map_get(root, "id");
    if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rep->id = id->via.u64;
        rep->has_id = true;
    }
    const msgpack_object *ka = wire_map_get(root, "keepalive");
    if (ka && ka->type == MSGPACK_OBJECT_BOOLEAN && ka->via.boolean) {
        rep->keepalive = true;
        return 0;
    }
    const msgpack_object *ok = wire_map_get(root, "ok");
    if (!ok || ok->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    rep->ok = ok->via.boolean;
    if (rep->ok) {
        rep->result = wire_map_get(root, "result");
        return rep->result ? 0 : -1;
    }
    const msgpack_object *e = wire_map_get(root, "error");
    const msgpack_object *code = wire_map_get(e, "code");
    const msgpack_object *msg = wire_map_get(e, "message");
    if (!code || code->type != MSGPACK_OBJECT_STR)
        return -1;
    rep->code = jobq_code_from_name(code->via.str.ptr, code->via.str.size);
    if (msg && msg->type == MSGPACK_OBJECT_STR) {
        rep->message = msg->via.str.ptr;
        rep->message_len = msg->via.str.size;
    }
    return 0;
}

bool wire_opcode_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > JOBQ_MAX_OP_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int wire_buf_init(wire_buf_t *b, size_t head, size_t first)
{
    *b = (wire_buf_t){.head = head, .cap = first ? first : 64};
    b->mem = malloc(head + b->cap);
    return b->mem ? 0 : -1;
}

int wire_buf_write(void *data, const char *buf, size_t len)
{
    wire_buf_t *b = data;
    if (b->failed)
        return -1;
    if (len > b->cap - b->len) {
        size_t cap = b->cap;
        while (cap - b->len < len) {
            if (cap > SIZE_MAX / 4) {
                b->failed = true;
                return -1;
            }
            cap *= 2;
        }
        char *grown = realloc(b->mem, b->head + cap);
        if (!grown) {
            b->failed = true;
            return -1;
        }
        b->mem = grown;
        b->cap = cap;
    }
    memcpy(b->mem + b->head + b->len, buf, len);
    b->len += len;
    return 0;
}
