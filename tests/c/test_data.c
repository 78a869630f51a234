/*
 * test_data.c: data coherence across the CPU and virtual GPUs, through the C
 * API. Random programs of reads, writes and read-writes on random byte ranges
 * of a few data objects, placed on random devices, with no explicit
 * dependencies (the declared accesses order them), on GPUs small enough to
 * force eviction. Copies go through the copy engines. Every read a body makes
 * and every final value must equal those of the same program run sequentially.
 */
#include "check.h"

#include <stdatomic.h>
#include <stdint.h>

enum { N_DATA = 4, N_ELEMS = 512, N_GPUS = 3 };

typedef struct op {
    parla_data_t *view;
    int data, mode, device;
    int lo, hi;       /* element range */
    double value;
    double observed;  /* sum the body read (reads and read-writes) */
    double expected;
} op_t;

static parla_data_t *bases[N_DATA];

static int body(parla_task_t *task, void *arg)
{
    op_t *op = arg;
    int devices[PARLA_MAX_TASK_DEVICES];
    int n = parla_task_devices(task, devices, PARLA_MAX_TASK_DEVICES);
    if (n != 1 || devices[0] != op->device)
        return 1000; /* ran on the wrong device */
    double *buf = parla_data_device_ptr(bases[op->data], op->device);
    if (buf == NULL)
        return 1001;
    double sum = 0;
    if (op->mode & PARLA_READ)
        for (int i = op->lo; i < op->hi; i++)
            sum += buf[i];
    op->observed = sum;
    if (op->mode == PARLA_WRITE)
        for (int i = op->lo; i < op->hi; i++)
            buf[i] = op->value;
    else if (op->mode == PARLA_READWRITE)
        for (int i = op->lo; i < op->hi; i++)
            buf[i] = buf[i] * 0.5 + op->value;
    return 0;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

int main(void)
{
    check_watchdog(110);
    long programs = scaled(2000, 40);
    unsigned long long evictions = 0, copied = 0;
    enum { N_OPS = 60 };
    static op_t ops[N_OPS];
    static double host[N_DATA][N_ELEMS], ref[N_DATA][N_ELEMS];
    for (long p = 0; p < programs; p++) {
        check_set_phase("program");
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = 2;
        cfg.n_virtual_gpus = N_GPUS;
        /* Room for two of the four objects: tasks evict one another's copies. */
        cfg.virtual_gpu_memory = 2 * N_ELEMS * sizeof(double);
        parla_runtime_t *rt;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        CHECK(parla_runtime_num_devices(rt) == 1 + N_GPUS, "devices");
        for (int d = 0; d < N_DATA; d++) {
            for (int i = 0; i < N_ELEMS; i++)
                host[d][i] = ref[d][i] = d * 1000 + i;
            CHECK_OK(parla_data_create(rt, sizeof host[d], host[d], &bases[d]));
        }
        parla_task_t *tasks[N_OPS];
        for (int k = 0; k < N_OPS; k++) {
            op_t *op = &ops[k];
            op->data = (int)(rnd() % N_DATA);
            op->lo = (int)(rnd() % N_ELEMS);
            op->hi = op->lo + 1 + (int)(rnd() % (uint64_t)(N_ELEMS - op->lo));
            int m = (int)(rnd() % 3);
            op->mode = m == 0 ? PARLA_READ : m == 1 ? PARLA_WRITE : PARLA_READWRITE;
            op->device = (int)(rnd() % (1 + N_GPUS));
            op->value = (double)(rnd() % 100);
            uint64_t range[2] = {(uint64_t)op->lo * sizeof(double), (uint64_t)op->hi * sizeof(double)};
            CHECK_OK(parla_data_view(bases[op->data], range, 1, &op->view));
            /* The sequential reference. */
            double sum = 0;
            if (op->mode & PARLA_READ)
                for (int i = op->lo; i < op->hi; i++)
                    sum += ref[op->data][i];
            op->expected = sum;
            for (int i = op->lo; i < op->hi; i++) {
                if (op->mode == PARLA_WRITE)
                    ref[op->data][i] = op->value;
                else if (op->mode == PARLA_READWRITE)
                    ref[op->data][i] = ref[op->data][i] * 0.5 + op->value;
            }
            CHECK_OK(parla_task_create(rt, body, op, &tasks[k]));
            int slot = op->device;
            CHECK_OK(parla_task_add_placement(tasks[k], &slot, 1, 0.0, 0));
            CHECK_OK(parla_task_add_access(tasks[k], op->view, (parla_access_mode_t)op->mode));
            CHECK_OK(parla_task_submit(tasks[k]));
        }
        check_set_phase("wait_all");
        CHECK_OK(parla_runtime_wait_all(rt));
        for (int k = 0; k < N_OPS; k++) {
            CHECK(parla_task_state(tasks[k]) == PARLA_TASK_DONE, "program %ld task %d: state %s error %d", p, k,
                  parla_task_state_name(parla_task_state(tasks[k])), parla_task_error(tasks[k]));
            CHECK(ops[k].observed == ops[k].expected, "program %ld task %d (mode %d on device %d, [%d, %d)): read %g, "
                  "sequential read %g", p, k, ops[k].mode, ops[k].device, ops[k].lo, ops[k].hi, ops[k].observed,
                  ops[k].expected);
            parla_task_release(tasks[k]);
            parla_data_release(ops[k].view);
        }
        check_set_phase("fetch");
        for (int d = 0; d < N_DATA; d++) {
            CHECK_OK(parla_data_fetch(bases[d], 0, 0));
            for (int i = 0; i < N_ELEMS; i++)
                CHECK(host[d][i] == ref[d][i], "program %ld: data %d element %d is %g, sequentially %g", p, d, i,
                      host[d][i], ref[d][i]);
            parla_data_release(bases[d]);
        }
        parla_device_info_t info;
        for (int g = 1; g <= N_GPUS; g++) {
            CHECK_OK(parla_device_info(rt, g, &info));
            CHECK(info.memory_resident <= info.memory_capacity, "gpu %d: %llu resident > %llu", g,
                  (unsigned long long)info.memory_resident, (unsigned long long)info.memory_capacity);
            evictions += info.evictions;
            copied += info.bytes_in;
        }
        CHECK_OK(parla_runtime_destroy(rt));
    }
    CHECK(evictions > 0 && copied > 0, "the programs should evict (%llu) and copy (%llu bytes)", evictions, copied);
    printf("test_data: %llu evictions, %llu bytes copied to GPUs\n", evictions, copied);
    printf("test_data: %ld random programs of %d accesses over cpu + %d virtual GPUs match the sequential run\n",
           programs, N_OPS, N_GPUS);
    return 0;
}
