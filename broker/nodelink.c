/* nodelink.c: libraft's node-to-node transport, authenticated and encrypted
 * with the nodes' Curve25519 keypairs (see nodelink.h, docs/security.md
 * "Node traffic").
 *
 * DESIGN
 *
 * libraft wants, per connection, a uv stream it reads and writes plaintext
 * on, and for an accepted one the peer's raft id and address. Each
 * connection here (a "link") owns a TCP handle; once its handshake is done
 * it also owns one end of an AF_UNIX socketpair, whose other end is given
 * to libraft as a uv_pipe_t allocated with raft_malloc (libraft uv_close()s
 * it and frees it with raft_free). The link relays between its pipe end and
 * the TCP connection in the loop's thread: what libraft writes is cut into
 * frames and encrypted towards TCP; what TCP brings is decrypted and written
 * to the pipe. A link stops reading one side while the other side's write
 * queue holds more than RELAY_HIGH bytes (resuming under half of it), so
 * memory per link stays bounded whatever a peer or libraft does.
 *
 * The handshake and the frames on the wire are in nodelink_hs.c.
 *
 * Every read is bounded: the input buffer holds one largest frame
 * (IN_CAP), a length out of range or a bad MAC or tag closes the link, and
 * a link must finish its handshake within handshake_ms of its accept or of
 * the start of its connect (at most PENDING_MAX incoming ones at a time).
 * A refused connection is simply closed: the peer learns nothing about why.
 *
 * Ownership: a link lives until all its handles are closed (tcp, timer and,
 * once relaying, its pipe end) and no getaddrinfo is pending; its last close
 * callback frees it and, for a connect that never reached libraft, fires
 * the connect callback (RAFT_NOCONNECTION, or RAFT_CANCELED when the
 * transport closes). The transport's close callback fires once the
 * listeners and every link are gone; jq_nodelink_close frees the rest. */
#include "nodelink.h"
#include "nodelink_int.h"

#include "log.h"

#include <errno.h>
#include <netdb.h>
#include <raft.h>
#include <raft/uv.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define RELAY_HIGH JQ_NODELINK_QUEUE_HIGH
#define PENDING_MAX 64 /* incoming links still in their handshake */

static void link_kill(link_t *l);
static void link_process(link_t *l);

/* ---- helpers ---- */

/* "host:port" or "[v6]:port" into host and port (a port of 1..65535
 * required). -1 when malformed. */
static int split_address(const char *a, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    size_t hl;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (!close || close[1] != ':')
            return -1;
        hl = (size_t)(close - a - 1);
        a++;
        colon = close + 1;
    } else {
        colon = strchr(a, ':');
        if (!colon || strchr(colon + 1, ':'))
            return -1; /* a bare IPv6 address is ambiguous: brackets */
        hl = (size_t)(colon - a);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (hl == 0 || hl >= hostlen || pl == 0 || pl >= portlen || pl > 5 ||
        strspn(p, "0123456789") != pl)
        return -1;
    long v = strtol(p, NULL, 10);
    if (v < 1 || v > 65535)
        return -1;
    memcpy(host, a, hl);
    host[hl] = 0;
    memcpy(port, p, pl + 1);
    return 0;
}

/* A numeric address into sa; false when host is a name to resolve. */
static bool numeric_address(const char *host, const char *port, struct sockaddr_storage *sa)
{
    int p = atoi(port);
    memset(sa, 0, sizeof *sa);
    if (uv_ip4_addr(host, p, (struct sockaddr_in *)sa) == 0)
        return true;
    if (uv_ip6_addr(host, p, (struct sockaddr_in6 *)sa) == 0)
        return true;
    return false;
}

/* ---- links: life and death ---- */

