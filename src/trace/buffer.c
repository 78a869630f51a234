/* trace/buffer.c: the trace sink. Each worker of the owning runtime appends
 * fixed-size events to its own list of chunks (no lock: only that worker
 * writes it until the export, which runs when the runtime is quiescent);
 * every other thread appends to one shared buffer under its mutex. Names are
 * kept beside the events, per buffer, as (serial, copy) pairs. The typed
 * emitters are the only place that knows how a kind packs its fields. */
#include "trace/trace.h"

#include "util/util.h" /* thread identity (parla__self) */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK_EVENTS 4096

typedef struct tchunk {
    struct tchunk *next;
    size_t n;
    parla__trace_tev_t ev[CHUNK_EVENTS];
} tchunk_t;

typedef struct tname {
    uint64_t serial;
    char *name;
} tname_t;

typedef struct tbuf {
    pthread_mutex_t lock; /* used by the shared buffer only: protects its chunks and names (a leaf) */
    tchunk_t *head, *tail;
    tname_t *names;
    size_t n_names, cap_names;
} tbuf_t;

struct parla__trace {
    const void *owner; /* the runtime whose workers own buffers [0, n_workers) */
    uint64_t t0;       /* ns, CLOCK_MONOTONIC at start */
    int n_workers;
    tbuf_t *buffers; /* [0, n_workers) per worker, [n_workers] shared */
};

uint64_t parla__trace_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

parla__trace_t *parla__trace_create(const void *owner, int n_workers)
{
    parla__trace_t *tr = calloc(1, sizeof *tr);
    if (tr == NULL)
        return NULL;
    tr->owner = owner;
    tr->n_workers = n_workers > 0 ? n_workers : 0;
    tr->buffers = calloc((size_t)tr->n_workers + 1, sizeof *tr->buffers);
    if (tr->buffers == NULL) {
        free(tr);
        return NULL;
    }
    for (int i = 0; i <= tr->n_workers; i++)
        pthread_mutex_init(&tr->buffers[i].lock, NULL);
    tr->t0 = parla__trace_now_ns();
    return tr;
}

void parla__trace_destroy(parla__trace_t *tr)
{
    if (tr == NULL)
        return;
    for (int i = 0; i <= tr->n_workers; i++) {
        tbuf_t *b = &tr->buffers[i];
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
}

uint64_t parla__trace_start(const parla__trace_t *tr)
{
    return tr->t0;
}

/* The calling thread's buffer and its index (-1: the shared one, whose lock
 * must be held). */
static tbuf_t *my_buffer(parla__trace_t *tr, int *worker)
{
    parla__self_t *w = parla__self();
    if (w && tr->owner && (const void *)w->rt == tr->owner && w->index < tr->n_workers) {
        *worker = w->index;
        return &tr->buffers[w->index];
    }
    *worker = -1;
    return &tr->buffers[tr->n_workers];
}

static parla__trace_tev_t *append(tbuf_t *b)
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

/* Appends ev (its worker field set here) to the calling thread's buffer. */
static void emit(parla__trace_t *tr, parla__trace_tev_t ev)
{
    int worker;
    tbuf_t *b = my_buffer(tr, &worker);
    if (worker < 0)
        pthread_mutex_lock(&b->lock);
    parla__trace_tev_t *e = append(b);
    if (e) {
        *e = ev;
        e->worker = (int16_t)worker;
    }
    if (worker < 0)
        pthread_mutex_unlock(&b->lock);
}

void parla__trace_task(parla__trace_t *tr, uint64_t serial, uint64_t t0, uint64_t t1, int device, int state,
                       const parla_mapping_t *m)
{
    parla__trace_tev_t ev = {.kind = PARLA__TEV_TASK, .ts = t0, .b = t1, .serial = serial, .a = (uint64_t)state,
                       .device = (int16_t)device};
    if (m) {
        ev.flags = PARLA__TEVF_SCORES;
        ev.f[0] = (float)m->locality;
        ev.f[1] = (float)m->transfer;
        ev.f[2] = (float)m->load;
        ev.f[3] = (float)m->score;
    }
    emit(tr, ev);
}

void parla__trace_copy(parla__trace_t *tr, uint64_t serial, uint64_t t0, uint64_t t1, int to, int from,
                       uint64_t bytes)
{
    emit(tr, (parla__trace_tev_t){.kind = PARLA__TEV_COPY, .ts = t0, .b = t1, .serial = serial, .a = bytes,
                            .device = (int16_t)to, .f = {(float)from}});
}

void parla__trace_edge(parla__trace_t *tr, uint64_t ts, uint64_t pred, uint64_t succ, int kind)
{
    emit(tr, (parla__trace_tev_t){.kind = PARLA__TEV_EDGE, .ts = ts, .serial = succ, .a = pred, .b = (uint64_t)kind});
}

void parla__trace_evict(parla__trace_t *tr, uint64_t ts, int device, uint64_t bytes)
{
    emit(tr, (parla__trace_tev_t){.kind = PARLA__TEV_EVICT, .ts = ts, .a = bytes, .device = (int16_t)device});
}

void parla__trace_work(parla__trace_t *tr, uint64_t serial, uint64_t t0, uint64_t t1, int device)
{
    emit(tr, (parla__trace_tev_t){.kind = PARLA__TEV_WORK, .ts = t0, .b = t1, .serial = serial,
                            .device = (int16_t)device});
}

void parla__trace_task_name(parla__trace_t *tr, uint64_t serial, const char *name)
{
    int worker;
    tbuf_t *b = my_buffer(tr, &worker);
    if (worker < 0)
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
        b->names[b->n_names++] = (tname_t){serial, copy};
out:
    if (worker < 0)
        pthread_mutex_unlock(&b->lock);
}

int parla__trace_each_event(const parla__trace_t *tr, int (*fn)(const parla__trace_tev_t *e, void *arg), void *arg)
{
    for (int i = 0; i <= tr->n_workers; i++)
        for (const tchunk_t *c = tr->buffers[i].head; c; c = c->next)
            for (size_t k = 0; k < c->n; k++) {
                int rc = fn(&c->ev[k], arg);
                if (rc)
                    return rc;
            }
    return 0;
}

void parla__trace_each_name(const parla__trace_t *tr, void (*fn)(uint64_t serial, const char *name, void *arg),
                            void *arg)
{
    for (int i = 0; i <= tr->n_workers; i++) {
        const tbuf_t *b = &tr->buffers[i];
        for (size_t k = 0; k < b->n_names; k++)
            fn(b->names[k].serial, b->names[k].name, arg);
    }
}
