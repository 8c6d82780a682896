/* The bounded walk: external terms checked within bounds, without
 * recursion, before ei reads them. */
#include "term/term.h"

#include <stdint.h>
#include <string.h>

#include "base/base.h"
#include "dm.h"

/* External term format tags (erts/doc/src/erl_ext_dist.xml). */
enum {
  T_NEW_FLOAT = 70,
  T_BIT_BINARY = 77,
  T_NEW_PID = 88,
  T_NEW_PORT = 89,
  T_NEWER_REFERENCE = 90,
  T_SMALL_INTEGER = 97,
  T_INTEGER = 98,
  T_FLOAT = 99,
  T_ATOM = 100,
  T_REFERENCE = 101,
  T_PORT = 102,
  T_PID = 103,
  T_SMALL_TUPLE = 104,
  T_LARGE_TUPLE = 105,
  T_NIL = 106,
  T_STRING = 107,
  T_LIST = 108,
  T_BINARY = 109,
  T_SMALL_BIG = 110,
  T_LARGE_BIG = 111,
  T_NEW_FUN = 112,
  T_EXPORT = 113,
  T_NEW_REFERENCE = 114,
  T_SMALL_ATOM = 115,
  T_MAP = 116,
  T_FUN = 117,
  T_ATOM_UTF8 = 118,
  T_SMALL_ATOM_UTF8 = 119,
  T_V4_PORT = 120,
};

#define NEED(n)                                                                \
  do {                                                                         \
    if ((uint64_t)(n) > (uint64_t)(len - i))                                   \
      return DM_EBADTERM;                                                      \
  } while (0)

/* Skips the atom that names the node inside a pid, port or reference. */
static int skip_node_atom(const char *buf, size_t len, size_t *ip) {
  size_t i = *ip;
  size_t n;
  NEED(1);
  unsigned char tag = (unsigned char)buf[i++];
  if (tag == T_ATOM || tag == T_ATOM_UTF8) {
    NEED(2);
    n = dm__get16be(buf + i);
    i += 2;
  } else if (tag == T_SMALL_ATOM || tag == T_SMALL_ATOM_UTF8) {
    NEED(1);
    n = (unsigned char)buf[i++];
  } else {
    return DM_EBADTERM;
  }
  NEED(n);
  *ip = i + n;
  return 0;
}

int dm__term_skip(const char *buf, size_t len, size_t *idx) {
  size_t i = *idx;
  /* Terms still to be read. Every term takes at least one byte, so a count
   * above the bytes left is malformed; that also keeps it from overflowing. */
  uint64_t pending = 1;
  uint64_t n;
  if (i > len)
    return DM_EBADTERM;
  while (pending > 0) {
    pending--;
    NEED(1);
    unsigned char tag = (unsigned char)buf[i++];
    switch (tag) {
    case T_SMALL_INTEGER:
      NEED(1);
      i += 1;
      break;
    case T_INTEGER:
      NEED(4);
      i += 4;
      break;
    case T_FLOAT:
      NEED(31);
      i += 31;
      break;
    case T_NEW_FLOAT:
      NEED(8);
      i += 8;
      break;
    case T_ATOM:
    case T_ATOM_UTF8:
    case T_STRING:
      NEED(2);
      n = dm__get16be(buf + i);
      i += 2;
      NEED(n);
      i += n;
      break;
    case T_SMALL_ATOM:
    case T_SMALL_ATOM_UTF8:
      NEED(1);
      n = (unsigned char)buf[i++];
      NEED(n);
      i += n;
      break;
    case T_SMALL_TUPLE:
      NEED(1);
      pending += (unsigned char)buf[i++];
      break;
    case T_LARGE_TUPLE:
      NEED(4);
      pending += dm__get32be(buf + i);
      i += 4;
      break;
    case T_NIL:
      break;
    case T_LIST:
      NEED(4);
      pending += (uint64_t)dm__get32be(buf + i) + 1; /* elements and tail */
      i += 4;
      break;
    case T_MAP:
      NEED(4);
      pending += 2 * (uint64_t)dm__get32be(buf + i);
      i += 4;
      break;
    case T_BINARY:
      NEED(4);
      n = dm__get32be(buf + i);
      i += 4;
      NEED(n);
      i += n;
      break;
    case T_BIT_BINARY:
      NEED(5);
      n = dm__get32be(buf + i);
      if (buf[i + 4] < 1 || buf[i + 4] > 8 || n == 0)
        return DM_EBADTERM;
      i += 5;
      NEED(n);
      i += n;
      break;
    case T_SMALL_BIG:
      NEED(2);
      n = (unsigned char)buf[i];
      i += 2;
      NEED(n);
      i += n;
      break;
    case T_LARGE_BIG:
      NEED(5);
      n = dm__get32be(buf + i);
      i += 5;
      NEED(n);
      i += n;
      break;
    case T_NEW_PID:
    case T_PID:
      if (skip_node_atom(buf, len, &i))
        return DM_EBADTERM;
      n = tag == T_NEW_PID ? 12 : 9;
      NEED(n);
      i += n;
      break;
    case T_NEW_PORT:
    case T_PORT:
    case T_V4_PORT:
      if (skip_node_atom(buf, len, &i))
        return DM_EBADTERM;
      n = tag == T_NEW_PORT ? 8 : tag == T_PORT ? 5 : 12;
      NEED(n);
      i += n;
      break;
    case T_REFERENCE:
      if (skip_node_atom(buf, len, &i))
        return DM_EBADTERM;
      NEED(5);
      i += 5;
      break;
    case T_NEW_REFERENCE:
    case T_NEWER_REFERENCE:
      NEED(2);
      n = dm__get16be(buf + i);
      i += 2;
      if (n > 5)
        return DM_EBADTERM;
      if (skip_node_atom(buf, len, &i))
        return DM_EBADTERM;
      n = (tag == T_NEW_REFERENCE ? 1 : 4) + 4 * n;
      NEED(n);
      i += n;
      break;
    case T_NEW_FUN:
      NEED(4);
      n = dm__get32be(buf + i); /* counts itself */
      if (n < 4)
        return DM_EBADTERM;
      NEED(n);
      i += n;
      break;
    case T_EXPORT:
      pending += 3;
      break;
    case T_FUN:
      NEED(4);
      pending += 4 + (uint64_t)dm__get32be(buf + i);
      i += 4;
      break;
    default:
      return DM_EBADTERM;
    }
    if (pending > len - i)
      return DM_EBADTERM;
  }
  *idx = i;
  return 0;
}

