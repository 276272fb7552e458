// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include <cstdio>

#include "meshcut/log.h"
#include "meshcut/sys.h"

namespace meshcut::daemon {

int fail(const Error& e) {
  log::error(e.what, {{"errno", e.err}, {"error", e.err ? errno_text(e.err) : ""}, {"hint", e.hint}});
  std::fprintf(stderr, "meshcutd: %s\n", e.format().c_str());
  return 1;
}

Result<LockedMaps> lock_maps(const std::string& pin_root) {
  PinLayout layout(pin_root);
  auto lock = PinLock::acquire(layout.root);
  if (!lock) return lock.error();
  auto maps = PinnedMaps::open(layout);
  if (!maps) return maps.error();
  return LockedMaps{std::move(*lock), std::move(*maps)};
}

}  // namespace meshcut::daemon
