/* The node's process tables: registered name → process and local pid →
 * process. Local pids are stored as a 32-bit key (ei's num and serial); the
 * node name and creation are the same for every local pid. */
#ifndef DM_NAMES_H
#define DM_NAMES_H

#include <stddef.h>
#include <stdint.h>

/* Open-addressing map from a non-zero 32-bit key to a pointer. */
typedef struct {
  uint32_t *keys; /* 0 marks an empty slot */
  void **vals;
  size_t cap;     /* a power of two, or 0 */
  size_t count;
} dm__pidtab;

void dm__pidtab_init(dm__pidtab *t);
void dm__pidtab_free(dm__pidtab *t);
/* Makes room for n entries in all, so that many puts do not rehash. */
int dm__pidtab_reserve(dm__pidtab *t, size_t n);
/* Inserts or replaces. 0, DM_EINVAL (key 0) or DM_ENOMEM. */
int dm__pidtab_put(dm__pidtab *t, uint32_t key, void *val);
/* The value, or NULL. */
void *dm__pidtab_get(const dm__pidtab *t, uint32_t key);
/* Removes and returns the value, or NULL when absent. */
void *dm__pidtab_del(dm__pidtab *t, uint32_t key);

/* Registered names; a handful per node, so a short array. */
typedef struct {
  char *name;
  void *val;
} dm__name;

typedef struct {
  dm__name *items;
  size_t count, cap;
} dm__nametab;

void dm__nametab_init(dm__nametab *t);
void dm__nametab_free(dm__nametab *t);
/* Registers name (copied). 0, DM_EEXISTS, DM_EINVAL or DM_ENOMEM. */
int dm__nametab_put(dm__nametab *t, const char *name, void *val);
void *dm__nametab_get(const dm__nametab *t, const char *name);
/* Unregisters; returns the value or NULL. */
void *dm__nametab_del(dm__nametab *t, const char *name);

#endif
