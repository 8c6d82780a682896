/* Processes: the kinds registered with the node, pids, registered names,
 * and links, which fire when a peer is lost. Loop thread only. */
#include <stdio.h>
#include <string.h>

#include "dm.h"
#include "node/node.h"

int dm__node_add_kind(dm__node *n, const dm__proc_ops *ops) {
  if (n->nkinds == DM__KINDS_MAX)
    return DM_ENOMEM;
  n->kinds[n->nkinds] = ops;
  return (int)n->nkinds++;
}

static uint32_t pid_key(const erlang_pid *p) {
  return (p->num & 0x7fffu) | (p->serial & 0x1fffu) << 15;
}

int dm__proc_spawn(dm__node *n, dm__proc *p) {
  erlang_pid pid;
  if (ei_make_pid(&n->dist.ec, &pid) < 0)
    return DM_EEI;
  p->key = pid_key(&pid);
  return dm__proctab_put(&n->pids, p);
}

int dm__proc_register(dm__node *n, dm__proc *p, const char *name) {
  return dm__nametab_put(&n->names, name, p);
}

void dm__proc_pid(const dm__node *n, const dm__proc *p, erlang_pid *out) {
  strcpy(out->node, n->dist.ec.thisnodename);
  out->num = p->key & 0x7fffu;
  out->serial = p->key >> 15;
  out->creation = n->dist.ec.creation;
}

dm__proc *dm__node_local(dm__node *n, const erlang_pid *pid) {
  if (pid->creation != n->dist.ec.creation || pid->num > 0x7fff ||
      pid->serial > 0x1fff || strcmp(pid->node, n->dist.ec.thisnodename) != 0)
    return NULL;
  return dm__proctab_get(&n->pids, pid_key(pid));
}

static int rpid_of(dm__node *n, const erlang_pid *pid, dm__rpid *out) {
  int peer = dm__dist_intern(&n->dist, pid->node);
  if (peer < 0)
    return peer;
  out->peer = (uint32_t)peer;
  out->num = pid->num;
  out->serial = pid->serial;
  out->creation = pid->creation;
  return 0;
}

/* p's links, or NULL: they live out of line, by p's key. */
static dm__links *links_of(const dm__node *n, const dm__proc *p) {
  return n->links.count ? dm__pidtab_get(&n->links, p->key) : NULL;
}

int dm__proc_link(dm__node *n, dm__proc *p, const erlang_pid *remote) {
  dm__rpid r;
  int e = rpid_of(n, remote, &r);
  if (e)
    return e;
  dm__links *l = links_of(n, p);
  for (uint32_t i = 0; l && i < l->count; i++)
    if (!memcmp(&l->items[i], &r, sizeof r))
      return 0;
  if (!l) {
    /* The entry first, so that nothing is left half made. */
    if (!(l = dm__malloc(sizeof *l + 2 * sizeof l->items[0])))
      return DM_ENOMEM;
    l->count = 0;
    l->cap = 2;
    if (dm__pidtab_put(&n->links, p->key, l)) {
      dm__free(l);
      return DM_ENOMEM;
    }
  } else if (l->count == l->cap) {
    uint32_t cap = l->cap * 2;
    dm__links *nl = dm__realloc(l, sizeof *nl + cap * sizeof nl->items[0]);
    if (!nl)
      return DM_ENOMEM;
    nl->cap = cap;
    (void)dm__pidtab_replace(&n->links, p->key, nl); /* there: allocates nothing */
    l = nl;
  }
  l->items[l->count++] = r;
  return 0;
}

void dm__proc_unlink(dm__node *n, dm__proc *p, const erlang_pid *remote) {
  dm__links *l = links_of(n, p);
  dm__rpid r;
  if (!l || rpid_of(n, remote, &r))
    return;
  for (uint32_t i = 0; i < l->count; i++) {
    if (!memcmp(&l->items[i], &r, sizeof r)) {
      l->items[i] = l->items[--l->count];
      break;
    }
  }
  if (l->count == 0)
    dm__proc_free_links(n, p);
}

void dm__proc_free_links(dm__node *n, dm__proc *p) {
  if (n->links.count)
    dm__free(dm__pidtab_del(&n->links, p->key));
}

static void pid_of_rpid(const dm__node *n, const dm__rpid *r, erlang_pid *out) {
  snprintf(out->node, sizeof out->node, "%s", n->dist.peer_names[r->peer]);
  out->num = r->num;
  out->serial = r->serial;
  out->creation = r->creation;
}

static int has_peer(const dm__links *l, uint32_t peer) {
  for (uint32_t i = 0; i < l->count; i++)
    if (l->items[i].peer == peer)
      return 1;
  return 0;
}

/* Fires, one at a time, the links of the process with this key to
 * processes on `peer`. An exit signal may stop the process (or, past its
 * manager's intensity, every worker), and a stopped process leaves the
 * pid table, so it is looked up again before each signal. */
static void fire_peer_links(dm__node *n, uint32_t key, uint32_t peer) {
  dm__proc *p;
  dm__links *l;
  while ((p = dm__proctab_get(&n->pids, key)) && (l = links_of(n, p))) {
    uint32_t i = 0;
    while (i < l->count && l->items[i].peer != peer)
      i++;
    if (i == l->count)
      return;
    erlang_pid from;
    pid_of_rpid(n, &l->items[i], &from);
    l->items[i] = l->items[--l->count];
    if (l->count == 0)
      dm__proc_free_links(n, p);
    if (dm__proc_ops_of(n, p)->exit)
      dm__proc_ops_of(n, p)->exit(p, n, &from, DM__A_NOCONNECTION,
                                  DM__ALEN(DM__A_NOCONNECTION));
  }
}

