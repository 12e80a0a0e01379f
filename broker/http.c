/* http.c: jobqd's HTTP endpoint (--http): the server thread, its
 * responses and held answers, the page's files and where each request
 * goes. Who may do what is in http_auth.c, the JSON API in http_api.c,
 * the event stream, the dashboard's ticks and the SSE streams in
 * http_live.c.
 *
 * One thread runs libmicrohttpd in its external-poll mode and reads the
 * event stream (a SUB socket) between, so browsers, scrapes and the event
 * stream share one thread, and the thread count never depends on how many
 * are connected. Data comes from the request path (jq_dispatch as the
 * caller's identity) and the event stream: the same rules as every client,
 * committed-before-visible included — an answer showing state the store
 * has not made durable is held (the connection suspended) until it is. */
#include "http_int.h"
#include "log.h"
#include "paths.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#ifndef JQ_WEB_DIR
#define JQ_WEB_DIR "/usr/share/jobq/web"
#endif
#ifndef JQ_WEB_SRC_DIR
#define JQ_WEB_SRC_DIR JQ_WEB_DIR
#endif
#ifndef JQ_CHARTJS_PATH
#define JQ_CHARTJS_PATH "/usr/share/javascript/chart.js/chart.min.js"
#endif

#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

int jq_http_addr_parse(const char *text, jq_http_addr_t *out, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(text, ':');
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    if (!colon || hlen == 0 || hlen >= sizeof host || !colon[1]) {
        snprintf(err, errlen, "--http: expected ADDRESS:PORT (e.g. 127.0.0.1:8080), got '%s'",
                 text);
        return -1;
    }
    memcpy(host, text, hlen);
    host[hlen] = 0;
    if (host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = 0;
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || colon[1] == '-' || port > 65535) {
        snprintf(err, errlen, "--http %s: the port must be 0 to 65535", text);
        return -1;
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai) {
        snprintf(err, errlen, "--http %s: '%s' is not a numeric IPv4 or [IPv6] address "
                              "(names are not resolved)", text, host);
        return -1;
    }
    memset(out, 0, sizeof *out);
    memcpy(&out->sa, ai->ai_addr, ai->ai_addrlen);
    out->len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (out->sa.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&out->sa;
        in->sin_port = htons((uint16_t)port);
        out->loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->sa;
        in6->sin6_port = htons((uint16_t)port);
        out->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                        (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
                         in6->sin6_addr.s6_addr[12] == 127);
    }
    return 0;
}

/* ---- responses ---------------------------------------------------------- */

void jq_http_headers(struct MHD_Response *r, bool page)
{
    MHD_add_response_header(r, "Content-Security-Policy", CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin");
    MHD_add_response_header(r, "Cache-Control", page ? "no-cache" : "no-store");
}

struct MHD_Response *jq_http_json_response(char *json, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, json, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(json);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
    jq_http_headers(r, false);
    return r;
}

enum MHD_Result jq_http_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
    if (!r)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* {"error": code, "message": ...} as a response; NULL out of memory. */
static struct MHD_Response *error_response(const char *code, const char *message)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fputs("{\"error\":", f);
    jq_json_cstr(f, code);
    fputs(",\"message\":", f);
    jq_json_cstr(f, message);
    fputs("}", f);
    fclose(f);
    return jq_http_json_response(buf, len);
}

enum MHD_Result jq_http_error(struct MHD_Connection *c, unsigned status, const char *code,
                              const char *message)
{
    return jq_http_queue(c, status, error_response(code, message));
}

int jq_http_body_open(jq_body_t *b)
{
    b->buf = NULL;
    b->len = 0;
    b->f = open_memstream(&b->buf, &b->len);
    return b->f ? 0 : -1;
}

void jq_http_body_discard(jq_body_t *b)
{
    if (b->f)
        fclose(b->f);
    free(b->buf);
    b->f = NULL;
    b->buf = NULL;
}

/* Answers now, or suspends the connection until the store is durable up
 * to ticket (the thread's loop resumes it; MHD then calls the handler
 * again and the ready response goes). */
enum MHD_Result jq_http_answer(jq_http_t *h, jq_req_t *rq, unsigned status, jq_body_t *b,
                               uint64_t ticket)
{
    fclose(b->f);
    b->f = NULL;
    struct MHD_Response *r = jq_http_json_response(b->buf, b->len);
    b->buf = NULL;
    if (!r)
        return MHD_NO;
    if (!ticket || ticket <= jq_store_durable(h->d->store))
        return jq_http_queue(rq->conn, status, r);
    rq->ready = r;
    rq->ready_status = status;
    rq->ticket = ticket;
    rq->next_held = h->held;
    h->held = rq;
    MHD_suspend_connection(rq->conn);
    return MHD_YES;
}

