/*
 * graph_obj.c: parla._core.Graph, a recorded graph of Python tasks (parla_graph_t) and its replay; the
 * body every replayed Python task runs; the Task object a replayed body sees as its current task. See
 * pyparla.h and python/parla/graphs.py.
 *
 * Capture. While a Graph captures (Runtime.capture is it), every task the capturing thread spawns outside
 * task bodies is also recorded (pyparla_capture_record, called by the spawn): the engine copies its
 * settings, placement options, accesses and explicit dependencies; the node's body is the spawn's
 * callable (closure captured by value at that spawn) and its template the spawned Task object.
 *
 * Replay. Graph.replay() releases the GIL and replays in the engine (no Python per task). Each replayed
 * Python task runs replay_body, which takes the GIL only to call the node's callable; a native body
 * (parla.native) runs replay_native_body, which calls the C function without the GIL. When that body asks
 * for its current task (get_current_task(), a PArray's .array), it gets a Task object made then for the
 * replayed engine task, with the template's declarations (its __dict__ copied) and the replay's devices;
 * it is dropped when the body returns unless the body kept it. A body that raises makes one too, holding
 * the exception, listed in the runtime's failed tasks like any failed task.
 *
 * Lifetimes. Each replay's join task is a Task object that holds the Graph, and the engine holds the join's
 * object until the join finishes (after every task of its replay): the nodes' callables live while any
 * replay runs.
 */
#include "pyparla.h"

#include <pythread.h>

typedef struct GraphObject GraphObject;

/* One recorded Python task: what its replays run. */
typedef struct {
    PyObject *body;     /* the callable (strong) */
    TaskObject *tmpl;   /* the Task spawned while capturing (strong) */
    GraphObject *graph; /* borrowed: a replay's join holds the Graph while the replay's bodies run */
} pynode_t;

struct GraphObject {
    PyObject_HEAD
    parla_graph_t *graph;
    RuntimeObject *runtime;
    PyObject *name;     /* str */
    pynode_t **nodes;   /* one per recorded task, in recording order */
    Py_ssize_t n_nodes, cap_nodes;
    PyObject *keep;     /* list: the engine data objects the accesses name (their buffers stay alive) */
    PyObject *error;    /* (task name, exception) of the first replayed body that raised, or NULL */
    PyObject *broken;   /* an exception that made the capture unusable, or NULL */
    int capturing;      /* 1 inside the capture, 2 once it ended */
};

/* The replayed task whose body runs on this thread, and its node (a body may run others in a wait). */
static _Thread_local parla_task_t *replay_task;
static _Thread_local pynode_t *replay_node;

/* ------------------------------------------------------------------------- replayed bodies -- */

/* The Task object of replayed task t: the cached one in its user slot, or a new one (borrowed). GIL held. */
static TaskObject *replay_proxy(parla_task_t *t, pynode_t *n)
{
    TaskObject *obj = parla_task_user(t);
    if (obj)
        return obj;
    PyTypeObject *tp = Py_TYPE(n->tmpl);
    obj = (TaskObject *)tp->tp_alloc(tp, 0);
    if (obj == NULL)
        return NULL;
    parla_task_retain(t);
    obj->task = t;
    obj->runtime = (RuntimeObject *)Py_NewRef(n->tmpl->runtime);
    obj->name = PyUnicode_FromFormat("%s (replay of graph '%U')", parla_task_name(t), n->graph->name);
    if (obj->name == NULL || (n->tmpl->dict && (obj->dict = PyDict_Copy(n->tmpl->dict)) == NULL)) {
        Py_DECREF(obj);
        return NULL;
    }
    parla_task_set_user(t, obj); /* the slot's reference, dropped when the body returns */
    return obj;
}

TaskObject *pyparla_replay_current(parla_task_t *t)
{
    if (t == NULL || t != replay_task)
        return NULL;
    TaskObject *obj = replay_proxy(t, replay_node);
    if (obj == NULL)
        PyErr_Clear();
    return obj;
}

/* The body raised: its Task object records the exception (listed in the runtime's failed tasks), and the
 * first one is the graph's. Returns the engine code of a raising body. */
static int replay_failed(parla_task_t *task, pynode_t *n, GraphObject *g)
{
    PyObject *exc = pyparla_take_exception();
    TaskObject *obj = replay_proxy(task, n);
    if (obj == NULL) {
        PyErr_Clear();
        PyErr_WriteUnraisable(exc);
    } else {
        pyparla_task_set_exception(obj, Py_XNewRef(exc));
        pyparla_add_failed(obj->runtime, obj);
    }
    if (g && g->error == NULL && exc && (g->error = Py_BuildValue("(sO)", parla_task_name(task), exc)) == NULL)
        PyErr_Clear();
    Py_XDECREF(exc);
    return 1;
}

