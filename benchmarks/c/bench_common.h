/*
 * bench_common.h: what bench_tasks.c and bench_starpu.c share: argument
 * parsing, the clock, the busy-work loop, medians and the RESULT line format,
 * so both systems are measured the same way.
 */
#ifndef PARLA_BENCH_COMMON_H
#define PARLA_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Workload sizes, identical for both systems. */
#define N_INDEPENDENT 100000
#define N_CHAIN 100000
#define N_WAVES 1000
#define WAVE_WIDTH 100

struct bench_args {
    int reps;    /* repetitions; the median is reported */
    int workers; /* worker threads */
    const char *only; /* run only this workload (NULL: all) */
};

static inline void bench_parse(int argc, char **argv, struct bench_args *a)
{
    a->reps = 5;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    a->workers = n > 0 ? (int)n : 1;
    a->only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            a->reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            a->workers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            a->only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--reps N] [--workers W] [--only WORKLOAD]\n", argv[0]);
            exit(2);
        }
    }
    if (a->reps < 1)
        a->reps = 1;
    if (a->workers < 1)
        a->workers = 1;
}

static inline int bench_want(const struct bench_args *a, const char *w)
{
    return a->only == NULL || strcmp(a->only, w) == 0;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Busy work: spins on the clock for the given number of seconds. */
static inline void bench_spin(double seconds)
{
    double end = bench_now() + seconds;
    while (bench_now() < end) {
    }
}

static int bench_cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Busy-task sizes for workload (d): task length and count per worker, so the
 * ideal time is about 0.2 s. */
struct busy_spec {
    const char *name;
    double seconds;
    int per_worker;
};

static const struct busy_spec busy_specs[2] = {
    {"busy100us", 100e-6, 2000},
    {"busy1ms", 1e-3, 200},
};

#endif
