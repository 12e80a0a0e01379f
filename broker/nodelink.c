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
 * Wire format (version 1). I is the connecting node, R the listening one;
 * s/S a static secret/public key (the daemon's CURVE keypair), e/E a fresh
 * ephemeral pair per connection; DH is X25519 (crypto_scalarmult), H is
 * BLAKE2b-256 (crypto_generichash). HDR is 8 bytes: "jqnl", the version
 * (1), the mode ('S' secure, 'P' plain) and two zero bytes.
 *
 *   M1 I->R  HDR | E_i | S_i                       (72 bytes)
 *            R refuses (closes) unless authorize(S_i).
 *   M2 R->I  HDR | E_r | S_r | MAC_r               (104 bytes)
 *            h = H(label | M1 | HDR | E_r | S_r)
 *            K = H(h | DH(e_i,E_r) | DH(e_i,S_r) | DH(s_i,E_r))
 *              (R computes the same three as DH(e_r,E_i), DH(s_r,E_i),
 *               DH(e_r,S_i)); four subkeys of K (crypto_kdf): mac_r,
 *              mac_i, key_i2r, key_r2i.
 *            MAC_r = HMAC-SHA512-256(mac_r, h). I refuses unless
 *            authorize(S_r) and MAC_r verifies: computing K needs
 *            DH(e_i,S_r), i.e. s_r (e_i never leaves I).
 *   M3 I->R  MAC_i | secretstream header i2r | frame(preamble)
 *            MAC_i = HMAC-SHA512-256(mac_i, h): needs DH(s_i,E_r), i.e. s_i.
 *            preamble = raft id (u64 BE) | length (u16 BE) | address.
 *   M4 R->I  secretstream header r2i | frame("ok")
 *            Only after M4 does I report the connection to libraft, so a
 *            refusal by R is a failed connect, not a dead stream.
 *   then     frames both ways: u32 BE length n of the ciphertext (17 <=
 *            n <= FRAME_MAX + 17), then n bytes of
 *            crypto_secretstream_xchacha20poly1305 with the 4 length bytes
 *            as additional data (a changed length fails to decrypt).
 *
 * Both ephemeral keys enter K, so a recorded M1/M3 replayed to R (or M2/M4
 * replayed to I) meets a fresh ephemeral key and its MAC fails. Each MAC
 * has its own key, so R's cannot be reflected as I's. Static public keys
 * travel in clear: a node's key is not a secret (it sits in every peer's
 * authorized-keys directory); what is secret is the traffic. Forward
 * secrecy comes from the ephemeral keys (wiped once the keys are derived).
 *
 * Plain mode (opts.insecure; loopback only, chosen by the caller):
 *   M1 I->R  HDR | raft id (u64 BE) | length (u16 BE) | address
 *   M2 R->I  HDR
 *   then the raw bytes both ways.
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
#include <zmq.h>

#define KEY 32                     /* X25519 keys, MACs, BLAKE2b-256 */
#define HDR_LEN 8
#define VERSION 1
#define MODE_SECURE 'S'
#define MODE_PLAIN 'P'
#define ADDRESS_MAX 300            /* a raft address in the preamble */
#define FRAME_MAX (64 * 1024)      /* plaintext bytes in one frame */
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define SSHDR crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define IN_CAP (4 + FRAME_MAX + ABYTES) /* the largest thing a peer may send at once */
#define RELAY_HIGH JQ_NODELINK_QUEUE_HIGH
#define PENDING_MAX 64             /* incoming links still in their handshake */
#define LISTEN_MAX 8               /* addresses a listening host name may have */
#define M1_SECURE (HDR_LEN + 2 * KEY)
#define M2_SECURE (HDR_LEN + 3 * KEY)
#define PREAMBLE_FIXED 10          /* id and length */

static const char LABEL[] = "jobq nodelink v1";
static const char KDF_CTX[crypto_kdf_CONTEXTBYTES + 1] = "jqnlink1";
enum { SUB_MAC_R = 1, SUB_MAC_I, SUB_I2R, SUB_R2I };

