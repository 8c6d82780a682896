/* The fixture of the store's tests: a state dir of its own and a loop,
 * batches submitted and waited for, and what load finds as text. */
#ifndef STORE_FIXTURE_H
#define STORE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dm.h"
#include "store/store.h"

/* ---- a state dir of its own, and a loop ----------------------------------*/

typedef struct {
  char dir[64];
  char path[128]; /* dir/mgr */
  char data[256]; /* dir/mgr/data.mdb */
  uv_loop_t loop;
  char err[512];
} fixture;

static inline int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  strcpy(f->dir, "/tmp/test_store.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/mgr", f->dir);
  snprintf(f->data, sizeof f->data, "%s/data.mdb", f->path);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  *state = f;
  return 0;
}

static inline int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static inline int teardown(void **state) {
  fixture *f = *state;
  /* The files go first: a failed test leaves no directory behind. */
  nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  int r = uv_loop_close(&f->loop);
  free(f);
  assert_int_equal(r, 0);
  return 0;
}

static inline dm__store *open_ok(fixture *f, const dm__store_limits *lim) {
  dm__store *s = NULL;
  int r = dm__store_open_with(&s, &f->loop, f->dir, "mgr", lim, f->err,
                              sizeof f->err);
  if (r)
    fail_msg("open: %s (%s)", f->err, dm_err_name(r));
  return s;
}

/* Stops, lets the loop close the handle (one turn: other stores may keep
 * the loop alive), frees. */
static inline void close_store(fixture *f, dm__store *s) {
  dm__store_stop(s);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  dm__store_free(s);
}

/* ---- submitting and waiting ----------------------------------------------*/

typedef struct {
  int n;          /* dones run */
  int order[256]; /* tag of each, in the order they ran */
  int rc[256];
  const char *why[256];
} dones;

typedef struct {
  dones *d;
  int tag;
} sub;

static inline void on_done(void *ud, dm__store_batch *b, int rc, const char *why) {
  sub *x = ud;
  dones *d = x->d;
  d->order[d->n] = x->tag;
  d->rc[d->n] = rc;
  d->why[d->n] = why;
  d->n++;
  dm__store_batch_free(b);
  free(x);
}

static inline void submit(dm__store *s, dm__store_batch *b, dones *d, int tag) {
  sub *x = malloc(sizeof *x);
  x->d = d;
  x->tag = tag;
  assert_int_equal(dm__store_submit(s, b, on_done, x), 0);
}

static inline void wait_for(fixture *f, dones *d, int n) {
  while (d->n < n)
    uv_run(&f->loop, UV_RUN_ONCE);
}

/* Submits b alone and returns its rc. */
static inline int commit(fixture *f, dm__store *s, dm__store_batch *b) {
  dones d = {0};
  submit(s, b, &d, 0);
  wait_for(f, &d, 1);
  return d.rc[0];
}

static inline void put(dm__store_batch *b, const char *id, const char *rec) {
  assert_int_equal(dm__store_batch_put(b, id, strlen(id), rec, strlen(rec)), 0);
}

static inline void del(dm__store_batch *b, const char *id) {
  assert_int_equal(dm__store_batch_del(b, id, strlen(id)), 0);
}

static inline void mark(dm__store_batch *b, const char *id, int on) {
  assert_int_equal(dm__store_batch_deleted(b, id, strlen(id), on), 0);
}

/* ---- loading into text
 * -----------------------------------------------------*/

/* What load finds, as "id=rec;" for children and "id;" for deleted ids. */
typedef struct {
  char children[4096], deleted[1024];
  size_t nchildren, ndeleted;
  int stop_after; /* a callback returns 7 after this many children */
} seen;

static inline int on_child(void *ud, const char *id, size_t idlen, const char *rec,
                    size_t reclen) {
  seen *z = ud;
  if (z->stop_after && z->nchildren == (size_t)z->stop_after)
    return 7;
  z->nchildren++;
  size_t n = strlen(z->children);
  if (n + idlen + reclen + 3 < sizeof z->children)
    snprintf(z->children + n, sizeof z->children - n, "%.*s=%.*s;", (int)idlen,
             id, (int)reclen, rec);
  return 0;
}

static inline int on_deleted(void *ud, const char *id, size_t idlen) {
  seen *z = ud;
  z->ndeleted++;
  size_t n = strlen(z->deleted);
  snprintf(z->deleted + n, sizeof z->deleted - n, "%.*s;", (int)idlen, id);
  return 0;
}

static inline seen load(dm__store *s) {
  seen z;
  memset(&z, 0, sizeof z);
  assert_int_equal(dm__store_load(s, on_child, on_deleted, &z), 0);
  return z;
}

/* ---- files ---------------------------------------------------------------*/

static inline char *slurp(const char *p, size_t *n) {
  FILE *fp = fopen(p, "rb");
  assert_non_null(fp);
  fseek(fp, 0, SEEK_END);
  *n = (size_t)ftell(fp);
  fseek(fp, 0, SEEK_SET);
  char *buf = malloc(*n ? *n : 1);
  assert_int_equal(fread(buf, 1, *n, fp), *n);
  fclose(fp);
  return buf;
}

#endif
