/*
 * parla.h: the public C interface of libparla, the task engine of Parla in C.
 *
 * A runtime owns a pool of worker threads and a set of devices. Programs create
 * tasks (a C function and its argument), connect them with dependencies, give
 * them a priority and resource needs, and submit them. The engine runs each
 * submitted task exactly once, after every task it depends on has finished.
 *
 * Conventions
 *   - Every fallible function returns int: 0 on success or a negative PARLA_E*
 *     code. parla_strerror() names a code; parla_last_error_message() gives the
 *     details of the last failure on the calling thread.
 *   - Lifetime: tasks are reference counted. parla_task_create() returns a task
 *     holding one reference owned by the caller; parla_task_release() drops it.
 *     The engine holds its own references while it needs a task, so releasing a
 *     submitted task is always safe.
 *   - Thread context: every function may be called from any thread, including
 *     from inside a task body, unless its comment says otherwise.
 *   - NULL handles: functions returning int give PARLA_EINVAL; release/retain
 *     and setters do nothing; getters return a neutral value (0, NULL,
 *     "(null)", PARLA_TASK_CREATED). Using a handle after its last release is
 *     undefined, as with free().
 *   - Units: memory in bytes, time in seconds, vcus as a fraction of a device
 *     (1.0 = the whole device).
 */
#ifndef PARLA_H
#define PARLA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PARLA_VERSION_MAJOR 0
#define PARLA_VERSION_MINOR 1

/* ---------------------------------------------------------------- errors -- */

enum {
    PARLA_OK = 0,
    PARLA_EINVAL = -1,     /* an argument is invalid (the message says which) */
    PARLA_ENOMEM = -2,     /* an allocation failed; nothing was changed */
    PARLA_EBUSY = -3,      /* the runtime still has live tasks */
    PARLA_ESTATE = -4,     /* the object is in the wrong state for the call */
    PARLA_ESTUCK = -5,     /* waiting could never end: tasks depend on tasks never submitted */
    PARLA_EFAILED = -6,    /* the task's body reported a failure */
    PARLA_ECANCELLED = -7, /* the task was cancelled (a dependency failed or it was cancelled) */
    PARLA_ENODEV = -8,     /* no such device */
    PARLA_ERESOURCE = -9,  /* resource needs exceed the capacity of every allowed device */
    PARLA_ESYS = -10,      /* an operating system call failed (thread creation, ...) */
    PARLA_EDEVICE = -11,   /* a device operation failed (the message names it) */
    PARLA_ETIMEDOUT = -12, /* a timed wait ran out of time; nothing else changed */
};

/* The name of an error code, e.g. "out of memory". Never NULL; static storage. */
const char *parla_strerror(int code);

/* Details of the last error returned on the calling thread (which task, which
 * argument). Valid until the next failing call on this thread. Never NULL. */
const char *parla_last_error_message(void);

/* ---------------------------------------------------------------- runtime -- */

typedef struct parla_runtime parla_runtime_t;
typedef struct parla_task parla_task_t;

/* Called on each worker thread when it starts (before any task) and when it
 * stops (after its last task). index is 0..n_workers-1. */
typedef void (*parla_worker_hook_fn)(int index, void *user);

/* Called on a worker thread when it finds no task to run, before it spins or
 * sleeps: in its loop, and inside a wait in a body (parla_task_wait*) after
 * the tasks the wait ran itself. Lets a language binding release a lock held
 * across tasks. */
typedef void (*parla_idle_hook_fn)(int index, void *user);

/* Called once when a task reaches a final state (done, failed, cancelled),
 * on the thread that finished it (a worker, or the caller of
 * parla_task_cancel / parla_runtime_cancel_all), with no engine lock held.
 * Lets a binding drop what it attached to the task. */
typedef void (*parla_task_hook_fn)(parla_task_t *task, void *user);

/* The most worker threads a runtime may have. */
#define PARLA_MAX_WORKERS 4096

typedef struct parla_config {
    /* Number of worker threads, at most PARLA_MAX_WORKERS. 0: PARLA_NUM_THREADS
     * if set, else the CPUs this process may run on: its affinity mask
     * (sched_getaffinity, e.g. under taskset) and its cgroup CPU limit
     * (cpu.max, or cfs_quota_us / cfs_period_us), rounded up, at least 1. */
    int n_workers;
    /* Memory of the CPU device in bytes. 0: the machine's physical memory. */
    uint64_t cpu_memory;
    parla_worker_hook_fn worker_start; /* optional */
    parla_worker_hook_fn worker_stop;  /* optional */
    parla_idle_hook_fn worker_idle;    /* optional */
    parla_task_hook_fn task_finished;  /* optional */
    void *hook_user;                   /* passed to the hooks */
    /* Virtual GPUs: when > 0, this many devices of kind PARLA_DEVICE_GPU whose
     * memory is host memory, with a capacity of virtual_gpu_memory bytes each
     * (0: 1 GiB) and a nominal copy bandwidth of virtual_gpu_bandwidth bytes/s
     * (0: 16e9) used in cost estimates. When set, CUDA devices are not used. */
    int n_virtual_gpus;
    uint64_t virtual_gpu_memory;
    double virtual_gpu_bandwidth;
    /* When nonzero, do not look for CUDA devices. */
    int disable_cuda;
    /* When nonzero, record a trace of tasks, dependencies, copies and
     * evictions (see parla_trace_write). Off, it costs one branch per event. */
    int trace;
    /* Testing only: when > 0, the fail_alloc_at-th internal allocation made by
     * this runtime (counting from 1, including those made while creating it)
     * fails, as if memory were exhausted. 0 disables fault injection. */
    uint64_t fail_alloc_at;
    /* CUDA GPUs: when nonzero, host buffers of data are not registered
     * (pinned) with the driver; copies from and to them then block the
     * host (the driver stages pageable memory). */
    int disable_host_pinning;
    /* GPUs: when nonzero, device memory is not cached by the runtime's pool
     * (every copy's buffer is a cuMemAlloc, freed with cuMemFree) and the
     * driver's stream-ordered pool is not used. */
    int disable_memory_pool;
} parla_config_t;

