/* auth.c: the daemon's CURVE keypair and the zauth actor (see auth.h). */
#include "auth.h"
#include "config.h"
#include "daemon.h"
#include "log.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One authorized key, as the daemon read it. */
typedef struct {
    char public_key[41];
    int role;
    char name[65];
} known_key_t;

struct jq_auth {
    zcert_t *cert;
    zactor_t *zauth;
    unsigned char token_key[crypto_auth_hmacsha256_KEYBYTES]; /* HTTP tokens' MAC key */
    pthread_mutex_t keys_mu; /* the loop and the HTTP thread both look keys up */
    char *keys_dir;
    known_key_t *keys; /* the directory's certificates, read when it changed */
    size_t nkeys;
    struct timespec keys_mtime;
    bool keys_read;
    struct timespec keys_read_at; /* CLOCK_MONOTONIC of the last read */
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
    if (sodium_init() < 0) {
        snprintf(err, errlen, "cannot initialize libsodium");
        return NULL;
    }
    jq_auth_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(a->cert = server_cert(data_dir, err, errlen))) {
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->keys_mu, NULL);
    /* A key of its own for the tokens' MAC, derived from the secret key:
     * the secret key itself is used for nothing but CURVE, and a new
     * keypair voids every token made before. */
    static const char label[] = "jobq http token mac key v1";
    crypto_generichash(a->token_key, sizeof a->token_key, (const unsigned char *)label,
                       sizeof label - 1, zcert_secret_key(a->cert), 32);
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
        if (st.st_mode & (S_IWGRP | S_IWOTH)) {
            snprintf(err, errlen, "the authorized-keys directory %s is writable by its group "
                                  "or others (mode %04o): they could let themselves in; "
                                  "chmod go-w %s",
                     keys_dir, (unsigned)(st.st_mode & 07777), keys_dir);
            jq_auth_destroy(&a);
            return NULL;
        }
        if (st.st_uid != geteuid() && st.st_uid != 0) {
            snprintf(err, errlen, "the authorized-keys directory %s belongs to uid %u, not to "
                                  "the daemon's user or root: its owner could let anyone in",
                     keys_dir, (unsigned)st.st_uid);
            jq_auth_destroy(&a);
            return NULL;
        }
        /* zauth answers ZAP in czmq's context: the daemon's sockets are
         * made there (main.c). Its certificate store notices a key file
         * added or removed at the next handshake. */
        if (!(a->keys_dir = strdup(keys_dir))) {
            snprintf(err, errlen, "out of memory");
            jq_auth_destroy(&a);
            return NULL;
        }
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
    if (a->cert)
        pthread_mutex_destroy(&a->keys_mu);
    zcert_destroy(&a->cert);
    sodium_memzero(a->token_key, sizeof a->token_key);
    free(a->keys_dir);
    free(a->keys);
    free(a);
    *ap = NULL;
}

bool jq_key_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '-'))
            return false;
    }
    return true;
}

/* Reads every certificate of the authorized-keys directory (as zauth's
 * store does: each file but the *_secret ones and hidden ones). */
static void read_keys(jq_auth_t *a)
{
    free(a->keys);
    a->keys = NULL;
    a->nkeys = 0;
    DIR *dir = opendir(a->keys_dir);
    if (!dir)
        return;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n > 7 && !strcmp(e->d_name + n - 7, "_secret")))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", a->keys_dir, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        zcert_t *c = zcert_load(path);
        if (!c)
            continue;
        if (a->nkeys == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            known_key_t *k = realloc(a->keys, ncap * sizeof *k);
            if (!k) {
                zcert_destroy(&c);
                break;
            }
            a->keys = k;
            cap = ncap;
        }
        known_key_t *k = &a->keys[a->nkeys++];
        snprintf(k->public_key, sizeof k->public_key, "%s", zcert_public_txt(c));
        jq_role_t r;
        const char *role = zcert_meta(c, "role");
        k->role = role && jq_role_parse(role, &r) == 0 ? (int)r : (int)JQ_ROLE_READ;
        const char *name = zcert_meta(c, "name");
        snprintf(k->name, sizeof k->name, "%s", jq_key_name_ok(name) ? name : "");
        zcert_destroy(&c);
    }
    closedir(dir);
}

