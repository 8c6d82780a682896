/* node: the process tables, routing of control messages, replies and
 * the node object. Depends on dist, term and base. */
#ifndef DM_NODE_H
#define DM_NODE_H

#include <ei.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/base.h"
#include "dist/dist.h"
#include "term/term.h"

/* ---- names ---------------------------------------------------------------*/
/* The node's process tables: registered name → process and local pid →
 * process. Local pids are stored as a 32-bit key (ei's num and serial); the
 * node name and creation are the same for every local pid. */

/* Open-addressing map from a non-zero 32-bit key to a pointer. */
typedef struct {
  uint32_t *keys; /* 0 marks an empty slot */
  void **vals;
  size_t cap;     /* a power of two, or 0 */
  size_t count;
} dm__pidtab;

void dm__pidtab_init(dm__pidtab *t);
void dm__pidtab_free(dm__pidtab *t);
/* Makes room for n entries in all, so that many puts do not rehash. */
int dm__pidtab_reserve(dm__pidtab *t, size_t n);
/* Inserts or replaces. 0, DM_EINVAL (key 0) or DM_ENOMEM. */
int dm__pidtab_put(dm__pidtab *t, uint32_t key, void *val);
/* The value, or NULL. */
void *dm__pidtab_get(const dm__pidtab *t, uint32_t key);
/* Removes and returns the value, or NULL when absent. */
void *dm__pidtab_del(dm__pidtab *t, uint32_t key);
/* The value of a key already there becomes val; allocates nothing. 0, or
 * DM_EINVAL when the key is absent. */
int dm__pidtab_replace(dm__pidtab *t, uint32_t key, void *val);
/* True for a table at most an eighth full: dm__pidtab_shrink rehashes it
 * to half full at most; on failure it stays as it is. */
static inline int dm__pidtab_sparse(const dm__pidtab *t) {
  return t->cap > 64 && t->count < t->cap / 8;
}
void dm__pidtab_shrink(dm__pidtab *t);

typedef struct dm__proc dm__proc;

/* The pid table: local processes by their key. Open addressing on the
 * key; a slot holds the process alone, and a lookup reads the key back
 * from it: the table is 8 bytes a slot where keys beside the pointers took
 * 12, and a lookup reads the process it finds anyway. A process keeps its
 * key, and its memory stays readable, while it is in the table. */
typedef struct {
  dm__proc **slots;
  size_t cap;     /* a power of two, or 0 */
  size_t count;
} dm__proctab;

void dm__proctab_init(dm__proctab *t);
void dm__proctab_free(dm__proctab *t);
/* Makes room for n processes in all, so that many puts do not rehash. */
int dm__proctab_reserve(dm__proctab *t, size_t n);
/* Enters p under p->key, which no other process in the table has. 0,
 * DM_EINVAL (key 0) or DM_ENOMEM. */
int dm__proctab_put(dm__proctab *t, dm__proc *p);
/* The process with this key, or NULL. */
dm__proc *dm__proctab_get(const dm__proctab *t, uint32_t key);
/* Takes the process with this key out and returns it, or NULL. */
dm__proc *dm__proctab_del(dm__proctab *t, uint32_t key);
/* The process in the table under to->key was copied to `to` (its owner
 * moved it): the table refers to `to` from now on. Allocates nothing. 0,
 * or DM_EINVAL when no process has that key. */
int dm__proctab_moved(dm__proctab *t, dm__proc *to);
/* The slot where the probe for key begins (t not empty). Fibonacci
 * hashing: keys given in sequence land on distinct slots. */
static inline size_t dm__proctab_home(const dm__proctab *t, uint32_t key) {
  return (size_t)(key * 2654435769u) & (t->cap - 1);
}
/* True for a table at most an eighth full: dm__proctab_shrink rehashes
 * it to half full at most; on failure it stays as it is. */
static inline int dm__proctab_sparse(const dm__proctab *t) {
  return t->cap > 64 && t->count < t->cap / 8;
}
void dm__proctab_shrink(dm__proctab *t);

/* Registered names; a handful per node, so a short array. */
typedef struct {
  char *name;
  void *val;
} dm__name;

typedef struct {
  dm__name *items;
  size_t count, cap;
} dm__nametab;

