/*
 * test_cuda_fake.c: the CUDA path (compute streams per worker, copy streams,
 * the event pool, runahead through cuStreamWaitEvent, asynchronous copies)
 * on the driver test double tests/c/fakecuda.c, loaded through
 * PARLA_CUDA_DRIVER. Its streams run their work after random delays, so a
 * consumer that does not wait for its producer's event sees stale data.
 *
 * 1. Discovery: two CUDA GPUs with the double's capacity.
 * 2. Runahead: a GPU-only dependent's body starts before its predecessor's
 *    queued work has run; a CPU dependent starts after it has.
 * 3. A chain of read-modify-write tasks alternating between the GPUs on one
 *    data object: every "kernel" (fakecuda_kernel, queued on the task's stream)
 *    sees exactly the value the previous one wrote.
 * 4. Random programs over cpu + 2 GPUs (blocks of data, each task reads two and
 *    writes one, as inout or output, placed on cpu, a GPU, any GPU or
 *    cpu-or-gpu), compared with a sequential run.
 * 5. A failed GPU body: its queued work has finished before its data is
 *    released and its dependents are cancelled. A task on (cpu, gpu) does
 *    not run ahead: its dependents see its GPU work complete.
 * 5b. A task released at a runahead and then cancelled still orders what
 *    follows it after the work it was ordered after.
 * 6. Nothing leaks: device memory, streams, events and contexts all returned.
 * 6b. A device error (a faulting kernel): the task fails with PARLA_EDEVICE
 *    when its event reports it, and its CPU dependents are cancelled. A copy
 *    that fails on the device fails the task that needed it, before its body,
 *    and the data keeps its last good copy.
 * 8. The calling thread's CUDA context is what it was before the engine's
 *    driver calls on it (none, or the program's own).
 * 7. Fault injection: the N-th internal allocation fails, for every N a small
 *    runahead program makes. Whatever fails, no CPU dependent starts before
 *    the GPU work it depends on has completed, nothing hangs, nothing leaks.
 */
#include "check.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef int (*launch_fn)(void *stream, void (*fn)(void *), void *arg);
typedef void (*live_fn)(long *, long *, long *, long *);
static launch_fn launch_host;

enum { CPU = 0, GPU0 = 1, GPU1 = 2 };

static double t_now(void)
{
    return now_s();
}

/* ----------------------------------------------------------- kernels ----- */

/* A "kernel": runs on the stream's thread, in stream order. */
typedef struct kernel {
    void (*body)(struct kernel *);
    uint32_t *dst;
    const uint32_t *a, *b;
    size_t n;
    uint32_t k;
    _Atomic double *stamp; /* set to the time it ran, when non-NULL */
    _Atomic int *bad;      /* counts wrong inputs seen */
    uint32_t expect;
    long ms;               /* late(): sleeps this long first */
    _Atomic int *flag;     /* late(): set to 1 at the end, when non-NULL */
} kernel_t;

static void kernel_entry(void *arg)
{
    kernel_t *k = arg;
    k->body(k);
    free(k);
}

/* Queues kernel k on the task's stream on its device `device` (an index into
 * its devices); nonzero when there is no stream or the launch fails. */
static int try_launch(parla_task_t *t, int device, kernel_t k)
{
    void *stream = parla_task_stream(t, device);
    kernel_t *p = malloc(sizeof *p);
    if (p != NULL)
        *p = k;
    if (stream == NULL || p == NULL || launch_host(stream, kernel_entry, p) != 0) {
        free(p);
        return 1;
    }
    return 0;
}

static void launch(parla_task_t *t, kernel_t k)
{
    CHECK(try_launch(t, 0, k) == 0, "task %s: no stream, or the kernel launch failed", parla_task_name(t));
}

/* Slow work: sleeps k->ms, then writes k->k to dst[0..n), stamps the time and
 * sets the flag (each when given). */
