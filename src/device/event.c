/* event.c: completion events of devices, recycled through a per-device pool. */
#include "device/device.h"

#include <stdlib.h>

/* ----------------------------------------------------------------- events -- */

int parla__dev_event_record(parla__dev_t *d, void *stream, parla__dev_event_t **out)
{
    pthread_mutex_lock(&d->event_lock);
    parla__dev_event_t *e = d->event_pool;
    if (e)
        d->event_pool = e->next;
    pthread_mutex_unlock(&d->event_lock);
    if (e == NULL) {
        e = calloc(1, sizeof *e);
        if (e == NULL)
            return parla__error(PARLA_ENOMEM, "cannot allocate an event on %s", d->name);
        int rc = d->ops->event_create(d, &e->handle);
        if (rc) {
            free(e);
            return rc;
        }
        e->device = d;
        atomic_fetch_add_explicit(&d->n_events, 1, memory_order_relaxed);
    }
    int rc = d->ops->event_record(d, e->handle, stream);
    if (rc) {
        atomic_init(&e->refs, 1);
        parla__dev_event_release(e);
        return rc;
    }
    atomic_init(&e->refs, 1);
    parla__dev_engine_watch(d, stream); /* the engines learn of its completion without polling */
    *out = e;
    return 0;
}

void parla__dev_event_retain(parla__dev_event_t *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void parla__dev_event_release(parla__dev_event_t *e)
{
    if (e == NULL || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Back to the pool: re-recording a CUDA event is allowed once nobody will
     * wait on its old recording (stream waits capture it when issued). */
    parla__dev_t *d = e->device;
    pthread_mutex_lock(&d->event_lock);
    e->next = d->event_pool;
    d->event_pool = e;
    pthread_mutex_unlock(&d->event_lock);
}

int parla__dev_event_done(parla__dev_event_t *e)
{
    if (e == NULL)
        return 1;
    int rc = e->device->ops->event_query(e->device, e->handle);
    if (rc < 0 && e->device->shared)
        atomic_store(&e->device->shared->errored, true);
    return rc;
}

void parla__dev_event_pool_destroy(parla__dev_t *d)
{
    while (d->event_pool) {
        parla__dev_event_t *e = d->event_pool;
        d->event_pool = e->next;
        d->ops->event_destroy(d, e->handle);
        atomic_fetch_sub_explicit(&d->n_events, 1, memory_order_relaxed);
        free(e);
    }
}
