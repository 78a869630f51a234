/* task.c: task objects: the recycled pool, creation, references, names, the
 * setters and getters of the public API. */
#include "graph/graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Task memory is recycled through a per-runtime pool: workers free most
 * tasks and the submitting thread creates them, and the allocator's
 * cross-thread frees contend. Freed tasks go on a lock-free stack (pushes
 * only); a creator takes the whole stack at once under alloc_lock, so there is
 * no ABA. At most PARLA__POOL_MAX tasks wait in the stack. Under
 * AddressSanitizer memory is not recycled, so use-after-free stays visible. */
#define PARLA__POOL_MAX 65536

static parla_task_t *pool_take(parla_runtime_t *rt)
{
#if defined(__SANITIZE_ADDRESS__)
    (void)rt;
    return NULL;
#else
    if (atomic_load_explicit(&parla__graph_rt(rt)->alloc_list, memory_order_relaxed) == NULL &&
        atomic_load_explicit(&parla__graph_rt(rt)->pool, memory_order_relaxed) == NULL)
        return NULL;
    parla__spin_lock(&parla__graph_rt(rt)->alloc_lock);
    parla_task_t *t = atomic_load_explicit(&parla__graph_rt(rt)->alloc_list, memory_order_relaxed);
    if (t == NULL) {
        t = atomic_exchange_explicit(&parla__graph_rt(rt)->pool, NULL, memory_order_acquire);
        atomic_store_explicit(&parla__graph_rt(rt)->pool_count, 0, memory_order_relaxed);
    }
    if (t)
        atomic_store_explicit(&parla__graph_rt(rt)->alloc_list, t->qnext, memory_order_relaxed);
    parla__spin_unlock(&parla__graph_rt(rt)->alloc_lock);
    return t;
#endif
}

static void pool_give(parla_runtime_t *rt, parla_task_t *t)
{
#if !defined(__SANITIZE_ADDRESS__)
    if (!atomic_load_explicit(&parla__graph_rt(rt)->destroyed, memory_order_relaxed) &&
        atomic_fetch_add_explicit(&parla__graph_rt(rt)->pool_count, 1, memory_order_relaxed) < PARLA__POOL_MAX) {
        parla_task_t *head = atomic_load_explicit(&parla__graph_rt(rt)->pool, memory_order_relaxed);
        do {
            t->qnext = head;
        } while (!atomic_compare_exchange_weak_explicit(&parla__graph_rt(rt)->pool, &head, t, memory_order_release,
                                                        memory_order_relaxed));
        return;
    }
#endif
    (void)rt;
    parla__free(t);
}

void parla__graph_task_pool_free(parla_runtime_t *rt)
{
    parla_task_t *lists[2] = {atomic_exchange(&parla__graph_rt(rt)->alloc_list, NULL), atomic_exchange(&parla__graph_rt(rt)->pool, NULL)};
    for (int i = 0; i < 2; i++)
        for (parla_task_t *t = lists[i]; t;) {
            parla_task_t *next = t->qnext;
            parla__free(t);
            t = next;
        }
}

void parla__graph_task_init(parla_runtime_t *rt, parla_task_t *t, parla_task_fn fn, void *arg)
{
    atomic_init(&t->pending, 1);
    atomic_init(&t->refs, 1);
    atomic_init(&t->state, PARLA_TASK_CREATED);
    atomic_init(&t->flags, 0);
    atomic_init(&t->succ, NULL);
    atomic_init(&t->cause, NULL);
    t->rt = rt;
    t->fn = fn;
    t->arg = arg;
    t->user = NULL;
    t->qnext = t->qprev = NULL;
    t->error = 0;
    t->level = 1;
    t->vcus = 0;
    t->memory = 0;
    atomic_init(&t->name, NULL);
    atomic_init(&t->first_edge_used, false);
    t->n_devices = 0;
    t->ext = NULL;
    t->pool = NULL;
    t->serial = atomic_fetch_add_explicit(&parla__graph_rt(rt)->serial, 1, memory_order_relaxed);
    parla__self_t *cw = parla__self();
    t->creator = cw && cw->rt == rt && cw->current ? cw->current->serial + 1 : 0;
    atomic_fetch_add_explicit(&parla__graph_rt(rt)->n_live, 1, memory_order_relaxed);
}

