/*
 * native.c: native task bodies. A task body may be a C function (a ctypes, cffi or Numba function pointer,
 * or one of SciPy's Cython BLAS/LAPACK functions) called with arguments packed at spawn; the worker calls
 * it through libffi without taking the GIL. parla.native builds them; see pyparla.h and
 * python/parla/native.py for the Python side.
 *
 *   parla._core.NativeFunction(address, restype, argtypes, pointees, name, owner)
 *       a C function and its signature (an ffi_cif prepared once), shared by every body that calls it;
 *   parla._core.NativeBody(function, items)
 *       one call: the function and one item per argument, converted and checked here, at spawn.
 *
 * Type codes (one character each): 'b' int8, 'B' uint8, 'h' int16, 'H' uint16, 'i' int32, 'I' uint32,
 * 'l' int64, 'L' uint64, 'o' bool (C's _Bool, one byte), 'f' float, 'd' double, 'p' pointer, and for the
 * return type 'v' void. A Python bool is taken only for 'o' (for a number it is refused: True is not 1). pointees
 * gives, per argument of type 'p', the type it points to ('?' unknown, e.g. void *): a number given for an
 * argument that points to a scalar is passed by reference (a copy held by the body: Fortran's convention).
 *
 * Items: a number, None (a NULL pointer) or a bytes/str of one character (a char passed by reference),
 * converted to the argument's C type; or a tuple (kind, ...) made by parla.native:
 *   (ITEM_ARRAY, data, offset)                         the address of a PArray's copy on the task's device
 *   (ITEM_DESC, data, offset, itemsize, mode, shape, strides)   the address of a pyparla_native_array_t
 *   (ITEM_STATUS,)                                     the address of an int32, 0 before the call; nonzero
 *                                                      after it fails the task (LAPACK's info)
 *   (ITEM_STREAM,)                                     the task's CUDA stream on its first device (or NULL)
 *
 * Threads. A NativeBody is immutable once made: the worker copies its values to its own stack, fills in
 * the device addresses (parla_data_device_ptr, valid while the task runs) and calls the function, so one
 * body may be spawned as several tasks that run at once. The GIL is taken only when the call fails, to
 * attach the exception to the task.
 */
#include "pyparla.h"

#include <ffi.h>
#include <string.h>
#include <structmember.h>

#define NATIVE_MAX_ARGS 32
#define NATIVE_MAX_DIMS 8

enum { ITEM_VALUE = 0, ITEM_REF = 1, ITEM_ARRAY = 2, ITEM_DESC = 3, ITEM_STATUS = 4, ITEM_STREAM = 5 };

/* What a PArray described by an ITEM_DESC argument looks like to the function (python/parla/native.py
 * mirrors it as ArrayDesc). shape in elements, strides in bytes; mode 1 input, 2 output, 3 inout. */
typedef struct {
    void *data;
    int64_t ndim;
    int64_t itemsize;
    int64_t device;
    int64_t mode;
    int64_t shape[NATIVE_MAX_DIMS];
    int64_t strides[NATIVE_MAX_DIMS];
} pyparla_native_array_t;

typedef union {
    int8_t i8;
    uint8_t u8;
    int16_t i16;
    uint16_t u16;
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    void *p;
} native_value_t;

typedef struct {
    PyObject_HEAD
    void (*address)(void);
    ffi_cif cif;
    ffi_type *args[NATIVE_MAX_ARGS];
    int nargs;
    char restype;
    char argtypes[NATIVE_MAX_ARGS + 1];
    char pointees[NATIVE_MAX_ARGS + 1];
    PyObject *name;  /* str */
    PyObject *owner; /* what keeps the function's code loaded (a ctypes object, a capsule, ...) */
} NativeFunctionObject;

typedef struct {
    unsigned char kind;
    char code;              /* ITEM_VALUE/ITEM_REF: the value's type */
    native_value_t value;   /* ITEM_VALUE/ITEM_REF */
    parla_data_t *data;     /* ITEM_ARRAY/ITEM_DESC: borrowed from a Data in NativeBody.keep */
    int64_t offset;         /* bytes from the start of the base object */
    pyparla_native_array_t *desc; /* ITEM_DESC: the shape part (PyMem) */
} native_item_t;

typedef struct {
    PyObject_VAR_HEAD
    NativeFunctionObject *fn;
    PyObject *keep;      /* the Data objects the items point into (a tuple) */
    int device_pointers; /* the function takes device pointers: it may run on a CUDA GPU */
    native_item_t items[1];
} NativeBodyObject;

/* ------------------------------------------------------------------------------- types -- */

static ffi_type *ffi_of(char code)
{
    switch (code) {
    case 'b': return &ffi_type_sint8;
    case 'B': return &ffi_type_uint8;
    case 'o': return &ffi_type_uint8;
    case 'h': return &ffi_type_sint16;
    case 'H': return &ffi_type_uint16;
    case 'i': return &ffi_type_sint32;
    case 'I': return &ffi_type_uint32;
    case 'l': return &ffi_type_sint64;
    case 'L': return &ffi_type_uint64;
    case 'f': return &ffi_type_float;
    case 'd': return &ffi_type_double;
    case 'p': return &ffi_type_pointer;
    case 'v': return &ffi_type_void;
    default: return NULL;
    }
}

static const char *c_name(char code)
{
    switch (code) {
    case 'b': return "int8";
    case 'B': return "uint8";
    case 'o': return "bool";
    case 'h': return "int16";
    case 'H': return "uint16";
    case 'i': return "int32";
    case 'I': return "uint32";
    case 'l': return "int64";
    case 'L': return "uint64";
    case 'f': return "float";
    case 'd': return "double";
    case 'p': return "pointer";
    default: return "void";
    }
}

static int is_integer_code(char code)
{
    return strchr("bBhHiIlLo", code) != NULL && code != '\0';
}

/* ----------------------------------------------------------------------- NativeFunction -- */

