/* cholesky_starpu.c: StarPU's tiled Cholesky (right-looking, lower), the C peer of examples/cholesky.py.
 *
 *   cholesky_starpu -n 8192 -b 512 -r 3 -blas /path/to/libscipy_openblas-XXXX.so [-check] [-noprio]
 *
 * The same algorithm and the same task priorities as examples/cholesky.py: for each panel k, POTRF(k,k),
 * TRSM(i,k), SYRK(i,i) and GEMM(i,j) with StarPU's implicit data dependencies (sequential consistency on
 * registered tiles). Tiles are separate column-major b x b blocks (the last ones may be smaller), registered
 * once before the timed region; the time covers submitting every task and starpu_task_wait_for_all.
 *
 * BLAS/LAPACK: the shared library named by -blas (or $CHOLESKY_BLAS_LIB) is opened with dlopen, so the C
 * peer runs the very OpenBLAS that the Python kernels call (SciPy's bundled libscipy_openblas: LP64, symbols
 * prefixed "scipy_"); a plain LP64 BLAS with unprefixed symbols (e.g. Debian's libopenblas.so.0) works too.
 * Its thread count is set to 1 (parallelism comes from StarPU's workers). The number of CPU workers is
 * StarPU's: $STARPU_NCPU, default all cores; the scheduler is $STARPU_SCHED (StarPU's default otherwise).
 *
 * Output: one line per run, "starpu n=... b=... seconds=... gflops=...", GFLOP/s counting n^3/3 flops; with
 * -check, the relative residual ||L L^T - A||_F / ||A||_F (exit status 1 when >= 1e-10).
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <starpu.h>

typedef void (*dpotrf_fn)(const char *uplo, const int *n, double *a, const int *lda, int *info);
typedef void (*dtrsm_fn)(const char *side, const char *uplo, const char *transa, const char *diag, const int *m,
                         const int *n, const double *alpha, const double *a, const int *lda, double *b,
                         const int *ldb);
typedef void (*dsyrk_fn)(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
                         const double *a, const int *lda, const double *beta, double *c, const int *ldc);
typedef void (*dgemm_fn)(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                         const double *alpha, const double *a, const int *lda, const double *b, const int *ldb,
                         const double *beta, double *c, const int *ldc);
typedef void (*set_threads_fn)(int n);

/* Resolved once in main() before any task runs, read-only afterwards. */
static dpotrf_fn p_dpotrf;
static dtrsm_fn p_dtrsm;
static dsyrk_fn p_dsyrk;
static dgemm_fn p_dgemm;
static int potrf_failed;

static void *lookup(void *lib, const char *name)
{
    char prefixed[64];
    snprintf(prefixed, sizeof prefixed, "scipy_%s", name);
    void *f = dlsym(lib, prefixed);
    return f ? f : dlsym(lib, name);
}

static const double ONE = 1.0, MINUS_ONE = -1.0;

static void potrf_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    double *a = (double *)STARPU_MATRIX_GET_PTR(buffers[0]);
    int n = (int)STARPU_MATRIX_GET_NX(buffers[0]);
    int ld = (int)STARPU_MATRIX_GET_LD(buffers[0]);
    int info = 0;
    p_dpotrf("L", &n, a, &ld, &info);
    if (info != 0)
        __atomic_store_n(&potrf_failed, info, __ATOMIC_RELAXED);
}

/* B := B L^-T with L (buffers[0]) lower triangular, B = buffers[1] (m x n). */
static void trsm_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    const double *l = (const double *)STARPU_MATRIX_GET_PTR(buffers[0]);
    int ldl = (int)STARPU_MATRIX_GET_LD(buffers[0]);
    double *b = (double *)STARPU_MATRIX_GET_PTR(buffers[1]);
    int m = (int)STARPU_MATRIX_GET_NX(buffers[1]);
    int n = (int)STARPU_MATRIX_GET_NY(buffers[1]);
    int ldb = (int)STARPU_MATRIX_GET_LD(buffers[1]);
    p_dtrsm("R", "L", "T", "N", &m, &n, &ONE, l, &ldl, b, &ldb);
}

