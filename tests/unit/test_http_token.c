/* test_http_token.c: the HTTP tokens of docs/security.md ("HTTP tokens"),
 * minted and verified by broker/auth.c against a real data directory and
 * authorized-keys directory: a good token, tampered claims and MAC, expiry,
 * a removed key, a changed role, another daemon's key, claims that carry a
 * valid MAC but break the format, garbage of every length, and lookups from
 * several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <czmq.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "daemon.h"

#define NOW (1800000000ll * 1000000) /* unix microseconds of the tests' "now" */
#define DAY 86400

typedef struct {
    char dir[64];       /* the daemon's data directory */
    char keys[96];      /* its authorized-keys directory */
    jq_auth_t *auth;
    char alice[41];     /* a submit key named alice */
    char anon[41];      /* a read key without a name */
    long mtime;         /* the keys directory's mtime, set by bump() */
} fx_t;

static void add_key(fx_t *f, const char *file, const char *name, const char *role, char *z85)
{
    zcert_t *c = zcert_new();
    assert_non_null(c);
    if (name)
        zcert_set_meta(c, "name", "%s", name);
    if (role)
        zcert_set_meta(c, "role", "%s", role);
    char path[256], tmp[256];
    snprintf(path, sizeof path, "%s/%s", f->keys, file);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", f->keys, file);
    assert_int_equal(zcert_save_public(c, tmp), 0);
    assert_int_equal(rename(tmp, path), 0);
    if (z85)
        snprintf(z85, 41, "%s", zcert_public_txt(c));
    zcert_destroy(&c);
}

/* The directory's mtime moves in coarse ticks: set it to a new value so
 * the daemon's copy is read again, whatever the clock did. */
static void bump(fx_t *f)
{
    struct timespec t[2] = {{.tv_sec = ++f->mtime}, {.tv_sec = f->mtime}};
    assert_int_equal(utimensat(AT_FDCWD, f->keys, t, 0), 0);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/jobq-tok-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->keys, sizeof f->keys, "%s/authorized_keys", f->dir);
    assert_int_equal(mkdir(f->keys, 0700), 0);
    add_key(f, "alice.key", "alice", "submit", f->alice);
    add_key(f, "anon.key", NULL, "read", f->anon);
    f->mtime = 1000;
    bump(f);
    char err[256];
    f->auth = jq_auth_new(f->dir, f->keys, err, sizeof err);
    if (!f->auth)
        fail_msg("%s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    jq_auth_destroy(&f->auth);
    assert_null(f->auth);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* A key's public certificate written again (a new file renamed over the
 * old, as docs/security.md says to change a role), in czmq's ZPL form. */
static void rewrite(fx_t *f, const char *file, const char *z85, const char *name,
                    const char *role)
{
    char path[256], tmp[256];
    snprintf(path, sizeof path, "%s/%s", f->keys, file);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", f->keys, file);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    fprintf(fp, "metadata\n    name = \"%s\"\n    role = \"%s\"\ncurve\n"
                "    public-key = \"%s\"\n", name, role, z85);
    fclose(fp);
    assert_int_equal(rename(tmp, path), 0);
    bump(f);
}

static jq_identity_t key_caller(const char *z85, jq_role_t role, const char *owner)
{
    jq_identity_t who = {.role = role, .via = JQ_VIA_CURVE};
    snprintf(who.owner, sizeof who.owner, "%s", owner);
    snprintf(who.key, sizeof who.key, "%s", z85);
    return who;
}

static void mint(fx_t *f, const jq_identity_t *who, int64_t ttl, char *tok)
{
    int64_t exp = 0;
    assert_int_equal(jq_auth_mint_http_token(f->auth, who, NOW, ttl, tok, JQ_HTTP_TOKEN_MAX,
                                             &exp), 0);
    assert_int_equal(exp, NOW / 1000000 + ttl);
    assert_true(strlen(tok) < JQ_HTTP_TOKEN_MAX);
    assert_memory_equal(tok, "jq1.", 4);
}

