/*
 * space.c: parla._core.TaskTable, the mapping of a TaskSpace from keys (tuples) to its tasks, in
 * insertion order. Keys of one integer, T[i], the common case, are stored as 64-bit integers: while the
 * keys are 0, 1, 2, ... in that order (a loop naming T[i]) an entry is its task alone (8 bytes) and its
 * position is its key; after that, each entry has its key beside it (8 more bytes) and a 4-byte slot of
 * a hash index. A dict of 1-tuples spent about 120 bytes a key (the tuple, the int object, the dict's
 * entry and index). Other keys are kept in a dict from the key to its entry's position. Only what
 * parla.tasks.TaskSpace uses of a dict is here: get, setdefault, [key], [key] = value, values(), len,
 * in. Entries are never removed. GIL held throughout (a generic key's hash or comparison may run Python
 * code: no entry pointer is held across one). See pyparla.h.
 */
#include "pyparla.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject **values;    /* strong, in insertion order */
    int64_t *keys;        /* beside values: a compact key's integer, or GENERIC; NULL while dense */
    Py_ssize_t n, cap;    /* entries used, allocated */
    uint32_t *index;      /* open addressing over the compact entries: 0 empty, else position + 1 (NULL
                             while dense) */
    size_t index_cap;     /* a power of two */
    Py_ssize_t n_compact; /* compact entries */
    PyObject *generic;    /* dict: generic key -> position (int), or NULL before the first */
} TableObject;

/* The key of a generic entry (the integer itself is a generic key). */
#define GENERIC INT64_MIN

/* Lookup kinds of a key. */
enum { KEY_COMPACT, KEY_GENERIC, KEY_ERROR };

/* Classifies key: a 1-tuple of an integer within int64 (bool and other int subclasses, NumPy integers
 * and integral floats equal that int as a dict key does) is compact, *k set; anything else is generic. */
static int key_kind(PyObject *key, int64_t *k)
{
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 1)
        return KEY_GENERIC;
    PyObject *item = PyTuple_GET_ITEM(key, 0);
    int overflow = 0;
    long long v;
    if (PyLong_Check(item)) {
        v = PyLong_AsLongLongAndOverflow(item, &overflow);
    } else if (PyFloat_Check(item)) {
        double d = PyFloat_AS_DOUBLE(item);
        if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(long long)d)
            return KEY_GENERIC;
        v = (long long)d;
    } else if (PyUnicode_Check(item) || PyTuple_Check(item) || !PyIndex_Check(item)) {
        return KEY_GENERIC;
    } else {
        PyObject *i = PyNumber_Index(item);
        if (i == NULL)
            return PyErr_Clear(), KEY_GENERIC;
        v = PyLong_AsLongLongAndOverflow(i, &overflow);
        Py_DECREF(i);
    }
    if (v == -1 && PyErr_Occurred())
        return KEY_ERROR;
    if (overflow || v == GENERIC)
        return KEY_GENERIC;
    *k = (int64_t)v;
    return KEY_COMPACT;
}

static size_t slot_of(const TableObject *t, int64_t k)
{
    uint64_t h = (uint64_t)k * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h ^ (h >> 29)) & (t->index_cap - 1);
}

/* The position of compact key k, or -1. */
static Py_ssize_t find_compact(const TableObject *t, int64_t k)
{
    if (t->keys == NULL) /* dense: key i at position i */
        return k >= 0 && k < t->n ? (Py_ssize_t)k : -1;
    for (size_t s = slot_of(t, k);; s = (s + 1) & (t->index_cap - 1)) {
        uint32_t e = t->index[s];
        if (e == 0)
            return -1;
        if (t->keys[e - 1] == k)
            return (Py_ssize_t)e - 1;
    }
}

static void index_put(TableObject *t, Py_ssize_t pos)
{
    size_t s = slot_of(t, t->keys[pos]);
    while (t->index[s])
        s = (s + 1) & (t->index_cap - 1);
    t->index[s] = (uint32_t)(pos + 1);
}

/* Makes room in the index for one more compact key: it stays at most 3/4 full (rebuilt larger when it
 * would not). Not dense. 0 or -1 with MemoryError. */
static int index_reserve(TableObject *t)
{
    if ((size_t)(t->n_compact + 1) * 4 <= t->index_cap * 3)
        return 0;
    size_t cap = t->index_cap ? 2 * t->index_cap : 8;
    while ((size_t)(t->n_compact + 1) * 4 > cap * 3)
        cap *= 2;
    uint32_t *index = PyMem_Calloc(cap, sizeof *index);
    if (index == NULL)
        return PyErr_NoMemory(), -1;
    PyMem_Free(t->index);
    t->index = index;
    t->index_cap = cap;
    for (Py_ssize_t i = 0; i < t->n; i++)
        if (t->keys[i] != GENERIC)
            index_put(t, i);
    return 0;
}

