// SPDX-License-Identifier: Apache-2.0
// `meshcutd conns`: the live sockets in the sockhash, grouped into accelerated
// pairs, and `--explain SRC DST`: why a connection is (not) accelerated.
#include "conns.h"

#include "commands.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <map>
#include <unordered_map>
#include <nlohmann/json.hpp>
#include <vector>

#include "mc_conns_iter.skel.h"
#include "meshcut/abi.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/skel.h"
#include "meshcut/sys.h"
#include "probe.h"

MESHCUT_SKEL(mc_conns_iter);

namespace meshcut::daemon {

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

bool same_key(const mc_sock_key& a, const mc_sock_key& b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

// A socket's own key: its peer's key with its own side.
mc_sock_key own_key(const mc_sock_state& st) {
  mc_sock_key k = st.peer;
  k.side = st.side;
  return k;
}

std::string tuple(uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport) {
  return sys::ipv4_str(lip) + ":" + std::to_string(lport) + " -> " + sys::ipv4_str(rip) + ":" + std::to_string(rport);
}

const char* decision_name(uint8_t d) {
  return d == MC_DECISION_REDIRECT ? "redirect" : d == MC_DECISION_PASS ? "normal" : "undecided";
}

Result<std::pair<uint32_t, uint16_t>> endpoint(const std::string& s) {
  auto c = s.rfind(':');
  in_addr a{};
  int port = c == std::string::npos ? -1 : std::atoi(s.c_str() + c + 1);
  if (c == std::string::npos || inet_pton(AF_INET, s.substr(0, c).c_str(), &a) != 1 || port <= 0 || port > 65535)
    return make_error("invalid endpoint '" + s + "'", EINVAL, "use IP:PORT, e.g. 10.244.1.5:41234");
  return std::pair<uint32_t, uint16_t>{a.s_addr, static_cast<uint16_t>(port)};
}

}  // namespace

namespace {

Result<std::vector<mc_sock_state>> iterate(const PinLayout& layout) {
  auto skel = open_skel<mc_conns_iter>();
  if (!skel) return make_error("couldn't open the conns iterator", errno);
  auto map = open_pinned(layout.map(MC_MAP_SK_STATE));
  if (!map) return map.error();
  if (int err = bpf_map__reuse_fd(skel->maps.mc_sk_state, map->get()))
    return make_error("couldn't use the pinned " MC_MAP_SK_STATE, -err);
  if (int err = load_skel(skel))
    return make_error("couldn't load the conns iterator (a BPF tracing program)", -err, tracing_refused_hint(-err));
  union bpf_iter_link_info li = {};
  li.map.map_fd = static_cast<__u32>(map->get());
  DECLARE_LIBBPF_OPTS(bpf_iter_attach_opts, o, .link_info = &li, .link_info_len = sizeof(li));
  bpf_link* link = bpf_program__attach_iter(skel->progs.mc_conns_iter, &o);
  if (!link) return make_error("couldn't attach the conns iterator", errno, tracing_refused_hint(errno));
  std::unique_ptr<bpf_link, int (*)(bpf_link*)> own(link, bpf_link__destroy);
  Fd it(bpf_iter_create(bpf_link__fd(link)));
  if (!it.valid()) return make_error("couldn't start the conns iterator", errno);
  std::vector<mc_sock_state> out;
  std::string buf;
  char chunk[8192];
  ssize_t n;
  while ((n = ::read(it.get(), chunk, sizeof(chunk))) > 0) buf.append(chunk, static_cast<size_t>(n));
  for (size_t off = 0; off + sizeof(mc_sock_state) <= buf.size(); off += sizeof(mc_sock_state)) {
    mc_sock_state st;
    std::memcpy(&st, buf.data() + off, sizeof(st));
    out.push_back(st);
  }
  return out;
}

struct KeyHash {
  size_t operator()(const mc_sock_key& k) const {
    uint64_t w[3];
    static_assert(sizeof(w) == sizeof(k));
    std::memcpy(w, &k, sizeof(k));
    uint64_t h = (w[0] * 0x9E3779B97F4A7C15ull) ^ (w[1] * 0xC2B2AE3D27D4EB4Full) ^ (w[2] * 0x165667B19E3779F9ull);
    return static_cast<size_t>(h ^ (h >> 29));
  }
};
struct KeyEq {
  bool operator()(const mc_sock_key& a, const mc_sock_key& b) const { return same_key(a, b); }
};

std::string direction_text(const mc_sock_state& st) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "{\"path\": \"%s\", \"bytes_redirected\": %llu, \"bytes_normal_path\": %llu}",
                decision_name(st.decision), static_cast<unsigned long long>(st.bytes_redirected),
                static_cast<unsigned long long>(st.bytes_passed));
  return buf;
}

