/*
 * test_cuda_path.c: the CUDA data path on the driver double (tests/c/fakecuda.c, loaded through
 * PARLA_CUDA_DRIVER), with its counters and timeline. Meson runs it twice: with 3 GPUs of which
 * ordinals 0 and 1 are peers and the driver's memory pools (FAKECUDA_PEER=2), and with no peers and
 * no driver pools (FAKECUDA_PEER=0 FAKECUDA_NO_POOLS=1: the runtime's own caching allocator over
 * cuMemAlloc, GPU-to-GPU copies through the host).
 *
 * 1. The pool API (parla_device_alloc / free): memory counted in the device's account, a freed block
 *    reused without a driver allocation, errors; under pressure the cached blocks are released so a
 *    bigger allocation fits, and what the pool holds never exceeds the capacity.
 * 2. The copy path in steady state: per iteration, GPU tasks update data objects that CPU tasks then
 *    update (a copy onto the GPU and one back each), and a GPU task writes a temporary data object
 *    made and released that iteration. After a warm-up: no driver allocation, no synchronising call,
 *    no host wait per task; the host-device copies are of pinned memory, each buffer registered
 *    once and unregistered when its data object goes; the copy engines learnt of completions from
 *    callbacks (never fell back to polling); in the double's timeline copies ran while kernels ran
 *    on other streams. The values are right. The figures are printed.
 * 3. The same with pinning off (pageable copies block the engine: host waits) and with the pool off
 *    (a driver allocation and free per temporary), printed for comparison, values right.
 * 4. Peer copies: peer access enabled between the GPUs that allow it; a GPU-to-GPU copy goes over
 *    the peer link (cuMemcpyPeerAsync) where there is one, else through the host; the mapping sends a
 *    task whose data is on gpu(0) to its peer gpu(1) rather than to gpu(2) (a lower transfer cost).
 * 5. Nothing leaks: device memory, pinned ranges, the double's pool memory after the runtimes.
 * 6. The device's account never counts less than the driver holds for it: checked at every
 *    synchronous copy, among them a merge of two pieces of a data object on the GPU (the old pieces
 *    and the new one are all allocated while it copies). An allocation that fails then is a full
 *    device (PARLA_ERESOURCE), never memory the account has let go of before the driver has.
 */
#include "check.h"
#include "device/device.h"
#include "fakecuda.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>

enum { CPU = 0 };

static fakecuda_counters_fn counters;
static fakecuda_live_host_fn live_host;
static fakecuda_kernel_fn kernel;
static fakecuda_timeline_reset_fn timeline_reset;
static fakecuda_overlap_fn overlap;
static void (*live)(long *, long *, long *, long *);
static fakecuda_device_bytes_fn device_bytes;
static fakecuda_on_copy_fn on_copy;
static int peer_mode; /* FAKECUDA_PEER: 0 none, 2 ordinals 0 and 1 */
static bool driver_pools;

static parla_runtime_t *start(int pin, int pool)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 3;
    cfg.disable_host_pinning = !pin;
    cfg.disable_memory_pool = !pool;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_devices(rt) == 4, "%d devices, expected cpu + 3 fake GPUs", parla_runtime_num_devices(rt));
    return rt;
}

static parla__dev_t *dev(parla_runtime_t *rt, int i)
{
    return &parla__dev_devs(rt)->devices[i];
}

/* ------------------------------------------------------------ 1. pool ---- */

