/* epoch.h: the event epoch of this run (docs/protocol.md "Events"): it only
 * grows across restarts of one data directory, whatever the clock does. */
#ifndef JOBQ_EPOCH_H
#define JOBQ_EPOCH_H

#include <stddef.h>
#include <stdint.h>

/* Before anything is published: this run's epoch, max(now_us, the last
 * run's + 1), where the last run's is read from DIR/epoch (one decimal
 * number of microseconds; absent or unreadable: none). The new one is
 * written there (a temporary file, fsynced, renamed over it, the directory
 * fsynced) before it is returned, so it is never handed out twice. It lives
 * beside the store, not in it: restoring a store backup never takes the
 * epoch back. 0, or -1 with a message. */
int jq_epoch_next(const char *dir, uint64_t now_us, uint64_t *epoch, char *err, size_t errlen);

#endif
