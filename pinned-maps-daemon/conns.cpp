// SPDX-License-Identifier: Apache-2.0
// `meshcutd conns`: the live sockets in the sockhash, grouped into accelerated
// pairs, and `--explain SRC DST`: why a connection is (not) accelerated.
#include "conns.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>
#include <vector>

#include "meshcut/abi.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/sys.h"

using namespace meshcut;

namespace {

struct Entry {
  mc_sock_key key;
  uint64_t cookie;  // the socket's cookie (what a sockhash lookup returns to user space)
};

std::vector<Entry> entries(int fd) {
  std::vector<Entry> out;
  mc_sock_key k{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    uint64_t cookie = 0;
    if (bpf_map_lookup_elem(fd, &next, &cookie) == 0) out.push_back({next, cookie});
    k = next;
    prev = &k;
  }
  return out;
}

// A pair: the same key but for the side.
using PairId = std::tuple<uint64_t, uint32_t, uint16_t, uint32_t, uint32_t>;
PairId pair_id(const mc_sock_key& k) { return {k.scope, k.init_ip, k.init_port, k.isn_init, k.isn_resp}; }

Result<std::pair<uint32_t, uint16_t>> endpoint(const std::string& s) {
  auto c = s.rfind(':');
  in_addr a{};
  int port = c == std::string::npos ? -1 : std::atoi(s.c_str() + c + 1);
  if (c == std::string::npos || inet_pton(AF_INET, s.substr(0, c).c_str(), &a) != 1 || port <= 0 || port > 65535)
    return make_error("invalid endpoint '" + s + "'", EINVAL, "use IP:PORT, e.g. 10.244.1.5:41234");
  return std::pair<uint32_t, uint16_t>{a.s_addr, static_cast<uint16_t>(port)};
}

}  // namespace

int cmd_conns(const std::string& pin_root, bool json, const std::string& src, const std::string& dst) {
  auto maps = PinnedMaps::open(PinLayout(pin_root));
  if (!maps) {
    std::fprintf(stderr, "meshcutd: %s\n", maps.error().format().c_str());
    return 3;
  }
  auto all = entries(maps->fd(MC_MAP_SOCKHASH));
  std::map<PairId, std::vector<Entry>> pairs;
  for (const auto& e : all) pairs[pair_id(e.key)].push_back(e);

  if (!src.empty()) {
    auto s = endpoint(src), d = endpoint(dst);
    if (!s || !d) {
      std::fprintf(stderr, "meshcutd: %s\n", (!s ? s.error() : d.error()).format().c_str());
      return 1;
    }
    // SRC is the connection's initiator (the connect()ing side), as it sees itself.
    std::vector<std::string> why;
    auto pods = maps->pods();
    auto owner = [&](uint32_t ip) -> const mc_pod* {
      if (pods)
        for (const auto& [c, p] : *pods)
          for (uint32_t a : p.ip4)
            if (a == ip) return &p;
      return nullptr;
    };
    bool loop_src = (ntohl(s->first) >> 24) == 127;
    const mc_pod* sp = owner(s->first);
    const mc_pod* dp = owner(d->first);
    std::vector<Entry> found;
    for (const auto& e : all)
      if (e.key.init_ip == s->first && e.key.init_port == s->second) found.push_back(e);
    bool active = false, passive = false;
    for (const auto& e : found) (e.key.side == MC_SIDE_ACTIVE ? active : passive) = true;
    nlohmann::json j = {{"src", src}, {"dst", dst}, {"src_pod", sp != nullptr}, {"dst_pod", dp != nullptr},
                        {"initiator_in_map", active}, {"responder_in_map", passive}};
    if (active && passive) {
      why.push_back("accelerated: both sockets are in the sockhash under the same key; each direction took the "
                    "shortcut unless its first bytes left before the peer was established (counter msg_pass_no_peer)");
    } else {
      if (!sp && !loop_src)
        why.push_back(src + " is not the IP of an enrolled pod: host processes and unmeshed pods are left alone");
      if (!active)
        why.push_back("no socket of " + src + " is in the sockhash: it is closed, it was established before "
                      "meshcut was attached, it used TCP Fast Open, its pod is not enrolled or has the shortcut "
                      "off, or the map was full (counters sock_*)");
      if (active && !passive)
        why.push_back("the initiator is in the map but its peer is not: the peer is on another node, in a pod that "
                      "is not enrolled, or was still being accepted when the first bytes left (those go the normal "
                      "path for good)");
      if (!dp && (ntohl(d->first) >> 24) != 127)
        why.push_back(dst + " is not an enrolled pod on this node: behind a ClusterIP or on another node the "
                      "socket shortcut can only pair through the pod's own sidecar (Istio REDIRECT)");
    }
    j["accelerated"] = active && passive;
    j["why"] = why;
    if (json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s -> %s: %s\n", src.c_str(), dst.c_str(), active && passive ? "ACCELERATED" : "not accelerated");
      for (const auto& w : why) std::printf("  - %s\n", w.c_str());
    }
    return 0;
  }

  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [id, v] : pairs) {
    const mc_sock_key& k = v.front().key;
    nlohmann::json p = {{"initiator", sys::ipv4_str(k.init_ip) + ":" + std::to_string(k.init_port)},
                        {"netns_cookie", k.scope},
                        {"paired", v.size() == 2}};
    for (const auto& e : v)
      p[e.key.side == MC_SIDE_ACTIVE ? "active_socket_cookie" : "passive_socket_cookie"] = e.cookie;
    arr.push_back(p);
  }
  if (json) {
    std::printf("%s\n", arr.dump(2).c_str());
    return 0;
  }
  std::printf("%-24s %-8s %-12s %-20s %-20s\n", "INITIATOR", "PAIRED", "SCOPE", "ACTIVE SOCKET", "PASSIVE SOCKET");
  for (const auto& p : arr)
    std::printf("%-24s %-8s %-12llu %-20llu %-20llu\n", p["initiator"].get<std::string>().c_str(),
                p["paired"].get<bool>() ? "yes" : "no", p["netns_cookie"].get<unsigned long long>(),
                p.value("active_socket_cookie", 0ull), p.value("passive_socket_cookie", 0ull));
  size_t paired = 0;
  for (const auto& p : arr) paired += p["paired"].get<bool>() ? 1 : 0;
  std::printf("%zu sockets, %zu paired connections\n", all.size(), paired);
  return 0;
}
