/* The timer wheel: every worker's next perform, in slots of a millisecond. */
#include "runtime/runtime.h"

#include <string.h>

#include "base/base.h"
#include "dm.h"

/* Timers looked at ahead of the one being fired. */
#define PREFETCH 8

int dm__wheel_init(dm__wheel *w, size_t nslots, uint64_t now_us) {
  memset(w, 0, sizeof *w);
  if (nslots == 0 || (nslots & (nslots - 1)) || nslots >= DM__TIMER_OFF)
    return DM_EINVAL;
  w->slots = dm__calloc(nslots, sizeof *w->slots);
  if (!w->slots)
    return DM_ENOMEM;
  w->nslots = nslots;
  w->now_ms = now_us / 1000;
  w->walk_slot = DM__TIMER_OFF;
  return 0;
}

void dm__wheel_free(dm__wheel *w) {
  for (size_t i = 0; w->slots && i < w->nslots; i++)
    dm__free(w->slots[i].v);
  dm__free(w->slots);
  dm__free(w->walk.v);
  dm__free(w->spare.v);
  memset(w, 0, sizeof *w);
  w->walk_slot = DM__TIMER_OFF;
}

void dm__timer_init(dm__timer *t) {
  t->slot = DM__TIMER_OFF;
  t->pos = 0;
  t->due = 0;
}

int dm__timer_armed(const dm__timer *t) { return t->slot != DM__TIMER_OFF; }

/* The room a slot's array grows to from cap. Arrays pass from slot to
 * slot (see push), so each ends up as large as the most crowded slot it
 * served: doubling would keep a million timers, spread evenly over a
 * period, in arrays nearly twice their size, 8 MB more. Past a few hundred
 * an array grows by an eighth instead, and a big one only by mremap. */
static uint32_t next_cap(uint32_t cap) {
  if (cap < 256)
    return cap ? cap * 2 : 16;
  uint64_t next = ((uint64_t)cap + cap / 8 + 15) & ~(uint64_t)15;
  return next < UINT32_MAX ? (uint32_t)next : UINT32_MAX;
}

/* The spare array is next filled with the timers re-armed from the slot
 * it came from: periodic timers all one period apart fill it with as
 * many as that slot held. It keeps room for about that many, so that an
 * array grown in a burst (a boot, a stall) does not pass from slot to
 * slot at that size for ever. */
static void fit(dm__wheel_slot *s, uint32_t held) {
  uint64_t want = ((uint64_t)held + held / 8 + 16 + 15) & ~(uint64_t)15;
  if (s->cap <= want + want / 8)
    return;
  dm__timer **v = dm__realloc(s->v, (size_t)want * sizeof *v);
  if (v) { /* else it keeps its room */
    s->v = v;
    s->cap = (uint32_t)want;
  }
}

static int push(dm__wheel *w, dm__wheel_slot *s, dm__timer *t) {
  if (!s->cap && w->spare.cap) {
    /* Slots fill and empty one after the other: an emptied slot's array
     * serves the next one, so a revolution allocates nothing and only
     * slots holding timers hold memory. */
    *s = w->spare;
    memset(&w->spare, 0, sizeof w->spare);
  }
  if (s->n == s->cap) {
    uint32_t cap = next_cap(s->cap);
    dm__timer **v = dm__realloc(s->v, (size_t)cap * sizeof *v);
    if (!v)
      return DM_ENOMEM;
    s->v = v;
    s->cap = cap;
  }
  t->pos = s->n;
  s->v[s->n++] = t;
  return 0;
}

void dm__wheel_del(dm__wheel *w, dm__timer *t) {
  if (t->slot == DM__TIMER_OFF)
    return;
  if (t->slot == w->walk_slot && t->pos < w->walk.n && w->walk.v[t->pos] == t) {
    /* In the slot being fired: its place is left empty and skipped. */
    w->walk.v[t->pos] = NULL;
  } else {
    dm__wheel_slot *s = &w->slots[t->slot];
    dm__timer *last = s->v[--s->n];
    s->v[t->pos] = last;
    last->pos = t->pos;
  }
  t->slot = DM__TIMER_OFF;
  w->count--;
}

void dm__wheel_moved(dm__wheel *w, const dm__timer *from, dm__timer *to) {
  if (to->slot == DM__TIMER_OFF)
    return;
  if (to->slot == w->walk_slot && to->pos < w->walk.n && w->walk.v[to->pos] == from)
    w->walk.v[to->pos] = to;
  else
    w->slots[to->slot].v[to->pos] = to;
}

size_t dm__wheel_shrink(dm__wheel *w) {
  enum { MIN = 16 };
  size_t freed = 0; /* slots' worth */
  for (size_t i = 0; i < w->nslots; i++) {
    dm__wheel_slot *s = &w->slots[i];
    if (s->n == 0 && s->cap > MIN) {
      freed += s->cap;
      dm__free(s->v);
      memset(s, 0, sizeof *s);
    } else if (s->cap > MIN && s->n < s->cap / 4) {
      uint32_t cap = s->n * 2 > MIN ? s->n * 2 : MIN;
      dm__timer **v = dm__realloc(s->v, (size_t)cap * sizeof *v);
      if (v) { /* else it keeps its room */
        freed += s->cap - cap;
        s->v = v;
        s->cap = cap;
      }
    }
  }
  if (w->spare.cap > MIN) {
    freed += w->spare.cap;
    dm__free(w->spare.v);
    memset(&w->spare, 0, sizeof w->spare);
  }
  return freed * sizeof(dm__timer *) / 1024;
}

