/* OTP system messages ({system, From, Req}, as sys.erl sends them): what
 * a request asks for, the refusal every process of the node gives the
 * ones it does not serve, and the frame of a get_status answer in the
 * shape gen_server gives it, so sys:get_status shows a C-node process as
 * it shows a gen_server. Loop thread only. */
#include <string.h>

#include "dm.h"
#include "node/node.h"

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

int dm__sys_request(const char *req, size_t len) {
  if (dm__term_is_atom(req, len, "get_state"))
    return DM__SYS_GET_STATE;
  if (dm__term_is_atom(req, len, "get_status"))
    return DM__SYS_GET_STATUS;
  return DM__SYS_OTHER;
}

static int is_atom_type(int type) {
  return type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT ||
         type == ERL_ATOM_UTF8_EXT || type == ERL_SMALL_ATOM_UTF8_EXT;
}

/* Slices of the request a refusal names. */
typedef struct {
  size_t at, len;         /* the request itself, or its tag */
  size_t cmd_at, cmd_len; /* the debug command's atom; cmd_len 0: none */
} what;

/* What a refusal names: the request's atom (suspend), the tag of a tuple
 * ({replace_state, F} -> replace_state), {debug, K} for sys's debug
 * commands ({debug, {trace, true}} -> {debug, trace}), else the request
 * itself. */
static void what_of(const char *req, size_t len, what *w) {
  int i = 0, arity, type, size;
  memset(w, 0, sizeof *w);
  w->len = len;
  if (ei_get_type(req, &i, &type, &size) < 0 || is_atom_type(type))
    return;
  if (ei_decode_tuple_header(req, &i, &arity) < 0 || arity < 1 ||
      ei_get_type(req, &i, &type, &size) < 0 || !is_atom_type(type))
    return;
  size_t s = (size_t)i, e = s;
  if (dm__term_skip(req, len, &e))
    return;
  w->at = s;
  w->len = e - s;
  if (arity != 2 || !dm__term_is_atom(req + s, e - s, "debug"))
    return;
  /* {debug, K} or {debug, {K, _}}: K names the command. */
  int j = (int)e, k;
  if (ei_decode_tuple_header(req, &j, &k) < 0 || k < 1)
    j = (int)e;
  size_t ks = (size_t)j, ke = ks;
  if (ei_get_type(req, &j, &type, &size) == 0 && is_atom_type(type) &&
      dm__term_skip(req, len, &ke) == 0) {
    w->cmd_at = ks;
    w->cmd_len = ke - ks;
  }
}

int dm__enc_sys_refusal(ei_x_buff *x, const char *req, size_t len) {
  static const char head[] = "\x68\x02" DM__A_ERROR "\x68\x02\x77\x0d"
                             "not_supported";
  what w;
  what_of(req, len, &w);
  ENC(ei_x_append_buf(x, head, (int)DM__ALEN(head)));
  if (w.cmd_len)
    ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_append_buf(x, req + w.at, (int)w.len));
  if (w.cmd_len)
    ENC(ei_x_append_buf(x, req + w.cmd_at, (int)w.cmd_len));
  return 0;
}

void dm__sys_refuse(dm__node *n, const dm__gen *g) {
  ei_x_buff *x = dm__reply_begin(n, g);
  dm__reply_end(n, g,
                x ? dm__enc_sys_refusal(x, g->req, g->req_len) : DM_ENOMEM);
}

/* {status, Self, {module, gen_server}, [PDict, running, Parent, Debug,
 *  [{header, Header},
 *   {data, [{"Status", running}, {"Parent", Parent}, {"Logged events", []}]},
 *   {data, [Item...]}]]}
 * as gen_server:format_status/2 has it; the items follow. */
int dm__enc_sys_status_begin(ei_x_buff *x, const erlang_pid *self,
                             const erlang_pid *parent, const char *header,
                             int nitems) {
  ENC(ei_x_encode_tuple_header(x, 4));
  ENC(ei_x_encode_atom(x, "status"));
  ENC(ei_x_encode_pid(x, self));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "module"));
  ENC(ei_x_encode_atom(x, "gen_server"));
  ENC(ei_x_encode_list_header(x, 5));
  ENC(ei_x_encode_empty_list(x)); /* the process dictionary */
  ENC(ei_x_encode_atom(x, "running"));
  ENC(ei_x_encode_pid(x, parent));
  ENC(ei_x_encode_empty_list(x)); /* no debug options */
  ENC(ei_x_encode_list_header(x, 3));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "header"));
  ENC(ei_x_encode_string(x, header));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "data"));
  ENC(ei_x_encode_list_header(x, 3));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_string(x, "Status"));
  ENC(ei_x_encode_atom(x, "running"));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_string(x, "Parent"));
  ENC(ei_x_encode_pid(x, parent));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_string(x, "Logged events"));
  ENC(ei_x_encode_empty_list(x));
  ENC(ei_x_encode_empty_list(x));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "data"));
  ENC(ei_x_encode_list_header(x, nitems));
  return 0;
}

int dm__enc_sys_item(ei_x_buff *x, const char *label) {
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_string(x, label));
  return 0;
}

int dm__enc_sys_status_end(ei_x_buff *x) {
  /* The tails of the items, of the formatted status and of the list. */
  ENC(ei_x_encode_empty_list(x));
  ENC(ei_x_encode_empty_list(x));
  ENC(ei_x_encode_empty_list(x));
  return 0;
}
