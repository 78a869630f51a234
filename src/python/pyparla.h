/*
 * pyparla.h: the private header of parla._core, the CPython binding of libparla (this folder only).
 *
 * Thin by design: the engine schedules; the binding turns Python callables into task bodies, drives
 * coroutines (an await suspends the task on what it awaits: a continuation on the same task), and maps
 * error codes to Python exceptions. One file per type, as CPython's Modules/_sqlite:
 *
 *   module.c       module init and slots, constants, module functions, the error mapper
 *   gil.c          worker thread states, the engine's hooks, the GIL around blocking calls,
 *                  deferred decrefs
 *   body.c         the task body (py_task_body), the coroutine driver, awaited tasks, capture
 *   spawn.c        checking a spawn's arguments (dependencies, placements, accesses, feasibility); the
 *                  spawn path in C (parla._core.Spawner: what @spawn(taskid, dependencies) returns) and
 *                  TaskSpace indexing (parla._core.TaskSpaceBase)
 *   spawn_decl.c   a spawn's placement and data access declarations, read in C for the spawn path
 *   space.c        parla._core.TaskTable: a TaskSpace's tasks by key, integer keys stored compactly
 *   task_obj.c     parla._core.Task
 *   runtime_obj.c  parla._core.Runtime
 *   data_obj.c     parla._core.Data and parla._core.Hold
 *   native.c       native task bodies: parla._core.NativeFunction, NativeBody, NativeError (called through
 *                  libffi on a worker without the GIL)
 *   graph_obj.c    parla._core.Graph: capture of Python tasks into a parla_graph_t, replay, replayed bodies
 *
 * Lower files notify nothing upward: the types call the engine, the engine returns codes, and
 * pyparla_set_error turns a code into an exception. The binding sees only parla.h.
 *
 * Threads and the GIL. Each worker gets its own PyThreadState when it starts (worker_start hook). A
 * worker takes the GIL only to run a Python body and keeps it across consecutive bodies; it lets go as
 * soon as it finds no task (worker_idle hook), before it spins or sleeps. The engine never needs the
 * GIL. Blocking calls made from Python (wait_all, close, fetch, waits) release it.
 *
 * Lifetimes. A submitted Task object holds a reference to itself on behalf of the engine, dropped when
 * the task reaches a final state (task_finished hook). That hook may run on a thread without the GIL;
 * then the reference is pushed on a lock-free stack and dropped by the next thread that holds the GIL
 * here (a body, wait_all, close).
 */
#ifndef PYPARLA_H
#define PYPARLA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>

#include "parla.h"

typedef struct TaskObject TaskObject;

/* parla._core.Runtime: one engine runtime. Its fields other than deferred are read and written with
 * the GIL held. */
typedef struct {
    PyObject_HEAD
    parla_runtime_t *rt;
    PyObject *failed;               /* list of Task objects whose body raised, in order */
    _Atomic(TaskObject *) deferred; /* finished tasks whose reference is still to drop */
    PyObject *module;               /* the module (for its state) */
    /* Closing: the context's exit began; only task bodies may still spawn (their tasks are what the
     * exit waits for). Set by begin_close(). */
    int closing;
    /* Inside parla_runtime_destroy (GIL released): no engine call may start. */
    int destroying;
    /* Spawns in progress (inside Task._submit, which may release the GIL while it iterates the
     * dependencies): the exit waits for them before it destroys the engine, so none submits to a
     * destroyed runtime. */
    Py_ssize_t spawning;
    /* Abandoned (a second Ctrl-C while the exit waited for bodies that do not return): the engine and
     * its workers are left running until the process ends; deallocating the object does not wait. */
    int abandoned;
    /* In a child process forked while the runtime ran: the engine (its workers, its locks) belongs to
     * the parent; no engine call is made. */
    int forked;
    /* The engine traces (the trace argument): finished tasks keep their engine tasks, so that a dependency
     * on one still adds its edge, which the trace draws and the critical path follows. */
    int traced;
    /* Finished tasks taken off the cycle collector's lists (see pyparla_task_finished): a PyMem array of
     * n_untracked (cap_untracked allocated), each at its TaskObject.untracked_at; all tracked again, and
     * none untracked any more, from the runtime's first failure (a failed task's traceback can reach any
     * task, and the runtime reaches the failed). */
    TaskObject **untracked;
    Py_ssize_t n_untracked, cap_untracked;
    int failures_seen;
    /* Spawned tasks taken off the cycle collector's lists from their submit to their finish (a pending task
     * is alive anyway: the engine holds it, so it cannot be part of a garbage cycle, and collections need
     * not visit it), with their plain-function bodies: a PyMem hash set of pointers (open addressing,
     * cap_pending a power of two or 0, n_pending held), so that the error paths can still list them
     * (Runtime._pending). GIL held. */
    TaskObject **pending;
    Py_ssize_t n_pending, cap_pending;
    /* The Graph being captured (graph_obj.c; borrowed, cleared when its capture ends or it goes), or NULL:
     * spawns made by capture_thread while it runs the body of capture_task (NULL: outside bodies) are
     * recorded in it. */
    PyObject *capture;
    unsigned long capture_thread;
    parla_task_t *capture_task;
} RuntimeObject;

