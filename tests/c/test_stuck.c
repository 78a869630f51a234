/*
 * test_stuck: waiting on work that can never finish returns PARLA_ESTUCK
 * promptly instead of hanging: submitted tasks that depend (directly or
 * transitively) on a never-submitted placeholder, and a dependency cycle. The
 * message names the placeholder, and parla_runtime_unsubmitted() returns it;
 * cancelling or submitting it lets wait_all return 0. ESTUCK is not reported
 * while other work is still making progress, nor while a running task is
 * about to submit the missing task. parla_runtime_destroy() returns
 * PARLA_EBUSY while submitted tasks are unfinished. A wait from another thread
 * while tasks are being submitted does not report them stuck.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static atomic_int ran;

static int count_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return 0;
}

static int slow_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    spin_for(0.001);
    atomic_fetch_add(&ran, 1);
    return 0;
}

static atomic_int gate;

static int gate_body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    while (!atomic_load(&gate))
        sleep_ms(1);
    return 0;
}

/* Sleeps, then submits the task it is given: a placeholder that was missing
 * while this body ran. */
static int submit_later_body(parla_task_t *task, void *arg)
{
    (void)task;
    sleep_ms(100);
    int rc = parla_task_submit((parla_task_t *)arg);
    return rc;
}

static parla_task_t *mk(parla_runtime_t *rt, parla_task_fn fn, const char *name)
{
    parla_task_t *t;
    CHECK_OK(parla_task_create(rt, fn, NULL, &t));
    CHECK_OK(parla_task_set_name(t, name));
    return t;
}

static void basic_stuck(parla_runtime_t *rt, int resolve_by_submit)
{
    check_set_phase(resolve_by_submit ? "stuck, resolved by submit" : "stuck, resolved by cancel");
    atomic_store(&ran, 0);
    parla_task_t *P = mk(rt, count_body, "the-placeholder");
    parla_task_t *W = mk(rt, count_body, "the-waiter");
    parla_task_t *V = mk(rt, count_body, "the-second-waiter");
    parla_task_t *Z = mk(rt, count_body, "independent");
    CHECK_OK(parla_task_add_dependency(W, P));
    CHECK_OK(parla_task_add_dependency(V, W));
    CHECK_OK(parla_task_submit(V));
    CHECK_OK(parla_task_submit(W));
    CHECK_OK(parla_task_submit(Z));

    double t0 = now_s();
    int rc = parla_runtime_wait_all(rt);
    double dt = now_s() - t0;
    CHECK_RC(rc, PARLA_ESTUCK);
    CHECK(dt < 1.0, "wait_all took %.3f s to report ESTUCK", dt);
    const char *msg = parla_last_error_message();
    CHECK(strstr(msg, "the-placeholder") != NULL, "message does not name the placeholder: \"%s\"",
          msg);
    CHECK(strstr(msg, "the-waiter") != NULL, "message does not name the waiting task: \"%s\"", msg);
    CHECK(strstr(msg, "2") != NULL, "message does not give the stuck count (2): \"%s\"", msg);
    CHECK(parla_task_state(Z) == PARLA_TASK_DONE, "independent task state %s",
          parla_task_state_name(parla_task_state(Z)));
    CHECK(parla_task_state(W) == PARLA_TASK_SUBMITTED, "stuck task state %s",
          parla_task_state_name(parla_task_state(W)));

    /* Waiting on a stuck task is also bounded. */
    t0 = now_s();
    CHECK_RC(parla_task_wait(V), PARLA_ESTUCK);
    CHECK(now_s() - t0 < 1.0, "task_wait took %.3f s to report ESTUCK", now_s() - t0);

    /* And a second wait_all says the same thing. */
    CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);

    parla_task_t *out[4] = {NULL, NULL, NULL, NULL};
    CHECK(parla_runtime_unsubmitted(rt, NULL, 0) == 1, "unsubmitted count with cap 0");
    size_t n = parla_runtime_unsubmitted(rt, out, 4);
    CHECK(n == 1, "unsubmitted returned %zu", n);
    CHECK(out[0] == P, "unsubmitted returned %s",
          out[0] ? parla_task_name(out[0]) : "NULL");
    CHECK(out[1] == NULL, "unsubmitted wrote past the count");
    parla_task_release(out[0]);

    /* The runtime cannot be destroyed with stuck tasks. */
    CHECK_RC(parla_runtime_destroy(rt), PARLA_EBUSY);

    if (resolve_by_submit) {
        CHECK_OK(parla_task_submit(P));
        CHECK_OK(parla_runtime_wait_all(rt));
        CHECK(atomic_load(&ran) == 4, "ran %d of 4", atomic_load(&ran));
        CHECK(parla_task_state(V) == PARLA_TASK_DONE, "V state");
    } else {
        CHECK_OK(parla_task_cancel(P));
        CHECK_OK(parla_runtime_wait_all(rt));
        CHECK(atomic_load(&ran) == 1, "ran %d of 1", atomic_load(&ran));
        CHECK(parla_task_state(V) == PARLA_TASK_CANCELLED, "V state %s",
              parla_task_state_name(parla_task_state(V)));
        CHECK(parla_task_cause(V) == P, "V cause");
    }
    CHECK(parla_runtime_unsubmitted(rt, out, 4) == 0, "unsubmitted after resolution");
    parla_task_release(P);
    parla_task_release(W);
    parla_task_release(V);
    parla_task_release(Z);
}

