/* test_paths.c: the default data and run directories of a binary inside
 * the build tree and of one anywhere else (util/paths.c), by fake paths of
 * the executable. */
#include "paths.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void in_build_tree(void **state)
{
    (void)state;
    jq_default_dirs_t d = jq_default_dirs_for(JOBQ_BUILD_DIR "/broker/jobqd");
    assert_true(d.build_tree);
    assert_string_equal(d.data_dir, JOBQ_DEFAULT_DATA_DIR);
    assert_string_equal(d.run_dir, JOBQ_DEFAULT_DATA_DIR);
    d = jq_default_dirs_for(JOBQ_BUILD_DIR "/clients/jobq");
    assert_true(d.build_tree);
}

static void installed(void **state)
{
    (void)state;
    const char *elsewhere[] = {
        "/usr/bin/jobq", "/usr/local/sbin/jobqd",
        JOBQ_BUILD_DIR "x/broker/jobqd", /* a sibling named alike: not inside */
        "relative/jobqd", "", NULL,
    };
    for (size_t i = 0; i < sizeof elsewhere / sizeof *elsewhere; i++) {
        jq_default_dirs_t d = jq_default_dirs_for(elsewhere[i]);
        assert_false(d.build_tree);
        assert_string_equal(d.data_dir, JOBQ_INSTALLED_DATA_DIR);
        assert_string_equal(d.run_dir, JOBQ_INSTALLED_RUN_DIR);
        assert_null(strstr(d.data_dir, JOBQ_BUILD_DIR));
    }
}

static void this_test_is_in_the_build_tree(void **state)
{
    (void)state;
    assert_true(jq_default_dirs().build_tree);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(in_build_tree),
        cmocka_unit_test(installed),
        cmocka_unit_test(this_test_is_in_the_build_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
