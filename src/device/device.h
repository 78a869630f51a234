/*
 * device/device.h: the device layer: devices (their hardware part: capacity, resource accounting,
 * residency lists), the operations of a device kind (host memory, CUDA), completion events, and the
 * per-device engine thread that runs jobs in order (parla__dev_job_t). Uses only util. Not installed.
 */
#ifndef PARLA_DEVICE_H
#define PARLA_DEVICE_H

#include "util/util.h"

/* ---------------------------------------------------------------- devices -- */

/* Fixed point for vcus: 1.0 == PARLA__VCU_ONE, so sums are exact. */
#define PARLA__VCU_ONE 1000000LL
#define PARLA__MAX_DEVICES 64 /* valid-device masks are 64-bit */

typedef struct parla__dev parla__dev_t;
typedef struct parla__dev_copy parla__dev_copy_t; /* a data copy (data/impl.h): the device only lists them */
typedef struct parla__dev_job parla__dev_job_t;

/* The caching allocator of a GPU's memory (pool.c): freed blocks kept per device (listed by size, 8
 * lists per power of two) for the next allocation of the same size, so that in steady state no driver
 * allocation (a synchronising call) sits on a task's path. Its blocks, in use or cached, are held from
 * the driver (a stream-ordered memory pool where the driver has one, else cuMemAlloc); cached blocks
 * count in the device's memory and are released when room is needed. */
#define PARLA__POOL_CLASSES 448
typedef struct parla__dev_block {
    void *ptr;
    uint64_t size;            /* bytes held from the driver */
    struct parla__dev_block *next;
} parla__dev_block_t;
typedef struct parla__dev_pool {
    pthread_mutex_t lock;     /* a leaf (driver calls are made under it, no other lock) */
    bool on;                  /* false: every alloc and free goes to the driver */
    parla__dev_block_t *free[PARLA__POOL_CLASSES]; /* cached blocks by class */
    parla__dev_block_t **used;    /* blocks handed out, hashed by pointer */
    size_t n_buckets, n_used;
    uint64_t held;            /* bytes of all blocks (in use and cached) */
    uint64_t cached;          /* bytes of cached blocks */
    uint64_t hits, misses, trims; /* allocations served from the cache, from the driver; blocks released */
} parla__dev_pool_t;

/* A completion event of a device (a CUDA event; host devices have none: their
 * work is complete when the call that did it returns). Reference counted:
 * the task that recorded it and each successor that must wait on it hold
 * one; the last release returns it to its device's pool. */
typedef struct parla__dev_event {
    void *handle;               /* CUevent */
    parla__dev_t *device;
    _Atomic int refs;
    struct parla__dev_event *next;  /* in the pool's free list */
} parla__dev_event_t;

/* The operations of a device kind (design section 4). Streams and events are
 * opaque handles (CUstream, CUevent); a kind without them (host memory)
 * leaves those entries NULL: its copies are complete when copy returns and
 * its tasks' work when their bodies return. Every function may be called from
 * any thread, sets the calling thread's device context itself and gives the
 * caller its own context back (all but activate, which is for bodies). Errors:
 * PARLA_ENOMEM (alloc), PARLA_EDEVICE with the driver's error name. */
typedef struct parla__dev_ops {
    const char *name;
    int (*alloc)(parla__dev_t *d, uint64_t nbytes, void **out);
    void (*free)(parla__dev_t *d, void *ptr);
    /* Copies nbytes from src on device s to dst on device d; returns when done. */
    int (*copy)(parla__dev_t *d, void *dst, parla__dev_t *s, const void *src, uint64_t nbytes);
    int (*synchronize)(parla__dev_t *d);
    /* Makes d current for the calling thread's later driver calls. */
    int (*activate)(parla__dev_t *d);
    /* Streams: in-order queues of work on device d. */
    int (*stream_create)(parla__dev_t *d, void **out);
    void (*stream_destroy)(parla__dev_t *d, void *stream);
    int (*stream_synchronize)(parla__dev_t *d, void *stream);
    /* Queues the copy of nbytes from src on device s to dst on device d on stream, a stream of the
     * CUDA side (d when both are GPUs); call it through that side's ops. */
    int (*copy_async)(parla__dev_t *d, void *dst, parla__dev_t *s, const void *src, uint64_t nbytes,
                      void *stream);
    int (*event_create)(parla__dev_t *d, void **out);
    void (*event_destroy)(parla__dev_t *d, void *event);
    /* Marks the point of stream the event completes at. */
    int (*event_record)(parla__dev_t *d, void *event, void *stream);
    /* 1: complete, 0: not yet, < 0: error. */
    int (*event_query)(parla__dev_t *d, void *event);
    int (*event_synchronize)(parla__dev_t *d, void *event);
    /* Work queued on stream after this call waits for the event (which may be
     * another device's); the host does not wait. */
    int (*stream_wait_event)(parla__dev_t *d, void *stream, void *event);
    /* Runs fn(arg) on a driver thread once the work queued on stream before it is complete (fn makes
     * no driver call). NULL where the kind has no streams. */
    int (*launch_host_func)(parla__dev_t *d, void *stream, void (*fn)(void *), void *arg);
    /* The driver's allocation under the pool (raw_alloc: PARLA_ENOMEM when the device is full). */
    int (*raw_alloc)(parla__dev_t *d, uint64_t nbytes, void **out);
    void (*raw_free)(parla__dev_t *d, void *ptr);
    /* After raw_free under pressure: the driver gives the memory back (its own pool trimmed). */
    void (*raw_trim)(parla__dev_t *d);
} parla__dev_ops_t;