static void late(kernel_t *k)
{
    struct timespec ts = {k->ms / 1000, (k->ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
    for (size_t i = 0; i < k->n; i++)
        k->dst[i] = k->k;
    if (k->stamp)
        atomic_store(k->stamp, t_now());
    if (k->flag)
        atomic_store(k->flag, 1);
}

/* ------------------------------------------------------- 2. runahead ----- */

static _Atomic double slow_ran_at, gpu_dep_started, cpu_dep_started;

static int slow_task(parla_task_t *t, void *arg)
{
    (void)arg;
    launch(t, (kernel_t){.body = late, .ms = 100, .stamp = &slow_ran_at});
    return 0;
}

static int gpu_dep(parla_task_t *t, void *arg)
{
    (void)arg;
    atomic_store(&gpu_dep_started, t_now());
    CHECK(parla_task_stream(t, 0) != NULL, "no stream");
    CHECK(parla_task_stream(t, 1) == NULL, "a stream for a device the task does not have");
    return 0;
}

static int cpu_dep(parla_task_t *t, void *arg)
{
    (void)arg;
    atomic_store(&cpu_dep_started, t_now());
    CHECK(parla_task_stream(t, 0) == NULL, "a CPU task has a stream");
    return 0;
}

static parla_task_t *on(parla_runtime_t *rt, parla_task_fn fn, void *arg, int device)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, arg, &t));
    if (device != CPU)
        CHECK_OK(parla_task_add_placement(t, &device, 1, 0.0, 0));
    return t;
}

static void test_runahead(parla_runtime_t *rt)
{
    check_set_phase("runahead");
    parla_task_t *a = on(rt, slow_task, NULL, GPU0);
    parla_task_t *g = on(rt, gpu_dep, NULL, GPU1);
    parla_task_t *c = on(rt, cpu_dep, NULL, CPU);
    CHECK_OK(parla_task_add_dependency(g, a));
    CHECK_OK(parla_task_add_dependency(c, a));
    CHECK_OK(parla_task_submit(a));
    CHECK_OK(parla_task_submit(g));
    CHECK_OK(parla_task_submit(c));
    CHECK_OK(parla_runtime_wait_all(rt));
    double ran = atomic_load(&slow_ran_at);
    CHECK(ran > 0, "the slow kernel never ran");
    CHECK(atomic_load(&gpu_dep_started) < ran, "the GPU dependent waited for its predecessor's work on the host");
    CHECK(atomic_load(&cpu_dep_started) >= ran, "the CPU dependent started before the GPU work had completed");
    CHECK(parla_task_state(a) == PARLA_TASK_DONE, "state %d", parla_task_state(a));
    parla_task_release(a);
    parla_task_release(g);
    parla_task_release(c);
}

/* ---------------------------------------------------------- 3. chain ----- */

static _Atomic int chain_bad;

static void add_one(kernel_t *k)
{
    for (size_t i = 0; i < k->n; i++) {
        if (k->dst[i] != k->expect)
            atomic_fetch_add(k->bad, 1);
        k->dst[i] = k->expect + 1;
    }
}

typedef struct {
    parla_data_t *data;
    size_t n;
    uint32_t step;
} chain_arg_t;

static int chain_task(parla_task_t *t, void *arg)
{
    chain_arg_t *c = arg;
    int dev;
    parla_task_devices(t, &dev, 1);
    uint32_t *p = parla_data_device_ptr(c->data, dev);
    launch(t, (kernel_t){.body = add_one, .dst = p, .n = c->n, .expect = c->step, .bad = &chain_bad});
    return 0;
}

static void test_chain(parla_runtime_t *rt)
{
    check_set_phase("chain");
    size_t n = 4096;
    int steps = (int)scaled(200, 20);
    uint32_t *host = calloc(n, sizeof *host);
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, n * sizeof *host, host, &d));
    chain_arg_t *args = calloc((size_t)steps, sizeof *args);
    for (int i = 0; i < steps; i++) {
        args[i] = (chain_arg_t){d, n, (uint32_t)i};
        parla_task_t *t = on(rt, chain_task, &args[i], i % 3 == 2 ? GPU0 : GPU0 + (i % 2));
        CHECK_OK(parla_task_add_access(t, d, PARLA_READWRITE));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&chain_bad) == 0, "%d elements held stale values when a kernel read them",
          atomic_load(&chain_bad));
    CHECK_OK(parla_data_fetch(d, CPU, 0));
    for (size_t i = 0; i < n; i++)
        CHECK(host[i] == (uint32_t)steps, "host[%zu] = %u, expected %d", i, host[i], steps);
    parla_data_release(d);
    free(args);
    free(host);
}

