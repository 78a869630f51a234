/* residency.c: residency of copies on devices: the LRU list, eviction with
 * write-back, room for new copies, pins of copies in use by running tasks. */
#include "data/impl.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- lifecycle -- */

/* Removes copy c from its device's LRU list (device lock held). */
void parla__data_lru_unlink(parla__dev_t *dev, parla__dev_copy_t *c)
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
void parla__data_lru_touch(parla__dev_t *dev, parla__dev_copy_t *c)
{
    if (c->listed && dev->lru_tail == c)
        return;
    parla__data_lru_unlink(dev, c);
    c->prev = dev->lru_tail;
    c->next = NULL;
    if (dev->lru_tail)
        dev->lru_tail->next = c;
    else
        dev->lru_head = c;
    dev->lru_tail = c;
    c->listed = 1;
}

/* Writes back to the CPU what only `device` holds of bytes [lo, hi) (segment boundaries there), and marks
 * them invalid on device. s->lock held. */
static int write_back_locked(store_t *s, int device, uint64_t lo, uint64_t hi)
{
    size_t first = lo < s->nbytes ? parla__data_seg_find(s, lo) : s->n_segs;
    for (size_t i = first; i < s->n_segs && s->segs[i].lo < hi; i++) {
        seg_t *g = &s->segs[i];
        if (g->valid == bit(device)) {
            int rc = parla__data_copy_range(s, 0, device, g->lo, g->hi, UINT64_MAX);
            if (rc)
                return rc;
            g->valid |= bit(0);
        }
        g->valid &= ~bit(device);
    }
    parla__data_seg_merge(s);
    return 0;
}

/* True when some range of s is valid only on device (dropping that copy
 * would lose it: it is written back first). s->lock held. */
static bool dirty_locked(const store_t *s, int device)
{
    for (size_t i = 0; i < s->n_segs; i++)
        if (s->segs[i].valid == bit(device))
            return true;
    return false;
}

/* Writes back to the CPU what only `device` holds (a synchronous copy), then
 * drops its copy. Called with s->lock held; takes the device lock for the LRU
 * list only when dev_locked is false (then the write-back runs under no
 * device lock). With dev_locked the copy must be clean (dirty_locked false):
 * no copy is made under the device lock. */
static int evict_locked(store_t *s, int device, bool dev_locked)
{
    parla_runtime_t *rt = s->rt;
    parla__dev_copy_t *c = &s->copies[device];
    if (c->n_pieces == 0 || device == 0)
        return 0;
    if (c->pins > 0)
        return PARLA_EBUSY;
    int rc = write_back_locked(s, device, 0, s->nbytes);
    if (rc)
        return rc;
    parla__dev_t *d = &parla__dev_devs(rt)->devices[device];
    if (!dev_locked)
        pthread_mutex_lock(&d->lock);
    parla__data_lru_unlink(d, c);
    uint64_t bytes = c->bytes;
    d->resident -= bytes;
    c->bytes = 0;
    if (!dev_locked)
        pthread_mutex_unlock(&d->lock);
    parla__data_copy_drop_buf(rt, c);
    atomic_fetch_and(&s->planned, ~bit(device));
    atomic_fetch_add_explicit(&d->evictions, 1, memory_order_relaxed);
    if (parla__graph_rt(rt)->trace)
        parla__trace_evict(parla__graph_rt(rt)->trace, parla__trace_now_ns(), device, bytes);
    return 0;
}

/* One account per device: data copies and the memory tasks reserved
 * (memory=) share its capacity. Device lock held. */
uint64_t parla__data_used_locked(const parla__dev_t *d)
{
    return d->resident + (d->memory_capacity - d->memory_free);
}

/* Evicts least-recently-used unpinned clean copies (nothing to write back) of
 * stores other than `keep` (NULL: any) until `need` more bytes fit in d's
 * account. Device lock held throughout; victims' store locks are only
 * try-locked (store locks come first in the lock order). Returns an idle
 * dirty victim it passed over, its store locked and referenced (the caller
 * writes it back, unlocks and releases it), or NULL: either room was made, or
 * the list ended. */
