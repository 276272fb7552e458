// SPDX-License-Identifier: Apache-2.0
// What every meshcutd subcommand shares.
#pragma once

#include <string>

#include "meshcut/error.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"

namespace meshcut::daemon {

// Reports E (a log record with the errno text and the hint, and one line
// "meshcutd: ..." on stderr) and returns the exit code 1.
int fail(const Error& e);

// What a subcommand that changes the pinned maps holds: the pin lock (taken
// first, waiting as long as it takes) and the maps under PIN_ROOT.
struct LockedMaps {
  PinLock lock;
  PinnedMaps maps;
};
Result<LockedMaps> lock_maps(const std::string& pin_root);

}  // namespace meshcut::daemon
