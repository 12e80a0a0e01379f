/* test_scan.c: unit tests of the msgpack pre-scan (proto/scan.c): every
 * type msgpack-c packs, truncation at every offset, trailing bytes, 0xc1,
 * containers declaring more elements than the request holds, the depth and
 * object limits, strict UTF-8 in values and keys, the early "id" report,
 * agreement with msgpack_unpack_next on random inputs, and a 16 MiB
 * request (with the scan speed printed).
 *
 * Every scan runs on a copy in a heap block of exactly the input's length,
 * so the AddressSanitizer build catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <msgpack.h>
/* MSGPACK_EMBED_STACK_SIZE: the unpacker's nesting limit (not in msgpack.h). */
#include <msgpack/unpack_define.h>

#include "scan.h"
#include "wire.h"

#define RANDOM_CASES 20000
#define RANDOM_SEED UINT64_C(0x5ca11ab1e0ddba11)
#define BIG_REQUEST_BYTES (16u * 1024 * 1024)

/* A packer writing into a growing buffer. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} packbuf_t;

static void pb_init(packbuf_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void pb_reset(packbuf_t *b)
{
    msgpack_sbuffer_clear(&b->sb);
}

static void pb_destroy(packbuf_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

static void pb_bytes(packbuf_t *b, const void *p, size_t n)
{
    msgpack_sbuffer_write(&b->sb, p, n);
}

static void pb_str(packbuf_t *b, const char *s)
{
    msgpack_pack_str_with_body(&b->pk, s, strlen(s));
}

static void pb_strn(packbuf_t *b, const void *s, size_t n)
{
    msgpack_pack_str_with_body(&b->pk, s, n);
}

static jq_scan_limits_t limits(size_t depth, size_t objects, bool utf8)
{
    jq_scan_limits_t l = {.max_depth = depth, .max_objects = objects, .check_utf8 = utf8};
    return l;
}

/* jq_scan on an exact-length heap copy of data. */
static jq_scan_status_t scan_l(const void *data, size_t len, const jq_scan_limits_t *lim,
                               jq_scan_result_t *r)
{
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, data, len);
    bool ok = jq_scan(copy, len, lim, r);
    free(copy);
    assert_int_equal(ok, r->status == JQ_SCAN_OK);
    return r->status;
}

static jq_scan_status_t scan(const void *data, size_t len, jq_scan_result_t *r)
{
    return scan_l(data, len, NULL, r);
}

static jq_scan_status_t scan_utf8(const void *data, size_t len, jq_scan_result_t *r)
{
    jq_scan_limits_t l = limits(0, 0, true);
    return scan_l(data, len, &l, r);
}

/* msgpack-c must take the whole buffer as one value. */
static void assert_unpacks(const void *data, size_t len)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, data, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    msgpack_unpacked_destroy(&up);
}

/* One value packed by msgpack-c: scans OK with the expected type byte,
 * object count and depth, and msgpack-c reads it back. */
static void expect_packed_ok(packbuf_t *b, unsigned char type_byte, size_t objects,
                             size_t depth)
{
    jq_scan_result_t r;
    assert_true(b->sb.size > 0);
    if ((unsigned char)b->sb.data[0] != type_byte)
        fail_msg("packed type byte 0x%02x, expected 0x%02x",
                 (unsigned char)b->sb.data[0], type_byte);
    if (scan_utf8(b->sb.data, b->sb.size, &r) != JQ_SCAN_OK)
        fail_msg("type 0x%02x: %s at %zu", type_byte, jq_scan_status_text(r.status),
                 r.offset);
    assert_int_equal(r.objects, objects);
    assert_int_equal(r.depth, depth);
    assert_int_equal(r.offset, 0);
    assert_false(r.has_id);
    assert_unpacks(b->sb.data, b->sb.size);
    pb_reset(b);
}

static void test_every_type(void **state)
{
    (void)state;
    packbuf_t b;
    pb_init(&b);
    msgpack_packer *pk = &b.pk;
    static char filler[70000];
    memset(filler, 'x', sizeof filler);

    msgpack_pack_nil(pk);
    expect_packed_ok(&b, 0xc0, 1, 0);
    msgpack_pack_false(pk);
    expect_packed_ok(&b, 0xc2, 1, 0);
    msgpack_pack_true(pk);
    expect_packed_ok(&b, 0xc3, 1, 0);

    /* Integers: fixints and every fixed width. */
    msgpack_pack_uint8(pk, 0);
    expect_packed_ok(&b, 0x00, 1, 0);
    msgpack_pack_uint8(pk, 127);
    expect_packed_ok(&b, 0x7f, 1, 0);
    msgpack_pack_int8(pk, -1);
    expect_packed_ok(&b, 0xff, 1, 0);
    msgpack_pack_int8(pk, -32);
    expect_packed_ok(&b, 0xe0, 1, 0);
    msgpack_pack_fix_uint8(pk, 200);
    expect_packed_ok(&b, 0xcc, 1, 0);
    msgpack_pack_fix_uint16(pk, 60000);
    expect_packed_ok(&b, 0xcd, 1, 0);
    msgpack_pack_fix_uint32(pk, 4000000000u);
    expect_packed_ok(&b, 0xce, 1, 0);
    msgpack_pack_fix_uint64(pk, UINT64_MAX);
    expect_packed_ok(&b, 0xcf, 1, 0);
    msgpack_pack_fix_int8(pk, -100);
    expect_packed_ok(&b, 0xd0, 1, 0);
    msgpack_pack_fix_int16(pk, -30000);
    expect_packed_ok(&b, 0xd1, 1, 0);
    msgpack_pack_fix_int32(pk, INT32_MIN);
    expect_packed_ok(&b, 0xd2, 1, 0);
    msgpack_pack_fix_int64(pk, INT64_MIN);
    expect_packed_ok(&b, 0xd3, 1, 0);
    msgpack_pack_int64(pk, -100000); /* the packer's own choice of width */
    expect_packed_ok(&b, 0xd2, 1, 0);

    msgpack_pack_float(pk, 1.5f);
    expect_packed_ok(&b, 0xca, 1, 0);
    msgpack_pack_double(pk, -2.25);
    expect_packed_ok(&b, 0xcb, 1, 0);

    /* str: fixstr, str 8/16/32 (each at the smallest length using it). */
    pb_strn(&b, filler, 0);
    expect_packed_ok(&b, 0xa0, 1, 0);
    pb_strn(&b, filler, 31);
    expect_packed_ok(&b, 0xbf, 1, 0);
    pb_strn(&b, filler, 32);
    expect_packed_ok(&b, 0xd9, 1, 0);
    pb_strn(&b, filler, 256);
    expect_packed_ok(&b, 0xda, 1, 0);
    pb_strn(&b, filler, 65536);
    expect_packed_ok(&b, 0xdb, 1, 0);

    /* bin 8/16/32. */
    msgpack_pack_bin_with_body(pk, filler, 0);
    expect_packed_ok(&b, 0xc4, 1, 0);
    msgpack_pack_bin_with_body(pk, filler, 255);
    expect_packed_ok(&b, 0xc4, 1, 0);
    msgpack_pack_bin_with_body(pk, filler, 256);
    expect_packed_ok(&b, 0xc5, 1, 0);
    msgpack_pack_bin_with_body(pk, filler, 65536);
    expect_packed_ok(&b, 0xc6, 1, 0);

    /* fixext 1/2/4/8/16 and ext 8/16/32. */
    static const struct {
        size_t len;
        unsigned char type_byte;
    } exts[] = {{1, 0xd4},   {2, 0xd5},   {4, 0xd6},   {8, 0xd7},       {16, 0xd8},
                {0, 0xc7},   {3, 0xc7},   {255, 0xc7}, {256, 0xc8},     {65535, 0xc8},
                {65536, 0xc9}};
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        msgpack_pack_ext_with_body(pk, filler, exts[i].len, 42);
        expect_packed_ok(&b, exts[i].type_byte, 1, 0);
        msgpack_pack_ext_with_body(pk, filler, exts[i].len, -1); /* negative type */
        expect_packed_ok(&b, exts[i].type_byte, 1, 0);
    }

    /* Arrays and maps: fix, 16, 32, empty ones counting as a level. */
    static const struct {
        uint32_t n;
        unsigned char array_byte, map_byte;
    } conts[] = {{0, 0x90, 0x80}, {1, 0x91, 0x81}, {15, 0x9f, 0x8f},
                 {16, 0xdc, 0xde}, {65535, 0xdc, 0xde}, {65536, 0xdd, 0xdf}};
    for (size_t i = 0; i < sizeof conts / sizeof *conts; i++) {
        msgpack_pack_array(pk, conts[i].n);
        for (uint32_t k = 0; k < conts[i].n; k++)
            msgpack_pack_nil(pk);
        expect_packed_ok(&b, conts[i].array_byte, 1 + (size_t)conts[i].n, 1);
        msgpack_pack_map(pk, conts[i].n);
        for (uint32_t k = 0; k < conts[i].n; k++) {
            msgpack_pack_uint32(pk, k);
            msgpack_pack_true(pk);
        }
        expect_packed_ok(&b, conts[i].map_byte, 1 + 2 * (size_t)conts[i].n, 1);
    }
    pb_destroy(&b);
}

