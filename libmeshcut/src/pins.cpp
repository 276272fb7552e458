// SPDX-License-Identifier: Apache-2.0
#include "meshcut/pins.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <thread>

#include "meshcut/abi.h"

namespace meshcut {

const std::vector<std::string>& PinLayout::map_names() {
  static const std::vector<std::string> names = {
      MC_MAP_SOCKHASH, MC_MAP_SK_STATE, MC_MAP_CONNS, MC_MAP_PODS, MC_MAP_POD_IPS, MC_MAP_PAIR_KIND, MC_MAP_SYN_SEEN,
      MC_MAP_CNI_PODS, MC_MAP_FLOWS, MC_MAP_FLOW_OWNER, MC_MAP_CNI_STATS, MC_MAP_COUNTERS, MC_MAP_CONFIG, MC_MAP_META,
      // objectives (meshcut_obj.h)
      MC_MAP_OBJ_VIPS, MC_MAP_OBJ_EPS, MC_MAP_OBJ_POD, MC_MAP_OBJ_CTL, MC_MAP_OBJ_ACTIONS, MC_MAP_OBJ_BUCKETS,
      MC_MAP_OBJ_STATS, MC_MAP_OBJ_SK, MC_MAP_OBJ_REQ, MC_MAP_OBJ_COUNTERS};
  return names;
}

namespace {
Result<Fd> open_root(const std::string& root) {
  Fd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid())
    return make_error("couldn't open pin root '" + root + "'", errno,
                      errno == ENOENT ? "is meshcutd running with --pin-root " + root + "?" : "");
  return fd;
}
}  // namespace

Result<PinLock> PinLock::acquire(const std::string& root) {
  auto fd = open_root(root);
  if (!fd) return fd.error();
  int rc;
  while ((rc = ::flock(fd->get(), LOCK_EX)) != 0 && errno == EINTR) {
  }
  if (rc != 0) return make_error("couldn't lock pin root '" + root + "'", errno);
  return PinLock(std::move(*fd));
}

Result<PinLock> PinLock::acquire(const std::string& root, std::chrono::milliseconds timeout) {
  auto fd = open_root(root);
  if (!fd) return fd.error();
  // Polling LOCK_NB rather than a timer signal: no signal handler to install
  // in a library, and the common uncontended case costs one syscall.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    if (::flock(fd->get(), LOCK_EX | LOCK_NB) == 0) return PinLock(std::move(*fd));
    if (errno != EWOULDBLOCK && errno != EINTR) return make_error("couldn't lock pin root '" + root + "'", errno);
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return make_error(
      "gave up after " + std::to_string(timeout.count()) + " ms waiting for the lock on pin root '" + root + "'",
      ETIMEDOUT,
      "another process holds it (a stuck meshcutd or `meshcutd enroll`?): find it with `fuser -v " + root +
          "` or `lsof " + root + "`, or the lock's holder in /proc/locks");
}

Status mkdir_p(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
      return make_error("couldn't create directory '" + cur + "'", errno);
  }
  return ok_status();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

Result<Fd> open_pinned(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    int e = errno;
    return make_error("couldn't open pinned object '" + path + "'", e,
                      e == ENOENT ? "is meshcutd running with this --pin-root? start it with: meshcutd run" : "");
  }
  return Fd(fd);
}

}  // namespace meshcut
