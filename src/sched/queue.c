/* queue.c: intrusive task queues (the ready queues of the scheduler). Critical
 * sections are a few pointer writes, so a spinlock guards each queue (a
 * contended mutex would sleep in the kernel). The size is published
 * atomically so that consumers skip empty queues without taking the lock. */
#include "sched/sched.h"

void parla__sched_queue_init(parla__sched_queue_t *q, _Atomic long *total)
{
    q->total = total;
    atomic_init(&q->lock, 0);
    q->head = q->tail = NULL;
    atomic_init(&q->size, 0);
}


void parla__sched_queue_push(parla__sched_queue_t *q, parla_task_t *t)
{
    parla__spin_lock(&q->lock);
    t->qnext = NULL;
    t->qprev = q->tail;
    if (q->tail)
        q->tail->qnext = t;
    else
        q->head = t;
    q->tail = t;
    atomic_store_explicit(&q->size, atomic_load_explicit(&q->size, memory_order_relaxed) + 1,
                          memory_order_seq_cst);
    atomic_fetch_add(q->total, 1);
    parla__spin_unlock(&q->lock);
}

static void unlink_locked(parla__sched_queue_t *q, parla_task_t *t)
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
    atomic_fetch_sub_explicit(q->total, 1, memory_order_relaxed);
}

parla_task_t *parla__sched_queue_pop_head(parla__sched_queue_t *q)
{
    if (atomic_load_explicit(&q->size, memory_order_relaxed) == 0)
        return NULL;
    parla__spin_lock(&q->lock);
    parla_task_t *t = q->head;
    if (t)
        unlink_locked(q, t);
    parla__spin_unlock(&q->lock);
    return t;
}

parla_task_t *parla__sched_queue_pop_tail(parla__sched_queue_t *q)
{
    if (atomic_load_explicit(&q->size, memory_order_relaxed) == 0)
        return NULL;
    parla__spin_lock(&q->lock);
    parla_task_t *t = q->tail;
    if (t)
        unlink_locked(q, t);
    parla__spin_unlock(&q->lock);
    return t;
}

parla_task_t *parla__sched_queue_take_child(parla__sched_queue_t *q, uint64_t creator, bool from_tail)
{
    if (atomic_load_explicit(&q->size, memory_order_relaxed) == 0)
        return NULL;
    parla__spin_lock(&q->lock);
    parla_task_t *t = from_tail ? q->tail : q->head;
    while (t && t->creator != creator)
        t = from_tail ? t->qprev : t->qnext;
    if (t)
        unlink_locked(q, t);
    parla__spin_unlock(&q->lock);
    return t;
}
