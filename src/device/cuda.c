/* cuda.c: CUDA GPUs through the driver API, loaded at run time with
 * dlopen("libcuda.so.1"). Building needs no CUDA toolkit; a machine without a
 * driver or without a device simply has zero GPUs.
 *
 * Each GPU uses its primary context (cuDevicePrimaryCtxRetain), the one the
 * CUDA runtime and CuPy use, so buffers and streams are shared with bodies.
 * Streams are created non-blocking (no implicit order with the legacy default
 * stream); events without timing.
 *
 * Memory: device buffers come from the runtime's caching allocator (pool.c)
 * over the driver's stream-ordered pool (cuMemAllocAsync on the device's
 * default pool, where the driver has memory pools) or cuMemAlloc. Host
 * buffers that take part in copies are registered once (cuMemHostRegister,
 * parla__dev_host_pin), so cuMemcpyHtoDAsync / cuMemcpyDtoHAsync on the copy
 * streams do not block the host. GPU-to-GPU copies use cuMemcpyPeerAsync where
 * the devices have peer access (enabled once per pair at start), and go
 * through a pinned staging buffer of the destination otherwise. Entry points
 * newer than the base set are optional: without them the older calls are
 * used (cuMemcpyAsync with unified addressing, cuMemAlloc, polling).
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

typedef struct CUmemPool_st *CUmemoryPool;

enum {
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704,
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    CU_STREAM_NON_BLOCKING = 1,
    CU_EVENT_DISABLE_TIMING = 2,
    CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4,
    CU_MEMHOSTREGISTER_PORTABLE = 1,
    CU_MEMHOSTALLOC_PORTABLE = 1,
};

/* The staging buffer of a GPU-to-GPU copy without peer access, in bytes. */
#define BOUNCE_BYTES ((size_t)4 << 20)

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
    /* Optional (NULL when the driver lacks them). */
    CUresult (*cuLaunchHostFunc)(CUstream, void (*)(void *), void *);
    CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
    CUresult (*cuMemcpyPeerAsync)(CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream);
    CUresult (*cuMemHostRegister)(void *, size_t, unsigned);
    CUresult (*cuMemHostUnregister)(void *);
    CUresult (*cuMemHostAlloc)(void **, size_t, unsigned);
    CUresult (*cuMemFreeHost)(void *);
    CUresult (*cuDeviceCanAccessPeer)(int *, CUdevice, CUdevice);
    CUresult (*cuCtxEnablePeerAccess)(CUcontext, unsigned);
    CUresult (*cuDeviceGetDefaultMemPool)(CUmemoryPool *, CUdevice);
    CUresult (*cuMemPoolSetAttribute)(CUmemoryPool, int, void *);
    CUresult (*cuMemPoolTrimTo)(CUmemoryPool, size_t);
    CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
    CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream);
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
#define OPT(field, name) (*(void **)&cu.field = dlsym(cu.lib, name))
    OPT(cuLaunchHostFunc, "cuLaunchHostFunc");
    OPT(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    OPT(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
    OPT(cuMemcpyPeerAsync, "cuMemcpyPeerAsync");
    OPT(cuMemHostRegister, "cuMemHostRegister_v2");
    OPT(cuMemHostUnregister, "cuMemHostUnregister");
    OPT(cuMemHostAlloc, "cuMemHostAlloc");
    OPT(cuMemFreeHost, "cuMemFreeHost");
    OPT(cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer");
    OPT(cuCtxEnablePeerAccess, "cuCtxEnablePeerAccess");
    OPT(cuDeviceGetDefaultMemPool, "cuDeviceGetDefaultMemPool");
    OPT(cuMemPoolSetAttribute, "cuMemPoolSetAttribute");
    OPT(cuMemPoolTrimTo, "cuMemPoolTrimTo");
    OPT(cuMemAllocAsync, "cuMemAllocAsync");
    OPT(cuMemFreeAsync, "cuMemFreeAsync");
    /* A feature is used only when all its entry points are there: NULL its first one otherwise. */
    cu.cuMemHostRegister = cu.cuMemHostUnregister ? cu.cuMemHostRegister : NULL;
    cu.cuMemHostAlloc = cu.cuMemFreeHost ? cu.cuMemHostAlloc : NULL;
    if (!cu.cuMemAllocAsync || !cu.cuMemFreeAsync || !cu.cuMemPoolSetAttribute || !cu.cuMemPoolTrimTo)
        cu.cuDeviceGetDefaultMemPool = NULL;
    cu.cuMemcpyPeerAsync = cu.cuDeviceCanAccessPeer && cu.cuCtxEnablePeerAccess ? cu.cuMemcpyPeerAsync : NULL;
#undef OPT
#undef SYM
    if (cu.cuInit(0) != 0 || cu.cuDeviceGetCount(&cu.count) != 0)
        cu.count = 0;
    return;
fail:
    cu.count = 0;
}

int parla__dev_cuda_count(void)
{
    pthread_once(&cu_once, cu_load);
    return cu.count;
}

static int cu_error(CUresult r, const char *what, const parla__dev_t *d)
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
static CUcontext cu_enter(const parla__dev_t *d, CUresult *r)
{
    CUcontext prev = NULL;
    if (cu.cuCtxGetCurrent(&prev) != 0)
        prev = NULL;
    *r = prev == (CUcontext)d->ctx ? 0 : cu.cuCtxSetCurrent((CUcontext)d->ctx);
    return prev;
}

static void cu_leave(const parla__dev_t *d, CUcontext prev)
{
    if (prev != (CUcontext)d->ctx)
        cu.cuCtxSetCurrent(prev);
}

/* The driver's allocation under the pool (only on a pool miss): from the device's stream-ordered
 * memory pool where it has one (on the allocation stream, waited for there, so the memory is usable
 * on every stream), else cuMemAlloc. */
static int cuda_raw_alloc(parla__dev_t *d, uint64_t nbytes, void **out)
{
    CUdeviceptr p = 0;
    CUresult r;
    const char *what = d->mempool ? "cuMemAllocAsync" : "cuMemAlloc";
    CUcontext prev = cu_enter(d, &r);
    if (r == 0 && d->mempool) {
        r = cu.cuMemAllocAsync(&p, nbytes ? nbytes : 1, (CUstream)d->alloc_stream);
        if (r == 0 && (r = cu.cuStreamSynchronize((CUstream)d->alloc_stream)) != 0)
            what = "cuStreamSynchronize";
    } else if (r == 0) {
        r = cu.cuMemAlloc(&p, nbytes ? nbytes : 1);
    }
    cu_leave(d, prev);
    if (r == CUDA_ERROR_OUT_OF_MEMORY)
        return PARLA_ENOMEM;
    if (r)
        return cu_error(r, what, d);
    *out = (void *)(uintptr_t)p;
    return 0;
}

static void cuda_raw_free(parla__dev_t *d, void *p)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (d->mempool)
        cu.cuMemFreeAsync((CUdeviceptr)(uintptr_t)p, (CUstream)d->alloc_stream);
    else
        cu.cuMemFree((CUdeviceptr)(uintptr_t)p);
    cu_leave(d, prev);
}

/* Under pressure, after raw frees: the driver's pool gives the memory back to the device. */
static void cuda_raw_trim(parla__dev_t *d)
{
    if (d->mempool == NULL)
        return;
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0 && cu.cuStreamSynchronize((CUstream)d->alloc_stream) == 0)
        cu.cuMemPoolTrimTo((CUmemoryPool)d->mempool, 0);
    cu_leave(d, prev);
}

