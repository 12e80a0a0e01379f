/* jobq_worker_send.c: libjobq's worker API, the part that declares
 * opcodes and sends for a lease (feedback, done, fail); see jobq.h,
 * "Workers", and jobq_worker.c for the connection it sends on.
 *
 * Every send is checked against the leases the worker holds (a lease
 * revoked, or lost with its connection, is not held any more): nothing
 * reaches the daemon for a lease the worker was told is gone. Strings go
 * through jobq_utf8_clean, because the daemon refuses a whole message for
 * one string that is not UTF-8 and handler output often is not.
 */
#include "jobq_worker_int.h"
#include "wire.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq_json.h"

/* ------------------------------------------------------------------ */
/* Declarations */

static bool valid_opcode_name(const char *s)
{
    return wire_opcode_name_ok(s, strlen(s));
}

/* Checks one declared argument; returns its copy for the hello, or NULL
 * with the status set. */
static json_t *check_arg(jobq_worker_t *self, const char *op, size_t i, const json_t *a)
{
    if (!json_is_object(a) || !json_is_string(json_object_get(a, "name")) ||
        json_string_length(json_object_get(a, "name")) == 0) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "opcode %s: argument %zu is not an object with a non-empty \"name\"", op, i + 1);
        return NULL;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)a, key, val) {
        bool ok = strcmp(key, "name") == 0 ||
                  ((strcmp(key, "type") == 0 || strcmp(key, "description") == 0) &&
                   json_is_string(val)) ||
                  (strcmp(key, "required") == 0 && json_is_boolean(val));
        if (!ok) {
            jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                      "opcode %s, argument %s: %s \"%s\" (an argument has \"name\", \"type\", "
                      "\"required\" (a boolean) and \"description\")",
                      op, json_string_value(json_object_get(a, "name")),
                      strcmp(key, "type") == 0 || strcmp(key, "description") == 0 ||
                              strcmp(key, "required") == 0
                          ? "wrong type of"
                          : "unknown key",
                      key);
            return NULL;
        }
    }
    return json_deep_copy(a);
}

int jobq_worker_add_opcode(jobq_worker_t *self, const char *name, const json_t *decl)
{
    assert(self);
    if (!name || !valid_opcode_name(name)) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "opcode name \"%.80s\" is not 1 to %d letters, digits and \"._-\"",
                  name ? name : "", JOBQ_MAX_OP_NAME);
        return -1;
    }
    if (self->started) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s: declared after connecting", name);
        return -1;
    }
    size_t n = json_array_size(self->opcodes);
    if (n >= JOBQ_WORKER_MAX_OPCODES) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s: more than %d opcodes", name,
                  JOBQ_WORKER_MAX_OPCODES);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(self->opcodes, i);
        const char *dn = json_is_string(d) ? json_string_value(d)
                                           : json_string_value(json_object_get(d, "name"));
        if (strcmp(dn, name) == 0) {
            jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s declared twice", name);
            return -1;
        }
    }
    if (decl && !json_is_object(decl)) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s: the declaration is not an object",
                  name);
        return -1;
    }
    json_t *out = json_pack("{s:s}", "name", name);
    if (!out) {
        jw_set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)decl, key, val) {
        json_t *copy = NULL;
        if (strcmp(key, "description") == 0 && json_is_string(val)) {
            copy = json_copy(val);
        } else if (strcmp(key, "timeout") == 0 && json_is_number(val) &&
                   json_number_value(val) > 0 && isfinite(json_number_value(val))) {
            copy = json_copy(val);
        } else if (strcmp(key, "args") == 0 && json_is_array(val)) {
            copy = json_array();
            for (size_t i = 0; copy && i < json_array_size(val); i++) {
                json_t *a = check_arg(self, name, i, json_array_get(val, i));
                if (!a) {
                    json_decref(copy);
                    json_decref(out);
                    return -1;
                }
                json_array_append_new(copy, a);
            }
        } else {
            bool known = strcmp(key, "description") == 0 || strcmp(key, "timeout") == 0 ||
                         strcmp(key, "args") == 0;
            jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                      known ? "opcode %s: \"%s\" has the wrong type (\"description\": string, "
                              "\"args\": list, \"timeout\": seconds > 0)"
                            : "opcode %s: unknown key \"%s\" (a declaration has "
                              "\"description\", \"args\" and \"timeout\")",
                      name, key);
            json_decref(out);
            return -1;
        }
        if (!copy || json_object_set_new(out, key, copy) < 0) {
            json_decref(out);
            jw_set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
            return -1;
        }
    }
    if (json_array_append_new(self->opcodes, out) < 0) {
        jw_set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
        return -1;
    }
    jw_set_ok(self);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Sending for a lease */

/* The lease must be held on a welcomed connection; -1 with the status set
 * otherwise. */
static held_t *held_or_fail(jobq_worker_t *self, const jobq_lease_t *lease, const char *what)
{
    held_t *h = lease ? jw_find_held(self, lease) : NULL;
    if (!h) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "%s: lease job %llu op %llu attempt %llu is not held (finished, revoked, or "
                  "never assigned)",
                  what, lease ? (unsigned long long)lease->job : 0ULL,
                  lease ? (unsigned long long)lease->op : 0ULL,
                  lease ? (unsigned long long)lease->attempt : 0ULL);
        return NULL;
    }
    return h;
}

