/* transfer.c: copies between devices: copy jobs on the device engines,
 * arrivals that tasks wait for, and the preparation of a task's data before it
 * runs (parla__data_prepare). */
#include "data/impl.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arrival;

/* -------------------------------------------------------------- residency -- */


/* Counts a copy of [lo, hi) from device `from` to `to` that started at t0 (ns)
 * in the devices' totals and the trace. */
void parla__data_copy_done(parla_runtime_t *rt, int to, int from, uint64_t lo, uint64_t hi, uint64_t serial, uint64_t t0)
{
    atomic_fetch_add_explicit(&parla__devs(rt)->devices[to].bytes_in, hi - lo, memory_order_relaxed);
    atomic_fetch_add_explicit(&parla__devs(rt)->devices[from].bytes_out, hi - lo, memory_order_relaxed);
    if (parla__graph_rt(rt)->trace)
        parla__trace_copy(parla__graph_rt(rt)->trace, serial, t0, parla__now_ns(), to, from, hi - lo);
}

/* Copies n bytes from src on device `from` to dst on device `to`; returns when done. */
int parla__data_copy_addrs(parla_runtime_t *rt, int to, void *dst, int from, const void *src, uint64_t n)
{
    parla__device_t *dt = &parla__devs(rt)->devices[to], *df = &parla__devs(rt)->devices[from];
    /* A CUDA device does the copy when one side is CUDA. */
    parla__device_t *engine = dt->is_cuda ? dt : df;
    return engine->ops->copy(dt, dst, df, src, n);
}

/* Copies bytes [lo, hi) of store s from device `from` to device `to` (one copy per pair of pieces the range
 * spans); returns when done. s->lock held. */
int parla__data_copy_range(store_t *s, int to, int from, uint64_t lo, uint64_t hi, uint64_t serial)
{
    parla_runtime_t *rt = s->rt;
    uint64_t t0 = parla__graph_rt(rt)->trace ? parla__now_ns() : 0;
    for (uint64_t x = lo; x < hi;) {
        uint64_t dend = 0, send = 0;
        void *dst = parla__data_addr(&s->copies[to], x, &dend);
        const void *src = parla__data_addr(&s->copies[from], x, &send);
        if (dst == NULL || src == NULL)
            return parla__error(PARLA_EDEVICE, "byte %llu of a data object has no allocation on %s",
                                (unsigned long long)x, parla__devs(rt)->devices[dst ? from : to].name);
        uint64_t end = hi < dend ? hi : dend;
        end = end < send ? end : send;
        int rc = parla__data_copy_addrs(rt, to, dst, from, src, end - x);
        if (rc)
            return rc;
        x = end;
    }
    parla__data_copy_done(rt, to, from, lo, hi, serial, t0);
    return 0;
}

static arrival_t *arrival_new(parla_runtime_t *rt)
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

static bool arrival_pending(arrival_t *a)
{
    if (a == NULL)
        return false;
    pthread_mutex_lock(&a->lock);
    bool pending = !a->done;
    pthread_mutex_unlock(&a->lock);
    return pending;
}

/* Blocks the calling thread (outside tasks) until the copies have arrived. */
void parla__data_arrival_wait(arrival_t *a)
{
    pthread_mutex_lock(&a->lock);
    while (!a->done)
        pthread_cond_wait(&a->cond, &a->lock);
    pthread_mutex_unlock(&a->lock);
}

/* Marks job j's bytes as arrived: exactly [lo, hi), since segments may have
 * been merged or split since it was planned (a neighbouring range may still be
 * on its way). Without memory to split, the mark stays (only a preference). */
static void arrived(store_t *s, copy_job_t *j)
{
    pthread_mutex_lock(&s->lock);
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
    pthread_mutex_unlock(&s->lock);
}

static void job_free(copy_job_t *j)
{
    for (int i = 0; i < j->n_waits; i++)
        parla__event_release(j->waits[i]);
    parla__free(j->waits);
    parla__event_release(j->event);
    parla__free(j);
}

