/* trace/analysis.h: the trace's analysis, shared by trace/analysis.c (which
 * builds it) and trace/export.c (which writes it out); private to trace/.
 * A tgraph_t holds a sink's body runs (segments), tasks, edges and device
 * items, times in ns since the sink started. */
#ifndef PARLA_TRACE_ANALYSIS_H
#define PARLA_TRACE_ANALYSIS_H

#include <stdlib.h>

#include "trace/trace.h"

/* One run of a task's body: a task that suspends (awaits) has several. */
typedef struct tseg {
    uint64_t serial;
    uint64_t start, end; /* ns since t0 */
    int worker, device, state;
    bool scores; /* f holds the mapping's scores */
    float f[4];
    size_t task;  /* index in the task table */
    double path;  /* longest chain of body time ending with this segment, seconds */
    int64_t prev; /* the segment before it on that chain, or -1 */
    bool done;    /* path computed */
} tseg_t;

/* One task: its segments are segs[seg0 .. seg0 + nseg), in start order. */
typedef struct tinfo {
    uint64_t serial;
    const char *name;
    uint64_t start, end; /* first segment's start, last one's end */
    int worker, device, state; /* of the last segment (the final state) */
    size_t seg0, nseg;
    bool critical;
    uint64_t crit_prev; /* the task before it on the critical path, or UINT64_MAX */
} tinfo_t;

typedef struct tedge {
    uint64_t pred, succ;
    int kind; /* enum parla__trace_edge_kind */
} tedge_t;

/* An edge of the segment graph: from's end precedes to's start. */
typedef struct sedge {
    size_t to, from;
} sedge_t;

/* Something drawn on a device track: a task segment, device work or a copy. */
typedef struct ditem {
    uint64_t start, end;
    int device, lane;
    const parla__trace_tev_t *ev; /* the event (work, copy) or NULL for a segment */
    size_t seg;
} ditem_t;

/* What the steps build and the writers read. */
typedef struct tgraph {
    const parla__trace_t *tr;
    const parla__trace_meta_t *meta;
    uint64_t t0;
    tseg_t *segs;
    size_t n_segs, cap_segs;
    tedge_t *edges;
    size_t n_edges, cap_edges;
    ditem_t *items; /* copies and device work; write_chrome adds the segments */
    size_t n_items, cap_items;
    size_t n_copies;
    tinfo_t *tasks; /* by serial */
    size_t n_tasks;
    uint64_t span;    /* first segment's start to last one's end, ns */
    int64_t crit_last; /* the critical path's last segment, or -1 */
    size_t crit_tasks;
    double crit_time; /* body time along it, seconds */
} tgraph_t;

/* Doubles the capacity of a malloc'ed array; returns 0 or PARLA_ENOMEM (the array is unchanged). */
static inline int parla__trace_grow(void **array, size_t *cap, size_t elem)
{
    void *n = realloc(*array, 2 * *cap * elem);
    if (n == NULL)
        return PARLA_ENOMEM;
    *array = n;
    *cap *= 2;
    return 0;
}

static inline int parla__trace_cmp_u64(uint64_t x, uint64_t y)
{
    return x < y ? -1 : x > y;
}

/* The steps, in this order; each returns 0 or PARLA_ENOMEM (no message set).
 * gather: segments, edges, copies and device work from tr's events (g zeroed
 * but for tr, meta, t0 and crit_last = -1). merge_segments: segments sorted
 * by task then start, the task table with names and the span, one edge per
 * (predecessor, successor). critical_path: the longest chain of body time,
 * its tasks marked. graph_free frees what they allocated (any time). */
int parla__trace_gather(const parla__trace_t *tr, tgraph_t *g);
int parla__trace_merge_segments(tgraph_t *g);
int parla__trace_critical_path(tgraph_t *g);
void parla__trace_graph_free(tgraph_t *g);

/* The task of that serial in g's task table, or NULL. */
tinfo_t *parla__trace_find(const tgraph_t *g, uint64_t serial);
/* The segment an edge of kind from task p leads to in task s. */
size_t parla__trace_edge_target(const tseg_t *segs, const tinfo_t *p, const tinfo_t *s, int kind);

#endif