int jobq_worker_feedback(jobq_worker_t *self, const jobq_lease_t *lease, const char *type,
                         const char *message, int timeout_ms)
{
    jobq_feedback_entry_t e = {type, message ? message : "", message ? strlen(message) : 0};
    return jobq_worker_feedback_entries(self, lease, &e, 1, timeout_ms);
}

/* Starts a message about a lease: {v, type, job, op, attempt, ...};
 * nkeys counts the keys after v and type (job, op and attempt included).
 * The caller packs the rest and destroys sb. */
static void start_lease_message(msgpack_sbuffer *sb, msgpack_packer *pk, const char *type,
                                size_t nkeys, const jobq_lease_t *lease)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    jw_begin_message(pk, type, nkeys);
    jw_pack_lease(pk, lease);
}

int jobq_worker_feedback_entries(jobq_worker_t *self, const jobq_lease_t *lease,
                                 const jobq_feedback_entry_t *entries, size_t n,
                                 int timeout_ms)
{
    assert(self);
    if (!held_or_fail(self, lease, "feedback"))
        return -1;
    if (n == 0 || n > JOBQ_WORKER_MAX_ENTRIES || !entries) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "feedback: 1 to %d entries, not %zu",
                  JOBQ_WORKER_MAX_ENTRIES, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *t = entries[i].type;
        size_t tl = t ? strlen(t) : 0;
        if (tl == 0 || tl > JOBQ_WORKER_MAX_ENTRY_TYPE) {
            jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "feedback: an entry's type has 1 to %d bytes",
                      JOBQ_WORKER_MAX_ENTRY_TYPE);
            return -1;
        }
    }
    if (self->resuming && self->state != STATE_READY) {
        /* Between a cluster's leaders: for the next one, if it resumes
         * the lease. Busy: the caller sends it again. */
        jw_set_error(self, JOBQ_ERR_BUSY,
                     "not connected to a leader yet (the lease is to be resumed): send it "
                     "again");
        return -1;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_lease_message(&sb, &pk, "feedback", 4, lease);
    wire_pack_cstr(&pk, "entries");
    msgpack_pack_array(&pk, n);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t tl, ml;
        char *t = jobq_utf8_clean(entries[i].type, strlen(entries[i].type),
                                  JOBQ_WORKER_MAX_ENTRY_TYPE, &tl);
        char *m = jobq_utf8_clean(entries[i].message ? entries[i].message : "",
                                  entries[i].message ? entries[i].len : 0, JOBQ_MAX_LOG_MESSAGE,
                                  &ml);
        if (t && m) {
            msgpack_pack_array(&pk, 2);
            wire_pack_strn(&pk, t, tl);
            wire_pack_strn(&pk, m, ml);
        } else {
            jw_set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
            rc = -1;
        }
        free(t);
        free(m);
    }
    if (rc == 0)
        rc = jw_send_frame(self, &sb, timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0)
        jw_set_ok(self);
    return rc;
}

/* Sends done for a held lease with the body packed by the caller, and
 * lets the lease go once sent. */
static int send_done(jobq_worker_t *self, const jobq_lease_t *lease, msgpack_sbuffer *sb,
                     int timeout_ms)
{
    if (self->resuming && self->state != STATE_READY) {
        /* Between a cluster's leaders: the lease may go on under the next
         * one, which must get this done. Busy: the caller sends it again. */
        jw_set_error(self, JOBQ_ERR_BUSY,
                     "not connected to a leader yet (the lease is to be resumed): send it "
                     "again");
        return -1;
    }
    int rc = jw_send_frame(self, sb, timeout_ms);
    if (rc == 0) {
        held_t *h = jw_find_held(self, lease);
        if (h)
            jw_drop_held(self, h);
        jw_keep_done(self, lease, sb);
        jw_set_ok(self);
    }
    return rc;
}

int jobq_worker_done(jobq_worker_t *self, const jobq_lease_t *lease, const json_t *result,
                     int timeout_ms)
{
    assert(self);
    if (!held_or_fail(self, lease, "done"))
        return -1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_lease_message(&sb, &pk, "done", 5, lease);
    wire_pack_cstr(&pk, "ok");
    msgpack_pack_true(&pk);
    wire_pack_cstr(&pk, "result");
    char err[128];
    int rc = 0;
    if (!result)
        msgpack_pack_nil(&pk);
    else if (jobq_json_to_msgpack(&pk, result, JOBQ_JSON_MAX_DEPTH, err, sizeof err) < 0) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "done: the result cannot be sent: %s", err);
        rc = -1;
    }
    if (rc == 0)
        rc = send_done(self, lease, &sb, timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int jobq_worker_fail(jobq_worker_t *self, const jobq_lease_t *lease, const char *message,
                     int timeout_ms)
{
    assert(self);
    if (!held_or_fail(self, lease, "fail"))
        return -1;
    size_t ml;
    char *m = jobq_utf8_clean(message ? message : "", message ? strlen(message) : 0,
                              JOBQ_MAX_LOG_MESSAGE, &ml);
    if (!m) {
        jw_set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
        return -1;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_lease_message(&sb, &pk, "done", 5, lease);
    wire_pack_cstr(&pk, "ok");
    msgpack_pack_false(&pk);
    wire_pack_cstr(&pk, "error");
    wire_pack_strn(&pk, m, ml);
    free(m);
    int rc = send_done(self, lease, &sb, timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
