/*
 * bench_tasks: task overheads of libparla, side by side with bench_starpu.c
 * (same workloads, same output format; benchmarks/run_c.py runs both).
 *
 * Workloads (time = create + submit + run until parla_runtime_wait_all):
 *   independent  100,000 independent empty tasks
 *   chain        a chain of 100,000 empty tasks
 *   waves        1,000 waves of 100 empty tasks, each wave joined by a barrier
 *                task that the next wave depends on
 *   busy100us, busy1ms  independent tasks of 100 us / 1 ms of busy work:
 *                efficiency = ideal time (work / workers) / measured time
 * and, for libparla only:
 *   memory       peak RSS growth per pending task, for 10^6 submitted tasks
 *                that all wait on one not yet submitted gate task
 *   graph1m      a 10^6-task random graph (each task depends on up to two of
 *                the 64 tasks before it): create + run time in seconds
 *
 * Output: one line per workload, e.g.
 *   RESULT system=parla workload=independent workers=2 us_per_task=0.512
 * with the median over --reps repetitions (default 5).
 */
#include <stdint.h>

#include "bench_common.h"
#include "parla.h"

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_tasks: %s failed: %s: %s\n", what, parla_strerror(rc),
            parla_last_error_message());
    exit(1);
}

#define TRY(expr)                  \
    do {                           \
        int rc_ = (expr);          \
        if (rc_ != 0)              \
            die(#expr, rc_);       \
    } while (0)

static int empty_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return 0;
}

static int busy_body(parla_task_t *task, void *arg)
{
    (void)task;
    bench_spin(*(const double *)arg);
    return 0;
}

static double run_independent(parla_runtime_t *rt, long n, parla_task_fn fn, void *arg)
{
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        parla_task_t *t;
        TRY(parla_task_create(rt, fn, arg, &t));
        TRY(parla_task_submit(t));
        parla_task_release(t);
    }
    TRY(parla_runtime_wait_all(rt));
    return bench_now() - t0;
}

static double run_chain(parla_runtime_t *rt, long n)
{
    double t0 = bench_now();
    parla_task_t *prev = NULL;
    for (long i = 0; i < n; i++) {
        parla_task_t *t;
        TRY(parla_task_create(rt, empty_body, NULL, &t));
        if (prev) {
            TRY(parla_task_add_dependency(t, prev));
            parla_task_release(prev);
        }
        TRY(parla_task_submit(t));
        prev = t;
    }
    TRY(parla_runtime_wait_all(rt));
    parla_task_release(prev);
    return bench_now() - t0;
}

static double run_waves(parla_runtime_t *rt, int waves, int width)
{
    double t0 = bench_now();
    parla_task_t *barrier = NULL;
    for (int w = 0; w < waves; w++) {
        parla_task_t *next;
        TRY(parla_task_create(rt, empty_body, NULL, &next));
        for (int i = 0; i < width; i++) {
            parla_task_t *t;
            TRY(parla_task_create(rt, empty_body, NULL, &t));
            if (barrier)
                TRY(parla_task_add_dependency(t, barrier));
            TRY(parla_task_add_dependency(next, t));
            TRY(parla_task_submit(t));
            parla_task_release(t);
        }
        TRY(parla_task_submit(next));
        if (barrier)
            parla_task_release(barrier);
        barrier = next;
    }
    TRY(parla_runtime_wait_all(rt));
    parla_task_release(barrier);
    return bench_now() - t0;
}

/* Reads a "VmXXX:  1234 kB" field of /proc/self/status, in bytes. */
static long long proc_status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long long v = -1;
    size_t len = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            v = atoll(line + len + 1) * 1024;
            break;
        }
    }
    fclose(f);
    return v;
}

static void reset_peak_rss(void)
{
    /* Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS. */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static void memory_bench(int workers)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = workers;
    parla_runtime_t *rt;
    TRY(parla_runtime_create(&cfg, &rt));
    const long n = 1000000;
    /* Warm up the allocator with a small batch, so the measurement is of the
     * tasks, not of the first arena. */
    run_independent(rt, 10000, empty_body, NULL);
    reset_peak_rss();
    long long hwm0 = proc_status_bytes("VmHWM");
    long long rss0 = proc_status_bytes("VmRSS");
    parla_task_t *gate;
    TRY(parla_task_create(rt, empty_body, NULL, &gate));
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        parla_task_t *t;
        TRY(parla_task_create(rt, empty_body, NULL, &t));
        TRY(parla_task_add_dependency(t, gate));
        TRY(parla_task_submit(t));
        parla_task_release(t);
    }
    double t_create = bench_now() - t0;
    long long hwm1 = proc_status_bytes("VmHWM");
    long long rss1 = proc_status_bytes("VmRSS");
    t0 = bench_now();
    TRY(parla_task_submit(gate));
    TRY(parla_runtime_wait_all(rt));
    double t_run = bench_now() - t0;
    parla_task_release(gate);
    TRY(parla_runtime_destroy(rt));
    double per = hwm0 > 0 && hwm1 > 0 ? (double)(hwm1 - hwm0) / (double)n : -1.0;
    double per_rss = rss0 > 0 && rss1 > 0 ? (double)(rss1 - rss0) / (double)n : -1.0;
    printf("RESULT system=parla workload=memory workers=%d tasks=%ld bytes_per_task=%.1f "
           "rss_bytes_per_task=%.1f create_s=%.3f release_run_s=%.3f\n",
           workers, n, per, per_rss, t_create, t_run);
    fflush(stdout);
}

