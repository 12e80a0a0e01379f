/* heap.h: one indexed binary heap for the whole daemon — the scheduler's
 * run queue and commit gate, the executors' timers and the parked waiters.
 *
 * Elements are caller-owned pointers. Each element remembers where it sits
 * (the `moved` callback tells it every time it moves, as beanstalkd's heap
 * does), so an element whose key changed is fixed in place and a cancelled
 * one is removed in O(log n): nothing stale is left behind to be skipped
 * later. Not thread-safe: the owner serialises access.
 */
#ifndef JOBQ_HEAP_H
#define JOBQ_HEAP_H

#include <stdbool.h>
#include <stddef.h>

/* An element's index while it is not in a heap. */
#define JQ_HEAP_NONE ((size_t)-1)

typedef bool (*jq_heap_less_fn)(const void *a, const void *b);
/* Called with the element's new index, or JQ_HEAP_NONE when it leaves. */
typedef void (*jq_heap_moved_fn)(void *elem, size_t index);

typedef struct {
    void **items;
    size_t count, cap;
    jq_heap_less_fn less;
    jq_heap_moved_fn moved;
} jq_heap_t;

void jq_heap_init(jq_heap_t *h, jq_heap_less_fn less, jq_heap_moved_fn moved);
/* Frees the heap's array (not the elements). */
void jq_heap_free(jq_heap_t *h);

static inline size_t jq_heap_size(const jq_heap_t *h) { return h->count; }
static inline void *jq_heap_top(const jq_heap_t *h) { return h->count ? h->items[0] : NULL; }
static inline void *jq_heap_at(const jq_heap_t *h, size_t i) { return i < h->count ? h->items[i] : NULL; }

/* Room for n elements in all: pushes up to there cannot fail. -1 when out
 * of memory (the heap is unchanged). */
int jq_heap_reserve(jq_heap_t *h, size_t n);
/* -1 when out of memory (the heap is unchanged). */
int jq_heap_push(jq_heap_t *h, void *elem);
/* The least element, removed; NULL when empty. */
void *jq_heap_pop(jq_heap_t *h);
/* Remove the element at index (as told by `moved`). */
void jq_heap_remove(jq_heap_t *h, size_t index);
/* The element at index changed its key: move it to its place. */
void jq_heap_fix(jq_heap_t *h, size_t index);

#endif
