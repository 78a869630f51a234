/*
 * fakecuda.c: a test double of the part of the CUDA driver API that libparla
 * uses, so that the CUDA code path (streams, events, asynchronous copies,
 * runahead) runs on machines without a GPU. Load it with
 * PARLA_CUDA_DRIVER=/path/to/libfakecuda.so.
 *
 * Device memory is host memory (so device pointers can be read in tests), but
 * everything else behaves as the driver specifies, and strictly:
 *   - each stream is a thread that runs its work in order, each copy, memset
 *     and kernel (fakecuda_kernel: a host function run as device work) after a
 *     random delay (FAKECUDA_DELAY_US, default 300); host functions
 *     (cuLaunchHostFunc) run when the stream reaches them,
 *     so a consumer that does not wait for its producer's event reads stale
 *     data with high probability;
 *   - events complete when their stream reaches them; cuStreamWaitEvent holds
 *     the stream until the recording current at the call has completed;
 *   - calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT without
 *     one; streams, events and copies must belong to the current context's
 *     device (a copy's stream, a recorded event's stream); memory beyond the
 *     device's capacity (FAKECUDA_MEMORY bytes, default 64 MiB) fails with
 *     CUDA_ERROR_OUT_OF_MEMORY; freeing an unknown pointer fails.
 * FAKECUDA_DEVICES sets the number of devices (default 2, at most 8).
 * fakecuda_live() reports what is still allocated, for leak checks; fakecuda_device_bytes() the bytes
 * allocated on a device; fakecuda_on_copy() a function called at each synchronous copy;
 * fakecuda_fail(stream) makes the work queued on a stream from then on fail
 * as a faulting kernel does (sticky): events recorded after it, and waits for
 * them, report CUDA_ERROR_LAUNCH_FAILED; fakecuda_fail_next_copy() does the
 * same to the stream of the next cuMemcpyAsync, which copies nothing.
 *
 * Memory the way the driver has it: cuMemHostRegister / cuMemHostAlloc make
 * host ranges pinned; cuMemcpyHtoDAsync / DtoHAsync from or to pageable
 * (unregistered) memory block the caller until the stream has done the copy,
 * as the driver's staging does. Stream-ordered pools (cuDeviceGetDefaultMemPool,
 * cuMemAllocAsync, cuMemFreeAsync in stream order, cuMemPoolTrimTo): freed
 * memory stays in the pool, counted in the device's memory, up to the release
 * threshold, until trimmed (FAKECUDA_NO_POOLS=1: the driver has no pools).
 * Peer access (cuDeviceCanAccessPeer, cuCtxEnablePeerAccess; FAKECUDA_PEER=0:
 * no pair can; 2: only devices 0 and 1) and cuMemcpyPeerAsync. Host functions are not called on a
 * failed stream (as cuLaunchHostFunc after an error).
 *
 * Measurements for tests (fakecuda_counters): driver allocations (cuMemAlloc,
 * cuMemAllocAsync, cuMemHostAlloc), synchronising calls (cuMemAlloc, cuMemFree,
 * cuMemcpy, cu*Synchronize, cuMemHostRegister, async copies of pageable
 * memory), host waits (calls that blocked the caller for queued device work),
 * copies by kind; and a timeline of the copies and kernels (fakecuda_kernel:
 * a kernel launch, run as a host function) each stream ran, to measure how
 * long a copy and a kernel on different streams ran at the same time
 * (fakecuda_overlap).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fakecuda.h"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OOM = 2,
    ERR_NOT_INITIALIZED = 3,
    ERR_INVALID_CONTEXT = 201,
    ERR_INVALID_HANDLE = 400,
    ERR_PEER_UNSUPPORTED = 217,
    ERR_NOT_READY = 600,
    ERR_PEER_ALREADY = 704,
    ERR_HOST_ALREADY = 712,
    ERR_HOST_NOT_REGISTERED = 713,
    ERR_LAUNCH_FAILED = 719,
    ERR_NOT_SUPPORTED = 801,
};



#define MAX_DEVICES 8

typedef struct ctx {
    int device;
    int refs;
    size_t allocated;
} ctx_t;

typedef struct event {
    int device;
    uint64_t recorded, done; /* generations: the latest recording, the latest completed */
    int failed;              /* the completed recording followed failed work */
} event_t;

