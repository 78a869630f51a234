/* resources.c: per-device resource accounting (vcus, memory) and the list of
 * tasks waiting for resources. Waiting is event driven: a release retries the
 * blocked tasks in FIFO order; nothing polls. */
#include "core/internal.h"

int parla__device_init(parla__device_t *d, int index, uint64_t memory)
{
    d->index = index;
    if (pthread_mutex_init(&d->lock, NULL) != 0)
        return parla__error(PARLA_ESYS, "pthread_mutex_init failed for device %d", index);
    d->vcus_capacity = d->vcus_free = PARLA__VCU_ONE;
    d->memory_capacity = d->memory_free = memory;
    d->blocked_head = d->blocked_tail = NULL;
    return 0;
}

void parla__device_destroy(parla__device_t *d)
{
    pthread_mutex_destroy(&d->lock);
}

static bool fits(const parla__device_t *d, const parla_task_t *t)
{
    return t->vcus <= d->vcus_free && t->memory <= d->memory_free;
}

static void take(parla__device_t *d, const parla_task_t *t)
{
    d->vcus_free -= t->vcus;
    d->memory_free -= t->memory;
}

bool parla__device_reserve_or_block(parla__device_t *d, parla_task_t *t)
{
    bool ok;
    pthread_mutex_lock(&d->lock);
    /* FIFO fairness: a task never overtakes one that is already waiting. */
    ok = d->blocked_head == NULL && fits(d, t);
    if (ok) {
        take(d, t);
    } else {
        t->qnext = NULL;
        if (d->blocked_tail)
            d->blocked_tail->qnext = t;
        else
            d->blocked_head = t;
        d->blocked_tail = t;
    }
    pthread_mutex_unlock(&d->lock);
    return ok;
}

parla_task_t *parla__device_release(parla__device_t *d, parla_task_t *t)
{
    parla_task_t *ready = NULL, **tail = &ready;
    pthread_mutex_lock(&d->lock);
    d->vcus_free += t->vcus;
    d->memory_free += t->memory;
    while (d->blocked_head && fits(d, d->blocked_head)) {
        parla_task_t *b = d->blocked_head;
        d->blocked_head = b->qnext;
        if (d->blocked_head == NULL)
            d->blocked_tail = NULL;
        take(d, b);
        b->qnext = NULL;
        *tail = b;
        tail = &b->qnext;
    }
    pthread_mutex_unlock(&d->lock);
    return ready;
}
