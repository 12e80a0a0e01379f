/* nodelink_int.h: what broker/nodelink.c (the transport: links, the relay,
 * connect and listen) and broker/nodelink_hs.c (the handshake and the
 * frames: everything cryptographic) share. Private to those two files. */
#ifndef JOBQ_NODELINK_INT_H
#define JOBQ_NODELINK_INT_H

#include "nodelink.h"

#include <netdb.h>
#include <stdatomic.h>
#include <raft.h>
#include <raft/uv.h>
#include <sodium.h>
#include <uv.h>

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
#define LISTEN_MAX 8               /* addresses a listening host name may have */

typedef struct nl nl_t;
typedef struct link link_t;

/* The counters of jq_nodelink_stats_t, atomic so that the daemon's
 * metrics may read them from another thread while the loop counts. */
typedef struct {
    _Atomic uint64_t accepted, refused, connected, connect_failed;
    _Atomic uint64_t bytes_in, bytes_out, links, queued;
} nl_stats_t;

enum link_state {
    L_RESOLVING,  /* connect: waiting for getaddrinfo */
    L_CONNECTING, /* connect: waiting for the TCP connection */
    L_HANDSHAKE,  /* the messages of nodelink_hs.c */
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
    uint8_t *in_buf;      /* TCP input buffer (IN_CAP) */
    uint8_t *in;          /* where its unconsumed bytes start (in_buf after
                             each read: consuming only moves this) */
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
    nl_stats_t st;
};

typedef struct {
    uv_write_t req;
    link_t *l;
    bool to_tcp;
    size_t len;
    uint8_t data[];
} wreq_t;

/* nodelink.c */
/* A write of len bytes (filled by the caller) to the link's TCP (to_tcp)
 * or to its pipe end; NULL when out of memory. */
wreq_t *nl_wreq_new(link_t *l, bool to_tcp, size_t len);
/* Queue w (owned from here on); false when the link died of it. */
bool nl_wreq_send(link_t *l, wreq_t *w);
/* The handshake succeeded: give libraft its stream (or kill the link). */
void nl_link_established(link_t *l);

/* nodelink_hs.c */
/* The connecting side's first message, once TCP is connected; -1 when out
 * of memory. */
int nl_send_m1(link_t *l);
/* One step of the handshake on the input buffered so far: 1 progress was
 * made (call again), 0 more input is needed, -1 refuse the connection. */
int nl_responder_step(link_t *l);
int nl_initiator_step(link_t *l);
/* One encrypted frame of n plaintext bytes into out (4 + n + ABYTES). */
void nl_seal_frame(link_t *l, uint8_t *out, const uint8_t *p, size_t n);
/* The frame at the front of the input: 1 complete (its total size and
 * plaintext length set), 0 incomplete, -1 malformed. */
int nl_frame_at(link_t *l, size_t *total, size_t *plen);
/* Decrypt the complete frame at the front of the input into out; -1 when
 * it does not authenticate. */
int nl_open_frame(link_t *l, uint8_t *out, size_t total);
/* Drop n bytes from the front of the input. */
void nl_consume(link_t *l, size_t n);

#endif