static int verify(fx_t *f, const char *tok, int64_t now, jq_identity_t *who)
{
    return jq_auth_http_token(f->auth, tok, strlen(tok), now, who);
}

static void test_key_token(void **state)
{
    fx_t *f = *state;
    char tok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t alice = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice"), who;
    mint(f, &alice, 3600, tok);
    /* the token names the key, not the role: only the base64url alphabet
     * and two dots */
    assert_int_equal(strspn(tok + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789-_."),
                     strlen(tok) - 4);
    memset(&who, 0x55, sizeof who);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_SUBMIT);
    assert_string_equal(who.owner, "alice");
    assert_string_equal(who.key, f->alice);
    assert_int_equal(who.via, JQ_VIA_TOKEN);
    /* valid to the last second before its expiry, not at it */
    assert_int_equal(verify(f, tok, NOW + 3599 * 1000000ll + 999999, &who), 0);
    assert_int_equal(verify(f, tok, NOW + 3600 * 1000000ll, &who), -1);
    assert_int_equal(verify(f, tok, NOW + 400 * DAY * 1000000ll, &who), -1);
    /* a key without a name: its owner is key:Z85, as over CURVE */
    jq_identity_t anon = key_caller(f->anon, JQ_ROLE_READ, "ignored");
    mint(f, &anon, 60, tok);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_READ);
    char want[64];
    snprintf(want, sizeof want, "key:%s", f->anon);
    assert_string_equal(who.owner, want);
}

static void test_ipc_token(void **state)
{
    fx_t *f = *state;
    char tok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t me = {.role = JQ_ROLE_ADMIN, .via = JQ_VIA_IPC, .owner = "uid:1000"}, who;
    mint(f, &me, 30 * DAY, tok);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_ADMIN);
    assert_string_equal(who.owner, "uid:1000");
    assert_string_equal(who.key, "");
    assert_int_equal(who.via, JQ_VIA_TOKEN);
    /* the role of the moment it was made: an ipc token of role read */
    me.role = JQ_ROLE_READ;
    mint(f, &me, 60, tok);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_READ);
}

static void test_who_gets_a_token(void **state)
{
    fx_t *f = *state;
    char tok[JQ_HTTP_TOKEN_MAX];
    int64_t exp;
    jq_identity_t who = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice");
    /* only callers the daemon authenticated: not over --insecure, not from
     * a token, not without a known way in */
    jq_via_t no[] = {JQ_VIA_NONE, JQ_VIA_INSECURE, JQ_VIA_TOKEN, JQ_VIA__COUNT};
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        who.via = no[i];
        assert_int_equal(jq_auth_mint_http_token(f->auth, &who, NOW, 60, tok, sizeof tok, &exp),
                         -1);
    }
    /* a CURVE caller without a well-formed key */
    who = key_caller("short", JQ_ROLE_SUBMIT, "alice");
    assert_int_equal(jq_auth_mint_http_token(f->auth, &who, NOW, 60, tok, sizeof tok, &exp), -1);
    /* an ipc caller of role worker, or with an owner that has a space */
    jq_identity_t ipc = {.role = JQ_ROLE_WORKER, .via = JQ_VIA_IPC, .owner = "uid:1"};
    assert_int_equal(jq_auth_mint_http_token(f->auth, &ipc, NOW, 60, tok, sizeof tok, &exp), -1);
    ipc.role = JQ_ROLE_READ;
    snprintf(ipc.owner, sizeof ipc.owner, "uid 1");
    assert_int_equal(jq_auth_mint_http_token(f->auth, &ipc, NOW, 60, tok, sizeof tok, &exp), -1);
    /* ttl out of range, a buffer too small */
    who = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice");
    assert_int_equal(jq_auth_mint_http_token(f->auth, &who, NOW, 0, tok, sizeof tok, &exp), -1);
    assert_int_equal(jq_auth_mint_http_token(f->auth, &who, NOW, JQ_HTTP_TOKEN_TTL_MAX + 1, tok,
                                             sizeof tok, &exp), -1);
    assert_int_equal(jq_auth_mint_http_token(f->auth, &who, NOW, 60, tok, 40, &exp), -1);
    assert_int_equal(jq_auth_mint_http_token(f->auth, &who, NOW, JQ_HTTP_TOKEN_TTL_MAX, tok,
                                             sizeof tok, &exp), 0);
}

