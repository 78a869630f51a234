/* evict.c: eviction of copies from devices and their write-back to the CPU, with no lock held across a
 * device call: a victim is picked (and, when only it holds some bytes, pinned) under the device lock and
 * its store's lock, then written back and freed with both dropped.
 *
 * A write-back (wb_t) of what only device `dev` holds of a range of a store: begun under the store's lock
 * (wb_begin_locked), it pins the copy on dev (no eviction, no merge meanwhile: both need pins == 0),
 * resolves the addresses of the bytes to copy (the pieces stay while pinned), and marks those bytes valid
 * on the CPU but still arriving there, as a queued copy does: the CPU's arrival (and dev's, which it also
 * becomes) takes one more copy. Tasks that use the store on the CPU or on dev meanwhile, and tasks that
 * write those bytes anywhere (on the CPU the write-back must not land on their write; on another GPU a
 * copy to the CPU planned after their write must land after this one), wait for that arrival through the data waiter callback (prepare.c phases 2 and 4),
 * parla_data_fetch waits on its condition, and copies from dev to other devices may still read it (a
 * read). Outside tasks the write-back is queued on dev's engine before any lock is dropped, so the
 * stuck check sees it under way as soon as a task can wait for it. The copy runs with no lock
 * (wb_copy); wb_end marks the bytes arrived, unpins, drops the copy when asked and nothing uses it, and
 * completes the arrival. */
#include "data/impl.h"

#include <string.h>

/* True when some byte of s in [lo, hi) is valid only on device (dropping it there would lose it: it is
 * written back first). s->lock held. */
bool parla__data_dirty_in_locked(const store_t *s, int device, uint64_t lo, uint64_t hi)
{
    size_t i = lo < s->nbytes ? parla__data_seg_find(s, lo) : s->n_segs;
    for (; i < s->n_segs && s->segs[i].lo < hi; i++)
        if (s->segs[i].valid == bit(device))
            return true;
    return false;
}

bool parla__data_dirty_locked(const store_t *s, int device)
{
    return parla__data_dirty_in_locked(s, device, 0, s->nbytes);
}

/* Pieces taken from a copy under the locks, freed with none held (parla__data_pieces_free). */
typedef struct dropped {
    parla_runtime_t *rt;
    piece_t *pieces;
    size_t n;
    int device;
    uint64_t bytes; /* still in the device's account until freed (the driver holds them until then) */
} dropped_t;

static void dropped_free(dropped_t *dr)
{
    if (dr->rt) {
        parla__data_pieces_free(dr->rt, dr->device, dr->pieces, dr->n);
        parla__dev_t *d = &parla__dev_devs(dr->rt)->devices[dr->device];
        parla__lock(&d->lock);
        d->resident -= dr->bytes;
        parla__unlock(&d->lock);
    }
    *dr = (dropped_t){0};
}

/* Drops s's idle clean copy on device from the segment map, the device's account and LRU list; its
 * pieces go to *out (freed by the caller once no lock is held). s->lock held; d's lock too when
 * dev_locked. The copy must be idle (pins == 0, busy == 0) and clean (nothing only there). */
static void detach_copy(store_t *s, int device, bool dev_locked, dropped_t *out)
{
    parla_runtime_t *rt = s->rt;
    parla__dev_copy_t *c = &s->copies[device];
    parla__dev_t *d = &parla__dev_devs(rt)->devices[device];
    for (size_t i = 0; i < s->n_segs; i++)
        s->segs[i].valid &= ~bit(device);
    parla__data_seg_merge(s);
    if (!dev_locked)
        parla__lock(&d->lock);
    parla__data_lru_unlink(d, c);
    uint64_t bytes = c->bytes;
    c->bytes = 0;
    if (!dev_locked)
        parla__unlock(&d->lock);
    *out = (dropped_t){.rt = rt, .pieces = c->pieces, .n = c->n_pieces, .device = device, .bytes = bytes};
    c->pieces = NULL;
    c->n_pieces = c->cap_pieces = 0;
    atomic_fetch_and(&s->planned, ~bit(device));
    atomic_fetch_add_explicit(&d->evictions, 1, memory_order_relaxed);
    if (parla__graph_rt(rt)->trace)
        parla__trace_evict(parla__graph_rt(rt)->trace, parla__trace_now_ns(), device, bytes);
}

/* ------------------------------------------------------------ write-back -- */

typedef struct wb_range {
    uint64_t lo, hi;
    void *dst;       /* on the CPU */
    const void *src; /* on dev */
} wb_range_t;

