/*
 * task_obj.c: parla._core.Task, one engine task: creation with a name, the spawn (_submit), waits,
 * state and result getters. parla.tasks.Task subclasses it. See pyparla.h.
 */
#include "pyparla.h"

#include <structmember.h>

#include <string.h>

/* Gives self (not initialised) a new engine task of rt named name (UTF-8, len bytes; name_obj the same as
 * str, or NULL: made only when the engine's copy cannot hold the name, and then the caller has checked
 * that the name has no NUL inside). */
static int task_setup(TaskObject *self, RuntimeObject *rt, const char *utf8, Py_ssize_t len, PyObject *name_obj)
{
    parla_task_t *t;
    int rc = parla_task_create(rt->rt, NULL, NULL, &t);
    if (rc)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL), -1;
    if ((rc = parla_task_set_name(t, utf8)) != 0) {
        parla_task_release(t);
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL), -1;
    }
    parla_task_set_user(t, self);
    self->task = t;
    Py_INCREF(rt);
    self->runtime = rt;
    /* The engine's copy is the name, unless it cannot hold all of it (over 255 bytes, or a NUL inside). */
    if (len > 255 || (name_obj != NULL && strlen(utf8) != (size_t)len)) {
        self->name = name_obj ? Py_NewRef(name_obj) : PyUnicode_FromStringAndSize(utf8, len);
        if (self->name == NULL)
            return -1;
    }
    return 0;
}

