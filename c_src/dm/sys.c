/* OTP system messages to managers and workers, as sys.erl sends them:
 * get_state answers the manager's State map (the `state` request's) or
 * the worker's Child map, get_status the same inside the status tuple
 * gen_server gives, and every other one (suspend, replace_state,
 * change_code, debug...) is refused with {error, {not_supported, What}}.
 * All at once, from the loop: a worker that is busy answers all the
 * same, and nothing here can be made to wait. Loop thread only. */
#include <stdio.h>

#include "dm/mgr.h"

/* A manager's parent is the node's own service, the root of its processes. */
static void parent_of_manager(dm__manager *m, erlang_pid *out) {
  dm__proc *svc = dm__nametab_get(&m->node->names, "tarearbol_cnode");
  dm__proc_pid(m->node, svc ? svc : &m->proc, out);
}

static int enc_manager_status(dm__manager *m, ei_x_buff *x) {
  erlang_pid self, parent;
  char header[320];
  dm__proc_pid(m->node, &m->proc, &self);
  parent_of_manager(m, &parent);
  snprintf(header, sizeof header, "Status for tarearbol_cnode manager %s",
           m->name);
  if (dm__enc_sys_status_begin(x, &self, &parent, header, 1) ||
      dm__enc_sys_item(x, "State") || dm__enc_state(m, x))
    return DM_ENOMEM;
  return dm__enc_sys_status_end(x);
}

static int enc_worker_status(dm__worker *w, ei_x_buff *x) {
  dm__manager *m = dm__worker_mgr(w);
  erlang_pid self, parent;
  char header[320];
  dm__proc_pid(m->node, &w->proc, &self);
  dm__proc_pid(m->node, &m->proc, &parent);
  snprintf(header, sizeof header,
           "Status for a worker of tarearbol_cnode manager %s", m->name);
  if (dm__enc_sys_status_begin(x, &self, &parent, header, 2) ||
      dm__enc_sys_item(x, "Id") ||
      ei_x_append_buf(x, dm__worker_id(w), (int)dm__worker_id_len(w)) < 0 ||
      dm__enc_sys_item(x, "State") || dm__enc_child(m->node, x, w))
    return DM_ENOMEM;
  return dm__enc_sys_status_end(x);
}

void dm__sys_manager(dm__manager *m, const dm__gen *g) {
  int what = dm__sys_request(g->req, g->req_len);
  if (what == DM__SYS_OTHER) {
    m->st.bad_requests++;
    dm__sys_refuse(m->node, g);
    return;
  }
  ei_x_buff *x = dm__reply_begin(m->node, g);
  int r = !x                          ? DM_ENOMEM
          : what == DM__SYS_GET_STATE ? dm__enc_state(m, x)
                                      : enc_manager_status(m, x);
  dm__reply_end(m->node, g, r);
}

void dm__sys_worker(dm__worker *w, const dm__gen *g) {
  dm__node *n = dm__worker_mgr(w)->node;
  int what = dm__sys_request(g->req, g->req_len);
  if (what == DM__SYS_OTHER) {
    dm__worker_mgr(w)->st.bad_requests++;
    dm__sys_refuse(n, g);
    return;
  }
  ei_x_buff *x = dm__reply_begin(n, g);
  int r = !x                          ? DM_ENOMEM
          : what == DM__SYS_GET_STATE ? dm__enc_child(n, x, w)
                                      : enc_worker_status(w, x);
  dm__reply_end(n, g, r);
}
