/*
 * test_runahead.c: the runahead protocol on virtual GPUs. A GPU task is done
 * for its GPU-only dependents when its body returns; it becomes DONE, and its
 * dependents that may run on the CPU are released, only when its device's
 * engine has finished the work queued there before it. Here the engine of
 * gpu(0) is kept busy by a large copy, so the difference is observable.
 */
#include "check.h"

#include <stdatomic.h>

enum { GPU0 = 1, GPU1 = 2 };

static parla_task_t *a_task;
static parla_data_t *big;
static uint64_t big_bytes;
static _Atomic int seen_by_gpu_dependent = -1, seen_by_cpu_dependent = -1;
static _Atomic uint64_t valid_at_cpu_dependent;

static int nothing(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 0;
}

static int gpu_dependent(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    atomic_store(&seen_by_gpu_dependent, (int)parla_task_state(a_task));
    return 0;
}

static int cpu_dependent(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    atomic_store(&seen_by_cpu_dependent, (int)parla_task_state(a_task));
    atomic_store(&valid_at_cpu_dependent, parla_data_valid_bytes(big, GPU0));
    return 0;
}

static parla_task_t *on_device(parla_runtime_t *rt, parla_task_fn fn, int device)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, NULL, &t));
    CHECK_OK(parla_task_add_placement(t, &device, 1, 0.0, 0));
    return t;
}

int main(void)
{
    check_watchdog(50);
    int rounds = (int)scaled(10, 3), runahead_seen = 0;
    for (int round = 0; round < rounds; round++) {
        check_set_phase("setup");
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = 2;
        cfg.n_virtual_gpus = 2;
        cfg.virtual_gpu_memory = (uint64_t)1 << 30;
        parla_runtime_t *rt;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        big_bytes = (uint64_t)scaled(96, 32) << 20; /* long enough to copy for a worker to notice */
        CHECK_OK(parla_data_create(rt, big_bytes, NULL, &big));

        /* X reads the big object on gpu(0): its copy occupies gpu(0)'s engine. */
        parla_task_t *x = on_device(rt, nothing, GPU0);
        CHECK_OK(parla_task_add_access(x, big, PARLA_READ));
        CHECK_OK(parla_task_submit(x));
        /* A runs on gpu(0) now; its end-of-work marker waits behind X's copy. */
        a_task = on_device(rt, nothing, GPU0);
        parla_task_t *b = on_device(rt, gpu_dependent, GPU1); /* GPU-only: released at A's runahead */
        parla_task_t *c;                                       /* may run on the CPU: released at A's end */
        CHECK_OK(parla_task_create(rt, cpu_dependent, NULL, &c));
        CHECK_OK(parla_task_add_dependency(b, a_task));
        CHECK_OK(parla_task_add_dependency(c, a_task));
        check_set_phase("run");
        CHECK_OK(parla_task_submit(b));
        CHECK_OK(parla_task_submit(c));
        CHECK_OK(parla_task_submit(a_task));
        CHECK_OK(parla_runtime_wait_all(rt));
        int gpu_saw = atomic_load(&seen_by_gpu_dependent), cpu_saw = atomic_load(&seen_by_cpu_dependent);
        CHECK(gpu_saw == PARLA_TASK_RUNAHEAD || gpu_saw == PARLA_TASK_DONE,
              "the GPU dependent saw A %s", parla_task_state_name((parla_task_state_t)gpu_saw));
        runahead_seen += gpu_saw == PARLA_TASK_RUNAHEAD;
        CHECK(cpu_saw == PARLA_TASK_DONE, "the CPU dependent saw A %s, not done",
              parla_task_state_name((parla_task_state_t)cpu_saw));
        /* A ended after the copy queued before it on gpu(0)'s engine. */
        CHECK(atomic_load(&valid_at_cpu_dependent) == big_bytes, "A finished before the copy ahead of it: %llu of %llu",
              (unsigned long long)atomic_load(&valid_at_cpu_dependent), (unsigned long long)big_bytes);
        CHECK(parla_task_state(a_task) == PARLA_TASK_DONE && parla_task_state(x) == PARLA_TASK_DONE, "states");
        parla_task_release(x);
        parla_task_release(a_task);
        parla_task_release(b);
        parla_task_release(c);
        parla_data_release(big);
        CHECK_OK(parla_runtime_destroy(rt));
    }
    /* The copy takes milliseconds and B is released in microseconds: runahead
     * shows in (nearly) every round; one is enough to know it happens. */
    CHECK(runahead_seen > 0, "no GPU dependent ever started while A was in runahead (%d rounds)", rounds);
    printf("test_runahead: %d rounds, the GPU dependent started during A's runahead in %d\n", rounds, runahead_seen);
    return 0;
}
