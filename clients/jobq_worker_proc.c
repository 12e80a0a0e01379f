/* jobq_worker_proc.c: jobq-worker's handler processes (see
 * jobq_worker_cli.h).
 *
 * A handler is DIR/OPCODE run in a process group of its own, so that a
 * stop reaches everything it started: SIGTERM to the group, SIGKILL after
 * the grace. Its stdin is a file holding the arguments as JSON (a file,
 * not a pipe: a handler that never reads stdin cannot block the worker,
 * and the worker never blocks writing a large argument); stdout and
 * stderr are non-blocking pipes read by the worker's poll loop, each line
 * one feedback entry ("message" and "stderr"). The result file is created
 * empty in the worker's private directory and read after exit 0.
 *
 * Order: every line a handler wrote is sent before its done, so done
 * waits for both pipes to close as well as for the exit status (bounded
 * by WK_DRAIN_MS: a process left behind may keep a pipe open).
 */
#include "jobq_worker_cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Scalar arguments longer than this are not put in the environment (a
 * single variable is limited to 128 KiB by the kernel); stdin has them. */
#define ENV_VALUE_MAX (64 * 1024)

int64_t wk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* The environment */

typedef struct {
    char **v;
    size_t n, cap;
} strv_t;

static int strv_push(strv_t *s, char *str)
{
    if (!str)
        return -1;
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            free(str);
            return -1;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = str;
    s->v[s->n] = NULL;
    return 0;
}

static void strv_free(strv_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* Is this inherited variable one the worker sets itself? A stale
 * JOBQ_ARG_ from the worker's own environment must not pass for an
 * argument. */
static bool ours(const char *var)
{
    return strncmp(var, "JOBQ_ARG_", 9) == 0 || strncmp(var, "JOBQ_JOB_ID=", 12) == 0 ||
           strncmp(var, "JOBQ_OPCODE=", 12) == 0 ||
           strncmp(var, "JOBQ_OPCODE_INDEX=", 18) == 0 ||
           strncmp(var, "JOBQ_ATTEMPT=", 13) == 0 || strncmp(var, "JOBQ_RESULT_FILE=", 17) == 0;
}

/* JOBQ_ARG_<NAME>=value for a scalar argument, or NULL when it is not one
 * (object, array, null, a string holding NUL or too long). */
static char *arg_var(const char *name, const json_t *v)
{
    char *value = NULL;
    if (json_is_string(v)) {
        if (json_string_length(v) > ENV_VALUE_MAX ||
            strlen(json_string_value(v)) != json_string_length(v))
            return NULL;
        value = strdup(json_string_value(v));
    } else if (json_is_number(v) || json_is_boolean(v)) {
        value = json_dumps(v, JSON_ENCODE_ANY);
    }
    if (!value)
        return NULL;
    /* The name is made a variable name before the value joins it: an
     * argument named "a=b" must not pose as "A" with a value "b=...". */
    char *clean = strdup(name);
    if (!clean) {
        free(value);
        return NULL;
    }
    for (char *c = clean; *c; c++)
        *c = isalnum((unsigned char)*c) ? (char)toupper((unsigned char)*c) : '_';
    char *var = str_printf("JOBQ_ARG_%s=%s", clean, value);
    free(clean);
    free(value);
    return var;
}

static int build_env(strv_t *env, const jobq_lease_t *l, const char *opcode, const json_t *args,
                     const char *result_path)
{
    for (char **e = environ; *e; e++)
        if (!ours(*e) && strv_push(env, strdup(*e)) < 0)
            return -1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)args, key, v) {
        char *var = arg_var(key, v);
        if (var && strv_push(env, var) < 0)
            return -1;
    }
    if (strv_push(env, str_printf("JOBQ_JOB_ID=%llu", (unsigned long long)l->job)) < 0 ||
        strv_push(env, str_printf("JOBQ_OPCODE_INDEX=%llu", (unsigned long long)l->op)) < 0 ||
        strv_push(env, str_printf("JOBQ_ATTEMPT=%llu", (unsigned long long)l->attempt)) < 0 ||
        strv_push(env, str_printf("JOBQ_OPCODE=%s", opcode)) < 0 ||
        strv_push(env, str_printf("JOBQ_RESULT_FILE=%s", result_path)) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Starting */

/* Writes the whole buffer to fd. */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A file in the private directory holding the arguments, opened for
 * reading and already unlinked: the handler's stdin. -1 on failure. */
static int args_file(const wk_config_t *cfg, const jobq_lease_t *l, const char *args_json)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/args-%llu-%llu-%llu", cfg->tmpdir,
             (unsigned long long)l->job, (unsigned long long)l->op,
             (unsigned long long)l->attempt);
    int wfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (wfd < 0)
        return -1;
    int rc = write_all(wfd, args_json, strlen(args_json));
    if (rc == 0)
        rc = write_all(wfd, "\n", 1);
    close(wfd);
    int rfd = rc == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    unlink(path);
    return rfd;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void child(const char *path, char **env, int in, int out, int err)
{
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(127);
    /* The pipes' other ends, the worker's sockets: nothing else leaks. */
    if (close_range(3, ~0U, 0) != 0)
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
    char *argv[] = {(char *)path, NULL};
    execve(path, argv, env);
    int e = errno;
    const char *m1 = "jobq-worker: cannot execute ";
    const char *m2 = strerror(e);
    if (write(2, m1, strlen(m1)) < 0 || write(2, path, strlen(path)) < 0 ||
        write(2, ": ", 2) < 0 || write(2, m2, strlen(m2)) < 0 || write(2, "\n", 1) < 0)
        _exit(127);
    _exit(127);
}

