/* test_security.c: the pieces of docs/security.md that need no daemon:
 * which TCP endpoints count as loopback (--insecure), roles by name, the
 * identity frame from the loop to the handlers, a job's owner through the
 * store encoding and the submit record (and its absence in an old store),
 * and libjobq reading czmq certificate files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <msgpack.h>
#include <unistd.h>
#include <zmq.h>

#include "auth.h"
#include "change.h"
#include "daemon.h"
#include "jobcodec.h"
#include "jobq_internal.h"
#include "opdef.h"
#include "wire.h"

static void test_loopback_endpoints(void **state)
{
    (void)state;
    const char *yes[] = {"tcp://127.0.0.1:5555", "tcp://127.1.2.3:1", "tcp://[::1]:5555",
                         "tcp://[::ffff:127.0.0.1]:9", "ipc:///run/jobq/jobq.sock"};
    /* A host name is not known to be loopback: libzmq binds no DNS names. */
    const char *no[] = {"tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555",
                        "tcp://[::]:5555", "tcp://eth0:5555", "tcp://example.org:5555",
                        "tcp://128.0.0.1:1", "tcp://[fe80::1]:1", "tcp://:5555",
                        "tcp://localhost:5555", "tcp://127.0.0.1.evil:5555"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!jq_endpoint_is_loopback(yes[i]))
            fail_msg("%s should be loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (jq_endpoint_is_loopback(no[i]))
            fail_msg("%s should not be loopback", no[i]);
    /* What the daemon binds: tcp://, and ipc:// naming a file. */
    const char *bind_yes[] = {"tcp://127.0.0.1:1", "ipc:///run/jobq/jobq.sock", "ipc://rel.sock"};
    const char *bind_no[] = {"ipc://@abstract", "ipc://", "tipc://{1,2}", "pgm://lo;239.1.1.1:5",
                             "epgm://lo;239.1.1.1:5", "norm://1.2.3.4:5", "inproc://x",
                             "udp://127.0.0.1:5", "ws://127.0.0.1:5"};
    for (size_t i = 0; i < sizeof bind_yes / sizeof *bind_yes; i++)
        if (!jq_endpoint_bindable(bind_yes[i]))
            fail_msg("%s should be bindable", bind_yes[i]);
    for (size_t i = 0; i < sizeof bind_no / sizeof *bind_no; i++)
        if (jq_endpoint_bindable(bind_no[i]))
            fail_msg("%s should not be bindable", bind_no[i]);
    assert_true(jq_key_name_ok("alice"));
    assert_true(jq_key_name_ok("a.b_c@d-1"));
    assert_false(jq_key_name_ok(""));
    assert_false(jq_key_name_ok("a b"));
    assert_false(jq_key_name_ok("uid:0"));
    assert_false(jq_key_name_ok("\xff\xfe"));
    assert_false(jq_key_name_ok("x123456789x123456789x123456789x123456789x123456789x123456789x1234"));
}

static void test_roles(void **state)
{
    (void)state;
    jq_role_t r;
    assert_int_equal(jq_role_parse("submit", &r), 0);
    assert_int_equal(r, JQ_ROLE_SUBMIT);
    assert_int_equal(jq_role_parse("Admin", &r), -1);
    assert_int_equal(jq_role_parse(NULL, &r), -1);
    assert_string_equal(jq_role_name(JQ_ROLE_WORKER), "worker");
    /* each method's role, as docs/security.md lists them */
    assert_int_equal(jq_method_role(JQ_M_QUERY_JOBS), JQ_ROLE_READ);
    assert_int_equal(jq_method_role(JQ_M_SUBMIT_JOB), JQ_ROLE_SUBMIT);
    assert_int_equal(jq_method_role(JQ_M_CANCEL_JOB), JQ_ROLE_SUBMIT);
    assert_int_equal(jq_method_role(JQ_M_SET_DRAIN_FLAG), JQ_ROLE_ADMIN);
    assert_int_equal(jq_method_role(JQ_M_SHUTDOWN), JQ_ROLE_ADMIN);
    assert_int_equal(jq_method_role(JQ_M_AUTO_ARCHIVE_JOBS), JQ_ROLE_ADMIN);
    assert_int_equal(jq_method_role(JQ_M_HTTP_TOKEN), JQ_ROLE_READ);
    for (int m = 0; m < JQ_M__COUNT; m++)
        assert_true(jq_method_role((jq_method_t)m) > JQ_ROLE_WORKER);
}

static void test_identity_frame(void **state)
{
    (void)state;
    jq_identity_t who = {.role = JQ_ROLE_SUBMIT}, back;
    snprintf(who.owner, sizeof who.owner, "alice");
    char f[2 + JQ_OWNER_MAX];
    size_t n = jq_identity_frame(&who, 1, f, sizeof f);
    assert_int_equal(n, 2 + 5);
    assert_int_equal(f[0], 1);
    jq_identity_from_frame(f, n, &back);
    assert_int_equal(back.role, JQ_ROLE_SUBMIT);
    assert_string_equal(back.owner, "alice");
    /* a bare flag (a parked request run again) reads as `read` */
    jq_identity_from_frame(f, 1, &back);
    assert_int_equal(back.role, JQ_ROLE_READ);
    assert_string_equal(back.owner, "");
    /* a role byte out of range is `read` too, never more */
    f[1] = 99;
    jq_identity_from_frame(f, n, &back);
    assert_int_equal(back.role, JQ_ROLE_READ);
}