/* Fills *config with the defaults (all zero / NULL). */
void parla_config_init(parla_config_t *config);

/* Creates a runtime and starts its workers. config may be NULL (defaults).
 * Errors: PARLA_EINVAL (n_workers < 0 or > PARLA_MAX_WORKERS, PARLA_NUM_THREADS
 * not a positive integer, n_virtual_gpus < 0, virtual_gpu_bandwidth negative,
 * infinite or NaN), PARLA_ENOMEM, PARLA_ESYS (a thread could not be started). On error
 * *out is NULL and nothing is leaked. */
int parla_runtime_create(const parla_config_t *config, parla_runtime_t **out);

/* Stops the workers and frees the runtime. Returns PARLA_EBUSY, and changes
 * nothing, while submitted tasks have not finished (call parla_runtime_wait_all
 * first). Task handles still held by the program stay valid after a successful
 * destroy; the runtime's memory is freed with the last of them. Must not be
 * called from a task body (PARLA_ESTATE). rt may be NULL (no-op, returns 0). */
int parla_runtime_destroy(parla_runtime_t *rt);

/* Number of worker threads. */
int parla_runtime_num_workers(const parla_runtime_t *rt);

/* 1 when the calling process is not the one that created rt (a fork() child:
 * the runtime's worker and engine threads do not exist in it), else 0.
 * In such a child parla_task_create, parla_task_submit, parla_data_create,
 * parla_runtime_wait_all(_timeout) and parla_runtime_destroy return
 * PARLA_ESTATE with a message saying so, instead of waiting for threads that
 * are not there; destroy in the child frees nothing (the memory belongs to
 * the parent's copy). Thread-safe; cheap (getpid). Bindings use it to refuse
 * work in a child with their own error. */
int parla_runtime_forked(const parla_runtime_t *rt);

/* Blocks until every submitted task has finished (done, failed or cancelled),
 * including tasks submitted by tasks meanwhile. Returns 0, or PARLA_ESTUCK
 * when no task can make progress because some submitted task depends (directly
 * or transitively) on a task that was never submitted; the message then names
 * those never-submitted tasks, the tasks waiting on them and how many are stuck.
 * The stuck tasks stay pending: submit or cancel the missing ones
 * (parla_runtime_unsubmitted() lists them) and wait again. From a task body it
 * returns PARLA_ESTATE (a task cannot wait for itself). The runtime is quiescent
 * when every worker is idle; threads other than the caller that submit tasks
 * concurrently are not waited for. */
int parla_runtime_wait_all(parla_runtime_t *rt);

/* Like parla_runtime_wait_all, but gives up after timeout seconds with
 * PARLA_ETIMEDOUT (so a caller can handle signals and wait again). */
int parla_runtime_wait_all_timeout(parla_runtime_t *rt, double timeout);

/* Stops the runtime promptly: tasks that have not started are cancelled
 * instead of run (those waiting for dependencies when they become ready),
 * never-submitted tasks that others depend on are cancelled, and running
 * bodies finish normally. Follow with parla_runtime_wait_all. Tasks submitted
 * afterwards are cancelled too, until parla_runtime_destroy. Thread-safe. */
void parla_runtime_cancel_all(parla_runtime_t *rt);

/* Resolves a runtime stuck on a dependency cycle among submitted tasks (A
 * depends on B, B on A), which neither parla_runtime_cancel_all nor
 * parla_task_cancel can: each of the n tasks given that is submitted and still
 * waits for dependencies is finished as CANCELLED (error PARLA_ECANCELLED,
 * no cause: it is a root), and the tasks depending on it are cancelled with it
 * as their cause, as for any cancellation. Each task finishes exactly once,
 * whichever of the given tasks reaches it first. Tasks given that have
 * finished, or were never submitted, are skipped. The caller names the tasks
 * (the engine keeps no list of submitted tasks); name every stuck one, or at
 * least one per cycle, and parla_runtime_wait_all then returns 0 and
 * parla_runtime_destroy succeeds. Returns how many of the given tasks it
 * finished itself (>= 0). Errors: PARLA_EINVAL (rt NULL, tasks NULL with
 * n > 0, a NULL task, a task of another runtime), PARLA_ESTATE (the runtime is
 * not stuck: some task is ready, running, copying or a body is blocked in a
 * wait, or nothing is pending; or some task depends on a never-submitted task,
 * which must be submitted or cancelled instead; or called from a task body or
 * a fork() child). Call it from the thread that owns the runtime, after
 * parla_runtime_wait_all returned PARLA_ESTUCK, with no other thread
 * submitting; concurrent calls with the same tasks finish each at most once.
 * It first waits up to 2 s for the runtime to settle (a worker woken by
 * parla_runtime_cancel_all parks again; on a loaded machine that took over
 * 0.1 s), so on a runtime that is still working it returns PARLA_ESTATE
 * after that wait. */
