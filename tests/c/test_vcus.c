/*
 * test_vcus: resource needs on the CPU device. With capacity 1.0 vcus and 4
 * workers, tasks needing 0.5 vcus run at most two at a time, and do reach two;
 * a 1.0-vcu task runs alone; tasks with no vcu need are not limited; memory
 * needs against cpu_memory behave the same; needs above the capacity fail at
 * submit with PARLA_ERESOURCE (dependents cancelled) and out-of-range vcus are
 * refused by parla_task_set_resources with PARLA_EINVAL.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

static atomic_int in_group[4];   /* running tasks per group */
static atomic_int peak_group[4]; /* peak per group */
static atomic_int running_all;   /* running tasks of groups 0..2 */
static atomic_int exclusive_violations;

struct job {
    int group;
    double seconds;
    int exclusive; /* must run with no other counted task */
};

static int job_body(parla_task_t *task, void *arg)
{
    (void)task;
    struct job *j = arg;
    int now = atomic_fetch_add(&in_group[j->group], 1) + 1;
    int all = atomic_fetch_add(&running_all, 1) + 1;
    if (j->exclusive && all != 1)
        atomic_fetch_add(&exclusive_violations, 1);
    int p = atomic_load(&peak_group[j->group]);
    while (now > p && !atomic_compare_exchange_weak(&peak_group[j->group], &p, now)) {
    }
    double end = now_s() + j->seconds;
    while (now_s() < end) {
        if (j->exclusive && atomic_load(&running_all) != 1)
            atomic_fetch_add(&exclusive_violations, 1);
    }
    atomic_fetch_sub(&running_all, 1);
    atomic_fetch_sub(&in_group[j->group], 1);
    return 0;
}

static void reset(void)
{
    for (int g = 0; g < 4; g++) {
        atomic_store(&in_group[g], 0);
        atomic_store(&peak_group[g], 0);
    }
    atomic_store(&running_all, 0);
    atomic_store(&exclusive_violations, 0);
}

static int nop(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return 0;
}

