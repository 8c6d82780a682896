/* The store's commit throughput on the disk of a directory: records and
 * batches per second for batches of one to a million records, submitted one
 * at a time (each waits for the last one's done) or all queued (the writer
 * groups them), and the time to load a million back. Not a test: figures.
 *
 *   store_bench DIR     (DIR must exist; DIR/bench is removed first) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dm.h"
#include "store/store.h"

static uv_loop_t loop;
static long ndone, nfail;

static void done(void *ud, dm__store_batch *b, int rc, const char *why) {
  (void)ud;
  ndone++;
  if (rc) {
    nfail++;
    fprintf(stderr, "batch failed: %s\n", why);
  }
  dm__store_batch_free(b);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n records of reclen bytes; ids "id<k>", k counting from *next, scattered
 * over the key space unless seq. */
static dm__store_batch *batch(long n, int reclen, int seq, long *next) {
  dm__store_batch *b = dm__store_batch_new();
  char id[32], rec[256];
  memset(rec, 'v', sizeof rec);
  for (long i = 0; i < n; i++) {
    unsigned long long k = (unsigned long long)(*next)++;
    if (!seq)
      k = (k * 0x9E3779B97F4A7C15ull) >> 20;
    int l = snprintf(id, sizeof id, "id%llu", k);
    if (!b || dm__store_batch_put(b, id, (size_t)l, rec, (size_t)reclen)) {
      fprintf(stderr, "out of memory\n");
      exit(1);
    }
  }
  return b;
}

static int count(void *ud, const char *id, size_t idlen, const char *rec,
                 size_t reclen) {
  (void)id, (void)idlen, (void)rec, (void)reclen;
  ++*(long *)ud;
  return 0;
}

static dm__store *open_fresh(const char *dir) {
  char err[512], cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s/bench'", dir);
  if (system(cmd) != 0)
    exit(1);
  dm__store *s;
  if (dm__store_open(&s, &loop, dir, "bench", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  return s;
}

static void close_store(dm__store *s) {
  dm__store_stop(s);
  uv_run(&loop, UV_RUN_NOWAIT);
  dm__store_free(s);
}

typedef struct {
  long per_batch, batches;
  int reclen;
  int queued; /* all submitted at once, else one at a time */
  int seq;    /* ids in key order */
  int rounds; /* the same ids rewritten: a checkpoint */
} bench_case;

static void run(const char *dir, const bench_case *c) {
  dm__store *s = open_fresh(dir);
  for (int r = 0; r < c->rounds; r++) {
    long next = 0;
    dm__store_batch **bs = malloc(sizeof *bs * (size_t)c->batches);
    for (long i = 0; i < c->batches; i++)
      bs[i] = batch(c->per_batch, c->reclen, c->seq, &next);
    ndone = nfail = 0;
    dm__store_stats st0, st;
    dm__store_get_stats(s, &st0);
    double t0 = now();
    for (long i = 0; i < c->batches; i++) {
      dm__store_submit(s, bs[i], done, NULL);
      while (!c->queued && ndone < i + 1)
        uv_run(&loop, UV_RUN_ONCE);
    }
    while (ndone < c->batches)
      uv_run(&loop, UV_RUN_ONCE);
    double t = now() - t0;
    dm__store_get_stats(s, &st);
    long recs = c->per_batch * c->batches;
    uint64_t commits = st.commits - st0.commits;
    printf("%7ld x %5ld %3d B %-9s %-6s %s: %7.3f s %9.0f records/s "
           "%7.0f batches/s %5llu commits %8.2f ms/commit  file %6.1f MiB "
           "%4.0f B/record%s\n",
           c->per_batch, c->batches, c->reclen,
           c->queued ? "queued" : "one-by-one", c->seq ? "seq" : "random",
           r > 0 ? "rewrite" : "insert ", t, (double)recs / t,
           (double)c->batches / t, (unsigned long long)commits,
           commits ? t * 1000 / (double)commits : 0,
           (double)st.map_used / 1048576, (double)st.map_used / (double)recs,
           nfail ? "  FAILURES" : "");
    free(bs);
  }
  close_store(s);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: store_bench DIR\n");
    return 2;
  }
  dm__log_level = DM_LOG_WARNING;
  uv_loop_init(&loop);
  static const bench_case cases[] = {
      {1, 1000, 64, 0, 0, 1},     {1, 10000, 64, 1, 0, 1},
      {1000, 100, 64, 0, 0, 1},   {1000, 100, 64, 1, 0, 1},
      {100000, 10, 64, 0, 0, 1},  {100000, 10, 64, 0, 1, 1},
      {1000000, 1, 200, 0, 0, 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    run(argv[1], &cases[i]);
  /* Load what the last case left: a million children. */
  char err[512];
  dm__store *s;
  if (dm__store_open(&s, &loop, argv[1], "bench", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  long n = 0;
  double t0 = now();
  dm__store_load(s, count, NULL, &n);
  printf("load of %ld children: %.3f s\n", n, now() - t0);
  close_store(s);
  uv_loop_close(&loop);
  return 0;
}