/* Forms msgpack-c never writes but that are valid: wider headers than
 * needed. */
static void test_non_minimal_forms(void **state)
{
    (void)state;
    static const unsigned char str8_id[] = {0xd9, 0x02, 'i', 'd'};
    static const unsigned char str32_empty[] = {0xdb, 0, 0, 0, 0};
    static const unsigned char array16_one[] = {0xdc, 0x00, 0x01, 0x05};
    static const unsigned char array32_empty[] = {0xdd, 0, 0, 0, 0};
    static const unsigned char map16_one[] = {0xde, 0x00, 0x01, 0xc0, 0xc0};
    static const unsigned char map32_empty[] = {0xdf, 0, 0, 0, 0};
    static const unsigned char uint64_small[] = {0xcf, 0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char ext32_empty[] = {0xc9, 0, 0, 0, 0, 0x01};
    static const unsigned char bin32_one[] = {0xc6, 0, 0, 0, 1, 0xff};
    const struct {
        const unsigned char *p;
        size_t n, objects, depth;
    } cases[] = {
        {str8_id, sizeof str8_id, 1, 0},         {str32_empty, sizeof str32_empty, 1, 0},
        {array16_one, sizeof array16_one, 2, 1}, {array32_empty, sizeof array32_empty, 1, 1},
        {map16_one, sizeof map16_one, 3, 1},     {map32_empty, sizeof map32_empty, 1, 1},
        {uint64_small, sizeof uint64_small, 1, 0}, {ext32_empty, sizeof ext32_empty, 1, 0},
        {bin32_one, sizeof bin32_one, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        jq_scan_result_t r;
        assert_int_equal(scan_utf8(cases[i].p, cases[i].n, &r), JQ_SCAN_OK);
        assert_int_equal(r.objects, cases[i].objects);
        assert_int_equal(r.depth, cases[i].depth);
        assert_unpacks(cases[i].p, cases[i].n);
    }
}

/* A request-like value using most types, with "id" early and nesting. */
static void pack_varied(packbuf_t *b)
{
    msgpack_packer *pk = &b->pk;
    msgpack_pack_map(pk, 5);
    pb_str(b, "id");
    msgpack_pack_uint64(pk, 4242);
    pb_str(b, "v");
    msgpack_pack_int(pk, 1);
    pb_str(b, "method");
    pb_str(b, "submit");
    pb_str(b, "args");
    msgpack_pack_map(pk, 1);
    pb_str(b, "jobs");
    msgpack_pack_array(pk, 3);
    {
        msgpack_pack_map(pk, 11);
        pb_str(b, "ops");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pb_str(b, "op");
        pb_str(b, "test.delay");
        pb_str(b, "args");
        msgpack_pack_map(pk, 2);
        pb_str(b, "duration");
        msgpack_pack_double(pk, 0.25);
        pb_str(b, "repeat");
        msgpack_pack_fix_uint16(pk, 2);
        pb_str(b, "priority");
        msgpack_pack_int(pk, -10);
        pb_str(b, "tags");
        msgpack_pack_array(pk, 4);
        pb_str(b, "a");
        pb_str(b, "\xc3\xa9");          /* é */
        pb_str(b, "\xe6\x97\xa5\xe6\x9c\xac"); /* 日本 */
        pb_str(b, "\xf0\x9f\x98\x80");  /* 😀 */
        pb_str(b, "blob");
        msgpack_pack_bin_with_body(pk, "\x00\xff\xc1", 3);
        pb_str(b, "ext");
        msgpack_pack_ext_with_body(pk, "\x01\x02\x03", 3, 7);
        pb_str(b, "big");
        msgpack_pack_uint64(pk, UINT64_MAX);
        pb_str(b, "neg");
        msgpack_pack_int64(pk, INT64_MIN);
        pb_str(b, "f");
        msgpack_pack_float(pk, 0.5f);
        pb_str(b, "t");
        msgpack_pack_true(pk);
        pb_str(b, "n");
        msgpack_pack_nil(pk);
        pb_str(b, "long");
        pb_str(b, "a string long enough for str 8, which is more than 31 bytes");
    }
    msgpack_pack_array(pk, 0);
    msgpack_pack_map(pk, 0);
    pb_str(b, "deadline");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, 1700000000);
    msgpack_pack_int(pk, 250000);
}

static void test_varied_value(void **state)
{
    (void)state;
    packbuf_t b;
    pb_init(&b);
    pack_varied(&b);
    jq_scan_result_t r;
    assert_int_equal(scan_utf8(b.sb.data, b.sb.size, &r), JQ_SCAN_OK);
    assert_true(r.has_id);
    assert_int_equal(r.id, 4242);
    assert_int_equal(r.depth, 7); /* root, args, jobs, job, ops, op, op args */
    assert_unpacks(b.sb.data, b.sb.size);
    pb_destroy(&b);
}

/* Every proper prefix is refused, as TRUNCATED or, when the cut leaves a
 * container declaring more elements than the bytes left, BAD_COUNT; and
 * msgpack-c agrees that each prefix is not a whole value. */
static void test_truncated_every_offset(void **state)
{
    (void)state;
    packbuf_t b;
    pb_init(&b);
    pack_varied(&b);
    const size_t len = b.sb.size;
    /* Bytes through the end of the id's value: 0x85, fixstr "id", uint16;
     * and the root's 5 pairs need 10 bytes after its header before the
     * scan goes past it. */
    const size_t id_end = 1 + 3 + 3, root_fits = 1 + 10;
    size_t truncated = 0, bad_count = 0;
    for (size_t k = 0; k < len; k++) {
        jq_scan_result_t r;
        jq_scan_status_t st = scan_utf8(b.sb.data, k, &r);
        if (st == JQ_SCAN_TRUNCATED)
            truncated++;
        else if (st == JQ_SCAN_BAD_COUNT)
            bad_count++;
        else
            fail_msg("prefix of %zu bytes: %s", k, jq_scan_status_text(st));
        assert_true(r.offset <= k);
        assert_int_equal(r.has_id, k >= id_end && k >= root_fits);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&up, b.sb.data, k, &off), MSGPACK_UNPACK_CONTINUE);
        msgpack_unpacked_destroy(&up);
    }
    assert_true(truncated > 0);
    assert_true(bad_count > 0);
    pb_destroy(&b);

    /* With no container, every cut is TRUNCATED at the cut object. */
    pb_init(&b);
    msgpack_pack_fix_uint64(&b.pk, 1);       /* 0..8 */
    pb_strn(&b, "0123456789abcdef0123456789abcdef0123", 36); /* 9..46 */
    for (size_t k = 0; k < 9; k++) {
        jq_scan_result_t r;
        assert_int_equal(scan(b.sb.data, k, &r), JQ_SCAN_TRUNCATED);
        assert_int_equal(r.offset, 0);
    }
    /* The uint64 alone, then every cut of the str after it: trailing data
     * is reported before anything about it. */
    jq_scan_result_t r;
    assert_int_equal(scan(b.sb.data, 9, &r), JQ_SCAN_OK);
    for (size_t k = 10; k < b.sb.size; k++) {
        assert_int_equal(scan(b.sb.data, k, &r), JQ_SCAN_TRAILING);
        assert_int_equal(r.offset, 9);
    }
    pb_destroy(&b);

    /* Where the bytes end between objects, the offset is len. */
    static const unsigned char two_of_three[] = {0x93, 0x01, 0x02, 0x92, 0x03};
    /* [1, 2, [3 ...: the inner array fits, the outer's third is missing. */
    static const unsigned char nested_cut[] = {0x92, 0x92, 0x01, 0x02};
    assert_int_equal(scan(two_of_three, 3, &r), JQ_SCAN_BAD_COUNT);
    assert_int_equal(scan(nested_cut, sizeof nested_cut, &r), JQ_SCAN_TRUNCATED);
    assert_int_equal(r.offset, sizeof nested_cut);
    assert_int_equal(scan(NULL, 0, &r), JQ_SCAN_TRUNCATED);
    assert_int_equal(r.offset, 0);
    assert_int_equal(r.objects, 0);
}

