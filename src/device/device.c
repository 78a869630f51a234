/* device.c: the device registry, host-memory devices (the CPU and virtual
 * GPUs), resource reservation over one or several devices, and the mapping
 * policy that chooses devices for tasks with placement options. */
#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- host operations -- */

static int host_alloc(parla__device_t *d, uint64_t nbytes, void **out)
{
    (void)d;
    /* 64-byte alignment, as device allocators give, so views vectorise. */
    void *p = NULL;
    if (posix_memalign(&p, 64, nbytes ? nbytes : 1) != 0)
        return PARLA_ENOMEM;
    *out = p;
    return 0;
}

static void host_free(parla__device_t *d, void *p)
{
    (void)d;
    free(p);
}

static int host_copy(parla__device_t *d, void *dst, parla__device_t *s, const void *src, uint64_t n)
{
    (void)d;
    (void)s;
    memcpy(dst, src, n);
    return 0;
}

static int host_synchronize(parla__device_t *d)
{
    (void)d;
    return 0;
}

const parla__device_ops_t parla__host_ops = {
    .name = "host",
    .alloc = host_alloc,
    .free = host_free,
    .copy = host_copy,
    .synchronize = host_synchronize,
};

/* ----------------------------------------------------------------- events -- */

int parla__event_record(parla__device_t *d, void *stream, parla__event_t **out)
{
    pthread_mutex_lock(&d->event_lock);
    parla__event_t *e = d->event_pool;
    if (e)
        d->event_pool = e->next;
    pthread_mutex_unlock(&d->event_lock);
    if (e == NULL) {
        e = calloc(1, sizeof *e);
        if (e == NULL)
            return parla__error(PARLA_ENOMEM, "cannot allocate an event on %s", d->name);
        int rc = d->ops->event_create(d, &e->handle);
        if (rc) {
            free(e);
            return rc;
        }
        e->device = d;
        atomic_fetch_add_explicit(&d->n_events, 1, memory_order_relaxed);
    }
    int rc = d->ops->event_record(d, e->handle, stream);
    if (rc) {
        atomic_init(&e->refs, 1);
        parla__event_release(e);
        return rc;
    }
    atomic_init(&e->refs, 1);
    *out = e;
    return 0;
}

