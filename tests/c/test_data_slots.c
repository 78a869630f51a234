/*
 * test_data_slots.c: data for the k-th device of a multi-device task
 * (parla_task_add_access_at), on virtual GPUs.
 *
 * 1. A task on (gpu 2, gpu 1) reads A on its first device and writes B on its
 *    second: before the body, A is valid on device 2 and B has a copy on device
 *    1; afterwards B's only valid copy is on device 1 and nothing of B is on
 *    device 2. One data object declared for both devices is valid on both.
 * 2. A slot out of range at the call is PARLA_EINVAL; a slot beyond the devices
 *    the task is mapped to fails the task with PARLA_EINVAL before its body, and
 *    the data stays as it was. The data getters answer 0 / NULL for no data and
 *    for devices out of range.
 * 3. Many two-device tasks, half with their devices in one order and half in
 *    the other, on GPUs with room for two objects each: every task's data is
 *    made room for on both devices (eviction with write-back), the values are
 *    those of a sequential run, and nothing deadlocks (several acquire and
 *    device locks are taken in ascending device index, whatever the slots).
 * 4. The N-th internal allocation fails, for N = 1, 2, ...: a copy that cannot
 *    be queued as a job is made at once (with the store's lock dropped), so a
 *    task that runs sees the right values; every call succeeds or returns
 *    PARLA_ENOMEM, and the data's values survive (ASan: no leak).
 */
#include "check.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

enum { N = 256, GPU1 = 1, GPU2 = 2 };

typedef struct pair {
    parla_data_t *in, *out;
    double scale;
    int err; /* what the body found wrong, 0 when nothing */
} pair_t;

/* out (on the task's second device) = in (on its first) * scale. */
static int scale_body(parla_task_t *task, void *arg)
{
    pair_t *p = arg;
    int dev[PARLA_MAX_TASK_DEVICES];
    if (parla_task_devices(task, dev, PARLA_MAX_TASK_DEVICES) != 2)
        return p->err = 1000;
    if (parla_data_valid_bytes(p->in, dev[0]) != N * sizeof(double))
        return p->err = 1001; /* the input is not on the first device */
    const double *in = parla_data_device_ptr(p->in, dev[0]);
    double *out = parla_data_device_ptr(p->out, dev[1]);
    if (in == NULL || out == NULL)
        return p->err = 1002;
    for (int i = 0; i < N; i++)
        out[i] = in[i] * p->scale;
    return 0;
}

static int never(parla_task_t *task, void *arg)
{
    (void)task;
    *(int *)arg = 1;
    return 0;
}

/* Both devices hold a valid copy of the one data object declared for both. */
static int both_body(parla_task_t *task, void *arg)
{
    parla_data_t *d = arg;
    int dev[PARLA_MAX_TASK_DEVICES];
    if (parla_task_devices(task, dev, PARLA_MAX_TASK_DEVICES) != 2)
        return 2000;
    for (int k = 0; k < 2; k++) {
        const double *x = parla_data_device_ptr(d, dev[k]);
        if (x == NULL || parla_data_valid_bytes(d, dev[k]) != N * sizeof(double))
            return 2001 + k;
        for (int i = 0; i < N; i++)
            if (x[i] != (double)i)
                return 2003 + k;
    }
    return 0;
}

/* Two virtual GPUs of gpu_memory bytes each (0: the default); fail_alloc_at as in parla_config_t. */
static int runtime_with(uint64_t gpu_memory, uint64_t fail_alloc_at, parla_runtime_t **rt)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 4;
    cfg.n_virtual_gpus = 2;
    if (gpu_memory)
        cfg.virtual_gpu_memory = gpu_memory;
    cfg.fail_alloc_at = fail_alloc_at;
    return parla_runtime_create(&cfg, rt);
}

static parla_runtime_t *runtime(uint64_t gpu_memory)
{
    parla_runtime_t *rt;
    CHECK_OK(runtime_with(gpu_memory, 0, &rt));
    return rt;
}

static parla_task_t *two_device_task(parla_runtime_t *rt, parla_task_fn fn, void *arg, int first, int second)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, arg, &t));
    int slots[2] = {first, second};
    CHECK_OK(parla_task_add_placement(t, slots, 2, 0.0, 0));
    return t;
}

