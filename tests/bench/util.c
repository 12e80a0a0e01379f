/* util.c: clocks, percentiles, /proc readers, daemon processes, results. */
#include "bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

char bench_tmp_root[256];

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void note(const char *fmt, ...)
{
    if (!opt_verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("  .. ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- statistics ---- */

void samples_add(samples_t *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *g = realloc(s->v, cap * sizeof *g);
        if (!g)
            return;
        s->v = g;
        s->cap = cap;
    }
    s->v[s->n++] = v;
}

void samples_free(samples_t *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double samples_pct(samples_t *s, double pct)
{
    if (!s->n)
        return NAN;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    size_t rank = (size_t)ceil(pct / 100.0 * (double)s->n);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1];
}

double samples_mean(const samples_t *s)
{
    if (!s->n)
        return NAN;
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    return sum / (double)s->n;
}

/* ---- /proc ---- */

long proc_status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t klen = strlen(key);
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

long proc_threads(pid_t pid)
{
    return proc_status_kb(pid, "Threads");
}

long proc_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

double proc_cpu_seconds(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return NAN;
    unsigned long utime = 0, stime = 0;
    /* After ")": state(3) ... utime is field 14, stime 15. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return NAN;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

long long proc_ctx_switches(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    long long sum = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char sp[400], line[256];
        snprintf(sp, sizeof sp, "%s/%s/status", path, e->d_name);
        FILE *f = fopen(sp, "r");
        if (!f)
            continue; /* the thread just ended */
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0 ||
                strncmp(line, "nonvoluntary_ctxt_switches:", 27) == 0)
                sum += strtoll(strchr(line, ':') + 1, NULL, 10);
        fclose(f);
    }
    closedir(dir);
    return sum;
}

/* Busy CPU seconds of the whole machine (every CPU) from /proc/stat; *irq:
 * the irq and softirq part of it. */
static double sys_busy_seconds(double *irq)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return NAN;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return NAN;
    double tck = (double)sysconf(_SC_CLK_TCK);
    if (irq)
        *irq = (double)(v[5] + v[6]) / tck;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tck;
}

/* CPU seconds of every kernel thread (PF_KTHREAD): journal commits,
 * writeback, block I/O completion. */
static double kthreads_seconds(void)
{
    DIR *dir = opendir("/proc");
    if (!dir)
        return 0;
    double sum = 0;
    double tck = (double)sysconf(_SC_CLK_TCK);
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        unsigned long flags = 0, ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %lu %*u %*u %*u %*u %lu %lu", &flags, &ut,
                        &st) == 3 &&
            (flags & 0x00200000UL)) /* PF_KTHREAD */
            sum += (double)(ut + st) / tck;
    }
    closedir(dir);
    return sum;
}

static pid_t children[64];
static int nchildren;

void bench_child_add(pid_t pid)
{
    if (nchildren < (int)(sizeof children / sizeof *children))
        children[nchildren++] = pid;
}

void bench_child_remove(pid_t pid)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] == pid) {
            children[i] = children[--nchildren];
            return;
        }
}

double bench_children_cpu(void)
{
    double sum = 0;
    for (int i = 0; i < nchildren; i++) {
        double c = proc_cpu_seconds(children[i]);
        if (!isnan(c))
            sum += c;
    }
    return sum;
}

void others_begin(others_t *o, pid_t daemon)
{
    o->daemon = daemon;
    o->t = bench_now();
    o->sys = sys_busy_seconds(&o->irq);
    o->kth = kthreads_seconds();
    o->self = proc_cpu_seconds(getpid());
    o->dmn = daemon > 0 ? proc_cpu_seconds(daemon) : 0;
    o->kids = bench_children_cpu();
}

double others_kernel(const others_t *o)
{
    double t = bench_now() - o->t, irq = 0;
    sys_busy_seconds(&irq);
    double k = kthreads_seconds() - o->kth + irq - o->irq;
    return k > 0 ? k / (t > 0 ? t : 1) : 0;
}