enum { OP_COPY, OP_MEMSET, OP_HOST, OP_RECORD, OP_WAIT, OP_STOP, OP_FAIL, OP_KERNEL };

typedef struct op {
    int kind;
    void *dst;
    const void *src;
    size_t n;
    unsigned char byte;
    void (*fn)(void *);
    void *arg;
    event_t *event;
    uint64_t gen;
    struct op *next;
} op_t;

typedef struct stream {
    int device;
    pthread_t thread;
    op_t *head, *tail;
    long queued; /* ops not finished */
    int failed;  /* an OP_FAIL ran: the stream's work fails from then on */
    unsigned seed;
    struct stream *next_stream;
} stream_t;

typedef struct alloc {
    void *p;
    size_t n;
    int device;
    struct alloc *next;
} alloc_t;

/* One lock for the whole double: it is for tests, not speed. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int initialized, n_devices;
static size_t capacity;
static long delay_us;
static ctx_t contexts[MAX_DEVICES];
static alloc_t *allocs;
static stream_t *streams;
static long n_allocs, n_streams, n_events;
static unsigned next_seed = 12345;
static __thread ctx_t *current;
static fakecuda_counters_t counts;
static int no_pools, peer_mode; /* peer_mode: 0 none, 1 every pair, 2 only devices 0 and 1 */
static int peer_enabled[MAX_DEVICES][MAX_DEVICES];

/* Pinned host ranges (registered or from cuMemHostAlloc). */
typedef struct hostreg {
    char *p;
    size_t n;
    int allocated;  /* cuMemHostAlloc's */
    struct hostreg *next;
} hostreg_t;
static hostreg_t *hostregs;
static long n_hostregs;

/* The default memory pool of each device: bytes freed into it, still counted in the device. */
typedef struct mempool {
    int device;
    uint64_t threshold;
    size_t reserved;
} mempool_t;
static mempool_t pools[MAX_DEVICES];

/* The timeline: copies and kernels as streams ran them. */
#define TIMELINE 65536
typedef struct span {
    double t0, t1;
    const void *stream;
    int kernel;
} span_t;
static span_t timeline[TIMELINE];
static long n_spans;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* True when [p, p + n) lies in a pinned range. Lock held. */
static int pinned_locked(const void *p, size_t n)
{
    for (hostreg_t *r = hostregs; r; r = r->next)
        if ((const char *)p >= r->p && (const char *)p + n <= r->p + r->n)
            return 1;
    return 0;
}

static long env_long(const char *name, long fallback)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : fallback;
}

CUresult cuInit(unsigned flags)
{
    if (flags != 0)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    if (!initialized) {
        n_devices = (int)env_long("FAKECUDA_DEVICES", 2);
        if (n_devices < 0 || n_devices > MAX_DEVICES)
            n_devices = 2;
        capacity = (size_t)env_long("FAKECUDA_MEMORY", 64L << 20);
        delay_us = env_long("FAKECUDA_DELAY_US", 300);
        no_pools = env_long("FAKECUDA_NO_POOLS", 0) != 0;
        peer_mode = (int)env_long("FAKECUDA_PEER", 1);
        for (int i = 0; i < MAX_DEVICES; i++) {
            contexts[i].device = i;
            pools[i].device = i;
        }
        initialized = 1;
    }
    pthread_mutex_unlock(&lock);
    return OK;
}

CUresult cuDeviceGetCount(int *count)
{
    if (!initialized)
        return ERR_NOT_INITIALIZED;
    *count = n_devices;
    return OK;
}

CUresult cuDeviceGet(int *device, int ordinal)
{
    if (!initialized)
        return ERR_NOT_INITIALIZED;
    if (ordinal < 0 || ordinal >= n_devices)
        return ERR_INVALID_VALUE;
    *device = ordinal;
    return OK;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int device)
{
    if (device < 0 || device >= n_devices)
        return ERR_INVALID_VALUE;
    *bytes = capacity;
    return OK;
}

