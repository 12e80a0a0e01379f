/* test_jobspec.c: parsing and validation of submitted opcodes
 * (queue/jobspec.c, JOBMODEL §2.1 and §1.7, docs/protocol.md "Values"),
 * with the built-in opcodes' argument checks (broker/builtin_ops.c).
 * Inputs are written as JSON text and packed to msgpack, so each case
 * reads like the request a client would send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobq_json.h"
#include <jansson.h>
#include <msgpack.h>

#include "builtin_ops.h"
#include "jobspec.h"

/* ---- JSON text → msgpack object ---- */

/* Test inputs are written as JSON text; libjobq's converter packs them. */
static void pack_json(msgpack_packer *pk, const json_t *j)
{
    assert_int_equal(jobq_json_to_msgpack(pk, j, JOBQ_JSON_MAX_DEPTH, NULL, 0), 0);
}

typedef struct {
    msgpack_sbuffer sb;
    msgpack_unpacked up;
} mp_t;

static const msgpack_object *mp(mp_t *m, const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!j)
        fail_msg("bad JSON in test: %s: %s", text, jerr.text);
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m->sb, msgpack_sbuffer_write);
    pack_json(&pk, j);
    json_decref(j);
    msgpack_unpacked_init(&m->up);
    assert_int_equal(msgpack_unpack_next(&m->up, m->sb.data, m->sb.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    return &m->up.data;
}

static void mp_free(mp_t *m)
{
    msgpack_unpacked_destroy(&m->up);
    msgpack_sbuffer_destroy(&m->sb);
}

#define NOW 1700000000000000LL

/* Parse ops (JSON); expect code; returns the job (NULL on error) and the
 * message in err. */
static jq_job_t *parse(const char *ops, bool relative, jobq_code_t expect, char *err,
                       size_t errlen)
{
    mp_t m;
    jq_job_t *job = (jq_job_t *)1;
    err[0] = '\0';
    jobq_code_t rc = jq_jobspec_parse(jq_builtin_ops(), mp(&m, ops), relative, 100, NOW, &job,
                                      err, errlen);
    mp_free(&m);
    if (rc != expect)
        fail_msg("%s: got %s (%s), expected %s", ops, jobq_code_name(rc), err,
                 jobq_code_name(expect));
    if (rc != JOBQ_ERR_NONE) {
        assert_null(job); /* nothing half-built escapes */
        assert_true(err[0] != '\0');
    } else {
        assert_non_null(job);
    }
    return job;
}

static void expect_err(const char *ops, bool relative, jobq_code_t expect, const char *needle)
{
    char err[512];
    parse(ops, relative, expect, err, sizeof err);
    if (needle && !strstr(err, needle))
        fail_msg("%s: message '%s' lacks '%s'", ops, err, needle);
}

static jq_job_t *expect_ok(const char *ops, bool relative)
{
    char err[512];
    return parse(ops, relative, JOBQ_ERR_NONE, err, sizeof err);
}

static void expect_valid(const char *ops)
{
    jq_job_t *job = expect_ok(ops, false);
    jq_job_destroy(&job);
}

#define DELAY "{\"op\":\"test.delay\",\"args\":{\"duration\":0}}"

/* ---- the opcode list ---- */

static void test_ops_list(void **state)
{
    (void)state;
    char err[256];
    jq_job_t *job = (jq_job_t *)1;
    assert_int_equal(jq_jobspec_parse(jq_builtin_ops(), NULL, false, UINT64_MAX >> 1, NOW, &job, err,
                                      sizeof err),
                     JOBQ_ERR_BAD_ARGUMENT);
    assert_null(job);
    expect_err("null", false, JOBQ_ERR_BAD_ARGUMENT, "'ops' must be a list");
    expect_err("{\"op\":\"test.delay\"}", false, JOBQ_ERR_BAD_ARGUMENT, "'ops' must be a list");
    expect_err("\"test.delay\"", false, JOBQ_ERR_BAD_ARGUMENT, NULL);
    expect_err("[]", false, JOBQ_ERR_BAD_ARGUMENT, "A job needs at least one opcode");

    /* The limit on opcodes per job. */
    size_t cap = (JOBQ_MAX_OPS_PER_JOB + 1) * (sizeof DELAY + 1) + 8;
    char *many = malloc(cap);
    assert_non_null(many);
    for (int n = JOBQ_MAX_OPS_PER_JOB; n <= JOBQ_MAX_OPS_PER_JOB + 1; n++) {
        size_t off = 0;
        many[off++] = '[';
        for (int i = 0; i < n; i++)
            off += (size_t)snprintf(many + off, cap - off, "%s%s", i ? "," : "", DELAY);
        snprintf(many + off, cap - off, "]");
        if (n == JOBQ_MAX_OPS_PER_JOB) {
            job = expect_ok(many, false);
            assert_int_equal(job->nops, JOBQ_MAX_OPS_PER_JOB);
            jq_job_destroy(&job);
        } else {
            expect_err(many, false, JOBQ_ERR_BAD_ARGUMENT, "at most");
        }
    }
    free(many);
}

static void test_opcode_shape(void **state)
{
    (void)state;
    expect_err("[1]", false, JOBQ_ERR_BAD_ARGUMENT, "opcode 0 is not a map");
    expect_err("[" DELAY ",[]]", false, JOBQ_ERR_BAD_ARGUMENT, "opcode 1 is not a map");
    expect_err("[{}]", false, JOBQ_ERR_BAD_ARGUMENT, "opcode 0 has no 'op' name");
    expect_err("[{\"op\":\"\"}]", false, JOBQ_ERR_BAD_ARGUMENT, "no 'op' name");
    expect_err("[{\"op\":5}]", false, JOBQ_ERR_BAD_ARGUMENT, "no 'op' name");
    expect_err("[{\"op\":null}]", false, JOBQ_ERR_BAD_ARGUMENT, "no 'op' name");
    /* A name over JOBQ_MAX_OP_NAME is refused before the lookup. */
    char longname[200];
    memset(longname, 'x', sizeof longname);
    snprintf(longname, sizeof longname, "[{\"op\":\"%.*s\"}]", JOBQ_MAX_OP_NAME + 1,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    expect_err(longname, false, JOBQ_ERR_BAD_ARGUMENT, "no 'op' name");
    expect_err("[{\"op\":\"test.nosuch\"}]", false, JOBQ_ERR_UNKNOWN_OPCODE,
               "opcode 0: unknown opcode 'test.nosuch'");
    expect_err("[" DELAY ",{\"op\":\"OP_TEST_DELAY\"}]", false, JOBQ_ERR_UNKNOWN_OPCODE,
               "opcode 1");
    expect_err("[{\"op\":\"test.delay\",\"args\":[]}]", false, JOBQ_ERR_BAD_ARGUMENT,
               "'args' must be a map");
    expect_err("[{\"op\":\"test.log\",\"args\":\"x\"}]", false, JOBQ_ERR_BAD_ARGUMENT,
               "'args' must be a map");
    /* args absent or nil: {} (test.log needs nothing). */
    expect_valid("[{\"op\":\"test.log\"}]");
    expect_valid("[{\"op\":\"test.log\",\"args\":null}]");
    /* Unknown keys in an opcode are ignored. */
    expect_valid("[{\"op\":\"test.log\",\"comment\":\"hi\"}]");
}

static void test_parsed_job(void **state)
{
    (void)state;
    jq_job_t *job = expect_ok(
        "[{\"op\":\"test.delay\",\"args\":{\"duration\":0.5,\"repeat\":2}},"
        " {\"op\":\"test.log\",\"args\":{\"messages\":[\"a\",\"b\"]},\"priority\":-10,"
        "  \"depends\":[[3,[\"success\",\"error\"]],[4,[]]]}]",
        false);
    assert_int_equal(job->id, 0);
    assert_int_equal(job->nops, 2);
    assert_int_equal(job->received_ts, NOW);
    assert_int_equal(job->start_ts, 0);
    assert_int_equal(job->end_ts, 0);
    assert_int_equal(jq_job_derive_status(job), JQ_QUEUED);
    assert_string_equal(job->ops[0].def->name, "test.delay");
    assert_string_equal(job->ops[0].summary, "test.delay(0.5)");
    assert_string_equal(job->ops[1].def->name, "test.log");
    assert_string_equal(job->ops[1].summary, "test.log(2)");
    assert_int_equal(job->ops[0].priority, 0);
    assert_int_equal(job->ops[0].input_priority, 0);
    assert_int_equal(job->ops[1].priority, -10);
    assert_int_equal(job->ops[1].input_priority, -10);
    assert_int_equal(jq_job_priority(job), -10);
    assert_int_equal(job->ops[0].ndeps, 0);
    assert_int_equal(job->ops[1].ndeps, 2);
    assert_int_equal(job->ops[1].deps[0].job_id, 3);
    assert_int_equal(job->ops[1].deps[0].status_mask,
                     (1u << JQ_SUCCESS) | (1u << JQ_ERROR));
    assert_int_equal(job->ops[1].deps[1].job_id, 4);
    assert_int_equal(job->ops[1].deps[1].status_mask, 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(job->ops[i].status, JQ_QUEUED);
        assert_null(job->ops[i].result.data);
    }
    /* args are kept as the submitted msgpack map. */
    mp_t m;
    const msgpack_object *args = mp(&m, "{\"messages\":[\"a\",\"b\"]}");
    assert_int_equal(job->ops[1].args.len, m.sb.size);
    assert_memory_equal(job->ops[1].args.data, m.sb.data, m.sb.size);
    (void)args;
    mp_free(&m);
    /* Resolving with no relatives just sets the id. */
    char err[128];
    assert_int_equal(jq_jobspec_resolve(job, 17, NULL, 0, err, sizeof err), 0);
    assert_int_equal(job->id, 17);
    assert_int_equal(job->ops[1].deps[0].job_id, 3);
    jq_job_destroy(&job);

    /* args absent: an empty map is stored. */
    job = expect_ok("[{\"op\":\"test.log\"}]", false);
    assert_int_equal(job->ops[0].args.len, 1);
    assert_int_equal((unsigned char)job->ops[0].args.data[0], 0x80);
    assert_string_equal(job->ops[0].summary, "test.log(0)");
    jq_job_destroy(&job);
}

/* ---- priority ---- */

static void test_priority(void **state)
{
    (void)state;
    /* Any integer that is not a priority: InvalidPriority (above INT64_MAX
     * too: JSON cannot say it, test_hostile.py does). */
    static const char *bad[] = {"5", "-20", "19", "1", "-11", "11", "100",
                                "-9223372036854775808"};
    char ops[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(ops, sizeof ops, "[" DELAY ",{\"op\":\"test.log\",\"priority\":%s}]", bad[i]);
        expect_err(ops, false, JOBQ_ERR_INVALID_PRIORITY,
                   "opcode 1 has invalid priority, allowed are -10, 0, 10");
    }
    /* Not an integer at all: BadArgument. */
    static const char *not_int[] = {"\"high\"", "0.5", "true", "[]"};
    for (size_t i = 0; i < sizeof not_int / sizeof not_int[0]; i++) {
        snprintf(ops, sizeof ops, "[" DELAY ",{\"op\":\"test.log\",\"priority\":%s}]",
                 not_int[i]);
        expect_err(ops, false, JOBQ_ERR_BAD_ARGUMENT,
                   "opcode 1: priority must be an integer (-10, 0 or 10)");
    }
    static const struct { const char *text; int prio; } good[] = {
        {"-10", -10}, {"0", 0}, {"10", 10}, {"null", 0}, {"10.0", 10}, {"-10.0", -10}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(ops, sizeof ops, "[{\"op\":\"test.log\",\"priority\":%s}]", good[i].text);
        jq_job_t *job = expect_ok(ops, false);
        assert_int_equal(job->ops[0].priority, good[i].prio);
        assert_int_equal(job->ops[0].input_priority, good[i].prio);
        jq_job_destroy(&job);
    }
}

/* ---- depends ---- */

static void test_depends_errors(void **state)
{
    (void)state;
    /* Type errors: BadArgument, as for any argument. */
    static const char *mistyped[] = {
        "5", "\"x\"", "{}",                            /* not a list */
        "[5]", "[[]]", "[[1]]", "[[1,[],3]]",         /* not pairs */
        "[[1,\"success\"]]", "[[1,null]]",            /* status list not a list */
        "[[\"1\",[]]]", "[[1.5,[]]]", "[[null,[]]]",  /* id not an integer */
        "[[1,[5]]]",                                  /* status not a string */
    };
    char ops[256];
    for (size_t i = 0; i < sizeof mistyped / sizeof mistyped[0]; i++) {
        snprintf(ops, sizeof ops, "[{\"op\":\"test.log\"},{\"op\":\"test.log\",\"depends\":%s}]",
                 mistyped[i]);
        expect_err(ops, true, JOBQ_ERR_BAD_ARGUMENT, "opcode 1");
        expect_err(ops, false, JOBQ_ERR_BAD_ARGUMENT, "opcode 1");
    }
    static const char *bad[] = {
        "[[1,[\"running\"]]]", "[[1,[\"queued\"]]]", "[[1,[\"waiting\"]]]",
        "[[1,[\"canceling\"]]]",                      /* non-final statuses */
        "[[1,[\"success\",\"running\"]]]",
        "[[1,[\"done\"]]]", "[[1,[\"Success\"]]]",
        "[[0,[]]]",                                   /* id 0 */
        "[[18446744073709551615,[]]]",                /* over INT64_MAX */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(ops, sizeof ops, "[{\"op\":\"test.log\"},{\"op\":\"test.log\",\"depends\":%s}]",
                 bad[i]);
        if (strstr(bad[i], "18446744073709551615")) {
            /* jansson cannot hold it: pack by hand below. */
            continue;
        }
        expect_err(ops, true, JOBQ_ERR_INVALID_DEPENDS, "opcode 1");
        expect_err(ops, false, JOBQ_ERR_INVALID_DEPENDS, "opcode 1");
    }
    /* [[2^64-1, []]] packed by hand. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, "test.log", 8);
    msgpack_pack_str_with_body(&pk, "depends", 7);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_array(&pk, 0);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    jq_job_t *job;
    char err[256];
    assert_int_equal(jq_jobspec_parse(jq_builtin_ops(), &up.data, true, UINT64_MAX >> 1, NOW, &job, err,
                                      sizeof err),
                     JOBQ_ERR_INVALID_DEPENDS);
    assert_null(job);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);

    /* More than JOBQ_MAX_DEPENDS pairs. */
    char big[4096];
    for (int n = JOBQ_MAX_DEPENDS; n <= JOBQ_MAX_DEPENDS + 1; n++) {
        size_t off = (size_t)snprintf(big, sizeof big, "[{\"op\":\"test.log\",\"depends\":[");
        for (int k = 0; k < n; k++)
            off += (size_t)snprintf(big + off, sizeof big - off, "%s[%d,[]]", k ? "," : "",
                                    k + 1);
        snprintf(big + off, sizeof big - off, "]}]");
        if (n == JOBQ_MAX_DEPENDS) {
            job = expect_ok(big, false);
            assert_int_equal(job->ops[0].ndeps, JOBQ_MAX_DEPENDS);
            jq_job_destroy(&job);
        } else {
            expect_err(big, false, JOBQ_ERR_INVALID_DEPENDS, "at most");
        }
    }
}

static void test_depends_ok(void **state)
{
    (void)state;
    jq_job_t *job = expect_ok("[{\"op\":\"test.log\",\"depends\":null},"
                              " {\"op\":\"test.log\",\"depends\":[]},"
                              " {\"op\":\"test.log\",\"depends\":[[9,[\"canceled\",\"success\","
                              "\"error\"]]]}]",
                              false);
    assert_int_equal(job->ops[0].ndeps, 0);
    assert_null(job->ops[0].deps);
    assert_int_equal(job->ops[1].ndeps, 0);
    assert_int_equal(job->ops[2].ndeps, 1);
    assert_int_equal(job->ops[2].deps[0].status_mask,
                     (1u << JQ_CANCELED) | (1u << JQ_SUCCESS) | (1u << JQ_ERROR));
    jq_job_destroy(&job);
}

/* Relative ids: rejected in submit_job, resolved in a batch. */
static void test_relative(void **state)
{
    (void)state;
    expect_err("[{\"op\":\"test.log\",\"depends\":[[-1,[]]]}]", false,
               JOBQ_ERR_INVALID_DEPENDS, "opcode 0 has invalid dependencies");
    expect_err("[{\"op\":\"test.log\",\"depends\":[[5,[]],[-2,[\"success\"]]]}]", false,
               JOBQ_ERR_INVALID_DEPENDS, "relative");

    const char *ops = "[{\"op\":\"test.log\",\"depends\":[[-1,[\"success\"]],[40,[]]]},"
                      " {\"op\":\"test.log\",\"depends\":[[-3,[]]]}]";
    char err[256];
    /* prev[k] is the job k+1 places back. */
    const uint64_t prev[] = {12, 11, 10};
    jq_job_t *job = expect_ok(ops, true);
    assert_int_equal(job->ops[0].deps[0].job_id, -1); /* kept for resolve */
    assert_int_equal(jq_jobspec_resolve(job, 13, prev, 3, err, sizeof err), 0);
    assert_int_equal(job->id, 13);
    assert_int_equal(job->ops[0].deps[0].job_id, 12);
    assert_int_equal(job->ops[0].deps[0].status_mask, 1u << JQ_SUCCESS);
    assert_int_equal(job->ops[0].deps[1].job_id, 40); /* absolute: untouched */
    assert_int_equal(job->ops[1].deps[0].job_id, 10);
    jq_job_destroy(&job);

    /* Pointing before the batch. */
    job = expect_ok(ops, true);
    assert_int_equal(jq_jobspec_resolve(job, 13, prev, 2, err, sizeof err), -1);
    assert_string_equal(err, "Unable to resolve relative job ID -3");
    jq_job_destroy(&job);
    job = expect_ok(ops, true);
    assert_int_equal(jq_jobspec_resolve(job, 1, NULL, 0, err, sizeof err), -1);
    assert_string_equal(err, "Unable to resolve relative job ID -1");
    jq_job_destroy(&job);

    /* Pointing to a job of the batch that failed (id 0). */
    const uint64_t failed[] = {0, 11, 10};
    job = expect_ok(ops, true);
    assert_int_equal(jq_jobspec_resolve(job, 13, failed, 3, err, sizeof err), -1);
    assert_string_equal(err, "Unable to resolve relative job ID -1");
    jq_job_destroy(&job);

    /* The most negative id must be refused, not overflow. */
    job = expect_ok("[{\"op\":\"test.log\",\"depends\":[[-9223372036854775808,[]]]}]", true);
    assert_int_equal(jq_jobspec_resolve(job, 13, prev, 3, err, sizeof err), -1);
    assert_string_equal(err, "Unable to resolve relative job ID -9223372036854775808");
    jq_job_destroy(&job);
}

/* A job may name itself at submit; it fails when it runs ("Job can't
 * depend on itself", checked by the executor). */
static void test_self_dependency(void **state)
{
    (void)state;
    char err[128];
    jq_job_t *job = expect_ok("[{\"op\":\"test.log\",\"depends\":[[7,[]]]}]", false);
    assert_int_equal(jq_jobspec_resolve(job, 7, NULL, 0, err, sizeof err), 0);
    assert_int_equal(job->id, 7);
    assert_int_equal(job->ops[0].deps[0].job_id, 7);
    jq_job_destroy(&job);
}

/* A dependency on an id not handed out yet is refused: the job that gets
 * it could depend on this one, and the two would wait for each other
 * forever. (The tests parse with 100 as the last id.) */
static void test_dependency_on_future_id(void **state)
{
    (void)state;
    expect_err("[{\"op\":\"test.log\",\"depends\":[[101,[]]]}]", false,
               JOBQ_ERR_INVALID_DEPENDS, "job 101 does not exist (the last job id is 100)");
    jq_job_t *job = expect_ok("[{\"op\":\"test.log\",\"depends\":[[100,[]]]}]", false);
    jq_job_destroy(&job);
}

/* ---- built-in opcodes' arguments ---- */

static void check_args(const char *op, const char *args, bool ok, const char *needle)
{
    char ops[8192];
    snprintf(ops, sizeof ops, "[{\"op\":\"%s\",\"args\":%s}]", op, args);
    if (ok)
        expect_valid(ops);
    else
        expect_err(ops, false, JOBQ_ERR_BAD_ARGUMENT, needle);
}

static void test_delay_args(void **state)
{
    (void)state;
    const char *d = "test.delay";
    check_args(d, "{}", false, "opcode 0 (test.delay): missing argument 'duration' (required)");
    check_args(d, "{\"duration\":null}", false, "'duration'");
    check_args(d, "{\"duration\":\"1\"}", false, "'duration'");
    check_args(d, "{\"duration\":-1}", false, "'duration'");
    check_args(d, "{\"duration\":-0.001}", false, "'duration'");
    check_args(d, "{\"duration\":604801}", false, "'duration'");
    check_args(d, "{\"duration\":true}", false, "'duration'");
    check_args(d, "{\"duration\":0}", true, NULL);
    check_args(d, "{\"duration\":0.0}", true, NULL);
    check_args(d, "{\"duration\":0.25}", true, NULL);
    check_args(d, "{\"duration\":604800}", true, NULL);
    check_args(d, "{\"duration\":1,\"repeat\":-1}", false, "'repeat'");
    check_args(d, "{\"duration\":1,\"repeat\":1.5}", false, "'repeat'");
    check_args(d, "{\"duration\":1,\"repeat\":\"2\"}", false, "'repeat'");
    check_args(d, "{\"duration\":1,\"repeat\":100000000}", false, "'repeat'");
    check_args(d, "{\"duration\":1,\"repeat\":0}", true, NULL);
    check_args(d, "{\"duration\":1,\"repeat\":3}", true, NULL);
    check_args(d, "{\"duration\":1,\"repeat\":3.0}", true, NULL);
    check_args(d, "{\"duration\":1,\"repeat\":null}", true, NULL);
    check_args(d, "{\"duration\":1,\"fail\":\"yes\"}", false, "'fail' must be a boolean");
    check_args(d, "{\"duration\":1,\"fail\":1}", false, "'fail'");
    check_args(d, "{\"duration\":1,\"fail\":true}", true, NULL);
    /* A typo is not a job: unknown arguments are refused by name. */
    check_args(d, "{\"duration\":1,\"fail\":false,\"extra\":[1]}", false,
               "opcode 0 (test.delay): unknown argument 'extra' (test.delay takes duration, "
               "repeat, fail)");
    check_args(d, "{\"duration\":1,\"repat\":3}", false, "unknown argument 'repat'");
    /* repeat is capped at what one job's log holds by default. */
    check_args(d, "{\"duration\":1,\"repeat\":100000}", true, NULL);
    check_args(d, "{\"duration\":1,\"repeat\":100001}", false, "'repeat'");
}

static void test_log_args(void **state)
{
    (void)state;
    const char *l = "test.log";
    check_args(l, "{}", true, NULL);
    check_args(l, "{\"messages\":null}", true, NULL);
    check_args(l, "{\"messages\":[]}", true, NULL);
    check_args(l, "{\"messages\":[\"a\",\"\",\"c\"]}", true, NULL);
    check_args(l, "{\"messages\":\"a\"}", false, "opcode 0 (test.log): 'messages' must be a list");
    check_args(l, "{\"messages\":{}}", false, "'messages'");
    check_args(l, "{\"messages\":[\"a\",1]}", false, "'messages' item 1");
    check_args(l, "{\"messages\":[null]}", false, "'messages' item 0");
    check_args(l, "{\"messages\":[[\"a\"]]}", false, "'messages' item 0");
    check_args(l, "{\"messages\":[\"a\\u0000b\"]}", false, "'messages' item 0");
    check_args(l, "{\"fail\":\"no\"}", false, "'fail' must be a boolean");
    check_args(l, "{\"fail\":true}", true, NULL);
    /* One message of the largest size, and one byte over. */
    char args[JOBQ_MAX_LOG_MESSAGE + 64];
    for (int n = JOBQ_MAX_LOG_MESSAGE; n <= JOBQ_MAX_LOG_MESSAGE + 1; n++) {
        int off = snprintf(args, sizeof args, "{\"messages\":[\"");
        memset(args + off, 'm', (size_t)n);
        snprintf(args + off + n, sizeof args - (size_t)(off + n), "\"]}");
        check_args(l, args, n == JOBQ_MAX_LOG_MESSAGE, "'messages' item 0");
    }
}

/* A later bad opcode fails the whole job, naming its index. */
static void test_whole_job_fails(void **state)
{
    (void)state;
    expect_err("[" DELAY "," DELAY ",{\"op\":\"test.delay\",\"args\":{}}]", false,
               JOBQ_ERR_BAD_ARGUMENT, "opcode 2 (test.delay)");
    expect_err("[" DELAY ",{\"op\":\"test.log\",\"depends\":[[-1,[]]]}]", false,
               JOBQ_ERR_INVALID_DEPENDS, "opcode 1");
}

/* ---- jq_job_pack: a parsed job in one allocation ---- */

/* Packing moves args, summaries, dependencies and the owner into the job's
 * own allocation without changing a byte of them; destroying the packed
 * job frees everything once (the ASan build checks the frees). */
static void test_pack(void **state)
{
    (void)state;
    mp_t m;
    char err[512] = "";
    jq_job_t *job = NULL;
    const char *ops = "[{\"op\":\"test.delay\",\"args\":{\"duration\":0.25},"
                      "\"depends\":[[7,[\"success\"]],[-1,[]]]},"
                      "{\"op\":\"test.delay\",\"args\":{\"duration\":1,\"repeat\":2}},"
                      "{\"op\":\"test.log\"}]";
    assert_int_equal(jq_jobspec_parse(jq_builtin_ops(), mp(&m, ops), true, 100, NOW, &job, err,
                                      sizeof err),
                     JOBQ_ERR_NONE);
    mp_free(&m);
    uint64_t prev[] = {41};
    assert_int_equal(jq_jobspec_resolve(job, 42, prev, 1, err, sizeof err), 0);
    job->owner = strdup("key:alice");
    /* What the unpacked job says, to compare with. */
    char *args[3], *sum[3];
    uint32_t alen[3];
    for (int i = 0; i < 3; i++) {
        alen[i] = job->ops[i].args.len;
        args[i] = alen[i] ? malloc(alen[i]) : NULL;
        if (alen[i])
            memcpy(args[i], job->ops[i].args.data, alen[i]);
        sum[i] = job->ops[i].summary ? strdup(job->ops[i].summary) : NULL;
    }
    assert_false(job->packed);
    assert_int_equal(jq_job_pack(&job), 0);
    assert_true(job->packed);
    assert_int_equal(jq_job_pack(&job), 0); /* once is enough: a no-op */
    assert_int_equal(job->id, 42);
    assert_int_equal(job->nops, 3);
    const char *lo = (const char *)job, *hi = (const char *)&job->ops[job->nops];
    for (int i = 0; i < 3; i++) {
        const jq_op_t *op = &job->ops[i];
        assert_int_equal(op->args.len, alen[i]);
        if (alen[i]) {
            assert_memory_equal(op->args.data, args[i], alen[i]);
            assert_true(op->args.data >= hi); /* in the job's tail */
        }
        if (sum[i]) {
            assert_string_equal(op->summary, sum[i]);
            assert_true(op->summary >= hi);
        } else {
            assert_null(op->summary);
        }
        assert_int_equal(op->status, JQ_QUEUED);
        free(args[i]);
        free(sum[i]);
    }
    assert_int_equal(job->ops[0].ndeps, 2);
    assert_true((const char *)job->ops[0].deps >= hi);
    assert_int_equal((uintptr_t)job->ops[0].deps % _Alignof(jq_dep_t), 0);
    assert_int_equal(job->ops[0].deps[0].job_id, 7);
    assert_int_equal(job->ops[0].deps[0].status_mask, 1u << JQ_SUCCESS);
    assert_int_equal(job->ops[0].deps[1].job_id, 41);
    assert_int_equal(job->ops[1].ndeps, 0);
    assert_null(job->ops[1].deps);
    assert_string_equal(job->owner, "key:alice");
    assert_true(job->owner > lo);
    /* What a running job gains later is still its own to free. */
    assert_int_equal(jq_blob_exec_error(&job->ops[2].result, "boom"), 0);
    jq_job_destroy(&job);
    assert_null(job);
}

/* ---- a tiny opset of the test's own ---- */

static int reject_all(const msgpack_object *args, char *err, size_t len)
{
    (void)args;
    snprintf(err, len, "never valid");
    return -1;
}
static int accept_all(const msgpack_object *args, char *err, size_t len)
{
    (void)args, (void)err, (void)len;
    return 0;
}
static void summarize(const msgpack_object *args, char *buf, size_t len)
{
    (void)args;
    snprintf(buf, len, "t");
}
static const jq_opdef_t def_no = {.name = "t.no", .validate = reject_all, .summarize = summarize};
static const jq_opdef_t def_yes = {.name = "t.yes", .validate = accept_all, .summarize = summarize};

static void test_custom_opset(void **state)
{
    (void)state;
    const jq_opdef_t *const defs[] = {&def_no, &def_yes};
    const jq_opset_t set = {defs, 2, NULL};
    assert_ptr_equal(jq_opset_find(&set, "t.yes", 5), &def_yes);
    assert_ptr_equal(jq_opset_find(&set, "t.no", 4), &def_no);
    assert_null(jq_opset_find(&set, "t.ye", 4));
    assert_null(jq_opset_find(&set, "t.yes!", 6));
    assert_null(jq_opset_find(jq_builtin_ops(), "t.yes", 5));
    assert_non_null(jq_opset_find(jq_builtin_ops(), "test.delay", 10));
    assert_non_null(jq_opset_find(jq_builtin_ops(), "test.log", 8));

    mp_t m;
    jq_job_t *job;
    char err[128];
    assert_int_equal(jq_jobspec_parse(&set, mp(&m, "[{\"op\":\"t.yes\"},{\"op\":\"t.no\"}]"),
                                      false, UINT64_MAX >> 1, NOW, &job, err, sizeof err),
                     JOBQ_ERR_BAD_ARGUMENT);
    assert_string_equal(err, "opcode 1 (t.no): never valid");
    mp_free(&m);
    assert_int_equal(jq_jobspec_parse(&set, mp(&m, "[{\"op\":\"t.yes\",\"args\":{\"a\":1}}]"),
                                      false, UINT64_MAX >> 1, NOW, &job, err, sizeof err),
                     JOBQ_ERR_NONE);
    assert_string_equal(job->ops[0].summary, "t");
    assert_ptr_equal(job->ops[0].def, &def_yes);
    jq_job_destroy(&job);
    mp_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_list),
        cmocka_unit_test(test_opcode_shape),
        cmocka_unit_test(test_parsed_job),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_depends_errors),
        cmocka_unit_test(test_depends_ok),
        cmocka_unit_test(test_relative),
        cmocka_unit_test(test_self_dependency),
        cmocka_unit_test(test_dependency_on_future_id),
        cmocka_unit_test(test_delay_args),
        cmocka_unit_test(test_log_args),
        cmocka_unit_test(test_whole_job_fails),
        cmocka_unit_test(test_custom_opset),
        cmocka_unit_test(test_pack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
