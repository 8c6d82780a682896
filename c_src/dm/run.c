/* A worker's callback on its way: the job it becomes, the busy state and
 * the timer that watches for slowness while it runs. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

static dm__wheel *wheel_of(const dm__worker *w) { return &dm__worker_mgr(w)->sched->wheel; }

uint64_t dm__worker_now_us(const dm__worker *w) {
  /* The loop's cached time: no clock read per perform. Dues that chain at
   * a fixed rate never read it, so its coarseness does not skew them. */
  return uv_now(dm__worker_mgr(w)->node->loop) * 1000;
}

/* The wheel grows an array to take the timer; when even that fails the
 * worker says so instead of silently never running again, and its due is
 * kept all the same: it is read while not armed too (see dm__worker). */
void dm__worker_arm(dm__worker *w, uint64_t due_us) {
  if (dm__wheel_add(wheel_of(w), &w->timer, due_us) != 0) {
    w->timer.due = due_us;
    DM_ERROR("manager %s: out of memory arming a worker's timer", dm__worker_mgr(w)->name);
  }
}

void dm__worker_disarm(dm__worker *w) { dm__wheel_del(wheel_of(w), &w->timer); }

void dm__worker_park(dm__worker *w, uint64_t due_us) {
  dm__worker_disarm(w);
  w->timer.due = due_us;
}

/* How long after its callback began a busy worker is slow (lull x
 * timeout), in µs; 0 without a period. */
static uint64_t lull_us(const dm__worker *w) {
  return w->timeout_ms ? (uint64_t)((double)w->timeout_ms * w->opts->lull * 1000.0) : 0;
}

uint64_t dm__worker_busy_since(const dm__worker *w) {
  return (w->timer.due - lull_us(w)) / 1000;
}

int dm__worker_run(dm__worker *w, int kind, const char *msg, size_t len,
                   dm__replyto *reply, int wrap) {
  dm__wjob *j = dm__job_new(dm__worker_mgr(w), w, kind, dm__worker_mgr(w)->worker_done);
  if (!j)
    return DM_ENOMEM;
  if (msg) {
    j->owned = dm__malloc(len ? len : 1);
    if (!j->owned) {
      dm__job_free(j);
      return DM_ENOMEM;
    }
    memcpy(j->owned, msg, len);
    j->msg.data = j->owned;
    j->msg.len = len;
  }
  j->reply = reply;
  j->wrap = wrap;
  /* Known by its worker, so that a stop while it runs exits the caller at
   * once; when the table cannot take it, the caller hears at the end. */
  if (kind == DM__JOB_CALL && reply)
    (void)dm__pidtab_put(&dm__worker_mgr(w)->sched->calls, w->proc.key, j);
  /* The next perform's due goes with the job, and comes back with it. */
  j->due = w->timer.due;
  w->proc.flags |= DM__W_BUSY;
  w->proc.flags &= (uint16_t)~DM__W_LULL_FIRED;
  if (kind == DM__JOB_PERFORM)
    w->proc.flags &= (uint16_t)~DM__W_PERFORM_DUE;
  /* While busy the timer watches for slowness (lull x timeout); its due
   * says since when it is busy even where it is not armed. */
  uint64_t slow = dm__worker_now_us(w) + lull_us(w);
  if (w->timeout_ms && (kind == DM__JOB_PERFORM || kind == DM__JOB_CALL ||
                        kind == DM__JOB_CAST))
    dm__worker_arm(w, slow);
  else
    dm__worker_park(w, slow);
  dm__job_submit(j);
  return 0;
}
