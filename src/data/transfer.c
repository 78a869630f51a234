/* transfer.c: copies between devices: making a data object's ranges valid on a
 * device (planning copy jobs, or copying at once), copy jobs on the device
 * engines and their queueing, and the arrivals that tasks wait for. The phases
 * of a task's preparation that use them are in prepare.c. */
#include "data/impl.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arrival;

/* ----------------------------------------------------------------- copies -- */

/* Counts a copy of [lo, hi) from device `from` to `to` that started at t0 (ns)
 * in the devices' totals and the trace. */
void parla__data_copy_done(parla_runtime_t *rt, int to, int from, uint64_t lo, uint64_t hi, uint64_t serial, uint64_t t0)
{
    atomic_fetch_add_explicit(&parla__dev_devs(rt)->devices[to].bytes_in, hi - lo, memory_order_relaxed);
    atomic_fetch_add_explicit(&parla__dev_devs(rt)->devices[from].bytes_out, hi - lo, memory_order_relaxed);
    if (parla__graph_rt(rt)->trace)
        parla__trace_copy(parla__graph_rt(rt)->trace, serial, t0, parla__trace_now_ns(), to, from, hi - lo);
}

/* Copies n bytes from src on device `from` to dst on device `to`; returns when done. */
int parla__data_copy_addrs(parla_runtime_t *rt, int to, void *dst, int from, const void *src, uint64_t n)
{
    parla__dev_t *dt = &parla__dev_devs(rt)->devices[to], *df = &parla__dev_devs(rt)->devices[from];
    /* A CUDA device does the copy when one side is CUDA. */
    parla__dev_t *engine = dt->is_cuda ? dt : df;
    return engine->ops->copy(dt, dst, df, src, n);
}

arrival_t *parla__data_arrival_new(parla_runtime_t *rt)
{
    arrival_t *a = parla__calloc(rt, 1, sizeof *a);
    if (a == NULL)
        return NULL;
    atomic_init(&a->refs, 1);
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    return a;
}

void parla__data_arrival_unref(struct arrival *a)
{
    if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->cond);
        parla__free(a);
    }
}

/* True when copies to a (NULL: none) are still on their way. */
bool parla__data_arrival_pending(arrival_t *a)
{
    if (a == NULL)
        return false;
    parla__lock(&a->lock);
    bool pending = !a->done;
    parla__unlock(&a->lock);
    return pending;
}

/* The pending arrivals of the devices that bytes of d's ranges are still being copied to (a queued copy, or
 * a write-back to the CPU), other than skip (NULL: none), each once: up to max of them into out, each with
 * a reference taken; returns how many. Before a write of d (a task's, or an outside write through
 * parla_data_fetch) is marked, the writer waits for them: such a copy to another device may still read the
 * writer's copy (the marks do not say from where a copy comes, so copies from other sources are waited for
 * too; the write makes their bytes stale anyway), and a write-back to the CPU must not land after the
 * write. s->lock held. */
int parla__data_arriving_locked(const parla_data_t *d, const arrival_t *skip, arrival_t **out, int max)
{
    const store_t *s = d->store;
    uint64_t mask = 0;
    for (size_t r = 0; r < d->n_ranges; r++) {
        uint64_t lo = d->ranges[2 * r], hi = d->ranges[2 * r + 1];
        for (size_t i = lo < hi ? parla__data_seg_find(s, lo) : s->n_segs; i < s->n_segs && s->segs[i].lo < hi; i++)
            mask |= s->segs[i].arriving;
    }
    int n = 0;
    for (; mask && n < max; mask &= mask - 1) {
        arrival_t *a = s->copies[lowest(mask)].arriving;
        bool seen = a == skip;
        for (int k = 0; k < n && !seen; k++)
            seen = out[k] == a;
        if (seen || !parla__data_arrival_pending(a))
            continue;
        atomic_fetch_add(&a->refs, 1);
        out[n++] = a;
    }
    return n;
}

