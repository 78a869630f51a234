/* trace.c: execution traces. Off by default: every hook is one branch on
 * rt->trace. When on, each worker appends fixed-size events to its own
 * chunked buffer (no lock); other threads share one buffer under a mutex.
 * At the end the events are written as Chrome trace JSON (Perfetto,
 * chrome://tracing), a DOT graph and a text summary with the critical path. */
#include "core/internal.h"

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

typedef struct tinfo {
    uint64_t serial;
    const char *name;
    uint64_t start, end; /* ns since t0 */
    int worker, device, state;
    float f[4];
    double path;   /* longest path ending here, seconds (critical path) */
    int64_t prev;  /* predecessor on that path, index or -1 */
} tinfo_t;

typedef struct tedge {
    uint64_t pred, succ;
} tedge_t;

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

typedef struct by_start {
    uint64_t start;
    size_t index;
} by_start_t;

static int cmp_start(const void *a, const void *b)
{
    uint64_t x = ((const by_start_t *)a)->start, y = ((const by_start_t *)b)->start;
    return x < y ? -1 : x > y;
}

static int cmp_serial(const void *a, const void *b)
{
    uint64_t x = ((const tinfo_t *)a)->serial, y = ((const tinfo_t *)b)->serial;
    return x < y ? -1 : x > y;
}

