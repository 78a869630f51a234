/* spin.c: spinlocks, and the count of data locks a thread holds (util.h). Critical sections are a few pointer
 * writes, so a spinlock guards each queue (a contended mutex would sleep in
 * the kernel); a waiter that spins too long yields its core, since workers
 * may outnumber cores. */
#include "util/util.h"

#include <sched.h>

void parla__spin_lock(_Atomic int *lock)
{
    for (int spins = 0;; spins++) {
        if (atomic_load_explicit(lock, memory_order_relaxed) == 0 &&
            atomic_exchange_explicit(lock, 1, memory_order_acquire) == 0)
            return;
        if (spins >= 32) {
            sched_yield();
            spins = 0;
        } else {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }
}

void parla__spin_unlock(_Atomic int *lock)
{
    atomic_store_explicit(lock, 0, memory_order_release);
}

_Thread_local int parla__locks_held_tls;

int parla__locks_held(void)
{
    return parla__locks_held_tls;
}
