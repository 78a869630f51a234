/*
 * bench_starpu: the StarPU 1.3 peer of bench_tasks.c: the same workloads
 * (independent, chain, waves, busy100us, busy1ms), timed the same way
 * (create + submit + run until starpu_task_wait_for_all), the same RESULT
 * lines with system=starpu and the scheduler name.
 *
 * Tasks that others depend on are created with destroy = 0 (StarPU requires a
 * dependency to stay valid until the dependent's deps are declared) and are
 * destroyed after wait_for_all, inside the timed region, since libparla frees
 * its tasks within its own timing. Independent tasks use StarPU's default
 * automatic destruction.
 *
 * Environment: STARPU_NCPU defaults to --workers, STARPU_NCUDA=0,
 * STARPU_NOPENCL=0, STARPU_SILENT=1 when not set; STARPU_SCHED picks the
 * scheduler (the driver runs the default one and eager).
 */
#include <starpu.h>
#include <stdint.h>

#include "bench_common.h"

static void empty_fn(void *buffers[], void *cl_arg)
{
    (void)buffers;
    (void)cl_arg;
}

static void busy_fn(void *buffers[], void *cl_arg)
{
    (void)buffers;
    bench_spin(*(const double *)cl_arg);
}

static struct starpu_codelet cl_empty = {
    .cpu_funcs = {empty_fn},
    .nbuffers = 0,
    .name = "empty",
};

static struct starpu_codelet cl_busy = {
    .cpu_funcs = {busy_fn},
    .nbuffers = 0,
    .name = "busy",
};

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "bench_starpu: %s failed: %d\n", what, rc);
        exit(1);
    }
}

static double run_independent(long n, struct starpu_codelet *cl, void *arg)
{
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        struct starpu_task *t = starpu_task_create();
        t->cl = cl;
        t->cl_arg = arg;
        check(starpu_task_submit(t), "starpu_task_submit");
    }
    starpu_task_wait_for_all();
    return bench_now() - t0;
}

static struct starpu_task **keep;

static double run_chain(long n)
{
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        struct starpu_task *t = starpu_task_create();
        t->cl = &cl_empty;
        t->destroy = 0;
        if (i > 0)
            starpu_task_declare_deps_array(t, 1, &keep[i - 1]);
        keep[i] = t;
        check(starpu_task_submit(t), "starpu_task_submit");
    }
    starpu_task_wait_for_all();
    for (long i = 0; i < n; i++)
        starpu_task_destroy(keep[i]);
    return bench_now() - t0;
}

static double run_waves(int waves, int width)
{
    double t0 = bench_now();
    long k = 0;
    struct starpu_task *barrier = NULL;
    struct starpu_task **wave = malloc((size_t)width * sizeof *wave);
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < width; i++) {
            struct starpu_task *t = starpu_task_create();
            t->cl = &cl_empty;
            t->destroy = 0;
            if (barrier)
                starpu_task_declare_deps_array(t, 1, &barrier);
            wave[i] = t;
            keep[k++] = t;
            check(starpu_task_submit(t), "starpu_task_submit");
        }
        struct starpu_task *b = starpu_task_create();
        b->cl = &cl_empty;
        b->destroy = 0;
        starpu_task_declare_deps_array(b, (unsigned)width, wave);
        keep[k++] = b;
        check(starpu_task_submit(b), "starpu_task_submit");
        barrier = b;
    }
    starpu_task_wait_for_all();
    for (long i = 0; i < k; i++)
        starpu_task_destroy(keep[i]);
    free(wave);
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    struct bench_args a;
    bench_parse(argc, argv, &a);
    char ncpu[16];
    snprintf(ncpu, sizeof ncpu, "%d", a.workers);
    setenv("STARPU_NCPU", ncpu, 0);
    setenv("STARPU_NCUDA", "0", 0);
    setenv("STARPU_NOPENCL", "0", 0);
    setenv("STARPU_SILENT", "1", 0);
    const char *sched = getenv("STARPU_SCHED");
    if (sched == NULL || *sched == '\0')
        sched = "default";
    int workers = atoi(getenv("STARPU_NCPU"));

    check(starpu_init(NULL), "starpu_init");
    if ((int)starpu_cpu_worker_get_count() != workers)
        fprintf(stderr, "bench_starpu: warning: %u CPU workers, asked for %d\n",
                starpu_cpu_worker_get_count(), workers);
    workers = (int)starpu_cpu_worker_get_count();

    double *v = malloc((size_t)a.reps * sizeof *v);
    keep = malloc((size_t)(N_CHAIN > N_WAVES * (WAVE_WIDTH + 1) ? N_CHAIN : N_WAVES * (WAVE_WIDTH + 1)) *
                  sizeof *keep);

    run_independent(20000, &cl_empty, NULL); /* warm-up */

    if (bench_want(&a, "independent")) {
        for (int r = 0; r < a.reps; r++)
            v[r] = run_independent(N_INDEPENDENT, &cl_empty, NULL);
        printf("RESULT system=starpu sched=%s workload=independent workers=%d us_per_task=%.3f\n", sched,
               workers, bench_median(v, a.reps) * 1e6 / N_INDEPENDENT);
        fflush(stdout);
    }
    if (bench_want(&a, "chain")) {
        for (int r = 0; r < a.reps; r++)
            v[r] = run_chain(N_CHAIN);
        printf("RESULT system=starpu sched=%s workload=chain workers=%d us_per_task=%.3f\n", sched, workers,
               bench_median(v, a.reps) * 1e6 / N_CHAIN);
        fflush(stdout);
    }
    if (bench_want(&a, "waves")) {
        long ntasks = (long)N_WAVES * (WAVE_WIDTH + 1);
        for (int r = 0; r < a.reps; r++)
            v[r] = run_waves(N_WAVES, WAVE_WIDTH);
        printf("RESULT system=starpu sched=%s workload=waves workers=%d us_per_task=%.3f\n", sched, workers,
               bench_median(v, a.reps) * 1e6 / (double)ntasks);
        fflush(stdout);
    }
    for (int b = 0; b < 2; b++) {
        const struct busy_spec *s = &busy_specs[b];
        if (!bench_want(&a, s->name))
            continue;
        long n = (long)s->per_worker * workers;
        double secs = s->seconds;
        for (int r = 0; r < a.reps; r++)
            v[r] = run_independent(n, &cl_busy, &secs);
        double med = bench_median(v, a.reps);
        double ideal = (double)n * s->seconds / workers;
        printf("RESULT system=starpu sched=%s workload=%s workers=%d us_per_task=%.3f efficiency=%.3f\n",
               sched, s->name, workers, med * 1e6 / (double)n, ideal / med);
        fflush(stdout);
    }
    starpu_shutdown();
    free(keep);
    free(v);
    return 0;
}
