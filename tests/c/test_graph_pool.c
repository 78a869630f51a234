/*
 * test_graph_pool.c: the memory of replayed graphs (replay pools: a replay's tasks, their ext parts and
 * edges are reused by a later replay once every task of the earlier one has been freed).
 *
 *  - Reuse: a graph with data accesses (views of one array, a reader of all of it, an explicit
 *    dependency) replayed many times, without waiting in between and waiting after each, with ordinary
 *    tasks writing the array between replays: values equal the sequential program's, and every finished
 *    task has its own node's name (a reused task object with a stale name or settings would show).
 *  - Lifetime: the graph released right after its replays, while the array's access history still holds
 *    their tasks (and the graph's pools with them); later tasks replace them; the data is released while
 *    the history still holds the last ones. Under ASan/LSan nothing is used after it is freed and nothing
 *    leaks (a pool holding its graph, which holds the data, would be a cycle).
 *  - Out of memory: for N = 1, 2, ... the N-th internal allocation fails; recording, replaying (twice, then
 *    again after a wait) and waiting each either succeed or report PARLA_ENOMEM, or PARLA_EFAILED naming
 *    the lack of memory (a replay, or a task's preparation, that ran out fails the graph); the runtime is destroyed cleanly; when nothing
 *    failed the values are right. The loop ends after a stretch of runs in which nothing failed.
 */
#include "check.h"

#include <stdatomic.h>
#include <stdint.h>

enum { N = 8 };

static double xs[N], acc[1];
static parla_data_t *x_data, *acc_data;

/* a: x[0:4] += 1; b: x[4:8] *= 2; c: acc = sum(x) (reads all of x); d (after c): acc += 1000 */
static int a_body(parla_task_t *t, void *arg)
{
    double *v = parla_data_device_ptr(x_data, 0);
    for (int i = 0; i < N / 2; i++)
        v[i] += 1;
    return 0;
}

static int b_body(parla_task_t *t, void *arg)
{
    double *v = parla_data_device_ptr(x_data, 0);
    for (int i = N / 2; i < N; i++)
        v[i] *= 2;
    return 0;
}

static int c_body(parla_task_t *t, void *arg)
{
    double *v = parla_data_device_ptr(x_data, 0), *a = parla_data_device_ptr(acc_data, 0), s = 0;
    for (int i = 0; i < N; i++)
        s += v[i];
    a[0] = s;
    return 0;
}

static int d_body(parla_task_t *t, void *arg)
{
    double *a = parla_data_device_ptr(acc_data, 0);
    a[0] += 1000;
    return 0;
}

/* An ordinary task: x[i] -= 0.5 for all i. */
static int shift_body(parla_task_t *t, void *arg)
{
    double *v = parla_data_device_ptr(x_data, 0);
    for (int i = 0; i < N; i++)
        v[i] -= 0.5;
    return 0;
}

static void model_replay(double *mx, double *macc)
{
    for (int i = 0; i < N / 2; i++)
        mx[i] += 1;
    for (int i = N / 2; i < N; i++)
        mx[i] *= 2;
    double s = 0;
    for (int i = 0; i < N; i++)
        s += mx[i];
    *macc = s + 1000;
}

static void model_shift(double *mx)
{
    for (int i = 0; i < N; i++)
        mx[i] -= 0.5;
}

/* The graph a, b, c, d on x_data (views for a and b) and acc_data; 0 or the first failing call's code. */
static int record(parla_runtime_t *rt, parla_graph_t **out)
{
    parla_data_t *lo = NULL, *hi = NULL;
    uint64_t rl[2] = {0, N / 2 * sizeof(double)}, rh[2] = {N / 2 * sizeof(double), N * sizeof(double)};
    parla_graph_t *g = NULL;
    size_t a, b, c, d;
    int rc = parla_data_view(x_data, rl, 1, &lo);
    if (rc == 0)
        rc = parla_data_view(x_data, rh, 1, &hi);
    if (rc == 0)
        rc = parla_graph_create(rt, "pooled", &g);
    if (rc == 0)
        rc = parla_graph_add_task(g, "a", a_body, NULL, &a);
    if (rc == 0)
        rc = parla_graph_add_access(g, a, lo, PARLA_READWRITE);
    if (rc == 0)
        rc = parla_graph_add_task(g, "b", b_body, NULL, &b);
    if (rc == 0)
        rc = parla_graph_add_access(g, b, hi, PARLA_READWRITE);
    if (rc == 0)
        rc = parla_graph_add_task(g, "c", c_body, NULL, &c);
    if (rc == 0)
        rc = parla_graph_add_access(g, c, x_data, PARLA_READ);
    if (rc == 0)
        rc = parla_graph_add_access(g, c, acc_data, PARLA_WRITE);
    if (rc == 0)
        rc = parla_graph_add_task(g, "d", d_body, NULL, &d);
    if (rc == 0)
        rc = parla_graph_add_access(g, d, acc_data, PARLA_READWRITE);
    if (rc == 0)
        rc = parla_graph_add_dependency(g, d, c);
    parla_data_release(lo);
    parla_data_release(hi);
    if (rc) {
        parla_graph_release(g);
        g = NULL;
    }
    *out = g;
    return rc;
}

static int spawn_shift(parla_runtime_t *rt)
{
    parla_task_t *t;
    int rc = parla_task_create(rt, shift_body, NULL, &t);
    if (rc)
        return rc;
    rc = parla_task_add_access(t, x_data, PARLA_READWRITE);
    if (rc == 0)
        rc = parla_task_submit(t);
    else
        parla_task_cancel(t);
    parla_task_release(t);
    return rc;
}

static _Atomic int bad_names, finished;