static uint64_t rng = 88172645463325252ull;

static uint64_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double run_graph(parla_runtime_t *rt, long n)
{
    /* Each task depends on up to two random tasks among the 64 before it;
     * handles of the last 64 are kept in a ring. */
    enum { WINDOW = 64 };
    parla_task_t *ring[WINDOW] = {0};
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        parla_task_t *t;
        TRY(parla_task_create(rt, empty_body, NULL, &t));
        long avail = i < WINDOW ? i : WINDOW;
        int ndeps = avail ? (int)(xorshift() % 3) : 0;
        long d0 = -1;
        for (int k = 0; k < ndeps; k++) {
            long d = i - 1 - (long)(xorshift() % (uint64_t)avail);
            if (d == d0)
                continue;
            d0 = d;
            TRY(parla_task_add_dependency(t, ring[d % WINDOW]));
        }
        TRY(parla_task_submit(t));
        if (ring[i % WINDOW])
            parla_task_release(ring[i % WINDOW]);
        ring[i % WINDOW] = t;
    }
    TRY(parla_runtime_wait_all(rt));
    double dt = bench_now() - t0;
    for (int k = 0; k < WINDOW; k++)
        if (ring[k])
            parla_task_release(ring[k]);
    return dt;
}

int main(int argc, char **argv)
{
    struct bench_args a;
    bench_parse(argc, argv, &a);
    double *v = malloc((size_t)a.reps * sizeof *v);

    /* Memory first, in a fresh process, before other workloads raise the
     * peak. */
    if (bench_want(&a, "memory"))
        memory_bench(a.workers);

    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = a.workers;
    parla_runtime_t *rt;
    TRY(parla_runtime_create(&cfg, &rt));

    /* Warm-up: threads started, allocator primed. */
    run_independent(rt, 20000, empty_body, NULL);

    if (bench_want(&a, "independent")) {
        for (int r = 0; r < a.reps; r++)
            v[r] = run_independent(rt, N_INDEPENDENT, empty_body, NULL);
        printf("RESULT system=parla workload=independent workers=%d us_per_task=%.3f\n", a.workers,
               bench_median(v, a.reps) * 1e6 / N_INDEPENDENT);
        fflush(stdout);
    }
    if (bench_want(&a, "chain")) {
        for (int r = 0; r < a.reps; r++)
            v[r] = run_chain(rt, N_CHAIN);
        printf("RESULT system=parla workload=chain workers=%d us_per_task=%.3f\n", a.workers,
               bench_median(v, a.reps) * 1e6 / N_CHAIN);
        fflush(stdout);
    }
    if (bench_want(&a, "waves")) {
        long ntasks = (long)N_WAVES * (WAVE_WIDTH + 1);
        for (int r = 0; r < a.reps; r++)
            v[r] = run_waves(rt, N_WAVES, WAVE_WIDTH);
        printf("RESULT system=parla workload=waves workers=%d us_per_task=%.3f\n", a.workers,
               bench_median(v, a.reps) * 1e6 / (double)ntasks);
        fflush(stdout);
    }
    for (int b = 0; b < 2; b++) {
        const struct busy_spec *s = &busy_specs[b];
        if (!bench_want(&a, s->name))
            continue;
        long n = (long)s->per_worker * a.workers;
        double secs = s->seconds;
        for (int r = 0; r < a.reps; r++)
            v[r] = run_independent(rt, n, busy_body, &secs);
        double med = bench_median(v, a.reps);
        double ideal = (double)n * s->seconds / a.workers;
        printf("RESULT system=parla workload=%s workers=%d us_per_task=%.3f efficiency=%.3f\n", s->name,
               a.workers, med * 1e6 / (double)n, ideal / med);
        fflush(stdout);
    }
    if (bench_want(&a, "graph1m")) {
        int reps = a.reps < 3 ? a.reps : 3;
        for (int r = 0; r < reps; r++)
            v[r] = run_graph(rt, 1000000);
        double med = bench_median(v, reps);
        printf("RESULT system=parla workload=graph1m workers=%d seconds=%.3f us_per_task=%.3f\n",
               a.workers, med, med);
        fflush(stdout);
    }
    TRY(parla_runtime_destroy(rt));
    free(v);
    return 0;
}
