// SPDX-License-Identifier: Apache-2.0
#include "meshcut/tc.h"

#include <bpf/libbpf.h>
#include <net/if.h>

#include <cerrno>
#include <string>

#include "meshcut/abi.h"

namespace meshcut::tc {
namespace {
std::string dev(int ifindex) {
  char name[IF_NAMESIZE] = {};
  return if_indextoname(ifindex, name) ? std::string(name) : "ifindex " + std::to_string(ifindex);
}
}  // namespace

Result<Attached> attach_ingress(int ifindex, int prog_fd) {
  Attached a;
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  if (err == 0)
    a.created_qdisc = true;
  else if (err != -EEXIST)
    return make_error("couldn't add a clsact qdisc on " + dev(ifindex), -err,
                      "is the device there? (ip link show); needs CAP_NET_ADMIN");
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = MC_TC_HANDLE,
                      .priority = MC_TC_PRIO);
  err = bpf_tc_attach(&hook, &opts);
  if (err) return make_error("couldn't attach meshcut's tc filter on " + dev(ifindex) + " ingress", -err);
  return a;
}

Status detach_ingress(int ifindex) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = MC_TC_HANDLE, .priority = MC_TC_PRIO);
  int err = bpf_tc_detach(&hook, &opts);
  if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
    return make_error("couldn't remove meshcut's tc filter from " + dev(ifindex), -err);
  return ok_status();
}

bool attached(int ifindex, unsigned* prog_id) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = MC_TC_HANDLE, .priority = MC_TC_PRIO);
  if (bpf_tc_query(&hook, &opts) != 0) return false;
  if (prog_id) *prog_id = opts.prog_id;
  return true;
}

}  // namespace meshcut::tc
