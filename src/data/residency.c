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

/* One account per device: data copies, the room preparations claimed for
 * copies not allocated yet, and the memory tasks reserved (memory=) share its
 * capacity. Device lock held. */
uint64_t parla__data_used_locked(const parla__dev_t *d)
{
    return d->resident + d->claimed + (d->memory_capacity - d->memory_free);
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

/* Takes pieces [a, b) out of copy c into gone (room for b - a pieces), to be freed with no lock held;
 * returns their bytes. With account, they leave c->bytes; they stay in the device's account until they
 * are freed (the driver holds them until then: room_freed). s->lock held; nothing uses
 * them. */
static uint64_t take_pieces(store_t *s, parla__dev_copy_t *c, size_t a, size_t b, piece_t *gone, bool account)
{
    parla__dev_t *d = &parla__dev_devs(s->rt)->devices[c->device];
    uint64_t freed = 0;
    for (size_t k = a; k < b; k++) {
        gone[k - a] = c->pieces[k];
        freed += c->pieces[k].hi - c->pieces[k].lo;
    }
    memmove(&c->pieces[a], &c->pieces[b], (c->n_pieces - b) * sizeof *c->pieces);
    c->n_pieces -= b - a;
    if (account) {
        parla__lock(&d->lock);
        c->bytes -= freed;
        parla__unlock(&d->lock);
    }
    return freed;
}


/* The room a task's preparation claimed on device and has not used (plan->claim), or NULL. */
static uint64_t *claim_of(plan_t *plan, int device)
{
    for (int i = 0; plan && i < plan->n_claims; i++)
        if (plan->claim_dev[i] == device)
            return &plan->claim[i];
    return NULL;
}

/* One new piece of a copy being made by parla__data_ensure_copy (the copy busy meanwhile). */
typedef struct grow {
    store_t *s;
    parla__dev_copy_t *c;
    parla__dev_t *d;
    const char *who;       /* the task's name, for errors */
    uint64_t lo, hi;       /* the bytes asked for */
    size_t a, b;           /* the pieces merged into the new one */
    uint64_t nlo, nhi;     /* the new piece's bytes */
    uint64_t size, add;    /* its size, and what it adds to the device's account */
    uint64_t dup;          /* a merge on the device: the old pieces' bytes, counted twice until freed
                              (the driver holds them and the new piece at once) */
    uint64_t *claim, mine; /* the preparation's claim (or NULL), and the part of add taken from it */
    bool claimed;          /* add is counted in the account */
    piece_t *gone;         /* room for the merged pieces, freed with them once no lock is held */
    size_t n_gone;
    void *buf;             /* the new allocation, until installed */
} grow_t;

/* Plans g's piece for [g->lo, g->hi) and marks the copy busy. s->lock held; the copy is not busy and
 * has no piece holding those bytes. PARLA_EBUSY when a piece to merge is in use. */
static int grow_begin_locked(grow_t *g)
{
    parla__dev_copy_t *c = g->c;
    uint64_t old;
    merge_span(c, g->lo, g->hi, &g->a, &g->b, &g->nlo, &g->nhi, &old);
    if (g->b > g->a && atomic_load_explicit(&c->pins, memory_order_relaxed) > 0)
        return PARLA_EBUSY; /* a running task or a copy in flight uses a piece to merge */
    if (g->b == g->a && c->n_pieces == c->cap_pieces) {
        size_t cap = c->cap_pieces ? 2 * c->cap_pieces : 2;
        piece_t *n = parla__alloc(g->s->rt, cap * sizeof *n);
        if (n == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot track the allocations of a data object on %s",
                                g->who, g->d->name);
        if (c->n_pieces)
            memcpy(n, c->pieces, c->n_pieces * sizeof *n);
        parla__free(c->pieces);
        c->pieces = n;
        c->cap_pieces = cap;
    }
    g->gone = g->b > g->a ? parla__alloc(g->s->rt, (g->b - g->a) * sizeof *g->gone) : NULL;
    if (g->b > g->a && g->gone == NULL)
        return parla__error(PARLA_ENOMEM, "task %s: cannot merge the allocations of a data object on %s", g->who,
                            g->d->name);
    c->busy = g->b > g->a ? PARLA__COPY_MERGING : PARLA__COPY_ADDING;
    g->size = g->nhi - g->nlo;
    g->add = g->size - old;
    return 0;
}

/* Evicts for g's piece (what the claim does not cover, and dup), d's lock held; returns the part of add
 * taken from the claim. */
static uint64_t grow_evict_locked(grow_t *g)
{
    uint64_t mine = g->claim ? (*g->claim < g->add ? *g->claim : g->add) : 0; /* counted already */
    parla__data_evict_for_locked(g->d, g->s, g->add + g->dup - mine);
    return mine;
}

/* bytes of device that were counted in its account and have been freed leave it; tasks waiting for room
 * there retry (when the calling entry point ends: parla__data_wake_deferred). No lock held. */
static void room_freed(parla_runtime_t *rt, parla__dev_t *d, uint64_t bytes)
{
    if (bytes == 0)
        return;
    parla__lock(&d->lock);
    d->resident -= bytes;
    parla__unlock(&d->lock);
    parla__data_room_given_back(rt, d->index, 0, NULL);
}

/* Makes room for g's piece and counts it in the device's account (g->claimed). No lock held. A merge
 * copies on the device when the old pieces and the new one fit at once (after the eviction the merge
 * needs anyway; the old pieces are then counted twice until freed: g->dup); otherwise the old pieces are
 * written back (what only they hold) and dropped first, and the new piece holds [lo, hi) only: more
 * copying, no more memory than the result. PARLA_EBUSY when what is resident is in use by running tasks
 * (the caller waits for them). The account never counts less than the driver holds: a failed
 * allocation means the device is out of memory, not that it is in transit. */
static int grow_room(grow_t *g)
{
    store_t *s = g->s;
    parla__dev_t *d = g->d;
    parla__lock(&d->lock);
    uint64_t mine = grow_evict_locked(g);
    bool on_device = g->b == g->a || parla__data_used_locked(d) - mine + g->size <= d->memory_capacity;
    parla__unlock(&d->lock);
    if (on_device) {
        g->dup = g->size - g->add;
    } else {
        uint64_t old, freed = 0;
        parla__lock(&s->lock);
        int rc = parla__data_writeback_pieces_locked(s, g->c, g->a, g->b);
        if (rc == 0) {
            freed = take_pieces(s, g->c, g->a, g->b, g->gone, true);
            g->n_gone = g->b - g->a;
            merge_span(g->c, g->lo, g->hi, &g->a, &g->b, &g->nlo, &g->nhi, &old); /* [lo, hi) alone now */
            g->size = g->add = g->nhi - g->nlo;
        }
        parla__unlock(&s->lock);
        parla__data_pieces_free(s->rt, d->index, g->gone, g->n_gone); /* frees gone too */
        room_freed(s->rt, d, freed);
        g->gone = NULL;
        g->n_gone = 0;
        if (rc)
            return rc;
    }
    parla__lock(&d->lock);
    g->mine = grow_evict_locked(g);
    int rc = 0;
    if (parla__data_used_locked(d) + (g->add + g->dup - g->mine) > d->memory_capacity) {
        rc = PARLA_EBUSY;
    } else {
        d->resident += g->add + g->dup; /* counted before allocating, so no one overcommits */
        d->claimed -= g->mine;
        if (g->claim)
            *g->claim -= g->mine;
        g->claimed = true;
    }
    parla__unlock(&d->lock);
    return rc;
}

/* Allocates g's piece and, for a merge on the device, copies the old pieces' bytes into it (what is
 * invalid in them is copied too, and stays invalid). No lock held: no task uses the old pieces (pins was
 * 0, and the copy is busy merging), and they stay meanwhile (only their maker changes a busy copy's
 * pieces). */
static int grow_fill(grow_t *g)
{
    parla__dev_t *d = g->d;
    int rc = d->ops->alloc(d, g->size, &g->buf);
    if (rc) {
        g->buf = NULL;
        return parla__error(rc == PARLA_ENOMEM ? PARLA_ERESOURCE : rc, "task %s: cannot allocate %llu bytes on %s",
                            g->who, (unsigned long long)g->size, d->name);
    }
    for (size_t i = g->a; i < g->b; i++) {
        piece_t *p = &g->c->pieces[i];
        rc = d->ops->copy(d, (char *)g->buf + (p->lo - g->nlo), d, p->buf, p->hi - p->lo);
        if (rc)
            return parla__error(rc, "task %s: cannot merge the allocations of a data object on %s", g->who, d->name);
    }
    return 0;
}

/* Ends g (the copies' result rc): under s->lock, installs the new piece in place of the merged ones; the
 * copy is no longer busy; frees what is left with no lock held, then gives back what was counted for it
 * (on failure, all of it). Returns
 * with s->lock held, and rc (PARLA_EBUSY when a copy in flight read a merged piece meanwhile: it stays). */
static int grow_end(grow_t *g, int rc)
{
    store_t *s = g->s;
    parla__dev_copy_t *c = g->c;
    parla__dev_t *d = g->d;
    parla__lock(&s->lock);
    if (rc == 0 && g->b > g->a && c->pins > 0)
        rc = PARLA_EBUSY;
    if (rc == 0) {
        if (g->b > g->a) {
            g->n_gone = g->b - g->a;
            take_pieces(s, c, g->a, g->b, g->gone, false); /* the account counts the difference: add */
        }
        memmove(&c->pieces[g->a + 1], &c->pieces[g->a], (c->n_pieces - g->a) * sizeof *c->pieces);
        c->n_pieces++;
        c->pieces[g->a] = (piece_t){.lo = g->nlo, .hi = g->nhi, .buf = g->buf, .owned = 1};
        g->buf = NULL;
        /* Listed at once: a copy that its maker does not end up using (a preparation that fails, a
         * fetch) can still be evicted. */
        parla__lock(&d->lock);
        c->bytes += g->add;
        parla__data_lru_touch(d, c);
        parla__unlock(&d->lock);
    }
    c->busy = 0;
    pthread_cond_broadcast(&s->cond);
    parla__unlock(&s->lock);
    if (g->buf)
        d->ops->free(d, g->buf);
    if (g->gone)
        parla__data_pieces_free(s->rt, d->index, g->gone, g->n_gone);
    /* Only now, the memory freed: the merged pieces' second count, or on failure all that was counted
     * (what came from the task's claim stays claimed, given back with the rest). */
    if (rc && g->claimed) {
        parla__lock(&d->lock);
        d->claimed += g->mine;
        parla__unlock(&d->lock);
        if (g->claim)
            *g->claim += g->mine;
        room_freed(s->rt, d, g->add + g->dup);
    } else if (g->claimed) {
        room_freed(s->rt, d, g->dup);
    }
    parla__lock(&s->lock);
    return rc;
}

/* Gives store s a piece holding bytes [lo, hi) on device, evicting other stores' least-recently-used idle
 * copies to make room. Pieces that [lo, hi) overlaps or touches are merged into the new one (see
 * parla__dev_copy in impl.h): their contents are copied into it on the device, then they are freed; only
 * when nothing uses the copy (PARLA_EBUSY otherwise: the caller waits for unpins, as for room). The
 * account counts the difference; while the merge copies, the device holds both.
 *
 * Entered and left with s->lock held, which it drops while it evicts, allocates, copies and frees (no
 * lock is held across those device calls): meanwhile the copy is busy (c->busy), and other threads that
 * need a new piece of it, or any piece of it while pieces merge, wait on s->cond; evictions pass it over.
 * A copy from the merged pieces to another device queued meanwhile (it pins the copy) makes the merge
 * give up (PARLA_EBUSY). With plan (a task's preparation), the room its capacity check claimed on device
 * is used first. */
int parla__data_ensure_copy(store_t *s, int device, parla_task_t *t, uint64_t lo, uint64_t hi, plan_t *plan)
{
    parla__dev_copy_t *c = &s->copies[device];
    if (device == 0 || lo >= hi)
        return 0;
    parla__dev_t *d = &parla__dev_devs(s->rt)->devices[device];
    /* Bounded: a new piece is made again only when an eviction took it before its maker came back. */
    for (int tries = 0; tries < 16; tries++) {
        bool has = parla__data_piece(c, lo, hi) != NULL;
        if (c->busy == PARLA__COPY_MERGING || (c->busy && !has)) {
            pthread_cond_wait(&s->cond, &s->lock);
            tries--;
            continue;
        }
        if (has)
            return 0;
        grow_t g = {.s = s, .c = c, .d = d, .who = t ? parla_task_name(t) : "(none)", .lo = lo, .hi = hi,
                    .claim = claim_of(plan, device)};
        int rc = grow_begin_locked(&g);
        if (rc)
            return rc;
        parla__unlock(&s->lock);
        rc = grow_room(&g);
        if (rc == 0)
            rc = grow_fill(&g);
        if ((rc = grow_end(&g, rc)) != 0)
            return rc;
        /* Checked again: an eviction may have taken the new piece while the lock was dropped. */
    }
    return PARLA_EBUSY;
}

/* Drops pins of store s on device: the copies may be evicted again, and
 * tasks waiting for room on the device retry. */
static void unpin_store(store_t *s, int device, int count)
{
    parla__lock(&s->lock);
    s->copies[device].pins -= count;
    parla__unlock(&s->lock);
}

/* count pins on device were dropped: tasks waiting for room there retry. */
/* The tasks an unpin woke inside an entry point of the data layer (it may be in the middle of a
 * preparation, and the hooks may prepare other tasks), when no engine job could take them (wake_job_t):
 * handed to the scheduler when that entry point ends (parla__data_wake_deferred), by the same thread. */
static _Thread_local struct {
    parla_runtime_t *rt;
    parla_task_t *room, *reserve;
} deferred;

/* A wake handed to a device's engine: the engine thread gives the tasks to the scheduler (as it does
 * when its copies complete), so the thread that woke them goes on at once, whatever it holds, and the
 * stuck check sees work under way until they are back in its hands. */
typedef struct wake_job {
    parla__dev_job_t job; /* first */
    parla_runtime_t *rt;
    parla_task_t *room, *reserve;
} wake_job_t;

static void wake_done(parla__dev_job_t *j, bool waited)
{
    (void)waited;
    wake_job_t *w = (wake_job_t *)j;
    parla_runtime_t *rt = w->rt;
    parla_task_t *room = w->room, *reserve = w->reserve;
    parla__free(w);
    parla__data_rt(rt)->dhooks.unpinned(room, reserve);
}

static const parla__dev_job_ops_t wake_ops = {NULL, NULL, wake_done};

/* Queues the wake of those tasks on d's engine; false when d has none or no job can be allocated. */
static bool wake_on_engine(parla_runtime_t *rt, parla__dev_t *d, parla_task_t *room, parla_task_t *reserve)
{
    if (!d->engine_running)
        return false;
    wake_job_t *w = parla__alloc(rt, sizeof *w);
    if (w == NULL)
        return false;
    *w = (wake_job_t){.job.ops = &wake_ops, .rt = rt, .room = room, .reserve = reserve};
    parla__dev_engine_submit(d, &w->job);
    return true;
}

static parla_task_t *list_append(parla_task_t *a, parla_task_t *b)
{
    if (a == NULL)
        return b;
    parla_task_t *t = a;
    while (t->qnext)
        t = t->qnext;
    t->qnext = b;
    return a;
}

/* count pins on device were dropped, or `back` bytes of claimed room given back: tasks waiting for room
 * there retry (at once, or deferred). With epoch (the giver's own record of the unpin epoch, see
 * parla__data_wait_for_room), the giver does not count its own event: when nothing else happened since
 * it read the epoch, its record moves with it. */
static void unpinned(parla_runtime_t *rt, int device, int count, uint64_t back, uint64_t *epoch, bool defer)
{
    if (device == 0)
        return;
    parla__dev_t *d = &parla__dev_devs(rt)->devices[device];
    parla__lock(&d->lock);
    d->n_pins -= (uint64_t)count;
    d->claimed -= back;
    bool own = epoch && *epoch == d->unpin_epoch;
    d->unpin_epoch++;
    if (own)
        *epoch = d->unpin_epoch;
    parla_task_t *retry = d->data_blocked;
    d->data_blocked = NULL;
    /* Reservations count the pinned copies (one account): tasks blocked on
     * them may fit now. */
    parla_task_t *reserve = d->blocked_head;
    d->blocked_head = d->blocked_tail = NULL;
    parla__unlock(&d->lock);
    if (defer && (retry || reserve) && wake_on_engine(rt, d, retry, reserve))
        return;
    if (defer && (retry || reserve)) {
        deferred.rt = rt;
        deferred.room = list_append(deferred.room, retry);
        deferred.reserve = list_append(deferred.reserve, reserve);
    } else if (retry || reserve) {
        parla__data_rt(rt)->dhooks.unpinned(retry, reserve);
    }
}

void parla__data_device_unpinned(parla_runtime_t *rt, int device, int count)
{
    unpinned(rt, device, count, 0, NULL, false);
}

void parla__data_device_unpinned_deferred(parla_runtime_t *rt, int device, int count)
{
    unpinned(rt, device, count, 0, NULL, true);
}

void parla__data_room_given_back(parla_runtime_t *rt, int device, uint64_t bytes, uint64_t *epoch)
{
    unpinned(rt, device, 0, bytes, epoch, true);
}

void parla__data_wake_deferred(void)
{
    parla_task_t *room = deferred.room, *reserve = deferred.reserve;
    parla_runtime_t *rt = deferred.rt;
    deferred.room = deferred.reserve = NULL;
    if (room || reserve)
        parla__data_rt(rt)->dhooks.unpinned(room, reserve);
}

void parla__data_unpin(store_t *s, int device, int count)
{
    unpin_store(s, device, count);
    parla__data_device_unpinned(s->rt, device, count);
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
        parla__lock(&d->lock);
        d->n_pins++;
        parla__unlock(&d->lock);
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
        parla__data_device_unpinned(t->rt, dev, count);
    }
}

void parla__data_wait_for_room(parla_task_t *t)
{
    int slot = t->ext->room_slot;
    parla__dev_t *d = &parla__dev_devs(t->rt)->devices[t->devices[slot]];
    parla__lock(&d->lock);
    /* Retry at once if copies were unpinned since the attempt, or if none is
     * pinned at all (the attempt lost a race for a victim's lock). */
    bool now = d->unpin_epoch != t->ext->data_epoch[slot] || d->n_pins == 0;
    if (!now) {
        t->qnext = d->data_blocked;
        d->data_blocked = t;
    }
    parla__unlock(&d->lock);
    if (!now)
        return;
    /* Retried from the device's engine, not from here: the retry may fail
     * the same way, and must not recurse on this thread's stack. */
    if (parla__data_rt(t->rt)->dhooks.retry(t))
        return;
    sched_yield();
    parla__graph_rt(t->rt)->ghooks.ready(t);
}
