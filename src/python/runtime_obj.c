/*
 * runtime_obj.c: parla._core.Runtime, one engine runtime: creation with the binding's hooks, waits,
 * cancellation, closing (GIL released while the workers stop), counters, devices, the trace. The
 * parla.Parla context owns one. See pyparla.h.
 */
#include "pyparla.h"

#include <time.h>

static PyObject *Runtime_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n_workers", "virtual_gpus", "gpu_memory", "gpu_bandwidth", "disable_cuda", "cpu_memory",
                             "trace", "pin_host_memory", "memory_pool", NULL};
    int n_workers = 0, virtual_gpus = 0, disable_cuda = 0, trace = 0, pin_host = 1, memory_pool = 1;
    unsigned long long gpu_memory = 0, cpu_memory = 0;
    double gpu_bandwidth = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iiO&dpO&ppp", kwlist, &n_workers, &virtual_gpus, pyparla_bytes_arg,
                                     &gpu_memory, &gpu_bandwidth, &disable_cuda, pyparla_bytes_arg, &cpu_memory, &trace,
                                     &pin_host, &memory_pool))
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
    self->traced = trace != 0;
    cfg.disable_host_pinning = !pin_host;
    cfg.disable_memory_pool = !memory_pool;
    pyparla_install_hooks(&cfg, self);
    int rc = parla_runtime_create(&cfg, &self->rt);
    if (rc) {
        Py_DECREF(self);
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
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
    pyparla_drain_deferred(self);
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
    PyMem_Free(self->untracked); /* empty: every task holds its runtime */
    PyMem_Free(self->pending);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

RuntimeObject *pyparla_runtime_arg(PyTypeObject *tp, PyObject *obj, const char *call)
{
    pyparla_state *st = pyparla_get_state_by_type(tp);
    if (st == NULL)
        return NULL;
    if (!PyObject_TypeCheck(obj, st->runtime_type)) {
        PyErr_Format(PyExc_TypeError, "%s: runtime must be a parla._core.Runtime", call);
        return NULL;
    }
    return pyparla_check_open((RuntimeObject *)obj) < 0 ? NULL : (RuntimeObject *)obj;
}

int pyparla_check_open(RuntimeObject *self)
{
    if (self->forked) {
        PyErr_SetString(PyExc_RuntimeError, pyparla_forked_message);
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
    if (pyparla_check_open(self) < 0)
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
        pyparla_drain_deferred(self);
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
    if (pyparla_check_open(self) < 0)
        return NULL;
    parla_runtime_cancel_all(self->rt);
    pyparla_drain_deferred(self);
    Py_RETURN_NONE;
}

static PyObject *Runtime_cancel_stuck(RuntimeObject *self, PyObject *tasks_arg)
{
    if (pyparla_check_open(self) < 0)
        return NULL;
    Py_ssize_t n = 0;
    Py_ssize_t n_done; /* finished: not stuck */
    parla_task_t **tasks = pyparla_awaited_tasks(pyparla_get_state(self->module)->task_type, tasks_arg, &n, &n_done);
    if (tasks == NULL)
        return NULL;
    int rc = parla_runtime_cancel_stuck(self->rt, tasks, (size_t)n);
    pyparla_free_handles(tasks, n);
    pyparla_drain_deferred(self);
    if (rc < 0)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    return PyLong_FromLong(rc);
}

static PyObject *Runtime_close(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    int rc = runtime_close(self);
    if (rc == -2)
        return NULL;
    if (rc)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
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
    if (pyparla_check_open(self) < 0)
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
    if (pyparla_check_open(self) < 0)
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
    if (pyparla_check_open(self) < 0)
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
    PyObject *out = rc ? pyparla_set_error(PYPARLA_AT_CALL, rc, NULL) : PyUnicode_FromString(summary);
    PyMem_Free(summary);
    return out;
}

/* devices() -> list of dicts, one per device (index order; 0 is the CPU). */
static PyObject *Runtime_devices(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (pyparla_check_open(self) < 0)
        return NULL;
    int n = parla_runtime_num_devices(self->rt);
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        parla_device_info_t d;
        parla_device_info(self->rt, i, &d);
        double busy = 0.0; /* device-seconds since busy_enable() */
        parla_device_busy(self->rt, i, &busy);
        PyObject *item = Py_BuildValue(
            "{sisssisisisisKsKsKsdsdsdsKsKsKsKsd}", "index", d.index, "kind", d.kind == PARLA_DEVICE_CPU ? "cpu" : "gpu",
            "kind_index", d.kind_index, "virtual", d.is_virtual, "cuda", d.is_cuda, "cuda_ordinal", d.cuda_ordinal,
            "memory_capacity", (unsigned long long)d.memory_capacity, "memory_reserved",
            (unsigned long long)d.memory_reserved, "memory_resident", (unsigned long long)d.memory_resident,
            "vcus_capacity", d.vcus_capacity, "vcus_reserved", d.vcus_reserved, "bandwidth", d.bandwidth,
            "tasks_mapped", (unsigned long long)d.tasks_mapped, "bytes_in", (unsigned long long)d.bytes_in,
            "bytes_out", (unsigned long long)d.bytes_out, "evictions", (unsigned long long)d.evictions, "busy_seconds", busy);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *Runtime_busy_enable(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    if (pyparla_check_open(self) < 0)
        return NULL;
    int rc = parla_runtime_busy_enable(self->rt);
    if (rc != 0)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *Runtime_get_failed(RuntimeObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->failed);
}

static PyObject *Runtime_get_num_workers(RuntimeObject *self, void *c)
{
    (void)c;
    if (pyparla_check_open(self) < 0)
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

/* device_alloc(device, nbytes) -> int: device memory from the runtime's pool, counted in the device's
 * account (parla_device_alloc); free it with device_free(device, ptr, nbytes). */
static PyObject *Runtime_device_alloc(RuntimeObject *self, PyObject *args)
{
    int device;
    unsigned long long nbytes;
    if (!PyArg_ParseTuple(args, "iK:device_alloc", &device, &nbytes) || pyparla_check_open(self) < 0)
        return NULL;
    void *ptr = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = parla_device_alloc(self->rt, device, nbytes, &ptr);
    Py_END_ALLOW_THREADS
    if (rc)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    return PyLong_FromVoidPtr(ptr);
}

static PyObject *Runtime_device_free(RuntimeObject *self, PyObject *args)
{
    int device;
    PyObject *ptr_obj;
    unsigned long long nbytes;
    if (!PyArg_ParseTuple(args, "iOK:device_free", &device, &ptr_obj, &nbytes) || pyparla_check_open(self) < 0)
        return NULL;
    void *ptr = PyLong_AsVoidPtr(ptr_obj);
    if (ptr == NULL && PyErr_Occurred())
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    parla_device_free(self->rt, device, ptr, nbytes);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Runtime_pending(RuntimeObject *self, PyObject *unused)
{
    (void)unused;
    return pyparla_pending_list(self);
}

static PyMethodDef Runtime_methods[] = {
    {"_pending", (PyCFunction)Runtime_pending, METH_NOARGS,
     "The spawned tasks not yet finished that the cycle collector does not list (a new list, any order): with "
     "gc.get_objects(), every live task. GIL held."},
    {"device_alloc", (PyCFunction)Runtime_device_alloc, METH_VARARGS,
     "device_alloc(device, nbytes) -> int: nbytes of memory on GPU device (a runtime device index) from the "
     "runtime's pool, counted in its account. ValueError when it does not fit (nothing is evicted for it), or for a bad device."},
    {"device_free", (PyCFunction)Runtime_device_free, METH_VARARGS,
     "device_free(device, ptr, nbytes): gives back memory from device_alloc once no device work uses it."},
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
    {"busy_enable", (PyCFunction)Runtime_busy_enable, METH_NOARGS,
     "Turn on busy-time accounting (parla_runtime_busy_enable; devices()' busy_seconds); it stays on. "
     "MemoryError when out of memory."},
    {"write_trace", (PyCFunction)(void (*)(void))Runtime_write_trace, METH_VARARGS | METH_KEYWORDS,
     "write_trace(chrome_path=None, dot_path=None) -> summary text (the runtime must trace)."},
    {NULL},
};

static PyGetSetDef Runtime_getset[] = {
    {"failed", (getter)Runtime_get_failed, NULL, "tasks whose body raised, in order of failure", NULL},
    {"num_workers", (getter)Runtime_get_num_workers, NULL, "number of worker threads", NULL},
    {"closed", (getter)Runtime_get_closed, NULL, "True after close()", NULL},
    {"closing", (getter)Runtime_get_closing, NULL, "True after begin_close() or close()", NULL},
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

PyType_Spec pyparla_runtime_spec = {
    .name = "parla._core.Runtime",
    .basicsize = sizeof(RuntimeObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Runtime_slots,
};

