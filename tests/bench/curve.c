/* curve.c: workload 12, CURVE against plain TCP. The same lines as the
 * submit workload (ping, submit_job one at a time, submit_many_jobs, one
 * client) and the cycle workload's jobq line (1 and 4 workers), each
 * measured on a daemon started with --insecure and on one whose TCP
 * endpoints are CURVE servers, in one run, all on tcp://127.0.0.1.
 *
 * The clients stay the bench's raw ones (jclient.c, jworker.c, the cycle's
 * SUB): libzmq's ZMQ_CURVE_* socket options take the keys, read from
 * czmq-format certificate files the workload writes (the format `jobq
 * keygen` writes and jobqd's zcertstore reads; docs/security.md). */
#include "cycle.h"
#include "workloads.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

const bench_curve_t *bench_curve;
static bench_curve_t keys;

/* ------------------------------------------------------------------ */
/* keys                                                                */

/* One certificate: NAME.key (public) and, when sec is given,
 * NAME.key_secret (mode 0600), in czmq's text form. */
int bench_write_cert(const char *dir, const char *name, const char *role, const char *pub,
                     const char *sec)
{
    for (int secret = 0; secret < (sec ? 2 : 1); secret++) {
        char path[400];
        snprintf(path, sizeof path, "%s/%s.key%s", dir, name, secret ? "_secret" : "");
        FILE *f = fopen(path, "w");
        if (!f)
            return -1;
        if (secret)
            fchmod(fileno(f), 0600);
        fprintf(f,
                "#   jobq-bench %s key (czmq certificate)\n\n"
                "metadata\n    name = \"%s\"\n    role = \"%s\"\n"
                "curve\n    public-key = \"%s\"\n",
                secret ? "secret" : "public", name, role, pub);
        if (secret)
            fprintf(f, "    secret-key = \"%s\"\n", sec);
        if (fclose(f) != 0)
            return -1;
    }
    return 0;
}

/* The Z85 text of `what` ("public-key", "secret-key") in a certificate
 * file, into out[41]. */
