/*
 * test_chain: a chain of 1,000,000 tasks (built front to back, releasing each
 * handle as it goes), a chain submitted back to front (every task a
 * placeholder until its predecessor is submitted), a failing chain head that
 * cancels a long chain (no recursion that could overflow the stack), and a
 * fan-out/fan-in of width 10,000.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

static atomic_long next_expected;
static atomic_long order_errors;
static atomic_long runs;

static int chain_body(parla_task_t *task, void *arg)
{
    (void)task;
    long i = (long)(intptr_t)arg;
    long want = atomic_load(&next_expected);
    if (want != i)
        atomic_fetch_add(&order_errors, 1);
    atomic_store(&next_expected, i + 1);
    atomic_fetch_add(&runs, 1);
    return 0;
}

static int fail_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return 7;
}

static atomic_long root_done;
static atomic_long mid_done;
static atomic_long fan_errors;
static long sink_saw = -1;

static int root_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_store(&root_done, 1);
    return 0;
}

static int mid_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    if (atomic_load(&root_done) != 1)
        atomic_fetch_add(&fan_errors, 1);
    atomic_fetch_add(&mid_done, 1);
    return 0;
}

static int sink_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    sink_saw = atomic_load(&mid_done);
    return 0;
}

static void forward_chain(parla_runtime_t *rt, long n)
{
    check_set_phase("forward chain");
    atomic_store(&next_expected, 0);
    atomic_store(&order_errors, 0);
    atomic_store(&runs, 0);
    double t0 = now_s();
    parla_task_t *prev = NULL, *first = NULL;
    for (long i = 0; i < n; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, chain_body, (void *)(intptr_t)i, &t));
        if (prev != NULL) {
            CHECK_OK(parla_task_add_dependency(t, prev));
            parla_task_release(prev);
        }
        if (i == 0) {
            first = t; /* submitted last: the whole chain waits as placeholders */
            parla_task_retain(first);
        } else {
            CHECK_OK(parla_task_submit(t));
        }
        prev = t;
    }
    CHECK(atomic_load(&runs) == 0, "chain ran before its head was submitted");
    CHECK_OK(parla_task_submit(first));
    parla_task_release(first);
    CHECK_OK(parla_task_wait(prev));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(prev) == PARLA_TASK_DONE, "tail state");
    parla_task_release(prev);
    double dt = now_s() - t0;
    CHECK(atomic_load(&runs) == n, "chain of %ld ran %ld tasks", n, atomic_load(&runs));
    CHECK(atomic_load(&order_errors) == 0, "%ld tasks ran out of chain order",
          atomic_load(&order_errors));
    CHECK(atomic_load(&next_expected) == n, "last index %ld", atomic_load(&next_expected));
    printf("forward chain of %ld: %.3f s (%.3f us/task)\n", n, dt, dt * 1e6 / (double)n);
}

static void reverse_chain(parla_runtime_t *rt, long n)
{
    check_set_phase("reverse chain");
    double t0 = now_s();
    atomic_store(&next_expected, 0);
    atomic_store(&order_errors, 0);
    atomic_store(&runs, 0);
    parla_task_t **t = malloc((size_t)n * sizeof *t);
    CHECK(t != NULL, "malloc");
    for (long i = 0; i < n; i++) {
        CHECK_OK(parla_task_create(rt, chain_body, (void *)(intptr_t)i, &t[i]));
        if (i > 0)
            CHECK_OK(parla_task_add_dependency(t[i], t[i - 1]));
    }
    for (long i = n - 1; i >= 0; i--)
        CHECK_OK(parla_task_submit(t[i]));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&runs) == n, "reverse chain of %ld ran %ld", n, atomic_load(&runs));
    CHECK(atomic_load(&order_errors) == 0, "%ld out of order", atomic_load(&order_errors));
    for (long i = 0; i < n; i++) {
        CHECK(parla_task_state(t[i]) == PARLA_TASK_DONE, "task %ld state", i);
        parla_task_release(t[i]);
    }
    free(t);
    printf("reverse chain of %ld: %.3f s\n", n, now_s() - t0);
}