void dm__nametab_init(dm__nametab *t);
void dm__nametab_free(dm__nametab *t);
/* Registers name (copied). 0, DM_EEXISTS, DM_EINVAL or DM_ENOMEM. */
int dm__nametab_put(dm__nametab *t, const char *name, void *val);
void *dm__nametab_get(const dm__nametab *t, const char *name);
/* Unregisters; returns the value or NULL. */
void *dm__nametab_del(dm__nametab *t, const char *name);
/* The name val is registered under, or NULL. */
const char *dm__nametab_name_of(const dm__nametab *t, const void *val);

/* ---- node ----------------------------------------------------------------*/
/* The node: the process tables (proc.c), what arrives routed to the kind
 * of process it is for (route.c), what goes out (out.c), the node-level
 * services (service.c) and the node object with its loop phases
 * (core.c). The layer above plugs in through process kinds and loop
 * hooks; the node never names it. */

typedef struct dm__node dm__node;
typedef struct dm__remote dm__remote;
typedef struct dm__watch dm__watch;

/* Counters of the node layer, shown by `stats` beside dist's. */
#define DM__NODE_STATS_MAP(X)                                                  \
  X(bad_packets)                                                               \
  X(unknown_control)                                                           \
  X(unknown_requests)                                                          \
  X(undeliverable)                                                             \
  X(foreign_senders) /* signals claiming a sender on another node */

typedef struct {
#define DM__STATS_FIELD(name) uint64_t name;
  DM__NODE_STATS_MAP(DM__STATS_FIELD)
#undef DM__STATS_FIELD
} dm__node_stats;

/* A remote pid, compactly: the peer node is an index into dist's interned
 * node names. */
typedef struct {
  uint32_t peer, num, serial, creation;
} dm__rpid;

typedef struct {
  uint32_t count, cap;
  dm__rpid items[];
} dm__links;

/* A monitor that a remote process holds on a local one. */
typedef struct {
  dm__rpid watcher;
  erlang_ref ref;
  int by_name; /* set up on the registered name: it fires naming it */
} dm__monitor;

typedef struct {
  uint32_t count, cap;
  dm__monitor items[];
} dm__monitors;

/* How a kind of process reacts to what reaches it. */
typedef struct {
  /* A message (SEND or REG_SEND); ctl->msg is the versioned term. */
  void (*message)(dm__proc *p, dm__node *n, const dm__ctrl *ctl);
  /* An exit signal from `from` (a linked process that died, or exit/2). */
  void (*exit)(dm__proc *p, dm__node *n, const erlang_pid *from,
               const char *reason, size_t reason_len);
  /* A watch of p's (dm__proc_watch) fired: the process it names ended
   * with reason, or its node was lost (noconnection). May be NULL. */
  void (*down)(dm__proc *p, dm__node *n, const erlang_ref *ref,
               const char *reason, size_t reason_len);
} dm__proc_ops;

/* Kinds are registered with the node (dm__node_add_kind); a process keeps
 * a one-byte index instead of an ops pointer, which keeps a million
 * workers 8 bytes smaller each. */
#define DM__KINDS_MAX 16

/* A C-node process: anything with a pid. Its links live out of line
 * (dm__node.links), as its monitors do: most processes have none. */
/* A process key is below 1 << DM__PROC_KEY_BITS: tables may keep other
 * bits beside it. */
#define DM__PROC_KEY_BITS 28
struct dm__proc {
  uint32_t key;      /* ei num | serial << 15; 0 until spawned */
  uint8_t kind;      /* index returned by dm__node_add_kind */
  /* The kind's own: a struct that embeds a process would leave these
   * bytes as padding, and a million workers keep their flags in them.
   * The node never reads or writes them. */
  uint8_t spare;
  uint16_t flags;
};

/* What a layer above runs at the node's loop phases. Any may be NULL. */
typedef struct {
  /* Every loop iteration, just before queued output is written and the
   * loop blocks. */
  void (*prepare)(void *ud);
  /* The node begins to stop: close loop handles, stop threads. */
  void (*stop)(void *ud);
  /* After the loop has returned: free what is left. */
  void (*free)(void *ud);
  /* info's `managers`: appends a list term to x. 0 or DM_ENOMEM. */
  int (*describe)(void *ud, ei_x_buff *x);
} dm__node_hooks;

#define DM__HOOKS_MAX 8

