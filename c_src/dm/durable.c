/* A manager's durable state (--state-dir): its children kept in a store
 * of its own (store/), restored at boot, changed as requests change them.
 * A put, put_new or del given as a call is answered once its change is
 * committed; the changes of one loop turn go out as one batch, which the
 * store's writer thread commits (grouped with others) while the loop goes
 * on. Payloads and values are checkpointed every --state-sync-ms for the
 * workers whose callbacks changed them. A batch that fails answers its
 * calls {error, {store, Why}}; it and every batch after it then wait, in
 * order, and are tried again at each checkpoint until the store takes
 * them (the node keeps serving meanwhile, from memory). Loop thread
 * only. */
#include <string.h>

#include "dm/mgr.h"

/* A child's record: {Opts, Payload, Value, FromSpecs, Gen}, external
 * format without the version byte, written when the child is put (by a
 * request, children_specs or a restart from its opts). Gen, new at each
 * write, tells which state entries (below) belong to this record. */
#define REC_ARITY 5

/* A submitted batch and the calls it answers. */
typedef struct {
  dm__manager *m;
  dm__replyto **acks;
  size_t nacks;
  int retry;      /* the batch of a failed commit, tried again */
  int checkpoint; /* it holds a checkpoint */
} commit;

struct dm__durable {
  dm__store *store;
  dm__store_batch *batch; /* this turn's changes */
  dm__replyto **acks;     /* the calls they answer */
  size_t nacks, capacks;
  /* After a failed commit: the batches that wait to be tried again,
   * oldest first, and why the last one failed. */
  dm__store_batch **pending;
  size_t npending, cappending;
  const char *why;
  size_t inflight_retries; /* retried batches not yet back */
  /* A checkpoint still being committed: the next one waits (its workers
   * stay marked), so a disk slower than the interval cannot pile them up
   * in memory. */
  int checkpointing;
  int checkpoint_turn; /* this turn's batch holds a checkpoint */
  uv_timer_t sync_timer;
  int timer_open;
  dm__buf rec;
  /* Deleted children_specs ids read at boot, in the store's order, until
   * the first children_specs is in. */
  dm__blob **deleted;
  size_t ndeleted, capdeleted;
  int restoring;
  uint32_t gen;                    /* the last Gen given to a record */
  dm__chunks chunks;               /* what the next checkpoint writes */
  uint64_t checkpointed, checkpoints_deferred, failures, retries;
};

static void on_sync(uv_timer_t *t);
static void checkpoint(dm__manager *m, size_t limit);

/* A checkpoint goes out in parts of about this much, one committed before
 * the next is written: a million changed workers are some 25 MiB, which
 * would otherwise sit in memory, whole, until their commit. */
#define PART_BYTES ((size_t)4 << 20)

int dm__durable_open(dm__manager *m, const char *dir, uint32_t sync_ms) {
  char err[512];
  dm__durable *d = dm__calloc(1, sizeof *d);
  if (!d)
    return DM_ENOMEM;
  int r = dm__store_open(&d->store, m->node->loop, dir, m->name, err, sizeof err);
  if (r) {
    DM_ERROR("manager %s: %s", m->name, err);
    dm__free(d);
    return r;
  }
  d->batch = dm__store_batch_new();
  if (!d->batch) {
    dm__store_stop(d->store);
    dm__store_free(d->store);
    dm__free(d);
    return DM_ENOMEM;
  }
  uv_timer_init(m->node->loop, &d->sync_timer);
  d->sync_timer.data = m;
  d->timer_open = 1;
  uv_timer_start(&d->sync_timer, on_sync, sync_ms, sync_ms);
  m->durable = d;
  DM_INFO("manager %s: durable state in %s, checkpoints every %u ms", m->name,
          dm__store_path(d->store), sync_ms);
  return 0;
}

/* ---- records ------------------------------------------------------------------ */

static int encode(dm__durable *d, const dm__worker *w) {
  static const char head[] = "\x68\x05";
  char gen[8];
  int gl = 0;
  d->rec.len = 0;
  int spec = (w->proc.flags & DM__W_SPEC) != 0;
  const char *flag = spec ? "\x77\x04" "true" : "\x77\x05" "false";
  if (ei_encode_ulong(gen, &gl, w->gen) < 0)
    return DM_EINVAL;
  if (dm__buf_append(&d->rec, head, 2) ||
      dm__buf_append(&d->rec, w->opts->term, w->opts->len) ||
      dm__buf_append(&d->rec, dm__cell_data(&w->payload), dm__cell_size(&w->payload)) ||
      dm__buf_append(&d->rec, dm__cell_data(dm__worker_value(w)),
                     dm__cell_size(dm__worker_value(w))) ||
      dm__buf_append(&d->rec, flag, spec ? 6 : 7) ||
      dm__buf_append(&d->rec, gen, (size_t)gl))
    return DM_ENOMEM;
  return 0;
}

