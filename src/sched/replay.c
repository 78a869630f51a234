/*
 * replay.c: recorded task graphs and their replay (parla_graph_*, include/parla.h).
 *
 * A graph is a template: one node per recorded task (body, name, priority, resources, placement options,
 * data accesses, dependencies on other nodes and on outside tasks). A replay turns the template into
 * tasks in one call: it creates every node's task with the recorded settings copied in (nothing is
 * checked again: the options were checked when recorded and the devices do not change), then, in
 * recording order, adds each task's dependencies and accesses (the accesses go through the ordinary
 * hazard path, so replays are ordered with each other and with every other task by their data, like
 * spawns) and submits it. A join task per replay, with soft edges from every task of the replay and from
 * the join of the replay before, tells when a replay (and all before it) has finished and whether one of
 * its tasks did not end DONE; the first such failure fails the graph.
 *
 * Locks: graph->issue_lock serialises replays and is held across the engine calls of one replay (it
 * comes before every engine lock); graph->lock is a leaf (the failure message and the latest join).
 */
#include "sched/sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    char *name;
    parla_task_fn fn;
    void *arg;
    void *user;
    int8_t level;
    int64_t vcus;
    uint64_t memory;
    parla__option_t *options;
    int n_options, cap_options;
    parla__access_t *accesses; /* each holds a reference to its data */
    int n_accesses, cap_accesses;
    size_t *deps; /* node indices */
    int n_deps, cap_deps;
    parla_task_t **externals; /* outside tasks, each held */
    int n_externals, cap_externals;
} node_t;

struct parla_graph {
    parla_runtime_t *rt;
    _Atomic long refs;
    char *name;
    node_t *nodes;
    size_t n_nodes, cap_nodes;
    /* Recording: tasks taken by parla_graph_record (held until the first replay) and their nodes, an
     * open-addressing map (keys NULL when free). */
    parla_task_t **rec_keys;
    size_t *rec_nodes;
    size_t rec_cap, rec_n;
    bool frozen;                /* replayed once: the template no longer changes */
    pthread_mutex_t issue_lock; /* serialises replays; protects scratch, frozen and the template once frozen */
    parla_task_t **scratch;     /* the tasks of the replay being issued */
    pthread_mutex_t lock;       /* a leaf: protects last_join and failure */
    parla_task_t *last_join;    /* held */
    char *failure;              /* the first failure's message, or NULL */
    _Atomic uint64_t replays;
};

/* --------------------------------------------------------------- helpers -- */

static char *copy_name(parla_runtime_t *rt, const char *name)
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
    parla__free(g->failure);
    parla__free(g->name);
    pthread_mutex_destroy(&g->issue_lock);
    pthread_mutex_destroy(&g->lock);
    parla__free(g);
    parla__graph_object_freed(rt);
}

/* ------------------------------------------------------------- lifetime -- */

