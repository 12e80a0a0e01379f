/* beans.c: a minimal beanstalkd client (text protocol) for the side-by-side
 * figures: `put <pri> <delay> <ttr> <bytes>\r\n<body>\r\n` -> `INSERTED <id>\r\n`. */
#include "beans.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int bs_connect(int port, bool nonblocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 &&
        !(nonblocking && errno == EINPROGRESS)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads replies, counting lines that start with "INSERTED"; stops after
 * want lines. Returns inserted count or -1. */
static long read_replies(int fd, long want)
{
    char buf[65536];
    long lines = 0, inserted = 0;
    bool at_start = true;
    size_t partial = 0; /* bytes of the current line seen so far (up to 8) */
    char head[9];
    while (lines < want) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        for (ssize_t i = 0; i < r; i++) {
            if (at_start) {
                partial = 0;
                at_start = false;
            }
            if (buf[i] == '\n') {
                head[partial < 8 ? partial : 8] = '\0';
                if (strncmp(head, "INSERTED", 8) == 0)
                    inserted++;
                lines++;
                at_start = true;
            } else if (partial < 8) {
                head[partial++] = buf[i];
            }
        }
    }
    return inserted;
}

int bs_put(int fd, const char *body, size_t len)
{
    char msg[4096];
    int h = snprintf(msg, sizeof msg, "put 0 0 60 %zu\r\n", len);
    if (h < 0 || (size_t)h + len + 2 > sizeof msg)
        return -1;
    memcpy(msg + h, body, len);
    memcpy(msg + h + len, "\r\n", 2);
    if (write_all(fd, msg, (size_t)h + len + 2) < 0)
        return -1;
    return read_replies(fd, 1) == 1 ? 0 : -1;
}

long bs_put_many(int fd, long n, const char *body, size_t len)
{
    char one[4096];
    int h = snprintf(one, sizeof one, "put 0 0 60 %zu\r\n", len);
    if (h < 0 || (size_t)h + len + 2 > sizeof one)
        return -1;
    memcpy(one + h, body, len);
    memcpy(one + h + len, "\r\n", 2);
    size_t sz = (size_t)h + len + 2;
    char *buf = malloc(sz * (size_t)n);
    if (!buf)
        return -1;
    for (long i = 0; i < n; i++)
        memcpy(buf + (size_t)i * sz, one, sz);
    long rc = write_all(fd, buf, sz * (size_t)n) < 0 ? -1 : read_replies(fd, n);
    free(buf);
    return rc;
}