static void link_free(link_t *l)
{
    nl_t *nl = l->nl;
    if (l->prev)
        l->prev->next = l->next;
    else
        nl->links = l->next;
    if (l->next)
        l->next->prev = l->prev;
    nl->st.links--;
    struct raft_uv_connect *req = l->req;
    raft_uv_connect_cb cb = l->cb;
    int status = l->status ? l->status : RAFT_NOCONNECTION;
    sodium_memzero(l->e_sk, sizeof l->e_sk);
    sodium_memzero(l->mac_r, sizeof l->mac_r);
    sodium_memzero(l->mac_i, sizeof l->mac_i);
    sodium_memzero(l->k_tx, sizeof l->k_tx);
    sodium_memzero(l->k_rx, sizeof l->k_rx);
    sodium_memzero(&l->tx, sizeof l->tx);
    sodium_memzero(&l->rx, sizeof l->rx);
    uv_freeaddrinfo(l->ai_list);
    free(l->in_buf);
    free(l->pbuf);
    free(l->peer_address);
    free(l);
    if (req && cb) {
        if (status != RAFT_CANCELED)
            nl->st.connect_failed++;
        cb(req, NULL, status); /* libraft may free req or connect again */
    }
    /* The transport may be finishing its close: the last link out fires it. */
    if (nl->closing && !nl->links && nl->n_listeners == 0 && nl->close_cb) {
        raft_uv_transport_close_cb ccb = nl->close_cb;
        nl->close_cb = NULL;
        ccb(nl->t);
    }
}

static void link_maybe_free(link_t *l)
{
    if (l->open_handles == 0 && !l->gai_pending)
        link_free(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    link_t *l = h->data;
    l->open_handles--;
    link_maybe_free(l);
}

/* The link's handshake is over (either way): it no longer counts against
 * PENDING_MAX. */
static void link_unpend(link_t *l)
{
    if (!l->outgoing && (l->state == L_HANDSHAKE) && l->nl->pending_in > 0)
        l->nl->pending_in--;
}

/* Close everything the link owns; it is freed once libuv is done with it. */
static void link_kill(link_t *l)
{
    if (l->state == L_DEAD)
        return;
    if (!l->outgoing && l->state == L_HANDSHAKE)
        l->nl->st.refused++;
    link_unpend(l);
    l->state = L_DEAD;
    if (!l->tcp_reopening) /* else its close callback counts it */
        uv_close((uv_handle_t *)&l->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&l->timer, on_handle_closed);
    if (l->pipe_open)
        uv_close((uv_handle_t *)&l->pipe, on_handle_closed);
    if (l->gai_pending)
        uv_cancel((uv_req_t *)&l->gai); /* its callback still comes (UV_EAI_CANCELED) */
}

static void on_timer(uv_timer_t *t)
{
    link_t *l = t->data;
    if (l->state != L_RELAY && l->state != L_DEAD)
        jq_log(JQ_LOG_INFO, "node link %s %s: timed out before the end of its handshake",
               l->outgoing ? "to" : "from", l->peer_address ? l->peer_address : "a peer");
    link_kill(l);
}

static link_t *link_new(nl_t *nl, bool outgoing)
{
    link_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->in = l->in_buf = malloc(IN_CAP);
    l->pbuf = malloc(FRAME_MAX);
    if (!l->in_buf || !l->pbuf) {
        free(l->in_buf);
        free(l->pbuf);
        free(l);
        return NULL;
    }
    l->nl = nl;
    l->outgoing = outgoing;
    l->state = outgoing ? L_RESOLVING : L_HANDSHAKE;
    uv_tcp_init(nl->loop, &l->tcp);
    uv_timer_init(nl->loop, &l->timer);
    l->tcp.data = l->timer.data = l;
    l->open_handles = 2;
    uv_timer_start(&l->timer, on_timer, nl->handshake_ms, 0);
    l->next = nl->links;
    if (nl->links)
        nl->links->prev = l;
    nl->links = l;
    nl->st.links++;
    return l;
}

/* ---- writing ---- */

wreq_t *nl_wreq_new(link_t *l, bool to_tcp, size_t len)
{
    wreq_t *w = malloc(sizeof *w + len);
    if (w) {
        w->l = l;
        w->to_tcp = to_tcp;
        w->len = len;
    }
    return w;
}

static void start_pipe_read(link_t *l);
static void start_tcp_read(link_t *l);

static void on_written(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    link_t *l = w->l;
    bool to_tcp = w->to_tcp;
    size_t len = w->len;
    free(w);
    l->nl->st.queued -= len;
    if (to_tcp)
        l->tcp_pending -= len;
    else
        l->pipe_pending -= len;
    if (l->state == L_DEAD)
        return; /* canceled by the close */
    if (status < 0) {
        link_kill(l);
        return;
    }
    if (to_tcp)
        l->nl->st.bytes_out += len;
    if (l->draining) {
        if (l->tcp_pending == 0 && l->pipe_pending == 0)
            link_kill(l);
        return;
    }
    if (l->state == L_RELAY) {
        if (to_tcp && !l->pipe_reading && l->tcp_pending <= RELAY_HIGH / 2)
            start_pipe_read(l);
        if (!to_tcp && !l->tcp_reading && l->pipe_pending <= RELAY_HIGH / 2)
            start_tcp_read(l);
    }
}

/* Queue w (owned from here) on the link's TCP or pipe; false when the link
 * died of it. */
bool nl_wreq_send(link_t *l, wreq_t *w)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    uv_stream_t *s = w->to_tcp ? (uv_stream_t *)&l->tcp : (uv_stream_t *)&l->pipe;
    if (uv_write(&w->req, s, &b, 1, on_written) < 0) {
        free(w);
        link_kill(l);
        return false;
    }
    l->nl->st.queued += w->len;
    if (w->to_tcp) {
        l->tcp_pending += w->len;
        if (l->tcp_pending > RELAY_HIGH && l->pipe_reading) {
            uv_read_stop((uv_stream_t *)&l->pipe);
            l->pipe_reading = false;
        }
    } else {
        l->pipe_pending += w->len;
        if (l->pipe_pending > RELAY_HIGH && l->tcp_reading) {
            uv_read_stop((uv_stream_t *)&l->tcp);
            l->tcp_reading = false;
        }
    }
    return true;
}

