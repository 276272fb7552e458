// SPDX-License-Identifier: Apache-2.0
// The ABI fingerprint (abi.h) sees what a layout version number does not.
#include <catch2/catch.hpp>

#include "meshcut/abi.h"

using namespace meshcut;

namespace {

// Same size (16), same fields, other order: a change MC_LAYOUT_VERSION would
// only catch if someone remembered to bump it.
struct FpA {
  __u32 x;
  __u32 y;
  __u64 z;
};
struct FpB {
  __u32 y;
  __u32 x;
  __u64 z;
};
// Same size, a pad turned into a field of another width.
struct FpC {
  __u32 x;
  __u16 y;
  __u16 w;
  __u64 z;
};

template <typename T>
constexpr uint32_t fp3() {
  return MC_ABI_STRUCT(kAbiSeed, T, MC_ABI_F(T, x), MC_ABI_F(T, y), MC_ABI_F(T, z));
}

}  // namespace

TEST_CASE("abi fingerprint: a field offset change changes it, at compile time", "[abi]") {
  static_assert(sizeof(FpA) == sizeof(FpB));
  constexpr uint32_t a = fp3<FpA>(), b = fp3<FpB>(), c = fp3<FpC>();
  static_assert(a != b, "two fields swapped must change the fingerprint");
  CHECK(a != b);
  CHECK(a != c);           // y's size differs
  CHECK(fp3<FpA>() == a);  // deterministic
  // One more field in the list (a pad that became a field) changes it too.
  constexpr uint32_t c4 =
      MC_ABI_STRUCT(kAbiSeed, FpC, MC_ABI_F(FpC, x), MC_ABI_F(FpC, y), MC_ABI_F(FpC, w), MC_ABI_F(FpC, z));
  CHECK(c4 != c);
}

TEST_CASE("abi fingerprint: the pinned contract has one, stored in mc_meta", "[abi]") {
  static_assert(kAbiFingerprint != 0);
  static_assert(sizeof(mc_meta) == 32 && offsetof(mc_meta, abi_fingerprint) == 28);
  CHECK(kAbiFingerprint == abi_fingerprint_of_contract());
  // A constant that sizes a pinned map is part of it: another seed order
  // over the same values gives another hash (the mix is order-sensitive).
  CHECK(abi_mix(abi_mix(kAbiSeed, MC_C_MAX), MC_MAX_PODS) != abi_mix(abi_mix(kAbiSeed, MC_MAX_PODS), MC_C_MAX));
}
