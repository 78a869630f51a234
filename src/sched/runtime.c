/* runtime.c: the runtime object: creation, configuration, destruction and
 * statistics. */
#include "sched/sched.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>


void parla_config_init(parla_config_t *c)
{
    memset(c, 0, sizeof *c);
}

int parla_runtime_num_workers(const parla_runtime_t *rt)
{
    return rt ? rt->n_workers : 0;
}

int parla_runtime_forked(const parla_runtime_t *rt)
{
    return rt != NULL && parla__rt_head(rt)->pid != (int)getpid();
}

/* -------------------------------------------------------- create/destroy -- */

/* Reads two integers from a file ("max 100000" reads as -1 100000); the
 * number read. */
static int read_two(const char *path, long *a, long *b)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char first[32] = "";
    int k = fscanf(f, "%31s %ld", first, b);
    fclose(f);
    if (k < 1)
        return 0;
    *a = strcmp(first, "max") == 0 ? -1 : strtol(first, NULL, 10);
    return k;
}

/* The CPU limit of this process's cgroup (quota / period, rounded up), or 0
 * when there is none. cgroup v2 (cpu.max) first, then v1 (cfs quota). */
static long cgroup_cpu_limit(void)
{
    long quota = 0, period = 0;
    if (read_two("/sys/fs/cgroup/cpu.max", &quota, &period) == 2) {
        /* found */
    } else {
        long dummy;
        if (read_two("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", &quota, &dummy) < 1 ||
            read_two("/sys/fs/cgroup/cpu/cpu.cfs_period_us", &period, &dummy) < 1)
            return 0;
    }
    if (quota <= 0 || period <= 0)
        return 0;
    return (quota + period - 1) / period;
}

static int default_workers(int *out)
{
    const char *env = getenv("PARLA_NUM_THREADS");
    if (env && *env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || v <= 0 || v > PARLA_MAX_WORKERS)
            return parla__error(PARLA_EINVAL, "PARLA_NUM_THREADS=\"%s\" is not a positive integer (at most %d)", env,
                                PARLA_MAX_WORKERS);
        *out = (int)v;
        return 0;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set); /* taskset, cpusets */
    long limit = cgroup_cpu_limit();
    if (limit > 0 && limit < n)
        n = limit;
    if (n > PARLA_MAX_WORKERS)
        n = PARLA_MAX_WORKERS;
    *out = n > 0 ? (int)n : 1;
    return 0;
}

static void free_runtime(parla_runtime_t *rt)
{
    parla__graph_task_pool_free(rt);
    /* The workers' streams first (their work is complete: every task finished). */
    for (int k = 0; k < rt->n_workers && rt->workers; k++) {
        parla__sched_worker_t *w = &rt->workers[k];
        for (int i = 0; w->streams && i < parla__dev_devs(rt)->n_devices; i++) {
            parla__dev_t *d = &parla__dev_devs(rt)->devices[i];
            if (w->streams[i])
                d->ops->stream_destroy(d, w->streams[i]);
        }
        parla__free(w->streams);
        w->streams = NULL;
    }
    if (parla__dev_devs(rt)->devices)
        parla__dev_devices_destroy(rt);
    parla__trace_destroy(parla__graph_rt(rt)->trace);
    parla__trace_busy_destroy(atomic_load(&rt->busy));
    pthread_mutex_destroy(&rt->park_lock);
    pthread_cond_destroy(&rt->park_cond);
    pthread_mutex_destroy(&rt->wait_lock);
    pthread_cond_destroy(&rt->wait_cond);
    pthread_mutex_destroy(&parla__graph_rt(rt)->placeholder_lock);
    pthread_mutex_destroy(&parla__data_rt(rt)->stores_lock);
    parla__free(parla__graph_rt(rt)->placeholders);
    parla__free(rt->workers);
    parla__free(rt);
}

static void stop_workers(parla_runtime_t *rt, int started)
{
    pthread_mutex_lock(&rt->park_lock);
    atomic_store(&rt->stop, true);
    pthread_cond_broadcast(&rt->park_cond);
    pthread_mutex_unlock(&rt->park_lock);
    for (int i = 0; i < started; i++)
        pthread_join(rt->workers[i].thread, NULL);
}

