/*
 * test_random_dag: many random DAGs (up to 200 tasks each, edges from earlier
 * to later index, random priorities). Some tasks are submitted late and in
 * reverse order, so that they are dependencies before they are submitted
 * (placeholders) and some dependencies are added on tasks that are already
 * running or finished. Checks that every task runs exactly once and only
 * after all its predecessors have ended, using start/end sequence numbers
 * drawn from one atomic counter.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

#define MAX_TASKS 200
#define MAX_PREDS 8

static atomic_ulong seq;

struct node {
    atomic_int runs;
    unsigned long start, end;
    int npreds;
    int preds[MAX_PREDS];
    int spin; /* a little work, so that tasks overlap */
};

static struct node nodes[MAX_TASKS];
static parla_task_t *tasks[MAX_TASKS];

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic, so a failure can be replayed from the seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static int body(parla_task_t *task, void *arg)
{
    (void)task;
    struct node *n = arg;
    n->start = atomic_fetch_add(&seq, 1);
    atomic_fetch_add(&n->runs, 1);
    for (volatile int i = 0; i < n->spin; i++) {
    }
    n->end = atomic_fetch_add(&seq, 1);
    return 0;
}

static void run_dag(parla_runtime_t *rt, long dag)
{
    int n = 1 + (int)(rnd() % MAX_TASKS);
    int mode = (int)(rnd() % 4); /* 0 sparse, 1 dense-ish, 2 chain-ish, 3 wide */
    int deferred[MAX_TASKS];
    int ndeferred = 0;
    int defer_pct = (int)(rnd() % 40);

    for (int i = 0; i < n; i++) {
        struct node *nd = &nodes[i];
        atomic_store(&nd->runs, 0);
        nd->start = nd->end = 0;
        nd->npreds = 0;
        nd->spin = (rnd() % 8 == 0) ? (int)(rnd() % 2000) : 0;
        if (i > 0) {
            int want;
            switch (mode) {
            case 0: want = (int)(rnd() % 3); break;
            case 1: want = (int)(rnd() % (MAX_PREDS + 1)); break;
            case 2: want = 1; break;
            default: want = (rnd() % 10 == 0) ? 1 : 0; break;
            }
            for (int k = 0; k < want && nd->npreds < MAX_PREDS; k++) {
                int p;
                if (mode == 2)
                    p = i - 1 - (int)(rnd() % (i < 3 ? i : 3));
                else
                    p = (int)(rnd() % (uint64_t)i);
                int dup = 0;
                for (int q = 0; q < nd->npreds; q++)
                    dup |= nd->preds[q] == p;
                if (!dup)
                    nd->preds[nd->npreds++] = p;
            }
        }
        CHECK_OK(parla_task_create(rt, body, nd, &tasks[i]));
        int prio = (int)(rnd() % 3) - 1;
        if (prio != 0)
            CHECK_OK(parla_task_set_priority(tasks[i], prio * (1 + (int)(rnd() % 5))));
        for (int q = 0; q < nd->npreds; q++)
            CHECK_OK(parla_task_add_dependency(tasks[i], tasks[nd->preds[q]]));
        if ((int)(rnd() % 100) < defer_pct)
            deferred[ndeferred++] = i;
        else
            CHECK_OK(parla_task_submit(tasks[i]));
    }
    /* Late tasks, newest first: each was a placeholder until now. */
    for (int k = ndeferred - 1; k >= 0; k--)
        CHECK_OK(parla_task_submit(tasks[deferred[k]]));

    CHECK_OK(parla_runtime_wait_all(rt));

    for (int i = 0; i < n; i++) {
        struct node *nd = &nodes[i];
        int r = atomic_load(&nd->runs);
        CHECK(r == 1, "dag %ld (n=%d mode=%d): task %d ran %d times", dag, n, mode, i, r);
        CHECK(nd->end > nd->start, "dag %ld: task %d end %lu <= start %lu", dag, i, nd->end,
              nd->start);
        CHECK(parla_task_state(tasks[i]) == PARLA_TASK_DONE, "dag %ld: task %d state %s", dag, i,
              parla_task_state_name(parla_task_state(tasks[i])));
        for (int q = 0; q < nd->npreds; q++) {
            struct node *pd = &nodes[nd->preds[q]];
            CHECK(pd->end < nd->start,
                  "dag %ld (n=%d mode=%d): task %d started (seq %lu) before its predecessor %d "
                  "ended (seq %lu)",
                  dag, n, mode, i, nd->start, nd->preds[q], pd->end);
        }
    }
    for (int i = 0; i < n; i++)
        parla_task_release(tasks[i]);
}

int main(void)
{
    check_watchdog(100);
    long ndags = scaled(10000, 200);
    const int worker_counts[] = {2, 4, 1, 3};
    long done = 0;
    uint64_t total_tasks = 0;
    for (int w = 0; w < 4; w++) {
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = worker_counts[w];
        parla_runtime_t *rt;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        long mine = (w == 3) ? ndags - done : ndags / 4;
        char phase[64];
        snprintf(phase, sizeof phase, "random dags, %d workers", worker_counts[w]);
        check_set_phase(phase);
        for (long d = 0; d < mine; d++) {
            run_dag(rt, done + d);
        }
        parla_runtime_stats_t st;
        parla_runtime_stats(rt, &st);
        CHECK(st.tasks_created == st.tasks_run, "created %llu != run %llu",
              (unsigned long long)st.tasks_created, (unsigned long long)st.tasks_run);
        CHECK(st.tasks_failed == 0 && st.tasks_cancelled == 0, "failures in a clean run");
        total_tasks += st.tasks_run;
        CHECK_OK(parla_runtime_destroy(rt));
        done += mine;
    }
    printf("test_random_dag: ok (%ld dags, %llu tasks)\n", done, (unsigned long long)total_tasks);
    return 0;
}