static void test_slots_place_data(void)
{
    check_set_phase("slots place data");
    parla_runtime_t *rt = runtime(1 << 20);
    static double a[N], b[N];
    for (int i = 0; i < N; i++) {
        a[i] = i;
        b[i] = -1;
    }
    parla_data_t *A, *B;
    CHECK_OK(parla_data_create(rt, sizeof a, a, &A));
    CHECK_OK(parla_data_create(rt, sizeof b, b, &B));
    pair_t p = {A, B, 3.0, 0};
    parla_task_t *t = two_device_task(rt, scale_body, &p, GPU2, GPU1);
    CHECK_OK(parla_task_add_access_at(t, A, PARLA_READ, 0));
    CHECK_OK(parla_task_add_access_at(t, B, PARLA_WRITE, 1));
    CHECK_OK(parla_task_submit(t));
    CHECK_OK(parla_task_wait(t));
    CHECK(parla_task_state(t) == PARLA_TASK_DONE && p.err == 0, "two-device task: state %d, body error %d",
          (int)parla_task_state(t), p.err);
    /* A was copied to the first device (gpu 2) only; B written on the second (gpu 1) only. */
    CHECK(parla_data_valid_bytes(A, GPU2) == sizeof a && parla_data_resident_bytes(A, GPU1) == 0,
          "A: valid on device 2 %llu, resident on device 1 %llu", (unsigned long long)parla_data_valid_bytes(A, GPU2),
          (unsigned long long)parla_data_resident_bytes(A, GPU1));
    CHECK(parla_data_valid_bytes(B, GPU1) == sizeof b && parla_data_valid_bytes(B, 0) == 0 &&
          parla_data_resident_bytes(B, GPU2) == 0, "B: valid on device 1 %llu, on the cpu %llu, resident on 2 %llu",
          (unsigned long long)parla_data_valid_bytes(B, GPU1), (unsigned long long)parla_data_valid_bytes(B, 0),
          (unsigned long long)parla_data_resident_bytes(B, GPU2));
    CHECK_OK(parla_data_fetch(B, 0, 0));
    for (int i = 0; i < N; i++)
        CHECK(b[i] == 3.0 * i, "B[%d] = %g, not %g", i, b[i], 3.0 * i);
    parla_task_release(t);

    /* One object for both devices: valid on both when the body runs. */
    parla_task_t *both = two_device_task(rt, both_body, A, GPU1, GPU2);
    CHECK_OK(parla_task_add_access_at(both, A, PARLA_READ, 0));
    CHECK_OK(parla_task_add_access_at(both, A, PARLA_READ, 1));
    CHECK_OK(parla_task_submit(both));
    CHECK_OK(parla_task_wait(both));
    CHECK(parla_task_state(both) == PARLA_TASK_DONE, "the same data on both devices: error %d",
          parla_task_error(both));
    parla_task_release(both);
    parla_data_release(A);
    parla_data_release(B);
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_runtime_destroy(rt);
}

static void test_slot_errors(void)
{
    check_set_phase("slot errors");
    parla_runtime_t *rt = runtime(1 << 20);
    parla_data_t *A;
    CHECK_OK(parla_data_create(rt, N * sizeof(double), NULL, &A));
    int ran = 0;
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, never, &ran, &t));
    CHECK_RC(parla_task_add_access_at(t, A, PARLA_READ, -1), PARLA_EINVAL);
    CHECK_RC(parla_task_add_access_at(t, A, PARLA_READ, PARLA_MAX_TASK_DEVICES), PARLA_EINVAL);
    CHECK(strstr(parla_last_error_message(), "position") != NULL, "message: %s", parla_last_error_message());
    /* Mapped to one GPU, with data for its second device: fails before the body. */
    int gpu = GPU1;
    CHECK_OK(parla_task_add_placement(t, &gpu, 1, 0.0, 0));
    CHECK_OK(parla_task_add_access_at(t, A, PARLA_READWRITE, 1));
    CHECK_OK(parla_task_submit(t));
    parla_task_wait(t);
    CHECK(parla_task_state(t) == PARLA_TASK_FAILED && parla_task_error(t) == PARLA_EINVAL && ran == 0,
          "slot beyond the task's devices: state %d, error %d, ran %d", (int)parla_task_state(t),
          parla_task_error(t), ran);
    CHECK(parla_data_valid_bytes(A, 0) == N * sizeof(double) && parla_data_resident_bytes(A, GPU1) == 0,
          "the data moved for a task that failed before preparing it");
    /* The getters answer 0 / NULL for no data and for a device the runtime lacks. */
    CHECK(parla_data_valid_bytes(NULL, 0) == 0 && parla_data_resident_bytes(NULL, 0) == 0 &&
              parla_data_device_ptr(NULL, 0) == NULL, "getters of NULL data");
    CHECK(parla_data_valid_bytes(A, 3) == 0 && parla_data_resident_bytes(A, -1) == 0 &&
              parla_data_device_ptr(A, 3) == NULL && parla_data_device_ptr(A, 0) != NULL,
          "getters of devices out of range");
    parla_task_release(t);
    parla_data_release(A);
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_runtime_destroy(rt);
}

enum { N_OBJ = 6, N_TASKS = 48 };

