/* fuzz_request.c: libFuzzer target for a client request as jobqd gets it:
 * the pre-scan (proto/scan.c), msgpack-c's unpacker, wire_request_parse
 * (proto/wire.c) and the method dispatch and handlers (broker/handlers.c,
 * handle_*.c) — all through jq_dispatch, the function the handler threads
 * call on each request body — against an in-process daemon whose store
 * commits for real (fuzz_daemon.h). A parked wait_for_job_change is taken
 * over by the waiters as the loop would. The input is one request body.
 *
 * Checked beyond the sanitizers: every answer is one complete msgpack
 * reply that wire_reply_parse accepts, carrying the request's id. */
#include "fuzz_daemon.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    wire_reply_t rep;
    if (msgpack_unpack_next(&up, sb->data, sb->size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != sb->size || wire_reply_parse(&up.data, &rep) != 0 || rep.keepalive) {
        fprintf(stderr, "fuzz_request: the reply (%zu bytes) is not one reply map\n", sb->size);
        abort();
    }
    msgpack_unpacked_destroy(&up);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jq_daemon_t *d = fuzz_daemon();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t hold;
    /* An admin caller reaches every method; the role checks themselves are
     * unit.security's. */
    static const jq_identity_t admin = {.role = JQ_ROLE_ADMIN, .owner = "uid:0"};
    jq_waiter_t *w = jq_dispatch(d, &admin, (const char *)data, size, &sb, &hold);
    if (w)
        fuzz_daemon_park(w);
    else
        check_reply(&sb);
    msgpack_sbuffer_destroy(&sb);
    fuzz_daemon_settle();
    return 0;
}