typedef struct nl nl_t;
typedef struct link link_t;

enum link_state {
    L_RESOLVING,  /* connect: waiting for getaddrinfo */
    L_CONNECTING, /* connect: waiting for the TCP connection */
    L_HANDSHAKE,  /* the messages above */
    L_RELAY,      /* handed to libraft */
    L_DEAD,       /* handles closing; freed by the last close callback */
};

struct link {
    nl_t *nl;
    link_t *prev, *next;  /* nl->links */
    bool outgoing;        /* we connected (I), or we accepted (R) */
    enum link_state state;
    int step;             /* handshake message expected next (0, 1, 2) */
    bool draining;        /* one side ended: close once the writes are out */
    int open_handles;     /* handles not yet closed (the link is freed at 0) */
    bool gai_pending;     /* uv_getaddrinfo not yet called back */
    struct addrinfo *ai_list, *ai_cur; /* a resolved name: the addresses, the
                                          one being tried (owned) */
    bool tcp_reopening;   /* tcp closing, to be made again for ai_cur */
    uv_tcp_t tcp;
    uv_timer_t timer;     /* handshake deadline, then drain deadline */
    uv_pipe_t pipe;       /* our end of the socketpair, once relaying */
    bool pipe_open;
    bool tcp_reading, pipe_reading;
    size_t tcp_pending, pipe_pending; /* bytes queued for writing */
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    /* connect side: libraft's request until its callback fired */
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    int status;           /* what cb gets if the link dies first */
    raft_id peer_id;      /* connect: the target; accept: from the preamble */
    char *peer_address;   /* likewise (owned) */
    /* handshake */
    uint8_t e_sk[KEY], e_pk[KEY];
    uint8_t peer_static[KEY], peer_eph[KEY];
    uint8_t h[KEY];       /* transcript hash */
    uint8_t mac_r[KEY], mac_i[KEY], k_tx[KEY], k_rx[KEY];
    crypto_secretstream_xchacha20poly1305_state tx, rx;
    /* buffers */
    uint8_t *in;          /* TCP input not yet consumed (IN_CAP) */
    size_t in_len;
    uint8_t *pbuf;        /* pipe read buffer (FRAME_MAX) */
};

struct nl {
    struct raft_uv_transport *t;
    uv_loop_t *loop;
    bool insecure;
    uint8_t pk[KEY], sk[KEY];
    bool (*authorize)(void *ctx, const uint8_t peer_public[KEY]);
    void *ctx;
    unsigned handshake_ms;
    char *bind_address;   /* opts.bind_address copy, or NULL */
    raft_id id;           /* from transport->init */
    char *address;        /* likewise (owned) */
    raft_uv_accept_cb accept_cb;
    uv_tcp_t listeners[LISTEN_MAX];
    int n_listeners;      /* initialized listeners not yet closed */
    link_t *links;
    unsigned pending_in;  /* incoming links in their handshake */
    bool closing;
    raft_uv_transport_close_cb close_cb;
    jq_nodelink_stats_t st;
};

typedef struct {
    uv_write_t req;
    link_t *l;
    bool to_tcp;
    size_t len;
    uint8_t data[];
} wreq_t;

static void link_kill(link_t *l);
static void link_process(link_t *l);

/* ---- helpers ---- */

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_hdr(uint8_t *p, bool insecure)
{
    memcpy(p, "jqnl", 4);
    p[4] = VERSION;
    p[5] = insecure ? MODE_PLAIN : MODE_SECURE;
    p[6] = p[7] = 0;
}

static bool hdr_ok(const uint8_t *p, bool insecure)
{
    uint8_t want[HDR_LEN];
    put_hdr(want, insecure);
    return memcmp(p, want, HDR_LEN) == 0;
}

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

