/* Requests that reach other nodes, asked of tarearbol_cnode by a peer:
 * {connect, Node} (true | false, as net_kernel:connect_node/1),
 * {ping, Node} (pong | pang, as net_adm:ping/1) and
 * {call, Node, NameOrPid, Request[, TimeoutMs]} ({ok, Reply} or
 * {error, noconnection | timeout | Reason}), a gen_server call the node
 * makes itself: it monitors the callee, as gen:call does, so a missing or
 * dying callee answers at once with the monitor's reason. Each waits for
 * the connection first when there is none. Loop thread only. */
#include <string.h>

#include "dm.h"
#include "node/node.h"

enum { R_CONNECT, R_PING, R_CALL };

#define DEFAULT_CALL_MS 5000

struct dm__remote {
  dm__replyto *r; /* the peer process that asked */
  int kind;
  uint32_t peer;  /* the node asked about */
  int sent;       /* the call and its monitor are out */
  int by_pid;     /* the callee is to_pid, not to_name */
  erlang_pid to_pid;
  char to_name[MAXATOMLEN_UTF8];
  erlang_ref ref; /* the call's tag and its monitor */
  uint64_t deadline;
  char *req; /* the request, until sent */
  size_t req_len;
};

#define T_TRUE "\x77\x04" "true"
#define T_FALSE "\x77\x05" "false"
#define T_PONG "\x77\x04" "pong"
#define T_PANG "\x77\x04" "pang"
#define T_ERR "\x68\x02" DM__A_ERROR
#define T_TIMEOUT T_ERR "\x77\x07" "timeout"
#define T_NOCONN T_ERR DM__A_NOCONNECTION

static void self_pid(dm__node *n, erlang_pid *out) {
  dm__proc_pid(n, dm__nametab_get(&n->names, "tarearbol_cnode"), out);
}

/* Answers rm's asker with term and forgets rm (swap-removed). */
static void answer(dm__node *n, size_t i, const char *term, size_t len) {
  dm__remote *rm = &n->remotes[i];
  dm__reply_to(n, rm->r, term, len, 0);
  dm__free(rm->r);
  dm__free(rm->req);
  n->remotes[i] = n->remotes[--n->nremotes];
}

/* How a request that could not be made answers. */
static void answer_failed(dm__node *n, size_t i, const char *call_term, size_t len) {
  switch (n->remotes[i].kind) {
  case R_CONNECT:
    answer(n, i, T_FALSE, DM__ALEN(T_FALSE));
    break;
  case R_PING:
    answer(n, i, T_PANG, DM__ALEN(T_PANG));
    break;
  default:
    answer(n, i, call_term, len);
  }
}

static const char *peer_name(dm__node *n, const dm__remote *rm) {
  return n->dist.peer_names[rm->peer];
}

static void demonitor(dm__node *n, dm__remote *rm) {
  erlang_pid self;
  self_pid(n, &self);
  dm__node_send_monitor(n, DM__OP_DEMONITOR_P, &self, peer_name(n, rm),
                        rm->by_pid ? NULL : rm->to_name, &rm->to_pid, &rm->ref);
}

/* The connection is up: a connect is answered, a ping or a call goes
 * out (monitor first, then the call, as gen:call does). */
static void go(dm__node *n, size_t i) {
  dm__remote *rm = &n->remotes[i];
  erlang_pid self;
  if (rm->kind == R_CONNECT) {
    answer(n, i, T_TRUE, DM__ALEN(T_TRUE));
    return;
  }
  self_pid(n, &self);
  if (ei_make_ref(&n->dist.ec, &rm->ref) < 0) {
    answer_failed(n, i, T_ERR DM__A_ENOMEM, DM__ALEN(T_ERR DM__A_ENOMEM));
    return;
  }
  const char *node = peer_name(n, rm), *name = rm->by_pid ? NULL : rm->to_name;
  if (dm__node_send_monitor(n, DM__OP_MONITOR_P, &self, node, name, &rm->to_pid, &rm->ref) ||
      dm__node_send_call(n, &self, node, name, &rm->to_pid, &rm->ref, rm->req, rm->req_len)) {
    answer_failed(n, i, T_NOCONN, DM__ALEN(T_NOCONN));
    return;
  }
  rm->sent = 1;
  dm__free(rm->req);
  rm->req = NULL;
}

static void on_timer(uv_timer_t *t);