/* Blocks the calling thread (outside tasks) until the copies have arrived. */
void parla__data_arrival_wait(arrival_t *a)
{
    parla__lock(&a->lock);
    while (!a->done)
        pthread_cond_wait(&a->cond, &a->lock);
    parla__unlock(&a->lock);
}

/* Marks job j's bytes as arrived: exactly [lo, hi), since segments may have
 * been merged or split since it was planned (a neighbouring range may still be
 * on its way). Without memory to split, the mark stays (only a preference). */
static void arrived(store_t *s, copy_job_t *j)
{
    parla__lock(&s->lock);
    if (parla__data_seg_split(s, j->lo) == 0 && parla__data_seg_split(s, j->hi) == 0) {
        for (size_t i = parla__data_seg_find(s, j->lo); i < s->n_segs && s->segs[i].lo < j->hi; i++) {
            seg_t *g = &s->segs[i];
            g->arriving &= ~bit(j->to);
            if (j->error) {
                /* The copy failed on the device: the destination never got the
                 * bytes, the source (pinned until now) still has them. */
                g->valid = (g->valid & ~bit(j->to)) | bit(j->from);
            }
        }
        parla__data_seg_merge(s);
    }
    parla__unlock(&s->lock);
}

static void job_free(copy_job_t *j)
{
    for (int i = 0; i < j->n_waits; i++)
        parla__dev_event_release(j->waits[i]);
    parla__free(j->waits);
    parla__dev_event_release(j->event);
    parla__free(j);
}

/* One copy of arrival a is done (error: the device's error for it, or 0): the last one enqueues the tasks
 * that wait for a (failing them when a copy failed) and wakes threads in parla__data_arrival_wait. No
 * data lock held (the hooks run here). The caller's reference stays. */
void parla__data_arrival_finish(parla_runtime_t *rt, arrival_t *a, int error)
{
    parla__lock(&a->lock);
    waiter_t *w = NULL;
    if (error && a->error == 0)
        a->error = error;
    error = a->error;
    if (--a->remaining == 0) {
        a->done = true;
        w = a->waiters;
        a->waiters = NULL;
        pthread_cond_broadcast(&a->cond);
    }
    parla__unlock(&a->lock);
    while (w) {
        /* The record belongs to its task: read it before the count drops. */
        waiter_t *next = w->next;
        parla_task_t *t = w->task;
        if (error) /* the task fails instead of running on data that did not arrive */
            atomic_store(&t->ext->copy_error, error);
        if (atomic_fetch_sub(&t->ext->n_waiting, 1) == 1)
            parla__data_rt(rt)->dhooks.arrived(t);
        w = next;
    }
}

static void job_complete(copy_job_t *j)
{
    store_t *s = j->store;
    parla_runtime_t *rt = s->rt;
    arrived(s, j);
    parla__data_unpin(s, j->from, 1); /* the source was pinned while the copy was queued */
    parla__data_unpin(s, j->to, 1);   /* and so was the destination */
    parla__data_arrival_finish(rt, j->arrival, j->error);
    parla__data_arrival_unref(j->arrival);
    parla__data_store_release(j->store);
    job_free(j);
}

/* Starts copy job j on device d's engine. Returns true when it is complete
 * already (host copies); otherwise its event completes it (job_poll). */