static void test_tampered(void **state)
{
    fx_t *f = *state;
    char tok[JQ_HTTP_TOKEN_MAX], bad[JQ_HTTP_TOKEN_MAX + 8];
    jq_identity_t alice = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice"), who;
    mint(f, &alice, 3600, tok);
    size_t n = strlen(tok);
    const char *mac = strrchr(tok, '.') + 1;
    /* every character changed, one at a time, in the claims and the MAC */
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, tok, n + 1);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        who.role = JQ_ROLE__COUNT;
        if (verify(f, bad, NOW, &who) == 0)
            fail_msg("token changed at %zu still verifies: %s", i, bad);
        assert_int_equal(who.role, JQ_ROLE__COUNT); /* untouched */
    }
    /* cut short, extended, the MAC of another token */
    for (size_t k = 1; k < n; k++)
        assert_int_equal(jq_auth_http_token(f->auth, tok, n - k, NOW, &who), -1);
    snprintf(bad, sizeof bad, "%sA", tok);
    assert_int_equal(verify(f, bad, NOW, &who), -1);
    snprintf(bad, sizeof bad, "%s.", tok);
    assert_int_equal(verify(f, bad, NOW, &who), -1);
    char other[JQ_HTTP_TOKEN_MAX];
    mint(f, &alice, 3601, other);
    snprintf(bad, sizeof bad, "%.*s%s", (int)(mac - tok), tok, strrchr(other, '.') + 1);
    assert_int_equal(verify(f, bad, NOW, &who), -1);
    /* a longer expiry in the claims, under the old MAC */
    char text[128];
    snprintf(text, sizeof text, "key %lld %s", (long long)(NOW / 1000000 + 999999), f->alice);
    char b64[256];
    sodium_bin2base64(b64, sizeof b64, (const unsigned char *)text, strlen(text),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(bad, sizeof bad, "jq1.%s.%s", b64, mac);
    assert_int_equal(verify(f, bad, NOW, &who), -1);
}

static void test_other_daemon(void **state)
{
    fx_t *f = *state;
    char ktok[JQ_HTTP_TOKEN_MAX], itok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t alice = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice"), who;
    jq_identity_t ipc = {.role = JQ_ROLE_ADMIN, .via = JQ_VIA_IPC, .owner = "uid:0"};
    mint(f, &alice, 3600, ktok);
    mint(f, &ipc, 3600, itok);
    /* One zauth per process (czmq's context): the daemon stops first. */
    jq_auth_destroy(&f->auth);
    /* A daemon with another keypair (a rotated key) refuses the tokens,
     * even with the same authorized keys. */
    char dir2[96];
    snprintf(dir2, sizeof dir2, "%s/other", f->dir);
    assert_int_equal(mkdir(dir2, 0700), 0);
    char err[256];
    jq_auth_t *other = jq_auth_new(dir2, f->keys, err, sizeof err);
    if (!other)
        fail_msg("%s", err);
    assert_int_equal(jq_auth_http_token(other, ktok, strlen(ktok), NOW, &who), -1);
    assert_int_equal(jq_auth_http_token(other, itok, strlen(itok), NOW, &who), -1);
    jq_auth_destroy(&other);
    /* the same keypair loaded again (a restart): the tokens still hold */
    f->auth = jq_auth_new(f->dir, f->keys, err, sizeof err);
    assert_non_null(f->auth);
    assert_int_equal(verify(f, ktok, NOW, &who), 0);
    assert_int_equal(verify(f, itok, NOW, &who), 0);
    /* a daemon without authorized keys verifies ipc tokens, no key token */
    other = jq_auth_new(f->dir, NULL, err, sizeof err);
    assert_non_null(other);
    assert_int_equal(jq_auth_http_token(other, itok, strlen(itok), NOW, &who), 0);
    assert_int_equal(jq_auth_http_token(other, ktok, strlen(ktok), NOW, &who), -1);
    jq_auth_destroy(&other);
}