static void multi_placeholders(parla_runtime_t *rt)
{
    check_set_phase("several placeholders");
    enum { NP = 5 };
    parla_task_t *P[NP], *W;
    W = mk(rt, count_body, "joiner");
    for (int i = 0; i < NP; i++) {
        char name[32];
        snprintf(name, sizeof name, "missing-%d", i);
        P[i] = mk(rt, count_body, name);
        CHECK_OK(parla_task_add_dependency(W, P[i]));
    }
    /* An unsubmitted task nobody depends on is not a problem. */
    parla_task_t *lonely = mk(rt, count_body, "lonely");
    CHECK_OK(parla_task_submit(W));
    CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);
    parla_task_t *out[NP];
    CHECK(parla_runtime_unsubmitted(rt, out, 2) == NP, "unsubmitted count");
    parla_task_release(out[0]);
    parla_task_release(out[1]);
    CHECK(parla_runtime_unsubmitted(rt, out, NP) == NP, "unsubmitted count");
    for (int i = 0; i < NP; i++) {
        int found = 0;
        for (int j = 0; j < NP; j++)
            found += out[j] == P[i];
        CHECK(found == 1, "placeholder %d listed %d times", i, found);
        parla_task_release(out[i]);
    }
    for (int i = 0; i < NP; i++) {
        CHECK_OK(parla_task_submit(P[i]));
        if (i < NP - 1) {
            CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);
            CHECK(parla_runtime_unsubmitted(rt, NULL, 0) == (size_t)(NP - 1 - i), "count after %d", i);
        }
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(W) == PARLA_TASK_DONE, "joiner state");
    for (int i = 0; i < NP; i++)
        parla_task_release(P[i]);
    parla_task_release(W);
    parla_task_release(lonely);
}

