/* data.c: data objects, coherence across devices, access hazards, residency
 * and eviction.
 *
 * A store holds the copies of one base object: a buffer per device and a
 * segment map, a sorted partition of [0, nbytes) into byte ranges, each with
 * the set of devices holding a valid copy (a 64-bit mask). This is MSI per
 * range: a range valid on one device after a write is Modified there and
 * Invalid elsewhere; a range valid on several is Shared. Views (subarrays) are
 * lists of byte ranges of one store, so disjoint views are independent and
 * overlapping ones see each other's writes.
 *
 * Hazards: each store keeps its access history as records (ranges, the tasks
 * that last wrote them, the tasks that read them since). A new access depends
 * on the writers of every overlapping record (read-after-write, write-after-
 * write) and, when it writes, on their readers (write-after-read). A write
 * replaces the records it covers whole. The records always cover the whole
 * store, starting with one empty record.
 *
 * Residency: non-CPU copies are counted against the device's capacity. When
 * a new copy does not fit, least-recently-used copies not pinned by a running
 * task are evicted; ranges valid only in the victim are first written back to
 * the CPU. Nothing is lost.
 *
 * Locks: store->lock, then device->lock (the LRU list and residency). An
 * eviction holding a device lock only try-locks victim stores.
 */
#include "core/internal.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct seg {
    uint64_t lo, hi;
    uint64_t valid;    /* bit i: device i holds a valid copy (or will, see arriving) */
    uint64_t arriving; /* bit i: the copy to device i is still in flight */
} seg_t;

typedef struct record {
    uint64_t *ranges; /* owned copy, pairs */
    size_t n_ranges;
    parla_task_t **writers; /* references */
    size_t n_writers, cap_writers;
    parla_task_t **readers; /* references */
    size_t n_readers, cap_readers;
} record_t;

typedef struct parla__store store_t;

struct parla__copy {
    store_t *store;
    int device;
    void *buf;
    _Atomic int pins;  /* running tasks using it; pinned copies are never evicted (changed
                          under the store's lock; read without it only as an estimate) */
    int owned;         /* allocated by the engine (else the caller's host buffer) */
    struct arrival *arriving; /* the latest copies queued to this device (a reference), or NULL */
    int listed;        /* in the device's LRU list */
    parla_hold_t *hold; /* the hold on buf taken through parla_data_hold, or NULL (under the store's lock) */
    parla__copy_t *prev, *next; /* LRU links, under the device lock */
};

struct parla__store {
    parla_runtime_t *rt;
    store_t *live_prev, *live_next; /* the runtime's list of stores (under rt->stores_lock) */
    _Atomic int refs; /* data handles (base and views) */
    uint64_t nbytes;
    pthread_mutex_t lock; /* protects segs, records and copies */
    seg_t *segs;
    size_t n_segs, cap_segs;
    record_t *records;
    size_t n_records, cap_records;
    parla__copy_t *copies; /* one per device */
    _Atomic uint64_t planned; /* devices that mapped tasks will bring this data to */
};

struct parla_data {
    _Atomic int refs;
    store_t *store;
    uint64_t *ranges; /* pairs, sorted, disjoint */
    size_t n_ranges;
    uint64_t nbytes; /* bytes covered by the ranges */
};

struct arrival;
static void arrival_unref(struct arrival *a);

/* Memory of a device copy handed out beyond the engine (parla_data_hold). While the copy is the engine's, the
 * engine owns one reference; when the engine drops the copy (eviction, release of the data), it drops that
 * reference instead of freeing the memory, and the last holder frees it. The hold counts as a live object of
 * the runtime, so the device (and its free operation) outlives it. */
struct parla_hold {
    _Atomic int refs;
    parla_runtime_t *rt;
    int device;
    int owned; /* the engine allocated buf (else it is the caller's host buffer, never freed here) */
    void *buf;
};

static void hold_unref(parla_hold_t *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
        return;
    parla_runtime_t *rt = h->rt;
    if (h->owned)
        rt->devices[h->device].ops->free(&rt->devices[h->device], h->buf);
    parla__free(h);
    parla__runtime_task_freed(rt); /* the hold counted as a live object */
}

/* Frees copy c's memory, or leaves it to its holders (the caller owns c: store lock held, or last reference). */
static void copy_drop_buf(parla_runtime_t *rt, parla__copy_t *c)
{
    parla_hold_t *h = c->hold;
    c->hold = NULL;
    if (h)
        hold_unref(h);
    else if (c->owned)
        rt->devices[c->device].ops->free(&rt->devices[c->device], c->buf);
}

static inline uint64_t bit(int device)
{
    return (uint64_t)1 << device;
}

/* ------------------------------------------------------------- lifecycle -- */

/* Removes copy c from its device's LRU list (device lock held). */
static void lru_unlink(parla__device_t *dev, parla__copy_t *c)
{
    if (!c->listed)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        dev->lru_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        dev->lru_tail = c->prev;
    c->prev = c->next = NULL;
    c->listed = 0;
}

/* Moves copy c to the most-recently-used end of its device's list. */
static void lru_touch(parla__device_t *dev, parla__copy_t *c)
{
    if (c->listed && dev->lru_tail == c)
        return;
    lru_unlink(dev, c);
    c->prev = dev->lru_tail;
    c->next = NULL;
    if (dev->lru_tail)
        dev->lru_tail->next = c;
    else
        dev->lru_head = c;
    dev->lru_tail = c;
    c->listed = 1;
}

static void store_free(store_t *s)
{
    parla_runtime_t *rt = s->rt;
    pthread_mutex_lock(&rt->stores_lock);
    if (s->live_prev)
        s->live_prev->live_next = s->live_next;
    else
        rt->stores = s->live_next;
    if (s->live_next)
        s->live_next->live_prev = s->live_prev;
    pthread_mutex_unlock(&rt->stores_lock);
    for (int i = 0; i < rt->n_devices; i++) {
        parla__copy_t *c = &s->copies[i];
        arrival_unref(c->arriving);
        c->arriving = NULL;
        if (c->buf == NULL)
            continue;
        parla__device_t *d = &rt->devices[i];
        pthread_mutex_lock(&d->lock);
        lru_unlink(d, c);
        if (i != 0)
            d->resident -= s->nbytes;
        pthread_mutex_unlock(&d->lock);
        copy_drop_buf(rt, c);
    }
    for (size_t r = 0; r < s->n_records; r++) {
        record_t *rec = &s->records[r];
        for (size_t i = 0; i < rec->n_writers; i++)
            parla_task_release(rec->writers[i]);
        for (size_t i = 0; i < rec->n_readers; i++)
            parla_task_release(rec->readers[i]);
        parla__free(rec->writers);
        parla__free(rec->readers);
        parla__free(rec->ranges);
    }
    parla__free(s->records);
    parla__free(s->segs);
    parla__free(s->copies);
    pthread_mutex_destroy(&s->lock);
    parla__free(s);
    parla__runtime_task_freed(rt); /* the store counted as a live object */
}

static void store_release(store_t *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        store_free(s);
}

