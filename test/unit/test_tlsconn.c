/* A connection over TLS, between a node without a listen socket and a
 * peer of our own on OpenSSL, over a socketpair: what came with the end of
 * the handshake is served at once; a close_notify closes the connection;
 * a peer that makes the session answer and never reads is dropped at
 * max_outbuf; and a reply that a renegotiation holds back goes out once
 * it is over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>

#include "bare_node.h"
#include "dist/dist.h"
#include "tls_fixture.h"

#define PEER "peer@localhost"

typedef struct {
  bare_node b;
  char dir[64];
  dm__tls_ctx *sc, *cc;
  SSL *ssl; /* the peer's side */
  BIO *in, *out;
  int fd; /* the peer's end of the socketpair */
  dm__conn *c;
} fx;

static dm__tls_ctx *ctx_of(fx *f, const char *name) {
  char cert[128], key[128], ca[128], err[512];
  dm__tls_config cfg = {cert, key, ca, 1, 1};
  dm__tls_ctx *c = NULL;
  snprintf(cert, sizeof cert, "%s/%s.pem", f->dir, name);
  snprintf(key, sizeof key, "%s/%s.key", f->dir, name);
  snprintf(ca, sizeof ca, "%s/ca.pem", f->dir);
  if (dm__tls_ctx_new(&cfg, &c, err, sizeof err))
    fail_msg("%s", err);
  return c;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  pki_dir(f->dir);
  bare_node_init(&f->b);
  assert_int_equal(dm__services_init(&f->b.n), 0);
  f->sc = ctx_of(f, "node");
  f->cc = ctx_of(f, "node");
  f->fd = -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  bare_node_free(&f->b);
  if (f->fd >= 0)
    close(f->fd);
  SSL_free(f->ssl);
  dm__tls_ctx_free(f->sc);
  dm__tls_ctx_free(f->cc);
  pki_rmdir(f->dir);
  free(f);
  return 0;
}

/* The node's session and the peer's, through memory until both are up. */
static dm__tls *agree(fx *f, int max_version) {
  dm__tls *srv;
  char buf[16384];
  int n, done = 0;
  assert_int_equal(dm__tls_new(f->sc, 1, NULL, &srv), 0);
  f->ssl = SSL_new(f->cc->ssl);
  f->in = BIO_new(BIO_s_mem());
  f->out = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(f->in, -1);
  SSL_set_bio(f->ssl, f->in, f->out);
  SSL_set_connect_state(f->ssl);
  SSL_set_max_proto_version(f->ssl, max_version);
  for (int i = 0; i < 10 && !(done && dm__tls_up(srv)); i++) {
    done = SSL_do_handshake(f->ssl) == 1;
    while ((n = BIO_read(f->out, buf, sizeof buf)) > 0)
      assert_int_equal(dm__tls_feed(srv, buf, (size_t)n), 0);
    assert_true(dm__tls_handshake(srv) >= 0);
    dm__buf b = DM__BUF_INIT;
    assert_int_equal(dm__tls_take(srv, &b, SIZE_MAX), 0);
    if (b.len)
      assert_int_equal(BIO_write(f->in, b.data, (int)b.len), (int)b.len);
    dm__buf_free(&b);
  }
  assert_true(done && dm__tls_up(srv));
  return srv;
}

/* The node serves its end of a socketpair over srv. */
static void adopt(fx *f, dm__tls *srv) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  assert_int_equal(dm__dist_adopt(&f->b.n.dist, sv[0], PEER, DM__DFLAG_ALIAS, srv), 0);
  f->fd = sv[1];
  fcntl(f->fd, F_SETFL, fcntl(f->fd, F_GETFL) | O_NONBLOCK);
  f->c = dm__dist_conn(&f->b.n.dist, PEER);
  assert_non_null(f->c);
}

/* What the peer's session has to send, onto the socket. */
static void peer_flush(fx *f) {
  char buf[16384];
  int n;
  while ((n = BIO_read(f->out, buf, sizeof buf)) > 0)
    assert_int_equal(write(f->fd, buf, (size_t)n), n);
}

/* One turn of the node's loop (a bare node has no loop phases: its
 * output goes out here, as the node's phase would send it before the
 * loop blocks), then what it sent, into the peer's session. Returns the
 * bytes read, or -1 once the node closed its end. */
static ssize_t turn(fx *f) {
  char buf[65536];
  ssize_t n, total = 0;
  uv_run(&f->b.loop, UV_RUN_NOWAIT);
  dm__conn_flush_all(&f->b.n.dist);
  while ((n = read(f->fd, buf, sizeof buf)) > 0) {
    assert_int_equal(BIO_write(f->in, buf, (int)n), (int)n);
    total += n;
  }
  return n == 0 ? -1 : total;
}

/* A gen_server call from the peer to tarearbol_cnode: info. */
static void call_info(fx *f) {
  ei_x_buff x;
  erlang_pid from;
  erlang_ref ref;
  memset(&from, 0, sizeof from);
  strcpy(from.node, PEER);
  from.num = 1;
  from.creation = 1;
  memset(&ref, 0, sizeof ref);
  strcpy(ref.node, PEER);
  ref.len = 3;
  ref.n[0] = 7;
  ref.creation = 1;
  char req[16];
  int rl = 0;
  assert_int_equal(ei_encode_atom(req, &rl, "info"), 0);
  assert_int_equal(ei_x_new(&x), 0);
  assert_int_equal(dm__enc_call(&x, &from, "tarearbol_cnode", NULL, &ref, req, (size_t)rl), 0);
  assert_int_equal(SSL_write(f->ssl, x.buff, x.index), x.index);
  ei_x_free(&x);
}

