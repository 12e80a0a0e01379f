/* py.c: workload 11, the Python client (issue 10): submit one at a time and
 * in batches, and the full cycle with Python worker processes, next to the
 * C client's figures in the same run, each line on a fresh daemon.
 *
 * The C lines here use libjobq (clients/jobq.h), the library a C program
 * would use, since the point is client against client; the raw bench
 * client (jclient.c) is measured beside them as the floor. The Python side
 * is tests/bench/py_bench.py, run with --python (/usr/bin/python3) and
 * PYTHONPATH=<repo>/clients/python; it prints `start` and `end` around its
 * measured window and then `result {json}`, and the daemon's CPU is read
 * between the first two, as for the C lines. The full-cycle lines are the
 * cycle workload's jobq line (cycle.c) with Python worker processes in
 * place of the bench's worker connections, and an all-Python line where
 * py_bench.py also submits and watches. */
#include "cycle.h"
#include "workloads.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef JOBQ_BENCH_SRC_DIR
#define JOBQ_BENCH_SRC_DIR "."
#endif

#ifndef JOBQ_BENCH_LIBJOBQ
/* Configured on its own (cmake -S tests/bench): no libjobq to compare with. */
int workload_python(void)
{
    section("11. The Python client: submit and the full cycle, C against Python");
    printf("  not measured: jobq-bench was built without libjobq (build it with the tree)\n");
    return 0;
}
#else
#include <jobq.h>

#define START_TIMEOUT 60.0 /* python3 startup, imports, connection, first job */
#define MAX_PY_WORKERS 16

/* ------------------------------------------------------------------ */
/* Python processes                                                    */

typedef struct {
    pid_t pid;
    int out;      /* its stdout (-1: not read) */
    char buf[4096];
    size_t len;
} pyproc_t;

/* Start py_bench.py with args (NULL-terminated); stdout piped when
 * want_out. 0 once forked. */
static int py_spawn(pyproc_t *p, const char *const *args, bool want_out)
{
    int fds[2] = {-1, -1};
    memset(p, 0, sizeof *p);
    p->out = -1;
    if (want_out && pipe(fds) < 0)
        return -1;
    const char *argv[32];
    int n = 0;
    argv[n++] = opt_python;
    argv[n++] = JOBQ_BENCH_SRC_DIR "/py_bench.py";
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setenv("PYTHONPATH", JOBQ_BENCH_SRC_DIR "/../../clients/python", 1);
        setenv("PYTHONDONTWRITEBYTECODE", "1", 1); /* leave nothing in the tree */
        if (want_out) {
            dup2(fds[1], 1);
            close(fds[0]);
            close(fds[1]);
        } else {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0)
                dup2(null, 1);
        }
        execv(argv[0], (char *const *)argv);
        perror("jobq-bench: exec python");
        _exit(127);
    }
    if (want_out) {
        close(fds[1]);
        p->out = fds[0];
    }
    p->pid = pid;
    bench_child_add(pid);
    return 0;
}

/* The next line of p's stdout (without the newline) into line; false on
 * timeout or end of file. */
static bool py_line(pyproc_t *p, char *line, size_t len, double timeout)
{
    double end = bench_now() + timeout;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl) {
            size_t k = (size_t)(nl - p->buf);
            snprintf(line, len, "%.*s", (int)k, p->buf);
            memmove(p->buf, nl + 1, p->len - k - 1);
            p->len -= k + 1;
            return true;
        }
        double left = end - bench_now();
        if (left <= 0 || p->len == sizeof p->buf)
            return false;
        struct pollfd pfd = {.fd = p->out, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        ssize_t got = read(p->out, p->buf + p->len, sizeof p->buf - p->len);
        if (got <= 0)
            return false;
        p->len += (size_t)got;
    }
}

/* Wait for the line `want` (other lines are echoed to stderr). */
static bool py_expect(pyproc_t *p, const char *want, char *line, size_t len, double timeout)
{
    double end = bench_now() + timeout;
    while (py_line(p, line, len, end - bench_now())) {
        if (strncmp(line, want, strlen(want)) == 0)
            return true;
        fprintf(stderr, "py_bench: %s\n", line);
    }
    fprintf(stderr, "jobq-bench: py_bench.py (pid %d) did not say '%s' in time\n", (int)p->pid,
            want);
    return false;
}

