/* The callback pool, played by the test. A test that includes this
 * defines every symbol of runtime/pool.o the library's objects use, so
 * the linker resolves them here and never takes pool.o out of libdm.a;
 * should an object come to need a pool symbol missing here, pool.o is
 * pulled in and the link fails on the duplicates, loudly. No threads:
 * jobs wait in submission order until pool_run_one runs the oldest, its
 * callback as a pool thread would, then its completion as the loop
 * would. A job still waiting is a callback still running. Include once
 * per test binary, after cmocka.h. */
#ifndef TEST_FAKE_POOL_H
#define TEST_FAKE_POOL_H

#include <stdlib.h>

#include "dm.h"
#include "runtime/runtime.h"

struct dm__pool {
  dm__pool_done_cb done;
  void *ud;
  dm__job *head, *tail; /* submitted, not yet run */
  size_t depth;
};

int dm__pool_start(dm__pool **out, uv_loop_t *loop, unsigned threads,
                   dm__pool_done_cb done, void *ud) {
  (void)loop;
  (void)threads;
  dm__pool *p = calloc(1, sizeof *p);
  if (!p)
    return DM_ENOMEM;
  p->done = done;
  p->ud = ud;
  *out = p;
  return 0;
}

void dm__pool_set_ahead(dm__pool *p, void (*ahead)(const dm__job *j)) {
  (void)p;
  (void)ahead;
}

void dm__pool_submit(dm__pool *p, dm__job *j) {
  j->next = NULL;
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  p->depth++;
}

/* Every job is the test's to run as soon as it is submitted. */
void dm__pool_flush(dm__pool *p) { (void)p; }
void dm__pool_collect(dm__pool *p, int soon) {
  (void)p;
  (void)soon;
}
size_t dm__pool_depth(const dm__pool *p) { return p->depth; }
size_t dm__pool_wakes(dm__pool *p) {
  (void)p;
  return 0;
}

static dm__job *pool_take(dm__pool *p) {
  dm__job *j = p->head;
  if (!j)
    return NULL;
  p->head = j->next;
  if (!p->head)
    p->tail = NULL;
  p->depth--;
  return j;
}

/* As the real pool's stop: what never ran comes back with run NULL. */
void dm__pool_stop(dm__pool *p) {
  dm__job *j;
  while ((j = pool_take(p)) != NULL) {
    j->run = NULL;
    p->done(j, p->ud);
  }
  free(p);
}

/* Runs the oldest waiting job and hands it back. 0 when none waited. */
static inline int pool_run_one(dm__pool *p) {
  dm__job *j = pool_take(p);
  if (!j)
    return 0;
  j->started_us = uv_hrtime() / 1000; /* as a pool thread would */
  j->run(j);
  p->done(j, p->ud);
  return 1;
}

/* Runs jobs, and those their completions submit, until none waits. */
static inline size_t pool_run_all(dm__pool *p) {
  size_t n = 0;
  while (pool_run_one(p))
    n++;
  return n;
}

#endif
