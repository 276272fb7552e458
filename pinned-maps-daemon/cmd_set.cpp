// SPDX-License-Identifier: Apache-2.0
// `meshcutd set`: change a switch at once, the node's or one pod's.
#include <cstdio>
#include <optional>
#include <string>

#include "cli.h"
#include "commands.h"
#include "meshcut/abi.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/sys.h"

namespace meshcut::daemon {

int cmd_set(const std::string& pin_root, const SetArgs& a) {
  auto locked = lock_maps(pin_root);
  if (!locked) return fail(locked.error());
  const PinnedMaps& maps = locked->maps;
  if (!a.netns.empty()) {
    // One pod's switches; they apply to new connections (decisions are per connection).
    auto cookie = sys::netns_cookie(a.netns);
    if (!cookie) return fail(cookie.error());
    auto pods = maps.pods();
    if (!pods) return fail(pods.error());
    std::optional<mc_pod> pod;
    for (const auto& [c, p] : *pods)
      if (c == *cookie) pod = p;
    if (!pod)
      return fail(make_error("netns " + a.netns + " is not an enrolled pod", ENOENT, "meshcutd pods lists them"));
    auto apply = [&](const std::string& v, uint32_t bit) {
      if (!v.empty()) pod->flags = v == "on" ? (pod->flags | bit) : (pod->flags & ~bit);
    };
    apply(a.intra_pod, MC_POD_F_INTRA);
    apply(a.same_node, MC_POD_F_NODE);
    apply(a.cross_node, MC_POD_F_CROSS);
    if (auto st = maps.put_pod(*cookie, *pod); !st) return fail(st.error());
    std::printf("pod %s: intra-pod %s, same-node %s, cross-node %s\n", a.netns.c_str(),
                pod->flags & MC_POD_F_INTRA ? "on" : "off", pod->flags & MC_POD_F_NODE ? "on" : "off",
                pod->flags & MC_POD_F_CROSS ? "on" : "off");
    return 0;
  }
  if (a.cross_node.empty())
    return fail(make_error("set needs --cross-node (the node), or --netns with pod switches", EINVAL));
  auto c = maps.config();
  if (!c) return fail(c.error());
  if (a.cross_node == "on" && !c->pod_cidr)
    return fail(make_error("the tc shortcut needs the pod CIDR", EINVAL, "restart meshcutd with --pod-cidr"));
  c->flags = a.cross_node == "on" ? (c->flags | MC_CFG_F_CROSS_NODE) : (c->flags & ~MC_CFG_F_CROSS_NODE);
  if (auto st = maps.set_config(*c); !st) return fail(st.error());
  if (a.cross_node == "off") {
    // Forget every flow: switched on again, only flows that start then take
    // the shortcut, so no flow flips from the normal path to the shortcut
    // mid-stream (which could reorder it).
    if (auto st = maps.clear_flows(); !st) return fail(st.error());
  }
  std::printf("cross-node shortcut %s\n", a.cross_node.c_str());
  return 0;
}

}  // namespace meshcut::daemon
