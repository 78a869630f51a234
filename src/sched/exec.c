/* exec.c: running a task's body on a worker: CUDA stream prologue and
 * epilogue, the outcome, runahead, and suspension (parla_task_suspend_on). */
#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>

/* True when one of t's devices has streams (a CUDA GPU). */
static bool uses_streams(const parla_task_t *t)
{
    if (t->ext == NULL)
        return false;
    for (int k = 0; k < t->n_devices; k++)
        if (parla__dev_async(&parla__dev_devs(t->rt)->devices[t->devices[k]]))
            return true;
    return false;
}

/* Before a body on CUDA GPUs: the worker's stream on each device waits for the
 * events of the predecessors that released the task at their runahead. */
static int streams_prologue(parla__sched_worker_t *w, parla_task_t *t)
{
    /* Last to first, so that the first device is the current one after. */
    for (int k = t->n_devices - 1; k >= 0; k--) {
        parla__dev_t *d = &parla__dev_devs(t->rt)->devices[t->devices[k]];
        if (!parla__dev_async(d))
            continue;
        void *stream = parla__sched_worker_stream(w, d->index);
        if (stream == NULL)
            return PARLA_EDEVICE; /* the driver's error is in the message */
        int rc = parla__graph_stream_wait_task(t, d, stream);
        if (rc == 0)
            rc = d->ops->activate(d);
        if (rc)
            return rc;
    }
    return 0;
}

/* After a body on CUDA GPUs. On success (record): an event after the work the
 * body queued on each stream; where one cannot be recorded, and after a
 * failure, the worker waits for the stream instead, so that nothing is still
 * using the task's data when it is released. */
static void streams_epilogue(parla__sched_worker_t *w, parla_task_t *t, bool record)
{
    for (int k = 0; k < t->n_devices; k++) {
        parla__dev_t *d = &parla__dev_devs(t->rt)->devices[t->devices[k]];
        void *stream = w->streams ? w->streams[d->index] : NULL;
        if (stream == NULL)
            continue;
        if (record && t->ext->events[k] == NULL && parla__dev_event_record(d, stream, &t->ext->events[k]) == 0)
            continue;
        d->ops->stream_synchronize(d, stream);
    }
}

void *parla_task_stream(const parla_task_t *task, int k)
{
    parla__sched_worker_t *w = parla__sched_tls_worker;
    if (task == NULL || w == NULL || w->current != task || k < 0 || k >= task->n_devices || w->streams == NULL)
        return NULL;
    return w->streams[task->devices[k]];
}

/* The trace record of a body that ran from t0 until now and returned rc. */
static void trace_body(parla_task_t *t, uint64_t t0, int rc)
{
    parla__trace_task(parla__graph_rt(t->rt)->trace, t->serial, t0, parla__trace_now_ns(), t->n_devices ? t->devices[0] : 0,
                      rc == 0 ? PARLA_TASK_DONE : rc == PARLA_TASK_SUSPEND ? PARLA_TASK_SUSPENDED : PARLA_TASK_FAILED,
                      t->ext && t->ext->n_options > 0 ? &t->ext->mapping : NULL);
}

/* True when t runs ahead after a successful body: its first device is a GPU
 * with an engine, which completes it after the work queued there. */
static bool runs_ahead(const parla_task_t *t);

/* Calls t's body and returns its result. With streams, after it: events when
 * the task will run ahead, otherwise the worker waits for the streams. */
static inline __attribute__((always_inline)) int call_body(parla__sched_worker_t *w, parla_task_t *t,
                                                           bool streams)
{
    int rc = t->fn(t, t->arg);
    if (streams)
        streams_epilogue(w, t, rc == 0 && runs_ahead(t));
    return rc;
}

/* call_body while tracing or accounting busy time (busy: NULL when off): the
 * body's trace record, and its busy time less the bodies it runs inside
 * itself. Out of line, so that the common path stays one branch. */
