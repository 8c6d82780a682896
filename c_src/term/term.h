/* term: external term format read with bounds, canonical ids and their
 * hash. Depends on base and ei. */
#ifndef DM_TERM_H
#define DM_TERM_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* ---- term ----------------------------------------------------------------*/
/* Bounded reading of external term format. Terms from the network are
 * hostile: ei's decoders trust their buffer, so every term is first walked
 * here, within explicit bounds and without recursion, before ei touches it. */

#define DM__VERSION_MAGIC 131

/* Checks that buf[*idx, len) starts with one complete term (no version
 * byte) and moves *idx past it. Constant memory whatever the nesting.
 * 0 or DM_EBADTERM (*idx unchanged then). */
int dm__term_skip(const char *buf, size_t len, size_t *idx);

/* Terms handed to behaviours nest at most this deep: a behaviour may well
 * use ei's recursive functions (ei_skip_term, ei_print_term) on them. */
#define DM__TERM_MAX_DEPTH 10000

/* True when the valid term at buf (len bytes) nests no deeper than
 * max_depth containers (tuples, lists, maps, funs). Iterative. */
int dm__term_depth_ok(const char *buf, size_t len, unsigned max_depth);

/* The same for a term that starts with the version byte 131. */
int dm__term_skip_versioned(const char *buf, size_t len, size_t *idx);

/* True when the term at buf, of which len bytes are readable, is the atom
 * `name`. */
int dm__term_is_atom(const char *buf, size_t len, const char *name);

/* ---- canon ---------------------------------------------------------------*/
/* Canonical encoding of terms: the same Erlang term sent by different peers
 * (atoms in Latin-1 or UTF-8, strings or lists, small or big integer forms,
 * old or new pids and references, maps in any key order) gives the same
 * bytes, so ids hash and compare by term equality (=:=). */

#define DM__CANON_MAX_DEPTH 128

/* Appends to out the canonical encoding (no version byte) of the term that
 * is exactly buf[0, len) (no version byte). 0, DM_EBADTERM (malformed,
 * trailing bytes, nested deeper than DM__CANON_MAX_DEPTH, duplicate map
 * keys) or DM_ENOMEM; out keeps its original length on error. */
int dm__canon(const char *buf, size_t len, dm__buf *out);

/* A seeded 64-bit hash. */
uint64_t dm__hash(const void *p, size_t n, uint64_t seed);

#endif
