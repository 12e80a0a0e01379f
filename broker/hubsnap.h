/* hubsnap.h: a copy of the worker hub's state for other threads — the
 * dashboard's GET /api/workers (JSON, docs in HTTP_SPEC) and the metrics'
 * per-opcode worker figures.
 *
 * The hub lives on the loop thread and nobody else may touch it, so the
 * loop makes this copy (at most every JQ_HUBSNAP_INTERVAL_US, and only
 * after a change) and swaps it in under a small mutex; readers copy it out
 * under the same mutex and write it after unlocking. Neither side does I/O
 * with the mutex held. */
#ifndef JOBQ_HUBSNAP_H
#define JOBQ_HUBSNAP_H

#include "wire.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JQ_HUBSNAP_INTERVAL_US 250000

/* One opcode name the hub knows. */
typedef struct {
    char name[JOBQ_MAX_OP_NAME + 1];
    unsigned workers;   /* workers serving it */
    uint64_t capacity;  /* their capacity, summed (a worker's counts for each
                           opcode it serves) */
    uint64_t busy;      /* its opcodes held by workers now */
    uint64_t waiting;   /* its opcodes waiting for a worker (backing off included) */
} jq_hubsnap_op_t;

typedef struct jq_hubsnap jq_hubsnap_t;

jq_hubsnap_t *jq_hubsnap_new(void);
void jq_hubsnap_destroy(jq_hubsnap_t **s);

/* Loop thread: the new state (owned, moved in): the JSON text and the
 * opcodes (malloc'ed, n of them). */
void jq_hubsnap_publish(jq_hubsnap_t *s, char *json, size_t len, jq_hubsnap_op_t *ops,
                        size_t n);

/* Any thread: write the JSON ({"workers": [...], "opcodes": [...]}). 0 or -1. */
int jq_hubsnap_write_json(jq_hubsnap_t *s, FILE *out);
/* Any thread: a copy of the opcodes (*out malloc'ed, caller frees; NULL
 * when none). Returns how many; SIZE_MAX out of memory. */
size_t jq_hubsnap_opcodes(jq_hubsnap_t *s, jq_hubsnap_op_t **out);

/* JSON string literal of s (quoted, escaped) to out. */
void jq_hubsnap_string(FILE *out, const char *s);

#endif
