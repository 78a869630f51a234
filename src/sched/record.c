/*
 * record.c: recorded task graphs, the template (parla_graph_*, include/parla.h; see sched/replay.h): creating
 * and releasing a graph, and recording its tasks, their settings, accesses and dependencies. Replaying it is
 * in replay.c.
 */
#include "sched/replay.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* --------------------------------------------------------------- helpers -- */

char *parla__sched_copy_name(parla_runtime_t *rt, const char *name)
{
    size_t n = strnlen(name, 255);
    char *copy = parla__alloc(rt, n + 1);
    if (copy) {
        memcpy(copy, name, n);
        copy[n] = '\0';
    }
    return copy;
}

/* Room for one more element of a growing array (*cap elements of size each). */
static int grow(parla_runtime_t *rt, void **arr, int n, int *cap, size_t size)
{
    if (n < *cap)
        return 0;
    int ncap = *cap ? 2 * *cap : 2;
    void *a = parla__alloc(rt, (size_t)ncap * size);
    if (a == NULL)
        return PARLA_ENOMEM;
    if (n)
        memcpy(a, *arr, (size_t)n * size);
    parla__free(*arr);
    *arr = a;
    *cap = ncap;
    return 0;
}

static void node_clear(node_t *nd)
{
    for (int i = 0; i < nd->n_accesses; i++)
        parla_data_release(nd->accesses[i].data);
    for (int i = 0; i < nd->n_externals; i++)
        parla_task_release(nd->externals[i]);
    parla__free(nd->name);
    parla__free(nd->options);
    parla__free(nd->accesses);
    parla__free(nd->deps);
    parla__free(nd->externals);
    memset(nd, 0, sizeof *nd);
}

/* The node at index, or NULL with the error set (out of range, or the graph is frozen). */
static node_t *editable(parla_graph_t *g, size_t index, const char *fn, int *rc)
{
    if (g == NULL) {
        *rc = parla__error(PARLA_EINVAL, "%s: graph is NULL", fn);
        return NULL;
    }
    if (g->frozen) {
        *rc = parla__error(PARLA_ESTATE, "%s: graph '%s' was replayed already; a replayed graph does not change",
                           fn, g->name);
        return NULL;
    }
    if (index >= g->n_nodes) {
        *rc = parla__error(PARLA_EINVAL, "%s: graph '%s' has %zu tasks, no task %zu", fn, g->name, g->n_nodes,
                           index);
        return NULL;
    }
    *rc = 0;
    return &g->nodes[index];
}

static void graph_free(parla_graph_t *g)
{
    parla_runtime_t *rt = g->rt;
    for (size_t i = 0; i < g->n_nodes; i++)
        node_clear(&g->nodes[i]);
    for (size_t i = 0; i < g->rec_cap; i++)
        if (g->rec_keys && g->rec_keys[i])
            parla_task_release(g->rec_keys[i]);
    parla_task_release(g->last_join);
    parla__free(g->nodes);
    parla__free(g->rec_keys);
    parla__free(g->rec_nodes);
    parla__free(g->scratch);
    parla__data_replay_free(g->plan);
    parla__free(g->plan_edges);
    parla__free(g->plan_start);
    parla__free(g->order);
    parla__free(g->failure);
    parla__free(g->name);
    /* Pools still in use are freed when their last task is. */
    pthread_mutex_lock(&g->home->lock);
    g->home->open = false;
    parla__graph_pool_t *idle = g->home->idle;
    g->home->idle = NULL;
    pthread_mutex_unlock(&g->home->lock);
    while (idle) {
        parla__graph_pool_t *next = idle->next;
        parla__graph_pool_free(idle);
        idle = next;
    }
    parla__sched_pool_home_release(g->home);
    pthread_mutex_destroy(&g->issue_lock);
    pthread_mutex_destroy(&g->lock);
    parla__free(g);
    parla__graph_object_freed(rt);
}