static void hash_update(crypto_generichash_state *s, const void *p, size_t n)
{
    crypto_generichash_update(s, (const unsigned char *)p, n);
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
    free(l->in);
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
    l->in = malloc(IN_CAP);
    l->pbuf = malloc(FRAME_MAX);
    if (!l->in || !l->pbuf) {
        free(l->in);
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

static wreq_t *wreq_new(link_t *l, bool to_tcp, size_t len)
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
static bool wreq_send(link_t *l, wreq_t *w)
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

/* One encrypted frame of n plaintext bytes into out (4 + n + ABYTES). */
static void seal_frame(link_t *l, uint8_t *out, const uint8_t *p, size_t n)
{
    put_be(out, n + ABYTES, 4);
    crypto_secretstream_xchacha20poly1305_push(&l->tx, out + 4, NULL, p, n, out, 4, 0);
}

/* ---- reading ---- */

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    link_t *l = h->data;
    (void)suggested;
    /* Full buffer: an empty buffer makes libuv report UV_ENOBUFS, which
     * kills the link. It cannot happen to a well-behaved peer: the buffer
     * holds a whole largest frame, consumed as soon as it is complete. */
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
    wreq_t *w = wreq_new(l, true, l->nl->insecure ? len : 4 + len + ABYTES);
    if (!w) {
        link_kill(l);
        return;
    }
    if (l->nl->insecure)
        memcpy(w->data, l->pbuf, len);
    else
        seal_frame(l, w->data, l->pbuf, len);
    wreq_send(l, w);
}

static void start_pipe_read(link_t *l)
{
    if (uv_read_start((uv_stream_t *)&l->pipe, on_pipe_alloc, on_pipe_read) < 0)
        link_kill(l);
    else
        l->pipe_reading = true;
}

/* ---- the handshake ---- */

/* The handshake succeeded: make the socketpair, give libraft its end. */
static void link_established(link_t *l)
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

/* K from the transcript hash and the three DH results; the subkeys from K.
 * -1 when a DH result is degenerate (a low-order point from the peer). */
static int derive_keys(link_t *l)
{
    nl_t *nl = l->nl;
    uint8_t ee[KEY], es[KEY], se[KEY], k[KEY];
    int rc = -1;
    if (l->outgoing) {
        if (crypto_scalarmult(ee, l->e_sk, l->peer_eph) < 0 ||
            crypto_scalarmult(es, l->e_sk, l->peer_static) < 0 ||
            crypto_scalarmult(se, nl->sk, l->peer_eph) < 0)
            goto out;
    } else {
        if (crypto_scalarmult(ee, l->e_sk, l->peer_eph) < 0 ||
            crypto_scalarmult(es, nl->sk, l->peer_eph) < 0 ||
            crypto_scalarmult(se, l->e_sk, l->peer_static) < 0)
            goto out;
    }
    crypto_generichash_state s;
    crypto_generichash_init(&s, NULL, 0, KEY);
    hash_update(&s, l->h, KEY);
    hash_update(&s, ee, KEY);
    hash_update(&s, es, KEY);
    hash_update(&s, se, KEY);
    crypto_generichash_final(&s, k, KEY);
    crypto_kdf_derive_from_key(l->mac_r, KEY, SUB_MAC_R, KDF_CTX, k);
    crypto_kdf_derive_from_key(l->mac_i, KEY, SUB_MAC_I, KDF_CTX, k);
    crypto_kdf_derive_from_key(l->outgoing ? l->k_tx : l->k_rx, KEY, SUB_I2R, KDF_CTX, k);
    crypto_kdf_derive_from_key(l->outgoing ? l->k_rx : l->k_tx, KEY, SUB_R2I, KDF_CTX, k);
    rc = 0;
out:
    sodium_memzero(ee, sizeof ee);
    sodium_memzero(es, sizeof es);
    sodium_memzero(se, sizeof se);
    sodium_memzero(k, sizeof k);
    return rc;
}

/* h = H(label | M1 | HDR | E_r | S_r): m1 the 72 bytes of M1, m2 the first
 * 72 of M2. */
static void transcript(link_t *l, const uint8_t *m1, const uint8_t *m2)
{
    crypto_generichash_state s;
    crypto_generichash_init(&s, NULL, 0, KEY);
    hash_update(&s, LABEL, sizeof LABEL - 1);
    hash_update(&s, m1, M1_SECURE);
    hash_update(&s, m2, HDR_LEN + 2 * KEY);
    crypto_generichash_final(&s, l->h, KEY);
}

static bool authorized(link_t *l)
{
    return l->nl->authorize(l->nl->ctx, l->peer_static);
}

/* The frame at the front of the input: its total size into *total and its
 * plaintext length into *plen. 0: incomplete, -1: malformed, 1: complete. */
static int frame_at(link_t *l, size_t *total, size_t *plen)
{
    if (l->in_len < 4)
        return 0;
    uint64_t n = get_be(l->in, 4);
    if (n < ABYTES || n > FRAME_MAX + ABYTES)
        return -1;
    if (l->in_len < 4 + n)
        return 0;
    *total = 4 + (size_t)n;
    *plen = (size_t)n - ABYTES;
    return 1;
}

static int open_frame(link_t *l, uint8_t *out, size_t total)
{
    unsigned char tag;
    unsigned long long outlen;
    if (crypto_secretstream_xchacha20poly1305_pull(&l->rx, out, &outlen, &tag, l->in + 4,
                                                   total - 4, l->in, 4) < 0 ||
        tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
        return -1;
    return 0;
}

/* The outgoing side's first message, once TCP is connected. */
static void send_m1(link_t *l)
{
    nl_t *nl = l->nl;
    if (nl->insecure) {
        size_t al = strlen(nl->address);
        wreq_t *w = wreq_new(l, true, HDR_LEN + PREAMBLE_FIXED + al);
        if (!w) {
            link_kill(l);
            return;
        }
        put_hdr(w->data, true);
        put_be(w->data + HDR_LEN, nl->id, 8);
        put_be(w->data + HDR_LEN + 8, al, 2);
        memcpy(w->data + HDR_LEN + PREAMBLE_FIXED, nl->address, al);
        wreq_send(l, w);
        return;
    }
    crypto_box_keypair(l->e_pk, l->e_sk);
    wreq_t *w = wreq_new(l, true, M1_SECURE);
    if (!w) {
        link_kill(l);
        return;
    }
    put_hdr(w->data, false);
    memcpy(w->data + HDR_LEN, l->e_pk, KEY);
    memcpy(w->data + HDR_LEN + KEY, nl->pk, KEY);
    wreq_send(l, w);
}

/* Rebuild M1 as the initiator sent it (for the transcript): the initiator's
 * keys, in the order sent. */
static void m1_bytes(uint8_t *m1, const uint8_t *e_i, const uint8_t *s_i)
{
    put_hdr(m1, false);
    memcpy(m1 + HDR_LEN, e_i, KEY);
    memcpy(m1 + HDR_LEN + KEY, s_i, KEY);
}

static void consume(link_t *l, size_t n)
{
    memmove(l->in, l->in + n, l->in_len - n);
    l->in_len -= n;
}

/* Accepting side. 1: progress made, 0: needs more input, -1: refuse. */
static int responder_step(link_t *l)
{
    nl_t *nl = l->nl;
    if (nl->insecure) {
        if (l->in_len < HDR_LEN + PREAMBLE_FIXED)
            return l->in_len >= HDR_LEN && !hdr_ok(l->in, true) ? -1 : 0;
        if (!hdr_ok(l->in, true))
            return -1;
        size_t al = (size_t)get_be(l->in + HDR_LEN + 8, 2);
        if (al == 0 || al > ADDRESS_MAX)
            return -1;
        if (l->in_len < HDR_LEN + PREAMBLE_FIXED + al)
            return 0;
        l->peer_id = get_be(l->in + HDR_LEN, 8);
        if (l->peer_id == 0 || memchr(l->in + HDR_LEN + PREAMBLE_FIXED, 0, al))
            return -1;
        l->peer_address = strndup((char *)l->in + HDR_LEN + PREAMBLE_FIXED, al);
        if (!l->peer_address)
            return -1;
        consume(l, HDR_LEN + PREAMBLE_FIXED + al);
        wreq_t *w = wreq_new(l, true, HDR_LEN);
        if (!w)
            return -1;
        put_hdr(w->data, true);
        if (!wreq_send(l, w))
            return 0;
        link_established(l);
        return 1;
    }
    if (l->step == 0) {
        if (l->in_len < M1_SECURE)
            return l->in_len >= HDR_LEN && !hdr_ok(l->in, false) ? -1 : 0;
        if (!hdr_ok(l->in, false))
            return -1;
        memcpy(l->peer_eph, l->in + HDR_LEN, KEY);
        memcpy(l->peer_static, l->in + HDR_LEN + KEY, KEY);
        if (!authorized(l)) {
            char z85[41];
            zmq_z85_encode(z85, l->peer_static, KEY); /* as in the authorized-keys files */
            jq_log(JQ_LOG_NOTICE, "node link: refused a connection with the unknown key %s", z85);
            return -1;
        }
        uint8_t m1[M1_SECURE];
        memcpy(m1, l->in, M1_SECURE);
        consume(l, M1_SECURE);
        crypto_box_keypair(l->e_pk, l->e_sk);
        wreq_t *w = wreq_new(l, true, M2_SECURE);
        if (!w)
            return -1;
        put_hdr(w->data, false);
        memcpy(w->data + HDR_LEN, l->e_pk, KEY);
        memcpy(w->data + HDR_LEN + KEY, nl->pk, KEY);
        transcript(l, m1, w->data);
        if (derive_keys(l) < 0) {
            free(w);
            return -1;
        }
        crypto_auth(w->data + HDR_LEN + 2 * KEY, l->h, KEY, l->mac_r);
        l->step = 1;
        return wreq_send(l, w) ? 1 : 0;
    }
    if (l->step == 1) {
        if (l->in_len < KEY + SSHDR)
            return 0;
        if (crypto_auth_verify(l->in, l->h, KEY, l->mac_i) < 0) {
            jq_log(JQ_LOG_NOTICE, "node link: refused a connection that did not prove its key");
            return -1;
        }
        if (crypto_secretstream_xchacha20poly1305_init_pull(&l->rx, l->in + KEY, l->k_rx) < 0)
            return -1;
        consume(l, KEY + SSHDR);
        l->step = 2;
        return 1;
    }
    /* step 2: the preamble frame */
    size_t total, plen;
    int f = frame_at(l, &total, &plen);
    if (f <= 0)
        return f;
    uint8_t pre[PREAMBLE_FIXED + ADDRESS_MAX];
    if (plen < PREAMBLE_FIXED + 1 || plen > sizeof pre || open_frame(l, pre, total) < 0)
        return -1;
    size_t al = (size_t)get_be(pre + 8, 2);
    l->peer_id = get_be(pre, 8);
    if (al != plen - PREAMBLE_FIXED || l->peer_id == 0 || memchr(pre + PREAMBLE_FIXED, 0, al))
        return -1;
    l->peer_address = strndup((char *)pre + PREAMBLE_FIXED, al);
    if (!l->peer_address)
        return -1;
    consume(l, total);
    wreq_t *w = wreq_new(l, true, SSHDR + 4 + 2 + ABYTES);
    if (!w)
        return -1;
    crypto_secretstream_xchacha20poly1305_init_push(&l->tx, w->data, l->k_tx);
    seal_frame(l, w->data + SSHDR, (const uint8_t *)"ok", 2);
    if (!wreq_send(l, w))
        return 0;
    link_established(l);
    return 1;
}

/* Connecting side. 1: progress, 0: needs more input, -1: give up. */
static int initiator_step(link_t *l)
{
    nl_t *nl = l->nl;
    if (nl->insecure) {
        if (l->in_len < HDR_LEN)
            return 0;
        if (!hdr_ok(l->in, true))
            return -1;
        consume(l, HDR_LEN);
        link_established(l);
        return 1;
    }
    if (l->step == 0) {
        if (l->in_len < M2_SECURE)
            return l->in_len >= HDR_LEN && !hdr_ok(l->in, false) ? -1 : 0;
        if (!hdr_ok(l->in, false))
            return -1;
        memcpy(l->peer_eph, l->in + HDR_LEN, KEY);
        memcpy(l->peer_static, l->in + HDR_LEN + KEY, KEY);
        if (!authorized(l)) {
            char z85[41];
            zmq_z85_encode(z85, l->peer_static, KEY);
            jq_log(JQ_LOG_NOTICE, "node link to %s: the node answered with the unknown key %s",
                   l->peer_address, z85);
            return -1;
        }
        uint8_t m1[M1_SECURE];
        m1_bytes(m1, l->e_pk, nl->pk);
        transcript(l, m1, l->in);
        if (derive_keys(l) < 0)
            return -1;
        if (crypto_auth_verify(l->in + HDR_LEN + 2 * KEY, l->h, KEY, l->mac_r) < 0) {
            jq_log(JQ_LOG_NOTICE, "node link to %s: the node did not prove its key",
                   l->peer_address);
            return -1;
        }
        consume(l, M2_SECURE);
        sodium_memzero(l->e_sk, sizeof l->e_sk);
        size_t al = strlen(nl->address);
        uint8_t pre[PREAMBLE_FIXED + ADDRESS_MAX];
        put_be(pre, nl->id, 8);
        put_be(pre + 8, al, 2);
        memcpy(pre + PREAMBLE_FIXED, nl->address, al);
        wreq_t *w = wreq_new(l, true, KEY + SSHDR + 4 + PREAMBLE_FIXED + al + ABYTES);
        if (!w)
            return -1;
        crypto_auth(w->data, l->h, KEY, l->mac_i);
        crypto_secretstream_xchacha20poly1305_init_push(&l->tx, w->data + KEY, l->k_tx);
        seal_frame(l, w->data + KEY + SSHDR, pre, PREAMBLE_FIXED + al);
        l->step = 1;
        return wreq_send(l, w) ? 1 : 0;
    }
    /* step 1: R's stream header; step 2: its "ok" */
    if (l->step == 1) {
        if (l->in_len < SSHDR)
            return 0;
        if (crypto_secretstream_xchacha20poly1305_init_pull(&l->rx, l->in, l->k_rx) < 0)
            return -1;
        consume(l, SSHDR);
        l->step = 2;
    }
    size_t total, plen;
    int f = frame_at(l, &total, &plen);
    if (f <= 0)
        return f;
    uint8_t ok[2];
    if (plen != 2 || open_frame(l, ok, total) < 0 || memcmp(ok, "ok", 2) != 0)
        return -1;
    consume(l, total);
    link_established(l);
    return 1;
}

/* Relaying: what TCP brought, to libraft. 1: progress, 0: needs more. */
static int relay_step(link_t *l)
{
    if (l->in_len == 0)
        return 0;
    if (l->nl->insecure) {
        wreq_t *w = wreq_new(l, false, l->in_len);
        if (!w)
            return -1;
        memcpy(w->data, l->in, l->in_len);
        l->in_len = 0;
        return wreq_send(l, w) ? 1 : 0;
    }
    size_t total, plen;
    int f = frame_at(l, &total, &plen);
    if (f <= 0)
        return f;
    wreq_t *w = wreq_new(l, false, plen);
    if (!w)
        return -1;
    if (open_frame(l, w->data, total) < 0) {
        free(w);
        return -1;
    }
    consume(l, total);
    if (plen == 0) {
        free(w);
        return 1;
    }
    return wreq_send(l, w) ? 1 : 0;
}

static void link_process(link_t *l)
{
    for (;;) {
        int r;
        if (l->state == L_HANDSHAKE)
            r = l->outgoing ? initiator_step(l) : responder_step(l);
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
    if (l->state != L_DEAD)
        send_m1(l);
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
    if (t && t->impl && t->init == nl_init)
        *out = ((const nl_t *)t->impl)->st;
}