/* Where a call's reply goes: the caller and its tag. */
typedef struct dm__replyto {
  erlang_pid from;
  int has_mref;
  int alias; /* mref is the caller's alias too */
  erlang_ref mref;
  size_t tag_len;
  char tag[];
} dm__replyto;

struct dm__node {
  uv_loop_t *loop;
  dm__dist dist;
  int exit_with_stdin;
  int ready;    /* READY was printed */
  int stopping; /* dm__node_stop ran */
  int exit_status; /* of the program once the loop returns: 1 after a fatal error */
  int handles;  /* the loop handles below are initialised */
  uint64_t start_ms;
  uint64_t start_wall_us; /* with start_ms, turns loop times into dates */

  uv_prepare_t flush_prepare; /* runs right before the loop blocks */
  uv_signal_t sigterm, sigint;
  uv_poll_t stdin_poll;

  const dm__proc_ops *kinds[DM__KINDS_MAX];
  size_t nkinds;
  struct {
    const dm__node_hooks *ops;
    void *ud;
  } hooks[DM__HOOKS_MAX];
  size_t nhooks;

  dm__nametab names;
  dm__proctab pids;
  /* Links are rare: they live out of line, process key -> dm__links, so
   * a process without one carries no byte for them. */
  dm__pidtab links;
  /* Monitors are rare: they live out of line, process key -> dm__monitors,
   * so a process without one carries no byte for them. */
  dm__pidtab monitors;
  size_t nmonitors; /* monitors in all */

  /* Monitors this node's processes hold on remote ones (watch.c). */
  dm__watch *watches;
  size_t nwatches, capwatches;

  /* Requests this node makes of other nodes (remote.c), few at a time. */
  struct dm__remote *remotes;
  size_t nremotes, capremotes;
  uv_timer_t remote_timer; /* the earliest of their deadlines */

  ei_x_buff pkt;   /* the packet being built; out.c's alone */
  uint64_t pkt_big_at; /* loop ms when a packet over 64 KiB was last built */
  size_t pkt_body; /* where an open reply's body starts in pkt */
  dm__node_stats stats;
  const char *version;
};

/* core.c: the node object. */
/* Sets up distribution and the process tables; listens. 0 or a negative
 * error (logged). */
int dm__node_init(dm__node *n, uv_loop_t *loop, const dm__config *cfg,
                  const char *cookie);
/* The same without the listen socket: a node served only the connections
 * handed to it with dm__dist_adopt, which no peer can reach over the
 * network (the node fuzz target's). Start it with dm__node_serve. */
int dm__node_init_unlistened(dm__node *n, uv_loop_t *loop,
                             const dm__config *cfg, const char *cookie);
/* Runs ops at the loop's phases, with ud. 0 or DM_ENOMEM (too many). */
int dm__node_add_hooks(dm__node *n, const dm__node_hooks *ops, void *ud);
/* Starts serving: publishes (retrying while epmd is absent), prints READY
 * once published. */
int dm__node_start(dm__node *n);
/* Runs the loop phases and ticks only: no listening, no epmd, no
 * signals, no stdin. dm__node_start does this first. */
void dm__node_serve(dm__node *n);
/* Begins an orderly stop: the loop returns once every handle is closed. */
void dm__node_stop(dm__node *n);
/* Frees what dm__node_init allocated, after uv_run has returned. */
void dm__node_free(dm__node *n);

/* proc.c: processes. */
/* Registers a kind of process; its index for dm__proc.kind, or DM_ENOMEM. */
int dm__node_add_kind(dm__node *n, const dm__proc_ops *ops);
static inline const dm__proc_ops *dm__proc_ops_of(const dm__node *n,
                                                  const dm__proc *p) {
  return n->kinds[p->kind];
}
/* Gives p a fresh pid and enters it into the pid table. */
int dm__proc_spawn(dm__node *n, dm__proc *p);
/* Registers p (already spawned) under name. */
int dm__proc_register(dm__node *n, dm__proc *p, const char *name);
/* Fills out with the full pid of a local process. */
void dm__proc_pid(const dm__node *n, const dm__proc *p, erlang_pid *out);
/* The local process a pid names, or NULL (also for remote pids). */
dm__proc *dm__node_local(dm__node *n, const erlang_pid *pid);
/* Link bookkeeping on p. 0 or DM_ENOMEM. */
int dm__proc_link(dm__node *n, dm__proc *p, const erlang_pid *remote);
void dm__proc_unlink(dm__node *n, dm__proc *p, const erlang_pid *remote);
/* Drops all of p's links (when it goes away). */
void dm__proc_free_links(dm__node *n, dm__proc *p);
/* A peer is gone: links to its processes fire as noconnection, and its
 * monitors are dropped. */
