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
  X(CLOSED, "connection closed")

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

#endif /* DM_H */
