/*
 * spawn.c: the checks of a spawn's arguments (dependencies, placement options, data accesses, whether
 * any allowed device can hold the task), all made before the spawn changes the graph, so a spawn that
 * raises leaves no trace. See pyparla.h.
 */
#include "pyparla.h"

#include <structmember.h>

#include <limits.h>
#include <string.h>

/* A generator function as a body: calling it only makes the generator, so its code would never run. The
 * message after "task NAME: ", on the C and the Python spawn paths (parla._core.GENERATOR_BODY_MESSAGE). */
const char pyparla_generator_body_message[] =
    "the body is a generator function (it contains yield), so calling it would only make a generator and none "
    "of its code would run; remove the yield, or iterate the generator inside the body";

int pyparla_check_dependency(TaskObject *self, TaskObject *dep)
{
    if (pyparla_check_task(dep) < 0)
        return -1;
    if (dep == self) {
        PyErr_Format(PyExc_ValueError, "task %s cannot depend on itself", pyparla_task_name(self));
        return -1;
    }
    if (dep->runtime != self->runtime) {
        PyErr_Format(PyExc_ValueError, "task %s: dependency %s belongs to another Parla runtime (a finished context?)",
                     pyparla_task_name(self), pyparla_task_name(dep));
        return -1;
    }
    return 0;
}

/* Appends to out every task found in obj (a Task, or an iterable of Tasks
 * and iterables, nested), checking each; changes nothing in the graph. */
int pyparla_collect_dependencies(TaskObject *self, PyTypeObject *task_type, PyObject *obj, int depth, PyObject *out)
{
    if (PyObject_TypeCheck(obj, task_type))
        return pyparla_check_dependency(self, (TaskObject *)obj) < 0 ? -1 : PyList_Append(out, obj);
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
    if (depth == 0 && (PyUnicode_Check(obj) || PyBytes_Check(obj))) {
        PyErr_Format(PyExc_TypeError,
                     "spawn(dependencies=%R): dependencies must be tasks, TaskSpace slices or lists of them, not "
                     "a string", obj);
        return -1;
    }
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) { /* a string iterates to strings, never to a task */
        PyErr_Format(PyExc_TypeError,
                     "task %s: dependencies must be tasks, TaskSpace slices or iterables of them, not the string %R",
                     pyparla_task_name(self), obj);
        return -1;
    }
    PyObject *it = PyObject_GetIter(obj);
    if (it == NULL) {
        PyErr_Clear();
        if (depth == 0)
            PyErr_Format(PyExc_TypeError,
                         "task %s: dependencies=%R must be tasks, TaskSpace slices or iterables of them, not %.100s",
                         pyparla_task_name(self), obj, Py_TYPE(obj)->tp_name);
        else
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

/* The parts of one placement option (slots, vcus, memory): read directly from the tuple of a float and an int
 * that resolve_placement makes, else parsed (with its errors). 1, or 0 with an exception set. */
static int option_parts(PyObject *item, PyObject **slots, double *vcus, unsigned long long *memory)
{
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 3 && PyFloat_CheckExact(PyTuple_GET_ITEM(item, 1)) &&
        PyLong_CheckExact(PyTuple_GET_ITEM(item, 2))) {
        *memory = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 2));
        if (!(*memory == (unsigned long long)-1 && PyErr_Occurred())) {
            *slots = PyTuple_GET_ITEM(item, 0);
            *vcus = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 1));
            return 1;
        }
        PyErr_Clear(); /* out of range: the parse below says so */
    }
    return PyArg_ParseTuple(item, "OdO&", slots, vcus, pyparla_bytes_arg, memory);
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
        if (!option_parts(PySequence_Fast_GET_ITEM(seq, i), &slots_obj, &vcus, &memory))
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
    if (options == Py_None && vcus <= 1.0 && memory == 0)
        return 0; /* fits the cpu device, whose vcus capacity is 1 (the common case: nothing asked) */
    parla_runtime_t *rt = self->runtime->rt;
    int n_dev = parla_runtime_num_devices(rt);
    parla_device_info_t own[PYPARLA_MAX_DEVICES], *devs = own;
    if (n_dev > PYPARLA_MAX_DEVICES)
        return 0; /* more than Parla() allows: the engine checks at submit */
    /* The capacities of the context's devices, read once per context (a runtime's are fixed once made). */
    pyparla_state *st = pyparla_get_state(self->runtime->module);
    int cached = self->runtime == st->context_rt;
    if (cached)
        devs = st->caps;
    if (!cached || st->caps_rt != self->runtime) {
        for (int i = 0; i < n_dev; i++)
            parla_device_info(rt, i, &devs[i]);
        if (cached)
            st->caps_rt = self->runtime;
    }
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
        if (opt == NULL || !option_parts(opt, &slots, &ov, &om)) {
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

/* ========================================================================= the spawn path in C == */
/*
 * @spawn(taskid, dependencies, placement=, vcus=, memory=, input=, output=, inout=, priority=) is the
 * common spawn: parla.tasks.spawn (a SpawnFunction) gives it to make_spawner, which returns a Spawner, the
 * decorator; calling it with the body names (or creates) the task, resolves its placement, reads its
 * access declarations (spawn_decl.c), checks and records the dependencies and submits it, in one call
 * with no Python code run for the common forms (a body reading globals that look like data is wrapped by
 * parla.tasks, to warn when they are rebound). Everything else (other keywords and task ids, task
 * environments, progress, debug logging, native bodies) goes to parla.tasks's general spawn, which ends in
 * the same Task._submit.
 */

/* A spawn's arguments, in the order of parla.tasks._spawn's parameters. */
enum { A_TASKID, A_DEPS, A_PLACEMENT, A_VCUS, A_MEMORY, A_INPUT, A_OUTPUT, A_INOUT, A_PRIORITY, SPAWN_NARGS };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t n;             /* arguments held: 2 (taskid, dependencies; the rest are the defaults), or all */
    pyparla_state *st;        /* the module's state */
    PyObject *a[SPAWN_NARGS]; /* the arguments, as given (taskid: a Task, or None: anonymous) */
} SpawnerObject;

