/*
 * data_obj.c: parla._core.Data, a coherent data object of the engine (a base over a host buffer, or a
 * view of byte ranges), and parla._core.Hold, a hold on one device copy's memory. parla.array.PArray
 * uses them. See pyparla.h.
 */
#include "pyparla.h"

static PyObject *Data_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runtime", "buffer", NULL};
    PyObject *rt_obj, *buf_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &rt_obj, &buf_obj))
        return NULL;
    pyparla_state *st = pyparla_get_state_by_type(type);
    if (!PyObject_TypeCheck(rt_obj, st->runtime_type)) {
        PyErr_SetString(PyExc_TypeError, "Data(runtime, buffer): runtime must be a parla._core.Runtime");
        return NULL;
    }
    RuntimeObject *rt = (RuntimeObject *)rt_obj;
    if (pyparla_check_open(rt) < 0)
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
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
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
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
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

static PyObject *Hold_get_lo(HoldObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->lo);
}

static PyObject *Hold_get_nbytes(HoldObject *self, void *c)
{
    (void)c;
    return PyLong_FromSsize_t(self->len);
}

static PyGetSetDef Hold_getset[] = {
    {"ptr", (getter)Hold_get_ptr, NULL, "address of the held memory", NULL},
    {"lo", (getter)Hold_get_lo, NULL, "the base array's byte at which the held memory starts", NULL},
    {"nbytes", (getter)Hold_get_nbytes, NULL, "size of the held memory in bytes", NULL},
    {NULL},
};

static PyType_Slot Hold_slots[] = {
    {Py_tp_doc, "A hold on a device copy's memory (Data.hold(device)): the memory stays allocated while it lives."},
    {Py_tp_dealloc, Hold_dealloc},
    {Py_tp_getset, Hold_getset},
    {Py_bf_getbuffer, Hold_getbuffer},
    {0, NULL},
};

PyType_Spec pyparla_hold_spec = {
    .name = "parla._core.Hold",
    .basicsize = sizeof(HoldObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Hold_slots,
};

/* hold(device): a Hold on the allocation on device holding this data (the base, or a view: its extent),
 * or None when there is none. */
static PyObject *Data_hold(DataObject *self, PyObject *arg)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, pyparla_forked_message), NULL;
    int dev;
    if (device_arg(self, arg, &dev) < 0)
        return NULL;
    if (parla_data_device_ptr(self->data, dev) == NULL)
        Py_RETURN_NONE;
    parla_device_info_t info;
    parla_device_info(self->runtime->rt, dev, &info);
    pyparla_state *st = pyparla_get_state_by_type(Py_TYPE(self));
    HoldObject *obj = PyObject_New(HoldObject, st->hold_type);
    if (obj == NULL)
        return NULL;
    obj->hold = NULL;
    obj->host = !info.is_cuda;
    int rc = parla_data_hold(self->data, dev, &obj->hold, NULL);
    if (rc == PARLA_ESTATE) {
        Py_DECREF(obj);
        Py_RETURN_NONE;
    }
    if (rc) {
        Py_DECREF(obj);
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    }
    uint64_t lo, nbytes;
    obj->ptr = parla_hold_memory(obj->hold, &lo, &nbytes);
    obj->lo = (unsigned long long)lo;
    obj->len = (Py_ssize_t)nbytes;
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
            pyparla_set_error(PYPARLA_AT_DATA_WAIT, rc, msg);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

static PyObject *Data_fetch(DataObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, pyparla_forked_message), NULL;
    int dev, write = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "fetch(device, write=False)");
        return NULL;
    }
    if (device_arg(self, args[0], &dev) < 0)
        return NULL;
    if (nargs == 2 && (write = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    pyparla_gil_t g = pyparla_gil_release();
    int rc = parla_data_fetch(self->data, dev, write);
    const char *msg = parla_last_error_message();
    pyparla_gil_restore(g);
    if (rc)
        return pyparla_set_error(PYPARLA_AT_FETCH, rc, msg);
    Py_RETURN_NONE;
}

/* wait(write, timeout) -> code: waits (GIL released) up to timeout seconds for
 * the tasks conflicting with an outside access (0, ETIMEDOUT or ESTUCK). */
static PyObject *Data_wait(DataObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, pyparla_forked_message), NULL;
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
    pyparla_gil_t g = pyparla_gil_release();
    int rc = parla_data_wait(self->data, write, timeout);
    pyparla_gil_restore(g);
    return PyLong_FromLong(rc);
}

static PyObject *Data_evict(DataObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->runtime->forked)
        return PyErr_SetString(PyExc_RuntimeError, pyparla_forked_message), NULL;
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
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
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
    {"runtime", (getter)Data_get_runtime, NULL, "the runtime the data belongs to", NULL},
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

PyType_Spec pyparla_data_spec = {
    .name = "parla._core.Data",
    .basicsize = sizeof(DataObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Data_slots,
};

