/* Watches: monitors this node's processes hold on remote ones (a
 * manager's event subscribers, say). A watch is MONITOR_P sent from the
 * local process; its MONITOR_P_EXIT, or the loss of the watched
 * process's node (noconnection), is handed to the down op of the
 * watcher's kind, once, and the watch is gone. Few at a time, so a short
 * array searched by reference. Loop thread only. */
#include <string.h>

#include "dm.h"
#include "node/node.h"

struct dm__watch {
  uint32_t key;  /* the watching process */
  uint32_t peer; /* the watched process's node */
  erlang_ref ref;
};

static int same_ref(const erlang_ref *a, const erlang_ref *b) {
  return a->len == b->len && a->creation == b->creation &&
         strcmp(a->node, b->node) == 0 &&
         memcmp(a->n, b->n, (size_t)a->len * sizeof a->n[0]) == 0;
}

static long find(const dm__node *n, const erlang_ref *ref) {
  for (size_t i = 0; i < n->nwatches; i++)
    if (same_ref(&n->watches[i].ref, ref))
      return (long)i;
  return -1;
}

int dm__proc_watch(dm__node *n, dm__proc *p, const erlang_pid *target,
                   erlang_ref *ref) {
  erlang_pid self;
  if (strcmp(target->node, n->dist.ec.thisnodename) == 0)
    return DM_EINVAL;
  const dm__conn *c = dm__dist_conn(&n->dist, target->node);
  if (!c)
    return DM_ECLOSED;
  if (dm__array_grow((void **)&n->watches, &n->capwatches, n->nwatches + 1,
                     sizeof *n->watches, 4))
    return DM_ENOMEM;
  if (ei_make_ref(&n->dist.ec, ref) < 0)
    return DM_EEI;
  dm__proc_pid(n, p, &self);
  int r = dm__node_send_monitor(n, DM__OP_MONITOR_P, &self, target->node, NULL,
                                target, ref);
  if (r)
    return r;
  dm__watch *w = &n->watches[n->nwatches++];
  w->key = p->key;
  w->peer = c->peer;
  w->ref = *ref;
  return 0;
}

void dm__proc_unwatch(dm__node *n, dm__proc *p, const erlang_pid *target,
                      const erlang_ref *ref) {
  long i = find(n, ref);
  if (i < 0)
    return;
  n->watches[i] = n->watches[--n->nwatches];
  erlang_pid self;
  dm__proc_pid(n, p, &self);
  (void)dm__node_send_monitor(n, DM__OP_DEMONITOR_P, &self, target->node, NULL,
                              target, ref);
}

/* Watch i is gone: its watcher hears why, if it is still there. */
static void fire(dm__node *n, size_t i, const char *reason, size_t len) {
  dm__watch w = n->watches[i];
  n->watches[i] = n->watches[--n->nwatches];
  dm__proc *p = dm__proctab_get(&n->pids, w.key);
  if (p && dm__proc_ops_of(n, p)->down)
    dm__proc_ops_of(n, p)->down(p, n, &w.ref, reason, len);
}

int dm__watch_fired(dm__node *n, uint32_t peer, const dm__ctrl *ctl) {
  long i = n->nwatches ? find(n, &ctl->ref) : -1;
  /* Only the watched process's node can say it ended. */
  if (i < 0 || n->watches[i].peer != peer)
    return 0;
  fire(n, (size_t)i, ctl->reason, ctl->reason_len);
  return 1;
}

void dm__watch_peer_lost(dm__node *n, uint32_t peer) {
  /* A down op may add or take watches: look at slot i again after each. */
  for (size_t i = 0; i < n->nwatches;) {
    if (n->watches[i].peer == peer)
      fire(n, i, DM__A_NOCONNECTION, DM__ALEN(DM__A_NOCONNECTION));
    else
      i++;
  }
}

void dm__watch_free(dm__node *n) {
  dm__free(n->watches);
  n->watches = NULL;
  n->nwatches = n->capwatches = 0;
}
