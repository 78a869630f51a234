/*
 * test_trace: parla_trace_write on a traced run with dependencies, a task that
 * suspends on tasks it spawned (several segments), bodies that wait inside
 * other bodies, and several workers; under the sanitizer builds this keeps the
 * trace analysis free of races, leaks and overflows. Checks the summary's
 * counts, that the Chrome file is complete JSON-looking text with one slice
 * per segment on the worker tracks, and the DOT file's legend.
 */
#include <stdatomic.h>

#include "check.h"

static parla_runtime_t *rt;

static int leaf_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    spin_for(0.0005);
    return 0;
}

/* Spawns two leaves, suspends on them, finishes when called again. */
static int suspender_body(parla_task_t *task, void *arg)
{
    int *phase = arg;
    if ((*phase)++ > 0)
        return 0;
    parla_task_t *kids[2];
    for (int i = 0; i < 2; i++) {
        CHECK_OK(parla_task_create(rt, leaf_body, NULL, &kids[i]));
        CHECK_OK(parla_task_set_name(kids[i], "kid"));
        CHECK_OK(parla_task_submit(kids[i]));
    }
    CHECK_OK(parla_task_suspend_on(task, kids, 2));
    for (int i = 0; i < 2; i++)
        parla_task_release(kids[i]);
    return PARLA_TASK_SUSPEND;
}

/* Waits (blocking, helping) for a leaf it spawned. */
static int waiter_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    parla_task_t *kid;
    CHECK_OK(parla_task_create(rt, leaf_body, NULL, &kid));
    CHECK_OK(parla_task_submit(kid));
    int rc = parla_task_wait(kid);
    parla_task_release(kid);
    return rc;
}

static long count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    long k = 0;
    for (const char *p = buf; (p = strstr(p, needle)) != NULL; p++)
        k++;
    return k;
}

int main(void)
{
    check_watchdog(50);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 3;
    cfg.trace = 1;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    enum { CHAIN = 20, SUSPENDERS = 4, WAITERS = 4 };
    parla_task_t *prev = NULL;
    for (int i = 0; i < CHAIN; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, leaf_body, NULL, &t));
        CHECK_OK(parla_task_set_name(t, "chain"));
        if (prev) {
            CHECK_OK(parla_task_add_dependency(t, prev));
            parla_task_release(prev);
        }
        CHECK_OK(parla_task_submit(t));
        prev = t;
    }
    parla_task_release(prev);
    int phases[SUSPENDERS] = {0};
    for (int i = 0; i < SUSPENDERS; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, suspender_body, &phases[i], &t));
        CHECK_OK(parla_task_set_name(t, "suspender"));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    for (int i = 0; i < WAITERS; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, waiter_body, NULL, &t));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    char json[] = "/tmp/parla-test-trace-XXXXXX";
    int fd = mkstemp(json);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    char dot[] = "/tmp/parla-test-dot-XXXXXX";
    fd = mkstemp(dot);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    char summary[8192];
    CHECK_OK(parla_trace_write(rt, json, dot, summary, sizeof summary));
    long tasks = CHAIN + SUSPENDERS * 3 + WAITERS * 2;
    char want[64];
    snprintf(want, sizeof want, "Parla run: %ld tasks", tasks);
    CHECK(strstr(summary, want) != NULL, "summary counts the tasks: %s", summary);
    CHECK(strstr(summary, "critical path: ") != NULL, "summary has the critical path: %s", summary);
    /* One slice per segment on the worker tracks and one on a device lane. */
    long slices = count(json, "\"ph\":\"X\"");
    CHECK(slices == 2 * (tasks + SUSPENDERS), "%ld slices, expected %ld", slices, 2 * (tasks + SUSPENDERS));
    CHECK(count(json, "\"name\":\"await\"") == 2 * SUSPENDERS * 2, "two arrows ends per await");
    CHECK(count(json, "\n]}\n") == 1, "the file is complete");
    CHECK(count(dot, "cluster_legend") == 1, "the graph has a legend");
    remove(json);
    remove(dot);
    CHECK_OK(parla_runtime_destroy(rt));
    printf("test_trace: ok\n");
    return 0;
}