CUresult cuDevicePrimaryCtxRetain(ctx_t **out, int device)
{
    if (device < 0 || device >= n_devices)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    contexts[device].refs++;
    pthread_mutex_unlock(&lock);
    *out = &contexts[device];
    return OK;
}

CUresult cuDevicePrimaryCtxRelease_v2(int device)
{
    if (device < 0 || device >= n_devices)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    CUresult r = contexts[device].refs > 0 ? OK : ERR_INVALID_CONTEXT;
    if (r == OK)
        contexts[device].refs--;
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuCtxSetCurrent(ctx_t *c)
{
    if (c != NULL && (c < contexts || c >= contexts + n_devices || c->refs == 0))
        return ERR_INVALID_CONTEXT;
    current = c;
    return OK;
}

CUresult cuCtxGetCurrent(ctx_t **out)
{
    if (out == NULL)
        return ERR_INVALID_VALUE;
    *out = current;
    return OK;
}

/* Allocates n bytes on the current device (lock held). */
static CUresult alloc_locked(CUdeviceptr *out, size_t n)
{
    CUresult r = OK;
    alloc_t *a = NULL;
    if (current->allocated + n > capacity || (a = malloc(sizeof *a)) == NULL || (a->p = malloc(n)) == NULL) {
        free(a);
        r = ERR_OOM;
    } else {
        memset(a->p, 0xA5, n); /* not zero: reading memory never written shows */
        a->n = n;
        a->device = current->device;
        a->next = allocs;
        allocs = a;
        current->allocated += n;
        n_allocs++;
        counts.allocs++;
        *out = (CUdeviceptr)(uintptr_t)a->p;
    }
    return r;
}

CUresult cuMemAlloc_v2(CUdeviceptr *out, size_t n)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    if (n == 0)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counts.syncs++;
    CUresult r = alloc_locked(out, n);
    pthread_mutex_unlock(&lock);
    return r;
}

/* Frees device allocation p (lock held). */
static CUresult free_locked(CUdeviceptr p)
{
    CUresult r = ERR_INVALID_VALUE;
    for (alloc_t **a = &allocs; *a; a = &(*a)->next) {
        if ((*a)->p == (void *)(uintptr_t)p) {
            alloc_t *x = *a;
            *a = x->next;
            contexts[x->device].allocated -= x->n;
            n_allocs--;
            free(x->p);
            free(x);
            r = OK;
            break;
        }
    }
    return r;
}

CUresult cuMemFree_v2(CUdeviceptr p)
{
    pthread_mutex_lock(&lock);
    counts.syncs++;
    counts.frees++;
    CUresult r = free_locked(p);
    pthread_mutex_unlock(&lock);
    return r;
}

/* fakecuda_on_copy: called at the start of each synchronous copy (cuMemcpy), no lock of the double held. */
static void (*_Atomic on_copy)(void *);
static void *_Atomic on_copy_arg;

CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    pthread_mutex_lock(&lock);
    counts.syncs++;
    pthread_mutex_unlock(&lock);
    void (*hook)(void *) = atomic_load(&on_copy);
    if (hook)
        hook(atomic_load(&on_copy_arg));
    memcpy((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return OK;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
    return cuMemcpy(dst, (CUdeviceptr)(uintptr_t)src, n);
}

CUresult cuMemcpyPeer(CUdeviceptr dst, ctx_t *dctx, CUdeviceptr src, ctx_t *sctx, size_t n)
{
    if (dctx == NULL || sctx == NULL)
        return ERR_INVALID_CONTEXT;
    return cuMemcpy(dst, src, n);
}

static void pause_random(stream_t *s)
{
    if (delay_us <= 0)
        return;
    long us = (long)(rand_r(&s->seed) % (unsigned)(delay_us + 1));
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void *stream_main(void *arg)
{
    stream_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (s->head == NULL)
            pthread_cond_wait(&changed, &lock);
        op_t *o = s->head;
        if (o->kind == OP_WAIT) {
            while (o->event->done < o->gen)
                pthread_cond_wait(&changed, &lock);
        }
        pthread_mutex_unlock(&lock);
        if (o->kind == OP_STOP) {
            free(o);
            return NULL;
        }
        double t0 = now_s();
        if (o->kind == OP_COPY || o->kind == OP_MEMSET || o->kind == OP_KERNEL) /* device work takes time */
            pause_random(s);
        if (s->failed && o->kind != OP_RECORD && o->kind != OP_WAIT)
            ; /* a failed stream does no more work, and calls no host function */
        else if (o->kind == OP_COPY)
            memcpy(o->dst, o->src, o->n);
        else if (o->kind == OP_MEMSET)
            memset(o->dst, o->byte, o->n);
        else if (o->kind == OP_HOST || o->kind == OP_KERNEL)
            o->fn(o->arg);
        double t1 = now_s();
        pthread_mutex_lock(&lock);
        if ((o->kind == OP_COPY || o->kind == OP_KERNEL) && n_spans < TIMELINE)
            timeline[n_spans++] = (span_t){t0, t1, s, o->kind == OP_KERNEL};
        if (o->kind == OP_FAIL)
            s->failed = 1;
        if (o->kind == OP_RECORD && o->event->done < o->gen) {
            o->event->done = o->gen;
            o->event->failed = s->failed;
        }
        s->head = o->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->queued--;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
        free(o);
    }
}

static CUresult push(stream_t *s, op_t o, int check_device)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    if (s == NULL)
        return ERR_INVALID_HANDLE; /* the legacy stream is not used by libparla */
    if (check_device && s->device != current->device)
        return ERR_INVALID_CONTEXT;
    op_t *p = malloc(sizeof *p);
    if (p == NULL)
        return ERR_OOM;
    *p = o;
    p->next = NULL;
    pthread_mutex_lock(&lock);
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
    s->queued++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return OK;
}

static void unlink_stream(stream_t *s)
{
    pthread_mutex_lock(&lock);
    for (stream_t **p = &streams; *p; p = &(*p)->next_stream)
        if (*p == s) {
            *p = s->next_stream;
            break;
        }
    n_streams--;
    pthread_mutex_unlock(&lock);
    free(s);
}

CUresult cuStreamCreate(stream_t **out, unsigned flags)
{
    (void)flags;
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    stream_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ERR_OOM;
    s->device = current->device;
    pthread_mutex_lock(&lock);
    s->seed = next_seed++;
    s->next_stream = streams;
    streams = s;
    n_streams++;
    pthread_mutex_unlock(&lock);
    if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
        unlink_stream(s);
        return ERR_OOM;
    }
    *out = s;
    return OK;
}

CUresult cuStreamDestroy_v2(stream_t *s)
{
    if (s == NULL)
        return ERR_INVALID_HANDLE;
    /* The work already queued still runs (as the driver does), then the thread ends. */
    op_t stop = {.kind = OP_STOP};
    ctx_t *saved = current;
    current = &contexts[s->device];
    CUresult r = push(s, stop, 1);
    current = saved;
    if (r)
        return r;
    pthread_join(s->thread, NULL);
    unlink_stream(s);
    return OK;
}

CUresult cuStreamSynchronize(stream_t *s)
{
    if (s == NULL)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    counts.syncs++;
    if (s->queued > 0)
        counts.host_waits++;
    while (s->queued > 0)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    return OK;
}

CUresult cuCtxSynchronize(void)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    pthread_mutex_lock(&lock);
    counts.syncs++;
    int waited = 0;
    for (;;) {
        int busy = 0;
        for (stream_t *s = streams; s; s = s->next_stream)
            busy |= s->device == current->device && s->queued > 0;
        if (!busy)
            break;
        waited = 1;
        pthread_cond_wait(&changed, &lock);
    }
    counts.host_waits += waited;
    pthread_mutex_unlock(&lock);
    return OK;
}