static const char no_context_message[] = "no Parla runtime is active: spawn tasks inside a 'with Parla():' block";

/* a[] with spawn's defaults (borrowed). */
static void spawn_defaults(pyparla_state *st, PyObject *a[SPAWN_NARGS])
{
    for (int i = 0; i < SPAWN_NARGS; i++)
        a[i] = Py_None;
    a[A_DEPS] = a[A_INPUT] = a[A_OUTPUT] = a[A_INOUT] = st->empty_tuple;
}


/* The global names code reads (a tuple, borrowed), from a small cache in front of parla.tasks's
 * _global_reads. NULL with an exception set. */
static PyObject *global_names(pyparla_state *st, PyObject *code)
{
    size_t i = ((uintptr_t)code >> 4) % PYPARLA_GLOBALS_CACHE;
    if (st->globals_code[i] == code)
        return st->globals_names[i];
    PyObject *names = PyObject_CallOneArg(st->global_reads, code);
    if (names == NULL)
        return NULL;
    if (!PyTuple_CheckExact(names)) {
        Py_DECREF(names);
        PyErr_SetString(PyExc_TypeError, "_global_reads must return a tuple");
        return NULL;
    }
    /* The cache holds the code object, so its address names no other code while it is cached. */
    Py_XSETREF(st->globals_code[i], Py_NewRef(code));
    Py_XSETREF(st->globals_names[i], names);
    return names;
}

/* Whether fn (a Python function) is a plain function reading a global that holds data (not a module,
 * function, class or builtin) now: 1, 0, or -1 with an exception set. */
static int reads_data_globals(pyparla_state *st, PyObject *fn)
{
    PyObject *code = PyFunction_GET_CODE(fn);
    if (((PyCodeObject *)code)->co_flags & CO_COROUTINE)
        return 0;
    PyObject *names = global_names(st, code);
    if (names == NULL)
        return -1;
    PyObject *g = PyFunction_GET_GLOBALS(fn);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *v = PyDict_GetItemWithError(g, PyTuple_GET_ITEM(names, i));
        if (v == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        if (!PyModule_Check(v) && !PyFunction_Check(v) && !PyType_Check(v) && !PyCFunction_Check(v))
            return 1;
    }
    return 0;
}

/* Writes the decimal digits of v at buf (room for 20) and returns their number (snprintf's formatting
 * costs more than the rest of naming a task); two digits per division. */
static size_t put_decimal(char *buf, unsigned long long v)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                   "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";
    char tmp[20];
    size_t at = sizeof tmp;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        tmp[--at] = pairs[2 * r + 1];
        tmp[--at] = pairs[2 * r];
    }
    if (v >= 10) {
        tmp[--at] = pairs[2 * v + 1];
        tmp[--at] = pairs[2 * v];
    } else {
        tmp[--at] = (char)('0' + v);
    }
    size_t n = sizeof tmp - at;
    memcpy(buf, tmp + at, n);
    return n;
}

/* A new anonymous task of rt named after body: "<body.__name__>#<n>" ("task#<n>" without a name). */
static TaskObject *anonymous_task(pyparla_state *st, RuntimeObject *rt, PyObject *body)
{
    PyObject *name;
    if (PyFunction_Check(body)) {
        name = Py_NewRef(((PyFunctionObject *)body)->func_name);
    } else if ((name = PyObject_GetAttr(body, st->str_name)) == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        name = PyUnicode_FromString("task");
    }
    if (name != NULL && !PyUnicode_Check(name))
        Py_SETREF(name, PyObject_Str(name));
    if (name == NULL)
        return NULL;
    unsigned long long n = st->anonymous++;
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &len);
    TaskObject *task = NULL;
    if (utf8 != NULL && len < 200 && strlen(utf8) == (size_t)len) {
        char buf[256];
        memcpy(buf, utf8, (size_t)len);
        buf[len] = '#';
        size_t k = (size_t)len + 1 + put_decimal(buf + len + 1, n);
        buf[k] = '\0';
        task = pyparla_task_new(st->py_task_type, rt, buf, (Py_ssize_t)k, NULL);
    } else if (utf8 != NULL) {
        PyObject *full = PyUnicode_FromFormat("%U#%llu", name, n);
        const char *u = full ? PyUnicode_AsUTF8AndSize(full, &len) : NULL;
        if (u != NULL)
            task = pyparla_task_new(st->py_task_type, rt, u, len, full);
        Py_XDECREF(full);
    }
    Py_DECREF(name);
    return task;
}

/* The general spawn of a[0..n) (parla.tasks._spawn; its defaults for the rest) applied to body. */
static PyObject *general_spawn(pyparla_state *st, PyObject *const *a, Py_ssize_t n, PyObject *body)
{
    PyObject *decorator = PyObject_Vectorcall(st->spawn_general, a, n, NULL);
    PyObject *out = decorator ? PyObject_CallOneArg(decorator, body) : NULL;
    Py_XDECREF(decorator);
    return out;
}

/* Whether logger logs debug messages. The logger's own cache of isEnabledFor answers (a dict; logging
 * clears it in place whenever a level changes) is read first: on Python 3.11, a cache whose version tag (a
 * global counter every change of a dict advances) is *seen, the tag it had when it answered False last, is
 * unchanged and answers False still; else its few entries are scanned for the key object 10 itself (the
 * small int logging.DEBUG is; cheaper than hashing and a lookup), then it is looked up. 1, 0, or -1 with
 * an exception set. */
static int logger_on(pyparla_state *st, PyObject *logger, PyObject *cache, uint64_t *seen)
{
    if (cache) {
#if PY_VERSION_HEX < 0x030C0000
        uint64_t tag = ((PyDictObject *)cache)->ma_version_tag;
        if (*seen != 0 && tag == *seen)
            return 0;
#endif
        PyObject *hit = NULL, *key, *value;
        Py_ssize_t pos = 0;
        if (PyDict_GET_SIZE(cache) <= 4) {
            while (PyDict_Next(cache, &pos, &key, &value))
                if (key == st->ten) {
                    hit = value;
                    break;
                }
        }
        if (hit == NULL && (hit = PyDict_GetItemWithError(cache, st->ten)) == NULL && PyErr_Occurred())
            return -1;
        if (hit == Py_False) {
#if PY_VERSION_HEX < 0x030C0000
            *seen = tag;
#endif
            return 0;
        }
    }
    *seen = 0;
    PyObject *r = PyObject_CallMethodOneArg(logger, st->str_enabled, st->ten);
    if (r == NULL)
        return -1;
    int on = PyObject_IsTrue(r);
    Py_DECREF(r);
    return on;
}

