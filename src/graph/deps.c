/* deps.c: dependencies, submission, completion and cancellation.
 *
 * A task's pending counter holds one count per unfinished dependency plus one
 * "hold" while the task is not submitted (or, when suspended, while the body
 * is registering what it waits on). The task becomes ready when the counter
 * reaches zero. Successors sit on a lock-free stack (a Treiber stack); the
 * finishing task swaps in the SEALED marker, so an edge added afterwards sees
 * that the dependency is over. Each edge delivers exactly one notification. */
#include "graph/graph.h"

#include <stdlib.h>
#include <string.h>

parla__graph_reach_t parla__graph_reaches(parla_task_t *from, parla_task_t *to, size_t limit)
{
    /* Depth-first search over successor edges. Every task reachable from a
     * never-submitted task is unfinished, so its edges are not freed while we
     * walk them; pushes may happen concurrently and are harmless. A small
     * open-addressing set remembers visited tasks. Its memory is transient
     * (freed before returning), so it comes from libc, not parla__alloc: a
     * failure answers "unknown", which the caller reports as PARLA_ENOMEM. */
    size_t cap = 64, n_seen = 0, top = 0, stack_cap = 64;
    parla_task_t **seen = calloc(cap, sizeof *seen);
    parla_task_t **stack = malloc(stack_cap * sizeof *stack);
    parla__graph_reach_t found = PARLA__REACH_UNKNOWN;
    if (!seen || !stack)
        goto out;
    found = PARLA__REACH_NO;
    stack[top++] = from;
    while (top > 0 && found == PARLA__REACH_NO) {
        if (n_seen >= limit) {
            found = PARLA__REACH_UNKNOWN;
            break;
        }
        parla_task_t *u = stack[--top];
        for (parla__graph_edge_t *e = atomic_load(&u->succ); e && e != PARLA__SEALED; e = e->next) {
            parla_task_t *v = e->succ;
            if (v == to) {
                found = PARLA__REACH_YES;
                break;
            }
            size_t h = ((uintptr_t)v >> 4) & (cap - 1);
            while (seen[h] && seen[h] != v)
                h = (h + 1) & (cap - 1);
            if (seen[h])
                continue;
            seen[h] = v;
            if (++n_seen * 2 > cap) {
                size_t ncap = cap * 2;
                parla_task_t **ns = calloc(ncap, sizeof *ns);
                if (!ns) {
                    found = PARLA__REACH_UNKNOWN;
                    goto out;
                }
                for (size_t i = 0; i < cap; i++) {
                    if (!seen[i])
                        continue;
                    size_t k = ((uintptr_t)seen[i] >> 4) & (ncap - 1);
                    while (ns[k])
                        k = (k + 1) & (ncap - 1);
                    ns[k] = seen[i];
                }
                free(seen);
                seen = ns;
                cap = ncap;
            }
            if (top == stack_cap) {
                parla_task_t **st = realloc(stack, 2 * stack_cap * sizeof *st);
                if (!st) {
                    found = PARLA__REACH_UNKNOWN;
                    goto out;
                }
                stack = st;
                stack_cap *= 2;
            }
            stack[top++] = v;
        }
    }
out:
    free(seen);
    free(stack);
    return found;
}

/* Records the root cause of a failed dependency of t (the first one wins). */
static void record_cause(parla_task_t *t, parla_task_t *failed_dep)
{
    parla_task_t *root = atomic_load_explicit(&failed_dep->cause, memory_order_acquire);
    if (root == NULL)
        root = failed_dep;
    parla_task_t *expected = NULL;
    parla_task_retain(root);
    if (!atomic_compare_exchange_strong(&t->cause, &expected, root))
        parla_task_release(root);
}

/* Records why t will be cancelled: the root cause of the failed dependency. */
static void mark_cancel(parla_task_t *t, parla_task_t *failed_dep)
{
    record_cause(t, failed_dep);
    atomic_fetch_or(&t->flags, PARLA__F_CANCEL);
}

/* Drops one count of t's pending counter; makes t ready at zero. */
void parla__graph_task_dec_pending(parla_task_t *t)
{
    if (atomic_fetch_sub_explicit(&t->pending, 1, memory_order_acq_rel) == 1)
        parla__graph_rt(t->rt)->ghooks.ready(t);
}

/* Adds the edge dep -> t, its memory from pool when not NULL (t's replay pool, which this thread issues).
 * t's pending count must be held above zero by the caller (not submitted, or suspended with its hold). */