static void stuck_with_progress(parla_runtime_t *rt)
{
    check_set_phase("stuck while other work progresses");
    atomic_store(&ran, 0);
    parla_task_t *P = mk(rt, count_body, "missing");
    parla_task_t *W = mk(rt, count_body, "waiter");
    CHECK_OK(parla_task_add_dependency(W, P));
    CHECK_OK(parla_task_submit(W));
    /* A chain of 1 ms tasks: ESTUCK only once it has all run. */
    long n = scaled(200, 50);
    parla_task_t *prev = NULL, *last = NULL;
    for (long i = 0; i < n; i++) {
        parla_task_t *t = mk(rt, slow_body, "slow");
        if (prev) {
            CHECK_OK(parla_task_add_dependency(t, prev));
            parla_task_release(prev);
        }
        CHECK_OK(parla_task_submit(t));
        prev = t;
    }
    last = prev;
    CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);
    CHECK(atomic_load(&ran) == n, "ESTUCK returned while work progressed: %d of %ld ran",
          atomic_load(&ran), n);
    CHECK(parla_task_state(last) == PARLA_TASK_DONE, "last of chain state %s",
          parla_task_state_name(parla_task_state(last)));
    CHECK_OK(parla_task_cancel(P));
    CHECK_OK(parla_runtime_wait_all(rt));
    parla_task_release(last);
    parla_task_release(P);
    parla_task_release(W);

    /* A running task submits the missing one: not stuck. */
    check_set_phase("placeholder submitted by a running task");
    atomic_store(&ran, 0);
    P = mk(rt, count_body, "submitted-by-a-task");
    W = mk(rt, count_body, "waiter2");
    CHECK_OK(parla_task_add_dependency(W, P));
    CHECK_OK(parla_task_submit(W));
    parla_task_t *S;
    CHECK_OK(parla_task_create(rt, submit_later_body, P, &S));
    CHECK_OK(parla_task_submit(S));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(W) == PARLA_TASK_DONE, "waiter2 state %s",
          parla_task_state_name(parla_task_state(W)));
    CHECK(parla_task_state(S) == PARLA_TASK_DONE, "submitter state %s (error %d)",
          parla_task_state_name(parla_task_state(S)), parla_task_error(S));
    parla_task_release(P);
    parla_task_release(W);
    parla_task_release(S);
}

static void busy_destroy(void)
{
    check_set_phase("destroy while busy");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    atomic_store(&gate, 0);
    parla_task_t *g = mk(rt, gate_body, "gate");
    parla_task_t *after = mk(rt, count_body, "after-gate");
    CHECK_OK(parla_task_add_dependency(after, g));
    CHECK_OK(parla_task_submit(after));
    CHECK_OK(parla_task_submit(g));
    parla_task_release(after); /* the engine keeps it alive */
    CHECK_RC(parla_runtime_destroy(rt), PARLA_EBUSY);
    /* Nothing changed: the runtime still works. */
    parla_task_t *x = mk(rt, count_body, "x");
    CHECK_OK(parla_task_submit(x));
    CHECK_OK(parla_task_wait(x));
    parla_task_release(x);
    CHECK_RC(parla_runtime_destroy(rt), PARLA_EBUSY);
    atomic_store(&gate, 1);
    CHECK_OK(parla_task_wait(g));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK_OK(parla_runtime_destroy(rt));
    /* The handle the program kept outlives the runtime. */
    CHECK(parla_task_state(g) == PARLA_TASK_DONE, "gate state after destroy");
    parla_task_release(g);

    /* An unsubmitted task with no submitted dependents does not block
     * destroy; nor does one that was created and released. */
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    parla_task_t *u = mk(rt, count_body, "never");
    parla_task_t *u2 = mk(rt, count_body, "never2");
    parla_task_release(u2);
    CHECK_OK(parla_runtime_destroy(rt));
    parla_task_release(u);
}

static atomic_int finished_hook_calls;

static void on_finished(parla_task_t *task, void *user)
{
    (void)task;
    (void)user;
    atomic_fetch_add(&finished_hook_calls, 1);
}

/* parla_runtime_wait_all_timeout, parla_runtime_cancel_all and the
 * task_finished hook. */
