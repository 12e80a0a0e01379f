/* client.c: a program built against an installed libjobq, the way a user
 * builds one, by tests/python/test_install.py (with pkg-config, shared and
 * static, and with find_package through consumer/CMakeLists.txt). It pings
 * the daemon at argv[1], submits a test.delay job, follows it with
 * wait_for_job_change until it ends and prints "job ID STATUS". Uses a
 * name of wire.h too, so the installed header set must be complete. */
#include <jobq.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int fail(jobq_client_t **c, const char *what)
{
    fprintf(stderr, "client: %s: %s: %s\n", what, jobq_code_name(jobq_client_status(*c)),
            jobq_client_reason(*c));
    jobq_client_destroy(c);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: client ENDPOINT\n");
        return 2;
    }
    jobq_client_t *c = jobq_client_new(argv[1]);
    if (!c) {
        fprintf(stderr, "client: cannot connect to %s\n", argv[1]);
        return 1;
    }
    json_t *pong = jobq_ping(c, 10000);
    if (!pong)
        return fail(&c, "ping");
    json_int_t protocol = json_integer_value(json_object_get(pong, "protocol"));
    json_decref(pong);
    if (protocol != JOBQ_PROTOCOL_VERSION) {
        fprintf(stderr, "client: daemon speaks protocol %" JSON_INTEGER_FORMAT "\n", protocol);
        jobq_client_destroy(&c);
        return 1;
    }

    json_t *ops = json_pack("[{s:s, s:{s:f}}]", "op", "test.delay", "args", "duration", 0.05);
    uint64_t id = 0;
    int rc = jobq_submit_job(c, ops, false, &id, 10000);
    json_decref(ops);
    if (rc)
        return fail(&c, "submit_job");

    json_t *fields = json_pack("[s]", "status");
    json_t *prev = NULL;
    const char *status = "";
    for (int round = 0; round < 100; round++) {
        json_t *res = NULL;
        if (jobq_wait_for_job_change(c, id, fields, prev, -1, 5, 10000, &res)) {
            json_decref(fields);
            json_decref(prev);
            return fail(&c, "wait_for_job_change");
        }
        if (json_is_array(res)) {
            json_decref(prev);
            prev = json_incref(json_array_get(res, 0));
            status = json_string_value(json_array_get(prev, 0));
        }
        json_decref(res);
        if (status && (!strcmp(status, "success") || !strcmp(status, "error") ||
                       !strcmp(status, "canceled")))
            break;
    }
    printf("job %" PRIu64 " %s\n", id, status ? status : "?");
    json_decref(fields);
    json_decref(prev);
    jobq_client_destroy(&c);
    return 0;
}
