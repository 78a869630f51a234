/*
 * util/util.h: the lowest layer of the engine (util -> device -> trace -> graph -> data -> sched): error
 * messages, allocation with fault injection, spinlocks. Knows no other layer; every engine file may use it.
 * Not installed.
 */
#ifndef PARLA_UTIL_H
#define PARLA_UTIL_H

#include "parla.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ allocation -- */

/* The util part of a runtime: its allocation account (fault injection makes the fail_at-th allocation
 * fail; 0: never) and the process that created it. It is the first member of struct parla_runtime, so
 * util finds it from the runtime handle without knowing the rest of the runtime (C11 6.7.2.1: a pointer
 * to a structure, converted, points to its first member). */
typedef struct parla__alloc {
    _Atomic uint64_t count; /* allocations made so far (the runtime is number 1) */
    uint64_t fail_at;
    int pid;                /* the creating process (fork() children refuse work) */
} parla__alloc_t;

static inline parla__alloc_t *parla__rt_head(const parla_runtime_t *rt)
{
    return (parla__alloc_t *)(void *)rt;
}

/* PARLA_ESTATE with a message naming fn when called in a fork() child of the
 * process that created rt, else 0. */
int parla__check_process(const parla_runtime_t *rt, const char *fn);

/* --------------------------------------------------------- thread identity -- */

/* Who the calling thread is: a worker of runtime rt (index, the task whose body it runs), or nobody
 * (parla__self() is NULL). The scheduler's worker record begins with it; util, graph and trace read it
 * without knowing workers. Written by its own thread only (finishing is read by others). */
typedef struct parla__self {
    parla_runtime_t *rt;
    int index;
    parla_task_t *current;
    _Atomic int finishing; /* > 0 while in parla__graph_task_finish (parla_runtime_destroy waits it out) */
} parla__self_t;

extern _Thread_local parla__self_t *parla__self_tls __attribute__((visibility("hidden")));
static inline parla__self_t *parla__self(void)
{
    return parla__self_tls;
}

/* Every internal allocation goes through these, so fault injection can make
 * the N-th one fail. rt may be NULL (no fault injection). Any thread. */
void *parla__alloc(parla_runtime_t *rt, size_t size);
void *parla__calloc(parla_runtime_t *rt, size_t n, size_t size);
void parla__free(void *p);

/* Records a formatted message for parla_last_error_message() and returns code. */
int parla__error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ----------------------------------------------------------- data locks -- */

/* The mutexes of the data layer (store->lock, arrival->lock, and device->lock
 * where data/ takes them) are taken through these, which count per thread the locks it holds: the rule
 * that no device call (an ops-> function: alloc, free, copy, synchronisation) is made while one is held
 * (sched/sched.h) is then checkable: parla__locks_held() is 0 at every device call of data/. A counter of
 * the calling thread only (no atomics); a pthread_cond_wait on one of these locks leaves it counted (the
 * thread sleeps meanwhile). */
extern _Thread_local int parla__locks_held_tls __attribute__((visibility("hidden")));
static inline void parla__lock(pthread_mutex_t *m)
{
    pthread_mutex_lock(m);
    parla__locks_held_tls++;
}
static inline int parla__trylock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_trylock(m);
    if (rc == 0)
        parla__locks_held_tls++;
    return rc;
}
static inline void parla__unlock(pthread_mutex_t *m)
{
    parla__locks_held_tls--;
    pthread_mutex_unlock(m);
}
/* The data-layer locks the calling thread holds now (for tests of internals and assertions). */
int parla__locks_held(void);

/* ------------------------------------------------------------- spinlocks -- */

/* A spinlock for critical sections of a few pointer writes; a waiter that spins too long yields its
 * core. Leaf locks only: nothing else is taken while one is held. */
void parla__spin_lock(_Atomic int *lock);
void parla__spin_unlock(_Atomic int *lock);

#endif
