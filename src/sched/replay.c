/*
 * replay.c: replaying a recorded task graph (parla_graph_replay, parla_graph_wait, include/parla.h; the
 * template and its recording are in record.c, sched/replay.h).
 *
 * A replay turns the template into tasks in one call: it creates every node's task with the recorded
 * settings and accesses copied in (nothing is checked again: the options were checked when recorded and the
 * devices do not change), orders them after the tasks already in the data's access histories and leaves
 * them there (one step per store, parla__data_replay_apply), then, in recording order, adds each task's
 * dependencies and the hazard edges between the graph's own tasks, which the first replay resolved once
 * (parla__data_replay_plan), and submits it. So replays are ordered with each other and with every other
 * task by their data, like spawns, without tracking each access again. "Recording order" puts a task after
 * the tasks it depends on, one recorded later included (an explicit dependency decides the order of two
 * accesses, as for spawned tasks). A graph whose dependencies form a cycle (it cannot finish) replays
 * through the ordinary hazard path, each access added in turn. A join task per replay, with soft edges from every task of the replay and from
 * the join of the replay before, tells when a replay (and all before it) has finished and whether one of
 * its tasks did not end DONE; the first such failure fails the graph.
 */
#include "sched/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void parla__sched_graph_join_finished(parla_task_t *join)
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
 * after, before the join. The edge comes from t's replay pool (t is freed after it). Its reference to the
 * join and the join's pending count were taken for all the replay's tasks at once (replay_locked). */
static int join_edge(parla_task_t *join, parla_task_t *t)
{
    parla__graph_edge_t *e;
    if (!atomic_exchange_explicit(&t->first_edge_used, true, memory_order_relaxed)) {
        e = &t->first_edge;
        e->flags = PARLA__EDGE_SOFT;
    } else if ((e = parla__graph_pool_edge(t->pool)) != NULL) {
        e->flags |= PARLA__EDGE_SOFT;
    } else {
        return PARLA_ENOMEM;
    }
    e->succ = join;
    parla__graph_edge_push(t, e);
    return 0;
}

/* Node i's part of the template's copy (pool_home_t): its options, accesses and name. */
static parla__graph_option_t *copy_options(const parla_graph_t *g, char *copy, size_t i)
{
    return (parla__graph_option_t *)(void *)(copy + g->nodes[i].copy_off);
}

static parla__graph_access_t *copy_accesses(const parla_graph_t *g, char *copy, size_t i)
{
    return (parla__graph_access_t *)(void *)(copy_options(g, copy, i) + g->nodes[i].n_options);
}

static char *copy_name(const parla_graph_t *g, char *copy, size_t i)
{
    return (char *)(copy_accesses(g, copy, i) + g->nodes[i].n_accesses);
}

/* Where each node's part begins in the template's copy, and its size (at the freeze). */
static void copy_layout(parla_graph_t *g)
{
    size_t off = 0;
    for (size_t i = 0; i < g->n_nodes; i++) {
        node_t *nd = &g->nodes[i];
        nd->copy_off = off;
        off += (size_t)nd->n_options * sizeof(parla__graph_option_t) +
               (size_t)nd->n_accesses * sizeof(parla__graph_access_t) + strlen(nd->name) + 1;
        off = (off + 15) & ~(size_t)15;
    }
    g->copy_size = off ? off : 1;
}

/* Creates node i's task for a replay with the recorded settings, from the replay's pool (*out is set even
 * when this fails: the task was taken from the pool). Its name, and with a plan its placement options and
 * access list, are the template's copy (pool_home_t). */
