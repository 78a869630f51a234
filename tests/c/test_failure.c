/*
 * test_failure: a failing body cancels its transitive successors (state
 * CANCELLED, error PARLA_ECANCELLED, cause = the failed task) and only them;
 * independent tasks still run; waits report PARLA_EFAILED / PARLA_ECANCELLED;
 * a dependency added on an already failed task cancels the new task; and
 * parla_task_cancel() on a never-submitted task cancels its dependents.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

static atomic_int ran[64];

static int mark(parla_task_t *task, void *arg)
{
    (void)task;
    atomic_fetch_add(&ran[(intptr_t)arg], 1);
    return 0;
}

static int fail_with(parla_task_t *task, void *arg)
{
    (void)task;
    return (int)(intptr_t)arg;
}

static parla_task_t *mk(parla_runtime_t *rt, int id, const char *name)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, mark, (void *)(intptr_t)id, &t));
    CHECK_OK(parla_task_set_name(t, name));
    return t;
}

static void expect_cancelled(parla_task_t *t, parla_task_t *cause)
{
    CHECK(parla_task_state(t) == PARLA_TASK_CANCELLED, "%s state %s, expected cancelled",
          parla_task_name(t), parla_task_state_name(parla_task_state(t)));
    CHECK(parla_task_error(t) == PARLA_ECANCELLED, "%s error %d", parla_task_name(t),
          parla_task_error(t));
    CHECK(parla_task_cause(t) == cause, "%s cause is %s, expected %s", parla_task_name(t),
          parla_task_cause(t) ? parla_task_name(parla_task_cause(t)) : "NULL",
          parla_task_name(cause));
    CHECK_RC(parla_task_wait(t), PARLA_ECANCELLED);
}

static void expect_done(parla_task_t *t)
{
    CHECK(parla_task_state(t) == PARLA_TASK_DONE, "%s state %s, expected done", parla_task_name(t),
          parla_task_state_name(parla_task_state(t)));
    CHECK(parla_task_error(t) == 0 && parla_task_cause(t) == NULL, "%s error/cause",
          parla_task_name(t));
    CHECK_OK(parla_task_wait(t));
}

static void failure_cascade(parla_runtime_t *rt)
{
    check_set_phase("failure cascade");
    for (int i = 0; i < 64; i++)
        atomic_store(&ran[i], 0);
    /* A fails; B <- A; C <- B; D <- C, X; X independent; E <- X; diamond
     * F <- A, G <- A, H <- F, G. */
    parla_task_t *A, *B, *C, *D, *X, *E, *F, *G, *H, *I;
    CHECK_OK(parla_task_create(rt, fail_with, (void *)(intptr_t)7, &A));
    CHECK_OK(parla_task_set_name(A, "A"));
    B = mk(rt, 1, "B");
    C = mk(rt, 2, "C");
    D = mk(rt, 3, "D");
    X = mk(rt, 4, "X");
    E = mk(rt, 5, "E");
    F = mk(rt, 6, "F");
    G = mk(rt, 7, "G");
    H = mk(rt, 8, "H");
    I = mk(rt, 9, "I");
    CHECK_OK(parla_task_add_dependency(B, A));
    CHECK_OK(parla_task_add_dependency(C, B));
    CHECK_OK(parla_task_add_dependency(D, C));
    CHECK_OK(parla_task_add_dependency(D, X));
    CHECK_OK(parla_task_add_dependency(E, X));
    CHECK_OK(parla_task_add_dependency(F, A));
    CHECK_OK(parla_task_add_dependency(G, A));
    CHECK_OK(parla_task_add_dependency(H, F));
    CHECK_OK(parla_task_add_dependency(H, G));
    parla_task_t *all[] = {H, G, F, E, D, C, B, X, I, A};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        CHECK_OK(parla_task_submit(all[i]));
    CHECK_RC(parla_task_wait(A), PARLA_EFAILED);
    CHECK_RC(parla_task_wait(D), PARLA_ECANCELLED);
    CHECK_OK(parla_runtime_wait_all(rt)); /* failures do not make wait_all fail */

    CHECK(parla_task_state(A) == PARLA_TASK_FAILED, "A state %s",
          parla_task_state_name(parla_task_state(A)));
    CHECK(parla_task_error(A) == 7, "A error %d", parla_task_error(A));
    CHECK(parla_task_cause(A) == NULL, "A cause");
    expect_cancelled(B, A);
    expect_cancelled(C, A);
    expect_cancelled(D, A);
    expect_cancelled(F, A);
    expect_cancelled(G, A);
    expect_cancelled(H, A);
    expect_done(X);
    expect_done(E);
    expect_done(I);
    for (int id = 1; id <= 9; id++) {
        int want = (id == 4 || id == 5 || id == 9) ? 1 : 0;
        CHECK(atomic_load(&ran[id]) == want, "body %d ran %d times, expected %d", id,
              atomic_load(&ran[id]), want);
    }

    /* A dependency on an already failed task: the new task is cancelled
     * when it would become ready, with A as the cause. */
    parla_task_t *late = mk(rt, 10, "late");
    CHECK_OK(parla_task_add_dependency(late, A));
    CHECK_OK(parla_task_submit(late));
    CHECK_RC(parla_task_wait(late), PARLA_ECANCELLED);
    expect_cancelled(late, A);
    CHECK(atomic_load(&ran[10]) == 0, "late body ran");
    /* And on an already cancelled task: the cause is still the failed one. */
    parla_task_t *later = mk(rt, 11, "later");
    CHECK_OK(parla_task_add_dependency(later, H));
    parla_task_t *ok2 = mk(rt, 12, "ok2");
    CHECK_OK(parla_task_add_dependency(later, ok2));
    CHECK_OK(parla_task_submit(ok2));
    CHECK_OK(parla_task_submit(later));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(later) == PARLA_TASK_CANCELLED, "later state %s",
          parla_task_state_name(parla_task_state(later)));
    CHECK(parla_task_cause(later) == A, "later cause %s",
          parla_task_cause(later) ? parla_task_name(parla_task_cause(later)) : "NULL");
    CHECK(atomic_load(&ran[11]) == 0 && atomic_load(&ran[12]) == 1, "later/ok2 bodies");

    parla_task_t *rel[] = {A, B, C, D, X, E, F, G, H, I, late, later, ok2};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
        parla_task_release(rel[i]);
}