/* ---- reading ---- */

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    link_t *l = h->data;
    (void)suggested;
    /* What is left of the last read moves to the front once per read, not
     * once per frame. Full buffer: an empty buffer makes libuv report
     * UV_ENOBUFS, which kills the link. It cannot happen to a well-behaved
     * peer: the buffer holds a whole largest frame, consumed as soon as it
     * is complete. */
    if (l->in != l->in_buf) {
        memmove(l->in_buf, l->in, l->in_len);
        l->in = l->in_buf;
    }
    *buf = uv_buf_init((char *)l->in + l->in_len, (unsigned)(IN_CAP - l->in_len));
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    link_t *l = s->data;
    (void)buf;
    if (l->state == L_DEAD || n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF && l->state == L_RELAY && l->pipe_pending > 0) {
            /* The peer is done: what it sent still reaches libraft, within
             * the deadline. */
            uv_read_stop(s);
            l->tcp_reading = false;
            l->draining = true;
            uv_timer_start(&l->timer, on_timer, l->nl->handshake_ms, 0);
            return;
        }
        link_kill(l);
        return;
    }
    l->nl->st.bytes_in += (uint64_t)n;
    l->in_len += (size_t)n;
    link_process(l);
}

static void start_tcp_read(link_t *l)
{
    if (uv_read_start((uv_stream_t *)&l->tcp, on_tcp_alloc, on_tcp_read) < 0)
        link_kill(l);
    else
        l->tcp_reading = true;
}

static void on_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    link_t *l = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)l->pbuf, FRAME_MAX);
}

