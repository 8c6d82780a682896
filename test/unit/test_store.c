/* The store: what a committed batch holds comes back from load, in order
 * and with later operations winning; dones run on the loop in submission
 * order; a store survives its stop; and a store that is held, of another
 * version, of another manager or corrupt is refused, byte for byte
 * untouched. A map too small for a batch fails that batch alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dm.h"
#include "store/store.h"

#include "store_fixture.h"

/* Opening is refused with an error containing want, and data.mdb is the
 * same, byte for byte, afterwards. */
static void refused(fixture *f, int want_rc, const char *want) {
  size_t n0, n1;
  char *before = slurp(f->data, &n0);
  dm__store *s = NULL;
  int r = dm__store_open(&s, &f->loop, f->dir, "mgr", f->err, sizeof f->err);
  assert_int_equal(r, want_rc);
  assert_null(s);
  if (!strstr(f->err, want))
    fail_msg("error \"%s\" does not say \"%s\"", f->err, want);
  char *after = slurp(f->data, &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  free(before);
  free(after);
}

/* A store of manager mgr with a few children, stopped. */
static void make_store(fixture *f, int children) {
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  char id[32], rec[128];
  for (int i = 0; i < children; i++) {
    snprintf(id, sizeof id, "child-%06d", i);
    memset(rec, 'r', sizeof rec - 1);
    rec[sizeof rec - 1] = '\0';
    put(b, id, rec);
  }
  assert_int_equal(commit(f, s, b), 0);
  close_store(f, s);
}

/* ---- the tests -----------------------------------------------------------*/

static void puts_dels_and_deleted_marks_come_back_from_load(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  seen z = load(s);
  assert_int_equal(z.nchildren + z.ndeleted, 0);
  dm__store_batch *b = dm__store_batch_new();
  put(b, "a", "one");
  put(b, "b", "two");
  put(b, "c", "three");
  mark(b, "spec1", 1);
  mark(b, "spec2", 1);
  assert_int_equal(dm__store_batch_count(b), 5);
  assert_int_equal(commit(f, s, b), 0);
  z = load(s);
  assert_string_equal(z.children, "a=one;b=two;c=three;");
  assert_string_equal(z.deleted, "spec1;spec2;");
  b = dm__store_batch_new();
  del(b, "b");
  del(b, "never-there"); /* no error */
  put(b, "a", "uno");
  mark(b, "spec1", 0);
  assert_int_equal(commit(f, s, b), 0);
  z = load(s);
  assert_string_equal(z.children, "a=uno;c=three;");
  assert_string_equal(z.deleted, "spec2;");
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  assert_int_equal(st.batches, 2);
  assert_int_equal(st.commits, 2);
  assert_int_equal(st.records_put, 4);
  assert_int_equal(st.records_deleted, 2);
  assert_int_equal(st.commit_failures, 0);
  assert_int_equal(st.queued, 0);
  assert_true(st.map_used > 0 && st.map_used <= st.map_size);
  assert_int_equal(st.map_size, DM__STORE_MAP_SIZE);
  close_store(f, s);
}

static void a_later_operation_on_the_same_id_wins_within_a_batch(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  put(b, "x", "1");
  put(b, "x", "2");
  put(b, "y", "1");
  del(b, "y");
  del(b, "z");
  put(b, "z", "back");
  mark(b, "m", 1);
  mark(b, "m", 0);
  mark(b, "n", 0);
  mark(b, "n", 1);
  assert_int_equal(commit(f, s, b), 0);
  seen z = load(s);
  assert_string_equal(z.children, "x=2;z=back;");
  assert_string_equal(z.deleted, "n;");
  close_store(f, s);
}

/* What load finds of a large batch, checked against the model. */
typedef struct {
  int n;
  int bad;
  char want[2000]; /* per i: 0 absent, else the record's letter */
} model;

static int check_child(void *ud, const char *id, size_t idlen, const char *rec,
                       size_t reclen) {
  model *m = ud;
  /* ids: "same-prefix-" then i as decimal, so they share 8 bytes and more */
  int i = atoi(id + 12);
  if (idlen < 13 || i < 0 || i >= 2000 || reclen != 1 || m->want[i] != rec[0])
    m->bad++;
  m->n++;
  return 0;
}

static void
a_large_batch_in_no_order_keeps_later_operations_last(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  model m;
  memset(&m, 0, sizeof m);
  char id[32];
  /* Three passes over the ids, each in another order: a put of 'a' for
   * all, a del of the even ones, a put of 'c' for every third one. */
  for (int k = 0; k < 2000; k++) {
    int i = 1999 - k;
    snprintf(id, sizeof id, "same-prefix-%d", i);
    assert_int_equal(dm__store_batch_put(b, id, strlen(id), "a", 1), 0);
    m.want[i] = 'a';
  }
  for (int k = 0; k < 2000; k++) {
    int i = (k * 7) % 2000;
    if (i % 2)
      continue;
    snprintf(id, sizeof id, "same-prefix-%d", i);
    del(b, id);
    m.want[i] = 0;
  }
  for (int i = 0; i < 2000; i += 3) {
    snprintf(id, sizeof id, "same-prefix-%d", i);
    assert_int_equal(dm__store_batch_put(b, id, strlen(id), "c", 1), 0);
    m.want[i] = 'c';
  }
  assert_int_equal(commit(f, s, b), 0);
  assert_int_equal(dm__store_load(s, check_child, NULL, &m), 0);
  int want = 0;
  for (int i = 0; i < 2000; i++)
    want += m.want[i] != 0;
  assert_int_equal(m.n, want);
  assert_int_equal(m.bad, 0);
  close_store(f, s);
}

static int count_child(void *ud, const char *id, size_t idlen, const char *rec,
                       size_t reclen) {
  (void)id, (void)idlen, (void)rec, (void)reclen;
  (*(size_t *)ud)++;
  return 0;
}

/* What load_state finds, as "key=rec;" in key order. */
typedef struct {
  char text[512];
  size_t n, bytes;
} states;

static int on_state(void *ud, uint32_t key, const char *rec, size_t len) {
  states *z = ud;
  z->n++;
  z->bytes += len;
  size_t n = strlen(z->text);
  if (len < 64)
    snprintf(z->text + n, sizeof z->text - n, "%u=%.*s;", key, (int)len, rec);
  return 0;
}

/* A state record: an 8-byte sequence number (ASCII digits compare as the
 * big-endian number they are), then text. */
static int state_of(dm__store_batch *b, uint32_t key, unsigned seq, const char *text) {
  char rec[64];
  snprintf(rec, sizeof rec, "%08u%s", seq, text);
  return dm__store_batch_state(b, key, rec, strlen(rec));
}

static void state_records_come_back_oldest_first_and_go_with_clear(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  assert_int_equal(state_of(b, 4096, 1, "d"), 0);
  assert_int_equal(state_of(b, 3, 2, "c"), 0);
  assert_int_equal(state_of(b, 1, 3, "a"), 0);
  assert_int_equal(state_of(b, 2, 2, "x"), 0);
  assert_int_equal(state_of(b, 2, 1, "b"), 0); /* the later wins */
  assert_int_equal(state_of(b, 9, 2, "e"), 0);
  assert_int_equal(dm__store_batch_state(b, 4096, NULL, 0), 0); /* removed */
  /* Too short to hold a sequence number. */
  assert_int_equal(dm__store_batch_state(b, 5, "1234567", 7), DM_EINVAL);
  char *room;
  assert_int_equal(dm__store_batch_state_room(b, 5, 7, &room), DM_EINVAL);
  put(b, "child", "r");
  assert_int_equal(commit(f, s, b), 0);
  states z = {{0}, 0, 0};
  assert_int_equal(dm__store_load_state(s, on_state, &z), 0);
  /* By sequence number, then key. */
  assert_string_equal(z.text, "2=00000001b;3=00000002c;9=00000002e;1=00000003a;");
  seen c = load(s);
  assert_string_equal(c.children, "child=r;");
  b = dm__store_batch_new();
  assert_int_equal(dm__store_batch_clear(b), 0);
  assert_int_equal(state_of(b, 7, 1, "n"), 0);
  assert_int_equal(commit(f, s, b), 0);
  memset(&z, 0, sizeof z);
  assert_int_equal(dm__store_load_state(s, on_state, &z), 0);
  assert_string_equal(z.text, "7=00000001n;");
  close_store(f, s);
}

/* A cut removes the records of its range, both ends included, and no
 * other; it runs in key order with the batch's other state records. */
static void a_cut_removes_its_range_of_state_records(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  const uint32_t keys[] = {1, 2, 3, 4, 5, 0x80000000u, 0x80000001u, 0xffffffffu};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    assert_int_equal(state_of(b, keys[i], 1, "k"), 0);
  assert_int_equal(commit(f, s, b), 0);
  b = dm__store_batch_new();
  assert_int_equal(dm__store_batch_state_cut(b, 3, 2), DM_EINVAL);
  assert_int_equal(dm__store_batch_state_cut(b, 2, 4), 0);
  assert_int_equal(state_of(b, 3, 2, "new"), 0); /* a later key than the cut's: stays */
  assert_int_equal(dm__store_batch_state_cut(b, 0x80000001u, 0xffffffffu), 0);
  assert_int_equal(commit(f, s, b), 0);
  states z = {{0}, 0, 0};
  assert_int_equal(dm__store_load_state(s, on_state, &z), 0);
  assert_string_equal(z.text, "1=00000001k;5=00000001k;2147483648=00000001k;3=00000002new;");
  close_store(f, s);
}

/* Writes key -> val into the store's database db behind its back, as a
 * damaged or foreign file would hold it. */
static void raw_put(fixture *f, const char *db, const void *key, size_t klen,
                    const void *val, size_t vlen) {
  MDB_env *env;
  MDB_txn *t;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 5);
  assert_int_equal(mdb_env_open(env, f->path, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
  assert_int_equal(mdb_dbi_open(t, db, 0, &dbi), 0);
  MDB_val k = {klen, (void *)key}, d = {vlen, (void *)val};
  assert_int_equal(mdb_put(t, dbi, &k, &d, 0), 0);
  assert_int_equal(mdb_txn_commit(t), 0);
  mdb_env_close(env);
}

/* A state record too short for its sequence number, written behind the
 * store's back, makes the store corrupt: load_state says so. */
static void a_state_record_without_a_sequence_number_is_corrupt(void **state) {
  fixture *f = *state;
  make_store(f, 1);
  raw_put(f, "state", "\0\0\0\1", 4, "abc", 3);
  dm__store *s = open_ok(f, NULL);
  states z = {{0}, 0, 0};
  assert_int_equal(dm__store_load_state(s, on_state, &z), DM_EIO);
  assert_int_equal(z.n, 0);
  close_store(f, s);
}

/* LMDB numbers its write transactions: how many this store has seen. */
static size_t txns_of(fixture *f) {
  MDB_env *env;
  MDB_envinfo info;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 5);
  assert_int_equal(mdb_env_open(env, f->path, MDB_RDONLY, 0600), 0);
  assert_int_equal(mdb_env_info(env, &info), 0);
  mdb_env_close(env);
  return info.me_last_txnid;
}

static void a_batch_bigger_than_a_transaction_commits_whole_in_several(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  close_store(f, s);
  size_t before = txns_of(f);
  s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  char id[32];
  enum { N = 30000 };
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "child-%06d", i);
    assert_int_equal(dm__store_batch_put(b, id, strlen(id), "rec", 3), 0);
  }
  /* And bytes past a transaction's share: 6 records of 1 MiB. */
  char *big = malloc(1 << 20);
  memset(big, 'z', 1 << 20);
  for (uint32_t k = 0; k < 6; k++)
    assert_int_equal(dm__store_batch_state(b, k, big, 1 << 20), 0);
  free(big);
  dones d = {0};
  submit(s, b, &d, 0);
  wait_for(f, &d, 1);
  assert_int_equal(d.rc[0], 0);
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  assert_int_equal(st.records_put, N);
  assert_int_equal(st.states_put, 6);
  size_t n = 0;
  assert_int_equal(dm__store_load(s, count_child, NULL, &n), 0);
  assert_int_equal(n, N);
  states z = {{0}, 0, 0};
  assert_int_equal(dm__store_load_state(s, on_state, &z), 0);
  assert_int_equal(z.n, 6);
  assert_int_equal(z.bytes, (size_t)6 << 20);
  close_store(f, s);
  /* 30000 operations and 6 MiB do not go in one transaction. */
  assert_true(txns_of(f) - before >= 4);
}

