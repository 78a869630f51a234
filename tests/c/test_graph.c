/*
 * test_graph.c: recorded graphs and their replay (parla_graph_*).
 *
 *  - A stencil-like graph on blocks of one array (each block incremented, then a sum reading every block
 *    into an accumulator), replayed many times without waiting in between: replays overlap only as the
 *    data allows, and every value equals the sequential program's.
 *  - Dependencies among nodes (one on a node recorded later) order each replay's tasks.
 *  - parla_graph_record turns ordinary tasks (accesses, placement, a dependency) into a graph.
 *  - Failures: a body failing in one replay fails the graph (wait and later replays report the graph and
 *    the task); a failed outside dependency cancels every replay's task; a frozen graph refuses changes;
 *    bad arguments are refused with their errors.
 *  - Releasing the graph while replays run, and replaying from inside a task body.
 *  - The edges of a replay with what is outside it (the graph's hazards are resolved once; only its
 *    boundary meets the access histories): a task spawned between two replays that writes bytes the graph
 *    only reads, two replays back to back, a replay issued while a slow spawned task still writes the
 *    array it reads; values equal the sequential program's. A graph where a task depends on one recorded
 *    after it (its hazards decided per access, as spawns) runs in the dependency's order.
 *  - Between replays of a Jacobi-like graph (two bands, a sweep of each, halo copies between them), issued
 *    back to back: each replay reads what the one before wrote (values equal the sequential program's),
 *    and a sweep that fails in one replay cancels what reads it, in that replay and in the next one,
 *    already issued: its own band's sweep there too, although a path of the graph's own edges (through
 *    the halo task that only writes that band, ordered after the failed sweep but not cancelled by it)
 *    already orders the two sweeps. That is why a replay keeps the edge between the two sweeps.
 */
#include "check.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum { BLOCKS = 8, ELEMS = 64 };

static double values[BLOCKS * ELEMS];
static double acc[1];
static parla_data_t *base, *acc_data;

static int inc_body(parla_task_t *task, void *arg)
{
    (void)task;
    int p = (int)(intptr_t)arg;
    double *v = parla_data_device_ptr(base, 0);
    for (int i = p * ELEMS; i < (p + 1) * ELEMS; i++)
        v[i] += 1.0 + p;
    return 0;
}

static int sum_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    double *v = parla_data_device_ptr(base, 0), *a = parla_data_device_ptr(acc_data, 0);
    double s = 0;
    for (int i = 0; i < BLOCKS * ELEMS; i++)
        s += v[i];
    a[0] = a[0] * 0.5 + s;
    return 0;
}