static void test_key_removed_and_role_changed(void **state)
{
    fx_t *f = *state;
    char tok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t alice = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice"), who;
    mint(f, &alice, 3600, tok);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_SUBMIT);
    /* alice made admin and renamed: the token says so at once */
    rewrite(f, "alice.key", f->alice, "alice2", "admin");
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_ADMIN);
    assert_string_equal(who.owner, "alice2");
    /* made a worker key: no client role, so no token */
    rewrite(f, "alice.key", f->alice, "alice", "worker");
    assert_int_equal(verify(f, tok, NOW, &who), -1);
    rewrite(f, "alice.key", f->alice, "alice", "read");
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_READ);
    char path[256];
    snprintf(path, sizeof path, "%s/alice.key", f->keys);
    /* removed: refused; the other key's tokens are not affected */
    char anon_tok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t anon = key_caller(f->anon, JQ_ROLE_READ, "x");
    mint(f, &anon, 60, anon_tok);
    assert_int_equal(unlink(path), 0);
    bump(f);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
    assert_int_equal(verify(f, anon_tok, NOW, &who), 0);
    /* and a key added back under the same file name is another key */
    add_key(f, "alice.key", "alice", "admin", NULL);
    bump(f);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
}

/* A token with the right MAC over any claims text: what only the daemon
 * could make, to reach the claims parser. The key is derived as auth.c
 * derives it (docs/security.md documents the derivation). */
static void forge_bin(fx_t *f, const void *claims, size_t n, char *out, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/server.key", f->dir);
    zcert_t *c = zcert_load(path);
    assert_non_null(c);
    static const char label[] = "jobq http token mac key v1";
    unsigned char key[crypto_auth_hmacsha256_KEYBYTES], mac[crypto_auth_hmacsha256_BYTES];
    crypto_generichash(key, sizeof key, (const unsigned char *)label, sizeof label - 1,
                       zcert_secret_key(c), 32);
    zcert_destroy(&c);
    char b64[512], m64[64];
    sodium_bin2base64(b64, sizeof b64, claims, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, len, "jq1.%s", b64);
    crypto_auth_hmacsha256(mac, (const unsigned char *)out, strlen(out), key);
    sodium_bin2base64(m64, sizeof m64, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out + strlen(out), len - strlen(out), ".%s", m64);
}

static void forge(fx_t *f, const char *claims, char *out, size_t len)
{
    forge_bin(f, claims, strlen(claims), out, len);
}

