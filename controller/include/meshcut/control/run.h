// SPDX-License-Identifier: Apache-2.0
// The controller against the nodes (issue 16, `meshcut-control run`): every
// window, pull the new windows of every node's meshcutd (GET /v1/windows),
// merge them into one cluster window (histograms summed, not percentiles
// averaged), feed the model, decide, and push the action to every node
// (PUT /v1/action). The same Model and policies as against the twin.
//
// What a node does wrong stays that node's problem:
//  - a node that does not answer within the timeout (down, or late) is left
//    out of this window; its cursor stays, so the windows it served late are
//    read (concatenated) with the next ones and nothing is counted twice;
//  - a node that refuses an action (4xx) is counted and logged with its
//    reason; it falls back to no control by itself when the last action it
//    took expires (part 1's TTL), while the others stay controlled;
//  - generations are wall-clock milliseconds (and at least last + 1), so a
//    restarted controller's first action is newer than the one in force.
// Phases: `learn` (probing routings so every backend is seen at several
// loads; no admission) for learn_windows — longer, up to 4 x, while a backend
// of a service with an objective cannot be modelled yet — then `control`. Policies: search
// (model-predictive, every window), static (the search's choice for the mean
// load of the learning phase, held), none (no action: the nodes are cleared).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "meshcut/control/measure.h"
#include "meshcut/control/model.h"
#include "meshcut/control/objectives.h"
#include "meshcut/control/policy.h"
#include "meshcut/control/probe.h"
#include "meshcut/error.h"
#include "meshcut/obj/services.h"

namespace meshcut::control {

struct NodeAddr {
  std::string name;  // as given ("name=host:port"), else host:port
  std::string host;
  uint16_t port = 0;
};
// "host:port,host:port" or "name=host:port,..."; errors name the entry.
Result<std::vector<NodeAddr>> parse_nodes(std::string_view list);

// What the loop needs of one node. http_node() speaks meshcutd's API; tests
// put a twin behind the same interface.
class NodeLink {
 public:
  virtual ~NodeLink() = default;
  // GET /v1/windows?since=SEQ: the reply ({"last_seq", "missed", "windows"}).
  virtual Result<nlohmann::json> windows_since(uint64_t seq) = 0;
  // PUT /v1/action. A refusal (the node answered 4xx) has errno 0 and the
  // node's reason; a transport failure carries its errno text.
  virtual Status put_action(const nlohmann::json& action) = 0;
  // DELETE /v1/action.
  virtual Status clear() = 0;
};
// TOKEN: the bearer token ("" for none); TIMEOUT_S bounds connect, read and write.
std::unique_ptr<NodeLink> http_node(const NodeAddr& addr, const std::string& token, double timeout_s);

// kPpo: RunOptions::custom (a trained PpoPolicy, ppo.h) decides every window.
enum class RunPolicy { kSearch, kStatic, kNone, kPpo };
Result<RunPolicy> run_policy_from_string(std::string_view s);
const char* to_string(RunPolicy p);

struct RunOptions {
  RunPolicy policy = RunPolicy::kSearch;
  size_t learn_windows = 60;               // probing before control (0: control at once, with whatever model is loaded)
  size_t probe_hold = 5;                   // windows per probing routing
  ProbeKind probe = ProbeKind::kBoundary;  // probe.h
  size_t refit_every = 10;                 // windows between refits while controlling (0: never)
  // A node without a new window is asked again (every 50 ms) until this long
  // after the tick began, so that ticks and the nodes' windows stay in phase.
  uint64_t align_wait_ms = 0;
  PolicyOptions policy_options;
  uint64_t seed = 1;
  std::shared_ptr<Policy> custom;  // kPpo only
};

struct NodeReport {
  std::string name;
  bool fetched = false, pushed = false;
  size_t windows = 0;   // new windows read this tick
  uint64_t cursor = 0;  // last window seq read
  uint64_t missed = 0;  // windows the node no longer had (read too late)
  std::string error;    // this tick's, "" if none
};

struct TickReport {
  uint64_t tick = 0;
  std::string phase;  // "learn" or "control"
  RunPolicy policy = RunPolicy::kSearch;
  std::vector<NodeReport> nodes;
  size_t nodes_answered = 0, nodes_pushed = 0;
  nlohmann::json window;  // the merged cluster window
  std::vector<ServiceReport> services;
  Decision decision;      // control phase, search/static
  nlohmann::json action;  // what was pushed (null: nothing)
  std::string probe;      // learning: why this probe (probe.h), "" otherwise
  double decide_ms = 0, tick_ms = 0;
  nlohmann::json to_json() const;  // one line of the run's log
};

class Controller {
 public:
  Controller(obj::Services services, Objectives objectives, RunOptions opt, std::vector<NodeAddr> addrs,
             std::vector<std::unique_ptr<NodeLink>> links);
  // One window: fetch (all nodes at once), merge, learn or decide, push.
  TickReport tick();
  // Takes effect at the next tick (nothing is retrained: the model is per backend).
  void set_objectives(Objectives o);
  void set_services(obj::Services s);
  // DELETE /v1/action on every node (none's start, and a clean stop); the errors joined.
  Status clear_all();
  const Model& model() const { return model_; }
  Model& model() { return model_; }
  const Objectives& objectives() const { return objectives_; }
  // The controller's own metrics (meshcut_control_*), Prometheus text.
  std::string prometheus() const;

 private:
  struct Node {
    NodeAddr addr;
    std::unique_ptr<NodeLink> link;
    uint64_t cursor = 0;
    bool primed = false;  // cursor set from the node's last_seq (old windows are not this run's)
    uint64_t fetch_errors = 0, push_errors = 0, refused = 0, missed = 0, windows = 0;
    bool up = false;
  };
  nlohmann::json probe_action(const Load& load, uint64_t gen);
  bool all_modelled() const;  // every backend of every objective's service has a model
  uint64_t next_generation();

  obj::Services services_;
  Objectives objectives_;
  RunOptions opt_;
  std::vector<Node> nodes_;
  Model model_;
  SearchPolicy search_;
  Prober prober_;
  uint64_t ticks_ = 0, learned_ = 0, generation_ = 0;
  bool fitted_ = false;
  Load learn_load_sum_;
  size_t learn_load_n_ = 0;
  nlohmann::json probe_;  // the learning phase's action in force
  std::string probe_why_;
  std::vector<ServiceChoice> static_choice_;
  bool static_ready_ = false;
  TickReport last_;
};

}  // namespace meshcut::control
