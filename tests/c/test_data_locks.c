/*
 * test_data_locks.c: no engine lock is held across a device call, on the data paths that once held one,
 * under concurrency. Two virtual GPUs with room for three of ten objects each; their operations (and the
 * CPU's, which copies to the CPU) are replaced by a double whose alloc, free and copy sleep (so that
 * other threads run meanwhile) and count the calls made while the calling thread holds a data-layer
 * lock (parla__locks_held(), util/util.h): there must be none.
 *
 * 1. Many tasks read and read-write random pairs of objects on either GPU (evictions with write-back
 *    to make room for new copies, allocations), while two other threads fetch objects to random
 *    devices (copies made at once, allocations) and evict them (parla_data_evict, write-back). Every
 *    object ends with its write count in its first and last words (a sequential model: writers of one
 *    object are ordered), readers never see the two words differ, and the GPUs evicted.
 * 2. The out-of-memory fallbacks: with each of the first allocations failing in turn, a task reads
 *    data on a GPU (a copy that cannot be queued as a job is made at once by the preparing thread).
 *    Each run ends with the task done or failed with an error (never hung), and nothing is called
 *    under a lock.
 * 3. A task that writes an object on a GPU, spawned while a fetch (from another thread) copies it from
 *    there to the other GPU or the CPU, does not write before the copy has read it; spawned while the
 *    fetch allocates on the other GPU, the fetch's copy does not read it while the task writes it (the
 *    double holds the copy or the allocation, and sees whether the task's body runs meanwhile).
 */
#include "check.h"
#include "device/device.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

enum { N_OBJ = 10, OBJ = 16384, WORDS = OBJ / 8, N_GPUS = 2 };

/* ----------------------------------------------------------- the double -- */

static const parla__dev_ops_t *real_ops[1 + N_GPUS];
static parla__dev_ops_t slow_ops[1 + N_GPUS];
static _Atomic long calls_alloc, calls_free, calls_copy, under_lock;
static _Atomic int sleep_us = 50;

static void pause_us(void)
{
    int us = atomic_load(&sleep_us);
    if (us > 0) {
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
    }
}

static void check_no_lock(void)
{
    if (parla__locks_held() != 0)
        atomic_fetch_add(&under_lock, 1);
}

/* Part 3: copies from `watched` (an object's copy on GPU 1) count in overlapped when a task's body that
 * writes it is running (in_body); with hold_copy, the first one waits for such a body first, and with
 * hold_alloc (a device), the first allocation there does (about 0.3 s at most: hold_until). Each hold sets
 * held when it begins. */
static _Atomic(const void *) watched;
static _Atomic int hold_copy, hold_alloc, held, in_body, copying, overlapped;

static void hold_until(_Atomic int *flag)
{
    atomic_store(&held, 1);
    for (int k = 0; k < 300 && !atomic_load(flag); k++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
}

static int slow_alloc(parla__dev_t *d, uint64_t n, void **out)
{
    check_no_lock();
    atomic_fetch_add(&calls_alloc, 1);
    pause_us();
    int dev = d->index;
    if (dev != 0 && atomic_compare_exchange_strong(&hold_alloc, &dev, 0))
        hold_until(&in_body);
    return real_ops[d->index]->alloc(d, n, out);
}

static void slow_free(parla__dev_t *d, void *p)
{
    check_no_lock();
    atomic_fetch_add(&calls_free, 1);
    pause_us();
    real_ops[d->index]->free(d, p);
}

static int slow_copy(parla__dev_t *d, void *dst, parla__dev_t *s, const void *src, uint64_t n)
{
    check_no_lock();
    atomic_fetch_add(&calls_copy, 1);
    pause_us();
    if (src == NULL || src != atomic_load(&watched))
        return real_ops[d->index]->copy(d, dst, s, src, n);
    atomic_store(&copying, 1);
    if (atomic_exchange(&hold_copy, 0))
        hold_until(&in_body);
    if (atomic_load(&in_body))
        atomic_fetch_add(&overlapped, 1);
    return real_ops[d->index]->copy(d, dst, s, src, n);
}

static int slow_synchronize(parla__dev_t *d)
{
    check_no_lock();
    return real_ops[d->index]->synchronize(d);
}

/* n_workers workers, N_GPUS virtual GPUs with room for three objects each, fail_alloc_at as given. */
static int runtime_with(int n_workers, uint64_t fail_at, parla_runtime_t **rt)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = n_workers;
    cfg.n_virtual_gpus = N_GPUS;
    cfg.virtual_gpu_memory = 3 * OBJ;
    cfg.fail_alloc_at = fail_at;
    return parla_runtime_create(&cfg, rt);
}