static void test_stencil(parla_runtime_t *rt)
{
    check_set_phase("stencil");
    memset(values, 0, sizeof values);
    acc[0] = 0;
    CHECK_OK(parla_data_create(rt, sizeof values, values, &base));
    CHECK_OK(parla_data_create(rt, sizeof acc, acc, &acc_data));
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "stencil", &g));
    parla_data_t *views[BLOCKS];
    for (int p = 0; p < BLOCKS; p++) {
        uint64_t r[2] = {(uint64_t)p * ELEMS * sizeof(double), (uint64_t)(p + 1) * ELEMS * sizeof(double)};
        CHECK_OK(parla_data_view(base, r, 1, &views[p]));
        size_t node;
        char name[32];
        snprintf(name, sizeof name, "inc[%d]", p);
        CHECK_OK(parla_graph_add_task(g, name, inc_body, (void *)(intptr_t)p, &node));
        CHECK(node == (size_t)p, "node %zu, expected %d", node, p);
        CHECK_OK(parla_graph_add_access(g, node, views[p], PARLA_READWRITE));
    }
    size_t sum;
    CHECK_OK(parla_graph_add_task(g, NULL, sum_body, NULL, &sum));
    CHECK_OK(parla_graph_add_access(g, sum, base, PARLA_READ));
    CHECK_OK(parla_graph_add_access(g, sum, acc_data, PARLA_READWRITE));
    CHECK(parla_graph_num_tasks(g) == BLOCKS + 1, "%zu tasks", parla_graph_num_tasks(g));
    CHECK(strcmp(parla_graph_name(g), "stencil") == 0, "name %s", parla_graph_name(g));

    int replays = (int)scaled(200, 20);
    int marker = 7;
    for (int k = 0; k < replays; k++) {
        parla_task_t *join = NULL;
        CHECK_OK(parla_graph_replay(g, k == 0 ? &marker : NULL, k == 0 ? &join : NULL));
        if (k == 0) {
            CHECK(join != NULL && parla_task_user(join) == &marker, "join user");
            CHECK(strcmp(parla_task_name(join), "stencil#replay1") == 0, "join name %s", parla_task_name(join));
            parla_task_release(join);
        }
    }
    CHECK(parla_graph_num_replays(g) == (uint64_t)replays, "%llu replays", (unsigned long long)parla_graph_num_replays(g));
    /* Frozen: no more changes. */
    size_t extra;
    CHECK_RC(parla_graph_add_task(g, "late", inc_body, NULL, &extra), PARLA_ESTATE);
    CHECK(strstr(parla_last_error_message(), "stencil") != NULL, "message %s", parla_last_error_message());
    CHECK_RC(parla_graph_add_access(g, 0, base, PARLA_READ), PARLA_ESTATE);
    CHECK_OK(parla_graph_wait(g));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_data_fetch(base, 0, 0));
    CHECK_OK(parla_data_fetch(acc_data, 0, 0));
    /* The sequential program. */
    double model[BLOCKS * ELEMS] = {0}, macc = 0;
    for (int k = 0; k < replays; k++) {
        double s = 0;
        for (int i = 0; i < BLOCKS * ELEMS; i++) {
            model[i] += 1.0 + i / ELEMS;
            s += model[i];
        }
        macc = macc * 0.5 + s;
    }
    for (int i = 0; i < BLOCKS * ELEMS; i++)
        CHECK(values[i] == model[i], "values[%d] = %g, expected %g", i, values[i], model[i]);
    CHECK(acc[0] == macc, "acc = %.17g, expected %.17g", acc[0], macc);
    for (int p = 0; p < BLOCKS; p++)
        parla_data_release(views[p]);
    parla_graph_release(g);
    parla_data_release(base);
    parla_data_release(acc_data);
}

/* ------------------------------------------------------------------ order -- */

static _Atomic int seq;
static int order_seen[3][64];

static int order_body(parla_task_t *task, void *arg)
{
    (void)task;
    int *slot = arg;
    *slot = atomic_fetch_add(&seq, 1);
    return 0;
}

/* Three nodes c -> b -> a, where b was recorded before a (its dependency). One replay at a time is waited
 * for, so each replay's three sequence numbers are consecutive. */
static void test_order(parla_runtime_t *rt)
{
    check_set_phase("order");
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "order", &g));
    int slots[3];
    size_t c, b, a;
    CHECK_OK(parla_graph_add_task(g, "c", order_body, &slots[2], &c));
    CHECK_OK(parla_graph_add_task(g, "b", order_body, &slots[1], &b));
    CHECK_OK(parla_graph_add_task(g, "a", order_body, &slots[0], &a));
    CHECK_OK(parla_graph_add_dependency(g, b, c));
    CHECK_OK(parla_graph_add_dependency(g, a, b));
    CHECK_RC(parla_graph_add_dependency(g, a, a), PARLA_EINVAL);
    CHECK_RC(parla_graph_add_dependency(g, a, 99), PARLA_EINVAL);
    CHECK_RC(parla_graph_add_dependency(g, 99, a), PARLA_EINVAL);
    CHECK_RC(parla_graph_set_resources(g, a, 2.0, 0), PARLA_EINVAL);
    int bad_slot = 42;
    CHECK_RC(parla_graph_add_placement(g, a, &bad_slot, 1, 0.0, 0), PARLA_ENODEV);
    CHECK_OK(parla_graph_set_priority(g, a, 1));
    for (int k = 0; k < 64; k++) {
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
        CHECK_OK(parla_graph_wait(g));
        for (int i = 0; i < 3; i++)
            order_seen[i][k] = slots[i];
    }
    for (int k = 0; k < 64; k++)
        CHECK(order_seen[2][k] < order_seen[1][k] && order_seen[1][k] < order_seen[0][k] &&
                  order_seen[0][k] - order_seen[2][k] == 2,
              "replay %d ran c=%d b=%d a=%d", k, order_seen[2][k], order_seen[1][k], order_seen[0][k]);
    parla_graph_release(g);
}

