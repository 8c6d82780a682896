/* The journal of a store: a file of fixed size, written in full when it is
 * created, in which the writer appends small batches and makes them durable
 * with one fdatasync before they go into LMDB. An LMDB commit costs two
 * syncs (its data pages, then its meta page); an overwrite of blocks the
 * file holds already costs one, and the cheapest one: no block is
 * allocated, no size changes. The journal holds only what LMDB has not
 * committed yet, and starts over (a new epoch in its header) once LMDB has
 * it all. At open, the records LMDB does not have (their seq is past the
 * jseq LMDB's meta holds) are read back and applied. */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dm.h"

#define MAGIC "TCNJRNL\0"
#define VERSION 1u
#define HEAD 4096u       /* the header's block; records follow it */
#define REC_HEAD 32u     /* a record's header */
#define REC_MAGIC 0x4a524543u
#define OP_HEAD 8u       /* kind, 0, idlen (2), reclen (4) */

#define LEFT_ALONE                                                             \
  "; the node leaves it untouched: restore the directory from a backup, or "   \
  "move it away to start with an empty store"

/* ---- bytes ---------------------------------------------------------------*/

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) {
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* CRC-32C (Castagnoli), bitwise by table. */
static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc_table[i] = c;
  }
}

uint32_t dm__store_crc32c(uint32_t crc, const void *data, size_t n) {
  if (!crc_table[1])
    crc_init(); /* journal_open fills it before any thread of the store runs */
  const unsigned char *p = data;
  crc = ~crc;
  while (n--)
    crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static size_t align8(size_t n) {
  return (n + 7) & ~(size_t)7;
}

/* ---- the header ----------------------------------------------------------*/

static void header(const dm__store_journal *j, unsigned char h[HEAD]) {
  memset(h, 0, HEAD);
  memcpy(h, MAGIC, 8);
  put32(h + 8, VERSION);
  put64(h + 16, j->epoch);
  put64(h + 24, j->size);
  uint32_t crc = dm__store_crc32c(0, h, 12);
  put32(h + 12, dm__store_crc32c(crc, h + 16, 16));
}

/* Writes the file in full, under a temporary name renamed once durable, so
 * that a crash never leaves a journal of the wrong size. */
static int create(dm__store_journal *j, const char *path, char *err,
                  size_t errlen) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.new", j->file);
  int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "store %s: cannot create %s: %s", path, tmp,
             strerror(errno));
    return DM_EIO;
  }
  j->epoch = 1;
  unsigned char *zero = dm__calloc(1, HEAD);
  int r = zero ? 0 : DM_ENOMEM;
  if (!r) {
    header(j, zero);
    for (uint64_t off = 0; off < j->size && !r; off += HEAD) {
      if (pwrite(fd, zero, HEAD, (off_t)off) != HEAD)
        r = DM_EIO;
      if (off == 0)
        memset(zero, 0, HEAD);
    }
  }
  dm__free(zero);
  if (!r && (fdatasync(fd) != 0 || rename(tmp, j->file) != 0))
    r = DM_EIO;
  if (r) {
    snprintf(err, errlen, "store %s: cannot create its journal: %s", path,
             r == DM_ENOMEM ? "out of memory" : strerror(errno));
    close(fd);
    unlink(tmp);
    return r;
  }
  dm__store_sync_dir(path);
  j->fd = fd;
  return 0;
}

/* Checks the header of an existing journal. */
static int check(dm__store_journal *j, const char *path, char *err,
                 size_t errlen) {
  struct stat st;
  unsigned char h[32];
  const char *what = NULL;
  if (fstat(j->fd, &st) != 0 || !S_ISREG(st.st_mode))
    what = "the journal is not a regular file";
  else if (pread(j->fd, h, sizeof h, 0) != (ssize_t)sizeof h)
    what = "the journal is shorter than its header";
  else if (memcmp(h, MAGIC, 8))
    what = "the journal's header is not a journal's";
  else if (get32(h + 8) != VERSION)
    what = "the journal has another format version";
  else if (get32(h + 12) !=
           dm__store_crc32c(dm__store_crc32c(0, h, 12), h + 16, 16))
    what = "the journal's header fails its checksum";
  else if (get64(h + 24) != (uint64_t)st.st_size || st.st_size < 2 * HEAD)
    what = "the journal's size is not the one its header names";
  if (what) {
    snprintf(err, errlen, "store %s is corrupt (%s)" LEFT_ALONE, path, what);
    return DM_EIO;
  }
  j->epoch = get64(h + 16);
  j->size = (uint64_t)st.st_size;
  return 0;
}