/* -------------------------------------------------- 4. random programs --- */

enum { BLOCKS = 6 };

typedef struct {
    parla_data_t *blocks[BLOCKS];
    int w, r1, r2;
    uint32_t k;
    size_t n;
} prog_arg_t;

static void combine(uint32_t *dst, const uint32_t *a, const uint32_t *b, size_t n, uint32_t k)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = a[i] * 3u + b[i] + k + (uint32_t)i;
}

static void combine_kernel(kernel_t *k)
{
    /* The inputs may alias the output: read them first. */
    uint32_t *tmp = malloc(k->n * sizeof *tmp);
    CHECK(tmp != NULL, "out of memory");
    combine(tmp, k->a, k->b, k->n, k->k);
    memcpy(k->dst, tmp, k->n * sizeof *tmp);
    free(tmp);
}

static int prog_task(parla_task_t *t, void *arg)
{
    prog_arg_t *p = arg;
    int dev;
    parla_task_devices(t, &dev, 1);
    uint32_t *w = parla_data_device_ptr(p->blocks[p->w], dev);
    const uint32_t *a = parla_data_device_ptr(p->blocks[p->r1], dev);
    const uint32_t *b = parla_data_device_ptr(p->blocks[p->r2], dev);
    CHECK(w && a && b, "task %s: data missing on device %d", parla_task_name(t), dev);
    if (dev == CPU) {
        combine_kernel(&(kernel_t){.dst = w, .a = a, .b = b, .n = p->n, .k = p->k});
        return 0;
    }
    launch(t, (kernel_t){.body = combine_kernel, .dst = w, .a = a, .b = b, .n = p->n, .k = p->k});
    return 0;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_random(parla_runtime_t *rt, uint64_t seed, int n_tasks)
{
    size_t n = 512;
    uint32_t *host[BLOCKS], *ref[BLOCKS];
    parla_data_t *blocks[BLOCKS];
    for (int b = 0; b < BLOCKS; b++) {
        host[b] = malloc(n * sizeof(uint32_t));
        ref[b] = malloc(n * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++)
            host[b][i] = ref[b][i] = (uint32_t)(b * 1000 + i);
        CHECK_OK(parla_data_create(rt, n * sizeof(uint32_t), host[b], &blocks[b]));
    }
    prog_arg_t *args = calloc((size_t)n_tasks, sizeof *args);
    for (int i = 0; i < n_tasks; i++) {
        prog_arg_t *p = &args[i];
        memcpy(p->blocks, blocks, sizeof blocks);
        p->w = (int)(rng_next(&seed) % BLOCKS);
        p->r1 = (int)(rng_next(&seed) % BLOCKS);
        p->r2 = (int)(rng_next(&seed) % BLOCKS);
        p->k = (uint32_t)i;
        p->n = n;
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, prog_task, p, &t));
        int kind = (int)(rng_next(&seed) % 5), slot;
        switch (kind) {
        case 0: break; /* cpu */
        case 1: slot = GPU0; CHECK_OK(parla_task_add_placement(t, &slot, 1, 0.0, 0)); break;
        case 2: slot = GPU1; CHECK_OK(parla_task_add_placement(t, &slot, 1, 0.0, 0)); break;
        case 3: slot = PARLA_ANY_GPU; CHECK_OK(parla_task_add_placement(t, &slot, 1, 0.0, 0)); break;
        default:
            slot = PARLA_ANY_CPU;
            CHECK_OK(parla_task_add_placement(t, &slot, 1, 0.0, 0));
            slot = PARLA_ANY_GPU;
            CHECK_OK(parla_task_add_placement(t, &slot, 1, 0.0, 0));
        }
        int reads[2] = {p->r1, p->r2};
        for (int r = 0; r < 2; r++)
            if (reads[r] != p->w && (r == 0 || reads[1] != reads[0]))
                CHECK_OK(parla_task_add_access(t, blocks[reads[r]], PARLA_READ));
        /* The result does not depend on the old contents of the block written
         * unless it is also read: then output (write-after-read and
         * write-after-write ordering only) is as valid as inout. */
        bool write_only = p->w != p->r1 && p->w != p->r2 && rng_next(&seed) % 3 == 0;
        CHECK_OK(parla_task_add_access(t, blocks[p->w], write_only ? PARLA_WRITE : PARLA_READWRITE));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
        /* The sequential reference. */
        uint32_t *tmp = malloc(n * sizeof *tmp);
        combine(tmp, ref[p->r1], ref[p->r2], n, p->k);
        memcpy(ref[p->w], tmp, n * sizeof *tmp);
        free(tmp);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    for (int b = 0; b < BLOCKS; b++) {
        CHECK_OK(parla_data_fetch(blocks[b], CPU, 0));
        for (size_t i = 0; i < n; i++)
            CHECK(host[b][i] == ref[b][i], "program %llu: block %d [%zu] = %u, expected %u",
                  (unsigned long long)seed, b, i, host[b][i], ref[b][i]);
        parla_data_release(blocks[b]);
        free(host[b]);
        free(ref[b]);
    }
    free(args);
}