/* ----------------------------------------------------------------- record -- */

static double rec_values[2][16];
static parla_data_t *rec_data[2];

static int copy_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    double *src = parla_data_device_ptr(rec_data[0], 0), *dst = parla_data_device_ptr(rec_data[1], 0);
    for (int i = 0; i < 16; i++)
        dst[i] += src[i];
    return 0;
}

static int scale_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    double *v = parla_data_device_ptr(rec_data[0], 0);
    for (int i = 0; i < 16; i++)
        v[i] = v[i] * 2.0 + 1.0;
    return 0;
}

static int noop_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return 0;
}

static void test_record(parla_runtime_t *rt)
{
    check_set_phase("record");
    memset(rec_values, 0, sizeof rec_values);
    for (int i = 0; i < 2; i++)
        CHECK_OK(parla_data_create(rt, sizeof rec_values[i], rec_values[i], &rec_data[i]));
    parla_task_t *outside, *scale, *copy;
    CHECK_OK(parla_task_create(rt, noop_body, NULL, &outside));
    CHECK_OK(parla_task_submit(outside));
    CHECK_OK(parla_task_create(rt, scale_body, NULL, &scale));
    CHECK_OK(parla_task_set_name(scale, "scale"));
    CHECK_OK(parla_task_add_access(scale, rec_data[0], PARLA_READWRITE));
    int any_cpu = PARLA_ANY_CPU;
    CHECK_OK(parla_task_add_placement(scale, &any_cpu, 1, 0.5, 0));
    CHECK_OK(parla_task_create(rt, copy_body, NULL, &copy));
    CHECK_OK(parla_task_set_name(copy, "copy"));
    CHECK_OK(parla_task_add_access(copy, rec_data[0], PARLA_READ));
    CHECK_OK(parla_task_add_access(copy, rec_data[1], PARLA_READWRITE));
    CHECK_OK(parla_task_add_dependency(copy, scale));
    CHECK_OK(parla_task_add_dependency(copy, outside));

    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, NULL, &g));
    CHECK(strcmp(parla_graph_name(g), "graph") == 0, "default name %s", parla_graph_name(g));
    size_t n0, n1;
    CHECK_OK(parla_graph_record(g, scale, NULL, NULL, NULL, 0, &n0));
    parla_task_t *deps[2] = {scale, outside};
    CHECK_OK(parla_graph_record(g, copy, NULL, NULL, deps, 2, &n1));
    CHECK_RC(parla_graph_record(g, copy, NULL, NULL, NULL, 0, NULL), PARLA_EINVAL); /* recorded already */
    CHECK(n0 == 0 && n1 == 1, "nodes %zu %zu", n0, n1);
    CHECK_OK(parla_task_submit(scale));
    CHECK_OK(parla_task_submit(copy));
    parla_task_release(scale);
    parla_task_release(copy);
    parla_task_release(outside);
    int replays = 10;
    for (int k = 0; k < replays; k++)
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
    CHECK_OK(parla_graph_wait(g));
    CHECK_OK(parla_runtime_wait_all(rt));
    double v = 0, d = 0;
    for (int k = 0; k < replays + 1; k++) {
        v = v * 2.0 + 1.0;
        d += v;
    }
    CHECK_OK(parla_data_fetch(rec_data[1], 0, 0));
    for (int i = 0; i < 16; i++)
        CHECK(rec_values[0][i] == v && rec_values[1][i] == d, "values %g %g, expected %g %g", rec_values[0][i],
              rec_values[1][i], v, d);
    parla_graph_release(g);
    parla_data_release(rec_data[0]);
    parla_data_release(rec_data[1]);
}

/* --------------------------------------------------------------- failures -- */

static _Atomic int fail_calls;
static int fail_at = 3;

static int failing_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return atomic_fetch_add(&fail_calls, 1) + 1 == fail_at ? 17 : 0;
}

