/*
 * test_wait_in_task: bodies that wait for other tasks do not deadlock the
 * pool, with 1 and 2 workers: spawn-and-wait recursion (Fibonacci), a body
 * waiting on a task that only becomes ready when the main thread submits its
 * dependency, and waits on failed tasks. Then parla_task_suspend_on(): the
 * body is called again once the awaited tasks have finished, the task is
 * SUSPENDED meanwhile, its dependents wait for its final completion, a failed
 * awaited task does not cancel it, and several rounds of suspension work.
 * Last, a binding lock kept across bodies (the GIL) is let go through the
 * worker_idle hook before a body's wait sleeps.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

static parla_runtime_t *rt;

/* ---- Fibonacci by spawn and wait. */

struct fib {
    int n;
    long result;
};

static int fib_body(parla_task_t *task, void *arg)
{
    (void)task;
    struct fib *f = arg;
    if (f->n < 2) {
        f->result = f->n;
        return 0;
    }
    struct fib a = {f->n - 1, -1}, b = {f->n - 2, -1};
    parla_task_t *ta, *tb;
    int rc = parla_task_create(rt, fib_body, &a, &ta);
    if (rc)
        return rc;
    rc = parla_task_create(rt, fib_body, &b, &tb);
    if (rc)
        return rc;
    if ((rc = parla_task_submit(ta)) != 0 || (rc = parla_task_submit(tb)) != 0)
        return rc;
    int ra = parla_task_wait(ta);
    int rb = parla_task_wait(tb);
    parla_task_release(ta);
    parla_task_release(tb);
    if (ra || rb)
        return ra ? ra : rb;
    f->result = a.result + b.result;
    return 0;
}

static long fib_ref(int n)
{
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long c = a + b;
        a = b;
        b = c;
    }
    return a;
}

/* ---- Waiting on a task whose dependency the main thread submits later. */

static atomic_int waiter_started;
static atomic_int waiter_rc;

static int waiter_body(parla_task_t *task, void *arg)
{
    (void)task;
    atomic_store(&waiter_started, 1);
    atomic_store(&waiter_rc, parla_task_wait((parla_task_t *)arg));
    return 0;
}

static atomic_int simple_runs;

static int simple_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&simple_runs, 1);
    return 0;
}

static int fail_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    return 3;
}

/* ---- Suspension. */

static atomic_long seq;

struct susp {
    int calls;           /* body calls so far */
    int rounds;          /* how many times to suspend */
    int children;        /* per round */
    int fail_child;      /* the first child of round 0 fails */
    parla_task_t *gate;  /* children of round 0 depend on it (may be NULL) */
    atomic_int round0_suspended;
    long children_done;  /* counted by the body after each resume */
    long children_failed;
    long final_end;      /* seq at the end of the last call */
    int bad;             /* something the body saw was wrong */
    parla_task_t *kids[16];
    int nkids;
};

static atomic_long kid_count;

static int kid_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    spin_for(0.0002);
    atomic_fetch_add(&kid_count, 1);
    return 0;
}

static int susp_body(parla_task_t *self, void *arg)
{
    struct susp *s = arg;
    if (parla_task_current() != self)
        s->bad = 1;
    /* Look at what the previous round waited for. */
    for (int i = 0; i < s->nkids; i++) {
        parla_task_state_t st = parla_task_state(s->kids[i]);
        if (st == PARLA_TASK_DONE)
            s->children_done++;
        else if (st == PARLA_TASK_FAILED)
            s->children_failed++;
        else
            s->bad = 2; /* resumed before an awaited task finished */
        parla_task_release(s->kids[i]);
    }
    s->nkids = 0;
    int round = s->calls++;
    if (round >= s->rounds) {
        s->final_end = atomic_fetch_add(&seq, 1);
        return 0;
    }
    for (int i = 0; i < s->children; i++) {
        parla_task_t *k;
        int rc = parla_task_create(rt, (round == 0 && i == 0 && s->fail_child) ? fail_body : kid_body,
                                   NULL, &k);
        if (rc)
            return rc;
        if (round == 0 && s->gate != NULL && (rc = parla_task_add_dependency(k, s->gate)) != 0)
            return rc;
        if ((rc = parla_task_submit(k)) != 0)
            return rc;
        s->kids[s->nkids++] = k;
    }
    int rc = parla_task_suspend_on(self, s->kids, (size_t)s->nkids);
    if (rc)
        return rc;
    if (round == 0)
        atomic_store(&s->round0_suspended, 1);
    return PARLA_TASK_SUSPEND;
}

