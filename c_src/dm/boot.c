/* A manager's boot and state: `starting`, children_specs on the pool, its
 * children put, `started`; handle_state_change run for each change, one
 * at a time and in order. Requests that change or read children wait
 * while it starts and are served, in order, once it has. Loop thread
 * only. */
#include <string.h>

#include "dm/mgr.h"

typedef struct dm__held {
  struct dm__held *next;
  size_t len;
  char msg[];
} held;

int dm__boot_hold(dm__manager *m, const char *msg, size_t len) {
  if (m->nheld >= DM__HELD_MAX)
    return DM_ETOOBIG;
  held *h = dm__malloc(sizeof *h + len);
  if (!h)
    return DM_ENOMEM;
  h->next = NULL;
  h->len = len;
  memcpy(h->msg, msg, len);
  if (m->held_tail)
    m->held_tail->next = h;
  else
    m->held_head = h;
  m->held_tail = h;
  m->nheld++;
  return 0;
}

/* Started: what waited is served, oldest first. A request served may
 * restart the manager, which holds the rest again. */
static void release_held(dm__manager *m) {
  while (m->held_head && m->state == DM__STARTED) {
    held *h = m->held_head;
    m->held_head = h->next;
    if (!m->held_head)
      m->held_tail = NULL;
    m->nheld--;
    m->replay(m, h->msg, h->len);
    dm__free(h);
  }
}

void dm__boot_free_held(dm__manager *m) {
  while (m->held_head) {
    held *h = m->held_head;
    m->held_head = h->next;
    dm__free(h);
  }
  m->held_tail = NULL;
  m->nheld = 0;
}

static void state_change_done(dm__wjob *j, int cancelled);

void dm__state_change(dm__manager *m, int state) {
  m->state = state;
  dm__ev_state(m, state);
  if (!m->b->handle_state_change)
    return;
  dm__wjob *j = dm__job_new(m, NULL, DM__JOB_STATE_CHANGE, state_change_done);
  if (!j)
    return;
  j->state_name = dm__state_name(state);
  if (m->sc_running) {
    j->base.next = NULL;
    if (m->sc_tail)
      m->sc_tail->base.next = &j->base;
    else
      m->sc_head = j;
    m->sc_tail = j;
    return;
  }
  m->sc_running = 1;
  dm__job_submit(j);
}

/* A handle_state_change finished: the next one waiting goes. */
static void state_change_done(dm__wjob *done, int cancelled) {
  dm__manager *m = done->m;
  dm__job_free(done);
  if (cancelled)
    return;
  dm__wjob *j = m->sc_head;
  m->sc_running = j != NULL;
  if (!j)
    return;
  m->sc_head = (dm__wjob *)j->base.next;
  if (!m->sc_head)
    m->sc_tail = NULL;
  dm__job_submit(j);
}

/* How many children_specs entries are read ahead of the one put: each
 * is canonical and hashed, and its slot in the children table on its
 * way to the cache, by the time its turn comes. At ten million children
 * the table is far bigger than any cache, and the put would otherwise
 * wait for that slot. */
#define SPECS_AHEAD 8

typedef struct {
  size_t id, opts, end; /* offsets of the entry's key and value */
  dm__buf canon;
  uint32_t hash;
  int ok; /* the key is a canonical id */
} spec_entry;

/* Reads the map entry at *k into s and sends its slot's fetch. */
static void read_ahead(dm__manager *m, const char *b, size_t len, size_t *k, spec_entry *s) {
  s->id = *k;
  dm__term_skip(b, len, k);
  s->opts = *k;
  dm__term_skip(b, len, k);
  s->end = *k;
  s->canon.len = 0;
  s->ok = dm__canon(b + s->id, s->opts - s->id, &s->canon) == 0;
  if (s->ok) {
    s->hash = dm__id_hash(m, s->canon.data, s->canon.len);
    dm__children_prefetch(m, s->hash);
  }
}

/* Puts every child of the map at b[*k..len) of arity entries. */
static void put_specs(dm__manager *m, const char *b, size_t len, size_t k, int arity) {
  spec_entry ring[SPECS_AHEAD];
  int in = 0;
  memset(ring, 0, sizeof ring);
  for (int e = 0; e < arity; e++) {
    for (; in < arity && in - e < SPECS_AHEAD; in++)
      read_ahead(m, b, len, &k, &ring[in % SPECS_AHEAD]);
    spec_entry *s = &ring[e % SPECS_AHEAD];
    dm__worker *w = NULL;
    /* With a store, only the ids it neither restored nor saw deleted. */
    if (s->ok && m->durable && !dm__durable_spec_wanted(m, s->canon.data, s->canon.len))
      continue;
    if (!s->ok || dm__worker_put_canon(m, s->canon.data, s->canon.len, s->hash, b + s->opts,
                                       s->end - s->opts, 0, NULL, &w)) {
      DM_WARN("manager %s: a child of children_specs was refused", m->name);
      continue;
    }
    w->proc.flags |= DM__W_SPEC;
    dm__durable_put(m, w);
  }
  for (int r = 0; r < SPECS_AHEAD; r++)
    dm__buf_free(&ring[r].canon);
}

/* children_specs came back: put every child, then `started`. */
static void specs_done(dm__wjob *j, int cancelled) {
  dm__manager *m = j->m;
  const char *b = j->out.buff;
  size_t len = (size_t)j->out.index;
  int i = 0, arity;
  if (cancelled || j->epoch != m->epoch) {
    /* Stopping, or a restart came in meanwhile and booted again. */
    dm__job_free(j);
    return;
  }
  if (j->rc != DM_CB_OK) {
    DM_ERROR("manager %s: children_specs crashed", m->name);
  } else if (len && (!j->valid || /* checked on the pool thread */
                     ei_decode_map_header(b, &i, &arity) < 0)) {
    DM_ERROR("manager %s: children_specs did not return a map", m->name);
  } else if (len) {
    size_t k = (size_t)i;
    /* Room for all of them at once: a million children would otherwise
     * rehash both tables twenty times over. */
    (void)dm__children_reserve(m, m->count + (size_t)arity);
    (void)dm__proctab_reserve(&m->node->pids, m->node->pids.count + (size_t)arity);
    m->spread = 1;
    put_specs(m, b, len, k, arity);
    m->spread = 0;
  }
  dm__job_free(j);
  dm__durable_restored(m);
  dm__state_change(m, DM__STARTED);
  release_held(m);
}

void dm__boot(dm__manager *m) {
  m->epoch++;
  dm__state_change(m, DM__STARTING);
  dm__wjob *j = dm__job_new(m, NULL, DM__JOB_SPECS, specs_done);
  if (!j) {
    DM_ERROR("manager %s: out of memory booting", m->name);
    dm__state_change(m, DM__STARTED);
    release_held(m);
    return;
  }
  dm__job_submit(j);
}