static void timeout_and_cancel_all(void)
{
    check_set_phase("wait_all_timeout / cancel_all");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    cfg.task_finished = on_finished;
    atomic_store(&finished_hook_calls, 0);
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    atomic_store(&gate, 0);
    parla_task_t *g = mk(rt, gate_body, "gate");
    CHECK_OK(parla_task_submit(g));
    CHECK_RC(parla_runtime_wait_all_timeout(rt, -1.0), PARLA_EINVAL);
    double t0 = now_s();
    CHECK_RC(parla_runtime_wait_all_timeout(rt, 0.05), PARLA_ETIMEDOUT);
    double dt = now_s() - t0;
    CHECK(dt >= 0.045 && dt < 1.0, "wait_all_timeout(0.05) returned after %.3f s", dt);

    /* Queued work behind the gate, and work behind a placeholder. */
    atomic_store(&ran, 0);
    parla_task_t *P = mk(rt, count_body, "cancel-all-placeholder");
    parla_task_t *W = mk(rt, count_body, "behind-placeholder");
    parla_task_t *Q = mk(rt, count_body, "behind-gate");
    CHECK_OK(parla_task_add_dependency(W, P));
    CHECK_OK(parla_task_add_dependency(Q, g));
    CHECK_OK(parla_task_submit(W));
    CHECK_OK(parla_task_submit(Q));
    parla_runtime_cancel_all(rt);
    atomic_store(&gate, 1);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(g) == PARLA_TASK_DONE, "running gate state %s (running bodies finish)",
          parla_task_state_name(parla_task_state(g)));
    CHECK(parla_task_state(P) == PARLA_TASK_CANCELLED, "placeholder state %s",
          parla_task_state_name(parla_task_state(P)));
    CHECK(parla_task_state(W) == PARLA_TASK_CANCELLED, "W state %s",
          parla_task_state_name(parla_task_state(W)));
    CHECK(parla_task_state(Q) == PARLA_TASK_CANCELLED, "Q state %s",
          parla_task_state_name(parla_task_state(Q)));
    CHECK(atomic_load(&ran) == 0, "%d bodies ran after cancel_all", atomic_load(&ran));
    /* Submitted afterwards: cancelled too. */
    parla_task_t *late = mk(rt, count_body, "after-cancel-all");
    CHECK_OK(parla_task_submit(late));
    CHECK_RC(parla_task_wait(late), PARLA_ECANCELLED);
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&ran) == 0, "a task submitted after cancel_all ran");
    CHECK_OK(parla_runtime_destroy(rt));
    /* g, P, W, Q, late each finished once. */
    CHECK(atomic_load(&finished_hook_calls) == 5, "task_finished called %d times, expected 5",
          atomic_load(&finished_hook_calls));
    parla_task_t *rel[] = {g, P, W, Q, late};
    for (size_t i = 0; i < 5; i++)
        parla_task_release(rel[i]);
}

/* Kept reachable so that a runtime that can never be destroyed (the cycle
 * below) is not reported as a leak. */
static parla_runtime_t *cycle_rt;
static parla_task_t *cycle_tasks[2];

static void cycle(void)
{
    check_set_phase("cycle");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    CHECK_OK(parla_runtime_create(&cfg, &cycle_rt));
    parla_task_t *A = mk(cycle_rt, count_body, "cyc-A");
    parla_task_t *B = mk(cycle_rt, count_body, "cyc-B");
    cycle_tasks[0] = A;
    cycle_tasks[1] = B;
    CHECK_OK(parla_task_add_dependency(B, A));
    int rc = parla_task_add_dependency(A, B);
    CHECK(rc == 0 || rc == PARLA_EINVAL, "closing a cycle returned %d (%s)", rc, parla_strerror(rc));
    if (rc == PARLA_EINVAL) {
        printf("cycle: refused by add_dependency (EINVAL): %s\n", parla_last_error_message());
        CHECK_OK(parla_task_submit(A));
        CHECK_OK(parla_task_submit(B));
        CHECK_OK(parla_runtime_wait_all(cycle_rt));
        return;
    }
    CHECK_OK(parla_task_submit(A));
    CHECK_OK(parla_task_submit(B));
    double t0 = now_s();
    rc = parla_runtime_wait_all(cycle_rt);
    double dt = now_s() - t0;
    CHECK_RC(rc, PARLA_ESTUCK);
    CHECK(dt < 1.0, "cycle: wait_all took %.3f s", dt);
    printf("cycle: ESTUCK in %.1f ms: %s\n", dt * 1e3, parla_last_error_message());
    CHECK_RC(parla_task_wait(A), PARLA_ESTUCK);
    CHECK_RC(parla_runtime_destroy(cycle_rt), PARLA_EBUSY);
}

/* parla_runtime_cancel_stuck resolves a cycle: the task named finishes as
 * cancelled, the rest of the cycle and what depends on it are cancelled with
 * it as the cause, each finishes exactly once (the hook counts), and destroy
 * then succeeds. It refuses a runtime that is not stuck, and one stuck on a
 * never-submitted task, which stays resolvable by cancelling that task. */
