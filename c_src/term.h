/* Bounded reading of external term format. Terms from the network are
 * hostile: ei's decoders trust their buffer, so every term is first walked
 * here, within explicit bounds and without recursion, before ei touches it. */
#ifndef DM_TERM_H
#define DM_TERM_H

#include <stddef.h>

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

#endif