struct after {
    struct susp *s;
    long start;
    int saw_calls;
};

static int after_body(parla_task_t *task, void *arg)
{
    (void)task;
    struct after *a = arg;
    a->start = atomic_fetch_add(&seq, 1);
    a->saw_calls = a->s->calls;
    return 0;
}

static void run_fib(int n)
{
    struct fib f = {n, -1};
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fib_body, &f, &t));
    CHECK_OK(parla_task_submit(t));
    CHECK_OK(parla_task_wait(t));
    CHECK(f.result == fib_ref(n), "fib(%d) = %ld, expected %ld", n, f.result, fib_ref(n));
    parla_task_release(t);
    CHECK_OK(parla_runtime_wait_all(rt));
}

/* ---- Waiting in a body on what can never finish returns PARLA_ESTUCK, with
 * any number of workers (a never-submitted task; a submitted one whose
 * dependency is never submitted), and the messages say what is blocked. */

static char waiter_msg[512];

static int stuck_waiter_body(parla_task_t *task, void *arg)
{
    (void)task;
    int rc = parla_task_wait((parla_task_t *)arg);
    snprintf(waiter_msg, sizeof waiter_msg, "%s", parla_last_error_message());
    atomic_store(&waiter_rc, rc);
    return 0;
}

static void wait_on_never(void)
{
    check_set_phase("wait in body on a never-submitted task");
    parla_task_t *u, *w;
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &u));
    CHECK_OK(parla_task_set_name(u, "never_submitted"));
    atomic_store(&waiter_rc, 99);
    CHECK_OK(parla_task_create(rt, stuck_waiter_body, u, &w));
    CHECK_OK(parla_task_submit(w));
    CHECK_OK(parla_task_wait(w));
    CHECK(atomic_load(&waiter_rc) == PARLA_ESTUCK, "a body's wait on a never-submitted task returned %d",
          atomic_load(&waiter_rc));
    CHECK(strstr(waiter_msg, "never_submitted") && strstr(waiter_msg, "never submitted"), "message: %s", waiter_msg);
    parla_task_release(w);

    check_set_phase("wait in body on a task whose dependency is never submitted");
    parla_task_t *target;
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &target));
    CHECK_OK(parla_task_set_name(target, "target"));
    CHECK_OK(parla_task_add_dependency(target, u));
    CHECK_OK(parla_task_submit(target));
    atomic_store(&waiter_rc, 99);
    CHECK_OK(parla_task_create(rt, stuck_waiter_body, target, &w));
    CHECK_OK(parla_task_set_name(w, "blocked_body"));
    CHECK_OK(parla_task_submit(w));
    /* target can never run: the wait reports it, naming the missing task. */
    CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);
    const char *m = parla_last_error_message();
    CHECK(strstr(m, "never_submitted (needed by target)") != NULL && strstr(m, "none is running") == NULL,
          "message: %s", m);
    /* While the body still blocks, the message says so (a running task is
     * not "none running"). */
    if (strstr(m, "blocked in a wait"))
        CHECK(strstr(m, "blocked_body waits for target (submitted)") != NULL, "message: %s", m);
    CHECK_OK(parla_task_wait_any(&w, 1, 30.0));
    CHECK(parla_task_state(w) == PARLA_TASK_DONE, "the waiting body is %s", parla_task_state_name(parla_task_state(w)));
    CHECK(atomic_load(&waiter_rc) == PARLA_ESTUCK, "a body's wait on a stuck task returned %d",
          atomic_load(&waiter_rc));
    CHECK(strstr(waiter_msg, "never_submitted") != NULL, "message: %s", waiter_msg);
    CHECK_OK(parla_task_cancel(u));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(target) == PARLA_TASK_CANCELLED, "target is %s",
          parla_task_state_name(parla_task_state(target)));
    parla_task_release(u);
    parla_task_release(target);
    parla_task_release(w);
}