TaskObject *pyparla_task_new(PyTypeObject *tp, RuntimeObject *rt, const char *name, Py_ssize_t len,
                             PyObject *name_obj)
{
    if (pyparla_check_open(rt) < 0)
        return NULL;
    TaskObject *self = (TaskObject *)tp->tp_alloc(tp, 0);
    if (self == NULL)
        return NULL;
    if (task_setup(self, rt, name, len, name_obj) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

static int Task_init(TaskObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runtime", "name", NULL};
    PyObject *rt_obj, *name;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OU", kwlist, &rt_obj, &name))
        return -1;
    RuntimeObject *rt = pyparla_runtime_arg(Py_TYPE(self), rt_obj, "Task(runtime, name)");
    if (rt == NULL)
        return -1;
    if (self->task) {
        PyErr_SetString(PyExc_RuntimeError, "Task.__init__ called twice");
        return -1;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &len);
    if (utf8 == NULL)
        return -1;
    return task_setup(self, rt, utf8, len, name);
}

/* The anchors of the recorded dependencies. */
static pyparla_anchor_t **dep_anchors(TaskObject *self)
{
    return self->n_deps == 1 ? &self->deps.one : self->deps.many;
}

static void anchor_drop(pyparla_anchor_t *a)
{
    if (--a->refs == 0)
        PyMem_Free(a);
}

/* t's anchor (made on first use; t holds one count of it), or NULL with MemoryError. */
static pyparla_anchor_t *task_anchor(TaskObject *t)
{
    if (t->anchor == NULL) {
        pyparla_anchor_t *a = PyMem_Malloc(sizeof *a);
        if (a == NULL)
            return (pyparla_anchor_t *)PyErr_NoMemory();
        a->refs = 1;
        a->obj = t;
        t->anchor = a;
    }
    return t->anchor;
}

/* Releases the recorded dependencies. */
static void clear_dependencies(TaskObject *self)
{
    pyparla_anchor_t **h = dep_anchors(self);
    for (uint32_t i = 0; i < self->n_deps; i++)
        anchor_drop(h[i]);
    if (self->n_deps > 1)
        PyMem_Free(self->deps.many);
    self->n_deps = 0;
    self->deps.one = NULL;
}

/* Records the n dependency Tasks deps[] as the task's dependencies: their anchors, held. 0, or -1 with
 * MemoryError (nothing recorded). */
static int record_dependencies(TaskObject *self, TaskObject *const *deps, Py_ssize_t n)
{
    if (self->n_deps)
        clear_dependencies(self);
    if (n == 0)
        return 0;
    if (n > (Py_ssize_t)UINT32_MAX)
        return PyErr_NoMemory(), -1;
    for (Py_ssize_t i = 0; i < n; i++) /* first, so that nothing is held on failure */
        if (task_anchor(deps[i]) == NULL)
            return -1;
    pyparla_anchor_t **h = &self->deps.one;
    if (n > 1) {
        if ((h = PyMem_Malloc((size_t)n * sizeof *h)) == NULL)
            return PyErr_NoMemory(), -1;
        self->deps.many = h;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        h[i] = deps[i]->anchor;
        h[i]->refs++;
    }
    self->n_deps = (uint32_t)n;
    return 0;
}

static int Task_traverse(TaskObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->runtime);
    Py_VISIT(self->func);
    Py_VISIT(self->result);
    Py_VISIT(self->dict);
    Py_VISIT(self->keep);
    return 0;
}

void pyparla_task_clear_func(TaskObject *t)
{
    if (t->func_off) {
        t->func_off = 0;
        if (!PyObject_GC_IsTracked(t->func))
            PyObject_GC_Track(t->func);
    }
    Py_CLEAR(t->func);
}

static int Task_clear(TaskObject *self)
{
    Py_CLEAR(self->keep);
    pyparla_task_clear_func(self);
    Py_CLEAR(self->result);
    self->has_exc = 0;
    Py_CLEAR(self->dict);
    return 0;
}

void pyparla_task_set_exception(TaskObject *t, PyObject *exc)
{
    PyObject *old = t->result;
    t->result = exc;
    t->has_exc = exc != NULL;
    Py_XDECREF(old); /* last: may run code */
}

/* -------------------------------------------------------------- finished tasks and the GC -- */

/* Whether obj (a value a finished task holds) can reach no object that could reach the task back: None,
 * an object the cycle collector does not manage (int, float, str, bytes), or an untracked tuple. */
static int is_leaf(PyObject *obj)
{
    return obj == NULL || !PyObject_IS_GC(obj) || (PyTuple_CheckExact(obj) && !PyObject_GC_IsTracked(obj));
}

/* Takes t off its runtime's array of untracked tasks (the last one takes its place; the array shrinks
 * when a quarter of it is used). */
static void unlink_untracked(TaskObject *t)
{
    RuntimeObject *rt = t->runtime;
    Py_ssize_t at = t->untracked_at;
    TaskObject *last = rt->untracked[--rt->n_untracked];
    rt->untracked[at] = last;
    last->untracked_at = at;
    t->untracked_at = 0;
    t->gc_off = 0;
    if (rt->cap_untracked > 1024 && rt->n_untracked < rt->cap_untracked / 4) {
        TaskObject **a = PyMem_Realloc(rt->untracked, (size_t)(rt->cap_untracked / 2) * sizeof *a);
        if (a) {
            rt->untracked = a;
            rt->cap_untracked /= 2;
        }
    }
}

/* Appends t to rt's untracked tasks; 0, or -1 when the array cannot grow (no exception set). */
static int link_untracked(RuntimeObject *rt, TaskObject *t)
{
    if (rt->n_untracked == rt->cap_untracked) {
        Py_ssize_t cap = rt->cap_untracked ? 2 * rt->cap_untracked : 256;
        TaskObject **a = PyMem_Realloc(rt->untracked, (size_t)cap * sizeof *a);
        if (a == NULL)
            return -1;
        rt->untracked = a;
        rt->cap_untracked = cap;
    }
    t->untracked_at = rt->n_untracked;
    rt->untracked[rt->n_untracked++] = t;
    return 0;
}

/* ------------------------------------------------------------------ pending tasks untracked -- */
/* RuntimeObject.pending: a set of task pointers, open addressing with linear probing, at most half full;
 * a removal shifts the entries after it back (no tombstones). */

static size_t pending_slot(const RuntimeObject *rt, const TaskObject *t)
{
    uint64_t h = ((uint64_t)(uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (size_t)(rt->cap_pending - 1);
}

static void pending_put(RuntimeObject *rt, TaskObject *t)
{
    size_t mask = (size_t)rt->cap_pending - 1, i = pending_slot(rt, t);
    while (rt->pending[i])
        i = (i + 1) & mask;
    rt->pending[i] = t;
}

/* Rehashes rt's set into cap slots (a power of two above twice the entries). 0, or -1 (no memory; the set
 * is as it was). */
static int pending_resize(RuntimeObject *rt, Py_ssize_t cap)
{
    TaskObject **old = rt->pending, **a = PyMem_Calloc((size_t)cap, sizeof *a);
    Py_ssize_t old_cap = rt->cap_pending;
    if (a == NULL)
        return -1;
    rt->pending = a;
    rt->cap_pending = cap;
    for (Py_ssize_t i = 0; i < old_cap; i++)
        if (old[i])
            pending_put(rt, old[i]);
    PyMem_Free(old);
    return 0;
}

/* Adds t; 0, or -1 when the set cannot grow (no exception set). */
static int pending_add(RuntimeObject *rt, TaskObject *t)
{
    if (2 * (rt->n_pending + 1) > rt->cap_pending && pending_resize(rt, rt->cap_pending ? 2 * rt->cap_pending : 256) < 0)
        return -1;
    pending_put(rt, t);
    rt->n_pending++;
    return 0;
}

static void pending_remove(RuntimeObject *rt, TaskObject *t)
{
    size_t mask = (size_t)rt->cap_pending - 1, i = pending_slot(rt, t);
    while (rt->pending[i] != t)
        i = (i + 1) & mask;
    /* Backward shift: each later entry of the run moves into the hole unless its own slot lies after the
     * hole (cyclically), where it stays reachable. */
    for (size_t j = (i + 1) & mask; rt->pending[j]; j = (j + 1) & mask) {
        size_t home = pending_slot(rt, rt->pending[j]);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            rt->pending[i] = rt->pending[j];
            i = j;
        }
    }
    rt->pending[i] = NULL;
    rt->n_pending--;
    /* Shrunk only from above 65,536 slots (512 KiB): below that, the bursts of a spawning loop that the
     * workers drain would otherwise grow and shrink it over and over (a rehash each time). */
    if (rt->cap_pending > 65536 && rt->n_pending < rt->cap_pending / 16)
        (void)pending_resize(rt, rt->cap_pending / 4); /* on failure: stays larger */
}

/* Takes self (just submitted, GIL held, not yet seen by a worker) and its body, a plain function, off the
 * cycle collector's lists until it finishes; not while a graph is captured (its record holds the task). */
static void pending_untrack(TaskObject *self, PyObject *body)
{
    RuntimeObject *rt = self->runtime;
    if (rt->capture || !PyObject_GC_IsTracked((PyObject *)self) || pending_add(rt, self) < 0)
        return;
    PyObject_GC_UnTrack(self);
    self->pend_off = 1;
    if (PyFunction_Check(body) && PyObject_GC_IsTracked(body)) {
        PyObject_GC_UnTrack(body);
        self->func_off = 1;
    }
}

/* Puts self back on the collector's lists (track: 1) or leaves it off (0), out of the pending set. */
static void pending_done(TaskObject *self, int track)
{
    pending_remove(self->runtime, self);
    self->pend_off = 0;
    if (track)
        PyObject_GC_Track(self);
}

PyObject *pyparla_pending_list(RuntimeObject *rt)
{
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out && i < rt->cap_pending; i++)
        if (rt->pending[i] && PyList_Append(out, (PyObject *)rt->pending[i]) < 0)
            Py_CLEAR(out);
    return out;
}

/* Tracks t again if pyparla_task_finished untracked it. */
static void gc_on(TaskObject *t)
{
    if (t->gc_off) {
        unlink_untracked(t);
        PyObject_GC_Track(t);
    }
}

/* Drops the declarations a spawn set on the task (_decl, _modes, _slots: what .array reads while the body
 * runs), and its __dict__ when nothing else is in it: called at its finish, so that a finished task keeps
 * no PArray alive and can leave the cycle collector's lists (pyparla_task_finished), and when a spawn is
 * undone. A graph's templates (captured) keep theirs. GIL held. */
static void drop_declarations(TaskObject *self)
{
    if (self->dict == NULL || self->captured || !PyDict_CheckExact(self->dict) || self->runtime == NULL)
        return;
    pyparla_state *st = pyparla_get_state(self->runtime->module);
    PyObject *keys[3] = {st->str_decl, st->str_modes, st->str_slots};
    PyObject *type, *value, *tb; /* a spawn's error may be pending: kept */
    PyErr_Fetch(&type, &value, &tb);
    for (int i = 0; i < 3; i++)
        if (PyDict_GetItemWithError(self->dict, keys[i]) != NULL && PyDict_DelItem(self->dict, keys[i]) < 0)
            PyErr_Clear();
    PyErr_Clear();
    if (PyDict_GET_SIZE(self->dict) == 0)
        Py_CLEAR(self->dict);
    PyErr_Restore(type, value, tb);
}

/* Releases the engine task of obj, finished plain (parla_task_is_plain_done): its state and devices are
 * known from then on, and its name is copied unless obj has its own. Kept when the copy cannot be made,
 * and in a traced runtime (a later dependency on it is an edge of the trace).
 * Others holding the engine task (the engine until its finish is complete, a graph's record) keep it
 * alive; its user pointer no longer names obj. */
static void release_engine_task(TaskObject *obj)
{
    parla_task_t *t = obj->task;
    if (obj->runtime->forked || obj->runtime->traced || obj->captured || obj->has_exc || !parla_task_is_plain_done(t))
        return;
    if (obj->name == NULL) {
        const char *name = parla_task_name(t);
        size_t len = strlen(name);
        char *cname = PyMem_Malloc(len + 1);
        if (cname == NULL)
            return;
        memcpy(cname, name, len + 1);
        obj->cname = cname;
        obj->name_is_c = 1;
    }
    obj->released = 1;
    obj->task = NULL;
    parla_task_set_user(t, NULL);
    parla_task_release(t);
}

/* A done task references its runtime, its name, its result and, once attributes are set on it, its
 * __dict__ (its dependencies are engine handles, no Python references). While its runtime has recorded
 * no failure the runtime reaches no task (only failed ones, and the module); so with a leaf result and no
 * __dict__ nothing the task reaches can reach it back: it cannot be part of a cycle, and tracking it
 * would only make every collection visit it (10^6 named tasks: millions of visits per full collection).
 * Setting an attribute tracks it again (Task_setattro), and so does the runtime's first failure. */
void pyparla_task_finished(TaskObject *obj)
{
    pyparla_task_clear_func(obj); /* a cancelled task's body and closure (a run one cleared them already) */
    drop_declarations(obj);
    RuntimeObject *rt = obj->runtime;
    if (obj->task != NULL && rt != NULL)
        release_engine_task(obj);
    int pend_off = obj->pend_off; /* untracked since its submit */
    if (obj->gc_off || rt == NULL || rt->failures_seen ||
        (obj->task == NULL ? !obj->released : parla_task_state(obj->task) != PARLA_TASK_DONE) ||
        obj->dict != NULL || obj->keep != NULL || obj->has_exc || !is_leaf(obj->result) ||
        !(pend_off || PyObject_GC_IsTracked((PyObject *)obj)) || link_untracked(rt, obj) < 0) {
        if (pend_off)
            pending_done(obj, 1);
        return;
    }
    if (pend_off)
        pending_done(obj, 0);
    else
        PyObject_GC_UnTrack(obj);
    obj->gc_off = 1;
}

void pyparla_task_finished_drop(TaskObject *obj)
{
    if (Py_REFCNT(obj) == 1) { /* only the engine's reference: it goes now (an anonymous task nobody keeps) */
        Py_DECREF(obj);
        return;
    }
    pyparla_task_finished(obj);
    Py_DECREF(obj);
}

void pyparla_add_failed(RuntimeObject *rt, TaskObject *obj)
{
    rt->failures_seen = 1;
    while (rt->n_untracked)
        gc_on(rt->untracked[rt->n_untracked - 1]);
    PyMem_Free(rt->untracked); /* none is untracked any more */
    rt->untracked = NULL;
    rt->cap_untracked = 0;
    if (rt->failed == NULL || PyList_Append(rt->failed, (PyObject *)obj) < 0)
        PyErr_Clear();
}

/* Setting an attribute may make the task reach anything: it is tracked again first. */
static int Task_setattro(TaskObject *self, PyObject *name, PyObject *value)
{
    gc_on(self);
    return PyObject_GenericSetAttr((PyObject *)self, name, value);
}

static PyObject *Task_get_name(TaskObject *self, void *c)
{
    (void)c;
    if (self->name_is_c)
        return PyUnicode_FromString(self->cname);
    if (self->name)
        return Py_NewRef(self->name);
    if (self->task == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(parla_task_name(self->task));
}

/* The dependencies given at spawn whose Task objects are alive, in order. */
static PyObject *Task_get_dependencies(TaskObject *self, void *c)
{
    (void)c;
    PyObject *out = PyList_New(0);
    pyparla_anchor_t **h = dep_anchors(self);
    for (uint32_t i = 0; out && i < self->n_deps; i++) {
        PyObject *dep = (PyObject *)h[i]->obj;
        if (dep && PyList_Append(out, dep) < 0)
            Py_CLEAR(out);
    }
    return out;
}

static void Task_dealloc(TaskObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->gc_off)
        unlink_untracked(self);
    if (self->pend_off) /* never finished (its runtime abandoned, or forked) */
        pending_done(self, 0);
    PyObject_GC_UnTrack(self);
    Task_clear(self);
    clear_dependencies(self);
    if (self->anchor) {
        self->anchor->obj = NULL;
        anchor_drop(self->anchor);
        self->anchor = NULL;
    }
    if (self->task && self->runtime && self->runtime->forked) {
        self->task = NULL; /* the parent's engine: not touched in a forked child */
    } else if (self->task) {
        parla_task_set_user(self->task, NULL);
        parla_task_release(self->task);
        self->task = NULL;
    }
    Py_CLEAR(self->runtime);
    if (self->name_is_c)
        PyMem_Free(self->cname);
    else
        Py_CLEAR(self->name);
    self->name = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------------------------ spawn -- */

/* Reads priority, vcus and memory (args[2..4]) and sets them on the task. The defaults (the spawn path's
 * 0, 0.0 and 0 objects) are the engine's own for a task no spawn set up. */
static int set_settings(TaskObject *self, pyparla_state *st, PyObject *const *args, double *vcus,
                        unsigned long long *memory)
{
    if (args[2] == st->zero && args[3] == st->zero_float && args[4] == st->zero && !self->set_up) {
        *vcus = 0.0;
        *memory = 0;
        return 0;
    }
    self->set_up = 1;
    long priority = PyLong_AsLong(args[2]);
    if (priority == -1 && PyErr_Occurred())
        return -1;
    if (priority < -1000000 || priority > 1000000) {
        PyErr_Format(PyExc_ValueError, "task %s: priority %ld is out of range", pyparla_task_name(self), priority);
        return -1;
    }
    *vcus = PyFloat_AsDouble(args[3]);
    if (*vcus == -1.0 && PyErr_Occurred())
        return -1;
    if (!pyparla_bytes_arg(args[4], memory)) {
        PyErr_Format(PyExc_ValueError, "task %s: memory=%R must be a whole number of bytes in [0, 2**64)",
                     pyparla_task_name(self), args[4]);
        return -1;
    }
    int rc = parla_task_set_priority(self->task, (int)priority);
    if (rc == 0)
        rc = parla_task_set_resources(self->task, *vcus, *memory);
    return rc ? (pyparla_set_error(PYPARLA_AT_CALL, rc, NULL), -1) : 0;
}

static int check_unspawned(TaskObject *self)
{
    if (self->task && parla_task_state(self->task) == PARLA_TASK_CREATED)
        return 0;
    PyErr_Format(PyExc_RuntimeError, "task %s was already spawned; a task id can be spawned only once", pyparla_task_name(self));
    return -1;
}

/* A spawn's dependency Tasks: v[0..n), held (few[] and each reference, or a list's items). */
#define FEW_DEPS 8
typedef struct {
    TaskObject *few[FEW_DEPS];
    PyObject *list; /* a new list holding them, or NULL: few[] holds them */
    TaskObject **v;
    Py_ssize_t n;
} deps_t;

static void deps_release(deps_t *d)
{
    if (d->list)
        Py_CLEAR(d->list);
    else
        for (Py_ssize_t i = 0; i < d->n; i++)
            Py_DECREF(d->few[i]);
    d->n = 0;
}

/* Makes d hold its tasks through a list (a graph's record takes one). 0, or -1 with MemoryError. */
static int deps_as_list(deps_t *d)
{
    if (d->list)
        return 0;
    PyObject *list = PyList_New(d->n);
    if (list == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < d->n; i++)
        PyList_SET_ITEM(list, i, (PyObject *)d->few[i]); /* the references move to the list */
    d->list = list;
    d->v = (TaskObject **)PySequence_Fast_ITEMS(list);
    return 0;
}

/* Collects the dependencies obj names into d, each checked: a list or tuple of at most FEW_DEPS Tasks
 * (or one Task) directly, every other form through a list (pyparla_collect_dependencies), and into a list
 * as well while a graph is captured (its record takes one). 0, or -1 with the exception set. */
static int collect_dependencies(TaskObject *self, pyparla_state *st, PyObject *obj, deps_t *d)
{
    d->list = NULL;
    d->v = d->few;
    d->n = 0;
    PyObject *const *items = &obj;
    Py_ssize_t n = 1;
    if (PyList_CheckExact(obj) || PyTuple_CheckExact(obj)) {
        items = PySequence_Fast_ITEMS(obj);
        n = PySequence_Fast_GET_SIZE(obj);
    }
    int few = n <= FEW_DEPS && !self->runtime->capture;
    for (Py_ssize_t i = 0; few && i < n; i++)
        few = PyObject_TypeCheck(items[i], st->task_type);
    if (few) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (pyparla_check_dependency(self, (TaskObject *)items[i]) < 0) {
                deps_release(d);
                return -1;
            }
            d->few[d->n++] = (TaskObject *)Py_NewRef(items[i]);
        }
        return 0;
    }
    if ((d->list = PyList_New(0)) == NULL || pyparla_collect_dependencies(self, st->task_type, obj, 0, d->list) < 0) {
        Py_CLEAR(d->list);
        return -1;
    }
    d->v = (TaskObject **)PySequence_Fast_ITEMS(d->list);
    d->n = PyList_GET_SIZE(d->list);
    return 0;
}