/* Drops the Task object a replayed body made for task (GIL held). */
static void drop_proxy(parla_task_t *task)
{
    TaskObject *obj = parla_task_user(task);
    if (obj) {
        parla_task_set_user(task, NULL);
        Py_CLEAR(obj->keep);
        Py_DECREF(obj);
    }
}

/* The engine body of every replayed Python task (arg: its pynode_t). Worker thread, no GIL on entry. */
static int replay_body(parla_task_t *task, void *arg)
{
    pynode_t *n = arg;
    pyparla_worker_take_gil();
    pyparla_drain_deferred(n->tmpl->runtime);
    parla_task_t *prev_task = replay_task;
    pynode_t *prev_node = replay_node;
    replay_task = task;
    replay_node = n;
    PyObject *res = PyObject_CallNoArgs(n->body);
    if (res && PyCoro_CheckExact(res)) {
        PyObject *r = PyObject_CallMethod(res, "close", NULL);
        Py_XDECREF(r);
        Py_CLEAR(res);
        PyErr_Format(PyExc_TypeError, "task %s of graph '%U' returned a coroutine: an async body cannot be "
                     "replayed", parla_task_name(task), n->graph->name);
    }
    int rc = 0;
    if (res == NULL) {
        rc = replay_failed(task, n, n->graph);
    } else {
        Py_DECREF(res);
    }
    replay_task = prev_task;
    replay_node = prev_node;
    drop_proxy(task);
    return rc;
}

/* The engine body of a replayed native task (arg: its pynode_t): the C function is called without the GIL;
 * only a failure takes it, to record the exception. */
static int replay_native_body(parla_task_t *task, void *arg)
{
    pynode_t *n = arg;
    if (pyparla_native_replay(n->body, task, n->tmpl->runtime) == 0)
        return 0;
    int rc = replay_failed(task, n, n->graph);
    drop_proxy(task);
    return rc;
}

/* ------------------------------------------------------------------------------- recording -- */

/* Makes the capture unusable with the raised exception (the spawn itself goes on). */
static void set_broken(GraphObject *g)
{
    PyObject *exc = pyparla_take_exception();
    if (g->broken == NULL)
        g->broken = exc;
    else
        Py_XDECREF(exc);
}

static int is_async_function(PyObject *fn)
{
    if (!PyFunction_Check(fn))
        return 0;
    PyCodeObject *code = (PyCodeObject *)PyFunction_GetCode(fn);
    return (code->co_flags & (CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
}

/* Records task (about to be submitted: its settings, options and accesses are set) in the graph being
 * captured, when the calling thread captures and runs no other task body. body: the callable the spawn
 * submits; deps: the list of its dependency Tasks; accesses: its (Data, mode) pairs. A failure to record
 * makes the capture unusable (its end raises it) and leaves the spawn alone. GIL held. */
void pyparla_capture_record(TaskObject *task, PyObject *body, PyObject *deps, PyObject *accesses)
{
    RuntimeObject *rt = task->runtime;
    GraphObject *g = (GraphObject *)rt->capture;
    if (g == NULL || g->broken || rt->capture_thread != PyThread_get_thread_ident() ||
        parla_task_current() != rt->capture_task)
        return;
    if (is_async_function(body)) {
        PyErr_Format(PyExc_TypeError, "graph '%U': task %s is an async task; a graph records only tasks with "
                     "plain (non-async) bodies", g->name, pyparla_task_name(task));
        set_broken(g);
        return;
    }
    Py_ssize_t n = PyList_GET_SIZE(deps);
    parla_task_t **handles = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *handles);
    pynode_t *node = PyMem_Malloc(sizeof *node);
    if (g->n_nodes == g->cap_nodes && node && handles) {
        Py_ssize_t cap = g->cap_nodes ? 2 * g->cap_nodes : 64;
        pynode_t **nodes = PyMem_Realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (nodes) {
            g->nodes = nodes;
            g->cap_nodes = cap;
        }
    }
    if (handles == NULL || node == NULL || g->n_nodes == g->cap_nodes) {
        PyMem_Free(handles);
        PyMem_Free(node);
        PyErr_NoMemory();
        set_broken(g);
        return;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) /* a released dependency (done, not captured) is no edge */
        if ((handles[k] = ((TaskObject *)PyList_GET_ITEM(deps, i))->task) != NULL)
            k++;
    n = k;
    node->body = Py_NewRef(body);
    node->tmpl = (TaskObject *)Py_NewRef(task);
    node->graph = g;
    int native = pyparla_is_native_body(pyparla_get_state(rt->module), body);
    int rc = parla_graph_record(g->graph, task->task, native ? replay_native_body : replay_body, node, handles,
                                (size_t)n, NULL);
    PyMem_Free(handles);
    if (rc) {
        Py_DECREF(node->body);
        Py_DECREF(node->tmpl);
        PyMem_Free(node);
        pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
        set_broken(g);
        return;
    }
    g->nodes[g->n_nodes++] = node;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(accesses); i++)
        if (PyList_Append(g->keep, PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(accesses, i), 0)) < 0) {
            set_broken(g);
            return;
        }
}

