// SPDX-License-Identifier: Apache-2.0
// `meshcutd install-cni` / `uninstall-cni` over install_cni.h.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "commands.h"
#include "install_cni.h"

namespace meshcut::daemon {

int cmd_install_cni(install::InstallOptions o, const std::string& entry_json, bool uninstall) {
  if (!entry_json.empty()) {
    try {
      o.plugin_entry = nlohmann::json::parse(entry_json);
    } catch (const std::exception& e) {
      return fail(make_error(std::string("--entry is not valid JSON: ") + e.what(), EINVAL));
    }
  }
  auto rep = uninstall ? install::uninstall(o) : install::install(o);
  if (!rep) return fail(rep.error());
  if (!rep->changed) std::printf("nothing to do\n");
  for (const auto& a : rep->actions) std::printf("%s\n", a.c_str());
  return 0;
}

}  // namespace meshcut::daemon
