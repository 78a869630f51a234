/* error.c: error codes, the per-thread error message, the names of task states. */
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>

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

static const char *const state_names[] = {
    "created", "submitted", "ready", "running", "suspended", "runahead", "done", "failed", "cancelled",
};

const char *parla_task_state_name(parla_task_state_t s)
{
    if ((unsigned)s < sizeof state_names / sizeof state_names[0])
        return state_names[s];
    return "invalid";
}
