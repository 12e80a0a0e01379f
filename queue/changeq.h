/* changeq.h: the hand-off of change records from the threads that make
 * them to the one thread that publishes them.
 *
 * Producers (any thread, called from the table's sink, after the shard lock
 * is released) append whole lists in order; the consumer takes everything
 * at once. An eventfd wakes the consumer's poll loop; it is written only
 * when the queue goes from empty to non-empty, so a burst costs one wake-up.
 */
#ifndef JOBQ_CHANGEQ_H
#define JOBQ_CHANGEQ_H

#include "change.h"

typedef struct jq_changeq jq_changeq_t;

jq_changeq_t *jq_changeq_new(void);
/* Frees queued records too. */
void jq_changeq_destroy(jq_changeq_t **q);
/* Any thread: append a list (owned from now on). */
void jq_changeq_push(jq_changeq_t *q, jq_change_t *head);
/* Consumer: the fd to poll for input. */
int jq_changeq_fd(jq_changeq_t *q);
/* Consumer: take every queued record, oldest first (NULL when none), and
 * clear the fd's readiness. */
jq_change_t *jq_changeq_take(jq_changeq_t *q);
/* Any thread: records pushed so far, ever. A producer that reads it after
 * its push knows its records are among the first that many. */
uint64_t jq_changeq_pushed(jq_changeq_t *q);
/* Any thread: wake the consumer with nothing new (it has something else to
 * look at). */
void jq_changeq_kick(jq_changeq_t *q);

#endif