/* Checks dependencies (args[1]), placement options (args[5]) and accesses (args[6]); collects the
 * dependency Tasks into *deps and sets *accesses to the checked accesses. Adds the placement options to
 * the task (its own setting); changes nothing else. */
static int check_arguments(TaskObject *self, pyparla_state *st, PyObject *const *args, double vcus,
                           unsigned long long memory, deps_t *deps, PyObject **accesses)
{
    if (collect_dependencies(self, st, args[1], deps) < 0)
        return -1;
    /* Iterating the dependencies may have run other threads (one may have spawned this task meanwhile); a
     * list or tuple of a few Tasks read directly ran no code. */
    if (deps->list != NULL) {
        if (self->runtime->rt == NULL || self->runtime->destroying) {
            PyErr_Format(PyExc_RuntimeError, "task %s: its Parla runtime closed while its dependencies were read",
                         pyparla_task_name(self));
            return -1;
        }
        if (check_unspawned(self) < 0)
            return -1;
    }
    *accesses = args[6] == st->empty_tuple ? Py_NewRef(args[6]) : pyparla_check_accesses(self, st->data_type, args[6]);
    if (*accesses == NULL)
        return -1;
    if (args[5] == Py_None && vcus <= 1.0 && memory == 0) /* nothing asked: fits the cpu device */
        return 0;
    if (pyparla_add_options(self, args[5]) < 0 || pyparla_check_feasible(self, args[5], vcus, memory) < 0)
        return -1;
    return 0;
}

