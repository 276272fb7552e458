// SPDX-License-Identifier: Apache-2.0
#include "meshcut/pods.h"

#include <net/if.h>

#include <cstring>

#include "meshcut/log.h"
#include "meshcut/pins.h"
#include "meshcut/sys.h"
#include "meshcut/tc.h"

namespace meshcut::pods {

std::string container_id(const mc_cni_key& k) {
  return std::string(k.container_id, strnlen(k.container_id, sizeof(k.container_id)));
}
std::string ifname(const mc_cni_key& k) { return std::string(k.ifname, strnlen(k.ifname, sizeof(k.ifname))); }

void detach_tc_if_same(const mc_cni_pod& rec) {
  if (!(rec.cni_flags & MC_CNI_F_TC_ATTACHED) || !rec.pod.host_ifindex) return;
  char name[IF_NAMESIZE] = {};
  if (!if_indextoname(rec.pod.host_ifindex, name)) return;
  if (std::strncmp(name, rec.host_ifname, sizeof(rec.host_ifname)) != 0) return;
  if (auto st = tc::detach_ingress(static_cast<int>(rec.pod.host_ifindex)); !st)
    log::warn("couldn't remove a pod's tc filter", {{"error", st.error().format()}});
}

void remove(const PinnedMaps& maps, const mc_cni_key& key, const mc_cni_pod& rec) {
  detach_tc_if_same(rec);
  if (auto r = maps.del_pod(rec.netns_cookie); !r) log::warn(r.error().format());
  if (auto st = maps.del_cni(key); !st) log::warn(st.error().format());
}

int reattach_tc(const PinnedMaps& maps, int prog_fd) {
  auto recs = maps.cni_pods();
  if (!recs) return 0;
  int n = 0;
  for (const auto& [k, r] : *recs) {
    if (!(r.cni_flags & MC_CNI_F_TC_ATTACHED) || !r.pod.host_ifindex) continue;
    char name[IF_NAMESIZE] = {};
    if (!if_indextoname(r.pod.host_ifindex, name) || std::strncmp(name, r.host_ifname, sizeof(r.host_ifname)) != 0)
      continue;  // the veth is gone (GC's business)
    if (tc::attached(static_cast<int>(r.pod.host_ifindex))) continue;
    if (auto att = tc::attach_ingress(static_cast<int>(r.pod.host_ifindex), prog_fd); !att) {
      log::warn("couldn't re-attach a pod's tc filter", {{"veth", name}, {"error", att.error().format()}});
      continue;
    }
    log::warn("a pod's tc filter was gone (another agent?): attached again",
              {{"veth", name}, {"containerID", container_id(k)}});
    ++n;
  }
  return n;
}

int gc_stale(const PinnedMaps& maps) {
  auto recs = maps.cni_pods();
  if (!recs) {
    log::warn("GC: " + recs.error().format());
    return 0;
  }
  int n = 0;
  for (const auto& [k, r] : *recs) {
    std::string path(r.netns_path, strnlen(r.netns_path, sizeof(r.netns_path)));
    if (path.empty()) continue;
    // Netns cookies are never reused: a path that now names another netns is
    // as gone as a missing one.
    auto cookie = exists(path) ? sys::netns_cookie(path) : Result<uint64_t>(make_error("gone", ENOENT));
    if (cookie && *cookie == r.netns_cookie) continue;
    log::info("GC: removing the record of a pod whose netns is gone (missed DEL)",
              {{"containerID", container_id(k)}, {"netns", path}, {"netns_cookie", r.netns_cookie}});
    remove(maps, k, r);
    ++n;
  }
  return n;
}

}  // namespace meshcut::pods
