/* metrics.h: the daemon's figures in the Prometheus text exposition format
 * (version 0.0.4), the body of GET /metrics (docs/operations.md
 * "Metrics" lists every metric). */
#ifndef JOBQ_METRICS_H
#define JOBQ_METRICS_H

#include "daemon.h"

#include <stdio.h>

/* Any thread (the HTTP thread): write the whole exposition to out (an
 * open_memstream, so that no lock is held while a client reads). Takes
 * each shard's read lock in turn, as `stats` does, and nothing longer;
 * the rest is atomics and copies. 0, or -1 when writing failed. */
int jq_metrics_render(jq_daemon_t *d, FILE *out);

#endif
