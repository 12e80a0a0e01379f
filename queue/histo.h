/* histo.h: fixed-bucket histograms that any thread may observe into with
 * two relaxed atomic additions and no lock, and a reader may copy at any
 * time (a copy taken during observations is off by the observations in
 * flight, never torn per counter).
 *
 * Values are unsigned integers in the histogram's own unit (microseconds,
 * records); the bounds are in that unit too and the reader scales them
 * (a spec's `scale` turns a value into the exposed unit: 1e-6 for µs →
 * seconds). Buckets are kept non-cumulative so an observation touches one
 * counter; the total count is their sum, so the reader's cumulative
 * buckets and count always agree. */
#ifndef JOBQ_HISTO_H
#define JOBQ_HISTO_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define JQ_HISTO_MAX_BOUNDS 16

/* A histogram's shape: ascending upper bounds (inclusive), the last bucket
 * (+Inf) implied. Static tables, never changed. */
typedef struct {
    const uint64_t *le;
    unsigned n;     /* bounds in le, at most JQ_HISTO_MAX_BOUNDS */
    double scale;   /* exposed value = stored value * scale */
} jq_histo_spec_t;

typedef struct {
    _Atomic uint64_t bucket[JQ_HISTO_MAX_BOUNDS + 1]; /* last: above every bound */
    _Atomic uint64_t sum;
} jq_histo_t;

/* A copy for rendering: cumulative counts per bound, then +Inf (= count). */
typedef struct {
    uint64_t cum[JQ_HISTO_MAX_BOUNDS + 1];
    uint64_t count, sum;
} jq_histo_snap_t;

/* Any thread. */
static inline void jq_histo_observe(jq_histo_t *h, const jq_histo_spec_t *spec, uint64_t v)
{
    unsigned i = 0;
    while (i < spec->n && v > spec->le[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

/* Any thread. */
static inline void jq_histo_read(const jq_histo_t *h, const jq_histo_spec_t *spec,
                                 jq_histo_snap_t *out)
{
    uint64_t c = 0;
    for (unsigned i = 0; i <= spec->n; i++) {
        c += atomic_load_explicit(&((jq_histo_t *)h)->bucket[i], memory_order_relaxed);
        out->cum[i] = c;
    }
    out->count = c;
    out->sum = atomic_load_explicit(&((jq_histo_t *)h)->sum, memory_order_relaxed);
}

#endif
