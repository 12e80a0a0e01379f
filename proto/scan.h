/* scan.h: a pre-scanner for untrusted msgpack, run over every request body
 * before msgpack-c sees it.
 *
 * msgpack_unpack_next reserves count * sizeof(msgpack_object) for every
 * array or map header as soon as it reads the header, before one element
 * has arrived: a 150-byte frame declaring 2^32-element arrays makes it
 * reserve hundreds of gigabytes. jq_scan walks the raw bytes once, with no
 * allocation and no recursion, and refuses a container that declares more
 * elements than the rest of the buffer could hold (every element takes at
 * least one byte, a map pair two). After an OK scan msgpack-c's allocation
 * is bounded by about sizeof(msgpack_object) bytes per request byte.
 *
 * It also bounds nesting and the number of objects, optionally checks that
 * every str is UTF-8, and picks up the request's top-level "id" on the way
 * so that even a refused request can be answered with its id.
 *
 * msgpack-c 4.0's unpacker has its own fixed nesting stack
 * (MSGPACK_EMBED_STACK_SIZE, 32): a value nested 33 to 64 deep passes a
 * scan with the default max_depth, and msgpack_unpack_next then fails on it
 * with MSGPACK_UNPACK_NOMEM_ERROR. A caller that wants the scan to be the
 * one that refuses passes max_depth = MSGPACK_EMBED_STACK_SIZE.
 *
 * Nothing here keeps state: every function may be called from any thread.
 */
#ifndef JOBQ_SCAN_H
#define JOBQ_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOBQ_SCAN_MAX_DEPTH 64           /* nesting of arrays/maps */
#define JOBQ_SCAN_MAX_OBJECTS (4u << 20) /* msgpack objects in one value */

/* Every status names where it was found in jq_scan_result_t.offset. */
typedef enum {
    JQ_SCAN_OK = 0,
    JQ_SCAN_TRUNCATED, /* the bytes end inside the value; offset: first byte
                          of the object that runs past the end (len when the
                          bytes end where an object should start) */
    JQ_SCAN_TRAILING,  /* bytes left after one complete value; offset: the
                          first of them */
    JQ_SCAN_BAD_BYTE,  /* 0xc1 (never used); offset: that byte */
    JQ_SCAN_TOO_DEEP,  /* nesting beyond max_depth; offset: the header of
                          the container one level too deep */
    JQ_SCAN_TOO_MANY,  /* more objects than max_objects; offset: the header
                          of the first object over the limit */
    JQ_SCAN_BAD_COUNT, /* a container declares more elements than bytes
                          remain (each element takes at least one byte);
                          offset: the container's header */
    JQ_SCAN_BAD_UTF8,  /* a str (including map keys) is not valid UTF-8;
                          offset: first byte of the ill-formed sequence */
} jq_scan_status_t;

typedef struct {
    size_t max_depth;   /* 0: JOBQ_SCAN_MAX_DEPTH, which is also the most
                           allowed (the scan's stack is sized by it) */
    size_t max_objects; /* 0: JOBQ_SCAN_MAX_OBJECTS */
    bool check_utf8;
} jq_scan_limits_t;

typedef struct {
    jq_scan_status_t status;
    size_t offset;  /* byte offset where the problem was found */
    size_t objects; /* objects counted (every scalar, str, bin, ext, array,
                       map counts 1; map keys count), up to where the scan
                       stopped: max_objects + 1 after JQ_SCAN_TOO_MANY */
    size_t depth;   /* deepest nesting seen: a top-level scalar is 0, [1]
                       and [] are 1, [[1]] is 2 */
    /* When the value is a map and has a top-level key "id" whose value is a
     * positive integer (msgpack uint of any width, or a non-negative int),
     * it is reported here even if the scan fails later, as long as the scan
     * got that far: lets the daemon answer a rejected request with its id.
     * Only the first "id" key counts, as in wire_map_get: when its value is
     * not such an integer, has_id stays false whatever follows. */
    bool has_id;
    uint64_t id;
} jq_scan_result_t;

/* Any thread. Scans exactly one msgpack value that must fill data[0..len).
 * limits NULL: all defaults, no UTF-8 check. Returns true when status is
 * JQ_SCAN_OK. Reads nothing outside data[0..len) and allocates nothing. */
bool jq_scan(const void *data, size_t len, const jq_scan_limits_t *limits,
             jq_scan_result_t *out);

/* Wire text for a status, e.g. "a container declares more elements than
 * the request holds". Never NULL. */
const char *jq_scan_status_text(jq_scan_status_t s);

#endif
