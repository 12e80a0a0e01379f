/* jobq_json.c: msgpack <-> jansson conversion for libjobq (see jobq_json.h).
 *
 * Both directions are plain recursive walks with a depth budget, so a hostile
 * or buggy peer cannot make us recurse without bound; the budget equals what
 * msgpack-c can unpack at all. Strings coming from the wire are taken as
 * UTF-8; bytes that do not form valid UTF-8 are replaced by '?' rather than
 * failing the whole reply, because jansson only holds valid UTF-8.
 */
#include "jobq_json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0
 * when the bytes there are not one. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A JSON string for n bytes at s, replacing invalid UTF-8 bytes by '?'. */
static json_t *string_from_bytes(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    char *copy = malloc(n ? n : 1);
    if (!copy)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_seq_len(u + i, n - i);
        if (len == 0) {
            copy[i] = '?';
            i++;
        } else {
            memcpy(copy + i, s + i, len);
            i += len;
        }
    }
    j = json_stringn(copy, n);
    free(copy);
    return j;
}

char *jobq_utf8_clean(const char *s, size_t n, size_t max, size_t *outlen)
{
    char *out = malloc((n < max ? n : max) + 1);
    if (!out)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len = utf8_seq_len(u + i, n - i);
        size_t take = len ? len : 1;
        if (o + take > max)
            break;
        if (len)
            memcpy(out + o, s + i, len);
        else
            out[o] = '?';
        o += take;
        i += take;
    }
    out[o] = '\0';
    if (outlen)
        *outlen = o;
    return out;
}

static json_t *from_msgpack(const msgpack_object *o, int depth, char *err, size_t errlen)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            return json_null();
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return string_from_bytes(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        if (depth <= 0) {
            set_err(err, errlen, "value nested too deeply");
            return NULL;
        }
        json_t *arr = json_array();
        if (!arr)
            return NULL;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *item = from_msgpack(&o->via.array.ptr[i], depth - 1, err, errlen);
            if (!item || json_array_append_new(arr, item) < 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case MSGPACK_OBJECT_MAP: {
        if (depth <= 0) {
            set_err(err, errlen, "value nested too deeply");
            return NULL;
        }
        json_t *obj = json_object();
        if (!obj)
            return NULL;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            json_t *key;
            if (k->type == MSGPACK_OBJECT_STR) {
                key = string_from_bytes(k->via.str.ptr, k->via.str.size);
            } else if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                       k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                char buf[32];
                if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                    snprintf(buf, sizeof buf, "%" PRIu64, k->via.u64);
                else
                    snprintf(buf, sizeof buf, "%" PRId64, k->via.i64);
                key = json_string(buf);
            } else {
                set_err(err, errlen, "map key is neither a string nor an integer");
                json_decref(obj);
                return NULL;
            }
            json_t *val = key ? from_msgpack(&o->via.map.ptr[i].val, depth - 1, err, errlen)
                              : NULL;
            /* Keys may hold NUL bytes; jansson's length-aware setter keeps them. */
            int rc = val ? json_object_setn_new(obj, json_string_value(key),
                                                json_string_length(key), val)
                         : -1;
            json_decref(key);
            if (rc < 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    case MSGPACK_OBJECT_BIN:
        set_err(err, errlen, "binary value cannot be represented in JSON");
        return NULL;
    default:
        set_err(err, errlen, "extension value cannot be represented in JSON");
        return NULL;
    }
}

json_t *jobq_json_from_msgpack(const msgpack_object *obj, int max_depth,
                               char *err, size_t errlen)
{
    set_err(err, errlen, "out of memory");
    if (!obj) {
        set_err(err, errlen, "no value");
        return NULL;
    }
    return from_msgpack(obj, max_depth, err, errlen);
}

static int to_msgpack(msgpack_packer *pk, const json_t *j, int depth, char *err, size_t errlen)
{
    switch (json_typeof(j)) {
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(j));
    case JSON_STRING: {
        size_t n = json_string_length(j);
        if (msgpack_pack_str(pk, n) < 0)
            return -1;
        return msgpack_pack_str_body(pk, json_string_value(j), n);
    }
    case JSON_ARRAY: {
        if (depth <= 0) {
            set_err(err, errlen, "value nested too deeply");
            return -1;
        }
        size_t n = json_array_size(j);
        if (msgpack_pack_array(pk, n) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (to_msgpack(pk, json_array_get(j, i), depth - 1, err, errlen) < 0)
                return -1;
        return 0;
    }
    case JSON_OBJECT: {
        if (depth <= 0) {
            set_err(err, errlen, "value nested too deeply");
            return -1;
        }
        if (msgpack_pack_map(pk, json_object_size(j)) < 0)
            return -1;
        const char *key;
        size_t klen;
        json_t *val;
        json_object_keylen_foreach((json_t *)j, key, klen, val) {
            if (msgpack_pack_str(pk, klen) < 0 || msgpack_pack_str_body(pk, key, klen) < 0)
                return -1;
            if (to_msgpack(pk, val, depth - 1, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    }
    set_err(err, errlen, "unknown JSON type");
    return -1;
}

int jobq_json_to_msgpack(msgpack_packer *pk, const json_t *value, int max_depth,
                         char *err, size_t errlen)
{
    set_err(err, errlen, "out of memory");
    if (!value) {
        set_err(err, errlen, "no value");
        return -1;
    }
    return to_msgpack(pk, value, max_depth, err, errlen);
}
