/*
 * test_fault: allocation failure injection. For N = 1, 2, ...: the N-th
 * internal allocation of the runtime fails (config.fail_alloc_at = N). A
 * fixed sequence (create a runtime, create and name tasks, add dependencies,
 * submit, spawn from inside a body, wait_all, destroy) must see every call
 * either succeed or return PARLA_ENOMEM cleanly; then the program cleans up
 * what it created (cancelling what it could not submit). Tasks that were
 * submitted with all their dependencies run exactly once, the others are
 * cancelled. The loop ends after a stretch of runs in which no call failed.
 * Under ASan/LSan nothing may leak.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

#define NT 24

static atomic_int runs[NT];
static parla_runtime_t *cur_rt;
static atomic_int child_runs;
static atomic_int spawn_enomem;

static int child_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&child_runs, 1);
    return 0;
}

static int body(parla_task_t *task, void *arg)
{
    (void)task;
    int id = (int)(intptr_t)arg;
    atomic_fetch_add(&runs[id], 1);
    if (id % 6 == 5) {
        /* Spawn from a body: an allocation here may fail too. */
        parla_task_t *c;
        int rc = parla_task_create(cur_rt, child_body, NULL, &c);
        if (rc == PARLA_ENOMEM) {
            atomic_fetch_add(&spawn_enomem, 1);
            return PARLA_ENOMEM;
        }
        if (rc != 0)
            return 1000; /* unexpected: reported by the checks below */
        rc = parla_task_submit(c);
        parla_task_release(c);
        if (rc == PARLA_ENOMEM) {
            atomic_fetch_add(&spawn_enomem, 1);
            return PARLA_ENOMEM;
        }
        if (rc != 0)
            return 1001;
    }
    return 0;
}

/* Records a call's result: 0 is fine, PARLA_ENOMEM marks an injected
 * failure, anything else fails the test. */
static int note(int rc, int *failed, const char *what, uint64_t n)
{
    CHECK(rc == 0 || rc == PARLA_ENOMEM, "fail_alloc_at=%llu: %s returned %d (%s): %s",
          (unsigned long long)n, what, rc, parla_strerror(rc), parla_last_error_message());
    if (rc == PARLA_ENOMEM) {
        *failed = 1;
        CHECK(strlen(parla_last_error_message()) > 0, "no message for ENOMEM in %s", what);
    }
    return rc;
}

