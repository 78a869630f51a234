/*
 * sched/sched.h: the scheduler layer, the top of the engine: the runtime object, workers and their ready
 * queues, the ready path (mapping, reservation, data preparation, enqueue), running bodies, waiting and
 * the stuck diagnosis. Uses every layer below. Not installed.
 *
 * THE LOCK ORDER of the engine. A thread holding a lock may take only locks
 * further down this list; nothing is held while a task body runs, nor while
 * a hook of parla_config_t runs.
 *
 *   0. graph->issue_lock      sched/replay.c   one replay of a graph at a time (held across the
 *                                              task creations, accesses and submits of the replay)
 *   1. store->lock            data/impl.h      a data object's segments, copies, records (with
 *                                              store->cond: a copy busy being allocated or merged)
 *   2. device->lock           device/device.h  resources, blocked lists, residency (and claimed
 *                                              room) and LRU; several only in ascending device index
 *                                              (sched/resources.c); while one is held a victim's
 *                                              store->lock is taken only by try-lock
 *                                              (data/evict.c: pick_victim_locked)
 *      arrival->lock          data/impl.h      copies in flight to one device for one store (taken
 *                                              under store->lock, never together with device->lock)
 *   3. rt->park_lock          sched/sched.h    sleeping workers, a body's waiting_on list
 *   4. rt->wait_lock          sched/sched.h    threads blocked in wait calls, wake_gen
 *
 * Leaves (nothing is taken while one is held; each may be taken under any of
 * the above):
 *   parla__graph_rt(rt)->placeholder_lock  (mutex, graph/placeholder.c; taken under store->lock:
 *                          data/hazards.c hazard_edge -> parla__graph_add_edge -> parla__graph_placeholder_add)
 *   parla__data_rt(rt)->stores_lock       (mutex, the list of live stores, data/store.c and hazards.c)
 *   graph->lock           (mutex, a graph's latest join and failure, sched/replay.c)
 *   shared->wake_lock     (mutex, completion callbacks, device/engine.c; takes each running
 *                          device->engine_lock, nothing else, under it)
 *   device->engine_lock   (mutex, an engine's job queue, device/engine.c; jobs run without it)
 *   device->pool.lock     (mutex, a GPU's caching allocator, device/pool.c; driver allocations
 *                          and frees on a pool miss or trim are made under it; taken by ops->alloc
 *                          and ops->free of CUDA GPUs, which data/ calls with no lock held)
 *   shared->pin_lock      (mutex, the registered host buffers, device/cuda.c; cuMemHostRegister
 *                          is called under it, once per buffer)
 *   device->event_lock    (mutex, an event pool, device/event.c)
 *   the lock of a write-back job (mutex, data/evict.c: wb_run; its caller waits for the engine)
 *   trace buffer lock     (mutex, the shared trace buffer, trace/buffer.c)
 *   queue->lock           (spinlock, one ready queue, sched/queue.c)
 *   parla__graph_rt(rt)->alloc_lock        (spinlock, the recycled task pool, graph/task.c)
 * CUDA's driver loading (device/cuda.c) is a pthread_once, taken under none.
 *
 * Held across a device call (an ops-> function: alloc, free, copy, copy_async,
 * synchronisation, which may block for a transfer or the driver): none of the
 * engine's locks above. The only locks held across driver calls are the two
 * device-layer leaves that exist to serialise them: device->pool.lock (a pool
 * miss or trim inside ops->alloc / ops->free) and shared->pin_lock (host
 * registration, once per buffer). The data layer takes its mutexes through
 * parla__lock (util/util.h), which counts them per thread; tests/c/
 * test_data_locks.c checks that the count is 0 at every device call.
 *
 * How the data layer keeps its blocking work out from under its locks (the
 * state that stands in for a held lock, and who waits on it):
 *   - Room: a task's preparation checks that its data fits on each of its GPUs
 *     and claims the room it lacks in the device's account, under the device
 *     lock (data/prepare.c: room_for), before allocating anything; so a task
 *     that cannot have all its data takes none, without a lock held across the
 *     allocations (the former per-device acquire_lock is gone). Later checks
 *     count the claim; the allocations take from it (plan->claim); what is
 *     left is given back at the end, waking the tasks waiting for room.
 *   - Allocation and merge (data/residency.c: parla__data_ensure_copy): the
 *     copy is marked busy (adding / merging) under the store's lock, which is
 *     then dropped while it evicts, calls ops->alloc, copies merged pieces and
 *     frees them; other threads that need a new piece of it (any piece while
 *     merging) wait on store->cond; evictions pass a busy copy over.
 *   - Eviction (data/evict.c): the victim is picked under the device lock with
 *     its store try-locked; a clean victim's pieces are taken out under the
 *     locks and freed (ops->free) after both are dropped. A dirty one is
 *     pinned, its bytes marked valid-but-arriving on the CPU, and the CPU's
 *     arrival (also the victim's) takes one more copy; the write-back runs
 *     with no lock, and tasks that use that data on the CPU or on that GPU
 *     meanwhile, or write it anywhere, wait for the arrival through the
 *     data waiter callback. The copy is dropped after if nothing pinned it
 *     meanwhile. parla_data_evict does the same for the copy it is asked to
 *     drop; outside tasks (and in parla_data_fetch) the write-back is queued on
 *     the device's engine before the store's lock is dropped, the caller
 *     waiting, so the stuck check sees it under way. A merge that writes old
 *     pieces back marks them invalid only when, under one hold of the store's
 *     lock, none of their bytes is valid only on that GPU.
 *   - Copies made at once (the out-of-memory fallback of a preparation or of
 *     parla_data_fetch, whose copies are otherwise jobs on the engines too)
 *     run with no lock, both copies pinned; their bytes are marked valid only
 *     if no write was marked meanwhile (data/transfer.c: copy_now).
 *   - No copy reads memory that a running task writes: a task's copies are
 *     ordered by the hazard edges; parla_data_fetch, outside the access
 *     history, allocates first (the store's lock dropped) and then checks for
 *     conflicting tasks and plans its copies in one hold of the lock
 *     (data/transfer.c: parla__data_make_valid_now), and a task whose write
 *     is marked waits for the copies of those bytes still in flight to other
 *     devices, a fetch's among them (data/prepare.c: mark_writes).
 *   - Unpins from inside the data layer hand the tasks they wake to a device
 *     engine job (data/residency.c: wake_on_engine), never running the
 *     scheduler's hooks under a caller's state.
 *   - What remains under a lock is memory work on the host: a hazard edge
 *     searches the graph for an explicit path (parla__graph_reaches, at most
 *     100,000 tasks visited) under the store's lock, so that the history it
 *     decides on cannot change meanwhile; only for a task that already has
 *     dependents, at most once per conflicting earlier task (about a
 *     millisecond at the limit).
 *   - parla__graph_host_wait_task (a task ending without running after a
 *     runahead release) waits for device events with no lock held.
 */
