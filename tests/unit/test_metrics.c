/* test_metrics.c: the table's opcode meter (queue/meter.c) and the
 * /metrics renderer (broker/metrics.c).
 *
 * The meter: after every transition of a random walk over many jobs its
 * gauges equal a recount of the opcodes' statuses (so none goes negative),
 * the jobs finished equal the final jobs, histograms add up; loaded jobs
 * count without being taken for this run's work; names past the slot limit
 * share one slot. The renderer: every sample belongs to a family announced
 * by # HELP and # TYPE just before it, names carry the jobq_ prefix,
 * counters end in _total, histogram buckets are cumulative and end in
 * +Inf = _count, label values are escaped, and the figures are the
 * table's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon.h"
#include "hubsnap.h"
#include "meter.h"
#include "metrics.h"
#include "opdef.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0 1700000000000000LL

static const jq_opdef_t def_a = {.name = "t.a"};
static const jq_opdef_t def_b = {.name = "t.b"};

static jq_job_t *make_job(uint64_t id, uint32_t nops, int64_t now)
{
    jq_job_t *job = jq_job_new(id, nops, now);
    assert_non_null(job);
    for (uint32_t i = 0; i < nops; i++)
        jq_op_set_name(&job->ops[i], i % 2 ? &def_b : &def_a, NULL, 0);
    return job;
}

static void insert(jq_table_t *t, jq_job_t *job, int64_t now)
{
    jq_shard_t *sh = jq_table_shard_for(t, job->id);
    jq_change_t *rec = jq_shard_submit_record(job, now);
    assert_non_null(rec);
    assert_true(jq_table_reserve(t, 1000000));
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_insert(sh, job, rec), 0);
    jq_shard_wrunlock(sh);
}

/* The meter's slot of name, or -1. */
static int slot_named(jq_meter_t *m, const char *name, jq_meter_op_snap_t *out)
{
    for (unsigned i = 0; i < jq_meter_count(m); i++)
        if (jq_meter_read(m, i, out) && strcmp(out->name, name) == 0)
            return (int)i;
    return -1;
}

static void check_histo(const jq_histo_snap_t *h, unsigned nbounds)
{
    for (unsigned i = 1; i <= nbounds; i++)
        assert_true(h->cum[i] >= h->cum[i - 1]);
    assert_int_equal(h->cum[nbounds], h->count);
}

/* The meter against a recount of every live job in the table. */
static void check_meter(jq_table_t *t, const uint64_t finished_ops[2][JQ_STATUS__COUNT])
{
    jq_meter_t *m = jq_table_meter(t);
    uint64_t want[2][JQ_STATUS__COUNT] = {{0}}, final_jobs[JQ_STATUS__COUNT] = {0};
    for (unsigned s = 0; s < jq_table_shard_count(t); s++) {
        jq_shard_t *sh = jq_table_shard_at(t, s);
        jq_shard_rdlock(sh);
        for (size_t i = 0; i < jq_shard_live_size(sh); i++) {
            jq_job_t *job = jq_shard_live_at(sh, i);
            for (uint32_t k = 0; k < job->nops; k++)
                want[job->ops[k].def == &def_b][job->ops[k].status]++;
            if (jq_status_final((jq_status_t)job->status))
                final_jobs[job->status]++;
        }
        jq_shard_rdunlock(sh);
    }
    const char *names[2] = {"t.a", "t.b"};
    for (int n = 0; n < 2; n++) {
        jq_meter_op_snap_t snap;
        assert_true(slot_named(m, names[n], &snap) >= 0);
        for (int st = 0; st < JQ_STATUS__COUNT; st++) {
            if (jq_status_final((jq_status_t)st))
                assert_int_equal(snap.status[st], finished_ops[n][st]);
            else
                assert_int_equal(snap.status[st], want[n][st]);
        }
        check_histo(&snap.wait, jq_meter_seconds_spec.n);
        check_histo(&snap.run, jq_meter_seconds_spec.n);
        assert_true(snap.run.count <= snap.wait.count);
    }
    uint64_t fin[JQ_STATUS__COUNT];
    jq_meter_jobs_finished(m, fin);
    for (int st = 0; st < JQ_STATUS__COUNT; st++)
        assert_int_equal(fin[st], final_jobs[st]);
}

