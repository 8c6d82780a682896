/* A manager's checkpoints (--state-dir), in groups of children: which
 * group a worker is in, the groups a checkpoint writes and how, and how
 * they are read back at boot. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

/* Checkpoints go to state records, not to the children's. The slab's
 * slots, in memory order, fall in groups of GROUP (a slab chunk holds
 * whole groups), and a checkpoint rewrites each group that holds a
 * changed worker as one record: the checkpoint's sequence number (8
 * bytes, big-endian), then an entry for each worker of the manager in
 * it: Gen (4 bytes, big-endian), the lengths of id, payload and value
 * (LEB128; a value of length 0 is nil), then their bytes. A million
 * children all changing every second so cost 4096 writes a second, not a
 * million, and one pass over the workers in memory order, which the
 * hardware prefetches, writing each record in one piece.
 *
 * A worker moved in memory (a shrink of the slab) is written again at its
 * new place (compact.c marks it changed); its entry at the old place, if
 * that group is not written again first, is older. At boot the records
 * come oldest first, so a child's newest entry wins; an entry whose id is
 * no child, or whose Gen is not its record's (the child was put again
 * since), is stale and skipped. A shrink moves workers only to lower
 * places, and the store commits a batch in key order: a worker's new
 * group is committed before its old one goes without it, even when a
 * checkpoint takes several transactions.
 *
 * Workers laid out anew (restored at boot, restarted by an escalation)
 * move anywhere: their groups go to the other half of the keys, its key
 * space, all of them, and the space they left is emptied by the
 * checkpoint after that one, once they are all committed. */
#define GROUP 256u
#define SPACE_BIT 31
#define IN_SPACE ((1u << SPACE_BIT) - 1) /* the group's bits of a key */
/* Workers whose payloads a pass fetches ahead. */
#define AHEAD 8

static size_t groups_per_chunk(const dm__slab *s) { return (s->per_chunk + GROUP - 1) / GROUP; }

static void mark(dm__chunks *d, size_t key) {
  size_t word = key >> 6;
  if (word >= d->nmarked) {
    size_t cap = d->nmarked, old = d->nmarked;
    if (dm__array_grow((void **)&d->marked, &cap, word + 1, sizeof *d->marked, 16)) {
      d->all = 1; /* every group, then */
      return;
    }
    memset(d->marked + old, 0, (cap - old) * sizeof *d->marked);
    d->nmarked = cap;
  }
  d->marked[word] |= 1ull << (key & 63);
}

static int is_marked(const dm__chunks *d, size_t key) {
  return d->all || ((key >> 6) < d->nmarked && ((d->marked[key >> 6] >> (key & 63)) & 1));
}

static void unmark(dm__chunks *d, size_t key) {
  if ((key >> 6) < d->nmarked)
    d->marked[key >> 6] &= ~(1ull << (key & 63));
}

void dm__chunks_mark(dm__chunks *d, const dm__slab *slab, const dm__worker *w) {
  size_t at = dm__slab_place(slab, w);
  if (at == SIZE_MAX) {
    d->all = 1;
    return;
  }
  mark(d, at / slab->per_chunk * groups_per_chunk(slab) + at % slab->per_chunk / GROUP);
}

void dm__chunks_relaid(dm__chunks *d) { d->relaid = 1; }

static uint32_t space_key(unsigned space, size_t group) {
  return (uint32_t)space << SPACE_BIT | (uint32_t)group;
}

/* Removes the records of space from group from on. */
static int cut(dm__store_batch *b, unsigned space, size_t from) {
  return dm__store_batch_state_cut(b, space_key(space, from), space_key(space, IN_SPACE));
}

void dm__chunks_free(dm__chunks *d) {
  dm__free(d->marked);
  memset(d, 0, sizeof *d);
}

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

/* n bytes from s to p: ids and payloads of a few bytes, most of them,
 * copied without a call. */
