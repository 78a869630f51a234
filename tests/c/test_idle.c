/*
 * test_idle: an idle runtime uses no CPU. Two workers, idle for 300 ms right
 * after creation and again after a burst of work: the process CPU time
 * (CLOCK_PROCESS_CPUTIME_ID, all threads) must grow by less than 30 ms.
 */
#include <stdatomic.h>

#include "check.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static atomic_long runs;

static int body(parla_task_t *task, void *arg)
{
    (void)task;
    (void)arg;
    atomic_fetch_add(&runs, 1);
    return 0;
}

static void measure_idle(const char *what)
{
    check_set_phase(what);
    sleep_ms(50); /* let the workers finish spinning and park */
    double c0 = cpu_s(), w0 = now_s();
    sleep_ms(300);
    double dc = cpu_s() - c0, dw = now_s() - w0;
    printf("%s: %.2f ms CPU in %.0f ms\n", what, dc * 1e3, dw * 1e3);
    CHECK(dc < 0.030, "%s: idle runtime used %.2f ms of CPU in %.0f ms (limit 30 ms)", what,
          dc * 1e3, dw * 1e3);
}

int main(void)
{
    check_watchdog(30);
    parla_config_t cfg;
    parla_config_init(&cfg);
    cfg.n_workers = 2;
    parla_runtime_t *rt;
    CHECK_OK(parla_runtime_create(&cfg, &rt));
    measure_idle("idle after create");

    long n = scaled(100000, 5000);
    for (long i = 0; i < n; i++) {
        parla_task_t *t;
        CHECK_OK(parla_task_create(rt, body, NULL, &t));
        CHECK_OK(parla_task_submit(t));
        parla_task_release(t);
    }
    CHECK_OK(parla_runtime_wait_all(rt));
    CHECK(atomic_load(&runs) == n, "runs %ld", atomic_load(&runs));
    measure_idle("idle after a burst");

    /* A task blocked on a never-submitted dependency must not keep workers
     * busy either. */
    parla_task_t *p, *w;
    CHECK_OK(parla_task_create(rt, body, NULL, &p));
    CHECK_OK(parla_task_create(rt, body, NULL, &w));
    CHECK_OK(parla_task_add_dependency(w, p));
    CHECK_OK(parla_task_submit(w));
    measure_idle("idle with a pending task");
    CHECK_OK(parla_task_submit(p));
    CHECK_OK(parla_runtime_wait_all(rt));

    parla_runtime_stats_t st;
    parla_runtime_stats(rt, &st);
    CHECK(st.parks > 0, "workers never parked (parks = %llu)", (unsigned long long)st.parks);
    CHECK_OK(parla_runtime_destroy(rt));
    parla_task_release(p);
    parla_task_release(w);
    printf("test_idle: ok\n");
    return 0;
}
