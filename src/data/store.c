/* store.c: data objects and their stores: creation, views, references, the
 * segment map (which devices hold a valid copy of each byte range), holds on
 * device memory handed out beyond the engine. */
#include "data/impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hold_unref(parla_hold_t *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
        return;
    parla_runtime_t *rt = h->rt;
    if (h->owned)
        parla__dev_devs(rt)->devices[h->device].ops->free(&parla__dev_devs(rt)->devices[h->device], h->buf);
    parla__free(h);
    parla__graph_object_freed(rt); /* the hold counted as a live object */
}

/* Frees piece p's memory, or leaves it to its holders (a piece taken out of its copy, or the last
 * reference: no lock held). */
static void piece_drop(parla_runtime_t *rt, int device, piece_t *p)
{
    parla_hold_t *h = p->hold;
    p->hold = NULL;
    if (h)
        hold_unref(h);
    else if (p->owned)
        parla__dev_devs(rt)->devices[device].ops->free(&parla__dev_devs(rt)->devices[device], p->buf);
    p->buf = NULL;
}

/* Frees copy c's memory (all its pieces), or leaves it to its holders (the caller owns c: the store's last
 * reference, no lock held). The device's account and c->bytes (changed under the device lock too: the device's
 * LRU walks read it) are the caller's. */
void parla__data_copy_drop_buf(parla_runtime_t *rt, parla__dev_copy_t *c)
{
    for (size_t i = 0; i < c->n_pieces; i++)
        piece_drop(rt, c->device, &c->pieces[i]);
    c->n_pieces = 0;
}

/* Frees n pieces taken out of a copy on device (their memory, or leaves it to its holders), then the
 * array holding them (NULL: none). No lock held: ops->free may block. */
void parla__data_pieces_free(parla_runtime_t *rt, int device, piece_t *pieces, size_t n)
{
    for (size_t i = 0; i < n; i++)
        piece_drop(rt, device, &pieces[i]);
    parla__free(pieces);
}

/* Index of the first piece of c that ends after x (at or after x when touching is true), by binary search. */
size_t parla__data_piece_index(const parla__dev_copy_t *c, uint64_t x, bool touching)
{
    size_t lo = 0, hi = c->n_pieces;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->pieces[mid].hi > x || (touching && c->pieces[mid].hi == x))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The piece of c holding all of [lo, hi), or NULL (store lock held). */
piece_t *parla__data_piece(const parla__dev_copy_t *c, uint64_t lo, uint64_t hi)
{
    size_t i = parla__data_piece_index(c, lo, lo == hi);
    if (i < c->n_pieces && c->pieces[i].lo <= lo && hi <= c->pieces[i].hi)
        return &c->pieces[i];
    return NULL;
}

/* Where store byte x is in copy c, with *end the end of its piece; NULL when no piece holds x (store lock
 * held). */
void *parla__data_addr(const parla__dev_copy_t *c, uint64_t x, uint64_t *end)
{
    size_t i = parla__data_piece_index(c, x, false);
    if (i == c->n_pieces || c->pieces[i].lo > x)
        return NULL;
    *end = c->pieces[i].hi;
    return (char *)c->pieces[i].buf + (x - c->pieces[i].lo);
}

/* The smallest range of the store's bytes covering d's ranges ([0, 0) when they are all empty). */
void parla__data_extent(const parla_data_t *d, uint64_t *lo, uint64_t *hi)
{
    size_t a = 0, b = d->n_ranges;
    while (a < b && d->ranges[2 * a] == d->ranges[2 * a + 1])
        a++;
    while (b > a && d->ranges[2 * b - 2] == d->ranges[2 * b - 1])
        b--;
    *lo = a < b ? d->ranges[2 * a] : 0;
    *hi = a < b ? d->ranges[2 * b - 1] : 0;
}

