/* make_seeds.c: writes the fuzz targets' seed inputs, made from the tree
 * at build or run time rather than kept as binary files:
 *
 *   fuzz_seeds VECTORS_DIR CONFIG_FILE OUT_DIR
 *
 * OUT_DIR/request  every request vector (tests/vectors/ *_request.msgpack),
 *                  and a wait_for_job_change that parks
 * OUT_DIR/worker   every worker message vector (worker_*.msgpack)
 * OUT_DIR/job      stored jobs jq_job_encode makes of the event vectors'
 *                  submit records, each alone and followed by the vectors'
 *                  change records; the submit records alone
 * OUT_DIR/config   the example config file, the same with every option
 *                  uncommented, and a few handmade files and command lines
 * OUT_DIR/http_token  tokens made under fuzz_http_token.c's fixed keys (a
 *                  key token, an ipc token, an expired one) and claims
 *                  texts (its odd first byte)
 *
 * Exit status 0, or 1 with a message when a path cannot be read or
 * written. */
#include "jobcodec.h"
#include "wire.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *out_dir;
static int failures;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n == cap) {
            char *g = realloc(buf, cap = cap ? cap * 2 : 4096);
            if (!g) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = g;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

static void put(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        failures++;
        return;
    }
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        failures++;
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* The "change" record of event vector buf, packed on its own into sb. */
static bool change_of(const char *buf, size_t len, msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    bool ok = false;
    if (msgpack_unpack_next(&up, buf, len, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *c = wire_map_get(&up.data, "change");
        if (c && c->type == MSGPACK_OBJECT_MAP) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
            msgpack_pack_object(&pk, *c);
            ok = true;
        }
    }
    msgpack_unpacked_destroy(&up);
    return ok;
}

/* The job of submit record rec (packed), given job id id, encoded into sb. */
static bool job_of(const msgpack_sbuffer *rec, uint64_t id, msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    char err[256];
    jq_job_t *job = NULL;
    if (msgpack_unpack_next(&up, rec->data, rec->size, NULL) == MSGPACK_UNPACK_SUCCESS)
        job = jq_job_from_submit_record(&up.data, id, err, sizeof err);
    msgpack_unpacked_destroy(&up);
    if (!job)
        return false;
    jq_job_encode(sb, job);
    jq_job_destroy(&job);
    return true;
}

static uint64_t job_id_of(const msgpack_sbuffer *rec)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int64_t id = 1;
    if (msgpack_unpack_next(&up, rec->data, rec->size, NULL) != MSGPACK_UNPACK_SUCCESS ||
        !wire_get_int(wire_map_get(&up.data, "job"), &id) || id <= 0)
        id = 1;
    msgpack_unpacked_destroy(&up);
    return (uint64_t)id;
}

static void vectors(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        perror(dir);
        failures++;
        return;
    }
    /* The submit record every job seed starts from. */
    msgpack_sbuffer submit;
    msgpack_sbuffer_init(&submit);
    char path[4096];
    snprintf(path, sizeof path, "%s/event_submit.msgpack", dir);
    size_t len;
    char *buf = slurp(path, &len);
    if (!buf || !change_of(buf, len, &submit)) {
        fprintf(stderr, "%s: no submit record\n", path);
        failures++;
    }
    free(buf);
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        bool request = ends_with(name, "_request.msgpack");
        bool worker = !strncmp(name, "worker_", 7) && ends_with(name, ".msgpack");
        bool event = !strncmp(name, "event_", 6) && ends_with(name, ".msgpack");
        snprintf(path, sizeof path, "%s/%s", dir, name);
        buf = (request || worker || event) ? slurp(path, &len) : NULL;
        if ((request || worker || event) && !buf) {
            perror(path);
            failures++;
        }
        if (buf && request)
            put("request", name, buf, len);
        if (buf && worker)
            put("worker", name, buf, len);
        msgpack_sbuffer rec, job;
        msgpack_sbuffer_init(&rec);
        msgpack_sbuffer_init(&job);
        if (buf && event && submit.size && change_of(buf, len, &rec)) {
            char seed[512];
            snprintf(seed, sizeof seed, "record_%s", name);
            put("job", seed, rec.data, rec.size); /* a submit record or not */
            /* The stored job this record applies to, then the record. */
            if (job_of(&submit, job_id_of(&rec), &job)) {
                snprintf(seed, sizeof seed, "job_%s", name);
                put("job", seed, job.data, job.size);
                msgpack_sbuffer_write(&job, rec.data, rec.size);
                snprintf(seed, sizeof seed, "job_then_%s", name);
                put("job", seed, job.data, job.size);
            }
        }
        msgpack_sbuffer_destroy(&rec);
        msgpack_sbuffer_destroy(&job);
        free(buf);
        free(names[i]);
    }
    free(names);
    msgpack_sbuffer_destroy(&submit);
}

/* A request no vector makes: a wait that parks. The vectors' waits name
 * states job 1 is not in when the request target runs them (there no
 * executor runs jobs: they stay queued), so they are answered at once. */