static void test_many_two_device_tasks(void)
{
    check_set_phase("many two-device tasks");
    /* Room for two objects per GPU: every task evicts on both of its devices. */
    parla_runtime_t *rt = runtime(2 * N * sizeof(double));
    static double host[N_OBJ][N];
    double ref[N_OBJ][N];
    parla_data_t *d[N_OBJ];
    for (int o = 0; o < N_OBJ; o++) {
        for (int i = 0; i < N; i++)
            host[o][i] = ref[o][i] = o * 1000 + i;
        CHECK_OK(parla_data_create(rt, sizeof host[o], host[o], &d[o]));
    }
    static pair_t pairs[N_TASKS];
    parla_task_t *tasks[N_TASKS];
    for (int k = 0; k < N_TASKS; k++) {
        int in = k % N_OBJ, out = (k * 5 + 1) % N_OBJ;
        if (out == in)
            out = (out + 1) % N_OBJ;
        pairs[k] = (pair_t){d[in], d[out], 0.5 + (k % 3), 0};
        for (int i = 0; i < N; i++)
            ref[out][i] = ref[in][i] * pairs[k].scale;
        /* Half the tasks take their devices in the other order. */
        tasks[k] = k % 2 ? two_device_task(rt, scale_body, &pairs[k], GPU2, GPU1)
                         : two_device_task(rt, scale_body, &pairs[k], GPU1, GPU2);
        CHECK_OK(parla_task_add_access_at(tasks[k], d[in], PARLA_READ, 0));
        CHECK_OK(parla_task_add_access_at(tasks[k], d[out], PARLA_WRITE, 1));
        CHECK_OK(parla_task_submit(tasks[k]));
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    for (int k = 0; k < N_TASKS; k++) {
        CHECK(parla_task_state(tasks[k]) == PARLA_TASK_DONE && pairs[k].err == 0,
              "task %d: state %d, error %d, body error %d", k, (int)parla_task_state(tasks[k]),
              parla_task_error(tasks[k]), pairs[k].err);
        parla_task_release(tasks[k]);
    }
    unsigned long long evictions = 0;
    for (int g = GPU1; g <= GPU2; g++) {
        parla_device_info_t info;
        CHECK_OK(parla_device_info(rt, g, &info));
        evictions += info.evictions;
        CHECK(info.memory_resident <= info.memory_capacity, "device %d over its capacity", g);
    }
    CHECK(evictions > 0, "no eviction: the test did not fill the GPUs");
    for (int o = 0; o < N_OBJ; o++) {
        CHECK_OK(parla_data_fetch(d[o], 0, 0));
        for (int i = 0; i < N; i++)
            CHECK(host[o][i] == ref[o][i], "object %d [%d] = %g, not %g", o, i, host[o][i], ref[o][i]);
        parla_data_release(d[o]);
    }
    parla_runtime_destroy(rt);
}

static void test_allocation_failures(void)
{
    check_set_phase("allocation failures");
    int done = 0;
    for (uint64_t n = 1; n < 400 && done < 20; n++) {
        parla_runtime_t *rt;
        if (runtime_with(0, n, &rt) != 0)
            continue;
        static double a[N], b[N];
        for (int i = 0; i < N; i++) {
            a[i] = i;
            b[i] = 0;
        }
        parla_data_t *A = NULL, *B = NULL;
        int rc = parla_data_create(rt, sizeof a, a, &A);
        if (rc == 0)
            rc = parla_data_create(rt, sizeof b, b, &B);
        parla_task_t *t = NULL;
        pair_t p = {A, B, 2.0, 0};
        if (rc == 0)
            rc = parla_task_create(rt, scale_body, &p, &t);
        int slots[2] = {GPU1, GPU2};
        if (rc == 0)
            rc = parla_task_add_placement(t, slots, 2, 0.0, 0);
        if (rc == 0)
            rc = parla_task_add_access_at(t, A, PARLA_READ, 0);
        if (rc == 0)
            rc = parla_task_add_access_at(t, B, PARLA_READWRITE, 1);
        if (rc == 0)
            rc = parla_task_submit(t);
        CHECK(rc == 0 || rc == PARLA_ENOMEM, "allocation %llu failed: %d (%s)", (unsigned long long)n, rc,
              parla_last_error_message());
        if (rc != 0 && t != NULL && parla_task_state(t) == PARLA_TASK_CREATED)
            parla_task_cancel(t);
        parla_runtime_wait_all(rt);
        if (rc == 0 && parla_task_state(t) == PARLA_TASK_DONE) {
            CHECK(p.err == 0, "allocation %llu: body error %d", (unsigned long long)n, p.err);
            if (parla_data_fetch(B, 0, 0) == 0) {
                for (int i = 0; i < N; i++)
                    CHECK(b[i] == 2.0 * i, "allocation %llu: B[%d] = %g", (unsigned long long)n, i, b[i]);
                done++;
            }
        } else if (rc == 0) {
            CHECK(parla_task_error(t) == PARLA_ENOMEM || parla_task_state(t) == PARLA_TASK_FAILED,
                  "allocation %llu: state %d, error %d", (unsigned long long)n, (int)parla_task_state(t),
                  parla_task_error(t));
        }
        if (A != NULL && parla_data_fetch(A, 0, 0) == 0)
            for (int i = 0; i < N; i++)
                CHECK(a[i] == i, "allocation %llu: A[%d] = %g", (unsigned long long)n, i, a[i]);
        parla_task_release(t);
        parla_data_release(A);
        parla_data_release(B);
        parla_runtime_destroy(rt);
    }
    CHECK(done > 0, "no run got past the allocation failures");
}

int main(void)
{
    check_watchdog(55);
    test_slots_place_data();
    test_slot_errors();
    test_allocation_failures();
    for (long r = 0; r < scaled(20, 3); r++)
        test_many_two_device_tasks();
    return 0;
}