static void test_failures(parla_runtime_t *rt)
{
    check_set_phase("failures");
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "flaky", &g));
    size_t f, after;
    CHECK_OK(parla_graph_add_task(g, "step", failing_body, NULL, &f));
    CHECK_OK(parla_graph_add_task(g, "after", noop_body, NULL, &after));
    CHECK_OK(parla_graph_add_dependency(g, after, f));
    for (int k = 0; k < 2; k++) {
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
        CHECK_OK(parla_graph_wait(g));
    }
    parla_task_t *join;
    CHECK_OK(parla_graph_replay(g, NULL, &join)); /* the third call of the body fails */
    CHECK_RC(parla_graph_wait(g), PARLA_EFAILED);
    const char *msg = parla_last_error_message();
    CHECK(strstr(msg, "flaky") && strstr(msg, "step") && strstr(msg, "flaky#replay3"), "message: %s", msg);
    CHECK(parla_task_state(join) == PARLA_TASK_FAILED, "join %s", parla_task_state_name(parla_task_state(join)));
    parla_task_release(join);
    CHECK_RC(parla_graph_replay(g, NULL, NULL), PARLA_EFAILED);
    CHECK(strstr(parla_last_error_message(), "step") != NULL, "message: %s", parla_last_error_message());
    CHECK(parla_graph_num_replays(g) == 3, "%llu replays", (unsigned long long)parla_graph_num_replays(g));
    parla_graph_release(g);

    /* A failed outside dependency cancels the task in every replay. */
    parla_task_t *bad;
    fail_at = 1;
    atomic_store(&fail_calls, 0);
    CHECK_OK(parla_task_create(rt, failing_body, NULL, &bad));
    CHECK_OK(parla_task_set_name(bad, "bad"));
    CHECK_OK(parla_task_submit(bad));
    CHECK_RC(parla_task_wait(bad), PARLA_EFAILED);
    CHECK_OK(parla_graph_create(rt, "downstream", &g));
    size_t n;
    CHECK_OK(parla_graph_add_task(g, "user", noop_body, NULL, &n));
    CHECK_OK(parla_graph_add_external(g, n, bad));
    CHECK_RC(parla_graph_add_external(g, n, NULL), PARLA_EINVAL);
    parla_task_release(bad);
    CHECK_OK(parla_graph_replay(g, NULL, NULL));
    CHECK_RC(parla_graph_wait(g), PARLA_EFAILED);
    msg = parla_last_error_message();
    CHECK(strstr(msg, "downstream") && strstr(msg, "bad"), "message: %s", msg);
    parla_graph_release(g);
    CHECK_OK(parla_runtime_wait_all(rt));
}

/* -------------------------------------------------------------- lifetimes -- */

static _Atomic int counted;

static int count_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&counted, 1);
    return 0;
}

static parla_graph_t *inner_graph;

/* A task body that replays a graph and waits for it (the wait runs the replay's tasks meanwhile). */
static int replaying_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    for (int k = 0; k < 5; k++) {
        int rc = parla_graph_replay(inner_graph, NULL, NULL);
        if (rc)
            return rc;
    }
    return parla_graph_wait(inner_graph);
}

static void test_lifetimes(parla_runtime_t *rt)
{
    check_set_phase("lifetimes");
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "short-lived", &g));
    for (int i = 0; i < 50; i++) {
        size_t n;
        CHECK_OK(parla_graph_add_task(g, NULL, count_body, NULL, &n));
        if (i)
            CHECK_OK(parla_graph_add_dependency(g, n, n - 1));
    }
    atomic_store(&counted, 0);
    int replays = (int)scaled(100, 10);
    for (int k = 0; k < replays; k++)
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
    parla_graph_release(g); /* the replays in flight keep it */
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&counted) == 50 * replays, "%d bodies ran, expected %d", atomic_load(&counted), 50 * replays);

    check_set_phase("replay in a task");
    CHECK_OK(parla_graph_create(rt, "inner", &inner_graph));
    for (int i = 0; i < 20; i++) {
        size_t n;
        CHECK_OK(parla_graph_add_task(inner_graph, NULL, count_body, NULL, &n));
    }
    atomic_store(&counted, 0);
    parla_task_t *outer;
    CHECK_OK(parla_task_create(rt, replaying_body, NULL, &outer));
    CHECK_OK(parla_task_submit(outer));
    CHECK_OK(parla_task_wait(outer));
    CHECK(atomic_load(&counted) == 100, "%d bodies ran, expected 100", atomic_load(&counted));
    parla_task_release(outer);
    parla_graph_release(inner_graph);
    CHECK_OK(parla_runtime_wait_all(rt));

    /* Never replayed: waiting returns at once; NULL handles are refused. */
    CHECK_OK(parla_graph_create(rt, "idle", &g));
    CHECK_OK(parla_graph_wait(g));
    parla_graph_release(g);
    CHECK_RC(parla_graph_replay(NULL, NULL, NULL), PARLA_EINVAL);
    CHECK_RC(parla_graph_add_task(NULL, "x", noop_body, NULL, NULL), PARLA_EINVAL);
    CHECK_RC(parla_graph_create(NULL, "x", &g), PARLA_EINVAL);
    parla_graph_release(NULL);
}