#ifndef PARLA_SCHED_H
#define PARLA_SCHED_H

#include "data/data.h"

#include <sys/types.h>

/* ----------------------------------------------------------------- queues -- */

/* An intrusive doubly linked queue of tasks. The owner pops at the tail
 * (LIFO), thieves and shared consumers pop at the head (FIFO). */
typedef struct parla__sched_queue {
    _Atomic int lock; /* spinlock: protects head, tail and the links of queued tasks */
    parla_task_t *head, *tail;
    _Atomic long size; /* read without the lock to skip empty queues */
    _Atomic long *total; /* a count shared by several queues (the runtime's), kept with size */
} parla__sched_queue_t;

void parla__sched_queue_init(parla__sched_queue_t *q, _Atomic long *total);
void parla__sched_queue_push(parla__sched_queue_t *q, parla_task_t *t);
parla_task_t *parla__sched_queue_pop_head(parla__sched_queue_t *q);
parla_task_t *parla__sched_queue_pop_tail(parla__sched_queue_t *q);
/* Unlinks the first task (from the tail or the head) whose creator is
 * `creator` (see struct parla_task), or returns NULL. O(queue length). */
parla_task_t *parla__sched_queue_take_child(parla__sched_queue_t *q, uint64_t creator, bool from_tail);

/* -------------------------------------------------------------- resources -- */

/* Reserves t's needs on all its devices (in index order) or appends t to the
 * blocked list of the first device where they do not fit. True if reserved. */
bool parla__sched_reserve_or_block(parla_task_t *t);
/* Gives back t's needs, then retries the tasks blocked on those devices; the
 * ones now reserved are returned as a list linked through qnext. */