static void cancel_stuck_cycle(void)
{
    check_set_phase("cancel_stuck");
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    cfg.task_finished = on_finished;
    atomic_store(&finished_hook_calls, 0);
    atomic_store(&ran, 0);
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    CHECK_RC(parla_runtime_cancel_stuck(NULL, NULL, 0), PARLA_EINVAL);
    CHECK_RC(parla_runtime_cancel_stuck(rt, NULL, 1), PARLA_EINVAL);
    CHECK_RC(parla_runtime_cancel_stuck(rt, NULL, 0), PARLA_ESTATE); /* nothing pending */

    /* Stuck on a never-submitted task: refused, and cancelling it still works. */
    parla_task_t *P = mk(rt, count_body, "cs-missing");
    parla_task_t *W = mk(rt, count_body, "cs-waiter");
    CHECK_OK(parla_task_add_dependency(W, P));
    CHECK_OK(parla_task_submit(W));
    CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);
    CHECK_RC(parla_runtime_cancel_stuck(rt, &W, 1), PARLA_ESTATE);
    CHECK(strstr(parla_last_error_message(), "never-submitted") != NULL, "message: %s", parla_last_error_message());
    CHECK(parla_task_state(W) == PARLA_TASK_SUBMITTED, "W is %s", parla_task_state_name(parla_task_state(W)));
    CHECK_OK(parla_task_cancel(P));
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(parla_task_state(W) == PARLA_TASK_CANCELLED && parla_task_cause(W) == P, "W is %s",
          parla_task_state_name(parla_task_state(W)));
    CHECK(atomic_load(&finished_hook_calls) == 2, "hook called %d times", atomic_load(&finished_hook_calls));

    /* A <-> B, C after A, D independent. */
    parla_task_t *A = mk(rt, count_body, "cs-A");
    parla_task_t *B = mk(rt, count_body, "cs-B");
    parla_task_t *C = mk(rt, count_body, "cs-C");
    parla_task_t *D = mk(rt, count_body, "cs-D");
    CHECK_OK(parla_task_add_dependency(B, A));
    CHECK_OK(parla_task_add_dependency(A, B));
    CHECK_OK(parla_task_add_dependency(C, A));
    parla_task_t *all[] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        CHECK_OK(parla_task_submit(all[i]));
    CHECK_RC(parla_runtime_wait_all(rt), PARLA_ESTUCK);
    CHECK(atomic_load(&ran) == 1, "%d bodies ran, expected 1 (D)", atomic_load(&ran));
    CHECK_RC(parla_runtime_destroy(rt), PARLA_EBUSY);
    /* Naming B, A and C: B finishes itself, A and C are reached through B. */
    parla_task_t *named[] = {B, A, C, D};
    int n = parla_runtime_cancel_stuck(rt, named, 4);
    CHECK(n == 1, "cancel_stuck finished %d tasks itself, expected 1 (%s)", n, parla_last_error_message());
    CHECK_OK(parla_runtime_wait_all(rt));
    for (int i = 0; i < 3; i++) {
        CHECK(parla_task_state(all[i]) == PARLA_TASK_CANCELLED, "%s is %s", parla_task_name(all[i]),
              parla_task_state_name(parla_task_state(all[i])));
        CHECK(parla_task_error(all[i]) == PARLA_ECANCELLED, "%s error %d", parla_task_name(all[i]),
              parla_task_error(all[i]));
    }
    CHECK(parla_task_cause(B) == NULL, "the root has a cause: %s", parla_task_name(parla_task_cause(B)));
    CHECK(parla_task_cause(A) == B, "A's cause is %p", (void *)parla_task_cause(A));
    CHECK(parla_task_cause(C) == B, "C's cause is %p", (void *)parla_task_cause(C));
    CHECK(parla_task_state(D) == PARLA_TASK_DONE, "D is %s", parla_task_state_name(parla_task_state(D)));
    CHECK(atomic_load(&ran) == 1, "%d bodies ran, expected 1", atomic_load(&ran));
    /* W, P, A, B, C, D: each finished exactly once. */
    CHECK(atomic_load(&finished_hook_calls) == 6, "hook called %d times, expected 6",
          atomic_load(&finished_hook_calls));
    parla_runtime_stats_t st;
    parla_runtime_stats(rt, &st);
    CHECK(st.tasks_cancelled == 5, "%llu tasks cancelled, expected 5", (unsigned long long)st.tasks_cancelled);
    CHECK_RC(parla_runtime_cancel_stuck(rt, named, 4), PARLA_ESTATE); /* nothing pending any more */
    CHECK_OK(parla_runtime_destroy(rt));
    parla_task_t *rel[] = {P, W, A, B, C, D};
    for (int i = 0; i < 6; i++)
        parla_task_release(rel[i]);

    /* The cycle kept stuck above is resolved too: both named, one finishes. */
    if (parla_task_state(cycle_tasks[0]) == PARLA_TASK_SUBMITTED) { /* the engine accepted the cycle */
        CHECK_RC(parla_runtime_cancel_stuck(cycle_rt, cycle_tasks, 2), 1);
        CHECK_OK(parla_runtime_wait_all(cycle_rt));
        CHECK_OK(parla_runtime_destroy(cycle_rt));
        CHECK(parla_task_state(cycle_tasks[1]) == PARLA_TASK_CANCELLED && parla_task_cause(cycle_tasks[1]) ==
                  cycle_tasks[0], "cyc-B is %s", parla_task_state_name(parla_task_state(cycle_tasks[1])));
        for (int i = 0; i < 2; i++)
            parla_task_release(cycle_tasks[i]);
    }
}

