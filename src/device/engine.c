/* engine.c: the engine of a device: a thread that runs jobs (parla__dev_job_t) in
 * order, so that copies into and out of a GPU and the completion of the work
 * of runahead tasks proceed while workers run other tasks. It knows neither
 * tasks nor data: each job brings its operations (issue, poll, done). It
 * learns that device work finished from completion callbacks (host functions
 * queued after each recorded event), not by polling. */
#include "device/device.h"

#include <time.h>

/* How long an engine waits for a completion callback before it polls anyway: only a safety net for
 * device errors, after which the driver calls no host function (completions come by callback). */
#define SAFETY_NS 100000000L

/* The host function of a completion callback (on a driver thread, no driver call): wakes every
 * running engine of the runtime. */
static void wake_engines(void *arg)
{
    parla__dev_shared_t *sh = arg;
    pthread_mutex_lock(&sh->wake_lock);
    for (int i = 0; i < sh->n_devices; i++) {
        parla__dev_t *g = &sh->devices[i];
        if (!g->engine_wakes)
            continue;
        pthread_mutex_lock(&g->engine_lock);
        g->wakes++;
        pthread_cond_signal(&g->engine_cond);
        pthread_mutex_unlock(&g->engine_lock);
    }
    if (--sh->wake_pending == 0)
        pthread_cond_broadcast(&sh->wake_cond);
    pthread_mutex_unlock(&sh->wake_lock);
}

void parla__dev_engine_watch(parla__dev_t *d, void *stream)
{
    parla__dev_shared_t *sh = d->shared;
    if (sh == NULL)
        return;
    if (d->ops->launch_host_func == NULL) {
        atomic_store(&sh->polling, true);
        return;
    }
    pthread_mutex_lock(&sh->wake_lock);
    sh->wake_pending++;
    pthread_mutex_unlock(&sh->wake_lock);
    if (d->ops->launch_host_func(d, stream, wake_engines, sh) == 0)
        return;
    atomic_store(&sh->polling, true); /* the events still complete: the engines poll them */
    pthread_mutex_lock(&sh->wake_lock);
    if (--sh->wake_pending == 0)
        pthread_cond_broadcast(&sh->wake_cond);
    pthread_mutex_unlock(&sh->wake_lock);
}

void parla__dev_engine_callbacks_drain(parla__dev_shared_t *sh)
{
    pthread_mutex_lock(&sh->wake_lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += atomic_load(&sh->errored) ? 0 : 2;
    until.tv_nsec += 50000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (sh->wake_pending > 0 && pthread_cond_timedwait(&sh->wake_cond, &sh->wake_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&sh->wake_lock);
}

static void deadline_in(struct timespec *until, long ns)
{
    clock_gettime(CLOCK_REALTIME, until);
    until->tv_nsec += ns;
    while (until->tv_nsec >= 1000000000L) {
        until->tv_sec++;
        until->tv_nsec -= 1000000000L;
    }
}

/* With jobs in flight and none queued (engine lock held): waits until a completion callback came
 * since `seen`, a job is queued or the engine stops; after a safety timeout, or where callbacks
 * cannot be launched (then backing off from 2 us to 0.5 ms), it returns anyway to poll. */
static void wait_for_completion(parla__dev_t *d, uint64_t seen, long *pause_ns)
{
    struct timespec until;
    if (d->shared == NULL || atomic_load_explicit(&d->shared->polling, memory_order_relaxed)) {
        deadline_in(&until, *pause_ns);
        pthread_cond_timedwait(&d->engine_cond, &d->engine_lock, &until);
        return;
    }
    deadline_in(&until, SAFETY_NS);
    while (d->wakes == seen && d->jobs_head == NULL) {
        if (pthread_cond_timedwait(&d->engine_cond, &d->engine_lock, &until) != 0) {
            atomic_fetch_add_explicit(&d->shared->timed_out, 1, memory_order_relaxed);
            return;
        }
    }
    if (d->wakes != seen)
        atomic_fetch_add_explicit(&d->shared->woken, 1, memory_order_relaxed);
}

/* Takes jobs in order, issues them, and completes them when their work is
 * done. On a CUDA GPU a job's work runs on the device meanwhile: the engine
 * sleeps until a completion callback (a host function after each recorded
 * event, parla__dev_engine_watch) wakes it, then checks the jobs in flight. No
 * worker waits. */
static void *engine_main(void *arg)
{
    parla__dev_t *d = arg;
    parla__dev_job_t *inflight = NULL;
    long pause_ns = 2000;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&d->engine_lock);
        while (d->jobs_head == NULL && !d->engine_stop && inflight == NULL)
            pthread_cond_wait(&d->engine_cond, &d->engine_lock);
        if (d->jobs_head == NULL && inflight != NULL)
            wait_for_completion(d, seen, &pause_ns);
        seen = d->wakes; /* a completion after this point wakes the next wait */
        parla__dev_job_t *j = d->jobs_head;
        if (j == NULL && inflight == NULL && d->engine_stop) { /* stopping, and nothing is left */
            pthread_mutex_unlock(&d->engine_lock);
            return NULL;
        }
        if (j) {
            d->jobs_head = j->next;
            if (d->jobs_head == NULL)
                d->jobs_tail = NULL;
        }
        d->engine_busy = true;
        pthread_mutex_unlock(&d->engine_lock);
        bool progress = false;
        if (j) {
            progress = true;
            if (j->ops->issue == NULL || j->ops->issue(j, d)) {
                j->ops->done(j, false);
                atomic_fetch_sub(&d->n_jobs, 1);
            } else {
                j->next = inflight;
                inflight = j;
            }
        }
        for (parla__dev_job_t **p = &inflight; *p;) {
            parla__dev_job_t *x = *p;
            if (x->ops->poll(x)) {
                *p = x->next;
                x->ops->done(x, true);
                atomic_fetch_sub(&d->n_jobs, 1);
                progress = true;
            } else {
                p = &x->next;
            }
        }
        pause_ns = progress ? 2000 : pause_ns < 500000 ? pause_ns * 2 : 500000;
        pthread_mutex_lock(&d->engine_lock);
        d->engine_busy = inflight != NULL;
        pthread_mutex_unlock(&d->engine_lock);
    }
}