/* Spawns body with the arguments a[0..n) (taskid a Task, or None: anonymous; n == 2: the rest are the
 * defaults). Returns the task, or NULL with the exception set (the graph then unchanged,
 * as Task._submit promises). The steps, and the order in which they can refuse the spawn, are
 * parla.tasks._spawn's decorator's. */
static PyObject *spawn_now(pyparla_state *st, PyObject *const *a, Py_ssize_t n, PyObject *body)
{
    RuntimeObject *rt = st->context_rt;
    if (rt == NULL)
        return PyErr_SetString(PyExc_RuntimeError, no_context_message), NULL;
    int plain = n < SPAWN_NARGS, placed = !plain && a[A_PLACEMENT] != Py_None;
    /* A native body (a parla.native.Call) is bound to its task here (pyparla_native_bind) and runs as it is;
     * another placed body in a context with CUDA GPUs runs on_cuda_device unless it is async, which Python
     * decides for callables that are not plain functions; a placement with the mapping logger on is logged
     * there. */
    int native = pyparla_is_native_call(st, body);
    int general = !native && placed && st->context_cuda && !PyFunction_Check(body);
    if (!general && placed && st->mapping_logger != NULL &&
        (general = logger_on(st, st->mapping_logger, st->mapping_log_cache, &st->mapping_log_seen)) < 0)
        return NULL;
    if (general)
        return general_spawn(st, a, n, body);
    PyObject *taskid = a[A_TASKID];
    TaskObject *task = taskid == Py_None ? anonymous_task(st, rt, body) : (TaskObject *)Py_NewRef(taskid);
    if (task == NULL)
        return NULL;
    /* The resolved placement (options, vcus, memory) and the accesses: borrowed defaults, or owned[]. */
    PyObject *owned[4] = {NULL, NULL, NULL, NULL}, *attrs = NULL, *func = NULL, *out = NULL;
    PyObject *options = Py_None, *vcus = st->zero_float, *memory = st->zero, *accesses = st->empty_tuple;
    if (!plain) {
        if (placed || a[A_VCUS] != Py_None || a[A_MEMORY] != Py_None) {
            if (pyparla_spawn_placement(st, task, a[A_PLACEMENT], a[A_VCUS], a[A_MEMORY], owned) < 0)
                goto done;
            options = owned[0], vcus = owned[1], memory = owned[2];
        }
        if (a[A_INPUT] != st->empty_tuple || a[A_OUTPUT] != st->empty_tuple || a[A_INOUT] != st->empty_tuple) {
            if ((owned[3] = pyparla_spawn_accesses(st, task, a + A_INPUT, options, &attrs)) == NULL)
                goto done;
            accesses = owned[3];
        }
    }
    if (native) {
        func = pyparla_native_bind(st, task, body, attrs);
        if (func == NULL)
            goto done;
    } else {
        func = Py_NewRef(body);
    }
    int coroutine = 0;
    if (PyFunction_Check(body)) {
        int flags = ((PyCodeObject *)PyFunction_GET_CODE(body))->co_flags;
        if (flags & (CO_GENERATOR | CO_ASYNC_GENERATOR)) {
            PyErr_Format(PyExc_TypeError, "task %s: %s", pyparla_task_name(task), pyparla_generator_body_message);
            goto done;
        }
        coroutine = (flags & CO_COROUTINE) != 0;
        int r = coroutine ? 0 : reads_data_globals(st, body);
        if (r > 0)
            Py_SETREF(func, PyObject_CallFunctionObjArgs(st->watch_body, body, (PyObject *)task, NULL));
        if (r < 0 || func == NULL)
            goto done;
    }
    if (options != Py_None && st->context_cuda && !coroutine && !native) {
        Py_SETREF(func, pyparla_capture(st, func));
        if (func == NULL)
            goto done;
        Py_SETREF(func, PyObject_CallFunctionObjArgs(st->on_cuda_device, func, memory, NULL));
        if (func == NULL)
            goto done;
    }
    PyObject *priority = plain || a[A_PRIORITY] == Py_None ? st->zero : a[A_PRIORITY];
    PyObject *args[7] = {func, a[A_DEPS], priority, vcus, memory, options, accesses};
    PyObject *r = pyparla_task_spawn(task, args, attrs ? attrs : Py_None);
    if (r == NULL)
        goto done;
    Py_DECREF(r);
    if (PyDict_GET_SIZE(st->finish_scopes) > 0) { /* inside finish() blocks: recorded there */
        r = PyObject_CallOneArg(st->record_in_finish, (PyObject *)task);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    out = Py_NewRef((PyObject *)task);
done:
    if (!plain)
        for (int i = 0; i < 4; i++)
            Py_XDECREF(owned[i]);
    Py_XDECREF(attrs);
    Py_XDECREF(func);
    Py_DECREF(task);
    return out;
}

static PyObject *Spawner_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SpawnerObject *sp = (SpawnerObject *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "the decorator spawn(...) returns takes one argument, the task body");
        return NULL;
    }
    return spawn_now(sp->st, sp->a, sp->n, args[0]);
}

static void Spawner_dealloc(SpawnerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    for (Py_ssize_t i = 0; i < self->n; i++)
        Py_DECREF(self->a[i]);
    pyparla_state *st = self->st;
    if (st && st->spawner_type == tp && st->free_spawner == NULL)
        st->free_spawner = self; /* one spawn's decorator goes as the next one's is made: kept for it */
    else
        PyObject_Free(self);
    Py_DECREF(tp);
}

static PyMemberDef Spawner_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(SpawnerObject, vectorcall), READONLY, NULL},
    {NULL},
};