/* Held answers the store has made good go; those in a failed batch are
 * replaced by the error a client would get. */
static void release_held(jq_http_t *h)
{
    if (!h->held)
        return;
    char why[256] = "";
    uint64_t failed = jq_store_failed(h->d->store, why, sizeof why);
    uint64_t durable = jq_store_durable(h->d->store);
    for (jq_req_t **pp = &h->held; *pp;) {
        jq_req_t *rq = *pp;
        if (rq->ticket > durable && rq->ticket > failed) {
            pp = &rq->next_held;
            continue;
        }
        if (rq->ticket > durable) {
            MHD_destroy_response(rq->ready);
            rq->ready = error_response("StoreFailed", why);
            rq->ready_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        *pp = rq->next_held;
        rq->next_held = NULL;
        rq->ticket = 0;
        rq->resumed = true;
        MHD_resume_connection(rq->conn);
    }
}

/* ---- static files ------------------------------------------------------- */

static const struct {
    const char *url, *file, *type;
} statics[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/index.html", "index.html", "text/html; charset=utf-8"},
    {"/job.html", "job.html", "text/html; charset=utf-8"},
    {"/static/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8"},
    {"/static/job.js", "job.js", "text/javascript; charset=utf-8"},
    {"/static/common.js", "common.js", "text/javascript; charset=utf-8"},
    {"/static/dashboard.css", "dashboard.css", "text/css; charset=utf-8"},
    {"/static/chart.js", NULL, "text/javascript; charset=utf-8"},
};

static enum MHD_Result serve_static(jq_http_t *h, struct MHD_Connection *c, const char *url,
                                    bool *found)
{
    *found = false;
    for (size_t i = 0; i < sizeof statics / sizeof *statics; i++) {
        if (strcmp(url, statics[i].url))
            continue;
        *found = true;
        char path[JQ_PATH_BYTES + 64];
        if (statics[i].file)
            snprintf(path, sizeof path, "%s/%s", h->web_dir, statics[i].file);
        else
            snprintf(path, sizeof path, "%s", JQ_CHARTJS_PATH);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            if (fd >= 0)
                close(fd);
            char msg[JQ_PATH_BYTES + 128];
            snprintf(msg, sizeof msg, "%s is missing (%s)", path,
                     statics[i].file ? "the dashboard's files are not installed"
                                     : "install Debian's libjs-chart.js");
            return jq_http_error(c, MHD_HTTP_NOT_FOUND, "NotFound", msg);
        }
        struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
        if (!r) {
            close(fd);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", statics[i].type);
        jq_http_headers(r, true);
        return jq_http_queue(c, MHD_HTTP_OK, r);
    }
    return MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    jq_http_t *h = cls;
    jq_req_t *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        rq->conn = c;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) { /* a body, in pieces */
        if (rq->body_len + *upload_size > JQ_HTTP_MAX_BODY) {
            rq->body_too_large = true;
        } else {
            char *nb = realloc(rq->body, rq->body_len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            memcpy(nb + rq->body_len, upload, *upload_size);
            rq->body = nb;
            rq->body_len += *upload_size;
            rq->body[rq->body_len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->resumed) { /* the store has caught up (or failed, or we stop) */
        struct MHD_Response *r = rq->ready;
        rq->ready = NULL;
        return r ? jq_http_queue(c, rq->ready_status, r) : MHD_NO; /* never run twice */
    }
    if (h->stopping)
        return jq_http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "ShuttingDown",
                             "jobqd is stopping");
    if (!jq_http_host_ok(h, c))
        return jq_http_error(c, MHD_HTTP_MISDIRECTED_REQUEST, "MisdirectedRequest",
                             "on a loopback address the Host must be localhost or a loopback "
                             "address");
    if (rq->body_too_large)
        return jq_http_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "TooLarge", "body over 64 KiB");
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if (post && !strcmp(url, "/login"))
        return jq_http_login(h, rq, false);
    if (post && !strcmp(url, "/logout"))
        return jq_http_login(h, rq, true);
    jq_identity_t who = {0};
    asker_t asker;
    bool cookie_refused;
    enum MHD_Result answered = MHD_NO;
    if (jq_http_authenticate(h, c, &who, &asker, &cookie_refused, &answered) < 0)
        return answered;
    /* The page itself (public files), the session and the login are for
     * everyone; everything else for those who may. */
    if (get && !strcmp(url, "/api/session"))
        return jq_api_session(h, rq, &who, asker, cookie_refused);
    bool found;
    if (get) {
        enum MHD_Result rc = serve_static(h, c, url, &found);
        if (found)
            return rc;
    }
    if (asker == ASK_NOBODY)
        return jq_http_error(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                             "this endpoint is not on loopback: every request needs a token "
                             "(Authorization: Bearer, or log in on the page; `jobq http-token`)");
    if (post) {
        if (!strcmp(url, "/api/cancel"))
            return jq_api_action(h, rq, &who, "cancel_job");
        if (!strcmp(url, "/api/priority"))
            return jq_api_action(h, rq, &who, "change_job_priority");
        if (!strcmp(url, "/api/archive"))
            return jq_api_action(h, rq, &who, "archive_job");
    }
    if (!get) {
        return jq_http_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                             "GET, or POST to /api/cancel, /api/priority, /api/archive, "
                             "/login, /logout");
    }
    if (!strcmp(url, "/metrics"))
        return jq_api_metrics(h, rq);
    if (!strcmp(url, "/api/stats"))
        return jq_api_plain(h, rq, &who, "stats");
    if (!strcmp(url, "/api/jobs"))
        return jq_api_jobs(h, rq, &who);
    if (!strcmp(url, "/api/job"))
        return jq_api_job(h, rq, &who);
    if (!strcmp(url, "/api/workers"))
        return jq_api_workers(h, rq);
    if (!strcmp(url, "/events")) {
        uint64_t job = 0;
        const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "job");
        if (v && (!jq_http_parse_u64(v, &job) || !job))
            return jq_http_error(c, MHD_HTTP_BAD_REQUEST, "BadArgument", "job: a job id");
        return jq_live_open(h, c, &who, job);
    }
    return jq_http_error(c, MHD_HTTP_NOT_FOUND, "NotFound", "no such page");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    jq_http_t *h = cls;
    jq_req_t *rq = *con_cls;
    if (!rq)
        return;
    for (jq_req_t **pp = &h->held; *pp; pp = &(*pp)->next_held)
        if (*pp == rq) {
            *pp = rq->next_held;
            break;
        }
    if (rq->ready)
        MHD_destroy_response(rq->ready);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    jq_log(JQ_LOG_DEBUG, "http: %s", line);
}