int parla_runtime_cancel_stuck(parla_runtime_t *rt, parla_task_t *const *tasks, size_t n);

/* Stores up to cap never-submitted tasks that submitted tasks depend on into
 * out[], each with a new reference the caller releases, and returns how many
 * such tasks exist (which may exceed cap). Thread-safe; a snapshot. */
size_t parla_runtime_unsubmitted(parla_runtime_t *rt, parla_task_t **out, size_t cap);

/* Counters since creation, for tests and benchmarks. */
typedef struct parla_runtime_stats {
    uint64_t tasks_created;  /* tasks created */
    uint64_t tasks_run;      /* bodies run to completion (done or failed) */
    uint64_t tasks_failed;   /* bodies that reported failure */
    uint64_t tasks_cancelled;
    uint64_t steals;         /* tasks taken from another worker's deque */
    uint64_t parks;          /* times a worker went to sleep */
} parla_runtime_stats_t;

void parla_runtime_stats(parla_runtime_t *rt, parla_runtime_stats_t *out);

/* --------------------------------------------------------------- devices -- */

/* Device 0 is always the CPU; GPUs (CUDA or virtual) follow, numbered from 1.
 * PARLA_ANY_CPU / PARLA_ANY_GPU stand for "any device of that kind" in a
 * placement option. */
typedef enum parla_device_kind {
    PARLA_DEVICE_CPU = 0,
    PARLA_DEVICE_GPU = 1,
} parla_device_kind_t;

#define PARLA_ANY_CPU (-1)
#define PARLA_ANY_GPU (-2)
#define PARLA_MAX_TASK_DEVICES 8 /* devices of one multi-device task */

typedef struct parla_device_info {
    int index;                 /* 0 = cpu, 1.. = GPUs */
    parla_device_kind_t kind;
    int kind_index;            /* index among devices of its kind: gpu(kind_index) */
    int is_virtual;            /* 1 for virtual GPUs */
    int is_cuda;               /* 1 for CUDA GPUs (then cuda_ordinal is set) */
    int cuda_ordinal;
    uint64_t memory_capacity;  /* bytes */
    uint64_t memory_reserved;  /* bytes reserved by running or queued tasks */
    uint64_t memory_resident;  /* bytes of data copies on the device */
    double vcus_capacity;      /* 1.0 */
    double vcus_reserved;
    double bandwidth;          /* bytes/s, nominal host<->device copy bandwidth */
    uint64_t tasks_mapped;     /* tasks mapped to it, not yet finished */
    uint64_t bytes_in;         /* bytes copied onto the device so far */
    uint64_t bytes_out;        /* bytes copied off the device so far */
    uint64_t evictions;        /* copies evicted from the device so far */
    char name[32];             /* "cpu(0)", "gpu(1)" */
} parla_device_info_t;

/* Number of devices (at least 1: the CPU). */
int parla_runtime_num_devices(const parla_runtime_t *rt);

/* Fills *out with a snapshot of device index. Errors: PARLA_ENODEV. */
int parla_device_info(parla_runtime_t *rt, int index, parla_device_info_t *out);

/* Device memory from the runtime's pool on device index (a GPU: CUDA memory
 * from its caching allocator; a virtual GPU: host memory), counted in the
 * device's memory account like data copies (memory_resident), so tasks and
 * copies never oversubscribe it: for buffers an array library allocates
 * inside tasks. nbytes > 0. Any thread. Errors: PARLA_EINVAL (bad argument,
 * the CPU), PARLA_ENODEV, PARLA_ERESOURCE (the device's account is full:
 * nothing was allocated; no copy is evicted for it), PARLA_EDEVICE. */
int parla_device_alloc(parla_runtime_t *rt, int index, uint64_t nbytes, void **out);
/* Gives back memory from parla_device_alloc (the same index and nbytes) once
 * no device work queued on it is pending; it is cached for reuse. */
void parla_device_free(parla_runtime_t *rt, int index, void *ptr, uint64_t nbytes);

/* ----------------------------------------------------------------- tasks -- */

/* A task body. Runs on a worker thread with task = the running task. Returns 0
 * on success; any other value marks the task failed with that code (use a
 * negative PARLA_E* code or a positive code of your own) and cancels every task
 * that depends on it, transitively. Returning PARLA_TASK_SUSPEND is only valid
 * after parla_task_suspend_on() (see there). */
typedef int (*parla_task_fn)(parla_task_t *task, void *arg);

#define PARLA_TASK_SUSPEND 0x5a5a5a5a

typedef enum parla_task_state {
    PARLA_TASK_CREATED = 0,   /* not submitted yet (may already be a dependency) */
    PARLA_TASK_SUBMITTED = 1, /* waiting for dependencies or resources */
    PARLA_TASK_READY = 2,     /* queued to run */
    PARLA_TASK_RUNNING = 3,
    PARLA_TASK_SUSPENDED = 4, /* body suspended, waiting on other tasks */
    PARLA_TASK_RUNAHEAD = 5,  /* GPU work enqueued: done for GPU successors, not yet for the rest */
    PARLA_TASK_DONE = 6,
    PARLA_TASK_FAILED = 7,
    PARLA_TASK_CANCELLED = 8,
} parla_task_state_t;