/* Frees what parla__dev_engine_start made besides the thread. */
static void engine_teardown(parla__dev_t *d)
{
    if (d->copy_in)
        d->ops->stream_destroy(d, d->copy_in);
    if (d->copy_out)
        d->ops->stream_destroy(d, d->copy_out);
    d->copy_in = d->copy_out = NULL;
    pthread_mutex_destroy(&d->engine_lock);
    pthread_cond_destroy(&d->engine_cond);
}

int parla__dev_engine_start(parla__dev_t *d)
{
    pthread_mutex_init(&d->engine_lock, NULL);
    pthread_cond_init(&d->engine_cond, NULL);
    d->jobs_head = d->jobs_tail = NULL;
    d->engine_stop = false;
    atomic_init(&d->n_jobs, 0);
    int rc = 0;
    if (parla__dev_async(d) && (rc = d->ops->stream_create(d, &d->copy_in)) == 0)
        rc = d->ops->stream_create(d, &d->copy_out);
    if (rc == 0 && pthread_create(&d->engine, NULL, engine_main, d) != 0)
        rc = parla__error(PARLA_ESYS, "cannot start the copy engine of %s", d->name);
    if (rc) {
        engine_teardown(d);
        return rc;
    }
    d->engine_running = true;
    if (d->shared) {
        pthread_mutex_lock(&d->shared->wake_lock);
        d->engine_wakes = true;
        pthread_mutex_unlock(&d->shared->wake_lock);
    }
    return 0;
}

void parla__dev_engine_stop(parla__dev_t *d)
{
    if (!d->engine_running)
        return;
    pthread_mutex_lock(&d->engine_lock);
    d->engine_stop = true;
    pthread_cond_signal(&d->engine_cond);
    pthread_mutex_unlock(&d->engine_lock);
    pthread_join(d->engine, NULL);
    d->engine_running = false;
    if (d->shared) { /* callbacks from now on leave this engine alone */
        pthread_mutex_lock(&d->shared->wake_lock);
        d->engine_wakes = false;
        pthread_mutex_unlock(&d->shared->wake_lock);
    }
    engine_teardown(d);
}

void parla__dev_engine_submit(parla__dev_t *d, parla__dev_job_t *j)
{
    /* Counted until done, so the runtime is not taken for stuck while every
     * worker sleeps and copies are under way. */
    atomic_fetch_add(&d->n_jobs, 1);
    j->next = NULL;
    pthread_mutex_lock(&d->engine_lock);
    if (d->jobs_tail)
        d->jobs_tail->next = j;
    else
        d->jobs_head = j;
    d->jobs_tail = j;
    pthread_cond_signal(&d->engine_cond);
    pthread_mutex_unlock(&d->engine_lock);
}

bool parla__dev_engine_idle(parla__dev_t *d)
{
    pthread_mutex_lock(&d->engine_lock);
    bool idle = d->jobs_head == NULL && !d->engine_busy;
    pthread_mutex_unlock(&d->engine_lock);
    return idle;
}