wk_proc_t *wk_proc_start(const wk_config_t *cfg, const jobq_lease_t *lease, const char *opcode,
                         const json_t *args, const char *args_json, char *err, size_t errlen)
{
    wk_proc_t *p = calloc(1, sizeof *p);
    strv_t env = {0};
    int in = -1, outp[2] = {-1, -1}, errp[2] = {-1, -1};
    char path[4200];
    if (!p) {
        snprintf(err, errlen, "jobq-worker: out of memory");
        return NULL;
    }
    p->lease = *lease;
    p->out.fd = p->err.fd = -1;
    snprintf(p->opcode, sizeof p->opcode, "%s", opcode);
    snprintf(path, sizeof path, "%s/%s", cfg->dir, opcode);
    p->result_path = str_printf("%s/result-%llu-%llu-%llu", cfg->tmpdir,
                                (unsigned long long)lease->job, (unsigned long long)lease->op,
                                (unsigned long long)lease->attempt);
    int rfd = p->result_path
                  ? open(p->result_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
                  : -1;
    if (rfd < 0) {
        snprintf(err, errlen, "jobq-worker: cannot create the result file %s: %s",
                 p->result_path ? p->result_path : "", strerror(errno));
        goto fail;
    }
    close(rfd);
    in = args_file(cfg, lease, args_json);
    if (in < 0) {
        snprintf(err, errlen, "jobq-worker: cannot write the arguments to %s: %s", cfg->tmpdir,
                 strerror(errno));
        goto fail;
    }
    if (build_env(&env, lease, opcode, args, p->result_path) < 0) {
        snprintf(err, errlen, "jobq-worker: out of memory");
        goto fail;
    }
    if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "jobq-worker: cannot make pipes: %s", strerror(errno));
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "jobq-worker: cannot fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0)
        child(path, env.v, in, outp[1], errp[1]);
    /* Both sides set the group, so that a stop right after the fork
     * reaches it whichever runs first. */
    setpgid(pid, pid);
    p->pid = pid;
    close(in);
    close(outp[1]);
    close(errp[1]);
    p->out.fd = outp[0];
    p->err.fd = errp[0];
    fcntl(p->out.fd, F_SETFL, O_NONBLOCK);
    fcntl(p->err.fd, F_SETFL, O_NONBLOCK);
    strv_free(&env);
    return p;
fail:
    if (in >= 0)
        close(in);
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    strv_free(&env);
    wk_proc_free(p);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Output */

static void add_entry(wk_proc_t *p, const char *type, const char *s, size_t n)
{
    if (p->revoked)
        return;
    if (p->npending == p->pending_cap) {
        size_t cap = p->pending_cap ? p->pending_cap * 2 : 64;
        wk_entry_t *e = realloc(p->pending, cap * sizeof *e);
        if (!e)
            return; /* out of memory: this line is lost */
        p->pending = e;
        p->pending_cap = cap;
    }
    char *m = malloc(n ? n : 1);
    if (!m)
        return;
    memcpy(m, s, n);
    p->pending[p->npending++] = (wk_entry_t){type, m, n};
}

/* Keeps the last stderr lines within WK_TAIL_MAX bytes. */
static void add_tail(wk_proc_t *p, const char *s, size_t n)
{
    if (n > WK_TAIL_MAX - 1)
        n = WK_TAIL_MAX - 1;
    size_t need = n + 1;
    if (p->tail_len + need > WK_TAIL_MAX) {
        /* Drop whole lines from the front until the new one fits. */
        size_t drop = 0;
        while (drop < p->tail_len && p->tail_len - drop + need > WK_TAIL_MAX) {
            char *nl = memchr(p->tail + drop, '\n', p->tail_len - drop);
            drop = nl ? (size_t)(nl - p->tail) + 1 : p->tail_len;
        }
        memmove(p->tail, p->tail + drop, p->tail_len - drop);
        p->tail_len -= drop;
    }
    memcpy(p->tail + p->tail_len, s, n);
    p->tail[p->tail_len + n] = '\n';
    p->tail_len += need;
    p->tail[p->tail_len] = '\0';
}

static void end_line(wk_proc_t *p, wk_pipe_t *pp)
{
    bool is_err = pp == &p->err;
    add_entry(p, is_err ? "stderr" : "message", pp->line, pp->len);
    if (is_err)
        add_tail(p, pp->line, pp->len);
    pp->len = 0;
    pp->cut = false;
}

static void take_bytes(wk_proc_t *p, wk_pipe_t *pp, const char *buf, size_t n)
{
    while (n) {
        const char *nl = memchr(buf, '\n', n);
        size_t chunk = nl ? (size_t)(nl - buf) : n;
        if (!pp->cut) {
            size_t room = WK_LINE_MAX - pp->len;
            size_t take = chunk < room ? chunk : room;
            memcpy(pp->line + pp->len, buf, take);
            pp->len += take;
            if (chunk > take)
                pp->cut = true;
        }
        if (!nl)
            return;
        end_line(p, pp);
        buf += chunk + 1;
        n -= chunk + 1;
    }
}

void wk_proc_read(wk_proc_t *p, wk_pipe_t *pp)
{
    char buf[65536];
    /* One read per readiness: a chatty handler cannot starve the loop. */
    ssize_t n = read(pp->fd, buf, sizeof buf);
    if (n > 0) {
        take_bytes(p, pp, buf, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* EOF (or an error: the same to us). A last line without newline. */
    if (pp->len || pp->cut)
        end_line(p, pp);
    close(pp->fd);
    pp->fd = -1;
}

/* ------------------------------------------------------------------ */
/* Stopping */

void wk_proc_kill(wk_proc_t *p)
{
    /* The group outlives its leader while a member lives; killing an
     * empty group only fails. */
    if (p->pid > 0 && kill(-p->pid, SIGKILL) == 0)
        p->killed = true;
}

void wk_proc_stop(const wk_config_t *cfg, wk_proc_t *p, const char *why, bool revoke)
{
    if (revoke) {
        p->revoked = true;
        for (size_t i = 0; i < p->npending; i++)
            free(p->pending[i].message);
        p->npending = 0;
    }
    if (p->stop_why[0] || p->exited)
        return;
    snprintf(p->stop_why, sizeof p->stop_why, "%s", why && *why ? why : "stopped");
    kill(-p->pid, SIGTERM);
    p->kill_at = wk_now_ms() + cfg->kill_grace_ms;
    if (cfg->kill_grace_ms <= 0)
        wk_proc_kill(p);
}

void wk_proc_exited(wk_proc_t *p, int status)
{
    p->exited = true;
    p->status = status;
    p->drain_until = wk_now_ms() + WK_DRAIN_MS;
}

int64_t wk_proc_timers(wk_proc_t *p, int64_t now)
{
    int64_t next = -1;
    if (!p->exited && p->kill_at && !p->killed) {
        if (now >= p->kill_at)
            wk_proc_kill(p);
        else
            next = p->kill_at - now;
    }
    if (p->exited && (p->out.fd >= 0 || p->err.fd >= 0)) {
        if (now >= p->drain_until) {
            /* Something it left behind holds the pipes: end it. */
            wk_proc_kill(p);
            wk_pipe_t *pipes[2] = {&p->out, &p->err};
            for (int i = 0; i < 2; i++) {
                if (pipes[i]->fd < 0)
                    continue;
                if (pipes[i]->len || pipes[i]->cut)
                    end_line(p, pipes[i]);
                close(pipes[i]->fd);
                pipes[i]->fd = -1;
            }
        } else if (next < 0 || p->drain_until - now < next) {
            next = p->drain_until - now;
        }
    }
    return next;
}

/* ------------------------------------------------------------------ */
/* Feedback and done */

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGKILL: return "SIGKILL";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGPIPE: return "SIGPIPE";
    case SIGQUIT: return "SIGQUIT";
    default: return NULL;
    }
}

/* The result file's JSON into *result (NULL: empty or missing). 0, or -1
 * with the failure message in msg. */
static int read_result(wk_proc_t *p, json_t **result, char *msg, size_t len)
{
    *result = NULL;
    FILE *f = fopen(p->result_path, "rb");
    if (!f)
        return 0; /* the handler removed it: no result */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > WK_RESULT_MAX) {
        snprintf(msg, len, "result file is larger than %d MiB", WK_RESULT_MAX >> 20);
        fclose(f);
        return -1;
    }
    char *buf = malloc(st.st_size > 0 ? (size_t)st.st_size + 1 : 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!buf) {
        snprintf(msg, len, "jobq-worker: out of memory reading the result file");
        return -1;
    }
    size_t i = 0;
    while (i < n && isspace((unsigned char)buf[i]))
        i++;
    if (i == n) {
        free(buf);
        return 0; /* empty: nil */
    }
    json_error_t jerr;
    *result = json_loadb(buf, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    free(buf);
    if (!*result) {
        snprintf(msg, len, "result file is not JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return -1;
    }
    return 0;
}

/* The failure message of a handler that did not exit 0. */
static void failure_message(wk_proc_t *p, char *msg, size_t len)
{
    int n;
    if (WIFEXITED(p->status)) {
        n = snprintf(msg, len, "exit code %d", WEXITSTATUS(p->status));
    } else if (WIFSIGNALED(p->status)) {
        int sig = WTERMSIG(p->status);
        const char *name = signal_name(sig);
        n = name ? snprintf(msg, len, "killed by signal %d (%s)", sig, name)
                 : snprintf(msg, len, "killed by signal %d", sig);
    } else {
        n = snprintf(msg, len, "ended with wait status %d", p->status);
    }
    if (p->stop_why[0] && n > 0 && (size_t)n < len)
        n += snprintf(msg + n, len - (size_t)n, " after it was stopped (%s)", p->stop_why);
    if (p->tail_len && n > 0 && (size_t)n < len) {
        size_t tl = p->tail_len;
        while (tl && p->tail[tl - 1] == '\n')
            tl--;
        snprintf(msg + n, len - (size_t)n, "; stderr:\n%.*s", (int)tl, p->tail);
    }
}

/* Sends one batch of pending entries. 1 sent, 0 socket full, -1 the lease
 * is not held any more (entries dropped). */
static int send_batch(jobq_worker_t *w, wk_proc_t *p)
{
    jobq_feedback_entry_t batch[JOBQ_WORKER_MAX_ENTRIES];
    size_t n = 0, bytes = 0;
    while (n < p->npending && n < JOBQ_WORKER_MAX_ENTRIES &&
           (n == 0 || bytes + p->pending[n].len <= WK_BATCH_BYTES)) {
        batch[n] = (jobq_feedback_entry_t){p->pending[n].type, p->pending[n].message,
                                           p->pending[n].len};
        bytes += p->pending[n].len;
        n++;
    }
    int rc = jobq_worker_feedback_entries(w, &p->lease, batch, n, 0);
    if (rc < 0 && jobq_worker_status(w) == JOBQ_ERR_BUSY)
        return 0;
    if (rc < 0)
        n = p->npending; /* not held: nobody wants them */
    for (size_t i = 0; i < n; i++)
        free(p->pending[i].message);
    memmove(p->pending, p->pending + n, (p->npending - n) * sizeof *p->pending);
    p->npending -= n;
    return rc < 0 ? -1 : 1;
}

int wk_proc_flush(jobq_worker_t *w, const wk_config_t *cfg, wk_proc_t *p)
{
    (void)cfg;
    if (p->finished)
        return 1;
    if (p->revoked) {
        if (p->exited && p->out.fd < 0 && p->err.fd < 0)
            p->finished = true;
        return 1;
    }
    while (p->npending) {
        int rc = send_batch(w, p);
        if (rc == 0)
            return 0;
        if (rc < 0) {
            p->revoked = true; /* the library says the lease is gone */
            return 1;
        }
    }
    if (!p->exited || p->out.fd >= 0 || p->err.fd >= 0)
        return 1;
    char msg[JOBQ_MAX_LOG_MESSAGE];
    int rc;
    if (WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0) {
        json_t *result = NULL;
        if (read_result(p, &result, msg, sizeof msg) == 0) {
            rc = jobq_worker_done(w, &p->lease, result, 0);
            if (rc < 0 && jobq_worker_status(w) == JOBQ_ERR_BAD_ARGUMENT &&
                jobq_worker_lease_state(w, &p->lease) != JOBQ_LEASE_NONE) {
                /* Held, but the value cannot be sent (nested too deep). */
                snprintf(msg, sizeof msg, "result cannot be sent: %s", jobq_worker_reason(w));
                rc = jobq_worker_fail(w, &p->lease, msg, 0);
            }
            json_decref(result);
        } else {
            rc = jobq_worker_fail(w, &p->lease, msg, 0);
        }
    } else {
        failure_message(p, msg, sizeof msg);
        rc = jobq_worker_fail(w, &p->lease, msg, 0);
    }
    if (rc < 0 && jobq_worker_status(w) == JOBQ_ERR_BUSY)
        return 0;
    p->finished = true; /* sent, or the lease is gone */
    if (cfg->verbose) {
        if (WIFEXITED(p->status))
            fprintf(stderr, "jobq-worker: job %llu op %llu attempt %llu (%s): exit code %d\n",
                    (unsigned long long)p->lease.job, (unsigned long long)p->lease.op,
                    (unsigned long long)p->lease.attempt, p->opcode, WEXITSTATUS(p->status));
        else
            fprintf(stderr, "jobq-worker: job %llu op %llu attempt %llu (%s): signal %d\n",
                    (unsigned long long)p->lease.job, (unsigned long long)p->lease.op,
                    (unsigned long long)p->lease.attempt, p->opcode,
                    WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0);
    }
    return 1;
}

void wk_proc_free(wk_proc_t *p)
{
    if (!p)
        return;
    if (p->out.fd >= 0)
        close(p->out.fd);
    if (p->err.fd >= 0)
        close(p->err.fd);
    for (size_t i = 0; i < p->npending; i++)
        free(p->pending[i].message);
    free(p->pending);
    if (p->result_path)
        unlink(p->result_path);
    free(p->result_path);
    free(p);
}
