/*
 * module.c: the parla._core module: init and slots, constants, module functions, and the one mapping
 * from engine error codes to Python exceptions. The files of the binding are listed in pyparla.h.
 */
#include "pyparla.h"

#include <time.h>

const char pyparla_forked_message[] =
    "this Parla runtime belongs to the parent process (os.fork() was called inside its context): the child "
    "cannot use it, its tasks or its PArrays; start a new Parla context in the child";

/* ------------------------------------------------------------------------------------ errors -- */

/* Which exception each engine code raises, by site. The first row matching (site, code) wins; a row with
 * code 0 matches every code of its site. Today's per-site differences are kept as rows of their own:
 * a task the engine failed for want of memory or resources carries MemoryError (a spawn refused for a
 * resource no device has raises ValueError), and Data.fetch raises MemoryError for every failure but a
 * stuck wait. */
static const struct {
    pyparla_site_t site;
    int code;
    PyObject **type;
} error_table[] = {
    {PYPARLA_AT_CALL, PARLA_EINVAL, &PyExc_ValueError},
    {PYPARLA_AT_CALL, PARLA_ENOMEM, &PyExc_MemoryError},
    {PYPARLA_AT_CALL, PARLA_ERESOURCE, &PyExc_ValueError},
    {PYPARLA_AT_CALL, PARLA_ENODEV, &PyExc_ValueError},
    {PYPARLA_AT_CALL, PARLA_ETIMEDOUT, &PyExc_TimeoutError},
    {PYPARLA_AT_CALL, 0, &PyExc_RuntimeError},
    {PYPARLA_AT_TASK_FAILED, PARLA_ERESOURCE, &PyExc_MemoryError},
    {PYPARLA_AT_TASK_FAILED, 0, &PyExc_RuntimeError},
    {PYPARLA_AT_FETCH, PARLA_ESTUCK, &PyExc_RuntimeError},
    {PYPARLA_AT_FETCH, 0, &PyExc_MemoryError},
    {PYPARLA_AT_DATA_WAIT, 0, &PyExc_RuntimeError},
};

PyObject *pyparla_error_type(pyparla_site_t site, int code)
{
    for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++)
        if (error_table[i].site == site && (error_table[i].code == code || error_table[i].code == 0))
            return *error_table[i].type;
    return PyExc_RuntimeError;
}

static const char *error_text(int code, const char *msg)
{
    if (msg == NULL || *msg == '\0')
        msg = parla_last_error_message();
    return msg && *msg ? msg : parla_strerror(code);
}

PyObject *pyparla_set_error(pyparla_site_t site, int code, const char *msg)
{
    PyErr_Format(pyparla_error_type(site, code), "%s", error_text(code, msg));
    return NULL;
}

PyObject *pyparla_new_error(pyparla_site_t site, int code, const char *msg)
{
    return PyObject_CallFunction(pyparla_error_type(site, code), "s", error_text(code, msg));
}

/* -------------------------------------------------------------------------- module functions -- */

static PyObject *mod_current_task(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    parla_task_t *t = parla_task_current();
    TaskObject *obj = t ? parla_task_user(t) : NULL;
    if (obj == NULL)
        obj = pyparla_replay_current(t);
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
    return pyparla_capture(pyparla_get_state(module), fn);
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
    pyparla_gil_t g = {NULL, 0};
    if (release)
        g = pyparla_gil_release();
    do
        clock_gettime(CLOCK_MONOTONIC, &now);
    while ((double)(now.tv_sec - start.tv_sec) * 1e9 + (double)(now.tv_nsec - start.tv_nsec) < ns);
    if (release)
        pyparla_gil_restore(g);
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
    Py_ssize_t n = 0, n_done;
    parla_task_t **tasks = pyparla_awaited_tasks(pyparla_get_state(module)->task_type, args[0], &n, &n_done);
    if (tasks == NULL)
        return NULL;
    if (n_done) { /* one of them has finished already (released) */
        pyparla_free_handles(tasks, n);
        return Py_BuildValue("(is)", 0, "");
    }
    pyparla_gil_t g = pyparla_gil_release();
    int rc = parla_task_wait_any(tasks, (size_t)n, timeout);
    const char *msg = rc ? parla_last_error_message() : "";
    pyparla_gil_restore(g);
    pyparla_free_handles(tasks, n);
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

/* ------------------------------------------------------------------------------- init, slots -- */

static int add_type(PyObject *m, PyType_Spec *spec, PyTypeObject **out)
{
    *out = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, NULL);
    return *out == NULL || PyModule_AddType(m, *out) < 0 ? -1 : 0;
}