static PyType_Slot Spawner_slots[] = {
    {Py_tp_doc, "The decorator @spawn(...) returns: call it with the body to spawn it."},
    {Py_tp_dealloc, Spawner_dealloc},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, Spawner_members},
    {0, NULL},
};

PyType_Spec pyparla_spawner_spec = {
    .name = "parla._core.Spawner",
    .basicsize = sizeof(SpawnerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Spawner_slots,
};

/* The decorator of @spawn(*a[0..n)) (n: 2, taskid and dependencies, or SPAWN_NARGS), or what the general
 * spawn returns for them. */
static PyObject *make_spawner(pyparla_state *st, PyObject *const *a, Py_ssize_t n)
{
    PyObject *taskid = a[A_TASKID], *deps = a[A_DEPS];
    int general = st->context_rt == NULL || !st->context_plain ||
                  (taskid != Py_None && Py_TYPE(taskid) != st->py_task_type && !PyObject_TypeCheck(taskid, st->task_type)) ||
                  PyUnicode_Check(deps) ||
                  PyBytes_Check(deps);
    /* With the spawn logger on, the general spawn logs each spawn. */
    if (!general && (general = logger_on(st, st->spawn_logger, st->spawn_log_cache, &st->spawn_log_seen)) < 0)
        return NULL;
    if (general) /* its checks and errors, its slower paths: the general spawn */
        return PyObject_Vectorcall(st->spawn_general, a, n, NULL);
    SpawnerObject *sp = st->free_spawner;
    if (sp) {
        st->free_spawner = NULL;
        PyObject_Init((PyObject *)sp, st->spawner_type);
    } else if ((sp = PyObject_New(SpawnerObject, st->spawner_type)) == NULL) {
        return NULL;
    }
    sp->vectorcall = Spawner_vectorcall;
    sp->st = st;
    sp->n = n;
    for (Py_ssize_t i = 0; i < n; i++)
        sp->a[i] = Py_NewRef(a[i]);
    return (PyObject *)sp;
}

/* spawner(taskid, dependencies): the decorator of @spawn(taskid, dependencies). */
static PyObject *mod_spawner(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pyparla_state *st = pyparla_get_state(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "spawner(taskid, dependencies) takes 2 arguments");
        return NULL;
    }
    if (st->spawn_general == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "spawner(): parla.tasks has not called _spawn_setup");
        return NULL;
    }
    return make_spawner(st, args, 2);
}

/* parla._core.SpawnFunction: parla.tasks.spawn. A call with at most taskid and dependencies by position
 * and otherwise only the keywords in st->spawn_kw (a priority, when given, an int in [-10^6, 10^6]) makes
 * its decorator here; every other call goes to the Python function it wraps (the definition, with its
 * signature and documentation, in parla/tasks.py). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *function; /* the Python spawn */
    PyObject *dict;     /* __doc__, __wrapped__, ... (functools.update_wrapper) */
    pyparla_state *st;  /* the module's state */
} SpawnFunctionObject;

/* The position of keyword kw among spawn's parameters (st->spawn_kw), or -1. */
static int spawn_keyword(pyparla_state *st, PyObject *kw)
{
    for (int i = 0; i < SPAWN_NARGS; i++)
        if (st->spawn_kw[i] == kw)
            return i;
    for (int i = 0; i < SPAWN_NARGS; i++)
        if (PyUnicode_Compare(st->spawn_kw[i], kw) == 0)
            return i;
    PyErr_Clear();
    return -1;
}

static PyObject *SpawnFunction_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SpawnFunctionObject *sf = (SpawnFunctionObject *)self;
    pyparla_state *st = sf->st;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (st->spawn_general == NULL || nargs > 2)
        return PyObject_Vectorcall(sf->function, args, nargsf, kwnames);
    if (nkw == 0 && nargs == 2) /* spawn(taskid, dependencies): the common call */
        return make_spawner(st, args, 2);
    if (nargs <= 1 && (nkw == 0 || (nkw == 1 && nargs == 1 && PyTuple_GET_ITEM(kwnames, 0) == st->spawn_kw[A_DEPS]))) {
        /* spawn(), spawn(taskid), spawn(taskid, dependencies=...) */
        PyObject *two[2] = {nargs ? args[0] : Py_None, nkw ? args[1] : st->empty_tuple};
        return make_spawner(st, two, 2);
    }
    PyObject *a[SPAWN_NARGS];
    spawn_defaults(st, a);
    for (Py_ssize_t i = 0; i < nargs; i++)
        a[i] = args[i];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        int i = spawn_keyword(st, PyTuple_GET_ITEM(kwnames, k));
        if (i < nargs) /* another keyword, or one given by position too: Python's error */
            return PyObject_Vectorcall(sf->function, args, nargsf, kwnames);
        a[i] = args[nargs + k];
    }
    int plain = 1; /* only taskid and dependencies given */
    for (int i = A_PLACEMENT; i < SPAWN_NARGS; i++)
        plain &= a[i] == (i >= A_INPUT && i <= A_INOUT ? st->empty_tuple : Py_None);
    if (plain)
        return make_spawner(st, a, 2);
    PyObject *priority = a[A_PRIORITY];
    if (priority != Py_None) { /* an int in range is taken as it is; others are checked (or converted) there */
        int overflow;
        long p = PyLong_CheckExact(priority) ? PyLong_AsLongAndOverflow(priority, &overflow) : 0;
        if (!PyLong_CheckExact(priority) || overflow || p < -1000000 || p > 1000000)
            return PyObject_Vectorcall(sf->function, args, nargsf, kwnames);
    }
    return make_spawner(st, a, SPAWN_NARGS);
}

static PyObject *SpawnFunction_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    PyObject *function;
    if ((kwds && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "O:SpawnFunction", &function))
        return NULL;
    SpawnFunctionObject *sf = (SpawnFunctionObject *)tp->tp_alloc(tp, 0);
    if (sf == NULL)
        return NULL;
    sf->vectorcall = SpawnFunction_vectorcall;
    sf->st = PyType_GetModuleState(tp);
    sf->function = Py_NewRef(function);
    return (PyObject *)sf;
}

