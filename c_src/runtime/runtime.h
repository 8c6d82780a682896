/* runtime: the timer wheel and the callback pool. Depends on base and
 * libuv only. */
#ifndef DM_RUNTIME_H
#define DM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- wheel ---------------------------------------------------------------*/
/* One timer structure for every worker: a hashed timing wheel of 1 ms
 * slots, driven by a single libuv timer. Timers are intrusive (embedded in
 * the worker), so arming one allocates nothing and costs O(1). */

/* Each slot holds an array of timers rather than a list, so firing a slot
 * walks memory it can prefetch ahead instead of chasing pointers, one
 * cache miss after the other, through a million workers. */
typedef struct dm__timer {
  uint64_t due; /* microseconds */
  uint32_t slot; /* index of its slot, DM__TIMER_OFF when not armed */
  uint32_t pos;  /* index in that slot's array */
} dm__timer;
#define DM__TIMER_OFF UINT32_MAX
typedef struct {
  dm__timer **v;
  uint32_t n, cap;
} dm__wheel_slot;
typedef struct {
  dm__wheel_slot *slots; /* nslots arrays */
  size_t nslots;         /* a power of two */
  uint64_t now_ms;       /* the next slot to process, in ms */
  size_t count;          /* armed timers */
  dm__wheel_slot walk;   /* the slot being fired, taken out of its place */
  uint32_t walk_slot;    /* its index, DM__TIMER_OFF when not firing */
  uint32_t walk_i, walk_k; /* where a walk stopped by max_fire resumes */
  dm__wheel_slot spare;  /* the array of a slot that emptied, for the next */
  /* When set, called a few timers ahead of firing, once the timer's own
   * memory is on its way: to prefetch what fire will read through it. */
  void (*ahead)(const dm__timer *t);
} dm__wheel;
int dm__wheel_init(dm__wheel *w, size_t nslots, uint64_t now_us);
/* Timers still armed are forgotten, not touched. */
void dm__wheel_free(dm__wheel *w);
void dm__timer_init(dm__timer *t);
int dm__timer_armed(const dm__timer *t);
/* Arms (or re-arms) t. A due in the past fires at the next advance.
 * 0, or DM_ENOMEM with t left disarmed. */
int dm__wheel_add(dm__wheel *w, dm__timer *t, uint64_t due_us);
/* Disarms t; nothing when it is not armed. */
void dm__wheel_del(dm__wheel *w, dm__timer *t);
/* Fires every timer due at or before now_us (unlinked before fire is
 * called; fire may add or delete any timer). Stops after max_fire timers
 * (0: no limit) and resumes there on the next call. Returns how many fired. */
size_t dm__wheel_advance(dm__wheel *w, uint64_t now_us, size_t max_fire,
                         void (*fire)(dm__timer *t, void *ud), void *ud);
/* The timer from was copied to `to` (its owner moved): the wheel refers
 * to `to` from now on. Nothing when it is not armed. */
void dm__wheel_moved(dm__wheel *w, const dm__timer *from, dm__timer *to);
/* Slot arrays much larger than their timers are made smaller; empty ones
 * are freed. For after many timers went, or crowded into few slots.
 * Returns the KiB given back, roughly. */
size_t dm__wheel_shrink(dm__wheel *w);
/* Microseconds until the earliest non-empty slot, at most cap. */
uint64_t dm__wheel_next_in(const dm__wheel *w, uint64_t now_us, uint64_t cap);

/* ---- pool ----------------------------------------------------------------*/
/* The callback pool: a fixed set of threads that run jobs. The loop thread
 * submits jobs locally and hands them over in one batch per loop iteration;
 * threads take them in chunks and hand completions back in chunks, with one
 * wake-up of the loop for many jobs. */

/* Embedded first in the caller's job. */
typedef struct dm__job {
  struct dm__job *next;
  void (*run)(struct dm__job *j); /* on a pool thread */
  /* Its completion may wait for the loop's next dm__pool_collect instead
   * of waking the loop (periodic work, when the loop ticks soon anyway). */
  int lazy;
  /* When a pool thread began running it, in microseconds of
   * CLOCK_MONOTONIC (uv_hrtime's clock); set by the pool. */
  uint64_t started_us;
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