/* A registered (pinned) host buffer. */
typedef struct parla__dev_pinned {
    void *ptr;
    parla__dev_t *by;    /* the GPU whose context registered it */
    struct parla__dev_pinned *next;
} parla__dev_pinned_t;

/* What the devices of a runtime share (in parla__dev_devs_t; each device points to it). Completion
 * callbacks (engine.c): a callback wakes every engine of the runtime (a runahead marker on one GPU's
 * engine may wait for another GPU's event). Pinned host buffers (cuda.c). */
typedef struct parla__dev_shared {
    pthread_mutex_t wake_lock; /* before any engine_lock (lock order: sched/sched.h) */
    pthread_cond_t wake_cond;  /* wake_pending reached zero */
    long wake_pending;         /* callbacks launched, not yet run */
    _Atomic bool polling;      /* a callback could not be launched: engines poll (the old way) */
    _Atomic bool errored;      /* a device reported an error (its driver calls no more host functions) */
    _Atomic uint64_t woken, timed_out; /* engine waits ended by a callback, by the safety timeout */
    parla__dev_t *devices;
    int n_devices;
    pthread_mutex_t pin_lock;  /* a leaf: protects pinned */
    parla__dev_pinned_t *pinned[64]; /* hashed by pointer */
    _Atomic long n_pinned;
} parla__dev_shared_t;

struct parla__dev {
    int index;
    parla_device_kind_t kind;
    int kind_index;
    int is_virtual, is_cuda, cuda_ordinal;
    const parla__dev_ops_t *ops;
    void *ctx;                /* backend state (CUDA context) */
    double bandwidth;         /* bytes/s */
    char name[32];
    uint64_t peers;           /* bit i: direct (peer) access to device i's memory (CUDA) */
    double peer_bandwidth;    /* bytes/s over a direct link, nominal (cost estimates) */
    bool pin_host;            /* register host buffers that take part in copies (CUDA) */
    parla__dev_pool_t pool;       /* the caching allocator (GPUs) */
    parla__dev_shared_t *shared;  /* what the runtime's devices share */
    void *alloc_stream;       /* CUDA: the stream of the driver's stream-ordered allocations */
    void *mempool;            /* CUDA: the device's default memory pool, NULL without one */
    void *bounce;             /* CUDA: pinned staging buffer of GPU-to-GPU copies without peer access */

    pthread_mutex_t lock;     /* protects vcus_free, memory_free, the blocked lists (blocked_head,
                                 data_blocked), resident, claimed, n_pins, unpin_epoch and the LRU list of
                                 copies; several only in ascending index (lock order: sched/sched.h) */
    int64_t vcus_capacity;    /* fixed point */
    int64_t vcus_free;
    uint64_t memory_capacity; /* bytes */
    uint64_t memory_free;     /* for task reservations */
    uint64_t resident;        /* bytes of data copies (GPUs) */
    uint64_t claimed;         /* bytes of room task preparations claimed, not allocated yet (data/) */
    parla__dev_copy_t *lru_head, *lru_tail; /* unpinned-or-pinned copies, least recent first */
    uint64_t n_pins;          /* pins of copies on this device by running tasks */
    uint64_t unpin_epoch;     /* bumped whenever running tasks unpin copies */
    parla_task_t *data_blocked; /* tasks waiting for room for their data (linked by qnext) */
    parla_task_t *blocked_head, *blocked_tail; /* tasks waiting for resources, FIFO */

