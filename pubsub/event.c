/* event.c: topic and body of a published event (see event.h). */
#include "event.h"
#include "wire.h"

#include <stdio.h>

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
