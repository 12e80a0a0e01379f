/* nodelink_hs.c: the node transport's handshake and frames (see
 * nodelink.h, nodelink.c for the relay, docs/security.md "Node traffic"):
 * everything cryptographic, on the bytes a link has buffered.
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
 * has its own key, so R's cannot be reflected as I's. K needs both static
 * secrets (DH(e_i,S_r) and DH(s_i,E_r)), so a stolen key of one node does
 * not let its thief pose as another node to it. Static public keys travel
 * in clear: a node's key is not a secret (it sits in every peer's
 * authorized-keys directory); what is secret is the traffic. Forward
 * secrecy comes from the ephemeral keys (wiped once the keys are derived).
 * A DH result of all zeros (a low-order point sent by the peer) refuses
 * the connection.
 *
 * Plain mode (opts.insecure; loopback only, chosen by the caller):
 *   M1 I->R  HDR | raft id (u64 BE) | length (u16 BE) | address
 *   M2 R->I  HDR
 *   then the raw bytes both ways.
 *
 * A message that is wrong refuses the connection as soon as it is complete
 * (a wrong header as soon as its 8 bytes are in); one that never completes
 * meets the handshake deadline. Nothing is answered to a peer whose key is
 * not authorized, and no reason is ever sent. */
#include "nodelink_int.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define M1_SECURE (HDR_LEN + 2 * KEY)
#define M2_SECURE (HDR_LEN + 3 * KEY)
#define PREAMBLE_FIXED 10          /* id and length */
static const char LABEL[] = "jobq nodelink v1";
static const char KDF_CTX[crypto_kdf_CONTEXTBYTES + 1] = "jqnlink1";
enum { SUB_MAC_R = 1, SUB_MAC_I, SUB_I2R, SUB_R2I };

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

static void hash_update(crypto_generichash_state *s, const void *p, size_t n)
{
    crypto_generichash_update(s, (const unsigned char *)p, n);
}

void nl_consume(link_t *l, size_t n)
{
    l->in += n;
    l->in_len -= n;
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

static bool authorized(link_t *l)
{
    return l->nl->authorize(l->nl->ctx, l->peer_static);
}

/* One encrypted frame of n plaintext bytes into out (4 + n + ABYTES). */
void nl_seal_frame(link_t *l, uint8_t *out, const uint8_t *p, size_t n)
{
    put_be(out, n + ABYTES, 4);
    crypto_secretstream_xchacha20poly1305_push(&l->tx, out + 4, NULL, p, n, out, 4, 0);
}

/* The frame at the front of the input: its total size into *total and its
 * plaintext length into *plen. 0: incomplete, -1: malformed, 1: complete. */
int nl_frame_at(link_t *l, size_t *total, size_t *plen)
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

int nl_open_frame(link_t *l, uint8_t *out, size_t total)
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
int nl_send_m1(link_t *l)
{
    nl_t *nl = l->nl;
    wreq_t *w;
    if (nl->insecure) {
        size_t al = strlen(nl->address);
        if (!(w = nl_wreq_new(l, true, HDR_LEN + PREAMBLE_FIXED + al)))
            return -1;
        put_hdr(w->data, true);
        put_be(w->data + HDR_LEN, nl->id, 8);
        put_be(w->data + HDR_LEN + 8, al, 2);
        memcpy(w->data + HDR_LEN + PREAMBLE_FIXED, nl->address, al);
    } else {
        if (!(w = nl_wreq_new(l, true, M1_SECURE)))
            return -1;
        crypto_box_keypair(l->e_pk, l->e_sk);
        put_hdr(w->data, false);
        memcpy(w->data + HDR_LEN, l->e_pk, KEY);
        memcpy(w->data + HDR_LEN + KEY, nl->pk, KEY);
    }
    nl_wreq_send(l, w); /* a failure kills the link */
    return 0;
}

/* Rebuild M1 as the initiator sent it (for the transcript): the initiator's
 * keys, in the order sent. */
static void m1_bytes(uint8_t *m1, const uint8_t *e_i, const uint8_t *s_i)
{
    put_hdr(m1, false);
    memcpy(m1 + HDR_LEN, e_i, KEY);
    memcpy(m1 + HDR_LEN + KEY, s_i, KEY);
}

/* Accepting side. 1: progress made, 0: needs more input, -1: refuse. */
int nl_responder_step(link_t *l)
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
        nl_consume(l, HDR_LEN + PREAMBLE_FIXED + al);
        wreq_t *w = nl_wreq_new(l, true, HDR_LEN);
        if (!w)
            return -1;
        put_hdr(w->data, true);
        if (!nl_wreq_send(l, w))
            return 0;
        nl_link_established(l);
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
            jq_log(JQ_LOG_NOTICE,
                   "node link: refused a connection from the key %s: not authorized as a node",
                   z85);
            return -1;
        }
        uint8_t m1[M1_SECURE];
        memcpy(m1, l->in, M1_SECURE);
        nl_consume(l, M1_SECURE);
        crypto_box_keypair(l->e_pk, l->e_sk);
        wreq_t *w = nl_wreq_new(l, true, M2_SECURE);
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
        return nl_wreq_send(l, w) ? 1 : 0;
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
        nl_consume(l, KEY + SSHDR);
        l->step = 2;
        return 1;
    }
    /* step 2: the preamble frame */
    size_t total, plen;
    int f = nl_frame_at(l, &total, &plen);
    if (f <= 0)
        return f;
    uint8_t pre[PREAMBLE_FIXED + ADDRESS_MAX];
    if (plen < PREAMBLE_FIXED + 1 || plen > sizeof pre || nl_open_frame(l, pre, total) < 0)
        return -1;
    size_t al = (size_t)get_be(pre + 8, 2);
    l->peer_id = get_be(pre, 8);
    if (al != plen - PREAMBLE_FIXED || l->peer_id == 0 || memchr(pre + PREAMBLE_FIXED, 0, al))
        return -1;
    l->peer_address = strndup((char *)pre + PREAMBLE_FIXED, al);
    if (!l->peer_address)
        return -1;
    nl_consume(l, total);
    wreq_t *w = nl_wreq_new(l, true, SSHDR + 4 + 2 + ABYTES);
    if (!w)
        return -1;
    crypto_secretstream_xchacha20poly1305_init_push(&l->tx, w->data, l->k_tx);
    nl_seal_frame(l, w->data + SSHDR, (const uint8_t *)"ok", 2);
    if (!nl_wreq_send(l, w))
        return 0;
    nl_link_established(l);
    return 1;
}