int main(void)
{
    check_watchdog(50);
    const uint64_t MiB = 1024 * 1024;
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 4;
    cfg.cpu_memory = 100 * MiB;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));

    long n = scaled(60, 12);
    struct job *jobs = calloc((size_t)n + 8, sizeof *jobs);
    CHECK(jobs != NULL, "calloc");

    /* 1. Half-device tasks: exactly two at a time. */
    check_set_phase("vcus 0.5");
    reset();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        jobs[i] = (struct job){0, 0.002, 0};
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, job_body, &jobs[i], &t));
        CHECK_OK(parla_task_set_resources(t, 0.5, 0));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    double dt = now_s() - t0;
    CHECK(atomic_load(&peak_group[0]) == 2, "peak concurrency of 0.5-vcu tasks is %d, expected 2",
          atomic_load(&peak_group[0]));
    printf("vcus 0.5: %ld tasks of 2 ms in %.1f ms (ideal %.1f ms)\n", n, dt * 1e3,
           (double)n * 2.0 / 2.0);

    /* 2. 0.3-vcu tasks: three fit (0.9), four do not. */
    check_set_phase("vcus 0.3");
    reset();
    for (long i = 0; i < n; i++) {
        jobs[i] = (struct job){1, 0.002, 0};
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, job_body, &jobs[i], &t));
        CHECK_OK(parla_task_set_resources(t, 0.3, 0));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&peak_group[1]) <= 3 && atomic_load(&peak_group[1]) >= 2,
          "peak concurrency of 0.3-vcu tasks is %d, expected 2..3", atomic_load(&peak_group[1]));

    /* 3. A whole-device task among half-device tasks runs alone. */
    check_set_phase("vcus 1.0 exclusive");
    reset();
    for (long i = 0; i < n; i++) {
        int excl = (i == n / 2) || (i == n / 4);
        jobs[i] = (struct job){excl ? 2 : 0, 0.002, excl};
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, job_body, &jobs[i], &t));
        CHECK_OK(parla_task_set_resources(t, excl ? 1.0 : 0.5, 0));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&exclusive_violations) == 0, "a 1.0-vcu task ran alongside others (%d)",
          atomic_load(&exclusive_violations));
    CHECK(atomic_load(&peak_group[0]) == 2, "0.5-vcu peak %d", atomic_load(&peak_group[0]));
    CHECK(atomic_load(&peak_group[2]) == 1, "1.0-vcu peak %d", atomic_load(&peak_group[2]));

    /* 4. Tasks without a vcu need are not limited by vcus (a 0 read as 1.0
     * would serialise them). */
    check_set_phase("vcus 0 unlimited");
    reset();
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){3, 0.05, 0};
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, job_body, &jobs[i], &t));
        CHECK_OK(parla_task_set_resources(t, 0.0, 0));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&peak_group[3]) >= 2, "tasks with vcus 0 peaked at %d",
          atomic_load(&peak_group[3]));

    /* 5. Memory: 40 MiB tasks on a 100 MiB device, at most two at a time. */
    check_set_phase("memory");
    reset();
    for (long i = 0; i < n; i++) {
        jobs[i] = (struct job){0, 0.002, 0};
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, job_body, &jobs[i], &t));
        CHECK_OK(parla_task_set_resources(t, 0.0, 40 * MiB));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&peak_group[0]) == 2, "peak concurrency of 40 MiB tasks is %d, expected 2",
          atomic_load(&peak_group[0]));

    /* A task needing exactly the whole memory fits, and runs alone. */
    reset();
    jobs[0] = (struct job){2, 0.002, 1};
    for (long i = 1; i < 9; i++)
        jobs[i] = (struct job){0, 0.002, 0};
    for (long i = 0; i < 9; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, job_body, &jobs[i], &t));
        CHECK_OK(parla_task_set_resources(t, 0.0, i == 0 ? 100 * MiB : 30 * MiB));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&exclusive_violations) == 0, "whole-memory task overlapped others");
    CHECK(atomic_load(&peak_group[0]) >= 2 && atomic_load(&peak_group[0]) <= 3,
          "30 MiB tasks peaked at %d, expected 2..3",
          atomic_load(&peak_group[0]));

    /* 6. Needs beyond the capacity. */
    check_set_phase("beyond capacity");
    parla_task_t *big, *dep, *ok;
    CHECK_OK(parla_task_create(rt, nop, NULL, &big));
    CHECK_OK(parla_task_set_name(big, "too-big"));
    CHECK_OK(parla_task_create(rt, nop, NULL, &dep));
    CHECK_OK(parla_task_add_dependency(dep, big));
    CHECK_OK(parla_task_submit(dep));
    CHECK_OK(parla_task_set_resources(big, 0.5, 101 * MiB));
    CHECK_RC(parla_task_submit(big), PARLA_ERESOURCE);
    CHECK(strlen(parla_last_error_message()) > 0, "no message for ERESOURCE");
    CHECK(parla_task_state(big) == PARLA_TASK_FAILED, "over-capacity task state %s",
          parla_task_state_name(parla_task_state(big)));
    CHECK(parla_task_error(big) == PARLA_ERESOURCE, "over-capacity task error %d",
          parla_task_error(big));
    CHECK_RC(parla_task_wait(big), PARLA_EFAILED);
    CHECK_RC(parla_task_wait(dep), PARLA_ECANCELLED);
    CHECK(parla_task_cause(dep) == big, "dependent's cause");
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_task_release(big);
    parla_task_release(dep);

    /* vcus > 1 is refused by set_resources and changes nothing. */
    CHECK_OK(parla_task_create(rt, nop, NULL, &ok));
    CHECK_RC(parla_task_set_resources(ok, 1.5, 0), PARLA_EINVAL);
    CHECK_RC(parla_task_set_resources(ok, -0.5, 0), PARLA_EINVAL);
    CHECK_OK(parla_task_submit(ok));
    CHECK_OK(parla_task_wait(ok));
    parla_task_release(ok);

    /* After all that, every reservation was given back: a whole-device,
     * whole-memory task still runs. */
    CHECK_OK(parla_task_create(rt, nop, NULL, &ok));
    CHECK_OK(parla_task_set_resources(ok, 1.0, 100 * MiB));
    CHECK_OK(parla_task_submit(ok));
    double tw = now_s();
    CHECK_OK(parla_task_wait(ok));
    CHECK(now_s() - tw < 2.0, "whole-device task waited %.3f s", now_s() - tw);
    parla_task_release(ok);

    CHECK_OK(parla_runtime_destroy(rt));
    free(jobs);
    printf("test_vcus: ok\n");
    return 0;
}
