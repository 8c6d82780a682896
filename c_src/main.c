/* The tarearbol_cnode program: command line, cookie, the layers wired
 * together, and the loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dm.h"
#include "base/base.h"
#include "dm/mgr.h"

extern const dm_behaviour dm__counter_behaviour;
extern const dm_behaviour dm__counter_hooks_behaviour;
extern const dm_behaviour dm__pingpong_behaviour;
extern const dm_behaviour dm__probe_behaviour;

/* The behaviours compiled in: `--manager NAME=counter` and so on. */
static const dm_behaviour *const builtins[] = {
    &dm__counter_behaviour, &dm__counter_hooks_behaviour, &dm__pingpong_behaviour,
    &dm__probe_behaviour, NULL};

#define COOKIE_ENV "TAREARBOL_CNODE_COOKIE"
#define MAX_COOKIE 512

static void usage(FILE *f) {
  fprintf(f,
          "usage: tarearbol_cnode --sname NAME | --name NAME@HOST\n"
          "         [--listen ADDR] [--log-level debug|info|warning|error|none]\n"
          "         [--net-ticktime SECONDS] [--max-packet BYTES]\n"
          "         [--handshake-timeout MS] [--max-pending-handshakes N]\n"
          "         [--max-outbuf BYTES]\n"
          "         [--read-coalescing BYTES] [--epmd-retry-s SECONDS]\n"
          "         [--manager NAME=BEHAVIOUR[,key=value...]]... [--threads N]\n"
          "         [--state-dir DIR] [--state-sync-ms MS]\n"
          "         [--tls-cert FILE --tls-key FILE --tls-ca FILE\n"
          "          [--tls-verify peer|none] [--tls-only[=true|false]]]\n"
          "         [--exit-with-stdin] [--help]\n"
          "The cookie comes from $" COOKIE_ENV ", else ~/.erlang.cookie.\n");
}