static void test_trailing(void **state)
{
    (void)state;
    jq_scan_result_t r;
    static const unsigned char one_array[] = {0x91, 0x01, 0x00};
    assert_int_equal(scan(one_array, sizeof one_array, &r), JQ_SCAN_TRAILING);
    assert_int_equal(r.offset, 2);
    assert_int_equal(r.objects, 2);
    assert_int_equal(r.depth, 1);
    static const unsigned char two_nils[] = {0xc0, 0xc0};
    assert_int_equal(scan(two_nils, sizeof two_nils, &r), JQ_SCAN_TRAILING);
    assert_int_equal(r.offset, 1);
    /* A byte after the value is trailing, whatever it is. */
    static const unsigned char then_c1[] = {0x80, 0xc1};
    assert_int_equal(scan(then_c1, sizeof then_c1, &r), JQ_SCAN_TRAILING);
    assert_int_equal(r.offset, 1);
    static const unsigned char map_then_junk[] = {0x81, 0xa2, 'i', 'd', 0x07, 0xff, 0xff};
    assert_int_equal(scan(map_then_junk, sizeof map_then_junk, &r), JQ_SCAN_TRAILING);
    assert_int_equal(r.offset, 5);
    assert_true(r.has_id);
    assert_int_equal(r.id, 7);
}

static void test_bad_byte(void **state)
{
    (void)state;
    jq_scan_result_t r;
    static const unsigned char alone[] = {0xc1};
    assert_int_equal(scan(alone, 1, &r), JQ_SCAN_BAD_BYTE);
    assert_int_equal(r.offset, 0);
    static const unsigned char in_array[] = {0x93, 0x01, 0xc1, 0x02};
    assert_int_equal(scan(in_array, sizeof in_array, &r), JQ_SCAN_BAD_BYTE);
    assert_int_equal(r.offset, 2);
    static const unsigned char as_key[] = {0x81, 0xc1, 0x01};
    assert_int_equal(scan(as_key, sizeof as_key, &r), JQ_SCAN_BAD_BYTE);
    assert_int_equal(r.offset, 1);
    static const unsigned char as_value[] = {0x81, 0x01, 0xc1};
    assert_int_equal(scan(as_value, sizeof as_value, &r), JQ_SCAN_BAD_BYTE);
    assert_int_equal(r.offset, 2);
    /* Inside a str or bin it is just data. */
    static const unsigned char in_bin[] = {0xc4, 0x01, 0xc1};
    assert_int_equal(scan(in_bin, sizeof in_bin, &r), JQ_SCAN_OK);
}

/* The whole point: huge declared counts are refused before msgpack-c sees
 * them. msgpack-c is never called on these (it would try to reserve
 * about 100 GB). */