int parla_runtime_create(const parla_config_t *config, parla_runtime_t **out)
{
    if (out == NULL)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: out is NULL");
    *out = NULL;
    parla_config_t cfg;
    if (config)
        cfg = *config;
    else
        parla_config_init(&cfg);
    if (cfg.n_workers < 0)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: n_workers=%d is negative", cfg.n_workers);
    if (cfg.n_workers > PARLA_MAX_WORKERS)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: n_workers=%d is more than the limit of %d",
                            cfg.n_workers, PARLA_MAX_WORKERS);
    if (cfg.n_virtual_gpus < 0)
        return parla__error(PARLA_EINVAL, "parla_runtime_create: n_virtual_gpus=%d is negative", cfg.n_virtual_gpus);
    if (!(cfg.virtual_gpu_bandwidth >= 0) || cfg.virtual_gpu_bandwidth > 1e300)
        return parla__error(PARLA_EINVAL,
                            "parla_runtime_create: virtual_gpu_bandwidth=%g is not a finite number of bytes/s >= 0",
                            cfg.virtual_gpu_bandwidth);
    if (cfg.n_workers == 0) {
        int rc = default_workers(&cfg.n_workers);
        if (rc)
            return rc;
    }
    if (cfg.cpu_memory == 0) {
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        cfg.cpu_memory = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : (uint64_t)1 << 34;
    }
    /* The runtime is allocation number 1 for fault injection. */
    if (cfg.fail_alloc_at == 1)
        return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate the runtime");
    parla_runtime_t *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate the runtime");
    rt->config = cfg;
    parla__rt_head(rt)->pid = (int)getpid();
    parla__graph_rt(rt)->ghooks = (parla__graph_hooks_t){.ready = parla__sched_task_ready, .finished = parla__sched_task_finished,
                                        .dispose = parla__data_task_dispose, .last_object = free_runtime,
                                        .feasible = parla__sched_task_feasible, .recheck = parla__sched_submits_settled};
    parla__data_rt(rt)->dhooks = (parla__data_hooks_t){.arrived = parla__sched_task_arrived, .unpinned = parla__sched_tasks_unpinned,
                                       .retry = parla__sched_engine_retry};
    parla__rt_head(rt)->fail_at = cfg.fail_alloc_at;
    atomic_init(&parla__rt_head(rt)->count, 1);
    rt->n_workers = cfg.n_workers;
    atomic_init(&parla__graph_rt(rt)->n_live, 1); /* the runtime's own count, dropped by destroy */
    pthread_mutex_init(&rt->park_lock, NULL);
    pthread_cond_init(&rt->park_cond, NULL);
    pthread_mutex_init(&rt->wait_lock, NULL);
    pthread_cond_init(&rt->wait_cond, NULL);
    pthread_mutex_init(&parla__graph_rt(rt)->placeholder_lock, NULL);
    pthread_mutex_init(&parla__data_rt(rt)->stores_lock, NULL);
    for (int l = 0; l < PARLA__LEVELS; l++)
        parla__sched_queue_init(&rt->shared[l], &rt->n_queued);
    int drc = parla__dev_devices_init(rt, &rt->config);
    if (drc == 0 && cfg.trace && (parla__graph_rt(rt)->trace = parla__trace_create(rt, rt->n_workers)) == NULL)
        drc = parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate trace buffers");
    if (drc) {
        rt->n_workers = 0;
        free_runtime(rt);
        return drc;
    }
    rt->workers = parla__calloc(rt, (size_t)rt->n_workers, sizeof *rt->workers);
    if (rt->workers == NULL) {
        rt->n_workers = 0;
        free_runtime(rt);
        return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate %d workers", cfg.n_workers);
    }
    bool async = false;
    for (int d = 0; d < parla__dev_devs(rt)->n_devices; d++)
        async |= parla__dev_async(&parla__dev_devs(rt)->devices[d]);
    for (int i = 0; i < rt->n_workers; i++) {
        parla__sched_worker_t *w = &rt->workers[i];
        if (async && (w->streams = parla__calloc(rt, (size_t)parla__dev_devs(rt)->n_devices, sizeof *w->streams)) == NULL) {
            rt->n_workers = i;
            free_runtime(rt);
            return parla__error(PARLA_ENOMEM, "parla_runtime_create: cannot allocate the streams of worker %d", i);
        }
        w->rt = rt;
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        for (int l = 0; l < PARLA__LEVELS; l++)
            parla__sched_queue_init(&w->deque[l], &rt->n_queued);
    }
    for (int i = 0; i < rt->n_workers; i++) {
        if (pthread_create(&rt->workers[i].thread, NULL, parla__sched_worker_main, &rt->workers[i]) != 0) {
            stop_workers(rt, i);
            free_runtime(rt);
            return parla__error(PARLA_ESYS, "parla_runtime_create: cannot start worker thread %d", i);
        }
    }
    *out = rt;
    return 0;
}

