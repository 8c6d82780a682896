/* The encoders of what managers answer: Child, State, a manager's stats
 * and the managers of info. Every ei result is checked: running out of
 * memory is DM_ENOMEM, never a truncated term. */
#include <string.h>

#include "dm/mgr.h"

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

/* The constant parts of a Child map, encoded once by hand: `get` answers
 * with one on every call, and ei's atom encoder measures and converts each
 * atom every time. */
static const char CHILD_HEAD[] = "\x74\x00\x00\x00\x05"
                                 "\x77\x0a" "__struct__"
                                 "\x77\x25" "Elixir.Tarearbol.DynamicManager.Child"
                                 "\x77\x03" "pid";
static const char KEY_VALUE[] = "\x77\x05" "value";
static const char KEY_BUSY[] = "\x77\x05" "busy?";
static const char KEY_OPTS[] = "\x77\x04" "opts";

/* Appends a constant above, without its terminating NUL. */
#define APPEND_CONST(x, c) ENC(ei_x_append_buf(x, c, (int)sizeof c - 1))

int dm__enc_child(dm__node *n, ei_x_buff *x, const dm__worker *w) {
  erlang_pid pid;
  dm__proc_pid(n, &w->proc, &pid);
  APPEND_CONST(x, CHILD_HEAD);
  /* NEW_PID_EXT: the node as a SMALL_ATOM_UTF8_EXT (node names are ASCII
   * and under 256 bytes), then number, serial and creation. */
  size_t nl = strlen(pid.node);
  char pb[3 + 255 + 12];
  if (nl > 255) {
    ENC(ei_x_encode_pid(x, &pid));
  } else {
    pb[0] = 'X';
    pb[1] = 'w';
    pb[2] = (char)nl;
    memcpy(pb + 3, pid.node, nl);
    dm__put32be(pb + 3 + nl, pid.num);
    dm__put32be(pb + 7 + nl, pid.serial);
    dm__put32be(pb + 11 + nl, pid.creation);
    ENC(ei_x_append_buf(x, pb, (int)(15 + nl)));
  }
  APPEND_CONST(x, KEY_VALUE);
  ENC(ei_x_append_buf(x, dm__cell_data(dm__worker_value(w)), (int)dm__cell_size(dm__worker_value(w))));
  APPEND_CONST(x, KEY_BUSY);
  if (w->proc.flags & DM__W_BUSY) {
    /* start_ms and start_wall_us were read together at start. */
    uint64_t wall = n->start_wall_us + (dm__worker_busy_since(w) - n->start_ms) * 1000;
    if (dm_encode_datetime(x, wall))
      return DM_ENOMEM;
  } else {
    APPEND_CONST(x, DM__A_NIL);
  }
  APPEND_CONST(x, KEY_OPTS);
  ENC(ei_x_append_buf(x, w->opts->term, (int)w->opts->len));
  return 0;
}

/* About what a Child's DateTime takes (busy?): a map of 13 pairs. */
#define DATETIME_BYTES 256

/* What the children of a State take, near enough, so that the room is
 * reserved at once: grown in ei's steps of 100 bytes, a State of 10k
 * children is copied over thousands of times (seconds where realloc
 * cannot grow in place, as under AddressSanitizer). */
static size_t children_bytes(const dm__manager *m) {
  size_t per = sizeof CHILD_HEAD + 15 + strlen(m->node->dist.ec.thisnodename) +
               sizeof KEY_VALUE + sizeof KEY_BUSY + sizeof KEY_OPTS +
               DM__ALEN(DM__A_NIL);
  size_t sum = 0;
  for (size_t i = 0; i < m->cap; i++) {
    const dm__worker *w = dm__children_walk(m, i);
    if (w)
      sum += per + dm__worker_id_len(w) + dm__cell_size(dm__worker_value(w)) +
             w->opts->len + (w->proc.flags & DM__W_BUSY ? DATETIME_BYTES : 0);
  }
  return sum;
}

int dm__enc_dump(dm__manager *m, ei_x_buff *x, size_t slot, size_t limit) {
  size_t end, count = 0, bytes = 64;
  for (end = slot; end < m->cap && count < limit; end++) {
    const dm__worker *w = dm__children_walk(m, end);
    if (w) {
      count++;
      bytes += 2 + dm__worker_id_len(w) + w->opts->len +
               dm__cell_size(&w->payload) + dm__cell_size(dm__worker_value(w));
    }
  }
  /* ei grows a buffer by a few hundred bytes at a time: a page of 10000
   * children would be copied thousands of times over. */
  if (dm_x_reserve(x, bytes))
    return DM_ENOMEM;
  ENC(ei_x_encode_tuple_header(x, 3));
  APPEND_CONST(x, DM__A_OK);
  if (count)
    ENC(ei_x_encode_list_header(x, (long)count));
  for (size_t i = slot; i < end; i++) {
    const dm__worker *w = dm__children_walk(m, i);
    if (!w)
      continue;
    ENC(ei_x_encode_tuple_header(x, 4));
    ENC(ei_x_append_buf(x, dm__worker_id(w), (int)dm__worker_id_len(w)));
    ENC(ei_x_append_buf(x, w->opts->term, (int)w->opts->len));
    ENC(ei_x_append_buf(x, dm__cell_data(&w->payload), (int)dm__cell_size(&w->payload)));
    ENC(ei_x_append_buf(x, dm__cell_data(dm__worker_value(w)), (int)dm__cell_size(dm__worker_value(w))));
  }
  ENC(ei_x_encode_empty_list(x));
  if (end >= m->cap) {
    ENC(ei_x_encode_atom(x, "done"));
  } else {
    ENC(ei_x_encode_tuple_header(x, 2));
    ENC(ei_x_encode_ulonglong(x, m->cap));
    ENC(ei_x_encode_ulonglong(x, end));
  }
  return 0;
}

