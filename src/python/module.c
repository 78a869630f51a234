/*
 * module.c: parla._core, the CPython binding of libparla.
 *
 * Thin by design: the engine schedules; this file turns Python callables into
 * task bodies, drives coroutines (an await suspends the task on what it
 * awaits: a continuation on the same task), and maps error codes to Python
 * exceptions.
 *
 * Threads and the GIL. Each worker gets its own PyThreadState when it starts
 * (worker_start hook). A worker takes the GIL only to run a Python body and
 * keeps it across consecutive bodies; it lets go as soon as it finds no task
 * (worker_idle hook), before it spins or sleeps. The engine never needs the
 * GIL. Blocking calls made from Python (wait_all, close) release it.
 *
 * Lifetimes. A submitted Task object holds a reference to itself on behalf of
 * the engine, dropped when the task reaches a final state (task_finished
 * hook). That hook may run on a thread without the GIL; then the reference is
 * pushed on a lock-free stack and dropped by the next thread that holds the
 * GIL here (a body, wait_all, close).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdatomic.h>
#include <time.h>

#include "parla.h"

typedef struct TaskObject TaskObject;

/* The raised exception as one object (PyErr_GetRaisedException appeared in
 * CPython 3.12; this works on 3.9 and later). */
static PyObject *take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}


typedef struct {
    PyObject_HEAD
    parla_runtime_t *rt;
    PyObject *failed;                 /* list of Task objects whose body raised, in order */
    _Atomic(TaskObject *) deferred;   /* finished tasks whose reference is still to drop */
    PyObject *module;                 /* the module (for its state) */
    /* Closing: the context's exit began; only task bodies may still spawn
     * (their tasks are what the exit waits for). Set by begin_close(). */
    int closing;
    /* Inside parla_runtime_destroy (GIL released): no engine call may start. */
    int destroying;
    /* Spawns in progress (inside Task._submit, which may release the GIL
     * while it iterates the dependencies): the exit waits for them before it
     * destroys the engine, so none submits to a destroyed runtime. */
    Py_ssize_t spawning;
    /* Abandoned (a second Ctrl-C while the exit waited for bodies that do not
     * return): the engine and its workers are left running until the process
     * ends; deallocating the object does not wait for them. */
    int abandoned;
    /* In a child process forked while the runtime ran: the engine (its
     * workers, its locks) belongs to the parent; no engine call is made. */
    int forked;
} RuntimeObject;

static const char forked_message[] =
    "this Parla runtime belongs to the parent process (os.fork() was called inside its context): the child "
    "cannot use it, its tasks or its PArrays; start a new Parla context in the child";

struct TaskObject {
    PyObject_HEAD
    parla_task_t *task;        /* owned reference */
    RuntimeObject *runtime;    /* strong */
    PyObject *func;            /* the body: a callable, then the coroutine it returned */
    PyObject *result;
    PyObject *exception;
    PyObject *name;            /* str */
    PyObject *dict;
    PyObject *keep;            /* objects kept alive while the body runs (a list, or NULL) */
    TaskObject *deferred_next; /* link in RuntimeObject.deferred */
    int submitting;            /* inside _submit: a failure is raised there */
    int engine_ref;            /* the engine holds a reference (taken at submit) */
};

typedef struct {
    PyTypeObject *runtime_type;
    PyTypeObject *task_type;
    PyTypeObject *data_type;
    PyTypeObject *hold_type;
} module_state;

/* A coherent data object (base or view) of the engine. */
typedef struct {
    PyObject_HEAD
    parla_data_t *data;     /* owned reference */
    RuntimeObject *runtime; /* strong */
    PyObject *base;         /* for a view: the base Data object (keeps the buffer alive) */
    Py_buffer buffer;       /* for a base: the host buffer (CPU copy) */
    int has_buffer;
} DataObject;

static module_state *get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ----------------------------------------------------------- errors -- */

/* Raises the Python exception matching a parla error code, with the engine's
 * message; returns NULL. */
static PyObject *raise_code(int code)
{
    PyObject *type;
    switch (code) {
    case PARLA_EINVAL: type = PyExc_ValueError; break;
    case PARLA_ENOMEM: type = PyExc_MemoryError; break;
    case PARLA_ERESOURCE: type = PyExc_ValueError; break;
    case PARLA_ENODEV: type = PyExc_ValueError; break;
    case PARLA_ETIMEDOUT: type = PyExc_TimeoutError; break;
    default: type = PyExc_RuntimeError; break;
    }
    const char *msg = parla_last_error_message();
    PyErr_Format(type, "%s", msg && *msg ? msg : parla_strerror(code));
    return NULL;
}

/* ---------------------------------------------------- worker threads -- */

/* Per worker thread: its thread state and whether it holds the GIL now. */
static _Thread_local PyThreadState *worker_tstate;
static _Thread_local PyGILState_STATE worker_gilstate;
static _Thread_local int worker_holds_gil;

/* Releases the GIL around a blocking engine call. On a worker, the call may
 * run other task bodies (helping), which take the GIL themselves; then the
 * GIL is already held when the call returns. */
typedef struct {
    PyThreadState *ts;
    int was_held;
} gil_release_t;

static gil_release_t gil_release(void)
{
    gil_release_t g = {PyEval_SaveThread(), worker_holds_gil};
    worker_holds_gil = 0;
    return g;
}

static void gil_restore(gil_release_t g)
{
    if (!worker_holds_gil)
        PyEval_RestoreThread(g.ts);
    worker_holds_gil = g.was_held;
}

static void drain_deferred(RuntimeObject *rt)
{
    TaskObject *t = atomic_exchange(&rt->deferred, NULL);
    while (t) {
        TaskObject *next = t->deferred_next;
        t->deferred_next = NULL;
        Py_DECREF(t);
        t = next;
    }
}

static void hook_worker_start(int index, void *user)
{
    (void)index;
    (void)user;
    worker_gilstate = PyGILState_Ensure();
    worker_tstate = PyThreadState_Get();
    worker_holds_gil = 0;
    PyEval_SaveThread();
}

static void hook_worker_stop(int index, void *user)
{
    (void)index;
    RuntimeObject *rt = user;
    if (!worker_holds_gil)
        PyEval_RestoreThread(worker_tstate);
    worker_holds_gil = 0;
    drain_deferred(rt);
    PyGILState_Release(worker_gilstate);
    worker_tstate = NULL;
}

static void hook_worker_idle(int index, void *user)
{
    (void)index;
    (void)user;
    if (worker_holds_gil) {
        worker_holds_gil = 0;
        PyEval_SaveThread();
    }
}

/* A task the engine failed (its data could not fit, no placement could be
 * satisfied) has no Python exception: make one from the engine's message,
 * which the failing call left on this thread, so the context exit reports
 * it like a body's exception. Needs the GIL. */
static void record_engine_failure(RuntimeObject *rt, TaskObject *obj, parla_task_t *task)
{
    if (obj->exception != NULL || obj->submitting)
        return; /* the body raised (recorded already), or spawn raises it */
    int code = parla_task_error(task);
    const char *msg = parla_last_error_message();
    PyObject *type = code == PARLA_ERESOURCE ? PyExc_MemoryError : PyExc_RuntimeError;
    PyObject *exc = PyObject_CallFunction(type, "s", msg && *msg ? msg : parla_strerror(code));
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    obj->exception = exc;
    Py_CLEAR(obj->func);
    if (PyList_Append(rt->failed, (PyObject *)obj) < 0)
        PyErr_Clear();
}

static void hook_task_finished(parla_task_t *task, void *user)
{
    RuntimeObject *rt = user;
    TaskObject *obj = parla_task_user(task);
    /* Never-spawned tasks (cancelled placeholders) hold no engine reference. */
    if (obj == NULL || !obj->engine_ref)
        return;
    obj->engine_ref = 0;
    if (parla_task_state(task) == PARLA_TASK_FAILED && obj->exception == NULL) {
        PyGILState_STATE g = PyGILState_Ensure();
        record_engine_failure(rt, obj, task);
        Py_DECREF(obj);
        PyGILState_Release(g);
        return;
    }
    if (PyGILState_Check()) {
        Py_DECREF(obj);
        return;
    }
    TaskObject *head = atomic_load(&rt->deferred);
    do {
        obj->deferred_next = head;
    } while (!atomic_compare_exchange_weak(&rt->deferred, &head, obj));
}

/* ---------------------------------------------------------- task body -- */

/* Collects the engine tasks of what a coroutine yielded (a Task or a tuple or
 * list of Tasks). Returns a new array (PyMem) or NULL with an exception set. */
