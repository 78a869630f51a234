/*
 * internal.h: engine internals shared by the files of libparla. Not installed.
 *
 * Lock order (a thread holding a lock may only take locks further down):
 *   1. rt->placeholder_lock   (never-submitted tasks that have dependents)
 *   1b. device->acquire_lock  (one task at a time brings its data to a GPU)
 *   1c. store->lock           (a data object's copies and history; see data.c)
 *   2. device->lock           (resource accounting and blocked list of a device)
 *   3. queue->lock            (one ready queue)
 *   4. rt->park_lock          (sleeping workers)
 *   5. rt->wait_lock          (threads blocked in wait calls, wake_gen)
 * No lock is held while a task body runs.
 *
 * Blocking work under locks (what stays, why, and what it costs):
 *   - An eviction writes back the ranges only the victim holds with a
 *     synchronous copy, under the victim store's lock and the device lock
 *     (evict_for_locked in data.c). It stays there because the bytes must
 *     not change and the room must not be taken between the write-back and
 *     the free; victims are idle (unpinned: no task or queued copy uses
 *     them), so the copy waits for no other work, only for the transfer:
 *     for its duration (size / link bandwidth) other threads that need that
 *     device's lock (reservations, pins, other evictions) wait.
 *   - Synchronous copies and event waits under a store's lock happen only
 *     when a copy job cannot be allocated (out of memory) in
 *     make_valid_locked, and in parla_data_fetch / parla_data_evict outside
 *     tasks (whose writers have finished): the fallback keeps the segment
 *     map and the bytes consistent; it costs the transfer time for other
 *     users of that one data object. Copies for tasks are asynchronous jobs
 *     queued after the lock is released.
 *   - A hazard edge searches the graph for an explicit path (parla__reaches,
 *     at most 100,000 tasks visited) under the store's lock, so that the
 *     history it decides on cannot change meanwhile; only for a task that
 *     already has dependents (an explicit dependency on a later task), at
 *     most once per conflicting earlier task: other accesses to that data
 *     object wait for the search (about a millisecond at the limit).
 *   - parla__host_wait_task (a task ending without running after a runahead
 *     release) waits for device events with no lock held.
 */
#ifndef PARLA_INTERNAL_H
#define PARLA_INTERNAL_H

#include "parla.h"

#include <pthread.h>
#include <sys/types.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PARLA__LEVELS 3 /* priority levels: 0 high, 1 normal, 2 low */

/* ------------------------------------------------------------ allocation -- */

/* Every internal allocation goes through these, so fault injection can make
 * the N-th one fail. */
void *parla__alloc(parla_runtime_t *rt, size_t size);
void *parla__calloc(parla_runtime_t *rt, size_t n, size_t size);
void parla__free(void *p);

/* Records a formatted message for parla_last_error_message() and returns code. */
int parla__error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ----------------------------------------------------------------- queues -- */

/* An intrusive doubly linked queue of tasks. The owner pops at the tail
 * (LIFO), thieves and shared consumers pop at the head (FIFO). */
void parla__spin_lock(_Atomic int *lock);
void parla__spin_unlock(_Atomic int *lock);

typedef struct parla__queue {
    _Atomic int lock; /* spinlock: protects head, tail and the links of queued tasks */
    parla_task_t *head, *tail;
    _Atomic long size; /* read without the lock to skip empty queues */
    _Atomic long *total; /* a count shared by several queues (the runtime's), kept with size */
} parla__queue_t;

void parla__queue_init(parla__queue_t *q, _Atomic long *total);
void parla__queue_push(parla__queue_t *q, parla_task_t *t);
parla_task_t *parla__queue_pop_head(parla__queue_t *q);
parla_task_t *parla__queue_pop_tail(parla__queue_t *q);
/* Unlinks the first task (from the tail or the head) whose creator is
 * `creator` (see struct parla_task), or returns NULL. O(queue length). */
parla_task_t *parla__queue_take_child(parla__queue_t *q, uint64_t creator, bool from_tail);

/* ---------------------------------------------------------------- devices -- */

/* Fixed point for vcus: 1.0 == PARLA__VCU_ONE, so sums are exact. */
#define PARLA__VCU_ONE 1000000LL
#define PARLA__MAX_DEVICES 64 /* valid-device masks are 64-bit */