static void arm(dm__node *n) {
  uint64_t now = uv_now(n->loop), next = UINT64_MAX;
  for (size_t i = 0; i < n->nremotes; i++)
    if (n->remotes[i].deadline < next)
      next = n->remotes[i].deadline;
  if (next == UINT64_MAX)
    uv_timer_stop(&n->remote_timer);
  else
    uv_timer_start(&n->remote_timer, on_timer, next > now ? next - now : 0, 0);
}

static void on_timer(uv_timer_t *t) {
  dm__node *n = t->data;
  uint64_t now = uv_now(n->loop);
  for (size_t i = 0; i < n->nremotes;) {
    dm__remote *rm = &n->remotes[i];
    if (rm->deadline > now) {
      i++;
      continue;
    }
    if (rm->sent)
      demonitor(n, rm);
    answer_failed(n, i, T_TIMEOUT, DM__ALEN(T_TIMEOUT));
  }
  arm(n);
}

/* Reads {connect, Node}, {ping, Node} or {call, Node, To, Req[, Ms]}
 * into rm. 0, or -1 when req is not one of them. */
static int parse(dm__node *n, const char *req, size_t len, dm__remote *rm,
                 char *node) {
  int i = 0, arity, type, size;
  char tag[MAXATOMLEN_UTF8];
  long long ms = DEFAULT_CALL_MS;
  if (ei_decode_tuple_header(req, &i, &arity) < 0 || arity < 2 || arity > 5 ||
      ei_decode_atom(req, &i, tag) < 0 || ei_decode_atom(req, &i, node) < 0)
    return -1;
  if (strcmp(tag, "connect") == 0 || strcmp(tag, "ping") == 0) {
    if (arity != 2)
      return -1;
    rm->kind = tag[0] == 'c' ? R_CONNECT : R_PING;
    if (rm->kind == R_PING) {
      /* net_adm:ping is a call of net_kernel's is_auth. */
      ei_x_buff x;
      if (ei_x_new(&x) < 0)
        return -1;
      if (ei_x_encode_tuple_header(&x, 2) < 0 || ei_x_encode_atom(&x, "is_auth") < 0 ||
          ei_x_encode_atom(&x, n->dist.ec.thisnodename) < 0 ||
          !(rm->req = dm__malloc((size_t)x.index))) {
        ei_x_free(&x);
        return -1;
      }
      memcpy(rm->req, x.buff, (size_t)x.index);
      rm->req_len = (size_t)x.index;
      ei_x_free(&x);
      strcpy(rm->to_name, "net_kernel");
    }
    ms = n->dist.cfg.handshake_ms + 1000;
  } else if (strcmp(tag, "call") == 0 && (arity == 4 || arity == 5)) {
    rm->kind = R_CALL;
    if (ei_get_type(req, &i, &type, &size) < 0)
      return -1;
    if (type == ERL_PID_EXT || type == ERL_NEW_PID_EXT) {
      if (ei_decode_pid(req, &i, &rm->to_pid) < 0 || strcmp(rm->to_pid.node, node) != 0)
        return -1;
      rm->by_pid = 1;
    } else if (ei_decode_atom(req, &i, rm->to_name) < 0) {
      return -1;
    }
    size_t start = (size_t)i, end = start;
    if (dm__term_skip(req, len, &end))
      return -1;
    i = (int)end;
    if (arity == 5) {
      char inf[16];
      int j = i;
      if (ei_decode_longlong(req, &i, &ms) == 0) {
        if (ms < 0)
          return -1;
      } else if (ei_decode_atom(req, &j, inf) == 0 && strcmp(inf, "infinity") == 0) {
        ms = -1;
      } else {
        return -1;
      }
    }
    if (!(rm->req = dm__malloc(end - start)))
      return -1;
    memcpy(rm->req, req + start, end - start);
    rm->req_len = end - start;
  } else {
    return -1;
  }
  rm->deadline = ms < 0 ? UINT64_MAX : uv_now(n->loop) + (uint64_t)ms;
  return 0;
}