struct wb;
/* A write-back outside tasks, run on the device's engine while its caller waits (see outside below). */
typedef struct wb_job {
    parla__dev_job_t job; /* first */
    struct wb *wb;
    bool gone, done;
    int rc;
    pthread_mutex_t lock; /* a leaf: done, between the engine thread and the waiting caller */
    pthread_cond_t cond;
} wb_job_t;

typedef struct wb {
    store_t *s;
    int dev;
    arrival_t *arr; /* a reference */
    wb_range_t *r;
    size_t n, cap;
    bool drop;   /* the copy is dropped at the end when nothing uses it */
    bool queued; /* on the engine (j) */
    wb_job_t j;
} wb_t;

static void wb_queue_locked(wb_t *wb);

static int wb_add(wb_t *wb, uint64_t lo, uint64_t hi, void *dst, const void *src)
{
    if (wb->n == wb->cap) {
        size_t cap = wb->cap ? 2 * wb->cap : 4;
        wb_range_t *n = parla__alloc(wb->s->rt, cap * sizeof *n);
        if (n == NULL)
            return parla__error(PARLA_ENOMEM, "cannot plan the write-back of a data object");
        if (wb->n)
            memcpy(n, wb->r, wb->n * sizeof *n);
        parla__free(wb->r);
        wb->r = n;
        wb->cap = cap;
    }
    wb->r[wb->n++] = (wb_range_t){lo, hi, dst, src};
    return 0;
}

/* Begins the write-back of what only dev holds of s's bytes [lo, hi) (see above), to drop the copy at
 * its end when drop. s->lock held (and maybe d's lock); the copy is not busy. On success with wb->n == 0
 * nothing is to be copied and nothing was changed; otherwise the caller drops its locks and calls wb_run
 * (wb stays where it is until then). Outside tasks the write-back is queued on the engine here, before
 * the store's lock is dropped: no task sees its arrival before the scheduler sees it under way. */
static int wb_begin_locked(wb_t *wb, store_t *s, int dev, uint64_t lo, uint64_t hi, bool drop)
{
    *wb = (wb_t){.s = s, .dev = dev, .drop = drop};
    parla__dev_copy_t *c = &s->copies[dev], *cpu = &s->copies[0];
    if (parla__data_seg_split(s, lo) || parla__data_seg_split(s, hi))
        return parla__error(PARLA_ENOMEM, "cannot split the segment map of a data object");
    size_t first = lo < s->nbytes ? parla__data_seg_find(s, lo) : s->n_segs;
    for (size_t i = first; i < s->n_segs && s->segs[i].lo < hi; i++) {
        seg_t *g = &s->segs[i];
        if (g->valid != bit(dev))
            continue;
        for (uint64_t x = g->lo; x < g->hi;) {
            uint64_t end = 0, cend = 0;
            const void *src = parla__data_addr(c, x, &end);
            void *dst = parla__data_addr(cpu, x, &cend);
            if (src == NULL || dst == NULL) {
                parla__free(wb->r);
                return parla__error(PARLA_EDEVICE, "byte %llu of a data object has no allocation on %s",
                                    (unsigned long long)x, parla__dev_devs(s->rt)->devices[src ? 0 : dev].name);
            }
            end = end < g->hi ? end : g->hi;
            int rc = wb_add(wb, x, end, dst, src);
            if (rc) {
                parla__free(wb->r);
                return rc;
            }
            x = end;
        }
    }
    if (wb->n == 0) {
        parla__data_seg_merge(s);
        return 0;
    }
    /* The CPU's arrival takes one more copy (or a new one starts), and becomes dev's too. */
    arrival_t *arr = cpu->arriving;
    bool joined = false;
    if (arr) {
        parla__lock(&arr->lock);
        if (!arr->done) {
            arr->remaining++;
            joined = true;
        }
        parla__unlock(&arr->lock);
    }
    if (!joined) {
        arrival_t *fresh = parla__data_arrival_new(s->rt);
        if (fresh == NULL) {
            parla__free(wb->r);
            return parla__error(PARLA_ENOMEM, "cannot track the write-back of a data object");
        }
        fresh->remaining = 1;
        parla__data_arrival_unref(arr);
        cpu->arriving = arr = fresh;
    }
    atomic_fetch_add(&arr->refs, 2); /* dev's, and the write-back's */
    parla__data_arrival_unref(c->arriving);
    c->arriving = arr;
    wb->arr = arr;
    for (size_t k = 0; k < wb->n; k++) {
        for (size_t i = parla__data_seg_find(s, wb->r[k].lo); i < s->n_segs && s->segs[i].lo < wb->r[k].hi; i++) {
            s->segs[i].valid |= bit(0);
            s->segs[i].arriving |= bit(0);
        }
    }
    parla__data_seg_merge(s);
    atomic_fetch_add(&s->refs, 1); /* the store outlives the write-back */
    /* A pin of the store's copy only, not of the device's count (d->n_pins, the pins of tasks): a task
     * that finds no room waits for those (parla__data_wait_for_room), and a write-back outside tasks
     * (parla_data_evict) must not leave the scheduler seeing it wait on nothing running; its end wakes
     * the waiting tasks all the same (the unpin epoch moves). */
    c->pins++;
    wb_queue_locked(wb);
    return 0;
}

