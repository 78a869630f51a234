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

/* True when copy c (on device) is of a store t accesses there (its preparation does not evict it). */
static bool own_copy(const parla_task_t *t, const parla__dev_copy_t *c, int device)
{
    const parla__graph_task_ext_t *x = t->ext;
    for (int i = 0; i < x->n_accesses; i++)
        if (x->accesses[i].data->store == c->store && access_device(t, &x->accesses[i]) == device)
            return true;
    return false;
}

/* For room_for when t's data does not fit on d after evicting `evictable` bytes (every unpinned copy of
 * other data), d's lock held: true when no unpin, release or given-back claim can free room. Nothing on
 * d is pinned (by tasks, write-backs or copies made at once) or claimed, no other task reserves memory
 * there, and every resident byte not evictable is in t's own copies (none allocated or freed meanwhile). */
static bool never_fits_locked(const parla_task_t *t, const parla__dev_t *d, uint64_t evictable)
{
    if (d->n_pins != 0 || d->claimed != 0 || d->memory_capacity - d->memory_free > t->memory)
        return false;
    uint64_t own = 0;
    for (const parla__dev_copy_t *c = d->lru_head; c; c = c->next) {
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            return false;
        if (own_copy(t, c, d->index))
            own += c->bytes;
    }
    return d->resident == evictable + own;
}

/* 0 when t's data for device d can all be there at once: the copies it lacks
 * fit in the room left after evicting every unpinned copy of other data.
 * Checked before anything is allocated or copied, so a task that cannot have
 * all its data takes none (tasks that each took part of the room would keep
 * evicting each other's copies). The room it lacks is then claimed at once, in
 * the device's account (claimed), under the device lock that the check holds:
 * later checks count it, and the allocations of plan_reads take from it
 * (plan->claim), with no lock held across them. Else PARLA_EBUSY (wait for
 * room), or PARLA_ERESOURCE when waiting cannot help: what fills d besides the
 * evictable copies is t's own data (allocations of the same arrays, which its
 * preparation does not evict) and its own reservation, nothing on d is pinned
 * or claimed and no other task reserves memory there, so no unpin, release or
 * given-back claim will free room. Records the device's unpin epoch for
 * parla__data_wait_for_room (a claim given back bumps it). */
static int room_for(parla_task_t *t, parla__dev_t *d, plan_t *plan)
{
    parla__graph_task_ext_t *x = t->ext;
    int device = d->index;
    int64_t need = 0; /* may be negative: a merge that writes back and drops pieces (parla__data_piece_need) */
    for (int i = 0; i < x->n_accesses; i++) {
        store_t *si = x->accesses[i].data->store;
        uint64_t lo, hi;
        if (access_device(t, &x->accesses[i]) != device || !first_use(t, i, &lo, &hi))
            continue;
        parla__lock(&si->lock);
        need += parla__data_piece_need(&si->copies[device], lo, hi);
        parla__unlock(&si->lock);
    }
    parla__lock(&d->lock);
    x->data_epoch[slot_of(t, device)] = d->unpin_epoch;
    uint64_t evictable = 0;
    int64_t cap = (int64_t)d->memory_capacity;
    for (parla__dev_copy_t *c = d->lru_head; c && (int64_t)(parla__data_used_locked(d) - evictable) + need > cap; c = c->next) {
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            continue;
        if (!own_copy(t, c, device))
            evictable += c->bytes;
    }
    uint64_t held = parla__data_used_locked(d) - evictable;
    bool fits = (int64_t)held + need <= cap;
    if (fits && need > 0) {
        d->claimed += (uint64_t)need;
        plan->claim_dev[plan->n_claims] = device;
        plan->claim[plan->n_claims++] = (uint64_t)need;
    }
    bool never = !fits && never_fits_locked(t, d, evictable);
    parla__unlock(&d->lock);
    if (never)
        return parla__error(PARLA_ERESOURCE,
                            "task %s needs %lld more bytes for its data on %s, and %llu of its capacity of %llu bytes "
                            "stay held by other allocations of the same arrays there (which the task does not "
                            "evict)%s: its data cannot fit there", parla_task_name(t), (long long)need, d->name,
                            (unsigned long long)held, (unsigned long long)d->memory_capacity,
                            t->memory ? " and by the memory it reserves" : "");
    return fits ? 0 : PARLA_EBUSY;
}

/* Gives back the room plan claimed and did not use; tasks waiting for room there retry (once the
 * preparation ends: parla__data_wake_deferred), t itself only when something else freed room since its
 * check. */
static void release_claims(parla_task_t *t, plan_t *plan)
{
    for (int i = 0; i < plan->n_claims; i++) {
        if (plan->claim[i] > 0)
            parla__data_room_given_back(t->rt, plan->claim_dev[i], plan->claim[i],
                                        &t->ext->data_epoch[slot_of(t, plan->claim_dev[i])]);
        plan->claim[i] = 0;
    }
    plan->n_claims = 0;
}
/* Phase 0 of parla__data_prepare on one GPU of the task: its data there must
 * fit on the device at all (PARLA_ERESOURCE, also when room_for finds that
 * waiting cannot free room), and room must be free now (PARLA_EBUSY). On
 * success the room it lacks is claimed (plan->claim). */
