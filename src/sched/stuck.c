/* stuck.c: the stuck diagnosis (no task can make progress) and cancellation
 * of all or of stuck tasks. */
#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool parla__sched_body_waiters_locked(parla_runtime_t *rt);
bool parla__sched_stuck_locked(parla_runtime_t *rt);

/* With park_lock held: true when no task can make progress. Every worker
 * sleeps, nothing is queued, tasks are outstanding, and no worker waiting
 * inside a body has had its awaited task finish (such a worker was woken, or
 * is about to be, and will carry on). */
/* With park_lock held: true when some worker sleeps in a wait inside a body. */
bool parla__sched_body_waiters_locked(parla_runtime_t *rt)
{
    for (int i = 0; i < rt->n_workers; i++)
        if (rt->workers[i].waiting_on)
            return true;
    return false;
}

bool parla__sched_stuck_locked(parla_runtime_t *rt)
{
    if (atomic_load(&rt->n_sleeping) != rt->n_workers || parla__sched_any_work(rt) ||
        atomic_load(&parla__graph_rt(rt)->n_active) == 0)
        return false;
    for (int d = 0; d < parla__dev_devs(rt)->n_devices; d++)
        if (parla__dev_engine_pending(&parla__dev_devs(rt)->devices[d]) > 0)
            return false; /* copies (or the work of runahead tasks) are under way */
    for (int i = 0; i < rt->n_workers; i++) {
        parla__sched_worker_t *w = &rt->workers[i];
        if (w->waiting_on && w->stuck_woken)
            return false; /* told it is stuck: its body carries on */
        for (size_t k = 0; w->waiting_on && k < w->n_waiting_on; k++)
            if (atomic_load(&w->waiting_on[k]->state) >= PARLA_TASK_DONE)
                return false;
    }
    /* Last, as it marks the runtime for a recheck: a submit under way has a
     * task about to be ready or waiting. */
    long active;
    return !parla__graph_submits_under_way(rt, &active) && active > 0;
}

bool parla__sched_tell_stuck_bodies_locked(parla_runtime_t *rt)
{
    if (!parla__sched_body_waiters_locked(rt) || !parla__sched_stuck_locked(rt))
        return false;
    for (int i = 0; i < rt->n_workers; i++)
        if (rt->workers[i].waiting_on)
            rt->workers[i].stuck_woken = true;
    return true;
}

void parla__sched_submits_settled(parla_runtime_t *rt)
{
    pthread_mutex_lock(&rt->park_lock);
    parla__sched_tell_stuck_bodies_locked(rt);
    pthread_cond_broadcast(&rt->park_cond);
    pthread_mutex_unlock(&rt->park_lock);
    parla__sched_wake_wait_cond(rt);
}

bool parla__sched_quiescent(parla_runtime_t *rt)
{
    pthread_mutex_lock(&rt->park_lock);
    bool q = parla__sched_stuck_locked(rt);
    pthread_mutex_unlock(&rt->park_lock);
    return q;
}

