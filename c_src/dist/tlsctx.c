/* The node's TLS context: its certificate, key and CA read once at
 * start, and the policy every session of the node follows (protocol
 * versions, whether peers must prove themselves, no session tickets). The
 * sessions themselves are tls.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dist/dist.h"
#include "dm.h"

/* OpenSSL's allocations through the node's wrapper, so that running out
 * of memory inside OpenSSL is what tests can inject like any other. */
static void *tls_malloc(size_t n, const char *file, int line) {
  (void)file;
  (void)line;
  return dm__malloc(n);
}

static void *tls_realloc(void *p, size_t n, const char *file, int line) {
  (void)file;
  (void)line;
  if (n == 0) { /* OpenSSL's own realloc frees then, and so must this */
    dm__free(p);
    return NULL;
  }
  return dm__realloc(p, n);
}

static void tls_free(void *p, const char *file, int line) {
  (void)file;
  (void)line;
  dm__free(p);
}

int dm__tls_use_node_alloc(void) {
  return CRYPTO_set_mem_functions(tls_malloc, tls_realloc, tls_free) == 1 ? 0 : DM_EINVAL;
}

/* The first error of OpenSSL's queue as text (the queue is emptied), or
 * `dflt` when there is none. */
static const char *ssl_reason(char *buf, size_t size, const char *dflt) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (!e)
    return dflt;
  const char *r = ERR_reason_error_string(e);
  snprintf(buf, size, "%s", r ? r : "unknown OpenSSL error");
  return buf;
}

/* Whether the file can be read at all: the reason OpenSSL gives for a
 * missing file ("system lib") says less than errno does. */
