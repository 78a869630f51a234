/* pool.c: replay pools (graph.h): the memory of one replay of a recorded graph (task objects, ext parts,
 * edges), reused by a later replay once every task of this one has been freed. */
#include "graph/graph.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

enum { CHUNK_EDGES = 1024 };

struct parla__graph_edge_chunk {
    parla__graph_edge_chunk_t *next;
    parla__graph_edge_t edges[CHUNK_EDGES];
};

/* The pool this thread issues a replay from (between begin and end). */
static _Thread_local parla__graph_pool_t *issuing;

parla__graph_pool_t *parla__graph_pool_issuing(void)
{
    return issuing;
}

parla__graph_pool_t *parla__graph_pool_create(parla_runtime_t *rt, size_t n_tasks, size_t n_exts)
{
    parla__graph_pool_t *p = parla__calloc(rt, 1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->rt = rt;
    p->n_tasks = n_tasks;
    p->n_exts = n_exts;
    p->tasks = parla__alloc(rt, (n_tasks ? n_tasks : 1) * sizeof *p->tasks);
    p->exts = parla__alloc(rt, (n_exts ? n_exts : 1) * sizeof *p->exts);
    if (p->tasks == NULL || p->exts == NULL) {
        parla__graph_pool_free(p);
        return NULL;
    }
    return p;
}

void parla__graph_pool_free(parla__graph_pool_t *p)
{
    if (p == NULL)
        return;
    for (parla__graph_edge_chunk_t *c = p->chunks; c;) {
        parla__graph_edge_chunk_t *next = c->next;
        UNPOISON(c, sizeof *c);
        parla__free(c);
        c = next;
    }
    UNPOISON(p->tasks, (p->n_tasks ? p->n_tasks : 1) * sizeof *p->tasks);
    UNPOISON(p->exts, (p->n_exts ? p->n_exts : 1) * sizeof *p->exts);
    parla__free(p->tasks);
    parla__free(p->exts);
    parla__free(p);
}

void parla__graph_pool_begin(parla__graph_pool_t *p, void (*idle)(parla__graph_pool_t *), void *owner)
{
    p->idle = idle;
    p->owner = owner;
    p->chunk = p->chunks;
    p->chunk_used = 0;
    atomic_store_explicit(&p->refs, (long)p->n_tasks + 1, memory_order_relaxed);
    UNPOISON(p->tasks, (p->n_tasks ? p->n_tasks : 1) * sizeof *p->tasks);
    UNPOISON(p->exts, (p->n_exts ? p->n_exts : 1) * sizeof *p->exts);
    for (parla__graph_edge_chunk_t *c = p->chunks; c; c = c->next)
        UNPOISON(c->edges, sizeof c->edges);
    issuing = p;
}

static void drop(parla__graph_pool_t *p, long n)
{
    if (n && atomic_fetch_sub_explicit(&p->refs, n, memory_order_acq_rel) == n)
        p->idle(p);
}

void parla__graph_pool_end(parla__graph_pool_t *p, size_t made)
{
    issuing = NULL;
    for (size_t i = made; i < p->n_tasks; i++)
        POISON(&p->tasks[i], sizeof p->tasks[i]);
    drop(p, (long)(p->n_tasks - made) + 1);
}

parla_task_t *parla__graph_pool_task(parla__graph_pool_t *p, size_t i, parla_task_fn fn, void *arg,
                                     const char *name)
{
    parla_task_t *t = &p->tasks[i];
    parla__graph_task_init(p->rt, t, fn, arg);
    t->pool = p;
    atomic_store_explicit(&t->name, (char *)name, memory_order_relaxed);
    return t;
}

parla__graph_task_ext_t *parla__graph_pool_ext(parla__graph_pool_t *p, size_t j, parla_task_t *t)
{
    parla__graph_task_ext_t *x = &p->exts[j];
    memset(x, 0, sizeof *x);
    x->pooled = true;
    t->ext = x;
    return x;
}

parla__graph_edge_t *parla__graph_pool_edge(parla__graph_pool_t *p)
{
    if (p->chunk == NULL || p->chunk_used == CHUNK_EDGES) {
        parla__graph_edge_chunk_t *c = p->chunk ? p->chunk->next : p->chunks;
        if (c == NULL) {
            if ((c = parla__alloc(p->rt, sizeof *c)) == NULL)
                return NULL;
            c->next = NULL;
            if (p->chunk)
                p->chunk->next = c;
            else
                p->chunks = c;
        }
        p->chunk = c;
        p->chunk_used = 0;
    }
    parla__graph_edge_t *e = &p->chunk->edges[p->chunk_used++];
    e->flags = PARLA__EDGE_POOLED;
    return e;
}

void parla__graph_pool_task_freed(parla__graph_pool_t *p, parla_task_t *t)
{
    POISON(t, sizeof *t);
    drop(p, 1);
}
