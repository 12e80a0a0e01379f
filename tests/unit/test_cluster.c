/* test_cluster.c: what a --cluster option takes apart before anything
 * starts: node addresses (HOST:PORT, [v6]:PORT) and which of them are
 * loopback (--insecure node traffic is allowed only there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"

static void test_address_parse(void **state)
{
    (void)state;
    char host[256];
    int port = 0;
    assert_int_equal(jq_node_address_parse("127.0.0.1:7001", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 7001);
    assert_int_equal(jq_node_address_parse("[::1]:65535", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    assert_int_equal(jq_node_address_parse("node-2.example:1", host, sizeof host, &port), 0);
    assert_string_equal(host, "node-2.example");
    static const char *const bad[] = {"", "7001", ":7001", "host:", "host:0", "host:65536",
                                      "host:70x", "::1:7001", "[::1]7001", "[::1", "a:b:1",
                                      "host:-1", "host: 1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (jq_node_address_parse(bad[i], host, sizeof host, &port) == 0)
            fail_msg("'%s' was taken as a node address", bad[i]);
    char tiny[4];
    assert_int_equal(jq_node_address_parse("localhost:1", tiny, sizeof tiny, NULL), -1);
}

static void test_address_loopback(void **state)
{
    (void)state;
    assert_true(jq_node_address_loopback("127.0.0.1:1"));
    assert_true(jq_node_address_loopback("127.255.0.9:1"));
    assert_true(jq_node_address_loopback("[::1]:1"));
    assert_true(jq_node_address_loopback("localhost:1"));
    assert_false(jq_node_address_loopback("10.0.0.1:1"));
    assert_false(jq_node_address_loopback("128.0.0.1:1"));
    assert_false(jq_node_address_loopback("[::2]:1"));
    assert_false(jq_node_address_loopback("example.com:1"));
    assert_false(jq_node_address_loopback("127.0.0.1")); /* not an address at all */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_parse),
        cmocka_unit_test(test_address_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