/* ------------------------------------------------------------------------------- the type -- */

static int Graph_init(GraphObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runtime", "name", NULL};
    PyObject *rt_obj, *name;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OU", kwlist, &rt_obj, &name))
        return -1;
    RuntimeObject *rt = pyparla_runtime_arg(Py_TYPE(self), rt_obj, "Graph(runtime, name)");
    if (rt == NULL)
        return -1;
    if (self->graph) {
        PyErr_SetString(PyExc_RuntimeError, "Graph.__init__ called twice");
        return -1;
    }
    const char *utf8 = PyUnicode_AsUTF8(name);
    if (utf8 == NULL || (self->keep = PyList_New(0)) == NULL)
        return -1;
    int rc = parla_graph_create(rt->rt, utf8, &self->graph);
    if (rc)
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL), -1;
    self->runtime = (RuntimeObject *)Py_NewRef(rt);
    self->name = Py_NewRef(name);
    return 0;
}

static int Graph_traverse(GraphObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->runtime);
    Py_VISIT(self->keep);
    Py_VISIT(self->error);
    Py_VISIT(self->broken);
    for (Py_ssize_t i = 0; i < self->n_nodes; i++) {
        Py_VISIT(self->nodes[i]->body);
        Py_VISIT(self->nodes[i]->tmpl);
    }
    return 0;
}

static int Graph_clear(GraphObject *self)
{
    Py_CLEAR(self->error);
    Py_CLEAR(self->broken);
    for (Py_ssize_t i = 0; i < self->n_nodes; i++) {
        Py_CLEAR(self->nodes[i]->body);
        Py_CLEAR(self->nodes[i]->tmpl);
    }
    return 0;
}

static void Graph_dealloc(GraphObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->runtime && self->runtime->capture == (PyObject *)self)
        self->runtime->capture = NULL;
    Graph_clear(self);
    for (Py_ssize_t i = 0; i < self->n_nodes; i++)
        PyMem_Free(self->nodes[i]);
    PyMem_Free(self->nodes);
    /* The engine graph goes after the data objects' references it holds are its own (it keeps the engine
     * data alive; the buffers behind them live in keep). */
    if (self->graph && !(self->runtime && self->runtime->forked))
        parla_graph_release(self->graph);
    self->graph = NULL;
    Py_CLEAR(self->keep);
    Py_CLEAR(self->name);
    Py_CLEAR(self->runtime);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int check_graph(GraphObject *self)
{
    if (self->graph == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Graph object was not initialised");
        return -1;
    }
    return pyparla_check_open(self->runtime);
}

/* _begin(): records the spawns of the calling thread (outside other task bodies) from now on. */
static PyObject *Graph_begin(GraphObject *self, PyObject *unused)
{
    (void)unused;
    if (check_graph(self) < 0)
        return NULL;
    if (self->capturing) {
        PyErr_Format(PyExc_RuntimeError, "graph '%U' was captured already; a graph is captured once", self->name);
        return NULL;
    }
    RuntimeObject *rt = self->runtime;
    if (rt->capture) {
        PyErr_Format(PyExc_RuntimeError, "cannot capture graph '%U': graph '%U' is being captured (captures do "
                     "not nest)", self->name, ((GraphObject *)rt->capture)->name);
        return NULL;
    }
    rt->capture = (PyObject *)self;
    rt->capture_thread = PyThread_get_thread_ident();
    rt->capture_task = parla_task_current();
    self->capturing = 1;
    Py_RETURN_NONE;
}

/* _end(): the capture ends. */
static PyObject *Graph_end(GraphObject *self, PyObject *unused)
{
    (void)unused;
    if (self->runtime && self->runtime->capture == (PyObject *)self)
        self->runtime->capture = NULL;
    self->capturing = 2;
    Py_RETURN_NONE;
}

