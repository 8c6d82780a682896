/* Where behaviours come from: compiled in by name, or a shared object. */
#include <dlfcn.h>
#include <string.h>

#include "base/base.h"
#include "dm/mgr.h"

extern const dm_behaviour dm__counter_behaviour;
extern const dm_behaviour dm__counter_hooks_behaviour;
extern const dm_behaviour dm__pingpong_behaviour;
extern const dm_behaviour dm__probe_behaviour;

static const dm_behaviour *const builtins[] = {
    &dm__counter_behaviour,
    &dm__counter_hooks_behaviour,
    &dm__pingpong_behaviour,
    &dm__probe_behaviour,
};

const dm_behaviour *dm__builtin_behaviour(const char *name) {
  for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
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
