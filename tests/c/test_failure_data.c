/*
 * test_failure_data.c: failures in programs with data, against a sequential
 * model. Random programs over 4 data objects on cpu + 2 small virtual GPUs
 * (room for 3 of the 4 objects: evictions happen): each task reads up to two
 * views and writes one (output or inout), on a random placement, and fails
 * (after scribbling on what it writes) with probability 1/8. Hazards only, no
 * explicit dependencies.
 *
 * The model runs the program in spawn order, tracking for every byte its
 * value and whether it is missing (last written by a task that failed or was
 * cancelled). A task that reads a missing byte is cancelled and what it
 * writes becomes missing; a task that fails makes what it writes missing;
 * otherwise it writes its values. The runtime must agree exactly: each task's
 * final state, and every byte that is not missing.
 *
 * With PARLA_CUDA_DRIVER set (meson runs it so, on tests/c/fakecuda.c) the
 * GPUs are CUDA devices: bodies queue their work on the task's stream as host
 * functions, so runahead, stream waits, asynchronous copies and failed bodies
 * with work in flight are all in play.
 */
#include "check.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>

typedef int (*launch_fn)(void *stream, void (*fn)(void *), void *arg);
static launch_fn launch_host; /* fakecuda_kernel of the driver double (a kernel launch), when on CUDA */

enum { N_DATA = 4, NB = 2048, GRAIN = 64, GPU0 = 1, GPU1 = 2 };

typedef struct {
    int data, lo, hi; /* a view: bytes [lo, hi) of data object `data` */
} view_t;

typedef struct {
    view_t reads[2];
    int n_reads;
    view_t write;
    int write_mode; /* PARLA_WRITE or PARLA_READWRITE */
    bool fails;
    uint32_t id;
    parla_data_t **bases;
} prog_task_t;

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static view_t random_view(uint64_t *s)
{
    view_t v;
    v.data = (int)(rng(s) % N_DATA);
    int a = (int)(rng(s) % (NB / GRAIN)), b = (int)(rng(s) % (NB / GRAIN));
    if (a > b) {
        int t = a;
        a = b;
        b = t;
    }
    v.lo = a * GRAIN;
    v.hi = (b + 1) * GRAIN;
    return v;
}

/* What a task computes, from the bytes it reads (given by a byte getter). */
static uint32_t checksum(const prog_task_t *p, const uint8_t *const *bufs)
{
    uint32_t c = p->id * 2654435761u;
    for (int r = 0; r < p->n_reads; r++)
        for (int b = p->reads[r].lo; b < p->reads[r].hi; b++)
            c = c * 31u + bufs[p->reads[r].data][b];
    if (p->write_mode == PARLA_READWRITE)
        for (int b = p->write.lo; b < p->write.hi; b++)
            c = c * 31u + bufs[p->write.data][b];
    return c;
}

static void produce(const prog_task_t *p, uint8_t *dst, uint32_t c)
{
    for (int b = p->write.lo; b < p->write.hi; b++)
        dst[b] = (uint8_t)((c >> 8) + (uint32_t)b * 7u);
}

/* The work of one task, run on its stream's thread (CUDA) or in the body. */
typedef struct {
    const prog_task_t *p;
    const uint8_t *bufs[N_DATA];
    uint8_t *dst;
} work_t;

static void work(void *arg)
{
    work_t *w = arg;
    if (w->p->fails) {
        for (int b = w->p->write.lo; b < w->p->write.hi; b += 3)
            w->dst[b] = 0xEE; /* a half-done write */
    } else {
        produce(w->p, w->dst, checksum(w->p, w->bufs));
    }
    free(w);
}

