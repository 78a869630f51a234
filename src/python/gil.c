/*
 * gil.c: worker thread states, the engine's hooks into the binding, the GIL around blocking calls, and
 * the references dropped later by whoever holds the GIL next (deferred decrefs). See pyparla.h.
 */
#include "pyparla.h"

/* Per worker thread: its thread state and whether it holds the GIL now. */
static _Thread_local PyThreadState *worker_tstate;
static _Thread_local PyGILState_STATE worker_gilstate;
static _Thread_local int worker_holds_gil;

pyparla_gil_t pyparla_gil_release(void)
{
    pyparla_gil_t g = {PyEval_SaveThread(), worker_holds_gil};
    worker_holds_gil = 0;
    return g;
}

void pyparla_gil_restore(pyparla_gil_t g)
{
    if (!worker_holds_gil)
        PyEval_RestoreThread(g.ts);
    worker_holds_gil = g.was_held;
}

void pyparla_worker_take_gil(void)
{
    if (!worker_holds_gil) {
        PyEval_RestoreThread(worker_tstate);
        worker_holds_gil = 1;
    }
}

void pyparla_worker_release_gil(void)
{
    if (worker_holds_gil) {
        worker_holds_gil = 0;
        PyEval_SaveThread();
    }
}

void pyparla_drain_deferred(RuntimeObject *rt)
{
    TaskObject *t = atomic_exchange(&rt->deferred, NULL);
    while (t) {
        TaskObject *next = t->deferred_next;
        t->deferred_next = NULL;
        pyparla_task_finished_drop(t);
        t = next;
    }
}

/* ------------------------------------------------------------------------------ engine hooks -- */

static void hook_worker_start(int index, void *user)
{
    (void)index;
    (void)user;
    worker_gilstate = PyGILState_Ensure();
    worker_tstate = PyThreadState_Get();
    worker_holds_gil = 0;
    PyEval_SaveThread();
}

static void hook_worker_stop(int index, void *user)
{
    (void)index;
    RuntimeObject *rt = user;
    if (!worker_holds_gil)
        PyEval_RestoreThread(worker_tstate);
    worker_holds_gil = 0;
    pyparla_drain_deferred(rt);
    PyGILState_Release(worker_gilstate);
    worker_tstate = NULL;
}

static void hook_worker_idle(int index, void *user)
{
    (void)index;
    (void)user;
    if (worker_holds_gil) {
        worker_holds_gil = 0;
        PyEval_SaveThread();
    }
}

static void hook_task_finished(parla_task_t *task, void *user)
{
    RuntimeObject *rt = user;
    TaskObject *obj = parla_task_user(task);
    /* Never-spawned tasks (cancelled placeholders) hold no engine reference. */
    if (obj == NULL || !obj->engine_ref)
        return;
    obj->engine_ref = 0;
    if (parla_task_state(task) == PARLA_TASK_FAILED) { /* its exception is read with the GIL held */
        PyGILState_STATE g = PyGILState_Ensure();
        pyparla_record_engine_failure(rt, obj, task);
        pyparla_task_finished(obj);
        Py_DECREF(obj);
        PyGILState_Release(g);
        return;
    }
    if (worker_holds_gil || PyGILState_Check()) { /* a worker that ran a Python body holds it still */
        pyparla_task_finished_drop(obj);
        return;
    }
    TaskObject *head = atomic_load(&rt->deferred);
    do {
        obj->deferred_next = head;
    } while (!atomic_compare_exchange_weak(&rt->deferred, &head, obj));
}

void pyparla_install_hooks(parla_config_t *cfg, RuntimeObject *rt)
{
    cfg->worker_start = hook_worker_start;
    cfg->worker_stop = hook_worker_stop;
    cfg->worker_idle = hook_worker_idle;
    cfg->task_finished = hook_task_finished;
    cfg->hook_user = rt;
}