/* A runtime whose devices' operations are the double's. */
static parla_runtime_t *runtime(void)
{
    parla_runtime_t *rt;
    CHECK_OK(runtime_with(4, 0, &rt));
    parla__dev_devs_t *devs = parla__dev_devs(rt);
    CHECK(devs->n_devices == 1 + N_GPUS, "%d devices", devs->n_devices);
    for (int i = 0; i < devs->n_devices; i++) {
        parla__dev_t *d = &devs->devices[i];
        CHECK(d->ops == &parla__dev_host_ops, "device %d: not host operations", i);
        real_ops[i] = d->ops;
        slow_ops[i] = *d->ops;
        slow_ops[i].alloc = slow_alloc;
        slow_ops[i].free = slow_free;
        slow_ops[i].copy = slow_copy;
        slow_ops[i].synchronize = slow_synchronize;
        d->ops = &slow_ops[i];
    }
    return rt;
}

/* ---------------------------------------------------- 1. many threads -- */

typedef struct job {
    parla_data_t *d[2];
    int mode[2];
    int device;
} job_t;

static _Atomic long torn;

static int body(parla_task_t *t, void *arg)
{
    (void)t;
    job_t *j = arg;
    for (int k = 0; k < 2; k++) {
        int64_t *w = parla_data_device_ptr(j->d[k], j->device);
        if (w == NULL) {
            atomic_fetch_add(&torn, 1);
            continue;
        }
        if (w[0] != w[WORDS - 1])
            atomic_fetch_add(&torn, 1);
        if (j->mode[k] == PARLA_READWRITE) {
            w[0]++;
            w[WORDS - 1]++;
        }
    }
    return 0;
}

typedef struct side {
    parla_data_t **d;
    _Atomic int *stop;
    unsigned seed;
    int evict; /* evicts (else fetches) */
    long done, busy;
} side_t;

static void *side_main(void *arg)
{
    side_t *s = arg;
    while (!atomic_load(s->stop)) {
        parla_data_t *d = s->d[rand_r(&s->seed) % N_OBJ];
        int rc;
        if (s->evict) {
            rc = parla_data_evict(d, 1 + (int)(rand_r(&s->seed) % N_GPUS), 1);
        } else {
            rc = parla_data_fetch(d, (int)(rand_r(&s->seed) % (1 + N_GPUS)), 0);
        }
        CHECK(rc == 0 || rc == PARLA_EBUSY || rc == PARLA_ERESOURCE, "%s returned %d (%s): %s",
              s->evict ? "parla_data_evict" : "parla_data_fetch", rc, parla_strerror(rc), parla_last_error_message());
        if (rc == 0)
            s->done++;
        else
            s->busy++;
    }
    return NULL;
}