void parla__event_retain(parla__event_t *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void parla__event_release(parla__event_t *e)
{
    if (e == NULL || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Back to the pool: re-recording a CUDA event is allowed once nobody will
     * wait on its old recording (stream waits capture it when issued). */
    parla__device_t *d = e->device;
    pthread_mutex_lock(&d->event_lock);
    e->next = d->event_pool;
    d->event_pool = e;
    pthread_mutex_unlock(&d->event_lock);
}

int parla__event_done(parla__event_t *e)
{
    return e == NULL ? 1 : e->device->ops->event_query(e->device, e->handle);
}

static void event_pool_destroy(parla__device_t *d)
{
    while (d->event_pool) {
        parla__event_t *e = d->event_pool;
        d->event_pool = e->next;
        d->ops->event_destroy(d, e->handle);
        atomic_fetch_sub_explicit(&d->n_events, 1, memory_order_relaxed);
        free(e);
    }
}

void *parla__worker_stream(parla__worker_t *w, int device)
{
    parla__device_t *d = &w->rt->devices[device];
    if (!parla__device_async(d) || w->streams == NULL)
        return NULL;
    if (w->streams[device] == NULL && d->ops->stream_create(d, &w->streams[device]) != 0)
        return NULL;
    return w->streams[device];
}

/* --------------------------------------------------------------- registry -- */

static int device_init(parla__device_t *d, int index, uint64_t memory)
{
    memset(d, 0, sizeof *d);
    d->index = index;
    if (pthread_mutex_init(&d->lock, NULL) != 0 || pthread_mutex_init(&d->acquire_lock, NULL) != 0 ||
        pthread_mutex_init(&d->event_lock, NULL) != 0)
        return parla__error(PARLA_ESYS, "pthread_mutex_init failed for device %d", index);
    d->vcus_capacity = d->vcus_free = PARLA__VCU_ONE;
    d->memory_capacity = d->memory_free = memory;
    d->ops = &parla__host_ops;
    d->bandwidth = 16e9;
    return 0;
}

int parla__devices_init(parla_runtime_t *rt)
{
    const parla_config_t *c = &rt->config;
    int n_gpus = 0, use_cuda = 0;
    if (c->n_virtual_gpus > 0) {
        n_gpus = c->n_virtual_gpus;
    } else if (!c->disable_cuda) {
        n_gpus = parla__cuda_count();
        use_cuda = n_gpus > 0;
    }
    if (n_gpus + 1 > PARLA__MAX_DEVICES)
        return parla__error(PARLA_EINVAL, "%d GPUs requested; at most %d are supported", n_gpus,
                            PARLA__MAX_DEVICES - 1);
    rt->devices = parla__calloc(rt, (size_t)n_gpus + 1, sizeof *rt->devices);
    if (rt->devices == NULL)
        return parla__error(PARLA_ENOMEM, "cannot allocate %d devices", n_gpus + 1);
    int rc = device_init(&rt->devices[0], 0, c->cpu_memory);
    if (rc)
        return rc;
    rt->n_devices = 1;
    parla__device_t *cpu = &rt->devices[0];
    cpu->kind = PARLA_DEVICE_CPU;
    cpu->bandwidth = 1e12; /* local: no transfer */
    snprintf(cpu->name, sizeof cpu->name, "cpu(0)");
    for (int i = 0; i < n_gpus; i++) {
        parla__device_t *d = &rt->devices[i + 1];
        uint64_t mem = c->virtual_gpu_memory ? c->virtual_gpu_memory : (uint64_t)1 << 30;
        rc = device_init(d, i + 1, mem);
        if (rc)
            return rc;
        rt->n_devices++;
        d->kind = PARLA_DEVICE_GPU;
        d->kind_index = i;
        snprintf(d->name, sizeof d->name, "gpu(%d)", i);
        if (use_cuda) {
            rc = parla__cuda_device_init(d, i);
            if (rc)
                return rc;
        } else {
            d->is_virtual = 1;
            d->bandwidth = c->virtual_gpu_bandwidth > 0 ? c->virtual_gpu_bandwidth : 16e9;
        }
        rc = parla__copy_engine_start(d);
        if (rc)
            return rc;
    }
    return 0;
}

void parla__devices_destroy(parla_runtime_t *rt)
{
    for (int i = 0; i < rt->n_devices; i++) {
        parla__copy_engine_stop(&rt->devices[i]);
        /* Workers' streams first (their work is complete: every task finished). */
        for (int k = 0; k < rt->n_workers && rt->workers; k++) {
            parla__worker_t *w = &rt->workers[k];
            if (w->streams && w->streams[i])
                rt->devices[i].ops->stream_destroy(&rt->devices[i], w->streams[i]);
        }
        event_pool_destroy(&rt->devices[i]);
        if (rt->devices[i].is_cuda)
            parla__cuda_device_destroy(&rt->devices[i]);
        pthread_mutex_destroy(&rt->devices[i].lock);
        pthread_mutex_destroy(&rt->devices[i].acquire_lock);
        pthread_mutex_destroy(&rt->devices[i].event_lock);
    }
    for (int k = 0; k < rt->n_workers && rt->workers; k++) {
        parla__free(rt->workers[k].streams);
        rt->workers[k].streams = NULL;
    }
    parla__free(rt->devices);
    rt->devices = NULL;
}

int parla_runtime_num_devices(const parla_runtime_t *rt)
{
    return rt ? rt->n_devices : 0;
}

int parla_device_info(parla_runtime_t *rt, int index, parla_device_info_t *out)
{
    if (rt == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_device_info: NULL argument");
    if (index < 0 || index >= rt->n_devices)
        return parla__error(PARLA_ENODEV, "parla_device_info: no device %d (the runtime has %d)", index,
                            rt->n_devices);
    parla__device_t *d = &rt->devices[index];
    memset(out, 0, sizeof *out);
    out->index = index;
    out->kind = d->kind;
    out->kind_index = d->kind_index;
    out->is_virtual = d->is_virtual;
    out->is_cuda = d->is_cuda;
    out->cuda_ordinal = d->cuda_ordinal;
    out->bandwidth = d->bandwidth;
    snprintf(out->name, sizeof out->name, "%s", d->name);
    pthread_mutex_lock(&d->lock);
    out->memory_capacity = d->memory_capacity;
    out->memory_reserved = d->memory_capacity - d->memory_free;
    out->memory_resident = d->resident;
    out->vcus_capacity = (double)d->vcus_capacity / PARLA__VCU_ONE;
    out->vcus_reserved = (double)(d->vcus_capacity - d->vcus_free) / PARLA__VCU_ONE;
    pthread_mutex_unlock(&d->lock);
    out->tasks_mapped = (uint64_t)atomic_load(&d->n_mapped);
    out->bytes_in = atomic_load(&d->bytes_in);
    out->bytes_out = atomic_load(&d->bytes_out);
    out->evictions = atomic_load(&d->evictions);
    return 0;
}

/* -------------------------------------------------------------- resources -- */

static bool fits(const parla__device_t *d, const parla_task_t *t)
{
    if (t->vcus > d->vcus_free || t->memory > d->memory_free)
        return false;
    /* One account with the data copies: those in use by running tasks
     * cannot make room; the others are evicted once reserved. */
    if (t->memory > 0 && d->index != 0 &&
        parla__data_pinned_bytes_locked(d) + (d->memory_capacity - d->memory_free) + t->memory > d->memory_capacity)
        return false;
    return true;
}

/* Devices of t in increasing index order (the lock order among devices). */
static int sorted_devices(const parla_task_t *t, int *out)
{
    int n = t->n_devices;
    for (int i = 0; i < n; i++)
        out[i] = t->devices[i];
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int x = out[j];
            out[j] = out[j - 1];
            out[j - 1] = x;
        }
    return n;
}

bool parla__reserve_or_block(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    int idx[PARLA_MAX_TASK_DEVICES];
    int n = sorted_devices(t, idx);
    for (int i = 0; i < n; i++)
        pthread_mutex_lock(&rt->devices[idx[i]].lock);
    int fail = -1;
    for (int i = 0; i < n && fail < 0; i++) {
        parla__device_t *d = &rt->devices[idx[i]];
        /* FIFO fairness: never overtake a task already waiting on a device. */
        if (d->blocked_head != NULL || !fits(d, t))
            fail = i;
    }
    if (fail < 0) {
        for (int i = 0; i < n; i++) {
            rt->devices[idx[i]].vcus_free -= t->vcus;
            rt->devices[idx[i]].memory_free -= t->memory;
            if (t->memory > 0)
                parla__data_make_room_locked(&rt->devices[idx[i]]);
        }
    } else {
        parla__device_t *d = &rt->devices[idx[fail]];
        t->qnext = NULL;
        if (d->blocked_tail)
            d->blocked_tail->qnext = t;
        else
            d->blocked_head = t;
        d->blocked_tail = t;
    }
    for (int i = n - 1; i >= 0; i--)
        pthread_mutex_unlock(&rt->devices[idx[i]].lock);
    return fail < 0;
}

parla_task_t *parla__release_resources(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    parla_task_t *retry = NULL, **rtail = &retry;
    parla_task_t *room = NULL; /* tasks waiting for room for their data (one account) */
    for (int i = 0; i < t->n_devices; i++) {
        parla__device_t *d = &rt->devices[t->devices[i]];
        pthread_mutex_lock(&d->lock);
        d->vcus_free += t->vcus;
        d->memory_free += t->memory;
        if (t->memory > 0) {
            d->unpin_epoch++; /* room appeared, as when copies are unpinned */
            while (d->data_blocked) {
                parla_task_t *b = d->data_blocked;
                d->data_blocked = b->qnext;
                b->qnext = room;
                room = b;
            }
        }
        /* Take the whole blocked list and retry it outside the lock, in FIFO
         * order: a retried multi-device task locks its own devices in order. */
        if (d->blocked_head) {
            *rtail = d->blocked_head;
            rtail = &d->blocked_tail->qnext;
            d->blocked_head = d->blocked_tail = NULL;
        }
        pthread_mutex_unlock(&d->lock);
    }
    while (room) {
        parla_task_t *b = room;
        room = b->qnext;
        b->qnext = NULL;
        parla__task_ready(b);
    }
    parla_task_t *ready = NULL, **tail = &ready;
    while (retry) {
        parla_task_t *b = retry;
        retry = b->qnext;
        b->qnext = NULL;
        if (parla__reserve_or_block(b)) {
            *tail = b;
            tail = &b->qnext;
        }
    }
    return ready;
}

/* ---------------------------------------------------------------- mapping -- */

/* Scores device d for t: locality - transfer - load (all unitless). */
static double score_device(parla_task_t *t, parla__device_t *d, parla_mapping_t *m)
{
    parla_runtime_t *rt = t->rt;
    uint64_t total = 0, valid = parla__task_data_bytes(t, d->index, &total);
    double slowest = d->bandwidth;
    for (int i = 0; i < rt->n_devices; i++)
        if (rt->devices[i].bandwidth < slowest)
            slowest = rt->devices[i].bandwidth;
    m->locality = total ? (double)valid / (double)total : 0.0;
    m->transfer = total ? (double)(total - valid) / (double)total * (slowest / d->bandwidth) : 0.0;
    m->load = (double)atomic_load_explicit(&d->n_mapped, memory_order_relaxed) / (double)rt->n_workers;
    m->score = m->locality - m->transfer - m->load;
    /* Prefer a device where the needs fit now over one where the task would wait. */
    if (t->vcus || t->memory) {
        pthread_mutex_lock(&d->lock);
        bool ok = fits(d, t) && d->blocked_head == NULL;
        pthread_mutex_unlock(&d->lock);
        if (!ok)
            m->score -= 1000.0;
    }
    return m->score;
}

static bool slot_matches(const parla__device_t *d, int slot)
{
    if (slot == PARLA_ANY_CPU)
        return d->kind == PARLA_DEVICE_CPU;
    if (slot == PARLA_ANY_GPU)
        return d->kind == PARLA_DEVICE_GPU;
    return d->index == slot;
}

int parla__map_task(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    parla__task_ext_t *x = t->ext;
    double best = -INFINITY;
    parla_mapping_t best_m = {0};
    int best_n = 0, best_dev[PARLA_MAX_TASK_DEVICES] = {0};
    int n_dev = rt->n_devices;
    uint64_t rr = atomic_fetch_add_explicit(&rt->map_rr, 1, memory_order_relaxed);
    int candidates = 0;
    for (int o = 0; o < x->n_options; o++) {
        parla__option_t *opt = &x->options[o];
        int chosen[PARLA_MAX_TASK_DEVICES];
        parla_mapping_t sum = {0};
        bool ok = true;
        t->vcus = opt->vcus;
        t->memory = opt->memory;
        /* Named devices first, then "any" slots, so an any-slot never takes a
         * device another slot names. */
        int order[PARLA_MAX_TASK_DEVICES], n_order = 0;
        for (int s = 0; s < opt->n; s++)
            if (opt->slots[s] >= 0)
                order[n_order++] = s;
        for (int s = 0; s < opt->n; s++)
            if (opt->slots[s] < 0)
                order[n_order++] = s;
        for (int q = 0; q < opt->n && ok; q++) {
            int s = order[q];
            double bs = -INFINITY;
            parla_mapping_t bm = {0};
            int pick = -1;
            for (int k = 0; k < n_dev; k++) {
                int i = (int)((rr + (uint64_t)k) % (uint64_t)n_dev); /* fair tie-breaking */
                parla__device_t *d = &rt->devices[i];
                if (!slot_matches(d, opt->slots[s]) || d->vcus_capacity < opt->vcus ||
                    d->memory_capacity < opt->memory)
                    continue;
                bool used = false;
                for (int j = 0; j < q; j++)
                    used |= chosen[order[j]] == i;
                if (used)
                    continue;
                parla_mapping_t m;
                double sc = score_device(t, d, &m);
                candidates++;
                if (sc > bs) {
                    bs = sc;
                    bm = m;
                    pick = i;
                }
            }
            if (pick < 0) {
                ok = false;
                break;
            }
            chosen[s] = pick;
            sum.locality += bm.locality;
            sum.transfer += bm.transfer;
            sum.load += bm.load;
            sum.score += bm.score;
        }
        if (!ok)
            continue;
        double avg = sum.score / opt->n;
        if (avg > best) {
            best = avg;
            best_n = opt->n;
            memcpy(best_dev, chosen, sizeof chosen);
            best_m.locality = sum.locality / opt->n;
            best_m.transfer = sum.transfer / opt->n;
            best_m.load = sum.load / opt->n;
            best_m.score = avg;
            best_m.n_candidates = 0;
            t->n_devices = (int8_t)o; /* remember the option index meanwhile */
        }
    }
    if (best_n == 0)
        return parla__error(PARLA_ERESOURCE, "task %s: no placement option can be satisfied", parla_task_name(t));
    parla__option_t *opt = &x->options[t->n_devices];
    t->vcus = opt->vcus;
    t->memory = opt->memory;
    best_m.n_candidates = candidates;
    x->mapping = best_m;
    for (int i = 0; i < best_n; i++) {
        t->devices[i] = (uint8_t)best_dev[i];
        atomic_fetch_add_explicit(&rt->devices[best_dev[i]].n_mapped, 1, memory_order_relaxed);
    }
    t->n_devices = (int8_t)best_n;
    parla__data_plan(t, best_dev[0]);
    return 0;
}

int parla_task_devices(const parla_task_t *t, int *out, int cap)
{
    if (t == NULL)
        return 0;
    if (out == NULL)
        cap = 0;
    int n = t->n_devices;
    for (int i = 0; i < n && i < cap; i++)
        out[i] = t->devices[i];
    return n;
}

int parla_task_mapping(const parla_task_t *t, parla_mapping_t *out)
{
    if (t == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_mapping: %s is NULL", t ? "out" : "task");
    memset(out, 0, sizeof *out);
    if (t->ext == NULL || t->n_devices == 0)
        return parla__error(PARLA_ESTATE, "task %s has no mapping (no placement options, or not mapped yet)",
                            parla_task_name(t));
    *out = t->ext->mapping;
    return 0;
}

int parla_task_add_placement(parla_task_t *t, const int *slots, int n, double vcus, uint64_t memory)
{
    if (t == NULL || slots == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_add_placement: NULL argument");
    if (parla_task_state(t) != PARLA_TASK_CREATED)
        return parla__error(PARLA_ESTATE, "parla_task_add_placement: task %s was already submitted",
                            parla_task_name(t));
    if (n < 1 || n > PARLA_MAX_TASK_DEVICES)
        return parla__error(PARLA_EINVAL, "task %s: a placement option names 1 to %d devices, not %d",
                            parla_task_name(t), PARLA_MAX_TASK_DEVICES, n);
    if (!(vcus >= 0.0 && vcus <= 1.0))
        return parla__error(PARLA_EINVAL, "task %s: vcus=%g is outside (0, 1]", parla_task_name(t), vcus);
    parla_runtime_t *rt = t->rt;
    /* A need larger than every allowed device is caught at submit (PARLA_ERESOURCE). */
    int n_cpu = 0, n_gpu = 0, need_cpu = 0, need_gpu = 0;
    for (int i = 0; i < rt->n_devices; i++) {
        if (rt->devices[i].kind == PARLA_DEVICE_CPU)
            n_cpu++;
        else
            n_gpu++;
    }
    for (int s = 0; s < n; s++) {
        if (slots[s] == PARLA_ANY_CPU) {
            need_cpu++;
        } else if (slots[s] == PARLA_ANY_GPU) {
            need_gpu++;
        } else if (slots[s] < 0 || slots[s] >= rt->n_devices) {
            return parla__error(PARLA_ENODEV, "task %s: no device %d (the runtime has %d: cpu(0) and %d GPU%s)",
                                parla_task_name(t), slots[s], rt->n_devices, n_gpu, n_gpu == 1 ? "" : "s");
        } else {
            for (int j = 0; j < s; j++)
                if (slots[j] == slots[s])
                    return parla__error(PARLA_EINVAL, "task %s: device %s named twice in one placement",
                                        parla_task_name(t), rt->devices[slots[s]].name);
        }
    }
    if (need_gpu > n_gpu)
        return parla__error(PARLA_ENODEV, "task %s: placement needs %d GPU%s, the runtime has %d",
                            parla_task_name(t), need_gpu, need_gpu == 1 ? "" : "s", n_gpu);
    if (need_cpu > n_cpu)
        return parla__error(PARLA_ENODEV, "task %s: placement needs %d CPU devices, the runtime has %d",
                            parla_task_name(t), need_cpu, n_cpu);
    parla__task_ext_t *x = parla__task_ext(t);
    if (x == NULL)
        return parla__error(PARLA_ENOMEM, "task %s: cannot allocate placement", parla_task_name(t));
    if (x->n_options == x->cap_options) {
        int cap = x->cap_options ? 2 * x->cap_options : 4;
        parla__option_t *o = parla__alloc(rt, (size_t)cap * sizeof *o);
        if (o == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot allocate placement", parla_task_name(t));
        if (x->n_options)
            memcpy(o, x->options, (size_t)x->n_options * sizeof *o);
        parla__free(x->options);
        x->options = o;
        x->cap_options = cap;
    }
    parla__option_t *o = &x->options[x->n_options++];
    memset(o, 0, sizeof *o);
    o->n = n;
    memcpy(o->slots, slots, (size_t)n * sizeof *slots);
    o->vcus = (int64_t)llround(vcus * (double)PARLA__VCU_ONE);
    o->memory = memory;
    return 0;
}

/* True when some assignment of devices to the option's slots can hold its needs. */
bool parla__option_feasible(parla_runtime_t *rt, const parla__option_t *o)
{
    for (int s = 0; s < o->n; s++) {
        bool any = false;
        for (int i = 0; i < rt->n_devices && !any; i++) {
            parla__device_t *d = &rt->devices[i];
            any = slot_matches(d, o->slots[s]) && d->vcus_capacity >= o->vcus && d->memory_capacity >= o->memory;
        }
        if (!any)
            return false;
    }
    return true;
}

uint64_t parla__largest_allowed(parla_runtime_t *rt, const parla__task_ext_t *x)
{
    uint64_t largest = 0;
    for (int o = 0; o < x->n_options; o++)
        for (int s = 0; s < x->options[o].n; s++)
            for (int i = 0; i < rt->n_devices; i++)
                if (slot_matches(&rt->devices[i], x->options[o].slots[s]) && rt->devices[i].memory_capacity > largest)
                    largest = rt->devices[i].memory_capacity;
    return largest;
}