/* ------------------------------------------------------- 5. failure ----- */

static _Atomic int failed_kernel_done;

static int failing(parla_task_t *t, void *arg)
{
    parla_data_t *d = arg;
    int dev;
    parla_task_devices(t, &dev, 1);
    launch(t, (kernel_t){.body = late, .ms = 50, .dst = parla_data_device_ptr(d, dev), .n = 16, .k = 7,
                         .flag = &failed_kernel_done});
    return 42;
}

static void test_failure(parla_runtime_t *rt)
{
    check_set_phase("failure");
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, 64, NULL, &d));
    parla_task_t *f = on(rt, failing, d, GPU1);
    parla_task_t *after = on(rt, gpu_dep, NULL, GPU0);
    CHECK_OK(parla_task_add_access(f, d, PARLA_READWRITE));
    CHECK_OK(parla_task_add_dependency(after, f));
    CHECK_OK(parla_task_submit(f));
    CHECK_OK(parla_task_submit(after));
    CHECK_RC(parla_task_wait(f), PARLA_EFAILED);
    CHECK(atomic_load(&failed_kernel_done) == 1, "a failed task finished while its queued work was still running");
    CHECK_RC(parla_task_wait(after), PARLA_ECANCELLED);
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_task_release(f);
    parla_task_release(after);
    parla_data_release(d);
}

/* A task on (cpu, gpu(0)) whose GPU work sets a flag late; its dependent must
 * see it set (the task does not run ahead: its first device is the CPU). */
static _Atomic int mixed_flag;

static int mixed_task(parla_task_t *t, void *arg)
{
    (void)arg;
    CHECK(parla_task_stream(t, 0) == NULL, "a stream on the CPU");
    CHECK(try_launch(t, 1, (kernel_t){.body = late, .ms = 30, .flag = &mixed_flag}) == 0,
          "no stream on the task's GPU, or the kernel launch failed");
    return 0;
}

static _Atomic int mixed_seen = -1;

static int mixed_dependent(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    atomic_store(&mixed_seen, atomic_load(&mixed_flag));
    return 0;
}

static void test_mixed(parla_runtime_t *rt)
{
    check_set_phase("cpu + gpu task");
    parla_task_t *m, *d;
    CHECK_OK(parla_task_create(rt, mixed_task, NULL, &m));
    int slots[2] = {CPU, GPU0};
    CHECK_OK(parla_task_add_placement(m, slots, 2, 0.0, 0));
    d = on(rt, mixed_dependent, NULL, GPU1);
    CHECK_OK(parla_task_add_dependency(d, m));
    CHECK_OK(parla_task_submit(m));
    CHECK_OK(parla_task_submit(d));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&mixed_seen) == 1, "the dependent of a (cpu, gpu) task ran before its GPU work completed (%d)",
          atomic_load(&mixed_seen));
    parla_task_release(m);
    parla_task_release(d);
}

