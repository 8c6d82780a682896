/* MD5: the test suite of RFC 1321 (appendix A.5), and inputs around the
 * padding boundaries checked against another implementation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "dm.h"
#include "dist/dist.h"

static void hex(const unsigned char d[16], char out[33]) {
  for (int i = 0; i < 16; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check(const char *in, size_t len, const char *want) {
  unsigned char d[16];
  char h[33];
  dm__md5(in, len, d);
  hex(d, h);
  assert_string_equal(h, want);
}

static void rfc1321_test_suite(void **state) {
  (void)state;
  static const struct {
    const char *in, *md5;
  } v[] = {
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"a", "0cc175b9c0f1b6a831c399e269772661"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
       "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"1234567890123456789012345678901234567890"
       "1234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    check(v[i].in, strlen(v[i].in), v[i].md5);
}

/* 55, 56 and 64 bytes: the length still fits the last block, just does
 * not, and a whole block of input with the padding in a block of its own. */
static void padding_boundaries(void **state) {
  (void)state;
  char a[65];
  memset(a, 'a', sizeof a);
  check(a, 55, "ef1772b6dff9a122358552954ad0df65");
  check(a, 56, "3b0c8ac703f828b04c6c197006d17218");
  check(a, 64, "014842d480b571495a4a0363793f7367");
}

/* What the handshake digests: a cookie and a challenge in decimal. */
static void cookie_and_challenge(void **state) {
  (void)state;
  check("secret123456", 12, "e7703b4537789d7055f55048e8f9d25c");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rfc1321_test_suite),
      cmocka_unit_test(padding_boundaries),
      cmocka_unit_test(cookie_and_challenge),
  };
  return cmocka_run_group_tests_name("md5", tests, NULL, NULL);
}
