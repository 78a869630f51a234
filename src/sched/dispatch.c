/* dispatch.c: the ready path: a task whose dependencies are over is mapped to
 * devices, reserves its resources, has its data prepared and is enqueued; the
 * end-of-work markers and room retries queued on device engines. */
#include "sched/sched.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

/* Gives back t's resources and dispatches the tasks that now fit. */
void parla__sched_release_and_dispatch(parla_task_t *t)
{
    if ((t->vcus | (int64_t)t->memory) == 0)
        return;
    parla_task_t *r = parla__sched_release_resources(t);
    while (r) {
        parla_task_t *next = r->qnext;
        r->qnext = NULL;
        parla__sched_dispatch(r);
        r = next;
    }
}

void parla__sched_task_complete_gpu(parla_task_t *t, int error)
{
    if (error) {
        /* The driver's words are in this thread's message: prefix the task. */
        char what[256];
        snprintf(what, sizeof what, "%s", parla_last_error_message());
        error = parla__error(error, "task %s: its work on %s failed: %s", parla_task_name(t),
                             parla__dev_devs(t->rt)->devices[t->devices[0]].name, what);
    }
    if (t->ext && t->ext->prepared) {
        t->ext->prepared = false;
        parla__data_release_task(t);
    }
    parla__sched_release_and_dispatch(t);
    parla__graph_task_finish(t, error ? PARLA_TASK_FAILED : PARLA_TASK_DONE, error);
}

void parla__sched_dispatch(parla_task_t *t)
{
    if (t->ext && t->ext->n_accesses > 0 && !atomic_load_explicit(&t->rt->cancelling, memory_order_relaxed)) {
        int rc = parla__data_prepare(t);
        if (rc == PARLA__PENDING)
            return; /* the copy engine that finishes last enqueues it */
        if (rc != 0) {
            parla__sched_release_and_dispatch(t);
            if (rc == PARLA_EBUSY) {
                /* The device is full of copies in use: wait for them. */
                parla__data_wait_for_room(t);
                return;
            }
            parla__graph_task_finish(t, PARLA_TASK_FAILED, rc); /* which task, device and bytes: in the message */
            return;
        }
    }
    parla__sched_enqueue(t->rt, t);
}

void parla__sched_task_ready(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    if (atomic_load_explicit(&t->flags, memory_order_acquire) & PARLA__F_CLAIMED)
        return; /* finished already by parla_runtime_cancel_stuck */
    if (atomic_load_explicit(&rt->cancelling, memory_order_relaxed) && !(atomic_load(&t->flags) & PARLA__F_CANCEL)) {
        atomic_fetch_or(&t->flags, PARLA__F_CANCEL);
    }
    if (atomic_load_explicit(&t->flags, memory_order_acquire) & PARLA__F_CANCEL) {
        if (t->error == PARLA_ERESOURCE)
            parla__graph_task_finish(t, PARLA_TASK_FAILED, PARLA_ERESOURCE);
        else
            parla__graph_task_finish(t, PARLA_TASK_CANCELLED, PARLA_ECANCELLED);
        return;
    }
    atomic_store_explicit(&t->state, PARLA_TASK_READY, memory_order_relaxed);
    if (t->n_devices == 0) {
        /* Map once (a resumed continuation keeps its devices). */
        if (t->ext && t->ext->n_options > 0) {
            if (parla__sched_map_task(t) != 0) {
                t->error = PARLA_ERESOURCE;
                parla__graph_task_finish(t, PARLA_TASK_FAILED, PARLA_ERESOURCE);
                return;
            }
        } else {
            t->n_devices = 1; /* the CPU; not counted in its load (the fast path) */
            t->devices[0] = 0;
        }
    }
    if ((t->vcus | (int64_t)t->memory) != 0 && !parla__sched_reserve_or_block(t))
        return; /* queued on a device's blocked list; released tasks retry it */
    parla__sched_dispatch(t);
}

/* 1 when the work of runahead task t is complete on all its devices, 0 when
 * not yet, < 0 (a PARLA_E* code, the driver's error in the message) when a
 * device reported an error: nothing more will come of that work. */
static int task_work_done(parla_task_t *t)
{
    int done = 1;
    for (int k = 0; t->ext && k < t->n_devices; k++) {
        int rc = parla__dev_event_done(t->ext->events[k]);
        if (rc < 0)
            return rc;
        if (rc == 0)
            done = 0;
    }
    return done;
}

int parla__sched_task_work_wait(parla_task_t *t)
{
    int error = 0;
    for (int k = 0; t->ext && k < t->n_devices; k++) {
        parla__dev_event_t *e = t->ext->events[k];
        int rc = e ? e->device->ops->event_synchronize(e->device, e->handle) : 0;
        if (rc && error == 0)
            error = rc;
    }
    return error;
}

/* Jobs of sched/ on device engines: the end-of-work marker of a runahead task
 * (complete when the task's events are; done finishes the task) and the retry
 * of a task that waited for room (done makes it ready again). */
typedef struct task_job {
    parla__dev_job_t job; /* first: the engine's part */
    parla_task_t *task;
    int error; /* the device's error for the marked task's work, or 0 */
} task_job_t;