/* ---- Taskflow issue 647's shape: a body holds a lock while it waits for its
 * child, and an unrelated ready task (queued first, at a higher priority)
 * takes that lock. A waiting body helps only with tasks it created, so the
 * unrelated task is never run on its stack (where it would block on the
 * lock for ever). The other worker is kept busy so the unrelated task stays
 * queued while the body waits. */

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static atomic_int lock_taken, may_wait, holder_done, lock_timed_out;

static int holder_body(parla_task_t *task, void *arg)
{
    parla_runtime_t *r = arg;
    pthread_mutex_lock(&held);
    atomic_store(&lock_taken, 1);
    while (!atomic_load(&may_wait))
        sleep_ms(1);
    parla_task_t *c;
    int rc = parla_task_create(r, simple_body, NULL, &c);
    if (rc == 0 && (rc = parla_task_submit(c)) == 0)
        rc = parla_task_wait(c);
    parla_task_release(c);
    pthread_mutex_unlock(&held);
    atomic_store(&holder_done, 1);
    (void)task;
    return rc;
}

static int locker_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    if (pthread_mutex_timedlock(&held, &until) != 0) {
        atomic_store(&lock_timed_out, 1); /* it ran on the holder's stack: a deadlock */
        return 1;
    }
    pthread_mutex_unlock(&held);
    return 0;
}

static int busy_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    for (int i = 0; i < 10000 && !atomic_load(&holder_done); i++)
        sleep_ms(1);
    return 0;
}

static void wait_with_lock_held(void)
{
    check_set_phase("a body waits while holding a lock an unrelated task takes");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *r;
    CHECK_OK(parla_runtime_create(&cfg, &r));
    atomic_store(&lock_taken, 0);
    atomic_store(&may_wait, 0);
    atomic_store(&holder_done, 0);
    atomic_store(&lock_timed_out, 0);
    atomic_store(&simple_runs, 0);
    parla_task_t *h, *b, *l;
    CHECK_OK(parla_task_create(r, holder_body, r, &h));
    CHECK_OK(parla_task_submit(h));
    while (!atomic_load(&lock_taken))
        sleep_ms(1);
    CHECK_OK(parla_task_create(r, busy_body, NULL, &b));
    CHECK_OK(parla_task_submit(b));
    sleep_ms(20); /* the other worker takes it */
    CHECK_OK(parla_task_create(r, locker_body, NULL, &l));
    CHECK_OK(parla_task_set_priority(l, 1));
    CHECK_OK(parla_task_submit(l));
    atomic_store(&may_wait, 1);
    CHECK_OK(parla_runtime_wait_all(r));
    CHECK(atomic_load(&lock_timed_out) == 0, "the unrelated task ran inside the waiting body and blocked on its lock");
    CHECK(parla_task_state(h) == PARLA_TASK_DONE && parla_task_state(l) == PARLA_TASK_DONE &&
              atomic_load(&simple_runs) == 1,
          "holder %s, locker %s, child runs %d", parla_task_state_name(parla_task_state(h)),
          parla_task_state_name(parla_task_state(l)), atomic_load(&simple_runs));
    parla_task_release(h);
    parla_task_release(b);
    parla_task_release(l);
    CHECK_OK(parla_runtime_destroy(r));
}

