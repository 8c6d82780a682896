/* A manager made from its --manager NAME=BEHAVIOUR[,key=value...] spec:
 * the options parsed, the pool started, the name registered, the boot
 * begun; and freed with its workers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dm/mgr.h"

static int parse_ulong(const char *value, unsigned long min, unsigned long max,
                       unsigned long *out) {
  char *end;
  unsigned long v = strtoul(value, &end, 10);
  if (*end || end == value || value[0] == '-' || v < min || v > max)
    return DM_EINVAL;
  *out = v;
  return 0;
}

static int set_payload(dm__manager *m, const char *value) {
  ei_x_buff x;
  char *end;
  int r = DM_ENOMEM;
  if (ei_x_new(&x) < 0)
    return DM_ENOMEM;
  long long v = strtoll(value, &end, 10);
  if ((*value && !*end ? ei_x_encode_longlong(&x, v)
                       : ei_x_encode_binary(&x, value, (long)strlen(value))) == 0) {
    dm__blob_unref(m->default_payload);
    m->default_payload = dm__blob_new(x.buff, (size_t)x.index);
    r = m->default_payload ? 0 : DM_ENOMEM;
  }
  ei_x_free(&x);
  return r;
}

/* Anything that is not the manager's is the behaviour's (dm_option). */
static int add_behaviour_option(dm__manager *m, const char *key, const char *value) {
  dm__kv *kv = dm__realloc(m->options, (m->noptions + 1) * sizeof *kv);
  if (!kv)
    return DM_ENOMEM;
  m->options = kv;
  kv[m->noptions].key = dm__strdup(key);
  kv[m->noptions].value = dm__strdup(value);
  if (!kv[m->noptions].key || !kv[m->noptions].value) {
    dm__free(kv[m->noptions].key);
    dm__free(kv[m->noptions].value);
    return DM_ENOMEM;
  }
  m->noptions++;
  return 0;
}

/* The keys every manager takes, whatever its behaviour. */
static const char *const manager_keys[] = {
    "timeout", "lull",        "payload",      "instant_perform", "restart",
    "pickup",  "threads",     "max_mailbox",  "max_restarts",    "max_seconds",
    NULL};

static int listed(const char *const *keys, const char *key) {
  for (size_t i = 0; keys && keys[i]; i++)
    if (strcmp(keys[i], key) == 0)
      return 1;
  return 0;
}

/* The edit distance of a and b, a transposition counting as one edit
 * (optimal string alignment), or 99 for keys too long to bother with. */
static unsigned edit_distance(const char *a, const char *b) {
  enum { MAX = 32 };
  size_t la = strlen(a), lb = strlen(b);
  unsigned d[MAX + 1][MAX + 1];
  if (la > MAX || lb > MAX)
    return 99;
  for (size_t i = 0; i <= la; i++)
    d[i][0] = (unsigned)i;
  for (size_t j = 0; j <= lb; j++)
    d[0][j] = (unsigned)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      unsigned best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < best)
        best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best)
        best = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  return d[la][lb];
}

static void closest(const char *const *keys, const char *key, const char **best,
                    unsigned *dist) {
  for (size_t i = 0; keys && keys[i]; i++) {
    unsigned e = edit_distance(keys[i], key);
    if (e < *dist) {
      *dist = e;
      *best = keys[i];
    }
  }
}

static size_t append_keys(char *buf, size_t size, size_t at, const char *const *keys) {
  for (size_t i = 0; keys && keys[i] && at < size; i++)
    at += (size_t)snprintf(buf + at, size - at, "%s%s", i ? ", " : "", keys[i]);
  return at;
}

/* One line naming the key, the closest known one when it is probably a
 * typo, and every key the manager takes. */
static void log_unknown_option(const dm__manager *m, const char *key) {
  char msg[1024];
  size_t at = 0, size = sizeof msg;
  const char *best = NULL;
  unsigned dist = 3; /* up to two edits is a typo; more is another word */
  const char *const *own = m->b->options;
  closest(manager_keys, key, &best, &dist);
  closest(own, key, &best, &dist);
  if (best && dist < strlen(key))
    at += (size_t)snprintf(msg + at, size - at, " (did you mean '%s'?)", best);
  if (at < size)
    at += (size_t)snprintf(msg + at, size - at, "; behaviour %s takes %s", m->b->name,
                           own && own[0] ? "" : "no options of its own");
  at = append_keys(msg, size, at, own);
  if (at < size)
    at += (size_t)snprintf(msg + at, size - at, "; every manager takes ");
  append_keys(msg, size, at, manager_keys);
  DM_ERROR("--manager %s: unknown option '%s'%s", m->name, key, msg);
}