void parla__sched_pool_home_release(pool_home_t *home)
{
    if (atomic_fetch_sub_explicit(&home->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&home->lock);
    parla__free(home->copy);
    parla__free(home);
}

/* ------------------------------------------------------------- lifetime -- */

int parla_graph_create(parla_runtime_t *rt, const char *name, parla_graph_t **out)
{
    if (out)
        *out = NULL;
    if (rt == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_create: %s is NULL", rt ? "out" : "runtime");
    parla_graph_t *g = parla__calloc(rt, 1, sizeof *g);
    char *copy = g ? parla__sched_copy_name(rt, name ? name : "graph") : NULL;
    pool_home_t *home = copy ? parla__calloc(rt, 1, sizeof *home) : NULL;
    if (home == NULL) {
        parla__free(copy);
        parla__free(g);
        return parla__error(PARLA_ENOMEM, "parla_graph_create: cannot allocate graph '%s'", name ? name : "graph");
    }
    pthread_mutex_init(&home->lock, NULL);
    atomic_init(&home->refs, 1);
    home->open = true;
    g->home = home;
    g->rt = rt;
    g->name = copy;
    atomic_init(&g->refs, 1);
    atomic_init(&g->replays, 0);
    pthread_mutex_init(&g->issue_lock, NULL);
    pthread_mutex_init(&g->lock, NULL);
    atomic_fetch_add_explicit(&parla__graph_rt(rt)->n_live, 1, memory_order_relaxed);
    *out = g;
    return 0;
}

void parla_graph_retain(parla_graph_t *g)
{
    if (g)
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void parla_graph_release(parla_graph_t *g)
{
    if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
        graph_free(g);
}

const char *parla_graph_name(const parla_graph_t *g)
{
    return g ? g->name : "(null)";
}

size_t parla_graph_num_tasks(const parla_graph_t *g)
{
    return g ? g->n_nodes : 0;
}

uint64_t parla_graph_num_replays(const parla_graph_t *g)
{
    return g ? atomic_load_explicit(&g->replays, memory_order_acquire) : 0;
}

/* ------------------------------------------------------------ recording -- */

int parla_graph_add_task(parla_graph_t *g, const char *name, parla_task_fn fn, void *arg, size_t *index)
{
    if (g == NULL || fn == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_add_task: %s is NULL", g ? "fn" : "graph");
    if (g->frozen)
        return parla__error(PARLA_ESTATE, "parla_graph_add_task: graph '%s' was replayed already; a replayed "
                            "graph does not change", g->name);
    if (g->n_nodes == g->cap_nodes) {
        size_t cap = g->cap_nodes ? 2 * g->cap_nodes : 16;
        node_t *n = parla__calloc(g->rt, cap, sizeof *n);
        if (n == NULL)
            return parla__error(PARLA_ENOMEM, "graph '%s': cannot record a task", g->name);
        if (g->n_nodes)
            memcpy(n, g->nodes, g->n_nodes * sizeof *n);
        parla__free(g->nodes);
        g->nodes = n;
        g->cap_nodes = cap;
    }
    char buf[300];
    if (name == NULL) {
        snprintf(buf, sizeof buf, "%s[%zu]", g->name, g->n_nodes);
        name = buf;
    }
    node_t *nd = &g->nodes[g->n_nodes];
    memset(nd, 0, sizeof *nd);
    if ((nd->name = parla__sched_copy_name(g->rt, name)) == NULL)
        return parla__error(PARLA_ENOMEM, "graph '%s': cannot record task %s", g->name, name);
    nd->fn = fn;
    nd->arg = arg;
    nd->level = 1;
    if (index)
        *index = g->n_nodes;
    g->n_nodes++;
    return 0;
}

int parla_graph_set_priority(parla_graph_t *g, size_t index, int priority)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_set_priority", &rc);
    if (nd)
        nd->level = priority > 0 ? 0 : priority == 0 ? 1 : 2;
    return rc;
}

int parla_graph_set_resources(parla_graph_t *g, size_t index, double vcus, uint64_t memory)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_set_resources", &rc);
    if (nd == NULL)
        return rc;
    if (!(vcus >= 0.0 && vcus <= 1.0))
        return parla__error(PARLA_EINVAL, "parla_graph_set_resources: task %s of graph '%s': vcus=%g is outside "
                            "[0, 1]", nd->name, g->name, vcus);
    nd->vcus = (int64_t)llround(vcus * (double)PARLA__VCU_ONE);
    nd->memory = memory;
    return 0;
}

int parla_graph_add_placement(parla_graph_t *g, size_t index, const int *slots, int n, double vcus,
                              uint64_t memory)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_add_placement", &rc);
    if (nd == NULL)
        return rc;
    if (slots == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_add_placement: slots is NULL");
    parla__graph_option_t opt;
    if ((rc = parla__sched_option_make(g->rt, nd->name, slots, n, vcus, memory, &opt)) != 0)
        return rc;
    if (grow(g->rt, (void **)&nd->options, nd->n_options, &nd->cap_options, sizeof opt))
        return parla__error(PARLA_ENOMEM, "graph '%s': task %s: cannot record a placement", g->name, nd->name);
    nd->options[nd->n_options++] = opt;
    return 0;
}

int parla_graph_add_dependency(parla_graph_t *g, size_t index, size_t dependency)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_add_dependency", &rc);
    if (nd == NULL)
        return rc;
    if (dependency >= g->n_nodes || dependency == index)
        return parla__error(PARLA_EINVAL, "parla_graph_add_dependency: task %s of graph '%s' cannot depend on "
                            "task %zu (%s)", nd->name, g->name, dependency,
                            dependency == index ? "itself" : "no such task");
    if (grow(g->rt, (void **)&nd->deps, nd->n_deps, &nd->cap_deps, sizeof *nd->deps))
        return parla__error(PARLA_ENOMEM, "graph '%s': task %s: cannot record a dependency", g->name, nd->name);
    nd->deps[nd->n_deps++] = dependency;
    return 0;
}

int parla_graph_add_external(parla_graph_t *g, size_t index, parla_task_t *task)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_add_external", &rc);
    if (nd == NULL)
        return rc;
    if (task == NULL || task->rt != g->rt)
        return parla__error(PARLA_EINVAL, "parla_graph_add_external: task %s of graph '%s': the dependency %s",
                            nd->name, g->name, task ? "belongs to another runtime" : "is NULL");
    if (grow(g->rt, (void **)&nd->externals, nd->n_externals, &nd->cap_externals, sizeof *nd->externals))
        return parla__error(PARLA_ENOMEM, "graph '%s': task %s: cannot record a dependency", g->name, nd->name);
    parla_task_retain(task);
    nd->externals[nd->n_externals++] = task;
    return 0;
}

