/* changeq.c: a mutex-protected list plus an eventfd. */
#include "changeq.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct jq_changeq {
    pthread_mutex_t mu;
    jq_change_t *head, *tail;
    int efd;
    bool signaled; /* under mu: the eventfd holds a wake-up not yet read */
    /* written under mu, read without it: a producer reading its ticket
     * right after its push (jq_store_ticket, on the loop too) never waits
     * for the consumer holding mu */
    _Atomic uint64_t pushed;
};

jq_changeq_t *jq_changeq_new(void)
{
    jq_changeq_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0) {
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->mu, NULL);
    return q;
}

void jq_changeq_destroy(jq_changeq_t **qp)
{
    if (!qp || !*qp)
        return;
    jq_changeq_t *q = *qp;
    jq_change_list_free(&q->head);
    close(q->efd);
    pthread_mutex_destroy(&q->mu);
    free(q);
    *qp = NULL;
}

void jq_changeq_push(jq_changeq_t *q, jq_change_t *head)
{
    jq_change_t *tail = head;
    uint64_t n = head ? 1 : 0;
    while (tail && tail->next) {
        tail = tail->next;
        n++;
    }
    pthread_mutex_lock(&q->mu);
    if (head) { /* NULL: only a wake-up (jq_changeq_kick) */
        atomic_fetch_add_explicit(&q->pushed, n, memory_order_release);
        if (q->tail)
            q->tail->next = head;
        else
            q->head = head;
        q->tail = tail;
    }
    bool wake = !q->signaled;
    q->signaled = true;
    pthread_mutex_unlock(&q->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t n = write(q->efd, &one, sizeof one);
        (void)n; /* a full counter still wakes the reader */
    }
}

int jq_changeq_fd(jq_changeq_t *q)
{
    return q->efd;
}

jq_change_t *jq_changeq_take(jq_changeq_t *q)
{
    uint64_t v;
    ssize_t n = read(q->efd, &v, sizeof v);
    (void)n;
    pthread_mutex_lock(&q->mu);
    jq_change_t *head = q->head;
    q->head = q->tail = NULL;
    q->signaled = false;
    pthread_mutex_unlock(&q->mu);
    return head;
}

uint64_t jq_changeq_pushed(jq_changeq_t *q)
{
    return atomic_load_explicit(&q->pushed, memory_order_acquire);
}

void jq_changeq_kick(jq_changeq_t *q)
{
    jq_changeq_push(q, NULL);
}
