/* counter: trivial and cheap, for tests and benchmarks. The payload is an
 * integer; perform adds one; call `get` replies it; casts {add, K},
 * {sleep, Ms}, {crash, Reason} and halt do what they say. For tests of the
 * runtime, call or cast {respond, R} answers R itself (so every response
 * form can be exercised from BEAM) and call `id` answers the worker's id.
 * Manager options: children=N (ids <<"c1">>..<<"cN">>, payload 0) and
 * specs_delay_ms=T (children_specs takes that long), starting_delay_ms=T
 * (handle_state_change(starting) takes that long).
 * counter_hooks is the same plus: init turns a payload {start_at, N} into
 * N; terminate and handle_timeout write a line to stderr (the node's log)
 * naming the worker. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dm.h"

static int payload_int(const dm_term *p, long long *out) {
  const unsigned char *d = (const unsigned char *)p->data;
  int i = 0;
  /* The common small forms by hand; ei for the rest (bignums). */
  if (p->len == 2 && d[0] == 97) {
    *out = d[1];
    return 0;
  }
  if (p->len == 5 && d[0] == 98) {
    *out = (int32_t)((uint32_t)d[1] << 24 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 8 | d[4]);
    return 0;
  }
  return ei_decode_longlong(p->data, &i, out);
}

static int is_atom(const char *b, size_t len, const char *name) {
  char a[MAXATOMLEN_UTF8];
  int i = 0;
  (void)len;
  return ei_decode_atom(b, &i, a) == 0 && strcmp(a, name) == 0;
}

/* {ok, Payload}: answers the payload and leaves it as it is. */
static int keep(ei_x_buff *out, const dm_term *payload) {
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "ok");
  ei_x_append_buf(out, payload->data, (int)payload->len);
  return DM_CB_OK;
}

static int badarg(ei_x_buff *out) {
  ei_x_encode_atom(out, "badarg");
  return DM_CB_CRASH;
}

static void sleep_ms(long long k);

static int specs(dm_ctx *ctx, ei_x_buff *out) {
  const char *n = dm_option(ctx, "children");
  const char *delay = dm_option(ctx, "specs_delay_ms");
  long count = n ? strtol(n, NULL, 10) : 0;
  /* specs_delay_ms holds the manager in `starting`, so tests can see it. */
  if (delay)
    sleep_ms(strtol(delay, NULL, 10));
  if (count < 0)
    count = 0;
  /* About 30 bytes a child: one allocation instead of one per element. */
  if (count > 0 && (size_t)count < SIZE_MAX / 32)
    (void)dm_x_reserve(out, (size_t)count * 32);
  ei_x_encode_map_header(out, count);
  for (long k = 1; k <= count; k++) {
    char id[32];
    int len = snprintf(id, sizeof id, "c%ld", k);
    ei_x_encode_binary(out, id, len);
    ei_x_encode_list_header(out, 1);
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "payload");
    ei_x_encode_long(out, 0);
    ei_x_encode_empty_list(out);
  }
  return DM_CB_OK;
}

/* {replace, V}: a million of them a second at 1M workers, so the small
 * integer forms by hand, as payload_int reads them; ei for the rest. */
static int replace_int(ei_x_buff *out, long long v) {
  static const char head[] = {104, 2, 119, 7, 'r', 'e', 'p', 'l', 'a', 'c', 'e'};
  char b[sizeof head + 5];
  size_t n = sizeof head;
  memcpy(b, head, n);
  if (v >= 0 && v <= 255) {
    b[n++] = 97;
    b[n++] = (char)v;
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    uint32_t u = (uint32_t)(int32_t)v;
    b[n++] = 98;
    b[n++] = (char)(u >> 24);
    b[n++] = (char)(u >> 16);
    b[n++] = (char)(u >> 8);
    b[n++] = (char)u;
  } else {
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "replace");
    ei_x_encode_longlong(out, v);
    return DM_CB_OK;
  }
  ei_x_append_buf(out, b, (int)n);
  return DM_CB_OK;
}

static int perform(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                   ei_x_buff *out) {
  long long v;
  (void)ctx;
  (void)id;
  if (payload_int(payload, &v) < 0)
    return badarg(out);
  return replace_int(out, v + 1);
}

/* For a 2-tuple {Tag, Arg}: Tag into tag, *rest at Arg. */
static int tagged(const dm_term *msg, char *tag, int *rest) {
  int i = 0, arity;
  if (ei_decode_tuple_header(msg->data, &i, &arity) < 0 || arity != 2 ||
      ei_decode_atom(msg->data, &i, tag) < 0)
    return -1;
  *rest = i;
  return 0;
}

/* {respond, R} answers R and {crash, R} crashes with R, from call or
 * cast alike. Returns 1 when msg was one of them, with *rc set. */
static int scripted(const char *tag, const dm_term *msg, int i, ei_x_buff *out,
                    int *rc) {
  if (strcmp(tag, "respond") != 0 && strcmp(tag, "crash") != 0)
    return 0;
  ei_x_append_buf(out, msg->data + i, (int)(msg->len - (size_t)i));
  *rc = tag[0] == 'c' ? DM_CB_CRASH : DM_CB_OK;
  return 1;
}