static int SpawnFunction_traverse(SpawnFunctionObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->function);
    Py_VISIT(self->dict);
    return 0;
}

static int SpawnFunction_clear(SpawnFunctionObject *self)
{
    Py_CLEAR(self->function);
    Py_CLEAR(self->dict);
    return 0;
}

static void SpawnFunction_dealloc(SpawnFunctionObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    SpawnFunction_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef SpawnFunction_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(SpawnFunctionObject, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(SpawnFunctionObject, dict), READONLY, NULL},
    {NULL},
};

static PyGetSetDef SpawnFunction_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyType_Slot SpawnFunction_slots[] = {
    {Py_tp_getset, SpawnFunction_getset},
    {Py_tp_doc, "SpawnFunction(spawn): spawn with its common case in C (see parla.tasks.spawn)."},
    {Py_tp_new, SpawnFunction_new},
    {Py_tp_dealloc, SpawnFunction_dealloc},
    {Py_tp_traverse, SpawnFunction_traverse},
    {Py_tp_clear, SpawnFunction_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, SpawnFunction_members},
    {0, NULL},
};

PyType_Spec pyparla_spawn_function_spec = {
    .name = "parla._core.SpawnFunction",
    .basicsize = sizeof(SpawnFunctionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC,
    .slots = SpawnFunction_slots,
};

/* A logger's cache of isEnabledFor answers (a dict; NULL in other logging implementations: then asked). */
static PyObject *logger_cache(PyObject *logger)
{
    PyObject *cache = PyObject_GetAttrString(logger, "_cache");
    if (cache == NULL)
        PyErr_Clear();
    else if (!PyDict_CheckExact(cache))
        Py_CLEAR(cache);
    return cache;
}

/* _spawn_setup(Task, spawn_general, watch_body, global_reads, finish_scopes, record_in_finish, logger,
 * native_call). */
static PyObject *mod_spawn_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pyparla_state *st = pyparla_get_state(module);
    if (nargs != 8 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], st->task_type) ||
        !PyDict_CheckExact(args[4]) || !PyType_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "_spawn_setup(Task, spawn_general, watch_body, global_reads, "
                                         "finish_scopes: dict, record_in_finish, spawn_logger, native_call: type)");
        return NULL;
    }
    Py_XSETREF(st->native_call_type, (PyTypeObject *)Py_NewRef(args[7]));
    Py_XSETREF(st->py_task_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(st->spawn_general, Py_NewRef(args[1]));
    Py_XSETREF(st->watch_body, Py_NewRef(args[2]));
    Py_XSETREF(st->global_reads, Py_NewRef(args[3]));
    Py_XSETREF(st->finish_scopes, Py_NewRef(args[4]));
    Py_XSETREF(st->record_in_finish, Py_NewRef(args[5]));
    Py_XSETREF(st->spawn_logger, Py_NewRef(args[6]));
    Py_XSETREF(st->spawn_log_cache, logger_cache(args[6]));
    st->spawn_log_seen = 0;
    Py_RETURN_NONE;
}

/* _spawn_setup_data(resolve_placement, engine_accesses, cpu, cpu0, PArray, on_cuda_device, mapping_logger). */
static PyObject *mod_spawn_setup_data(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pyparla_state *st = pyparla_get_state(module);
    if (nargs != 7 || !PyType_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "_spawn_setup_data(resolve_placement, engine_accesses, cpu, cpu0, "
                                         "PArray: type, on_cuda_device, mapping_logger)");
        return NULL;
    }
    Py_XSETREF(st->resolve_placement, Py_NewRef(args[0]));
    Py_XSETREF(st->engine_accesses, Py_NewRef(args[1]));
    Py_XSETREF(st->cpu_arch, Py_NewRef(args[2]));
    Py_XSETREF(st->cpu0, Py_NewRef(args[3]));
    Py_XSETREF(st->parray_type, (PyTypeObject *)Py_NewRef(args[4]));
    Py_XSETREF(st->on_cuda_device, Py_NewRef(args[5]));
    Py_XSETREF(st->mapping_logger, Py_NewRef(args[6]));
    Py_XSETREF(st->mapping_log_cache, logger_cache(args[6]));
    st->mapping_log_seen = 0;
    Py_RETURN_NONE;
}

/* _set_context(context): the parla.Parla context just made active (None: none is). */
static PyObject *mod_set_context(PyObject *module, PyObject *context)
{
    pyparla_state *st = pyparla_get_state(module);
    if (context == Py_None) {
        Py_CLEAR(st->context);
        Py_CLEAR(st->context_rt);
        Py_CLEAR(st->placement_cache);
        st->context_plain = 0;
        st->context_cuda = 0;
        st->caps_rt = NULL;
        pyparla_spawn_forget_placement(st);
        Py_RETURN_NONE;
    }
    PyObject *rt = PyObject_GetAttrString(context, "_rt");
    PyObject *envs = rt ? PyObject_GetAttrString(context, "environments") : NULL;
    PyObject *progress = envs ? PyObject_GetAttrString(context, "_progress") : NULL;
    PyObject *cuda = progress ? PyObject_GetAttrString(context, "has_cuda") : NULL;
    PyObject *cache = cuda ? PyObject_GetAttrString(context, "_placement_cache") : NULL;
    int has_envs = cache ? PyObject_IsTrue(envs) : -1;
    int has_cuda = has_envs >= 0 ? PyObject_IsTrue(cuda) : -1;
    PyObject *out = NULL;
    if (has_cuda >= 0) {
        if (!PyObject_TypeCheck(rt, st->runtime_type) || !PyDict_CheckExact(cache)) {
            PyErr_SetString(PyExc_TypeError, "_set_context: the context's _rt is not a parla._core.Runtime, or "
                                             "its _placement_cache not a dict");
        } else {
            Py_XSETREF(st->context, Py_NewRef(context));
            Py_XSETREF(st->context_rt, (RuntimeObject *)Py_NewRef(rt));
            Py_XSETREF(st->placement_cache, Py_NewRef(cache));
            st->context_plain = !has_envs && progress == Py_None;
            st->context_cuda = has_cuda;
            st->caps_rt = NULL;
            pyparla_spawn_forget_placement(st);
            out = Py_NewRef(Py_None);
        }
    }
    Py_XDECREF(rt);
    Py_XDECREF(envs);
    Py_XDECREF(progress);
    Py_XDECREF(cuda);
    Py_XDECREF(cache);
    return out;
}