/* ---- one job by hand: the figures of each step ---- */

static void test_one_job(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(2, NULL, NULL);
    assert_non_null(t);
    jq_meter_t *m = jq_table_meter(t);
    jq_job_t *job = make_job(1, 2, T0);
    insert(t, job, T0);
    jq_meter_op_snap_t a, b;
    assert_true(slot_named(m, "t.a", &a) >= 0 && slot_named(m, "t.b", &b) >= 0);
    assert_int_equal(a.status[JQ_QUEUED], 1);
    assert_int_equal(b.status[JQ_QUEUED], 1);

    jq_shard_t *sh = jq_table_shard_for(t, 1);
    jq_delta_t d;
    jq_shard_wrlock(sh);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 1000000, &d), 0);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 1000000);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_running(job, T0 + 3000000, &d), 0);
    assert_int_equal(jq_job_log(job, T0 + 3000000, "message", "hi", 2, 0, &d), 0);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 3000000);
    jq_shard_wrunlock(sh);
    slot_named(m, "t.a", &a);
    assert_int_equal(a.status[JQ_QUEUED], 0);
    assert_int_equal(a.status[JQ_WAITING], 0);
    assert_int_equal(a.status[JQ_RUNNING], 1);
    /* Queue wait: receipt (T0) to exec (T0 + 3 s): the 5 s bucket. */
    assert_int_equal(a.wait.count, 1);
    assert_int_equal(a.wait.sum, 3000000);
    assert_int_equal(a.wait.cum[6], 0); /* <= 1 s */
    assert_int_equal(a.wait.cum[7], 1); /* <= 5 s */
    assert_int_equal(jq_meter_log_entries(m), 1);

    jq_shard_wrlock(sh);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_finish(job, T0 + 3500000, false, NULL, &d), 0);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 3500000);
    jq_shard_wrunlock(sh);
    slot_named(m, "t.a", &a);
    slot_named(m, "t.b", &b);
    assert_int_equal(a.status[JQ_RUNNING], 0);
    assert_int_equal(a.status[JQ_ERROR], 1);
    assert_int_equal(a.run.count, 1);
    assert_int_equal(a.run.sum, 500000);
    /* The second opcode failed with the first: never ran, no histogram. */
    assert_int_equal(b.status[JQ_QUEUED], 0);
    assert_int_equal(b.status[JQ_ERROR], 1);
    assert_int_equal(b.wait.count, 0);
    assert_int_equal(b.run.count, 0);
    uint64_t fin[JQ_STATUS__COUNT];
    jq_meter_jobs_finished(m, fin);
    assert_int_equal(fin[JQ_ERROR], 1);
    assert_int_equal(fin[JQ_SUCCESS], 0);

    /* Archived: nothing moves. */
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_archive(sh, job, T0 + 4000000), 0);
    jq_shard_wrunlock(sh);
    slot_named(m, "t.a", &a);
    assert_int_equal(a.status[JQ_ERROR], 1);
    jq_table_destroy(&t);
}

/* ---- loaded at start: counted now, not as this run's work ---- */

