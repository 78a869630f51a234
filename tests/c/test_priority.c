/*
 * test_priority: with every worker held by a gate task, the main thread
 * submits low-, normal- and high-priority tasks in an interleaved order; once
 * the gates open, high-priority tasks must start before normal ones, and
 * normal before low. With one worker the order is exact. With W workers a
 * worker may record its start a moment after another worker took the next
 * task, so up to W-1 inversions at each level boundary are tolerated (and no
 * more). A second case makes the tasks ready from a worker (all depend on one
 * task), with one worker, where the order must again be exact.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

static atomic_int gate_open;
static atomic_int gates_running;
static atomic_long seq;
static atomic_long started[3]; /* per level: 0 low, 1 normal, 2 high */

struct rec {
    int level;
    long start;
    long higher_started_at_start; /* tasks of higher levels already started */
};

static int gate_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&gates_running, 1);
    while (!atomic_load(&gate_open)) {
    }
    return 0;
}

static int rec_body(parla_task_t *task, void *arg)
{
    (void)task;
    struct rec *r = arg;
    long higher = 0;
    for (int l = r->level + 1; l < 3; l++)
        higher += atomic_load(&started[l]);
    r->higher_started_at_start = higher;
    r->start = atomic_fetch_add(&seq, 1);
    atomic_fetch_add(&started[r->level], 1);
    for (volatile int i = 0; i < 200; i++) {
    }
    return 0;
}

static const int prio_of_level[3] = {-1, 0, 1};

static void check_order(struct rec *recs, long n, long per_level[3], long tolerance, const char *what)
{
    /* A task of level l, when it starts, must see all tasks of the levels
     * above it started, less the tolerance. */
    long worst = 0;
    for (long i = 0; i < n; i++) {
        long higher_total = 0;
        for (int l = recs[i].level + 1; l < 3; l++)
            higher_total += per_level[l];
        long missing = higher_total - recs[i].higher_started_at_start;
        if (missing > worst)
            worst = missing;
    }
    CHECK(worst <= tolerance,
          "%s: a task started while %ld tasks of a higher priority had not started yet "
          "(tolerance %ld)",
          what, worst, tolerance);
    printf("%s: worst inversion %ld (tolerance %ld)\n", what, worst, tolerance);
}

static void gated(int workers, long per, int rounds)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = workers;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    long n = 3 * per;
    struct rec *recs = calloc((size_t)n, sizeof *recs);
    CHECK(recs != NULL, "calloc");
    for (int round = 0; round < rounds; round++) {
        char what[96];
        snprintf(what, sizeof what, "gated, %d workers, round %d", workers, round);
        check_set_phase(what);
        atomic_store(&gate_open, 0);
        atomic_store(&gates_running, 0);
        atomic_store(&seq, 0);
        for (int l = 0; l < 3; l++)
            atomic_store(&started[l], 0);
        for (int w = 0; w < workers; w++) {
            parla_task_t *g;
            CHECK_OK(parla_task_create(rt, gate_body, NULL, &g));
            CHECK_OK(parla_task_submit(g));
            parla_task_release(g);
        }
        double t0 = now_s();
        while (atomic_load(&gates_running) < workers) {
            CHECK(now_s() - t0 < 10.0, "gates did not all start: %d of %d",
                  atomic_load(&gates_running), workers);
        }
        /* Interleaved submission: low, normal, high, low, ... and the
         * reverse in odd rounds. */
        for (long i = 0; i < n; i++) {
            int level = (int)(i % 3);
            if (round & 1)
                level = 2 - level;
            recs[i].level = level;
            recs[i].start = -1;
            parla_task_t *t;
            CHECK_OK(parla_task_create(rt, rec_body, &recs[i], &t));
            if (prio_of_level[level] != 0)
                CHECK_OK(parla_task_set_priority(t, prio_of_level[level] * (1 + (int)(i % 7))));
            CHECK_OK(parla_task_submit(t));
            parla_task_release(t);
        }
        atomic_store(&gate_open, 1);
        CHECK_OK(parla_runtime_wait_all(rt));
        long per_level[3] = {per, per, per};
        for (long i = 0; i < n; i++)
            CHECK(recs[i].start >= 0, "task %ld did not run", i);
        check_order(recs, n, per_level, workers - 1, what);
    }
    free(recs);
    CHECK_OK(parla_runtime_destroy(rt));
}

static int nop_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return 0;
}

static void released_by_worker(long per)
{
    check_set_phase("released by a worker, 1 worker");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 1;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    long n = 3 * per;
    struct rec *recs = calloc((size_t)n, sizeof *recs);
    CHECK(recs != NULL, "calloc");
    atomic_store(&seq, 0);
    for (int l = 0; l < 3; l++)
        atomic_store(&started[l], 0);
    parla_task_t *root;
    CHECK_OK(parla_task_create(rt, nop_body, NULL, &root));
    for (long i = 0; i < n; i++) {
        recs[i].level = (int)(i % 3);
        recs[i].start = -1;
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, rec_body, &recs[i], &t));
        if (prio_of_level[recs[i].level] != 0)
            CHECK_OK(parla_task_set_priority(t, prio_of_level[recs[i].level]));
        CHECK_OK(parla_task_add_dependency(t, root));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_task_submit(root));
    parla_task_release(root);
    CHECK_OK(parla_runtime_wait_all(rt));
    long per_level[3] = {per, per, per};
    check_order(recs, n, per_level, 0, "released by a worker, 1 worker");
    free(recs);
    CHECK_OK(parla_runtime_destroy(rt));
}

int main(void)
{
    check_watchdog(50);
    long per = scaled(2000, 100);
    gated(1, per, 2);
    gated(2, per, 4);
    gated(4, per, 2);
    released_by_worker(per);
    printf("test_priority: ok\n");
    return 0;
}
