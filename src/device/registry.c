/* registry.c: the device registry: the CPU, CUDA GPUs or virtual GPUs, their
 * capacities and engines; parla_device_info. */
#include "device/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- registry -- */

static int device_init(parla__dev_t *d, int index, uint64_t memory)
{
    memset(d, 0, sizeof *d);
    d->index = index;
    if (pthread_mutex_init(&d->lock, NULL) != 0 ||
        pthread_mutex_init(&d->event_lock, NULL) != 0)
        return parla__error(PARLA_ESYS, "pthread_mutex_init failed for device %d", index);
    d->vcus_capacity = d->vcus_free = PARLA__VCU_ONE;
    d->memory_capacity = d->memory_free = memory;
    d->ops = &parla__dev_host_ops;
    d->bandwidth = 16e9;
    return 0;
}

int parla__dev_devices_init(parla_runtime_t *rt, const parla_config_t *c)
{
    int n_gpus = 0, use_cuda = 0;
    if (c->n_virtual_gpus > 0) {
        n_gpus = c->n_virtual_gpus;
    } else if (!c->disable_cuda) {
        n_gpus = parla__dev_cuda_count();
        use_cuda = n_gpus > 0;
    }
    if (n_gpus + 1 > PARLA__MAX_DEVICES)
        return parla__error(PARLA_EINVAL, "%d GPUs requested; at most %d are supported", n_gpus,
                            PARLA__MAX_DEVICES - 1);
    parla__dev_devs(rt)->devices = parla__calloc(rt, (size_t)n_gpus + 1, sizeof *parla__dev_devs(rt)->devices);
    if (parla__dev_devs(rt)->devices == NULL)
        return parla__error(PARLA_ENOMEM, "cannot allocate %d devices", n_gpus + 1);
    parla__dev_shared_t *sh = &parla__dev_devs(rt)->shared;
    pthread_mutex_init(&sh->wake_lock, NULL);
    pthread_cond_init(&sh->wake_cond, NULL);
    pthread_mutex_init(&sh->pin_lock, NULL);
    sh->devices = parla__dev_devs(rt)->devices;
    sh->n_devices = n_gpus + 1;
    int rc = device_init(&parla__dev_devs(rt)->devices[0], 0, c->cpu_memory);
    if (rc)
        return rc;
    parla__dev_devs(rt)->devices[0].shared = sh;
    parla__dev_devs(rt)->n_devices = 1;
    parla__dev_t *cpu = &parla__dev_devs(rt)->devices[0];
    cpu->kind = PARLA_DEVICE_CPU;
    cpu->bandwidth = 1e12; /* local: no transfer */
    snprintf(cpu->name, sizeof cpu->name, "cpu(0)");
    for (int i = 0; i < n_gpus; i++) {
        parla__dev_t *d = &parla__dev_devs(rt)->devices[i + 1];
        uint64_t mem = c->virtual_gpu_memory ? c->virtual_gpu_memory : (uint64_t)1 << 30;
        rc = device_init(d, i + 1, mem);
        if (rc)
            return rc;
        parla__dev_devs(rt)->n_devices++;
        d->shared = sh;
        d->pin_host = !c->disable_host_pinning;
        parla__dev_pool_init(d, use_cuda && !c->disable_memory_pool);
        d->kind = PARLA_DEVICE_GPU;
        d->kind_index = i;
        snprintf(d->name, sizeof d->name, "gpu(%d)", i);
        if (use_cuda) {
            rc = parla__dev_cuda_device_init(d, i, !c->disable_memory_pool);
            if (rc)
                return rc;
        } else {
            d->is_virtual = 1;
            d->bandwidth = c->virtual_gpu_bandwidth > 0 ? c->virtual_gpu_bandwidth : 16e9;
        }
    }
    if (use_cuda && (rc = parla__dev_cuda_peers_init(parla__dev_devs(rt)->devices, parla__dev_devs(rt)->n_devices)) != 0)
        return rc;
    for (int i = 1; i < parla__dev_devs(rt)->n_devices; i++)
        if ((rc = parla__dev_engine_start(&parla__dev_devs(rt)->devices[i])) != 0)
            return rc;
    return 0;
}

