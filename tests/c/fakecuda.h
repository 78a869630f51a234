/*
 * fakecuda.h: what the tests read from the driver double (tests/c/fakecuda.c) besides the driver API:
 * its counters and timeline. Tests reach the functions with dlsym on the double they load.
 */
#ifndef PARLA_FAKECUDA_H
#define PARLA_FAKECUDA_H

/* Per process, since the last reset (fakecuda_counters). */
typedef struct fakecuda_counters {
    long allocs;      /* driver allocations: cuMemAlloc, cuMemAllocAsync, cuMemHostAlloc */
    long frees;       /* cuMemFree, cuMemFreeAsync, cuMemFreeHost */
    long syncs;       /* synchronising calls: cuMemAlloc, cuMemFree, cuMemcpy, cu*Synchronize,
                         cuMemHostRegister, host-device copies of pageable memory */
    long host_waits;  /* of them, the calls that blocked the caller for queued device work */
    long host_funcs;  /* cuLaunchHostFunc */
    long registers;   /* cuMemHostRegister that pinned a range */
    long pinned_copies, pageable_copies; /* cuMemcpyHtoDAsync / DtoHAsync, by their host side */
    long peer_copies, peer_direct;       /* cuMemcpyPeerAsync; of them over an enabled peer link */
    long pool_allocs;                    /* of allocs, cuMemAllocAsync */
} fakecuda_counters_t;

/* void fakecuda_counters(fakecuda_counters_t *out, int reset): the counters (reset: zero them after). */
typedef void (*fakecuda_counters_fn)(fakecuda_counters_t *out, int reset);
/* void fakecuda_live_host(long *n_pinned, long *pool_bytes): pinned host ranges alive, bytes kept in
 * the devices' memory pools. */
typedef void (*fakecuda_live_host_fn)(long *n_pinned, long *pool_bytes);
/* int fakecuda_kernel(void *stream, void (*fn)(void *), void *arg): a kernel launch (fn on the stream,
 * listed in the timeline). */
typedef int (*fakecuda_kernel_fn)(void *stream, void (*fn)(void *), void *arg);
/* void fakecuda_timeline_reset(void); void fakecuda_overlap(double *both, double *copies, double *kernels):
 * seconds a copy and a kernel ran at once on different streams, seconds of copies, of kernels. */
typedef void (*fakecuda_timeline_reset_fn)(void);
typedef void (*fakecuda_overlap_fn)(double *both, double *copies, double *kernels);

/* long fakecuda_device_bytes(int ordinal): bytes allocated on the device (its stream-ordered pool's included). */
typedef long (*fakecuda_device_bytes_fn)(int ordinal);
/* void fakecuda_on_copy(void (*fn)(void *), void *arg): fn(arg) at the start of each synchronous copy
 * (cuMemcpy), on the copying thread, no lock of the double held; NULL: none. */
typedef void (*fakecuda_on_copy_fn)(void (*fn)(void *), void *arg);

#endif
