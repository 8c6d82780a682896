/* The frame reader: turns a byte stream into distribution packets (a 4-byte
 * big-endian length, then the body; length 0 is a tick). Packets wholly
 * inside one read are handed out in place; only a packet split across reads
 * is copied, and its buffer grows with the bytes that actually arrive, so a
 * large length prefix followed by silence costs nothing. */
#ifndef DM_FRAME_H
#define DM_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

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

#endif