int dm__term_skip_versioned(const char *buf, size_t len, size_t *idx) {
  size_t i = *idx;
  if (i >= len || (unsigned char)buf[i] != DM__VERSION_MAGIC)
    return DM_EBADTERM;
  i++;
  int r = dm__term_skip(buf, len, &i);
  if (r)
    return r;
  *idx = i;
  return 0;
}

int dm__term_is_atom(const char *buf, size_t len, const char *name) {
  size_t n, nlen = strlen(name), hdr;
  if (len < 2)
    return 0;
  unsigned char tag = (unsigned char)buf[0];
  if (tag == T_ATOM || tag == T_ATOM_UTF8) {
    if (len < 3)
      return 0;
    n = dm__get16be(buf + 1);
    hdr = 3;
  } else if (tag == T_SMALL_ATOM || tag == T_SMALL_ATOM_UTF8) {
    n = (unsigned char)buf[1];
    hdr = 2;
  } else {
    return 0;
  }
  return n == nlen && len - hdr >= n && memcmp(buf + hdr, name, n) == 0;
}

int dm__term_depth_ok(const char *buf, size_t len, unsigned max_depth) {
  /* A stack of "terms left" per open container; only containers push, so
   * the stack is as deep as the nesting and bounded by max_depth. */
  uint64_t stack_small[64];
  uint64_t *left = stack_small;
  unsigned depth = 0, cap = 64;
  size_t i = 0;
  int ok = 1;
  uint64_t pending = 1; /* terms left at the current level */
  for (;;) {
    while (pending == 0) {
      if (depth == 0)
        goto out;
      pending = left[--depth];
    }
    if (i >= len) {
      ok = 0;
      goto out;
    }
    pending--;
    unsigned char tag = (unsigned char)buf[i];
    uint64_t n = 0;
    size_t start = i;
    if (tag == T_SMALL_TUPLE || tag == T_LARGE_TUPLE || tag == T_LIST || tag == T_MAP) {
      size_t hdr = tag == T_SMALL_TUPLE ? 2 : 5;
      if (i + hdr > len) {
        ok = 0;
        goto out;
      }
      n = tag == T_SMALL_TUPLE ? (unsigned char)buf[i + 1] : dm__get32be(buf + i + 1);
      if (tag == T_LIST)
        n += 1;
      else if (tag == T_MAP)
        n *= 2;
      i += hdr;
      if (depth + 1 > max_depth) {
        ok = 0;
        goto out;
      }
      if (depth == cap) {
        unsigned ncap = cap * 2;
        uint64_t *nl = dm__malloc(ncap * sizeof *nl);
        if (!nl) {
          ok = 0;
          goto out;
        }
        memcpy(nl, left, depth * sizeof *nl);
        if (left != stack_small)
          dm__free(left);
        left = nl;
        cap = ncap;
      }
      left[depth++] = pending;
      pending = n;
      continue;
    }
    /* Anything else is skipped whole (funs and pids included). */
    if (dm__term_skip(buf, len, &i)) {
      ok = 0;
      goto out;
    }
    (void)start;
  }
out:
  if (left != stack_small)
    dm__free(left);
  return ok;
}
