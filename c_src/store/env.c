/* The store's LMDB environment: opened or created in its directory, checked
 * before anything is trusted (LMDB's own header checks, the file's length
 * against the pages the header claims, the meta database), grown when a
 * commit finds the map full, and its errors named for users. Opening
 * writes nothing to an existing store: a store that fails a check is left
 * exactly as it was found. */
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dm.h"

/* The smallest file LMDB leaves: its two meta pages of 4 KiB. */
#define MIN_FILE 8192
/* A file system with less room than this is full, for a store. */
#define FULL (1u << 20)

/* What to tell a user whose store fails a check: it is left alone. */
#define LEFT_ALONE                                                             \
  "; the node leaves it untouched: restore it from a backup, or move the "     \
  "directory away to start with an empty store"

static MDB_val str(const char *s) {
  return (MDB_val){strlen(s), (void *)s};
}

static void fail_env(dm__store_env *e) {
  mdb_env_close(e->env);
  e->env = NULL;
}

/* The map at open: the configured size, doubled while it is under twice
 * the data already there, within map_max. */
static size_t first_map(size_t map_size, size_t map_max, off_t have) {
  size_t m = map_size;
  while (m < map_max && (uint64_t)m < 2 * (uint64_t)have)
    m = m > map_max / 2 ? map_max : m * 2;
  return m;
}

/* A fresh store: the four databases, meta among them, in one transaction, so
 * a crash leaves either all of it or an empty environment, which the next
 * open takes for a fresh one too. */
static int create(dm__store_env *e, const char *path, const char *name,
                  char *err, size_t errlen) {
  MDB_txn *t;
  int rc = mdb_txn_begin(e->env, NULL, 0, &t);
  if (rc)
    goto fail;
  uint32_t v = htonl(DM__STORE_FORMAT);
  MDB_val kf = str("format"), vf = {sizeof v, &v};
  MDB_val kn = str("name"), vn = str(name);
  if ((rc = mdb_dbi_open(t, "children", MDB_CREATE, &e->children)) ||
      (rc = mdb_dbi_open(t, "deleted", MDB_CREATE, &e->deleted)) ||
      (rc = mdb_dbi_open(t, "state", MDB_CREATE, &e->state)) ||
      (rc = mdb_dbi_open(t, "meta", MDB_CREATE, &e->meta)) ||
      (rc = mdb_put(t, e->meta, &kf, &vf, 0)) ||
      (rc = mdb_put(t, e->meta, &kn, &vn, 0))) {
    mdb_txn_abort(t);
    goto fail;
  }
  if ((rc = mdb_txn_commit(t)))
    goto fail;
  return 0;
fail:
  snprintf(err, errlen, "store %s: cannot create it: %s", path,
           mdb_strerror(rc));
  return rc == ENOMEM ? DM_ENOMEM : DM_EIO;
}

/* Checks the meta of an existing environment and opens its databases, in
 * one read transaction. 0, 1 when the environment is empty (never
 * committed to: a fresh store), or a dm error with a message. */
static int check(dm__store_env *e, const char *path, const char *name,
                 char *err, size_t errlen) {
  MDB_txn *t;
  MDB_dbi main;
  MDB_stat ms;
  MDB_val k, v;
  int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &t);
  if (rc) {
    snprintf(err, errlen, "store %s: cannot read it: %s", path,
             mdb_strerror(rc));
    return DM_EIO;
  }
  const char *what = NULL;
  rc = mdb_dbi_open(t, "meta", 0, &e->meta);
  if (rc == MDB_NOTFOUND) {
    if (mdb_dbi_open(t, NULL, 0, &main) == 0 && mdb_stat(t, main, &ms) == 0 &&
        ms.ms_entries == 0) {
      mdb_txn_abort(t);
      return 1;
    }
    what = "it has no meta database: it is not a tarearbol_cnode store";
    goto corrupt;
  }
  if (rc) {
    what = mdb_strerror(rc);
    goto corrupt;
  }
  k = str("format");
  if ((rc = mdb_get(t, e->meta, &k, &v))) {
    what = rc == MDB_NOTFOUND ? "its meta has no format version"
                              : mdb_strerror(rc);
    goto corrupt;
  }
  if (v.mv_size != 4) {
    what = "its meta format version is not 4 bytes long";
    goto corrupt;
  }
  uint32_t format;
  memcpy(&format, v.mv_data, 4);
  format = ntohl(format);
  if (format != DM__STORE_FORMAT) {
    snprintf(err, errlen,
             "store %s has format version %u; this node reads version %u "
             "only and does not convert stores",
             path, format, DM__STORE_FORMAT);
    mdb_txn_abort(t);
    return DM_EINVAL;
  }
  k = str("name");
  if ((rc = mdb_get(t, e->meta, &k, &v))) {
    what = rc == MDB_NOTFOUND ? "its meta names no manager" : mdb_strerror(rc);
    goto corrupt;
  }
  if (v.mv_size != strlen(name) || memcmp(v.mv_data, name, v.mv_size)) {
    snprintf(err, errlen,
             "store %s belongs to manager \"%.*s\", not \"%s\"; the node "
             "leaves it untouched",
             path, (int)(v.mv_size > 200 ? 200 : v.mv_size),
             (const char *)v.mv_data, name);
    mdb_txn_abort(t);
    return DM_EINVAL;
  }
  if ((rc = mdb_dbi_open(t, "children", 0, &e->children)) ||
      (rc = mdb_dbi_open(t, "deleted", 0, &e->deleted)) ||
      (rc = mdb_dbi_open(t, "state", 0, &e->state))) {
    what =
        rc == MDB_NOTFOUND ? "a database of it is missing" : mdb_strerror(rc);
    goto corrupt;
  }
  /* Committed, not aborted: the handles opened here outlive the
   * transaction only so. */
  if ((rc = mdb_txn_commit(t))) {
    snprintf(err, errlen, "store %s: cannot read it: %s", path,
             mdb_strerror(rc));
    return DM_EIO;
  }
  return 0;
