/*
 * test_data_edge.c: data-layer situations that once went wrong, on virtual GPUs.
 *
 * 1. A full GPU: a task holds two of three slots for a while; two more tasks
 *    each need three objects. The copies a task made before finding no room
 *    must stay evictable, and the retry must not recurse: all finish.
 * 1b. Tasks that need the whole GPU and tasks that need half of it, all
 *    independent: a task takes its room all at once or not at all (tasks that
 *    each took part kept evicting each other's copies forever).
 * 2. parla_data_fetch onto a GPU leaves a copy nothing uses; a task that needs
 *    the room evicts it.
 * 3. A reader of data whose writer failed is cancelled, whether the writer
 *    had finished when the reader was spawned or not; a later write-only task
 *    replaces the failed version and its readers run, whether it was spawned
 *    before or after the failure, and also when the failed write is replaced
 *    piece by piece through views. Write-after-write and write-after-read
 *    edges order tasks without carrying failures.
 * 4. A task given accesses and released without being submitted does not keep
 *    the runtime alive (ASan's leak check covers it in the sanitizer build).
 * 5. A hold on a GPU copy keeps its memory readable after the copy is evicted,
 *    after the data is released and after the runtime is destroyed (ASan:
 *    no use after free, no leak); without a hold nothing changes.
 * 6. parla_data_wait gives up after its timeout while a writer runs, and
 *    returns 0 once it has finished. A task whose access is declared but that
 *    is not yet submitted comes after a wait or fetch outside tasks (which
 *    neither waits for it nor reports it stuck); once submitted it does not.
 * 7. One account per GPU for data copies and memory reservations.
 */
#include "check.h"

#include <stdatomic.h>

enum { GPU0 = 1 };

static int slow(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return 0;
}

static int nothing(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return 0;
}

static int store7(parla_task_t *t, void *arg)
{
    (void)t;
    int64_t *p = parla_data_device_ptr(arg, 0);
    if (p == NULL)
        return 1;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL); /* a fetch that does not wait sees the old value */
    p[0] = 7;
    return 0;
}

/* Runs until *arg is set (by the main thread). */
static int gated(parla_task_t *t, void *arg)
{
    (void)t;
    atomic_int *gate = arg;
    while (!atomic_load(gate))
        sleep_ms(1);
    return 0;
}

static int failing(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return 9;
}

static parla_task_t *spawn_on(parla_runtime_t *rt, parla_task_fn fn, int device, parla_data_t **d, int n, int mode)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, NULL, &t));
    if (device != 0)
        CHECK_OK(parla_task_add_placement(t, &device, 1, 0.0, 0));
    for (int i = 0; i < n; i++)
        CHECK_OK(parla_task_add_access(t, d[i], mode));
    CHECK_OK(parla_task_submit(t));
    return t;
}

static parla_runtime_t *runtime(uint64_t gpu_memory)
{
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 4;
    cfg.n_virtual_gpus = 1;
    cfg.virtual_gpu_memory = gpu_memory;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    return rt;
}

static void full_gpu(void)
{
    check_set_phase("full GPU");
    parla_runtime_t *rt = runtime(3 * 4096);
    parla_data_t *d[8];
    for (int i = 0; i < 8; i++)
        CHECK_OK(parla_data_create(rt, 4096, NULL, &d[i]));
    parla_task_t *t[3];
    t[0] = spawn_on(rt, slow, GPU0, d, 2, PARLA_READ);
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    t[1] = spawn_on(rt, nothing, GPU0, d + 2, 3, PARLA_READ);
    nanosleep(&ts, NULL);
    t[2] = spawn_on(rt, nothing, GPU0, d + 5, 3, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 20.0));
    for (int i = 0; i < 3; i++) {
        CHECK(parla_task_state(t[i]) == PARLA_TASK_DONE, "task %d: %s", i,
              parla_task_state_name(parla_task_state(t[i])));
        parla_task_release(t[i]);
    }
    parla_device_info_t info;
    CHECK_OK(parla_device_info(rt, GPU0, &info));
    CHECK(info.memory_resident <= info.memory_capacity && info.evictions >= 3, "resident %llu, %llu evictions",
          (unsigned long long)info.memory_resident, (unsigned long long)info.evictions);
    for (int i = 0; i < 8; i++)
        parla_data_release(d[i]);
    CHECK_OK(parla_runtime_destroy(rt));
}