static void clear_empties_the_store_before_the_rest_of_its_batch(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  put(b, "old1", "a");
  put(b, "old2", "b");
  mark(b, "spec", 1);
  assert_int_equal(commit(f, s, b), 0);
  b = dm__store_batch_new();
  put(b, "dropped", "by the clear after it");
  assert_int_equal(dm__store_batch_clear(b), 0);
  assert_int_equal(dm__store_batch_count(b), 1);
  put(b, "new", "c");
  mark(b, "spec2", 1);
  assert_int_equal(dm__store_batch_count(b), 3);
  assert_int_equal(commit(f, s, b), 0);
  seen z = load(s);
  assert_string_equal(z.children, "new=c;");
  assert_string_equal(z.deleted, "spec2;");
  /* A clear alone empties it. */
  b = dm__store_batch_new();
  assert_int_equal(dm__store_batch_clear(b), 0);
  assert_int_equal(commit(f, s, b), 0);
  z = load(s);
  assert_int_equal(z.nchildren + z.ndeleted, 0);
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  assert_int_equal(st.clears, 2);
  close_store(f, s);
}

static void dones_run_on_the_loop_in_submission_order(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dones d = {0};
  char id[16];
  for (int i = 0; i < 40; i++) {
    dm__store_batch *b = dm__store_batch_new();
    snprintf(id, sizeof id, "k%02d", i);
    put(b, id, "v");
    if (i % 10 == 9)
      del(b, "k00");
    submit(s, b, &d, i);
  }
  /* An empty batch keeps its place in the order too. */
  submit(s, dm__store_batch_new(), &d, 40);
  wait_for(f, &d, 41);
  for (int i = 0; i <= 40; i++) {
    assert_int_equal(d.order[i], i);
    assert_int_equal(d.rc[i], 0);
    assert_null(d.why[i]);
  }
  seen z = load(s);
  assert_int_equal(z.nchildren, 39);
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  assert_int_equal(st.batches, 41);
  /* Queued batches share commits; the empty one needs none. */
  assert_true(st.commits >= 1 && st.commits <= 40);
  assert_int_equal(st.queued, 0);
  close_store(f, s);
}

