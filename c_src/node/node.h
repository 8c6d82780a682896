/* node: the process tables, routing of control messages, replies and
 * the node object. Depends on dist, term and base. */
#ifndef DM_NODE_H
#define DM_NODE_H

#include <ei.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/base.h"
#include "dist/dist.h"
#include "runtime/runtime.h"

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

/* ---- node ----------------------------------------------------------------*/
/* The node: everything the loop thread owns. One dm__node per OS process.
 * net (listen, epmd, acceptor thread), peer connections, the process tables
 * and the counters live here; other files reach them through this header. */

typedef struct dm__node dm__node;
typedef struct dm__conn dm__conn;
typedef struct dm__proc dm__proc;

typedef struct {
  const char *name;        /* --sname or --name argument */
  int longnames;           /* 1 with --name */
  const char *listen_addr; /* IPv4 address to listen on, NULL: any */
  unsigned net_ticktime;   /* seconds, as erl's net_ticktime */
  uint32_t max_packet;     /* larger length prefixes close the connection */
  unsigned handshake_ms;   /* a handshake step slower than this fails */
  size_t max_outbuf;       /* bytes queued for one peer before it is dropped */
  size_t read_coalescing;  /* highest SO_RCVLOWAT asked for; 0: never */
  int exit_with_stdin;     /* stop when standard input closes (port owner gone) */
} dm__config;

void dm__config_defaults(dm__config *cfg);

/* Counters shown by the `stats` request. Only the loop thread writes them,
 * except the ones the acceptor thread bumps, which are atomic. */
#define DM__STATS_MAP(X)                                                       \
  X(connections_closed)                                                        \
  X(packets_in)                                                                \
  X(reads)                                                                     \
  X(lowat_releases)                                                            \
  X(packets_out)                                                               \
  X(bytes_in)                                                                  \
  X(bytes_out)                                                                 \
  X(ticks_in)                                                                  \
  X(ticks_out)                                                                 \
  X(bad_packets)                                                               \
  X(oversized_packets)                                                         \
  X(unknown_control)                                                           \
  X(unknown_requests)                                                          \
  X(undeliverable)                                                             \
  X(peers_timed_out)                                                           \
  X(outbuf_overflows)                                                          \
  X(epmd_registrations)

typedef struct {
#define DM__STATS_FIELD(name) uint64_t name;
  DM__STATS_MAP(DM__STATS_FIELD)
#undef DM__STATS_FIELD
  atomic_uint_fast64_t connections_accepted;
  atomic_uint_fast64_t handshake_failures;
} dm__stats;

/* A remote pid, compactly: the peer node is an index into the node's
 * interned node names. */
typedef struct {
  uint32_t peer, num, serial, creation;
} dm__rpid;

typedef struct {
  uint32_t count, cap;
  dm__rpid items[];
} dm__links;

/* How a kind of process reacts to what reaches it. */
typedef struct {
  /* A message (SEND or REG_SEND); ctl->msg is the versioned term. */
  void (*message)(dm__proc *p, dm__node *n, const dm__ctrl *ctl);
  /* An exit signal from `from` (a linked process that died, or exit/2). */
  void (*exit)(dm__proc *p, dm__node *n, const erlang_pid *from,
               const char *reason, size_t reason_len);
} dm__proc_ops;

/* The kinds of process; a one-byte tag instead of an ops pointer keeps a
 * million workers 8 bytes smaller each. */
enum { DM__P_NODE_SERVICE = 0, DM__P_NET_KERNEL, DM__P_MANAGER, DM__P_WORKER, DM__P_KINDS };
extern const dm__proc_ops dm__service_ops, dm__net_kernel_ops, dm__manager_ops,
    dm__worker_ops;
extern const dm__proc_ops *const dm__proc_kinds[DM__P_KINDS];

/* A C-node process: anything with a pid. */
struct dm__proc {
  dm__links *links;  /* out of line: most processes have none */
  uint32_t key;      /* ei num | serial << 15; 0 until spawned */
  uint8_t kind;      /* DM__P_* */
};

static inline const dm__proc_ops *dm__proc_ops_of(const dm__proc *p) {
  return dm__proc_kinds[p->kind];
}

struct dm__conn {
  uv_tcp_t tcp;
  dm__node *node;
  uint32_t peer;  /* interned node name of the peer */
  size_t index;   /* position in node->conns */
  dm__frame_reader fr;
  dm__buf out;      /* queued, not yet handed to the kernel */
  dm__buf inflight; /* owned by the uv_write in progress */
  uv_write_t wreq;
  int writing, closing, dirty;
  uint64_t last_read, last_write; /* loop time, ms */
  dm__conn *next_dirty;
  char *rbuf;
  unsigned rd_msgs;    /* messages (not monitors, links, ticks) in that read */
  size_t lowat;        /* SO_RCVLOWAT in force; 1 is the kernel's default */
  uint64_t held_ns;    /* with lowat > 1: when the last read happened */
};

