/* The children table of a manager: canonical id → worker, open addressing
 * on the id's seeded hash. Only the loop thread touches it. */
#include <string.h>

#include "base/base.h"
#include "term/term.h"
#include "dm/mgr.h"

uint32_t dm__id_hash(const dm__manager *m, const char *id, size_t len) {
  return (uint32_t)dm__hash(id, len, m->seed);
}

static int same_id(const dm__worker *w, const char *id, size_t len,
                   uint32_t hash) {
  return w->hash == hash && dm__worker_id_len(w) == len &&
         memcmp(dm__worker_id(w), id, len) == 0;
}

/* 16 bits of the hash that do not decide the home slot: the product's
 * high half depends on every bit of it. */
static uintptr_t tag_of(uint32_t hash) {
  return (uintptr_t)((hash * 2654435769u) >> 16) << DM__ADDR_BITS;
}

static uintptr_t slot_value(const dm__manager *m, dm__worker *w) {
  return m->untagged ? (uintptr_t)w : (uintptr_t)w | tag_of(w->hash);
}

/* An address that uses the top bits (no such platform is known to us)
 * turns tags off for the table: slots keep bare addresses from then on. */
static void check_addr(dm__manager *m, const dm__worker *w) {
  if (m->untagged || ((uintptr_t)w & ~DM__ADDR_MASK) == 0)
    return;
  for (size_t i = 0; i < m->cap; i++)
    m->slots[i] &= DM__ADDR_MASK;
  m->untagged = 1;
}

static int grow_to(dm__manager *m, size_t ncap) {
  uintptr_t *slots = dm__calloc(ncap, sizeof *slots);
  if (!slots)
    return DM_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    dm__worker *w = dm__children_at(m, i);
    if (!w)
      continue;
    size_t s = (size_t)w->hash & (ncap - 1);
    while (slots[s])
      s = (s + 1) & (ncap - 1);
    slots[s] = m->slots[i];
  }
  dm__free(m->slots);
  m->slots = slots;
  m->cap = ncap;
  return 0;
}

/* Load factor at most 3/4. */
int dm__children_reserve(dm__manager *m, size_t n) {
  size_t cap = dm__grow_cap(m->cap, (n * 4 + 2) / 3, 64);
  return cap == m->cap ? 0 : grow_to(m, cap);
}

int dm__children_put(dm__manager *m, dm__worker *w) {
  int r = dm__children_reserve(m, m->count + 1);
  if (r)
    return r;
  check_addr(m, w);
  size_t s = (size_t)w->hash & (m->cap - 1);
  while (m->slots[s])
    s = (s + 1) & (m->cap - 1);
  m->slots[s] = slot_value(m, w);
  m->count++;
  return 0;
}

dm__worker *dm__children_get(const dm__manager *m, const char *id, size_t len,
                             uint32_t hash) {
  if (!m->cap)
    return NULL;
  uintptr_t tag = m->untagged ? 0 : tag_of(hash);
  size_t s = (size_t)hash & (m->cap - 1);
  for (uintptr_t v; (v = m->slots[s]); s = (s + 1) & (m->cap - 1)) {
    if (!m->untagged && (v & ~DM__ADDR_MASK) != tag)
      continue;
    dm__worker *w = dm__children_at(m, s);
    if (same_id(w, id, len, hash))
      return w;
  }
  return NULL;
}

void dm__children_moved(dm__manager *m, const dm__worker *from, dm__worker *to) {
  check_addr(m, to);
  size_t mask = m->cap - 1;
  for (size_t s = (size_t)to->hash & mask; m->slots[s]; s = (s + 1) & mask)
    if (dm__children_at(m, s) == from) {
      m->slots[s] = slot_value(m, to);
      return;
    }
}

void dm__children_shrink(dm__manager *m) {
  if (dm__children_sparse(m))
    (void)grow_to(m, dm__grow_cap(0, m->count * 2, 64));
}

void dm__children_del(dm__manager *m, dm__worker *w) {
  if (!m->cap)
    return;
  size_t mask = m->cap - 1, s = (size_t)w->hash & mask;
  while (m->slots[s] && dm__children_at(m, s) != w)
    s = (s + 1) & mask;
  if (!m->slots[s])
    return;
  /* Backward-shift deletion keeps probe runs intact without tombstones. */
  size_t hole = s;
  for (size_t j = (s + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)dm__children_at(m, j)->hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole] = 0;
  m->count--;
}
