/* fuzz_http_token.c: libFuzzer target for the HTTP tokens' checker,
 * jq_auth_http_token (broker/auth.c; docs/security.md "HTTP tokens"), the
 * code the HTTP thread runs on whatever a browser sends.
 *
 * The first byte of the input picks what the rest is:
 * - even: a token, checked as it is (the MAC stands in the way of almost
 *   everything: the seeds carry right ones);
 * - odd: claims text, signed here with the daemon's MAC key and then
 *   checked, so that the claims parser behind the MAC is reached too.
 * A token that passes must name a client role and an owner.
 *
 * The daemon's keypair and one authorized key are fixed (below), written
 * into a temporary data directory: the seeds' tokens (make_seeds.c) are
 * made under that keypair. They are test keys, worth nothing elsewhere. */
#include "auth.h"
#include "daemon.h"
#include "log.h"

#include <czmq.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SERVER_PUBLIC "R%u7A*#<An[+.C(23&w-?#D^))p!mcrm9YMmtR(="
#define SERVER_SECRET "pMK/0^!*Tbme=7.1CT6n8&e9%Rn#4o(c<q^{WE4x"
#define CLIENT_PUBLIC ")^&r!G(S6uSB1(:=KQB1guJclUMxV3[<B5d@$^}A"
/* The seeds' key token: "key 4102444800 CLIENT_PUBLIC" */
#define SEED_TOKEN "jq1.a2V5IDQxMDI0NDQ4MDAgKV4mciFHKFM2dVNCMSg6PUtRQjFndUpjbFVNeFYzWzxCNWRAJF59QQ." \
                   "sqeCThldHPw5x2eH7k5V4lAKZniqnuUynuc0W1lVKMk"
#define NOW_US (1800000000ll * 1000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[512], keys[600];
static jq_auth_t *auth;
static unsigned char mac_key[crypto_auth_hmacsha256_KEYBYTES];

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || chmod(path, mode) < 0) {
        perror(path);
        abort();
    }
}

static void cleanup(void)
{
    jq_auth_destroy(&auth);
    char p[700];
    snprintf(p, sizeof p, "%s/k.key", keys);
    unlink(p);
    rmdir(keys);
    snprintf(p, sizeof p, "%s/server.key", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/server.key_secret", dir);
    unlink(p);
    rmdir(dir);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/jobq-fuzz-token-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        abort();
    }
    jq_log_set_level(JQ_LOG_ERROR);
    char p[700];
    snprintf(p, sizeof p, "%s/server.key", dir);
    write_file(p, "metadata\ncurve\n    public-key = \"" SERVER_PUBLIC "\"\n", 0644);
    snprintf(p, sizeof p, "%s/server.key_secret", dir);
    write_file(p, "metadata\ncurve\n    public-key = \"" SERVER_PUBLIC "\"\n"
                  "    secret-key = \"" SERVER_SECRET "\"\n", 0600);
    snprintf(keys, sizeof keys, "%s/keys", dir);
    if (mkdir(keys, 0700) < 0)
        abort();
    snprintf(p, sizeof p, "%s/k.key", keys);
    write_file(p, "metadata\n    name = \"fuzz\"\n    role = \"submit\"\ncurve\n"
                  "    public-key = \"" CLIENT_PUBLIC "\"\n", 0644);
    char err[256];
    if (!(auth = jq_auth_new(dir, keys, err, sizeof err))) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    /* Registered after czmq's own exit handler: runs before it. */
    atexit(cleanup);
    /* The MAC key as docs/security.md derives it. */
    uint8_t secret[32];
    if (!zmq_z85_decode(secret, SERVER_SECRET))
        abort();
    static const char label[] = "jobq http token mac key v1";
    crypto_generichash(mac_key, sizeof mac_key, (const unsigned char *)label, sizeof label - 1,
                       secret, sizeof secret);
    /* The seeds were made under these keys: they must still pass. */
    jq_identity_t who;
    if (jq_auth_http_token(auth, SEED_TOKEN, strlen(SEED_TOKEN), NOW_US, &who) != 0 ||
        strcmp(who.owner, "fuzz") != 0) {
        fprintf(stderr, "the seed token does not verify: regenerate the seeds\n");
        abort();
    }
}

static void check(const char *tok, size_t len)
{
    jq_identity_t who;
    memset(&who, 0, sizeof who);
    if (jq_auth_http_token(auth, tok, len, NOW_US, &who) != 0)
        return;
    if (who.role < JQ_ROLE_READ || who.role >= JQ_ROLE__COUNT || who.via != JQ_VIA_TOKEN ||
        !who.owner[0] || !memchr(who.owner, '\0', sizeof who.owner) ||
        !memchr(who.key, '\0', sizeof who.key))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!auth)
        setup();
    if (size == 0)
        return 0;
    if (!(data[0] & 1)) {
        check((const char *)data + 1, size - 1);
        return 0;
    }
    size_t n = size - 1;
    if (n > 1024)
        return 0;
    char tok[4 + 1400 + 1 + 64];
    memcpy(tok, "jq1.", 4);
    sodium_bin2base64(tok + 4, sizeof tok - 4, data + 1, n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t len = strlen(tok);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const unsigned char *)tok, len, mac_key);
    tok[len++] = '.';
    sodium_bin2base64(tok + len, sizeof tok - len, mac, sizeof mac,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    check(tok, strlen(tok));
    return 0;
}
