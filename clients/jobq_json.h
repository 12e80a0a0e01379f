/* jobq_json.h: conversion between msgpack objects and jansson values.
 *
 * libjobq hands values to its callers as jansson json_t trees and takes
 * them the same way; the wire speaks msgpack. These two functions are the
 * only bridge. The mapping:
 *
 *   msgpack               JSON
 *   nil                   null
 *   bool                  true / false
 *   int (fits int64)      integer
 *   uint above INT64_MAX  real (precision may be lost)
 *   float32 / float64     real (NaN and infinities become null)
 *   str                   string (invalid UTF-8 bytes become '?')
 *   array                 array
 *   map                   object; keys must be strings or integers
 *                         (integers become their decimal text)
 *   bin, ext              rejected
 *
 * and from JSON: null, true/false, integer (int64), real (float64), string
 * (str), array, object (map with str keys, in the object's own key order).
 *
 * Nesting is bounded by JOBQ_JSON_MAX_DEPTH in both directions: msgpack-c's
 * C unpacker (used by the daemon and by libjobq) cannot read anything deeper
 * than 32 levels, so there is no point producing it.
 *
 * Every function here is safe to call from any thread: no state.
 */
#ifndef JOBQ_JSON_H
#define JOBQ_JSON_H

#include <jansson.h>
#include <msgpack.h>

/* Deepest nesting converted; containers count one level each, scalars none. */
#define JOBQ_JSON_MAX_DEPTH 32

/* New json value for a msgpack object, or NULL when the object holds
 * something JSON cannot carry (bin, ext, a map key that is not a string or
 * integer, nesting deeper than max_depth). If err is not NULL, a reason is
 * written there on failure. Thread-safe. */
json_t *jobq_json_from_msgpack(const msgpack_object *obj, int max_depth,
                               char *err, size_t errlen);

/* Packs a JSON value; returns 0, or -1 (with a reason in err) when the
 * value nests deeper than max_depth, in which case the packer holds a
 * partial value and must be discarded. Thread-safe. */
int jobq_json_to_msgpack(msgpack_packer *pk, const json_t *value, int max_depth,
                         char *err, size_t errlen);

/* A new NUL-terminated copy of the n bytes at s, cut to at most max bytes
 * (at a character boundary) and with every byte that does not start a
 * valid UTF-8 sequence replaced by '?': the daemon takes only UTF-8
 * strings, and output of programs is not always. Its length (NUL bytes
 * inside are kept) goes to *outlen. NULL when out of memory. Thread-safe. */
char *jobq_utf8_clean(const char *s, size_t n, size_t max, size_t *outlen);

#endif