/* attrs: None or a dict of attributes set on the task. A __dict__ that then holds nothing the cycle
 * collector tracks (the C spawn path's declarations: untracked tuples, dicts of ints) is untracked too: it
 * hangs from a pending task, which cannot be garbage, and a later attribute tracks it again (CPython's
 * dicts track themselves when given a value that may be tracked). */
static int set_attributes(TaskObject *self, PyObject *attrs)
{
    if (attrs == Py_None)
        return 0;
    if (!PyDict_Check(attrs)) {
        PyErr_SetString(PyExc_TypeError, "_submit: attributes must be a dict");
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &key, &value))
        if (PyObject_GenericSetAttr((PyObject *)self, key, value) < 0)
            return -1;
    if (self->dict == NULL || !PyDict_CheckExact(self->dict) || !PyObject_GC_IsTracked(self->dict))
        return 0;
    pos = 0;
    while (PyDict_Next(self->dict, &pos, &key, &value))
        if (PyObject_GC_IsTracked(value))
            return 0;
    PyObject_GC_UnTrack(self->dict);
    return 0;
}


/* 0, or -1 with ValueError when two of accesses write the same bytes through different device positions
 * (the engine refuses the second; checked here first, so that no access of the spawn is recorded). */
static int check_slot_writes(TaskObject *self, PyObject *accesses)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(accesses);
    PyObject **items = PySequence_Fast_ITEMS(accesses);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_SIZE(items[i]) != 3 || !(PyLong_AsLong(PyTuple_GET_ITEM(items[i], 1)) & PARLA_WRITE))
            continue;
        long si = PyLong_AsLong(PyTuple_GET_ITEM(items[i], 2));
        for (Py_ssize_t j = 0; j < n; j++) {
            long sj = PyTuple_GET_SIZE(items[j]) == 3 ? PyLong_AsLong(PyTuple_GET_ITEM(items[j], 2)) : 0;
            if (sj == si || !(PyLong_AsLong(PyTuple_GET_ITEM(items[j], 1)) & PARLA_WRITE) ||
                !parla_data_overlaps(((DataObject *)PyTuple_GET_ITEM(items[i], 0))->data,
                                     ((DataObject *)PyTuple_GET_ITEM(items[j], 0))->data))
                continue;
            PyErr_Format(PyExc_ValueError, "task %s: the same bytes of a PArray are written (output/inout) through "
                         "its devices at positions %ld and %ld: each position has its own copy, so one "
                         "position's writes would be lost (declare disjoint views, or write at one position)",
                         pyparla_task_name(self), sj < si ? sj : si, sj < si ? si : sj);
            return -1;
        }
    }
    return 0;
}