/* Runahead. A task whose first device is a GPU is done, for the tasks that can
 * only run on GPUs and depend on it, as soon as its body has returned (its GPU
 * work is enqueued): they are released at once (on CUDA GPUs their streams
 * wait for its events; see "CUDA streams"). It becomes DONE, and its other
 * dependents (those that may run on the CPU) are released, when its work is
 * complete: on a CUDA GPU when its events have completed, on a virtual GPU
 * when the device's engine reaches it, after the copies queued on that device
 * before it. No worker blocks for that: the device's engine completes it. Its
 * resources and data stay held until then. */

/* CUDA streams. On a CUDA GPU a body queues its work (kernels, copies) on the
 * stream of its worker for that device and returns; it must not wait for the
 * work. Before the body, that stream waits (cuStreamWaitEvent) for the work of
 * the predecessors that released the task at their runahead; after it, the
 * engine records an event there, which releases the task's GPU dependents
 * (they wait on it on their own streams) and, once complete, its other
 * dependents. A body that fails is waited for (its stream synchronised)
 * before the task's data is released. When the event reports a device error
 * (a faulting kernel), the task fails with PARLA_EDEVICE (the driver's error
 * in the message) and its dependents that were not released at its runahead
 * are cancelled; GPU dependents already released are not (after such an error
 * the CUDA context is unusable anyway). A copy that fails on the device fails
 * the tasks waiting for it, before their bodies run (PARLA_EDEVICE), and the
 * data keeps its last good copy (the copy's source).
 *
 * parla_task_stream returns the CUstream of the running task on its k-th
 * device (k indexes parla_task_devices). The body starts with the primary
 * context of its first CUDA device current on its thread. NULL when that device is not a CUDA GPU, k
 * is out of range, or task is not the caller's running task. Thread context:
 * the task's body only. */
void *parla_task_stream(const parla_task_t *task, int k);

/* Returns the name of a state ("done", ...). */
const char *parla_task_state_name(parla_task_state_t state);

/* Creates a task in state CREATED with one reference for the caller. fn may be
 * NULL and set later with parla_task_set_body() (a task may be a dependency
 * before its body is known: Parla's out-of-order spawn). Errors: PARLA_EINVAL,
 * PARLA_ENOMEM. */
int parla_task_create(parla_runtime_t *rt, parla_task_fn fn, void *arg, parla_task_t **out);

/* Sets the body of a task in state CREATED. */
int parla_task_set_body(parla_task_t *task, parla_task_fn fn, void *arg);

/* Sets the name used in diagnostics (copied; at most 255 bytes are kept).
 * Only in state CREATED. */
int parla_task_set_name(parla_task_t *task, const char *name);
/* The task's name; "task#<n>" when none was set. Valid while the task lives. */
const char *parla_task_name(const parla_task_t *task);

/* Makes task run after dependency has finished. task must be in state CREATED
 * (or be the calling task's own handle inside its body, see suspend_on);
 * dependency may be in any state, including CREATED (never submitted yet) and
 * finished (then it has no effect, unless it failed or was cancelled: task is
 * then cancelled when it would become ready). Both must belong to the same
 * runtime. Errors: PARLA_EINVAL (self-dependency, other runtime), PARLA_ESTATE,
 * PARLA_ENOMEM. */
int parla_task_add_dependency(parla_task_t *task, parla_task_t *dependency);

/* Priority: larger runs first when workers are saturated. Three levels are
 * honoured: > 0 (high), 0 (normal, the default), < 0 (low). State CREATED only. */
int parla_task_set_priority(parla_task_t *task, int priority);

/* Resource needs on the CPU device: vcus in [0, 1] (0 = no vcu limit, the
 * default) and memory in bytes. The task runs only while its needs fit within
 * the device's remaining capacity; otherwise it waits and is started when
 * running tasks release enough. State CREATED only. Errors: PARLA_EINVAL (vcus
 * outside [0, 1] or not a number), PARLA_ESTATE. A need larger than the
 * device's whole capacity makes parla_task_submit() fail with PARLA_ERESOURCE. */
int parla_task_set_resources(parla_task_t *task, double vcus, uint64_t memory);

/* Adds one placement option: the task runs on n devices at once (n = 1 for an
 * ordinary task), each slot naming a device index or PARLA_ANY_CPU /
 * PARLA_ANY_GPU; the devices chosen for one option are distinct. vcus in
 * (0, 1] or 0 (no vcu need) and memory (bytes) are needed on each chosen
 * device, reserved atomically over all of them. With several options the
 * engine maps the task, when it becomes ready, to the best one (locality of
 * its data, transfer cost, load; see parla_task_mapping). Without options a
 * task runs on the CPU with the needs of parla_task_set_resources. State
 * CREATED only. Errors: PARLA_EINVAL (n outside 1..PARLA_MAX_TASK_DEVICES,
 * bad vcus), PARLA_ENODEV (no such device, or fewer devices of a kind than
 * requested), PARLA_ERESOURCE (needs exceed the capacity of every allowed
 * device), PARLA_ENOMEM. */
int parla_task_add_placement(parla_task_t *task, const int *slots, int n, double vcus, uint64_t memory);

/* The devices the task was mapped to (valid once it is ready); returns how
 * many (0 before mapping) and stores up to cap indices in out. */
