/* pool.h - run n independent tasks on up to `threads` threads. */
#ifndef FC_POOL_H
#define FC_POOL_H

#include <stddef.h>

typedef void (*fc_task_fn)(void *ctx, size_t index);

/* Runs fn(ctx, i) for i in [0, n), each exactly once, on min(threads, n)
 * threads including the caller's (threads 0: all online CPUs).  Returns
 * when all are done.  If a thread cannot be started the remaining threads
 * (at least the caller) do its share. */
void fc_parallel_for(size_t n, unsigned threads, fc_task_fn fn, void *ctx);

unsigned fc_online_cpus(void);

#endif
