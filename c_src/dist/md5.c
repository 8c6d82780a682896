/* MD5: the message digest of RFC 1321, written from the RFC, for the
 * distribution handshake's challenge digests (MD5 of the cookie and a
 * challenge in decimal). One call over one buffer; no state kept. */
#include <string.h>

#include "dist/dist.h"

/* T[i] = floor(2^32 * |sin(i + 1)|), RFC 1321 section 3.4. */
static const uint32_t T[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
    0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};

/* The rotations of each round's four steps. */
static const unsigned S[4][4] = {
    {7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

static uint32_t rol(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

/* One 64-byte block into the state (section 3.4). */
static void block(uint32_t st[4], const unsigned char *p) {
  uint32_t X[16], a = st[0], b = st[1], c = st[2], d = st[3];
  for (int i = 0; i < 16; i++)
    X[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
           (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
  for (unsigned i = 0; i < 64; i++) {
    uint32_t f;
    unsigned k;
    switch (i / 16) {
    case 0:
      f = (b & c) | (~b & d);
      k = i;
      break;
    case 1:
      f = (b & d) | (c & ~d);
      k = (5 * i + 1) % 16;
      break;
    case 2:
      f = b ^ c ^ d;
      k = (3 * i + 5) % 16;
      break;
    default:
      f = c ^ (b | ~d);
      k = (7 * i) % 16;
      break;
    }
    uint32_t t = d;
    d = c;
    c = b;
    b = b + rol(a + f + X[k] + T[i], S[i / 16][i % 4]);
    a = t;
  }
  st[0] += a;
  st[1] += b;
  st[2] += c;
  st[3] += d;
}

void dm__md5(const void *data, size_t len, unsigned char out[16]) {
  uint32_t st[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  const unsigned char *p = data;
  unsigned char tail[128];
  size_t whole = len - len % 64, rest = len % 64;
  for (size_t off = 0; off < whole; off += 64)
    block(st, p + off);
  /* Padding (section 3.1): a 1 bit, zeros to 56 mod 64, then the length
   * in bits, little-endian (section 3.2). */
  memset(tail, 0, sizeof tail);
  memcpy(tail, p + whole, rest);
  tail[rest] = 0x80;
  size_t tlen = rest < 56 ? 64 : 128;
  uint64_t bits = (uint64_t)len * 8;
  for (int i = 0; i < 8; i++)
    tail[tlen - 8 + i] = (unsigned char)(bits >> (8 * i));
  block(st, tail);
  if (tlen == 128)
    block(st, tail + 64);
  for (int i = 0; i < 16; i++)
    out[i] = (unsigned char)(st[i / 4] >> (8 * (i % 4)));
}