/* ------------------------------------------------------------------ slots -- */

static parla_data_t *slot_data;
static _Atomic int slot_ok;

/* A two-GPU task whose access is for its second device: the data is valid there when the body runs. */
static int slot_body(parla_task_t *task, void *arg)
{
    (void)arg;
    int dev[PARLA_MAX_TASK_DEVICES];
    int n = parla_task_devices(task, dev, PARLA_MAX_TASK_DEVICES);
    if (n != 2 || parla_data_valid_bytes(slot_data, dev[1]) != parla_data_nbytes(slot_data))
        return 99;
    atomic_fetch_add(&slot_ok, 1);
    return 0;
}

static void test_slots(void)
{
    check_set_phase("slots");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    cfg.n_virtual_gpus = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK_OK(parla_data_create(rt, 4096, NULL, &slot_data));
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "slots", &g));
    size_t n;
    CHECK_OK(parla_graph_add_task(g, "pair", slot_body, NULL, &n));
    int gpus[2] = {1, 2};
    CHECK_OK(parla_graph_add_placement(g, n, gpus, 2, 0.0, 0));
    CHECK_RC(parla_graph_add_access_at(g, n, slot_data, PARLA_READ, PARLA_MAX_TASK_DEVICES), PARLA_EINVAL);
    CHECK_OK(parla_graph_add_access_at(g, n, slot_data, PARLA_READ, 1));
    atomic_store(&slot_ok, 0);
    for (int k = 0; k < 4; k++)
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
    CHECK_OK(parla_graph_wait(g));
    CHECK(atomic_load(&slot_ok) == 4, "%d of 4 bodies saw the data on their second device", atomic_load(&slot_ok));
    parla_graph_release(g);
    parla_data_release(slot_data);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt));
}

/* --------------------------------------------------------------- boundary -- */

enum { BN = 8 };
static double bx[BN], by[BN], bz[1];
static parla_data_t *bx_data, *by_data, *bz_data;

/* The graph's first task: y = y / 2 + x (all of x: half of it the graph writes after, half it only reads). */
static int bnd_mix_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    usleep(300); /* gives a wrongly unordered writer of x the time to get in */
    const double *x = parla_data_device_ptr(bx_data, 0);
    double *y = parla_data_device_ptr(by_data, 0);
    for (int i = 0; i < BN; i++)
        y[i] = y[i] * 0.5 + x[i];
    return 0;
}

/* The graph's second task: x[0:BN/2] += 1. */
static int bnd_bump_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    double *x = parla_data_device_ptr(bx_data, 0);
    for (int i = 0; i < BN / 2; i++)
        x[i] += 1.0;
    return 0;
}

/* Spawned: x[lo:hi] += add after a pause of us microseconds. arg: {lo, hi, add * 4, us} as ints. */
static int bnd_write_body(parla_task_t *task, void *arg)
{
    (void)task;
    const int *a = arg;
    if (a[3])
        usleep((useconds_t)a[3]);
    double *x = parla_data_device_ptr(bx_data, 0);
    for (int i = a[0]; i < a[1]; i++)
        x[i] += a[2] / 4.0;
    return 0;
}

/* Spawns a task adding to x[lo:hi] (v: a view of it), see bnd_write_body. */
static void bnd_spawn_write(parla_runtime_t *rt, parla_data_t *v, const int *arg)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, bnd_write_body, (void *)arg, &t));
    CHECK_OK(parla_task_add_access(t, v, PARLA_READWRITE));
    CHECK_OK(parla_task_submit(t));
    parla_task_release(t);
}