static void handmade_requests(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_request_begin(&pk, 30, "wait_for_job_change");
    msgpack_pack_map(&pk, 4);
    wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 1);
    wire_pack_cstr(&pk, "fields");
    msgpack_pack_array(&pk, 1);
    wire_pack_cstr(&pk, "status");
    wire_pack_cstr(&pk, "prev_job_info");
    msgpack_pack_array(&pk, 1);
    wire_pack_cstr(&pk, "queued");
    wire_pack_cstr(&pk, "timeout");
    msgpack_pack_double(&pk, 1.0);
    put("request", "wait_for_job_change_parks_request.msgpack", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* Handmade config inputs: a file, then NUL-separated arguments. */
static const struct {
    const char *name;
    const char *data;
    size_t len;
} handmade[] = {
#define SEED(name, text) {name, text, sizeof text - 1}
    SEED("spaces.conf", "  shards=8\n\tmax-jobs   =  100 # comment\nsalvage\nverbose yes\n"),
    SEED("crlf.conf", "sync = batch\r\nsync-interval = 0.5\r\n"),
    SEED("bad.conf", "no-such-option = 1\n"),
    SEED("empty_value.conf", "data-dir =\n"),
    SEED("args.input", "listen = tcp://127.0.0.1:5555\n\0--shards\0" "4\0-v\0--max-jobs=10"),
    SEED("worker.input", "worker-opcode = a.b\n\0--worker-lease\0" "0.5\0--worker-heartbeat\0" "1"),
#undef SEED
};

static void configs(const char *example)
{
    size_t len;
    char *buf = slurp(example, &len);
    if (!buf) {
        perror(example);
        failures++;
        return;
    }
    put("config", "example.conf", buf, len);
    /* Every "# name = value" line of the example, uncommented. */
    char *out = malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; out && i < len;) {
        size_t end = i;
        while (end < len && buf[end] != '\n')
            end++;
        size_t from = i;
        if (end - i > 2 && buf[i] == '#' && buf[i + 1] == ' ' && buf[i + 2] >= 'a' &&
            buf[i + 2] <= 'z' && memchr(buf + i, '=', end - i))
            from = i + 2;
        memcpy(out + o, buf + from, end - from);
        o += end - from;
        if (end < len)
            out[o++] = '\n';
        i = end + 1;
    }
    if (out)
        put("config", "example_uncommented.conf", out, o);
    free(out);
    free(buf);
    for (size_t i = 0; i < sizeof handmade / sizeof *handmade; i++)
        put("config", handmade[i].name, handmade[i].data, handmade[i].len);
}

/* fuzz_http_token's inputs: a byte (even: a token follows; odd: claims
 * text it signs), then the rest. The tokens were made with the target's
 * fixed keys, expiring 2100-01-01 (the expired one 2023-11-14). */
static const struct {
    const char *name;
    const char *data;
    size_t len;
} token_seeds[] = {
#define SEED(name, text) {name, text, sizeof text - 1}
    SEED("key_token", "\0jq1.a2V5IDQxMDI0NDQ4MDAgKV4mciFHKFM2dVNCMSg6PUtRQjFndUpjbFVNeFYzWzxCNWRA"
                      "JF59QQ.sqeCThldHPw5x2eH7k5V4lAKZniqnuUynuc0W1lVKMk"),
    SEED("ipc_token", "\0jq1.aXBjIDQxMDI0NDQ4MDAgYWRtaW4gdWlkOjA."
                      "xNp-OZAExqFDJtpTBSf3JLOI9A-7-oXk3CoaYo86sQw"),
    SEED("expired_token", "\0jq1.a2V5IDE3MDAwMDAwMDAgKV4mciFHKFM2dVNCMSg6PUtRQjFndUpjbFVNeFYz"
                          "WzxCNWRAJF59QQ.0uoLNQZxExYo-JQCDrvJ-6_OPsup5JrdR5gMS7sPsgU"),
    SEED("not_a_token", "\0jq1.a.b"),
    SEED("key_claims", "\1key 4102444800 )^&r!G(S6uSB1(:=KQB1guJclUMxV3[<B5d@$^}A"),
    SEED("ipc_claims", "\1ipc 4102444800 submit uid:1000"),
    SEED("worker_claims", "\1ipc 4102444800 worker uid:1000"),
#undef SEED
};

static void http_tokens(void)
{
    for (size_t i = 0; i < sizeof token_seeds / sizeof *token_seeds; i++)
        put("http_token", token_seeds[i].name, token_seeds[i].data, token_seeds[i].len);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fuzz_seeds VECTORS_DIR CONFIG_FILE OUT_DIR\n");
        return 2;
    }
    out_dir = argv[3];
    if (mkdir(out_dir, 0755) < 0 && errno != EEXIST) {
        perror(out_dir);
        return 1;
    }
    vectors(argv[1]);
    handmade_requests();
    configs(argv[2]);
    http_tokens();
    return failures ? 1 : 0;
}