/* Formats the diagnosis of a stuck runtime into the thread's error message. */
int parla__sched_stuck_error(parla_runtime_t *rt)
{
    char buf[480];
    size_t len = 0;
    long active = parla__graph_n_active(rt);
    pthread_mutex_lock(&parla__graph_rt(rt)->placeholder_lock);
    size_t np = parla__graph_rt(rt)->n_placeholders;
    for (size_t i = 0; i < np && len < sizeof buf - 64; i++) {
        parla_task_t *p = parla__graph_rt(rt)->placeholders[i];
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s (needed by", i ? ", " : "", parla_task_name(p));
        int k = 0;
        const char *last = NULL; /* a graph's replays repeat their template's names: each name once in a row */
        for (parla__graph_edge_t *e = atomic_load(&p->succ); e && e != PARLA__SEALED && len < sizeof buf - 32;
             e = e->next) {
            const char *name = parla_task_name(e->succ);
            if (last && strcmp(last, name) == 0)
                continue;
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %s", k++ ? "," : "", name);
            last = name;
        }
        len += (size_t)snprintf(buf + len, sizeof buf - len, ")");
    }
    pthread_mutex_unlock(&parla__graph_rt(rt)->placeholder_lock);
    if (len >= sizeof buf - 64)
        snprintf(buf + sizeof buf - 8, 8, " ...");
    /* Bodies blocked in a wait are running, not ready: name them and what
     * they wait for (park_lock keeps those tasks alive: a waiter clears its
     * list under it before it returns). */
    char bodies[320];
    size_t lb = 0;
    int nb = 0;
    pthread_mutex_lock(&rt->park_lock);
    for (int i = 0; i < rt->n_workers; i++) {
        parla__sched_worker_t *w = &rt->workers[i];
        if (w->waiting_on == NULL || w->current == NULL || lb >= sizeof bodies - 64)
            continue;
        parla_task_t *x = w->waiting_on[0];
        lb += (size_t)snprintf(bodies + lb, sizeof bodies - lb, "%s%s waits for %s (%s)%s", nb ? "; " : "",
                               parla_task_name(w->current), parla_task_name(x),
                               atomic_load(&x->state) == PARLA_TASK_CREATED ? "never submitted"
                                                                            : parla_task_state_name(atomic_load(&x->state)),
                               w->n_waiting_on > 1 ? " or others" : "");
        nb++;
    }
    pthread_mutex_unlock(&rt->park_lock);
    if (lb >= sizeof bodies - 64)
        snprintf(bodies + sizeof bodies - 8, 8, " ...");
    char blocked[sizeof bodies + 64] = "";
    if (nb)
        snprintf(blocked, sizeof blocked, "; %d running task%s blocked in a wait: %s", nb, nb == 1 ? " is" : "s are",
                 bodies);
    if (np == 0)
        return parla__error(PARLA_ESTUCK, "%ld submitted task%s can never run: none is ready and %s%s", active,
                            active == 1 ? "" : "s",
                            nb ? "every running one waits for another" : "none is running (a dependency cycle?)",
                            blocked);
    return parla__error(PARLA_ESTUCK, "%ld submitted task%s can never run: %s on %zu task%s never submitted: %s%s",
                        active, active == 1 ? "" : "s", active == 1 ? "it depends" : "they depend", np,
                        np == 1 ? "" : "s", buf, blocked);
}

void parla_runtime_cancel_all(parla_runtime_t *rt)
{
    if (rt == NULL)
        return;
    atomic_store(&rt->cancelling, true);
    /* Cancel the never-submitted tasks others wait on, one at a time (the
     * list changes as each is cancelled). */
    for (;;) {
        parla_task_t *p = NULL;
        if (parla_runtime_unsubmitted(rt, &p, 1) == 0)
            break;
        int rc = parla_task_cancel(p);
        parla_task_release(p);
        if (rc != 0)
            break;
    }
    parla__sched_wake_waiters(rt);
}

int parla_runtime_cancel_stuck(parla_runtime_t *rt, parla_task_t *const *tasks, size_t n)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_runtime_cancel_stuck: runtime is NULL");
    if (tasks == NULL && n > 0)
        return parla__error(PARLA_EINVAL, "parla_runtime_cancel_stuck: tasks is NULL");
    int forked = parla__check_process(rt, "parla_runtime_cancel_stuck");
    if (forked)
        return forked;
    if (parla__sched_tls_worker && parla__sched_tls_worker->rt == rt)
        return parla__error(PARLA_ESTATE, "parla_runtime_cancel_stuck: called from task %s",
                            parla_task_name(parla__sched_tls_worker->current));
    for (size_t i = 0; i < n; i++) {
        if (tasks[i] == NULL)
            return parla__error(PARLA_EINVAL, "parla_runtime_cancel_stuck: tasks[%zu] is NULL", i);
        if (tasks[i]->rt != rt)
            return parla__error(PARLA_EINVAL, "parla_runtime_cancel_stuck: task %s belongs to another runtime",
                                parla_task_name(tasks[i]));
    }
    /* A worker woken meanwhile (parla_runtime_cancel_all wakes them all)
     * parks again at once: give the runtime a moment to settle. Under load
     * that moment passed 0.1 s (the cycle's tasks were left pending); the
     * wait ends as soon as every worker is parked, so a long bound costs
     * nothing on the path that uses it. */
    bool stuck = parla__sched_wait_all(rt, 2.0) == PARLA_ESTUCK;
    if (stuck) {
        pthread_mutex_lock(&rt->park_lock);
        stuck = parla__sched_stuck_locked(rt) && !parla__sched_body_waiters_locked(rt);
        pthread_mutex_unlock(&rt->park_lock);
    }
    if (!stuck)
        return parla__error(PARLA_ESTATE, "parla_runtime_cancel_stuck: the runtime is not stuck (a task is ready, "
                                          "running, copying or blocked in a wait, or none is pending)");
    pthread_mutex_lock(&parla__graph_rt(rt)->placeholder_lock);
    size_t np = parla__graph_rt(rt)->n_placeholders;
    pthread_mutex_unlock(&parla__graph_rt(rt)->placeholder_lock);
    if (np > 0)
        return parla__error(PARLA_ESTATE,
                            "parla_runtime_cancel_stuck: %zu never-submitted task%s %s depended on: submit or cancel "
                            "%s (parla_runtime_unsubmitted)",
                            np, np == 1 ? "" : "s", np == 1 ? "is" : "are", np == 1 ? "it" : "them");
    int cancelled = 0;
    for (size_t i = 0; i < n; i++)
        if (parla__graph_task_cancel_stuck(tasks[i]))
            cancelled++;
    parla__sched_wake_waiters(rt);
    return cancelled;
}
