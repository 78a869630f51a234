/* pool.c: the caching allocator of GPU memory. A freed block is kept (listed by size, 8 lists per power
 * of two) and the next allocation of the same size takes it without a driver call; sizes are not
 * rounded, so what the pool hands out is exactly what the device's account counts. Blocks come from the kind's
 * raw_alloc (cuda.c: the driver's stream-ordered pool, else cuMemAlloc). The bytes held, in use or
 * cached, never exceed the device's capacity: cached blocks are released first when they would, and
 * all of them when the driver runs out of memory. */
#include "device/device.h"

#include <stdlib.h>

enum { MIN_SIZE = 512 };

/* The list of cached blocks of n bytes: 8 per power of two (a block is reused for the same size only,
 * so the pool holds exactly what is asked and the device's account is the memory in use). */
static int size_class(uint64_t n)
{
    if (n <= MIN_SIZE)
        return 0;
    int k = 63 - __builtin_clzll(n - 1); /* 2^k < n <= 2^(k+1), k >= 9 */
    uint64_t step = (uint64_t)1 << (k - 3);
    uint64_t m = (n + step - 1) / step; /* 9..16 */
    return 1 + (k - 9) * 8 + (int)(m - 9);
}

static size_t bucket_of(const parla__dev_pool_t *p, const void *ptr)
{
    uint64_t h = ((uint64_t)(uintptr_t)ptr >> 9) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (p->n_buckets - 1);
}

/* Lists block b as in use (pool lock held); false without memory for a bigger table. */
static bool used_insert(parla__dev_pool_t *p, parla__dev_block_t *b)
{
    if (p->n_used + 1 > p->n_buckets) {
        size_t n = p->n_buckets ? p->n_buckets * 2 : 64;
        parla__dev_block_t **t = calloc(n, sizeof *t);
        if (t == NULL)
            return false;
        parla__dev_block_t **old = p->used;
        size_t old_n = p->n_buckets;
        p->used = t;
        p->n_buckets = n;
        for (size_t i = 0; i < old_n; i++) {
            while (old[i]) {
                parla__dev_block_t *x = old[i];
                old[i] = x->next;
                size_t k = bucket_of(p, x->ptr);
                x->next = t[k];
                t[k] = x;
            }
        }
        free(old);
    }
    size_t k = bucket_of(p, b->ptr);
    b->next = p->used[k];
    p->used[k] = b;
    p->n_used++;
    return true;
}

static parla__dev_block_t *used_remove(parla__dev_pool_t *p, const void *ptr)
{
    if (p->n_buckets == 0)
        return NULL;
    for (parla__dev_block_t **q = &p->used[bucket_of(p, ptr)]; *q; q = &(*q)->next) {
        if ((*q)->ptr == ptr) {
            parla__dev_block_t *b = *q;
            *q = b->next;
            p->n_used--;
            return b;
        }
    }
    return NULL;
}

void parla__dev_pool_init(parla__dev_t *d, bool on)
{
    parla__dev_pool_t *p = &d->pool;
    pthread_mutex_init(&p->lock, NULL);
    p->on = on;
}

/* Releases cached blocks, largest classes first, until at most keep bytes stay cached. Pool lock held. */
static uint64_t trim_locked(parla__dev_t *d, uint64_t keep)
{
    parla__dev_pool_t *p = &d->pool;
    uint64_t released = 0;
    for (int c = PARLA__POOL_CLASSES - 1; c >= 0 && p->cached > keep; c--) {
        while (p->free[c] && p->cached > keep) {
            parla__dev_block_t *b = p->free[c];
            p->free[c] = b->next;
            d->ops->raw_free(d, b->ptr);
            p->cached -= b->size;
            p->held -= b->size;
            released += b->size;
            p->trims++;
            free(b);
        }
    }
    if (released && d->ops->raw_trim)
        d->ops->raw_trim(d);
    return released;
}

uint64_t parla__dev_pool_trim(parla__dev_t *d, uint64_t keep)
{
    pthread_mutex_lock(&d->pool.lock);
    uint64_t n = trim_locked(d, keep);
    pthread_mutex_unlock(&d->pool.lock);
    return n;
}

/* A block of n bytes from the driver, making room first (pool lock held): cached blocks go back
 * when the pool would hold more than the device's capacity, all of them when the driver is out of
 * memory. */
