/* Cells: one term each, in the cell's word when it is short enough, else
 * in a shared blob. */
#include <string.h>

#include "dm.h"
#include "term/term.h"

int dm__cell_set(dm__cell *c, const char *data, size_t len) {
  dm__cell n;
  if (len <= DM__CELL_INLINE) {
    n.word = 0;
    n.in[0] = (unsigned char)(1u | (unsigned)len << 1);
    memcpy(n.in + 1, data, len);
  } else if (!(n.b = dm__blob_new(data, len))) {
    return DM_ENOMEM;
  }
  dm__cell_clear(c);
  *c = n;
  return 0;
}

void dm__cell_copy(dm__cell *dst, const dm__cell *src) {
  if (dst == src)
    return;
  dm__cell_clear(dst);
  *dst = *src;
  if (!dm__cell_is_inline(src))
    dm__blob_ref(src->b);
}

void dm__cell_clear(dm__cell *c) {
  if (!dm__cell_is_inline(c))
    dm__blob_unref(c->b);
  c->word = 0;
}