/* Whether a reply (a SEND) reached the peer's session, within some loop
 * turns. */
static int got_reply(fx *f, int turns) {
  unsigned char buf[65536];
  size_t have = 0;
  for (int i = 0; i < turns; i++) {
    if (turn(f) < 0)
      return 0;
    int n = SSL_read(f->ssl, buf + have, (int)(sizeof buf - have));
    if (n > 0)
      have += (size_t)n;
    if (have >= 6) {
      /* Length, 'p', then the control tuple {2, '', To}. */
      assert_int_equal(buf[4], 112);
      return 1;
    }
    usleep(1000);
  }
  return 0;
}

static void what_came_with_the_handshake_is_served_at_once(void **state) {
  fx *f = *state;
  dm__tls *srv = agree(f, TLS1_3_VERSION);
  char buf[4096];
  int n;
  /* The call arrives with the peer's last handshake bytes: it is in the
   * session, and nothing more will come on the socket. */
  call_info(f);
  while ((n = BIO_read(f->out, buf, sizeof buf)) > 0)
    assert_int_equal(dm__tls_feed(srv, buf, (size_t)n), 0);
  adopt(f, srv);
  assert_false(got_reply(f, 5)); /* the socket alone never brings it */
  dm__conn_pump(f->c);
  assert_true(got_reply(f, 50));
}

static void a_close_notify_closes_the_connection(void **state) {
  fx *f = *state;
  adopt(f, agree(f, TLS1_3_VERSION));
  call_info(f);
  peer_flush(f);
  assert_true(got_reply(f, 50));
  uint64_t closed = f->b.n.dist.stats.connections_closed;
  assert_int_equal(SSL_shutdown(f->ssl), 0);
  peer_flush(f);
  for (int i = 0; i < 50 && f->b.n.dist.stats.connections_closed == closed; i++) {
    turn(f);
    usleep(1000);
  }
  assert_int_equal(f->b.n.dist.stats.connections_closed, closed + 1);
  assert_null(dm__dist_conn(&f->b.n.dist, PEER));
}

static void a_peer_that_asks_for_key_updates_and_never_reads_is_dropped(void **state) {
  fx *f = *state;
  adopt(f, agree(f, TLS1_3_VERSION));
  f->b.n.dist.cfg.max_outbuf = 64 * 1024;
  /* Each asks the node for a key update of its own: answers pile up in
   * the socket, then in the node, and the peer reads none of them. */
  for (int i = 0; i < 200000 && f->b.n.dist.stats.outbuf_overflows == 0; i++) {
    assert_int_equal(SSL_key_update(f->ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_do_handshake(f->ssl), 1);
    char buf[4096];
    int n;
    while ((n = BIO_read(f->out, buf, sizeof buf)) > 0)
      if (write(f->fd, buf, (size_t)n) != n)
        break; /* the node's receive side is full too: let it read */
    if (i % 64 == 0) {
      uv_run(&f->b.loop, UV_RUN_NOWAIT);
      dm__conn_flush_all(&f->b.n.dist);
    }
  }
  assert_int_equal(f->b.n.dist.stats.outbuf_overflows, 1);
  assert_null(dm__dist_conn(&f->b.n.dist, PEER));
}

static void a_reply_held_by_a_renegotiation_goes_out_once_it_is_over(void **state) {
  fx *f = *state;
  dm__tls *srv = agree(f, TLS1_2_VERSION);
  dm__tls_settle(srv); /* as at the end of the distribution handshake */
  adopt(f, srv);
  /* A call, then at once a renegotiation: the node reads both in one go,
   * and its reply cannot be encrypted before the new handshake is done. */
  call_info(f);
  assert_int_equal(SSL_renegotiate(f->ssl), 1);
  assert_true(SSL_do_handshake(f->ssl) <= 0);
  peer_flush(f);
  int stalled = 0;
  for (int i = 0; i < 5; i++) {
    turn(f);
    stalled |= f->c->tls_stalled;
  }
  assert_true(stalled);
  /* The peer goes on with its handshake; the reply follows it. */
  int replied = 0;
  for (int i = 0; i < 100 && !replied; i++) {
    SSL_do_handshake(f->ssl);
    peer_flush(f);
    replied = got_reply(f, 1);
  }
  assert_true(replied);
  assert_false(SSL_renegotiate_pending(f->ssl));
  assert_false(f->c->tls_stalled);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(what_came_with_the_handshake_is_served_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(a_close_notify_closes_the_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(a_peer_that_asks_for_key_updates_and_never_reads_is_dropped, setup, teardown),
      cmocka_unit_test_setup_teardown(a_reply_held_by_a_renegotiation_goes_out_once_it_is_over, setup, teardown),
  };
  assert_int_equal(dm__tls_use_node_alloc(), 0);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