static void a_store_keeps_its_data_across_stop_and_reopen(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  put(b, "kept", "payload");
  mark(b, "gone", 1);
  assert_int_equal(commit(f, s, b), 0);
  close_store(f, s);
  s = open_ok(f, NULL);
  seen z = load(s);
  assert_string_equal(z.children, "kept=payload;");
  assert_string_equal(z.deleted, "gone;");
  close_store(f, s);
}

static void a_held_state_dir_is_refused_naming_the_holder(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store *t = NULL;
  int r = dm__store_open(&t, &f->loop, f->dir, "mgr", f->err, sizeof f->err);
  assert_int_equal(r, DM_EEXISTS);
  assert_null(t);
  char want[256];
  snprintf(want, sizeof want,
           "state dir %s is held by another running node (pid %ld)", f->path,
           (long)getpid());
  assert_string_equal(f->err, want);
  /* Another manager in the same dir is a store of its own. */
  r = dm__store_open(&t, &f->loop, f->dir, "other", f->err, sizeof f->err);
  assert_int_equal(r, 0);
  close_store(f, t);
  /* Once the holder stops, the dir is free. */
  close_store(f, s);
  s = open_ok(f, NULL);
  close_store(f, s);
}

static void another_format_version_is_refused_naming_both(void **state) {
  fixture *f = *state;
  make_store(f, 3);
  uint32_t v = htonl(DM__STORE_FORMAT + 1);
  raw_put(f, "meta", "format", 6, &v, 4);
  char want[80];
  snprintf(want, sizeof want, "has format version %u; this node reads version %u",
           DM__STORE_FORMAT + 1, DM__STORE_FORMAT);
  refused(f, DM_EINVAL, want);
}

