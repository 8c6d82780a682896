/* The growable byte buffer: reserve, append, consume, free. */
#include "base/base.h"

#include <string.h>

#include "dm.h"

int dm__buf_reserve(dm__buf *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  size_t want = b->len + extra;
  if (want < b->len)
    return DM_ENOMEM;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < want) {
    if (cap > SIZE_MAX / 2)
      return DM_ENOMEM;
    cap *= 2;
  }
  char *p = dm__realloc(b->data, cap);
  if (!p)
    return DM_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int dm__buf_append(dm__buf *b, const void *p, size_t n) {
  int r = dm__buf_reserve(b, n);
  if (r)
    return r;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void dm__buf_consume(dm__buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void dm__buf_free(dm__buf *b) {
  dm__free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
