/*
 * test_trace: parla_trace_write on a traced run with dependencies, a task that
 * suspends on tasks it spawned (several segments), bodies that wait inside
 * other bodies, and several workers; under the sanitizer builds this keeps the
 * trace analysis free of races, leaks and overflows. Checks the summary's
 * counts, that the Chrome file is complete JSON-looking text with one slice
 * per segment on the worker tracks, and the DOT file's legend.
 *
 * Before that, the trace layer's pieces on hand-built event lists with known
 * times: the analysis (segments merged into tasks, duplicate edges folded,
 * the critical path through dependencies and through an await), the
 * "has scores" flag of the task emitter, the summary's exact lines (busy %,
 * critical path) and its truncation, and the DOT's critical edges.
 *
 * Then busy-time accounting (parla_device_busy): bodies that spin for known
 * times on the CPU and a virtual GPU, with and without vcus, and a body that
 * waits and runs its child inside itself (counted once). Each device's busy
 * time is at least what the bodies measured of themselves, weighted by their
 * share, and at most the run's wall time times the device (never two bodies'
 * time for one worker).
 */
#include <math.h>
#include <stdatomic.h>

#include "check.h"
#include "trace/analysis.h"

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

#define MS 1000000ull

/* A hand-built trace, times in ms since the sink started. A(0-10) -> B(10-30,
 * gpu(0), scores) and C(10-15); B, C -> D(30-35); E runs 0-2, awaits F(2-f_end)
 * and resumes at f_end+1 for 1 ms. All on the shared buffer (worker -1). */
static parla__trace_t *hand_trace(uint64_t f_end)
{
    parla__trace_t *tr = parla__trace_create(NULL, 2);
    CHECK(tr != NULL, "parla__trace_create");
    uint64_t t0 = parla__trace_start(tr);
    parla_mapping_t m = {.n_candidates = 2, .locality = 0.5, .transfer = 0.25, .load = 0.25, .score = 0.0};
    parla__trace_task(tr, 1, t0, t0 + 10 * MS, 0, PARLA_TASK_DONE, NULL);
    parla__trace_task(tr, 2, t0 + 10 * MS, t0 + 30 * MS, 1, PARLA_TASK_DONE, &m);
    parla__trace_task(tr, 3, t0 + 10 * MS, t0 + 15 * MS, 0, PARLA_TASK_DONE, NULL);
    parla__trace_task(tr, 4, t0 + 30 * MS, t0 + 35 * MS, 0, PARLA_TASK_DONE, NULL);
    parla__trace_task(tr, 5, t0, t0 + 2 * MS, 0, PARLA_TASK_SUSPENDED, NULL);
    parla__trace_task(tr, 6, t0 + 2 * MS, t0 + f_end * MS, 0, PARLA_TASK_DONE, NULL);
    parla__trace_task(tr, 5, t0 + (f_end + 1) * MS, t0 + (f_end + 2) * MS, 0, PARLA_TASK_DONE, NULL);
    parla__trace_edge(tr, t0, 1, 2, PARLA__EK_EXPLICIT);
    parla__trace_edge(tr, t0, 1, 2, PARLA__EK_FLOW); /* the same pair again: one edge, explicit */
    parla__trace_edge(tr, t0, 1, 3, PARLA__EK_FLOW);
    parla__trace_edge(tr, t0, 2, 4, PARLA__EK_ORDER);
    parla__trace_edge(tr, t0, 3, 4, PARLA__EK_EXPLICIT);
    parla__trace_edge(tr, t0, 6, 5, PARLA__EK_AWAIT);
    parla__trace_copy(tr, 2, t0 + 9 * MS, t0 + 10 * MS, 1, 0, 4096);
    parla__trace_evict(tr, t0 + 31 * MS, 1, 4096);
    const char *names[] = {"A", "B", "C", "D", "E", "F"};
    for (uint64_t i = 0; i < 6; i++)
        parla__trace_task_name(tr, i + 1, names[i]);
    return tr;
}