/* ---- the thread --------------------------------------------------------- */

static void *http_main(void *arg)
{
    jq_http_t *h = arg;
    pthread_setname_np(pthread_self(), "jobqd-http"); /* for top -H, ps -L */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int mhd_fd = info ? info->epoll_fd : -1;
    int64_t next_read = jq_now_mono();
    for (;;) {
        int64_t now = jq_now_mono();
        if (now >= next_read) /* all of it, a batch per turn */
            next_read = jq_live_read(h) == JQ_LIVE_BATCH ? now : now + JQ_LIVE_READ_US;
        int64_t wait_us = jq_live_work(h, now);
        release_held(h);
        MHD_run(h->mhd);
        if (next_read - now < wait_us)
            wait_us = next_read > now ? next_read - now : 0;
        MHD_UNSIGNED_LONG_LONG mhd_ms;
        if (MHD_get_timeout(h->mhd, &mhd_ms) == MHD_YES && (int64_t)mhd_ms * 1000 < wait_us)
            wait_us = (int64_t)mhd_ms * 1000;
        if (h->held || h->pending_tick) /* the store acknowledges in about a millisecond */
            wait_us = wait_us > 1000 ? 1000 : wait_us;
        zmq_pollitem_t items[2] = {{NULL, mhd_fd, ZMQ_POLLIN, 0},
                                   {NULL, h->stop_fd, ZMQ_POLLIN, 0}};
        long timeout_ms = (long)((wait_us + 999) / 1000);
        if (zmq_poll(items, 2, timeout_ms) < 0 && errno != EINTR)
            break;
        if (items[1].revents)
            break;
    }
    /* Stopping: no new connection, every request still coming is told so,
     * the streams end, and held answers go once the store (still running)
     * has saved what they show — for a while; what is left then is told
     * ShuttingDown, never shown unsaved. MHD must not stop with a
     * connection suspended. */
    h->stopping = true;
    MHD_socket lsock = MHD_quiesce_daemon(h->mhd);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    jq_live_close_all(h);
    int64_t deadline = jq_now_mono() + JQ_HTTP_STOP_US;
    while ((h->held || jq_live_streams_open(h)) && jq_now_mono() < deadline) {
        release_held(h);
        MHD_run(h->mhd);
        zmq_pollitem_t item = {NULL, mhd_fd, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 1);
    }
    for (jq_req_t *rq = h->held; rq; rq = rq->next_held) {
        if (rq->ready)
            MHD_destroy_response(rq->ready);
        rq->ready = error_response("ShuttingDown",
                                   "jobqd stopped before what this answer shows was saved");
        rq->ready_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        rq->resumed = true;
        MHD_resume_connection(rq->conn);
    }
    h->held = NULL;
    deadline = jq_now_mono() + JQ_HTTP_STOP_US / 4;
    do {
        MHD_run(h->mhd);
        zmq_pollitem_t item = {NULL, mhd_fd, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 1);
    } while (jq_live_streams_open(h) && jq_now_mono() < deadline);
    return NULL;
}

