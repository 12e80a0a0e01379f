/* tokens.c: the client-token index (see tokens.h): a chained hash table of
 * entries that are also on a list in the order they were made, so expiry
 * and the count cap drop from the front. */
#include "tokens.h"
#include "wire.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 16384 /* power of two */

/* A position of a batch whose job is not in the store after a restart. */
#define LOST_MESSAGE "jobqd stopped before this job was saved; submit it again"

typedef struct entry {
    struct entry *chain;        /* next in the bucket */
    struct entry *prev, *next;  /* age order */
    int64_t made;               /* µs, wall clock: the first call's time */
    uint64_t hash;              /* jq_tokens_hash of the first call */
    uint64_t ticket;            /* the store ticket its reply waits for */
    char *reply;                /* exact result bytes; NULL while pending */
    size_t reply_len;
    bool pending;
    uint8_t len;
    unsigned char token[JQ_TOKEN_MAX];
} entry_t;

struct jq_tokens {
    pthread_mutex_t mu;
    pthread_cond_t settled;     /* a pending entry became done or went */
    int64_t window_us;
    size_t max_count, count;
    size_t bytes;               /* of the replies kept */
    entry_t *oldest, *newest;
    entry_t *buckets[NBUCKETS];
};

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FNV_BASIS 0xcbf29ce484222325ull

static int sbuf_write(void *data, const char *buf, size_t len)
{
    uint64_t *h = data;
    *h = fnv1a(*h, buf, len);
    return 0;
}

uint64_t jq_tokens_hash(const char *method, const msgpack_object *body)
{
    uint64_t h = fnv1a(FNV_BASIS, method, strlen(method) + 1);
    /* 63 bits: a JSON integer (int64) holds it exactly. */
    msgpack_packer pk; /* streams the canonical encoding into the hash */
    msgpack_packer_init(&pk, &h, sbuf_write);
    if (body)
        msgpack_pack_object(&pk, *body);
    else
        msgpack_pack_nil(&pk);
    return h >> 1;
}

jq_tokens_t *jq_tokens_new(int64_t window_us, size_t max_count)
{
    jq_tokens_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->settled, NULL);
    t->window_us = window_us;
    t->max_count = max_count;
    return t;
}

static entry_t **slot_of(jq_tokens_t *t, const void *token, size_t len)
{
    return &t->buckets[fnv1a(FNV_BASIS, token, len) & (NBUCKETS - 1)];
}

static entry_t *find(jq_tokens_t *t, const void *token, size_t len)
{
    for (entry_t *e = *slot_of(t, token, len); e; e = e->chain)
        if (e->len == len && memcmp(e->token, token, len) == 0)
            return e;
    return NULL;
}

static void unlink_free(jq_tokens_t *t, entry_t *e)
{
    entry_t **pp = slot_of(t, e->token, e->len);
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->prev)
        e->prev->next = e->next;
    else
        t->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        t->newest = e->prev;
    t->count--;
    t->bytes -= e->reply_len;
    free(e->reply);
    free(e);
}

void jq_tokens_destroy(jq_tokens_t **tp)
{
    jq_tokens_t *t = tp ? *tp : NULL;
    if (!t)
        return;
    while (t->oldest)
        unlink_free(t, t->oldest);
    pthread_cond_destroy(&t->settled);
    pthread_mutex_destroy(&t->mu);
    free(t);
    *tp = NULL;
}

/* Drop what is past the window, then the oldest past the caps; a pending
 * entry stays (its call is running; it is at most milliseconds old). */
static void expire(jq_tokens_t *t, int64_t now)
{
    entry_t *e = t->oldest;
    while (e) {
        entry_t *next = e->next;
        bool old = now - e->made > t->window_us || t->count > t->max_count ||
                   t->bytes > JQ_TOKEN_MAX_BYTES;
        if (!old)
            break;
        if (!e->pending)
            unlink_free(t, e);
        e = next;
    }
}

static entry_t *add(jq_tokens_t *t, const void *token, size_t len, uint64_t hash, int64_t made)
{
    entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    memcpy(e->token, token, len);
    e->len = (uint8_t)len;
    e->hash = hash;
    e->made = made;
    entry_t **slot = slot_of(t, token, len);
    e->chain = *slot;
    *slot = e;
    e->prev = t->newest; /* made times grow but for a clock step: close enough */
    if (t->newest)
        t->newest->next = e;
    else
        t->oldest = e;
    t->newest = e;
    t->count++;
    return e;
}

