/* The frame reader: packets split anywhere, several per read, ticks, and
 * length prefixes over the limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "dm.h"
#include "dist/dist.h"

typedef struct {
  int count, ticks;
  char last[256];
  size_t last_len;
  int stop_after;
} sink;

static int collect(void *ud, const char *pkt, size_t len) {
  sink *s = ud;
  s->count++;
  if (len == 0)
    s->ticks++;
  s->last_len = len;
  if (len <= sizeof s->last)
    memcpy(s->last, pkt, len);
  return s->stop_after && s->count == s->stop_after ? -1 : 0;
}

/* Builds length-prefixed packet `body` into out; returns its size. */
static size_t frame(char *out, const char *body, uint32_t len) {
  dm__put32be(out, len);
  memcpy(out + 4, body, len);
  return len + 4;
}

static void whole_packet_in_one_read(void **state) {
  (void)state;
  dm__frame_reader fr;
  sink s = {0};
  char buf[64];
  size_t n = frame(buf, "phello", 6);
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, n, collect, &s), 0);
  assert_int_equal(s.count, 1);
  assert_int_equal(s.last_len, 6);
  assert_memory_equal(s.last, "phello", 6);
  assert_false(dm__frame_partial(&fr));
  dm__frame_free(&fr);
}

static void packet_split_at_every_byte(void **state) {
  (void)state;
  char buf[64];
  size_t n = frame(buf, "pabcdefgh", 9);
  for (size_t cut = 1; cut < n; cut++) {
    dm__frame_reader fr;
    sink s = {0};
    dm__frame_init(&fr, 1024);
    assert_int_equal(dm__frame_feed(&fr, buf, cut, collect, &s), 0);
    assert_int_equal(s.count, 0);
    assert_true(dm__frame_partial(&fr));
    assert_int_equal(dm__frame_feed(&fr, buf + cut, n - cut, collect, &s), 0);
    assert_int_equal(s.count, 1);
    assert_memory_equal(s.last, "pabcdefgh", 9);
    dm__frame_free(&fr);
  }
}

static void byte_by_byte_stream(void **state) {
  (void)state;
  char buf[256];
  size_t n = 0;
  n += frame(buf + n, "pone", 4);
  n += frame(buf + n, "", 0);
  n += frame(buf + n, "ptwo!", 5);
  dm__frame_reader fr;
  sink s = {0};
  dm__frame_init(&fr, 1024);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(dm__frame_feed(&fr, buf + i, 1, collect, &s), 0);
  assert_int_equal(s.count, 3);
  assert_int_equal(s.ticks, 1);
  assert_memory_equal(s.last, "ptwo!", 5);
  dm__frame_free(&fr);
}

static void several_packets_and_ticks_in_one_read(void **state) {
  (void)state;
  char buf[256];
  size_t n = 0;
  n += frame(buf + n, "", 0);
  n += frame(buf + n, "pA", 2);
  n += frame(buf + n, "", 0);
  n += frame(buf + n, "pBB", 3);
  n += frame(buf + n, "pCCC", 4);
  dm__frame_reader fr;
  sink s = {0};
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, n, collect, &s), 0);
  assert_int_equal(s.count, 5);
  assert_int_equal(s.ticks, 2);
  assert_memory_equal(s.last, "pCCC", 4);
  dm__frame_free(&fr);
}

static void oversized_length_is_refused(void **state) {
  (void)state;
  char buf[8];
  dm__put32be(buf, 1025);
  dm__frame_reader fr;
  sink s = {0};
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, 4, collect, &s), DM_ETOOBIG);
  assert_int_equal(s.count, 0);
  /* Split length prefix too. */
  dm__frame_free(&fr);
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, 2, collect, &s), 0);
  assert_int_equal(dm__frame_feed(&fr, buf + 2, 2, collect, &s), DM_ETOOBIG);
  dm__put32be(buf, UINT32_MAX);
  dm__frame_free(&fr);
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, 4, collect, &s), DM_ETOOBIG);
  dm__frame_free(&fr);
}

static void length_at_the_limit_is_accepted(void **state) {
  (void)state;
  static char buf[4 + 1024];
  memset(buf + 4, 'x', 1024);
  dm__put32be(buf, 1024);
  dm__frame_reader fr;
  sink s = {0};
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, 4 + 1000, collect, &s), 0);
  assert_int_equal(s.count, 0);
  assert_int_equal(dm__frame_feed(&fr, buf + 1004, 24, collect, &s), 0);
  assert_int_equal(s.count, 1);
  assert_int_equal(s.last_len, 1024);
  dm__frame_free(&fr);
}