corrupt:
  snprintf(err, errlen, "store %s is corrupt (%s)" LEFT_ALONE, path, what);
  mdb_txn_abort(t);
  return DM_EIO;
}

int dm__store_env_open(dm__store_env *e, const char *path, const char *name,
                       size_t map_size, size_t map_max, char *err,
                       size_t errlen) {
  char data[PATH_MAX];
  struct stat st;
  int rc, exists = 0;
  memset(e, 0, sizeof *e);
  if ((size_t)snprintf(data, sizeof data, "%s/data.mdb", path) >= sizeof data) {
    snprintf(err, errlen, "store %s: path too long", path);
    return DM_EINVAL;
  }
  if (stat(data, &st) == 0) {
    exists = 1;
    if (!S_ISREG(st.st_mode)) {
      snprintf(err, errlen, "store %s: %s is not a regular file", path, data);
      return DM_EIO;
    }
    /* LMDB takes an empty file for a new one and would write into it. */
    if (st.st_size < MIN_FILE) {
      snprintf(err, errlen,
               "store %s is corrupt (data.mdb is %lld bytes long, "
               "truncated)" LEFT_ALONE,
               path, (long long)st.st_size);
      return DM_EIO;
    }
  } else if (errno != ENOENT) {
    snprintf(err, errlen, "store %s: cannot read %s: %s", path, data,
             strerror(errno));
    return DM_EIO;
  }
  e->map_max = map_max;
  e->map_size = first_map(map_size, map_max, exists ? st.st_size : 0);
  if ((rc = mdb_env_create(&e->env))) {
    snprintf(err, errlen, "store %s: %s", path, mdb_strerror(rc));
    return DM_ENOMEM;
  }
  /* No MDB_NOSYNC nor MDB_NOMETASYNC: every commit is durable when
   * mdb_txn_commit returns. */
  if ((rc = mdb_env_set_maxdbs(e->env, 5)) ||
      (rc = mdb_env_set_mapsize(e->env, e->map_size)) ||
      (rc = mdb_env_open(e->env, path, 0, 0600))) {
    if (rc == MDB_INVALID || rc == MDB_CORRUPTED)
      snprintf(err, errlen, "store %s is corrupt (%s)" LEFT_ALONE, path,
               mdb_strerror(rc));
    else if (rc == MDB_VERSION_MISMATCH)
      snprintf(err, errlen,
               "store %s is corrupt or was written by an incompatible LMDB "
               "(%s)" LEFT_ALONE,
               path, mdb_strerror(rc));
    else
      snprintf(err, errlen, "store %s: cannot open it: %s", path,
               mdb_strerror(rc));
    fail_env(e);
    return rc == ENOMEM ? DM_ENOMEM : DM_EIO;
  }
  if (mdb_env_get_maxkeysize(e->env) < DM__STORE_ID_MAX) {
    snprintf(err, errlen, "store %s: this LMDB takes keys of %d bytes at most",
             path, mdb_env_get_maxkeysize(e->env));
    fail_env(e);
    return DM_EINVAL;
  }
  MDB_stat es;
  MDB_envinfo info;
  mdb_env_stat(e->env, &es);
  e->psize = es.ms_psize;
  /* LMDB raises a map smaller than the data to fit it. */
  if (mdb_env_info(e->env, &info) == 0)
    e->map_size = info.me_mapsize;
  if (exists) {
    /* Pages past the end of the file would fault when read: the file must
     * hold every page its header counts. */
    uint64_t used = dm__store_env_used(e);
    if ((uint64_t)st.st_size < used) {
      snprintf(err, errlen,
               "store %s is corrupt (data.mdb is %lld bytes long, its "
               "header counts %llu, truncated)" LEFT_ALONE,
               path, (long long)st.st_size, (unsigned long long)used);
      fail_env(e);
      return DM_EIO;
    }
    rc = check(e, path, name, err, errlen);
    if (rc < 0) {
      fail_env(e);
      return rc;
    }
    if (rc == 0)
      return 0;
  }
  if ((rc = create(e, path, name, err, errlen))) {
    fail_env(e);
    return rc;
  }
  /* The new files' names must survive a power loss as their data does. */
  dm__store_sync_dir(path);
  return 0;
}