static void wait_on_late(void)
{
    check_set_phase("wait in body on a task with a late dependency");
    atomic_store(&waiter_started, 0);
    atomic_store(&waiter_rc, 99);
    atomic_store(&simple_runs, 0);
    parla_task_t *late, *target, *w;
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &late));
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &target));
    CHECK_OK(parla_task_add_dependency(target, late));
    CHECK_OK(parla_task_submit(target));
    CHECK_OK(parla_task_create(rt, waiter_body, target, &w));
    CHECK_OK(parla_task_submit(w));
    while (!atomic_load(&waiter_started))
        sleep_ms(1);
    sleep_ms(30);
    /* The header allows a wait whose target depends on a never-submitted
     * task to report PARLA_ESTUCK once nothing else can run; otherwise it is
     * still waiting. Anything else is wrong. */
    int early = atomic_load(&waiter_rc);
    CHECK(early == 99 || early == PARLA_ESTUCK, "waiter returned %d before the target could run",
          early);
    CHECK_OK(parla_task_submit(late));
    CHECK_OK(parla_task_wait(w));
    CHECK_OK(parla_task_wait(target));
    int final_rc = atomic_load(&waiter_rc);
    CHECK(final_rc == 0 || final_rc == PARLA_ESTUCK, "wait in body returned %d", final_rc);
    if (final_rc == PARLA_ESTUCK)
        printf("note: wait in a body on a task with a never-submitted dependency returned ESTUCK\n");
    CHECK(atomic_load(&simple_runs) == 2, "runs %d", atomic_load(&simple_runs));
    parla_task_release(late);
    parla_task_release(target);
    parla_task_release(w);

    /* Waiting in a body on a failed and on a cancelled task. */
    check_set_phase("wait in body on failed tasks");
    parla_task_t *f, *c;
    CHECK_OK(parla_task_create(rt, fail_body, NULL, &f));
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &c));
    CHECK_OK(parla_task_add_dependency(c, f));
    CHECK_OK(parla_task_submit(c));
    CHECK_OK(parla_task_submit(f));
    atomic_store(&waiter_rc, 99);
    CHECK_OK(parla_task_create(rt, waiter_body, f, &w));
    CHECK_OK(parla_task_submit(w));
    CHECK_OK(parla_task_wait(w));
    CHECK(atomic_load(&waiter_rc) == PARLA_EFAILED, "wait on failed returned %d",
          atomic_load(&waiter_rc));
    parla_task_release(w);
    atomic_store(&waiter_rc, 99);
    CHECK_OK(parla_task_create(rt, waiter_body, c, &w));
    CHECK_OK(parla_task_submit(w));
    CHECK_OK(parla_task_wait(w));
    CHECK(atomic_load(&waiter_rc) == PARLA_ECANCELLED, "wait on cancelled returned %d",
          atomic_load(&waiter_rc));
    parla_task_release(w);
    parla_task_release(f);
    parla_task_release(c);
}

