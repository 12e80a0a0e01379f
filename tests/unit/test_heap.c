/* test_heap.c: the indexed heap of queue/heap.c — order under random
 * pushes and pops, every element always knowing its index, removal from
 * any position and fixing a changed key in place, checked against a
 * reference after every operation; out-of-range calls change nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "heap.h"

typedef struct {
    int key;
    int id; /* ties broken by id: a total order */
    size_t index;
} elem_t;

static bool less(const void *a, const void *b)
{
    const elem_t *x = a, *y = b;
    return x->key < y->key || (x->key == y->key && x->id < y->id);
}

static void moved(void *e, size_t index)
{
    ((elem_t *)e)->index = index;
}

/* The heap property holds and every element knows where it is. */
static void check(const jq_heap_t *h)
{
    for (size_t i = 0; i < jq_heap_size(h); i++) {
        elem_t *e = jq_heap_at(h, i);
        assert_int_equal(e->index, i);
        if (i)
            assert_false(less(e, jq_heap_at(h, (i - 1) / 2)));
    }
}

static void test_push_pop_order(void **state)
{
    (void)state;
    jq_heap_t h;
    jq_heap_init(&h, less, moved);
    assert_null(jq_heap_top(&h));
    assert_null(jq_heap_pop(&h));
    enum { N = 2000 };
    elem_t *e = calloc(N, sizeof *e);
    srand(11);
    for (int i = 0; i < N; i++) {
        e[i] = (elem_t){.key = rand() % 50, .id = i, .index = JQ_HEAP_NONE};
        assert_int_equal(jq_heap_push(&h, &e[i]), 0);
    }
    check(&h);
    elem_t *prev = NULL;
    for (int i = 0; i < N; i++) {
        elem_t *x = jq_heap_pop(&h);
        assert_non_null(x);
        assert_int_equal(x->index, JQ_HEAP_NONE);
        if (prev)
            assert_true(less(prev, x));
        prev = x;
    }
    assert_int_equal(jq_heap_size(&h), 0);
    jq_heap_free(&h);
    free(e);
}

/* Random removes and key changes, against the order a sort would give. */
static void test_remove_and_fix_anywhere(void **state)
{
    (void)state;
    jq_heap_t h;
    jq_heap_init(&h, less, moved);
    enum { N = 500 };
    elem_t *e = calloc(N, sizeof *e);
    bool *in = calloc(N, sizeof *in);
    srand(5);
    for (int i = 0; i < N; i++) {
        e[i] = (elem_t){.key = rand() % 100, .id = i, .index = JQ_HEAP_NONE};
        jq_heap_push(&h, &e[i]);
        in[i] = true;
    }
    for (int round = 0; round < 20000; round++) {
        int i = rand() % N;
        switch (rand() % 3) {
        case 0: /* remove wherever it is */
            if (in[i]) {
                jq_heap_remove(&h, e[i].index);
                assert_int_equal(e[i].index, JQ_HEAP_NONE);
                in[i] = false;
            }
            break;
        case 1: /* a new key, fixed in place: no second entry */
            if (in[i]) {
                size_t before = jq_heap_size(&h);
                e[i].key = rand() % 100;
                jq_heap_fix(&h, e[i].index);
                assert_int_equal(jq_heap_size(&h), before);
            }
            break;
        default:
            if (!in[i]) {
                jq_heap_push(&h, &e[i]);
                in[i] = true;
            }
        }
        if (round % 500 == 0)
            check(&h);
    }
    check(&h);
    /* Whatever is left comes out in order, each exactly once. */
    size_t left = 0;
    for (int i = 0; i < N; i++)
        left += in[i];
    assert_int_equal(jq_heap_size(&h), left);
    elem_t *prev = NULL;
    while (jq_heap_size(&h)) {
        elem_t *x = jq_heap_pop(&h);
        assert_true(in[x->id]);
        in[x->id] = false;
        if (prev)
            assert_true(less(prev, x));
        prev = x;
    }
    for (int i = 0; i < N; i++)
        assert_false(in[i]);
    /* Out of range: nothing happens. */
    jq_heap_remove(&h, 0);
    jq_heap_fix(&h, 3);
    jq_heap_remove(&h, JQ_HEAP_NONE);
    assert_int_equal(jq_heap_size(&h), 0);
    jq_heap_free(&h);
    free(e);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_pop_order),
        cmocka_unit_test(test_remove_and_fix_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