void dm__store_sync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0)
    DM_WARN("store %s: cannot sync the directory: %s", path, strerror(errno));
  if (fd >= 0)
    close(fd);
}

void dm__store_env_close(dm__store_env *e) {
  if (e->env)
    fail_env(e);
}

uint64_t dm__store_env_used(const dm__store_env *e) {
  MDB_envinfo info;
  if (mdb_env_info(e->env, &info))
    return 0;
  return ((uint64_t)info.me_last_pgno + 1) * e->psize;
}

void dm__store_env_release(dm__store_env *e) {
  /* LMDB does not tell where its map is (me_mapaddr is for MDB_FIXEDMAP
   * only): the kernel does, as the mapping of data.mdb's device and inode. */
  struct stat st;
  int fd;
  if (mdb_env_get_fd(e->env, &fd) || fstat(fd, &st))
    return;
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f)
    return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi, ino;
    unsigned maj, mnr;
    if (sscanf(line, "%lx-%lx %*s %*s %x:%x %lu", &lo, &hi, &maj, &mnr, &ino) == 5 &&
        ino == (unsigned long)st.st_ino && maj == major(st.st_dev) &&
        mnr == minor(st.st_dev))
      (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
  }
  fclose(f);
}

int dm__store_env_grow(dm__store_env *e) {
  if (e->map_size >= e->map_max)
    return MDB_MAP_FULL;
  size_t m = e->map_size > e->map_max / 2 ? e->map_max : e->map_size * 2;
  int rc = mdb_env_set_mapsize(e->env, m);
  MDB_envinfo info;
  if (rc)
    return rc;
  e->map_size = mdb_env_info(e->env, &info) == 0 ? info.me_mapsize : m;
  return 0;
}

int dm__store_env_refine(const char *path, int rc) {
  struct statvfs fs;
  /* LMDB reports a short write as EIO, and a full file system is where
   * short writes come from: say so when it is full. */
  if (rc == EIO && statvfs(path, &fs) == 0 &&
      (uint64_t)fs.f_bavail * fs.f_frsize < FULL)
    return ENOSPC;
  return rc;
}

const char *dm__store_env_reason(int rc, int *dm_err) {
  *dm_err = DM_EIO;
  switch (rc) {
  case MDB_MAP_FULL:
    *dm_err = DM_ETOOBIG;
    return "map_full";
  case MDB_TXN_FULL:
    *dm_err = DM_ETOOBIG;
    return "txn_full";
  case ENOMEM:
    *dm_err = DM_ENOMEM;
    return "enomem";
  case ENOSPC:
    return "enospc";
  case EDQUOT:
    return "edquot";
  case EIO:
    return "eio";
  case EROFS:
    return "erofs";
  case EFBIG:
    return "efbig";
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND:
    return "corrupt";
  case MDB_PANIC:
    return "panic";
  default:
    return "write_failed";
  }
}

/* jseq: the journal's last record that LMDB holds, 8 bytes big-endian in
 * meta, written in the transaction that applies it. */
static void be64(unsigned char p[8], uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
}

int dm__store_env_read_jseq(const dm__store_env *e, uint64_t *jseq, int *has,
                            const char *path, char *err, size_t errlen) {
  MDB_txn *t;
  MDB_val k = str("jseq"), v;
  *jseq = 0;
  *has = 0;
  int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &t);
  if (!rc) {
    rc = mdb_get(t, e->meta, &k, &v);
    if (!rc && v.mv_size == 8) {
      const unsigned char *p = v.mv_data;
      for (int i = 0; i < 8; i++)
        *jseq = *jseq << 8 | p[i];
      *has = 1;
    }
    mdb_txn_abort(t);
  }
  if (rc == MDB_NOTFOUND)
    return 0;
  if (rc) {
    snprintf(err, errlen, "store %s: cannot read it: %s", path,
             mdb_strerror(rc));
    return DM_EIO;
  }
  if (!*has) {
    snprintf(err, errlen, "store %s is corrupt (its meta jseq is %zu bytes "
             "long, not 8)" LEFT_ALONE, path, v.mv_size);
    return DM_EIO;
  }
  return 0;
}

int dm__store_env_put_jseq(const dm__store_env *e, struct MDB_txn *t,
                           uint64_t jseq) {
  unsigned char p[8];
  be64(p, jseq);
  MDB_val k = str("jseq"), v = {8, p};
  return mdb_put(t, e->meta, &k, &v, 0);
}