static void test_bad_count(void **state)
{
    (void)state;
    jq_scan_result_t r;
    static const unsigned char array32[10] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(scan(array32, sizeof array32, &r), JQ_SCAN_BAD_COUNT);
    assert_int_equal(r.offset, 0);
    assert_int_equal(r.objects, 1);
    static const unsigned char map32[10] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(scan(map32, sizeof map32, &r), JQ_SCAN_BAD_COUNT);
    assert_int_equal(r.offset, 0);
    /* 2^31 pairs: 2n is 2^32, which wraps a 32-bit count. */
    static const unsigned char map32_half[10] = {0xdf, 0x80, 0x00, 0x00, 0x00};
    assert_int_equal(scan(map32_half, sizeof map32_half, &r), JQ_SCAN_BAD_COUNT);
    static const unsigned char array16[12] = {0xdc, 0xff, 0xff};
    assert_int_equal(scan(array16, sizeof array16, &r), JQ_SCAN_BAD_COUNT);
    static const unsigned char map16[12] = {0xde, 0xff, 0xff};
    assert_int_equal(scan(map16, sizeof map16, &r), JQ_SCAN_BAD_COUNT);
    /* Deeper in: [1, array32(2^32 - 1)...]. */
    static const unsigned char nested[16] = {0x92, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(scan(nested, sizeof nested, &r), JQ_SCAN_BAD_COUNT);
    assert_int_equal(r.offset, 2);
    assert_int_equal(r.depth, 1);

    /* The boundary: n elements need n bytes, n pairs 2n. */
    static const unsigned char three[] = {0x93, 0x01, 0x02, 0x03};
    assert_int_equal(scan(three, sizeof three, &r), JQ_SCAN_OK);
    assert_int_equal(scan(three, sizeof three - 1, &r), JQ_SCAN_BAD_COUNT);
    static const unsigned char two_pairs[] = {0x82, 0x01, 0x02, 0x03, 0x04};
    assert_int_equal(scan(two_pairs, sizeof two_pairs, &r), JQ_SCAN_OK);
    assert_int_equal(scan(two_pairs, sizeof two_pairs - 1, &r), JQ_SCAN_BAD_COUNT);
    static const unsigned char a16_exact[] = {0xdc, 0x00, 0x02, 0xc0, 0xc0};
    assert_int_equal(scan(a16_exact, sizeof a16_exact, &r), JQ_SCAN_OK);
    assert_int_equal(scan(a16_exact, sizeof a16_exact - 1, &r), JQ_SCAN_BAD_COUNT);
    /* A header cut inside its count is TRUNCATED, not BAD_COUNT. */
    assert_int_equal(scan(array32, 3, &r), JQ_SCAN_TRUNCATED);
    assert_int_equal(r.offset, 0);
}

/* n nested arrays around a nil ([[[nil]]]), or around nothing when empty. */
static unsigned char *nested_arrays(size_t n, bool empty, size_t *len)
{
    unsigned char *p = malloc(n + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = 0x91;
    if (empty) {
        p[n - 1] = 0x90;
        *len = n;
    } else {
        p[n] = 0xc0;
        *len = n + 1;
    }
    return p;
}

static void test_depth(void **state)
{
    (void)state;
    jq_scan_result_t r;
    size_t len;
    for (int empty = 0; empty < 2; empty++) {
        unsigned char *p = nested_arrays(JOBQ_SCAN_MAX_DEPTH, empty, &len);
        assert_int_equal(scan(p, len, &r), JQ_SCAN_OK);
        assert_int_equal(r.depth, JOBQ_SCAN_MAX_DEPTH);
        free(p);
        p = nested_arrays(JOBQ_SCAN_MAX_DEPTH + 1, empty, &len);
        assert_int_equal(scan(p, len, &r), JQ_SCAN_TOO_DEEP);
        assert_int_equal(r.offset, JOBQ_SCAN_MAX_DEPTH);
        assert_int_equal(r.depth, JOBQ_SCAN_MAX_DEPTH);
        /* A limit above the stack's size is the stack's size. */
        jq_scan_limits_t l = limits(1000, 0, false);
        assert_int_equal(scan_l(p, len, &l, &r), JQ_SCAN_TOO_DEEP);
        free(p);
    }
    /* Maps nest the same: {0: {0: ... nil}}. */
    unsigned char maps[2 * (JOBQ_SCAN_MAX_DEPTH + 1) + 1];
    for (size_t i = 0; i < JOBQ_SCAN_MAX_DEPTH + 1; i++) {
        maps[2 * i] = 0x81;
        maps[2 * i + 1] = 0x00;
    }
    maps[2 * (JOBQ_SCAN_MAX_DEPTH + 1)] = 0xc0;
    assert_int_equal(scan(maps + 2, sizeof maps - 2, &r), JQ_SCAN_OK);
    assert_int_equal(r.depth, JOBQ_SCAN_MAX_DEPTH);
    assert_int_equal(scan(maps, sizeof maps, &r), JQ_SCAN_TOO_DEEP);
    assert_int_equal(r.offset, 2 * JOBQ_SCAN_MAX_DEPTH);

    /* A caller's smaller limit. */
    jq_scan_limits_t three = limits(3, 0, false);
    unsigned char *p = nested_arrays(3, false, &len);
    assert_int_equal(scan_l(p, len, &three, &r), JQ_SCAN_OK);
    free(p);
    p = nested_arrays(4, true, &len);
    assert_int_equal(scan_l(p, len, &three, &r), JQ_SCAN_TOO_DEEP);
    assert_int_equal(r.offset, 3);
    free(p);

    /* Depth is the deepest level, not the last one. */
    static const unsigned char scalar[] = {0x05};
    static const unsigned char one[] = {0x91, 0x01};
    static const unsigned char empty_array[] = {0x90};
    static const unsigned char empty_map[] = {0x80};
    static const unsigned char two[] = {0x91, 0x91, 0x01};
    static const unsigned char mixed[] = {0x93, 0x90, 0x91, 0x91, 0x80, 0x01}; /* [[],[[{}]],1] */
    const struct {
        const unsigned char *p;
        size_t n, depth;
    } cases[] = {{scalar, 1, 0}, {one, 2, 1}, {empty_array, 1, 1}, {empty_map, 1, 1},
                 {two, 3, 2},    {mixed, sizeof mixed, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(scan(cases[i].p, cases[i].n, &r), JQ_SCAN_OK);
        assert_int_equal(r.depth, cases[i].depth);
    }
}

/* msgpack-c's unpacker stops at MSGPACK_EMBED_STACK_SIZE levels (32 in
 * 4.0) with NOMEM_ERROR, below the scan's default: a daemon that wants the
 * scan to answer passes that as max_depth. */
static void test_depth_against_msgpack_c(void **state)
{
    (void)state;
    jq_scan_result_t r;
    size_t len;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    unsigned char *p = nested_arrays(MSGPACK_EMBED_STACK_SIZE, false, &len);
    assert_int_equal(scan(p, len, &r), JQ_SCAN_OK);
    assert_unpacks(p, len);
    free(p);
    p = nested_arrays(MSGPACK_EMBED_STACK_SIZE + 1, false, &len);
    assert_int_equal(scan(p, len, &r), JQ_SCAN_OK);
    assert_int_not_equal(msgpack_unpack_next(&up, (const char *)p, len, NULL),
                         MSGPACK_UNPACK_SUCCESS);
    jq_scan_limits_t l = limits(MSGPACK_EMBED_STACK_SIZE, 0, false);
    assert_int_equal(scan_l(p, len, &l, &r), JQ_SCAN_TOO_DEEP);
    free(p);
    msgpack_unpacked_destroy(&up);
}

static void test_max_objects(void **state)
{
    (void)state;
    jq_scan_result_t r;
    static const unsigned char three[] = {0x93, 0x01, 0x02, 0x03}; /* 4 objects */
    jq_scan_limits_t l = limits(0, 4, false);
    assert_int_equal(scan_l(three, sizeof three, &l, &r), JQ_SCAN_OK);
    assert_int_equal(r.objects, 4);
    l.max_objects = 3;
    assert_int_equal(scan_l(three, sizeof three, &l, &r), JQ_SCAN_TOO_MANY);
    assert_int_equal(r.offset, 3);
    assert_int_equal(r.objects, 4);
    /* Keys count: {"a": 1, "b": [2]} is 1 + 2 + 3 objects. */
    static const unsigned char map[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x91, 0x02};
    l.max_objects = 6;
    assert_int_equal(scan_l(map, sizeof map, &l, &r), JQ_SCAN_OK);
    assert_int_equal(r.objects, 6);
    l.max_objects = 5;
    assert_int_equal(scan_l(map, sizeof map, &l, &r), JQ_SCAN_TOO_MANY);
    assert_int_equal(r.offset, 7);
    l.max_objects = 1;
    assert_int_equal(scan_l(map, sizeof map, &l, &r), JQ_SCAN_TOO_MANY);
    assert_int_equal(r.offset, 1);
}

/* Ill-formed UTF-8, and where the bad sequence starts in it. */
#define BAD(lit, bad, after, what) {lit, sizeof lit - 1, bad, after, what}
static const struct {
    const char *bytes;
    size_t len, bad, also_ascii_after; /* also_ascii_after: 0 when cut */
    const char *what;
} bad_utf8[] = {
    BAD("\xc0\x80", 0, 1, "overlong 2-byte NUL"),
    BAD("\xc1\xbf", 0, 1, "overlong 2-byte"),
    BAD("\xe0\x80\x80", 0, 1, "overlong 3-byte"),
    BAD("\xe0\x9f\xbf", 0, 1, "overlong 3-byte U+07FF"),
    BAD("\xf0\x80\x80\x80", 0, 1, "overlong 4-byte"),
    BAD("\xf0\x8f\xbf\xbf", 0, 1, "overlong 4-byte U+FFFF"),
    BAD("\xed\xa0\x80", 0, 1, "surrogate U+D800"),
    BAD("\xed\xbf\xbf", 0, 1, "surrogate U+DFFF"),
    BAD("\xed\xb0\x80", 0, 1, "low surrogate U+DC00"),
    BAD("\xf4\x90\x80\x80", 0, 1, "U+110000"),
    BAD("\xf5\x80\x80\x80", 0, 1, "lead F5"),
    BAD("\xf7\xbf\xbf\xbf", 0, 1, "U+1FFFFF"),
    BAD("\xfe", 0, 1, "FE"),
    BAD("\xff", 0, 1, "FF"),
    BAD("\x80", 0, 1, "stray continuation 80"),
    BAD("\xbf", 0, 1, "stray continuation BF"),
    BAD("\xc3\xa9\x80", 2, 1, "continuation after a whole sequence"),
    BAD("\xe2\x82\x41", 0, 1, "3-byte sequence cut by ASCII"),
    BAD("\xf0\x9f\x98\x41", 0, 1, "4-byte sequence cut by ASCII"),
    BAD("\xc3\xc3\xa9", 0, 1, "lead after lead"),
    BAD("\xc3", 0, 0, "2-byte sequence cut by the end"),
    BAD("\xe2\x82", 0, 0, "3-byte sequence cut by the end"),
    BAD("\xf0\x9f\x98", 0, 0, "4-byte sequence cut by the end"),
};

#define GOOD(lit) {lit, sizeof lit - 1}
static const struct {
    const char *bytes;
    size_t len;
} good_utf8[] = {
    GOOD(""),
    GOOD("\0"),
    GOOD("a\0b\0\0\0\0\0\0\0\0\0c"),
    GOOD("\x7f"),
    GOOD("\xc2\x80"),             /* U+0080 */
    GOOD("\xdf\xbf"),             /* U+07FF */
    GOOD("\xe0\xa0\x80"),         /* U+0800 */
    GOOD("\xed\x9f\xbf"),         /* U+D7FF */
    GOOD("\xee\x80\x80"),         /* U+E000 */
    GOOD("\xef\xbf\xbf"),         /* U+FFFF */
    GOOD("\xf0\x90\x80\x80"),     /* U+10000 */
    GOOD("\xf4\x8f\xbf\xbf"),     /* U+10FFFF */
    GOOD("\xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac caf\xc3\xa9"),
};

/* [str] or {str: 1} or {"k": {str: 1}} around prefix + bytes + suffix;
 * *data_at: offset of the str's first data byte. */
static void pack_str_in(packbuf_t *b, int where, size_t prefix, const char *bytes,
                        size_t n, size_t suffix, size_t *data_at)
{
    char s[400];
    assert_true(prefix + n + suffix <= sizeof s);
    memset(s, 'p', prefix);
    memcpy(s + prefix, bytes, n);
    memset(s + prefix + n, 's', suffix);
    size_t total = prefix + n + suffix;
    if (where == 0) {
        msgpack_pack_array(&b->pk, 1);
    } else if (where == 1) {
        msgpack_pack_map(&b->pk, 1);
    } else {
        msgpack_pack_map(&b->pk, 1);
        pb_str(b, "k");
        msgpack_pack_map(&b->pk, 1);
    }
    size_t before = b->sb.size;
    pb_strn(b, s, total);
    *data_at = before + (total < 32 ? 1 : total < 256 ? 2 : 3);
    if (where != 0)
        msgpack_pack_int(&b->pk, 1);
}

/* Prefix lengths that put the bad bytes at every alignment of the 8-byte
 * fast path, and string lengths for fixstr, str 8 and str 16. */
static const size_t prefixes[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 40, 300};

static void check_bad_utf8_in(int where)
{
    packbuf_t b;
    pb_init(&b);
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) {
        for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++) {
            for (size_t suffix = 0; suffix <= 9 * bad_utf8[i].also_ascii_after; suffix += 9) {
                size_t data_at;
                pb_reset(&b);
                pack_str_in(&b, where, prefixes[k], bad_utf8[i].bytes, bad_utf8[i].len,
                            suffix, &data_at);
                jq_scan_result_t r;
                jq_scan_status_t st = scan_utf8(b.sb.data, b.sb.size, &r);
                if (st != JQ_SCAN_BAD_UTF8)
                    fail_msg("%s (prefix %zu, where %d): %s", bad_utf8[i].what, prefixes[k],
                             where, jq_scan_status_text(st));
                assert_int_equal(r.offset, data_at + prefixes[k] + bad_utf8[i].bad);
                /* Without the check it is only bytes. */
                assert_int_equal(scan(b.sb.data, b.sb.size, &r), JQ_SCAN_OK);
                assert_unpacks(b.sb.data, b.sb.size);
            }
        }
    }
    for (size_t i = 0; i < sizeof good_utf8 / sizeof *good_utf8; i++) {
        for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++) {
            size_t data_at;
            pb_reset(&b);
            pack_str_in(&b, where, prefixes[k], good_utf8[i].bytes, good_utf8[i].len, 3,
                        &data_at);
            jq_scan_result_t r;
            if (scan_utf8(b.sb.data, b.sb.size, &r) != JQ_SCAN_OK)
                fail_msg("valid case %zu (prefix %zu, where %d): %s at %zu", i, prefixes[k],
                         where, jq_scan_status_text(r.status), r.offset);
        }
    }
    pb_destroy(&b);
}

