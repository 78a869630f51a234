/*
 * bench_cuda_copy.c: copy bandwidth of the runtime's CUDA data path against the driver's own calls.
 *   bench_cuda_copy [MiB] [reps]     (default 64 MiB, 20 repetitions)
 * Prints, in GB/s (1e9 bytes/s):
 *   - host to device: cuMemcpyHtoD from pinned memory (cuMemHostAlloc) and from pageable memory (malloc),
 *     and the runtime's copies (a GPU task reading a PArray-like data object whose host copy a CPU task
 *     rewrote before each read: one host-to-device copy per round, through the pinned, pooled path);
 *   - with two or more GPUs, GPU to GPU: cuMemcpyPeer (peer access enabled when the pair allows it) and
 *     the runtime's copies (tasks alternately writing on gpu(0) and reading on gpu(1)).
 * The driver is libcuda.so.1, or PARLA_CUDA_DRIVER (the test double runs it too; its figures mean
 * nothing). Exits 0 with "no CUDA GPU" when there is none (tools/gpu-check.sh runs it on GPU machines).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parla.h"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static struct {
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(int *, int);
    CUresult (*cuDevicePrimaryCtxRetain)(void **, int);
    CUresult (*cuDevicePrimaryCtxRelease)(int);
    CUresult (*cuCtxSetCurrent)(void *);
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree)(CUdeviceptr);
    CUresult (*cuMemHostAlloc)(void **, size_t, unsigned);
    CUresult (*cuMemFreeHost)(void *);
    CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*cuMemcpyPeer)(CUdeviceptr, void *, CUdeviceptr, void *, size_t);
    CUresult (*cuCtxEnablePeerAccess)(void *, unsigned);
    CUresult (*cuDeviceCanAccessPeer)(int *, int, int);
    CUresult (*cuCtxSynchronize)(void);
} cu;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define OK(call)                                                                                               \
    do {                                                                                                       \
        int rc_ = (call);                                                                                      \
        if (rc_) {                                                                                             \
            fprintf(stderr, "bench_cuda_copy: %s failed (%d): %s\n", #call, rc_, parla_last_error_message());   \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static int load(void)
{
    const char *path = getenv("PARLA_CUDA_DRIVER");
    void *lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return 0;
#define SYM(f, n) (*(void **)&cu.f = dlsym(lib, n))
    SYM(cuInit, "cuInit");
    SYM(cuDeviceGetCount, "cuDeviceGetCount");
    SYM(cuDeviceGet, "cuDeviceGet");
    SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    SYM(cuCtxSetCurrent, "cuCtxSetCurrent");
    SYM(cuMemAlloc, "cuMemAlloc_v2");
    SYM(cuMemFree, "cuMemFree_v2");
    SYM(cuMemHostAlloc, "cuMemHostAlloc");
    SYM(cuMemFreeHost, "cuMemFreeHost");
    SYM(cuMemcpyHtoD, "cuMemcpyHtoD_v2");
    SYM(cuMemcpyPeer, "cuMemcpyPeer");
    SYM(cuCtxEnablePeerAccess, "cuCtxEnablePeerAccess");
    SYM(cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer");
    SYM(cuCtxSynchronize, "cuCtxSynchronize");
#undef SYM
    int n = 0;
    if (!cu.cuInit || !cu.cuDeviceGetCount || !cu.cuDeviceGet || !cu.cuDevicePrimaryCtxRetain ||
        !cu.cuDevicePrimaryCtxRelease || !cu.cuCtxSetCurrent || !cu.cuMemAlloc || !cu.cuMemFree ||
        !cu.cuMemHostAlloc || !cu.cuMemFreeHost || !cu.cuMemcpyHtoD || !cu.cuMemcpyPeer ||
        !cu.cuCtxEnablePeerAccess || !cu.cuDeviceCanAccessPeer || !cu.cuCtxSynchronize) {
        fprintf(stderr, "bench_cuda_copy: the driver lacks an entry point it needs\n");
        return 0;
    }
    if (cu.cuInit(0) || cu.cuDeviceGetCount(&n))
        return 0;
    return n;
}

/* GB/s of cuMemcpyHtoD from src (nbytes, reps times) into memory of GPU ordinal 0. */
static double raw_htod(void *src, size_t nbytes, int reps)
{
    CUdeviceptr d = 0;
    OK(cu.cuMemAlloc(&d, nbytes));
    OK(cu.cuMemcpyHtoD(d, src, nbytes)); /* warm */
    double t0 = now();
    for (int r = 0; r < reps; r++)
        OK(cu.cuMemcpyHtoD(d, src, nbytes));
    double t = now() - t0;
    OK(cu.cuMemFree(d));
    return (double)nbytes * reps / t / 1e9;
}

static int nop(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 0;
}