/* The dashboard's files: the checkout's web/ for a build-tree binary,
 * else the installed ones. */
static void find_web_dir(jq_http_t *h)
{
    jq_default_dirs_t dd = jq_default_dirs();
    snprintf(h->web_dir, sizeof h->web_dir, "%s", dd.build_tree ? JQ_WEB_SRC_DIR : JQ_WEB_DIR);
}

static int write_port_file(jq_http_t *h, unsigned port, char *err, size_t errlen)
{
    char tmp[sizeof h->port_path + 8];
    snprintf(h->port_path, sizeof h->port_path, "%s/http.port", h->d->cfg.run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", h->port_path);
    FILE *f = fopen(tmp, "we");
    if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f) != 0 || rename(tmp, h->port_path) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", h->port_path, strerror(errno));
        h->port_path[0] = 0;
        return -1;
    }
    return 0;
}

jq_http_t *jq_http_new(jq_daemon_t *d, void *zctx, char *err, size_t errlen)
{
    jq_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->d = d;
    h->stop_fd = -1;
    if (jq_http_addr_parse(d->cfg.http, &h->addr, err, errlen) < 0)
        goto fail;
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        snprintf(err, errlen, "no random bytes for the CSRF token: %s", strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(h->csrf + 2 * i, 3, "%02x", rnd[i]);
    find_web_dir(h);
    h->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->stop_fd < 0 || jq_live_init(h, zctx, err, errlen) < 0) {
        if (h->stop_fd < 0)
            snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (h->addr.sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->addr.sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)JQ_HTTP_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)JQ_HTTP_MAX_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "--http %s: cannot listen there (in use, or not an address of "
                              "this host)", d->cfg.http);
        goto fail;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = pi ? pi->port : 0;
    if (write_port_file(h, port, err, errlen) < 0)
        goto fail;
    /* Browsers send a host's cookies to all its ports: a name per port
     * keeps two daemons on one host from ending each other's sessions. */
    snprintf(h->cookie_name, sizeof h->cookie_name, "jobq_session_%u", port);
    if (pthread_create(&h->thread, NULL, http_main, h) != 0) {
        snprintf(err, errlen, "cannot start the HTTP thread");
        goto fail;
    }
    h->started = true;
    char shown[300];
    snprintf(shown, sizeof shown, "%s", d->cfg.http);
    char *colon = strrchr(shown, ':');
    if (colon)
        *colon = 0;
    jq_log(JQ_LOG_INFO, "HTTP on http://%s:%u/ (metrics at /metrics)%s", shown, port,
           h->addr.loopback ? "" : (d->cfg.insecure ? ", without tokens (--insecure)"
                                                    : ", tokens required"));
    return h;
fail:
    jq_http_destroy(&h);
    return NULL;
}

void jq_http_destroy(jq_http_t **hp)
{
    if (!hp || !*hp)
        return;
    jq_http_t *h = *hp;
    if (h->started) {
        uint64_t one = 1;
        if (write(h->stop_fd, &one, sizeof one) < 0)
            jq_log(JQ_LOG_WARNING, "http: cannot wake the HTTP thread: %s", strerror(errno));
        pthread_join(h->thread, NULL);
    }
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    jq_live_fini(h);
    jq_http_sessions_free(h);
    if (h->stop_fd >= 0)
        close(h->stop_fd);
    if (h->port_path[0])
        unlink(h->port_path);
    free(h);
    *hp = NULL;
}