static PyObject *NativeFunction_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"address", "restype", "argtypes", "pointees", "name", "owner", NULL};
    PyObject *addr_obj, *name, *owner;
    const char *restype, *argtypes, *pointees;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsssUO", kwlist, &addr_obj, &restype, &argtypes, &pointees, &name,
                                     &owner))
        return NULL;
    void *address = PyLong_AsVoidPtr(addr_obj);
    if (address == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "native function %U: its address is NULL", name);
        return NULL;
    }
    size_t n = strlen(argtypes);
    if (n > NATIVE_MAX_ARGS) {
        PyErr_Format(PyExc_ValueError, "native function %U takes %zu arguments; at most %d are supported", name, n,
                     NATIVE_MAX_ARGS);
        return NULL;
    }
    if (strlen(pointees) != n || strlen(restype) != 1 || ffi_of(restype[0]) == NULL) {
        PyErr_Format(PyExc_ValueError, "native function %U: bad signature codes (%s, %s, %s)", name, restype,
                     argtypes, pointees);
        return NULL;
    }
    NativeFunctionObject *self = (NativeFunctionObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        self->args[i] = argtypes[i] == 'v' ? NULL : ffi_of(argtypes[i]);
        if (self->args[i] == NULL) {
            PyErr_Format(PyExc_ValueError, "native function %U: argument %zu has the unknown type code %c", name, i,
                         argtypes[i]);
            Py_DECREF(self);
            return NULL;
        }
    }
    self->address = (void (*)(void))address;
    self->nargs = (int)n;
    self->restype = restype[0];
    memcpy(self->argtypes, argtypes, n + 1);
    memcpy(self->pointees, pointees, n + 1);
    self->name = Py_NewRef(name);
    self->owner = Py_NewRef(owner);
    if (ffi_prep_cif(&self->cif, FFI_DEFAULT_ABI, (unsigned)n, ffi_of(self->restype), self->args) != FFI_OK) {
        PyErr_Format(PyExc_ValueError, "native function %U: libffi cannot call this signature", name);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int NativeFunction_traverse(NativeFunctionObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    return 0;
}

static int NativeFunction_clear(NativeFunctionObject *self)
{
    Py_CLEAR(self->owner);
    return 0;
}

static void NativeFunction_dealloc(NativeFunctionObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    NativeFunction_clear(self);
    Py_CLEAR(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *NativeFunction_repr(NativeFunctionObject *self)
{
    return PyUnicode_FromFormat("<native function %U at %p (%s) -> %s>", self->name, (void *)self->address,
                                self->argtypes, c_name(self->restype));
}

static PyObject *NativeFunction_get_name(NativeFunctionObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->name);
}

static PyObject *NativeFunction_get_address(NativeFunctionObject *self, void *c)
{
    (void)c;
    return PyLong_FromVoidPtr((void *)self->address);
}

static PyObject *NativeFunction_get_argtypes(NativeFunctionObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(self->argtypes);
}

static PyObject *NativeFunction_get_pointees(NativeFunctionObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(self->pointees);
}

static PyObject *NativeFunction_get_restype(NativeFunctionObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromStringAndSize(&self->restype, 1);
}

static PyGetSetDef NativeFunction_getset[] = {
    {"name", (getter)NativeFunction_get_name, NULL, "the function's name, for messages", NULL},
    {"address", (getter)NativeFunction_get_address, NULL, "the function's address", NULL},
    {"argtypes", (getter)NativeFunction_get_argtypes, NULL, "one type code per argument", NULL},
    {"pointees", (getter)NativeFunction_get_pointees, NULL, "per pointer argument, what it points to ('?': unknown)", NULL},
    {"restype", (getter)NativeFunction_get_restype, NULL, "the return type's code ('v': void)", NULL},
    {NULL},
};

static PyType_Slot NativeFunction_slots[] = {
    {Py_tp_doc, "A C function and its signature, called by native task bodies (made by parla.native)."},
    {Py_tp_new, NativeFunction_new},
    {Py_tp_dealloc, NativeFunction_dealloc},
    {Py_tp_traverse, NativeFunction_traverse},
    {Py_tp_clear, NativeFunction_clear},
    {Py_tp_repr, NativeFunction_repr},
    {Py_tp_getset, NativeFunction_getset},
    {0, NULL},
};

PyType_Spec pyparla_native_function_spec = {
    .name = "parla._core.NativeFunction",
    .basicsize = sizeof(NativeFunctionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = NativeFunction_slots,
};

/* --------------------------------------------------------------------------- NativeBody -- */

/* Converts a Python number to code's C type in *out; -1 with an exception naming argument i on failure. */
static int convert_number(NativeFunctionObject *fn, int i, char code, PyObject *obj, native_value_t *out)
{
    if (code == 'o') { /* a C bool: True, False, or an integer 0 or 1 */
        if (PyBool_Check(obj)) {
            out->u8 = obj == Py_True;
            return 0;
        }
        if (PyFloat_Check(obj))
            goto bad;
        PyObject *index = PyNumber_Index(obj);
        if (index == NULL)
            goto bad;
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
        Py_DECREF(index);
        if (v == -1 && PyErr_Occurred())
            goto bad;
        if (overflow || v < 0 || v > 1)
            goto range;
        out->u8 = (uint8_t)v;
        return 0;
    }
    if (PyBool_Check(obj)) {
        /* True is an int to Python, but a bool given for a number is a mistake far more often than a 1. */
        PyErr_Format(PyExc_TypeError, "argument %d of native body %U: %R is a bool, and its C type is %s%s (give "
                     "an int or a float; bools are taken only for C bool parameters)", i, fn->name, obj,
                     c_name(code), fn->argtypes[i] == 'p' && code != 'p' ? " *" : "");
        return -1;
    }
    if (code == 'f' || code == 'd') {
        double v = PyFloat_AsDouble(obj);
        if (v == -1.0 && PyErr_Occurred())
            goto bad;
        if (code == 'f')
            out->f = (float)v;
        else
            out->d = v;
        return 0;
    }
    if (!is_integer_code(code) && code != 'p')
        goto bad;
    if (PyFloat_Check(obj))
        goto bad; /* no silent truncation of 2.5 to 2 */
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL)
        goto bad;
    int overflow = 0;
    if (code == 'L' || code == 'p') {
        unsigned long long v = PyLong_AsUnsignedLongLong(index);
        Py_DECREF(index);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            goto range;
        if (code == 'p')
            out->p = (void *)(uintptr_t)v;
        else
            out->u64 = v;
        return 0;
    }
    long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred())
        goto bad;
    switch (code) {
    case 'b': overflow |= v < INT8_MIN || v > INT8_MAX; out->i8 = (int8_t)v; break;
    case 'B': overflow |= v < 0 || v > UINT8_MAX; out->u8 = (uint8_t)v; break;
    case 'h': overflow |= v < INT16_MIN || v > INT16_MAX; out->i16 = (int16_t)v; break;
    case 'H': overflow |= v < 0 || v > UINT16_MAX; out->u16 = (uint16_t)v; break;
    case 'i': overflow |= v < INT32_MIN || v > INT32_MAX; out->i32 = (int32_t)v; break;
    case 'I': overflow |= v < 0 || v > UINT32_MAX; out->u32 = (uint32_t)v; break;
    default: out->i64 = v; break;
    }
    if (overflow)
        goto range;
    return 0;
range:
    PyErr_Clear();
    PyErr_Format(PyExc_OverflowError, "argument %d of native body %U: %R does not fit its C type %s", i, fn->name,
                 obj, c_name(code));
    return -1;
bad:
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "argument %d of native body %U: its C type is %s%s, not a %.100s", i, fn->name,
                 c_name(code), fn->argtypes[i] == 'p' && code != 'p' ? " *" : "", Py_TYPE(obj)->tp_name);
    return -1;
}