static void check_analysis(uint64_t f_end, const char *want_path, double want_ms)
{
    parla__trace_t *tr = hand_trace(f_end);
    parla__trace_device_t devs[2] = {{"cpu(0)", 0, 0, 0}, {"gpu(0)", 4096, 0, 1}};
    parla__trace_meta_t meta = {2, 2, devs};
    tgraph_t g = {.tr = tr, .meta = &meta, .t0 = parla__trace_start(tr), .crit_last = -1};
    CHECK_OK(parla__trace_gather(tr, &g));
    CHECK(g.n_segs == 7 && g.n_edges == 6 && g.n_items == 1 && g.n_copies == 1, "gathered %zu segs %zu edges %zu items",
          g.n_segs, g.n_edges, g.n_items);
    CHECK_OK(parla__trace_merge_segments(&g));
    CHECK(g.n_tasks == 6 && g.n_edges == 5, "%zu tasks, %zu edges after folding", g.n_tasks, g.n_edges);
    CHECK(g.span == (f_end + 2 > 35 ? f_end + 2 : 35) * MS, "span %llu", (unsigned long long)g.span);
    tinfo_t *b = parla__trace_find(&g, 2), *e = parla__trace_find(&g, 5), *f = parla__trace_find(&g, 6);
    CHECK(b && e && f && strcmp(b->name, "B") == 0 && e->nseg == 2, "tasks named, E in two segments");
    CHECK(g.edges[0].pred == 1 && g.edges[0].succ == 2 && g.edges[0].kind == PARLA__EK_EXPLICIT,
          "A -> B kept as explicit");
    CHECK(parla__trace_edge_target(g.segs, f, e, PARLA__EK_AWAIT) == e->seg0 + 1, "an await leads to the resumed run");
    CHECK(parla__trace_find(&g, 7) == NULL, "no task 7");
    CHECK_OK(parla__trace_critical_path(&g));
    CHECK(fabs(g.crit_time * 1e3 - want_ms) < 1e-6, "critical path %.6f ms, want %.3f", g.crit_time * 1e3, want_ms);
    char got[64] = "";
    for (int64_t k = g.crit_last; k >= 0; k = g.segs[k].prev)
        if (strlen(got) == 0 || got[strlen(got) - 1] != g.tasks[g.segs[k].task].name[0])
            strcat(got, g.tasks[g.segs[k].task].name);
    CHECK(strcmp(got, want_path) == 0, "critical path %s, want %s", got, want_path);
    for (size_t i = 0; i < g.n_tasks; i++)
        CHECK(g.tasks[i].critical == (strchr(want_path, g.tasks[i].name[0]) != NULL), "task %s critical: %d",
              g.tasks[i].name, g.tasks[i].critical);
    parla__trace_graph_free(&g);
    parla__trace_destroy(tr);
}

static void read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
}

static void check_export(void)
{
    parla__trace_t *tr = hand_trace(20);
    parla__trace_device_t devs[2] = {{"cpu(0)", 0, 4096, 0}, {"gpu(0)", 4096, 0, 1}};
    parla__trace_meta_t meta = {2, 2, devs};
    char json[] = "/tmp/parla-test-hand-XXXXXX", dot[] = "/tmp/parla-test-hand-dot-XXXXXX";
    close(mkstemp(json));
    close(mkstemp(dot));
    char summary[1024];
    CHECK_OK(parla__trace_export(tr, &meta, json, dot, summary, sizeof summary));
    /* busy: cpu(0) the union of 0-20 and 30-35 over 35 ms and 2 workers; gpu(0) 10-30. */
    const char *want =
        "Parla run: 6 tasks in 35.000 ms (first task start to last task end), 1 copies\n"
        "device        tasks    busy%       bytes in      bytes out  evictions\n"
        "cpu(0)            5    37.1%              0           4096          0\n"
        "gpu(0)            1    57.1%           4096              0          1\n"
        "critical path: 3 tasks, 35.000 ms of task time (100.0% of the run): D <- B <- A\n";
    CHECK(strcmp(summary, want) == 0, "summary:\n%s\nwant:\n%s", summary, want);
    static char buf[1 << 16];
    read_file(json, buf, sizeof buf);
    /* B carries scores (its score is 0: the flag, not the value, says so); no other task does. */
    CHECK(strstr(buf, "\"task\":2,\"device\":\"gpu(0)\",\"worker\":-1,\"state\":\"done\",\"critical\":true,"
                      "\"locality\":0.5000,\"transfer\":0.2500,\"load\":0.2500,\"score\":0.0000}}") != NULL,
          "B's scores: %s", buf);
    CHECK(count(json, "\"locality\"") == 1, "only B has scores");
    CHECK(count(json, "\"name\":\"copy cpu(0) -> gpu(0)\",\"cat\":\"copy\",\"args\":{\"bytes\":4096,\"task\":2}") == 1,
          "the copy");
    CHECK(count(json, "\"name\":\"evict\"") == 1, "the eviction");
    CHECK(count(json, "\"ph\":\"X\"") == 2 * 7 + 1, "a slice per segment on workers and devices, and the copy");
    read_file(dot, buf, sizeof buf);
    CHECK(strstr(buf, "  t2 -> t4 [style=dotted, color=gray40, color=red, penwidth=2.5];\n") != NULL,
          "B -> D on the critical path: %s", buf);
    CHECK(strstr(buf, "  t3 -> t4 [style=solid];\n") != NULL, "C -> D not on it");
    CHECK(strstr(buf, "  t6 -> t5 [style=bold, color=darkgreen];\n") != NULL, "the await edge");
    /* The summary is cut at its capacity, NUL-terminated. */
    char small[16];
    CHECK_OK(parla__trace_export(tr, &meta, NULL, NULL, small, sizeof small));
    CHECK(strcmp(small, "Parla run: 6 ta") == 0, "truncated summary '%s'", small);
    CHECK_OK(parla__trace_export(tr, &meta, NULL, NULL, NULL, 0));
    CHECK_RC(parla__trace_export(tr, &meta, "/nonexistent-dir/x.json", NULL, NULL, 0), PARLA_ESYS);
    CHECK(strstr(parla_last_error_message(), "/nonexistent-dir/x.json") != NULL, "%s", parla_last_error_message());
    remove(json);
    remove(dot);
    parla__trace_destroy(tr);
}

