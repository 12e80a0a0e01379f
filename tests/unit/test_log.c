/* test_log.c: the daemon's log (util/log.c): level names, filtering, the
 * plain and journald forms, and lines of several threads never mixed. The
 * log writes to fd 2, which each test points at a temporary file. */
#include "log.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char logpath[] = "/tmp/jobq-test-log-XXXXXX";
static int saved_stderr = -1;

/* fd 2 → a fresh temporary file. */
static int to_file(void **state)
{
    (void)state;
    strcpy(logpath, "/tmp/jobq-test-log-XXXXXX");
    int fd = mkstemp(logpath);
    if (fd < 0)
        return -1;
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
    unsetenv("JOURNAL_STREAM");
    jq_log_setup("jobqd");
    jq_log_set_level(JQ_LOG_INFO);
    return 0;
}

static int back(void **state)
{
    (void)state;
    dup2(saved_stderr, 2);
    close(saved_stderr);
    unlink(logpath);
    return 0;
}

static char *contents(void)
{
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    static char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void levels(void **state)
{
    (void)state;
    jq_log_level_t l;
    const char *names[] = {"error", "warning", "notice", "info", "debug"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(jq_log_level_parse(names[i], &l), 0);
        assert_int_equal(l, JQ_LOG_ERROR + i);
        assert_string_equal(jq_log_level_name(l), names[i]);
    }
    assert_int_equal(jq_log_level_parse("verbose", &l), -1);
    assert_int_equal(jq_log_level_parse("", &l), -1);
}

static void plain_form_and_filter(void **state)
{
    (void)state;
    jq_log_set_level(JQ_LOG_NOTICE);
    jq_log(JQ_LOG_INFO, "not shown");
    jq_log(JQ_LOG_NOTICE, "two\nlines %d", 2);
    jq_log(JQ_LOG_ERROR, "bad");
    assert_string_equal(contents(), "jobqd: notice: two lines 2\njobqd: error: bad\n");
}

static void journal_form(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(fstat(2, &st), 0);
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    jq_log_setup("jobqd");
    jq_log(JQ_LOG_WARNING, "careful");
    jq_log(JQ_LOG_DEBUG, "hidden");
    assert_string_equal(contents(), "<4>careful\n");
}

static void long_line_is_cut(void **state)
{
    (void)state;
    char big[10000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    jq_log(JQ_LOG_INFO, "%s", big);
    char *s = contents();
    size_t n = strlen(s);
    assert_true(n < 4100);
    assert_int_equal(s[n - 1], '\n');
    assert_memory_equal(s + n - 4, "...", 3);
    assert_ptr_equal(strchr(s, '\n'), s + n - 1); /* one line */
}

#define THREADS 4
#define LINES 2000

static void *writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    char pad[300];
    memset(pad, 'a' + id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES; i++)
        jq_log(JQ_LOG_INFO, "t%d %05d %s", id, i, pad);
    return NULL;
}

static void threads_do_not_mix(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, writer, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *s = contents();
    int count[THREADS] = {0};
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        int id, n;
        char pad[400];
        assert_int_equal(sscanf(line, "jobqd: info: t%d %d %399s", &id, &n, pad), 3);
        assert_true(id >= 0 && id < THREADS);
        assert_int_equal(n, count[id]); /* in order, none lost */
        assert_int_equal(strlen(pad), 299);
        assert_int_equal(strspn(pad, (char[]){(char)('a' + id), 0}), 299);
        count[id]++;
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(count[i], LINES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(levels),
        cmocka_unit_test_setup_teardown(plain_form_and_filter, to_file, back),
        cmocka_unit_test_setup_teardown(journal_form, to_file, back),
        cmocka_unit_test_setup_teardown(long_line_is_cut, to_file, back),
        cmocka_unit_test_setup_teardown(threads_do_not_mix, to_file, back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
