/* The one table of error codes and their messages. */
#include "dm.h"

const char *dm_strerror(int err) {
  switch (err) {
  case DM_OK:
    return "ok";
#define DM__ERRMSG(name, msg)                                                  \
  case DM_E##name:                                                             \
    return msg;
    DM_ERRNO_MAP(DM__ERRMSG)
#undef DM__ERRMSG
  default:
    return "unknown error";
  }
}

const char *dm_err_name(int err) {
  switch (err) {
  case DM_OK:
    return "DM_OK";
#define DM__ERRNAME(name, msg)                                                 \
  case DM_E##name:                                                             \
    return "DM_E" #name;
    DM_ERRNO_MAP(DM__ERRNAME)
#undef DM__ERRNAME
  default:
    return "DM_E?";
  }
}
