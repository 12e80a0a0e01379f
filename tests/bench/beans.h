/* beans.h: the beanstalkd text-protocol client used for comparison. */
#ifndef JOBQ_BENCH_BEANS_H
#define JOBQ_BENCH_BEANS_H

#include <stdbool.h>
#include <stddef.h>

/* TCP connection to 127.0.0.1:port (TCP_NODELAY); -1 on failure. With
 * nonblocking the connect may still be in progress on return. */
int bs_connect(int port, bool nonblocking);
/* One put, waiting for its INSERTED; 0 on success. */
int bs_put(int fd, const char *body, size_t len);
/* n puts written at once (pipelined), then n replies read; returns the
 * number INSERTED, -1 on a transport error. */
long bs_put_many(int fd, long n, const char *body, size_t len);

#endif
