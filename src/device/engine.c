/* engine.c: the engine of a device: a thread that runs jobs (parla__job_t) in
 * order, so that copies into and out of a GPU and the completion of the work
 * of runahead tasks proceed while workers run other tasks. It knows neither
 * tasks nor data: each job brings its operations (issue, poll, done). */
#include "device/device.h"

#include <time.h>

/* Takes jobs in order, issues them, and completes them when their work is
 * done. On a CUDA GPU a job's work runs on the device meanwhile: the engine
 * polls the jobs in flight, backing off from 2 us to 0.5 ms while none
 * completes (no worker waits). */
static void *engine_main(void *arg)
{
    parla__device_t *d = arg;
    parla__job_t *inflight = NULL;
    long pause_ns = 2000;
    for (;;) {
        pthread_mutex_lock(&d->engine_lock);
        while (d->jobs_head == NULL && !d->engine_stop && inflight == NULL)
            pthread_cond_wait(&d->engine_cond, &d->engine_lock);
        if (d->jobs_head == NULL && inflight != NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += pause_ns;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&d->engine_cond, &d->engine_lock, &until);
        }
        parla__job_t *j = d->jobs_head;
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
            if (j->ops->issue(j, d)) {
                j->ops->done(j, false);
                atomic_fetch_sub(&d->n_jobs, 1);
            } else {
                j->next = inflight;
                inflight = j;
            }
        }
        for (parla__job_t **p = &inflight; *p;) {
            parla__job_t *x = *p;
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

/* Frees what parla__engine_start made besides the thread. */
static void engine_teardown(parla__device_t *d)
{
    if (d->copy_in)
        d->ops->stream_destroy(d, d->copy_in);
    if (d->copy_out)
        d->ops->stream_destroy(d, d->copy_out);
    d->copy_in = d->copy_out = NULL;
    pthread_mutex_destroy(&d->engine_lock);
    pthread_cond_destroy(&d->engine_cond);
}

int parla__engine_start(parla__device_t *d)
{
    pthread_mutex_init(&d->engine_lock, NULL);
    pthread_cond_init(&d->engine_cond, NULL);
    d->jobs_head = d->jobs_tail = NULL;
    d->engine_stop = false;
    atomic_init(&d->n_jobs, 0);
    int rc = 0;
    if (parla__device_async(d) && (rc = d->ops->stream_create(d, &d->copy_in)) == 0)
        rc = d->ops->stream_create(d, &d->copy_out);
    if (rc == 0 && pthread_create(&d->engine, NULL, engine_main, d) != 0)
        rc = parla__error(PARLA_ESYS, "cannot start the copy engine of %s", d->name);
    if (rc) {
        engine_teardown(d);
        return rc;
    }
    d->engine_running = true;
    return 0;
}

void parla__engine_stop(parla__device_t *d)
{
    if (!d->engine_running)
        return;
    pthread_mutex_lock(&d->engine_lock);
    d->engine_stop = true;
    pthread_cond_signal(&d->engine_cond);
    pthread_mutex_unlock(&d->engine_lock);
    pthread_join(d->engine, NULL);
    d->engine_running = false;
    engine_teardown(d);
}

void parla__engine_submit(parla__device_t *d, parla__job_t *j)
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

bool parla__engine_idle(parla__device_t *d)
{
    pthread_mutex_lock(&d->engine_lock);
    bool idle = d->jobs_head == NULL && !d->engine_busy;
    pthread_mutex_unlock(&d->engine_lock);
    return idle;
}