typedef struct parla__device parla__device_t;
typedef struct parla__copy parla__copy_t;

/* A completion event of a device (a CUDA event; host devices have none: their
 * work is complete when the call that did it returns). Reference counted:
 * the task that recorded it and each successor that must wait on it hold
 * one; the last release returns it to its device's pool. */
typedef struct parla__event {
    void *handle;               /* CUevent */
    parla__device_t *device;
    _Atomic int refs;
    struct parla__event *next;  /* in the pool's free list */
} parla__event_t;

/* The operations of a device kind (design section 4). Streams and events are
 * opaque handles (CUstream, CUevent); a kind without them (host memory)
 * leaves those entries NULL: its copies are complete when copy returns and
 * its tasks' work when their bodies return. Every function may be called from
 * any thread, sets the calling thread's device context itself and gives the
 * caller its own context back (all but activate, which is for bodies). Errors:
 * PARLA_ENOMEM (alloc), PARLA_EDEVICE with the driver's error name. */
typedef struct parla__device_ops {
    const char *name;
    int (*alloc)(parla__device_t *d, uint64_t nbytes, void **out);
    void (*free)(parla__device_t *d, void *ptr);
    /* Copies nbytes from src on device s to dst on device d; returns when done. */
    int (*copy)(parla__device_t *d, void *dst, parla__device_t *s, const void *src, uint64_t nbytes);
    int (*synchronize)(parla__device_t *d);
    /* Makes d current for the calling thread's later driver calls. */
    int (*activate)(parla__device_t *d);
    /* Streams: in-order queues of work on device d. */
    int (*stream_create)(parla__device_t *d, void **out);
    void (*stream_destroy)(parla__device_t *d, void *stream);
    int (*stream_synchronize)(parla__device_t *d, void *stream);
    /* Queues a copy on stream (a stream of d, which is the CUDA side). */
    int (*copy_async)(parla__device_t *d, void *dst, parla__device_t *s, const void *src, uint64_t nbytes,
                      void *stream);
    int (*event_create)(parla__device_t *d, void **out);
    void (*event_destroy)(parla__device_t *d, void *event);
    /* Marks the point of stream the event completes at. */
    int (*event_record)(parla__device_t *d, void *event, void *stream);
    /* 1: complete, 0: not yet, < 0: error. */
    int (*event_query)(parla__device_t *d, void *event);
    int (*event_synchronize)(parla__device_t *d, void *event);
    /* Work queued on stream after this call waits for the event (which may be
     * another device's); the host does not wait. */
    int (*stream_wait_event)(parla__device_t *d, void *stream, void *event);
} parla__device_ops_t;

struct parla__device {
    int index;
    parla_device_kind_t kind;
    int kind_index;
    int is_virtual, is_cuda, cuda_ordinal;
    const parla__device_ops_t *ops;
    void *ctx;                /* backend state (CUDA context) */
    double bandwidth;         /* bytes/s */
    char name[32];

    pthread_mutex_t acquire_lock; /* serialises data acquisition on the device, so two
                                     tasks never each hold half of the room they need */
    pthread_mutex_t lock;     /* protects vcus_free, memory_free, the blocked list,
                                 resident and the LRU list of copies */
    int64_t vcus_capacity;    /* fixed point */
    int64_t vcus_free;
    uint64_t memory_capacity; /* bytes */
    uint64_t memory_free;     /* for task reservations */
    uint64_t resident;        /* bytes of data copies (GPUs) */
    parla__copy_t *lru_head, *lru_tail; /* unpinned-or-pinned copies, least recent first */
    uint64_t n_pins;          /* pins of copies on this device by running tasks */
    uint64_t unpin_epoch;     /* bumped whenever running tasks unpin copies */
    parla_task_t *data_blocked; /* tasks waiting for room for their data (linked by qnext) */
    parla_task_t *blocked_head, *blocked_tail; /* tasks waiting for resources, FIFO */

    _Atomic long n_mapped;    /* tasks mapped here, not finished */