/* A weak link to a Task object, for its dependents' Task.dependencies: the task's own reference and one
 * per dependent that lists it; obj is cleared when the Task object is freed. PyMem memory, GIL held. */
typedef struct pyparla_anchor {
    Py_ssize_t refs;
    TaskObject *obj;
} pyparla_anchor_t;

/* parla._core.Task: one engine task (the base of parla.tasks.Task).
 *
 * A finished plain task (parla_task_is_plain_done) releases its engine task (pyparla_task_finished):
 * released is then 1, task NULL, the state "done", the devices (0,), and the name is name or cname. */
struct TaskObject {
    PyObject_HEAD
    parla_task_t *task;        /* owned reference; NULL once released */
    RuntimeObject *runtime;    /* strong */
    PyObject *func;            /* the body: a callable, then the coroutine it returned; NULL once finished */
    PyObject *result;          /* the body's return value, or (has_exc) its exception */
    union {
        PyObject *name; /* the name as str when the engine's copy cannot hold it (else NULL) */
        char *cname;    /* name_is_c (once released with name NULL): the engine's name, copied (PyMem) */
    };
    PyObject *dict;
    PyObject *keep;            /* objects kept alive while the body runs (a list, or NULL) */
    /* The dependencies given at spawn, as anchors (held): weak for the Python side, since a dependency's
     * Task object and result are freed when nothing else holds them (its anchor's obj is then NULL). One
     * inline, more in a PyMem array. */
    union {
        pyparla_anchor_t *one;
        pyparla_anchor_t **many;
    } deps;
    pyparla_anchor_t *anchor;  /* this task's anchor, made when a dependent first lists it (or NULL) */
    union {
        TaskObject *deferred_next; /* link in RuntimeObject.deferred, until its finish is handled */
        Py_ssize_t untracked_at;   /* gc_off (after the finish): the position in RuntimeObject.untracked */
    };
    unsigned char engine_ref;  /* the engine holds a reference (taken at submit; cleared by its finish) */
    /* Written with the GIL held (never by the engine's threads, unlike engine_ref). */
    unsigned int submitting : 1; /* inside _submit: a failure is raised there */
    unsigned int gc_off : 1;      /* untracked by pyparla_task_finished, in RuntimeObject.untracked */
    unsigned int released : 1;    /* finished plain: the engine task was released (task is NULL) */
    unsigned int captured : 1;    /* spawned while a graph was captured: its engine task is kept */
    unsigned int has_exc : 1;     /* result holds the exception the task failed with */
    unsigned int name_is_c : 1;   /* the name is cname */
    unsigned int dropped : 1;     /* _drop_result() was called */
    unsigned int pend_off : 1;    /* untracked from its submit to its finish, in RuntimeObject.pending */
    unsigned int set_up : 1;      /* a spawn set its priority or resources (else the engine's defaults) */
    unsigned int func_off : 1;    /* func, a plain function, untracked by the submit (tracked again before
                                     the task lets it go: its deallocation expects a tracked function) */
    uint32_t n_deps;           /* anchors in deps (beside the flags: no word of its own) */
};