static bool job_issue(parla__dev_job_t *job, parla__dev_t *d)
{
    copy_job_t *j = (copy_job_t *)job;
    store_t *s = j->store;
    if (parla__dev_async(d)) {
        /* Queued on a copy stream after the work it depends on; the host
         * does not wait. */
        parla_runtime_t *rt = s->rt;
        void *stream = j->to == d->index ? d->copy_in : d->copy_out;
        int other = j->to == d->index ? j->from : j->to;
        int rc = 0;
        for (int i = 0; i < j->n_waits && rc == 0; i++)
            rc = d->ops->stream_wait_event(d, stream, j->waits[i]->handle);
        j->t0 = parla__graph_rt(rt)->trace ? parla__trace_now_ns() : 0;
        if (other == 0) /* the host buffer is registered once, so the copy does not block */
            parla__dev_host_pin(d, s->copies[0].pieces[0].buf, s->nbytes); /* the CPU's copy: one piece */
        parla__dev_t *to = &parla__dev_devs(rt)->devices[j->to], *from = &parla__dev_devs(rt)->devices[j->from];
        if (rc == 0)
            rc = d->ops->copy_async(to, j->dst, from, j->src, j->hi - j->lo, stream);
        if (rc == 0)
            rc = parla__dev_event_record(d, stream, &j->event);
        if (rc == 0)
            return false;
        /* The device refused: wait for it, then copy synchronously. */
        d->ops->stream_synchronize(d, stream);
        for (int i = 0; i < j->n_waits; i++)
            if (parla__dev_event_done(j->waits[i]) == 0)
                d->ops->event_synchronize(d, j->waits[i]->handle);
    }
    /* Both copies are pinned, so neither piece moves meanwhile. */
    uint64_t t0 = parla__graph_rt(s->rt)->trace ? parla__trace_now_ns() : 0;
    j->error = parla__data_copy_addrs(s->rt, j->to, j->dst, j->from, j->src, j->hi - j->lo);
    if (j->error == 0)
        parla__data_copy_done(s->rt, j->to, j->from, j->lo, j->hi, j->serial, t0);
    return true;
}

/* True when copy job j's work is complete, also when its device reported an
 * error (recorded in j->error). */
static bool job_poll(parla__dev_job_t *job)
{
    copy_job_t *j = (copy_job_t *)job;
    int rc = parla__dev_event_done(j->event);
    if (rc < 0)
        j->error = rc;
    return rc != 0;
}

static void job_finish(parla__dev_job_t *job, bool waited)
{
    copy_job_t *j = (copy_job_t *)job;
    if (waited)
        parla__data_copy_done(j->store->rt, j->to, j->from, j->lo, j->hi, j->serial, j->t0);
    job_complete(j);
}

static const parla__dev_job_ops_t copy_job_ops = {job_issue, job_poll, job_finish};

/* The device whose engine does copy job j: the GPU side of the copy (the
 * destination when both are GPUs). */
static parla__dev_t *copy_job_device(parla_runtime_t *rt, const copy_job_t *j)
{
    return &parla__dev_devs(rt)->devices[j->to != 0 ? j->to : j->from];
}

static void copy_job_submit(parla_runtime_t *rt, copy_job_t *j)
{
    j->job.ops = &copy_job_ops;
    parla__dev_engine_submit(copy_job_device(rt, j), &j->job);
}

/* Registers t as waiting for a (pending) arrival, with its record w. */
void parla__data_arrival_add_waiter(arrival_t *a, parla_task_t *t, waiter_t *w)
{
    w->task = t;
    parla__lock(&a->lock);
    if (!a->done) {
        atomic_fetch_add(&t->ext->n_waiting, 1);
        w->next = a->waiters;
        a->waiters = w;
    }
    parla__unlock(&a->lock);
}

/* Gives the copy jobs planned for store s since plan->mark to s's arrival on
 * device: joins the copies already on their way, or starts a new batch.
 * Checked and counted under one lock: a batch whose last copy finishes
 * meanwhile must not take new copies. s->lock held. */