static PyObject *mod_next_anonymous(PyObject *module, PyObject *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(pyparla_get_state(module)->anonymous++);
}

/* ---------------------------------------------------------------------------------- TaskSpace -- */
/*
 * parla._core.TaskSpaceBase: the base of parla.tasks.TaskSpace; T[i] and T[i, j] with int indices go
 * here. A named task of the active context is returned from the space's _tasks table; a new one, in a
 * space that creates tasks, is made and recorded here when its key is within the space's shape and start.
 * Every other index (slices, lists, other key types, bounds, tasks of an earlier context, handles outside a
 * context) goes to the space's _getitem, in Python. The attributes read here (_tasks, shape, start,
 * _create, name) are slots of the object (set and read from Python as attributes), not __dict__ entries.
 */

typedef struct {
    PyObject_HEAD
    PyObject *tasks, *shape, *start, *create, *name; /* NULL until set (AttributeError when read) */
    pyparla_state *st;   /* the module's state (set by tp_new; NULL: looked up) */
    PyObject *name_seen; /* the name last turned into UTF-8 (held, so that its address names no other
                            object), its UTF-8 form and length; name_ok: usable in a task name (no NUL) */
    const char *name_utf8;
    Py_ssize_t name_len;
    int name_ok;
} SpaceObject;

static PyObject *space_general(pyparla_state *st, PyObject *self, PyObject *index)
{
    return PyObject_CallMethodOneArg(self, st->str_getitem, index);
}

/* Writes "name[k0, k1, ...]" (name: at bytes, no NUL; Python's str of each int: the n ints of key, or k when
 * key is NULL) to buf; the length, or -1 if it does not fit or an index is negative or beyond 64 bits (no
 * exception set). */
static int space_key_name(const char *name, size_t at, PyObject *key, long long k, char *buf, size_t cap)
{
    if (at + 2 >= cap)
        return -1;
    memcpy(buf, name, at);
    buf[at++] = '[';
    Py_ssize_t n = key ? PyTuple_GET_SIZE(key) : 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int overflow = 0;
        long long v = key ? PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(key, i), &overflow) : k;
        if (overflow || v < 0 || at + 24 >= cap)
            return -1;
        if (i) {
            buf[at++] = ',';
            buf[at++] = ' ';
        }
        at += put_decimal(buf + at, (unsigned long long)v);
    }
    buf[at++] = ']';
    buf[at] = '\0';
    return (int)at;
}

/* Index d (of n) of key (a tuple of ints; NULL: the one int k) in v; 0, or -1 beyond 64 bits. */
static int key_at(PyObject *key, long long k, Py_ssize_t d, long long *v)
{
    int overflow = 0;
    *v = key ? PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(key, d), &overflow) : k;
    return overflow ? -1 : 0;
}

/* Whether key (a tuple of ints; NULL: the one int k) is certainly inside a space of this shape and start
 * (tuples of ints, or None), as TaskSpace._in_bounds decides: 1, or 0 when it is not or it cannot say here
 * (the general path then answers: an empty TaskList, or IndexError). No exception set. */
static int space_in_bounds(PyObject *shape, PyObject *start, PyObject *key, long long k)
{
    Py_ssize_t n = key ? PyTuple_GET_SIZE(key) : 1;
    if (start != Py_None && !PyTuple_CheckExact(start))
        return 0;
    if (shape != Py_None && (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != n || start == Py_None ||
                             PyTuple_GET_SIZE(start) != n))
        return 0;
    for (Py_ssize_t d = 0; d < n; d++) {
        long long v, lo = 0, count = LLONG_MAX;
        if (key_at(key, k, d, &v) < 0)
            return 0;
        if (start != Py_None && d < PyTuple_GET_SIZE(start)) {
            PyObject *s = PyTuple_GET_ITEM(start, d);
            int overflow = 0;
            lo = PyLong_CheckExact(s) ? PyLong_AsLongLongAndOverflow(s, &overflow) : 0;
            if (!PyLong_CheckExact(s) || overflow || lo < 0)
                return 0;
        }
        if (shape != Py_None) {
            PyObject *c = PyTuple_GET_ITEM(shape, d);
            int overflow = 0;
            count = PyLong_CheckExact(c) ? PyLong_AsLongLongAndOverflow(c, &overflow) : 0;
            if (!PyLong_CheckExact(c) || overflow || count < 0)
                return 0;
        }
        if (v < lo || v - lo >= count)
            return 0;
    }
    PyErr_Clear();
    return 1;
}

/* A new task for key (a tuple of ints; NULL: the one int k), recorded in tasks (the space's TaskTable),
 * or the general path's answer. New reference. */
static PyObject *space_new_task(pyparla_state *st, SpaceObject *self, PyObject *tasks, PyObject *key, long long k,
                                PyObject *index)
{
    PyObject *shape = self->shape, *start = self->start, *name = self->name;
    if (name != self->name_seen && name && PyUnicode_CheckExact(name)) { /* the name's UTF-8 form, kept */
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(name, &n);
        if (utf8 == NULL)
            PyErr_Clear();
        Py_XSETREF(self->name_seen, Py_NewRef(name));
        self->name_utf8 = utf8;
        self->name_len = n;
        self->name_ok = utf8 != NULL && strlen(utf8) == (size_t)n && n + 2 < 256;
    }
    char buf[256];
    int len = -1;
    if (shape && start && name && name == self->name_seen && self->name_ok && self->create == Py_True &&
        ((shape == Py_None && start == Py_None) || space_in_bounds(shape, start, key, k)))
        len = space_key_name(self->name_utf8, (size_t)self->name_len, key, k, buf, sizeof buf);
    if (len < 0)
        return space_general(st, (PyObject *)self, index);
    PyObject *task = (PyObject *)pyparla_task_new(st->py_task_type, st->context_rt, buf, len, NULL);
    if (task == NULL)
        return NULL;
    /* Allocating may have run other threads (a collection running finalizers): whoever recorded the key
     * first wins; a later one leaves the choice to the general path (it serialises creation). */
    PyObject *found = key ? pyparla_table_setdefault(tasks, key, task) : pyparla_table_setdefault_int(tasks, k, task);
    if (found == task)
        return task;
    Py_DECREF(task);
    return found ? space_general(st, (PyObject *)self, index) : NULL;
}