/* z = z * 10 + the node's number (1 or 2). */
static int bnd_digit_body(parla_task_t *task, void *arg)
{
    (void)task;
    double *z = parla_data_device_ptr(bz_data, 0);
    z[0] = z[0] * 10 + (double)(intptr_t)arg;
    return 0;
}

static void test_boundary(parla_runtime_t *rt)
{
    check_set_phase("boundary");
    for (int i = 0; i < BN; i++) {
        bx[i] = i;
        by[i] = 0;
    }
    bz[0] = 0;
    CHECK_OK(parla_data_create(rt, sizeof bx, bx, &bx_data));
    CHECK_OK(parla_data_create(rt, sizeof by, by, &by_data));
    CHECK_OK(parla_data_create(rt, sizeof bz, bz, &bz_data));
    parla_data_t *left, *right;
    uint64_t rl[2] = {0, BN / 2 * sizeof(double)}, rr[2] = {BN / 2 * sizeof(double), BN * sizeof(double)};
    CHECK_OK(parla_data_view(bx_data, rl, 1, &left));
    CHECK_OK(parla_data_view(bx_data, rr, 1, &right));
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "boundary", &g));
    size_t mix, bump;
    CHECK_OK(parla_graph_add_task(g, "mix", bnd_mix_body, NULL, &mix));
    CHECK_OK(parla_graph_add_access(g, mix, bx_data, PARLA_READ));
    CHECK_OK(parla_graph_add_access(g, mix, by_data, PARLA_READWRITE));
    CHECK_OK(parla_graph_add_task(g, "bump", bnd_bump_body, NULL, &bump));
    CHECK_OK(parla_graph_add_access(g, bump, left, PARLA_READWRITE));

    /* A fast writer of what the graph only reads (its reader pauses before reading), a slow one of all. */
    static const int write_right[4] = {BN / 2, BN, 40, 0}, write_all[4] = {0, BN, 1, 1000};
    double mx[BN], my[BN];
    for (int i = 0; i < BN; i++) {
        mx[i] = i;
        my[i] = 0;
    }
    int rounds = (int)scaled(12, 6);
    for (int k = 0; k < rounds; k++) {
        int replays = k % 3 == 1 ? 2 : 1; /* back to back */
        if (k % 3 == 0) {
            /* The replay is issued while this slow task still writes what it reads. */
            bnd_spawn_write(rt, bx_data, write_all);
            for (int i = 0; i < BN; i++)
                mx[i] += 0.25;
        }
        for (int r = 0; r < replays; r++) {
            CHECK_OK(parla_graph_replay(g, NULL, NULL));
            for (int i = 0; i < BN; i++)
                my[i] = my[i] * 0.5 + mx[i];
            for (int i = 0; i < BN / 2; i++)
                mx[i] += 1.0;
        }
        /* Between two replays: writes bytes the graph only reads (after the replay's read of them). */
        bnd_spawn_write(rt, right, write_right);
        for (int i = BN / 2; i < BN; i++)
            mx[i] += 10.0;
    }
    CHECK_OK(parla_graph_wait(g));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_data_fetch(bx_data, 0, 0));
    CHECK_OK(parla_data_fetch(by_data, 0, 0));
    for (int i = 0; i < BN; i++) {
        CHECK(bx[i] == mx[i], "x[%d] = %.17g, expected %.17g", i, bx[i], mx[i]);
        CHECK(by[i] == my[i], "y[%d] = %.17g, expected %.17g", i, by[i], my[i]);
    }
    parla_graph_release(g);

    /* Node 0 depends on node 1, recorded after it; both write z: each replay runs 1, then 0. */
    CHECK_OK(parla_graph_create(rt, "forward", &g));
    size_t second, first;
    CHECK_OK(parla_graph_add_task(g, "second", bnd_digit_body, (void *)(intptr_t)1, &second));
    CHECK_OK(parla_graph_add_access(g, second, bz_data, PARLA_READWRITE));
    CHECK_OK(parla_graph_add_task(g, "first", bnd_digit_body, (void *)(intptr_t)2, &first));
    CHECK_OK(parla_graph_add_access(g, first, bz_data, PARLA_READWRITE));
    CHECK_OK(parla_graph_add_dependency(g, second, first));
    CHECK_OK(parla_graph_replay(g, NULL, NULL));
    CHECK_OK(parla_graph_replay(g, NULL, NULL));
    CHECK_OK(parla_graph_wait(g));
    CHECK_OK(parla_data_fetch(bz_data, 0, 0));
    CHECK(bz[0] == 2121.0, "z = %g, expected 2121 (first, second, first, second)", bz[0]);
    parla_graph_release(g);
    parla_data_release(left);
    parla_data_release(right);
    parla_data_release(bx_data);
    parla_data_release(by_data);
    parla_data_release(bz_data);
}