    /* The copy engine of a GPU: a thread that makes the copies into (and out
     * of) this device, in order, while workers run other tasks. */
    pthread_t engine;
    bool engine_running;
    pthread_mutex_t engine_lock; /* protects the job queue and engine_stop */
    pthread_cond_t engine_cond;
    struct parla__copy_job *jobs_head, *jobs_tail;
    bool engine_busy;         /* a job is being done, or work it issued is in flight */
    bool engine_stop;
    void *copy_in, *copy_out; /* copy streams (CUDA): onto and off the device */

    pthread_mutex_t event_lock; /* protects event_pool */
    parla__event_t *event_pool;  /* recorded-and-released events, for reuse */
    _Atomic long n_events;       /* events created on the device, not destroyed */
    _Atomic uint64_t bytes_in, bytes_out, evictions;
};

extern const parla__device_ops_t parla__host_ops;

/* Takes an event from d's pool (or creates one) and records it on stream;
 * one reference for the caller. Errors: PARLA_ENOMEM, PARLA_EDEVICE. */
int parla__event_record(parla__device_t *d, void *stream, parla__event_t **out);
void parla__event_retain(parla__event_t *e);
/* Drops a reference; the last one returns the event to its device's pool. */
void parla__event_release(parla__event_t *e);
/* 1: the work before the event is complete, 0: not yet, < 0: device error. */
int parla__event_done(parla__event_t *e);
/* True when d has streams and events (a CUDA GPU). */
static inline bool parla__device_async(const parla__device_t *d)
{
    return d->ops->event_record != NULL;
}

int parla__devices_init(parla_runtime_t *rt);
void parla__devices_destroy(parla_runtime_t *rt);
/* CUDA: number of devices found (0 without a driver), and their setup. */
int parla__cuda_count(void);
int parla__cuda_device_init(parla__device_t *d, int ordinal);
void parla__cuda_device_destroy(parla__device_t *d);

/* One account per GPU: data copies (resident) and task reservations
 * (memory=) share its capacity. With the device lock held: evicts unpinned
 * copies until resident + reserved fits (best effort), and the bytes of the
 * copies pinned by running tasks (which cannot be evicted). */
void parla__data_make_room_locked(parla__device_t *d);
uint64_t parla__data_pinned_bytes_locked(const parla__device_t *d);

/* Reserves t's needs on all its devices (in index order) or appends t to the
 * blocked list of the first device where they do not fit. True if reserved. */
bool parla__reserve_or_block(parla_task_t *t);
/* Gives back t's needs, then retries the tasks blocked on those devices; the
 * ones now reserved are returned as a list linked through qnext. */
parla_task_t *parla__release_resources(parla_task_t *t);

/* ------------------------------------------------------------------ tasks -- */

enum {
    PARLA__EDGE_SOFT = 1,     /* a failure does not cancel the successor (suspend_on) */
    PARLA__EDGE_NOTIFIED = 2, /* released early by runahead; the finish only frees it */
    PARLA__EDGE_ORDER = 4,    /* ordering only (write-after-read, write-after-write hazards): a
                                 failure does not cancel the successor, runahead may release it */
    PARLA__EDGE_DATA = 8,     /* from a data hazard, not an explicit dependency (traces draw it apart) */
};

typedef struct parla__edge {
    parla_task_t *succ; /* holds a reference */
    struct parla__edge *next;
    int flags;
} parla__edge_t;

/* The value of a sealed successor stack: the task has finished. */
#define PARLA__SEALED ((parla__edge_t *)(uintptr_t)1)

enum {
    PARLA__F_LISTED = 1,  /* in rt's placeholder list */
    PARLA__F_CANCEL = 2,  /* a hard dependency failed: cancel instead of run */
    PARLA__F_WAITED = 4,  /* a thread blocks in parla_task_wait on it */
    PARLA__F_CLAIMED = 8, /* its cancelled finish is claimed (parla_runtime_cancel_stuck
                             and the finish worklist race for it: exactly one finishes it) */
};

typedef struct parla__access {
    parla_data_t *data; /* holds a reference */
    int mode;
} parla__access_t;

typedef struct parla__option {
    int n;
    int slots[PARLA_MAX_TASK_DEVICES];
    int64_t vcus;
    uint64_t memory;
} parla__option_t;

