/* The one allocation wrapper. Every allocation of the node goes through it
 * so that tests can inject failures; running out of memory is an error the
 * node survives. */
#ifndef DM_ALLOC_H
#define DM_ALLOC_H

#include <stddef.h>

void *dm__malloc(size_t n);
void *dm__calloc(size_t count, size_t n);
void *dm__realloc(void *p, size_t n);
void dm__free(void *p);

/* The capacity a growable array or table takes to hold need: its own
 * (min when it has none) doubled until it does. Callers keep capacities
 * powers of two when min is one. */
static inline size_t dm__grow_cap(size_t cap, size_t need, size_t min) {
  if (!cap)
    cap = min;
  while (cap < need)
    cap *= 2;
  return cap;
}

/* Test hook: the next `after` allocations succeed, the ones after fail.
 * A negative value switches injection off. */
void dm__alloc_fail_after(long after);

#endif
