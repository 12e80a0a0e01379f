/* heap.c: the indexed binary heap (see heap.h). */
#include "heap.h"

#include <stdlib.h>

void jq_heap_init(jq_heap_t *h, jq_heap_less_fn less, jq_heap_moved_fn moved)
{
    h->items = NULL;
    h->count = h->cap = 0;
    h->less = less;
    h->moved = moved;
}

void jq_heap_free(jq_heap_t *h)
{
    free(h->items);
    h->items = NULL;
    h->count = h->cap = 0;
}

static void place(jq_heap_t *h, size_t i, void *e)
{
    h->items[i] = e;
    h->moved(e, i);
}

static void sift_up(jq_heap_t *h, size_t i)
{
    void *e = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!h->less(e, h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, e);
}

static void sift_down(jq_heap_t *h, size_t i)
{
    void *e = h->items[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->count)
            break;
        if (c + 1 < h->count && h->less(h->items[c + 1], h->items[c]))
            c++;
        if (!h->less(h->items[c], e))
            break;
        place(h, i, h->items[c]);
        i = c;
    }
    place(h, i, e);
}

int jq_heap_reserve(jq_heap_t *h, size_t n)
{
    if (n <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < n)
        cap *= 2;
    void **grown = realloc(h->items, cap * sizeof *grown);
    if (!grown)
        return -1;
    h->items = grown;
    h->cap = cap;
    return 0;
}

int jq_heap_push(jq_heap_t *h, void *elem)
{
    if (h->count == h->cap && jq_heap_reserve(h, h->cap ? h->cap * 2 : 64) < 0)
        return -1;
    h->items[h->count++] = elem;
    sift_up(h, h->count - 1);
    return 0;
}

void jq_heap_remove(jq_heap_t *h, size_t index)
{
    if (index >= h->count)
        return;
    void *gone = h->items[index];
    void *last = h->items[--h->count];
    h->moved(gone, JQ_HEAP_NONE);
    if (index == h->count)
        return;
    place(h, index, last); /* it may belong above or below the hole */
    jq_heap_fix(h, index);
}

void *jq_heap_pop(jq_heap_t *h)
{
    void *top = jq_heap_top(h);
    if (top)
        jq_heap_remove(h, 0);
    return top;
}

void jq_heap_fix(jq_heap_t *h, size_t index)
{
    if (index >= h->count)
        return;
    void *e = h->items[index];
    sift_up(h, index);
    if (h->items[index] == e)
        sift_down(h, index);
}