static void cancel_placeholder(parla_runtime_t *rt)
{
    check_set_phase("cancel placeholder");
    for (int i = 0; i < 64; i++)
        atomic_store(&ran[i], 0);
    parla_task_t *P = mk(rt, 20, "P");
    parla_task_t *Q = mk(rt, 21, "Q");
    parla_task_t *R = mk(rt, 22, "R");
    parla_task_t *S = mk(rt, 23, "S"); /* independent of P */
    CHECK_OK(parla_task_add_dependency(Q, P));
    CHECK_OK(parla_task_add_dependency(R, Q));
    CHECK_OK(parla_task_add_dependency(R, S));
    CHECK_OK(parla_task_submit(Q));
    CHECK_OK(parla_task_submit(R));
    CHECK_OK(parla_task_submit(S));
    CHECK_OK(parla_task_wait(S));
    CHECK(parla_task_state(Q) == PARLA_TASK_SUBMITTED, "Q state %s",
          parla_task_state_name(parla_task_state(Q)));
    CHECK_OK(parla_task_cancel(P));
    CHECK(parla_task_state(P) == PARLA_TASK_CANCELLED, "P state %s",
          parla_task_state_name(parla_task_state(P)));
    CHECK(parla_task_error(P) == PARLA_ECANCELLED, "P error %d", parla_task_error(P));
    CHECK_RC(parla_task_wait(P), PARLA_ECANCELLED);
    CHECK_RC(parla_task_cancel(P), PARLA_ESTATE);
    CHECK_RC(parla_task_submit(P), PARLA_ESTATE);
    CHECK_OK(parla_runtime_wait_all(rt));
    expect_cancelled(Q, P);
    expect_cancelled(R, P);
    expect_done(S);
    CHECK(atomic_load(&ran[20]) == 0 && atomic_load(&ran[21]) == 0 && atomic_load(&ran[22]) == 0 &&
              atomic_load(&ran[23]) == 1,
          "bodies after cancel");
    /* Cancelling a submitted task is refused. */
    parla_task_t *T = mk(rt, 24, "T");
    CHECK_OK(parla_task_submit(T));
    CHECK_RC(parla_task_cancel(T), PARLA_ESTATE);
    CHECK_OK(parla_task_wait(T));
    /* Cancelling a lone task: nothing else happens. */
    parla_task_t *U = mk(rt, 25, "U");
    CHECK_OK(parla_task_cancel(U));
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_task_t *rel[] = {P, Q, R, S, T, U};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
        parla_task_release(rel[i]);
}

