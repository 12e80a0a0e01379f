/* test_nodelink.c: the node-to-node transport (broker/nodelink.c) in one uv
 * loop on loopback: connect and accept with the right raft id and address,
 * bytes both ways (small and several megabytes, byte for byte), refusals of
 * unknown keys on each side, raw TCP peers that send garbage, a truncated
 * handshake, nothing at all, or a replayed recording of a real handshake,
 * plain (insecure) mode, the daemons' own keypairs and authorized-keys
 * directories (broker/auth.c), and a three-node libraft cluster electing a
 * leader and applying an entry over it. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <czmq.h>
#include <ftw.h>
#include <raft.h>
#include <raft/uv.h>
#include <signal.h>
#include <sodium.h>
#include <unistd.h>
#include <uv.h>

#include "auth.h"
#include "nodelink.h"

#define WAIT_MS 10000 /* the bound of every wait (nothing here needs near it) */
#define SHORT_HANDSHAKE_MS 300

/* ---- a bounded wait on the loop ---- */

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Run the loop until cond(arg) or ms passed; returns cond(arg). */
static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, unsigned ms)
{
    bool expired = false;
    uv_timer_t timer;
    uv_timer_init(loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_deadline, ms, 0);
    while (!cond(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return cond(arg);
}

/* A free loopback port: bound to 0, asked, given back (libuv binds with
 * SO_REUSEADDR, so the port is usable again at once). */
static int free_port(uv_loop_t *loop)
{
    uv_tcp_t s;
    struct sockaddr_in sa;
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_init(loop, &s);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&s, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_tcp_getsockname(&s, (struct sockaddr *)&got, &len), 0);
    int port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    uv_close((uv_handle_t *)&s, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return port;
}

/* ---- a node: a transport with its keys, what it accepted ---- */

typedef struct {
    struct raft_uv_transport t;
    uint8_t pk[32], sk[32];
    const uint8_t *allowed[4]; /* keys authorize accepts */
    int nallowed;
    raft_id id;
    char address[64];
    int accepted;              /* accept_cb calls */
    raft_id acc_id;
    char acc_addr[64];
    uv_stream_t *acc_stream;
    bool closed;
} node_t;

static bool authorize(void *ctx, const uint8_t key[32])
{
    node_t *n = ctx;
    for (int i = 0; i < n->nallowed; i++)
        if (!memcmp(n->allowed[i], key, 32))
            return true;
    return false;
}

static void on_accept(struct raft_uv_transport *t, raft_id id, const char *address,
                      uv_stream_t *stream)
{
    node_t *n = t->data;
    n->accepted++;
    n->acc_id = id;
    snprintf(n->acc_addr, sizeof n->acc_addr, "%s", address);
    if (n->acc_stream) /* keep the first; a second one is a failure the test sees */
        uv_close((uv_handle_t *)stream, (uv_close_cb)raft_free);
    else
        n->acc_stream = stream;
}

static void node_make(node_t *n, uv_loop_t *loop, raft_id id, int port, bool insecure,
                      unsigned handshake_ms)
{
    memset(n, 0, sizeof *n);
    crypto_box_keypair(n->pk, n->sk);
    n->id = id;
    snprintf(n->address, sizeof n->address, "127.0.0.1:%d", port);
    n->t.data = n;
    jq_nodelink_opts_t o = {.loop = loop, .public_key = n->pk, .secret_key = n->sk,
                            .insecure = insecure, .authorize = authorize, .ctx = n,
                            .handshake_ms = handshake_ms};
    assert_int_equal(jq_nodelink_init(&n->t, &o), 0);
    assert_int_equal(n->t.init(&n->t, id, n->address), 0);
}

static void node_listen(node_t *n)
{
    assert_int_equal(n->t.listen(&n->t, on_accept), 0);
}

static void on_transport_closed(struct raft_uv_transport *t)
{
    ((node_t *)t->data)->closed = true;
}

static bool node_closed(void *arg)
{
    return ((node_t *)arg)->closed;
}

static void node_close(uv_loop_t *loop, node_t *n)
{
    if (n->acc_stream) {
        uv_close((uv_handle_t *)n->acc_stream, (uv_close_cb)raft_free);
        n->acc_stream = NULL;
    }
    n->t.close(&n->t, on_transport_closed);
    assert_true(run_until(loop, node_closed, n, WAIT_MS));
    jq_nodelink_close(&n->t);
    assert_null(n->t.impl);
}

static bool refused_one(void *arg)
{
    jq_nodelink_stats_t st;
    jq_nodelink_stats(&((node_t *)arg)->t, &st);
    return st.refused == 1;
}

static void allow(node_t *n, const node_t *peer)
{
    n->allowed[n->nallowed++] = peer->pk;
}

/* ---- a connect request ---- */

typedef struct {
    struct raft_uv_connect req;
    bool done;
    int status;
    uv_stream_t *stream;
} conn_t;

static void on_connected(struct raft_uv_connect *req, uv_stream_t *stream, int status)
{
    conn_t *c = req->data;
    c->done = true;
    c->status = status;
    c->stream = stream;
}

static bool conn_done(void *arg)
{
    return ((conn_t *)arg)->done;
}

static void connect_to(node_t *from, const node_t *to, conn_t *c)
{
    memset(c, 0, sizeof *c);
    c->req.data = c;
    assert_int_equal(from->t.connect(&from->t, &c->req, to->id, to->address, on_connected), 0);
    assert_false(c->done); /* the callback never runs inside connect */
}

static void stream_free(uv_stream_t **s)
{
    if (*s) {
        uv_close((uv_handle_t *)*s, (uv_close_cb)raft_free);
        *s = NULL;
    }
}

/* ---- moving bytes through the streams libraft would get ---- */

typedef struct {
    const uint8_t *want;
    size_t len, got;
    bool mismatch, eof;
    uint8_t buf[65536];
} sink_t;

static void sink_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sink_t *s = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)s->buf, sizeof s->buf);
}

