/* cuda.c: CUDA GPUs through the driver API, loaded at run time with
 * dlopen("libcuda.so.1"). Building needs no CUDA toolkit; a machine without a
 * driver or without a device simply has zero GPUs.
 *
 * Each GPU uses its primary context (cuDevicePrimaryCtxRetain), the one the
 * CUDA runtime and CuPy use, so buffers and streams are shared with bodies.
 * Copies use cuMemcpy with unified addressing (any direction). */
#include "core/internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef unsigned long long CUdeviceptr;

/* The driver entry points. The loader is the one piece of process-wide state
 * in the library: the driver itself is process-wide. Written once under
 * pthread_once, read-only afterwards. */
static struct {
    void *lib;
    int count;
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
    CUresult (*cuCtxSetCurrent)(CUcontext);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree)(CUdeviceptr);
    CUresult (*cuMemcpy)(CUdeviceptr, CUdeviceptr, size_t);
    CUresult (*cuGetErrorName)(CUresult, const char **);
} cu;

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;

static void cu_load(void)
{
    cu.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (cu.lib == NULL)
        return;
#define SYM(field, name)                                                                                       \
    do {                                                                                                       \
        *(void **)&cu.field = dlsym(cu.lib, name);                                                             \
        if (cu.field == NULL)                                                                                  \
            goto fail;                                                                                         \
    } while (0)
    SYM(cuInit, "cuInit");
    SYM(cuDeviceGetCount, "cuDeviceGetCount");
    SYM(cuDeviceGet, "cuDeviceGet");
    SYM(cuDeviceTotalMem, "cuDeviceTotalMem_v2");
    SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    SYM(cuCtxSetCurrent, "cuCtxSetCurrent");
    SYM(cuCtxSynchronize, "cuCtxSynchronize");
    SYM(cuMemAlloc, "cuMemAlloc_v2");
    SYM(cuMemFree, "cuMemFree_v2");
    SYM(cuMemcpy, "cuMemcpy");
    SYM(cuGetErrorName, "cuGetErrorName");
#undef SYM
    if (cu.cuInit(0) != 0 || cu.cuDeviceGetCount(&cu.count) != 0)
        cu.count = 0;
    return;
fail:
    cu.count = 0;
}

int parla__cuda_count(void)
{
    pthread_once(&cu_once, cu_load);
    return cu.count;
}

static int cu_error(CUresult r, const char *what, const parla__device_t *d)
{
    const char *name = "unknown";
    if (cu.cuGetErrorName)
        cu.cuGetErrorName(r, &name);
    return parla__error(PARLA_EDEVICE, "%s on %s failed: %s (%d)", what, d->name, name ? name : "?", r);
}

static int cuda_alloc(parla__device_t *d, uint64_t nbytes, void **out)
{
    CUdeviceptr p = 0;
    CUresult r = cu.cuCtxSetCurrent(d->ctx);
    if (r == 0)
        r = cu.cuMemAlloc(&p, nbytes ? nbytes : 1);
    if (r == 2 /* CUDA_ERROR_OUT_OF_MEMORY */)
        return PARLA_ENOMEM;
    if (r)
        return cu_error(r, "cuMemAlloc", d);
    *out = (void *)(uintptr_t)p;
    return 0;
}

static void cuda_free(parla__device_t *d, void *p)
{
    cu.cuCtxSetCurrent(d->ctx);
    cu.cuMemFree((CUdeviceptr)(uintptr_t)p);
}

static int cuda_copy(parla__device_t *d, void *dst, parla__device_t *s, const void *src, uint64_t n)
{
    parla__device_t *g = d->is_cuda ? d : s;
    CUresult r = cu.cuCtxSetCurrent(g->ctx);
    if (r == 0)
        r = cu.cuMemcpy((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n);
    return r ? cu_error(r, "cuMemcpy", g) : 0;
}

static int cuda_synchronize(parla__device_t *d)
{
    CUresult r = cu.cuCtxSetCurrent(d->ctx);
    if (r == 0)
        r = cu.cuCtxSynchronize();
    return r ? cu_error(r, "cuCtxSynchronize", d) : 0;
}

static const parla__device_ops_t cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
};

int parla__cuda_device_init(parla__device_t *d, int ordinal)
{
    CUdevice dev;
    CUcontext ctx;
    size_t mem = 0;
    CUresult r = cu.cuDeviceGet(&dev, ordinal);
    if (r == 0)
        r = cu.cuDeviceTotalMem(&mem, dev);
    if (r == 0)
        r = cu.cuDevicePrimaryCtxRetain(&ctx, dev);
    if (r)
        return cu_error(r, "opening the device", d);
    d->is_cuda = 1;
    d->cuda_ordinal = ordinal;
    d->ctx = ctx;
    d->ops = &cuda_ops;
    d->memory_capacity = d->memory_free = mem;
    d->bandwidth = 25e9; /* nominal PCIe/NVLink host link for cost estimates */
    return 0;
}

void parla__cuda_device_destroy(parla__device_t *d)
{
    if (d->is_cuda && d->ctx) {
        CUdevice dev;
        if (cu.cuDeviceGet(&dev, d->cuda_ordinal) == 0)
            cu.cuDevicePrimaryCtxRelease(dev);
        d->ctx = NULL;
    }
}
