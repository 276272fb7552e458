// SPDX-License-Identifier: Apache-2.0
// bpf tier: every skeleton loads and passes the verifier on this kernel.
// Root is required; without it the test skips (exit 77), but under CI=true a
// missing privilege is a failure.
#define CATCH_CONFIG_RUNNER
#include <bpf/libbpf.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "root_tier.h"
#include <cstdlib>
#include <cstring>
#include <memory>

#include "mc_probe.skel.h"
#include "meshcut/abi.h"
#include "mc_sk_msg.skel.h"
#include "mc_sk_skb.skel.h"
#include "mc_sockops.skel.h"
#include "mc_tc_overlay.skel.h"
#include "mc_tc_veth.skel.h"

template <typename T, int (*Load)(T*), T* (*Open)(), void (*Destroy)(T*)>
void load_ok(const char* name) {
  std::unique_ptr<T, void (*)(T*)> s(Open(), Destroy);
  INFO(name);
  REQUIRE(s);
  int err = Load(s.get());
  INFO("load error " << err << " " << std::strerror(-err));
  CHECK(err == 0);
}

// bpftool's skeleton has __open(void) with opts variant; wrap the plain one.
static mc_sockops* open_sockops() { return mc_sockops__open(); }
static mc_sk_msg* open_sk_msg() { return mc_sk_msg__open(); }
static mc_sk_skb* open_sk_skb() { return mc_sk_skb__open(); }
static mc_probe* open_probe() { return mc_probe__open(); }
static mc_tc_veth* open_tc_veth() { return mc_tc_veth__open(); }
static mc_tc_overlay* open_tc_overlay() { return mc_tc_overlay__open(); }

TEST_CASE("sockops loads and verifies", "[bpf]") {
  load_ok<mc_sockops, mc_sockops__load, open_sockops, mc_sockops__destroy>("sockops");
}
TEST_CASE("sk_msg loads and verifies", "[bpf]") {
  load_ok<mc_sk_msg, mc_sk_msg__load, open_sk_msg, mc_sk_msg__destroy>("sk_msg");
}
TEST_CASE("sk_skb verdict loads and verifies", "[bpf]") {
  load_ok<mc_sk_skb, mc_sk_skb__load, open_sk_skb, mc_sk_skb__destroy>("sk_skb");
}
TEST_CASE("tc on pod veths loads and verifies", "[bpf]") {
  load_ok<mc_tc_veth, mc_tc_veth__load, open_tc_veth, mc_tc_veth__destroy>("tc_veth");
}
TEST_CASE("tc on the overlay device loads and verifies", "[bpf]") {
  load_ok<mc_tc_overlay, mc_tc_overlay__load, open_tc_overlay, mc_tc_overlay__destroy>("tc_overlay");
}
TEST_CASE("feature probe loads and verifies", "[bpf]") {
  load_ok<mc_probe, mc_probe__load, open_probe, mc_probe__destroy>("probe");
}

TEST_CASE("programs have the types meshcutd attaches them as", "[bpf]") {
  std::unique_ptr<mc_sockops, void (*)(mc_sockops*)> so(mc_sockops__open(), mc_sockops__destroy);
  std::unique_ptr<mc_sk_msg, void (*)(mc_sk_msg*)> sm(mc_sk_msg__open(), mc_sk_msg__destroy);
  REQUIRE(so);
  REQUIRE(sm);
  CHECK(bpf_program__type(so->progs.mc_sockops) == BPF_PROG_TYPE_SOCK_OPS);
  CHECK(bpf_program__type(sm->progs.mc_sk_msg) == BPF_PROG_TYPE_SK_MSG);
  CHECK(bpf_map__type(so->maps.mc_sockhash) == BPF_MAP_TYPE_SOCKHASH);
  CHECK(bpf_map__key_size(so->maps.mc_sockhash) == sizeof(mc_sock_key));
}

int main(int argc, char** argv) {
  if (int rc = bpf_tier_needs_root(); rc >= 0) return rc;
  libbpf_set_print(nullptr);  // the verifier log would flood CTest's output; errors still fail
  return Catch::Session().run(argc, argv);
}