/* Records the dependency edges and the data accesses in the engine; 0 or an engine code (out of
 * memory: the edges added so far stay). */
static int add_edges(TaskObject *self, const deps_t *deps, PyObject *accesses)
{
    if (record_dependencies(self, deps->v, deps->n) < 0)
        return PARLA_ENOMEM;
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < deps->n; i++) {
        parla_task_t *dep = deps->v[i]->task;
        if (dep) /* NULL: released, done */
            rc = parla_task_add_dependency(self->task, dep);
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(accesses); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(accesses, i);
        DataObject *d = (DataObject *)PyTuple_GET_ITEM(item, 0);
        int slot = PyTuple_GET_SIZE(item) == 3 ? (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 2)) : 0;
        rc = parla_task_add_access_at(self->task, d->data, (parla_access_mode_t)PyLong_AsLong(PyTuple_GET_ITEM(item, 1)),
                                      slot);
    }
    return rc;
}

/* Sets body (stolen) as the task's and submits it to the engine, which holds a reference to the object
 * until the task finishes. */
static PyObject *engine_submit(TaskObject *self, pyparla_state *st, PyObject *body)
{
    pyparla_task_clear_func(self);
    self->func = body;
    int native = pyparla_is_native_body(st, body);
    int rc = parla_task_set_body(self->task, native ? pyparla_native_body : pyparla_task_body, self);
    if (rc)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    Py_INCREF(self); /* the engine's reference, dropped by the task_finished hook */
    self->engine_ref = 1;
    self->submitting = 1;
    pending_untrack(self, body); /* before the engine can finish it (the hook then decides) */
    rc = parla_task_submit(self->task);
    self->submitting = 0;
    if (rc != 0 && rc != PARLA_ERESOURCE && self->pend_off) { /* not submitted: as before */
        pending_done(self, 1);
        if (self->func_off) {
            self->func_off = 0;
            PyObject_GC_Track(body);
        }
    }
    if (rc == 0 && self->task && parla_task_state(self->task) == PARLA_TASK_FAILED && !self->has_exc) {
        /* Failed inside submit (no placement could be mapped): report it at exit. */
        pyparla_record_engine_failure(self->runtime, self, self->task);
    }
    if (rc == 0)
        Py_RETURN_NONE;
    pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    if (rc == PARLA_ERESOURCE) {
        /* Submitted as failed: the hook drops the engine's reference. The exception raised here is the
         * task's, so it is not reported twice. */
        PyObject *exc = pyparla_take_exception();
        pyparla_task_set_exception(self, Py_NewRef(exc));
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    } else {
        drop_declarations(self);
        self->engine_ref = 0;
        Py_DECREF(self);
    }
    return NULL;
}

