/* replay_apply.c: a replay of a recorded graph applies its data plan (data/replay.c) to each store's access
 * history once: edges to the tasks the history holds, and the history's records swapped for the replay's
 * tasks (parla__data_replay_apply, data/data.h). */
#include "data/replay_impl.h"

#include <stdlib.h>
#include <string.h>

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
