/* trace.c: execution traces. Off by default: every hook is one branch on
 * rt->trace. When on, each worker appends fixed-size events to its own
 * chunked buffer (no lock); other threads share one buffer under a mutex.
 * At the end the events are written as Chrome trace JSON (Perfetto,
 * chrome://tracing), a DOT graph and a text summary with the critical path. */
#include "sched/sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK_EVENTS 4096

typedef struct tchunk {
    struct tchunk *next;
    size_t n;
    parla__tev_t ev[CHUNK_EVENTS];
} tchunk_t;

typedef struct tname {
    uint64_t serial;
    char *name;
} tname_t;

struct parla__tbuf {
    pthread_mutex_t lock; /* used by the shared buffer only: protects its chunks and names */
    tchunk_t *head, *tail;
    tname_t *names;
    size_t n_names, cap_names;
};

struct parla__trace {
    uint64_t t0;                  /* ns, CLOCK_MONOTONIC at start */
    int n_buffers;                /* workers + 1 shared */
    struct parla__tbuf *buffers;  /* [0, n_workers) per worker, [n_workers] shared */
};

uint64_t parla__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int parla__trace_init(parla_runtime_t *rt)
{
    parla__trace_t *tr = calloc(1, sizeof *tr);
    if (tr == NULL)
        return PARLA_ENOMEM;
    tr->n_buffers = rt->n_workers + 1;
    tr->buffers = calloc((size_t)tr->n_buffers, sizeof *tr->buffers);
    if (tr->buffers == NULL) {
        free(tr);
        return PARLA_ENOMEM;
    }
    for (int i = 0; i < tr->n_buffers; i++)
        pthread_mutex_init(&tr->buffers[i].lock, NULL);
    tr->t0 = parla__now_ns();
    rt->trace = tr;
    return 0;
}

void parla__trace_free(parla_runtime_t *rt)
{
    parla__trace_t *tr = rt->trace;
    if (tr == NULL)
        return;
    for (int i = 0; i < tr->n_buffers; i++) {
        struct parla__tbuf *b = &tr->buffers[i];
        for (tchunk_t *c = b->head; c;) {
            tchunk_t *next = c->next;
            free(c);
            c = next;
        }
        for (size_t k = 0; k < b->n_names; k++)
            free(b->names[k].name);
        free(b->names);
        pthread_mutex_destroy(&b->lock);
    }
    free(tr->buffers);
    free(tr);
    rt->trace = NULL;
}

/* The calling thread's buffer; *shared tells whether its lock must be held. */
static struct parla__tbuf *my_buffer(parla_runtime_t *rt, bool *shared)
{
    parla__worker_t *w = parla__current_worker();
    if (w && w->rt == rt) {
        *shared = false;
        return &rt->trace->buffers[w->index];
    }
    *shared = true;
    return &rt->trace->buffers[rt->n_workers];
}

static parla__tev_t *append(struct parla__tbuf *b)
{
    if (b->tail == NULL || b->tail->n == CHUNK_EVENTS) {
        tchunk_t *c = malloc(sizeof *c);
        if (c == NULL)
            return NULL; /* tracing is best effort: an event is dropped */
        c->next = NULL;
        c->n = 0;
        if (b->tail)
            b->tail->next = c;
        else
            b->head = c;
        b->tail = c;
    }
    return &b->tail->ev[b->tail->n++];
}

void parla__trace_event(parla_runtime_t *rt, const parla__tev_t *ev)
{
    bool shared;
    struct parla__tbuf *b = my_buffer(rt, &shared);
    if (shared)
        pthread_mutex_lock(&b->lock);
    parla__tev_t *e = append(b);
    if (e) {
        *e = *ev;
        e->worker = (int16_t)(shared ? -1 : (int)(b - rt->trace->buffers));
    }
    if (shared)
        pthread_mutex_unlock(&b->lock);
}