static int make_task(parla_graph_t *g, parla__graph_pool_t *pool, size_t i, parla_task_t **out)
{
    const node_t *nd = &g->nodes[i];
    parla_task_t *t = parla__graph_pool_task(pool, i, nd->fn, nd->arg, nd->copy_name);
    *out = t;
    t->user = nd->user;
    t->level = nd->level;
    t->vcus = nd->vcus;
    t->memory = nd->memory;
    if (nd->ext_slot >= 0) {
        /* What the task's data preparation reads (its hazards are the plan's); the data references end
         * with the task, as a spawned task's. */
        parla__graph_task_ext_t *x = parla__graph_pool_ext(pool, (size_t)nd->ext_slot, t);
        x->accesses = nd->copy_accesses;
        x->n_accesses = x->cap_accesses = nd->n_accesses;
        for (int k = 0; k < nd->n_accesses; k++)
            parla_data_retain(nd->accesses[k].data);
        x->options = nd->copy_options;
        x->n_options = x->cap_options = nd->n_options;
        return 0;
    }
    if (nd->n_options) {
        /* Without a plan (a dependency cycle) the accesses are added one by one: an ext part of its own. */
        parla__graph_task_ext_t *x = parla__graph_task_ext(t);
        parla__graph_option_t *o = x ? parla__alloc(g->rt, (size_t)nd->n_options * sizeof *o) : NULL;
        if (o == NULL) {
            parla_task_release(t);
            return parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot create task %s", g->name, nd->name);
        }
        memcpy(o, nd->options, (size_t)nd->n_options * sizeof *o);
        x->options = o;
        x->n_options = x->cap_options = nd->n_options;
    }
    return 0;
}

/* A replay pool's tasks have all been freed: it waits for the next replay of its graph, unless the graph is
 * gone or enough wait (and under AddressSanitizer, so that a use after free stays visible). Any thread. */
static void pool_idle(parla__graph_pool_t *p)
{
    pool_home_t *home = p->owner;
#if !defined(__SANITIZE_ADDRESS__)
    pthread_mutex_lock(&home->lock);
    if (home->open && home->n_idle < 4) {
        p->next = home->idle;
        home->idle = p;
        home->n_idle++;
        p = NULL;
    }
    pthread_mutex_unlock(&home->lock);
#endif
    parla__graph_pool_free(p);
    parla__sched_pool_home_release(home); /* the pool's reference */
}

/* A pool for one replay (an idle one, or a new one), or NULL when out of memory (message set). */
static parla__graph_pool_t *take_pool(parla_graph_t *g)
{
    pool_home_t *home = g->home;
    pthread_mutex_lock(&home->lock);
    parla__graph_pool_t *p = home->idle;
    if (p) {
        home->idle = p->next;
        home->n_idle--;
    }
    pthread_mutex_unlock(&home->lock);
    if (p == NULL && (p = parla__graph_pool_create(g->rt, g->n_nodes, g->n_exts)) == NULL)
        parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate its tasks", g->name);
    return p;
}

/* Adds node i's dependencies and accesses to its replay task t (tasks: the replay's), joins it to join
 * (*joined counts it) and submits it. The join's edge comes after the accesses: a task with no successor yet
 * needs no search for a dependency cycle when its hazard edges are added. */
static int issue_task(parla_graph_t *g, size_t i, parla_task_t *const *tasks, parla_task_t *join, size_t *joined)
{
    const node_t *nd = &g->nodes[i];
    parla_task_t *t = tasks[i];
    int rc = 0;
    for (int k = 0; rc == 0 && k < nd->n_deps; k++)
        rc = parla__graph_add_edge_issuing(t, tasks[nd->deps[k]], 0);
    for (int k = 0; rc == 0 && k < nd->n_externals; k++)
        rc = parla__graph_add_edge_issuing(t, nd->externals[k], 0);
    if (g->plan) {
        const parla__data_replay_edge_t *edges = g->plan_edges;
        for (size_t k = g->plan_start[i]; rc == 0 && k < g->plan_start[i + 1]; k++)
            rc = parla__graph_add_edge_issuing(t, tasks[edges[k].pred], edges[k].flags);
    } else {
        for (int k = 0; rc == 0 && k < nd->n_accesses; k++)
            rc = parla_task_add_access_at(t, nd->accesses[k].data, (parla_access_mode_t)nd->accesses[k].mode,
                                          nd->accesses[k].slot);
    }
    if (rc == 0 && (rc = join_edge(join, t)) == 0)
        ++*joined;
    if (rc)
        return rc == PARLA_ENOMEM ? parla__error(rc, "replay of graph '%s': task %s: out of memory", g->name,
                                                 nd->name)
                                  : rc;
    /* The checks of parla_task_submit that hold for all the replay's tasks: the node has a body (recording
     * refuses one without), and creating the join found the runtime neither destroyed nor forked. */
    rc = parla__graph_task_submit_checked(t);
    /* Infeasible needs fail the task (it is submitted): its join reports it. */
    return rc == PARLA_ERESOURCE ? 0 : rc;
}