static void sleep_ms(long long k) {
  struct timespec ts = {(time_t)(k / 1000), (long)(k % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int call(dm_ctx *ctx, const dm_term *msg, const erlang_pid *from,
                const dm_term *id, const dm_term *payload, ei_x_buff *out) {
  char tag[MAXATOMLEN_UTF8];
  int i;
  long long k;
  (void)ctx;
  (void)from;
  int rc;
  if (tagged(msg, tag, &i) == 0) {
    if (scripted(tag, msg, i, out, &rc))
      return rc;
    if (strcmp(tag, "sleep") == 0) {
      if (ei_decode_longlong(msg->data, &i, &k) < 0 || k < 0 || k > 600000)
        return badarg(out);
      sleep_ms(k);
      goto get;
    }
  }
  if (is_atom(msg->data, msg->len, "id")) {
    ei_x_append_buf(out, id->data, (int)id->len);
    return DM_CB_OK;
  }
  if (is_atom(msg->data, msg->len, "get")) {
  get:
    return keep(out, payload);
  }
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "error");
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "unknown_call");
  ei_x_append_buf(out, msg->data, (int)msg->len);
  return DM_CB_OK;
}

static int cast(dm_ctx *ctx, const dm_term *msg, const dm_term *id,
                const dm_term *payload, ei_x_buff *out) {
  int i = 0, arity;
  long long v, k;
  char tag[MAXATOMLEN_UTF8];
  (void)ctx;
  (void)id;
  if (is_atom(msg->data, msg->len, "halt")) {
    ei_x_encode_atom(out, "halt");
    return DM_CB_OK;
  }
  if (ei_decode_tuple_header(msg->data, &i, &arity) < 0 || arity != 2 ||
      ei_decode_atom(msg->data, &i, tag) < 0)
    goto keep;
  if (strcmp(tag, "add") == 0) {
    if (ei_decode_longlong(msg->data, &i, &k) < 0 || payload_int(payload, &v) < 0)
      return badarg(out);
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "replace");
    ei_x_encode_longlong(out, v + k);
    return DM_CB_OK;
  }
  if (strcmp(tag, "sleep") == 0) {
    if (ei_decode_longlong(msg->data, &i, &k) < 0 || k < 0 || k > 600000)
      return badarg(out);
    sleep_ms(k);
    goto keep;
  }
  int rc;
  if (scripted(tag, msg, i, out, &rc))
    return rc;
keep:
  return keep(out, payload);
}

static int init(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                ei_x_buff *out) {
  char tag[MAXATOMLEN_UTF8];
  int i, arity = 0;
  long long v;
  (void)ctx;
  (void)id;
  i = 0;
  if (ei_decode_tuple_header(payload->data, &i, &arity) == 0 && arity == 2 &&
      ei_decode_atom(payload->data, &i, tag) == 0 && strcmp(tag, "start_at") == 0 &&
      ei_decode_longlong(payload->data, &i, &v) == 0) {
    ei_x_encode_longlong(out, v);
    return DM_CB_OK;
  }
  /* Nothing written: the payload stays as given. */
  return DM_CB_OK;
}

/* Ids are printed by ei; they are canonical and of bounded depth. */
static void log_worker(const char *what, const dm_term *id, const dm_term *extra) {
  char *ids = NULL, *xs = NULL;
  int i = 0, j = 0;
  ei_s_print_term(&ids, id->data, &i);
  if (extra)
    ei_s_print_term(&xs, extra->data, &j);
  fprintf(stderr, "counter: worker %s %s%s%s\n", ids ? ids : "?", what, xs ? " " : "",
          xs ? xs : "");
  free(ids);
  free(xs);
}

static int terminate(dm_ctx *ctx, const dm_term *reason, const dm_term *id,
                     const dm_term *payload) {
  (void)ctx;
  (void)payload;
  log_worker("terminated:", id, reason);
  return DM_CB_OK;
}

static int slow(dm_ctx *ctx, const dm_term *id, const dm_term *payload) {
  (void)ctx;
  (void)payload;
  log_worker("is slow", id, NULL);
  return DM_CB_OK;
}

/* Writes each state change to stderr (the node's log), where tests and
 * people can see that handle_state_change ran. */
static int state_change(dm_ctx *ctx, const char *state) {
  const char *delay = dm_option(ctx, "starting_delay_ms");
  if (delay && strcmp(state, "starting") == 0)
    sleep_ms(strtol(delay, NULL, 10));
  fprintf(stderr, "counter: manager %s is %s\n", dm_manager_name(ctx), state);
  return DM_CB_OK;
}

/* What specs and state_change read with dm_option. */
static const char *const options[] = {"children", "specs_delay_ms", "starting_delay_ms",
                                      NULL};

const dm_behaviour dm__counter_behaviour = {
    .name = "counter",
    .options = options,
    .children_specs = specs,
    .perform = perform,
    .call = call,
    .cast = cast,
    .handle_state_change = state_change,
};

/* counter with init, terminate and handle_timeout that a test can see.
 * A separate behaviour so that counter itself stays the cheapest possible
 * workload: every init is one more pool round trip per worker at boot. */
const dm_behaviour dm__counter_hooks_behaviour = {
    .name = "counter_hooks",
    .options = options,
    .children_specs = specs,
    .perform = perform,
    .call = call,
    .cast = cast,
    .handle_state_change = state_change,
    .init = init,
    .terminate = terminate,
    .handle_timeout = slow,
};
