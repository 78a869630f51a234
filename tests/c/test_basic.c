/*
 * test_basic: runtime creation and destruction, configuration defaults,
 * PARLA_NUM_THREADS parsing, error and state names, statistics counters, task
 * names, the user data slot, reference counting and the argument checks of the
 * task calls.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include <sched.h>
#include <sys/wait.h>

#include "check.h"

static atomic_int hook_starts;
static atomic_int hook_stops;
static atomic_int hook_seen[64];
static atomic_int hook_index_ok;

static void on_start(int index, void *user)
{
    CHECK(user == (void *)&hook_starts, "hook_user not passed");
    if (index >= 0 && index < 64)
        atomic_fetch_add(&hook_seen[index], 1);
    if (parla_worker_index() != index)
        atomic_store(&hook_index_ok, 0);
    atomic_fetch_add(&hook_starts, 1);
}

static void on_stop(int index, void *user)
{
    (void)index;
    CHECK(user == (void *)&hook_starts, "hook_user not passed");
    atomic_fetch_add(&hook_stops, 1);
}

static atomic_int runs;

static int body_count(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&runs, 1);
    return 0;
}

static int body_return_arg(parla_task_t *task, void *arg)
{
    (void)task;
    atomic_fetch_add(&runs, 1);
    return (int)(intptr_t)arg;
}

/* Records what a body sees about its own context. */
struct ctx_probe {
    parla_task_t *self_seen;
    int worker_index;
    int wait_all_rc;
    int destroy_rc;
    int wait_self_rc;
    int suspend_other_rc;
    parla_runtime_t *rt;
    parla_task_t *other;
};

static int body_probe(parla_task_t *task, void *arg)
{
    struct ctx_probe *p = arg;
    p->self_seen = parla_task_current();
    p->worker_index = parla_worker_index();
    p->wait_all_rc = parla_runtime_wait_all(p->rt);
    p->destroy_rc = parla_runtime_destroy(p->rt);
    p->wait_self_rc = parla_task_wait(task);
    parla_task_t *const list[1] = {task};
    /* suspend_on with another task's handle as self must be refused. */
    p->suspend_other_rc = parla_task_suspend_on(p->other, list, 1);
    return 0;
}

