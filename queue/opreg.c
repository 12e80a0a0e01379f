/* opreg.c: the registry of worker opcodes (opreg.h). */
#include "opreg.h"
#include "job.h"
#include "wire.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rdef {
    jq_opdef_t def;
    char name[JOBQ_MAX_OP_NAME + 1];
    char *description;
    jq_argdef_t *args;       /* nargs + 1 (the NULL-named end), or NULL */
    size_t nargs;
    char *decl;              /* the declaration, normalised (msgpack) */
    size_t decl_len;
    struct rdef *retired;    /* definitions replaced by a newer one */
} rdef_t;

struct jq_opreg {
    pthread_rwlock_t lock;
    rdef_t **cur;            /* current definitions, in declaration order */
    size_t n, cap;
    rdef_t *retired;
    size_t bytes;            /* declarations kept, current and retired */
};

static void rdef_free(rdef_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nargs; i++) {
        free((char *)d->args[i].name);
        free((char *)d->args[i].type);
        free((char *)d->args[i].description);
    }
    free(d->args);
    free(d->description);
    free(d->decl);
    free(d);
}

jq_opreg_t *jq_opreg_new(void)
{
    jq_opreg_t *r = calloc(1, sizeof *r);
    if (r)
        pthread_rwlock_init(&r->lock, NULL);
    return r;
}

void jq_opreg_destroy(jq_opreg_t **rp)
{
    if (!rp || !*rp)
        return;
    jq_opreg_t *r = *rp;
    for (size_t i = 0; i < r->n; i++)
        rdef_free(r->cur[i]);
    for (rdef_t *d = r->retired, *next; d; d = next) {
        next = d->retired;
        rdef_free(d);
    }
    free(r->cur);
    pthread_rwlock_destroy(&r->lock);
    free(r);
    *rp = NULL;
}

static ssize_t index_of(const jq_opreg_t *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n; i++)
        if (strlen(r->cur[i]->name) == len && memcmp(r->cur[i]->name, name, len) == 0)
            return (ssize_t)i;
    return -1;
}

const jq_opdef_t *jq_opreg_find(jq_opreg_t *r, const char *name, size_t len)
{
    pthread_rwlock_rdlock(&r->lock);
    ssize_t i = index_of(r, name, len);
    const jq_opdef_t *def = i >= 0 ? &r->cur[i]->def : NULL;
    pthread_rwlock_unlock(&r->lock);
    return def;
}

/* ---- parsing a declaration ---- */

/* An optional string of at most max bytes: 0 (copied into *out, NULL when
 * absent), -1 wrong type or too long, -2 out of memory. */
static int opt_str(const msgpack_object *map, const char *key, size_t max, char **out)
{
    const msgpack_object *o = wire_map_get(map, key);
    *out = NULL;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > max)
        return -1;
    return (*out = strndup(o->via.str.ptr, o->via.str.size)) ? 0 : -2;
}