/* libraft wrote: to the peer, in one frame per read. */
static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    link_t *l = s->data;
    (void)buf;
    if (l->state != L_RELAY || n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF && l->tcp_pending > 0) {
            uv_read_stop(s);
            l->pipe_reading = false;
            l->draining = true;
            uv_timer_start(&l->timer, on_timer, l->nl->handshake_ms, 0);
            return;
        }
        link_kill(l);
        return;
    }
    size_t len = (size_t)n;
    wreq_t *w = nl_wreq_new(l, true, l->nl->insecure ? len : 4 + len + ABYTES);
    if (!w) {
        link_kill(l);
        return;
    }
    if (l->nl->insecure)
        memcpy(w->data, l->pbuf, len);
    else
        nl_seal_frame(l, w->data, l->pbuf, len);
    nl_wreq_send(l, w);
}

static void start_pipe_read(link_t *l)
{
    if (uv_read_start((uv_stream_t *)&l->pipe, on_pipe_alloc, on_pipe_read) < 0)
        link_kill(l);
    else
        l->pipe_reading = true;
}

/* ---- the end of the handshake, and the relay ---- */

/* The handshake succeeded: make the socketpair, give libraft its end. */
void nl_link_established(link_t *l)
{
    nl_t *nl = l->nl;
    int fds[2] = {-1, -1};
    uv_pipe_t *theirs = NULL;
    /* The stream states hold what they need; the rest is not kept. */
    sodium_memzero(l->e_sk, sizeof l->e_sk);
    sodium_memzero(l->mac_r, sizeof l->mac_r);
    sodium_memzero(l->mac_i, sizeof l->mac_i);
    sodium_memzero(l->k_tx, sizeof l->k_tx);
    sodium_memzero(l->k_rx, sizeof l->k_rx);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        goto fail;
    theirs = raft_malloc(sizeof *theirs);
    if (!theirs)
        goto fail;
    uv_pipe_init(nl->loop, &l->pipe, 0);
    l->pipe.data = l;
    l->pipe_open = true;
    l->open_handles++;
    if (uv_pipe_open(&l->pipe, fds[0]) < 0)
        goto fail;
    fds[0] = -1; /* the handle owns it */
    uv_pipe_init(nl->loop, theirs, 0);
    if (uv_pipe_open(theirs, fds[1]) < 0) {
        uv_close((uv_handle_t *)theirs, (uv_close_cb)raft_free);
        theirs = NULL;
        goto fail;
    }
    fds[1] = -1;
    uv_timer_stop(&l->timer);
    link_unpend(l);
    l->state = L_RELAY;
    start_pipe_read(l);
    if (l->state == L_DEAD) {
        uv_close((uv_handle_t *)theirs, (uv_close_cb)raft_free);
        return;
    }
    if (l->outgoing) {
        struct raft_uv_connect *req = l->req;
        raft_uv_connect_cb cb = l->cb;
        l->req = NULL;
        l->cb = NULL;
        nl->st.connected++;
        cb(req, (uv_stream_t *)theirs, 0);
    } else {
        nl->st.accepted++;
        nl->accept_cb(nl->t, l->peer_id, l->peer_address, (uv_stream_t *)theirs);
    }
    return;
fail:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    raft_free(theirs);
    jq_log(JQ_LOG_WARNING, "node link: cannot make its socketpair: %s", strerror(errno));
    link_kill(l);
}

/* Relaying: what TCP brought, to libraft. 1: progress, 0: needs more. */
static int relay_step(link_t *l)
{
    if (l->in_len == 0)
        return 0;
    if (l->nl->insecure) {
        wreq_t *w = nl_wreq_new(l, false, l->in_len);
        if (!w)
            return -1;
        memcpy(w->data, l->in, l->in_len);
        l->in_len = 0;
        return nl_wreq_send(l, w) ? 1 : 0;
    }
    size_t total, plen;
    int f = nl_frame_at(l, &total, &plen);
    if (f <= 0)
        return f;
    wreq_t *w = nl_wreq_new(l, false, plen);
    if (!w)
        return -1;
    if (nl_open_frame(l, w->data, total) < 0) {
        free(w);
        return -1;
    }
    nl_consume(l, total);
    if (plen == 0) {
        free(w);
        return 1;
    }
    return nl_wreq_send(l, w) ? 1 : 0;
}

