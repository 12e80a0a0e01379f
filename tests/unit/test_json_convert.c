/* test_json_convert.c: unit tests of libjobq's msgpack <-> JSON conversion
 * (clients/jobq_json.c): every type in both directions, the lossy corners
 * (huge unsigned integers, NaN, invalid UTF-8, integer map keys), the
 * rejected types (bin, ext, other keys) and the depth limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobq_json.h"

/* Packs a JSON value and unpacks it again: the msgpack object lives in
 * *upk (caller destroys). */
static const msgpack_object *pack_json(const json_t *j, msgpack_sbuffer *sbuf,
                                       msgpack_unpacked *upk)
{
    msgpack_packer pk;
    char err[128];
    msgpack_sbuffer_init(sbuf);
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    assert_int_equal(jobq_json_to_msgpack(&pk, j, JOBQ_JSON_MAX_DEPTH, err, sizeof err), 0);
    msgpack_unpacked_init(upk);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(upk, sbuf->data, sbuf->size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sbuf->size);
    return &upk->data;
}

/* JSON -> msgpack -> JSON must give an equal value. */
static void round_trip(const char *text)
{
    json_error_t jerr;
    json_t *in = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    assert_non_null(in);
    msgpack_sbuffer sbuf;
    msgpack_unpacked upk;
    const msgpack_object *o = pack_json(in, &sbuf, &upk);
    char err[128];
    json_t *out = jobq_json_from_msgpack(o, JOBQ_JSON_MAX_DEPTH, err, sizeof err);
    assert_non_null(out);
    if (!json_equal(in, out))
        fail_msg("round trip of %s changed the value", text);
    /* Object keys keep their order. */
    char *a = json_dumps(in, JSON_ENCODE_ANY | JSON_COMPACT);
    char *b = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
    assert_string_equal(a, b);
    free(a);
    free(b);
    json_decref(in);
    json_decref(out);
    msgpack_unpacked_destroy(&upk);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_round_trip_scalars(void **state)
{
    (void)state;
    round_trip("null");
    round_trip("true");
    round_trip("false");
    round_trip("0");
    round_trip("-1");
    round_trip("9223372036854775807");
    round_trip("-9223372036854775808");
    round_trip("0.25");
    round_trip("-1e300");
    round_trip("\"\"");
    round_trip("\"h\\u00e9llo \\u2603 \\ud83d\\ude00\"");
    round_trip("\"a\\u0000b\"");
}

static void test_round_trip_containers(void **state)
{
    (void)state;
    round_trip("[]");
    round_trip("{}");
    round_trip("[1, 2.5, \"x\", null, [true, {}]]");
    round_trip("{\"zeta\": 1, \"alpha\": [1, {\"op\": \"test.delay\", \"args\": "
               "{\"duration\": 0.2}}], \"mid\": {\"key\": null}}");
}

/* Keys holding NUL bytes (only settable with jansson's length-aware API). */
static void test_nul_in_key(void **state)
{
    (void)state;
    json_t *in = json_object();
    json_object_setn_new(in, "k\0ey", 4, json_integer(3));
    msgpack_sbuffer sbuf;
    msgpack_unpacked upk;
    const msgpack_object *o = pack_json(in, &sbuf, &upk);
    assert_int_equal(o->via.map.ptr[0].key.via.str.size, 4);
    char err[128];
    json_t *out = jobq_json_from_msgpack(o, JOBQ_JSON_MAX_DEPTH, err, sizeof err);
    assert_non_null(out);
    assert_int_equal(json_object_size(out), 1);
    assert_int_equal(json_integer_value(json_object_getn(out, "k\0ey", 4)), 3);
    json_decref(in);
    json_decref(out);
    msgpack_unpacked_destroy(&upk);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_types_on_the_wire(void **state)
{
    (void)state;
    json_t *j = json_pack("[i, f, f, s, b, n]", 7, 2.0, 0.5, "s", 1);
    msgpack_sbuffer sbuf;
    msgpack_unpacked upk;
    const msgpack_object *o = pack_json(j, &sbuf, &upk);
    assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
    msgpack_object *a = o->via.array.ptr;
    assert_int_equal(a[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(a[1].type, MSGPACK_OBJECT_FLOAT64); /* reals stay reals */
    assert_int_equal(a[2].type, MSGPACK_OBJECT_FLOAT64);
    assert_int_equal(a[3].type, MSGPACK_OBJECT_STR);
    assert_int_equal(a[4].type, MSGPACK_OBJECT_BOOLEAN);
    assert_int_equal(a[5].type, MSGPACK_OBJECT_NIL);
    msgpack_unpacked_destroy(&upk);
    msgpack_sbuffer_destroy(&sbuf);
    json_decref(j);
}

/* Builds a msgpack object with a packing callback and converts it. */
typedef void (*packfn)(msgpack_packer *pk);

static json_t *convert_packed(packfn fn, char *err, size_t errlen)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    fn(&pk);
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&upk, sbuf.data, sbuf.size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    json_t *j = jobq_json_from_msgpack(&upk.data, JOBQ_JSON_MAX_DEPTH, err, errlen);
    msgpack_unpacked_destroy(&upk);
    msgpack_sbuffer_destroy(&sbuf);
    return j;
}

static void pack_big_uint(msgpack_packer *pk) { msgpack_pack_uint64(pk, UINT64_MAX); }
static void pack_nan(msgpack_packer *pk) { msgpack_pack_double(pk, 0.0 / 0.0); }
static void pack_float32(msgpack_packer *pk) { msgpack_pack_float(pk, 1.5f); }
static void pack_bad_utf8(msgpack_packer *pk)
{
    msgpack_pack_str(pk, 6);
    msgpack_pack_str_body(pk, "a\xff" "b\xc3\xa9" "\xe2", 6);
}
static void pack_int_keys(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_int(pk, 5);
    msgpack_pack_true(pk);
    msgpack_pack_int(pk, -3);
    msgpack_pack_nil(pk);
}
static void pack_bin(msgpack_packer *pk)
{
    msgpack_pack_bin(pk, 2);
    msgpack_pack_bin_body(pk, "ab", 2);
}
static void pack_ext(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_ext(pk, 1, 1);
    msgpack_pack_ext_body(pk, "x", 1);
}
static void pack_nil_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_nil(pk);
    msgpack_pack_int(pk, 1);
}

static void test_lossy_corners(void **state)
{
    (void)state;
    char err[128];
    json_t *j = convert_packed(pack_big_uint, err, sizeof err);
    assert_true(json_is_real(j));
    assert_true(json_real_value(j) > 1.8e19);
    json_decref(j);

    j = convert_packed(pack_nan, err, sizeof err);
    assert_true(json_is_null(j));
    json_decref(j);

    j = convert_packed(pack_float32, err, sizeof err);
    assert_true(json_is_real(j));
    assert_true(json_real_value(j) == 1.5);
    json_decref(j);

    j = convert_packed(pack_bad_utf8, err, sizeof err);
    assert_true(json_is_string(j));
    assert_int_equal(json_string_length(j), 6);
    assert_memory_equal(json_string_value(j), "a?b\xc3\xa9?", 6);
    json_decref(j);

    j = convert_packed(pack_int_keys, err, sizeof err);
    assert_true(json_is_object(j));
    assert_true(json_is_true(json_object_get(j, "5")));
    assert_true(json_is_null(json_object_get(j, "-3")));
    json_decref(j);
}

static void test_rejected(void **state)
{
    (void)state;
    char err[128];
    err[0] = '\0';
    assert_null(convert_packed(pack_bin, err, sizeof err));
    assert_non_null(strstr(err, "binary"));
    assert_null(convert_packed(pack_ext, err, sizeof err));
    assert_non_null(strstr(err, "extension"));
    assert_null(convert_packed(pack_nil_key, err, sizeof err));
    assert_non_null(strstr(err, "map key"));
}

/* n nested arrays around 1. */
static json_t *nested(int n)
{
    json_t *j = json_integer(1);
    for (int i = 0; i < n; i++)
        j = json_pack("[o]", j);
    return j;
}

static void test_depth_limit(void **state)
{
    (void)state;
    char err[128];
    msgpack_sbuffer sbuf;
    msgpack_packer pk;

    /* JSON -> msgpack: 32 levels pass, 33 fail. */
    json_t *ok = nested(JOBQ_JSON_MAX_DEPTH), *deep = nested(JOBQ_JSON_MAX_DEPTH + 1);
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    assert_int_equal(jobq_json_to_msgpack(&pk, ok, JOBQ_JSON_MAX_DEPTH, err, sizeof err), 0);

    /* and the 32 levels can be read back by msgpack-c and converted. */
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&upk, sbuf.data, sbuf.size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    json_t *back = jobq_json_from_msgpack(&upk.data, JOBQ_JSON_MAX_DEPTH, err, sizeof err);
    assert_true(json_equal(back, ok));
    json_decref(back);
    /* A smaller budget refuses the same object. */
    assert_null(jobq_json_from_msgpack(&upk.data, JOBQ_JSON_MAX_DEPTH - 1, err, sizeof err));
    assert_non_null(strstr(err, "deep"));
    msgpack_unpacked_destroy(&upk);
    msgpack_sbuffer_destroy(&sbuf);

    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    assert_int_equal(jobq_json_to_msgpack(&pk, deep, JOBQ_JSON_MAX_DEPTH, err, sizeof err), -1);
    assert_non_null(strstr(err, "deep"));
    msgpack_sbuffer_destroy(&sbuf);
    json_decref(ok);
    json_decref(deep);
}

static void test_null_inputs(void **state)
{
    (void)state;
    char err[64];
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    assert_int_equal(jobq_json_to_msgpack(&pk, NULL, 4, err, sizeof err), -1);
    assert_null(jobq_json_from_msgpack(NULL, 4, err, sizeof err));
    /* err may be NULL. */
    assert_null(jobq_json_from_msgpack(NULL, 4, NULL, 0));
    msgpack_sbuffer_destroy(&sbuf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_scalars),
        cmocka_unit_test(test_round_trip_containers),
        cmocka_unit_test(test_nul_in_key),
        cmocka_unit_test(test_types_on_the_wire),
        cmocka_unit_test(test_lossy_corners),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_null_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