static void batch_failed(dm__manager *m, const char *what, int r) {
  m->durable->failures++;
  DM_ERROR("manager %s: cannot record %s: %s", m->name, what, dm_strerror(r));
}

void dm__durable_put(dm__manager *m, dm__worker *w) {
  dm__durable *d = m->durable;
  int r;
  if (!d)
    return;
  /* A new Gen: the state entries of what was there before are stale. */
  w->gen = ++d->gen;
  w->proc.flags &= (uint16_t)~DM__W_DIRTY;
  if ((r = encode(d, w)) ||
      (r = dm__store_batch_put(d->batch, dm__worker_id(w), dm__worker_id_len(w),
                               d->rec.data, d->rec.len)))
    batch_failed(m, "a child", r);
  /* A deleted mark stays when the id is put again: the record wins over
   * children_specs at boot anyway, and should the user delete it once
   * more, deleted is what the mark says. */
}

void dm__durable_del(dm__manager *m, const dm__worker *w) {
  dm__durable *d = m->durable;
  int r;
  if (!d)
    return;
  /* Its chunk is written again without it, so entries of gone children do
   * not pile up. */
  dm__chunks_mark(&d->chunks, &m->sched->workers, w);
  if ((r = dm__store_batch_del(d->batch, dm__worker_id(w), dm__worker_id_len(w))) ||
      ((w->proc.flags & DM__W_SPEC) &&
       (r = dm__store_batch_deleted(d->batch, dm__worker_id(w), dm__worker_id_len(w), 1))))
    batch_failed(m, "a deletion", r);
}

void dm__durable_relaid(dm__manager *m) {
  if (m->durable)
    dm__chunks_relaid(&m->durable->chunks);
}

void dm__durable_clear(dm__manager *m) {
  dm__durable *d = m->durable;
  if (!d)
    return;
  if (dm__store_batch_clear(d->batch))
    batch_failed(m, "the restart", DM_EINVAL);
}

int dm__durable_ack(dm__manager *m, const dm__gen *g) {
  dm__durable *d = m->durable;
  if (!d)
    return 0;
  dm__replyto *r = dm__replyto_new(g);
  if (!r || dm__array_grow((void **)&d->acks, &d->capacks, d->nacks + 1,
                           sizeof *d->acks, 16)) {
    dm__free(r);
    return 0; /* answered now: the change is in the batch all the same */
  }
  d->acks[d->nacks++] = r;
  return 1;
}

/* ---- commits ------------------------------------------------------------------- */

static const char OK[] = DM__A_OK;

static void answer(dm__manager *m, commit *c, int rc, const char *why) {
  ei_x_buff x;
  int enc = rc && ei_x_new(&x) == 0;
  if (enc && (ei_x_encode_tuple_header(&x, 2) < 0 || ei_x_encode_atom(&x, "error") < 0 ||
              ei_x_encode_tuple_header(&x, 2) < 0 || ei_x_encode_atom(&x, "store") < 0 ||
              ei_x_encode_atom(&x, why ? why : "write_failed") < 0)) {
    ei_x_free(&x);
    enc = 0;
  }
  for (size_t i = 0; i < c->nacks; i++) {
    if (!rc)
      dm__reply_to(m->node, c->acks[i], OK, DM__ALEN(OK), 0);
    else if (enc)
      dm__reply_to(m->node, c->acks[i], x.buff, (size_t)x.index, 0);
    else
      dm__reply_exit(m->node, c->acks[i], DM__A_ENOMEM, DM__ALEN(DM__A_ENOMEM));
    dm__free(c->acks[i]);
  }
  if (enc)
    ei_x_free(&x);
  dm__free(c->acks);
}

/* Keeps b, in order, to be tried again. */
static void park(dm__durable *d, dm__store_batch *b) {
  if (dm__array_grow((void **)&d->pending, &d->cappending, d->npending + 1,
                     sizeof *d->pending, 4)) {
    DM_ERROR("out of memory keeping a failed batch: its changes are lost until "
             "the workers change again");
    dm__store_batch_free(b);
    return;
  }
  d->pending[d->npending++] = b;
}

