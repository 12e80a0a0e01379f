/* listeners.c: binding, monitors, and pausing accept at the high-water
 * mark (see listeners.h). */
#include "listeners.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <linux/filter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_TCP_FDS 4 /* listening sockets behind one TCP endpoint */

typedef struct {
    void *socket;
    char endpoint[512]; /* as bound, wildcards resolved */
    bool ipc;
    int tcp_fds[MAX_TCP_FDS]; /* libzmq's listening sockets of a TCP endpoint */
    unsigned ntcp;
} bound_t;

struct jq_listeners {
    void *zctx;
    bound_t bound[JQ_MAX_BOUND];
    unsigned nbound;
    void *monitors[JQ_MAX_BOUND];
    int monitor_fds[JQ_MAX_BOUND]; /* their ZMQ_FD: what the loop polls */
    uint8_t monitor_kinds[JQ_MAX_BOUND]; /* jq_conn_kind_t of their sockets */
    unsigned nmonitors;
    jq_listeners_stats_t st;
    uint64_t low;            /* resume accepting at or below this */
    uint64_t limit;          /* the descriptor limit */
    int backlog;             /* of every listening socket */
    int gid;                 /* of ipc socket files, or -1 */
    int64_t refused_logged;  /* when refused connections were last logged */
    uint64_t refused_reported;
};

static uint64_t fd_limit(void)
{
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? rl.rlim_cur
                                                                              : 1u << 20;
}

jq_listeners_t *jq_listeners_new(void *zctx)
{
    jq_listeners_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->zctx = zctx;
    l->gid = -1;
    l->limit = fd_limit();
    /* What waits in a listening socket is accepted even while paused: a
     * short queue keeps that within the reserve; a client that finds it
     * full retries (ipc) or resends its SYN (TCP). */
    uint64_t b = l->limit / 16;
    l->backlog = b < JQ_LISTEN_BACKLOG_MIN ? JQ_LISTEN_BACKLOG_MIN
                 : b > JQ_LISTEN_BACKLOG_MAX ? JQ_LISTEN_BACKLOG_MAX
                                             : (int)b;
    return l;
}

static void resume_accepting(jq_listeners_t *l);

void jq_listeners_destroy(jq_listeners_t **lp)
{
    if (!lp || !*lp)
        return;
    jq_listeners_t *l = *lp;
    if (l->st.paused)
        resume_accepting(l); /* the socket files where clients look for them */
    for (unsigned i = 0; i < l->nmonitors; i++)
        zmq_close(l->monitors[i]);
    free(l);
    *lp = NULL;
}

/* Is fd a listening TCP socket? */
static bool listening_tcp(int fd)
{
    int on = 0, domain = 0;
    socklen_t len = sizeof on, dlen = sizeof domain;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on &&
           getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 &&
           (domain == AF_INET || domain == AF_INET6);
}

static bool known_tcp_fd(const jq_listeners_t *l, int fd)
{
    for (unsigned i = 0; i < l->nbound; i++)
        for (unsigned k = 0; k < l->bound[i].ntcp; k++)
            if (l->bound[i].tcp_fds[k] == fd)
                return true;
    return false;
}

/* libzmq keeps a TCP endpoint's listening socket to itself; the one that
 * appeared with this bind (binds happen one at a time on the loop's
 * thread) is the one to gate while paused. */
static void find_tcp_fds(jq_listeners_t *l, bound_t *b)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && b->ntcp < MAX_TCP_FDS) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || fd < 0 || fd == dirfd(d))
            continue;
        if (listening_tcp((int)fd) && !known_tcp_fd(l, (int)fd))
            b->tcp_fds[b->ntcp++] = (int)fd;
    }
    closedir(d);
}

void jq_listeners_set_group(jq_listeners_t *l, int gid)
{
    l->gid = gid;
}

static int bind_one(bound_t *b, int gid)
{
    mode_t old = umask(0117); /* an ipc socket file is born 0660 */
    int rc = zmq_bind(b->socket, b->endpoint);
    int err = errno;
    umask(old);
    if (rc == 0 && b->ipc) {
        chmod(b->endpoint + 6, 0660);
        if (gid >= 0 && chown(b->endpoint + 6, (uid_t)-1, (gid_t)gid) < 0)
            jq_log(JQ_LOG_WARNING, "cannot give %s to group %d: %s", b->endpoint + 6, gid,
                   strerror(errno));
    }
    errno = err;
    return rc;
}

