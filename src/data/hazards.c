/* hazards.c: access hazards. Each store keeps its access history as records
 * (ranges, the tasks that last wrote them, the tasks that read them since). A
 * new access depends on the writers of every overlapping record (read-after-
 * write, write-after-write) and, when it writes, on their readers (write-after-
 * read). A write replaces the records it covers whole. The records always
 * cover the whole store, starting with one empty record. */
#include "data/impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hazards -- */

static bool ranges_overlap(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        uint64_t alo = a[2 * i], ahi = a[2 * i + 1], blo = b[2 * j], bhi = b[2 * j + 1];
        if (alo < bhi && blo < ahi && alo < ahi && blo < bhi)
            return true;
        if (ahi <= bhi)
            i++;
        else
            j++;
    }
    return false;
}

/* True when every byte of a is inside b. */
static bool ranges_cover(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t j = 0;
    for (size_t i = 0; i < na; i++) {
        uint64_t lo = a[2 * i], hi = a[2 * i + 1];
        while (lo < hi) {
            while (j < nb && b[2 * j + 1] <= lo)
                j++;
            if (j == nb || b[2 * j] > lo)
                return false;
            lo = b[2 * j + 1];
        }
    }
    return true;
}

/* rec's ranges minus b's (both sorted, disjoint pairs); unchanged when the
 * result cannot be allocated. */
static void ranges_subtract(parla_runtime_t *rt, record_t *rec, const uint64_t *b, size_t nb)
{
    uint64_t *out = parla__alloc(rt, (rec->n_ranges + nb) * 2 * sizeof *out);
    if (out == NULL)
        return;
    size_t n = 0, j = 0;
    for (size_t i = 0; i < rec->n_ranges; i++) {
        uint64_t lo = rec->ranges[2 * i], hi = rec->ranges[2 * i + 1];
        while (j < nb && b[2 * j + 1] <= lo)
            j++;
        for (size_t k = j; k < nb && b[2 * k] < hi && lo < hi; k++) {
            if (b[2 * k] > lo) {
                out[2 * n] = lo;
                out[2 * n + 1] = b[2 * k];
                n++;
            }
            if (b[2 * k + 1] > lo)
                lo = b[2 * k + 1];
        }
        if (lo < hi) {
            out[2 * n] = lo;
            out[2 * n + 1] = hi;
            n++;
        }
    }
    parla__free(rec->ranges);
    rec->ranges = out;
    rec->n_ranges = n;
}

static int push_task(parla_runtime_t *rt, parla_task_t ***arr, size_t *n, size_t *cap, parla_task_t *t)
{
    /* A task adds its accesses one after another, so a duplicate is the last entry. */
    if (*n > 0 && (*arr)[*n - 1] == t)
        return 0;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 4;
        parla_task_t **a = parla__alloc(rt, c * sizeof *a);
        if (a == NULL)
            return PARLA_ENOMEM;
        if (*n)
            memcpy(a, *arr, *n * sizeof *a);
        parla__free(*arr);
        *arr = a;
        *cap = c;
    }
    parla_task_retain(t);
    (*arr)[(*n)++] = t;
    return 0;
}

/* Drops finished tasks from a list. */
/* Drops the finished tasks of a history list. Writers that failed or were
 * cancelled stay (keep_failed): what they were to write is missing, so later
 * readers are cancelled, whether or not the writer had finished when they
 * were spawned. A later write replaces them. */
static void prune(parla_task_t **arr, size_t *n, bool keep_failed)
{
    size_t w = 0;
    for (size_t i = 0; i < *n; i++) {
        parla_task_state_t st = parla_task_state(arr[i]);
        if (st == PARLA_TASK_DONE || (st > PARLA_TASK_DONE && !keep_failed))
            parla_task_release(arr[i]);
        else
            arr[w++] = arr[i];
    }
    *n = w;
}

static void record_clear(record_t *r)
{
    for (size_t i = 0; i < r->n_writers; i++)
        parla_task_release(r->writers[i]);
    for (size_t i = 0; i < r->n_readers; i++)
        parla_task_release(r->readers[i]);
    parla__free(r->writers);
    parla__free(r->readers);
    parla__free(r->ranges);
    memset(r, 0, sizeof *r);
}