static int fresh_locked(parla__dev_t *d, uint64_t n, void **ptr)
{
    parla__dev_pool_t *p = &d->pool;
    if (p->held + n > d->memory_capacity) {
        uint64_t over = p->held + n - d->memory_capacity;
        trim_locked(d, p->cached > over ? p->cached - over : 0);
    }
    int rc = d->ops->raw_alloc(d, n, ptr);
    if (rc == PARLA_ENOMEM && p->cached) {
        trim_locked(d, 0);
        rc = d->ops->raw_alloc(d, n, ptr);
    }
    return rc;
}

int parla__dev_pool_alloc(parla__dev_t *d, uint64_t n, void **out)
{
    parla__dev_pool_t *p = &d->pool;
    if (!p->on)
        return d->ops->raw_alloc(d, n, out);
    int c = size_class(n);
    parla__dev_block_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return PARLA_ENOMEM;
    pthread_mutex_lock(&p->lock);
    parla__dev_block_t **q = &p->free[c];
    while (*q && (*q)->size != n)
        q = &(*q)->next;
    parla__dev_block_t *hit = *q;
    int rc = 0;
    if (hit) {
        *q = hit->next;
        p->cached -= hit->size;
        p->hits++;
        free(b);
        b = hit;
    } else {
        rc = fresh_locked(d, n, &b->ptr);
        if (rc == 0) {
            b->size = n;
            p->held += n;
            p->misses++;
        }
    }
    if (rc == 0 && !used_insert(p, b)) {
        /* No memory to list it: back to the driver. */
        d->ops->raw_free(d, b->ptr);
        p->held -= b->size;
        rc = PARLA_ENOMEM;
    }
    pthread_mutex_unlock(&p->lock);
    if (rc) {
        free(b);
        return rc;
    }
    *out = b->ptr;
    return 0;
}

void parla__dev_pool_free(parla__dev_t *d, void *ptr)
{
    parla__dev_pool_t *p = &d->pool;
    if (ptr == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    parla__dev_block_t *b = p->on ? used_remove(p, ptr) : NULL;
    if (b == NULL) {
        pthread_mutex_unlock(&p->lock);
        d->ops->raw_free(d, ptr); /* pool off: the driver's */
        return;
    }
    int c = size_class(b->size);
    b->next = p->free[c];
    p->free[c] = b;
    p->cached += b->size;
    pthread_mutex_unlock(&p->lock);
}

void parla__dev_pool_bytes(parla__dev_t *d, uint64_t *held, uint64_t *cached)
{
    pthread_mutex_lock(&d->pool.lock);
    *held = d->pool.held;
    *cached = d->pool.cached;
    pthread_mutex_unlock(&d->pool.lock);
}

void parla__dev_pool_destroy(parla__dev_t *d)
{
    parla__dev_pool_t *p = &d->pool;
    trim_locked(d, 0);
    for (size_t i = 0; i < p->n_buckets; i++) {
        while (p->used[i]) { /* blocks their users never gave back */
            parla__dev_block_t *b = p->used[i];
            p->used[i] = b->next;
            d->ops->raw_free(d, b->ptr);
            free(b);
        }
    }
    if (d->ops->raw_trim)
        d->ops->raw_trim(d);
    free(p->used);
    p->used = NULL;
    p->n_buckets = p->n_used = 0;
    p->held = p->cached = 0;
    pthread_mutex_destroy(&p->lock);
}

int parla__dev_mem_alloc(parla__dev_t *d, uint64_t n, bool account, void **out)
{
    if (account && d->index != 0) {
        pthread_mutex_lock(&d->lock);
        bool fits = d->resident + d->claimed + (d->memory_capacity - d->memory_free) + n <= d->memory_capacity;
        if (fits)
            d->resident += n;
        pthread_mutex_unlock(&d->lock);
        if (!fits)
            return PARLA_ENOMEM;
    }
    int rc = d->ops->alloc(d, n, out);
    if (rc && account && d->index != 0) {
        pthread_mutex_lock(&d->lock);
        d->resident -= n;
        pthread_mutex_unlock(&d->lock);
    }
    return rc;
}

void parla__dev_mem_free(parla__dev_t *d, void *ptr, uint64_t n, bool account)
{
    if (ptr == NULL)
        return;
    d->ops->free(d, ptr);
    if (account && d->index != 0) {
        pthread_mutex_lock(&d->lock);
        d->resident -= n;
        pthread_mutex_unlock(&d->lock);
    }
}