static __attribute__((noinline)) int call_body_observed(parla__sched_worker_t *w, parla_task_t *t, bool streams,
                                                        parla__trace_busy_t *busy)
{
    uint64_t busy_outer = busy ? parla__trace_busy_begin(busy, w->index) : 0;
    uint64_t t0 = parla__trace_now_ns();
    int rc = call_body(w, t, streams);
    if (busy)
        parla__trace_busy_end(busy, w->index, busy_outer, parla__trace_now_ns() - t0, t->devices, t->n_devices,
                        (double)t->vcus / PARLA__VCU_ONE);
    if (parla__graph_rt(t->rt)->trace)
        trace_body(t, t0, rc);
    return rc;
}

/* What became of a task given to run_body. */
enum run_outcome {
    RUN_SKIPPED,  /* the body did not run: cancelled (rc 0) or failed before it (rc, message set) */
    RUN_RETURNED, /* the body returned rc (0, PARLA_TASK_SUSPEND or an error) */
    RUN_AHEAD,    /* a GPU task whose body returned 0: its device's engine finishes it */
};

/* True when t runs ahead after a successful body: its first device is a GPU
 * with an engine, which completes it after the work queued there. */
static bool runs_ahead(const parla_task_t *t)
{
    return t->n_devices > 0 && parla__dev_runs_ahead(&parla__dev_devs(t->rt)->devices[t->devices[0]]);
}

