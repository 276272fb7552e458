// SPDX-License-Identifier: Apache-2.0
// meshcut's own tc filter on a device (clsact ingress), through libbpf's
// netlink tc API. Never replaces or flushes another agent's filter or qdisc.
#pragma once

#include "meshcut/error.h"

namespace meshcut::tc {

struct Attached {
  bool created_qdisc = false;  // we added clsact (nobody had one)
};

// Attaches PROG_FD as our filter (MC_TC_HANDLE/MC_TC_PRIO) on IFINDEX ingress;
// replaces only our own filter.
Result<Attached> attach_ingress(int ifindex, int prog_fd);
// Removes our filter; an absent device or filter is not an error. The clsact
// qdisc stays: another agent may have added filters to it since (a pod's host
// veth disappears with the pod anyway).
Status detach_ingress(int ifindex);
// Our filter is on IFINDEX ingress (and its program id).
bool attached(int ifindex, unsigned* prog_id = nullptr);

}  // namespace meshcut::tc
