/* http.h: jobqd's HTTP endpoint (--http): Prometheus metrics, the live
 * dashboard and its small JSON API, on one thread of its own.
 *
 * The HTTP thread reads only what the daemon already offers: the event
 * stream (a SUB socket on the publisher's inproc endpoint), `stats`, and
 * the table through the request path (jq_dispatch, as a handler thread
 * would). It never blocks the loop: a slow browser only fills its own
 * bounded buffer. docs/dashboard.md and docs/security.md describe it. */
#ifndef JOBQ_HTTP_H
#define JOBQ_HTTP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The publisher binds this endpoint too when --http is on; the HTTP
 * thread subscribes there. */
#define JQ_HTTP_EVENTS_EP "inproc://jobq-events-http"

/* --http ADDRESS:PORT, parsed: a numeric IPv4 address or [IPv6] address
 * and a port (0: any). */
typedef struct {
    struct sockaddr_storage sa;
    socklen_t len;
    bool loopback; /* 127.0.0.0/8 or ::1 */
} jq_http_addr_t;

/* 0 and *out, or -1 with a message naming --http. */
int jq_http_addr_parse(const char *text, jq_http_addr_t *out, char *err, size_t errlen);

struct jq_daemon;
typedef struct jq_http jq_http_t;

/* Binds the address of d->cfg.http, writes RUN_DIR/http.port and starts
 * the HTTP thread. NULL with a message in err. zctx: the daemon's
 * ZeroMQ context (the publisher must have bound JQ_HTTP_EVENTS_EP, or
 * will: inproc connects may come first). */
jq_http_t *jq_http_new(struct jq_daemon *d, void *zctx, char *err, size_t errlen);
/* Stops the thread, closes every connection and frees; nulls *h. */
void jq_http_destroy(jq_http_t **h);

#endif
