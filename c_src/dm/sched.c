/* The node-wide scheduler: one timer wheel and one worker slab for every
 * manager, the wheel's timer, and the loop phase that hands each pool its
 * batch. It plugs dm into the node: the manager and worker process kinds,
 * and the loop hooks (prepare, stop, free, describe). */
#include <string.h>

#include "dm/mgr.h"

/* A completion that may wait for the wheel waits at most about this long. */
#define LAZY_TICK_US 2000

static size_t inflight_jobs(const dm__sched *s) {
  size_t k = 0;
  for (size_t i = 0; i < s->nmanagers; i++)
    k += dm__pool_depth(s->managers[i]->pool);
  return k;
}

static void on_wheel(uv_timer_t *t) {
  dm__sched *s = t->data;
  /* What finished since the last tick first: lazy completions waited for
   * this instead of waking the loop. */
  for (size_t i = 0; i < s->nmanagers; i++)
    dm__pool_collect(s->managers[i]->pool, 1);
  size_t inflight = inflight_jobs(s);
  if (inflight < DM__INFLIGHT_MAX)
    dm__wheel_advance(&s->wheel, uv_hrtime() / 1000, DM__INFLIGHT_MAX - inflight,
                      dm__worker_on_timer, s);
}

/* The loop's prepare phase: the wheel timer is set for the next slot with
 * timers, and every pool learns whether that tick comes soon enough for
 * lazy completions to wait for it. */
static void prepare(void *ud) {
  dm__sched *s = ud;
  int ticking = s->nmanagers && s->wheel.count && !s->node->stopping;
  uint64_t in = 0;
  if (ticking) {
    in = dm__wheel_next_in(&s->wheel, uv_hrtime() / 1000, 1000000);
    /* Behind, with the pools full: the next tick takes what finished
     * meanwhile, rather than the loop spinning on a due wheel. */
    if (in == 0 && inflight_jobs(s) >= DM__INFLIGHT_MAX)
      in = 1000;
  }
  for (size_t i = 0; i < s->nmanagers; i++)
    dm__pool_collect(s->managers[i]->pool, ticking && in <= LAZY_TICK_US);
  for (size_t i = 0; i < s->nmanagers; i++)
    dm__pool_flush(s->managers[i]->pool);
  for (size_t i = 0; i < s->nmanagers; i++)
    dm__durable_flush(s->managers[i]);
  if (!s->node->stopping)
    dm__sched_compact(s, uv_hrtime() / 1000000);
  if (ticking)
    uv_timer_start(&s->wheel_timer, on_wheel, (in + 999) / 1000, 0);
  else if (s->timer_open)
    uv_timer_stop(&s->wheel_timer);
  s->clock_us = 0; /* the loop may sleep now */
}

static void stop(void *ud) {
  dm__sched *s = ud;
  if (s->timer_open) {
    uv_timer_stop(&s->wheel_timer);
    uv_close((uv_handle_t *)&s->wheel_timer, NULL);
    s->timer_open = 0;
  }
  for (size_t i = 0; i < s->nmanagers; i++) {
    dm__durable_stop(s->managers[i]);
    dm__ev_stop(s->managers[i]);
    dm__pool_stop(s->managers[i]->pool);
  }
}

static void free_all(void *ud) {
  dm__sched *s = ud;
  for (size_t i = 0; i < s->nmanagers; i++)
    dm__manager_free(s->managers[i]);
  dm__free(s->managers);
  s->managers = NULL;
  s->nmanagers = 0;
  dm__pidtab_free(&s->calls);
  dm__pidtab_free(&s->annex);
  dm__wheel_free(&s->wheel);
  dm__slab_destroy(&s->workers);
}

static int describe(void *ud, ei_x_buff *x) { return dm__enc_managers(ud, x); }

static const dm__node_hooks hooks = {prepare, stop, free_all, describe};

int dm__sched_init(dm__sched *s, dm__node *n, unsigned threads,
                   const dm_behaviour *const *builtins) {
  memset(s, 0, sizeof *s);
  s->node = n;
  s->threads = threads;
  s->builtins = builtins;
  dm__pidtab_init(&s->calls);
  dm__pidtab_init(&s->annex);
  int km = dm__node_add_kind(n, &dm__manager_ops);
  int kw = dm__node_add_kind(n, &dm__worker_ops);
  if (km < 0 || kw < 0)
    return DM_ENOMEM;
  s->kind_manager = (uint8_t)km;
  s->kind_worker = (uint8_t)kw;
  int r = dm__wheel_init(&s->wheel, 4096, uv_hrtime() / 1000);
  s->wheel.ahead = dm__worker_ahead;
  if (r || (r = dm__slab_init(&s->workers, sizeof(dm__worker), 2 << 20)))
    return r;
  if ((r = dm__node_add_hooks(n, &hooks, s)))
    return r;
  uv_timer_init(n->loop, &s->wheel_timer);
  s->wheel_timer.data = s;
  s->timer_open = 1;
  return 0;
}

int dm__sched_add_manager(dm__sched *s, const char *spec) {
  if (dm__array_grow((void **)&s->managers, &s->capmanagers, s->nmanagers + 1,
                     sizeof *s->managers, 4))
    return DM_ENOMEM;
  dm__manager *m = NULL;
  int r = dm__manager_new(s, spec, &m);
  if (m) /* a refused one too: it is stopped and freed with the others */
    s->managers[s->nmanagers++] = m;
  return r;
}
