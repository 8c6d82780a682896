/* The store's journal: batches acknowledged from the journal come back
 * after a crash, before LMDB had them; a record cut short is not read, and
 * the journal goes on from there; changes LMDB refuses stay in the journal
 * until a later open applies them; and a journal that is damaged, of
 * another size, missing, skipping changes or holding a record that does
 * not decode is refused, untouched. A crash is a child process that
 * _exits with its batches acknowledged and not yet applied. */
#include "store_fixture.h"

#include <fcntl.h>
#include <sys/wait.h>

/* Long enough that nothing journaled reaches LMDB before the child dies. */
static const dm__store_limits never_apply = {0, 0, 0, 600u * 1000000u};

static void path_of(fixture *f, char *out, size_t n, const char *file) {
  snprintf(out, n, "%s/%s", f->path, file);
}

/* A batch from a script: "+id=rec" puts, "-id" dels, "!id" marks, "#k=rec"
 * a state record (rec starts with its 8-byte sequence number), "~k=l" a
 * cut of the state records from key k to key l, "*" a clear first. */
static dm__store_batch *batch_of(const char *const *ops) {
  dm__store_batch *b = dm__store_batch_new();
  for (; *ops; ops++) {
    const char *o = *ops, *eq = strchr(o, '=');
    size_t idlen = eq ? (size_t)(eq - o - 1) : strlen(o + 1);
    const char *rec = eq ? eq + 1 : "";
    int r = 0;
    switch (o[0]) {
    case '+':
      r = dm__store_batch_put(b, o + 1, idlen, rec, strlen(rec));
      break;
    case '-':
      r = dm__store_batch_del(b, o + 1, idlen);
      break;
    case '!':
      r = dm__store_batch_deleted(b, o + 1, idlen, 1);
      break;
    case '#':
      r = dm__store_batch_state(b, (uint32_t)atoi(o + 1), rec, strlen(rec));
      break;
    case '~':
      r = dm__store_batch_state_cut(b, (uint32_t)atoi(o + 1), (uint32_t)atoi(rec));
      break;
    case '*':
      r = dm__store_batch_clear(b);
      break;
    }
    if (r)
      return NULL;
  }
  return b;
}

/* A store holding one put, committed to LMDB and stopped. */
static void make_store_with(fixture *f, const char *op) {
  const char *const ops[] = {op, NULL};
  dm__store *s = open_ok(f, NULL);
  assert_int_equal(commit(f, s, batch_of(ops)), 0);
  close_store(f, s);
}

static int child_done;
static int child_rc;

static void child_on_done(void *ud, dm__store_batch *b, int rc,
                          const char *why) {
  (void)ud, (void)why;
  child_done++;
  child_rc |= rc;
  dm__store_batch_free(b);
}

/* In a child process: opens the store on a loop of its own, submits the
 * batches one after the other, each acknowledged before the next (one
 * record each), and dies without stopping the store. */
