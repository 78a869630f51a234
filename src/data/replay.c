/* replay.c: the data hazards of recorded graphs (parla__data_replay_*, data/data.h), resolved once when a
 * graph is first replayed, and applied to the stores' access histories (data/hazards.c) once per store by
 * each replay. */
#include "data/impl.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- replayed graphs -- */

/* The plan of one store (see parla__data_replay_plan in data/data.h):
 *  in:    the accesses that meet the history from before the graph: each touches a byte no earlier task of
 *         the graph wrote, so it depends on what the history holds for it (its own hazards inside the
 *         graph are edges already, and the history is consulted as it was before the replay);
 *  recs:  what the history holds after the graph, for the bytes it touches: each byte's last writer in the
 *         graph (or none: bytes it only reads) and its readers since, bytes with equal such sets merged
 *         into one record;
 *  written: the bytes the graph writes (the union of the ranges of the records with a writer).
 * Node indices stand for the replay's tasks. */
typedef struct rp_in {
    size_t node;
    const parla_data_t *data;
    int mode;
} rp_in_t;

typedef struct rp_rec {
    uint64_t *ranges; /* pairs, sorted, disjoint */
    size_t n_ranges, cap_ranges;
    ptrdiff_t writer; /* node, or -1 (bytes only read) */
    size_t *readers;  /* nodes */
    size_t n_readers;
} rp_rec_t;

/* Scratch for one new record of a replay: the arrays it will own (from the pool or allocated). */
typedef struct rp_new {
    uint64_t *ranges;
    parla_task_t **writers, **readers;
    size_t cap_writers, cap_readers;
    unsigned fresh; /* bit 0: ranges, 1: writers, 2: readers allocated for this replay (else from the pool) */
} rp_new_t;

/* A record of the plan that an access of the first kind (in) overlaps: when the history has the shape the
 * previous replay left (the usual case), that access's edges are those to the record's tasks. mode: the
 * node's in-accesses to it, together. */
typedef struct rp_cross {
    size_t node, rec;
    int mode;
} rp_cross_t;

typedef struct rp_store {
    store_t *store;
    rp_in_t *in;
    size_t n_in;
    rp_cross_t *cross;
    size_t n_cross;
    rp_rec_t *recs;
    size_t n_recs;
    uint64_t *written;
    size_t n_written;
    rp_new_t *scratch; /* n_recs entries */
} rp_store_t;

struct parla__data_replay {
    parla_runtime_t *rt;
    rp_store_t *stores;
    size_t n_stores;
    parla__data_replay_edge_t *edges;
    size_t n_edges, cap_edges;
};

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