static void suspend_cases(void)
{
    check_set_phase("suspend with gate");
    atomic_store(&seq, 0);
    atomic_store(&kid_count, 0);
    /* One round, children gated by a task the main thread submits. */
    static struct susp s1;
    memset(&s1, 0, sizeof s1);
    s1.rounds = 1;
    s1.children = 4;
    parla_task_t *gate;
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &gate));
    s1.gate = gate;
    parla_task_t *S, *D;
    struct after a1 = {&s1, -1, -1};
    CHECK_OK(parla_task_create(rt, susp_body, &s1, &S));
    CHECK_OK(parla_task_create(rt, after_body, &a1, &D));
    CHECK_OK(parla_task_add_dependency(D, S));
    CHECK_OK(parla_task_submit(D));
    CHECK_OK(parla_task_submit(S));
    double t0 = now_s();
    while (!atomic_load(&s1.round0_suspended))
        CHECK(now_s() - t0 < 10.0, "suspending body never ran");
    sleep_ms(20);
    CHECK(parla_task_state(S) == PARLA_TASK_SUSPENDED, "state while suspended: %s",
          parla_task_state_name(parla_task_state(S)));
    CHECK(parla_task_state(D) == PARLA_TASK_SUBMITTED, "dependent state while suspended: %s",
          parla_task_state_name(parla_task_state(D)));
    CHECK(s1.calls == 1, "calls while suspended %d", s1.calls);
    /* The worker was freed: an unrelated task runs even with one worker. */
    parla_task_t *x;
    atomic_store(&simple_runs, 0);
    CHECK_OK(parla_task_create(rt, simple_body, NULL, &x));
    CHECK_OK(parla_task_submit(x));
    CHECK_OK(parla_task_wait(x));
    parla_task_release(x);
    CHECK_OK(parla_task_submit(gate));
    CHECK_OK(parla_task_wait(D));
    CHECK_OK(parla_task_wait(S));
    CHECK(parla_task_state(S) == PARLA_TASK_DONE, "suspended task final state %s",
          parla_task_state_name(parla_task_state(S)));
    CHECK(s1.bad == 0, "body saw a problem: %d", s1.bad);
    CHECK(s1.calls == 2, "body called %d times, expected 2", s1.calls);
    CHECK(s1.children_done == 4, "children done at resume: %ld", s1.children_done);
    CHECK(a1.start > s1.final_end, "dependent started (seq %ld) before the suspended task's final "
          "call ended (seq %ld)", a1.start, s1.final_end);
    CHECK(a1.saw_calls == 2, "dependent saw %d calls", a1.saw_calls);
    parla_task_release(S);
    parla_task_release(D);
    parla_task_release(gate);

    /* A failed awaited task does not cancel the waiter; several rounds. */
    check_set_phase("suspend, failing child, rounds");
    long reps = scaled(200, 20);
    for (long r = 0; r < reps; r++) {
        static struct susp s2;
        memset(&s2, 0, sizeof s2);
        s2.rounds = 3;
        s2.children = 5;
        s2.fail_child = 1;
        struct after a2 = {&s2, -1, -1};
        CHECK_OK(parla_task_create(rt, susp_body, &s2, &S));
        CHECK_OK(parla_task_create(rt, after_body, &a2, &D));
        CHECK_OK(parla_task_add_dependency(D, S));
        CHECK_OK(parla_task_submit(D));
        CHECK_OK(parla_task_submit(S));
        CHECK_OK(parla_runtime_wait_all(rt));
        CHECK(parla_task_state(S) == PARLA_TASK_DONE, "rep %ld: waiter state %s (error %d)", r,
              parla_task_state_name(parla_task_state(S)), parla_task_error(S));
        CHECK(parla_task_state(D) == PARLA_TASK_DONE, "rep %ld: dependent state %s", r,
              parla_task_state_name(parla_task_state(D)));
        CHECK(s2.bad == 0, "rep %ld: body saw a problem: %d", r, s2.bad);
        CHECK(s2.calls == 4, "rep %ld: body called %d times, expected 4", r, s2.calls);
        CHECK(s2.children_failed == 1 && s2.children_done == 14, "rep %ld: children %ld done %ld failed",
              r, s2.children_done, s2.children_failed);
        CHECK(a2.start > s2.final_end, "rep %ld: dependent ran before the final call", r);
        parla_task_release(S);
        parla_task_release(D);
    }

    /* Suspending on tasks that are already finished: resumed at once. */
    check_set_phase("suspend on finished tasks");
    static struct susp s3;
    memset(&s3, 0, sizeof s3);
    s3.rounds = 1;
    s3.children = 1;
    s3.gate = NULL;
    CHECK_OK(parla_task_create(rt, susp_body, &s3, &S));
    CHECK_OK(parla_task_submit(S));
    CHECK_OK(parla_task_wait(S));
    CHECK(s3.calls == 2 && s3.bad == 0, "calls %d bad %d", s3.calls, s3.bad);
    parla_task_release(S);
}

/* Nested waits: each body spawns three children and waits for them. */
static atomic_long leaves;

static int nest_body(parla_task_t *task, void *arg)
{
    (void)task;
    int depth = (int)(intptr_t)arg;
    if (depth == 0) {
        atomic_fetch_add(&leaves, 1);
        return 0;
    }
    parla_task_t *k[3];
    for (int i = 0; i < 3; i++) {
        int rc = parla_task_create(rt, nest_body, (void *)(intptr_t)(depth - 1), &k[i]);
        if (rc == 0)
            rc = parla_task_submit(k[i]);
        if (rc)
            return rc;
    }
    int rc = 0;
    for (int i = 0; i < 3; i++) {
        int r = parla_task_wait(k[i]);
        if (r && !rc)
            rc = r;
        parla_task_release(k[i]);
    }
    return rc;
}

/* ---- A binding lock kept across bodies (as a Python binding keeps the GIL): taken by a body when the
 * worker does not hold it, let go by the worker_idle hook, released around a wait as a binding releases
 * it around any blocking call. A body's wait that runs a child itself (which takes the lock) must call
 * the idle hook before it sleeps: else it sleeps holding the lock the awaited child needs to finish. */

static pthread_mutex_t binding_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int binding_held;
static atomic_int binding_idle_calls, far_child_started, near_child_ran;

static void binding_take(void)
{
    if (!binding_held) {
        pthread_mutex_lock(&binding_lock);
        binding_held = 1;
    }
}