static void on_done(void *ud, dm__store_batch *b, int rc, const char *why) {
  commit *c = ud;
  dm__manager *m = c->m;
  dm__durable *d = m->durable;
  answer(m, c, rc, why);
  if (c->retry)
    d->inflight_retries--;
  if (c->checkpoint)
    d->checkpointing = 0;
  if (c->checkpoint && rc && d->chunks.in_pass) {
    /* The pass ends here: its groups after this part wait for the next. */
    d->chunks.in_pass = 0;
    m->mid_checkpoint = 0;
  }
  if (rc) {
    d->failures++;
    d->why = why ? why : "write_failed";
    DM_ERROR("manager %s: a commit to %s failed (%s); its changes wait for the "
             "next checkpoint", m->name, dm__store_path(d->store), d->why);
    park(d, b); /* dones come in submission order: so do the parked ones */
  } else {
    dm__store_batch_free(b);
    /* A part is in: the next one goes with this turn's batch. */
    if (c->checkpoint && d->chunks.in_pass && !m->node->stopping && !d->npending)
      checkpoint(m, PART_BYTES);
  }
  dm__free(c);
}

static void submit(dm__manager *m, dm__store_batch *b, dm__replyto **acks,
                   size_t nacks, int retry) {
  dm__durable *d = m->durable;
  commit *c = dm__calloc(1, sizeof *c);
  int checkpoint = !retry && d->checkpoint_turn;
  d->checkpoint_turn = 0;
  if (c) {
    c->m = m;
    c->acks = acks;
    c->nacks = nacks;
    c->retry = retry;
    c->checkpoint = checkpoint;
  }
  if (checkpoint && c)
    d->checkpointing = 1;
  if (!c || dm__store_submit(d->store, b, on_done, c)) {
    if (checkpoint)
      d->checkpointing = 0;
    commit none = {m, acks, nacks, retry, 0};
    answer(m, &none, DM_EIO, "write_failed");
    d->failures++;
    dm__store_batch_free(b);
    dm__free(c);
    return;
  }
  if (retry)
    d->inflight_retries++;
}

void dm__durable_flush(dm__manager *m) {
  dm__durable *d = m->durable;
  if (!d || (!dm__store_batch_count(d->batch) && !d->nacks))
    return;
  dm__store_batch *next = dm__store_batch_new();
  if (!next)
    return; /* this turn's changes go with the next turn's */
  if (d->npending || d->inflight_retries) {
    /* Behind a failed batch: this one waits its turn, and its calls hear
     * now that the store does not take changes. */
    commit c = {m, d->acks, d->nacks, 0, 0};
    answer(m, &c, DM_EIO, d->why);
    park(d, d->batch);
    d->checkpoint_turn = 0;
  } else {
    submit(m, d->batch, d->acks, d->nacks, 0);
  }
  d->batch = next;
  d->acks = NULL;
  d->nacks = d->capacks = 0;
}

/* The batches that failed, tried again in order. */
static void retry(dm__manager *m) {
  dm__durable *d = m->durable;
  if (!d->npending || d->inflight_retries)
    return;
  dm__store_batch **all = d->pending;
  size_t n = d->npending;
  d->pending = NULL;
  d->npending = d->cappending = 0;
  d->retries++;
  for (size_t i = 0; i < n; i++)
    submit(m, all[i], NULL, 0, 1);
  dm__free(all);
}

/* ---- checkpoints --------------------------------------------------------------- */

/* The groups of the workers whose payload or value changed, into this
 * turn's batch: the next part of the pass under way, or of a new one. */
static void checkpoint(dm__manager *m, size_t limit) {
  dm__durable *d = m->durable;
  size_t changed = 0, written = 0;
  int r = dm__chunks_write(m, &d->chunks, d->batch, limit, &changed, &written);
  m->mid_checkpoint = d->chunks.in_pass;
  if (r)
    batch_failed(m, "a checkpoint", r);
  if (written) {
    d->checkpointed += changed;
    d->checkpoint_turn = 1;
  }
}

/* Every sync interval: the chunks of the workers whose payload or value
 * changed since they were last recorded, and a failed batch, tried again
 * first. */