static void whole_or_nothing(void)
{
    check_set_phase("room all at once");
    enum { N = 16 };
    parla_runtime_t *rt = runtime(2 * 4096);
    parla_data_t *p[N], *q[N];
    parla_task_t *t[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(parla_data_create(rt, 4096, NULL, &p[i]));
        CHECK_OK(parla_data_create(rt, 4096, NULL, &q[i]));
    }
    for (int i = 0; i < N; i++) {
        CHECK_OK(parla_task_create(rt, nothing, NULL, &t[i]));
        int slot = GPU0;
        CHECK_OK(parla_task_add_placement(t[i], &slot, 1, 0.0, 0));
        CHECK_OK(parla_task_add_access(t[i], p[i], PARLA_READWRITE));
        if (i % 2)
            CHECK_OK(parla_task_add_access(t[i], q[i], PARLA_READ));
        CHECK_OK(parla_task_submit(t[i]));
    }
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 20.0));
    for (int i = 0; i < N; i++) {
        CHECK(parla_task_state(t[i]) == PARLA_TASK_DONE, "task %d: %s", i,
              parla_task_state_name(parla_task_state(t[i])));
        parla_task_release(t[i]);
        parla_data_release(p[i]);
        parla_data_release(q[i]);
    }
    CHECK_OK(parla_runtime_destroy(rt));
}

static void fetched_copy_is_evictable(void)
{
    check_set_phase("fetched copy");
    parla_runtime_t *rt = runtime(2 * 4096);
    parla_data_t *d[3];
    for (int i = 0; i < 3; i++)
        CHECK_OK(parla_data_create(rt, 4096, NULL, &d[i]));
    CHECK_OK(parla_data_fetch(d[0], GPU0, 0));
    CHECK(parla_data_resident_bytes(d[0], GPU0) == 4096, "the fetch made no copy");
    parla_task_t *t = spawn_on(rt, nothing, GPU0, d + 1, 2, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 20.0));
    CHECK(parla_task_state(t) == PARLA_TASK_DONE, "%s", parla_task_state_name(parla_task_state(t)));
    CHECK(parla_data_resident_bytes(d[0], GPU0) == 0, "the unused fetched copy was not evicted");
    parla_task_release(t);
    for (int i = 0; i < 3; i++)
        parla_data_release(d[i]);
    CHECK_OK(parla_runtime_destroy(rt));
}

static void failed_writer(int wait_first)
{
    check_set_phase(wait_first ? "failed writer, finished" : "failed writer, running");
    parla_runtime_t *rt = runtime(1 << 20);
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, 64, NULL, &d));
    parla_task_t *w = spawn_on(rt, failing, GPU0, &d, 1, PARLA_WRITE);
    if (wait_first)
        CHECK_RC(parla_task_wait(w), PARLA_EFAILED);
    parla_task_t *r = spawn_on(rt, nothing, 0, &d, 1, PARLA_READ);
    parla_task_t *rw = spawn_on(rt, nothing, GPU0, &d, 1, PARLA_READWRITE);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(r) == PARLA_TASK_CANCELLED && parla_task_cause(r) == w,
          "the reader of a failed writer's data is %s", parla_task_state_name(parla_task_state(r)));
    CHECK(parla_task_state(rw) == PARLA_TASK_CANCELLED, "the read-write task is %s",
          parla_task_state_name(parla_task_state(rw)));
    /* A write-only task replaces the failed version; its readers run. */
    parla_task_t *fresh = spawn_on(rt, nothing, 0, &d, 1, PARLA_WRITE);
    parla_task_t *r2 = spawn_on(rt, nothing, GPU0, &d, 1, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(fresh) == PARLA_TASK_DONE && parla_task_state(r2) == PARLA_TASK_DONE,
          "after a fresh write: writer %s, reader %s", parla_task_state_name(parla_task_state(fresh)),
          parla_task_state_name(parla_task_state(r2)));
    parla_task_t *all[] = {w, r, rw, fresh, r2};
    for (int i = 0; i < 5; i++)
        parla_task_release(all[i]);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* The writer fails while the write-only task and its reader are already
 * spawned; then the same with views: a failed write of [0, 64) replaced by
 * writes of [0, 32) and [32, 64). */