static parla__dev_copy_t *evict_clean_locked(parla__dev_t *d, store_t *keep, uint64_t need)
{
    parla__dev_copy_t *v = d->lru_head;
    while (parla__data_used_locked(d) + need > d->memory_capacity && v) {
        parla__dev_copy_t *next = v->next;
        if (v->store != keep && pthread_mutex_trylock(&v->store->lock) == 0) {
            /* The victim's lock is held (pins are read under it); the device lock too. A store
             * whose last reference is gone is being freed (store_free): left to it. */
            store_t *vs = v->store;
            int refs = atomic_load(&vs->refs);
            if (v->pins == 0 && refs > 0 && dirty_locked(vs, d->index)) {
                /* Kept alive across the write-back. */
                while (refs > 0 && !atomic_compare_exchange_weak(&vs->refs, &refs, refs + 1))
                    ;
                if (refs > 0)
                    return v;
            } else if (v->pins == 0 && refs > 0) {
                evict_locked(vs, d->index, true);
            }
            pthread_mutex_unlock(&vs->lock);
        }
        v = next;
    }
    return NULL;
}

/* Evicts least-recently-used unpinned copies of stores other than `keep` until
 * `need` more bytes fit in d's account (best effort: stops at the end of the
 * list). Entered and left with d's lock held, which it drops while it writes
 * a victim back: the victim is picked under the device lock with its store
 * lock taken (try-lock), which it keeps across the copy (so nothing uses or
 * changes the idle copy meanwhile), and frees once the device lock is
 * retaken. The caller holds no other device lock (it may hold keep's lock and
 * d's acquire_lock). */
static void evict_for_locked(parla__dev_t *d, store_t *keep, uint64_t need)
{
    /* Bounded: a write-back is retried only while copies keep becoming dirty. */
    for (int writebacks = 0; writebacks < 64; writebacks++) {
        parla__dev_copy_t *v = evict_clean_locked(d, keep, need);
        if (v == NULL)
            return;
        store_t *vs = v->store;
        pthread_mutex_unlock(&d->lock);
        int rc = write_back_locked(vs, d->index, 0, vs->nbytes);
        pthread_mutex_lock(&d->lock);
        if (rc == 0)
            evict_locked(vs, d->index, true); /* clean now */
        pthread_mutex_unlock(&vs->lock);
        /* The reference is dropped with no device lock held (the last one frees the store, which
         * takes the device locks). */
        pthread_mutex_unlock(&d->lock);
        parla__data_store_release(vs);
        pthread_mutex_lock(&d->lock);
        if (rc != 0)
            return; /* the device failed the copy: the copy stays, nothing is lost */
    }
}

void parla__data_make_room(parla__dev_t *d)
{
    if (d->index == 0)
        return;
    pthread_mutex_lock(&d->lock);
    evict_for_locked(d, NULL, 0);
    pthread_mutex_unlock(&d->lock);
}