static void store_free(store_t *s)
{
    parla_runtime_t *rt = s->rt;
    parla__lock(&parla__data_rt(rt)->stores_lock);
    if (s->live_prev)
        s->live_prev->live_next = s->live_next;
    else
        parla__data_rt(rt)->stores = s->live_next;
    if (s->live_next)
        s->live_next->live_prev = s->live_prev;
    parla__unlock(&parla__data_rt(rt)->stores_lock);
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++) {
        parla__dev_copy_t *c = &s->copies[i];
        parla__data_arrival_unref(c->arriving);
        c->arriving = NULL;
        if (c->n_pieces > 0) {
            parla__dev_t *d = &parla__dev_devs(rt)->devices[i];
            if (i == 0) /* registered with the driver when it took part in GPU copies */
                parla__dev_host_unpin(&parla__dev_devs(rt)->shared, c->pieces[0].buf);
            parla__lock(&d->lock);
            parla__data_lru_unlink(d, c);
            uint64_t bytes = c->bytes;
            c->bytes = 0;
            parla__unlock(&d->lock);
            parla__data_copy_drop_buf(rt, c);
            if (i != 0) { /* out of the account once freed (the driver holds them until then) */
                parla__lock(&d->lock);
                d->resident -= bytes;
                parla__unlock(&d->lock);
            }
        }
        parla__free(c->pieces);
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
    pthread_cond_destroy(&s->cond);
    parla__free(s);
    parla__graph_object_freed(rt); /* the store counted as a live object */
}

void parla__data_store_release(store_t *s)
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
    if (atomic_load_explicit(&parla__graph_rt(rt)->destroyed, memory_order_relaxed))
        return parla__error(PARLA_ESTATE, "parla_data_create: the runtime was destroyed");
    int forked = parla__check_process(rt, "parla_data_create");
    if (forked)
        return forked;
    store_t *s = parla__calloc(rt, 1, sizeof *s);
    parla_data_t *d = parla__calloc(rt, 1, sizeof *d);
    uint64_t *range = parla__alloc(rt, 2 * sizeof *range);
    parla__dev_copy_t *copies = parla__calloc(rt, (size_t)parla__dev_devs(rt)->n_devices, sizeof *copies);
    seg_t *segs = parla__alloc(rt, 4 * sizeof *segs);
    record_t *recs = parla__calloc(rt, 4, sizeof *recs);
    uint64_t *rec_range = parla__alloc(rt, 2 * sizeof *rec_range);
    piece_t *cpu = parla__calloc(rt, 1, sizeof *cpu);
    void *buf = host;
    if (buf == NULL && s && d && range && copies && segs && recs && rec_range && cpu) {
        buf = parla__calloc(rt, 1, nbytes ? nbytes : 1);
    }
    if (!s || !d || !range || !copies || !segs || !recs || !rec_range || !cpu || !buf) {
        parla__free(cpu);
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
    pthread_cond_init(&s->cond, NULL);
    s->copies = copies;
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++) {
        copies[i].store = s;
        copies[i].device = i;
    }
    /* The CPU's copy: one piece, the whole store. */
    *cpu = (piece_t){.lo = 0, .hi = nbytes, .buf = buf, .owned = buf != host};
    copies[0].pieces = cpu;
    copies[0].n_pieces = copies[0].cap_pieces = 1;
    copies[0].bytes = nbytes;
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
    atomic_fetch_add(&parla__graph_rt(rt)->n_live, 1); /* the runtime outlives its stores */
    parla__lock(&parla__data_rt(rt)->stores_lock);
    s->live_next = parla__data_rt(rt)->stores;
    if (parla__data_rt(rt)->stores)
        parla__data_rt(rt)->stores->live_prev = s;
    parla__data_rt(rt)->stores = s;
    parla__unlock(&parla__data_rt(rt)->stores_lock);
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
    parla__data_store_release(s);
}

uint64_t parla_data_nbytes(const parla_data_t *d)
{
    if (d == NULL)
        return 0;
    return d->store->nbytes;
}

/* ------------------------------------------------------------ segment map -- */

