/* Terms printed for log lines, bounded: an id or a crash reason can be
 * as large as a peer likes, a log line may not. Erlang's syntax for what
 * ids and reasons usually are (atoms, numbers, binaries, strings, tuples,
 * lists, maps, pids); anything else by its type. */
#include <ctype.h>
#include <ei.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "term/term.h"

/* Larger terms are named by their size: a crash path must not walk them. */
#define PRINT_MAX_BYTES 4096
#define PRINT_MAX_DEPTH 32

typedef struct {
  char *out;
  size_t cap, len;
} pr;

static void put(pr *p, const char *fmt, ...) {
  va_list ap;
  if (p->len + 1 >= p->cap)
    return;
  va_start(ap, fmt);
  int n = vsnprintf(p->out + p->len, p->cap - p->len, fmt, ap);
  va_end(ap);
  if (n > 0)
    p->len = p->len + (size_t)n < p->cap ? p->len + (size_t)n : p->cap - 1;
}

static int printable(const unsigned char *s, long n) {
  for (long i = 0; i < n; i++)
    if (!isprint(s[i]) || s[i] == '"' || s[i] == '\\')
      return 0;
  return 1;
}

static int term(pr *p, const char *b, int *i, int depth) {
  int type, size, arity;
  if (depth > PRINT_MAX_DEPTH || ei_get_type(b, i, &type, &size) < 0)
    return -1;
  switch (type) {
  case ERL_ATOM_EXT:
  case ERL_SMALL_ATOM_EXT:
  case ERL_ATOM_UTF8_EXT:
  case ERL_SMALL_ATOM_UTF8_EXT: {
    char a[MAXATOMLEN_UTF8];
    if (ei_decode_atom(b, i, a) < 0)
      return -1;
    put(p, "%s", a);
    return 0;
  }
  case ERL_SMALL_INTEGER_EXT:
  case ERL_INTEGER_EXT:
  case ERL_SMALL_BIG_EXT:
  case ERL_LARGE_BIG_EXT: {
    long long v;
    if (ei_decode_longlong(b, i, &v) == 0) {
      put(p, "%lld", v);
      return 0;
    }
    put(p, "<big integer>");
    return ei_skip_term(b, i);
  }
  case NEW_FLOAT_EXT:
  case ERL_FLOAT_EXT: {
    double d;
    if (ei_decode_double(b, i, &d) < 0)
      return -1;
    put(p, "%g", d);
    return 0;
  }
  case ERL_BINARY_EXT: {
    const unsigned char *s = (const unsigned char *)b + *i + 5;
    if (printable(s, size)) {
      put(p, "<<\"%.*s\">>", size, (const char *)s);
    } else {
      put(p, "<<");
      for (int k = 0; k < size && p->len + 1 < p->cap; k++)
        put(p, k ? ",%u" : "%u", s[k]);
      put(p, ">>");
    }
    return ei_skip_term(b, i);
  }
  case ERL_STRING_EXT: {
    const unsigned char *s = (const unsigned char *)b + *i + 3;
    if (printable(s, size))
      put(p, "\"%.*s\"", size, (const char *)s);
    else
      put(p, "<a list of %d small integers>", size);
    return ei_skip_term(b, i);
  }
  case ERL_NIL_EXT:
    put(p, "[]");
    return ei_skip_term(b, i);
  case ERL_SMALL_TUPLE_EXT:
  case ERL_LARGE_TUPLE_EXT:
    if (ei_decode_tuple_header(b, i, &arity) < 0)
      return -1;
    put(p, "{");
    for (int k = 0; k < arity; k++) {
      if (k)
        put(p, ", ");
      if (term(p, b, i, depth + 1))
        return -1;
    }
    put(p, "}");
    return 0;
  case ERL_LIST_EXT:
    if (ei_decode_list_header(b, i, &arity) < 0)
      return -1;
    put(p, "[");
    for (int k = 0; k < arity; k++) {
      if (k)
        put(p, ", ");
      if (term(p, b, i, depth + 1))
        return -1;
    }
    if (ei_get_type(b, i, &type, &size) == 0 && type == ERL_NIL_EXT) {
      ei_skip_term(b, i);
    } else {
      put(p, " | ");
      if (term(p, b, i, depth + 1))
        return -1;
    }
    put(p, "]");
    return 0;
  case ERL_MAP_EXT:
    if (ei_decode_map_header(b, i, &arity) < 0)
      return -1;
    put(p, "#{");
    for (int k = 0; k < arity; k++) {
      if (k)
        put(p, ", ");
      if (term(p, b, i, depth + 1))
        return -1;
      put(p, " => ");
      if (term(p, b, i, depth + 1))
        return -1;
    }
    put(p, "}");
    return 0;
  case ERL_PID_EXT:
  case ERL_NEW_PID_EXT: {
    erlang_pid pid;
    if (ei_decode_pid(b, i, &pid) < 0)
      return -1;
    put(p, "<%s.%u.%u>", pid.node, pid.num, pid.serial);
    return 0;
  }
  default:
    put(p, "<a term of type %d>", type);
    return ei_skip_term(b, i);
  }
}

const char *dm__term_print(const char *t, size_t len, char *out, size_t cap) {
  pr p = {out, cap, 0};
  int i = 0;
  if (cap == 0)
    return out;
  out[0] = 0;
  if (len > PRINT_MAX_BYTES || !dm__term_depth_ok(t, len, PRINT_MAX_DEPTH) ||
      term(&p, t, &i, 0) != 0) {
    snprintf(out, cap, "<a term of %zu bytes>", len);
    return out;
  }
  if (p.len + 1 >= cap && cap > 4)
    memcpy(out + cap - 4, "...", 4);
  return out;
}