static void fresh_write_after_failure(void)
{
    check_set_phase("fresh write after a failure");
    parla_runtime_t *rt = runtime(1 << 20);
    parla_data_t *d, *lo, *hi;
    CHECK_OK(parla_data_create(rt, 64, NULL, &d));
    uint64_t r_lo[2] = {0, 32}, r_hi[2] = {32, 64};
    CHECK_OK(parla_data_view(d, r_lo, 1, &lo));
    CHECK_OK(parla_data_view(d, r_hi, 1, &hi));
    parla_task_t *w = spawn_on(rt, failing, GPU0, &d, 1, PARLA_READWRITE);
    parla_task_t *o = spawn_on(rt, nothing, GPU0, &d, 1, PARLA_WRITE);
    parla_task_t *r = spawn_on(rt, nothing, 0, &d, 1, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(w) == PARLA_TASK_FAILED, "writer %s", parla_task_state_name(parla_task_state(w)));
    CHECK(parla_task_state(o) == PARLA_TASK_DONE && parla_task_state(r) == PARLA_TASK_DONE,
          "write-only task %s, its reader %s", parla_task_state_name(parla_task_state(o)),
          parla_task_state_name(parla_task_state(r)));
    parla_task_t *w2 = spawn_on(rt, failing, 0, &d, 1, PARLA_READWRITE);
    CHECK_RC(parla_task_wait(w2), PARLA_EFAILED);
    parla_task_t *o1 = spawn_on(rt, nothing, GPU0, &lo, 1, PARLA_WRITE);
    parla_task_t *r1 = spawn_on(rt, nothing, 0, &lo, 1, PARLA_READ);
    parla_task_t *r_half = spawn_on(rt, nothing, 0, &d, 1, PARLA_READ); /* half still failed: cancelled */
    parla_task_t *o2 = spawn_on(rt, nothing, 0, &hi, 1, PARLA_WRITE);
    parla_task_t *r_all = spawn_on(rt, nothing, GPU0, &d, 1, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(r1) == PARLA_TASK_DONE, "reader of the rewritten half: %s",
          parla_task_state_name(parla_task_state(r1)));
    CHECK(parla_task_state(r_half) == PARLA_TASK_CANCELLED, "reader while half is missing: %s",
          parla_task_state_name(parla_task_state(r_half)));
    CHECK(parla_task_state(r_all) == PARLA_TASK_DONE, "reader after both halves were rewritten: %s",
          parla_task_state_name(parla_task_state(r_all)));
    parla_task_t *all[] = {w, o, r, w2, o1, r1, r_half, o2, r_all};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        parla_task_release(all[i]);
    parla_data_release(lo);
    parla_data_release(hi);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
}

static void released_unsubmitted(void)
{
    check_set_phase("released unsubmitted task");
    parla_runtime_t *rt = runtime(1 << 20);
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, 4096, NULL, &d));
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, nothing, NULL, &t));
    CHECK_OK(parla_task_add_access(t, d, PARLA_READWRITE));
    parla_task_release(t);
    parla_data_release(d);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt)); /* frees everything: ASan's leak check fails otherwise */
}

static void held_copies(void)
{
    check_set_phase("held copies");
    parla_runtime_t *rt = runtime(1 << 20);
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, 4096, NULL, &d));
    parla_hold_t *none;
    CHECK_RC(parla_data_hold(d, GPU0, &none, NULL), PARLA_ESTATE); /* no copy there yet */
    CHECK_RC(parla_data_hold(d, 5, &none, NULL), PARLA_ENODEV);
    CHECK_OK(parla_data_fetch(d, GPU0, 1));
    parla_hold_t *h1, *h2, *h3;
    unsigned char *p1, *p2, *p3;
    CHECK_OK(parla_data_hold(d, GPU0, &h1, (void **)&p1));
    CHECK_OK(parla_data_hold(d, GPU0, &h2, (void **)&p2));
    CHECK(p1 == p2 && p1 == parla_data_device_ptr(d, GPU0), "one copy, one address");
    memset(p1, 7, 4096);
    CHECK_OK(parla_data_evict(d, GPU0, 1)); /* written back; the memory stays for the holds */
    CHECK(parla_data_device_ptr(d, GPU0) == NULL && parla_data_resident_bytes(d, GPU0) == 0, "copy dropped");
    CHECK(p1[0] == 7 && p1[4095] == 7, "held memory kept its values");
    parla_hold_release(h1);
    CHECK(p2[100] == 7, "still held by the second hold");
    parla_hold_release(h2);
    /* A new copy, held past the data and the runtime. */
    parla_task_t *t = spawn_on(rt, nothing, GPU0, &d, 1, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_data_hold(d, GPU0, &h3, (void **)&p3));
    parla_task_release(t);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
    CHECK(p3[0] == 7 && p3[4095] == 7, "memory held past the runtime");
    parla_hold_release(h3); /* frees the copy, then the runtime's memory */
    parla_hold_release(NULL);
}