void parla__dev_devices_destroy(parla_runtime_t *rt)
{
    parla__dev_shared_t *sh = &parla__dev_devs(rt)->shared;
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++)
        parla__dev_engine_stop(&parla__dev_devs(rt)->devices[i]);
    /* Callbacks still queued on streams (of destroyed worker streams too) run before the devices go. */
    parla__dev_engine_callbacks_drain(sh);
    for (int i = 0; i < 64; i++)
        while (sh->pinned[i]) /* buffers of stores still alive (none normally) */
            parla__dev_host_unpin(sh, sh->pinned[i]->ptr);
    for (int i = 0; i < parla__dev_devs(rt)->n_devices; i++) {
        parla__dev_t *d = &parla__dev_devs(rt)->devices[i];
        parla__dev_event_pool_destroy(d);
        if (i > 0)
            parla__dev_pool_destroy(d);
        if (d->is_cuda)
            parla__dev_cuda_device_destroy(d);
        pthread_mutex_destroy(&d->lock);
        pthread_mutex_destroy(&d->event_lock);
    }
    pthread_mutex_destroy(&sh->wake_lock);
    pthread_cond_destroy(&sh->wake_cond);
    pthread_mutex_destroy(&sh->pin_lock);
    parla__free(parla__dev_devs(rt)->devices);
    parla__dev_devs(rt)->devices = NULL;
}

int parla_runtime_num_devices(const parla_runtime_t *rt)
{
    return rt ? parla__dev_devs(rt)->n_devices : 0;
}

int parla_device_alloc(parla_runtime_t *rt, int index, uint64_t nbytes, void **out)
{
    if (rt == NULL || out == NULL || nbytes == 0)
        return parla__error(PARLA_EINVAL, "parla_device_alloc: %s", rt == NULL ? "rt is NULL"
                            : out == NULL ? "out is NULL" : "nbytes is 0");
    *out = NULL;
    if (index < 0 || index >= parla__dev_devs(rt)->n_devices)
        return parla__error(PARLA_ENODEV, "parla_device_alloc: no device %d (the runtime has %d)", index,
                            parla__dev_devs(rt)->n_devices);
    if (index == 0)
        return parla__error(PARLA_EINVAL, "parla_device_alloc: device 0 is the CPU, not a GPU");
    parla__dev_t *d = &parla__dev_devs(rt)->devices[index];
    int rc = parla__dev_mem_alloc(d, nbytes, true, out);
    if (rc == PARLA_ENOMEM)
        return parla__error(PARLA_ERESOURCE, "parla_device_alloc: %llu bytes do not fit on %s (capacity %llu "
                            "bytes)", (unsigned long long)nbytes, d->name, (unsigned long long)d->memory_capacity);
    return rc;
}

void parla_device_free(parla_runtime_t *rt, int index, void *ptr, uint64_t nbytes)
{
    if (rt == NULL || ptr == NULL || index <= 0 || index >= parla__dev_devs(rt)->n_devices)
        return;
    parla__dev_mem_free(&parla__dev_devs(rt)->devices[index], ptr, nbytes, true);
}

int parla_device_info(parla_runtime_t *rt, int index, parla_device_info_t *out)
{
    if (rt == NULL || out == NULL)
        return parla__error(PARLA_EINVAL, "parla_device_info: NULL argument");
    if (index < 0 || index >= parla__dev_devs(rt)->n_devices)
        return parla__error(PARLA_ENODEV, "parla_device_info: no device %d (the runtime has %d)", index,
                            parla__dev_devs(rt)->n_devices);
    parla__dev_t *d = &parla__dev_devs(rt)->devices[index];
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