static void a_store_of_another_manager_is_refused(void **state) {
  fixture *f = *state;
  make_store(f, 1);
  char other[160];
  snprintf(other, sizeof other, "%s/renamed", f->dir);
  assert_int_equal(rename(f->path, other), 0);
  snprintf(f->data, sizeof f->data, "%s/data.mdb", other);
  dm__store *s = NULL;
  size_t n0, n1;
  char *before = slurp(f->data, &n0);
  int r =
      dm__store_open(&s, &f->loop, f->dir, "renamed", f->err, sizeof f->err);
  assert_int_equal(r, DM_EINVAL);
  assert_non_null(
      strstr(f->err, "belongs to manager \"mgr\", not \"renamed\""));
  char *after = slurp(f->data, &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  free(before);
  free(after);
}

static void overwritten_headers_are_refused_as_corrupt_untouched(void **state) {
  fixture *f = *state;
  make_store(f, 50);
  int fd = open(f->data, O_WRONLY);
  char junk[8192];
  memset(junk, 0x5a, sizeof junk);
  assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
  close(fd);
  refused(f, DM_EIO, "is corrupt");
  /* The same for one meta page alone. */
  nftw(f->path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  make_store(f, 50);
  fd = open(f->data, O_WRONLY);
  assert_int_equal(pwrite(fd, junk, 64, 4096), 64);
  close(fd);
  refused(f, DM_EIO, "is corrupt");
}

static void a_file_of_garbage_is_refused_as_corrupt_untouched(void **state) {
  fixture *f = *state;
  assert_int_equal(mkdir(f->path, 0700), 0);
  FILE *fp = fopen(f->data, "wb");
  for (int i = 0; i < 65536; i++)
    fputc((i * 7919) & 0xff, fp);
  fclose(fp);
  refused(f, DM_EIO, "is corrupt");
}

static void a_truncated_file_is_refused_as_corrupt_untouched(void **state) {
  fixture *f = *state;
  make_store(f, 400); /* some pages past the first few */
  struct stat st;
  assert_int_equal(stat(f->data, &st), 0);
  assert_true(st.st_size > 8 * 4096);
  assert_int_equal(truncate(f->data, 4 * 4096), 0);
  refused(f, DM_EIO, "truncated");
  assert_int_equal(truncate(f->data, 5000), 0);
  refused(f, DM_EIO, "truncated");
  /* LMDB would take an empty file for a new one: not here. */
  assert_int_equal(truncate(f->data, 0), 0);
  refused(f, DM_EIO, "data.mdb is 0 bytes long, truncated");
}

static void an_environment_never_committed_to_opens_fresh(void **state) {
  fixture *f = *state;
  /* What a crash between LMDB's creation of the file and the store's
   * first commit leaves. */
  assert_int_equal(mkdir(f->path, 0700), 0);
  MDB_env *env;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, f->path, 0, 0600), 0);
  mdb_env_close(env);
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  put(b, "a", "1");
  assert_int_equal(commit(f, s, b), 0);
  close_store(f, s);
  s = open_ok(f, NULL);
  seen z = load(s);
  assert_string_equal(z.children, "a=1;");
  close_store(f, s);
}

