// SPDX-License-Identifier: Apache-2.0
// meshcut: the chained CNI plugin. stdout carries only the CNI result or error
// JSON; logs go to the configured logFile (JSON lines) or stderr.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>

#include <meshcut/cni/backend.h>
#include <meshcut/cni/cni.h>
#include "meshcut/libbpf_log.h"
#include "meshcut/log.h"

using namespace meshcut;
using namespace meshcut::cni;

namespace {

std::string read_stdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void open_log(const NetConf& c) {
  if (c.log_file.empty()) return;  // stderr
  auto fd = open_log_file(c.log_file);
  if (!fd) {
    log::warn("logging to stderr instead of logFile", {{"error", fd.error().format()}});
    return;
  }
  log::set_fd(fd->release());
}

}  // namespace

int main() {
  std::string version = "1.1.0";
  auto t0 = std::chrono::steady_clock::now();
  Env env;
  // Read on its own: DEL must exit 0 even when another variable is malformed.
  const char* cmd_env = std::getenv("CNI_COMMAND");
  const std::string command = cmd_env ? cmd_env : "";
  try {
    env = read_env(std::getenv);
    std::string in = read_stdin();
    if (env.command == "VERSION") {
      // stdin holds {"cniVersion": ...}; answer in that version if we can.
      try {
        version = nlohmann::json::parse(in).value("cniVersion", version);
      } catch (...) {
      }
      std::cout << version_json(version) << std::endl;
      return 0;
    }
    NetConf conf = parse_netconf(in);
    version = conf.cni_version;
    open_log(conf);
    install_libbpf_logger(false);  // libbpf's messages into our log, never stdout
    log::set_context({{"plugin", "meshcut"},
                      {"command", env.command},
                      {"containerID", env.container_id},
                      {"pod", env.kv.count("K8S_POD_NAME") ? env.kv["K8S_POD_NAMESPACE"] + "/" + env.kv["K8S_POD_NAME"]
                                                           : std::string()}});
    bool v11 = compare_versions(version, "1.1.0") >= 0;
    if (env.command == "ADD") {
      nlohmann::json out = cmd_add(conf, env);
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    } else if (env.command == "DEL") {
      cmd_del(conf, env);
    } else if (env.command == "CHECK") {
      if (compare_versions(version, "0.4.0") < 0)
        throw CniError{kIncompatibleVersion, "CHECK needs cniVersion 0.4.0 or later", ""};
      cmd_check(conf, env);
    } else if (env.command == "STATUS" && v11) {
      cmd_status(conf);
    } else if (env.command == "GC" && v11) {
      cmd_gc(conf);
    } else {
      throw CniError{kInvalidEnv, "unknown or unsupported CNI_COMMAND '" + env.command + "' for cniVersion " + version,
                     ""};
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    log::info("done", {{"duration_ms", ms}});
    return 0;
  } catch (const CniError& e) {
    log::error(e.msg, {{"code", e.code}, {"details", e.details}});
    // DEL must never fail: libcni stops the reverse-order cleanup and leaks IPs.
    if (command == "DEL") return 0;
    std::cout << error_json(e, version) << std::endl;
    return 1;
  } catch (const std::exception& e) {
    log::error(std::string("internal error: ") + e.what());
    if (command == "DEL") return 0;
    std::cout << error_json(CniError{999, "meshcut internal error", e.what()}, version) << std::endl;
    return 1;
  }
}
