/* The callback pool: threads that run jobs and hand them back to the loop
 * in batches. */
#include "runtime/runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "dm.h"

#define CHUNK 256   /* most jobs a thread takes at once */
#define AHEAD 4     /* finished jobs prefetched ahead of the one handed back */

/* Jobs travel between the loop and the threads as arrays of pointers, not
 * as linked lists: taking a chunk, publishing results and handing them back
 * never chase a pointer through job memory written by another core. Both
 * shared arrays are sized at flush time to hold every job in flight, so a
 * pool thread never allocates and never finds them full. */
typedef struct {
  dm__job **v;
  size_t n, cap;
} vec;

struct dm__pool {
  uv_async_t async;
  dm__pool_done_cb done;
  void *ud;
  void (*ahead)(const dm__job *j);
  unsigned nthreads;
  pthread_t *threads;

  /* loop side */
  size_t depth;                     /* submitted, not yet handed back */
  dm__job *local_head, *local_tail; /* submitted, not yet flushed */
  vec back;                         /* empty, swapped with fin to collect */
  int handing;                      /* inside collect's hand_back */

  pthread_mutex_t mx;
  pthread_cond_t cv;
  dm__job **ring; /* shared: to run; capacity a power of two */
  size_t ring_cap, ring_head, ring_len;
  vec fin;        /* shared: finished */
  int stopping;
  int soon; /* the loop collects within a few ms without being woken */
  atomic_size_t wakes; /* times a thread woke the loop */
};

static int reserve(vec *x, size_t need) {
  if (x->cap >= need)
    return 0;
  size_t cap = dm__grow_cap(x->cap, need, 256);
  dm__job **v = dm__realloc(x->v, cap * sizeof *v);
  if (!v)
    return DM_ENOMEM;
  x->v = v;
  x->cap = cap;
  return 0;
}

