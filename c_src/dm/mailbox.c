/* A worker's mailbox: calls, casts and {payload, P} messages that arrived
 * while it was busy, in order. In the worker's annex, so a worker
 * without mail carries no byte for it. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

int dm__mailbox_push(dm__mailbox **mb, int kind, const char *msg, size_t len,
                     dm__replyto *reply, int wrap) {
  dm__mail *mail = dm__malloc(sizeof *mail + len);
  if (!mail)
    return DM_ENOMEM;
  if (!*mb && !(*mb = dm__calloc(1, sizeof **mb))) {
    dm__free(mail);
    return DM_ENOMEM;
  }
  mail->next = NULL;
  mail->kind = kind;
  mail->wrap = wrap;
  mail->reply = reply;
  mail->len = len;
  memcpy(mail->msg, msg, len);
  if ((*mb)->tail)
    (*mb)->tail->next = mail;
  else
    (*mb)->head = mail;
  (*mb)->tail = mail;
  (*mb)->count++;
  return 0;
}

dm__mail *dm__mailbox_pop(dm__mailbox **mb) {
  dm__mail *mail = *mb ? (*mb)->head : NULL;
  if (!mail)
    return NULL;
  (*mb)->head = mail->next;
  if (!(*mb)->head)
    (*mb)->tail = NULL;
  if (!--(*mb)->count) {
    dm__free(*mb);
    *mb = NULL;
  }
  return mail;
}

void dm__mailbox_free(dm__mailbox *mb, dm__node *n, const char *reason,
                      size_t len) {
  if (!mb)
    return;
  for (dm__mail *m = mb->head, *next; m; m = next) {
    next = m->next;
    if (n && m->reply)
      dm__reply_exit(n, m->reply, reason, len);
    dm__free(m->reply);
    dm__free(m);
  }
  dm__free(mb);
}