    _Atomic long n_mapped;    /* tasks mapped here, not finished */

    /* The copy engine of a GPU: a thread that makes the copies into (and out
     * of) this device, in order, while workers run other tasks. */
    pthread_t engine;
    bool engine_running;
    pthread_mutex_t engine_lock; /* a leaf: protects the job queue, engine_busy and engine_stop */
    pthread_cond_t engine_cond;
    parla__dev_job_t *jobs_head, *jobs_tail;
    bool engine_busy;         /* a job is being done, or work it issued is in flight */
    bool engine_stop;
    bool engine_wakes;        /* shared->wake_lock: the engine takes callbacks' wakes (running) */
    uint64_t wakes;           /* engine_lock: completion callbacks seen (bumped by each) */
    _Atomic long n_jobs;      /* jobs submitted, not done (so the runtime is not taken for stuck
                                 while every worker sleeps and copies are under way) */
    void *copy_in, *copy_out; /* copy streams (CUDA): onto and off the device */

    pthread_mutex_t event_lock; /* protects event_pool */
    parla__dev_event_t *event_pool;  /* recorded-and-released events, for reuse */
    _Atomic long n_events;       /* events created on the device, not destroyed */
    _Atomic uint64_t bytes_in, bytes_out, evictions;
};

extern const parla__dev_ops_t parla__dev_host_ops;

/* Takes an event from d's pool (or creates one) and records it on stream;
 * one reference for the caller. Errors: PARLA_ENOMEM, PARLA_EDEVICE. */
int parla__dev_event_record(parla__dev_t *d, void *stream, parla__dev_event_t **out);
void parla__dev_event_retain(parla__dev_event_t *e);
/* Drops a reference; the last one returns the event to its device's pool. */
void parla__dev_event_release(parla__dev_event_t *e);
/* 1: the work before the event is complete, 0: not yet, < 0: device error. */
int parla__dev_event_done(parla__dev_event_t *e);
/* Destroys the events in d's pool (at the end of the runtime). */
void parla__dev_event_pool_destroy(parla__dev_t *d);
/* True when d has streams and events (a CUDA GPU). */
static inline bool parla__dev_async(const parla__dev_t *d)
{
    return d->ops->event_record != NULL;
}

/* The device registry (devices[0] is the CPU; GPUs from the CUDA driver or virtual ones), built at
 * runtime creation and destroyed with the runtime. */
/* Builds rt's devices from the configuration c (n_virtual_gpus, virtual_gpu_memory,
 * virtual_gpu_bandwidth, cpu_memory, disable_cuda) and starts the GPUs' engines. */
int parla__dev_devices_init(parla_runtime_t *rt, const parla_config_t *c);
/* Stops the engines and frees the devices (streams made on them by their users first). */
void parla__dev_devices_destroy(parla_runtime_t *rt);
/* CUDA: number of devices found (0 without a driver), and their setup. */
int parla__dev_cuda_count(void);
/* Opens CUDA device ordinal as d (its primary context, allocation stream and, when use_mempool and
 * the driver has them, its default memory pool). */
int parla__dev_cuda_device_init(parla__dev_t *d, int ordinal, bool use_mempool);
/* Enables peer access for every pair of the CUDA devices among devices[0..n) that allow it (once, at
 * start; sets their peers masks). Errors: PARLA_EDEVICE. */
int parla__dev_cuda_peers_init(parla__dev_t *devices, int n);
void parla__dev_cuda_device_destroy(parla__dev_t *d);

/* The device layer's part of a runtime: util's part first, then the devices.
 * The first member of the graph's part (graph/graph.h). */
typedef struct parla__dev_devs {
    parla__alloc_t alloc;     /* first */
    parla__dev_t *devices; /* devices[0] is the CPU */
    int n_devices;
    parla__dev_shared_t shared;
} parla__dev_devs_t;

static inline parla__dev_devs_t *parla__dev_devs(const parla_runtime_t *rt)
{
    return (parla__dev_devs_t *)(void *)rt;
}

/* ------------------------------------------------------------------ pool -- */

/* Memory on GPU d from its pool, counted in d's account (d->resident) when `account` is set: the
 * runtime's own buffers beyond data copies (e.g. an array library's temporaries inside tasks). Takes
 * a cached block of n's class, else one from the driver, releasing cached blocks first when the device
 * would be over its capacity. Any thread, no device lock held. Errors: PARLA_ENOMEM (the account or
 * the device is full; nothing was allocated), PARLA_EDEVICE. */