/* Connecting side. 1: progress, 0: needs more input, -1: give up. */
int nl_initiator_step(link_t *l)
{
    nl_t *nl = l->nl;
    if (nl->insecure) {
        if (l->in_len < HDR_LEN)
            return 0;
        if (!hdr_ok(l->in, true))
            return -1;
        nl_consume(l, HDR_LEN);
        nl_link_established(l);
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
            jq_log(JQ_LOG_NOTICE,
                   "node link to %s: refused the key %s that answered: not authorized as a node",
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
        nl_consume(l, M2_SECURE);
        sodium_memzero(l->e_sk, sizeof l->e_sk);
        size_t al = strlen(nl->address);
        uint8_t pre[PREAMBLE_FIXED + ADDRESS_MAX];
        put_be(pre, nl->id, 8);
        put_be(pre + 8, al, 2);
        memcpy(pre + PREAMBLE_FIXED, nl->address, al);
        wreq_t *w = nl_wreq_new(l, true, KEY + SSHDR + 4 + PREAMBLE_FIXED + al + ABYTES);
        if (!w)
            return -1;
        crypto_auth(w->data, l->h, KEY, l->mac_i);
        crypto_secretstream_xchacha20poly1305_init_push(&l->tx, w->data + KEY, l->k_tx);
        nl_seal_frame(l, w->data + KEY + SSHDR, pre, PREAMBLE_FIXED + al);
        l->step = 1;
        return nl_wreq_send(l, w) ? 1 : 0;
    }
    /* step 1: R's stream header; step 2: its "ok" */
    if (l->step == 1) {
        if (l->in_len < SSHDR)
            return 0;
        if (crypto_secretstream_xchacha20poly1305_init_pull(&l->rx, l->in, l->k_rx) < 0)
            return -1;
        nl_consume(l, SSHDR);
        l->step = 2;
    }
    size_t total, plen;
    int f = nl_frame_at(l, &total, &plen);
    if (f <= 0)
        return f;
    uint8_t ok[2];
    if (plen != 2 || nl_open_frame(l, ok, total) < 0 || memcmp(ok, "ok", 2) != 0)
        return -1;
    nl_consume(l, total);
    nl_link_established(l);
    return 1;
}