static parla_task_t **awaited_tasks(PyTypeObject *task_type, PyObject *yielded, Py_ssize_t *n)
{
    PyObject *seq;
    if (PyObject_TypeCheck(yielded, task_type)) {
        parla_task_t **out = PyMem_Malloc(sizeof *out);
        if (!out)
            return (parla_task_t **)PyErr_NoMemory();
        out[0] = ((TaskObject *)yielded)->task;
        *n = 1;
        return out;
    }
    if (!PyTuple_Check(yielded) && !PyList_Check(yielded)) {
        PyErr_Format(PyExc_TypeError,
                     "a Parla task can only await Parla tasks, TaskSpaces, task collections and coroutines, "
                     "not %.100s",
                     Py_TYPE(yielded)->tp_name);
        return NULL;
    }
    seq = yielded;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    parla_task_t **out = PyMem_Malloc((size_t)(len ? len : 1) * sizeof *out);
    if (!out)
        return (parla_task_t **)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(item, task_type)) {
            PyMem_Free(out);
            PyErr_Format(PyExc_TypeError, "awaited collection holds a %.100s, not a Parla task",
                         Py_TYPE(item)->tp_name);
            return NULL;
        }
        out[i] = ((TaskObject *)item)->task;
    }
    *n = len;
    return out;
}

static int record_failure(TaskObject *self)
{
    PyObject *exc = take_exception();
    Py_XSETREF(self->exception, exc);
    Py_CLEAR(self->func);
    if (PyList_Append(self->runtime->failed, (PyObject *)self) < 0)
        PyErr_Clear();
    return 1; /* a positive code: the body raised */
}

/* Advances a coroutine: send None (or throw exc when not NULL). */
static int drive_coroutine(TaskObject *self, parla_task_t *task)
{
    PyObject *coro = self->func;
    PyObject *throw_exc = NULL;
    for (;;) {
        PyObject *out = NULL;
        PySendResult r;
        if (throw_exc) {
            out = PyObject_CallMethod(coro, "throw", "O", throw_exc);
            Py_CLEAR(throw_exc);
            if (out == NULL) {
                if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
                    PyObject *exc = take_exception();
                    PyObject *value = PyObject_GetAttrString(exc, "value");
                    Py_DECREF(exc);
                    if (value == NULL)
                        return record_failure(self);
                    Py_XSETREF(self->result, value);
                    Py_CLEAR(self->func);
                    return 0;
                }
                return record_failure(self);
            }
            r = PYGEN_NEXT;
        } else {
            r = PyIter_Send(coro, Py_None, &out);
        }
        if (r == PYGEN_RETURN) {
            Py_XSETREF(self->result, out);
            Py_CLEAR(self->func);
            return 0;
        }
        if (r == PYGEN_ERROR)
            return record_failure(self);
        /* Yielded: what it awaits. */
        module_state *st = get_state(self->runtime->module);
        Py_ssize_t n = 0;
        parla_task_t **tasks = awaited_tasks(st->task_type, out, &n);
        Py_DECREF(out);
        if (tasks == NULL) {
            throw_exc = take_exception();
            continue;
        }
        int rc = parla_task_suspend_on(task, tasks, (size_t)n);
        PyMem_Free(tasks);
        if (rc != 0) {
            raise_code(rc);
            throw_exc = take_exception();
            continue;
        }
        return PARLA_TASK_SUSPEND;
    }
}

static int run_body(TaskObject *self, parla_task_t *task);

static int py_task_body(parla_task_t *task, void *arg)
{
    TaskObject *self = arg;
    int rc = run_body(self, task);
    /* What the body kept for its own duration (arrays over device copies) goes now: a copy the engine
     * evicts later is then freed, not held by a task object that may live on. */
    Py_CLEAR(self->keep);
    return rc;
}

static int run_body(TaskObject *self, parla_task_t *task)
{
    if (!worker_holds_gil) {
        PyEval_RestoreThread(worker_tstate);
        worker_holds_gil = 1;
    }
    drain_deferred(self->runtime);
    PyObject *func = self->func;
    if (func == NULL) {
        PyErr_Format(PyExc_RuntimeError, "task %U has no body", self->name);
        return record_failure(self);
    }
    if (PyCoro_CheckExact(func) || PyGen_CheckExact(func))
        return drive_coroutine(self, task);
    PyObject *res = PyObject_CallNoArgs(func);
    if (res == NULL)
        return record_failure(self);
    if (PyCoro_CheckExact(res)) {
        Py_SETREF(self->func, res);
        return drive_coroutine(self, task);
    }
    Py_XSETREF(self->result, res);
    Py_CLEAR(self->func);
    return 0;
}

/* ------------------------------------------------------------ capture -- */

/* Returns fn with its closure cells copied (captured by value, as Parla
 * does), or fn itself when it has no closure. New reference. */
static PyObject *capture(PyObject *fn)
{
    if (!PyFunction_Check(fn)) {
        Py_INCREF(fn);
        return fn;
    }
    PyObject *closure = PyFunction_GetClosure(fn);
    if (closure == NULL || PyTuple_GET_SIZE(closure) == 0) {
        Py_INCREF(fn);
        return fn;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(closure);
    PyObject *cells = PyTuple_New(n);
    if (!cells)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *cell = PyCell_New(PyCell_GET(PyTuple_GET_ITEM(closure, i)));
        if (!cell) {
            Py_DECREF(cells);
            return NULL;
        }
        PyTuple_SET_ITEM(cells, i, cell);
    }
    PyFunctionObject *f = (PyFunctionObject *)fn;
    PyObject *copy = PyFunction_NewWithQualName(PyFunction_GET_CODE(fn), PyFunction_GET_GLOBALS(fn), f->func_qualname);
    if (!copy)
        goto fail;
    if (PyFunction_SetClosure(copy, cells) < 0)
        goto fail;
    if (f->func_defaults && PyFunction_SetDefaults(copy, f->func_defaults) < 0)
        goto fail;
    if (f->func_kwdefaults && PyFunction_SetKwDefaults(copy, f->func_kwdefaults) < 0)
        goto fail;
    if (f->func_name) {
        Py_INCREF(f->func_name);
        Py_XSETREF(((PyFunctionObject *)copy)->func_name, f->func_name);
    }
    Py_DECREF(cells);
    return copy;
fail:
    Py_XDECREF(copy);
    Py_DECREF(cells);
    return NULL;
}

/* ---------------------------------------------------------- Task type -- */

static int check_open(RuntimeObject *self);

static int Task_init(TaskObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runtime", "name", NULL};
    PyObject *rt_obj, *name;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OU", kwlist, &rt_obj, &name))
        return -1;
    module_state *st = PyType_GetModuleState(Py_TYPE(rt_obj));
    if (st == NULL || !PyObject_TypeCheck(rt_obj, st->runtime_type)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "Task(runtime, name): runtime must be a parla._core.Runtime");
        return -1;
    }
    RuntimeObject *rt = (RuntimeObject *)rt_obj;
    if (check_open(rt) < 0)
        return -1;
    if (self->task) {
        PyErr_SetString(PyExc_RuntimeError, "Task.__init__ called twice");
        return -1;
    }
    parla_task_t *t;
    int rc = parla_task_create(rt->rt, NULL, NULL, &t);
    if (rc)
        return raise_code(rc), -1;
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &len);
    if (utf8 == NULL || (rc = parla_task_set_name(t, utf8)) != 0) {
        parla_task_release(t);
        if (rc)
            raise_code(rc);
        return -1;
    }
    parla_task_set_user(t, self);
    self->task = t;
    Py_INCREF(rt);
    self->runtime = rt;
    Py_INCREF(name);
    self->name = name;
    return 0;
}

static int Task_traverse(TaskObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->runtime);
    Py_VISIT(self->func);
    Py_VISIT(self->result);
    Py_VISIT(self->exception);
    Py_VISIT(self->dict);
    Py_VISIT(self->keep);
    return 0;
}

static int Task_clear(TaskObject *self)
{
    Py_CLEAR(self->keep);
    Py_CLEAR(self->func);
    Py_CLEAR(self->result);
    Py_CLEAR(self->exception);
    Py_CLEAR(self->dict);
    return 0;
}