/* Under the lock. */
static int reserve_ring(dm__pool *p, size_t need) {
  if (p->ring_cap >= need)
    return 0;
  size_t cap = dm__grow_cap(p->ring_cap, need, 256);
  dm__job **r = dm__malloc(cap * sizeof *r);
  if (!r)
    return DM_ENOMEM;
  for (size_t i = 0; i < p->ring_len; i++)
    r[i] = p->ring[(p->ring_head + i) & (p->ring_cap - 1)];
  dm__free(p->ring);
  p->ring = r;
  p->ring_cap = cap;
  p->ring_head = 0;
  return 0;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Hands finished jobs to the loop; fin has room (see dm__pool_flush). */
static void publish(dm__pool *p, dm__job **jobs, size_t k) {
  if (!k)
    return;
  int wake = 1;
  pthread_mutex_lock(&p->mx);
  memcpy(p->fin.v + p->fin.n, jobs, k * sizeof *jobs);
  p->fin.n += k;
  if (p->soon) {
    wake = 0;
    for (size_t i = 0; i < k; i++)
      if (!jobs[i]->lazy) {
        wake = 1;
        break;
      }
  }
  pthread_mutex_unlock(&p->mx);
  /* Waking the loop costs two system calls and a context switch; a
   * loop that ticks within milliseconds anyway picks lazy jobs up then. */
  if (wake) {
    atomic_fetch_add_explicit(&p->wakes, 1, memory_order_relaxed);
    uv_async_send(&p->async);
  }
}

static void *thread_main(void *arg) {
  dm__pool *p = arg;
  dm__job *chunk[CHUNK];
  pthread_mutex_lock(&p->mx);
  for (;;) {
    while (!p->ring_len && !p->stopping)
      pthread_cond_wait(&p->cv, &p->mx);
    if (p->stopping)
      break;
    /* A share of the queue, so one lock serves many jobs under load while
     * a short queue is spread over every thread: jobs taken together run
     * one after the other, and a slow one would hold up the rest. */
    size_t take = p->ring_len / p->nthreads;
    take = take < 1 ? 1 : take > CHUNK ? CHUNK : take;
    for (size_t i = 0; i < take; i++)
      chunk[i] = p->ring[(p->ring_head + i) & (p->ring_cap - 1)];
    p->ring_head = (p->ring_head + take) & (p->ring_cap - 1);
    p->ring_len -= take;
    if (p->ring_len)
      pthread_cond_signal(&p->cv); /* more work for another thread */
    pthread_mutex_unlock(&p->mx);
    /* Run them; what is done goes back at the end, or as soon as the
     * chunk has run for a few milliseconds. */
    size_t from = 0;
    uint64_t since = 0;
    for (size_t i = 0; i < take; i++) {
      if (i + 1 < take)
        __builtin_prefetch(chunk[i + 1], 1);
      /* One clock read a job: when it starts, and how long the chunk has
       * run so far. */
      uint64_t t = now_us();
      if (i == 0) {
        since = t;
      } else if (t - since >= 4000) {
        publish(p, chunk + from, i - from);
        from = i;
        since = t;
      }
      chunk[i]->started_us = t;
      chunk[i]->run(chunk[i]);
    }
    publish(p, chunk + from, take - from);
    pthread_mutex_lock(&p->mx);
  }
  pthread_mutex_unlock(&p->mx);
  return NULL;
}

static void hand_back(dm__pool *p, dm__job **v, size_t n, int ran) {
  for (size_t i = 0; i < n; i++) {
    if (i + 2 * AHEAD < n)
      __builtin_prefetch(v[i + 2 * AHEAD], 1);
    if (p->ahead && i + AHEAD < n)
      p->ahead(v[i + AHEAD]);
    dm__job *j = v[i];
    j->next = NULL;
    if (!ran)
      j->run = NULL;
    p->depth--;
    p->done(j, p->ud);
  }
}

static void hand_back_list(dm__pool *p, dm__job *j, int ran) {
  while (j) {
    dm__job *next = j->next;
    hand_back(p, &j, 1, ran);
    j = next;
  }
}

/* soon < 0 (from the async wake-up) keeps the flag as it is. */
void dm__pool_collect(dm__pool *p, int soon) {
  if (p->handing)
    return; /* a done callback collecting: the outer call carries on */
  pthread_mutex_lock(&p->mx);
  if (soon >= 0)
    p->soon = soon;
  /* Swap in the empty array: each holds every job in flight at the last
   * flush, so the threads cannot overflow it. */
  vec got = p->fin;
  p->fin = p->back;
  p->fin.n = 0;
  pthread_mutex_unlock(&p->mx);
  memset(&p->back, 0, sizeof p->back);
  p->handing = 1;
  hand_back(p, got.v, got.n, 1);
  p->handing = 0;
  got.n = 0;
  p->back = got;
  /* What done callbacks submitted and tried to flush goes now. */
  if (p->local_head)
    dm__pool_flush(p);
}

static void on_async(uv_async_t *h) { dm__pool_collect(h->data, -1); }

int dm__pool_start(dm__pool **out, uv_loop_t *loop, unsigned threads,
                   dm__pool_done_cb done, void *ud) {
  dm__pool *p = dm__calloc(1, sizeof *p);
  if (!p)
    return DM_ENOMEM;
  p->threads = dm__calloc(threads ? threads : 1, sizeof *p->threads);
  if (!p->threads) {
    dm__free(p);
    return DM_ENOMEM;
  }
  p->done = done;
  p->ud = ud;
  pthread_mutex_init(&p->mx, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (uv_async_init(loop, &p->async, on_async)) {
    dm__free(p->threads);
    dm__free(p);
    return DM_EIO;
  }
  p->async.data = p;
  for (unsigned i = 0; i < (threads ? threads : 1); i++) {
    if (pthread_create(&p->threads[i], NULL, thread_main, p) != 0)
      break;
    p->nthreads++;
  }
  if (!p->nthreads) {
    dm__pool_stop(p);
    return DM_EIO;
  }
  *out = p;
  return 0;
}

void dm__pool_set_ahead(dm__pool *p, void (*ahead)(const dm__job *j)) { p->ahead = ahead; }

void dm__pool_submit(dm__pool *p, dm__job *j) {
  j->next = NULL;
  if (p->local_tail)
    p->local_tail->next = j;
  else
    p->local_head = j;
  p->local_tail = j;
  p->depth++;
}

void dm__pool_flush(dm__pool *p) {
  /* While jobs are being handed back, back is in use: collect flushes
   * when it is done. */
  if (!p->local_head || p->handing)
    return;
  /* Room for every job in flight in each array, made here so the threads
   * never allocate; without it the jobs wait for the next flush. */
  if (reserve(&p->back, p->depth))
    return;
  pthread_mutex_lock(&p->mx);
  if (reserve_ring(p, p->depth) || reserve(&p->fin, p->depth)) {
    pthread_mutex_unlock(&p->mx);
    return;
  }
  for (dm__job *j = p->local_head; j; j = j->next)
    p->ring[(p->ring_head + p->ring_len++) & (p->ring_cap - 1)] = j;
  pthread_mutex_unlock(&p->mx);
  /* One thread wakes; a thread that leaves work behind wakes the next, so
   * a small batch does not wake every thread for nothing. */
  pthread_cond_signal(&p->cv);
  p->local_head = p->local_tail = NULL;
}

size_t dm__pool_depth(const dm__pool *p) { return p->depth; }

unsigned dm__pool_threads(const dm__pool *p) { return p->nthreads; }

size_t dm__pool_wakes(dm__pool *p) {
  return atomic_load_explicit(&p->wakes, memory_order_relaxed);
}

static void on_closed(uv_handle_t *h) {
  dm__pool *p = h->data;
  pthread_mutex_destroy(&p->mx);
  pthread_cond_destroy(&p->cv);
  dm__free(p->ring);
  dm__free(p->fin.v);
  dm__free(p->back.v);
  dm__free(p->threads);
  dm__free(p);
}

void dm__pool_stop(dm__pool *p) {
  pthread_mutex_lock(&p->mx);
  p->stopping = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mx);
  for (unsigned i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  /* Finished jobs first (they ran), then the ones that never did. */
  vec fin = p->fin;
  memset(&p->fin, 0, sizeof p->fin);
  hand_back(p, fin.v, fin.n, 1);
  dm__free(fin.v);
  for (size_t i = 0; i < p->ring_len; i++) {
    dm__job *j = p->ring[(p->ring_head + i) & (p->ring_cap - 1)];
    hand_back(p, &j, 1, 0);
  }
  p->ring_len = 0;
  dm__job *q = p->local_head;
  p->local_head = p->local_tail = NULL;
  hand_back_list(p, q, 0);
  uv_close((uv_handle_t *)&p->async, on_closed);
}