static int parse_args(rdef_t *d, const msgpack_object *args, char *err, size_t errlen)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size > JQ_OPREG_MAX_ARGS) {
        snprintf(err, errlen, "opcode '%s': 'args' must be a list of at most %d argument maps",
                 d->name, JQ_OPREG_MAX_ARGS);
        return -1;
    }
    uint32_t n = args->via.array.size;
    if (!(d->args = calloc(n + 1, sizeof *d->args))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *a = &args->via.array.ptr[i];
        const msgpack_object *name = wire_map_get(a, "name");
        const msgpack_object *req = wire_map_get(a, "required");
        if (a->type != MSGPACK_OBJECT_MAP || !name || name->type != MSGPACK_OBJECT_STR ||
            name->via.str.size == 0 || name->via.str.size > JOBQ_MAX_OP_NAME ||
            (req && req->type != MSGPACK_OBJECT_NIL && req->type != MSGPACK_OBJECT_BOOLEAN)) {
            snprintf(err, errlen, "opcode '%s': argument %u needs a 'name' (a string of 1 to %d "
                                  "bytes) and 'required' is a bool", d->name, i, JOBQ_MAX_OP_NAME);
            return -1;
        }
        for (uint32_t k = 0; k < i; k++)
            if (strlen(d->args[k].name) == name->via.str.size &&
                memcmp(d->args[k].name, name->via.str.ptr, name->via.str.size) == 0) {
                snprintf(err, errlen, "opcode '%s': argument '%s' is declared twice", d->name,
                         d->args[k].name);
                return -1;
            }
        jq_argdef_t *out = &d->args[i];
        char *type = NULL, *desc = NULL;
        int rc = opt_str(a, "type", 64, &type);
        if (rc == 0)
            rc = opt_str(a, "description", JQ_OPREG_MAX_TEXT, &desc);
        out->name = strndup(name->via.str.ptr, name->via.str.size);
        out->type = type ? type : strdup("any");
        out->description = desc ? desc : strdup("");
        out->required = req && req->type == MSGPACK_OBJECT_BOOLEAN && req->via.boolean;
        d->nargs = i + 1; /* owned from here: freed with d */
        if (rc == -1) {
            snprintf(err, errlen, "opcode '%s': argument %u: 'type' (at most 64 bytes) and "
                                  "'description' (at most %d) are strings", d->name, i,
                     JQ_OPREG_MAX_TEXT);
            return -1;
        }
        if (rc < 0 || !out->name || !out->type || !out->description) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The declaration as the registry keeps and stores it: same keys, the
 * values as parsed (so two declarations that mean the same compare
 * equal). */
static int normalise(rdef_t *d)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + (d->description ? 1 : 0) + (d->def.timeout_us ? 1 : 0));
    wire_pack_cstr(&pk, "name");
    wire_pack_cstr(&pk, d->name);
    if (d->description) {
        wire_pack_cstr(&pk, "description");
        wire_pack_cstr(&pk, d->description);
    }
    if (d->def.timeout_us) {
        wire_pack_cstr(&pk, "timeout");
        msgpack_pack_double(&pk, (double)d->def.timeout_us / 1e6);
    }
    wire_pack_cstr(&pk, "args");
    if (!d->args) {
        msgpack_pack_nil(&pk);
    } else {
        msgpack_pack_array(&pk, d->nargs);
        for (size_t i = 0; i < d->nargs; i++) {
            msgpack_pack_map(&pk, 4);
            wire_pack_cstr(&pk, "name");
            wire_pack_cstr(&pk, d->args[i].name);
            wire_pack_cstr(&pk, "type");
            wire_pack_cstr(&pk, d->args[i].type);
            wire_pack_cstr(&pk, "required");
            if (d->args[i].required)
                msgpack_pack_true(&pk);
            else
                msgpack_pack_false(&pk);
            wire_pack_cstr(&pk, "description");
            wire_pack_cstr(&pk, d->args[i].description);
        }
    }
    d->decl = sb.data; /* NULL only when out of memory */
    d->decl_len = sb.size;
    return d->decl ? 0 : -1;
}