/* parla._core.Data: a coherent data object (base or view) of the engine. */
typedef struct {
    PyObject_HEAD
    parla_data_t *data;     /* owned reference */
    RuntimeObject *runtime; /* strong */
    PyObject *base;         /* for a view: the base Data object (keeps the buffer alive) */
    Py_buffer buffer;       /* for a base: the host buffer (CPU copy) */
    int has_buffer;
} DataObject;

/* parla._core.Hold: a hold on a device copy (parla_data_hold). */
typedef struct {
    PyObject_HEAD
    parla_hold_t *hold;
    void *ptr;              /* the held memory */
    Py_ssize_t len;         /* its size in bytes */
    unsigned long long lo;  /* the base byte it starts at */
    int host; /* host memory (cpu, virtual GPU): exported as a writable buffer */
} HoldObject;

/* The refusal of a generator function as a task body, after "task NAME: " (spawn.c; parla._core's
 * GENERATOR_BODY_MESSAGE, which the Python spawn path raises too). */
extern const char pyparla_generator_body_message[];

/* The most devices the spawn's feasibility check reads (spawn.c; more than Parla() allows). */
#define PYPARLA_MAX_DEVICES 64

/* Entries of the cache of the global names a body's code reads (spawn.c). */
#define PYPARLA_GLOBALS_CACHE 64

/* The module's state: its heap types, interned attribute names, and what the spawn path in C needs from
 * parla.tasks (registered once by _spawn_setup) and from the active context (_set_context). */
typedef struct {
    PyTypeObject *runtime_type;
    PyTypeObject *task_type;
    PyTypeObject *data_type;
    PyTypeObject *hold_type;
    PyTypeObject *native_function_type;
    PyTypeObject *native_body_type;
    PyObject *native_error; /* parla._core.NativeError */
    /* native.c: parla._core.NativeCall (the base of parla.native.Call); from parla.native (_native_setup) its
     * markers status and stream and, per pointee type code, the NumPy dtype a PArray passed there has (the
     * spawn path binds a call to its task in C with them: pyparla_native_bind). */
    PyTypeObject *native_call_base;
    PyObject *native_status, *native_stream, *native_dtypes[128];
    PyObject *str_root, *str_np, *str_dtype, *str_bind; /* "_root", "_np", "dtype", "_bind" */
    /* parla.kernels' calls made in C (_tile_call): the flags "U", "L", "T", "N", and per kernel (potrf, trsm,
     * syrk, gemm) the positions of its PArray arguments and status. */
    PyObject *kernel_flags[4], *kernel_slots[4], *str_strides, *kernel_one, *kernel_minus_one; /* 1.0, -1.0 */
    PyTypeObject *graph_type;
    PyTypeObject *spawner_type;
    PyTypeObject *space_type;
    PyTypeObject *table_type;
    PyTypeObject *spawn_function_type;
    PyObject *str_name;     /* "__name__" */
    PyObject *str_qualname; /* "__qualname__" */
    PyObject *str_shape, *str_name_attr, *str_getitem, *str_enabled;
    PyObject *ten, *zero, *zero_float, *empty_tuple; /* 10 (logging.DEBUG), 0, 0.0, () */
    void *free_spawner; /* the memory of the last Spawner freed, for the next one (or NULL) */
    /* The keywords of spawn the spawn path takes, in the order of parla.tasks._spawn's parameters (taskid,
     * dependencies, placement, vcus, memory, input, output, inout, priority). */
    PyObject *spawn_kw[9];
    PyObject *str_data_attr, *str_engine_data, *str_decl, *str_modes, *str_slots; /* _data, _engine_data, ... */
    /* From parla.tasks (_spawn_setup): the Task class, the general spawn (taskid, dependencies) -> decorator,
     * the body wrapper for watched globals (body, task) -> body, the global names a code object reads,
     * the open finish() blocks (a dict), what records a task in them, the spawn logger, and the type of
     * native calls. */
    PyTypeObject *py_task_type;
    PyTypeObject *native_call_type; /* parla.native.Call: a native body (pyparla_native_bind) */
    PyObject *spawn_general, *watch_body, *global_reads, *finish_scopes, *record_in_finish, *spawn_logger;
    PyObject *spawn_log_cache; /* the spawn logger's _cache dict (isEnabledFor answers), or NULL */
    /* From parla.tasks (_spawn_setup_data): what placements and access declarations need (spawn_decl.c):
     * parla.devices.resolve_placement, parla.array._engine_accesses, the objects cpu and cpu(0), the
     * PArray class, parla._cuda.on_cuda_device, the mapping logger and its _cache dict (or NULL). */
    PyObject *resolve_placement, *engine_accesses, *cpu_arch, *cpu0, *on_cuda_device, *mapping_logger,
        *mapping_log_cache;
    /* The version tags the two caches had when they last answered False (0: none; logger_on, spawn.c). */
    uint64_t spawn_log_seen, mapping_log_seen;
    PyTypeObject *parray_type;
    /* The active parla.Parla context and its runtime (both NULL outside one), and whether spawns into it
     * may take the fast path (no task environments, no progress monitor). */
    PyObject *context;
    RuntimeObject *context_rt;
    int context_plain;
    int context_cuda;           /* the context has CUDA GPUs (a placed body then runs on_cuda_device) */
    PyObject *placement_cache;  /* the context's _placement_cache (a dict), or NULL */
    /* The capacities of the devices of caps_rt (the context's runtime once read; NULL: not read in this
     * context), for the spawn's feasibility check: a runtime's devices and capacities are fixed once made. */
    RuntimeObject *caps_rt;
    parla_device_info_t caps[PYPARLA_MAX_DEVICES];
    /* The placement, vcus and memory objects of the last placed spawn found in the context's cache, and
     * what the cache gave for them (spawn_decl.c; cleared with the context). */
    PyObject *last_placement, *last_vcus, *last_memory, *last_resolved;
    unsigned long long anonymous; /* the counter of anonymous task names */
    PyObject *globals_code[PYPARLA_GLOBALS_CACHE], *globals_names[PYPARLA_GLOBALS_CACHE];
} pyparla_state;