/* Makes the copies of a begun write-back. No lock held. */
static int wb_copy(wb_t *wb)
{
    parla_runtime_t *rt = wb->s->rt;
    for (size_t k = 0; k < wb->n; k++) {
        wb_range_t *r = &wb->r[k];
        uint64_t t0 = parla__graph_rt(rt)->trace ? parla__trace_now_ns() : 0;
        int rc = parla__data_copy_addrs(rt, 0, r->dst, wb->dev, r->src, r->hi - r->lo);
        if (rc)
            return rc;
        parla__data_copy_done(rt, 0, wb->dev, r->lo, r->hi, UINT64_MAX, t0);
    }
    return 0;
}

/* Ends a write-back whose copies returned rc (no lock held; takes s->lock): its bytes have arrived on the
 * CPU (on an error, they are valid on dev again, as after a failed queued copy), the copy is unpinned
 * and, with drop, dropped from dev when nothing uses it and nothing there is left only there; then the
 * arrival's waiters go on and tasks waiting for room on dev retry. Drops the write-back's store
 * reference. Returns true when the copy was dropped. */
static bool wb_end(wb_t *wb, int rc, bool drop)
{
    store_t *s = wb->s;
    parla_runtime_t *rt = s->rt;
    int dev = wb->dev;
    parla__dev_copy_t *c = &s->copies[dev];
    dropped_t dr = {0};
    bool dropped = false;
    parla__lock(&s->lock);
    for (size_t k = 0; k < wb->n; k++) {
        uint64_t lo = wb->r[k].lo, hi = wb->r[k].hi;
        if (parla__data_seg_split(s, lo) || parla__data_seg_split(s, hi))
            continue; /* no memory to split: the arriving mark stays (a preference only) */
        for (size_t i = parla__data_seg_find(s, lo); i < s->n_segs && s->segs[i].lo < hi; i++) {
            seg_t *g = &s->segs[i];
            g->arriving &= ~bit(0);
            /* Failed: dev's bytes are the data again, unless a write elsewhere (on a GPU) replaced them
             * meanwhile (a write on the CPU waited for this arrival, and fails with it). */
            if (rc && (g->valid & bit(0)))
                g->valid = (g->valid & ~bit(0)) | bit(dev);
        }
    }
    parla__data_seg_merge(s);
    c->pins--;
    if (drop && rc == 0 && c->pins == 0 && c->busy == 0 && c->n_pieces > 0 && !parla__data_dirty_locked(s, dev)) {
        detach_copy(s, dev, false, &dr);
        dropped = true;
    }
    parla__unlock(&s->lock);
    parla__data_arrival_finish(rt, wb->arr, rc);
    parla__data_arrival_unref(wb->arr);
    parla__free(wb->r);
    dropped_free(&dr);
    parla__data_device_unpinned_deferred(rt, dev, 0);
    parla__data_store_release(s);
    return dropped;
}

/* Set while the calling thread is in parla_data_evict or parla_data_fetch outside tasks
 * (parla__data_outside_begin): its write-backs run on the device's engine (it waits for them), so that
 * the stuck check sees them under way while tasks wait for their arrival. */
static _Thread_local bool outside;

bool parla__data_outside_begin(void)
{
    bool was = outside;
    outside = parla__self() == NULL;
    return was;
}

void parla__data_outside_end(bool was)
{
    outside = was;
}

static bool wbj_issue(parla__dev_job_t *j, parla__dev_t *d)
{
    (void)d;
    wb_job_t *w = (wb_job_t *)j;
    w->rc = wb_copy(w->wb);
    return true;
}