/* C := C - A A^T (lower), A = buffers[0] (n x k), C = buffers[1]. */
static void syrk_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    const double *a = (const double *)STARPU_MATRIX_GET_PTR(buffers[0]);
    int n = (int)STARPU_MATRIX_GET_NX(buffers[0]);
    int k = (int)STARPU_MATRIX_GET_NY(buffers[0]);
    int lda = (int)STARPU_MATRIX_GET_LD(buffers[0]);
    double *c = (double *)STARPU_MATRIX_GET_PTR(buffers[1]);
    int ldc = (int)STARPU_MATRIX_GET_LD(buffers[1]);
    p_dsyrk("L", "N", &n, &k, &MINUS_ONE, a, &lda, &ONE, c, &ldc);
}

/* C := C - A B^T, A = buffers[0] (m x k), B = buffers[1] (n x k), C = buffers[2] (m x n). */
static void gemm_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    const double *a = (const double *)STARPU_MATRIX_GET_PTR(buffers[0]);
    int m = (int)STARPU_MATRIX_GET_NX(buffers[0]);
    int k = (int)STARPU_MATRIX_GET_NY(buffers[0]);
    int lda = (int)STARPU_MATRIX_GET_LD(buffers[0]);
    const double *b = (const double *)STARPU_MATRIX_GET_PTR(buffers[1]);
    int n = (int)STARPU_MATRIX_GET_NX(buffers[1]);
    int ldb = (int)STARPU_MATRIX_GET_LD(buffers[1]);
    double *c = (double *)STARPU_MATRIX_GET_PTR(buffers[2]);
    int ldc = (int)STARPU_MATRIX_GET_LD(buffers[2]);
    p_dgemm("N", "T", &m, &n, &k, &MINUS_ONE, a, &lda, b, &ldb, &ONE, c, &ldc);
}

static struct starpu_perfmodel potrf_model = {.type = STARPU_HISTORY_BASED, .symbol = "parla_chol_potrf"};
static struct starpu_perfmodel trsm_model = {.type = STARPU_HISTORY_BASED, .symbol = "parla_chol_trsm"};
static struct starpu_perfmodel syrk_model = {.type = STARPU_HISTORY_BASED, .symbol = "parla_chol_syrk"};
static struct starpu_perfmodel gemm_model = {.type = STARPU_HISTORY_BASED, .symbol = "parla_chol_gemm"};

static struct starpu_codelet potrf_cl = {
    .cpu_funcs = {potrf_cpu}, .nbuffers = 1, .modes = {STARPU_RW}, .model = &potrf_model, .name = "POTRF"};
static struct starpu_codelet trsm_cl = {
    .cpu_funcs = {trsm_cpu}, .nbuffers = 2, .modes = {STARPU_R, STARPU_RW}, .model = &trsm_model, .name = "TRSM"};
static struct starpu_codelet syrk_cl = {
    .cpu_funcs = {syrk_cpu}, .nbuffers = 2, .modes = {STARPU_R, STARPU_RW}, .model = &syrk_model, .name = "SYRK"};
static struct starpu_codelet gemm_cl = {
    .cpu_funcs = {gemm_cpu}, .nbuffers = 3, .modes = {STARPU_R, STARPU_R, STARPU_RW}, .model = &gemm_model,
    .name = "GEMM"};

/* The same three levels as examples/cholesky.py (_priorities). */
static int priority(int i, int j, int k, int noprio)
{
    int level;
    if (noprio)
        return STARPU_DEFAULT_PRIO;
    if (i == j && j == k)
        level = 1;
    else if (j == k)
        level = i == k + 1 ? 1 : 0;
    else if (j == k + 1)
        level = i == j ? 1 : 0;
    else
        level = -1;
    return level > 0 ? STARPU_MAX_PRIO : level == 0 ? STARPU_DEFAULT_PRIO : STARPU_MIN_PRIO;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A(r, c) of the n x n test matrix: (R + R^T)/2 + n I with R(r, c) uniform in [0, 1) from a hash of (r, c),
 * strictly diagonally dominant hence SPD (the same construction as examples/cholesky.py, other numbers). */
static double entry(int r, int c, int n)
{
    int lo = r < c ? r : c, hi = r < c ? c : r;
    uint64_t x = (uint64_t)lo * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)hi + 0x632BE59BD9B4E019ULL);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    double v = (double)(x >> 11) * (1.0 / 9007199254740992.0);
    return r == c ? v + n : v;
}

