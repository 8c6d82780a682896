/* Memory back after many workers went: once workers fill less than a
 * quarter of the slab, the survivors move into its first chunks and the
 * others are freed, and the children and pid tables shrink to what is
 * left in them. And after a burst: the jobs and timer arrays it left.
 * Loop thread, in the prepare phase: no walk over a table is under way
 * then. */
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "base/base.h"
#include "dm/mgr.h"

/* One look a second at most: a burst of dels is over before its memory
 * moves. A worker busy at a look holds its chunk, whose other workers
 * moved out: the next look comes soon, to move the few left. A look that
 * could give nothing back doubles the wait, up to a minute. Each wait is
 * drawn up to twice as long: with a fixed wait, workers ticking at a
 * period that divides it would be busy at every look. */
#define COMPACT_EVERY_MS 1000
#define COMPACT_RETRY_MS 100
#define COMPACT_MAX_WAIT_MS 60000

static uint64_t jitter(uint64_t now_ms, uint64_t wait) {
  uint64_t x = now_ms * 0x9E3779B97F4A7C15ull;
  return (x >> 40) % (wait + 1);
}

static int live(const void *slot, void *ud) {
  (void)ud;
  return ((const dm__worker *)slot)->opts != NULL;
}

/* A worker with a callback in flight stays where it is: its job holds
 * its address. So does a stopping one, whose terminate runs. Every other
 * holder of a worker's address (the pid table, the wheel) is told here. */
static int move(void *from, void *to, void *ud) {
  dm__sched *s = ud;
  dm__worker *a = from, *b = to;
  if (a->proc.flags & (DM__W_BUSY | DM__W_STOPPING))
    return 1;
  memcpy(b, a, s->workers.size);
  s->compact_moves++;
  /* Checkpoints find a worker where it lies in memory: at its new place
   * it is written again. */
  dm__durable_dirty(b);
  /* The children table holds its pid key, which stays. */
  if (b->proc.key)
    (void)dm__proctab_moved(&s->node->pids, &b->proc);
  dm__wheel_moved(&s->wheel, &a->timer, &b->timer);
  a->opts = NULL;
  return 0;
}

static int tables_oversized(const dm__sched *s) {
  if (dm__slab_sparse(&s->workers) || dm__proctab_sparse(&s->node->pids))
    return 1;
  for (size_t i = 0; i < s->nmanagers; i++)
    if (dm__children_sparse(s->managers[i]))
      return 1;
  return 0;
}

/* Slots of the tables, all together: what a shrink makes smaller. */
static size_t table_slots(const dm__sched *s) {
  size_t n = s->node->pids.cap;
  for (size_t i = 0; i < s->nmanagers; i++)
    n += s->managers[i]->cap;
  return n;
}

static void wait_next(dm__sched *s, uint64_t now_ms, uint64_t wait) {
  s->compact_wait_ms = wait < COMPACT_MAX_WAIT_MS ? wait : COMPACT_MAX_WAIT_MS;
  s->compact_jitter_ms = jitter(now_ms, s->compact_wait_ms);
}

/* What a burst leaves behind: a stall (a big reply, a slow disk) is
 * followed by a million overdue performs at once. Their jobs, kept for
 * reuse with their buffers, and the wheel's slot arrays, grown while the
 * re-armed timers crowded into a few slots, would hold tens of MB for
 * good. Once a second both go back to what is in use. */
static void trim_burst(dm__sched *s, uint64_t now_ms) {
  enum { LOTS = 1024 }; /* about a MiB: a job and its buffers are about a KiB */
  if (now_ms - s->jobs_trimmed_ms < COMPACT_EVERY_MS)
    return;
  s->jobs_trimmed_ms = now_ms;
  size_t n = 0;
  for (size_t i = 0; i < s->nmanagers; i++)
    n += dm__jobs_trim(s->managers[i]);
  n += dm__wheel_shrink(&s->wheel);
#ifdef __GLIBC__
  if (n >= LOTS)
    malloc_trim(0);
#endif
}

/* A chunk that stayed behind a freed one has a new place, and so have its
 * workers: like moved ones, they are written again at the next
 * checkpoint. was: the chunks before the shrink. */
static void moved_up(dm__sched *s, char *const *was) {
  const dm__slab *sl = &s->workers;
  char *base;
  size_t n;
  for (size_t k = 0; (base = dm__slab_chunk(sl, k, &n)); k++) {
    if (base == was[k])
      continue;
    for (size_t i = 0; i < n; i++) {
      dm__worker *w = (dm__worker *)(base + i * sl->size);
      if (w->opts)
        dm__durable_dirty(w);
    }
  }
}

void dm__sched_compact(dm__sched *s, uint64_t now_ms) {
  trim_burst(s, now_ms);
  if (!s->compact_wait_ms)
    s->compact_wait_ms = COMPACT_EVERY_MS;
  if (now_ms - s->compacted_ms < s->compact_wait_ms + s->compact_jitter_ms)
    return;
  s->compacted_ms = now_ms;
  if (!tables_oversized(s)) {
    wait_next(s, now_ms, COMPACT_EVERY_MS);
    return;
  }
  /* A checkpoint written in parts finds workers where they were when it
   * began: a worker moved behind its cursor would go unrecorded. */
  for (size_t i = 0; i < s->nmanagers; i++)
    if (s->managers[i]->mid_checkpoint) {
      wait_next(s, now_ms, COMPACT_RETRY_MS);
      return;
    }
  size_t before = s->workers.nchunks, slots = table_slots(s);
  uint64_t moves = s->compact_moves;
  char **was = dm__malloc(before * sizeof *was);
  if (!was)
    return; /* the next look tries again */
  memcpy(was, s->workers.chunks, before * sizeof *was);
  size_t freed = dm__slab_shrink(&s->workers, live, move, s);
  moved_up(s, was);
  dm__free(was);
  for (size_t i = 0; i < s->nmanagers; i++)
    dm__children_shrink(s->managers[i]);
  dm__proctab_shrink(&s->node->pids);
  if (!freed && moves == s->compact_moves && table_slots(s) == slots) {
    wait_next(s, now_ms, s->compact_wait_ms * 2);
    return;
  }
  /* Chunks past what the workers need stayed for a busy worker. */
  const dm__slab *sl = &s->workers;
  int stayed = sl->nchunks > sl->live / sl->per_chunk + 1;
  wait_next(s, now_ms, stayed ? COMPACT_RETRY_MS : COMPACT_EVERY_MS);
#ifdef __GLIBC__
  /* Payloads and ids freed with their workers sit in malloc's free lists:
   * the whole pages among them go back to the system. */
  malloc_trim(0);
#endif
  s->compactions++;
  DM_INFO("%zu workers: %zu of %zu slab chunks freed, tables shrunk", s->workers.live,
          freed, before);
}
