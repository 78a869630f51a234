/*
 * body.c: what a worker runs for a Python task: the body (a callable, or the coroutine it returned),
 * the coroutine driver (an await suspends the task on the tasks it awaits), the failures recorded on a
 * task, and capture (a closure's cells copied at spawn). See pyparla.h.
 */
#include "pyparla.h"

/* The raised exception as one object (PyErr_GetRaisedException appeared in CPython 3.12). */
PyObject *pyparla_take_exception(void)
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

parla_task_t **pyparla_awaited_tasks(PyTypeObject *task_type, PyObject *yielded, Py_ssize_t *n,
                                     Py_ssize_t *n_done)
{
    *n = *n_done = 0;
    if (PyObject_TypeCheck(yielded, task_type)) {
        parla_task_t **out = PyMem_Malloc(sizeof *out);
        if (!out)
            return (parla_task_t **)PyErr_NoMemory();
        if ((out[0] = ((TaskObject *)yielded)->task) != NULL) {
            parla_task_retain(out[0]);
            *n = 1;
        } else {
            *n_done = 1;
        }
        return out;
    }
    if (!PyTuple_Check(yielded) && !PyList_Check(yielded)) {
        PyErr_Format(PyExc_TypeError,
                     "a Parla task can only await Parla tasks, TaskSpaces, task collections and coroutines, "
                     "not %.100s",
                     Py_TYPE(yielded)->tp_name);
        return NULL;
    }
    Py_ssize_t len = PySequence_Fast_GET_SIZE(yielded);
    parla_task_t **out = PyMem_Malloc((size_t)(len ? len : 1) * sizeof *out);
    if (!out)
        return (parla_task_t **)PyErr_NoMemory();
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(yielded, i);
        if (!PyObject_TypeCheck(item, task_type)) {
            pyparla_free_handles(out, k);
            PyErr_Format(PyExc_TypeError, "awaited collection holds a %.100s, not a Parla task",
                         Py_TYPE(item)->tp_name);
            return NULL;
        }
        if ((out[k] = ((TaskObject *)item)->task) != NULL)
            parla_task_retain(out[k++]);
        else
            (*n_done)++;
    }
    *n = k;
    return out;
}

void pyparla_free_handles(parla_task_t **tasks, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        parla_task_release(tasks[i]);
    PyMem_Free(tasks);
}

/* asyncio's awaitables (asyncio.sleep, ...) raise RuntimeError("no running event loop") in a body: exc
 * (a body's exception, or NULL) gets a note saying why and what works instead. Returns exc. */
static PyObject *note_no_event_loop(PyObject *exc)
{
    if (exc == NULL || !PyErr_GivenExceptionMatches(exc, PyExc_RuntimeError))
        return exc;
    PyObject *text = PyObject_Str(exc);
    if (text && PyUnicode_CompareWithASCIIString(text, "no running event loop") == 0) {
        PyObject *r = PyObject_CallMethod(exc, "add_note", "s",
                                          "Parla runs an async task body without an asyncio event loop: it may "
                                          "await Parla tasks (and coroutines that await them), not asyncio's "
                                          "awaitables such as asyncio.sleep; call time.sleep, or asyncio.run(...) "
                                          "inside the body for asyncio code");
        Py_XDECREF(r);
    }
    Py_XDECREF(text);
    PyErr_Clear(); /* of the note's calls: the body's exception matters */
    return exc;
}

/* The body raised: the exception becomes the task's, listed in the runtime's failed list. */
static int record_failure(TaskObject *self)
{
    pyparla_task_set_exception(self, note_no_event_loop(pyparla_take_exception()));
    pyparla_task_clear_func(self);
    pyparla_add_failed(self->runtime, self);
    return 1; /* a positive code: the body raised */
}

/* A task the engine failed (its data could not fit, no placement could be satisfied) has no Python
 * exception: make one from the engine's message, which the failing call left on this thread, so the
 * context exit reports it like a body's exception. */
void pyparla_record_engine_failure(RuntimeObject *rt, TaskObject *obj, parla_task_t *task)
{
    if (pyparla_task_exception(obj) != NULL || obj->submitting)
        return; /* the body raised (recorded already), or spawn raises it */
    PyObject *exc = pyparla_new_error(PYPARLA_AT_TASK_FAILED, parla_task_error(task), NULL);
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    pyparla_task_set_exception(obj, exc);
    pyparla_task_clear_func(obj);
    pyparla_add_failed(rt, obj);
}

/* The coroutine finished with value (a new reference): the task's result. */
static int coroutine_returned(TaskObject *self, PyObject *value)
{
    Py_XSETREF(self->result, value);
    pyparla_task_clear_func(self);
    return 0;
}

/* Throws exc (stolen) into the coroutine. Returns what it yielded next (a new reference), or NULL with
 * *rc set: 0 when it returned (the result recorded), 1 when it raised (the failure recorded). */
