/* A growable byte buffer. The creator frees it with dm__buf_free. */
#ifndef DM_BUF_H
#define DM_BUF_H

#include <stddef.h>
#include <stdint.h>

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

#endif