void dm__proc_peer_lost(dm__node *n, uint32_t peer);
/* A remote process monitors p (MONITOR_P). 0 or DM_ENOMEM. */
int dm__proc_monitor(dm__node *n, dm__proc *p, const erlang_pid *watcher,
                     const erlang_ref *ref, int by_name);
/* DEMONITOR_P: the monitor ref of watcher on p goes. */
void dm__proc_demonitor(dm__node *n, dm__proc *p, const erlang_pid *watcher,
                        const erlang_ref *ref);
/* p ends with reason (an encoded term): every linked process gets the
 * exit signal and every monitor fires (MONITOR_P_EXIT) with it; both are
 * then gone. */
void dm__proc_down(dm__node *n, dm__proc *p, const char *reason, size_t len);
/* p goes without a word (the node is stopping): its links and monitors
 * are freed. */
void dm__proc_release(dm__node *n, dm__proc *p);

/* watch.c: monitors held by local processes on remote ones. */
/* p monitors the remote process target (MONITOR_P, reference into *ref):
 * when target ends or its node is lost, p's kind hears it through its
 * down op, once. 0, DM_EINVAL (a pid of this node), DM_ECLOSED (its node
 * is not connected; nothing was sent), DM_EEI or DM_ENOMEM. */
int dm__proc_watch(dm__node *n, dm__proc *p, const erlang_pid *target,
                   erlang_ref *ref);
/* p takes its watch ref of target back (DEMONITOR_P); nothing when it
 * already fired. */
void dm__proc_unwatch(dm__node *n, dm__proc *p, const erlang_pid *target,
                      const erlang_ref *ref);
/* MONITOR_P_EXIT from peer: 1 when it was a watch's (its down op ran). */
int dm__watch_fired(dm__node *n, uint32_t peer, const dm__ctrl *ctl);
/* A peer is lost: the watches of its processes fire with noconnection. */
void dm__watch_peer_lost(dm__node *n, uint32_t peer);
void dm__watch_free(dm__node *n);

/* sys.c: OTP system messages ({system, From, Req}: DM__GEN_SYSTEM). */
enum { DM__SYS_GET_STATE = 1, DM__SYS_GET_STATUS, DM__SYS_OTHER };
/* What Req (a system message's request) asks. */
int dm__sys_request(const char *req, size_t len);
/* Appends {error, {not_supported, What}}: What is the request's atom or
 * tag ({debug, K} for sys's debug commands), else the request. sys.erl
 * returns it (suspend, resume, change_code) or raises it (get_state,
 * replace_state) at once. 0 or DM_ENOMEM. */
int dm__enc_sys_refusal(ei_x_buff *x, const char *req, size_t len);
/* Answers g with that refusal. */
void dm__sys_refuse(dm__node *n, const dm__gen *g);
/* get_status's answer, as gen_server gives it: {status, Self, {module,
 * gen_server}, [[], running, Parent, [], Misc]}, Misc a header and the
 * data gen_server shows, then a data list of nitems items, each opened
 * with dm__enc_sys_item (a {Label, Term} pair whose Term the caller
 * appends). dm__enc_sys_status_end closes it. 0 or DM_ENOMEM. */
int dm__enc_sys_status_begin(ei_x_buff *x, const erlang_pid *self,
                             const erlang_pid *parent, const char *header,
                             int nitems);
int dm__enc_sys_item(ei_x_buff *x, const char *label);
int dm__enc_sys_status_end(ei_x_buff *x);

/* route.c: a packet from a peer, to the process it is for. Returns 1
 * when it was a message (for read coalescing). */
int dm__node_route(dm__node *n, dm__conn *c, const char *pkt, size_t len);

/* out.c: everything the node sends. Each builds its packet in the node's
 * own buffer and queues it; 0, DM_ECLOSED (no connection to that node,
 * counted as undeliverable) or DM_ENOMEM. */
/* A message (encoded, no version byte) to a pid. Its node is connected
 * to when it is not (the message waits meanwhile). */
int dm__node_send_msg(dm__node *n, const erlang_pid *to, const char *msg,
                      size_t len);