void parla__trace_name(parla_runtime_t *rt, parla_task_t *t)
{
    bool shared;
    struct parla__tbuf *b = my_buffer(rt, &shared);
    const char *name = parla_task_name(t);
    if (shared)
        pthread_mutex_lock(&b->lock);
    if (b->n_names == b->cap_names) {
        size_t cap = b->cap_names ? 2 * b->cap_names : 256;
        tname_t *n = realloc(b->names, cap * sizeof *n);
        if (n == NULL)
            goto out;
        b->names = n;
        b->cap_names = cap;
    }
    char *copy = strdup(name);
    if (copy)
        b->names[b->n_names++] = (tname_t){t->serial, copy};
out:
    if (shared)
        pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------- analysis -- */

/* One run of a task's body: a task that suspends (awaits) has several. */
typedef struct tseg {
    uint64_t serial;
    uint64_t start, end; /* ns since t0 */
    int worker, device, state;
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
    float f[4];
    size_t seg0, nseg;
    bool critical;
    uint64_t crit_prev; /* the task before it on the critical path, or UINT64_MAX */
} tinfo_t;

typedef struct tedge {
    uint64_t pred, succ;
    int kind; /* enum parla__edge_kind */
} tedge_t;

/* An edge of the segment graph: from's end precedes to's start. */
typedef struct sedge {
    size_t to, from;
} sedge_t;

/* Something drawn on a device track: a task segment, device work or a copy. */
typedef struct ditem {
    uint64_t start, end;
    int device, lane;
    const parla__tev_t *ev; /* the event (work, copy) or NULL for a segment */
    size_t seg;
} ditem_t;

/* Doubles the capacity of a malloc'ed array; returns 0 or PARLA_ENOMEM (the array is unchanged). */
static int grow(void **array, size_t *cap, size_t elem)
{
    void *n = realloc(*array, 2 * *cap * elem);
    if (n == NULL)
        return PARLA_ENOMEM;
    *array = n;
    *cap *= 2;
    return 0;
}

static int cmp_u64(uint64_t x, uint64_t y)
{
    return x < y ? -1 : x > y;
}

static int cmp_seg(const void *a, const void *b)
{
    const tseg_t *x = a, *y = b;
    int c = cmp_u64(x->serial, y->serial);
    return c ? c : cmp_u64(x->start, y->start);
}

static int cmp_edge(const void *a, const void *b)
{
    const tedge_t *x = a, *y = b;
    int c = cmp_u64(x->succ, y->succ);
    if (c == 0)
        c = cmp_u64(x->pred, y->pred);
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
    int c = cmp_u64(x->start, y->start);
    if (c == 0)
        c = cmp_u64(x->end, y->end);
    return c ? c : cmp_u64(*(const size_t *)a, *(const size_t *)b);
}

/* Segment indices by device, worker (on the CPU), start (busy time: the union per worker on the CPU, per
 * device on a GPU). */
static int cmp_seg_dws(const void *a, const void *b, void *arg)
{
    const tseg_t *segs = arg;
    const tseg_t *x = &segs[*(const size_t *)a], *y = &segs[*(const size_t *)b];
    if (x->device != y->device)
        return x->device < y->device ? -1 : 1;
    if (x->device == 0 && x->worker != y->worker) /* the CPU: per worker; a GPU: one device */
        return x->worker < y->worker ? -1 : 1;
    return cmp_u64(x->start, y->start);
}

static int cmp_ditem(const void *a, const void *b)
{
    const ditem_t *x = a, *y = b;
    if (x->device != y->device)
        return x->device < y->device ? -1 : 1;
    int c = cmp_u64(x->start, y->start);
    return c ? c : -cmp_u64(x->end, y->end); /* the longer first: it may contain the other */
}

static tinfo_t *find(tinfo_t *tasks, size_t n, uint64_t serial)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tasks[mid].serial < serial)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && tasks[lo].serial == serial ? &tasks[lo] : NULL;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void dot_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static const char *const edge_names[] = {"dependency", "data flow", "data order", "await"};

/* The segment an edge leads to: the successor's first, or for an await the
 * first that starts after the awaited task has ended (the resumed body). */
static size_t edge_target(const tseg_t *segs, const tinfo_t *p, const tinfo_t *s, int kind)
{
    if (kind == PARLA__EK_AWAIT)
        for (size_t k = s->seg0 + 1; k < s->seg0 + s->nseg; k++)
            if (segs[k].start >= p->end)
                return k;
    return kind == PARLA__EK_AWAIT ? s->seg0 + s->nseg - 1 : s->seg0;
}

