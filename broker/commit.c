/* commit.c: what the daemon does when the store has committed a batch, on
 * the store thread (a cluster's: on the loop, see jq_commit_settle), after
 * the commit and with no lock held: the jobs'
 * committed serials catch up (so replies showing them are no longer held),
 * committed archives leave memory and the scheduler, jobs waiting for
 * their submit record's commit become runnable, and the records go to the
 * loop, which publishes them and releases the replies held for them. */
#include "daemon.h"

#include <stdlib.h>

jq_change_t *jq_commit_settle(jq_daemon_t *d, jq_change_t *head, uint64_t durable)
{
    jq_table_mark_committed(d->table, head);
    jq_change_t *keep = NULL, **tail = &keep;
    while (head) {
        jq_change_t *c = head;
        head = c->next;
        c->next = NULL;
        if (c->job_id == 0) { /* the drain flag: nothing to publish */
            free(c);
            continue;
        }
        if (c->kind == JQ_CHANGE_ARCHIVE) {
            /* Readers find it in the store from now on. */
            jq_table_evict_archived(d->table, c->job_id);
            jq_sched_forget(d->sched, c->job_id);
        }
        *tail = c;
        tail = &c->next;
    }
    jq_sched_durable(d->sched, durable);
    return keep;
}

static void committed(void *ctx, jq_change_t *head, uint64_t durable)
{
    jq_daemon_t *d = ctx;
    /* A cluster's thread takes no table lock: the loop settles them
     * (jq_commit_settle) before it publishes. Pushed even when empty (a
     * batch of drain records only): the wake-up is what lets the loop
     * release the replies waiting for this commit. */
    jq_changeq_push(d->changeq, d->cluster ? head : jq_commit_settle(d, head, durable));
}

static void failed(void *ctx)
{
    jq_daemon_t *d = ctx;
    jq_changeq_kick(d->changeq); /* the loop answers the replies at stake */
}

void jq_daemon_store_hooks(jq_daemon_t *d, jq_store_hooks_t *hooks)
{
    hooks->committed = committed;
    hooks->failed = failed;
    hooks->ctx = d;
}
