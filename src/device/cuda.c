/* cuda.c: CUDA GPUs through the driver API, loaded at run time with
 * dlopen("libcuda.so.1"). Building needs no CUDA toolkit; a machine without a
 * driver or without a device simply has zero GPUs.
 *
 * Each GPU uses its primary context (cuDevicePrimaryCtxRetain), the one the
 * CUDA runtime and CuPy use, so buffers and streams are shared with bodies.
 * Streams are created non-blocking (no implicit order with the legacy default
 * stream); events without timing. Copies use cuMemcpy / cuMemcpyAsync with
 * unified addressing (any direction, peer copies included).
 *
 * PARLA_CUDA_DRIVER names another driver library to load instead of
 * libcuda.so.1 (a driver outside the loader's path, or a test double). */
#include "device/device.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef unsigned long long CUdeviceptr;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

enum {
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_READY = 600,
    CU_STREAM_NON_BLOCKING = 1,
    CU_EVENT_DISABLE_TIMING = 2,
};

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
    CUresult (*cuCtxGetCurrent)(CUcontext *);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree)(CUdeviceptr);
    CUresult (*cuMemcpy)(CUdeviceptr, CUdeviceptr, size_t);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuStreamCreate)(CUstream *, unsigned);
    CUresult (*cuStreamDestroy)(CUstream);
    CUresult (*cuStreamSynchronize)(CUstream);
    CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned);
    CUresult (*cuMemcpyAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
    CUresult (*cuEventCreate)(CUevent *, unsigned);
    CUresult (*cuEventDestroy)(CUevent);
    CUresult (*cuEventRecord)(CUevent, CUstream);
    CUresult (*cuEventQuery)(CUevent);
    CUresult (*cuEventSynchronize)(CUevent);
} cu;

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;

static void cu_load(void)
{
    const char *path = getenv("PARLA_CUDA_DRIVER");
    cu.lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
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
    SYM(cuCtxGetCurrent, "cuCtxGetCurrent");
    SYM(cuCtxSynchronize, "cuCtxSynchronize");
    SYM(cuMemAlloc, "cuMemAlloc_v2");
    SYM(cuMemFree, "cuMemFree_v2");
    SYM(cuMemcpy, "cuMemcpy");
    SYM(cuGetErrorName, "cuGetErrorName");
    SYM(cuStreamCreate, "cuStreamCreate");
    SYM(cuStreamDestroy, "cuStreamDestroy_v2");
    SYM(cuStreamSynchronize, "cuStreamSynchronize");
    SYM(cuStreamWaitEvent, "cuStreamWaitEvent");
    SYM(cuMemcpyAsync, "cuMemcpyAsync");
    SYM(cuEventCreate, "cuEventCreate");
    SYM(cuEventDestroy, "cuEventDestroy_v2");
    SYM(cuEventRecord, "cuEventRecord");
    SYM(cuEventQuery, "cuEventQuery");
    SYM(cuEventSynchronize, "cuEventSynchronize");
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

/* Every driver call below runs in d's context and gives the calling thread
 * back the context it had (the main thread's CUDA context, or a body's, is
 * not changed behind its back): cu_enter makes d's current and returns the
 * caller's, cu_leave restores it. Both are thread-local in the driver. */
static CUcontext cu_enter(const parla__device_t *d, CUresult *r)
{
    CUcontext prev = NULL;
    if (cu.cuCtxGetCurrent(&prev) != 0)
        prev = NULL;
    *r = prev == (CUcontext)d->ctx ? 0 : cu.cuCtxSetCurrent((CUcontext)d->ctx);
    return prev;
}

static void cu_leave(const parla__device_t *d, CUcontext prev)
{
    if (prev != (CUcontext)d->ctx)
        cu.cuCtxSetCurrent(prev);
}

static int cuda_alloc(parla__device_t *d, uint64_t nbytes, void **out)
{
    CUdeviceptr p = 0;
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuMemAlloc(&p, nbytes ? nbytes : 1);
    cu_leave(d, prev);
    if (r == CUDA_ERROR_OUT_OF_MEMORY)
        return PARLA_ENOMEM;
    if (r)
        return cu_error(r, "cuMemAlloc", d);
    *out = (void *)(uintptr_t)p;
    return 0;
}

static void cuda_free(parla__device_t *d, void *p)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    cu.cuMemFree((CUdeviceptr)(uintptr_t)p);
    cu_leave(d, prev);
}

