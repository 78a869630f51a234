/*
 * spawn_decl.c: a spawn's placement, resource needs and data access declarations, read in C for the spawn
 * path (spawn.c): what parla.devices.resolve_placement and parla.array._engine_accesses compute, for their
 * common forms, with no Python code run. Every other form (and every error) is handed to those Python
 * functions, which give the result, or raise the error, the Python spawn gives: the two paths accept and
 * refuse the same spawns with the same messages (tests/python/test_spawn_paths.py). See pyparla.h.
 */
#include "pyparla.h"

#include <string.h>

/* -------------------------------------------------------------------------------- placement -- */

void pyparla_spawn_forget_placement(pyparla_state *st)
{
    Py_CLEAR(st->last_placement);
    Py_CLEAR(st->last_vcus);
    Py_CLEAR(st->last_memory);
    Py_CLEAR(st->last_resolved);
}

/* Whether vcus and memory are values resolve_placement's checks leave as they are (None, a float in
 * (0, 1], an int in [0, 2**64)); then *v and *m are their values (0 for None). */
static int plain_needs(PyObject *vcus, PyObject *memory, double *v, unsigned long long *m)
{
    *v = 0.0;
    *m = 0;
    if (vcus != Py_None) {
        if (!PyFloat_CheckExact(vcus))
            return 0;
        *v = PyFloat_AS_DOUBLE(vcus);
        if (!(*v > 0.0 && *v <= 1.0))
            return 0;
    }
    if (memory != Py_None) {
        if (!PyLong_CheckExact(memory))
            return 0;
        *m = PyLong_AsUnsignedLongLong(memory);
        if (*m == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear(); /* negative or too large: resolve_placement or _submit say so */
            return 0;
        }
    }
    return 1;
}

/* resolve_placement's answer (a tuple (options, vcus, memory)) unpacked into out; 0 or -1. */
static int unpack_resolved(PyObject *resolved, PyObject *out[3])
{
    if (resolved == NULL)
        return -1;
    if (!PyTuple_CheckExact(resolved) || PyTuple_GET_SIZE(resolved) != 3) {
        Py_DECREF(resolved);
        PyErr_SetString(PyExc_TypeError, "resolve_placement must return (options, vcus, memory)");
        return -1;
    }
    for (int i = 0; i < 3; i++)
        out[i] = Py_NewRef(PyTuple_GET_ITEM(resolved, i));
    Py_DECREF(resolved);
    return 0;
}

int pyparla_spawn_placement(pyparla_state *st, TaskObject *task, PyObject *placement, PyObject *vcus,
                            PyObject *memory, PyObject *out[3])
{
    double v;
    unsigned long long m;
    if (plain_needs(vcus, memory, &v, &m)) {
        if (placement == st->last_placement && vcus == st->last_vcus && memory == st->last_memory)
            return unpack_resolved(Py_NewRef(st->last_resolved), out); /* the same objects as the last spawn */
        if (placement == Py_None || placement == st->cpu_arch || placement == st->cpu0) {
            /* A plain CPU task: no options, its needs on the CPU. */
            out[0] = Py_NewRef(Py_None);
            out[1] = Py_NewRef(vcus == Py_None ? st->zero_float : vcus);
            out[2] = Py_NewRef(memory == Py_None ? st->zero : memory);
            return 0;
        }
        /* The context's cache of resolved placements, under resolve_placement's own key. */
        PyObject *cache = Py_XNewRef(st->placement_cache); /* held: a key's __eq__ may run other threads */
        PyObject *first = PyList_Check(placement) ? PyList_AsTuple(placement) : Py_NewRef(placement);
        PyObject *key = first ? PyTuple_Pack(4, first, vcus, memory, PyList_CheckExact(placement) ? Py_True
                                                                                                 : Py_False)
                              : NULL;
        Py_XDECREF(first);
        PyObject *hit = key && cache ? Py_XNewRef(PyDict_GetItemWithError(cache, key)) : NULL;
        Py_XDECREF(key);
        Py_XDECREF(cache);
        if (hit != NULL) {
            /* Remembered by identity for the next spawn: a placement that is not a list cannot change (a
             * list can, in place), so the same objects have the same key in the context's cache. */
            if (!PyList_Check(placement)) {
                Py_XSETREF(st->last_placement, Py_NewRef(placement));
                Py_XSETREF(st->last_vcus, Py_NewRef(vcus));
                Py_XSETREF(st->last_memory, Py_NewRef(memory));
                Py_XSETREF(st->last_resolved, Py_NewRef(hit));
            }
            return unpack_resolved(hit, out);
        }
        PyErr_Clear(); /* not cached, or unhashable (resources given as dicts): resolve_placement decides */
    }
    PyObject *name = PyObject_GetAttr((PyObject *)task, st->str_name_attr);
    if (name == NULL)
        return -1;
    PyObject *args[4] = {placement, vcus, memory, name};
    PyObject *resolved = PyObject_Vectorcall(st->resolve_placement, args, 4, NULL);
    Py_DECREF(name);
    return unpack_resolved(resolved, out);
}

