/*
 * trace/trace.h: the trace layer. A sink that the engine fills with typed
 * events (tasks' body runs, dependencies, copies, evictions, device work) and
 * an exporter that turns them into a Chrome trace, a DOT graph and a text
 * summary with the critical path. Not installed.
 *
 * Sink (buffer.c): off by default, every emitter is one branch on the
 * runtime's trace pointer at the call site. When on, each worker appends
 * fixed-size events to its own chunked buffer without a lock; other threads
 * share one buffer under its mutex (a leaf lock). Tracing is best effort: an
 * event that cannot be allocated is dropped, the run goes on.
 *
 * Export (export.c): reads the buffers once the runtime is quiescent (after
 * parla_runtime_wait_all) and knows nothing of tasks or devices beyond what
 * the events and parla__trace_meta_t say.
 *
 * Times are nanoseconds of CLOCK_MONOTONIC (parla__trace_now_ns); serials are the
 * tasks' creation numbers (UINT64_MAX: no task).
 */
#ifndef PARLA_TRACE_TRACE_H
#define PARLA_TRACE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parla.h"

/* What an event is (parla__trace_tev_t.kind) and what its fields hold. Filled only
 * by the emitters below; read only by export.c. */
enum {
    PARLA__TEV_TASK = 1,  /* a body run: ts start, b end, a final state, f mapping scores (flags) */
    PARLA__TEV_EDGE = 2,  /* serial successor, a predecessor, b enum parla__trace_edge_kind */
    PARLA__TEV_COPY = 3,  /* ts start, b end, a bytes, device destination, f[0] source */
    PARLA__TEV_EVICT = 4, /* ts, a bytes, device */
    PARLA__TEV_WORK = 5,  /* a runahead task's device work: ts body end, b complete, device */
};

/* parla__trace_tev_t.flags */
enum {
    PARLA__TEVF_SCORES = 1, /* a TASK event carries mapping scores in f[0..3] */
};

/* What a traced edge is (PARLA__TEV_EDGE's b). */
enum parla__trace_edge_kind {
    PARLA__EK_EXPLICIT = 0, /* a dependency given at submission */
    PARLA__EK_FLOW = 1,     /* a data flow: the successor reads what the predecessor writes */
    PARLA__EK_ORDER = 2,    /* a write-after-read or write-after-write hazard */
    PARLA__EK_AWAIT = 3,    /* the successor's body awaited the predecessor (parla_task_suspend_on) */
};

typedef struct parla__trace_tev {
    uint64_t ts, serial, a, b;
    int16_t kind, flags;
    int16_t worker, device; /* worker: -1 for a thread that is not one of the owner's workers */
    float f[4];
} parla__trace_tev_t;

typedef struct parla__trace parla__trace_t;

/* ns of CLOCK_MONOTONIC. Any thread. */
uint64_t parla__trace_now_ns(void);

/* ------------------------------------------------------------------ sink -- */

/* A sink with one buffer per worker of owner (the runtime whose workers write
 * without a lock; NULL: every thread uses the shared buffer) and one shared
 * buffer. NULL when out of memory. Its clock starts now. */
parla__trace_t *parla__trace_create(const void *owner, int n_workers);
/* Frees the sink and every event and name in it. tr may be NULL. No emitter
 * may run concurrently. */
void parla__trace_destroy(parla__trace_t *tr);
/* When the sink started (ns), the origin of the exported times. */
uint64_t parla__trace_start(const parla__trace_t *tr);

/* The typed emitters. Any thread; each appends one event to the calling
 * thread's buffer. */
/* A run of a task's body on its first device, from t0 to t1, ending in state
 * (DONE, FAILED or SUSPENDED); m: the mapping's scores, NULL when the task
 * was not mapped by scoring (no placement options). */
void parla__trace_task(parla__trace_t *tr, uint64_t serial, uint64_t t0, uint64_t t1, int device, int state,
                       const parla_mapping_t *m);
/* A copy of bytes from device from to device to for task serial (UINT64_MAX:
 * none), from t0 to t1. */
void parla__trace_copy(parla__trace_t *tr, uint64_t serial, uint64_t t0, uint64_t t1, int to, int from,
                       uint64_t bytes);