/* SIGTERM (when sig), wait up to timeout s, then SIGKILL; its exit status. */
static int py_reap(pyproc_t *p, int sig, double timeout)
{
    if (p->pid <= 0)
        return -1;
    if (sig)
        kill(p->pid, sig);
    int st = 0;
    double end = bench_now() + timeout;
    pid_t r;
    while ((r = waitpid(p->pid, &st, WNOHANG)) == 0 && bench_now() < end)
        bench_sleep(0.02); /* poll interval */
    if (r == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
        st = -1;
    }
    bench_child_remove(p->pid);
    if (p->out >= 0)
        close(p->out);
    p->pid = 0;
    p->out = -1;
    return st;
}

/* A number from py_bench's flat JSON result; NAN when absent. */
static double json_num(const char *json, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(json, k);
    if (!p)
        return NAN;
    p += strlen(k);
    if (strncmp(p, "NaN", 3) == 0)
        return NAN;
    return strtod(p, NULL);
}

/* Python worker processes for cycle_jobq_line. */
typedef struct {
    pyproc_t p[MAX_PY_WORKERS];
    int n;
} pyworkers_t;

static int pyworkers_start(void *arg, const char *wep, int n)
{
    pyworkers_t *w = arg;
    w->n = 0;
    for (int i = 0; i < n && i < MAX_PY_WORKERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "py-%d", i);
        const char *args[] = {"worker", "--endpoint", wep, "--name", name, NULL};
        if (py_spawn(&w->p[i], args, false) < 0)
            return -1;
        w->n++;
    }
    return w->n == n ? 0 : -1;
}

static void pyworkers_stop(void *arg)
{
    pyworkers_t *w = arg;
    for (int i = 0; i < w->n; i++)
        kill(w->p[i].pid, SIGTERM);
    for (int i = 0; i < w->n; i++)
        py_reap(&w->p[i], 0, 10);
    w->n = 0;
}

/* ------------------------------------------------------------------ */
/* submit lines                                                        */

typedef struct {
    double rate, p50, p99;
    double daemon_us, client_us; /* CPU per job */
    long jobs, errors;
} sub_t;

static void sub_report(const char *label, const char *key, const sub_t *s, const others_t *o)
{
    char k[128];
    snprintf(k, sizeof k, "%s.others_cores", key);
    double noise = noise_end(o, k);
    printf("  %-46s %9.0f jobs/s  p50 %8.3f ms  p99 %8.3f ms  CPU/job: daemon %6.1f us, client"
           " %6.1f us  others %.2f%s\n",
           label, s->rate, s->p50, s->p99, s->daemon_us, s->client_us, noise,
           s->errors ? "  (ERRORS)" : "");
    static const char *const names[] = {"per_s", "p50_ms", "p99_ms", "daemon_us_per_job",
                                        "client_us_per_job"};
    double v[] = {s->rate, s->p50, s->p99, s->daemon_us, s->client_us};
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "%s.%s", key, names[i]);
        result_set(k, v[i]);
    }
}

typedef enum { S_RAW_SINGLE, S_RAW_BATCH, S_LIB_SINGLE, S_LIB_BATCH, S_PY_SINGLE, S_PY_BATCH,
               S_PY_PIPE } skind_t;

