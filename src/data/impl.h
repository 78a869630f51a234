/* data/impl.h: the types and helpers shared by the files of the data layer (data/ only): stores,
 * segments, copies, access records, arrivals and copy jobs.
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
 * eviction holding a device lock only try-locks victim stores. No lock is held
 * across a device call (see sched/sched.h): allocations, merges, write-backs
 * and frees run with the locks dropped, the copies they change pinned or busy.
 */
#ifndef PARLA_DATA_IMPL_H
#define PARLA_DATA_IMPL_H

#include "data/data.h"


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

typedef struct parla__data_store store_t;

/* One allocation of a copy: bytes [lo, hi) of the store, at buf (store byte x is at buf + (x - lo)). */
typedef struct piece {
    uint64_t lo, hi;
    void *buf;
    int owned;          /* allocated by the engine (else the caller's host buffer) */
    parla_hold_t *hold; /* the hold on buf taken through parla_data_hold, or NULL (under the store's lock) */
} piece_t;

/* A store's copy on one device: the allocations (pieces) holding the byte ranges that tasks and fetches
 * brought there. The CPU's copy is one piece, the whole store. On other devices a view allocates only
 * the smallest range covering its ranges (its extent), so a slice of an array larger than a GPU fits it.
 *
 * Pieces are disjoint, sorted by lo: every byte of the store has at most one place on a device, so the
 * segment map's valid bit for the device means what it always meant (MSI per range, unchanged). A view
 * whose extent overlaps (or touches) pieces already there gets one piece covering them all: their
 * contents are copied into it on the device and they are freed (a merge). Allocating overlapping pieces
 * instead would put two places for one byte on one device, and a write through one would leave the
 * other stale with the segment map unable to say so. A merge moves memory, so it waits until no running
 * task and no copy in flight uses the copy (pins == 0); tasks of one view, or of disjoint views, share
 * or add pieces without waiting. All the accesses of one task to one store ask for one piece together
 * (the smallest range covering them, parla__data_task_extent), so a task never waits for itself. */
#define PARLA__COPY_ADDING 1  /* a piece is being allocated: other new pieces wait */
#define PARLA__COPY_MERGING 2 /* pieces are being merged: every use of the copy waits */
struct parla__dev_copy {
    store_t *store;
    int device;
    piece_t *pieces; /* sorted, disjoint (under the store's lock) */
    size_t n_pieces, cap_pieces;
    uint64_t bytes;  /* the pieces' sizes: what the copy counts in the device's account (changed under the
                        store's lock and the device lock) */
    _Atomic int pins;  /* running tasks using it; pinned copies are never evicted (changed
                          under the store's lock; read without it only as an estimate) */
    struct arrival *arriving; /* the latest copies queued to this device (a reference), or NULL */
    int busy;          /* PARLA__COPY_ADDING / _MERGING while parla__data_ensure_copy works on the pieces
                          with the store's lock dropped (else 0; under the store's lock) */
    int listed;        /* in the device's LRU list */
    parla__dev_copy_t *prev, *next; /* LRU links, under the device lock */
};

struct parla__data_store {
    parla_runtime_t *rt;
    store_t *live_prev, *live_next; /* the runtime's list of stores (under parla__data_rt(rt)->stores_lock) */
    _Atomic int refs; /* data handles (base and views) */
    uint64_t nbytes;
    pthread_mutex_t lock; /* protects segs, records and copies */
    pthread_cond_t cond;  /* with lock: a busy copy is done (see parla__dev_copy's busy) */
    seg_t *segs;
    size_t n_segs, cap_segs;
    record_t *records;
    size_t n_records, cap_records;
    parla__dev_copy_t *copies; /* one per device */
    _Atomic uint64_t planned; /* devices that mapped tasks will bring this data to */
    uint64_t writes; /* accesses marked as writes so far (under lock): a copy made with the lock
                        dropped marks its bytes valid only if none came meanwhile */
};

struct parla_data {
    _Atomic int refs;
    store_t *store;
    uint64_t *ranges; /* pairs, sorted, disjoint */
    size_t n_ranges;
    uint64_t nbytes; /* bytes covered by the ranges */
};

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
    uint64_t lo, nbytes; /* buf holds the store's bytes [lo, lo + nbytes) (one piece of the copy) */
};