static int cmp_edge(const void *a, const void *b)
{
    const tedge_t *x = a, *y = b;
    if (x->succ != y->succ)
        return x->succ < y->succ ? -1 : 1;
    return x->pred < y->pred ? -1 : x->pred > y->pred;
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

int parla_trace_write(parla_runtime_t *rt, const char *chrome_path, const char *dot_path, char *summary,
                      size_t summary_cap)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_trace_write: runtime is NULL");
    parla__trace_t *tr = rt->trace;
    if (tr == NULL)
        return parla__error(PARLA_ESTATE, "parla_trace_write: tracing is off (set parla_config_t.trace)");
    /* Gather. */
    size_t n_tasks = 0, cap_tasks = 1024, n_edges = 0, cap_edges = 1024;
    tinfo_t *tasks = malloc(cap_tasks * sizeof *tasks);
    tedge_t *edges = malloc(cap_edges * sizeof *edges);
    size_t n_copies = 0;
    int rc = 0;
    if (!tasks || !edges) {
        rc = PARLA_ENOMEM;
        goto out;
    }
    for (int i = 0; i < tr->n_buffers; i++) {
        struct parla__tbuf *b = &tr->buffers[i];
        for (tchunk_t *c = b->head; c; c = c->next)
            for (size_t k = 0; k < c->n; k++) {
                parla__tev_t *e = &c->ev[k];
                if (e->kind == PARLA__TEV_TASK) {
                    if (n_tasks == cap_tasks && grow((void **)&tasks, &cap_tasks, sizeof *tasks) != 0) {
                        rc = PARLA_ENOMEM;
                        goto out;
                    }
                    tinfo_t *t = &tasks[n_tasks++];
                    memset(t, 0, sizeof *t);
                    t->serial = e->serial;
                    t->start = e->ts - tr->t0;
                    t->end = e->b ? e->b - tr->t0 : t->start;
                    t->worker = e->worker;
                    t->device = e->device;
                    t->state = (int)e->a;
                    memcpy(t->f, e->f, sizeof t->f);
                    t->name = "";
                    t->prev = -1;
                } else if (e->kind == PARLA__TEV_EDGE) {
                    if (n_edges == cap_edges && grow((void **)&edges, &cap_edges, sizeof *edges) != 0) {
                        rc = PARLA_ENOMEM;
                        goto out;
                    }
                    edges[n_edges++] = (tedge_t){e->a, e->serial};
                } else if (e->kind == PARLA__TEV_COPY) {
                    n_copies++;
                }
            }
    }
    qsort(tasks, n_tasks, sizeof *tasks, cmp_serial);
    /* A suspended task has one START event per segment: merge them. */
    size_t w = 0;
    for (size_t i = 0; i < n_tasks; i++) {
        if (w > 0 && tasks[w - 1].serial == tasks[i].serial) {
            if (tasks[i].end > tasks[w - 1].end)
                tasks[w - 1].end = tasks[i].end;
            if (tasks[i].start < tasks[w - 1].start)
                tasks[w - 1].start = tasks[i].start;
            continue;
        }
        tasks[w++] = tasks[i];
    }
    n_tasks = w;
    for (int i = 0; i < tr->n_buffers; i++) {
        struct parla__tbuf *b = &tr->buffers[i];
        for (size_t k = 0; k < b->n_names; k++) {
            tinfo_t *t = find(tasks, n_tasks, b->names[k].serial);
            if (t)
                t->name = b->names[k].name;
        }
    }
    qsort(edges, n_edges, sizeof *edges, cmp_edge);
    /* A dependency given both explicitly and by a data hazard is one edge. */
    if (n_edges > 1) {
        size_t u = 1;
        for (size_t e = 1; e < n_edges; e++)
            if (edges[e].pred != edges[u - 1].pred || edges[e].succ != edges[u - 1].succ)
                edges[u++] = edges[e];
        n_edges = u;
    }
    /* Critical path: longest chain of task durations along dependency
     * edges. Sorting by start time gives a topological order, since a task
     * starts only after its predecessors have ended. */
    {
        by_start_t *order = malloc((n_tasks ? n_tasks : 1) * sizeof *order);
        if (!order) {
            rc = PARLA_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n_tasks; i++)
            order[i] = (by_start_t){tasks[i].start, i};
        qsort(order, n_tasks, sizeof *order, cmp_start);
        for (size_t k = 0; k < n_tasks; k++) {
            tinfo_t *t = &tasks[order[k].index];
            double own = (double)(t->end - t->start) * 1e-9;
            t->path = own;
            /* Edges into t: binary search the first with succ == serial. */
            size_t lo = 0, hi = n_edges;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (edges[mid].succ < t->serial)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (size_t e = lo; e < n_edges && edges[e].succ == t->serial; e++) {
                tinfo_t *p = find(tasks, n_tasks, edges[e].pred);
                if (p && p->path + own > t->path) {
                    t->path = p->path + own;
                    t->prev = p - tasks;
                }
            }
        }
        free(order);
    }
    uint64_t span = 0;
    for (size_t i = 0; i < n_tasks; i++)
        if (tasks[i].end > span)
            span = tasks[i].end;

    if (chrome_path) {
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
            fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s\"}}", d,
                    rt->devices[d].name);
        for (size_t i = 0; i < n_tasks; i++) {
            tinfo_t *t = &tasks[i];
            int tid = t->worker < 0 ? rt->n_workers : t->worker;
            for (int pid = 1; pid <= 2; pid++) {
                fprintf(f, ",\n{\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":", pid,
                        pid == 1 ? tid : t->device, (double)t->start / 1e3, (double)(t->end - t->start) / 1e3);
                json_string(f, t->name);
                fprintf(f, ",\"cat\":\"task\",\"args\":{\"task\":%llu,\"device\":\"%s\",\"worker\":%d,\"state\":\"%s\"",
                        (unsigned long long)t->serial, t->device >= 0 && t->device < rt->n_devices ? rt->devices[t->device].name : "?",
                        t->worker, parla_task_state_name((parla_task_state_t)t->state));
                if (t->f[3] != 0.0f)
                    fprintf(f, ",\"locality\":%.4f,\"transfer\":%.4f,\"load\":%.4f,\"score\":%.4f", t->f[0], t->f[1],
                            t->f[2], t->f[3]);
                fprintf(f, "}}");
            }
        }
        /* Dependencies as flow arrows from the end of the predecessor to the
         * start of the successor, on the worker tracks. */
        for (size_t e = 0; e < n_edges; e++) {
            tinfo_t *p = find(tasks, n_tasks, edges[e].pred), *s = find(tasks, n_tasks, edges[e].succ);
            if (!p || !s)
                continue;
            int ptid = p->worker < 0 ? rt->n_workers : p->worker, stid = s->worker < 0 ? rt->n_workers : s->worker;
            fprintf(f, ",\n{\"ph\":\"s\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"id\":%zu,\"name\":\"dep\",\"cat\":\"dep\"}",
                    ptid, (double)p->end / 1e3 - 0.001, e);
            fprintf(f,
                    ",\n{\"ph\":\"f\",\"bp\":\"e\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"id\":%zu,\"name\":\"dep\",\"cat\":\"dep\"}",
                    stid, (double)s->start / 1e3 + 0.001, e);
        }
        for (int i = 0; i < tr->n_buffers; i++)
            for (tchunk_t *c = tr->buffers[i].head; c; c = c->next)
                for (size_t k = 0; k < c->n; k++) {
                    parla__tev_t *e = &c->ev[k];
                    if (e->kind == PARLA__TEV_COPY)
                        fprintf(f,
                                ",\n{\"ph\":\"X\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":\"copy %s -> %s\","
                                "\"cat\":\"copy\",\"args\":{\"bytes\":%llu,\"task\":%lld}}",
                                e->device, (double)(e->ts - tr->t0) / 1e3, (double)(e->b - e->ts) / 1e3,
                                rt->devices[(int)e->f[0]].name, rt->devices[e->device].name, (unsigned long long)e->a,
                                e->serial == UINT64_MAX ? -1LL : (long long)e->serial);
                    else if (e->kind == PARLA__TEV_WORK) {
                        /* From the body's return to the completion of the work it queued. */
                        tinfo_t *t = find(tasks, n_tasks, e->serial);
                        fprintf(f, ",\n{\"ph\":\"X\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":",
                                e->device, (double)(e->ts - tr->t0) / 1e3, (double)(e->b - e->ts) / 1e3);
                        json_string(f, t ? t->name : "task");
                        fprintf(f, ",\"cat\":\"device work\",\"args\":{\"task\":%llu,\"runahead\":true}}",
                                (unsigned long long)e->serial);
                    } else if (e->kind == PARLA__TEV_EVICT)
                        fprintf(f,
                                ",\n{\"ph\":\"i\",\"s\":\"t\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"name\":\"evict\","
                                "\"cat\":\"evict\",\"args\":{\"bytes\":%llu}}",
                                e->device, (double)(e->ts - tr->t0) / 1e3, (unsigned long long)e->a);
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
        fprintf(f, "digraph parla {\n  node [shape=box, style=filled];\n");
        for (size_t i = 0; i < n_tasks; i++) {
            fprintf(f, "  t%llu [label=", (unsigned long long)tasks[i].serial);
            char label[320];
            snprintf(label, sizeof label, "%s\n%s %.3f ms", tasks[i].name,
                     tasks[i].device >= 0 && tasks[i].device < rt->n_devices ? rt->devices[tasks[i].device].name : "?",
                     (double)(tasks[i].end - tasks[i].start) / 1e6);
            dot_string(f, label);
            fprintf(f, ", fillcolor=%s];\n", colors[(tasks[i].device < 0 ? 0 : tasks[i].device) % 9]);
        }
        for (size_t e = 0; e < n_edges; e++)
            if (find(tasks, n_tasks, edges[e].pred) && find(tasks, n_tasks, edges[e].succ))
                fprintf(f, "  t%llu -> t%llu;\n", (unsigned long long)edges[e].pred, (unsigned long long)edges[e].succ);
        fprintf(f, "}\n");
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
        for (int d = 0; d < rt->n_devices; d++) {
            size_t count = 0;
            double busy = 0;
            for (size_t i = 0; i < n_tasks; i++)
                if (tasks[i].device == d) {
                    count++;
                    busy += (double)(tasks[i].end - tasks[i].start) * 1e-9;
                }
            /* The CPU's capacity is all its workers; a GPU's is one device. */
            double cap = d == 0 ? (double)rt->n_workers : 1.0;
            OUT("%-10s %8zu %7.1f%% %14llu %14llu %10llu\n", rt->devices[d].name, count,
                wall > 0 ? 100.0 * busy / (wall * cap) : 0.0, (unsigned long long)atomic_load(&rt->devices[d].bytes_in),
                (unsigned long long)atomic_load(&rt->devices[d].bytes_out),
                (unsigned long long)atomic_load(&rt->devices[d].evictions));
        }
        tinfo_t *last = NULL;
        for (size_t i = 0; i < n_tasks; i++)
            if (!last || tasks[i].path > last->path)
                last = &tasks[i];
        if (last) {
            size_t count = 0;
            for (tinfo_t *t = last; t; t = t->prev >= 0 ? &tasks[t->prev] : NULL)
                count++;
            OUT("critical path: %zu tasks, %.3f ms of task time (%.1f%% of the run): ", count, last->path * 1e3,
                wall > 0 ? 100.0 * last->path / wall : 0.0);
            size_t shown = 0;
            for (tinfo_t *t = last; t && shown < 8; t = t->prev >= 0 ? &tasks[t->prev] : NULL, shown++)
                OUT("%s%s", shown ? " <- " : "", t->name);
            if (count > 8)
                OUT(" <- ... (%zu more)", count - 8);
            OUT("\n");
        }
#undef OUT
    }
out:
    free(tasks);
    free(edges);
    if (rc == PARLA_ENOMEM)
        return parla__error(rc, "parla_trace_write: out of memory");
    return rc;
}
