/* The lateness histogram: how long after its due time each perform
 * started. 100 µs linear buckets below 10 ms, then powers of two. */
#include "dm/mgr.h"

static size_t bucket_of(uint64_t us) {
  if (us < 10000)
    return (size_t)(us / 100);
  size_t b = 100;
  for (uint64_t v = us / 10000; v > 1 && b < 100 + 27; v >>= 1)
    b++;
  return b;
}

uint64_t dm__lateness_bucket_top(size_t b) {
  if (b < 100)
    return (uint64_t)(b + 1) * 100;
  return 10000ull << (b - 100 + 1);
}

void dm__lateness_note(dm__mstats *s, uint64_t late_us) {
  size_t b = bucket_of(late_us);
  s->late[b < DM__LATE_BUCKETS ? b : DM__LATE_BUCKETS - 1]++;
  s->late_count++;
  if (late_us > s->late_max_us)
    s->late_max_us = late_us;
}

uint64_t dm__lateness_percentile(const dm__mstats *s, double p) {
  uint64_t want = (uint64_t)((double)s->late_count * p + 0.5), seen = 0;
  if (!s->late_count)
    return 0;
  if (want == 0)
    want = 1;
  for (size_t b = 0; b < DM__LATE_BUCKETS; b++) {
    seen += s->late[b];
    if (seen >= want) {
      uint64_t top = dm__lateness_bucket_top(b);
      return top < s->late_max_us ? top : s->late_max_us;
    }
  }
  return s->late_max_us;
}
