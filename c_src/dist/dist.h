/* dist: the distribution protocol. Frames, control messages and the
 * gen_server envelope; one connection; the connection table with ticks;
 * the listen socket, the handshake and epmd. Depends on base and term.
 * What happens to a packet is the business of the layer above, which
 * gives its ops when the table is set up: dist never names it. */
#ifndef DM_DIST_H
#define DM_DIST_H

#include <ei.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>

#include "base/base.h"
#include "term/term.h"

/* ---- frame ---------------------------------------------------------------*/
/* The frame reader: turns a byte stream into distribution packets (a 4-byte
 * big-endian length, then the body; length 0 is a tick). Packets wholly
 * inside one read are handed out in place; only a packet split across reads
 * is copied, and its buffer grows with the bytes that actually arrive, so a
 * large length prefix followed by silence costs nothing. */

typedef struct {
  dm__buf body;      /* the partial packet being assembled */
  uint32_t want;     /* its announced length, when in_body */
  uint32_t max_len;  /* larger length prefixes are refused */
  unsigned hdr_have; /* bytes of the length prefix seen so far */
  int in_body;       /* 1 while a packet is being assembled */
  char hdr[4];
} dm__frame_reader;

/* Called once per complete packet; len 0 is a tick. A non-zero return
 * stops the feed and is returned by it. */
typedef int (*dm__frame_cb)(void *ud, const char *pkt, size_t len);

void dm__frame_init(dm__frame_reader *fr, uint32_t max_len);
/* Feeds n bytes. Returns 0, DM_ETOOBIG when a length prefix exceeds max_len,
 * DM_ENOMEM, or what cb returned. After an error the reader must be reset
 * (the stream has lost its framing). */
int dm__frame_feed(dm__frame_reader *fr, const char *data, size_t n,
                   dm__frame_cb cb, void *ud);
/* True when a partial packet or length prefix is pending. */
int dm__frame_partial(const dm__frame_reader *fr);
/* Bytes still to come before the pending packet is complete (at least
 * the rest of its length prefix); 0 when nothing is pending. */
size_t dm__frame_pending(const dm__frame_reader *fr);
/* Frees the reader's buffer. */
void dm__frame_free(dm__frame_reader *fr);

/* Read coalescing. A peer with several requests in flight sends them as
 * they are made; waking the loop for each costs a block, a read and a
 * write per request. After a read of `bytes` bytes that brought `msgs`
 * messages, the loop asks the kernel (SO_RCVLOWAT, Linux 4.18 or later)
 * to wake it only once nearly as much has arrived again: one message's
 * share less, and never more than the rest of a packet still being
 * assembled (`pending`), nor `max`. A read of a single message (a call is
 * a monitor and a message) asks for any byte (1): a lone caller is never
 * held. The loop drops the mark back to 1 when a held peer goes quiet,
 * which bounds the delay to about a millisecond. */
size_t dm__lowat_want(size_t bytes, unsigned msgs, size_t pending, size_t max);
/* The mark to set next, given the one in force: a lower one at once (it
 * can only wake the loop sooner), a higher one only once it is a quarter
 * higher, so a steady load does not cost a system call per read. */
size_t dm__lowat_next(size_t cur, size_t want);

/* ---- md5 -----------------------------------------------------------------*/
/* The MD5 digest of len bytes (RFC 1321) into out. */
void dm__md5(const void *data, size_t len, unsigned char out[16]);

/* ---- ctrl ----------------------------------------------------------------*/
/* Distribution control messages and the gen_server envelope: decoding of
 * what peers send (bounded, see term.h) and encoding of what the node sends
 * back. */

/* Control operations after folding the trace-token and payload variants
 * into their plain forms. */
enum {
  DM__OP_LINK = 1,
  DM__OP_SEND = 2,
  DM__OP_EXIT = 3,
  DM__OP_UNLINK = 4,
  DM__OP_REG_SEND = 6,
  DM__OP_GROUP_LEADER = 7,
  DM__OP_EXIT2 = 8,
  DM__OP_MONITOR_P = 19,
  DM__OP_DEMONITOR_P = 20,
  DM__OP_MONITOR_P_EXIT = 21,
  DM__OP_ALIAS_SEND = 33,
  DM__OP_UNLINK_ID = 35,
  DM__OP_UNLINK_ID_ACK = 36,
  DM__OP_OTHER = 1000 /* valid term, operation the node does not serve */
};

