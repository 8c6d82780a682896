#include "pool.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "dm.h"

#define CHUNK 256 /* most jobs a thread takes at once */

struct dm__pool {
  uv_async_t async;
  dm__pool_done_cb done;
  void *ud;
  unsigned nthreads;
  pthread_t *threads;
  size_t depth; /* loop side */

  dm__job *local_head, *local_tail; /* loop side, not yet flushed */
  size_t local_len;

  pthread_mutex_t mx;
  pthread_cond_t cv;
  dm__job *q_head, *q_tail; /* shared: to run */
  size_t q_len;
  dm__job *d_head, *d_tail; /* shared: finished */
  int stopping;
  int soon; /* the loop collects within a few ms without being woken */
};

static void append(dm__job **head, dm__job **tail, dm__job *first,
                   dm__job *last) {
  if (*tail)
    (*tail)->next = first;
  else
    *head = first;
  *tail = last;
}

static uint64_t coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Hands finished jobs to the loop. */
static void publish(dm__pool *p, dm__job *first, dm__job *last) {
  if (!first)
    return;
  int wake = 1;
  pthread_mutex_lock(&p->mx);
  append(&p->d_head, &p->d_tail, first, last);
  if (p->soon) {
    wake = 0;
    for (dm__job *j = first; j; j = j->next)
      if (!j->lazy) {
        wake = 1;
        break;
      }
  }
  pthread_mutex_unlock(&p->mx);
  /* Waking the loop costs two system calls and a context switch; a
   * loop that ticks within milliseconds anyway picks lazy jobs up then. */
  if (wake)
    uv_async_send(&p->async);
}

static void *thread_main(void *arg) {
  dm__pool *p = arg;
  pthread_mutex_lock(&p->mx);
  for (;;) {
    while (!p->q_head && !p->stopping)
      pthread_cond_wait(&p->cv, &p->mx);
    if (p->stopping)
      break;
    /* A share of the queue, so one lock serves many jobs under load while
     * a short queue is spread over every thread: jobs taken together run
     * one after the other, and a slow one would hold up the rest. */
    size_t take = p->q_len / p->nthreads;
    take = take < 1 ? 1 : take > CHUNK ? CHUNK : take;
    dm__job *first = p->q_head, *last = first;
    for (size_t n = 1; last->next && n < take; n++)
      last = last->next;
    for (dm__job *j = first;; j = j->next) {
      p->q_len--;
      if (j == last)
        break;
    }
    p->q_head = last->next;
    if (!p->q_head)
      p->q_tail = NULL;
    last->next = NULL;
    if (p->q_head)
      pthread_cond_signal(&p->cv); /* more work for another thread */
    pthread_mutex_unlock(&p->mx);
    /* Run them; what is done goes back at the end, or as soon as the
     * chunk has run for a few milliseconds. */
    dm__job *done = first;
    uint64_t since = coarse_ms();
    for (dm__job *j = first; j;) {
      dm__job *next = j->next;
      j->run(j);
      if (next && coarse_ms() - since >= 4) {
        j->next = NULL;
        publish(p, done, j);
        done = next;
        since = coarse_ms();
      }
      j = next;
    }
    publish(p, done, last);
    pthread_mutex_lock(&p->mx);
  }
  pthread_mutex_unlock(&p->mx);
  return NULL;
}

static void hand_back(dm__pool *p, dm__job *j, int ran) {
  while (j) {
    dm__job *next = j->next;
    j->next = NULL;
    if (!ran)
      j->run = NULL;
    p->depth--;
    p->done(j, p->ud);
    j = next;
  }
}

void dm__pool_collect(dm__pool *p, int soon) {
  pthread_mutex_lock(&p->mx);
  /* Under the lock: a thread publishing after this sees the new flag, one
   * that published before left its jobs here. Nothing is stranded. */
  p->soon = soon;
  dm__job *j = p->d_head;
  p->d_head = p->d_tail = NULL;
  pthread_mutex_unlock(&p->mx);
  hand_back(p, j, 1);
}

static void on_async(uv_async_t *h) {
  dm__pool *p = h->data;
  pthread_mutex_lock(&p->mx);
  dm__job *j = p->d_head;
  p->d_head = p->d_tail = NULL;
  pthread_mutex_unlock(&p->mx);
  hand_back(p, j, 1);
}

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

void dm__pool_submit(dm__pool *p, dm__job *j) {
  j->next = NULL;
  append(&p->local_head, &p->local_tail, j, j);
  p->local_len++;
  p->depth++;
}

void dm__pool_flush(dm__pool *p) {
  if (!p->local_head)
    return;
  pthread_mutex_lock(&p->mx);
  append(&p->q_head, &p->q_tail, p->local_head, p->local_tail);
  p->q_len += p->local_len;
  pthread_mutex_unlock(&p->mx);
  /* One thread wakes; a thread that leaves work behind wakes the next, so
   * a small batch does not wake every thread for nothing. */
  pthread_cond_signal(&p->cv);
  p->local_head = p->local_tail = NULL;
  p->local_len = 0;
}

size_t dm__pool_depth(const dm__pool *p) { return p->depth; }

unsigned dm__pool_threads(const dm__pool *p) { return p->nthreads; }

static void on_closed(uv_handle_t *h) {
  dm__pool *p = h->data;
  pthread_mutex_destroy(&p->mx);
  pthread_cond_destroy(&p->cv);
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
  dm__job *d = p->d_head;
  p->d_head = p->d_tail = NULL;
  hand_back(p, d, 1);
  dm__job *q = p->q_head;
  p->q_head = p->q_tail = NULL;
  hand_back(p, q, 0);
  q = p->local_head;
  p->local_head = p->local_tail = NULL;
  hand_back(p, q, 0);
  uv_close((uv_handle_t *)&p->async, on_closed);
}
