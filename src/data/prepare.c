/* prepare.c: the preparation of a task's data before it runs
 * (parla__data_prepare), by phase: the devices of its accesses, room on each
 * of its GPUs (phase 0), planning the reads (1), marking the writes (2),
 * queueing the copies (3, transfer.c), registering the task as a waiter of the
 * copies still arriving (4), and undoing the pins of a failed preparation. */
#include "data/impl.h"

/* The piece access i of t asks for on its device (the extent of the task's accesses to that store for
 * that device, parla__data_task_extent) in [*lo, *hi); true when i is the first access asking for it
 * (accesses sharing a piece count it once). */
static bool first_use(const parla_task_t *t, int i, uint64_t *lo, uint64_t *hi)
{
    const parla__graph_task_ext_t *x = t->ext;
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
    parla__graph_task_ext_t *x = t->ext;
    *mask = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__graph_access_t *a = &x->accesses[i];
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

/* 0 when t's data for device d can all be there at once: the copies it lacks
 * fit in the room left after evicting every unpinned copy of other data.
 * Checked before anything is allocated or copied, so a task that cannot have
 * all its data takes none (tasks that each took part of the room would keep
 * evicting each other's copies). Else PARLA_EBUSY (wait for room), or
 * PARLA_ERESOURCE when waiting cannot help: nothing on d is pinned and no
 * other task reserves memory there, so no unpin or release will free room,
 * and what fills d is t's own data (allocations of the same arrays, which
 * its preparation does not evict). d->acquire_lock held; records the device's
 * unpin epoch for parla__data_wait_for_room. */
static int room_for(parla_task_t *t, parla__dev_t *d)
{
    parla__graph_task_ext_t *x = t->ext;
    int device = d->index;
    int64_t need = 0; /* may be negative: a merge that writes back and drops pieces (parla__data_piece_need) */
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
    int64_t cap = (int64_t)d->memory_capacity;
    for (parla__dev_copy_t *c = d->lru_head; c && (int64_t)(parla__data_used_locked(d) - evictable) + need > cap; c = c->next) {
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            continue;
        bool mine = false;
        for (int i = 0; i < x->n_accesses && !mine; i++)
            mine = x->accesses[i].data->store == c->store && access_device(t, &x->accesses[i]) == device;
        if (!mine)
            evictable += c->bytes;
    }
    uint64_t held = parla__data_used_locked(d) - evictable;
    bool fits = (int64_t)held + need <= cap;
    bool never = !fits && d->n_pins == 0 && d->memory_capacity - d->memory_free <= t->memory;
    pthread_mutex_unlock(&d->lock);
    if (never)
        return parla__error(PARLA_ERESOURCE,
                            "task %s needs %lld more bytes for its data on %s, and %llu of its capacity of %llu bytes "
                            "stay held by other allocations of the same arrays there (which the task does not "
                            "evict)%s: its data cannot fit there", parla_task_name(t), (long long)need, d->name,
                            (unsigned long long)held, (unsigned long long)d->memory_capacity,
                            t->memory ? " and by the memory it reserves" : "");
    return fits ? 0 : PARLA_EBUSY;
}

/* Phase 0 of parla__data_prepare on one GPU of the task: its data there must
 * fit on the device at all (PARLA_ERESOURCE, also when room_for finds that
 * waiting cannot free room), and room must be free now (PARLA_EBUSY). On success the device's acquire_lock is held. */
static int check_capacity(parla_task_t *t, parla__dev_t *d)
{
    parla__graph_task_ext_t *x = t->ext;
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
    int rc = room_for(t, d);
    if (rc)
        pthread_mutex_unlock(&d->acquire_lock);
    return rc;
}

/* Phase 0 on every GPU in gpus, in ascending index order (the order of
 * several acquire_locks). On success their acquire_locks are held; on failure
 * none is, and t->ext->room_slot names the device that lacked room. */
static int check_capacities(parla_task_t *t, uint64_t gpus)
{
    parla__dev_devs_t *devs = parla__dev_devs(t->rt);
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

/* Phase 1: for each access, on its device: allocate, queue the copies of what
 * is read (or copy at once when a job cannot be allocated) and pin; *wait[i]
 * is the arrival access i waits for (a reference), if any. Returns 0, or the
 * error with *n_pinned the accesses pinned before the failing one (and
 * room_slot its device's position). */
static int plan_reads(parla_task_t *t, plan_t *plan, arrival_t **waits, int *n_pinned)
{
    parla__graph_task_ext_t *x = t->ext;
    int rc = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__graph_access_t *a = &x->accesses[i];
        store_t *s = a->data->store;
        int device = access_device(t, a);
        pthread_mutex_lock(&s->lock);
        plan->mark = plan->jobs;
        plan->n_jobs_store = 0;
        rc = parla__data_make_valid(a->data, device, a->mode & PARLA_READ, t, plan);
        if (rc == 0) {
            s->copies[device].pins++;
            if (plan->n_jobs_store > 0)
                rc = parla__data_join_arrival(t, s, device, plan);
            arrival_t *arr = s->copies[device].arriving;
            if (rc == 0 && parla__data_arrival_pending(arr)) {
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
    parla__graph_task_ext_t *x = t->ext;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__graph_access_t *a = &x->accesses[i];
        if (!(a->mode & PARLA_WRITE))
            continue;
        store_t *s = a->data->store;
        pthread_mutex_lock(&s->lock);
        parla__data_make_valid_locked(a->data, access_device(t, a), PARLA_WRITE, t, NULL, NULL);
        pthread_mutex_unlock(&s->lock);
    }
    for (uint64_t m = gpus; m; m &= m - 1) {
        int dev = lowest(m);
        parla__dev_t *d = &parla__dev_devs(t->rt)->devices[dev];
        pthread_mutex_lock(&d->lock);
        for (int i = 0; i < x->n_accesses; i++) {
            if (access_device(t, &x->accesses[i]) != dev)
                continue;
            d->n_pins++;
            parla__dev_copy_t *c = &x->accesses[i].data->store->copies[dev];
            if (c->n_pieces > 0)
                parla__data_lru_touch(d, c);
        }
        pthread_mutex_unlock(&d->lock);
    }
}

/* Phase 4: registers t as a waiter of each pending arrival (when the
 * preparation succeeded) and drops the references of waits. */
static void register_waiters(parla_task_t *t, arrival_t **waits, int rc)
{
    parla__graph_task_ext_t *x = t->ext;
    atomic_store(&x->n_waiting, 1); /* the hold while registering */
    for (int i = 0; waits && i < x->n_accesses; i++) {
        if (waits[i] == NULL)
            continue;
        if (rc == 0)
            parla__data_arrival_add_waiter(waits[i], t, &x->wait_nodes[i]);
        parla__data_arrival_unref(waits[i]);
    }
}

int parla__data_prepare(parla_task_t *t)
{
    parla__graph_task_ext_t *x = t->ext;
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
        pthread_mutex_unlock(&parla__dev_devs(rt)->devices[lowest(m)].acquire_lock);
    parla__data_queue_jobs(t, &plan);
    register_waiters(t, waits, rc);
    parla__free(waits);
    if (rc)
        return rc;
    x->prepared = true;
    return atomic_fetch_sub(&x->n_waiting, 1) == 1 ? 0 : PARLA__PENDING;
}