/* Everything is checked before the first change to the graph, so a spawn that raises leaves no trace: no
 * edge, no access recorded on a PArray, no failed task. Only this task's own settings (priority,
 * resources, placement options) are set before a check can fail; a later spawn of the same task sets
 * them again. attrs are set once nothing can refuse the spawn (no other thread runs from there to the
 * submit: of threads spawning one task at once, exactly one sets them and submits). */
static PyObject *task_submit(TaskObject *self, PyObject *const *args, PyObject *attrs)
{
    if (check_unspawned(self) < 0)
        return NULL;
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "task %s: the body must be callable, not %.100s", pyparla_task_name(self),
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    pyparla_state *st = pyparla_get_state(self->runtime->module);
    double vcus;
    unsigned long long memory = 0;
    if (set_settings(self, st, args, &vcus, &memory) < 0)
        return NULL;
    deps_t deps = {.n = 0, .list = NULL};
    PyObject *accesses = NULL, *body = NULL;
    if (check_arguments(self, st, args, vcus, memory, &deps, &accesses) < 0 || check_slot_writes(self, accesses) < 0)
        goto fail;
    PyObject *fn = args[0]; /* a function without a closure is captured as it is */
    body = PyFunction_Check(fn) && ((PyFunctionObject *)fn)->func_closure == NULL ? Py_NewRef(fn)
                                                                                  : pyparla_capture(st, fn);
    if (body == NULL || set_attributes(self, attrs) < 0 || (self->runtime->capture && deps_as_list(&deps) < 0)) {
        drop_declarations(self);
        goto fail;
    }
    int rc = add_edges(self, &deps, accesses);
    if (rc == 0 && self->runtime->capture) {
        pyparla_capture_record(self, body, deps.list, accesses); /* graph capture (graph_obj.c) */
        self->captured = 1; /* later captured spawns name its engine task */
    }
    deps_release(&deps);
    Py_CLEAR(accesses);
    if (rc) {
        clear_dependencies(self);
        drop_declarations(self);
        Py_DECREF(body);
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    }
    return engine_submit(self, st, body);
fail:
    Py_XDECREF(body);
    deps_release(&deps);
    Py_XDECREF(accesses);
    return NULL;
}