static void test_utf8_values(void **state)
{
    (void)state;
    check_bad_utf8_in(0);
}

static void test_utf8_keys(void **state)
{
    (void)state;
    check_bad_utf8_in(1);
    check_bad_utf8_in(2);
}

/* bin and ext carry bytes, not text: never checked. */
static void test_utf8_not_in_bin_or_ext(void **state)
{
    (void)state;
    packbuf_t b;
    pb_init(&b);
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_bin_with_body(&b.pk, "\xff\xed\xa0\x80\xc0\x80", 6);
    msgpack_pack_ext_with_body(&b.pk, "\xff\xed\xa0\x80\xc0\x80", 6, 3);
    jq_scan_result_t r;
    assert_int_equal(scan_utf8(b.sb.data, b.sb.size, &r), JQ_SCAN_OK);
    pb_destroy(&b);
}

/* Scans b's value (check_utf8 on) and checks the id report. */
static void expect_id(packbuf_t *b, jq_scan_status_t status, bool has_id, uint64_t id)
{
    jq_scan_result_t r;
    jq_scan_status_t st = scan_utf8(b->sb.data, b->sb.size, &r);
    if (st != status)
        fail_msg("status %s, expected %s", jq_scan_status_text(st), jq_scan_status_text(status));
    assert_int_equal(r.has_id, has_id);
    if (has_id)
        assert_int_equal(r.id, id);
    pb_reset(b);
}

