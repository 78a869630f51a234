/* runahead.c: the runahead release of a GPU task's GPU-only successors, and the
 * device events that order them after its work. */
#include "graph/graph.h"

/* True when every placement option of s names GPUs only: s cannot run on the
 * CPU, so it may start on a GPU predecessor's runahead. Only for submitted
 * tasks (their options are final). */
static bool gpu_only(const parla_task_t *s)
{
    if (atomic_load_explicit(&s->state, memory_order_acquire) == PARLA_TASK_CREATED || s->ext == NULL ||
        s->ext->n_options == 0)
        return false;
    const parla_runtime_t *rt = s->rt;
    for (int o = 0; o < s->ext->n_options; o++)
        for (int k = 0; k < s->ext->options[o].n; k++) {
            int slot = s->ext->options[o].slots[k];
            if (slot == PARLA_ANY_CPU || (slot >= 0 && parla__dev_devs(rt)->devices[slot].kind != PARLA_DEVICE_GPU))
                return false;
        }
    return true;
}

/* Pushes t's events onto s's waits list, so that s's streams (and the copies
 * bringing its data) wait for t's work. False when a record cannot be
 * allocated: s then waits for t's completion instead. */
static bool add_waits(parla_task_t *s, parla_task_t *t)
{
    parla__graph_evwait_t *list = NULL, *last = NULL;
    for (int k = 0; k < t->n_devices; k++) {
        parla__dev_event_t *e = t->ext->events[k];
        if (e == NULL)
            continue;
        parla__graph_evwait_t *w = parla__alloc(t->rt, sizeof *w);
        if (w == NULL) {
            while (list) {
                parla__graph_evwait_t *next = list->next;
                parla__dev_event_release(list->event);
                parla__free(list);
                list = next;
            }
            return false;
        }
        parla__dev_event_retain(e);
        w->event = e;
        w->next = list;
        list = w;
        if (last == NULL)
            last = w;
    }
    if (list == NULL)
        return true;
    parla__graph_evwait_t *head = atomic_load_explicit(&s->ext->waits, memory_order_relaxed);
    do
        last->next = head;
    while (!atomic_compare_exchange_weak_explicit(&s->ext->waits, &head, list, memory_order_release,
                                                  memory_order_relaxed));
    return true;
}

void parla__graph_task_runahead(parla_task_t *t)
{
    atomic_store(&t->state, PARLA_TASK_RUNAHEAD);
    /* Edges pushed after this snapshot wait for the completion. */
    for (parla__graph_edge_t *e = atomic_load_explicit(&t->succ, memory_order_acquire); e && e != PARLA__SEALED;
         e = e->next) {
        parla_task_t *s = e->succ;
        if ((e->flags & (PARLA__EDGE_SOFT | PARLA__EDGE_NOTIFIED)) || !gpu_only(s))
            continue;
        /* The waits are in place before s can become ready. */
        if (t->ext && !add_waits(s, t))
            continue;
        e->flags |= PARLA__EDGE_NOTIFIED;
        parla__graph_task_dec_pending(s);
    }
}

int parla__graph_stream_wait_task(parla_task_t *t, parla__dev_t *d, void *stream)
{
    if (t->ext == NULL || stream == NULL)
        return 0;
    for (parla__graph_evwait_t *w = atomic_load_explicit(&t->ext->waits, memory_order_acquire); w; w = w->next) {
        int rc = d->ops->stream_wait_event(d, stream, w->event->handle);
        if (rc)
            return rc;
    }
    return 0;
}

void parla__graph_host_wait_task(parla_task_t *t)
{
    if (t->ext == NULL)
        return;
    for (parla__graph_evwait_t *w = atomic_load_explicit(&t->ext->waits, memory_order_acquire); w; w = w->next)
        if (parla__dev_event_done(w->event) == 0)
            w->event->device->ops->event_synchronize(w->event->device, w->event->handle);
}

int parla__graph_task_waits(parla_task_t *t, parla__dev_event_t ***out)
{
    *out = NULL;
    int n = 0;
    if (t == NULL || t->ext == NULL)
        return 0;
    for (parla__graph_evwait_t *w = atomic_load_explicit(&t->ext->waits, memory_order_acquire); w; w = w->next)
        n++;
    if (n == 0)
        return 0;
    parla__dev_event_t **v = parla__alloc(t->rt, (size_t)n * sizeof *v);
    if (v == NULL)
        return PARLA_ENOMEM;
    int i = 0;
    for (parla__graph_evwait_t *w = atomic_load_explicit(&t->ext->waits, memory_order_acquire); w; w = w->next) {
        parla__dev_event_retain(w->event);
        v[i++] = w->event;
    }
    *out = v;
    return n;
}

void parla__graph_task_events_release(parla_task_t *t)
{
    parla__graph_task_ext_t *x = t->ext;
    if (x == NULL)
        return;
    parla__graph_evwait_t *w = atomic_load_explicit(&x->waits, memory_order_relaxed)
                             ? atomic_exchange_explicit(&x->waits, NULL, memory_order_acquire)
                             : NULL;
    while (w) {
        parla__graph_evwait_t *next = w->next;
        parla__dev_event_release(w->event);
        parla__free(w);
        w = next;
    }
    for (int k = 0; k < t->n_devices; k++) { /* events are recorded per device of the task */
        parla__dev_event_release(x->events[k]);
        x->events[k] = NULL;
    }
}