int dm__wheel_add(dm__wheel *w, dm__timer *t, uint64_t due_us) {
  dm__wheel_del(w, t);
  uint64_t ms = due_us / 1000;
  /* Past dues go into the next slot processed. */
  if (ms < w->now_ms)
    ms = w->now_ms;
  uint32_t slot = (uint32_t)(ms & (w->nslots - 1));
  /* The slot being fired only takes back what it held, into room kept
   * for it; a timer a whole revolution ahead waits in the next slot, one
   * millisecond later than asked. */
  if (slot == w->walk_slot)
    slot = (slot + 1) & (uint32_t)(w->nslots - 1);
  if (push(w, &w->slots[slot], t))
    return DM_ENOMEM;
  t->due = due_us;
  t->slot = slot;
  w->count++;
  return 0;
}

/* Keeps t at index k of the walked array, which becomes its slot's again. */
static void keep(dm__wheel *w, uint32_t k, dm__timer *t) {
  w->walk.v[k] = t;
  t->pos = k;
}

size_t dm__wheel_advance(dm__wheel *w, uint64_t now_us, size_t max_fire,
                         void (*fire)(dm__timer *t, void *ud), void *ud) {
  uint64_t now_ms = now_us / 1000, start = w->now_ms;
  size_t fired = 0;
  if (now_ms < start)
    return 0;
  /* After a gap longer than a revolution every slot is visited once. */
  uint64_t visits = now_ms - start + 1;
  if (visits > w->nslots)
    visits = w->nslots;
  /* Timers armed from inside fire with a due in the past land in the next
   * slot to process, never in the one being walked. */
  w->now_ms = now_ms + 1;
  for (uint64_t v = 0; v < visits; v++) {
    uint64_t slot_ms = start + v;
    uint32_t idx = (uint32_t)(slot_ms & (w->nslots - 1));
    dm__wheel_slot *s = &w->slots[idx];
    uint32_t i = 0, k = 0;
    if (w->walk_slot == idx) {
      /* Resuming a walk that max_fire stopped: a slot crowded by a backlog
       * is walked once in all, not once per call. */
      i = w->walk_i;
      k = w->walk_k;
    } else {
      if (!s->n)
        continue;
      /* The slot's array is taken out and walked; nothing is added to the
       * slot meanwhile (see dm__wheel_add), and what stays is compacted to
       * the front of the same array, so the walk allocates nothing. */
      w->walk = *s;
      memset(s, 0, sizeof *s);
      w->walk_slot = idx;
    }
    int stopped = 0;
    for (; i < w->walk.n; i++) {
      if (i + PREFETCH < w->walk.n && w->walk.v[i + PREFETCH]) {
        const char *ahead = (const char *)w->walk.v[i + PREFETCH];
        __builtin_prefetch(ahead, 1);
        __builtin_prefetch(ahead + 64, 1);
      }
      if (w->ahead && i + PREFETCH / 2 < w->walk.n && w->walk.v[i + PREFETCH / 2])
        w->ahead(w->walk.v[i + PREFETCH / 2]);
      dm__timer *t = w->walk.v[i];
      if (!t)
        continue;
      w->walk.v[i] = NULL;
      if (t->due / 1000 > now_ms) {
        keep(w, k++, t); /* due in a later revolution */
        continue;
      }
      t->slot = DM__TIMER_OFF;
      w->count--;
      fire(t, ud);
      fired++;
      if (max_fire && fired >= max_fire) {
        stopped = 1;
        i++;
        break;
      }
    }
    if (stopped) {
      /* The next call resumes here, in this slot. */
      w->walk_i = i;
      w->walk_k = k;
      w->now_ms = slot_ms;
      return fired;
    }
    /* fire may have deleted timers already kept: close the gaps. */
    uint32_t held = w->walk.n, n = 0;
    for (uint32_t q = 0; q < k; q++)
      if (w->walk.v[q])
        keep(w, n++, w->walk.v[q]);
    w->walk.n = n;
    if (n) {
      *s = w->walk;
    } else if (!w->spare.cap) {
      w->spare = w->walk;
      fit(&w->spare, held);
    } else {
      dm__free(w->walk.v);
    }
    memset(&w->walk, 0, sizeof w->walk);
    w->walk_slot = DM__TIMER_OFF;
  }
  return fired;
}

uint64_t dm__wheel_next_in(const dm__wheel *w, uint64_t now_us, uint64_t cap) {
  if (!w->count)
    return cap;
  uint64_t now_ms = now_us / 1000;
  uint64_t from = w->now_ms > now_ms ? w->now_ms : now_ms;
  if (w->now_ms <= now_ms)
    return 0; /* slots are due for processing already */
  uint64_t limit = cap / 1000 + 1;
  if (limit > w->nslots)
    limit = w->nslots;
  for (uint64_t k = 0; k < limit; k++) {
    if (w->slots[(from + k) & (w->nslots - 1)].n) {
      uint64_t at = (from + k) * 1000;
      uint64_t in = at > now_us ? at - now_us : 0;
      return in < cap ? in : cap;
    }
  }
  return cap;
}