/* A decoded control message. Pointers lend into the packet. */
typedef struct {
  int op;
  long raw_op;                  /* the tag as received */
  int has_from, has_to;         /* which of from/to were decoded */
  erlang_pid from;              /* sender (LINK, EXIT, REG_SEND, ...) */
  erlang_pid to;                /* target pid (SEND, LINK, EXIT, ...) */
  char toname[MAXATOMLEN_UTF8]; /* target name (REG_SEND, MONITOR_P) */
  erlang_ref ref;               /* MONITOR_P, DEMONITOR_P; ALIAS_SEND's alias */
  unsigned long long unlink_id; /* UNLINK_ID, UNLINK_ID_ACK */
  const char *reason;           /* EXIT, EXIT2: term without version byte */
  size_t reason_len;
  const char *msg; /* message with version byte, or NULL */
  size_t msg_len;
} dm__ctrl;

/* Decodes one packet body (starting with 112). Both the control term and
 * the message are walked within bounds before any ei decoder reads them.
 * 0, DM_EBADPKT (not a packet), DM_EBADTERM (undecodable term). */
int dm__ctrl_decode(const char *pkt, size_t len, dm__ctrl *out);

/* What a message is to a gen_server. */
enum {
  DM__GEN_OTHER = 0,
  DM__GEN_CALL,  /* {'$gen_call', {Pid, Tag}, Req} */
  DM__GEN_CAST,  /* {'$gen_cast', Req} */
  DM__GEN_SYSTEM /* {system, {Pid, Tag}, Req}: sys.erl's; answered as a call */
};

typedef struct {
  int kind;
  erlang_pid from; /* call: the caller */
  const char *tag; /* call: its tag, encoded without version byte */
  size_t tag_len;
  int has_mref;     /* the tag carries the caller's monitor reference */
  int alias;        /* ... and names it as the caller's alias */
  erlang_ref mref;  /* ... which is this */
  const char *req;  /* call or cast request, encoded without version */
  size_t req_len;
} dm__gen;

/* Decodes the message of a dm__ctrl (already validated by dm__ctrl_decode)
 * as `{'$gen_call', {Pid, Tag}, Req}`, `{'$gen_cast', Req}`, `{system,
 * {Pid, Tag}, Req}` or other. Tags
 * of the OTP 24+ forms `[alias | Mref]` and `[[alias | Mref] | _]` (the
 * forms OTP's gen:reply sends to the alias) give mref and alias; the older
 * `Mref` gives mref alone. Always succeeds; malformed envelopes are
 * DM__GEN_OTHER. */
void dm__gen_decode(const char *msg, size_t len, dm__gen *out);

/* The peer takes ALIAS_SEND (DFLAG_ALIAS, OTP 24+). */
#define DM__DFLAG_ALIAS (0x08ull << 32)

/* Encoders. Each appends to x, which the caller owns. A packet is opened
 * with dm__pkt_begin and closed with dm__pkt_end (which writes the length
 * prefix); the control tuple and message go in between. They return 0 or
 * DM_ENOMEM. */
int dm__pkt_begin(ei_x_buff *x);
int dm__pkt_end(ei_x_buff *x);
/* Control for SEND to `to`; the message (with version) follows. */
int dm__enc_send_ctrl(ei_x_buff *x, const erlang_pid *to);
/* Control for ALIAS_SEND {33, From, Alias}; the message follows. */
int dm__enc_alias_send_ctrl(ei_x_buff *x, const erlang_pid *from,
                            const erlang_ref *alias);
/* The head of a reply packet to a gen call: the packet opened, the
 * control, and the message up to `{Tag, `; the reply term and
 * dm__pkt_end follow. The control is ALIAS_SEND from `self` to alias
 * when alias is not NULL, else SEND to `to`. */
int dm__enc_reply_head(ei_x_buff *x, const erlang_pid *to,
                       const erlang_pid *self, const erlang_ref *alias,
                       const char *tag, size_t tag_len);
/* A complete reply packet `{Tag, Reply}` to a gen call; reply is an encoded
 * term without version byte. With self not NULL and a tag that names an
 * alias (g->alias), it goes to the alias from self (the peer must take
 * aliases); else to the caller's pid. */
