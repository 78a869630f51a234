/*
 * sched/replay.h: recorded task graphs (parla_graph_*, include/parla.h), shared by sched/record.c (the
 * template: lifetime, recording) and sched/replay.c (replaying it). Not installed.
 *
 * A graph is a template: one node per recorded task (body, name, priority, resources, placement options,
 * data accesses, dependencies on other nodes and on outside tasks). Recording adds nodes (parla_graph_add_*,
 * or parla_graph_record from a task made with the ordinary API); the first replay freezes the template.
 *
 * Locks: graph->issue_lock serialises replays and is held across the engine calls of one replay (it
 * comes before every engine lock); graph->lock is a leaf (the failure message and the latest join).
 */
#ifndef PARLA_SCHED_REPLAY_H
#define PARLA_SCHED_REPLAY_H

#include "sched/sched.h"

typedef struct node {
    char *name;
    parla_task_fn fn;
    void *arg;
    void *user;
    int8_t level;
    int64_t vcus;
    uint64_t memory;
    parla__graph_option_t *options;
    int n_options, cap_options;
    parla__graph_access_t *accesses; /* each holds a reference to its data */
    int n_accesses, cap_accesses;
    size_t *deps; /* node indices */
    int n_deps, cap_deps;
    parla_task_t **externals; /* outside tasks, each held */
    int n_externals, cap_externals;
    ptrdiff_t ext_slot; /* once frozen with a plan: its tasks' ext part in a replay pool, or -1 (none) */
    size_t copy_off;    /* once frozen: where its part of the template's copy begins (pool_home_t) */
    /* Once frozen: its options, accesses and name in that copy (what its replayed tasks use). */
    parla__graph_option_t *copy_options;
    parla__graph_access_t *copy_accesses;
    char *copy_name;
} node_t;

/* The replay pools (graph/graph.h) of a graph: those whose tasks have all been freed wait here for the next
 * replays. It also keeps a copy of the template's names, placement options and access lists (per node: the
 * options, then the accesses, then the name, where node->copy_off says; made at the freeze), which the
 * replayed tasks use as theirs: the pools and the copy do not hold the graph, whose template holds the
 * data, whose access history holds the replayed tasks. Shared by the graph and the pools in use (the last
 * one frees it). */
typedef struct pool_home {
    pthread_mutex_t lock; /* a leaf: protects open and the idle list */
    _Atomic long refs;    /* the graph's, and one per pool in use */
    bool open;            /* the graph is alive */
    parla__graph_pool_t *idle; /* a list by next */
    int n_idle;
    char *copy;           /* the template's copy, or NULL before the freeze */
} pool_home_t;

/* Drops a reference to home (the last frees it). */
void parla__sched_pool_home_release(pool_home_t *home);

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
    /* Made by the first replay, unless the dependencies form a cycle (then every replay adds its accesses
     * one by one, as spawning does): the data hazards between the graph's tasks, resolved once
     * (data/data.h), where each node's edges begin in the plan's list (n_nodes + 1 entries), and the order
     * replays issue the nodes in (recording order, each node after its dependencies). plan_edges: the
     * plan's edges that replays add (sorted by node; none to a task the node depends on explicitly), node
     * i's from plan_start[i] to plan_start[i + 1]. */
    parla__data_replay_t *plan;
    parla__data_replay_edge_t *plan_edges;
    size_t *plan_start;
    size_t *order;
    size_t n_exts;              /* nodes with an ext_slot */
    size_t copy_size;           /* bytes of the template's copy (pool_home_t) */
    pool_home_t *home;          /* its replay pools */
    pthread_mutex_t lock;       /* a leaf: protects last_join and failure */
    parla_task_t *last_join;    /* held */
    char *failure;              /* the first failure's message, or NULL */
    _Atomic uint64_t replays;
};

/* A copy of name (at most 255 bytes kept), allocated with parla__alloc, or NULL when out of memory. */
char *parla__sched_copy_name(parla_runtime_t *rt, const char *name);
/* Before the first replay (recording map still there): a node's outside dependency on a task recorded in
 * the graph after it (spawned later in the capture) becomes a dependency on that task's node, as one on a
 * task recorded before it already is. 0 or PARLA_ENOMEM (message set). */
int parla__sched_graph_link_forward(parla_graph_t *g);

#endif
