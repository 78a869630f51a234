/* queue.c: intrusive task queues. A mutex per queue is enough here: critical
 * sections are a few pointer writes, and the size is published atomically so
 * that consumers skip empty queues without taking the lock. */
#include "core/internal.h"

void parla__queue_init(parla__queue_t *q)
{
    pthread_mutex_init(&q->lock, NULL);
    q->head = q->tail = NULL;
    atomic_init(&q->size, 0);
}

void parla__queue_destroy(parla__queue_t *q)
{
    pthread_mutex_destroy(&q->lock);
}

void parla__queue_push(parla__queue_t *q, parla_task_t *t)
{
    pthread_mutex_lock(&q->lock);
    t->qnext = NULL;
    t->qprev = q->tail;
    if (q->tail)
        q->tail->qnext = t;
    else
        q->head = t;
    q->tail = t;
    atomic_store_explicit(&q->size, atomic_load_explicit(&q->size, memory_order_relaxed) + 1,
                          memory_order_seq_cst);
    pthread_mutex_unlock(&q->lock);
}

static void unlink_locked(parla__queue_t *q, parla_task_t *t)
{
    if (t->qprev)
        t->qprev->qnext = t->qnext;
    else
        q->head = t->qnext;
    if (t->qnext)
        t->qnext->qprev = t->qprev;
    else
        q->tail = t->qprev;
    t->qnext = t->qprev = NULL;
    atomic_store_explicit(&q->size, atomic_load_explicit(&q->size, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

parla_task_t *parla__queue_pop_head(parla__queue_t *q)
{
    if (atomic_load_explicit(&q->size, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&q->lock);
    parla_task_t *t = q->head;
    if (t)
        unlink_locked(q, t);
    pthread_mutex_unlock(&q->lock);
    return t;
}

parla_task_t *parla__queue_pop_tail(parla__queue_t *q)
{
    if (atomic_load_explicit(&q->size, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&q->lock);
    parla_task_t *t = q->tail;
    if (t)
        unlink_locked(q, t);
    pthread_mutex_unlock(&q->lock);
    return t;
}
