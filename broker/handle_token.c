/* handle_token.c: http_token, the token a caller presents to the daemon's
 * HTTP endpoint (docs/security.md "HTTP tokens"; auth.h makes it). */
#include "auth.h"
#include "daemon.h"

#include <stdio.h>
#include <string.h>

jobq_code_t jq_handle_http_token(jq_call_t *c)
{
    int64_t ttl = JQ_HTTP_TOKEN_TTL_DEFAULT;
    if (jq_arg_int(c, "ttl", false, JQ_HTTP_TOKEN_TTL_MIN, JQ_HTTP_TOKEN_TTL_MAX, &ttl) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    /* Only a caller the daemon authenticated itself gets a token: an
     * --insecure endpoint knows nobody, and a token may not mint another
     * (it could then outlive its own expiry). */
    if (c->who->via != JQ_VIA_IPC && c->who->via != JQ_VIA_CURVE) {
        snprintf(c->err, c->errlen, "http_token is answered over the ipc socket or a CURVE "
                                    "endpoint only: this caller ('%s') was not authenticated "
                                    "by the daemon",
                 c->who->owner);
        return JOBQ_ERR_PERMISSION_DENIED;
    }
    char token[JQ_HTTP_TOKEN_MAX];
    int64_t expires;
    if (!c->d->auth || jq_auth_mint_http_token(c->d->auth, c->who, jq_now_wall(), ttl, token,
                                               sizeof token, &expires) < 0) {
        snprintf(c->err, c->errlen, "cannot make a token for '%s'", c->who->owner);
        return JOBQ_ERR_INTERNAL;
    }
    msgpack_pack_map(c->pk, 4);
    wire_pack_cstr(c->pk, "token");
    wire_pack_cstr(c->pk, token);
    wire_pack_cstr(c->pk, "role");
    wire_pack_cstr(c->pk, jq_role_name(c->who->role));
    wire_pack_cstr(c->pk, "owner");
    wire_pack_cstr(c->pk, c->who->owner);
    wire_pack_cstr(c->pk, "expires");
    wire_pack_ts(c->pk, expires * 1000000);
    return JOBQ_ERR_NONE;
}