static void binding_idle(int index, void *user)
{
    (void)index;
    (void)user;
    atomic_fetch_add(&binding_idle_calls, 1);
    if (binding_held) {
        binding_held = 0;
        pthread_mutex_unlock(&binding_lock);
    }
}

static int far_child(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_store(&far_child_started, 1);
    sleep_ms(100); /* the parent's wait has run near_child by now and waits for this one */
    binding_take(); /* this child's Python part, once its GIL-free kernel is done */
    return 0;
}

static int near_child(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    binding_take();
    atomic_store(&near_child_ran, 1);
    return 0;
}

static int binding_parent(parla_task_t *task, void *arg)
{
    (void)task;
    parla_runtime_t *r = arg;
    binding_take();
    parla_task_t *far, *near;
    int rc = parla_task_create(r, far_child, NULL, &far);
    if (rc || (rc = parla_task_submit(far)) != 0)
        return rc;
    while (!atomic_load(&far_child_started))
        sleep_ms(1);
    if ((rc = parla_task_create(r, near_child, NULL, &near)) != 0 || (rc = parla_task_submit(near)) != 0)
        return rc;
    /* A blocking call: the binding lets go of its lock, and takes it back after. */
    int was_held = binding_held;
    if (binding_held) {
        binding_held = 0;
        pthread_mutex_unlock(&binding_lock);
    }
    int ra = parla_task_wait(far), rb = parla_task_wait(near);
    if (was_held)
        binding_take();
    parla_task_release(far);
    parla_task_release(near);
    return ra ? ra : rb;
}

static void wait_with_binding_lock(void)
{
    check_set_phase("a body's wait runs a child that takes a binding lock, then sleeps");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    cfg.worker_idle = binding_idle;
    parla_runtime_t *r;
    CHECK_OK(parla_runtime_create(&cfg, &r));
    atomic_store(&binding_idle_calls, 0);
    parla_task_t *p;
    CHECK_OK(parla_task_create(r, binding_parent, r, &p));
    CHECK_OK(parla_task_submit(p));
    CHECK_OK(parla_task_wait(p)); /* the watchdog fails the test if the parent sleeps holding the lock */
    CHECK(parla_task_state(p) == PARLA_TASK_DONE, "parent %s", parla_task_state_name(parla_task_state(p)));
    CHECK(atomic_load(&near_child_ran) == 1, "the near child did not run");
    CHECK(atomic_load(&binding_idle_calls) > 0, "the idle hook was never called");
    parla_task_release(p);
    CHECK_OK(parla_runtime_destroy(r));
}

int main(void)
{
    check_watchdog(80);
    for (int w = 1; w <= 4; w *= 2) {
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = w;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        check_set_phase("fib");
        int n = test_scale() < 0.5 ? 14 : 18;
        run_fib(n);
        run_fib(10);
        check_set_phase("nested waits");
        atomic_store(&leaves, 0);
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, nest_body, (void *)(intptr_t)6, &t));
        CHECK_OK(parla_task_submit(t));
        CHECK_OK(parla_task_wait(t));
        CHECK(atomic_load(&leaves) == 729, "leaves %ld", atomic_load(&leaves));
        parla_task_release(t);
        /* Several concurrent waiting roots. */
        atomic_store(&leaves, 0);
        parla_task_t *roots[8];
        for (int i = 0; i < 8; i++) {
            CHECK_OK(parla_task_create(rt, nest_body, (void *)(intptr_t)4, &roots[i]));
            CHECK_OK(parla_task_submit(roots[i]));
        }
        CHECK_OK(parla_runtime_wait_all(rt));
        for (int i = 0; i < 8; i++) {
            CHECK(parla_task_state(roots[i]) == PARLA_TASK_DONE, "root %d", i);
            parla_task_release(roots[i]);
        }
        CHECK(atomic_load(&leaves) == 8 * 81, "leaves %ld", atomic_load(&leaves));
        wait_on_late();
        wait_on_never();
        suspend_cases();
        CHECK_OK(parla_runtime_wait_all(rt));
        CHECK_OK(parla_runtime_destroy(rt));
    }
    wait_with_lock_held();
    wait_with_binding_lock();
    printf("test_wait_in_task: ok\n");
    return 0;
}
