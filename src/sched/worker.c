/* worker.c: worker threads, their ready queues, stealing and parking.
 *
 * There is no scheduler thread: the thread that makes a task ready reserves
 * its resources and enqueues it, on its own deque when it is a worker (owner
 * pops LIFO, thieves steal FIFO), else on the shared queue of the task's
 * priority level. Idle workers spin briefly, then sleep on park_cond; a push
 * wakes one sleeper only when some worker sleeps (a Dekker-style handshake on
 * n_sleeping and the queue sizes, both sequentially consistent). */
#include "sched/sched.h"

#include <sched.h>

enum { SPIN_ROUNDS = 64 };

int parla_worker_index(void)
{
    return parla__sched_tls_worker ? parla__sched_tls_worker->index : -1;
}

parla_task_t *parla_task_current(void)
{
    return parla__sched_tls_worker ? parla__sched_tls_worker->current : NULL;
}

/* ------------------------------------------------------------ ready work -- */

static void wake_one(parla_runtime_t *rt)
{
    /* A read-modify-write, so it is ordered after the queue push. */
    if (atomic_fetch_add(&rt->n_sleeping, 0) > 0) {
        pthread_mutex_lock(&rt->park_lock);
        pthread_cond_signal(&rt->park_cond);
        pthread_mutex_unlock(&rt->park_lock);
    }
}

void parla__sched_enqueue(parla_runtime_t *rt, parla_task_t *t)
{
    parla__sched_worker_t *w = parla__sched_tls_worker;
    if (w && w->rt == rt) {
        parla__sched_queue_push(&w->deque[t->level], t);
    } else {
        parla__sched_queue_push(&rt->shared[t->level], t);
    }
    atomic_fetch_add(&rt->enq_gen, 1);
    wake_one(rt);
}

static uint64_t next_rand(parla__sched_worker_t *w)
{
    /* xorshift64: cheap victim selection for stealing. */
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rng = x;
}

/* Highest priority first; within a level: own deque (LIFO, cache-warm), the
 * shared queue (FIFO), then steal from a random victim (FIFO). */
static parla_task_t *find_task(parla__sched_worker_t *w)
{
    parla_runtime_t *rt = w->rt;
    int n = rt->n_workers;
    for (int l = 0; l < PARLA__LEVELS; l++) {
        parla_task_t *t = parla__sched_queue_pop_tail(&w->deque[l]);
        if (t)
            return t;
        t = parla__sched_queue_pop_head(&rt->shared[l]);
        if (t)
            return t;
        if (n > 1) {
            int start = (int)(next_rand(w) % (uint64_t)n);
            for (int k = 0; k < n; k++) {
                int v = (start + k) % n;
                if (v == w->index)
                    continue;
                t = parla__sched_queue_pop_head(&rt->workers[v].deque[l]);
                if (t) {
                    atomic_store_explicit(&w->n_steals, atomic_load_explicit(&w->n_steals, memory_order_relaxed) + 1,
                                          memory_order_relaxed);
                    return t;
                }
            }
        }
    }
    return NULL;
}

/* A ready task that the body with key `creator` created: from the worker's
 * own deque (newest first), the shared queue, then the other deques. */
static parla_task_t *find_child(parla__sched_worker_t *w, uint64_t creator)
{
    parla_runtime_t *rt = w->rt;
    for (int l = 0; l < PARLA__LEVELS; l++) {
        parla_task_t *t = parla__sched_queue_take_child(&w->deque[l], creator, true);
        if (t == NULL)
            t = parla__sched_queue_take_child(&rt->shared[l], creator, false);
        for (int v = 0; t == NULL && v < rt->n_workers; v++)
            if (v != w->index)
                t = parla__sched_queue_take_child(&rt->workers[v].deque[l], creator, false);
        if (t)
            return t;
    }
    return NULL;
}

/* Runs one queued task on the calling worker, inside a wait in a body: one
 * the waiting body created when creator != 0, else any. Returns whether it did. */
bool parla__sched_help_one(parla__sched_worker_t *w, uint64_t creator)
{
    parla_task_t *t = creator ? find_child(w, creator) : find_task(w);
    if (t == NULL)
        return false;
    parla__sched_task_run(t);
    return true;
}

/* ---------------------------------------------------------------- workers -- */

void *parla__sched_worker_main(void *arg)
{
    parla__sched_worker_t *w = arg;
    parla_runtime_t *rt = w->rt;
    parla__self_tls = &w->self;
    if (rt->config.worker_start)
        rt->config.worker_start(w->index, rt->config.hook_user);
    for (;;) {
        parla_task_t *t = find_task(w);
        if (t) {
            parla__sched_task_run(t);
            continue;
        }
        if (rt->config.worker_idle)
            rt->config.worker_idle(w->index, rt->config.hook_user);
        bool found = false;
        for (int i = 0; i < SPIN_ROUNDS && !found; i++) {
            sched_yield();
            found = parla__sched_any_work(rt) || atomic_load_explicit(&rt->stop, memory_order_relaxed);
        }
        if (found && !atomic_load(&rt->stop))
            continue;
        pthread_mutex_lock(&rt->park_lock);
        if (atomic_load(&rt->stop)) {
            pthread_mutex_unlock(&rt->park_lock);
            break;
        }
        int sleeping = atomic_fetch_add(&rt->n_sleeping, 1) + 1;
        if (parla__sched_any_work(rt)) {
            atomic_fetch_sub(&rt->n_sleeping, 1);
            pthread_mutex_unlock(&rt->park_lock);
            continue;
        }
        /* The last worker to go idle while tasks are outstanding lets waiters
         * check whether the runtime is stuck. */
        if (sleeping == rt->n_workers && atomic_load(&parla__graph_rt(rt)->n_active) > 0) {
            parla__sched_wake_wait_cond(rt);
            /* Workers waiting inside bodies sleep on park_cond: when this
             * worker's going idle leaves the runtime stuck, they must see it
             * (else a body waiting on work that can never finish sleeps for
             * ever). Only then, so idle workers do not wake each other. */
            if (parla__sched_tell_stuck_bodies_locked(rt))
                pthread_cond_broadcast(&rt->park_cond);
        }
        atomic_store_explicit(&w->n_parks, atomic_load_explicit(&w->n_parks, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        pthread_cond_wait(&rt->park_cond, &rt->park_lock);
        atomic_fetch_sub(&rt->n_sleeping, 1);
        pthread_mutex_unlock(&rt->park_lock);
    }
    if (rt->config.worker_stop)
        rt->config.worker_stop(w->index, rt->config.hook_user);
    parla__self_tls = NULL;
    return NULL;
}