double others_end(const others_t *o)
{
    double t = bench_now() - o->t, irq = 0;
    double sys = sys_busy_seconds(&irq) - o->sys;
    double kern = kthreads_seconds() - o->kth + irq - o->irq;
    double self = proc_cpu_seconds(getpid()) - o->self;
    double dmn = o->daemon > 0 ? proc_cpu_seconds(o->daemon) - o->dmn : 0;
    double kids = bench_children_cpu() - o->kids;
    double other = (sys - kern - self - dmn - (kids > 0 ? kids : 0)) / (t > 0 ? t : 1);
    return other > 0 ? other : 0;
}

bool wait_quiet(double max_wait)
{
    double end = bench_now() + max_wait;
    do {
        others_t o;
        others_begin(&o, 0);
        bench_sleep(0.5); /* the sampling window */
        if (others_end(&o) < 0.15)
            return true;
    } while (bench_now() < end);
    return false;
}

int proc_threads_cpu(pid_t pid, thread_cpu_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < max) {
        if (e->d_name[0] == '.')
            continue;
        pid_t tid = (pid_t)atoi(e->d_name);
        char p2[96];
        snprintf(p2, sizeof p2, "/proc/%d/task/%d/comm", (int)pid, (int)tid);
        FILE *f = fopen(p2, "r");
        out[n].tid = tid;
        out[n].name[0] = '\0';
        if (f) {
            if (fgets(out[n].name, sizeof out[n].name, f))
                out[n].name[strcspn(out[n].name, "\n")] = '\0';
            fclose(f);
        }
        snprintf(p2, sizeof p2, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
        char buf[1024];
        out[n].cpu = 0;
        f = fopen(p2, "r");
        if (f) {
            size_t r = fread(buf, 1, sizeof buf - 1, f);
            buf[r] = '\0';
            fclose(f);
            char *q = strrchr(buf, ')');
            unsigned long ut = 0, st = 0;
            if (q && sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) == 2)
                out[n].cpu = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        n++;
    }
    closedir(dir);
    return n;
}

bool proc_alive(pid_t pid)
{
    int status;
    return pid > 0 && waitpid(pid, &status, WNOHANG) == 0;
}

long proc_rss_settled(pid_t pid, double timeout)
{
    double end = bench_now() + timeout;
    long last = proc_status_kb(pid, "VmRSS");
    int same = 0;
    /* Still for a second, not 0.2 s: 2,000 TCP handshakes can leave the
     * daemon's RSS flat for a moment after every connection was accepted
     * and before their buffers are allocated (issue 14: a reading of
     * 3.7 KB per idle connection that was 24 KB a second later). */
    while (same < 5 && bench_now() < end) {
        bench_sleep(0.2);
        long now = proc_status_kb(pid, "VmRSS");
        same = now == last ? same + 1 : 0;
        last = now;
    }
    return last;
}

/* ---- files and ports ---- */