/* DM_EINVAL for a bad value, DM_ENOTFOUND for a key that is neither the
 * manager's nor the behaviour's, DM_ENOMEM. */
static int set_option(dm__manager *m, const char *key, const char *value) {
  unsigned long v;
  if (strcmp(key, "pickup") == 0) {
    if (strcmp(value, "hashring") == 0)
      m->pickup = DM__PICK_HASHRING;
    else if (strcmp(value, "random") == 0)
      m->pickup = DM__PICK_RANDOM;
    else if (strcmp(value, "stream") == 0)
      m->pickup = DM__PICK_STREAM;
    else
      return DM_EINVAL;
    return 0;
  }
  if (strcmp(key, "max_restarts") == 0)
    return parse_ulong(value, 0, 100000, &v) ? DM_EINVAL : (m->max_restarts = (uint32_t)v, 0);
  if (strcmp(key, "max_seconds") == 0)
    return parse_ulong(value, 1, 100000, &v) ? DM_EINVAL : (m->max_seconds = (uint32_t)v, 0);
  if (strcmp(key, "threads") == 0)
    return parse_ulong(value, 1, 256, &v) ? DM_EINVAL : (m->threads = (unsigned)v, 0);
  if (strcmp(key, "max_mailbox") == 0)
    return parse_ulong(value, 1, 100000000, &v) ? DM_EINVAL : (m->max_mailbox = (uint32_t)v, 0);
  if (strcmp(key, "payload") == 0)
    return set_payload(m, value);
  if (dm__opts_default(key, value, &m->defaults) == 0)
    return 0;
  if (listed(manager_keys, key))
    return DM_EINVAL;
  if (m->check_options && !listed(m->b->options, key))
    return DM_ENOTFOUND;
  return add_behaviour_option(m, key, value);
}

static void free_fields(dm__manager *m) {
  dm__free(m->name);
  dm__free(m->struct_name);
  for (size_t i = 0; i < m->noptions; i++) {
    dm__free(m->options[i].key);
    dm__free(m->options[i].value);
  }
  dm__free(m->options);
  dm__blob_unref(m->default_payload);
  dm__wopts_unref(m->last_opts);
  dm__free(m->restarts_at);
  dm__free(m->escalated_at);
  dm__free(m->slots);
  dm__buf_free(&m->scratch);
  dm__boot_free_held(m);
  dm__durable_free(m);
  dm__ev_free(m);
  while (m->sc_head) {
    dm__wjob *j = m->sc_head;
    m->sc_head = (dm__wjob *)j->base.next;
    dm__job_free(j);
  }
  while (m->free_jobs) {
    dm__wjob *j = m->free_jobs;
    m->free_jobs = (dm__wjob *)j->base.next;
    ei_x_free(&j->out);
    ei_x_free(&j->sends);
    dm__free(j);
  }
  dm__free(m);
}

static void free_workers(dm__manager *m) {
  dm__node *n = m->node;
  for (size_t s = 0; s < m->cap; s++) {
    dm__worker *w = dm__children_walk(m, s);
    if (w) {
      dm__proctab_del(&n->pids, w->proc.key);
      dm__worker_free(w);
    }
  }
}

void dm__manager_free(dm__manager *m) {
  dm__node *n = m->node;
  free_workers(m);
  dm__nametab_del(&n->names, m->name);
  dm__proctab_del(&n->pids, m->proc.key);
  dm__proc_release(n, &m->proc);
  free_fields(m);
}

/* The behaviour a --manager spec names, or NULL with one line logged. */
static const dm_behaviour *find_behaviour(dm__sched *s, const char *name,
                                          const char *beh, int *has_options) {
  const dm_behaviour *b = dm__builtin_behaviour(s->builtins, beh);
  *has_options = 1;
  if (!b && dm__is_behaviour_path(beh))
    return dm__load_behaviour(name, beh, has_options);
  if (!b) {
    char names[256] = "";
    size_t at = 0;
    for (size_t i = 0; s->builtins && s->builtins[i] && at < sizeof names; i++)
      at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "",
                             s->builtins[i]->name);
    DM_ERROR("--manager %s: unknown behaviour '%s' (built in: %s; or a path to a .so)",
             name, beh, names);
    return NULL;
  }
  if (!b->perform) {
    DM_ERROR("--manager %s: behaviour '%s' has no perform callback", name, beh);
    return NULL;
  }
  return b;
}