static void Task_dealloc(TaskObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Task_clear(self);
    if (self->task && self->runtime && self->runtime->forked) {
        self->task = NULL; /* the parent's engine: not touched in a forked child */
    } else if (self->task) {
        parla_task_set_user(self->task, NULL);
        parla_task_release(self->task);
        self->task = NULL;
    }
    Py_CLEAR(self->runtime);
    Py_CLEAR(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int check_task(TaskObject *self)
{
    if (self->task == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Task object was not initialised");
        return -1;
    }
    return 0;
}

/* Appends to out every task found in obj (a Task, or an iterable of Tasks
 * and iterables, nested), checking each; changes nothing in the graph. */
static int collect_dependencies(TaskObject *self, PyTypeObject *task_type, PyObject *obj, int depth, PyObject *out)
{
    if (PyObject_TypeCheck(obj, task_type)) {
        TaskObject *dep = (TaskObject *)obj;
        if (check_task(dep) < 0)
            return -1;
        if (dep == self) {
            PyErr_Format(PyExc_ValueError, "task %U cannot depend on itself", self->name);
            return -1;
        }
        if (dep->runtime != self->runtime) {
            PyErr_Format(PyExc_ValueError,
                         "task %U: dependency %U belongs to another Parla runtime (a finished context?)",
                         self->name, dep->name);
            return -1;
        }
        return PyList_Append(out, obj);
    }
    if (obj == Py_None)
        return 0;
    if (depth > 32) {
        PyErr_Format(PyExc_ValueError, "task %U: dependencies are nested too deeply", self->name);
        return -1;
    }
    if (PyList_CheckExact(obj) || PyTuple_CheckExact(obj)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(obj, i);
            Py_INCREF(item);
            int r = collect_dependencies(self, task_type, item, depth + 1, out);
            Py_DECREF(item);
            if (r < 0)
                return -1;
        }
        return 0;
    }
    PyObject *it = PyObject_GetIter(obj);
    if (it == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "task %U: dependencies must be tasks, TaskSpace slices or iterables of them, not %.100s",
                     self->name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int r = collect_dependencies(self, task_type, item, depth + 1, out);
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* "O&" converter for a byte count: any integer (int, numpy integers: via
 * __index__) in [0, 2**64); larger or negative ones raise ValueError instead
 * of wrapping around. */
static int bytes_arg(PyObject *o, void *out)
{
    PyObject *i = PyNumber_Index(o);
    if (i == NULL)
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(i);
    Py_DECREF(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "a memory size must be a whole number of bytes in [0, 2**64), not %R", o);
        return 0;
    }
    *(unsigned long long *)out = v;
    return 1;
}

/* Placement options: None or a sequence of (slots, vcus, memory), slots a
 * tuple of device indices or PARLA_ANY_CPU / PARLA_ANY_GPU. */
static int add_options(TaskObject *self, PyObject *options)
{
    if (options == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(options, "placement options must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *slots_obj;
        double vcus;
        unsigned long long memory;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "OdO&", &slots_obj, &vcus, bytes_arg, &memory))
            goto fail;
        PyObject *slots = PySequence_Fast(slots_obj, "slots must be a sequence");
        if (slots == NULL)
            goto fail;
        int buf[PARLA_MAX_TASK_DEVICES];
        Py_ssize_t k = PySequence_Fast_GET_SIZE(slots);
        if (k < 1 || k > PARLA_MAX_TASK_DEVICES) {
            Py_DECREF(slots);
            PyErr_Format(PyExc_ValueError, "task %U: a placement names 1 to %d devices, not %zd", self->name,
                         PARLA_MAX_TASK_DEVICES, k);
            goto fail;
        }
        for (Py_ssize_t j = 0; j < k; j++) {
            buf[j] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(slots, j));
            if (buf[j] == -1 && PyErr_Occurred()) {
                Py_DECREF(slots);
                goto fail;
            }
        }
        Py_DECREF(slots);
        int rc = parla_task_add_placement(self->task, buf, (int)k, vcus, memory);
        if (rc) {
            raise_code(rc);
            goto fail;
        }
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

/* Accesses: a sequence of (Data, mode). Returns them as a new list or tuple,
 * each checked; changes nothing in the graph. */
static PyObject *check_accesses(TaskObject *self, PyTypeObject *data_type, PyObject *accesses)
{
    PyObject *seq = PySequence_Fast(accesses, "accesses must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError, "task %U: access %zd must be a (data, mode) tuple", self->name, i);
            goto fail;
        }
        PyObject *data = PyTuple_GET_ITEM(item, 0);
        int mode = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        if (mode == -1 && PyErr_Occurred())
            goto fail;
        if (!PyObject_TypeCheck(data, data_type)) {
            PyErr_Format(PyExc_TypeError, "task %U: access %zd is a %.100s, not engine data", self->name, i,
                         Py_TYPE(data)->tp_name);
            goto fail;
        }
        DataObject *d = (DataObject *)data;
        if (d->runtime != self->runtime) {
            PyErr_Format(PyExc_ValueError, "task %U: a PArray belongs to another Parla runtime", self->name);
            goto fail;
        }
        if (mode != PARLA_READ && mode != PARLA_WRITE && mode != PARLA_READWRITE) {
            PyErr_Format(PyExc_ValueError, "task %U: access %zd has mode %d, not read, write or read-write",
                         self->name, i, mode);
            goto fail;
        }
    }
    return seq;
fail:
    Py_DECREF(seq);
    return NULL;
}

/* Whether a device can hold a need of one slot of a placement option. */
static int slot_fits(const parla_device_info_t *d, int slot, double vcus, unsigned long long memory)
{
    int kind_ok = slot == PARLA_ANY_CPU   ? d->kind == PARLA_DEVICE_CPU
                  : slot == PARLA_ANY_GPU ? d->kind != PARLA_DEVICE_CPU
                                          : d->index == slot;
    return kind_ok && d->vcus_capacity >= vcus && d->memory_capacity >= memory;
}

/* Refuses a task whose needs no allowed device can ever hold, before the
 * spawn changes the graph (the engine would otherwise fail it at submit,
 * after its dependencies and accesses were recorded). options were checked
 * by add_options. Raises ValueError, with the engine's wording. */
static int check_feasible(TaskObject *self, PyObject *options, double vcus, unsigned long long memory)
{
    parla_runtime_t *rt = self->runtime->rt;
    int n_dev = parla_runtime_num_devices(rt);
    parla_device_info_t devs[64];
    if (n_dev > 64)
        return 0; /* more than Parla() allows: the engine checks at submit */
    for (int i = 0; i < n_dev; i++)
        parla_device_info(rt, i, &devs[i]);
    if (options == Py_None) {
        if (vcus <= devs[0].vcus_capacity && memory <= devs[0].memory_capacity)
            return 0;
        char text[256];
        PyOS_snprintf(text, sizeof text,
                      "needs vcus=%g and memory=%llu bytes, more than the whole cpu device (vcus=1, memory=%llu "
                      "bytes)", vcus, memory, (unsigned long long)devs[0].memory_capacity);
        PyErr_Format(PyExc_ValueError, "task %U %s", self->name, text);
        return -1;
    }
    Py_ssize_t n = PySequence_Length(options);
    unsigned long long largest = 0;
    double first_vcus = 0;
    unsigned long long first_memory = 0;
    for (Py_ssize_t o = 0; o < n; o++) {
        PyObject *opt = PySequence_GetItem(options, o), *slots = NULL;
        double ov;
        unsigned long long om;
        if (opt == NULL || !PyArg_ParseTuple(opt, "OdK", &slots, &ov, &om)) {
            Py_XDECREF(opt);
            return -1;
        }
        Py_INCREF(slots);
        Py_DECREF(opt);
        if (o == 0) {
            first_vcus = ov;
            first_memory = om;
        }
        Py_ssize_t k = PySequence_Length(slots);
        int feasible = k > 0;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *item = PySequence_GetItem(slots, j);
            int slot = item ? (int)PyLong_AsLong(item) : 0;
            Py_XDECREF(item);
            if (PyErr_Occurred()) {
                Py_DECREF(slots);
                return -1;
            }
            int any = 0;
            for (int i = 0; i < n_dev; i++) {
                if (slot_fits(&devs[i], slot, 0.0, 0) && devs[i].memory_capacity > largest)
                    largest = devs[i].memory_capacity;
                any |= slot_fits(&devs[i], slot, ov, om);
            }
            feasible &= any;
        }
        Py_DECREF(slots);
        if (feasible)
            return 0;
    }
    char text[256];
    PyOS_snprintf(text, sizeof text,
                  "no device allowed by its placement can hold its needs (vcus=%g, memory=%llu bytes; the largest "
                  "allowed device has a capacity of %llu bytes)", first_vcus, first_memory, largest);
    PyErr_Format(PyExc_ValueError, "task %U: %s", self->name, text);
    return -1;
}

static PyObject *task_submit(TaskObject *self, PyObject *const *args, PyObject *attrs);