int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int bench_mkdtemp(char *out, size_t len, const char *prefix)
{
    snprintf(out, len, "%s/%s-XXXXXX", bench_tmp_root, prefix);
    return mkdtemp(out) ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void bench_rmtree(const char *dir)
{
    if (dir && *dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- daemons ---- */

pid_t bench_spawn(const char *const *argv, const char *log)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int in = open("/dev/null", O_RDONLY);
    int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in >= 0)
        dup2(in, 0);
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
    }
    /* Killed with the bench, whatever ends it (a crash, kill -9): no
     * daemon outlives a run. Every caller forks from the main thread,
     * which lives until the bench exits. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127); /* the bench died before prctl */
    /* Don't inherit the bench's blocked signals. */
    sigset_t set;
    sigemptyset(&set);
    sigprocmask(SIG_SETMASK, &set, NULL);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static void show_log(const daemon_t *d)
{
    FILE *f = fopen(d->log, "r");
    if (!f)
        return;
    char line[512];
    fprintf(stderr, "---- %s ----\n", d->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

/* argv for jobqd on d->dir: a fresh tcp port (or the dir's ipc socket) in
 * d->endpoint; listen must outlive argv. */
static int jobqd_argv(daemon_t *d, const char **argv, char *listen, size_t llen,
                      const char *const *extra)
{
    int n = 0;
    argv[n++] = opt_jobqd;
    argv[n++] = "--data-dir";
    argv[n++] = d->dir;
    if (strcmp(opt_transport, "tcp") == 0) {
        int port = free_tcp_port();
        snprintf(listen, llen, "tcp://127.0.0.1:%d", port);
        argv[n++] = "--listen";
        argv[n++] = listen;
        /* The benchmark's clients have no keys: TCP without CURVE, which
         * jobqd allows on loopback only (docs/security.md); the curve
         * workload's CURVE lines give them keys (curve.c). */
        if (!bench_curve)
            argv[n++] = "--insecure";
        snprintf(d->endpoint, sizeof d->endpoint, "%s", listen);
    } else {
        snprintf(d->endpoint, sizeof d->endpoint, "ipc://%s/jobq.sock", d->dir);
    }
    if (opt_sync) { /* before extra: a workload's own --sync wins */
        argv[n++] = "--sync";
        argv[n++] = opt_sync;
    }
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return n;
}

/* Ping until the daemon answers (or exits, or timeout passes). */
static bool wait_ping(daemon_t *d, double timeout, int reconnect_ivl_ms)
{
    void *ctx = zmq_ctx_new();
    jc_t *c = jc_open_ivl(ctx, d->endpoint, reconnect_ivl_ms);
    bool ready = false;
    double end = bench_now() + timeout;
    while (!ready && bench_now() < end && proc_alive(d->pid)) {
        if (jc_ping(c) == 0)
            ready = true;
    }
    jc_close(&c);
    zmq_ctx_term(ctx);
    return ready;
}

int jobqd_start(daemon_t *d, const char *const *extra)
{
    memset(d, 0, sizeof *d);
    if (bench_mkdtemp(d->dir, sizeof d->dir, "jobqd") < 0)
        return -1;
    snprintf(d->log, sizeof d->log, "%s/jobqd.log", d->dir);
    if (bench_curve && bench_curve_prepare(d->dir) < 0)
        return -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        const char *argv[64];
        char listen[64];
        jobqd_argv(d, argv, listen, sizeof listen, extra);
        d->pid = bench_spawn(argv, d->log);
        if (d->pid < 0)
            return -1;
        /* Ready once it answers a ping. */
        if (wait_ping(d, 20, 0)) {
            note("jobqd pid %d on %s", (int)d->pid, d->endpoint);
            return 0;
        }
        if (proc_alive(d->pid)) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, NULL, 0);
        }
        d->pid = 0;
        show_log(d);
    }
    return -1;
}

int jobqd_restart(daemon_t *d, const char *const *extra, double timeout, double *ready_s)
{
    static int restarts;
    snprintf(d->log, sizeof d->log, "%s/jobqd.%d.log", d->dir, ++restarts);
    const char *argv[64];
    char listen[64];
    jobqd_argv(d, argv, listen, sizeof listen, extra);
    double t0 = bench_now();
    d->pid = bench_spawn(argv, d->log);
    if (d->pid < 0)
        return -1;
    if (wait_ping(d, timeout, 10)) {
        *ready_s = bench_now() - t0;
        note("jobqd pid %d on %s (restarted in %.3f s)", (int)d->pid, d->endpoint, *ready_s);
        return 0;
    }
    if (proc_alive(d->pid)) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    d->pid = 0;
    show_log(d);
    return -1;
}

int tcp_daemon_start(daemon_t *d, const char *name, const char *const *argv_tpl, int *portp)
{
    memset(d, 0, sizeof *d);
    if (!argv_tpl[0] || !*argv_tpl[0] || bench_mkdtemp(d->dir, sizeof d->dir, name) < 0)
        return -1;
    snprintf(d->log, sizeof d->log, "%s/%s.log", d->dir, name);
    for (int attempt = 0; attempt < 3; attempt++) {
        int port = free_tcp_port();
        char ps[16];
        snprintf(ps, sizeof ps, "%d", port);
        const char *argv[64];
        static char paths[8][400]; /* "{dir}/NAME" arguments */
        int n = 0, np = 0;
        for (; argv_tpl[n] && n < 63; n++) {
            argv[n] = argv_tpl[n];
            if (strcmp(argv_tpl[n], "{port}") == 0)
                argv[n] = ps;
            else if (strcmp(argv_tpl[n], "{dir}") == 0)
                argv[n] = d->dir;
            else if (strcmp(argv_tpl[n], "{log}") == 0)
                argv[n] = d->log;
            else if (strncmp(argv_tpl[n], "{dir}/", 6) == 0 && np < 8) {
                snprintf(paths[np], sizeof paths[np], "%s/%s", d->dir, argv_tpl[n] + 6);
                argv[n] = paths[np++];
            }
        }
        argv[n] = NULL;
        d->pid = bench_spawn(argv, d->log);
        if (d->pid < 0)
            return -1;
        snprintf(d->endpoint, sizeof d->endpoint, "127.0.0.1:%d", port);
        double end = bench_now() + 10;
        while (bench_now() < end && proc_alive(d->pid)) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
            close(fd);
            if (ok) {
                *portp = port;
                note("%s pid %d on %s", name, (int)d->pid, d->endpoint);
                return 0;
            }
            bench_sleep(0.02); /* poll interval */
        }
        if (proc_alive(d->pid)) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, NULL, 0);
        }
        d->pid = 0;
        show_log(d);
    }
    return -1;
}