/* ---------------------------------------------------------- between replays -- */

/* Two bands of 3 doubles (top halo, own value, bottom halo): band 0's bottom halo is band 1's own value,
 * band 1's top halo band 0's. Nodes: 0 sweep of band 0, 1 sweep of band 1 (each its whole band), 2 halo of
 * band 0 (writes its bottom, reads band 1's own), 3 halo of band 1 (writes its top, reads band 0's own). */
static double jband[2][3];
static parla_data_t *jdata[2];
static _Atomic int jcalls[4];
static _Atomic bool jfail, jissued;

static void jsweep(double *b)
{
    b[1] = 0.5 * b[1] + 0.25 * (b[0] + b[2]) + 1.0;
}

static int jacobi_body(parla_task_t *task, void *arg)
{
    (void)task;
    int node = (int)(intptr_t)arg;
    int call = atomic_fetch_add(&jcalls[node], 1);
    double *b0 = parla_data_device_ptr(jdata[0], 0), *b1 = parla_data_device_ptr(jdata[1], 0);
    if (node == 0 && call == 0 && atomic_load(&jfail)) {
        /* Fails only once the next replay has been issued (its tasks depend on this one already). */
        while (!atomic_load(&jissued))
            sched_yield();
        return 5;
    }
    if (node == 0)
        jsweep(b0);
    else if (node == 1)
        jsweep(b1);
    else if (node == 2)
        b0[2] = b1[1];
    else
        b1[0] = b0[1];
    return 0;
}

/* The graph above, on fresh data (jband from init). */
static parla_graph_t *jacobi_graph(parla_runtime_t *rt, const double init[2][3], parla_data_t *views[4])
{
    for (int b = 0; b < 2; b++) {
        for (int i = 0; i < 3; i++)
            jband[b][i] = init[b][i];
        CHECK_OK(parla_data_create(rt, sizeof jband[b], jband[b], &jdata[b]));
    }
    uint64_t own[2] = {sizeof(double), 2 * sizeof(double)}, top[2] = {0, sizeof(double)},
             bottom[2] = {2 * sizeof(double), 3 * sizeof(double)};
    CHECK_OK(parla_data_view(jdata[0], bottom, 1, &views[0])); /* band 0's bottom halo */
    CHECK_OK(parla_data_view(jdata[0], own, 1, &views[1]));    /* band 0's own value */
    CHECK_OK(parla_data_view(jdata[1], top, 1, &views[2]));    /* band 1's top halo */
    CHECK_OK(parla_data_view(jdata[1], own, 1, &views[3]));    /* band 1's own value */
    parla_graph_t *g;
    CHECK_OK(parla_graph_create(rt, "bands", &g));
    static const char *names[4] = {"sweep0", "sweep1", "halo0", "halo1"};
    size_t n[4];
    for (int i = 0; i < 4; i++) {
        atomic_store(&jcalls[i], 0);
        CHECK_OK(parla_graph_add_task(g, names[i], jacobi_body, (void *)(intptr_t)i, &n[i]));
    }
    CHECK_OK(parla_graph_add_access(g, n[0], jdata[0], PARLA_READWRITE));
    CHECK_OK(parla_graph_add_access(g, n[1], jdata[1], PARLA_READWRITE));
    CHECK_OK(parla_graph_add_access(g, n[2], views[0], PARLA_WRITE));
    CHECK_OK(parla_graph_add_access(g, n[2], views[3], PARLA_READ));
    CHECK_OK(parla_graph_add_access(g, n[3], views[2], PARLA_WRITE));
    CHECK_OK(parla_graph_add_access(g, n[3], views[1], PARLA_READ));
    return g;
}

