// SPDX-License-Identifier: Apache-2.0
// The one owner of a bpftool skeleton. A skeleton NAME comes with free
// functions NAME__open / NAME__load / NAME__destroy; MESHCUT_SKEL(NAME), at
// global scope after including NAME.skel.h, makes them SkelOps<NAME>, and
// Skel<NAME> destroys the skeleton (its programs, maps and links) with its
// owner:
//
//   MESHCUT_SKEL(mc_probe);
//   auto s = meshcut::open_skel<mc_probe>();           // Skel<mc_probe>, null on error (errno)
//   if (int err = meshcut::load_skel(s)) ...           // -errno, as NAME__load
#pragma once

#include <memory>

namespace meshcut {

template <typename T>
struct SkelOps;  // specialised by MESHCUT_SKEL

template <typename T>
struct SkelDeleter {
  void operator()(T* s) const { SkelOps<T>::destroy(s); }
};

template <typename T>
using Skel = std::unique_ptr<T, SkelDeleter<T>>;

template <typename T>
Skel<T> open_skel() {
  return Skel<T>(SkelOps<T>::open());
}

template <typename T>
int load_skel(const Skel<T>& s) {
  return SkelOps<T>::load(s.get());
}

}  // namespace meshcut

#define MESHCUT_SKEL(NAME)                               \
  template <>                                            \
  struct meshcut::SkelOps<NAME> {                        \
    static NAME* open() { return NAME##__open(); }       \
    static int load(NAME* s) { return NAME##__load(s); } \
    static void destroy(NAME* s) { NAME##__destroy(s); } \
  }