int beanstalkd_start(daemon_t *d, int *portp)
{
    const char *argv[] = {opt_beanstalkd ? opt_beanstalkd : "", "-l", "127.0.0.1", "-p",
                          "{port}", NULL};
    return tcp_daemon_start(d, "beanstalkd", argv, portp);
}

double daemon_term(daemon_t *d, double timeout)
{
    double took = -1;
    if (d->pid > 0) {
        double t0 = bench_now();
        kill(d->pid, SIGTERM);
        double end = t0 + timeout;
        int status;
        pid_t r;
        bool again = false;
        while ((r = waitpid(d->pid, &status, WNOHANG)) == 0 && bench_now() < end) {
            /* A first SIGTERM lets jobqd's running opcodes finish (up to
             * --shutdown-grace); a second one interrupts them, which is
             * the stop the workloads time. (Two at once could merge.) */
            if (!again && bench_now() - t0 > 0.2) {
                kill(d->pid, SIGTERM);
                again = true;
            }
            bench_sleep(0.01); /* poll interval */
        }
        if (r == 0) {
            fprintf(stderr,
                    "jobq-bench: pid %d did not stop on SIGTERM within %.0f s; killing it\n",
                    (int)d->pid, timeout);
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
        } else if (r > 0 && WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM) {
            /* beanstalkd ends on SIGTERM's default action: not a failure. */
            fprintf(stderr, "jobq-bench: pid %d died of signal %d\n", (int)d->pid,
                    WTERMSIG(status));
            show_log(d);
        } else {
            took = bench_now() - t0;
        }
        d->pid = 0;
    }
    return took;
}

void daemon_stop(daemon_t *d)
{
    daemon_term(d, 15);
    if (!opt_keep)
        bench_rmtree(d->dir);
    d->dir[0] = '\0';
}

/* ---- results ---- */

typedef struct {
    char name[96];
    double value;
} result_t;

static result_t results[4096]; /* a figure past the last is dropped: room for every workload */
static size_t nresults;

void result_set(const char *name, double value)
{
    for (size_t i = 0; i < nresults; i++)
        if (strcmp(results[i].name, name) == 0) {
            results[i].value = value;
            return;
        }
    if (nresults < sizeof results / sizeof *results) {
        snprintf(results[nresults].name, sizeof results[nresults].name, "%s", name);
        results[nresults++].value = value;
    }
}

double result_get(const char *name)
{
    for (size_t i = 0; i < nresults; i++)
        if (strcmp(results[i].name, name) == 0)
            return results[i].value;
    return NAN;
}

void results_write_json(const char *path, const char *machine_json, FILE *to)
{
    FILE *f = to ? to : fopen(path, "w");
    if (!f) {
        fprintf(stderr, "jobq-bench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "{\n  \"machine\": %s,\n  \"results\": {", machine_json);
    for (size_t i = 0; i < nresults; i++) {
        fprintf(f, "%s\n    \"%s\": ", i ? "," : "", results[i].name);
        if (isfinite(results[i].value))
            fprintf(f, "%.6g", results[i].value);
        else
            fputs("null", f);
    }
    fputs("\n  }\n}\n", f);
    fclose(f);
}