/* Orders t after dep for a hazard, unless dep already waits for t (an explicit
 * dependency on a task spawned later wins). Returns 1 when dep had to be kept
 * after t instead, 0 when the edge was added, < 0 on error. */
/* hazard_edge could not decide (parla__graph_reaches gave no answer): PARLA_ENOMEM
 * for the caller, with the message already set. Internal to this file. */
enum { UNDECIDED = -1000 };

static int hazard_edge(parla_task_t *t, parla_task_t *dep, int mode, bool dep_writes)
{
    /* Only data flows (t reads what dep writes) carry a failure: write-after-
     * write and write-after-read edges order the tasks and nothing more. */
    bool flow = dep_writes && (mode & PARLA_READ);
    parla_task_state_t st = parla_task_state(dep);
    if (dep == t || st == PARLA_TASK_DONE)
        return 0;
    if (st > PARLA_TASK_DONE) /* a failed or cancelled writer: its readers are cancelled with it */
        return flow ? parla__graph_add_edge(t, dep, PARLA__EDGE_DATA) : 0;
    if (atomic_load(&t->succ) != NULL) {
        /* Without an answer, an edge might close a cycle (a stuck runtime
         * later): refuse the access instead. */
        parla__graph_reach_t r = parla__graph_reaches(t, dep, 100000);
        if (r == PARLA__REACH_YES)
            return 1;
        if (r == PARLA__REACH_UNKNOWN) {
            parla__error(PARLA_ENOMEM, "task %s: cannot tell whether its access to data that task %s uses "
                         "would close a dependency cycle (out of memory, or more than 100000 tasks to search)",
                         parla_task_name(t), parla_task_name(dep));
            return UNDECIDED;
        }
    }
    return parla__graph_add_edge(t, dep, PARLA__EDGE_DATA | (flow ? 0 : PARLA__EDGE_ORDER));
}

/* Room for one more access in t's list (x = t's ext). */
static int reserve_access(parla_task_t *t, parla__graph_task_ext_t *x)
{
    if (x->n_accesses < x->cap_accesses)
        return 0;
    int cap = x->cap_accesses ? 2 * x->cap_accesses : 4;
    parla__graph_access_t *a = parla__alloc(t->rt, (size_t)cap * sizeof *a);
    if (a == NULL)
        return parla__error(PARLA_ENOMEM, "task %s: cannot record an access", parla_task_name(t));
    if (x->n_accesses)
        memcpy(a, x->accesses, (size_t)x->n_accesses * sizeof *a);
    parla__free(x->accesses);
    x->accesses = a;
    x->cap_accesses = cap;
    return 0;
}

/* Earlier tasks that explicitly wait for the accessing task (references). */
typedef struct kept {
    parla_task_t **v;
    size_t n, cap;
} kept_t;

/* With s->lock held: the hazard edges of t's access (d, mode) from the
 * overlapping records; a read joins their readers, unless kept is NULL (a
 * replay's task, whose records are installed after: it has no successor yet,
 * so no edge can close a cycle and hazard_edge never keeps a task after it).
 * 0 or a negative code. */
static int add_hazards_locked(parla_task_t *t, store_t *s, const parla_data_t *d, int mode, kept_t *kept)
{
    int rc = 0;
    for (size_t r = 0; r < s->n_records && rc >= 0; r++) {
        record_t *rec = &s->records[r];
        if (!ranges_overlap(rec->ranges, rec->n_ranges, d->ranges, d->n_ranges))
            continue;
        prune(rec->writers, &rec->n_writers, true);
        /* Readers pile up under many concurrent reads: prune them only when
         * the list is full (amortised O(1)) or when a write needs them. */
        if ((mode & PARLA_WRITE) || rec->n_readers == rec->cap_readers)
            prune(rec->readers, &rec->n_readers, false);
        for (size_t i = 0; i < rec->n_writers && rc >= 0; i++) {
            rc = hazard_edge(t, rec->writers[i], mode, true);
            if (rc == 1 && kept)
                rc = push_task(t->rt, &kept->v, &kept->n, &kept->cap, rec->writers[i]);
        }
        if (mode & PARLA_WRITE) {
            for (size_t i = 0; i < rec->n_readers && rc >= 0; i++) {
                rc = hazard_edge(t, rec->readers[i], mode, false);
                if (rc == 1 && kept)
                    rc = push_task(t->rt, &kept->v, &kept->n, &kept->cap, rec->readers[i]);
            }
        } else if (rc >= 0 && kept) {
            rc = push_task(t->rt, &rec->readers, &rec->n_readers, &rec->cap_readers, t);
        }
    }
    return rc < 0 ? rc : 0;
}