int parla_graph_add_access(parla_graph_t *g, size_t index, parla_data_t *data, parla_access_mode_t mode)
{
    return parla_graph_add_access_at(g, index, data, mode, 0);
}

int parla_graph_add_access_at(parla_graph_t *g, size_t index, parla_data_t *data, parla_access_mode_t mode,
                              int slot)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_add_access", &rc);
    if (nd == NULL)
        return rc;
    if (data == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_add_access: data is NULL");
    if (slot < 0 || slot >= PARLA_MAX_TASK_DEVICES)
        return parla__error(PARLA_EINVAL, "task %s of graph '%s': an access for the task's device at position %d: "
                            "a task has at most %d devices", nd->name, g->name, slot, PARLA_MAX_TASK_DEVICES);
    if (mode != PARLA_READ && mode != PARLA_WRITE && mode != PARLA_READWRITE)
        return parla__error(PARLA_EINVAL, "task %s of graph '%s': access mode %d is not read, write or read-write",
                            nd->name, g->name, (int)mode);
    if (parla__data_runtime(data) != g->rt)
        return parla__error(PARLA_EINVAL, "task %s of graph '%s': the data object belongs to another runtime",
                            nd->name, g->name);
    if (grow(g->rt, (void **)&nd->accesses, nd->n_accesses, &nd->cap_accesses, sizeof *nd->accesses))
        return parla__error(PARLA_ENOMEM, "graph '%s': task %s: cannot record an access", g->name, nd->name);
    parla_data_retain(data);
    nd->accesses[nd->n_accesses].data = data;
    nd->accesses[nd->n_accesses].mode = mode;
    nd->accesses[nd->n_accesses].slot = slot;
    nd->n_accesses++;
    return 0;
}

int parla_graph_set_user(parla_graph_t *g, size_t index, void *user)
{
    int rc;
    node_t *nd = editable(g, index, "parla_graph_set_user", &rc);
    if (nd)
        nd->user = user;
    return rc;
}