static _Atomic int fail_next_copy;

/* fakecuda_fail_next_copy: the stream of this copy fails from here. */
static CUresult maybe_fail(stream_t *s)
{
    if (atomic_exchange(&fail_next_copy, 0)) {
        op_t f = {.kind = OP_FAIL};
        return push(s, f, 1);
    }
    return OK;
}

CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, stream_t *s)
{
    CUresult r = maybe_fail(s);
    if (r)
        return r;
    op_t o = {.kind = OP_COPY, .dst = (void *)(uintptr_t)dst, .src = (const void *)(uintptr_t)src, .n = n};
    return push(s, o, 1);
}

/* For tests: the next cuMemcpyAsync fails on the device (and its stream with it). */
void fakecuda_fail_next_copy(void)
{
    atomic_store(&fail_next_copy, 1);
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char byte, size_t n, stream_t *s)
{
    op_t o = {.kind = OP_MEMSET, .dst = (void *)(uintptr_t)dst, .byte = byte, .n = n};
    return push(s, o, 1);
}

CUresult cuLaunchHostFunc(stream_t *s, void (*fn)(void *), void *arg)
{
    if (fn == NULL)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counts.host_funcs++;
    pthread_mutex_unlock(&lock);
    op_t o = {.kind = OP_HOST, .fn = fn, .arg = arg};
    return push(s, o, 1);
}

/* For tests: a kernel launch (fn(arg) on the stream, in order, listed in the timeline). */
CUresult fakecuda_kernel(stream_t *s, void (*fn)(void *), void *arg)
{
    if (fn == NULL)
        return ERR_INVALID_VALUE;
    op_t o = {.kind = OP_KERNEL, .fn = fn, .arg = arg};
    return push(s, o, 1);
}

/* Blocks until stream s has done all its work (lock not held): a pageable copy. */
static void wait_stream(stream_t *s)
{
    pthread_mutex_lock(&lock);
    counts.syncs++;
    counts.host_waits++;
    while (s->queued > 0)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
}

/* A host-device copy: asynchronous when the host side is pinned, else the caller waits for it. */
static CUresult copy_host(void *dst, const void *src, size_t n, stream_t *s, const void *host)
{
    CUresult r = maybe_fail(s);
    if (r)
        return r;
    pthread_mutex_lock(&lock);
    int pinned = pinned_locked(host, n);
    if (pinned)
        counts.pinned_copies++;
    else
        counts.pageable_copies++;
    pthread_mutex_unlock(&lock);
    op_t o = {.kind = OP_COPY, .dst = dst, .src = src, .n = n};
    r = push(s, o, 1);
    if (r == OK && !pinned)
        wait_stream(s);
    return r;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, stream_t *s)
{
    return copy_host((void *)(uintptr_t)dst, src, n, s, src);
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, stream_t *s)
{
    return copy_host(dst, (const void *)(uintptr_t)src, n, s, dst);
}

CUresult cuMemcpyPeerAsync(CUdeviceptr dst, ctx_t *dctx, CUdeviceptr src, ctx_t *sctx, size_t n, stream_t *s)
{
    if (dctx == NULL || sctx == NULL)
        return ERR_INVALID_CONTEXT;
    CUresult r = maybe_fail(s);
    if (r)
        return r;
    pthread_mutex_lock(&lock);
    counts.peer_copies++;
    if (peer_enabled[dctx->device][sctx->device] || peer_enabled[sctx->device][dctx->device])
        counts.peer_direct++;
    pthread_mutex_unlock(&lock);
    op_t o = {.kind = OP_COPY, .dst = (void *)(uintptr_t)dst, .src = (const void *)(uintptr_t)src, .n = n};
    return push(s, o, 1);
}

CUresult cuDeviceCanAccessPeer(int *can, int dev, int peer)
{
    if (can == NULL || dev < 0 || dev >= n_devices || peer < 0 || peer >= n_devices)
        return ERR_INVALID_VALUE;
    *can = dev != peer && (peer_mode == 1 || (peer_mode == 2 && dev + peer == 1));
    return OK;
}