static void test_config_and_create(void)
{
    check_set_phase("config");
    parla_config_t cfg;
    memset(&cfg, 0xab, sizeof cfg);
    parla_config_init(&cfg);
    CHECK(cfg.n_workers == 0, "n_workers default %d", cfg.n_workers);
    CHECK(cfg.cpu_memory == 0, "cpu_memory default");
    CHECK(cfg.worker_start == NULL && cfg.worker_stop == NULL && cfg.worker_idle == NULL,
          "hooks default");
    CHECK(cfg.hook_user == NULL, "hook_user default");
    CHECK(cfg.fail_alloc_at == 0, "fail_alloc_at default");

    unsetenv("PARLA_NUM_THREADS");
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);
    parla_runtime_t *rt = (parla_runtime_t *)&cfg;
    CHECK_OK(parla_runtime_create(NULL, &rt));
    CHECK(rt != NULL, "rt NULL");
    /* The CPUs this process may use: at most the online cores (fewer under an
     * affinity mask or a cgroup CPU limit; see below). */
    CHECK(parla_runtime_num_workers(rt) >= 1 && parla_runtime_num_workers(rt) <= (int)ncores,
          "default workers %d, cores %ld", parla_runtime_num_workers(rt), ncores);
    CHECK(parla_worker_index() == -1, "main thread worker index %d", parla_worker_index());
    CHECK(parla_task_current() == NULL, "task_current outside a body");
    CHECK_OK(parla_runtime_wait_all(rt)); /* nothing submitted: returns at once */
    CHECK_OK(parla_runtime_destroy(rt));

    CHECK_OK(parla_runtime_destroy(NULL));

    cfg.n_workers = 3;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_workers(rt) == 3, "n_workers=3 gave %d", parla_runtime_num_workers(rt));
    CHECK_OK(parla_runtime_destroy(rt));

    /* The default honours the affinity mask (taskset -c 0 gives one worker). */
    cpu_set_t saved, one;
    CHECK(sched_getaffinity(0, sizeof saved, &saved) == 0, "sched_getaffinity failed");
    int first = 0;
    while (!CPU_ISSET(first, &saved))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK(sched_setaffinity(0, sizeof one, &one) == 0, "sched_setaffinity failed");
    CHECK_OK(parla_runtime_create(NULL, &rt));
    int pinned = parla_runtime_num_workers(rt);
    CHECK_OK(parla_runtime_destroy(rt));
    CHECK(sched_setaffinity(0, sizeof saved, &saved) == 0, "sched_setaffinity failed");
    CHECK(pinned == 1, "pinned to one CPU, the default is %d workers", pinned);

    /* A cap on workers, and bad device settings, refused with the name. */
    cfg.n_workers = PARLA_MAX_WORKERS + 1;
    rt = (parla_runtime_t *)&cfg;
    CHECK_RC(parla_runtime_create(&cfg, &rt), PARLA_EINVAL);
    CHECK(rt == NULL && strstr(parla_last_error_message(), "n_workers=4097") != NULL, "message: %s",
          parla_last_error_message());
    cfg.n_workers = 1000000;
    CHECK_RC(parla_runtime_create(&cfg, &rt), PARLA_EINVAL);
    cfg.n_workers = 1;
    cfg.n_virtual_gpus = -2;
    CHECK_RC(parla_runtime_create(&cfg, &rt), PARLA_EINVAL);
    CHECK(strstr(parla_last_error_message(), "n_virtual_gpus=-2") != NULL, "message: %s", parla_last_error_message());
    cfg.n_virtual_gpus = 1;
    const double bad_bw[] = {NAN, -1.0, INFINITY};
    for (int i = 0; i < 3; i++) {
        cfg.virtual_gpu_bandwidth = bad_bw[i];
        CHECK_RC(parla_runtime_create(&cfg, &rt), PARLA_EINVAL);
        CHECK(rt == NULL && strstr(parla_last_error_message(), "virtual_gpu_bandwidth") != NULL, "message: %s",
              parla_last_error_message());
    }
    cfg.virtual_gpu_bandwidth = 0;
    cfg.n_virtual_gpus = 0;

    cfg.n_workers = -1;
    rt = (parla_runtime_t *)&cfg;
    CHECK_RC(parla_runtime_create(&cfg, &rt), PARLA_EINVAL);
    CHECK(rt == NULL, "*out not NULL after a failed create");
    CHECK(strlen(parla_last_error_message()) > 0, "no message for EINVAL");

    /* PARLA_NUM_THREADS, used when n_workers is 0. */
    cfg.n_workers = 0;
    setenv("PARLA_NUM_THREADS", "3", 1);
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_workers(rt) == 3, "PARLA_NUM_THREADS=3 gave %d",
          parla_runtime_num_workers(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    CHECK_OK(parla_runtime_create(NULL, &rt));
    CHECK(parla_runtime_num_workers(rt) == 3, "NULL config with PARLA_NUM_THREADS=3 gave %d",
          parla_runtime_num_workers(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    setenv("PARLA_NUM_THREADS", "1", 1);
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_workers(rt) == 1, "PARLA_NUM_THREADS=1 gave %d",
          parla_runtime_num_workers(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    /* An explicit n_workers wins over the variable. */
    cfg.n_workers = 2;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK(parla_runtime_num_workers(rt) == 2, "explicit n_workers=2 gave %d",
          parla_runtime_num_workers(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    cfg.n_workers = 0;

    static const char *const bad[] = {"abc", "0", "-2", "3x", "2.5", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("PARLA_NUM_THREADS", bad[i], 1);
        rt = (parla_runtime_t *)&cfg;
        int rc = parla_runtime_create(&cfg, &rt);
        CHECK(rc == PARLA_EINVAL, "PARLA_NUM_THREADS=\"%s\" returned %d (%s), expected EINVAL",
              bad[i], rc, parla_strerror(rc));
        CHECK(rt == NULL, "*out not NULL after EINVAL for \"%s\"", bad[i]);
        CHECK(strstr(parla_last_error_message(), "PARLA_NUM_THREADS") != NULL,
              "message does not name PARLA_NUM_THREADS: \"%s\"", parla_last_error_message());
    }
    unsetenv("PARLA_NUM_THREADS");

    /* Hooks: start on each worker before any task, stop after the last. */
    parla_config_init(&cfg);
    cfg.n_workers = 4;
    cfg.worker_start = on_start;
    cfg.worker_stop = on_stop;
    cfg.hook_user = &hook_starts;
    atomic_store(&hook_index_ok, 1);
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    parla_task_t *t;
    atomic_store(&runs, 0);
    CHECK_OK(parla_task_create(rt, body_count, NULL, &t));
    CHECK_OK(parla_task_submit(t));
    CHECK_OK(parla_task_wait(t));
    parla_task_release(t);
    /* parla_task_wait returned: the task has finished, so destroy must not
     * report it as live. */
    CHECK_OK(parla_runtime_destroy(rt));
    CHECK(atomic_load(&hook_starts) == 4, "worker_start called %d times", atomic_load(&hook_starts));
    CHECK(atomic_load(&hook_stops) == 4, "worker_stop called %d times", atomic_load(&hook_stops));
    for (int i = 0; i < 4; i++)
        CHECK(atomic_load(&hook_seen[i]) == 1, "worker_start for index %d called %d times", i,
              atomic_load(&hook_seen[i]));
    CHECK(atomic_load(&hook_index_ok) == 1, "parla_worker_index() != index in worker_start");
}

static void test_names(void)
{
    check_set_phase("strerror/state names");
    static const int codes[] = {PARLA_OK,         PARLA_EINVAL,    PARLA_ENOMEM, PARLA_EBUSY,
                                PARLA_ESTATE,     PARLA_ESTUCK,    PARLA_EFAILED,
                                PARLA_ECANCELLED, PARLA_ENODEV,    PARLA_ERESOURCE,
                                PARLA_ESYS,       PARLA_EDEVICE,   PARLA_ETIMEDOUT};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *s = parla_strerror(codes[i]);
        CHECK(s != NULL && s[0] != '\0', "strerror(%d) empty", codes[i]);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(s, parla_strerror(codes[j])) != 0, "strerror(%d) == strerror(%d) = \"%s\"",
                  codes[i], codes[j], s);
    }
    CHECK(strstr(parla_strerror(PARLA_ENOMEM), "memory") != NULL, "ENOMEM name \"%s\"",
          parla_strerror(PARLA_ENOMEM));
    const char *unknown = parla_strerror(-12345);
    CHECK(unknown != NULL && unknown[0] != '\0', "strerror(unknown) empty");
    CHECK(parla_strerror(42) != NULL, "strerror(42) NULL");
    CHECK(parla_last_error_message() != NULL, "last_error_message NULL");

    static const char *const want[] = {"created",  "submitted", "ready", "running",  "suspended",
                                       "runahead", "done",      "failed", "cancelled"};
    for (int s = PARLA_TASK_CREATED; s <= PARLA_TASK_CANCELLED; s++) {
        const char *name = parla_task_state_name((parla_task_state_t)s);
        CHECK(name != NULL, "state name NULL");
        CHECK(strcmp(name, want[s]) == 0, "state %d named \"%s\", expected \"%s\"", s, name, want[s]);
    }
}

static void test_tasks(void)
{
    check_set_phase("tasks");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt, *rt2;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK_OK(parla_runtime_create(&cfg, &rt2));

    parla_runtime_stats_t st0;
    parla_runtime_stats(rt, &st0);
    CHECK(st0.tasks_created == 0 && st0.tasks_run == 0 && st0.tasks_failed == 0 &&
              st0.tasks_cancelled == 0,
          "fresh stats not zero");

    /* Names. */
    parla_task_t *a, *b;
    CHECK_OK(parla_task_create(rt, body_count, NULL, &a));
    CHECK_OK(parla_task_create(rt, body_count, NULL, &b));
    CHECK(strncmp(parla_task_name(a), "task#", 5) == 0, "default name \"%s\"", parla_task_name(a));
    {
        char na[64];
        snprintf(na, sizeof na, "%s", parla_task_name(a));
        CHECK(strcmp(na, parla_task_name(b)) != 0, "two default names equal: \"%s\"", na);
        /* "Valid while the task lives": a's name must not change when b's is
         * asked for. */
        const char *pa = parla_task_name(a);
        const char *pb = parla_task_name(b);
        CHECK(strcmp(pa, na) == 0 && pa != pb,
              "parla_task_name(a) was overwritten by parla_task_name(b): \"%s\" / \"%s\"", pa, pb);
    }
    CHECK_OK(parla_task_set_name(a, "alpha"));
    CHECK(strcmp(parla_task_name(a), "alpha") == 0, "name \"%s\"", parla_task_name(a));
    char longname[400];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    longname[0] = 'L';
    CHECK_OK(parla_task_set_name(b, longname));
    CHECK(strlen(parla_task_name(b)) == 255, "long name kept %zu bytes", strlen(parla_task_name(b)));
    CHECK(strncmp(parla_task_name(b), longname, 255) == 0, "long name prefix differs");
    {
        /* The name is copied. */
        char buf[16] = "beta";
        CHECK_OK(parla_task_set_name(b, buf));
        buf[0] = 'X';
        CHECK(strcmp(parla_task_name(b), "beta") == 0, "name not copied: \"%s\"", parla_task_name(b));
    }

    /* User data. */
    CHECK(parla_task_user(a) == NULL, "user default not NULL");
    int marker;
    parla_task_set_user(a, &marker);
    CHECK(parla_task_user(a) == &marker, "user slot");

    /* State, priority, resources in CREATED. */
    CHECK(parla_task_state(a) == PARLA_TASK_CREATED, "state %d", parla_task_state(a));
    CHECK(parla_task_error(a) == 0, "error of created task");
    CHECK(parla_task_cause(a) == NULL, "cause of created task");
    CHECK_OK(parla_task_set_priority(a, 5));
    CHECK_OK(parla_task_set_resources(a, 0.5, 1024));
    CHECK_RC(parla_task_set_resources(a, -0.1, 0), PARLA_EINVAL);
    CHECK_RC(parla_task_set_resources(a, 1.5, 0), PARLA_EINVAL);
    CHECK_RC(parla_task_set_resources(a, NAN, 0), PARLA_EINVAL);

    /* Dependencies: argument checks. */
    parla_task_t *other;
    CHECK_OK(parla_task_create(rt2, body_count, NULL, &other));
    CHECK_RC(parla_task_add_dependency(a, a), PARLA_EINVAL);
    CHECK_RC(parla_task_add_dependency(a, other), PARLA_EINVAL);
    CHECK_RC(parla_task_add_dependency(other, a), PARLA_EINVAL);
    CHECK_OK(parla_task_add_dependency(b, a));
    parla_task_release(other); /* never submitted, no dependents: just freed */

    /* retain / release keep the handle valid. */
    parla_task_retain(a);
    parla_task_release(a);
    CHECK(strcmp(parla_task_name(a), "alpha") == 0, "name after retain/release");

    atomic_store(&runs, 0);
    CHECK_OK(parla_task_submit(b));
    CHECK_RC(parla_task_submit(b), PARLA_ESTATE);
    CHECK_RC(parla_task_set_name(b, "late"), PARLA_ESTATE);
    CHECK_RC(parla_task_set_priority(b, 1), PARLA_ESTATE);
    CHECK_RC(parla_task_set_resources(b, 0.1, 0), PARLA_ESTATE);
    CHECK_RC(parla_task_set_body(b, body_count, NULL), PARLA_ESTATE);
    CHECK_RC(parla_task_cancel(b), PARLA_ESTATE);
    parla_task_t *c;
    CHECK_OK(parla_task_create(rt, body_count, NULL, &c));
    CHECK_RC(parla_task_add_dependency(b, c), PARLA_ESTATE); /* b is submitted */
    parla_task_release(c);
    /* b waits for a. */
    sleep_ms(20);
    CHECK(atomic_load(&runs) == 0, "b ran before its dependency a was submitted");
    CHECK(parla_task_state(b) == PARLA_TASK_SUBMITTED, "b state %s",
          parla_task_state_name(parla_task_state(b)));
    CHECK_OK(parla_task_submit(a));
    CHECK_OK(parla_task_wait(b));
    CHECK(parla_task_state(a) == PARLA_TASK_DONE, "a state %s",
          parla_task_state_name(parla_task_state(a)));
    CHECK(parla_task_state(b) == PARLA_TASK_DONE, "b state");
    CHECK(atomic_load(&runs) == 2, "runs %d", atomic_load(&runs));
    CHECK_OK(parla_task_wait(a));
    CHECK(parla_task_error(a) == 0 && parla_task_cause(b) == NULL, "error/cause of done tasks");
    /* The name and user data survive completion. */
    CHECK(strcmp(parla_task_name(a), "alpha") == 0 && parla_task_user(a) == &marker,
          "name/user after completion");

    /* A dependency on a finished task has no effect. */
    parla_task_t *d;
    CHECK_OK(parla_task_create(rt, body_count, NULL, &d));
    CHECK_OK(parla_task_add_dependency(d, a));
    CHECK_OK(parla_task_submit(d));
    CHECK_OK(parla_task_wait(d));
    CHECK(atomic_load(&runs) == 3, "runs %d", atomic_load(&runs));
    parla_task_release(d);

    /* Bodies: NULL body cannot be submitted until set. */
    parla_task_t *e;
    CHECK_OK(parla_task_create(rt, NULL, NULL, &e));
    CHECK_RC(parla_task_submit(e), PARLA_EINVAL);
    CHECK(parla_task_state(e) == PARLA_TASK_CREATED, "failed submit changed the state");
    CHECK_OK(parla_task_set_body(e, body_return_arg, (void *)(intptr_t)42));
    CHECK_OK(parla_task_submit(e));
    CHECK_RC(parla_task_wait(e), PARLA_EFAILED);
    CHECK(parla_task_state(e) == PARLA_TASK_FAILED, "state %s",
          parla_task_state_name(parla_task_state(e)));
    CHECK(parla_task_error(e) == 42, "error %d", parla_task_error(e));
    CHECK(parla_task_cause(e) == NULL, "cause of a failed task");
    parla_task_release(e);

    /* Context inside a body. */
    struct ctx_probe probe;
    memset(&probe, 0, sizeof probe);
    probe.rt = rt;
    parla_task_t *p;
    CHECK_OK(parla_task_create(rt, body_probe, &probe, &p));
    probe.other = a;
    CHECK_OK(parla_task_submit(p));
    CHECK_OK(parla_task_wait(p));
    CHECK(probe.self_seen == p, "parla_task_current() in body");
    CHECK(probe.worker_index >= 0 && probe.worker_index < 2, "worker index in body %d",
          probe.worker_index);
    CHECK(probe.wait_all_rc == PARLA_ESTATE, "wait_all in body returned %d", probe.wait_all_rc);
    CHECK(probe.destroy_rc == PARLA_ESTATE, "destroy in body returned %d", probe.destroy_rc);
    CHECK(probe.wait_self_rc == PARLA_EINVAL, "task_wait(self) in body returned %d",
          probe.wait_self_rc);
    CHECK(probe.suspend_other_rc == PARLA_ESTATE, "suspend_on(other) in body returned %d",
          probe.suspend_other_rc);
    parla_task_release(p);
    CHECK(parla_task_current() == NULL, "task_current after body");
    {
        parla_task_t *const list[1] = {a};
        CHECK_RC(parla_task_suspend_on(b, list, 1), PARLA_ESTATE); /* not in a body */
    }

    /* Releasing a submitted task before it runs is safe. */
    for (int i = 0; i < 100; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, body_count, NULL, &t));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&runs) == 3 + 1 + 100, "runs %d", atomic_load(&runs));

    /* Statistics: one failure with two dependents (one transitive). */
    parla_task_t *f, *g, *h;
    CHECK_OK(parla_task_create(rt, body_return_arg, (void *)(intptr_t)PARLA_EDEVICE, &f));
    CHECK_OK(parla_task_create(rt, body_count, NULL, &g));
    CHECK_OK(parla_task_create(rt, body_count, NULL, &h));
    CHECK_OK(parla_task_add_dependency(g, f));
    CHECK_OK(parla_task_add_dependency(h, g));
    CHECK_OK(parla_task_submit(h));
    CHECK_OK(parla_task_submit(g));
    CHECK_OK(parla_task_submit(f));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_error(f) == PARLA_EDEVICE, "negative error code kept: %d", parla_task_error(f));
    parla_task_release(f);
    parla_task_release(g);
    parla_task_release(h);

    parla_runtime_stats_t st;
    parla_runtime_stats(rt, &st);
    /* created: a b c d e p, 100, f g h = 109. */
    CHECK(st.tasks_created == 109, "tasks_created %llu", (unsigned long long)st.tasks_created);
    /* run to completion: a b d e p, 100, f = 106 (e and f failed). */
    CHECK(st.tasks_run == 106, "tasks_run %llu", (unsigned long long)st.tasks_run);
    CHECK(st.tasks_failed == 2, "tasks_failed %llu", (unsigned long long)st.tasks_failed);
    CHECK(st.tasks_cancelled == 2, "tasks_cancelled %llu", (unsigned long long)st.tasks_cancelled);
    parla_runtime_stats_t st2;
    parla_runtime_stats(rt2, &st2);
    CHECK(st2.tasks_created == 1 && st2.tasks_run == 0, "rt2 stats created %llu run %llu",
          (unsigned long long)st2.tasks_created, (unsigned long long)st2.tasks_run);

    /* Handles outlive the runtime. */
    parla_data_t *kept;
    CHECK_OK(parla_data_create(rt, 64, NULL, &kept));
    CHECK_OK(parla_runtime_destroy(rt));
    /* A destroyed runtime refuses everything, a second destroy included
     * (it would free the runtime under the handles still held). */
    CHECK_RC(parla_runtime_destroy(rt), PARLA_ESTATE);
    CHECK(strstr(parla_last_error_message(), "already destroyed") != NULL, "message: %s", parla_last_error_message());
    CHECK_RC(parla_runtime_destroy(rt), PARLA_ESTATE);
    parla_data_t *late = (parla_data_t *)&late;
    CHECK_RC(parla_data_create(rt, 64, NULL, &late), PARLA_ESTATE);
    CHECK(late == NULL, "a refused parla_data_create left its out argument set");
    parla_task_t *none;
    CHECK_RC(parla_task_create(rt, body_count, NULL, &none), PARLA_ESTATE);
    CHECK(parla_data_nbytes(kept) == 64, "a data object outliving its runtime has %llu bytes",
          (unsigned long long)parla_data_nbytes(kept));
    parla_data_release(kept);
    CHECK(parla_task_state(a) == PARLA_TASK_DONE, "state after destroy");
    CHECK(strcmp(parla_task_name(a), "alpha") == 0, "name after destroy");
    CHECK(strcmp(parla_task_name(b), "beta") == 0, "name after destroy");
    parla_task_release(a);
    parla_task_release(b);
    CHECK_OK(parla_runtime_destroy(rt2));
}

