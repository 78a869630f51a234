/*
 * test_view_alloc.c: a view allocates on a GPU only the byte range covering it,
 * through the C API, on virtual GPUs (and on the CUDA driver double when
 * PARLA_CUDA_DRIVER is set: GPU memory is then FAKECUDA_MEMORY). A slice of
 * 3 MB of a 5 MB object fits a 4 MB GPU; views that overlap on one GPU share
 * one allocation (merged, on the device or through the CPU when both do not
 * fit at once) and stay coherent, also while disjoint views are in use by
 * running tasks; the device pointer of a view, and of its base inside a task
 * that declared the view, address the view's bytes in the smaller allocation.
 */
#include "check.h"

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

enum { GPU0 = 1, MB = 1000000 };

typedef struct {
    parla_data_t *data;  /* what the body addresses (a view, or its base) */
    uint64_t lo, hi;     /* the bytes it updates */
    uint8_t add;
    int sleep_ms;
} work_t;

static int update(parla_task_t *t, void *arg)
{
    work_t *w = arg;
    int dev;
    parla_task_devices(t, &dev, 1);
    uint8_t *p = parla_data_device_ptr(w->data, dev);
    if (p == NULL)
        return 1001;
    if (w->sleep_ms) {
        struct timespec ts = {0, (long)w->sleep_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (uint64_t x = w->lo; x < w->hi; x++)
        p[x] = (uint8_t)(p[x] * 3u + w->add);
    return 0;
}

static void model(uint8_t *ref, const work_t *w)
{
    for (uint64_t x = w->lo; x < w->hi; x++)
        ref[x] = (uint8_t)(ref[x] * 3u + w->add);
}

static parla_runtime_t *runtime(uint64_t gpu_bytes)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 3;
    if (getenv("PARLA_CUDA_DRIVER") == NULL) {
        cfg.n_virtual_gpus = 1;
        cfg.virtual_gpu_memory = gpu_bytes;
    }
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    parla_device_info_t info;
    CHECK_OK(parla_device_info(rt, GPU0, &info));
    CHECK(info.memory_capacity == gpu_bytes, "gpu(0) has %llu bytes, expected %llu (set FAKECUDA_MEMORY)",
          (unsigned long long)info.memory_capacity, (unsigned long long)gpu_bytes);
    return rt;
}

static parla_data_t *view(parla_data_t *base, uint64_t lo, uint64_t hi)
{
    uint64_t r[2] = {lo, hi};
    parla_data_t *v;
    CHECK_OK(parla_data_view(base, r, 1, &v));
    return v;
}

static parla_task_t *spawn(parla_runtime_t *rt, parla_data_t *declared, work_t *w)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, update, w, &t));
    int slot = GPU0;
    CHECK_OK(parla_task_add_placement(t, &slot, 1, 0.0, 0));
    CHECK_OK(parla_task_add_access(t, declared, PARLA_READWRITE));
    CHECK_OK(parla_task_submit(t));
    return t;
}

static void check_done(parla_task_t *t, const char *what)
{
    CHECK_OK(parla_task_wait(t));
    CHECK(parla_task_state(t) == PARLA_TASK_DONE, "%s: %s (error %d)", what,
          parla_task_state_name(parla_task_state(t)), parla_task_error(t));
    parla_task_release(t);
}

static void check_values(parla_data_t *base, const uint8_t *host, const uint8_t *ref, uint64_t n, const char *what)
{
    CHECK_OK(parla_data_fetch(base, 0, 0));
    for (uint64_t x = 0; x < n; x++)
        CHECK(host[x] == ref[x], "%s: byte %llu is %u, expected %u", what, (unsigned long long)x, host[x], ref[x]);
}

/* A 3 MB slice of a 5 MB object on a 4 MB GPU, then a slice overlapping it (a merge through the CPU: the
 * two do not fit at once). */