static void
a_full_map_fails_that_batch_alone_and_the_store_goes_on(void **state) {
  fixture *f = *state;
  dm__store_limits lim = {64 << 10, 128 << 10, 0, 0};
  dm__store *s = open_ok(f, &lim);
  dm__store_batch *big = dm__store_batch_new();
  char id[32], rec[256];
  memset(rec, 'p', sizeof rec);
  for (int i = 0; i < 1000; i++) { /* some 280 KB: over the map's 128 KiB */
    snprintf(id, sizeof id, "big-%04d", i);
    assert_int_equal(dm__store_batch_put(big, id, strlen(id), rec, sizeof rec),
                     0);
  }
  dm__store_batch *small = dm__store_batch_new();
  put(small, "small", "fits");
  dones d = {0};
  submit(s, big, &d, 0);
  submit(s, small, &d, 1);
  wait_for(f, &d, 2);
  assert_int_equal(d.order[0], 0);
  assert_int_equal(d.rc[0], DM_ETOOBIG);
  assert_string_equal(d.why[0], "map_full");
  assert_int_equal(d.order[1], 1);
  assert_int_equal(d.rc[1], 0);
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  assert_int_equal(st.commit_failures, 1);
  assert_int_equal(st.map_grown, 1); /* it tried: 64 KiB to 128 KiB */
  assert_int_equal(st.map_size, 128 << 10);
  /* Smaller batches still commit, and nothing of the big one is there. */
  dm__store_batch *b = dm__store_batch_new();
  put(b, "after", "ok");
  assert_int_equal(commit(f, s, b), 0);
  seen z = load(s);
  assert_string_equal(z.children, "after=ok;small=fits;");
  close_store(f, s);
}

static dm__store_batch *filled(const char *prefix, int n) {
  dm__store_batch *b = dm__store_batch_new();
  char id[32], rec[256];
  memset(rec, 'p', sizeof rec);
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "%s-%04d", prefix, i);
    assert_int_equal(dm__store_batch_put(b, id, strlen(id), rec, sizeof rec),
                     0);
  }
  return b;
}

typedef struct {
  dm__store *s;
  dones *d;
  int once;
} queue_during_load;