static inline uint64_t bit(int device)
{
    return (uint64_t)1 << device;
}

/* The device (index) access a of task t is for: t's device at the access's
 * position (t mapped, the slot checked by parla__data_prepare). */
static inline int access_device(const parla_task_t *t, const parla__graph_access_t *a)
{
    return t->devices[a->slot];
}

/* The lowest device index in a nonempty mask of devices: loops over several
 * devices take them in ascending index order (the lock order of several device
 * locks), `for (uint64_t m = mask; m; m &= m - 1) { int dev = lowest(m); ... }`. */
static inline int lowest(uint64_t mask)
{
    return __builtin_ctzll(mask);
}

/* ---------------------------------------------------------- copy engines -- */

/* Copies in flight to one device for one store. Tasks that need the data
 * there wait for it to arrive; the last copy to finish enqueues them. */
typedef struct parla__graph_waiter {
    parla_task_t *task;
    struct parla__graph_waiter *next;
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

typedef struct parla__data_copy_job {
    parla__dev_job_t job;   /* first: the engine's part */
    int error;          /* the device's error for the copy or the marked task's work, or 0 */
    store_t *store;     /* holds a store reference */
    arrival_t *arrival; /* holds an arrival reference */
    int from, to;
    uint64_t lo, hi;
    void *dst, *src;    /* the addresses of byte lo on `to` and on `from` (resolved when planned: both
                           copies are pinned until the job is done, so their pieces stay) */
    uint64_t serial;    /* the task that asked for it, for the trace */
    /* On a CUDA engine: the events the copy waits for (runahead predecessors
     * of the task it is for; held), and the event recorded after it. */
    parla__dev_event_t **waits;
    int n_waits;
    parla__dev_event_t *event;
    uint64_t t0;        /* when it was issued (ns), for the trace */
} copy_job_t;

/* What one task's preparation queues: copy jobs, and the arrivals it waits for. */
typedef struct plan {
    copy_job_t *jobs;
    copy_job_t *mark; /* jobs before it were given to an arrival already */
    int n_jobs_store; /* jobs made for the store being planned since mark */
    /* Room claimed on the task's GPUs by the capacity check (counted in the device's account, claimed,
     * before anything is allocated): parla__data_ensure_copy allocates from it first; what is left is
     * given back when the preparation ends. */
    int n_claims;
    int claim_dev[PARLA_MAX_TASK_DEVICES];
    uint64_t claim[PARLA_MAX_TASK_DEVICES];
} plan_t;

/* ------------------------------------------------ shared within data/ -- */

/* store.c */
void parla__data_copy_drop_buf(parla_runtime_t *rt, parla__dev_copy_t *c);
void parla__data_pieces_free(parla_runtime_t *rt, int device, piece_t *pieces, size_t n);
size_t parla__data_piece_index(const parla__dev_copy_t *c, uint64_t x, bool touching);
piece_t *parla__data_piece(const parla__dev_copy_t *c, uint64_t lo, uint64_t hi);
void *parla__data_addr(const parla__dev_copy_t *c, uint64_t x, uint64_t *end);
void parla__data_extent(const parla_data_t *d, uint64_t *lo, uint64_t *hi);
void parla__data_store_release(store_t *s);
size_t parla__data_seg_find(const store_t *s, uint64_t x);
int parla__data_seg_split(store_t *s, uint64_t x);
void parla__data_seg_merge(store_t *s);
/* residency.c (d's lock held for the _locked ones and the LRU list) */
void parla__data_lru_unlink(parla__dev_t *dev, parla__dev_copy_t *c);
void parla__data_lru_touch(parla__dev_t *dev, parla__dev_copy_t *c);
uint64_t parla__data_used_locked(const parla__dev_t *d);
int parla__data_ensure_copy(store_t *s, int device, parla_task_t *t, uint64_t lo, uint64_t hi, struct plan *plan);
int64_t parla__data_piece_need(const parla__dev_copy_t *c, uint64_t lo, uint64_t hi);
void parla__data_task_extent(const parla_task_t *t, const store_t *s, int device, uint64_t *lo, uint64_t *hi);
void parla__data_unpin(store_t *s, int device, int count);
void parla__data_unpin_accesses(parla_task_t *t, int n);
void parla__data_pin_locked(store_t *s, int device);
void parla__data_device_unpinned(parla_runtime_t *rt, int device, int count);
/* The same, from inside an entry point of the data layer: the tasks it wakes are handed to the scheduler
 * by parla__data_wake_deferred, which each entry point that may evict calls last (no lock held). */
void parla__data_device_unpinned_deferred(parla_runtime_t *rt, int device, int count);
void parla__data_wake_deferred(void);
/* Gives back bytes of room claimed on device (claimed), deferred like the above; *epoch (or NULL): the
 * giver's record of the device's unpin epoch, moved past its own event when no other came between. */
void parla__data_room_given_back(parla_runtime_t *rt, int device, uint64_t bytes, uint64_t *epoch);
/* evict.c */
bool parla__data_dirty_locked(const store_t *s, int device);
bool parla__data_dirty_in_locked(const store_t *s, int device, uint64_t lo, uint64_t hi);
int parla__data_writeback_range(store_t *s, int device, uint64_t lo, uint64_t hi);
int parla__data_writeback_pieces_locked(store_t *s, parla__dev_copy_t *c, size_t a, size_t b);
void parla__data_evict_for_locked(parla__dev_t *d, store_t *keep, uint64_t need);
/* Around parla_data_evict / parla_data_fetch: outside tasks, their write-backs run on the engines. */
bool parla__data_outside_begin(void);
void parla__data_outside_end(bool was);
/* transfer.c */
void parla__data_copy_done(parla_runtime_t *rt, int to, int from, uint64_t lo, uint64_t hi, uint64_t serial,
                           uint64_t t0);
int parla__data_copy_addrs(parla_runtime_t *rt, int to, void *dst, int from, const void *src, uint64_t n);
void parla__data_arrival_unref(struct arrival *a);
struct arrival *parla__data_arrival_new(parla_runtime_t *rt);
void parla__data_arrival_finish(parla_runtime_t *rt, struct arrival *a, int error);
void parla__data_arrival_wait(arrival_t *a);
int parla__data_arriving_locked(const parla_data_t *d, const arrival_t *skip, arrival_t **out,
                                int max); /* s->lock held */
/* hazards.c, for data/replay.c (s->lock held for the _locked one): the range helpers of the access
 * history, and the hazard edges of a replay task's access from s's records without joining them
 * (t has no successor yet). */
bool parla__data_ranges_overlap(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);
bool parla__data_ranges_cover(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);
void parla__data_ranges_subtract(parla_runtime_t *rt, record_t *rec, const uint64_t *b, size_t nb);
void parla__data_prune(parla_task_t **arr, size_t *n, bool keep_failed);
int parla__data_reserve_records(parla_runtime_t *rt, store_t *s, size_t need);
int parla__data_hazards_in_locked(parla_task_t *t, store_t *s, const parla_data_t *d, int mode);
/* transfer.c, for the phases of parla__data_prepare (prepare.c); their contracts are at their definitions. */
struct copy_now; /* a copy to make at once, with the store's lock dropped (transfer.c) */
bool parla__data_arrival_pending(arrival_t *a);                                  /* takes a->lock */
void parla__data_arrival_add_waiter(arrival_t *a, parla_task_t *t, waiter_t *w); /* takes a->lock */
int parla__data_join_arrival(parla_task_t *t, store_t *s, int device, plan_t *plan); /* s->lock held */
int parla__data_make_valid_locked(parla_data_t *d, int device, int mode, parla_task_t *t, plan_t *plan,
                                  struct copy_now *now); /* s->lock held */
int parla__data_make_valid(parla_data_t *d, int device, int mode, parla_task_t *t,
                           plan_t *plan); /* s->lock held, dropped while it copies */
void parla__data_queue_jobs(parla_task_t *t, plan_t *plan); /* no lock held */

#endif