static void test_claims_format(void **state)
{
    fx_t *f = *state;
    char tok[1024];
    jq_identity_t who;
    long long exp = NOW / 1000000 + 60;
    /* the forgery helper agrees with the daemon: well-formed claims pass */
    snprintf(tok, sizeof tok, "key %lld %s", exp, f->alice);
    char good[1024];
    forge(f, tok, good, sizeof good);
    assert_int_equal(verify(f, good, NOW, &who), 0);
    assert_string_equal(who.owner, "alice");
    snprintf(tok, sizeof tok, "ipc %lld submit uid:7", exp);
    forge(f, tok, good, sizeof good);
    assert_int_equal(verify(f, good, NOW, &who), 0);
    assert_int_equal(who.role, JQ_ROLE_SUBMIT);
    assert_string_equal(who.owner, "uid:7");
    /* every other text is refused, even under a right MAC */
    char keytxt[160], short_key[64], unknown_key[64];
    snprintf(keytxt, sizeof keytxt, "%s", f->alice);
    snprintf(short_key, sizeof short_key, "%.39s", f->alice);
    char zpub[41], zsec[41];
    assert_int_equal(zmq_curve_keypair(zpub, zsec), 0);
    snprintf(unknown_key, sizeof unknown_key, "%s", zpub);
    const char *fmt_bad[] = {
        "key %lld %s ",  "key  %lld %s",  " key %lld %s",  "key %lld %s x",
        "KEY %lld %s",   "key +%lld %s",  "key 0%lld %s",  "key %lld\t%s",
        "key %lld",      "ipc %lld %s",   "ipc %lld admin",
    };
    for (size_t i = 0; i < sizeof fmt_bad / sizeof *fmt_bad; i++) {
        char claims[256];
        snprintf(claims, sizeof claims, fmt_bad[i], exp, keytxt);
        forge(f, claims, tok, sizeof tok);
        if (verify(f, tok, NOW, &who) == 0)
            fail_msg("claims '%s' verified", claims);
    }
    char claims[512];
    const char *bad[] = {"", "key", "ipc", "x 1 2 3", "key -5 abc", "ipc 99999999999999999999 "
                         "admin uid:0", "ipc 1 admin uid:0", "ipc %lld worker uid:0",
                         "ipc %lld root uid:0", "ipc %lld admin uid:0 more",
                         "ipc %lld admin \x01", "ipc %lld admin uid:0\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(claims, sizeof claims, bad[i], exp);
        forge(f, claims, tok, sizeof tok);
        if (verify(f, tok, NOW, &who) == 0)
            fail_msg("claims '%s' verified", claims);
    }
    snprintf(claims, sizeof claims, "key %lld %s", exp, short_key);
    forge(f, claims, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
    snprintf(claims, sizeof claims, "key %lld %s", exp, unknown_key);
    forge(f, claims, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
    /* a NUL inside the claims */
    char nul[64];
    int n = snprintf(nul, sizeof nul, "ipc %lld admin uid:0", exp);
    nul[n - 2] = '\0';
    forge_bin(f, nul, (size_t)n, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
    nul[n - 2] = ':';
    forge_bin(f, nul, (size_t)n, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    /* claims longer than any the daemon makes */
    char longc[300];
    memset(longc, 'x', sizeof longc);
    n = snprintf(longc, sizeof longc, "ipc %lld admin uid:0", exp);
    longc[n] = 'x';
    forge_bin(f, longc, sizeof longc, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
    /* an owner as long as the daemon keeps (127) passes, one more does not */
    char owner[200];
    memset(owner, 'u', sizeof owner);
    owner[127] = '\0';
    snprintf(claims, sizeof claims, "ipc %lld read %s", exp, owner);
    forge(f, claims, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), 0);
    assert_int_equal(strlen(who.owner), 127);
    owner[127] = 'u';
    owner[128] = '\0';
    snprintf(claims, sizeof claims, "ipc %lld read %s", exp, owner);
    forge(f, claims, tok, sizeof tok);
    assert_int_equal(verify(f, tok, NOW, &who), -1);
}

static void test_garbage(void **state)
{
    fx_t *f = *state;
    jq_identity_t who;
    const char *fixed[] = {"", "jq1", "jq1.", "jq1..", "jq1...", "jq1.a.b", "jq1.a.",
                           "jq1..b", "jq2.aaaa.bbbb", "JQ1.a.b", "jq1.====.====",
                           "jq1.\xff\xfe.\x80"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        assert_int_equal(verify(f, fixed[i], NOW, &who), -1);
    assert_int_equal(jq_auth_http_token(f->auth, NULL, 0, NOW, &who), -1);
    assert_int_equal(jq_auth_http_token(NULL, "jq1.a.b", 7, NOW, &who), -1);
    /* a good token inside longer input, and input over the limit */
    char tok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t alice = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice");
    mint(f, &alice, 3600, tok);
    size_t big = 1 << 20;
    char *buf = malloc(big);
    assert_non_null(buf);
    memset(buf, 'A', big);
    memcpy(buf, tok, strlen(tok));
    assert_int_equal(jq_auth_http_token(f->auth, buf, big, NOW, &who), -1);
    assert_int_equal(jq_auth_http_token(f->auth, buf, JQ_HTTP_TOKEN_MAX + 1, NOW, &who), -1);
    /* random bytes of every length up to past the limit, some with the
     * prefix and dots, never verify (nor crash under the sanitizers) */
    for (size_t len = 0; len <= JQ_HTTP_TOKEN_MAX + 2; len++)
        for (int k = 0; k < 4; k++) {
            randombytes_buf(buf, len);
            if (k & 1 && len >= 4)
                memcpy(buf, "jq1.", 4);
            if (k & 2 && len > 8)
                buf[len / 2] = '.';
            assert_int_equal(jq_auth_http_token(f->auth, buf, len, NOW, &who), -1);
        }
    /* a negative clock */
    assert_int_equal(verify(f, tok, -1, &who), -1);
    free(buf);
}

typedef struct {
    fx_t *f;
    const char *tok;
    int ok;
} worker_arg_t;

static void *verifier(void *p)
{
    worker_arg_t *w = p;
    jq_identity_t who;
    for (int i = 0; i < 2000; i++)
        if (verify(w->f, w->tok, NOW, &who) == 0 && !strcmp(who.owner, "alice"))
            w->ok++;
    return NULL;
}

static void test_threads(void **state)
{
    fx_t *f = *state;
    /* the HTTP thread verifies while the loop looks keys up and the
     * directory changes: the keys' copy is read again under its mutex */
    char tok[JQ_HTTP_TOKEN_MAX];
    jq_identity_t alice = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice");
    mint(f, &alice, 3600, tok);
    worker_arg_t w[2] = {{f, tok, 0}, {f, tok, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verifier, &w[i]), 0);
    for (int i = 0; i < 200; i++) {
        bump(f);
        int role;
        char name[65];
        assert_int_equal(jq_auth_identity(f->auth, f->anon, &role, name, sizeof name), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(w[0].ok, 2000);
    assert_int_equal(w[1].ok, 2000);
}

static void test_identity_frame_carries_the_key(void **state)
{
    fx_t *f = *state;
    jq_identity_t who = key_caller(f->alice, JQ_ROLE_SUBMIT, "alice"), back;
    char fr[JQ_IDENTITY_FRAME_MAX];
    size_t n = jq_identity_frame(&who, 1, fr, sizeof fr);
    assert_int_equal(n, 2 + 5 + 2 + 40);
    jq_identity_from_frame(fr, n, &back);
    assert_int_equal(back.role, JQ_ROLE_SUBMIT);
    assert_string_equal(back.owner, "alice");
    assert_int_equal(back.via, JQ_VIA_CURVE);
    assert_string_equal(back.key, f->alice);
    /* an ipc caller: the way, no key */
    jq_identity_t ipc = {.role = JQ_ROLE_ADMIN, .via = JQ_VIA_IPC, .owner = "uid:0"};
    n = jq_identity_frame(&ipc, 0, fr, sizeof fr);
    assert_int_equal(n, 2 + 5 + 2);
    jq_identity_from_frame(fr, n, &back);
    assert_int_equal(back.via, JQ_VIA_IPC);
    assert_string_equal(back.key, "");
    assert_string_equal(back.owner, "uid:0");
    /* a way out of range is not known; a key of another length is none */
    fr[2 + 5 + 1] = 99;
    jq_identity_from_frame(fr, n, &back);
    assert_int_equal(back.via, JQ_VIA_NONE);
    n = jq_identity_frame(&who, 1, fr, sizeof fr);
    jq_identity_from_frame(fr, n - 1, &back);
    assert_int_equal(back.via, JQ_VIA_CURVE);
    assert_string_equal(back.key, "");
    /* a frame too small for the way keeps the owner */
    n = jq_identity_frame(&who, 1, fr, 2 + 5 + 1);
    assert_int_equal(n, 2 + 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipc_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_who_gets_a_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_daemon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_removed_and_role_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_frame_carries_the_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
