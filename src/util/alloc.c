/* alloc.c: the allocation wrappers, with fault injection for tests; the
 * runtime's creating process and the calling thread's identity. */
#include "util/util.h"

#include <stdlib.h>
#include <unistd.h>

_Thread_local parla__self_t *parla__self_tls;

/* getpid() is a system call, made at every task creation and submission: each thread keeps the answer,
 * forgotten in a fork() child (its one thread runs the handler; threads started later begin with 0). The
 * handler is registered, once per process, before any thread keeps a pid. */
static _Thread_local int self_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_forget(void)
{
    self_pid = 0;
}

static void pid_register(void)
{
    pthread_atfork(NULL, NULL, pid_forget);
}

static int current_pid(void)
{
    if (self_pid == 0) {
        pthread_once(&pid_once, pid_register);
        self_pid = (int)getpid();
    }
    return self_pid;
}

int parla__check_process(const parla_runtime_t *rt, const char *fn)
{
    int pid = rt ? parla__rt_head(rt)->pid : 0;
    if (rt == NULL || pid == current_pid())
        return 0;
    return parla__error(PARLA_ESTATE,
                        "%s: the runtime was created by process %d; this process (%d) is a fork() child, where its "
                        "worker threads do not exist", fn, pid, (int)getpid());
}

/* Returns true when this allocation must fail (fault injection). */
static bool inject_failure(parla_runtime_t *rt)
{
    parla__alloc_t *a = (parla__alloc_t *)(void *)rt; /* the runtime's first member (util.h) */
    if (a == NULL || a->fail_at == 0)
        return false;
    return atomic_fetch_add_explicit(&a->count, 1, memory_order_relaxed) + 1 == a->fail_at;
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