/* g->order: the nodes in recording order, except that a node comes after the nodes it depends on (one
 * recorded later included: an explicit dependency decides, as for spawned tasks). 1 when the dependencies
 * form a cycle (no such order), 0, or PARLA_ENOMEM. */
static int order_nodes(parla_graph_t *g)
{
    size_t n = g->n_nodes;
    g->order = parla__alloc(g->rt, (n ? n : 1) * sizeof *g->order);
    unsigned char *mark = parla__calloc(g->rt, n ? n : 1, 1); /* 1: on the path, 2: placed */
    size_t *stack = parla__alloc(g->rt, (n ? n : 1) * sizeof *stack), *next = parla__calloc(g->rt, n ? n : 1, sizeof *next);
    int rc = g->order && mark && stack && next ? 0 : PARLA_ENOMEM;
    size_t placed = 0;
    for (size_t root = 0; rc == 0 && root < n; root++) {
        if (mark[root])
            continue;
        size_t depth = 0;
        stack[depth++] = root;
        mark[root] = 1;
        while (depth && rc == 0) {
            size_t i = stack[depth - 1];
            if (next[i] < (size_t)g->nodes[i].n_deps) {
                size_t d = g->nodes[i].deps[next[i]++];
                if (mark[d] == 1)
                    rc = 1; /* a cycle */
                else if (mark[d] == 0) {
                    mark[d] = 1;
                    stack[depth++] = d;
                }
            } else {
                mark[i] = 2;
                g->order[placed++] = i;
                depth--;
            }
        }
    }
    parla__free(mark);
    parla__free(stack);
    parla__free(next);
    if (rc) {
        parla__free(g->order);
        g->order = NULL;
    }
    return rc;
}

/* The data plan of the template (g->plan, g->plan_start, g->order), unless its dependencies form a cycle. */
static int plan(parla_graph_t *g)
{
    int rc = order_nodes(g);
    if (rc == 1)
        return 0;
    if (rc)
        return parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it", g->name);
    size_t n_acc = 0;
    for (size_t i = 0; i < g->n_nodes; i++)
        n_acc += (size_t)g->nodes[i].n_accesses;
    parla__data_replay_access_t *acc = parla__alloc(g->rt, (n_acc ? n_acc : 1) * sizeof *acc);
    g->plan_start = parla__calloc(g->rt, g->n_nodes + 1, sizeof *g->plan_start);
    rc = acc && g->plan_start ? 0 : parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it",
                                                 g->name);
    size_t m = 0;
    for (size_t pos = 0; rc == 0 && pos < g->n_nodes; pos++)
        for (size_t i = g->order[pos], k = 0; k < (size_t)g->nodes[i].n_accesses; k++)
            acc[m++] = (parla__data_replay_access_t){
                .node = i, .data = g->nodes[i].accesses[k].data, .mode = g->nodes[i].accesses[k].mode};
    if (rc == 0)
        rc = parla__data_replay_plan(g->rt, acc, n_acc, &g->plan);
    parla__free(acc);
    if (rc) {
        parla__free(g->plan_start);
        parla__free(g->order);
        g->plan_start = NULL;
        g->order = NULL;
        return rc;
    }
    /* The plan's edges that replays add, sorted by node: without those to a task the node depends on
     * explicitly (that hard edge says more already), so that a replay compares nothing per edge. */
    size_t n_edges, kept = 0;
    const parla__data_replay_edge_t *edges = parla__data_replay_edges(g->plan, &n_edges);
    g->plan_edges = parla__alloc(g->rt, (n_edges ? n_edges : 1) * sizeof *g->plan_edges);
    if (g->plan_edges == NULL) {
        parla__data_replay_free(g->plan);
        parla__free(g->plan_start);
        parla__free(g->order);
        g->plan = NULL;
        g->plan_start = NULL;
        g->order = NULL;
        return parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it", g->name);
    }
    for (size_t k = 0; k < n_edges; k++) {
        const node_t *nd = &g->nodes[edges[k].node];
        bool explicit_dep = false;
        for (int j = 0; j < nd->n_deps && !explicit_dep; j++)
            explicit_dep = nd->deps[j] == edges[k].pred;
        if (explicit_dep)
            continue;
        g->plan_edges[kept++] = edges[k];
        g->plan_start[edges[k].node + 1]++;
    }
    for (size_t i = 0; i < g->n_nodes; i++)
        g->plan_start[i + 1] += g->plan_start[i];
    return 0;
}