extern PyModuleDef pyparla_module_def;
extern PyType_Spec pyparla_runtime_spec, pyparla_task_spec, pyparla_data_spec, pyparla_hold_spec, pyparla_graph_spec;
extern PyType_Spec pyparla_spawner_spec, pyparla_space_spec, pyparla_spawn_function_spec, pyparla_table_spec;
extern PyMethodDef pyparla_spawn_methods[];
extern const char pyparla_forked_message[];

static inline pyparla_state *pyparla_get_state(PyObject *module)
{
    return (pyparla_state *)PyModule_GetState(module);
}

/* The state of the module that defined tp or one of its bases (a subclass defined in Python, such as
 * parla.tasks.Task, finds it too). NULL, with TypeError set, for an unrelated type. */
static inline pyparla_state *pyparla_get_state_by_type(PyTypeObject *tp)
{
    PyObject *module = PyType_GetModuleByDef(tp, &pyparla_module_def);
    return module ? pyparla_get_state(module) : NULL;
}

/* 0 when the Task object was initialised; -1 with RuntimeError set otherwise. */
static inline int pyparla_check_task(TaskObject *self)
{
    if (self->task == NULL && !self->released) {
        PyErr_SetString(PyExc_RuntimeError, "Task object was not initialised");
        return -1;
    }
    return 0;
}

/* The task's name in UTF-8, for messages (GIL held). */
static inline const char *pyparla_task_name(TaskObject *self)
{
    if (self->name_is_c)
        return self->cname;
    if (self->name) {
        const char *s = PyUnicode_AsUTF8(self->name);
        if (s == NULL)
            PyErr_Clear();
        return s ? s : "?";
    }
    if (self->task)
        return parla_task_name(self->task);
    return "(not initialised)";
}

/* ----------------------------------------------------------------------------- errors (module.c) -- */

/* Where an engine code is turned into an exception: the same code raises a different exception at a
 * few places (the table in module.c lists each row). */
typedef enum {
    PYPARLA_AT_CALL,        /* an engine call made by a method (the common case) */
    PYPARLA_AT_TASK_FAILED, /* the engine failed a task (no body ran): the exception stored on it */
    PYPARLA_AT_FETCH,       /* Data.fetch */
    PYPARLA_AT_DATA_WAIT,   /* the wait before an outside access (Data.evict) */
} pyparla_site_t;

