/* A manager's checkpoints (--state-dir), in chunks of children: which
 * chunk a worker is in, the chunks a checkpoint writes and how, and how
 * they are read back at boot. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

/* Checkpoints go to state records, not to the children's: each child
 * belongs to one of DM__NCHUNKS chunks by a fixed hash of its id, and a
 * checkpoint rewrites the chunks that hold a changed child, each as one
 * record of entries: Gen (4 bytes, big-endian), the lengths of id,
 * payload and value (LEB128; a value of length 0 is nil), then their
 * bytes. A million children all changing every second so cost 4096
 * writes a second, not a million, and no sort. At boot an entry whose id
 * is no child, or whose Gen is not its record's (the child was put again
 * since), is stale and skipped. */
#define CHUNK_SEED 0x7461726561726230ull

#define NCHUNKS DM__NCHUNKS

static uint32_t chunk_of(const dm__worker *w) {
  return (uint32_t)dm__hash(dm__worker_id(w), dm__worker_id_len(w), CHUNK_SEED) &
         (NCHUNKS - 1);
}

static void mark(dm__chunks *d, uint32_t c) { d->marked[c >> 6] |= 1ull << (c & 63); }

static int is_marked(const dm__chunks *d, uint32_t c) {
  return (d->marked[c >> 6] >> (c & 63)) & 1;
}

void dm__chunks_mark(dm__chunks *d, const dm__worker *w) { mark(d, chunk_of(w)); }

static size_t varint_len(uint32_t v) {
  size_t n = 1;
  while (v > 0x7f) {
    v >>= 7;
    n++;
  }
  return n;
}

static char *put_varint(char *p, uint32_t v) {
  do {
    *p++ = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return p;
}

/* The value's length in an entry: 0 for nil. */
static uint32_t value_len(const dm__cell *v) {
  return dm__cell_is_nil(v) ? 0 : (uint32_t)dm__cell_size(v);
}

static size_t entry_len(const dm__worker *w) {
  uint32_t il = (uint32_t)dm__worker_id_len(w), pl = (uint32_t)dm__cell_size(&w->payload);
  uint32_t vl = value_len(dm__worker_value(w));
  return 4 + varint_len(il) + varint_len(pl) + varint_len(vl) + (size_t)il + pl + vl;
}

/* Writes w's entry at p (entry_len(w) bytes) and returns its end. */
static char *put_entry(char *p, const dm__worker *w) {
  const dm__cell *v = dm__worker_value(w);
  uint32_t il = (uint32_t)dm__worker_id_len(w), pl = (uint32_t)dm__cell_size(&w->payload);
  uint32_t vl = value_len(v);
  *p++ = (char)(w->gen >> 24);
  *p++ = (char)(w->gen >> 16);
  *p++ = (char)(w->gen >> 8);
  *p++ = (char)w->gen;
  p = put_varint(p, il);
  p = put_varint(p, pl);
  p = put_varint(p, vl);
  memcpy(p, dm__worker_id(w), il);
  memcpy(p + il, dm__cell_data(&w->payload), pl);
  if (vl)
    memcpy(p + il + pl, dm__cell_data(v), vl);
  return p + il + pl + vl;
}

/* Whether the slab slot w holds a live worker of m. With one manager (the
 * usual node) every live slot does, and a walk reads no opts record. */
static int is_of(const dm__worker *w, const dm__manager *m, int sole) {
  return w->opts && (sole || w->opts->m == m);
}

/* Runs body for every worker w of m in the children table, in memory
 * order (the slab's, which every manager of the scheduler shares),
 * fetching the payload of a worker a few ahead into the cache. */
#define AHEAD 8
#define EACH_WORKER(m, w, body)                                                \
  do {                                                                         \
    const dm__slab *slab_ = &(m)->sched->workers;                             \
    int sole_ = (m)->sched->nmanagers == 1;                                    \
    char *base_;                                                               \
    size_t n_;                                                                 \
    for (size_t k_ = 0; (base_ = dm__slab_chunk(slab_, k_, &n_)); k_++)        \
      for (size_t i_ = 0; i_ < n_; i_++) {                                     \
        dm__worker *w = (dm__worker *)(base_ + i_ * slab_->size);            \
        if (i_ + AHEAD < n_) {                                                 \
          const dm__worker *a_ =                                               \
              (const dm__worker *)(base_ + (i_ + AHEAD) * slab_->size);      \
          if (is_of(a_, (m), sole_) && dm__cell_blob(&a_->payload))           \
            __builtin_prefetch(dm__cell_blob(&a_->payload));                   \
        }                                                                      \
        if (!is_of(w, (m), sole_) || (w->proc.flags & DM__W_STOPPING))             \
          continue;                                                            \
        body                                                                   \
      }                                                                        \
  } while (0)

/* Writes every chunk that holds a changed worker, or that a del marked,
 * into b; the workers of a chunk written are recorded. After a look for
 * a changed worker, two walks over the workers in memory order: which
 * chunks to write and how long each is, then their entries, straight
 * into room the batch made for them all at once, so a checkpoint holds
 * its bytes once and in one piece. Out of memory, the chunks stay marked
 * for the next one. */
int dm__chunks_write(dm__manager *m, dm__chunks *d, dm__store_batch *b, size_t *changed,
                     size_t *written) {
  size_t n = 0, chunks = 0, total = 0;
  int first = 0, any = 0;
  *changed = *written = 0;
  for (size_t j = 0; j < NCHUNKS / 64 && !any; j++)
    any = d->marked[j] != 0;
  /* Anything to write at all: a look at the flags, up to the first. */
  if (!any) {
    const dm__slab *slab = &m->sched->workers;
    char *base;
    size_t cnt;
    for (size_t k = 0; !any && (base = dm__slab_chunk(slab, k, &cnt)); k++)
      for (size_t i = 0; i < cnt && !any; i++) {
        const dm__worker *w = (const dm__worker *)(base + i * slab->size);
        any = is_of(w, m, m->sched->nmanagers == 1) && !(w->proc.flags & DM__W_STOPPING) &&
              (w->proc.flags & DM__W_DIRTY);
      }
  }
  if (!any)
    return 0;
  size_t *len = dm__calloc(NCHUNKS, sizeof *len);
  char **at = dm__calloc(NCHUNKS, sizeof *at);
  /* Each worker's chunk, in walk order, for the second walk. */
  uint16_t *cof = m->count ? dm__malloc(m->count * sizeof *cof) : NULL;
  size_t k = 0;
  if (!len || !at || (!cof && m->count)) {
    first = DM_ENOMEM; /* nothing added: all stay marked */
    goto out;
  }
  /* The first walk: each worker's chunk, the changed ones marked, and how
   * long every chunk would be (most are written: a few thousand changed
   * workers mark almost all of the 4096). */
  EACH_WORKER(m, w, {
    uint32_t c = chunk_of(w);
    if (k < m->count)
      cof[k++] = (uint16_t)c;
    len[c] += entry_len(w);
    if (w->proc.flags & DM__W_DIRTY) {
      mark(d, c);
      n++;
    }
  });
  for (uint32_t c = 0; c < NCHUNKS; c++)
    if (is_marked(d, c)) {
      chunks++;
      total += len[c];
    }
  if ((first = dm__store_batch_reserve(b, chunks, total + 4 * chunks)))
    goto out;
  /* Within the room reserved nothing fails but a chunk over 4 GiB, which
   * stays marked, its workers with it. */
  uint64_t done[NCHUNKS / 64] = {0};
  for (uint32_t c = 0; c < NCHUNKS; c++) {
    if (!is_marked(d, c))
      continue;
    int r = len[c] ? dm__store_batch_state_room(b, c, len[c], &at[c])
                   : dm__store_batch_state(b, c, NULL, 0);
    if (r && !first)
      first = r;
    if (!r) {
      done[c >> 6] |= 1ull << (c & 63);
      (*written)++;
    }
  }
  size_t walked = k;
  k = 0;
  EACH_WORKER(m, w, {
    uint32_t c = k < walked ? cof[k] : chunk_of(w);
    k++;
    if ((done[c >> 6] >> (c & 63)) & 1) {
      at[c] = put_entry(at[c], w);
      w->proc.flags &= (uint16_t)~DM__W_DIRTY;
    }
  });
  for (size_t j = 0; j < NCHUNKS / 64; j++)
    d->marked[j] &= ~done[j];
  *changed = n;
out:
  dm__free(cof);
  dm__free(at);
  dm__free(len);
  return first;
}


/* A LEB128 length of at most 32 bits at rec[*i, len). 0 or -1. */
static int get_varint(const char *rec, size_t len, size_t *i, uint32_t *out) {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 35; shift += 7) {
    if (*i >= len)
      return -1;
    unsigned char c = (unsigned char)rec[(*i)++];
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      if (v > UINT32_MAX)
        return -1;
      *out = (uint32_t)v;
      return 0;
    }
  }
  return -1;
}