/* Fills item from a plain value (not a tuple made by parla.native). */
static int convert_plain(NativeFunctionObject *fn, int i, PyObject *obj, native_item_t *item)
{
    char type = fn->argtypes[i], pointee = fn->pointees[i];
    if (type == 'p') {
        if (obj == Py_None) {
            item->kind = ITEM_VALUE;
            item->code = 'p';
            item->value.p = NULL;
            return 0;
        }
        if ((PyBytes_Check(obj) && PyBytes_GET_SIZE(obj) == 1) ||
            (PyUnicode_Check(obj) && PyUnicode_GET_LENGTH(obj) == 1 && PyUnicode_READ_CHAR(obj, 0) < 128)) {
            if (pointee != 'b' && pointee != 'B' && pointee != '?') {
                PyErr_Format(PyExc_TypeError, "argument %d of native body %U: a character for a %s * argument", i,
                             fn->name, c_name(pointee));
                return -1;
            }
            item->kind = ITEM_REF;
            item->code = 'b';
            item->value.i8 = (int8_t)(PyBytes_Check(obj) ? PyBytes_AS_STRING(obj)[0] : (char)PyUnicode_READ_CHAR(obj, 0));
            return 0;
        }
        if (pointee != '?') {
            /* A number for a pointer to a scalar: by reference. */
            item->kind = ITEM_REF;
            item->code = pointee;
            return convert_number(fn, i, pointee, obj, &item->value);
        }
        if (PyBool_Check(obj)) {
            PyErr_Format(PyExc_TypeError, "argument %d of native body %U: a bool for a pointer", i, fn->name);
            return -1;
        }
        item->kind = ITEM_VALUE;
        item->code = 'p';
        return convert_number(fn, i, 'p', obj, &item->value);
    }
    item->kind = ITEM_VALUE;
    item->code = type;
    return convert_number(fn, i, type, obj, &item->value);
}

static int tuple_int64(PyObject *t, int64_t *out, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++) {
        long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(t, k));
        if (v == -1 && PyErr_Occurred())
            return -1;
        out[k] = v;
    }
    return 0;
}

/* Fills item from a (kind, ...) tuple made by parla.native; Data objects it references go to keep. */
static int convert_tuple(pyparla_state *st, NativeFunctionObject *fn, int i, PyObject *t, native_item_t *item,
                         PyObject *keep)
{
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    long kind = n > 0 ? PyLong_AsLong(PyTuple_GET_ITEM(t, 0)) : -1;
    if (kind == -1 && PyErr_Occurred())
        return -1;
    if (kind != ITEM_REF && fn->argtypes[i] != 'p') {
        PyErr_Format(PyExc_TypeError, "argument %d of native body %U: its C type is %s, not a pointer", i, fn->name,
                     c_name(fn->argtypes[i]));
        return -1;
    }
    item->kind = (unsigned char)kind;
    switch (kind) {
    case ITEM_REF: { /* (ITEM_REF, code, value) */
        const char *code = n == 3 && PyUnicode_Check(PyTuple_GET_ITEM(t, 1)) ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 1)) : NULL;
        if (code == NULL || strlen(code) != 1 || ffi_of(code[0]) == NULL || code[0] == 'v' || fn->argtypes[i] != 'p')
            break;
        item->code = code[0];
        return convert_number(fn, i, code[0], PyTuple_GET_ITEM(t, 2), &item->value);
    }
    case ITEM_ARRAY:
    case ITEM_DESC: {
        if ((kind == ITEM_ARRAY && n != 3) || (kind == ITEM_DESC && n != 7) ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(t, 1), st->data_type))
            break;
        DataObject *d = (DataObject *)PyTuple_GET_ITEM(t, 1);
        if (d->data == NULL)
            break;
        item->data = d->data;
        item->offset = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 2));
        if (item->offset == -1 && PyErr_Occurred())
            return -1;
        if (PyList_Append(keep, (PyObject *)d) < 0)
            return -1;
        if (kind == ITEM_ARRAY)
            return 0;
        PyObject *shape = PyTuple_GET_ITEM(t, 5), *strides = PyTuple_GET_ITEM(t, 6);
        if (!PyTuple_Check(shape) || !PyTuple_Check(strides) || PyTuple_GET_SIZE(shape) != PyTuple_GET_SIZE(strides))
            break;
        Py_ssize_t ndim = PyTuple_GET_SIZE(shape);
        if (ndim > NATIVE_MAX_DIMS) {
            PyErr_Format(PyExc_ValueError, "argument %d of native body %U: %zd dimensions; at most %d are supported", i,
                         fn->name, ndim, NATIVE_MAX_DIMS);
            return -1;
        }
        item->desc = PyMem_Calloc(1, sizeof *item->desc);
        if (item->desc == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        item->desc->ndim = ndim;
        item->desc->itemsize = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 3));
        item->desc->mode = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 4));
        if (PyErr_Occurred() || tuple_int64(shape, item->desc->shape, ndim) < 0 ||
            tuple_int64(strides, item->desc->strides, ndim) < 0)
            return -1;
        return 0;
    }
    case ITEM_STATUS:
        if (fn->pointees[i] != '?' && fn->pointees[i] != 'i' && fn->pointees[i] != 'I')
            break;
        return n == 1 ? 0 : -2;
    case ITEM_STREAM:
        return n == 1 ? 0 : -2;
    default:
        break;
    }
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "argument %d of native body %U: %R is not an argument parla.native made for a "
                     "%s%s argument", i, fn->name, t, c_name(fn->argtypes[i] == 'p' ? fn->pointees[i] : fn->argtypes[i]),
                     fn->argtypes[i] == 'p' ? " *" : "");
    return -1;
}

static void NativeBody_free_items(NativeBodyObject *self)
{
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        PyMem_Free(self->items[i].desc);
        self->items[i].desc = NULL;
    }
}

/* A new NativeBody of fn with n items, zeroed, not tracked by the GC (its keep not set yet). */
static NativeBodyObject *body_alloc(PyTypeObject *type, NativeFunctionObject *fn, Py_ssize_t n, int device_pointers)
{
    NativeBodyObject *self = PyObject_GC_NewVar(NativeBodyObject, type, n ? n : 1);
    if (self == NULL)
        return NULL;
    Py_SET_SIZE(self, n);
    memset(self->items, 0, (size_t)(n ? n : 1) * sizeof self->items[0]);
    self->fn = (NativeFunctionObject *)Py_NewRef((PyObject *)fn);
    self->keep = NULL;
    self->device_pointers = device_pointers;
    return self;
}