int parla_graph_create(parla_runtime_t *rt, const char *name, parla_graph_t **out)
{
    if (out)
        *out = NULL;
    if (rt == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_create: %s is NULL", rt ? "out" : "runtime");
    parla_graph_t *g = parla__calloc(rt, 1, sizeof *g);
    char *copy = g ? copy_name(rt, name ? name : "graph") : NULL;
    if (copy == NULL) {
        parla__free(g);
        return parla__error(PARLA_ENOMEM, "parla_graph_create: cannot allocate graph '%s'", name ? name : "graph");
    }
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
    if ((nd->name = copy_name(g->rt, name)) == NULL)
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
    parla__option_t opt;
    if ((rc = parla__option_make(g->rt, nd->name, slots, n, vcus, memory, &opt)) != 0)
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
    parla__task_ext_t *x = t->ext;
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

/* --------------------------------------------------------------- replay -- */

/* The join's body: fails when a task of its replay (its cause, through the soft edges) or of an earlier
 * replay (the graph's failure) did not end DONE; the first such failure becomes the graph's. */
static int join_body(parla_task_t *join, void *arg);

/* Records msg as the graph's failure unless it has one. */
static void set_failure(parla_graph_t *g, const char *msg)
{
    char *copy = malloc(strlen(msg) + 1);
    if (copy)
        strcpy(copy, msg);
    pthread_mutex_lock(&g->lock);
    if (g->failure == NULL) {
        g->failure = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&g->lock);
    free(copy);
}

/* PARLA_EFAILED with the graph's failure as the message, or 0 when it has none. */
static int failure_code(parla_graph_t *g)
{
    pthread_mutex_lock(&g->lock);
    int rc = g->failure ? parla__error(PARLA_EFAILED, "%s", g->failure) : 0;
    pthread_mutex_unlock(&g->lock);
    return rc;
}

static int join_body(parla_task_t *join, void *arg)
{
    parla_graph_t *g = arg;
    parla_task_t *cause = atomic_load_explicit(&join->cause, memory_order_acquire);
    if (cause) {
        char msg[768];
        int err = parla_task_error(cause);
        snprintf(msg, sizeof msg, "replay %s of graph '%s' failed: task %s %s (%s)", parla_task_name(join),
                 g->name, parla_task_name(cause), parla_task_state_name(parla_task_state(cause)),
                 err > 0 ? "its body reported a failure" : parla_strerror(err));
        set_failure(g, msg);
    }
    return failure_code(g);
}

void parla__graph_join_finished(parla_task_t *join)
{
    if (join->fn != join_body)
        return;
    parla_graph_t *g = join->arg;
    if (parla_task_state(join) == PARLA_TASK_CANCELLED) {
        char msg[512];
        snprintf(msg, sizeof msg, "replay %s of graph '%s' was cancelled (the runtime was stopped)",
                 parla_task_name(join), g->name);
        set_failure(g, msg);
    }
    parla_graph_release(g); /* the replay's reference */
}

/* Pushes the soft edge t -> join onto t's successor stack. t was created by this replay and is about to be
 * submitted (not finished: the push cannot fail); it needs no placeholder entry, as it is submitted right
 * after, before the join. */
static int join_edge(parla_task_t *join, parla_task_t *t)
{
    parla__edge_t *e = !atomic_exchange_explicit(&t->first_edge_used, true, memory_order_relaxed)
                           ? &t->first_edge
                           : parla__alloc(t->rt, sizeof *e);
    if (e == NULL)
        return PARLA_ENOMEM;
    e->succ = join;
    e->flags = PARLA__EDGE_SOFT;
    parla_task_retain(join);
    atomic_fetch_add_explicit(&join->pending, 1, memory_order_relaxed);
    parla__edge_push(t, e);
    return 0;
}

/* Creates node i's task for a replay with the recorded settings. */
static int make_task(parla_graph_t *g, size_t i, parla_task_t **out)
{
    const node_t *nd = &g->nodes[i];
    parla_task_t *t;
    int rc = parla_task_create(g->rt, nd->fn, nd->arg, &t);
    if (rc)
        return rc;
    t->user = nd->user;
    t->level = nd->level;
    t->vcus = nd->vcus;
    t->memory = nd->memory;
    char *name = copy_name(g->rt, nd->name);
    atomic_store_explicit(&t->name, name, memory_order_relaxed);
    rc = name ? 0 : PARLA_ENOMEM;
    if (rc == 0 && nd->n_options) {
        parla__task_ext_t *x = parla__task_ext(t);
        parla__option_t *o = x ? parla__alloc(g->rt, (size_t)nd->n_options * sizeof *o) : NULL;
        if (o) {
            memcpy(o, nd->options, (size_t)nd->n_options * sizeof *o);
            x->options = o;
            x->n_options = x->cap_options = nd->n_options;
        } else {
            rc = PARLA_ENOMEM;
        }
    }
    if (rc) {
        parla_task_release(t);
        return parla__error(rc, "replay of graph '%s': cannot create task %s", g->name, nd->name);
    }
    *out = t;
    return 0;
}

/* Adds node i's dependencies and accesses to its replay task t (tasks: the replay's), joins it to join and
 * submits it. The join's edge comes after the accesses: a task with no successor yet needs no search for a
 * dependency cycle when its hazard edges are added. */
static int issue_task(parla_graph_t *g, size_t i, parla_task_t *const *tasks, parla_task_t *join)
{
    const node_t *nd = &g->nodes[i];
    parla_task_t *t = tasks[i];
    int rc = 0;
    for (int k = 0; rc == 0 && k < nd->n_deps; k++)
        rc = parla__add_edge(t, tasks[nd->deps[k]], 0);
    for (int k = 0; rc == 0 && k < nd->n_externals; k++)
        rc = parla__add_edge(t, nd->externals[k], 0);
    for (int k = 0; rc == 0 && k < nd->n_accesses; k++)
        rc = parla_task_add_access_at(t, nd->accesses[k].data, (parla_access_mode_t)nd->accesses[k].mode,
                                      nd->accesses[k].slot);
    if (rc == 0)
        rc = join_edge(join, t);
    if (rc)
        return rc == PARLA_ENOMEM ? parla__error(rc, "replay of graph '%s': task %s: out of memory", g->name,
                                                 nd->name)
                                  : rc;
    rc = parla_task_submit(t);
    /* Infeasible needs fail the task (it is submitted): its join reports it. */
    return rc == PARLA_ERESOURCE ? 0 : rc;
}

/* The first replay: the recorded tasks are no longer needed to tell nodes apart. */
static int freeze(parla_graph_t *g)
{
    g->scratch = parla__alloc(g->rt, (g->n_nodes ? g->n_nodes : 1) * sizeof *g->scratch);
    if (g->scratch == NULL)
        return parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it", g->name);
    for (size_t i = 0; i < g->rec_cap; i++)
        if (g->rec_keys[i])
            parla_task_release(g->rec_keys[i]);
    parla__free(g->rec_keys);
    parla__free(g->rec_nodes);
    g->rec_keys = NULL;
    g->rec_nodes = NULL;
    g->rec_cap = g->rec_n = 0;
    g->frozen = true;
    return 0;
}

/* With issue_lock held: creates, connects and submits one replay. */
static int replay_locked(parla_graph_t *g, void *join_user, parla_task_t **join_out)
{
    int rc = failure_code(g);
    if (rc == 0 && !g->frozen)
        rc = freeze(g);
    if (rc)
        return rc;
    parla_task_t *join;
    if ((rc = parla_task_create(g->rt, join_body, g, &join)) != 0)
        return rc;
    uint64_t k = atomic_load_explicit(&g->replays, memory_order_relaxed) + 1;
    char name[300];
    snprintf(name, sizeof name, "%s#replay%llu", g->name, (unsigned long long)k);
    if ((rc = parla_task_set_name(join, name)) != 0) {
        parla_task_release(join);
        return rc;
    }
    join->user = join_user;
    pthread_mutex_lock(&g->lock);
    parla_task_t *prev = g->last_join;
    if (prev)
        parla_task_retain(prev);
    pthread_mutex_unlock(&g->lock);
    if (prev) {
        rc = parla__add_edge(join, prev, PARLA__EDGE_SOFT);
        parla_task_release(prev);
        if (rc) {
            parla_task_release(join);
            return rc;
        }
    }
    parla_graph_retain(g); /* the replay's reference, dropped when its join finishes */
    atomic_store_explicit(&g->replays, k, memory_order_release);
    size_t made = 0, issued = 0;
    while (rc == 0 && made < g->n_nodes) {
        rc = make_task(g, made, &g->scratch[made]);
        made += rc == 0;
    }
    while (rc == 0 && issued < made) {
        rc = issue_task(g, issued, g->scratch, join);
        issued += rc == 0;
    }
    char msg[768];
    if (rc) {
        /* Out of memory (or the runtime is closing): the tasks not submitted are cancelled, so none is
         * left waiting; the join then fails the graph. */
        snprintf(msg, sizeof msg, "replay %s of graph '%s' failed: %s", name, g->name, parla_last_error_message());
        set_failure(g, msg);
        for (size_t i = issued; i < made; i++)
            parla_task_cancel(g->scratch[i]);
    }
    for (size_t i = 0; i < made; i++)
        parla_task_release(g->scratch[i]);
    int src = parla_task_submit(join);
    if (src) {
        /* Only when the runtime is being destroyed: nothing will run the join. */
        if (rc == 0)
            snprintf(msg, sizeof msg, "replay %s of graph '%s' failed: %s", name, g->name, parla_last_error_message());
        parla_task_cancel(join);
        rc = rc ? rc : src;
    }
    pthread_mutex_lock(&g->lock);
    prev = g->last_join;
    g->last_join = join;
    pthread_mutex_unlock(&g->lock);
    parla_task_release(prev);
    if (join_out) {
        parla_task_retain(join);
        *join_out = join;
    }
    return rc ? parla__error(rc, "%s", msg) : 0;
}

int parla_graph_replay(parla_graph_t *g, void *join_user, parla_task_t **join)
{
    if (join)
        *join = NULL;
    if (g == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_replay: graph is NULL");
    pthread_mutex_lock(&g->issue_lock);
    int rc = replay_locked(g, join_user, join);
    pthread_mutex_unlock(&g->issue_lock);
    return rc;
}

int parla_graph_wait(parla_graph_t *g)
{
    if (g == NULL)
        return parla__error(PARLA_EINVAL, "parla_graph_wait: graph is NULL");
    pthread_mutex_lock(&g->lock);
    parla_task_t *join = g->last_join;
    if (join)
        parla_task_retain(join);
    pthread_mutex_unlock(&g->lock);
    int rc = join ? parla_task_wait(join) : 0;
    parla_task_release(join);
    if (rc == 0 || rc == PARLA_EFAILED || rc == PARLA_ECANCELLED) {
        int frc = failure_code(g);
        rc = frc ? frc : rc;
    }
    return rc;
}