static void task(parla_runtime_t *rt, int device, parla_data_t *d, parla_access_mode_t mode)
{
    parla_task_t *t;
    OK(parla_task_create(rt, nop, NULL, &t));
    if (device != 0)
        OK(parla_task_add_placement(t, &device, 1, 0.0, 0));
    OK(parla_task_add_access(t, d, mode));
    OK(parla_task_submit(t));
    parla_task_release(t);
}

/* GB/s of the runtime's copies: round r writes the data on device `writer` and reads it on `reader`
 * (one copy each round), after a warm-up round. */
static double runtime_copies(parla_runtime_t *rt, size_t nbytes, int reps, int writer, int reader)
{
    void *host = calloc(1, nbytes);
    parla_data_t *d;
    OK(parla_data_create(rt, nbytes, host, &d));
    double t0 = 0;
    for (int r = 0; r <= reps; r++) {
        if (r == 1) {
            OK(parla_runtime_wait_all(rt));
            t0 = now();
        }
        task(rt, writer, d, PARLA_WRITE);
        task(rt, reader, d, PARLA_READ);
    }
    OK(parla_runtime_wait_all(rt));
    double t = now() - t0;
    parla_data_release(d);
    OK(parla_runtime_wait_all(rt));
    free(host);
    return (double)nbytes * reps / t / 1e9;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64;
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    if (mib == 0 || reps <= 0) {
        fprintf(stderr, "usage: bench_cuda_copy [MiB > 0] [reps > 0]\n");
        return 2;
    }
    size_t nbytes = mib << 20;
    int n = load();
    if (n == 0) {
        printf("bench_cuda_copy: no CUDA GPU (no driver, or no device): skipped\n");
        return 0;
    }
    int dev0;
    void *ctx0 = NULL;
    OK(cu.cuDeviceGet(&dev0, 0));
    OK(cu.cuDevicePrimaryCtxRetain(&ctx0, dev0));
    OK(cu.cuCtxSetCurrent(ctx0));
    void *pinned = NULL;
    OK(cu.cuMemHostAlloc(&pinned, nbytes, 0));
    memset(pinned, 1, nbytes);
    void *pageable = malloc(nbytes);
    memset(pageable, 1, nbytes);
    printf("host to device, %zu MiB x %d:\n", mib, reps);
    printf("  cuMemcpyHtoD from pinned memory:   %8.2f GB/s\n", raw_htod(pinned, nbytes, reps));
    printf("  cuMemcpyHtoD from pageable memory: %8.2f GB/s\n", raw_htod(pageable, nbytes, reps));
    OK(cu.cuMemFreeHost(pinned));
    free(pageable);

    double peer_raw = 0;
    int can = 0;
    if (n >= 2) {
        int dev1;
        void *ctx1 = NULL;
        OK(cu.cuDeviceGet(&dev1, 1));
        OK(cu.cuDevicePrimaryCtxRetain(&ctx1, dev1));
        cu.cuDeviceCanAccessPeer(&can, dev0, dev1);
        CUdeviceptr a = 0, b = 0;
        OK(cu.cuMemAlloc(&a, nbytes));
        if (can)
            cu.cuCtxEnablePeerAccess(ctx1, 0); /* ALREADY_ENABLED is fine */
        OK(cu.cuCtxSetCurrent(ctx1));
        OK(cu.cuMemAlloc(&b, nbytes));
        if (can)
            cu.cuCtxEnablePeerAccess(ctx0, 0);
        OK(cu.cuMemcpyPeer(b, ctx1, a, ctx0, nbytes));
        double t0 = now();
        for (int r = 0; r < reps; r++)
            OK(cu.cuMemcpyPeer(b, ctx1, a, ctx0, nbytes));
        OK(cu.cuCtxSynchronize());
        peer_raw = (double)nbytes * reps / (now() - t0) / 1e9;
        OK(cu.cuMemFree(b));
        OK(cu.cuCtxSetCurrent(ctx0));
        OK(cu.cuMemFree(a));
        OK(cu.cuCtxSetCurrent(NULL));
        cu.cuDevicePrimaryCtxRelease(dev1);
    }
    OK(cu.cuCtxSetCurrent(NULL));
    cu.cuDevicePrimaryCtxRelease(dev0);

    for (int pin = 1; pin >= 0; pin--) {
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = 2;
        cfg.disable_host_pinning = !pin;
        parla_runtime_t *rt;
        OK(parla_runtime_create(&cfg, &rt));
        printf("  the runtime, %-8s host buffers:  %8.2f GB/s\n", pin ? "pinned" : "pageable",
               runtime_copies(rt, nbytes, reps, 0, 1));
        if (pin && n >= 2) {
            printf("GPU to GPU, %zu MiB x %d (peer access %s):\n", mib, reps, can ? "yes" : "no");
            printf("  cuMemcpyPeer:                      %8.2f GB/s\n", peer_raw);
            printf("  the runtime:                       %8.2f GB/s\n", runtime_copies(rt, nbytes, reps, 1, 2));
        }
        OK(parla_runtime_destroy(rt));
    }
    return 0;
}