static void test_id(void **state)
{
    (void)state;
    packbuf_t b;
    pb_init(&b);
    msgpack_packer *pk = &b.pk;

    /* Present, any unsigned width, or a signed format holding >= 0. */
    msgpack_pack_map(pk, 2);
    pb_str(&b, "id");
    msgpack_pack_uint64(pk, 7);
    pb_str(&b, "v");
    msgpack_pack_int(pk, 1);
    expect_id(&b, JQ_SCAN_OK, true, 7);
    const struct {
        int width; /* 0: fixint/packer's choice, 8..64 fixed unsigned, -8..-64 fixed signed */
        int64_t v;
        bool has;
    } ints[] = {{0, 0, true},   {0, 127, true},    {8, 200, true},   {16, 60000, true},
                {32, 1, true},  {64, 0, true},     {-8, 5, true},    {-16, 300, true},
                {-32, 0, true}, {-64, INT64_MAX, true}, {0, -1, false}, {-8, -5, false},
                {-16, -1, false}, {-32, INT32_MIN, false}, {-64, -1, false}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        msgpack_pack_map(pk, 1);
        pb_str(&b, "id");
        switch (ints[i].width) {
        case 0: msgpack_pack_int64(pk, ints[i].v); break;
        case 8: msgpack_pack_fix_uint8(pk, (uint8_t)ints[i].v); break;
        case 16: msgpack_pack_fix_uint16(pk, (uint16_t)ints[i].v); break;
        case 32: msgpack_pack_fix_uint32(pk, (uint32_t)ints[i].v); break;
        case 64: msgpack_pack_fix_uint64(pk, (uint64_t)ints[i].v); break;
        case -8: msgpack_pack_fix_int8(pk, (int8_t)ints[i].v); break;
        case -16: msgpack_pack_fix_int16(pk, (int16_t)ints[i].v); break;
        case -32: msgpack_pack_fix_int32(pk, (int32_t)ints[i].v); break;
        case -64: msgpack_pack_fix_int64(pk, ints[i].v); break;
        }
        expect_id(&b, JQ_SCAN_OK, ints[i].has, (uint64_t)ints[i].v);
    }
    msgpack_pack_map(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_uint64(pk, UINT64_MAX);
    expect_id(&b, JQ_SCAN_OK, true, UINT64_MAX);

    /* Absent, or not an integer. */
    msgpack_pack_map(pk, 1);
    pb_str(&b, "v");
    msgpack_pack_int(pk, 1);
    expect_id(&b, JQ_SCAN_OK, false, 0);
    msgpack_pack_map(pk, 0);
    expect_id(&b, JQ_SCAN_OK, false, 0);
    for (int kind = 0; kind < 7; kind++) {
        msgpack_pack_map(pk, 1);
        pb_str(&b, "id");
        switch (kind) {
        case 0: pb_str(&b, "7"); break;
        case 1: msgpack_pack_double(pk, 7.0); break;
        case 2: msgpack_pack_float(pk, 7.0f); break;
        case 3: msgpack_pack_nil(pk); break;
        case 4: msgpack_pack_true(pk); break;
        case 5: msgpack_pack_array(pk, 1); msgpack_pack_int(pk, 7); break;
        case 6: msgpack_pack_map(pk, 1); pb_str(&b, "id"); msgpack_pack_int(pk, 7); break;
        }
        expect_id(&b, JQ_SCAN_OK, false, 0);
    }

    /* Only the top-level map's keys. */
    msgpack_pack_map(pk, 1);
    pb_str(&b, "args");
    msgpack_pack_map(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 7);
    expect_id(&b, JQ_SCAN_OK, false, 0);
    msgpack_pack_array(pk, 2);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 7);
    expect_id(&b, JQ_SCAN_OK, false, 0);
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 7);
    expect_id(&b, JQ_SCAN_OK, false, 0);
    /* A value "id" is not a key. */
    msgpack_pack_map(pk, 2);
    pb_str(&b, "x");
    pb_str(&b, "id");
    msgpack_pack_int(pk, 7);
    msgpack_pack_int(pk, 8);
    expect_id(&b, JQ_SCAN_OK, false, 0);

    /* After keys that are not the str "id", including a nested container
     * as key and a nested map holding its own "id". */
    msgpack_pack_map(pk, 9);
    msgpack_pack_int(pk, 5);
    msgpack_pack_int(pk, 1);
    msgpack_pack_bin_with_body(pk, "id", 2);
    msgpack_pack_int(pk, 2);
    pb_str(&b, "idx");
    msgpack_pack_int(pk, 3);
    pb_str(&b, "i");
    msgpack_pack_int(pk, 4);
    pb_str(&b, "ID");
    msgpack_pack_int(pk, 5);
    msgpack_pack_array(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 6);
    msgpack_pack_map(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 7);
    msgpack_pack_int(pk, 7);
    pb_str(&b, "args");
    msgpack_pack_map(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 9);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 8);
    expect_id(&b, JQ_SCAN_OK, true, 8);
    /* The key in a wider str form than needed. */
    static const unsigned char str8_key[] = {0x81, 0xd9, 0x02, 'i', 'd', 0x05};
    pb_bytes(&b, str8_key, sizeof str8_key);
    expect_id(&b, JQ_SCAN_OK, true, 5);

    /* The first "id" decides, as wire_map_get finds the first. */
    msgpack_pack_map(pk, 2);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 2);
    expect_id(&b, JQ_SCAN_OK, true, 1);
    msgpack_pack_map(pk, 2);
    pb_str(&b, "id");
    msgpack_pack_int(pk, -1);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 2);
    expect_id(&b, JQ_SCAN_OK, false, 0);

    /* Reported when a later field fails, whatever the failure. */
    static const unsigned char later_c1[] = {0x82, 0xa2, 'i', 'd', 0x09, 0xa1, 'x', 0xc1};
    pb_bytes(&b, later_c1, sizeof later_c1);
    expect_id(&b, JQ_SCAN_BAD_BYTE, true, 9);
    static const unsigned char later_count[] = {0x82, 0xa2, 'i', 'd', 0x09, 0xa1, 'x',
                                                0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0};
    pb_bytes(&b, later_count, sizeof later_count);
    expect_id(&b, JQ_SCAN_BAD_COUNT, true, 9);
    static const unsigned char later_utf8_key[] = {0x82, 0xa2, 'i', 'd', 0xcd, 0x01, 0x00,
                                                   0xa2, 0xed, 0xa0, 0x01};
    pb_bytes(&b, later_utf8_key, sizeof later_utf8_key);
    expect_id(&b, JQ_SCAN_BAD_UTF8, true, 256);
    static const unsigned char later_cut[] = {0x82, 0xa2, 'i', 'd', 0x09, 0xa1, 'x', 0xcf, 0};
    pb_bytes(&b, later_cut, sizeof later_cut);
    expect_id(&b, JQ_SCAN_TRUNCATED, true, 9);
    static const unsigned char later_trailing[] = {0x81, 0xa2, 'i', 'd', 0x09, 0xc0};
    pb_bytes(&b, later_trailing, sizeof later_trailing);
    expect_id(&b, JQ_SCAN_TRAILING, true, 9);
    msgpack_pack_map(pk, 2);
    pb_str(&b, "id");
    msgpack_pack_int(pk, 11);
    pb_str(&b, "deep");
    for (int i = 0; i < JOBQ_SCAN_MAX_DEPTH; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
    expect_id(&b, JQ_SCAN_TOO_DEEP, true, 11);
    {
        msgpack_pack_map(pk, 2);
        pb_str(&b, "id");
        msgpack_pack_int(pk, 12);
        pb_str(&b, "many");
        msgpack_pack_array(pk, 10);
        for (int i = 0; i < 10; i++)
            msgpack_pack_nil(pk);
        jq_scan_limits_t l = limits(0, 8, false);
        jq_scan_result_t r;
        assert_int_equal(scan_l(b.sb.data, b.sb.size, &l, &r), JQ_SCAN_TOO_MANY);
        assert_true(r.has_id);
        assert_int_equal(r.id, 12);
        pb_reset(&b);
    }

    /* Not reported when the scan stops before the id. */
    static const unsigned char before_c1[] = {0x82, 0xa1, 'x', 0xc1, 0xa2, 'i', 'd', 0x09};
    pb_bytes(&b, before_c1, sizeof before_c1);
    expect_id(&b, JQ_SCAN_BAD_BYTE, false, 0);
    static const unsigned char bad_key_first[] = {0x82, 0xa1, 0xff, 0x01, 0xa2, 'i', 'd', 0x09};
    pb_bytes(&b, bad_key_first, sizeof bad_key_first);
    expect_id(&b, JQ_SCAN_BAD_UTF8, false, 0);
    {
        /* ... while without the UTF-8 check the same bytes are fine. */
        jq_scan_result_t r;
        assert_int_equal(scan(bad_key_first, sizeof bad_key_first, &r), JQ_SCAN_OK);
        assert_true(r.has_id);
        assert_int_equal(r.id, 9);
    }
    static const unsigned char id_cut[] = {0x81, 0xa2, 'i', 'd', 0xcf, 0, 0, 0, 0, 0, 0, 0};
    pb_bytes(&b, id_cut, sizeof id_cut);
    expect_id(&b, JQ_SCAN_TRUNCATED, false, 0);
    static const unsigned char root_count[] = {0x8f, 0xa2, 'i', 'd', 0x09};
    pb_bytes(&b, root_count, sizeof root_count);
    expect_id(&b, JQ_SCAN_BAD_COUNT, false, 0);
    pb_destroy(&b);
}

/* xorshift64*: the same inputs on every platform and libc. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(0x2545f4914f6cdd1d);
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
    return (unsigned)(rng_next(s) >> 33) % n;
}

/* A byte biased towards what makes structure: small containers, short
 * strings, fixints, the 0xc0..0xdf headers. */
