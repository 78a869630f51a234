/* replay_impl.h: the plan of a recorded graph's data hazards, shared by data/replay.c (making it) and
 * data/replay_apply.c (applying it to the stores' histories at each replay). Private to the data layer. */
#ifndef PARLA_DATA_REPLAY_IMPL_H
#define PARLA_DATA_REPLAY_IMPL_H

#include "data/impl.h"

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

#endif
