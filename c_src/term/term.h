/* term: external term format read with bounds (walk.c), canonical ids
 * and their hash (canon.c), reference-counted blobs (blob.c), the atoms
 * the node sends, encoded once, encoders behaviours share (enc.c) and
 * bounded printing for log lines (print.c).
 * Depends on base and ei. */
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

/* The valid term t (len bytes, no version byte) as text for a log line,
 * into out (cap bytes, cut with "..." when longer); a large or deep term
 * is named by its size instead. Returns out. */
const char *dm__term_print(const char *t, size_t len, char *out, size_t cap);

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

/* ---- atoms ---------------------------------------------------------------*/
/* Atoms the node sends, pre-encoded (SMALL_ATOM_UTF8_EXT), defined here
 * once. String literals, so they concatenate into larger constant terms;
 * DM__ALEN gives a literal's length without its NUL. */
#define DM__ALEN(lit) (sizeof(lit) - 1)
#define DM__A_OK "\x77\x02" "ok"
#define DM__A_ERROR "\x77\x05" "error"
#define DM__A_NIL "\x77\x03" "nil"
#define DM__A_NORMAL "\x77\x06" "normal"
#define DM__A_SHUTDOWN "\x77\x08" "shutdown"
#define DM__A_CRASHED "\x77\x07" "crashed"
#define DM__A_NOPROC "\x77\x06" "noproc"
#define DM__A_NOCONNECTION "\x77\x0c" "noconnection"
#define DM__A_ENOMEM "\x77\x06" "enomem"
#define DM__A_BAD_RETURN "\x77\x0a" "bad_return"

/* ---- blob ----------------------------------------------------------------*/
/* A term owned by the runtime: 4-byte length, 4-byte reference count,
 * then the bytes. NULL is nil. Payload and value, and the opts of workers
 * started from one spec, share one blob instead of holding copies. Loop
 * thread only: the count is not atomic. */
typedef char dm__blob;
#define DM__BLOB_HDR 8
/* A blob holding a copy of data, with one reference; NULL when out of
 * memory. */
dm__blob *dm__blob_new(const char *data, size_t len);
dm__blob *dm__blob_ref(dm__blob *b);
/* Drops a reference; the last one frees. NULL is fine. */
void dm__blob_unref(dm__blob *b);
static inline uint32_t dm__blob_len(const dm__blob *b) {
  return b ? *(const uint32_t *)(const void *)b : 0;
}
static inline const char *dm__blob_data(const dm__blob *b) {
  return b ? b + DM__BLOB_HDR : DM__A_NIL;
}
static inline size_t dm__blob_size(const dm__blob *b) {
  return b ? dm__blob_len(b) : DM__ALEN(DM__A_NIL);
}
static inline uint32_t dm__blob_refs(const dm__blob *b) {
  return ((const uint32_t *)(const void *)b)[1];
}
/* True when len bytes fit in b's allocation. */
int dm__blob_fits(const dm__blob *b, size_t len);
/* Overwrites b's bytes; only for a blob no one else is reading. */
void dm__blob_rewrite(dm__blob *b, const char *data, size_t len);

/* ---- cell ----------------------------------------------------------------*/
/* A cell holds one term the way a worker keeps its payload and value:
 * as a blob (NULL: nil), or, when the term is at most DM__CELL_INLINE
 * bytes (small integers, short atoms), in the cell's own word, which
 * costs no allocation and no cache miss on every perform. Blobs are
 * malloc'd, so their address is even: an odd word is an inline term, its
 * low byte 1 | len << 1 and the bytes after it the term. Only where that
 * low byte comes first in memory (little-endian); elsewhere nothing is
 * inline. Loop thread only, as blobs are. */
typedef union {
  dm__blob *b;
  uintptr_t word;
  unsigned char in[sizeof(uintptr_t)];
} dm__cell;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define DM__CELL_INLINE (sizeof(uintptr_t) - 1)
#else
#define DM__CELL_INLINE 0
#endif
#define DM__CELL_NIL ((dm__cell){.b = NULL})

static inline int dm__cell_is_inline(const dm__cell *c) { return (c->word & 1) != 0; }
/* True for the empty cell, nil (not for a cell holding the atom nil). */
static inline int dm__cell_is_nil(const dm__cell *c) { return c->word == 0; }
static inline const char *dm__cell_data(const dm__cell *c) {
  return dm__cell_is_inline(c) ? (const char *)c->in + 1 : dm__blob_data(c->b);
}
/* The term's length; nil's encoding for the empty cell. */
static inline size_t dm__cell_size(const dm__cell *c) {
  return dm__cell_is_inline(c) ? (size_t)(c->in[0] >> 1) : dm__blob_size(c->b);
}
/* The blob, or NULL when the term is inline or nil. */
static inline dm__blob *dm__cell_blob(const dm__cell *c) {
  return dm__cell_is_inline(c) ? NULL : c->b;
}
/* Stores a copy of the term; the old one is dropped. On failure (0 or
 * DM_ENOMEM) the cell keeps its old term. */
int dm__cell_set(dm__cell *c, const char *data, size_t len);
/* dst holds src's term too: the word is copied, a blob shared. */
void dm__cell_copy(dm__cell *dst, const dm__cell *src);
/* Drops the term: the cell is nil. */
void dm__cell_clear(dm__cell *c);

#endif