int dm__enc_reply(ei_x_buff *x, const dm__gen *g, const erlang_pid *self,
                  const char *reply, size_t reply_len);
/* EXIT {3, From, To, Reason}; reason encoded without version byte. */
int dm__enc_exit(ei_x_buff *x, const erlang_pid *from, const erlang_pid *to,
                 const char *reason, size_t reason_len);
/* MONITOR_P_EXIT {21, FromName | FromPid, To, Ref, Reason}: from_name when
 * non-NULL, else from_pid. Reason is encoded, without version byte. */
int dm__enc_monitor_p_exit(ei_x_buff *x, const char *from_name,
                           const erlang_pid *from_pid, const erlang_pid *to,
                           const erlang_ref *ref, const char *reason,
                           size_t reason_len);
/* MONITOR_P {19, From, To, Ref} or DEMONITOR_P {20, ...} (op), To being
 * to_name when not NULL, else to_pid. */
int dm__enc_monitor_p(ei_x_buff *x, int op, const erlang_pid *from,
                      const char *to_name, const erlang_pid *to_pid,
                      const erlang_ref *ref);
/* A gen_server call from `from` to to_name (REG_SEND) or to_pid (SEND):
 * {'$gen_call', {From, Ref}, Req}, Req encoded without version byte. */
int dm__enc_call(ei_x_buff *x, const erlang_pid *from, const char *to_name,
                 const erlang_pid *to_pid, const erlang_ref *ref,
                 const char *req, size_t req_len);
/* UNLINK_ID_ACK {36, Id, From, To}. */
int dm__enc_unlink_id_ack(ei_x_buff *x, unsigned long long id,
                          const erlang_pid *from, const erlang_pid *to);

/* ---- tls -------------------------------------------------------------------*/
/* TLS for distribution connections (OpenSSL), interoperable with OTP's
 * inet_tls_dist: the TLS handshake comes first on the socket, then the
 * distribution handshake inside it (with 4-byte lengths from its first
 * message), then the connection. tlsctx.c holds the node's credentials
 * and policy, tls.c one session. Loop thread only. */

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/* What --tls-cert, --tls-key, --tls-ca, --tls-verify and --tls-only say.
 * TLS is on when cert is set. */
typedef struct {
  const char *cert; /* PEM: the node's certificate (chain) */
  const char *key;  /* PEM: its private key */
  const char *ca;   /* PEM: the CAs whose certificates peers must show */
  int verify;       /* 1 (peer): peers must show a certificate the CA
                       signed, for their host; 0 (none): anything goes */
  int only;         /* 1: refuse plain TCP peers; 0: take both */
} dm__tls_config;

typedef struct {
  struct ssl_ctx_st *ssl; /* OpenSSL's context: credentials and policy */
  int verify, only;       /* as configured */
} dm__tls_ctx;

/* Routes OpenSSL's allocations through dm__malloc and its kin. Only
 * before OpenSSL has allocated anything (first thing in main): 0, or
 * DM_EINVAL when it is too late. */
int dm__tls_use_node_alloc(void);

/* Reads the files and sets the policy. 0, or DM_EINVAL with a one-line
 * reason in err naming the option and file at fault. The caller frees
 * *out with dm__tls_ctx_free. */
int dm__tls_ctx_new(const dm__tls_config *cfg, dm__tls_ctx **out, char *err,
                    size_t errlen);
void dm__tls_ctx_free(dm__tls_ctx *t);

typedef struct dm__tls dm__tls;

/* A session of the accepting (server 1) or the initiating side; the
 * initiating side names the peer's host, which its certificate must be
 * for when the context verifies. 0, DM_ENOMEM or DM_EINVAL (a host that
 * cannot be checked). The caller frees *out with dm__tls_free. */
int dm__tls_new(const dm__tls_ctx *ctx, int server, const char *host, dm__tls **out);
void dm__tls_free(dm__tls *t);
/* Ciphertext from the socket. 0 or DM_ENOMEM. */
int dm__tls_feed(dm__tls *t, const void *data, size_t len);
/* Ciphertext fed and not consumed yet. */
size_t dm__tls_buffered(const dm__tls *t);
/* Goes on with the TLS handshake: 1 done, 0 waiting for the peer, or
 * DM_ETLS (dm__tls_why says why). Output may be waiting after any of
 * them, a refusal's alert included. */
