/* The process tables: local pid key -> process, registered name -> process,
 * and the generic map from a 32-bit key to a pointer that keeps what a
 * few processes have out of line. */
#include "node/node.h"

#include <string.h>

#include "base/base.h"
#include "dm.h"

static size_t slot_of(uint32_t key, size_t cap) {
  /* Fibonacci hashing spreads the sequential keys ei_make_pid hands out.
   * dm__proctab_home is the same, for walks that fetch ahead. */
  return (size_t)((key * 2654435769u) & (uint32_t)(cap - 1)) & (cap - 1);
}

void dm__pidtab_init(dm__pidtab *t) { memset(t, 0, sizeof *t); }

void dm__pidtab_free(dm__pidtab *t) {
  dm__free(t->keys);
  dm__free(t->vals);
  memset(t, 0, sizeof *t);
}

static int grow_to(dm__pidtab *t, size_t ncap) {
  uint32_t *keys = dm__calloc(ncap, sizeof *keys);
  void **vals = dm__calloc(ncap, sizeof *vals);
  if (!keys || !vals) {
    dm__free(keys);
    dm__free(vals);
    return DM_ENOMEM;
  }
  for (size_t i = 0; i < t->cap; i++) {
    if (!t->keys[i])
      continue;
    size_t s = slot_of(t->keys[i], ncap);
    while (keys[s])
      s = (s + 1) & (ncap - 1);
    keys[s] = t->keys[i];
    vals[s] = t->vals[i];
  }
  dm__free(t->keys);
  dm__free(t->vals);
  t->keys = keys;
  t->vals = vals;
  t->cap = ncap;
  return 0;
}

/* Load factor at most 3/4. */
int dm__pidtab_reserve(dm__pidtab *t, size_t n) {
  size_t cap = dm__grow_cap(t->cap, (n * 4 + 2) / 3, 64);
  return cap == t->cap ? 0 : grow_to(t, cap);
}

int dm__pidtab_put(dm__pidtab *t, uint32_t key, void *val) {
  if (key == 0)
    return DM_EINVAL;
  int r = dm__pidtab_reserve(t, t->count + 1);
  if (r)
    return r;
  size_t s = slot_of(key, t->cap);
  while (t->keys[s] && t->keys[s] != key)
    s = (s + 1) & (t->cap - 1);
  if (!t->keys[s])
    t->count++;
  t->keys[s] = key;
  t->vals[s] = val;
  /* ei hands out pids in sequence: the next insert's slot, a cache miss
   * in a large table, is fetched while the caller builds that process. */
  size_t next = slot_of(key + 1, t->cap);
  __builtin_prefetch(&t->keys[next], 1);
  __builtin_prefetch(&t->vals[next], 1);
  return 0;
}

void *dm__pidtab_get(const dm__pidtab *t, uint32_t key) {
  if (!t->cap || key == 0)
    return NULL;
  size_t s = slot_of(key, t->cap);
  while (t->keys[s]) {
    if (t->keys[s] == key)
      return t->vals[s];
    s = (s + 1) & (t->cap - 1);
  }
  return NULL;
}

void *dm__pidtab_del(dm__pidtab *t, uint32_t key) {
  if (!t->cap || key == 0)
    return NULL;
  size_t mask = t->cap - 1, s = slot_of(key, t->cap);
  while (t->keys[s] && t->keys[s] != key)
    s = (s + 1) & mask;
  if (!t->keys[s])
    return NULL;
  void *val = t->vals[s];
  /* Backward-shift deletion: pull later members of the probe run into the
   * hole so lookups never need tombstones. */
  size_t hole = s;
  for (size_t j = (s + 1) & mask; t->keys[j]; j = (j + 1) & mask) {
    size_t home = slot_of(t->keys[j], t->cap);
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      t->keys[hole] = t->keys[j];
      t->vals[hole] = t->vals[j];
      hole = j;
    }
  }
  t->keys[hole] = 0;
  t->vals[hole] = NULL;
  t->count--;
  return val;
}

int dm__pidtab_replace(dm__pidtab *t, uint32_t key, void *val) {
  if (!t->cap || key == 0)
    return DM_EINVAL;
  for (size_t s = slot_of(key, t->cap); t->keys[s]; s = (s + 1) & (t->cap - 1))
    if (t->keys[s] == key) {
      t->vals[s] = val;
      return 0;
    }
  return DM_EINVAL;
}

void dm__pidtab_shrink(dm__pidtab *t) {
  if (dm__pidtab_sparse(t))
    (void)grow_to(t, dm__grow_cap(0, t->count * 2, 64));
}

/* ---- the pid table: processes by key ---- */

void dm__proctab_init(dm__proctab *t) { memset(t, 0, sizeof *t); }

void dm__proctab_free(dm__proctab *t) {
  dm__free(t->slots);
  memset(t, 0, sizeof *t);
}

