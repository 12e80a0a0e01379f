/* fuzz_daemon.h: an in-process jobqd for the fuzz targets — the daemon
 * context main.c builds (config, store in a temporary data directory,
 * table, scheduler, tokens, replay ring, opcode registry, the store thread
 * and its commit hook) without sockets, handler threads or executors, so a
 * target can call the functions the loop and the handler threads call.
 *
 * Jobs submitted stay queued (no executor runs them). State carries over
 * from one input to the next, as in a real daemon, except what would stop
 * it serving: fuzz_daemon_settle() undoes shutdown and drain, feeds the
 * committed changes to the parked waiters (answering them all once there
 * are more than a few), and rebuilds the whole context in a new directory
 * when the table or the opcode registry has grown large. */
#ifndef JOBQ_FUZZ_DAEMON_H
#define JOBQ_FUZZ_DAEMON_H

#include "daemon.h"
#include "waiters.h"

/* The daemon, started on first use; aborts when it cannot start. */
jq_daemon_t *fuzz_daemon(void);
/* A waiter jq_dispatch returned: parked as the loop parks it. */
void fuzz_daemon_park(jq_waiter_t *w);
/* After each input: committed changes go to the waiters, the waiters'
 * timers run, shutdown and drain are undone; rebuilt when grown large. */
void fuzz_daemon_settle(void);
/* Wait (bounded) until the store has committed every queued record. */
void fuzz_daemon_sync(void);
/* True when fuzz_daemon_settle() would rebuild the context. */
bool fuzz_daemon_grown(void);
/* Rebuild the context now: a new, empty store (job ids from 1 again). */
void fuzz_daemon_reset(void);

#endif