static void sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    sink_t *s = st->data;
    (void)buf;
    if (n < 0) {
        s->eof = true;
        uv_read_stop(st);
        return;
    }
    if (s->got + (size_t)n > s->len || memcmp(s->want + s->got, s->buf, (size_t)n))
        s->mismatch = true;
    s->got += (size_t)n;
}

typedef struct {
    sink_t *a, *b;
} pair_t;

static bool sink_eof(void *arg)
{
    return ((sink_t *)arg)->eof;
}

static bool both_full(void *arg)
{
    pair_t *p = arg;
    return (p->a->got >= p->a->len || p->a->mismatch) && (p->b->got >= p->b->len || p->b->mismatch);
}

static void on_write_done(uv_write_t *w, int status)
{
    assert_int_equal(status, 0);
    free(w);
}

static void write_all(uv_stream_t *s, const uint8_t *p, size_t n)
{
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    assert_int_equal(uv_write(w, s, &b, 1, on_write_done), 0);
}

/* n bytes from x to y and m bytes from y to x at the same time, checked. */
static void exchange(uv_loop_t *loop, uv_stream_t *x, uv_stream_t *y, size_t n, size_t m)
{
    uint8_t *px = malloc(n), *py = malloc(m);
    sink_t *sx = calloc(1, sizeof *sx), *sy = calloc(1, sizeof *sy);
    randombytes_buf(px, n);
    randombytes_buf(py, m);
    sy->want = px;
    sy->len = n;
    sx->want = py;
    sx->len = m;
    x->data = sx;
    y->data = sy;
    assert_int_equal(uv_read_start(x, sink_alloc, sink_read), 0);
    assert_int_equal(uv_read_start(y, sink_alloc, sink_read), 0);
    write_all(x, px, n);
    write_all(y, py, m);
    pair_t p = {sx, sy};
    assert_true(run_until(loop, both_full, &p, WAIT_MS));
    assert_false(sx->mismatch);
    assert_false(sy->mismatch);
    assert_int_equal(sy->got, n);
    assert_int_equal(sx->got, m);
    uv_read_stop(x);
    uv_read_stop(y);
    free(px);
    free(py);
    free(sx);
    free(sy);
}

static void loop_done(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(loop), 0); /* every handle closed */
}

/* ---- the tests ---- */