PyObject *pyparla_task_spawn(TaskObject *self, PyObject *const *args, PyObject *attrs)
{
    if (pyparla_check_task(self) < 0)
        return NULL;
    RuntimeObject *rt = self->runtime;
    if (rt->forked)
        return PyErr_SetString(PyExc_RuntimeError, pyparla_forked_message), NULL;
    if (rt->rt == NULL || rt->destroying) {
        PyErr_Format(PyExc_RuntimeError, "task %s: its Parla runtime is closed (the context has exited)",
                     pyparla_task_name(self));
        return NULL;
    }
    if (rt->closing && parla_task_current() == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot spawn task %s: its Parla context is closing (its 'with Parla()' block was left, "
                     "on another thread); only tasks may spawn tasks once the block is left",
                     pyparla_task_name(self));
        return NULL;
    }
    rt->spawning++;
    PyObject *out = task_submit(self, args, attrs);
    rt->spawning--;
    return out;
}

/* _submit(func, dependencies, priority, vcus, memory, options, accesses[, attributes]): spawns the task. */
static PyObject *Task_submit(TaskObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "_submit(func, dependencies, priority, vcus, memory, options, accesses[, attributes])");
        return NULL;
    }
    return pyparla_task_spawn(self, args, nargs == 8 ? args[7] : Py_None);
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
    if (pyparla_check_task(self) < 0)
        return NULL;
    if (self->task == NULL) { /* released: the engine's answer for a done task */
        char msg[320];
        PyOS_snprintf(msg, sizeof msg, "parla_task_cancel: task %s is done, not created", pyparla_task_name(self));
        return pyparla_set_error(PYPARLA_AT_CALL, PARLA_ESTATE, msg);
    }
    int rc = parla_task_cancel(self->task);
    if (rc)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *Task_wait(TaskObject *self, PyObject *unused)
{
    (void)unused;
    if (pyparla_check_task(self) < 0)
        return NULL;
    parla_task_t *t = self->task;
    if (t == NULL) /* released: done */
        return PyLong_FromLong(0);
    parla_task_retain(t); /* the task may release its own once it finishes (GIL let go meanwhile) */
    pyparla_gil_t g = pyparla_gil_release();
    int rc = parla_task_wait(t);
    pyparla_gil_restore(g);
    parla_task_release(t);
    return PyLong_FromLong(rc);
}

static PyObject *Task_drop_result(TaskObject *self, PyObject *unused)
{
    (void)unused;
    self->dropped = 1;
    if (!self->has_exc)
        Py_CLEAR(self->result);
    Py_RETURN_NONE;
}

static PyObject *Task_get_state(TaskObject *self, void *c)
{
    (void)c;
    if (pyparla_check_task(self) < 0)
        return NULL;
    return PyUnicode_FromString(parla_task_state_name(self->task ? parla_task_state(self->task) : PARLA_TASK_DONE));
}

static PyObject *Task_get_done(TaskObject *self, void *c)
{
    (void)c;
    if (pyparla_check_task(self) < 0)
        return NULL;
    return PyBool_FromLong(self->task == NULL || parla_task_state(self->task) >= PARLA_TASK_DONE);
}

static PyObject *Task_get_cause(TaskObject *self, void *c)
{
    (void)c;
    if (pyparla_check_task(self) < 0)
        return NULL;
    parla_task_t *cause = self->task ? parla_task_cause(self->task) : NULL;
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
    return Py_NewRef(self->result && !self->has_exc ? self->result : Py_None);
}

