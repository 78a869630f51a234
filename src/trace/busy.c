/* trace/busy.c: busy-time accounting per device. A row per worker holds the
 * device-nanoseconds its bodies ran on each device, and the time of the
 * bodies run inside the current one (a body that waits runs others on the
 * same worker: they are theirs, not its). Only the row's worker writes it, so
 * the counters are plain relaxed atomics: readers see each one whole, at
 * most one body late. Rows are padded to cache lines. */
#include "trace/trace.h"

#include <stdatomic.h>
#include <stdlib.h>

#define LINE 64

typedef struct row {
    uint64_t inner;          /* ns of bodies run inside the current one so far (owner only) */
    _Atomic uint64_t dev[];  /* device-ns per device */
} row_t;

struct parla__trace_busy {
    int n_workers, n_devices;
    size_t stride; /* bytes per row, a multiple of LINE */
    unsigned char *rows;
};

static row_t *row(const parla__trace_busy_t *b, int worker)
{
    return (row_t *)(b->rows + (size_t)worker * b->stride);
}

parla__trace_busy_t *parla__trace_busy_create(int n_workers, int n_devices)
{
    if (n_workers < 1 || n_devices < 1)
        return NULL;
    parla__trace_busy_t *b = malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    size_t bytes = sizeof(row_t) + (size_t)n_devices * sizeof(_Atomic uint64_t);
    b->n_workers = n_workers;
    b->n_devices = n_devices;
    b->stride = (bytes + LINE - 1) / LINE * LINE;
    b->rows = aligned_alloc(LINE, b->stride * (size_t)n_workers);
    if (b->rows == NULL) {
        free(b);
        return NULL;
    }
    for (int w = 0; w < n_workers; w++) {
        row(b, w)->inner = 0;
        for (int d = 0; d < n_devices; d++)
            atomic_init(&row(b, w)->dev[d], 0);
    }
    return b;
}

void parla__trace_busy_destroy(parla__trace_busy_t *b)
{
    if (b == NULL)
        return;
    free(b->rows);
    free(b);
}

uint64_t parla__trace_busy_begin(parla__trace_busy_t *b, int worker)
{
    row_t *r = row(b, worker);
    uint64_t outer = r->inner;
    r->inner = 0;
    return outer;
}

static void add(row_t *r, int device, uint64_t ns)
{
    atomic_store_explicit(&r->dev[device], atomic_load_explicit(&r->dev[device], memory_order_relaxed) + ns,
                          memory_order_relaxed);
}

void parla__trace_busy_end(parla__trace_busy_t *b, int worker, uint64_t outer, uint64_t elapsed, const uint8_t *devices, int n,
                     double vcus)
{
    row_t *r = row(b, worker);
    uint64_t own = elapsed > r->inner ? elapsed - r->inner : 0;
    r->inner = outer + elapsed; /* the enclosing body's inner time now includes this one */
    static const uint8_t cpu = 0;
    if (n <= 0) {
        devices = &cpu;
        n = 1;
    }
    for (int k = 0; k < n; k++) {
        int d = devices[k];
        if (d >= b->n_devices)
            continue;
        double share = vcus > 0 ? vcus : d == 0 ? 1.0 / b->n_workers : 1.0;
        add(r, d, (uint64_t)((double)own * share + 0.5));
    }
}

double parla__trace_busy_seconds(const parla__trace_busy_t *b, int device)
{
    if (device < 0 || device >= b->n_devices)
        return 0.0;
    uint64_t ns = 0;
    for (int w = 0; w < b->n_workers; w++)
        ns += atomic_load_explicit(&row(b, w)->dev[device], memory_order_relaxed);
    return (double)ns * 1e-9;
}