/* Plans the accesses of one store (acc[idx[0..n)], in recording order) into st. */
static int rp_plan_store(parla__data_replay_t *p, rp_store_t *st, const parla__data_replay_access_t *acc,
                         const size_t *idx, size_t n)
{
    parla_runtime_t *rt = p->rt;
    size_t n_pts = 0;
    for (size_t k = 0; k < n; k++)
        n_pts += 2 * acc[idx[k]].data->n_ranges;
    uint64_t *pts = parla__alloc(rt, (n_pts ? n_pts : 1) * sizeof *pts);
    rp_cell_t *cells = NULL;
    int rc = PARLA_ENOMEM;
    if (pts == NULL)
        goto out;
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
    n_pts = u;
    size_t n_cells = n_pts ? n_pts - 1 : 0;
    cells = parla__calloc(rt, n_cells ? n_cells : 1, sizeof *cells);
    if (cells == NULL)
        goto out;
    for (size_t e = 0; e < n_cells; e++)
        cells[e].writer = -1;
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
                    goto out;
                if (write) {
                    for (size_t i = 0; i < c->n_readers; i++)
                        if (c->readers[i] != a->node && rp_edge(p, a->node, c->readers[i], false))
                            goto out;
                    c->writer = (ptrdiff_t)a->node;
                    c->n_readers = 0;
                } else if (c->writer != (ptrdiff_t)a->node &&
                           (c->n_readers == 0 || c->readers[c->n_readers - 1] != a->node)) {
                    if (rp_grow(rt, (void **)&c->readers, c->n_readers, &c->cap_readers, sizeof *c->readers))
                        goto out;
                    c->readers[c->n_readers++] = a->node;
                }
            }
        }
        if (incoming) {
            if (rp_grow(rt, (void **)&st->in, st->n_in, &cap_in, sizeof *st->in))
                goto out;
            st->in[st->n_in++] = (rp_in_t){.node = a->node, .data = d, .mode = a->mode};
        }
    }
    /* The records the graph leaves: cells with equal writer and readers share one. */
    size_t cap_recs = 0, cap_written = 0;
    for (size_t e = 0; e < n_cells; e++) {
        rp_cell_t *c = &cells[e];
        if (c->writer < 0 && c->n_readers == 0)
            continue;
        if (c->writer >= 0 && rp_add_range(rt, &st->written, &st->n_written, &cap_written, pts[e], pts[e + 1]))
            goto out;
        rp_rec_t *rec = NULL;
        for (size_t j = 0; j < st->n_recs && rec == NULL; j++) {
            rp_rec_t *x = &st->recs[j];
            if (x->writer == c->writer && x->n_readers == c->n_readers &&
                (c->n_readers == 0 || memcmp(x->readers, c->readers, c->n_readers * sizeof *c->readers) == 0))
                rec = x;
        }
        if (rec == NULL) {
            if (rp_grow(rt, (void **)&st->recs, st->n_recs, &cap_recs, sizeof *st->recs))
                goto out;
            rec = &st->recs[st->n_recs];
            memset(rec, 0, sizeof *rec);
            rec->writer = c->writer;
            if (c->n_readers) {
                if ((rec->readers = parla__alloc(rt, c->n_readers * sizeof *rec->readers)) == NULL)
                    goto out;
                memcpy(rec->readers, c->readers, c->n_readers * sizeof *rec->readers);
                rec->n_readers = c->n_readers;
            }
            st->n_recs++;
        }
        if (rp_add_range(rt, &rec->ranges, &rec->n_ranges, &rec->cap_ranges, pts[e], pts[e + 1]))
            goto out;
    }
    /* The records each in-access meets when the history has the shape the plan leaves. */
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
                    goto out;
                c = &st->cross[st->n_cross++];
                *c = (rp_cross_t){.node = in->node, .rec = j, .mode = 0};
            }
            c->mode |= in->mode;
        }
    }
    st->scratch = parla__calloc(rt, st->n_recs ? st->n_recs : 1, sizeof *st->scratch);
    rc = st->scratch ? 0 : PARLA_ENOMEM;
out:
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

/* Arrays of the records a replay's writes replace, reused by its new records (no allocation once the
 * history has the shape the previous replay left). */
enum { RP_POOL = 32 };
typedef struct rp_pool {
    void *buf[RP_POOL];
    size_t cap[RP_POOL]; /* elements (task pointers, or range pairs) */
    bool ranges[RP_POOL], taken[RP_POOL];
    int n;
} rp_pool_t;

static void rp_pool_put(rp_pool_t *pool, void *buf, size_t cap, bool ranges)
{
    if (buf && cap && pool->n < RP_POOL) {
        pool->buf[pool->n] = buf;
        pool->cap[pool->n] = cap;
        pool->ranges[pool->n] = ranges;
        pool->taken[pool->n++] = false;
    }
}

/* An array for at least need elements: from the pool (*cap its capacity), or allocated (fresh). */
static void *rp_pool_take(parla_runtime_t *rt, rp_pool_t *pool, size_t need, size_t elem, bool ranges, size_t *cap,
                          bool *fresh)
{
    for (int i = 0; i < pool->n; i++)
        if (!pool->taken[i] && pool->ranges[i] == ranges && pool->cap[i] >= need) {
            pool->taken[i] = true;
            *cap = pool->cap[i];
            *fresh = false;
            return pool->buf[i];
        }
    size_t c = need < 4 ? 4 : need;
    *cap = c;
    *fresh = true;
    return parla__alloc(rt, c * elem);
}

