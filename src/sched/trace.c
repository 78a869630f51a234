/* trace.c: the runtime's side of the trace: its sink (made at creation when
 * parla_config_t.trace is set, one buffer per worker) and parla_trace_write,
 * which hands the exporter what it knows of workers and devices. */
#include "sched/sched.h"

#include <stdlib.h>

int parla__trace_init(parla_runtime_t *rt)
{
    parla__graph_rt(rt)->trace = parla__trace_create(rt, rt->n_workers);
    return parla__graph_rt(rt)->trace ? 0 : PARLA_ENOMEM;
}

void parla__trace_free(parla_runtime_t *rt)
{
    parla__trace_destroy(parla__graph_rt(rt)->trace);
    parla__graph_rt(rt)->trace = NULL;
}

int parla_trace_write(parla_runtime_t *rt, const char *chrome_path, const char *dot_path, char *summary,
                      size_t summary_cap)
{
    if (rt == NULL)
        return parla__error(PARLA_EINVAL, "parla_trace_write: runtime is NULL");
    if (parla__graph_rt(rt)->trace == NULL)
        return parla__error(PARLA_ESTATE, "parla_trace_write: tracing is off (set parla_config_t.trace)");
    parla__trace_device_t *devs = calloc((size_t)parla__devs(rt)->n_devices, sizeof *devs);
    if (devs == NULL)
        return parla__error(PARLA_ENOMEM, "parla_trace_write: out of memory");
    for (int d = 0; d < parla__devs(rt)->n_devices; d++)
        devs[d] = (parla__trace_device_t){parla__devs(rt)->devices[d].name, atomic_load(&parla__devs(rt)->devices[d].bytes_in),
                                          atomic_load(&parla__devs(rt)->devices[d].bytes_out),
                                          atomic_load(&parla__devs(rt)->devices[d].evictions)};
    parla__trace_meta_t meta = {rt->n_workers, parla__devs(rt)->n_devices, devs};
    int rc = parla__trace_export(parla__graph_rt(rt)->trace, &meta, chrome_path, dot_path, summary, summary_cap);
    free(devs);
    return rc;
}