int jq_listeners_bind(jq_listeners_t *l, void *socket, const char *endpoint, char *resolved,
                      size_t len)
{
    if (l->nbound == JQ_MAX_BOUND || strlen(endpoint) >= sizeof l->bound[0].endpoint) {
        errno = ENOSPC;
        return -1;
    }
    bound_t *b = &l->bound[l->nbound];
    *b = (bound_t){.socket = socket, .ipc = strncmp(endpoint, "ipc://", 6) == 0};
    snprintf(b->endpoint, sizeof b->endpoint, "%s", endpoint);
    zmq_setsockopt(socket, ZMQ_BACKLOG, &l->backlog, sizeof l->backlog);
    if (bind_one(b, l->gid) < 0)
        return -1;
    if (strncmp(endpoint, "tcp://", 6) == 0) {
        find_tcp_fds(l, b);
        if (!b->ntcp) /* served all the same; only the pause cannot hold it */
            jq_log(JQ_LOG_WARNING, "the listening socket of %s was not found; "
                                   "--max-connections cannot pause it", endpoint);
    }
    /* The address it got, wildcards resolved: what ping's `publish` shows
     * and what an ipc pause moves aside. */
    size_t n = sizeof b->endpoint;
    char last[512];
    if (zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, last, &n) == 0)
        snprintf(b->endpoint, sizeof b->endpoint, "%s", last);
    if (resolved)
        snprintf(resolved, len, "%s", b->endpoint);
    l->nbound++;
    return 0;
}

int jq_listeners_watch(jq_listeners_t *l, void *socket, jq_conn_kind_t kind)
{
    if (l->nmonitors == JQ_MAX_BOUND)
        return -1;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://jobq-monitor-%u", l->nmonitors);
    if (zmq_socket_monitor(socket, ep, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED |
                                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) < 0)
        return -1;
    void *m = zmq_socket(l->zctx, ZMQ_PAIR);
    int fd = -1;
    size_t len = sizeof fd;
    if (!m || zmq_connect(m, ep) < 0 || zmq_getsockopt(m, ZMQ_FD, &fd, &len) < 0) {
        if (m)
            zmq_close(m);
        return -1;
    }
    l->monitor_fds[l->nmonitors] = fd;
    l->monitor_kinds[l->nmonitors] = (uint8_t)kind;
    l->monitors[l->nmonitors++] = m;
    /* Read it dry once: its descriptor signals a message only to a reader
     * that has found nothing to read (libzmq wakes sleeping readers only). */
    jq_listeners_on_events(l);
    return 0;
}

static unsigned open_fds(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 64;
    while (readdir(d))
        n++;
    closedir(d);
    return n > 3 ? n - 3 : n; /* ".", ".." and the directory itself */
}

uint64_t jq_listeners_set_max(jq_listeners_t *l, uint64_t max)
{
    uint64_t used = open_fds();
    /* Beyond the mark, what may still come in: a full queue on every
     * listening socket, and what libzmq accepts before the loop hears of
     * the connection that reached the mark (an eighth, at least 16). */
    uint64_t room = l->limit > used + JQ_FD_RESERVE ? l->limit - used - JQ_FD_RESERVE : 0;
    uint64_t late = (uint64_t)l->backlog * l->nbound + (room / 8 > 16 ? room / 8 : 16);
    room = room > late ? room - late : 1;
    if (max == 0 || max > room) {
        if (max > room)
            jq_log(JQ_LOG_WARNING, "--max-connections %llu is more than the descriptor limit "
                                   "(%llu, %llu in use) allows; using %llu",
                    (unsigned long long)max, (unsigned long long)l->limit,
                    (unsigned long long)used, (unsigned long long)room);
        max = room;
    }
    l->st.max = max;
    l->low = max >= 20 ? max - max / 10 : max - 1; /* below max: no flapping */
    return max;
}

size_t jq_listeners_pollitems(jq_listeners_t *l, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    /* Their file descriptors, not the sockets: zmq_poll checks every socket
     * item's mailbox with a system call of its own on each turn of the loop
     * (two turns per request), while connection events are rare. The
     * descriptor wakes the loop when a monitor has something, and
     * on_events reads until nothing is left, so no event waits unseen. */
    for (unsigned i = 0; i < l->nmonitors && n < max; i++)
        items[n++] = (zmq_pollitem_t){.fd = l->monitor_fds[i], .events = ZMQ_POLLIN};
    return n;
}

/* An ipc endpoint's socket file, and the name it hides under while new
 * connections are not accepted. */
static void ipc_paths(const bound_t *b, char *path, char *hidden, size_t len)
{
    snprintf(path, len, "%s", b->endpoint + 6);
    snprintf(hidden, len, "%s.full", b->endpoint + 6);
}

/* Unbinding would not do: libzmq closes every connection a listener
 * accepted when it goes. So an ipc socket file is moved aside (connect()
 * then finds nothing and clients retry by themselves) and moved back
 * later; the listener and its connections never notice. A TCP listener
 * gets a socket filter that drops connection requests (a SYN without
 * ACK): clients resend theirs until the filter goes. Connections it
 * accepted before carry a copy of the filter, which drops nothing they
 * ever receive. */
static const struct sock_filter drop_syn[] = {
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13), /* the TCP flags */
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 1, 0), /* SYN, no ACK */
    BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
    BPF_STMT(BPF_RET | BPF_K, 0),
};