/* Frees buf unless the pool gave it to a new record. */
static void rp_pool_drop(rp_pool_t *pool, void *buf)
{
    for (int i = 0; i < pool->n; i++)
        if (pool->buf[i] == buf && pool->taken[i])
            return;
    parla__free(buf);
}

static void rp_scratch_undo(rp_store_t *st)
{
    for (size_t j = 0; j < st->n_recs; j++) {
        rp_new_t *x = &st->scratch[j];
        if (x->fresh & 1)
            parla__free(x->ranges);
        if (x->fresh & 2)
            parla__free(x->writers);
        if (x->fresh & 4)
            parla__free(x->readers);
        memset(x, 0, sizeof *x);
    }
}

/* With s->lock held: whether the replay's writes cover the record whole (it is replaced). */
static bool rp_covered(const rp_store_t *st, const record_t *rec)
{
    return st->n_written && parla__data_ranges_cover(rec->ranges, rec->n_ranges, st->written, st->n_written);
}

/* With s->lock held: the reservations of rp_install_locked, which change nothing the history means
 * (reader lists pruned or made larger). 0 or PARLA_ENOMEM (nothing to undo). */
static int rp_reserve_locked(parla_runtime_t *rt, rp_store_t *st, store_t *s, rp_pool_t *pool)
{
    if (parla__data_reserve_records(rt, s, s->n_records + st->n_recs))
        return PARLA_ENOMEM;
    for (size_t r = 0; r < s->n_records; r++) {
        record_t *rec = &s->records[r];
        if (rp_covered(st, rec)) {
            rp_pool_put(pool, rec->writers, rec->cap_writers, false);
            rp_pool_put(pool, rec->readers, rec->cap_readers, false);
            rp_pool_put(pool, rec->ranges, rec->n_ranges, true);
            continue;
        }
        /* Room for the readers of the bytes the graph only reads that this record holds. */
        size_t k = 0;
        for (size_t j = 0; j < st->n_recs; j++)
            if (st->recs[j].writer < 0 &&
                parla__data_ranges_overlap(rec->ranges, rec->n_ranges, st->recs[j].ranges, st->recs[j].n_ranges))
                k += st->recs[j].n_readers;
        if (k == 0 || rec->n_readers + k <= rec->cap_readers)
            continue;
        parla__data_prune(rec->readers, &rec->n_readers, false);
        if (rec->n_readers + k <= rec->cap_readers)
            continue;
        size_t cap = 2 * (rec->n_readers + k);
        parla_task_t **a = parla__alloc(rt, cap * sizeof *a);
        if (a == NULL)
            return PARLA_ENOMEM;
        if (rec->n_readers)
            memcpy(a, rec->readers, rec->n_readers * sizeof *a);
        parla__free(rec->readers);
        rec->readers = a;
        rec->cap_readers = cap;
    }
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        rp_new_t *x = &st->scratch[j];
        if (pr->writer < 0)
            continue;
        size_t cap;
        bool fresh;
        x->ranges = rp_pool_take(rt, pool, pr->n_ranges, 2 * sizeof(uint64_t), true, &cap, &fresh);
        x->fresh |= fresh ? 1u : 0u;
        x->writers = x->ranges ? rp_pool_take(rt, pool, 1, sizeof(parla_task_t *), false, &x->cap_writers, &fresh)
                               : NULL;
        x->fresh |= fresh ? 2u : 0u;
        if (x->writers && pr->n_readers) {
            x->readers = rp_pool_take(rt, pool, pr->n_readers, sizeof(parla_task_t *), false, &x->cap_readers,
                                      &fresh);
            x->fresh |= fresh ? 4u : 0u;
        }
        if (x->ranges == NULL || x->writers == NULL || (pr->n_readers && x->readers == NULL)) {
            rp_scratch_undo(st);
            return PARLA_ENOMEM;
        }
    }
    return 0;
}