static int cuda_copy(parla__dev_t *d, void *dst, parla__dev_t *s, const void *src, uint64_t n)
{
    parla__dev_t *g = d->is_cuda ? d : s;
    CUresult r;
    CUcontext prev = cu_enter(g, &r);
    if (r == 0)
        r = cu.cuMemcpy((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n);
    cu_leave(g, prev);
    return r ? cu_error(r, "cuMemcpy", g) : 0;
}

static int cuda_synchronize(parla__dev_t *d)
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
static int cuda_activate(parla__dev_t *d)
{
    CUresult r = cu.cuCtxSetCurrent((CUcontext)d->ctx);
    return r ? cu_error(r, "cuCtxSetCurrent", d) : 0;
}

static int cuda_stream_create(parla__dev_t *d, void **out)
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

static void cuda_stream_destroy(parla__dev_t *d, void *stream)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        cu.cuStreamDestroy((CUstream)stream);
    cu_leave(d, prev);
}

static int cuda_stream_synchronize(parla__dev_t *d, void *stream)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuStreamSynchronize((CUstream)stream);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuStreamSynchronize", d) : 0;
}

/* GPU to GPU through the host: in chunks, device to the staging buffer of g, then to the device, all
 * on one stream of g (in order, so a chunk is not overwritten before it has gone on). */