static void jacobi_done(parla_graph_t *g, parla_data_t *views[4])
{
    parla_graph_release(g);
    for (int i = 0; i < 4; i++)
        parla_data_release(views[i]);
    parla_data_release(jdata[0]);
    parla_data_release(jdata[1]);
}

static void test_between_replays(parla_runtime_t *rt)
{
    check_set_phase("between replays");
    static const double init[2][3] = {{1, 2, 3}, {4, 5, 6}};
    parla_data_t *views[4];

    /* Replays back to back: each reads what the previous one wrote. */
    parla_graph_t *g = jacobi_graph(rt, init, views);
    double want[2][3];
    memcpy(want, init, sizeof want);
    int replays = (int)scaled(40, 10);
    for (int k = 0; k < replays; k++) {
        CHECK_OK(parla_graph_replay(g, NULL, NULL));
        jsweep(want[0]);
        jsweep(want[1]);
        want[0][2] = want[1][1];
        want[1][0] = want[0][1];
    }
    CHECK_OK(parla_graph_wait(g));
    for (int b = 0; b < 2; b++) {
        CHECK_OK(parla_data_fetch(jdata[b], 0, 0));
        for (int i = 0; i < 3; i++)
            CHECK(jband[b][i] == want[b][i], "band %d [%d] = %.17g, expected %.17g", b, i, jband[b][i],
                  want[b][i]);
    }
    for (int i = 0; i < 4; i++)
        CHECK(atomic_load(&jcalls[i]) == replays, "node %d ran %d times, expected %d", i, atomic_load(&jcalls[i]),
              replays);
    jacobi_done(g, views);

    /* Sweep 0 fails in replay 1, once replay 2 is issued. Cancelled: what reads band 0's value (halo 1 in
     * replay 1, sweep 0 in replay 2) and what reads those, transitively (sweep 1 and halo 0 in replay 2,
     * halo 1 in replay 2). Run: sweep 1 and halo 0 of replay 1 (halo 0 only writes band 0: ordered after
     * the failed sweep, not cancelled by it). */
    g = jacobi_graph(rt, init, views);
    atomic_store(&jfail, true);
    atomic_store(&jissued, false);
    CHECK_OK(parla_graph_replay(g, NULL, NULL));
    CHECK_OK(parla_graph_replay(g, NULL, NULL));
    atomic_store(&jissued, true);
    CHECK_RC(parla_graph_wait(g), PARLA_EFAILED);
    const char *msg = parla_last_error_message();
    CHECK(strstr(msg, "bands") && strstr(msg, "sweep0"), "message: %s", msg);
    CHECK_OK(parla_runtime_wait_all(rt));
    static const int runs[4] = {1, 1, 1, 0};
    for (int i = 0; i < 4; i++)
        CHECK(atomic_load(&jcalls[i]) == runs[i], "node %d ran %d times, expected %d", i, atomic_load(&jcalls[i]),
              runs[i]);
    /* Replay 1's halo 0 copied band 1's value after its sweep; the sweeps of replay 2 never ran. */
    CHECK_OK(parla_data_fetch(jdata[0], 0, 0));
    CHECK_OK(parla_data_fetch(jdata[1], 0, 0));
    double b[3] = {init[1][0], init[1][1], init[1][2]};
    jsweep(b);
    double b1 = b[1];
    CHECK(jband[0][1] == init[0][1] && jband[0][2] == b1 && jband[1][1] == b1 && jband[1][0] == init[1][0],
          "bands {%g %g %g} {%g %g %g}", jband[0][0], jband[0][1], jband[0][2], jband[1][0], jband[1][1],
          jband[1][2]);
    atomic_store(&jfail, false);
    jacobi_done(g, views);
}

int main(void)
{
    check_watchdog(50);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 3;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    test_stencil(rt);
    test_order(rt);
    test_record(rt);
    test_failures(rt);
    test_lifetimes(rt);
    test_boundary(rt);
    test_between_replays(rt);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    test_slots();
    printf("test_graph: ok\n");
    return 0;
}