int dm__tls_handshake(dm__tls *t);
int dm__tls_up(const dm__tls *t);
/* Up to len bytes of plaintext: how many, 0 when none is there yet,
 * DM_ECLOSED (close_notify) or DM_ETLS. May leave output waiting (a
 * renegotiation, a key update). */
long dm__tls_read(dm__tls *t, void *buf, size_t len);
/* Encrypts what it can of len bytes; *taken says how much. 0 (all taken,
 * or the rest must wait for the peer's input: a renegotiation under way)
 * or DM_ETLS. A write that stopped short goes on with the same bytes. */
int dm__tls_write(dm__tls *t, const void *data, size_t len, size_t *taken);
/* Ciphertext waiting to be sent, and at most max of it appended to b.
 * dm__tls_take: 0, DM_ENOMEM or DM_EIO. */
size_t dm__tls_pending(const dm__tls *t);
int dm__tls_take(dm__tls *t, dm__buf *b, size_t max);
/* Queues close_notify (then dm__tls_take it). */
void dm__tls_close_notify(dm__tls *t);
/* The distribution handshake is over: the peer may renegotiate from now
 * on (TLS 1.2; at most once a minute, keeping its certificate, or the
 * next read or write fails with DM_ETLS). */
void dm__tls_settle(dm__tls *t);
/* The accepting side, once the peer has named itself: its certificate
 * must be for host (a DNS name or an IP address). 0 or DM_ETLS. */
int dm__tls_check_host(dm__tls *t, const char *host);
/* The last failure, and whether it was a certificate's (untrusted,
 * expired, for another name, or none shown). */
const char *dm__tls_why(const dm__tls *t);
int dm__tls_cert_failed(const dm__tls *t);
/* "TLSv1.3" and the like. */
const char *dm__tls_version(const dm__tls *t);

/* ---- conn and dist ---------------------------------------------------------*/
/* One connection after the handshake (conn.c), and the table of them with
 * interned peer names, ticks, the listen socket and epmd (table.c,
 * listen.c), and the handshakes in progress (handshake.c). Loop thread
 * only. */

typedef struct dm__dist dm__dist;
typedef struct dm__conn dm__conn;
typedef struct dm__hs dm__hs;

typedef struct {
  const char *name;        /* --sname or --name argument */
  int longnames;           /* 1 with --name */
  const char *listen_addr; /* IPv4 address to listen on, NULL: any */
  unsigned net_ticktime;   /* seconds, as erl's net_ticktime */
  uint32_t max_packet;     /* larger length prefixes close the connection */
  unsigned handshake_ms;   /* a handshake slower than this, in all, fails */
  size_t max_pending_hs;   /* handshakes at once; past it the oldest goes */
  size_t max_outbuf;       /* bytes queued for one peer before it is dropped */
  size_t read_coalescing;  /* highest SO_RCVLOWAT asked for; 0: never */
  int exit_with_stdin;     /* stop when standard input closes (port owner gone) */
  unsigned epmd_retry_s;   /* the first registration waits this long for epmd */
  /* TLS for every connection, or NULL for plain TCP. The caller's: it
   * outlives the table (freed after dm__dist_free). */
  dm__tls_ctx *tls;
} dm__config;

void dm__config_defaults(dm__config *cfg);

/* What the layer above learns from the table. */
typedef struct {
  /* A packet (not a tick) from peer c. Returns 1 when it was a message
   * (SEND, REG_SEND or ALIAS_SEND), which read coalescing counts, else 0. */
  int (*packet)(void *ud, dm__conn *c, const char *pkt, size_t len);
  /* The last connection to the peer with this interned name closed. */
  void (*peer_lost)(void *ud, uint32_t peer);
  /* epmd took the name for the first time: the node is reachable. */
  void (*published)(void *ud);
  /* The first registration failed for good: the name is taken, or epmd
   * stayed away for epmd_retry_s. The node cannot be reached. */
  void (*unpublished)(void *ud);
  /* A connection to the peer with this interned name is up (ok 1: either
   * side made it), or the attempt this node made failed (ok 0). May be
   * NULL. */
  void (*connected)(void *ud, uint32_t peer, int ok);
} dm__dist_ops;