static CUresult copy_staged(parla__dev_t *g, CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream st)
{
    if (g->bounce == NULL && cu.cuMemHostAlloc && cu.cuMemcpyHtoDAsync && cu.cuMemcpyDtoHAsync) {
        void *b = NULL;
        if (cu.cuMemHostAlloc(&b, BOUNCE_BYTES, CU_MEMHOSTALLOC_PORTABLE) == 0)
            g->bounce = b;
    }
    if (g->bounce == NULL)
        return cu.cuMemcpyAsync(dst, src, n, st); /* the driver stages it */
    CUresult r = 0;
    for (size_t off = 0; off < n && r == 0; off += BOUNCE_BYTES) {
        size_t k = n - off < BOUNCE_BYTES ? n - off : BOUNCE_BYTES;
        r = cu.cuMemcpyDtoHAsync(g->bounce, src + off, k, st);
        if (r == 0)
            r = cu.cuMemcpyHtoDAsync(dst + off, g->bounce, k, st);
    }
    return r;
}

/* Queues the copy of n bytes from src on device s to dst on device d on stream, a stream of the GPU
 * side (d when both are GPUs). Host to device and back with the explicit calls (asynchronous when the
 * host buffer is pinned), GPU to GPU over the peer link where there is one, else through the host. */
static int cuda_copy_async(parla__dev_t *d, void *dst, parla__dev_t *s, const void *src, uint64_t n,
                           void *stream)
{
    parla__dev_t *g = d->is_cuda ? d : s;
    CUdeviceptr to = (CUdeviceptr)(uintptr_t)dst, from = (CUdeviceptr)(uintptr_t)src;
    CUstream st = (CUstream)stream;
    const char *what = "cuMemcpyAsync";
    CUresult r;
    CUcontext prev = cu_enter(g, &r);
    if (r == 0) {
        if (d->is_cuda && s->is_cuda) {
            if (cu.cuMemcpyPeerAsync && (d->peers >> s->index & 1)) {
                what = "cuMemcpyPeerAsync";
                r = cu.cuMemcpyPeerAsync(to, (CUcontext)d->ctx, from, (CUcontext)s->ctx, n, st);
            } else {
                what = "a copy through the host";
                r = copy_staged(g, to, from, n, st);
            }
        } else if (d->is_cuda && cu.cuMemcpyHtoDAsync) {
            what = "cuMemcpyHtoDAsync";
            r = cu.cuMemcpyHtoDAsync(to, src, n, st);
        } else if (s->is_cuda && cu.cuMemcpyDtoHAsync) {
            what = "cuMemcpyDtoHAsync";
            r = cu.cuMemcpyDtoHAsync(dst, from, n, st);
        } else {
            r = cu.cuMemcpyAsync(to, from, n, st);
        }
    }
    cu_leave(g, prev);
    return r ? cu_error(r, what, g) : 0;
}

static int cuda_launch_host_func(parla__dev_t *d, void *stream, void (*fn)(void *), void *arg)
{
    if (cu.cuLaunchHostFunc == NULL)
        return PARLA_EDEVICE;
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuLaunchHostFunc((CUstream)stream, fn, arg);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuLaunchHostFunc", d) : 0;
}

static int cuda_event_create(parla__dev_t *d, void **out)
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

static void cuda_event_destroy(parla__dev_t *d, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        cu.cuEventDestroy((CUevent)event);
    cu_leave(d, prev);
}

static int cuda_event_record(parla__dev_t *d, void *event, void *stream)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuEventRecord((CUevent)event, (CUstream)stream);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuEventRecord", d) : 0;
}

static int cuda_event_query(parla__dev_t *d, void *event)
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

static int cuda_event_synchronize(parla__dev_t *d, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuEventSynchronize((CUevent)event);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuEventSynchronize", d) : 0;
}

static int cuda_stream_wait_event(parla__dev_t *d, void *stream, void *event)
{
    CUresult r;
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuStreamWaitEvent((CUstream)stream, (CUevent)event, 0);
    cu_leave(d, prev);
    return r ? cu_error(r, "cuStreamWaitEvent", d) : 0;
}

static const parla__dev_ops_t cuda_ops = {
    .name = "cuda",
    .alloc = parla__dev_pool_alloc,
    .free = parla__dev_pool_free,
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
    .launch_host_func = cuda_launch_host_func,
    .raw_alloc = cuda_raw_alloc,
    .raw_free = cuda_raw_free,
    .raw_trim = cuda_raw_trim,
};