static int parse_num(const char *opt, const char *s, unsigned long long min,
                     unsigned long long max, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
    fprintf(stderr, "tarearbol_cnode: --%s wants a number in %llu..%llu, got '%s'\n",
            opt, min, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

/* Reads the cookie: the environment first, then ~/.erlang.cookie. Never
 * from argv, where every user could read it in ps. */
static int read_cookie(char *out, size_t size) {
  const char *env = getenv(COOKIE_ENV);
  if (env && *env) {
    if (strlen(env) >= size) {
      fprintf(stderr, "tarearbol_cnode: cookie longer than %zu bytes\n", size - 1);
      return -1;
    }
    strcpy(out, env);
    /* Children of this process need not inherit it. */
    unsetenv(COOKIE_ENV);
    return 0;
  }
  const char *home = getenv("HOME");
  char path[PATH_MAX];
  if (!home || (size_t)snprintf(path, sizeof path, "%s/.erlang.cookie", home) >= sizeof path) {
    fprintf(stderr, "tarearbol_cnode: no $" COOKIE_ENV " and no $HOME\n");
    return -1;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "tarearbol_cnode: no $" COOKIE_ENV " and cannot read %s: %s\n",
            path, strerror(errno));
    return -1;
  }
  size_t n = fread(out, 1, size - 1, f);
  fclose(f);
  out[n] = 0;
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
    out[--n] = 0;
  if (n == 0) {
    fprintf(stderr, "tarearbol_cnode: %s is empty\n", path);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"sname", required_argument, NULL, 's'},
      {"name", required_argument, NULL, 'n'},
      {"listen", required_argument, NULL, 'l'},
      {"log-level", required_argument, NULL, 'L'},
      {"net-ticktime", required_argument, NULL, 't'},
      {"max-packet", required_argument, NULL, 'p'},
      {"handshake-timeout", required_argument, NULL, 'H'},
      {"max-pending-handshakes", required_argument, NULL, 'A'},
      {"max-outbuf", required_argument, NULL, 'o'},
      {"read-coalescing", required_argument, NULL, 'R'},
      {"epmd-retry-s", required_argument, NULL, 'P'},
      {"manager", required_argument, NULL, 'm'},
      {"threads", required_argument, NULL, 'T'},
      {"state-dir", required_argument, NULL, 'D'},
      {"state-sync-ms", required_argument, NULL, 'S'},
      {"exit-with-stdin", no_argument, NULL, 'E'},
      {"tls-cert", required_argument, NULL, 'c'},
      {"tls-key", required_argument, NULL, 'k'},
      {"tls-ca", required_argument, NULL, 'a'},
      {"tls-verify", required_argument, NULL, 'V'},
      {"tls-only", optional_argument, NULL, 'O'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  dm__config cfg;
  unsigned long long v;
  int c, lvl;
  char cookie[MAX_COOKIE + 1];
  const char *managers[64];
  size_t nmanagers = 0;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned threads = ncpu > 0 ? (unsigned)ncpu : 2;
  const char *state_dir = NULL;
  unsigned sync_ms = 1000;
  /* TLS: verify peers and refuse plain TCP unless told otherwise. */
  dm__tls_config tls = {NULL, NULL, NULL, 1, 1};
  const char *tls_without_cert = NULL; /* a TLS option given without --tls-cert */
  dm__tls_ctx *tls_ctx = NULL;
  dm__config_defaults(&cfg);
  /* Before OpenSSL allocates anything: its allocations then fail like the
   * node's own, through the one wrapper. */
  (void)dm__tls_use_node_alloc();
#if defined(__GLIBC__)
  /* A fixed threshold: glibc otherwise raises it to the size of the
   * largest block freed (up to 32 MiB), after which the batches of a
   * first load or a checkpoint come from the heap and stay resident once
   * freed. 7 MB of a million workers' RSS. */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif

  const char *env_level = getenv("TAREARBOL_CNODE_LOG_LEVEL");
  if (env_level && (lvl = dm__log_parse_level(env_level)) >= 0)
    dm__log_level = lvl;

  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
    case 'n':
      if (cfg.name) {
        fprintf(stderr, "tarearbol_cnode: give one of --sname or --name, once\n");
        return 2;
      }
      cfg.name = optarg;
      cfg.longnames = c == 'n';
      break;
    case 'l':
      cfg.listen_addr = optarg;
      break;
    case 'L':
      if ((lvl = dm__log_parse_level(optarg)) < 0) {
        fprintf(stderr, "tarearbol_cnode: unknown log level '%s'\n", optarg);
        return 2;
      }
      dm__log_level = lvl;
      break;
    case 't':
      if (parse_num("net-ticktime", optarg, 1, 3600, &v))
        return 2;
      cfg.net_ticktime = (unsigned)v;
      break;
    case 'p':
      if (parse_num("max-packet", optarg, 64, UINT32_MAX, &v))
        return 2;
      cfg.max_packet = (uint32_t)v;
      break;
    case 'H':
      if (parse_num("handshake-timeout", optarg, 10, 600000, &v))
        return 2;
      cfg.handshake_ms = (unsigned)v;
      break;
    case 'A':
      if (parse_num("max-pending-handshakes", optarg, 1, 1 << 20, &v))
        return 2;
      cfg.max_pending_hs = (size_t)v;
      break;
    case 'o':
      if (parse_num("max-outbuf", optarg, 4096, SIZE_MAX, &v))
        return 2;
      cfg.max_outbuf = (size_t)v;
      break;
    case 'R':
      if (parse_num("read-coalescing", optarg, 0, 1 << 20, &v))
        return 2;
      cfg.read_coalescing = (size_t)v;
      break;
    case 'P':
      if (parse_num("epmd-retry-s", optarg, 0, 86400, &v))
        return 2;
      cfg.epmd_retry_s = (unsigned)v;
      break;
    case 'm':
      if (nmanagers == sizeof managers / sizeof managers[0]) {
        fprintf(stderr, "tarearbol_cnode: at most %zu managers\n", nmanagers);
        return 2;
      }
      managers[nmanagers++] = optarg;
      break;
    case 'T':
      if (parse_num("threads", optarg, 1, 256, &v))
        return 2;
      threads = (unsigned)v;
      break;
    case 'D':
      if (!*optarg) {
        fprintf(stderr, "tarearbol_cnode: --state-dir wants a directory\n");
        return 2;
      }
      state_dir = optarg;
      break;
    case 'S':
      if (parse_num("state-sync-ms", optarg, 10, 3600000, &v))
        return 2;
      sync_ms = (unsigned)v;
      break;
    case 'E':
      cfg.exit_with_stdin = 1;
      break;
    case 'c':
      tls.cert = optarg;
      break;
    case 'k':
      tls.key = optarg;
      tls_without_cert = "--tls-key";
      break;
    case 'a':
      tls.ca = optarg;
      tls_without_cert = "--tls-ca";
      break;
    case 'V':
      if (strcmp(optarg, "peer") != 0 && strcmp(optarg, "none") != 0) {
        fprintf(stderr, "tarearbol_cnode: --tls-verify wants peer or none, got '%s'\n", optarg);
        return 2;
      }
      tls.verify = strcmp(optarg, "peer") == 0;
      tls_without_cert = "--tls-verify";
      break;
    case 'O':
      if (optarg && strcmp(optarg, "true") != 0 && strcmp(optarg, "false") != 0) {
        fprintf(stderr, "tarearbol_cnode: --tls-only takes =true or =false, got '%s'\n", optarg);
        return 2;
      }
      tls.only = !optarg || strcmp(optarg, "true") == 0;
      tls_without_cert = "--tls-only";
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "tarearbol_cnode: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (!cfg.name) {
    usage(stderr);
    return 2;
  }
  if (read_cookie(cookie, sizeof cookie))
    return 2;
  if (tls_without_cert && !tls.cert) {
    fprintf(stderr, "tarearbol_cnode: %s is a TLS option, and TLS is on only with "
                    "--tls-cert, --tls-key and --tls-ca\n", tls_without_cert);
    return 2;
  }

  /* A peer that vanishes mid-write must give EPIPE, not kill the node. */
  signal(SIGPIPE, SIG_IGN);
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  if (ei_init() != 0) {
    fprintf(stderr, "tarearbol_cnode: ei_init failed\n");
    return 1;
  }
  if (tls.cert) {
    /* The files are read now, so that a mistake in one is the only line
     * printed, and the node never starts without the TLS it was asked
     * for. */
    char err[512];
    if (dm__tls_ctx_new(&tls, &tls_ctx, err, sizeof err)) {
      DM_ERROR("%s", err);
      return 1;
    }
    cfg.tls = tls_ctx;
  }
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  /* The layers, wired bottom up: the node (distribution, process
   * tables), its services, then the managers' scheduler, which registers
   * its process kinds and loop hooks with the node. */
  static dm__node node;
  static dm__sched sched;
  int r = dm__node_init(&node, &loop, &cfg, cookie);
  memset(cookie, 0, sizeof cookie);
  if (r == 0)
    r = dm__services_init(&node);
  if (r == 0)
    r = dm__sched_init(&sched, &node, threads, builtins);
  sched.state_dir = state_dir;
  sched.sync_ms = sync_ms;
  /* A manager that is refused has said why in one line, naming what to
   * fix; nothing more is printed after it, since a generic "cannot start"
   * or "stopped" would only bury that line. */
  int said = 0;
  for (size_t i = 0; r == 0 && i < nmanagers; i++)
    said = (r = dm__sched_add_manager(&sched, managers[i])) != 0;
  if (r == 0)
    r = dm__node_start(&node);
  if (r) {
    if (!said)
      DM_ERROR("cannot start: %s", dm_strerror(r));
    dm__node_stop(&node);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  dm__node_free(&node);
  uv_loop_close(&loop);
  dm__tls_ctx_free(tls_ctx);
  if (!r)
    DM_INFO("stopped");
  return r || node.exit_status ? 1 : 0;
}