static void test_loaded(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(1, NULL, NULL);
    jq_meter_t *m = jq_table_meter(t);
    jq_job_t *job = make_job(7, 3, T0);
    /* It ran its first opcode, and was running the second, in another run. */
    job->ops[0].status = JQ_SUCCESS;
    job->ops[0].exec_ts = T0 + 1;
    job->ops[0].end_ts = T0 + 2;
    job->ops[1].status = JQ_RUNNING;
    job->ops[1].exec_ts = T0 + 3;
    job->start_ts = T0 + 1;
    jq_shard_t *sh = jq_table_shard_at(t, 0);
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_insert_loaded(sh, job), 0);
    jq_shard_wrunlock(sh);
    jq_meter_op_snap_t a, b;
    slot_named(m, "t.a", &a);
    slot_named(m, "t.b", &b);
    assert_int_equal(a.status[JQ_SUCCESS], 0); /* not finished in this run */
    assert_int_equal(a.status[JQ_QUEUED], 1);  /* the third */
    assert_int_equal(b.status[JQ_RUNNING], 1);
    jq_shard_wrlock(sh);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_fail(job, T0 + 10, "restarted", &d), 0);
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 10);
    jq_shard_wrunlock(sh);
    slot_named(m, "t.a", &a);
    slot_named(m, "t.b", &b);
    assert_int_equal(b.status[JQ_RUNNING], 0);
    assert_int_equal(b.status[JQ_ERROR], 1);
    assert_int_equal(a.status[JQ_QUEUED], 0);
    assert_int_equal(a.status[JQ_ERROR], 1);
    /* It did not start in this run: no run time, no queue wait. */
    assert_int_equal(b.run.count, 0);
    assert_int_equal(b.wait.count, 0);
    jq_table_destroy(&t);
}

/* ---- many jobs, random transitions: gauges always match a recount ---- */

static uint64_t rnd_state = 88172645463325252ull;
static unsigned rnd(unsigned n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (unsigned)(rnd_state % n);
}

static void test_random_walk(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(4, NULL, NULL);
    enum { NJOBS = 60, STEPS = 6000 };
    uint64_t finished_ops[2][JQ_STATUS__COUNT] = {{0}};
    int64_t now = T0;
    for (uint64_t id = 1; id <= NJOBS; id++)
        insert(t, make_job(id, 1 + rnd(4), now), now);
    check_meter(t, finished_ops);
    for (int step = 0; step < STEPS; step++) {
        now += rnd(2000000);
        uint64_t id = 1 + rnd(NJOBS);
        jq_shard_t *sh = jq_table_shard_for(t, id);
        jq_shard_wrlock(sh);
        jq_job_t *job = jq_shard_find(sh, id);
        uint8_t before[8];
        for (uint32_t k = 0; k < job->nops; k++)
            before[k] = job->ops[k].status;
        jq_delta_t d;
        jq_delta_init(&d, job);
        switch (rnd(9)) {
        case 0: jq_job_pickup(job, now, &d); break;
        case 1: jq_job_op_running(job, now, &d); break;
        case 2: jq_job_op_assign(job, now, "w#1", &d); break;
        case 3: jq_job_op_unassign(job, rnd(2), &d); break;
        case 4: jq_job_op_finish(job, now, rnd(4) != 0, NULL, &d); break;
        case 5: jq_job_cancel(job, now, &d); break;
        case 6: jq_job_mark_canceled(job, now, &d); break;
        case 7: if (rnd(4) == 0) jq_job_fail(job, now, "failed", &d); break;
        default: jq_job_log(job, now, "message", "x", 1, 0, &d); break;
        }
        for (uint32_t k = 0; k < job->nops; k++)
            if (job->ops[k].status != before[k] && jq_status_final((jq_status_t)job->ops[k].status))
                finished_ops[job->ops[k].def == &def_b][job->ops[k].status]++;
        if (!jq_delta_empty(&d, job))
            jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
        jq_shard_wrunlock(sh);
        check_meter(t, finished_ops);
    }
    /* The walk went everywhere: opcodes ended every way, some ran. */
    for (int n = 0; n < 2; n++)
        assert_true(finished_ops[n][JQ_SUCCESS] && finished_ops[n][JQ_ERROR] &&
                    finished_ops[n][JQ_CANCELED]);
    jq_meter_op_snap_t a;
    slot_named(jq_table_meter(t), "t.a", &a);
    assert_true(a.wait.count > 0 && a.run.count > 0);
    if (getenv("JOBQ_TEST_DUMP")) {
        fprintf(stderr, "t.a: wait %llu run %llu; finished %llu %llu %llu\n",
                (unsigned long long)a.wait.count, (unsigned long long)a.run.count,
                (unsigned long long)finished_ops[0][JQ_SUCCESS],
                (unsigned long long)finished_ops[0][JQ_ERROR],
                (unsigned long long)finished_ops[0][JQ_CANCELED]);
    }
    jq_table_destroy(&t);
}

