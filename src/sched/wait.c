/* wait.c: waiting: parla_runtime_wait_all, parla_task_wait(_any) inside and
 * outside bodies, and waits for data outside tasks (parla_data_wait/fetch). */
#include "sched/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void parla__sched_wake_wait_cond(parla_runtime_t *rt);

/* ---------------------------------------------------------------- waiting -- */

/* Wakes threads blocked on wait_cond. Takes wait_lock: callers may hold
 * park_lock (lock order), but not wait_lock. */
void parla__sched_wake_wait_cond(parla_runtime_t *rt)
{
    pthread_mutex_lock(&rt->wait_lock);
    rt->wake_gen++;
    pthread_cond_broadcast(&rt->wait_cond);
    pthread_mutex_unlock(&rt->wait_lock);
}

void parla__sched_wake_waiters(parla_runtime_t *rt)
{
    parla__sched_wake_wait_cond(rt);
    /* Workers waiting inside task bodies sleep on park_cond. */
    pthread_mutex_lock(&rt->park_lock);
    pthread_cond_broadcast(&rt->park_cond);
    pthread_mutex_unlock(&rt->park_lock);
}


static void deadline_after(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    double whole = (double)(long)seconds;
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int parla__sched_wait_all(parla_runtime_t *rt, double timeout)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_runtime_wait_all: runtime is NULL");
    int forked = parla__check_process(rt, "parla_runtime_wait_all");
    if (forked)
        return forked;
    if (parla__sched_tls_worker && parla__sched_tls_worker->rt == rt)
        return parla__error(PARLA_ESTATE, "parla_runtime_wait_all: called from task %s, which cannot wait for itself",
                            parla_task_name(parla__sched_tls_worker->current));
    struct timespec deadline;
    if (timeout >= 0)
        deadline_after(&deadline, timeout);
    int rc = 0;
    pthread_mutex_lock(&rt->wait_lock);
    atomic_fetch_add(&rt->n_all_waiters, 1);
    while (atomic_load(&parla__graph_rt(rt)->n_active) > 0) {
        /* parla__sched_quiescent() takes park_lock, which comes before wait_lock in the
         * lock order; wake_gen tells whether a wake-up was missed meanwhile. */
        uint64_t gen = rt->wake_gen;
        pthread_mutex_unlock(&rt->wait_lock);
        bool q = parla__sched_quiescent(rt);
        long active;
        parla__graph_submits_under_way(rt, &active); /* marks one under way: its end wakes this wait */
        pthread_mutex_lock(&rt->wait_lock);
        if (q) {
            rc = PARLA_ESTUCK;
            break;
        }
        if (gen != rt->wake_gen)
            continue;
        if (timeout < 0) {
            pthread_cond_wait(&rt->wait_cond, &rt->wait_lock);
        } else if (pthread_cond_timedwait(&rt->wait_cond, &rt->wait_lock, &deadline) == ETIMEDOUT &&
                   atomic_load(&parla__graph_rt(rt)->n_active) > 0) {
            rc = PARLA_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&rt->n_all_waiters, 1);
    pthread_mutex_unlock(&rt->wait_lock);
    if (rc == PARLA_ETIMEDOUT)
        return parla__error(rc, "parla_runtime_wait_all: %ld tasks still running after %g s",
                            parla__graph_n_active(rt), timeout);
    return rc ? parla__sched_stuck_error(rt) : 0;
}

int parla_runtime_wait_all(parla_runtime_t *rt)
{
    return parla__sched_wait_all(rt, -1.0);
}

int parla_runtime_wait_all_timeout(parla_runtime_t *rt, double timeout)
{
    if (!(timeout >= 0))
        return parla__error(PARLA_EINVAL, "parla_runtime_wait_all_timeout: timeout %g is not >= 0", timeout);
    return parla__sched_wait_all(rt, timeout);
}

static int outcome(const parla_task_t *t)
{
    switch (atomic_load(&t->state)) {
    case PARLA_TASK_DONE: return 0;
    case PARLA_TASK_FAILED:
        return parla__error(PARLA_EFAILED, "task %s failed with code %d (%s)", parla_task_name(t), t->error,
                            parla_strerror(t->error));
    default: {
        parla_task_t *c = atomic_load(&((parla_task_t *)t)->cause);
        return parla__error(PARLA_ECANCELLED, "task %s was cancelled because %s %s", parla_task_name(t),
                            c ? parla_task_name(c) : "it",
                            c && atomic_load(&c->state) == PARLA_TASK_FAILED ? "failed" : "was cancelled");
    }
    }
}

static bool any_finished(parla_task_t *const *ts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&ts[i]->state) >= PARLA_TASK_DONE)
            return true;
    return false;
}

static bool all_created(parla_task_t *const *ts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&ts[i]->state) != PARLA_TASK_CREATED)
            return false;
    return true;
}