static int body(parla_task_t *t, void *arg)
{
    prog_task_t *p = arg;
    int dev;
    parla_task_devices(t, &dev, 1);
    const uint8_t *bufs[N_DATA] = {0};
    for (int r = 0; r < p->n_reads; r++)
        bufs[p->reads[r].data] = parla_data_device_ptr(p->bases[p->reads[r].data], dev);
    uint8_t *dst = parla_data_device_ptr(p->bases[p->write.data], dev);
    bufs[p->write.data] = dst;
    for (int d = 0; d < N_DATA; d++)
        CHECK(bufs[d] != NULL || (d != p->write.data && (p->n_reads < 1 || d != p->reads[0].data) &&
                                  (p->n_reads < 2 || d != p->reads[1].data)),
              "task %s: no copy of its data on device %d", parla_task_name(t), dev);
    work_t *w = malloc(sizeof *w);
    CHECK(w != NULL, "out of memory");
    w->p = p;
    memcpy(w->bufs, bufs, sizeof w->bufs);
    w->dst = dst;
    void *stream = parla_task_stream(t, 0);
    if (stream)
        CHECK(launch_host(stream, work, w) == 0, "the kernel launch failed");
    else
        work(w);
    return p->fails ? 77 : 0;
}

static long totals[9]; /* tasks per final state, over all programs */

static void run_program(uint64_t seed, int n_tasks)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    if (launch_host == NULL) {
        cfg.n_virtual_gpus = 2;
        cfg.virtual_gpu_memory = 3 * NB;
    }
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_devices(rt) == 3, "%d devices, expected cpu + 2 GPUs", parla_runtime_num_devices(rt));
    if (launch_host) {
        parla_device_info_t info;
        CHECK_OK(parla_device_info(rt, GPU0, &info));
        CHECK(info.is_cuda && info.memory_capacity == 3 * NB, "gpu(0): cuda %d, %llu bytes (set FAKECUDA_MEMORY)",
              info.is_cuda, (unsigned long long)info.memory_capacity);
    }
    static uint8_t host[N_DATA][NB], model[N_DATA][NB];
    static bool missing[N_DATA][NB];
    parla_data_t *bases[N_DATA];
    for (int d = 0; d < N_DATA; d++) {
        for (int b = 0; b < NB; b++)
            host[d][b] = model[d][b] = (uint8_t)(d * 37 + b);
        memset(missing[d], 0, sizeof missing[d]);
        CHECK_OK(parla_data_create(rt, NB, host[d], &bases[d]));
    }
    prog_task_t *progs = calloc((size_t)n_tasks, sizeof *progs);
    parla_task_t **tasks = calloc((size_t)n_tasks, sizeof *tasks);
    int *expect = calloc((size_t)n_tasks, sizeof *expect);
    for (int i = 0; i < n_tasks; i++) {
        prog_task_t *p = &progs[i];
        p->id = (uint32_t)i;
        p->bases = bases;
        p->n_reads = (int)(rng(&seed) % 3);
        for (int r = 0; r < p->n_reads; r++)
            p->reads[r] = random_view(&seed);
        p->write = random_view(&seed);
        p->write_mode = rng(&seed) % 2 ? PARLA_WRITE : PARLA_READWRITE;
        p->fails = rng(&seed) % 8 == 0;
        CHECK_OK(parla_task_create(rt, body, p, &tasks[i]));
        int kind = (int)(rng(&seed) % 5), slot;
        switch (kind) {
        case 0: break;
        case 1: slot = GPU0; CHECK_OK(parla_task_add_placement(tasks[i], &slot, 1, 0.0, 0)); break;
        case 2: slot = GPU1; CHECK_OK(parla_task_add_placement(tasks[i], &slot, 1, 0.0, 0)); break;
        case 3: slot = PARLA_ANY_GPU; CHECK_OK(parla_task_add_placement(tasks[i], &slot, 1, 0.0, 0)); break;
        default:
            slot = PARLA_ANY_CPU;
            CHECK_OK(parla_task_add_placement(tasks[i], &slot, 1, 0.0, 0));
            slot = PARLA_ANY_GPU;
            CHECK_OK(parla_task_add_placement(tasks[i], &slot, 1, 0.0, 0));
        }
        view_t all[3];
        int modes[3], n = 0;
        for (int r = 0; r < p->n_reads; r++) {
            all[n] = p->reads[r];
            modes[n++] = PARLA_READ;
        }
        all[n] = p->write;
        modes[n++] = p->write_mode;
        for (int k = 0; k < n; k++) {
            uint64_t range[2] = {(uint64_t)all[k].lo, (uint64_t)all[k].hi};
            parla_data_t *v;
            CHECK_OK(parla_data_view(bases[all[k].data], range, 1, &v));
            CHECK_OK(parla_task_add_access(tasks[i], v, modes[k]));
            parla_data_release(v);
        }
        CHECK_OK(parla_task_submit(tasks[i]));

        /* The model. */
        bool reads_missing = false;
        for (int r = 0; r < p->n_reads; r++)
            for (int b = p->reads[r].lo; b < p->reads[r].hi; b++)
                reads_missing |= missing[p->reads[r].data][b];
        if (p->write_mode == PARLA_READWRITE)
            for (int b = p->write.lo; b < p->write.hi; b++)
                reads_missing |= missing[p->write.data][b];
        if (reads_missing || p->fails) {
            expect[i] = reads_missing ? PARLA_TASK_CANCELLED : PARLA_TASK_FAILED;
            for (int b = p->write.lo; b < p->write.hi; b++)
                missing[p->write.data][b] = true;
        } else {
            expect[i] = PARLA_TASK_DONE;
            const uint8_t *bufs[N_DATA];
            for (int d = 0; d < N_DATA; d++)
                bufs[d] = model[d];
            uint8_t out[NB];
            memcpy(out, model[p->write.data], NB);
            produce(p, out, checksum(p, bufs));
            memcpy(model[p->write.data] + p->write.lo, out + p->write.lo, (size_t)(p->write.hi - p->write.lo));
            for (int b = p->write.lo; b < p->write.hi; b++)
                missing[p->write.data][b] = false;
        }
    }
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 60.0));
    for (int i = 0; i < n_tasks; i++) {
        int st = parla_task_state(tasks[i]);
        CHECK(st == expect[i], "program %llu: task %d (%s%s, writes %d[%d,%d) %s) is %s (error %d: %s), the model says %s",
              (unsigned long long)seed, i, progs[i].fails ? "failing" : "ok", "", progs[i].write.data,
              progs[i].write.lo, progs[i].write.hi, progs[i].write_mode == PARLA_WRITE ? "output" : "inout",
              parla_task_state_name((parla_task_state_t)st), parla_task_error(tasks[i]),
              parla_strerror(parla_task_error(tasks[i])), parla_task_state_name((parla_task_state_t)expect[i]));
        totals[st]++;
        parla_task_release(tasks[i]);
    }
    for (int d = 0; d < N_DATA; d++) {
        CHECK_OK(parla_data_fetch(bases[d], 0, 0));
        for (int b = 0; b < NB; b++)
            CHECK(missing[d][b] || host[d][b] == model[d][b], "program %llu: data %d byte %d is %u, expected %u",
                  (unsigned long long)seed, d, b, host[d][b], model[d][b]);
        parla_data_release(bases[d]);
    }
    CHECK_OK(parla_runtime_destroy(rt));
    free(progs);
    free(tasks);
    free(expect);
}