/* Frees a body body_alloc made that never became a full object. */
static void body_discard(NativeBodyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    NativeBody_free_items(self);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->keep);
    PyObject_GC_Del(self);
    Py_DECREF(type);
}

static PyObject *NativeBody_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"function", "items", "device_pointers", NULL};
    PyObject *fn_obj, *items;
    int device_pointers = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!|p", kwlist, &fn_obj, &PyTuple_Type, &items, &device_pointers))
        return NULL;
    pyparla_state *st = pyparla_get_state_by_type(type);
    if (st == NULL)
        return NULL;
    if (!PyObject_TypeCheck(fn_obj, st->native_function_type)) {
        PyErr_SetString(PyExc_TypeError, "NativeBody(function, items): function must be a parla._core.NativeFunction");
        return NULL;
    }
    NativeFunctionObject *fn = (NativeFunctionObject *)fn_obj;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    if (n != fn->nargs) {
        PyErr_Format(PyExc_TypeError, "native body %U takes %d arguments, %zd given", fn->name, fn->nargs, n);
        return NULL;
    }
    NativeBodyObject *self = body_alloc(type, fn, n, device_pointers);
    if (self == NULL)
        return NULL;
    PyObject *keep = PyList_New(0);
    if (keep == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        int rc = PyTuple_Check(item) ? convert_tuple(st, fn, (int)i, item, &self->items[i], keep)
                                     : convert_plain(fn, (int)i, item, &self->items[i]);
        if (rc == -2) {
            PyErr_Format(PyExc_TypeError, "argument %zd of native body %U: malformed %R", i, fn->name, item);
            rc = -1;
        }
        if (rc < 0)
            goto fail;
    }
    self->keep = PyList_AsTuple(keep);
    Py_DECREF(keep);
    if (self->keep == NULL)
        goto fail_nokeep;
    PyObject_GC_Track(self);
    return (PyObject *)self;
fail:
    Py_XDECREF(keep);
fail_nokeep:
    body_discard(self);
    return NULL;
}

static PyObject *NativeBody_call(NativeBodyObject *self, PyObject *args, PyObject *kwds);

static int NativeBody_traverse(NativeBodyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->fn);
    Py_VISIT(self->keep);
    return 0;
}

static int NativeBody_clear(NativeBodyObject *self)
{
    /* The items borrow from keep: they are never used once a body is being cleared (a task keeps its body
     * until it has run). */
    Py_CLEAR(self->keep);
    Py_CLEAR(self->fn);
    return 0;
}

static void NativeBody_dealloc(NativeBodyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    NativeBody_free_items(self);
    NativeBody_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *NativeBody_repr(NativeBodyObject *self)
{
    return PyUnicode_FromFormat("<native body %U (%zd arguments)>", self->fn ? self->fn->name : Py_None, Py_SIZE(self));
}

static PyObject *NativeBody_get_function(NativeBodyObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->fn ? (PyObject *)self->fn : Py_None);
}

static PyGetSetDef NativeBody_getset[] = {
    {"function", (getter)NativeBody_get_function, NULL, "the NativeFunction it calls", NULL},
    {NULL},
};

static PyType_Slot NativeBody_slots[] = {
    {Py_tp_doc, "A native task body: a C function and its packed arguments (made by parla.native.call)."},
    {Py_tp_new, NativeBody_new},
    {Py_tp_call, NativeBody_call},
    {Py_tp_dealloc, NativeBody_dealloc},
    {Py_tp_traverse, NativeBody_traverse},
    {Py_tp_clear, NativeBody_clear},
    {Py_tp_repr, NativeBody_repr},
    {Py_tp_getset, NativeBody_getset},
    {0, NULL},
};

