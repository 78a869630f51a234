/* host.c: the operations of host-memory devices (the CPU and virtual GPUs). */
#include "device/device.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- host operations -- */

static int host_alloc(parla__dev_t *d, uint64_t nbytes, void **out)
{
    (void)d;
    /* 64-byte alignment, as device allocators give, so views vectorise. */
    void *p = NULL;
    if (posix_memalign(&p, 64, nbytes ? nbytes : 1) != 0)
        return PARLA_ENOMEM;
    *out = p;
    return 0;
}

static void host_free(parla__dev_t *d, void *p)
{
    (void)d;
    free(p);
}

static int host_copy(parla__dev_t *d, void *dst, parla__dev_t *s, const void *src, uint64_t n)
{
    (void)d;
    (void)s;
    memcpy(dst, src, n);
    return 0;
}

static int host_synchronize(parla__dev_t *d)
{
    (void)d;
    return 0;
}

const parla__dev_ops_t parla__dev_host_ops = {
    .name = "host",
    .alloc = host_alloc,
    .free = host_free,
    .copy = host_copy,
    .synchronize = host_synchronize,
};