/* _submit(func, dependencies, priority, vcus, memory, options, accesses): spawns the task. */
static PyObject *Task_submit(TaskObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "_submit(func, dependencies, priority, vcus, memory, options, accesses[, attributes])");
        return NULL;
    }
    if (check_task(self) < 0)
        return NULL;
    RuntimeObject *rt = self->runtime;
    if (rt->forked)
        return PyErr_SetString(PyExc_RuntimeError, forked_message), NULL;
    if (rt->rt == NULL || rt->destroying) {
        PyErr_Format(PyExc_RuntimeError, "task %U: its Parla runtime is closed (the context has exited)",
                     self->name);
        return NULL;
    }
    if (rt->closing && parla_task_current() == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot spawn task %U: its Parla context is closing (its 'with Parla()' block was left, "
                     "on another thread); only tasks may spawn tasks once the block is left",
                     self->name);
        return NULL;
    }
    rt->spawning++;
    PyObject *out = task_submit(self, args, nargs == 8 ? args[7] : Py_None);
    rt->spawning--;
    return out;
}

/* attrs: None or a dict of attributes set on the task once nothing can
 * refuse the spawn (no other thread runs from there to the submit: of threads
 * spawning one task at once, exactly one sets them and submits). */
static PyObject *task_submit(TaskObject *self, PyObject *const *args, PyObject *attrs)
{
    if (parla_task_state(self->task) != PARLA_TASK_CREATED) {
        PyErr_Format(PyExc_RuntimeError, "task %U was already spawned; a task id can be spawned only once",
                     self->name);
        return NULL;
    }
    PyObject *func = args[0];
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError, "task %U: the body must be callable, not %.100s", self->name,
                     Py_TYPE(func)->tp_name);
        return NULL;
    }
    long priority = PyLong_AsLong(args[2]);
    if (priority == -1 && PyErr_Occurred())
        return NULL;
    if (priority < -1000000 || priority > 1000000) {
        PyErr_Format(PyExc_ValueError, "task %U: priority %ld is out of range", self->name, priority);
        return NULL;
    }
    double vcus = PyFloat_AsDouble(args[3]);
    if (vcus == -1.0 && PyErr_Occurred())
        return NULL;
    unsigned long long memory = 0;
    if (!bytes_arg(args[4], &memory)) {
        PyErr_Format(PyExc_ValueError, "task %U: memory=%R must be a whole number of bytes in [0, 2**64)",
                     self->name, args[4]);
        return NULL;
    }
    /* Everything is checked before the first change to the graph, so a spawn
     * that raises leaves no trace: no edge, no access recorded on a PArray,
     * no failed task. Only this task's own settings (priority, resources,
     * placement options) are set before a check can fail; a later spawn of
     * the same task sets them again. */
    int rc = parla_task_set_priority(self->task, (int)priority);
    if (rc == 0)
        rc = parla_task_set_resources(self->task, vcus, memory);
    if (rc)
        return raise_code(rc);
    module_state *st = get_state(self->runtime->module);
    PyObject *deps = PyList_New(0);
    if (deps == NULL)
        return NULL;
    PyObject *accesses = NULL;
    if (collect_dependencies(self, st->task_type, args[1], 0, deps) < 0)
        goto fail;
    /* Iterating the dependencies may have run other threads (one may have
     * spawned this task meanwhile). */
    if (self->runtime->rt == NULL || self->runtime->destroying) {
        PyErr_Format(PyExc_RuntimeError, "task %U: its Parla runtime closed while its dependencies were read",
                     self->name);
        goto fail;
    }
    if (parla_task_state(self->task) != PARLA_TASK_CREATED) {
        PyErr_Format(PyExc_RuntimeError, "task %U was already spawned; a task id can be spawned only once",
                     self->name);
        goto fail;
    }
    accesses = check_accesses(self, st->data_type, args[6]);
    if (accesses == NULL || add_options(self, args[5]) < 0 || check_feasible(self, args[5], vcus, memory) < 0)
        goto fail;
    PyObject *body = capture(func);
    if (body == NULL)
        goto fail;
    if (attrs != Py_None) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        if (!PyDict_Check(attrs)) {
            PyErr_SetString(PyExc_TypeError, "_submit: attributes must be a dict");
            Py_DECREF(body);
            goto fail;
        }
        while (PyDict_Next(attrs, &pos, &key, &value)) {
            if (PyObject_GenericSetAttr((PyObject *)self, key, value) < 0) {
                Py_DECREF(body);
                goto fail;
            }
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(deps); i++) {
        rc = parla_task_add_dependency(self->task, ((TaskObject *)PyList_GET_ITEM(deps, i))->task);
        if (rc)
            break; /* out of memory: the edges added so far stay */
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(accesses); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(accesses, i);
        DataObject *d = (DataObject *)PyTuple_GET_ITEM(item, 0);
        rc = parla_task_add_access(self->task, d->data, (parla_access_mode_t)PyLong_AsLong(PyTuple_GET_ITEM(item, 1)));
    }
    Py_CLEAR(deps);
    Py_CLEAR(accesses);
    if (rc) {
        Py_DECREF(body);
        return raise_code(rc);
    }
    Py_XSETREF(self->func, body);
    rc = parla_task_set_body(self->task, py_task_body, self);
    if (rc)
        return raise_code(rc);
    Py_INCREF(self); /* the engine's reference, dropped by hook_task_finished */
    self->engine_ref = 1;
    self->submitting = 1;
    rc = parla_task_submit(self->task);
    self->submitting = 0;
    if (rc == 0 && parla_task_state(self->task) == PARLA_TASK_FAILED && self->exception == NULL) {
        /* Failed inside submit (no placement could be mapped): report it at exit. */
        record_engine_failure(self->runtime, self, self->task);
    }
    if (rc) {
        raise_code(rc);
        if (rc == PARLA_ERESOURCE) {
            /* Submitted as failed: the hook drops the engine's reference. The
             * exception raised here is the task's, so it is not reported twice. */
            PyObject *exc = take_exception();
            Py_XSETREF(self->exception, Py_NewRef(exc));
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        } else {
            self->engine_ref = 0;
            Py_DECREF(self);
        }
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    Py_XDECREF(deps);
    Py_XDECREF(accesses);
    return NULL;
}

/* _keep(obj): keeps obj alive until the running segment of the body returns. */
static PyObject *Task_keep(TaskObject *self, PyObject *obj)
{
    if (self->keep == NULL && (self->keep = PyList_New(0)) == NULL)
        return NULL;
    if (PyList_Append(self->keep, obj) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Task_cancel(TaskObject *self, PyObject *unused)
{
    (void)unused;
    if (check_task(self) < 0)
        return NULL;
    int rc = parla_task_cancel(self->task);
    if (rc)
        return raise_code(rc);
    Py_RETURN_NONE;
}

static PyObject *Task_wait(TaskObject *self, PyObject *unused)
{
    (void)unused;
    if (check_task(self) < 0)
        return NULL;
    gil_release_t g = gil_release();
    int rc = parla_task_wait(self->task);
    gil_restore(g);
    return PyLong_FromLong(rc);
}

static PyObject *Task_drop_result(TaskObject *self, PyObject *unused)
{
    (void)unused;
    Py_CLEAR(self->result);
    Py_RETURN_NONE;
}

static PyObject *Task_get_state(TaskObject *self, void *c)
{
    (void)c;
    if (check_task(self) < 0)
        return NULL;
    return PyUnicode_FromString(parla_task_state_name(parla_task_state(self->task)));
}

static PyObject *Task_get_done(TaskObject *self, void *c)
{
    (void)c;
    if (check_task(self) < 0)
        return NULL;
    return PyBool_FromLong(parla_task_state(self->task) >= PARLA_TASK_DONE);
}

static PyObject *Task_get_cause(TaskObject *self, void *c)
{
    (void)c;
    if (check_task(self) < 0)
        return NULL;
    parla_task_t *cause = parla_task_cause(self->task);
    if (cause == NULL)
        Py_RETURN_NONE;
    TaskObject *obj = parla_task_user(cause);
    if (obj)
        return Py_NewRef((PyObject *)obj);
    return PyUnicode_FromString(parla_task_name(cause));
}

static PyObject *Task_get_result(TaskObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->result ? self->result : Py_None);
}

static PyObject *Task_get_exception(TaskObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->exception ? self->exception : Py_None);
}

static PyObject *Task_get_runtime(TaskObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->runtime ? (PyObject *)self->runtime : Py_None);
}

static PyObject *Task_get_devices(TaskObject *self, void *c)
{
    (void)c;
    if (check_task(self) < 0)
        return NULL;
    int idx[PARLA_MAX_TASK_DEVICES];
    int n = parla_task_devices(self->task, idx, PARLA_MAX_TASK_DEVICES);
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++)
        PyTuple_SET_ITEM(t, i, PyLong_FromLong(idx[i]));
    return t;
}