static void test_connect_accept_and_bytes_both_ways(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b;
    node_make(&a, &loop, 1, free_port(&loop), false, 0);
    node_make(&b, &loop, 2, free_port(&loop), false, 0);
    allow(&a, &b);
    allow(&b, &a);
    node_listen(&b);
    conn_t c;
    connect_to(&a, &b, &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_non_null(c.stream);
    assert_int_equal(b.accepted, 1);
    assert_int_equal(b.acc_id, 1);
    assert_string_equal(b.acc_addr, a.address);
    exchange(&loop, c.stream, b.acc_stream, 5, 3);
    exchange(&loop, c.stream, b.acc_stream, 3 * 1024 * 1024 + 7, 5 * 1024 * 1024 + 1);
    jq_nodelink_stats_t sa, sb;
    jq_nodelink_stats(&a.t, &sa);
    jq_nodelink_stats(&b.t, &sb);
    assert_int_equal(sa.connected, 1);
    assert_int_equal(sb.accepted, 1);
    assert_int_equal(sb.refused, 0);
    assert_int_equal(sa.links, 1);
    /* Encrypted: the wire carries more than the payload, both ways. */
    assert_true(sa.bytes_out > 3 * 1024 * 1024 + 12);
    assert_true(sb.bytes_out > 5 * 1024 * 1024 + 4);
    assert_int_equal(sa.bytes_out, sb.bytes_in);

    /* libraft closing its stream ends the link: the other side sees EOF. */
    sink_t *s = calloc(1, sizeof *s);
    b.acc_stream->data = s;
    assert_int_equal(uv_read_start(b.acc_stream, sink_alloc, sink_read), 0);
    stream_free(&c.stream);
    assert_true(run_until(&loop, sink_eof, s, WAIT_MS));
    free(s);
    node_close(&loop, &a);
    node_close(&loop, &b);
    loop_done(&loop);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* libraft's side of one end writes far more than the other end reads: the
 * links queue a bounded amount (the kernel's socket buffers hold the rest),
 * and everything arrives once the reader reads. */
static void test_back_pressure(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b;
    node_make(&a, &loop, 1, free_port(&loop), false, 0);
    node_make(&b, &loop, 2, free_port(&loop), false, 0);
    allow(&a, &b);
    allow(&b, &a);
    node_listen(&b);
    conn_t c;
    connect_to(&a, &b, &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    size_t n = 64 * 1024 * 1024;
    uint8_t *data = malloc(n);
    randombytes_buf(data, n);
    write_all(c.stream, data, n);
    /* Until nothing moves any more (or a bound). */
    jq_nodelink_stats_t sa, sb;
    uint64_t last = UINT64_MAX;
    for (int i = 0; i < 100; i++) {
        run_until(&loop, never, NULL, 50);
        jq_nodelink_stats(&b.t, &sb);
        if (sb.bytes_in == last)
            break;
        last = sb.bytes_in;
    }
    jq_nodelink_stats(&a.t, &sa);
    jq_nodelink_stats(&b.t, &sb);
    assert_true(sb.bytes_in < n); /* stalled: the reader reads nothing */
    assert_true(sa.queued <= JQ_NODELINK_QUEUE_HIGH + 128 * 1024);
    assert_true(sb.queued <= JQ_NODELINK_QUEUE_HIGH + 128 * 1024);
    assert_true(sa.queued + sb.queued > 0);
    sink_t *s = calloc(1, sizeof *s);
    s->want = data;
    s->len = n;
    b.acc_stream->data = s;
    assert_int_equal(uv_read_start(b.acc_stream, sink_alloc, sink_read), 0);
    pair_t p = {s, s};
    assert_true(run_until(&loop, both_full, &p, WAIT_MS * 3));
    assert_false(s->mismatch);
    assert_int_equal(s->got, n);
    jq_nodelink_stats(&a.t, &sa);
    assert_int_equal(sa.queued, 0);
    uv_read_stop(b.acc_stream);
    free(s);
    free(data);
    stream_free(&c.stream);
    node_close(&loop, &a);
    node_close(&loop, &b);
    loop_done(&loop);
}

static void test_unknown_connecting_key_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b;
    node_make(&a, &loop, 1, free_port(&loop), false, 0);
    node_make(&b, &loop, 2, free_port(&loop), false, 0);
    allow(&a, &b); /* b does not know a */
    node_listen(&b);
    conn_t c;
    connect_to(&a, &b, &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, RAFT_NOCONNECTION);
    assert_null(c.stream);
    assert_int_equal(b.accepted, 0);
    jq_nodelink_stats_t sa, sb;
    jq_nodelink_stats(&a.t, &sa);
    jq_nodelink_stats(&b.t, &sb);
    assert_int_equal(sa.connect_failed, 1);
    assert_int_equal(sb.refused, 1);
    node_close(&loop, &a);
    node_close(&loop, &b);
    loop_done(&loop);
}

static void test_unknown_listening_key_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b, other;
    node_make(&a, &loop, 1, free_port(&loop), false, 0);
    node_make(&b, &loop, 2, free_port(&loop), false, 0);
    node_make(&other, &loop, 3, free_port(&loop), false, 0);
    /* a expects some other key where it connects (someone else answers on
     * the address); b would accept a. a must not talk to it. */
    allow(&a, &other);
    allow(&b, &a);
    node_listen(&b);
    conn_t c;
    connect_to(&a, &b, &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, RAFT_NOCONNECTION);
    assert_null(c.stream);
    /* b sees the link end before its handshake is done: refused, never
     * accepted. */
    assert_true(run_until(&loop, refused_one, &b, WAIT_MS));
    assert_int_equal(b.accepted, 0);
    jq_nodelink_stats_t sa;
    jq_nodelink_stats(&a.t, &sa);
    assert_int_equal(sa.connect_failed, 1);
    assert_int_equal(sa.connected, 0);
    node_close(&loop, &a);
    node_close(&loop, &b);
    node_close(&loop, &other);
    loop_done(&loop);
}

/* ---- raw TCP peers ---- */

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uint8_t *send;
    size_t send_len;
    bool ended;        /* EOF or error: the listener dropped us */
    size_t got;        /* bytes the listener sent */
    uint8_t buf[4096];
    uint8_t rec[4096]; /* what was received, from the start */
} raw_t;

static void raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    raw_t *r = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)r->buf, sizeof r->buf);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    raw_t *r = s->data;
    (void)buf;
    if (n < 0) {
        r->ended = true;
        uv_read_stop(s);
        return;
    }
    if (r->got + (size_t)n <= sizeof r->rec)
        memcpy(r->rec + r->got, r->buf, (size_t)n);
    r->got += (size_t)n;
}

static void raw_connected(uv_connect_t *req, int status)
{
    raw_t *r = req->data;
    if (status < 0) {
        r->ended = true;
        return;
    }
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    if (r->send_len)
        write_all((uv_stream_t *)&r->tcp, r->send, r->send_len);
}

static bool raw_ended(void *arg)
{
    return ((raw_t *)arg)->ended;
}

static void raw_start(uv_loop_t *loop, raw_t *r, const char *address, uint8_t *send,
                      size_t len)
{
    struct sockaddr_in sa;
    memset(r, 0, sizeof *r);
    r->send = send;
    r->send_len = len;
    uv_tcp_init(loop, &r->tcp);
    r->tcp.data = r;
    r->creq.data = r;
    assert_int_equal(uv_ip4_addr("127.0.0.1", atoi(strchr(address, ':') + 1), &sa), 0);
    assert_int_equal(uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&sa, raw_connected), 0);
}

