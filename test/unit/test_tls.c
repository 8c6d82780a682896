/* TLS sessions and the node's TLS context, two sessions talking through
 * memory: they agree (TLS 1.3 and 1.2) and carry bytes both ways, however
 * the ciphertext is cut; a certificate that is untrusted, expired, for
 * another name or missing is refused as a certificate; verification off
 * lets them through; garbage instead of a ClientHello fails cleanly;
 * close_notify reads as a close; and a context refuses files that are
 * missing, not PEM, or a key that is not the certificate's, naming the
 * option. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/ssl.h>

#include "dist/dist.h"
#include "dm.h"
#include "tls_fixture.h"

typedef struct {
  char dir[64];
} pki;

static int setup(void **state) {
  pki *p = calloc(1, sizeof *p);
  pki_dir(p->dir);
  *state = p;
  return 0;
}

static int teardown(void **state) {
  pki *p = *state;
  pki_rmdir(p->dir);
  free(p);
  return 0;
}

/* A context with dir/name.pem and .key, trusting dir/ca (or rogueca). */
static dm__tls_ctx *ctx_of(pki *p, const char *name, const char *ca, int verify) {
  char cert[128], key[128], cafile[128], err[512];
  dm__tls_config cfg = {cert, key, cafile, verify, 1};
  dm__tls_ctx *c = NULL;
  snprintf(cert, sizeof cert, "%s/%s.pem", p->dir, name);
  snprintf(key, sizeof key, "%s/%s.key", p->dir, name);
  snprintf(cafile, sizeof cafile, "%s/%s.pem", p->dir, ca);
  int r = dm__tls_ctx_new(&cfg, &c, err, sizeof err);
  if (r)
    fail_msg("ctx %s: %s", name, err);
  return c;
}

/* Moves every byte of ciphertext from a to b; how many moved. */
static size_t pass(dm__tls *a, dm__tls *b) {
  dm__buf buf = DM__BUF_INIT;
  assert_int_equal(dm__tls_take(a, &buf, SIZE_MAX), 0);
  size_t n = buf.len;
  if (n)
    assert_int_equal(dm__tls_feed(b, buf.data, buf.len), 0);
  dm__buf_free(&buf);
  return n;
}

/* Runs both handshakes until neither moves. Returns the client's result
 * and the server's in *srv. */
static int agree(dm__tls *cli, dm__tls *srv, int *srv_r) {
  int c = 0, s = 0;
  for (int i = 0; i < 20; i++) {
    if (c == 0)
      c = dm__tls_handshake(cli);
    pass(cli, srv);
    if (s == 0)
      s = dm__tls_handshake(srv);
    size_t moved = pass(srv, cli);
    if ((c != 0 && s != 0) || (!moved && c < 0) || (!moved && s < 0))
      break;
  }
  *srv_r = s;
  return c;
}

/* Writes msg on a, passes it, reads it whole from b. */
static void carry(dm__tls *a, dm__tls *b, const char *msg, size_t len) {
  size_t taken;
  assert_int_equal(dm__tls_write(a, msg, len, &taken), 0);
  assert_int_equal(taken, len);
  pass(a, b);
  char *got = malloc(len + 1);
  size_t have = 0;
  while (have < len) {
    long n = dm__tls_read(b, got + have, len - have);
    assert_true(n > 0);
    have += (size_t)n;
  }
  assert_memory_equal(got, msg, len);
  assert_int_equal(dm__tls_read(b, got, 1), 0); /* nothing more */
  free(got);
}

static void pair(pki *p, const char *srv_name, const char *cli_name, const char *host,
                 int verify, dm__tls_ctx **sc, dm__tls_ctx **cc, dm__tls **srv,
                 dm__tls **cli) {
  *sc = ctx_of(p, srv_name, "ca", verify);
  *cc = ctx_of(p, cli_name, "ca", verify);
  assert_int_equal(dm__tls_new(*sc, 1, NULL, srv), 0);
  assert_int_equal(dm__tls_new(*cc, 0, host, cli), 0);
}

static void unpair(dm__tls_ctx *sc, dm__tls_ctx *cc, dm__tls *srv, dm__tls *cli) {
  dm__tls_free(srv);
  dm__tls_free(cli);
  dm__tls_ctx_free(sc);
  dm__tls_ctx_free(cc);
}

