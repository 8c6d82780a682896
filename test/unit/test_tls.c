/* TLS sessions and the node's TLS context, two sessions talking through
 * memory: they agree (TLS 1.3 and 1.2) and carry bytes both ways, however
 * the ciphertext is cut; a certificate that is untrusted, expired, for
 * another name or missing is refused as a certificate; verification off
 * lets them through, and then no failure is blamed on a certificate;
 * garbage instead of a ClientHello fails cleanly; close_notify reads as a
 * close; a peer may renegotiate only once the session is settled, once a
 * minute, keeping its certificate; running out of memory anywhere in
 * OpenSSL fails cleanly; and a context refuses files that are missing,
 * not PEM, or a key that is not the certificate's, naming the option. */
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

/* A peer of our own on OpenSSL directly, for what dm__tls never does
 * itself (renegotiate, change certificates): a client of cc. */
typedef struct {
  SSL *ssl;
  BIO *in, *out;
} raw;

static raw raw_client(dm__tls_ctx *cc, int max_version) {
  raw r;
  r.ssl = SSL_new(cc->ssl);
  r.in = BIO_new(BIO_s_mem());
  r.out = BIO_new(BIO_s_mem());
  assert_non_null(r.ssl);
  BIO_set_mem_eof_return(r.in, -1);
  SSL_set_bio(r.ssl, r.in, r.out);
  SSL_set_connect_state(r.ssl);
  SSL_set_max_proto_version(r.ssl, max_version);
  return r;
}

/* Everything r has to send, to t; and the other way. */
static void raw_to(raw *r, dm__tls *t) {
  char buf[16384];
  int n;
  while ((n = BIO_read(r->out, buf, sizeof buf)) > 0)
    assert_int_equal(dm__tls_feed(t, buf, (size_t)n), 0);
}

static void to_raw(dm__tls *t, raw *r) {
  dm__buf b = DM__BUF_INIT;
  assert_int_equal(dm__tls_take(t, &b, SIZE_MAX), 0);
  if (b.len)
    assert_int_equal(BIO_write(r->in, b.data, (int)b.len), (int)b.len);
  dm__buf_free(&b);
}

/* The raw client's handshake (first, or a renegotiation it started)
 * against srv, whose reads carry it on. Returns srv's last read: 0, or
 * its error. */
static long raw_handshake(raw *r, dm__tls *srv) {
  char x[64];
  long n = 0;
  for (int i = 0; i < 20; i++) {
    int c = SSL_do_handshake(r->ssl);
    raw_to(r, srv);
    if (!dm__tls_up(srv)) {
      int s = dm__tls_handshake(srv);
      if (s < 0)
        return s;
    } else if ((n = dm__tls_read(srv, x, sizeof x)) < 0) {
      return n;
    }
    to_raw(srv, r);
    if (c == 1 && dm__tls_up(srv) && !SSL_renegotiate_pending(r->ssl))
      return 0;
  }
  return -1;
}

static void raw_says(raw *r, dm__tls *srv, const char *text) {
  char got[64];
  assert_int_equal(SSL_write(r->ssl, text, (int)strlen(text)), (int)strlen(text));
  raw_to(r, srv);
  assert_int_equal(dm__tls_read(srv, got, sizeof got), (long)strlen(text));
  assert_memory_equal(got, text, strlen(text));
}

static void renegotiation_waits_for_the_session_to_settle_then_once_a_minute(void **state) {
  pki *p = *state;
  dm__tls_ctx *sc = ctx_of(p, "node", "ca", 1), *cc = ctx_of(p, "node", "ca", 1);
  dm__tls *srv;
  /* Before dm__tls_settle (the distribution handshake is not over): a
   * renegotiation is refused, and the session ends with it. */
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  raw r = raw_client(cc, TLS1_2_VERSION);
  assert_int_equal(raw_handshake(&r, srv), 0);
  raw_says(&r, srv, "before");
  assert_int_equal(SSL_renegotiate(r.ssl), 1);
  assert_int_equal(raw_handshake(&r, srv), DM_ETLS);
  assert_true(SSL_renegotiate_pending(r.ssl));
  SSL_free(r.ssl);
  dm__tls_free(srv);
  /* Settled: one renegotiation goes through and the session goes on; a
   * second at once ends it. */
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  r = raw_client(cc, TLS1_2_VERSION);
  assert_int_equal(raw_handshake(&r, srv), 0);
  dm__tls_settle(srv);
  assert_int_equal(SSL_renegotiate(r.ssl), 1);
  assert_int_equal(raw_handshake(&r, srv), 0);
  raw_says(&r, srv, "after one");
  assert_int_equal(SSL_renegotiate(r.ssl), 1);
  assert_int_equal(raw_handshake(&r, srv), DM_ETLS);
  assert_non_null(strstr(dm__tls_why(srv), "more than once a minute"));
  assert_false(dm__tls_cert_failed(srv));
  SSL_free(r.ssl);
  dm__tls_free(srv);
  dm__tls_ctx_free(sc);
  dm__tls_ctx_free(cc);
}