static int cuda_copy(parla__device_t *d, void *dst, parla__device_t *s, const void *src, uint64_t n)
{
    parla__device_t *g = d->is_cuda ? d : s;
    CUresult r;
    CUcontext prev = cu_enter(g, &r);
    if (r == 0)
        r = cu.cuMemcpy((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n);
    cu_leave(g, prev);
    return r ? cu_error(r, "cuMemcpy", g) : 0;
}

static int cuda_synchronize(parla__device_t *d)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuCtxSynchronize();
    cu_leave(d, prev);
    return r ? cu_error(r, "cuCtxSynchronize", d) : 0;
}


/* Makes d current on the calling worker for the body about to run (the one
 * call that leaves a context set: bodies launch work in it). */
static int cuda_activate(parla__device_t *d)
{
    CUresult r = cu.cuCtxSetCurrent((CUcontext)d->ctx);
    return r ? cu_error(r, "cuCtxSetCurrent", d) : 0;
}

static int cuda_stream_create(parla__device_t *d, void **out)
{
    CUstream s = NULL;
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING);
    cu_leave(d, prev);
    if (r)
        return cu_error(r, "cuStreamCreate", d);
    *out = s;
    return 0;
}

static void cuda_stream_destroy(parla__device_t *d, void *stream)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        cu.cuStreamDestroy((CUstream)stream);
    cu_leave(d, prev);
}

static int cuda_stream_synchronize(parla__device_t *d, void *stream)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuStreamSynchronize((CUstream)stream);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuStreamSynchronize", d) : 0;
}

static int cuda_copy_async(parla__device_t *d, void *dst, parla__device_t *s, const void *src, uint64_t n,
                           void *stream)
{
    (void)s;
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuMemcpyAsync((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n, (CUstream)stream);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuMemcpyAsync", d) : 0;
}

static int cuda_event_create(parla__device_t *d, void **out)
{
    CUevent e = NULL;
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuEventCreate(&e, CU_EVENT_DISABLE_TIMING);
    cu_leave(d, prev);
    if (r)
        return cu_error(r, "cuEventCreate", d);
    *out = e;
    return 0;
}

static void cuda_event_destroy(parla__device_t *d, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        cu.cuEventDestroy((CUevent)event);
    cu_leave(d, prev);
}

static int cuda_event_record(parla__device_t *d, void *event, void *stream)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuEventRecord((CUevent)event, (CUstream)stream);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuEventRecord", d) : 0;
}

static int cuda_event_query(parla__device_t *d, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuEventQuery((CUevent)event);
    cu_leave(d, prev);
    if (r == 0)
        return 1;
    return r == CUDA_ERROR_NOT_READY ? 0 : cu_error(r, "cuEventQuery", d);
}

static int cuda_event_synchronize(parla__device_t *d, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuEventSynchronize((CUevent)event);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuEventSynchronize", d) : 0;
}

static int cuda_stream_wait_event(parla__device_t *d, void *stream, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuStreamWaitEvent((CUstream)stream, (CUevent)event, 0);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuStreamWaitEvent", d) : 0;
}

static const parla__device_ops_t cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .activate = cuda_activate,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_synchronize = cuda_stream_synchronize,
    .copy_async = cuda_copy_async,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .event_query = cuda_event_query,
    .event_synchronize = cuda_event_synchronize,
    .stream_wait_event = cuda_stream_wait_event,
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
