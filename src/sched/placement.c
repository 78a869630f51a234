/* placement.c: placement options of tasks, their feasibility, and the mapping
 * policy that chooses devices for a ready task (locality, transfer, load). */
#include "sched/sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- mapping -- */

/* Scores device d for t's device at position slot: locality - transfer - load
 * (all unitless; the data counted is the data declared for that position). */
static double score_device(parla_task_t *t, const parla__graph_option_t *opt, parla__dev_t *d, int slot,
                           parla_mapping_t *m)
{
    parla_runtime_t *rt = t->rt;
    uint64_t total = 0, valid = parla__data_task_data_bytes(t, d->index, slot, &total);
    double slowest = d->bandwidth;
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++)
        if (parla__dev_devs(rt)->devices[i].bandwidth < slowest)
            slowest = parla__dev_devs(rt)->devices[i].bandwidth;
    m->locality = total ? (double)valid / (double)total : 0.0;
    /* Bytes a GPU can take over a direct (peer) link from another GPU cost less than the rest, which
     * come over its host link (or through the host). */
    uint64_t near = valid, total_near = 0;
    if (d->peers && total > valid)
        near = parla__data_task_data_bytes_on(t, ((uint64_t)1 << d->index) | d->peers, slot, &total_near);
    double far = (double)(total - near), direct = (double)(near - valid);
    double cost = far * (slowest / d->bandwidth) + (direct > 0 ? direct * (slowest / d->peer_bandwidth) : 0.0);
    m->transfer = total ? cost / (double)total : 0.0;
    m->load = (double)atomic_load_explicit(&d->n_mapped, memory_order_relaxed) / (double)rt->n_workers;
    m->score = m->locality - m->transfer - m->load;
    /* Prefer a device where the needs fit now over one where the task would wait. */
    if (opt->vcus || opt->memory) {
        pthread_mutex_lock(&d->lock);
        bool ok = parla__sched_resources_fit_locked(d, opt->vcus, opt->memory) && d->blocked_head == NULL;
        pthread_mutex_unlock(&d->lock);
        if (!ok)
            m->score -= 1000.0;
    }
    return m->score;
}

static bool slot_matches(const parla__dev_t *d, int slot)
{
    if (slot == PARLA_ANY_CPU)
        return d->kind == PARLA_DEVICE_CPU;
    if (slot == PARLA_ANY_GPU)
        return d->kind == PARLA_DEVICE_GPU;
    return d->index == slot;
}

int parla__sched_map_task(parla_task_t *t)
{
    parla_runtime_t *rt = t->rt;
    parla__graph_task_ext_t *x = t->ext;
    double best = -INFINITY;
    parla_mapping_t best_m = {0};
    int best_n = 0, best_opt = -1, best_dev[PARLA_MAX_TASK_DEVICES] = {0};
    int n_dev = parla__dev_devs(rt)->n_devices;
    uint64_t rr = atomic_fetch_add_explicit(&rt->map_rr, 1, memory_order_relaxed);
    int candidates = 0;
    for (int o = 0; o < x->n_options; o++) {
        parla__graph_option_t *opt = &x->options[o];
        int chosen[PARLA_MAX_TASK_DEVICES];
        parla_mapping_t sum = {0};
        bool ok = true;
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
                parla__dev_t *d = &parla__dev_devs(rt)->devices[i];
                if (!slot_matches(d, opt->slots[s]) || d->vcus_capacity < opt->vcus ||
                    d->memory_capacity < opt->memory)
                    continue;
                bool used = false;
                for (int j = 0; j < q; j++)
                    used |= chosen[order[j]] == i;
                if (used)
                    continue;
                parla_mapping_t m;
                double sc = score_device(t, opt, d, s, &m);
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
            best_opt = o;
        }
    }
    if (best_n == 0)
        return parla__error(PARLA_ERESOURCE, "task %s: no placement option can be satisfied", parla_task_name(t));
    parla__graph_option_t *opt = &x->options[best_opt];
    t->vcus = opt->vcus;
    t->memory = opt->memory;
    best_m.n_candidates = candidates;
    x->mapping = best_m;
    for (int i = 0; i < best_n; i++) {
        t->devices[i] = (uint8_t)best_dev[i];
        atomic_fetch_add_explicit(&parla__dev_devs(rt)->devices[best_dev[i]].n_mapped, 1, memory_order_relaxed);
    }
    t->n_devices = (int8_t)best_n;
    parla__data_plan(t);
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

