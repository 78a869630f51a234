/*
 * test_wait_any: parla_task_wait_any() from the main thread and inside a task
 * body. It times out while no task has finished (nothing else changes), returns
 * as soon as one of its tasks has finished (the others still running), returns
 * at once for a finished task, reports a never-submitted task as PARLA_ESTUCK
 * and rejects bad arguments (no tasks, the calling task itself).
 */
#include <stdatomic.h>

#include "check.h"

static atomic_int gates[3];

static int gated_body(parla_task_t *task, void *arg)
{
    (void)task;
    atomic_int *gate = arg;
    while (!atomic_load(gate))
        sleep_ms(1);
    return 0;
}

/* In a body: a timed wait on a gated task times out, then (gate opened by the
 * main thread, which waits for this task's first result) succeeds. */
static atomic_int inner_timed_out; /* 0: not yet, 1: timed out, 2: did not */
static int waiting_body(parla_task_t *task, void *arg)
{
    parla_task_t *other = arg;
    int rc = parla_task_wait_any(&other, 1, 0.01);
    atomic_store(&inner_timed_out, rc == PARLA_ETIMEDOUT ? 1 : 2);
    if (parla_task_wait_any(&task, 1, 0.0) != PARLA_EINVAL)
        return 2;
    return parla_task_wait_any(&other, 1, 30.0);
}

static parla_task_t *mk(parla_runtime_t *rt, parla_task_fn fn, void *arg, const char *name)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, arg, &t));
    CHECK_OK(parla_task_set_name(t, name));
    return t;
}

int main(void)
{
    check_watchdog(50);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 4;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));

    check_set_phase("main thread");
    parla_task_t *t[3];
    for (int i = 0; i < 3; i++) {
        atomic_store(&gates[i], 0);
        t[i] = mk(rt, gated_body, &gates[i], "gated");
        CHECK_OK(parla_task_submit(t[i]));
    }
    CHECK_RC(parla_task_wait_any(t, 3, 0.02), PARLA_ETIMEDOUT);
    CHECK_RC(parla_task_wait_any(t, 3, 0.0), PARLA_ETIMEDOUT);
    CHECK(parla_task_state(t[0]) < PARLA_TASK_DONE, "a timed-out wait changed nothing");
    atomic_store(&gates[1], 1);
    CHECK_OK(parla_task_wait_any(t, 3, 30.0));
    CHECK(parla_task_state(t[1]) == PARLA_TASK_DONE, "the opened task finished");
    CHECK(parla_task_state(t[0]) < PARLA_TASK_DONE && parla_task_state(t[2]) < PARLA_TASK_DONE,
          "the others still wait for their gates");
    CHECK_OK(parla_task_wait_any(&t[1], 1, 0.0)); /* finished: at once */
    CHECK_RC(parla_task_wait_any(t, 0, 1.0), PARLA_EINVAL);
    CHECK_RC(parla_task_wait_any(NULL, 1, 1.0), PARLA_EINVAL);

    check_set_phase("never submitted");
    parla_task_t *never = mk(rt, gated_body, &gates[0], "never");
    CHECK_RC(parla_task_wait_any(&never, 1, 5.0), PARLA_ESTUCK);
    CHECK(strstr(parla_last_error_message(), "never") != NULL, "message names the task: %s",
          parla_last_error_message());
    CHECK_OK(parla_task_cancel(never));
    parla_task_release(never);

    check_set_phase("inside a body");
    parla_task_t *w = mk(rt, waiting_body, t[0], "waiter");
    CHECK_OK(parla_task_submit(w));
    while (!atomic_load(&inner_timed_out))
        sleep_ms(1);
    CHECK(atomic_load(&inner_timed_out) == 1, "a timed wait in a body on a gated task timed out");
    atomic_store(&gates[0], 1);
    atomic_store(&gates[2], 1);
    CHECK_OK(parla_task_wait(w));
    for (int i = 0; i < 3; i++) {
        CHECK_OK(parla_task_wait(t[i]));
        parla_task_release(t[i]);
    }
    parla_task_release(w);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    printf("test_wait_any: ok\n");
    return 0;
}
