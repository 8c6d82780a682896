/* One timer structure for every worker: a hashed timing wheel of 1 ms
 * slots, driven by a single libuv timer. Timers are intrusive (embedded in
 * the worker), so arming one allocates nothing and costs O(1). */
#ifndef DM_WHEEL_H
#define DM_WHEEL_H

#include <stddef.h>
#include <stdint.h>

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
/* Microseconds until the earliest non-empty slot, at most cap. */
uint64_t dm__wheel_next_in(const dm__wheel *w, uint64_t now_us, uint64_t cap);

#endif