int parla_task_devices(const parla_task_t *task, int *out, int cap);

/* Why the task went where it went: the scores of the chosen device(s). All
 * terms are unitless; score = locality - transfer - load. */
typedef struct parla_mapping {
    int n_candidates;   /* candidate devices scored */
    double locality;    /* fraction of the task's data bytes already valid there, 0..1 */
    double transfer;    /* missing bytes / data bytes, scaled by the slowest link, >= 0 */
    double load;        /* tasks already mapped there / workers, >= 0 */
    double score;
} parla_mapping_t;

int parla_task_mapping(const parla_task_t *task, parla_mapping_t *out);

/* Hands the task to the engine. It runs once all its dependencies have
 * finished and its resources fit. The caller keeps its reference. Errors:
 * PARLA_ESTATE (already submitted), PARLA_EINVAL (no body), PARLA_ERESOURCE
 * (needs exceed capacity; the task is then failed with that code, so its
 * dependents are cancelled). */
int parla_task_submit(parla_task_t *task);

/* Cancels a task that was never submitted: it finishes as CANCELLED and every
 * task depending on it is cancelled with it as the cause. Errors: PARLA_ESTATE
 * (already submitted). */
int parla_task_cancel(parla_task_t *task);

/* Blocks until task has finished. Returns 0 when it is done, PARLA_EFAILED or
 * PARLA_ECANCELLED otherwise, PARLA_ESTUCK when it can never finish (see
 * parla_runtime_wait_all). Inside a task body the worker runs, while it
 * waits, only ready tasks created by the waiting body itself (isolation): an
 * unrelated task run on the waiter's stack could block on something the
 * waiting body holds (a lock) and deadlock it. Unrelated ready tasks are left
 * to the other workers; only when every worker is inside such a wait does the
 * waiter run any ready task (else nothing could run). A body that holds a
 * lock which tasks it created also take must not wait: release it first, or
 * use parla_task_suspend_on (a continuation: the worker is free meanwhile and
 * no task runs on the body's stack). A body whose awaited tasks were all
 * never submitted, or that can never finish, gets PARLA_ESTUCK with any number
 * of workers. Waiting on the calling task itself returns PARLA_EINVAL. */
int parla_task_wait(parla_task_t *task);

/* Blocks until at least one of tasks[0..n) has finished (done, failed or
 * cancelled), or until timeout seconds have passed when timeout >= 0 (a
 * negative timeout waits without limit; 0 only checks). Returns 0 when one has
 * finished (the caller reads their states), PARLA_ETIMEDOUT, PARLA_ESTUCK when
 * none can ever finish (every one never submitted, or the runtime is stuck),
 * PARLA_EINVAL (no tasks, a NULL task, tasks of different runtimes, the calling
 * task itself). Thread context: any thread; inside a task body the worker runs
 * other tasks meanwhile, like parla_task_wait. */
int parla_task_wait_any(parla_task_t *const *tasks, size_t n, double timeout);

/* Inside a task body: makes the running task wait for n tasks before its body is
 * called again. The body must then return PARLA_TASK_SUSPEND; the worker is
 * freed meanwhile, the task keeps its dependents, and its body is called again
 * (same fn and arg) once the n tasks have finished, whatever their outcome (a
 * failed task does not cancel a suspended waiter: the body decides). Errors:
 * PARLA_ESTATE (not called from this task's body), PARLA_ENOMEM. */
int parla_task_suspend_on(parla_task_t *self, parla_task_t *const *tasks, size_t n);

parla_task_state_t parla_task_state(const parla_task_t *task);

/* For a FAILED task the code its body returned; for a CANCELLED task
 * PARLA_ECANCELLED; 0 otherwise. */
int parla_task_error(const parla_task_t *task);

/* For a CANCELLED task, the failed (or cancelled never-submitted) task that
 * caused it; NULL otherwise. Borrowed: valid while task lives. */
parla_task_t *parla_task_cause(const parla_task_t *task);

/* 1 when task finished DONE as a plain task: it ran on device 0 (the CPU)
 * and had no placement options, data accesses or mapping scores, so its
 * name and state are all that later queries of it can return. A binding may
 * then keep those two and release its handle (10^6 finished tasks then hold
 * no engine memory); 0 for NULL and for every other task. Any thread. */
int parla_task_is_plain_done(const parla_task_t *task);

/* The task running on the calling thread, or NULL outside task bodies.
 * Borrowed. */
parla_task_t *parla_task_current(void);

/* Index of the calling worker thread, or -1 when the caller is not a worker. */
int parla_worker_index(void);

/* Reference counting: the one lifetime rule. */
void parla_task_retain(parla_task_t *task);
void parla_task_release(parla_task_t *task);

/* User data slot: an opaque pointer a binding may attach to a task. */
void parla_task_set_user(parla_task_t *task, void *user);
void *parla_task_user(const parla_task_t *task);

/* ----------------------------------------------------------------- trace -- */

/* Writes what the trace recorded so far (call after parla_runtime_wait_all):
 * chrome_path: Chrome trace JSON (open in https://ui.perfetto.dev or
 * chrome://tracing): one track per worker and per device, tasks with their
 * device and mapping scores, dependencies as flow arrows, copies, evictions;
 * dot_path: the task graph in Graphviz DOT; summary: a text summary (tasks and
 * busy % per device, bytes moved each way, evictions, the critical path and
 * its length), NUL-terminated, truncated to summary_cap bytes. Each output may
 * be NULL. Errors: PARLA_ESTATE (tracing off), PARLA_ESYS (file), PARLA_ENOMEM. */