/* Ends the dense layout: every entry gets its key, and the index is built. 0 or -1 with MemoryError. */
static int undense(TableObject *t)
{
    if (t->keys)
        return 0;
    int64_t *keys = PyMem_Malloc((size_t)(t->cap ? t->cap : 1) * sizeof *keys);
    if (keys == NULL)
        return PyErr_NoMemory(), -1;
    for (Py_ssize_t i = 0; i < t->n; i++)
        keys[i] = i;
    t->keys = keys;
    if (index_reserve(t) < 0) {
        t->keys = NULL;
        PyMem_Free(keys);
        return -1;
    }
    return 0;
}

/* Appends an entry (value taken here, key k: compact or GENERIC); its position, or -1 with
 * MemoryError. Dense tables take only k == n. */
static Py_ssize_t append(TableObject *t, PyObject *value, int64_t k)
{
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap + t->cap / 2 : 8;
        if ((size_t)cap >= UINT32_MAX)
            return PyErr_NoMemory(), -1;
        PyObject **values = PyMem_Realloc(t->values, (size_t)cap * sizeof *values);
        if (values == NULL)
            return PyErr_NoMemory(), -1;
        t->values = values;
        if (t->keys) {
            int64_t *keys = PyMem_Realloc(t->keys, (size_t)cap * sizeof *keys);
            if (keys == NULL)
                return PyErr_NoMemory(), -1; /* values grew: harmless */
            t->keys = keys;
        }
        t->cap = cap;
    }
    t->values[t->n] = Py_NewRef(value);
    if (t->keys)
        t->keys[t->n] = k;
    return t->n++;
}

/* ---------------------------------------------------------------------------- the C interface -- */

PyObject *pyparla_table_get_int(PyObject *table, int64_t k)
{
    TableObject *t = (TableObject *)table;
    Py_ssize_t pos = find_compact(t, k);
    return pos < 0 ? NULL : t->values[pos];
}

PyObject *pyparla_table_setdefault_int(PyObject *table, int64_t k, PyObject *value)
{
    TableObject *t = (TableObject *)table;
    Py_ssize_t pos = find_compact(t, k);
    if (pos >= 0)
        return t->values[pos];
    if (t->keys == NULL && k != t->n && undense(t) < 0)
        return NULL;
    if (t->keys && index_reserve(t) < 0)
        return NULL;
    if ((pos = append(t, value, k)) < 0)
        return NULL;
    if (t->keys)
        index_put(t, pos);
    t->n_compact++;
    return value;
}

/* The position of key, or -1 (with an exception when the lookup raised). */
static Py_ssize_t find(TableObject *t, PyObject *key)
{
    int64_t k;
    switch (key_kind(key, &k)) {
    case KEY_COMPACT:
        return find_compact(t, k);
    case KEY_ERROR:
        return -1;
    default:
        break;
    }
    if (t->generic == NULL) {
        (void)PyObject_Hash(key); /* an unhashable key raises TypeError, as with a dict */
        return -1;
    }
    PyObject *pos = PyDict_GetItemWithError(t->generic, key);
    return pos ? PyLong_AsSsize_t(pos) : -1;
}

/* Makes value the entry's at pos; returns it (borrowed). */
static PyObject *replace_value(TableObject *t, Py_ssize_t pos, PyObject *value)
{
    PyObject *old = t->values[pos];
    t->values[pos] = Py_NewRef(value);
    Py_DECREF(old); /* last: may run finalizers (value is held by the table meanwhile) */
    return value;
}

/* setdefault(key, value) and key = value (replace: the value of an existing key is replaced). Returns
 * the key's value (borrowed), or NULL with an exception. */
