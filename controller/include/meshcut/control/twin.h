// SPDX-License-Identifier: Apache-2.0
// The digital twin (issue 16): a discrete-event simulation of the managed
// services under an action, speaking the node's own documents so that the
// controller code is the same against the twin and the bed:
//  - actions are compiled by libmeshcut-obj's compile_action against the
//    twin's Services (so a document the node refuses, the twin refuses), then
//    applied with the kernel's semantics: a token bucket per (service, class)
//    in billionths of a token refilled at rate_milli * elapsed_ns / 1000,
//    capped at the burst, starting full, one token per connect; routing by
//    a draw of u32 % MC_OBJ_WEIGHT_SCALE over the slot's cumulative ppm;
//    actions expire after their TTL (fail-open: no admission, plain routing);
//  - measurements are mc_obj_stat counters and histograms in the kernel's rows
//    (ALL row: offered/admitted/blocked; backend row: offered = routed to it;
//    both: conns/requests/completed, latency histograms), turned into windows
//    by libmeshcut-obj's WindowStore, so a window here is byte for byte the
//    shape the node's API serves.
// Load: per service and caller class, Poisson arrivals at a piecewise-constant
// rate; one connection per request (the paper's load). Backends: FCFS queues
// with c servers and a service-time distribution. Without routing a request
// goes to a uniformly drawn backend (kube-proxy's ClusterIP choice).
// Deterministic for a seed.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "meshcut/error.h"
#include "meshcut/obj/action.h"
#include "meshcut/obj/services.h"
#include "meshcut/obj/windows.h"

namespace meshcut::control {

enum class ServiceTimeKind { kExponential, kDeterministic, kLognormal };

struct ServiceTime {
  ServiceTimeKind kind = ServiceTimeKind::kExponential;
  double mean_ms = 10;  // > 0
  double scv = 1;       // lognormal only: squared coefficient of variation, > 0
  static ServiceTime exponential(double mean_ms) { return {ServiceTimeKind::kExponential, mean_ms, 1}; }
  static ServiceTime deterministic(double mean_ms) { return {ServiceTimeKind::kDeterministic, mean_ms, 0}; }
  static ServiceTime lognormal(double mean_ms, double scv) { return {ServiceTimeKind::kLognormal, mean_ms, scv}; }
};

// A rate over time: steps {t_s, rps}, t_s ascending; the rate at t is the one
// of the last step with t_s <= t (0 before the first).
struct Pattern {
  std::vector<std::pair<double, double>> steps;
  static Pattern constant(double rps) { return Pattern{{{0.0, rps}}}; }
  double rate_at(double t_s) const;
  // The first step time > T_S, or +inf.
  double next_change(double t_s) const;
};

struct TwinBackend {
  std::string pod;   // the endpoint's pod name (action weights may use it)
  std::string addr;  // "ip:port"; empty: 10.<service>.0.<backend + 1>:8080
  int servers = 1;   // >= 1
  ServiceTime service_time;
};

struct TwinService {
  std::string key;  // "ns/name"
  std::vector<TwinBackend> backends;
  std::map<std::string, Pattern> load;  // caller class -> arrival rate
};

struct TwinConfig {
  std::vector<TwinService> services;
  // Named caller classes (at most 3; "default" is class 0 and always exists).
  std::vector<std::string> classes;
  double window_s = 1;
  uint64_t seed = 1;
  size_t max_windows = 4096;  // the WindowStore's history
};

class Twin {
 public:
  // Checks CFG (names, counts, positive means); errors name the field.
  static Result<std::unique_ptr<Twin>> create(const TwinConfig& cfg);
  ~Twin();

  // The Services the twin's addresses and ids come from (what a node's service file would say).
  const obj::Services& services() const;
  // The node's PUT: compile against services(), newer generation than the one in force.
  Status apply(const nlohmann::json& action);
  void clear();  // no action: no admission, plain routing
  uint64_t generation() const;

  // Runs one window of cfg.window_s and returns it as the node serves it (obj::to_json(Window)).
  nlohmann::json step();
  // Runs N windows; the windows as a JSON array.
  nlohmann::json run(size_t n);
  const obj::WindowStore& store() const;

  double now_s() const;
  uint64_t requests() const;  // arrivals simulated so far

  Status set_load(const std::string& service, const std::string& cls, Pattern p);
  Status set_service_time(const std::string& service, const std::string& backend_pod_or_addr, ServiceTime st);

 private:
  struct Impl;
  explicit Twin(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshcut::control