int parla_trace_write(parla_runtime_t *rt, const char *chrome_path, const char *dot_path, char *summary,
                      size_t summary_cap);

/* ------------------------------------------------------------- busy time -- */

/* Turns on busy-time accounting: from now on, each task body that starts adds
 * to its devices' busy time (parla_device_busy). Off, the default, a body
 * costs one branch; on, two clock reads and a few relaxed stores on the
 * worker's own counters. Stays on until parla_runtime_destroy. Idempotent and
 * thread-safe. Errors: PARLA_EINVAL (rt NULL), PARLA_ENOMEM. */
int parla_runtime_busy_enable(parla_runtime_t *rt);

/* Stores into *seconds the busy time of device index accounted since
 * parla_runtime_busy_enable (0 before), in device-seconds: each body's own
 * time (less the bodies a waiting body ran inside itself; a suspended task's
 * waits not counted) times the share of the device the task holds there: its
 * vcus, or without a vcu limit one worker's share of the CPU (1/n_workers) or
 * a whole GPU. Busy time over elapsed time is the fraction of the device in
 * use, 0..1 (above 1 only when tasks without a vcu limit run beside others
 * on a device: GPU tasks without vcus sharing a GPU, or CPU tasks beside one
 * that holds vcus of the CPU).
 * A GPU task that runs ahead counts its body (which queues the work), not the
 * queued work; a body still running counts when it returns. Thread-safe.
 * Errors: PARLA_EINVAL (rt or seconds NULL), PARLA_ENODEV. */
int parla_device_busy(parla_runtime_t *rt, int index, double *seconds);

/* ------------------------------------------------------------------ data -- */

/* A data object is a block of bytes whose copies the engine keeps coherent
 * across devices (MSI per byte range: a range is valid on a set of devices;
 * a write leaves the writer's device as the only valid copy). A view is a
 * subset of a base object's bytes (a subarray), given as byte ranges; views of
 * one base share its copies. Declared accesses order tasks (read-after-write,
 * write-after-read, write-after-write hazards, in spawn order) and make the
 * data valid on the task's device before its body runs. */
typedef struct parla_data parla_data_t;

typedef enum parla_access_mode {
    PARLA_READ = 1,       /* input */
    PARLA_WRITE = 2,      /* output: no copy in, the body overwrites the range */
    PARLA_READWRITE = 3,  /* inout */
} parla_access_mode_t;

/* Creates a base object of nbytes. host is the CPU copy (borrowed: it must
 * stay valid until the object is released) and holds the initial values; when
 * NULL the engine allocates a zeroed CPU copy. One reference for the caller.
 * Errors: PARLA_EINVAL, PARLA_ENOMEM. */
int parla_data_create(parla_runtime_t *rt, uint64_t nbytes, void *host, parla_data_t **out);

/* Creates a view of base covering n byte ranges [ranges[2i], ranges[2i+1]),
 * sorted and disjoint, within the base (a view of a view is a view of its
 * base). Errors: PARLA_EINVAL (ranges out of bounds, unsorted), PARLA_ENOMEM. */
int parla_data_view(parla_data_t *base, const uint64_t *ranges, size_t n, parla_data_t **out);

void parla_data_retain(parla_data_t *data);
void parla_data_release(parla_data_t *data);

/* 1 when a and b (data objects or views) share a byte of one base object,
 * else 0 (also for NULL). Any thread. */
int parla_data_overlaps(const parla_data_t *a, const parla_data_t *b);

/* Declares that task accesses data with mode (state CREATED only). Adds the
 * hazard dependencies on earlier-spawned tasks whose accesses overlap; when an
 * earlier task already depends (explicitly) on this one, that explicit order
 * wins and no hazard edge is added (no cycle). A task that reads (READ or
 * READWRITE) ranges whose last writer failed or was cancelled is cancelled,
 * whether or not that writer had finished when it was declared; a WRITE-only
 * access replaces the missing version (of the ranges it writes) and later
 * readers of those ranges run again. Only read-after-write edges carry a
 * failure: write-after-write and write-after-read edges order tasks only. Errors: PARLA_EINVAL (other
 * runtime, bad mode), PARLA_ESTATE, PARLA_ENOMEM. */
int parla_task_add_access(parla_task_t *task, parla_data_t *data, parla_access_mode_t mode);

/* As parla_task_add_access, for the task's device at position slot of the
 * devices it is mapped to (0 <= slot < PARLA_MAX_TASK_DEVICES; see
 * parla_task_devices): before the body runs, the data is made valid on that
 * device and pinned there (parla_task_add_access is slot 0, the first device).
 * Hazards are the same whatever the slot. A task may declare one data object
 * for several of its devices; a range it writes through one slot and reads
 * through another is valid afterwards only on the writing slot's device. When
 * the task is mapped to slot or fewer devices, it fails before its body with
 * PARLA_EINVAL (the message names the task and the access). Errors (at the
 * call): those of parla_task_add_access, PARLA_EINVAL (slot out of range; or
 * bytes this task already writes through another slot, which this access
 * writes too: one slot's writes would be lost; parla_data_overlaps tells
 * beforehand). */