static void gate_tcp(const bound_t *b, bool closed)
{
    struct sock_fprog prog = {.len = sizeof drop_syn / sizeof drop_syn[0],
                              .filter = (struct sock_filter *)drop_syn};
    for (unsigned k = 0; k < b->ntcp; k++) {
        int rc = closed ? setsockopt(b->tcp_fds[k], SOL_SOCKET, SO_ATTACH_FILTER, &prog,
                                     sizeof prog)
                        : setsockopt(b->tcp_fds[k], SOL_SOCKET, SO_DETACH_FILTER, NULL, 0);
        if (rc < 0)
            jq_log(JQ_LOG_ERROR, "cannot %s new connections on %s: %s",
                    closed ? "hold back" : "let in", b->endpoint, strerror(errno));
    }
}

static void pause_accepting(jq_listeners_t *l)
{
    char path[600], hidden[600];
    for (unsigned i = 0; i < l->nbound; i++)
        if (l->bound[i].ipc) {
            ipc_paths(&l->bound[i], path, hidden, sizeof path);
            if (rename(path, hidden) < 0)
                jq_log(JQ_LOG_ERROR, "cannot move %s aside: %s", path, strerror(errno));
        } else {
            gate_tcp(&l->bound[i], true);
        }
    l->st.paused = true;
    l->st.pauses++;
    jq_log(JQ_LOG_WARNING, "%llu connections (--max-connections %llu): not accepting new ones "
                           "until at most %llu are open",
            (unsigned long long)l->st.connections, (unsigned long long)l->st.max,
            (unsigned long long)l->low);
}

static void resume_accepting(jq_listeners_t *l)
{
    char path[600], hidden[600];
    for (unsigned i = 0; i < l->nbound; i++)
        if (l->bound[i].ipc) {
            ipc_paths(&l->bound[i], path, hidden, sizeof path);
            if (rename(hidden, path) < 0)
                jq_log(JQ_LOG_ERROR, "cannot put %s back: %s", path, strerror(errno));
        } else {
            gate_tcp(&l->bound[i], false);
        }
    l->st.paused = false;
    jq_log(JQ_LOG_NOTICE, "%llu connections: accepting new ones again",
            (unsigned long long)l->st.connections);
}

/* Refused connections are logged at most once a minute, with how many
 * there were since: a flood of them cannot flood the log. */
static void note_refused(jq_listeners_t *l)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    uint64_t total = l->st.refused_auth + l->st.handshake_failed;
    if (l->refused_logged && now - l->refused_logged < 60 * 1000000ll)
        return;
    jq_log(JQ_LOG_WARNING, "refused %llu connection%s since %s (%llu unknown or revoked keys, "
                           "%llu failed handshakes in all so far)",
           (unsigned long long)(total - l->refused_reported), total - l->refused_reported == 1 ? "" : "s",
           l->refused_logged ? "the last report" : "the start",
           (unsigned long long)l->st.refused_auth, (unsigned long long)l->st.handshake_failed);
    l->refused_logged = now;
    l->refused_reported = total;
}

void jq_listeners_on_events(jq_listeners_t *l)
{
    for (unsigned i = 0; i < l->nmonitors; i++) {
        zmq_msg_t ev, addr;
        for (;;) {
            /* ZMQ_EVENTS takes in the socket's commands at once; a receive
             * alone may put that off (libzmq throttles it), and in a
             * connection flood that delay is descriptors gone. */
            int ready = 0;
            size_t len = sizeof ready;
            if (zmq_getsockopt(l->monitors[i], ZMQ_EVENTS, &ready, &len) < 0 ||
                !(ready & ZMQ_POLLIN))
                break;
            zmq_msg_init(&ev);
            if (zmq_msg_recv(&ev, l->monitors[i], ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&ev);
                break;
            }
            uint16_t event = 0;
            if (zmq_msg_size(&ev) >= 2)
                memcpy(&event, zmq_msg_data(&ev), 2);
            bool more = zmq_msg_more(&ev);
            zmq_msg_close(&ev);
            if (more) { /* the endpoint frame */
                zmq_msg_init(&addr);
                zmq_msg_recv(&addr, l->monitors[i], 0);
                zmq_msg_close(&addr);
            }
            if (event == ZMQ_EVENT_ACCEPTED) {
                l->st.connections++;
                l->st.by_kind[l->monitor_kinds[i]]++;
                l->st.accepted++;
                if (l->st.connections > l->st.peak)
                    l->st.peak = l->st.connections;
                /* At once: every event still queued is a connection in. */
                if (!l->st.paused && l->st.max && l->st.connections >= l->st.max)
                    pause_accepting(l);
            } else if (event == ZMQ_EVENT_DISCONNECTED && l->st.connections) {
                l->st.connections--;
                if (l->st.by_kind[l->monitor_kinds[i]])
                    l->st.by_kind[l->monitor_kinds[i]]--;
            } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
                l->st.refused_auth++;
                note_refused(l);
            } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                       event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
                l->st.handshake_failed++;
                note_refused(l);
            }
        }
    }
    if (!l->st.paused && l->st.max && l->st.connections >= l->st.max)
        pause_accepting(l);
    else if (l->st.paused && l->st.connections <= l->low)
        resume_accepting(l);
}

void jq_listeners_get_stats(jq_listeners_t *l, jq_listeners_stats_t *out)
{
    *out = l->st;
}