static PyObject *Space_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    PyObject *module = PyType_GetModuleByDef(tp, &pyparla_module_def);
    PyObject *self = module ? PyType_GenericNew(tp, args, kwds) : NULL;
    if (self)
        ((SpaceObject *)self)->st = pyparla_get_state(module);
    return self;
}

static PyObject *Space_subscript(PyObject *self, PyObject *index)
{
    pyparla_state *st = ((SpaceObject *)self)->st;
    if (st == NULL) {
        PyObject *module = PyType_GetModuleByDef(Py_TYPE(self), &pyparla_module_def);
        if (module == NULL)
            return NULL;
        st = pyparla_get_state(module);
    }
    PyObject *key = NULL; /* a tuple of ints; NULL: one int, k */
    long long k = 0;
    PyObject *one = PyLong_CheckExact(index) ? index
                    : PyTuple_CheckExact(index) && PyTuple_GET_SIZE(index) == 1 ? PyTuple_GET_ITEM(index, 0)
                                                                               : NULL;
    if (one && PyLong_CheckExact(one)) {
        int overflow;
        k = PyLong_AsLongLongAndOverflow(one, &overflow);
        if (overflow || k == LLONG_MIN)
            return space_general(st, self, index);
    } else if (PyTuple_CheckExact(index) && PyTuple_GET_SIZE(index) > 1) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(index); i++)
            if (!PyLong_CheckExact(PyTuple_GET_ITEM(index, i)))
                return space_general(st, self, index);
        key = index;
    } else {
        return space_general(st, self, index);
    }
    PyObject *tasks = ((SpaceObject *)self)->tasks;
    if (tasks == NULL || !Py_IS_TYPE(tasks, st->table_type))
        return space_general(st, self, index);
    Py_INCREF(tasks); /* the lookup may run code (an int key's hash does not; other keys' may) */
    PyObject *out = NULL, *task = key ? pyparla_table_get(tasks, key) : pyparla_table_get_int(tasks, k);
    RuntimeObject *rt = st->context_rt;
    if (task != NULL) {
        if (rt == NULL || (PyObject_TypeCheck(task, st->task_type) && ((TaskObject *)task)->runtime == rt))
            out = Py_NewRef(task);
        else
            out = space_general(st, self, index);
    } else if (!PyErr_Occurred()) {
        out = rt == NULL ? space_general(st, self, index)
                         : space_new_task(st, (SpaceObject *)self, tasks, key, k, index);
    }
    Py_DECREF(tasks);
    return out;
}

static int Space_traverse(SpaceObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->tasks);
    Py_VISIT(self->shape);
    Py_VISIT(self->start);
    Py_VISIT(self->create);
    Py_VISIT(self->name);
    Py_VISIT(self->name_seen);
    return 0;
}

static int Space_clear(SpaceObject *self)
{
    Py_CLEAR(self->tasks);
    Py_CLEAR(self->shape);
    Py_CLEAR(self->start);
    Py_CLEAR(self->create);
    Py_CLEAR(self->name);
    Py_CLEAR(self->name_seen);
    return 0;
}

