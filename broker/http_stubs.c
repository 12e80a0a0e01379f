/* http_stubs.c: TEMPORARY: fails every call until the real ones merge. */
#include "http_stubs.h"
int jq_metrics_render(jq_daemon_t *d, FILE *out) { (void)d; (void)out; return -1; }
int jq_hub_snapshot_json(struct jq_hub *h, FILE *out) { (void)h; (void)out; return -1; }
int jq_auth_http_token(struct jq_auth *a, const char *token, size_t len, int64_t now_wall_us,
                       jq_identity_t *who)
{ (void)a; (void)token; (void)len; (void)now_wall_us; (void)who; return -1; }