/* ------------------------------------------------------------------------- access declarations -- */

/* One declared array: the PArray (held), its mode and the position among the task's devices. */
typedef struct {
    PyObject *array;
    int mode, slot;
} decl_entry_t;

/* What reading the declarations found: the engine accesses, and each declaration in order. */
typedef struct {
    pyparla_state *st;
    PyObject *out; /* list of (Data, mode) and (Data, mode, slot) */
    decl_entry_t *entries, inline_entries[8];
    Py_ssize_t n, cap;
    int max_slot;
} decl_t;

/* A form the C reading leaves to parla.array._engine_accesses (any other type, a PArray subclass, a slot
 * that is not a small int, nesting too deep): it gives the answer or the error. */
#define DECL_GENERAL 1

/* d[id(obj)] |= bits, key the int id(obj); 0 or -1. */
static int or_into(PyObject *d, PyObject *key, long bits)
{
    PyObject *val = PyLong_FromLong(bits);
    PyObject *old = val ? PyDict_SetDefault(d, key, val) : NULL;
    int r = old ? 0 : -1;
    if (old != NULL && old != val) { /* declared before: the modes (positions) add up */
        long now = PyLong_AsLong(old) | bits;
        Py_SETREF(val, now == -1 && PyErr_Occurred() ? NULL : PyLong_FromLong(now));
        r = val ? PyDict_SetItem(d, key, val) : -1;
    }
    Py_XDECREF(val);
    return r;
}

/* The task's _modes (id(PArray) -> its declared modes) and, when a declaration names a position k > 0, its
 * _slots (id(PArray) -> bit k set for each position declared), from the entries; 0 or -1. */
static int modes_and_slots(decl_t *d, PyObject *modes, PyObject *slots)
{
    for (Py_ssize_t i = 0; i < d->n; i++) {
        PyObject *key = PyLong_FromVoidPtr(d->entries[i].array);
        int r = key ? or_into(modes, key, d->entries[i].mode) : -1;
        if (r == 0 && slots)
            r = or_into(slots, key, 1L << d->entries[i].slot);
        Py_XDECREF(key);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* The engine data of a PArray in the active runtime: its _data when it belongs there, else what its
 * _engine_data() makes. New reference. */
static PyObject *engine_data(pyparla_state *st, PyObject *array)
{
    PyObject *data = PyObject_GetAttr(array, st->str_data_attr);
    if (data == NULL)
        return NULL;
    if (PyObject_TypeCheck(data, st->data_type) && ((DataObject *)data)->runtime == st->context_rt)
        return data;
    Py_DECREF(data);
    return PyObject_CallMethodNoArgs(array, st->str_engine_data);
}

/* Records one declared PArray (exactly a parla.array.PArray) with mode for the task's device slot. */
static int declare_array(decl_t *d, PyObject *array, int mode, int slot)
{
    if (d->n == d->cap) {
        Py_ssize_t cap = d->cap * 2;
        decl_entry_t *more = PyMem_Malloc((size_t)cap * sizeof *more);
        if (more == NULL)
            return PyErr_NoMemory(), -1;
        memcpy(more, d->entries, (size_t)d->n * sizeof *more);
        if (d->entries != d->inline_entries)
            PyMem_Free(d->entries);
        d->entries = more;
        d->cap = cap;
    }
    PyObject *data = engine_data(d->st, array);
    if (data == NULL)
        return -1;
    PyObject *m = PyLong_FromLong(mode), *k = slot ? PyLong_FromLong(slot) : NULL;
    PyObject *access = m && (k || !slot) ? (slot ? PyTuple_Pack(3, data, m, k) : PyTuple_Pack(2, data, m)) : NULL;
    Py_DECREF(data);
    Py_XDECREF(m);
    Py_XDECREF(k);
    if (access == NULL)
        return -1;
    int r = PyList_Append(d->out, access);
    Py_DECREF(access);
    if (r < 0)
        return -1;
    d->entries[d->n++] = (decl_entry_t){Py_NewRef(array), mode, slot};
    if (slot > d->max_slot)
        d->max_slot = slot;
    return 0;
}

/* Reads one item of a declaration: a PArray, (PArray, k), or a list or tuple of items. 0, DECL_GENERAL, or
 * -1 with an exception set. */
static int declare_item(decl_t *d, PyObject *item, int mode, int slot, int depth)
{
    pyparla_state *st = d->st;
    if (Py_TYPE(item) == st->parray_type)
        return declare_array(d, item, mode, slot);
    if (!PyList_CheckExact(item) && !PyTuple_CheckExact(item))
        return DECL_GENERAL;
    if (depth > 32)
        return DECL_GENERAL;
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 && Py_TYPE(PyTuple_GET_ITEM(item, 0)) == st->parray_type &&
        PyLong_CheckExact(PyTuple_GET_ITEM(item, 1))) {
        /* parla-experimental's (array, k): the array on the task's k-th device. */
        long k = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        if (k < 0 || k >= PARLA_MAX_TASK_DEVICES) {
            PyErr_Clear();
            return DECL_GENERAL; /* refused (negative) or beyond any placement: the general reading says so */
        }
        return declare_array(d, PyTuple_GET_ITEM(item, 0), mode, (int)k);
    }
    /* A list or tuple of items (a 2-tuple that is not (PArray, int) is read as two items, as parla.array
     * reads it: (A, B), or (A, True) which then refuses the bool). */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(item); i++) {
        PyObject *x = PySequence_Fast_GET_ITEM(item, i);
        Py_INCREF(x);
        int r = declare_item(d, x, mode, slot, depth + 1);
        Py_DECREF(x);
        if (r != 0)
            return r;
    }
    return 0;
}

