/*
 * bench_replay.c: a replayed graph against creating the same tasks again, from C (libparla only).
 *
 *     build/c/benchmarks/c/bench_replay [--reps N] [--workers W] [--only jacobi_replay]
 *
 * The graph is one iteration of examples/jacobi.py with P = 500 bands: P sweep tasks (read-write of a
 * band) and P halo tasks (write the band's two halo rows, read the neighbours' edge rows; views of the
 * bands), 1,000 tasks and 2,496 accesses, no explicit dependency, empty bodies. 100 iterations:
 *
 *   respawn  each iteration's tasks created, named, given their accesses and submitted
 *            (parla_task_create / set_name / add_access / submit), as a C program does today
 *   replay   the iteration recorded once (parla_graph_add_task / add_access), then parla_graph_replay
 *
 * Then the same 1,000 tasks without any access (nodata_*): what creating and submitting costs without the
 * hazard tracking of declared data.
 *
 * Prints, per mode, the time spent in the spawning calls per task (wall clock, and the spawning thread's
 * CPU time, which a loaded machine does not inflate), medians over iterations and then over --reps runs:
 *
 *   RESULT system=parla workload=jacobi_respawn workers=2 us_per_task=0.812 cpu_us_per_task=0.700
 */
#include "bench_common.h"

#include "parla.h"

#include <stdint.h>

enum { BANDS = 500, COLS = 500, ITERS = 100 };

typedef struct {
    parla_data_t *band, *top, *bottom, *first, *last;
} band_t;

static int empty_body(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 0;
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define OK(expr)                                                                                    \
    do {                                                                                            \
        int rc_ = (expr);                                                                           \
        if (rc_) {                                                                                  \
            fprintf(stderr, "%s: %s (%s)\n", #expr, parla_strerror(rc_), parla_last_error_message()); \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

static void make_bands(parla_runtime_t *rt, band_t *b)
{
    const uint64_t row = COLS * sizeof(double);
    for (int p = 0; p < BANDS; p++) {
        OK(parla_data_create(rt, 3 * row, NULL, &b[p].band));
        uint64_t r[4][2] = {{0, row}, {2 * row, 3 * row}, {row, 2 * row}, {row, 2 * row}};
        OK(parla_data_view(b[p].band, r[0], 1, &b[p].top));
        OK(parla_data_view(b[p].band, r[1], 1, &b[p].bottom));
        OK(parla_data_view(b[p].band, r[2], 1, &b[p].first));
        OK(parla_data_view(b[p].band, r[3], 1, &b[p].last));
    }
}

static void free_bands(band_t *b)
{
    for (int p = 0; p < BANDS; p++) {
        parla_data_release(b[p].band);
        parla_data_release(b[p].top);
        parla_data_release(b[p].bottom);
        parla_data_release(b[p].first);
        parla_data_release(b[p].last);
    }
}

/* The accesses of task k of an iteration (k < BANDS: sweep k; else halo k - BANDS). */
static int with_data = 1; /* 0: the same 1,000 tasks without accesses (the engine's floor) */

static int accesses(const band_t *b, int k, parla_data_t **data, parla_access_mode_t *mode)
{
    if (!with_data)
        return 0;
    if (k < BANDS) {
        data[0] = b[k].band;
        mode[0] = PARLA_READWRITE;
        return 1;
    }
    int p = k - BANDS, n = 0;
    if (p > 0) {
        data[n] = b[p].top, mode[n++] = PARLA_WRITE;
        data[n] = b[p - 1].last, mode[n++] = PARLA_READ;
    }
    if (p < BANDS - 1) {
        data[n] = b[p].bottom, mode[n++] = PARLA_WRITE;
        data[n] = b[p + 1].first, mode[n++] = PARLA_READ;
    }
    return n;
}

static void task_name(int k, int t, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s[%d, %d]", k < BANDS ? "sweep" : "halo", t, k % BANDS);
}

/* One run; stores the median wall and CPU microseconds per task of the spawning calls. */
static void run(int workers, int replay, double *us, double *cpu_us)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = workers;
    parla_runtime_t *rt;
    OK(parla_runtime_create(&cfg, &rt));
    static band_t b[BANDS];
    make_bands(rt, b);
    parla_graph_t *g = NULL;
    if (replay) {
        OK(parla_graph_create(rt, "jacobi", &g));
        for (int k = 0; k < 2 * BANDS; k++) {
            char name[64];
            task_name(k, 0, name, sizeof name);
            size_t node;
            OK(parla_graph_add_task(g, name, empty_body, NULL, &node));
            parla_data_t *d[4];
            parla_access_mode_t m[4];
            int n = accesses(b, k, d, m);
            for (int i = 0; i < n; i++)
                OK(parla_graph_add_access(g, node, d[i], m[i]));
        }
    }
    double walls[ITERS], cpus[ITERS];
    for (int t = 0; t < ITERS; t++) {
        double w0 = wall(), c0 = thread_cpu();
        if (replay) {
            OK(parla_graph_replay(g, NULL, NULL));
        } else {
            for (int k = 0; k < 2 * BANDS; k++) {
                parla_task_t *task;
                char name[64];
                task_name(k, t, name, sizeof name);
                OK(parla_task_create(rt, empty_body, NULL, &task));
                OK(parla_task_set_name(task, name));
                parla_data_t *d[4];
                parla_access_mode_t m[4];
                int n = accesses(b, k, d, m);
                for (int i = 0; i < n; i++)
                    OK(parla_task_add_access(task, d[i], m[i]));
                OK(parla_task_submit(task));
                parla_task_release(task);
            }
        }
        walls[t] = (wall() - w0) / (2 * BANDS) * 1e6;
        cpus[t] = (thread_cpu() - c0) / (2 * BANDS) * 1e6;
    }
    OK(parla_runtime_wait_all(rt));
    if (g)
        OK(parla_graph_wait(g));
    parla_graph_release(g);
    free_bands(b);
    OK(parla_runtime_destroy(rt));
    *us = median(walls + 1, ITERS - 1);
    *cpu_us = median(cpus + 1, ITERS - 1);
}

int main(int argc, char **argv)
{
    struct bench_args a;
    bench_parse(argc, argv, &a);
    double us[2][64], cpu[2][64];
    int reps = a.reps > 64 ? 64 : a.reps;
    const char *names[2][2] = {{"nodata_respawn", "nodata_replay"}, {"jacobi_respawn", "jacobi_replay"}};
    for (with_data = 1; with_data >= 0; with_data--) {
        for (int r = 0; r < reps; r++)
            for (int mode = 0; mode < 2; mode++) /* interleaved: both see the same load */
                if (a.only == NULL || strcmp(a.only, names[with_data][mode]) == 0)
                    run(a.workers, mode, &us[mode][r], &cpu[mode][r]);
        for (int mode = 0; mode < 2; mode++)
            if (a.only == NULL || strcmp(a.only, names[with_data][mode]) == 0)
                printf("RESULT system=parla workload=%s workers=%d us_per_task=%.3f cpu_us_per_task=%.3f\n",
                       names[with_data][mode], a.workers, median(us[mode], reps), median(cpu[mode], reps));
    }
    return 0;
}
