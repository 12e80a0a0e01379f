/* peers.h: minimal clients of the job servers jobq is compared with —
 * beanstalkd (text protocol), Redis (RESP2) and gearmand (binary protocol)
 * — on buffered non-blocking TCP (or unix) connections, so one thread can
 * drive many of them with poll(2). The cycle workload (cycle_peers.c) and
 * the peers workload (sidebyside.c) use them. Each is only what those
 * need: no client library, so no library's own costs. */
#ifndef JOBQ_BENCH_PEERS_H
#define JOBQ_BENCH_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- a buffered non-blocking TCP connection ---- */

typedef struct {
    int fd;
    char *in;   /* bytes read, not consumed yet */
    size_t in_len, in_cap;
    char *out;  /* bytes queued, not written yet */
    size_t out_len, out_cap;
} pconn_t;

/* Connect to 127.0.0.1:port (TCP_NODELAY), blocking until connected, then
 * non-blocking; 0 on success. */
int pconn_open(pconn_t *c, int port);
/* The same on a unix socket (Redis --unixsocket). */
int pconn_open_unix(pconn_t *c, const char *path);
void pconn_close(pconn_t *c);
void pconn_queue(pconn_t *c, const void *p, size_t n);
void pconn_queuef(pconn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write what is queued, as far as the socket takes it; -1 on error. */
int pconn_flush(pconn_t *c);
/* Read what is available; -1 on EOF or error. */
int pconn_fill(pconn_t *c);
void pconn_consume(pconn_t *c, size_t n);
/* poll(2) events this connection waits for. */
short pconn_events(const pconn_t *c);

/* ---- beanstalkd ---- */

/* One reply at the head of c->in: its length (line and body), 0 when not
 * complete yet. word gets the first word ("INSERTED", "RESERVED",
 * "DELETED", ...), *id the number after it, body/blen a RESERVED job's
 * body. */
size_t bs_reply(const pconn_t *c, char word[16], uint64_t *id, const char **body, size_t *blen);

/* ---- Redis (RESP2) ---- */

/* Queue a command of argc arguments (each a C string). */
void resp_cmd(pconn_t *c, int argc, const char *const *argv);
/* One reply at the head of c->in: its length, 0 when not complete yet, -1
 * when unreadable. Its first `max` bulk strings (depth first, so a nested
 * XREADGROUP reply reads stream, id, field, value) go to bulk/blen and
 * their count to *nbulk; *type is the reply's first byte ('+', '-', ':',
 * '$', '*'); *ival an integer reply's value. */
ssize_t resp_reply(const pconn_t *c, char *type, long long *ival, const char **bulk,
                   size_t *blen, int max, int *nbulk);

/* ---- gearmand (binary protocol) ---- */

enum {
    GM_CAN_DO = 1,
    GM_PRE_SLEEP = 4,
    GM_NOOP = 6,
    GM_SUBMIT_JOB = 7,
    GM_JOB_CREATED = 8,
    GM_GRAB_JOB = 9,
    GM_NO_JOB = 10,
    GM_JOB_ASSIGN = 11,
    GM_WORK_COMPLETE = 13,
    GM_WORK_FAIL = 14,
    GM_ECHO_REQ = 16,
    GM_ECHO_RES = 17,
    GM_SUBMIT_JOB_BG = 18,
    GM_ERROR = 19,
    GM_WORK_EXCEPTION = 25,
};

/* Queue a request packet whose arguments are nargs strings, NUL-separated
 * (the last may hold any bytes: lens[i] gives each length). */
void gm_req(pconn_t *c, uint32_t type, int nargs, const char *const *args, const size_t *lens);
/* One response packet at the head of c->in: its length, 0 when not complete
 * yet, -1 when unreadable; *type, and data/dlen its arguments. */
ssize_t gm_res(const pconn_t *c, uint32_t *type, const char **data, size_t *dlen);

#endif
