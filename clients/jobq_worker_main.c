/* jobq_worker_main.c: main() of jobq-worker, a ready-made jobq worker that
 * runs a program for each opcode it is assigned (docs/workers.md is the
 * user's guide, docs/man/jobq-worker.1.scd the reference).
 *
 * The handlers are the executable files of one directory, DIR/OPCODE,
 * each optionally declared by DIR/OPCODE.json. The worker is one thread
 * and one zmq_poll loop over the worker socket (libjobq's worker API),
 * a signalfd (SIGCHLD for exits, SIGTERM/SIGINT/SIGHUP to stop) and the
 * handlers' stdout and stderr pipes; jobq_worker_proc.c runs the
 * handlers. Assignments beyond --capacity running handlers (the daemon
 * frees a slot when a lease is revoked, before its handler has died)
 * wait in a queue, so at most N handlers ever run at once.
 *
 * Stopping (SIGTERM, SIGINT, SIGHUP): the worker says disconnect first,
 * so the daemon hands the opcodes it held back to the queue at once, then
 * stops its handlers (SIGTERM, SIGKILL after --kill-grace) and exits 0. A
 * second signal kills them at once.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "jobq_worker_cli.h"
#include "paths.h"
#include "wire.h"

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* An assignment waiting for a free slot. */
typedef struct queued {
    struct queued *next;
    jobq_lease_t lease;
    char opcode[JOBQ_MAX_OP_NAME + 1];
    json_t *args;
    char *args_json;
} queued_t;

typedef struct {
    wk_config_t cfg;
    jobq_worker_t *w;         /* NULL once stopping */
    const char *endpoint;
    const char *key, *server_key; /* CURVE (--key, --server-key) */
    char **served;            /* the opcodes served */
    size_t nserved;
    int capacity;
    wk_proc_t *procs;         /* handlers not finished, newest first */
    size_t nprocs;
    queued_t *qhead, *qtail;  /* assignments waiting for a slot */
    int sfd;                  /* signalfd */
    bool stopping;
    bool fatal;
    bool quiet_waiting;       /* "does not answer" was said: not again until a welcome */
} wk_t;

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("jobq-worker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see 'jobq-worker --help')\n", stderr);
    va_end(ap);
}

static void print_help(const char *default_ep)
{
    printf(
        "Usage: jobq-worker --handlers DIR [OPTIONS]\n"
        "\n"
        "A jobq worker: connects to jobqd's worker endpoint, declares the opcodes of\n"
        "DIR and runs DIR/OPCODE as a program for each opcode it is assigned.\n"
        "\n"
        "Every executable file DIR/OPCODE is served (OPCODE: letters, digits and\n"
        "\"._-\"), declared by DIR/OPCODE.json when that exists:\n"
        "  {\"description\": TEXT, \"timeout\": SECONDS,\n"
        "   \"args\": [{\"name\": N, \"type\": T, \"required\": BOOL, \"description\": D}...]}\n"
        "A handler gets its arguments as a JSON object on stdin, scalar ones also\n"
        "in JOBQ_ARG_<NAME> (upper case, other characters than letters and digits\n"
        "as _), and JOBQ_JOB_ID, JOBQ_OPCODE_INDEX, JOBQ_ATTEMPT, JOBQ_OPCODE and\n"
        "JOBQ_RESULT_FILE. Each line it writes on stdout becomes a log entry of the\n"
        "job at once, each stderr line one of type \"stderr\" (lines are cut at\n"
        "4096 bytes). Exit 0: success, with the JSON written to $JOBQ_RESULT_FILE\n"
        "as the result (none when the file is empty). Anything else: an error\n"
        "naming the exit code or signal, with the last stderr lines. A canceled,\n"
        "timed-out or revoked opcode's handler gets SIGTERM on its process group,\n"
        "SIGKILL after the grace. docs/workers.md is the guide.\n"
        "\n"
        "Options:\n"
        "      --handlers DIR       the handlers directory (required)\n"
        "  -e, --endpoint EP        jobqd's worker endpoint, ipc://PATH or\n"
        "                           tcp://HOST:PORT (several, comma-separated: a\n"
        "                           cluster's nodes, see docs/workers.md); default\n"
        "                           $JOBQ_WORKER_ENDPOINT,\n"
        "                           else %s\n"
        "      --key FILE           CURVE key (role worker) for a tcp:// endpoint:\n"
        "                           a czmq certificate from 'jobq keygen NAME --role\n"
        "                           worker'; default $JOBQ_KEY (docs/security.md)\n"
        "      --server-key KEY     jobqd's public key, Z85 or its certificate file\n"
        "                           (DATA_DIR/server.key); default $JOBQ_SERVER_KEY\n"
        "  -n, --name NAME          the worker's name, in the worker field of its\n"
        "                           opcodes (default HOST:PID)\n"
        "  -c, --capacity N         run up to N handlers at once (1-%d, default 1)\n"
        "  -o, --opcodes A,B,...    serve only these opcodes of DIR\n"
        "      --kill-grace S       seconds between SIGTERM and SIGKILL (default 5)\n"
        "  -v, --verbose            log each opcode's start and end on stderr\n"
        "  -h, --help               show this help\n"
        "      --version            show the version\n"
        "\n"
        "The worker never gives up on jobqd: while the daemon does not answer it\n"
        "says so once and keeps trying; when the daemon goes silent or restarts it\n"
        "reconnects (the handlers of the lost connection are stopped).\n"
        "\n"
        "Exit codes: 0 stopped by SIGTERM, SIGINT or SIGHUP (it tells jobqd, which\n"
        "puts the opcodes it held back in the queue, and stops its handlers); 1 jobqd\n"
        "refused the worker's hello (a bad declaration, an opcode name jobqd runs\n"
        "itself) or the worker itself failed; 2 bad command line or handlers\n"
        "directory (no handler, a declaration file that is not valid).\n",
        default_ep, JOBQ_WORKER_MAX_CAPACITY);
}

