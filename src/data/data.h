/*
 * data/data.h: the data layer's interface to the scheduler: data objects' copies across devices
 * (coherence per byte range), residency and eviction, the copies a task needs before it runs, and the
 * access hazards that become graph edges. The types behind it are in data/impl.h (data/ only).
 * Uses util, device, trace and graph. Not installed.
 */
#ifndef PARLA_DATA_H
#define PARLA_DATA_H

#include "graph/graph.h"

/* Data: prepared when the task is dispatched (allocation, pins, copies queued
 * on copy engines), released after the body. */
#define PARLA__PENDING 1 /* parla__data_prepare: copies in flight; the engine enqueues the task */
int parla__data_prepare(parla_task_t *t);
/* Bytes of t's accesses for its device at position slot that are valid (or planned) on device; *total:
 * their size. For mapping. */
uint64_t parla__data_task_data_bytes(parla_task_t *t, int device, int slot, uint64_t *total);
/* The same, valid (or planned) on any device of mask (bit i: device i). */
uint64_t parla__data_task_data_bytes_on(parla_task_t *t, uint64_t mask, int slot, uint64_t *total);
void parla__data_release_task(parla_task_t *t);
/* After acquire returned PARLA_EBUSY (a device of t full of pinned copies):
 * waits for running tasks to unpin there, then makes t ready again. */
void parla__data_wait_for_room(parla_task_t *t);
/* Records that t's data will be brought to its devices (t mapped; for later mappings). */
void parla__data_plan(parla_task_t *t);
/* At parla_runtime_destroy: drops the tasks held by the access histories of
 * the data objects still alive. A task that was given accesses and released
 * without being submitted is held by those histories and holds their data:
 * the cycle is broken here. */
void parla__data_forget_history(parla_runtime_t *rt);

/* One account per GPU: data copies (resident) and task reservations
 * (memory=) share its capacity. parla__data_make_room, with no device lock
 * held: evicts unpinned copies (writing back what only they hold) until
 * resident + reserved fits (best effort). parla__data_pinned_bytes_locked,
 * with the device lock held: the bytes of the copies pinned by running tasks
 * (which cannot be evicted). */
void parla__data_make_room(parla__dev_t *d);
uint64_t parla__data_pinned_bytes_locked(const parla__dev_t *d);

/* For parla_data_wait / parla_data_fetch (outside the access declarations of tasks): a task (a
 * reference) whose access conflicts with an outside access to d (unfinished writers of its ranges, and
 * with write, their readers), or NULL. */
parla_task_t *parla__data_conflict(parla_data_t *d, int write);
/* The same with d's store lock held. */
parla_task_t *parla__data_conflict_locked(parla_data_t *d, int write);
/* Replayed graphs (sched/replay.c): the hazards among the accesses of a recorded graph, resolved once, when
 * the graph is first replayed, byte range by byte range, into edges between its tasks; a replay then adds
 * only those edges, and consults and updates each store's access history once (parla__data_replay_apply)
 * instead of once per access. What the history learns is what the graph's accesses one by one would have
 * left there for the bytes they touch: each byte's last writer in the graph and its readers since (or, for
 * bytes the graph only reads, its readers added to the history's). So tasks spawned after a replay, and
 * the next replay, are ordered after it exactly as after spawned tasks. */
typedef struct parla__data_replay_access {
    size_t node;        /* the task's index in the graph; the list in the order the accesses are made */
    parla_data_t *data; /* borrowed (the graph holds it for the plan's lifetime) */
    int mode;           /* PARLA_READ, PARLA_WRITE or PARLA_READWRITE */
} parla__data_replay_access_t;
typedef struct parla__data_replay_edge {
    size_t node, pred; /* node waits for pred, whose access came first in the list */
    int flags;         /* PARLA__EDGE_DATA, with PARLA__EDGE_ORDER unless node reads what pred wrote */
} parla__data_replay_edge_t;
typedef struct parla__data_replay parla__data_replay_t;
/* The plan of the n accesses acc (in the order they are made: each task's accesses together): 0, or
 * PARLA_ENOMEM with the message set. */
int parla__data_replay_plan(parla_runtime_t *rt, const parla__data_replay_access_t *acc, size_t n,
                            parla__data_replay_t **out);
/* The edges between the graph's tasks (sorted by node, then pred; one per pair); *n: how many. */
const parla__data_replay_edge_t *parla__data_replay_edges(const parla__data_replay_t *p, size_t *n);
/* For one replay whose task for node i is tasks[i] (created, not submitted, with no successor yet, from the
 * replay pool the calling thread is issuing: parla__graph_add_edge_issuing, graph/graph.h): adds
 * the edges from the tasks in the histories (spawned before, earlier replays) to the replay's tasks whose
 * accesses meet them, and leaves the replay's tasks in the histories. Each store's history changes under
 * its lock in one step. 0, or PARLA_ENOMEM with the message set (a store whose history could not be
 * updated is left as it was; the caller cancels the replay). Serialised by the caller (the plan's
 * scratch space is used); no data lock held. */
int parla__data_replay_apply(parla__data_replay_t *p, parla_task_t *const *tasks);
void parla__data_replay_free(parla__data_replay_t *p);
/* The data part of a task that is being freed (the graph's dispose hook):
 * drops its data references and waiter records. */
void parla__data_task_dispose(parla_task_t *t);

/* How the data layer informs the scheduler (installed in parla__data_rt(rt)->dhooks when the
 * runtime is created; constant afterwards). Called with no data lock held. */
typedef struct parla__data_hooks {
    /* The copies t waited for have all arrived (on an engine thread): enqueue it. */
    void (*arrived)(parla_task_t *t);
    /* Copies were unpinned on a device: retry room, the tasks that waited for
     * room for their data, and reserve, those blocked on its resources (lists
     * linked by qnext; either may be NULL). */
    void (*unpinned)(parla_task_t *room, parla_task_t *reserve);
    /* Queue a retry of t (made ready again) on its first device's engine;
     * false when no job can be allocated. */
    bool (*retry)(parla_task_t *t);
} parla__data_hooks_t;

/* The data layer's part of a runtime (the first member of struct
 * parla_runtime, sched/sched.h). */
typedef struct parla__data_rt {
    parla__graph_rt_t graph;     /* first */
    parla__data_hooks_t dhooks;
    pthread_mutex_t stores_lock; /* protects the list of data stores */
    struct parla__data_store *stores; /* live data stores (see data/store.c) */
} parla__data_rt_t;

static inline parla__data_rt_t *parla__data_rt(const parla_runtime_t *rt)
{
    return (parla__data_rt_t *)(void *)rt;
}

/* The runtime d belongs to. */
parla_runtime_t *parla__data_runtime(const parla_data_t *d);
/* Makes d valid on device now (no conflicting task is left): waits for copies in flight there, then
 * copies synchronously; a write also waits for the copies of d's bytes still in flight to other devices
 * (they may read the copy the caller is to write). PARLA__AGAIN when a conflicting task was submitted
 * since the caller's wait (its write may be under way): the caller waits again and calls again. Errors: PARLA_ENOMEM, PARLA_EDEVICE,
 * PARLA_ERESOURCE (device full of copies in use by running tasks). */
#define PARLA__AGAIN 2
int parla__data_make_valid_now(parla_data_t *d, int device, int write);

#endif
