/* A slab of fixed-size objects: large chunks cut into equal slots, a free
 * list threaded through the free slots. For workers it saves malloc's
 * per-object header and keeps workers started together next to each
 * other in memory. Memory goes back to the system only on destroy. */
#ifndef DM_SLAB_H
#define DM_SLAB_H

#include <stddef.h>

typedef struct {
  size_t size;      /* slot size, a multiple of 8 */
  size_t per_chunk; /* slots per chunk */
  char **chunks;
  size_t nchunks, capchunks;
  void *free;       /* free slots, linked through their first word */
  size_t next;      /* next never-used slot of the newest chunk */
  size_t live;      /* slots handed out */
} dm__slab;

/* Slots of size bytes (rounded up to 8). 0 or DM_EINVAL. */
int dm__slab_init(dm__slab *s, size_t size, size_t chunk_bytes);
/* A zeroed slot, or NULL when out of memory. */
void *dm__slab_alloc(dm__slab *s);
/* Returns a slot from this slab. */
void dm__slab_free(dm__slab *s, void *p);
/* Frees every chunk; slots still out are gone with them. */
void dm__slab_destroy(dm__slab *s);

#endif