/* libjobq, one call at a time on this thread, for opt_submit_seconds. */
static int lib_submit(skind_t kind, daemon_t *d, sub_t *s, others_t *o)
{
    jobq_client_t *c = jobq_client_new(d->endpoint);
    json_t *ping = c ? jobq_ping(c, 10000) : NULL;
    if (!ping) {
        fprintf(stderr, "jobq-bench: libjobq: %s\n", c ? jobq_client_reason(c) : "no client");
        jobq_client_destroy(&c);
        return -1;
    }
    json_decref(ping);
    json_t *ops = json_pack("[{s:s, s:{s:i}}]", "op", "test.delay", "args", "duration", 0);
    json_t *jobs = json_array();
    for (int i = 0; i < opt_batch; i++)
        json_array_append(jobs, ops);
    samples_t lat = {0};
    others_begin(o, d->pid);
    double d0 = proc_cpu_seconds(d->pid), c0 = proc_cpu_seconds(getpid());
    double t0 = bench_now(), end = t0 + opt_submit_seconds;
    for (;;) {
        double a = bench_now();
        if (a >= end)
            break;
        long n = 0;
        if (kind == S_LIB_SINGLE) {
            uint64_t id;
            n = jobq_submit_job(c, ops, false, &id, 30000) == 0 ? 1 : 0;
        } else {
            json_t *r = jobq_submit_many_jobs(c, jobs, false, 30000);
            for (size_t i = 0; r && i < json_array_size(r); i++)
                n += json_is_true(json_array_get(json_array_get(r, i), 0));
            json_decref(r);
        }
        double b = bench_now();
        if (n != (kind == S_LIB_SINGLE ? 1 : opt_batch)) {
            fprintf(stderr, "jobq-bench: libjobq submit: %s\n", jobq_client_reason(c));
            s->errors++;
            break;
        }
        s->jobs += n;
        samples_add(&lat, (b - a) * 1e3);
    }
    double t1 = bench_now();
    s->daemon_us = (proc_cpu_seconds(d->pid) - d0) / (double)s->jobs * 1e6;
    s->client_us = (proc_cpu_seconds(getpid()) - c0) / (double)s->jobs * 1e6;
    s->rate = (double)s->jobs / (t1 - t0);
    s->p50 = samples_pct(&lat, 50);
    s->p99 = samples_pct(&lat, 99);
    samples_free(&lat);
    json_decref(jobs);
    json_decref(ops);
    jobq_client_destroy(&c);
    return s->errors ? -1 : 0;
}

/* py_bench.py submit: its window, the daemon's and its own CPU. */
static int py_submit(skind_t kind, daemon_t *d, sub_t *s, others_t *o)
{
    char secs[32], batch[32], line[1024];
    snprintf(secs, sizeof secs, "%g", opt_submit_seconds);
    snprintf(batch, sizeof batch, "%d", opt_batch);
    const char *mode = kind == S_PY_SINGLE ? "single" : kind == S_PY_BATCH ? "batch"
                                                                           : "pipelined";
    const char *args[] = {"submit", "--endpoint", d->endpoint, "--mode", mode, "--seconds",
                          secs, "--batch", batch, NULL};
    pyproc_t p;
    if (py_spawn(&p, args, true) < 0)
        return -1;
    int rc = -1;
    if (py_expect(&p, "start", line, sizeof line, START_TIMEOUT)) {
        others_begin(o, d->pid);
        double d0 = proc_cpu_seconds(d->pid), c0 = proc_cpu_seconds(p.pid);
        if (py_expect(&p, "end", line, sizeof line, opt_submit_seconds + 120)) {
            double dc = proc_cpu_seconds(d->pid) - d0, cc = proc_cpu_seconds(p.pid) - c0;
            if (py_expect(&p, "result ", line, sizeof line, 30)) {
                s->jobs = (long)json_num(line, "jobs");
                s->errors = (long)json_num(line, "errors");
                s->rate = json_num(line, "per_s");
                s->p50 = json_num(line, "p50_ms");
                s->p99 = json_num(line, "p99_ms");
                s->daemon_us = dc / (double)s->jobs * 1e6;
                s->client_us = cc / (double)s->jobs * 1e6;
                rc = s->errors || s->jobs <= 0 ? -1 : 0;
            }
        }
    }
    if (py_reap(&p, rc < 0 ? SIGTERM : 0, 10) != 0)
        rc = -1;
    return rc;
}

