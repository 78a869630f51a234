/*
 * spawn.c: the checks of a spawn's arguments (dependencies, placement options, data accesses, whether
 * any allowed device can hold the task), all made before the spawn changes the graph, so a spawn that
 * raises leaves no trace. See pyparla.h.
 */
#include "pyparla.h"

/* Appends to out every task found in obj (a Task, or an iterable of Tasks
 * and iterables, nested), checking each; changes nothing in the graph. */
int pyparla_collect_dependencies(TaskObject *self, PyTypeObject *task_type, PyObject *obj, int depth, PyObject *out)
{
    if (PyObject_TypeCheck(obj, task_type)) {
        TaskObject *dep = (TaskObject *)obj;
        if (pyparla_check_task(dep) < 0)
            return -1;
        if (dep == self) {
            PyErr_Format(PyExc_ValueError, "task %s cannot depend on itself", pyparla_task_name(self));
            return -1;
        }
        if (dep->runtime != self->runtime) {
            PyErr_Format(PyExc_ValueError,
                         "task %s: dependency %s belongs to another Parla runtime (a finished context?)",
                         pyparla_task_name(self), pyparla_task_name(dep));
            return -1;
        }
        return PyList_Append(out, obj);
    }
    if (obj == Py_None)
        return 0;
    if (depth > 32) {
        PyErr_Format(PyExc_ValueError, "task %s: dependencies are nested too deeply", pyparla_task_name(self));
        return -1;
    }
    if (PyList_CheckExact(obj) || PyTuple_CheckExact(obj)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(obj, i);
            Py_INCREF(item);
            int r = pyparla_collect_dependencies(self, task_type, item, depth + 1, out);
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
                     "task %s: dependencies must be tasks, TaskSpace slices or iterables of them, not %.100s",
                     pyparla_task_name(self), Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int r = pyparla_collect_dependencies(self, task_type, item, depth + 1, out);
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
int pyparla_bytes_arg(PyObject *o, void *out)
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
int pyparla_add_options(TaskObject *self, PyObject *options)
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
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "OdO&", &slots_obj, &vcus, pyparla_bytes_arg, &memory))
            goto fail;
        PyObject *slots = PySequence_Fast(slots_obj, "slots must be a sequence");
        if (slots == NULL)
            goto fail;
        int buf[PARLA_MAX_TASK_DEVICES];
        Py_ssize_t k = PySequence_Fast_GET_SIZE(slots);
        if (k < 1 || k > PARLA_MAX_TASK_DEVICES) {
            Py_DECREF(slots);
            PyErr_Format(PyExc_ValueError, "task %s: a placement names 1 to %d devices, not %zd", pyparla_task_name(self),
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
            pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
            goto fail;
        }
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

/* Accesses: a sequence of (Data, mode) or (Data, mode, slot), slot the position
 * in the task's devices the data is for (0 when absent). Returns them as a new
 * list or tuple, each checked; changes nothing in the graph. */
PyObject *pyparla_check_accesses(TaskObject *self, PyTypeObject *data_type, PyObject *accesses)
{
    PyObject *seq = PySequence_Fast(accesses, "accesses must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || (PyTuple_GET_SIZE(item) != 2 && PyTuple_GET_SIZE(item) != 3)) {
            PyErr_Format(PyExc_TypeError, "task %s: access %zd must be a (data, mode) or (data, mode, slot) tuple",
                         pyparla_task_name(self), i);
            goto fail;
        }
        if (PyTuple_GET_SIZE(item) == 3) {
            long slot = PyLong_AsLong(PyTuple_GET_ITEM(item, 2));
            if (slot == -1 && PyErr_Occurred())
                goto fail;
            if (slot < 0 || slot >= PARLA_MAX_TASK_DEVICES) {
                PyErr_Format(PyExc_ValueError, "task %s: access %zd is for the task's device at position %ld, "
                             "not one of 0..%d", pyparla_task_name(self), i, slot, PARLA_MAX_TASK_DEVICES - 1);
                goto fail;
            }
        }
        PyObject *data = PyTuple_GET_ITEM(item, 0);
        int mode = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        if (mode == -1 && PyErr_Occurred())
            goto fail;
        if (!PyObject_TypeCheck(data, data_type)) {
            PyErr_Format(PyExc_TypeError, "task %s: access %zd is a %.100s, not engine data", pyparla_task_name(self), i,
                         Py_TYPE(data)->tp_name);
            goto fail;
        }
        DataObject *d = (DataObject *)data;
        if (d->runtime != self->runtime) {
            PyErr_Format(PyExc_ValueError, "task %s: a PArray belongs to another Parla runtime", pyparla_task_name(self));
            goto fail;
        }
        if (mode != PARLA_READ && mode != PARLA_WRITE && mode != PARLA_READWRITE) {
            PyErr_Format(PyExc_ValueError, "task %s: access %zd has mode %d, not read, write or read-write",
                         pyparla_task_name(self), i, mode);
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
int pyparla_check_feasible(TaskObject *self, PyObject *options, double vcus, unsigned long long memory)
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
        PyErr_Format(PyExc_ValueError, "task %s %s", pyparla_task_name(self), text);
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
    PyErr_Format(PyExc_ValueError, "task %s: %s", pyparla_task_name(self), text);
    return -1;
}
