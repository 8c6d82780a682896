/* Routing: a packet from a peer is decoded and goes to the process it
 * names, by the ops of that process's kind; links, unlinks and exit
 * signals are kept or delivered here. Loop thread only. */
#include <string.h>

#include "dm.h"
#include "node/node.h"

/* A signal's sender is a process of the peer that sends it. One that
 * claims a process of another node is refused: otherwise a peer could make
 * the node remember node names without end (links keep them) and fire or
 * break links on another node's behalf. */
static int from_peer(dm__node *n, const dm__conn *c, const dm__ctrl *ctl) {
  if (strcmp(ctl->from.node, n->dist.peer_names[c->peer]) == 0)
    return 1;
  n->stats.foreign_senders++;
  DM_DEBUG("peer %s sent a signal from a process of %s; refused",
           n->dist.peer_names[c->peer], ctl->from.node);
  return 0;
}

int dm__node_route(dm__node *n, dm__conn *c, const char *pkt, size_t len) {
  dm__ctrl ctl;
  dm__proc *p;
  int r = dm__ctrl_decode(pkt, len, &ctl);
  if (r) {
    n->stats.bad_packets++;
    DM_WARN("peer %s sent an undecodable packet of %zu bytes (%s)",
            n->dist.peer_names[c->peer], len, dm_strerror(r));
    return 0;
  }
  switch (ctl.op) {
  case DM__OP_REG_SEND:
  case DM__OP_SEND:
    p = ctl.op == DM__OP_REG_SEND ? dm__nametab_get(&n->names, ctl.toname)
                                  : dm__node_local(n, &ctl.to);
    if (!p) {
      n->stats.undeliverable++;
      if (ctl.op == DM__OP_REG_SEND)
        DM_DEBUG("message to unregistered name %s", ctl.toname);
      dm__node_noproc(n, &ctl);
      return 1;
    }
    dm__proc_ops_of(n, p)->message(p, n, &ctl);
    return 1;
  case DM__OP_LINK:
    if (!from_peer(n, c, &ctl))
      return 0;
    p = dm__node_local(n, &ctl.to);
    if (!p)
      dm__node_send_exit(n, &ctl.to, &ctl.from, DM__A_NOPROC, DM__ALEN(DM__A_NOPROC));
    else if (dm__proc_link(n, p, &ctl.from))
      DM_ERROR("out of memory recording a link");
    return 0;
  case DM__OP_UNLINK:
  case DM__OP_UNLINK_ID:
    if (!from_peer(n, c, &ctl))
      return 0;
    p = dm__node_local(n, &ctl.to);
    if (p)
      dm__proc_unlink(n, p, &ctl.from);
    if (ctl.op == DM__OP_UNLINK_ID)
      dm__node_send_unlink_id_ack(n, ctl.unlink_id, &ctl.to, &ctl.from);
    return 0;
  case DM__OP_EXIT:
  case DM__OP_EXIT2:
    if (!from_peer(n, c, &ctl))
      return 0;
    p = dm__node_local(n, &ctl.to);
    if (!p)
      return 0;
    if (ctl.op == DM__OP_EXIT)
      dm__proc_unlink(n, p, &ctl.from);
    if (dm__proc_ops_of(n, p)->exit)
      dm__proc_ops_of(n, p)->exit(p, n, &ctl.from, ctl.reason, ctl.reason_len);
    return 0;
  case DM__OP_MONITOR_P:
  case DM__OP_DEMONITOR_P: {
    /* By pid or by registered name. A monitor on a process that does not
     * exist (never did, is gone, or of an old incarnation of this node)
     * fires at once with noproc, as on a BEAM node; one on a live process
     * is kept until it ends, is demonitored, or its watcher's node is
     * lost. */
    int named = ctl.toname[0] != 0;
    if (!from_peer(n, c, &ctl))
      return 0;
    p = named ? dm__nametab_get(&n->names, ctl.toname) : dm__node_local(n, &ctl.to);
    if (ctl.op == DM__OP_DEMONITOR_P) {
      if (p)
        dm__proc_demonitor(n, p, &ctl.from, &ctl.ref);
    } else if (!p) {
      dm__node_send_monitor_exit(n, named ? ctl.toname : NULL, &ctl.to, &ctl.from,
                                 &ctl.ref, DM__A_NOPROC, DM__ALEN(DM__A_NOPROC));
    } else if (dm__proc_monitor(n, p, &ctl.from, &ctl.ref, named)) {
      DM_ERROR("out of memory recording a monitor");
    }
    return 0;
  }
  case DM__OP_MONITOR_P_EXIT:
    if (!dm__watch_fired(n, c->peer, &ctl))
      dm__remote_down(n, &ctl);
    return 0;
  case DM__OP_ALIAS_SEND:
    /* The node makes no aliases, so none is active: dropped, as BEAM
     * drops a message to an alias given up. */
    n->stats.undeliverable++;
    DM_DEBUG("message from %s to an alias, which no process here has",
             n->dist.peer_names[c->peer]);
    return 1;
  case DM__OP_UNLINK_ID_ACK:
  case DM__OP_GROUP_LEADER:
    return 0;
  default:
    n->stats.unknown_control++;
    DM_WARN("peer %s sent control message %ld, which this node does not serve",
            n->dist.peer_names[c->peer], ctl.raw_op);
    return 0;
  }
}