/* jq_auth_identity with keys_mu held. */
static int identity_locked(jq_auth_t *a, const char *public_key, int *role, char *name,
                           size_t len)
{
    struct stat st;
    if (stat(a->keys_dir, &st) < 0)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* A directory's mtime moves in the kernel's coarse ticks: two changes
     * within one tick look like one. A key zauth let in but not found here
     * makes the directory be read again, at most once a second. */
    bool changed = !a->keys_read || st.st_mtim.tv_sec != a->keys_mtime.tv_sec ||
                   st.st_mtim.tv_nsec != a->keys_mtime.tv_nsec;
    for (int pass = 0; pass < 2; pass++) {
        if (changed) {
            read_keys(a);
            a->keys_mtime = st.st_mtim;
            a->keys_read = true;
            a->keys_read_at = now;
        }
        for (size_t i = 0; i < a->nkeys; i++)
            if (!strcmp(a->keys[i].public_key, public_key)) {
                *role = a->keys[i].role;
                snprintf(name, len, "%s", a->keys[i].name);
                return 0;
            }
        if (changed || now.tv_sec - a->keys_read_at.tv_sec < 1)
            break;
        changed = true;
    }
    return -1;
}

int jq_auth_identity(jq_auth_t *a, const char *public_key, int *role, char *name, size_t len)
{
    if (!a || !a->keys_dir || !public_key)
        return -1;
    pthread_mutex_lock(&a->keys_mu);
    int rc = identity_locked(a, public_key, role, name, len);
    pthread_mutex_unlock(&a->keys_mu);
    return rc;
}

/* ---- HTTP tokens: jq1.<claims>.<mac> (docs/security.md "HTTP tokens") ----
 *
 * claims: base64url (no padding) of "key EXPIRY Z85" (a CURVE key) or
 * "ipc EXPIRY ROLE OWNER" (an ipc caller, as --ipc-role and the peer's uid
 * made it when the token was minted); EXPIRY in unix seconds. mac:
 * base64url of HMAC-SHA256 under token_key of everything before the last
 * dot ("jq1." and the claims). */

#define TOKEN_PREFIX "jq1."
#define B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define CLAIMS_MAX 256

static bool owner_text_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n >= JQ_OWNER_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] == 0x7f)
            return false;
    return true;
}

static bool z85_ok(const char *s, size_t n)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";
    if (n != JQ_KEY_Z85)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(alphabet, s[i]))
            return false;
    return true;
}

int jq_auth_mint_http_token(jq_auth_t *a, const jq_identity_t *who, int64_t now_wall_us,
                            int64_t ttl_s, char *out, size_t outlen, int64_t *expires_s)
{
    if (!a || !who || !out || ttl_s <= 0 || now_wall_us < 0 ||
        ttl_s > JQ_HTTP_TOKEN_TTL_MAX)
        return -1;
    int64_t exp = now_wall_us / 1000000 + ttl_s;
    char claims[CLAIMS_MAX];
    int n;
    if (who->via == JQ_VIA_CURVE && z85_ok(who->key, strlen(who->key)))
        n = snprintf(claims, sizeof claims, "key %" PRId64 " %s", exp, who->key);
    else if (who->via == JQ_VIA_IPC && owner_text_ok(who->owner) &&
             who->role >= JQ_ROLE_READ && who->role < JQ_ROLE__COUNT)
        n = snprintf(claims, sizeof claims, "ipc %" PRId64 " %s %s", exp,
                     jq_role_name(who->role), who->owner);
    else
        return -1;
    if (n < 0 || (size_t)n >= sizeof claims)
        return -1;
    size_t need = sizeof TOKEN_PREFIX - 1 + sodium_base64_ENCODED_LEN((size_t)n, B64) - 1 + 1 +
                  sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES, B64);
    if (outlen < need)
        return -1;
    memcpy(out, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1);
    size_t pos = sizeof TOKEN_PREFIX - 1;
    sodium_bin2base64(out + pos, outlen - pos, (const unsigned char *)claims, (size_t)n, B64);
    pos += strlen(out + pos);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const unsigned char *)out, pos, a->token_key);
    out[pos++] = '.';
    sodium_bin2base64(out + pos, outlen - pos, mac, sizeof mac, B64);
    if (expires_s)
        *expires_s = exp;
    return 0;
}

/* base64url text [s, s+n) into at most cap bytes; -1 unless all of it is
 * valid and fits. */
static int unb64(const char *s, size_t n, unsigned char *bin, size_t cap, size_t *binlen)
{
    const char *end = NULL;
    if (n == 0 || sodium_base642bin(bin, cap, s, n, NULL, binlen, &end, B64) != 0 ||
        end != s + n)
        return -1;
    return 0;
}

