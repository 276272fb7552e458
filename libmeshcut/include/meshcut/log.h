// SPDX-License-Identifier: Apache-2.0
// Structured logs: one JSON object per line on stderr (never stdout: the CNI
// plugin's stdout is its result). {"ts":..,"level":"info","msg":..,<fields>}
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace meshcut::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level l);
Level level();
// Where lines go; default stderr. The CNI plugin points this at its log file.
void set_fd(int fd);
// Fields added to every line (the CNI plugin: containerID, pod).
void set_context(const nlohmann::json& fields);
void write(Level l, std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());

inline void debug(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { write(Level::debug, m, f); }
inline void info(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { write(Level::info, m, f); }
inline void warn(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { write(Level::warn, m, f); }
inline void error(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { write(Level::error, m, f); }

}  // namespace meshcut::log