static void raw_close(uv_loop_t *loop, raw_t *r)
{
    uv_close((uv_handle_t *)&r->tcp, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void test_raw_peers_dropped(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t b;
    node_make(&b, &loop, 2, free_port(&loop), false, SHORT_HANDSHAKE_MS);
    node_listen(&b);
    uint8_t garbage[300];
    randombytes_buf(garbage, sizeof garbage);
    /* A header that is right and keys cut short; then a right header with
     * an absurd frame after a made-up M1 (refused as an unknown key
     * first); then nothing at all. */
    uint8_t truncated[8 + 20] = {'j', 'q', 'n', 'l', 1, 'S', 0, 0};
    uint8_t plain_hdr[8 + 10 + 4] = {'j', 'q', 'n', 'l', 1, 'P', 0, 0};
    struct {
        uint8_t *p;
        size_t n;
        bool fast; /* dropped at once, not by the deadline */
    } cases[] = {
        {garbage, sizeof garbage, true},
        {truncated, sizeof truncated, false},
        {plain_hdr, sizeof plain_hdr, true}, /* plain mode to a secure node */
        {NULL, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        raw_t r;
        uint64_t t0 = uv_now(&loop);
        raw_start(&loop, &r, b.address, cases[i].p, cases[i].n);
        assert_true(run_until(&loop, raw_ended, &r, WAIT_MS));
        uint64_t took = uv_now(&loop) - t0;
        if (!cases[i].fast)
            assert_true(took + 50 >= SHORT_HANDSHAKE_MS); /* held until the deadline */
        assert_int_equal(r.got, 0); /* the listener said nothing */
        raw_close(&loop, &r);
    }
    assert_int_equal(b.accepted, 0);
    jq_nodelink_stats_t sb;
    jq_nodelink_stats(&b.t, &sb);
    assert_int_equal(sb.refused, 4);
    assert_int_equal(sb.links, 0);
    node_close(&loop, &b);
    loop_done(&loop);
}

/* ---- a proxy between a and b: records, and may change one byte ---- */

typedef struct proxy proxy_t;

/* One proxied connection (freed once both its handles are closed). */
typedef struct {
    proxy_t *p;
    uv_tcp_t front, back;  /* to the connecting node, to the listening one */
    uv_connect_t creq;
    size_t n_fwd, n_bwd;   /* bytes passed each way so far */
    int open;              /* handles not yet closed */
    bool ending;
    uint8_t fbuf[65536], bbuf[65536];
} pconn_t;

struct proxy {
    uv_tcp_t listener;
    struct sockaddr_in target;
    char address[64];      /* where a connects to reach b */
    uint8_t rec[8192];     /* what the connecting node sent, in order (first
                              connection) */
    size_t rec_len;
    int flip_dir;          /* 0: none; 1: the byte flip_at of a -> b; 2: of b -> a */
    size_t flip_at;
    int live;              /* connections not yet freed */
};

static void pc_closed(uv_handle_t *h)
{
    pconn_t *c = h->data;
    if (--c->open == 0) {
        c->p->live--;
        free(c);
    }
}

static void pc_end(pconn_t *c)
{
    if (c->ending)
        return;
    c->ending = true;
    uv_close((uv_handle_t *)&c->front, pc_closed);
    uv_close((uv_handle_t *)&c->back, pc_closed);
}

static void px_alloc_f(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
    pconn_t *c = h->data;
    (void)s;
    *buf = uv_buf_init((char *)c->fbuf, sizeof c->fbuf);
}

static void px_alloc_b(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
    pconn_t *c = h->data;
    (void)s;
    *buf = uv_buf_init((char *)c->bbuf, sizeof c->bbuf);
}

static void px_written(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void px_copy(uv_stream_t *to, const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n);
    memcpy(copy, p, n);
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init((char *)copy, (unsigned)n);
    w->data = copy;
    if (uv_write(w, to, &b, 1, px_written) < 0)
        px_written(w, 0);
}

/* n bytes read one way: flipped if the flip falls in them, passed on. */
static void px_pass(pconn_t *c, int dir, uint8_t *buf, ssize_t n)
{
    size_t *count = dir == 1 ? &c->n_fwd : &c->n_bwd;
    if (n < 0) {
        pc_end(c); /* one side ended: the other is cut too */
        return;
    }
    if (c->p->flip_dir == dir && c->p->flip_at >= *count && c->p->flip_at < *count + (size_t)n)
        buf[c->p->flip_at - *count] ^= 0x01;
    if (dir == 1 && c->p->rec_len + (size_t)n <= sizeof c->p->rec) {
        memcpy(c->p->rec + c->p->rec_len, buf, (size_t)n);
        c->p->rec_len += (size_t)n;
    }
    *count += (size_t)n;
    px_copy(dir == 1 ? (uv_stream_t *)&c->back : (uv_stream_t *)&c->front, buf, (size_t)n);
}

static void px_read_f(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n != 0)
        px_pass(s->data, 1, ((pconn_t *)s->data)->fbuf, n);
}

static void px_read_b(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n != 0)
        px_pass(s->data, 2, ((pconn_t *)s->data)->bbuf, n);
}

static void px_back_connected(uv_connect_t *req, int status)
{
    pconn_t *c = req->data;
    if (status < 0 || c->ending) {
        pc_end(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->front, px_alloc_f, px_read_f);
    uv_read_start((uv_stream_t *)&c->back, px_alloc_b, px_read_b);
}

static void px_incoming(uv_stream_t *server, int status)
{
    proxy_t *p = server->data;
    assert_int_equal(status, 0);
    pconn_t *c = calloc(1, sizeof *c);
    c->p = p;
    p->live++;
    uv_tcp_init(server->loop, &c->front);
    uv_tcp_init(server->loop, &c->back);
    c->front.data = c->back.data = c;
    c->open = 2;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->front), 0);
    c->creq.data = c;
    assert_int_equal(uv_tcp_connect(&c->creq, &c->back, (struct sockaddr *)&p->target,
                                    px_back_connected), 0);
}

static proxy_t *proxy_new(uv_loop_t *loop, const node_t *to)
{
    proxy_t *p = calloc(1, sizeof *p);
    int port = free_port(loop);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_ip4_addr("127.0.0.1", atoi(strchr(to->address, ':') + 1), &p->target);
    snprintf(p->address, sizeof p->address, "127.0.0.1:%d", port);
    uv_tcp_init(loop, &p->listener);
    p->listener.data = p;
    assert_int_equal(uv_tcp_bind(&p->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&p->listener, 16, px_incoming), 0);
    return p;
}

