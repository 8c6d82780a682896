/* pingpong: the three behaviours of Tarearbol's own DynamicManager test
 * suite in one, so that suite can be replayed against the C node. */
#include <string.h>

#include "dm.h"

static const char PONG[] = "\x6d\x00\x00\x00\x04pong"; /* <<"pong">> */

/* The payload #{value => V, pid => P}: where V and P start. */
typedef struct {
  const char *value, *pid;
  size_t value_len, pid_len;
} pp_map;

static int skip(const char *b, int *i) { return ei_skip_term(b, i); }

static int read_map(const dm_term *t, pp_map *m) {
  int i = 0, arity;
  char key[MAXATOMLEN_UTF8];
  memset(m, 0, sizeof *m);
  if (ei_decode_map_header(t->data, &i, &arity) < 0)
    return -1;
  for (int k = 0; k < arity; k++) {
    if (ei_decode_atom(t->data, &i, key) < 0)
      return -1;
    int start = i;
    if (skip(t->data, &i) < 0)
      return -1;
    if (strcmp(key, "value") == 0) {
      m->value = t->data + start;
      m->value_len = (size_t)(i - start);
    } else if (strcmp(key, "pid") == 0) {
      m->pid = t->data + start;
      m->pid_len = (size_t)(i - start);
    }
  }
  return m->value && m->pid ? 0 : -1;
}

static void write_map(ei_x_buff *out, const char *value, size_t vlen,
                      const char *pid, size_t plen) {
  ei_x_encode_map_header(out, 2);
  ei_x_encode_atom(out, "value");
  ei_x_append_buf(out, value, (int)vlen);
  ei_x_encode_atom(out, "pid");
  ei_x_append_buf(out, pid, (int)plen);
}

static int specs(dm_ctx *ctx, ei_x_buff *out) {
  (void)ctx;
  ei_x_encode_map_header(out, 1);
  ei_x_encode_atom(out, "foo");
  ei_x_encode_map_header(out, 2);
  ei_x_encode_atom(out, "payload");
  write_map(out, "\x61\x00", 2, "\x77\x03nil", 5);
  ei_x_encode_atom(out, "timeout");
  ei_x_encode_long(out, 200);
  return DM_CB_OK;
}

/* The pid inside an id that is term_to_binary(Pid), if it is one. */
static int pid_in_id(const dm_term *id, erlang_pid *pid) {
  int i = 0, version;
  long size;
  int type, len;
  if (ei_get_type(id->data, &i, &type, &len) < 0 || type != ERL_BINARY_EXT)
    return -1;
  const char *bin = id->data + 5;
  size = len;
  i = 0;
  if (size < 2 || ei_decode_version(bin, &i, &version) < 0)
    return -1;
  return ei_decode_pid(bin, &i, pid);
}

static int perform(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                   ei_x_buff *out) {
  erlang_pid pid;
  pp_map m;
  if (pid_in_id(id, &pid) == 0) {
    long long t;
    int i = 0;
    dm_send(ctx, &pid, PONG, sizeof PONG - 1);
    if (ei_decode_longlong(payload->data, &i, &t) == 0) {
      ei_x_encode_tuple_header(out, 2);
      ei_x_encode_tuple_header(out, 2);
      ei_x_encode_atom(out, "timeout");
      ei_x_encode_longlong(out, t * 10);
      ei_x_encode_longlong(out, t * 10);
    } else {
      ei_x_encode_tuple_header(out, 2);
      ei_x_encode_atom(out, "ok");
      ei_x_append_buf(out, PONG, sizeof PONG - 1);
    }
    return DM_CB_OK;
  }
  if (read_map(payload, &m) == 0) {
    int i = 0;
    if (ei_decode_pid(m.pid, &i, &pid) == 0) {
      dm_send(ctx, &pid, PONG, sizeof PONG - 1);
      ei_x_encode_atom(out, "halt");
      return DM_CB_OK;
    }
  }
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "ok");
  ei_x_append_buf(out, payload->data, (int)payload->len);
  return DM_CB_OK;
}

static int call(dm_ctx *ctx, const dm_term *msg, const erlang_pid *from,
                const dm_term *id, const dm_term *payload, ei_x_buff *out) {
  char a[MAXATOMLEN_UTF8];
  int i = 0;
  pp_map m;
  (void)ctx;
  (void)from;
  if (ei_decode_atom(msg->data, &i, a) == 0 && strcmp(a, "ping") == 0) {
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "pong");
    ei_x_encode_tuple_header(out, 2);
    ei_x_append_buf(out, id->data, (int)id->len);
    if (read_map(payload, &m) == 0)
      ei_x_append_buf(out, m.value, (int)m.value_len);
    else
      ei_x_append_buf(out, payload->data, (int)payload->len);
    return DM_CB_OK;
  }
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "ok");
  ei_x_append_buf(out, payload->data, (int)payload->len);
  return DM_CB_OK;
}

static int cast(dm_ctx *ctx, const dm_term *msg, const dm_term *id,
                const dm_term *payload, ei_x_buff *out) {
  char a[MAXATOMLEN_UTF8];
  int i = 0, arity;
  pp_map m;
  (void)ctx;
  (void)id;
  if (read_map(payload, &m) == 0) {
    if (ei_decode_atom(msg->data, &i, a) == 0 && strcmp(a, "+") == 0) {
      long long v;
      int k = 0;
      if (ei_decode_longlong(m.value, &k, &v) == 0) {
        ei_x_buff n;
        ei_x_new(&n);
        ei_x_encode_longlong(&n, v + 1);
        ei_x_encode_tuple_header(out, 2);
        ei_x_encode_atom(out, "ok");
        write_map(out, n.buff, (size_t)n.index, m.pid, m.pid_len);
        ei_x_free(&n);
        return DM_CB_OK;
      }
    }
    i = 0;
    if (ei_decode_tuple_header(msg->data, &i, &arity) == 0 && arity == 2 &&
        ei_decode_atom(msg->data, &i, a) == 0 && strcmp(a, "down") == 0) {
      ei_x_encode_tuple_header(out, 2);
      ei_x_encode_atom(out, "ok");
      write_map(out, m.value, m.value_len, msg->data + i, msg->len - (size_t)i);
      return DM_CB_OK;
    }
  }
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "ok");
  ei_x_append_buf(out, payload->data, (int)payload->len);
  return DM_CB_OK;
}

/* No .options: it reads none, so --manager refuses any key that is not
 * the manager's. */
const dm_behaviour dm__pingpong_behaviour = {
    .name = "pingpong",
    .children_specs = specs,
    .perform = perform,
    .call = call,
    .cast = cast,
};