static int read_key(const char *path, const char *what, char *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    int rc = -1;
    size_t wl = strlen(what);
    while (rc < 0 && fgets(line, sizeof line, f)) {
        const char *p = line + strspn(line, " \t");
        if (strncmp(p, what, wl) != 0)
            continue;
        p += wl;
        p += strspn(p, " \t=");
        if (*p == '"' && strlen(p + 1) >= 41 && p[41] == '"') {
            memcpy(out, p + 1, 40);
            out[40] = '\0';
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

/* A keypair per role (the daemon, a submit client, a worker), written as
 * certificates under the run's temporary root and read back from them. */
static int make_keys(bench_curve_t *k)
{
    if (bench_mkdtemp(k->dir, sizeof k->dir, "curve-keys") < 0)
        return -1;
    const struct {
        const char *name, *role;
        char *pub, *sec;
    } certs[] = {
        {"server", "server", k->server_pub, NULL},
        {"bench-submit", "submit", k->client_pub, k->client_sec},
        {"bench-worker", "worker", k->worker_pub, k->worker_sec},
    };
    for (size_t i = 0; i < sizeof certs / sizeof *certs; i++) {
        char pub[41], sec[41], path[400], check[41];
        if (zmq_curve_keypair(pub, sec) != 0) {
            fprintf(stderr, "jobq-bench: zmq_curve_keypair: %s (libzmq without CURVE?)\n",
                    zmq_strerror(errno));
            return -1;
        }
        if (bench_write_cert(k->dir, certs[i].name, certs[i].role, pub, sec) < 0)
            return -1;
        snprintf(path, sizeof path, "%s/%s.key_secret", k->dir, certs[i].name);
        if (read_key(path, "public-key", certs[i].pub) < 0 ||
            (certs[i].sec && read_key(path, "secret-key", certs[i].sec) < 0) ||
            read_key(path, "secret-key", check) < 0 || strcmp(check, sec) != 0) {
            fprintf(stderr, "jobq-bench: cannot read the keys back from %s\n", path);
            return -1;
        }
    }
    return 0;
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    FILE *in = fopen(from, "r");
    if (!in)
        return -1;
    FILE *out = fopen(to, "w");
    if (!out) {
        fclose(in);
        return -1;
    }
    fchmod(fileno(out), mode);
    char buf[1024];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out) == 0 ? 0 : -1;
}

int bench_curve_prepare(const char *data_dir)
{
    char from[400], to[400];
    const char *files[] = {"server.key", "server.key_secret"};
    for (int i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s/%s", bench_curve->dir, files[i]);
        snprintf(to, sizeof to, "%s/%s", data_dir, files[i]);
        if (copy_file(from, to, i ? 0600 : 0644) < 0)
            return -1;
    }
    /* Only the public files are authorized: the daemon's default
     * authorized-keys directory, 0700 as jobqd would make it. */
    snprintf(to, sizeof to, "%s/authorized_keys", data_dir);
    if (mkdir(to, 0700) < 0)
        return -1;
    const char *pubs[] = {"bench-submit.key", "bench-worker.key"};
    for (int i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s/%s", bench_curve->dir, pubs[i]);
        snprintf(to, sizeof to, "%s/authorized_keys/%s", data_dir, pubs[i]);
        if (copy_file(from, to, 0644) < 0)
            return -1;
    }
    return 0;
}

int bench_curve_apply(void *sock, const char *endpoint, bool worker)
{
    const bench_curve_t *k = bench_curve;
    if (!k || strncmp(endpoint, "tcp://", 6) != 0)
        return 0;
    const char *pub = worker ? k->worker_pub : k->client_pub;
    const char *sec = worker ? k->worker_sec : k->client_sec;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, k->server_pub, 40) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) < 0) {
        fprintf(stderr, "jobq-bench: CURVE socket options: %s\n", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* lines                                                               */

static const char *const MODE_NAME[2] = {"plain", "curve"};
static const char *const MODE_LABEL[2] = {"plain TCP (--insecure)", "CURVE"};

/* One request/reply line (the submit workload's, one client) on a fresh
 * blocked daemon; measured again (twice at most) when other processes
 * used 0.25 cores or more. Adds key.daemon_us_per_job and
 * key.client_us_per_job (the bench process: the client thread and
 * libzmq's I/O thread, where the client's encryption runs). */
static int rr_line(wkind_t kind, bool curve, const char *label, const char *key)
{
    int rc = -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        bench_curve = curve ? &keys : NULL;
        void *ctx = new_ctx(1, 64);
        daemon_t d;
        jc_t *c = NULL;
        bool again = false;
        rc = -1;
        if (start_blocked_daemon(&d, &c, ctx, "20000000") == 0) {
            others_t o;
            double p50, p99;
            long errors, items = 0;
            double r = run_workers(kind, 1, d.endpoint, 0, 19000000, d.pid, opt_submit_seconds,
                                   &p50, &p99, &errors, &o, &items);
            double dmn = proc_cpu_seconds(d.pid) - o.dmn;
            double self = proc_cpu_seconds(getpid()) - o.self;
            double noise = others_end(&o);
            if (noise >= 0.25 && attempt < 2 && opt_quiet_wait > 0 && !errors) {
                printf("  %-44s (others used %.2f cores: measured again)\n", label, noise);
                again = true;
            } else {
                report_rate(label, key, r, p50, p99, errors, kind == W_PING ? "rt " : "job", &o);
                char k[128];
                double du = items > 0 ? dmn / (double)items * 1e6 : NAN;
                double cu = items > 0 ? self / (double)items * 1e6 : NAN;
                printf("    CPU per %s: daemon %.1f us, client %.1f us\n",
                       kind == W_PING ? "request" : "job", du, cu);
                snprintf(k, sizeof k, "%s.daemon_us_per_job", key);
                result_set(k, du);
                snprintf(k, sizeof k, "%s.client_us_per_job", key);
                result_set(k, cu);
                rc = errors ? -1 : 0;
            }
        }
        jc_close(&c);
        zmq_ctx_term(ctx);
        daemon_stop(&d);
        bench_curve = NULL;
        if (!again)
            break;
    }
    return rc;
}

typedef struct {
    bool curve;
    int workers;
    const char *label, *key;
} cline_t;

static int cycle_line(void *arg)
{
    const cline_t *l = arg;
    bench_curve = l->curve ? &keys : NULL;
    int rc = cycle_jobq_line(opt_sync ? opt_sync : "always", l->workers, opt_cycle_window,
                             l->label, l->key, NULL);
    bench_curve = NULL;
    return rc;
}

/* key.daemon_us_per_job and key.bench_us_per_job from a cycle line's cores. */
static void cycle_per_job(const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s.per_s", key);
    double rate = result_get(k);
    snprintf(k, sizeof k, "%s.daemon_cores", key);
    double dc = result_get(k);
    snprintf(k, sizeof k, "%s.bench_cores", key);
    double bc = result_get(k);
    snprintf(k, sizeof k, "%s.daemon_us_per_job", key);
    result_set(k, dc / rate * 1e6);
    snprintf(k, sizeof k, "%s.bench_us_per_job", key);
    result_set(k, bc / rate * 1e6);
    printf("    CPU per job: daemon %.0f us, bench %.0f us (submitter, workers, watcher)\n",
           dc / rate * 1e6, bc / rate * 1e6);
}

static double get(const char *base, const char *mode, const char *what)
{
    char k[160];
    snprintf(k, sizeof k, "%s.%s.%s", base, mode, what);
    return result_get(k);
}

/* A row of the summary: plain and CURVE side by side, and their ratio. */
static void table_row(const char *what, const char *base)
{
    double pr = get(base, "plain", "per_s"), cr = get(base, "curve", "per_s");
    double pd = get(base, "plain", "daemon_us_per_job"), cd = get(base, "curve", "daemon_us_per_job");
    printf("  %-40s %9.0f %9.0f  x%.2f   %8.1f %8.1f %+8.1f\n", what, pr, cr, cr / pr, pd, cd,
           cd - pd);
    char k[160];
    snprintf(k, sizeof k, "%s.ratio", base);
    result_set(k, cr / pr);
    snprintf(k, sizeof k, "%s.daemon_us_per_job_added", base);
    result_set(k, cd - pd);
}

int workload_curve(void)
{
    section("12. CURVE against plain TCP: submit and the full cycle");
    const char *transport = opt_transport;
    opt_transport = "tcp"; /* CURVE is a TCP matter: this workload is TCP only */
    if (make_keys(&keys) < 0) {
        printf("  not measured: no CURVE keys (see above)\n");
        opt_transport = transport;
        return -1;
    }
    printf("  every line on a fresh daemon on tcp://127.0.0.1; plain: --insecure; CURVE: the\n"
           "  daemon's keypair in its data directory, the bench's keys (roles submit and worker)\n"
           "  in DATA_DIR/authorized_keys, every TCP endpoint (clients, workers, events) CURVE;\n"
           "  the raw bench clients with ZMQ_CURVE_* keys read from czmq certificate files\n");
    printf("  request/reply: as the submit workload (test.delay(0) jobs queued behind a blocker),"
           " one client, %g s per line\n",
           opt_submit_seconds);
    int rc = 0;
    char label[96], key[96], batch[64];
    snprintf(batch, sizeof batch, "submit_many_jobs x%d", opt_batch);
    const struct {
        wkind_t kind;
        const char *what, *name;
    } rr[] = {
        {W_PING, "ping", "ping"},
        {W_SUBMIT, "submit_job one at a time", "single"},
        {W_BATCH, batch, "batch"},
    };
    for (size_t i = 0; i < sizeof rr / sizeof *rr; i++)
        for (int m = 0; m < 2; m++) { /* plain then CURVE, side by side */
            snprintf(label, sizeof label, "%s, %s", rr[i].what, MODE_LABEL[m]);
            snprintf(key, sizeof key, "curve.%s.%s", rr[i].name, MODE_NAME[m]);
            if (rr_line(rr[i].kind, m == 1, label, key) < 0)
                rc = -1;
        }

    printf("\n  full cycle (the cycle workload's jobq line), --sync %s: %.1f s per line after a"
           " warm-up, %ld jobs in flight, capacity 1 per worker; done = `update` to `success`"
           " on the event stream\n",
           opt_sync ? opt_sync : "always", opt_cycle_seconds, opt_cycle_window);
    const int nworkers[] = {1, 4};
    for (int i = 0; i < 2; i++)
        for (int m = 0; m < 2; m++) {
            snprintf(label, sizeof label, "cycle, %d worker%s, %s", nworkers[i],
                     nworkers[i] == 1 ? "" : "s", MODE_LABEL[m]);
            snprintf(key, sizeof key, "curve.cycle_w%d.%s", nworkers[i], MODE_NAME[m]);
            cline_t l = {m == 1, nworkers[i], label, key};
            if (cycle_quiet_line(cycle_line, &l, key) < 0)
                rc = -1;
            else
                cycle_per_job(key);
        }

    printf("\n  %-40s %9s %9s  %5s   %-26s\n", "", "plain/s", "CURVE/s", "ratio",
           "daemon us/job: plain CURVE added");
    table_row("ping (requests)", "curve.ping");
    table_row("submit_job one at a time", "curve.single");
    table_row(batch, "curve.batch");
    table_row("cycle, 1 worker", "curve.cycle_w1");
    table_row("cycle, 4 workers", "curve.cycle_w4");
    bench_rmtree(keys.dir);
    opt_transport = transport;
    return rc;
}