static void two_sessions_agree_and_carry_bytes_both_ways(void **state) {
  dm__tls_ctx *sc, *cc;
  dm__tls *srv, *cli;
  int s;
  pair(*state, "node", "node", "localhost", 1, &sc, &cc, &srv, &cli);
  assert_int_equal(agree(cli, srv, &s), 1);
  assert_int_equal(s, 1);
  assert_true(dm__tls_up(cli) && dm__tls_up(srv));
  assert_string_equal(dm__tls_version(cli), "TLSv1.3");
  /* The peer names itself after the TLS handshake: its certificate is
   * for localhost and 127.0.0.1, and for nothing else. */
  assert_int_equal(dm__tls_check_host(srv, "localhost"), 0);
  assert_int_equal(dm__tls_check_host(srv, "127.0.0.1"), 0);
  assert_int_equal(dm__tls_check_host(srv, "elsewhere.example"), DM_ETLS);
  assert_true(dm__tls_cert_failed(srv));
  assert_non_null(strstr(dm__tls_why(srv), "another name"));
  carry(cli, srv, "\0\0\0\5hello", 9);
  carry(srv, cli, "\0\0\0\0", 4);
  unpair(sc, cc, srv, cli);
}

static void tls_1_2_as_otp_25_speaks_it_by_default(void **state) {
  dm__tls_ctx *sc, *cc;
  dm__tls *srv, *cli;
  int s;
  pair(*state, "node", "node", "127.0.0.1", 1, &sc, &cc, &srv, &cli);
  SSL_CTX_set_max_proto_version(cc->ssl, TLS1_2_VERSION);
  dm__tls_free(cli);
  assert_int_equal(dm__tls_new(cc, 0, "127.0.0.1", &cli), 0);
  assert_int_equal(agree(cli, srv, &s), 1);
  assert_int_equal(s, 1);
  assert_string_equal(dm__tls_version(srv), "TLSv1.2");
  carry(cli, srv, "ping", 4);
  carry(srv, cli, "pong", 4);
  unpair(sc, cc, srv, cli);
}

static void ciphertext_cut_into_single_bytes_still_makes_a_session(void **state) {
  dm__tls_ctx *sc, *cc;
  dm__tls *srv, *cli;
  pair(*state, "node", "node", "localhost", 1, &sc, &cc, &srv, &cli);
  int c = 0, s = 0;
  for (int round = 0; round < 20 && (c != 1 || s != 1); round++) {
    dm__buf b = DM__BUF_INIT;
    if (c == 0)
      c = dm__tls_handshake(cli);
    assert_int_equal(dm__tls_take(cli, &b, SIZE_MAX), 0);
    for (size_t i = 0; i < b.len; i++) {
      assert_int_equal(dm__tls_feed(srv, b.data + i, 1), 0);
      if (s == 0)
        s = dm__tls_handshake(srv);
    }
    b.len = 0;
    if (s == 0)
      s = dm__tls_handshake(srv);
    assert_int_equal(dm__tls_take(srv, &b, SIZE_MAX), 0);
    for (size_t i = 0; i < b.len; i++) {
      assert_int_equal(dm__tls_feed(cli, b.data + i, 1), 0);
      if (c == 0)
        c = dm__tls_handshake(cli);
    }
    dm__buf_free(&b);
  }
  assert_int_equal(c, 1);
  assert_int_equal(s, 1);
  /* A megabyte goes through whole, taken out a little at a time. */
  size_t len = 1 << 20, taken;
  char *big = malloc(len), *got = malloc(len);
  for (size_t i = 0; i < len; i++)
    big[i] = (char)(i * 7);
  assert_int_equal(dm__tls_write(cli, big, len, &taken), 0);
  assert_int_equal(taken, len);
  size_t have = 0;
  while (dm__tls_pending(cli)) {
    dm__buf b = DM__BUF_INIT;
    assert_int_equal(dm__tls_take(cli, &b, 1000), 0);
    assert_true(b.len <= 1000);
    assert_int_equal(dm__tls_feed(srv, b.data, b.len), 0);
    dm__buf_free(&b);
    long n;
    while ((n = dm__tls_read(srv, got + have, len - have)) > 0)
      have += (size_t)n;
    assert_true(n == 0);
  }
  assert_int_equal(have, len);
  assert_memory_equal(got, big, len);
  free(big);
  free(got);
  unpair(sc, cc, srv, cli);
}