static void link_process(link_t *l)
{
    for (;;) {
        int r;
        if (l->state == L_HANDSHAKE)
            r = l->outgoing ? nl_initiator_step(l) : nl_responder_step(l);
        else if (l->state == L_RELAY)
            r = relay_step(l);
        else
            return;
        if (r < 0) {
            link_kill(l);
            return;
        }
        if (r == 0)
            return;
    }
}

/* ---- connecting ---- */

static void tcp_connect(link_t *l, const struct sockaddr *sa);

/* The handle of a failed attempt is closed and made again for the next
 * address of the name (a handle that failed to connect cannot connect
 * again). */
static void on_tcp_reopen(uv_handle_t *h)
{
    link_t *l = h->data;
    l->tcp_reopening = false;
    if (l->state == L_DEAD) {
        l->open_handles--;
        link_maybe_free(l);
        return;
    }
    uv_tcp_init(l->nl->loop, &l->tcp);
    l->tcp.data = l;
    tcp_connect(l, l->ai_cur->ai_addr);
}

/* A connection attempt failed: the name's next address, or give up. */
static void connect_failed(link_t *l, int err)
{
    jq_log(JQ_LOG_DEBUG, "node link to %s: %s", l->peer_address, uv_strerror(err));
    if (l->ai_cur && l->ai_cur->ai_next) {
        l->ai_cur = l->ai_cur->ai_next;
        l->tcp_reopening = true;
        uv_close((uv_handle_t *)&l->tcp, on_tcp_reopen);
        return;
    }
    link_kill(l);
}

static void on_tcp_connected(uv_connect_t *req, int status)
{
    link_t *l = req->data;
    if (l->state == L_DEAD)
        return;
    if (status < 0) {
        connect_failed(l, status);
        return;
    }
    uv_tcp_nodelay(&l->tcp, 1); /* raft's heartbeats are small and urgent */
    l->state = L_HANDSHAKE;
    start_tcp_read(l);
    if (l->state != L_DEAD && nl_send_m1(l) < 0)
        link_kill(l);
}

static void tcp_connect(link_t *l, const struct sockaddr *sa)
{
    l->state = L_CONNECTING;
    l->creq.data = l;
    int rc = uv_tcp_connect(&l->creq, &l->tcp, sa, on_tcp_connected);
    if (rc < 0)
        connect_failed(l, rc);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    link_t *l = req->data;
    l->gai_pending = false;
    if (l->state == L_DEAD) {
        uv_freeaddrinfo(res);
        link_maybe_free(l);
        return;
    }
    if (status < 0 || !res) {
        jq_log(JQ_LOG_INFO, "node link to %s: cannot resolve: %s", l->peer_address,
               uv_strerror(status));
        uv_freeaddrinfo(res);
        link_kill(l);
        return;
    }
    l->ai_list = l->ai_cur = res;
    tcp_connect(l, res->ai_addr);
}

static int nl_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    nl_t *nl = t->impl;
    char host[NI_MAXHOST], port[8];
    if (nl->closing)
        return RAFT_CANCELED;
    if (!address || split_address(address, host, sizeof host, port, sizeof port) < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad node address %s", address ? address : "(null)");
        return RAFT_NOCONNECTION;
    }
    if (!nl->address) {
        snprintf(t->errmsg, sizeof t->errmsg, "transport not initialized");
        return RAFT_INVALID;
    }
    link_t *l = link_new(nl, true);
    if (!l || !(l->peer_address = strdup(address))) {
        if (l) {
            /* Nothing is pending on the link yet: its handles close, it goes. */
            l->cb = NULL;
            link_kill(l);
        }
        return RAFT_NOMEM;
    }
    l->req = req;
    l->cb = cb;
    l->peer_id = id;
    req->cb = cb;
    struct sockaddr_storage sa;
    if (numeric_address(host, port, &sa)) {
        tcp_connect(l, (struct sockaddr *)&sa);
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    l->gai.data = l;
    int rc = uv_getaddrinfo(nl->loop, &l->gai, on_resolved, host, port, &hints);
    if (rc < 0) {
        link_kill(l); /* fires cb later, from the loop */
        return 0;
    }
    l->gai_pending = true;
    return 0;
}