/* What only some tasks need: placement options, data accesses, mapping. */
typedef struct parla__task_ext {
    parla__option_t *options;
    int n_options, cap_options;
    parla__access_t *accesses;
    int n_accesses, cap_accesses;
    parla_mapping_t mapping;
    uint64_t data_epoch; /* the device's unpin_epoch when data was last acquired */
    bool prepared;       /* data brought to the device and pinned (until the body ends) */
    _Atomic int n_waiting; /* copies in flight the task waits for, + 1 while preparing */
    /* CUDA: the events recorded on the task's streams after its body, one per
     * device (NULL on host devices), held until the task is done. */
    parla__event_t *events[PARLA_MAX_TASK_DEVICES];
    /* Events of predecessors that released this task at their runahead: its
     * streams (and the copy streams bringing its data) wait on them. Pushed
     * lock-free by the predecessors before they release it. */
    _Atomic(struct parla__evwait *) waits;
    uint64_t ran_ns; /* when the body returned (for the trace of its device work) */
    /* One record per access for waiting on copies in flight, made with the
     * first preparation (so registering as a waiter never fails). */
    struct parla__waiter *wait_nodes;
    /* A copy the task waited for failed on the device (PARLA_E* code): the
     * task fails instead of running its body. */
    _Atomic int copy_error;
} parla__task_ext_t;

typedef struct parla__evwait {
    parla__event_t *event; /* holds a reference */
    struct parla__evwait *next;
} parla__evwait_t;

/* Makes work queued on stream (of device d) wait for every event in t's waits
 * list (stream_wait_event; the host does not wait). No-op without waits. */
int parla__stream_wait_task(parla_task_t *t, parla__device_t *d, void *stream);
/* Blocks the calling thread until every event in t's waits list completed
 * (queried first: a complete one costs no synchronization). No lock held. */
void parla__host_wait_task(parla_task_t *t);
/* A retained snapshot of t's waits (for copies queued for t): returns how
 * many (0: *out is NULL) or PARLA_ENOMEM. */
int parla__task_waits(parla_task_t *t, parla__event_t ***out);
/* Drops t's waits list and its own events. */
void parla__task_events_release(parla_task_t *t);

struct parla_task {
    _Atomic int32_t pending; /* unfinished dependencies + 1 while not submitted/suspended */
    _Atomic int32_t refs;
    _Atomic int state;       /* parla_task_state_t */
    _Atomic int flags;       /* PARLA__F_* */
    _Atomic(parla__edge_t *) succ; /* lock-free stack of successors, or SEALED */
    parla_runtime_t *rt;
    parla_task_fn fn;
    void *arg;
    void *user;
    parla_task_t *qnext, *qprev; /* links in a ready queue or a blocked list */
    _Atomic(parla_task_t *) cause; /* root cause of a cancellation (holds a reference) */
    int error;
    int8_t level;
    int64_t vcus;     /* fixed point, on each device of the task */
    uint64_t memory;  /* bytes, on each device of the task */
    int8_t n_devices; /* devices it is mapped to (0 before mapping) */
    uint8_t devices[PARLA_MAX_TASK_DEVICES];
    parla__task_ext_t *ext;
    /* The first edge onto this task's successor stack lives here, so a task
     * with one dependent (chains, fan-in) allocates no edge. */
    parla__edge_t first_edge;
    _Atomic bool first_edge_used;
    _Atomic(char *) name; /* owned; a default one is made on first use */
    uint32_t ph_index;    /* position in rt->placeholders while listed */
    uint64_t serial;  /* creation order, for default names */
    uint64_t creator; /* serial + 1 of the task whose body created it; 0 outside bodies */
};

/* Memory capacity (bytes) of the largest device any placement option allows. */
uint64_t parla__largest_allowed(parla_runtime_t *rt, const parla__task_ext_t *x);
/* True when some devices can hold the option's needs at all. */
bool parla__option_feasible(parla_runtime_t *rt, const parla__option_t *o);
/* Maps a ready task with placement options to devices (sets t->devices). */
int parla__map_task(parla_task_t *t);
/* Data: prepared when the task is dispatched (allocation, pins, copies queued
 * on copy engines), released after the body. */
