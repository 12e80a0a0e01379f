/* http_auth.c: who an HTTP request is and what it may do: a bearer token,
 * or a login's session (a random id in a per-port cookie; the server keeps
 * the token and checks it again at each request), else --http-role on
 * loopback; the Host check against DNS rebinding; the CSRF check of
 * changes; the login and logout forms. docs/security.md, "The HTTP
 * endpoint". HTTP thread only. */
#include "http_int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char *bearer_token(struct MHD_Connection *c)
{
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (a && !strncasecmp(a, "Bearer ", 7))
        return a + 7;
    return NULL;
}

/* ---- sessions ----------------------------------------------------------- */

static jq_session_t *session_find(jq_http_t *h, const char *id)
{
    if (!id || strlen(id) != 64)
        return NULL;
    for (size_t i = 0; i < JQ_HTTP_SESSIONS; i++) {
        jq_session_t *se = &h->sessions[i];
        if (!se->token)
            continue;
        unsigned char diff = 0;
        for (size_t k = 0; k < 64; k++)
            diff |= (unsigned char)(se->id[k] ^ id[k]);
        if (!diff)
            return se;
    }
    return NULL;
}

static void session_end(jq_session_t *se)
{
    free(se->token);
    memset(se, 0, sizeof *se);
}

/* A new session for a verified token: a free slot, or the oldest one's. */
static jq_session_t *session_new(jq_http_t *h, const char *token)
{
    jq_session_t *slot = NULL;
    for (size_t i = 0; i < JQ_HTTP_SESSIONS; i++) {
        jq_session_t *se = &h->sessions[i];
        if (!se->token) {
            slot = se;
            break;
        }
        if (!slot || se->created_mono < slot->created_mono)
            slot = se;
    }
    unsigned char rnd[32];
    char *copy = strdup(token);
    if (!copy || getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        free(copy);
        return NULL;
    }
    session_end(slot);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(slot->id + 2 * i, 3, "%02x", rnd[i]);
    slot->token = copy;
    slot->expires_wall = jq_now_wall() + JQ_HTTP_SESSION_US;
    slot->created_mono = jq_now_mono();
    return slot;
}

void jq_http_sessions_free(jq_http_t *h)
{
    for (size_t i = 0; i < JQ_HTTP_SESSIONS; i++)
        session_end(&h->sessions[i]);
}

int jq_http_authenticate(jq_http_t *h, struct MHD_Connection *c, jq_identity_t *who,
                        asker_t *asker, bool *cookie_refused, enum MHD_Result *answered)
{
    const char *bearer = bearer_token(c);
    *cookie_refused = false;
    memset(who, 0, sizeof *who);
    if (bearer) {
        if (h->d->auth &&
            jq_auth_http_token(h->d->auth, bearer, strlen(bearer), jq_now_wall(), who) == 0) {
            *asker = ASK_TOKEN;
            return 0;
        }
        *answered = jq_http_error(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                                  "the token is not valid (expired, malformed, or its key "
                                  "was removed): make a new one with `jobq http-token`");
        return -1;
    }
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, h->cookie_name);
    if (cookie && *cookie) {
        jq_session_t *se = session_find(h, cookie);
        if (se && se->expires_wall > jq_now_wall() && h->d->auth &&
            jq_auth_http_token(h->d->auth, se->token, strlen(se->token), jq_now_wall(), who) ==
                0) {
            *asker = ASK_TOKEN;
            return 0;
        }
        if (se) /* its token no longer holds: the session is over */
            session_end(se);
        *cookie_refused = true;
        memset(who, 0, sizeof *who);
    }
    if ((!h->addr.loopback && !h->d->cfg.insecure) || h->d->cfg.http_role < 0) {
        *asker = ASK_NOBODY;
        return 0;
    }
    *asker = ASK_ANONYMOUS;
    who->role = (jq_role_t)h->d->cfg.http_role;
    snprintf(who->owner, sizeof who->owner, "http");
    return 0;
}

