/* ScaLAPACK's distributed Cholesky (pdpotrf, lower) on a P x Q BLACS grid: the peer of the distributed
 * Cholesky of parla.mpi in benchmarks/mpi/bench_cholesky_mpi.py.
 *
 *   mpicc -O2 pdpotrf.c -o pdpotrf $(pkg-config --libs scalapack-openmpi) -llapack -lblas -lm
 *   mpirun -n 4 ./pdpotrf N NB P Q
 *
 * The n x n matrix is distributed 2-D block-cyclically in NB x NB blocks over a row-major P x Q grid
 * (Cblacs_gridinit "Row": rank p*Q + q holds block (i, j) with i % P == p and j % Q == q), the same layout as
 * parla.mpi.BlockCyclic(P, Q) with one tile per block. Entries: a(i, j) = u(max(i,j), min(i,j)) with u a
 * hash in [0, 1), plus n on the diagonal: symmetric and strictly diagonally dominant, hence SPD. Rank 0
 * prints one line: "pdpotrf n=N nb=NB grid=PxQ seconds=S gflops=G info=I" (seconds: the pdpotrf call
 * alone, between barriers; n^3/3 flops). Exit status 1 on bad arguments or info != 0. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void Cblacs_pinfo(int *rank, int *nprocs);
void Cblacs_get(int context, int what, int *value);
void Cblacs_gridinit(int *context, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int context, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int context);
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb, const int *irsrc,
               const int *icsrc, const int *ictxt, const int *lld, int *info);
void pdpotrf_(const char *uplo, const int *n, double *a, const int *ia, const int *ja, const int *desca, int *info);

static double entry(int64_t i, int64_t j, int64_t n)
{
    if (i < j) {
        int64_t t = i;
        i = j;
        j = t;
    }
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ ((uint64_t)j + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 29;
    double u = (double)(h >> 11) / 9007199254740992.0;
    return i == j ? u + (double)n : u;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 5) {
        if (rank == 0)
            fprintf(stderr, "usage: %s N NB P Q\n", argv[0]);
        MPI_Finalize();
        return 1;
    }
    int n = atoi(argv[1]), nb = atoi(argv[2]), P = atoi(argv[3]), Q = atoi(argv[4]);
    if (n <= 0 || nb <= 0 || P <= 0 || Q <= 0 || P * Q != size) {
        if (rank == 0)
            fprintf(stderr, "pdpotrf: need N, NB > 0 and P * Q == %d ranks (got %d x %d)\n", size, P, Q);
        MPI_Finalize();
        return 1;
    }
    int ctx, myrow, mycol, nprow, npcol, zero = 0, one = 1, info = 0;
    Cblacs_get(-1, 0, &ctx);
    Cblacs_gridinit(&ctx, "Row", P, Q);
    Cblacs_gridinfo(ctx, &nprow, &npcol, &myrow, &mycol);
    int mloc = numroc_(&n, &nb, &myrow, &zero, &nprow);
    int nloc = numroc_(&n, &nb, &mycol, &zero, &npcol);
    int lld = mloc > 1 ? mloc : 1;
    int desc[9];
    descinit_(desc, &n, &n, &nb, &nb, &zero, &zero, &ctx, &lld, &info);
    double *a = malloc(sizeof(double) * (size_t)lld * (size_t)(nloc > 0 ? nloc : 1));
    if (a == NULL) {
        fprintf(stderr, "pdpotrf: rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* Local (li, lj) holds global (i, j): block-cyclic index maps. */
    for (int lj = 0; lj < nloc; lj++) {
        int64_t j = ((int64_t)(lj / nb) * npcol + mycol) * nb + lj % nb;
        for (int li = 0; li < mloc; li++) {
            int64_t i = ((int64_t)(li / nb) * nprow + myrow) * nb + li % nb;
            a[(size_t)lj * (size_t)lld + (size_t)li] = entry(i, j, n);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    pdpotrf_("L", &n, a, &one, &one, desc, &info);
    MPI_Barrier(MPI_COMM_WORLD);
    double seconds = MPI_Wtime() - t0;
    if (rank == 0)
        printf("pdpotrf n=%d nb=%d grid=%dx%d seconds=%.4f gflops=%.2f info=%d\n", n, nb, P, Q, seconds,
               (double)n * n * n / 3.0 / seconds / 1e9, info);
    free(a);
    Cblacs_gridexit(ctx);
    MPI_Finalize();
    return info != 0;
}