static void test_pool_api(parla_runtime_t *rt)
{
    check_set_phase("pool api");
    parla_device_info_t info;
    CHECK_OK(parla_device_info(rt, 1, &info));
    uint64_t cap = info.memory_capacity;
    fakecuda_counters_t c;
    counters(&c, 1);
    void *p = NULL, *q = NULL;
    CHECK_OK(parla_device_alloc(rt, 1, 1 << 20, &p));
    CHECK(p != NULL, "no pointer");
    CHECK_OK(parla_device_info(rt, 1, &info));
    CHECK(info.memory_resident == 1 << 20, "resident %llu after allocating 1 MiB",
          (unsigned long long)info.memory_resident);
    memset(p, 7, 1 << 20); /* the double's device memory is host memory */
    parla_device_free(rt, 1, p, 1 << 20);
    CHECK_OK(parla_device_info(rt, 1, &info));
    CHECK(info.memory_resident == 0, "resident %llu after the free", (unsigned long long)info.memory_resident);
    counters(&c, 1);
    CHECK(c.allocs == 1, "%ld driver allocations for the first block", c.allocs);
    CHECK(c.pool_allocs == (driver_pools ? 1 : 0), "%ld from the driver's pool", c.pool_allocs);
    CHECK_OK(parla_device_alloc(rt, 1, 1 << 20, &q)); /* the same size */
    CHECK(q == p, "the cached block was not reused");
    parla_device_free(rt, 1, q, 1 << 20);
    counters(&c, 1);
    CHECK(c.allocs == 0 && c.frees == 0 && c.syncs == 0, "reusing a cached block made %ld allocations, %ld frees, "
          "%ld synchronising calls", c.allocs, c.frees, c.syncs);

    CHECK_RC(parla_device_alloc(rt, 1, cap + 1, &p), PARLA_ERESOURCE);
    CHECK(p == NULL, "a failed allocation gave a pointer");
    CHECK_RC(parla_device_alloc(rt, 0, 64, &p), PARLA_EINVAL);
    CHECK_RC(parla_device_alloc(rt, 9, 64, &p), PARLA_ENODEV);
    CHECK_RC(parla_device_alloc(rt, 1, 0, &p), PARLA_EINVAL);

    /* Pressure: 40 MiB cached, then 52 MiB wanted of 64: the cache goes first (exactly what is asked is
     * held: sizes are not rounded). */
    uint64_t big = cap * 5 / 8, bigger = cap * 13 / 16;
    CHECK_OK(parla_device_alloc(rt, 2, big, &p));
    parla_device_free(rt, 2, p, big);
    uint64_t held, cached;
    parla__dev_pool_bytes(dev(rt, 2), &held, &cached);
    CHECK(cached == big && held == big, "held %llu, cached %llu after freeing %llu", (unsigned long long)held,
          (unsigned long long)cached, (unsigned long long)big);
    CHECK_OK(parla_device_alloc(rt, 2, bigger, &q));
    parla__dev_pool_bytes(dev(rt, 2), &held, &cached);
    CHECK(cached == 0 && held == bigger, "held %llu, cached %llu: the cache was not released "
          "under pressure", (unsigned long long)held, (unsigned long long)cached);
    CHECK(dev(rt, 2)->pool.trims >= 1, "no block released");
    parla_device_free(rt, 2, q, bigger);
    CHECK_OK(parla_device_info(rt, 2, &info));
    CHECK(info.memory_resident == 0, "resident %llu", (unsigned long long)info.memory_resident);
}

/* ------------------------------------------------------- 2. steady state -- */

enum { K = 4, N = 16384 }; /* data objects, uint32 elements each (64 KiB) */

typedef struct {
    uint32_t *p;
    size_t n;
    uint32_t add;
    long us; /* how long it runs */
} kern_t;