/* A page reached through a name that resolves to loopback only by the
 * attacker's DNS (rebinding) must not be served: on loopback the Host must
 * be a loopback name or the bound address. */
bool jq_http_host_ok(jq_http_t *h, struct MHD_Connection *c)
{
    if (!h->addr.loopback)
        return true;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (!host)
        return false;
    char name[300];
    snprintf(name, sizeof name, "%s", host);
    char *colon = name[0] == '[' ? strchr(name, ']') : strrchr(name, ':');
    if (name[0] == '[') {
        if (!colon)
            return false;
        colon[1] = 0;
    } else if (colon) {
        *colon = 0;
    }
    if (!strcasecmp(name, "localhost") || !strcmp(name, "[::1]"))
        return true;
    struct in_addr a4;
    return inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* A state-changing request must come from our own page: it carries the
 * run's CSRF token (which only a same-origin script can read), and a
 * browser that says where it comes from must say "same-origin". */
bool jq_http_csrf_ok(jq_http_t *h, struct MHD_Connection *c, const char *form_token)
{
    const char *site = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (site && strcmp(site, "same-origin") && strcmp(site, "none"))
        return false;
    const char *t = form_token;
    if (!t)
        t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    if (!t || strlen(t) != strlen(h->csrf))
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; t[i]; i++)
        diff |= (unsigned char)(t[i] ^ h->csrf[i]);
    return diff == 0;
}

/* x-www-form-urlencoded value of name in body, decoded into out. */
static bool form_value(const char *body, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nlen && !memcmp(p, name, nlen) && p[nlen] == '=') {
            size_t o = 0;
            for (const char *q = p + nlen + 1; q < stop; q++) {
                char ch = *q;
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%' && stop - q > 2) {
                    char hex[3] = {q[1], q[2], 0};
                    ch = (char)strtol(hex, NULL, 16);
                    q += 2;
                }
                if (o + 1 >= outlen)
                    return false;
                out[o++] = ch;
            }
            out[o] = 0;
            return true;
        }
        p = stop + 1;
    }
    return false;
}

static enum MHD_Result redirect(struct MHD_Connection *c, const char *where, const char *cookie)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Location", where);
    if (cookie)
        MHD_add_response_header(r, "Set-Cookie", cookie);
    jq_http_headers(r, false);
    return jq_http_queue(c, MHD_HTTP_SEE_OTHER, r);
}

/* POST /login (token=...&csrf=...) puts the token in an HttpOnly cookie:
 * the page's scripts never hold it. POST /logout takes it away. */
enum MHD_Result jq_http_login(jq_http_t *h, jq_req_t *rq, bool out)
{
    struct MHD_Connection *c = rq->conn;
    char csrf[80] = "";
    if (!rq->body || !form_value(rq->body, rq->body_len, "csrf", csrf, sizeof csrf) ||
        !jq_http_csrf_ok(h, c, csrf))
        return jq_http_error(c, MHD_HTTP_FORBIDDEN, "CSRF",
                             "the form's csrf field does not match this run's");
    char cookie[200];
    if (out) {
        jq_session_t *se =
            session_find(h, MHD_lookup_connection_value(c, MHD_COOKIE_KIND, h->cookie_name));
        if (se)
            session_end(se);
        snprintf(cookie, sizeof cookie, "%s=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
                 h->cookie_name);
        return redirect(c, "/", cookie);
    }
    char token[1024];
    jq_identity_t who = {0};
    if (!form_value(rq->body, rq->body_len, "token", token, sizeof token) || !h->d->auth ||
        jq_auth_http_token(h->d->auth, token, strlen(token), jq_now_wall(), &who) < 0)
        return redirect(c, "/?login=failed", NULL);
    jq_session_t *se = session_new(h, token);
    if (!se)
        return jq_http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Internal", "no session");
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Strict",
             h->cookie_name, se->id, (long long)(JQ_HTTP_SESSION_US / 1000000));
    return redirect(c, "/", cookie);
}