static void timed_data_wait(void)
{
    check_set_phase("timed data wait");
    parla_runtime_t *rt = runtime(1 << 20);
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, 64, NULL, &d));
    /* The writer runs until the timed wait is over (a 200 ms body left to timing whether it still ran 10 ms
     * later: on a loaded machine this thread may not run again within 200 ms). */
    static atomic_int gate;
    atomic_store(&gate, 0);
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, gated, &gate, &t));
    CHECK_OK(parla_task_add_access(t, d, PARLA_READWRITE));
    CHECK_OK(parla_task_submit(t));
    CHECK_RC(parla_data_wait(d, 0, 0.01), PARLA_ETIMEDOUT);
    atomic_store(&gate, 1);
    CHECK_OK(parla_data_wait(d, 1, -1.0));
    CHECK(parla_task_state(t) == PARLA_TASK_DONE, "writer %s", parla_task_state_name(parla_task_state(t)));
    CHECK_OK(parla_data_wait(d, 1, 0.0));
    CHECK_RC(parla_data_wait(NULL, 0, 0.0), PARLA_EINVAL);
    parla_task_release(t);
    /* Declared, not submitted: not waited for (it could be submitted by another thread, or by this one
     * after the call, which would otherwise wait for itself). */
    parla_task_t *w;
    CHECK_OK(parla_task_create(rt, store7, d, &w));
    CHECK_OK(parla_task_add_access(w, d, PARLA_READWRITE));
    CHECK_OK(parla_data_wait(d, 1, -1.0));
    CHECK_OK(parla_data_fetch(d, 0, 0));
    CHECK_OK(parla_task_submit(w));
    CHECK_OK(parla_data_fetch(d, 0, 0)); /* submitted: waited for */
    CHECK(parla_task_state(w) == PARLA_TASK_DONE, "writer %s", parla_task_state_name(parla_task_state(w)));
    CHECK(((const int64_t *)parla_data_device_ptr(d, 0))[0] == 7, "the fetch did not see the write");
    parla_task_release(w);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
}

/* 7. One account per GPU: data copies and memory reservations share its
 *    capacity. A copy left resident is evicted for a task that reserves the
 *    room; a reservation that must wait for a pinned copy waits (and runs
 *    once the copy is unpinned); a task whose data and reservation together
 *    exceed the capacity fails at once. Never more than the capacity in use. */
static parla_runtime_t *acct_rt;
static _Atomic int acct_over;

static int check_account(parla_task_t *t, void *arg)
{
    (void)t;
    (void)arg;
    parla_device_info_t info;
    CHECK_OK(parla_device_info(acct_rt, GPU0, &info));
    if (info.memory_reserved + info.memory_resident > info.memory_capacity)
        atomic_store(&acct_over, (int)((info.memory_reserved + info.memory_resident) * 100 / info.memory_capacity));
    return 0;
}

static int slow_check(parla_task_t *t, void *arg)
{
    check_account(t, arg);
    sleep_ms(100);
    return check_account(t, arg);
}

