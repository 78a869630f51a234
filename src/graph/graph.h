/*
 * graph/graph.h: the task graph layer: task objects, dependency edges and the pending counter, final
 * states and cancellation, never-submitted placeholders, and the runahead release of GPU successors.
 * Uses util, device (events) and trace. Not installed.
 */
#ifndef PARLA_GRAPH_H
#define PARLA_GRAPH_H

#include "device/device.h"
#include "trace/trace.h"

#define PARLA__LEVELS 3 /* priority levels: 0 high, 1 normal, 2 low */

/* ------------------------------------------------------------------ tasks -- */

enum {
    PARLA__EDGE_SOFT = 1,     /* a failure does not cancel the successor (suspend_on) */
    PARLA__EDGE_NOTIFIED = 2, /* released early by runahead; the finish only frees it */
    PARLA__EDGE_ORDER = 4,    /* ordering only (write-after-read, write-after-write hazards): a
                                 failure does not cancel the successor, runahead may release it */
    PARLA__EDGE_DATA = 8,     /* from a data hazard, not an explicit dependency (traces draw it apart) */
    PARLA__EDGE_POOLED = 16,  /* its memory belongs to a replay pool (parla__graph_pool_t): not freed alone */
};

typedef struct parla__graph_edge {
    parla_task_t *succ; /* holds a reference */
    struct parla__graph_edge *next;
    int flags;
} parla__graph_edge_t;

/* The value of a sealed successor stack: the task has finished. */
#define PARLA__SEALED ((parla__graph_edge_t *)(uintptr_t)1)

enum {
    PARLA__F_LISTED = 1,  /* in rt's placeholder list */
    PARLA__F_CANCEL = 2,  /* a hard dependency failed: cancel instead of run */
    PARLA__F_WAITED = 4,  /* a thread blocks in parla_task_wait on it */
    PARLA__F_CLAIMED = 8, /* its cancelled finish is claimed (parla_runtime_cancel_stuck
                             and the finish worklist race for it: exactly one finishes it) */
};

typedef struct parla__graph_access {
    parla_data_t *data; /* holds a reference */
    int mode;
    int slot; /* the position in the task's devices (t->devices[slot]) the data is brought to */
} parla__graph_access_t;

typedef struct parla__graph_option {
    int n;
    int slots[PARLA_MAX_TASK_DEVICES];
    int64_t vcus;
    uint64_t memory;
} parla__graph_option_t;

/* What only some tasks need: placement options, data accesses, mapping. */
typedef struct parla__graph_task_ext {
    parla__graph_option_t *options;
    int n_options, cap_options;
    parla__graph_access_t *accesses;
    int n_accesses, cap_accesses;
    parla_mapping_t mapping;
    /* Per position in t->devices: that device's unpin_epoch when data was last
     * acquired there; room_slot: the position whose device lacked room. */
    uint64_t data_epoch[PARLA_MAX_TASK_DEVICES];
    int room_slot;
    bool prepared;       /* data brought to the device and pinned (until the body ends) */
    _Atomic int n_waiting; /* copies in flight the task waits for, + 1 while preparing */
    /* CUDA: the events recorded on the task's streams after its body, one per
     * device (NULL on host devices), held until the task is done. */
    parla__dev_event_t *events[PARLA_MAX_TASK_DEVICES];
    /* Events of predecessors that released this task at their runahead: its
     * streams (and the copy streams bringing its data) wait on them. Pushed
     * lock-free by the predecessors before they release it. */
    _Atomic(struct parla__graph_evwait *) waits;
    uint64_t ran_ns; /* when the body returned (for the trace of its device work) */
    /* Records for waiting on copies in flight: one per access (to its device)
     * and, per access, one per device of the runtime (for a write: the copies
     * of the bytes it writes still in flight there, a write-back to the CPU
     * among them), made with the first preparation (so registering as a
     * waiter never fails). */
    struct parla__graph_waiter *wait_nodes;
    /* A copy the task waited for failed on the device (PARLA_E* code): the
     * task fails instead of running its body. */
    _Atomic int copy_error;
    /* The ext part of a replayed task, from its replay pool: this struct belongs to the pool, and options
     * and accesses point into the recorded graph (the data layer does not free the access list). */
    bool pooled;
} parla__graph_task_ext_t;

typedef struct parla__graph_evwait {
    parla__dev_event_t *event; /* holds a reference */
    struct parla__graph_evwait *next;
} parla__graph_evwait_t;

/* Makes work queued on stream (of device d) wait for every event in t's waits
 * list (stream_wait_event; the host does not wait). No-op without waits. */