/* ---- listening ---- */

static void on_incoming(uv_stream_t *server, int status)
{
    nl_t *nl = server->data;
    if (status < 0) {
        jq_log(JQ_LOG_WARNING, "node link: accept: %s", uv_strerror(status));
        return;
    }
    link_t *l = link_new(nl, false);
    if (!l) {
        /* Out of memory: take the connection off the backlog and drop it. */
        uv_tcp_t *tmp = malloc(sizeof *tmp);
        if (tmp) {
            uv_tcp_init(nl->loop, tmp);
            if (uv_accept(server, (uv_stream_t *)tmp) == 0)
                nl->st.refused++;
            uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
        }
        return;
    }
    nl->pending_in++;
    if (uv_accept(server, (uv_stream_t *)&l->tcp) < 0) {
        link_unpend(l);
        l->state = L_DEAD;
        uv_close((uv_handle_t *)&l->tcp, on_handle_closed);
        uv_close((uv_handle_t *)&l->timer, on_handle_closed);
        return;
    }
    if (nl->pending_in > PENDING_MAX || nl->closing || !nl->accept_cb) {
        jq_log(JQ_LOG_WARNING, "node link: too many connections in their handshake: refused one");
        link_kill(l);
        return;
    }
    uv_tcp_nodelay(&l->tcp, 1);
    start_tcp_read(l);
}

static int nl_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    nl_t *nl = t->impl;
    const char *a = nl->bind_address ? nl->bind_address : nl->address;
    char host[NI_MAXHOST], port[8];
    if (!a || split_address(a, host, sizeof host, port, sizeof port) < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad node address %s", a ? a : "(null)");
        return RAFT_INVALID;
    }
    if (nl->n_listeners > 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "already listening");
        return RAFT_INVALID;
    }
    struct sockaddr_storage addrs[LISTEN_MAX];
    int n = 0;
    if (numeric_address(host, port, &addrs[0])) {
        n = 1;
    } else {
        /* Synchronous: listen runs once, at start-up (raft_start). */
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, port, &hints, &res);
        if (rc != 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "cannot resolve %s: %s", a, gai_strerror(rc));
            return RAFT_IOERR;
        }
        for (struct addrinfo *ai = res; ai && n < LISTEN_MAX; ai = ai->ai_next)
            if (ai->ai_addrlen <= sizeof addrs[0])
                memcpy(&addrs[n++], ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(res);
    }
    for (int i = 0; i < n; i++) {
        uv_tcp_t *s = &nl->listeners[i];
        uv_tcp_init(nl->loop, s);
        s->data = nl;
        nl->n_listeners++;
        int rc = uv_tcp_bind(s, (struct sockaddr *)&addrs[i], 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)s, 128, on_incoming);
        if (rc < 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "listen on %s: %s", a, uv_strerror(rc));
            return RAFT_IOERR; /* the listeners made so far close with the transport */
        }
    }
    nl->accept_cb = cb;
    return 0;
}

/* ---- the transport ---- */

static int nl_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    nl_t *nl = t->impl;
    char host[NI_MAXHOST], port[8];
    if (id == 0 || !address || strlen(address) > ADDRESS_MAX ||
        split_address(address, host, sizeof host, port, sizeof port) < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad node id or address %s",
                 address ? address : "(null)");
        return RAFT_INVALID;
    }
    char *copy = strdup(address);
    if (!copy)
        return RAFT_NOMEM;
    free(nl->address);
    nl->address = copy;
    nl->id = id;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    nl_t *nl = h->data;
    nl->n_listeners--;
    if (nl->closing && !nl->links && nl->n_listeners == 0 && nl->close_cb) {
        raft_uv_transport_close_cb ccb = nl->close_cb;
        nl->close_cb = NULL;
        ccb(nl->t);
    }
}