static PyObject *Task_get_mapping(TaskObject *self, void *c)
{
    (void)c;
    if (check_task(self) < 0)
        return NULL;
    parla_mapping_t m;
    if (parla_task_mapping(self->task, &m) != 0)
        Py_RETURN_NONE;
    return Py_BuildValue("{sisdsdsdsd}", "candidates", m.n_candidates, "locality", m.locality, "transfer",
                         m.transfer, "load", m.load, "score", m.score);
}

static PyMethodDef Task_methods[] = {
    {"_submit", (PyCFunction)(void (*)(void))Task_submit, METH_FASTCALL,
     "_submit(func, dependencies, priority, vcus, memory): spawn this task."},
    {"_cancel", (PyCFunction)Task_cancel, METH_NOARGS, "Cancel a task that was never spawned."},
    {"_keep", (PyCFunction)Task_keep, METH_O, "_keep(obj): keep obj alive until the body (or its current segment) returns."},
    {"_wait", (PyCFunction)Task_wait, METH_NOARGS,
     "Block (GIL released) until the task finishes; returns the engine's code."},
    {"_drop_result", (PyCFunction)Task_drop_result, METH_NOARGS, "Release the body's return value."},
    {NULL},
};

static PyGetSetDef Task_getset[] = {
    {"state", (getter)Task_get_state, NULL, "created, submitted, ready, running, suspended, done, failed or cancelled"},
    {"done", (getter)Task_get_done, NULL, "True once the task is done, failed or cancelled"},
    {"_cause", (getter)Task_get_cause, NULL, "for a cancelled task, the task that caused it"},
    {"_result", (getter)Task_get_result, NULL, "the body's return value"},
    {"_exception", (getter)Task_get_exception, NULL, "the exception the body raised, or None"},
    {"runtime", (getter)Task_get_runtime, NULL, "the runtime the task belongs to"},
    {"_devices", (getter)Task_get_devices, NULL, "engine indices of the devices the task was mapped to (0: cpu)"},
    {"_mapping", (getter)Task_get_mapping, NULL, "mapping scores of the chosen devices, or None"},
    {NULL},
};

static PyMemberDef Task_members[] = {
    {"name", T_OBJECT, offsetof(TaskObject, name), READONLY, "the task's name, e.g. 'T[1, 2]'"},
    {"__dictoffset__", T_PYSSIZET, offsetof(TaskObject, dict), READONLY},
    {NULL},
};

static PyType_Slot Task_slots[] = {
    {Py_tp_doc, "An engine task (base of parla.tasks.Task)."},
    {Py_tp_init, Task_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Task_dealloc},
    {Py_tp_traverse, Task_traverse},
    {Py_tp_clear, Task_clear},
    {Py_tp_methods, Task_methods},
    {Py_tp_getset, Task_getset},
    {Py_tp_members, Task_members},
    {0, NULL},
};

static PyType_Spec Task_spec = {
    .name = "parla._core.Task",
    .basicsize = sizeof(TaskObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Task_slots,
};

/* ------------------------------------------------------- Runtime type -- */

static PyObject *Runtime_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n_workers", "virtual_gpus", "gpu_memory", "gpu_bandwidth", "disable_cuda", "cpu_memory",
                             "trace", NULL};
    int n_workers = 0, virtual_gpus = 0, disable_cuda = 0, trace = 0;
    unsigned long long gpu_memory = 0, cpu_memory = 0;
    double gpu_bandwidth = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iiO&dpO&p", kwlist, &n_workers, &virtual_gpus, bytes_arg,
                                     &gpu_memory, &gpu_bandwidth, &disable_cuda, bytes_arg, &cpu_memory, &trace))
        return NULL;
    if (virtual_gpus < 0) {
        PyErr_Format(PyExc_ValueError, "virtual_gpus=%d must be >= 0", virtual_gpus);
        return NULL;
    }
    if (n_workers < 0) {
        PyErr_Format(PyExc_ValueError, "n_workers=%d must be positive", n_workers);
        return NULL;
    }
    RuntimeObject *self = (RuntimeObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    atomic_init(&self->deferred, NULL);
    self->failed = PyList_New(0);
    self->module = PyType_GetModule(type);
    if (self->failed == NULL || self->module == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(self->module);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = n_workers;
    cfg.n_virtual_gpus = virtual_gpus;
    cfg.virtual_gpu_memory = gpu_memory;
    cfg.virtual_gpu_bandwidth = gpu_bandwidth;
    cfg.disable_cuda = disable_cuda;
    cfg.cpu_memory = cpu_memory;
    cfg.trace = trace;
    cfg.worker_start = hook_worker_start;
    cfg.worker_stop = hook_worker_stop;
    cfg.worker_idle = hook_worker_idle;
    cfg.task_finished = hook_task_finished;
    cfg.hook_user = self;
    int rc = parla_runtime_create(&cfg, &self->rt);
    if (rc) {
        Py_DECREF(self);
        return raise_code(rc);
    }
    return (PyObject *)self;
}

/* Stops the workers; the GIL is released meanwhile (they need it to stop). */
static int runtime_close(RuntimeObject *self)
{
    if (self->rt == NULL)
        return 0;
    if (self->spawning > 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the Parla runtime cannot close while another thread is spawning a task into it");
        return -2;
    }
    int rc;
    parla_runtime_t *rt = self->rt;
    self->destroying = 1; /* other threads may run while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    rc = parla_runtime_destroy(rt);
    Py_END_ALLOW_THREADS
    self->destroying = 0;
    if (rc == 0)
        self->rt = NULL;
    drain_deferred(self);
    return rc;
}

static int Runtime_traverse(RuntimeObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->failed);
    Py_VISIT(self->module);
    return 0;
}

static int Runtime_clear(RuntimeObject *self)
{
    Py_CLEAR(self->failed);
    return 0;
}

static void Runtime_dealloc(RuntimeObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->rt && !self->abandoned) {
        /* Not closed: cancel what is left and stop, so no worker outlives us. */
        parla_runtime_t *rt = self->rt;
        Py_BEGIN_ALLOW_THREADS
        parla_runtime_cancel_all(rt);
        parla_runtime_wait_all(rt);
        Py_END_ALLOW_THREADS
        if (runtime_close(self) != 0)
            PyErr_Clear(); /* nothing raised for a code; -2 raised, cleared here */
    }
    Runtime_clear(self);
    Py_CLEAR(self->module);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int check_open(RuntimeObject *self)
{
    if (self->forked) {
        PyErr_SetString(PyExc_RuntimeError, forked_message);
        return -1;
    }
    if (self->rt == NULL || self->destroying) {
        PyErr_SetString(PyExc_RuntimeError, "the Parla runtime is closed");
        return -1;
    }
    return 0;
}

/* wait_all(timeout=-1) -> (code, message). Releases the GIL. */
static PyObject *Runtime_wait_all(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_open(self) < 0)
        return NULL;
    double timeout = -1.0;
    if (nargs > 0) {
        timeout = PyFloat_AsDouble(args[0]);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
    }
    int rc;
    parla_runtime_t *rt = self->rt;
    const char *msg;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = timeout < 0 ? parla_runtime_wait_all(rt) : parla_runtime_wait_all_timeout(rt, timeout);
        msg = parla_last_error_message();
        Py_END_ALLOW_THREADS
        drain_deferred(self);
        if (rc == PARLA_ETIMEDOUT || self->spawning == 0 || parla_task_current() != NULL)
            break;
        /* Quiescent, but another thread is inside a spawn (it may submit a
         * task the moment it gets the GIL): let it finish, then wait again. */
        Py_BEGIN_ALLOW_THREADS
        struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
        Py_END_ALLOW_THREADS
        if (timeout >= 0) {
            rc = PARLA_ETIMEDOUT;
            msg = "";
            break;
        }
    }
    return Py_BuildValue("(is)", rc, rc ? msg : "");
}

static PyObject *Runtime_cancel_all(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    parla_runtime_cancel_all(self->rt);
    drain_deferred(self);
    Py_RETURN_NONE;
}

static PyObject *Runtime_cancel_stuck(RuntimeObject *self, PyObject *tasks_arg)
{
    if (check_open(self) < 0)
        return NULL;
    Py_ssize_t n = 0;
    parla_task_t **tasks = awaited_tasks(get_state(self->module)->task_type, tasks_arg, &n);
    if (tasks == NULL)
        return NULL;
    int rc = parla_runtime_cancel_stuck(self->rt, tasks, (size_t)n);
    PyMem_Free(tasks);
    drain_deferred(self);
    if (rc < 0)
        return raise_code(rc);
    return PyLong_FromLong(rc);
}

static PyObject *Runtime_close(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    int rc = runtime_close(self);
    if (rc == -2)
        return NULL;
    if (rc)
        return raise_code(rc);
    Py_RETURN_NONE;
}

