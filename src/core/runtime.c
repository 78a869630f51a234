/* runtime.c: the runtime object, worker threads, ready queues, parking and
 * waiting.
 *
 * There is no scheduler thread: the thread that makes a task ready reserves
 * its resources and enqueues it, on its own deque when it is a worker (owner
 * pops LIFO, thieves steal FIFO), else on the shared queue of the task's
 * priority level. Idle workers spin briefly, then sleep on park_cond; a push
 * wakes one sleeper only when some worker sleeps (a Dekker-style handshake on
 * n_sleeping and the queue sizes, both sequentially consistent). */
#include "core/internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The worker running on this thread, if any. Per-thread by nature. */
static _Thread_local parla__worker_t *tls_worker;

enum { SPIN_ROUNDS = 64 };

static void wake_wait_cond(parla_runtime_t *rt);
static bool body_waiters_locked(parla_runtime_t *rt);
static bool stuck_locked(parla_runtime_t *rt);

parla__worker_t *parla__current_worker(void)
{
    return tls_worker;
}

int parla_worker_index(void)
{
    return tls_worker ? tls_worker->index : -1;
}

parla_task_t *parla_task_current(void)
{
    return tls_worker ? tls_worker->current : NULL;
}

void parla_config_init(parla_config_t *c)
{
    memset(c, 0, sizeof *c);
}

int parla_runtime_num_workers(const parla_runtime_t *rt)
{
    return rt ? rt->n_workers : 0;
}

int parla_runtime_forked(const parla_runtime_t *rt)
{
    return rt != NULL && rt->pid != getpid();
}

int parla__check_process(const parla_runtime_t *rt, const char *fn)
{
    if (!parla_runtime_forked(rt))
        return 0;
    return parla__error(PARLA_ESTATE,
                        "%s: the runtime was created by process %d; this process (%d) is a fork() child, where its "
                        "worker threads do not exist", fn, (int)rt->pid, (int)getpid());
}

/* ------------------------------------------------------------ ready work -- */

/* The sleep handshake is Dekker's: a pusher stores the queue size, then reads
 * n_sleeping; a sleeper increments n_sleeping, then reads the sizes. All four
 * are sequentially consistent (no fences: ThreadSanitizer does not model
 * them), so one of the two sees the other. */
static bool any_work(parla_runtime_t *rt)
{
    /* One counter for every ready queue: idle workers poll it, so its cost
     * must not grow with the number of workers (startup would be quadratic). */
    return atomic_load(&rt->n_queued) > 0;
}

static void wake_one(parla_runtime_t *rt)
{
    /* A read-modify-write, so it is ordered after the queue push. */
    if (atomic_fetch_add(&rt->n_sleeping, 0) > 0) {
        pthread_mutex_lock(&rt->park_lock);
        pthread_cond_signal(&rt->park_cond);
        pthread_mutex_unlock(&rt->park_lock);
    }
}

void parla__enqueue(parla_runtime_t *rt, parla_task_t *t)
{
    parla__worker_t *w = tls_worker;
    if (w && w->rt == rt) {
        parla__queue_push(&w->deque[t->level], t);
    } else {
        parla__queue_push(&rt->shared[t->level], t);
    }
    atomic_fetch_add(&rt->enq_gen, 1);
    wake_one(rt);
}

