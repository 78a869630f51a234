/* resources.c: reservation of a task's vcus and memory on its devices, and the
 * blocked lists of tasks waiting for them. */
#include "sched/sched.h"

/* -------------------------------------------------------------- resources -- */

bool parla__sched_resources_fit_locked(const parla__dev_t *d, int64_t vcus, uint64_t memory)
{
    if (vcus > d->vcus_free || memory > d->memory_free)
        return false;
    /* One account with the data copies: those in use by running tasks
     * cannot make room; the others are evicted once reserved. */
    if (memory > 0 && d->index != 0 &&
        parla__data_pinned_bytes_locked(d) + (d->memory_capacity - d->memory_free) + memory > d->memory_capacity)
        return false;
    return true;
}

/* Devices of t in increasing index order (the lock order among devices). */
static int sorted_devices(const parla_task_t *t, int *out)
{
    int n = t->n_devices;
    for (int i = 0; i < n; i++)
        out[i] = t->devices[i];
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int x = out[j];
            out[j] = out[j - 1];
            out[j - 1] = x;
        }
    return n;
}

bool parla__sched_reserve_or_block(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    int idx[PARLA_MAX_TASK_DEVICES];
    int n = sorted_devices(t, idx);
    for (int i = 0; i < n; i++)
        pthread_mutex_lock(&parla__dev_devs(rt)->devices[idx[i]].lock);
    int fail = -1;
    for (int i = 0; i < n && fail < 0; i++) {
        parla__dev_t *d = &parla__dev_devs(rt)->devices[idx[i]];
        /* FIFO fairness: never overtake a task already waiting on a device. */
        if (d->blocked_head != NULL || !parla__sched_resources_fit_locked(d, t->vcus, t->memory))
            fail = i;
    }
    if (fail < 0) {
        for (int i = 0; i < n; i++) {
            parla__dev_devs(rt)->devices[idx[i]].vcus_free -= t->vcus;
            parla__dev_devs(rt)->devices[idx[i]].memory_free -= t->memory;
        }
    } else {
        parla__dev_t *d = &parla__dev_devs(rt)->devices[idx[fail]];
        t->qnext = NULL;
        if (d->blocked_tail)
            d->blocked_tail->qnext = t;
        else
            d->blocked_head = t;
        d->blocked_tail = t;
    }
    for (int i = n - 1; i >= 0; i--)
        pthread_mutex_unlock(&parla__dev_devs(rt)->devices[idx[i]].lock);
    /* The reserved memory shares the account with data copies: evict for it, with no device lock
     * held (a write-back drops the device's lock while it copies). */
    for (int i = 0; fail < 0 && t->memory > 0 && i < n; i++)
        parla__data_make_room(&parla__dev_devs(rt)->devices[idx[i]]);
    return fail < 0;
}

parla_task_t *parla__sched_release_resources(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    parla_task_t *retry = NULL, **rtail = &retry;
    parla_task_t *room = NULL; /* tasks waiting for room for their data (one account) */
    for (int i = 0; i < t->n_devices; i++) {
        parla__dev_t *d = &parla__dev_devs(rt)->devices[t->devices[i]];
        pthread_mutex_lock(&d->lock);
        d->vcus_free += t->vcus;
        d->memory_free += t->memory;
        if (t->memory > 0) {
            d->unpin_epoch++; /* room appeared, as when copies are unpinned */
            while (d->data_blocked) {
                parla_task_t *b = d->data_blocked;
                d->data_blocked = b->qnext;
                b->qnext = room;
                room = b;
            }
        }
        /* Take the whole blocked list and retry it outside the lock, in FIFO
         * order: a retried multi-device task locks its own devices in order. */
        if (d->blocked_head) {
            *rtail = d->blocked_head;
            rtail = &d->blocked_tail->qnext;
            d->blocked_head = d->blocked_tail = NULL;
        }
        pthread_mutex_unlock(&d->lock);
    }
    while (room) {
        parla_task_t *b = room;
        room = b->qnext;
        b->qnext = NULL;
        parla__sched_task_ready(b);
    }
    parla_task_t *ready = NULL, **tail = &ready;
    while (retry) {
        parla_task_t *b = retry;
        retry = b->qnext;
        b->qnext = NULL;
        if (parla__sched_reserve_or_block(b)) {
            *tail = b;
            tail = &b->qnext;
        }
    }
    return ready;
}