/* With s->lock held: room for need records in s. 0 or PARLA_ENOMEM (unchanged). */
static int reserve_records(parla_runtime_t *rt, store_t *s, size_t need)
{
    if (need <= s->cap_records)
        return 0;
    size_t cap = 2 * need;
    record_t *n = parla__calloc(rt, cap, sizeof *n);
    if (n == NULL)
        return PARLA_ENOMEM;
    memcpy(n, s->records, s->n_records * sizeof *n);
    parla__free(s->records);
    s->records = n;
    s->cap_records = cap;
    return 0;
}

/* With s->lock held: replaces the records t's write of d covers whole by one
 * new record (taking *ranges, its copy of d's ranges). 0 or a negative code. */
static int replace_records_locked(parla_task_t *t, store_t *s, parla_data_t *d, uint64_t **ranges,
                                  const kept_t *kept)
{
    if (reserve_records(t->rt, s, s->n_records + 1))
        return PARLA_ENOMEM;
    record_t nr = {0};
    nr.ranges = *ranges;
    nr.n_ranges = d->n_ranges;
    *ranges = NULL;
    int rc = push_task(t->rt, &nr.writers, &nr.n_writers, &nr.cap_writers, t);
    /* Tasks spawned earlier that run after t (explicit order) stay
     * writers too: later accesses wait for them as well. */
    for (size_t i = 0; i < kept->n && rc >= 0; i++)
        rc = push_task(t->rt, &nr.writers, &nr.n_writers, &nr.cap_writers, kept->v[i]);
    if (rc < 0) {
        record_clear(&nr);
        return rc;
    }
    size_t w = 0;
    for (size_t r = 0; r < s->n_records; r++) {
        record_t *rec = &s->records[r];
        if (ranges_cover(rec->ranges, rec->n_ranges, nr.ranges, nr.n_ranges)) {
            record_clear(rec);
            continue;
        }
        /* The part this write covers is the new record's now: an
         * earlier (failed) writer no longer stands for it. Out of
         * memory, the record stays whole (more ordering, not less). */
        if (ranges_overlap(rec->ranges, rec->n_ranges, nr.ranges, nr.n_ranges))
            ranges_subtract(t->rt, rec, nr.ranges, nr.n_ranges);
        s->records[w++] = *rec;
    }
    s->n_records = w;
    s->records[s->n_records++] = nr;
    return rc;
}

int parla_task_add_access(parla_task_t *t, parla_data_t *d, parla_access_mode_t mode)
{
    return parla_task_add_access_at(t, d, mode, 0);
}