static void kern_add(void *arg)
{
    kern_t *k = arg;
    if (k->us) {
        struct timespec ts = {0, k->us * 1000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < k->n; i++)
        k->p[i] += k->add;
    free(k);
}

static void kern_set(void *arg)
{
    kern_t *k = arg;
    for (size_t i = 0; i < k->n; i++)
        k->p[i] = k->add;
    free(k);
}

/* kern_check: counts the elements that are not k->add. */
static _Atomic int peer_bad;

static void kern_check(void *arg)
{
    kern_t *k = arg;
    for (size_t i = 0; i < k->n; i++)
        if (k->p[i] != k->add)
            atomic_fetch_add(&peer_bad, 1);
    free(k);
}

typedef struct {
    parla_data_t *data;
    uint32_t add;
    int set; /* 1: write the value (kern_set), 2: check it (kern_check), 0: add it in 1 ms (kern_add) */
} job_t;

static int gpu_body(parla_task_t *t, void *arg)
{
    job_t *j = arg;
    int d;
    parla_task_devices(t, &d, 1);
    kern_t *k = malloc(sizeof *k);
    CHECK(k != NULL, "malloc");
    *k = (kern_t){parla_data_device_ptr(j->data, d), N, j->add, j->set ? 0 : 1000};
    void (*fn)(void *) = j->set == 1 ? kern_set : j->set == 2 ? kern_check : kern_add;
    CHECK(kernel(parla_task_stream(t, 0), fn, k) == 0, "kernel launch failed");
    return 0;
}

static int cpu_body(parla_task_t *t, void *arg)
{
    job_t *j = arg;
    uint32_t *p = parla_data_device_ptr(j->data, CPU);
    for (size_t i = 0; i < N; i++)
        p[i] += j->add;
    return 0;
}

static void submit(parla_runtime_t *rt, parla_task_fn fn, job_t *j, int device, parla_access_mode_t mode)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, j, &t));
    if (device != CPU)
        CHECK_OK(parla_task_add_placement(t, &device, 1, 0.0, 0));
    CHECK_OK(parla_task_add_access(t, j->data, mode));
    CHECK_OK(parla_task_submit(t));
    parla_task_release(t);
}

/* Waits (up to 10 s) until the runtime has `left` host buffers pinned: the last reference to a data
 * object may be dropped by a worker just after wait_all returns. */