int jq_auth_http_token(jq_auth_t *a, const char *token, size_t len, int64_t now_wall_us,
                       jq_identity_t *who)
{
    if (!a || !token || !who || len > JQ_HTTP_TOKEN_MAX || len < sizeof TOKEN_PREFIX ||
        memcmp(token, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1) != 0)
        return -1;
    const char *claims = token + sizeof TOKEN_PREFIX - 1, *end = token + len;
    const char *dot = memchr(claims, '.', (size_t)(end - claims));
    if (!dot || dot == claims)
        return -1;
    /* The MAC first: nothing of an unsigned token is looked at. */
    unsigned char mac[crypto_auth_hmacsha256_BYTES], want[crypto_auth_hmacsha256_BYTES];
    size_t maclen;
    if (unb64(dot + 1, (size_t)(end - dot - 1), mac, sizeof mac, &maclen) < 0 ||
        maclen != sizeof mac)
        return -1;
    crypto_auth_hmacsha256(want, (const unsigned char *)token, (size_t)(dot - token),
                           a->token_key);
    if (sodium_memcmp(mac, want, sizeof mac) != 0)
        return -1;
    char text[CLAIMS_MAX + 1];
    size_t n;
    if (unb64(claims, (size_t)(dot - claims), (unsigned char *)text, CLAIMS_MAX, &n) < 0 ||
        memchr(text, '\0', n))
        return -1;
    text[n] = '\0';
    char kind[4], f1[CLAIMS_MAX], f2[CLAIMS_MAX], f3[CLAIMS_MAX];
    f3[0] = '\0';
    int got = sscanf(text, "%3s %255s %255s %255s", kind, f1, f2, f3);
    /* EXPIRY: decimal digits only, no sign, no leading zero. */
    size_t en = strlen(f1);
    if (got < 3 || en < 1 || en > 18 || strspn(f1, "0123456789") != en || f1[0] == '0')
        return -1;
    int64_t exp = strtoll(f1, NULL, 10);
    if (now_wall_us < 0 || now_wall_us / 1000000 >= exp)
        return -1;
    jq_identity_t id;
    memset(&id, 0, sizeof id);
    id.via = JQ_VIA_TOKEN;
    if (!strcmp(kind, "key") && got == 3) {
        if (!z85_ok(f2, strlen(f2)))
            return -1;
        char canon[2 * CLAIMS_MAX + 8];
        snprintf(canon, sizeof canon, "key %s %s", f1, f2);
        if (strcmp(canon, text) != 0)
            return -1;
        int role;
        char name[65];
        if (jq_auth_identity(a, f2, &role, name, sizeof name) < 0)
            return -1; /* removed from the authorized keys */
        id.role = (jq_role_t)role;
        memcpy(id.key, f2, sizeof id.key); /* z85_ok: 40 characters and the NUL */
        if (*name)
            snprintf(id.owner, sizeof id.owner, "%s", name);
        else
            snprintf(id.owner, sizeof id.owner, "key:%.40s", f2);
    } else if (!strcmp(kind, "ipc") && got == 4) {
        jq_role_t r;
        char canon[3 * CLAIMS_MAX + 8];
        snprintf(canon, sizeof canon, "ipc %s %s %s", f1, f2, f3);
        if (strcmp(canon, text) != 0 || jq_role_parse(f2, &r) < 0 || !owner_text_ok(f3))
            return -1;
        id.role = r;
        snprintf(id.owner, sizeof id.owner, "%.127s", f3);
    } else {
        return -1;
    }
    /* A worker key (or one made a worker since) has no client role. */
    if (id.role < JQ_ROLE_READ || id.role >= JQ_ROLE__COUNT)
        return -1;
    *who = id;
    return 0;
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

void jq_auth_keypair(const jq_auth_t *a, uint8_t public_key[32], uint8_t secret_key[32])
{
    memcpy(public_key, zcert_public_key(a->cert), 32);
    memcpy(secret_key, zcert_secret_key(a->cert), 32);
}

bool jq_auth_is_node_key(jq_auth_t *a, const uint8_t public_key[32])
{
    char z85[JQ_KEY_Z85 + 1], name[65];
    int role;
    if (!zmq_z85_encode(z85, public_key, 32))
        return false;
    return jq_auth_identity(a, z85, &role, name, sizeof name) == 0 && role == JQ_ROLE_ADMIN;
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

bool jq_endpoint_bindable(const char *endpoint)
{
    return jq_endpoint_is_tcp(endpoint) ||
           (strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] && endpoint[6] != '@');
}