struct dm__node {
  uv_loop_t *loop;
  dm__config cfg;
  ei_cnode ec;
  int listen_fd, port;
  int epmd_fd; /* -1 while not published */
  int ready;   /* READY was printed */
  int handles; /* the loop handles below are initialised */
  uint64_t start_ms;
  uint64_t start_wall_us; /* with start_ms, turns loop times into dates */

  uv_poll_t epmd_poll;
  uv_timer_t publish_timer;
  uv_timer_t tick_timer;
  uv_prepare_t flush_prepare; /* runs right before the loop blocks */
  uv_timer_t lowat_timer;     /* runs while a peer's low-water mark is up */
  uv_signal_t sigterm, sigint;
  uv_async_t accept_async;
  uv_poll_t stdin_poll;

  pthread_t acceptor;
  int acceptor_started;
  atomic_int stopping;
  pthread_mutex_t accept_mx;
  struct dm__accepted *accepted; /* handed over by the acceptor */

  dm__conn **conns;
  size_t nconns, capconns;
  dm__conn *dirty;

  char **peer_names; /* interned node names, index = dm__rpid.peer */
  size_t npeer_names, cappeer_names;

  dm__nametab names;
  dm__pidtab pids;
  size_t nlinked;          /* processes with links */

  dm__wheel wheel;         /* every worker's next perform */
  dm__slab workers;        /* every manager's workers */
  uv_timer_t wheel_timer;
  struct dm__manager **managers;
  size_t nmanagers;
  unsigned threads;        /* default pool size of a manager */

  ei_x_buff x;     /* scratch for outgoing packets */
  ei_x_buff reply; /* scratch for reply terms */
  dm__stats stats;
  const char *version;
};

/* Sets up ei, listens and starts the acceptor; publishing happens from the
 * loop. 0 or a negative error (logged). */
int dm__node_init(dm__node *n, uv_loop_t *loop, const dm__config *cfg,
                  const char *cookie);
/* Starts serving: publishes (retrying while epmd is absent), prints READY
 * once published. */
int dm__node_start(dm__node *n);
/* Begins an orderly stop: the loop returns once every handle is closed. */
void dm__node_stop(dm__node *n);
/* Frees what dm__node_init allocated, after uv_run has returned. */
void dm__node_free(dm__node *n);

/* Interns a node name; returns its index or a negative error. */
int dm__node_intern(dm__node *n, const char *name);
/* The connection to a node, or NULL. */
dm__conn *dm__node_conn(dm__node *n, const char *nodename);

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

/* Queues the packet in x (from dm__pkt_begin to dm__pkt_end) to the node
 * named `to`. Returns 0, or DM_ECLOSED when no connection to it exists. */
int dm__node_send(dm__node *n, const char *to, const ei_x_buff *x);
/* Replies to a gen call with an encoded term (no version byte). */
int dm__node_reply(dm__node *n, const dm__gen *g, const char *reply,
                   size_t len);
/* Answers a gen call to a missing process the way a BEAM node does: the
 * caller's monitor fires with noproc at once. */
void dm__node_noproc(dm__node *n, const dm__ctrl *ctl);

/* Connections (conn.c). */
int dm__conn_open(dm__node *n, int fd, const char *peer);
/* Queues bytes; a peer whose queue passes max_outbuf is dropped. */
int dm__conn_write(dm__conn *c, const char *data, size_t len);
void dm__conn_close(dm__conn *c, const char *why);
/* Hands every queued byte to the kernel; called once per loop iteration. */
void dm__conn_flush_all(dm__node *n);
/* Every millisecond while a peer's read low-water mark is raised: a peer
 * not read for half a millisecond gets it back to 1. */
void dm__conn_lowat_tick(uv_timer_t *t);
/* Routes one packet (conn.c calls it, node.c implements it). */
void dm__node_dispatch(dm__node *n, dm__conn *c, const char *pkt, size_t len);
/* A connection is gone: links to its processes fire (node.c). */
void dm__node_peer_lost(dm__node *n, uint32_t peer);

/* Managers (manager.c): the timer wheel and pools they share with the
 * loop, set up in init, driven from the check phase, closed on stop. */
int dm__managers_init(dm__node *n);
int dm__manager_create(dm__node *n, const char *spec);
void dm__managers_check(dm__node *n);
void dm__managers_stop(dm__node *n);
void dm__managers_free(dm__node *n);
int dm__encode_managers(dm__node *n, ei_x_buff *x);

/* The node-level services: tarearbol_cnode and net_kernel (service.c). */
int dm__services_init(dm__node *n);
void dm__services_free(dm__node *n);

#endif