int dm__remote_request(dm__node *n, const dm__gen *g) {
  dm__remote rm;
  char node[MAXATOMLEN_UTF8];
  memset(&rm, 0, sizeof rm);
  if (parse(n, g->req, g->req_len, &rm, node)) {
    dm__free(rm.req);
    return 0;
  }
  int idx = dm__dist_intern(&n->dist, node);
  if (idx < 0 || !(rm.r = dm__replyto_new(g)) ||
      dm__array_grow((void **)&n->remotes, &n->capremotes, n->nremotes + 1,
                     sizeof *n->remotes, 4)) {
    dm__free(rm.r);
    dm__free(rm.req);
    dm__reply(n, g, T_ERR DM__A_ENOMEM, DM__ALEN(T_ERR DM__A_ENOMEM));
    return 1;
  }
  rm.peer = (uint32_t)idx;
  size_t i = n->nremotes++;
  n->remotes[i] = rm;
  /* Listed before connecting: the answer may come at once. */
  int c = dm__dist_connect(&n->dist, node);
  if (c == 1)
    go(n, i);
  else if (c < 0)
    answer_failed(n, i, T_NOCONN, DM__ALEN(T_NOCONN));
  arm(n);
  return 1;
}

void dm__remote_connected(dm__node *n, uint32_t peer, int ok) {
  for (size_t i = n->nremotes; i-- > 0;) {
    if (i >= n->nremotes || n->remotes[i].peer != peer || n->remotes[i].sent)
      continue;
    if (ok)
      go(n, i);
    else
      answer_failed(n, i, T_NOCONN, DM__ALEN(T_NOCONN));
  }
  arm(n);
}

void dm__remote_peer_lost(dm__node *n, uint32_t peer) {
  for (size_t i = n->nremotes; i-- > 0;)
    if (i < n->nremotes && n->remotes[i].peer == peer && n->remotes[i].sent)
      answer_failed(n, i, T_NOCONN, DM__ALEN(T_NOCONN));
  arm(n);
}

static long find(dm__node *n, erlang_ref *ref) {
  for (size_t i = 0; i < n->nremotes; i++)
    if (n->remotes[i].sent && ei_cmp_refs(&n->remotes[i].ref, ref) == 0)
      return (long)i;
  return -1;
}

int dm__remote_reply(dm__node *n, const char *msg, size_t len) {
  int i = 0, arity, v;
  erlang_ref ref;
  if (!n->nremotes || ei_decode_version(msg, &i, &v) < 0 ||
      ei_decode_tuple_header(msg, &i, &arity) < 0 || arity != 2 ||
      ei_decode_ref(msg, &i, &ref) < 0)
    return 0;
  long k = find(n, &ref);
  if (k < 0)
    return 0;
  dm__remote *rm = &n->remotes[k];
  const char *reply = msg + i;
  size_t rlen = len - (size_t)i;
  demonitor(n, rm);
  if (rm->kind == R_PING) {
    int yes = dm__term_is_atom(reply, rlen, "yes");
    answer(n, (size_t)k, yes ? T_PONG : T_PANG, DM__ALEN(T_PONG));
  } else {
    dm__reply_to(n, rm->r, reply, rlen, 1);
    dm__free(rm->r);
    n->remotes[k] = n->remotes[--n->nremotes];
  }
  arm(n);
  return 1;
}

void dm__remote_down(dm__node *n, const dm__ctrl *ctl) {
  erlang_ref ref = ctl->ref;
  long k = find(n, &ref);
  if (k < 0)
    return;
  ei_x_buff x;
  if (n->remotes[k].kind != R_CALL || ei_x_new(&x) < 0) {
    answer_failed(n, (size_t)k, T_NOCONN, DM__ALEN(T_NOCONN));
  } else {
    if (ei_x_encode_tuple_header(&x, 2) < 0 || ei_x_encode_atom(&x, "error") < 0 ||
        ei_x_append_buf(&x, ctl->reason, (int)ctl->reason_len) < 0)
      answer_failed(n, (size_t)k, T_ERR DM__A_ENOMEM, DM__ALEN(T_ERR DM__A_ENOMEM));
    else
      answer(n, (size_t)k, x.buff, (size_t)x.index);
    ei_x_free(&x);
  }
  arm(n);
}

void dm__remote_init(dm__node *n) {
  uv_timer_init(n->loop, &n->remote_timer);
  n->remote_timer.data = n;
}

void dm__remote_stop(dm__node *n) {
  uv_close((uv_handle_t *)&n->remote_timer, NULL);
}

void dm__remote_free(dm__node *n) {
  for (size_t i = 0; i < n->nremotes; i++) {
    dm__free(n->remotes[i].r);
    dm__free(n->remotes[i].req);
  }
  dm__free(n->remotes);
  n->remotes = NULL;
  n->nremotes = n->capremotes = 0;
}
