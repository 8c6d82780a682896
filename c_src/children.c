/* The children table of a manager: canonical id → worker, open addressing
 * on the id's seeded hash. Only the loop thread touches it. */
#include <string.h>

#include "alloc.h"
#include "canon.h"
#include "mgr.h"

uint32_t dm__id_hash(const dm__manager *m, const char *id, size_t len) {
  return (uint32_t)dm__hash(id, len, m->seed);
}

static int same_id(const dm__worker *w, const char *id, size_t len,
                   uint32_t hash) {
  return w->hash == hash && dm__worker_id_len(w) == len &&
         memcmp(dm__worker_id(w), id, len) == 0;
}

static int grow_to(dm__manager *m, size_t ncap) {
  dm__worker **slots = dm__calloc(ncap, sizeof *slots);
  if (!slots)
    return DM_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    dm__worker *w = m->slots[i];
    if (!w)
      continue;
    size_t s = (size_t)w->hash & (ncap - 1);
    while (slots[s])
      s = (s + 1) & (ncap - 1);
    slots[s] = w;
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
  size_t s = (size_t)w->hash & (m->cap - 1);
  while (m->slots[s])
    s = (s + 1) & (m->cap - 1);
  m->slots[s] = w;
  m->count++;
  return 0;
}

dm__worker *dm__children_get(const dm__manager *m, const char *id, size_t len,
                             uint32_t hash) {
  if (!m->cap)
    return NULL;
  size_t s = (size_t)hash & (m->cap - 1);
  for (dm__worker *w; (w = m->slots[s]); s = (s + 1) & (m->cap - 1))
    if (same_id(w, id, len, hash))
      return w;
  return NULL;
}

void dm__children_del(dm__manager *m, dm__worker *w) {
  if (!m->cap)
    return;
  size_t mask = m->cap - 1, s = (size_t)w->hash & mask;
  while (m->slots[s] && m->slots[s] != w)
    s = (s + 1) & mask;
  if (!m->slots[s])
    return;
  /* Backward-shift deletion keeps probe runs intact without tombstones. */
  size_t hole = s;
  for (size_t j = (s + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)m->slots[j]->hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole] = NULL;
  m->count--;
}