/* Runs t's body on worker w (unless it must be skipped); *rc as the outcome says. */
static enum run_outcome run_body(parla__sched_worker_t *w, parla_task_t *t, int *rc)
{
    *rc = 0;
    /* After parla_runtime_cancel_all, queued tasks are cancelled, not run. */
    if (atomic_load_explicit(&t->rt->cancelling, memory_order_relaxed))
        return RUN_SKIPPED;
    int err;
    if (t->ext && (err = atomic_load_explicit(&t->ext->copy_error, memory_order_relaxed)) != 0) {
        *rc = parla__error(err, "task %s: a copy of its data to %s failed on the device (%s); the data keeps "
                                "its last good copy", parla_task_name(t), parla__dev_devs(t->rt)->devices[t->devices[0]].name,
                           parla_strerror(err));
        return RUN_SKIPPED;
    }
    bool streams = uses_streams(t);
    if (streams && (*rc = streams_prologue(w, t)) != 0)
        return RUN_SKIPPED;
    parla_task_t *outer = w->current;
    w->current = t;
    atomic_store_explicit(&t->state, PARLA_TASK_RUNNING, memory_order_relaxed);
    parla__trace_busy_t *busy = atomic_load_explicit(&t->rt->busy, memory_order_acquire);
    if (__builtin_expect(parla__graph_rt(t->rt)->trace == NULL && busy == NULL, 1))
        *rc = call_body(w, t, streams);
    else
        *rc = call_body_observed(w, t, streams, busy);
    w->current = outer;
    atomic_store_explicit(&w->n_run, atomic_load_explicit(&w->n_run, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return *rc == 0 && runs_ahead(t) ? RUN_AHEAD : RUN_RETURNED;
}

/* Runahead: t's GPU-only successors go now; the device's engine finishes t
 * after the work queued there before it. */
static void run_ahead(parla_task_t *t)
{
    if (parla__graph_rt(t->rt)->trace && t->ext)
        t->ext->ran_ns = parla__trace_now_ns();
    parla__graph_task_runahead(t);
    int mark = parla__sched_engine_mark(t);
    if (mark == 0)
        return;
    /* Complete already, or no memory for a marker: this worker waits. */
    parla__sched_task_complete_gpu(t, mark < 0 ? parla__sched_task_work_wait(t) : 0);
}

/* After run_body (not for RUN_AHEAD): releases t's data (when it was
 * prepared) and resources, then finishes t, or leaves a suspended one to the
 * tasks it awaits. */
static void after_body(parla_task_t *t, enum run_outcome o, int rc, bool data)
{
    if (data) {
        t->ext->prepared = false;
        parla__data_release_task(t);
    }
    parla__sched_release_and_dispatch(t);
    if (o == RUN_SKIPPED) {
        if (rc != 0)
            parla__graph_task_finish(t, PARLA_TASK_FAILED, rc);
        else
            parla__graph_task_finish(t, PARLA_TASK_CANCELLED, PARLA_ECANCELLED);
        return;
    }
    if (rc == PARLA_TASK_SUSPEND) {
        if (atomic_load_explicit(&t->state, memory_order_relaxed) == PARLA_TASK_SUSPENDED) {
            /* Drop the hold taken by parla_task_suspend_on; the last awaited
             * task to finish makes t ready again. */
            if (atomic_fetch_sub_explicit(&t->pending, 1, memory_order_acq_rel) == 1)
                parla__sched_task_ready(t);
            return;
        }
        parla__error(PARLA_EINVAL, "task %s returned PARLA_TASK_SUSPEND without parla_task_suspend_on",
                     parla_task_name(t));
        rc = PARLA_EINVAL;
    }
    parla__graph_task_finish(t, rc == 0 ? PARLA_TASK_DONE : PARLA_TASK_FAILED, rc);
}

void parla__sched_task_run(parla_task_t *t)
{
    /* The task's data was brought to its device when it was dispatched. */
    bool data = t->ext && t->ext->prepared;
    int rc;
    enum run_outcome o = run_body(parla__sched_tls_worker, t, &rc);
    if (o == RUN_AHEAD)
        run_ahead(t);
    else
        after_body(t, o, rc, data);
}

int parla_task_suspend_on(parla_task_t *self, parla_task_t *const *tasks, size_t n)
{
    parla__sched_worker_t *w = parla__sched_tls_worker;
    if (self == NULL || w == NULL || w->current != self)
        return parla__error(PARLA_ESTATE, "parla_task_suspend_on: not called from the body of task %s",
                            self ? parla_task_name(self) : "(null)");
    if (n > 0 && tasks == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_suspend_on: tasks is NULL");
    for (size_t i = 0; i < n; i++) {
        if (tasks[i] == NULL || tasks[i] == self || tasks[i]->rt != self->rt)
            return parla__error(PARLA_EINVAL, "parla_task_suspend_on: task %s: awaited task %zu is %s",
                                parla_task_name(self), i,
                                tasks[i] == NULL ? "NULL" : tasks[i] == self ? "the task itself" : "from another runtime");
    }
    /* Allocate every edge first so a failure changes nothing. */
    parla__graph_edge_t *edges = NULL;
    for (size_t i = 0; i < n; i++) {
        parla__graph_edge_t *e = parla__alloc(self->rt, sizeof *e);
        if (e == NULL) {
            while (edges) {
                parla__graph_edge_t *next = edges->next;
                parla__free(edges);
                edges = next;
            }
            return parla__error(PARLA_ENOMEM, "parla_task_suspend_on: task %s: cannot allocate edges",
                                parla_task_name(self));
        }
        e->next = edges;
        edges = e;
    }
    atomic_store(&self->pending, 1); /* the hold, dropped after the body returns */
    atomic_store(&self->state, PARLA_TASK_SUSPENDED);
    for (size_t i = 0; i < n; i++) {
        parla__graph_edge_t *e = edges;
        edges = e->next;
        parla_task_t *dep = tasks[i];
        /* A task with one dependent allocates no edge (its inline one). */
        if (!atomic_exchange_explicit(&dep->first_edge_used, true, memory_order_relaxed)) {
            parla__free(e);
            e = &dep->first_edge;
        }
        if (atomic_load(&dep->state) == PARLA_TASK_CREATED)
            parla__graph_placeholder_add(self->rt, dep); /* best effort: only for the stuck diagnosis */
        e->succ = self;
        e->flags = PARLA__EDGE_SOFT;
        if (parla__graph_rt(self->rt)->trace)
            parla__trace_edge(parla__graph_rt(self->rt)->trace, parla__trace_now_ns(), dep->serial, self->serial, PARLA__EK_AWAIT);
        parla_task_retain(self);
        atomic_fetch_add(&self->pending, 1);
        if (!parla__graph_edge_push(dep, e)) { /* dep has finished */
            atomic_fetch_sub(&self->pending, 1);
            parla_task_release(self);
            parla__graph_edge_free(dep, e);
        }
    }
    return 0;
}

void *parla__sched_worker_stream(parla__sched_worker_t *w, int device)
{
    parla__dev_t *d = &parla__dev_devs(w->rt)->devices[device];
    if (!parla__dev_async(d) || w->streams == NULL)
        return NULL;
    if (w->streams[device] == NULL && d->ops->stream_create(d, &w->streams[device]) != 0)
        return NULL;
    return w->streams[device];
}
