/* test_tokens.c: the client-token index (broker/tokens.c): first claim,
 * retry, reuse with another body, abandon, the window, the count and byte caps,
 * a retry that waits for a pending first call on another thread, and the
 * restore of a batch answer whose jobs were not all stored. */
#include "tokens.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define SEC 1000000LL

static jq_token_claim_t claim(jq_tokens_t *t, const char *tok, uint64_t hash, int64_t now,
                              char **reply, size_t *len, uint64_t *ticket)
{
    jq_token_claim_t out;
    *reply = NULL;
    assert_int_equal(jq_tokens_claim(t, tok, strlen(tok), hash, now, &out, reply, len, ticket),
                     0);
    return out;
}

static void test_claim_retry_reuse(void **state)
{
    (void)state;
    jq_tokens_t *t = jq_tokens_new(10 * SEC, 100);
    char *reply;
    size_t len;
    uint64_t ticket;
    assert_int_equal(claim(t, "a", 1, 0, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_done(t, "a", 1, "\x07", 1, 42);
    assert_int_equal(claim(t, "a", 1, SEC, &reply, &len, &ticket), JQ_TOKEN_REPLY);
    assert_int_equal(len, 1);
    assert_int_equal(reply[0], 7);
    assert_int_equal(ticket, 42);
    free(reply);
    assert_int_equal(claim(t, "a", 2, SEC, &reply, &len, &ticket), JQ_TOKEN_REUSED);
    /* A failed first call lets the token go. */
    assert_int_equal(claim(t, "b", 1, SEC, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_abandon(t, "b", 1);
    assert_int_equal(claim(t, "b", 3, SEC, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_done(t, "b", 1, "\x08", 1, 0);
    assert_int_equal(jq_tokens_count(t), 2);
    /* Past the window "a" is forgotten (it expires on the next claim). */
    assert_int_equal(claim(t, "a", 2, 11 * SEC, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_abandon(t, "a", 1);
    assert_int_equal(jq_tokens_count(t), 1); /* "b": made at 1 s, not older than 10 s */
    jq_tokens_destroy(&t);
    assert_null(t);
}

static void test_count_cap(void **state)
{
    (void)state;
    jq_tokens_t *t = jq_tokens_new(100 * SEC, 3);
    char *reply, tok[8];
    size_t len;
    uint64_t ticket;
    for (int i = 0; i < 5; i++) {
        snprintf(tok, sizeof tok, "t%d", i);
        assert_int_equal(claim(t, tok, 1, i, &reply, &len, &ticket), JQ_TOKEN_NEW);
        jq_tokens_done(t, tok, strlen(tok), "x", 1, 0);
    }
    /* The oldest went first; the newest three stay (and one more claim
     * may briefly hold four). */
    assert_true(jq_tokens_count(t) <= 4);
    assert_int_equal(claim(t, "t4", 1, 10, &reply, &len, &ticket), JQ_TOKEN_REPLY);
    free(reply);
    assert_int_equal(claim(t, "t0", 1, 10, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_destroy(&t);
}

/* Kept answers are capped in bytes too: three answers of 30 MiB do not
 * fit in JQ_TOKEN_MAX_BYTES, so the oldest goes as soon as the third is
 * kept, and what stays is at most the cap. */
static void test_byte_cap(void **state)
{
    (void)state;
    size_t big = 30u * 1024 * 1024;
    char *body = calloc(1, big);
    assert_non_null(body);
    jq_tokens_t *t = jq_tokens_new(100 * SEC, 100);
    char *reply, tok[8];
    size_t len;
    uint64_t ticket;
    for (int i = 0; i < 3; i++) {
        snprintf(tok, sizeof tok, "b%d", i);
        assert_int_equal(claim(t, tok, 1, i, &reply, &len, &ticket), JQ_TOKEN_NEW);
        jq_tokens_done(t, tok, strlen(tok), body, big, 0);
    }
    assert_int_equal(jq_tokens_count(t), 2);
    assert_int_equal(claim(t, "b0", 1, 10, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_abandon(t, "b0", 2);
    assert_int_equal(claim(t, "b2", 1, 10, &reply, &len, &ticket), JQ_TOKEN_REPLY);
    assert_int_equal(len, big);
    free(reply);
    jq_tokens_destroy(&t);
    free(body);
}

static void test_window_zero_is_off(void **state)
{
    (void)state;
    jq_tokens_t *t = jq_tokens_new(0, 100);
    char *reply;
    size_t len;
    uint64_t ticket;
    assert_int_equal(claim(t, "a", 1, 0, &reply, &len, &ticket), JQ_TOKEN_NEW);
    jq_tokens_done(t, "a", 1, "x", 1, 0);
    assert_int_equal(claim(t, "a", 1, 0, &reply, &len, &ticket), JQ_TOKEN_NEW);
    assert_int_equal(jq_tokens_count(t), 0);
    jq_tokens_destroy(&t);
}

typedef struct {
    jq_tokens_t *t;
    jq_token_claim_t out;
    char *reply;
    size_t len;
    uint64_t ticket;
} retry_t;

static void *retry_thread(void *arg)
{
    retry_t *r = arg;
    jq_tokens_claim(r->t, "p", 1, 9, 0, &r->out, &r->reply, &r->len, &r->ticket);
    return NULL;
}

static void test_retry_waits_for_a_pending_first_call(void **state)
{
    (void)state;
    jq_tokens_t *t = jq_tokens_new(10 * SEC, 100);
    char *reply;
    size_t len;
    uint64_t ticket;
    assert_int_equal(claim(t, "p", 9, 0, &reply, &len, &ticket), JQ_TOKEN_NEW);
    retry_t r = {.t = t};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, retry_thread, &r), 0);
    usleep(50000); /* the retry is parked on the pending entry by now */
    jq_tokens_done(t, "p", 1, "\x05", 1, 77);
    pthread_join(th, NULL);
    assert_int_equal(r.out, JQ_TOKEN_REPLY);
    assert_int_equal(r.ticket, 77);
    assert_int_equal(r.reply[0], 5);
    free(r.reply);
    jq_tokens_destroy(&t);
}

static bool only_odd(void *ctx, uint64_t id)
{
    (void)ctx;
    return id % 2 == 1;
}

static void test_restore(void **state)
{
    (void)state;
    jq_tokens_t *t = jq_tokens_new(10 * SEC, 100);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* A batch: [[true, 1], [false, "no"], [true, 2]]; job 2 was not stored. */
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "token", 5);
    msgpack_pack_str_with_body(&pk, "6274", 4); /* "bt" in hex */
    msgpack_pack_str_with_body(&pk, "hash", 4);
    msgpack_pack_uint64(&pk, INT64_MAX - 1);
    msgpack_pack_str_with_body(&pk, "reply", 5);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_true(&pk);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_false(&pk);
    msgpack_pack_str_with_body(&pk, "no", 2);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_true(&pk);
    msgpack_pack_uint64(&pk, 2);
    assert_int_equal(jq_tokens_restore(t, sb.data, sb.size, 1, 5 * SEC, 6 * SEC, only_odd, NULL),
                     0);
    /* Too old to keep. */
    assert_int_equal(jq_tokens_restore(t, sb.data, sb.size, 1, 0, 20 * SEC, only_odd, NULL), 0);
    msgpack_sbuffer_destroy(&sb);
    char *reply;
    size_t len;
    uint64_t ticket = 99;
    assert_int_equal(claim(t, "bt", INT64_MAX - 1, 6 * SEC, &reply, &len, &ticket),
                     JQ_TOKEN_REPLY);
    assert_int_equal(ticket, 0);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, reply, len, NULL), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *a = &up.data;
    assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(a->via.array.size, 3);
    assert_true(a->via.array.ptr[0].via.array.ptr[0].via.boolean);
    assert_false(a->via.array.ptr[1].via.array.ptr[0].via.boolean);
    assert_false(a->via.array.ptr[2].via.array.ptr[0].via.boolean); /* not stored */
    msgpack_unpacked_destroy(&up);
    free(reply);
    /* The hash covers method and body, and is stable. */
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    assert_int_equal(jq_tokens_hash("submit_job", &nil), jq_tokens_hash("submit_job", &nil));
    assert_int_not_equal(jq_tokens_hash("submit_job", &nil),
                         jq_tokens_hash("submit_many_jobs", &nil));
    jq_tokens_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_retry_reuse),
        cmocka_unit_test(test_count_cap),
        cmocka_unit_test(test_byte_cap),
        cmocka_unit_test(test_window_zero_is_off),
        cmocka_unit_test(test_retry_waits_for_a_pending_first_call),
        cmocka_unit_test(test_restore),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
