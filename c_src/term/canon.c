/* Canonical ids: one encoding per Erlang term, and the seeded hash of it. */
#include "term/term.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dm.h"

static int put(dm__buf *o, const void *p, size_t n) {
  return dm__buf_append(o, p, n);
}

static int put8(dm__buf *o, unsigned v) {
  unsigned char c = (unsigned char)v;
  return put(o, &c, 1);
}

static int put32(dm__buf *o, uint32_t v) {
  char b[4];
  dm__put32be(b, v);
  return put(o, b, 4);
}

static uint8_t u8(const char *p) { return (uint8_t)*p; }

static int emit_int(dm__buf *o, int64_t v) {
  if (v >= 0 && v <= 255)
    return put8(o, 97) || put8(o, (unsigned)v) ? DM_ENOMEM : 0;
  if (v >= INT32_MIN && v <= INT32_MAX)
    return put8(o, 98) || put32(o, (uint32_t)(int32_t)v) ? DM_ENOMEM : 0;
  uint64_t mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
  unsigned char bytes[8];
  int n = 0;
  while (mag) {
    bytes[n++] = (unsigned char)(mag & 0xff);
    mag >>= 8;
  }
  return put8(o, 110) || put8(o, (unsigned)n) || put8(o, v < 0) || put(o, bytes, (size_t)n)
             ? DM_ENOMEM
             : 0;
}

/* The atom at b+*i (any of the four tags), in canonical form. */
static int atom(const char *b, size_t *i, dm__buf *o) {
  uint8_t tag = u8(b + *i);
  size_t n, hdr = (tag == 100 || tag == 118) ? 3 : 2;
  n = hdr == 3 ? dm__get16be(b + *i + 1) : u8(b + *i + 1);
  const char *s = b + *i + hdr;
  *i += hdr + n;
  if (tag == 118 || tag == 119) {
    if (n < 256)
      return put8(o, 119) || put8(o, (unsigned)n) || put(o, s, n) ? DM_ENOMEM : 0;
    return put8(o, 118) || put8(o, (unsigned)(n >> 8)) || put8(o, (unsigned)n & 0xff) ||
                   put(o, s, n)
               ? DM_ENOMEM
               : 0;
  }
  /* Latin-1 to UTF-8. */
  size_t un = 0;
  for (size_t k = 0; k < n; k++)
    un += u8(s + k) < 0x80 ? 1 : 2;
  if (un < 256) {
    if (put8(o, 119) || put8(o, (unsigned)un))
      return DM_ENOMEM;
  } else if (put8(o, 118) || put8(o, (unsigned)(un >> 8)) || put8(o, (unsigned)un & 0xff)) {
    return DM_ENOMEM;
  }
  for (size_t k = 0; k < n; k++) {
    unsigned c = u8(s + k);
    if (c < 0x80 ? put8(o, c) : (put8(o, 0xc0 | (c >> 6)) || put8(o, 0x80 | (c & 0x3f))))
      return DM_ENOMEM;
  }
  return 0;
}

static int term(const char *b, size_t len, size_t *i, dm__buf *o, int depth);

typedef struct {
  size_t koff, klen, voff, vlen;
} pair;

static const dm__buf *sort_base;

static int pair_cmp(const void *x, const void *y) {
  const pair *a = x, *c = y;
  size_t n = a->klen < c->klen ? a->klen : c->klen;
  int r = memcmp(sort_base->data + a->koff, sort_base->data + c->koff, n);
  if (r)
    return r;
  return a->klen < c->klen ? -1 : a->klen > c->klen;
}

static int map(const char *b, size_t len, size_t *i, dm__buf *o, int depth) {
  uint32_t arity = dm__get32be(b + *i + 1);
  *i += 5;
  dm__buf tmp = DM__BUF_INIT;
  pair *pairs = arity ? dm__malloc(arity * sizeof *pairs) : NULL;
  int r = 0;
  if (arity && !pairs)
    return DM_ENOMEM;
  for (uint32_t k = 0; k < arity && !r; k++) {
    pairs[k].koff = tmp.len;
    if ((r = term(b, len, i, &tmp, depth + 1)))
      break;
    pairs[k].klen = tmp.len - pairs[k].koff;
    pairs[k].voff = tmp.len;
    if ((r = term(b, len, i, &tmp, depth + 1)))
      break;
    pairs[k].vlen = tmp.len - pairs[k].voff;
  }
  if (!r && arity) {
    /* The loop thread is the only caller, so a file-level base is safe. */
    sort_base = &tmp;
    qsort(pairs, arity, sizeof *pairs, pair_cmp);
    for (uint32_t k = 1; k < arity; k++)
      if (pair_cmp(&pairs[k - 1], &pairs[k]) == 0)
        r = DM_EBADTERM;
  }
  if (!r && (put8(o, 116) || put32(o, arity)))
    r = DM_ENOMEM;
  for (uint32_t k = 0; k < arity && !r; k++)
    if (put(o, tmp.data + pairs[k].koff, pairs[k].klen) ||
        put(o, tmp.data + pairs[k].voff, pairs[k].vlen))
      r = DM_ENOMEM;
  dm__free(pairs);
  dm__buf_free(&tmp);
  return r;
}

