/* error.c: error codes, per-thread error messages and the allocation wrappers
 * (with fault injection for tests). */
#include "core/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* The last error message of this thread. Per-thread by design: the API reports
 * details of a failed call to the thread that made it. */
static _Thread_local char last_message[512];

const char *parla_strerror(int code)
{
    switch (code) {
    case PARLA_OK: return "success";
    case PARLA_EINVAL: return "invalid argument";
    case PARLA_ENOMEM: return "out of memory";
    case PARLA_EBUSY: return "runtime has live tasks";
    case PARLA_ESTATE: return "object in wrong state";
    case PARLA_ESTUCK: return "tasks can never run (dependency never submitted)";
    case PARLA_EFAILED: return "task failed";
    case PARLA_ECANCELLED: return "task cancelled";
    case PARLA_ENODEV: return "no such device";
    case PARLA_ERESOURCE: return "resource needs exceed device capacity";
    case PARLA_ESYS: return "system call failed";
    case PARLA_EDEVICE: return "device operation failed";
    case PARLA_ETIMEDOUT: return "timed out";
    default: return "unknown error";
    }
}

const char *parla_last_error_message(void)
{
    return last_message;
}

int parla__error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    return code;
}

/* Returns true when this allocation must fail (fault injection). */
static bool inject_failure(parla_runtime_t *rt)
{
    if (rt == NULL || rt->fail_alloc_at == 0)
        return false;
    return atomic_fetch_add_explicit(&rt->alloc_count, 1, memory_order_relaxed) + 1 == rt->fail_alloc_at;
}

void *parla__alloc(parla_runtime_t *rt, size_t size)
{
    if (inject_failure(rt))
        return NULL;
    return malloc(size);
}

void *parla__calloc(parla_runtime_t *rt, size_t n, size_t size)
{
    if (inject_failure(rt))
        return NULL;
    return calloc(n, size);
}

void parla__free(void *p)
{
    free(p);
}
