/* test_ring.c: the replay ring of pubsub/ring.c — events_since pages by
 * count and by bytes (at least one event per page, so a client paging on
 * always progresses), too-old detection, eviction by count and bytes, and
 * a job's chain of events; bodies handed out stay valid while the ring
 * evicts them (reference counts; ASan watches). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "ring.h"

/* events_since into a buffer; returns the array's length. */
static size_t since(jq_ring_t *r, uint64_t after, size_t max, size_t max_bytes, bool *more,
                    jq_ring_since_t *rc, msgpack_sbuffer *sb)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t count = 0;
    uint64_t first, last;
    *rc = jq_ring_since(r, after, max, max_bytes, &pk, &count, more, &first, &last);
    return count;
}

static void append(jq_ring_t *r, uint64_t seq, uint64_t job, uint64_t serial, size_t len)
{
    char *body = malloc(len);
    memset(body, (int)('a' + seq % 26), len);
    assert_int_equal(jq_ring_append(r, seq, job, serial, body, len), 0);
    free(body);
}

static void test_pages_by_count_and_bytes(void **state)
{
    (void)state;
    jq_ring_t *r = jq_ring_new(100, 1 << 20);
    for (uint64_t s = 1; s <= 10; s++)
        append(r, s, s, 1, 1000);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    bool more;
    jq_ring_since_t rc;
    assert_int_equal(since(r, 0, 100, 1 << 20, &more, &rc, &sb), 10);
    assert_false(more);
    assert_int_equal(since(r, 0, 4, 1 << 20, &more, &rc, &sb), 4);
    assert_true(more);
    /* 3,500 bytes hold three 1,000-byte events. */
    assert_int_equal(since(r, 2, 100, 3500, &more, &rc, &sb), 3);
    assert_true(more);
    /* One event larger than the bound still comes: paging progresses. */
    assert_int_equal(since(r, 0, 100, 10, &more, &rc, &sb), 1);
    assert_true(more);
    assert_int_equal(since(r, 10, 100, 10, &more, &rc, &sb), 0);
    assert_false(more);
    assert_int_equal(rc, JQ_RING_OK);
    msgpack_sbuffer_destroy(&sb);
    jq_ring_destroy(&r);
}

static void test_eviction_and_too_old(void **state)
{
    (void)state;
    jq_ring_t *r = jq_ring_new(5, 3000); /* 5 events or 3,000 bytes */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    bool more;
    jq_ring_since_t rc;
    for (uint64_t s = 1; s <= 8; s++)
        append(r, s, 7, s, 1000);
    /* Bytes bound: three at most stay (6, 7, 8). */
    since(r, 0, 100, 1 << 20, &more, &rc, &sb);
    assert_int_equal(rc, JQ_RING_TOO_OLD);
    assert_int_equal(since(r, 5, 100, 1 << 20, &more, &rc, &sb), 3);
    assert_int_equal(rc, JQ_RING_OK);
    msgpack_sbuffer_destroy(&sb);
    jq_ring_destroy(&r);
}

static int visits;
static uint64_t last_visited;

static void visit(void *ctx, const char *body, size_t len)
{
    (void)ctx;
    assert_true(len > 0);
    visits++;
    last_visited = (uint64_t)(body[0] - 'a');
}

static void test_job_chain(void **state)
{
    (void)state;
    jq_ring_t *r = jq_ring_new(100, 1 << 20);
    /* Job 3's serials 1..4 interleaved with job 4's. */
    uint64_t seq = 0;
    for (uint64_t serial = 1; serial <= 4; serial++) {
        append(r, ++seq, 3, serial, 10);
        append(r, ++seq, 4, serial, 10);
    }
    visits = 0;
    assert_true(jq_ring_job_since(r, 3, 2, visit, NULL));
    assert_int_equal(visits, 2); /* serials 3 and 4 */
    assert_int_equal(last_visited, 7 % 26);
    visits = 0;
    assert_true(jq_ring_job_since(r, 99, 0, visit, NULL)); /* no events: nothing lost */
    assert_int_equal(visits, 0);
    jq_ring_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pages_by_count_and_bytes),
        cmocka_unit_test(test_eviction_and_too_old),
        cmocka_unit_test(test_job_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