/* Counters of the distribution layer, shown by `stats`; the loop thread
 * writes them. connections_accepted counts accepted handshakes that
 * completed and connections_initiated the ones this node made;
 * handshakes_* count both sides, handshake_failures every one that did
 * not complete (failed, timed out or dropped); handshakes_pending is a
 * gauge. Packets for a node being connected to wait (connect_queued) and
 * are dropped when the connection fails or their queue is full
 * (connect_dropped). accept_backoffs counts the pauses in accepting for
 * want of a file descriptor. With TLS: tls_handshakes counts the TLS
 * sessions set up, and the refused ones are counted by why: a plain TCP
 * peer (tls_plain_refused), a certificate untrusted, expired, for another
 * name or missing (tls_cert_refused), any other TLS failure, the peer's
 * alerts included (tls_failed), and a TLS handshake that stalled until
 * the deadline (tls_timed_out). */
#define DM__DIST_STATS_MAP(X)                                                  \
  X(connections_accepted)                                                      \
  X(connections_initiated)                                                     \
  X(connects_failed)                                                           \
  X(connect_queued)                                                            \
  X(connect_dropped)                                                           \
  X(handshake_failures)                                                        \
  X(handshakes_completed)                                                      \
  X(handshakes_failed)                                                         \
  X(handshakes_timed_out)                                                      \
  X(handshakes_pending)                                                        \
  X(connections_closed)                                                        \
  X(packets_in)                                                                \
  X(reads)                                                                     \
  X(lowat_releases)                                                            \
  X(packets_out)                                                               \
  X(bytes_in)                                                                  \
  X(bytes_out)                                                                 \
  X(ticks_in)                                                                  \
  X(ticks_out)                                                                 \
  X(oversized_packets)                                                         \
  X(peers_timed_out)                                                           \
  X(outbuf_overflows)                                                          \
  X(epmd_registrations)                                                        \
  X(accept_backoffs)                                                           \
  X(tls_handshakes)                                                            \
  X(tls_plain_refused)                                                         \
  X(tls_cert_refused)                                                          \
  X(tls_failed)                                                                \
  X(tls_timed_out)

typedef struct {
#define DM__STATS_FIELD(name) uint64_t name;
  DM__DIST_STATS_MAP(DM__STATS_FIELD)
#undef DM__STATS_FIELD
} dm__dist_stats;

/* How a connection tells the table that it closed (table.c gives it). */
typedef void (*dm__conn_closed_fn)(dm__dist *d, dm__conn *c);

struct dm__conn {
  uv_tcp_t tcp;
  dm__dist *dist;
  dm__tls *tls; /* NULL on plain TCP */
  dm__conn_closed_fn closed;
  uint32_t peer;  /* interned node name of the peer */
  uint64_t flags; /* the distribution flags the peer advertised */
  size_t index;   /* position in dist->conns */
  dm__frame_reader fr;
  dm__buf out;      /* queued, not yet handed to the kernel */
  size_t out_off;   /* TLS: bytes of out already encrypted */
  dm__buf wire;     /* TLS: ciphertext of out, not yet handed to the kernel */
  dm__buf inflight; /* owned by the uv_write in progress */
  uv_write_t wreq;
  int writing, closing, dirty;
  int tls_stalled; /* TLS: a write waits for the peer (a renegotiation) */
  uint64_t last_read, last_write; /* loop time, ms */
  dm__conn *next_dirty;
  char *rbuf;
  unsigned rd_msgs;    /* messages (not monitors, links, ticks) in that read */
  size_t lowat;        /* SO_RCVLOWAT in force; 1 is the kernel's default */
  uint64_t held_ns;    /* with lowat > 1: when the last read happened */
};

struct dm__dist {
  uv_loop_t *loop;
  dm__config cfg;
  ei_cnode ec;
  const dm__dist_ops *ops;
  void *ud;
  uint32_t listen_ip; /* IPv4, network order (INADDR_ANY: all) */
  int listen_fd, port;
  int epmd_fd; /* -1 while not published */
  int published;
  uint64_t publish_since; /* loop ms of the first registration attempt */
  int handles; /* the loop handles below are initialised */