/* succ depends on pred (kind: enum parla__trace_edge_kind), recorded at ts. */
void parla__trace_edge(parla__trace_t *tr, uint64_t ts, uint64_t pred, uint64_t succ, int kind);
/* bytes evicted from device at ts. */
void parla__trace_evict(parla__trace_t *tr, uint64_t ts, int device, uint64_t bytes);
/* The device work a runahead task queued on device, from its body's end t0
 * to its completion t1. */
void parla__trace_work(parla__trace_t *tr, uint64_t serial, uint64_t t0, uint64_t t1, int device);
/* Names task serial (the name is copied; a later name for the same serial
 * wins). */
void parla__trace_task_name(parla__trace_t *tr, uint64_t serial, const char *name);

/* Calls fn on every event, buffer by buffer (workers' in order, then the
 * shared one), each in the order recorded, until fn returns nonzero, which is
 * returned. Events stay where they are until the sink is destroyed, so the
 * pointers fn sees stay valid. Only while no emitter runs. */
int parla__trace_each_event(const parla__trace_t *tr, int (*fn)(const parla__trace_tev_t *e, void *arg), void *arg);
/* Likewise for the names, in the order given. */
void parla__trace_each_name(const parla__trace_t *tr, void (*fn)(uint64_t serial, const char *name, void *arg),
                            void *arg);

/* ---------------------------------------------------------------- export -- */

/* What the exporter knows of the runtime: its workers (tracks 0..n_workers-1
 * and "other threads") and devices (index 0 the CPU, whose busy capacity is
 * every worker; a GPU's is one), with the counters the summary prints. */
typedef struct parla__trace_device {
    const char *name; /* "cpu(0)", "gpu(1)" */
    uint64_t bytes_in, bytes_out, evictions;
} parla__trace_device_t;

typedef struct parla__trace_meta {
    int n_workers;
    int n_devices;
    const parla__trace_device_t *devices; /* [n_devices] */
} parla__trace_meta_t;

/* Writes the Chrome trace JSON to chrome, the DOT graph to dot and the text
 * summary (NUL-terminated, truncated to cap bytes) to summary; each may be
 * NULL (summary also when cap is 0). The formats are those documented at
 * parla_trace_write. Only while no emitter runs. Returns 0, PARLA_ESYS (a
 * file, with the message set) or PARLA_ENOMEM (message set). */
int parla__trace_export(const parla__trace_t *tr, const parla__trace_meta_t *meta, const char *chrome,
                        const char *dot, char *summary, size_t cap);

/* ------------------------------------------------------------- busy time -- */

/* Per device, the time task bodies ran there, weighted by the share of the
 * device each holds (busy.c). Each worker owns one row of counters, written
 * by it alone and summed by readers, so accounting takes no lock and shares
 * no cache line between workers. */
typedef struct parla__trace_busy parla__trace_busy_t;

/* Counters for n_workers workers and n_devices devices, all 0. NULL when out
 * of memory. */
parla__trace_busy_t *parla__trace_busy_create(int n_workers, int n_devices);
void parla__trace_busy_destroy(parla__trace_busy_t *b); /* b may be NULL; no worker may still account */

/* Worker worker starts a body. Returns what parla__trace_busy_end needs to give the
 * enclosing body (one that waits and runs others inside itself) only its own
 * time. The owning worker only. */
uint64_t parla__trace_busy_begin(parla__trace_busy_t *b, int worker);
/* The body begun with token outer ran for elapsed ns on devices[0..n) (n 0:
 * the CPU) holding vcus of each (a fraction; 0: no limit, counted as one
 * worker's share of the CPU, 1 / n_workers, or a whole GPU). Adds its own
 * time (elapsed less the bodies run inside it) times that share to each
 * device. The owning worker only. */
void parla__trace_busy_end(parla__trace_busy_t *b, int worker, uint64_t outer, uint64_t elapsed, const uint8_t *devices, int n,
                     double vcus);
/* Device-seconds accounted on device so far. Any thread; bodies still running
 * count when they return. */
double parla__trace_busy_seconds(const parla__trace_busy_t *b, int device);

#endif