/* The fields that do not depend on the options. */
static dm__manager *alloc_manager(dm__sched *s, const char *name, const dm_behaviour *b) {
  dm__manager *m = dm__calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->node = s->node;
  m->sched = s;
  m->b = b;
  m->proc.kind = s->kind_manager;
  m->worker_done = dm__sup_worker_done;
  m->replay = dm__api_replay;
  m->name = dm__strdup(name);
  m->defaults.timeout_ms = 1000;
  m->defaults.lull = 1.1f;
  m->max_mailbox = 1000;
  m->max_restarts = 3;
  m->max_seconds = 5;
  m->threads = s->threads;
  m->seed = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ uv_hrtime();
  size_t sl = strlen(name) + sizeof "Elixir..State";
  m->struct_name = dm__malloc(sl);
  if (!m->name || !m->struct_name) {
    free_fields(m);
    return NULL;
  }
  if (strncmp(name, "Elixir.", 7) == 0)
    snprintf(m->struct_name, sl, "%s.State", name);
  else
    snprintf(m->struct_name, sl, "Elixir.%s.State", name);
  return m;
}

int dm__manager_new(dm__sched *s, const char *spec, dm__manager **out) {
  char *copy = dm__strdup(spec), *save = NULL;
  int r = DM_EINVAL;
  dm__manager *m = NULL;
  dm__node *n = s->node;
  if (!copy)
    return DM_ENOMEM;
  char *eq = strchr(copy, '=');
  if (!eq || eq == copy) {
    DM_ERROR("--manager wants NAME=BEHAVIOUR[,key=value...], got '%s'", spec);
    goto out;
  }
  *eq = 0;
  char *beh = strtok_r(eq + 1, ",", &save);
  if (!beh) {
    DM_ERROR("--manager %s: no behaviour named", copy);
    goto out;
  }
  int has_options;
  const dm_behaviour *b = find_behaviour(s, copy, beh, &has_options);
  if (!b)
    goto out;
  if (dm__nametab_get(&n->names, copy)) {
    DM_ERROR("--manager %s: the name is taken", copy);
    goto out;
  }
  if (!(m = alloc_manager(s, copy, b))) {
    r = DM_ENOMEM;
    DM_ERROR("--manager %s: %s", copy, dm_strerror(r));
    goto out;
  }
  m->check_options = has_options;
  for (char *kv; (kv = strtok_r(NULL, ",", &save));) {
    char *e = strchr(kv, '=');
    if (!e) {
      DM_ERROR("--manager %s: option '%s' wants key=value", copy, kv);
      goto err;
    }
    *e = 0;
    if ((r = set_option(m, kv, e + 1)) == DM_ENOTFOUND) {
      log_unknown_option(m, kv);
      r = DM_EINVAL;
      goto err;
    }
    if (r) {
      DM_ERROR("--manager %s: bad value for %s: '%s'", copy, kv, e + 1);
      goto err;
    }
  }
  m->restarts_at = dm__calloc(m->max_restarts + 1, sizeof *m->restarts_at);
  m->escalated_at = dm__calloc(m->max_restarts + 1, sizeof *m->escalated_at);
  if (!m->restarts_at || !m->escalated_at) {
    r = DM_ENOMEM;
    goto err_log;
  }
  if ((r = dm__pool_start(&m->pool, n->loop, m->threads, dm__job_done, m)))
    goto err_log;
  dm__pool_set_ahead(m->pool, dm__job_ahead);
  if ((r = dm__proc_spawn(n, &m->proc)) || (r = dm__proc_register(n, &m->proc, m->name)))
    goto err_pool;
  DM_INFO("manager %s: behaviour %s, %u threads", m->name, b->name, m->threads);
  if (s->state_dir && ((r = dm__durable_open(m, s->state_dir, s->sync_ms)) ||
                       (r = dm__durable_restore(m)))) {
    /* Refused (the node does not start): the manager is handed over all
     * the same, to be stopped and freed with the others. The store has
     * said why, but for memory. */
    if (r == DM_ENOMEM)
      DM_ERROR("--manager %s: cannot start: %s", copy, dm_strerror(r));
    dm__free(copy);
    *out = m;
    return r;
  }
  dm__boot(m);
  dm__free(copy);
  *out = m;
  return 0;
err_pool:
  dm__proctab_del(&n->pids, m->proc.key);
  dm__pool_stop(m->pool);
err_log:
  DM_ERROR("--manager %s: cannot start: %s", copy, dm_strerror(r));
err:
  free_fields(m);
out:
  dm__free(copy);
  return r ? r : DM_EINVAL;
}
