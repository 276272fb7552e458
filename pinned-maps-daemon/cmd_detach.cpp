// SPDX-License-Identifier: Apache-2.0
// `meshcutd detach`.
#include <cstdio>
#include <string>

#include "cli.h"
#include "commands.h"
#include "loader.h"
#include "meshcut/pins.h"

namespace meshcut::daemon {

int cmd_detach(const std::string& pin_root) {
  if (auto st = detach_all(PinLayout(pin_root)); !st) return fail(st.error());
  std::printf("meshcut detached from %s: new connections take the normal path\n", pin_root.c_str());
  return 0;
}

}  // namespace meshcut::daemon