static void on_sync(uv_timer_t *t) {
  dm__manager *m = t->data;
  dm__durable *d = m->durable;
  if (!d || m->node->stopping)
    return;
  retry(m);
  if (d->checkpointing) {
    d->checkpoints_deferred++;
    return;
  }
  checkpoint(m, PART_BYTES);
  dm__durable_flush(m);
}

/* ---- boot --------------------------------------------------------------------- */

typedef struct {
  dm__manager *m;
  size_t restored, states, stale;
  int bad;
} restore_ctx;

static int restore_child(void *ud, const char *id, size_t idlen, const char *rec,
                         size_t reclen) {
  restore_ctx *rc = ud;
  dm__manager *m = rc->m;
  int i = 0, arity;
  size_t k, o, p, v, f, g;
  unsigned long gen;
  if (ei_decode_tuple_header(rec, &i, &arity) < 0 || arity != REC_ARITY)
    goto bad;
  k = (size_t)i;
  o = k;
  if (dm__term_skip(rec, reclen, &k))
    goto bad;
  p = k;
  if (dm__term_skip(rec, reclen, &k))
    goto bad;
  v = k;
  if (dm__term_skip(rec, reclen, &k))
    goto bad;
  f = k;
  if (dm__term_skip(rec, reclen, &k))
    goto bad;
  g = k;
  if (dm__term_skip(rec, reclen, &k) || k != reclen)
    goto bad;
  i = (int)g;
  if (ei_decode_ulong(rec, &i, &gen) < 0 || gen > UINT32_MAX)
    goto bad;
  dm__cell payload = DM__CELL_NIL, value = DM__CELL_NIL;
  dm__worker *w = NULL;
  int r = dm__cell_set(&payload, rec + p, v - p);
  if (!r && !dm__term_is_atom(rec + v, f - v, "nil"))
    r = dm__cell_set(&value, rec + v, f - v);
  if (!r)
    r = dm__worker_resume(m, id, idlen, rec + o, p - o, &payload, &value, &w);
  dm__cell_clear(&payload);
  dm__cell_clear(&value);
  if (r == DM_EINVAL) /* its opts are not opts */
    goto bad;
  if (r) {
    DM_ERROR("manager %s: cannot restore a child: %s", m->name, dm_strerror(r));
    return r;
  }
  if (dm__term_is_atom(rec + f, g - f, "true"))
    w->proc.flags |= DM__W_SPEC;
  w->gen = (uint32_t)gen;
  /* Gens grow, wrapping: the next is past the greatest, as far as 32 bits
   * tell, and a stale entry dies at its chunk's next write long before
   * its Gen comes round again. */
  if ((int32_t)(w->gen - m->durable->gen) > 0 || !rc->restored)
    m->durable->gen = w->gen;
  rc->restored++;
  return 0;
bad:
  rc->bad = 1;
  return DM_EBADTERM;
}

static int restore_state(void *ud, uint32_t key, const char *rec, size_t len) {
  restore_ctx *rc = ud;
  int r = dm__chunks_restore(rc->m, &rc->m->durable->chunks, key, rec, len, &rc->states, &rc->stale);
  if (r == DM_EBADTERM)
    rc->bad = 1;
  return r;
}

static int restore_deleted(void *ud, const char *id, size_t idlen) {
  restore_ctx *rc = ud;
  dm__durable *d = rc->m->durable;
  dm__blob *b = dm__blob_new(id, idlen);
  if (!b || dm__array_grow((void **)&d->deleted, &d->capdeleted, d->ndeleted + 1,
                           sizeof *d->deleted, 16)) {
    dm__blob_unref(b);
    return DM_ENOMEM;
  }
  d->deleted[d->ndeleted++] = b;
  return 0;
}

int dm__durable_restore(dm__manager *m) {
  dm__durable *d = m->durable;
  restore_ctx rc = {m, 0, 0, 0, 0};
  if (!d)
    return 0;
  uint64_t t0 = uv_hrtime();
  m->spread = 1;
  int r = dm__store_load(d->store, restore_child, restore_deleted, &rc);
  m->spread = 0;
  if (!r)
    r = dm__store_load_state(d->store, restore_state, &rc);
  if (r) {
    DM_ERROR("manager %s: the store in %s %s; refusing to start", m->name,
             dm__store_path(d->store),
             rc.bad ? "holds a record this node cannot read (corrupt?)" : "could not be read");
    return r;
  }
  d->restoring = 1;
  /* Restored in the store's order, not where they were in memory. */
  if (rc.restored)
    dm__chunks_relaid(&d->chunks);
  DM_INFO("manager %s: %zu children restored (%zu with checkpointed state, %zu "
          "stale entries), %zu deleted ids, in %llu ms",
          m->name, rc.restored, rc.states, rc.stale, d->ndeleted,
          (unsigned long long)((uv_hrtime() - t0) / 1000000));
  return 0;
}