/* Whether an input/output/inout argument declares anything (a PArray, or a non-empty list or tuple). */
static int declares(PyObject *x)
{
    if (x == Py_None)
        return 0;
    if (PyList_CheckExact(x) || PyTuple_CheckExact(x))
        return PySequence_Fast_GET_SIZE(x) > 0;
    return 1;
}

/* The fewest devices any placement option gives the task (1 without options); -1 when options are not
 * what resolve_placement returns (then the general reading checks). */
static Py_ssize_t fewest_devices(PyObject *options)
{
    if (options == Py_None)
        return 1;
    if (!PyList_CheckExact(options))
        return -1;
    Py_ssize_t fewest = PyList_GET_SIZE(options) ? PY_SSIZE_T_MAX : 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(options); i++) {
        PyObject *o = PyList_GET_ITEM(options, i);
        if (!PyTuple_CheckExact(o) || PyTuple_GET_SIZE(o) < 1 || !PyTuple_CheckExact(PyTuple_GET_ITEM(o, 0)))
            return -1;
        Py_ssize_t n = PyTuple_GET_SIZE(PyTuple_GET_ITEM(o, 0));
        if (n < fewest)
            fewest = n;
    }
    return fewest;
}

/* Reads input, output and inout (decl[0..2]) into d; 0, DECL_GENERAL, or -1. */
static int declare_all(decl_t *d, PyObject *const *decl)
{
    static const int modes[3] = {PARLA_READ, PARLA_WRITE, PARLA_READWRITE};
    for (int a = 0; a < 3; a++) {
        PyObject *items = decl[a];
        int r;
        if (!PyList_CheckExact(items) && !PyTuple_CheckExact(items)) {
            if (items == Py_None)
                continue;
            r = declare_item(d, items, modes[a], 0, 1); /* one item (a PArray) */
        } else {
            r = 0;
            for (Py_ssize_t i = 0; r == 0 && i < PySequence_Fast_GET_SIZE(items); i++) {
                PyObject *x = PySequence_Fast_GET_ITEM(items, i);
                Py_INCREF(x);
                r = declare_item(d, x, modes[a], 0, 1);
                Py_DECREF(x);
            }
        }
        if (r != 0)
            return r;
    }
    return 0;
}