static int readable(const char *opt, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "--%s %s: cannot read it: %s", opt, path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

/* The node's own certificate must be in force: peers that verify refuse
 * an expired one, and the log should say so before they do. */
static void check_dates(const char *path, SSL_CTX *ctx) {
  X509 *cert = SSL_CTX_get0_certificate(ctx);
  if (!cert)
    return;
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
    DM_WARN("--tls-cert %s: the certificate has expired; peers that verify "
            "certificates will refuse this node",
            path);
  else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
    DM_WARN("--tls-cert %s: the certificate is not valid yet; peers that "
            "verify certificates will refuse this node",
            path);
}

/* Moves what one side has to send to the other. 0 or -1. */
static int pass(BIO *from, BIO *to) {
  char buf[4096];
  int n;
  while ((n = BIO_read(from, buf, sizeof buf)) > 0)
    if (BIO_write(to, buf, n) != n)
      return -1;
  return 0;
}

/* A handshake of the context with itself, through memory, neither side
 * verifying: it proves the certificate and key work together in a
 * handshake, and it sets up what OpenSSL sets up once per process at its
 * first handshake, at start, while memory is plenty (an allocation that
 * fails there is never tried again, and TLS would stay broken). 0, or -1
 * with why. */
static int self_handshake(SSL_CTX *ctx, char *why, size_t size) {
  SSL *s = SSL_new(ctx), *c = SSL_new(ctx);
  BIO *si = BIO_new(BIO_s_mem()), *so = BIO_new(BIO_s_mem());
  BIO *ci = BIO_new(BIO_s_mem()), *co = BIO_new(BIO_s_mem());
  int r = -1, sd = 0, cd = 0;
  if (!s || !c || !si || !so || !ci || !co) {
    BIO_free(si);
    BIO_free(so);
    BIO_free(ci);
    BIO_free(co);
    goto done;
  }
  BIO_set_mem_eof_return(si, -1);
  BIO_set_mem_eof_return(ci, -1);
  SSL_set_bio(s, si, so);
  SSL_set_bio(c, ci, co);
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
  SSL_set_verify(s, SSL_VERIFY_NONE, NULL);
  SSL_set_verify(c, SSL_VERIFY_NONE, NULL);
  for (int i = 0; i < 10 && !(sd && cd); i++) {
    cd = cd || SSL_do_handshake(c) == 1;
    if (pass(co, si))
      break;
    sd = sd || SSL_do_handshake(s) == 1;
    if (pass(so, ci))
      break;
  }
  r = sd && cd ? 0 : -1;
done:
  if (r)
    ssl_reason(why, size, "it does not complete");
  ERR_clear_error();
  SSL_free(s);
  SSL_free(c);
  return r;
}

int dm__tls_ctx_new(const dm__tls_config *cfg, dm__tls_ctx **out, char *err,
                    size_t errlen) {
  char why[256];
  dm__tls_ctx *t = NULL;
  SSL_CTX *ctx = NULL;
  STACK_OF(X509_NAME) *cas = NULL;
  *out = NULL;
  if (!cfg->cert || !cfg->key || !cfg->ca) {
    snprintf(err, errlen, "TLS needs all of --tls-cert, --tls-key and --tls-ca");
    return DM_EINVAL;
  }
  if (readable("tls-cert", cfg->cert, err, errlen) ||
      readable("tls-key", cfg->key, err, errlen) ||
      readable("tls-ca", cfg->ca, err, errlen))
    return DM_EINVAL;
  ERR_clear_error();
  t = dm__calloc(1, sizeof *t);
  if (!t || !(ctx = SSL_CTX_new(TLS_method()))) {
    snprintf(err, errlen, "TLS: %s", ssl_reason(why, sizeof why, "out of memory"));
    goto fail;
  }
  /* TLS 1.2 and 1.3: OTP 25's inet_tls_dist speaks 1.2 unless told
   * otherwise, and nothing older is safe. */
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) {
    snprintf(err, errlen, "--tls-cert %s: not a PEM certificate (%s)", cfg->cert,
             ssl_reason(why, sizeof why, "no certificate in it"));
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) != ERR_LIB_X509 || ERR_GET_REASON(e) != X509_R_KEY_VALUES_MISMATCH) {
      snprintf(err, errlen, "--tls-key %s: not a PEM private key (%s)", cfg->key,
               ssl_reason(why, sizeof why, "no key in it"));
      goto fail;
    }
    ERR_clear_error();
    snprintf(err, errlen, "--tls-key %s: not the key of the certificate in %s",
             cfg->key, cfg->cert);
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(err, errlen, "--tls-key %s: not the key of the certificate in %s",
             cfg->key, cfg->cert);
    ERR_clear_error();
    goto fail;
  }
  if (SSL_CTX_load_verify_locations(ctx, cfg->ca, NULL) != 1 ||
      !(cas = SSL_load_client_CA_file(cfg->ca))) {
    snprintf(err, errlen, "--tls-ca %s: no PEM certificate in it (%s)", cfg->ca,
             ssl_reason(why, sizeof why, "empty"));
    goto fail;
  }
  /* The CAs this node trusts, named to a peer asked for its certificate. */
  SSL_CTX_set_client_CA_list(ctx, cas);
  check_dates(cfg->cert, ctx);
  /* A connection lives for as long as its peer: nothing to resume, and
   * no ticket a peer could replay. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  /* An OTP 25 client renegotiates a TLS 1.2 connection (securely, RFC
   * 5746) after 2^28 records, which a busy connection reaches within
   * hours: refusing it would drop the peer. Each session takes it only
   * once its distribution handshake is over, at most once a minute, and
   * with the same certificate (tls.c). */
  SSL_CTX_set_options(ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Writes may stop half way through a renegotiation and go on later
   * from the same bytes (wherever the buffer then is); idle connections
   * give their record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  t->verify = cfg->verify;
  t->only = cfg->only;
  SSL_CTX_set_verify(ctx, cfg->verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                      : SSL_VERIFY_NONE,
                     NULL);
  if (self_handshake(ctx, why, sizeof why)) {
    snprintf(err, errlen, "--tls-cert %s: a TLS handshake with it fails (%s)", cfg->cert, why);
    goto fail;
  }
  t->ssl = ctx;
  *out = t;
  return 0;
fail:
  SSL_CTX_free(ctx);
  dm__free(t);
  return DM_EINVAL;
}

void dm__tls_ctx_free(dm__tls_ctx *t) {
  if (!t)
    return;
  SSL_CTX_free(t->ssl);
  dm__free(t);
}