int jq_tokens_claim(jq_tokens_t *t, const void *token, size_t len, uint64_t hash, int64_t now,
                    jq_token_claim_t *out, char **reply, size_t *reply_len, uint64_t *ticket)
{
    *out = JQ_TOKEN_NEW;
    if (t->window_us <= 0 || len == 0 || len > JQ_TOKEN_MAX)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    expire(t, now);
    entry_t *e;
    /* The first call is between its claim and its answer on another
     * handler thread: wait for it, then look again (it may have failed
     * and let the token go). */
    while ((e = find(t, token, len)) && e->pending)
        pthread_cond_wait(&t->settled, &t->mu);
    if (!e) {
        if (!(e = add(t, token, len, hash, now)))
            rc = -1;
        else
            e->pending = true;
    } else if (e->hash != hash) {
        *out = JQ_TOKEN_REUSED;
    } else if (!(*reply = malloc(e->reply_len ? e->reply_len : 1))) {
        rc = -1;
    } else {
        memcpy(*reply, e->reply, e->reply_len);
        *reply_len = e->reply_len;
        *ticket = e->ticket;
        *out = JQ_TOKEN_REPLY;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void jq_tokens_done(jq_tokens_t *t, const void *token, size_t len, const void *reply,
                    size_t reply_len, uint64_t ticket)
{
    if (t->window_us <= 0 || len == 0 || len > JQ_TOKEN_MAX)
        return;
    char *copy = malloc(reply_len ? reply_len : 1);
    pthread_mutex_lock(&t->mu);
    entry_t *e = find(t, token, len);
    if (e && e->pending) {
        if (copy) {
            memcpy(copy, reply, reply_len);
            e->reply = copy;
            e->reply_len = reply_len;
            t->bytes += reply_len;
            e->ticket = ticket;
            e->pending = false;
            copy = NULL;
            expire(t, e->made); /* the byte cap */
        } else { /* out of memory: a retry then submits again */
            unlink_free(t, e);
        }
        pthread_cond_broadcast(&t->settled);
    }
    pthread_mutex_unlock(&t->mu);
    free(copy);
}

void jq_tokens_abandon(jq_tokens_t *t, const void *token, size_t len)
{
    if (t->window_us <= 0 || len == 0 || len > JQ_TOKEN_MAX)
        return;
    pthread_mutex_lock(&t->mu);
    entry_t *e = find(t, token, len);
    if (e && e->pending) {
        unlink_free(t, e);
        pthread_cond_broadcast(&t->settled);
    }
    pthread_mutex_unlock(&t->mu);
}

size_t jq_tokens_count(jq_tokens_t *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* The token's bytes from the hex the record keeps; false if not hex. */
static bool unhex(const char *s, size_t len, unsigned char *out)
{
    for (size_t i = 0; i < len; i++) {
        int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return false;
        out[i / 2] = (unsigned char)(i % 2 ? out[i / 2] << 4 | v : v);
    }
    return true;
}

/* A stored batch reply with the positions whose job is not stored turned
 * into failures. -1 when it is not a batch reply or out of memory. */
static int restore_batch(const msgpack_object *reply, jq_tokens_exists_fn exists, void *ctx,
                         msgpack_sbuffer *sb)
{
    if (reply->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, reply->via.array.size);
    for (uint32_t k = 0; k < reply->via.array.size; k++) {
        const msgpack_object *p = &reply->via.array.ptr[k];
        int64_t id;
        if (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size == 2 &&
            p->via.array.ptr[0].type == MSGPACK_OBJECT_BOOLEAN &&
            p->via.array.ptr[0].via.boolean && wire_get_int(&p->via.array.ptr[1], &id) &&
            id > 0 && !exists(ctx, (uint64_t)id)) {
            msgpack_pack_array(&pk, 2);
            msgpack_pack_false(&pk);
            wire_pack_cstr(&pk, LOST_MESSAGE);
        } else {
            msgpack_pack_object(&pk, *p);
        }
    }
    return sb->data ? 0 : -1;
}

int jq_tokens_restore(jq_tokens_t *t, const void *client, size_t client_len, uint64_t id,
                      int64_t received_us, int64_t now, jq_tokens_exists_fn exists, void *ctx)
{
    if (t->window_us <= 0 || now - received_us > t->window_us)
        return 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = 0;
    if (msgpack_unpack_next(&up, client, client_len, &off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        return 0; /* not ours to judge: the token is lost, nothing else */
    }
    const msgpack_object *tok = wire_map_get(&up.data, "token");
    const msgpack_object *reply = wire_map_get(&up.data, "reply");
    int64_t hash;
    unsigned char tp[JQ_TOKEN_MAX];
    uint32_t tl = 0;
    if (tok && tok->type == MSGPACK_OBJECT_STR && tok->via.str.size % 2 == 0 &&
        tok->via.str.size <= 2 * JQ_TOKEN_MAX && unhex(tok->via.str.ptr, tok->via.str.size, tp))
        tl = tok->via.str.size / 2;
    /* The hash is stored as the uint64 it is; wire_get_int would refuse
     * the upper half. */
    const msgpack_object *ho = wire_map_get(&up.data, "hash");
    bool hash_ok = ho && ho->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
    hash = hash_ok ? (int64_t)ho->via.u64 : 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (tl > 0 && hash_ok) {
        if (reply) {
            if (restore_batch(reply, exists, ctx, &sb) < 0)
                rc = reply->type == MSGPACK_OBJECT_ARRAY ? -1 : 0;
        } else { /* submit_job: the reply is the job's id */
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_uint64(&pk, id);
            if (!sb.data)
                rc = -1;
        }
    }
    if (rc == 0 && sb.data) {
        pthread_mutex_lock(&t->mu);
        entry_t *e = find(t, tp, tl) ? NULL : add(t, tp, tl, (uint64_t)hash, received_us);
        if (e) {
            e->reply = sb.data;
            e->reply_len = sb.size;
            t->bytes += sb.size;
            e->ticket = 0; /* committed before this run */
            sb.data = NULL;
        }
        expire(t, now);
        pthread_mutex_unlock(&t->mu);
    }
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
    return rc;
}
