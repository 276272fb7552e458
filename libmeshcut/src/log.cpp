// SPDX-License-Identifier: Apache-2.0
#include "meshcut/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>

namespace meshcut::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};
std::atomic<int> g_fd{STDERR_FILENO};
nlohmann::json g_context = nlohmann::json::object();
const char* name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}
}  // namespace

void set_level(Level l) { g_level = static_cast<int>(l); }
Level level() { return static_cast<Level>(g_level.load()); }
void set_fd(int fd) { g_fd = fd; }
void set_context(const nlohmann::json& fields) { g_context = fields; }

void write(Level l, std::string_view msg, const nlohmann::json& fields) {
  if (static_cast<int>(l) < g_level) return;
  nlohmann::json j = g_context;
  if (fields.is_object()) j.update(fields);
  auto now = std::chrono::system_clock::now().time_since_epoch();
  j["ts"] = std::chrono::duration<double>(now).count();
  j["level"] = name(l);
  j["msg"] = msg;
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  // One write() per line so concurrent writers (many CNI calls) do not interleave.
  ssize_t rc = ::write(g_fd, line.data(), line.size());
  (void)rc;
}

}  // namespace meshcut::log