static PyObject *throw_into(TaskObject *self, PyObject *exc, int *rc)
{
    PyObject *out = PyObject_CallMethod(self->func, "throw", "O", exc);
    Py_DECREF(exc);
    if (out != NULL)
        return out;
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        *rc = record_failure(self);
        return NULL;
    }
    PyObject *stop = pyparla_take_exception();
    PyObject *value = PyObject_GetAttrString(stop, "value");
    Py_DECREF(stop);
    *rc = value == NULL ? record_failure(self) : coroutine_returned(self, value);
    return NULL;
}

/* Advances a coroutine (send None) until it returns, raises, or awaits tasks: then the task is suspended
 * on them. What it awaits is checked; a wrong object or a refused suspension is thrown back into it. */
static int drive_coroutine(TaskObject *self, parla_task_t *task)
{
    PyObject *throw_exc = NULL;
    for (;;) {
        PyObject *out = NULL;
        if (throw_exc) {
            int rc;
            out = throw_into(self, throw_exc, &rc);
            throw_exc = NULL;
            if (out == NULL)
                return rc;
        } else {
            PySendResult r = PyIter_Send(self->func, Py_None, &out);
            if (r == PYGEN_RETURN)
                return coroutine_returned(self, out);
            if (r == PYGEN_ERROR)
                return record_failure(self);
        }
        /* Yielded: what it awaits. */
        Py_ssize_t n = 0, n_done;
        parla_task_t **tasks = pyparla_awaited_tasks(pyparla_get_state(self->runtime->module)->task_type, out, &n,
                                                     &n_done);
        Py_DECREF(out);
        if (tasks == NULL) {
            throw_exc = pyparla_take_exception();
            continue;
        }
        Py_ssize_t self_at = 0;
        while (self_at < n && tasks[self_at] != task)
            self_at++;
        if (self_at < n) { /* said here in Python's words, not by parla_task_suspend_on's C ones */
            pyparla_free_handles(tasks, n);
            PyErr_Format(PyExc_RuntimeError, "task %s awaits itself, which would never finish",
                         pyparla_task_name(self));
            throw_exc = pyparla_take_exception();
            continue;
        }
        int rc = parla_task_suspend_on(task, tasks, (size_t)n);
        pyparla_free_handles(tasks, n);
        if (rc != 0) {
            pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
            throw_exc = pyparla_take_exception();
            continue;
        }
        return PARLA_TASK_SUSPEND;
    }
}

static int run_body(TaskObject *self, parla_task_t *task)
{
    pyparla_worker_take_gil();
    pyparla_drain_deferred(self->runtime);
    PyObject *func = self->func;
    if (func == NULL) {
        PyErr_Format(PyExc_RuntimeError, "task %s has no body", pyparla_task_name(self));
        return record_failure(self);
    }
    if (PyCoro_CheckExact(func) || PyGen_CheckExact(func))
        return drive_coroutine(self, task);
    PyObject *res = PyObject_CallNoArgs(func);
    if (res == NULL)
        return record_failure(self);
    if (PyCoro_CheckExact(res)) {
        pyparla_task_clear_func(self);
        self->func = res;
        return drive_coroutine(self, task);
    }
    return coroutine_returned(self, res);
}

int pyparla_task_body(parla_task_t *task, void *arg)
{
    TaskObject *self = arg;
    int rc = run_body(self, task);
    /* What the body kept for its own duration (arrays over device copies) goes now: a copy the engine
     * evicts later is then freed, not held by a task object that may live on. */
    Py_CLEAR(self->keep);
    return rc;
}

/* ---------------------------------------------------------------------------------- capture -- */

/* A tuple of new cells holding what closure's cells hold now. */
static PyObject *copy_cells(PyObject *closure)
{
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
    return cells;
}

/* A new function over fn's code and globals with fn's names and defaults (public API only). */
static PyObject *copy_function(pyparla_state *st, PyObject *fn)
{
    PyObject *qualname = PyObject_GetAttr(fn, st->str_qualname);
    PyObject *name = qualname ? PyObject_GetAttr(fn, st->str_name) : NULL;
    PyObject *copy = name ? PyFunction_NewWithQualName(PyFunction_GetCode(fn), PyFunction_GetGlobals(fn), qualname)
                          : NULL;
    PyObject *defaults = PyFunction_GetDefaults(fn), *kwdefaults = PyFunction_GetKwDefaults(fn);
    if (copy && ((defaults && PyFunction_SetDefaults(copy, defaults) < 0) ||
                 (kwdefaults && PyFunction_SetKwDefaults(copy, kwdefaults) < 0) ||
                 PyObject_SetAttr(copy, st->str_name, name) < 0))
        Py_CLEAR(copy);
    Py_XDECREF(qualname);
    Py_XDECREF(name);
    return copy;
}

PyObject *pyparla_capture(pyparla_state *st, PyObject *fn)
{
    if (!PyFunction_Check(fn))
        return Py_NewRef(fn);
    PyObject *closure = PyFunction_GetClosure(fn);
    if (closure == NULL || PyTuple_GET_SIZE(closure) == 0)
        return Py_NewRef(fn);
    PyObject *cells = copy_cells(closure);
    if (!cells)
        return NULL;
    PyObject *copy = copy_function(st, fn);
    if (copy && PyFunction_SetClosure(copy, cells) < 0)
        Py_CLEAR(copy);
    Py_DECREF(cells);
    return copy;
}