int parla__graph_stream_wait_task(parla_task_t *t, parla__dev_t *d, void *stream);
/* Blocks the calling thread until every event in t's waits list completed
 * (queried first: a complete one costs no synchronization). No lock held. */
void parla__graph_host_wait_task(parla_task_t *t);
/* A retained snapshot of t's waits (for copies queued for t): returns how
 * many (0: *out is NULL) or PARLA_ENOMEM. */
int parla__graph_task_waits(parla_task_t *t, parla__dev_event_t ***out);
/* Drops t's waits list and its own events. */
void parla__graph_task_events_release(parla_task_t *t);

struct parla_task {
    _Atomic int32_t pending; /* unfinished dependencies + 1 while not submitted/suspended */
    _Atomic int32_t refs;
    _Atomic int state;       /* parla_task_state_t */
    _Atomic int flags;       /* PARLA__F_* */
    _Atomic(parla__graph_edge_t *) succ; /* lock-free stack of successors, or SEALED */
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
    parla__graph_task_ext_t *ext;
    /* The first edge onto this task's successor stack lives here, so a task
     * with one dependent (chains, fan-in) allocates no edge. */
    parla__graph_edge_t first_edge;
    _Atomic bool first_edge_used;
    _Atomic(char *) name; /* owned; a default one is made on first use */
    uint32_t ph_index;    /* position in parla__graph_rt(rt)->placeholders while listed */
    uint64_t serial;  /* creation order, for default names */
    uint64_t creator; /* serial + 1 of the task whose body created it; 0 outside bodies */
    /* A replayed task's pool (its memory, name and edges; see below), or NULL: an ordinary task. */
    struct parla__graph_pool *pool;
};

void parla__graph_task_ext_free(parla_task_t *t);
/* Frees the recycled task memory (at the end of the runtime). */
void parla__graph_task_pool_free(parla_runtime_t *rt);
parla__graph_task_ext_t *parla__graph_task_ext(parla_task_t *t);
/* Whether a path of dependency edges leads from `from` (never submitted) to
 * `to`: yes, no, or unknown (the search visited `limit` tasks, or ran out of
 * memory), which callers must not take for no. */
typedef enum { PARLA__REACH_NO = 0, PARLA__REACH_YES = 1, PARLA__REACH_UNKNOWN = -1 } parla__graph_reach_t;
parla__graph_reach_t parla__graph_reaches(parla_task_t *from, parla_task_t *to, size_t limit);
/* Adds the edge dep -> t (t is held above zero pending). */
int parla__graph_add_edge(parla_task_t *t, parla_task_t *dep, int flags);
/* The same for t a task of the replay pool that the calling thread is issuing (t->pool, between
 * parla__graph_pool_begin and _end): the edge comes from that pool, without looking up which pool this
 * thread issues. */
int parla__graph_add_edge_issuing(parla_task_t *t, parla_task_t *dep, int flags);

/* Runahead (see parla.h): after a GPU task's body, releases its GPU-only
 * successors and leaves the rest to parla__sched_task_complete_gpu. */
void parla__graph_task_runahead(parla_task_t *t);
/* Finishes t as cancelled when it is submitted and waits for dependencies
 * (for parla_runtime_cancel_stuck); false when it is past that, or another
 * path claimed its finish. */
bool parla__graph_task_cancel_stuck(parla_task_t *t);
/* Finishes t with the given final state and releases its successors. */
void parla__graph_task_finish(parla_task_t *t, int state, int error);
/* Drops one count of t's pending counter; makes t ready at zero. */
void parla__graph_task_dec_pending(parla_task_t *t);
/* PARLA_EINVAL (NULL) or PARLA_ESTATE (past created) with a message naming fn, else 0. */
int parla__graph_task_require_created(const parla_task_t *t, const char *fn);
/* parla_task_submit without the checks that hold for every task of a replay once they hold for its first
 * (a task with a body, its runtime neither destroyed nor used from a fork() child): the caller made them.
 * The same results otherwise (PARLA_ESTATE when submitted already or the runtime is closing, PARLA_ERESOURCE
 * for infeasible needs). */
int parla__graph_task_submit_checked(parla_task_t *t);

/* Frees an edge of owner's successor stack (unless it is owner's inline one, or a pool's). */
static inline void parla__graph_edge_free(parla_task_t *owner, parla__graph_edge_t *e)
{
    if (e != &owner->first_edge && !(e->flags & PARLA__EDGE_POOLED))
        parla__free(e);
}

/* Pushes edge e onto dep's lock-free successor stack; false when the stack is
 * sealed (dep has finished: e was not pushed and is the caller's again). */