static PyObject *Runtime_abandon(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (self->rt != NULL) {
        parla_runtime_cancel_all(self->rt);
        self->closing = 1;
        self->abandoned = 1;
        Py_INCREF(self); /* never freed: running bodies may still use it */
    }
    Py_RETURN_NONE;
}

static PyObject *Runtime_after_fork_child(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    self->forked = 1;
    self->abandoned = 1; /* never destroyed here: the parent owns the engine */
    self->closing = 1;
    Py_INCREF(self);
    Py_RETURN_NONE;
}

static PyObject *Runtime_begin_close(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    self->closing = 1;
    Py_RETURN_NONE;
}

/* unsubmitted() -> list of never-spawned tasks that spawned tasks depend on
 * (names as str when the Task object no longer exists). */
static PyObject *Runtime_unsubmitted(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    size_t n = parla_runtime_unsubmitted(self->rt, NULL, 0);
    parla_task_t **buf = PyMem_Calloc(n ? n : 1, sizeof *buf);
    if (!buf)
        return PyErr_NoMemory();
    n = parla_runtime_unsubmitted(self->rt, buf, n);
    PyObject *list = PyList_New(0);
    for (size_t i = 0; i < n && buf[i]; i++) {
        TaskObject *obj = parla_task_user(buf[i]);
        PyObject *item = obj ? Py_NewRef((PyObject *)obj) : PyUnicode_FromString(parla_task_name(buf[i]));
        if (list && item)
            PyList_Append(list, item);
        Py_XDECREF(item);
        parla_task_release(buf[i]);
    }
    PyMem_Free(buf);
    return list;
}

static PyObject *Runtime_stats(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    parla_runtime_stats_t s;
    parla_runtime_stats(self->rt, &s);
    return Py_BuildValue("{sKsKsKsKsKsK}", "tasks_created", (unsigned long long)s.tasks_created, "tasks_run",
                         (unsigned long long)s.tasks_run, "tasks_failed", (unsigned long long)s.tasks_failed,
                         "tasks_cancelled", (unsigned long long)s.tasks_cancelled, "steals",
                         (unsigned long long)s.steals, "parks", (unsigned long long)s.parks);
}

/* write_trace(chrome_path=None, dot_path=None) -> summary text. */
static PyObject *Runtime_write_trace(RuntimeObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"chrome_path", "dot_path", NULL};
    PyObject *chrome = Py_None, *dot = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO", kwlist, &chrome, &dot))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    PyObject *chrome_b = NULL, *dot_b = NULL;
    if (chrome != Py_None && !PyUnicode_FSConverter(chrome, &chrome_b))
        return NULL;
    if (dot != Py_None && !PyUnicode_FSConverter(dot, &dot_b)) {
        Py_XDECREF(chrome_b);
        return NULL;
    }
    size_t cap = 16384;
    char *summary = PyMem_Malloc(cap);
    if (summary == NULL) {
        Py_XDECREF(chrome_b);
        Py_XDECREF(dot_b);
        return PyErr_NoMemory();
    }
    summary[0] = '\0';
    int rc;
    parla_runtime_t *rt = self->rt;
    const char *cp = chrome_b ? PyBytes_AS_STRING(chrome_b) : NULL, *dp = dot_b ? PyBytes_AS_STRING(dot_b) : NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = parla_trace_write(rt, cp, dp, summary, cap);
    Py_END_ALLOW_THREADS
    Py_XDECREF(chrome_b);
    Py_XDECREF(dot_b);
    PyObject *out = rc ? raise_code(rc) : PyUnicode_FromString(summary);
    PyMem_Free(summary);
    return out;
}

/* devices() -> list of dicts, one per device (index order; 0 is the CPU). */
static PyObject *Runtime_devices(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    int n = parla_runtime_num_devices(self->rt);
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        parla_device_info_t d;
        parla_device_info(self->rt, i, &d);
        PyObject *item = Py_BuildValue(
            "{sisssisisisisKsKsKsdsdsdsKsKsKsK}", "index", d.index, "kind", d.kind == PARLA_DEVICE_CPU ? "cpu" : "gpu",
            "kind_index", d.kind_index, "virtual", d.is_virtual, "cuda", d.is_cuda, "cuda_ordinal", d.cuda_ordinal,
            "memory_capacity", (unsigned long long)d.memory_capacity, "memory_reserved",
            (unsigned long long)d.memory_reserved, "memory_resident", (unsigned long long)d.memory_resident,
            "vcus_capacity", d.vcus_capacity, "vcus_reserved", d.vcus_reserved, "bandwidth", d.bandwidth,
            "tasks_mapped", (unsigned long long)d.tasks_mapped, "bytes_in", (unsigned long long)d.bytes_in,
            "bytes_out", (unsigned long long)d.bytes_out, "evictions", (unsigned long long)d.evictions);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *Runtime_get_failed(RuntimeObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->failed);
}

static PyObject *Runtime_get_num_workers(RuntimeObject *self, void *c)
{
    (void)c;
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(parla_runtime_num_workers(self->rt));
}

static PyObject *Runtime_get_closing(RuntimeObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closing || self->rt == NULL);
}

static PyObject *Runtime_get_closed(RuntimeObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->rt == NULL);
}

static PyMethodDef Runtime_methods[] = {
    {"wait_all", (PyCFunction)(void (*)(void))Runtime_wait_all, METH_FASTCALL,
     "wait_all(timeout=-1) -> (code, message): wait for every spawned task (GIL released)."},
    {"cancel_all", (PyCFunction)Runtime_cancel_all, METH_NOARGS, "Cancel every task that has not started."},
    {"cancel_stuck", (PyCFunction)Runtime_cancel_stuck, METH_O,
     "cancel_stuck(tasks: list of Task) -> int. When every unfinished task waits on another (a dependency cycle, "
     "no never-submitted task involved), cancels the given spawned tasks that still wait, and with them what "
     "depends on them; returns how many it cancelled itself. Raises RuntimeError when the runtime is not stuck "
     "that way, TypeError for a non-Task. Owner thread, not from a task body."},
    {"close", (PyCFunction)Runtime_close, METH_NOARGS, "Stop the workers (raises RuntimeError while tasks are live)."},
    {"abandon", (PyCFunction)Runtime_abandon, METH_NOARGS,
     "Cancel what has not started and leave the workers running bodies until the process ends (no wait)."},
    {"_after_fork_child", (PyCFunction)Runtime_after_fork_child, METH_NOARGS,
     "In a forked child: make every later use raise RuntimeError, and never touch the parent's engine."},
    {"begin_close", (PyCFunction)Runtime_begin_close, METH_NOARGS,
     "Refuse spawns from outside task bodies from now on (the context's exit began)."},
    {"unsubmitted", (PyCFunction)Runtime_unsubmitted, METH_NOARGS,
     "Never-spawned tasks that spawned tasks depend on."},
    {"stats", (PyCFunction)Runtime_stats, METH_NOARGS, "Engine counters."},
    {"devices", (PyCFunction)Runtime_devices, METH_NOARGS, "Device descriptions and counters (list of dicts)."},
    {"write_trace", (PyCFunction)(void (*)(void))Runtime_write_trace, METH_VARARGS | METH_KEYWORDS,
     "write_trace(chrome_path=None, dot_path=None) -> summary text (the runtime must trace)."},
    {NULL},
};

static PyGetSetDef Runtime_getset[] = {
    {"failed", (getter)Runtime_get_failed, NULL, "tasks whose body raised, in order of failure"},
    {"num_workers", (getter)Runtime_get_num_workers, NULL, "number of worker threads"},
    {"closed", (getter)Runtime_get_closed, NULL, "True after close()"},
    {"closing", (getter)Runtime_get_closing, NULL, "True after begin_close() or close()"},
    {NULL},
};

static PyType_Slot Runtime_slots[] = {
    {Py_tp_doc, "Runtime(n_workers=0): a libparla runtime (0 workers: PARLA_NUM_THREADS or the core count)."},
    {Py_tp_new, Runtime_new},
    {Py_tp_dealloc, Runtime_dealloc},
    {Py_tp_traverse, Runtime_traverse},
    {Py_tp_clear, Runtime_clear},
    {Py_tp_methods, Runtime_methods},
    {Py_tp_getset, Runtime_getset},
    {0, NULL},
};