int dm__chunks_restore(dm__manager *m, uint32_t key, const char *rec, size_t len,
                       size_t *applied, size_t *stale) {
  size_t i = 0;
  if (key >= NCHUNKS)
    goto bad;
  while (i < len) {
    uint32_t gen, il, pl, vl;
    if (len - i < 4)
      goto bad;
    const unsigned char *q = (const unsigned char *)rec + i;
    gen = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
    i += 4;
    if (get_varint(rec, len, &i, &il) || get_varint(rec, len, &i, &pl) ||
        get_varint(rec, len, &i, &vl) || !il || il > DM__STORE_ID_MAX || !pl ||
        (uint64_t)il + pl + vl > len - i)
      goto bad;
    const char *id = rec + i, *p = id + il, *v = p + pl;
    i += (size_t)il + pl + vl;
    size_t k = 0;
    if (dm__term_skip(p, pl, &k) || k != pl)
      goto bad;
    k = 0;
    if (vl && (dm__term_skip(v, vl, &k) || k != vl))
      goto bad;
    dm__worker *w = dm__children_get(m, id, il, dm__id_hash(m, id, il));
    if (!w || w->gen != gen) {
      (*stale)++;
      continue;
    }
    dm__cell np = DM__CELL_NIL, nv = DM__CELL_NIL;
    if (dm__cell_set(&np, p, pl) || (vl && dm__cell_set(&nv, v, vl)) ||
        dm__worker_take_terms(w, &np, &nv)) {
      dm__cell_clear(&np);
      dm__cell_clear(&nv);
      DM_ERROR("manager %s: out of memory restoring a payload", m->name);
      return DM_ENOMEM;
    }
    (*applied)++;
  }
  return 0;
bad:
  return DM_EBADTERM;
}

