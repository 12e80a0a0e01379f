/* ring.h: the replay ring — the most recent published events, kept so a
 * subscriber that missed some (PUB drops for slow subscribers) can catch
 * up with `events_since`, and so the loop can find a job's recent events.
 *
 * Bounded by a number of events and a number of bytes, whichever is hit
 * first; the oldest events fall off. Sequence numbers are contiguous, so an
 * event's slot is found by arithmetic. The owner thread (the publisher)
 * appends and walks a job's events without locking; other threads read
 * through jq_ring_since, which takes the ring's read lock only to take
 * references to event bodies (the owner takes the write lock only to
 * append). No I/O and no copying under that lock.
 */
#ifndef JOBQ_RING_H
#define JOBQ_RING_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jq_ring jq_ring_t;

#define JQ_RING_DEFAULT_EVENTS 65536
#define JQ_RING_DEFAULT_BYTES (64u * 1024 * 1024)

jq_ring_t *jq_ring_new(size_t max_events, size_t max_bytes);
void jq_ring_destroy(jq_ring_t **r);

/* Owner: append the event with the next sequence number (seq must be the
 * last + 1); body is copied. -1 out of memory (nothing changed). */
int jq_ring_append(jq_ring_t *r, uint64_t seq, uint64_t job_id, uint64_t serial,
                   const void *body, size_t len);

/* Owner: the job's events still in the ring with change serial > after, in
 * order: calls fn for each; returns false when the ring no longer holds
 * serial after+1 (the job changed but the events are gone), true
 * otherwise (also when the job has no newer events). */
typedef void (*jq_ring_visit_fn)(void *ctx, const char *body, size_t len);
bool jq_ring_job_since(jq_ring_t *r, uint64_t job_id, uint64_t after,
                       jq_ring_visit_fn fn, void *ctx);

typedef enum {
    JQ_RING_OK,      /* events after `after` packed (maybe none) */
    JQ_RING_TOO_OLD  /* the ring no longer holds seq after+1 */
} jq_ring_since_t;

/* Any thread: pack, as one msgpack array, the bodies of up to max events
 * (and about max_bytes; at least one) with seq > after. *count is how
 * many; *more true when more remain; *first_seq and *last_seq say what the
 * ring holds. The ring's lock is held only to take references. */
jq_ring_since_t jq_ring_since(jq_ring_t *r, uint64_t after, size_t max, size_t max_bytes,
                              msgpack_packer *pk, size_t *count, bool *more,
                              uint64_t *first_seq, uint64_t *last_seq);

/* Any thread: what the ring holds now and its bounds (read lock, briefly). */
typedef struct {
    uint64_t events, bytes;         /* held */
    uint64_t max_events, max_bytes; /* bounds */
    uint64_t first_seq, last_seq;   /* held: first..last; first > last: none */
} jq_ring_stats_t;
void jq_ring_get_stats(jq_ring_t *r, jq_ring_stats_t *out);

#endif