/* Index of the segment containing x (x < nbytes), by binary search. */
size_t parla__data_seg_find(const store_t *s, uint64_t x)
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
int parla__data_seg_split(store_t *s, uint64_t x)
{
    if (x == 0 || x >= s->nbytes)
        return 0;
    size_t i = parla__data_seg_find(s, x);
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
void parla__data_seg_merge(store_t *s)
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

/* Bytes of d valid on any device of mask. */
static uint64_t valid_bytes_locked(const parla_data_t *d, uint64_t mask, uint64_t *total, bool planned)
{
    const store_t *s = d->store;
    uint64_t v = 0;
    /* For mapping, data that tasks already mapped to the device will bring
     * there counts as local too. */
    if (planned && (atomic_load_explicit(&s->planned, memory_order_relaxed) & mask)) {
        if (total)
            *total += d->nbytes;
        return d->nbytes;
    }
    for (size_t r = 0; r < d->n_ranges; r++) {
        uint64_t lo = d->ranges[2 * r], hi = d->ranges[2 * r + 1];
        if (lo == hi)
            continue;
        for (size_t i = parla__data_seg_find(s, lo); i < s->n_segs && s->segs[i].lo < hi; i++) {
            if (s->segs[i].valid & mask) {
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

/* For the getters below: d's store, locked, when d is not NULL and device is one of its runtime's
 * devices; NULL otherwise (the getters then answer 0 or NULL). */
static store_t *lock_store_for(const parla_data_t *d, int device)
{
    if (d == NULL)
        return NULL;
    store_t *s = d->store;
    if (device < 0 || device >= parla__dev_devs(s->rt)->n_devices)
        return NULL;
    parla__lock(&s->lock);
    return s;
}

uint64_t parla_data_valid_bytes(parla_data_t *d, int device)
{
    store_t *s = lock_store_for(d, device);
    if (s == NULL)
        return 0;
    uint64_t v = valid_bytes_locked(d, bit(device), NULL, false);
    parla__unlock(&s->lock);
    return v;
}

uint64_t parla__data_task_data_bytes(parla_task_t *t, int device, int slot, uint64_t *total)
{
    return parla__data_task_data_bytes_on(t, bit(device), slot, total);
}

uint64_t parla__data_task_data_bytes_on(parla_task_t *t, uint64_t mask, int slot, uint64_t *total)
{
    uint64_t v = 0;
    *total = 0;
    if (t->ext == NULL)
        return 0;
    for (int i = 0; i < t->ext->n_accesses; i++) {
        parla__graph_access_t *a = &t->ext->accesses[i];
        if (a->mode == PARLA_WRITE || a->slot != slot) /* nothing to bring in, or not there */
            continue;
        store_t *s = a->data->store;
        parla__lock(&s->lock);
        v += valid_bytes_locked(a->data, mask, total, true);
        parla__unlock(&s->lock);
    }
    return v;
}

void parla__data_plan(parla_task_t *t)
{
    if (t->ext == NULL)
        return;
    for (int i = 0; i < t->ext->n_accesses; i++) {
        parla__graph_access_t *a = &t->ext->accesses[i];
        if (a->slot < t->n_devices && t->devices[a->slot] != 0)
            atomic_fetch_or_explicit(&a->data->store->planned, bit(t->devices[a->slot]), memory_order_relaxed);
    }
}

uint64_t parla_data_resident_bytes(parla_data_t *d, int device)
{
    store_t *s = lock_store_for(d, device);
    if (s == NULL)
        return 0;
    uint64_t n = s->copies[device].bytes;
    parla__unlock(&s->lock);
    return n;
}

/* The piece of d's store on device that holds d's extent; for data whose extent no one piece holds (a
 * base of which tasks brought only views there), inside a task, the piece holding the extent of what the
 * running task declared of the store. NULL when there is none. Store lock held. */
static piece_t *piece_of(parla_data_t *d, int device)
{
    store_t *s = d->store;
    parla__dev_copy_t *c = &s->copies[device];
    if (c->n_pieces == 0)
        return NULL;
    uint64_t lo, hi;
    parla__data_extent(d, &lo, &hi);
    if (lo == hi && device == 0)
        return &c->pieces[0];
    piece_t *p = lo < hi ? parla__data_piece(c, lo, hi) : NULL;
    const parla__self_t *me = p ? NULL : parla__self(); /* the task whose body runs on this thread */
    parla_task_t *t = me ? me->current : NULL;
    for (int i = 0; t && t->ext && i < t->ext->n_accesses && p == NULL; i++) {
        const parla__graph_access_t *x = &t->ext->accesses[i];
        parla_data_t *a = x->data;
        if (a->store != s || a == d || x->slot >= t->n_devices || access_device(t, x) != device)
            continue;
        parla__data_extent(a, &lo, &hi);
        if (lo < hi)
            p = parla__data_piece(c, lo, hi);
    }
    return p;
}

/* The address at which the store's byte 0 would be if piece p started there: byte x of p is at that
 * address + x (integer arithmetic: the address may lie outside the allocation; only bytes of p are used). */
static void *virtual_base(const piece_t *p)
{
    return (void *)((uintptr_t)p->buf - (uintptr_t)p->lo);
}

void *parla_data_device_ptr(parla_data_t *d, int device)
{
    store_t *s = lock_store_for(d, device);
    if (s == NULL)
        return NULL;
    piece_t *p = piece_of(d, device);
    void *v = p ? virtual_base(p) : NULL;
    parla__unlock(&s->lock);
    return v;
}

int parla_data_hold(parla_data_t *d, int device, parla_hold_t **out, void **ptr)
{
    if (d == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_hold: data or out is NULL");
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    if (device < 0 || device >= parla__dev_devs(rt)->n_devices)
        return parla__error(PARLA_ENODEV, "parla_data_hold: no device %d", device);
    parla__lock(&s->lock);
    piece_t *p = piece_of(d, device);
    if (p == NULL) {
        parla__unlock(&s->lock);
        return parla__error(PARLA_ESTATE, "parla_data_hold: the data has no copy on device %d", device);
    }
    if (p->hold == NULL) {
        parla_hold_t *h = parla__alloc(rt, sizeof *h);
        if (h == NULL) {
            parla__unlock(&s->lock);
            return parla__error(PARLA_ENOMEM, "parla_data_hold: out of memory");
        }
        atomic_init(&h->refs, 1); /* the engine's, while the piece is attached */
        h->rt = rt;
        h->device = device;
        h->owned = p->owned;
        h->buf = p->buf;
        h->lo = p->lo;
        h->nbytes = p->hi - p->lo;
        atomic_fetch_add(&parla__graph_rt(rt)->n_live, 1);
        p->hold = h;
    }
    atomic_fetch_add_explicit(&p->hold->refs, 1, memory_order_relaxed);
    *out = p->hold;
    if (ptr)
        *ptr = virtual_base(p);
    parla__unlock(&s->lock);
    return 0;
}

void *parla_hold_memory(const parla_hold_t *hold, uint64_t *lo, uint64_t *nbytes)
{
    if (hold == NULL) {
        if (lo)
            *lo = 0;
        if (nbytes)
            *nbytes = 0;
        return NULL;
    }
    if (lo)
        *lo = hold->lo;
    if (nbytes)
        *nbytes = hold->nbytes;
    return hold->buf;
}

void parla_hold_release(parla_hold_t *hold)
{
    if (hold)
        hold_unref(hold);
}

parla_runtime_t *parla__data_runtime(const parla_data_t *d)
{
    return d->store->rt;
}

void parla__data_task_dispose(parla_task_t *t)
{
    parla__graph_task_ext_t *x = t->ext;
    for (int i = 0; i < x->n_accesses; i++)
        parla_data_release(x->accesses[i].data);
    x->n_accesses = 0;
    parla__free(x->wait_nodes);
    if (!x->pooled) /* a replayed task's list is its graph's (graph/graph.h) */
        parla__free(x->accesses);
    x->wait_nodes = NULL;
    x->accesses = NULL;
}