PyType_Spec pyparla_native_body_spec = {
    .name = "parla._core.NativeBody",
    .basicsize = offsetof(NativeBodyObject, items),
    .itemsize = sizeof(native_item_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = NativeBody_slots,
};

int pyparla_is_native_body(pyparla_state *st, PyObject *obj)
{
    return Py_TYPE(obj) == st->native_body_type;
}

/* ------------------------------------------------------------------------------ the call -- */

/* Why a call failed, filled without the GIL and turned into the task's exception with it. */
typedef struct {
    int what; /* 1: nonzero return, 2: nonzero status, 3: no copy on the device, 4: CUDA device */
    int arg;
    long long value;
    int device;
} native_failure_t;

/* The failure as a new NativeError naming the task (GIL held); NULL with an exception set if it cannot be made. */
static PyObject *failure_exception(pyparla_state *st, const char *task, NativeBodyObject *b, const native_failure_t *f)
{
    PyObject *msg = NULL;
    switch (f->what) {
    case 1:
        msg = PyUnicode_FromFormat("task %s: native body %U returned %lld (nonzero: failure)", task, b->fn->name,
                                   f->value);
        break;
    case 2:
        msg = PyUnicode_FromFormat("task %s: native body %U set its status argument (argument %d) to %lld "
                                   "(nonzero: failure)", task, b->fn->name, f->arg, f->value);
        break;
    case 3:
        msg = PyUnicode_FromFormat("task %s: native body %U: argument %d has no copy on device %d (the PArray was "
                                   "not made valid there)", task, b->fn->name, f->arg, f->device);
        break;
    default:
        msg = PyUnicode_FromFormat("task %s: native body %U takes host pointers, and the task was mapped to the CUDA "
                                   "device %d (give device_pointers=True to parla.native.call for a function that "
                                   "takes device pointers, or place the task on cpu)", task, b->fn->name, f->device);
        break;
    }
    PyObject *exc = msg ? PyObject_CallOneArg(st->native_error, msg) : NULL;
    Py_XDECREF(msg);
    if (exc) {
        PyObject *code = PyLong_FromLongLong(f->value);
        if (code == NULL || PyObject_SetAttrString(exc, "code", code) < 0)
            Py_CLEAR(exc);
        Py_XDECREF(code);
    }
    return exc;
}

/* On a worker, after the call failed: takes the GIL and makes the failure the task's exception
 * (parla.native.NativeError), listed in the runtime's failed list like a body's exception. */
static void record_failure(TaskObject *obj, NativeBodyObject *b, const native_failure_t *f)
{
    pyparla_worker_take_gil();
    PyObject *exc = failure_exception(pyparla_get_state(obj->runtime->module), pyparla_task_name(obj), b, f);
    if (exc == NULL)
        exc = pyparla_take_exception();
    pyparla_task_set_exception(obj, exc);
    Py_CLEAR(obj->func);
    pyparla_add_failed(obj->runtime, obj);
}

/* Whether the task's device is a CUDA GPU (whose copies a function taking host pointers cannot use). */
static int on_cuda(RuntimeObject *rt, int device)
{
    parla_device_info_t info;
    return device != 0 && rt != NULL && rt->rt != NULL && parla_device_info(rt->rt, device, &info) == 0 &&
           info.is_cuda;
}

/* Calls b's function for task (NULL: outside tasks, on the CPU copies) of runtime rt. Needs no GIL and
 * touches no Python object's reference count. 0, or 1 with *fail filled. */
static int native_call(NativeBodyObject *b, parla_task_t *task, RuntimeObject *rt, native_failure_t *fail)
{
    NativeFunctionObject *fn = b->fn;
    int n = (int)Py_SIZE(b);
    int device = 0;
    if (task == NULL || parla_task_devices(task, &device, 1) < 1)
        device = 0;
    *fail = (native_failure_t){0, 0, 0, device};
    if (!b->device_pointers && on_cuda(rt, device)) {
        fail->what = 4;
        return 1;
    }
    /* Everything the call reads lives on this thread's stack (about 6 KiB at most). */
    native_value_t vals[NATIVE_MAX_ARGS], refs[NATIVE_MAX_ARGS];
    void *avalues[NATIVE_MAX_ARGS];
    pyparla_native_array_t descs[NATIVE_MAX_ARGS];
    int32_t status = 0;
    int status_arg = -1;
    for (int i = 0; i < n; i++) {
        const native_item_t *it = &b->items[i];
        switch (it->kind) {
        case ITEM_VALUE:
            vals[i] = it->value;
            break;
        case ITEM_REF:
            refs[i] = it->value;
            vals[i].p = &refs[i];
            break;
        case ITEM_ARRAY:
        case ITEM_DESC: {
            char *base = parla_data_device_ptr(it->data, device);
            if (base == NULL) {
                fail->what = 3;
                fail->arg = i;
                return 1;
            }
            if (it->kind == ITEM_ARRAY) {
                vals[i].p = base + it->offset;
            } else {
                descs[i] = *it->desc;
                descs[i].data = base + it->offset;
                descs[i].device = device;
                vals[i].p = &descs[i];
            }
            break;
        }
        case ITEM_STATUS:
            vals[i].p = &status;
            status_arg = i;
            break;
        default: /* ITEM_STREAM */
            vals[i].p = task ? parla_task_stream(task, 0) : NULL;
            break;
        }
        avalues[i] = &vals[i];
    }
    union {
        ffi_arg i;
        double d;
        float f;
        void *p;
    } ret = {0};
    ffi_call(&fn->cif, fn->address, &ret, avalues);
    if (is_integer_code(fn->restype)) {
        /* libffi widens an integer return to ffi_arg; narrow it back with its own signedness. */
        long long v;
        switch (fn->restype) {
        case 'b': v = (int8_t)ret.i; break;
        case 'B': v = (uint8_t)ret.i; break;
        case 'h': v = (int16_t)ret.i; break;
        case 'H': v = (uint16_t)ret.i; break;
        case 'i': v = (int32_t)ret.i; break;
        case 'I': v = (uint32_t)ret.i; break;
        default: v = (long long)ret.i; break;
        }
        if (v != 0) {
            fail->what = 1;
            fail->value = v;
            return 1;
        }
    }
    if (status_arg >= 0 && status != 0) {
        fail->what = 2;
        fail->arg = status_arg;
        fail->value = status;
        return 1;
    }
    return 0;
}

int pyparla_native_body(parla_task_t *task, void *arg)
{
    TaskObject *obj = arg;
    /* A worker keeps the GIL across consecutive Python bodies: let it go before a native one. */
    pyparla_worker_release_gil();
    NativeBodyObject *b = (NativeBodyObject *)obj->func;
    native_failure_t fail;
    if (native_call(b, task, obj->runtime, &fail) == 0)
        return 0;
    record_failure(obj, b, &fail);
    return 1;
}

int pyparla_native_replay(PyObject *body, parla_task_t *task, RuntimeObject *rt)
{
    pyparla_worker_release_gil();
    NativeBodyObject *b = (NativeBodyObject *)body;
    native_failure_t fail;
    if (native_call(b, task, rt, &fail) == 0)
        return 0;
    pyparla_worker_take_gil();
    PyObject *exc = failure_exception(pyparla_get_state(rt->module), parla_task_name(task), b, &fail);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return 1;
}

/* body(): the call made now on the calling thread, with the GIL released during it: inside a task body (a
 * replayed graph's, or a Python body calling it) on the running task's device, outside tasks on the CPU
 * copies. Raises NativeError as the task would fail. */
static PyObject *NativeBody_call(NativeBodyObject *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a native body takes no arguments (they were given to parla.native.call)");
        return NULL;
    }
    pyparla_state *st = pyparla_get_state_by_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    parla_task_t *task = parla_task_current();
    TaskObject *obj = task ? parla_task_user(task) : NULL;
    native_failure_t fail;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = native_call(self, task, obj ? obj->runtime : NULL, &fail);
    Py_END_ALLOW_THREADS
    if (rc == 0)
        Py_RETURN_NONE;
    PyObject *exc = failure_exception(st, task ? parla_task_name(task) : "(none)", self, &fail);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ----------------------------------------------------------------------------- NativeCall -- */

/* A native call not yet bound to a task: parla.native.Call (a subclass defined in Python, which adds the
 * general binding, _bind) made by parla.native.call and parla.kernels. Immutable. */
typedef struct {
    PyObject_HEAD
    PyObject *function;  /* a NativeFunction (checked when bound) */
    PyObject *args;      /* the arguments (a tuple) */
    PyObject *slots;     /* None, or the positions of the arguments that are PArrays or markers (a tuple) */
    int device_pointers; /* the function takes device pointers */
} NativeCallObject;

static PyObject *NativeCall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"function", "args", "device_pointers", "slots", NULL};
    PyObject *function, *call_args, *slots = Py_None;
    int device_pointers = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!|pO:Call", kwlist, &function, &PyTuple_Type, &call_args,
                                     &device_pointers, &slots))
        return NULL;
    NativeCallObject *self = (NativeCallObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->function = Py_NewRef(function);
    self->args = Py_NewRef(call_args);
    self->slots = Py_NewRef(slots);
    self->device_pointers = device_pointers;
    return (PyObject *)self;
}

static int NativeCall_traverse(NativeCallObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->function);
    Py_VISIT(self->args);
    Py_VISIT(self->slots);
    return 0;
}

static int NativeCall_clear(NativeCallObject *self)
{
    Py_CLEAR(self->function);
    Py_CLEAR(self->args);
    Py_CLEAR(self->slots);
    return 0;
}