/* After fork() the child has none of the runtime's threads: every call that
 * would wait for them (or start work) returns PARLA_ESTATE there instead of
 * hanging, and parla_runtime_forked says so; the parent is unaffected. */
static void test_fork(void)
{
    check_set_phase("fork");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, body_count, NULL, &t));
    CHECK(parla_runtime_forked(rt) == 0, "the creating process is taken for a fork child");
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        int bad = 0;
        parla_task_t *u = NULL;
        parla_data_t *d = NULL;
        bad |= parla_runtime_forked(rt) != 1;
        bad |= parla_task_create(rt, body_count, NULL, &u) != PARLA_ESTATE;
        bad |= strstr(parla_last_error_message(), "fork") == NULL;
        bad |= parla_task_submit(t) != PARLA_ESTATE;
        bad |= parla_data_create(rt, 8, NULL, &d) != PARLA_ESTATE;
        bad |= parla_task_wait(t) != PARLA_ESTATE;
        bad |= parla_runtime_wait_all(rt) != PARLA_ESTATE;
        bad |= parla_runtime_destroy(rt) != PARLA_ESTATE;
        _exit(bad ? 3 : 0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fork child saw wrong results (status %d)", status);
    parla_task_release(t);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt));
}

/* parla_task_is_plain_done: 1 only for a task that finished DONE on the CPU without placement options,
 * accesses or mapping (what a binding may then forget). */
