/* A TLS session over a stream its user moves: ciphertext read from the
 * socket goes in, plaintext comes out; plaintext goes in, and the
 * ciphertext to send waits here until it is taken. OpenSSL runs on
 * memory BIOs, so the socket stays the loop's and no call ever blocks.
 * The handshake (handshake.c) and then the connection (conn.c) own it in
 * turn. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dist/dist.h"
#include "dm.h"

struct dm__tls {
  SSL *ssl;
  BIO *in, *out;   /* ciphertext from the peer, and to it */
  int up;          /* the TLS handshake is done */
  int cert;        /* the last failure was about a certificate */
  char why[200];   /* the last failure, for the log */
  X509 *peer_cert; /* the peer's certificate at the first handshake, or NULL */
  uint64_t reneg_ms; /* monotonic ms of the last renegotiation, 0: none */
  const char *abuse; /* set by on_info: why the session must end */
};

/* An OTP 25 peer renegotiates a TLS 1.2 connection after 2^28 records:
 * hours apart even at a million records a second. More often than this
 * is a peer spending this node's CPU on handshakes. */
#define RENEG_MIN_MS 60000

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Renegotiations of a settled session (TLS 1.2 only: 1.3 has none, and
 * its post-handshake messages also start "handshakes" here): at most one
 * a minute, and the peer keeps the certificate it was verified with. */
static void on_info(const SSL *ssl, int where, int ret) {
  dm__tls *t = SSL_get_app_data(ssl);
  (void)ret;
  if (!t || !t->up || SSL_version(ssl) >= TLS1_3_VERSION)
    return;
  if (where & SSL_CB_HANDSHAKE_START) {
    uint64_t now = now_ms();
    if (t->reneg_ms && now - t->reneg_ms < RENEG_MIN_MS)
      t->abuse = "the peer renegotiates more than once a minute";
    t->reneg_ms = now ? now : 1;
  }
  if (where & SSL_CB_HANDSHAKE_DONE) {
    X509 *c = SSL_get0_peer_certificate(ssl);
    if (t->peer_cert ? !c || X509_cmp(c, t->peer_cert) != 0 : c != NULL)
      t->abuse = "the peer changed its certificate in a renegotiation";
  }
}

static int is_ip(const char *host) {
  unsigned char a[16];
  return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

int dm__tls_new(const dm__tls_ctx *ctx, int server, const char *host, dm__tls **out) {
  dm__tls *t = dm__calloc(1, sizeof *t);
  *out = NULL;
  if (!t)
    return DM_ENOMEM;
  ERR_clear_error();
  t->ssl = SSL_new(ctx->ssl);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->in || !t->out)
    goto fail;
  /* An empty input BIO means "wait for more", not end of stream: the
   * socket says when the stream ends. */
  BIO_set_mem_eof_return(t->in, -1);
  SSL_set_bio(t->ssl, t->in, t->out); /* the session owns them now */
  SSL_set_app_data(t->ssl, t);
  SSL_set_info_callback(t->ssl, on_info);
  /* No renegotiation until the distribution handshake is over: the peer
   * has not proven the cookie yet. dm__tls_settle allows it. */
  SSL_set_options(t->ssl, SSL_OP_NO_RENEGOTIATION);
  if (server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    /* As OTP's client does: the peer's host is its server name, and with
     * verification its certificate must be for that host. */
    if (host && !is_ip(host) && SSL_set_tlsext_host_name(t->ssl, host) != 1)
      goto fail_ssl;
    if (host && ctx->verify) {
      X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
      int ok = is_ip(host) ? X509_VERIFY_PARAM_set1_ip_asc(p, host)
                           : X509_VERIFY_PARAM_set1_host(p, host, 0);
      if (ok != 1)
        goto fail_ssl;
    }
  }
  *out = t;
  return 0;
fail:
  BIO_free(t->in);
  BIO_free(t->out);
  SSL_free(t->ssl);
  dm__free(t);
  ERR_clear_error();
  return DM_ENOMEM;
fail_ssl:
  dm__tls_free(t);
  ERR_clear_error();
  return DM_EINVAL;
}

void dm__tls_free(dm__tls *t) {
  if (!t)
    return;
  SSL_free(t->ssl); /* and both BIOs */
  X509_free(t->peer_cert);
  dm__free(t);
}

void dm__tls_settle(dm__tls *t) {
  SSL_clear_options(t->ssl, SSL_OP_NO_RENEGOTIATION);
}

/* Why the last call failed, from the verification result or OpenSSL's
 * error queue (which it empties). */