static inline bool parla__graph_edge_push(parla_task_t *dep, parla__graph_edge_t *e)
{
    parla__graph_edge_t *head = atomic_load_explicit(&dep->succ, memory_order_acquire);
    for (;;) {
        if (head == PARLA__SEALED)
            return false;
        e->next = head;
        if (atomic_compare_exchange_weak_explicit(&dep->succ, &head, e, memory_order_acq_rel,
                                                  memory_order_acquire))
            return true;
    }
}

/* ----------------------------------------------------------- replay pools -- */

/* The memory of one replay of a recorded graph (graph/pool.c): its tasks' objects, their ext parts, and the
 * edges added to them while the replay is issued, so that replaying allocates nothing once a pool is
 * reused. A pool is handed to one replay at a time (parla__graph_pool_begin); it is idle again when every
 * task of that replay has been freed (the last one calls its idle function), and only then is it reused.
 * An edge taken from the pool has a task of the pool at one end (the successor, or for the edges to a
 * replay's join, the predecessor), and every edge is freed before the task at either end, so no edge of an
 * idle pool is still in use.
 *
 * Only the thread issuing the replay (between begin and end) takes from the pool: parla__graph_add_edge
 * takes an edge from it when the successor belongs to the pool this thread is issuing, and allocates
 * otherwise (a task of the pool that already runs and adds edges to itself, on a worker); the replay's own
 * code, which knows that it issues, calls parla__graph_add_edge_issuing.
 * Under AddressSanitizer freed tasks, ext parts and edges of a pool are poisoned. */
typedef struct parla__graph_edge_chunk parla__graph_edge_chunk_t;
typedef struct parla__graph_pool parla__graph_pool_t;
struct parla__graph_pool {
    parla_runtime_t *rt;
    _Atomic long refs; /* tasks of the current replay not freed yet, + 1 while it is being issued */
    void (*idle)(parla__graph_pool_t *p); /* refs reached 0 (any thread; locks of the data layer may be held) */
    void *owner;                          /* for idle */
    parla__graph_pool_t *next;            /* for the owner's list of idle pools */
    parla_task_t *tasks;
    size_t n_tasks;
    parla__graph_task_ext_t *exts;
    size_t n_exts;
    parla__graph_edge_chunk_t *chunks, *chunk; /* all chunks; the one edges are taken from */
    size_t chunk_used;
};

/* A pool for replays of n_tasks tasks, n_exts of them with an ext part; NULL when out of memory. */
parla__graph_pool_t *parla__graph_pool_create(parla_runtime_t *rt, size_t n_tasks, size_t n_exts);
/* Frees an idle (or never begun) pool. */
void parla__graph_pool_free(parla__graph_pool_t *p);
/* Hands idle pool p to a replay issued by the calling thread: idle(p) is called once every task made from
 * it has been freed, after parla__graph_pool_end. */
void parla__graph_pool_begin(parla__graph_pool_t *p, void (*idle)(parla__graph_pool_t *), void *owner);
/* The replay is issued: made tasks were made from p (the others are not counted). */
void parla__graph_pool_end(parla__graph_pool_t *p, size_t made);
/* Task i of the pool, set up as parla_task_create does (its name is the caller's: kept, not freed; the
 * caller checked the runtime). Between begin and end only, each i at most once. */
parla_task_t *parla__graph_pool_task(parla__graph_pool_t *p, size_t i, parla_task_fn fn, void *arg,
                                     const char *name);
/* Gives t (a task of p) ext part j of the pool, zeroed (pooled: options and accesses are the caller's). */
parla__graph_task_ext_t *parla__graph_pool_ext(parla__graph_pool_t *p, size_t j, parla_task_t *t);
/* An edge for t (a task of p being issued by this thread), flagged POOLED, or NULL when out of memory. */
parla__graph_edge_t *parla__graph_pool_edge(parla__graph_pool_t *p);
/* The pool the calling thread is issuing a replay from, or NULL. */
parla__graph_pool_t *parla__graph_pool_issuing(void);
/* A task of p was freed (its last reference). */
void parla__graph_pool_task_freed(parla__graph_pool_t *p, parla_task_t *t);
/* Sets up t's fields as parla_task_create does (t's memory is the caller's). */
void parla__graph_task_init(parla_runtime_t *rt, parla_task_t *t, parla_task_fn fn, void *arg);

/* ------------------------------------------------------------------ hooks -- */

/* How the graph informs the layers above it (the scheduler installs them in
 * parla__graph_rt(rt)->ghooks when it creates the runtime; constant afterwards). The graph
 * calls up only through these, with no graph lock held. */