static const char *device_name(parla_runtime_t *rt, int d)
{
    return d >= 0 && d < rt->n_devices ? rt->devices[d].name : "?";
}

int parla_trace_write(parla_runtime_t *rt, const char *chrome_path, const char *dot_path, char *summary,
                      size_t summary_cap)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_trace_write: runtime is NULL");
    parla__trace_t *tr = rt->trace;
    if (tr == NULL)
        return parla__error(PARLA_ESTATE, "parla_trace_write: tracing is off (set parla_config_t.trace)");
    size_t n_segs = 0, cap_segs = 1024, n_edges = 0, cap_edges = 1024, n_tasks = 0, n_sedges = 0;
    size_t n_items = 0, cap_items = 1024, n_copies = 0;
    tseg_t *segs = malloc(cap_segs * sizeof *segs);
    tedge_t *edges = malloc(cap_edges * sizeof *edges);
    ditem_t *items = malloc(cap_items * sizeof *items);
    tinfo_t *tasks = NULL;
    sedge_t *sedges = NULL;
    size_t *order = NULL;
    int *lane_base = NULL, *n_lanes = NULL;
    uint64_t *lane_end = NULL;
    int rc = 0;
    if (!segs || !edges || !items) {
        rc = PARLA_ENOMEM;
        goto out;
    }
    /* Gather. */
    for (int i = 0; i < tr->n_buffers; i++) {
        struct parla__tbuf *b = &tr->buffers[i];
        for (tchunk_t *c = b->head; c; c = c->next)
            for (size_t k = 0; k < c->n; k++) {
                parla__tev_t *e = &c->ev[k];
                if (e->kind == PARLA__TEV_TASK) {
                    if (n_segs == cap_segs && grow((void **)&segs, &cap_segs, sizeof *segs) != 0) {
                        rc = PARLA_ENOMEM;
                        goto out;
                    }
                    tseg_t *s = &segs[n_segs++];
                    memset(s, 0, sizeof *s);
                    s->serial = e->serial;
                    s->start = e->ts - tr->t0;
                    s->end = e->b ? e->b - tr->t0 : s->start;
                    s->worker = e->worker;
                    s->device = e->device;
                    s->state = (int)e->a;
                    memcpy(s->f, e->f, sizeof s->f);
                    s->prev = -1;
                } else if (e->kind == PARLA__TEV_EDGE) {
                    if (n_edges == cap_edges && grow((void **)&edges, &cap_edges, sizeof *edges) != 0) {
                        rc = PARLA_ENOMEM;
                        goto out;
                    }
                    edges[n_edges++] = (tedge_t){e->a, e->serial, (int)e->b};
                } else if (e->kind == PARLA__TEV_COPY || e->kind == PARLA__TEV_WORK) {
                    if (n_items == cap_items && grow((void **)&items, &cap_items, sizeof *items) != 0) {
                        rc = PARLA_ENOMEM;
                        goto out;
                    }
                    items[n_items++] = (ditem_t){e->ts - tr->t0, e->b > e->ts ? e->b - tr->t0 : e->ts - tr->t0,
                                                 e->device, 0, e, 0};
                    n_copies += e->kind == PARLA__TEV_COPY;
                }
            }
    }
    /* Tasks from their segments. */
    qsort(segs, n_segs, sizeof *segs, cmp_seg);
    tasks = malloc((n_segs ? n_segs : 1) * sizeof *tasks);
    if (!tasks) {
        rc = PARLA_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_segs; i++) {
        tseg_t *s = &segs[i];
        if (n_tasks == 0 || tasks[n_tasks - 1].serial != s->serial) {
            tinfo_t *t = &tasks[n_tasks++];
            memset(t, 0, sizeof *t);
            t->serial = s->serial;
            t->name = "";
            t->start = s->start;
            t->seg0 = i;
            t->crit_prev = UINT64_MAX;
        }
        tinfo_t *t = &tasks[n_tasks - 1];
        t->nseg++;
        if (s->end > t->end)
            t->end = s->end;
        t->worker = s->worker;
        t->device = s->device;
        t->state = s->state;
        memcpy(t->f, s->f, sizeof t->f);
        s->task = n_tasks - 1;
    }
    for (int i = 0; i < tr->n_buffers; i++) {
        struct parla__tbuf *b = &tr->buffers[i];
        for (size_t k = 0; k < b->n_names; k++) {
            tinfo_t *t = find(tasks, n_tasks, b->names[k].serial);
            if (t)
                t->name = b->names[k].name;
        }
    }
    /* A dependency given both explicitly and by a data hazard is one edge (the
     * lowest kind: explicit first). */
    qsort(edges, n_edges, sizeof *edges, cmp_edge);
    if (n_edges > 1) {
        size_t u = 1;
        for (size_t e = 1; e < n_edges; e++)
            if (edges[e].pred != edges[u - 1].pred || edges[e].succ != edges[u - 1].succ)
                edges[u++] = edges[e];
        n_edges = u;
    }
    /* Critical path: the longest chain of body time through the segment graph
     * (a task's segments in turn, dependencies from a task's last segment to a
     * successor's first, awaits to the segment that resumed). A segment starts
     * after every segment before it in the graph has ended, so start order is
     * a topological order. */
    sedges = malloc((n_edges + n_segs + 1) * sizeof *sedges);
    order = malloc((n_segs ? n_segs : 1) * sizeof *order);
    if (!sedges || !order) {
        rc = PARLA_ENOMEM;
        goto out;
    }
    for (size_t e = 0; e < n_edges; e++) {
        tinfo_t *p = find(tasks, n_tasks, edges[e].pred), *s = find(tasks, n_tasks, edges[e].succ);
        if (p && s)
            sedges[n_sedges++] = (sedge_t){edge_target(segs, p, s, edges[e].kind), p->seg0 + p->nseg - 1};
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
    size_t crit_tasks = 0;
    double crit_time = last >= 0 ? segs[last].path : 0.0;
    for (int64_t k = last; k >= 0; k = segs[k].prev) {
        tinfo_t *t = &tasks[segs[k].task];
        if (!t->critical) {
            t->critical = true;
            crit_tasks++;
        }
        int64_t p = segs[k].prev;
        if (p >= 0 && segs[p].task != segs[k].task)
            t->crit_prev = tasks[segs[p].task].serial;
    }
    uint64_t first_start = UINT64_MAX, last_end = 0;
    for (size_t i = 0; i < n_segs; i++) {
        if (segs[i].start < first_start)
            first_start = segs[i].start;
        if (segs[i].end > last_end)
            last_end = segs[i].end;
    }
    uint64_t span = n_segs ? last_end - first_start : 0;

    if (chrome_path) {
        /* Device tracks: one lane per concurrent slot, so that no two slices on
         * a track overlap (the Trace Event format nests slices; it cannot show
         * partial overlaps). */
        for (size_t i = 0; i < n_segs; i++) {
            if (n_items == cap_items && grow((void **)&items, &cap_items, sizeof *items) != 0) {
                rc = PARLA_ENOMEM;
                goto out;
            }
            items[n_items++] = (ditem_t){segs[i].start, segs[i].end, segs[i].device, 0, NULL, i};
        }
        qsort(items, n_items, sizeof *items, cmp_ditem);
        lane_base = calloc((size_t)rt->n_devices + 1, sizeof *lane_base);
        n_lanes = calloc((size_t)rt->n_devices + 1, sizeof *n_lanes);
        lane_end = malloc((n_items ? n_items : 1) * sizeof *lane_end);
        if (!lane_base || !n_lanes || !lane_end) {
            rc = PARLA_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n_items;) {
            int d = items[i].device;
            int lanes = 0;
            for (; i < n_items && items[i].device == d; i++) {
                int l = 0;
                while (l < lanes && lane_end[l] > items[i].start)
                    l++;
                if (l == lanes)
                    lanes++;
                lane_end[l] = items[i].end;
                items[i].lane = l;
            }
            if (d >= 0 && d < rt->n_devices)
                n_lanes[d] = lanes;
        }
        for (int d = 0; d < rt->n_devices; d++) {
            if (n_lanes[d] == 0)
                n_lanes[d] = 1; /* every device has a track, used or not */
            lane_base[d + 1] = lane_base[d] + n_lanes[d];
        }
        FILE *f = fopen(chrome_path, "w");
        if (!f) {
            rc = parla__error(PARLA_ESYS, "cannot open %s for writing", chrome_path);
            goto out;
        }
        fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
        fprintf(f, "{\"ph\":\"M\",\"pid\":1,\"name\":\"process_name\",\"args\":{\"name\":\"workers\"}}");
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"name\":\"process_name\",\"args\":{\"name\":\"devices\"}}");
        for (int i = 0; i < rt->n_workers; i++)
            fprintf(f, ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"worker %d\"}}",
                    i, i);
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"other threads\"}}",
                rt->n_workers);
        for (int d = 0; d < rt->n_devices; d++)
            for (int l = 0; l < n_lanes[d]; l++) {
                int tid = lane_base[d] + l;
                fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s%s",
                        tid, rt->devices[d].name, l ? " #" : "");
                if (l)
                    fprintf(f, "%d", l + 1);
                fprintf(f, "\"}}");
                fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"tid\":%d,\"name\":\"thread_sort_index\",\"args\":"
                           "{\"sort_index\":%d}}", tid, tid);
            }
        /* Task segments on their workers' tracks (a worker runs one body at a
         * time; a body that waits runs others inside it, nested). */
        for (size_t i = 0; i < n_segs; i++) {
            tseg_t *s = &segs[i];
            tinfo_t *t = &tasks[s->task];
            int tid = s->worker < 0 ? rt->n_workers : s->worker;
            fprintf(f, ",\n{\"ph\":\"X\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":", tid,
                    (double)s->start / 1e3, (double)(s->end - s->start) / 1e3);
            json_string(f, t->name);
            fprintf(f, ",\"cat\":\"task\",\"args\":{\"task\":%llu,\"device\":\"%s\",\"worker\":%d,\"state\":\"%s\"",
                    (unsigned long long)s->serial, device_name(rt, s->device), s->worker,
                    parla_task_state_name((parla_task_state_t)s->state));
            if (t->nseg > 1)
                fprintf(f, ",\"segment\":%zu,\"segments\":%zu", i - t->seg0 + 1, t->nseg);
            if (t->critical)
                fprintf(f, ",\"critical\":true");
            if (s->f[3] != 0.0f)
                fprintf(f, ",\"locality\":%.4f,\"transfer\":%.4f,\"load\":%.4f,\"score\":%.4f", s->f[0], s->f[1],
                        s->f[2], s->f[3]);
            fprintf(f, "}}");
        }
        /* Device lanes: task segments, device work after runahead, copies. */
        for (size_t i = 0; i < n_items; i++) {
            ditem_t *it = &items[i];
            if (it->device < 0 || it->device >= rt->n_devices)
                continue;
            int tid = lane_base[it->device] + it->lane;
            fprintf(f, ",\n{\"ph\":\"X\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":", tid,
                    (double)it->start / 1e3, (double)(it->end - it->start) / 1e3);
            const parla__tev_t *e = it->ev;
            if (e == NULL) {
                tseg_t *s = &segs[it->seg];
                json_string(f, tasks[s->task].name);
                fprintf(f, ",\"cat\":\"task\",\"args\":{\"task\":%llu,\"device\":\"%s\",\"worker\":%d,\"state\":\"%s\"%s}}",
                        (unsigned long long)s->serial, device_name(rt, s->device), s->worker,
                        parla_task_state_name((parla_task_state_t)s->state),
                        tasks[s->task].critical ? ",\"critical\":true" : "");
            } else if (e->kind == PARLA__TEV_COPY) {
                fprintf(f, "\"copy %s -> %s\",\"cat\":\"copy\",\"args\":{\"bytes\":%llu,\"task\":%lld}}",
                        device_name(rt, (int)e->f[0]), device_name(rt, e->device), (unsigned long long)e->a,
                        e->serial == UINT64_MAX ? -1LL : (long long)e->serial);
            } else {
                /* From the body's return to the completion of the work it queued. */
                tinfo_t *t = find(tasks, n_tasks, e->serial);
                json_string(f, t ? t->name : "task");
                fprintf(f, ",\"cat\":\"device work\",\"args\":{\"task\":%llu,\"runahead\":true}}",
                        (unsigned long long)e->serial);
            }
        }
        /* Dependencies as flow arrows from the end of the predecessor to the
         * start of the segment it let run, on the worker tracks. */
        for (size_t e = 0; e < n_edges; e++) {
            tinfo_t *p = find(tasks, n_tasks, edges[e].pred), *s = find(tasks, n_tasks, edges[e].succ);
            if (!p || !s)
                continue;
            tseg_t *from = &segs[p->seg0 + p->nseg - 1], *to = &segs[edge_target(segs, p, s, edges[e].kind)];
            int ptid = from->worker < 0 ? rt->n_workers : from->worker;
            int stid = to->worker < 0 ? rt->n_workers : to->worker;
            const char *name = edge_names[edges[e].kind >= 0 && edges[e].kind < 4 ? edges[e].kind : 0];
            fprintf(f, ",\n{\"ph\":\"s\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"id\":%zu,\"name\":\"%s\",\"cat\":\"dep\"}",
                    ptid, (double)from->end / 1e3 - 0.001, e, name);
            fprintf(f,
                    ",\n{\"ph\":\"f\",\"bp\":\"e\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"id\":%zu,\"name\":\"%s\","
                    "\"cat\":\"dep\"}",
                    stid, (double)to->start / 1e3 + 0.001, e, name);
        }
        for (int i = 0; i < tr->n_buffers; i++)
            for (tchunk_t *c = tr->buffers[i].head; c; c = c->next)
                for (size_t k = 0; k < c->n; k++) {
                    parla__tev_t *e = &c->ev[k];
                    if (e->kind == PARLA__TEV_EVICT && e->device >= 0 && e->device < rt->n_devices)
                        fprintf(f,
                                ",\n{\"ph\":\"i\",\"s\":\"t\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"name\":\"evict\","
                                "\"cat\":\"evict\",\"args\":{\"bytes\":%llu}}",
                                lane_base[e->device], (double)(e->ts - tr->t0) / 1e3, (unsigned long long)e->a);
                }
        fprintf(f, "\n]}\n");
        if (fclose(f) != 0)
            rc = parla__error(PARLA_ESYS, "cannot write %s", chrome_path);
    }
    if (dot_path && rc == 0) {
        FILE *f = fopen(dot_path, "w");
        if (!f) {
            rc = parla__error(PARLA_ESYS, "cannot open %s for writing", dot_path);
            goto out;
        }
        static const char *const colors[] = {"lightgray", "lightblue", "palegreen", "lightsalmon", "plum", "khaki",
                                             "lightpink", "paleturquoise", "wheat"};
        static const char *const edge_styles[] = {"style=solid", "style=dashed, color=blue",
                                                  "style=dotted, color=gray40", "style=bold, color=darkgreen"};
        fprintf(f, "digraph parla {\n  node [shape=box, style=filled];\n");
        for (size_t i = 0; i < n_tasks; i++) {
            fprintf(f, "  t%llu [label=", (unsigned long long)tasks[i].serial);
            char label[320];
            snprintf(label, sizeof label, "%s\n%s %.3f ms", tasks[i].name, device_name(rt, tasks[i].device),
                     (double)(tasks[i].end - tasks[i].start) / 1e6);
            dot_string(f, label);
            fprintf(f, ", fillcolor=%s%s];\n", colors[(tasks[i].device < 0 ? 0 : tasks[i].device) % 9],
                    tasks[i].critical ? ", color=red, penwidth=3" : "");
        }
        for (size_t e = 0; e < n_edges; e++) {
            tinfo_t *p = find(tasks, n_tasks, edges[e].pred), *s = find(tasks, n_tasks, edges[e].succ);
            if (!p || !s)
                continue;
            int kind = edges[e].kind >= 0 && edges[e].kind < 4 ? edges[e].kind : 0;
            bool crit = s->critical && s->crit_prev == p->serial;
            fprintf(f, "  t%llu -> t%llu [%s%s];\n", (unsigned long long)p->serial, (unsigned long long)s->serial,
                    edge_styles[kind], crit ? ", color=red, penwidth=2.5" : "");
        }
        /* The legend: devices' colours, the critical path, the kinds of edges. */
        fprintf(f, "  subgraph cluster_legend {\n    label=\"legend\"; fontsize=10; style=rounded;\n");
        for (int d = 0; d < rt->n_devices; d++)
            fprintf(f, "    legend_d%d [label=\"task on %s\", fillcolor=%s];\n", d, rt->devices[d].name, colors[d % 9]);
        fprintf(f, "    legend_crit [label=\"critical path\", fillcolor=white, color=red, penwidth=3];\n");
        for (int k = 0; k < 4; k++)
            fprintf(f,
                    "    legend_e%d [label=\"\", shape=point]; legend_f%d [label=\"%s\", shape=plaintext, style=\"\"];\n"
                    "    legend_e%d -> legend_f%d [%s];\n",
                    k, k, edge_names[k], k, k, edge_styles[k]);
        fprintf(f, "  }\n}\n");
        if (fclose(f) != 0)
            rc = parla__error(PARLA_ESYS, "cannot write %s", dot_path);
    }
    if (summary && summary_cap > 0) {
        size_t len = 0;
#define OUT(...)                                                                                                 \
    do {                                                                                                         \
        if (len < summary_cap)                                                                                   \
            len += (size_t)snprintf(summary + len, summary_cap - len, __VA_ARGS__);                              \
    } while (0)
        double wall = (double)span * 1e-9;
        OUT("Parla run: %zu tasks in %.3f ms (first task start to last task end), %zu copies\n", n_tasks,
            (double)span * 1e-6, n_copies);
        OUT("%-10s %8s %8s %14s %14s %10s\n", "device", "tasks", "busy%", "bytes in", "bytes out", "evictions");
        /* Busy: the time bodies ran, as a union per worker on the CPU (a body
         * that waits and runs others counts once) and per GPU (bodies run side
         * by side on one device count once); suspended time is not busy. */
        for (size_t i = 0; i < n_segs; i++)
            order[i] = i;
        qsort_r(order, n_segs, sizeof *order, cmp_seg_dws, segs);
        for (int d = 0; d < rt->n_devices; d++) {
            size_t count = 0;
            for (size_t i = 0; i < n_tasks; i++)
                count += tasks[i].device == d;
            double busy = 0;
            uint64_t cur_lo = 0, cur_hi = 0;
            int cur_worker = INT32_MIN;
            for (size_t k = 0; k < n_segs; k++) {
                tseg_t *s = &segs[order[k]];
                if (s->device != d)
                    continue;
                if ((d == 0 && s->worker != cur_worker) || s->start > cur_hi) {
                    busy += (double)(cur_hi - cur_lo) * 1e-9;
                    cur_worker = s->worker;
                    cur_lo = s->start;
                    cur_hi = s->end;
                } else if (s->end > cur_hi) {
                    cur_hi = s->end;
                }
            }
            busy += (double)(cur_hi - cur_lo) * 1e-9;
            /* The CPU's capacity is all its workers; a GPU's is one device. */
            double cap = d == 0 ? (double)rt->n_workers : 1.0;
            OUT("%-10s %8zu %7.1f%% %14llu %14llu %10llu\n", rt->devices[d].name, count,
                wall > 0 ? 100.0 * busy / (wall * cap) : 0.0, (unsigned long long)atomic_load(&rt->devices[d].bytes_in),
                (unsigned long long)atomic_load(&rt->devices[d].bytes_out),
                (unsigned long long)atomic_load(&rt->devices[d].evictions));
        }
        if (last >= 0) {
            OUT("critical path: %zu tasks, %.3f ms of task time (%.1f%% of the run): ", crit_tasks, crit_time * 1e3,
                wall > 0 ? 100.0 * crit_time / wall : 0.0);
            size_t shown = 0;
            uint64_t prev_task = UINT64_MAX;
            for (int64_t k = last; k >= 0 && shown < 8; k = segs[k].prev) {
                if (segs[k].serial == prev_task)
                    continue;
                prev_task = segs[k].serial;
                OUT("%s%s", shown ? " <- " : "", tasks[segs[k].task].name);
                shown++;
            }
            if (crit_tasks > 8)
                OUT(" <- ... (%zu more)", crit_tasks - 8);
            OUT("\n");
        }
#undef OUT
    }
out:
    free(segs);
    free(edges);
    free(items);
    free(tasks);
    free(sedges);
    free(order);
    free(lane_base);
    free(n_lanes);
    free(lane_end);
    if (rc == PARLA_ENOMEM)
        return parla__error(rc, "parla_trace_write: out of memory");
    return rc;
}