parla_task_t *parla__sched_release_resources(parla_task_t *t);
/* With d's lock held: needs of vcus (fixed point) and memory (bytes) fit on d now. */
bool parla__sched_resources_fit_locked(const parla__dev_t *d, int64_t vcus, uint64_t memory);

/* ---------------------------------------------------------------- graphs -- */

/* From the finished hook, for every task: when t is the join task of a graph's replay (sched/replay.c),
 * records a cancelled replay as the graph's failure and drops the replay's reference to the graph. */
void parla__sched_graph_join_finished(parla_task_t *t);

/* -------------------------------------------------------------- placement -- */

/* Memory capacity (bytes) of the largest device any placement option allows. */
uint64_t parla__sched_largest_allowed(parla_runtime_t *rt, const parla__graph_task_ext_t *x);
/* Checks one placement option against rt's devices (the checks and errors of parla_task_add_placement; who
 * names the task in messages) and fills *out. 0 or PARLA_EINVAL / PARLA_ENODEV with the message set. */
int parla__sched_option_make(parla_runtime_t *rt, const char *who, const int *slots, int n, double vcus, uint64_t memory,
                       parla__graph_option_t *out);
/* True when some devices can hold the option's needs at all. */
bool parla__sched_option_feasible(parla_runtime_t *rt, const parla__graph_option_t *o);
/* Maps a ready task with placement options to devices (sets t->devices). */
int parla__sched_map_task(parla_task_t *t);

/* --------------------------------------------------------------- dispatch -- */

/* Makes a ready task with reserved resources runnable: prepares its data, then
 * enqueues it (or leaves that to the copy engines / the room wait). */
void parla__sched_dispatch(parla_task_t *t);
/* Gives back t's resources and dispatches the tasks that now fit. */
void parla__sched_release_and_dispatch(parla_task_t *t);
/* Queues the end-of-work marker of a runahead task on its device's engine
 * (0); returns nonzero when the engine has nothing queued before it (its work
 * is complete) or no marker can be allocated: then complete it at once. */
int parla__sched_engine_mark(parla_task_t *t);
/* Queues a retry of t (made ready again) on the engine of its first device; false when no job can be
 * allocated. */
bool parla__sched_engine_retry(parla_task_t *t);
/* Blocks the calling thread until the work of runahead task t is complete
 * (when no marker could be queued); returns the first device error, or 0. */
int parla__sched_task_work_wait(parla_task_t *t);
/* The work of a runahead task is complete: release what it holds, finish it
 * (failed with error when a device reported one for that work, else done). */
void parla__sched_task_complete_gpu(parla_task_t *t, int error);
/* The hooks the scheduler installs for the layers below (parla__graph_rt(rt)->ghooks,
 * parla__data_rt(rt)->dhooks; see graph/graph.h and data/data.h). */
void parla__sched_task_ready(parla_task_t *t);
void parla__sched_task_finished(parla_task_t *t);
int parla__sched_task_feasible(parla_task_t *t);
void parla__sched_task_arrived(parla_task_t *t);
void parla__sched_tasks_unpinned(parla_task_t *room, parla_task_t *reserve);
/* Runs t's body on the calling worker and finishes it. */
void parla__sched_task_run(parla_task_t *t);

/* ---------------------------------------------------------------- runtime -- */

typedef struct parla__sched_worker {
    /* First, the thread identity util/ knows (parla__self_t), also readable
     * as the worker's own fields w->rt, w->index, w->current, w->finishing
     * (an anonymous struct with the same members: the common initial sequence
     * of the union's two views). */
    union {
        parla__self_t self;
        struct {
            parla_runtime_t *rt;
            int index;
            parla_task_t *current;
            _Atomic int finishing; /* > 0 while in parla__graph_task_finish (written by the owner only) */
        };
    };
    /* The owner writes current and finishing for every task; thieves poll the
     * deques' sizes and locks: keep them off one cache line. */
    char self_pad_[64];
    pthread_t thread;
    parla__sched_queue_t deque[PARLA__LEVELS];
    uint64_t rng;
    parla_task_t *const *waiting_on; /* set under park_lock while sleeping in parla_task_wait(_any): */
    size_t n_waiting_on;             /* the tasks it waits for (any of them) */
    bool stuck_woken;                /* under park_lock: woken because the runtime is stuck */
    /* Per-worker counters, summed by parla_runtime_stats. Written by the owner only. */
    _Atomic uint64_t n_run, n_steals, n_parks;
    /* CUDA: this worker's compute stream on each device (NULL until its
     * first task there), created and used by the owner only. */
    void **streams;
} parla__sched_worker_t;