static void many_threads(void)
{
    check_set_phase("many threads");
    parla_runtime_t *rt = runtime();
    parla_data_t *d[N_OBJ];
    long writes[N_OBJ] = {0};
    for (int i = 0; i < N_OBJ; i++)
        CHECK_OK(parla_data_create(rt, OBJ, NULL, &d[i]));
    _Atomic int stop = 0;
    side_t sides[2] = {{d, &stop, 7, 0, 0, 0}, {d, &stop, 11, 1, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, side_main, &sides[i]) == 0, "pthread_create");
    long n = scaled(300, 40);
    job_t *jobs = calloc((size_t)n, sizeof *jobs);
    parla_task_t **tasks = calloc((size_t)n, sizeof *tasks);
    CHECK(jobs && tasks, "out of memory");
    unsigned seed = 3;
    for (long i = 0; i < n; i++) {
        job_t *j = &jobs[i];
        int a = (int)(rand_r(&seed) % N_OBJ), b = (a + 1 + (int)(rand_r(&seed) % (N_OBJ - 1))) % N_OBJ;
        j->d[0] = d[a];
        j->d[1] = d[b];
        j->mode[0] = rand_r(&seed) % 2 ? PARLA_READWRITE : PARLA_READ;
        j->mode[1] = rand_r(&seed) % 2 ? PARLA_READWRITE : PARLA_READ;
        j->device = 1 + (int)(rand_r(&seed) % N_GPUS);
        writes[a] += j->mode[0] == PARLA_READWRITE;
        writes[b] += j->mode[1] == PARLA_READWRITE;
        CHECK_OK(parla_task_create(rt, body, j, &tasks[i]));
        CHECK_OK(parla_task_add_placement(tasks[i], &j->device, 1, 0.0, 0));
        CHECK_OK(parla_task_add_access(tasks[i], j->d[0], j->mode[0]));
        CHECK_OK(parla_task_add_access(tasks[i], j->d[1], j->mode[1]));
        CHECK_OK(parla_task_submit(tasks[i]));
    }
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 60.0));
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
    for (long i = 0; i < n; i++) {
        CHECK(parla_task_state(tasks[i]) == PARLA_TASK_DONE, "task %ld: %s", i,
              parla_task_state_name(parla_task_state(tasks[i])));
        parla_task_release(tasks[i]);
    }
    CHECK(atomic_load(&torn) == 0, "%ld accesses saw a copy whose first and last words differ (or none)",
          atomic_load(&torn));
    for (int i = 0; i < N_OBJ; i++) {
        CHECK_OK(parla_data_fetch(d[i], 0, 0));
        const int64_t *w = parla_data_device_ptr(d[i], 0);
        CHECK(w[0] == writes[i] && w[WORDS - 1] == writes[i], "object %d: words %lld and %lld, %ld writes", i,
              (long long)w[0], (long long)w[WORDS - 1], writes[i]);
    }
    uint64_t evictions = 0;
    for (int g = 1; g <= N_GPUS; g++) {
        parla_device_info_t info;
        CHECK_OK(parla_device_info(rt, g, &info));
        CHECK(info.memory_resident <= info.memory_capacity, "gpu %d: %llu resident bytes, capacity %llu", g,
              (unsigned long long)info.memory_resident, (unsigned long long)info.memory_capacity);
        evictions += info.evictions;
    }
    CHECK(evictions > 0, "no evictions");
    CHECK(sides[0].done > 0 && sides[1].done > 0, "fetches done %ld, evictions done %ld", sides[0].done,
          sides[1].done);
    CHECK(atomic_load(&calls_alloc) > 0 && atomic_load(&calls_free) > 0 && atomic_load(&calls_copy) > 0,
          "device calls: %ld alloc, %ld free, %ld copy", atomic_load(&calls_alloc), atomic_load(&calls_free),
          atomic_load(&calls_copy));
    CHECK(atomic_load(&under_lock) == 0, "%ld device calls made holding a data lock", atomic_load(&under_lock));
    for (int i = 0; i < N_OBJ; i++)
        parla_data_release(d[i]);
    free(jobs);
    free(tasks);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* ------------------------------------------------- 2. out of memory -- */

static int touch(parla_task_t *t, void *arg)
{
    (void)t;
    int64_t *w = parla_data_device_ptr(arg, 1);
    if (w == NULL)
        return 5;
    w[0]++;
    return 0;
}