int main(void)
{
    check_watchdog(110);
    const char *driver = getenv("PARLA_CUDA_DRIVER");
    if (driver && *driver) {
        void *lib = dlopen(driver, RTLD_NOW | RTLD_LOCAL);
        CHECK(lib != NULL, "cannot load %s: %s", driver, dlerror());
        *(void **)&launch_host = dlsym(lib, "fakecuda_kernel"); /* a kernel launch (delayed as device work) */
        CHECK(launch_host != NULL, "%s has no fakecuda_kernel", driver);
    }
    int programs = (int)scaled(200, 10);
    for (int p = 0; p < programs; p++) {
        check_set_phase("random programs with failures");
        run_program(0x243F6A8885A308D3ull + (uint64_t)p * 104729, 60);
    }
    CHECK(totals[PARLA_TASK_DONE] > 0 && totals[PARLA_TASK_FAILED] > 0 && totals[PARLA_TASK_CANCELLED] > 0,
          "the programs did not exercise every outcome");
    printf("%d random programs with failures on %s GPUs agree with the model (%ld done, %ld failed, %ld cancelled)\n",
           programs, launch_host ? "CUDA (driver double)" : "virtual", totals[PARLA_TASK_DONE],
           totals[PARLA_TASK_FAILED], totals[PARLA_TASK_CANCELLED]);
    return 0;
}