static bool proxy_idle(void *arg)
{
    return ((proxy_t *)arg)->live == 0;
}

static void proxy_free(uv_loop_t *loop, proxy_t *p)
{
    assert_true(run_until(loop, proxy_idle, p, WAIT_MS));
    uv_close((uv_handle_t *)&p->listener, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    free(p);
}

/* a connects to b through the proxy (b's id, the proxy's address). */
static void connect_via(node_t *a, const node_t *b, proxy_t *p, conn_t *c)
{
    node_t via = *b;
    snprintf(via.address, sizeof via.address, "%s", p->address);
    connect_to(a, &via, c);
}

static void test_replayed_handshake_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b;
    node_make(&a, &loop, 1, free_port(&loop), false, SHORT_HANDSHAKE_MS);
    node_make(&b, &loop, 2, free_port(&loop), false, SHORT_HANDSHAKE_MS);
    allow(&a, &b);
    allow(&b, &a);
    node_listen(&b);
    proxy_t *p = proxy_new(&loop, &b);
    conn_t c;
    connect_via(&a, &b, p, &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_int_equal(b.accepted, 1);
    exchange(&loop, c.stream, b.acc_stream, 100, 1);
    /* The recording: M1, M3 with the preamble, then 100 bytes in a frame. */
    assert_true(p->rec_len > 72 + 32 + 24);
    /* Nothing in clear: not the preamble's address, not the payload. */
    assert_null(memmem(p->rec, p->rec_len, a.address, strlen(a.address)));

    /* Played again to b, all at once and then in the original pieces: b
     * answers M1 with a fresh key, the old MAC_i does not verify. */
    raw_t r;
    raw_start(&loop, &r, b.address, p->rec, p->rec_len);
    assert_true(run_until(&loop, raw_ended, &r, WAIT_MS));
    assert_int_equal(r.got, 104); /* M2, and nothing after it */
    raw_close(&loop, &r);
    raw_start(&loop, &r, b.address, p->rec, 72);
    assert_true(run_until(&loop, raw_ended, &r, WAIT_MS)); /* by the deadline */
    raw_close(&loop, &r);
    assert_int_equal(b.accepted, 1);
    jq_nodelink_stats_t sb;
    jq_nodelink_stats(&b.t, &sb);
    assert_int_equal(sb.refused, 2);

    stream_free(&c.stream);
    node_close(&loop, &a);
    node_close(&loop, &b);
    proxy_free(&loop, p);
    loop_done(&loop);
}

static bool no_links(void *arg)
{
    node_t *b = arg;
    jq_nodelink_stats_t st;
    jq_nodelink_stats(&b->t, &st);
    return st.links == 0;
}

/* Someone on the path changes one bit, anywhere in the handshake, either
 * way: the connect fails, and b gives libraft nothing (a bit of M4, b's
 * last message, is seen by a alone: b's stream then ends at once). Changed
 * after the handshake: the link ends, and no changed byte reaches
 * libraft. */
static void test_tampered_traffic(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b;
    node_make(&a, &loop, 1, free_port(&loop), false, SHORT_HANDSHAKE_MS);
    node_make(&b, &loop, 2, free_port(&loop), false, SHORT_HANDSHAKE_MS);
    allow(&a, &b);
    allow(&b, &a);
    node_listen(&b);
    proxy_t *p = proxy_new(&loop, &b);
    /* a -> b: M1 (72), M3 (32 + 24 + a frame of the preamble); b -> a: M2
     * (104), M4 (24 + a frame of "ok"). */
    size_t fwd = 72 + 32 + 24 + 4 + 10 + strlen(a.address) + 17;
    size_t bwd = 104 + 24 + 4 + 2 + 17;
    for (int dir = 1; dir <= 2; dir++) {
        for (size_t at = 0; at < (dir == 1 ? fwd : bwd); at++) {
            p->flip_dir = dir;
            p->flip_at = at;
            conn_t c;
            connect_via(&a, &b, p, &c);
            assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
            if (c.status != RAFT_NOCONNECTION)
                fail_msg("a bit changed at %zu (%s) did not stop the handshake", at,
                         dir == 1 ? "a to b" : "b to a");
            if (b.accepted) {
                /* Only M4 (b's last message) changed: b was done, a
                 * refuses; b's stream ends without a byte. */
                assert_true(dir == 2 && at >= 104);
                sink_t *sk = calloc(1, sizeof *sk);
                b.acc_stream->data = sk;
                assert_int_equal(uv_read_start(b.acc_stream, sink_alloc, sink_read), 0);
                assert_true(run_until(&loop, sink_eof, sk, WAIT_MS));
                assert_int_equal(sk->got, 0);
                free(sk);
                stream_free(&b.acc_stream);
                b.accepted = 0;
            }
            assert_true(run_until(&loop, no_links, &b, WAIT_MS));
        }
    }
    /* Past the handshake: in a frame's length, inside it, in its tag. */
    size_t data_at[] = {2, 3, 30, 4 + 1000 + 16};
    for (size_t i = 0; i < sizeof data_at / sizeof *data_at; i++) {
        p->flip_dir = 1;
        p->flip_at = fwd + data_at[i];
        conn_t c;
        connect_via(&a, &b, p, &c);
        assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
        assert_int_equal(c.status, 0);
        assert_int_equal(b.accepted, 1);
        uint8_t data[1000];
        randombytes_buf(data, sizeof data);
        sink_t *s = calloc(1, sizeof *s);
        s->want = data;
        s->len = sizeof data;
        b.acc_stream->data = s;
        assert_int_equal(uv_read_start(b.acc_stream, sink_alloc, sink_read), 0);
        write_all(c.stream, data, sizeof data); /* one read, one frame */
        assert_true(run_until(&loop, sink_eof, s, WAIT_MS));
        assert_false(s->mismatch);
        assert_int_equal(s->got, 0);
        free(s);
        stream_free(&c.stream);
        stream_free(&b.acc_stream);
        b.accepted = 0;
    }
    node_close(&loop, &a);
    node_close(&loop, &b);
    proxy_free(&loop, p);
    loop_done(&loop);
}

static void test_insecure_mode(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b, s;
    node_make(&a, &loop, 7, free_port(&loop), true, 0);
    node_make(&b, &loop, 9, free_port(&loop), true, 0);
    node_listen(&b);
    conn_t c;
    connect_to(&a, &b, &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_int_equal(b.accepted, 1);
    assert_int_equal(b.acc_id, 7);
    assert_string_equal(b.acc_addr, a.address);
    exchange(&loop, c.stream, b.acc_stream, 1000, 2 * 1024 * 1024);
    stream_free(&c.stream);

    /* A secure node and a plain one do not talk. */
    node_make(&s, &loop, 11, free_port(&loop), false, 0);
    allow(&s, &b);
    conn_t c2;
    connect_to(&s, &b, &c2);
    assert_true(run_until(&loop, conn_done, &c2, WAIT_MS));
    assert_int_equal(c2.status, RAFT_NOCONNECTION);
    assert_int_equal(b.accepted, 1);
    node_close(&loop, &s);
    node_close(&loop, &a);
    node_close(&loop, &b);
    loop_done(&loop);
}

/* Addresses as names and IPv6 literals: listen resolves (and binds every
 * address of the name), connect resolves without blocking the loop. */
static void test_host_names_and_ipv6(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *forms[] = {"localhost:%d", "[::1]:%d"};
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        node_t a, b;
        node_make(&a, &loop, 1, free_port(&loop), false, 0);
        node_make(&b, &loop, 2, free_port(&loop), false, 0);
        snprintf(b.address, sizeof b.address, forms[i], free_port(&loop));
        assert_int_equal(b.t.init(&b.t, b.id, b.address), 0);
        allow(&a, &b);
        allow(&b, &a);
        if (b.t.listen(&b.t, on_accept) != 0) {
            /* No IPv6 on this host's loopback: nothing to test there. */
            print_message("skipped %s: %s\n", b.address, b.t.errmsg);
            node_close(&loop, &a);
            node_close(&loop, &b);
            continue;
        }
        conn_t c;
        connect_to(&a, &b, &c);
        assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
        assert_int_equal(c.status, 0);
        assert_int_equal(b.accepted, 1);
        assert_string_equal(b.acc_addr, a.address);
        exchange(&loop, c.stream, b.acc_stream, 10, 10);
        stream_free(&c.stream);
        node_close(&loop, &a);
        node_close(&loop, &b);
    }
    /* Malformed addresses are refused by init and by connect. */
    node_t a;
    node_make(&a, &loop, 1, free_port(&loop), false, 0);
    const char *bad[] = {"127.0.0.1", "::1:80", "[::1]80", "host:0", "host:65536", ":80",
                         "host:8x", "[::1]:", "[]:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        conn_t c;
        memset(&c, 0, sizeof c);
        if (a.t.init(&a.t, 1, bad[i]) != RAFT_INVALID)
            fail_msg("init accepted %s", bad[i]);
        if (a.t.connect(&a.t, &c.req, 2, bad[i], on_connected) != RAFT_NOCONNECTION)
            fail_msg("connect accepted %s", bad[i]);
    }
    node_close(&loop, &a);
    loop_done(&loop);
}

static void test_close_cancels_connects(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t a, b;
    node_make(&a, &loop, 1, free_port(&loop), false, 0);
    node_make(&b, &loop, 2, free_port(&loop), false, 0);
    allow(&a, &b);
    /* a closes while one connect is still connecting and another one is
     * resolving a name: both are called back with RAFT_CANCELED. */
    node_listen(&b);
    conn_t c1, c2;
    connect_to(&a, &b, &c1);
    memset(&c2, 0, sizeof c2);
    c2.req.data = &c2;
    assert_int_equal(a.t.connect(&a.t, &c2.req, 5, "localhost:1", on_connected), 0);
    assert_int_equal(a.t.connect(&a.t, &c2.req, 5, "no-port", on_connected),
                     RAFT_NOCONNECTION);
    a.t.close(&a.t, on_transport_closed);
    assert_true(run_until(&loop, node_closed, &a, WAIT_MS));
    assert_true(c1.done);
    assert_true(c2.done);
    assert_int_equal(c1.status, RAFT_CANCELED);
    assert_int_equal(c2.status, RAFT_CANCELED);
    jq_nodelink_close(&a.t);
    node_close(&loop, &b);
    loop_done(&loop);
}

/* ---- the daemon's keys (broker/auth.c) as the transport's ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The temporary directories of a test: made through it, removed by the
 * test's teardown even when an assertion ended the test early. */
typedef struct {
    char path[4][64];
    int n;
} tmpdirs_t;

static const char *tmpdir_new(tmpdirs_t *t)
{
    assert_true(t->n < 4);
    char *p = t->path[t->n];
    snprintf(p, sizeof t->path[0], "/tmp/jq-nodelink-XXXXXX");
    assert_non_null(mkdtemp(p));
    t->n++;
    return p;
}

static int tmpdirs_setup(void **state)
{
    *state = calloc(1, sizeof(tmpdirs_t));
    return *state ? 0 : -1;
}

static int tmpdirs_teardown(void **state)
{
    tmpdirs_t *t = *state;
    int rc = 0;
    for (int i = 0; i < t->n; i++)
        if (nftw(t->path[i], rm_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
            rc = -1;
    free(t);
    return rc;
}

/* A public certificate for z85 with role in dir/file, as an operator
 * writes one. */
static void key_file(const char *dir, const char *file, const char *z85, const char *role)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "metadata\n    name = \"%s\"\n    role = \"%s\"\ncurve\n"
                "    public-key = \"%s\"\n", file, role, z85);
    fclose(fp);
}

static bool daemon_authorize(void *ctx, const uint8_t key[32])
{
    return jq_auth_is_node_key(ctx, key);
}

static bool is_key(void *ctx, const uint8_t key[32])
{
    return !memcmp(ctx, key, 32);
}

/* Two daemons' data directories and keypairs. Node 0's server.key is in
 * node 1's authorized-keys directory with role admin (a node), a client
 * key with role submit (not a node); node 1 authorizes with
 * jq_auth_is_node_key. (One zauth per process, czmq's: node 0 has no
 * authorized-keys directory and checks node 1's key by hand.) */
static void test_daemon_keys(void **state)
{
    char keys[96], err[256];
    const char *dirs[2];
    jq_auth_t *auth[2];
    for (int i = 0; i < 2; i++)
        dirs[i] = tmpdir_new(*state);
    snprintf(keys, sizeof keys, "%s/authorized_keys", dirs[1]);
    auth[0] = jq_auth_new(dirs[0], NULL, err, sizeof err);
    if (!auth[0])
        fail_msg("%s", err);
    auth[1] = jq_auth_new(dirs[1], keys, err, sizeof err);
    if (!auth[1])
        fail_msg("%s", err);
    key_file(keys, "node0.key", jq_auth_public_key(auth[0]), "admin");
    zcert_t *client = zcert_new();
    key_file(keys, "client.key", zcert_public_txt(client), "submit");

    uint8_t pk[2][32], sk[2][32], z[32];
    for (int i = 0; i < 2; i++) {
        jq_auth_keypair(auth[i], pk[i], sk[i]);
        assert_non_null(zmq_z85_decode(z, jq_auth_public_key(auth[i])));
        assert_memory_equal(z, pk[i], 32);
        uint8_t derived[32]; /* the secret key is the public key's */
        crypto_scalarmult_base(derived, sk[i]);
        assert_memory_equal(derived, pk[i], 32);
    }
    assert_true(jq_auth_is_node_key(auth[1], pk[0]));
    assert_false(jq_auth_is_node_key(auth[1], pk[1])); /* not in its own directory */
    assert_false(jq_auth_is_node_key(auth[1], zcert_public_key(client))); /* submit */
    assert_false(jq_auth_is_node_key(auth[0], pk[1])); /* no directory at all */

    uv_loop_t loop;
    uv_loop_init(&loop);
    node_t n[2];
    for (int i = 0; i < 2; i++) {
        memset(&n[i], 0, sizeof n[i]);
        n[i].id = (raft_id)(i + 1);
        snprintf(n[i].address, sizeof n[i].address, "127.0.0.1:%d", free_port(&loop));
        n[i].t.data = &n[i];
        jq_nodelink_opts_t o = {.loop = &loop, .public_key = pk[i], .secret_key = sk[i],
                                .authorize = i ? daemon_authorize : is_key,
                                .ctx = i ? (void *)auth[1] : (void *)pk[1]};
        assert_int_equal(jq_nodelink_init(&n[i].t, &o), 0);
        sodium_memzero(sk[i], 32); /* copied by the transport */
        assert_int_equal(n[i].t.init(&n[i].t, n[i].id, n[i].address), 0);
    }
    node_listen(&n[1]);
    conn_t c;
    connect_to(&n[0], &n[1], &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_int_equal(n[1].accepted, 1);
    exchange(&loop, c.stream, n[1].acc_stream, 4096, 4096);
    stream_free(&c.stream);
    /* The client's key (role submit) is refused as a node. */
    node_t cl;
    memset(&cl, 0, sizeof cl);
    cl.t.data = &cl;
    jq_nodelink_opts_t o = {.loop = &loop, .public_key = zcert_public_key(client),
                            .secret_key = zcert_secret_key(client), .authorize = is_key,
                            .ctx = pk[1]};
    assert_int_equal(jq_nodelink_init(&cl.t, &o), 0);
    assert_int_equal(cl.t.init(&cl.t, 3, "127.0.0.1:9"), 0);
    connect_to(&cl, &n[1], &c);
    assert_true(run_until(&loop, conn_done, &c, WAIT_MS));
    assert_int_equal(c.status, RAFT_NOCONNECTION);
    assert_int_equal(n[1].accepted, 1);
    node_close(&loop, &cl);
    node_close(&loop, &n[0]);
    node_close(&loop, &n[1]);
    loop_done(&loop);
    zcert_destroy(&client);
    for (int i = 0; i < 2; i++)
        jq_auth_destroy(&auth[i]);
}

/* ---- libraft over the transport ---- */

#define NODES 3

typedef struct {
    node_t n;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft r;
    const char *dir;
    int applied;
    bool payload_ok;
    bool raft_closed;
} rnode_t;

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    rnode_t *rn = fsm->data;
    rn->applied++;
    rn->payload_ok = buf->len == 11 && !memcmp(buf->base, "hello raft!", 11);
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    (void)fsm;
    (void)bufs;
    (void)n;
    return RAFT_NOTFOUND; /* never reached: the test writes one entry */
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    (void)buf;
    return RAFT_NOTFOUND;
}

static bool some_leader(void *arg)
{
    rnode_t *rn = arg;
    for (int i = 0; i < NODES; i++)
        if (raft_state(&rn[i].r) == RAFT_LEADER)
            return true;
    return false;
}

static bool all_applied(void *arg)
{
    rnode_t *rn = arg;
    for (int i = 0; i < NODES; i++)
        if (rn[i].applied < 1)
            return false;
    return true;
}

static bool all_closed(void *arg)
{
    rnode_t *rn = arg;
    for (int i = 0; i < NODES; i++)
        if (!rn[i].raft_closed)
            return false;
    return true;
}

static void on_raft_closed(struct raft *r)
{
    ((rnode_t *)r->data)->raft_closed = true;
}

static void on_applied(struct raft_apply *req, int status, void *result)
{
    (void)result;
    *(int *)req->data = status == 0 ? 1 : -1;
}

static void test_libraft_cluster(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rnode_t *rn = calloc(NODES, sizeof *rn);
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (int i = 0; i < NODES; i++) {
        node_make(&rn[i].n, &loop, (raft_id)(i + 1), free_port(&loop), false, 0);
        assert_int_equal(raft_configuration_add(&conf, rn[i].n.id, rn[i].n.address, RAFT_VOTER),
                         0);
    }
    for (int i = 0; i < NODES; i++) {
        for (int j = 0; j < NODES; j++)
            allow(&rn[i].n, &rn[j].n);
        rn[i].dir = tmpdir_new(*state);
        /* raft_uv_init sets the transport's data: our node_t is reached
         * through the raft_io from here on (the accept callback is
         * libraft's). */
        assert_int_equal(raft_uv_init(&rn[i].io, &loop, rn[i].dir, &rn[i].n.t), 0);
        rn[i].fsm.version = 1;
        rn[i].fsm.data = &rn[i];
        rn[i].fsm.apply = fsm_apply;
        rn[i].fsm.snapshot = fsm_snapshot;
        rn[i].fsm.restore = fsm_restore;
        assert_int_equal(raft_init(&rn[i].r, &rn[i].io, &rn[i].fsm, rn[i].n.id,
                                   rn[i].n.address), 0);
        rn[i].r.data = &rn[i];
        raft_set_election_timeout(&rn[i].r, 300);
        raft_set_heartbeat_timeout(&rn[i].r, 50);
        assert_int_equal(raft_bootstrap(&rn[i].r, &conf), 0);
    }
    raft_configuration_close(&conf);
    for (int i = 0; i < NODES; i++)
        assert_int_equal(raft_start(&rn[i].r), 0);
    assert_true(run_until(&loop, some_leader, rn, WAIT_MS * 2));
    int leader = 0;
    while (raft_state(&rn[leader].r) != RAFT_LEADER)
        leader++;
    struct raft_buffer buf = {.base = raft_malloc(11), .len = 11};
    memcpy(buf.base, "hello raft!", 11);
    struct raft_apply req;
    int applied_status = 0;
    req.data = &applied_status;
    assert_int_equal(raft_apply(&rn[leader].r, &req, &buf, 1, on_applied), 0);
    assert_true(run_until(&loop, all_applied, rn, WAIT_MS * 2));
    for (int i = 0; i < NODES; i++) {
        assert_int_equal(rn[i].applied, 1);
        assert_true(rn[i].payload_ok);
    }
    assert_int_equal(applied_status, 1);
    jq_nodelink_stats_t st;
    uint64_t accepted = 0, connected = 0;
    for (int i = 0; i < NODES; i++) {
        jq_nodelink_stats(&rn[i].n.t, &st);
        accepted += st.accepted;
        connected += st.connected;
        assert_int_equal(st.refused, 0);
    }
    assert_true(connected >= NODES - 1);
    assert_true(accepted >= NODES - 1);

    for (int i = 0; i < NODES; i++)
        raft_close(&rn[i].r, on_raft_closed);
    assert_true(run_until(&loop, all_closed, rn, WAIT_MS));
    for (int i = 0; i < NODES; i++) {
        raft_uv_close(&rn[i].io);
        jq_nodelink_close(&rn[i].n.t);
    }
    free(rn);
    uv_run(&loop, UV_RUN_NOWAIT);
    loop_done(&loop);
}

int main(void)
{
    /* As jobqd does: a write to a closed connection is an error, not a
     * signal. */
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_accept_and_bytes_both_ways),
        cmocka_unit_test(test_back_pressure),
        cmocka_unit_test(test_unknown_connecting_key_refused),
        cmocka_unit_test(test_unknown_listening_key_refused),
        cmocka_unit_test(test_raw_peers_dropped),
        cmocka_unit_test(test_replayed_handshake_refused),
        cmocka_unit_test(test_tampered_traffic),
        cmocka_unit_test(test_insecure_mode),
        cmocka_unit_test(test_host_names_and_ipv6),
        cmocka_unit_test(test_close_cancels_connects),
        cmocka_unit_test_setup_teardown(test_daemon_keys, tmpdirs_setup, tmpdirs_teardown),
        cmocka_unit_test_setup_teardown(test_libraft_cluster, tmpdirs_setup, tmpdirs_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