/* task_finished hook: a replayed task is one of the graph's nodes, by name. */
static void on_finished(parla_task_t *t, void *user)
{
    (void)user;
    const char *name = parla_task_name(t);
    atomic_fetch_add(&finished, 1);
    if (strncmp(name, "pooled#replay", 13) == 0 || strncmp(name, "task#", 5) == 0)
        return; /* a join, or an ordinary task */
    if (strcmp(name, "a") && strcmp(name, "b") && strcmp(name, "c") && strcmp(name, "d"))
        atomic_fetch_add(&bad_names, 1);
}

static void reset_data(void)
{
    for (int i = 0; i < N; i++)
        xs[i] = i;
    acc[0] = 0;
}

static void check_values(const double *mx, double macc, const char *what)
{
    for (int i = 0; i < N; i++)
        CHECK(xs[i] == mx[i], "%s: x[%d] = %g, expected %g", what, i, xs[i], mx[i]);
    CHECK(acc[0] == macc, "%s: acc = %g, expected %g", what, acc[0], macc);
}

static void test_reuse(void)
{
    check_set_phase("reuse");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 3;
    cfg.task_finished = on_finished;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    reset_data();
    CHECK_OK(parla_data_create(rt, sizeof xs, xs, &x_data));
    CHECK_OK(parla_data_create(rt, sizeof acc, acc, &acc_data));
    parla_graph_t *g;
    CHECK_OK(record(rt, &g));
    double mx[N], macc = 0;
    for (int i = 0; i < N; i++)
        mx[i] = i;
    int rounds = (int)scaled(60, 8);
    long tasks = 0;
    for (int r = 0; r < rounds; r++) {
        int burst = 1 + r % 4; /* back to back, no wait */
        for (int k = 0; k < burst; k++) {
            CHECK_OK(parla_graph_replay(g, NULL, NULL));
            model_replay(mx, &macc);
            tasks += 5;
        }
        if (r % 3 == 1) {
            CHECK_OK(spawn_shift(rt));
            model_shift(mx);
            tasks++;
        }
        if (r % 5 == 4)
            CHECK_OK(parla_graph_wait(g));
    }
    CHECK_OK(parla_graph_wait(g));
    CHECK_OK(parla_runtime_wait_all(rt));
    check_values(mx, macc, "reuse");
    CHECK(atomic_load(&bad_names) == 0, "%d replayed tasks finished with another node's name",
          atomic_load(&bad_names));
    CHECK(atomic_load(&finished) == tasks, "%d tasks finished, expected %ld", atomic_load(&finished), tasks);

    /* The graph released while the history holds its last replay's tasks. */
    check_set_phase("lifetime");
    for (int k = 0; k < 3; k++) {
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
        model_replay(mx, &macc);
    }
    parla_graph_release(g);
    CHECK_OK(spawn_shift(rt));
    model_shift(mx);
    CHECK_OK(parla_runtime_wait_all(rt));
    check_values(mx, macc, "lifetime");
    parla_data_release(x_data);
    parla_data_release(acc_data);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* ------------------------------------------------------- out of memory -- */

static int expect(int rc, int *failed, const char *what, long n)
{
    CHECK(rc == 0 || rc == PARLA_ENOMEM || (rc == PARLA_EFAILED && strstr(parla_last_error_message(), "out of memory")),
          "fail_alloc_at=%ld: %s returned %d (%s): %s", n, what, rc, parla_strerror(rc), parla_last_error_message());
    if (rc)
        *failed = 1;
    return rc;
}

static long fault_runs;

static void test_out_of_memory(void)
{
    check_set_phase("out of memory");
    int clean_runs = 0;
    for (long n = 1; clean_runs < 40 && n < 5000; n++) {
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = 2;
        cfg.fail_alloc_at = (uint64_t)n;
        parla_runtime_t *rt;
        int failed = 0;
        if (expect(parla_runtime_create(&cfg, &rt), &failed, "parla_runtime_create", n)) {
            clean_runs = 0;
            continue;
        }
        reset_data();
        x_data = acc_data = NULL;
        parla_graph_t *g = NULL;
        if (expect(parla_data_create(rt, sizeof xs, xs, &x_data), &failed, "parla_data_create", n) == 0 &&
            expect(parla_data_create(rt, sizeof acc, acc, &acc_data), &failed, "parla_data_create", n) == 0 &&
            expect(record(rt, &g), &failed, "recording", n) == 0) {
            double mx[N], macc = 0;
            for (int i = 0; i < N; i++)
                mx[i] = i;
            for (int k = 0; k < 3; k++) {
                expect(parla_graph_replay(g, NULL, NULL), &failed, "parla_graph_replay", n);
                model_replay(mx, &macc);
                if (k == 1)
                    expect(parla_graph_wait(g), &failed, "parla_graph_wait", n);
            }
            expect(parla_graph_wait(g), &failed, "parla_graph_wait", n);
            /* Tasks of a replay that ran out fail or are cancelled: what ran is not the model's. */
            CHECK(parla_runtime_wait_all(rt) == 0 || failed, "fail_alloc_at=%ld: wait_all: %s", n,
                  parla_last_error_message());
            if (!failed)
                check_values(mx, macc, "out of memory, nothing failed");
        }
        parla_graph_release(g);
        parla_data_release(x_data);
        parla_data_release(acc_data);
        CHECK_OK(parla_runtime_destroy(rt));
        clean_runs = failed ? 0 : clean_runs + 1;
        fault_runs = n;
    }
    CHECK(clean_runs >= 40, "allocations kept failing up to fail_alloc_at=5000");
}

int main(void)
{
    check_watchdog(100);
    test_reuse();
    test_out_of_memory();
    printf("test_graph_pool: ok (%ld runs with a failing allocation)\n", fault_runs - 40);
    return 0;
}