static void wbj_done(parla__dev_job_t *j, bool waited)
{
    (void)waited;
    wb_job_t *w = (wb_job_t *)j;
    w->gone = wb_end(w->wb, w->rc, w->wb->drop);
    parla__data_wake_deferred();
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static const parla__dev_job_ops_t wbj_ops = {wbj_issue, NULL, wbj_done};

/* Queues a begun write-back on the device's engine when the thread is outside tasks (see outside). */
static void wb_queue_locked(wb_t *wb)
{
    parla__dev_t *d = &parla__dev_devs(wb->s->rt)->devices[wb->dev];
    if (!outside || !d->engine_running)
        return;
    wb->j = (wb_job_t){.job.ops = &wbj_ops, .wb = wb};
    pthread_mutex_init(&wb->j.lock, NULL);
    pthread_cond_init(&wb->j.cond, NULL);
    wb->queued = true;
    parla__dev_engine_submit(d, &wb->j.job);
}

/* Runs a begun write-back (wb_copy, then wb_end; no lock held): waits for it on the engine when it was
 * queued there, else makes it here. *rc: the copies' result; true when the copy was dropped. */
static bool wb_run(wb_t *wb, int *rc)
{
    if (wb->queued) {
        wb_job_t *j = &wb->j;
        pthread_mutex_lock(&j->lock);
        while (!j->done)
            pthread_cond_wait(&j->cond, &j->lock);
        pthread_mutex_unlock(&j->lock);
        pthread_mutex_destroy(&j->lock);
        pthread_cond_destroy(&j->cond);
        *rc = j->rc;
        return j->gone;
    }
    *rc = wb_copy(wb);
    return wb_end(wb, *rc, wb->drop);
}

/* Writes back to the CPU what only device holds of s's bytes [lo, hi). Entered and left with s->lock
 * held, dropped while it copies; the copy on device must not be evicted meanwhile by the caller's
 * choice (it is pinned during the copy). Tasks using those bytes on the CPU wait for them. */
int parla__data_writeback_range(store_t *s, int device, uint64_t lo, uint64_t hi)
{
    wb_t wb;
    int rc = wb_begin_locked(&wb, s, device, lo, hi, false);
    if (rc || wb.n == 0)
        return rc;
    parla__unlock(&s->lock);
    wb_run(&wb, &rc);
    parla__lock(&s->lock);
    return rc;
}

/* For a merge without room for both the old pieces [a, b) of copy c and the new one
 * (parla__data_ensure_copy): writes back to the CPU what only they hold (with s->lock dropped while it
 * copies) and marks them invalid on the device; the caller then takes them out and frees them. Entered
 * and left with s->lock held, the copy busy merging. PARLA_EBUSY when a copy in flight reads them
 * meanwhile, or when their bytes keep becoming valid only here.
 *
 * The pieces are marked invalid only once, under one hold of the lock, none of their bytes is valid only
 * on the device: while the lock is dropped for one write-back, an eviction of another device's clean copy
 * may leave bytes written back earlier, or never dirty, valid only here (they were valid on both), and
 * marking those invalid would lose them. */
int parla__data_writeback_pieces_locked(store_t *s, parla__dev_copy_t *c, size_t a, size_t b)
{
    int device = c->device;
    /* Bounded: a piece is written back again only when bytes of it became valid only here meanwhile. */
    size_t writebacks = 0, most = 4 * (b - a) + 16;
    for (;;) {
        size_t k = a;
        while (k < b && !parla__data_dirty_in_locked(s, device, c->pieces[k].lo, c->pieces[k].hi))
            k++;
        if (k == b)
            break;
        if (writebacks++ == most)
            return PARLA_EBUSY;
        int rc = parla__data_writeback_range(s, device, c->pieces[k].lo, c->pieces[k].hi);
        if (rc)
            return rc;
    }
    if (c->pins > 0)
        return PARLA_EBUSY;
    for (size_t k = a; k < b; k++)
        if (parla__data_seg_split(s, c->pieces[k].lo) || parla__data_seg_split(s, c->pieces[k].hi))
            return parla__error(PARLA_ENOMEM, "cannot split the segment map of a data object");
    for (size_t k = a; k < b; k++)
        for (size_t i = parla__data_seg_find(s, c->pieces[k].lo); i < s->n_segs && s->segs[i].lo < c->pieces[k].hi; i++)
            s->segs[i].valid &= ~bit(device);
    parla__data_seg_merge(s);
    return 0;
}

/* ------------------------------------------------------------- eviction -- */

enum { PICK_NONE, PICK_CLEAN, PICK_DIRTY };

/* Picks the least-recently-used idle copy of a store other than keep (NULL: any) while `need` more
 * bytes do not fit in d's account. d's lock held; victims' store locks are only try-locked (store locks
 * come first in the lock order). A clean victim is detached at once (its pieces in *dr, to free with no
 * lock held): PICK_CLEAN. A dirty one gets its write-back begun (*wb, holding a store reference):
 * PICK_DIRTY. PICK_NONE: room was made, or the list ended. */
static int pick_victim_locked(parla__dev_t *d, store_t *keep, uint64_t need, wb_t *wb, dropped_t *dr)
{
    for (parla__dev_copy_t *v = d->lru_head; v && parla__data_used_locked(d) + need > d->memory_capacity;
         v = v->next) {
        if (v->store == keep || atomic_load_explicit(&v->pins, memory_order_relaxed) > 0 ||
            parla__trylock(&v->store->lock) != 0)
            continue;
        /* A store whose last reference is gone is being freed (store_free): left to it. */
        store_t *vs = v->store;
        int refs = atomic_load(&vs->refs);
        int kind = PICK_NONE;
        if (v->pins == 0 && v->busy == 0 && refs > 0) {
            if (!parla__data_dirty_locked(vs, d->index)) {
                detach_copy(vs, d->index, true, dr);
                kind = PICK_CLEAN;
            } else if (wb_begin_locked(wb, vs, d->index, 0, vs->nbytes, true) == 0 && wb->n > 0) {
                kind = PICK_DIRTY;
            }
        }
        parla__unlock(&vs->lock);
        if (kind != PICK_NONE)
            return kind;
    }
    return PICK_NONE;
}

/* Evicts least-recently-used idle copies of stores other than keep until `need` more bytes fit in d's
 * account (best effort: stops at the end of the list). Entered and left with d's lock held, which it
 * drops to free each victim and while it writes one back; the caller holds no other lock. */
void parla__data_evict_for_locked(parla__dev_t *d, store_t *keep, uint64_t need)
{
    /* Bounded: a write-back is retried only while copies keep becoming dirty. */
    for (int writebacks = 0; writebacks < 64;) {
        wb_t wb;
        dropped_t dr = {0};
        int kind = pick_victim_locked(d, keep, need, &wb, &dr);
        if (kind == PICK_NONE)
            return;
        parla__unlock(&d->lock);
        if (kind == PICK_CLEAN) {
            dropped_free(&dr);
        } else {
            int rc;
            wb_run(&wb, &rc);
            writebacks++;
            if (rc) {
                parla__lock(&d->lock);
                return; /* the device failed the copy: the copy stays, nothing is lost */
            }
        }
        parla__lock(&d->lock);
    }
}

void parla__data_make_room(parla__dev_t *d)
{
    if (d->index == 0)
        return;
    parla__lock(&d->lock);
    parla__data_evict_for_locked(d, NULL, 0);
    parla__unlock(&d->lock);
    parla__data_wake_deferred();
}

/* Evicts s's copy on device (parla_data_evict): waits for a copy being allocated or merged there and
 * for copies arriving there, writes back what only it holds (with no lock held), then drops it.
 * PARLA_EBUSY when a running task (or a copy in flight from it) uses it. No lock held. */
static int evict_copy(store_t *s, int device)
{
    parla__dev_copy_t *c = &s->copies[device];
    for (int tries = 0; tries < 64; tries++) {
        parla__lock(&s->lock);
        while (c->busy)
            pthread_cond_wait(&s->cond, &s->lock);
        if (c->n_pieces == 0) {
            parla__unlock(&s->lock);
            return 0;
        }
        arrival_t *arr = c->arriving;
        if (parla__data_arrival_pending(arr)) {
            atomic_fetch_add(&arr->refs, 1);
            parla__unlock(&s->lock);
            parla__data_arrival_wait(arr);
            parla__data_arrival_unref(arr);
            continue;
        }
        if (c->pins > 0) {
            parla__unlock(&s->lock);
            return PARLA_EBUSY;
        }
        if (!parla__data_dirty_locked(s, device)) {
            dropped_t dr;
            detach_copy(s, device, false, &dr);
            parla__unlock(&s->lock);
            dropped_free(&dr);
            return 0;
        }
        wb_t wb;
        int rc = wb_begin_locked(&wb, s, device, 0, s->nbytes, true);
        parla__unlock(&s->lock);
        if (rc)
            return rc;
        bool gone = wb_run(&wb, &rc);
        if (rc || gone)
            return rc;
    }
    return PARLA_EBUSY;
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
    bool was = parla__data_outside_begin();
    for (int i = 1; i < parla__dev_devs(rt)->n_devices && rc == 0; i++) {
        if (device != -1 && device != i)
            continue;
        /* The last valid copy is always written back first, whatever
         * keep_one_copy says: this runtime never drops data. */
        (void)keep_one_copy;
        rc = evict_copy(s, i);
    }
    parla__data_outside_end(was);
    parla__data_wake_deferred();
    if (rc == PARLA_EBUSY)
        return parla__error(rc, "parla_data_evict: the copy is in use by a running task");
    return rc;
}
