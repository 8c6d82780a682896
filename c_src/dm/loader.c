/* The behaviour loader: a behaviour compiled in, found by name in the
 * table the program gives, or loaded from a shared object. */
#include <dlfcn.h>
#include <string.h>

#include "base/base.h"
#include "dm/mgr.h"

const dm_behaviour *dm__builtin_behaviour(const dm_behaviour *const *builtins,
                                          const char *name) {
  for (size_t i = 0; builtins && builtins[i]; i++)
    if (strcmp(builtins[i]->name, name) == 0)
      return builtins[i];
  return NULL;
}

const dm_behaviour *dm__load_behaviour(const char *path) {
  size_t n = strlen(path);
  if (!strchr(path, '/') && !(n > 3 && strcmp(path + n - 3, ".so") == 0))
    return NULL;
  /* The handle stays open for the life of the process: callbacks point
   * into it. */
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    DM_ERROR("cannot load behaviour %s: %s", path, dlerror());
    return NULL;
  }
  dm_behaviour_get_fn get;
  *(void **)&get = dlsym(h, DM_BEHAVIOUR_SYMBOL);
  if (!get) {
    DM_ERROR("%s does not export %s", path, DM_BEHAVIOUR_SYMBOL);
    dlclose(h);
    return NULL;
  }
  const dm_behaviour *b = get();
  if (!b || !b->name || !b->perform) {
    DM_ERROR("%s: %s returned no behaviour with a name and a perform", path,
             DM_BEHAVIOUR_SYMBOL);
    dlclose(h);
    return NULL;
  }
  return b;
}
