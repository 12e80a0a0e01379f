/* event.c: topic and body of a published event (see event.h). */
#include "event.h"
#include "wire.h"

#include <stdio.h>
#include <string.h>

size_t jq_event_topic(char *buf, uint64_t job_id)
{
    return (size_t)snprintf(buf, JQ_TOPIC_MAX, JQ_TOPIC_JOBS "%llu/",
                            (unsigned long long)job_id);
}

void jq_event_body(msgpack_sbuffer *sb, uint64_t epoch, uint64_t seq, const jq_change_t *c)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    wire_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, seq);
    wire_pack_cstr(&pk, "epoch");
    msgpack_pack_uint64(&pk, epoch);
    wire_pack_cstr(&pk, "change");
    msgpack_sbuffer_write(sb, c->data, c->len);
}

static const char head_zero[JQ_BATCH_HEAD];

void jq_event_batch_init(jq_event_batch_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    b->count = 0;
    msgpack_sbuffer_write(&b->sb, head_zero, JQ_BATCH_HEAD);
}

void jq_event_batch_fini(jq_event_batch_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
    b->count = 0;
}

bool jq_event_batch_full(const jq_event_batch_t *b, size_t len)
{
    return b->count &&
           (b->count >= JQ_BATCH_MAX_EVENTS || b->sb.size - JQ_BATCH_HEAD + len > JQ_BATCH_MAX_BYTES);
}

void jq_event_batch_add(jq_event_batch_t *b, const void *body, size_t len)
{
    /* Out of memory, a body is left out (or the head could not be kept):
     * subscribers see a gap, as for a message PUB dropped, and catch up. */
    if (b->sb.size < JQ_BATCH_HEAD && msgpack_sbuffer_write(&b->sb, head_zero, JQ_BATCH_HEAD) != 0)
        return;
    if (msgpack_sbuffer_write(&b->sb, (const char *)body, len) == 0)
        b->count++;
}

const char *jq_event_batch_close(jq_event_batch_t *b, size_t *len)
{
    if (!b->count)
        return NULL;
    /* msgpack's shortest array header, ending right before the first body:
     * the batch is byte for byte what packing the list of bodies makes. */
    unsigned char h[JQ_BATCH_HEAD];
    size_t hl;
    uint32_t n = b->count;
    if (n < 16) {
        h[0] = (unsigned char)(0x90 | n);
        hl = 1;
    } else if (n < 65536) {
        h[0] = 0xdc;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        hl = 3;
    } else {
        h[0] = 0xdd;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
        hl = 5;
    }
    char *start = b->sb.data + JQ_BATCH_HEAD - hl;
    memcpy(start, h, hl);
    *len = b->sb.size - (JQ_BATCH_HEAD - hl);
    return start;
}

void jq_event_batch_clear(jq_event_batch_t *b)
{
    b->count = 0;
    msgpack_sbuffer_clear(&b->sb);
    msgpack_sbuffer_write(&b->sb, head_zero, JQ_BATCH_HEAD);
}