static PyObject *Task_get_exception(TaskObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->has_exc && self->result ? self->result : Py_None);
}

static PyObject *Task_get_runtime(TaskObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->runtime ? (PyObject *)self->runtime : Py_None);
}

static PyObject *Task_get_devices(TaskObject *self, void *c)
{
    (void)c;
    if (pyparla_check_task(self) < 0)
        return NULL;
    int idx[PARLA_MAX_TASK_DEVICES] = {0};
    int n = self->task ? parla_task_devices(self->task, idx, PARLA_MAX_TASK_DEVICES) : 1; /* released: cpu */
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++)
        PyTuple_SET_ITEM(t, i, PyLong_FromLong(idx[i]));
    return t;
}

static PyObject *Task_get_dropped(TaskObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->dropped);
}

static PyObject *Task_get_released(TaskObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->released);
}

static PyObject *Task_get_mapping(TaskObject *self, void *c)
{
    (void)c;
    if (pyparla_check_task(self) < 0)
        return NULL;
    parla_mapping_t m;
    if (self->task == NULL || parla_task_mapping(self->task, &m) != 0)
        Py_RETURN_NONE;
    return Py_BuildValue("{sisdsdsdsd}", "candidates", m.n_candidates, "locality", m.locality, "transfer",
                         m.transfer, "load", m.load, "score", m.score);
}

static PyMethodDef Task_methods[] = {
    {"_submit", (PyCFunction)(void (*)(void))Task_submit, METH_FASTCALL,
     "_submit(func, dependencies, priority, vcus, memory, options, accesses, attributes=None): spawn this task. "
     "func: the body (a callable, captured by value); dependencies: Tasks or nested iterables of them; priority: "
     "int; vcus: float; memory: bytes; options: None or a sequence of (device slots, vcus, memory); accesses: a "
     "sequence of (Data, READ | WRITE | READWRITE[, slot]), slot the position in the task's devices the data is for "
     "(0 when absent); attributes: None or a dict set on the task just before it is "
     "submitted. Raises TypeError/ValueError naming the task for bad arguments (the graph is then unchanged), "
     "RuntimeError if the task was spawned already or the runtime is closed."},
    {"_cancel", (PyCFunction)Task_cancel, METH_NOARGS, "Cancel a task that was never spawned."},
    {"_keep", (PyCFunction)Task_keep, METH_O, "_keep(obj): keep obj alive until the body (or its current segment) returns."},
    {"_wait", (PyCFunction)Task_wait, METH_NOARGS,
     "Block (GIL released) until the task finishes; returns the engine's code."},
    {"_drop_result", (PyCFunction)Task_drop_result, METH_NOARGS,
     "Release the body's return value (not a failed task's exception); _dropped is True from then on."},
    {NULL},
};

static PyGetSetDef Task_getset[] = {
    {"name", (getter)Task_get_name, NULL, "the task's name, e.g. 'T[1, 2]'", NULL},
    {"state", (getter)Task_get_state, NULL, "created, submitted, ready, running, suspended, done, failed or cancelled", NULL},
    {"done", (getter)Task_get_done, NULL, "True once the task is done, failed or cancelled", NULL},
    {"_cause", (getter)Task_get_cause, NULL, "for a cancelled task, the task that caused it", NULL},
    {"_result", (getter)Task_get_result, NULL, "the body's return value", NULL},
    {"_exception", (getter)Task_get_exception, NULL, "the exception the body raised, or None", NULL},
    {"runtime", (getter)Task_get_runtime, NULL, "the runtime the task belongs to", NULL},
    {"_devices", (getter)Task_get_devices, NULL, "engine indices of the devices the task was mapped to (0: cpu)", NULL},
    {"_mapping", (getter)Task_get_mapping, NULL, "mapping scores of the chosen devices, or None", NULL},
    {"_dropped", (getter)Task_get_dropped, NULL, "True once _drop_result() was called", NULL},
    {"_released", (getter)Task_get_released, NULL,
     "True once the task finished as a plain task and its engine task was released (it keeps its name, state "
     "and result)", NULL},
    {"_dependencies", (getter)Task_get_dependencies, NULL,
     "the dependencies given at spawn whose Task objects are alive (a new list; [] before the spawn)", NULL},
    {NULL},
};

static PyMemberDef Task_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(TaskObject, dict), READONLY, NULL},
    {NULL},
};

static PyType_Slot Task_slots[] = {
    {Py_tp_doc, "An engine task (base of parla.tasks.Task)."},
    {Py_tp_init, Task_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Task_dealloc},
    {Py_tp_setattro, Task_setattro},
    {Py_tp_traverse, Task_traverse},
    {Py_tp_clear, Task_clear},
    {Py_tp_methods, Task_methods},
    {Py_tp_getset, Task_getset},
    {Py_tp_members, Task_members},
    {0, NULL},
};

PyType_Spec pyparla_task_spec = {
    .name = "parla._core.Task",
    .basicsize = sizeof(TaskObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Task_slots,
};