/* ------------------------------------------ 5b. a cancelled link ------ */

/* A task released at its predecessor's runahead and then cancelled (it reads
 * what a failed task wrote) still stands between that predecessor's queued
 * work and what comes after it. Here: `reader` (gpu(0)) reads x in a slow
 * kernel; `cancelled` writes x after it (write-after-read) but is cancelled;
 * `writer` (cpu) writes x after `cancelled` (write-after-write), and `user`
 * (gpu(0)) reads x, which copies the new x over gpu(0)'s copy. The slow kernel
 * must still see the old x: nothing after `cancelled` may start before the
 * work `cancelled` was ordered after has completed. */
typedef struct {
    parla_data_t *x, *y;
} link_args_t;

static void copy_first(kernel_t *k)
{
    struct timespec ts = {k->ms / 1000, (k->ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
    k->dst[0] = k->a[0];
}

static int link_reader(parla_task_t *t, void *arg)
{
    link_args_t *a = arg;
    launch(t, (kernel_t){.body = copy_first, .ms = 60, .dst = parla_data_device_ptr(a->y, GPU0),
                         .a = parla_data_device_ptr(a->x, GPU0)});
    return 0;
}

static int link_fails(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 5;
}

static int link_never(parla_task_t *t, void *arg)
{
    (void)arg;
    CHECK(0, "task %s ran, though it reads what a failed task wrote", parla_task_name(t));
    return 0;
}

static int link_writer(parla_task_t *t, void *arg)
{
    link_args_t *a = arg;
    uint32_t *x = parla_data_device_ptr(a->x, CPU);
    x[0] = 999;
    return 0;
}

static int link_user(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 0;
}

static void test_cancelled_link(parla_runtime_t *rt)
{
    check_set_phase("cancelled task between a runahead task and a later writer");
    static uint32_t xs[16], ys[16], zs[16];
    for (int i = 0; i < 16; i++)
        xs[i] = 7, ys[i] = 0, zs[i] = 1;
    link_args_t a;
    parla_data_t *z;
    CHECK_OK(parla_data_create(rt, sizeof xs, xs, &a.x));
    CHECK_OK(parla_data_create(rt, sizeof ys, ys, &a.y));
    CHECK_OK(parla_data_create(rt, sizeof zs, zs, &z));
    /* gpu(0) gets its copy of x first (the reader below reads it there). */
    parla_task_t *f = on(rt, link_fails, NULL, CPU);
    CHECK_OK(parla_task_add_access(f, z, PARLA_WRITE));
    CHECK_OK(parla_task_submit(f));
    CHECK_RC(parla_task_wait(f), PARLA_EFAILED);
    parla_task_t *r = on(rt, link_reader, &a, GPU0);
    CHECK_OK(parla_task_add_access(r, a.x, PARLA_READ));
    CHECK_OK(parla_task_add_access(r, a.y, PARLA_WRITE));
    parla_task_t *c = on(rt, link_never, NULL, GPU0);
    CHECK_OK(parla_task_add_access(c, z, PARLA_READ));
    CHECK_OK(parla_task_add_access(c, a.x, PARLA_WRITE));
    parla_task_t *w = on(rt, link_writer, &a, CPU);
    CHECK_OK(parla_task_add_access(w, a.x, PARLA_WRITE));
    parla_task_t *u = on(rt, link_user, NULL, GPU0);
    CHECK_OK(parla_task_add_access(u, a.x, PARLA_READ));
    CHECK_OK(parla_task_submit(r));
    CHECK_OK(parla_task_submit(c));
    CHECK_OK(parla_task_submit(w));
    CHECK_OK(parla_task_submit(u));
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 30.0));
    CHECK(parla_task_state(r) == PARLA_TASK_DONE && parla_task_state(c) == PARLA_TASK_CANCELLED &&
              parla_task_state(w) == PARLA_TASK_DONE && parla_task_state(u) == PARLA_TASK_DONE,
          "states: reader %s, cancelled %s, writer %s, user %s", parla_task_state_name(parla_task_state(r)),
          parla_task_state_name(parla_task_state(c)), parla_task_state_name(parla_task_state(w)),
          parla_task_state_name(parla_task_state(u)));
    CHECK_OK(parla_data_fetch(a.y, CPU, 0));
    CHECK(ys[0] == 7, "the slow reader saw x = %u, written by a task ordered after it (expected 7)", ys[0]);
    parla_task_t *all[] = {f, r, c, w, u};
    for (int i = 0; i < 5; i++)
        parla_task_release(all[i]);
    parla_data_release(a.x);
    parla_data_release(a.y);
    parla_data_release(z);
}

