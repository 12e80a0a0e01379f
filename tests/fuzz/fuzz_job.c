/* fuzz_job.c: libFuzzer target for what the store reads back and applies:
 * the stored job decoder jq_job_decode and the submit-record decoder
 * jq_job_from_submit_record (queue/jobcodec.c), then change records
 * applied with jq_mirror_apply (queue/mirror.c; queue/change.c only
 * encodes) — the store thread's and the waiters' decoder.
 *
 * The whole input is decoded as a stored job first. Then it is read as a
 * sequence of msgpack values: the first a stored job (or a submit record),
 * each one after it a change record applied to the job in turn, as the
 * store applies a batch. Checked beyond the
 * sanitizers: a job that decoded (or came of records) encodes with
 * jq_job_encode into bytes that decode again. */
#include "jobcodec.h"
#include "mirror.h"
#include "scan.h"
#include "wire.h"

#include <msgpack/unpack_define.h>

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_log(void *ctx, uint32_t op_index, const msgpack_object *entry)
{
    (void)ctx, (void)op_index, (void)entry;
    return 0;
}

static void round_trip(const jq_job_t *job)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    jq_job_encode(&sb, job);
    char err[256];
    jq_job_t *again = jq_job_decode(sb.data, sb.size, err, sizeof err);
    if (!again) {
        fprintf(stderr, "fuzz_job: an encoded job does not decode: %s\n", err);
        abort();
    }
    jq_job_destroy(&again);
    msgpack_sbuffer_destroy(&sb);
}

/* The length of the msgpack value at buf (len bytes, more may follow), or
 * 0 when the pre-scan refuses it: the harness hands msgpack-c nothing
 * unscanned, as the daemon does. */
static size_t value_len(const char *buf, size_t len)
{
    jq_scan_limits_t limits = {.max_depth = MSGPACK_EMBED_STACK_SIZE};
    jq_scan_result_t sr;
    if (jq_scan(buf, len, &limits, &sr))
        return len;
    return sr.status == JQ_SCAN_TRAILING ? sr.offset : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    char err[256];
    /* The whole input as one stored value, unscanned, as the store reads
     * a record back. */
    jq_job_t *stored = jq_job_decode(buf, size, err, sizeof err);
    if (stored)
        round_trip(stored);
    jq_job_destroy(&stored);
    size_t first = value_len(buf, size);
    if (!first)
        return 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, buf, first, NULL) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        return 0;
    }
    jq_job_t *jobs[2];
    jobs[0] = jq_job_decode(buf, first, err, sizeof err);
    /* The store passes the record's job id (its key) along. */
    int64_t id = 1;
    if (!wire_get_int(wire_map_get(&up.data, "job"), &id) || id <= 0)
        id = 1;
    jobs[1] = jq_job_from_submit_record(&up.data, (uint64_t)id, err, sizeof err);
    for (int k = 0; k < 2; k++) {
        if (!jobs[k])
            continue;
        /* Each record applies to both jobs; a fresh unpack for each. */
        bool whole = true;
        for (size_t off = first, n; whole && off < size && (n = value_len(buf + off, size - off));
             off += n) {
            msgpack_unpacked rec;
            msgpack_unpacked_init(&rec);
            whole = msgpack_unpack_next(&rec, buf + off, n, NULL) == MSGPACK_UNPACK_SUCCESS &&
                    jq_mirror_apply(jobs[k], &rec.data, JQ_MIRROR_ALL, on_log, NULL) >= 0;
            msgpack_unpacked_destroy(&rec);
        }
        /* A record that did not apply may have left the job half updated:
         * the store fails the batch and throws that copy away. */
        if (whole)
            round_trip(jobs[k]);
        jq_job_destroy(&jobs[k]);
    }
    msgpack_unpacked_destroy(&up);
    return 0;
}
