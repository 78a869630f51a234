/* trace/analysis.c: from a sink's events to the graph the writers draw:
 * gather (events into segments, edges and device items), merge_segments
 * (tasks from their body runs, their names, one edge per pair) and
 * critical_path. Runs on the exporting thread once no emitter runs. */
#include "trace/analysis.h"

#include <string.h>

static int cmp_seg(const void *a, const void *b)
{
    const tseg_t *x = a, *y = b;
    int c = parla__trace_cmp_u64(x->serial, y->serial);
    return c ? c : parla__trace_cmp_u64(x->start, y->start);
}

static int cmp_edge(const void *a, const void *b)
{
    const tedge_t *x = a, *y = b;
    int c = parla__trace_cmp_u64(x->succ, y->succ);
    if (c == 0)
        c = parla__trace_cmp_u64(x->pred, y->pred);
    return c ? c : (x->kind > y->kind) - (x->kind < y->kind);
}

static int cmp_sedge(const void *a, const void *b)
{
    const sedge_t *x = a, *y = b;
    return (x->to > y->to) - (x->to < y->to);
}

/* Segment indices by start (ties: the shorter first, then by index); arg: the segments (qsort_r). */
static int cmp_seg_start(const void *a, const void *b, void *arg)
{
    const tseg_t *segs = arg;
    const tseg_t *x = &segs[*(const size_t *)a], *y = &segs[*(const size_t *)b];
    int c = parla__trace_cmp_u64(x->start, y->start);
    if (c == 0)
        c = parla__trace_cmp_u64(x->end, y->end);
    return c ? c : parla__trace_cmp_u64(*(const size_t *)a, *(const size_t *)b);
}


tinfo_t *parla__trace_find(const tgraph_t *g, uint64_t serial)
{
    size_t lo = 0, hi = g->n_tasks;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g->tasks[mid].serial < serial)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g->n_tasks && g->tasks[lo].serial == serial ? &g->tasks[lo] : NULL;
}

/* The segment an edge leads to: the successor's first, or for an await the
 * first that starts after the awaited task has ended (the resumed body). */
size_t parla__trace_edge_target(const tseg_t *segs, const tinfo_t *p, const tinfo_t *s, int kind)
{
    if (kind == PARLA__EK_AWAIT)
        for (size_t k = s->seg0 + 1; k < s->seg0 + s->nseg; k++)
            if (segs[k].start >= p->end)
                return k;
    return kind == PARLA__EK_AWAIT ? s->seg0 + s->nseg - 1 : s->seg0;
}



void parla__trace_graph_free(tgraph_t *g)
{
    free(g->segs);
    free(g->edges);
    free(g->items);
    free(g->tasks);
}

static int gather_one(const parla__trace_tev_t *e, void *arg)
{
    tgraph_t *g = arg;
    if (e->kind == PARLA__TEV_TASK) {
        if (g->n_segs == g->cap_segs && parla__trace_grow((void **)&g->segs, &g->cap_segs, sizeof *g->segs) != 0)
            return PARLA_ENOMEM;
        tseg_t *s = &g->segs[g->n_segs++];
        memset(s, 0, sizeof *s);
        s->serial = e->serial;
        s->start = e->ts - g->t0;
        s->end = e->b ? e->b - g->t0 : s->start;
        s->worker = e->worker;
        s->device = e->device;
        s->state = (int)e->a;
        s->scores = (e->flags & PARLA__TEVF_SCORES) != 0;
        memcpy(s->f, e->f, sizeof s->f);
        s->prev = -1;
    } else if (e->kind == PARLA__TEV_EDGE) {
        if (g->n_edges == g->cap_edges && parla__trace_grow((void **)&g->edges, &g->cap_edges, sizeof *g->edges) != 0)
            return PARLA_ENOMEM;
        g->edges[g->n_edges++] = (tedge_t){e->a, e->serial, (int)e->b};
    } else if (e->kind == PARLA__TEV_COPY || e->kind == PARLA__TEV_WORK) {
        if (g->n_items == g->cap_items && parla__trace_grow((void **)&g->items, &g->cap_items, sizeof *g->items) != 0)
            return PARLA_ENOMEM;
        g->items[g->n_items++] = (ditem_t){e->ts - g->t0, e->b > e->ts ? e->b - g->t0 : e->ts - g->t0, e->device,
                                           0, e, 0};
        g->n_copies += e->kind == PARLA__TEV_COPY;
    }
    return 0;
}

/* Body runs, edges, copies and device work from the sink's events. */
int parla__trace_gather(const parla__trace_t *tr, tgraph_t *g)
{
    g->cap_segs = g->cap_edges = g->cap_items = 1024;
    g->segs = malloc(g->cap_segs * sizeof *g->segs);
    g->edges = malloc(g->cap_edges * sizeof *g->edges);
    g->items = malloc(g->cap_items * sizeof *g->items);
    if (!g->segs || !g->edges || !g->items)
        return PARLA_ENOMEM;
    return parla__trace_each_event(tr, gather_one, g);
}