  uv_poll_t epmd_poll;
  uv_timer_t publish_timer;
  uv_timer_t tick_timer;
  uv_timer_t lowat_timer; /* runs while a peer's low-water mark is up */
  uv_poll_t listen_poll;  /* the listen socket, readable: accept */
  int listening;          /* listen_poll is initialised */
  uv_timer_t accept_timer;    /* out of descriptors: when to accept again */
  unsigned accept_backoff_ms; /* the pause in force; 0 while accepting */
  int stopping;

  dm__hs *hs_head, *hs_tail; /* pending handshakes, oldest first */
  size_t nhs;                /* of both sides */
  size_t nhs_accepting;      /* of them, accepted ones (the bounded ones) */
  uint16_t epmd_port;        /* $ERL_EPMD_PORT or 4369 */
  uv_timer_t hs_timer; /* the oldest pending handshake's deadline */
  dm__tls_ctx *tls;    /* cfg.tls */
  /* Where the handshake's challenges come from: getrandom, set by
   * dm__dist_init. Only a fuzz target replaces it, with a fixed one, so
   * that its inputs can carry a correct digest. 0 or a negative error. */
  int (*challenge)(uint32_t *out);

  dm__conn **conns;
  size_t nconns, capconns;
  dm__conn *dirty; /* connections with output queued this iteration */

  char **peer_names; /* interned node names, index = peer */
  size_t npeer_names, cappeer_names;
  /* Open addressing over peer_names by hash: index + 1, 0 for empty.
   * A power of two, at most half full. */
  uint32_t *name_slots;
  size_t name_cap;
  dm__conn **conn_of; /* by peer: its connection, or NULL (cappeer_names long) */

  dm__dist_stats stats;
};

/* conn.c: one connection. It reports packets to d->ops and its close to
 * `closed`; it never looks at the table. */
/* Serves fd (owned from now on, closed on failure), over the TLS session
 * tls unless NULL (owned too). 0 or an error. */
int dm__conn_open(dm__dist *d, int fd, uint32_t peer, dm__conn_closed_fn closed,
                  dm__tls *tls, dm__conn **out);
/* TLS: serves what the session holds already (plaintext that came with
 * the end of the handshake), as if it had just been read. */
void dm__conn_pump(dm__conn *c);
/* Queues bytes; a peer whose queue passes max_outbuf is dropped. */
int dm__conn_write(dm__conn *c, const char *data, size_t len);
/* The same for a malloc'd buffer of cap bytes: when nothing is queued,
 * the connection takes the buffer itself (*data becomes NULL, and the
 * connection frees it) rather than copying it, so a 150 MB reply is not
 * held twice. Otherwise it is copied and stays the caller's. */
int dm__conn_write_owned(dm__conn *c, char **data, size_t len, size_t cap);
void dm__conn_close(dm__conn *c, const char *why);
/* Hands every queued byte to the kernel; once per loop iteration. */
void dm__conn_flush_all(dm__dist *d);
/* A raised read low-water mark of a peer quiet since `now_ns` - 0.5 ms
 * goes back to 1. Returns 1 while the mark stays raised. */
int dm__conn_lowat_release(dm__conn *c, uint64_t now_ns);

/* table.c: the table. */
/* Sets up ei's node identity and the table; ops receive what peers send.
 * 0 or a negative error (logged). */
int dm__dist_init(dm__dist *d, uv_loop_t *loop, const dm__config *cfg,
                  const char *cookie, const dm__dist_ops *ops, void *ud);
/* Starts ticking. */
void dm__dist_start(dm__dist *d);
/* Closes every connection and the table's handles. */
void dm__dist_stop(dm__dist *d);
/* After uv_run has returned. */
void dm__dist_free(dm__dist *d);
/* Interns a node name; its index or a negative error. */
int dm__dist_intern(dm__dist *d, const char *name);
/* The connection to a node, or NULL. */
dm__conn *dm__dist_conn(dm__dist *d, const char *nodename);
/* Serves a socket whose handshake with the peer named `peer`, which
 * advertised `flags`, completed; tls is its session, or NULL (either is
 * owned from now on). */
int dm__dist_adopt(dm__dist *d, int fd, const char *peer, uint64_t flags,
                   dm__tls *tls);