/* The exception type (borrowed) that code raises at site. */
PyObject *pyparla_error_type(pyparla_site_t site, int code);
/* Raises that exception with msg, or when msg is NULL or empty with this thread's engine message or
 * the code's text. Returns NULL. The GIL must be held. */
PyObject *pyparla_set_error(pyparla_site_t site, int code, const char *msg);
/* The same exception as a new object, not raised (NULL with an exception set if it cannot be made). */
PyObject *pyparla_new_error(pyparla_site_t site, int code, const char *msg);

/* ------------------------------------------------------------------------------------ gil.c -- */

/* The GIL released around a blocking engine call. On a worker, the call may run other task bodies
 * (helping), which take the GIL themselves; then the GIL is already held when the call returns. */
typedef struct {
    PyThreadState *ts;
    int was_held;
} pyparla_gil_t;

pyparla_gil_t pyparla_gil_release(void);
void pyparla_gil_restore(pyparla_gil_t g);
/* On a worker about to run a Python body: takes the GIL unless this worker holds it already. */
void pyparla_worker_take_gil(void);
/* On a worker about to run a native body: lets the GIL go if this worker holds it (from a Python body). */
void pyparla_worker_release_gil(void);
/* Drops the references the task_finished hook deferred. GIL held. */
void pyparla_drain_deferred(RuntimeObject *rt);
/* Fills the hook fields of cfg for a runtime whose Python object is rt. */
void pyparla_install_hooks(parla_config_t *cfg, RuntimeObject *rt);

/* ----------------------------------------------------------------------------------- body.c -- */

/* The raised exception as one object (NULL if none). */
PyObject *pyparla_take_exception(void);
/* The engine task body of every Python task (arg: the TaskObject). Worker thread, no GIL on entry. */
int pyparla_task_body(parla_task_t *task, void *arg);
/* Makes the engine's failure of obj's task (no body ran) obj's exception and lists it in the runtime's
 * failed list, unless a body or the spawn already raised. GIL held. */
void pyparla_record_engine_failure(RuntimeObject *rt, TaskObject *obj, parla_task_t *task);
/* The engine tasks of a Task or a tuple or list of Tasks: a new PyMem array of *n held handles (a
 * finished task may release its own while the GIL is let go), freed with pyparla_free_handles, or NULL
 * with TypeError/MemoryError set. Released tasks (done) have no handle: they are left out, and *n_done
 * counts them. */
parla_task_t **pyparla_awaited_tasks(PyTypeObject *task_type, PyObject *yielded, Py_ssize_t *n,
                                     Py_ssize_t *n_done);
void pyparla_free_handles(parla_task_t **tasks, Py_ssize_t n);
/* fn with its closure cells copied (captured by value, as Parla does), or fn itself when it is not a
 * Python function or has no closure. New reference. */
PyObject *pyparla_capture(pyparla_state *st, PyObject *fn);

/* --------------------------------------------------------------------------------- native.c -- */

extern PyType_Spec pyparla_native_function_spec, pyparla_native_body_spec;
/* Adds NativeFunction, NativeBody, NativeError and the NATIVE_* constants to the module. */
int pyparla_native_init(PyObject *m, pyparla_state *st);
/* Whether obj is a parla._core.NativeBody. */
int pyparla_is_native_body(pyparla_state *st, PyObject *obj);
/* The engine task body of a task whose body is a NativeBody (arg: the TaskObject, whose func it is). Worker
 * thread; takes the GIL only when the call fails (to attach the exception). */
int pyparla_native_body(parla_task_t *task, void *arg);
/* The NativeBody of call (a parla._core.NativeCall: parla.native.Call) for task, whose declarations are in attrs
 * (a dict with _modes, or NULL: none), made in C when every argument is a common form (numbers, characters,
 * None, declared base PArrays of the expected dtype, parla.native.status and stream); otherwise, and for
 * every error, by the call's own _bind in Python, so the result and the error are the same. New reference, or
 * NULL with the exception set. GIL held. */