/* Waits from another thread while tasks are being submitted: a submit counts
 * its task as active before it hands it to the scheduler, and a stuck check
 * made in between saw every worker asleep, nothing queued and a task active,
 * and reported a stuck runtime (wait_all returned PARLA_ESTUCK with "1
 * submitted task can never run"). */
typedef struct {
    parla_runtime_t *rt;
    long n;
    atomic_int done;
} submitter_t;

static void *submit_many(void *arg)
{
    submitter_t *s = arg;
    for (long i = 0; i < s->n; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(s->rt, count_body, NULL, &t));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
        if (i % 16 == 0)
            usleep(100); /* let the workers go idle: the next submit finds them parked */
    }
    atomic_store(&s->done, 1);
    return NULL;
}

static void waits_during_submits(void)
{
    for (int w = 1; w <= 2; w++) {
        parla_config_t cfg;
        parla_config_init(&cfg);
        cfg.n_workers = w;
        parla_runtime_t *rt;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        atomic_store(&ran, 0);
        submitter_t s = {.rt = rt, .n = scaled(20000, 2000)};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, submit_many, &s) == 0, "pthread_create");
        long waits = 0;
        while (!atomic_load(&s.done)) {
            int rc = parla_runtime_wait_all_timeout(rt, 30.0);
            CHECK(rc == 0, "wait_all during submits (%d workers, wait %ld, %d tasks ran): %s", w, waits,
                  atomic_load(&ran), parla_last_error_message());
            waits++;
        }
        CHECK(pthread_join(th, NULL) == 0, "pthread_join");
        CHECK_OK(parla_runtime_wait_all(rt));
        CHECK(atomic_load(&ran) == s.n, "%d of %ld tasks ran", atomic_load(&ran), s.n);
        CHECK_OK(parla_runtime_destroy(rt));
    }
}

int main(void)
{
    check_watchdog(50);
    parla_config_t cfg;
    parla_config_init(&cfg);
    for (int w = 1; w <= 2; w++) {
        cfg.n_workers = w;
        parla_runtime_t *rt;
        CHECK_OK(parla_runtime_create(&cfg, &rt));
        basic_stuck(rt, 0);
        basic_stuck(rt, 1);
        multi_placeholders(rt);
        stuck_with_progress(rt);
        CHECK_OK(parla_runtime_destroy(rt));
    }
    busy_destroy();
    timeout_and_cancel_all();
    cycle();
    cancel_stuck_cycle();
    waits_during_submits();
    printf("test_stuck: ok\n");
    return 0;
}