int parla__data_join_arrival(parla_task_t *t, store_t *s, int device, plan_t *plan)
{
    copy_job_t *before = plan->mark;
    arrival_t *arr = s->copies[device].arriving;
    bool joined = false;
    if (arr) {
        parla__lock(&arr->lock);
        if (!arr->done) {
            arr->remaining += plan->n_jobs_store;
            joined = true;
        }
        parla__unlock(&arr->lock);
    }
    if (!joined) {
        arrival_t *fresh = parla__data_arrival_new(s->rt);
        if (fresh == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot track its copies", parla_task_name(t));
        fresh->remaining = plan->n_jobs_store;
        parla__data_arrival_unref(arr);
        s->copies[device].arriving = arr = fresh;
    }
    for (copy_job_t *j = plan->jobs; j != before; j = (copy_job_t *)j->job.next) {
        atomic_fetch_add(&arr->refs, 1);
        j->arrival = arr;
    }
    plan->mark = plan->jobs;
    plan->n_jobs_store = 0;
    return 0;
}

/* A copy make_valid_locked could not queue as a job (no plan, or no memory
 * for one): made by its caller after dropping the store's lock, with both
 * copies pinned meanwhile (see make_valid). */
typedef struct copy_now {
    int from, to;
    uint64_t lo, hi;
    void *dst;       /* byte lo on `to`, and on `from`: resolved under the lock (the pieces stay while */
    const void *src; /* pinned; the lists of pieces do not, another piece may be added meanwhile) */
    uint64_t writes; /* the store's write count when it was planned */
} copy_now_t;

#define COPY_NOW 1 /* make_valid_locked: *now is to be copied, then call again */

/* Makes d's ranges valid on device (queueing copies from the cheapest valid
 * source on plan) and, for writes, leaves device as the only valid copy.
 * s->lock held. A copy it cannot queue is returned in *now (COPY_NOW) with
 * both copies pinned (so neither piece moves), before its range is marked;
 * the caller copies and calls again. With mode WRITE only, nothing is copied
 * (now may be NULL). */
int parla__data_make_valid_locked(parla_data_t *d, int device, int mode, parla_task_t *t, plan_t *plan, copy_now_t *now)
{
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    int rc = 0;
    if (device != 0) { /* the CPU's copy is always the whole store */
        uint64_t elo, ehi;
        parla__data_extent(d, &elo, &ehi);
        parla__data_task_extent(t, s, device, &elo, &ehi);
        rc = parla__data_ensure_copy(s, device, t, elo, ehi, plan);
        if (rc)
            return rc;
    }
    for (size_t r = 0; r < d->n_ranges; r++) {
        if ((rc = parla__data_seg_split(s, d->ranges[2 * r])) || (rc = parla__data_seg_split(s, d->ranges[2 * r + 1])))
            return parla__error(PARLA_ENOMEM, "cannot split the segment map of a data object");
    }
    for (size_t r = 0; r < d->n_ranges; r++) {
        uint64_t lo = d->ranges[2 * r], hi = d->ranges[2 * r + 1];
        if (lo == hi)
            continue;
        for (size_t i = parla__data_seg_find(s, lo); i < s->n_segs && s->segs[i].lo < hi; i++) {
            seg_t *g = &s->segs[i];
            if ((mode & PARLA_READ) && !(g->valid & bit(device))) {
                /* Cheapest source: the one with the fastest link, preferring
                 * copies that have arrived over ones still in flight. */
                int src = -1;
                bool src_pending = true;
                for (int k = 0; k < parla__dev_devs(rt)->n_devices; k++) {
                    if (!(g->valid & bit(k)))
                        continue;
                    bool pending = (g->arriving & bit(k)) != 0;
                    if (src < 0 || (src_pending && !pending) ||
                        (pending == src_pending && parla__dev_devs(rt)->devices[k].bandwidth > parla__dev_devs(rt)->devices[src].bandwidth)) {
                        src = k;
                        src_pending = pending;
                    }
                }
                if (src < 0)
                    return parla__error(PARLA_EDEVICE, "data range [%llu, %llu) has no valid copy",
                                        (unsigned long long)g->lo, (unsigned long long)g->hi);
                /* One job per pair of pieces the segment spans on the source and here. */
                for (uint64_t x = g->lo; x < g->hi;) {
                    uint64_t dend = 0, send = 0;
                    void *dst = parla__data_addr(&s->copies[device], x, &dend);
                    void *from = parla__data_addr(&s->copies[src], x, &send);
                    if (dst == NULL || from == NULL)
                        return parla__error(PARLA_EDEVICE, "byte %llu of a data object has no allocation on %s",
                                            (unsigned long long)x, parla__dev_devs(rt)->devices[dst ? src : device].name);
                    uint64_t end = g->hi < dend ? g->hi : dend;
                    end = end < send ? end : send;
                    copy_job_t *j = plan ? parla__alloc(rt, sizeof *j) : NULL;
                    if (j != NULL) {
                        /* Queued on a copy engine; the source stays pinned until done. */
                        atomic_fetch_add(&s->refs, 1);
                        *j = (copy_job_t){.store = s, .from = src, .to = device, .lo = x, .hi = end, .dst = dst,
                                          .src = from, .serial = t ? t->serial : UINT64_MAX,
                                          .job.next = (parla__dev_job_t *)plan->jobs};
                        plan->jobs = j;
                        plan->n_jobs_store++;
                        parla__data_pin_locked(s, src);
                        parla__data_pin_locked(s, device);
                        g->arriving |= bit(device);
                    } else {
                        /* Copied by the caller with the lock dropped; the pins keep both pieces
                         * (store pins only, as a write-back's: see evict.c; tasks waiting for room
                         * retry when they go). */
                        s->copies[src].pins++;
                        s->copies[device].pins++;
                        *now = (copy_now_t){.from = src, .to = device, .lo = x, .hi = end, .dst = dst, .src = from,
                                        .writes = s->writes};
                        parla__data_seg_merge(s);
                        return COPY_NOW;
                    }
                    x = end;
                }
                g->valid |= bit(device);
            }
            if (mode & PARLA_WRITE)
                g->valid = bit(device);
        }
    }
    if (mode & PARLA_WRITE)
        s->writes++;
    parla__data_seg_merge(s);
    return 0;
}

/* Makes the copy *now (see make_valid_locked) with s->lock dropped, then marks
 * its bytes valid on the destination, unless the store was written meanwhile
 * (then the next call plans the range again). Entered and left with s->lock
 * held; unpins both copies. */
/* Drops the pins of copy *now (s->lock held); tasks waiting for room on its devices retry when the entry
 * point ends (parla__data_wake_deferred). */
static void unpin_now(store_t *s, const copy_now_t *now)
{
    s->copies[now->from].pins--;
    s->copies[now->to].pins--;
    parla__data_device_unpinned_deferred(s->rt, now->from, 0);
    parla__data_device_unpinned_deferred(s->rt, now->to, 0);
}

static int copy_now(store_t *s, const copy_now_t *now, parla_task_t *t)
{
    parla__unlock(&s->lock);
    if (t)
        parla__graph_host_wait_task(t); /* its source may still be being written */
    uint64_t t0 = parla__graph_rt(s->rt)->trace ? parla__trace_now_ns() : 0;
    int rc = parla__data_copy_addrs(s->rt, now->to, now->dst, now->from, now->src, now->hi - now->lo);
    if (rc == 0)
        parla__data_copy_done(s->rt, now->to, now->from, now->lo, now->hi, t ? t->serial : UINT64_MAX, t0);
    parla__lock(&s->lock);
    unpin_now(s, now);
    if (rc || s->writes != now->writes)
        return rc;
    if (parla__data_seg_split(s, now->lo) || parla__data_seg_split(s, now->hi))
        return parla__error(PARLA_ENOMEM, "cannot split the segment map of a data object");
    for (size_t i = parla__data_seg_find(s, now->lo); i < s->n_segs && s->segs[i].lo < now->hi; i++)
        if (s->segs[i].valid & bit(now->from))
            s->segs[i].valid |= bit(now->to);
    parla__data_seg_merge(s);
    return 0;
}

/* For parla_data_fetch, s->lock held: gives the planned jobs that have an arrival to their engines at once
 * (engine_lock is a leaf). Planned and queued in one hold of the lock, the copies to a device are queued
 * on its engine (one FIFO queue) in the order they were planned: a copy planned later from a newer source
 * (after a task wrote the bytes elsewhere) lands after this one, not under it; and the engine counts each
 * job (the stuck check sees it) from the moment tasks can wait for its arrival. Jobs without one (their
 * arrival could not be made) stay on the plan for queue_jobs, which copies them at once. */
static void submit_joined(parla_runtime_t *rt, plan_t *plan)
{
    copy_job_t *keep = NULL;
    for (copy_job_t *j = plan->jobs, *next; j; j = next) {
        next = (copy_job_t *)j->job.next; /* read first: the engine may free j once it has it */
        if (j->arrival) {
            copy_job_submit(rt, j);
        } else {
            j->job.next = (parla__dev_job_t *)keep;
            keep = j;
        }
    }
    plan->jobs = plan->mark = keep;
}

#define REPLAN 3 /* parla__data_make_valid for a fetch: a copy was made at once, the rest is not planned */

/* make_valid_locked, doing the copies it cannot queue (s->lock held on entry
 * and exit, dropped while one copies). The jobs planned before such a copy are
 * given to the store's arrival first: a task that finds their ranges valid
 * meanwhile waits for them. For a fetch (t NULL), it returns REPLAN after such a
 * copy: a task that conflicts with the fetch may have been submitted with the
 * lock dropped, so the caller checks again before planning the rest (see
 * parla__data_make_valid_now). */
int parla__data_make_valid(parla_data_t *d, int device, int mode, parla_task_t *t, plan_t *plan)
{
    for (;;) {
        copy_now_t now;
        int rc = parla__data_make_valid_locked(d, device, mode, t, plan, &now);
        if (rc != COPY_NOW)
            return rc;
        if (plan && plan->n_jobs_store > 0 && (rc = parla__data_join_arrival(t, d->store, device, plan)) != 0) {
            unpin_now(d->store, &now);
            return rc;
        }
        if (plan && t == NULL) /* a fetch's: queued before the lock is dropped (see submit_joined) */
            submit_joined(d->store->rt, plan);
        if ((rc = copy_now(d->store, &now, t)) != 0)
            return rc;
        if (t == NULL)
            return REPLAN;
    }
}

/* Phase 3 of parla__data_prepare (prepare.c), with no lock held: queues the planned copies on the engines. A job
 * whose arrival could not be made is done here, synchronously. */
static void queue_jobs(parla_runtime_t *rt, parla_task_t *t, plan_t *plan)
{
    while (plan->jobs) {
        copy_job_t *j = plan->jobs;
        plan->jobs = (copy_job_t *)j->job.next;
        if (t && j->arrival && parla__dev_async(copy_job_device(rt, j))) {
            /* The copy waits on the device for the work of the runahead
             * predecessors that may still be writing its source. */
            j->n_waits = parla__graph_task_waits(t, &j->waits);
            if (j->n_waits < 0) {
                j->n_waits = 0;
                parla__graph_host_wait_task(t);
            }
        }
        if (j->arrival) {
            copy_job_submit(rt, j);
        } else {
            if (t)
                parla__graph_host_wait_task(t);
            uint64_t t0 = parla__graph_rt(rt)->trace ? parla__trace_now_ns() : 0;
            j->error = parla__data_copy_addrs(rt, j->to, j->dst, j->from, j->src, j->hi - j->lo);
            if (j->error == 0)
                parla__data_copy_done(rt, j->to, j->from, j->lo, j->hi, j->serial, t0);
            arrived(j->store, j);
            parla__data_unpin(j->store, j->from, 1);
            parla__data_unpin(j->store, j->to, 1);
            parla__data_store_release(j->store);
            job_free(j);
        }
    }
}

void parla__data_queue_jobs(parla_task_t *t, plan_t *plan)
{
    queue_jobs(t->rt, t, plan);
}

/* make_valid for parla_data_fetch (s->lock held): its copies are copy jobs given to the store's arrival on
 * device, as a task's are, so that tasks preparing meanwhile find those bytes arriving and wait for them
 * instead of copying into them too; they are queued on the engines before the lock is dropped (see
 * submit_joined), and the caller waits for the arrival. */
static int fetch_valid(parla_data_t *d, int device, int write)
{
    store_t *s = d->store;
    plan_t plan = {0};
    int rc = parla__data_make_valid(d, device, write ? PARLA_READWRITE : PARLA_READ, NULL, &plan);
    if (plan.n_jobs_store > 0) {
        int jr = parla__data_join_arrival(NULL, s, device, &plan); /* else queue_jobs copies at once */
        rc = rc ? rc : jr;
    }
    submit_joined(s->rt, &plan);
    if (plan.jobs) {
        parla__unlock(&s->lock);
        queue_jobs(s->rt, NULL, &plan);
        parla__lock(&s->lock);
    }
    return rc;
}

int parla__data_make_valid_now(parla_data_t *d, int device, int write)
{
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    /* Copies still on their way to the device are waited for. */
    parla__lock(&s->lock);
    arrival_t *arr = s->copies[device].arriving;
    if (arr)
        atomic_fetch_add(&arr->refs, 1);
    parla__unlock(&s->lock);
    if (arr) {
        parla__data_arrival_wait(arr);
        parla__data_arrival_unref(arr);
    }
    parla__dev_t *dev = &parla__dev_devs(rt)->devices[device];
    bool was = parla__data_outside_begin();
    parla__lock(&s->lock);
    /* Its copies, allocations and evictions are made with the store's lock dropped (make_valid,
     * parla__data_ensure_copy); no other lock is held. Copies that arrive meanwhile (an eviction's
     * write-back to the CPU, copies queued for tasks) are waited for before it returns. */
    int rc;
    for (;;) {
        /* The allocation on device first, which drops the lock: the check below and the planning of the
         * copies then come in one hold of it (the piece stays, and make_valid_locked finds it). */
        if (device != 0) {
            uint64_t lo, hi;
            parla__data_extent(d, &lo, &hi);
            if ((rc = parla__data_ensure_copy(s, device, NULL, lo, hi, NULL)) != 0)
                break;
        }
        /* Planned under the lock that a writer's preparation marks its write under: a conflicting task
         * submitted since the caller's wait may be writing its source; the caller waits for it first. */
        parla_task_t *busy = parla__data_conflict_locked(d, write);
        if (busy) {
            parla__self_t *me = parla__self(); /* the caller, when it is a worker running a task */
            bool own = me && me->rt == rt && me->current == busy;
            parla_task_release(busy);
            if (!own) {
                rc = PARLA__AGAIN;
                break;
            }
        }
        rc = fetch_valid(d, device, write);
        if (rc == REPLAN)
            continue;
        if (rc)
            break;
        arr = s->copies[device].arriving;
        /* A write on a GPU also waits for a write-back to the CPU in flight (see prepare.c mark_writes), and
         * any write for the copies of its bytes still in flight to other devices, which may read the copy
         * the caller is to write (parla__data_arriving_locked). A copy made at once dropped the lock
         * (REPLAN): the check for conflicting tasks comes again before the rest is planned. */
        if (!parla__data_arrival_pending(arr) && write && device != 0)
            arr = s->copies[0].arriving;
        if (parla__data_arrival_pending(arr))
            atomic_fetch_add(&arr->refs, 1);
        else if (!write || parla__data_arriving_locked(d, NULL, &arr, 1) == 0)
            break;
        parla__unlock(&s->lock);
        parla__data_arrival_wait(arr);
        parla__data_arrival_unref(arr);
        parla__lock(&s->lock);
    }
    parla__unlock(&s->lock);
    parla__data_outside_end(was);
    parla__data_wake_deferred();
    if (rc == PARLA_EBUSY)
        rc = parla__error(PARLA_ERESOURCE, "parla_data_fetch: %s is full of copies in use by running tasks, or "
                          "a running task uses an allocation of this data there that the fetch would merge with",
                          dev->name);
    return rc;
}