static void NativeCall_dealloc(NativeCallObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    NativeCall_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef NativeCall_members[] = {
    {"function", T_OBJECT, offsetof(NativeCallObject, function), READONLY, "the NativeFunction called"},
    {"args", T_OBJECT, offsetof(NativeCallObject, args), READONLY, "its arguments (a tuple)"},
    {"slots", T_OBJECT, offsetof(NativeCallObject, slots), READONLY,
     "None, or the positions of the arguments that are PArrays or markers"},
    {"device_pointers", T_BOOL, offsetof(NativeCallObject, device_pointers), READONLY,
     "whether the function takes device pointers"},
    {NULL},
};

static PyType_Slot NativeCall_slots[] = {
    {Py_tp_doc, "NativeCall(function, args, device_pointers=False, slots=None): a native call, bound to its task at "
                "spawn (the base of parla.native.Call)."},
    {Py_tp_new, NativeCall_new},
    {Py_tp_dealloc, NativeCall_dealloc},
    {Py_tp_traverse, NativeCall_traverse},
    {Py_tp_clear, NativeCall_clear},
    {Py_tp_members, NativeCall_members},
    {0, NULL},
};

static PyType_Spec native_call_spec = {
    .name = "parla._core.NativeCall",
    .basicsize = sizeof(NativeCallObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = NativeCall_slots,
};

int pyparla_is_native_call(pyparla_state *st, PyObject *obj)
{
    return st->native_call_type != NULL && Py_TYPE(obj) == st->native_call_type; /* as parla.tasks tests it */
}

/* The engine data of a declared base PArray x (borrowed from x), or NULL (no exception) when x is not one the
 * C binding takes as it is: a view, no engine data, not declared by the task (modes), or a dtype that is not
 * the one the parameter points to (pointee; '?': any). */
static DataObject *declared_base(pyparla_state *st, PyObject *x, PyObject *modes, char pointee)
{
    PyObject *root = PyObject_GetAttr(x, st->str_root);
    if (root == NULL)
        return NULL;
    Py_DECREF(root); /* a slot of x: it stays alive */
    if (root != Py_None || modes == NULL)
        return NULL;
    PyObject *data = PyObject_GetAttr(x, st->str_data_attr);
    if (data == NULL)
        return NULL;
    Py_DECREF(data); /* held by x */
    if (!PyObject_TypeCheck(data, st->data_type) || ((DataObject *)data)->data == NULL)
        return NULL;
    PyObject *key = PyLong_FromVoidPtr(x);
    PyObject *mode = key ? PyDict_GetItemWithError(modes, key) : NULL;
    Py_XDECREF(key);
    if (mode == NULL || !PyLong_CheckExact(mode) || PyLong_AsLong(mode) <= 0)
        return NULL;
    if (pointee != '?') {
        PyObject *expected = st->native_dtypes[(unsigned char)pointee & 127];
        PyObject *np = expected ? PyObject_GetAttr(x, st->str_np) : NULL;
        PyObject *dtype = np ? PyObject_GetAttr(np, st->str_dtype) : NULL;
        Py_XDECREF(np);
        Py_XDECREF(dtype);
        if (dtype == NULL || dtype != expected) /* equal dtypes that are other objects: Python compares them */
            return NULL;
    }
    return (DataObject *)data;
}

/* The NativeBody of call for the task, made in C, or NULL (an exception may be set) for Python to make. */
static PyObject *bind_in_c(pyparla_state *st, NativeCallObject *call, PyObject *attrs)
{
    if (Py_TYPE(call->function) != st->native_function_type || !PyTuple_CheckExact(call->args) ||
        st->native_status == NULL)
        return NULL;
    NativeFunctionObject *fn = (NativeFunctionObject *)call->function;
    Py_ssize_t n = PyTuple_GET_SIZE(call->args);
    if (n != fn->nargs)
        return NULL; /* the error is NativeBody's, with the task's name */
    /* The positions _bind looks at for PArrays and markers: slots, or every argument. */
    uint64_t special = n ? ~0ull >> (64 - n) : 0;
    if (call->slots != Py_None) {
        if (!PyTuple_CheckExact(call->slots))
            return NULL;
        special = 0;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(call->slots); k++) {
            PyObject *p = PyTuple_GET_ITEM(call->slots, k);
            long i = PyLong_CheckExact(p) ? PyLong_AsLong(p) : -1;
            if (i < 0 || i >= n)
                return NULL;
            special |= 1ull << i;
        }
    }
    PyObject *modes = attrs ? PyDict_GetItemWithError(attrs, st->str_modes) : NULL;
    if (modes != NULL && !PyDict_CheckExact(modes))
        return NULL;
    NativeBodyObject *self = body_alloc(st->native_body_type, fn, n, call->device_pointers);
    if (self == NULL)
        return NULL;
    PyObject *keep[NATIVE_MAX_ARGS];
    Py_ssize_t nkeep = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyTuple_GET_ITEM(call->args, i);
        native_item_t *item = &self->items[i];
        int ok, slot = special >> i & 1;
        if (slot && Py_TYPE(x) == st->parray_type) {
            DataObject *d = fn->argtypes[i] == 'p' ? declared_base(st, x, modes, fn->pointees[i]) : NULL;
            ok = d != NULL;
            if (ok) {
                item->kind = ITEM_ARRAY;
                item->data = d->data;
                item->offset = 0;
                keep[nkeep++] = (PyObject *)d;
            }
        } else if (slot && x == st->native_status) {
            ok = fn->argtypes[i] == 'p' && strchr("?iI", fn->pointees[i]) != NULL;
            item->kind = ITEM_STATUS;
        } else if (slot && x == st->native_stream) {
            ok = fn->argtypes[i] == 'p';
            item->kind = ITEM_STREAM;
        } else {
            /* What _bind leaves as it is: a number, a character, None. A tuple (native.ref's), and everything
             * convert_plain refuses (native.array(A), a view, a NumPy array...), are bound or refused in Python. */
            ok = !PyTuple_Check(x) && convert_plain(fn, (int)i, x, item) == 0;
        }
        if (!ok) {
            body_discard(self);
            return NULL;
        }
    }
    self->keep = PyTuple_New(nkeep);
    if (self->keep == NULL) {
        body_discard(self);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < nkeep; k++)
        PyTuple_SET_ITEM(self->keep, k, Py_NewRef(keep[k]));
    /* Neither the body nor its keep (Data objects) is tracked by the cycle collector: they reference no
     * object that could lead back to them (the function, Data objects), and the task lets its body go when it
     * finishes; a program spawning thousands of tasks ahead would otherwise have the collector walk them. */
    PyObject_GC_UnTrack(self->keep);
    return (PyObject *)self;
}

