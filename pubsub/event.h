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

#define JQ_TOPIC_MAX 32
#define JQ_TOPIC_JOBS "job/"

/* Writes the topic for job_id into buf (>= JQ_TOPIC_MAX); returns length. */
size_t jq_event_topic(char *buf, uint64_t job_id);
/* Packs the body into sb (cleared first). */
void jq_event_body(msgpack_sbuffer *sb, uint64_t epoch, uint64_t seq, const jq_change_t *c);

#endif