static uint64_t next_rand(parla__worker_t *w)
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
static parla_task_t *find_task(parla__worker_t *w)
{
    parla_runtime_t *rt = w->rt;
    int n = rt->n_workers;
    for (int l = 0; l < PARLA__LEVELS; l++) {
        parla_task_t *t = parla__queue_pop_tail(&w->deque[l]);
        if (t)
            return t;
        t = parla__queue_pop_head(&rt->shared[l]);
        if (t)
            return t;
        if (n > 1) {
            int start = (int)(next_rand(w) % (uint64_t)n);
            for (int k = 0; k < n; k++) {
                int v = (start + k) % n;
                if (v == w->index)
                    continue;
                t = parla__queue_pop_head(&rt->workers[v].deque[l]);
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

/* Gives back t's resources and dispatches the tasks that now fit. */
static void release_resources(parla_task_t *t)
{
    if ((t->vcus | (int64_t)t->memory) == 0)
        return;
    parla_task_t *r = parla__release_resources(t);
    while (r) {
        parla_task_t *next = r->qnext;
        r->qnext = NULL;
        parla__dispatch(r);
        r = next;
    }
}

void parla__task_complete_gpu(parla_task_t *t, int error)
{
    if (error) {
        /* The driver's words are in this thread's message: prefix the task. */
        char what[256];
        snprintf(what, sizeof what, "%s", parla_last_error_message());
        error = parla__error(error, "task %s: its work on %s failed: %s", parla_task_name(t),
                             t->rt->devices[t->devices[0]].name, what);
    }
    if (t->ext && t->ext->prepared) {
        t->ext->prepared = false;
        parla__data_release_task(t);
    }
    release_resources(t);
    parla__task_finish(t, error ? PARLA_TASK_FAILED : PARLA_TASK_DONE, error);
}

void parla__dispatch(parla_task_t *t)
{
    if (t->ext && t->ext->n_accesses > 0 && !atomic_load_explicit(&t->rt->cancelling, memory_order_relaxed)) {
        int rc = parla__data_prepare(t);
        if (rc == PARLA__PENDING)
            return; /* the copy engine that finishes last enqueues it */
        if (rc != 0) {
            release_resources(t);
            if (rc == PARLA_EBUSY) {
                /* The device is full of copies in use: wait for them. */
                parla__data_wait_for_room(t);
                return;
            }
            parla__task_finish(t, PARLA_TASK_FAILED, rc); /* which task, device and bytes: in the message */
            return;
        }
    }
    parla__enqueue(t->rt, t);
}

/* True when one of t's devices has streams (a CUDA GPU). */
static bool uses_streams(const parla_task_t *t)
{
    if (t->ext == NULL)
        return false;
    for (int k = 0; k < t->n_devices; k++)
        if (parla__device_async(&t->rt->devices[t->devices[k]]))
            return true;
    return false;
}

/* Before a body on CUDA GPUs: the worker's stream on each device waits for the
 * events of the predecessors that released the task at their runahead. */
static int streams_prologue(parla__worker_t *w, parla_task_t *t)
{
    /* Last to first, so that the first device is the current one after. */
    for (int k = t->n_devices - 1; k >= 0; k--) {
        parla__device_t *d = &t->rt->devices[t->devices[k]];
        if (!parla__device_async(d))
            continue;
        void *stream = parla__worker_stream(w, d->index);
        if (stream == NULL)
            return PARLA_EDEVICE; /* the driver's error is in the message */
        int rc = parla__stream_wait_task(t, d, stream);
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
static void streams_epilogue(parla__worker_t *w, parla_task_t *t, bool record)
{
    for (int k = 0; k < t->n_devices; k++) {
        parla__device_t *d = &t->rt->devices[t->devices[k]];
        void *stream = w->streams ? w->streams[d->index] : NULL;
        if (stream == NULL)
            continue;
        if (record && t->ext->events[k] == NULL && parla__event_record(d, stream, &t->ext->events[k]) == 0)
            continue;
        d->ops->stream_synchronize(d, stream);
    }
}

void *parla_task_stream(const parla_task_t *task, int k)
{
    parla__worker_t *w = tls_worker;
    if (task == NULL || w == NULL || w->current != task || k < 0 || k >= task->n_devices || w->streams == NULL)
        return NULL;
    return w->streams[task->devices[k]];
}

void parla__task_run(parla_task_t *t)
{
    parla__worker_t *w = tls_worker;
    /* After parla_runtime_cancel_all, queued tasks are cancelled, not run. */
    bool skip = atomic_load_explicit(&t->rt->cancelling, memory_order_relaxed);
    int rc = 0;
    /* The task's data was brought to its device when it was dispatched. */
    bool data = t->ext && t->ext->prepared;
    if (!skip && t->ext && (rc = atomic_load_explicit(&t->ext->copy_error, memory_order_relaxed)) != 0) {
        rc = parla__error(rc, "task %s: a copy of its data to %s failed on the device (%s); the data keeps its "
                              "last good copy", parla_task_name(t), t->rt->devices[t->devices[0]].name,
                          parla_strerror(rc));
        skip = true;
    }
    bool streams = !skip && uses_streams(t);
    if (streams && (rc = streams_prologue(w, t)) != 0)
        skip = true;
    if (!skip) {
        parla_task_t *outer = w->current;
        w->current = t;
        atomic_store_explicit(&t->state, PARLA_TASK_RUNNING, memory_order_relaxed);
        parla__busy_t *busy = atomic_load_explicit(&t->rt->busy, memory_order_acquire);
        uint64_t busy_outer = busy ? parla__busy_begin(busy, w->index) : 0;
        uint64_t t0 = t->rt->trace || busy ? parla__now_ns() : 0;
        rc = t->fn(t, t->arg);
        /* Events only when the task will run ahead (its first device is a
         * GPU, whose engine completes it); otherwise the worker waits. */
        if (streams)
            streams_epilogue(w, t, rc == 0 && t->rt->devices[t->devices[0]].engine_running);
        if (busy)
            parla__busy_end(busy, w->index, busy_outer, parla__now_ns() - t0, t->devices, t->n_devices,
                            (double)t->vcus / PARLA__VCU_ONE);
        if (t->rt->trace) {
            parla__tev_t ev = {.ts = t0, .b = parla__now_ns(), .serial = t->serial, .kind = PARLA__TEV_TASK,
                               .device = t->n_devices ? t->devices[0] : 0,
                               .a = rc == 0 ? PARLA_TASK_DONE : rc == PARLA_TASK_SUSPEND ? PARLA_TASK_SUSPENDED
                                                                                      : PARLA_TASK_FAILED};
            if (t->ext && t->ext->n_options > 0) {
                ev.f[0] = (float)t->ext->mapping.locality;
                ev.f[1] = (float)t->ext->mapping.transfer;
                ev.f[2] = (float)t->ext->mapping.load;
                ev.f[3] = (float)t->ext->mapping.score;
                if (ev.f[3] == 0.0f)
                    ev.f[3] = 1e-9f; /* mark "has scores" */
            }
            parla__trace_event(t->rt, &ev);
        }
        w->current = outer;
        atomic_store_explicit(&w->n_run, atomic_load_explicit(&w->n_run, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
    if (!skip && rc == 0 && t->n_devices > 0 && t->rt->devices[t->devices[0]].engine_running) {
        /* A GPU task: runahead. Its GPU-only successors go now; the device's
         * engine finishes it after the work queued there before it. */
        if (t->rt->trace && t->ext)
            t->ext->ran_ns = parla__now_ns();
        parla__task_runahead(t);
        int mark = parla__engine_mark(t);
        if (mark == 0)
            return;
        /* Complete already, or no memory for a marker: this worker waits. */
        parla__task_complete_gpu(t, mark < 0 ? parla__task_work_wait(t) : 0);
        return;
    }
    if (data) {
        t->ext->prepared = false;
        parla__data_release_task(t);
    }
    release_resources(t);
    if (skip) {
        if (rc != 0)
            parla__task_finish(t, PARLA_TASK_FAILED, rc);
        else
            parla__task_finish(t, PARLA_TASK_CANCELLED, PARLA_ECANCELLED);
        return;
    }
    if (rc == PARLA_TASK_SUSPEND) {
        if (atomic_load_explicit(&t->state, memory_order_relaxed) == PARLA_TASK_SUSPENDED) {
            /* Drop the hold taken by parla_task_suspend_on; the last awaited
             * task to finish makes t ready again. */
            if (atomic_fetch_sub_explicit(&t->pending, 1, memory_order_acq_rel) == 1)
                parla__task_ready(t);
            return;
        }
        parla__error(PARLA_EINVAL, "task %s returned PARLA_TASK_SUSPEND without parla_task_suspend_on",
                     parla_task_name(t));
        rc = PARLA_EINVAL;
    }
    parla__task_finish(t, rc == 0 ? PARLA_TASK_DONE : PARLA_TASK_FAILED, rc);
}

/* A ready task that the body with key `creator` created: from the worker's
 * own deque (newest first), the shared queue, then the other deques. */
static parla_task_t *find_child(parla__worker_t *w, uint64_t creator)
{
    parla_runtime_t *rt = w->rt;
    for (int l = 0; l < PARLA__LEVELS; l++) {
        parla_task_t *t = parla__queue_take_child(&w->deque[l], creator, true);
        if (t == NULL)
            t = parla__queue_take_child(&rt->shared[l], creator, false);
        for (int v = 0; t == NULL && v < rt->n_workers; v++)
            if (v != w->index)
                t = parla__queue_take_child(&rt->workers[v].deque[l], creator, false);
        if (t)
            return t;
    }
    return NULL;
}

/* Runs one queued task on the calling worker, inside a wait in a body: one
 * the waiting body created when creator != 0, else any. Returns whether it did. */
static bool help_one(parla__worker_t *w, uint64_t creator)
{
    parla_task_t *t = creator ? find_child(w, creator) : find_task(w);
    if (t == NULL)
        return false;
    parla__task_run(t);
    return true;
}

int parla_task_suspend_on(parla_task_t *self, parla_task_t *const *tasks, size_t n)
{
    parla__worker_t *w = tls_worker;
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
    parla__edge_t *edges = NULL;
    for (size_t i = 0; i < n; i++) {
        parla__edge_t *e = parla__alloc(self->rt, sizeof *e);
        if (e == NULL) {
            while (edges) {
                parla__edge_t *next = edges->next;
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
        parla__edge_t *e = edges;
        edges = e->next;
        parla_task_t *dep = tasks[i];
        if (atomic_load(&dep->state) == PARLA_TASK_CREATED)
            parla__placeholder_add(self->rt, dep); /* best effort: only for the stuck diagnosis */
        e->succ = self;
        e->flags = PARLA__EDGE_SOFT;
        if (self->rt->trace) {
            parla__tev_t ev = {.ts = parla__now_ns(), .serial = self->serial, .a = dep->serial,
                               .b = PARLA__EK_AWAIT, .kind = PARLA__TEV_EDGE};
            parla__trace_event(self->rt, &ev);
        }
        parla_task_retain(self);
        atomic_fetch_add(&self->pending, 1);
        parla__edge_t *head = atomic_load_explicit(&dep->succ, memory_order_acquire);
        for (;;) {
            if (head == PARLA__SEALED) {
                atomic_fetch_sub(&self->pending, 1);
                parla_task_release(self);
                parla__free(e);
                break;
            }
            e->next = head;
            if (atomic_compare_exchange_weak_explicit(&dep->succ, &head, e, memory_order_acq_rel,
                                                      memory_order_acquire))
                break;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- workers -- */

static void *worker_main(void *arg)
{
    parla__worker_t *w = arg;
    parla_runtime_t *rt = w->rt;
    tls_worker = w;
    if (rt->config.worker_start)
        rt->config.worker_start(w->index, rt->config.hook_user);
    for (;;) {
        parla_task_t *t = find_task(w);
        if (t) {
            parla__task_run(t);
            continue;
        }
        if (rt->config.worker_idle)
            rt->config.worker_idle(w->index, rt->config.hook_user);
        bool found = false;
        for (int i = 0; i < SPIN_ROUNDS && !found; i++) {
            sched_yield();
            found = any_work(rt) || atomic_load_explicit(&rt->stop, memory_order_relaxed);
        }
        if (found && !atomic_load(&rt->stop))
            continue;
        pthread_mutex_lock(&rt->park_lock);
        if (atomic_load(&rt->stop)) {
            pthread_mutex_unlock(&rt->park_lock);
            break;
        }
        int sleeping = atomic_fetch_add(&rt->n_sleeping, 1) + 1;
        if (any_work(rt)) {
            atomic_fetch_sub(&rt->n_sleeping, 1);
            pthread_mutex_unlock(&rt->park_lock);
            continue;
        }
        /* The last worker to go idle while tasks are outstanding lets waiters
         * check whether the runtime is stuck. */
        if (sleeping == rt->n_workers && atomic_load(&rt->n_active) > 0) {
            wake_wait_cond(rt);
            /* Workers waiting inside bodies sleep on park_cond: when this
             * worker's going idle leaves the runtime stuck, they must see it
             * (else a body waiting on work that can never finish sleeps for
             * ever). Only then, so idle workers do not wake each other. */
            if (body_waiters_locked(rt) && stuck_locked(rt)) {
                for (int i = 0; i < rt->n_workers; i++)
                    if (rt->workers[i].waiting_on)
                        rt->workers[i].stuck_woken = true;
                pthread_cond_broadcast(&rt->park_cond);
            }
        }
        atomic_store_explicit(&w->n_parks, atomic_load_explicit(&w->n_parks, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        pthread_cond_wait(&rt->park_cond, &rt->park_lock);
        atomic_fetch_sub(&rt->n_sleeping, 1);
        pthread_mutex_unlock(&rt->park_lock);
    }
    if (rt->config.worker_stop)
        rt->config.worker_stop(w->index, rt->config.hook_user);
    tls_worker = NULL;
    return NULL;
}

/* ---------------------------------------------------------------- waiting -- */

/* Wakes threads blocked on wait_cond. Takes wait_lock: callers may hold
 * park_lock (lock order), but not wait_lock. */
static void wake_wait_cond(parla_runtime_t *rt)
{
    pthread_mutex_lock(&rt->wait_lock);
    rt->wake_gen++;
    pthread_cond_broadcast(&rt->wait_cond);
    pthread_mutex_unlock(&rt->wait_lock);
}

void parla__wake_waiters(parla_runtime_t *rt)
{
    wake_wait_cond(rt);
    /* Workers waiting inside task bodies sleep on park_cond. */
    pthread_mutex_lock(&rt->park_lock);
    pthread_cond_broadcast(&rt->park_cond);
    pthread_mutex_unlock(&rt->park_lock);
}

/* With park_lock held: true when no task can make progress. Every worker
 * sleeps, nothing is queued, tasks are outstanding, and no worker waiting
 * inside a body has had its awaited task finish (such a worker was woken, or
 * is about to be, and will carry on). */
/* With park_lock held: true when some worker sleeps in a wait inside a body. */
static bool body_waiters_locked(parla_runtime_t *rt)
{
    for (int i = 0; i < rt->n_workers; i++)
        if (rt->workers[i].waiting_on)
            return true;
    return false;
}

static bool stuck_locked(parla_runtime_t *rt)
{
    if (atomic_load(&rt->n_sleeping) != rt->n_workers || any_work(rt) || atomic_load(&rt->n_active) == 0 ||
        atomic_load(&rt->n_copying) > 0)
        return false;
    for (int i = 0; i < rt->n_workers; i++) {
        parla__worker_t *w = &rt->workers[i];
        if (w->waiting_on && w->stuck_woken)
            return false; /* told it is stuck: its body carries on */
        for (size_t k = 0; w->waiting_on && k < w->n_waiting_on; k++)
            if (atomic_load(&w->waiting_on[k]->state) >= PARLA_TASK_DONE)
                return false;
    }
    return true;
}

static bool quiescent(parla_runtime_t *rt)
{
    pthread_mutex_lock(&rt->park_lock);
    bool q = stuck_locked(rt);
    pthread_mutex_unlock(&rt->park_lock);
    return q;
}

/* Formats the diagnosis of a stuck runtime into the thread's error message. */
static int stuck_error(parla_runtime_t *rt)
{
    char buf[480];
    size_t len = 0;
    long active = atomic_load(&rt->n_active);
    pthread_mutex_lock(&rt->placeholder_lock);
    size_t np = rt->n_placeholders;
    for (size_t i = 0; i < np && len < sizeof buf - 64; i++) {
        parla_task_t *p = rt->placeholders[i];
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s (needed by", i ? ", " : "", parla_task_name(p));
        int k = 0;
        for (parla__edge_t *e = atomic_load(&p->succ); e && e != PARLA__SEALED && len < sizeof buf - 32;
             e = e->next, k++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %s", k ? "," : "", parla_task_name(e->succ));
        len += (size_t)snprintf(buf + len, sizeof buf - len, ")");
    }
    pthread_mutex_unlock(&rt->placeholder_lock);
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
        parla__worker_t *w = &rt->workers[i];
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

static int wait_all(parla_runtime_t *rt, double timeout)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_runtime_wait_all: runtime is NULL");
    int forked = parla__check_process(rt, "parla_runtime_wait_all");
    if (forked)
        return forked;
    if (tls_worker && tls_worker->rt == rt)
        return parla__error(PARLA_ESTATE, "parla_runtime_wait_all: called from task %s, which cannot wait for itself",
                            parla_task_name(tls_worker->current));
    struct timespec deadline;
    if (timeout >= 0)
        deadline_after(&deadline, timeout);
    int rc = 0;
    pthread_mutex_lock(&rt->wait_lock);
    atomic_fetch_add(&rt->n_all_waiters, 1);
    while (atomic_load(&rt->n_active) > 0) {
        /* quiescent() takes park_lock, which comes before wait_lock in the
         * lock order; wake_gen tells whether a wake-up was missed meanwhile. */
        uint64_t gen = rt->wake_gen;
        pthread_mutex_unlock(&rt->wait_lock);
        bool q = quiescent(rt);
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
                   atomic_load(&rt->n_active) > 0) {
            rc = PARLA_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&rt->n_all_waiters, 1);
    pthread_mutex_unlock(&rt->wait_lock);
    if (rc == PARLA_ETIMEDOUT)
        return parla__error(rc, "parla_runtime_wait_all: %ld tasks still running after %g s",
                            (long)atomic_load(&rt->n_active), timeout);
    return rc ? stuck_error(rt) : 0;
}

int parla_runtime_wait_all(parla_runtime_t *rt)
{
    return wait_all(rt, -1.0);
}

int parla_runtime_wait_all_timeout(parla_runtime_t *rt, double timeout)
{
    if (!(timeout >= 0))
        return parla__error(PARLA_EINVAL, "parla_runtime_wait_all_timeout: timeout %g is not >= 0", timeout);
    return wait_all(rt, timeout);
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
    parla__wake_waiters(rt);
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
    if (tls_worker && tls_worker->rt == rt)
        return parla__error(PARLA_ESTATE, "parla_runtime_cancel_stuck: called from task %s",
                            parla_task_name(tls_worker->current));
    for (size_t i = 0; i < n; i++) {
        if (tasks[i] == NULL)
            return parla__error(PARLA_EINVAL, "parla_runtime_cancel_stuck: tasks[%zu] is NULL", i);
        if (tasks[i]->rt != rt)
            return parla__error(PARLA_EINVAL, "parla_runtime_cancel_stuck: task %s belongs to another runtime",
                                parla_task_name(tasks[i]));
    }
    /* A worker woken meanwhile (parla_runtime_cancel_all wakes them all)
     * parks again at once: give the runtime a moment to settle. */
    bool stuck = wait_all(rt, 0.1) == PARLA_ESTUCK;
    if (stuck) {
        pthread_mutex_lock(&rt->park_lock);
        stuck = stuck_locked(rt) && !body_waiters_locked(rt);
        pthread_mutex_unlock(&rt->park_lock);
    }
    if (!stuck)
        return parla__error(PARLA_ESTATE, "parla_runtime_cancel_stuck: the runtime is not stuck (a task is ready, "
                                          "running, copying or blocked in a wait, or none is pending)");
    pthread_mutex_lock(&rt->placeholder_lock);
    size_t np = rt->n_placeholders;
    pthread_mutex_unlock(&rt->placeholder_lock);
    if (np > 0)
        return parla__error(PARLA_ESTATE,
                            "parla_runtime_cancel_stuck: %zu never-submitted task%s %s depended on: submit or cancel "
                            "%s (parla_runtime_unsubmitted)",
                            np, np == 1 ? "" : "s", np == 1 ? "is" : "are", np == 1 ? "it" : "them");
    int cancelled = 0;
    for (size_t i = 0; i < n; i++)
        if (parla__task_cancel_stuck(tasks[i]))
            cancelled++;
    parla__wake_waiters(rt);
    return cancelled;
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
 * idle worker when there is nothing it may run. */
static int body_wait(parla__worker_t *w, parla_task_t *const *ts, size_t n, const struct timespec *deadline)
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
        if (help_one(w, all_blocked ? 0 : key))
            continue;
        pthread_mutex_lock(&rt->park_lock);
        atomic_fetch_add(&rt->n_sleeping, 1);
        w->waiting_on = ts;
        w->n_waiting_on = n;
        bool work = any_work(rt);
        /* Something was enqueued since the search (it may be a child), or
         * every worker now waits in a body: search again. */
        bool retry = atomic_load(&rt->enq_gen) != gen ||
                     (work && atomic_load(&rt->n_body_waiting) >= rt->n_workers);
        if (!retry && !any_finished(ts, n)) {
            /* A wake-up meant for an idle worker may have reached this one:
             * pass it on, so the work it leaves is taken. */
            if (work && atomic_load(&rt->n_sleeping) > body_sleepers_locked(rt))
                pthread_cond_broadcast(&rt->park_cond);
            if (!work && stuck_locked(rt)) {
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
            wake_wait_cond(rt);
            rc = stuck_error(rt);
        }
    }
    atomic_fetch_sub(&rt->n_body_waiting, 1);
    return rc;
}

/* Blocks until one of ts[0..n) has finished: 0, PARLA_ETIMEDOUT after timeout
 * seconds (timeout >= 0), or PARLA_ESTUCK (message set) when none can finish. */
static int wait_any(parla_runtime_t *rt, parla_task_t *const *ts, size_t n, double timeout)
{
    parla__worker_t *w = tls_worker;
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
        bool q = quiescent(rt);
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
        return stuck_error(rt);
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
    parla__worker_t *w = tls_worker;
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

/* ----------------------------------------------------------- placeholders -- */

int parla__placeholder_add(parla_runtime_t *rt, parla_task_t *t)
{
    int rc = 0;
    pthread_mutex_lock(&rt->placeholder_lock);
    if (!(atomic_load(&t->flags) & PARLA__F_LISTED)) {
        if (rt->n_placeholders == rt->cap_placeholders) {
            size_t cap = rt->cap_placeholders ? 2 * rt->cap_placeholders : 16;
            parla_task_t **p = parla__alloc(rt, cap * sizeof *p);
            if (p == NULL) {
                rc = parla__error(PARLA_ENOMEM, "cannot record never-submitted task %s", parla_task_name(t));
                goto out;
            }
            if (rt->n_placeholders)
                memcpy(p, rt->placeholders, rt->n_placeholders * sizeof *p);
            parla__free(rt->placeholders);
            rt->placeholders = p;
            rt->cap_placeholders = cap;
        }
        atomic_fetch_or(&t->flags, PARLA__F_LISTED);
        if (atomic_load(&t->state) != PARLA_TASK_CREATED) {
            /* Submitted meanwhile (see parla_task_submit). */
            atomic_fetch_and(&t->flags, ~PARLA__F_LISTED);
            goto out;
        }
        parla_task_retain(t);
        t->ph_index = (uint32_t)rt->n_placeholders;
        rt->placeholders[rt->n_placeholders++] = t;
    }
out:
    pthread_mutex_unlock(&rt->placeholder_lock);
    return rc;
}

void parla__placeholder_remove(parla_runtime_t *rt, parla_task_t *t)
{
    bool found = false;
    pthread_mutex_lock(&rt->placeholder_lock);
    size_t i = t->ph_index;
    if ((atomic_load(&t->flags) & PARLA__F_LISTED) && i < rt->n_placeholders && rt->placeholders[i] == t) {
        parla_task_t *last = rt->placeholders[--rt->n_placeholders];
        rt->placeholders[i] = last;
        last->ph_index = (uint32_t)i;
        found = true;
    }
    atomic_fetch_and(&t->flags, ~PARLA__F_LISTED);
    pthread_mutex_unlock(&rt->placeholder_lock);
    if (found)
        parla_task_release(t);
}

size_t parla_runtime_unsubmitted(parla_runtime_t *rt, parla_task_t **out, size_t cap)
{
    if (rt == NULL)
        return 0;
    if (out == NULL)
        cap = 0;
    pthread_mutex_lock(&rt->placeholder_lock);
    size_t n = rt->n_placeholders;
    for (size_t i = 0; i < n && i < cap; i++) {
        parla_task_retain(rt->placeholders[i]);
        out[i] = rt->placeholders[i];
    }
    pthread_mutex_unlock(&rt->placeholder_lock);
    return n;
}

/* -------------------------------------------------------- create/destroy -- */

/* Reads two integers from a file ("max 100000" reads as -1 100000); the
 * number read. */
static int read_two(const char *path, long *a, long *b)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char first[32] = "";
    int k = fscanf(f, "%31s %ld", first, b);
    fclose(f);
    if (k < 1)
        return 0;
    *a = strcmp(first, "max") == 0 ? -1 : strtol(first, NULL, 10);
    return k;
}

/* The CPU limit of this process's cgroup (quota / period, rounded up), or 0
 * when there is none. cgroup v2 (cpu.max) first, then v1 (cfs quota). */
static long cgroup_cpu_limit(void)
{
    long quota = 0, period = 0;
    if (read_two("/sys/fs/cgroup/cpu.max", &quota, &period) == 2) {
        /* found */
    } else {
        long dummy;
        if (read_two("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", &quota, &dummy) < 1 ||
            read_two("/sys/fs/cgroup/cpu/cpu.cfs_period_us", &period, &dummy) < 1)
            return 0;
    }
    if (quota <= 0 || period <= 0)
        return 0;
    return (quota + period - 1) / period;
}

static int default_workers(int *out)
{
    const char *env = getenv("PARLA_NUM_THREADS");
    if (env && *env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || v <= 0 || v > PARLA_MAX_WORKERS)
            return parla__error(PARLA_EINVAL, "PARLA_NUM_THREADS=\"%s\" is not a positive integer (at most %d)", env,
                                PARLA_MAX_WORKERS);
        *out = (int)v;
        return 0;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set); /* taskset, cpusets */
    long limit = cgroup_cpu_limit();
    if (limit > 0 && limit < n)
        n = limit;
    if (n > PARLA_MAX_WORKERS)
        n = PARLA_MAX_WORKERS;
    *out = n > 0 ? (int)n : 1;
    return 0;
}

static void free_runtime(parla_runtime_t *rt)
{
    parla__task_pool_free(rt);
    if (rt->devices)
        parla__devices_destroy(rt);
    parla__trace_free(rt);
    parla__busy_destroy(atomic_load(&rt->busy));
    pthread_mutex_destroy(&rt->park_lock);
    pthread_cond_destroy(&rt->park_cond);
    pthread_mutex_destroy(&rt->wait_lock);
    pthread_cond_destroy(&rt->wait_cond);
    pthread_mutex_destroy(&rt->placeholder_lock);
    pthread_mutex_destroy(&rt->stores_lock);
    parla__free(rt->placeholders);
    parla__free(rt->workers);
    parla__free(rt);
}

void parla__runtime_task_freed(parla_runtime_t *rt)
{
    if (atomic_fetch_sub_explicit(&rt->n_live, 1, memory_order_acq_rel) == 1)
        free_runtime(rt);
}

static void stop_workers(parla_runtime_t *rt, int started)
{
    pthread_mutex_lock(&rt->park_lock);
    atomic_store(&rt->stop, true);
    pthread_cond_broadcast(&rt->park_cond);
    pthread_mutex_unlock(&rt->park_lock);
    for (int i = 0; i < started; i++)
        pthread_join(rt->workers[i].thread, NULL);
}

int parla_runtime_create(const parla_config_t *config, parla_runtime_t **out)
{
    if (out == NULL)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: out is NULL");
    *out = NULL;
    parla_config_t cfg;
    if (config)
        cfg = *config;
    else
        parla_config_init(&cfg);
    if (cfg.n_workers < 0)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: n_workers=%d is negative", cfg.n_workers);
    if (cfg.n_workers > PARLA_MAX_WORKERS)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: n_workers=%d is more than the limit of %d",
                            cfg.n_workers, PARLA_MAX_WORKERS);
    if (cfg.n_virtual_gpus < 0)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: n_virtual_gpus=%d is negative", cfg.n_virtual_gpus);
    if (!(cfg.virtual_gpu_bandwidth >= 0) || cfg.virtual_gpu_bandwidth > 1e300)
        return parla__error(PARLA_EINVAL,
                            "parla_runtime_create: virtual_gpu_bandwidth=%g is not a finite number of bytes/s >= 0",
                            cfg.virtual_gpu_bandwidth);
    if (cfg.n_workers == 0) {
        int rc = default_workers(&cfg.n_workers);
        if (rc)
            return rc;
    }
    if (cfg.cpu_memory == 0) {
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        cfg.cpu_memory = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : (uint64_t)1 << 34;
    }
    /* The runtime is allocation number 1 for fault injection. */
    if (cfg.fail_alloc_at == 1)
        return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate the runtime");
    parla_runtime_t *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate the runtime");
    rt->config = cfg;
    rt->pid = getpid();
    rt->fail_alloc_at = cfg.fail_alloc_at;
    atomic_init(&rt->alloc_count, 1);
    rt->n_workers = cfg.n_workers;
    atomic_init(&rt->n_live, 1); /* the runtime's own count, dropped by destroy */
    pthread_mutex_init(&rt->park_lock, NULL);
    pthread_cond_init(&rt->park_cond, NULL);
    pthread_mutex_init(&rt->wait_lock, NULL);
    pthread_cond_init(&rt->wait_cond, NULL);
    pthread_mutex_init(&rt->placeholder_lock, NULL);
    pthread_mutex_init(&rt->stores_lock, NULL);
    for (int l = 0; l < PARLA__LEVELS; l++)
        parla__queue_init(&rt->shared[l], &rt->n_queued);
    int drc = parla__devices_init(rt);
    if (drc == 0 && cfg.trace && parla__trace_init(rt) != 0)
        drc = parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate trace buffers");
    if (drc) {
        rt->n_workers = 0;
        free_runtime(rt);
        return drc;
    }
    rt->workers = parla__calloc(rt, (size_t)rt->n_workers, sizeof *rt->workers);
    if (rt->workers == NULL) {
        rt->n_workers = 0;
        free_runtime(rt);
        return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate %d workers", cfg.n_workers);
    }
    bool async = false;
    for (int d = 0; d < rt->n_devices; d++)
        async |= parla__device_async(&rt->devices[d]);
    for (int i = 0; i < rt->n_workers; i++) {
        parla__worker_t *w = &rt->workers[i];
        if (async && (w->streams = parla__calloc(rt, (size_t)rt->n_devices, sizeof *w->streams)) == NULL) {
            rt->n_workers = i;
            free_runtime(rt);
            return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate the streams of worker %d", i);
        }
        w->rt = rt;
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        for (int l = 0; l < PARLA__LEVELS; l++)
            parla__queue_init(&w->deque[l], &rt->n_queued);
    }
    for (int i = 0; i < rt->n_workers; i++) {
        if (pthread_create(&rt->workers[i].thread, NULL, worker_main, &rt->workers[i]) != 0) {
            stop_workers(rt, i);
            free_runtime(rt);
            return parla__error(PARLA_ESYS, "parla_runtime_create: cannot start worker thread %d", i);
        }
    }
    *out = rt;
    return 0;
}

int parla_runtime_destroy(parla_runtime_t *rt)
{
    if (rt == NULL)
        return 0;
    if (tls_worker && tls_worker->rt == rt)
        return parla__error(PARLA_ESTATE, "parla_runtime_destroy: called from task %s",
                            parla_task_name(tls_worker->current));
    int forked = parla__check_process(rt, "parla_runtime_destroy");
    if (forked)
        return forked;
    /* The runtime's memory lives while task handles or data objects do, so a
     * second destroy reaches it: refuse it (it would drop the runtime's own
     * reference twice and free it under those handles). */
    if (atomic_load(&rt->destroyed))
        return parla__error(PARLA_ESTATE, "parla_runtime_destroy: the runtime was already destroyed");
    bool open = false;
    if (!atomic_compare_exchange_strong(&rt->closing, &open, true)) /* from now on submit refuses */
        return parla__error(PARLA_ESTATE, "parla_runtime_destroy: another thread is destroying the runtime");
    /* A task is reported finished (its state) a moment before the engine's
     * bookkeeping for it ends; wait that moment out, briefly. */
    long active = atomic_load(&rt->n_active);
    for (int spin = 0; active > 0 && spin < 100000; spin++) {
        bool finishing = false;
        for (int i = 0; i < rt->n_workers && !finishing; i++)
            finishing = atomic_load(&rt->workers[i].finishing) > 0;
        if (!finishing)
            break;
        sched_yield();
        active = atomic_load(&rt->n_active);
    }
    if (active > 0) {
        atomic_store(&rt->closing, false);
        return parla__error(PARLA_EBUSY, "parla_runtime_destroy: %ld submitted task%s not finished", active,
                            active == 1 ? " has" : "s have");
    }
    stop_workers(rt, rt->n_workers);
    for (int i = 0; i < rt->n_devices; i++)
        parla__copy_engine_stop(&rt->devices[i]); /* nothing is queued: no task is live */
    atomic_store(&rt->destroyed, true);
    parla__data_forget_history(rt);
    /* Never-submitted tasks recorded as placeholders: drop the registry's references. */
    pthread_mutex_lock(&rt->placeholder_lock);
    size_t n = rt->n_placeholders;
    parla_task_t **list = rt->placeholders;
    rt->placeholders = NULL;
    rt->n_placeholders = rt->cap_placeholders = 0;
    for (size_t i = 0; i < n; i++)
        atomic_fetch_and(&list[i]->flags, ~PARLA__F_LISTED);
    pthread_mutex_unlock(&rt->placeholder_lock);
    for (size_t i = 0; i < n; i++)
        parla_task_release(list[i]);
    parla__free(list);
    parla__runtime_task_freed(rt);
    return 0;
}

void parla_runtime_stats(parla_runtime_t *rt, parla_runtime_stats_t *out)
{
    if (out == NULL)
        return;
    if (rt == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    memset(out, 0, sizeof *out);
    out->tasks_created = atomic_load(&rt->serial);
    out->tasks_failed = atomic_load(&rt->n_failed);
    out->tasks_cancelled = atomic_load(&rt->n_cancelled);
    for (int i = 0; i < rt->n_workers; i++) {
        out->tasks_run += atomic_load(&rt->workers[i].n_run);
        out->steals += atomic_load(&rt->workers[i].n_steals);
        out->parks += atomic_load(&rt->workers[i].n_parks);
    }
}
