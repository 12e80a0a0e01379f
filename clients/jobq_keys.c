/* jobq_keys.c: CURVE keys for libjobq's sockets (docs/security.md).
 *
 * A key is a czmq certificate file: ZPL text with a `curve` section
 * holding `public-key` (and, in NAME.key_secret, `secret-key`) in Z85.
 * libjobq reads it itself, so that it needs no czmq; `jobq keygen` writes
 * them with czmq. */
#include "jobq_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

/* The value of `key = "value"` in the curve section of f, or "" (40
 * characters of Z85 at most are kept). */
static void read_cert(FILE *f, char pub[JOBQ_KEY_CHARS + 1], char sec[JOBQ_KEY_CHARS + 1])
{
    char line[1024];
    bool curve = false;
    pub[0] = sec[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        if (*p == '#') /* whole lines only: a Z85 key may hold '#' */
            continue;
        if (!isspace((unsigned char)*p)) {
            size_t n = strcspn(p, " \t\r\n");
            curve = n == 5 && strncmp(p, "curve", 5) == 0;
            continue;
        }
        if (!curve)
            continue;
        while (isspace((unsigned char)*p))
            p++;
        char *eq = strchr(p, '=');
        if (!eq)
            continue;
        size_t klen = (size_t)(eq - p);
        while (klen && isspace((unsigned char)p[klen - 1]))
            klen--;
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        size_t vlen = strcspn(v, "\r\n");
        while (vlen && isspace((unsigned char)v[vlen - 1]))
            vlen--;
        if (vlen >= 2 && (v[0] == '"' || v[0] == '\'') && v[vlen - 1] == v[0]) {
            v++;
            vlen -= 2;
        }
        char *out = klen == 10 && !strncmp(p, "public-key", 10)   ? pub
                    : klen == 10 && !strncmp(p, "secret-key", 10) ? sec
                                                                  : NULL;
        if (out && vlen == JOBQ_KEY_CHARS) {
            memcpy(out, v, vlen);
            out[vlen] = '\0';
        }
    }
}

/* Reads path (NAME.key finds NAME.key_secret beside it). */
static int load_key(const char *path, char pub[JOBQ_KEY_CHARS + 1],
                    char sec[JOBQ_KEY_CHARS + 1], bool need_secret, char *err, size_t errlen)
{
    char secret_path[4200];
    size_t n = strlen(path);
    bool is_secret = n > 7 && !strcmp(path + n - 7, "_secret");
    snprintf(secret_path, sizeof secret_path, "%s_secret", path);
    FILE *f = NULL;
    if (!is_secret && need_secret)
        f = fopen(secret_path, "r");
    if (!f && !(f = fopen(path, "r"))) {
        snprintf(err, errlen, "cannot read key %s: %s", path, strerror(errno));
        return -1;
    }
    read_cert(f, pub, sec);
    fclose(f);
    if (!pub[0]) {
        snprintf(err, errlen, "%s is not a CURVE certificate (no public-key)", path);
        return -1;
    }
    if (need_secret && !sec[0]) {
        snprintf(err, errlen, "key %s has no secret key: give NAME.key_secret", path);
        return -1;
    }
    return 0;
}

int jobq_curve_load(jobq_curve_t *c, const char *key_file, const char *server_key, char *err,
                    size_t errlen)
{
    memset(c, 0, sizeof *c);
    if ((!key_file || !*key_file) && (!server_key || !*server_key))
        return 0;
    if (!key_file || !*key_file || !server_key || !*server_key) {
        snprintf(err, errlen, "CURVE needs both a key (--key, $JOBQ_KEY) and the server's "
                              "public key (--server-key, $JOBQ_SERVER_KEY)");
        return -1;
    }
    if (load_key(key_file, c->pub, c->sec, true, err, errlen) < 0)
        return -1;
    struct stat st;
    if (strlen(server_key) == JOBQ_KEY_CHARS && stat(server_key, &st) != 0) {
        memcpy(c->server, server_key, JOBQ_KEY_CHARS + 1);
    } else {
        char unused[JOBQ_KEY_CHARS + 1];
        if (load_key(server_key, c->server, unused, false, err, errlen) < 0)
            return -1;
    }
    uint8_t bin[32];
    if (!zmq_z85_decode(bin, c->pub) || !zmq_z85_decode(bin, c->sec) ||
        !zmq_z85_decode(bin, c->server)) {
        snprintf(err, errlen, "a key is not valid Z85");
        return -1;
    }
    c->set = true;
    return 0;
}

int jobq_curve_apply(const jobq_curve_t *c, void *sock, const char *endpoint)
{
    if (!c->set || strncmp(endpoint, "tcp://", 6) != 0)
        return 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, c->server, JOBQ_KEY_CHARS) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, c->pub, JOBQ_KEY_CHARS) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, c->sec, JOBQ_KEY_CHARS) < 0)
        return -1;
    return 0;
}
