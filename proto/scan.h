/* scan.h: a walk over raw msgpack bytes that allocates nothing, run over
 * every request before msgpack-c unpacks it.
 *
 * msgpack-c allocates `count * sizeof(msgpack_object)` for each array or
 * map header as it reads it, so a 150-byte frame declaring 2^32-element
 * containers makes it reserve hundreds of gigabytes. The scan checks each
 * declared count against the bytes that remain (every element takes at
 * least one byte), bounds nesting and the number of objects, and checks
 * that every string is UTF-8 — so what msgpack-c then allocates is bounded
 * by the request's own length. Any thread; no state.
 */
#ifndef JOBQ_SCAN_H
#define JOBQ_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOBQ_SCAN_MAX_DEPTH 64           /* nesting of arrays and maps */
#define JOBQ_SCAN_MAX_OBJECTS (4u << 20) /* msgpack objects in one value */

typedef enum {
    JQ_SCAN_OK = 0,
    JQ_SCAN_TRUNCATED,    /* the bytes end inside the value */
    JQ_SCAN_TRAILING,     /* bytes left after one complete value */
    JQ_SCAN_BAD_BYTE,     /* 0xc1 (never used) */
    JQ_SCAN_TOO_DEEP,     /* nesting beyond max_depth */
    JQ_SCAN_TOO_MANY,     /* more objects than max_objects */
    JQ_SCAN_BAD_COUNT,    /* a container declares more elements than bytes remain */
    JQ_SCAN_BAD_UTF8,     /* a string (map keys included) is not valid UTF-8 */
} jq_scan_status_t;

typedef struct {
    size_t max_depth;     /* 0: JOBQ_SCAN_MAX_DEPTH */
    size_t max_objects;   /* 0: JOBQ_SCAN_MAX_OBJECTS */
    bool check_utf8;
} jq_scan_limits_t;

typedef struct {
    jq_scan_status_t status;
    size_t offset;        /* where the problem was found */
    size_t objects;       /* objects counted (keys included) */
    size_t depth;         /* deepest nesting seen */
    /* A top-level map's "id" key with a non-negative integer value,
     * reported as soon as it was read, even when the scan fails later:
     * lets the daemon answer a refused request with its id. */
    bool has_id;
    uint64_t id;
} jq_scan_result_t;

/* Scan exactly one msgpack value filling data[0..len). limits may be NULL
 * (the defaults, no UTF-8 check). True when out->status is JQ_SCAN_OK. */
bool jq_scan(const void *data, size_t len, const jq_scan_limits_t *limits,
             jq_scan_result_t *out);
/* Words for a status, e.g. "a container declares more elements than the
 * request holds". Never NULL. */
const char *jq_scan_status_text(jq_scan_status_t s);

#endif
