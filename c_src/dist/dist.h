/* dist: the distribution protocol. Frames, control messages, the
 * gen_server envelope and, later, connections. Depends on base and term. */
#ifndef DM_DIST_H
#define DM_DIST_H

#include <ei.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

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
  erlang_ref ref;               /* MONITOR_P, DEMONITOR_P */
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
enum { DM__GEN_OTHER = 0, DM__GEN_CALL, DM__GEN_CAST };

typedef struct {
  int kind;
  erlang_pid from; /* call: the caller */
  const char *tag; /* call: its tag, encoded without version byte */
  size_t tag_len;
  int has_mref;     /* the tag carries the caller's monitor reference */
  erlang_ref mref;  /* ... which is this */
  const char *req;  /* call or cast request, encoded without version */
  size_t req_len;
} dm__gen;

/* Decodes the message of a dm__ctrl (already validated by dm__ctrl_decode)
 * as `{'$gen_call', {Pid, Tag}, Req}`, `{'$gen_cast', Req}` or other. Tags
 * of the OTP 24+ form `[alias | Mref]` and the older `Mref` both give mref.
 * Always succeeds; malformed envelopes are DM__GEN_OTHER. */
void dm__gen_decode(const char *msg, size_t len, dm__gen *out);

/* Encoders. Each appends to x, which the caller owns. A packet is opened
 * with dm__pkt_begin and closed with dm__pkt_end (which writes the length
 * prefix); the control tuple and message go in between. They return 0 or
 * DM_ENOMEM. */
int dm__pkt_begin(ei_x_buff *x);
int dm__pkt_end(ei_x_buff *x);
/* Control for SEND to `to`; the message (with version) follows. */
int dm__enc_send_ctrl(ei_x_buff *x, const erlang_pid *to);
/* A complete reply packet `{Tag, Reply}` to a gen call; reply is an encoded
 * term without version byte. */
int dm__enc_reply(ei_x_buff *x, const dm__gen *g, const char *reply,
                  size_t reply_len);
/* EXIT {3, From, To, Reason}; reason encoded without version byte. */
int dm__enc_exit(ei_x_buff *x, const erlang_pid *from, const erlang_pid *to,
                 const char *reason, size_t reason_len);
/* MONITOR_P_EXIT {21, FromName | FromPid, To, Ref, Reason}: from_name when
 * non-NULL, else from_pid. Reason is encoded, without version byte. */
int dm__enc_monitor_p_exit(ei_x_buff *x, const char *from_name,
                           const erlang_pid *from_pid, const erlang_pid *to,
                           const erlang_ref *ref, const char *reason,
                           size_t reason_len);
/* The atom noproc, encoded. */
#define DM__NOPROC "\x77\x06noproc", 8
/* UNLINK_ID_ACK {36, Id, From, To}. */
int dm__enc_unlink_id_ack(ei_x_buff *x, unsigned long long id,
                          const erlang_pid *from, const erlang_pid *to);

#endif
