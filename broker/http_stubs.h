/* http_stubs.h: TEMPORARY declarations of what the metrics and token work
 * provides (being merged); removed when they land. */
#ifndef JOBQ_HTTP_STUBS_H
#define JOBQ_HTTP_STUBS_H
#include "daemon.h"
#include <stdio.h>
int jq_auth_http_token(struct jq_auth *a, const char *token, size_t len, int64_t now_wall_us,
                       jq_identity_t *who);
#endif