static size_t rec_slot(const parla_graph_t *g, const parla_task_t *t)
{
    size_t h = ((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull;
    size_t i = h & (g->rec_cap - 1);
    while (g->rec_keys[i] && g->rec_keys[i] != t)
        i = (i + 1) & (g->rec_cap - 1);
    return i;
}

/* Room in the map of recorded tasks for one more. */
static int rec_reserve(parla_graph_t *g)
{
    if ((g->rec_n + 1) * 2 <= g->rec_cap)
        return 0;
    size_t cap = g->rec_cap ? 2 * g->rec_cap : 64;
    parla_task_t **keys = parla__calloc(g->rt, cap, sizeof *keys);
    size_t *nodes = keys ? parla__alloc(g->rt, cap * sizeof *nodes) : NULL;
    if (nodes == NULL) {
        parla__free(keys);
        return PARLA_ENOMEM;
    }
    parla_graph_t old = *g;
    g->rec_keys = keys;
    g->rec_nodes = nodes;
    g->rec_cap = cap;
    for (size_t i = 0; i < old.rec_cap; i++)
        if (old.rec_keys[i]) {
            size_t s = rec_slot(g, old.rec_keys[i]);
            g->rec_keys[s] = old.rec_keys[i];
            g->rec_nodes[s] = old.rec_nodes[i];
        }
    parla__free(old.rec_keys);
    parla__free(old.rec_nodes);
    return 0;
}

/* The recording part of parla_graph_record, on the new node nd (removed by the caller on error). */
static int record_settings(parla_graph_t *g, node_t *nd, parla_task_t *t, parla_task_t *const *deps, size_t n_deps)
{
    nd->level = t->level;
    nd->vcus = t->vcus;
    nd->memory = t->memory;
    parla__graph_task_ext_t *x = t->ext;
    if (x && x->n_options) {
        nd->options = parla__alloc(g->rt, (size_t)x->n_options * sizeof *nd->options);
        if (nd->options == NULL)
            return PARLA_ENOMEM;
        memcpy(nd->options, x->options, (size_t)x->n_options * sizeof *nd->options);
        nd->n_options = nd->cap_options = x->n_options;
    }
    if (x && x->n_accesses) {
        nd->accesses = parla__alloc(g->rt, (size_t)x->n_accesses * sizeof *nd->accesses);
        if (nd->accesses == NULL)
            return PARLA_ENOMEM;
        for (int i = 0; i < x->n_accesses; i++) {
            nd->accesses[i] = x->accesses[i];
            parla_data_retain(x->accesses[i].data);
        }
        nd->n_accesses = nd->cap_accesses = x->n_accesses;
    }
    for (size_t i = 0; i < n_deps; i++) {
        parla_task_t *d = deps[i];
        if (d == NULL || d->rt != g->rt)
            return parla__error(PARLA_EINVAL, "parla_graph_record: task %s: dependency %zu %s", nd->name, i,
                                d ? "belongs to another runtime" : "is NULL");
        size_t s = g->rec_cap ? rec_slot(g, d) : 0;
        if (g->rec_cap && g->rec_keys[s] == d) {
            if (grow(g->rt, (void **)&nd->deps, nd->n_deps, &nd->cap_deps, sizeof *nd->deps))
                return PARLA_ENOMEM;
            nd->deps[nd->n_deps++] = g->rec_nodes[s];
        } else {
            if (grow(g->rt, (void **)&nd->externals, nd->n_externals, &nd->cap_externals, sizeof *nd->externals))
                return PARLA_ENOMEM;
            parla_task_retain(d);
            nd->externals[nd->n_externals++] = d;
        }
    }
    return rec_reserve(g);
}

int parla__sched_graph_link_forward(parla_graph_t *g)
{
    for (size_t i = 0; g->rec_cap && i < g->n_nodes; i++) {
        node_t *nd = &g->nodes[i];
        for (int k = 0; k < nd->n_externals;) {
            parla_task_t *e = nd->externals[k];
            size_t s = rec_slot(g, e);
            if (g->rec_keys[s] != e || g->rec_nodes[s] == i) {
                k++;
                continue;
            }
            if (grow(g->rt, (void **)&nd->deps, nd->n_deps, &nd->cap_deps, sizeof *nd->deps))
                return parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it", g->name);
            nd->deps[nd->n_deps++] = g->rec_nodes[s];
            nd->externals[k] = nd->externals[--nd->n_externals];
            parla_task_release(e);
        }
    }
    return 0;
}

int parla_graph_record(parla_graph_t *g, parla_task_t *t, parla_task_fn fn, void *arg, parla_task_t *const *deps,
                       size_t n_deps, size_t *index)
{
    if (g == NULL || t == NULL || (n_deps && deps == NULL))
        return parla__error(PARLA_EINVAL, "parla_graph_record: %s is NULL", g ? t ? "deps" : "task" : "graph");
    if (t->rt != g->rt)
        return parla__error(PARLA_EINVAL, "parla_graph_record: task %s belongs to another runtime than graph '%s'",
                            parla_task_name(t), g->name);
    if (fn == NULL) {
        fn = t->fn;
        arg = t->arg;
    }
    if (fn == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_record: task %s has no body", parla_task_name(t));
    if (g->rec_cap && g->rec_keys[rec_slot(g, t)] == t)
        return parla__error(PARLA_EINVAL, "parla_graph_record: task %s is recorded in graph '%s' already",
                            parla_task_name(t), g->name);
    size_t at;
    int rc = parla_graph_add_task(g, parla_task_name(t), fn, arg, &at);
    if (rc)
        return rc;
    rc = record_settings(g, &g->nodes[at], t, deps, n_deps);
    if (rc) {
        node_clear(&g->nodes[at]);
        g->n_nodes--;
        return rc == PARLA_ENOMEM ? parla__error(rc, "graph '%s': cannot record task %s", g->name,
                                                 parla_task_name(t))
                                  : rc;
    }
    size_t s = rec_slot(g, t);
    parla_task_retain(t);
    g->rec_keys[s] = t;
    g->rec_nodes[s] = at;
    g->rec_n++;
    if (index)
        *index = at;
    return 0;
}