int parla__sched_option_make(parla_runtime_t *rt, const char *who, const int *slots, int n, double vcus, uint64_t memory,
                       parla__graph_option_t *out)
{
    if (n < 1 || n > PARLA_MAX_TASK_DEVICES)
        return parla__error(PARLA_EINVAL, "task %s: a placement option names 1 to %d devices, not %d",
                            who, PARLA_MAX_TASK_DEVICES, n);
    if (!(vcus >= 0.0 && vcus <= 1.0))
        return parla__error(PARLA_EINVAL, "task %s: vcus=%g is outside (0, 1]", who, vcus);
    /* A need larger than every allowed device is caught at submit (PARLA_ERESOURCE). */
    int n_cpu = 0, n_gpu = 0, need_cpu = 0, need_gpu = 0;
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++) {
        if (parla__dev_devs(rt)->devices[i].kind == PARLA_DEVICE_CPU)
            n_cpu++;
        else
            n_gpu++;
    }
    for (int s = 0; s < n; s++) {
        if (slots[s] == PARLA_ANY_CPU) {
            need_cpu++;
        } else if (slots[s] == PARLA_ANY_GPU) {
            need_gpu++;
        } else if (slots[s] < 0 || slots[s] >= parla__dev_devs(rt)->n_devices) {
            return parla__error(PARLA_ENODEV, "task %s: no device %d (the runtime has %d: cpu(0) and %d GPU%s)",
                                who, slots[s], parla__dev_devs(rt)->n_devices, n_gpu, n_gpu == 1 ? "" : "s");
        } else {
            for (int j = 0; j < s; j++)
                if (slots[j] == slots[s])
                    return parla__error(PARLA_EINVAL, "task %s: device %s named twice in one placement",
                                        who, parla__dev_devs(rt)->devices[slots[s]].name);
        }
    }
    if (need_gpu > n_gpu)
        return parla__error(PARLA_ENODEV, "task %s: placement needs %d GPU%s, the runtime has %d",
                            who, need_gpu, need_gpu == 1 ? "" : "s", n_gpu);
    if (need_cpu > n_cpu)
        return parla__error(PARLA_ENODEV, "task %s: placement needs %d CPU devices, the runtime has %d",
                            who, need_cpu, n_cpu);
    memset(out, 0, sizeof *out);
    out->n = n;
    memcpy(out->slots, slots, (size_t)n * sizeof *slots);
    out->vcus = (int64_t)llround(vcus * (double)PARLA__VCU_ONE);
    out->memory = memory;
    return 0;
}

int parla_task_add_placement(parla_task_t *t, const int *slots, int n, double vcus, uint64_t memory)
{
    if (t == NULL || slots == NULL)
        return parla__error(PARLA_EINVAL, "parla_task_add_placement: NULL argument");
    if (parla_task_state(t) != PARLA_TASK_CREATED)
        return parla__error(PARLA_ESTATE, "parla_task_add_placement: task %s was already submitted",
                            parla_task_name(t));
    parla_runtime_t *rt = t->rt;
    parla__graph_option_t opt;
    int rc = parla__sched_option_make(rt, parla_task_name(t), slots, n, vcus, memory, &opt);
    if (rc)
        return rc;
    parla__graph_task_ext_t *x = parla__graph_task_ext(t);
    if (x == NULL)
        return parla__error(PARLA_ENOMEM, "task %s: cannot allocate placement", parla_task_name(t));
    if (x->n_options == x->cap_options) {
        int cap = x->cap_options ? 2 * x->cap_options : 4;
        parla__graph_option_t *o = parla__alloc(rt, (size_t)cap * sizeof *o);
        if (o == NULL)
            return parla__error(PARLA_ENOMEM, "task %s: cannot allocate placement", parla_task_name(t));
        if (x->n_options)
            memcpy(o, x->options, (size_t)x->n_options * sizeof *o);
        parla__free(x->options);
        x->options = o;
        x->cap_options = cap;
    }
    x->options[x->n_options++] = opt;
    return 0;
}

/* True when some assignment of devices to the option's slots can hold its needs. */
bool parla__sched_option_feasible(parla_runtime_t *rt, const parla__graph_option_t *o)
{
    for (int s = 0; s < o->n; s++) {
        bool any = false;
        for (int i = 0; i < parla__dev_devs(rt)->n_devices && !any; i++) {
            parla__dev_t *d = &parla__dev_devs(rt)->devices[i];
            any = slot_matches(d, o->slots[s]) && d->vcus_capacity >= o->vcus && d->memory_capacity >= o->memory;
        }
        if (!any)
            return false;
    }
    return true;
}

uint64_t parla__sched_largest_allowed(parla_runtime_t *rt, const parla__graph_task_ext_t *x)
{
    uint64_t largest = 0;
    for (int o = 0; o < x->n_options; o++)
        for (int s = 0; s < x->options[o].n; s++)
            for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++)
                if (slot_matches(&parla__dev_devs(rt)->devices[i], x->options[o].slots[s]) && parla__dev_devs(rt)->devices[i].memory_capacity > largest)
                    largest = parla__dev_devs(rt)->devices[i].memory_capacity;
    return largest;
}
