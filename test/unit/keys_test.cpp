// SPDX-License-Identifier: Apache-2.0
// Key construction and peer derivation for every socket of the paper's Table 2,
// with the exact function the sockops program runs (meshcut_kern_user.h).
#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>

#include "meshcut/abi.h"

namespace {

// Also used to build the file-scope sockets below, before Catch2 runs: no REQUIRE.
uint32_t ip(const char* s) {
  in_addr a{};
  if (inet_pton(AF_INET, s, &a) != 1) std::abort();
  return a.s_addr;
}

struct Sock {
  mc_sock_key own{}, peer{};
};

// As sockops sees an established socket: side, local, remote, snd_nxt, rcv_nxt, netns.
// The ports document the tuples of Table 2; the key leaves them out (NAT may
// rewrite the initiator's).
Sock sock(uint8_t side, const char* lip, uint16_t /*lport*/, const char* rip, uint16_t /*rport*/, uint32_t snd_nxt,
          uint32_t rcv_nxt, uint64_t netns) {
  Sock s;
  mc_sock_keys(&s.own, &s.peer, side, ip(lip), ip(rip), snd_nxt, rcv_nxt, netns);
  return s;
}

bool same(const mc_sock_key& a, const mc_sock_key& b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }
bool paired(const Sock& a, const Sock& b) { return same(a.peer, b.own) && same(b.peer, a.own); }

// Netns cookies of pod A and pod B; ISNs of the three connections (+1).
constexpr uint64_t kNsA = 4101, kNsB = 4202;
constexpr uint32_t kC1 = 0x11110001, kS1 = 0x22220001;  // app(A) -> sidecar(A)
constexpr uint32_t kC2 = 0x33330001, kS2 = 0x44440001;  // sidecar(A) -> sidecar(B)
constexpr uint32_t kC3 = 0x55550001, kS3 = 0x66660001;  // sidecar(B) -> app(B)

// Table 2: client_ip 10.244.1.5, server_ip 10.244.1.9, service 10.96.0.20:80.
const Sock s1 = sock(MC_SIDE_ACTIVE, "10.244.1.5", 36938, "10.96.0.20", 80, kC1, kS1, kNsA);
const Sock s2 = sock(MC_SIDE_PASSIVE, "127.0.0.1", 15001, "10.244.1.5", 36938, kS1, kC1, kNsA);
const Sock s3 = sock(MC_SIDE_ACTIVE, "10.244.1.5", 36954, "10.244.1.9", 8080, kC2, kS2, kNsA);
const Sock s4 = sock(MC_SIDE_PASSIVE, "10.244.1.9", 15006, "10.244.1.5", 36954, kS2, kC2, kNsB);
const Sock s5 = sock(MC_SIDE_ACTIVE, "127.0.0.6", 58652, "10.244.1.9", 8080, kC3, kS3, kNsB);
const Sock s6 = sock(MC_SIDE_PASSIVE, "10.244.1.9", 8080, "127.0.0.6", 58652, kS3, kC3, kNsB);

}  // namespace

TEST_CASE("Table 2 pair (1)<->(2): app to its sidecar through REDIRECT 15001", "[keys]") {
  CHECK(paired(s1, s2));
  CHECK(s1.own.init_ip == ip("10.244.1.5"));
  CHECK(s1.own.pad16 == 0);
  CHECK(s1.own.scope == 0);  // pod IP: unique on the node
}

TEST_CASE("conntrack rewrote the initiator's port: (1)<->(2) still pair", "[keys][nat]") {
  // The REDIRECT's reply tuple 127.0.0.1:15001 <- 10.244.1.5:36938 was still
  // held by an earlier connection from that port (TIME_WAIT): the sidecar
  // sees another source port.
  const Sock s2_remapped = sock(MC_SIDE_PASSIVE, "127.0.0.1", 15001, "10.244.1.5", 1404, kS1, kC1, kNsA);
  CHECK(paired(s1, s2_remapped));
  // Same remap on the pod <-> pod hop (REDIRECT to 15006 in pod B).
  const Sock s4_remapped = sock(MC_SIDE_PASSIVE, "10.244.1.9", 15006, "10.244.1.5", 61011, kS2, kC2, kNsB);
  CHECK(paired(s3, s4_remapped));
}

