/* tick: an example behaviour built as a shared object.
 *   --manager ticks=priv/tick.so
 * The payload is #{to => Pid, n => N}; every perform sends {tick, Id, N+1}
 * to Pid and stores N+1. */
#include <string.h>

#include "dm.h"

static int perform(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                   ei_x_buff *out) {
  erlang_pid to;
  long n = -1;
  int i = 0, arity, have_pid = 0;
  char key[MAXATOMLEN_UTF8];
  if (ei_decode_map_header(payload->data, &i, &arity) < 0)
    return ei_x_encode_atom(out, "bad_payload"), DM_CB_CRASH;
  for (int k = 0; k < arity; k++) {
    if (ei_decode_atom(payload->data, &i, key) < 0)
      return ei_x_encode_atom(out, "bad_payload"), DM_CB_CRASH;
    if (strcmp(key, "to") == 0)
      have_pid = ei_decode_pid(payload->data, &i, &to) == 0;
    else if (strcmp(key, "n") == 0 && ei_decode_long(payload->data, &i, &n) < 0)
      n = -1;
    else if (strcmp(key, "n") != 0 && ei_skip_term(payload->data, &i) < 0)
      return DM_CB_CRASH;
  }
  if (!have_pid || n < 0)
    return ei_x_encode_atom(out, "bad_payload"), DM_CB_CRASH;
  ei_x_buff msg;
  ei_x_new(&msg);
  ei_x_encode_tuple_header(&msg, 3);
  ei_x_encode_atom(&msg, "tick");
  ei_x_append_buf(&msg, id->data, (int)id->len);
  ei_x_encode_long(&msg, n + 1);
  dm_send(ctx, &to, msg.buff, (size_t)msg.index);
  ei_x_free(&msg);
  /* {replace, #{to => Pid, n => N + 1}} */
  ei_x_encode_tuple_header(out, 2);
  ei_x_encode_atom(out, "replace");
  ei_x_encode_map_header(out, 2);
  ei_x_encode_atom(out, "to");
  ei_x_encode_pid(out, &to);
  ei_x_encode_atom(out, "n");
  ei_x_encode_long(out, n + 1);
  return DM_CB_OK;
}

/* tick reads no options of its own, so it declares none (.options NULL):
 * --manager ticks=priv/tick.so,every=5 is refused at start. A behaviour
 * that reads dm_option(ctx, "every") lists it:
 *   static const char *const options[] = {"every", NULL};
 *   ... .options = options ... */
static const dm_behaviour tick = {.name = "tick", .perform = perform};

/* dm.h makes this dm_behaviour_get_v1, the symbol of its struct layout. */
const dm_behaviour *dm_behaviour_get(void) { return &tick; }