int parla_task_add_access_at(parla_task_t *task, parla_data_t *data, parla_access_mode_t mode, int slot);

/* Where data lives on device, as the address of its base's byte 0: byte x of
 * the base is at ptr + x, for the bytes of the allocation holding data's
 * ranges. On the CPU the copy is the whole base. On a GPU a view allocates
 * only the smallest byte range covering its ranges (views whose ranges
 * overlap or touch share one allocation), so ptr itself may lie outside the
 * allocation: use it only with the offsets of data's bytes. For a base of
 * which only views are on device, inside a task: the allocation holding what
 * the calling task declared of that base. NULL when device has no allocation
 * holding data. Borrowed; valid while the data is in use by the calling task,
 * or until the next eviction. */
void *parla_data_device_ptr(parla_data_t *data, int device);

/* Size in bytes of the base object. */
uint64_t parla_data_nbytes(const parla_data_t *data);

/* Bytes of data's ranges valid on device. */
uint64_t parla_data_valid_bytes(parla_data_t *data, int device);

/* Bytes of the base allocated on device (0 if it has no copy there; on a GPU,
 * the sizes of the allocations the views brought there). */
uint64_t parla_data_resident_bytes(parla_data_t *data, int device);

/* Outside tasks: blocks until every spawned task that writes data's ranges
 * (and, when write is nonzero, every one that reads them) has finished, or
 * until timeout seconds have passed when timeout >= 0 (negative: no limit).
 * Only submitted tasks count: one whose accesses are declared but that is not
 * yet submitted comes after this call. Returns 0, PARLA_ETIMEDOUT,
 * PARLA_ESTUCK (a task it waits for can never run), PARLA_EINVAL. A binding waits in slices with it to stay interruptible,
 * then calls parla_data_fetch. */
int parla_data_wait(parla_data_t *data, int write, double timeout);

/* Outside tasks: blocks until every spawned task that writes data's ranges
 * (and, when write is nonzero, every one that reads them) has finished, then
 * makes the ranges valid on device; with write, device becomes the only valid
 * copy. Errors: PARLA_ESTATE (called from a task body on data the task has
 * not declared), PARLA_ENOMEM, PARLA_ERESOURCE (no room on device). */
int parla_data_fetch(parla_data_t *data, int device, int write);

/* A hold keeps the memory of a device copy allocated for code that may use it
 * after the task that accessed it (a binding handing out an array over it).
 * While the engine keeps the copy, the hold changes nothing; when the engine
 * drops the copy (eviction, release of the data, runtime destroy), the memory
 * is no longer counted on the device and stays allocated until the last hold
 * is released. It keeps the values it had then: later writes to the data do
 * not reach it. The runtime's memory (devices included) lives until then too. */
typedef struct parla_hold parla_hold_t;

/* Holds the allocation on device holding data (the one parla_data_device_ptr
 * finds): *out receives the hold, *ptr (when not NULL) the address of the
 * base's byte 0 as parla_data_device_ptr gives it (valid until the hold is
 * released). Any thread. Errors: PARLA_EINVAL, PARLA_ENODEV, PARLA_ESTATE (no
 * allocation on device holds data), PARLA_ENOMEM. */
int parla_data_hold(parla_data_t *data, int device, parla_hold_t **out, void **ptr);

/* The held memory: its address, the base byte it starts at (*lo) and its
 * size in bytes (*nbytes); either pointer may be NULL. A NULL hold gives
 * NULL and zeros. Any thread. */
void *parla_hold_memory(const parla_hold_t *hold, uint64_t *lo, uint64_t *nbytes);

/* Releases a hold (NULL is ignored); the last release of memory the engine
 * has dropped frees it. Any thread. */
void parla_hold_release(parla_hold_t *hold);

/* Drops data's base copy on device, all its allocations (device -1: every non-CPU device). With
 * keep_one_copy, ranges valid only there are first copied to the CPU.
 * Copies in use by running tasks are not evicted (PARLA_EBUSY). */
int parla_data_evict(parla_data_t *data, int device, int keep_one_copy);

/* ---------------------------------------------------------------- graphs -- */

/* A graph is a recorded template of tasks (bodies, names, priorities,
 * resources, placement options, dependencies among them and on outside
 * tasks, data accesses) that can be replayed many times: each replay creates
 * and submits one new task per recorded task in one call, as CUDA graphs and
 * Legion's traces do, without re-checking what cannot change (placement
 * options were checked when recorded). Replays are ordered among themselves,
 * and with every other task, only by their declared data accesses and
 * dependencies, as if the program had spawned the tasks again: replay k + 1
 * may overlap replay k where the data allows. Each replay also creates a join
 * task, named "<graph>#replay<k>" (k from 1), that finishes after every task of
 * that replay and after the join of the replay before it; it fails (state
 * FAILED, error PARLA_EFAILED, the message naming the graph, the replay and
 * the first failed or cancelled task) when a task of its replay or of an
 * earlier one did not finish DONE. From then on the graph is failed: it
 * replays no more (PARLA_EFAILED, same message).
 *
 * Lifetime: reference counted (create gives one reference); the graph holds
 * references to the data objects and outside tasks it names, and each replay
 * in flight holds one to the graph. Thread context: any thread; recording
 * calls on one graph must not run concurrently with each other or with a
 * replay of it; replays of one graph from several threads are serialised.
 * A recorded body is called for every replay with the same arg (the task
 * handle it receives tells replays apart); the program keeps arg valid while
 * the graph lives. */