static int module_exec(PyObject *m)
{
    pyparla_state *st = pyparla_get_state(m);
    if (add_type(m, &pyparla_runtime_spec, &st->runtime_type) < 0 ||
        add_type(m, &pyparla_task_spec, &st->task_type) < 0 || add_type(m, &pyparla_data_spec, &st->data_type) < 0 ||
        add_type(m, &pyparla_hold_spec, &st->hold_type) < 0 || add_type(m, &pyparla_graph_spec, &st->graph_type) < 0 ||
        pyparla_native_init(m, st) < 0)
        return -1;
    if (pyparla_spawn_init(m, st) < 0 || PyModule_AddFunctions(m, pyparla_spawn_methods) < 0)
        return -1;
    if ((st->str_name = PyUnicode_InternFromString("__name__")) == NULL ||
        (st->str_qualname = PyUnicode_InternFromString("__qualname__")) == NULL)
        return -1;
    if (PyModule_AddIntConstant(m, "ANY_CPU", PARLA_ANY_CPU) < 0 || PyModule_AddIntConstant(m, "ANY_GPU", PARLA_ANY_GPU) < 0 ||
        PyModule_AddIntConstant(m, "READ", PARLA_READ) < 0 || PyModule_AddIntConstant(m, "WRITE", PARLA_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "READWRITE", PARLA_READWRITE) < 0 ||
        PyModule_AddStringConstant(m, "GENERATOR_BODY_MESSAGE", pyparla_generator_body_message) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "ESTUCK", PARLA_ESTUCK) < 0 || PyModule_AddIntConstant(m, "ETIMEDOUT", PARLA_ETIMEDOUT) < 0 ||
        PyModule_AddIntConstant(m, "EFAILED", PARLA_EFAILED) < 0 ||
        PyModule_AddIntConstant(m, "ECANCELLED", PARLA_ECANCELLED) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    pyparla_state *st = pyparla_get_state(m);
    Py_VISIT(st->runtime_type);
    Py_VISIT(st->task_type);
    Py_VISIT(st->data_type);
    Py_VISIT(st->hold_type);
    Py_VISIT(st->native_function_type);
    Py_VISIT(st->native_body_type);
    Py_VISIT(st->native_error);
    Py_VISIT(st->graph_type);
    int r = pyparla_native_traverse(st, visit, arg);
    if (r != 0)
        return r;
    return pyparla_spawn_traverse(st, visit, arg);
}

static int module_clear(PyObject *m)
{
    pyparla_state *st = pyparla_get_state(m);
    Py_CLEAR(st->runtime_type);
    Py_CLEAR(st->task_type);
    Py_CLEAR(st->data_type);
    Py_CLEAR(st->hold_type);
    Py_CLEAR(st->native_function_type);
    Py_CLEAR(st->native_body_type);
    Py_CLEAR(st->native_error);
    Py_CLEAR(st->graph_type);
    Py_CLEAR(st->str_name);
    Py_CLEAR(st->str_qualname);
    pyparla_native_clear(st);
    pyparla_spawn_clear(st);
    return 0;
}

static void module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* Not in subinterpreters: worker threads attach with PyGILState_Ensure, which always names the main
     * interpreter, so a body spawned from a subinterpreter would run its objects in the wrong one. The
     * import fails there (ImportError) instead. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* Needs the GIL: the Runtime and Task fields (closing, spawning, func, result, keep) are read and
     * written by workers and the spawning thread under the GIL, with no lock of their own. A
     * free-threaded build re-enables the GIL when it imports the module. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyModuleDef pyparla_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "parla._core",
    .m_doc = "The C engine of Parla: runtime, tasks, workers.",
    .m_size = sizeof(pyparla_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&pyparla_module_def);
}
