// SPDX-License-Identifier: Apache-2.0
// `meshcutd enroll` and `unenroll`: a pod record by hand (debugging).
#include <arpa/inet.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "meshcut/abi.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/sys.h"
#include "obj_maps.h"

namespace meshcut::daemon {

namespace {

Result<uint32_t> parse_ipv4(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1)
    return make_error("invalid IPv4 address '" + s + "'", EINVAL, "pass --pod-ip like 10.244.1.5");
  return a.s_addr;
}

}  // namespace

int cmd_enroll(const std::string& pin_root, const std::string& netns, const std::vector<std::string>& ips, bool intra,
               bool node, const EnrollObj& obj) {
  auto cookie = sys::netns_cookie(netns);
  if (!cookie) return fail(cookie.error());
  mc_pod pod{};
  std::vector<uint32_t> addrs;
  if (ips.empty()) {
    auto found = sys::netns_ipv4(netns);
    if (!found) return fail(found.error());
    addrs = *found;
  }
  for (const auto& s : ips) {
    auto ip = parse_ipv4(s);
    if (!ip) return fail(ip.error());
    addrs.push_back(*ip);
  }
  if (addrs.size() > MC_POD_MAX_IPS)
    return fail(make_error("a pod has at most " + std::to_string(MC_POD_MAX_IPS) + " IPv4 addresses", E2BIG));
  for (size_t i = 0; i < addrs.size(); ++i) pod.ip4[i] = addrs[i];
  pod.flags = (intra ? MC_POD_F_INTRA : 0) | (node ? MC_POD_F_NODE : 0);
  auto locked = lock_maps(pin_root);
  if (!locked) return fail(locked.error());
  const PinnedMaps& maps = locked->maps;
  if (auto st = maps.put_pod(*cookie, pod); !st) return fail(st.error());
  mc_obj_pod op{};
  op.cls = obj.class_id;
  op.flags = obj.sidecar.value_or(intra) ? MC_OBJ_POD_F_SIDECAR : 0;
  if (auto st = obj::ObjMaps(maps).put_pod(*cookie, op); !st) return fail(st.error());
  std::printf("enrolled netns %s (cookie %llu) with %zu IPv4 address(es)\n", netns.c_str(),
              static_cast<unsigned long long>(*cookie), addrs.size());
  return 0;
}

int cmd_unenroll(const std::string& pin_root, const std::optional<std::string>& netns,
                 std::optional<uint64_t> cookie_opt) {
  if (!netns && !cookie_opt) return fail(make_error("unenroll needs --netns or --cookie", EINVAL));
  uint64_t cookie = cookie_opt.value_or(0);
  if (netns && !netns->empty()) {
    auto c = sys::netns_cookie(*netns);
    if (!c) return fail(c.error());
    cookie = *c;
  }
  auto locked = lock_maps(pin_root);
  if (!locked) return fail(locked.error());
  const PinnedMaps& maps = locked->maps;
  auto r = maps.del_pod(cookie);
  if (!r) return fail(r.error());
  if (auto st = obj::ObjMaps(maps).del_pod(cookie); !st) return fail(st.error());
  std::printf("%s netns cookie %llu\n", *r ? "unenrolled" : "not enrolled:", static_cast<unsigned long long>(cookie));
  return 0;
}

}  // namespace meshcut::daemon