int parla__dev_mem_alloc(parla__dev_t *d, uint64_t nbytes, bool account, void **out);
/* Gives back memory from parla__dev_mem_alloc (nbytes as allocated, account as given): it is cached
 * for reuse. The caller has made sure no queued device work uses it any more. */
void parla__dev_mem_free(parla__dev_t *d, void *ptr, uint64_t nbytes, bool account);
/* The pool's operations behind a GPU kind's alloc/free (pool.c). */
void parla__dev_pool_init(parla__dev_t *d, bool on);
int parla__dev_pool_alloc(parla__dev_t *d, uint64_t nbytes, void **out);
void parla__dev_pool_free(parla__dev_t *d, void *ptr);
/* Releases d's cached blocks to the driver until at most keep bytes stay cached; returns bytes released. */
uint64_t parla__dev_pool_trim(parla__dev_t *d, uint64_t keep);
/* Releases every block (the end of the runtime). */
void parla__dev_pool_destroy(parla__dev_t *d);
/* Bytes of d held from the driver, of them cached (a snapshot). */
void parla__dev_pool_bytes(parla__dev_t *d, uint64_t *held, uint64_t *cached);

/* --------------------------------------------------------------- pinning -- */

/* Registers host buffer [ptr, ptr + nbytes) with the driver for GPU d (once per buffer: pinned, so
 * copies from and to it are asynchronous); no-op without CUDA or with pinning off. Best effort: a
 * buffer the driver refuses stays pageable (copies still work). Any thread. */
void parla__dev_host_pin(parla__dev_t *d, void *ptr, uint64_t nbytes);
/* Unregisters host buffer ptr if a GPU of the runtime sh pinned it (its store is released). */
void parla__dev_host_unpin(parla__dev_shared_t *sh, void *ptr);

/* ----------------------------------------------------------------- engine -- */

/* A job for a device's engine thread. The engine runs jobs in submission order and knows nothing of
 * what they do: data/ queues copies, sched/ queues the end-of-work markers of runahead tasks and room
 * retries. Embed it as the first member of the job's own record. */
typedef struct parla__dev_job_ops {
    /* Starts j on device d. True when j is complete already (host copies, markers whose work is
     * done): done follows at once; false: its work runs on the device, poll tells when it is over.
     * NULL: j has nothing to start (done follows at once). */
    bool (*issue)(parla__dev_job_t *j, parla__dev_t *d);
    /* True when j's work is complete, also when the device reported an error (the job records it).
     * Called only after issue returned false: NULL for a job whose issue always completes it. */
    bool (*poll)(parla__dev_job_t *j);
    /* j is over (waited: it completed after issue returned, through poll). Runs on the engine thread
     * with no engine lock held; frees j. */
    void (*done)(parla__dev_job_t *j, bool waited);
} parla__dev_job_ops_t;
struct parla__dev_job {
    struct parla__dev_job *next; /* in the engine's queue, then in its in-flight list */
    const parla__dev_job_ops_t *ops;
};

/* Starts / stops device d's engine thread (a GPU's: the CPU has none). Stop runs the jobs still queued
 * first. Errors of start: PARLA_ESYS, PARLA_EDEVICE (copy streams). */
int parla__dev_engine_start(parla__dev_t *d);
void parla__dev_engine_stop(parla__dev_t *d);
/* Queues j on d's running engine (any thread, no lock held). */
void parla__dev_engine_submit(parla__dev_t *d, parla__dev_job_t *j);
/* Arranges for every engine of d's runtime to be woken when the work queued on stream (a stream of
 * d) so far is complete: a host function on the stream (parla__dev_event_record does it for each event).
 * Where none can be launched the engines go back to polling. Any thread. */
void parla__dev_engine_watch(parla__dev_t *d, void *stream);
/* Waits for the callbacks still queued on streams to have run (after the streams are destroyed; at
 * most a short while once a device reported an error: the driver then calls no host function). */
void parla__dev_engine_callbacks_drain(parla__dev_shared_t *sh);
/* True when d's engine has nothing queued and nothing in flight. */
bool parla__dev_engine_idle(parla__dev_t *d);
/* Jobs queued on d's engine, not done (read without a lock: the stuck check). */
static inline long parla__dev_engine_pending(const parla__dev_t *d)
{
    return atomic_load(&((parla__dev_t *)d)->n_jobs);
}
/* True when d has an engine thread (a GPU's): tasks there run ahead. */
static inline bool parla__dev_runs_ahead(const parla__dev_t *d)
{
    return d->engine_running;
}

#endif
