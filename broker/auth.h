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

/* Is a TCP endpoint's host a loopback address (127.0.0.0/8, ::1,
 * localhost)? Endpoints that are not tcp:// are not asked. */
bool jq_endpoint_is_loopback(const char *endpoint);
bool jq_endpoint_is_tcp(const char *endpoint);

#endif