// The listing: each live active socket with its peer (a socket's own key is
// its peer's key with the other side). Printed as it goes, one connection
// per line: at 100,000 connections a whole JSON document in memory costs
// seconds and hundreds of MiB.
int list_pairs(const std::vector<mc_sock_state>& live, const std::string& source, bool json) {
  std::unordered_map<mc_sock_key, const mc_sock_state*, KeyHash, KeyEq> by_own;
  by_own.reserve(live.size());
  for (const auto& st : live) by_own.emplace(own_key(st), &st);
  if (!json)
    std::printf("%-44s %-44s %-10s %12s %12s\n", "CLIENT SOCKET", "SERVER SOCKET", "KIND", "C->S BYTES", "S->C BYTES");
  else
    std::fputs("[", stdout);
  size_t paired = 0, listed = 0;
  for (const auto& st : live) {
    if (st.side != MC_SIDE_ACTIVE) continue;
    auto it = by_own.find(st.peer);
    const mc_sock_state* p = it == by_own.end() ? nullptr : it->second;
    paired += p != nullptr;
    const char* kind = st.kind == MC_KIND_NODE ? "same_node" : "intra_pod";
    std::string client = tuple(st.local_ip, st.local_port, st.remote_ip, st.remote_port);
    if (!json) {
      std::printf(
          "%-44s %-44s %-10s %12llu %12llu\n", client.c_str(),
          p ? tuple(p->local_ip, p->local_port, p->remote_ip, p->remote_port).c_str() : "(peer not on this node)", kind,
          static_cast<unsigned long long>(st.bytes_redirected),
          static_cast<unsigned long long>(p ? p->bytes_redirected : 0));
      continue;
    }
    // Written by hand (addresses, numbers and fixed words: nothing to
    // escape): nlohmann's per-object cost doubled the time at 100,000.
    std::printf(
        "%s\n  {\"client\": \"%s\", \"client_netns\": %llu, \"kind\": \"%s\", \"paired\": %s, "
        "\"source\": \"%s\", \"client_to_server\": %s",
        listed++ ? "," : "", client.c_str(), static_cast<unsigned long long>(st.netns_cookie), kind,
        p ? "true" : "false", source.c_str(), direction_text(st).c_str());
    if (p)
      std::printf(", \"server\": \"%s\", \"server_netns\": %llu, \"server_to_client\": %s",
                  tuple(p->local_ip, p->local_port, p->remote_ip, p->remote_port).c_str(),
                  static_cast<unsigned long long>(p->netns_cookie), direction_text(*p).c_str());
    std::fputs("}", stdout);
  }
  if (json) {
    std::puts(listed ? "\n]" : "]");
    return 0;
  }
  std::printf("%zu live sockets in the map, %zu paired connections (bytes: through the shortcut; read from %s)\n",
              live.size(), paired, source.c_str());
  return 0;
}

}  // namespace