/* A client with `name`'s certificate against a verifying server: refused
 * as a certificate, with `why` in the reason, on the side that found it. */
static void refused(pki *p, const char *name, const char *ca, const char *why) {
  dm__tls_ctx *sc = ctx_of(p, "node", "ca", 1), *cc = ctx_of(p, name, ca, 1);
  dm__tls *srv, *cli;
  int s;
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  assert_int_equal(dm__tls_new(cc, 0, "localhost", &cli), 0);
  int c = agree(cli, srv, &s);
  /* TLS 1.3: the client may think it is done before the server's alert
   * arrives; its next read says so. */
  if (c == 1) {
    char x;
    pass(srv, cli);
    assert_int_equal(dm__tls_read(cli, &x, 1), DM_ETLS);
    assert_non_null(strstr(dm__tls_why(cli), "alert"));
  }
  assert_int_equal(s, DM_ETLS);
  assert_true(dm__tls_cert_failed(srv));
  if (!strstr(dm__tls_why(srv), why))
    fail_msg("'%s' does not say '%s'", dm__tls_why(srv), why);
  dm__tls_free(srv);
  dm__tls_free(cli);
  dm__tls_ctx_free(sc);
  dm__tls_ctx_free(cc);
}

static void an_untrusted_certificate_is_refused(void **state) {
  refused(*state, "rogue", "ca", "unable to get local issuer certificate");
}

static void an_expired_certificate_is_refused(void **state) {
  refused(*state, "expired", "ca", "certificate has expired");
}

static void a_server_certificate_for_another_host_is_refused(void **state) {
  dm__tls_ctx *sc, *cc;
  dm__tls *srv, *cli;
  int s;
  pair(*state, "other", "node", "localhost", 1, &sc, &cc, &srv, &cli);
  assert_int_equal(agree(cli, srv, &s), DM_ETLS);
  assert_true(dm__tls_cert_failed(cli));
  assert_non_null(strstr(dm__tls_why(cli), "hostname mismatch"));
  unpair(sc, cc, srv, cli);
}

static void a_client_without_a_certificate_is_refused(void **state) {
  pki *p = *state;
  dm__tls_ctx *sc = ctx_of(p, "node", "ca", 1), *cc = ctx_of(p, "node", "ca", 0);
  dm__tls *srv, *cli;
  int s;
  /* A client context that has no certificate to show. */
  SSL_CTX *bare = SSL_CTX_new(TLS_client_method());
  dm__tls_ctx nocert = {bare, 0, 1};
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  assert_int_equal(dm__tls_new(&nocert, 0, "localhost", &cli), 0);
  agree(cli, srv, &s);
  assert_int_equal(s, DM_ETLS);
  assert_true(dm__tls_cert_failed(srv));
  assert_non_null(strstr(dm__tls_why(srv), "presented none"));
  dm__tls_free(srv);
  dm__tls_free(cli);
  SSL_CTX_free(bare);
  dm__tls_ctx_free(sc);
  dm__tls_ctx_free(cc);
}

static void without_verification_any_certificate_goes(void **state) {
  pki *p = *state;
  dm__tls_ctx *sc = ctx_of(p, "other", "ca", 0), *cc = ctx_of(p, "rogue", "rogueca", 0);
  dm__tls *srv, *cli;
  int s;
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  assert_int_equal(dm__tls_new(cc, 0, "localhost", &cli), 0);
  assert_int_equal(agree(cli, srv, &s), 1);
  assert_int_equal(s, 1);
  carry(cli, srv, "x", 1);
  unpair(sc, cc, srv, cli);
}

static void garbage_instead_of_a_client_hello_fails_cleanly(void **state) {
  dm__tls_ctx *sc = ctx_of(*state, "node", "ca", 1);
  dm__tls *srv;
  /* What a plain distribution peer sends first: a 2-byte length and 'N'. */
  static const char plain[] = "\0\x16NXXXXXXXXXXXXXXXXXXXX";
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  assert_int_equal(dm__tls_feed(srv, plain, sizeof plain - 1), 0);
  assert_int_equal(dm__tls_handshake(srv), DM_ETLS);
  assert_false(dm__tls_cert_failed(srv));
  assert_true(strlen(dm__tls_why(srv)) > 0);
  dm__tls_free(srv);
  /* A record header announcing 64 KiB, then random bytes. */
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  char junk[4096] = "\x16\x03\x01\xff\xff";
  for (size_t i = 5; i < sizeof junk; i++)
    junk[i] = (char)(i * 31 + 7);
  for (int i = 0; i < 20; i++)
    assert_int_equal(dm__tls_feed(srv, junk, sizeof junk), 0);
  assert_int_equal(dm__tls_handshake(srv), DM_ETLS);
  dm__tls_free(srv);
  dm__tls_ctx_free(sc);
}