static unsigned char random_byte(uint64_t *s)
{
    unsigned k = rng_below(s, 100);
    if (k < 35)
        return (unsigned char)rng_below(s, 0x80);
    if (k < 42)
        return (unsigned char)(0xe0 + rng_below(s, 32));
    if (k < 54)
        return (unsigned char)(0x90 + rng_below(s, 4));
    if (k < 62)
        return (unsigned char)(0x80 + rng_below(s, 3));
    if (k < 72)
        return (unsigned char)(0xa0 + rng_below(s, 4));
    if (k < 85)
        return (unsigned char)(0xc0 + rng_below(s, 32));
    if (k < 91)
        return 0;
    if (k < 94)
        return 0xc1;
    return (unsigned char)rng_below(s, 256);
}

/* A random well-formed value, packed by msgpack-c. */
static void random_value(packbuf_t *b, uint64_t *s, int depth)
{
    msgpack_packer *pk = &b->pk;
    static const char text[] = "id\xc3\xa9z0123456789abcdefghijklmnopqrstuvwxyz";
    /* One draw per statement: the order of draws must not depend on the
     * compiler's order of evaluating arguments. */
    unsigned k = rng_below(s, depth < 5 ? 12 : 9);
    uint64_t bits = rng_next(s);
    unsigned shift = rng_below(s, 64), n1 = rng_below(s, 40), n2 = rng_below(s, 4);
    switch (k) {
    case 0: msgpack_pack_nil(pk); break;
    case 1: msgpack_pack_true(pk); break;
    case 2: msgpack_pack_int64(pk, -(int64_t)((bits >> 1) >> shift) - 1); break;
    case 3: msgpack_pack_uint64(pk, bits >> shift); break;
    case 4: msgpack_pack_double(pk, (double)n1 / 8); break;
    case 5: msgpack_pack_float(pk, (float)n1 / 8); break;
    case 6: pb_strn(b, text + n2, n1 % 36); break;
    case 7: msgpack_pack_bin_with_body(pk, text, n1); break;
    case 8: msgpack_pack_ext_with_body(pk, text, n1 % 20, (int8_t)(shift - 32)); break;
    case 9:
    case 10: {
        unsigned n = rng_below(s, 5);
        msgpack_pack_array(pk, n);
        for (unsigned i = 0; i < n; i++)
            random_value(b, s, depth + 1);
        break;
    }
    default: {
        unsigned n = rng_below(s, 4);
        msgpack_pack_map(pk, n);
        for (unsigned i = 0; i < n; i++) {
            if (rng_below(s, 2))
                pb_str(b, "id");
            else
                random_value(b, s, depth + 1);
            random_value(b, s, depth + 1);
        }
        break;
    }
    }
}

/* 20000 inputs: random bytes, mutated well-formed values, and deep
 * nests. Each must scan without a fault, and (outside BAD_COUNT, where
 * msgpack-c would try to reserve gigabytes) the scan must agree with
 * msgpack_unpack_next: OK exactly when it takes the whole buffer as one
 * value, TRAILING where it stops early, TRUNCATED when it wants more,
 * BAD_BYTE when it fails to parse, TOO_DEEP (at msgpack-c's own depth)
 * when it runs out of stack. */