/* -------------------------------------------------- 6b. device error ----- */

typedef int (*fail_fn)(void *stream);
static fail_fn fail_stream;
static _Atomic int faulted_work_ran;

/* Queued after the fault: a failed stream does not run it (so it owns no memory). */
static void never(void *arg)
{
    (void)arg;
    atomic_store(&faulted_work_ran, 1);
}

static int faulting(parla_task_t *t, void *arg)
{
    (void)arg;
    void *stream = parla_task_stream(t, 0);
    CHECK(fail_stream(stream) == 0, "fakecuda_fail failed");
    CHECK(launch_host(stream, never, NULL) == 0, "the kernel launch failed");
    return 0;
}

/* A runtime of its own, for a test that leaves a stream failed (sticky). */
static parla_runtime_t *fresh_runtime(void)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    return rt;
}

static void test_device_error(void)
{
    check_set_phase("device error");
    parla_runtime_t *rt = fresh_runtime();
    parla_task_t *a = on(rt, faulting, NULL, GPU0);
    parla_task_t *c = on(rt, cpu_dep, NULL, CPU);
    CHECK_OK(parla_task_add_dependency(c, a));
    CHECK_OK(parla_task_submit(a));
    CHECK_OK(parla_task_submit(c));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(a) == PARLA_TASK_FAILED && parla_task_error(a) == PARLA_EDEVICE,
          "a task whose GPU work faulted is %s (error %d)", parla_task_state_name(parla_task_state(a)),
          parla_task_error(a));
    CHECK(parla_task_state(c) == PARLA_TASK_CANCELLED, "its CPU dependent is %s",
          parla_task_state_name(parla_task_state(c)));
    CHECK(atomic_load(&faulted_work_ran) == 0, "work queued after the fault ran");
    parla_task_release(a);
    parla_task_release(c);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* A copy onto a GPU fails on the device: the task that needed it fails
 * without running, its dependent is cancelled, and the data keeps its last
 * good copy (the CPU's), even though the task declared it inout. */
typedef void (*fail_copy_fn)(void);
static fail_copy_fn fail_next_copy;
static _Atomic int copy_task_ran;

static int needs_copy(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    atomic_store(&copy_task_ran, 1);
    return 0;
}

static void test_copy_error(void)
{
    check_set_phase("copy error");
    parla_runtime_t *rt = fresh_runtime();
    uint32_t host[256];
    for (int i = 0; i < 256; i++)
        host[i] = (uint32_t)i * 3u;
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, sizeof host, host, &d));
    fail_next_copy();
    parla_task_t *a = on(rt, needs_copy, NULL, GPU0);
    CHECK_OK(parla_task_add_access(a, d, PARLA_READWRITE));
    parla_task_t *c = on(rt, cpu_dep, NULL, CPU);
    CHECK_OK(parla_task_add_dependency(c, a));
    CHECK_OK(parla_task_submit(a));
    CHECK_OK(parla_task_submit(c));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(a) == PARLA_TASK_FAILED && parla_task_error(a) == PARLA_EDEVICE,
          "a task whose copy failed is %s (error %d)", parla_task_state_name(parla_task_state(a)),
          parla_task_error(a));
    CHECK(atomic_load(&copy_task_ran) == 0, "the body ran without its data");
    CHECK(parla_task_state(c) == PARLA_TASK_CANCELLED, "its dependent is %s",
          parla_task_state_name(parla_task_state(c)));
    CHECK(parla_data_valid_bytes(d, CPU) == sizeof host, "the CPU copy is no longer valid");
    CHECK_OK(parla_data_fetch(d, CPU, 0));
    for (int i = 0; i < 256; i++)
        CHECK(host[i] == (uint32_t)i * 3u, "host[%d] = %u: the data was lost", i, host[i]);
    parla_task_release(a);
    parla_task_release(c);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* ---------------------------------------------------- 7. fault sweep ----- */

