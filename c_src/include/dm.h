/* tarearbol_cnode public API.
 *
 * This is the only header a behaviour author includes. Everything here is
 * prefixed dm_. Fallible functions return 0 or a negative dm error code;
 * dm_strerror() names it.
 */
#ifndef DM_H
#define DM_H

#include <stddef.h>

#define DM_VERSION "0.1.0"

/* Error codes: one table, negative values. X(name, message). */
#define DM_ERRNO_MAP(X)                                                        \
  X(NOMEM, "out of memory")                                                    \
  X(INVAL, "invalid argument")                                                 \
  X(BADTERM, "malformed external term")                                        \
  X(TOOBIG, "size over the configured maximum")                                \
  X(BADPKT, "malformed distribution packet")                                   \
  X(UNKNOWN, "unknown control message")                                        \
  X(NOTFOUND, "not found")                                                     \
  X(EXISTS, "already exists")                                                  \
  X(IO, "input/output error")                                                  \
  X(EI, "erl_interface call failed")                                           \
  X(CLOSED, "connection closed")                                               \
  X(TLS, "TLS failure")

typedef enum {
  DM_OK = 0,
#define DM__ERRDEF(name, msg) DM_E##name,
  DM__ERR_FIRST = -1000,
  DM_ERRNO_MAP(DM__ERRDEF)
#undef DM__ERRDEF
  DM__ERR_LAST
} dm_errno;

/* Returns a static, human-readable message for a dm error code. */
const char *dm_strerror(int err);

/* Returns the symbolic name ("DM_ENOMEM") of a dm error code. */
const char *dm_err_name(int err);

/* ======================================================================
 * Behaviours
 *
 * A behaviour is what a module using Tarearbol.DynamicManager implements:
 * a struct of callbacks. The runtime calls them on its callback pool, never
 * on the loop thread, and never two at a time for the same worker (a worker
 * is serialised like a gen_server mailbox). Different workers run in
 * parallel, so a callback must not touch another worker's data.
 *
 * Terms come in and go out in Erlang's external term format, without the
 * version byte, and are written with erl_interface's ei_x_encode_*
 * functions (#include <ei.h>). A dm_term lends bytes that stay valid only
 * for the duration of the call.
 *
 * Every callback but perform is optional (NULL). Each returns DM_CB_OK, or
 * DM_CB_CRASH to report a crash, the C counterpart of a raise: the term
 * written to `out` is then the crash reason (an empty out means
 * `crashed`). The worker is terminated with that reason and restarted per
 * its restart type.
 * ====================================================================== */

#include <ei.h>

/* A term lent to a callback: external format, no version byte. */
typedef struct {
  const char *data;
  size_t len;
} dm_term;

enum { DM_CB_OK = 0, DM_CB_CRASH = 1 };

/* Per-call context: how a callback reaches the runtime. */
typedef struct dm_ctx dm_ctx;

/* Queues a message (an encoded term, no version byte) to a BEAM pid. The
 * loop thread sends it when the callback returns. 0, DM_EINVAL or
 * DM_ENOMEM. */
int dm_send(dm_ctx *ctx, const erlang_pid *to, const char *msg, size_t len);

/* A manager option given on the command line as key=value that the
 * runtime itself does not use (for example counter's children=N), or NULL. */
const char *dm_option(const dm_ctx *ctx, const char *key);

/* Encodes an Elixir %DateTime{} in UTC for a Unix time in microseconds,
 * the shape Elixir users see for times (as in Child's busy?). 0 or
 * DM_ENOMEM. */
int dm_encode_datetime(ei_x_buff *x, unsigned long long unix_us);

/* Makes room for at least `bytes` more in x. ei_x_encode_* grow a buffer
 * by what each call needs and a few bytes, so a large term (children_specs
 * of many children) built without this is reallocated once per element.
 * 0 or DM_ENOMEM. */
int dm_x_reserve(ei_x_buff *x, size_t bytes);

/* The registered name of the manager running this callback. */
const char *dm_manager_name(const dm_ctx *ctx);

/* The callbacks, mirroring Tarearbol.DynamicManager's. Responses of
 * perform, call and cast (written to out) mean what they mean there:
 *   halt                  the worker is done: terminate, removed, no restart
 *   {ok, R}               the payload becomes R (the stored value is kept)
 *   {replace, P}          payload and value become P
 *   {replace, Id, P}      the same with a new id: the worker moves to Id
 *   {{timeout, T}, R}     value and payload become R; period becomes T ms
 *   anything else         stored as the value
 * call's reply to its caller is the unwrapped response: R for {ok, R}, P for
 * {replace, P} and {replace, Id, P}, otherwise the response itself. */
typedef struct {
  const char *name;

  /* Once when the manager (re)starts: writes a map Id => Opts (a proplist
   * or map with payload, timeout, lull, instant_perform, restart). */
  int (*children_specs)(dm_ctx *ctx, ei_x_buff *out);

  /* Before a worker's first perform: writes the payload to start with
   * (Tarearbol's init: option). Without it the payload is used as given. */
  int (*init)(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
              ei_x_buff *out);

  /* Every `timeout` ms. */
  int (*perform)(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                 ei_x_buff *out);

  /* gen_server:call to the worker's pid, or synch_call through the
   * manager. `from` is the caller. */
  int (*call)(dm_ctx *ctx, const dm_term *msg, const erlang_pid *from,
              const dm_term *id, const dm_term *payload, ei_x_buff *out);

  /* gen_server:cast to the worker's pid, or asynch_call. */
  int (*cast)(dm_ctx *ctx, const dm_term *msg, const dm_term *id,
              const dm_term *payload, ei_x_buff *out);

  /* The worker stops (halt, del, put over it, crash, manager restart). */
  int (*terminate)(dm_ctx *ctx, const dm_term *reason, const dm_term *id,
                   const dm_term *payload);

  /* The manager's state changed: "starting", "started" or "down". */
  int (*handle_state_change)(dm_ctx *ctx, const char *state);

  /* A callback of this worker has been running for longer than
   * lull x timeout. Called on another pool thread while it still runs. */
  int (*handle_timeout)(dm_ctx *ctx, const dm_term *id,
                        const dm_term *payload);

  /* The behaviour's own manager options: the keys of --manager
   * NAME=BEHAVIOUR,key=value that it reads with dm_option, NULL-terminated
   * (NULL: it takes none). At start the node refuses, by name, a key that
   * is neither the manager's nor one of these, so that a misspelt option
   * is an error instead of a default. Last in the struct: see
   * DM_BEHAVIOUR_SYMBOL. */
  const char *const *options;
} dm_behaviour;

/* A shared object loaded with --manager NAME=path.so exports
 *   const dm_behaviour *dm_behaviour_get(void);
 * This header renames that function dm_behaviour_get_v1, so the exported
 * symbol says which layout of dm_behaviour the object was built with. An
 * object built against a dm.h older than `options` exports
 * dm_behaviour_get (DM_BEHAVIOUR_SYMBOL_V0) and a struct that ends before
 * `options`: the node still loads it, reads nothing past its end, and
 * leaves its options unchecked. */
#define dm_behaviour_get dm_behaviour_get_v1
#define DM_BEHAVIOUR_SYMBOL "dm_behaviour_get_v1"
#define DM_BEHAVIOUR_SYMBOL_V0 "dm_behaviour_get"
typedef const dm_behaviour *(*dm_behaviour_get_fn)(void);

#endif /* DM_H */