static void one_account(void)
{
    check_set_phase("one account per device");
    enum { CAP = 1 << 20 };
    parla_runtime_t *rt = acct_rt = runtime(CAP);
    atomic_store(&acct_over, 0);
    parla_data_t *d;
    CHECK_OK(parla_data_create(rt, 3 * CAP / 4, NULL, &d));
    parla_task_t *a = spawn_on(rt, nothing, GPU0, &d, 1, PARLA_READ);
    CHECK_OK(parla_task_wait(a));
    CHECK(parla_data_resident_bytes(d, GPU0) == 3 * CAP / 4, "the copy did not stay on the GPU");
    /* A reservation of half the GPU: the idle copy makes room. */
    parla_task_t *b;
    CHECK_OK(parla_task_create(rt, check_account, NULL, &b));
    int slot = GPU0;
    CHECK_OK(parla_task_add_placement(b, &slot, 1, 0.0, CAP / 2));
    CHECK_OK(parla_task_submit(b));
    CHECK_OK(parla_task_wait(b));
    CHECK(atomic_load(&acct_over) == 0, "a task ran with %d%% of the GPU in use", atomic_load(&acct_over));
    CHECK(parla_data_resident_bytes(d, GPU0) == 0, "the idle copy was not evicted for the reservation");
    /* Data and reservation together larger than the GPU: fails at once. */
    parla_task_t *c;
    CHECK_OK(parla_task_create(rt, check_account, NULL, &c));
    CHECK_OK(parla_task_add_placement(c, &slot, 1, 0.0, CAP / 2));
    CHECK_OK(parla_task_add_access(c, d, PARLA_READ));
    CHECK_OK(parla_task_submit(c));
    CHECK_RC(parla_task_wait(c), PARLA_EFAILED);
    CHECK(parla_task_error(c) == PARLA_ERESOURCE, "error %d", parla_task_error(c));
    /* A pinned copy (a slow reader): the reservation waits for it, then runs. */
    parla_task_t *r = spawn_on(rt, slow, GPU0, &d, 1, PARLA_READ);
    parla_task_t *e;
    CHECK_OK(parla_task_create(rt, check_account, NULL, &e));
    CHECK_OK(parla_task_add_placement(e, &slot, 1, 0.0, CAP / 2));
    CHECK_OK(parla_task_submit(e));
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 30.0));
    CHECK(parla_task_state(r) == PARLA_TASK_DONE && parla_task_state(e) == PARLA_TASK_DONE, "reader %s, reserver %s",
          parla_task_state_name(parla_task_state(r)), parla_task_state_name(parla_task_state(e)));
    CHECK(atomic_load(&acct_over) == 0, "a task ran with %d%% of the GPU in use", atomic_load(&acct_over));
    /* The other way round: data waits for a reservation to end. */
    parla_task_t *e2;
    CHECK_OK(parla_task_create(rt, slow_check, NULL, &e2));
    CHECK_OK(parla_task_add_placement(e2, &slot, 1, 0.0, CAP / 2));
    CHECK_OK(parla_task_submit(e2));
    sleep_ms(20);
    parla_task_t *r2 = spawn_on(rt, check_account, GPU0, &d, 1, PARLA_READ);
    CHECK_OK(parla_runtime_wait_all_timeout(rt, 30.0));
    CHECK(parla_task_state(r2) == PARLA_TASK_DONE && parla_task_state(e2) == PARLA_TASK_DONE, "reader %s, reserver %s",
          parla_task_state_name(parla_task_state(r2)), parla_task_state_name(parla_task_state(e2)));
    CHECK(atomic_load(&acct_over) == 0, "a task ran with %d%% of the GPU in use", atomic_load(&acct_over));
    parla_task_t *all[] = {a, b, c, r, e, e2, r2};
    for (int i = 0; i < 7; i++)
        parla_task_release(all[i]);
    parla_data_release(d);
    CHECK_OK(parla_runtime_destroy(rt));
}

int main(void)
{
    check_watchdog(50);
    int rounds = (int)scaled(5, 2);
    for (int i = 0; i < rounds; i++)
        full_gpu();
    for (int i = 0; i < rounds; i++)
        whole_or_nothing();
    fetched_copy_is_evictable();
    failed_writer(0);
    failed_writer(1);
    fresh_write_after_failure();
    released_unsubmitted();
    held_copies();
    timed_data_wait();
    one_account();
    printf("full GPU x%d, room all at once x%d, fetched copy, failed writers, fresh writes, released unsubmitted task, "
           "held copies, timed data wait, one account: ok\n",
           rounds, rounds);
    return 0;
}