static void close_notify_reads_as_a_close(void **state) {
  dm__tls_ctx *sc, *cc;
  dm__tls *srv, *cli;
  int s;
  char x;
  pair(*state, "node", "node", "localhost", 1, &sc, &cc, &srv, &cli);
  assert_int_equal(agree(cli, srv, &s), 1);
  dm__tls_close_notify(cli);
  assert_true(pass(cli, srv) > 0);
  assert_int_equal(dm__tls_read(srv, &x, 1), DM_ECLOSED);
  unpair(sc, cc, srv, cli);
}

/* A context from these files: the error, and its message. */
static int ctx_error(pki *p, const char *cert, const char *key, const char *ca, char *err,
                     size_t n) {
  char c[128], k[128], a[128];
  snprintf(c, sizeof c, cert[0] == '/' ? "%.0s%s" : "%s/%s", p->dir, cert);
  snprintf(k, sizeof k, key[0] == '/' ? "%.0s%s" : "%s/%s", p->dir, key);
  snprintf(a, sizeof a, ca[0] == '/' ? "%.0s%s" : "%s/%s", p->dir, ca);
  dm__tls_config cfg = {c, k, a, 1, 1};
  dm__tls_ctx *t = NULL;
  int r = dm__tls_ctx_new(&cfg, &t, err, n);
  assert_null(t);
  return r;
}

static void a_context_refuses_bad_files_naming_the_option(void **state) {
  pki *p = *state;
  char err[512];
  assert_int_equal(ctx_error(p, "missing.pem", "node.key", "ca.pem", err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "--tls-cert"));
  assert_non_null(strstr(err, "No such file"));
  /* A key where the certificate should be, and the other way round. */
  assert_int_equal(ctx_error(p, "node.key", "node.key", "ca.pem", err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "--tls-cert"));
  assert_int_equal(ctx_error(p, "node.pem", "node.pem", "ca.pem", err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "--tls-key"));
  assert_int_equal(ctx_error(p, "node.pem", "other.key", "ca.pem", err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "not the key of the certificate"));
  assert_int_equal(ctx_error(p, "node.pem", "node.key", "node.key", err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "--tls-ca"));
  assert_int_equal(ctx_error(p, "node.pem", "node.key", "/dev/null", err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "--tls-ca"));
  dm__tls_config none = {NULL, NULL, NULL, 1, 1};
  dm__tls_ctx *t = NULL;
  assert_int_equal(dm__tls_ctx_new(&none, &t, err, sizeof err), DM_EINVAL);
  assert_non_null(strstr(err, "--tls-key"));
}

static void out_of_memory_makes_no_session(void **state) {
  dm__tls_ctx *sc = ctx_of(*state, "node", "ca", 1);
  dm__tls *t = (dm__tls *)sc;
  dm__alloc_fail_after(0);
  assert_int_equal(dm__tls_new(sc, 1, NULL, &t), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_null(t);
  dm__tls_ctx_free(sc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(two_sessions_agree_and_carry_bytes_both_ways, setup, teardown),
      cmocka_unit_test_setup_teardown(tls_1_2_as_otp_25_speaks_it_by_default, setup, teardown),
      cmocka_unit_test_setup_teardown(ciphertext_cut_into_single_bytes_still_makes_a_session, setup, teardown),
      cmocka_unit_test_setup_teardown(an_untrusted_certificate_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(an_expired_certificate_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(a_server_certificate_for_another_host_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(a_client_without_a_certificate_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(without_verification_any_certificate_goes, setup, teardown),
      cmocka_unit_test_setup_teardown(garbage_instead_of_a_client_hello_fails_cleanly, setup, teardown),
      cmocka_unit_test_setup_teardown(close_notify_reads_as_a_close, setup, teardown),
      cmocka_unit_test_setup_teardown(a_context_refuses_bad_files_naming_the_option, setup, teardown),
      cmocka_unit_test_setup_teardown(out_of_memory_makes_no_session, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
