/* Canonical encoding of terms: the same Erlang term sent by different peers
 * (atoms in Latin-1 or UTF-8, strings or lists, small or big integer forms,
 * old or new pids and references, maps in any key order) gives the same
 * bytes, so ids hash and compare by term equality (=:=). */
#ifndef DM_CANON_H
#define DM_CANON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define DM__CANON_MAX_DEPTH 128

/* Appends to out the canonical encoding (no version byte) of the term that
 * is exactly buf[0, len) (no version byte). 0, DM_EBADTERM (malformed,
 * trailing bytes, nested deeper than DM__CANON_MAX_DEPTH, duplicate map
 * keys) or DM_ENOMEM; out keeps its original length on error. */
int dm__canon(const char *buf, size_t len, dm__buf *out);

/* A seeded 64-bit hash. */
uint64_t dm__hash(const void *p, size_t n, uint64_t seed);

#endif