/* Queues a packet to the node named `to`. 0, or DM_ECLOSED when no
 * connection to it exists. */
int dm__dist_send(dm__dist *d, const char *to, const char *pkt, size_t len);
/* The same with dm__conn_write_owned: *pkt may be taken. */
int dm__dist_send_owned(dm__dist *d, const char *to, char **pkt, size_t len,
                        size_t cap);
/* connect.c: the same, but without a connection one is made (as a BEAM
 * node's send does): the packet waits, bounded by max_outbuf, until the handshake
 * completes, and is dropped (counted) if it fails. 0, DM_ECLOSED (a name
 * that cannot be connected to, or a full queue) or DM_ENOMEM. */
int dm__dist_send_connect(dm__dist *d, const char *to, const char *pkt,
                          size_t len);
/* Connects to the node named `name` unless connected or connecting
 * already. 1: connected already; 0: ops->connected tells how it goes
 * (perhaps before this returns); DM_EINVAL (not a node name, or this
 * node's own) or DM_ENOMEM. */
int dm__dist_connect(dm__dist *d, const char *name);

/* The handshakes (handshake.c: what both sides share; accept.c: the
 * accepting side; connect.c: the initiating side, with the epmd lookup).
 * Each is a state machine on the loop, within a deadline for the whole of
 * it (handshake_ms); pending ones are listed oldest first, which is also
 * the order of their deadlines. */

/* A handshake message: a send_name with the longest name, its length
 * prefix aside (2 bytes on plain TCP, 4 inside TLS). */
#define DM__HS_NAME_HEAD 15
#define DM__HS_MAX_MSG (DM__HS_NAME_HEAD + MAXNODELEN)

enum { DM__HS_ACCEPT, DM__HS_CONNECT };

/* n bytes big-endian, as every handshake field is. put returns the end. */
static inline unsigned char *dm__put_be(unsigned char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
  return p + n;
}
static inline uint64_t dm__get_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

struct dm__hs {
  uv_poll_t poll;      /* the node's socket, once there is one */
  uv_poll_t epmd_poll; /* connect: the port query to the peer's epmd */
  uv_getaddrinfo_t gai;
  dm__dist *dist;
  dm__hs *prev, *next; /* pending ones, oldest first */
  int fd, epmd_fd;     /* -1 when there is none (or the table has it) */
  int role, state, events;
  /* What its side does with a message, and with the socket turning
   * writable (NULL: nothing more than writing what is queued). */
  int (*on_msg)(dm__hs *h, const unsigned char *m, size_t len);
  int (*on_writable)(dm__hs *h);
  int refs; /* handles and requests yet to come back; freed at 0 */
  int polling, epmd_polling, resolving, gone;
  uint64_t deadline; /* loop ms */
  uint32_t challenge;  /* the one this side sent */
  uint64_t peer_flags; /* what the peer advertised */
  int complete_after_write; /* the last message of this side is queued */
  int waiting; /* connect: told nok, waits for the peer's own connection */
  size_t have; /* bytes of the message being read, its length included */
  unsigned char in[4 + DM__HS_MAX_MSG];
  unsigned char out[64 + MAXNODELEN];
  size_t outlen, outoff;
  char peer[MAXNODELEN + 1];
  struct sockaddr_in addr; /* connect: the peer's host */
  unsigned char epmd_in[16];
  size_t epmd_have;
  dm__buf queued; /* connect: packets waiting for the connection */
  size_t nqueued;
  /* TLS: the session (the connection's once complete), the ciphertext not
   * yet sent and how much of it was, whether the first byte was looked at
   * (accept: a plain peer is told apart by it), and what this side does
   * once the session is up (connect: send_name). */
  dm__tls *tls;
  dm__buf cout;
  size_t coff;
  int sniffed;
  int (*on_tls_up)(dm__hs *h);
  char from[48]; /* accept: the peer's address and port, for the log */
};

/* handshake.c */
void dm__hs_init(dm__dist *d);
/* Closes every pending handshake and the deadline timer. */
void dm__hs_stop(dm__dist *d);
/* A new pending handshake of that role, listed last; NULL when out of
 * memory. */