static inline int add_edge(parla_task_t *t, parla_task_t *dep, int flags, parla__graph_pool_t *pool)
{
    parla__graph_edge_t *e;
    if (!atomic_exchange_explicit(&dep->first_edge_used, true, memory_order_relaxed)) {
        e = &dep->first_edge;
        e->flags = 0;
    } else if (pool) {
        e = parla__graph_pool_edge(pool); /* flagged POOLED */
    } else if ((e = parla__alloc(t->rt, sizeof *e)) != NULL) {
        e->flags = 0;
    }
    if (e == NULL)
        return parla__error(PARLA_ENOMEM, "cannot allocate a dependency edge %s -> %s", parla_task_name(dep),
                            parla_task_name(t));
    if (atomic_load_explicit(&dep->state, memory_order_acquire) == PARLA_TASK_CREATED) {
        int rc = parla__graph_placeholder_add(t->rt, dep);
        if (rc) {
            if (e == &dep->first_edge)
                atomic_store(&dep->first_edge_used, false);
            else
                parla__graph_edge_free(dep, e);
            return rc;
        }
    }
    e->succ = t;
    e->flags = flags | (e->flags & PARLA__EDGE_POOLED);
    if (parla__graph_rt(t->rt)->trace && !(flags & PARLA__EDGE_SOFT))
        parla__trace_edge(parla__graph_rt(t->rt)->trace, parla__trace_now_ns(), dep->serial, t->serial,
                          (flags & PARLA__EDGE_ORDER)  ? PARLA__EK_ORDER
                          : (flags & PARLA__EDGE_DATA) ? PARLA__EK_FLOW
                                                       : PARLA__EK_EXPLICIT);
    parla_task_retain(t);
    atomic_fetch_add_explicit(&t->pending, 1, memory_order_relaxed);
    if (!parla__graph_edge_push(dep, e)) {
        /* dep has finished: the edge is moot, except for a failure. */
        int s = atomic_load_explicit(&dep->state, memory_order_acquire);
        if (s != PARLA_TASK_DONE && !(flags & (PARLA__EDGE_SOFT | PARLA__EDGE_ORDER)))
            mark_cancel(t, dep);
        atomic_fetch_sub_explicit(&t->pending, 1, memory_order_relaxed);
        parla_task_release(t);
        parla__graph_edge_free(dep, e);
    }
    return 0;
}

int parla__graph_add_edge(parla_task_t *t, parla_task_t *dep, int flags)
{
    /* The successor's replay pool gives the edge while this thread issues that replay (graph.h). */
    return add_edge(t, dep, flags, t->pool && t->pool == parla__graph_pool_issuing() ? t->pool : NULL);
}

int parla__graph_add_edge_issuing(parla_task_t *t, parla_task_t *dep, int flags)
{
    return add_edge(t, dep, flags, t->pool);
}