static _Atomic int sweep_flag, sweep_early;

static int sweep_gpu(parla_task_t *t, void *arg)
{
    (void)arg;
    /* Under fault injection the launch may fail: then the task fails cleanly. */
    return try_launch(t, 0, (kernel_t){.body = late, .ms = 5, .flag = &sweep_flag}) ? 5 : 0;
}

static int sweep_cpu(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    if (!atomic_load(&sweep_flag))
        atomic_fetch_add(&sweep_early, 1);
    return 0;
}

static void fault_sweep(live_fn live, int max_k)
{
    check_set_phase("fault sweep");
    for (int k = 1; k <= max_k; k++) {
        atomic_store(&sweep_flag, 0);
        atomic_store(&sweep_early, 0);
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = 2;
        cfg.fail_alloc_at = (uint64_t)k;
        parla_runtime_t *rt;
        if (parla_runtime_create(&cfg, &rt) != 0)
            continue; /* a clean error, checked by test_fault */
        parla_data_t *d = NULL;
        parla_task_t *t[3] = {NULL, NULL, NULL};
        int slots[3] = {GPU0, GPU1, CPU};
        parla_task_fn fns[3] = {sweep_gpu, sweep_gpu, sweep_cpu};
        int modes[3] = {PARLA_READWRITE, PARLA_READ, PARLA_READWRITE};
        if (parla_data_create(rt, 4096, NULL, &d) == 0) {
            for (int i = 0; i < 3; i++) {
                if (parla_task_create(rt, fns[i], NULL, &t[i]) != 0)
                    break;
                bool ok = (slots[i] == CPU || parla_task_add_placement(t[i], &slots[i], 1, 0.0, 0) == 0) &&
                          parla_task_add_access(t[i], d, modes[i]) == 0;
                /* A task whose setup failed is cancelled (its dependents with it);
                 * submitting may fail cleanly too. */
                if (!ok || parla_task_submit(t[i]) != 0)
                    parla_task_cancel(t[i]);
            }
        }
        int rc = parla_runtime_wait_all_timeout(rt, 20.0);
        CHECK(rc == 0, "fail_alloc_at=%d: wait_all returned %d (%s): %s", k, rc, parla_strerror(rc),
              parla_last_error_message());
        CHECK(atomic_load(&sweep_early) == 0, "fail_alloc_at=%d: the CPU dependent ran before the GPU work", k);
        for (int i = 0; i < 3; i++)
            if (t[i])
                parla_task_release(t[i]);
        if (d)
            parla_data_release(d);
        CHECK_OK(parla_runtime_destroy(rt));
        long allocs, streams, events, contexts;
        live(&allocs, &streams, &events, &contexts);
        CHECK(allocs == 0 && streams == 0 && events == 0 && contexts == 0,
              "fail_alloc_at=%d: left on the driver: %ld allocations, %ld streams, %ld events, %ld contexts", k,
              allocs, streams, events, contexts);
    }
}

/* ------------------------------------------ 8. the caller's context ---- */

typedef int (*ctx_get_fn)(void **);
typedef int (*ctx_set_fn)(void *);
typedef int (*ctx_retain_fn)(void **, int);
typedef int (*ctx_release_fn)(int);

/* The engine's driver calls on the calling thread (creation, fetches,
 * destroy) leave that thread's current context as it was: none, or the one
 * the program set (CuPy's, say). */
