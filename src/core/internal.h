/*
 * internal.h: engine internals shared by the files of libparla. Not installed.
 *
 * Lock order (a thread holding a lock may only take locks further down):
 *   1. rt->placeholder_lock   (never-submitted tasks that have dependents)
 *   2. device->lock           (resource accounting and blocked list of a device)
 *   3. queue->lock            (one ready queue)
 *   4. rt->park_lock          (sleeping workers)
 *   5. rt->wait_lock          (threads blocked in wait calls, wake_gen)
 * No lock is held while a task body runs.
 */
#ifndef PARLA_INTERNAL_H
#define PARLA_INTERNAL_H

#include "parla.h"

#include <pthread.h>
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
typedef struct parla__queue {
    pthread_mutex_t lock; /* protects head, tail and the links of queued tasks */
    parla_task_t *head, *tail;
    _Atomic long size; /* read without the lock to skip empty queues */
} parla__queue_t;

void parla__queue_init(parla__queue_t *q);
void parla__queue_destroy(parla__queue_t *q);
void parla__queue_push(parla__queue_t *q, parla_task_t *t);
parla_task_t *parla__queue_pop_head(parla__queue_t *q);
parla_task_t *parla__queue_pop_tail(parla__queue_t *q);

/* ---------------------------------------------------------------- devices -- */

/* Fixed point for vcus: 1.0 == PARLA__VCU_ONE, so sums are exact. */
#define PARLA__VCU_ONE 1000000LL

typedef struct parla__device {
    int index;
    pthread_mutex_t lock;     /* protects vcus_free, memory_free and the blocked list */
    int64_t vcus_capacity;    /* fixed point */
    int64_t vcus_free;
    uint64_t memory_capacity; /* bytes */
    uint64_t memory_free;
    parla_task_t *blocked_head, *blocked_tail; /* tasks waiting for resources, FIFO */
} parla__device_t;

int parla__device_init(parla__device_t *d, int index, uint64_t memory);
void parla__device_destroy(parla__device_t *d);
/* Reserves t's needs or appends t to the blocked list. Returns true if reserved. */
bool parla__device_reserve_or_block(parla__device_t *d, parla_task_t *t);
/* Gives back t's needs, then reserves for blocked tasks that now fit, in FIFO
 * order; those are returned as a list linked through qnext, to be enqueued. */
parla_task_t *parla__device_release(parla__device_t *d, parla_task_t *t);

/* ------------------------------------------------------------------ tasks -- */

enum {
    PARLA__EDGE_SOFT = 1, /* a failure does not cancel the successor (suspend_on) */
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
};

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
    int64_t vcus;     /* fixed point, on the CPU device */
    uint64_t memory;  /* bytes, on the CPU device */
    char *name;       /* owned, may be NULL */
    uint64_t serial;  /* creation order, for default names */
};

/* Called by the engine when pending reaches zero. */
void parla__task_ready(parla_task_t *t);
/* Runs t's body on the calling worker and finishes it. */
void parla__task_run(parla_task_t *t);
/* Finishes t with the given final state and releases its successors. */
void parla__task_finish(parla_task_t *t, int state, int error);

/* ---------------------------------------------------------------- runtime -- */

typedef struct parla__worker {
    parla_runtime_t *rt;
    int index;
    pthread_t thread;
    parla__queue_t deque[PARLA__LEVELS];
    uint64_t rng;
    parla_task_t *current;
    /* Per-worker counters, summed by parla_runtime_stats. Written by the owner only. */
    _Atomic uint64_t n_run, n_steals, n_parks;
} parla__worker_t;

struct parla_runtime {
    int n_workers;
    parla__worker_t *workers;
    parla__queue_t shared[PARLA__LEVELS]; /* tasks made ready outside workers */
    parla__device_t cpu;

    /* Fault injection: allocation counter and the one to fail. */
    _Atomic uint64_t alloc_count;
    uint64_t fail_alloc_at;

    parla_config_t config;

    _Atomic long n_active;   /* submitted, not finished */
    _Atomic long n_live;     /* task objects not yet freed */
    _Atomic uint64_t serial;
    _Atomic uint64_t n_created, n_failed, n_cancelled;
    _Atomic bool destroyed;  /* destroy succeeded; free with the last task */
    _Atomic bool cancelling; /* parla_runtime_cancel_all was called */

    pthread_mutex_t park_lock; /* protects n_sleeping transitions and stop */
    pthread_cond_t park_cond;
    _Atomic int n_sleeping;
    _Atomic bool stop;

    pthread_mutex_t wait_lock; /* protects the wait condition below */
    pthread_cond_t wait_cond;  /* broadcast when n_active reaches 0, a waited task
                                  finishes, or the runtime goes quiescent */
    _Atomic int n_all_waiters;
    uint64_t wake_gen;         /* bumped by every broadcast of wait_cond */

    pthread_mutex_t placeholder_lock; /* protects the placeholder list */
    parla_task_t **placeholders;      /* never-submitted tasks with dependents */
    size_t n_placeholders, cap_placeholders;
};

/* The calling thread's worker, or NULL. */
parla__worker_t *parla__current_worker(void);
/* Enqueues a ready task (resources already reserved) and wakes a sleeper. */
void parla__enqueue(parla_runtime_t *rt, parla_task_t *t);
/* Runs at most one queued task on the calling worker; returns whether it did. */
bool parla__help_one(parla__worker_t *w);
/* Wakes threads blocked in wait calls. */
void parla__wake_waiters(parla_runtime_t *rt);
/* Called when a task object is freed. */
void parla__runtime_task_freed(parla_runtime_t *rt);
/* Placeholder registry. */
int parla__placeholder_add(parla_runtime_t *rt, parla_task_t *t);
void parla__placeholder_remove(parla_runtime_t *rt, parla_task_t *t);

#endif