static PyType_Spec Runtime_spec = {
    .name = "parla._core.Runtime",
    .basicsize = sizeof(RuntimeObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Runtime_slots,
};

/* ---------------------------------------------------------- Data type -- */

static PyObject *Data_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runtime", "buffer", NULL};
    PyObject *rt_obj, *buf_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &rt_obj, &buf_obj))
        return NULL;
    module_state *st = PyType_GetModuleState(type);
    if (!PyObject_TypeCheck(rt_obj, st->runtime_type)) {
        PyErr_SetString(PyExc_TypeError, "Data(runtime, buffer): runtime must be a parla._core.Runtime");
        return NULL;
    }
    RuntimeObject *rt = (RuntimeObject *)rt_obj;
    if (check_open(rt) < 0)
        return NULL;
    DataObject *self = (DataObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(buf_obj, &self->buffer, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->has_buffer = 1;
    int rc = parla_data_create(rt->rt, (uint64_t)self->buffer.len, self->buffer.buf, &self->data);
    if (rc) {
        Py_DECREF(self);
        return raise_code(rc);
    }
    Py_INCREF(rt);
    self->runtime = rt;
    return (PyObject *)self;
}

static void Data_dealloc(DataObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->data && !(self->runtime && self->runtime->forked))
        parla_data_release(self->data); /* in a forked child the parent's engine is not touched */
    if (self->has_buffer)
        PyBuffer_Release(&self->buffer);
    Py_CLEAR(self->base);
    Py_CLEAR(self->runtime);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Data_traverse(DataObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->base);
    Py_VISIT(self->runtime);
    return 0;
}

/* view(ranges): a view over byte ranges, a flat sequence lo0, hi0, lo1, hi1... */
static PyObject *Data_view(DataObject *self, PyObject *ranges)
{
    PyObject *seq = PySequence_Fast(ranges, "ranges must be a sequence of byte offsets");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n % 2) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "ranges must hold pairs (lo, hi)");
        return NULL;
    }
    uint64_t *buf = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *buf);
    if (buf == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        buf[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (buf[i] == (uint64_t)-1 && PyErr_Occurred()) {
            PyMem_Free(buf);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    parla_data_t *view;
    int rc = parla_data_view(self->data, buf, (size_t)n / 2, &view);
    PyMem_Free(buf);
    if (rc)
        return raise_code(rc);
    DataObject *obj = (DataObject *)Py_TYPE(self)->tp_alloc(Py_TYPE(self), 0);
    if (obj == NULL) {
        parla_data_release(view);
        return NULL;
    }
    obj->data = view;
    Py_INCREF(self->runtime);
    obj->runtime = self->runtime;
    obj->base = Py_NewRef(self->base ? self->base : (PyObject *)self);
    return (PyObject *)obj;
}

static int device_arg(DataObject *self, PyObject *arg, int *out)
{
    long d = PyLong_AsLong(arg);
    if (d == -1 && PyErr_Occurred())
        return -1;
    if (self->runtime->rt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the Parla runtime of this data is closed");
        return -1;
    }
    if (d < 0 || d >= parla_runtime_num_devices(self->runtime->rt)) {
        PyErr_Format(PyExc_ValueError, "no device %ld", d);
        return -1;
    }
    *out = (int)d;
    return 0;
}

/* A hold on a device copy (parla_data_hold): keeps its memory for the arrays
 * made over it, which may outlive the task, the copy and the runtime. Exports
 * the memory as a writable buffer when it is host memory (cpu, virtual GPU). */
typedef struct {
    PyObject_HEAD
    parla_hold_t *hold;
    void *ptr;
    Py_ssize_t len;
    int host;
} HoldObject;

static void Hold_dealloc(HoldObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    parla_hold_release(self->hold);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Hold_getbuffer(HoldObject *self, Py_buffer *view, int flags)
{
    if (!self->host) {
        PyErr_SetString(PyExc_BufferError, "the held copy is on a CUDA GPU: use its ptr");
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, self->ptr, self->len, 0, flags);
}

static PyObject *Hold_get_ptr(HoldObject *self, void *c)
{
    (void)c;
    return PyLong_FromVoidPtr(self->ptr);
}

static PyGetSetDef Hold_getset[] = {
    {"ptr", (getter)Hold_get_ptr, NULL, "address of the held memory"},
    {NULL},
};

static PyType_Slot Hold_slots[] = {
    {Py_tp_doc, "A hold on a device copy's memory (Data.hold(device)): the memory stays allocated while it lives."},
    {Py_tp_dealloc, Hold_dealloc},
    {Py_tp_getset, Hold_getset},
    {Py_bf_getbuffer, Hold_getbuffer},
    {0, NULL},
};

static PyType_Spec Hold_spec = {
    .name = "parla._core.Hold",
    .basicsize = sizeof(HoldObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Hold_slots,
};

/* hold(device): a Hold on the base's copy on device, or None when it has none. */
static PyObject *Data_hold(DataObject *self, PyObject *arg)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, forked_message), NULL;
    int dev;
    if (device_arg(self, arg, &dev) < 0)
        return NULL;
    if (parla_data_device_ptr(self->data, dev) == NULL)
        Py_RETURN_NONE;
    parla_device_info_t info;
    parla_device_info(self->runtime->rt, dev, &info);
    module_state *st = PyType_GetModuleState(Py_TYPE(self));
    HoldObject *obj = PyObject_New(HoldObject, st->hold_type);
    if (obj == NULL)
        return NULL;
    obj->hold = NULL;
    obj->host = !info.is_cuda;
    obj->len = (Py_ssize_t)parla_data_nbytes(self->data);
    int rc = parla_data_hold(self->data, dev, &obj->hold, &obj->ptr);
    if (rc == PARLA_ESTATE) {
        Py_DECREF(obj);
        Py_RETURN_NONE;
    }
    if (rc) {
        Py_DECREF(obj);
        return raise_code(rc);
    }
    return (PyObject *)obj;
}

static PyObject *Data_ptr(DataObject *self, PyObject *arg)
{
    int dev;
    if (device_arg(self, arg, &dev) < 0)
        return NULL;
    return PyLong_FromVoidPtr(parla_data_device_ptr(self->data, dev));
}

/* Outside tasks: waits for the tasks using the data (writers; with write,
 * readers too) in slices of 50 ms, handling signals between them, so Ctrl-C
 * interrupts the wait (KeyboardInterrupt) even when a task never finishes
 * (outside reads and writes wait so in parla.array before fetch).
 * In a task body: nothing (the engine's wait runs other tasks meanwhile).
 * Returns 0, or -1 with an exception set. */
static int wait_for_users(DataObject *self, int write)
{
    if (parla_task_current() != NULL)
        return 0;
    for (;;) {
        int rc;
        const char *msg;
        Py_BEGIN_ALLOW_THREADS
        rc = parla_data_wait(self->data, write, 0.05);
        msg = parla_last_error_message();
        Py_END_ALLOW_THREADS
        if (rc == 0)
            return 0;
        if (rc != PARLA_ETIMEDOUT) {
            PyErr_Format(PyExc_RuntimeError, "%s", msg && *msg ? msg : parla_strerror(rc));
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

static PyObject *Data_fetch(DataObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, forked_message), NULL;
    int dev, write = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "fetch(device, write=False)");
        return NULL;
    }
    if (device_arg(self, args[0], &dev) < 0)
        return NULL;
    if (nargs == 2 && (write = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    gil_release_t g = gil_release();
    int rc = parla_data_fetch(self->data, dev, write);
    const char *msg = parla_last_error_message();
    gil_restore(g);
    if (rc) {
        PyErr_Format(rc == PARLA_ESTUCK ? PyExc_RuntimeError : PyExc_MemoryError, "%s", msg);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* wait(write, timeout) -> code: waits (GIL released) up to timeout seconds for
 * the tasks conflicting with an outside access (0, ETIMEDOUT or ESTUCK). */
static PyObject *Data_wait(DataObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, forked_message), NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wait(write, timeout)");
        return NULL;
    }
    int write = PyObject_IsTrue(args[0]);
    if (write < 0)
        return NULL;
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->runtime->rt == NULL)
        return PyLong_FromLong(0);
    gil_release_t g = gil_release();
    int rc = parla_data_wait(self->data, write, timeout);
    gil_restore(g);
    return PyLong_FromLong(rc);
}

static PyObject *Data_evict(DataObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, forked_message), NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "evict(device, keep_one_copy)");
        return NULL;
    }
    long dev = PyLong_AsLong(args[0]);
    if (dev == -1 && PyErr_Occurred())
        return NULL;
    int keep = PyObject_IsTrue(args[1]);
    if (keep < 0)
        return NULL;
    if (self->runtime->rt == NULL)
        Py_RETURN_NONE;
    /* Like every outside access, eviction waits for the tasks using the data
     * (it raised "in use" right after a spawn). */
    if (wait_for_users(self, 1) < 0)
        return NULL;
    int rc = parla_data_evict(self->data, (int)dev, keep);
    if (rc)
        return raise_code(rc);
    Py_RETURN_NONE;
}

