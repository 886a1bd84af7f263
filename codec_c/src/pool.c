/* pool.c - a minimal fork-join work queue over POSIX threads. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <unistd.h>

#include "pool.h"

#define FC_MAX_THREADS 256

typedef struct work {
    pthread_mutex_t lock;
    size_t next, n;
    fc_task_fn fn;
    void *ctx;
} work;

static void *worker(void *arg)
{
    work *w = (work *)arg;
    for (;;) {
        size_t i;
        pthread_mutex_lock(&w->lock);
        i = w->next < w->n ? w->next++ : w->n;
        pthread_mutex_unlock(&w->lock);
        if (i >= w->n) break;
        w->fn(w->ctx, i);
    }
    return NULL;
}

unsigned fc_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    if (n > FC_MAX_THREADS) return FC_MAX_THREADS;
    return (unsigned)n;
}

void fc_parallel_for(size_t n, unsigned threads, fc_task_fn fn, void *ctx)
{
    pthread_t tid[FC_MAX_THREADS];
    int started[FC_MAX_THREADS];
    work w;
    unsigned t, extra;
    if (n == 0) return;
    if (threads == 0) threads = fc_online_cpus();
    if (threads > FC_MAX_THREADS) threads = FC_MAX_THREADS;
    if (threads > n) threads = (unsigned)n;
    if (threads <= 1) {
        size_t i;
        for (i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    w.next = 0;
    w.n = n;
    w.fn = fn;
    w.ctx = ctx;
    pthread_mutex_init(&w.lock, NULL);
    extra = threads - 1;
    for (t = 0; t < extra; t++) started[t] = pthread_create(&tid[t], NULL, worker, &w) == 0;
    worker(&w);
    for (t = 0; t < extra; t++)
        if (started[t]) pthread_join(tid[t], NULL);
    pthread_mutex_destroy(&w.lock);
}