/* Returns 1 when some call failed. */
static int one_run(uint64_t n)
{
    int failed = 0;
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    cfg.fail_alloc_at = n;
    parla_runtime_t *rt = (parla_runtime_t *)&cfg;
    if (note(parla_runtime_create(&cfg, &rt), &failed, "parla_runtime_create", n) != 0) {
        CHECK(rt == NULL, "fail_alloc_at=%llu: *out not NULL after ENOMEM", (unsigned long long)n);
        return 1;
    }
    cur_rt = rt;
    for (int i = 0; i < NT; i++)
        atomic_store(&runs[i], 0);
    atomic_store(&child_runs, 0);
    atomic_store(&spawn_enomem, 0);

    parla_task_t *t[NT] = {0};
    int dep_ok[NT][NT];
    memset(dep_ok, 0, sizeof dep_ok);
    int submitted[NT] = {0};
    for (int i = 0; i < NT; i++) {
        if (note(parla_task_create(rt, body, (void *)(intptr_t)i, &t[i]), &failed,
                 "parla_task_create", n) != 0) {
            t[i] = NULL;
            continue;
        }
        char name[32];
        snprintf(name, sizeof name, "task-%d", i);
        note(parla_task_set_name(t[i], name), &failed, "parla_task_set_name", n);
        if (i % 3 == 0)
            CHECK_OK(parla_task_set_priority(t[i], 1));
    }
    /* Dependencies: a chain, plus each task on the one 5 before it. */
    for (int i = 1; i < NT; i++) {
        if (t[i] == NULL)
            continue;
        if (t[i - 1] != NULL &&
            note(parla_task_add_dependency(t[i], t[i - 1]), &failed, "add_dependency", n) == 0)
            dep_ok[i][i - 1] = 1;
        if (i >= 5 && t[i - 5] != NULL &&
            note(parla_task_add_dependency(t[i], t[i - 5]), &failed, "add_dependency", n) == 0)
            dep_ok[i][i - 5] = 1;
    }
    /* Submit in reverse, so that most dependencies are placeholders first. */
    for (int i = NT - 1; i >= 0; i--) {
        if (t[i] == NULL)
            continue;
        if (note(parla_task_submit(t[i]), &failed, "parla_task_submit", n) == 0)
            submitted[i] = 1;
    }
    /* Clean up what could not be submitted, so that nothing is stuck. */
    for (int i = 0; i < NT; i++) {
        if (t[i] != NULL && !submitted[i]) {
            CHECK(parla_task_state(t[i]) == PARLA_TASK_CREATED,
                  "fail_alloc_at=%llu: task %d state %s after a failed submit",
                  (unsigned long long)n, i, parla_task_state_name(parla_task_state(t[i])));
            CHECK_OK(parla_task_cancel(t[i]));
        }
    }
    int rc = parla_runtime_wait_all(rt);
    CHECK(rc == 0, "fail_alloc_at=%llu: wait_all returned %d (%s): %s", (unsigned long long)n, rc,
          parla_strerror(rc), parla_last_error_message());
    if (atomic_load(&spawn_enomem) > 0)
        failed = 1;

    /* Every task that was submitted ran exactly once if all of its
     * dependencies completed, else it is cancelled and did not run. */
    for (int i = 0; i < NT; i++) {
        if (t[i] == NULL)
            continue;
        parla_task_state_t st = parla_task_state(t[i]);
        int r = atomic_load(&runs[i]);
        CHECK(st == PARLA_TASK_DONE || st == PARLA_TASK_FAILED || st == PARLA_TASK_CANCELLED,
              "fail_alloc_at=%llu: task %d unfinished (%s)", (unsigned long long)n, i,
              parla_task_state_name(st));
        if (st == PARLA_TASK_CANCELLED)
            CHECK(r == 0, "fail_alloc_at=%llu: cancelled task %d ran", (unsigned long long)n, i);
        else
            CHECK(r == 1, "fail_alloc_at=%llu: task %d (%s) ran %d times", (unsigned long long)n, i,
                  parla_task_state_name(st), r);
        if (st == PARLA_TASK_FAILED)
            CHECK(parla_task_error(t[i]) == PARLA_ENOMEM, "fail_alloc_at=%llu: task %d error %d",
                  (unsigned long long)n, i, parla_task_error(t[i]));
        if (st == PARLA_TASK_DONE) {
            for (int j = 0; j < NT; j++)
                if (dep_ok[i][j])
                    CHECK(parla_task_state(t[j]) == PARLA_TASK_DONE,
                          "fail_alloc_at=%llu: task %d done although its dependency %d is %s",
                          (unsigned long long)n, i, j,
                          parla_task_state_name(parla_task_state(t[j])));
        }
    }
    parla_runtime_stats_t st;
    parla_runtime_stats(rt, &st);

    CHECK_OK(parla_runtime_destroy(rt));
    for (int i = 0; i < NT; i++)
        if (t[i] != NULL)
            parla_task_release(t[i]);
    if (!failed) {
        for (int i = 0; i < NT; i++)
            CHECK(atomic_load(&runs[i]) == 1, "clean run: task %d ran %d times", i,
                  atomic_load(&runs[i]));
        CHECK(atomic_load(&child_runs) == NT / 6, "clean run: %d children ran",
              atomic_load(&child_runs));
        CHECK(st.tasks_run == NT + NT / 6, "clean run: tasks_run %llu",
              (unsigned long long)st.tasks_run);
    }
    return failed;
}

int main(void)
{
    check_watchdog(110);
    uint64_t n;
    uint64_t injected = 0;
    int clean_streak = 0;
    /* Allocation counts can vary a little between runs (per-thread slabs
     * filled by whichever thread gets there first), so the loop only stops
     * after 20 clean runs in a row. */
    for (n = 1; n < 200000 && clean_streak < 20; n++) {
        char phase[64];
        snprintf(phase, sizeof phase, "fail_alloc_at=%llu", (unsigned long long)n);
        check_set_phase(phase);
        if (one_run(n)) {
            injected++;
            clean_streak = 0;
        } else {
            clean_streak++;
        }
    }
    CHECK(clean_streak == 20, "no clean run before fail_alloc_at=%llu", (unsigned long long)n);
    CHECK(injected >= 3, "only %llu runs saw an injected failure: fault injection inactive?",
          (unsigned long long)injected);
    printf("test_fault: ok (%llu runs, %llu with an injected ENOMEM)\n", (unsigned long long)(n - 1),
           (unsigned long long)injected);
    return 0;
}