Result<LiveSockets> live_sockets(const PinLayout& layout, const PinnedMaps& maps) {
  auto cfg = maps.config();
  if (!cfg) return cfg.error();
  if (cfg->flags & MC_CFG_F_CONNS_TABLE) {
    auto t = maps.conns();
    if (!t) return t.error();
    return LiveSockets{std::move(*t), kSourceTable};
  }
  if (no_tracing_env())
    return make_error("MESHCUT_NO_TRACING=1, but meshcutd does not keep the conns table", EOPNOTSUPP,
                      "start meshcutd with --no-tracing (or MESHCUT_NO_TRACING=1 in its environment), or unset "
                      "MESHCUT_NO_TRACING here to read through the BPF iterator");
  auto it = iterate(layout);
  if (!it) return it.error();
  return LiveSockets{std::move(*it), kSourceIterator};
}

int cmd_conns(const std::string& pin_root, bool json, const std::string& src, const std::string& dst) {
  auto maps = PinnedMaps::open(PinLayout(pin_root));
  if (!maps) {
    std::fprintf(stderr, "meshcutd: %s\n", maps.error().format().c_str());
    return 3;
  }
  auto live_r = live_sockets(PinLayout(pin_root), *maps);
  if (!live_r) {
    std::fprintf(stderr, "meshcutd: couldn't list the live sockets: %s\n", live_r.error().format().c_str());
    return 1;
  }
  const auto* live = &live_r->sockets;
  const std::string& source = live_r->source;

  if (!src.empty()) {
    auto all = entries(maps->fd(MC_MAP_SOCKHASH));
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
    // The initiator's socket by the tuple it sees (one local port may serve
    // several destinations: prefer the one to DST); the responder's by key,
    // since NAT may have rewritten the initiator's port on its side.
    const mc_sock_state* ini = nullptr;
    for (const auto& st : *live)
      if (st.side == MC_SIDE_ACTIVE && st.local_ip == s->first && st.local_port == s->second &&
          (!ini || (st.remote_ip == d->first && st.remote_port == d->second)))
        ini = &st;
    const mc_sock_state* resp = nullptr;
    if (ini)
      for (const auto& st : *live)
        if (st.side == MC_SIDE_PASSIVE && same_key(own_key(st), ini->peer)) resp = &st;
    auto in_map = [&](const mc_sock_key& k) {
      for (const auto& e : all)
        if (same_key(e.key, k)) return true;
      return false;
    };
    bool active = ini && in_map(own_key(*ini));
    bool passive = ini && in_map(ini->peer);
    nlohmann::json j = {{"src", src},
                        {"dst", dst},
                        {"src_pod", sp != nullptr},
                        {"dst_pod", dp != nullptr},
                        {"initiator_in_map", active},
                        {"responder_in_map", passive},
                        {"source", source}};
    if (resp) j["responder"] = tuple(resp->local_ip, resp->local_port, resp->remote_ip, resp->remote_port);
    if (resp && resp->remote_port != s->second)
      why.push_back("NAT rewrote the initiator's port: the responder sees " + sys::ipv4_str(resp->remote_ip) + ":" +
                    std::to_string(resp->remote_port) + " (conntrack, an earlier connection from " + src +
                    " still held the redirected tuple); the pair is keyed by the initiator's address and both "
                    "ISNs, which NAT leaves alone");
    if (active && passive) {
      why.push_back(
          "accelerated: both sockets are in the sockhash under the same key; each direction took the "
          "shortcut unless its first bytes left before the peer was established (counter msg_pass_no_peer)");
    } else {
      if (!sp && !loop_src)
        why.push_back(src + " is not the IP of an enrolled pod: host processes and unmeshed pods are left alone");
      if (!active)
        why.push_back("no socket of " + src +
                      " is in the sockhash: it is closed, it was established before "
                      "meshcut was attached, it used TCP Fast Open, its pod is not enrolled or has the shortcut "
                      "off, or the map was full (counters sock_*)");
      if (active && !passive)
        why.push_back(
            "the initiator is in the map but its peer is not: the peer is on another node, in a pod that "
            "is not enrolled, or was still being accepted when the first bytes left (those go the normal "
            "path for good)");
      if (!dp && (ntohl(d->first) >> 24) != 127)
        why.push_back(dst +
                      " is not an enrolled pod on this node: behind a ClusterIP or on another node the "
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

  return list_pairs(*live, source, json);
}

}  // namespace meshcut::daemon
