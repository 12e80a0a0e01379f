/* event.h: what goes out on the PUB socket for one change record.
 *
 * Two frames: the topic "job/<id>/" (the trailing slash makes ZeroMQ's
 * prefix match exact: "job/12/" never matches job 123; "job/" matches
 * every job), then the body, a msgpack map
 *     {"seq": S, "epoch": E, "change": <the change record, as made>}
 * where S grows by one per event for the daemon's life and E changes each
 * time the daemon starts. The record bytes are copied, never re-encoded. */
#ifndef JOBQ_EVENT_H
#define JOBQ_EVENT_H

#include "change.h"

#include <msgpack.h>
#include <stdbool.h>

#define JQ_TOPIC_MAX 32
#define JQ_TOPIC_JOBS "job/"

/* The batched stream (docs/protocol.md, "The batched stream"): the topic
 * "batch/", then one msgpack array of consecutive event bodies, each the
 * exact bytes the per-event stream carries. A batch is closed at the end of
 * a turn of the loop's publishing, or when the next body would pass either
 * bound (a body larger than the byte bound goes alone). */
#define JQ_TOPIC_BATCH "batch/"
#define JQ_BATCH_MAX_EVENTS 1024
/* Small, because a subscriber that stops reading pins up to
 * --publish-hwm of them (docs/operations.md, "Event fan-out"). */
#define JQ_BATCH_MAX_BYTES (64u << 10)
/* Room kept in front of the bodies for the array header (at most 5 bytes:
 * 0xdd and a 32-bit count); the shortest form is written right before the
 * first body, so a batch is sent without moving its bodies. */
#define JQ_BATCH_HEAD 5

/* Writes the topic for job_id into buf (>= JQ_TOPIC_MAX); returns length. */
size_t jq_event_topic(char *buf, uint64_t job_id);
/* Packs the body into sb (cleared first). */
void jq_event_body(msgpack_sbuffer *sb, uint64_t epoch, uint64_t seq, const jq_change_t *c);

/* A batch being built: bodies appended after JQ_BATCH_HEAD reserved bytes. */
typedef struct {
    msgpack_sbuffer sb; /* reserved head, then the bodies */
    uint32_t count;     /* bodies appended */
} jq_event_batch_t;

void jq_event_batch_init(jq_event_batch_t *b);
void jq_event_batch_fini(jq_event_batch_t *b);
/* True when body (len bytes) does not fit the batch's bounds and the batch
 * is not empty: close and send it first. */
bool jq_event_batch_full(const jq_event_batch_t *b, size_t len);
/* Appends one encoded body (copied). */
void jq_event_batch_add(jq_event_batch_t *b, const void *body, size_t len);
/* Writes the array header and returns the batch's bytes (*len of them),
 * valid until the next call on b; NULL when it is empty. */
const char *jq_event_batch_close(jq_event_batch_t *b, size_t *len);
/* Empties it for the next batch. */
void jq_event_batch_clear(jq_event_batch_t *b);

#endif