/* MONITOR_P or DEMONITOR_P (op) from a local process to a process of
 * `node`: to_name when not NULL, else to_pid. */
int dm__node_send_monitor(dm__node *n, int op, const erlang_pid *from,
                          const char *node, const char *to_name,
                          const erlang_pid *to_pid, const erlang_ref *ref);
/* A gen_server call from a local process to one of `node`, tagged ref. */
int dm__node_send_call(dm__node *n, const erlang_pid *from, const char *node,
                       const char *to_name, const erlang_pid *to_pid,
                       const erlang_ref *ref, const char *req, size_t len);
/* An exit signal from a local process to a linked one. */
int dm__node_send_exit(dm__node *n, const erlang_pid *from,
                       const erlang_pid *to, const char *reason, size_t len);
/* MONITOR_P_EXIT: the monitor `ref` of `to` on from_name (or from_pid)
 * fires with reason. */
int dm__node_send_monitor_exit(dm__node *n, const char *from_name,
                               const erlang_pid *from_pid,
                               const erlang_pid *to, const erlang_ref *ref,
                               const char *reason, size_t len);
int dm__node_send_unlink_id_ack(dm__node *n, unsigned long long id,
                                const erlang_pid *from, const erlang_pid *to);
/* Answers a gen call to a missing process the way a BEAM node does: the
 * caller's monitor fires with noproc at once. */
void dm__node_noproc(dm__node *n, const dm__ctrl *ctl);
/* The packet buffer back to a small size after a big packet (out.c), so
 * a 50 MiB reply does not stay resident. */
void dm__node_pkt_trim(dm__node *n);

/* Replies. A reply is encoded once, straight into the outgoing packet:
 * dm__reply_begin opens it (control, tag) and returns the buffer the body
 * goes into; dm__reply_end sends it. Nothing else may be sent between the
 * two. */
ei_x_buff *dm__reply_begin(dm__node *n, const dm__gen *g);
/* rc is what encoding the body returned: when it is not 0 the body is
 * replaced by {error, enomem} (or, when even that cannot be written, the
 * caller's call exits), so a caller never gets a truncated term. Returns
 * 0, DM_ECLOSED or DM_ENOMEM. */
int dm__reply_end(dm__node *n, const dm__gen *g, int rc);
/* A whole reply at once: term is an encoded reply body. */
int dm__reply(dm__node *n, const dm__gen *g, const char *term, size_t len);
/* A record of where a call's reply goes, for a reply sent later. The
 * caller frees it with dm__free. NULL when out of memory. */
dm__replyto *dm__replyto_new(const dm__gen *g);
/* Replies to a recorded call, as {ok, Term} when wrap. */
void dm__reply_to(dm__node *n, const dm__replyto *r, const char *term,
                  size_t len, int wrap);
/* Makes the recorded call exit with reason (an encoded term), as when
 * the callee dies: the caller's monitor fires. */
void dm__reply_exit(dm__node *n, const dm__replyto *r, const char *reason,
                    size_t len);

/* remote.c: what a peer asks tarearbol_cnode to do on another node:
 * connect, ping, or make a gen_server call there. */
/* 1 when g's request is one of them (answered now or later), else 0. */
int dm__remote_request(dm__node *n, const dm__gen *g);
/* A message to tarearbol_cnode (versioned): 1 when it was the reply to a
 * call this node made, which is then answered. */
int dm__remote_reply(dm__node *n, const char *msg, size_t len);
/* MONITOR_P_EXIT to this node: the callee of one of its calls is gone. */
void dm__remote_down(dm__node *n, const dm__ctrl *ctl);
/* A connection to `peer` is up (ok) or could not be made; the peer is
 * lost. */
void dm__remote_connected(dm__node *n, uint32_t peer, int ok);
void dm__remote_peer_lost(dm__node *n, uint32_t peer);
void dm__remote_init(dm__node *n);
void dm__remote_stop(dm__node *n);
void dm__remote_free(dm__node *n);

/* service.c: the node-level processes tarearbol_cnode (info, stats) and
 * net_kernel (ping). */
int dm__services_init(dm__node *n);
/* Appends {error, {unknown_request, Req}}: the one encoder of the answer
 * every process of the node gives a request it does not know. */
int dm__enc_unknown_request(ei_x_buff *x, const char *req, size_t len);

#endif
