/* peers.c: the minimal beanstalkd, Redis and gearmand clients of the cycle
 * workload (see peers.h). Written from each server's protocol document;
 * parsers look at the head of a connection's input and say how many bytes
 * one reply takes, so a reply split across reads is simply waited for. */
#include "peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- connection ---- */

int pconn_open(pconn_t *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

int pconn_open_unix(pconn_t *c, const char *path)
{
    memset(c, 0, sizeof *c);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return c->fd = -1;
    strcpy(a.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

void pconn_close(pconn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static void reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    char *g = realloc(*buf, n);
    if (!g)
        abort(); /* the bench's own memory: nothing sensible to do */
    *buf = g;
    *cap = n;
}

void pconn_queue(pconn_t *c, const void *p, size_t n)
{
    reserve(&c->out, &c->out_cap, c->out_len + n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

void pconn_queuef(pconn_t *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        pconn_queue(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

int pconn_flush(pconn_t *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    return 0;
}

int pconn_fill(pconn_t *c)
{
    for (;;) {
        reserve(&c->in, &c->in_cap, c->in_len + 65536);
        ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (r > 0) {
            c->in_len += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1; /* EOF or error */
    }
}

void pconn_consume(pconn_t *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

short pconn_events(const pconn_t *c)
{
    return (short)(POLLIN | (c->out_len ? POLLOUT : 0));
}

/* ---- beanstalkd ---- */

size_t bs_reply(const pconn_t *c, char word[16], uint64_t *id, const char **body, size_t *blen)
{
    const char *p = c->in;
    const char *nl = c->in_len ? memchr(p, '\n', c->in_len) : NULL;
    if (!nl)
        return 0;
    size_t line = (size_t)(nl - p) + 1;
    size_t w = strcspn(p, " \r\n");
    if (w > 15)
        w = 15;
    memcpy(word, p, w);
    word[w] = '\0';
    *id = 0;
    *body = NULL;
    *blen = 0;
    if (p[w] == ' ')
        *id = strtoull(p + w + 1, NULL, 10);
    if (strcmp(word, "RESERVED") == 0) {
        /* RESERVED <id> <bytes>\r\n<body>\r\n */
        const char *sp = memchr(p + w + 1, ' ', line - w - 1);
        size_t n = sp ? strtoul(sp + 1, NULL, 10) : 0;
        if (c->in_len < line + n + 2)
            return 0;
        *body = p + line;
        *blen = n;
        return line + n + 2;
    }
    return line;
}

/* ---- Redis ---- */

void resp_cmd(pconn_t *c, int argc, const char *const *argv)
{
    pconn_queuef(c, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]);
        pconn_queuef(c, "$%zu\r\n", n);
        pconn_queue(c, argv[i], n);
        pconn_queue(c, "\r\n", 2);
    }
}

typedef struct {
    const char **bulk;
    size_t *blen;
    int max, n;
} resp_walk_t;

/* Length of the RESP value at p (0: incomplete, -1: unreadable). */
static ssize_t resp_value(const char *p, size_t len, resp_walk_t *wk, long long *ival, int depth)
{
    if (depth > 8)
        return -1;
    const char *nl = len ? memchr(p, '\n', len) : NULL;
    if (!nl)
        return 0;
    size_t line = (size_t)(nl - p) + 1;
    if (line < 3 || p[line - 2] != '\r')
        return -1;
    long long v = strtoll(p + 1, NULL, 10);
    switch (p[0]) {
    case '+':
    case '-':
        return (ssize_t)line;
    case ':':
        if (ival)
            *ival = v;
        return (ssize_t)line;
    case '$':
        if (v < 0)
            return (ssize_t)line; /* nil */
        if (len < line + (size_t)v + 2)
            return 0;
        if (wk->n < wk->max) {
            wk->bulk[wk->n] = p + line;
            wk->blen[wk->n] = (size_t)v;
        }
        wk->n++;
        return (ssize_t)(line + (size_t)v + 2);
    case '*': {
        size_t off = line;
        for (long long i = 0; i < v; i++) {
            ssize_t r = resp_value(p + off, len - off, wk, NULL, depth + 1);
            if (r <= 0)
                return r;
            off += (size_t)r;
        }
        return (ssize_t)off;
    }
    default:
        return -1;
    }
}

ssize_t resp_reply(const pconn_t *c, char *type, long long *ival, const char **bulk,
                   size_t *blen, int max, int *nbulk)
{
    if (!c->in_len)
        return 0;
    resp_walk_t wk = {.bulk = bulk, .blen = blen, .max = max};
    *type = c->in[0];
    *ival = 0;
    ssize_t r = resp_value(c->in, c->in_len, &wk, ival, 0);
    *nbulk = wk.n < max ? wk.n : max;
    return r;
}

/* ---- gearmand ---- */

void gm_req(pconn_t *c, uint32_t type, int nargs, const char *const *args, const size_t *lens)
{
    uint32_t size = 0;
    for (int i = 0; i < nargs; i++)
        size += (uint32_t)lens[i] + (i + 1 < nargs ? 1 : 0);
    unsigned char h[12] = {0, 'R', 'E', 'Q'};
    uint32_t t = htonl(type), s = htonl(size);
    memcpy(h + 4, &t, 4);
    memcpy(h + 8, &s, 4);
    pconn_queue(c, h, sizeof h);
    for (int i = 0; i < nargs; i++) {
        pconn_queue(c, args[i], lens[i]);
        if (i + 1 < nargs)
            pconn_queue(c, "", 1); /* the NUL separator */
    }
}

ssize_t gm_res(const pconn_t *c, uint32_t *type, const char **data, size_t *dlen)
{
    if (c->in_len < 12)
        return 0;
    if (memcmp(c->in, "\0RES", 4) != 0)
        return -1;
    uint32_t t, s;
    memcpy(&t, c->in + 4, 4);
    memcpy(&s, c->in + 8, 4);
    *type = ntohl(t);
    size_t n = ntohl(s);
    if (c->in_len < 12 + n)
        return 0;
    *data = c->in + 12;
    *dlen = n;
    return (ssize_t)(12 + n);
}