/* _replay(): one replay; returns its join task (a Task of the templates' class). */
static PyObject *Graph_replay(GraphObject *self, PyObject *unused)
{
    (void)unused;
    if (check_graph(self) < 0)
        return NULL;
    if (self->runtime->closing && parla_task_current() == NULL) {
        PyErr_Format(PyExc_RuntimeError, "cannot replay graph '%U': its Parla context is closing", self->name);
        return NULL;
    }
    if (self->capturing != 2) {
        PyErr_Format(PyExc_RuntimeError, "graph '%U' is %s; replay it after its capture", self->name,
                     self->capturing ? "being captured" : "not captured yet");
        return NULL;
    }
    if (self->broken) {
        PyErr_Format(PyExc_RuntimeError, "graph '%U': its capture failed (%R); it cannot be replayed", self->name,
                     self->broken);
        return NULL;
    }
    pyparla_state *st = pyparla_get_state(self->runtime->module);
    /* parla.Task (wait, result, ...) even when nothing was recorded. */
    PyTypeObject *tp = self->n_nodes ? Py_TYPE(self->nodes[0]->tmpl)
                       : st->py_task_type ? st->py_task_type : st->task_type;
    TaskObject *join = (TaskObject *)tp->tp_alloc(tp, 0);
    if (join == NULL)
        return NULL;
    join->runtime = (RuntimeObject *)Py_NewRef(self->runtime);
    join->name = PyUnicode_FromFormat("%U#replay%llu", self->name,
                                      (unsigned long long)parla_graph_num_replays(self->graph) + 1);
    if (join->name == NULL || (join->keep = PyList_New(1)) == NULL) {
        Py_DECREF(join);
        return NULL;
    }
    PyList_SET_ITEM(join->keep, 0, Py_NewRef(self)); /* the nodes live while the replay runs */
    Py_INCREF(join); /* the engine's reference, dropped by the task_finished hook */
    join->engine_ref = 1;
    parla_task_t *handle = NULL;
    self->runtime->spawning++;
    pyparla_gil_t gil = pyparla_gil_release();
    int rc = parla_graph_replay(self->graph, join, &handle);
    pyparla_gil_restore(gil);
    self->runtime->spawning--;
    join->task = handle;
    if (handle == NULL) {
        join->engine_ref = 0;
        Py_DECREF(join);
    }
    if (rc) {
        Py_DECREF(join);
        return pyparla_set_error(PYPARLA_AT_CALL, rc, NULL);
    }
    return (PyObject *)join;
}

static PyObject *Graph_templates(GraphObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(self->n_nodes);
    for (Py_ssize_t i = 0; out && i < self->n_nodes; i++)
        PyList_SET_ITEM(out, i, Py_NewRef(self->nodes[i]->tmpl ? (PyObject *)self->nodes[i]->tmpl : Py_None));
    return out;
}

static PyObject *Graph_get_name(GraphObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->name ? self->name : Py_None);
}

static PyObject *Graph_get_tasks(GraphObject *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(parla_graph_num_tasks(self->graph));
}

static PyObject *Graph_get_replays(GraphObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(parla_graph_num_replays(self->graph));
}

static PyObject *Graph_get_error(GraphObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->error ? self->error : Py_None);
}

static PyObject *Graph_get_broken(GraphObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->broken ? self->broken : Py_None);
}

static int Graph_set_broken(GraphObject *self, PyObject *value, void *c)
{
    (void)c;
    Py_XSETREF(self->broken, value == Py_None ? NULL : Py_XNewRef(value));
    return 0;
}

static PyMethodDef Graph_methods[] = {
    {"_begin", (PyCFunction)Graph_begin, METH_NOARGS,
     "_begin(): from now on, spawns of the calling thread outside other task bodies are recorded."},
    {"_end", (PyCFunction)Graph_end, METH_NOARGS, "_end(): the capture ends."},
    {"_replay", (PyCFunction)Graph_replay, METH_NOARGS,
     "_replay(): replays the graph once (GIL released); returns the replay's join Task."},
    {"_templates", (PyCFunction)Graph_templates, METH_NOARGS, "The Tasks recorded, in recording order."},
    {NULL},
};

static PyGetSetDef Graph_getset[] = {
    {"name", (getter)Graph_get_name, NULL, "The graph's name.", NULL},
    {"tasks", (getter)Graph_get_tasks, NULL, "How many tasks were recorded.", NULL},
    {"replays", (getter)Graph_get_replays, NULL, "How many replays were issued.", NULL},
    {"error", (getter)Graph_get_error, NULL, "(task name, exception) of the first replayed body that raised, or None.", NULL},
    {"broken", (getter)Graph_get_broken, (setter)Graph_set_broken,
     "The exception that made the capture unusable, or None.", NULL},
    {NULL},
};

static PyType_Slot Graph_slots[] = {
    {Py_tp_doc, "A recorded graph of tasks of one runtime and its replay (see parla.graphs)."},
    {Py_tp_init, Graph_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Graph_dealloc},
    {Py_tp_traverse, Graph_traverse},
    {Py_tp_clear, Graph_clear},
    {Py_tp_methods, Graph_methods},
    {Py_tp_getset, Graph_getset},
    {0, NULL},
};

PyType_Spec pyparla_graph_spec = {
    .name = "parla._core.Graph",
    .basicsize = sizeof(GraphObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Graph_slots,
};