static void test_caller_context(void *lib)
{
    check_set_phase("the calling thread's CUDA context");
    ctx_get_fn get;
    ctx_set_fn set;
    ctx_retain_fn retain;
    ctx_release_fn release;
    *(void **)&get = dlsym(lib, "cuCtxGetCurrent");
    *(void **)&set = dlsym(lib, "cuCtxSetCurrent");
    *(void **)&retain = dlsym(lib, "cuDevicePrimaryCtxRetain");
    *(void **)&release = dlsym(lib, "cuDevicePrimaryCtxRelease_v2");
    CHECK(get && set && retain && release, "the fake driver lacks its context entry points");
    void *mine = NULL;
    CHECK(retain(&mine, 0) == 0, "cuDevicePrimaryCtxRetain failed");
    void *before[2] = {NULL, mine};
    for (int k = 0; k < 2; k++) {
        CHECK(set(before[k]) == 0, "cuCtxSetCurrent failed");
        parla_runtime_t *r = fresh_runtime();
        static uint32_t buf[64];
        parla_data_t *d;
        CHECK_OK(parla_data_create(r, sizeof buf, buf, &d));
        CHECK_OK(parla_data_fetch(d, GPU1, 0)); /* copies on the main thread, in gpu(1)'s context */
        CHECK_OK(parla_data_fetch(d, CPU, 1));
        parla_data_release(d);
        CHECK_OK(parla_runtime_destroy(r));
        void *now = (void *)&now;
        CHECK(get(&now) == 0 && now == before[k], "the main thread's context is %p after the runtime, was %p", now,
              before[k]);
    }
    CHECK(set(NULL) == 0, "cuCtxSetCurrent failed");
    CHECK(release(0) == 0, "cuDevicePrimaryCtxRelease failed");
}

int main(void)
{
    check_watchdog(170);
    const char *path = getenv("PARLA_CUDA_DRIVER");
    CHECK(path && *path, "PARLA_CUDA_DRIVER must name the fake driver (meson sets it)");
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL, "cannot load %s: %s", path, dlerror());
    *(void **)&launch_host = dlsym(lib, "fakecuda_kernel"); /* a kernel launch (delayed as device work) */
    live_fn live;
    *(void **)&live = dlsym(lib, "fakecuda_live");
    *(void **)&fail_stream = dlsym(lib, "fakecuda_fail");
    *(void **)&fail_next_copy = dlsym(lib, "fakecuda_fail_next_copy");
    CHECK(launch_host && live && fail_stream && fail_next_copy, "the fake driver lacks its test entry points");

    check_set_phase("discovery");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_devices(rt) == 3, "%d devices, expected cpu + 2 fake GPUs", parla_runtime_num_devices(rt));
    for (int i = 1; i < 3; i++) {
        parla_device_info_t info;
        CHECK_OK(parla_device_info(rt, i, &info));
        CHECK(info.is_cuda && !info.is_virtual && info.cuda_ordinal == i - 1, "device %d is not CUDA GPU %d", i, i - 1);
        CHECK(info.memory_capacity == 64u << 20, "capacity %llu", (unsigned long long)info.memory_capacity);
    }

    test_runahead(rt);
    test_chain(rt);
    int programs = (int)scaled(40, 6);
    for (int p = 0; p < programs; p++) {
        check_set_phase("random programs");
        test_random(rt, 0x9E3779B97F4A7C15ull + (uint64_t)p * 7919, (int)scaled(150, 40));
    }
    test_failure(rt);
    test_mixed(rt);
    test_cancelled_link(rt);

    parla_device_info_t info;
    CHECK_OK(parla_device_info(rt, GPU0, &info));
    CHECK(info.bytes_in > 0 && info.bytes_out > 0, "no copies went through gpu(0): in %llu out %llu",
          (unsigned long long)info.bytes_in, (unsigned long long)info.bytes_out);
    check_set_phase("destroy");
    CHECK_OK(parla_runtime_destroy(rt));
    long allocs, streams, events, contexts;
    live(&allocs, &streams, &events, &contexts);
    CHECK(allocs == 0 && streams == 0 && events == 0 && contexts == 0,
          "left on the driver: %ld allocations, %ld streams, %ld events, %ld contexts", allocs, streams, events,
          contexts);
    test_device_error();
    test_copy_error();
    int sweep = 80; /* the program makes about 50 allocations */
    fault_sweep(live, sweep);
    test_caller_context(lib);
    printf("fake CUDA: runahead, chain, %d random programs, failure, cpu + gpu task, device error, copy error, fault sweep 1..%d: ok\n",
           programs, sweep);
    return 0;
}