int parla_data_create(parla_runtime_t *rt, uint64_t nbytes, void *host, parla_data_t **out)
{
    if (out)
        *out = NULL;
    if (rt == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_create: NULL argument");
    if (atomic_load_explicit(&rt->destroyed, memory_order_relaxed))
        return parla__error(PARLA_ESTATE, "parla_data_create: the runtime was destroyed");
    int forked = parla__check_process(rt, "parla_data_create");
    if (forked)
        return forked;
    store_t *s = parla__calloc(rt, 1, sizeof *s);
    parla_data_t *d = parla__calloc(rt, 1, sizeof *d);
    uint64_t *range = parla__alloc(rt, 2 * sizeof *range);
    parla__copy_t *copies = parla__calloc(rt, (size_t)rt->n_devices, sizeof *copies);
    seg_t *segs = parla__alloc(rt, 4 * sizeof *segs);
    record_t *recs = parla__calloc(rt, 4, sizeof *recs);
    uint64_t *rec_range = parla__alloc(rt, 2 * sizeof *rec_range);
    void *buf = host;
    if (buf == NULL && s && d && range && copies && segs && recs && rec_range) {
        buf = parla__calloc(rt, 1, nbytes ? nbytes : 1);
    }
    if (!s || !d || !range || !copies || !segs || !recs || !rec_range || !buf) {
        parla__free(s);
        parla__free(d);
        parla__free(range);
        parla__free(copies);
        parla__free(segs);
        parla__free(recs);
        parla__free(rec_range);
        if (buf != host)
            parla__free(buf);
        return parla__error(PARLA_ENOMEM, "parla_data_create: cannot allocate a data object of %llu bytes",
                            (unsigned long long)nbytes);
    }
    s->rt = rt;
    atomic_init(&s->refs, 1);
    s->nbytes = nbytes;
    pthread_mutex_init(&s->lock, NULL);
    s->copies = copies;
    for (int i = 0; i < rt->n_devices; i++) {
        copies[i].store = s;
        copies[i].device = i;
    }
    copies[0].buf = buf;
    copies[0].owned = buf != host;
    s->segs = segs;
    s->cap_segs = 4;
    s->n_segs = 1;
    segs[0] = (seg_t){0, nbytes, bit(0), 0};
    s->records = recs;
    s->cap_records = 4;
    s->n_records = 1;
    rec_range[0] = 0;
    rec_range[1] = nbytes;
    recs[0].ranges = rec_range;
    recs[0].n_ranges = 1;
    atomic_fetch_add(&rt->n_live, 1); /* the runtime outlives its stores */
    pthread_mutex_lock(&rt->stores_lock);
    s->live_next = rt->stores;
    if (rt->stores)
        rt->stores->live_prev = s;
    rt->stores = s;
    pthread_mutex_unlock(&rt->stores_lock);
    atomic_init(&d->refs, 1);
    d->store = s;
    range[0] = 0;
    range[1] = nbytes;
    d->ranges = range;
    d->n_ranges = 1;
    d->nbytes = nbytes;
    *out = d;
    return 0;
}

int parla_data_view(parla_data_t *base, const uint64_t *ranges, size_t n, parla_data_t **out)
{
    if (out)
        *out = NULL;
    if (base == NULL || out == NULL || (n > 0 && ranges == NULL))
        return parla__error(PARLA_EINVAL, "parla_data_view: NULL argument");
    store_t *s = base->store;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t lo = ranges[2 * i], hi = ranges[2 * i + 1];
        if (lo > hi || hi > s->nbytes || (i > 0 && lo < ranges[2 * i - 1]))
            return parla__error(PARLA_EINVAL,
                                "parla_data_view: range %zu [%llu, %llu) is out of bounds (size %llu) or unsorted", i,
                                (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)s->nbytes);
        total += hi - lo;
    }
    parla_data_t *d = parla__calloc(s->rt, 1, sizeof *d);
    uint64_t *copy = parla__alloc(s->rt, (n ? n : 1) * 2 * sizeof *copy);
    if (!d || !copy) {
        parla__free(d);
        parla__free(copy);
        return parla__error(PARLA_ENOMEM, "parla_data_view: cannot allocate a view of %zu ranges", n);
    }
    if (n)
        memcpy(copy, ranges, n * 2 * sizeof *copy);
    atomic_init(&d->refs, 1);
    atomic_fetch_add(&s->refs, 1);
    d->store = s;
    d->ranges = copy;
    d->n_ranges = n;
    d->nbytes = total;
    *out = d;
    return 0;
}

void parla_data_retain(parla_data_t *d)
{
    if (d == NULL)
        return;
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
}

