/* placeholder.c: the registry of never-submitted tasks that others depend on. */
#include "graph/graph.h"

#include <string.h>

/* ----------------------------------------------------------- placeholders -- */

int parla__graph_placeholder_add(parla_runtime_t *rt, parla_task_t *t)
{
    int rc = 0;
    pthread_mutex_lock(&parla__graph_rt(rt)->placeholder_lock);
    if (!(atomic_load(&t->flags) & PARLA__F_LISTED)) {
        if (parla__graph_rt(rt)->n_placeholders == parla__graph_rt(rt)->cap_placeholders) {
            size_t cap = parla__graph_rt(rt)->cap_placeholders ? 2 * parla__graph_rt(rt)->cap_placeholders : 16;
            parla_task_t **p = parla__alloc(rt, cap * sizeof *p);
            if (p == NULL) {
                rc = parla__error(PARLA_ENOMEM, "cannot record never-submitted task %s", parla_task_name(t));
                goto out;
            }
            if (parla__graph_rt(rt)->n_placeholders)
                memcpy(p, parla__graph_rt(rt)->placeholders, parla__graph_rt(rt)->n_placeholders * sizeof *p);
            parla__free(parla__graph_rt(rt)->placeholders);
            parla__graph_rt(rt)->placeholders = p;
            parla__graph_rt(rt)->cap_placeholders = cap;
        }
        atomic_fetch_or(&t->flags, PARLA__F_LISTED);
        if (atomic_load(&t->state) != PARLA_TASK_CREATED) {
            /* Submitted meanwhile (see parla_task_submit). */
            atomic_fetch_and(&t->flags, ~PARLA__F_LISTED);
            goto out;
        }
        parla_task_retain(t);
        t->ph_index = (uint32_t)parla__graph_rt(rt)->n_placeholders;
        parla__graph_rt(rt)->placeholders[parla__graph_rt(rt)->n_placeholders++] = t;
    }
out:
    pthread_mutex_unlock(&parla__graph_rt(rt)->placeholder_lock);
    return rc;
}

void parla__graph_placeholder_remove(parla_runtime_t *rt, parla_task_t *t)
{
    bool found = false;
    pthread_mutex_lock(&parla__graph_rt(rt)->placeholder_lock);
    size_t i = t->ph_index;
    if ((atomic_load(&t->flags) & PARLA__F_LISTED) && i < parla__graph_rt(rt)->n_placeholders && parla__graph_rt(rt)->placeholders[i] == t) {
        parla_task_t *last = parla__graph_rt(rt)->placeholders[--parla__graph_rt(rt)->n_placeholders];
        parla__graph_rt(rt)->placeholders[i] = last;
        last->ph_index = (uint32_t)i;
        found = true;
    }
    atomic_fetch_and(&t->flags, ~PARLA__F_LISTED);
    pthread_mutex_unlock(&parla__graph_rt(rt)->placeholder_lock);
    if (found)
        parla_task_release(t);
}

size_t parla_runtime_unsubmitted(parla_runtime_t *rt, parla_task_t **out, size_t cap)
{
    if (rt == NULL)
        return 0;
    if (out == NULL)
        cap = 0;
    pthread_mutex_lock(&parla__graph_rt(rt)->placeholder_lock);
    size_t n = parla__graph_rt(rt)->n_placeholders;
    for (size_t i = 0; i < n && i < cap; i++) {
        parla_task_retain(parla__graph_rt(rt)->placeholders[i]);
        out[i] = parla__graph_rt(rt)->placeholders[i];
    }
    pthread_mutex_unlock(&parla__graph_rt(rt)->placeholder_lock);
    return n;
}