/* Lists: LIST_EXT chains and STRING_EXT tails are flattened into one
 * LIST_EXT, so [1 | [2]] and [1, 2] and "\x01\x02" agree. */
static int list(const char *b, size_t len, size_t *i, dm__buf *o, int depth) {
  size_t head = o->len;
  uint32_t count = 0;
  int r;
  if (put8(o, 108) || put32(o, 0))
    return DM_ENOMEM;
  for (;;) {
    uint8_t tag = u8(b + *i);
    if (tag == 108) {
      uint32_t n = dm__get32be(b + *i + 1);
      *i += 5;
      for (uint32_t k = 0; k < n; k++, count++)
        if ((r = term(b, len, i, o, depth + 1)))
          return r;
    } else if (tag == 107) {
      size_t n = dm__get16be(b + *i + 1);
      const char *s = b + *i + 3;
      *i += 3 + n;
      for (size_t k = 0; k < n; k++, count++)
        if (put8(o, 97) || put8(o, u8(s + k)))
          return DM_ENOMEM;
      break; /* a string is a whole proper list: its end is the list's */
    } else if (tag == 106) {
      *i += 1;
      break;
    } else {
      if ((r = term(b, len, i, o, depth + 1)))
        return r;
      dm__put32be(o->data + head + 1, count);
      return 0;
    }
  }
  if (count == 0) {
    o->len = head;
    return put8(o, 106) ? DM_ENOMEM : 0;
  }
  dm__put32be(o->data + head + 1, count);
  return put8(o, 106) ? DM_ENOMEM : 0;
}