/* With s->lock held, after rp_reserve_locked: leaves the replay's accesses in the history (cannot fail). */
static void rp_commit_locked(rp_store_t *st, store_t *s, parla_task_t *const *tasks, rp_pool_t *pool)
{
    size_t w = 0;
    for (size_t r = 0; r < s->n_records; r++) {
        record_t rec = s->records[r];
        if (rp_covered(st, &rec)) {
            for (size_t i = 0; i < rec.n_writers; i++)
                parla_task_release(rec.writers[i]);
            for (size_t i = 0; i < rec.n_readers; i++)
                parla_task_release(rec.readers[i]);
            rp_pool_drop(pool, rec.writers);
            rp_pool_drop(pool, rec.readers);
            rp_pool_drop(pool, rec.ranges);
            continue;
        }
        /* Out of memory the record stays whole: more ordering, not less. */
        if (st->n_written && parla__data_ranges_overlap(rec.ranges, rec.n_ranges, st->written, st->n_written))
            parla__data_ranges_subtract(s->rt, &rec, st->written, st->n_written);
        s->records[w++] = rec;
    }
    s->n_records = w;
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        if (pr->writer >= 0)
            continue;
        for (size_t r = 0; r < w; r++) {
            record_t *rec = &s->records[r];
            if (!parla__data_ranges_overlap(rec->ranges, rec->n_ranges, pr->ranges, pr->n_ranges))
                continue;
            for (size_t i = 0; i < pr->n_readers; i++) {
                parla_task_t *t = tasks[pr->readers[i]];
                if (rec->n_readers && rec->readers[rec->n_readers - 1] == t)
                    continue;
                parla_task_retain(t);
                rec->readers[rec->n_readers++] = t; /* room reserved */
            }
        }
    }
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        rp_new_t *x = &st->scratch[j];
        if (pr->writer < 0)
            continue;
        record_t nr = {0};
        nr.ranges = x->ranges;
        memcpy(nr.ranges, pr->ranges, 2 * pr->n_ranges * sizeof *nr.ranges);
        nr.n_ranges = pr->n_ranges;
        nr.writers = x->writers;
        nr.cap_writers = x->cap_writers;
        nr.writers[nr.n_writers++] = tasks[pr->writer];
        parla_task_retain(tasks[pr->writer]);
        nr.readers = x->readers;
        nr.cap_readers = x->readers ? x->cap_readers : 0;
        for (size_t i = 0; i < pr->n_readers; i++) {
            parla_task_retain(tasks[pr->readers[i]]);
            nr.readers[nr.n_readers++] = tasks[pr->readers[i]];
        }
        s->records[s->n_records++] = nr; /* room reserved */
        memset(x, 0, sizeof *x);
    }
    /* Arrays of replaced records that no new record took were freed by rp_pool_drop; pooled ones that were
     * not taken too (each pooled array belongs to a replaced record). */
}

/* Whether the n range pairs a and b are the same (a loop: n is 1 or 2 in the usual case, shorter than a
 * call to memcmp). */
static bool rp_same_ranges(const uint64_t *a, const uint64_t *b, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* With s->lock held: whether the history is what the plan's records leave (in the plan's order: the
 * previous replay left it, and nothing since changed its records' ranges; tasks spawned since may have
 * joined their readers, or replaced their writers). */
static bool rp_same_shape_locked(const rp_store_t *st, const store_t *s)
{
    if (s->n_records != st->n_recs)
        return false;
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        const record_t *rec = &s->records[j];
        if (pr->writer < 0 || rec->n_ranges != pr->n_ranges || rec->cap_writers < 1 ||
            rec->cap_readers < pr->n_readers || !rp_same_ranges(rec->ranges, pr->ranges, pr->n_ranges))
            return false;
    }
    return true;
}