static int proctab_rehash(dm__proctab *t, size_t ncap) {
  dm__proc **slots = dm__calloc(ncap, sizeof *slots);
  if (!slots)
    return DM_ENOMEM;
  for (size_t i = 0; i < t->cap; i++) {
    if (!t->slots[i])
      continue;
    size_t s = slot_of(t->slots[i]->key, ncap);
    while (slots[s])
      s = (s + 1) & (ncap - 1);
    slots[s] = t->slots[i];
  }
  dm__free(t->slots);
  t->slots = slots;
  t->cap = ncap;
  return 0;
}

/* Load factor at most 3/4. */
int dm__proctab_reserve(dm__proctab *t, size_t n) {
  size_t cap = dm__grow_cap(t->cap, (n * 4 + 2) / 3, 64);
  return cap == t->cap ? 0 : proctab_rehash(t, cap);
}

int dm__proctab_put(dm__proctab *t, dm__proc *p) {
  if (p->key == 0)
    return DM_EINVAL;
  int r = dm__proctab_reserve(t, t->count + 1);
  if (r)
    return r;
  size_t s = slot_of(p->key, t->cap);
  while (t->slots[s])
    s = (s + 1) & (t->cap - 1);
  t->slots[s] = p;
  t->count++;
  /* Keys come in sequence: the next insert's slot, a cache miss in a
   * large table, is fetched while the caller builds that process. */
  __builtin_prefetch(&t->slots[slot_of(p->key + 1, t->cap)], 1);
  return 0;
}

/* The slot of the process with this key, or the empty slot that ends its
 * probe run. */
static size_t proctab_find(const dm__proctab *t, uint32_t key) {
  size_t s = slot_of(key, t->cap);
  while (t->slots[s] && t->slots[s]->key != key)
    s = (s + 1) & (t->cap - 1);
  return s;
}

dm__proc *dm__proctab_get(const dm__proctab *t, uint32_t key) {
  if (!t->cap || key == 0)
    return NULL;
  return t->slots[proctab_find(t, key)];
}

dm__proc *dm__proctab_del(dm__proctab *t, uint32_t key) {
  if (!t->cap || key == 0)
    return NULL;
  size_t mask = t->cap - 1, s = proctab_find(t, key);
  dm__proc *p = t->slots[s];
  if (!p)
    return NULL;
  /* Backward-shift deletion, as in the other tables: no tombstones. */
  size_t hole = s;
  for (size_t j = (s + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
    size_t home = slot_of(t->slots[j]->key, t->cap);
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      t->slots[hole] = t->slots[j];
      hole = j;
    }
  }
  t->slots[hole] = NULL;
  t->count--;
  return p;
}

int dm__proctab_moved(dm__proctab *t, dm__proc *to) {
  if (!t->cap || to->key == 0)
    return DM_EINVAL;
  size_t s = proctab_find(t, to->key);
  if (!t->slots[s])
    return DM_EINVAL;
  t->slots[s] = to;
  return 0;
}

void dm__proctab_shrink(dm__proctab *t) {
  if (dm__proctab_sparse(t))
    (void)proctab_rehash(t, dm__grow_cap(0, t->count * 2, 64));
}

/* ---- registered names ---- */

void dm__nametab_init(dm__nametab *t) { memset(t, 0, sizeof *t); }

void dm__nametab_free(dm__nametab *t) {
  for (size_t i = 0; i < t->count; i++)
    dm__free(t->items[i].name);
  dm__free(t->items);
  memset(t, 0, sizeof *t);
}

int dm__nametab_put(dm__nametab *t, const char *name, void *val) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > 1020)
    return DM_EINVAL;
  if (dm__nametab_get(t, name))
    return DM_EEXISTS;
  if (t->count == t->cap) {
    size_t ncap = dm__grow_cap(t->cap, t->count + 1, 8);
    dm__name *items = dm__realloc(t->items, ncap * sizeof *items);
    if (!items)
      return DM_ENOMEM;
    t->items = items;
    t->cap = ncap;
  }
  char *copy = dm__malloc(n + 1);
  if (!copy)
    return DM_ENOMEM;
  memcpy(copy, name, n + 1);
  t->items[t->count].name = copy;
  t->items[t->count].val = val;
  t->count++;
  return 0;
}

void *dm__nametab_get(const dm__nametab *t, const char *name) {
  for (size_t i = 0; i < t->count; i++)
    if (strcmp(t->items[i].name, name) == 0)
      return t->items[i].val;
  return NULL;
}

void *dm__nametab_del(dm__nametab *t, const char *name) {
  for (size_t i = 0; i < t->count; i++) {
    if (strcmp(t->items[i].name, name) == 0) {
      void *val = t->items[i].val;
      dm__free(t->items[i].name);
      t->items[i] = t->items[--t->count];
      return val;
    }
  }
  return NULL;
}

const char *dm__nametab_name_of(const dm__nametab *t, const void *val) {
  for (size_t i = 0; i < t->count; i++)
    if (t->items[i].val == val)
      return t->items[i].name;
  return NULL;
}
