/* auth.c: the daemon's CURVE keypair and the zauth actor (see auth.h). */
#include "auth.h"
#include "log.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

struct jq_auth {
    zcert_t *cert;
    zactor_t *zauth;
};

/* The keypair: loaded, or made and saved (the secret file 0600) when the
 * data directory has none yet. */
static zcert_t *server_cert(const char *data_dir, char *err, size_t errlen)
{
    char pub[4200], sec[4216];
    snprintf(pub, sizeof pub, "%s/server.key", data_dir);
    snprintf(sec, sizeof sec, "%s_secret", pub);
    struct stat st;
    if (stat(sec, &st) == 0) {
        if (st.st_mode & 077) {
            snprintf(err, errlen, "%s is readable by others (mode %04o): chmod 600 %s", sec,
                     (unsigned)(st.st_mode & 07777), sec);
            return NULL;
        }
        zcert_t *c = zcert_load(pub);
        if (!c || !zcert_secret_txt(c) || !strcmp(zcert_secret_txt(c), "0000000000000000000000000000000000000000")) {
            zcert_destroy(&c);
            snprintf(err, errlen, "%s is not a czmq certificate with a secret key", sec);
            return NULL;
        }
        return c;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "cannot examine %s: %s", sec, strerror(errno));
        return NULL;
    }
    zcert_t *c = zcert_new();
    if (!c) {
        snprintf(err, errlen, "cannot make a CURVE keypair (is libzmq built with CURVE?)");
        return NULL;
    }
    zcert_set_meta(c, "name", "%s", "jobqd");
    zcert_set_meta(c, "role", "%s", "server");
    mode_t old = umask(0077); /* the secret file is never readable by others */
    int rc = zcert_save(c, pub);
    umask(old);
    if (rc < 0 || chmod(sec, 0600) < 0) {
        snprintf(err, errlen, "cannot save the daemon's keypair as %s: %s", pub, strerror(errno));
        zcert_destroy(&c);
        return NULL;
    }
    chmod(pub, 0644);
    jq_log(JQ_LOG_NOTICE, "made the daemon's CURVE keypair: %s (public key %s)", pub,
           zcert_public_txt(c));
    return c;
}

jq_auth_t *jq_auth_new(const char *data_dir, const char *keys_dir, char *err, size_t errlen)
{
    jq_auth_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(a->cert = server_cert(data_dir, err, errlen))) {
        free(a);
        return NULL;
    }
    if (keys_dir) {
        /* Made when absent (0700): keys are added to it later. */
        if (mkdir(keys_dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create the authorized-keys directory %s: %s", keys_dir,
                     strerror(errno));
            jq_auth_destroy(&a);
            return NULL;
        }
        struct stat st;
        if (stat(keys_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "the authorized-keys directory %s is not a directory",
                     keys_dir);
            jq_auth_destroy(&a);
            return NULL;
        }
        if (st.st_mode & S_IWOTH) {
            snprintf(err, errlen, "the authorized-keys directory %s is writable by others "
                                  "(mode %04o): anyone could let themselves in; chmod o-w %s",
                     keys_dir, (unsigned)(st.st_mode & 07777), keys_dir);
            jq_auth_destroy(&a);
            return NULL;
        }
        /* zauth answers ZAP in czmq's context: the daemon's sockets are
         * made there (main.c). Its certificate store notices a key file
         * added or removed at the next handshake. */
        a->zauth = zactor_new(zauth, NULL);
        if (!a->zauth || zstr_sendx(a->zauth, "CURVE", keys_dir, NULL) < 0 ||
            zsock_wait(a->zauth) < 0) {
            snprintf(err, errlen, "cannot start zauth on %s", keys_dir);
            jq_auth_destroy(&a);
            return NULL;
        }
    }
    return a;
}

void jq_auth_destroy(jq_auth_t **ap)
{
    if (!ap || !*ap)
        return;
    jq_auth_t *a = *ap;
    zactor_destroy(&a->zauth);
    zcert_destroy(&a->cert);
    free(a);
    *ap = NULL;
}

int jq_auth_apply(jq_auth_t *a, void *socket)
{
    if (!a || !a->zauth) {
        jq_log(JQ_LOG_ERROR, "CURVE asked for without keys");
        return -1;
    }
    zcert_apply(a->cert, socket);
    int one = 1, ivl = JQ_HANDSHAKE_SECONDS * 1000;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
        zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, "jobq", 4) < 0 ||
        zmq_setsockopt(socket, ZMQ_HANDSHAKE_IVL, &ivl, sizeof ivl) < 0) {
        jq_log(JQ_LOG_ERROR, "cannot make a CURVE server socket: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

const char *jq_auth_public_key(const jq_auth_t *a)
{
    return a ? zcert_public_txt(a->cert) : "";
}

bool jq_endpoint_is_loopback(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return true;
    const char *host = endpoint + 6;
    const char *semi = strchr(host, ';'); /* "source;address": the address */
    if (semi)
        host = semi + 1;
    char h[256];
    size_t n;
    if (*host == '[') { /* [v6]:port */
        const char *end = strchr(host, ']');
        if (!end)
            return false;
        n = (size_t)(end - host - 1);
        host++;
    } else {
        const char *colon = strrchr(host, ':');
        n = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (n == 0 || n >= sizeof h)
        return false;
    memcpy(h, host, n);
    h[n] = '\0';
    if (!strcmp(h, "localhost"))
        return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false; /* "*", an interface name, a host name: not known to be loopback */
}

bool jq_endpoint_is_tcp(const char *endpoint)
{
    return strncmp(endpoint, "tcp://", 6) == 0;
}