static void nl_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    nl_t *nl = t->impl;
    nl->closing = true;
    nl->close_cb = cb;
    nl->accept_cb = NULL;
    for (int i = 0; i < nl->n_listeners; i++)
        uv_close((uv_handle_t *)&nl->listeners[i], on_listener_closed);
    for (link_t *l = nl->links; l; l = l->next) {
        if (l->req)
            l->status = RAFT_CANCELED;
        link_kill(l);
    }
    if (!nl->links && nl->n_listeners == 0 && nl->close_cb) {
        nl->close_cb = NULL;
        if (cb)
            cb(t);
    }
}

int jq_nodelink_init(struct raft_uv_transport *t, const jq_nodelink_opts_t *o)
{
    void *data = t->data;
    memset(t, 0, sizeof *t);
    t->data = data;
    if (!o || !o->loop || (!o->insecure && (!o->public_key || !o->secret_key || !o->authorize))) {
        snprintf(t->errmsg, sizeof t->errmsg,
                 "node link: a loop, a keypair and authorize are required");
        return -1;
    }
    if (sodium_init() < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "node link: cannot initialize libsodium");
        return -1;
    }
    nl_t *nl = calloc(1, sizeof *nl);
    if (!nl || (o->bind_address && !(nl->bind_address = strdup(o->bind_address)))) {
        free(nl);
        snprintf(t->errmsg, sizeof t->errmsg, "out of memory");
        return -1;
    }
    nl->t = t;
    nl->loop = o->loop;
    nl->insecure = o->insecure;
    if (o->public_key)
        memcpy(nl->pk, o->public_key, KEY);
    if (o->secret_key)
        memcpy(nl->sk, o->secret_key, KEY);
    nl->authorize = o->authorize;
    nl->ctx = o->ctx;
    nl->handshake_ms = o->handshake_ms ? o->handshake_ms : JQ_NODELINK_HANDSHAKE_MS;
    t->impl = nl;
    t->init = nl_init;
    t->listen = nl_listen;
    t->connect = nl_connect;
    t->close = nl_close;
    return 0;
}

void jq_nodelink_close(struct raft_uv_transport *t)
{
    if (!t || !t->impl)
        return;
    nl_t *nl = t->impl;
    if (nl->links || nl->n_listeners > 0) {
        /* Handles of ours are still in the loop (the transport was not
         * closed through libraft or t->close first): freeing would leave
         * them pointing at freed memory, so this is leaked instead. */
        jq_log(JQ_LOG_ERROR, "node link: transport freed before it was closed (leaked)");
        t->impl = NULL;
        return;
    }
    sodium_memzero(nl->sk, sizeof nl->sk);
    free(nl->bind_address);
    free(nl->address);
    free(nl);
    t->impl = NULL;
}

void jq_nodelink_stats(const struct raft_uv_transport *t, jq_nodelink_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!t || !t->impl || t->init != nl_init)
        return;
    const nl_stats_t *st = &((const nl_t *)t->impl)->st;
    out->accepted = atomic_load_explicit(&st->accepted, memory_order_relaxed);
    out->refused = atomic_load_explicit(&st->refused, memory_order_relaxed);
    out->connected = atomic_load_explicit(&st->connected, memory_order_relaxed);
    out->connect_failed = atomic_load_explicit(&st->connect_failed, memory_order_relaxed);
    out->bytes_in = atomic_load_explicit(&st->bytes_in, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&st->bytes_out, memory_order_relaxed);
    out->links = atomic_load_explicit(&st->links, memory_order_relaxed);
    out->queued = atomic_load_explicit(&st->queued, memory_order_relaxed);
}