int parla_task_add_access_at(parla_task_t *t, parla_data_t *d, parla_access_mode_t mode, int slot)
{
    if (t == NULL || d == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_add_access: NULL argument");
    if (slot < 0 || slot >= PARLA_MAX_TASK_DEVICES)
        return parla__error(PARLA_EINVAL, "task %s: an access for the task's device at position %d: a task has at "
                            "most %d devices (positions 0..%d)", parla_task_name(t), slot, PARLA_MAX_TASK_DEVICES,
                            PARLA_MAX_TASK_DEVICES - 1);
    if (mode != PARLA_READ && mode != PARLA_WRITE && mode != PARLA_READWRITE)
        return parla__error(PARLA_EINVAL, "task %s: access mode %d is not read, write or read-write",
                            parla_task_name(t), (int)mode);
    store_t *s = d->store;
    if (s->rt != t->rt)
        return parla__error(PARLA_EINVAL, "task %s: the data object belongs to another runtime", parla_task_name(t));
    if (parla_task_state(t) != PARLA_TASK_CREATED)
        return parla__error(PARLA_ESTATE, "task %s: accesses are declared before it is submitted", parla_task_name(t));
    parla__graph_task_ext_t *x = parla__graph_task_ext(t);
    if (x == NULL)
        return parla__error(PARLA_ENOMEM, "task %s: cannot record an access", parla_task_name(t));
    int rc = reserve_access(t, x);
    if (rc)
        return rc;
    /* Reserve the new record's memory first, so a failure changes nothing
     * in the history. */
    uint64_t *ranges = NULL;
    if (mode & PARLA_WRITE) {
        ranges = parla__alloc(t->rt, (d->n_ranges ? d->n_ranges : 1) * 2 * sizeof *ranges);
        if (ranges == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot record an access", parla_task_name(t));
        if (d->n_ranges)
            memcpy(ranges, d->ranges, d->n_ranges * 2 * sizeof *ranges);
    }
    kept_t kept = {0};
    pthread_mutex_lock(&s->lock);
    rc = add_hazards_locked(t, s, d, mode, &kept);
    if (rc >= 0 && (mode & PARLA_WRITE))
        rc = replace_records_locked(t, s, d, &ranges, &kept);
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < kept.n; i++)
        parla_task_release(kept.v[i]);
    parla__free(kept.v);
    parla__free(ranges);
    if (rc < 0)
        return rc == UNDECIDED ? PARLA_ENOMEM
               : rc == PARLA_ENOMEM ? parla__error(rc, "task %s: cannot record an access", parla_task_name(t))
                                    : rc;
    parla_data_retain(d);
    x->accesses[x->n_accesses].data = d;
    x->accesses[x->n_accesses].mode = mode;
    x->accesses[x->n_accesses].slot = slot;
    x->n_accesses++;
    return 0;
}

void parla__data_forget_history(parla_runtime_t *rt)
{
    /* Take a reference on every store, so none is freed while we walk. */
    pthread_mutex_lock(&parla__data_rt(rt)->stores_lock);
    size_t n = 0;
    for (store_t *s = parla__data_rt(rt)->stores; s; s = s->live_next)
        n++;
    store_t **list = malloc((n ? n : 1) * sizeof *list);
    size_t k = 0;
    for (store_t *s = parla__data_rt(rt)->stores; s && list; s = s->live_next) {
        atomic_fetch_add(&s->refs, 1);
        list[k++] = s;
    }
    pthread_mutex_unlock(&parla__data_rt(rt)->stores_lock);
    if (list == NULL)
        return; /* out of memory: the cycles stay (a leak, not an error) */
    for (size_t i = 0; i < k; i++) {
        store_t *s = list[i];
        pthread_mutex_lock(&s->lock);
        size_t n_tasks = 0;
        for (size_t r = 0; r < s->n_records; r++)
            n_tasks += s->records[r].n_writers + s->records[r].n_readers;
        parla_task_t **tasks = malloc((n_tasks ? n_tasks : 1) * sizeof *tasks);
        size_t m = 0;
        for (size_t r = 0; r < s->n_records && tasks; r++) {
            record_t *rec = &s->records[r];
            for (size_t j = 0; j < rec->n_writers; j++)
                tasks[m++] = rec->writers[j];
            for (size_t j = 0; j < rec->n_readers; j++)
                tasks[m++] = rec->readers[j];
            rec->n_writers = rec->n_readers = 0;
        }
        pthread_mutex_unlock(&s->lock);
        for (size_t j = 0; j < m; j++)
            parla_task_release(tasks[j]); /* may free the task, and with it its data handles */
        free(tasks);
        parla__data_store_release(s);
    }
    free(list);
}

/* ------------------------------------------------------- outside of tasks -- */

/* A task (a reference) whose access conflicts with an outside access to d
 * (unfinished writers of its ranges, and with write, their readers), or NULL.
 * The caller excludes its own task's declared access. */
parla_task_t *parla__data_conflict(parla_data_t *d, int write)
{
    store_t *s = d->store;
    parla_task_t *wait = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t r = 0; r < s->n_records && !wait; r++) {
        record_t *rec = &s->records[r];
        if (!ranges_overlap(rec->ranges, rec->n_ranges, d->ranges, d->n_ranges))
            continue;
        prune(rec->writers, &rec->n_writers, true);
        prune(rec->readers, &rec->n_readers, false);
        for (size_t i = 0; i < rec->n_writers && !wait; i++)
            if (parla_task_state(rec->writers[i]) < PARLA_TASK_DONE)
                wait = rec->writers[i];
        if (!wait && write && rec->n_readers)
            wait = rec->readers[0];
    }
    if (wait)
        parla_task_retain(wait);
    pthread_mutex_unlock(&s->lock);
    return wait;
}

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