int parla_runtime_destroy(parla_runtime_t *rt)
{
    if (rt == NULL)
        return 0;
    if (parla__sched_tls_worker && parla__sched_tls_worker->rt == rt)
        return parla__error(PARLA_ESTATE, "parla_runtime_destroy: called from task %s",
                            parla_task_name(parla__sched_tls_worker->current));
    int forked = parla__check_process(rt, "parla_runtime_destroy");
    if (forked)
        return forked;
    /* The runtime's memory lives while task handles or data objects do, so a
     * second destroy reaches it: refuse it (it would drop the runtime's own
     * reference twice and free it under those handles). */
    if (atomic_load(&parla__graph_rt(rt)->destroyed))
        return parla__error(PARLA_ESTATE, "parla_runtime_destroy: the runtime was already destroyed");
    bool open = false;
    if (!atomic_compare_exchange_strong(&parla__graph_rt(rt)->closing, &open, true)) /* from now on submit refuses */
        return parla__error(PARLA_ESTATE, "parla_runtime_destroy: another thread is destroying the runtime");
    /* A task is reported finished (its state) a moment before the engine's
     * bookkeeping for it ends; wait that moment out, briefly. */
    long active = atomic_load(&parla__graph_rt(rt)->n_active); /* submits under way included */
    for (int spin = 0; active > 0 && spin < 100000; spin++) {
        bool finishing = atomic_load(&parla__graph_rt(rt)->n_finishing_other) > 0;
        for (int i = 0; i < rt->n_workers && !finishing; i++)
            finishing = atomic_load(&rt->workers[i].finishing) > 0;
        if (!finishing)
            break;
        sched_yield();
        active = atomic_load(&parla__graph_rt(rt)->n_active);
    }
    if (active > 0) {
        atomic_store(&parla__graph_rt(rt)->closing, false);
        active %= PARLA__SUBMITTING;
        active += active == 0; /* only a submit being undone */
        return parla__error(PARLA_EBUSY, "parla_runtime_destroy: %ld submitted task%s not finished", active,
                            active == 1 ? " has" : "s have");
    }
    stop_workers(rt, rt->n_workers);
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++)
        parla__dev_engine_stop(&parla__dev_devs(rt)->devices[i]); /* nothing is queued: no task is live */
    atomic_store(&parla__graph_rt(rt)->destroyed, true);
    parla__data_forget_history(rt);
    /* Never-submitted tasks recorded as placeholders: drop the registry's references. */
    pthread_mutex_lock(&parla__graph_rt(rt)->placeholder_lock);
    size_t n = parla__graph_rt(rt)->n_placeholders;
    parla_task_t **list = parla__graph_rt(rt)->placeholders;
    parla__graph_rt(rt)->placeholders = NULL;
    parla__graph_rt(rt)->n_placeholders = parla__graph_rt(rt)->cap_placeholders = 0;
    for (size_t i = 0; i < n; i++)
        atomic_fetch_and(&list[i]->flags, ~PARLA__F_LISTED);
    pthread_mutex_unlock(&parla__graph_rt(rt)->placeholder_lock);
    for (size_t i = 0; i < n; i++)
        parla_task_release(list[i]);
    parla__free(list);
    parla__graph_object_freed(rt); /* the runtime's own count */
    return 0;
}

void parla_runtime_stats(parla_runtime_t *rt, parla_runtime_stats_t *out)
{
    if (out == NULL)
        return;
    if (rt == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    memset(out, 0, sizeof *out);
    out->tasks_created = atomic_load(&parla__graph_rt(rt)->serial);
    out->tasks_failed = atomic_load(&parla__graph_rt(rt)->n_failed);
    out->tasks_cancelled = atomic_load(&parla__graph_rt(rt)->n_cancelled);
    for (int i = 0; i < rt->n_workers; i++) {
        out->tasks_run += atomic_load(&rt->workers[i].n_run);
        out->steals += atomic_load(&rt->workers[i].n_steals);
        out->parks += atomic_load(&rt->workers[i].n_parks);
    }
}
