// SPDX-License-Identifier: Apache-2.0
#include "meshcut/pins.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>

#include "meshcut/abi.h"

namespace meshcut {

const std::vector<std::string>& PinLayout::map_names() {
  static const std::vector<std::string> names = {MC_MAP_SOCKHASH, MC_MAP_SK_STATE, MC_MAP_CONNS, MC_MAP_PODS,
                                                 MC_MAP_POD_IPS,  MC_MAP_PAIR_KIND, MC_MAP_CNI_PODS, MC_MAP_FLOWS, MC_MAP_FLOW_OWNER, MC_MAP_CNI_STATS, MC_MAP_COUNTERS, MC_MAP_CONFIG,
                                                 MC_MAP_META};
  return names;
}

Result<PinLock> PinLock::acquire(const std::string& root) {
  Fd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid())
    return make_error("couldn't open pin root '" + root + "'", errno,
                      errno == ENOENT ? "is meshcutd running with --pin-root " + root + "?" : "");
  if (::flock(fd.get(), LOCK_EX) != 0) return make_error("couldn't lock pin root '" + root + "'", errno);
  return PinLock(std::move(fd));
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
                      e == ENOENT ? "is meshcutd running with this --pin-root? start it with: meshcutd run"
                                  : "");
  }
  return Fd(fd);
}

}  // namespace meshcut