static rdef_t *parse_decl(const jq_opset_t *builtins, const msgpack_object *decl, char *err,
                          size_t errlen)
{
    const msgpack_object *name = decl;
    if (decl->type == MSGPACK_OBJECT_MAP)
        name = wire_map_get(decl, "name");
    if (!name || name->type != MSGPACK_OBJECT_STR) {
        snprintf(err, errlen, "an opcode declaration is a name or a map with a 'name'");
        return NULL;
    }
    if (!wire_opcode_name_ok(name->via.str.ptr, name->via.str.size)) {
        snprintf(err, errlen, "opcode name '%.*s' is not 1 to %d letters, digits, '.', '_' "
                              "or '-'", wire_utf8_quote_len(name->via.str.ptr, name->via.str.size, 64),
                 name->via.str.ptr, JOBQ_MAX_OP_NAME);
        return NULL;
    }
    bool builtin = false;
    for (size_t i = 0; builtins && i < builtins->count; i++)
        builtin |= strlen(builtins->defs[i]->name) == name->via.str.size &&
                   memcmp(builtins->defs[i]->name, name->via.str.ptr, name->via.str.size) == 0;
    if (builtin) {
        snprintf(err, errlen, "opcode '%.*s' is built in: a worker cannot serve it",
                 (int)name->via.str.size, name->via.str.ptr);
        return NULL;
    }
    rdef_t *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(d->name, name->via.str.ptr, name->via.str.size);
    d->def.name = d->name;
    d->def.remote = true;
    if (decl->type == MSGPACK_OBJECT_MAP) {
        int rc = opt_str(decl, "description", JQ_OPREG_MAX_TEXT, &d->description);
        if (rc < 0) {
            snprintf(err, errlen, rc == -1 ? "opcode '%s': 'description' must be a string of at "
                                             "most 512 bytes" : "out of memory", d->name);
            goto fail;
        }
        const msgpack_object *t = wire_map_get(decl, "timeout");
        double secs;
        if (t && t->type != MSGPACK_OBJECT_NIL) {
            if (!wire_get_number(t, &secs) || !(secs > 0 && secs <= JQ_MAX_TIMEOUT_S)) {
                snprintf(err, errlen, "opcode '%s': 'timeout' must be a number of seconds above "
                                      "0 and at most %d", d->name, JQ_MAX_TIMEOUT_S);
                goto fail;
            }
            d->def.timeout_us = (int64_t)(secs * 1e6);
        }
        const msgpack_object *args = wire_map_get(decl, "args");
        if (args && args->type != MSGPACK_OBJECT_NIL && parse_args(d, args, err, errlen) < 0)
            goto fail;
    }
    d->def.description = d->description ? d->description : "";
    d->def.args = d->args;
    if (normalise(d) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return d;
fail:
    rdef_free(d);
    return NULL;
}

int jq_opreg_declare(jq_opreg_t *r, const jq_opset_t *builtins, const msgpack_object *decl,
                     const jq_opdef_t **out, bool *changed, char *err, size_t errlen)
{
    *changed = false;
    rdef_t *d = parse_decl(builtins, decl, err, errlen);
    if (!d)
        return -1;
    pthread_rwlock_wrlock(&r->lock);
    ssize_t i = index_of(r, d->name, strlen(d->name));
    int rc = 0;
    if (i >= 0 && r->cur[i]->decl_len == d->decl_len &&
        memcmp(r->cur[i]->decl, d->decl, d->decl_len) == 0) {
        rdef_free(d); /* the same declaration again: nothing changes */
        *out = &r->cur[i]->def;
    } else if (r->bytes + d->decl_len > JQ_OPREG_MAX_BYTES) {
        /* Replaced definitions stay (jobs point at them): a peer that
         * keeps declaring anew would grow them without end. */
        snprintf(err, errlen, "the worker opcodes' declarations would take more than %d MiB "
                              "(a restart forgets replaced ones)", JQ_OPREG_MAX_BYTES >> 20);
        rdef_free(d);
        rc = -1;
    } else if (i >= 0) {
        r->bytes += d->decl_len;
        r->cur[i]->retired = r->retired; /* jobs accepted under it keep it */
        r->retired = r->cur[i];
        r->cur[i] = d;
        *out = &d->def;
        *changed = true;
    } else if (r->n == JQ_OPREG_MAX) {
        snprintf(err, errlen, "this jobqd knows %d worker opcodes already: no more can be "
                              "declared", JQ_OPREG_MAX);
        rdef_free(d);
        rc = -1;
    } else {
        r->bytes += d->decl_len;
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 16;
            rdef_t **grown = realloc(r->cur, cap * sizeof *grown);
            if (!grown) {
                snprintf(err, errlen, "out of memory");
                r->bytes -= d->decl_len;
                rdef_free(d);
                pthread_rwlock_unlock(&r->lock);
                return -1;
            }
            r->cur = grown;
            r->cap = cap;
        }
        r->cur[r->n++] = d;
        *out = &d->def;
        *changed = true;
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

void jq_opreg_each(jq_opreg_t *r, void (*fn)(void *ctx, const jq_opdef_t *def), void *ctx)
{
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        fn(ctx, &r->cur[i]->def);
    pthread_rwlock_unlock(&r->lock);
}

size_t jq_opreg_count(jq_opreg_t *r)
{
    pthread_rwlock_rdlock(&r->lock);
    size_t n = r->n;
    pthread_rwlock_unlock(&r->lock);
    return n;
}

int jq_opreg_encode(jq_opreg_t *r, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pthread_rwlock_rdlock(&r->lock);
    msgpack_pack_array(&pk, r->n);
    for (size_t i = 0; i < r->n; i++)
        msgpack_sbuffer_write(sb, r->cur[i]->decl, r->cur[i]->decl_len);
    pthread_rwlock_unlock(&r->lock);
    return sb->data ? 0 : -1;
}

int jq_opreg_load(jq_opreg_t *r, const jq_opset_t *builtins, const void *data, size_t len,
                  char *err, size_t errlen)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = 0;
    if (msgpack_unpack_next(&up, data, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_ARRAY) {
        snprintf(err, errlen, "the stored worker opcodes are not a msgpack list");
        rc = -1;
    }
    for (uint32_t i = 0; rc == 0 && i < up.data.via.array.size; i++) {
        const jq_opdef_t *def;
        bool changed;
        char why[256];
        if (jq_opreg_declare(r, builtins, &up.data.via.array.ptr[i], &def, &changed, why,
                             sizeof why) < 0 && rc == 0) {
            snprintf(err, errlen, "stored worker opcode %u: %s", i, why);
            rc = -1;
        }
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}