int parla_task_create(parla_runtime_t *rt, parla_task_fn fn, void *arg, parla_task_t **out)
{
    if (out)
        *out = NULL;
    if (rt == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_create: %s is NULL", rt ? "out" : "runtime");
    if (atomic_load_explicit(&parla__graph_rt(rt)->destroyed, memory_order_relaxed))
        return parla__error(PARLA_ESTATE, "parla_task_create: the runtime was destroyed");
    int forked = parla__check_process(rt, "parla_task_create");
    if (forked)
        return forked;
    parla_task_t *t = pool_take(rt);
    if (t == NULL)
        t = parla__alloc(rt, sizeof *t);
    if (t == NULL)
        return parla__error(PARLA_ENOMEM, "parla_task_create: cannot allocate a task");
    parla__graph_task_init(rt, t, fn, arg);
    *out = t;
    return 0;
}

void parla_task_retain(parla_task_t *t)
{
    if (t == NULL)
        return;
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void parla_task_release(parla_task_t *t)
{
    if (t == NULL)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Last reference. A task that was never finished can still have edges
     * (its dependents hold references to it through their own pending edges,
     * so this only happens when nobody can be notified any more). */
    parla__graph_edge_t *e = atomic_load_explicit(&t->succ, memory_order_acquire);
    while (e && e != PARLA__SEALED) {
        parla__graph_edge_t *next = e->next;
        parla_task_t *succ = e->succ;
        parla__graph_edge_free(t, e); /* before succ can go: a pooled edge may be its pool's */
        parla_task_release(succ);
        e = next;
    }
    parla_task_t *cause = atomic_load_explicit(&t->cause, memory_order_acquire);
    parla_runtime_t *rt = t->rt;
    parla__graph_task_ext_free(t);
    if (t->pool)
        parla__graph_pool_task_freed(t->pool, t); /* its name is its graph's */
    else {
        parla__free(atomic_load(&t->name));
        pool_give(rt, t);
    }
    if (cause)
        parla_task_release(cause);
    parla__graph_object_freed(rt);
}

int parla__graph_task_require_created(const parla_task_t *t, const char *fn)
{
    if (t == NULL) {
        /* The constant return (not parla__error's) lets the compiler see that
         * no caller goes on with t == NULL. */
        parla__error(PARLA_EINVAL, "%s: task is NULL", fn);
        return PARLA_EINVAL;
    }
    int s = atomic_load_explicit(&t->state, memory_order_acquire);
    if (s != PARLA_TASK_CREATED)
        return parla__error(PARLA_ESTATE, "%s: task %s is %s, not created", fn, parla_task_name(t),
                            parla_task_state_name(s));
    return 0;
}

int parla_task_set_body(parla_task_t *t, parla_task_fn fn, void *arg)
{
    int rc = parla__graph_task_require_created(t, "parla_task_set_body");
    if (rc)
        return rc;
    t->fn = fn;
    t->arg = arg;
    return 0;
}

int parla_task_set_name(parla_task_t *t, const char *name)
{
    int rc = parla__graph_task_require_created(t, "parla_task_set_name");
    if (rc)
        return rc;
    if (t->pool)
        return parla__error(PARLA_ESTATE, "parla_task_set_name: task %s is a graph replay's: its name is the "
                            "graph's", parla_task_name(t));
    char *copy = NULL;
    if (name) {
        size_t n = strnlen(name, 255);
        copy = parla__alloc(t->rt, n + 1);
        if (copy == NULL)
            return parla__error(PARLA_ENOMEM, "parla_task_set_name: cannot allocate the name");
        memcpy(copy, name, n);
        copy[n] = '\0';
    }
    parla__free(atomic_exchange(&t->name, copy));
    return 0;
}

const char *parla_task_name(const parla_task_t *t)
{
    if (t == NULL)
        return "(null)";
    char *name = atomic_load_explicit(&t->name, memory_order_acquire);
    if (name)
        return name;
    /* Default names are made on first use (most tasks never need one). */
    char buf[32];
    int n = snprintf(buf, sizeof buf, "task#%llu", (unsigned long long)t->serial);
    char *copy = malloc((size_t)n + 1);
    if (copy == NULL)
        return "task";
    memcpy(copy, buf, (size_t)n + 1);
    char *expected = NULL;
    if (!atomic_compare_exchange_strong(&((parla_task_t *)t)->name, &expected, copy)) {
        free(copy);
        return expected;
    }
    return copy;
}

parla__graph_task_ext_t *parla__graph_task_ext(parla_task_t *t)
{
    if (t->ext == NULL)
        t->ext = parla__calloc(t->rt, 1, sizeof *t->ext);
    return t->ext;
}

void parla__graph_task_ext_free(parla_task_t *t)
{
    parla__graph_task_ext_t *x = t->ext;
    if (x == NULL)
        return;
    parla__graph_rt(t->rt)->ghooks.dispose(t); /* the data part: accesses, waiter records */
    parla__graph_task_events_release(t);
    t->ext = NULL;
    if (x->pooled)
        return; /* the pool's; options and accesses are its graph's */
    parla__free(x->options);
    parla__free(x);
}

int parla_task_set_priority(parla_task_t *t, int priority)
{
    int rc = parla__graph_task_require_created(t, "parla_task_set_priority");
    if (rc)
        return rc;
    t->level = priority > 0 ? 0 : priority == 0 ? 1 : 2;
    return 0;
}

int parla_task_set_resources(parla_task_t *t, double vcus, uint64_t memory)
{
    int rc = parla__graph_task_require_created(t, "parla_task_set_resources");
    if (rc)
        return rc;
    if (!(vcus >= 0.0 && vcus <= 1.0))
        return parla__error(PARLA_EINVAL, "parla_task_set_resources: task %s: vcus=%g is outside [0, 1]",
                            parla_task_name(t), vcus);
    t->vcus = (int64_t)llround(vcus * (double)PARLA__VCU_ONE);
    t->memory = memory;
    return 0;
}

void parla_task_set_user(parla_task_t *t, void *user)
{
    if (t == NULL)
        return;
    t->user = user;
}

void *parla_task_user(const parla_task_t *t)
{
    if (t == NULL)
        return NULL;
    return t->user;
}

parla_task_state_t parla_task_state(const parla_task_t *t)
{
    if (t == NULL)
        return PARLA_TASK_CREATED;
    return (parla_task_state_t)atomic_load_explicit(&t->state, memory_order_acquire);
}

int parla_task_error(const parla_task_t *t)
{
    if (t == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_error: task is NULL");
    int s = atomic_load_explicit(&t->state, memory_order_acquire);
    if (s == PARLA_TASK_FAILED)
        return t->error;
    if (s == PARLA_TASK_CANCELLED)
        return PARLA_ECANCELLED;
    return 0;
}

parla_task_t *parla_task_cause(const parla_task_t *t)
{
    if (t == NULL)
        return NULL;
    if (atomic_load_explicit(&t->state, memory_order_acquire) != PARLA_TASK_CANCELLED)
        return NULL;
    return atomic_load_explicit(&t->cause, memory_order_acquire);
}

int parla_task_is_plain_done(const parla_task_t *t)
{
    /* The final state is published (release) after devices and ext were last written. */
    return t != NULL && atomic_load_explicit(&t->state, memory_order_acquire) == PARLA_TASK_DONE &&
           t->ext == NULL && t->n_devices == 1 && t->devices[0] == 0;
}

void parla__graph_object_freed(parla_runtime_t *rt)
{
    if (atomic_fetch_sub_explicit(&parla__graph_rt(rt)->n_live, 1, memory_order_acq_rel) == 1)
        parla__graph_rt(rt)->ghooks.last_object(rt);
}
