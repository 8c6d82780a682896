/* probe: the seed's dashboard example made real. Each worker checks one
 * TCP endpoint, payload #{host => Host, port => Port} with an optional
 * timeout_ms (default 1000), and stores
 *   #{status => up | down, latency_us => N, checked_at => DateTime,
 *     error => nil | Reason}
 * as its value. The connect is non-blocking with a deadline, so a probe
 * never holds a pool thread longer than its timeout_ms. Hosts are numeric
 * addresses or names resolved with getaddrinfo. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dm.h"

#define DEFAULT_TIMEOUT_MS 1000
#define MAX_TIMEOUT_MS 60000

typedef struct {
  char host[256];
  long port;
  long timeout_ms;
} target;

static int read_target(const dm_term *p, target *t) {
  int i = 0, arity, type, size;
  char key[MAXATOMLEN_UTF8];
  t->host[0] = 0;
  t->port = -1;
  t->timeout_ms = DEFAULT_TIMEOUT_MS;
  if (ei_decode_map_header(p->data, &i, &arity) < 0)
    return -1;
  for (int k = 0; k < arity; k++) {
    if (ei_decode_atom(p->data, &i, key) < 0)
      return -1;
    if (ei_get_type(p->data, &i, &type, &size) < 0)
      return -1;
    if (strcmp(key, "host") == 0) {
      long len;
      if (type == ERL_BINARY_EXT && size < (int)sizeof t->host) {
        if (ei_decode_binary(p->data, &i, t->host, &len) < 0)
          return -1;
        t->host[len] = 0;
      } else if (type == ERL_STRING_EXT && size < (int)sizeof t->host) {
        if (ei_decode_string(p->data, &i, t->host) < 0)
          return -1;
      } else if ((type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT ||
                  type == ERL_ATOM_UTF8_EXT || type == ERL_SMALL_ATOM_UTF8_EXT) &&
                 size < (int)sizeof t->host) {
        if (ei_decode_atom(p->data, &i, t->host) < 0)
          return -1;
      } else {
        return -1;
      }
    } else if (strcmp(key, "port") == 0) {
      if (ei_decode_long(p->data, &i, &t->port) < 0)
        return -1;
    } else if (strcmp(key, "timeout_ms") == 0) {
      if (ei_decode_long(p->data, &i, &t->timeout_ms) < 0)
        return -1;
    } else if (ei_skip_term(p->data, &i) < 0) {
      return -1;
    }
  }
  return t->host[0] && t->port > 0 && t->port < 65536 && t->timeout_ms > 0 &&
                 t->timeout_ms <= MAX_TIMEOUT_MS
             ? 0
             : -1;
}

static unsigned long long now_us(int clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
}

static const char *reason_of(int err) {
  switch (err) {
  case ECONNREFUSED: return "econnrefused";
  case ETIMEDOUT: return "timeout";
  case EHOSTUNREACH: return "ehostunreach";
  case ENETUNREACH: return "enetunreach";
  case ECONNRESET: return "econnreset";
  case EACCES: return "eacces";
  case EADDRNOTAVAIL: return "eaddrnotavail";
  default: return "error";
  }
}

/* 0 when connected, else an errno value (ETIMEDOUT past the deadline). */
static int try_connect(const struct sockaddr *sa, socklen_t len, long timeout_ms) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errno;
  int err = 0;
  if (connect(fd, sa, len) != 0) {
    if (errno != EINPROGRESS) {
      err = errno;
    } else {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      int r;
      do
        r = poll(&pfd, 1, (int)timeout_ms);
      while (r < 0 && errno == EINTR);
      if (r == 0) {
        err = ETIMEDOUT;
      } else if (r < 0) {
        err = errno;
      } else {
        socklen_t el = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
          err = errno;
      }
    }
  }
  close(fd);
  return err;
}

static int perform(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                   ei_x_buff *out) {
  target t;
  const char *error = NULL;
  (void)ctx;
  (void)id;
  if (read_target(payload, &t) != 0) {
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "bad_payload");
    ei_x_append_buf(out, payload->data, (int)payload->len);
    return DM_CB_CRASH;
  }
  unsigned long long start = now_us(CLOCK_MONOTONIC);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  char port[8];
  snprintf(port, sizeof port, "%ld", t.port);
  int gai = getaddrinfo(t.host, port, &hints, &res);
  if (gai != 0) {
    error = "nxdomain";
  } else {
    int err = ETIMEDOUT;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
      long left = t.timeout_ms - (long)((now_us(CLOCK_MONOTONIC) - start) / 1000);
      if (left <= 0) {
        err = ETIMEDOUT;
        break;
      }
      err = try_connect(a->ai_addr, a->ai_addrlen, left);
      if (err == 0 || err == ETIMEDOUT)
        break;
    }
    freeaddrinfo(res);
    if (err)
      error = reason_of(err);
  }
  unsigned long long latency = now_us(CLOCK_MONOTONIC) - start;
  ei_x_encode_map_header(out, 4);
  ei_x_encode_atom(out, "status");
  ei_x_encode_atom(out, error ? "down" : "up");
  ei_x_encode_atom(out, "latency_us");
  ei_x_encode_ulonglong(out, latency);
  ei_x_encode_atom(out, "checked_at");
  dm_encode_datetime(out, now_us(CLOCK_REALTIME));
  ei_x_encode_atom(out, "error");
  ei_x_encode_atom(out, error ? error : "nil");
  return DM_CB_OK;
}

static int call(dm_ctx *ctx, const dm_term *msg, const erlang_pid *from,
                const dm_term *id, const dm_term *payload, ei_x_buff *out) {
  /* Any call checks now and answers the result. */
  (void)msg;
  (void)from;
  return perform(ctx, id, payload, out);
}

/* No .options: it reads none, so --manager refuses any key that is not
 * the manager's. */
const dm_behaviour dm__probe_behaviour = {
    .name = "probe",
    .perform = perform,
    .call = call,
};
