/* The children table of a manager: canonical id → worker, open addressing
 * on the id's seeded hash. A slot holds the worker's pid key, which its
 * moves in memory never change, and 4 bits of its id's hash; the pid
 * table gives the worker. Only the loop thread touches it. */
#include <string.h>

#include "base/base.h"
#include "term/term.h"
#include "dm/mgr.h"

uint32_t dm__id_hash(const dm__manager *m, const char *id, size_t len) {
  return (uint32_t)dm__hash(id, len, m->seed);
}

static uint32_t hash_of(const dm__manager *m, const dm__worker *w) {
  return dm__id_hash(m, dm__worker_id(w), dm__worker_id_len(w));
}

/* 4 bits of the hash that do not decide the home slot in a table of up to
 * 2^28 slots: a lookup passes over most other ids without reaching their
 * workers. */
static uint32_t tag_of(uint32_t hash) { return (hash >> 28) << DM__PROC_KEY_BITS; }

static uint32_t slot_value(const dm__worker *w, uint32_t hash) {
  return w->proc.key | tag_of(hash);
}

dm__worker *dm__children_at(const dm__manager *m, size_t i) {
  uint32_t v = m->slots[i];
  return v ? dm__worker_of(dm__proctab_get(&m->node->pids, v & DM__CHILD_KEY_MASK))
           : NULL;
}

/* How far ahead a walk fetches: the pid table slot of the child this far
 * ahead, and the worker of the one half as far. */
#define WALK_AHEAD 16

dm__worker *dm__children_walk(const dm__manager *m, size_t i) {
  const dm__proctab *t = &m->node->pids;
  uint32_t v;
  if (i + WALK_AHEAD < m->cap && (v = m->slots[i + WALK_AHEAD]))
    __builtin_prefetch(&t->slots[dm__proctab_home(t, v & DM__CHILD_KEY_MASK)]);
  if (i + WALK_AHEAD / 2 < m->cap && (v = m->slots[i + WALK_AHEAD / 2])) {
    const dm__proc *p = t->slots[dm__proctab_home(t, v & DM__CHILD_KEY_MASK)];
    if (p)
      __builtin_prefetch(p);
  }
  return dm__children_at(m, i);
}

static int grow_to(dm__manager *m, size_t ncap) {
  uint32_t *slots = dm__calloc(ncap, sizeof *slots);
  if (!slots)
    return DM_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    dm__worker *w = dm__children_at(m, i);
    if (!w)
      continue;
    size_t s = (size_t)hash_of(m, w) & (ncap - 1);
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
  uint32_t hash = hash_of(m, w);
  size_t s = (size_t)hash & (m->cap - 1);
  while (m->slots[s])
    s = (s + 1) & (m->cap - 1);
  m->slots[s] = slot_value(w, hash);
  m->count++;
  return 0;
}

static int same_id(const dm__worker *w, const char *id, size_t len) {
  return dm__worker_id_len(w) == len && memcmp(dm__worker_id(w), id, len) == 0;
}

dm__worker *dm__children_get(const dm__manager *m, const char *id, size_t len,
                             uint32_t hash) {
  if (!m->cap)
    return NULL;
  uint32_t tag = tag_of(hash);
  size_t s = (size_t)hash & (m->cap - 1);
  for (uint32_t v; (v = m->slots[s]); s = (s + 1) & (m->cap - 1)) {
    if ((v & ~DM__CHILD_KEY_MASK) != tag)
      continue;
    dm__worker *w = dm__children_at(m, s);
    if (w && same_id(w, id, len))
      return w;
  }
  return NULL;
}

void dm__children_shrink(dm__manager *m) {
  if (dm__children_sparse(m))
    (void)grow_to(m, dm__grow_cap(0, m->count * 2, 64));
}

void dm__children_del(dm__manager *m, dm__worker *w) {
  if (!m->cap)
    return;
  size_t mask = m->cap - 1, s = (size_t)hash_of(m, w) & mask;
  while (m->slots[s] && (m->slots[s] & DM__CHILD_KEY_MASK) != w->proc.key)
    s = (s + 1) & mask;
  if (!m->slots[s])
    return;
  /* Backward-shift deletion keeps probe runs intact without tombstones. */
  size_t hole = s;
  for (size_t j = (s + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)hash_of(m, dm__children_at(m, j)) & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole] = 0;
  m->count--;
}
