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

int parla_data_overlaps(const parla_data_t *a, const parla_data_t *b)
{
    return a && b && a->store == b->store && ranges_overlap(a->ranges, a->n_ranges, b->ranges, b->n_ranges);
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
    /* Each device position gets its own copy: bytes written through two positions would be written back
     * from one copy only, and the other position's writes lost. */
    for (int i = 0; i < x->n_accesses; i++) {
        const parla_data_t *o = x->accesses[i].data;
        if (x->accesses[i].slot != slot && (mode & PARLA_WRITE) && (x->accesses[i].mode & PARLA_WRITE) &&
            parla_data_overlaps(o, d))
            return parla__error(PARLA_EINVAL, "task %s: the same bytes of a data object are written through its "
                                "devices at positions %d and %d: each position has its own copy, so one "
                                "position's writes would be lost (declare disjoint views, or write at one "
                                "position)", parla_task_name(t), x->accesses[i].slot, slot);
    }
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
 * The caller excludes its own task's declared access. Only submitted tasks
 * count: a task's access enters the history when it is declared, while the
 * task may still be built (by another thread, or by the caller, which would
 * then wait for itself); until it is submitted it comes after this access. */
parla_task_t *parla__data_conflict_locked(parla_data_t *d, int write)
{
    store_t *s = d->store;
    parla_task_t *wait = NULL;
    for (size_t r = 0; r < s->n_records && !wait; r++) {
        record_t *rec = &s->records[r];
        if (!ranges_overlap(rec->ranges, rec->n_ranges, d->ranges, d->n_ranges))
            continue;
        prune(rec->writers, &rec->n_writers, true);
        prune(rec->readers, &rec->n_readers, false);
        for (size_t i = 0; i < rec->n_writers && !wait; i++) {
            int st = parla_task_state(rec->writers[i]);
            if (st != PARLA_TASK_CREATED && st < PARLA_TASK_DONE)
                wait = rec->writers[i];
        }
        for (size_t i = 0; write && i < rec->n_readers && !wait; i++)
            if (parla_task_state(rec->readers[i]) != PARLA_TASK_CREATED)
                wait = rec->readers[i];
    }
    if (wait)
        parla_task_retain(wait);
    return wait;
}

parla_task_t *parla__data_conflict(parla_data_t *d, int write)
{
    pthread_mutex_lock(&d->store->lock);
    parla_task_t *wait = parla__data_conflict_locked(d, write);
    pthread_mutex_unlock(&d->store->lock);
    return wait;
}

/* ------------------------------------ for replay plans (data/replay.c) -- */

bool parla__data_ranges_overlap(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    return ranges_overlap(a, na, b, nb);
}

bool parla__data_ranges_cover(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    return ranges_cover(a, na, b, nb);
}

void parla__data_ranges_subtract(parla_runtime_t *rt, record_t *rec, const uint64_t *b, size_t nb)
{
    ranges_subtract(rt, rec, b, nb);
}

void parla__data_prune(parla_task_t **arr, size_t *n, bool keep_failed)
{
    prune(arr, n, keep_failed);
}

int parla__data_reserve_records(parla_runtime_t *rt, store_t *s, size_t need)
{
    return reserve_records(rt, s, need);
}

int parla__data_hazards_in_locked(parla_task_t *t, store_t *s, const parla_data_t *d, int mode)
{
    int rc = add_hazards_locked(t, s, d, mode, NULL);
    return rc == UNDECIDED ? PARLA_ENOMEM : rc;
}