#define PARLA__PENDING 1 /* parla__data_prepare: copies in flight; the engine enqueues the task */
int parla__data_prepare(parla_task_t *t);
void parla__copy_engine_stop(parla__device_t *d);
int parla__copy_engine_start(parla__device_t *d);
/* Makes a ready task with reserved resources runnable: prepares its data, then
 * enqueues it (or leaves that to the copy engines / the room wait). */
void parla__dispatch(parla_task_t *t);
uint64_t parla__task_data_bytes(parla_task_t *t, int device, uint64_t *total);
void parla__data_release_task(parla_task_t *t);
/* After acquire returned PARLA_EBUSY (device full of pinned copies): waits
 * for running tasks to unpin, then makes t ready again. */
void parla__data_wait_for_room(parla_task_t *t);
/* Records that t's data will be brought to device (for later mappings). */
void parla__data_plan(parla_task_t *t, int device);
void parla__task_ext_free(parla_task_t *t);
/* At parla_runtime_destroy: drops the tasks held by the access histories of
 * the data objects still alive. A task that was given accesses and released
 * without being submitted is held by those histories and holds their data:
 * the cycle is broken here. */
void parla__data_forget_history(parla_runtime_t *rt);
/* Frees the recycled task memory (at the end of the runtime). */
void parla__task_pool_free(parla_runtime_t *rt);
parla__task_ext_t *parla__task_ext(parla_task_t *t);
/* True when a path of dependency edges leads from `from` (never submitted)
 * to `to`; false when none does or the search gives up (limit nodes). */
bool parla__reaches(parla_task_t *from, parla_task_t *to, size_t limit);
/* Adds the edge dep -> t (t is held above zero pending). */
int parla__add_edge(parla_task_t *t, parla_task_t *dep, int flags);

/* Runahead (see parla.h): after a GPU task's body, releases its GPU-only
 * successors and leaves the rest to parla__task_complete_gpu. */
void parla__task_runahead(parla_task_t *t);
/* Queues the end-of-work marker of a runahead task on its device's engine
 * (0); returns nonzero when the engine has nothing queued before it (its work
 * is complete) or no marker can be allocated: then complete it at once. */
int parla__engine_mark(parla_task_t *t);
/* Blocks the calling thread until the work of runahead task t is complete
 * (when no marker could be queued); returns the first device error, or 0. */
int parla__task_work_wait(parla_task_t *t);
/* The work of a runahead task is complete: release what it holds, finish it
 * (failed with error when a device reported one for that work, else done). */
void parla__task_complete_gpu(parla_task_t *t, int error);

/* Called by the engine when pending reaches zero. */
void parla__task_ready(parla_task_t *t);
/* Finishes t as cancelled when it is submitted and waits for dependencies
 * (for parla_runtime_cancel_stuck); false when it is past that, or another
 * path claimed its finish. */
bool parla__task_cancel_stuck(parla_task_t *t);
/* Runs t's body on the calling worker and finishes it. */
void parla__task_run(parla_task_t *t);
/* Finishes t with the given final state and releases its successors. */
void parla__task_finish(parla_task_t *t, int state, int error);

/* ------------------------------------------------------------------ trace -- */

#include "trace/trace.h"

/* The runtime's trace (rt->trace), in trace/buffer.c. */
int parla__trace_init(parla_runtime_t *rt);
void parla__trace_free(parla_runtime_t *rt);
void parla__trace_event(parla_runtime_t *rt, const parla__tev_t *ev);
void parla__trace_name(parla_runtime_t *rt, parla_task_t *t);

/* ---------------------------------------------------------------- runtime -- */

typedef struct parla__worker {
    parla_runtime_t *rt;
    int index;
    pthread_t thread;
    parla__queue_t deque[PARLA__LEVELS];
    uint64_t rng;
    parla_task_t *current;
    parla_task_t *const *waiting_on; /* set under park_lock while sleeping in parla_task_wait(_any): */
    size_t n_waiting_on;             /* the tasks it waits for (any of them) */
    bool stuck_woken;                /* under park_lock: woken because the runtime is stuck */
    _Atomic int finishing;    /* > 0 while in parla__task_finish (written by the owner only) */
    /* Per-worker counters, summed by parla_runtime_stats. Written by the owner only. */
    _Atomic uint64_t n_run, n_steals, n_parks;
    /* CUDA: this worker's compute stream on each device (NULL until its
     * first task there), created and used by the owner only. */
    void **streams;
} parla__worker_t;