int dm__enc_state(dm__manager *m, ei_x_buff *x) {
  if (m->count > 64 && dm_x_reserve(x, children_bytes(m)))
    return DM_ENOMEM;
  ENC(ei_x_encode_map_header(x, 4));
  ENC(ei_x_encode_atom(x, "__struct__"));
  ENC(ei_x_encode_atom(x, m->struct_name));
  ENC(ei_x_encode_atom(x, "state"));
  ENC(ei_x_encode_atom(x, dm__state_name(m->state)));
  ENC(ei_x_encode_atom(x, "manager"));
  ENC(ei_x_encode_atom(x, m->name));
  ENC(ei_x_encode_atom(x, "children"));
  ENC(ei_x_encode_map_header(x, (long)m->count));
  for (size_t i = 0; i < m->cap; i++) {
    dm__worker *w = dm__children_walk(m, i);
    if (!w)
      continue;
    ENC(ei_x_append_buf(x, dm__worker_id(w), (int)dm__worker_id_len(w)));
    if (dm__enc_child(m->node, x, w))
      return DM_ENOMEM;
  }
  return 0;
}

int dm__enc_stats(dm__manager *m, ei_x_buff *x) {
  dm__mstats *s = &m->st;
  long count = 13 + (long)dm__durable_nstats(m)
#define DM__ONE(n) +1
      DM__MSTATS_MAP(DM__ONE)
#undef DM__ONE
      ;
  ENC(ei_x_encode_map_header(x, count));
#define DM__ENC(n)                                                             \
  ENC(ei_x_encode_atom(x, #n));                                                \
  ENC(ei_x_encode_ulonglong(x, s->n));
  DM__MSTATS_MAP(DM__ENC)
#undef DM__ENC
  ENC(ei_x_encode_atom(x, "workers"));
  ENC(ei_x_encode_ulonglong(x, m->count));
  ENC(ei_x_encode_atom(x, "state"));
  ENC(ei_x_encode_atom(x, dm__state_name(m->state)));
  ENC(ei_x_encode_atom(x, "pool_depth"));
  ENC(ei_x_encode_ulonglong(x, dm__pool_depth(m->pool)));
  ENC(ei_x_encode_atom(x, "pool_wakeups"));
  ENC(ei_x_encode_ulonglong(x, dm__pool_wakes(m->pool)));
  ENC(ei_x_encode_atom(x, "threads"));
  ENC(ei_x_encode_ulong(x, m->threads));
  ENC(ei_x_encode_atom(x, "compactions"));
  ENC(ei_x_encode_ulonglong(x, m->sched->compactions));
  ENC(ei_x_encode_atom(x, "slab_chunks"));
  ENC(ei_x_encode_ulonglong(x, m->sched->workers.nchunks));
  ENC(ei_x_encode_atom(x, "subscribers"));
  ENC(ei_x_encode_ulonglong(x, dm__ev_count(m)));
  ENC(ei_x_encode_atom(x, "lateness_samples"));
  ENC(ei_x_encode_ulonglong(x, s->late_count));
  ENC(ei_x_encode_atom(x, "lateness_p50_us"));
  ENC(ei_x_encode_ulonglong(x, dm__lateness_percentile(s, 0.50)));
  ENC(ei_x_encode_atom(x, "lateness_p99_us"));
  ENC(ei_x_encode_ulonglong(x, dm__lateness_percentile(s, 0.99)));
  ENC(ei_x_encode_atom(x, "lateness_max_us"));
  ENC(ei_x_encode_ulonglong(x, s->late_max_us));
  /* The histogram itself, [{UpToUs, Count}] for non-empty buckets, so a
   * watcher can difference two readings and get percentiles over a window
   * of its choosing rather than since boot. */
  long nb = 0;
  for (size_t b = 0; b < DM__LATE_BUCKETS; b++)
    nb += s->late[b] != 0;
  ENC(ei_x_encode_atom(x, "lateness_histogram"));
  if (nb) {
    ENC(ei_x_encode_list_header(x, nb));
    for (size_t b = 0; b < DM__LATE_BUCKETS; b++) {
      if (!s->late[b])
        continue;
      ENC(ei_x_encode_tuple_header(x, 2));
      ENC(ei_x_encode_ulonglong(x, dm__lateness_bucket_top(b)));
      ENC(ei_x_encode_ulonglong(x, s->late[b]));
    }
  }
  ENC(ei_x_encode_empty_list(x));
  if (m->durable && dm__durable_enc_stats(m, x))
    return DM_ENOMEM;
  return 0;
}

int dm__enc_managers(dm__sched *s, ei_x_buff *x) {
  if (s->nmanagers)
    ENC(ei_x_encode_list_header(x, (long)s->nmanagers));
  for (size_t i = 0; i < s->nmanagers; i++) {
    dm__manager *m = s->managers[i];
    ENC(ei_x_encode_map_header(x, 4));
    ENC(ei_x_encode_atom(x, "name"));
    ENC(ei_x_encode_atom(x, m->name));
    ENC(ei_x_encode_atom(x, "behaviour"));
    ENC(ei_x_encode_atom(x, m->b->name));
    ENC(ei_x_encode_atom(x, "workers"));
    ENC(ei_x_encode_ulonglong(x, m->count));
    ENC(ei_x_encode_atom(x, "state"));
    ENC(ei_x_encode_atom(x, dm__state_name(m->state)));
  }
  ENC(ei_x_encode_empty_list(x));
  return 0;
}