int parla__dev_cuda_device_init(parla__dev_t *d, int ordinal, bool use_mempool)
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
    /* The stream of the driver's stream-ordered allocations, and its pool (kept: the runtime's own
     * cache sits in front of it and releases under pressure). */
    CUcontext prev = cu_enter(d, &r);
    if (r == 0)
        r = cu.cuStreamCreate((CUstream *)&d->alloc_stream, CU_STREAM_NON_BLOCKING);
    if (r == 0 && cu.cuDeviceGetDefaultMemPool && use_mempool) {
        CUmemoryPool pool = NULL;
        uint64_t keep = UINT64_MAX;
        if (cu.cuDeviceGetDefaultMemPool(&pool, dev) == 0 &&
            cu.cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep) == 0)
            d->mempool = pool;
    }
    cu_leave(d, prev);
    if (r)
        return cu_error(r, "cuStreamCreate", d);
    return 0;
}

int parla__dev_cuda_peers_init(parla__dev_t *devices, int n)
{
    if (cu.cuMemcpyPeerAsync == NULL)
        return 0;
    for (int i = 0; i < n; i++) {
        parla__dev_t *a = &devices[i];
        for (int j = 0; j < n && a->is_cuda; j++) {
            parla__dev_t *b = &devices[j];
            int can = 0;
            if (i == j || !b->is_cuda || cu.cuDeviceCanAccessPeer(&can, a->cuda_ordinal, b->cuda_ordinal) || !can)
                continue;
            CUresult r;
            CUcontext prev = cu_enter(a, &r);
            if (r == 0)
                r = cu.cuCtxEnablePeerAccess((CUcontext)b->ctx, 0);
            cu_leave(a, prev);
            if (r == 0 || r == CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) {
                a->peers |= (uint64_t)1 << b->index;
                a->peer_bandwidth = 2 * a->bandwidth; /* nominal: NVLink-class links beat the host link */
            }
            else
                return cu_error(r, "cuCtxEnablePeerAccess", a);
        }
    }
    return 0;
}

void parla__dev_host_pin(parla__dev_t *d, void *ptr, uint64_t nbytes)
{
    parla__dev_shared_t *sh = d->shared;
    if (!d->is_cuda || !d->pin_host || ptr == NULL || nbytes == 0 || cu.cuMemHostRegister == NULL || sh == NULL)
        return;
    size_t k = ((uintptr_t)ptr >> 6) % 64;
    pthread_mutex_lock(&sh->pin_lock);
    parla__dev_pinned_t *p = sh->pinned[k];
    while (p && p->ptr != ptr)
        p = p->next;
    if (p == NULL && (p = calloc(1, sizeof *p)) != NULL) {
        /* Registered once, for every context (portable); listed also when the driver refuses (memory
         * registered by someone else, or that cannot be), so it is not asked again. */
        CUresult r;
        CUcontext prev = cu_enter(d, &r);
        if (r == 0)
            r = cu.cuMemHostRegister(ptr, nbytes, CU_MEMHOSTREGISTER_PORTABLE);
        cu_leave(d, prev);
        p->ptr = ptr;
        p->by = r == 0 ? d : NULL;
        p->next = sh->pinned[k];
        sh->pinned[k] = p;
        atomic_fetch_add(&sh->n_pinned, 1);
    }
    pthread_mutex_unlock(&sh->pin_lock);
}

void parla__dev_host_unpin(parla__dev_shared_t *sh, void *ptr)
{
    if (atomic_load(&sh->n_pinned) == 0 || ptr == NULL)
        return;
    size_t k = ((uintptr_t)ptr >> 6) % 64;
    pthread_mutex_lock(&sh->pin_lock);
    parla__dev_pinned_t *p = NULL;
    for (parla__dev_pinned_t **q = &sh->pinned[k]; *q; q = &(*q)->next) {
        if ((*q)->ptr == ptr) {
            p = *q;
            *q = p->next;
            atomic_fetch_sub(&sh->n_pinned, 1);
            break;
        }
    }
    pthread_mutex_unlock(&sh->pin_lock);
    if (p && p->by) {
        CUresult r;
        CUcontext prev = cu_enter(p->by, &r);
        cu.cuMemHostUnregister(ptr);
        cu_leave(p->by, prev);
    }
    free(p);
}

void parla__dev_cuda_device_destroy(parla__dev_t *d)
{
    if (d->is_cuda && d->ctx) {
        CUresult r;
        CUcontext prev = cu_enter(d, &r);
        if (d->alloc_stream)
            cu.cuStreamDestroy((CUstream)d->alloc_stream);
        if (d->bounce)
            cu.cuMemFreeHost(d->bounce);
        cu_leave(d, prev);
        d->alloc_stream = d->bounce = d->mempool = NULL;
        CUdevice dev;
        if (cu.cuDeviceGet(&dev, d->cuda_ordinal) == 0)
            cu.cuDevicePrimaryCtxRelease(dev);
        d->ctx = NULL;
    }
}