static inline char *copy(char *p, const char *s, size_t n) {
  if (n > 16) {
    memcpy(p, s, n);
  } else if (n >= 8) {
    uint64_t a, z;
    memcpy(&a, s, 8);
    memcpy(&z, s + n - 8, 8);
    memcpy(p, &a, 8);
    memcpy(p + n - 8, &z, 8);
  } else if (n >= 4) {
    uint32_t a, z;
    memcpy(&a, s, 4);
    memcpy(&z, s + n - 4, 4);
    memcpy(p, &a, 4);
    memcpy(p + n - 4, &z, 4);
  } else if (n) {
    p[0] = s[0];
    p[n / 2] = s[n / 2];
    p[n - 1] = s[n - 1];
  }
  return p + n;
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
  p = copy(p, dm__worker_id(w), il);
  p = copy(p, dm__cell_data(&w->payload), pl);
  return copy(p, vl ? dm__cell_data(v) : NULL, vl);
}

/* Whether the slab slot w holds a live worker of m that a checkpoint
 * records. With one manager (the usual node) every live slot is m's, and
 * a pass reads no opts record. */
static int recorded(const dm__worker *w, const dm__manager *m, int sole) {
  return w->opts && (sole || w->opts->m == m) && !(w->proc.flags & DM__W_STOPPING);
}

/* Whether a worker of m among slots [lo, hi) of a slab chunk at base
 * changed: a look at flags alone, which brings the group into the cache
 * for the pass that writes it. */
static int group_dirty(const dm__manager *m, const dm__slab *slab, const char *base, size_t lo,
                       size_t hi, int sole) {
  int dirty = 0;
  for (size_t i = lo; i < hi; i++) {
    const dm__worker *w = (const dm__worker *)(base + i * slab->size);
    dirty |= recorded(w, m, sole) && (w->proc.flags & DM__W_DIRTY);
  }
  return dirty;
}

/* The entries of the group's workers, into s (the checkpoint's scratch,
 * kept between groups); their changed flags go, counted in *n. 0 or
 * DM_ENOMEM (the flags of the workers not yet written stay). */
static int group_entries(const dm__manager *m, const dm__slab *slab, char *base, size_t lo,
                         size_t hi, int sole, dm__buf *s, size_t *n) {
  s->len = 0;
  for (size_t i = lo; i < hi; i++) {
    dm__worker *w = (dm__worker *)(base + i * slab->size);
    if (i + AHEAD < hi) {
      const dm__worker *a = (const dm__worker *)(base + (i + AHEAD) * slab->size);
      if (a->opts && dm__cell_blob(&a->payload))
        __builtin_prefetch(dm__cell_blob(&a->payload));
    }
    if (!recorded(w, m, sole))
      continue;
    size_t len = entry_len(w);
    if (dm__buf_reserve(s, len))
      return DM_ENOMEM;
    s->len = (size_t)(put_entry(s->data + s->len, w) - s->data);
    if (w->proc.flags & DM__W_DIRTY) {
      w->proc.flags &= (uint16_t)~DM__W_DIRTY;
      (*n)++;
    }
  }
  return 0;
}

/* A new pass: in the other key space after a new layout, the space left
 * before it emptied, a sequence number of its own. 0 or an error. */
static int start_pass(dm__chunks *d, dm__store_batch *b, size_t *groups) {
  if (d->relaid) {
    d->relaid = 0;
    d->space ^= 1;
    d->all = 1;
    d->cut_other = 0; /* until every worker is in this space */
  }
  if (d->cut_other) {
    unsigned other = d->space ^ 1;
    int r = cut(b, other, 0);
    if (r)
      return r;
    d->cut_other = 0;
    d->end[other] = 0;
    (*groups)++;
  }
  d->seq++;
  d->cursor = 0;
  d->clean = 1;
  d->in_pass = 1;
  d->passes++;
  return 0;
}

/* Writes the groups that hold a changed worker, or that a del marked,
 * into b, in key order from where the pass stands: a look at a group's
 * flags, then its entries into a scratch buffer, then the record into
 * room the batch makes for it. A pass stops once limit bytes are in b
 * and goes on at the next call (its records share its sequence number);
 * a new layout meanwhile starts a new pass instead. A group that cannot
 * be added ends the pass: it and the rest wait, marked or changed, for
 * the next one (a group over 4 GiB is skipped, and stays marked). At the
 * slab's end the records past it go, and after a clean pass over a new
 * layout, the next pass empties the space it left. */
