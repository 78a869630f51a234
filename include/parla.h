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
 * sleeps. Lets a language binding release a lock held across tasks. */
typedef void (*parla_idle_hook_fn)(int index, void *user);

/* Called once when a task reaches a final state (done, failed, cancelled),
 * on the thread that finished it (a worker, or the caller of
 * parla_task_cancel / parla_runtime_cancel_all), with no engine lock held.
 * Lets a binding drop what it attached to the task. */
typedef void (*parla_task_hook_fn)(parla_task_t *task, void *user);

typedef struct parla_config {
    /* Number of worker threads. 0: PARLA_NUM_THREADS if set, else the number
     * of online cores. */
    int n_workers;
    /* Memory of the CPU device in bytes. 0: the machine's physical memory. */
    uint64_t cpu_memory;
    parla_worker_hook_fn worker_start; /* optional */
    parla_worker_hook_fn worker_stop;  /* optional */
    parla_idle_hook_fn worker_idle;    /* optional */
    parla_task_hook_fn task_finished;  /* optional */
    void *hook_user;                   /* passed to the hooks */
    /* Testing only: when > 0, the fail_alloc_at-th internal allocation made by
     * this runtime (counting from 1, including those made while creating it)
     * fails, as if memory were exhausted. 0 disables fault injection. */
    uint64_t fail_alloc_at;
} parla_config_t;

/* Fills *config with the defaults (all zero / NULL). */
void parla_config_init(parla_config_t *config);

/* Creates a runtime and starts its workers. config may be NULL (defaults).
 * Errors: PARLA_EINVAL (n_workers < 0 or PARLA_NUM_THREADS not a positive
 * integer), PARLA_ENOMEM, PARLA_ESYS (a thread could not be started). On error
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
    PARLA_TASK_DONE = 5,
    PARLA_TASK_FAILED = 6,
    PARLA_TASK_CANCELLED = 7,
} parla_task_state_t;

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
 * parla_runtime_wait_all). Inside a task body the worker runs other tasks
 * while it waits, so the pool does not deadlock; waiting on the calling task
 * itself returns PARLA_EINVAL. */
int parla_task_wait(parla_task_t *task);

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

#ifdef __cplusplus
}
#endif
#endif /* PARLA_H */