static int accept_all(const msgpack_object *a, char *e, size_t l)
{
    (void)a, (void)e, (void)l;
    return 0;
}
static const jq_opdef_t def = {.name = "t.op", .validate = accept_all};

static jq_job_t *make_job(const char *owner)
{
    jq_job_t *job = jq_job_new(5, 1, 1000000);
    assert_non_null(job);
    jq_op_set_name(&job->ops[0], &def, NULL, 0);
    assert_int_equal(jq_blob_set(&job->ops[0].args, "\x80", 1), 0); /* {} */
    job->change_serial = 1;
    if (owner)
        job->owner = strdup(owner);
    return job;
}

static void test_owner_stored_and_in_the_submit_record(void **state)
{
    (void)state;
    char err[256];
    for (int k = 0; k < 2; k++) {
        jq_job_t *job = make_job(k ? "uid:1000" : NULL);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        jq_job_encode(&sb, job);
        jq_job_t *back = jq_job_decode(sb.data, sb.size, err, sizeof err);
        if (!back)
            fail_msg("decode: %s", err);
        if (k)
            assert_string_equal(back->owner, "uid:1000");
        else /* a job stored before owners: none */
            assert_null(back->owner);
        jq_delta_t d;
        jq_delta_init(&d, job);
        jq_change_t *c = jq_change_encode(job, JQ_CHANGE_SUBMIT, &d, 2000000);
        assert_non_null(c);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        assert_int_equal(msgpack_unpack_next(&up, c->data, c->len, NULL), MSGPACK_UNPACK_SUCCESS);
        const msgpack_object *o = wire_map_get(&up.data, "owner");
        if (k)
            assert_true(wire_str_eq(o, "uid:1000"));
        else
            assert_null(o);
        /* recovery rebuilds the job from that record: with its owner */
        jq_job_t *rebuilt = jq_job_from_submit_record(&up.data, 5, err, sizeof err);
        if (!rebuilt)
            fail_msg("from submit record: %s", err);
        if (k)
            assert_string_equal(rebuilt->owner, "uid:1000");
        else
            assert_null(rebuilt->owner);
        jq_job_destroy(&rebuilt);
        msgpack_unpacked_destroy(&up);
        free(c);
        msgpack_sbuffer_destroy(&sb);
        jq_job_destroy(&back);
        jq_job_destroy(&job);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_libjobq_reads_czmq_certificates(void **state)
{
    (void)state;
    char dir[] = "/tmp/jobq-sec-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pub[256], sec[256], srv[256];
    snprintf(pub, sizeof pub, "%s/a.key", dir);
    snprintf(sec, sizeof sec, "%s/a.key_secret", dir);
    snprintf(srv, sizeof srv, "%s/server.key", dir);
    char zpub[41], zsec[41];
    assert_int_equal(zmq_curve_keypair(zpub, zsec), 0);
    char text[1024];
    snprintf(text, sizeof text,
             "#   ZeroMQ CURVE **Secret** Certificate\n#   a comment: public-key = \"x\"\n\n"
             "metadata\n    name = \"a\"\n    role = \"submit\"\ncurve\n"
             "    public-key = \"%s\"\n    secret-key = \"%s\"\n", zpub, zsec);
    write_file(sec, text);
    snprintf(text, sizeof text, "metadata\n    name = \"a\"\ncurve\n    public-key = \"%s\"\n",
             zpub);
    write_file(pub, text);
    write_file(srv, text);
    jobq_curve_t c;
    char err[256];
    /* NAME.key finds NAME.key_secret beside it */
    if (jobq_curve_load(&c, pub, srv, err, sizeof err) < 0)
        fail_msg("%s", err);
    assert_true(c.set);
    assert_string_equal(c.pub, zpub);
    assert_string_equal(c.sec, zsec);
    assert_string_equal(c.server, zpub);
    /* the server key as Z85 text */
    assert_int_equal(jobq_curve_load(&c, sec, zpub, err, sizeof err), 0);
    assert_string_equal(c.server, zpub);
    /* no keys: nothing set; half of them: refused */
    assert_int_equal(jobq_curve_load(&c, NULL, NULL, err, sizeof err), 0);
    assert_false(c.set);
    assert_int_equal(jobq_curve_load(&c, pub, NULL, err, sizeof err), -1);
    /* a public file alone cannot be a client's key */
    unlink(sec);
    assert_int_equal(jobq_curve_load(&c, pub, srv, err, sizeof err), -1);
    assert_non_null(strstr(err, "no secret key"));
    unlink(pub);
    unlink(srv);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_endpoints),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_identity_frame),
        cmocka_unit_test(test_owner_stored_and_in_the_submit_record),
        cmocka_unit_test(test_libjobq_reads_czmq_certificates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