/* The edge from dep (in a record) to t (a replay's task, with no successor yet) for an access of the first
 * kind, as the hazard path adds it: none from a task done; from a failed or cancelled one, only a flow (t
 * reads what it was to write: t is cancelled with it). */
static int rp_in_edge(parla_task_t *t, parla_task_t *dep, bool flow)
{
    /* The state read inline (as parla_task_state, without the call: dep is never NULL here). */
    int state = atomic_load_explicit(&dep->state, memory_order_acquire);
    if (state == PARLA_TASK_DONE || (state > PARLA_TASK_DONE && !flow))
        return 0;
    return parla__graph_add_edge_issuing(t, dep, PARLA__EDGE_DATA | (flow ? 0 : PARLA__EDGE_ORDER));
}

/* With s->lock held and the history in the plan's shape: the edges of the accesses of the first kind, to
 * the tasks of the records they overlap (known from the plan: no range is compared). 0 or PARLA_ENOMEM. */
static int rp_cross_edges_locked(const rp_store_t *st, const store_t *s, parla_task_t *const *tasks)
{
    int rc = 0;
    for (size_t k = 0; k < st->n_cross && rc == 0; k++) {
        const rp_cross_t *c = &st->cross[k];
        const record_t *rec = &s->records[c->rec];
        parla_task_t *t = tasks[c->node];
        for (size_t i = 0; i < rec->n_writers && rc == 0; i++)
            rc = rp_in_edge(t, rec->writers[i], (c->mode & PARLA_READ) != 0);
        for (size_t i = 0; (c->mode & PARLA_WRITE) && i < rec->n_readers && rc == 0; i++)
            rc = rp_in_edge(t, rec->readers[i], false);
    }
    return rc;
}

/* With s->lock held and the history in the plan's shape: the replay's tasks replace those in the same
 * records and arrays. */
static void rp_swap_locked(const rp_store_t *st, store_t *s, parla_task_t *const *tasks)
{
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        record_t *rec = &s->records[j];
        for (size_t i = 0; i < rec->n_writers; i++)
            parla_task_release(rec->writers[i]);
        for (size_t i = 0; i < rec->n_readers; i++)
            parla_task_release(rec->readers[i]);
        parla_task_retain(tasks[pr->writer]);
        rec->writers[0] = tasks[pr->writer];
        rec->n_writers = 1;
        for (size_t i = 0; i < pr->n_readers; i++) {
            parla_task_retain(tasks[pr->readers[i]]);
            rec->readers[i] = tasks[pr->readers[i]];
        }
        rec->n_readers = pr->n_readers;
    }
}

int parla__data_replay_apply(parla__data_replay_t *p, parla_task_t *const *tasks)
{
    for (size_t i = 0; i < p->n_stores; i++) {
        rp_store_t *st = &p->stores[i];
        store_t *s = st->store;
        rp_pool_t pool;
        pool.n = 0;
        pthread_mutex_lock(&s->lock);
        int rc = 0;
        if (rp_same_shape_locked(st, s)) {
            rc = rp_cross_edges_locked(st, s, tasks);
            if (rc == 0)
                rp_swap_locked(st, s, tasks);
        } else {
            for (size_t k = 0; k < st->n_in && rc == 0; k++)
                rc = parla__data_hazards_in_locked(tasks[st->in[k].node], s, st->in[k].data, st->in[k].mode);
            if (rc == 0)
                rc = rp_reserve_locked(p->rt, st, s, &pool);
            if (rc == 0)
                rp_commit_locked(st, s, tasks, &pool);
        }
        pthread_mutex_unlock(&s->lock);
        if (rc)
            return rc == PARLA_ENOMEM ? parla__error(rc, "replay: cannot record the data accesses of its tasks "
                                                         "(out of memory)")
                                      : rc;
    }
    return 0;
}