typedef struct parla__graph_hooks {
    /* t's pending count reached 0: map, reserve, prepare, enqueue (or finish
     * it, cancelled). One call per ready task. */
    void (*ready)(parla_task_t *t);
    /* t's final state is published and its successors are notified: the
     * engine's bookkeeping (mapping counts, the task_finished hook, data
     * references, waking waiters). One call per finish; t is still held. */
    void (*finished)(parla_task_t *t);
    /* The last reference to a task with an ext part is gone: drop the upper
     * layers' parts of it (data references, waiter records). */
    void (*dispose)(parla_task_t *t);
    /* The runtime's live objects (tasks, stores, holds, its own count)
     * reached 0: free it. */
    void (*last_object)(parla_runtime_t *rt);
    /* At submission of a task with placement options: 0 when some option can
     * hold its needs, else PARLA_ERESOURCE with the message set. */
    int (*feasible)(parla_task_t *t);
    /* A parla_task_submit ended that a stuck check, or a waiter going to
     * sleep, passed over while it was under way (parla__graph_submits_under_way):
     * every thread blocked in a wait looks again. Any thread, no lock held. */
    void (*recheck)(parla_runtime_t *rt);
} parla__graph_hooks_t;

/* The graph layer's part of a runtime (the first member of data's part). */
typedef struct parla__graph_rt {
    parla__dev_devs_t devs;          /* first */
    parla__trace_t *trace;       /* NULL when tracing is off */
    parla__graph_hooks_t ghooks; /* how graph/ and data/ call up (set at creation, constant) */

    _Atomic long n_active;   /* submitted, not finished (mod PARLA__SUBMITTING), plus
                              * PARLA__SUBMITTING for each submit under way */
    _Atomic bool recheck;    /* a stuck check saw a submit under way: its end wakes the waiters */
    _Atomic long n_live;     /* task objects not yet freed (+ stores, holds, the runtime's own) */
    _Atomic uint64_t serial;
    _Atomic uint64_t n_failed, n_cancelled;
    _Atomic bool destroyed;  /* destroy succeeded; free with the last task */
    _Atomic int n_finishing_other; /* threads other than this runtime's workers (device engines, cancels)
                                    * inside parla__graph_task_finish: parla_runtime_destroy waits them out */
    _Atomic bool closing;    /* parla_runtime_destroy is checking for live tasks */

    /* Recycled task memory (see task.c). */
    _Atomic(parla_task_t *) pool; /* freed tasks, pushed lock-free, linked by qnext */
    _Atomic long pool_count;      /* about how many are in pool */
    _Atomic int alloc_lock;       /* spinlock: protects alloc_list */
    _Atomic(parla_task_t *) alloc_list; /* tasks taken from pool, handed out by create
                                           (written under alloc_lock; read without it as a hint) */

    pthread_mutex_t placeholder_lock; /* protects the placeholder list */
    parla_task_t **placeholders;      /* never-submitted tasks with dependents */
    size_t n_placeholders, cap_placeholders;
} parla__graph_rt_t;

/* parla_task_submit counts its task in n_active, and adds PARLA__SUBMITTING
 * there, before it hands the task on (ready hook, or a dependency's pending
 * count): in between, the task is neither ready nor waiting on anything
 * running, and a stuck check from another thread would wrongly find nothing
 * able to run. The stuck check calls parla__graph_submits_under_way first. */
#define PARLA__SUBMITTING ((long)1 << 40)

/* For the stuck check, and a waiter about to sleep: true while some
 * parla_task_submit is under way (one ending then calls the recheck hook);
 * false with *active set to the submitted unfinished tasks otherwise.
 * Sequentially consistent with the submit's end: either that end sees this
 * call's mark, or this call sees no submit under way. A finish that leaves
 * no task active but submits under way still wakes parla_runtime_wait_all,
 * which then passes over them here before it sleeps again. */
bool parla__graph_submits_under_way(parla_runtime_t *rt, long *active);

static inline parla__graph_rt_t *parla__graph_rt(const parla_runtime_t *rt)
{
    return (parla__graph_rt_t *)(void *)rt;
}

/* Submitted tasks not yet finished, those of submits under way included. */
static inline long parla__graph_n_active(const parla_runtime_t *rt)
{
    return atomic_load(&parla__graph_rt(rt)->n_active) % PARLA__SUBMITTING;
}

/* One live object of rt (a task, a store, a hold) is gone; the last one
 * frees the runtime (its last_object hook). */
void parla__graph_object_freed(parla_runtime_t *rt);

/* Placeholder registry: never-submitted tasks that others depend on (for the stuck diagnosis and
 * parla_runtime_unsubmitted). */
int parla__graph_placeholder_add(parla_runtime_t *rt, parla_task_t *t);
void parla__graph_placeholder_remove(parla_runtime_t *rt, parla_task_t *t);

#endif