CUresult cuCtxEnablePeerAccess(ctx_t *peer, unsigned flags)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    if (peer == NULL || flags != 0)
        return ERR_INVALID_VALUE;
    int can = 0;
    cuDeviceCanAccessPeer(&can, current->device, peer->device);
    if (!can)
        return ERR_PEER_UNSUPPORTED;
    pthread_mutex_lock(&lock);
    CUresult r = peer_enabled[current->device][peer->device] ? ERR_PEER_ALREADY : OK;
    peer_enabled[current->device][peer->device] = 1;
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned flags)
{
    (void)flags;
    if (p == NULL || n == 0)
        return ERR_INVALID_VALUE;
    hostreg_t *h = malloc(sizeof *h);
    if (h == NULL)
        return ERR_OOM;
    pthread_mutex_lock(&lock);
    counts.syncs++;
    CUresult r = OK;
    for (hostreg_t *x = hostregs; x && r == OK; x = x->next)
        if ((char *)p < x->p + x->n && x->p < (char *)p + n)
            r = ERR_HOST_ALREADY;
    if (r == OK) {
        *h = (hostreg_t){(char *)p, n, 0, hostregs};
        hostregs = h;
        n_hostregs++;
        counts.registers++;
    }
    pthread_mutex_unlock(&lock);
    if (r)
        free(h);
    return r;
}

