/* auth.h: CURVE security for jobqd's TCP endpoints (docs/security.md).
 *
 * The daemon's keypair lives in its data directory (server.key, and
 * server.key_secret of mode 0600), made on the first start. czmq's zauth
 * actor answers the ZAP requests of every CURVE socket from the
 * authorized-keys directory (a zcertstore it reloads when the directory
 * changes): a client key's certificate metadata `role` and `name` travel
 * with each of its messages as the message properties of the same names.
 * zauth lives in czmq's global context, and ZAP only serves sockets of the
 * context it runs in: the daemon's sockets are made in that context. */
#ifndef JOBQ_AUTH_H
#define JOBQ_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jq_auth jq_auth_t;

/* Seconds a peer has to finish its handshake (ZMQ_HANDSHAKE_IVL): many
 * peers that never finish cannot hold connections for long. */
#define JQ_HANDSHAKE_SECONDS 5

/* Load (or make) the daemon's keypair in data_dir and start zauth on
 * keys_dir. NULL with err set. */
jq_auth_t *jq_auth_new(const char *data_dir, const char *keys_dir, char *err, size_t errlen);
void jq_auth_destroy(jq_auth_t **a);
/* Make socket a CURVE server with the daemon's key, under ZAP. -1 on
 * failure (logged). */
int jq_auth_apply(jq_auth_t *a, void *socket);
/* The daemon's public key, Z85 (40 characters). */
const char *jq_auth_public_key(const jq_auth_t *a);
/* The daemon's keypair as raw bytes (32 each): the node transport's
 * static keys (broker/nodelink.h). The caller wipes its secret copy. */
void jq_auth_keypair(const jq_auth_t *a, uint8_t public_key[32], uint8_t secret_key[32]);
/* Whether a raw public key belongs to a node of the cluster: it is in the
 * authorized-keys directory with role admin (docs/security.md "Node
 * traffic"); the node transport's authorize. Any thread. */
bool jq_auth_is_node_key(jq_auth_t *a, const uint8_t public_key[32]);

/* The role and name of an authorized client key (public_key: Z85, the
 * "User-Id" zauth gives a CURVE peer's messages), read from the daemon's
 * own copy of the authorized-keys directory, never from the message's
 * other properties: libzmq adds a peer's own handshake metadata to them,
 * so a property the certificate lacks could be filled in by the client.
 * A certificate without a valid role is "read"; name is left empty when
 * the certificate's is missing or not 1 to 64 of [A-Za-z0-9._@-]. Returns
 * 0, or -1 when the key is not (or no longer) in the directory. Any
 * thread (a mutex guards the copy); the directory is read again when its
 * mtime changes. */
int jq_auth_identity(jq_auth_t *a, const char *public_key, int *role, char *name, size_t len);
/* ---- HTTP tokens (docs/security.md "HTTP tokens") ----
 * "jq1.<claims>.<mac>": the caller (a CURVE key, or an ipc caller's owner
 * and role) and an expiry, under an HMAC-SHA256 whose key is derived from
 * the daemon's secret key. */
typedef struct jq_identity jq_identity_t;
#define JQ_HTTP_TOKEN_MAX 512                 /* longer input is refused unread */
#define JQ_HTTP_TOKEN_TTL_MIN 60
#define JQ_HTTP_TOKEN_TTL_MAX (366 * 86400)
#define JQ_HTTP_TOKEN_TTL_DEFAULT (30 * 86400)
/* A token for who (via JQ_VIA_CURVE with its key, or JQ_VIA_IPC), valid
 * for ttl_s seconds from now_wall_us (unix microseconds), into out (NUL
 * terminated; JQ_HTTP_TOKEN_MAX bytes are enough); *expires_s its expiry
 * (unix seconds). -1 for any other caller or a ttl out of range. Any
 * thread. */
int jq_auth_mint_http_token(jq_auth_t *a, const jq_identity_t *who, int64_t now_wall_us,
                            int64_t ttl_s, char *out, size_t outlen, int64_t *expires_s);
/* Verify token (len bytes, need not be NUL terminated) at now_wall_us:
 * 0 and *who filled (via JQ_VIA_TOKEN) when its MAC is right (compared in
 * constant time), it has not expired and, for a key, the key is still in
 * the authorized-keys directory: its role and name are the current ones.
 * -1 otherwise, *who untouched; a worker key's token is refused. Any
 * thread. */
int jq_auth_http_token(jq_auth_t *a, const char *token, size_t len, int64_t now_wall_us,
                       jq_identity_t *who);

/* Is name a valid key name (1 to 64 of [A-Za-z0-9._@-], as jobq keygen
 * makes them)? */
bool jq_key_name_ok(const char *name);

/* Is a TCP endpoint's host a loopback address (127.0.0.0/8, ::1)?
 * Endpoints that are not tcp:// are not asked. */
bool jq_endpoint_is_loopback(const char *endpoint);
bool jq_endpoint_is_tcp(const char *endpoint);
/* Is the endpoint one the daemon may bind: tcp://, or ipc:// naming a
 * file (an abstract ipc://@name has no permissions to guard it, and the
 * other transports have neither CURVE nor permissions)? */
bool jq_endpoint_bindable(const char *endpoint);

#endif