TEST_CASE("Table 2 pair (3)<->(4): sidecar to sidecar across two netns on one node", "[keys]") {
  CHECK(paired(s3, s4));
  CHECK(s3.own.scope == 0);  // must match although the netns differ
}

TEST_CASE("Table 2 pair (5)<->(6): inbound sidecar from 127.0.0.6 to the app", "[keys]") {
  CHECK(paired(s5, s6));
  CHECK(s5.own.scope == kNsB);  // loopback initiator: scoped to the pod
}

TEST_CASE("no socket of one pair matches a socket of another", "[keys]") {
  const Sock* all[] = {&s1, &s2, &s3, &s4, &s5, &s6};
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      bool true_pair = (i / 2 == j / 2) && i != j;
      INFO("sockets " << i + 1 << " and " << j + 1);
      CHECK(same(all[i]->peer, all[j]->own) == true_pair);
    }
}

TEST_CASE("a swapped-tuple lookup would catch only the mirror pair (5)<->(6)", "[keys]") {
  struct Tuple {
    const char* lip;
    uint16_t lport;
    const char* rip;
    uint16_t rport;
  };
  auto swapped_match = [](Tuple a, Tuple b) {
    return std::strcmp(a.lip, b.rip) == 0 && a.lport == b.rport && std::strcmp(a.rip, b.lip) == 0 && a.rport == b.lport;
  };
  CHECK_FALSE(swapped_match({"10.244.1.5", 36938, "10.96.0.20", 80}, {"127.0.0.1", 15001, "10.244.1.5", 36938}));
  CHECK_FALSE(swapped_match({"10.244.1.5", 36954, "10.244.1.9", 8080}, {"10.244.1.9", 15006, "10.244.1.5", 36954}));
  CHECK(swapped_match({"127.0.0.6", 58652, "10.244.1.9", 8080}, {"10.244.1.9", 8080, "127.0.0.6", 58652}));
  // meshcut's key pairs all three (above) from what NAT leaves alone.
}

TEST_CASE("identical loopback tuples in two pods get different keys", "[keys][isolation]") {
  Sock a = sock(MC_SIDE_ACTIVE, "127.0.0.1", 40000, "127.0.0.1", 8080, 1000, 2000, kNsA);
  Sock b = sock(MC_SIDE_ACTIVE, "127.0.0.1", 40000, "127.0.0.1", 8080, 1000, 2000, kNsB);
  Sock pb = sock(MC_SIDE_PASSIVE, "127.0.0.1", 8080, "127.0.0.1", 40000, 2000, 1000, kNsB);
  CHECK_FALSE(same(a.own, b.own));
  CHECK_FALSE(same(a.peer, pb.own));  // pod A's client never finds pod B's server
  CHECK(paired(b, pb));
}

TEST_CASE("one source port reused towards two destinations: ISNs keep them apart", "[keys]") {
  Sock x = sock(MC_SIDE_ACTIVE, "10.244.1.5", 40000, "10.96.0.20", 80, 7001, 9001, kNsA);
  Sock y = sock(MC_SIDE_ACTIVE, "10.244.1.5", 40000, "10.96.0.21", 443, 7501, 9501, kNsA);
  Sock py = sock(MC_SIDE_PASSIVE, "127.0.0.1", 15001, "10.244.1.5", 40000, 9501, 7501, kNsA);
  CHECK_FALSE(same(x.own, y.own));
  CHECK(paired(y, py));
  CHECK_FALSE(same(x.peer, py.own));
}

TEST_CASE("plain local connection without NAT pairs too", "[keys]") {
  Sock c = sock(MC_SIDE_ACTIVE, "10.244.1.5", 51000, "10.244.1.9", 80, 31, 41, kNsA);
  Sock s = sock(MC_SIDE_PASSIVE, "10.244.1.9", 80, "10.244.1.5", 51000, 41, 31, kNsB);
  CHECK(paired(c, s));
}

TEST_CASE("key has no hidden padding and a fixed size", "[keys]") {
  STATIC_REQUIRE(sizeof(mc_sock_key) == 24);
  STATIC_REQUIRE(std::has_unique_object_representations_v<mc_sock_key>);
  CHECK(s1.own.pad == 0);
}