/* Runs while load holds off any growth of the map: the first batch finds
 * the map full and waits to grow it, so the next two queue up behind it
 * and go to the writer together. */
static int queue_behind_a_growing_batch(void *ud, const char *id, size_t idlen,
                                        const char *rec, size_t reclen) {
  queue_during_load *q = ud;
  if (q->once++)
    return 0;
  submit(q->s, filled("grows", 300), q->d, 0); /* some 85 KB */
  struct timespec ts = {0, 100 * 1000000L};
  nanosleep(&ts, NULL);
  submit(q->s, filled("big", 1000), q->d, 1); /* some 280 KB */
  dm__store_batch *small = dm__store_batch_new();
  put(small, "small", "fits");
  submit(q->s, small, q->d, 2);
  return 0;
}

static void an_oversized_batch_queued_with_others_fails_alone(void **state) {
  fixture *f = *state;
  dm__store_limits lim = {64 << 10, 256 << 10, 0, 0};
  dm__store *s = open_ok(f, &lim);
  dm__store_batch *b = dm__store_batch_new();
  put(b, "first", "1");
  assert_int_equal(commit(f, s, b), 0);
  dones d = {0};
  queue_during_load q = {s, &d, 0};
  assert_int_equal(dm__store_load(s, queue_behind_a_growing_batch, NULL, &q),
                   0);
  wait_for(f, &d, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(d.order[i], i);
  assert_int_equal(d.rc[0], 0);
  assert_int_equal(d.rc[1], DM_ETOOBIG);
  assert_string_equal(d.why[1], "map_full");
  assert_int_equal(d.rc[2], 0);
  seen z = load(s);
  assert_int_equal(z.nchildren, 1 + 300 + 1);
  assert_null(strstr(z.children, "big-"));
  assert_non_null(strstr(z.children, "small=fits;"));
  close_store(f, s);
}

static void a_full_map_doubles_and_the_batch_commits(void **state) {
  fixture *f = *state;
  dm__store_limits lim = {64 << 10, 1 << 20, 0, 0};
  dm__store *s = open_ok(f, &lim);
  dm__store_batch *b = dm__store_batch_new();
  char id[32], rec[256];
  memset(rec, 'p', sizeof rec);
  for (int i = 0; i < 1000; i++) {
    snprintf(id, sizeof id, "big-%04d", i);
    assert_int_equal(dm__store_batch_put(b, id, strlen(id), rec, sizeof rec),
                     0);
  }
  assert_int_equal(commit(f, s, b), 0);
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  assert_true(st.map_grown >= 2); /* 64 KiB is a fifth of what it needs */
  assert_true(st.map_size > st.map_used);
  assert_true(st.map_size <= 1 << 20);
  close_store(f, s);
  /* Reopened with the same small start, the map makes room at once. */
  s = open_ok(f, &lim);
  dm__store_get_stats(s, &st);
  assert_true(st.map_size >= 2 * st.map_used || st.map_size == 1 << 20);
  seen z = load(s);
  assert_int_equal(z.nchildren, 1000);
  close_store(f, s);
}

static void stop_commits_what_is_queued_and_runs_its_dones(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dones d = {0};
  char id[32];
  for (int i = 0; i < 3; i++) {
    dm__store_batch *b = dm__store_batch_new();
    for (int j = 0; j < 500; j++) {
      snprintf(id, sizeof id, "q%d-%03d", i, j);
      put(b, id, "queued");
    }
    submit(s, b, &d, i);
  }
  dm__store_stop(s); /* the loop never ran */
  assert_int_equal(d.n, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(d.order[i], i);
    assert_int_equal(d.rc[i], 0);
  }
  dm__store_batch *late = dm__store_batch_new();
  put(late, "late", "x");
  assert_int_equal(dm__store_submit(s, late, on_done, NULL), DM_ECLOSED);
  dm__store_batch_free(late);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  dm__store_free(s);
  s = open_ok(f, NULL);
  seen z = load(s);
  assert_int_equal(z.nchildren, 1500);
  close_store(f, s);
}

static void load_stops_when_a_callback_says_so(void **state) {
  fixture *f = *state;
  make_store(f, 10);
  dm__store *s = open_ok(f, NULL);
  seen z;
  memset(&z, 0, sizeof z);
  z.stop_after = 4;
  assert_int_equal(dm__store_load(s, on_child, on_deleted, &z), 7);
  assert_int_equal(z.nchildren, 4);
  assert_int_equal(z.ndeleted, 0);
  memset(&z, 0, sizeof z);
  assert_int_equal(dm__store_load(s, NULL, on_deleted, &z), 0);
  close_store(f, s);
}

static void batches_refuse_bad_ids_and_changes_in_flight(void **state) {
  fixture *f = *state;
  dm__store *s = open_ok(f, NULL);
  dm__store_batch *b = dm__store_batch_new();
  char id[DM__STORE_ID_MAX + 1];
  memset(id, 'i', sizeof id);
  assert_int_equal(dm__store_batch_put(b, id, 0, "r", 1), DM_EINVAL);
  assert_int_equal(dm__store_batch_put(b, id, sizeof id, "r", 1), DM_ETOOBIG);
  assert_int_equal(dm__store_batch_put(b, id, DM__STORE_ID_MAX, "r", 1), 0);
  assert_int_equal(dm__store_batch_put(b, "e", 1, NULL, 0), 0); /* empty rec */
  assert_int_equal(dm__store_batch_count(b), 2);
  /* Out of memory, for the operations or for the bytes: refused, and the
   * batch is as it was. */
  dm__store_batch *fresh = dm__store_batch_new();
  for (long after = 0; after < 2; after++) {
    dm__alloc_fail_after(after);
    assert_int_equal(dm__store_batch_put(fresh, "x", 1, "r", 1), DM_ENOMEM);
    dm__alloc_fail_after(-1);
    assert_int_equal(dm__store_batch_count(fresh), 0);
  }
  assert_int_equal(dm__store_batch_put(fresh, "x", 1, "r", 1), 0);
  assert_int_equal(dm__store_batch_count(fresh), 1);
  dm__store_batch_free(fresh);
  dones d = {0};
  submit(s, b, &d, 0);
  /* The writer may be reading it: every change is refused. */
  assert_int_equal(dm__store_batch_put(b, "x", 1, "r", 1), DM_EINVAL);
  assert_int_equal(dm__store_batch_clear(b), DM_EINVAL);
  assert_int_equal(dm__store_batch_reset(b), DM_EINVAL);
  assert_int_equal(dm__store_submit(s, b, on_done, NULL), DM_EINVAL);
  wait_for(f, &d, 1);
  assert_int_equal(d.rc[0], 0);
  seen z = load(s);
  assert_int_equal(z.nchildren, 2);
  close_store(f, s);
}

static void bad_names_are_refused(void **state) {
  fixture *f = *state;
  dm__store *s = NULL;
  const char *bad[] = {"", ".", "..", "a/b"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(
        dm__store_open(&s, &f->loop, f->dir, bad[i], f->err, sizeof f->err),
        DM_EINVAL);
    assert_null(s);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
      T(puts_dels_and_deleted_marks_come_back_from_load),
      T(a_later_operation_on_the_same_id_wins_within_a_batch),
      T(a_large_batch_in_no_order_keeps_later_operations_last),
      T(clear_empties_the_store_before_the_rest_of_its_batch),
      T(state_records_come_back_oldest_first_and_go_with_clear),
      T(a_cut_removes_its_range_of_state_records),
      T(a_state_record_without_a_sequence_number_is_corrupt),
      T(a_batch_bigger_than_a_transaction_commits_whole_in_several),
      T(dones_run_on_the_loop_in_submission_order),
      T(a_store_keeps_its_data_across_stop_and_reopen),
      T(a_held_state_dir_is_refused_naming_the_holder),
      T(another_format_version_is_refused_naming_both),
      T(a_store_of_another_manager_is_refused),
      T(overwritten_headers_are_refused_as_corrupt_untouched),
      T(a_file_of_garbage_is_refused_as_corrupt_untouched),
      T(a_truncated_file_is_refused_as_corrupt_untouched),
      T(an_environment_never_committed_to_opens_fresh),
      T(a_full_map_fails_that_batch_alone_and_the_store_goes_on),
      T(a_full_map_doubles_and_the_batch_commits),
      T(an_oversized_batch_queued_with_others_fails_alone),
      T(stop_commits_what_is_queued_and_runs_its_dones),
      T(load_stops_when_a_callback_says_so),
      T(batches_refuse_bad_ids_and_changes_in_flight),
      T(bad_names_are_refused),
#undef T
  };
  return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