static void Space_dealloc(SpaceObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Space_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef Space_members[] = {
    {"_tasks", T_OBJECT_EX, offsetof(SpaceObject, tasks), 0, "key -> its Task (a parla._core.TaskTable)"},
    {"shape", T_OBJECT_EX, offsetof(SpaceObject, shape), 0, "the space's shape (a tuple of ints) or None"},
    {"start", T_OBJECT_EX, offsetof(SpaceObject, start), 0, "the space's first index (a tuple of ints) or None"},
    {"_create", T_OBJECT_EX, offsetof(SpaceObject, create), 0, "whether indexing creates tasks"},
    {"name", T_OBJECT_EX, offsetof(SpaceObject, name), 0, "the space's name (a str)"},
    {NULL},
};

static PyType_Slot Space_slots[] = {
    {Py_tp_doc, "The base of parla.tasks.TaskSpace: indexing with ints in C."},
    {Py_tp_new, Space_new},
    {Py_tp_dealloc, Space_dealloc},
    {Py_tp_traverse, Space_traverse},
    {Py_tp_clear, Space_clear},
    {Py_tp_members, Space_members},
    {Py_mp_subscript, Space_subscript},
    {0, NULL},
};

PyType_Spec pyparla_space_spec = {
    .name = "parla._core.TaskSpaceBase",
    .basicsize = sizeof(SpaceObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Space_slots,
};

/* ------------------------------------------------------------------------------ module state -- */

PyMethodDef pyparla_spawn_methods[] = {
    {"spawner", (PyCFunction)(void (*)(void))mod_spawner, METH_FASTCALL,
     "spawner(taskid, dependencies): the decorator of @spawn(taskid, dependencies) (taskid a Task or None); "
     "calling it with the body spawns it and returns the Task. Spawns that need more go to parla.tasks."},
    {"_spawn_setup", (PyCFunction)(void (*)(void))mod_spawn_setup, METH_FASTCALL,
     "_spawn_setup(Task, spawn_general, watch_body, global_reads, finish_scopes, record_in_finish, logger): "
     "what the spawn path needs from parla.tasks (called once, at its import)."},
    {"_spawn_setup_data", (PyCFunction)(void (*)(void))mod_spawn_setup_data, METH_FASTCALL,
     "_spawn_setup_data(resolve_placement, engine_accesses, cpu, cpu0, PArray, on_cuda_device, mapping_logger): "
     "what the spawn path needs for placements and access declarations (called once, at parla.tasks's import)."},
    {"_set_context", mod_set_context, METH_O,
     "_set_context(context): the parla.Parla context made active, or None when it is left."},
    {"next_anonymous", mod_next_anonymous, METH_NOARGS, "The next number of an anonymous task's name."},
    {NULL},
};

int pyparla_spawn_traverse(pyparla_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->spawner_type);
    Py_VISIT(st->space_type);
    Py_VISIT(st->table_type);
    Py_VISIT(st->py_task_type);
    Py_VISIT(st->native_call_type);
    Py_VISIT(st->spawn_general);
    Py_VISIT(st->watch_body);
    Py_VISIT(st->global_reads);
    Py_VISIT(st->finish_scopes);
    Py_VISIT(st->record_in_finish);
    Py_VISIT(st->spawn_logger);
    Py_VISIT(st->spawn_log_cache);
    Py_VISIT(st->spawn_function_type);
    Py_VISIT(st->context);
    Py_VISIT(st->context_rt);
    Py_VISIT(st->placement_cache);
    Py_VISIT(st->resolve_placement);
    Py_VISIT(st->engine_accesses);
    Py_VISIT(st->cpu_arch);
    Py_VISIT(st->cpu0);
    Py_VISIT(st->parray_type);
    Py_VISIT(st->on_cuda_device);
    Py_VISIT(st->mapping_logger);
    Py_VISIT(st->mapping_log_cache);
    Py_VISIT(st->last_placement);
    Py_VISIT(st->last_vcus);
    Py_VISIT(st->last_memory);
    Py_VISIT(st->last_resolved);
    for (int i = 0; i < PYPARLA_GLOBALS_CACHE; i++) {
        Py_VISIT(st->globals_code[i]);
        Py_VISIT(st->globals_names[i]);
    }
    return 0;
}

void pyparla_spawn_clear(pyparla_state *st)
{
    PyObject_Free(st->free_spawner);
    st->free_spawner = NULL;
    Py_CLEAR(st->spawner_type);
    Py_CLEAR(st->space_type);
    Py_CLEAR(st->table_type);
    Py_CLEAR(st->py_task_type);
    Py_CLEAR(st->native_call_type);
    Py_CLEAR(st->spawn_general);
    Py_CLEAR(st->watch_body);
    Py_CLEAR(st->global_reads);
    Py_CLEAR(st->finish_scopes);
    Py_CLEAR(st->record_in_finish);
    Py_CLEAR(st->spawn_logger);
    Py_CLEAR(st->spawn_log_cache);
    Py_CLEAR(st->spawn_function_type);
    Py_CLEAR(st->context);
    Py_CLEAR(st->context_rt);
    Py_CLEAR(st->placement_cache);
    Py_CLEAR(st->resolve_placement);
    Py_CLEAR(st->engine_accesses);
    Py_CLEAR(st->cpu_arch);
    Py_CLEAR(st->cpu0);
    Py_CLEAR(st->parray_type);
    Py_CLEAR(st->on_cuda_device);
    Py_CLEAR(st->mapping_logger);
    Py_CLEAR(st->mapping_log_cache);
    pyparla_spawn_forget_placement(st);
    for (int i = 0; i < PYPARLA_GLOBALS_CACHE; i++) {
        Py_CLEAR(st->globals_code[i]);
        Py_CLEAR(st->globals_names[i]);
    }
    Py_CLEAR(st->str_shape);
    Py_CLEAR(st->str_name_attr);
    Py_CLEAR(st->str_getitem);
    Py_CLEAR(st->str_enabled);
    Py_CLEAR(st->ten);
    Py_CLEAR(st->zero);
    Py_CLEAR(st->zero_float);
    Py_CLEAR(st->empty_tuple);
    for (int i = 0; i < SPAWN_NARGS; i++)
        Py_CLEAR(st->spawn_kw[i]);
    Py_CLEAR(st->str_data_attr);
    Py_CLEAR(st->str_engine_data);
    Py_CLEAR(st->str_decl);
    Py_CLEAR(st->str_modes);
    Py_CLEAR(st->str_slots);
}

int pyparla_spawn_init(PyObject *m, pyparla_state *st)
{
    st->spawner_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pyparla_spawner_spec, NULL);
    st->space_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pyparla_space_spec, NULL);
    st->spawn_function_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pyparla_spawn_function_spec, NULL);
    st->table_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pyparla_table_spec, NULL);
    if (st->spawner_type == NULL || st->space_type == NULL || st->spawn_function_type == NULL ||
        st->table_type == NULL || PyModule_AddType(m, st->space_type) < 0 ||
        PyModule_AddType(m, st->spawn_function_type) < 0 || PyModule_AddType(m, st->table_type) < 0)
        return -1;
    if (!(st->str_shape = PyUnicode_InternFromString("shape")) ||
        !(st->str_name_attr = PyUnicode_InternFromString("name")) ||
        !(st->str_getitem = PyUnicode_InternFromString("_getitem")) ||
        !(st->str_enabled = PyUnicode_InternFromString("isEnabledFor")) ||
        !(st->ten = PyLong_FromLong(10)) ||
        !(st->zero = PyLong_FromLong(0)) || !(st->zero_float = PyFloat_FromDouble(0.0)) ||
        !(st->empty_tuple = PyTuple_New(0)))
        return -1;
    static const char *const keywords[SPAWN_NARGS] = {"taskid", "dependencies", "placement", "vcus", "memory",
                                                      "input", "output", "inout", "priority"};
    for (int i = 0; i < SPAWN_NARGS; i++)
        if (!(st->spawn_kw[i] = PyUnicode_InternFromString(keywords[i])))
            return -1;
    if (!(st->str_data_attr = PyUnicode_InternFromString("_data")) ||
        !(st->str_engine_data = PyUnicode_InternFromString("_engine_data")) ||
        !(st->str_decl = PyUnicode_InternFromString("_decl")) ||
        !(st->str_modes = PyUnicode_InternFromString("_modes")) ||
        !(st->str_slots = PyUnicode_InternFromString("_slots")))
        return -1;
    return 0;
}