static void announced_length_costs_only_received_bytes(void **state) {
  (void)state;
  char buf[8] = {0};
  dm__put32be(buf, 60u << 20);
  dm__frame_reader fr;
  sink s = {0};
  dm__frame_init(&fr, 64u << 20);
  assert_int_equal(dm__frame_feed(&fr, buf, 8, collect, &s), 0);
  assert_true(fr.body.cap < 4096);
  dm__frame_free(&fr);
}

static void callback_error_stops_the_feed(void **state) {
  (void)state;
  char buf[64];
  size_t n = 0;
  n += frame(buf + n, "pA", 2);
  n += frame(buf + n, "pB", 2);
  n += frame(buf + n, "pC", 2);
  dm__frame_reader fr;
  sink s = {.stop_after = 2};
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_feed(&fr, buf, n, collect, &s), -1);
  assert_int_equal(s.count, 2);
  dm__frame_free(&fr);
}

static void pending_counts_what_the_split_packet_still_needs(void **state) {
  (void)state;
  char buf[64];
  size_t n = frame(buf, "0123456789", 10);
  dm__frame_reader fr;
  sink s = {0};
  dm__frame_init(&fr, 1024);
  assert_int_equal(dm__frame_pending(&fr), 0);
  assert_int_equal(dm__frame_feed(&fr, buf, 2, collect, &s), 0);
  assert_int_equal(dm__frame_pending(&fr), 2); /* half a length prefix */
  assert_int_equal(dm__frame_feed(&fr, buf + 2, 5, collect, &s), 0);
  assert_int_equal(dm__frame_pending(&fr), 7); /* 3 of 10 body bytes */
  assert_int_equal(dm__frame_feed(&fr, buf + 7, n - 7, collect, &s), 0);
  assert_int_equal(dm__frame_pending(&fr), 0);
  assert_int_equal(s.count, 1);
  dm__frame_free(&fr);
}

static void a_lone_message_never_raises_the_mark(void **state) {
  (void)state;
  assert_int_equal(dm__lowat_want(100, 1, 0, 16384), 1);
  assert_int_equal(dm__lowat_want(100, 0, 40, 16384), 1);
  assert_int_equal(dm__lowat_want(0, 0, 0, 16384), 1);
}

static void a_batch_asks_for_one_message_less_next_time(void **state) {
  (void)state;
  assert_int_equal(dm__lowat_want(400, 4, 0, 16384), 300);
  assert_int_equal(dm__lowat_want(200, 2, 0, 16384), 100);
  /* Capped by the option; 0 and 1 turn coalescing off. */
  assert_int_equal(dm__lowat_want(1 << 20, 1000, 0, 16384), 16384);
  assert_int_equal(dm__lowat_want(400, 4, 0, 0), 1);
  assert_int_equal(dm__lowat_want(400, 4, 0, 1), 1);
}

static void a_split_packet_is_never_held_past_its_end(void **state) {
  (void)state;
  /* Two whole messages and the start of a third that needs 30 more bytes:
   * waiting for more than 30 could hold it until the quiet timer. */
  assert_int_equal(dm__lowat_want(400, 2, 30, 16384), 30);
  assert_int_equal(dm__lowat_want(400, 2, 500, 16384), 200);
}

static void the_mark_drops_at_once_and_rises_by_a_quarter(void **state) {
  (void)state;
  assert_int_equal(dm__lowat_next(1, 2), 2);
  assert_int_equal(dm__lowat_next(300, 1), 1);
  assert_int_equal(dm__lowat_next(300, 299), 299);
  assert_int_equal(dm__lowat_next(300, 300), 300);
  assert_int_equal(dm__lowat_next(300, 370), 300);
  assert_int_equal(dm__lowat_next(300, 375), 375);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(whole_packet_in_one_read),
      cmocka_unit_test(packet_split_at_every_byte),
      cmocka_unit_test(byte_by_byte_stream),
      cmocka_unit_test(several_packets_and_ticks_in_one_read),
      cmocka_unit_test(oversized_length_is_refused),
      cmocka_unit_test(length_at_the_limit_is_accepted),
      cmocka_unit_test(announced_length_costs_only_received_bytes),
      cmocka_unit_test(callback_error_stops_the_feed),
      cmocka_unit_test(pending_counts_what_the_split_packet_still_needs),
      cmocka_unit_test(a_lone_message_never_raises_the_mark),
      cmocka_unit_test(a_batch_asks_for_one_message_less_next_time),
      cmocka_unit_test(a_split_packet_is_never_held_past_its_end),
      cmocka_unit_test(the_mark_drops_at_once_and_rises_by_a_quarter),
  };
  return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