/* With park_lock held: workers asleep in waits inside bodies. */
static int body_sleepers_locked(parla_runtime_t *rt)
{
    int k = 0;
    for (int i = 0; i < rt->n_workers; i++)
        k += rt->workers[i].waiting_on != NULL;
    return k;
}

/* A wait inside a body (wait_any on a worker). The worker helps while it
 * waits, but only with tasks the waiting body created itself (isolation, as
 * TBB's this_task_arena::isolate): running an unrelated task on this stack
 * could deadlock it, e.g. a task that blocks on a lock the waiting body holds
 * (Taskflow issue 647). Other ready tasks are left to the other workers. When
 * every worker is inside such a wait, none is free to run them, so the
 * waiter runs any ready task (else nothing could run at all). Sleeps like an
 * idle worker when there is nothing it may run, calling the worker_idle hook
 * first. */
static int body_wait(parla__sched_worker_t *w, parla_task_t *const *ts, size_t n, const struct timespec *deadline)
{
    parla_runtime_t *rt = w->rt;
    uint64_t key = w->current ? w->current->serial + 1 : 0;
    int rc = 0;
    atomic_fetch_add(&rt->n_body_waiting, 1);
    while (rc == 0 && !any_finished(ts, n)) {
        if (all_created(ts, n)) { /* as outside bodies: no one can finish them while this body blocks */
            rc = parla__error(PARLA_ESTUCK, "parla_task_wait: task %s: waits for task %s, which was never "
                              "submitted", w->current ? parla_task_name(w->current) : "(none)",
                              parla_task_name(ts[0]));
            break;
        }
        bool all_blocked = atomic_load(&rt->n_body_waiting) >= rt->n_workers;
        uint64_t gen = atomic_load(&rt->enq_gen);
        if (parla__sched_help_one(w, all_blocked ? 0 : key))
            continue;
        /* As an idle worker: a binding lets go of what it kept across the bodies this wait ran (the GIL);
         * sleeping with it would stop every body that needs it, the awaited ones included. */
        if (rt->config.worker_idle)
            rt->config.worker_idle(w->index, rt->config.hook_user);
        pthread_mutex_lock(&rt->park_lock);
        atomic_fetch_add(&rt->n_sleeping, 1);
        w->waiting_on = ts;
        w->n_waiting_on = n;
        bool work = parla__sched_any_work(rt);
        /* Something was enqueued since the search (it may be a child), or
         * every worker now waits in a body: search again. */
        bool retry = atomic_load(&rt->enq_gen) != gen ||
                     (work && atomic_load(&rt->n_body_waiting) >= rt->n_workers);
        if (!retry && !any_finished(ts, n)) {
            /* A wake-up meant for an idle worker may have reached this one:
             * pass it on, so the work it leaves is taken. */
            if (work && atomic_load(&rt->n_sleeping) > body_sleepers_locked(rt))
                pthread_cond_broadcast(&rt->park_cond);
            if (!work && parla__sched_stuck_locked(rt)) {
                rc = PARLA_ESTUCK;
            } else if (deadline == NULL) {
                pthread_cond_wait(&rt->park_cond, &rt->park_lock);
            } else if (pthread_cond_timedwait(&rt->park_cond, &rt->park_lock, deadline) == ETIMEDOUT &&
                       !any_finished(ts, n)) {
                rc = PARLA_ETIMEDOUT;
            }
        }
        if (w->stuck_woken && rc == 0 && !any_finished(ts, n))
            rc = PARLA_ESTUCK; /* the last worker to go idle found the runtime stuck */
        w->stuck_woken = false;
        w->waiting_on = NULL;
        w->n_waiting_on = 0;
        atomic_fetch_sub(&rt->n_sleeping, 1);
        pthread_mutex_unlock(&rt->park_lock);
        if (rc == PARLA_ESTUCK) {
            parla__sched_wake_wait_cond(rt);
            rc = parla__sched_stuck_error(rt);
        }
    }
    atomic_fetch_sub(&rt->n_body_waiting, 1);
    return rc;
}

/* Blocks until one of ts[0..n) has finished: 0, PARLA_ETIMEDOUT after timeout
 * seconds (timeout >= 0), or PARLA_ESTUCK (message set) when none can finish. */