static void job_complete(copy_job_t *j)
{
    store_t *s = j->store;
    parla_runtime_t *rt = s->rt;
    arrived(s, j);
    parla__data_unpin(s, j->from, 1); /* the source was pinned while the copy was queued */
    parla__data_unpin(s, j->to, 1);   /* and so was the destination */
    arrival_t *a = j->arrival;
    pthread_mutex_lock(&a->lock);
    waiter_t *w = NULL;
    if (j->error && a->error == 0)
        a->error = j->error;
    int error = a->error;
    if (--a->remaining == 0) {
        a->done = true;
        w = a->waiters;
        a->waiters = NULL;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
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
    parla__data_arrival_unref(a);
    parla__data_store_release(j->store);
    job_free(j);
}

/* Starts copy job j on device d's engine. Returns true when it is complete
 * already (host copies); otherwise its event completes it (job_poll). */
static bool job_issue(parla__job_t *job, parla__device_t *d)
{
    copy_job_t *j = (copy_job_t *)job;
    store_t *s = j->store;
    if (parla__device_async(d)) {
        /* Queued on a copy stream after the work it depends on; the host
         * does not wait. */
        parla_runtime_t *rt = s->rt;
        void *stream = j->to == d->index ? d->copy_in : d->copy_out;
        int other = j->to == d->index ? j->from : j->to;
        int rc = 0;
        for (int i = 0; i < j->n_waits && rc == 0; i++)
            rc = d->ops->stream_wait_event(d, stream, j->waits[i]->handle);
        j->t0 = parla__graph_rt(rt)->trace ? parla__now_ns() : 0;
        if (other == 0) /* the host buffer is registered once, so the copy does not block */
            parla__host_pin(d, s->copies[0].pieces[0].buf, s->nbytes); /* the CPU's copy: one piece */
        parla__device_t *to = &parla__devs(rt)->devices[j->to], *from = &parla__devs(rt)->devices[j->from];
        if (rc == 0)
            rc = d->ops->copy_async(to, j->dst, from, j->src, j->hi - j->lo, stream);
        if (rc == 0)
            rc = parla__event_record(d, stream, &j->event);
        if (rc == 0)
            return false;
        /* The device refused: wait for it, then copy synchronously. */
        d->ops->stream_synchronize(d, stream);
        for (int i = 0; i < j->n_waits; i++)
            if (parla__event_done(j->waits[i]) == 0)
                d->ops->event_synchronize(d, j->waits[i]->handle);
    }
    /* Both copies are pinned, so neither piece moves meanwhile. */
    uint64_t t0 = parla__graph_rt(s->rt)->trace ? parla__now_ns() : 0;
    j->error = parla__data_copy_addrs(s->rt, j->to, j->dst, j->from, j->src, j->hi - j->lo);
    if (j->error == 0)
        parla__data_copy_done(s->rt, j->to, j->from, j->lo, j->hi, j->serial, t0);
    return true;
}

/* True when copy job j's work is complete, also when its device reported an
 * error (recorded in j->error). */
static bool job_poll(parla__job_t *job)
{
    copy_job_t *j = (copy_job_t *)job;
    int rc = parla__event_done(j->event);
    if (rc < 0)
        j->error = rc;
    return rc != 0;
}

static void job_finish(parla__job_t *job, bool waited)
{
    copy_job_t *j = (copy_job_t *)job;
    if (waited)
        parla__data_copy_done(j->store->rt, j->to, j->from, j->lo, j->hi, j->serial, j->t0);
    job_complete(j);
}

static const parla__job_ops_t copy_job_ops = {job_issue, job_poll, job_finish};

/* The device whose engine does copy job j: the GPU side of the copy (the
 * destination when both are GPUs). */
static parla__device_t *copy_job_device(parla_runtime_t *rt, const copy_job_t *j)
{
    return &parla__devs(rt)->devices[j->to != 0 ? j->to : j->from];
}

static void copy_job_submit(parla_runtime_t *rt, copy_job_t *j)
{
    j->job.ops = &copy_job_ops;
    parla__engine_submit(copy_job_device(rt, j), &j->job);
}

/* Registers t as waiting for a (pending) arrival, with its record w. */
static void arrival_add_waiter(arrival_t *a, parla_task_t *t, waiter_t *w)
{
    w->task = t;
    pthread_mutex_lock(&a->lock);
    if (!a->done) {
        atomic_fetch_add(&t->ext->n_waiting, 1);
        w->next = a->waiters;
        a->waiters = w;
    }
    pthread_mutex_unlock(&a->lock);
}

/* A copy make_valid_locked could not queue as a job (no plan, or no memory
 * for one): made by its caller after dropping the store's lock, with both
 * copies pinned meanwhile (see make_valid). */
typedef struct copy_now {
    int from, to;
    uint64_t lo, hi;
    uint64_t writes; /* the store's write count when it was planned */
} copy_now_t;

#define COPY_NOW 1 /* make_valid_locked: *now is to be copied, then call again */

/* Makes d's ranges valid on device (queueing copies from the cheapest valid
 * source on plan) and, for writes, leaves device as the only valid copy.
 * s->lock held. A copy it cannot queue is returned in *now (COPY_NOW) with
 * both copies pinned (so neither piece moves), before its range is marked;
 * the caller copies and calls again. With mode WRITE only, nothing is copied
 * (now may be NULL). */
static int make_valid_locked(parla_data_t *d, int device, int mode, parla_task_t *t, plan_t *plan, copy_now_t *now)
{
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    int rc = 0;
    if (device != 0) { /* the CPU's copy is always the whole store */
        uint64_t elo, ehi;
        parla__data_extent(d, &elo, &ehi);
        parla__data_task_extent(t, s, device, &elo, &ehi);
        rc = parla__data_ensure_copy(s, device, t, elo, ehi);
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
                for (int k = 0; k < parla__devs(rt)->n_devices; k++) {
                    if (!(g->valid & bit(k)))
                        continue;
                    bool pending = (g->arriving & bit(k)) != 0;
                    if (src < 0 || (src_pending && !pending) ||
                        (pending == src_pending && parla__devs(rt)->devices[k].bandwidth > parla__devs(rt)->devices[src].bandwidth)) {
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
                                            (unsigned long long)x, parla__devs(rt)->devices[dst ? src : device].name);
                    uint64_t end = g->hi < dend ? g->hi : dend;
                    end = end < send ? end : send;
                    copy_job_t *j = plan ? parla__alloc(rt, sizeof *j) : NULL;
                    if (j != NULL) {
                        /* Queued on a copy engine; the source stays pinned until done. */
                        atomic_fetch_add(&s->refs, 1);
                        *j = (copy_job_t){.store = s, .from = src, .to = device, .lo = x, .hi = end, .dst = dst,
                                          .src = from, .serial = t ? t->serial : UINT64_MAX,
                                          .job.next = (parla__job_t *)plan->jobs};
                        plan->jobs = j;
                        plan->n_jobs_store++;
                        parla__data_pin_locked(s, src);
                        parla__data_pin_locked(s, device);
                        g->arriving |= bit(device);
                    } else {
                        /* Copied by the caller with the lock dropped; the pins keep both pieces. */
                        s->copies[src].pins++;
                        s->copies[device].pins++;
                        *now = (copy_now_t){.from = src, .to = device, .lo = x, .hi = end, .writes = s->writes};
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
static int copy_now(store_t *s, const copy_now_t *now, parla_task_t *t)
{
    pthread_mutex_unlock(&s->lock);
    if (t)
        parla__host_wait_task(t); /* its source may still be being written */
    int rc = parla__data_copy_range(s, now->to, now->from, now->lo, now->hi, t ? t->serial : UINT64_MAX);
    pthread_mutex_lock(&s->lock);
    s->copies[now->from].pins--;
    s->copies[now->to].pins--;
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

static int join_arrival(parla_task_t *t, store_t *s, int device, plan_t *plan);

/* make_valid_locked, doing the copies it cannot queue (s->lock held on entry
 * and exit, dropped while one copies). The jobs planned before such a copy are
 * given to the store's arrival first: a task that finds their ranges valid
 * meanwhile waits for them. */
static int make_valid(parla_data_t *d, int device, int mode, parla_task_t *t, plan_t *plan)
{
    for (;;) {
        copy_now_t now;
        int rc = make_valid_locked(d, device, mode, t, plan, &now);
        if (rc != COPY_NOW)
            return rc;
        if (plan && plan->n_jobs_store > 0 && (rc = join_arrival(t, d->store, device, plan)) != 0) {
            d->store->copies[now.from].pins--;
            d->store->copies[now.to].pins--;
            return rc;
        }
        if ((rc = copy_now(d->store, &now, t)) != 0)
            return rc;
    }
}

/* The piece access i of t asks for on its device (the extent of the task's accesses to that store for
 * that device, parla__data_task_extent) in [*lo, *hi); true when i is the first access asking for it
 * (accesses sharing a piece count it once). */
static bool first_use(const parla_task_t *t, int i, uint64_t *lo, uint64_t *hi)
{
    const parla__task_ext_t *x = t->ext;
    const store_t *s = x->accesses[i].data->store;
    int device = access_device(t, &x->accesses[i]);
    parla__data_extent(x->accesses[i].data, lo, hi);
    if (*lo == *hi)
        return false;
    parla__data_task_extent(t, s, device, lo, hi);
    for (int j = 0; j < i; j++) {
        uint64_t a, b;
        if (x->accesses[j].data->store != s || access_device(t, &x->accesses[j]) != device)
            continue;
        parla__data_extent(x->accesses[j].data, &a, &b);
        if (a < b && a >= *lo && b <= *hi)
            return false;
    }
    return true;
}

static const char *mode_name(int mode)
{
    return mode == PARLA_READ ? "read" : mode == PARLA_WRITE ? "write" : "read-write";
}

/* The devices t's accesses are for (a mask of device indices). An access for a
 * position beyond the devices t is mapped to fails the task (PARLA_EINVAL). */
static int access_devices(parla_task_t *t, uint64_t *mask)
{
    parla__task_ext_t *x = t->ext;
    *mask = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__access_t *a = &x->accesses[i];
        if (a->slot >= t->n_devices)
            return parla__error(PARLA_EINVAL,
                                "task %s: access %d (%s) is for the task's device at position %d, but the task "
                                "runs on %d device%s (positions 0..%d)", parla_task_name(t), i, mode_name(a->mode),
                                a->slot, t->n_devices, t->n_devices == 1 ? "" : "s", t->n_devices - 1);
        *mask |= bit(access_device(t, a));
    }
    return 0;
}

/* The position of device in t's devices (the device is one of them). */
static int slot_of(const parla_task_t *t, int device)
{
    int k = 0;
    while (k < t->n_devices - 1 && t->devices[k] != device)
        k++;
    return k;
}

/* True when t's data for device d can all be there at once: the copies it
 * lacks fit in the room left after evicting every unpinned copy of other data.
 * Checked before anything is allocated or copied, so a task that cannot have
 * all its data takes none (tasks that each took part of the room would keep
 * evicting each other's copies). d->acquire_lock held; records the device's
 * unpin epoch for parla__data_wait_for_room. */
static bool room_for(parla_task_t *t, parla__device_t *d)
{
    parla__task_ext_t *x = t->ext;
    int device = d->index;
    uint64_t need = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        store_t *si = x->accesses[i].data->store;
        uint64_t lo, hi;
        if (access_device(t, &x->accesses[i]) != device || !first_use(t, i, &lo, &hi))
            continue;
        pthread_mutex_lock(&si->lock);
        need += parla__data_piece_need(&si->copies[device], lo, hi);
        pthread_mutex_unlock(&si->lock);
    }
    pthread_mutex_lock(&d->lock);
    x->data_epoch[slot_of(t, device)] = d->unpin_epoch;
    uint64_t evictable = 0;
    for (parla__copy_t *c = d->lru_head; c && parla__data_used_locked(d) - evictable + need > d->memory_capacity; c = c->next) {
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            continue;
        bool mine = false;
        for (int i = 0; i < x->n_accesses && !mine; i++)
            mine = x->accesses[i].data->store == c->store && access_device(t, &x->accesses[i]) == device;
        if (!mine)
            evictable += c->bytes;
    }
    bool fits = parla__data_used_locked(d) - evictable + need <= d->memory_capacity;
    pthread_mutex_unlock(&d->lock);
    return fits;
}

/* Phase 0 of parla__data_prepare on one GPU of the task: its data there must
 * fit on the device at all (PARLA_ERESOURCE), and room must be free now
 * (PARLA_EBUSY). On success the device's acquire_lock is held. */
static int check_capacity(parla_task_t *t, parla__device_t *d)
{
    parla__task_ext_t *x = t->ext;
    /* A task whose data cannot fit even on an empty device fails. */
    uint64_t total = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        uint64_t lo, hi;
        if (access_device(t, &x->accesses[i]) == d->index && first_use(t, i, &lo, &hi))
            total += hi - lo;
    }
    if (total + t->memory > d->memory_capacity) /* one account: its reservation too */
        return parla__error(PARLA_ERESOURCE,
                            "task %s needs %llu bytes of data and reserves %llu bytes on %s, more than its "
                            "capacity of %llu bytes", parla_task_name(t), (unsigned long long)total,
                            (unsigned long long)t->memory, d->name, (unsigned long long)d->memory_capacity);
    pthread_mutex_lock(&d->acquire_lock);
    if (!room_for(t, d)) {
        pthread_mutex_unlock(&d->acquire_lock);
        return PARLA_EBUSY;
    }
    return 0;
}

/* Phase 0 on every GPU in gpus, in ascending index order (the order of
 * several acquire_locks). On success their acquire_locks are held; on failure
 * none is, and t->ext->room_slot names the device that lacked room. */
static int check_capacities(parla_task_t *t, uint64_t gpus)
{
    parla__devs_t *devs = parla__devs(t->rt);
    uint64_t held = 0;
    for (uint64_t m = gpus; m; m &= m - 1) {
        int dev = lowest(m);
        int rc = check_capacity(t, &devs->devices[dev]);
        if (rc) {
            t->ext->room_slot = slot_of(t, dev);
            for (uint64_t h = held; h; h &= h - 1)
                pthread_mutex_unlock(&devs->devices[lowest(h)].acquire_lock);
            return rc;
        }
        held |= bit(dev);
    }
    return 0;
}

/* Gives the copy jobs planned for store s since plan->mark to s's arrival on
 * device: joins the copies already on their way, or starts a new batch.
 * Checked and counted under one lock: a batch whose last copy finishes
 * meanwhile must not take new copies. s->lock held. */
static int join_arrival(parla_task_t *t, store_t *s, int device, plan_t *plan)
{
    copy_job_t *before = plan->mark;
    arrival_t *arr = s->copies[device].arriving;
    bool joined = false;
    if (arr) {
        pthread_mutex_lock(&arr->lock);
        if (!arr->done) {
            arr->remaining += plan->n_jobs_store;
            joined = true;
        }
        pthread_mutex_unlock(&arr->lock);
    }
    if (!joined) {
        arrival_t *fresh = arrival_new(s->rt);
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

/* Phase 1: for each access, on its device: allocate, queue the copies of what
 * is read (or copy at once when a job cannot be allocated) and pin; *wait[i]
 * is the arrival access i waits for (a reference), if any. Returns 0, or the
 * error with *n_pinned the accesses pinned before the failing one (and
 * room_slot its device's position). */
static int plan_reads(parla_task_t *t, plan_t *plan, arrival_t **waits, int *n_pinned)
{
    parla__task_ext_t *x = t->ext;
    int rc = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__access_t *a = &x->accesses[i];
        store_t *s = a->data->store;
        int device = access_device(t, a);
        pthread_mutex_lock(&s->lock);
        plan->mark = plan->jobs;
        plan->n_jobs_store = 0;
        rc = make_valid(a->data, device, a->mode & PARLA_READ, t, plan);
        if (rc == 0) {
            s->copies[device].pins++;
            if (plan->n_jobs_store > 0)
                rc = join_arrival(t, s, device, plan);
            arrival_t *arr = s->copies[device].arriving;
            if (rc == 0 && arrival_pending(arr)) {
                atomic_fetch_add(&arr->refs, 1);
                waits[i] = arr;
            }
            if (rc != 0)
                s->copies[device].pins--;
        }
        pthread_mutex_unlock(&s->lock);
        if (rc != 0) {
            *n_pinned = i;
            x->room_slot = a->slot;
            return rc;
        }
    }
    *n_pinned = x->n_accesses;
    return 0;
}

/* Phase 2: marks the writes (the access's device becomes the only valid copy
 * of what is written), counts the pins on each GPU and refreshes their LRU
 * order (one device lock at a time). Reads come first so that a range both
 * read (through one declaration) and written (through another) is copied in. */
static void mark_writes(parla_task_t *t, uint64_t gpus)
{
    parla__task_ext_t *x = t->ext;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__access_t *a = &x->accesses[i];
        if (!(a->mode & PARLA_WRITE))
            continue;
        store_t *s = a->data->store;
        pthread_mutex_lock(&s->lock);
        make_valid_locked(a->data, access_device(t, a), PARLA_WRITE, t, NULL, NULL);
        pthread_mutex_unlock(&s->lock);
    }
    for (uint64_t m = gpus; m; m &= m - 1) {
        int dev = lowest(m);
        parla__device_t *d = &parla__devs(t->rt)->devices[dev];
        pthread_mutex_lock(&d->lock);
        for (int i = 0; i < x->n_accesses; i++) {
            if (access_device(t, &x->accesses[i]) != dev)
                continue;
            d->n_pins++;
            parla__copy_t *c = &x->accesses[i].data->store->copies[dev];
            if (c->n_pieces > 0)
                parla__data_lru_touch(d, c);
        }
        pthread_mutex_unlock(&d->lock);
    }
}

/* Phase 3, with no lock held: queues the planned copies on the engines. A job
 * whose arrival could not be made is done here, synchronously. */
static void queue_jobs(parla_task_t *t, plan_t *plan)
{
    parla_runtime_t *rt = t->rt;
    while (plan->jobs) {
        copy_job_t *j = plan->jobs;
        plan->jobs = (copy_job_t *)j->job.next;
        if (j->arrival && parla__device_async(copy_job_device(rt, j))) {
            /* The copy waits on the device for the work of the runahead
             * predecessors that may still be writing its source. */
            j->n_waits = parla__task_waits(t, &j->waits);
            if (j->n_waits < 0) {
                j->n_waits = 0;
                parla__host_wait_task(t);
            }
        }
        if (j->arrival) {
            copy_job_submit(rt, j);
        } else {
            parla__host_wait_task(t);
            uint64_t t0 = parla__graph_rt(rt)->trace ? parla__now_ns() : 0;
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

/* Phase 4: registers t as a waiter of each pending arrival (when the
 * preparation succeeded) and drops the references of waits. */
static void register_waiters(parla_task_t *t, arrival_t **waits, int rc)
{
    parla__task_ext_t *x = t->ext;
    atomic_store(&x->n_waiting, 1); /* the hold while registering */
    for (int i = 0; waits && i < x->n_accesses; i++) {
        if (waits[i] == NULL)
            continue;
        if (rc == 0)
            arrival_add_waiter(waits[i], t, &x->wait_nodes[i]);
        parla__data_arrival_unref(waits[i]);
    }
}

int parla__data_prepare(parla_task_t *t)
{
    parla__task_ext_t *x = t->ext;
    parla_runtime_t *rt = t->rt;
    uint64_t used;
    int rc = access_devices(t, &used);
    if (rc)
        return rc;
    uint64_t gpus = used & ~bit(0);
    if ((rc = check_capacities(t, gpus)) != 0)
        return rc;
    plan_t plan = {0};
    arrival_t **waits = parla__calloc(rt, (size_t)x->n_accesses, sizeof *waits);
    if (x->wait_nodes == NULL)
        x->wait_nodes = parla__calloc(rt, (size_t)x->n_accesses, sizeof *x->wait_nodes);
    int n_pinned = 0;
    if (waits == NULL || x->wait_nodes == NULL)
        rc = parla__error(PARLA_ENOMEM, "task %s: cannot prepare its data", parla_task_name(t));
    else
        rc = plan_reads(t, &plan, waits, &n_pinned);
    if (rc == 0)
        mark_writes(t, gpus);
    else
        /* Undo the pins of the accesses prepared before the failure; their
         * queued copies still run (the ranges are marked valid there). */
        parla__data_unpin_accesses(t, n_pinned);
    for (uint64_t m = gpus; m; m &= m - 1)
        pthread_mutex_unlock(&parla__devs(rt)->devices[lowest(m)].acquire_lock);
    queue_jobs(t, &plan);
    register_waiters(t, waits, rc);
    parla__free(waits);
    if (rc)
        return rc;
    x->prepared = true;
    return atomic_fetch_sub(&x->n_waiting, 1) == 1 ? 0 : PARLA__PENDING;
}

int parla__data_make_valid_now(parla_data_t *d, int device, int write)
{
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    /* Copies still on their way to the device are waited for. */
    pthread_mutex_lock(&s->lock);
    arrival_t *arr = s->copies[device].arriving;
    if (arr)
        atomic_fetch_add(&arr->refs, 1);
    pthread_mutex_unlock(&s->lock);
    if (arr) {
        parla__data_arrival_wait(arr);
        parla__data_arrival_unref(arr);
    }
    parla__device_t *dev = &parla__devs(rt)->devices[device];
    if (device != 0)
        pthread_mutex_lock(&dev->acquire_lock);
    pthread_mutex_lock(&s->lock);
    /* Its copies are made with the store's lock dropped (make_valid). */
    int rc = make_valid(d, device, write ? PARLA_READWRITE : PARLA_READ, NULL, NULL);
    pthread_mutex_unlock(&s->lock);
    if (device != 0)
        pthread_mutex_unlock(&dev->acquire_lock);
    if (rc == PARLA_EBUSY)
        rc = parla__error(PARLA_ERESOURCE, "parla_data_fetch: %s is full of copies in use by running tasks, or "
                          "a running task uses an allocation of this data there that the fetch would merge with",
                          dev->name);
    return rc;
}