/* The raw bench client (jclient.c), one thread, as the submit workload. */
static int raw_submit(skind_t kind, daemon_t *d, sub_t *s, others_t *o)
{
    double d0 = proc_cpu_seconds(d->pid), c0 = proc_cpu_seconds(getpid());
    s->rate = run_workers(kind == S_RAW_SINGLE ? W_SUBMIT : W_BATCH, 1, d->endpoint, 0, 19000000,
                          d->pid, opt_submit_seconds, &s->p50, &s->p99, &s->errors, o, &s->jobs);
    if (s->jobs > 0) {
        s->daemon_us = (proc_cpu_seconds(d->pid) - d0) / (double)s->jobs * 1e6;
        s->client_us = (proc_cpu_seconds(getpid()) - c0) / (double)s->jobs * 1e6;
    }
    return s->errors ? -1 : 0;
}

static int submit_line(skind_t kind, const char *label, const char *key)
{
    void *ctx = new_ctx(1, 64);
    daemon_t d;
    jc_t *c = NULL;
    int rc = -1;
    if (start_blocked_daemon(&d, &c, ctx, "20000000") == 0) {
        sub_t s = {0};
        others_t o;
        if (kind == S_RAW_SINGLE || kind == S_RAW_BATCH)
            rc = raw_submit(kind, &d, &s, &o);
        else if (kind == S_LIB_SINGLE || kind == S_LIB_BATCH)
            rc = lib_submit(kind, &d, &s, &o);
        else
            rc = py_submit(kind, &d, &s, &o);
        if (s.jobs > 0)
            sub_report(label, key, &s, &o);
        else
            printf("  %-46s not measured (failed)\n", label);
    }
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* cycle lines                                                         */

/* The all-Python cycle: py_bench.py cycle submits and watches, n Python
 * worker processes run the jobs. */
static int all_python_line(int n, const char *label, const char *key)
{
    daemon_t d;
    char pub[400], wep[400], line[1024];
    const char *more[] = {"--sync", opt_sync ? opt_sync : "always", NULL};
    if (cycle_start_worker_daemon(&d, pub, sizeof pub, wep, sizeof wep, more) < 0)
        return -1;
    void *ctx = new_ctx(1, 16);
    jc_t *c = jc_open(ctx, d.endpoint);
    static pyworkers_t w;
    int rc = -1;
    pyproc_t p = {.pid = 0, .out = -1};
    if (pyworkers_start(&w, wep, n) < 0)
        goto out;
    double end = bench_now() + 30;
    long long got = 0;
    while ((got = jc_stat2(c, "workers", "connected")) < n && bench_now() < end)
        bench_sleep(0.05); /* poll interval */
    if (got < n) {
        fprintf(stderr, "jobq-bench: %lld of %d Python workers connected in 30 s\n", got, n);
        goto out;
    }
    char secs[32], window[32];
    snprintf(secs, sizeof secs, "%g", opt_cycle_seconds);
    snprintf(window, sizeof window, "%ld", opt_cycle_window);
    const char *args[] = {"cycle", "--endpoint", d.endpoint, "--seconds", secs, "--window",
                          window, NULL};
    if (py_spawn(&p, args, true) < 0 || !py_expect(&p, "start", line, sizeof line, START_TIMEOUT))
        goto out;
    others_t o;
    others_begin(&o, d.pid);
    pid_t self = getpid();
    double d0 = proc_cpu_seconds(d.pid), b0 = proc_cpu_seconds(self);
    double w0 = bench_children_cpu() - proc_cpu_seconds(p.pid), p0 = proc_cpu_seconds(p.pid);
    double t0 = bench_now();
    if (!py_expect(&p, "end", line, sizeof line, opt_cycle_seconds + 60))
        goto out;
    double t1 = bench_now(), secs_w = t1 - t0;
    double pc = proc_cpu_seconds(p.pid) - p0;
    double wc = bench_children_cpu() - proc_cpu_seconds(p.pid) - w0;
    cycle_result_t r = {0};
    r.daemon_cores = (proc_cpu_seconds(d.pid) - d0) / secs_w;
    r.bench_cores = (proc_cpu_seconds(self) - b0) / secs_w;
    if (!py_expect(&p, "result ", line, sizeof line, 30))
        goto out;
    r.rate = json_num(line, "per_s");
    r.p50 = json_num(line, "p50_ms");
    r.p99 = json_num(line, "p99_ms");
    r.errors = (long)json_num(line, "errors");
    r.lost = (long)json_num(line, "lost");
    r.jobs = (long)json_num(line, "jobs");
    cycle_report(label, key, &r, &o);
    double sp50 = json_num(line, "submit_p50_ms"), sp99 = json_num(line, "submit_p99_ms");
    printf("    the Python client (submits and watches): %.2f cores, %.0f us CPU per job;"
           " worker processes: %.2f cores, %.0f us CPU per job\n"
           "    its submit_job calls (one at a time): p50 %.3f ms, p99 %.3f ms\n",
           pc / secs_w, pc / secs_w / r.rate * 1e6, wc / secs_w, wc / secs_w / r.rate * 1e6,
           sp50, sp99);
    char k[128];
    snprintf(k, sizeof k, "%s.submit_p50_ms", key);
    result_set(k, sp50);
    snprintf(k, sizeof k, "%s.client_cores", key);
    result_set(k, pc / secs_w);
    snprintf(k, sizeof k, "%s.worker_cores", key);
    result_set(k, wc / secs_w);
    rc = r.errors || r.lost || r.jobs <= 0 ? -1 : 0;
out:
    if (p.pid > 0 && py_reap(&p, rc < 0 ? SIGTERM : 0, 15) != 0)
        rc = -1;
    pyworkers_stop(&w);
    jc_close(&c);
    zmq_ctx_term(ctx);
    daemon_stop(&d);
    if (rc < 0)
        printf("  %-54s failed\n", label);
    return rc;
}

/* daemon CPU per job of a cycle line, from its figures. */
static void cycle_cpu_per_job(const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s.daemon_cores", key);
    double dc = result_get(k);
    snprintf(k, sizeof k, "%s.per_s", key);
    double rate = result_get(k);
    snprintf(k, sizeof k, "%s.daemon_us_per_job", key);
    result_set(k, dc / rate * 1e6);
    printf("    daemon: %.0f us CPU per job\n", dc / rate * 1e6);
}

/* ------------------------------------------------------------------ */
/* the workload                                                        */

static void table_row(const char *what, const char *ckey, const char *pkey)
{
    char k[128];
    snprintf(k, sizeof k, "%s.per_s", ckey);
    double cv = result_get(k);
    snprintf(k, sizeof k, "%s.per_s", pkey);
    double pv = result_get(k);
    printf("  %-52s %10.0f %10.0f   x%.2f\n", what, cv, pv, pv / cv);
    snprintf(k, sizeof k, "%s.ratio", pkey);
    result_set(k, pv / cv);
}

int workload_python(void)
{
    section("11. The Python client: submit and the full cycle, C against Python");
    if (access(opt_python, X_OK) != 0) {
        printf("  not measured: %s is not there (--python PATH)\n", opt_python);
        return 0;
    }
    printf("  Python: %s, PYTHONPATH=%s/../../clients/python, driver %s/py_bench.py\n",
           opt_python, JOBQ_BENCH_SRC_DIR, JOBQ_BENCH_SRC_DIR);
    printf("  submit: jobs are one-opcode test.delay(0) behind a blocker (they stay queued), a"
           " fresh daemon per line, one client, one call at a time, %g s each;\n"
           "  CPU per job: the daemon's, and the client's (the bench process for the C lines,"
           " the Python process for the others)\n",
           opt_submit_seconds);
    int rc = 0;
    char lab[3][96];
    snprintf(lab[0], sizeof lab[0], "submit_many_jobs x%d, raw C (bench client)", opt_batch);
    snprintf(lab[1], sizeof lab[1], "submit_many_jobs x%d, C libjobq", opt_batch);
    snprintf(lab[2], sizeof lab[2], "submit_many_jobs x%d, Python", opt_batch);
    char piped[96];
    snprintf(piped, sizeof piped, "submit_many_jobs %d x %d pipelined, Python", 8, opt_batch);
    const struct {
        skind_t kind;
        const char *label, *key;
    } subs[] = {
        {S_RAW_SINGLE, "submit_job, raw C (bench client)", "python.submit.raw_single"},
        {S_LIB_SINGLE, "submit_job, C libjobq", "python.submit.c_single"},
        {S_PY_SINGLE, "submit_job, Python jobq.Client", "python.submit.py_single"},
        {S_RAW_BATCH, lab[0], "python.submit.raw_batch"},
        {S_LIB_BATCH, lab[1], "python.submit.c_batch"},
        {S_PY_BATCH, lab[2], "python.submit.py_batch"},
        {S_PY_PIPE, piped, "python.submit.py_pipelined"},
    };
    for (size_t i = 0; i < sizeof subs / sizeof *subs; i++)
        if (submit_line(subs[i].kind, subs[i].label, subs[i].key) < 0)
            rc = -1;

    const char *sync = opt_sync ? opt_sync : "always";
    printf("\n  full cycle, --sync %s: %.1f s per line after a warm-up, %ld jobs in flight, each"
           " worker runs one job at a time (capacity 1); done = an event `update` to `success`"
           " seen by the submitting side; latency = submit -> done\n",
           sync, opt_cycle_seconds, opt_cycle_window);
    for (int k = 0; k < opt_py_nworkers; k++) {
        long n = opt_py_workers[k];
        const char *pl = n == 1 ? "" : "s";
        char label[96], key[96];
        snprintf(label, sizeof label, "C submits, %ld C worker%s (raw)", n, pl);
        snprintf(key, sizeof key, "python.cycle.c_w%ld", n);
        if (cycle_jobq_line(sync, (int)n, opt_cycle_window, label, key, NULL) < 0)
            rc = -1;
        else
            cycle_cpu_per_job(key);
        static pyworkers_t w;
        cycle_ext_t ext = {pyworkers_start, pyworkers_stop, &w};
        snprintf(label, sizeof label, "C submits, %ld Python worker process%s", n,
                 n == 1 ? "" : "es");
        snprintf(key, sizeof key, "python.cycle.pyw_w%ld", n);
        if (cycle_jobq_line(sync, (int)n, opt_cycle_window, label, key, &ext) < 0)
            rc = -1;
        else
            cycle_cpu_per_job(key);
        snprintf(label, sizeof label, "Python submits and watches, %ld Python worker%s", n, pl);
        snprintf(key, sizeof key, "python.cycle.py_w%ld", n);
        if (n > MAX_PY_WORKERS || all_python_line((int)n, label, key) < 0)
            rc = -1;
        else
            cycle_cpu_per_job(key);
    }

    printf("\n  jobs/s, C against Python (ratio = Python / C)%*s C     Python\n", 9, "");
    table_row("submit_job one at a time (libjobq / jobq.Client)", "python.submit.c_single",
              "python.submit.py_single");
    table_row("submit_many_jobs (libjobq / jobq.Client)", "python.submit.c_batch",
              "python.submit.py_batch");
    table_row("submit_many_jobs, Python pipelined (against libjobq)", "python.submit.c_batch",
              "python.submit.py_pipelined");
    for (int k = 0; k < opt_py_nworkers; k++) {
        char what[96], ck[96], pk[96];
        long n = opt_py_workers[k];
        snprintf(ck, sizeof ck, "python.cycle.c_w%ld", n);
        snprintf(what, sizeof what, "cycle, %ld worker%s: C worker / Python worker", n,
                 n == 1 ? "" : "s");
        snprintf(pk, sizeof pk, "python.cycle.pyw_w%ld", n);
        table_row(what, ck, pk);
        snprintf(what, sizeof what, "cycle, %ld worker%s: all C / all Python", n,
                 n == 1 ? "" : "s");
        snprintf(pk, sizeof pk, "python.cycle.py_w%ld", n);
        table_row(what, ck, pk);
    }
    return rc;
}
#endif /* JOBQ_BENCH_LIBJOBQ */