/* LMDB's order: bytes, then the shorter first. */
static int cmp_id(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  return c ? c : (al < bl ? -1 : al > bl);
}

int dm__durable_spec_wanted(dm__manager *m, const char *canon, size_t len) {
  dm__durable *d = m->durable;
  if (!d || !d->restoring)
    return 1;
  if (dm__children_get(m, canon, len, dm__id_hash(m, canon, len)))
    return 0; /* the store knew it */
  size_t lo = 0, hi = d->ndeleted;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = cmp_id(dm__blob_data(d->deleted[mid]), dm__blob_len(d->deleted[mid]), canon, len);
    if (c == 0)
      return 0; /* deleted by the user */
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return 1;
}

void dm__durable_restored(dm__manager *m) {
  dm__durable *d = m->durable;
  if (!d)
    return;
  for (size_t i = 0; i < d->ndeleted; i++)
    dm__blob_unref(d->deleted[i]);
  dm__free(d->deleted);
  d->deleted = NULL;
  d->ndeleted = d->capdeleted = 0;
  d->restoring = 0;
}

/* ---- stats, stop ----------------------------------------------------------------- */

/* The keys of the store's stats, in the order dm__durable_enc_stats
 * writes them: the map's size follows this table. */
static const char *const stat_names[] = {
    "store_commits",        "store_batches",       "store_records_put",
    "store_records_deleted", "store_failures",     "store_retries",
    "store_checkpoints",    "store_checkpointed",  "store_checkpoints_deferred",
    "store_last_commit_us", "store_max_commit_us", "store_map_used",
    "store_queued",         "store_journaled",     "store_journal_syncs",
    "store_journal_resets", "store_replayed",      "store_apply_failures",
};

int dm__durable_enc_stats(dm__manager *m, ei_x_buff *x) {
  dm__durable *d = m->durable;
  dm__store_stats s;
  dm__store_get_stats(d->store, &s);
  const uint64_t v[] = {
      s.commits,        s.batches,       s.records_put,
      s.records_deleted, d->failures,    d->retries,
      d->chunks.passes, d->checkpointed, d->checkpoints_deferred,
      s.last_commit_us, s.max_commit_us, s.map_used,
      s.queued,         s.journaled,     s.journal_syncs,
      s.journal_resets, s.replayed,      s.apply_failures,
  };
  _Static_assert(sizeof v / sizeof v[0] == sizeof stat_names / sizeof stat_names[0],
                 "a value for every stat");
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (ei_x_encode_atom(x, stat_names[i]) < 0 || ei_x_encode_ulonglong(x, v[i]) < 0)
      return DM_ENOMEM;
  return 0;
}

size_t dm__durable_nstats(const dm__manager *m) {
  return m->durable ? sizeof stat_names / sizeof stat_names[0] : 0;
}

void dm__durable_stop(dm__manager *m) {
  dm__durable *d = m->durable;
  if (!d)
    return;
  /* A clean stop records the last payloads too: the rest of a pass under
   * way, or a whole one, in one batch. */
  retry(m);
  checkpoint(m, SIZE_MAX);
  dm__durable_flush(m);
  if (d->timer_open) {
    uv_timer_stop(&d->sync_timer);
    uv_close((uv_handle_t *)&d->sync_timer, NULL);
    d->timer_open = 0;
  }
  dm__store_stop(d->store);
}

void dm__durable_free(dm__manager *m) {
  dm__durable *d = m->durable;
  if (!d)
    return;
  dm__durable_restored(m);
  for (size_t i = 0; i < d->nacks; i++)
    dm__free(d->acks[i]);
  dm__free(d->acks);
  dm__store_batch_free(d->batch);
  for (size_t i = 0; i < d->npending; i++)
    dm__store_batch_free(d->pending[i]);
  dm__free(d->pending);
  dm__store_free(d->store);
  dm__buf_free(&d->rec);
  dm__chunks_free(&d->chunks);
  dm__free(d);
  m->durable = NULL;
}
