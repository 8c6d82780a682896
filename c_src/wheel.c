#include "wheel.h"

#include <string.h>

#include "alloc.h"
#include "dm.h"

int dm__wheel_init(dm__wheel *w, size_t nslots, uint64_t now_us) {
  if (nslots == 0 || (nslots & (nslots - 1)))
    return DM_EINVAL;
  w->slots = dm__malloc(nslots * sizeof *w->slots);
  if (!w->slots)
    return DM_ENOMEM;
  for (size_t i = 0; i < nslots; i++)
    w->slots[i].next = w->slots[i].prev = &w->slots[i];
  w->nslots = nslots;
  w->now_ms = now_us / 1000;
  w->count = 0;
  return 0;
}

void dm__wheel_free(dm__wheel *w) {
  dm__free(w->slots);
  memset(w, 0, sizeof *w);
}

void dm__timer_init(dm__timer *t) { t->next = t->prev = NULL; }

int dm__timer_armed(const dm__timer *t) { return t->next != NULL; }

void dm__wheel_del(dm__wheel *w, dm__timer *t) {
  if (!t->next)
    return;
  t->prev->next = t->next;
  t->next->prev = t->prev;
  t->next = t->prev = NULL;
  w->count--;
}

void dm__wheel_add(dm__wheel *w, dm__timer *t, uint64_t due_us) {
  dm__wheel_del(w, t);
  uint64_t ms = due_us / 1000;
  /* Past dues go into the next slot processed. */
  if (ms < w->now_ms)
    ms = w->now_ms;
  dm__timer *head = &w->slots[ms & (w->nslots - 1)];
  t->due = due_us;
  t->prev = head->prev;
  t->next = head;
  head->prev->next = t;
  head->prev = t;
  w->count++;
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
    dm__timer *head = &w->slots[slot_ms & (w->nslots - 1)];
    if (head->next == head)
      continue;
    /* Move the whole slot onto a local list in O(1) and walk that: fire
     * may re-arm or delete any timer, and re-arming unlinks it from here
     * first, so the walk never sees a timer twice. */
    dm__timer todo;
    todo.next = head->next;
    todo.prev = head->prev;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    head->next = head->prev = head;
    while (todo.next != &todo) {
      dm__timer *t = todo.next;
      /* Unlink t from the local list. */
      todo.next = t->next;
      t->next->prev = &todo;
      if (t->due / 1000 > now_ms) {
        /* Due in a later revolution: back into its slot. */
        t->prev = head->prev;
        t->next = head;
        head->prev->next = t;
        head->prev = t;
        continue;
      }
      t->next = t->prev = NULL;
      w->count--;
      fire(t, ud);
      fired++;
      if (max_fire && fired >= max_fire) {
        /* Put back what was not looked at, and resume in this slot. */
        while (todo.next != &todo) {
          dm__timer *r = todo.next;
          todo.next = r->next;
          r->prev = head->prev;
          r->next = head;
          head->prev->next = r;
          head->prev = r;
        }
        w->now_ms = slot_ms;
        return fired;
      }
    }
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
    const dm__timer *head = &w->slots[(from + k) & (w->nslots - 1)];
    if (head->next != head) {
      uint64_t at = (from + k) * 1000;
      uint64_t in = at > now_us ? at - now_us : 0;
      return in < cap ? in : cap;
    }
  }
  return cap;
}