int dm__store_journal_open(dm__store_journal *j, const char *path,
                           size_t size, int may_create, char *err,
                           size_t errlen) {
  memset(j, 0, sizeof *j);
  j->fd = -1;
  if (!crc_table[1])
    crc_init();
  j->size = size ? size : DM__STORE_JOURNAL_SIZE;
  j->off = HEAD;
  size_t n = strlen(path) + sizeof "/journal";
  if (!(j->file = dm__malloc(n))) {
    snprintf(err, errlen, "store %s: out of memory", path);
    return DM_ENOMEM;
  }
  snprintf(j->file, n, "%s/journal", path);
  int r;
  j->fd = open(j->file, O_RDWR | O_CLOEXEC);
  if (j->fd < 0 && errno == ENOENT && may_create) {
    r = create(j, path, err, errlen);
  } else if (j->fd < 0) {
    if (errno == ENOENT)
      snprintf(err, errlen,
               "store %s is corrupt (its journal is missing, and LMDB's "
               "meta says it held changes)" LEFT_ALONE,
               path);
    else
      snprintf(err, errlen, "store %s: cannot open %s: %s", path, j->file,
               strerror(errno));
    r = DM_EIO;
  } else {
    r = check(j, path, err, errlen);
  }
  if (r)
    dm__store_journal_close(j);
  return r;
}

void dm__store_journal_close(dm__store_journal *j) {
  if (j->fd >= 0)
    close(j->fd);
  j->fd = -1;
  dm__buf_free(&j->out);
  dm__free(j->file);
  j->file = NULL;
}

/* ---- records -------------------------------------------------------------*/

size_t dm__store_journal_need(const dm__store_batch *b) {
  return REC_HEAD + align8(8 + b->nops * OP_HEAD + b->bytes.len);
}

int dm__store_journal_room(const dm__store_journal *j, size_t need) {
  return j->off + j->out.len + need <= j->size;
}

int dm__store_journal_add(dm__store_journal *j, dm__store_batch *b) {
  size_t need = dm__store_journal_need(b);
  int r = dm__buf_reserve(&j->out, need);
  if (r)
    return r;
  unsigned char *p = (unsigned char *)j->out.data + j->out.len;
  memset(p, 0, need);
  unsigned char *q = p + REC_HEAD;
  q[0] = (unsigned char)b->clear;
  put32(q + 4, (uint32_t)b->nops);
  q += 8;
  for (size_t i = 0; i < b->nops; i++) {
    const dm__store_op *o = &b->ops[i];
    q[0] = o->kind;
    q[2] = (unsigned char)o->idlen;
    q[3] = (unsigned char)(o->idlen >> 8);
    put32(q + 4, o->reclen);
    memcpy(q + OP_HEAD, b->bytes.data + o->off, (size_t)o->idlen + o->reclen);
    q += OP_HEAD + o->idlen + o->reclen;
  }
  size_t len = (size_t)(q - (p + REC_HEAD));
  b->jseq = j->next_seq ? ++j->next_seq : (j->next_seq = j->seq + 1);
  put32(p, REC_MAGIC);
  put32(p + 4, (uint32_t)len);
  put64(p + 8, j->epoch);
  put64(p + 16, b->jseq);
  uint32_t crc = dm__store_crc32c(0, p, 24);
  put32(p + 24, dm__store_crc32c(crc, p + REC_HEAD, len));
  j->out.len += need;
  return 0;
}

