/* Blobs: reference-counted copies of encoded terms, in one allocation
 * with their length and count. */
#include <malloc.h>
#include <string.h>

#include "term/term.h"

dm__blob *dm__blob_new(const char *data, size_t len) {
  if (len > UINT32_MAX)
    return NULL;
  dm__blob *b = dm__malloc(DM__BLOB_HDR + len);
  if (!b)
    return NULL;
  uint32_t hdr[2] = {(uint32_t)len, 1};
  memcpy(b, hdr, sizeof hdr);
  memcpy(b + DM__BLOB_HDR, data, len);
  return b;
}

int dm__blob_fits(const dm__blob *b, size_t len) {
  return DM__BLOB_HDR + len <= malloc_usable_size((void *)b);
}

void dm__blob_rewrite(dm__blob *b, const char *data, size_t len) {
  uint32_t l = (uint32_t)len;
  memcpy(b, &l, sizeof l);
  memcpy(b + DM__BLOB_HDR, data, len);
}

dm__blob *dm__blob_ref(dm__blob *b) {
  if (b)
    ((uint32_t *)(void *)b)[1]++;
  return b;
}

void dm__blob_unref(dm__blob *b) {
  if (b && --((uint32_t *)(void *)b)[1] == 0)
    dm__free(b);
}
