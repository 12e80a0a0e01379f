/* listeners.c: binding, monitors, and pausing accept at the high-water
 * mark (see listeners.h). */
#include "listeners.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

typedef struct {
    void *socket;
    char endpoint[512]; /* as bound, wildcards resolved */
    bool ipc;
} bound_t;

struct jq_listeners {
    void *zctx;
    bound_t bound[JQ_MAX_BOUND];
    unsigned nbound;
    void *monitors[JQ_MAX_BOUND];
    unsigned nmonitors;
    bool verbose;
    jq_listeners_stats_t st;
    uint64_t low;            /* resume accepting at or below this */
};

jq_listeners_t *jq_listeners_new(void *zctx, bool verbose)
{
    jq_listeners_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->zctx = zctx;
    l->verbose = verbose;
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

static int bind_one(bound_t *b)
{
    mode_t old = umask(0117); /* an ipc socket file is born 0660 */
    int rc = zmq_bind(b->socket, b->endpoint);
    int err = errno;
    umask(old);
    if (rc == 0 && b->ipc)
        chmod(b->endpoint + 6, 0660);
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
    b->socket = socket;
    b->ipc = strncmp(endpoint, "ipc://", 6) == 0;
    snprintf(b->endpoint, sizeof b->endpoint, "%s", endpoint);
    if (bind_one(b) < 0)
        return -1;
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

int jq_listeners_watch(jq_listeners_t *l, void *socket)
{
    if (l->nmonitors == JQ_MAX_BOUND)
        return -1;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://jobq-monitor-%u", l->nmonitors);
    if (zmq_socket_monitor(socket, ep, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) < 0)
        return -1;
    void *m = zmq_socket(l->zctx, ZMQ_PAIR);
    if (!m || zmq_connect(m, ep) < 0) {
        if (m)
            zmq_close(m);
        return -1;
    }
    l->monitors[l->nmonitors++] = m;
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
    struct rlimit rl;
    uint64_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                         ? rl.rlim_cur
                         : 1u << 20;
    uint64_t used = open_fds();
    uint64_t room = limit > used + JQ_FD_RESERVE ? limit - used - JQ_FD_RESERVE : 1;
    if (max == 0 || max > room) {
        if (max > room)
            fprintf(stderr, "jobqd: --max-connections %llu is more than the descriptor limit "
                            "(%llu, %llu in use) allows; using %llu\n",
                    (unsigned long long)max, (unsigned long long)limit,
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
    for (unsigned i = 0; i < l->nmonitors && n < max; i++)
        items[n++] = (zmq_pollitem_t){.socket = l->monitors[i], .events = ZMQ_POLLIN};
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
 * later; the listener and its connections never notice. TCP listeners
 * stay: libzmq takes EMFILE on a TCP accept in its stride (the connection
 * waits in the kernel's backlog), which the reserve below the limit makes
 * rare. */
static void pause_accepting(jq_listeners_t *l)
{
    char path[600], hidden[600];
    for (unsigned i = 0; i < l->nbound; i++)
        if (l->bound[i].ipc) {
            ipc_paths(&l->bound[i], path, hidden, sizeof path);
            if (rename(path, hidden) < 0)
                fprintf(stderr, "jobqd: cannot move %s aside: %s\n", path, strerror(errno));
        }
    l->st.paused = true;
    l->st.pauses++;
    fprintf(stderr, "jobqd: %llu connections (--max-connections %llu): not accepting new ones "
                    "until at most %llu are open\n",
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
                fprintf(stderr, "jobqd: cannot put %s back: %s\n", path, strerror(errno));
        }
    l->st.paused = false;
    fprintf(stderr, "jobqd: %llu connections: accepting new ones again\n",
            (unsigned long long)l->st.connections);
}

void jq_listeners_on_events(jq_listeners_t *l)
{
    for (unsigned i = 0; i < l->nmonitors; i++) {
        zmq_msg_t ev, addr;
        for (;;) {
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
                l->st.accepted++;
                if (l->st.connections > l->st.peak)
                    l->st.peak = l->st.connections;
            } else if (event == ZMQ_EVENT_DISCONNECTED && l->st.connections) {
                l->st.connections--;
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
