/* A batch: the store changes of one loop turn, kept in order as an array
 * of operations over one byte buffer, and how a batch is written into a
 * write transaction on the writer thread. */
#include "store/store.h"

#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "dm.h"

dm__store_batch *dm__store_batch_new(void) {
  return dm__calloc(1, sizeof(dm__store_batch));
}

static int add(dm__store_batch *b, uint8_t kind, const char *id, size_t idlen,
               const char *rec, size_t reclen) {
  if (!b || b->inflight || !id || !idlen || (reclen && !rec))
    return DM_EINVAL;
  if (idlen > DM__STORE_ID_MAX || reclen > UINT32_MAX)
    return DM_ETOOBIG;
  int r = dm__array_grow((void **)&b->ops, &b->capops, b->nops + 1,
                         sizeof *b->ops, 64);
  if (!r)
    r = dm__array_grow((void **)&b->order, &b->caporder, b->nops + 1,
                       sizeof *b->order, 64);
  if (r || (r = dm__buf_reserve(&b->bytes, idlen + reclen)))
    return r;
  b->sorted = 0;
  b->ops[b->nops++] =
      (dm__store_op){b->bytes.len, (uint32_t)reclen, (uint16_t)idlen, kind};
  dm__buf_append(&b->bytes, id, idlen); /* reserved: cannot fail */
  dm__buf_append(&b->bytes, rec, reclen);
  b->nputs += kind == DM__STORE_PUT;
  b->ndels += kind == DM__STORE_DEL;
  return 0;
}

int dm__store_batch_put(dm__store_batch *b, const char *id, size_t idlen,
                        const char *rec, size_t reclen) {
  return add(b, DM__STORE_PUT, id, idlen, rec, reclen);
}

int dm__store_batch_del(dm__store_batch *b, const char *id, size_t idlen) {
  return add(b, DM__STORE_DEL, id, idlen, NULL, 0);
}

int dm__store_batch_deleted(dm__store_batch *b, const char *id, size_t idlen,
                            int on) {
  return add(b, on ? DM__STORE_MARK : DM__STORE_UNMARK, id, idlen, NULL, 0);
}

int dm__store_batch_reset(dm__store_batch *b) {
  if (!b || b->inflight)
    return DM_EINVAL;
  b->nops = b->nputs = b->ndels = 0;
  b->sorted = 0;
  b->bytes.len = 0;
  b->clear = 0;
  return 0;
}

int dm__store_batch_clear(dm__store_batch *b) {
  int r = dm__store_batch_reset(b);
  if (!r)
    b->clear = 1;
  return r;
}

size_t dm__store_batch_count(const dm__store_batch *b) {
  return b->nops + (b->clear ? 1 : 0);
}

void dm__store_batch_free(dm__store_batch *b) {
  if (!b)
    return;
  dm__buf_free(&b->bytes);
  dm__free(b->ops);
  dm__free(b->order);
  dm__free(b);
}

/* A del of an id that is not stored is no error: the loop dels what it
 * knows of, which may never have reached the store (its put failed). */
static int del(MDB_txn *t, MDB_dbi db, MDB_val *k) {
  int rc = mdb_del(t, db, k, NULL);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Operations by database, then id in LMDB's order (bytes, then length),
 * then as they came: a stable order, so the later of two operations on an
 * id still goes last. */
static int by_key(const void *x, const void *y, void *arg) {
  const dm__store_batch *b = arg;
  uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
  const dm__store_op *p = &b->ops[i], *q = &b->ops[j];
  int dp = p->kind >= DM__STORE_MARK, dq = q->kind >= DM__STORE_MARK;
  if (dp != dq)
    return dp - dq;
  int c = memcmp(b->bytes.data + p->off, b->bytes.data + q->off,
                 p->idlen < q->idlen ? p->idlen : q->idlen);
  if (c)
    return c;
  if (p->idlen != q->idlen)
    return p->idlen < q->idlen ? -1 : 1;
  return i < j ? -1 : 1;
}

int dm__store_batch_apply(dm__store_batch *b, MDB_txn *t, unsigned children,
                          unsigned deleted) {
  int rc;
  /* Operations on different ids commute, and so do children and deleted
   * marks: applied in key order, a batch walks the tree from left to right
   * instead of jumping about it. For a million ids in no order (a
   * checkpoint taken from the children table) that commits a tenth faster
   * and fills pages better: a third less file for a first load. */
  if (!b->sorted && b->nops) { /* a clear alone has nothing to order */
    for (size_t i = 0; i < b->nops; i++)
      b->order[i] = (uint32_t)i;
    qsort_r(b->order, b->nops, sizeof *b->order, by_key, b);
    b->sorted = 1;
  }
  if (b->clear &&
      ((rc = mdb_drop(t, children, 0)) || (rc = mdb_drop(t, deleted, 0))))
    return rc;
  MDB_val none = {0, NULL};
  for (size_t i = 0; i < b->nops; i++) {
    const dm__store_op *o = &b->ops[b->order[i]];
    MDB_val k = {o->idlen, b->bytes.data + o->off};
    switch (o->kind) {
    case DM__STORE_PUT: {
      MDB_val v = {o->reclen, b->bytes.data + o->off + o->idlen};
      rc = mdb_put(t, children, &k, &v, 0);
      break;
    }
    case DM__STORE_DEL:
      rc = del(t, children, &k);
      break;
    case DM__STORE_MARK:
      rc = mdb_put(t, deleted, &k, &none, 0);
      break;
    default:
      rc = del(t, deleted, &k);
      break;
    }
    if (rc)
      return rc;
  }
  return 0;
}
