/*
 * trace/trace.h: the trace layer: fixed-size events appended per worker while a traced runtime runs,
 * exported by parla_trace_write. Uses util (and device names). Not installed.
 */
#ifndef PARLA_TRACE_H
#define PARLA_TRACE_H

#include "device/device.h"

enum {
    PARLA__TEV_TASK = 1, /* ts: start, b: end, a: final state, f: mapping scores */
    PARLA__TEV_EDGE = 2, /* serial: successor, a: predecessor serial, b: parla__edge_kind */
    PARLA__TEV_COPY = 3, /* ts: start, b: end, a: bytes, device: destination, f[0]: source */
    PARLA__TEV_EVICT = 4, /* a: bytes, device */
    PARLA__TEV_WORK = 5,  /* a runahead task's device work: ts: body end, b: complete, device */
};

/* What a traced edge is (PARLA__TEV_EDGE's b). */
enum parla__edge_kind {
    PARLA__EK_EXPLICIT = 0, /* a dependency given at submission */
    PARLA__EK_FLOW = 1,     /* a data flow: the successor reads what the predecessor writes */
    PARLA__EK_ORDER = 2,    /* a write-after-read or write-after-write hazard */
    PARLA__EK_AWAIT = 3,    /* the successor's body awaited the predecessor (parla_task_suspend_on) */
};

typedef struct parla__tev {
    uint64_t ts, serial, a, b;
    int32_t kind;
    int16_t worker, device;
    float f[4];
} parla__tev_t;

typedef struct parla__trace parla__trace_t;

uint64_t parla__now_ns(void);
int parla__trace_init(parla_runtime_t *rt);
void parla__trace_free(parla_runtime_t *rt);
void parla__trace_event(parla_runtime_t *rt, const parla__tev_t *ev);
void parla__trace_name(parla_runtime_t *rt, parla_task_t *t);

#endif