static void failing_chain(parla_runtime_t *rt, long n)
{
    check_set_phase("failing chain");
    double t0 = now_s();
    atomic_store(&runs, 0);
    parla_runtime_stats_t st0, st1;
    parla_runtime_stats(rt, &st0);
    parla_task_t *head, *prev, *mid = NULL;
    CHECK_OK(parla_task_create(rt, fail_body, NULL, &head));
    prev = head;
    parla_task_retain(prev);
    for (long i = 1; i < n; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, chain_body, (void *)(intptr_t)i, &t));
        CHECK_OK(parla_task_add_dependency(t, prev));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(prev);
        if (i == n / 2) {
            mid = t;
            parla_task_retain(mid);
        }
        prev = t;
    }
    CHECK_OK(parla_task_submit(head));
    CHECK_RC(parla_task_wait(prev), PARLA_ECANCELLED);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&runs) == 0, "%ld cancelled bodies ran", atomic_load(&runs));
    CHECK(parla_task_state(prev) == PARLA_TASK_CANCELLED, "tail state %s",
          parla_task_state_name(parla_task_state(prev)));
    CHECK(parla_task_cause(prev) == head, "tail cause is not the head");
    CHECK(parla_task_cause(mid) == head, "middle cause is not the head");
    CHECK(parla_task_error(mid) == PARLA_ECANCELLED, "middle error %d", parla_task_error(mid));
    parla_runtime_stats(rt, &st1);
    CHECK(st1.tasks_cancelled - st0.tasks_cancelled == (uint64_t)(n - 1), "cancelled %llu, want %ld",
          (unsigned long long)(st1.tasks_cancelled - st0.tasks_cancelled), n - 1);
    parla_task_release(prev);
    parla_task_release(mid);
    parla_task_release(head);
    printf("failing chain of %ld: %.3f s\n", n, now_s() - t0);
}

static void fan(parla_runtime_t *rt, long width)
{
    check_set_phase("fan-out/fan-in");
    double t0 = now_s();
    atomic_store(&root_done, 0);
    atomic_store(&mid_done, 0);
    atomic_store(&fan_errors, 0);
    sink_saw = -1;
    parla_task_t *root, *sink;
    CHECK_OK(parla_task_create(rt, root_body, NULL, &root));
    CHECK_OK(parla_task_create(rt, sink_body, NULL, &sink));
    for (long i = 0; i < width; i++) {
        parla_task_t *m;
        CHECK_OK(parla_task_create(rt, mid_body, NULL, &m));
        CHECK_OK(parla_task_add_dependency(m, root));
        CHECK_OK(parla_task_add_dependency(sink, m));
        CHECK_OK(parla_task_submit(m));
        parla_task_release(m);
    }
    CHECK_OK(parla_task_submit(sink));
    CHECK_OK(parla_task_submit(root));
    CHECK_OK(parla_task_wait(sink));
    CHECK(sink_saw == width, "sink saw %ld of %ld finished", sink_saw, width);
    CHECK(atomic_load(&fan_errors) == 0, "%ld middle tasks ran before the root",
          atomic_load(&fan_errors));
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_task_release(root);
    parla_task_release(sink);
    printf("fan of width %ld: %.3f s\n", width, now_s() - t0);
}

int main(void)
{
    check_watchdog(100);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    forward_chain(rt, scaled(1000000, 1000));
    reverse_chain(rt, scaled(200000, 1000));
    failing_chain(rt, scaled(1000000, 1000));
    fan(rt, 10000); /* the width is the point: not scaled */
    fan(rt, 10000);
    CHECK_OK(parla_runtime_destroy(rt));

    /* One worker: every ready successor goes through the same deque. */
    cfg.n_workers = 1;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    forward_chain(rt, scaled(200000, 1000));
    fan(rt, 10000);
    CHECK_OK(parla_runtime_destroy(rt));
    printf("test_chain: ok\n");
    return 0;
}
