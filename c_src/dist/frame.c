/* The frame reader: a byte stream cut into length-prefixed packets, and
 * the read-coalescing policy that sizes the next read. */
#include "dist/dist.h"

#include <string.h>

#include "dm.h"

/* A reassembly buffer larger than this is released after use instead of
 * being kept for the next split packet. */
#define KEEP_BODY_CAP (256 * 1024)

void dm__frame_init(dm__frame_reader *fr, uint32_t max_len) {
  memset(fr, 0, sizeof *fr);
  fr->max_len = max_len;
}

void dm__frame_free(dm__frame_reader *fr) { dm__buf_free(&fr->body); }

int dm__frame_partial(const dm__frame_reader *fr) {
  return fr->in_body || fr->hdr_have > 0;
}

size_t dm__frame_pending(const dm__frame_reader *fr) {
  if (fr->in_body)
    return fr->want - fr->body.len;
  return fr->hdr_have > 0 ? 4 - fr->hdr_have : 0;
}

size_t dm__lowat_want(size_t bytes, unsigned msgs, size_t pending, size_t max) {
  if (msgs < 2 || max <= 1)
    return 1;
  size_t want = bytes / msgs * (msgs - 1);
  if (pending && pending < want)
    want = pending;
  if (want > max)
    want = max;
  return want ? want : 1;
}

size_t dm__lowat_next(size_t cur, size_t want) {
  if (want <= cur || want / 5 >= cur / 4)
    return want;
  return cur;
}

int dm__frame_feed(dm__frame_reader *fr, const char *data, size_t n,
                   dm__frame_cb cb, void *ud) {
  int r;
  while (n > 0) {
    if (fr->in_body) {
      size_t take = fr->want - fr->body.len;
      if (take > n)
        take = n;
      if ((r = dm__buf_append(&fr->body, data, take)))
        return r;
      data += take;
      n -= take;
      if (fr->body.len < fr->want)
        return 0;
      fr->in_body = 0;
      r = cb(ud, fr->body.data, fr->body.len);
      if (fr->body.cap > KEEP_BODY_CAP)
        dm__buf_free(&fr->body);
      else
        fr->body.len = 0;
      if (r)
        return r;
      continue;
    }
    uint32_t want;
    if (fr->hdr_have == 0 && n >= 4) {
      want = dm__get32be(data);
      data += 4;
      n -= 4;
    } else {
      size_t take = 4 - fr->hdr_have;
      if (take > n)
        take = n;
      memcpy(fr->hdr + fr->hdr_have, data, take);
      fr->hdr_have += (unsigned)take;
      data += take;
      n -= take;
      if (fr->hdr_have < 4)
        return 0;
      fr->hdr_have = 0;
      want = dm__get32be(fr->hdr);
    }
    if (want > fr->max_len)
      return DM_ETOOBIG;
    if (want <= n) {
      r = cb(ud, data, want);
      data += want;
      n -= want;
      if (r)
        return r;
    } else {
      fr->in_body = 1;
      fr->want = want;
      fr->body.len = 0;
    }
  }
  return 0;
}