dm__hs *dm__hs_new(dm__dist *d, int role);
/* It failed (counted, logged with why) / it went quietly (superseded):
 * off the list, its handles closed, freed once they are. */
void dm__hs_fail(dm__hs *h, int timed_out, const char *why);
void dm__hs_drop(dm__hs *h);
/* A reference to h dropped; the last frees it (and closes its sockets).
 * dm__hs_on_closed is the close callback of its handles, which drops the
 * reference their closing took. */
void dm__hs_unref(dm__hs *h);
void dm__hs_on_closed(uv_handle_t *handle);
/* Watches fd for the handshake (readable/writable as it needs). */
int dm__hs_watch(dm__hs *h, int fd);
void dm__hs_want(dm__hs *h, int events);
/* Queues one message with its length (2 bytes, 4 inside TLS) / hands
 * what is queued to the kernel (through TLS: encrypted). flush returns 0,
 * or -1 when h is gone (failed, or complete after its last message).
 * send_now sends what it can without waiting: a refusal's last words. */
void dm__hs_queue(dm__hs *h, const void *msg, size_t len);
int dm__hs_flush(dm__hs *h);
void dm__hs_send_now(dm__hs *h);
/* TLS: goes on with the session (its handshake, then the messages in
 * it), as after the socket turned readable. 0, or -1 when h is gone. */
int dm__hs_tls_step(dm__hs *h);
/* TLS: the session failed (dm__tls_why says why): counted by why, its
 * alert sent, and h fails. */
void dm__hs_tls_fail(dm__hs *h);
/* The handshake completed: the table serves the socket, queued packets
 * go out on it, and ops->connected hears of it. */
void dm__hs_complete(dm__hs *h);
/* MD5(cookie ++ decimal challenge), the digest both sides prove the
 * cookie with. */
void dm__hs_digest(dm__dist *d, uint32_t challenge, unsigned char out[16]);
/* Whether got is that digest of challenge, compared in constant time. */
int dm__hs_digest_ok(dm__dist *d, uint32_t challenge, const unsigned char got[16]);
/* A fresh challenge (d->challenge: random, or fixed for the fuzz
 * target). 0 or -1. */
int dm__hs_challenge(dm__dist *d, uint32_t *out);
/* The flags this node advertises, and a check of the peer's: 0, or -1
 * with the missing mandatory ones named in `names`. */
uint64_t dm__hs_our_flags(void);
int dm__hs_check_flags(uint64_t flags, char *names, size_t size);
/* Appends the send_name/challenge body common to both sides: 'N',
 * flags, [challenge,] creation, name length, name. Returns its length. */
size_t dm__hs_enc_name(dm__dist *d, unsigned char *out, int with_challenge,
                       uint32_t challenge);
/* The pending handshake with `peer`: the node's own to it, else one it
 * is accepting from it (its name known), else NULL. A message for a peer
 * with either waits on it, so that no second connection is made. */
dm__hs *dm__hs_pending(dm__dist *d, const char *peer);
/* The pending handshake the node made to `peer`, or NULL. */
dm__hs *dm__hs_connecting(dm__dist *d, const char *peer);
/* Moves the packets queued on `from` to `to` (an accepted handshake
 * from the node `from` was connecting to). */
void dm__hs_take_queue(dm__hs *to, dm__hs *from);

/* connect.c: runs the initiating handshake with `peer` on a socket
 * already connected to it (owned from now on): what connecting does once
 * the TCP connect is through. For the fuzz target, which has no epmd to
 * ask. 0 or an error (the socket is closed). */
int dm__hs_connect_socket(dm__dist *d, int fd, const char *peer);

/* accept.c: runs the handshake on an accepted, non-blocking socket
 * (owned from now on); on success the table serves it. At most
 * cfg.max_pending_hs accepted ones at once: a new one drops the oldest.
 * 0 or an error (the socket is closed). */
int dm__hs_begin(dm__dist *d, int fd);


/* listen.c: the listen socket, the accepting of connections, and epmd. */
/* Listens on cfg's address; accepting starts with dm__listen_start. */
int dm__listen_init(dm__dist *d);
/* Starts accepting and publishes (retrying while epmd is away). */
int dm__listen_start(dm__dist *d);
void dm__listen_stop(dm__dist *d);
void dm__listen_free(dm__dist *d);

#endif
