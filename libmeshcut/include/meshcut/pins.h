// SPDX-License-Identifier: Apache-2.0
// The pin layout under a pin root — the contract between meshcutd, the CNI
// plugin and the operator tools — and the lock every writer takes.
//
//   <pin-root>/maps/mc_sockhash ... mc_meta   (names in meshcut_kern_user.h)
//   <pin-root>/progs/sockops, sk_msg, sk_skb
//   <pin-root>/links/sockops_cgroup
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "meshcut/error.h"
#include "meshcut/fd.h"

namespace meshcut {

inline constexpr const char* kDefaultPinRoot = "/sys/fs/bpf/meshcut";

struct PinLayout {
  std::string root;
  explicit PinLayout(std::string r) : root(std::move(r)) {}
  std::string maps_dir() const { return root + "/maps"; }
  std::string progs_dir() const { return root + "/progs"; }
  std::string links_dir() const { return root + "/links"; }
  std::string map(const std::string& name) const { return maps_dir() + "/" + name; }
  std::string prog(const std::string& name) const { return progs_dir() + "/" + name; }
  std::string link(const std::string& name) const { return links_dir() + "/" + name; }
  // Every map pin of the layout.
  static const std::vector<std::string>& map_names();
};

// flock(LOCK_EX) on the pin root directory: the daemon, `enroll` and every CNI
// ADD/DEL serialise their writes to the pinned state on it. Released on destruction.
class PinLock {
 public:
  // Waits as long as it takes (meshcutd, the operator tools).
  static Result<PinLock> acquire(const std::string& root);
  // Waits at most TIMEOUT (the CNI plugin: a stuck holder must not wedge every
  // pod start and stop on the node), then fails with ETIMEDOUT and a hint that
  // names the holder's lock. A zero timeout tries once.
  static Result<PinLock> acquire(const std::string& root, std::chrono::milliseconds timeout);
  PinLock(PinLock&&) = default;
  PinLock& operator=(PinLock&&) = default;

 private:
  explicit PinLock(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

Status mkdir_p(const std::string& path);
// bpf_obj_get with an error that says whether meshcutd is running.
Result<Fd> open_pinned(const std::string& path);
bool exists(const std::string& path);

}  // namespace meshcut