static int wait_any(parla_runtime_t *rt, parla_task_t *const *ts, size_t n, double timeout)
{
    parla__sched_worker_t *w = parla__sched_tls_worker;
    struct timespec deadline;
    if (timeout >= 0)
        deadline_after(&deadline, timeout);
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&ts[i]->state) < PARLA_TASK_DONE)
            atomic_fetch_or(&ts[i]->flags, PARLA__F_WAITED);
    if (w && w->rt == rt)
        return body_wait(w, ts, n, timeout >= 0 ? &deadline : NULL);
    int rc = 0;
    pthread_mutex_lock(&rt->wait_lock);
    while (!any_finished(ts, n)) {
        if (all_created(ts, n)) {
            rc = PARLA_ESTUCK; /* never submitted: no one can finish them while we block */
            break;
        }
        uint64_t gen = rt->wake_gen;
        pthread_mutex_unlock(&rt->wait_lock);
        bool q = parla__sched_quiescent(rt);
        pthread_mutex_lock(&rt->wait_lock);
        if (q && !any_finished(ts, n)) {
            rc = PARLA_ESTUCK;
            break;
        }
        if (gen != rt->wake_gen || any_finished(ts, n))
            continue;
        if (timeout < 0) {
            pthread_cond_wait(&rt->wait_cond, &rt->wait_lock);
        } else if (pthread_cond_timedwait(&rt->wait_cond, &rt->wait_lock, &deadline) == ETIMEDOUT &&
                   !any_finished(ts, n)) {
            rc = PARLA_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&rt->wait_lock);
    if (rc == PARLA_ESTUCK) {
        if (all_created(ts, n))
            return parla__error(PARLA_ESTUCK, "parla_task_wait: task %s was never submitted", parla_task_name(ts[0]));
        return parla__sched_stuck_error(rt);
    }
    return rc;
}

/* Checks the arguments of the wait functions: one runtime, not the caller. */
static int check_waited(const char *fn, parla_task_t *const *ts, size_t n)
{
    if (ts == NULL || n == 0)
        return parla__error(PARLA_EINVAL, "%s: no tasks", fn);
    if (ts[0] != NULL) {
        int forked = parla__check_process(ts[0]->rt, fn);
        if (forked)
            return forked;
    }
    parla__sched_worker_t *w = parla__sched_tls_worker;
    for (size_t i = 0; i < n; i++) {
        if (ts[i] == NULL)
            return parla__error(PARLA_EINVAL, "%s: task %zu is NULL", fn, i);
        if (ts[i]->rt != ts[0]->rt)
            return parla__error(PARLA_EINVAL, "%s: tasks %s and %s belong to different runtimes", fn,
                                parla_task_name(ts[0]), parla_task_name(ts[i]));
        if (w && w->current == ts[i])
            return parla__error(PARLA_EINVAL, "%s: task %s cannot wait for itself", fn, parla_task_name(ts[i]));
    }
    return 0;
}

int parla_task_wait(parla_task_t *t)
{
    if (t == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_wait: task is NULL");
    int rc = check_waited("parla_task_wait", &t, 1);
    if (rc == 0)
        rc = wait_any(t->rt, &t, 1, -1.0);
    return rc ? rc : outcome(t);
}

int parla_task_wait_any(parla_task_t *const *tasks, size_t n, double timeout)
{
    int rc = check_waited("parla_task_wait_any", tasks, n);
    if (rc)
        return rc;
    if (timeout != timeout)
        return parla__error(PARLA_EINVAL, "parla_task_wait_any: timeout is NaN");
    rc = wait_any(tasks[0]->rt, tasks, n, timeout);
    if (rc == PARLA_ETIMEDOUT)
        return parla__error(rc, "parla_task_wait_any: none of %zu task%s finished within %g s", n,
                            n == 1 ? "" : "s", timeout);
    return rc;
}

int parla_data_wait(parla_data_t *d, int write, double timeout)
{
    if (d == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_wait: data is NULL");
    double deadline = timeout >= 0 ? (double)parla__trace_now_ns() * 1e-9 + timeout : 0.0;
    for (;;) {
        parla_task_t *wait = parla__data_conflict(d, write);
        if (wait != NULL && wait == parla_task_current()) {
            parla_task_release(wait);
            wait = NULL; /* the calling task's own declared access */
        }
        if (wait == NULL)
            return 0;
        int rc;
        if (timeout < 0) {
            rc = parla_task_wait(wait);
        } else {
            double left = deadline - (double)parla__trace_now_ns() * 1e-9;
            rc = parla_task_wait_any(&wait, 1, left > 0 ? left : 0.0);
        }
        parla_task_release(wait);
        if (rc == PARLA_ESTUCK || rc == PARLA_ETIMEDOUT)
            return rc;
    }
}

int parla_data_fetch(parla_data_t *d, int device, int write)
{
    if (d == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_fetch: data is NULL");
    parla_runtime_t *rt = parla__data_runtime(d);
    if (device < 0 || device >= parla__dev_devs(rt)->n_devices)
        return parla__error(PARLA_ENODEV, "parla_data_fetch: no device %d", device);
    /* Wait for the tasks whose accesses conflict with this one (again when one was submitted meanwhile). */
    for (;;) {
        int rc = parla_data_wait(d, write, -1.0);
        if (rc)
            return rc;
        rc = parla__data_make_valid_now(d, device, write);
        if (rc != PARLA__AGAIN)
            return rc;
    }
}
