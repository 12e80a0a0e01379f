/* http_json.c: what the HTTP thread needs to speak JSON to a browser:
 * msgpack values written as JSON text, requests run through the daemon's
 * own request path (jq_dispatch, as a handler thread runs them), and the
 * one small JSON shape the API takes in, a flat object of integers.
 *
 * The daemon links no JSON library: what it writes is a direct walk of
 * msgpack objects, and what it reads is deliberately tiny. */
#include "http_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Bytes that would end a <script> or confuse an HTML parser are escaped
 * too: a page may one day embed this text. */
void jq_json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '<': fputs("\\u003c", f); break;
        case '>': fputs("\\u003e", f); break;
        case '&': fputs("\\u0026", f); break;
        default:
            if (ch < 0x20 || ch == 0x7f)
                fprintf(f, "\\u%04x", ch);
            else
                fputc(ch, f);
        }
    }
    fputc('"', f);
}

void jq_json_cstr(FILE *f, const char *s)
{
    jq_json_string(f, s, strlen(s));
}

/* Strings the daemon stores were checked for UTF-8 when they arrived
 * (proto/scan.c); a bin (a client may send one as an argument) has no JSON
 * form and is written as null, as libjobq does. */
void jq_json_msgpack(FILE *f, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        fputs("null", f);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        fputs(o->via.boolean ? "true" : "false", f);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        fprintf(f, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        fprintf(f, "%lld", (long long)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(o->via.f64)) {
            /* The shortest form that reads back as the same double. */
            char num[40];
            snprintf(num, sizeof num, "%.15g", o->via.f64);
            if (strtod(num, NULL) != o->via.f64)
                snprintf(num, sizeof num, "%.17g", o->via.f64);
            fputs(num, f);
        } else {
            fputs("null", f);
        }
        break;
    case MSGPACK_OBJECT_STR:
        jq_json_string(f, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', f);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                fputc(',', f);
            jq_json_msgpack(f, &o->via.array.ptr[i]);
        }
        fputc(']', f);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', f);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i)
                fputc(',', f);
            if (k->type == MSGPACK_OBJECT_STR) {
                jq_json_string(f, k->via.str.ptr, k->via.str.size);
            } else if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                fprintf(f, "\"%llu\"", (unsigned long long)k->via.u64);
            } else if (k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                fprintf(f, "\"%lld\"", (long long)k->via.i64);
            } else {
                fprintf(f, "\"?%u\"", i);
            }
            fputc(':', f);
            jq_json_msgpack(f, &o->via.map.ptr[i].val);
        }
        fputc('}', f);
        break;
    default: /* bin, ext */
        fputs("null", f);
        break;
    }
}

int jq_http_call(jq_daemon_t *d, const jq_identity_t *who, const char *method,
                 jq_http_args_fn args, const void *ctx, jq_http_reply_t *out)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    wire_request_begin(&pk, 1, method);
    if (args)
        args(&pk, ctx);
    else
        msgpack_pack_map(&pk, 0);
    memset(out, 0, sizeof *out);
    msgpack_sbuffer_init(&out->bytes);
    msgpack_unpacked_init(&out->up);
    jq_waiter_t *park = jq_dispatch(d, who, req.data, req.size, &out->bytes, &out->ticket);
    msgpack_sbuffer_destroy(&req);
    size_t off = 0;
    if (park || !out->bytes.size ||
        msgpack_unpack_next(&out->up, out->bytes.data, out->bytes.size, &off) !=
            MSGPACK_UNPACK_SUCCESS) {
        /* No method this thread calls parks; a parked one would be lost. */
        jq_http_reply_destroy(out);
        return -1;
    }
    wire_reply_t rep;
    if (wire_reply_parse(&out->up.data, &rep) < 0) {
        jq_http_reply_destroy(out);
        return -1;
    }
    out->ok = rep.ok;
    out->result = rep.ok ? rep.result : NULL;
    out->code = rep.ok ? JOBQ_ERR_NONE : rep.code;
    if (!rep.ok)
        snprintf(out->message, sizeof out->message, "%.*s", (int)rep.message_len,
                 rep.message ? rep.message : "");
    return 0;
}

void jq_http_reply_destroy(jq_http_reply_t *r)
{
    msgpack_unpacked_destroy(&r->up);
    msgpack_sbuffer_destroy(&r->bytes);
    msgpack_sbuffer_init(&r->bytes);
    msgpack_unpacked_init(&r->up);
    r->result = NULL;
}

/* The API's only input shape: {"name": integer, ...}, keys from a fixed
 * list, each at most once. Anything else is refused whole. */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

int jq_json_flat_ints(const char *s, size_t n, const char *const *keys, size_t nkeys,
                      int64_t *vals, bool *present)
{
    const char *p = s, *end = s + n;
    for (size_t k = 0; k < nkeys; k++)
        present[k] = false;
    p = skip_ws(p, end);
    if (p == end || *p++ != '{')
        return -1;
    p = skip_ws(p, end);
    if (p < end && *p == '}')
        return skip_ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        p = skip_ws(p, end);
        if (p == end || *p++ != '"')
            return -1;
        const char *key = p;
        while (p < end && *p != '"' && *p != '\\')
            p++;
        if (p == end || *p != '"')
            return -1;
        size_t klen = (size_t)(p - key);
        p = skip_ws(p + 1, end);
        if (p == end || *p++ != ':')
            return -1;
        p = skip_ws(p, end);
        const char *num = p;
        if (p < end && *p == '-')
            p++;
        if (p == end || *p < '0' || *p > '9')
            return -1;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p - num > 19)
            return -1;
        char buf[24];
        memcpy(buf, num, (size_t)(p - num));
        buf[p - num] = 0;
        size_t k = 0;
        while (k < nkeys && !(strlen(keys[k]) == klen && !memcmp(keys[k], key, klen)))
            k++;
        if (k == nkeys || present[k])
            return -1;
        vals[k] = strtoll(buf, NULL, 10);
        present[k] = true;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            return skip_ws(p + 1, end) == end ? 0 : -1;
        return -1;
    }
}