static void slice_fits(void)
{
    check_set_phase("slice fits");
    enum { N = 5 * MB };
    parla_runtime_t *rt = runtime(4 * MB);
    uint8_t *host = malloc(N), *ref = malloc(N);
    CHECK(host && ref, "out of memory");
    for (uint64_t x = 0; x < N; x++)
        host[x] = ref[x] = (uint8_t)(x * 7u);
    parla_data_t *base;
    CHECK_OK(parla_data_create(rt, N, host, &base));
    parla_data_t *v = view(base, 1 * MB, 4 * MB);
    work_t w = {.data = v, .lo = 1 * MB, .hi = 4 * MB, .add = 5};
    check_done(spawn(rt, v, &w), "the 3 MB slice");
    model(ref, &w);
    CHECK(parla_data_resident_bytes(base, GPU0) == 3 * MB, "resident %llu bytes, expected the slice's 3 MB",
          (unsigned long long)parla_data_resident_bytes(base, GPU0));
    parla_hold_t *h;
    uint8_t *p;
    CHECK_OK(parla_data_hold(v, GPU0, &h, (void **)&p));
    uint64_t lo, nbytes;
    uint8_t *mem = parla_hold_memory(h, &lo, &nbytes);
    CHECK(lo == 1 * MB && nbytes == 3 * MB && p + 1 * MB == mem && mem == (uint8_t *)parla_data_device_ptr(v, GPU0) + MB,
          "the held memory: base bytes [%llu, +%llu)", (unsigned long long)lo, (unsigned long long)nbytes);
    parla_hold_release(h);
    CHECK(parla_data_device_ptr(base, GPU0) == NULL, "outside tasks the base has no whole copy on the GPU");
    CHECK(parla_hold_memory(NULL, &lo, &nbytes) == NULL && lo == 0 && nbytes == 0, "a NULL hold");

    /* [0, 2 MB) overlaps [1, 4 MB): 4 MB + 2 MB do not fit, so the old piece goes back to the CPU first. */
    parla_data_t *v2 = view(base, 0, 2 * MB);
    work_t w2 = {.data = base, .lo = 0, .hi = 2 * MB, .add = 11}; /* through the base's pointer, in the task */
    check_done(spawn(rt, v2, &w2), "the overlapping slice");
    model(ref, &w2);
    parla_device_info_t info;
    CHECK_OK(parla_device_info(rt, GPU0, &info));
    CHECK(info.memory_resident <= info.memory_capacity, "resident %llu of %llu",
          (unsigned long long)info.memory_resident, (unsigned long long)info.memory_capacity);
    check_values(base, host, ref, N, "after the slices");
    parla_data_release(v);
    parla_data_release(v2);
    parla_data_release(base);
    CHECK_OK(parla_runtime_destroy(rt));
    free(host);
    free(ref);
}

/* On a GPU with room: two disjoint views in use by running tasks, a view overlapping both (waits for
 * them, then merges on the device), then the whole object (a second merge), then the first view again
 * (inside the whole allocation now). */
static void overlapping_views(void)
{
    check_set_phase("overlapping views");
    enum { N = 1 << 20, K = 1 << 10 };
    parla_runtime_t *rt = runtime(4 * MB);
    uint8_t *host = malloc(N), *ref = malloc(N);
    CHECK(host && ref, "out of memory");
    for (uint64_t x = 0; x < N; x++)
        host[x] = ref[x] = (uint8_t)(x * 13u + 1);
    parla_data_t *base;
    CHECK_OK(parla_data_create(rt, N, host, &base));
    parla_data_t *a = view(base, 0, 256 * K), *b = view(base, 512 * K, 768 * K), *c = view(base, 128 * K, 640 * K);
    work_t wa = {.data = a, .lo = 0, .hi = 256 * K, .add = 1, .sleep_ms = 50};
    work_t wb = {.data = base, .lo = 512 * K, .hi = 768 * K, .add = 2, .sleep_ms = 50};
    work_t wc = {.data = c, .lo = 128 * K, .hi = 640 * K, .add = 3};
    work_t wall = {.data = base, .lo = 0, .hi = N, .add = 4};
    work_t wa2 = {.data = a, .lo = 0, .hi = 256 * K, .add = 5};
    parla_task_t *ta = spawn(rt, a, &wa), *tb = spawn(rt, b, &wb), *tc = spawn(rt, c, &wc);
    parla_task_t *tall = spawn(rt, base, &wall), *ta2 = spawn(rt, a, &wa2);
    const work_t *order[] = {&wa, &wb, &wc, &wall, &wa2};
    for (int i = 0; i < 5; i++)
        model(ref, order[i]);
    check_done(ta, "view a");
    check_done(tb, "view b");
    check_done(tc, "view c over a and b");
    check_done(tall, "the whole object");
    check_done(ta2, "view a again");
    CHECK(parla_data_resident_bytes(base, GPU0) == N, "resident %llu bytes, expected one allocation of %d",
          (unsigned long long)parla_data_resident_bytes(base, GPU0), N);
    CHECK(parla_data_device_ptr(base, GPU0) != NULL, "the whole object is on the GPU");
    check_values(base, host, ref, N, "after the overlapping views");
    parla_data_release(a);
    parla_data_release(b);
    parla_data_release(c);
    parla_data_release(base);
    CHECK_OK(parla_runtime_destroy(rt));
    free(host);
    free(ref);
}

int main(void)
{
    check_watchdog(50);
    slice_fits();
    overlapping_views();
    printf("test_view_alloc: ok\n");
    return 0;
}