static void crash_after(fixture *f, const char *const *const *batches) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    uv_loop_t loop;
    dm__store *s = NULL;
    char err[512];
    if (uv_loop_init(&loop) ||
        dm__store_open_with(&s, &loop, f->dir, "mgr", &never_apply, err,
                            sizeof err))
      _exit(2);
    int n = 0;
    for (; batches[n]; n++) {
      dm__store_batch *b = batch_of(batches[n]);
      if (!b || dm__store_submit(s, b, child_on_done, NULL))
        _exit(3);
      while (child_done < n + 1)
        uv_run(&loop, UV_RUN_ONCE);
    }
    dm__store_stats st;
    dm__store_get_stats(s, &st);
    _exit(child_rc ? 4 : st.journaled != (uint64_t)n ? 5 : st.commits ? 6 : 0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static dm__store_stats stats_of(dm__store *s) {
  dm__store_stats st;
  dm__store_get_stats(s, &st);
  return st;
}

static int on_state(void *ud, uint32_t key, const char *rec, size_t reclen) {
  char *out = ud;
  size_t n = strlen(out);
  snprintf(out + n, 256 - n, "%u=%.*s;", key, (int)reclen, rec);
  return 0;
}

static const char *const first[] = {"+a=1", "+b=2", "!spec1", NULL};
static const char *const second[] = {"-b", "+c=3", "#7=00000001st", "#9=00000001gone",
                                     "#12=00000001stays", NULL};
static const char *const cuts[] = {"~8=11", NULL};
static const char *const third[] = {"+d=4", NULL};

static void
acknowledged_batches_come_back_from_the_journal_after_a_crash(void **state) {
  fixture *f = *state;
  const char *const *const batches[] = {first, second, cuts, NULL};
  crash_after(f, batches);
  dm__store *s = open_ok(f, NULL);
  assert_int_equal(stats_of(s).replayed, 3);
  seen z = load(s);
  assert_string_equal(z.children, "a=1;c=3;");
  assert_string_equal(z.deleted, "spec1;");
  char st[256] = "";
  assert_int_equal(dm__store_load_state(s, on_state, st), 0);
  assert_string_equal(st, "7=00000001st;12=00000001stays;");
  close_store(f, s);
  /* LMDB has them now: the next open reads nothing back. */
  s = open_ok(f, NULL);
  assert_int_equal(stats_of(s).replayed, 0);
  assert_string_equal(load(s).children, "a=1;c=3;");
  close_store(f, s);
}

static void a_clear_in_the_journal_comes_back_in_its_place(void **state) {
  fixture *f = *state;
  make_store_with(f, "+old=0");
  static const char *const clear[] = {"*", "+new=1", NULL};
  const char *const *const batches[] = {clear, third, NULL};
  crash_after(f, batches);
  dm__store *s = open_ok(f, NULL);
  assert_string_equal(load(s).children, "d=4;new=1;");
  close_store(f, s);
}

/* The offset of record i (0 first) of the journal, and its length. */
static off_t record_at(fixture *f, int i, uint32_t *len) {
  char p[256];
  path_of(f, p, sizeof p, "journal");
  int fd = open(p, O_RDONLY);
  assert_true(fd >= 0);
  off_t off = 4096;
  unsigned char h[32];
  for (int k = 0; k <= i; k++) {
    assert_int_equal(pread(fd, h, 32, off), 32);
    *len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
           (uint32_t)h[7] << 24;
    if (k < i)
      off += 32 + ((*len + 7) & ~7u);
  }
  close(fd);
  return off;
}

static void patch(fixture *f, off_t off, const void *bytes, size_t n) {
  char p[256];
  path_of(f, p, sizeof p, "journal");
  int fd = open(p, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
  close(fd);
}

/* Rewrites record i's checksum for what it holds now. */
static void reseal(fixture *f, int i) {
  uint32_t len;
  off_t off = record_at(f, i, &len);
  char p[256];
  path_of(f, p, sizeof p, "journal");
  int fd = open(p, O_RDWR);
  unsigned char *r = malloc(32 + len);
  assert_int_equal(pread(fd, r, 32 + len, off), (ssize_t)(32 + len));
  uint32_t crc = dm__store_crc32c(dm__store_crc32c(0, r, 24), r + 32, len);
  unsigned char c[4] = {(unsigned char)crc, (unsigned char)(crc >> 8),
                        (unsigned char)(crc >> 16), (unsigned char)(crc >> 24)};
  assert_int_equal(pwrite(fd, c, 4, off + 24), 4);
  free(r);
  close(fd);
}

static void a_record_cut_short_is_not_read_and_the_journal_goes_on(void **state) {
  fixture *f = *state;
  const char *const *const batches[] = {first, second, NULL};
  crash_after(f, batches);
  uint32_t len;
  off_t off = record_at(f, 1, &len);
  patch(f, off + 32 + len - 1, "\x5a", 1); /* its checksum fails now */
  dm__store *s = open_ok(f, NULL);
  assert_int_equal(stats_of(s).replayed, 1);
  assert_string_equal(load(s).children, "a=1;b=2;");
  close_store(f, s);
  /* The next record takes the place of the one cut short. */
  const char *const *const more[] = {third, NULL};
  crash_after(f, more);
  s = open_ok(f, NULL);
  assert_int_equal(stats_of(s).replayed, 1);
  assert_string_equal(load(s).children, "a=1;b=2;d=4;");
  close_store(f, s);
}

/* Opening is refused with an error holding want, and neither data.mdb nor
 * the journal changes. */
static void refused_untouched(fixture *f, const char *want) {
  char j[256];
  path_of(f, j, sizeof j, "journal");
  size_t d0, d1, j0, j1;
  char *data0 = slurp(f->data, &d0), *jour0 = slurp(j, &j0);
  dm__store *s = NULL;
  int r = dm__store_open(&s, &f->loop, f->dir, "mgr", f->err, sizeof f->err);
  assert_int_equal(r, DM_EIO);
  assert_null(s);
  if (!strstr(f->err, want))
    fail_msg("error \"%s\" does not say \"%s\"", f->err, want);
  char *data1 = slurp(f->data, &d1), *jour1 = slurp(j, &j1);
  assert_int_equal(d0, d1);
  assert_memory_equal(data0, data1, d0);
  assert_int_equal(j0, j1);
  assert_memory_equal(jour0, jour1, j0);
  free(data0), free(data1), free(jour0), free(jour1);
}

static void a_damaged_journal_header_is_refused_untouched(void **state) {
  fixture *f = *state;
  const char *const *const batches[] = {first, NULL};
  crash_after(f, batches);
  patch(f, 17, "\x01", 1); /* in the epoch: the header's checksum fails */
  refused_untouched(f, "checksum");
  patch(f, 0, "XX", 2);
  refused_untouched(f, "not a journal");
}

static void a_journal_of_another_size_is_refused_untouched(void **state) {
  fixture *f = *state;
  const char *const *const batches[] = {first, NULL};
  crash_after(f, batches);
  char j[256];
  path_of(f, j, sizeof j, "journal");
  assert_int_equal(truncate(j, 64 << 10), 0);
  refused_untouched(f, "size");
}

static void a_record_that_does_not_decode_is_refused_untouched(void **state) {
  fixture *f = *state;
  const char *const *const batches[] = {first, NULL};
  crash_after(f, batches);
  uint32_t len;
  off_t off = record_at(f, 0, &len);
  patch(f, off + 32 + 8, "\x63", 1); /* the first operation's kind: 99 */
  reseal(f, 0);
  refused_untouched(f, "does not decode");
  patch(f, off + 32 + 8, "\x01", 1); /* a put again, its id 600 bytes long */
  patch(f, off + 32 + 10, "\x58\x02", 2);
  reseal(f, 0);
  refused_untouched(f, "does not decode");
}

static void a_journal_that_skips_changes_is_refused_untouched(void **state) {
  fixture *f = *state;
  const char *const *const batches[] = {first, second, NULL};
  crash_after(f, batches);
  uint32_t len;
  off_t off0 = record_at(f, 0, &len), off1 = record_at(f, 1, &len);
  patch(f, off0 + 16, "\x05", 1); /* seqs 5 and 6: LMDB has none of 1-4 */
  patch(f, off1 + 16, "\x06", 1);
  reseal(f, 0);
  reseal(f, 1);
  refused_untouched(f, "starts at change 5");
}

static void a_missing_journal_is_refused_once_lmdb_names_it(void **state) {
  fixture *f = *state;
  make_store_with(f, "+a=1");
  char j[256];
  path_of(f, j, sizeof j, "journal");
  assert_int_equal(unlink(j), 0);
  size_t n0, n1;
  char *before = slurp(f->data, &n0);
  dm__store *s = NULL;
  assert_int_equal(
      dm__store_open(&s, &f->loop, f->dir, "mgr", f->err, sizeof f->err),
      DM_EIO);
  assert_non_null(strstr(f->err, "journal is missing"));
  char *after = slurp(f->data, &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  free(before), free(after);
}

static void
changes_lmdb_refuses_stay_in_the_journal_and_come_back(void **state) {
  fixture *f = *state;
  /* LMDB's map cannot grow past 128 KiB; the journal takes what the map
   * refuses. */
  dm__store_limits small = {64 << 10, 128 << 10, 0, 1000};
  dm__store *s = open_ok(f, &small);
  char id[32], rec[400];
  memset(rec, 'q', sizeof rec - 1);
  rec[sizeof rec - 1] = '\0';
  int acked = 0, refused = 0;
  for (int i = 0; i < 400 && !refused; i++) {
    dm__store_batch *b = dm__store_batch_new();
    for (int k = 0; k < 8; k++) {
      snprintf(id, sizeof id, "id-%03d-%d", i, k);
      put(b, id, rec);
    }
    dones d = {0};
    submit(s, b, &d, i);
    wait_for(f, &d, 1);
    if (d.rc[0] == 0) {
      acked++;
    } else {
      assert_string_equal(d.why[0], "map_full");
      refused = 1;
    }
  }
  assert_true(refused);
  assert_true(acked > 0);
  dm__store_stats st = stats_of(s);
  assert_true(st.apply_failures >= 1);
  assert_int_equal(st.journaled, (uint64_t)acked);
  close_store(f, s);
  /* With room again, every acknowledged batch is there. */
  dm__store_limits roomy = {64 << 10, 8 << 20, 0, 0};
  s = open_ok(f, &roomy);
  assert_true(stats_of(s).replayed >= 1);
  assert_int_equal(load(s).nchildren, (size_t)acked * 8);
  close_store(f, s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
      T(acknowledged_batches_come_back_from_the_journal_after_a_crash),
      T(a_clear_in_the_journal_comes_back_in_its_place),
      T(a_record_cut_short_is_not_read_and_the_journal_goes_on),
      T(a_damaged_journal_header_is_refused_untouched),
      T(a_journal_of_another_size_is_refused_untouched),
      T(a_record_that_does_not_decode_is_refused_untouched),
      T(a_journal_that_skips_changes_is_refused_untouched),
      T(a_missing_journal_is_refused_once_lmdb_names_it),
      T(changes_lmdb_refuses_stay_in_the_journal_and_come_back),
#undef T
  };
  return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