/* Each of the first allocations of a runtime fails in turn (fail_alloc_at), among them the copy jobs'
 * of the preparation (then it copies at once) and those of the fetch. */
static void out_of_memory(void)
{
    check_set_phase("out of memory");
    atomic_store(&sleep_us, 0);
    long runs = 0;
    for (uint64_t k = 1; k <= 200; k++) {
        parla_runtime_t *rt;
        if (runtime_with(2, k, &rt) != 0)
            continue; /* a clean error, checked by test_fault */
        parla__dev_devs_t *devs = parla__dev_devs(rt);
        for (int i = 0; i < devs->n_devices; i++)
            devs->devices[i].ops = &slow_ops[i];
        parla_data_t *d[2] = {NULL, NULL};
        parla_task_t *t = NULL;
        if (parla_data_create(rt, OBJ, NULL, &d[0]) == 0 && parla_data_create(rt, OBJ, NULL, &d[1]) == 0 &&
            parla_task_create(rt, touch, d[0], &t) == 0) {
            int slot = 1;
            bool ok = parla_task_add_placement(t, &slot, 1, 0.0, 0) == 0 &&
                      parla_task_add_access(t, d[0], PARLA_READWRITE) == 0 &&
                      parla_task_add_access(t, d[1], PARLA_READ) == 0;
            if (!ok || parla_task_submit(t) != 0)
                parla_task_cancel(t);
        }
        int rc = parla_runtime_wait_all_timeout(rt, 20.0);
        CHECK(rc == 0, "fail_alloc_at=%llu: wait_all returned %d (%s): %s", (unsigned long long)k, rc,
              parla_strerror(rc), parla_last_error_message());
        if (t) {
            parla_task_state_t st = parla_task_state(t);
            CHECK(st == PARLA_TASK_DONE || st == PARLA_TASK_FAILED || st == PARLA_TASK_CANCELLED,
                  "fail_alloc_at=%llu: task %s", (unsigned long long)k, parla_task_state_name(st));
            if (st == PARLA_TASK_DONE) {
                /* The fetch back may fail cleanly too (no memory for its copy's bookkeeping). */
                rc = parla_data_fetch(d[0], 0, 0);
                CHECK(rc == 0 || rc == PARLA_ENOMEM, "fail_alloc_at=%llu: fetch returned %d (%s): %s",
                      (unsigned long long)k, rc, parla_strerror(rc), parla_last_error_message());
                if (rc == 0) {
                    const int64_t *w = parla_data_device_ptr(d[0], 0);
                    CHECK(w[0] == 1, "fail_alloc_at=%llu: the write reached the CPU as %lld", (unsigned long long)k,
                          (long long)w[0]);
                }
            }
            parla_task_release(t);
            runs++;
        }
        for (int i = 0; i < 2; i++)
            parla_data_release(d[i]);
        CHECK_OK(parla_runtime_destroy(rt));
    }
    CHECK(runs > 0, "no run got as far as a task");
    CHECK(atomic_load(&under_lock) == 0, "%ld device calls made holding a data lock", atomic_load(&under_lock));
}

/* ------------------------------------------- 3. a write and a fetch -- */

static _Atomic int body_waits; /* the body waits (a bounded time) for a copy from `watched` to begin */

static int write_gpu1(parla_task_t *t, void *arg)
{
    (void)t;
    int64_t *w = parla_data_device_ptr(arg, 1);
    if (w == NULL)
        return 5;
    atomic_store(&in_body, 1);
    if (atomic_load(&body_waits))
        hold_until(&copying);
    w[0]++;
    w[WORDS - 1]++;
    atomic_store(&in_body, 0);
    return 0;
}

typedef struct fetcher {
    parla_data_t *d;
    int device, rc;
} fetcher_t;

