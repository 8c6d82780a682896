/* Certificates made in memory for the TLS tests, written as PEM files to
 * a directory of their own: a CA, node certificates it signs (for
 * localhost and 127.0.0.1, expired, or for another name), and a second CA
 * that nobody trusts. EC P-256 keys, so that making them is quick. */
#ifndef TLS_FIXTURE_H
#define TLS_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define DAY (24L * 3600)

typedef struct {
  EVP_PKEY *key;
  X509 *cert;
} pki_pair;

static inline void pki_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
  X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ex || X509_add_ext(x, ex, -1) != 1)
    abort();
  X509_EXTENSION_free(ex);
}

/* A certificate for cn with the subjectAltName san (NULL: a CA), valid
 * from `from` to `to` seconds from now, signed by issuer (NULL: by
 * itself). */
static inline pki_pair pki_make(const char *cn, const char *san, long from, long to,
                                const pki_pair *issuer) {
  static long serial = 1;
  pki_pair p;
  p.key = EVP_EC_gen("P-256");
  p.cert = X509_new();
  if (!p.key || !p.cert)
    abort();
  X509_set_version(p.cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(p.cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(p.cert), from);
  X509_gmtime_adj(X509_getm_notAfter(p.cert), to);
  X509_set_pubkey(p.cert, p.key);
  X509_NAME *name = X509_get_subject_name(p.cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(p.cert, issuer ? X509_get_subject_name(issuer->cert) : name);
  X509 *iss = issuer ? issuer->cert : NULL;
  pki_ext(p.cert, iss, NID_subject_key_identifier, "hash");
  if (san) {
    pki_ext(p.cert, iss, NID_basic_constraints, "critical,CA:FALSE");
    pki_ext(p.cert, iss, NID_subject_alt_name, san);
  } else {
    pki_ext(p.cert, iss, NID_basic_constraints, "critical,CA:TRUE");
    pki_ext(p.cert, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
  }
  if (X509_sign(p.cert, issuer ? issuer->key : p.key, EVP_sha256()) <= 0)
    abort();
  return p;
}

static inline void pki_free(pki_pair *p) {
  EVP_PKEY_free(p->key);
  X509_free(p->cert);
}

/* dir/name.pem (certificate) and dir/name.key (key). */
static inline void pki_write(const char *dir, const char *name, const pki_pair *p) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s.pem", dir, name);
  FILE *f = fopen(path, "w");
  if (!f || PEM_write_X509(f, p->cert) != 1)
    abort();
  fclose(f);
  snprintf(path, sizeof path, "%s/%s.key", dir, name);
  f = fopen(path, "w");
  if (!f || PEM_write_PrivateKey(f, p->key, NULL, NULL, 0, NULL, NULL) != 1)
    abort();
  fclose(f);
}

/* The files every TLS test uses, in a fresh directory:
 *   ca        the CA the nodes trust
 *   node      signed by ca, for localhost and 127.0.0.1
 *   other     signed by ca, for elsewhere.example only
 *   expired   signed by ca, for localhost, expired a day ago
 *   rogue     signed by rogueca, which nobody trusts
 *   rogueca   that CA */
static inline void pki_dir(char *dir /* at least 64 bytes */) {
  strcpy(dir, "/tmp/test_tls.XXXXXX");
  if (!mkdtemp(dir))
    abort();
  pki_pair ca = pki_make("test ca", NULL, -DAY, 30 * DAY, NULL);
  pki_pair rogueca = pki_make("rogue ca", NULL, -DAY, 30 * DAY, NULL);
  const char *san = "DNS:localhost,IP:127.0.0.1";
  pki_pair node = pki_make("node", san, -DAY, 30 * DAY, &ca);
  pki_pair other = pki_make("other", "DNS:elsewhere.example", -DAY, 30 * DAY, &ca);
  pki_pair expired = pki_make("expired", san, -30 * DAY, -DAY, &ca);
  pki_pair rogue = pki_make("rogue", san, -DAY, 30 * DAY, &rogueca);
  pki_write(dir, "ca", &ca);
  pki_write(dir, "rogueca", &rogueca);
  pki_write(dir, "node", &node);
  pki_write(dir, "other", &other);
  pki_write(dir, "expired", &expired);
  pki_write(dir, "rogue", &rogue);
  pki_free(&ca);
  pki_free(&rogueca);
  pki_free(&node);
  pki_free(&other);
  pki_free(&expired);
  pki_free(&rogue);
}

static inline void pki_rmdir(const char *dir) {
  const char *names[] = {"ca", "rogueca", "node", "other", "expired", "rogue"};
  char path[256];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s.pem", dir, names[i]);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s.key", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

#endif
