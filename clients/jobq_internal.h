/* jobq_internal.h: what libjobq's own files share and callers must not
 * use. */
#ifndef JOBQ_INTERNAL_H
#define JOBQ_INTERNAL_H

#include "jobq.h"

/* Records a failure in the client (jobq_client_status/reason), so that a
 * component built on the client (the subscriber) reports through the same
 * two functions. */
void jobq_client_fail(jobq_client_t *self, jobq_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* For a component that waits on other sockets (the subscriber): returns
 * -1 with JOBQ_ERR_NOT_RUNNING recorded when the client's connection is
 * down and a connect attempt failed since the last check (the daemon went
 * away), else 0. Never blocks. */
int jobq_client_check_connection(jobq_client_t *self);

#endif
