/* The callback pool: a fixed set of threads that run jobs. The loop thread
 * submits jobs locally and hands them over in one batch per loop iteration;
 * threads take them in chunks and hand completions back in chunks, with one
 * wake-up of the loop for many jobs. */
#ifndef DM_POOL_H
#define DM_POOL_H

#include <stddef.h>
#include <uv.h>

/* Embedded first in the caller's job. */
typedef struct dm__job {
  struct dm__job *next;
  void (*run)(struct dm__job *j); /* on a pool thread */
  /* Its completion may wait for the loop's next dm__pool_collect instead
   * of waking the loop (periodic work, when the loop ticks soon anyway). */
  int lazy;
} dm__job;

typedef struct dm__pool dm__pool;
/* On the loop thread, once per finished job, in completion order. */
typedef void (*dm__pool_done_cb)(dm__job *j, void *ud);

int dm__pool_start(dm__pool **out, uv_loop_t *loop, unsigned threads,
                   dm__pool_done_cb done, void *ud);
/* Called on the loop for a finished job a few places ahead of the one
 * being handed back, to prefetch what done will read through it. */
void dm__pool_set_ahead(dm__pool *p, void (*ahead)(const dm__job *j));
/* Loop thread: queues j locally until the next flush. */
void dm__pool_submit(dm__pool *p, dm__job *j);
/* Loop thread: hands every locally queued job to the threads at once. */
void dm__pool_flush(dm__pool *p);
/* Loop thread: hands back what has finished. soon tells whether the loop
 * will call this again within a couple of milliseconds: while it will,
 * finished lazy jobs do not wake the loop; once it will not, every
 * completion wakes it again. */
void dm__pool_collect(dm__pool *p, int soon);
/* Jobs submitted and not yet handed back. */
size_t dm__pool_depth(const dm__pool *p);
unsigned dm__pool_threads(const dm__pool *p);
/* How many times the threads have woken the loop to hand jobs back. */
size_t dm__pool_wakes(dm__pool *p);
/* Stops the threads after the jobs they are running, and closes the async
 * handle. Jobs that never ran, and finished jobs not yet handed back, are
 * handed to done with run set to NULL, so the caller frees them in one
 * place. The pool's memory is released in the handle's close callback. */
void dm__pool_stop(dm__pool *p);

#endif