/* ---- past the slot limit: one shared slot ---- */

static void test_other_slot(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(1, NULL, NULL);
    jq_meter_t *m = jq_table_meter(t);
    for (uint64_t id = 1; id <= JQ_METER_MAX_OPCODES + 5; id++) {
        jq_job_t *job = jq_job_new(id, 1, T0);
        char name[32];
        snprintf(name, sizeof name, "op%llu", (unsigned long long)id);
        assert_int_equal(jq_op_set_name(&job->ops[0], NULL, name, strlen(name)), 0);
        insert(t, job, T0);
    }
    assert_int_equal(jq_meter_count(m), JQ_METER_MAX_OPCODES + 1);
    jq_meter_op_snap_t o;
    assert_int_equal(slot_named(m, JQ_METER_OTHER_NAME, &o), JQ_METER_MAX_OPCODES);
    assert_int_equal(o.status[JQ_QUEUED], 5);
    assert_true(slot_named(m, "op1", &o) >= 0);
    assert_int_equal(o.status[JQ_QUEUED], 1);
    jq_table_destroy(&t);
}

/* ---- the worker hub's copy ---- */

static char *json_of(const char *in)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    jq_hubsnap_string(f, in);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_hubsnap(void **state)
{
    (void)state;
    /* JSON strings: escapes, control characters, UTF-8 kept, bad bytes
     * replaced. */
    const char *cases[][2] = {
        {"plain", "\"plain\""},
        {"a\"b\\c", "\"a\\\"b\\\\c\""},
        {"tab\there\n", "\"tab\\u0009here\\u000a\""},
        {"caf\xc3\xa9", "\"caf\xc3\xa9\""},
        {"bad\xff\xc3", "\"bad\\ufffd\\ufffd\""},
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""}, /* a surrogate */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = json_of(cases[i][0]);
        assert_string_equal(got, cases[i][1]);
        free(got);
    }
    /* Nothing published: an empty hub; then what was published, copied. */
    jq_hubsnap_t *s = jq_hubsnap_new();
    assert_non_null(s);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(jq_hubsnap_write_json(s, f), 0);
    fclose(f);
    assert_string_equal(buf, "{\"workers\":[],\"opcodes\":[]}");
    free(buf);
    jq_hubsnap_op_t *ops = NULL;
    assert_int_equal(jq_hubsnap_opcodes(s, &ops), 0);
    assert_null(ops);
    jq_hubsnap_op_t *pub = calloc(2, sizeof *pub);
    strcpy(pub[0].name, "x.a");
    pub[0].workers = 2;
    pub[0].capacity = 5;
    strcpy(pub[1].name, "x.b");
    pub[1].waiting = 7;
    char *json = strdup("{\"workers\":[1],\"opcodes\":[]}");
    jq_hubsnap_publish(s, json, strlen(json), pub, 2);
    f = open_memstream(&buf, &len);
    assert_int_equal(jq_hubsnap_write_json(s, f), 0);
    fclose(f);
    assert_string_equal(buf, "{\"workers\":[1],\"opcodes\":[]}");
    free(buf);
    assert_int_equal(jq_hubsnap_opcodes(s, &ops), 2);
    assert_string_equal(ops[1].name, "x.b");
    assert_int_equal(ops[1].waiting, 7);
    assert_int_equal(ops[0].capacity, 5);
    free(ops);
    jq_hubsnap_destroy(&s);
    assert_null(s);
}

/* ---- the renderer ---- */