static void test_random_agreement(void **state)
{
    (void)state;
    uint64_t s = RANDOM_SEED;
    packbuf_t b;
    pb_init(&b);
    unsigned char raw[256];
    size_t seen[JQ_SCAN_BAD_UTF8 + 1] = {0};
    jq_scan_limits_t l = limits(MSGPACK_EMBED_STACK_SIZE, 0, false);
    for (int i = 0; i < RANDOM_CASES; i++) {
        const unsigned char *in;
        size_t len;
        unsigned mode = rng_below(&s, 10);
        if (mode < 4) { /* random bytes */
            len = rng_below(&s, 48);
            for (size_t k = 0; k < len; k++)
                raw[k] = random_byte(&s);
            if (len && rng_below(&s, 2)) /* else most end early, TRAILING */
                raw[0] = (unsigned char)(rng_below(&s, 2) ? 0x9f : 0x8f);
            in = raw;
        } else if (mode < 9) { /* a value, maybe mutated, cut or extended */
            pb_reset(&b);
            random_value(&b, &s, 0);
            len = b.sb.size < sizeof raw ? b.sb.size : sizeof raw;
            memcpy(raw, b.sb.data, len);
            unsigned how = rng_below(&s, 4);
            if (how == 1 && len) {
                for (unsigned m = 1 + rng_below(&s, 3); m; m--) {
                    unsigned at = rng_below(&s, (unsigned)len);
                    raw[at] = random_byte(&s);
                }
            } else if (how == 2 && len) {
                len = rng_below(&s, (unsigned)len);
            } else if (how == 3 && len < sizeof raw) {
                raw[len++] = random_byte(&s);
            }
            in = raw;
        } else { /* a nest around msgpack-c's stack size */
            size_t n = MSGPACK_EMBED_STACK_SIZE - 2 + rng_below(&s, 5);
            for (size_t k = 0; k < n; k++)
                raw[k] = (unsigned char)(rng_below(&s, 2) ? 0x91 : 0x81);
            for (size_t k = 0; k < n; k++)
                if (raw[k] == 0x81) { /* a map's key before the nest goes on */
                    memmove(raw + k + 2, raw + k + 1, n - k - 1);
                    raw[k + 1] = 0x01;
                    n++;
                    k++;
                }
            raw[n++] = 0xc0;
            len = n;
            in = raw;
        }

        jq_scan_result_t r;
        jq_scan_status_t st = scan_l(in, len, &l, &r);
        seen[st]++;
        assert_true(r.offset <= len);
        if (st == JQ_SCAN_BAD_COUNT)
            continue;
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        int rc = len ? msgpack_unpack_next(&up, (const char *)in, len, &off)
                     : MSGPACK_UNPACK_CONTINUE;
        msgpack_unpacked_destroy(&up);
        bool agree;
        switch (st) {
        case JQ_SCAN_OK: agree = rc == MSGPACK_UNPACK_SUCCESS && off == len; break;
        case JQ_SCAN_TRAILING: agree = rc == MSGPACK_UNPACK_SUCCESS && off == r.offset; break;
        case JQ_SCAN_TRUNCATED: agree = rc == MSGPACK_UNPACK_CONTINUE; break;
        case JQ_SCAN_BAD_BYTE: agree = rc == MSGPACK_UNPACK_PARSE_ERROR; break;
        case JQ_SCAN_TOO_DEEP: agree = rc == MSGPACK_UNPACK_NOMEM_ERROR; break;
        default: agree = false; break;
        }
        if (!agree) {
            char hex[3 * sizeof raw + 1] = "";
            for (size_t k = 0; k < len; k++)
                snprintf(hex + 3 * k, 4, "%02x ", in[k]);
            fail_msg("case %d: scan %s at %zu, msgpack-c %d at %zu: %s", i,
                     jq_scan_status_text(st), r.offset, rc, off, hex);
        }
    }
    print_message("random inputs: %zu ok, %zu truncated, %zu trailing, %zu 0xc1, "
                  "%zu too deep, %zu bad count\n",
                  seen[JQ_SCAN_OK], seen[JQ_SCAN_TRUNCATED], seen[JQ_SCAN_TRAILING],
                  seen[JQ_SCAN_BAD_BYTE], seen[JQ_SCAN_TOO_DEEP], seen[JQ_SCAN_BAD_COUNT]);
    /* Each kind of answer came up often enough to mean something. */
    assert_true(seen[JQ_SCAN_OK] >= 2000);
    assert_true(seen[JQ_SCAN_TRUNCATED] >= 500);
    assert_true(seen[JQ_SCAN_TRAILING] >= 500);
    assert_true(seen[JQ_SCAN_BAD_BYTE] >= 100);
    assert_true(seen[JQ_SCAN_TOO_DEEP] >= 100);
    assert_true(seen[JQ_SCAN_BAD_COUNT] >= 500);
    pb_destroy(&b);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best of three scans, in MB/s (10^6 bytes). */
static double scan_speed(const void *data, size_t len, const jq_scan_limits_t *lim)
{
    double best = 1e9;
    for (int i = 0; i < 3; i++) {
        jq_scan_result_t r;
        double t0 = now_seconds();
        assert_true(jq_scan(data, len, lim, &r));
        double t = now_seconds() - t0;
        if (t < best)
            best = t;
    }
    return (double)len / 1e6 / (best > 0 ? best : 1e-9);
}

/* A 16 MiB array of nils: fine with room for its objects, TOO_MANY under
 * the default limit. */
static void test_big_array_of_nils(void **state)
{
    (void)state;
    const size_t len = BIG_REQUEST_BYTES;
    const size_t nils = len - 5;
    unsigned char *p = malloc(len);
    assert_non_null(p);
    p[0] = 0xdd;
    p[1] = (unsigned char)(nils >> 24);
    p[2] = (unsigned char)(nils >> 16);
    p[3] = (unsigned char)(nils >> 8);
    p[4] = (unsigned char)nils;
    memset(p + 5, 0xc0, nils);

    jq_scan_limits_t room = limits(0, nils + 1, true);
    jq_scan_result_t r;
    assert_true(jq_scan(p, len, &room, &r));
    assert_int_equal(r.objects, nils + 1);
    assert_int_equal(r.depth, 1);
    print_message("16 MiB of nils: %.0f MB/s\n", scan_speed(p, len, &room));

    assert_false(jq_scan(p, len, NULL, &r));
    assert_int_equal(r.status, JQ_SCAN_TOO_MANY);
    assert_int_equal(r.objects, (size_t)JOBQ_SCAN_MAX_OBJECTS + 1);
    /* Object k (1-based, after the header) starts at byte 5 + k - 2. */
    assert_int_equal(r.offset, 5 + (size_t)JOBQ_SCAN_MAX_OBJECTS + 1 - 2);
    free(p);
}

/* A 16 MiB submit of many small jobs, the daemon's common case. */
static void test_big_request_speed(void **state)
{
    (void)state;
    packbuf_t job, b;
    pb_init(&job);
    msgpack_pack_map(&job.pk, 3);
    pb_str(&job, "ops");
    msgpack_pack_array(&job.pk, 1);
    msgpack_pack_map(&job.pk, 2);
    pb_str(&job, "op");
    pb_str(&job, "test.delay");
    pb_str(&job, "args");
    msgpack_pack_map(&job.pk, 2);
    pb_str(&job, "duration");
    msgpack_pack_double(&job.pk, 0.2);
    pb_str(&job, "repeat");
    msgpack_pack_int(&job.pk, 2);
    pb_str(&job, "priority");
    msgpack_pack_int(&job.pk, -10);
    pb_str(&job, "tags");
    msgpack_pack_array(&job.pk, 2);
    pb_str(&job, "nightly");
    pb_str(&job, "caf\xc3\xa9");
    const size_t jobs = (BIG_REQUEST_BYTES - 64) / job.sb.size;

    pb_init(&b);
    msgpack_pack_map(&b.pk, 4);
    pb_str(&b, "id");
    msgpack_pack_int(&b.pk, 99);
    pb_str(&b, "v");
    msgpack_pack_int(&b.pk, 1);
    pb_str(&b, "method");
    pb_str(&b, "submit");
    pb_str(&b, "args");
    msgpack_pack_map(&b.pk, 1);
    pb_str(&b, "jobs");
    msgpack_pack_array(&b.pk, (uint32_t)jobs);
    for (size_t i = 0; i < jobs; i++)
        pb_bytes(&b, job.sb.data, job.sb.size);
    assert_true(b.sb.size <= BIG_REQUEST_BYTES);

    jq_scan_limits_t room = limits(0, SIZE_MAX, true);
    jq_scan_result_t r;
    assert_true(jq_scan(b.sb.data, b.sb.size, &room, &r));
    assert_true(r.has_id);
    assert_int_equal(r.id, 99);
    assert_int_equal(r.depth, 7);
    print_message("%zu-byte submit of %zu jobs (%zu objects, UTF-8 checked): %.0f MB/s\n",
                  b.sb.size, jobs, r.objects, scan_speed(b.sb.data, b.sb.size, &room));
    /* Under the default object limit too, if it holds few enough. */
    size_t objects = r.objects;
    assert_int_equal(jq_scan(b.sb.data, b.sb.size, NULL, &r), objects <= JOBQ_SCAN_MAX_OBJECTS);
    assert_true(r.has_id);
    pb_destroy(&job);
    pb_destroy(&b);
}

static void test_status_text(void **state)
{
    (void)state;
    for (int s = JQ_SCAN_OK; s <= JQ_SCAN_BAD_UTF8; s++) {
        const char *t = jq_scan_status_text((jq_scan_status_t)s);
        assert_non_null(t);
        assert_true(strlen(t) > 0);
        for (int o = JQ_SCAN_OK; o < s; o++)
            assert_string_not_equal(t, jq_scan_status_text((jq_scan_status_t)o));
    }
    assert_string_equal(jq_scan_status_text(JQ_SCAN_BAD_COUNT),
                        "a container declares more elements than the request holds");
    assert_non_null(jq_scan_status_text((jq_scan_status_t)99));
    assert_non_null(jq_scan_status_text((jq_scan_status_t)-1));
}

/* wire_buf (proto/wire.c): grown from a tiny first size, its bytes are
 * msgpack_sbuffer's for the same value, behind a header left untouched. */
static void test_wire_buf(void **state)
{
    (void)state;
    char text[1000];
    memset(text, 'x', sizeof text);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    wire_buf_t wb;
    assert_int_equal(wire_buf_init(&wb, 24, 4), 0);
    memset(wb.mem, 0xab, 24);
    msgpack_packer a, b;
    msgpack_packer_init(&a, &sb, msgpack_sbuffer_write);
    msgpack_packer_init(&b, &wb, wire_buf_write);
    for (int i = 0; i < 2; i++) {
        msgpack_packer *pk = i ? &b : &a;
        msgpack_pack_map(pk, 2);
        wire_pack_cstr(pk, "n");
        msgpack_pack_uint64(pk, 1234567890123ull);
        wire_pack_cstr(pk, "text");
        msgpack_pack_str_with_body(pk, text, sizeof text);
    }
    assert_false(wb.failed);
    assert_int_equal(wb.len, sb.size);
    assert_true(wb.cap >= wb.len);
    assert_memory_equal(wb.mem + 24, sb.data, sb.size);
    for (int i = 0; i < 24; i++)
        assert_int_equal((unsigned char)wb.mem[i], 0xab);
    free(wb.mem);
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_non_minimal_forms),
        cmocka_unit_test(test_varied_value),
        cmocka_unit_test(test_truncated_every_offset),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_bad_byte),
        cmocka_unit_test(test_bad_count),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_depth_against_msgpack_c),
        cmocka_unit_test(test_max_objects),
        cmocka_unit_test(test_utf8_values),
        cmocka_unit_test(test_utf8_keys),
        cmocka_unit_test(test_utf8_not_in_bin_or_ext),
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_random_agreement),
        cmocka_unit_test(test_big_array_of_nils),
        cmocka_unit_test(test_big_request_speed),
        cmocka_unit_test(test_status_text),
        cmocka_unit_test(test_wire_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