static void wide_failure(parla_runtime_t *rt, long width)
{
    check_set_phase("wide failure");
    for (int i = 0; i < 64; i++)
        atomic_store(&ran[i], 0);
    parla_runtime_stats_t st0, st1;
    parla_runtime_stats(rt, &st0);
    parla_task_t *A, *sink;
    CHECK_OK(parla_task_create(rt, fail_with, (void *)(intptr_t)PARLA_EDEVICE, &A));
    sink = mk(rt, 31, "sink");
    parla_task_t *keep = NULL;
    for (long i = 0; i < width; i++) {
        parla_task_t *m = mk(rt, 30, "mid");
        CHECK_OK(parla_task_add_dependency(m, A));
        CHECK_OK(parla_task_add_dependency(sink, m));
        /* Every other one gets a second, independent, successful dependency. */
        if (i % 2 == 0) {
            parla_task_t *o = mk(rt, 32, "other");
            CHECK_OK(parla_task_add_dependency(m, o));
            CHECK_OK(parla_task_submit(o));
            parla_task_release(o);
        }
        CHECK_OK(parla_task_submit(m));
        if (i == width / 3)
            keep = m;
        else
            parla_task_release(m);
    }
    CHECK_OK(parla_task_submit(sink));
    CHECK_OK(parla_task_submit(A));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_error(A) == PARLA_EDEVICE, "A error %d", parla_task_error(A));
    expect_cancelled(keep, A);
    expect_cancelled(sink, A);
    CHECK(atomic_load(&ran[30]) == 0 && atomic_load(&ran[31]) == 0, "cancelled bodies ran");
    CHECK(atomic_load(&ran[32]) == (width + 1) / 2, "independent bodies ran %d",
          atomic_load(&ran[32]));
    parla_runtime_stats(rt, &st1);
    CHECK(st1.tasks_cancelled - st0.tasks_cancelled == (uint64_t)width + 1,
          "cancelled %llu, expected %ld", (unsigned long long)(st1.tasks_cancelled - st0.tasks_cancelled),
          width + 1);
    CHECK(st1.tasks_failed - st0.tasks_failed == 1, "failed %llu",
          (unsigned long long)(st1.tasks_failed - st0.tasks_failed));
    parla_task_release(A);
    parla_task_release(sink);
    parla_task_release(keep);
}

int main(void)
{
    check_watchdog(50);
    for (int w = 1; w <= 4; w *= 2) {
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = w;
        parla_runtime_t *rt;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        long reps = scaled(20, 3);
        for (long r = 0; r < reps; r++) {
            failure_cascade(rt);
            cancel_placeholder(rt);
        }
        wide_failure(rt, scaled(10000, 1000));
        CHECK_OK(parla_runtime_destroy(rt));
    }
    printf("test_failure: ok\n");
    return 0;
}