/* ---- monitors ---------------------------------------------------------------- */

int dm__proc_monitor(dm__node *n, dm__proc *p, const erlang_pid *watcher,
                     const erlang_ref *ref, int by_name) {
  dm__rpid w;
  int e = rpid_of(n, watcher, &w);
  if (e)
    return e;
  dm__monitors *ms = dm__pidtab_get(&n->monitors, p->key);
  if (!ms || ms->count == ms->cap) {
    uint32_t cap = ms ? ms->cap * 2 : 1;
    dm__monitors *nm = dm__realloc(ms, sizeof *nm + cap * sizeof nm->items[0]);
    if (!nm)
      return DM_ENOMEM;
    if (!ms)
      nm->count = 0;
    nm->cap = cap;
    if (dm__pidtab_put(&n->monitors, p->key, nm)) {
      if (!ms)
        dm__free(nm);
      return DM_ENOMEM;
    }
    ms = nm;
  }
  dm__monitor *m = &ms->items[ms->count++];
  m->watcher = w;
  m->ref = *ref;
  m->by_name = by_name;
  n->nmonitors++;
  return 0;
}

static int same_ref(const erlang_ref *a, const erlang_ref *b) {
  return a->len == b->len && a->creation == b->creation &&
         strcmp(a->node, b->node) == 0 &&
         memcmp(a->n, b->n, (size_t)a->len * sizeof a->n[0]) == 0;
}

/* Takes monitor i out of p's list; the list goes when empty. */
static void drop_monitor(dm__node *n, uint32_t key, dm__monitors *ms, uint32_t i) {
  ms->items[i] = ms->items[--ms->count];
  n->nmonitors--;
  if (!ms->count)
    dm__free(dm__pidtab_del(&n->monitors, key));
}

void dm__proc_demonitor(dm__node *n, dm__proc *p, const erlang_pid *watcher,
                        const erlang_ref *ref) {
  dm__monitors *ms = n->nmonitors ? dm__pidtab_get(&n->monitors, p->key) : NULL;
  (void)watcher; /* a reference names its monitor alone */
  for (uint32_t i = 0; ms && i < ms->count; i++)
    if (same_ref(&ms->items[i].ref, ref)) {
      drop_monitor(n, p->key, ms, i);
      return;
    }
}

void dm__proc_down(dm__node *n, dm__proc *p, const char *reason, size_t len) {
  erlang_pid self, to;
  dm__proc_pid(n, p, &self);
  dm__links *l = n->links.count ? dm__pidtab_del(&n->links, p->key) : NULL;
  for (uint32_t i = 0; l && i < l->count; i++) {
    pid_of_rpid(n, &l->items[i], &to);
    dm__node_send_exit(n, &self, &to, reason, len);
  }
  dm__free(l);
  dm__monitors *ms = n->nmonitors ? dm__pidtab_del(&n->monitors, p->key) : NULL;
  if (!ms)
    return;
  const char *name = NULL;
  for (uint32_t i = 0; i < ms->count; i++) {
    const dm__monitor *m = &ms->items[i];
    if (m->by_name && !name)
      name = dm__nametab_name_of(&n->names, p);
    pid_of_rpid(n, &m->watcher, &to);
    dm__node_send_monitor_exit(n, m->by_name ? name : NULL, &self, &to, &m->ref,
                               reason, len);
  }
  n->nmonitors -= ms->count;
  dm__free(ms);
}

void dm__proc_release(dm__node *n, dm__proc *p) {
  dm__proc_free_links(n, p);
  dm__monitors *ms = n->nmonitors ? dm__pidtab_del(&n->monitors, p->key) : NULL;
  if (ms) {
    n->nmonitors -= ms->count;
    dm__free(ms);
  }
}

/* The monitors held by processes of a lost peer go with it. */
static void drop_peer_monitors(dm__node *n, uint32_t peer) {
  for (size_t s = 0; n->nmonitors && s < n->monitors.cap; s++) {
    uint32_t key = n->monitors.keys[s];
    dm__monitors *ms = key ? n->monitors.vals[s] : NULL;
    if (!ms)
      continue;
    for (uint32_t i = 0; i < ms->count;) {
      if (ms->items[i].watcher.peer != peer) {
        i++;
        continue;
      }
      if (ms->count == 1) {
        /* The list goes, and the table may move others into this slot:
         * look at it again. */
        drop_monitor(n, key, ms, i);
        s--;
        break;
      }
      drop_monitor(n, key, ms, i);
    }
  }
}

void dm__proc_peer_lost(dm__node *n, uint32_t peer) {
  if (n->nmonitors)
    drop_peer_monitors(n, peer);
  /* Links to processes on a lost node fire as noconnection. Most nodes
   * have no links at all, and then a disconnect costs nothing. */
  if (!n->links.count)
    return;
  /* Keys first, signals after: firing while walking the table would see
   * it change under the walk. */
  uint32_t *keys = NULL;
  size_t nkeys = 0, cap = 0;
  for (size_t s = 0; s < n->links.cap; s++) {
    const dm__links *l = n->links.keys[s] ? n->links.vals[s] : NULL;
    if (!l || !has_peer(l, peer))
      continue;
    if (dm__array_grow((void **)&keys, &cap, nkeys + 1, sizeof *keys, 16)) {
      DM_ERROR("out of memory: some links to %s do not fire",
               n->dist.peer_names[peer]);
      break;
    }
    keys[nkeys++] = n->links.keys[s];
  }
  for (size_t k = 0; k < nkeys; k++)
    fire_peer_links(n, keys[k], peer);
  dm__free(keys);
}