int dm__chunks_write(dm__manager *m, dm__chunks *d, dm__store_batch *b, size_t limit,
                     size_t *changed, size_t *written) {
  const dm__slab *slab = &m->sched->workers;
  size_t gpc = groups_per_chunk(slab), n = 0, bytes = 0, groups = 0;
  int sole = m->sched->nmanagers == 1, reserved = 0, r = 0, toobig = 0;
  size_t end = slab->nchunks * gpc; /* the groups there are */
  dm__buf scratch = {0};
  char *base;
  size_t cnt;
  *changed = *written = 0;
  if ((!d->in_pass || d->relaid) && (r = start_pass(d, b, &groups)))
    goto out;
  unsigned sp = d->space;
  for (size_t k = d->cursor / gpc; (base = dm__slab_chunk(slab, k, &cnt)); k++)
    for (size_t g = k == d->cursor / gpc ? d->cursor % gpc : 0; g < gpc && g * GROUP < cnt;
         g++) {
      size_t lo = g * GROUP, hi = lo + GROUP < cnt ? lo + GROUP : cnt, key = k * gpc + g;
      if (bytes >= limit) {
        d->cursor = key; /* the next call goes on from here */
        goto out;
      }
      if (!group_dirty(m, slab, base, lo, hi, sole) && !is_marked(d, key))
        continue;
      if (!reserved && d->last_groups) {
        reserved = 1;
        size_t hint = d->last_bytes < limit ? d->last_bytes : limit;
        (void)dm__store_batch_reserve(b, d->last_groups, hint); /* a hint */
      }
      /* From here the group is written whole, or marked to be. */
      size_t was = n;
      char *at = NULL;
      uint32_t sk = space_key(sp, key);
      r = group_entries(m, slab, base, lo, hi, sole, &scratch, &n);
      if (!r)
        r = scratch.len
                ? dm__store_batch_state_room(b, sk, DM__STORE_STATE_SEQ + scratch.len, &at)
                : dm__store_batch_state(b, sk, NULL, 0);
      if (r) {
        mark(d, key);
        n = was;
        d->clean = 0;
        if (r == DM_ETOOBIG) {
          toobig = 1;
          r = 0;
          continue;
        }
        d->in_pass = 0; /* the next pass starts over */
        goto out;
      }
      if (scratch.len) {
        for (int i = 7; i >= 0; i--)
          *at++ = (char)(d->seq >> (8 * i));
        memcpy(at, scratch.data, scratch.len);
      }
      unmark(d, key);
      groups++;
      bytes += 4 + DM__STORE_STATE_SEQ + scratch.len;
    }
  /* The slab's end: the pass is over. */
  d->in_pass = 0;
  if (d->end[sp] > end) {
    if ((r = cut(b, sp, end))) {
      d->clean = 0;
      goto out;
    }
    d->end[sp] = end;
    groups++;
  }
  if (d->clean) {
    /* Every worker is in this space now: the next pass empties the
     * other, once this one is committed. */
    if (d->all && d->end[sp ^ 1])
      d->cut_other = 1;
    d->all = 0;
  }
out:
  dm__buf_free(&scratch);
  if (end > d->end[d->space])
    d->end[d->space] = end;
  if (groups) {
    d->last_groups = groups;
    d->last_bytes = bytes;
  }
  *changed = n;
  *written = groups;
  return r ? r : toobig ? DM_ETOOBIG : 0;
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

int dm__chunks_restore(dm__manager *m, dm__chunks *d, uint32_t key, const char *rec,
                       size_t len, size_t *applied, size_t *stale) {
  size_t i = DM__STORE_STATE_SEQ;
  if (len < DM__STORE_STATE_SEQ)
    goto bad;
  uint64_t seq = 0;
  for (size_t j = 0; j < DM__STORE_STATE_SEQ; j++)
    seq = seq << 8 | (unsigned char)rec[j];
  if (seq > d->seq)
    d->seq = seq;
  /* The newest record's space is the one checkpoints wrote last. */
  unsigned sp = key >> SPACE_BIT;
  d->space = sp;
  if ((size_t)(key & IN_SPACE) + 1 > d->end[sp])
    d->end[sp] = (size_t)(key & IN_SPACE) + 1;
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

