/* The LOCK file of a store's directory: an exclusive flock that keeps a
 * second node off a store another one is running on, and the holder's pid
 * written into it so the refusal can name that node. */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "dm.h"

/* The pid recorded in the file, or 0 when it holds none. */
static long holder(int fd) {
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  char *end;
  long pid = strtol(buf, &end, 10);
  return pid > 0 && (*end == '\n' || *end == '\0') ? pid : 0;
}

int dm__store_lock_take(const char *path, int *fd, char *err, size_t errlen) {
  char file[PATH_MAX];
  if ((size_t)snprintf(file, sizeof file, "%s/LOCK", path) >= sizeof file) {
    snprintf(err, errlen, "state dir %s: path too long", path);
    return DM_EINVAL;
  }
  int f = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (f < 0) {
    snprintf(err, errlen, "state dir %s: cannot open %s: %s", path, file,
             strerror(errno));
    return DM_EIO;
  }
  /* flock, not fcntl: it belongs to this open file description, so a
   * second open in the same process is refused too, and LMDB's own fcntl
   * locks on lock.mdb are not disturbed. */
  if (flock(f, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    if (e == EWOULDBLOCK) {
      long pid = holder(f);
      if (pid)
        snprintf(err, errlen,
                 "state dir %s is held by another running node (pid %ld)", path,
                 pid);
      else
        snprintf(err, errlen, "state dir %s is held by another running node",
                 path);
    } else {
      snprintf(err, errlen, "state dir %s: cannot lock %s: %s", path, file,
               strerror(e));
    }
    close(f);
    return e == EWOULDBLOCK ? DM_EEXISTS : DM_EIO;
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  /* The pid is for the message above only: failing to write it does not
   * weaken the lock, so it is not an error. */
  if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n)
    DM_WARN("state dir %s: cannot record the pid in LOCK: %s", path,
            strerror(errno));
  *fd = f;
  return 0;
}

void dm__store_lock_release(int fd) {
  if (fd >= 0)
    close(fd);
}