static int term(const char *b, size_t len, size_t *i, dm__buf *o, int depth) {
  if (depth > DM__CANON_MAX_DEPTH)
    return DM_EBADTERM;
  uint8_t tag = u8(b + *i);
  size_t start = *i, end;
  switch (tag) {
  case 97:
    *i += 2;
    return emit_int(o, u8(b + start + 1));
  case 98:
    *i += 5;
    return emit_int(o, (int32_t)dm__get32be(b + start + 1));
  case 110:
  case 111: {
    size_t n = tag == 110 ? u8(b + *i + 1) : dm__get32be(b + *i + 1);
    size_t hdr = tag == 110 ? 2 : 5;
    int sign = u8(b + *i + hdr);
    const unsigned char *mag = (const unsigned char *)b + *i + hdr + 1;
    *i += hdr + 1 + n;
    while (n && mag[n - 1] == 0)
      n--;
    if (n <= 8) {
      uint64_t v = 0;
      for (size_t k = n; k > 0; k--)
        v = v << 8 | mag[k - 1];
      if (!sign && v <= INT64_MAX)
        return emit_int(o, (int64_t)v);
      if (sign && v <= (uint64_t)INT64_MAX + 1)
        return emit_int(o, v == 0 ? 0 : -(int64_t)(v - 1) - 1);
    }
    if (n < 256)
      return put8(o, 110) || put8(o, (unsigned)n) || put8(o, sign != 0) || put(o, mag, n)
                 ? DM_ENOMEM
                 : 0;
    return put8(o, 111) || put32(o, (uint32_t)n) || put8(o, sign != 0) || put(o, mag, n)
               ? DM_ENOMEM
               : 0;
  }
  case 99: {
    char s[32];
    memcpy(s, b + *i + 1, 31);
    s[31] = 0;
    char *e;
    double d = strtod(s, &e);
    if (e == s)
      return DM_EBADTERM;
    *i += 32;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    char be[8];
    dm__put32be(be, (uint32_t)(bits >> 32));
    dm__put32be(be + 4, (uint32_t)bits);
    return put8(o, 70) || put(o, be, 8) ? DM_ENOMEM : 0;
  }
  case 100:
  case 115:
  case 118:
  case 119:
    return atom(b, i, o);
  case 104:
  case 105: {
    uint32_t n = tag == 104 ? u8(b + *i + 1) : dm__get32be(b + *i + 1);
    *i += tag == 104 ? 2 : 5;
    if (n < 256 ? (put8(o, 104) || put8(o, n)) : (put8(o, 105) || put32(o, n)))
      return DM_ENOMEM;
    for (uint32_t k = 0; k < n; k++) {
      int r = term(b, len, i, o, depth + 1);
      if (r)
        return r;
    }
    return 0;
  }
  case 106:
  case 107:
  case 108:
    if (tag == 106) {
      *i += 1;
      return put8(o, 106) ? DM_ENOMEM : 0;
    }
    return list(b, len, i, o, depth);
  case 116:
    return map(b, len, i, o, depth);
  case 88:
  case 103: /* pids: NEW_PID_EXT */
  case 89:
  case 102:
  case 120: /* ports: NEW_PORT_EXT, or V4 for 64-bit ids */
  case 101: { /* old reference: NEWER_REFERENCE_EXT */
    *i += 1;
    dm__buf node = DM__BUF_INIT;
    int r = atom(b, i, &node);
    const char *f = b + *i;
    char tail[16];
    size_t tl = 0;
    unsigned out_tag = tag;
    if (tag == 88) {
      memcpy(tail, f, 12), tl = 12, *i += 12;
    } else if (tag == 103) {
      memcpy(tail, f, 8), dm__put32be(tail + 8, u8(f + 8)), tl = 12, *i += 9, out_tag = 88;
    } else if (tag == 89) {
      memcpy(tail, f, 8), tl = 8, *i += 8;
    } else if (tag == 102) {
      memcpy(tail, f, 4), dm__put32be(tail + 4, u8(f + 4)), tl = 8, *i += 5, out_tag = 89;
    } else if (tag == 120) {
      if (dm__get32be(f) == 0)
        memcpy(tail, f + 4, 8), tl = 8, out_tag = 89;
      else
        memcpy(tail, f, 12), tl = 12;
      *i += 12;
    } else { /* 101: id 4, creation 1 */
      dm__put32be(tail, u8(f + 4)), memcpy(tail + 4, f, 4), tl = 8, *i += 5, out_tag = 90;
    }
    if (!r && (put8(o, out_tag) ||
               (out_tag == 90 && (put8(o, 0) || put8(o, 1))) ||
               put(o, node.data, node.len) || put(o, tail, tl)))
      r = DM_ENOMEM;
    dm__buf_free(&node);
    return r;
  }
  case 114:
  case 90: { /* references: NEWER_REFERENCE_EXT */
    size_t n = dm__get16be(b + *i + 1);
    *i += 3;
    dm__buf node = DM__BUF_INIT;
    int r = atom(b, i, &node);
    uint32_t creation = tag == 90 ? dm__get32be(b + *i) : u8(b + *i);
    *i += tag == 90 ? 4 : 1;
    if (!r && (put8(o, 90) || put8(o, (unsigned)(n >> 8)) || put8(o, (unsigned)n & 0xff) ||
               put(o, node.data, node.len) || put32(o, creation) || put(o, b + *i, 4 * n)))
      r = DM_ENOMEM;
    *i += 4 * n;
    dm__buf_free(&node);
    return r;
  }
  default:
    end = start;
    if (dm__term_skip(b, len, &end))
      return DM_EBADTERM;
    *i = end;
    return put(o, b + start, end - start) ? DM_ENOMEM : 0;
  }
}

int dm__canon(const char *buf, size_t len, dm__buf *out) {
  size_t i = 0, orig = out->len;
  if (dm__term_skip(buf, len, &i) || i != len)
    return DM_EBADTERM;
  i = 0;
  int r = term(buf, len, &i, out, 0);
  if (r)
    out->len = orig;
  return r;
}

uint64_t dm__hash(const void *p, size_t n, uint64_t seed) {
  /* FNV-1a over the bytes, seeded, then a strong finaliser (splitmix64)
   * so that sequential ids spread over all bits. */
  const unsigned char *s = p;
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (size_t k = 0; k < n; k++) {
    h ^= s[k];
    h *= 0x100000001b3ull;
  }
  h ^= seed >> 32;
  h += 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}