typedef struct rp_store {
    store_t *store;
    rp_in_t *in;
    size_t n_in;
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
    return st->n_written && ranges_cover(rec->ranges, rec->n_ranges, st->written, st->n_written);
}

/* With s->lock held: the reservations of rp_install_locked, which change nothing the history means
 * (reader lists pruned or made larger). 0 or PARLA_ENOMEM (nothing to undo). */
static int rp_reserve_locked(parla_runtime_t *rt, rp_store_t *st, store_t *s, rp_pool_t *pool)
{
    if (reserve_records(rt, s, s->n_records + st->n_recs))
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
                ranges_overlap(rec->ranges, rec->n_ranges, st->recs[j].ranges, st->recs[j].n_ranges))
                k += st->recs[j].n_readers;
        if (k == 0 || rec->n_readers + k <= rec->cap_readers)
            continue;
        prune(rec->readers, &rec->n_readers, false);
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
        if (st->n_written && ranges_overlap(rec.ranges, rec.n_ranges, st->written, st->n_written))
            ranges_subtract(s->rt, &rec, st->written, st->n_written);
        s->records[w++] = rec;
    }
    s->n_records = w;
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        if (pr->writer >= 0)
            continue;
        for (size_t r = 0; r < w; r++) {
            record_t *rec = &s->records[r];
            if (!ranges_overlap(rec->ranges, rec->n_ranges, pr->ranges, pr->n_ranges))
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

/* With s->lock held: when the history is what the plan's records leave (in the plan's order: the previous
 * replay left it, and nothing touched those bytes since), the replay's tasks replace that replay's in the
 * same records and arrays, and true; else false (nothing changed). */
static bool rp_same_shape_locked(const rp_store_t *st, store_t *s, parla_task_t *const *tasks)
{
    if (s->n_records != st->n_recs)
        return false;
    for (size_t j = 0; j < st->n_recs; j++) {
        const rp_rec_t *pr = &st->recs[j];
        const record_t *rec = &s->records[j];
        if (pr->writer < 0 || rec->n_ranges != pr->n_ranges || rec->cap_writers < 1 ||
            rec->cap_readers < pr->n_readers ||
            memcmp(rec->ranges, pr->ranges, 2 * pr->n_ranges * sizeof *pr->ranges) != 0)
            return false;
    }
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
    return true;
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
        for (size_t k = 0; k < st->n_in && rc == 0; k++)
            rc = add_hazards_locked(tasks[st->in[k].node], s, st->in[k].data, st->in[k].mode, NULL);
        if (rc == 0 && !rp_same_shape_locked(st, s, tasks)) {
            rc = rp_reserve_locked(p->rt, st, s, &pool);
            if (rc == 0)
                rp_commit_locked(st, s, tasks, &pool);
        }
        pthread_mutex_unlock(&s->lock);
        if (rc)
            return rc == UNDECIDED ? PARLA_ENOMEM
                   : rc == PARLA_ENOMEM ? parla__error(rc, "replay: cannot record the data accesses of its tasks "
                                                           "(out of memory)")
                                        : rc;
    }
    return 0;
}