/* A body that spins for *arg seconds and adds what it measured to the total
 * (doubles: seconds). */
typedef struct spin {
    double seconds, *measured;
    parla_runtime_t *rt;
    struct spin *child; /* spawned, then waited for, after spinning */
} spin_t;

static int spin_body(parla_task_t *task, void *arg)
{
    (void)task;
    spin_t *sp = arg;
    double t0 = now_s();
    spin_for(sp->seconds);
    *sp->measured += now_s() - t0;
    if (sp->child) {
        parla_task_t *kid;
        CHECK_OK(parla_task_create(sp->rt, spin_body, sp->child, &kid));
        CHECK_OK(parla_task_submit(kid));
        CHECK_OK(parla_task_wait(kid));
        parla_task_release(kid);
    }
    return 0;
}

static void spawn_spin(parla_runtime_t *r, spin_t *sp, int gpu, double vcus)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(r, spin_body, sp, &t));
    if (gpu) {
        int slot = PARLA_ANY_GPU;
        CHECK_OK(parla_task_add_placement(t, &slot, 1, vcus, 0));
    } else if (vcus > 0) {
        CHECK_OK(parla_task_set_resources(t, vcus, 0));
    }
    CHECK_OK(parla_task_submit(t));
    parla_task_release(t);
}

static void check_busy(void)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    cfg.n_virtual_gpus = 1;
    parla_runtime_t *r;
    CHECK_OK(parla_runtime_create(&cfg, &r));
    double busy = -1;
    CHECK_OK(parla_device_busy(r, 1, &busy));
    CHECK(busy == 0.0, "busy before enabling: %g", busy);
    CHECK_RC(parla_device_busy(r, 2, &busy), PARLA_ENODEV);
    CHECK_RC(parla_device_busy(NULL, 0, &busy), PARLA_EINVAL);
    CHECK_RC(parla_runtime_busy_enable(NULL), PARLA_EINVAL);
    CHECK_OK(parla_runtime_busy_enable(r));
    CHECK_OK(parla_runtime_busy_enable(r)); /* idempotent */
    /* One total per task: the two half-GPU tasks may run at once. */
    double gpu_full = 0, gpu_half = 0, gpu_half2 = 0, cpu_plain = 0, cpu_half = 0;
    spin_t sp[] = {{0.05, &gpu_full, r, NULL}, {0.02, &gpu_half, r, NULL}, {0.02, &gpu_half2, r, NULL},
                   {0.03, &cpu_plain, r, NULL}, {0.02, &cpu_half, r, NULL}};
    double t0 = now_s();
    spawn_spin(r, &sp[0], 1, 1.0);
    spawn_spin(r, &sp[1], 1, 0.5);
    spawn_spin(r, &sp[2], 1, 0.5);
    spawn_spin(r, &sp[3], 0, 0.0);
    spawn_spin(r, &sp[4], 0, 0.5);
    CHECK_OK(parla_runtime_wait_all(r));
    double wall = now_s() - t0;
    double cpu, gpu;
    CHECK_OK(parla_device_busy(r, 0, &cpu));
    CHECK_OK(parla_device_busy(r, 1, &gpu));
    double gpu_min = gpu_full + 0.5 * (gpu_half + gpu_half2), cpu_min = cpu_plain / 2 + 0.5 * cpu_half;
    CHECK(gpu >= gpu_min && gpu <= wall, "gpu busy %.6f s, bodies %.6f s, wall %.6f s", gpu, gpu_min, wall);
    CHECK(cpu >= cpu_min && cpu <= wall, "cpu busy %.6f s, bodies %.6f s, wall %.6f s", cpu, cpu_min, wall);
    CHECK_OK(parla_runtime_destroy(r));

    /* One worker: a body that spins, then waits for a child, which the worker
     * runs inside it. Counted once, the CPU is busy the whole run at most. */
    cfg.n_workers = 1;
    cfg.n_virtual_gpus = 0;
    CHECK_OK(parla_runtime_create(&cfg, &r));
    CHECK_OK(parla_runtime_busy_enable(r));
    double measured = 0;
    spin_t child = {0.04, &measured, r, NULL}, parent = {0.01, &measured, r, &child};
    t0 = now_s();
    spawn_spin(r, &parent, 0, 0.0);
    CHECK_OK(parla_runtime_wait_all(r));
    wall = now_s() - t0;
    CHECK_OK(parla_device_busy(r, 0, &cpu));
    CHECK(cpu >= measured && cpu <= wall, "nested: cpu busy %.6f s, bodies %.6f s, wall %.6f s", cpu, measured, wall);
    CHECK_OK(parla_runtime_destroy(r));
}

int main(void)
{
    check_watchdog(50);
    check_busy();
    /* A -> B -> D (35 ms) beats F -> E (18 + 1 ms); with F until 40 ms, F -> E
     * through the await (38 + 1 ms) wins. */
    check_analysis(20, "DBA", 35.0);
    check_analysis(40, "EF", 39.0);
    check_export();
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