int parla_task_add_dependency(parla_task_t *t, parla_task_t *dep)
{
    if (t == NULL || dep == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_add_dependency: %s is NULL", t ? "dependency" : "task");
    if (t == dep)
        return parla__error(PARLA_EINVAL, "parla_task_add_dependency: task %s cannot depend on itself",
                            parla_task_name(t));
    if (t->rt != dep->rt)
        return parla__error(PARLA_EINVAL, "parla_task_add_dependency: tasks %s and %s belong to different runtimes",
                            parla_task_name(t), parla_task_name(dep));
    int rc = parla__graph_task_require_created(t, "parla_task_add_dependency");
    if (rc)
        return rc;
    return parla__graph_add_edge(t, dep, 0);
}

int parla_task_submit(parla_task_t *t)
{
    int rc = parla__graph_task_require_created(t, "parla_task_submit");
    if (rc)
        return rc;
    parla_runtime_t *rt = t->rt;
    if (t->fn == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_submit: task %s has no body", parla_task_name(t));
    if (atomic_load_explicit(&parla__graph_rt(rt)->destroyed, memory_order_relaxed))
        return parla__error(PARLA_ESTATE, "parla_task_submit: the runtime was destroyed");
    int forked = parla__check_process(rt, "parla_task_submit");
    if (forked)
        return forked;
    return parla__graph_task_submit_checked(t);
}

bool parla__graph_submits_under_way(parla_runtime_t *rt, long *active)
{
    parla__graph_rt_t *g = parla__graph_rt(rt);
    long n = atomic_load(&g->n_active);
    if (n < PARLA__SUBMITTING) {
        *active = n;
        return false;
    }
    /* Mark, then look again: a submit that ends after the mark sees it (and
     * wakes the waiters); one that ended before is seen here. */
    atomic_store(&g->recheck, true);
    n = atomic_load(&g->n_active);
    *active = n % PARLA__SUBMITTING;
    return n >= PARLA__SUBMITTING;
}

/* The end of a submit's window (PARLA__SUBMITTING): when a stuck check or a
 * waiter about to sleep passed over it, the waiters look again. */
static inline void submit_ended(parla_runtime_t *rt)
{
    parla__graph_rt_t *g = parla__graph_rt(rt);
    atomic_fetch_sub(&g->n_active, PARLA__SUBMITTING);
    if (atomic_load(&g->recheck) && atomic_exchange(&g->recheck, false))
        g->ghooks.recheck(rt);
}

int parla__graph_task_submit_checked(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    int rc = 0;
    int expected = PARLA_TASK_CREATED;
    if (!atomic_compare_exchange_strong(&t->state, &expected, PARLA_TASK_SUBMITTED))
        return parla__error(PARLA_ESTATE, "parla_task_submit: task %s was already submitted", parla_task_name(t));
    /* Pairs with parla__graph_placeholder_add: either it sees SUBMITTED, or we see
     * the flag (both may happen; removal is idempotent). */
    if (atomic_load(&t->flags) & PARLA__F_LISTED)
        parla__graph_placeholder_remove(rt, t);
    if (parla__graph_rt(rt)->trace)
        parla__trace_task_name(parla__graph_rt(rt)->trace, t->serial, parla_task_name(t));
    parla_task_retain(t); /* the engine's reference, dropped when t finishes */
    /* Pairs with parla_runtime_destroy: either it sees this task active, or
     * this sees it closing (both sequentially consistent). */
    atomic_fetch_add(&parla__graph_rt(rt)->n_active, 1 + PARLA__SUBMITTING);
    if (atomic_load(&parla__graph_rt(rt)->closing)) {
        /* Undo: the task stays never submitted (its hold keeps it from running). */
        atomic_fetch_sub(&parla__graph_rt(rt)->n_active, 1);
        submit_ended(rt);
        parla__graph_rt(rt)->ghooks.recheck(rt); /* no finish tells wait_all its task is gone */
        atomic_store(&t->state, PARLA_TASK_CREATED);
        parla_task_release(t);
        return parla__error(PARLA_ESTATE, "parla_task_submit: task %s: the runtime is being destroyed",
                            parla_task_name(t));
    }
    /* Placement options are the scheduler's to judge; a plain task runs on
     * the CPU (the fast path: no call). */
    if (t->ext && t->ext->n_options > 0)
        rc = parla__graph_rt(rt)->ghooks.feasible(t);
    else if (t->vcus > parla__dev_devs(rt)->devices[0].vcus_capacity || t->memory > parla__dev_devs(rt)->devices[0].memory_capacity)
        rc = parla__error(PARLA_ERESOURCE,
                              "task %s needs vcus=%g and memory=%llu bytes, more than the whole cpu device "
                              "(vcus=1, memory=%llu bytes)",
                              parla_task_name(t), (double)t->vcus / PARLA__VCU_ONE, (unsigned long long)t->memory,
                              (unsigned long long)parla__dev_devs(rt)->devices[0].memory_capacity);
    if (rc) {
        /* Wait for the dependencies' notifications to drain through pending:
         * fail it when it would become ready. */
        t->error = PARLA_ERESOURCE;
        atomic_fetch_or(&t->flags, PARLA__F_CANCEL);
    }
    parla__graph_task_dec_pending(t);
    submit_ended(rt);
    return rc;
}

int parla_task_cancel(parla_task_t *t)
{
    int rc = parla__graph_task_require_created(t, "parla_task_cancel");
    if (rc)
        return rc;
    int expected = PARLA_TASK_CREATED;
    if (!atomic_compare_exchange_strong(&t->state, &expected, PARLA_TASK_SUBMITTED))
        return parla__error(PARLA_ESTATE, "parla_task_cancel: task %s was already submitted", parla_task_name(t));
    if (atomic_load(&t->flags) & PARLA__F_LISTED)
        parla__graph_placeholder_remove(t->rt, t);
    parla_task_retain(t);
    atomic_fetch_add_explicit(&parla__graph_rt(t->rt)->n_active, 1, memory_order_relaxed);
    parla__graph_task_finish(t, PARLA_TASK_CANCELLED, PARLA_ECANCELLED);
    return 0;
}

bool parla__graph_task_cancel_stuck(parla_task_t *t)
{
    if (atomic_load_explicit(&t->state, memory_order_acquire) != PARLA_TASK_SUBMITTED ||
        atomic_load_explicit(&t->pending, memory_order_acquire) <= 0)
        return false;
    if (atomic_fetch_or(&t->flags, PARLA__F_CLAIMED | PARLA__F_CANCEL) & PARLA__F_CLAIMED)
        return false; /* finished (or being finished) by another path */
    parla__graph_task_finish(t, PARLA_TASK_CANCELLED, PARLA_ECANCELLED);
    return true;
}

/* Once t's successors have been notified: the scheduler's bookkeeping, then
 * the engine's reference goes. */
static void finish_bookkeeping(parla_task_t *t)
{
    parla__graph_rt(t->rt)->ghooks.finished(t);
    parla_task_release(t); /* the engine's reference */
}

void parla__graph_task_finish(parla_task_t *t, int state, int error)
{
    parla_runtime_t *rt = t->rt;
    /* Tells parla_runtime_destroy that this worker is between publishing a
     * final state and its bookkeeping (owner-written, no contention). */
    parla__self_t *w = parla__self();
    if (w && w->rt != rt)
        w = NULL; /* a worker of another runtime: counted as another thread */
    if (w)
        atomic_store(&w->finishing, w->finishing + 1);
    else
        atomic_fetch_add(&parla__graph_rt(rt)->n_finishing_other, 1);
    t->error = error;
    /* A task released at a predecessor's runahead is ordered after that
     * predecessor's queued work through its streams. One that ends without
     * having queued its own work behind those events (cancelled, failed
     * before or in its body, skipped) must not let its successors start
     * before that work has completed: they may overwrite what it reads (a
     * write-after-read edge passes through a cancelled task) or read what it
     * writes. For a task whose streams did wait, the events are complete and
     * this is one query each. */
    parla__graph_host_wait_task(t);
    atomic_store(&t->state, state);
    if (state == PARLA_TASK_FAILED)
        atomic_fetch_add_explicit(&parla__graph_rt(rt)->n_failed, 1, memory_order_relaxed);
    else if (state == PARLA_TASK_CANCELLED)
        atomic_fetch_add_explicit(&parla__graph_rt(rt)->n_cancelled, 1, memory_order_relaxed);

    /* Notify successors. A successor that becomes ready while marked for
     * cancellation is finished right here and its own successors are walked
     * from an explicit worklist (not by recursion), so a cancelled chain of a
     * million tasks does not overflow the stack. */
    parla_task_t *work = t;
    t->qnext = NULL;
    while (work) {
        parla_task_t *c = work;
        work = c->qnext;
        c->qnext = NULL;
        bool ok = atomic_load_explicit(&c->state, memory_order_relaxed) == PARLA_TASK_DONE;
        parla__graph_edge_t *e = atomic_exchange_explicit(&c->succ, PARLA__SEALED, memory_order_acq_rel);
        while (e) {
            parla__graph_edge_t *next = e->next;
            parla_task_t *s = e->succ;
            if (e->flags & PARLA__EDGE_NOTIFIED) {
                /* Released at runahead already. */
                parla__graph_edge_free(c, e);
                parla_task_release(s);
                e = next;
                continue;
            }
            /* A successor already finished by parla_runtime_cancel_stuck (a
             * dependency cycle through c) gets neither a cause (it would be
             * c's, whose root is s itself: a reference cycle) nor a second
             * finish. */
            bool claimed = atomic_load_explicit(&s->flags, memory_order_acquire) & PARLA__F_CLAIMED;
            if (!claimed && !ok && !(e->flags & (PARLA__EDGE_SOFT | PARLA__EDGE_ORDER)))
                mark_cancel(s, c);
            else if (!claimed && !ok && (e->flags & PARLA__EDGE_SOFT))
                record_cause(s, c); /* an awaited task failed: kept for diagnosis, not a cancellation */
            parla__graph_edge_free(c, e);
            if (atomic_fetch_sub_explicit(&s->pending, 1, memory_order_acq_rel) == 1 && !claimed) {
                if ((atomic_load_explicit(&s->flags, memory_order_acquire) & PARLA__F_CANCEL) &&
                    (atomic_fetch_or(&s->flags, PARLA__F_CLAIMED) & PARLA__F_CLAIMED)) {
                    /* parla_runtime_cancel_stuck finished it meanwhile */
                } else if (atomic_load_explicit(&s->flags, memory_order_acquire) & PARLA__F_CANCEL) {
                    bool fail = s->error == PARLA_ERESOURCE;
                    if (!fail)
                        s->error = PARLA_ECANCELLED;
                    parla__graph_host_wait_task(s); /* as for t above: s never ran */
                    atomic_store(&s->state, fail ? PARLA_TASK_FAILED : PARLA_TASK_CANCELLED);
                    atomic_fetch_add_explicit(fail ? &parla__graph_rt(rt)->n_failed : &parla__graph_rt(rt)->n_cancelled, 1, memory_order_relaxed);
                    parla_task_retain(s); /* kept until its bookkeeping below */
                    s->qnext = work;
                    work = s;
                } else {
                    parla__graph_rt(rt)->ghooks.ready(s);
                }
            }
            parla_task_release(s); /* the edge's reference */
            e = next;
        }
        finish_bookkeeping(c);
        if (c != t)
            parla_task_release(c);
    }
    if (w)
        atomic_store_explicit(&w->finishing, w->finishing - 1, memory_order_release);
    else
        atomic_fetch_sub_explicit(&parla__graph_rt(rt)->n_finishing_other, 1, memory_order_release);
}