static void *fetch_main(void *arg)
{
    fetcher_t *f = arg;
    f->rc = parla_data_fetch(f->d, f->device, 0);
    return NULL;
}

/* A task reading and writing d on GPU 1, done. */
static void write_on_gpu1(parla_runtime_t *rt, parla_data_t *d)
{
    parla_task_t *t;
    int gpu = 1;
    CHECK_OK(parla_task_create(rt, write_gpu1, d, &t));
    CHECK_OK(parla_task_add_placement(t, &gpu, 1, 0.0, 0));
    CHECK_OK(parla_task_add_access(t, d, PARLA_READWRITE));
    CHECK_OK(parla_task_submit(t));
    CHECK_OK(parla_task_wait(t));
    parla_task_release(t);
}

/* An object written on GPU 1 (valid only there) is fetched from another thread to `device`; while the
 * fetch is under way, a task that writes the object on GPU 1 is spawned. The fetch is outside the tasks'
 * access history, so no edge orders the task after it; still no copy may read the task's copy while its
 * body writes it. With copy_first, the fetch's copy is in flight when the task is spawned (held until
 * the body runs): the task waits for it. Otherwise the fetch is allocating on `device` (held until the
 * body runs, the body until a copy from GPU 1 begins): the fetch must see the task before it plans its
 * copy, and wait for it. Then both writes reach the CPU, and a fetch to `device` brings the latest bytes. */
static void write_and_fetch(int device, bool copy_first)
{
    check_set_phase(copy_first ? (device == 0 ? "a write while a fetch copies to the cpu"
                                              : "a write while a fetch copies to the other gpu")
                               : "a write while a fetch allocates on the other gpu");
    atomic_store(&sleep_us, 0);
    parla_runtime_t *rt = runtime();
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, OBJ, NULL, &d));
    write_on_gpu1(rt, d);
    CHECK(parla_data_valid_bytes(d, 0) == 0 && parla_data_valid_bytes(d, 1) == OBJ, "not valid on gpu 1 only");
    atomic_store(&held, 0);
    atomic_store(&overlapped, 0);
    atomic_store(&copying, 0);
    atomic_store(&watched, parla_data_device_ptr(d, 1));
    atomic_store(&body_waits, !copy_first);
    atomic_store(copy_first ? &hold_copy : &hold_alloc, copy_first ? 1 : device);
    fetcher_t f = {d, device, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fetch_main, &f) == 0, "pthread_create");
    while (!atomic_load(&held))
        nanosleep(&(struct timespec){0, 100000}, NULL);
    write_on_gpu1(rt, d);
    CHECK(pthread_join(th, NULL) == 0, "pthread_join");
    atomic_store(&watched, NULL);
    CHECK_OK(f.rc);
    CHECK(atomic_load(&overlapped) == 0, "a copy from gpu 1 to device %d read the object while a task wrote it there "
          "(the task spawned while the fetch %s)", device, copy_first ? "copied" : "allocated");
    CHECK_OK(parla_data_fetch(d, 0, 0));
    const int64_t *w = parla_data_device_ptr(d, 0);
    CHECK(w[0] == 2 && w[WORDS - 1] == 2, "words %lld and %lld on the cpu, 2 writes", (long long)w[0],
          (long long)w[WORDS - 1]);
    CHECK_OK(parla_data_fetch(d, device, 0));
    w = parla_data_device_ptr(d, device);
    CHECK(w && w[0] == 2 && w[WORDS - 1] == 2, "words %lld and %lld on device %d, 2 writes",
          w ? (long long)w[0] : -1LL, w ? (long long)w[WORDS - 1] : -1LL, device);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
}

int main(void)
{
    check_watchdog(100);
    many_threads();
    out_of_memory();
    write_and_fetch(2, true);
    write_and_fetch(0, true);
    write_and_fetch(2, false);
    printf("no device call under a data lock: many threads, out of memory; a write and a fetch: ok\n");
    return 0;
}
