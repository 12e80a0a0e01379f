/* test_http.c: the HTTP endpoint's pieces that need no server: --http's
 * address (what counts as loopback, what is refused), msgpack values as
 * JSON (escaping, numbers, what has no JSON form) and the API's one input
 * shape, a flat object of integers, with what it must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <msgpack.h>

#include "http_int.h"

static void test_addresses(void **state)
{
    (void)state;
    char err[256];
    jq_http_addr_t a;
    const char *loop[] = {"127.0.0.1:8080", "127.9.9.9:0", "[::1]:80", "[::ffff:127.0.0.1]:1"};
    for (size_t i = 0; i < sizeof loop / sizeof *loop; i++) {
        if (jq_http_addr_parse(loop[i], &a, err, sizeof err) < 0)
            fail_msg("%s refused: %s", loop[i], err);
        if (!a.loopback)
            fail_msg("%s should be loopback", loop[i]);
    }
    const char *open_[] = {"0.0.0.0:8080", "10.1.2.3:1", "[::]:8080", "128.0.0.1:1"};
    for (size_t i = 0; i < sizeof open_ / sizeof *open_; i++) {
        if (jq_http_addr_parse(open_[i], &a, err, sizeof err) < 0)
            fail_msg("%s refused: %s", open_[i], err);
        if (a.loopback)
            fail_msg("%s is not loopback", open_[i]);
    }
    /* Names are not resolved: "localhost" could be anything in /etc/hosts. */
    const char *bad[] = {"localhost:8080", "8080", "127.0.0.1", "127.0.0.1:", ":8080",
                         "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:80x", "[::1:80",
                         "example.org:80", "127.0.0.1.evil:80", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (jq_http_addr_parse(bad[i], &a, err, sizeof err) == 0)
            fail_msg("'%s' should be refused", bad[i]);
    assert_true(jq_http_addr_parse("127.0.0.1:x", &a, err, sizeof err) < 0);
    assert_non_null(strstr(err, "--http"));
}

/* msgpack bytes of a value packed by fn, as JSON. */
static char *as_json(void (*fn)(msgpack_packer *))
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    jq_json_msgpack(f, &up.data);
    fclose(f);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return out;
}

static void pack_mixed(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 7);
    msgpack_pack_str_with_body(pk, "s", 1);
    msgpack_pack_str_with_body(pk, "a\"b\\c\n</script>&\x01", 17);
    msgpack_pack_str_with_body(pk, "n", 1);
    msgpack_pack_array(pk, 4);
    msgpack_pack_int64(pk, -5);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_double(pk, 0.3);
    msgpack_pack_double(pk, 1.0 / 3.0);
    msgpack_pack_str_with_body(pk, "x", 1);
    msgpack_pack_nil(pk);
    msgpack_pack_str_with_body(pk, "t", 1);
    msgpack_pack_true(pk);
    msgpack_pack_str_with_body(pk, "bin", 3);
    msgpack_pack_bin_with_body(pk, "\xff\x00", 2);
    msgpack_pack_int(pk, 7); /* an integer key */
    msgpack_pack_double(pk, 1.0 / 0.0);
    msgpack_pack_str_with_body(pk, "u", 1);
    msgpack_pack_str_with_body(pk, "\xc3\xa9", 2);
}

static void test_msgpack_as_json(void **state)
{
    (void)state;
    char *j = as_json(pack_mixed);
    assert_string_equal(j, "{\"s\":\"a\\\"b\\\\c\\n\\u003c/script\\u003e\\u0026\\u0001\","
                           "\"n\":[-5,18446744073709551615,0.3,0.33333333333333331],"
                           "\"x\":null,\"t\":true,\"bin\":null,\"7\":null,\"u\":\"\xc3\xa9\"}");
    free(j);
}

static void test_flat_ints(void **state)
{
    (void)state;
    static const char *const keys[] = {"id", "priority"};
    int64_t v[2];
    bool p[2];
    const char *ok = " { \"id\" : 12 ,\"priority\":-10 } ";
    assert_int_equal(jq_json_flat_ints(ok, strlen(ok), keys, 2, v, p), 0);
    assert_true(p[0] && p[1]);
    assert_int_equal(v[0], 12);
    assert_int_equal(v[1], -10);
    assert_int_equal(jq_json_flat_ints("{\"id\":1}", 8, keys, 2, v, p), 0);
    assert_true(p[0] && !p[1]);
    assert_int_equal(jq_json_flat_ints("{}", 2, keys, 2, v, p), 0);
    const char *bad[] = {"", "{", "}", "[1]", "{\"id\":1,}", "{\"id\":1}x", "{\"id\":\"1\"}",
                         "{\"id\":1.5}", "{\"id\":1e3}", "{\"id\":1,\"id\":2}",
                         "{\"other\":1}", "{\"i\\u0064\":1}", "{id:1}", "{\"id\":-}",
                         "{\"id\":12345678901234567890}", "{\"id\":1 \"priority\":2}",
                         "{\"id\":{}}", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (jq_json_flat_ints(bad[i], strlen(bad[i]), keys, 2, v, p) == 0)
            fail_msg("'%s' should be refused", bad[i]);
    /* Not NUL-terminated: only the given bytes count. */
    assert_int_equal(jq_json_flat_ints("{\"id\":7}garbage", 8, keys, 2, v, p), 0);
    assert_int_equal(v[0], 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_msgpack_as_json),
        cmocka_unit_test(test_flat_ints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