static int check_capacity(parla_task_t *t, parla__dev_t *d, plan_t *plan)
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
    return room_for(t, d, plan);
}

/* Phase 0 on every GPU in gpus, in ascending index order. On success the room
 * the task lacks on each is claimed; on failure none is (the claims made are
 * given back), and t->ext->room_slot names the device that lacked room. */
static int check_capacities(parla_task_t *t, uint64_t gpus, plan_t *plan)
{
    parla__dev_devs_t *devs = parla__dev_devs(t->rt);
    for (uint64_t m = gpus; m; m &= m - 1) {
        int dev = lowest(m);
        int rc = check_capacity(t, &devs->devices[dev], plan);
        if (rc) {
            t->ext->room_slot = slot_of(t, dev);
            release_claims(t, plan);
            return rc;
        }
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
        parla__lock(&s->lock);
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
        parla__unlock(&s->lock);
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
 * read (through one declaration) and written (through another) is copied in.
 * A write of bytes still arriving somewhere (copies and write-backs run with
 * no lock held, and may have begun since phase 1) also waits for those
 * arrivals (for access i up to one per device, at waits[n + i * n_devices],
 * references: parla__data_arriving_locked). Bytes arriving on the CPU: so
 * that a write-back does not land on the task's write (on the CPU), or after
 * a copy to the CPU that a later task plans after this write (on a GPU).
 * Bytes arriving on another device: that copy may still read the copy the
 * task writes; a fetch's (outside the access history, so no edge orders the
 * task after it), or one that a task whose preparation failed left in flight
 * (a failed reader orders no writer after it). */
static void mark_writes(parla_task_t *t, uint64_t gpus, arrival_t **waits)
{
    parla__graph_task_ext_t *x = t->ext;
    int n_devices = parla__dev_devs(t->rt)->n_devices;
    for (int i = 0; i < x->n_accesses; i++) {
        parla__graph_access_t *a = &x->accesses[i];
        if (!(a->mode & PARLA_WRITE))
            continue;
        store_t *s = a->data->store;
        int device = access_device(t, a);
        parla__lock(&s->lock);
        parla__data_arriving_locked(a->data, waits[i], &waits[x->n_accesses + (size_t)i * (size_t)n_devices],
                                    n_devices);
        parla__data_make_valid_locked(a->data, device, PARLA_WRITE, t, NULL, NULL);
        parla__unlock(&s->lock);
    }
    for (uint64_t m = gpus; m; m &= m - 1) {
        int dev = lowest(m);
        parla__dev_t *d = &parla__dev_devs(t->rt)->devices[dev];
        parla__lock(&d->lock);
        for (int i = 0; i < x->n_accesses; i++) {
            if (access_device(t, &x->accesses[i]) != dev)
                continue;
            d->n_pins++;
            parla__dev_copy_t *c = &x->accesses[i].data->store->copies[dev];
            if (c->bytes > 0) /* it has pieces (bytes changes under the device lock; n_pieces does not) */
                parla__data_lru_touch(d, c);
        }
        parla__unlock(&d->lock);
    }
}

/* The number of arrivals a preparation of t may wait for (the size of waits and of t's wait_nodes): one
 * per access (its device's), and for each write one per device (the bytes it writes still arriving
 * there, mark_writes). */
static size_t n_waits(const parla_task_t *t)
{
    return (size_t)t->ext->n_accesses * (1 + (size_t)parla__dev_devs(t->rt)->n_devices);
}

/* Phase 4: registers t as a waiter of each pending arrival (when the
 * preparation succeeded) and drops the references of waits (n_waits). */
static void register_waiters(parla_task_t *t, arrival_t **waits, int rc)
{
    parla__graph_task_ext_t *x = t->ext;
    atomic_store(&x->n_waiting, 1); /* the hold while registering */
    for (size_t i = 0; waits && i < n_waits(t); i++) {
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
    plan_t plan = {0};
    if ((rc = check_capacities(t, gpus, &plan)) != 0) {
        parla__data_wake_deferred();
        return rc;
    }
    arrival_t **waits = parla__calloc(rt, n_waits(t), sizeof *waits);
    if (x->wait_nodes == NULL)
        x->wait_nodes = parla__calloc(rt, n_waits(t), sizeof *x->wait_nodes);
    int n_pinned = 0;
    if (waits == NULL || x->wait_nodes == NULL)
        rc = parla__error(PARLA_ENOMEM, "task %s: cannot prepare its data", parla_task_name(t));
    else
        rc = plan_reads(t, &plan, waits, &n_pinned);
    if (rc == 0)
        mark_writes(t, gpus, waits);
    else
        /* Undo the pins of the accesses prepared before the failure; their
         * queued copies still run (the ranges are marked valid there). */
        parla__data_unpin_accesses(t, n_pinned);
    release_claims(t, &plan);
    parla__data_wake_deferred(); /* tasks that evictions and given-back claims made room for */
    parla__data_queue_jobs(t, &plan);
    register_waiters(t, waits, rc);
    parla__free(waits);
    if (rc)
        return rc;
    x->prepared = true;
    return atomic_fetch_sub(&x->n_waiting, 1) == 1 ? 0 : PARLA__PENDING;
}