int main(int argc, char **argv)
{
    int n = 4096, b = 512, runs = 1, check = 0, noprio = 0;
    const char *blas = getenv("CHOLESKY_BLAS_LIB");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-b") && i + 1 < argc)
            b = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-blas") && i + 1 < argc)
            blas = argv[++i];
        else if (!strcmp(argv[i], "-check"))
            check = 1;
        else if (!strcmp(argv[i], "-noprio"))
            noprio = 1;
        else {
            fprintf(stderr, "usage: %s [-n N] [-b BLOCK] [-r RUNS] [-blas LIB] [-check] [-noprio]\n", argv[0]);
            return 2;
        }
    }
    if (n <= 0 || b <= 0 || runs <= 0) {
        fprintf(stderr, "cholesky_starpu: -n, -b and -r must be positive\n");
        return 2;
    }
    if (blas == NULL)
        blas = "libopenblas.so.0";
    void *lib = dlopen(blas, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "cholesky_starpu: cannot open BLAS %s: %s\n", blas, dlerror());
        return 2;
    }
    p_dpotrf = (dpotrf_fn)lookup(lib, "dpotrf_");
    p_dtrsm = (dtrsm_fn)lookup(lib, "dtrsm_");
    p_dsyrk = (dsyrk_fn)lookup(lib, "dsyrk_");
    p_dgemm = (dgemm_fn)lookup(lib, "dgemm_");
    if (!p_dpotrf || !p_dtrsm || !p_dsyrk || !p_dgemm) {
        fprintf(stderr, "cholesky_starpu: %s lacks dpotrf_/dtrsm_/dsyrk_/dgemm_\n", blas);
        return 2;
    }
    set_threads_fn set_threads = (set_threads_fn)dlsym(lib, "scipy_openblas_set_num_threads");
    if (set_threads == NULL)
        set_threads = (set_threads_fn)dlsym(lib, "openblas_set_num_threads");
    if (set_threads)
        set_threads(1);

    if (starpu_init(NULL) != 0) {
        fprintf(stderr, "cholesky_starpu: starpu_init failed\n");
        return 2;
    }
    int nt = (n + b - 1) / b;
    double **tile = calloc((size_t)nt * nt, sizeof *tile);
    starpu_data_handle_t *h = calloc((size_t)nt * nt, sizeof *h);
    int status = 0;
    for (int run = 0; run < runs && status == 0; run++) {
        /* Fill and register the lower tiles (column-major, ld = rows of the tile). */
        for (int i = 0; i < nt; i++) {
            for (int j = 0; j <= i; j++) {
                int r0 = i * b, c0 = j * b;
                int rows = (i == nt - 1) ? n - r0 : b, cols = (j == nt - 1) ? n - c0 : b;
                double *t = tile[i * nt + j];
                if (t == NULL) {
                    t = tile[i * nt + j] = malloc(sizeof(double) * (size_t)rows * cols);
                    if (t == NULL) {
                        fprintf(stderr, "cholesky_starpu: out of memory\n");
                        return 2;
                    }
                }
                for (int c = 0; c < cols; c++)
                    for (int r = 0; r < rows; r++)
                        t[(size_t)c * rows + r] = entry(r0 + r, c0 + c, n);
                starpu_matrix_data_register(&h[i * nt + j], STARPU_MAIN_RAM, (uintptr_t)t, (uint32_t)rows,
                                            (uint32_t)rows, (uint32_t)cols, sizeof(double));
            }
        }
        double t0 = now();
        for (int k = 0; k < nt && status == 0; k++) {
            int rc = starpu_task_insert(&potrf_cl, STARPU_RW, h[k * nt + k], STARPU_PRIORITY, priority(k, k, k, noprio),
                                        0);
            for (int i = k + 1; i < nt && rc == 0; i++)
                rc = starpu_task_insert(&trsm_cl, STARPU_R, h[k * nt + k], STARPU_RW, h[i * nt + k], STARPU_PRIORITY,
                                        priority(i, k, k, noprio), 0);
            for (int i = k + 1; i < nt && rc == 0; i++) {
                rc = starpu_task_insert(&syrk_cl, STARPU_R, h[i * nt + k], STARPU_RW, h[i * nt + i], STARPU_PRIORITY,
                                        priority(i, i, k, noprio), 0);
                for (int j = k + 1; j < i && rc == 0; j++)
                    rc = starpu_task_insert(&gemm_cl, STARPU_R, h[i * nt + k], STARPU_R, h[j * nt + k], STARPU_RW,
                                            h[i * nt + j], STARPU_PRIORITY, priority(i, j, k, noprio), 0);
            }
            if (rc != 0) {
                fprintf(stderr, "cholesky_starpu: starpu_task_insert failed (%d)\n", rc);
                status = 2;
            }
        }
        starpu_task_wait_for_all();
        double seconds = now() - t0;
        for (int i = 0; i < nt; i++)
            for (int j = 0; j <= i; j++)
                starpu_data_unregister(h[i * nt + j]);
        if (potrf_failed) {
            fprintf(stderr, "cholesky_starpu: dpotrf failed (info %d)\n", potrf_failed);
            status = 1;
        }
        printf("starpu n=%d b=%d seconds=%.6f gflops=%.3f\n", n, b, seconds,
               (double)n * n * n / 3.0 / seconds / 1e9);
        fflush(stdout);
    }
    starpu_shutdown();

    if (check && status == 0) {
        /* R = L L^T - A over the lower triangle, tile by tile, with the same BLAS (now with all threads). */
        if (set_threads)
            set_threads((int)sysconf(_SC_NPROCESSORS_ONLN));
        double num = 0.0, den = 0.0;
        double *r = malloc(sizeof(double) * (size_t)b * b);
        for (int i = 0; i < nt; i++) {
            for (int j = 0; j <= i; j++) {
                int r0 = i * b, c0 = j * b;
                int rows = (i == nt - 1) ? n - r0 : b, cols = (j == nt - 1) ? n - c0 : b;
                for (int c = 0; c < cols; c++)
                    for (int q = 0; q < rows; q++)
                        r[(size_t)c * rows + q] = -entry(r0 + q, c0 + c, n);
                for (int k = 0; k <= j; k++) {
                    int kk = (k == nt - 1) ? n - k * b : b;
                    double *lik = tile[i * nt + k], *ljk = tile[j * nt + k];
                    if (k == i || k == j) {
                        /* Diagonal tiles hold L in their lower triangle only: zero a copy's upper part. */
                        double *tmp_i = malloc(sizeof(double) * (size_t)rows * kk);
                        double *tmp_j = malloc(sizeof(double) * (size_t)cols * kk);
                        memcpy(tmp_i, lik, sizeof(double) * (size_t)rows * kk);
                        memcpy(tmp_j, ljk, sizeof(double) * (size_t)cols * kk);
                        if (k == i)
                            for (int c = 0; c < kk; c++)
                                for (int q = 0; q < c && q < rows; q++)
                                    tmp_i[(size_t)c * rows + q] = 0.0;
                        if (k == j)
                            for (int c = 0; c < kk; c++)
                                for (int q = 0; q < c && q < cols; q++)
                                    tmp_j[(size_t)c * cols + q] = 0.0;
                        p_dgemm("N", "T", &rows, &cols, &kk, &ONE, tmp_i, &rows, tmp_j, &cols, &ONE, r, &rows);
                        free(tmp_i);
                        free(tmp_j);
                    } else {
                        p_dgemm("N", "T", &rows, &cols, &kk, &ONE, lik, &rows, ljk, &cols, &ONE, r, &rows);
                    }
                }
                double w = (i == j) ? 1.0 : 2.0; /* off-diagonal tiles count twice (symmetry) */
                for (int c = 0; c < cols; c++)
                    for (int q = 0; q < rows; q++) {
                        if (i == j && q < c)
                            continue; /* strict upper part of a diagonal tile: mirror of the lower */
                        double wq = (i == j && q > c) ? 2.0 : w;
                        double e = entry(r0 + q, c0 + c, n);
                        num += wq * r[(size_t)c * rows + q] * r[(size_t)c * rows + q];
                        den += wq * e * e;
                    }
            }
        }
        free(r);
        double res = sqrt(num / den);
        printf("starpu relative residual %.3e\n", res);
        if (!(res < 1e-10))
            status = 1;
    }
    for (int i = 0; i < nt * nt; i++)
        free(tile[i]);
    free(tile);
    free(h);
    dlclose(lib);
    return status;
}