/* The task's _decl from the entries: (inputs, outputs, inouts), each a tuple of the declared PArrays in
 * order, (PArray, k) for one declared for the task's k-th device (k > 0), as parla.array._engine_accesses
 * writes it. With untrack, the tuples made here are taken off the cycle collector's lists: they hang only
 * from the spawned task's __dict__, the task is pending and held by the engine (so they cannot be garbage),
 * and its finish drops them (pyparla_task_finished): without this each pending task with declarations kept
 * two to four containers in the collector's oldest generation, and a spawn loop paid for full collections
 * of them. New reference, or NULL with an exception set. */
static PyObject *decl_triple(const decl_t *d, int untrack)
{
    Py_ssize_t count[3] = {0, 0, 0}, at[3] = {0, 0, 0};
    for (Py_ssize_t i = 0; i < d->n; i++)
        count[d->entries[i].mode - 1]++; /* PARLA_READ, PARLA_WRITE, PARLA_READWRITE: 1, 2, 3 */
    PyObject *part[3] = {NULL, NULL, NULL}, *triple = NULL;
    for (int m = 0; m < 3; m++)
        if ((part[m] = count[m] ? PyTuple_New(count[m]) : Py_NewRef(d->st->empty_tuple)) == NULL)
            goto done;
    for (Py_ssize_t i = 0; i < d->n; i++) {
        const decl_entry_t *e = &d->entries[i];
        PyObject *item;
        if (e->slot == 0) {
            item = Py_NewRef(e->array);
        } else {
            PyObject *k = PyLong_FromLong(e->slot);
            item = k ? PyTuple_Pack(2, e->array, k) : NULL;
            Py_XDECREF(k);
            if (item == NULL)
                goto done;
            if (untrack)
                PyObject_GC_UnTrack(item);
        }
        PyTuple_SET_ITEM(part[e->mode - 1], at[e->mode - 1]++, item);
    }
    triple = PyTuple_Pack(3, part[0], part[1], part[2]);
    if (triple != NULL && untrack) {
        for (int m = 0; m < 3; m++)
            if (count[m])
                PyObject_GC_UnTrack(part[m]);
        PyObject_GC_UnTrack(triple);
    }
done:
    for (int m = 0; m < 3; m++)
        Py_XDECREF(part[m]);
    return triple;
}

PyObject *pyparla_spawn_accesses(pyparla_state *st, TaskObject *task, PyObject *const *decl, PyObject *options,
                                 PyObject **attrs)
{
    *attrs = NULL;
    if (!declares(decl[0]) && !declares(decl[1]) && !declares(decl[2]))
        return Py_NewRef(st->empty_tuple);
    decl_t d = {.st = st, .out = PyList_New(0), .cap = 8};
    d.entries = d.inline_entries;
    PyObject *out = NULL, *modes = NULL, *slots = NULL, *triple = NULL, *at = PyDict_New();
    int r = d.out && at ? declare_all(&d, decl) : -1;
    if (r == 0 && d.max_slot > 0) {
        Py_ssize_t fewest = fewest_devices(options);
        if (fewest < 0 || d.max_slot >= fewest)
            r = DECL_GENERAL; /* a position beyond the placement's devices: the general reading raises */
    }
    if (r == 0) {
        modes = PyDict_New();
        slots = d.max_slot > 0 ? PyDict_New() : NULL;
        /* A graph's capture reads its templates' _decl after they finish: kept, and tracked. */
        triple = decl_triple(&d, task->runtime == NULL || task->runtime->capture == NULL);
        if (triple == NULL || modes == NULL || (d.max_slot > 0 && slots == NULL) || modes_and_slots(&d, modes, slots) < 0 ||
            (slots && PyDict_SetItem(at, st->str_slots, slots) < 0) || PyDict_SetItem(at, st->str_decl, triple) < 0 ||
            PyDict_SetItem(at, st->str_modes, modes) < 0)
            r = -1;
    }
    if (r == 0) {
        out = Py_NewRef(d.out);
    } else if (r == DECL_GENERAL) {
        PyObject *args[6] = {(PyObject *)task, decl[0], decl[1], decl[2], at, options};
        out = PyObject_Vectorcall(st->engine_accesses, args, 6, NULL);
    }
    for (Py_ssize_t i = 0; i < d.n; i++)
        Py_DECREF(d.entries[i].array);
    if (d.entries != d.inline_entries)
        PyMem_Free(d.entries);
    Py_XDECREF(d.out);
    Py_XDECREF(modes);
    Py_XDECREF(slots);
    Py_XDECREF(triple);
    if (out == NULL)
        Py_CLEAR(at);
    *attrs = at;
    return out;
}
