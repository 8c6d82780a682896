/* The allocation wrapper, its failure injection for tests, and the one
 * growth rule for arrays. */
#include "base/base.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dm.h"

static atomic_long fail_after = -1;

static int should_fail(void) {
  long v = atomic_load_explicit(&fail_after, memory_order_relaxed);
  if (v < 0)
    return 0;
  if (v == 0)
    return 1;
  atomic_fetch_sub_explicit(&fail_after, 1, memory_order_relaxed);
  return 0;
}

void dm__alloc_fail_after(long after) { atomic_store(&fail_after, after); }

void *dm__malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }

void *dm__calloc(size_t count, size_t n) {
  return should_fail() ? NULL : calloc(count ? count : 1, n ? n : 1);
}

void *dm__realloc(void *p, size_t n) {
  return should_fail() ? NULL : realloc(p, n ? n : 1);
}

void *dm__aligned_alloc(size_t align, size_t n) {
  return should_fail() ? NULL : aligned_alloc(align, n ? n : align);
}

void dm__free(void *p) { free(p); }

char *dm__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *c = dm__malloc(n);
  if (c)
    memcpy(c, s, n);
  return c;
}

int dm__array_grow(void **arr, size_t *cap, size_t need, size_t elem, size_t min) {
  if (need <= *cap)
    return 0;
  size_t ncap = dm__grow_cap(*cap, need, min);
  if (ncap > SIZE_MAX / elem)
    return DM_ENOMEM;
  void *a = dm__realloc(*arr, ncap * elem);
  if (!a)
    return DM_ENOMEM;
  *arr = a;
  *cap = ncap;
  return 0;
}