static char dir[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* A daemon context with what the renderer reads: table, store (not
 * started), scheduler, ring; no hub. */
static void daemon_init(jq_daemon_t *d)
{
    char err[512];
    snprintf(dir, sizeof dir, "%s/jobq-metrics-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(dir));
    char *argv[] = {"jobqd", "--data-dir", dir, "--sync", "none", "--store-map-size", "64M",
                    NULL};
    memset(d, 0, sizeof *d);
    assert_int_equal(jq_config_load(&d->cfg, 7, argv, err, sizeof err), 0);
    d->started_mono = jq_now_mono();
    char sdir[300];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    assert_int_equal(mkdir(sdir, 0700), 0);
    jq_store_opts_t so = {.dir = sdir, .map_size = 64 << 20, .sync = JQ_SYNC_NONE,
                          .sync_interval_us = 100000};
    d->store = jq_store_open(&so, err, sizeof err);
    assert_non_null(d->store);
    d->table = jq_table_new(2, NULL, NULL);
    d->sched = jq_sched_new(4, 1);
    d->ring = jq_ring_new(16, 1 << 20);
    assert_non_null(d->table);
    assert_non_null(d->sched);
    assert_non_null(d->ring);
    d->epoch = 42;
}

static void daemon_fini(jq_daemon_t *d)
{
    jq_store_close(&d->store);
    jq_sched_destroy(&d->sched);
    jq_table_destroy(&d->table);
    jq_ring_destroy(&d->ring);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *render(jq_daemon_t *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(jq_metrics_render(d, f), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

/* The value of the sample line that starts with prefix (name and labels,
 * then a space), or -1. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

/* Format rules, line by line. */
static void check_format(const char *text)
{
    char family[128] = "", type[16] = "";
    bool helped = false;
    const char *p = text;
    int samples = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends */
        char line[1024];
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof line);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s", family), 1);
            assert_memory_equal(family, "jobq_", 5);
            helped = true;
            type[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            assert_true(helped);
            assert_int_equal(sscanf(line + 7, "%127s %15s", name, type), 2);
            assert_string_equal(name, family);
            if (strcmp(type, "counter") == 0)
                assert_string_equal(family + strlen(family) - 6, "_total");
            else
                assert_true(strcmp(type, "gauge") == 0 || strcmp(type, "histogram") == 0);
            continue;
        }
        assert_true(line[0] != '#');
        /* A sample of the family just announced. */
        size_t fl = strlen(family);
        assert_true(type[0]);
        assert_memory_equal(line, family, fl);
        const char *rest = line + fl;
        if (strcmp(type, "histogram") == 0) {
            if (strncmp(rest, "_bucket", 7) == 0)
                rest += 7;
            else if (strncmp(rest, "_sum", 4) == 0)
                rest += 4;
            else if (strncmp(rest, "_count", 6) == 0)
                rest += 6;
            else
                fail_msg("histogram sample %s", line);
        }
        assert_true(*rest == ' ' || *rest == '{');
        const char *sp = strrchr(line, ' ');
        char *end;
        double v = strtod(sp + 1, &end);
        assert_true(*end == '\0');
        assert_true(v >= 0);
        samples++;
    }
    assert_true(samples > 50);
}

static void test_render(void **state)
{
    (void)state;
    jq_daemon_t d;
    daemon_init(&d);
    /* Jobs: two queued, one with an opcode whose name needs escaping. */
    insert(d.table, make_job(1, 1, T0), T0);
    jq_job_t *odd = jq_job_new(2, 1, T0);
    const char *oddname = "we\"ird\\op\nx";
    assert_int_equal(jq_op_set_name(&odd->ops[0], NULL, oddname, strlen(oddname)), 0);
    insert(d.table, odd, T0);
    atomic_store(&d.submitted, 2);
    atomic_store(&d.errors[JOBQ_ERR_UNKNOWN_OPCODE], 3);
    atomic_store(&d.requests[JQ_M_SUBMIT_JOB], 2);
    atomic_store(&d.loop_stats.by_kind[1], 5);
    atomic_store(&d.last_seq, 17);
    /* One job run and finished: histograms get a sample. */
    jq_job_t *job = make_job(3, 1, T0);
    insert(d.table, job, T0);
    jq_shard_t *sh = jq_table_shard_for(d.table, 3);
    jq_shard_wrlock(sh);
    jq_delta_t dl;
    jq_delta_init(&dl, job);
    jq_job_pickup(job, T0 + 10, &dl);
    jq_job_op_running(job, T0 + 20, &dl);
    jq_shard_emit(sh, job, &dl, JQ_CHANGE_UPDATE, T0 + 20);
    jq_delta_init(&dl, job);
    jq_job_op_finish(job, T0 + 2000020, true, NULL, &dl);
    jq_shard_emit(sh, job, &dl, JQ_CHANGE_UPDATE, T0 + 2000020);
    jq_shard_wrunlock(sh);

    char *text = render(&d);
    if (getenv("JOBQ_TEST_DUMP"))
        fputs(text, stderr);
    check_format(text);
    assert_true(value_of(text, "jobq_jobs{status=\"queued\"}") == 2);
    assert_true(value_of(text, "jobq_jobs{status=\"success\"}") == 1);
    assert_true(value_of(text, "jobq_jobs_live") == 3);
    assert_true(value_of(text, "jobq_jobs_submitted_total") == 2);
    assert_true(value_of(text, "jobq_jobs_finished_total{status=\"success\"}") == 1);
    assert_true(value_of(text, "jobq_request_errors_total{code=\"UnknownOpcode\"}") == 3);
    assert_true(value_of(text, "jobq_requests_total{method=\"submit_job\"}") == 2);
    assert_true(value_of(text, "jobq_connections{kind=\"subscribers\"}") == 5);
    assert_true(value_of(text, "jobq_events_published_total") == 17);
    assert_true(value_of(text, "jobq_epoch") == 42);
    assert_true(value_of(text, "jobq_build_info{version=\"" JOBQ_VERSION "\"}") == 1);
    assert_true(value_of(text, "jobq_threads") >= 1);
    assert_true(value_of(text, "jobq_resident_memory_bytes") > 0);
    /* Escaped label value. */
    assert_true(value_of(text, "jobq_opcodes{opcode=\"we\\\"ird\\\\op\\nx\",status=\"queued\"}") ==
                1);
    /* The histogram: 2 s of run time, in the 5 s bucket and beyond. */
    assert_true(value_of(text, "jobq_opcode_run_seconds_bucket{opcode=\"t.a\",le=\"1\"}") == 0);
    assert_true(value_of(text, "jobq_opcode_run_seconds_bucket{opcode=\"t.a\",le=\"5\"}") == 1);
    assert_true(value_of(text, "jobq_opcode_run_seconds_bucket{opcode=\"t.a\",le=\"+Inf\"}") ==
                1);
    assert_true(value_of(text, "jobq_opcode_run_seconds_count{opcode=\"t.a\"}") == 1);
    assert_true(value_of(text, "jobq_opcode_run_seconds_sum{opcode=\"t.a\"}") == 2);
    assert_true(value_of(text, "jobq_opcode_queue_wait_seconds_sum{opcode=\"t.a\"}") ==
                0.00002);
    assert_true(value_of(text, "jobq_opcode_queue_wait_seconds_bucket{opcode=\"t.a\",le=\"0.001\"}") ==
                1);
    assert_true(value_of(text, "jobq_store_commit_seconds_count") == 0);
    assert_true(value_of(text, "jobq_store_batch_records_bucket{le=\"+Inf\"}") == 0);
    free(text);
    daemon_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_job),
        cmocka_unit_test(test_loaded),
        cmocka_unit_test(test_random_walk),
        cmocka_unit_test(test_other_slot),
        cmocka_unit_test(test_hubsnap),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
