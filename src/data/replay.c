/* replay.c: the data hazards of recorded graphs (parla__data_replay_*, data/data.h), resolved once when a
 * graph is first replayed (the plan); data/replay_apply.c applies the plan to the stores' access histories
 * (data/hazards.c) once per store at each replay. */
#include "data/replay_impl.h"

#include <stdlib.h>
#include <string.h>

void parla__data_replay_free(parla__data_replay_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_stores; i++) {
        rp_store_t *st = &p->stores[i];
        for (size_t r = 0; r < st->n_recs; r++) {
            parla__free(st->recs[r].ranges);
            parla__free(st->recs[r].readers);
        }
        parla__free(st->recs);
        parla__free(st->in);
        parla__free(st->cross);
        parla__free(st->written);
        parla__free(st->scratch);
    }
    parla__free(p->stores);
    parla__free(p->edges);
    parla__free(p);
}

const parla__data_replay_edge_t *parla__data_replay_edges(const parla__data_replay_t *p, size_t *n)
{
    *n = p->n_edges;
    return p->edges;
}

/* Room for one more element of a growing array of elements of size bytes. */
static int rp_grow(parla_runtime_t *rt, void **arr, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? 2 * *cap : 4;
    void *a = parla__alloc(rt, c * size);
    if (a == NULL)
        return PARLA_ENOMEM;
    if (n)
        memcpy(a, *arr, n * size);
    parla__free(*arr);
    *arr = a;
    *cap = c;
    return 0;
}

/* Appends [lo, hi) to a sorted list of disjoint pairs whose last pair ends at or before lo. */
static int rp_add_range(parla_runtime_t *rt, uint64_t **ranges, size_t *n, size_t *cap, uint64_t lo, uint64_t hi)
{
    if (*n && (*ranges)[2 * *n - 1] == lo) {
        (*ranges)[2 * *n - 1] = hi;
        return 0;
    }
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 2;
        uint64_t *a = parla__alloc(rt, 2 * c * sizeof *a);
        if (a == NULL)
            return PARLA_ENOMEM;
        if (*n)
            memcpy(a, *ranges, 2 * *n * sizeof *a);
        parla__free(*ranges);
        *ranges = a;
        *cap = c;
    }
    (*ranges)[2 * *n] = lo;
    (*ranges)[2 * *n + 1] = hi;
    (*n)++;
    return 0;
}

