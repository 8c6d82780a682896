/* libFuzzer target: everything a peer's bytes reach before a process sees
 * them. The input is a byte stream cut into distribution frames; each
 * frame goes through the control decoder, its message through the
 * gen_server envelope decoder, and the request's pieces through the
 * parsers a manager uses (opts, canonical id, response forms). Any crash,
 * sanitizer report or leak is a finding. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <ei.h>

#include "base/base.h"
#include "term/term.h"
#include "dist/dist.h"
#include "dm.h"
#include "dm/mgr.h"

static void pieces(const char *req, size_t len) {
  dm__buf canon = DM__BUF_INIT;
  dm__child_opts o = {.timeout_ms = 1000, .lull = 1.1f};
  dm__response r;
  ei_x_buff d;
  size_t end = 0;
  if (dm__term_skip(req, len, &end) || end != len)
    return;
  dm__term_depth_ok(req, len, DM__TERM_MAX_DEPTH);
  if (dm__canon(req, len, &canon) == 0) {
    size_t k = 0;
    /* The canonical form must itself be a whole term. */
    if (dm__term_skip(canon.data, canon.len, &k) || k != canon.len)
      __builtin_trap();
  }
  dm__buf_free(&canon);
  if (ei_x_new(&d) == 0) {
    dm__opts_parse(req, len, &o, &d);
    ei_x_free(&d);
  }
  dm__response_parse(req, len, &r);
  /* Each element of a request tuple, as the manager splits it. */
  int i = 0, arity;
  if (ei_decode_tuple_header(req, &i, &arity) == 0) {
    size_t k = (size_t)i;
    for (int e = 0; e < arity && e < 4; e++) {
      size_t s = k;
      if (dm__term_skip(req, len, &k))
        break;
      dm__buf c2 = DM__BUF_INIT;
      dm__canon(req + s, k - s, &c2);
      dm__buf_free(&c2);
      dm__response_parse(req + s, k - s, &r);
    }
  }
}

static int on_packet(void *ud, const char *pkt, size_t len) {
  dm__ctrl c;
  dm__gen g;
  (void)ud;
  if (len == 0 || dm__ctrl_decode(pkt, len, &c) != 0 || !c.msg)
    return 0;
  dm__gen_decode(c.msg, c.msg_len, &g);
  if (g.kind != DM__GEN_OTHER)
    pieces(g.req, g.req_len);
  else
    pieces(c.msg + 1, c.msg_len - 1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int inited;
  if (!inited) {
    ei_init();
    inited = 1;
  }
  dm__frame_reader fr;
  dm__frame_init(&fr, 1 << 20);
  /* Fed in two reads, split at a point the input chooses, so partial
   * frames are exercised too. */
  size_t cut = size ? data[0] % (size + 1) : 0;
  if (dm__frame_feed(&fr, (const char *)data, cut, on_packet, NULL) == 0)
    dm__frame_feed(&fr, (const char *)data + cut, size - cut, on_packet, NULL);
  dm__frame_free(&fr);
  return 0;
}
