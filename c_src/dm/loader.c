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

int dm__is_behaviour_path(const char *s) {
  size_t n = strlen(s);
  return strchr(s, '/') || (n > 3 && strcmp(s + n - 3, ".so") == 0);
}

const dm_behaviour *dm__load_behaviour(const char *manager, const char *path,
                                       int *has_options) {
  /* The handle stays open for the life of the process: callbacks point
   * into it. */
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    /* dlopen looks a name without a slash up in the system's library
     * directories, never in the current one, which is rarely what the
     * user meant. */
    if (!strchr(path, '/'))
      DM_ERROR(
          "--manager %s: cannot load behaviour %s: %s (a name without a slash "
          "is looked up in the system's library directories: for a file here, "
          "give ./%s)",
          manager, path, dlerror(), path);
    else
      DM_ERROR("--manager %s: cannot load behaviour %s: %s", manager, path,
               dlerror());
    return NULL;
  }
  /* The symbol names the layout of the struct (see dm.h): an object built
   * against a dm.h without `options` is read only up to it. */
  dm_behaviour_get_fn get;
  *(void **)&get = dlsym(h, DM_BEHAVIOUR_SYMBOL);
  *has_options = get != NULL;
  if (!get)
    *(void **)&get = dlsym(h, DM_BEHAVIOUR_SYMBOL_V0);
  if (!get) {
    DM_ERROR(
        "--manager %s: %s does not export %s (nor %s): not a tarearbol_cnode "
        "behaviour",
        manager, path, DM_BEHAVIOUR_SYMBOL_V0, DM_BEHAVIOUR_SYMBOL);
    dlclose(h);
    return NULL;
  }
  const dm_behaviour *b = get();
  if (!b || !b->name || !b->perform) {
    DM_ERROR(
        "--manager %s: %s: %s returned no behaviour with a name and a perform",
        manager, path,
        *has_options ? DM_BEHAVIOUR_SYMBOL : DM_BEHAVIOUR_SYMBOL_V0);
    dlclose(h);
    return NULL;
  }
  if (!*has_options)
    DM_WARN("--manager %s: %s was built against an older dm.h (it exports %s, "
            "not %s): its options are not checked",
            manager, path, DM_BEHAVIOUR_SYMBOL_V0, DM_BEHAVIOUR_SYMBOL);
  return b;
}