static int failed(dm__tls *t, int r) {
  int e = SSL_get_error(t->ssl, r);
  /* OpenSSL checks a server's chain and keeps the result even when told
   * not to verify: only a verifying side was refused a certificate. */
  long vr = (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(t->ssl)
                                                            : X509_V_OK;
  unsigned long q = ERR_peek_last_error();
  int reason = q ? ERR_GET_REASON(q) : 0;
  t->cert = 0;
  if (vr != X509_V_OK) {
    t->cert = 1;
    snprintf(t->why, sizeof t->why, "certificate refused: %s",
             X509_verify_cert_error_string(vr));
  } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    t->cert = 1;
    snprintf(t->why, sizeof t->why, "certificate refused: the peer presented none");
  } else if (q) {
    const char *s = ERR_reason_error_string(q);
    int alert = ERR_GET_LIB(q) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET &&
                reason < SSL_AD_REASON_OFFSET + 256;
    snprintf(t->why, sizeof t->why, "%s%s", s ? s : "OpenSSL error",
             alert ? " (an alert from the peer)" : "");
  } else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
    snprintf(t->why, sizeof t->why, "the peer ended the TLS session");
  } else {
    snprintf(t->why, sizeof t->why, "TLS error %d", e);
  }
  ERR_clear_error();
  return DM_ETLS;
}

/* 1 when the call only waits for the peer (more input, or output taken). */
static int waits(dm__tls *t, int r) {
  int e = SSL_get_error(t->ssl, r);
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

int dm__tls_feed(dm__tls *t, const void *data, size_t len) {
  if (len == 0)
    return 0;
  size_t done = 0;
  if (!BIO_write_ex(t->in, data, len, &done) || done != len) {
    ERR_clear_error();
    return DM_ENOMEM;
  }
  return 0;
}

size_t dm__tls_buffered(const dm__tls *t) {
  return BIO_ctrl_pending(t->in);
}

int dm__tls_handshake(dm__tls *t) {
  if (t->up)
    return 1;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->up = 1;
    t->peer_cert = SSL_get1_peer_certificate(t->ssl);
    return 1;
  }
  return waits(t, r) ? 0 : failed(t, r);
}

/* A session the peer abused (see on_info): DM_ETLS and why, else 0. */
static int abused(dm__tls *t) {
  if (!t->abuse)
    return 0;
  t->cert = 0;
  snprintf(t->why, sizeof t->why, "%s", t->abuse);
  return DM_ETLS;
}

int dm__tls_up(const dm__tls *t) { return t->up; }

long dm__tls_read(dm__tls *t, void *buf, size_t len) {
  size_t n = 0;
  if (len == 0)
    return 0;
  ERR_clear_error();
  int r = SSL_read_ex(t->ssl, buf, len, &n);
  if (abused(t))
    return DM_ETLS;
  if (r == 1)
    return (long)n;
  if (waits(t, r))
    return 0;
  if (SSL_get_error(t->ssl, r) == SSL_ERROR_ZERO_RETURN) {
    snprintf(t->why, sizeof t->why, "the peer closed the TLS session");
    return DM_ECLOSED;
  }
  return failed(t, r);
}

int dm__tls_write(dm__tls *t, const void *data, size_t len, size_t *taken) {
  *taken = 0;
  while (*taken < len) {
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_write_ex(t->ssl, (const char *)data + *taken, len - *taken, &n);
    if (abused(t))
      return DM_ETLS;
    if (r != 1)
      return waits(t, r) ? 0 : failed(t, r);
    *taken += n;
  }
  return 0;
}

size_t dm__tls_pending(const dm__tls *t) { return BIO_ctrl_pending(t->out); }

int dm__tls_take(dm__tls *t, dm__buf *b, size_t max) {
  size_t n = BIO_ctrl_pending(t->out), got = 0;
  if (n > max)
    n = max;
  if (n == 0)
    return 0;
  int r = dm__buf_reserve(b, n);
  if (r)
    return r;
  if (!BIO_read_ex(t->out, b->data + b->len, n, &got)) {
    ERR_clear_error();
    return DM_EIO;
  }
  b->len += got;
  return 0;
}

void dm__tls_close_notify(dm__tls *t) {
  ERR_clear_error();
  if (t->up)
    (void)SSL_shutdown(t->ssl);
  ERR_clear_error();
}

int dm__tls_check_host(dm__tls *t, const char *host) {
  X509 *cert = SSL_get0_peer_certificate(t->ssl);
  int ok;
  if (!cert) {
    t->cert = 1;
    snprintf(t->why, sizeof t->why, "certificate refused: the peer presented none");
    return DM_ETLS;
  }
  ok = is_ip(host) ? X509_check_ip_asc(cert, host, 0) : X509_check_host(cert, host, 0, 0, NULL);
  ERR_clear_error();
  if (ok == 1)
    return 0;
  t->cert = 1;
  snprintf(t->why, sizeof t->why,
           "certificate refused: it is for another name than the peer's host %.64s", host);
  return DM_ETLS;
}

const char *dm__tls_why(const dm__tls *t) { return t->why[0] ? t->why : "TLS error"; }

int dm__tls_cert_failed(const dm__tls *t) { return t->cert; }

const char *dm__tls_version(const dm__tls *t) { return SSL_get_version(t->ssl); }
