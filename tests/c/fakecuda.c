/*
 * fakecuda.c: a test double of the part of the CUDA driver API that libparla
 * uses, so that the CUDA code path (streams, events, asynchronous copies,
 * runahead) runs on machines without a GPU. Load it with
 * PARLA_CUDA_DRIVER=/path/to/libfakecuda.so.
 *
 * Device memory is host memory (so device pointers can be read in tests), but
 * everything else behaves as the driver specifies, and strictly:
 *   - each stream is a thread that runs its work in order, each copy, memset
 *     and host function after a random delay (FAKECUDA_DELAY_US, default 300),
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
 * fakecuda_live() reports what is still allocated, for leak checks;
 * fakecuda_fail(stream) makes the work queued on a stream from then on fail
 * as a faulting kernel does (sticky): events recorded after it, and waits for
 * them, report CUDA_ERROR_LAUNCH_FAILED; fakecuda_fail_next_copy() does the
 * same to the stream of the next cuMemcpyAsync, which copies nothing.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OOM = 2,
    ERR_NOT_INITIALIZED = 3,
    ERR_INVALID_CONTEXT = 201,
    ERR_INVALID_HANDLE = 400,
    ERR_NOT_READY = 600,
    ERR_LAUNCH_FAILED = 719,
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

enum { OP_COPY, OP_MEMSET, OP_HOST, OP_RECORD, OP_WAIT, OP_STOP, OP_FAIL };

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
        for (int i = 0; i < MAX_DEVICES; i++)
            contexts[i].device = i;
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

CUresult cuMemAlloc_v2(CUdeviceptr *out, size_t n)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    if (n == 0)
        return ERR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
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
        *out = (CUdeviceptr)(uintptr_t)a->p;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuMemFree_v2(CUdeviceptr p)
{
    pthread_mutex_lock(&lock);
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
    pthread_mutex_unlock(&lock);
    return r;
}

CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    if (current == NULL)
        return ERR_INVALID_CONTEXT;
    memcpy((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return OK;
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
        if (o->kind == OP_COPY || o->kind == OP_MEMSET || o->kind == OP_HOST)
            pause_random(s);
        if (s->failed && o->kind != OP_RECORD && o->kind != OP_WAIT)
            ; /* a failed stream does no more work */
        else if (o->kind == OP_COPY)
            memcpy(o->dst, o->src, o->n);
        else if (o->kind == OP_MEMSET)
            memset(o->dst, o->byte, o->n);
        else if (o->kind == OP_HOST)
            o->fn(o->arg);
        pthread_mutex_lock(&lock);
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
    for (;;) {
        int busy = 0;
        for (stream_t *s = streams; s; s = s->next_stream)
            busy |= s->device == current->device && s->queued > 0;
        if (!busy)
            break;
        pthread_cond_wait(&changed, &lock);
    }
    pthread_mutex_unlock(&lock);
    return OK;
}

static _Atomic int fail_next_copy;

CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, stream_t *s)
{
    if (atomic_exchange(&fail_next_copy, 0)) {
        op_t f = {.kind = OP_FAIL};
        CUresult r = push(s, f, 1);
        if (r)
            return r;
    }
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
    op_t o = {.kind = OP_HOST, .fn = fn, .arg = arg};
    return push(s, o, 1);
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