static void name_one(uint64_t serial, const char *name, void *arg)
{
    tgraph_t *g = arg;
    tinfo_t *t = parla__trace_find(g, serial);
    if (t)
        t->name = name;
}

/* Tasks from their segments (sorted by task, then start), their names, and
 * one edge per (predecessor, successor). */
int parla__trace_merge_segments(tgraph_t *g)
{
    qsort(g->segs, g->n_segs, sizeof *g->segs, cmp_seg);
    g->tasks = malloc((g->n_segs ? g->n_segs : 1) * sizeof *g->tasks);
    if (!g->tasks)
        return PARLA_ENOMEM;
    uint64_t first_start = UINT64_MAX, last_end = 0;
    for (size_t i = 0; i < g->n_segs; i++) {
        tseg_t *s = &g->segs[i];
        if (g->n_tasks == 0 || g->tasks[g->n_tasks - 1].serial != s->serial) {
            tinfo_t *t = &g->tasks[g->n_tasks++];
            memset(t, 0, sizeof *t);
            t->serial = s->serial;
            t->name = "";
            t->start = s->start;
            t->seg0 = i;
            t->crit_prev = UINT64_MAX;
        }
        tinfo_t *t = &g->tasks[g->n_tasks - 1];
        t->nseg++;
        if (s->end > t->end)
            t->end = s->end;
        t->worker = s->worker;
        t->device = s->device;
        t->state = s->state;
        s->task = g->n_tasks - 1;
        if (s->start < first_start)
            first_start = s->start;
        if (s->end > last_end)
            last_end = s->end;
    }
    g->span = g->n_segs ? last_end - first_start : 0;
    parla__trace_each_name(g->tr, name_one, g);
    /* A dependency given both explicitly and by a data hazard is one edge (the
     * lowest kind: explicit first). */
    qsort(g->edges, g->n_edges, sizeof *g->edges, cmp_edge);
    if (g->n_edges > 1) {
        size_t u = 1;
        for (size_t e = 1; e < g->n_edges; e++)
            if (g->edges[e].pred != g->edges[u - 1].pred || g->edges[e].succ != g->edges[u - 1].succ)
                g->edges[u++] = g->edges[e];
        g->n_edges = u;
    }
    return 0;
}

/* Critical path: the longest chain of body time through the segment graph (a
 * task's segments in turn, dependencies from a task's last segment to a
 * successor's first, awaits to the segment that resumed). A segment starts
 * after every segment before it in the graph has ended, so start order is a
 * topological order. Marks the tasks on it and each one's predecessor there. */
int parla__trace_critical_path(tgraph_t *g)
{
    tseg_t *segs = g->segs;
    size_t n_segs = g->n_segs, n_sedges = 0;
    sedge_t *sedges = malloc((g->n_edges + n_segs + 1) * sizeof *sedges);
    size_t *order = malloc((n_segs ? n_segs : 1) * sizeof *order);
    if (!sedges || !order) {
        free(sedges);
        free(order);
        return PARLA_ENOMEM;
    }
    for (size_t e = 0; e < g->n_edges; e++) {
        tinfo_t *p = parla__trace_find(g, g->edges[e].pred), *s = parla__trace_find(g, g->edges[e].succ);
        if (p && s)
            sedges[n_sedges++] = (sedge_t){parla__trace_edge_target(segs, p, s, g->edges[e].kind),
                                           p->seg0 + p->nseg - 1};
    }
    for (size_t i = 1; i < n_segs; i++)
        if (segs[i].serial == segs[i - 1].serial)
            sedges[n_sedges++] = (sedge_t){i, i - 1};
    qsort(sedges, n_sedges, sizeof *sedges, cmp_sedge);
    for (size_t i = 0; i < n_segs; i++)
        order[i] = i;
    qsort_r(order, n_segs, sizeof *order, cmp_seg_start, segs);
    int64_t last = -1;
    for (size_t k = 0; k < n_segs; k++) {
        tseg_t *s = &segs[order[k]];
        double own = (double)(s->end - s->start) * 1e-9;
        s->path = own;
        size_t lo = 0, hi = n_sedges;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (sedges[mid].to < order[k])
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t e = lo; e < n_sedges && sedges[e].to == order[k]; e++) {
            tseg_t *p = &segs[sedges[e].from];
            if (p->done && p->path + own > s->path) {
                s->path = p->path + own;
                s->prev = (int64_t)sedges[e].from;
            }
        }
        s->done = true;
        if (last < 0 || s->path > segs[last].path)
            last = (int64_t)order[k];
    }
    free(sedges);
    free(order);
    g->crit_last = last;
    g->crit_tasks = 0;
    g->crit_time = last >= 0 ? segs[last].path : 0.0;
    for (int64_t k = last; k >= 0; k = segs[k].prev) {
        tinfo_t *t = &g->tasks[segs[k].task];
        if (!t->critical) {
            t->critical = true;
            g->crit_tasks++;
        }
        int64_t p = segs[k].prev;
        if (p >= 0 && segs[p].task != segs[k].task)
            t->crit_prev = g->tasks[segs[p].task].serial;
    }
    return 0;
}