int dm__store_journal_write(dm__store_journal *j) {
  if (!j->out.len)
    return 0;
  size_t done = 0;
  int rc = 0;
  while (done < j->out.len) {
    ssize_t n = pwrite(j->fd, j->out.data + done, j->out.len - done,
                       (off_t)(j->off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? errno : EIO;
      break;
    }
    done += (size_t)n;
  }
  if (!rc && fdatasync(j->fd) != 0)
    rc = errno;
  if (rc) {
    /* The records are as good as not written: the next ones take their
     * place and their seqs. */
    j->next_seq = 0;
  } else {
    j->off += j->out.len;
    j->seq = j->next_seq;
    j->next_seq = 0;
    j->syncs++;
  }
  j->out.len = 0;
  return rc;
}

int dm__store_journal_reset(dm__store_journal *j) {
  unsigned char h[HEAD];
  j->epoch++;
  header(j, h);
  if (pwrite(j->fd, h, HEAD, 0) != HEAD || fdatasync(j->fd) != 0)
    return errno ? errno : EIO;
  j->off = HEAD;
  j->resets++;
  return 0;
}

int dm__store_journal_half_full(const dm__store_journal *j) {
  return j->off - HEAD > (j->size - HEAD) / 2;
}

/* The batch a record's payload p (n bytes, its checksum good) holds, or
 * NULL when it does not decode. */
static dm__store_batch *decode(const unsigned char *p, size_t n, int *oom) {
  if (n < 8 || p[0] > 1 || p[1] || p[2] || p[3])
    return NULL;
  uint32_t nops = get32(p + 4);
  dm__store_batch *b = dm__store_batch_new();
  if (!b || (p[0] && dm__store_batch_clear(b))) {
    *oom = 1;
    dm__store_batch_free(b);
    return NULL;
  }
  size_t at = 8;
  int r = 0;
  for (uint32_t i = 0; i < nops && !r; i++) {
    if (n - at < OP_HEAD) {
      r = DM_EINVAL;
      break;
    }
    const unsigned char *o = p + at;
    unsigned kind = o[0], idlen = o[2] | (unsigned)o[3] << 8;
    uint32_t reclen = get32(o + 4);
    if (o[1] || idlen == 0 || idlen > DM__STORE_ID_MAX ||
        (uint64_t)idlen + reclen > n - at - OP_HEAD) {
      r = DM_EINVAL;
      break;
    }
    const char *id = (const char *)o + OP_HEAD, *rec = id + idlen;
    switch (kind) {
    case DM__STORE_PUT:
      r = dm__store_batch_put(b, id, idlen, rec, reclen);
      break;
    case DM__STORE_DEL:
    case DM__STORE_MARK:
    case DM__STORE_UNMARK:
      r = reclen ? DM_EINVAL
          : kind == DM__STORE_DEL ? dm__store_batch_del(b, id, idlen)
                                  : dm__store_batch_deleted(
                                        b, id, idlen, kind == DM__STORE_MARK);
      break;
    case DM__STORE_STATE_PUT:
    case DM__STORE_STATE_DEL:
    case DM__STORE_STATE_CUT: {
      uint32_t key = (uint32_t)o[8] << 24 | (uint32_t)o[9] << 16 |
                     (uint32_t)o[10] << 8 | o[11];
      if (idlen != 4 || (kind == DM__STORE_STATE_PUT && reclen < DM__STORE_STATE_SEQ) ||
          (kind == DM__STORE_STATE_DEL && reclen) || (kind == DM__STORE_STATE_CUT && reclen != 4))
        r = DM_EINVAL;
      else if (kind == DM__STORE_STATE_CUT)
        r = dm__store_batch_state_cut(b, key,
                                      (uint32_t)(unsigned char)rec[0] << 24 |
                                          (uint32_t)(unsigned char)rec[1] << 16 |
                                          (uint32_t)(unsigned char)rec[2] << 8 |
                                          (unsigned char)rec[3]);
      else
        r = dm__store_batch_state(b, key, rec, reclen);
      break;
    }
    default:
      r = DM_EINVAL;
    }
    at += OP_HEAD + idlen + reclen;
  }
  if (!r && align8(at) != align8(n))
    r = DM_EINVAL; /* bytes past the last operation */
  if (r) {
    *oom = r == DM_ENOMEM;
    dm__store_batch_free(b);
    return NULL;
  }
  return b;
}

int dm__store_journal_replay(dm__store_journal *j, const char *path,
                             uint64_t after,
                             int (*fn)(void *ud, dm__store_batch *b),
                             void *ud, char *err, size_t errlen) {
  unsigned char h[REC_HEAD];
  unsigned char *p = NULL;
  uint64_t off = HEAD, expect = 0, last = after;
  int r = 0, first = 1;
  j->seq = after;
  while (off + REC_HEAD <= j->size) {
    if (pread(j->fd, h, REC_HEAD, (off_t)off) != REC_HEAD) {
      snprintf(err, errlen, "store %s: cannot read its journal: %s", path,
               strerror(errno));
      r = DM_EIO;
      break;
    }
    uint32_t len = get32(h + 4);
    uint64_t seq = get64(h + 16);
    /* The end of what was written since the header's epoch began: zeros, a
     * record of an older epoch, or one cut short by a crash before its
     * sync (then it was never acknowledged). */
    if (get32(h) != REC_MAGIC || get64(h + 8) != j->epoch ||
        len > j->size - off - REC_HEAD || (expect && seq != expect))
      break;
    unsigned char *np = dm__realloc(p, len ? len : 1);
    if (!np) {
      snprintf(err, errlen, "store %s: out of memory reading its journal",
               path);
      r = DM_ENOMEM;
      break;
    }
    p = np;
    if (pread(j->fd, p, len, (off_t)(off + REC_HEAD)) != (ssize_t)len) {
      snprintf(err, errlen, "store %s: cannot read its journal: %s", path,
               strerror(errno));
      r = DM_EIO;
      break;
    }
    uint32_t crc = dm__store_crc32c(dm__store_crc32c(0, h, 24), p, len);
    if (crc != get32(h + 24))
      break;
    expect = seq + 1;
    off += REC_HEAD + align8(len);
    if (seq <= after)
      continue; /* LMDB has it */
    if (first && seq != after + 1) {
      snprintf(err, errlen,
               "store %s is corrupt (its journal starts at change %llu, and "
               "LMDB holds changes up to %llu only)" LEFT_ALONE,
               path, (unsigned long long)seq, (unsigned long long)after);
      r = DM_EIO;
      break;
    }
    first = 0;
    int oom = 0;
    dm__store_batch *b = decode(p, len, &oom);
    if (!b) {
      if (oom)
        snprintf(err, errlen, "store %s: out of memory reading its journal",
                 path);
      else
        snprintf(err, errlen,
                 "store %s is corrupt (change %llu of its journal does not "
                 "decode)" LEFT_ALONE,
                 path, (unsigned long long)seq);
      r = oom ? DM_ENOMEM : DM_EIO;
      break;
    }
    b->jseq = seq;
    last = seq;
    if ((r = fn(ud, b)))
      break;
  }
  dm__free(p);
  j->seq = last;
  j->off = off;
  return r;
}
