/* auth.c: the daemon's CURVE keypair and the zauth actor (see auth.h). */
#include "auth.h"
#include "log.h"

#include <czmq.h>

struct jq_auth {
    zcert_t *cert;
    zactor_t *zauth;
};

jq_auth_t *jq_auth_new(const char *data_dir, const char *keys_dir, char *err, size_t errlen)
{
    (void)data_dir;
    (void)keys_dir;
    snprintf(err, errlen, "CURVE is not built in yet");
    return NULL;
}

void jq_auth_destroy(jq_auth_t **a)
{
    (void)a;
}

int jq_auth_apply(jq_auth_t *a, void *socket)
{
    (void)a;
    (void)socket;
    return -1;
}

const char *jq_auth_public_key(const jq_auth_t *a)
{
    return a ? zcert_public_txt(a->cert) : "";
}

bool jq_endpoint_is_loopback(const char *endpoint)
{
    (void)endpoint;
    return true;
}
