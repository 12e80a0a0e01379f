/* fuzz_worker.c: libFuzzer target for a message on the worker endpoint:
 * jq_hub_on_message (broker/workers.c) — the pre-scan, the unpacker, the
 * envelope (v, type) and each type's decoder and handling: hello (opcode
 * declarations into the registry, queue/opreg.c), heartbeat, feedback
 * (log entries into the job), done (the opcode's end and result),
 * disconnect — against an in-process daemon (fuzz_daemon.h) and its hub,
 * without a socket (the hub's sends are dropped).
 *
 * Before the inputs, worker "A" says hello (serving fuzz.op) and holds a
 * lease: job 1 (submitted through jq_dispatch, committed, picked up as an
 * executor thread picks it up and handed to the hub), opcode 0, attempt 1
 * — what the feedback and done vectors name. Each input is one message
 * body, handed to the hub from A, from an unknown peer B, and from A
 * again. When the input ended the lease (done, disconnect, a new hello),
 * the hub is stopped and the daemon rebuilt with a new store, so the next
 * input finds job 1 leased to A again. */
#include "fuzz_daemon.h"
#include "workers.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A peer is the hub's socket index (one byte) and the ROUTER's id. */
static const unsigned char worker_a[] = "\0fuzz-worker-a", peer_b[] = "\0fuzz-peer-b";
static jq_hub_t *hub;

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_worker: %s\n", why);
    abort();
}

static void pack_str(msgpack_packer *pk, const char *key, const char *val)
{
    wire_pack_cstr(pk, key);
    wire_pack_cstr(pk, val);
}

/* {"v":1,"type":"hello","name":"fuzz","capacity":2,"opcodes":["fuzz.op"]} */
static void say_hello(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    wire_pack_cstr(&pk, "v");
    msgpack_pack_int(&pk, JOBQ_PROTOCOL_VERSION);
    pack_str(&pk, "type", "hello");
    pack_str(&pk, "name", "fuzz");
    wire_pack_cstr(&pk, "capacity");
    msgpack_pack_int(&pk, 2);
    wire_pack_cstr(&pk, "opcodes");
    msgpack_pack_array(&pk, 1);
    wire_pack_cstr(&pk, "fuzz.op");
    jq_hub_on_message(hub, worker_a, sizeof worker_a - 1, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* A client submits job 1, [fuzz.op {}], through the request path. */
static void submit(jq_daemon_t *d)
{
    msgpack_sbuffer sb, reply;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&reply);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_request_begin(&pk, 1, "submit_job");
    msgpack_pack_map(&pk, 1);
    wire_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "op", "fuzz.op");
    wire_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 0);
    uint64_t hold;
    static const jq_identity_t admin = {.role = JQ_ROLE_ADMIN, .owner = "uid:0"};
    if (jq_dispatch(d, &admin, sb.data, sb.size, &reply, &hold))
        fail("submit_job parked");
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&reply);
}

/* Hello, submit, and what an executor and the loop do until A holds the
 * lease of job 1. */
static void setup(void)
{
    jq_daemon_t *d = fuzz_daemon();
    if (!(hub = jq_hub_new(d, NULL)))
        fail("out of memory");
    say_hello();
    submit(d);
    fuzz_daemon_sync(); /* an executor runs a job once its submit is committed */
    uint64_t run_id = 0, kicked[8], durable;
    size_t nkicked;
    jq_sched_event_t ev = JQ_EV_TIMEOUT;
    /* The scheduler learns of the commit from the store thread's hook,
     * just after the store's count moved: a bounded wait, as an executor's. */
    int64_t until = jq_now_mono() + 5000000;
    while (ev != JQ_EV_RUN && jq_now_mono() < until)
        ev = jq_sched_wait(d->sched, 0, jq_now_mono(), until, 0, &run_id, kicked, 8, &nkicked,
                           &durable);
    if (ev != JQ_EV_RUN || run_id != 1)
        fail("job 1 was not handed to the executor");
    jq_sched_to_remote(d->sched, run_id); /* its opcode is a worker's */
    jq_hub_on_inbox(hub);                 /* the offer: assigned to A */
    fuzz_daemon_sync();                   /* the running record committed */
    jq_hub_on_durable(hub, jq_store_durable(d->store)); /* the assignment goes out */
    if (jq_hub_running(hub) != 1)
        fail("worker A does not hold the lease of job 1");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!hub)
        setup();
    const char *body = (const char *)data;
    jq_hub_on_message(hub, worker_a, sizeof worker_a - 1, body, size);
    jq_hub_on_message(hub, peer_b, sizeof peer_b - 1, body, size);
    jq_hub_on_message(hub, worker_a, sizeof worker_a - 1, body, size);
    jq_hub_on_inbox(hub); /* what the input's changes offered or kicked */
    jq_hub_tick(hub, jq_now_mono());
    if (jq_hub_running(hub) != 1 || fuzz_daemon_grown()) {
        jq_hub_stop(hub);
        jq_hub_destroy(&hub);
        fuzz_daemon_reset();
    }
    fuzz_daemon_settle();
    return 0;
}
