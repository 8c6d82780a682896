/* base: what every layer stands on. Allocation with failure injection,
 * byte buffers, the growth rule for arrays, levelled logging and slabs.
 * Depends on nothing of the node. */
#ifndef DM_BASE_H
#define DM_BASE_H

#include <stddef.h>
#include <stdint.h>

/* ---- alloc ---------------------------------------------------------------*/
/* The one allocation wrapper. Every allocation of the node goes through it
 * so that tests can inject failures; running out of memory is an error the
 * node survives. */

void *dm__malloc(size_t n);
void *dm__calloc(size_t count, size_t n);
void *dm__realloc(void *p, size_t n);
/* n bytes starting on a multiple of align (a power of two; n a multiple
 * of it), freed with dm__free. */
void *dm__aligned_alloc(size_t align, size_t n);
void dm__free(void *p);
/* A copy of s through the wrapper, or NULL. */
char *dm__strdup(const char *s);

/* The capacity a growable array or table takes to hold need: its own
 * (min when it has none) doubled until it does. Callers keep capacities
 * powers of two when min is one. */
static inline size_t dm__grow_cap(size_t cap, size_t need, size_t min) {
  if (!cap)
    cap = min;
  while (cap < need)
    cap *= 2;
  return cap;
}

/* Grows the array *arr of elements of elem bytes, whose capacity is *cap,
 * to hold at least need of them by the rule above. On failure *arr and
 * *cap are unchanged. 0 or DM_ENOMEM. */
int dm__array_grow(void **arr, size_t *cap, size_t need, size_t elem, size_t min);

/* Test hook: the next `after` allocations succeed, the ones after fail.
 * A negative value switches injection off. */
void dm__alloc_fail_after(long after);

/* ---- buf -----------------------------------------------------------------*/
/* A growable byte buffer. The creator frees it with dm__buf_free. */

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} dm__buf;

#define DM__BUF_INIT {NULL, 0, 0}

/* Ensures room for `extra` more bytes. 0 or DM_ENOMEM. */
int dm__buf_reserve(dm__buf *b, size_t extra);
/* Appends n bytes. 0 or DM_ENOMEM (b unchanged then). */
int dm__buf_append(dm__buf *b, const void *p, size_t n);
/* Drops the first n bytes. */
void dm__buf_consume(dm__buf *b, size_t n);
/* Releases the memory; b is empty and reusable afterwards. */
void dm__buf_free(dm__buf *b);

static inline void dm__put32be(char *p, uint32_t v) {
  p[0] = (char)(v >> 24);
  p[1] = (char)(v >> 16);
  p[2] = (char)(v >> 8);
  p[3] = (char)v;
}

static inline uint32_t dm__get32be(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 |
         u[3];
}

static inline uint16_t dm__get16be(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint16_t)(u[0] << 8 | u[1]);
}

/* ---- log -----------------------------------------------------------------*/
/* Levelled logging to stderr with file:line. stdout is reserved for the
 * READY line. */

enum { DM_LOG_DEBUG = 0, DM_LOG_INFO, DM_LOG_WARNING, DM_LOG_ERROR, DM_LOG_NONE };

extern int dm__log_level;

/* Parses "debug", "info", "warning", "error" or "none"; -1 when unknown. */
int dm__log_parse_level(const char *s);
void dm__log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define DM_LOG(level, ...)                                                     \
  do {                                                                         \
    if ((level) >= dm__log_level)                                              \
      dm__log_write((level), __FILE__, __LINE__, __VA_ARGS__);                 \
  } while (0)

#define DM_DEBUG(...) DM_LOG(DM_LOG_DEBUG, __VA_ARGS__)
#define DM_INFO(...) DM_LOG(DM_LOG_INFO, __VA_ARGS__)
#define DM_WARN(...) DM_LOG(DM_LOG_WARNING, __VA_ARGS__)
#define DM_ERROR(...) DM_LOG(DM_LOG_ERROR, __VA_ARGS__)

/* ---- slab ----------------------------------------------------------------*/
/* A slab of fixed-size objects: large chunks cut into equal slots, a free
 * list threaded through the free slots. For workers it saves malloc's
 * per-object header and keeps workers started together next to each
 * other in memory. Memory goes back to the system only on destroy. */

typedef struct {
  size_t size;      /* slot size, a multiple of 8 */
  size_t per_chunk; /* slots per chunk */
  char **chunks;
  size_t nchunks, capchunks;
  size_t *byaddr;   /* the chunks' places in chunks, by their address */
  size_t capbyaddr;
  void *free;       /* free slots, linked through their first word */
  size_t next;      /* next never-used slot of the newest chunk */
  size_t live;      /* slots handed out */
  int unsettled;    /* the last shrink kept chunks for slots that would not
                       move: the next one looks, sparse or not */
} dm__slab;

/* Slots of size bytes (rounded up to 8). 0 or DM_EINVAL. */
int dm__slab_init(dm__slab *s, size_t size, size_t chunk_bytes);
/* A zeroed slot, or NULL when out of memory. */
void *dm__slab_alloc(dm__slab *s);
/* Returns a slot from this slab. */
void dm__slab_free(dm__slab *s, void *p);
/* Gives chunks back once the slab is less than a quarter full: the live
 * slots of every chunk past the first few are moved into the free slots
 * of those, and the emptied chunks are freed. live tells a slot in use
 * from a free one; move copies a slot to another and makes the old one
 * read as free to live, or refuses (nonzero) and leaves both as they
 * were, when something holds its address. A chunk with a refused slot
 * stays. Returns how many chunks were freed. */
/* True when dm__slab_shrink would look: two chunks or more, at most a
 * quarter of their slots in use, or chunks the last shrink could not
 * empty. */
static inline int dm__slab_sparse(const dm__slab *s) {
  return s->nchunks >= 2 && (s->unsettled || s->live * 4 <= s->nchunks * s->per_chunk);
}
size_t dm__slab_shrink(dm__slab *s, int (*live)(const void *slot, void *ud),
                       int (*move)(void *from, void *to, void *ud), void *ud);
/* Frees every chunk; slots still out are gone with them. */
void dm__slab_destroy(dm__slab *s);
/* Chunk k's first slot and, in *n, how many of its slots were ever handed
 * out (free ones among them: the caller tells its live objects apart), or
 * NULL past the last chunk. Walking the chunks visits every object in
 * memory order, which the hardware prefetches, where a walk in any other
 * order misses the cache at almost every object. */
char *dm__slab_chunk(const dm__slab *s, size_t k, size_t *n);
/* The place of slot p in memory order: chunk k's slot i is at
 * k * per_chunk + i. SIZE_MAX when p is no slot of s. A shrink changes
 * the places of the slots it moves, and of the chunks after a freed one. */
size_t dm__slab_place(const dm__slab *s, const void *p);

#endif