PyObject *pyparla_native_bind(pyparla_state *st, TaskObject *task, PyObject *call, PyObject *attrs)
{
    PyObject *body = bind_in_c(st, (NativeCallObject *)call, attrs);
    if (body != NULL)
        return body;
    /* Any other form, or an error: the general binding, whose result or error it is. */
    PyErr_Clear();
    PyObject *empty = attrs ? NULL : PyDict_New();
    PyObject *a = attrs ? attrs : empty;
    body = a ? PyObject_CallMethodObjArgs(call, st->str_bind, (PyObject *)task, a, NULL) : NULL;
    Py_XDECREF(empty);
    return body;
}

/* ------------------------------------------------------------------------- tile kernels' calls -- */

/* (rows, columns, leading dimension) of x when it is exactly a parla.array.PArray holding a 2-D float64
 * array (NumPy's own float64 dtype object) whose rows are contiguous (C order): what parla.kernels._tile accepts. 1, or 0 (no exception set)
 * for anything else, which parla.kernels then reads (and refuses) in Python. */
static int tile_layout(pyparla_state *st, PyObject *x, Py_ssize_t out[3])
{
    if (st->parray_type == NULL || Py_TYPE(x) != st->parray_type || st->native_dtypes['d'] == NULL)
        return 0;
    /* The array's attributes (NumPy's buffer export costs three times as much). */
    PyObject *np = PyObject_GetAttr(x, st->str_np);
    PyObject *dtype = np ? PyObject_GetAttr(np, st->str_dtype) : NULL;
    PyObject *shape = dtype == st->native_dtypes['d'] ? PyObject_GetAttr(np, st->str_shape) : NULL;
    PyObject *strides = shape ? PyObject_GetAttr(np, st->str_strides) : NULL;
    int ok = strides && PyTuple_CheckExact(shape) && PyTuple_GET_SIZE(shape) == 2 && PyTuple_CheckExact(strides) &&
             PyTuple_GET_SIZE(strides) == 2;
    Py_ssize_t v[4] = {0, 0, 0, 0};
    for (int k = 0; ok && k < 4; k++) {
        PyObject *item = PyTuple_GET_ITEM(k < 2 ? shape : strides, k % 2);
        v[k] = PyLong_CheckExact(item) ? PyLong_AsSsize_t(item) : -1;
        ok = !(v[k] == -1 && (k < 2 || PyErr_Occurred()));
    }
    Py_XDECREF(np);
    Py_XDECREF(dtype);
    Py_XDECREF(shape);
    Py_XDECREF(strides);
    PyErr_Clear();
    if (!ok)
        return 0;
    Py_ssize_t r = v[0], c = v[1], s0 = v[2], s1 = v[3];
    out[0] = r, out[1] = c, out[2] = s0 / 8;
    return (s1 == 8 || c <= 1) && s0 % 8 == 0 && s0 >= 8 * (c > 1 ? c : 1);
}

/* A parla.native.Call of fn with args (stolen) and slots (borrowed), made without its Python constructor.
 * NULL with an exception set. */
static PyObject *new_call(pyparla_state *st, PyObject *fn, PyObject *args, PyObject *slots)
{
    if (args == NULL)
        return NULL;
    NativeCallObject *call = (NativeCallObject *)st->native_call_type->tp_alloc(st->native_call_type, 0);
    if (call == NULL) {
        Py_DECREF(args);
        return NULL;
    }
    call->function = Py_NewRef(fn);
    call->args = args;
    call->slots = Py_NewRef(slots);
    call->device_pointers = 0;
    return (PyObject *)call;
}

enum { TILE_POTRF, TILE_TRSM, TILE_SYRK, TILE_GEMM, TILE_KERNELS };

/* _tile_call(kernel, function, *tiles): the parla.native.Call parla.kernels makes for kernel (0 potrf(a),
 * 1 trsm(l, b), 2 syrk(a, c), 3 gemm(a, b, c)) with function (its SciPy NativeFunction), when every tile is a
 * float64 PArray in C order and the shapes match; None for anything else (parla.kernels then makes it, or
 * raises, in Python). */
static PyObject *mod_tile_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pyparla_state *st = pyparla_get_state(module);
    static const Py_ssize_t ntiles[TILE_KERNELS] = {1, 2, 2, 3};
    long kernel = nargs >= 2 && PyLong_CheckExact(args[0]) ? PyLong_AsLong(args[0]) : -1;
    if (kernel < 0 || kernel >= TILE_KERNELS || nargs != 2 + ntiles[kernel]) {
        PyErr_SetString(PyExc_TypeError, "_tile_call(kernel, function, *tiles)");
        return NULL;
    }
    PyObject *fn = args[1];
    if (Py_TYPE(fn) != st->native_function_type || st->native_call_type == NULL || st->native_status == NULL ||
        st->kernel_slots[kernel] == NULL)
        Py_RETURN_NONE;
    Py_ssize_t t[3][3];
    for (Py_ssize_t i = 0; i < ntiles[kernel]; i++)
        if (!tile_layout(st, args[2 + i], t[i]))
            Py_RETURN_NONE;
    PyObject *const *x = args + 2;
    PyObject *const *flag = st->kernel_flags; /* "U", "L", "T", "N" */
    /* The arguments: objects (borrowed), and sizes (I(v): made here), in the order of the routine's. */
    PyObject *item[13];
    Py_ssize_t size[13];
    int n = 0;
#define O(obj) (item[n] = (obj), size[n++] = -1)
#define I(v) (item[n] = NULL, size[n++] = (v))
    switch (kernel) {
    case TILE_POTRF: /* dpotrf("U", n, a, lda, info): the row-major lower triangle is the column-major upper */
        if (t[0][0] != t[0][1])
            Py_RETURN_NONE;
        O(flag[0]), I(t[0][0]), O(x[0]), I(t[0][2]), O(st->native_status);
        break;
    case TILE_TRSM: /* dtrsm("L", "U", "T", "N", m, k, 1.0, l, ldl, b, ldb) */
        if (t[0][0] != t[0][1] || t[1][1] != t[0][0])
            Py_RETURN_NONE;
        O(flag[1]), O(flag[0]), O(flag[2]), O(flag[3]), I(t[0][0]), I(t[1][0]), O(st->kernel_one), O(x[0]),
            I(t[0][2]), O(x[1]), I(t[1][2]);
        break;
    case TILE_SYRK: /* dsyrk("U", "T", n, k, -1.0, a, lda, 1.0, c, ldc) */
        if (t[1][0] != t[0][0] || t[1][1] != t[0][0])
            Py_RETURN_NONE;
        O(flag[0]), O(flag[2]), I(t[0][0]), I(t[0][1]), O(st->kernel_minus_one), O(x[0]), I(t[0][2]),
            O(st->kernel_one), O(x[1]), I(t[1][2]);
        break;
    default: /* dgemm("T", "N", n, m, k, -1.0, b, ldb, a, lda, 1.0, c, ldc) */
        if (t[1][1] != t[0][1] || t[2][0] != t[0][0] || t[2][1] != t[1][0])
            Py_RETURN_NONE;
        O(flag[2]), O(flag[3]), I(t[1][0]), I(t[0][0]), I(t[0][1]), O(st->kernel_minus_one), O(x[1]), I(t[1][2]),
            O(x[0]), I(t[0][2]), O(st->kernel_one), O(x[2]), I(t[2][2]);
        break;
    }