static void test_plain_done(void)
{
    check_set_phase("plain done");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 1;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    parla_task_t *plain, *placed, *failing;
    CHECK_OK(parla_task_create(rt, body_count, NULL, &plain));
    CHECK_OK(parla_task_create(rt, body_count, NULL, &placed));
    CHECK_OK(parla_task_create(rt, body_return_arg, (void *)(intptr_t)3, &failing));
    int cpu = PARLA_ANY_CPU;
    CHECK_OK(parla_task_add_placement(placed, &cpu, 1, 0.0, 0));
    CHECK(parla_task_is_plain_done(NULL) == 0, "NULL is plain done");
    CHECK(parla_task_is_plain_done(plain) == 0, "a created task is plain done");
    CHECK_OK(parla_task_submit(plain));
    CHECK_OK(parla_task_submit(placed));
    CHECK_OK(parla_task_submit(failing));
    CHECK_OK(parla_task_wait(plain));
    CHECK_OK(parla_task_wait(placed));
    CHECK_RC(parla_task_wait(failing), PARLA_EFAILED);
    CHECK(parla_task_state(plain) == PARLA_TASK_DONE && parla_task_is_plain_done(plain) == 1,
          "a done plain task: state %d, plain done %d", (int)parla_task_state(plain), parla_task_is_plain_done(plain));
    CHECK(parla_task_state(placed) == PARLA_TASK_DONE && parla_task_is_plain_done(placed) == 0,
          "a done task with a placement option: state %d, plain done %d", (int)parla_task_state(placed),
          parla_task_is_plain_done(placed));
    CHECK(parla_task_state(failing) == PARLA_TASK_FAILED && parla_task_is_plain_done(failing) == 0,
          "a failed task: state %d, plain done %d", (int)parla_task_state(failing),
          parla_task_is_plain_done(failing));
    parla_task_release(plain);
    parla_task_release(placed);
    parla_task_release(failing);
    CHECK_OK(parla_runtime_destroy(rt));
}

int main(void)
{
    check_watchdog(50);
    test_names();
    test_config_and_create();
    test_tasks();
    test_fork();
    test_plain_done();
    printf("test_basic: ok\n");
    return 0;
}