static bool marker_poll(parla__dev_job_t *job)
{
    task_job_t *j = (task_job_t *)job;
    int rc = task_work_done(j->task);
    if (rc < 0)
        j->error = rc;
    return rc != 0;
}

static bool marker_issue(parla__dev_job_t *job, parla__dev_t *d)
{
    (void)d;
    return marker_poll(job);
}

/* The device has done the task's work: finish it. */
static void marker_done(parla__dev_job_t *job, bool waited)
{
    (void)waited;
    task_job_t *j = (task_job_t *)job;
    parla_task_t *t = j->task;
    parla_runtime_t *rt = t->rt;
    if (parla__graph_rt(rt)->trace && t->ext)
        parla__trace_work(parla__graph_rt(rt)->trace, t->serial, t->ext->ran_ns, parla__trace_now_ns(), t->devices[0]);
    int error = j->error;
    parla__free(j);
    parla__sched_task_complete_gpu(t, error);
}

static const parla__dev_job_ops_t marker_ops = {marker_issue, marker_poll, marker_done};

static void retry_done(parla__dev_job_t *job, bool waited)
{
    (void)waited;
    parla_task_t *t = ((task_job_t *)job)->task;
    parla__free(job);
    parla__sched_task_ready(t);
}

static const parla__dev_job_ops_t retry_ops = {NULL, NULL, retry_done};

bool parla__sched_engine_retry(parla_task_t *t)
{
    task_job_t *j = parla__calloc(t->rt, 1, sizeof *j);
    if (j == NULL)
        return false;
    j->job.ops = &retry_ops;
    j->task = t;
    parla__dev_engine_submit(&parla__dev_devs(t->rt)->devices[t->devices[0]], &j->job);
    return true;
}

int parla__sched_engine_mark(parla_task_t *t)
{
    /* Nothing queued on the device before the task: its work is complete
     * now (an event that has already completed), so the caller finishes it. */
    parla__dev_t *d = &parla__dev_devs(t->rt)->devices[t->devices[0]];
    if (parla__dev_engine_idle(d) && task_work_done(t) == 1)
        return 1;
    task_job_t *j = parla__calloc(t->rt, 1, sizeof *j);
    if (j == NULL)
        return PARLA_ENOMEM;
    j->job.ops = &marker_ops;
    j->task = t;
    parla__dev_engine_submit(d, &j->job);
    return 0;
}

/* ------------------------------------------------ hooks of lower layers -- */

/* graph's finished hook: the engine's bookkeeping once t's successors have
 * been notified (t is still held). */
void parla__sched_task_finished(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    if (t->ext && t->ext->n_options > 0)
        for (int i = 0; i < t->n_devices; i++)
            atomic_fetch_sub_explicit(&parla__dev_devs(rt)->devices[t->devices[i]].n_mapped, 1, memory_order_relaxed);
    if (rt->config.task_finished)
        rt->config.task_finished(t, rt->config.hook_user);
    /* Data references end with the task: its copies are no longer used. Its
     * events go back to their pools (its dependents hold their own). */
    parla__graph_task_events_release(t);
    if (t->ext) {
        for (int i = 0; i < t->ext->n_accesses; i++)
            parla_data_release(t->ext->accesses[i].data);
        t->ext->n_accesses = 0;
    }
    if (atomic_load(&t->flags) & PARLA__F_WAITED)
        parla__sched_wake_waiters(rt);
    parla__sched_graph_join_finished(t);
    /* The last task (submits under way aside: see parla__graph_submits_under_way). */
    if (atomic_fetch_sub_explicit(&parla__graph_rt(rt)->n_active, 1, memory_order_acq_rel) % PARLA__SUBMITTING == 1 &&
        atomic_load(&rt->n_all_waiters) > 0)
        parla__sched_wake_waiters(rt);
}

/* graph's feasible hook: some placement option of t can hold its needs. */
int parla__sched_task_feasible(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    for (int o = 0; o < t->ext->n_options; o++)
        if (parla__sched_option_feasible(rt, &t->ext->options[o]))
            return 0;
    uint64_t largest = parla__sched_largest_allowed(rt, t->ext);
    return parla__error(PARLA_ERESOURCE,
                        "task %s: no device allowed by its placement can hold its needs (vcus=%g, "
                        "memory=%llu bytes; the largest allowed device has a capacity of %llu bytes)",
                        parla_task_name(t), (double)t->ext->options[0].vcus / PARLA__VCU_ONE,
                        (unsigned long long)t->ext->options[0].memory, (unsigned long long)largest);
}

/* data's arrived hook. */
void parla__sched_task_arrived(parla_task_t *t)
{
    parla__sched_enqueue(t->rt, t);
}

/* data's unpinned hook: retries the tasks that waited for room for their
 * data, then those blocked on the device's resources. */
void parla__sched_tasks_unpinned(parla_task_t *room, parla_task_t *reserve)
{
    while (room) {
        parla_task_t *next = room->qnext;
        room->qnext = NULL;
        parla__sched_task_ready(room);
        room = next;
    }
    while (reserve) {
        parla_task_t *next = reserve->qnext;
        reserve->qnext = NULL;
        if (parla__sched_reserve_or_block(reserve))
            parla__sched_dispatch(reserve);
        reserve = next;
    }
}