void parla_data_release(parla_data_t *d)
{
    if (d == NULL || atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
        return;
    store_t *s = d->store;
    parla__free(d->ranges);
    parla__free(d);
    store_release(s);
}

uint64_t parla_data_nbytes(const parla_data_t *d)
{
    if (d == NULL)
        return 0;
    return d->store->nbytes;
}

/* ------------------------------------------------------------ segment map -- */

/* Index of the segment containing x (x < nbytes), by binary search. */
static size_t seg_find(const store_t *s, uint64_t x)
{
    size_t lo = 0, hi = s->n_segs;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->segs[mid].lo <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Ensures a segment boundary at x. */
static int seg_split(store_t *s, uint64_t x)
{
    if (x == 0 || x >= s->nbytes)
        return 0;
    size_t i = seg_find(s, x);
    if (s->segs[i].lo == x)
        return 0;
    if (s->n_segs == s->cap_segs) {
        size_t cap = 2 * s->cap_segs;
        seg_t *n = parla__alloc(s->rt, cap * sizeof *n);
        if (n == NULL)
            return PARLA_ENOMEM;
        memcpy(n, s->segs, s->n_segs * sizeof *n);
        parla__free(s->segs);
        s->segs = n;
        s->cap_segs = cap;
    }
    memmove(&s->segs[i + 2], &s->segs[i + 1], (s->n_segs - i - 1) * sizeof(seg_t));
    s->segs[i + 1] = (seg_t){x, s->segs[i].hi, s->segs[i].valid, s->segs[i].arriving};
    s->segs[i].hi = x;
    s->n_segs++;
    return 0;
}

/* Merges neighbours with the same valid set. */
static void seg_merge(store_t *s)
{
    size_t w = 0;
    for (size_t r = 1; r < s->n_segs; r++) {
        if (s->segs[r].valid == s->segs[w].valid && s->segs[r].arriving == s->segs[w].arriving)
            s->segs[w].hi = s->segs[r].hi;
        else
            s->segs[++w] = s->segs[r];
    }
    s->n_segs = w + 1;
}

static uint64_t valid_bytes_locked(const parla_data_t *d, int device, uint64_t *total, bool planned)
{
    const store_t *s = d->store;
    uint64_t v = 0;
    /* For mapping, data that tasks already mapped to the device will bring
     * there counts as local too. */
    if (planned && (atomic_load_explicit(&s->planned, memory_order_relaxed) & bit(device))) {
        if (total)
            *total += d->nbytes;
        return d->nbytes;
    }
    for (size_t r = 0; r < d->n_ranges; r++) {
        uint64_t lo = d->ranges[2 * r], hi = d->ranges[2 * r + 1];
        if (lo == hi)
            continue;
        for (size_t i = seg_find(s, lo); i < s->n_segs && s->segs[i].lo < hi; i++) {
            if (s->segs[i].valid & bit(device)) {
                uint64_t a = s->segs[i].lo > lo ? s->segs[i].lo : lo;
                uint64_t b = s->segs[i].hi < hi ? s->segs[i].hi : hi;
                v += b - a;
            }
        }
    }
    if (total)
        *total += d->nbytes;
    return v;
}

uint64_t parla_data_valid_bytes(parla_data_t *d, int device)
{
    if (d == NULL)
        return 0;
    store_t *s = d->store;
    if (device < 0 || device >= s->rt->n_devices)
        return 0;
    pthread_mutex_lock(&s->lock);
    uint64_t v = valid_bytes_locked(d, device, NULL, false);
    pthread_mutex_unlock(&s->lock);
    return v;
}

uint64_t parla__task_data_bytes(parla_task_t *t, int device, uint64_t *total)
{
    uint64_t v = 0;
    *total = 0;
    if (t->ext == NULL)
        return 0;
    for (int i = 0; i < t->ext->n_accesses; i++) {
        parla__access_t *a = &t->ext->accesses[i];
        if (a->mode == PARLA_WRITE) /* nothing to bring in */
            continue;
        store_t *s = a->data->store;
        pthread_mutex_lock(&s->lock);
        v += valid_bytes_locked(a->data, device, total, true);
        pthread_mutex_unlock(&s->lock);
    }
    return v;
}

void parla__data_plan(parla_task_t *t, int device)
{
    if (t->ext == NULL || device == 0)
        return;
    for (int i = 0; i < t->ext->n_accesses; i++)
        atomic_fetch_or_explicit(&t->ext->accesses[i].data->store->planned, bit(device), memory_order_relaxed);
}

uint64_t parla_data_resident_bytes(parla_data_t *d, int device)
{
    if (d == NULL)
        return 0;
    store_t *s = d->store;
    if (device < 0 || device >= s->rt->n_devices)
        return 0;
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->copies[device].buf ? s->nbytes : 0;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void *parla_data_device_ptr(parla_data_t *d, int device)
{
    if (d == NULL)
        return NULL;
    store_t *s = d->store;
    if (device < 0 || device >= s->rt->n_devices)
        return NULL;
    pthread_mutex_lock(&s->lock);
    void *p = s->copies[device].buf;
    pthread_mutex_unlock(&s->lock);
    return p;
}

/* -------------------------------------------------------------- residency -- */


/* Counts a copy of [lo, hi) from device `from` to `to` that started at t0 (ns)
 * in the devices' totals and the trace. */
static void copy_done(parla_runtime_t *rt, int to, int from, uint64_t lo, uint64_t hi, uint64_t serial, uint64_t t0)
{
    atomic_fetch_add_explicit(&rt->devices[to].bytes_in, hi - lo, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->devices[from].bytes_out, hi - lo, memory_order_relaxed);
    if (rt->trace) {
        parla__tev_t ev = {.ts = t0, .b = parla__now_ns(), .a = hi - lo, .serial = serial,
                           .kind = PARLA__TEV_COPY, .device = (int16_t)to, .f = {(float)from}};
        parla__trace_event(rt, &ev);
    }
}

/* Copies bytes [lo, hi) of store s from device `from` to device `to`; returns
 * when done. */
static int copy_range(store_t *s, int to, int from, uint64_t lo, uint64_t hi, uint64_t serial)
{
    parla_runtime_t *rt = s->rt;
    parla__device_t *dt = &rt->devices[to], *df = &rt->devices[from];
    /* A CUDA device does the copy when one side is CUDA. */
    parla__device_t *engine = dt->is_cuda ? dt : df;
    uint64_t t0 = rt->trace ? parla__now_ns() : 0;
    int rc = engine->ops->copy(dt, (char *)s->copies[to].buf + lo, df, (char *)s->copies[from].buf + lo, hi - lo);
    if (rc)
        return rc;
    copy_done(rt, to, from, lo, hi, serial, t0);
    return 0;
}

/* Writes back to the CPU what only `device` holds, then drops its copy.
 * Called with s->lock held; takes the device lock for the LRU list only when
 * dev_locked is false. */
static int evict_locked(store_t *s, int device, bool dev_locked)
{
    parla_runtime_t *rt = s->rt;
    parla__copy_t *c = &s->copies[device];
    if (c->buf == NULL || device == 0)
        return 0;
    if (c->pins > 0)
        return PARLA_EBUSY;
    for (size_t i = 0; i < s->n_segs; i++) {
        seg_t *g = &s->segs[i];
        if (g->valid == bit(device)) {
            int rc = copy_range(s, 0, device, g->lo, g->hi, UINT64_MAX);
            if (rc)
                return rc;
            g->valid |= bit(0);
        }
        g->valid &= ~bit(device);
    }
    seg_merge(s);
    parla__device_t *d = &rt->devices[device];
    if (!dev_locked)
        pthread_mutex_lock(&d->lock);
    lru_unlink(d, c);
    d->resident -= s->nbytes;
    if (!dev_locked)
        pthread_mutex_unlock(&d->lock);
    copy_drop_buf(rt, c);
    c->buf = NULL;
    atomic_fetch_and(&s->planned, ~bit(device));
    atomic_fetch_add_explicit(&d->evictions, 1, memory_order_relaxed);
    if (rt->trace) {
        parla__tev_t ev = {.ts = parla__now_ns(), .a = s->nbytes, .kind = PARLA__TEV_EVICT, .device = (int16_t)device};
        parla__trace_event(rt, &ev);
    }
    return 0;
}

/* One account per device: data copies and the memory tasks reserved
 * (memory=) share its capacity. Device lock held. */
static uint64_t used_locked(const parla__device_t *d)
{
    return d->resident + (d->memory_capacity - d->memory_free);
}

/* Evicts least-recently-used unpinned copies of stores other than `keep`
 * (NULL: any) until `need` more bytes fit in d's account. Device lock held;
 * victims' store locks are only try-locked (store locks come first in the
 * lock order). Best effort: stops at the end of the list. */
static void evict_for_locked(parla__device_t *d, store_t *keep, uint64_t need)
{
    parla__copy_t *v = d->lru_head;
    while (used_locked(d) + need > d->memory_capacity && v) {
        parla__copy_t *next = v->next;
        if (v->store != keep && pthread_mutex_trylock(&v->store->lock) == 0) {
            /* The victim's lock is held (pins are read under it); the device lock too. */
            if (v->pins == 0)
                evict_locked(v->store, d->index, true);
            pthread_mutex_unlock(&v->store->lock);
        }
        v = next;
    }
}

void parla__data_make_room_locked(parla__device_t *d)
{
    if (d->index != 0)
        evict_for_locked(d, NULL, 0);
}

uint64_t parla__data_pinned_bytes_locked(const parla__device_t *d)
{
    uint64_t n = 0;
    for (const parla__copy_t *c = d->lru_head; c; c = c->next)
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            n += c->store->nbytes;
    return n;
}

/* Gives store s (locked by the caller) a copy on device, evicting other
 * stores' least-recently-used unpinned copies to make room. */
static int ensure_copy(store_t *s, int device, parla_task_t *t)
{
    parla__copy_t *c = &s->copies[device];
    if (c->buf)
        return 0;
    parla_runtime_t *rt = s->rt;
    parla__device_t *d = &rt->devices[device];
    if (device != 0) {
        pthread_mutex_lock(&d->lock);
        evict_for_locked(d, s, s->nbytes);
        if (used_locked(d) + s->nbytes > d->memory_capacity) {
            /* What is resident is in use by running tasks: wait for them. */
            pthread_mutex_unlock(&d->lock);
            return PARLA_EBUSY;
        }
        d->resident += s->nbytes; /* claimed before allocating, so no one overcommits */
        pthread_mutex_unlock(&d->lock);
    }
    void *buf = NULL;
    int rc = d->ops->alloc(d, s->nbytes, &buf);
    if (rc) {
        if (device != 0) {
            pthread_mutex_lock(&d->lock);
            d->resident -= s->nbytes;
            pthread_mutex_unlock(&d->lock);
        }
        return parla__error(rc == PARLA_ENOMEM ? PARLA_ERESOURCE : rc,
                            "task %s: cannot allocate %llu bytes on %s", t ? parla_task_name(t) : "(none)",
                            (unsigned long long)s->nbytes, d->name);
    }
    c->buf = buf;
    c->owned = 1;
    if (device != 0) {
        /* Listed at once: a copy that its maker does not end up using (a
         * preparation that fails, a fetch) can still be evicted. */
        pthread_mutex_lock(&d->lock);
        lru_touch(d, c);
        pthread_mutex_unlock(&d->lock);
    }
    return 0;
}

/* ---------------------------------------------------------- copy engines -- */

/* Copies in flight to one device for one store. Tasks that need the data
 * there wait for it to arrive; the last copy to finish enqueues them. */
typedef struct parla__waiter {
    parla_task_t *task;
    struct parla__waiter *next;
} waiter_t;

typedef struct arrival {
    _Atomic int refs;
    pthread_mutex_t lock; /* protects remaining, done and waiters */
    pthread_cond_t cond;  /* for threads outside tasks (parla_data_fetch) */
    int remaining;        /* copies not done yet */
    int error;            /* a copy failed on the device (PARLA_E* code), or 0 */
    bool done;
    waiter_t *waiters;
} arrival_t;

typedef struct parla__copy_job {
    struct parla__copy_job *next;
    parla_task_t *task; /* set for an end-of-work marker (runahead) or a retry; no copy then */
    bool retry;         /* make task ready again (after waiting for room on the device) */
    int error;          /* the device's error for the copy or the marked task's work, or 0 */
    store_t *store;     /* holds a store reference */
    arrival_t *arrival; /* holds an arrival reference */
    int from, to;
    uint64_t lo, hi;
    uint64_t serial;    /* the task that asked for it, for the trace */
    /* On a CUDA engine: the events the copy waits for (runahead predecessors
     * of the task it is for; held), and the event recorded after it. */
    parla__event_t **waits;
    int n_waits;
    parla__event_t *event;
    uint64_t t0;        /* when it was issued (ns), for the trace */
} copy_job_t;

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

static void arrival_unref(struct arrival *a)
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
static void arrival_wait(arrival_t *a)
{
    pthread_mutex_lock(&a->lock);
    while (!a->done)
        pthread_cond_wait(&a->cond, &a->lock);
    pthread_mutex_unlock(&a->lock);
}

/* Drops pins of store s on device: the copies may be evicted again, and
 * tasks waiting for room on the device retry. */
static void unpin_store(store_t *s, int device, int count)
{
    pthread_mutex_lock(&s->lock);
    s->copies[device].pins -= count;
    pthread_mutex_unlock(&s->lock);
}

/* count pins on device were dropped: tasks waiting for room there retry. */
static void device_unpinned(parla_runtime_t *rt, int device, int count)
{
    if (device == 0)
        return;
    parla__device_t *d = &rt->devices[device];
    pthread_mutex_lock(&d->lock);
    d->n_pins -= (uint64_t)count;
    d->unpin_epoch++;
    parla_task_t *retry = d->data_blocked;
    d->data_blocked = NULL;
    /* Reservations count the pinned copies (one account): tasks blocked on
     * them may fit now. */
    parla_task_t *reserve = d->blocked_head;
    d->blocked_head = d->blocked_tail = NULL;
    pthread_mutex_unlock(&d->lock);
    while (retry) {
        parla_task_t *next = retry->qnext;
        retry->qnext = NULL;
        parla__task_ready(retry);
        retry = next;
    }
    while (reserve) {
        parla_task_t *next = reserve->qnext;
        reserve->qnext = NULL;
        if (parla__reserve_or_block(reserve))
            parla__dispatch(reserve);
        reserve = next;
    }
}

static void unpin(store_t *s, int device, int count)
{
    unpin_store(s, device, count);
    device_unpinned(s->rt, device, count);
}

/* Drops the store pins of t's first n accesses on device (the device count
 * is the caller's). */
static void unpin_accesses(parla_task_t *t, int device, int n)
{
    for (int i = 0; i < n; i++)
        unpin_store(t->ext->accesses[i].data->store, device, 1);
}

static void pin_locked(store_t *s, int device)
{
    s->copies[device].pins++;
    if (device != 0) {
        parla__device_t *d = &s->rt->devices[device];
        pthread_mutex_lock(&d->lock);
        d->n_pins++;
        pthread_mutex_unlock(&d->lock);
    }
}

/* Marks job j's bytes as arrived: exactly [lo, hi), since segments may have
 * been merged or split since it was planned (a neighbouring range may still be
 * on its way). Without memory to split, the mark stays (only a preference). */
static void arrived(store_t *s, copy_job_t *j)
{
    pthread_mutex_lock(&s->lock);
    if (seg_split(s, j->lo) == 0 && seg_split(s, j->hi) == 0) {
        for (size_t i = seg_find(s, j->lo); i < s->n_segs && s->segs[i].lo < j->hi; i++) {
            seg_t *g = &s->segs[i];
            g->arriving &= ~bit(j->to);
            if (j->error) {
                /* The copy failed on the device: the destination never got the
                 * bytes, the source (pinned until now) still has them. */
                g->valid = (g->valid & ~bit(j->to)) | bit(j->from);
            }
        }
        seg_merge(s);
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
    unpin(s, j->from, 1); /* the source was pinned while the copy was queued */
    unpin(s, j->to, 1);   /* and so was the destination */
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
            parla__enqueue(rt, t);
        w = next;
    }
    arrival_unref(a);
    store_release(j->store);
    job_free(j);
    atomic_fetch_sub(&rt->n_copying, 1);
}

/* 1 when the work of runahead task t is complete on all its devices, 0 when
 * not yet, < 0 (a PARLA_E* code, the driver's error in the message) when a
 * device reported an error: nothing more will come of that work. */
static int task_work_done(parla_task_t *t)
{
    int done = 1;
    for (int k = 0; t->ext && k < t->n_devices; k++) {
        int rc = parla__event_done(t->ext->events[k]);
        if (rc < 0)
            return rc;
        if (rc == 0)
            done = 0;
    }
    return done;
}

static bool job_poll(copy_job_t *j);

/* Starts job j on device d's engine. Returns true when it is complete already
 * (host copies, markers whose work is done); otherwise its event completes
 * it (job_poll). */
static bool job_issue(parla__device_t *d, copy_job_t *j)
{
    if (j->task)
        return j->retry || job_poll(j);
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
        j->t0 = rt->trace ? parla__now_ns() : 0;
        if (rc == 0)
            rc = d->ops->copy_async(d, (char *)s->copies[j->to].buf + j->lo, &rt->devices[other],
                                    (char *)s->copies[j->from].buf + j->lo, j->hi - j->lo, stream);
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
    /* Both copies are pinned, so neither buffer moves meanwhile. */
    j->error = copy_range(s, j->to, j->from, j->lo, j->hi, j->serial);
    return true;
}

int parla__task_work_wait(parla_task_t *t)
{
    int error = 0;
    for (int k = 0; t->ext && k < t->n_devices; k++) {
        parla__event_t *e = t->ext->events[k];
        int rc = e ? e->device->ops->event_synchronize(e->device, e->handle) : 0;
        if (rc && error == 0)
            error = rc;
    }
    return error;
}

/* True when job j's work is complete, also when its device reported an
 * error (recorded in j->error). */
static bool job_poll(copy_job_t *j)
{
    int rc = j->task == NULL ? parla__event_done(j->event) : task_work_done(j->task);
    if (rc < 0)
        j->error = rc;
    return rc != 0;
}

static void job_finish(copy_job_t *j, bool async)
{
    if (j->retry) {
        parla_task_t *t = j->task;
        parla_runtime_t *rt = t->rt;
        job_free(j);
        parla__task_ready(t);
        atomic_fetch_sub(&rt->n_copying, 1);
        return;
    }
    if (j->task) {
        /* The device has done the task's work: finish it. */
        parla_task_t *t = j->task;
        parla_runtime_t *rt = t->rt;
        if (rt->trace && t->ext) {
            parla__tev_t ev = {.ts = t->ext->ran_ns, .b = parla__now_ns(), .serial = t->serial,
                               .kind = PARLA__TEV_WORK, .device = t->devices[0]};
            parla__trace_event(rt, &ev);
        }
        parla__task_complete_gpu(t, j->error);
        job_free(j);
        atomic_fetch_sub(&rt->n_copying, 1);
        return;
    }
    if (async)
        copy_done(j->store->rt, j->to, j->from, j->lo, j->hi, j->serial, j->t0);
    job_complete(j);
}

/* The engine of a device: takes jobs in order, issues them, and completes
 * them when their work is done. On a CUDA GPU a job's work runs on the
 * device meanwhile: the engine polls the events of the jobs in flight,
 * backing off from 2 us to 0.5 ms while none completes (no worker waits). */
static void *engine_main(void *arg)
{
    parla__device_t *d = arg;
    copy_job_t *inflight = NULL;
    long pause_ns = 2000;
    for (;;) {
        pthread_mutex_lock(&d->engine_lock);
        while (d->jobs_head == NULL && !d->engine_stop && inflight == NULL)
            pthread_cond_wait(&d->engine_cond, &d->engine_lock);
        if (d->jobs_head == NULL && inflight != NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += pause_ns;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&d->engine_cond, &d->engine_lock, &until);
        }
        copy_job_t *j = d->jobs_head;
        if (j == NULL && inflight == NULL && d->engine_stop) { /* stopping, and nothing is left */
            pthread_mutex_unlock(&d->engine_lock);
            return NULL;
        }
        if (j) {
            d->jobs_head = j->next;
            if (d->jobs_head == NULL)
                d->jobs_tail = NULL;
        }
        d->engine_busy = true;
        pthread_mutex_unlock(&d->engine_lock);
        bool progress = false;
        if (j) {
            progress = true;
            if (job_issue(d, j)) {
                job_finish(j, false);
            } else {
                j->next = inflight;
                inflight = j;
            }
        }
        for (copy_job_t **p = &inflight; *p;) {
            copy_job_t *x = *p;
            if (job_poll(x)) {
                *p = x->next;
                job_finish(x, x->task == NULL);
                progress = true;
            } else {
                p = &x->next;
            }
        }
        pause_ns = progress ? 2000 : pause_ns < 500000 ? pause_ns * 2 : 500000;
        pthread_mutex_lock(&d->engine_lock);
        d->engine_busy = inflight != NULL;
        pthread_mutex_unlock(&d->engine_lock);
    }
}

/* Frees what parla__copy_engine_start made besides the thread. */
static void engine_teardown(parla__device_t *d)
{
    if (d->copy_in)
        d->ops->stream_destroy(d, d->copy_in);
    if (d->copy_out)
        d->ops->stream_destroy(d, d->copy_out);
    d->copy_in = d->copy_out = NULL;
    pthread_mutex_destroy(&d->engine_lock);
    pthread_cond_destroy(&d->engine_cond);
}

int parla__copy_engine_start(parla__device_t *d)
{
    pthread_mutex_init(&d->engine_lock, NULL);
    pthread_cond_init(&d->engine_cond, NULL);
    d->jobs_head = d->jobs_tail = NULL;
    d->engine_stop = false;
    int rc = 0;
    if (parla__device_async(d) && (rc = d->ops->stream_create(d, &d->copy_in)) == 0)
        rc = d->ops->stream_create(d, &d->copy_out);
    if (rc == 0 && pthread_create(&d->engine, NULL, engine_main, d) != 0)
        rc = parla__error(PARLA_ESYS, "cannot start the copy engine of %s", d->name);
    if (rc) {
        engine_teardown(d);
        return rc;
    }
    d->engine_running = true;
    return 0;
}

void parla__copy_engine_stop(parla__device_t *d)
{
    if (!d->engine_running)
        return;
    pthread_mutex_lock(&d->engine_lock);
    d->engine_stop = true;
    pthread_cond_signal(&d->engine_cond);
    pthread_mutex_unlock(&d->engine_lock);
    pthread_join(d->engine, NULL);
    d->engine_running = false;
    engine_teardown(d);
}

/* The device whose engine does job j: the task's (markers), else the GPU
 * side of the copy (the destination when both are GPUs). */
static parla__device_t *engine_of(parla_runtime_t *rt, const copy_job_t *j)
{
    return &rt->devices[j->task ? j->task->devices[0] : j->to != 0 ? j->to : j->from];
}

static void engine_submit(parla_runtime_t *rt, copy_job_t *j)
{
    parla__device_t *d = engine_of(rt, j);
    /* Counted until done, so the runtime is not taken for stuck while every
     * worker sleeps and copies are under way. */
    atomic_fetch_add(&rt->n_copying, 1);
    j->next = NULL;
    pthread_mutex_lock(&d->engine_lock);
    if (d->jobs_tail)
        d->jobs_tail->next = j;
    else
        d->jobs_head = j;
    d->jobs_tail = j;
    pthread_cond_signal(&d->engine_cond);
    pthread_mutex_unlock(&d->engine_lock);
}

int parla__engine_mark(parla_task_t *t)
{
    /* Nothing queued on the device before the task: its work is complete
     * now (an event that has already completed), so the caller finishes it. */
    parla__device_t *d = &t->rt->devices[t->devices[0]];
    pthread_mutex_lock(&d->engine_lock);
    bool idle = d->jobs_head == NULL && !d->engine_busy;
    pthread_mutex_unlock(&d->engine_lock);
    if (idle && task_work_done(t) == 1)
        return 1;
    copy_job_t *j = parla__calloc(t->rt, 1, sizeof *j);
    if (j == NULL)
        return PARLA_ENOMEM;
    j->task = t;
    engine_submit(t->rt, j);
    return 0;
}

/* What one task's preparation queues: copy jobs, and the arrivals it waits for. */
typedef struct plan {
    copy_job_t *jobs;
    int n_jobs_store; /* jobs made for the store being planned */
} plan_t;

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

/* Makes d's ranges valid on device (copying from the cheapest valid source)
 * and, for writes, leaves device as the only valid copy. s->lock held. */
static int make_valid_locked(parla_data_t *d, int device, int mode, parla_task_t *t, plan_t *plan)
{
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    int rc = ensure_copy(s, device, t);
    if (rc)
        return rc;
    for (size_t r = 0; r < d->n_ranges; r++) {
        if ((rc = seg_split(s, d->ranges[2 * r])) || (rc = seg_split(s, d->ranges[2 * r + 1])))
            return parla__error(PARLA_ENOMEM, "cannot split the segment map of a data object");
    }
    for (size_t r = 0; r < d->n_ranges; r++) {
        uint64_t lo = d->ranges[2 * r], hi = d->ranges[2 * r + 1];
        if (lo == hi)
            continue;
        for (size_t i = seg_find(s, lo); i < s->n_segs && s->segs[i].lo < hi; i++) {
            seg_t *g = &s->segs[i];
            if ((mode & PARLA_READ) && !(g->valid & bit(device))) {
                /* Cheapest source: the one with the fastest link, preferring
                 * copies that have arrived over ones still in flight. */
                int src = -1;
                bool src_pending = true;
                for (int k = 0; k < rt->n_devices; k++) {
                    if (!(g->valid & bit(k)))
                        continue;
                    bool pending = (g->arriving & bit(k)) != 0;
                    if (src < 0 || (src_pending && !pending) ||
                        (pending == src_pending && rt->devices[k].bandwidth > rt->devices[src].bandwidth)) {
                        src = k;
                        src_pending = pending;
                    }
                }
                if (src < 0)
                    return parla__error(PARLA_EDEVICE, "data range [%llu, %llu) has no valid copy",
                                        (unsigned long long)g->lo, (unsigned long long)g->hi);
                copy_job_t *j = plan ? parla__alloc(rt, sizeof *j) : NULL;
                if (j != NULL) {
                    /* Queued on a copy engine; the source stays pinned until done. */
                    atomic_fetch_add(&s->refs, 1);
                    *j = (copy_job_t){.store = s, .from = src, .to = device, .lo = g->lo, .hi = g->hi,
                                      .serial = t ? t->serial : UINT64_MAX, .next = plan->jobs};
                    plan->jobs = j;
                    plan->n_jobs_store++;
                    pin_locked(s, src);
                    pin_locked(s, device);
                    g->arriving |= bit(device);
                } else {
                    if (t)
                        parla__host_wait_task(t); /* its source may still be being written */
                    rc = copy_range(s, device, src, g->lo, g->hi, t ? t->serial : UINT64_MAX);
                    if (rc)
                        return rc;
                }
                g->valid |= bit(device);
            }
            if (mode & PARLA_WRITE)
                g->valid = bit(device);
        }
    }
    seg_merge(s);
    return 0;
}

/* True when access i is the first of the task's accesses to its base data
 * (views of one base share its copies: count them once). */
static bool first_use(const parla__task_ext_t *x, int i)
{
    for (int j = 0; j < i; j++)
        if (x->accesses[j].data->store == x->accesses[i].data->store)
            return false;
    return true;
}

/* True when t's data can all be on device d at once: the copies it lacks fit
 * in the room left after evicting every unpinned copy of other data. Checked
 * before anything is allocated or copied, so a task that cannot have all its
 * data takes none (tasks that each took part of the room would keep evicting
 * each other's copies). d->acquire_lock held; records the device's unpin
 * epoch for parla__data_wait_for_room. */
static bool room_for(parla_task_t *t, parla__device_t *d)
{
    parla__task_ext_t *x = t->ext;
    int device = d->index;
    uint64_t need = 0;
    for (int i = 0; i < x->n_accesses; i++) {
        store_t *si = x->accesses[i].data->store;
        if (!first_use(x, i))
            continue;
        pthread_mutex_lock(&si->lock);
        if (si->copies[device].buf == NULL)
            need += si->nbytes;
        pthread_mutex_unlock(&si->lock);
    }
    pthread_mutex_lock(&d->lock);
    x->data_epoch = d->unpin_epoch;
    uint64_t evictable = 0;
    for (parla__copy_t *c = d->lru_head; c && used_locked(d) - evictable + need > d->memory_capacity; c = c->next) {
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            continue;
        bool mine = false;
        for (int i = 0; i < x->n_accesses && !mine; i++)
            mine = x->accesses[i].data->store == c->store;
        if (!mine)
            evictable += c->store->nbytes;
    }
    bool fits = used_locked(d) - evictable + need <= d->memory_capacity;
    pthread_mutex_unlock(&d->lock);
    return fits;
}

int parla__data_prepare(parla_task_t *t)
{
    int device = t->n_devices ? t->devices[0] : 0;
    parla__task_ext_t *x = t->ext;
    parla_runtime_t *rt = t->rt;
    parla__device_t *d = &rt->devices[device];
    if (device != 0) {
        /* A task whose data cannot fit even on an empty device fails. */
        uint64_t total = 0;
        for (int i = 0; i < x->n_accesses; i++)
            if (first_use(x, i))
                total += x->accesses[i].data->store->nbytes;
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
    }
    /* Phase 1: allocate, queue the copies of what is read (or copy at once
     * when a job cannot be allocated), pin. Phase 2: mark the writes. Reads
     * come first so that a range both read (through one declaration) and
     * written (through another) is copied in. */
    plan_t plan = {0};
    arrival_t **waits = parla__calloc(rt, (size_t)x->n_accesses, sizeof *waits);
    if (x->wait_nodes == NULL)
        x->wait_nodes = parla__calloc(rt, (size_t)x->n_accesses, sizeof *x->wait_nodes);
    int i, rc = waits && x->wait_nodes
                    ? 0
                    : parla__error(PARLA_ENOMEM, "task %s: cannot prepare its data", parla_task_name(t));
    for (i = 0; i < x->n_accesses && rc == 0; i++) {
        parla__access_t *a = &x->accesses[i];
        store_t *s = a->data->store;
        pthread_mutex_lock(&s->lock);
        copy_job_t *before = plan.jobs;
        plan.n_jobs_store = 0;
        rc = make_valid_locked(a->data, device, a->mode & PARLA_READ, t, &plan);
        if (rc == 0) {
            s->copies[device].pins++;
            arrival_t *arr = s->copies[device].arriving;
            if (plan.n_jobs_store > 0) {
                /* Join the copies already on their way, or start a new batch.
                 * Checked and counted under one lock: a batch whose last copy
                 * finishes meanwhile must not take new copies. */
                bool joined = false;
                if (arr) {
                    pthread_mutex_lock(&arr->lock);
                    if (!arr->done) {
                        arr->remaining += plan.n_jobs_store;
                        joined = true;
                    }
                    pthread_mutex_unlock(&arr->lock);
                }
                if (!joined) {
                    arrival_t *fresh = arrival_new(rt);
                    if (fresh == NULL) {
                        rc = parla__error(PARLA_ENOMEM, "task %s: cannot track its copies", parla_task_name(t));
                    } else {
                        fresh->remaining = plan.n_jobs_store;
                        arrival_unref(arr);
                        s->copies[device].arriving = arr = fresh;
                    }
                }
                if (rc == 0) {
                    for (copy_job_t *j = plan.jobs; j != before; j = j->next) {
                        atomic_fetch_add(&arr->refs, 1);
                        j->arrival = arr;
                    }
                }
            }
            if (rc == 0 && arrival_pending(arr)) {
                atomic_fetch_add(&arr->refs, 1);
                waits[i] = arr;
            }
            if (rc != 0)
                s->copies[device].pins--;
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (rc == 0) {
        for (i = 0; i < x->n_accesses; i++) {
            parla__access_t *a = &x->accesses[i];
            if (!(a->mode & PARLA_WRITE))
                continue;
            store_t *s = a->data->store;
            pthread_mutex_lock(&s->lock);
            make_valid_locked(a->data, device, PARLA_WRITE, t, NULL);
            pthread_mutex_unlock(&s->lock);
        }
        if (device != 0) {
            pthread_mutex_lock(&d->lock);
            d->n_pins += (uint64_t)x->n_accesses;
            for (i = 0; i < x->n_accesses; i++) {
                parla__copy_t *c = &x->accesses[i].data->store->copies[device];
                if (c->buf)
                    lru_touch(d, c);
            }
            pthread_mutex_unlock(&d->lock);
        }
    } else if (waits) {
        /* Undo the pins of the accesses prepared before the failure; their
         * queued copies still run (the ranges are marked valid there). */
        unpin_accesses(t, device, i - 1);
    }
    if (device != 0)
        pthread_mutex_unlock(&d->acquire_lock);
    /* Queue the copies. A job whose arrival could not be made is done here. */
    while (plan.jobs) {
        copy_job_t *j = plan.jobs;
        plan.jobs = j->next;
        if (j->arrival && parla__device_async(engine_of(rt, j))) {
            /* The copy waits on the device for the work of the runahead
             * predecessors that may still be writing its source. */
            j->n_waits = parla__task_waits(t, &j->waits);
            if (j->n_waits < 0) {
                j->n_waits = 0;
                parla__host_wait_task(t);
            }
        }
        if (j->arrival) {
            engine_submit(rt, j);
        } else {
            parla__host_wait_task(t);
            copy_range(j->store, j->to, j->from, j->lo, j->hi, j->serial);
            arrived(j->store, j);
            unpin(j->store, j->from, 1);
            unpin(j->store, j->to, 1);
            store_release(j->store);
            job_free(j);
        }
    }
    atomic_store(&x->n_waiting, 1); /* the hold while registering */
    for (i = 0; waits && i < x->n_accesses; i++) {
        if (waits[i] == NULL)
            continue;
        if (rc == 0)
            arrival_add_waiter(waits[i], t, &x->wait_nodes[i]);
        arrival_unref(waits[i]);
    }
    parla__free(waits);
    if (rc)
        return rc;
    x->prepared = true;
    return atomic_fetch_sub(&x->n_waiting, 1) == 1 ? 0 : PARLA__PENDING;
}

void parla__data_release_task(parla_task_t *t)
{
    int device = t->n_devices ? t->devices[0] : 0;
    unpin_accesses(t, device, t->ext->n_accesses);
    device_unpinned(t->rt, device, t->ext->n_accesses);
}

void parla__data_wait_for_room(parla_task_t *t)
{
    parla__device_t *d = &t->rt->devices[t->devices[0]];
    pthread_mutex_lock(&d->lock);
    /* Retry at once if copies were unpinned since the attempt, or if none is
     * pinned at all (the attempt lost a race for a victim's lock). */
    bool now = d->unpin_epoch != t->ext->data_epoch || d->n_pins == 0;
    if (!now) {
        t->qnext = d->data_blocked;
        d->data_blocked = t;
    }
    pthread_mutex_unlock(&d->lock);
    if (!now)
        return;
    /* Retried from the device's engine, not from here: the retry may fail
     * the same way, and must not recurse on this thread's stack. */
    copy_job_t *j = parla__calloc(t->rt, 1, sizeof *j);
    if (j) {
        j->task = t;
        j->retry = true;
        engine_submit(t->rt, j);
        return;
    }
    sched_yield();
    parla__task_ready(t);
}

/* ---------------------------------------------------------------- hazards -- */

static bool ranges_overlap(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        uint64_t alo = a[2 * i], ahi = a[2 * i + 1], blo = b[2 * j], bhi = b[2 * j + 1];
        if (alo < bhi && blo < ahi && alo < ahi && blo < bhi)
            return true;
        if (ahi <= bhi)
            i++;
        else
            j++;
    }
    return false;
}

/* True when every byte of a is inside b. */
static bool ranges_cover(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t j = 0;
    for (size_t i = 0; i < na; i++) {
        uint64_t lo = a[2 * i], hi = a[2 * i + 1];
        while (lo < hi) {
            while (j < nb && b[2 * j + 1] <= lo)
                j++;
            if (j == nb || b[2 * j] > lo)
                return false;
            lo = b[2 * j + 1];
        }
    }
    return true;
}

/* rec's ranges minus b's (both sorted, disjoint pairs); unchanged when the
 * result cannot be allocated. */
static void ranges_subtract(parla_runtime_t *rt, record_t *rec, const uint64_t *b, size_t nb)
{
    uint64_t *out = parla__alloc(rt, (rec->n_ranges + nb) * 2 * sizeof *out);
    if (out == NULL)
        return;
    size_t n = 0, j = 0;
    for (size_t i = 0; i < rec->n_ranges; i++) {
        uint64_t lo = rec->ranges[2 * i], hi = rec->ranges[2 * i + 1];
        while (j < nb && b[2 * j + 1] <= lo)
            j++;
        for (size_t k = j; k < nb && b[2 * k] < hi && lo < hi; k++) {
            if (b[2 * k] > lo) {
                out[2 * n] = lo;
                out[2 * n + 1] = b[2 * k];
                n++;
            }
            if (b[2 * k + 1] > lo)
                lo = b[2 * k + 1];
        }
        if (lo < hi) {
            out[2 * n] = lo;
            out[2 * n + 1] = hi;
            n++;
        }
    }
    parla__free(rec->ranges);
    rec->ranges = out;
    rec->n_ranges = n;
}

static int push_task(parla_runtime_t *rt, parla_task_t ***arr, size_t *n, size_t *cap, parla_task_t *t)
{
    /* A task adds its accesses one after another, so a duplicate is the last entry. */
    if (*n > 0 && (*arr)[*n - 1] == t)
        return 0;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 4;
        parla_task_t **a = parla__alloc(rt, c * sizeof *a);
        if (a == NULL)
            return PARLA_ENOMEM;
        if (*n)
            memcpy(a, *arr, *n * sizeof *a);
        parla__free(*arr);
        *arr = a;
        *cap = c;
    }
    parla_task_retain(t);
    (*arr)[(*n)++] = t;
    return 0;
}

/* Drops finished tasks from a list. */
/* Drops the finished tasks of a history list. Writers that failed or were
 * cancelled stay (keep_failed): what they were to write is missing, so later
 * readers are cancelled, whether or not the writer had finished when they
 * were spawned. A later write replaces them. */
static void prune(parla_task_t **arr, size_t *n, bool keep_failed)
{
    size_t w = 0;
    for (size_t i = 0; i < *n; i++) {
        parla_task_state_t st = parla_task_state(arr[i]);
        if (st == PARLA_TASK_DONE || (st > PARLA_TASK_DONE && !keep_failed))
            parla_task_release(arr[i]);
        else
            arr[w++] = arr[i];
    }
    *n = w;
}

static void record_clear(record_t *r)
{
    for (size_t i = 0; i < r->n_writers; i++)
        parla_task_release(r->writers[i]);
    for (size_t i = 0; i < r->n_readers; i++)
        parla_task_release(r->readers[i]);
    parla__free(r->writers);
    parla__free(r->readers);
    parla__free(r->ranges);
    memset(r, 0, sizeof *r);
}

/* Orders t after dep for a hazard, unless dep already waits for t (an explicit
 * dependency on a task spawned later wins). Returns 1 when dep had to be kept
 * after t instead, 0 when the edge was added, < 0 on error. */
static int hazard_edge(parla_task_t *t, parla_task_t *dep, int mode, bool dep_writes)
{
    /* Only data flows (t reads what dep writes) carry a failure: write-after-
     * write and write-after-read edges order the tasks and nothing more. */
    bool flow = dep_writes && (mode & PARLA_READ);
    parla_task_state_t st = parla_task_state(dep);
    if (dep == t || st == PARLA_TASK_DONE)
        return 0;
    if (st > PARLA_TASK_DONE) /* a failed or cancelled writer: its readers are cancelled with it */
        return flow ? parla__add_edge(t, dep, PARLA__EDGE_DATA) : 0;
    if (atomic_load(&t->succ) != NULL && parla__reaches(t, dep, 100000))
        return 1;
    return parla__add_edge(t, dep, PARLA__EDGE_DATA | (flow ? 0 : PARLA__EDGE_ORDER));
}

int parla_task_add_access(parla_task_t *t, parla_data_t *d, parla_access_mode_t mode)
{
    if (t == NULL || d == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_add_access: NULL argument");
    if (mode != PARLA_READ && mode != PARLA_WRITE && mode != PARLA_READWRITE)
        return parla__error(PARLA_EINVAL, "task %s: access mode %d is not read, write or read-write",
                            parla_task_name(t), (int)mode);
    store_t *s = d->store;
    if (s->rt != t->rt)
        return parla__error(PARLA_EINVAL, "task %s: the data object belongs to another runtime", parla_task_name(t));
    if (parla_task_state(t) != PARLA_TASK_CREATED)
        return parla__error(PARLA_ESTATE, "task %s: accesses are declared before it is submitted", parla_task_name(t));
    parla__task_ext_t *x = parla__task_ext(t);
    if (x == NULL)
        return parla__error(PARLA_ENOMEM, "task %s: cannot record an access", parla_task_name(t));
    if (x->n_accesses == x->cap_accesses) {
        int cap = x->cap_accesses ? 2 * x->cap_accesses : 4;
        parla__access_t *a = parla__alloc(t->rt, (size_t)cap * sizeof *a);
        if (a == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot record an access", parla_task_name(t));
        if (x->n_accesses)
            memcpy(a, x->accesses, (size_t)x->n_accesses * sizeof *a);
        parla__free(x->accesses);
        x->accesses = a;
        x->cap_accesses = cap;
    }
    /* Reserve the new record's memory first, so a failure changes nothing
     * in the history. */
    uint64_t *ranges = NULL;
    if (mode & PARLA_WRITE) {
        ranges = parla__alloc(t->rt, (d->n_ranges ? d->n_ranges : 1) * 2 * sizeof *ranges);
        if (ranges == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot record an access", parla_task_name(t));
        if (d->n_ranges)
            memcpy(ranges, d->ranges, d->n_ranges * 2 * sizeof *ranges);
    }
    int rc = 0;
    parla_task_t **kept = NULL; /* earlier tasks that explicitly wait for t */
    size_t n_kept = 0, cap_kept = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t r = 0; r < s->n_records && rc == 0; r++) {
        record_t *rec = &s->records[r];
        if (!ranges_overlap(rec->ranges, rec->n_ranges, d->ranges, d->n_ranges))
            continue;
        prune(rec->writers, &rec->n_writers, true);
        /* Readers pile up under many concurrent reads: prune them only when
         * the list is full (amortised O(1)) or when a write needs them. */
        if ((mode & PARLA_WRITE) || rec->n_readers == rec->cap_readers)
            prune(rec->readers, &rec->n_readers, false);
        for (size_t i = 0; i < rec->n_writers && rc >= 0; i++) {
            rc = hazard_edge(t, rec->writers[i], mode, true);
            if (rc == 1)
                rc = push_task(t->rt, &kept, &n_kept, &cap_kept, rec->writers[i]);
        }
        if (mode & PARLA_WRITE) {
            for (size_t i = 0; i < rec->n_readers && rc >= 0; i++) {
                rc = hazard_edge(t, rec->readers[i], mode, false);
                if (rc == 1)
                    rc = push_task(t->rt, &kept, &n_kept, &cap_kept, rec->readers[i]);
            }
        } else if (rc >= 0) {
            rc = push_task(t->rt, &rec->readers, &rec->n_readers, &rec->cap_readers, t);
        }
    }
    if (rc >= 0 && (mode & PARLA_WRITE)) {
        /* Replace the records this write covers whole by one new record. */
        if (s->n_records == s->cap_records) {
            size_t cap = 2 * s->cap_records;
            record_t *n = parla__calloc(t->rt, cap, sizeof *n);
            if (n == NULL) {
                rc = PARLA_ENOMEM;
            } else {
                memcpy(n, s->records, s->n_records * sizeof *n);
                parla__free(s->records);
                s->records = n;
                s->cap_records = cap;
            }
        }
        if (rc >= 0) {
            record_t nr = {0};
            nr.ranges = ranges;
            nr.n_ranges = d->n_ranges;
            ranges = NULL;
            rc = push_task(t->rt, &nr.writers, &nr.n_writers, &nr.cap_writers, t);
            /* Tasks spawned earlier that run after t (explicit order) stay
             * writers too: later accesses wait for them as well. */
            for (size_t i = 0; i < n_kept && rc >= 0; i++)
                rc = push_task(t->rt, &nr.writers, &nr.n_writers, &nr.cap_writers, kept[i]);
            if (rc < 0) {
                record_clear(&nr);
            } else {
                size_t w = 0;
                for (size_t r = 0; r < s->n_records; r++) {
                    record_t *rec = &s->records[r];
                    if (ranges_cover(rec->ranges, rec->n_ranges, nr.ranges, nr.n_ranges)) {
                        record_clear(rec);
                        continue;
                    }
                    /* The part this write covers is the new record's now: an
                     * earlier (failed) writer no longer stands for it. Out of
                     * memory, the record stays whole (more ordering, not less). */
                    if (ranges_overlap(rec->ranges, rec->n_ranges, nr.ranges, nr.n_ranges))
                        ranges_subtract(t->rt, rec, nr.ranges, nr.n_ranges);
                    s->records[w++] = *rec;
                }
                s->n_records = w;
                s->records[s->n_records++] = nr;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < n_kept; i++)
        parla_task_release(kept[i]);
    parla__free(kept);
    parla__free(ranges);
    if (rc < 0)
        return rc == PARLA_ENOMEM ? parla__error(rc, "task %s: cannot record an access", parla_task_name(t)) : rc;
    parla_data_retain(d);
    x->accesses[x->n_accesses].data = d;
    x->accesses[x->n_accesses].mode = mode;
    x->n_accesses++;
    return 0;
}

void parla__data_forget_history(parla_runtime_t *rt)
{
    /* Take a reference on every store, so none is freed while we walk. */
    pthread_mutex_lock(&rt->stores_lock);
    size_t n = 0;
    for (store_t *s = rt->stores; s; s = s->live_next)
        n++;
    store_t **list = malloc((n ? n : 1) * sizeof *list);
    size_t k = 0;
    for (store_t *s = rt->stores; s && list; s = s->live_next) {
        atomic_fetch_add(&s->refs, 1);
        list[k++] = s;
    }
    pthread_mutex_unlock(&rt->stores_lock);
    if (list == NULL)
        return; /* out of memory: the cycles stay (a leak, not an error) */
    for (size_t i = 0; i < k; i++) {
        store_t *s = list[i];
        pthread_mutex_lock(&s->lock);
        size_t n_tasks = 0;
        for (size_t r = 0; r < s->n_records; r++)
            n_tasks += s->records[r].n_writers + s->records[r].n_readers;
        parla_task_t **tasks = malloc((n_tasks ? n_tasks : 1) * sizeof *tasks);
        size_t m = 0;
        for (size_t r = 0; r < s->n_records && tasks; r++) {
            record_t *rec = &s->records[r];
            for (size_t j = 0; j < rec->n_writers; j++)
                tasks[m++] = rec->writers[j];
            for (size_t j = 0; j < rec->n_readers; j++)
                tasks[m++] = rec->readers[j];
            rec->n_writers = rec->n_readers = 0;
        }
        pthread_mutex_unlock(&s->lock);
        for (size_t j = 0; j < m; j++)
            parla_task_release(tasks[j]); /* may free the task, and with it its data handles */
        free(tasks);
        store_release(s);
    }
    free(list);
}

/* ------------------------------------------------------- outside of tasks -- */

/* A task (a reference) whose access conflicts with an outside access to d
 * (unfinished writers of its ranges, and with write, their readers), or NULL;
 * the calling task's own access does not conflict. */
static parla_task_t *first_conflict(parla_data_t *d, int write)
{
    store_t *s = d->store;
    parla_task_t *wait = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t r = 0; r < s->n_records && !wait; r++) {
        record_t *rec = &s->records[r];
        if (!ranges_overlap(rec->ranges, rec->n_ranges, d->ranges, d->n_ranges))
            continue;
        prune(rec->writers, &rec->n_writers, true);
        prune(rec->readers, &rec->n_readers, false);
        for (size_t i = 0; i < rec->n_writers && !wait; i++)
            if (parla_task_state(rec->writers[i]) < PARLA_TASK_DONE)
                wait = rec->writers[i];
        if (!wait && write && rec->n_readers)
            wait = rec->readers[0];
    }
    if (wait)
        parla_task_retain(wait);
    pthread_mutex_unlock(&s->lock);
    parla__worker_t *w = parla__current_worker();
    if (wait && w && w->current == wait) {
        parla_task_release(wait);
        return NULL; /* the calling task's own declared access */
    }
    return wait;
}

int parla_data_wait(parla_data_t *d, int write, double timeout)
{
    if (d == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_wait: data is NULL");
    double deadline = timeout >= 0 ? (double)parla__now_ns() * 1e-9 + timeout : 0.0;
    for (;;) {
        parla_task_t *wait = first_conflict(d, write);
        if (wait == NULL)
            return 0;
        int rc;
        if (timeout < 0) {
            rc = parla_task_wait(wait);
        } else {
            double left = deadline - (double)parla__now_ns() * 1e-9;
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
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    if (device < 0 || device >= rt->n_devices)
        return parla__error(PARLA_ENODEV, "parla_data_fetch: no device %d", device);
    /* Wait for the tasks whose accesses conflict with this one. */
    int rc = parla_data_wait(d, write, -1.0);
    if (rc)
        return rc;
    /* Copies still on their way to the device are waited for. */
    pthread_mutex_lock(&s->lock);
    arrival_t *arr = s->copies[device].arriving;
    if (arr)
        atomic_fetch_add(&arr->refs, 1);
    pthread_mutex_unlock(&s->lock);
    if (arr) {
        arrival_wait(arr);
        arrival_unref(arr);
    }
    parla__device_t *dev = &rt->devices[device];
    if (device != 0)
        pthread_mutex_lock(&dev->acquire_lock);
    pthread_mutex_lock(&s->lock);
    rc = make_valid_locked(d, device, write ? PARLA_READWRITE : PARLA_READ, NULL, NULL);
    pthread_mutex_unlock(&s->lock);
    if (device != 0)
        pthread_mutex_unlock(&dev->acquire_lock);
    if (rc == PARLA_EBUSY)
        rc = parla__error(PARLA_ERESOURCE, "parla_data_fetch: %s is full of copies in use by running tasks",
                          dev->name);
    return rc;
}

int parla_data_evict(parla_data_t *d, int device, int keep_one_copy)
{
    if (d == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_evict: data is NULL");
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    if (device < -1 || device >= rt->n_devices)
        return parla__error(PARLA_ENODEV, "parla_data_evict: no device %d", device);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 1; i < rt->n_devices && rc == 0; i++) {
        if (device != -1 && device != i)
            continue;
        /* The last valid copy is always written back first, whatever
         * keep_one_copy says: this runtime never drops data. */
        (void)keep_one_copy;
        rc = evict_locked(s, i, false);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == PARLA_EBUSY)
        return parla__error(rc, "parla_data_evict: the copy is in use by a running task");
    return rc;
}

int parla_data_hold(parla_data_t *d, int device, parla_hold_t **out, void **ptr)
{
    if (d == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_hold: data or out is NULL");
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    if (device < 0 || device >= rt->n_devices)
        return parla__error(PARLA_ENODEV, "parla_data_hold: no device %d", device);
    pthread_mutex_lock(&s->lock);
    parla__copy_t *c = &s->copies[device];
    if (c->buf == NULL) {
        pthread_mutex_unlock(&s->lock);
        return parla__error(PARLA_ESTATE, "parla_data_hold: the data has no copy on device %d", device);
    }
    if (c->hold == NULL) {
        parla_hold_t *h = parla__alloc(rt, sizeof *h);
        if (h == NULL) {
            pthread_mutex_unlock(&s->lock);
            return parla__error(PARLA_ENOMEM, "parla_data_hold: out of memory");
        }
        atomic_init(&h->refs, 1); /* the engine's, while the copy is attached */
        h->rt = rt;
        h->device = device;
        h->owned = c->owned;
        h->buf = c->buf;
        atomic_fetch_add(&rt->n_live, 1);
        c->hold = h;
    }
    atomic_fetch_add_explicit(&c->hold->refs, 1, memory_order_relaxed);
    *out = c->hold;
    if (ptr)
        *ptr = c->buf;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void parla_hold_release(parla_hold_t *hold)
{
    if (hold)
        hold_unref(hold);
}