typedef struct parla_graph parla_graph_t;

/* Creates an empty graph of rt named name (copied; at most 255 bytes kept; NULL:
 * "graph"). Errors: PARLA_EINVAL, PARLA_ENOMEM. */
int parla_graph_create(parla_runtime_t *rt, const char *name, parla_graph_t **out);
void parla_graph_retain(parla_graph_t *graph);
/* Drops a reference; the last one frees the template (the tasks of replays in
 * flight keep the graph until they finish). NULL is ignored. */
void parla_graph_release(parla_graph_t *graph);
const char *parla_graph_name(const parla_graph_t *graph);
/* Recorded tasks. */
size_t parla_graph_num_tasks(const parla_graph_t *graph);
/* Replays issued so far. */
uint64_t parla_graph_num_replays(const parla_graph_t *graph);

/* Records a task with body fn(task, arg) and name (copied, at most 255 bytes;
 * NULL: "<graph>[<index>]"); *node receives its index (0, 1, ... in recording
 * order, which is the order a replay submits them in). Errors: PARLA_EINVAL
 * (fn NULL), PARLA_ESTATE (the graph was replayed already: a replayed graph
 * does not change), PARLA_ENOMEM. The setters below take that index and
 * return PARLA_EINVAL for an index out of range and PARLA_ESTATE once the
 * graph was replayed; they check what parla_task_set_priority,
 * parla_task_set_resources, parla_task_add_placement, parla_task_add_dependency
 * and parla_task_add_access check, with the same errors. */
int parla_graph_add_task(parla_graph_t *graph, const char *name, parla_task_fn fn, void *arg, size_t *node);
int parla_graph_set_priority(parla_graph_t *graph, size_t node, int priority);
int parla_graph_set_resources(parla_graph_t *graph, size_t node, double vcus, uint64_t memory);
int parla_graph_add_placement(parla_graph_t *graph, size_t node, const int *slots, int n, double vcus,
                              uint64_t memory);
/* node runs after the replay's own task of dependency (an index of this graph,
 * recorded before or after node; not node itself). */
int parla_graph_add_dependency(parla_graph_t *graph, size_t node, size_t dependency);
/* node runs after task, a task outside the graph, in every replay (once task
 * has finished this orders nothing, unless it failed or was cancelled: then
 * every replay's task of node is cancelled). The graph keeps a reference. */
int parla_graph_add_external(parla_graph_t *graph, size_t node, parla_task_t *task);
/* node accesses data with mode in every replay (hazards as for
 * parla_task_add_access, against every task spawned or replayed before). The
 * graph keeps a reference to data. */
int parla_graph_add_access(parla_graph_t *graph, size_t node, parla_data_t *data, parla_access_mode_t mode);
/* As parla_graph_add_access, for the task's device at position slot (see
 * parla_task_add_access_at); parla_graph_add_access is slot 0. */
int parla_graph_add_access_at(parla_graph_t *graph, size_t node, parla_data_t *data, parla_access_mode_t mode,
                              int slot);
/* The user pointer of every task node's replays create (parla_task_user);
 * NULL by default. */
int parla_graph_set_user(parla_graph_t *graph, size_t node, void *user);

/* Records a task made with the ordinary API (state CREATED or later, with its
 * priority, resources, placement options and accesses already set): they
 * become a new node, with body fn(task, arg) in replays (fn NULL: the task's
 * own body and arg). deps are the task's explicit dependencies: each one
 * recorded in this graph (before this task, or after it but before the first
 * replay) becomes a dependency on that node, any other an outside dependency
 * (parla_graph_add_external). The graph keeps a
 * reference to task until its first replay, to tell recorded tasks apart.
 * *node (when not NULL) receives the index. Errors: PARLA_EINVAL (task of
 * another runtime, no body), PARLA_ESTATE (graph replayed already),
 * PARLA_ENOMEM. */
int parla_graph_record(parla_graph_t *graph, parla_task_t *task, parla_task_fn fn, void *arg,
                       parla_task_t *const *deps, size_t n_deps, size_t *node);

/* Replays the graph once: creates its tasks, adds their dependencies and
 * accesses, and submits them, in recording order, then its join task (see
 * above), with join_user as the join's user pointer (parla_task_user). *join
 * (when join is not NULL) receives a new reference to the join task. The
 * first replay freezes the graph. Cost: about that of creating and submitting
 * the tasks from C, with no per-task check of the recorded settings. Errors:
 * PARLA_EFAILED (an earlier replay failed; nothing was created), PARLA_EINVAL,
 * PARLA_ESTATE (runtime destroyed or closing, forked child), PARLA_ENOMEM (the
 * tasks not yet submitted are cancelled, the graph is failed, *join is still
 * set). */
int parla_graph_replay(parla_graph_t *graph, void *join_user, parla_task_t **join);

/* Blocks until every replay issued so far has finished (parla_task_wait on
 * the latest join: inside a task body it runs other tasks meanwhile).
 * Returns 0 (also when never replayed), PARLA_EFAILED when a replay failed
 * (the message names the graph, the replay and the task), PARLA_ESTUCK. */
int parla_graph_wait(parla_graph_t *graph);

#ifdef __cplusplus
}
#endif
#endif /* PARLA_H */