static int rp_edge(parla__data_replay_t *p, size_t node, size_t pred, bool flow)
{
    if (rp_grow(p->rt, (void **)&p->edges, p->n_edges, &p->cap_edges, sizeof *p->edges))
        return PARLA_ENOMEM;
    p->edges[p->n_edges++] = (parla__data_replay_edge_t){
        .node = node, .pred = pred, .flags = PARLA__EDGE_DATA | (flow ? 0 : PARLA__EDGE_ORDER)};
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_edge(const void *a, const void *b)
{
    const parla__data_replay_edge_t *x = a, *y = b;
    if (x->node != y->node)
        return x->node < y->node ? -1 : 1;
    return x->pred < y->pred ? -1 : x->pred > y->pred;
}

/* The index of the interval [pts[i], pts[i+1]) starting at x (x is one of the n points). */
static size_t rp_point(const uint64_t *pts, size_t n, uint64_t x)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (pts[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* One interval's state while planning: its last writer in the graph (-1: none yet) and its readers since. */
typedef struct rp_cell {
    ptrdiff_t writer;
    size_t *readers;
    size_t n_readers, cap_readers;
} rp_cell_t;

/* The sorted distinct boundaries of the ranges of the n accesses acc[idx[..]] (*pts, *n_pts: the cells
 * between two boundaries are the plan's units), and a cell array with no writer and no readers. 0 or
 * PARLA_ENOMEM (the caller frees what is set). */
static int rp_cells(parla_runtime_t *rt, const parla__data_replay_access_t *acc, const size_t *idx, size_t n,
                    uint64_t **pts_out, size_t *n_pts_out, rp_cell_t **cells_out)
{
    size_t n_pts = 0;
    for (size_t k = 0; k < n; k++)
        n_pts += 2 * acc[idx[k]].data->n_ranges;
    uint64_t *pts = *pts_out = parla__alloc(rt, (n_pts ? n_pts : 1) * sizeof *pts);
    if (pts == NULL)
        return PARLA_ENOMEM;
    n_pts = 0;
    for (size_t k = 0; k < n; k++) {
        const parla_data_t *d = acc[idx[k]].data;
        memcpy(pts + n_pts, d->ranges, 2 * d->n_ranges * sizeof *pts);
        n_pts += 2 * d->n_ranges;
    }
    qsort(pts, n_pts, sizeof *pts, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < n_pts; i++)
        if (u == 0 || pts[u - 1] != pts[i])
            pts[u++] = pts[i];
    *n_pts_out = u;
    size_t n_cells = u ? u - 1 : 0;
    rp_cell_t *cells = *cells_out = parla__calloc(rt, n_cells ? n_cells : 1, sizeof *cells);
    if (cells == NULL)
        return PARLA_ENOMEM;
    for (size_t e = 0; e < n_cells; e++)
        cells[e].writer = -1;
    return 0;
}

/* Walks the accesses in graph order over the cells: the graph's own hazards become edges, each cell ends
 * with its last writer and readers since, and an access touching a cell no earlier access wrote is an
 * in-access of st. 0 or PARLA_ENOMEM. */
static int rp_walk(parla__data_replay_t *p, rp_store_t *st, const parla__data_replay_access_t *acc,
                   const size_t *idx, size_t n, const uint64_t *pts, size_t n_pts, rp_cell_t *cells)
{
    size_t cap_in = 0;
    for (size_t k = 0; k < n; k++) {
        const parla__data_replay_access_t *a = &acc[idx[k]];
        const parla_data_t *d = a->data;
        bool incoming = false, write = (a->mode & PARLA_WRITE) != 0;
        for (size_t r = 0; r < d->n_ranges; r++) {
            size_t e0 = rp_point(pts, n_pts, d->ranges[2 * r]), e1 = rp_point(pts, n_pts, d->ranges[2 * r + 1]);
            for (size_t e = e0; e < e1; e++) {
                rp_cell_t *c = &cells[e];
                if (c->writer < 0)
                    incoming = true;
                else if ((size_t)c->writer != a->node && rp_edge(p, a->node, (size_t)c->writer, a->mode & PARLA_READ))
                    return PARLA_ENOMEM;
                if (write) {
                    for (size_t i = 0; i < c->n_readers; i++)
                        if (c->readers[i] != a->node && rp_edge(p, a->node, c->readers[i], false))
                            return PARLA_ENOMEM;
                    c->writer = (ptrdiff_t)a->node;
                    c->n_readers = 0;
                } else if (c->writer != (ptrdiff_t)a->node &&
                           (c->n_readers == 0 || c->readers[c->n_readers - 1] != a->node)) {
                    if (rp_grow(p->rt, (void **)&c->readers, c->n_readers, &c->cap_readers, sizeof *c->readers))
                        return PARLA_ENOMEM;
                    c->readers[c->n_readers++] = a->node;
                }
            }
        }
        if (incoming) {
            if (rp_grow(p->rt, (void **)&st->in, st->n_in, &cap_in, sizeof *st->in))
                return PARLA_ENOMEM;
            st->in[st->n_in++] = (rp_in_t){.node = a->node, .data = d, .mode = a->mode};
        }
    }
    return 0;
}

/* The records the graph leaves in st's history: cells with equal writer and readers share one; the bytes
 * written (st->written). 0 or PARLA_ENOMEM. */
static int rp_records(parla_runtime_t *rt, rp_store_t *st, const uint64_t *pts, const rp_cell_t *cells,
                      size_t n_cells)
{
    size_t cap_recs = 0, cap_written = 0;
    for (size_t e = 0; e < n_cells; e++) {
        const rp_cell_t *c = &cells[e];
        if (c->writer < 0 && c->n_readers == 0)
            continue;
        if (c->writer >= 0 && rp_add_range(rt, &st->written, &st->n_written, &cap_written, pts[e], pts[e + 1]))
            return PARLA_ENOMEM;
        rp_rec_t *rec = NULL;
        for (size_t j = 0; j < st->n_recs && rec == NULL; j++) {
            rp_rec_t *x = &st->recs[j];
            if (x->writer == c->writer && x->n_readers == c->n_readers &&
                (c->n_readers == 0 || memcmp(x->readers, c->readers, c->n_readers * sizeof *c->readers) == 0))
                rec = x;
        }
        if (rec == NULL) {
            if (rp_grow(rt, (void **)&st->recs, st->n_recs, &cap_recs, sizeof *st->recs))
                return PARLA_ENOMEM;
            rec = &st->recs[st->n_recs];
            memset(rec, 0, sizeof *rec);
            rec->writer = c->writer;
            if (c->n_readers) {
                if ((rec->readers = parla__alloc(rt, c->n_readers * sizeof *rec->readers)) == NULL)
                    return PARLA_ENOMEM;
                memcpy(rec->readers, c->readers, c->n_readers * sizeof *rec->readers);
                rec->n_readers = c->n_readers;
            }
            st->n_recs++;
        }
        if (rp_add_range(rt, &rec->ranges, &rec->n_ranges, &rec->cap_ranges, pts[e], pts[e + 1]))
            return PARLA_ENOMEM;
    }
    return 0;
}

/* The records each in-access meets when the history has the shape the plan leaves (st->cross). 0 or
 * PARLA_ENOMEM. */
static int rp_crossings(parla_runtime_t *rt, rp_store_t *st)
{
    size_t cap_cross = 0;
    for (size_t k = 0; k < st->n_in; k++) {
        const rp_in_t *in = &st->in[k];
        for (size_t j = 0; j < st->n_recs; j++) {
            if (!parla__data_ranges_overlap(in->data->ranges, in->data->n_ranges, st->recs[j].ranges,
                                            st->recs[j].n_ranges))
                continue;
            rp_cross_t *c = NULL;
            for (size_t q = st->n_cross; q-- > 0 && st->cross[q].node == in->node && c == NULL;)
                if (st->cross[q].rec == j)
                    c = &st->cross[q];
            if (c == NULL) {
                if (rp_grow(rt, (void **)&st->cross, st->n_cross, &cap_cross, sizeof *st->cross))
                    return PARLA_ENOMEM;
                c = &st->cross[st->n_cross++];
                *c = (rp_cross_t){.node = in->node, .rec = j, .mode = 0};
            }
            c->mode |= in->mode;
        }
    }
    return 0;
}

/* Plans the accesses of one store (acc[idx[0..n)], in recording order) into st. */
static int rp_plan_store(parla__data_replay_t *p, rp_store_t *st, const parla__data_replay_access_t *acc,
                         const size_t *idx, size_t n)
{
    parla_runtime_t *rt = p->rt;
    uint64_t *pts = NULL;
    size_t n_pts = 0;
    rp_cell_t *cells = NULL;
    int rc = rp_cells(rt, acc, idx, n, &pts, &n_pts, &cells);
    size_t n_cells = n_pts ? n_pts - 1 : 0;
    if (rc == 0)
        rc = rp_walk(p, st, acc, idx, n, pts, n_pts, cells);
    if (rc == 0)
        rc = rp_records(rt, st, pts, cells, n_cells);
    if (rc == 0)
        rc = rp_crossings(rt, st);
    if (rc == 0) {
        st->scratch = parla__calloc(rt, st->n_recs ? st->n_recs : 1, sizeof *st->scratch);
        rc = st->scratch ? 0 : PARLA_ENOMEM;
    }
    for (size_t e = 0; cells && e < n_cells; e++)
        parla__free(cells[e].readers);
    parla__free(cells);
    parla__free(pts);
    return rc;
}

/* An access's store and position: sorted, the accesses of each store in recording order. */
typedef struct rp_key {
    uintptr_t store;
    size_t i;
} rp_key_t;

static int cmp_key(const void *a, const void *b)
{
    const rp_key_t *x = a, *y = b;
    if (x->store != y->store)
        return x->store < y->store ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int parla__data_replay_plan(parla_runtime_t *rt, const parla__data_replay_access_t *acc, size_t n,
                            parla__data_replay_t **out)
{
    *out = NULL;
    parla__data_replay_t *p = parla__calloc(rt, 1, sizeof *p);
    rp_key_t *keys = p ? parla__alloc(rt, (n ? n : 1) * sizeof *keys) : NULL;
    size_t *idx = keys ? parla__alloc(rt, (n ? n : 1) * sizeof *idx) : NULL;
    int rc = idx ? 0 : PARLA_ENOMEM;
    if (rc == 0) {
        p->rt = rt;
        for (size_t i = 0; i < n; i++)
            keys[i] = (rp_key_t){.store = (uintptr_t)acc[i].data->store, .i = i};
        qsort(keys, n, sizeof *keys, cmp_key);
        size_t n_stores = 0;
        for (size_t k = 0; k < n; k++) {
            idx[k] = keys[k].i;
            n_stores += k == 0 || keys[k].store != keys[k - 1].store;
        }
        p->stores = parla__calloc(rt, n_stores ? n_stores : 1, sizeof *p->stores);
        rc = p->stores ? 0 : PARLA_ENOMEM;
    }
    for (size_t k = 0; rc == 0 && k < n;) {
        size_t end = k + 1;
        while (end < n && keys[end].store == keys[k].store)
            end++;
        rp_store_t *st = &p->stores[p->n_stores++];
        st->store = acc[idx[k]].data->store;
        rc = rp_plan_store(p, st, acc, idx + k, end - k);
        k = end;
    }
    parla__free(keys);
    parla__free(idx);
    if (rc == 0 && p->n_edges) {
        /* One edge per pair: a flow (the task reads what pred wrote) wins over ordering. */
        qsort(p->edges, p->n_edges, sizeof *p->edges, cmp_edge);
        size_t w = 0;
        for (size_t i = 0; i < p->n_edges; i++) {
            if (w && p->edges[w - 1].node == p->edges[i].node && p->edges[w - 1].pred == p->edges[i].pred)
                p->edges[w - 1].flags &= p->edges[i].flags;
            else
                p->edges[w++] = p->edges[i];
        }
        p->n_edges = w;
    }
    if (rc) {
        parla__data_replay_free(p);
        return parla__error(PARLA_ENOMEM, "cannot plan the data hazards of a recorded graph (out of memory)");
    }
    *out = p;
    return 0;
}