static PyObject *insert(TableObject *t, PyObject *key, PyObject *value, int replace)
{
    int64_t k;
    int kind = key_kind(key, &k);
    if (kind == KEY_ERROR)
        return NULL;
    if (kind == KEY_COMPACT) {
        Py_ssize_t pos = find_compact(t, k);
        if (pos < 0)
            return pyparla_table_setdefault_int((PyObject *)t, k, value);
        return replace ? replace_value(t, pos, value) : t->values[pos];
    }
    if (t->generic == NULL && (t->generic = PyDict_New()) == NULL)
        return NULL;
    PyObject *found = PyDict_GetItemWithError(t->generic, key);
    if (found) {
        Py_ssize_t pos = PyLong_AsSsize_t(found);
        return replace ? replace_value(t, pos, value) : t->values[pos];
    }
    if (PyErr_Occurred() || undense(t) < 0)
        return NULL;
    Py_ssize_t pos = append(t, value, GENERIC);
    if (pos < 0)
        return NULL;
    PyObject *p = PyLong_FromSsize_t(pos);
    /* The key's hash and comparisons may run code that indexes this table: the entry is in place first,
     * and taken back (it is the last one: nothing else appends a generic key meanwhile) on failure. */
    if (p == NULL || PyDict_SetItem(t->generic, key, p) < 0) {
        Py_XDECREF(p);
        if (pos == t->n - 1) {
            t->n--;
            Py_DECREF(t->values[pos]);
        }
        return NULL;
    }
    Py_DECREF(p);
    return value;
}

PyObject *pyparla_table_get(PyObject *table, PyObject *key)
{
    Py_ssize_t pos = find((TableObject *)table, key);
    return pos < 0 ? NULL : ((TableObject *)table)->values[pos];
}

PyObject *pyparla_table_setdefault(PyObject *table, PyObject *key, PyObject *value)
{
    return insert((TableObject *)table, key, value, 0);
}

/* ------------------------------------------------------------------------------ Python methods -- */

static PyObject *Table_get(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    Py_ssize_t pos = find(self, args[0]);
    if (pos < 0)
        return PyErr_Occurred() ? NULL : Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return Py_NewRef(self->values[pos]);
}

static PyObject *Table_setdefault(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "setdefault(key, value)");
        return NULL;
    }
    return Py_XNewRef(insert(self, args[0], args[1], 0));
}

static PyObject *Table_values(TableObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(self->n);
    for (Py_ssize_t i = 0; out && i < self->n; i++)
        PyList_SET_ITEM(out, i, Py_NewRef(self->values[i]));
    return out;
}

static PyObject *Table_subscript(TableObject *self, PyObject *key)
{
    Py_ssize_t pos = find(self, key);
    if (pos < 0) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(self->values[pos]);
}

static int Table_ass_subscript(TableObject *self, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "a TaskSpace's table does not remove keys");
        return -1;
    }
    return insert(self, key, value, 1) ? 0 : -1;
}

static int Table_contains(TableObject *self, PyObject *key)
{
    Py_ssize_t pos = find(self, key);
    return pos >= 0 ? 1 : PyErr_Occurred() ? -1 : 0;
}

static Py_ssize_t Table_length(TableObject *self)
{
    return self->n;
}

static int Table_traverse(TableObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    for (Py_ssize_t i = 0; i < self->n; i++)
        Py_VISIT(self->values[i]);
    Py_VISIT(self->generic);
    return 0;
}

/* Breaks cycles: the values become None (entries are never removed, so positions stay valid). */
static int Table_clear(TableObject *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *v = self->values[i];
        if (v != Py_None) {
            self->values[i] = Py_NewRef(Py_None);
            Py_DECREF(v);
        }
    }
    Py_CLEAR(self->generic);
    return 0;
}

static void Table_dealloc(TableObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    for (Py_ssize_t i = 0; i < self->n; i++)
        Py_DECREF(self->values[i]);
    self->n = 0;
    Py_CLEAR(self->generic);
    PyMem_Free(self->values);
    PyMem_Free(self->keys);
    PyMem_Free(self->index);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Table_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Table_get, METH_FASTCALL, "get(key, default=None): the key's task."},
    {"setdefault", (PyCFunction)(void (*)(void))Table_setdefault, METH_FASTCALL,
     "setdefault(key, value): the key's task, recorded as value when the key is new."},
    {"values", (PyCFunction)Table_values, METH_NOARGS, "A new list of the tasks, in the order their keys came."},
    {NULL},
};

static PyType_Slot Table_slots[] = {
    {Py_tp_doc, "TaskTable(): a TaskSpace's tasks by key (tuples), in insertion order; integer keys stored "
                "compactly. Supports get, setdefault, [key], [key] = task, values(), len and in."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Table_dealloc},
    {Py_tp_traverse, Table_traverse},
    {Py_tp_clear, Table_clear},
    {Py_tp_methods, Table_methods},
    {Py_mp_subscript, Table_subscript},
    {Py_mp_ass_subscript, Table_ass_subscript},
    {Py_mp_length, Table_length},
    {Py_sq_contains, Table_contains},
    {0, NULL},
};

PyType_Spec pyparla_table_spec = {
    .name = "parla._core.TaskTable",
    .basicsize = sizeof(TableObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Table_slots,
};
