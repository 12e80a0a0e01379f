/* test_event_batch.c: the batched stream's encoder (pubsub/event.c) — a
 * batch is byte for byte what packing the list of its event bodies makes
 * (the golden vector batch_events: the two event vectors it is made of),
 * with the shortest array header at each size class; the bounds close a
 * batch before it passes them, and a body larger than the byte bound goes
 * alone; a cleared batch starts afresh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "event.h"

/* The bytes of tests/vectors/NAME.msgpack (malloc'ed). */
static char *vector(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.msgpack", JOBQ_VECTORS_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void test_the_vector(void **state)
{
    (void)state;
    size_t la, lb, lw, len;
    char *a = vector("event_submit_token", &la), *b = vector("event_submit", &lb);
    char *want = vector("batch_events", &lw);
    jq_event_batch_t batch;
    jq_event_batch_init(&batch);
    assert_null(jq_event_batch_close(&batch, &len)); /* empty: nothing to send */
    assert_false(jq_event_batch_full(&batch, 10u << 20)); /* a first body always fits */
    jq_event_batch_add(&batch, a, la);
    jq_event_batch_add(&batch, b, lb);
    const char *got = jq_event_batch_close(&batch, &len);
    assert_non_null(got);
    assert_int_equal(len, lw);
    assert_memory_equal(got, want, lw);
    /* Cleared, the same two make the same bytes again. */
    jq_event_batch_clear(&batch);
    assert_null(jq_event_batch_close(&batch, &len));
    jq_event_batch_add(&batch, a, la);
    jq_event_batch_add(&batch, b, lb);
    got = jq_event_batch_close(&batch, &len);
    assert_int_equal(len, lw);
    assert_memory_equal(got, want, lw);
    jq_event_batch_fini(&batch);
    free(a);
    free(b);
    free(want);
}

/* n one-byte bodies (positive fixints): the batch must be msgpack-c's own
 * packing of that array. */
static void check_count(uint32_t n)
{
    jq_event_batch_t batch;
    jq_event_batch_init(&batch);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        char body = (char)(i & 0x7f);
        jq_event_batch_add(&batch, &body, 1);
        msgpack_pack_uint32(&pk, i & 0x7f);
    }
    size_t len;
    const char *got = jq_event_batch_close(&batch, &len);
    assert_non_null(got);
    assert_int_equal(len, sb.size);
    assert_memory_equal(got, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    jq_event_batch_fini(&batch);
}

static void test_headers(void **state)
{
    (void)state;
    const uint32_t counts[] = {1, 15, 16, 1024, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        check_count(counts[i]);
}

static void test_bounds(void **state)
{
    (void)state;
    jq_event_batch_t batch;
    jq_event_batch_init(&batch);
    char body[32] = {0}; /* 1,024 of them stay under the byte bound */
    for (int i = 0; i < JQ_BATCH_MAX_EVENTS; i++) {
        assert_false(jq_event_batch_full(&batch, sizeof body));
        jq_event_batch_add(&batch, body, sizeof body);
    }
    assert_true(jq_event_batch_full(&batch, 1)); /* by count */
    jq_event_batch_clear(&batch);
    /* By bytes: what would pass JQ_BATCH_MAX_BYTES closes the batch first. */
    jq_event_batch_add(&batch, body, sizeof body);
    assert_false(jq_event_batch_full(&batch, JQ_BATCH_MAX_BYTES - sizeof body));
    assert_true(jq_event_batch_full(&batch, JQ_BATCH_MAX_BYTES - sizeof body + 1));
    /* A body larger than the bound goes alone, in a batch of one. */
    jq_event_batch_clear(&batch);
    assert_false(jq_event_batch_full(&batch, JQ_BATCH_MAX_BYTES * 2));
    jq_event_batch_fini(&batch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_vector),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