static void wait_unpinned(parla_runtime_t *rt, long left)
{
    double until = now_s() + 10;
    while (atomic_load(&parla__dev_devs(rt)->shared.n_pinned) != left && now_s() < until) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Waits (up to 10 s) until the GPUs hold `bytes` of data copies in all (a released temporary's copy
 * is freed when its task's last reference goes, maybe just after wait_all returns). */
static void wait_resident(parla_runtime_t *rt, uint64_t bytes)
{
    double until = now_s() + 10;
    for (;;) {
        uint64_t r = 0;
        for (int i = 1; i < 4; i++) {
            parla_device_info_t info;
            CHECK_OK(parla_device_info(rt, i, &info));
            r += info.memory_resident;
        }
        if (r == bytes || now_s() > until)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

typedef struct {
    long tasks;
    fakecuda_counters_t c;
    double both, copies, kernels;
    uint64_t woken, timed_out;
} figures_t;

/* Runs `warm` then `iters` iterations over K data objects; returns the figures of the last iters. */
static figures_t copy_path(parla_runtime_t *rt, int warm, int iters)
{
    uint32_t *host[K];
    parla_data_t *data[K];
    for (int k = 0; k < K; k++) {
        host[k] = calloc(N, sizeof(uint32_t));
        CHECK(host[k] != NULL, "calloc");
        CHECK_OK(parla_data_create(rt, N * sizeof(uint32_t), host[k], &data[k]));
    }
    job_t *jobs = calloc((size_t)(warm + iters) * (2 * K + 1), sizeof *jobs);
    CHECK(jobs != NULL, "calloc");
    figures_t f = {0};
    fakecuda_counters_t before;
    long n = 0;
    for (int it = 0; it < warm + iters; it++) {
        if (it == warm) {
            CHECK_OK(parla_runtime_wait_all(rt));
            counters(&before, 1);
            timeline_reset();
        }
        for (int k = 0; k < K; k++) {
            jobs[n] = (job_t){data[k], 1, 0};
            submit(rt, gpu_body, &jobs[n++], 1 + k % 2, PARLA_READWRITE);
            jobs[n] = (job_t){data[k], 2, 0};
            submit(rt, cpu_body, &jobs[n++], CPU, PARLA_READWRITE);
        }
        parla_data_t *tmp;
        CHECK_OK(parla_data_create(rt, N * sizeof(uint32_t), NULL, &tmp));
        jobs[n] = (job_t){tmp, (uint32_t)it, 1};
        submit(rt, gpu_body, &jobs[n++], 1 + it % 2, PARLA_WRITE);
        parla_data_release(tmp); /* the task keeps it until it is done */
        if (it >= warm)
            f.tasks += 2 * K + 1;
        /* An iteration at a time: its temporary is gone before the next one's (steady state). */
        CHECK_OK(parla_runtime_wait_all(rt));
        wait_resident(rt, (uint64_t)K * N * sizeof(uint32_t));
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    counters(&f.c, 1);
    overlap(&f.both, &f.copies, &f.kernels);
    f.woken = atomic_load(&parla__dev_devs(rt)->shared.woken);
    f.timed_out = atomic_load(&parla__dev_devs(rt)->shared.timed_out);
    for (int k = 0; k < K; k++) {
        CHECK_OK(parla_data_fetch(data[k], CPU, 0));
        for (size_t i = 0; i < N; i++)
            CHECK(host[k][i] == (uint32_t)(3 * (warm + iters)), "object %d element %zu is %u, expected %u", k, i,
                  host[k][i], (unsigned)(3 * (warm + iters)));
        parla_data_release(data[k]);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    wait_unpinned(rt, 0);
    CHECK(atomic_load(&parla__dev_devs(rt)->shared.n_pinned) == 0, "%ld host buffers still pinned after their data "
          "objects were released", (long)atomic_load(&parla__dev_devs(rt)->shared.n_pinned));
    for (int k = 0; k < K; k++)
        free(host[k]);
    free(jobs);
    return f;
}

static void print_figures(const char *what, const figures_t *f)
{
    double t = (double)f->tasks;
    printf("%s: %ld tasks; per task: driver allocations %.3f, synchronising calls %.3f, host waits %.3f; "
           "copies: %ld pinned, %ld pageable, %ld peer (%ld direct); host functions %ld; copy engine waits "
           "ended by a callback %llu, by the safety timeout %llu; timeline: copies %.4f s, kernels %.4f s, "
           "a copy and a kernel at once %.4f s\n",
           what, f->tasks, (double)f->c.allocs / t, (double)f->c.syncs / t, (double)f->c.host_waits / t,
           f->c.pinned_copies, f->c.pageable_copies, f->c.peer_copies, f->c.peer_direct, f->c.host_funcs,
           (unsigned long long)f->woken, (unsigned long long)f->timed_out, f->copies, f->kernels, f->both);
    fflush(stdout);
}

static void test_steady_state(void)
{
    check_set_phase("steady state");
    int iters = (int)scaled(30, 8);
    parla_runtime_t *rt = start(1, 1);
    test_pool_api(rt);
    check_set_phase("steady state");
    fakecuda_counters_t c;
    counters(&c, 1);
    figures_t f = copy_path(rt, 3, iters);
    print_figures("pinned, pooled", &f);
    CHECK(f.c.allocs == 0, "%ld driver allocations in steady state", f.c.allocs);
    CHECK(f.c.frees == 0, "%ld driver frees in steady state", f.c.frees);
    CHECK(f.c.syncs == 0, "%ld synchronising calls in steady state", f.c.syncs);
    CHECK(f.c.host_waits == 0, "%ld host waits in steady state", f.c.host_waits);
    CHECK(f.c.registers == 0, "%ld host buffers registered again in steady state", f.c.registers);
    CHECK(f.c.pageable_copies == 0 && f.c.pinned_copies >= 2L * K * iters,
          "%ld pinned and %ld pageable copies for %d round trips", f.c.pinned_copies, f.c.pageable_copies, K * iters);
    CHECK(!atomic_load(&parla__dev_devs(rt)->shared.polling), "the copy engines fell back to polling");
    CHECK(f.woken > 0, "no copy engine was woken by a completion callback");
    CHECK(f.both > 0, "no copy ran while a kernel ran on another stream (copies %.4f s, kernels %.4f s)", f.copies,
          f.kernels);
    CHECK(f.c.host_funcs > 0, "no completion callback was launched");
    CHECK_OK(parla_runtime_destroy(rt));
    long pinned, pool_bytes;
    live_host(&pinned, &pool_bytes);
    CHECK(pinned == 0, "%ld host ranges pinned after the runtime", pinned);
    CHECK(pool_bytes == 0, "%ld bytes kept in the driver's pools after the runtime", pool_bytes);
    counters(&c, 0);

    check_set_phase("pinning off");
    rt = start(0, 1);
    f = copy_path(rt, 2, iters);
    print_figures("pageable, pooled", &f);
    CHECK(f.c.registers == 0 && f.c.pinned_copies == 0, "%ld buffers registered with pinning off", f.c.registers);
    CHECK(f.c.pageable_copies >= 2L * K * iters && f.c.host_waits >= f.c.pageable_copies,
          "%ld pageable copies, %ld host waits: a pageable copy must block", f.c.pageable_copies, f.c.host_waits);
    CHECK(f.c.allocs == 0, "%ld driver allocations in steady state with the pool on", f.c.allocs);
    CHECK_OK(parla_runtime_destroy(rt));

    check_set_phase("pool off");
    rt = start(1, 0);
    f = copy_path(rt, 2, iters);
    print_figures("pinned, not pooled", &f);
    CHECK(f.c.allocs >= iters && f.c.frees >= iters, "%ld driver allocations and %ld frees for %d temporaries with "
          "the pool off", f.c.allocs, f.c.frees, iters);
    CHECK(f.c.pool_allocs == 0, "the driver's pool was used with the pool off");
    CHECK_OK(parla_runtime_destroy(rt));
}

/* -------------------------------------------------------------- 4. peers -- */

static void test_peers(void)
{
    check_set_phase("peers");
    parla_runtime_t *rt = start(1, 1);
    uint64_t b2 = 1u << 2, b1 = 1u << 1;
    if (peer_mode == 2) {
        CHECK(dev(rt, 1)->peers == b2 && dev(rt, 2)->peers == b1 && dev(rt, 3)->peers == 0,
              "peers %llx %llx %llx, expected gpu(0) <-> gpu(1) only", (unsigned long long)dev(rt, 1)->peers,
              (unsigned long long)dev(rt, 2)->peers, (unsigned long long)dev(rt, 3)->peers);
    } else {
        for (int i = 1; i < 4; i++)
            CHECK(dev(rt, i)->peers == 0, "gpu(%d) has peers without peer access", i - 1);
    }
    parla_data_t *x;
    CHECK_OK(parla_data_create(rt, N * sizeof(uint32_t), NULL, &x));
    job_t w = {x, 77, 1}, r1 = {x, 77, 2}, r2 = {x, 77, 2};
    submit(rt, gpu_body, &w, 1, PARLA_WRITE);
    CHECK_OK(parla_runtime_wait_all(rt));
    fakecuda_counters_t c;
    counters(&c, 1);

    /* Either gpu(1) or gpu(2) may read it: with a peer link only to gpu(1), that one costs less. */
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, gpu_body, &r1, &t));
    int d2 = 2, d3 = 3;
    CHECK_OK(parla_task_add_placement(t, &d3, 1, 0.0, 0));
    CHECK_OK(parla_task_add_placement(t, &d2, 1, 0.0, 0));
    CHECK_OK(parla_task_add_access(t, x, PARLA_READ));
    CHECK_OK(parla_task_submit(t));
    CHECK_OK(parla_runtime_wait_all(rt));
    int where = -1;
    CHECK(parla_task_devices(t, &where, 1) == 1, "not mapped");
    parla_mapping_t m;
    CHECK_OK(parla_task_mapping(t, &m));
    printf("peers mode %d: a reader of gpu(0)'s data went to device %d (transfer %.3f)\n", peer_mode, where,
           m.transfer);
    if (peer_mode == 2) {
        CHECK(where == 2, "mapped to device %d, not to gpu(0)'s peer gpu(1) (device 2)", where);
        CHECK(m.transfer > 0 && m.transfer < 1.0, "transfer cost %g over a direct link", m.transfer);
    }
    parla_task_release(t);
    counters(&c, 1);
    if (where == 2 && peer_mode == 2)
        CHECK(c.peer_copies == 1 && c.peer_direct == 1 && c.pinned_copies == 0,
              "%ld peer copies (%ld direct), %ld through the host: expected one direct", c.peer_copies,
              c.peer_direct, c.pinned_copies);
    else
        CHECK(c.peer_copies == 0 && c.pinned_copies == 2, "%ld peer copies, %ld host copies: expected one copy "
              "through the host (two legs)", c.peer_copies, c.pinned_copies);

    /* The other of gpu(1) and gpu(2) has no link to the GPUs holding it now: through the host. */
    submit(rt, gpu_body, &r2, 5 - where, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all(rt));
    counters(&c, 1);
    CHECK(c.peer_copies == 0 && c.pinned_copies == 2 && c.pageable_copies == 0,
          "%ld peer copies, %ld pinned and %ld pageable host copies: expected a copy through the pinned staging "
          "buffer", c.peer_copies, c.pinned_copies, c.pageable_copies);
    CHECK(atomic_load(&peer_bad) == 0, "%d elements wrong after the GPU-to-GPU copies", atomic_load(&peer_bad));
    parla_data_release(x);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* ---------------------------------------------------------- 6. account -- */

static _Atomic long account_checks, account_short; /* checks made; the most bytes the account was short */

/* At a synchronous copy: what the driver holds on gpu(0), less what its pool and the runtime's keep
 * free, is within the device's account (its data copies, the room claimed for them, the memory tasks
 * reserve). Only gpu(0) is used while it is installed (the other devices' pools are empty). */
static void account_covers(void *arg)
{
    parla__dev_t *d = dev(arg, 1);
    long n_pinned, driver_pool;
    uint64_t held, cached;
    live_host(&n_pinned, &driver_pool);
    parla__dev_pool_bytes(d, &held, &cached);
    long in_use = device_bytes(0) - driver_pool - (long)cached;
    pthread_mutex_lock(&d->lock);
    long account = (long)(d->resident + d->claimed + (d->memory_capacity - d->memory_free));
    pthread_mutex_unlock(&d->lock);
    if (in_use - account > atomic_load(&account_short))
        atomic_store(&account_short, in_use - account);
    atomic_fetch_add(&account_checks, 1);
}

/* Checks on the GPU that the 1 KiB of a view read there are 7 each (kern_check). */
static int view_body(parla_task_t *t, void *arg)
{
    int d;
    parla_task_devices(t, &d, 1);
    kern_t *k = malloc(sizeof *k);
    CHECK(k != NULL, "malloc");
    *k = (kern_t){parla_data_device_ptr(arg, d), 1024 / sizeof(uint32_t), 7, 0};
    CHECK(kernel(parla_task_stream(t, 0), kern_check, k) == 0, "kernel launch failed");
    return 0;
}

static void test_account(void)
{
    check_set_phase("account");
    parla_runtime_t *rt = start(1, 1);
    enum { B = 4096 };
    uint32_t *host = malloc(B);
    CHECK(host != NULL, "malloc");
    for (size_t i = 0; i < B / sizeof *host; i++)
        host[i] = 7;
    parla_data_t *x, *v[2];
    CHECK_OK(parla_data_create(rt, B, host, &x));
    for (int k = 0; k < 2; k++) { /* [0, 1 KiB) and [1 KiB, 2 KiB): the second touches the first */
        uint64_t range[2] = {(uint64_t)k * 1024, (uint64_t)(k + 1) * 1024};
        CHECK_OK(parla_data_view(x, range, 1, &v[k]));
    }
    on_copy(account_covers, rt);
    for (int k = 0; k < 2; k++) {
        /* One at a time: the first copy is idle when the second's preparation merges their pieces. */
        parla_task_t *t;
        int gpu = 1;
        CHECK_OK(parla_task_create(rt, view_body, v[k], &t));
        CHECK_OK(parla_task_add_placement(t, &gpu, 1, 0.0, 0));
        CHECK_OK(parla_task_add_access(t, v[k], PARLA_READ));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
        CHECK_OK(parla_runtime_wait_all(rt));
    }
    on_copy(NULL, NULL);
    CHECK(atomic_load(&peer_bad) == 0, "%d words read wrong on the GPU", atomic_load(&peer_bad));
    CHECK(parla_data_resident_bytes(x, 1) == 2048, "%llu bytes of the data object on gpu(0), expected its two "
          "kibibytes in one piece", (unsigned long long)parla_data_resident_bytes(x, 1));
    CHECK(atomic_load(&account_checks) > 0, "no synchronous copy: the pieces were not merged on the GPU");
    CHECK(atomic_load(&account_short) == 0, "the account of gpu(0) counted %ld bytes less than the driver held",
          atomic_load(&account_short));
    for (int k = 0; k < 2; k++)
        parla_data_release(v[k]);
    parla_data_release(x);
    CHECK_OK(parla_runtime_destroy(rt));
    free(host);
}

int main(void)
{
    check_watchdog(170);
    const char *path = getenv("PARLA_CUDA_DRIVER");
    CHECK(path && *path, "PARLA_CUDA_DRIVER must name the fake driver (meson sets it)");
    const char *pm = getenv("FAKECUDA_PEER");
    peer_mode = pm && *pm ? atoi(pm) : 1;
    CHECK(peer_mode == 0 || peer_mode == 2, "run with FAKECUDA_PEER=0 or 2 (meson sets it)");
    const char *np = getenv("FAKECUDA_NO_POOLS");
    driver_pools = !(np && *np && atoi(np));
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL, "cannot load %s: %s", path, dlerror());
    *(void **)&counters = dlsym(lib, "fakecuda_counters");
    *(void **)&live_host = dlsym(lib, "fakecuda_live_host");
    *(void **)&kernel = dlsym(lib, "fakecuda_kernel");
    *(void **)&timeline_reset = dlsym(lib, "fakecuda_timeline_reset");
    *(void **)&overlap = dlsym(lib, "fakecuda_overlap");
    *(void **)&live = dlsym(lib, "fakecuda_live");
    *(void **)&device_bytes = dlsym(lib, "fakecuda_device_bytes");
    *(void **)&on_copy = dlsym(lib, "fakecuda_on_copy");
    CHECK(counters && live_host && kernel && timeline_reset && overlap && live && device_bytes && on_copy,
          "the fake driver lacks its test entry points");
    test_steady_state();
    test_peers();
    test_account();
    check_set_phase("leaks");
    long a, s, e, ctx, pinned, pool_bytes;
    live(&a, &s, &e, &ctx);
    live_host(&pinned, &pool_bytes);
    CHECK(a == 0 && s == 0 && e == 0 && ctx == 0, "left alive: %ld allocations, %ld streams, %ld events, %ld contexts",
          a, s, e, ctx);
    CHECK(pinned == 0 && pool_bytes == 0, "left: %ld pinned ranges, %ld bytes in the driver's pools", pinned,
          pool_bytes);
    printf("test_cuda_path: OK\n");
    return 0;
}
