/* sched/observe.c: the runtime's observers, the public face of the trace
 * layer: parla_trace_write (the runtime's workers, devices and counters handed
 * to parla__trace_export) and busy-time accounting (parla_runtime_busy_enable,
 * parla_device_busy over trace/busy.c's counters, which exec.c fills). */
#include "sched/sched.h"

#include <stdlib.h>

int parla_trace_write(parla_runtime_t *rt, const char *chrome_path, const char *dot_path, char *summary,
                      size_t summary_cap)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_trace_write: runtime is NULL");
    if (parla__graph_rt(rt)->trace == NULL)
        return parla__error(PARLA_ESTATE, "parla_trace_write: tracing is off (set parla_config_t.trace)");
    parla__trace_device_t *devs = calloc((size_t)parla__dev_devs(rt)->n_devices, sizeof *devs);
    if (devs == NULL)
        return parla__error(PARLA_ENOMEM, "parla_trace_write: out of memory");
    for (int d = 0; d < parla__dev_devs(rt)->n_devices; d++)
        devs[d] = (parla__trace_device_t){parla__dev_devs(rt)->devices[d].name, atomic_load(&parla__dev_devs(rt)->devices[d].bytes_in),
                                          atomic_load(&parla__dev_devs(rt)->devices[d].bytes_out),
                                          atomic_load(&parla__dev_devs(rt)->devices[d].evictions)};
    parla__trace_meta_t meta = {rt->n_workers, parla__dev_devs(rt)->n_devices, devs};
    int rc = parla__trace_export(parla__graph_rt(rt)->trace, &meta, chrome_path, dot_path, summary, summary_cap);
    free(devs);
    return rc;
}

int parla_runtime_busy_enable(parla_runtime_t *rt)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_runtime_busy_enable: runtime is NULL");
    if (atomic_load_explicit(&rt->busy, memory_order_acquire) != NULL)
        return 0;
    parla__trace_busy_t *b = parla__trace_busy_create(rt->n_workers, parla__dev_devs(rt)->n_devices);
    if (b == NULL)
        return parla__error(PARLA_ENOMEM, "parla_runtime_busy_enable: out of memory");
    parla__trace_busy_t *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&rt->busy, &none, b, memory_order_acq_rel, memory_order_acquire))
        parla__trace_busy_destroy(b); /* another thread enabled it first */
    return 0;
}

int parla_device_busy(parla_runtime_t *rt, int index, double *seconds)
{
    if (rt == NULL || seconds == NULL)
        return parla__error(PARLA_EINVAL, "parla_device_busy: NULL argument");
    if (index < 0 || index >= parla__dev_devs(rt)->n_devices)
        return parla__error(PARLA_ENODEV, "parla_device_busy: no device %d (the runtime has %d)", index,
                            parla__dev_devs(rt)->n_devices);
    parla__trace_busy_t *b = atomic_load_explicit(&rt->busy, memory_order_acquire);
    *seconds = b ? parla__trace_busy_seconds(b, index) : 0.0;
    return 0;
}
