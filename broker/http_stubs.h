/* http_stubs.h: TEMPORARY declarations of what the metrics and token work
 * provides (being merged); removed when they land. */
#ifndef JOBQ_HTTP_STUBS_H
#define JOBQ_HTTP_STUBS_H
#include "daemon.h"
#include <stdio.h>
struct jq_hub;
int jq_metrics_render(jq_daemon_t *d, FILE *out);
int jq_hub_snapshot_json(struct jq_hub *h, FILE *out);
int jq_auth_http_token(struct jq_auth *a, const char *token, size_t len, int64_t now_wall_us,
                       jq_identity_t *who);
#endif