/* ------------------------------------------------------------------ */
/* The handlers directory */

/* An opcode name (proto/wire.h) that is not a hidden file. */
static bool valid_name(const char *s)
{
    return s[0] != '.' && wire_opcode_name_ok(s, strlen(s));
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Is DIR/name an executable regular file? */
static bool is_handler(const char *dir, const char *name)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_served(wk_t *wk, const char *name)
{
    char **v = realloc(wk->served, (wk->nserved + 1) * sizeof *v);
    char *copy = v ? strdup(name) : NULL;
    if (v)
        wk->served = v;
    if (!copy) {
        fprintf(stderr, "jobq-worker: out of memory\n");
        return -1;
    }
    wk->served[wk->nserved++] = copy;
    return 0;
}

/* Fills wk->served from DIR (or from --opcodes). EXIT_OK, EXIT_USAGE, or
 * EXIT_FAIL (out of memory). */
static int find_handlers(wk_t *wk, const char *only)
{
    const char *dir = wk->cfg.dir;
    if (only) {
        char *list = strdup(only), *save = NULL;
        if (!list) {
            fprintf(stderr, "jobq-worker: out of memory\n");
            return EXIT_FAIL;
        }
        for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
            if (!valid_name(name)) {
                usage_error("--opcodes: \"%s\" is not an opcode name (letters, digits, \"._-\")",
                            name);
                free(list);
                return EXIT_USAGE;
            }
            if (!is_handler(dir, name)) {
                usage_error("--opcodes: %s/%s is not an executable file", dir, name);
                free(list);
                return EXIT_USAGE;
            }
            if (add_served(wk, name) < 0) {
                free(list);
                return EXIT_FAIL;
            }
        }
        free(list);
    } else {
        DIR *d = opendir(dir);
        if (!d) {
            fprintf(stderr, "jobq-worker: cannot read the handlers directory %s: %s\n", dir,
                    strerror(errno));
            return EXIT_USAGE;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            const char *name = e->d_name;
            if (name[0] == '.' || ends_with(name, ".json") || !is_handler(dir, name))
                continue;
            if (!valid_name(name)) {
                fprintf(stderr, "jobq-worker: skipping %s/%s: not an opcode name (letters, "
                                "digits, \"._-\", at most %d)\n",
                        dir, name, JOBQ_MAX_OP_NAME);
                continue;
            }
            if (add_served(wk, name) < 0) {
                closedir(d);
                return EXIT_FAIL;
            }
        }
        closedir(d);
        if (wk->nserved > 1)
            qsort(wk->served, wk->nserved, sizeof *wk->served, cmp_str);
    }
    if (wk->nserved == 0) {
        fprintf(stderr, "jobq-worker: no executable handler in %s\n", dir);
        return EXIT_USAGE;
    }
    if (wk->nserved > JOBQ_WORKER_MAX_OPCODES) {
        fprintf(stderr, "jobq-worker: %zu handlers in %s: at most %d (use --opcodes)\n",
                wk->nserved, dir, JOBQ_WORKER_MAX_OPCODES);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Declares every served opcode with its DIR/OPCODE.json. */
static int declare(wk_t *wk)
{
    for (size_t i = 0; i < wk->nserved; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s.json", wk->cfg.dir, wk->served[i]);
        json_t *decl = NULL;
        if (stat(path, &st) == 0) {
            json_error_t jerr;
            decl = json_load_file(path, 0, &jerr);
            if (!decl) {
                fprintf(stderr, "jobq-worker: %s: line %d, column %d: %s\n", path, jerr.line,
                        jerr.column, jerr.text);
                return EXIT_USAGE;
            }
        } else if (errno != ENOENT) {
            fprintf(stderr, "jobq-worker: %s: %s\n", path, strerror(errno));
            return EXIT_USAGE;
        }
        int rc = jobq_worker_add_opcode(wk->w, wk->served[i], decl);
        json_decref(decl);
        if (rc < 0) {
            fprintf(stderr, "jobq-worker: %s: %s\n", decl ? path : wk->served[i],
                    jobq_worker_reason(wk->w));
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

static bool serves(wk_t *wk, const char *opcode)
{
    for (size_t i = 0; i < wk->nserved; i++)
        if (strcmp(wk->served[i], opcode) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------ */
/* Assignments */

static wk_proc_t *find_proc(wk_t *wk, const jobq_lease_t *l)
{
    for (wk_proc_t *p = wk->procs; p; p = p->next)
        if (p->lease.job == l->job && p->lease.op == l->op && p->lease.attempt == l->attempt)
            return p;
    return NULL;
}

/* Removes and returns the queued assignment of lease l, or NULL. */
static queued_t *unqueue(wk_t *wk, const jobq_lease_t *l)
{
    queued_t **pp = &wk->qhead, *prev = NULL;
    for (queued_t *q = wk->qhead; q; prev = q, pp = &q->next, q = q->next) {
        if (q->lease.job == l->job && q->lease.op == l->op && q->lease.attempt == l->attempt) {
            *pp = q->next;
            if (wk->qtail == q)
                wk->qtail = prev;
            return q;
        }
    }
    return NULL;
}

static void queued_free(queued_t *q)
{
    if (!q)
        return;
    json_decref(q->args);
    free(q->args_json);
    free(q);
}

static void fail_lease(wk_t *wk, const jobq_lease_t *l, const char *msg)
{
    /* The socket is full only when the daemon is far behind; then wait
     * for room: a done must not be lost. */
    if (jobq_worker_fail(wk->w, l, msg, 5000) < 0)
        fprintf(stderr, "jobq-worker: job %llu op %llu: cannot report the failure \"%s\": %s\n",
                (unsigned long long)l->job, (unsigned long long)l->op, msg,
                jobq_worker_reason(wk->w));
}

static void start(wk_t *wk, const jobq_lease_t *l, const char *opcode, const json_t *args,
                  const char *args_json)
{
    char err[512];
    wk_proc_t *p = wk_proc_start(&wk->cfg, l, opcode, args, args_json, err, sizeof err);
    if (!p) {
        fprintf(stderr, "jobq-worker: job %llu op %llu (%s): %s\n", (unsigned long long)l->job,
                (unsigned long long)l->op, opcode, err);
        fail_lease(wk, l, err);
        return;
    }
    p->next = wk->procs;
    wk->procs = p;
    wk->nprocs++;
    if (wk->cfg.verbose)
        fprintf(stderr, "jobq-worker: job %llu op %llu attempt %llu (%s): started, pid %d\n",
                (unsigned long long)l->job, (unsigned long long)l->op,
                (unsigned long long)l->attempt, opcode, (int)p->pid);
}

static void on_assign(wk_t *wk, const jobq_worker_event_t *ev)
{
    char msg[300];
    if (!serves(wk, ev->opcode)) {
        snprintf(msg, sizeof msg, "jobq-worker does not serve opcode %s", ev->opcode);
        fail_lease(wk, &ev->lease, msg);
        return;
    }
    if (!ev->args_json) {
        snprintf(msg, sizeof msg, "jobq-worker cannot pass the arguments to a handler: %s",
                 ev->args_error ? ev->args_error : "?");
        fail_lease(wk, &ev->lease, msg);
        return;
    }
    if (wk->nprocs < (size_t)wk->capacity && !wk->qhead) {
        start(wk, &ev->lease, ev->opcode, ev->args, ev->args_json);
        return;
    }
    queued_t *q = calloc(1, sizeof *q);
    if (q) {
        q->lease = ev->lease;
        snprintf(q->opcode, sizeof q->opcode, "%s", ev->opcode);
        q->args = json_incref((json_t *)ev->args);
        q->args_json = strdup(ev->args_json);
    }
    if (!q || !q->args_json) {
        queued_free(q);
        fail_lease(wk, &ev->lease, "jobq-worker: out of memory");
        return;
    }
    if (wk->qtail)
        wk->qtail->next = q;
    else
        wk->qhead = q;
    wk->qtail = q;
}

static void start_queued(wk_t *wk)
{
    while (wk->qhead && wk->nprocs < (size_t)wk->capacity) {
        queued_t *q = wk->qhead;
        wk->qhead = q->next;
        if (!wk->qhead)
            wk->qtail = NULL;
        if (wk->w && jobq_worker_lease_state(wk->w, &q->lease) == JOBQ_LEASE_RUNNING)
            start(wk, &q->lease, q->opcode, q->args, q->args_json);
        queued_free(q);
    }
}

static void on_event(wk_t *wk, const jobq_worker_event_t *ev)
{
    const jobq_lease_t *l = &ev->lease;
    switch (ev->type) {
    case JOBQ_WORKER_EV_WELCOME:
        fprintf(stderr,
                "jobq-worker: connected to jobqd at %s (worker %llu, heartbeat %g s, lease "
                "%g s), serving %zu opcode%s\n",
                jobq_worker_endpoint(wk->w), (unsigned long long)ev->worker_id, ev->heartbeat,
                ev->lease_time,
                wk->nserved, wk->nserved == 1 ? "" : "s");
        wk->quiet_waiting = false;
        break;
    case JOBQ_WORKER_EV_DISCONNECTED:
        if (strncmp(ev->reason, "no welcome", 10) == 0) {
            if (!wk->quiet_waiting)
                fprintf(stderr, "jobq-worker: jobqd at %s does not answer (%s); waiting for it\n",
                        wk->endpoint, ev->reason);
            wk->quiet_waiting = true;
        } else {
            fprintf(stderr, "jobq-worker: lost jobqd at %s: %s; reconnecting\n", wk->endpoint,
                    ev->reason);
        }
        break;
    case JOBQ_WORKER_EV_ASSIGN:
        on_assign(wk, ev);
        break;
    case JOBQ_WORKER_EV_CANCEL: {
        wk_proc_t *p = find_proc(wk, l);
        if (p) {
            wk_proc_stop(&wk->cfg, p, *ev->reason ? ev->reason : "canceled", false);
        } else {
            queued_free(unqueue(wk, l));
            fail_lease(wk, l, "canceled before its handler started");
        }
        break;
    }
    case JOBQ_WORKER_EV_REVOKE: {
        wk_proc_t *p = find_proc(wk, l);
        if (wk->cfg.verbose)
            fprintf(stderr, "jobq-worker: job %llu op %llu attempt %llu revoked: %s\n",
                    (unsigned long long)l->job, (unsigned long long)l->op,
                    (unsigned long long)l->attempt, ev->reason);
        if (p)
            wk_proc_stop(&wk->cfg, p, "revoked", true);
        else
            queued_free(unqueue(wk, l));
        break;
    }
    case JOBQ_WORKER_EV_ERROR:
        if (ev->has_lease)
            fprintf(stderr, "jobq-worker: jobqd refused a message for job %llu op %llu attempt "
                            "%llu: %s: %s\n",
                    (unsigned long long)l->job, (unsigned long long)l->op,
                    (unsigned long long)l->attempt, jobq_code_name(ev->code), ev->reason);
        else
            fprintf(stderr, "jobq-worker: jobqd refused a message: %s: %s\n",
                    jobq_code_name(ev->code), ev->reason);
        break;
    }
}

/* ------------------------------------------------------------------ */
/* The loop */

static void begin_stop(wk_t *wk)
{
    if (wk->stopping) {
        /* Asked twice: no more grace. */
        for (wk_proc_t *p = wk->procs; p; p = p->next)
            wk_proc_kill(p);
        return;
    }
    wk->stopping = true;
    if (wk->nprocs)
        fprintf(stderr, "jobq-worker: stopping %zu handler%s\n", wk->nprocs,
                wk->nprocs == 1 ? "" : "s");
    /* Disconnect first: the daemon requeues the opcodes at once and
     * ignores whatever the stopped handlers would have said. */
    jobq_worker_destroy(&wk->w);
    while (wk->qhead) {
        queued_t *q = wk->qhead;
        wk->qhead = q->next;
        queued_free(q);
    }
    wk->qtail = NULL;
    for (wk_proc_t *p = wk->procs; p; p = p->next)
        wk_proc_stop(&wk->cfg, p, "worker stopping", true);
}

static void reap(wk_t *wk)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        for (wk_proc_t *p = wk->procs; p; p = p->next)
            if (p->pid == pid && !p->exited) {
                wk_proc_exited(p, status);
                break;
            }
    }
}

static void read_signals(wk_t *wk)
{
    struct signalfd_siginfo si;
    while (read(wk->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD)
            reap(wk);
        else
            begin_stop(wk);
    }
}

/* Sends what handlers produced; frees those that are done. Returns true
 * when the socket was full (wait for ZMQ_POLLOUT). */
static bool flush_all(wk_t *wk)
{
    bool blocked = false;
    for (wk_proc_t **pp = &wk->procs; *pp;) {
        wk_proc_t *p = *pp;
        if (!wk->w)
            p->revoked = true;
        if (!blocked && wk_proc_flush(wk->w, &wk->cfg, p) == 0)
            blocked = true;
        if (p->revoked && p->exited && p->out.fd < 0 && p->err.fd < 0)
            p->finished = true;
        if (p->finished) {
            *pp = p->next;
            wk_proc_free(p);
            wk->nprocs--;
            continue;
        }
        pp = &p->next;
    }
    return blocked;
}

static int loop(wk_t *wk)
{
    size_t cap = 0;
    zmq_pollitem_t *items = NULL;
    struct {
        wk_proc_t *p;
        wk_pipe_t *pipe;
    } *owners = NULL;
    for (;;) {
        if (wk->w)
            start_queued(wk);
        bool blocked = flush_all(wk);
        if (wk->stopping && !wk->procs)
            break;
        size_t need = 2 + 2 * wk->nprocs;
        if (need > cap) {
            cap = need * 2;
            items = realloc(items, cap * sizeof *items);
            owners = realloc(owners, cap * sizeof *owners);
            if (!items || !owners) {
                fprintf(stderr, "jobq-worker: out of memory\n");
                return EXIT_FAIL;
            }
        }
        size_t n = 0;
        void *sock = wk->w ? jobq_worker_socket(wk->w) : NULL;
        if (sock) {
            /* Not welcomed (between a cluster's leaders): what is blocked
             * waits for the welcome, not for room. */
            bool room = blocked && jobq_worker_ready(wk->w);
            items[n] = (zmq_pollitem_t){.socket = sock,
                                        .events = ZMQ_POLLIN | (room ? ZMQ_POLLOUT : 0)};
            owners[n++].p = NULL;
        }
        items[n] = (zmq_pollitem_t){.fd = wk->sfd, .events = ZMQ_POLLIN};
        owners[n++].p = NULL;
        int64_t now = wk_now_ms();
        int64_t timeout = wk->w ? jobq_worker_timeout_ms(wk->w) : -1;
        for (wk_proc_t *p = wk->procs; p; p = p->next) {
            int64_t t = wk_proc_timers(p, now);
            if (t >= 0 && (timeout < 0 || t < timeout))
                timeout = t;
            /* A handler whose output waits for the daemon is not read:
             * its writes block until the daemon caught up. */
            if (p->npending >= WK_PENDING_MAX && !p->revoked)
                continue;
            wk_pipe_t *pipes[2] = {&p->out, &p->err};
            for (int i = 0; i < 2; i++) {
                if (pipes[i]->fd < 0)
                    continue;
                items[n] = (zmq_pollitem_t){.fd = pipes[i]->fd, .events = ZMQ_POLLIN};
                owners[n].p = p;
                owners[n++].pipe = pipes[i];
            }
        }
        if (zmq_poll(items, (int)n, (long)timeout) < 0 && errno != EINTR) {
            fprintf(stderr, "jobq-worker: zmq_poll: %s\n", zmq_strerror(errno));
            return EXIT_FAIL;
        }
        for (size_t i = 0; i < n; i++)
            if (owners[i].p && (items[i].revents & (ZMQ_POLLIN | ZMQ_POLLERR)))
                wk_proc_read(owners[i].p, owners[i].pipe);
        read_signals(wk);
        now = wk_now_ms();
        for (wk_proc_t *p = wk->procs; p; p = p->next)
            wk_proc_timers(p, now);
        jobq_worker_event_t ev;
        int rc = 0;
        while (wk->w && (rc = jobq_worker_poll(wk->w, 0, &ev)) > 0)
            on_event(wk, &ev);
        if (rc < 0 && wk->w) {
            fprintf(stderr, "jobq-worker: %s\n", jobq_worker_reason(wk->w));
            wk->fatal = true;
            begin_stop(wk);
        }
    }
    free(items);
    free(owners);
    return wk->fatal ? EXIT_FAIL : EXIT_OK;
}

/* ------------------------------------------------------------------ */

static int parse_args(int argc, char **argv, wk_t *wk, const char **only, const char **name,
                      const char *default_ep)
{
    enum { OPT_HANDLERS = 256, OPT_KILL_GRACE, OPT_VERSION, OPT_KEY, OPT_SERVER_KEY };
    static const struct option opts[] = {
        {"handlers", required_argument, NULL, OPT_HANDLERS},
        {"endpoint", required_argument, NULL, 'e'},
        {"name", required_argument, NULL, 'n'},
        {"capacity", required_argument, NULL, 'c'},
        {"opcodes", required_argument, NULL, 'o'},
        {"kill-grace", required_argument, NULL, OPT_KILL_GRACE},
        {"key", required_argument, NULL, OPT_KEY},
        {"server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":e:n:c:o:vh", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case OPT_HANDLERS:
            wk->cfg.dir = optarg;
            break;
        case 'e':
            wk->endpoint = optarg;
            break;
        case OPT_KEY:
            wk->key = optarg;
            break;
        case OPT_SERVER_KEY:
            wk->server_key = optarg;
            break;
        case 'n':
            *name = optarg;
            break;
        case 'c': {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > JOBQ_WORKER_MAX_CAPACITY) {
                usage_error("--capacity: \"%s\" is not a number from 1 to %d", optarg,
                            JOBQ_WORKER_MAX_CAPACITY);
                return EXIT_USAGE;
            }
            wk->capacity = (int)v;
            break;
        }
        case 'o':
            *only = optarg;
            break;
        case OPT_KILL_GRACE: {
            errno = 0;
            double v = strtod(optarg, &end);
            if (errno || end == optarg || *end || !isfinite(v) || v < 0 || v > 86400) {
                usage_error("--kill-grace: \"%s\" is not a number of seconds from 0 to 86400",
                            optarg);
                return EXIT_USAGE;
            }
            wk->cfg.kill_grace_ms = (int64_t)(v * 1000);
            break;
        }
        case 'v':
            wk->cfg.verbose = true;
            break;
        case 'h':
            print_help(default_ep);
            return -1;
        case OPT_VERSION:
            printf("jobq-worker %s (protocol %d)\n", JOBQ_VERSION, JOBQ_PROTOCOL_VERSION);
            return -1;
        case ':':
            usage_error("%s needs a value", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            usage_error("unknown option '%s'", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument '%s'", argv[optind]);
        return EXIT_USAGE;
    }
    if (!wk->cfg.dir || !*wk->cfg.dir) {
        usage_error("--handlers DIR is required");
        return EXIT_USAGE;
    }
    if (*name && strlen(*name) > JOBQ_WORKER_MAX_NAME) {
        usage_error("--name: at most %d bytes", JOBQ_WORKER_MAX_NAME);
        return EXIT_USAGE;
    }
    if (!*wk->endpoint) {
        usage_error("--endpoint: empty");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Removes the private directory and what handlers may have left in it. */
static void remove_tmpdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    /* The build tree's socket or the installed daemon's (paths.h), as the
     * jobq CLI finds jobq.sock; the environment wins over both. */
    char default_ep[4200];
    snprintf(default_ep, sizeof default_ep, "ipc://%s/workers.sock", jq_default_dirs().run_dir);
    const char *env = getenv("JOBQ_WORKER_ENDPOINT");
    wk_t wk = {.capacity = 1, .endpoint = env && *env ? env : default_ep, .sfd = -1};
    const char *key = getenv("JOBQ_KEY"), *server_key = getenv("JOBQ_SERVER_KEY");
    wk.key = key && *key ? key : NULL;
    wk.server_key = server_key && *server_key ? server_key : NULL;
    wk.cfg.kill_grace_ms = 5000;
    const char *only = NULL, *name = NULL;
    char tmpl[4200] = "";
    int rc = parse_args(argc, argv, &wk, &only, &name, default_ep);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = find_handlers(&wk, only)) != EXIT_OK)
        goto out;

    char defname[JOBQ_WORKER_MAX_NAME + 1];
    if (!name) {
        char host[48] = "localhost";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        snprintf(defname, sizeof defname, "%s:%d", host, (int)getpid());
        name = defname;
    }

    /* Signals go to the signalfd, in every thread: block them before
     * ZeroMQ starts its threads (they inherit the mask). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    wk.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (wk.sfd < 0) {
        fprintf(stderr, "jobq-worker: signalfd: %s\n", strerror(errno));
        rc = EXIT_FAIL;
        goto out;
    }

    wk.w = jobq_worker_new(wk.endpoint, name, wk.capacity);
    if (!wk.w) {
        usage_error("cannot connect to \"%s\": not a ZeroMQ endpoint (ipc://PATH, "
                    "tcp://HOST:PORT)",
                    wk.endpoint);
        rc = EXIT_USAGE;
        goto out;
    }
    if (jobq_worker_set_keys(wk.w, wk.key, wk.server_key) < 0) {
        usage_error("%s", jobq_worker_reason(wk.w));
        rc = EXIT_USAGE;
        goto out;
    }
    if ((rc = declare(&wk)) != EXIT_OK)
        goto out;

    const char *t = getenv("TMPDIR");
    snprintf(tmpl, sizeof tmpl, "%s/jobq-worker-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "jobq-worker: cannot create a directory %s: %s\n", tmpl,
                strerror(errno));
        tmpl[0] = '\0';
        rc = EXIT_FAIL;
        goto out;
    }
    wk.cfg.tmpdir = tmpl;
    if (jobq_worker_connect(wk.w) < 0) {
        fprintf(stderr, "jobq-worker: %s\n", jobq_worker_reason(wk.w));
        rc = EXIT_FAIL;
        goto out;
    }
    rc = loop(&wk);
out:
    jobq_worker_destroy(&wk.w);
    if (tmpl[0])
        remove_tmpdir(tmpl);
    for (size_t i = 0; i < wk.nserved; i++)
        free(wk.served[i]);
    free(wk.served);
    if (wk.sfd >= 0)
        close(wk.sfd);
    return rc;
}
