// SPDX-License-Identifier: Apache-2.0
// meshcutd's objectives half at run time (issue 15, OBJECTIVES.md): watches the
// service file and keeps the address tables and the caller pods' classes in
// the maps, turns the stats rows into 1 s windows, applies the controller's
// actions, and serves all of it over the objectives API (obj_api.h) and
// /metrics. One thread ticks every second; the API's threads call in.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "meshcut/error.h"
#include "meshcut/pins.h"
#include "obj_api.h"

namespace meshcut::obj {

struct RuntimeOptions {
  std::string services_file;  // "" : no managed services (the actuators stay idle)
  std::string cgroup;         // where the programs are attached (the ingress accounting goes there)
  ApiOptions api;             // api.listen "off": no API
  size_t history = 600;       // windows kept (one per second)
};

class Runtime {
 public:
  // Loads the service file (a malformed one refuses the start), syncs the
  // maps, starts the API and the tick thread.
  static Result<std::unique_ptr<Runtime>> start(const PinLayout& layout, const RuntimeOptions& opts);
  ~Runtime();

  // The API's handlers (also what `meshcutd objectives` reaches through it).
  ApiReply windows(uint64_t since, size_t max);
  ApiReply put_action(const nlohmann::json& doc);
  ApiReply status();
  ApiReply clear();
  std::string prometheus();

  struct State;

 private:
  Runtime(const PinLayout& layout, RuntimeOptions opts);
  void loop();
  void tick();
  PinLayout layout_;
  RuntimeOptions opts_;
  std::unique_ptr<State> st_;
  std::mutex mu_;
  std::optional<ApiServer> api_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace meshcut::obj