struct parla_runtime {
    int n_workers;
    pid_t pid; /* the creating process (fork() children refuse work: parla_runtime_forked) */
    parla__worker_t *workers;
    parla__queue_t shared[PARLA__LEVELS]; /* tasks made ready outside workers */
    parla__device_t *devices;             /* devices[0] is the CPU */
    int n_devices;
    _Atomic uint64_t map_rr;              /* rotates tie-breaking among devices */

    /* Fault injection: allocation counter and the one to fail. */
    _Atomic uint64_t alloc_count;
    uint64_t fail_alloc_at;

    parla_config_t config;
    parla__trace_t *trace; /* NULL when tracing is off */
    _Atomic(parla__busy_t *) busy; /* NULL until parla_runtime_busy_enable; then constant */

    _Atomic long n_active;   /* submitted, not finished */
    _Atomic long n_copying;  /* copy jobs queued on copy engines, not done */
    _Atomic long n_live;     /* task objects not yet freed */
    _Atomic uint64_t serial;
    _Atomic uint64_t n_failed, n_cancelled;
    _Atomic bool destroyed;  /* destroy succeeded; free with the last task */
    _Atomic bool cancelling; /* parla_runtime_cancel_all was called */
    _Atomic bool closing;    /* parla_runtime_destroy is checking for live tasks */

    /* Recycled task memory (see task.c). */
    _Atomic(parla_task_t *) pool; /* freed tasks, pushed lock-free, linked by qnext */
    _Atomic long pool_count;      /* about how many are in pool */
    _Atomic int alloc_lock;       /* spinlock: protects alloc_list */
    _Atomic(parla_task_t *) alloc_list; /* tasks taken from pool, handed out by create
                                           (written under alloc_lock; read without it as a hint) */

    pthread_mutex_t park_lock; /* protects n_sleeping transitions and stop */
    pthread_cond_t park_cond;
    _Atomic int n_sleeping;
    _Atomic long n_queued; /* tasks in all ready queues: any_work in O(1), not O(workers) */
    _Atomic int n_body_waiting; /* workers inside a wait in a body (see wait_any) */
    _Atomic uint64_t enq_gen;   /* bumped by every enqueue (a body's wait rechecks) */
    _Atomic bool stop;

    pthread_mutex_t wait_lock; /* protects the wait condition below */
    pthread_cond_t wait_cond;  /* broadcast when n_active reaches 0, a waited task
                                  finishes, or the runtime goes quiescent */
    _Atomic int n_all_waiters;
    uint64_t wake_gen;         /* bumped by every broadcast of wait_cond */

    pthread_mutex_t stores_lock;   /* protects the list of data stores */
    struct parla__store *stores;   /* live data stores (see data.c) */

    pthread_mutex_t placeholder_lock; /* protects the placeholder list */
    parla_task_t **placeholders;      /* never-submitted tasks with dependents */
    size_t n_placeholders, cap_placeholders;
};

/* The calling worker's stream on device (created on first use); NULL for host
 * devices or on error (then the message is set). */
void *parla__worker_stream(parla__worker_t *w, int device);

/* The calling thread's worker, or NULL. */
parla__worker_t *parla__current_worker(void);
/* Enqueues a ready task (resources already reserved) and wakes a sleeper. */
void parla__enqueue(parla_runtime_t *rt, parla_task_t *t);

/* Wakes threads blocked in wait calls. */
void parla__wake_waiters(parla_runtime_t *rt);
/* PARLA_ESTATE with a message naming fn when called in a fork() child of the
 * process that created rt, else 0. */
int parla__check_process(const parla_runtime_t *rt, const char *fn);
/* Called when a task object is freed. */
void parla__runtime_task_freed(parla_runtime_t *rt);
/* Placeholder registry. */
int parla__placeholder_add(parla_runtime_t *rt, parla_task_t *t);
void parla__placeholder_remove(parla_runtime_t *rt, parla_task_t *t);

#endif