PyObject *pyparla_native_bind(pyparla_state *st, TaskObject *task, PyObject *call, PyObject *attrs);
/* Whether obj is a parla.native.Call (exactly: the type registered by _spawn_setup). */
int pyparla_is_native_call(pyparla_state *st, PyObject *obj);
int pyparla_native_traverse(pyparla_state *st, visitproc visit, void *arg);
void pyparla_native_clear(pyparla_state *st);
/* A replayed graph's native task (graph_obj.c): calls body (a NativeBody) for task on a worker, without the
 * GIL. 0, or 1 with the GIL taken and the failure raised (NativeError naming the task). */
int pyparla_native_replay(PyObject *body, parla_task_t *task, RuntimeObject *rt);

/* ---------------------------------------------------------------------------------- spawn.c -- */

/* "O&" converter for a byte count: any integer (int, numpy integers: via __index__) in [0, 2**64);
 * others raise ValueError instead of wrapping around. */
int pyparla_bytes_arg(PyObject *o, void *out);
/* Appends to out every task found in obj (a Task, or an iterable of Tasks and iterables, nested),
 * checking each against self; changes nothing in the graph. 0, or -1 with an exception set. */
/* The checks of one dependency dep of self (initialised, not self, same runtime): 0, or -1 with the
 * exception set. */
int pyparla_check_dependency(TaskObject *self, TaskObject *dep);
int pyparla_collect_dependencies(TaskObject *self, PyTypeObject *task_type, PyObject *obj, int depth,
                                 PyObject *out);
/* Accesses: a sequence of (Data, mode). Returns them as a new list or tuple, each checked; changes
 * nothing in the graph. */
PyObject *pyparla_check_accesses(TaskObject *self, PyTypeObject *data_type, PyObject *accesses);
/* Placement options: None or a sequence of (slots, vcus, memory), slots a tuple of device indices or
 * PARLA_ANY_CPU / PARLA_ANY_GPU; adds them to the task. */
int pyparla_add_options(TaskObject *self, PyObject *options);
/* Refuses (ValueError) a task whose needs no allowed device can ever hold, before the spawn changes the
 * graph. options were checked by pyparla_add_options. */
int pyparla_check_feasible(TaskObject *self, PyObject *options, double vcus, unsigned long long memory);
/* ---------------------------------------------------------------------------- spawn_decl.c -- */

/* A spawn's placement, vcus and memory for task, as parla.devices.resolve_placement resolves them: out
 * gets new references to the options (None, or a list of (slots, vcus, memory)), the vcus (float) and the
 * memory (int). Placements cached in the context are read in C; the rest (and every error) are
 * resolve_placement's. 0, or -1 with its exception set. GIL held. */
int pyparla_spawn_placement(pyparla_state *st, TaskObject *task, PyObject *placement, PyObject *vcus,
                            PyObject *memory, PyObject *out[3]);
/* Forgets the last placement remembered by pyparla_spawn_placement (when the context changes). */
void pyparla_spawn_forget_placement(pyparla_state *st);
/* The engine accesses of a spawn's input, output and inout (decl[0..2]) for task, as
 * parla.array._engine_accesses reads them: a new list of (Data, mode) and (Data, mode, slot) (the empty
 * tuple when nothing is declared), *attrs a new dict of the attributes set on the task at submit (_decl,
 * _modes, _slots; NULL when nothing is declared). PArrays, (PArray, k) and lists and tuples of them are
 * read in C; other forms and every error are _engine_accesses's (TypeError/ValueError naming the task and
 * the argument). options: the resolved placement options. NULL with the exception set. GIL held. */
PyObject *pyparla_spawn_accesses(pyparla_state *st, TaskObject *task, PyObject *const *decl, PyObject *options,
                                 PyObject **attrs);
/* Module state traversal and clearing of what the spawn path holds. */
int pyparla_spawn_traverse(pyparla_state *st, visitproc visit, void *arg);
void pyparla_spawn_clear(pyparla_state *st);
/* Creates the Spawner, TaskSpaceBase and TaskTable types and the constants of the spawn path. */
int pyparla_spawn_init(PyObject *m, pyparla_state *st);

/* ---------------------------------------------------------------------------------- space.c -- */