/* The first replay: the recorded tasks are no longer needed to tell nodes apart. */
static int freeze(parla_graph_t *g)
{
    g->scratch = parla__alloc(g->rt, (g->n_nodes ? g->n_nodes : 1) * sizeof *g->scratch);
    if (g->scratch == NULL)
        return parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it", g->name);
    int rc = parla__sched_graph_link_forward(g);
    char *copy = NULL;
    if (rc == 0) {
        copy_layout(g);
        if ((copy = parla__alloc(g->rt, g->copy_size)) == NULL)
            rc = parla__error(PARLA_ENOMEM, "replay of graph '%s': cannot allocate it", g->name);
    }
    if (rc == 0)
        rc = plan(g);
    if (rc) {
        parla__free(copy);
        parla__free(g->scratch);
        g->scratch = NULL;
        return rc;
    }
    g->n_exts = 0;
    for (size_t i = 0; i < g->n_nodes; i++) {
        node_t *nd = &g->nodes[i];
        nd->ext_slot = g->plan && (nd->n_accesses || nd->n_options) ? (ptrdiff_t)g->n_exts++ : -1;
        if (nd->n_options)
            memcpy(copy_options(g, copy, i), nd->options, (size_t)nd->n_options * sizeof *nd->options);
        if (nd->n_accesses)
            memcpy(copy_accesses(g, copy, i), nd->accesses, (size_t)nd->n_accesses * sizeof *nd->accesses);
        strcpy(copy_name(g, copy, i), nd->name);
        nd->copy_options = copy_options(g, copy, i);
        nd->copy_accesses = copy_accesses(g, copy, i);
        nd->copy_name = copy_name(g, copy, i);
    }
    g->home->copy = copy;
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
        rc = parla__graph_add_edge(join, prev, PARLA__EDGE_SOFT);
        parla_task_release(prev);
        if (rc) {
            parla_task_release(join);
            return rc;
        }
    }
    parla__graph_pool_t *pool = take_pool(g);
    if (pool == NULL) {
        parla_task_release(join);
        return PARLA_ENOMEM;
    }
    atomic_fetch_add_explicit(&g->home->refs, 1, memory_order_relaxed); /* the pool's, dropped when it is idle */
    parla__graph_pool_begin(pool, pool_idle, g->home);
    parla_graph_retain(g); /* the replay's reference, dropped when its join finishes */
    atomic_store_explicit(&g->replays, k, memory_order_release);
    size_t made = 0, issued = 0, taken = 0;
    while (rc == 0 && made < g->n_nodes) {
        rc = make_task(g, pool, made, &g->scratch[made]);
        taken++;
        made += rc == 0;
    }
    if (rc == 0 && g->plan)
        rc = parla__data_replay_apply(g->plan, g->scratch);
    /* The join's references and pending counts for the edges of the tasks made (join_edge), at once; those
     * of the tasks not joined go again below. */
    size_t joined = 0;
    atomic_fetch_add_explicit(&join->refs, (int32_t)made, memory_order_relaxed);
    atomic_fetch_add_explicit(&join->pending, (int32_t)made, memory_order_relaxed);
    /* In the plan's order (every node after its dependencies), else in recording order. */
    while (rc == 0 && issued < made) {
        rc = issue_task(g, g->plan ? g->order[issued] : issued, g->scratch, join, &joined);
        issued += rc == 0;
    }
    char msg[768];
    if (rc) {
        /* Out of memory (or the runtime is closing): the tasks not submitted are cancelled, so none is
         * left waiting; the join then fails the graph. */
        snprintf(msg, sizeof msg, "replay %s of graph '%s' failed: %s", name, g->name, parla_last_error_message());
        set_failure(g, msg);
        for (size_t i = issued; i < made; i++)
            parla_task_cancel(g->scratch[g->plan && made == g->n_nodes ? g->order[i] : i]);
    }
    if (joined < made) {
        /* The join is not submitted yet (its hold) and this replay holds it: neither reaches zero. */
        atomic_fetch_sub_explicit(&join->pending, (int32_t)(made - joined), memory_order_relaxed);
        atomic_fetch_sub_explicit(&join->refs, (int32_t)(made - joined), memory_order_relaxed);
    }
    for (size_t i = 0; i < made; i++)
        parla_task_release(g->scratch[i]);
    parla__graph_pool_end(pool, taken);
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