/* Drops the pinned range starting at p; allocated: the cuMemHostAlloc ones (else registered ones). */
static CUresult host_drop(void *p, int allocated)
{
    pthread_mutex_lock(&lock);
    CUresult r = ERR_HOST_NOT_REGISTERED;
    for (hostreg_t **x = &hostregs; *x; x = &(*x)->next) {
        if ((*x)->p == p && (*x)->allocated == allocated) {
            hostreg_t *h = *x;
            *x = h->next;
            n_hostregs--;
            free(h);
            r = OK;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuMemHostUnregister(void *p)
{
    return host_drop(p, 0);
}

CUresult cuMemHostAlloc(void **out, size_t n, unsigned flags)
{
    (void)flags;
    if (out == NULL || n == 0)
        return ERR_INVALID_VALUE;
    hostreg_t *h = malloc(sizeof *h);
    char *p = malloc(n);
    if (h == NULL || p == NULL) {
        free(h);
        free(p);
        return ERR_OOM;
    }
    pthread_mutex_lock(&lock);
    *h = (hostreg_t){p, n, 1, hostregs};
    hostregs = h;
    n_hostregs++;
    counts.allocs++;
    pthread_mutex_unlock(&lock);
    *out = p;
    return OK;
}

CUresult cuMemFreeHost(void *p)
{
    CUresult r = host_drop(p, 1);
    if (r == OK) {
        pthread_mutex_lock(&lock);
        counts.frees++;
        pthread_mutex_unlock(&lock);
        free(p);
    }
    return r;
}

CUresult cuDeviceGetDefaultMemPool(mempool_t **out, int device)
{
    if (out == NULL || device < 0 || device >= n_devices)
        return ERR_INVALID_VALUE;
    if (no_pools)
        return ERR_NOT_SUPPORTED;
    *out = &pools[device];
    return OK;
}

CUresult cuMemPoolSetAttribute(mempool_t *pool, int attr, void *value)
{
    if (pool == NULL || value == NULL)
        return ERR_INVALID_VALUE;
    if (attr != 4) /* CU_MEMPOOL_ATTR_RELEASE_THRESHOLD */
        return ERR_NOT_SUPPORTED;
    pthread_mutex_lock(&lock);
    pool->threshold = *(uint64_t *)value;
    pthread_mutex_unlock(&lock);
    return OK;
}

CUresult cuMemPoolTrimTo(mempool_t *pool, size_t keep)
{
    if (pool == NULL)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    if (pool->reserved > keep) {
        contexts[pool->device].allocated -= pool->reserved - keep;
        pool->reserved = keep;
    }
    pthread_mutex_unlock(&lock);
    return OK;
}

/* Stream-ordered: the memory is the pool's (reserved bytes first) and usable in s's order. */
CUresult cuMemAllocAsync(CUdeviceptr *out, size_t n, stream_t *s)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    if (n == 0 || s == NULL || out == NULL)
        return ERR_INVALID_VALUE;
    if (s->device != current->device)
        return ERR_INVALID_CONTEXT;
    pthread_mutex_lock(&lock);
    mempool_t *mp = &pools[current->device];
    size_t reuse = mp->reserved < n ? mp->reserved : n;
    mp->reserved -= reuse; /* reserved bytes are counted already: make them part of this block */
    current->allocated -= reuse;
    CUresult r = alloc_locked(out, n);
    if (r) {
        mp->reserved += reuse;
        current->allocated += reuse;
    } else {
        counts.pool_allocs++;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuMemFreeAsync(CUdeviceptr p, stream_t *s)
{
    if (s == NULL)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    int known = 0;
    for (alloc_t *a = allocs; a && !known; a = a->next)
        known = a->p == (void *)(uintptr_t)p;
    if (known)
        counts.frees++;
    pthread_mutex_unlock(&lock);
    if (!known)
        return ERR_INVALID_VALUE;
    /* Into the pool at once: allocations later in the stream's order may reuse it (the runtime frees
     * only memory no queued work uses). */
    pthread_mutex_lock(&lock);
    mempool_t *mp = &pools[s->device];
    size_t n = 0;
    for (alloc_t *a = allocs; a; a = a->next)
        if (a->p == (void *)(uintptr_t)p)
            n = a->n;
    free_locked(p);
    if (mp->reserved + n <= mp->threshold) {
        mp->reserved += n;
        contexts[s->device].allocated += n;
    }
    pthread_mutex_unlock(&lock);
    return OK;
}

CUresult cuEventCreate(event_t **out, unsigned flags)
{
    (void)flags;
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    event_t *e = calloc(1, sizeof *e);
    if (e == NULL)
        return ERR_OOM;
    e->device = current->device;
    pthread_mutex_lock(&lock);
    n_events++;
    pthread_mutex_unlock(&lock);
    *out = e;
    return OK;
}

CUresult cuEventDestroy_v2(event_t *e)
{
    if (e == NULL)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    n_events--;
    pthread_mutex_unlock(&lock);
    free(e);
    return OK;
}

CUresult cuEventRecord(event_t *e, stream_t *s)
{
    if (e == NULL || s == NULL)
        return ERR_INVALID_HANDLE;
    if (e->device != s->device)
        return ERR_INVALID_CONTEXT;
    pthread_mutex_lock(&lock);
    uint64_t gen = ++e->recorded;
    pthread_mutex_unlock(&lock);
    op_t o = {.kind = OP_RECORD, .event = e, .gen = gen};
    return push(s, o, 1);
}

CUresult cuEventQuery(event_t *e)
{
    if (e == NULL)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    CUresult r = e->done >= e->recorded ? (e->failed ? ERR_LAUNCH_FAILED : OK) : ERR_NOT_READY;
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuEventSynchronize(event_t *e)
{
    if (e == NULL)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    uint64_t gen = e->recorded;
    counts.syncs++;
    if (e->done < gen)
        counts.host_waits++;
    while (e->done < gen)
        pthread_cond_wait(&changed, &lock);
    CUresult r = e->failed ? ERR_LAUNCH_FAILED : OK;
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuStreamWaitEvent(stream_t *s, event_t *e, unsigned flags)
{
    if (e == NULL || flags != 0)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    uint64_t gen = e->recorded;
    pthread_mutex_unlock(&lock);
    op_t o = {.kind = OP_WAIT, .event = e, .gen = gen};
    return push(s, o, 1); /* the event may be another device's; the stream must be current's */
}

CUresult cuGetErrorName(CUresult r, const char **name)
{
    switch (r) {
    case OK: *name = "CUDA_SUCCESS"; break;
    case ERR_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; break;
    case ERR_OOM: *name = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case ERR_NOT_INITIALIZED: *name = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case ERR_INVALID_CONTEXT: *name = "CUDA_ERROR_INVALID_CONTEXT"; break;
    case ERR_INVALID_HANDLE: *name = "CUDA_ERROR_INVALID_HANDLE"; break;
    case ERR_NOT_READY: *name = "CUDA_ERROR_NOT_READY"; break;
    case ERR_LAUNCH_FAILED: *name = "CUDA_ERROR_LAUNCH_FAILED"; break;
    default: *name = NULL; return ERR_INVALID_VALUE;
    }
    return OK;
}

/* For tests: the work queued on s after this call fails (sticky). */
CUresult fakecuda_fail(stream_t *s)
{
    op_t o = {.kind = OP_FAIL};
    return push(s, o, 0);
}

/* For tests: the counters so far; reset: set them to zero after reading. */
void fakecuda_counters(fakecuda_counters_t *out, int reset)
{
    pthread_mutex_lock(&lock);
    *out = counts;
    if (reset)
        memset(&counts, 0, sizeof counts);
    pthread_mutex_unlock(&lock);
}

/* For tests: pinned host ranges still registered or allocated, and bytes in the pools of devices. */
void fakecuda_live_host(long *n_pinned, long *pool_bytes)
{
    pthread_mutex_lock(&lock);
    *n_pinned = n_hostregs;
    long b = 0;
    for (int i = 0; i < MAX_DEVICES; i++)
        b += (long)pools[i].reserved;
    *pool_bytes = b;
    pthread_mutex_unlock(&lock);
}

/* For tests: bytes of device memory allocated on device `ordinal` (what its stream-ordered pool keeps
 * included: fakecuda_live_host's pool_bytes). */
long fakecuda_device_bytes(int ordinal)
{
    if (ordinal < 0 || ordinal >= MAX_DEVICES)
        return -1;
    pthread_mutex_lock(&lock);
    long n = (long)contexts[ordinal].allocated;
    pthread_mutex_unlock(&lock);
    return n;
}

/* For tests: fn(arg) is called at the start of every synchronous copy (cuMemcpy) from then on, on the
 * copying thread, with no lock of the double held (NULL: no more). */
void fakecuda_on_copy(void (*fn)(void *), void *arg)
{
    atomic_store(&on_copy_arg, arg);
    atomic_store(&on_copy, fn);
}

/* For tests: empties the timeline. */
void fakecuda_timeline_reset(void)
{
    pthread_mutex_lock(&lock);
    n_spans = 0;
    pthread_mutex_unlock(&lock);
}

/* For tests: over the timeline, seconds during which a copy and a kernel ran at the same time on
 * different streams (each pair counted), and seconds of copies and of kernels. */
void fakecuda_overlap(double *both, double *copies, double *kernels)
{
    pthread_mutex_lock(&lock);
    double b = 0, c = 0, k = 0;
    for (long i = 0; i < n_spans; i++) {
        span_t *x = &timeline[i];
        if (x->kernel) {
            k += x->t1 - x->t0;
            continue;
        }
        c += x->t1 - x->t0;
        for (long j = 0; j < n_spans; j++) {
            span_t *y = &timeline[j];
            if (!y->kernel || y->stream == x->stream)
                continue;
            double lo = x->t0 > y->t0 ? x->t0 : y->t0, hi = x->t1 < y->t1 ? x->t1 : y->t1;
            if (hi > lo)
                b += hi - lo;
        }
    }
    pthread_mutex_unlock(&lock);
    *both = b;
    *copies = c;
    *kernels = k;
}

/* For tests: device allocations, streams, events and retained primary
 * contexts still alive. */
void fakecuda_live(long *n_alloc, long *n_stream, long *n_event, long *n_ctx)
{
    pthread_mutex_lock(&lock);
    *n_alloc = n_allocs;
    *n_stream = n_streams;
    *n_event = n_events;
    long c = 0;
    for (int i = 0; i < MAX_DEVICES; i++)
        c += contexts[i].refs;
    *n_ctx = c;
    pthread_mutex_unlock(&lock);
}