/* The task of key (a tuple) in table (a TaskTable), borrowed, or NULL (with an exception if the lookup
 * raised: an unhashable key). */
PyObject *pyparla_table_get(PyObject *table, PyObject *key);
/* The task of key in table, recorded as value when the key is new (borrowed), or NULL with an exception. */
PyObject *pyparla_table_setdefault(PyObject *table, PyObject *key, PyObject *value);
/* The task of key (k,) in table (a TaskTable), borrowed, or NULL (no exception). */
PyObject *pyparla_table_get_int(PyObject *table, int64_t k);
/* The task of key (k,) in table, recorded as value when the key is new (borrowed), or NULL with
 * MemoryError. k must not be INT64_MIN (stored as a generic key). */
PyObject *pyparla_table_setdefault_int(PyObject *table, int64_t k, PyObject *value);

/* ------------------------------------------------------------------------------- task_obj.c -- */

/* The exception t failed with (borrowed), or NULL. GIL held. */
static inline PyObject *pyparla_task_exception(TaskObject *t)
{
    return t->has_exc ? t->result : NULL;
}
/* Makes exc (stolen; NULL: none) the exception t failed with, in place of its result. GIL held. */
void pyparla_task_set_exception(TaskObject *t, PyObject *exc);
/* A new Task object of type tp (parla._core.Task or a subclass) with a new engine task named name (UTF-8,
 * len bytes; name_obj, when not NULL, is the same name as str; NULL: the caller has checked that the name has
 * no NUL inside). RuntimeError if rt is closed. GIL held. */
TaskObject *pyparla_task_new(PyTypeObject *tp, RuntimeObject *rt, const char *name, Py_ssize_t len,
                             PyObject *name_obj);
/* Spawns self: args are _submit's (func, dependencies, priority, vcus, memory, options, accesses), attrs
 * None or a dict. Returns None, or NULL with the exception set. */
PyObject *pyparla_task_spawn(TaskObject *self, PyObject *const *args, PyObject *attrs);

/* A task reached its final state (GIL held): its body and closure go now (a cancelled task never ran
 * them), and a done task that cannot be part of a reference cycle leaves the cycle collector's lists. */
void pyparla_task_finished(TaskObject *obj);
/* pyparla_task_finished, then drops the engine's reference to obj (when it is the last one, only that:
 * obj goes at once, with its body and engine task). GIL held. */
void pyparla_task_finished_drop(TaskObject *obj);

/* Lets go of t's body (func): tracked again first if the submit untracked it. GIL held. */
void pyparla_task_clear_func(TaskObject *t);

/* A new list of rt's tasks that are untracked while pending (RuntimeObject.pending). */
PyObject *pyparla_pending_list(RuntimeObject *rt);
/* Appends obj to the runtime's failed list (errors cleared: the failure is recorded, never raised), and
 * tracks every untracked task of the runtime again. */
void pyparla_add_failed(RuntimeObject *rt, TaskObject *obj);

/* ---------------------------------------------------------------------------- graph_obj.c -- */

/* Records task in the Graph its runtime captures, when the calling thread is the capturing one (see
 * RuntimeObject.capture); called by the spawn just before it submits, with the callable it submits, the
 * list of dependency Tasks and the checked (Data, mode) accesses. Never fails the spawn: a failure to
 * record makes the capture unusable. GIL held. */
void pyparla_capture_record(TaskObject *task, PyObject *body, PyObject *deps, PyObject *accesses);
/* The Task object of t when t is the replayed task whose body runs on this thread (made on first use,
 * borrowed), else NULL. GIL held. */
TaskObject *pyparla_replay_current(parla_task_t *t);

/* ---------------------------------------------------------------------------- runtime_obj.c -- */

/* 0 when the runtime can take engine calls; -1 with RuntimeError set (closed, or forked). */
int pyparla_check_open(RuntimeObject *self);
/* obj as the runtime argument of a constructor of type tp (call names it in messages): a parla._core.Runtime
 * that is open (borrowed), or NULL with TypeError / RuntimeError set. */
RuntimeObject *pyparla_runtime_arg(PyTypeObject *tp, PyObject *obj, const char *call);

#endif