static PyObject *Data_valid_bytes(DataObject *self, PyObject *arg)
{
    int dev;
    if (device_arg(self, arg, &dev) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(parla_data_valid_bytes(self->data, dev));
}

static PyObject *Data_resident_bytes(DataObject *self, PyObject *arg)
{
    int dev;
    if (device_arg(self, arg, &dev) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(parla_data_resident_bytes(self->data, dev));
}

static PyObject *Data_get_runtime(DataObject *self, void *c)
{
    (void)c;
    return Py_NewRef((PyObject *)self->runtime);
}

static PyMethodDef Data_methods[] = {
    {"view", (PyCFunction)Data_view, METH_O, "view(ranges): a view over byte ranges [lo0, hi0, lo1, hi1, ...]."},
    {"ptr", (PyCFunction)Data_ptr, METH_O, "address of the base's copy on a device (0 if none)."},
    {"hold", (PyCFunction)Data_hold, METH_O,
     "hold(device): a Hold keeping the base's copy on device allocated while it lives (None if it has none)."},
    {"fetch", (PyCFunction)(void (*)(void))Data_fetch, METH_FASTCALL,
     "fetch(device, write=False): wait for conflicting tasks, then make the ranges valid on device (GIL released)."},
    {"wait", (PyCFunction)(void (*)(void))Data_wait, METH_FASTCALL,
     "wait(write, timeout) -> code: wait up to timeout seconds for conflicting tasks (0, ETIMEDOUT, ESTUCK)."},
    {"evict", (PyCFunction)(void (*)(void))Data_evict, METH_FASTCALL,
     "evict(device, keep_one_copy): drop copies (-1: all GPUs), writing back the last valid copy."},
    {"valid_bytes", (PyCFunction)Data_valid_bytes, METH_O, "bytes of the ranges valid on a device."},
    {"resident_bytes", (PyCFunction)Data_resident_bytes, METH_O, "bytes of the base allocated on a device."},
    {NULL},
};

static PyGetSetDef Data_getset[] = {
    {"runtime", (getter)Data_get_runtime, NULL, "the runtime the data belongs to"},
    {NULL},
};

static PyType_Slot Data_slots[] = {
    {Py_tp_doc, "Data(runtime, buffer): engine data over a writable C-contiguous buffer (the CPU copy)."},
    {Py_tp_new, Data_new},
    {Py_tp_dealloc, Data_dealloc},
    {Py_tp_traverse, Data_traverse},
    {Py_tp_methods, Data_methods},
    {Py_tp_getset, Data_getset},
    {0, NULL},
};

static PyType_Spec Data_spec = {
    .name = "parla._core.Data",
    .basicsize = sizeof(DataObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Data_slots,
};

/* ------------------------------------------------------------- module -- */

static PyObject *mod_current_task(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    parla_task_t *t = parla_task_current();
    TaskObject *obj = t ? parla_task_user(t) : NULL;
    return Py_NewRef(obj ? (PyObject *)obj : Py_None);
}

static PyObject *mod_current_stream(PyObject *module, PyObject *arg)
{
    (void)module;
    long k = PyLong_AsLong(arg);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    void *stream = k >= 0 && k < PARLA_MAX_TASK_DEVICES ? parla_task_stream(parla_task_current(), (int)k) : NULL;
    return stream ? PyLong_FromVoidPtr(stream) : Py_NewRef(Py_None);
}

static PyObject *mod_worker_index(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(parla_worker_index());
}

static PyObject *mod_capture(PyObject *module, PyObject *fn)
{
    (void)module;
    return capture(fn);
}

/* Busy-waits (spins on the monotonic clock, no sleep) for the given microseconds. With release true the GIL
 * is released meanwhile, so other Python threads run; otherwise the caller keeps it for the whole wait. */
static PyObject *mod_busy_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "busy_wait(microseconds, release_gil) takes 2 arguments");
        return NULL;
    }
    double us = PyFloat_AsDouble(args[0]);
    if (us == -1.0 && PyErr_Occurred())
        return NULL;
    int release = PyObject_IsTrue(args[1]);
    if (release < 0)
        return NULL;
    if (!(us >= 0.0) || us > 1e12) {
        PyErr_Format(PyExc_ValueError, "busy wait of %R microseconds: expected a number from 0 to 10^12", args[0]);
        return NULL;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    double ns = us * 1e3;
    gil_release_t g = {NULL, 0};
    if (release)
        g = gil_release();
    do
        clock_gettime(CLOCK_MONOTONIC, &now);
    while ((double)(now.tv_sec - start.tv_sec) * 1e9 + (double)(now.tv_nsec - start.tv_nsec) < ns);
    if (release)
        gil_restore(g);
    Py_RETURN_NONE;
}

/* wait_any(tasks, timeout) -> (code, message): blocks (GIL released) until one of
 * tasks (a tuple or list of Tasks of one runtime) has finished, or timeout
 * seconds (< 0: no limit) have passed; code 0, ETIMEDOUT, ESTUCK or EINVAL. */
static PyObject *mod_wait_any(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wait_any(tasks, timeout) takes 2 arguments");
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = 0;
    parla_task_t **tasks = awaited_tasks(get_state(module)->task_type, args[0], &n);
    if (tasks == NULL)
        return NULL;
    gil_release_t g = gil_release();
    int rc = parla_task_wait_any(tasks, (size_t)n, timeout);
    const char *msg = rc ? parla_last_error_message() : "";
    gil_restore(g);
    PyMem_Free(tasks);
    return Py_BuildValue("(is)", rc, msg);
}

static PyMethodDef module_methods[] = {
    {"busy_wait", (PyCFunction)(void (*)(void))mod_busy_wait, METH_FASTCALL,
     "busy_wait(microseconds, release_gil): spin for that long, releasing the GIL meanwhile if release_gil."},
    {"wait_any", (PyCFunction)(void (*)(void))mod_wait_any, METH_FASTCALL,
     "wait_any(tasks, timeout) -> (code, message): block (GIL released) until one of tasks has finished or "
     "timeout seconds (< 0: no limit) have passed."},
    {"current_task", mod_current_task, METH_NOARGS, "The Task running on this thread, or None."},
    {"worker_index", mod_worker_index, METH_NOARGS, "Index of the calling worker thread, or -1."},
    {"current_stream", mod_current_stream, METH_O,
     "current_stream(k): the CUstream (an int) of the running task on its k-th device, or None when that device "
     "is not a CUDA GPU or no task runs on this thread."},
    {"capture", mod_capture, METH_O, "Copy of a function with its closure captured by value."},
    {NULL},
};

static int module_exec(PyObject *m)
{
    module_state *st = get_state(m);
    st->runtime_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Runtime_spec, NULL);
    if (st->runtime_type == NULL || PyModule_AddType(m, st->runtime_type) < 0)
        return -1;
    st->task_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Task_spec, NULL);
    if (st->task_type == NULL || PyModule_AddType(m, st->task_type) < 0)
        return -1;
    st->data_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Data_spec, NULL);
    if (st->data_type == NULL || PyModule_AddType(m, st->data_type) < 0)
        return -1;
    st->hold_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Hold_spec, NULL);
    if (st->hold_type == NULL || PyModule_AddType(m, st->hold_type) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "ANY_CPU", PARLA_ANY_CPU) < 0 || PyModule_AddIntConstant(m, "ANY_GPU", PARLA_ANY_GPU) < 0 ||
        PyModule_AddIntConstant(m, "READ", PARLA_READ) < 0 || PyModule_AddIntConstant(m, "WRITE", PARLA_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "READWRITE", PARLA_READWRITE) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "ESTUCK", PARLA_ESTUCK) < 0 || PyModule_AddIntConstant(m, "ETIMEDOUT", PARLA_ETIMEDOUT) < 0 ||
        PyModule_AddIntConstant(m, "EFAILED", PARLA_EFAILED) < 0 ||
        PyModule_AddIntConstant(m, "ECANCELLED", PARLA_ECANCELLED) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    module_state *st = get_state(m);
    Py_VISIT(st->runtime_type);
    Py_VISIT(st->task_type);
    Py_VISIT(st->data_type);
    Py_VISIT(st->hold_type);
    return 0;
}

static int module_clear(PyObject *m)
{
    module_state *st = get_state(m);
    Py_CLEAR(st->runtime_type);
    Py_CLEAR(st->task_type);
    Py_CLEAR(st->data_type);
    Py_CLEAR(st->hold_type);
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "parla._core",
    .m_doc = "The C engine of Parla: runtime, tasks, workers.",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&module_def);
}