#undef O
#undef I
    PyObject *built = PyTuple_New(n);
    for (int k = 0; built && k < n; k++) {
        PyObject *v = item[k] ? Py_NewRef(item[k]) : PyLong_FromSsize_t(size[k]);
        if (v == NULL)
            Py_CLEAR(built);
        else
            PyTuple_SET_ITEM(built, k, v);
    }
    return new_call(st, fn, built, st->kernel_slots[kernel]);
}

/* _native_setup(status, stream, dtypes): parla.native's markers, and the dict of pointee code -> NumPy dtype. */
static PyObject *mod_native_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pyparla_state *st = pyparla_get_state(module);
    if (nargs != 3 || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "_native_setup(status, stream, dtypes: dict)");
        return NULL;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(args[2], &pos, &key, &value)) {
        if (!PyUnicode_Check(key) || PyUnicode_GET_LENGTH(key) != 1 || PyUnicode_READ_CHAR(key, 0) >= 128) {
            PyErr_SetString(PyExc_TypeError, "_native_setup: dtypes' keys are type codes (one character)");
            return NULL;
        }
        Py_XSETREF(st->native_dtypes[PyUnicode_READ_CHAR(key, 0)], Py_NewRef(value));
    }
    Py_XSETREF(st->native_status, Py_NewRef(args[0]));
    Py_XSETREF(st->native_stream, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef native_methods[] = {
    {"_tile_call", (PyCFunction)(void (*)(void))mod_tile_call, METH_FASTCALL,
     "_tile_call(kernel, function, *tiles): parla.kernels' call for float64 C-order PArray tiles, or None."},
    {"_native_setup", (PyCFunction)(void (*)(void))mod_native_setup, METH_FASTCALL,
     "_native_setup(status, stream, dtypes): what the spawn path needs from parla.native to bind calls in C."},
    {NULL, NULL, 0, NULL},
};

int pyparla_native_traverse(pyparla_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->native_call_base);
    Py_VISIT(st->native_status);
    Py_VISIT(st->native_stream);
    for (int i = 0; i < 128; i++)
        Py_VISIT(st->native_dtypes[i]);
    for (int i = 0; i < 4; i++) {
        Py_VISIT(st->kernel_flags[i]);
        Py_VISIT(st->kernel_slots[i]);
    }
    return 0;
}

void pyparla_native_clear(pyparla_state *st)
{
    Py_CLEAR(st->native_call_base);
    Py_CLEAR(st->native_status);
    Py_CLEAR(st->native_stream);
    for (int i = 0; i < 128; i++)
        Py_CLEAR(st->native_dtypes[i]);
    Py_CLEAR(st->str_root);
    Py_CLEAR(st->str_np);
    Py_CLEAR(st->str_dtype);
    Py_CLEAR(st->str_bind);
    Py_CLEAR(st->str_strides);
    Py_CLEAR(st->kernel_one);
    Py_CLEAR(st->kernel_minus_one);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(st->kernel_flags[i]);
        Py_CLEAR(st->kernel_slots[i]);
    }
}

/* ------------------------------------------------------------------------------- module -- */

int pyparla_native_init(PyObject *m, pyparla_state *st)
{
    st->native_function_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pyparla_native_function_spec, NULL);
    if (st->native_function_type == NULL || PyModule_AddType(m, st->native_function_type) < 0)
        return -1;
    st->native_body_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pyparla_native_body_spec, NULL);
    if (st->native_body_type == NULL || PyModule_AddType(m, st->native_body_type) < 0)
        return -1;
    st->native_error = PyErr_NewExceptionWithDoc(
        "parla._core.NativeError",
        "A native task body failed: it returned nonzero, or set its status argument to nonzero. Attributes: code "
        "(the value).",
        PyExc_RuntimeError, NULL);
    if (st->native_error == NULL || PyModule_AddObjectRef(m, "NativeError", st->native_error) < 0)
        return -1;
    st->native_call_base = (PyTypeObject *)PyType_FromModuleAndSpec(m, &native_call_spec, NULL);
    if (st->native_call_base == NULL || PyModule_AddType(m, st->native_call_base) < 0 ||
        PyModule_AddFunctions(m, native_methods) < 0)
        return -1;
    if (!(st->str_root = PyUnicode_InternFromString("_root")) || !(st->str_np = PyUnicode_InternFromString("_np")) ||
        !(st->str_dtype = PyUnicode_InternFromString("dtype")) || !(st->str_bind = PyUnicode_InternFromString("_bind")))
        return -1;
    if (!(st->str_strides = PyUnicode_InternFromString("strides")) || !(st->kernel_one = PyFloat_FromDouble(1.0)) ||
        !(st->kernel_minus_one = PyFloat_FromDouble(-1.0)))
        return -1;
    static const char *const flags[4] = {"U", "L", "T", "N"};
    for (int i = 0; i < 4; i++)
        if (!(st->kernel_flags[i] = PyUnicode_InternFromString(flags[i])))
            return -1;
    if (!(st->kernel_slots[TILE_POTRF] = Py_BuildValue("(ii)", 2, 4)) ||
        !(st->kernel_slots[TILE_TRSM] = Py_BuildValue("(ii)", 7, 9)) ||
        !(st->kernel_slots[TILE_SYRK] = Py_BuildValue("(ii)", 5, 8)) ||
        !(st->kernel_slots[TILE_GEMM] = Py_BuildValue("(iii)", 6, 8, 11)))
        return -1;
    if (PyModule_AddIntConstant(m, "NATIVE_REF", ITEM_REF) < 0 || PyModule_AddIntConstant(m, "NATIVE_ARRAY", ITEM_ARRAY) < 0 ||
        PyModule_AddIntConstant(m, "NATIVE_DESC", ITEM_DESC) < 0 ||
        PyModule_AddIntConstant(m, "NATIVE_STATUS", ITEM_STATUS) < 0 ||
        PyModule_AddIntConstant(m, "NATIVE_STREAM", ITEM_STREAM) < 0 ||
        PyModule_AddIntConstant(m, "NATIVE_MAX_ARGS", NATIVE_MAX_ARGS) < 0 ||
        PyModule_AddIntConstant(m, "NATIVE_MAX_DIMS", NATIVE_MAX_DIMS) < 0)
        return -1;
    return 0;
}
