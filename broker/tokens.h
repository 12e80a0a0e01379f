/* tokens.h: the client-token index — what makes a retried submission
 * (its reply was lost) return the original job ids instead of creating the
 * jobs twice (docs/protocol.md "Client tokens").
 *
 * A token is claimed by the first call that brings it: the index holds it
 * as pending while that call validates and enqueues its jobs (handler work
 * only, no I/O), then keeps the call's exact reply bytes and the store
 * ticket that reply waits for. A retry that finds the reply answers it,
 * held until that ticket is durable like the first; one that finds the
 * token pending waits for the first call to finish (a condition variable;
 * the wait lasts one handler's table work, never a commit). Entries are
 * forgotten after the window, and the oldest first past a count cap or a
 * cap on the bytes of the answers kept. At
 * start-up the index is rebuilt from the stored jobs (recovery.c).
 *
 * Any thread; one mutex guards the index, never held while another lock
 * is taken. */
#ifndef JOBQ_TOKENS_H
#define JOBQ_TOKENS_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest token a client may send, bytes. */
#define JQ_TOKEN_MAX 64
/* Tokens kept at most (the oldest is forgotten first). */
#define JQ_TOKEN_MAX_COUNT 100000
/* Bytes of kept answers at most (the oldest is forgotten first). */
#define JQ_TOKEN_MAX_BYTES (64u * 1024 * 1024)
/* Default window, seconds (jobqd --token-window). */
#define JQ_TOKEN_DEFAULT_WINDOW 600

typedef struct jq_tokens jq_tokens_t;

typedef enum {
    JQ_TOKEN_NEW,    /* claimed: the caller submits, then _done or _abandon */
    JQ_TOKEN_REPLY,  /* already answered: the reply and its ticket are out */
    JQ_TOKEN_REUSED  /* known, but with another method or body */
} jq_token_claim_t;

/* window_us 0 disables the index (every claim is NEW, nothing is kept). */
jq_tokens_t *jq_tokens_new(int64_t window_us, size_t max_count);
void jq_tokens_destroy(jq_tokens_t **t);

/* A hash of what a call submits (the method and its jobs), to tell a
 * retry from a reuse of its token. Stable across runs. */
uint64_t jq_tokens_hash(const char *method, const msgpack_object *body);

/* Look token up at time now (µs). REPLY: *reply (malloc'ed, *reply_len
 * bytes, the caller frees) and *ticket are the first call's. On NEW the
 * caller owns the pending entry. -1 out of memory. */
int jq_tokens_claim(jq_tokens_t *t, const void *token, size_t len, uint64_t hash, int64_t now,
                    jq_token_claim_t *out, char **reply, size_t *reply_len, uint64_t *ticket);
/* The claimed call's answer (copied) and the ticket it waits for. */
void jq_tokens_done(jq_tokens_t *t, const void *token, size_t len, const void *reply,
                    size_t reply_len, uint64_t ticket);
/* The claimed call created nothing (it failed): forget the token. */
void jq_tokens_abandon(jq_tokens_t *t, const void *token, size_t len);

/* Recovery, before any thread runs: the stored `client` map of job id
 * (received at received_us). Calls older than the window are skipped.
 * exists(ctx, id) says whether a job of a batch reply is stored: a
 * position whose job is not (the daemon died before committing it, so the
 * reply was never sent) becomes a failure. 0, or -1 out of memory. */
typedef bool (*jq_tokens_exists_fn)(void *ctx, uint64_t id);
int jq_tokens_restore(jq_tokens_t *t, const void *client, size_t client_len, uint64_t id,
                      int64_t received_us, int64_t now, jq_tokens_exists_fn exists, void *ctx);
/* Tokens held now. */
size_t jq_tokens_count(jq_tokens_t *t);

#endif