static void a_renegotiation_may_not_change_the_peer_certificate(void **state) {
  pki *p = *state;
  dm__tls_ctx *sc = ctx_of(p, "node", "ca", 1), *cc = ctx_of(p, "node", "ca", 1);
  dm__tls *srv;
  char cert[128], key[128];
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  raw r = raw_client(cc, TLS1_2_VERSION);
  assert_int_equal(raw_handshake(&r, srv), 0);
  dm__tls_settle(srv);
  /* A certificate the CA signed too, for another name: verified at the
   * first handshake, it would have been refused at send_name. */
  snprintf(cert, sizeof cert, "%s/other.pem", p->dir);
  snprintf(key, sizeof key, "%s/other.key", p->dir);
  assert_int_equal(SSL_use_certificate_file(r.ssl, cert, SSL_FILETYPE_PEM), 1);
  assert_int_equal(SSL_use_PrivateKey_file(r.ssl, key, SSL_FILETYPE_PEM), 1);
  assert_int_equal(SSL_renegotiate(r.ssl), 1);
  assert_int_equal(raw_handshake(&r, srv), DM_ETLS);
  assert_non_null(strstr(dm__tls_why(srv), "changed its certificate"));
  SSL_free(r.ssl);
  dm__tls_free(srv);
  dm__tls_ctx_free(sc);
  dm__tls_ctx_free(cc);
}

/* A client that does not verify, against a server it would not trust:
 * its later failures (here a corrupt record) are TLS failures, not
 * certificates it refused. */
static void without_verification_no_failure_is_blamed_on_a_certificate(void **state) {
  pki *p = *state;
  dm__tls_ctx *sc = ctx_of(p, "rogue", "rogueca", 0), *cc = ctx_of(p, "node", "ca", 0);
  dm__tls *srv, *cli;
  int s;
  char x;
  assert_int_equal(dm__tls_new(sc, 1, NULL, &srv), 0);
  assert_int_equal(dm__tls_new(cc, 0, "localhost", &cli), 0);
  assert_int_equal(agree(cli, srv, &s), 1);
  static const char bad[] = "\x17\x03\x03\x00\x20" "0123456789abcdef0123456789abcdef";
  assert_int_equal(dm__tls_feed(cli, bad, sizeof bad - 1), 0);
  assert_int_equal(dm__tls_read(cli, &x, 1), DM_ETLS);
  assert_false(dm__tls_cert_failed(cli));
  assert_null(strstr(dm__tls_why(cli), "certificate"));
  unpair(sc, cc, srv, cli);
}

/* Moves a's ciphertext to b; 0 or the first error (out of memory). */
static int try_pass(dm__tls *a, dm__tls *b) {
  dm__buf buf = DM__BUF_INIT;
  int r = dm__tls_take(a, &buf, SIZE_MAX);
  if (!r && buf.len)
    r = dm__tls_feed(b, buf.data, buf.len);
  dm__buf_free(&buf);
  return r;
}

/* Every allocation of a session and its handshake, OpenSSL's included,
 * made to fail in turn: each run ends with a session, or an error, and
 * valgrind finds nothing left behind. */
static void running_out_of_memory_anywhere_fails_cleanly(void **state) {
  pki *p = *state;
  dm__tls_ctx *sc = ctx_of(p, "node", "ca", 1), *cc = ctx_of(p, "node", "ca", 1);
  long k;
  int failures = 0;
  /* OpenSSL sets up some of itself once per process, at the first
   * handshake, and an allocation failing there stays failed: the
   * contexts' handshakes with themselves have done that already, as a
   * node's does at start. */
  /* Every one of the first allocations (the sessions, the first
   * flights), then every 97th: a handshake makes some 8000, and under
   * valgrind each run of it costs a second. */
  for (k = 0; k < 100000; k += k < 400 ? 1 : 97) {
    dm__tls *srv = NULL, *cli = NULL;
    int c = 0, s = 0, r;
    dm__alloc_fail_after(k);
    r = dm__tls_new(sc, 1, NULL, &srv);
    if (!r)
      r = dm__tls_new(cc, 0, "localhost", &cli);
    for (int i = 0; !r && i < 20 && (c != 1 || s != 1); i++) {
      if (c == 0 && (c = dm__tls_handshake(cli)) < 0)
        r = c;
      if (!r)
        r = try_pass(cli, srv);
      if (!r && s == 0 && (s = dm__tls_handshake(srv)) < 0)
        r = s;
      if (!r)
        r = try_pass(srv, cli);
    }
    dm__alloc_fail_after(-1);
    dm__tls_free(srv);
    dm__tls_free(cli);
    if (c == 1 && s == 1)
      break; /* k allocations were enough for all of it */
    failures++;
  }
  assert_true(failures > 50); /* OpenSSL's allocations are ours to fail */
  assert_true(k < 100000);
  dm__tls_ctx_free(sc);
  dm__tls_ctx_free(cc);
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
      cmocka_unit_test_setup_teardown(renegotiation_waits_for_the_session_to_settle_then_once_a_minute, setup, teardown),
      cmocka_unit_test_setup_teardown(a_renegotiation_may_not_change_the_peer_certificate, setup, teardown),
      cmocka_unit_test_setup_teardown(without_verification_no_failure_is_blamed_on_a_certificate, setup, teardown),
      cmocka_unit_test_setup_teardown(running_out_of_memory_anywhere_fails_cleanly, setup, teardown),
  };
  assert_int_equal(dm__tls_use_node_alloc(), 0);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