uint64_t parla__data_pinned_bytes_locked(const parla__dev_t *d)
{
    uint64_t n = 0;
    for (const parla__dev_copy_t *c = d->lru_head; c; c = c->next)
        if (atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
            n += c->bytes;
    return n;
}

/* The extent [*lo, *hi) widened to the extents of all of task t's accesses to store s for device: what t
 * asks of s there, in one piece. So a task's own accesses never wait for one another to merge, and a task's
 * code finds all it declared of one base in one allocation (parla_data_device_ptr of the base). */
void parla__data_task_extent(const parla_task_t *t, const store_t *s, int device, uint64_t *lo, uint64_t *hi)
{
    if (t == NULL || t->ext == NULL || *lo == *hi)
        return;
    for (int i = 0; i < t->ext->n_accesses; i++) {
        const parla__graph_access_t *x = &t->ext->accesses[i];
        const parla_data_t *a = x->data;
        uint64_t alo, ahi;
        if (a->store != s || x->slot >= t->n_devices || access_device(t, x) != device)
            continue;
        parla__data_extent(a, &alo, &ahi);
        if (alo == ahi)
            continue;
        *lo = alo < *lo ? alo : *lo;
        *hi = ahi > *hi ? ahi : *hi;
    }
}

/* The pieces [*a, *b) of c that [lo, hi) overlaps or touches, the range one piece replacing them and
 * covering [lo, hi) spans, and their bytes (*old). */
static void merge_span(const parla__dev_copy_t *c, uint64_t lo, uint64_t hi, size_t *a, size_t *b, uint64_t *nlo,
                       uint64_t *nhi, uint64_t *old)
{
    size_t i = parla__data_piece_index(c, lo, true), j = i;
    *old = 0;
    *nlo = lo;
    *nhi = hi;
    while (j < c->n_pieces && c->pieces[j].lo <= hi) {
        *old += c->pieces[j].hi - c->pieces[j].lo;
        j++;
    }
    if (j > i) {
        *nlo = c->pieces[i].lo < lo ? c->pieces[i].lo : lo;
        *nhi = c->pieces[j - 1].hi > hi ? c->pieces[j - 1].hi : hi;
    }
    *a = i;
    *b = j;
}

/* The bytes that giving copy c a piece holding [lo, hi) adds to its device's account at the least (0 when
 * one holds it already). Merged with the pieces it overlaps or touches, it adds the merged piece's bytes
 * beyond theirs. When nothing uses the copy, parla__data_ensure_copy can instead write those pieces back
 * and drop them (it does when the merge does not fit), adding [lo, hi)'s bytes less theirs, which may be
 * negative. Store lock held. */
int64_t parla__data_piece_need(const parla__dev_copy_t *c, uint64_t lo, uint64_t hi)
{
    if (lo >= hi || parla__data_piece(c, lo, hi))
        return 0;
    size_t a, b;
    uint64_t nlo, nhi, old;
    merge_span(c, lo, hi, &a, &b, &nlo, &nhi, &old);
    int64_t merged = (int64_t)(nhi - nlo - old);
    if (b == a || atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
        return merged;
    int64_t alone = (int64_t)(hi - lo) - (int64_t)old;
    return alone < merged ? alone : merged;
}

/* Writes back to the CPU what only pieces [a, b) of s's copy on device hold, then drops them (a merge
 * without room for both the old pieces and the new one). s->lock held, nothing uses the copy. */
static int writeback_pieces(store_t *s, int device, size_t a, size_t b)
{
    parla__dev_copy_t *c = &s->copies[device];
    uint64_t freed = 0;
    for (size_t k = a; k < b; k++) {
        uint64_t plo = c->pieces[k].lo, phi = c->pieces[k].hi;
        if (parla__data_seg_split(s, plo) || parla__data_seg_split(s, phi))
            return parla__error(PARLA_ENOMEM, "cannot split the segment map of a data object");
        int rc = write_back_locked(s, device, plo, phi);
        if (rc)
            return rc;
        freed += phi - plo;
    }
    parla__dev_t *d = &parla__dev_devs(s->rt)->devices[device];
    parla__data_pieces_drop(s->rt, c, a, b);
    memmove(&c->pieces[a], &c->pieces[b], (c->n_pieces - b) * sizeof *c->pieces);
    c->n_pieces -= b - a;
    pthread_mutex_lock(&d->lock);
    d->resident -= freed;
    c->bytes -= freed;
    pthread_mutex_unlock(&d->lock);
    return 0;
}

/* Gives store s (locked by the caller) a piece holding bytes [lo, hi) on device, evicting other stores'
 * least-recently-used unpinned copies to make room. Pieces that [lo, hi) overlaps or touches are merged
 * into the new one (see parla__dev_copy in impl.h): their contents are copied into it on the device, then
 * they are freed; only when nothing uses the copy (PARLA_EBUSY otherwise: the caller waits for unpins,
 * as for room). The account counts the difference; while the merge copies, the device holds both. */
int parla__data_ensure_copy(store_t *s, int device, parla_task_t *t, uint64_t lo, uint64_t hi)
{
    parla__dev_copy_t *c = &s->copies[device];
    if (device == 0 || lo >= hi || parla__data_piece(c, lo, hi))
        return 0;
    parla_runtime_t *rt = s->rt;
    parla__dev_t *d = &parla__dev_devs(rt)->devices[device];
    size_t a, b;
    uint64_t nlo, nhi, old;
    merge_span(c, lo, hi, &a, &b, &nlo, &nhi, &old);
    if (b > a && atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
        return PARLA_EBUSY; /* a running task or a copy in flight uses a piece to merge */
    if (b == a && c->n_pieces == c->cap_pieces) {
        size_t cap = c->cap_pieces ? 2 * c->cap_pieces : 2;
        piece_t *n = parla__alloc(rt, cap * sizeof *n);
        if (n == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot track the allocations of a data object on %s",
                                t ? parla_task_name(t) : "(none)", d->name);
        if (c->n_pieces)
            memcpy(n, c->pieces, c->n_pieces * sizeof *n);
        parla__free(c->pieces);
        c->pieces = n;
        c->cap_pieces = cap;
    }
    uint64_t size = nhi - nlo, add = size - old;
    pthread_mutex_lock(&d->lock);
    /* A merge copies on the device when the old pieces and the new one fit at once (after the eviction
     * the merge needs anyway); otherwise the old
     * pieces are written back (what only they hold) and dropped first, and the new piece holds
     * [lo, hi) only: more copying, no more memory than the result. */
    evict_for_locked(d, s, add);
    bool on_device = b == a || parla__data_used_locked(d) + size <= d->memory_capacity;
    pthread_mutex_unlock(&d->lock);
    if (!on_device) {
        int wb = writeback_pieces(s, device, a, b);
        if (wb)
            return wb;
        merge_span(c, lo, hi, &a, &b, &nlo, &nhi, &old); /* [lo, hi) alone now */
        size = nhi - nlo;
        add = size;
    }
    pthread_mutex_lock(&d->lock);
    evict_for_locked(d, s, add);
    if (parla__data_used_locked(d) + add > d->memory_capacity) {
        /* What is resident is in use by running tasks: wait for them. */
        pthread_mutex_unlock(&d->lock);
        return PARLA_EBUSY;
    }
    d->resident += add; /* claimed before allocating, so no one overcommits */
    pthread_mutex_unlock(&d->lock);
    void *buf = NULL;
    int rc = d->ops->alloc(d, size, &buf);
    /* A merge on the device: the old pieces' bytes move into the new one (what is invalid in them is
     * copied too, and stays invalid). Nothing uses them (pins == 0), so the copy is the only access. */
    for (size_t i = a; rc == 0 && i < b; i++) {
        piece_t *p = &c->pieces[i];
        rc = d->ops->copy(d, (char *)buf + (p->lo - nlo), d, p->buf, p->hi - p->lo);
        if (rc)
            d->ops->free(d, buf);
    }
    if (rc) {
        pthread_mutex_lock(&d->lock);
        d->resident -= add;
        pthread_mutex_unlock(&d->lock);
        return parla__error(rc == PARLA_ENOMEM ? PARLA_ERESOURCE : rc,
                            "task %s: cannot allocate %llu bytes on %s", t ? parla_task_name(t) : "(none)",
                            (unsigned long long)size, d->name);
    }
    parla__data_pieces_drop(rt, c, a, b);
    if (b > a + 1)
        memmove(&c->pieces[a + 1], &c->pieces[b], (c->n_pieces - b) * sizeof *c->pieces);
    else if (b == a)
        memmove(&c->pieces[a + 1], &c->pieces[a], (c->n_pieces - a) * sizeof *c->pieces);
    c->n_pieces = c->n_pieces - (b - a) + 1;
    c->pieces[a] = (piece_t){.lo = nlo, .hi = nhi, .buf = buf, .owned = 1};
    /* Listed at once: a copy that its maker does not end up using (a
     * preparation that fails, a fetch) can still be evicted. */
    pthread_mutex_lock(&d->lock);
    c->bytes += add;
    parla__data_lru_touch(d, c);
    pthread_mutex_unlock(&d->lock);
    return 0;
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
    parla__dev_t *d = &parla__dev_devs(rt)->devices[device];
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
    if (retry || reserve)
        parla__data_rt(rt)->dhooks.unpinned(retry, reserve);
}

void parla__data_unpin(store_t *s, int device, int count)
{
    unpin_store(s, device, count);
    device_unpinned(s->rt, device, count);
}

/* Drops the store pins of t's first n accesses, each on its device (the
 * devices' pin counts are the caller's). */
void parla__data_unpin_accesses(parla_task_t *t, int n)
{
    for (int i = 0; i < n; i++)
        unpin_store(t->ext->accesses[i].data->store, access_device(t, &t->ext->accesses[i]), 1);
}

void parla__data_pin_locked(store_t *s, int device)
{
    s->copies[device].pins++;
    if (device != 0) {
        parla__dev_t *d = &parla__dev_devs(s->rt)->devices[device];
        pthread_mutex_lock(&d->lock);
        d->n_pins++;
        pthread_mutex_unlock(&d->lock);
    }
}

void parla__data_release_task(parla_task_t *t)
{
    parla__graph_task_ext_t *x = t->ext;
    parla__data_unpin_accesses(t, x->n_accesses);
    /* Then each device's count, one device lock at a time, in index order. */
    uint64_t used = 0;
    for (int i = 0; i < x->n_accesses; i++)
        used |= bit(access_device(t, &x->accesses[i]));
    for (uint64_t m = used & ~bit(0); m; m &= m - 1) {
        int dev = lowest(m), count = 0;
        for (int i = 0; i < x->n_accesses; i++)
            count += access_device(t, &x->accesses[i]) == dev;
        device_unpinned(t->rt, dev, count);
    }
}

void parla__data_wait_for_room(parla_task_t *t)
{
    int slot = t->ext->room_slot;
    parla__dev_t *d = &parla__dev_devs(t->rt)->devices[t->devices[slot]];
    pthread_mutex_lock(&d->lock);
    /* Retry at once if copies were unpinned since the attempt, or if none is
     * pinned at all (the attempt lost a race for a victim's lock). */
    bool now = d->unpin_epoch != t->ext->data_epoch[slot] || d->n_pins == 0;
    if (!now) {
        t->qnext = d->data_blocked;
        d->data_blocked = t;
    }
    pthread_mutex_unlock(&d->lock);
    if (!now)
        return;
    /* Retried from the device's engine, not from here: the retry may fail
     * the same way, and must not recurse on this thread's stack. */
    if (parla__data_rt(t->rt)->dhooks.retry(t))
        return;
    sched_yield();
    parla__graph_rt(t->rt)->ghooks.ready(t);
}

int parla_data_evict(parla_data_t *d, int device, int keep_one_copy)
{
    if (d == NULL)
        return parla__error(PARLA_EINVAL, "parla_data_evict: data is NULL");
    store_t *s = d->store;
    parla_runtime_t *rt = s->rt;
    if (device < -1 || device >= parla__dev_devs(rt)->n_devices)
        return parla__error(PARLA_ENODEV, "parla_data_evict: no device %d", device);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 1; i < parla__dev_devs(rt)->n_devices && rc == 0; i++) {
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