/* The runtime is a composition of per-layer parts, each the first member of
 * the next: util's (parla__alloc_t) in device's (parla__dev_devs_t) in graph's
 * (parla__graph_rt_t) in data's (parla__data_rt_t), here. A layer reaches
 * its part and those below from the handle (parla__dev_devs(rt),
 * parla__graph_rt(rt), parla__data_rt(rt): a pointer to a structure,
 * converted, points to its first member) and never the parts above. */
struct parla_runtime {
    parla__data_rt_t data; /* first: the parts of the layers below */
    int n_workers;
    parla__sched_worker_t *workers;
    parla__sched_queue_t shared[PARLA__LEVELS]; /* tasks made ready outside workers */
    _Atomic uint64_t map_rr;              /* rotates tie-breaking among devices */

    parla_config_t config;
    _Atomic(parla__trace_busy_t *) busy; /* NULL until parla_runtime_busy_enable; then constant */
    _Atomic bool cancelling; /* parla_runtime_cancel_all was called */

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

};


/* The calling worker's stream on device (created on first use); NULL for host
 * devices or on error (then the message is set). */
void *parla__sched_worker_stream(parla__sched_worker_t *w, int device);

/* Enqueues a ready task (resources already reserved) and wakes a sleeper. */
void parla__sched_enqueue(parla_runtime_t *rt, parla_task_t *t);

/* Wakes threads blocked in wait calls. */
void parla__sched_wake_waiters(parla_runtime_t *rt);
/* Placeholder registry. */
int parla__graph_placeholder_add(parla_runtime_t *rt, parla_task_t *t);
void parla__graph_placeholder_remove(parla_runtime_t *rt, parla_task_t *t);

/* Workers and waiting (worker.c, wait.c, stuck.c). */
/* The worker running on this thread, if any: its identity (util's
 * parla__self) is the worker record's first member. */
#define parla__sched_tls_worker ((parla__sched_worker_t *)(void *)parla__self_tls)
void *parla__sched_worker_main(void *arg);
/* The sleep handshake is Dekker's: a pusher stores the queue size, then reads
 * n_sleeping; a sleeper increments n_sleeping, then reads the sizes. All four
 * are sequentially consistent (no fences: ThreadSanitizer does not model
 * them), so one of the two sees the other. One counter for every ready queue:
 * idle workers poll it, so its cost must not grow with the number of workers
 * (startup would be quadratic). */
static inline bool parla__sched_any_work(parla_runtime_t *rt)
{
    return atomic_load(&rt->n_queued) > 0;
}
/* Runs one queued task on the calling worker inside a wait in a body: one the waiting body created when
 * creator != 0, else any. Returns whether it did. */
bool parla__sched_help_one(parla__sched_worker_t *w, uint64_t creator);
/* Wakes threads blocked on wait_cond (takes wait_lock; callers may hold park_lock). */
void parla__sched_wake_wait_cond(parla_runtime_t *rt);
/* With park_lock held: some worker sleeps in a wait inside a body; no task can make progress. */
bool parla__sched_body_waiters_locked(parla_runtime_t *rt);
bool parla__sched_stuck_locked(parla_runtime_t *rt);
bool parla__sched_quiescent(parla_runtime_t *rt);
/* With park_lock held: when the runtime is stuck and bodies wait inside it, tells them (stuck_woken), as
 * the last worker to go idle does; true when it did. */
bool parla__sched_tell_stuck_bodies_locked(parla_runtime_t *rt);
/* graph's recheck hook: a submit that a stuck check passed over has ended. Bodies waiting in a stuck
 * runtime are told so before any outside waiter looks again (an outside wait would otherwise find the
 * runtime stuck while such a body, not yet told, still blocks). */
void parla__sched_submits_settled(parla_runtime_t *rt);
/* Formats the diagnosis of a stuck runtime into the thread's error message; returns PARLA_ESTUCK. */
int parla__sched_stuck_error(parla_runtime_t *rt);
/* parla_runtime_wait_all with a timeout in seconds (< 0: none). */
int parla__sched_wait_all(parla_runtime_t *rt, double timeout);

#endif
