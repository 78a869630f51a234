/*
 * test_hazard_limit: a data access whose hazard check cannot finish is refused.
 *
 * A task that already has dependents (here a chain of never-submitted tasks
 * after it) and declares an access conflicting with an earlier writer must
 * not be ordered after that writer when the writer depends on it (a cycle):
 * the engine searches the graph from the task for the writer. The search
 * visits at most 100,000 tasks; past that it cannot answer, and the access
 * fails with PARLA_ENOMEM and a message saying why, instead of adding an edge
 * that might close a cycle. Below the limit the same access succeeds.
 */
#include <string.h>

#include "check.h"

static int noop(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 0;
}

/* A task t with a chain of n never-submitted dependents after it (t -> c1 ->
 * ... -> cn). All are returned in out[0..n] (t first), created. */
static parla_task_t **chain(parla_runtime_t *rt, size_t n)
{
    parla_task_t **v = calloc(n + 1, sizeof *v);
    CHECK(v != NULL, "cannot allocate %zu task pointers", n + 1);
    for (size_t i = 0; i <= n; i++) {
        CHECK_OK(parla_task_create(rt, noop, NULL, &v[i]));
        if (i > 0)
            CHECK_OK(parla_task_add_dependency(v[i], v[i - 1]));
    }
    return v;
}

static void cancel_all(parla_task_t **v, size_t n)
{
    for (size_t i = 0; i <= n; i++) {
        CHECK_OK(parla_task_cancel(v[i]));
        parla_task_release(v[i]);
    }
    free(v);
}

int main(void)
{
    check_watchdog(110);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 1;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    char buf[64] = {0};
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, sizeof buf, buf, &d));
    parla_task_t *writer;
    CHECK_OK(parla_task_create(rt, noop, NULL, &writer));
    CHECK_OK(parla_task_add_access(writer, d, PARLA_WRITE));

    check_set_phase("below the limit");
    size_t small = 10;
    parla_task_t **a = chain(rt, small);
    CHECK_OK(parla_task_add_access(a[0], d, PARLA_READ));

    check_set_phase("past the limit");
    size_t big = 100001;
    parla_task_t **b = chain(rt, big);
    CHECK_RC(parla_task_add_access(b[0], d, PARLA_READ), PARLA_ENOMEM);
    const char *msg = parla_last_error_message();
    CHECK(strstr(msg, "dependency cycle") != NULL && strstr(msg, "100000") != NULL,
          "the message says why: \"%s\"", msg);

    check_set_phase("cleanup");
    cancel_all(b, big);
    cancel_all(a, small);
    CHECK_OK(parla_task_cancel(writer));
    parla_task_release(writer);
    parla_data_release(d);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    printf("test_hazard_limit: ok\n");
    return 0;
}
