/* The slab: equal slots cut from large chunks, reused through a free list. */
#include "base/base.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dm.h"

int dm__slab_init(dm__slab *s, size_t size, size_t chunk_bytes) {
  memset(s, 0, sizeof *s);
  if (size == 0 || chunk_bytes < size)
    return DM_EINVAL;
  s->size = (size + 7) & ~(size_t)7;
  s->per_chunk = chunk_bytes / s->size;
  s->next = s->per_chunk; /* no chunk yet */
  return 0;
}

/* A chunk is about to be written from end to end: faulting its pages in
 * with one call costs far less than a trap per page, most of all in a
 * virtual machine. Kernels before 5.14 refuse, and the pages fault in as
 * they are used. */
static void prefault(char *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  long ps = sysconf(_SC_PAGESIZE);
  uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096, start = (uintptr_t)p & ~(page - 1);
  (void)madvise((void *)start, (uintptr_t)p + len - start, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)len;
#endif
}

/* A chunk of len bytes. Chunks of nearly 2 MiB and more start on a 2 MiB
 * boundary and ask for transparent huge pages: a million workers touched
 * once a second are two hundred thousand 4 KiB pages, and a TLB miss on
 * nearly every one of them. Where THP is off the advice is ignored. */
static char *chunk_new(size_t len) {
  enum { HUGE = 2u << 20 };
  char *chunk;
  if (len > HUGE / 2) {
    chunk = dm__aligned_alloc(HUGE, (len + HUGE - 1) & ~(size_t)(HUGE - 1));
#ifdef MADV_HUGEPAGE
    if (chunk)
      (void)madvise(chunk, len, MADV_HUGEPAGE);
#endif
  } else {
    chunk = dm__malloc(len);
  }
  if (chunk)
    prefault(chunk, len);
  return chunk;
}

static size_t chunk_bytes(const dm__slab *s) { return s->per_chunk * s->size; }

/* The first of byaddr's first n places whose chunk starts after p. */
static size_t after(const dm__slab *s, const char *p, size_t n) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->chunks[s->byaddr[mid]] <= p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* A new chunk, last in chunks, goes into byaddr where its address says
 * (room for it was made before). */
static void index_newest(dm__slab *s) {
  size_t k = s->nchunks - 1, at = after(s, s->chunks[k], k);
  memmove(s->byaddr + at + 1, s->byaddr + at, (k - at) * sizeof *s->byaddr);
  s->byaddr[at] = k;
}

static int by_address(const void *x, const void *y, void *arg) {
  char *const *chunks = arg;
  const char *a = chunks[*(const size_t *)x], *b = chunks[*(const size_t *)y];
  return a < b ? -1 : a > b;
}

static void index_all(dm__slab *s) {
  for (size_t k = 0; k < s->nchunks; k++)
    s->byaddr[k] = k;
  qsort_r(s->byaddr, s->nchunks, sizeof *s->byaddr, by_address, s->chunks);
}

size_t dm__slab_place(const dm__slab *s, const void *p) {
  const char *q = p;
  size_t j = after(s, q, s->nchunks);
  if (j == 0)
    return SIZE_MAX;
  size_t k = s->byaddr[j - 1];
  size_t off = (size_t)(q - s->chunks[k]);
  if (off >= chunk_bytes(s) || off % s->size)
    return SIZE_MAX;
  return k * s->per_chunk + off / s->size;
}

void *dm__slab_alloc(dm__slab *s) {
  void *p;
  if (s->free) {
    p = s->free;
    memcpy(&s->free, p, sizeof(void *));
  } else {
    if (s->next == s->per_chunk) {
      if (dm__array_grow((void **)&s->chunks, &s->capchunks, s->nchunks + 1,
                         sizeof *s->chunks, 16) ||
          dm__array_grow((void **)&s->byaddr, &s->capbyaddr, s->nchunks + 1,
                         sizeof *s->byaddr, 16))
        return NULL;
      char *chunk = chunk_new(chunk_bytes(s));
      if (!chunk)
        return NULL;
      s->chunks[s->nchunks++] = chunk;
      index_newest(s);
      s->next = 0;
    }
    p = s->chunks[s->nchunks - 1] + s->next++ * s->size;
  }
  memset(p, 0, s->size);
  s->live++;
  return p;
}

static void push_free(dm__slab *s, void *p) {
  memcpy(p, &s->free, sizeof(void *));
  s->free = p;
}

static void *pop_free(dm__slab *s) {
  void *p = s->free;
  if (p)
    memcpy(&s->free, p, sizeof(void *));
  return p;
}

void dm__slab_free(dm__slab *s, void *p) {
  push_free(s, p);
  s->live--;
}

/* Chunk k's slots handed out at least once: all but the newest's tail. */
static size_t used_in(const dm__slab *s, size_t k) {
  return k + 1 == s->nchunks ? s->next : s->per_chunk;
}

size_t dm__slab_shrink(dm__slab *s, int (*live)(const void *slot, void *ud),
                       int (*move)(void *from, void *to, void *ud), void *ud) {
  if (!dm__slab_sparse(s))
    return 0;
  /* The first chunks hold every live slot with a chunk to spare, so the
   * free list, rebuilt from their free slots alone, never runs dry. */
  size_t keep = s->live / s->per_chunk + 1, kept = keep, freed = 0;
  s->free = NULL;
  for (size_t k = 0; k < keep; k++)
    for (size_t i = used_in(s, k); i-- > 0;) {
      char *p = s->chunks[k] + i * s->size;
      if (!live(p, ud))
        push_free(s, p);
    }
  for (size_t k = keep; k < s->nchunks; k++) {
    char *c = s->chunks[k];
    size_t n = used_in(s, k);
    int stays = 0;
    for (size_t i = 0; i < n; i++) {
      char *p = c + i * s->size, *to;
      if (!live(p, ud))
        continue;
      if (!(to = pop_free(s))) {
        stays = 1;
      } else if (move(p, to, ud)) {
        push_free(s, to);
        stays = 1;
      }
    }
    if (!stays) {
      dm__free(c);
      freed++;
      continue;
    }
    /* It stays for the few slots that would not move, and takes no new
     * ones: the next shrink empties it once they can move. Were its free
     * slots handed out again, later chunks' survivors would fill it, and
     * with a slot or two held in most chunks (workers busy at 1 Hz), the
     * slab would settle at a quarter full for good. A tail never handed
     * out is zeroed, as alloc would, so that walks see those slots as
     * free. */
    if (n < s->per_chunk)
      memset(c + n * s->size, 0, (s->per_chunk - n) * s->size);
    s->chunks[kept++] = c;
  }
  s->nchunks = kept;
  s->next = s->per_chunk;
  s->unsettled = kept > keep;
  index_all(s);
  return freed;
}

void dm__slab_destroy(dm__slab *s) {
  for (size_t i = 0; i < s->nchunks; i++)
    dm__free(s->chunks[i]);
  dm__free(s->chunks);
  dm__free(s->byaddr);
  memset(s, 0, sizeof *s);
}

char *dm__slab_chunk(const dm__slab *s, size_t k, size_t *n) {
  if (k >= s->nchunks)
    return NULL;
  *n = k + 1 == s->nchunks ? s->next : s->per_chunk;
  return s->chunks[k];
}
